import Foundation
import Logging
import Metrics
import NovaCore
import NovaMonitoring

/// Evaluates the rules of `thresholds.yaml` against the KPI store and keeps alerts, their
/// notifications and their SLA in the database; acknowledges and resolves them for people.
public actor AlertEngine {
  public static let firingMetric = "nova_alerts_firing"
  public static let timeToAcknowledgeMetric = "nova_alert_time_to_acknowledge_seconds"
  public static let timeToResolveMetric = "nova_alert_time_to_resolve_seconds"
  public static let slaBreachesMetric = "nova_alert_sla_breaches_total"
  public static let evaluationMetric = "nova_alert_evaluation_seconds"

  public private(set) var configuration: AlertingConfiguration
  public nonisolated let store: AlertStore
  public nonisolated let kpis: KPIStore
  public nonisolated let clock: any NovaClock
  /// Signalled when an evaluation put requests in the outbox.
  public nonisolated let outboxSignal = WakeSignal()
  private var index = KPISeriesIndex()
  private var cursor: Int64 = 0
  /// The KPI names the index holds the latest samples of.
  private var indexed: Set<String> = []
  /// The KPI names the rules watch, and the longest time a sample of theirs counts.
  private var watched: Set<String>
  private var longestStale: Duration
  private var lastPrune: Int64 = 0
  /// Rows read from the KPI store at a time.
  private static let batch = 100_000

  public init(configuration: AlertingConfiguration, store: AlertStore, kpis: KPIStore, clock: any NovaClock = SystemClock()) {
    self.configuration = configuration
    self.store = store
    self.kpis = kpis
    self.clock = clock
    (watched, longestStale) = Self.watch(configuration)
  }

  private static func watch(_ configuration: AlertingConfiguration) -> (Set<String>, Duration) {
    (Set(configuration.rules.map(\.kpi)), configuration.rules.map(\.staleAfter).max() ?? .seconds(300))
  }

  /// Uses new rules from the next evaluation on (open alerts of removed rules resolve then).
  public func reload(_ configuration: AlertingConfiguration) {
    self.configuration = configuration
    (watched, longestStale) = Self.watch(configuration)
  }

  private var renderer: NotificationRenderer { NotificationRenderer(configuration: configuration) }

  /// Brings the latest-sample index up to date with the store: the newest sample of each series
  /// of a KPI that a rule newly watches (at start, after a reload), then the rows stored since.
  private func refreshIndex(now: Int64) async throws {
    let oldest = now - Int64(longestStale.seconds * 1000)
    let added = watched.subtracting(indexed)
    if !added.isEmpty {
      let (latest, last) = try await kpis.latestSamples(names: added, since: oldest, until: now)
      index.add(latest, now: now)
      // Rows between the cursor and `last` of the names already indexed are read below.
      if indexed.isEmpty { cursor = last }
      indexed.formUnion(added)
    }
    index.release(now: now)
    while true {
      let (samples, last, read) = try await kpis.samples(afterRow: cursor, since: oldest, names: indexed, limit: Self.batch)
      index.add(samples, now: now)
      cursor = last
      if read < Self.batch { break }
    }
    if now - lastPrune > 60_000 {
      index.prune(before: oldest)
      lastPrune = now
    }
  }

  /// The mean of each `change_percent` rule's series over its window before the latest sample.
  private func references(now: Int64) async throws -> [String: Double] {
    var references: [String: Double] = [:]
    let evaluator = AlertEvaluator(configuration: configuration)
    for rule in configuration.rules where rule.comparison == .changePercent {
      for sample in evaluator.candidates(of: rule, in: index, now: now) {
        let window = Int64(rule.window.seconds * 1000)
        let before = try await kpis.query(name: rule.kpi, since: sample.time - window, until: sample.time - 1, labels: sample.labels, limit: .max)
          .filter { $0.labels == sample.labels }
        if !before.isEmpty {
          references[AlertEvaluator.referenceKey(rule: rule.name, labels: sample.labelText)] =
            before.map(\.value).reduce(0, +) / Double(before.count)
        }
      }
    }
    return references
  }

  /// One evaluation pass: rules against the latest KPIs, alerts and outbox updated in one transaction.
  @discardableResult
  public func evaluate() async throws -> (result: EvaluationResult, requests: [OutboundRequest]) {
    let started = ContinuousClock.now
    let now = clock.now().millisecondsSince1970
    try await refreshIndex(now: now)
    let references = try await references(now: now)
    let evaluator = AlertEvaluator(configuration: configuration)
    let index = self.index
    let outcome = try await store.apply(now: now, renderer: renderer, actor: "alerts") { open in
      evaluator.evaluate(index: index, open: open, references: references, now: now)
    }
    try await finish(outcome)
    for severity in ["critical", "error", "warning", "info"] {
      Gauge(label: Self.firingMetric, dimensions: [("severity", severity)]).record(outcome.result.firing[severity] ?? 0)
    }
    Timer(label: Self.evaluationMetric).recordNanoseconds(Int64((ContinuousClock.now - started).seconds * 1e9))
    return outcome
  }

  /// Records what a change produced: its KPIs (also as metrics), and wakes the sender when it
  /// put requests in the outbox.
  private func finish(_ outcome: (result: EvaluationResult, requests: [OutboundRequest])) async throws {
    try await kpis.record(outcome.result.kpis)
    for sample in outcome.result.kpis {
      switch sample.name {
      case "alert.time_to_resolve": Recorder(label: Self.timeToResolveMetric).record(sample.value)
      case "alert.time_to_acknowledge": Recorder(label: Self.timeToAcknowledgeMetric).record(sample.value)
      case "alert.sla_breach": Counter(label: Self.slaBreachesMetric, dimensions: [("kind", sample.labels["kind"] ?? "")]).increment()
      default: break
      }
    }
    if !outcome.requests.isEmpty { outboxSignal.signal() }
  }

  /// A person's change to open alert `id` (`change` fills the result), stored with its
  /// notifications; PagerDuty receivers are left out when the change came from PagerDuty.
  private func change(
    id: Int64, by who: String, notifyPagerDuty: Bool,
    _ change: @escaping @Sendable (inout AlertInstance, inout EvaluationResult) throws -> Void
  ) async throws -> AlertInstance {
    let now = clock.now().millisecondsSince1970
    var renderer = self.renderer
    if !notifyPagerDuty { renderer.configuration.receivers.removeAll { $0.kind == .pagerduty } }
    let outcome = try await store.apply(now: now, renderer: renderer, actor: who) { open in
      guard var alert = open.values.first(where: { $0.id == id }) else { throw Self.notOpen(id) }
      var result = EvaluationResult()
      try change(&alert, &result)
      return result
    }
    try await finish(outcome)
    if let alert = outcome.result.changed.first { return alert }
    guard let alert = try await store.alert(id: id) else { throw Self.notOpen(id) }
    return alert
  }

  /// Acknowledges a firing alert: stops its escalation clock, records time to acknowledge, and
  /// tells PagerDuty (unless the acknowledgement came from PagerDuty).
  @discardableResult
  public func acknowledge(id: Int64, by who: String, notifyPagerDuty: Bool = true) async throws -> AlertInstance {
    let now = clock.now().millisecondsSince1970
    let ackWithin = configuration.settings.acknowledgeWithin.seconds
    return try await change(id: id, by: who, notifyPagerDuty: notifyPagerDuty) { alert, result in
      guard alert.state == .firing else {
        throw NovaError.invalidInput(field: "alert \(id)", message: "it is \(alert.state.rawValue); only a firing alert can be acknowledged")
      }
      if alert.acknowledgedAt != nil { return }  // acknowledging twice changes nothing
      alert.acknowledgedAt = now
      alert.acknowledgedBy = who
      let seconds = Double(now - (alert.firedAt ?? now)) / 1000
      result.changed = [alert]
      result.notifications = [AlertNotification(action: .acknowledge, alert: alert)]
      result.kpis = [
        KPISample(name: "alert.time_to_acknowledge", labels: ["rule": alert.rule], value: seconds, unit: "s", time: now, source: "alerts")
      ]
      result.journal = [
        JournalRecord(
          kind: "alert.acknowledged", subject: nil,
          payload: .object([
            "rule": .string(alert.rule), "fingerprint": .string(alert.fingerprint), "by": .string(who), "time_to_acknowledge_s": .double(seconds),
            "within_sla": .bool(seconds <= ackWithin),
          ]))
      ]
    }
  }

  /// Resolves a pending or firing alert by hand; its series does not page again until its
  /// condition has cleared. PagerDuty is not told when the resolve came from it.
  @discardableResult
  public func resolve(id: Int64, by who: String, notifyPagerDuty: Bool = true) async throws -> AlertInstance {
    let now = clock.now().millisecondsSince1970
    let evaluator = AlertEvaluator(configuration: configuration)
    return try await change(id: id, by: who, notifyPagerDuty: notifyPagerDuty) { alert, result in
      guard alert.state != .resolved else { throw Self.notOpen(id) }
      evaluator.resolve(&alert, by: who, now: now, into: &result)
      result.changed = [alert]
    }
  }

  /// What an evaluation now would send if every alert were new and its `for:` had passed:
  /// the requests for every alert whose condition holds, rendered but not stored or sent.
  public func dryRun() async throws -> (alerts: [AlertInstance], requests: [OutboundRequest]) {
    let now = clock.now().millisecondsSince1970
    try await refreshIndex(now: now)
    let references = try await references(now: now)
    var immediate = configuration
    for index in immediate.rules.indices { immediate.rules[index].forDuration = .zero }
    var result = AlertEvaluator(configuration: immediate).evaluate(index: index, open: [:], references: references, now: now)
    let known = try await store.openAlerts()
    for index in result.notifications.indices {
      result.notifications[index].alert.id = known[result.notifications[index].alert.fingerprint]?.id ?? 0
    }
    return (result.notifications.map(\.alert), renderer.requests(for: result.notifications, now: now))
  }

  /// Evaluates until cancelled: whenever KPI samples are recorded (at most every `gap`) and at
  /// least every evaluation interval.
  public nonisolated func runEvaluations(gap: Duration = .milliseconds(20), logger: Logger) async {
    while !Task.isCancelled {
      do {
        try await evaluate()
      } catch {
        logger.error("alert evaluation failed", metadata: ["error": "\(error)"])
      }
      let interval = await configuration.settings.evaluationInterval
      await kpis.recorded.wait(timeout: interval, clock: clock)
      try? await clock.sleep(for: gap)
    }
  }

  /// The open alert PagerDuty knows by `dedupKey`, if any.
  public func openAlert(dedupKey: String) async throws -> AlertInstance? {
    try await store.openAlerts().values.first { $0.dedupKey == dedupKey }
  }

  private static func notOpen(_ id: Int64) -> NovaError {
    .notFound("no open alert \(id); `nova alerts list` shows the open ones")
  }
}
