import Foundation
import NovaCore
import NovaQueue

/// Every worker in the registry: host, labels, capacity and GPUs in use per device, running
/// jobs, when it was last seen, and whether it lapsed.
public struct WorkersPage: Sendable {
  public var workers: [WorkerPresence]
  public var now: Date

  public init(workers: [WorkerPresence], now: Date) {
    self.workers = workers
    self.now = now
  }

  /// The page for `viewer`.
  public func html(viewer: ConsoleViewer) -> String {
    let live = workers.filter { $0.expiresAt > now }
    var body = "<p>\(live.count) online, \(workers.count - live.count) lapsed (kept an hour after they were last seen).</p>"
    body +=
      "<div class=\"table-wrap\"><table id=\"workers\" aria-label=\"Workers\"><thead><tr><th scope=\"col\">Worker</th><th scope=\"col\">Status</th>"
    body += "<th scope=\"col\">Host</th><th scope=\"col\">Labels</th><th scope=\"col\">Capacity</th><th scope=\"col\">GPUs</th>"
    body += "<th scope=\"col\">Running</th><th scope=\"col\">Takes</th><th scope=\"col\">Last seen</th></tr></thead><tbody>"
    if workers.isEmpty { body += "<tr><td colspan=\"9\" class=\"muted\">No worker has announced itself.</td></tr>" }
    for worker in workers.sorted(by: { ($0.expiresAt > now ? 0 : 1, $0.worker) < ($1.expiresAt > now ? 0 : 1, $1.worker) }) {
      let lapsed = worker.expiresAt <= now
      body += "<tr data-worker=\"\(ConsoleHTML.escape(worker.worker))\"><th scope=\"row\">\(ConsoleHTML.escape(worker.worker))</th>"
      body += "<td>\(ConsoleHTML.stateBadge(lapsed ? "lapsed" : "live"))</td>"
      body += "<td>\(ConsoleHTML.escape(worker.capacity?.host ?? worker.host ?? ""))</td>"
      let labels = (worker.capacity?.labels ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ")
      body += "<td>\(ConsoleHTML.escape(labels))</td>"
      if let capacity = worker.capacity {
        let free = worker.free
        body +=
          "<td>\(free?.cpus ?? capacity.cpus)/\(capacity.cpus) CPUs free, \(free?.memory_mib ?? capacity.memory_mib)/\(capacity.memory_mib) MiB free</td>"
        body += "<td>\(gpus(capacity, free: free))</td>"
      } else {
        body += "<td class=\"muted\">not declared</td><td class=\"muted\">–</td>"
      }
      let running = worker.running ?? []
      body += "<td>"
      if running.isEmpty { body += "<span class=\"muted\">none</span>" }
      for id in running.prefix(20) {
        body += "<a href=\"/console/jobs/\(ConsoleHTML.escape(id))\"><code>\(ConsoleHTML.escape(id))</code></a> "
      }
      if running.count > 20 { body += "and \(running.count - 20) more" }
      body += "</td>"
      let takes =
        (worker.queues.isEmpty ? "every queue" : worker.queues.joined(separator: ", ")) + "; "
        + (worker.kinds.isEmpty ? "every kind" : worker.kinds.joined(separator: ", "))
      body += "<td>\(ConsoleHTML.escape(takes))</td><td>\(ConsoleHTML.ago(worker.lastSeen ?? worker.expiresAt, now: now))</td></tr>"
    }
    body += "</tbody></table></div>"
    return ConsoleHTML.page(title: "Workers", section: .workers, viewer: viewer, body: body)
  }

  private func gpus(_ capacity: HostCapacity, free: HostCapacity?) -> String {
    guard !capacity.gpus.isEmpty else { return "<span class=\"muted\">none</span>" }
    let freeIndices = Set((free ?? capacity).gpus.map(\.index))
    let used = capacity.gpus.filter { !freeIndices.contains($0.index) }.count
    var out = "<span data-gpus-in-use=\"\(used)\">\(used) of \(capacity.gpus.count) in use</span><ul>"
    for gpu in capacity.gpus {
      let inUse = !freeIndices.contains(gpu.index)
      out += "<li>GPU \(gpu.index) \(ConsoleHTML.escape(gpu.model)): \(inUse ? "<strong>in use</strong>" : "free")</li>"
    }
    return out + "</ul>"
  }
}
