import Crypto
import Foundation
import NovaCore
import NovaMonitoring

/// Where an alert is in its life: `pending` (condition holds, `for:` not yet elapsed), `firing`,
/// `resolved`.
public enum AlertState: String, Sendable, Codable, CaseIterable {
  case pending, firing, resolved

  /// States from a comma-separated list (`firing,pending`); `field` names the input in errors.
  public static func parseList(_ text: String, field: String) throws(NovaError) -> [AlertState] {
    var states: [AlertState] = []
    for name in text.split(separator: ",") {
      guard let state = AlertState(rawValue: String(name)) else {
        throw .invalidInput(field: field, message: "'\(name)' is not pending, firing or resolved")
      }
      states.append(state)
    }
    return states
  }
}

/// One alert: a rule's condition on one KPI series (its fingerprint), from pending to resolved,
/// with its acknowledgement and SLA record.
public struct AlertInstance: Sendable, Codable, Equatable {
  /// Assigned when first stored; 0 before.
  public var id: Int64 = 0
  public var fingerprint: String
  public var rule: String
  /// `alertname`, the series' labels and the rule's labels.
  public var labels: [String: String]
  public var state: AlertState = .pending
  public var severity: String
  public var kpi: String
  public var value: Double
  public var threshold: Double
  public var unit: String
  public var summary: String
  public var description: String
  public var runbook: String?
  public var route: String?
  /// Milliseconds since 1970: when the condition started holding.
  public var activeSince: Int64
  /// The last evaluation that found the condition holding.
  public var lastTrueAt: Int64
  public var firedAt: Int64?
  public var lastNotifiedAt: Int64?
  /// The last re-send to Alertmanager receivers.
  public var lastRefreshAt: Int64?
  public var acknowledgedAt: Int64?
  public var acknowledgedBy: String?
  public var escalatedAt: Int64?
  public var resolvedAt: Int64?
  /// `condition cleared`, `rule removed`, or who resolved it.
  public var resolvedBy: String?
  /// When the resolve deadline passed while the alert was open.
  public var resolveBreachedAt: Int64?
  /// For a resolved alert: whether its condition has cleared since. One resolved by hand stays
  /// open (and its series does not page again) until then.
  public var cleared: Bool = false

  public init(
    fingerprint: String, rule: String, labels: [String: String], severity: String, kpi: String, value: Double, threshold: Double,
    unit: String, summary: String, description: String, runbook: String? = nil, route: String? = nil, activeSince: Int64, lastTrueAt: Int64
  ) {
    self.fingerprint = fingerprint
    self.rule = rule
    self.labels = labels
    self.severity = severity
    self.kpi = kpi
    self.value = value
    self.threshold = threshold
    self.unit = unit
    self.summary = summary
    self.description = description
    self.runbook = runbook
    self.route = route
    self.activeSince = activeSince
    self.lastTrueAt = lastTrueAt
  }

  enum CodingKeys: String, CodingKey {
    case id, fingerprint, rule, labels, state, severity, kpi, value, threshold, unit, summary, description, runbook, route
    case activeSince = "active_since"
    case lastTrueAt = "last_true_at"
    case firedAt = "fired_at"
    case lastNotifiedAt = "last_notified_at"
    case lastRefreshAt = "last_refresh_at"
    case acknowledgedAt = "acknowledged_at"
    case acknowledgedBy = "acknowledged_by"
    case escalatedAt = "escalated_at"
    case resolvedAt = "resolved_at"
    case resolvedBy = "resolved_by"
    case resolveBreachedAt = "resolve_breached_at"
    case cleared
  }

  /// Whether the engine still tracks it: pending, firing, or resolved by hand before its condition cleared.
  public var isOpen: Bool { state != .resolved || !cleared }

  public static let clearedReason = "condition cleared"
  public static let ruleRemovedReason = "rule removed"

  /// PagerDuty's `dedup_key`: the rule and the fingerprint (at most 255 characters).
  public var dedupKey: String { "nova/\(rule.prefix(200))/\(fingerprint)" }

  /// The fingerprint of a rule's alert on a label set: 16 hex digits of SHA-256.
  public static func fingerprint(rule: String, labels: [String: String]) -> String {
    var bytes = Array(rule.utf8)
    bytes.append(0)
    bytes += Array(KPISample.labelText(labels).utf8)
    return SHA256.hash(data: bytes).prefix(8).map { String(format: "%02x", $0) }.joined()
  }
}
