import Foundation
import Logging
import NovaAlerting
import NovaBenchmarks
import NovaCore
import NovaMonitoring
import NovaQueue
import NovaSecurity
import NovaTestSupport
import Testing

@Suite("Alertmanager integration", .enabled(if: TestServers.alertmanagerAvailable, TestServers.alertmanagerMissing), .timeLimit(.minutes(5)))
struct AlertmanagerIntegrationTests {
  @Test func aRealAlertmanagerRoutesNovasAlertsToItsWebhookAndHearsTheResolve() async throws {
    let hook = try await LocalHTTPReceiver()
    hook.setDefault(status: 200, body: "{}")
    let alertmanager = try AlertmanagerTestServer(webhookURL: "\(hook.url)/am")
    let fixture = try await AlertFixture()
    var configuration = try AlertingConfiguration.parse(
      """
      receivers: [{name: am, type: alertmanager, url: "\(alertmanager.url)"}]
      routes: [{name: teams, receivers: [am]}]
      rules:
        - name: NovaQueueWaitHigh
          kpi: queue.wait.p99
          above: 100
          severity: critical
          summary: "{{labels.queue}} p99 wait {{value}} ms"
          runbook: https://runbooks.example/wait
      """, file: "am.yaml")
    configuration.settings.externalURL = "http://nova.test:8080"
    // Alertmanager keeps wall-clock time: the alert's times must be now, not the fixture's clock.
    let engine = AlertEngine(configuration: configuration, store: fixture.store, kpis: fixture.kpis)
    let dispatcher = NotificationDispatcher(
      store: fixture.store, sender: NotificationSender(secrets: [:]), journal: fixture.journal, logger: Logger(label: "test"))
    let now = Date().millisecondsSince1970
    try await fixture.kpis.record([KPISample(name: "queue.wait.p99", labels: ["queue": "gpu"], value: 450, unit: "ms", time: now, source: "t")])
    try await engine.evaluate()
    #expect(try await dispatcher.deliverDue() == 1)

    let firing = try await hook.waitForRequests(1, timeout: .seconds(15))
    let notification = try #require(PayloadFormats.object(firing[0].text))
    // Alertmanager's own webhook body passes the checks Nova's webhook bodies are held to.
    #expect(PayloadFormats.webhookProblems(firing[0].text) == [])
    #expect(notification["status"] as? String == "firing" && notification["receiver"] as? String == "nova-test")
    let alert = try #require((notification["alerts"] as? [[String: Any]])?.first)
    #expect(alert["labels"] as? [String: String] == ["alertname": "NovaQueueWaitHigh", "queue": "gpu", "severity": "critical"])
    let annotations = alert["annotations"] as? [String: String]
    #expect(annotations?["summary"] == "gpu p99 wait 450 ms" && annotations?["runbook_url"] == "https://runbooks.example/wait")
    #expect((alert["generatorURL"] as? String)?.hasPrefix("http://nova.test:8080/v1/alerts/") == true)

    try await fixture.kpis.record([
      KPISample(name: "queue.wait.p99", labels: ["queue": "gpu"], value: 20, unit: "ms", time: Date().millisecondsSince1970, source: "t")
    ])
    try await engine.evaluate()
    #expect(try await dispatcher.deliverDue() == 1)
    let all = try await hook.waitForRequests(2, timeout: .seconds(15))
    let resolved = try #require(PayloadFormats.object(all[1].text))
    #expect(resolved["status"] as? String == "resolved")
    #expect(((resolved["alerts"] as? [[String: Any]])?.first?["fingerprint"] as? String) == alert["fingerprint"] as? String)
  }
}
