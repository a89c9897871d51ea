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
      await note("jobs.reloaded", ["kinds": .array(fresh.kinds.map { .string($0) })])
    } catch {
      await note("jobs.reload_failed", ["error": .string(error.description)])
      throw error
    }
  }

  /// A journal that cannot be written is logged, never silently skipped.
  private func note(_ kind: String, _ payload: [String: JSONValue]) async {
    do {
      try await journal?.append(kind: kind, subject: path, payload: .object(payload), actor: "reload")
    } catch {
      logger.error("could not journal \(kind)", metadata: ["error": "\(error)"])
    }
  }
}
