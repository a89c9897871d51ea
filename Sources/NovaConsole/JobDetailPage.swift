import Foundation
import NovaCore
import NovaQueue
import NovaSecurity

/// One attempt of a job as its audit trail tells it: who ran it, where, when, and how it ended.
public struct JobAttempt: Sendable, Equatable {
  public var number: Int
  public var worker: String?
  public var host: String?
  public var gpus: String?
  public var started: Int64
  public var ended: Int64?
  /// The event that ended it (`completed`, `failed`, `dead`, `released`, …), nil while it runs.
  public var outcome: String?
  public var error: String?

  /// The attempts in a job's audit entries: each claim starts one, the next transition ends it.
  public static func from(_ entries: [AuditEntry]) -> [JobAttempt] {
    var attempts: [JobAttempt] = []
    for entry in entries where entry.event.hasPrefix("job.") {
      guard case .object(let payload)? = try? JSONValue.parse(Data(entry.payload.utf8)) else { continue }
      let event = String(entry.event.dropFirst(4))
      let detail = payload["detail"].flatMap { if case .string(let text) = $0 { text } else { nil } }
      if event == "claimed" {
        var number = attempts.count + 1
        if case .int(let given)? = payload["attempt"] { number = Int(given) }
        attempts.append(JobAttempt(number: number, worker: detail, started: entry.time))
      } else if let last = attempts.indices.last, attempts[last].ended == nil, event != "enqueued", event != "promoted" {
        attempts[last].ended = entry.time
        attempts[last].outcome = event
        if event == "failed" || event == "dead" { attempts[last].error = detail }
      }
    }
    return attempts
  }

  public init(
    number: Int, worker: String?, host: String? = nil, gpus: String? = nil, started: Int64, ended: Int64? = nil, outcome: String? = nil,
    error: String? = nil
  ) {
    self.number = number
    self.worker = worker
    self.host = host
    self.gpus = gpus
    self.started = started
    self.ended = ended
    self.outcome = outcome
    self.error = error
  }
}

/// A job: payload, result, error, why it waits, its attempts with their output, and its audit
/// trail with each entry's proof against the latest signed checkpoint.
public struct JobDetailPage: Sendable {
  public var job: Job
  public var waitingFor: WaitingFor?
  public var attempts: [JobAttempt]
  /// The attempt whose output is shown, and that output (nil: the store keeps none).
  public var outputAttempt: Int?
  public var output: String?
  public var trail: AuditTrail?
  public var notice: String?
  public var error: String?

  public init(
    job: Job, waitingFor: WaitingFor?, attempts: [JobAttempt], outputAttempt: Int?, output: String?, trail: AuditTrail?, notice: String? = nil,
    error: String? = nil
  ) {
    self.job = job
    self.waitingFor = waitingFor
    self.attempts = attempts
    self.outputAttempt = outputAttempt
    self.output = output
    self.trail = trail
    self.notice = notice
    self.error = error
  }

