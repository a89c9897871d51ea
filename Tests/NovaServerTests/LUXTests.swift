import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import NovaAlerting
import NovaCore
import NovaDashboards
import NovaDatabase
import NovaMonitoring
import NovaPolicy
import NovaQueue
import NovaSecurity
import NovaServer
import NovaTestSupport
import Testing

#if canImport(FoundationNetworking)
  import FoundationNetworking
#endif

/// The figures a LUX page shows: `data-figure` name → `data-value`.
func luxFigures(_ html: String) -> [String: String] {
  var figures: [String: String] = [:]
  let pattern = try! NSRegularExpression(pattern: #"data-figure="([^"]+)" data-value="([^"]*)""#)
  for match in pattern.matches(in: html, range: NSRange(html.startIndex..., in: html)) {
    let name = String(html[Range(match.range(at: 1), in: html)!])
    let value = String(html[Range(match.range(at: 2), in: html)!]).replacingOccurrences(of: "&quot;", with: "\"")
      .replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">").replacingOccurrences(of: "&amp;", with: "&")
    figures[name] = value
  }
  return figures
}

/// What each figure must be, from the `/v1/compliance` JSON.
func expectedFigures(_ data: Data) throws -> [String: String] {
  let report = try JSONDecoder().decode(ComplianceReport.self, from: data)
  func text(_ value: Double?) -> String { value.map { String($0) } ?? "null" }
  var figures: [String: String] = [
    "audit.coverage": String(report.audit.coverage), "audit.entries": String(report.audit.entries),
    "audit.unaudited_jobs": String(report.audit.unaudited_jobs), "audit.checkpoint.size": String(report.audit.checkpoint?.size ?? 0),
    "policy.version": report.policy.version, "policy.drifted": report.policy.drifted.map { String($0) } ?? "unknown",
    "decisions.allowed": String(report.decisions.allowed), "decisions.denied": String(report.decisions.denied),
    "alerts.firing": String(report.alerts.firing), "alerts.fired": String(report.alerts.fired), "alerts.escalated": String(report.alerts.escalated),
    "alerts.acknowledge_compliance": text(report.alerts.acknowledge_compliance), "alerts.resolve_compliance": text(report.alerts.resolve_compliance),
    "baseline.breached": report.baseline.map { String($0.breached) } ?? "none",
  ]
  for row in report.decisions.by_source {
    figures["decisions.\(row.source).allowed"] = String(row.allowed)
    figures["decisions.\(row.source).denied"] = String(row.denied)
  }
  for delta in report.baseline?.deltas ?? [] { figures["baseline.\(delta.measure)"] = String(delta.delta_percent) }
  return figures
}

@Suite("LUX compliance page", .timeLimit(.minutes(5)))
struct LUXTests {
  /// Issue #13 point 2: a checkpoint whose signature verifies but whose root the entries no
  /// longer give (an entry and its stored hash rewritten) is not reported as valid.
  @Test(.enabled(if: TestServers.standardToolsAvailable, TestServers.standardToolsMissing)) func aRewrittenLogIsNotReportedValid()
    async throws
  {
    let directory = try TemporaryDirectory.make()
    let path = directory.appendingPathComponent("nova.sqlite").path
    let queue = try SQLiteJobQueue(configuration: .init(path: path, journal: AuditJournal()))
    let security = try SecurityContext(database: queue.database, keyPath: directory.appendingPathComponent("key").path)
    let viewer = try await security.tokens.create(name: "dash", role: .viewer).token
    for _ in 0..<3 { _ = try await queue.enqueue(JobRequest(kind: "echo")) }
    _ = try await security.audit.checkpoint(signer: security.signer, origin: security.origin)
    let server = try NovaServer(
      configuration: NovaServer.Configuration(workers: 0), queue: queue, security: security, policy: PolicyEngine(document: .builtIn),
      logger: Logger(label: "test"))
    TestMetrics.bootstrap()
    let app = Application(router: server.makeRouter())
    func signatureValid() async throws -> Bool? {
      try await app.test(.router) { client in
        try await client.execute(uri: "/v1/compliance", method: .get, headers: [.authorization: "Bearer \(viewer)"]) { response in
          let report = try json(response.body)
          return ((report["audit"] as? [String: Any])?["checkpoint"] as? [String: Any])?["signature_valid"] as? Bool
        }
      }
    }
    #expect(try await signatureValid() == true)
    var forged = try #require(try await security.audit.entries(from: 2, through: 2).first)
    forged.actor = "someone-else"
    let hash = forged.leafHash.map { String(format: "%02x", $0) }.joined()
    let tampered = try await shell(
      "sqlite3 '\(path)' \"DROP TRIGGER nova_audit_no_update; UPDATE nova_audit SET actor = 'someone-else', hash = x'\(hash)' WHERE seq = 2\"")
    #expect(tampered.code == 0, "\(tampered.output)")
    // Requests verify incrementally from the last verified checkpoint; the verifier's periodic
    // full pass (forced here) hashes the whole log again and finds the rewrite.
    await server.checkpointVerifier?.forgetVerified()
    #expect(try await signatureValid() == false)
  }

