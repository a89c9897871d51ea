import AsyncHTTPClient
import Crypto
import Foundation
import NIOCore
import NIOHTTP1
import NovaCore

/// Sends outbox requests over HTTP, adding each receiver's secret: PagerDuty's routing key in the
/// body, a webhook's Standard Webhooks signature (``StandardWebhook``) in its headers.
public struct NotificationSender: Sendable {
  /// What one attempt came to.
  public enum Outcome: Sendable, Equatable {
    case sent(status: Int)
    /// 429, 5xx or a network failure: try again later.
    case retry(String)
    /// Any other answer (400 included): sending it again cannot help.
    case rejected(String)
  }

  private let client: HTTPClient
  private let secrets: [String: String]
  public var timeout: Duration

  /// A sender with the receivers' secrets, by receiver name (never logged).
  public init(secrets: [String: String], client: HTTPClient = NotificationSender.client, timeout: Duration = .seconds(10)) {
    self.secrets = secrets
    self.client = client
    self.timeout = timeout
  }

  /// The key under which a receiver's secret URL is kept among the secrets.
  static func urlKey(_ receiver: String) -> String { "url\u{0}" + receiver }

  /// An HTTP client that never follows redirects: a notification goes to the configured URL
  /// or fails, and its body (a routing key, an alert) is never handed to another host.
  public static let client = HTTPClient(
    eventLoopGroupProvider: .singleton, configuration: HTTPClient.Configuration(redirectConfiguration: .disallow))

  /// The secrets `configuration`'s receivers name (and their URLs given by `url_env` or
  /// `url_file`); throws naming the first one missing.
  public static func secrets(for configuration: AlertingConfiguration, environment: [String: String] = ProcessInfo.processInfo.environment)
    throws(NovaError) -> [String: String]
  {
    var secrets: [String: String] = [:]
    for receiver in configuration.receivers {
      if let secret = receiver.secret {
        let value: String
        do {
          value = try secret.resolve(environment: environment)
        } catch {
          throw .invalidInput(field: "receiver \(receiver.name)", message: error.description)
        }
        // A webhook secret that cannot sign is refused at start, not at the first alert.
        if receiver.kind == .webhook {
          do {
            _ = try StandardWebhook.key(secret: value)
          } catch {
            throw .invalidInput(field: "receiver \(receiver.name)", message: error.description)
          }
        }
        secrets[receiver.name] = value
      }
      if let source = receiver.urlSecret {
        let url: String
        do {
          url = try source.resolve(environment: environment)
        } catch {
          throw .invalidInput(field: "receiver \(receiver.name)", message: error.description)
        }
        guard let parsed = URL(string: url), parsed.scheme == "http" || parsed.scheme == "https", parsed.host != nil else {
          throw .invalidInput(field: "receiver \(receiver.name)", message: "its url (\(Redaction.url(url))) is not an http(s) URL")
        }
        var base = url.hasSuffix("/") ? String(url.dropLast()) : url
        // The renderer adds Alertmanager's path to the placeholder.
        if receiver.kind == .alertmanager, base.hasSuffix("/api/v2/alerts") { base = String(base.dropLast("/api/v2/alerts".count)) }
        secrets[urlKey(receiver.name)] = base
      }
    }
    return secrets
  }

  /// `sha256=<hex HMAC-SHA256 of body under secret>`: the hex HMAC that PagerDuty's own webhook
  /// signatures (`v1=<hex>`) carry. Nova signs its webhooks with ``StandardWebhook``.
  public static func signature(of body: [UInt8], secret: String) -> String {
    let mac = HMAC<SHA256>.authenticationCode(for: body, using: SymmetricKey(data: Array(secret.utf8)))
    return "sha256=" + mac.map { String(format: "%02x", $0) }.joined()
  }

  /// A delivery's `webhook-id`: the same on each of its retries (its outbox row), and unlike any
  /// other Nova's (the row's creation time in milliseconds is part of it).
  public static func messageID(of delivery: Delivery) -> String { "nova-\(delivery.createdAt)-\(delivery.id)" }

  /// The body as sent: the stored body with the receiver's secret filled in.
  public func finalBody(_ request: OutboundRequest) throws(NovaError) -> [UInt8] {
    guard request.kind == .pagerduty else { return Array(request.body.utf8) }
    guard let key = secrets[request.receiver] else {
      throw .invalidInput(field: "receiver \(request.receiver)", message: "no routing key was loaded")
    }
    guard case .object(var body) = try? JSONValue.parse(Data(request.body.utf8)) else {
      throw .storage("outbox body for \(request.receiver) is not a JSON object")
    }
    body["routing_key"] = .string(key)
    do {
      return try CanonicalJSON.encode(.object(body))
    } catch {
      throw .storage("cannot encode the body for \(request.receiver): \(error)")
    }
  }

  /// One attempt of an outbox delivery.
  public func send(_ delivery: Delivery) async -> Outcome {
    await send(delivery.request, messageID: Self.messageID(of: delivery))
  }

  /// One attempt; a webhook is signed as message `messageID` (nil: a fresh id, for a request
  /// sent outside the outbox and so never retried).
  public func send(_ request: OutboundRequest, messageID: String? = nil) async -> Outcome {
    let body: [UInt8]
    do {
      body = try finalBody(request)
    } catch {
      return .rejected(error.description)
    }
    var url = request.url
    let secretPrefix = ReceiverConfig.secretURLPrefix + request.receiver
    if url.hasPrefix(secretPrefix) {
      guard let real = secrets[Self.urlKey(request.receiver)] else { return .rejected("no url for receiver \(request.receiver)") }
      url = real + url.dropFirst(secretPrefix.count)
    }
    var http = HTTPClientRequest(url: url)
    http.method = .POST
    http.headers.add(name: "Content-Type", value: "application/json")
    http.headers.add(name: "User-Agent", value: "Nova-Alerting/1")
    if request.kind == .webhook, let secret = secrets[request.receiver] {
      let id = messageID ?? "nova-\(UUID().uuidString.lowercased())"
      let timestamp = Int64(Date().timeIntervalSince1970)
      do {
        for (name, value) in try StandardWebhook.headers(id: id, timestamp: timestamp, body: body, secret: secret) {
          http.headers.add(name: name, value: value)
        }
      } catch {
        return .rejected("receiver \(request.receiver): \(error)")
      }
    }
    http.body = .bytes(ByteBuffer(bytes: body))
    do {
      let response = try await client.execute(http, timeout: .nanoseconds(Int64(timeout.seconds * 1e9)))
      let answer = try await response.body.collect(upTo: 64 * 1024)
      let status = Int(response.status.code)
      let text = String(buffer: answer).prefix(500)
      switch status {
      case 200..<300: return .sent(status: status)
      case 429, 500...599: return .retry("HTTP \(status): \(text)")
      default: return .rejected("HTTP \(status): \(text)")
      }
    } catch {
      return .retry("\(error)")
    }
  }
}
