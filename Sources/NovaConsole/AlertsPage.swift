import Foundation
import NovaAlerting
import NovaCore

/// Firing and recent alerts with their deadlines and SLA breaches; operators acknowledge and
/// resolve them here.
public struct AlertsPage: Sendable {
  public var alerts: [AlertInstance]
  public var settings: AlertSettings
  /// Whether alerting is configured at all (`--thresholds`).
  public var configured: Bool
  public var now: Date
  public var notice: String?
  public var error: String?

  public init(alerts: [AlertInstance], settings: AlertSettings, configured: Bool, now: Date, notice: String? = nil, error: String? = nil) {
    self.alerts = alerts
    self.settings = settings
    self.configured = configured
    self.now = now
    self.notice = notice
    self.error = error
  }

  /// The page for `viewer`.
  public func html(viewer: ConsoleViewer) -> String {
    var body = ConsoleHTML.notice(notice) + ConsoleHTML.notice(error, error: true)
    if !configured {
      body += "<p class=\"muted\">Alerting is not configured (start <code>nova serve --thresholds FILE</code>); stored alerts are shown.</p>"
    }
    let firing = alerts.filter { $0.state == .firing }
    body += "<p><strong data-firing=\"\(firing.count)\">\(firing.count) firing</strong>; \(alerts.count) in the last list.</p>"
    body += "<div class=\"table-wrap\"><table id=\"alerts\" aria-label=\"Alerts\"><thead><tr><th scope=\"col\">Alert</th><th scope=\"col\">State</th>"
    body += "<th scope=\"col\">Severity</th><th scope=\"col\">Value</th><th scope=\"col\">Fired</th><th scope=\"col\">Acknowledge by</th>"
    body += "<th scope=\"col\">Resolve by</th><th scope=\"col\">Acknowledged</th>"
    if viewer.mayOperate { body += "<th scope=\"col\">Actions</th>" }
    body += "</tr></thead><tbody>"
    if alerts.isEmpty { body += "<tr><td colspan=\"9\" class=\"muted\">No alerts.</td></tr>" }
    let ackWithin = Int64(settings.acknowledgeWithin.seconds * 1000)
    let resolveWithin = Int64(settings.resolveWithin.seconds * 1000)
    let nowMillis = now.millisecondsSince1970
    for alert in alerts {
      body += "<tr data-alert=\"\(alert.id)\" data-state=\"\(alert.state.rawValue)\"><th scope=\"row\">\(ConsoleHTML.escape(alert.summary))"
      body += "<br><span class=\"muted\">\(ConsoleHTML.escape(alert.rule))</span>"
      if let runbook = alert.runbook, runbook.hasPrefix("https://") || runbook.hasPrefix("http://") {
        body += " <a href=\"\(ConsoleHTML.escape(runbook))\" rel=\"noreferrer\">runbook</a>"
      }
      body += "</th><td>\(ConsoleHTML.stateBadge(alert.acknowledgedAt != nil && alert.state == .firing ? "acknowledged" : alert.state.rawValue))</td>"
      body +=
        "<td>\(ConsoleHTML.escape(alert.severity))</td><td>\(ConsoleHTML.escape(String(format: "%g", alert.value))) \(ConsoleHTML.escape(alert.unit)) (threshold \(String(format: "%g", alert.threshold)))</td>"
      body += "<td>\(ConsoleHTML.time(millis: alert.firedAt))</td>"
      let ackBy = alert.firedAt.map { $0 + ackWithin }
      let resolveBy = alert.firedAt.map { $0 + resolveWithin }
      let ackLate = ackBy.map { (alert.acknowledgedAt ?? nowMillis) > $0 } ?? false
      let resolveLate = alert.resolveBreachedAt != nil || (resolveBy.map { (alert.resolvedAt ?? nowMillis) > $0 } ?? false)
      body += "<td>\(ConsoleHTML.time(millis: ackBy))\(ackLate ? " <span class=\"bad\">SLA breached</span>" : "")</td>"
      body += "<td>\(ConsoleHTML.time(millis: resolveBy))\(resolveLate ? " <span class=\"bad\">SLA breached</span>" : "")</td>"
      body +=
        "<td>\(alert.acknowledgedBy.map { ConsoleHTML.escape($0) + " " + ConsoleHTML.time(millis: alert.acknowledgedAt) } ?? "<span class=\"muted\">no</span>")</td>"
      if viewer.mayOperate {
        body += "<td>"
        if alert.state != .resolved {
          if alert.acknowledgedAt == nil {
            body += ConsoleHTML.button("Acknowledge", action: "/console/alerts/\(alert.id)/ack", viewer: viewer)
          }
          body += ConsoleHTML.button("Resolve", action: "/console/alerts/\(alert.id)/resolve", viewer: viewer)
        }
        body += "</td>"
      }
      body += "</tr>"
    }
    body += "</tbody></table></div>"
    return ConsoleHTML.page(title: "Alerts", section: .alerts, viewer: viewer, body: body)
  }
}
