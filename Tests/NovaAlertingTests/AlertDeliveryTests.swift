import Foundation
import Logging
import NovaAlerting
import NovaBenchmarks
import NovaCore
import NovaDatabase
import NovaMonitoring
import NovaQueue
import NovaSecurity
import NovaTestSupport
import Testing

/// A Nova database with KPI, journal and alert stores, a manual clock, and receivers on loopback.
struct AlertFixture {
  static let routingKey = "0123456789abcdef0123456789abcdef"
  static let webhookSecret = "hook-secret"

  let directory: URL
  let clock = TestClock(Date(timeIntervalSince1970: 1_800_000_000))
  let queue: SQLiteJobQueue
  let kpis: KPIStore
  let journal: OrchestrationJournal
  let store: AlertStore
  let pagerDuty: LocalHTTPReceiver
  let webhook: LocalHTTPReceiver
  let configuration: AlertingConfiguration

  init(extraYAML: String = "", forDuration: String = "0s") async throws {
    directory = try TemporaryDirectory.make("nova-alerts")
    queue = try SQLiteJobQueue(
      configuration: .init(path: directory.appendingPathComponent("nova.sqlite").path, clock: clock, journal: AuditJournal()))
    kpis = try KPIStore(database: queue.database, clock: clock)
    journal = try OrchestrationJournal(database: queue.database)
    store = try AlertStore(database: queue.database)
    pagerDuty = try await LocalHTTPReceiver()
    webhook = try await LocalHTTPReceiver()
    webhook.setDefault(status: 200, body: "{}")
    configuration = try AlertingConfiguration.parse(
      """
      settings: {external_url: "http://nova.test:8080"}
      sla: {acknowledge_within: 5m, resolve_within: 30m}
      receivers:
        - {name: pd, type: pagerduty, url: "\(pagerDuty.url)/v2/enqueue", routing_key_env: PD_KEY, component: queue}
        - {name: pd-secondary, type: pagerduty, url: "\(pagerDuty.url)/secondary", routing_key_env: PD_KEY}
        - {name: hook, type: webhook, url: "\(webhook.url)/hooks", secret_env: HOOK_SECRET}
      routes:
        - {name: oncall, receivers: [pd, hook], escalate_to: [pd-secondary], group_by: [alertname]}
      rules:
        - name: WaitHigh
          kpi: queue.wait.p99
          above: {warn: 100, critical: 1000}
          for: \(forDuration)
          summary: "{{labels.queue}} p99 wait {{value}} ms"
          runbook: https://runbooks.example/wait
      \(extraYAML)
      """, file: "test.yaml")
  }

  var environment: [String: String] { ["PD_KEY": Self.routingKey, "HOOK_SECRET": Self.webhookSecret] }

  func engine() -> AlertEngine { AlertEngine(configuration: configuration, store: store, kpis: kpis, clock: clock) }

  func dispatcher() throws -> NotificationDispatcher {
    NotificationDispatcher(
      store: store, sender: NotificationSender(secrets: try NotificationSender.secrets(for: configuration, environment: environment)),
      journal: journal, clock: clock, baseDelay: .seconds(1), logger: Logger(label: "test"))
  }

  func record(_ value: Double, queue name: String = "default") async throws {
    try await kpis.record([
      KPISample(name: "queue.wait.p99", labels: ["queue": name], value: value, unit: "ms", time: clock.now().millisecondsSince1970, source: "t")
    ])
  }
}

