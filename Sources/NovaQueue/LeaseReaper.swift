import Foundation
import Logging
import NovaCore
import ServiceLifecycle

/// Periodically makes jobs whose lease expired available again, and purges old finished jobs.
public struct LeaseReaper: Service {
  public var queue: any JobQueue
  public var interval: Duration
  /// Succeeded and cancelled jobs older than this are deleted; nil keeps them.
  public var retention: Duration?
  /// Dead jobs older than this are deleted (they are kept longer, for inspection); nil keeps them.
  public var deadRetention: Duration?
  public var logger: Logger
  /// Paces the passes and dates the purge.
  public var clock: any NovaClock

  public init(
    queue: any JobQueue, interval: Duration = .seconds(1), retention: Duration? = nil, deadRetention: Duration? = nil, logger: Logger,
    clock: any NovaClock = SystemClock()
  ) {
    self.deadRetention = deadRetention
    self.clock = clock
    self.queue = queue
    self.interval = interval
    self.retention = retention
    self.logger = logger
  }

  /// Runs one pass: reap, then purge.
  @discardableResult
  public func runOnce(now: Date? = nil) async throws -> ReapResult {
    let now = now ?? clock.now()
    let result = try await AuditContext.$actor.withValue("reaper") { try await queue.reapExpiredLeases() }
    if !result.requeued.isEmpty || !result.dead.isEmpty {
      logger.notice(
        "reaped expired leases", metadata: ["requeued": "\(result.requeued.count)", "dead": "\(result.dead.count)"])
    }
    if retention != nil || deadRetention != nil {
      let purged = try await queue.purgeFinished(
        before: retention.map { now.addingTimeInterval(-$0.seconds) } ?? .distantPast,
        deadBefore: deadRetention.map { now.addingTimeInterval(-$0.seconds) })
      if purged > 0 { logger.info("purged finished jobs", metadata: ["count": "\(purged)"]) }
    }
    return result
  }

  public func run() async throws {
    await runPeriodically(every: interval, clock: clock, logger: logger, what: "lease reaper pass", finalTick: false) {
      // A pass is safe to stop anywhere and runs again a second later: with the store down, one
      // waiting out its client's retries must neither hold up shutdown (the pool hears of it only
      // after the reaper stopped) nor the next pass.
      do {
        _ = try await cancelWhenGracefulShutdown { try await StoreDeadline.within(Self.passBound) { try await runOnce() } }
      } catch is CancellationError where Task.isShuttingDownGracefully {
        return
      }
    }
  }

  /// The longest one pass may wait for the store.
  static let passBound: Duration = .seconds(5)
}
