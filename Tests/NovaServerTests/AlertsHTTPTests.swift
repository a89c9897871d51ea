import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import NovaAlerting
import NovaBenchmarks
import NovaCore
import NovaDatabase
import NovaMonitoring
import NovaQueue
import NovaSecurity
import NovaServer
import NovaTestSupport
import Testing

@Suite("Alerts over HTTP", .timeLimit(.minutes(5)))
struct AlertsHTTPTests {
  @Test func alertsAreListedAcknowledgedAndResolvedWithRolesAndPagerDutyWebhooksAreVerified() async throws {
    let directory = try TemporaryDirectory.make()
    let queue = try SQLiteJobQueue(configuration: .init(path: directory.appendingPathComponent("nova.sqlite").path, journal: AuditJournal()))
    let security = try SecurityContext(database: queue.database, keyPath: directory.appendingPathComponent("key").path)
    let admin = try await security.tokens.create(name: "root", role: .admin).token
    let viewer = try await security.tokens.create(name: "dash", role: .viewer).token
    let operatorToken = try await security.tokens.create(name: "ops", role: .operator).token
    let receiver = try await LocalHTTPReceiver()
    let alerting = try AlertingConfiguration.parse(
      """
      receivers: [{name: pd, type: pagerduty, url: "\(receiver.url)/v2/enqueue", routing_key_env: K}]
      routes: [{name: oncall, receivers: [pd]}]
      rules: [{name: Coverage, kpi: audit.coverage, below: {critical: 1}}]
      """, file: "t.yaml")
    var logger = Logger(label: "test")
    logger.logLevel = .warning
    TestMetrics.bootstrap()
    let server = try NovaServer(
      configuration: .init(workers: 0), queue: queue, security: security, alerting: alerting,
      alertSecrets: ["pd": String(repeating: "k", count: 32), NovaServer.pagerDutyWebhookSecretName: "whsec"], logger: logger)
    let engine = try #require(server.alerts)
    let app = Application(router: server.makeRouter())
    try await app.test(.router) { client in
      try await client.execute(
        uri: "/v1/kpis", method: .post, headers: bearer(operatorToken), body: ByteBuffer(string: #"{"name":"audit.coverage","value":0.5}"#)
      ) { #expect($0.status == .created) }
      try await engine.evaluate()
      var id: Int64 = 0
      try await client.execute(uri: "/v1/alerts?state=firing", method: .get, headers: bearer(viewer)) { response in
        #expect(response.status == .ok)
        let alerts = try json(response.body)["alerts"] as? [[String: Any]] ?? []
        #expect(alerts.count == 1)
        id = (alerts.first?["id"] as? NSNumber)?.int64Value ?? 0
        #expect(alerts.first?["severity"] as? String == "critical" && (alerts.first?["acknowledge_deadline"] as? String)?.hasSuffix("Z") == true)
      }
      try await client.execute(uri: "/v1/alerts/\(id)", method: .get, headers: bearer(viewer)) { #expect($0.status == .ok) }
      try await client.execute(uri: "/v1/alerts/999", method: .get, headers: bearer(viewer)) { #expect($0.status == .notFound) }
      try await client.execute(uri: "/v1/alerts/x", method: .get, headers: bearer(viewer)) { #expect($0.status == .unprocessableContent) }
      try await client.execute(uri: "/v1/alerts?state=loud", method: .get, headers: bearer(viewer)) { #expect($0.status == .unprocessableContent) }
      try await client.execute(uri: "/v1/alerts/\(id)/ack", method: .post, headers: bearer(viewer)) { #expect($0.status == .forbidden) }
      try await client.execute(uri: "/v1/alerts/\(id)/ack", method: .post, headers: bearer(operatorToken)) { response in
        #expect(response.status == .ok)
        let body = try json(response.body)
        #expect(body["acknowledged_by"] as? String == "token:ops")
      }
      try await client.execute(uri: "/v1/alerts/\(id)/resolve", method: .post, headers: bearer(operatorToken)) { response in
        let body = try json(response.body)
        #expect(body["state"] as? String == "resolved")
      }
      try await client.execute(uri: "/v1/alerts/\(id)/resolve", method: .post, headers: bearer(operatorToken)) { #expect($0.status == .notFound) }
      let actions = try await engine.store.deliveries().map(\.request.action)
      #expect(actions == [.resolve, .acknowledge, .trigger])

      // PagerDuty's webhooks need no token but a valid signature.
      try await client.execute(
        uri: "/v1/kpis", method: .post, headers: bearer(operatorToken), body: ByteBuffer(string: #"{"name":"audit.coverage","value":1}"#)
      ) { _ in }
      try await engine.evaluate()  // cleared
      try await client.execute(
        uri: "/v1/kpis", method: .post, headers: bearer(operatorToken), body: ByteBuffer(string: #"{"name":"audit.coverage","value":0.9}"#)
      ) { _ in }
      try await engine.evaluate()  // fires again: a new alert
      let again = try #require(try await engine.store.list(states: [.firing]).first)
      func event(_ id: String, occurredAt: Int64 = Date().millisecondsSince1970) -> (body: String, signature: String) {
        let body =
          #"{"event":{"id":"\#(id)","event_type":"incident.resolved","occurred_at":"\#(AuditTime.string(occurredAt))","agent":{"summary":"Ada"},"data":{"incident_key":"\#(again.dedupKey)"}}}"#
        return (body, "v1=" + String(NotificationSender.signature(of: Array(body.utf8), secret: "whsec").dropFirst(7)))
      }
      let (body, signature) = event("e9")
      try await client.execute(
        uri: "/v1/alerts/pagerduty", method: .post, headers: [HTTPField.Name("X-PagerDuty-Signature")!: "v1=" + String(repeating: "0", count: 64)],
        body: ByteBuffer(string: body)
      ) { #expect($0.status == .unauthorized) }
      try await client.execute(
        uri: "/v1/alerts/pagerduty", method: .post, headers: [HTTPField.Name("X-PagerDuty-Signature")!: signature], body: ByteBuffer(string: body)
      ) { response in
        #expect(response.status == .accepted)
        let answer = try json(response.body)
        #expect(answer["outcome"] as? String == "resolved alert \(again.id)")
      }
      // Issue #13 point 8: the same event again, or an authentic one from long ago, is refused
      // (409) and journaled.
      try await client.execute(
        uri: "/v1/alerts/pagerduty", method: .post, headers: [HTTPField.Name("X-PagerDuty-Signature")!: signature], body: ByteBuffer(string: body)
      ) { response in
        #expect(response.status == .conflict)
        #expect(String(buffer: response.body).contains("replayed_event"))
      }
      let old = event("e10", occurredAt: Date().millisecondsSince1970 - 600_000)
      try await client.execute(
        uri: "/v1/alerts/pagerduty", method: .post, headers: [HTTPField.Name("X-PagerDuty-Signature")!: old.signature],
        body: ByteBuffer(string: old.body)
      ) { response in
        #expect(response.status == .conflict)
        #expect(String(buffer: response.body).contains("stale_event"))
      }
      let refused = try await server.journal!.entries(kinds: ["alert.webhook_refused"])
      #expect(refused.map(\.subject) == ["e9", "e10"])
      #expect(try await engine.store.alert(id: again.id)?.resolvedBy == "pagerduty:Ada")

      try await client.execute(uri: "/v1/journal?kind=alert.&since=1h", method: .get, headers: bearer(viewer)) { response in
        let entries = try json(response.body)["entries"] as? [[String: Any]] ?? []
        #expect(
          entries.compactMap { $0["kind"] as? String } == [
            "alert.fired", "alert.acknowledged", "alert.resolved", "alert.fired", "alert.resolved", "alert.webhook_refused",
            "alert.webhook_refused",
          ])
        #expect(entries[1]["actor"] as? String == "token:ops")
      }
      try await client.execute(uri: "/v1/journal?since=yesterday", method: .get, headers: bearer(viewer)) {
        #expect($0.status == .unprocessableContent)
      }
      try await client.execute(uri: "/v1/journal", method: .get, headers: bearer(admin)) { #expect($0.status == .ok) }
    }
  }
}
