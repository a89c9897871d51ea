import Foundation
import NovaAlerting
import NovaCore
import NovaMonitoring
import NovaTestSupport
import Testing

/// Runs the evaluator over a scripted series of samples, carrying open alerts as the store would.
struct EvaluatorHarness {
  var evaluator: AlertEvaluator
  var index = KPISeriesIndex()
  var open: [String: AlertInstance] = [:]
  var nextID: Int64 = 1

  init(_ yaml: String) throws {
    evaluator = AlertEvaluator(configuration: try AlertingConfiguration.parse(yaml, file: "t.yaml"))
  }

  mutating func sample(_ name: String, _ value: Double, at time: Int64, labels: [String: String] = [:]) {
    index.add([KPISample(name: name, labels: labels, value: value, time: time, source: "t")])
  }

  mutating func evaluate(at now: Int64, references: [String: Double] = [:]) -> EvaluationResult {
    var result = evaluator.evaluate(index: index, open: open, references: references, now: now)
    for index in result.changed.indices {
      if result.changed[index].id == 0 {
        result.changed[index].id = nextID
        nextID += 1
      }
      let alert = result.changed[index]
      open[alert.fingerprint] = alert.isOpen ? alert : nil
    }
    for alert in result.dropped { open[alert.fingerprint] = nil }
    return result
  }

  var actions: (EvaluationResult) -> [String] { { $0.notifications.map { "\($0.action.rawValue) \($0.alert.severity)" } } }
}

@Suite("Alert evaluation", .timeLimit(.minutes(5)))
struct AlertEvaluatorTests {
  static let yaml = """
    sla: {acknowledge_within: 5m, resolve_within: 30m}
    receivers: [{name: hook, type: webhook, url: "http://127.0.0.1:1/h"}]
    routes: [{name: r, receivers: [hook], repeat_interval: 1h}]
    settings: {alertmanager_resend: 1h}
    rules:
      - name: WaitHigh
        kpi: queue.wait.p99
        match: {queue: "q*"}
        above: {warn: 100, critical: 1000}
        for: 30s
        keep_firing_for: 20s
        summary: "{{labels.queue}} waits {{value}} {{unit}}"
    """

