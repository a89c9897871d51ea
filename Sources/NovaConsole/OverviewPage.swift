import Foundation
import NovaAlerting
import NovaCore
import NovaQueue

/// Where the audit log stands, as the console shows it.
public struct AuditStatus: Sendable, Equatable {
  public var entries: Int64
  /// The latest signed checkpoint's size and time, if any.
  public var checkpointSize: Int64?
  public var checkpointTime: Int64?
  /// Whether the latest checkpoint's signature and root hold (nil: nothing to check yet).
  public var verified: Bool?
  /// What did not hold, in words.
  public var problem: String?

  public init(entries: Int64, checkpointSize: Int64? = nil, checkpointTime: Int64? = nil, verified: Bool? = nil, problem: String? = nil) {
    self.entries = entries
    self.checkpointSize = checkpointSize
    self.checkpointTime = checkpointTime
    self.verified = verified
    self.problem = problem
  }
}

/// The console's front page: jobs per queue and state, throughput and failures over the last
/// hour, workers and GPUs, firing alerts and the audit log's state; live by server-sent events.
public struct OverviewPage: Sendable {
  public var queues: [QueueSummary]
  public var workersLive: Int
  public var workersLapsed: Int
  public var gpus: Int
  public var gpusInUse: Int
  public var firing: [AlertInstance]
  public var audit: AuditStatus?
  /// Jobs finished per minute over the last hour, oldest first (60 values), and failures.
  public var completedPerMinute: [Int]
  public var failedPerMinute: [Int]
  public var now: Date

  public init(
    queues: [QueueSummary], workersLive: Int, workersLapsed: Int, gpus: Int, gpusInUse: Int, firing: [AlertInstance], audit: AuditStatus?,
    completedPerMinute: [Int], failedPerMinute: [Int], now: Date
  ) {
    self.queues = queues
    self.workersLive = workersLive
    self.workersLapsed = workersLapsed
    self.gpus = gpus
    self.gpusInUse = gpusInUse
    self.firing = firing
    self.audit = audit
    self.completedPerMinute = completedPerMinute
    self.failedPerMinute = failedPerMinute
    self.now = now
  }

  /// The states shown as columns, in the order a job goes through them.
  static let states: [JobState] = [.scheduled, .available, .running, .failed, .succeeded, .dead, .cancelled]

  /// Every figure the page shows that can change, by the id its element carries; the events
  /// stream sends the same dictionary.
  public var figures: [String: String] {
    var figures: [String: String] = [:]
    for state in Self.states {
      figures["total.\(state.rawValue)"] = String(queues.reduce(0) { $0 + ($1.counts[state] ?? 0) })
      for queue in queues { figures["q.\(queue.name).\(state.rawValue)"] = String(queue.counts[state] ?? 0) }
    }
    figures["workers.live"] = String(workersLive)
    figures["workers.lapsed"] = String(workersLapsed)
    figures["gpus.in_use"] = "\(gpusInUse) of \(gpus)"
    figures["alerts.firing"] = String(firing.count)
    figures["audit.entries"] = String(audit?.entries ?? 0)
    figures["throughput.hour"] = String(completedPerMinute.reduce(0, +))
    figures["failures.hour"] = String(failedPerMinute.reduce(0, +))
    return figures
  }

