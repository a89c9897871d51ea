import Crypto
import Foundation
import NovaCore

/// PagerDuty's Webhooks v3, for acknowledgements and resolutions made in PagerDuty: the
/// `X-PagerDuty-Signature` check and the incident events Nova acts on.
public enum PagerDutyWebhook {
  public static let signatureHeader = "X-PagerDuty-Signature"

  /// One webhook event.
  public struct Event: Sendable, Equatable {
    public var id: String
    /// `incident.acknowledged`, `incident.resolved`, ...
    public var type: String
    /// The incident's key: the `dedup_key` Nova sent.
    public var incidentKey: String?
    /// Who acted, as PagerDuty summarises them.
    public var agent: String?
    /// When it happened (ms), from `occurred_at`.
    public var occurredAt: Int64?

    public init(id: String, type: String, incidentKey: String? = nil, agent: String? = nil, occurredAt: Int64? = nil) {
      self.id = id
      self.type = type
      self.incidentKey = incidentKey
      self.agent = agent
      self.occurredAt = occurredAt
    }
  }

  /// How old (or how far ahead) an event's `occurred_at` may be.
  public static let maximumAge: Duration = .seconds(300)

  /// Why an authentic event is not acted on.
  public struct Refusal: Error, Sendable, CustomStringConvertible {
    public var code: String
    public var description: String
  }

  /// Refuses an event that is stale (its `occurred_at` more than `maximumAge` from `now`, or
  /// missing) or whose id was seen before (a replay); otherwise remembers its id in `store`.
  public static func admit(_ event: Event, store: AlertStore, now: Int64, maximumAge: Duration = maximumAge) async throws {
    let window = Int64(maximumAge.seconds * 1000)
    guard let occurred = event.occurredAt else {
      throw Refusal(code: "stale_event", description: "event \(event.id) has no occurred_at; it cannot be told from a replay")
    }
    guard abs(now - occurred) <= window else {
      throw Refusal(
        code: "stale_event",
        description:
          "event \(event.id) occurred at \(AuditTime.string(occurred)), more than \(Int(maximumAge.seconds)) s from now (\(AuditTime.string(now))): refused as a possible replay"
      )
    }
    guard try await store.admitWebhookEvent(id: event.id, now: now, forgetBefore: now - 2 * window) else {
      throw Refusal(code: "replayed_event", description: "event \(event.id) was received before: refused as a replay")
    }
  }

  /// Whether any `v1=` signature in `header` is the HMAC-SHA256 of `body` under `secret`
  /// (several are sent while a secret is rotated); compared in constant time.
  public static func verify(header: String?, body: [UInt8], secret: String) -> Bool {
    guard let header, !secret.isEmpty else { return false }
    let key = SymmetricKey(data: Array(secret.utf8))
    for part in header.split(separator: ",") {
      let signature = part.trimmingCharacters(in: .whitespaces)
      guard signature.hasPrefix("v1="), let mac = hexBytes(signature.dropFirst(3)) else { continue }
      if HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: body, using: key) { return true }
    }
    return false
  }

  private static func hexBytes(_ text: Substring) -> [UInt8]? {
    guard text.count == 64 else { return nil }
    var bytes: [UInt8] = []
    var index = text.startIndex
    while index < text.endIndex {
      let next = text.index(index, offsetBy: 2)
      guard let byte = UInt8(text[index..<next], radix: 16) else { return nil }
      bytes.append(byte)
      index = next
    }
    return bytes
  }

  /// Reads the event of a webhook body; errors name the field that is missing or wrong.
  public static func parse(_ body: [UInt8]) throws(NovaError) -> Event {
    guard let value = try? JSONValue.parse(Data(body)) else {
      throw .malformedInput(field: "body", message: "not JSON")
    }
    guard case .object(let root) = value, case .object(let event)? = root["event"] else {
      throw .invalidInput(field: "event", message: "expected an object with the webhook event")
    }
    guard case .string(let type)? = event["event_type"] else { throw .invalidInput(field: "event.event_type", message: "missing") }
    guard case .string(let id)? = event["id"] else { throw .invalidInput(field: "event.id", message: "missing") }
    var parsed = Event(id: id, type: type)
    if case .object(let data)? = event["data"], case .string(let key)? = data["incident_key"] { parsed.incidentKey = key }
    if case .object(let agent)? = event["agent"], case .string(let summary)? = agent["summary"] { parsed.agent = summary }
    if case .string(let occurred)? = event["occurred_at"] {
      guard let time = AuditTime.parse(occurred) else {
        throw .invalidInput(field: "event.occurred_at", message: "'\(occurred)' is not an RFC 3339 time")
      }
      parsed.occurredAt = time
    }
    return parsed
  }

  /// Acknowledges or resolves the open alert the event's incident stands for (without telling
  /// PagerDuty again); other event types and unknown incidents are ignored. Returns what it did.
  public static func apply(_ event: Event, to engine: AlertEngine) async throws -> String {
    let action: AlertNotification.Action
    switch event.type {
    case "incident.acknowledged": action = .acknowledge
    case "incident.resolved": action = .resolve
    default: return "ignored \(event.type)"
    }
    guard let key = event.incidentKey, let alert = try await engine.openAlert(dedupKey: key) else {
      return "no open alert for incident key \(event.incidentKey ?? "(none)")"
    }
    let who = "pagerduty:\(event.agent ?? "unknown")"
    if action == .acknowledge {
      guard alert.state == .firing else { return "alert \(alert.id) is \(alert.state.rawValue)" }
      try await engine.acknowledge(id: alert.id, by: who, notifyPagerDuty: false)
      return "acknowledged alert \(alert.id)"
    }
    guard alert.state != .resolved else { return "alert \(alert.id) is already resolved" }
    try await engine.resolve(id: alert.id, by: who, notifyPagerDuty: false)
    return "resolved alert \(alert.id)"
  }
}