  @Test func pendingFiringSeverityRepeatAndResolve() throws {
    var h = try EvaluatorHarness(Self.yaml)
    h.sample("queue.wait.p99", 50, at: 0, labels: ["queue": "q1"])
    h.sample("queue.wait.p99", 500, at: 0, labels: ["queue": "other"])  // not matched
    var result = h.evaluate(at: 0)
    #expect(result.changed.isEmpty && result.seriesEvaluated == 1)
    h.sample("queue.wait.p99", 150, at: 10_000, labels: ["queue": "q1"])
    result = h.evaluate(at: 10_000)
    #expect(result.changed.first?.state == .pending && result.notifications.isEmpty)
    h.sample("queue.wait.p99", 160, at: 39_000, labels: ["queue": "q1"])
    #expect(h.evaluate(at: 39_000).notifications.isEmpty)  // 29 s: not yet
    h.sample("queue.wait.p99", 170, at: 40_000, labels: ["queue": "q1"])
    result = h.evaluate(at: 40_000)
    #expect(h.actions(result) == ["trigger warning"])
    let fired = try #require(result.changed.first)
    #expect(
      fired.state == .firing && fired.firedAt == 40_000 && fired.summary == "q1 waits 170 "
        && fired.labels == ["alertname": "WaitHigh", "queue": "q1"])
    #expect(result.journal.map(\.kind) == ["alert.fired"])
    // Worse: a new severity is notified; the same severity is not, until the repeat interval.
    h.sample("queue.wait.p99", 2000, at: 50_000, labels: ["queue": "q1"])
    #expect(h.actions(h.evaluate(at: 50_000)) == ["trigger critical"])
    h.sample("queue.wait.p99", 2500, at: 60_000, labels: ["queue": "q1"])
    #expect(h.evaluate(at: 60_000).notifications.isEmpty)
    h.sample("queue.wait.p99", 2500, at: 50_000 + 3_600_000, labels: ["queue": "q1"])
    h.open[fired.fingerprint]!.acknowledgedAt = 55_000  // acknowledged: no escalation in this test
    #expect(h.actions(h.evaluate(at: 50_000 + 3_600_000)).contains("trigger critical"))
    // Cleared: firing stays for keep_firing_for, then resolves once.
    let t: Int64 = 50_000 + 3_600_000
    h.sample("queue.wait.p99", 10, at: t + 1000, labels: ["queue": "q1"])
    #expect(h.evaluate(at: t + 10_000).notifications.filter { $0.action == .resolve }.isEmpty)
    result = h.evaluate(at: t + 21_000)
    #expect(result.notifications.map(\.action) == [.resolve])
    #expect(result.kpis.map(\.name) == ["alert.time_to_resolve"] && result.journal.map(\.kind) == ["alert.resolved"])
    #expect(h.open.isEmpty)
    #expect(h.evaluate(at: t + 30_000).notifications.isEmpty)
  }

  @Test func aPendingAlertThatClearsNeverFiresAndStaleSamplesDoNotCount() throws {
    var h = try EvaluatorHarness(Self.yaml)
    h.sample("queue.wait.p99", 150, at: 0, labels: ["queue": "q1"])
    #expect(h.evaluate(at: 0).changed.count == 1)
    h.sample("queue.wait.p99", 50, at: 10_000, labels: ["queue": "q1"])
    let result = h.evaluate(at: 10_000)
    #expect(result.dropped.count == 1 && result.notifications.isEmpty && h.open.isEmpty)
    h.sample("queue.wait.p99", 5000, at: 20_000, labels: ["queue": "q2"])
    #expect(h.evaluate(at: 20_000 + 301_000).changed.isEmpty)  // older than stale_after (5m)
  }

  @Test func samplesDatedAfterNowWaitForTheirTime() {
    var index = KPISeriesIndex()
    index.add(
      [
        KPISample(name: "k", value: 1, time: 1000, source: "t"), KPISample(name: "k", value: 9, time: 5000, source: "t"),
      ], now: 2000)
    #expect(index.series["k"]?["{}"]?.value == 1 && index.pending.count == 1)
    index.release(now: 4999)
    #expect(index.series["k"]?["{}"]?.value == 1)
    index.release(now: 5000)
    #expect(index.series["k"]?["{}"]?.value == 9 && index.pending.isEmpty)
  }

  @Test func unacknowledgedAlertsEscalateOnceAndLateOnesBreachTheResolveSLA() throws {
    var h = try EvaluatorHarness(Self.yaml.replacingOccurrences(of: "for: 30s", with: "for: 0s"))
    var escalations = 0
    var breaches: [String] = []
    var escalatedAt: Int64?
    for t in stride(from: Int64(0), through: 1_900_000, by: 60_000) {
      h.sample("queue.wait.p99", 500, at: t, labels: ["queue": "q1"])
      let result = h.evaluate(at: t)
      if result.notifications.contains(where: { $0.action == .escalate }) {
        escalations += 1
        escalatedAt = t
      }
      breaches += result.kpis.filter { $0.name == "alert.sla_breach" }.map { $0.labels["kind"] ?? "" }
    }
    #expect(escalations == 1 && escalatedAt == 300_000)
    #expect(breaches == ["acknowledge", "resolve"])
  }

  @Test func anAlertResolvedByHandStaysQuietUntilItsConditionClears() throws {
    var h = try EvaluatorHarness(Self.yaml.replacingOccurrences(of: "for: 30s", with: "for: 0s"))
    h.sample("queue.wait.p99", 500, at: 0, labels: ["queue": "q1"])
    let fired = try #require(h.evaluate(at: 0).changed.first)
    var alert = fired
    var result = EvaluationResult()
    h.evaluator.resolve(&alert, by: "token:ops", now: 1000, into: &result)
    #expect(result.notifications.map(\.action) == [.resolve] && alert.state == .resolved && alert.isOpen)
    h.open[alert.fingerprint] = alert
    h.sample("queue.wait.p99", 600, at: 2000, labels: ["queue": "q1"])
    #expect(h.evaluate(at: 2000).notifications.isEmpty)
    h.sample("queue.wait.p99", 10, at: 3000, labels: ["queue": "q1"])
    #expect(h.evaluate(at: 3000).changed.first?.cleared == true && h.open.isEmpty)
    h.sample("queue.wait.p99", 700, at: 4000, labels: ["queue": "q1"])
    #expect(h.actions(h.evaluate(at: 4000)) == ["trigger warning"])
  }

  @Test func removedRulesResolveTheirAlertsAndChangePercentUsesTheReference() throws {
    var h = try EvaluatorHarness(Self.yaml.replacingOccurrences(of: "for: 30s", with: "for: 0s"))
    h.sample("queue.wait.p99", 500, at: 0, labels: ["queue": "q1"])
    _ = h.evaluate(at: 0)
    h.evaluator.configuration.rules = try AlertingConfiguration.parse(
      """
      rules: [{name: Drop, kpi: queue.completion_rate, change_percent: 50, window: 1h}]
      """, file: "t.yaml"
    ).rules
    h.sample("queue.completion_rate", 40, at: 1000)
    let key = AlertEvaluator.referenceKey(rule: "Drop", labels: "{}")
    let result = h.evaluate(at: 1000, references: [key: 100])
    #expect(result.changed.contains { $0.rule == "WaitHigh" && $0.resolvedBy == AlertInstance.ruleRemovedReason })
    let drop = try #require(result.changed.first { $0.rule == "Drop" })
    #expect(drop.value == -60 && drop.state == .firing)
    #expect(h.evaluate(at: 2000, references: [key: 45]).changed.contains { $0.rule == "Drop" && $0.state == .resolved })
  }
}

