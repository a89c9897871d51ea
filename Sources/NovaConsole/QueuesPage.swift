import Foundation
import NovaCore
import NovaQueue

/// Every queue with its flow control and running jobs against its limits; operators pause,
/// resume and change limits and weights here.
public struct QueuesPage: Sendable {
  public var queues: [QueueSummary]
  public var notice: String?
  public var error: String?

  public init(queues: [QueueSummary], notice: String? = nil, error: String? = nil) {
    self.queues = queues
    self.notice = notice
    self.error = error
  }

  static func limit(_ value: Int?) -> String { value.map(String.init) ?? "none" }
  static func rate(_ value: Double?) -> String { value.map { String(format: "%g/s", $0) } ?? "none" }

  /// The page for `viewer`.
  public func html(viewer: ConsoleViewer) -> String {
    var body = ConsoleHTML.notice(notice) + ConsoleHTML.notice(error, error: true)
    body += "<div class=\"table-wrap\"><table id=\"queues\"><thead><tr><th scope=\"col\">Queue</th><th scope=\"col\">State</th>"
    body +=
      "<th scope=\"col\" class=\"num\">Running / limit</th><th scope=\"col\" class=\"num\">Waiting</th><th scope=\"col\" class=\"num\">Weight</th>"
    body += "<th scope=\"col\">Rate</th><th scope=\"col\">Per key</th>"
    if viewer.mayOperate { body += "<th scope=\"col\">Actions</th>" }
    body += "</tr></thead><tbody>"
    if queues.isEmpty { body += "<tr><td colspan=\"8\" class=\"muted\">No queues yet: a queue appears with its first job.</td></tr>" }
    for queue in queues {
      let name = ConsoleHTML.escape(queue.name)
      let controls = queue.controls
      let running = queue.counts[.running] ?? 0
      let waiting = (queue.counts[.available] ?? 0) + (queue.counts[.scheduled] ?? 0) + (queue.counts[.failed] ?? 0)
      body += "<tr data-queue=\"\(name)\"><th scope=\"row\"><a href=\"/console/jobs?queue=\(ConsoleHTML.query(queue.name))\">\(name)</a></th>"
      body +=
        "<td>\(controls.paused ? "<span class=\"badge s-pending\" data-paused=\"true\">paused</span>" : "<span class=\"badge s-live\" data-paused=\"false\">running</span>")</td>"
      let atLimit = controls.maxRunning.map { running >= $0 } ?? false
      body += "<td class=\"num\">\(running) / \(Self.limit(controls.maxRunning))\(atLimit ? " <span class=\"warn\">(at limit)</span>" : "")</td>"
      body += "<td class=\"num\">\(waiting)</td><td class=\"num\">\(controls.weight)</td><td>\(Self.rate(controls.ratePerSecond))</td>"
      body += "<td>\(Self.limit(controls.maxRunningPerKey)) running, \(Self.rate(controls.ratePerKey))</td>"
      if viewer.mayOperate {
        let base = "/console/queues/\(ConsoleHTML.query(queue.name))"
        body += "<td>"
        body +=
          controls.paused
          ? ConsoleHTML.button("Resume \(queue.name)", action: base + "/resume", viewer: viewer)
          : ConsoleHTML.button("Pause \(queue.name)", action: base + "/pause", viewer: viewer, style: "danger")
        body += "<details><summary>Limits</summary><form method=\"post\" action=\"\(base)/controls\">\(ConsoleHTML.csrfField(viewer))"
        body += field("max_running", "Max running (empty: none)", controls.maxRunning.map(String.init), queue.name)
        body += field("weight", "Weight (1–1000)", String(controls.weight), queue.name)
        body += field("rate_per_second", "Starts per second (empty: none)", controls.ratePerSecond.map { String(format: "%g", $0) }, queue.name)
        body += field("max_running_per_key", "Max running per key", controls.maxRunningPerKey.map(String.init), queue.name)
        body += field("rate_per_key", "Starts per second per key", controls.ratePerKey.map { String(format: "%g", $0) }, queue.name)
        body += "<button type=\"submit\">Save limits of \(name)</button></form></details></td>"
      }
      body += "</tr>"
    }
    body += "</tbody></table></div>"
    return ConsoleHTML.page(title: "Queues", section: .queues, viewer: viewer, body: body)
  }

  private func field(_ name: String, _ label: String, _ value: String?, _ queue: String) -> String {
    let id = "\(name)-\(queue)".map { $0.isLetter || $0.isNumber ? $0 : "-" }
    return
      "<p><label for=\"\(String(id))\">\(ConsoleHTML.escape(label))</label><br><input id=\"\(String(id))\" name=\"\(name)\" inputmode=\"decimal\" value=\"\(ConsoleHTML.escape(value ?? ""))\"></p>"
  }
}
