import Foundation
import NovaAlerting
import NovaBenchmarks
import NovaCore
import NovaTestSupport
import Testing

/// `nova serve` with alerting, as a child process: pages, a restart while an alert fires, the
/// CLI's acknowledgement, SIGHUP reloads and a file that keeps the server from starting.
@Suite("nova serve alerting", .serialized, .timeLimit(.minutes(5)))
struct AlertProcessTests {
  static let routingKey = "abcdefabcdefabcdefabcdefabcdef12"

  func thresholds(pagerDuty: LocalHTTPReceiver, webhook: LocalHTTPReceiver) -> String {
    """
    settings: {evaluation_interval: 200ms}
    receivers:
      - {name: pd, type: pagerduty, url: "\(pagerDuty.url)/v2/enqueue", routing_key_env: TEST_PD_KEY}
      - {name: hook, type: webhook, url: "\(webhook.url)/hook", secret_env: TEST_HOOK_SECRET}
    routes: [{name: oncall, receivers: [pd, hook]}]
    rules:
      - {name: WaitHigh, kpi: queue.wait.p99, above: 1000, summary: "wait {{value}} ms"}
    """
  }

  func serve(_ dir: String) throws -> NovaProcess {
    try NovaProcess(
      ["serve", "--port", "0", "--workers", "0", "--data-dir", dir],
      environment: ["TEST_PD_KEY": Self.routingKey, "TEST_HOOK_SECRET": "s3cret"])
  }

  @Test func serveSendsOnePageAcrossARestartAndTheCLIAcknowledges() async throws {
    let dir = try TemporaryDirectory.make().path
    let pagerDuty = try await LocalHTTPReceiver()
    let webhook = try await LocalHTTPReceiver()
    webhook.setDefault(status: 200, body: "{}")
    try thresholds(pagerDuty: pagerDuty, webhook: webhook).write(toFile: "\(dir)/thresholds.yaml", atomically: true, encoding: .utf8)

    var server = try serve(dir)
    _ = try await server.listeningPort()
    #expect(server.stderr.contains("alerting: 1 rules"))
    #expect(try await NovaProcess.run(["kpi", "record", "queue.wait.p99", "5000", "--label", "queue=gpu", "--data-dir", dir]).code == 0)
    let pages = try await pagerDuty.waitForRequests(1, timeout: .seconds(20))
    #expect(pages[0].text.contains(Self.routingKey) && pages[0].text.contains(#""event_action":"trigger""#))
    let hooks = try await webhook.waitForRequests(1, timeout: .seconds(20))
    let now = Int64(Date().timeIntervalSince1970)
    #expect(StandardWebhook.verify(headers: hooks[0].headers, body: hooks[0].body, secret: "s3cret", now: now))

    // Restart while the alert fires: the new process knows it was paged.
    server.signal(SIGTERM)
    #expect(await server.waitForExit() == 0)
    server = try serve(dir)
    defer { server.signal(SIGKILL) }
    _ = try await server.listeningPort()
    #expect(try await NovaProcess.run(["kpi", "record", "queue.wait.p99", "6000", "--label", "queue=gpu", "--data-dir", dir]).code == 0)
    try await Task.sleep(for: .seconds(2))
    #expect(pagerDuty.requests.count == 1 && webhook.requests.count == 1)

    let list = try await NovaProcess.run(["alerts", "list", "--state", "firing", "--json", "--data-dir", dir])
    let alerts = try #require(try JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as? [[String: Any]])
    let id = try #require((alerts.first?["id"] as? NSNumber)?.int64Value)
    let ack = try await NovaProcess.run(["alerts", "ack", String(id), "--data-dir", dir])
    #expect(ack.code == 0 && ack.stdout.contains("acknowledged by cli:"), "\(ack.stderr)")
    // The server sends the acknowledgement the CLI stored.
    let acknowledged = try await pagerDuty.waitForRequests(2, timeout: .seconds(20))
    #expect(acknowledged[1].text.contains(#""event_action":"acknowledge""#))
    #expect(try await NovaProcess.run(["alerts", "ack", "999", "--data-dir", dir]).code != 0)

    // A bad file on SIGHUP keeps the good rules; the journal says so.
    try "rules: [".write(toFile: "\(dir)/thresholds.yaml", atomically: true, encoding: .utf8)
    server.signal(SIGHUP)
    try await eventually("the failed reload") { server.stderr.contains("alert rules not reloaded") }
    server.signal(SIGTERM)
    #expect(await server.waitForExit() == 0)
    let journal = try await NovaProcess.run(["journal", "show", "--data-dir", dir])
    for kind in ["alert.fired", "alert.acknowledged", "alerts.reload_failed"] {
      #expect(journal.stdout.contains(kind), "\(kind) in \(journal.stdout)")
    }
    // An invalid file, or a missing secret, keeps the server from starting, naming the problem.
    let refused = try await NovaProcess.run(["serve", "--port", "0", "--data-dir", dir])
    #expect(refused.code == 2 && refused.stderr.contains("thresholds.yaml:2:1: YAML syntax"), "\(refused.stderr)")
    try thresholds(pagerDuty: pagerDuty, webhook: webhook).write(toFile: "\(dir)/thresholds.yaml", atomically: true, encoding: .utf8)
    let noSecret = try await NovaProcess.run(["serve", "--port", "0", "--data-dir", dir])
    #expect(noSecret.code == 2 && noSecret.stderr.contains("TEST_PD_KEY"), "\(noSecret.stderr)")
    #expect(!noSecret.stderr.contains(Self.routingKey))
  }

  @Test func dryRunPrintsValidBodiesWithTheKeyRedactedAndJournalsThem() async throws {
    let dir = try TemporaryDirectory.make().path
    let pagerDuty = try await LocalHTTPReceiver()
    let webhook = try await LocalHTTPReceiver()
    try thresholds(pagerDuty: pagerDuty, webhook: webhook).write(toFile: "\(dir)/thresholds.yaml", atomically: true, encoding: .utf8)
    #expect(try await NovaProcess.run(["kpi", "record", "queue.wait.p99", "5000", "--data-dir", dir]).code == 0)
    let dryRun = try await NovaProcess.run(["alerts", "evaluate", "--dry-run", "--data-dir", dir])
    #expect(dryRun.code == 0, "\(dryRun.stderr)")
    let lines = dryRun.stdout.split(separator: "\n")
    #expect(lines.count == 2)
    let page = try #require(try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any])
    #expect(page["routing_key"] as? String == "<redacted>" && page["event_action"] as? String == "trigger")
    #expect(!dryRun.stdout.contains(Self.routingKey) && dryRun.stderr.contains("nothing sent"))
    #expect(pagerDuty.requests.isEmpty && webhook.requests.isEmpty)
    let journal = try await NovaProcess.run(["journal", "show", "--kind", "alerts.dry_run", "--json", "--data-dir", dir])
    let entries = try #require(try JSONSerialization.jsonObject(with: Data(journal.stdout.utf8)) as? [[String: Any]])
    #expect(entries.count == 1)
    let validate = try await NovaProcess.run(["alerts", "validate", "\(dir)/thresholds.yaml"])
    #expect(validate.code == 0 && validate.stdout.contains("1 rules"))
  }
}
