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
    try await kpis?.record(samples)
    if let pool {
      Gauge(label: Self.runningMetric).record(pool.runningCount)
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
