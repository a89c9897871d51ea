import AsyncHTTPClient
import Crypto
import Foundation
import NIOCore
import NIOHTTP1
import NovaCore
import NovaQueue

/// Runs a `type: http` job: the payload as the JSON body of a call to the agent's endpoint, the
/// job's id, kind and attempt in headers, the body signed when the kind names a secret. 2xx
/// succeeds (the JSON body is the result); 408, 429 (after its `Retry-After`), 5xx and network
/// errors are retried; other answers, redirects included (none is followed), dead-letter.
public struct HTTPJobRunner: Sendable {
  public let name: String
  public let kind: HTTPKind
  public let timeout: Duration
  /// The worker's environment (what `headers_env` and `secret_env` are read from).
  public let environment: [String: String]

  public init(name: String, kind: HTTPKind, timeout: Duration, environment: [String: String] = ProcessInfo.processInfo.environment) {
    self.name = name
    self.kind = kind
    self.timeout = timeout
    self.environment = environment
  }

  /// A client that never follows redirects: a job's payload goes to the declared URL only.
  static let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(redirectConfiguration: .disallow))

  /// The most of an answer's body read (a result larger than this fails the attempt).
  static let maxBodyBytes = 4 << 20

  /// Signature headers: `X-Nova-Timestamp` (Unix seconds) and `X-Nova-Signature` =
  /// `sha256=` + hex HMAC-SHA256 of `timestamp.body` under the secret (a receiver refuses old
  /// timestamps, so a captured call cannot be replayed later).
  public static func signature(secret: String, timestamp: Int, body: Data) -> String {
    var message = Data("\(timestamp).".utf8)
    message.append(body)
    let mac = HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: Data(secret.utf8)))
    return "sha256=" + mac.map { String(format: "%02x", $0) }.joined()
  }

  public func handle(payload: Data, context: JobContext) async throws -> Data? {
    var request = HTTPClientRequest(url: kind.url)
    request.method = HTTPMethod(rawValue: kind.method)
    request.headers.add(name: "Content-Type", value: "application/json")
    request.headers.add(name: "X-Nova-Job-Id", value: context.id.rawValue)
    request.headers.add(name: "X-Nova-Job-Kind", value: context.kind)
    request.headers.add(name: "X-Nova-Job-Attempt", value: String(context.attempt))
    for (header, value) in kind.headers.sorted(by: { $0.key < $1.key }) { request.headers.replaceOrAdd(name: header, value: value) }
    for (header, variable) in kind.headersEnv.sorted(by: { $0.key < $1.key }) {
      guard let value = environment[variable] else {
        throw NonRetryableJobError("kind '\(name)': header \(header) needs \(variable), which is not set in the worker's environment")
      }
      request.headers.replaceOrAdd(name: header, value: value)
    }
    if let variable = kind.secretEnv {
      guard let secret = environment[variable], !secret.isEmpty else {
        throw NonRetryableJobError("kind '\(name)': secret_env \(variable) is not set in the worker's environment")
      }
      let timestamp = Int(Date().timeIntervalSince1970)
      request.headers.add(name: "X-Nova-Timestamp", value: String(timestamp))
      request.headers.add(name: "X-Nova-Signature", value: Self.signature(secret: secret, timestamp: timestamp, body: payload))
    }
    request.body = .bytes(ByteBuffer(bytes: payload))
    let response: HTTPClientResponse
    var body = ByteBuffer()
    var overflow = false
    let target = "\(kind.method) \(kind.url)"
    do {
      response = try await Self.client.execute(request, timeout: .nanoseconds(Int64(timeout.seconds * 1_000_000_000)))
      // Read on past the limit (keeping nothing more), so the status decides what happens.
      for try await var chunk in response.body {
        if body.readableBytes + chunk.readableBytes <= Self.maxBodyBytes {
          body.writeBuffer(&chunk)
        } else {
          overflow = true
        }
      }
    } catch {
      throw CommandFailure(message: "\(target): \(error)")
    }
    let text = String(buffer: body)
    let tail = text.count > 1024 ? "…" + String(text.suffix(1024)) : text
    let status = Int(response.status.code)
    switch status {
    case 200..<300:
      // Retrying would repeat what the agent did: a result too large to keep dead-letters.
      if overflow { throw NonRetryableJobError("\(target) answered \(status) with a body over \(Self.maxBodyBytes) bytes") }
      if body.readableBytes == 0 { return nil }
      let data = Data(body.readableBytesView)
      // The body as the agent sent it when it is JSON (stored like a submitted payload).
      if (try? JSONValue.parse(data)) != nil { return data }
      return Data(try CanonicalJSON.encode(.object(["body_tail": .string(tail)])))
    case 429:
      let message = "\(target) answered 429 Too Many Requests: \(tail)"
      if let delay = response.headers.first(name: "Retry-After").flatMap(Self.retryAfter) {
        throw RetryLaterJobError(message + " (retrying after \(Int(delay.seconds)) s, as Retry-After asks)", delay: delay)
      }
      throw CommandFailure(message: message)
    case 408, 500..<600:
      throw CommandFailure(message: "\(target) answered \(status): \(tail)")
    case 300..<400:
      let location = response.headers.first(name: "Location") ?? "no Location"
      throw NonRetryableJobError("\(target) answered \(status) (a redirect to \(location)); redirects are not followed")
    default:
      throw NonRetryableJobError("\(target) answered \(status): \(tail)")
    }
  }

  /// A `Retry-After` value: seconds, or an HTTP date; bounded to a day.
  static func retryAfter(_ value: String) -> Duration? {
    if let seconds = Int(value.trimmingCharacters(in: .whitespaces)), seconds >= 0 { return .seconds(min(seconds, 86_400)) }
    let formatter = DateFormatter()
    formatter.locale = Locale(identifier: "en_US_POSIX")
    formatter.timeZone = TimeZone(identifier: "GMT")
    formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
    guard let date = formatter.date(from: value) else { return nil }
    return .seconds(min(max(date.timeIntervalSinceNow, 0), 86_400))
  }
}
