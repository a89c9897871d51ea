import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NovaCore
import NovaQueue

/// Runs a `type: http` job: the payload as the JSON body of a call to the agent's endpoint, the
/// job's id, kind and attempt in headers, the body signed (Standard Webhooks) when the kind names
/// a secret. 2xx succeeds (the JSON body is the result); 408, 429 (after its `Retry-After`), 5xx
/// and network errors are retried; other answers, redirects included (none is followed),
/// dead-letter.
///
/// With `max_concurrency`, at most that many calls of the kind run at once in this process; the
/// others wait for a slot, and the kind's timeout starts only once the call has one.
public struct HTTPJobRunner: Sendable {
  public let name: String
  public let kind: HTTPKind
  public let timeout: Duration
  /// The worker's environment (what `headers_env` and `secret_env` are read from).
  public let environment: [String: String]
  /// The kind's `max_concurrency` slots, shared by every job the runner handles; nil when unset.
  let limiter: ConcurrencyLimiter?

  public init(name: String, kind: HTTPKind, timeout: Duration, environment: [String: String] = ProcessInfo.processInfo.environment) {
    self.name = name
    self.kind = kind
    self.timeout = timeout
    self.environment = environment
    limiter = kind.maxConcurrency.map { ConcurrencyLimiter(permits: $0) }
  }

  /// The most connections the client opens to one host: more than any pool runs (`--workers` goes
  /// to 10,000), so that a call never queues inside the client, where the wait would count against
  /// the kind's timeout; the worker's slots and each kind's `max_concurrency` bound the calls.
  static let connectionsPerHost = 10_000

  /// A client that never follows redirects: a job's payload goes to the declared URL only.
  static let client: HTTPClient = {
    var configuration = HTTPClient.Configuration(redirectConfiguration: .disallow)
    configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = HTTPJobRunner.connectionsPerHost
    return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
  }()

  /// The most of an answer's body read (a result larger than this fails the attempt).
  static let maxBodyBytes = 4 << 20

  /// The longest a job waits for one of the kind's `max_concurrency` slots before its attempt
  /// fails (to be retried with backoff): ten times the timeout, from 5 minutes to a day.
  public var slotWaitLimit: Duration {
    guard kind.maxConcurrency != nil else { return .zero }
    return min(max(timeout * 10, .seconds(300)), .seconds(86_400))
  }

  /// What the worker pool allows the whole handler: the wait for a slot, then the timeout. The
  /// runner enforces both itself; the margin lets its errors, which say which ran out, come first.
  public var poolTimeout: Duration {
    kind.maxConcurrency == nil ? timeout : slotWaitLimit + timeout + .seconds(5)
  }

  /// The `webhook-id` of an attempt's call: one message per attempt (a retry is a new call).
  public static func messageID(_ context: JobContext) -> String { "\(context.id.rawValue)-\(context.attempt)" }

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
    var key: [UInt8]?
    if let variable = kind.secretEnv {
      guard let secret = environment[variable], !secret.isEmpty else {
        throw NonRetryableJobError("kind '\(name)': secret_env \(variable) is not set in the worker's environment")
      }
      do {
        key = try StandardWebhook.key(secret: secret)
      } catch {
        throw NonRetryableJobError("kind '\(name)': secret_env \(variable): \(error)")
      }
    }
    guard let limiter else { return try await call(request, payload: payload, key: key, context: context) }
    guard try await limiter.acquire(waitingAtMost: slotWaitLimit) else {
      throw CommandFailure(
        message: "kind '\(name)': no slot of its max_concurrency \(limiter.permits) came free in \(Int(slotWaitLimit.seconds)) s")
    }
    defer { limiter.release() }
    return try await call(request, payload: payload, key: key, context: context)
  }

  /// One call, once it may run: signed now (a receiver refuses an old timestamp), with the
  /// kind's timeout from now.
  private func call(_ prepared: HTTPClientRequest, payload: Data, key: [UInt8]?, context: JobContext) async throws -> Data? {
    var request = prepared
    if let key {
      let id = Self.messageID(context)
      let timestamp = Int64(Date().timeIntervalSince1970)
      let signature = StandardWebhook.signature(id: id, timestamp: timestamp, body: Array(payload), key: key)
      request.headers.add(name: StandardWebhook.idHeader, value: id)
      request.headers.add(name: StandardWebhook.timestampHeader, value: String(timestamp))
      request.headers.add(name: StandardWebhook.signatureHeader, value: signature)
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
