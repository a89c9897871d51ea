import Foundation
import Logging
import NovaCore
import ServiceLifecycle

/// Keeps the KPI store tidy from `nova serve`: purges samples older than the retention, and
/// rewrites today's `kpi/summary-YYYY-MM-DD.json` (finishing yesterday's when the day turns).
public struct KPIMaintenance: Service {
  public var store: KPIStore
  public var dataDirectory: String
  public var retention: Duration
  public var interval: Duration
  public var logger: Logger
  /// Paces the passes (a test clock in timing tests).
  public var clock: any NovaClock

  public init(
    store: KPIStore, dataDirectory: String, retention: Duration, interval: Duration = .seconds(300), logger: Logger,
    clock: any NovaClock = SystemClock()
  ) {
    self.store = store
    self.dataDirectory = dataDirectory
    self.retention = retention
    self.interval = interval
    self.logger = logger
    self.clock = clock
  }

  /// One pass at `now` (ms).
  public func tick(now: Int64 = Date().millisecondsSince1970) async throws {
    let keep = Int64(retention.components.seconds) * 1000
    try await store.purge(before: now - keep)
    let today = KPIStore.dayStart(now)
    // Yesterday's file is completed during the first hour of today.
    if now - today < 3_600_000 {
      try await store.writeDailySummary(day: today - 86_400_000, dataDirectory: dataDirectory, generatedAt: now)
    }
    try await store.writeDailySummary(day: today, dataDirectory: dataDirectory, generatedAt: now)
  }

  public func run() async throws {
    await runPeriodically(every: interval, clock: clock, logger: logger, what: "KPI maintenance", finalTick: true) { try await tick() }
  }
}