  /// The page for `viewer`.
  public func html(viewer: ConsoleViewer) -> String {
    let figures = figures
    func figure(_ id: String) -> String {
      "<span data-live-id=\"\(ConsoleHTML.escape(id))\">\(ConsoleHTML.escape(figures[id] ?? "0"))</span>"
    }
    var body = "<p class=\"muted\" id=\"live-stamp\" aria-live=\"off\">As of \(ConsoleHTML.time(now)) UTC.</p>"
    body += "<div class=\"grid\">"
    body +=
      "<section class=\"card\" aria-labelledby=\"h-running\"><h2 id=\"h-running\">Jobs running</h2><p class=\"figure\">\(figure("total.running"))</p>"
    body += "<p>\(figure("total.available")) available, \(figure("total.scheduled")) scheduled</p></section>"
    body += "<section class=\"card\" aria-labelledby=\"h-hour\"><h2 id=\"h-hour\">Last hour</h2><p class=\"figure\">\(figure("throughput.hour"))</p>"
    body += "<p>jobs finished; \(figure("failures.hour")) failed or died</p></section>"
    body += "<section class=\"card\" aria-labelledby=\"h-workers\"><h2 id=\"h-workers\">Workers</h2><p class=\"figure\">\(figure("workers.live"))</p>"
    body += "<p>online; \(figure("workers.lapsed")) lapsed. GPUs in use: \(figure("gpus.in_use"))</p></section>"
    let firingClass = firing.isEmpty ? "ok" : "bad"
    body +=
      "<section class=\"card\" aria-labelledby=\"h-alerts\"><h2 id=\"h-alerts\">Alerts</h2><p class=\"figure \(firingClass)\">\(figure("alerts.firing"))</p>"
    body += "<p>firing now. <a href=\"/console/alerts\">All alerts</a></p></section>"
    body += auditCard(figure("audit.entries"))
    body += "</div>"
    body += "<h2 id=\"h-chart\">Throughput and failures, last 60 minutes</h2>"
    body += Self.chart(completed: completedPerMinute, failed: failedPerMinute)
    body += "<h2 id=\"h-queues\">Queues</h2>"
    body += "<div class=\"table-wrap\"><table aria-labelledby=\"h-queues\"><thead><tr><th scope=\"col\">Queue</th>"
    for state in Self.states { body += "<th scope=\"col\" class=\"num\">\(state.rawValue)</th>" }
    body += "</tr></thead><tbody>"
    if queues.isEmpty { body += "<tr><td colspan=\"\(Self.states.count + 1)\" class=\"muted\">No queue has jobs yet.</td></tr>" }
    for queue in queues {
      let name = ConsoleHTML.escape(queue.name)
      body += "<tr><th scope=\"row\"><a href=\"/console/jobs?queue=\(ConsoleHTML.query(queue.name))\">\(name)</a>"
      if queue.controls.paused { body += " <span class=\"badge s-pending\">paused</span>" }
      body += "</th>"
      for state in Self.states {
        body +=
          "<td class=\"num\"><a href=\"/console/jobs?queue=\(ConsoleHTML.query(queue.name))&amp;state=\(state.rawValue)\">\(figure("q.\(queue.name).\(state.rawValue)"))</a></td>"
      }
      body += "</tr>"
    }
    body += "</tbody></table></div>"
    if !firing.isEmpty {
      body += "<h2>Firing alerts</h2><ul>"
      for alert in firing.prefix(10) {
        body += "<li><span class=\"badge s-firing\">\(ConsoleHTML.escape(alert.severity))</span> \(ConsoleHTML.escape(alert.summary))</li>"
      }
      body += "</ul>"
    }
    return ConsoleHTML.page(title: "Overview", section: .overview, viewer: viewer, body: body, live: "/console/events")
  }

  private func auditCard(_ entries: String) -> String {
    var out = "<section class=\"card\" aria-labelledby=\"h-audit\"><h2 id=\"h-audit\">Audit log</h2><p class=\"figure\">\(entries)</p><p>entries. "
    guard let audit else { return out + "No audit log (the server runs without security).</p></section>" }
    switch audit.verified {
    case .some(true):
      out += "<span class=\"badge s-verified\" data-audit=\"verified\">verified</span> up to the checkpoint of \(audit.checkpointSize ?? 0) entries"
      out += " signed \(ConsoleHTML.time(millis: audit.checkpointTime))."
    case .some(false):
      out += "<span class=\"badge s-unverified\" data-audit=\"unverified\">does not verify</span>: \(ConsoleHTML.escape(audit.problem ?? "unknown"))."
    case .none: out += "<span class=\"muted\" data-audit=\"unsigned\">No signed checkpoint yet.</span>"
    }
    return out + " <a href=\"/lux\">Compliance</a></p></section>"
  }

  /// Bars per minute: finished jobs above the axis, failures below, with the figures in words.
  static func chart(completed: [Int], failed: [Int]) -> String {
    let count = max(completed.count, failed.count, 1)
    let highest = max(completed.max() ?? 0, failed.max() ?? 0, 1)
    let width = 600.0
    let barWidth = (width - 40) / Double(count)
    var bars = ""
    for index in 0..<count {
      let x = 30 + Double(index) * barWidth
      let up = Double(index < completed.count ? completed[index] : 0) / Double(highest) * 70
      let down = Double(index < failed.count ? failed[index] : 0) / Double(highest) * 40
      if up > 0 {
        bars += String(format: "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#0b4f9c\"/>", x, 80 - up, barWidth * 0.8, up)
      }
      if down > 0 { bars += String(format: "<rect x=\"%.1f\" y=\"80\" width=\"%.1f\" height=\"%.1f\" fill=\"#a4161a\"/>", x, barWidth * 0.8, down) }
    }
    let total = completed.reduce(0, +)
    let failures = failed.reduce(0, +)
    return """
      <svg class="chart" width="\(Int(width))" height="130" viewBox="0 0 \(Int(width)) 130" role="img" aria-labelledby="chart-title chart-desc">
      <title id="chart-title">Jobs finished (blue, above) and failed (red, below) per minute</title>
      <desc id="chart-desc">\(total) jobs finished and \(failures) failed in the last \(count) minutes; the busiest minute had \(highest).</desc>
      <line x1="30" y1="80" x2="\(Int(width) - 10)" y2="80" stroke="#767676"/>
      <text x="0" y="14" font-size="11" fill="#4a4a4a">\(highest)</text>
      <text x="30" y="128" font-size="11" fill="#4a4a4a">60 min ago</text>
      <text x="\(Int(width) - 40)" y="128" font-size="11" fill="#4a4a4a">now</text>
      \(bars)
      </svg>
      <p class="muted">Blue bars: jobs that succeeded in that minute. Red bars: jobs that failed or died.</p>
      """
  }
}
