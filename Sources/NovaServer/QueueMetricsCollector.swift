import Foundation
import Logging
import Metrics
import NovaCore
import NovaMonitoring
import NovaQueue
import ServiceLifecycle
import Synchronization

/// Reads queue depth per queue and state from the store at an interval and exports it as gauges.
public struct QueueMetricsCollector: Service {
  /// Gauge of jobs per queue and state.
  public static let depthMetric = "nova_queue_jobs"
  /// Gauge of jobs running in this process.
  public static let runningMetric = "nova_worker_pool_running_jobs"
  /// Gauge of available jobs per queue and kind that no live worker takes.
  public static let unclaimableMetric = "nova_queue_unclaimable_jobs"
  /// The unclaimable series set last pass, zeroed when they clear.
  private let reportedUnclaimable = ReportedSeries()
  /// Gauges of what live workers' hosts offer, and what of it their jobs hold, per host and
  /// resource (`gpus`, `cpus`, `memory_mib`).
  public static let capacityMetric = "nova_worker_capacity"
  public static let inUseMetric = "nova_worker_in_use"
  /// The host series set last pass, zeroed when their workers lapse.
  private let reportedHosts = ReportedSeries()
  /// Gauge of available jobs per queue and what they wait for (`WaitingFor.Reason`).
  public static let waitingMetric = "nova_queue_waiting_jobs"
  /// How many of a queue's available jobs each pass explains; beyond, the counts are scaled.
  public static let waitingSample = 1000
  private let reportedWaiting = ReportedSeries()

  public var queue: any JobQueue
  public var pool: WorkerPool?
  public var interval: Duration
  public var logger: Logger
  /// Paces the passes (a test clock in timing tests).
  public var clock: any NovaClock
  /// Where queue depth is also kept as KPIs (`queue.depth{queue,state}`), if anywhere.
  public var kpis: KPIStore?

  public init(
    queue: any JobQueue, pool: WorkerPool?, interval: Duration = .seconds(15), logger: Logger, kpis: KPIStore? = nil,
    clock: any NovaClock = SystemClock()
  ) {
    self.queue = queue
    self.pool = pool
    self.interval = interval
    self.logger = logger
    self.clock = clock
    self.kpis = kpis
  }

  /// Sets the depth gauges of one queue, every state (zero for states with no jobs).
  static func recordDepth(queue: String, counts: [JobState: Int]) {
    for state in JobState.allCases {
      Gauge(label: depthMetric, dimensions: [("queue", queue), ("state", state.rawValue)]).record(counts[state] ?? 0)
    }
  }

  /// Reads the store once and sets every gauge (zero for states with no jobs).
  public func collect() async throws {
    let stats = try await queue.stats()
    let now = Date().millisecondsSince1970
    var samples: [KPISample] = []
    for (name, counts) in stats.counts {
      Self.recordDepth(queue: name, counts: counts)
      for state in JobState.allCases {
        samples.append(
          KPISample(
            name: "queue.depth", labels: ["queue": name, "state": state.rawValue], value: Double(counts[state] ?? 0),
            unit: "jobs", time: now, source: "nova serve"))
      }
    }
    // Jobs waiting for a worker that runs their kind (none live takes it): one series per
    // queue and kind, zeroed once the kind is taken again.
    let unclaimable = stats.unclaimable
    var seen: Set<[String]> = []
    for (name, kinds) in unclaimable {
      for (kind, count) in kinds {
        seen.insert([name, kind])
        Gauge(label: Self.unclaimableMetric, dimensions: [("queue", name), ("kind", kind)]).record(count)
        samples.append(
          KPISample(
            name: "queue.unclaimable", labels: ["queue": name, "kind": kind], value: Double(count), unit: "jobs", time: now,
            source: "nova serve"))
      }
    }
    for stale in reportedUnclaimable.replace(with: seen).subtracting(seen) {
      Gauge(label: Self.unclaimableMetric, dimensions: [("queue", stale[0]), ("kind", stale[1])]).record(0)
    }
    recordHosts(stats.workers)
    samples += try await recordWaiting(stats, now: now)
    try await kpis?.record(samples)
    if let pool {
      Gauge(label: Self.runningMetric).record(pool.runningCount)
    }
  }