  /// The page for `viewer`.
  public func html(viewer: ConsoleViewer) -> String {
    let id = ConsoleHTML.escape(job.id.rawValue)
    var body = ConsoleHTML.notice(notice) + ConsoleHTML.notice(error, error: true)
    body += "<dl id=\"job\" data-state=\"\(job.state.rawValue)\">"
    body += "<dt>State</dt><dd>\(ConsoleHTML.stateBadge(job.state.rawValue))</dd>"
    body += "<dt>Queue</dt><dd><a href=\"/console/jobs?queue=\(ConsoleHTML.query(job.queue))\">\(ConsoleHTML.escape(job.queue))</a></dd>"
    body += "<dt>Kind</dt><dd>\(ConsoleHTML.escape(job.kind))</dd>"
    body += "<dt>Attempts</dt><dd>\(job.attempts) of \(job.maxAttempts)</dd><dt>Priority</dt><dd>\(job.priority)</dd>"
    if let key = job.idempotencyKey { body += "<dt>Idempotency key</dt><dd><code>\(ConsoleHTML.escape(key))</code></dd>" }
    if let key = job.concurrencyKey { body += "<dt>Concurrency key</dt><dd><code>\(ConsoleHTML.escape(key))</code></dd>" }
    body += "<dt>Created</dt><dd>\(ConsoleHTML.time(job.createdAt))</dd><dt>Runs at</dt><dd>\(ConsoleHTML.time(job.runAt))</dd>"
    body += "<dt>Started</dt><dd>\(ConsoleHTML.time(job.startedAt))</dd><dt>Finished</dt><dd>\(ConsoleHTML.time(job.finishedAt))</dd>"
    if let owner = job.leaseOwner { body += "<dt>Worker</dt><dd>\(ConsoleHTML.escape(owner))</dd>" }
    if let placement = job.placement {
      let gpus = placement.gpus.isEmpty ? "no GPU" : "GPU " + placement.visibleDevices
      body += "<dt>Placed on</dt><dd>\(ConsoleHTML.escape(placement.host)): \(gpus), \(placement.cpus) CPUs, \(placement.memory_mib) MiB</dd>"
    }
    if let waitingFor {
      body +=
        "<dt>Waiting for</dt><dd data-waiting=\"\(ConsoleHTML.escape(waitingFor.reason))\"><strong>\(ConsoleHTML.escape(waitingFor.reason))</strong>: \(ConsoleHTML.escape(waitingFor.detail))</dd>"
    }
    body += "</dl>"
    if viewer.mayOperate {
      body += "<div class=\"actions\">"
      if BulkAction.retry.states.contains(job.state) {
        body += ConsoleHTML.button("Retry job", action: "/console/jobs/\(id)/retry", viewer: viewer)
      }
      if BulkAction.cancel.states.contains(job.state) {
        body += ConsoleHTML.button("Cancel job", action: "/console/jobs/\(id)/cancel", viewer: viewer, style: "danger")
      }
      body += "</div>"
    }
    if let lastError = job.lastError { body += "<h2>Error</h2><pre id=\"error\">\(ConsoleHTML.escape(lastError))</pre>" }
    body += "<h2>Payload</h2><pre id=\"payload\">\(ConsoleHTML.escape(ConsoleHTML.pretty(job.payload)))</pre>"
    if let result = job.result { body += "<h2>Result</h2><pre id=\"result\">\(ConsoleHTML.escape(ConsoleHTML.pretty(result)))</pre>" }
    body += attemptsSection()
    body += outputSection()
    body += trailSection()
    return ConsoleHTML.page(title: "Job \(job.id.rawValue)", section: .jobs, viewer: viewer, body: body)
  }

  private func attemptsSection() -> String {
    var out = "<h2 id=\"h-attempts\">Attempts</h2>"
    guard !attempts.isEmpty else { return out + "<p class=\"muted\">Not claimed yet.</p>" }
    out += "<div class=\"table-wrap\"><table aria-labelledby=\"h-attempts\"><thead><tr><th scope=\"col\">#</th><th scope=\"col\">Worker</th>"
    out +=
      "<th scope=\"col\">Host</th><th scope=\"col\">GPUs</th><th scope=\"col\">Started</th><th scope=\"col\">Ended</th><th scope=\"col\">Outcome</th><th scope=\"col\">Output</th></tr></thead><tbody>"
    for attempt in attempts {
      out += "<tr><td>\(attempt.number)</td><td>\(ConsoleHTML.escape(attempt.worker ?? ""))</td><td>\(ConsoleHTML.escape(attempt.host ?? ""))</td>"
      out +=
        "<td>\(ConsoleHTML.escape(attempt.gpus ?? ""))</td><td>\(ConsoleHTML.time(millis: attempt.started))</td><td>\(ConsoleHTML.time(millis: attempt.ended))</td>"
      out += "<td>\(attempt.outcome.map(ConsoleHTML.stateBadge) ?? ConsoleHTML.stateBadge("running"))"
      if let error = attempt.error { out += " <span class=\"muted\">\(ConsoleHTML.escape(String(error.prefix(200))))</span>" }
      out += "</td><td><a href=\"/console/jobs/\(ConsoleHTML.escape(job.id.rawValue))?attempt=\(attempt.number)#output\">output</a></td></tr>"
    }
    return out + "</tbody></table></div>"
  }

