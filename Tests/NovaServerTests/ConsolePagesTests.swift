import Foundation
import NovaAlerting
import NovaConsole
import NovaCore
import NovaQueue
import NovaSecurity
import Testing

/// The console's pages rendered from plain data: what each shows, that text is escaped, and
/// that viewers get no buttons.
@Suite("Console pages", .timeLimit(.minutes(5)))
struct ConsolePagesTests {
  let operatorViewer = ConsoleViewer(name: "ops", role: .operator, csrf: "c-1")
  let viewer = ConsoleViewer(name: "eve", role: .viewer, csrf: "c-2")
  let now = Date(timeIntervalSince1970: 1_800_000_000)

  func job(_ state: JobState, attempts: Int = 1) -> Job {
    Job(
      id: JobID.generate(), queue: "gpu", kind: "train<script>", payload: Data(#"{"model":"<b>big</b>"}"#.utf8), priority: 0, state: state,
      runAt: now, attempts: attempts, maxAttempts: 3, idempotencyKey: "order-1", createdAt: now, updatedAt: now, lastError: "oom & more",
      leaseOwner: "w-1",
      placement: JobPlacement(host: "spark-1", gpus: [JobPlacement.Device(index: 1, uuid: "GPU-1")], cpus: 4, memory_mib: 1024),
      concurrencyKey: "tenant-a")
  }

  @Test func theJobPageShowsAttemptsOutputAndTheTrailEscaped() throws {
    let entries = [
      AuditEntry(seq: 1, time: 1, actor: "token:ops", event: "job.enqueued", subject: "x", payload: #"{"attempt":0,"to":"available"}"#),
      AuditEntry(seq: 2, time: 2, actor: "worker", event: "job.claimed", subject: "x", payload: #"{"attempt":1,"detail":"w-1","to":"running"}"#),
      AuditEntry(seq: 3, time: 3, actor: "worker", event: "job.failed", subject: "x", payload: #"{"attempt":1,"detail":"oom","to":"failed"}"#),
      AuditEntry(seq: 4, time: 4, actor: "worker", event: "job.claimed", subject: "x", payload: #"{"attempt":2,"detail":"w-2","to":"running"}"#),
    ]
    let attempts = JobAttempt.from(entries)
    #expect(attempts.count == 2)
    #expect(attempts[0].outcome == "failed" && attempts[0].error == "oom" && attempts[0].worker == "w-1")
    #expect(attempts[1].ended == nil && attempts[1].worker == "w-2")
    let trail = AuditTrail(
      items: [
        AuditTrail.Item(entry: entries[0], status: .verified), AuditTrail.Item(entry: entries[1], status: .verified),
        AuditTrail.Item(entry: entries[2], status: .pending), AuditTrail.Item(entry: entries[3], status: .pending),
      ], checkpointSize: 2, checkpointTime: 5, checkpointValid: true, problem: nil, truncated: false)
    let running = JobDetailPage(
      job: job(.running, attempts: 2), waitingFor: nil, attempts: attempts, outputAttempt: 2, output: "step 1 <done>\n", trail: trail
    ).html(viewer: operatorViewer)
    #expect(running.contains("data-trail=\"verified\""))
    #expect(running.contains("2 newer entries await the next checkpoint"))
    #expect(running.contains("data-follow=\"/console/jobs/"))
    #expect(running.contains("step 1 &lt;done&gt;"))
    #expect(running.contains("train&lt;script&gt;") && !running.contains("train<script>"))
    #expect(running.contains("&lt;b&gt;big&lt;/b&gt;"))
    #expect(running.contains("oom &amp; more"))
    #expect(running.contains("spark-1") && running.contains("GPU 1"))
    #expect(running.contains("Cancel job") && !running.contains("Retry job"))
    let failedTrail = AuditTrail(
      items: [AuditTrail.Item(entry: entries[0], status: .failed)], checkpointSize: 4, checkpointTime: 5, checkpointValid: true,
      problem: "1 of this job's entries do not lead to the signed root", truncated: true)
    let dead = JobDetailPage(
      job: job(.dead), waitingFor: WaitingFor(.queuePaused, "queue gpu is paused"), attempts: [], outputAttempt: nil, output: nil,
      trail: failedTrail
    ).html(viewer: viewer)
    #expect(dead.contains("data-trail=\"failed\""))
    #expect(dead.contains("Only the first 1 entries are shown"))
    #expect(dead.contains("This store keeps no job output"))
    #expect(dead.contains("Not claimed yet"))
    #expect(!dead.contains("Retry job"))
    let unsigned = JobDetailPage(
      job: job(.available), waitingFor: WaitingFor(.queuePaused, "paused"), attempts: [], outputAttempt: nil, output: "", trail: nil
    ).html(viewer: viewer)
    #expect(unsigned.contains("data-waiting=\"queue_paused\""))
    #expect(unsigned.contains("No audit log"))
  }

  @Test func overviewQueuesWorkersAndAlerts() throws {
    let queues = [
      QueueSummary(name: "gpu", controls: QueueControls(paused: true, maxRunning: 2), counts: [.running: 2, .available: 5, .dead: 1]),
      QueueSummary(name: "cpu", controls: QueueControls(), counts: [.succeeded: 10]),
    ]
    var alert = AlertInstance(
      fingerprint: "f", rule: "Hot", labels: [:], severity: "critical", kpi: "oven", value: 120, threshold: 90, unit: "C",
      summary: "Oven at 120", description: "", runbook: "https://runbooks.example/oven", activeSince: 0, lastTrueAt: 0)
    alert.id = 7
    alert.state = .firing
    alert.firedAt = now.millisecondsSince1970 - 3_600_000
    let overview = OverviewPage(
      queues: queues, workersLive: 2, workersLapsed: 1, gpus: 8, gpusInUse: 3, firing: [alert],
      audit: AuditStatus(entries: 100, checkpointSize: 90, checkpointTime: 1, verified: false, problem: "changed"),
      completedPerMinute: Array(repeating: 2, count: 60), failedPerMinute: Array(repeating: 1, count: 60), now: now)
    #expect(overview.figures["total.running"] == "2")
    #expect(overview.figures["q.gpu.available"] == "5")
    #expect(overview.figures["throughput.hour"] == "120")
    #expect(overview.figures["gpus.in_use"] == "3 of 8")
    let page = overview.html(viewer: viewer)
    #expect(page.contains("data-audit=\"unverified\""))
    #expect(page.contains("Oven at 120"))
    #expect(page.contains("120 jobs finished and 60 failed"))
    let queuesPage = QueuesPage(queues: queues, notice: "Queue gpu paused.").html(viewer: operatorViewer)
    #expect(queuesPage.contains("Resume gpu") && queuesPage.contains("Pause cpu"))
    #expect(queuesPage.contains("2 / 2 <span class=\"warn\">(at limit)</span>"))
    #expect(!QueuesPage(queues: queues).html(viewer: viewer).contains("Resume gpu"))

    let capacity = HostCapacity(
      host: "spark-1",
      gpus: [
        HostCapacity.GPU(index: 0, uuid: "a", model: "H100", memory_mib: 81559),
        HostCapacity.GPU(index: 1, uuid: "b", model: "H100", memory_mib: 81559),
      ],
      cpus: 16, memory_mib: 65536, labels: ["zone": "b"])
    var free = capacity
    free.gpus = [capacity.gpus[1]]
    let workers = WorkersPage(
      workers: [
        WorkerPresence(
          worker: "w-1", queues: [], kinds: [], expiresAt: now.addingTimeInterval(30), lastSeen: now, capacity: capacity, free: free,
          running: ["job-1"]),
        WorkerPresence(
          worker: "w-0", queues: ["gpu"], kinds: ["train.*"], expiresAt: now.addingTimeInterval(-30), lastSeen: now.addingTimeInterval(-600)),
      ], now: now
    ).html(viewer: viewer)
    #expect(workers.contains("data-gpus-in-use=\"1\""))
    #expect(workers.contains("zone=b"))
    #expect(workers.contains("10 min ago"))
    #expect(workers.contains("s-lapsed"))

    let alerts = AlertsPage(alerts: [alert], settings: AlertSettings(), configured: true, now: now).html(viewer: operatorViewer)
    #expect(alerts.contains("/console/alerts/7/ack"))
    #expect(alerts.contains("SLA breached"))
    #expect(alerts.contains("https://runbooks.example/oven"))
    #expect(!AlertsPage(alerts: [alert], settings: AlertSettings(), configured: false, now: now).html(viewer: viewer).contains("/ack"))
  }

  @Test func jobFiltersAreReadStrictly() throws {
    let query = try JobsQuery(fields: [
      ("state", "dead"), ("queue", "gpu"), ("kind", "train"), ("key", "t"), ("worker", "w"), ("from", "2026-12-01T10:00"),
      ("until", "2026-12-02T00:00:00.000Z"), ("q", "order-7"), ("limit", "20"),
    ])
    #expect(query.filter.state == .dead && query.filter.idempotencyKey == "order-7" && query.filter.limit == 20)
    #expect(query.filter.createdAfter == Date(millisecondsSince1970: AuditTime.parse("2026-12-01T10:00:00.000Z")!))
    #expect(query.jobID == nil)
    #expect(query.queryString.contains("state=dead") && query.description.contains("kind=train"))
    #expect(!query.isEmpty && JobsQuery().isEmpty)
    for (field, value) in [("state", "lost"), ("from", "yesterday"), ("limit", "0"), ("cursor", "x'--"), ("colour", "red")] {
      #expect(throws: NovaError.self, "\(field)=\(value)") { _ = try JobsQuery(fields: [(field, value)]) }
    }
    let id = JobID.generate()
    #expect(try JobsQuery(fields: [("q", id.rawValue)]).jobID == id)
    let page = JobsPage(query: query, jobs: [job(.dead)], nextCursor: "next-1").html(viewer: operatorViewer)
    #expect(page.contains("value=\"retry-all\"") && page.contains("rel=\"next\""))
    #expect(!JobsPage(query: query, jobs: [], nextCursor: nil).html(viewer: viewer).contains("id=\"bulk\""))
    let confirmation = BulkConfirmationPage(action: .delete, query: query, selected: nil, count: 3, capped: true).html(viewer: operatorViewer)
    #expect(confirmation.contains("3 or more jobs"))
    #expect(ConsoleHTML.pretty(Data("not json".utf8)) == "not json")
    #expect(ConsoleHTML.ago(now.addingTimeInterval(10), now: now) == "in 10 s")
    #expect(ConsoleHTML.ago(now.addingTimeInterval(-8000), now: now) == "2 h ago")
  }
}
