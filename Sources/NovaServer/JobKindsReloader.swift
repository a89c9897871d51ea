import Logging
import NovaCore
import NovaJobKinds
import NovaMonitoring
import NovaQueue

/// Reloads `nova-jobs.yaml` into a running registry (on SIGHUP). A file that does not load keeps
/// the kinds in force; either way the journal says so (`jobs.reloaded`, `jobs.reload_failed`).
public struct JobKindsReloader: Sendable {
  public let registry: LiveJobRegistry
  public let path: String
  public let journal: OrchestrationJournal?
  public let logger: Logger

  public init(registry: LiveJobRegistry, path: String, journal: OrchestrationJournal?, logger: Logger) {
    self.registry = registry
    self.path = path
    self.journal = journal
    self.logger = logger
  }

  /// Reads the file and puts its kinds (on top of the built-in ones) in force; throws, keeping
  /// the last good kinds, when the file cannot be used.
  public func reload() async throws {
    do {
      let fresh = try JobKindsFile.registry(base: BuiltinJobs.registry, path: path)
      registry.replace(with: fresh)
      await journal?.note(
        kind: "jobs.reloaded", subject: path, payload: .object(["kinds": .array(fresh.kinds.map { .string($0) })]), actor: "reload",
        logger: logger)
    } catch {
      await journal?.note(
        kind: "jobs.reload_failed", subject: path, payload: .object(["error": .string(error.description)]), actor: "reload", logger: logger)
      throw error
    }
  }
}
