import Logging
import ServiceLifecycle
import UnixSignals

/// The one SIGHUP handler of `nova serve`: each signal runs every reload in order (the policy
/// file, then `thresholds.yaml`). A file that does not load keeps the last good one, and the
/// reload says so (in the audit log or the journal) and in the log.
public struct ReloadOnHangup: Service {
  /// What to reload, by name, in order.
  let reloads: [(name: String, reload: @Sendable () async throws -> Void)]
  let logger: Logger

  public init(reloads: [(name: String, reload: @Sendable () async throws -> Void)], logger: Logger) {
    self.reloads = reloads
    self.logger = logger
  }

  public func run() async throws {
    let reloads = reloads
    let logger = logger
    let signals = await UnixSignalsSequence(trapping: .sighup)
    logger.info("SIGHUP reloads: \(reloads.map(\.name).joined(separator: ", "))")
    await withTaskGroup(of: Void.self) { group in
      group.addTask {
        for await _ in signals {
          for (name, reload) in reloads {
            do {
              try await reload()
              logger.notice("\(name) reloaded on SIGHUP")
            } catch {
              logger.error("\(name) reload failed; the last good one stays", metadata: ["error": "\(error)"])
            }
          }
        }
      }
      try? await gracefulShutdown()
      group.cancelAll()
    }
  }
}
