import Foundation
import Logging
import Metrics
import NovaCore
import NovaMonitoring
import NovaQueue
import ServiceLifecycle

/// Reads queue depth per queue and state from the store at an interval and exports it as gauges.
public struct QueueMetricsCollector: Service {
  /// Gauge of jobs per queue and state.
  public static let depthMetric = "nova_queue_jobs"
  /// Gauge of jobs running in this process.
  public static let runningMetric = "nova_worker_pool_running_jobs"

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
    try await kpis?.record(samples)
    if let pool {
      Gauge(label: Self.runningMetric).record(pool.runningCount)
    }
  }

  public func run() async throws {
    await runPeriodically(every: interval, clock: clock, logger: logger, what: "queue metrics collection", finalTick: true) { try await collect() }
  }
}