@Suite("Alert SLA report", .timeLimit(.minutes(5)))
struct AlertSLAReportTests {
  func alert(fired: Int64, acknowledged: Int64? = nil, resolved: Int64? = nil, escalated: Int64? = nil) -> AlertInstance {
    var alert = AlertInstance(
      fingerprint: "f\(fired)", rule: "R", labels: [:], severity: "critical", kpi: "k", value: 1, threshold: 0, unit: "", summary: "",
      description: "", activeSince: fired, lastTrueAt: fired)
    alert.firedAt = fired
    alert.acknowledgedAt = acknowledged
    alert.resolvedAt = resolved
    alert.escalatedAt = escalated
    return alert
  }

  @Test func countsOnlyWhatHappenedByTheWindowsEnd() {
    let minute: Int64 = 60_000
    let alerts = [
      alert(fired: 0, acknowledged: 2 * minute, resolved: 20 * minute),  // both in time
      alert(fired: minute, acknowledged: 9 * minute, resolved: 50 * minute, escalated: 6 * minute),  // late twice
      alert(fired: 2 * minute, acknowledged: 70 * minute),  // acknowledged after the window
      alert(fired: 100 * minute),  // after the window
    ]
    let report = AlertSLAReport.compute(alerts, settings: AlertSettings(), since: nil, until: 60 * minute)
    #expect(report.fired == 3 && report.acknowledged == 2 && report.acknowledged_within_sla == 1 && report.escalated == 1)
    #expect(report.resolved == 2 && report.resolved_within_sla == 1 && report.open == 1)
    #expect(report.acknowledge_compliance == 1.0 / 3 && report.resolve_compliance == 1.0 / 3)
    // Medians of two: the mean of 2 and 8 minutes, and of 20 and 49 minutes.
    #expect(report.median_time_to_acknowledge_s == 300 && report.median_time_to_resolve_s == 2070)
    let empty = AlertSLAReport.compute([], settings: AlertSettings(), since: 0, until: 1)
    #expect(empty.acknowledge_compliance == nil && empty.resolve_compliance == nil && empty.median_time_to_resolve_s == nil)
  }
}