  /// Available jobs per queue by what they wait for: a paused or full queue explains all of
  /// them; otherwise the newest `waitingSample` are explained one by one (and the counts scaled
  /// to the queue's), so that jobs no worker could ever hold show as `unschedulable`.
  func recordWaiting(_ stats: QueueStats, now: Int64) async throws -> [KPISample] {
    let controls = try await queue.controls()
    var facts = WaitFacts(controls: controls, running: stats.counts.mapValues { $0[.running] ?? 0 }, workers: stats.workers)
    var waiting: [[String]: Int] = [:]
    for (name, counts) in stats.counts {
      let available = counts[.available] ?? 0
      guard available > 0 else { continue }
      let queueControls = controls[name] ?? QueueControls()
      if queueControls.paused {
        waiting[[name, WaitingFor.Reason.queuePaused.rawValue]] = available
        continue
      }
      if let limit = queueControls.maxRunning, counts[.running] ?? 0 >= limit {
        waiting[[name, WaitingFor.Reason.queueLimit.rawValue]] = available
        continue
      }
      let sample = try await queue.list(JobFilter(state: .available, queue: name, limit: Self.waitingSample)).jobs
      guard !sample.isEmpty else { continue }
      // Jobs with a concurrency key may wait on its limit: their queue's running jobs per key.
      if sample.contains(where: { $0.concurrencyKey != nil }) { try await facts.countKeys(of: name, in: queue) }
      var reasons: [String: Int] = [:]
      for job in sample { if let why = facts.explain(job) { reasons[why.reason, default: 0] += 1 } }
      let scale = Double(available) / Double(sample.count)
      for (reason, count) in reasons { waiting[[name, reason]] = Int((Double(count) * scale).rounded()) }
    }
    var samples: [KPISample] = []
    for (series, count) in waiting {
      Gauge(label: Self.waitingMetric, dimensions: [("queue", series[0]), ("reason", series[1])]).record(count)
      samples.append(
        KPISample(
          name: "queue.waiting", labels: ["queue": series[0], "reason": series[1]], value: Double(count), unit: "jobs", time: now,
          source: "nova serve"))
    }
    for stale in reportedWaiting.replace(with: Set(waiting.keys)).subtracting(waiting.keys) {
      Gauge(label: Self.waitingMetric, dimensions: [("queue", stale[0]), ("reason", stale[1])]).record(0)
      samples.append(
        KPISample(name: "queue.waiting", labels: ["queue": stale[0], "reason": stale[1]], value: 0, unit: "jobs", time: now, source: "nova serve"))
    }
    return samples
  }

  /// Capacity and use per host over its live workers that say what they offer.
  func recordHosts(_ workers: [WorkerPresence]) {
    var totals: [String: (capacity: [String: Int], inUse: [String: Int])] = [:]
    for worker in workers {
      guard let capacity = worker.capacity, let host = worker.host ?? Optional(capacity.host) else { continue }
      let free = worker.free ?? capacity
      var entry = totals[host] ?? ([:], [:])
      entry.capacity["gpus", default: 0] += capacity.gpus.count
      entry.capacity["cpus", default: 0] += capacity.cpus
      entry.capacity["memory_mib", default: 0] += capacity.memory_mib
      entry.inUse["gpus", default: 0] += max(0, capacity.gpus.count - free.gpus.count)
      entry.inUse["cpus", default: 0] += max(0, capacity.cpus - free.cpus)
      entry.inUse["memory_mib", default: 0] += max(0, capacity.memory_mib - free.memory_mib)
      totals[host] = entry
    }
    var seen: Set<[String]> = []
    for (host, entry) in totals {
      for resource in ["gpus", "cpus", "memory_mib"] {
        seen.insert([host, resource])
        Gauge(label: Self.capacityMetric, dimensions: [("host", host), ("resource", resource)]).record(entry.capacity[resource] ?? 0)
        Gauge(label: Self.inUseMetric, dimensions: [("host", host), ("resource", resource)]).record(entry.inUse[resource] ?? 0)
      }
    }
    for stale in reportedHosts.replace(with: seen).subtracting(seen) {
      Gauge(label: Self.capacityMetric, dimensions: [("host", stale[0]), ("resource", stale[1])]).record(0)
      Gauge(label: Self.inUseMetric, dimensions: [("host", stale[0]), ("resource", stale[1])]).record(0)
    }
  }

  public func run() async throws {
    await runPeriodically(every: interval, clock: clock, logger: logger, what: "queue metrics collection", finalTick: true) { try await collect() }
  }
}

/// Label sets a collector reported last pass (shared by the collector's copies).
final class ReportedSeries: Sendable {
  private let series = Mutex<Set<[String]>>([])

  /// Stores `new` and returns what was there.
  func replace(with new: Set<[String]>) -> Set<[String]> {
    series.withLock { series in
      defer { series = new }
      return series
    }
  }
}