  @Test func thePageShowsTheComplianceFiguresToViewersAndEvidenceNeedsAdmin() async throws {
    let directory = try TemporaryDirectory.make()
    let queue = try SQLiteJobQueue(configuration: .init(path: directory.appendingPathComponent("nova.sqlite").path, journal: AuditJournal()))
    let security = try SecurityContext(database: queue.database, keyPath: directory.appendingPathComponent("key").path)
    let admin = try await security.tokens.create(name: "root", role: .admin).token
    let viewer = try await security.tokens.create(name: "dash", role: .viewer).token
    for _ in 0..<3 { _ = try await queue.enqueue(JobRequest(kind: "echo")) }
    _ = try await security.audit.checkpoint(signer: security.signer, origin: security.origin)
    let kpis = try KPIStore(database: queue.database)
    let now = Date().millisecondsSince1970
    try await kpis.record([
      KPISample(name: "audit.coverage", value: 1, time: now - 60_000, source: "t"),
      KPISample(name: "audit.coverage", value: 1, time: now - 1000, source: "t"),
      // Dated ahead (within the clock skew allowed): not yet a figure (issue #13 point 5).
      KPISample(name: "audit.coverage", value: 0.25, time: now + 120_000, source: "skewed"),
      KPISample(
        name: "baseline.delta", labels: ["baseline": "b", "measure": "gpu0.utilization", "threshold_percent": "5"], value: -9, time: now - 500,
        source: "t"),
      KPISample(name: "baseline.breach", labels: ["baseline": "b", "measure": "gpu0.utilization"], value: -9, time: now - 500, source: "t"),
    ])
    var logger = Logger(label: "test")
    logger.logLevel = .warning
    var configuration = NovaServer.Configuration(workers: 0)
    configuration.policyBaseline = PolicyBaseline(policyVersion: "0000000000000000", opaRevision: nil)
    TestMetrics.bootstrap()
    let server = try NovaServer(
      configuration: configuration, queue: queue, security: security, policy: PolicyEngine(document: .builtIn), logger: logger)
    let app = Application(router: server.makeRouter())
    try await app.test(.router) { client in
      // A browser without a token is sent to the console's sign-in; API clients get 401.
      try await client.execute(uri: "/lux", method: .get) { #expect($0.headers[.location] == "/login?next=/lux") }
      try await client.execute(uri: "/v1/compliance", method: .get) { #expect($0.status == .unauthorized) }
      var report: [String: Any] = [:]
      var reportData = Data()
      try await client.execute(uri: "/v1/compliance", method: .get, headers: [.authorization: "Bearer \(viewer)"]) { response in
        #expect(response.status == .ok)
        report = try json(response.body)
        reportData = Data(response.body.readableBytesView)
      }
      #expect((report["audit"] as? [String: Any])?["coverage"] as? Double == 1)
      let trend = ((report["audit"] as? [String: Any])?["coverage_trend"] as? [[String: Any]] ?? []).compactMap { $0["value"] as? Double }
      #expect(trend == [1, 1], "\(trend)")
      #expect((report["policy"] as? [String: Any])?["drifted"] as? Bool == true)
      #expect((report["baseline"] as? [String: Any])?["breached"] as? Bool == true)
      try await client.execute(uri: "/lux", method: .get, headers: [.authorization: "Bearer \(viewer)"]) { response in
        #expect(response.status == .ok)
        #expect(response.headers[.contentType] == "text/html; charset=utf-8")
        #expect(response.headers[.contentSecurityPolicy]?.contains("default-src 'none'") == true)
        let html = String(buffer: response.body)
        #expect(html.hasPrefix("<!doctype html>") && html.contains("<html lang=\"en\">") && html.contains("name=\"viewport\""))
        #expect(!html.contains("<script") && !html.contains("src=\"http"))
        let shown = luxFigures(html)
        // (This server's engine records no decisions, so the page's own request changes nothing.)
        let expected = try expectedFigures(reportData)
        for (name, value) in expected { #expect(shown[name] == value, "\(name): page \(shown[name] ?? "missing"), JSON \(value)") }
        #expect(shown["overall"] == "attention")  // the policy drifted from the (made-up) approved version
        #expect(html.contains("Policy review") && html.contains("INTEGRATION_SECURITY_REVIEWS.md"))
      }
      try await client.execute(uri: "/v1/evidence", method: .get, headers: [.authorization: "Bearer \(viewer)"]) { #expect($0.status == .forbidden) }
      try await client.execute(uri: "/v1/evidence?since=soon", method: .get, headers: [.authorization: "Bearer \(admin)"]) {
        #expect($0.status == .unprocessableContent)
      }
      try await client.execute(uri: "/v1/evidence?since=1h", method: .get, headers: [.authorization: "Bearer \(admin)"]) { response in
        #expect(response.status == .ok && response.headers[.contentType] == "application/gzip")
        #expect(Array(response.body.readableBytesView.prefix(2)) == [0x1f, 0x8b])
      }
    }
  }

  @Test func textIsEscapedAndMissingDataIsSaidPlainly() {
    let report = ComplianceReport(
      generated_at: "now",
      audit: .init(
        coverage: 0.5, audited_transitions: 1, jobs: 2, unaudited_jobs: 1, coverage_trend: [], entries: 3, checkpoint: nil,
        entries_since_checkpoint: 3),
      policy: .init(
        version: "<v>", source: "a & b", enforce: false, active_since: "t", opa_revision: nil, approved_version: nil, approved_opa_revision: nil,
        drifted: nil, differences: []),
      decisions: .init(window_hours: 24, by_source: []),
      alerts: .init(
        window_days: 30, firing: 0, fired: 0, acknowledge_within_s: 300, resolve_within_s: 1800, acknowledged_within_sla: 0, resolved_within_sla: 0,
        escalated: 0, acknowledge_compliance: nil, resolve_compliance: nil),
      baseline: nil, links: .init(evidence: "/v1/evidence", review_schedule: "https://x/\"y\"", dashboard: "https://grafana/d"))
    let html = LUXPage.html(report)
    #expect(html.contains("&lt;v&gt;") && html.contains("a &amp; b") && !html.contains("<v>"))
    #expect(html.contains("No signed checkpoint yet") && html.contains("Not enough samples for a trend") && html.contains("No comparison yet"))
    #expect(html.contains("shadow mode") && html.contains("https://grafana/d") && html.contains("&quot;y&quot;"))
    #expect(luxFigures(html)["overall"] == "attention" && luxFigures(html)["audit.coverage"] == "0.5")
  }
}

/// `/lux` in a real browser: headless Chromium loads the page from `nova serve`, its figures are
/// compared with `/v1/compliance`, and a screenshot is saved.
@Suite("LUX in a browser", .serialized, .enabled(if: TestServers.chromiumAvailable, TestServers.chromiumMissing), .timeLimit(.minutes(5)))
struct LUXBrowserTests {
  static var chromium: String? {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"].first { FileManager.default.isExecutableFile(atPath: $0) }
  }

  @Test func headlessChromiumShowsTheFiguresOfV1Compliance() async throws {
    let chromium = try #require(Self.chromium, "Chromium is not installed (Debian: apt-get install chromium); scripts/test.sh installs it")
    let dir = try TemporaryDirectory.make().path
    for command in [
      ["enqueue", "echo", "--count", "5"], ["kpi", "record", "audit.coverage", "1"],
      [
        "kpi", "record", "baseline.delta", "2.5", "--label", "measure=network.throughput", "--label", "threshold_percent=7", "--label",
        "baseline=spark",
      ],
    ] {
      let result = try await NovaProcess.run(command + ["--data-dir", dir])
      #expect(result.code == 0, "\(command): \(result.stderr)")
    }
    let server = try NovaProcess(["serve", "--port", "0", "--workers", "1", "--data-dir", dir, "--lux-open", "--checkpoint-seconds", "1"])
    defer { server.signal(SIGKILL) }
    let port = try await server.listeningPort()
    let base = "http://127.0.0.1:\(port)"
    func complianceData() async throws -> Data {
      try await URLSession.shared.data(from: URL(string: "\(base)/v1/compliance")!).0
    }
    func compliance() async throws -> [String: Any] {
      try #require(try JSONSerialization.jsonObject(with: try await complianceData()) as? [String: Any])
    }
    // Settled: jobs done and a checkpoint covering them.
    try await eventually("a checkpoint of the finished work") {
      let report = try await compliance()
      let audit = report["audit"] as? [String: Any]
      return (audit?["entries_since_checkpoint"] as? Int) == 0 && (audit?["audited_transitions"] as? Int ?? 0) >= 15
    }
    let before = try await complianceData()
    let shots = ProcessInfo.processInfo.environment["NOVA_SCREENSHOT_DIR"] ?? dir
    let screenshot = "\(shots)/lux-screenshot.png"
    let flags = "--headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run --user-data-dir='\(dir)/chromium'"
    let dom = try await shell(
      "timeout 90 '\(chromium)' \(flags) --virtual-time-budget=2000 --dump-dom '\(base)/lux' 2>/dev/null", timeout: .seconds(120))
    #expect(dom.code == 0, "chromium failed: \(dom.output.suffix(500))")
    let shot = try await shell(
      "timeout 90 '\(chromium)' \(flags) --window-size=1280,1800 --screenshot='\(screenshot)' '\(base)/lux' 2>&1", timeout: .seconds(120))
    #expect(shot.code == 0, "\(shot.output.suffix(500))")
    let after = try await complianceData()
    let shown = luxFigures(dom.output)
    #expect(shown.count >= 15, "the page shows too few figures: \(dom.output.prefix(300))")
    let expectedBefore = try expectedFigures(before)
    let expectedAfter = try expectedFigures(after)
    for (name, value) in expectedBefore {
      #expect(shown[name] == value || shown[name] == expectedAfter[name], "\(name): page \(shown[name] ?? "missing"), /v1/compliance \(value)")
    }
    #expect(shown["audit.coverage"] == "1.0" && shown["baseline.network.throughput"] == "2.5", "\(shown)")
    let png = try Data(contentsOf: URL(fileURLWithPath: screenshot))
    #expect(png.starts(with: [0x89, 0x50, 0x4E, 0x47]) && png.count > 20_000, "screenshot of \(png.count) bytes")
    print("LUX screenshot: \(screenshot)")
  }
}