  private func outputSection() -> String {
    var out = "<h2 id=\"output\">Output\(outputAttempt.map { " of attempt \($0)" } ?? "")</h2>"
    guard let output else { return out + "<p class=\"muted\">This store keeps no job output.</p>" }
    let running = job.state == .running && (outputAttempt == nil || outputAttempt == job.attempts)
    if running {
      let follow = "/console/jobs/\(ConsoleHTML.escape(job.id.rawValue))/output?attempt=\(outputAttempt ?? job.attempts)"
      out +=
        "<p id=\"follow-state\" class=\"muted\" aria-live=\"polite\">The attempt is running: its output is followed live (reload without script).</p>"
      out += "<pre id=\"output-text\" data-follow=\"\(follow)\">\(ConsoleHTML.escape(output))</pre>"
    } else {
      out += output.isEmpty ? "<p class=\"muted\">No output.</p>" : "<pre id=\"output-text\">\(ConsoleHTML.escape(output))</pre>"
    }
    return out
  }

  private func trailSection() -> String {
    var out = "<h2 id=\"h-trail\">Audit trail</h2>"
    guard let trail else { return out + "<p class=\"muted\">No audit log (the server runs without security).</p>" }
    let failed = trail.items.contains { $0.status == .failed } || (!trail.checkpointValid && trail.checkpointSize != nil)
    let verified = trail.items.filter { $0.status == .verified }.count
    let pending = trail.items.filter { $0.status == .pending }.count
    if failed {
      out +=
        "<p class=\"bad\" id=\"trail-status\" data-trail=\"failed\"><strong>Does not verify</strong>: \(ConsoleHTML.escape(trail.problem ?? "a proof failed"))</p>"
    } else if let size = trail.checkpointSize {
      out +=
        "<p class=\"ok\" id=\"trail-status\" data-trail=\"verified\" data-verified=\"\(verified)\"><strong>\(verified) of \(trail.items.count) entries verified</strong>"
      out += " against the signed checkpoint of \(size) entries (\(ConsoleHTML.time(millis: trail.checkpointTime)))"
      out += pending > 0 ? "; \(pending) newer entries await the next checkpoint.</p>" : ".</p>"
    } else {
      out += "<p class=\"muted\" id=\"trail-status\" data-trail=\"unsigned\">No signed checkpoint yet: the entries are shown unverified.</p>"
    }
    out += "<div class=\"table-wrap\"><table aria-labelledby=\"h-trail\" id=\"trail\"><thead><tr><th scope=\"col\">#</th><th scope=\"col\">Time</th>"
    out += "<th scope=\"col\">Event</th><th scope=\"col\">Actor</th><th scope=\"col\">Details</th><th scope=\"col\">Proof</th></tr></thead><tbody>"
    for item in trail.items {
      let entry = item.entry
      out +=
        "<tr data-seq=\"\(entry.seq)\" data-proof=\"\(item.status.rawValue)\"><td>\(entry.seq)</td><td>\(ConsoleHTML.time(millis: entry.time))</td>"
      out +=
        "<td>\(ConsoleHTML.escape(entry.event))</td><td>\(ConsoleHTML.escape(entry.actor))</td><td><code>\(ConsoleHTML.escape(entry.payload))</code></td>"
      let label = item.status == .verified ? "verified" : item.status == .pending ? "awaits checkpoint" : "unverified"
      out +=
        "<td><span class=\"badge s-\(item.status == .failed ? "unverified" : item.status == .verified ? "verified" : "pending")\">\(label)</span></td></tr>"
    }
    out += "</tbody></table></div>"
    if trail.truncated { out += "<p class=\"muted\">Only the first \(trail.items.count) entries are shown.</p>" }
    return out
  }
}
