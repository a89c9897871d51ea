import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import NovaCore
import NovaDatabase
import NovaMonitoring
import NovaQueue
import NovaSecurity
import NovaServer
import NovaTestSupport
import Testing

@Suite("HTTP API with tokens", .timeLimit(.minutes(5)))
struct AuthHTTPTests {
  struct Setup {
    let server: NovaServer
    let queue: SQLiteJobQueue
    let security: SecurityContext
    let admin: String
  }

  func makeServer(metricsOpen: Bool = false) async throws -> Setup {
    let directory = try TemporaryDirectory.make()
    let queue = try SQLiteJobQueue(
      configuration: .init(path: directory.appendingPathComponent("nova.sqlite").path, journal: AuditJournal()))
    let security = try SecurityContext(database: queue.database, keyPath: directory.appendingPathComponent("key").path)
    let admin = try await security.tokens.create(name: "root", role: .admin).token
    var logger = Logger(label: "test")
    logger.logLevel = .warning
    TestMetrics.bootstrap()
    let server = try NovaServer(
      configuration: .init(workers: 0, metricsOpen: metricsOpen), queue: queue, security: security, logger: logger)
    return Setup(server: server, queue: queue, security: security, admin: admin)
  }

  @Test func tokensRolesAndAuditRoutes() async throws {
    let setup = try await makeServer()
    let app = Application(router: setup.server.makeRouter())
    try await app.test(.router) { client in
      try await client.execute(uri: "/healthz", method: .get) { #expect($0.status == .ok) }
      try await client.execute(uri: "/v1/jobs", method: .get) { response in
        #expect(response.status == .unauthorized)
        #expect(response.headers[.wwwAuthenticate] == #"Bearer realm="nova""#)
        let error = try json(response.body)["error"] as? [String: Any]
        #expect(error?["code"] as? String == "unauthorized")
      }
      try await client.execute(uri: "/metrics", method: .get) { #expect($0.status == .unauthorized) }

      var viewer = ""
      try await client.execute(
        uri: "/v1/tokens", method: .post, headers: bearer(setup.admin), body: ByteBuffer(string: #"{"name":"dash","role":"viewer"}"#)
      ) { response in
        #expect(response.status == .created)
        viewer = try json(response.body)["token"] as? String ?? ""
      }
      try await client.execute(
        uri: "/v1/tokens", method: .post, headers: bearer(setup.admin), body: ByteBuffer(string: #"{"name":"x","role":"root"}"#)
      ) { #expect($0.status == .unprocessableContent) }
      try await client.execute(
        uri: "/v1/tokens", method: .post, headers: bearer(setup.admin), body: ByteBuffer(string: "{")
      ) { #expect($0.status == .badRequest) }
      try await client.execute(uri: "/v1/tokens", method: .get, headers: bearer(setup.admin)) { response in
        let tokens = try json(response.body)["tokens"] as? [[String: Any]]
        #expect(tokens?.compactMap { $0["name"] as? String } == ["root", "dash"])
        #expect((tokens?.first?["created_at"] as? String)?.hasSuffix("Z") == true)
        #expect(String(buffer: response.body).contains("secret") == false)
      }
      try await client.execute(uri: "/v1/tokens", method: .get, headers: bearer(viewer)) { response in
        #expect(response.status == .forbidden)
        #expect(String(buffer: response.body).contains("needs admin"))
      }
      try await client.execute(
        uri: "/v1/jobs", method: .post, headers: bearer(viewer), body: ByteBuffer(string: #"{"kind":"echo"}"#)
      ) { #expect($0.status == .forbidden) }
      try await client.execute(
        uri: "/v1/jobs", method: .post, headers: bearer(setup.admin), body: ByteBuffer(string: #"{"kind":"echo"}"#)
      ) { #expect($0.status == .created) }
      try await client.execute(uri: "/metrics", method: .get, headers: bearer(viewer)) { #expect($0.status == .ok) }

      try await client.execute(uri: "/v1/audit/checkpoint", method: .get, headers: bearer(viewer)) { #expect($0.status == .notFound) }
      try await AuditCheckpointer(security: setup.security, jobs: setup.queue, logger: Logger(label: "test")).tick()
      try await client.execute(uri: "/v1/audit/checkpoint", method: .get, headers: bearer(viewer)) { response in
        #expect(response.status == .ok)
        let note = String(buffer: response.body)
        let checkpoint = try Checkpoint.verify(note: note, verifier: setup.security.signer.verifier)
        #expect(checkpoint.size > 0)
      }
      try await client.execute(uri: "/v1/audit/entries?from=1&limit=50", method: .get, headers: bearer(viewer)) { response in
        let entries = try json(response.body)["entries"] as? [[String: Any]] ?? []
        let events = entries.compactMap { $0["event"] as? String }
        #expect(events.first == "token.created" && events.filter { $0 == "token.created" }.count == 2)
        #expect(events.contains("auth.failed") && events.contains("auth.denied") && events.contains("job.enqueued"))
        let enqueued = entries.first { $0["event"] as? String == "job.enqueued" }
        #expect(enqueued?["actor"] as? String == "token:root")
        #expect((enqueued?["payload"] as? [String: Any])?["to"] as? String == "available")
      }
      try await client.execute(uri: "/v1/audit/entries?limit=0", method: .get, headers: bearer(viewer)) {
        #expect($0.status == .unprocessableContent)
      }
      try await client.execute(uri: "/v1/audit/entries?bogus=1", method: .get, headers: bearer(viewer)) {
        #expect($0.status == .unprocessableContent)
      }
      try await client.execute(uri: "/v1/audit/coverage", method: .get, headers: bearer(viewer)) { response in
        let coverage = try json(response.body)
        #expect(coverage["ratio"] as? Double == 1)
      }
      try await client.execute(uri: "/v1/tokens/dash", method: .delete, headers: bearer(setup.admin)) { #expect($0.status == .ok) }
      try await client.execute(uri: "/v1/tokens/nobody", method: .delete, headers: bearer(setup.admin)) { #expect($0.status == .notFound) }
      try await client.execute(uri: "/v1/jobs", method: .get, headers: bearer(viewer)) { response in
        #expect(response.status == .unauthorized)
        #expect(String(buffer: response.body).contains("revoked"))
      }
    }
  }

  @Test func metricsCanBeOpenAndRepeatedFailuresAreLimited() async throws {
    let setup = try await makeServer(metricsOpen: true)
    let app = Application(router: setup.server.makeRouter())
    try await app.test(.router) { client in
      try await client.execute(uri: "/metrics", method: .get) { #expect($0.status == .ok) }
      for _ in 0..<9 {
        try await client.execute(uri: "/v1/jobs", method: .get, headers: bearer("nova_bad_token")) { #expect($0.status == .unauthorized) }
      }
      try await client.execute(uri: "/v1/jobs", method: .get, headers: bearer("nova_bad_token")) { #expect($0.status == .unauthorized) }
      try await client.execute(uri: "/v1/jobs", method: .get, headers: bearer("nova_bad_token")) { response in
        #expect(response.status == .tooManyRequests)
        #expect(response.headers[.retryAfter] != nil)
      }
      // The valid token from the same address (a proxy's) still passes (issue #13 point 9).
      try await client.execute(uri: "/v1/jobs", method: .get, headers: bearer(setup.admin)) { #expect($0.status == .ok) }
    }
    // Eleven failures, one audit entry (the first; the rest are counted in the next minute's).
    let failed = try await setup.security.audit.entries(from: 1, through: 1000).filter { $0.event == "auth.failed" }
    #expect(failed.count == 1)
  }

  @Test func kpisAreRecordedByOperatorsAndReadByViewers() async throws {
    let setup = try await makeServer()
    let viewer = try await setup.security.tokens.create(name: "dash", role: .viewer).token
    let app = Application(router: setup.server.makeRouter())
    try await app.test(.router) { client in
      try await client.execute(
        uri: "/v1/kpis", method: .post, headers: bearer(setup.admin),
        body: ByteBuffer(
          string:
            #"{"samples":[{"name":"deploy.duration","value":42.5,"unit":"s","labels":{"service":"api"}},{"name":"deploy.duration","value":40}]}"#)
      ) { response in
        #expect(response.status == .created)
        #expect(String(buffer: response.body).contains(#""recorded":2"#))
      }
      try await client.execute(
        uri: "/v1/kpis", method: .post, headers: bearer(setup.admin),
        body: ByteBuffer(string: #"{"name":"one","value":1,"time":"2026-11-01T00:00:00Z"}"#)
      ) { #expect($0.status == .created) }
      try await client.execute(
        uri: "/v1/kpis", method: .post, headers: bearer(viewer), body: ByteBuffer(string: #"{"name":"x","value":1}"#)
      ) { #expect($0.status == .forbidden) }
      // Issue #13 point 5: a sample dated more than 5 minutes ahead is refused, naming it.
      let soon = AuditTime.string(Date().millisecondsSince1970 + 60_000)
      let later = AuditTime.string(Date().millisecondsSince1970 + 3_600_000)
      try await client.execute(
        uri: "/v1/kpis", method: .post, headers: bearer(setup.admin), body: ByteBuffer(string: #"{"name":"skewed","value":1,"time":"\#(soon)"}"#)
      ) { #expect($0.status == .created) }
      try await client.execute(
        uri: "/v1/kpis", method: .post, headers: bearer(setup.admin),
        body: ByteBuffer(string: #"{"samples":[{"name":"ok","value":1},{"name":"future","value":1,"time":"\#(later)"}]}"#)
      ) { response in
        #expect(response.status == .unprocessableContent)
        let text = String(buffer: response.body)
        #expect(text.contains("samples[1].time") && text.contains("\(later) is in the future"), "\(text)")
      }
      #expect(try await setup.server.kpis!.query(name: "future", since: 0).isEmpty)
      #expect(try await setup.server.kpis!.query(name: "ok", since: 0).isEmpty)
      try await client.execute(uri: "/v1/kpis", method: .post, headers: bearer(setup.admin), body: ByteBuffer(string: "{")) {
        #expect($0.status == .badRequest)
      }
      try await client.execute(
        uri: "/v1/kpis", method: .post, headers: bearer(setup.admin),
        body: ByteBuffer(string: #"{"samples":[{"name":"ok","value":1},{"name":"bad name","value":1}]}"#)
      ) { response in
        #expect(response.status == .unprocessableContent)
        #expect(String(buffer: response.body).contains("samples[1].name"))
      }
      try await client.execute(
        uri: "/v1/kpis", method: .post, headers: bearer(setup.admin), body: ByteBuffer(string: #"{"name":"ok","value":1,"time":"soon"}"#)
      ) { #expect($0.status == .unprocessableContent) }
      try await client.execute(uri: "/v1/kpis?name=deploy.duration&since=1h&label=service=api", method: .get, headers: bearer(viewer)) { response in
        #expect(response.status == .ok)
        let body = try json(response.body)
        let samples = body["samples"] as? [[String: Any]]
        #expect(samples?.count == 1 && samples?.first?["value"] as? Double == 42.5 && samples?.first?["source"] as? String == "token:root")
        #expect((body["summary"] as? [String: Any])?["count"] as? Int == 1)
      }
      try await client.execute(uri: "/v1/kpis?name=one&since=2026-10-31T00:00:00Z", method: .get, headers: bearer(viewer)) { response in
        let body = try json(response.body)
        #expect((body["samples"] as? [Any])?.count == 1)
      }
      for bad in ["/v1/kpis", "/v1/kpis?name=x&since=never", "/v1/kpis?name=x&limit=0", "/v1/kpis?name=x&bogus=1", "/v1/kpis?name=x&label=novalue"] {
        try await client.execute(uri: bad, method: .get, headers: bearer(viewer)) { #expect($0.status == .unprocessableContent, "\(bad)") }
      }
    }
  }

  @Test func kpiMaintenancePurgesAndWritesTheDailySummary() async throws {
    let setup = try await makeServer()
    let store = try KPIStore(database: setup.security.database, clock: TestClock(Date(timeIntervalSince1970: 1_800_000_000)))
    let now: Int64 = 1_800_000_000_000
    try await store.record([
      KPISample(name: "old", value: 1, time: now - 40 * 86_400_000, source: "t"),
      KPISample(name: "fresh", value: 2, time: now - 1000, source: "t"),
    ])
    let directory = try TemporaryDirectory.make()
    let maintenance = KPIMaintenance(store: store, dataDirectory: directory.path, retention: .seconds(30 * 86_400), logger: Logger(label: "test"))
    try await maintenance.tick(now: KPIStore.dayStart(now) + 60_000)
    #expect(try await store.query(name: "old", since: 0).isEmpty)
    let files = try FileManager.default.contentsOfDirectory(atPath: directory.appendingPathComponent("kpi").path).sorted()
    #expect(files == ["summary-2027-01-14.json", "summary-2027-01-15.json"])
  }

  @Test func activityCollectorTurnsTheLogIntoRateWaitAndPolicyKPIs() async throws {
    let setup = try await makeServer(metricsOpen: true)
    let queue = setup.queue
    let store = try KPIStore(database: queue.database)
    let collector = ActivityCollector(audit: setup.security.audit, kpis: store, logger: Logger(label: "test"))
    _ = try await queue.enqueue(JobRequest(kind: "echo", queue: "before"))
    #expect(try await collector.tick().isEmpty)  // the first tick only starts the count
    for _ in 0..<4 { _ = try await queue.enqueue(JobRequest(kind: "echo", queue: "work", maxAttempts: 1)) }
    let leases = try await queue.claim(queues: ["work"], worker: "w", leaseDuration: .seconds(30), limit: 4)
    try await queue.complete(leases[0], result: nil)
    _ = try await queue.fail(leases[1], error: "x", retryable: false)
    let samples = try await collector.tick()
    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
      samples.first { $0.name == name && $0.labels == labels }?.value
    }
    #expect(value("queue.enqueue_rate", ["queue": "work"]).map { $0 > 0 } == true)
    #expect(value("queue.enqueue_rate", ["queue": "before"]) == nil)  // counted before the start
    #expect(value("queue.failure_ratio", ["queue": "work"]) == 0.5)
    #expect(value("queue.wait.p99", ["queue": "work"]).map { $0 >= 0 } == true)
    #expect(value("policy.opa_error_rate") == 0)
    #expect(try await store.query(name: "queue.dead_letter_rate", since: 0, labels: ["queue": "work"]).count == 1)
    // Deployments and baseline comparisons recorded by other processes become gauges.
    let now = Date().millisecondsSince1970
    try await store.deploymentStarted(service: "api", version: "1", at: now - 90_000, source: "t")
    _ = try await store.deploymentFinished(service: "api", version: "1", at: now - 30_000, source: "t")
    try await store.record([
      KPISample(
        name: "baseline.delta", labels: ["measure": "cpu.sort.single", "threshold_percent": "10"], value: -3, time: now - 20_000, source: "t"),
      KPISample(
        name: "baseline.delta", labels: ["measure": "cpu.sort.single", "threshold_percent": "10"], value: -12.5, time: now - 10_000, source: "t"),
    ])
    // An idle interval records zero rates for the queues seen, not nothing.
    let idle = try await collector.tick()
    #expect(idle.first { $0.name == "queue.completion_rate" && $0.labels["queue"] == "work" }?.value == 0)
    let metrics = String(decoding: NovaMetrics.render(), as: UTF8.self)
    #expect(metrics.contains(#"nova_queue_event_rate{queue="work",event="completed"}"#))
    #expect(metrics.contains("# HELP nova_queue_wait_quantile_seconds Wait from available"))
    #expect(metrics.contains(#"nova_deployment_duration_seconds{service="api"} 60"#))
    #expect(metrics.contains(#"nova_baseline_delta_percent{measure="cpu.sort.single"} -12.5"#))
    #expect(metrics.contains(#"nova_baseline_threshold_percent{measure="cpu.sort.single"} 10"#))

    let activity = AuditActivity(through: 0)
    var withDecisions = activity
    withDecisions.decisions = [.init(source: "cache", allowed: true): 3, .init(source: "fallback", allowed: false): 1]
    let policy = ActivityCollector.samples(withDecisions, queues: [], seconds: 2, time: 0)
    #expect(policy.first { $0.name == "policy.cache_hit_ratio" }?.value == 0.75)
    #expect(policy.first { $0.name == "policy.opa_error_rate" }?.value == 0.5)
    #expect(policy.first { $0.name == "policy.decision_rate" && $0.labels == ["source": "cache", "result": "allow"] }?.value == 1.5)
  }

  @Test func writesToUnknownRoutesNeedAdmin() {
    #expect(AuthMiddleware.action(method: .post, path: "/v1/jobs") == .submit)
    #expect(AuthMiddleware.action(method: .post, path: "/v1/jobs/x/cancel") == .cancel)
    #expect(AuthMiddleware.action(method: .post, path: "/v1/jobs/x/retry") == .retry)
    #expect(AuthMiddleware.action(method: .get, path: "/v1/tokens") == .manageTokens)
    #expect(AuthMiddleware.action(method: .get, path: "/v1/jobs") == .read)
    #expect(AuthMiddleware.action(method: .delete, path: "/v1/tokens/x") == .manageTokens)
    #expect(AuthMiddleware.action(method: .post, path: "/v1/something-new") == .manageTokens)
  }
}
