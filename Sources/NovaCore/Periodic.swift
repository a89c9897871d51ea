import Logging
import ServiceLifecycle

/// The one periodic runner of Nova's background services: runs `tick` every `interval` of
/// `clock` until graceful shutdown (logging failures as `what` failed), then once more when
/// `finalTick`, so that work done at shutdown is not lost.
public func runPeriodically(
  every interval: Duration, clock: any NovaClock, logger: Logger, what: String, finalTick: Bool, _ tick: () async throws -> Void
) async {
  while !Task.isShuttingDownGracefully && !Task.isCancelled {
    do {
      try await tick()
    } catch {
      logger.error("\(what) failed", metadata: ["error": "\(error)"])
    }
    try? await cancelWhenGracefulShutdown { try await clock.sleep(for: interval) }
  }
  guard finalTick else { return }
  do {
    try await tick()
  } catch {
    logger.error("final \(what) failed", metadata: ["error": "\(error)"])
  }
}
