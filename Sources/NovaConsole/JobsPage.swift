import Foundation
import NovaCore
import NovaQueue

/// What a bulk action does to each job.
public enum BulkAction: String, Sendable, CaseIterable {
  case retry, cancel, delete

  /// The states a job must be in for the action to apply to it.
  public var states: Set<JobState> {
    switch self {
    case .retry: [.dead, .cancelled, .failed]
    case .cancel: [.scheduled, .available, .running, .failed]
    case .delete: [.succeeded, .dead, .cancelled]
    }
  }

  var verb: String { rawValue.prefix(1).uppercased() + rawValue.dropFirst() }
}

/// A page of jobs under the current filters, with bulk actions over the selection or the filter.
public struct JobsPage: Sendable {
  public var query: JobsQuery
  public var jobs: [Job]
  public var nextCursor: String?
  public var notice: String?
  public var error: String?

  public init(query: JobsQuery, jobs: [Job], nextCursor: String?, notice: String? = nil, error: String? = nil) {
    self.query = query
    self.jobs = jobs
    self.nextCursor = nextCursor
    self.notice = notice
    self.error = error
  }

  /// The page for `viewer`.
  public func html(viewer: ConsoleViewer) -> String {
    var body = ConsoleHTML.notice(notice) + ConsoleHTML.notice(error, error: true)
    body += filterForm()
    let operate = viewer.mayOperate
    if operate {
      body += "<form id=\"bulk\" method=\"post\" action=\"/console/jobs/bulk\">\(ConsoleHTML.csrfField(viewer))"
      for (name, value) in query.pairs { body += "<input type=\"hidden\" name=\"\(name)\" value=\"\(ConsoleHTML.escape(value))\">" }
    }
    body += "<div class=\"table-wrap\"><table id=\"jobs\" aria-label=\"Jobs\"><thead><tr>"
    if operate {
      body += "<th scope=\"col\"><label><input type=\"checkbox\" id=\"select-all\" hidden> <span class=\"muted\">Select</span></label></th>"
    }
    body += "<th scope=\"col\">Job</th><th scope=\"col\">State</th><th scope=\"col\">Queue</th><th scope=\"col\">Kind</th>"
    body += "<th scope=\"col\" class=\"num\">Attempts</th><th scope=\"col\">Worker</th><th scope=\"col\">Created (UTC)</th></tr></thead><tbody>"
    if jobs.isEmpty { body += "<tr><td colspan=\"8\" class=\"muted\">No job matches these filters.</td></tr>" }
    for job in jobs {
      let id = ConsoleHTML.escape(job.id.rawValue)
      body += "<tr data-job=\"\(id)\">"
      if operate {
        body += "<td><input type=\"checkbox\" name=\"id\" value=\"\(id)\" aria-label=\"Select job \(id)\"></td>"
      }
      body += "<td><a href=\"/console/jobs/\(id)\"><code>\(id)</code></a></td><td>\(ConsoleHTML.stateBadge(job.state.rawValue))</td>"
      body += "<td>\(ConsoleHTML.escape(job.queue))</td><td>\(ConsoleHTML.escape(job.kind))</td>"
      body += "<td class=\"num\">\(job.attempts)/\(job.maxAttempts)</td><td>\(ConsoleHTML.escape(job.leaseOwner ?? ""))</td>"
      body += "<td>\(ConsoleHTML.time(job.createdAt))</td></tr>"
    }
    body += "</tbody></table></div>"
    if operate {
      body += "<div class=\"actions\" role=\"group\" aria-label=\"Bulk actions\">"
      for action in BulkAction.allCases {
        body += "<button type=\"submit\" name=\"bulk\" value=\"\(action.rawValue)-selected\">\(action.verb) selected</button>"
      }
      for action in BulkAction.allCases {
        body +=
          "<button type=\"submit\" name=\"bulk\" value=\"\(action.rawValue)-all\" class=\"\(action == .retry ? "" : "danger")\">\(action.verb) all matching</button>"
      }
      body += "</div><p class=\"muted\">Each asks for confirmation with the number of jobs first.</p></form>"
    }
    if nextCursor != nil, jobs.count < query.limit {
      body += "<p class=\"muted\">Fewer jobs than a page matched among those looked at; the next page looks further.</p>"
    }
    var paging = "<p class=\"actions\">"
    if query.cursor != nil { paging += "<a href=\"/console/jobs?\(ConsoleHTML.escape(query.queryString))\">First page</a>" }
    if let nextCursor {
      let separator = query.queryString.isEmpty ? "" : "&"
      paging += "<a rel=\"next\" href=\"/console/jobs?\(ConsoleHTML.escape(query.queryString + separator + "cursor=" + nextCursor))\">Next page</a>"
    }
    body += paging + "</p>"
    return ConsoleHTML.page(title: "Jobs", section: .jobs, viewer: viewer, body: body)
  }

