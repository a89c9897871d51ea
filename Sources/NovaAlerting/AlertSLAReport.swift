import Foundation
import NovaCore

/// How alerts fared against the on-call SLA in a window: acknowledged within the deadline,
/// resolved within the deadline, escalations. Only what happened by the window's end counts, so a
/// closed window always gives the same report.
public struct AlertSLAReport: Codable, Sendable, Equatable {
  public var since: Int64?
  public var until: Int64
  public var acknowledge_within_s: Double
  public var resolve_within_s: Double
  /// Alerts that fired in the window.
  public var fired: Int
  public var acknowledged: Int
  public var acknowledged_within_sla: Int
  public var resolved: Int
  public var resolved_within_sla: Int
  public var escalated: Int
  /// Still firing at the window's end.
  public var open: Int
  /// Acknowledged in time over fired; nil without alerts.
  public var acknowledge_compliance: Double?
  /// Resolved in time over fired alerts that were resolved or whose deadline passed; nil without any.
  public var resolve_compliance: Double?
  public var median_time_to_acknowledge_s: Double?
  public var median_time_to_resolve_s: Double?

  /// The report over `alerts` for alerts that fired in `since...until`.
  public static func compute(_ alerts: [AlertInstance], settings: AlertSettings, since: Int64?, until: Int64) -> AlertSLAReport {
    let ackWithin = Int64(settings.acknowledgeWithin.seconds * 1000)
    let resolveWithin = Int64(settings.resolveWithin.seconds * 1000)
    var report = AlertSLAReport(
      since: since, until: until, acknowledge_within_s: settings.acknowledgeWithin.seconds, resolve_within_s: settings.resolveWithin.seconds,
      fired: 0, acknowledged: 0, acknowledged_within_sla: 0, resolved: 0, resolved_within_sla: 0, escalated: 0, open: 0)
    var toAcknowledge: [Double] = []
    var toResolve: [Double] = []
    var resolveJudged = 0
    for alert in alerts {
      guard let fired = alert.firedAt, fired <= until, fired >= (since ?? .min) else { continue }
      report.fired += 1
      if let acknowledged = alert.acknowledgedAt, acknowledged <= until {
        report.acknowledged += 1
        if acknowledged - fired <= ackWithin { report.acknowledged_within_sla += 1 }
        toAcknowledge.append(Double(acknowledged - fired) / 1000)
      }
      if let escalated = alert.escalatedAt, escalated <= until { report.escalated += 1 }
      if let resolved = alert.resolvedAt, resolved <= until {
        report.resolved += 1
        resolveJudged += 1
        if resolved - fired <= resolveWithin { report.resolved_within_sla += 1 }
        toResolve.append(Double(resolved - fired) / 1000)
      } else {
        report.open += 1
        if until - fired > resolveWithin { resolveJudged += 1 }
      }
    }
    func median(_ values: [Double]) -> Double? { Statistics.median(values) }
    report.acknowledge_compliance = report.fired == 0 ? nil : Double(report.acknowledged_within_sla) / Double(report.fired)
    report.resolve_compliance = resolveJudged == 0 ? nil : Double(report.resolved_within_sla) / Double(resolveJudged)
    report.median_time_to_acknowledge_s = median(toAcknowledge)
    report.median_time_to_resolve_s = median(toResolve)
    return report
  }
}

extension AlertStore {
  /// Alerts that fired at or after `since` (all of them when nil), oldest first.
  public func fired(since: Int64?) async throws -> [AlertInstance] {
    // An alert is updated whenever it changes, so one that fired since `since` was updated since too.
    try await list(since: since ?? 0, limit: 1_000_000).filter { ($0.firedAt ?? -1) >= (since ?? 0) }.reversed()
  }
}
