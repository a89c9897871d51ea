import Foundation
import Logging
import Metrics
import NovaCore
import NovaMonitoring
import NovaQueue
import NovaSecurity
import ServiceLifecycle
import Synchronization

/// Turns what the audit log recorded since the last tick into KPIs and gauges: enqueue,
/// completion, failure and dead-letter rates and wait-time percentiles per queue; policy
/// decision rates, the cache hit ratio and OPA errors. The log holds every worker's and every
/// server's work on the store, so the figures are the fleet's, not this process's.
public final class ActivityCollector: Service, Sendable {
  /// Gauge: job events per second, per queue and event (`enqueued`, `completed`, `failed`, `dead`, ...).
  public static let eventRateMetric = "nova_queue_event_rate"
  /// Gauge: wait-time quantiles per queue (seconds), label `quantile` 0.5, 0.95, 0.99.
  public static let waitMetric = "nova_queue_wait_quantile_seconds"
  /// Gauge: failed over finished attempts per queue.
  public static let failureRatioMetric = "nova_queue_failure_ratio"
  /// Gauge: policy decisions per second by source and result.
  public static let decisionRateMetric = "nova_policy_decision_rate"
  /// Gauge: cached decisions over all decisions.
  public static let cacheHitRatioMetric = "nova_policy_cache_hit_ratio"
  /// Gauge: decisions per second that OPA could not answer (the fallback decided).
  public static let opaErrorRateMetric = "nova_policy_opa_error_rate"

  /// The rate KPIs, by the job event they count.
  public static let rateKPIs: [(event: JobTransition.Event, kpi: String)] = [
    (.enqueued, "queue.enqueue_rate"), (.completed, "queue.completion_rate"), (.failed, "queue.failure_rate"),
    (.dead, "queue.dead_letter_rate"),
  ]
  static let quantiles: [(value: Double, name: String)] = [(0.5, "p50"), (0.95, "p95"), (0.99, "p99")]

  private struct State {
    var cursor: Int64?
    var lastTick: Duration?
    var queues: Set<String> = []
  }

  public let audit: AuditLog
  public let kpis: KPIStore?
  public let interval: Duration
  public let logger: Logger
  /// Paces the passes (a test clock in timing tests).
  public let clock: any NovaClock
  private let state = Mutex(State())

  public init(audit: AuditLog, kpis: KPIStore?, interval: Duration = .seconds(15), logger: Logger, clock: any NovaClock = SystemClock()) {
    self.audit = audit
    self.kpis = kpis
    self.interval = interval
    self.logger = logger
    self.clock = clock
  }

  /// Starts counting from the end of the log (history before the server started is not a rate).
  public func start() async throws {
    let size = try await audit.size()
    let now = clock.uptime()
    state.withLock {
      $0.cursor = size
      $0.lastTick = now
    }
  }

  /// Reads the entries since the last tick and records their rates and percentiles; returns the samples.
  @discardableResult
  public func tick(now: Date = Date()) async throws -> [KPISample] {
    let tickTime = clock.uptime()
    guard let (cursor, lastTick) = state.withLock({ s in s.cursor.map { ($0, s.lastTick ?? tickTime) } }) else {
      try await start()
      return []
    }
    let activity = try await audit.activity(after: cursor)
    let elapsed = max((tickTime - lastTick).seconds, 0.001)
    let queues = state.withLock { s -> Set<String> in
      s.cursor = activity.through
      s.lastTick = tickTime
      s.queues.formUnion(activity.queues.keys)
      return s.queues
    }
    let samples = Self.samples(activity, queues: queues, seconds: elapsed, time: now.millisecondsSince1970)
    for sample in samples { Self.export(sample) }
    if let kpis {
      try await kpis.record(samples)
      try await RecordedKPIGauges.export(from: kpis, now: now.millisecondsSince1970)
    }
    return samples
  }