@Suite("Alert delivery", .timeLimit(.minutes(5)))
struct AlertDeliveryTests {
  /// Issue #13 point 5: a sample dated ahead of now (within the clock skew allowed) does not
  /// shadow the current one; it counts once its time comes. One further ahead is refused.
  @Test func aFutureSampleNeverShadowsTheCurrentOne() async throws {
    let fixture = try await AlertFixture()
    let engine = fixture.engine()
    let now = fixture.clock.now().millisecondsSince1970
    try await fixture.kpis.record([
      KPISample(name: "queue.wait.p99", labels: ["queue": "default"], value: 50, unit: "ms", time: now, source: "t"),
      KPISample(name: "queue.wait.p99", labels: ["queue": "default"], value: 5000, unit: "ms", time: now + 240_000, source: "skewed"),
    ])
    #expect(try await engine.evaluate().result.changed.isEmpty)
    fixture.clock.advance(by: 60)
    #expect(try await engine.evaluate().result.changed.isEmpty)
    fixture.clock.advance(by: 180)
    let due = try await engine.evaluate().result.changed
    #expect(due.count == 1 && due.first?.severity == "critical" && due.first?.value == 5000)
    await #expect {
      try await fixture.kpis.record([
        KPISample(name: "queue.wait.p99", value: 1, time: fixture.clock.now().millisecondsSince1970 + 301_000, source: "t")
      ])
    } throws: { "\($0)".contains("queue.wait.p99:") && "\($0)".contains("is in the future") }
  }

  @Test func aFiringAlertPagesPagerDutyAndTheWebhookOnceInTheirFormats() async throws {
    let fixture = try await AlertFixture()
    let engine = fixture.engine()
    let dispatcher = try fixture.dispatcher()
    try await fixture.record(250)
    let (result, requests) = try await engine.evaluate()
    #expect(result.changed.count == 1 && requests.map(\.receiver) == ["pd", "hook"])
    #expect(try await dispatcher.deliverDue() == 2)

    let page = try #require(fixture.pagerDuty.requests.first)
    #expect(page.path == "/v2/enqueue" && page.header("Content-Type") == "application/json")
    #expect(PayloadFormats.pagerDutyProblems(page.text, routingKey: AlertFixture.routingKey) == [])
    let body = try #require(PayloadFormats.object(page.text))
    let payload = try #require(body["payload"] as? [String: Any])
    #expect(body["event_action"] as? String == "trigger")
    #expect((body["dedup_key"] as? String)?.hasPrefix("nova/WaitHigh/") == true)
    #expect(payload["summary"] as? String == "default p99 wait 250 ms" && payload["severity"] as? String == "warning")
    #expect(payload["component"] as? String == "queue" && payload["group"] as? String == "default" && payload["class"] as? String == "WaitHigh")
    #expect(payload["timestamp"] as? String == "2027-01-15T08:00:00.000Z")
    #expect(
      (body["links"] as? [[String: String]])?.map { $0["href"] ?? "" } == ["http://nova.test:8080/v1/alerts/1", "https://runbooks.example/wait"])

    let hook = try #require(fixture.webhook.requests.first)
    #expect(PayloadFormats.webhookProblems(hook.text) == [])
    let now = Int64(Date().timeIntervalSince1970)
    #expect(StandardWebhook.verify(headers: hook.headers, body: hook.body, secret: AlertFixture.webhookSecret, now: now))
    // Issue #13 point 8: the signature carries its time; an old one, or another body, fails.
    #expect(hook.header("webhook-signature")?.hasPrefix("v1,") == true && hook.header("webhook-timestamp") != nil)
    #expect(!StandardWebhook.verify(headers: hook.headers, body: hook.body, secret: AlertFixture.webhookSecret, now: now + 600))
    #expect(!StandardWebhook.verify(headers: hook.headers, body: hook.body + [0x20], secret: AlertFixture.webhookSecret, now: now))
    let forged = hook.headers.map { $0.0.lowercased() == "webhook-signature" ? ($0.0, "v1,AAAA") : $0 }
    #expect(!StandardWebhook.verify(headers: forged, body: hook.body, secret: AlertFixture.webhookSecret, now: now))
    #expect(hook.header("X-Nova-Signature") == nil)
    let notification = try #require(PayloadFormats.object(hook.text))
    #expect(notification["status"] as? String == "firing" && notification["groupKey"] as? String == #"{}/{route="oncall"}:{alertname="WaitHigh"}"#)

    // Still firing: nothing more to send; cleared: one resolve each, matched by dedup key and fingerprint.
    try await fixture.record(300)
    #expect(try await engine.evaluate().requests.isEmpty)
    fixture.clock.advance(by: 5)
    try await fixture.record(20)
    #expect(try await engine.evaluate().requests.map(\.action) == [.resolve, .resolve])
    #expect(try await dispatcher.deliverDue() == 2)
    let resolve = try #require(PayloadFormats.object(fixture.pagerDuty.requests[1].text))
    #expect(resolve["event_action"] as? String == "resolve" && resolve["dedup_key"] as? String == body["dedup_key"] as? String)
    #expect(PayloadFormats.pagerDutyProblems(fixture.pagerDuty.requests[1].text) == [])
    let resolved = try #require(PayloadFormats.object(fixture.webhook.requests[1].text))
    #expect(resolved["status"] as? String == "resolved")
    #expect(PayloadFormats.webhookProblems(fixture.webhook.requests[1].text) == [])
    #expect(try await fixture.journal.entries(kinds: ["alert."]).map(\.kind) == ["alert.fired", "alert.resolved"])
  }

  /// Issue #13 point 10: a receiver URL with credentials comes from a variable or file; neither
  /// the outbox, the journal nor `nova alerts` output holds it; notifications never follow a
  /// redirect to another host.
  @Test func secretReceiverURLsStayHiddenAndRedirectsAreNotFollowed() async throws {
    let fixture = try await AlertFixture()
    let elsewhere = try await LocalHTTPReceiver()
    let hook = "http://hook-user:hook-pass@127.0.0.1:\(fixture.webhook.port)/hooks?token=tok3n"
    let configuration = try AlertingConfiguration.parse(
      """
      receivers:
        - {name: hidden, type: webhook, url_env: HOOK_URL}
        - {name: moved, type: webhook, url: "\(fixture.pagerDuty.url)/moved"}
      routes: [{name: r, receivers: [hidden, moved]}]
      rules: [{name: WaitHigh, kpi: queue.wait.p99, above: {warn: 100}}]
      """, file: "t.yaml")
    #expect(configuration.receiver(named: "hidden")?.url == "secret-url://hidden")
    let secrets = try NotificationSender.secrets(for: configuration, environment: ["HOOK_URL": hook])
    #expect(throws: NovaError.self) { _ = try NotificationSender.secrets(for: configuration, environment: ["HOOK_URL": "ftp://x"]) }
    fixture.pagerDuty.script([(302, "\(elsewhere.url)/stolen")])
    let engine = AlertEngine(configuration: configuration, store: fixture.store, kpis: fixture.kpis, clock: fixture.clock)
    let dispatcher = NotificationDispatcher(
      store: fixture.store, sender: NotificationSender(secrets: secrets), journal: fixture.journal, clock: fixture.clock, baseDelay: .seconds(1),
      logger: Logger(label: "test"))
    try await fixture.record(250)
    try await engine.evaluate()
    _ = try await dispatcher.deliverDue()
    let received = try #require(fixture.webhook.requests.first)
    #expect(received.path == "/hooks?token=tok3n")
    #expect(fixture.pagerDuty.requests.count == 1 && elsewhere.requests.isEmpty)
    let deliveries = try await fixture.store.deliveries()
    #expect(deliveries.first { $0.request.receiver == "moved" }?.lastError?.contains("HTTP 302") == true)
    let stored = deliveries.map(\.request.url).joined(separator: " ")
    let journaled = try await fixture.journal.entries().map { try CanonicalJSON.string($0.payload) }.joined(separator: " ")
    for text in [stored, journaled] {
      #expect(!text.contains("hook-pass") && !text.contains("tok3n") && !text.contains("hook-user"), "\(text)")
    }
    #expect(Redaction.url(hook) == "http://redacted@127.0.0.1:\(fixture.webhook.port)/hooks?redacted")
  }

  /// Issue #21: webhooks are signed the Standard Webhooks way: a receiver using the library
  /// (Python's `standardwebhooks`) accepts them, with a plain secret and with a `whsec_` one, and
  /// a retry is the same message (its `webhook-id`), so that the receiver can drop a repeat.
  @Test(.enabled(if: StandardWebhooksReference.available, StandardWebhooksReference.missing))
  func webhooksPassTheReferenceVerifierAndKeepTheirIdAcrossRetries() async throws {
    let fixture = try await AlertFixture()
    fixture.webhook.script([(503, "busy")])
    let engine = fixture.engine()
    let dispatcher = try fixture.dispatcher()
    try await fixture.record(250)
    try await engine.evaluate()
    #expect(try await dispatcher.deliverDue() == 1)  // PagerDuty; the webhook answered 503
    fixture.clock.advance(by: 2)
    #expect(try await dispatcher.deliverDue() == 1)
    let hooks = fixture.webhook.requests
    #expect(hooks.count == 2)
    let first = try #require(hooks.first)
    let retry = try #require(hooks.last)
    let id = try #require(first.header("webhook-id"))
    #expect(retry.header("webhook-id") == id && id.hasPrefix("nova-"))
    for hook in hooks {
      #expect(try StandardWebhooksReference.refusal(headers: hook.headers, body: hook.body, secret: AlertFixture.webhookSecret) == nil)
    }
    let tampered = try StandardWebhooksReference.refusal(
      headers: retry.headers, body: retry.body + [0x20], secret: AlertFixture.webhookSecret)
    #expect(tampered?.contains("No matching signature") == true, "\(tampered ?? "verified")")

    // A whsec_ secret is a base64 key, as the library takes it; one not base64 is refused at start.
    let secret = "whsec_" + Data((0..<24).map { UInt8($0 * 9) }).base64EncodedString()
    let sender = NotificationSender(
      secrets: try NotificationSender.secrets(for: fixture.configuration, environment: ["PD_KEY": "k", "HOOK_SECRET": secret]))
    let delivery = try #require(try await fixture.store.deliveries().first { $0.request.receiver == "hook" })
    #expect(await sender.send(delivery) == .sent(status: 200))
    let signed = try #require(fixture.webhook.requests.last)
    #expect(signed.header("webhook-id") == id)
    #expect(try StandardWebhooksReference.refusal(headers: signed.headers, body: signed.body, secret: secret) == nil)
    #expect(try StandardWebhooksReference.refusal(headers: signed.headers, body: signed.body, secret: AlertFixture.webhookSecret) != nil)
    #expect(throws: NovaError.self) {
      _ = try NotificationSender.secrets(for: fixture.configuration, environment: ["PD_KEY": "k", "HOOK_SECRET": "whsec_not base64!"])
    }
  }

  @Test func retriesOn429And5xxButNeverOn400() async throws {
    let fixture = try await AlertFixture()
    let engine = fixture.engine()
    let dispatcher = try fixture.dispatcher()
    fixture.pagerDuty.script([(429, ""), (500, #"{"status":"error","message":"boom"}"#), (202, #"{"status":"success"}"#)])
    try await fixture.record(250)
    try await engine.evaluate()
    #expect(try await dispatcher.deliverDue() == 1)  // the webhook; PagerDuty said 429
    fixture.clock.advance(by: 0.5)
    #expect(try await dispatcher.deliverDue() == 0)  // not due yet (1 s backoff)
    fixture.clock.advance(by: 1)
    #expect(try await dispatcher.deliverDue() == 0)  // 500
    fixture.clock.advance(by: 2)
    #expect(try await dispatcher.deliverDue() == 1)  // 202 on the third attempt
    #expect(fixture.pagerDuty.requests.count == 3)
    #expect(Set(fixture.pagerDuty.requests.map(\.text)).count == 1)  // the same event each time

    fixture.pagerDuty.script([(400, #"{"status":"invalid event","message":"Event object is invalid","errors":["x"]}"#)])
    fixture.clock.advance(by: 1)
    try await fixture.record(5000)  // critical: a new trigger
    try await engine.evaluate()
    _ = try await dispatcher.deliverDue()
    fixture.clock.advance(by: 600)
    _ = try await dispatcher.deliverDue()
    #expect(fixture.pagerDuty.requests.count == 4)  // the 400 was not retried
    let deliveries = try await fixture.store.deliveries()
    let failed = try #require(deliveries.first { $0.status == .failed })
    #expect(failed.attempts == 1 && failed.lastError?.contains("HTTP 400") == true)
    #expect(try await fixture.journal.entries(kinds: ["notification.failed"]).count == 1)
    #expect(try await fixture.store.pendingDeliveryCount() == 0)
  }

  @Test func acknowledgingTellsPagerDutyAndStopsEscalationWhileSilenceEscalates() async throws {
    let fixture = try await AlertFixture()
    let engine = fixture.engine()
    let dispatcher = try fixture.dispatcher()
    try await fixture.record(250, queue: "a")
    try await fixture.record(250, queue: "b")
    try await engine.evaluate()
    _ = try await dispatcher.deliverDue()
    let alerts = try await fixture.store.list(states: [.firing])
    #expect(alerts.count == 2)
    let acked = try #require(alerts.first { $0.labels["queue"] == "a" })
    fixture.clock.advance(by: 60)
    let after = try await engine.acknowledge(id: acked.id, by: "token:ops")
    #expect(after.acknowledgedAt != nil && after.acknowledgedBy == "token:ops")
    _ = try await dispatcher.deliverDue()
    let lastPage = try #require(fixture.pagerDuty.requests.last)
    let ack = try #require(PayloadFormats.object(lastPage.text))
    #expect(ack["event_action"] as? String == "acknowledge" && ack["dedup_key"] as? String == acked.dedupKey)
    #expect(try await fixture.kpis.query(name: "alert.time_to_acknowledge", since: 0).map(\.value) == [60])
    await #expect(throws: NovaError.self) { try await engine.acknowledge(id: 999, by: "token:ops") }

    // Past the 5-minute deadline: b escalates to the secondary receiver, once; a does not.
    fixture.clock.advance(by: 300)
    try await fixture.record(250, queue: "a")
    try await fixture.record(250, queue: "b")
    try await engine.evaluate()
    try await engine.evaluate()
    _ = try await dispatcher.deliverDue()
    let secondary = fixture.pagerDuty.requests.filter { $0.path == "/secondary" }
    #expect(secondary.count == 1)
    let firstEscalation = try #require(secondary.first)
    let escalated = try #require(PayloadFormats.object(firstEscalation.text))
    #expect(((escalated["payload"] as? [String: Any])?["custom_details"] as? [String: Any])?["escalated"] as? Bool == true)
    let escalatedID = try #require(alerts.first { $0.labels["queue"] == "b" }).id
    #expect(try await fixture.journal.entries(kinds: ["alert.escalated"]).map(\.subject) == [String(escalatedID)])
    #expect(try await fixture.kpis.query(name: "alert.sla_breach", since: 0).map { $0.labels["kind"] } == ["acknowledge"])

    // Resolved by hand: PagerDuty and the webhook hear it; the still-high series stays quiet.
    let b = try #require(alerts.first { $0.labels["queue"] == "b" })
    let resolved = try await engine.resolve(id: b.id, by: "token:ops")
    #expect(resolved.state == .resolved && resolved.resolvedBy == "token:ops")
    try await fixture.record(250, queue: "b")
    #expect(try await engine.evaluate().requests.filter { $0.action == .trigger }.isEmpty)
    await #expect(throws: NovaError.self) { try await engine.resolve(id: b.id, by: "token:ops") }
  }

  @Test func aRestartNeitherLosesAFiringAlertNorPagesAgain() async throws {
    let fixture = try await AlertFixture()
    try await fixture.record(250)
    try await fixture.engine().evaluate()
    _ = try await fixture.dispatcher().deliverDue()
    #expect(fixture.pagerDuty.requests.count == 1)
    // A new engine on the same database, as after a restart.
    let restarted = fixture.engine()
    fixture.clock.advance(by: 10)
    try await fixture.record(260)
    try await restarted.evaluate()
    _ = try await fixture.dispatcher().deliverDue()
    #expect(fixture.pagerDuty.requests.count == 1)
    #expect(try await fixture.store.list(states: [.firing]).count == 1)
    // A page stored but not yet sent when the process stopped goes out after the restart.
    fixture.pagerDuty.script([(500, "")])
    try await fixture.record(5000)
    try await restarted.evaluate()
    _ = try await fixture.dispatcher().deliverDue()
    fixture.clock.advance(by: 2)
    #expect(try await fixture.dispatcher().deliverDue() == 1)
    #expect(fixture.pagerDuty.requests.count == 3)
  }

  @Test func pagerDutyWebhooksAreVerifiedAndAcknowledgeTheAlert() async throws {
    // The test vector: HMAC-SHA256 of the body under the secret, as PagerDuty documents the header.
    #expect(
      PagerDutyWebhook.verify(
        header: "v1=a4ac075ce1b3e8e79ff1ce6789b83859f001ae8075e3c012ce4b9599894475d7", body: Array(#"{"event":{"id":"01"}}"#.utf8),
        secret: "nova-test-secret"))
    #expect(!PagerDutyWebhook.verify(header: "v1=" + String(repeating: "0", count: 64), body: [1], secret: "s"))
    #expect(!PagerDutyWebhook.verify(header: nil, body: [1], secret: "s"))
    let fixture = try await AlertFixture()
    let engine = fixture.engine()
    try await fixture.record(250)
    try await engine.evaluate()
    let listed = try await fixture.store.list()
    let alert = try #require(listed.first)
    let body = Array(
      """
      {"event":{"id":"e1","event_type":"incident.acknowledged","resource_type":"incident","occurred_at":"2027-01-15T08:01:00Z",
      "agent":{"id":"P1","type":"user_reference","summary":"Ada"},"data":{"id":"PGR","type":"incident","status":"acknowledged",
      "incident_key":"\(alert.dedupKey)"}}}
      """.utf8)
    let signature = "v1=" + String(NotificationSender.signature(of: body, secret: "whsec").dropFirst(7))
    #expect(PagerDutyWebhook.verify(header: "v1=\(String(repeating: "1", count: 64)),\(signature)", body: body, secret: "whsec"))
    let event = try PagerDutyWebhook.parse(body)
    #expect(try await PagerDutyWebhook.apply(event, to: engine) == "acknowledged alert \(alert.id)")
    #expect(try await fixture.store.alert(id: alert.id)?.acknowledgedBy == "pagerduty:Ada")
    // PagerDuty is not told about its own acknowledgement.
    #expect(try await fixture.store.deliveries().filter { $0.request.action == .acknowledge }.isEmpty)
    #expect(
      try await PagerDutyWebhook.apply(PagerDutyWebhook.Event(id: "e2", type: "incident.annotated"), to: engine) == "ignored incident.annotated")
    #expect(throws: NovaError.self) { _ = try PagerDutyWebhook.parse(Array(#"{"event":{}}"#.utf8)) }
    #expect(throws: NovaError.self) { _ = try PagerDutyWebhook.parse(Array("nope".utf8)) }
  }

  @Test func theIndexLoadsTheLatestSamplesOfEachWatchedKPIAndRulesAddedByAReload() async throws {
    let fixture = try await AlertFixture()
    // Samples recorded before the engine starts: only the newest of each series counts.
    try await fixture.record(5000, queue: "a")
    fixture.clock.advance(by: 1)
    try await fixture.record(10, queue: "a")
    try await fixture.record(300, queue: "b")
    try await fixture.kpis.record([KPISample(name: "other.kpi", value: 9, time: fixture.clock.now().millisecondsSince1970, source: "t")])
    let engine = fixture.engine()
    let first = try await engine.evaluate()
    #expect(first.result.changed.map { $0.labels["queue"] } == ["b"] && first.result.seriesEvaluated == 2)
    // A rule added by a reload sees the samples stored before it.
    var reloaded = fixture.configuration
    reloaded.rules += try AlertingConfiguration.parse("rules: [{name: Other, kpi: other.kpi, above: 5}]", file: "t.yaml").rules
    await engine.reload(reloaded)
    let second = try await engine.evaluate()
    #expect(second.result.changed.contains { $0.rule == "Other" && $0.state == .firing })
    let (latest, last) = try await fixture.kpis.latestSamples(names: ["queue.wait.p99"], since: 0)
    #expect(latest.map(\.value).sorted() == [10, 300] && last >= 4)
    let (_, _, read) = try await fixture.kpis.samples(afterRow: 0, since: 0, names: ["other.kpi"], limit: 2)
    #expect(read == 2)
  }

  @Test func dryRunRendersWhatWouldBeSentWithTheKeyRedacted() async throws {
    let fixture = try await AlertFixture(forDuration: "10m")
    try await fixture.record(5000)
    let (alerts, requests) = try await fixture.engine().dryRun()
    #expect(alerts.map(\.severity) == ["critical"])
    let page = try #require(requests.first { $0.kind == .pagerduty })
    #expect(page.body.contains(#""routing_key":"<redacted>""#) && !page.body.contains(AlertFixture.routingKey))
    #expect(PayloadFormats.pagerDutyProblems(page.body) == [])
    #expect(try await fixture.store.list().isEmpty)
    #expect(try await fixture.store.pendingDeliveryCount() == 0)
    // The sender fills the key in; a receiver without its secret is refused before sending.
    let sender = NotificationSender(secrets: ["pd": AlertFixture.routingKey])
    #expect(String(decoding: try sender.finalBody(page), as: UTF8.self).contains(AlertFixture.routingKey))
    let outcome = await NotificationSender(secrets: [:]).send(page)
    #expect(outcome == .rejected("invalid receiver pd: no routing key was loaded"))
    #expect(throws: NovaError.self) { _ = try NotificationSender.secrets(for: fixture.configuration, environment: [:]) }
  }
}