  private func filterForm() -> String {
    func text(_ name: String, _ label: String, _ value: String?, type: String = "text") -> String {
      "<label>\(label)<input name=\"\(name)\" type=\"\(type)\" value=\"\(ConsoleHTML.escape(value ?? ""))\"></label>"
    }
    func local(_ date: Date?) -> String? {
      date.map { String(AuditTime.string($0.millisecondsSince1970).prefix(16)) }
    }
    var out = "<form class=\"filters\" method=\"get\" action=\"/console/jobs\" role=\"search\" aria-label=\"Filter jobs\">"
    out += text("q", "Job id or idempotency key", query.search, type: "search")
    out += "<label>State<select name=\"state\"><option value=\"\">any</option>"
    for state in JobState.allCases {
      out += "<option\(query.state == state ? " selected" : "")>\(state.rawValue)</option>"
    }
    out += "</select></label>"
    out += text("queue", "Queue", query.queue) + text("kind", "Kind", query.kind) + text("key", "Concurrency key", query.key)
    out += text("worker", "Worker", query.worker)
    out += text("from", "Created from (UTC)", local(query.from), type: "datetime-local")
    out += text("until", "Created before (UTC)", local(query.until), type: "datetime-local")
    out += "<button type=\"submit\">Filter</button> <a href=\"/console/jobs\">Clear</a></form>"
    return out
  }
}

/// The confirmation of a bulk action: what it does, to how many jobs, under which filter.
public struct BulkConfirmationPage: Sendable {
  public var action: BulkAction
  public var query: JobsQuery
  /// The jobs picked by hand; nil acts on the filter.
  public var selected: [String]?
  public var count: Int
  /// Counting stopped here (more jobs may match).
  public var capped: Bool

  public init(action: BulkAction, query: JobsQuery, selected: [String]?, count: Int, capped: Bool) {
    self.action = action
    self.query = query
    self.selected = selected
    self.count = count
    self.capped = capped
  }

  /// The page for `viewer`.
  public func html(viewer: ConsoleViewer) -> String {
    let scope = selected == nil ? "matching \(query.description)" : "selected by hand"
    let states = action.states.map(\.rawValue).sorted().joined(separator: ", ")
    var body =
      "<p role=\"alert\" data-bulk-count=\"\(count)\"><strong>\(action.verb) \(count)\(capped ? " or more" : "") jobs</strong> \(ConsoleHTML.escape(scope))?</p>"
    body += "<p class=\"muted\">Only jobs that are \(states) are affected; it runs in batches and is audited as one action.</p>"
    body += "<form method=\"post\" action=\"/console/jobs/bulk\">\(ConsoleHTML.csrfField(viewer))"
    for (name, value) in query.pairs { body += "<input type=\"hidden\" name=\"\(name)\" value=\"\(ConsoleHTML.escape(value))\">" }
    for id in selected ?? [] { body += "<input type=\"hidden\" name=\"id\" value=\"\(ConsoleHTML.escape(id))\">" }
    body += "<input type=\"hidden\" name=\"bulk\" value=\"\(action.rawValue)-\(selected == nil ? "all" : "selected")\">"
    body += "<input type=\"hidden\" name=\"confirm\" value=\"\(count)\">"
    body += "<div class=\"actions\"><button type=\"submit\" class=\"danger\">Yes, \(action.rawValue) \(count) jobs</button>"
    body += "<a href=\"/console/jobs?\(ConsoleHTML.escape(query.queryString))\">No, go back</a></div></form>"
    return ConsoleHTML.page(title: "Confirm: \(action.rawValue) \(count) jobs", section: .jobs, viewer: viewer, body: body)
  }
}