  /// The KPIs of `activity` over `seconds`; rates for every queue in `queues` (zero when idle).
  public static func samples(_ activity: AuditActivity, queues: Set<String>, seconds: Double, time: Int64) -> [KPISample] {
    var samples: [KPISample] = []
    func add(_ name: String, _ labels: [String: String], _ value: Double, _ unit: String) {
      samples.append(KPISample(name: name, labels: labels, value: value, unit: unit, time: time, source: "nova serve"))
    }
    for queue in queues.sorted() {
      let queueActivity = activity.queues[queue] ?? AuditActivity.QueueActivity()
      for (event, kpi) in rateKPIs {
        add(kpi, ["queue": queue], Double(queueActivity.count(event)) / seconds, "1/s")
      }
      if let ratio = queueActivity.failureRatio { add("queue.failure_ratio", ["queue": queue], ratio, "ratio") }
      for (quantile, wait) in zip(quantiles, queueActivity.waitQuantiles(quantiles.map(\.value))) {
        if let wait { add("queue.wait.\(quantile.name)", ["queue": queue], Double(wait), "ms") }
      }
    }
    for source in AuditActivity.decisionSources {
      for allowed in [true, false] {
        let count = activity.decisions[AuditActivity.DecisionKey(source: source, allowed: allowed)] ?? 0
        add("policy.decision_rate", ["source": source, "result": allowed ? "allow" : "deny"], Double(count) / seconds, "1/s")
      }
    }
    if let ratio = activity.cacheHitRatio { add("policy.cache_hit_ratio", [:], ratio, "ratio") }
    add("policy.opa_error_rate", [:], Double(activity.decisions(from: "fallback")) / seconds, "1/s")
    return samples
  }

  /// The KPIs of a store where nothing has happened yet, every one at zero: the rates, and the
  /// ratios and waits that are otherwise only known once something was measured.
  static func zeroSamples(queues: Set<String>, time: Int64) -> [KPISample] {
    var samples = Self.samples(AuditActivity(through: 0), queues: queues, seconds: 1, time: time)
    func zero(_ name: String, _ labels: [String: String]) {
      samples.append(KPISample(name: name, labels: labels, value: 0, unit: "", time: time, source: "nova serve"))
    }
    for queue in queues.sorted() {
      zero("queue.failure_ratio", ["queue": queue])
      for quantile in quantiles { zero("queue.wait.\(quantile.name)", ["queue": queue]) }
    }
    zero("policy.cache_hit_ratio", [:])
    return samples
  }

  /// Sets the gauge of one KPI sample.
  static func export(_ sample: KPISample) {
    let queue = sample.labels["queue"] ?? ""
    if let event = rateKPIs.first(where: { $0.kpi == sample.name })?.event {
      Gauge(label: eventRateMetric, dimensions: [("queue", queue), ("event", event.rawValue)]).record(sample.value)
    } else if let quantile = quantiles.first(where: { "queue.wait.\($0.name)" == sample.name })?.name {
      Gauge(label: waitMetric, dimensions: [("queue", queue), ("percentile", quantile)]).record(sample.value / 1000)
    } else {
      switch sample.name {
      case "queue.failure_ratio":
        Gauge(label: failureRatioMetric, dimensions: [("queue", queue)]).record(sample.value)
      case "policy.decision_rate":
        Gauge(
          label: decisionRateMetric,
          dimensions: [("source", sample.labels["source"] ?? ""), ("result", sample.labels["result"] ?? "")]
        ).record(sample.value)
      case "policy.cache_hit_ratio":
        Gauge(label: cacheHitRatioMetric).record(sample.value)
      case "policy.opa_error_rate":
        Gauge(label: opaErrorRateMetric).record(sample.value)
      default:
        break
      }
    }
  }

  public func run() async throws {
    try await start()
    // The first rate needs a whole interval behind it.
    try? await cancelWhenGracefulShutdown { try await self.clock.sleep(for: self.interval) }
    await runPeriodically(every: interval, clock: clock, logger: logger, what: "activity collection", finalTick: true) { try await tick() }
  }
}
