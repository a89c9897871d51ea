import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NovaAlerting
import NovaCore
import NovaSecurity

/// A URL that receives each signed checkpoint by POST (`text/plain`, the C2SP signed note, with
/// `Nova-Checkpoint-Size`), for an anchor on another machine. It cannot be read back, so
/// `nova audit verify --checkpoint-dir` checks against what the receiver stored.
public struct HTTPCheckpointMirror: CheckpointMirror {
  public let url: String
  private let client: HTTPClient
  private let target: String
  private let authorization: String?
  private let timeout: Duration

  public init(url: String, client: HTTPClient = NotificationSender.client, timeout: Duration = .seconds(10)) throws {
    guard var parsed = URLComponents(string: url), parsed.scheme == "http" || parsed.scheme == "https", parsed.host != nil else {
      throw NovaError.invalidInput(field: "--checkpoint-mirror", message: "'\(Redaction.url(url))' is neither a directory nor an http(s) URL")
    }
    self.url = url
    // Credentials in the URL become an Authorization header, never part of the request line.
    if let user = parsed.user {
      authorization = "Basic " + Data("\(user):\(parsed.password ?? "")".utf8).base64EncodedString()
      parsed.user = nil
      parsed.password = nil
    } else {
      authorization = nil
    }
    target = parsed.string ?? url
    self.client = client
    self.timeout = timeout
  }

  /// The URL without credentials or query (it may carry a secret).
  public var location: String { Redaction.url(url) }

  public func publish(_ checkpoint: StoredCheckpoint) async throws {
    var request = HTTPClientRequest(url: target)
    if let authorization { request.headers.add(name: "Authorization", value: authorization) }
    request.method = .POST
    request.headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
    request.headers.add(name: "Nova-Checkpoint-Size", value: String(checkpoint.size))
    request.body = .bytes(ByteBuffer(string: checkpoint.note))
    let response: HTTPClientResponse
    do {
      response = try await client.execute(request, timeout: .nanoseconds(Int64(timeout.components.seconds) * 1_000_000_000))
    } catch {
      throw NovaError.unavailable("checkpoint mirror \(location): \(error)")
    }
    guard (200..<300).contains(Int(response.status.code)) else {
      throw NovaError.unavailable("checkpoint mirror \(location) answered \(response.status.code)")
    }
  }

  public func checkpoints() async throws -> [MirroredCheckpoint]? { nil }
}
