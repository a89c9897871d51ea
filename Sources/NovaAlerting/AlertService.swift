import Foundation
import Logging
import NovaCore
import NovaMonitoring
import ServiceLifecycle

/// Runs the alert engine in `nova serve`: an evaluation whenever KPI samples arrive (and at the
/// evaluation interval) and the outbox sender; `reload()` re-reads `thresholds.yaml` (the
/// server's SIGHUP handler calls it), keeping the last good rules when the file is invalid.
public struct AlertService: Service {
  public let engine: AlertEngine
  public let dispatcher: NotificationDispatcher
  public let journal: OrchestrationJournal?
  /// Where the rules come from, for reloads.
  public let path: String?
  public let logger: Logger

  public init(engine: AlertEngine, dispatcher: NotificationDispatcher, journal: OrchestrationJournal?, path: String?, logger: Logger) {
    self.engine = engine
    self.dispatcher = dispatcher
    self.journal = journal
    self.path = path
    self.logger = logger
  }

  /// Re-reads the thresholds file; an invalid one is refused and journaled, the old rules stay.
  public func reload() async {
    guard let path else { return }
    do {
      let configuration = try AlertingConfiguration.load(path: path)
      await engine.reload(configuration)
      logger.notice("alert rules reloaded", metadata: ["rules": "\(configuration.rules.count)", "path": "\(path)"])
      await note("alerts.reloaded", path, ["rules": .int(Int64(configuration.rules.count))])
    } catch {
      logger.error("alert rules not reloaded; the last good ones stay", metadata: ["error": "\(error)"])
      await note("alerts.reload_failed", path, ["error": .string("\(error)")])
    }
  }

  /// Journals a reload; a journal that cannot be written is logged, never silently skipped.
  private func note(_ kind: String, _ path: String, _ payload: [String: JSONValue]) async {
    await journal?.note(kind: kind, subject: path, payload: .object(payload), actor: "serve", logger: logger)
  }

  public func run() async throws {
    let engine = engine
    let dispatcher = dispatcher
    let logger = logger
    await withTaskGroup(of: Void.self) { group in
      group.addTask { await engine.runEvaluations(logger: logger) }
      group.addTask { await dispatcher.runDeliveries(signal: engine.outboxSignal) }
      try? await gracefulShutdown()
      group.cancelAll()
    }
    // What the last evaluation stored goes out before the process ends, if it can.
    do {
      _ = try await dispatcher.deliverDue()
    } catch {
      logger.error("could not deliver the last notifications at shutdown", metadata: ["error": "\(error)"])
    }
  }
}
