import Foundation
import NovaAlerting
import NovaCore
import NovaDatabase
import NovaJobKinds
import NovaMonitoring
import NovaPolicy
import NovaQueue
import NovaRedisQueue
import NovaSecurity
import Synchronization

/// Nova's stores and engines, opened once from `NovaSettings` and shared by `nova serve` and
/// every CLI command: the database, the queue (its SQLite tables, or Redis), the audit log,
/// tokens and signing key, KPIs, the journal, alerts, the policy engine and the job actions.
public final class NovaApplication: Sendable {
  public let settings: NovaSettings
  /// The SQLite database every store shares (the queue's own on the default backend).
  public let database: NovaDatabase
  /// The queue backend, every transition audited.
  public let queue: any JobQueue
  public let security: SecurityContext
  public let kpis: KPIStore
  public let journal: OrchestrationJournal
  public let alertStore: AlertStore
  /// The handlers this process knows (for validating submissions and for its workers).
  public let registry: JobRegistry
  /// Why the job kinds file could not be used (the registry then holds the built-in kinds
  /// only). Commands that run or submit jobs refuse to start with it; the others (listing jobs,
  /// reading the journal) work, so that a bad file can be looked into.
  public let jobKindsError: NovaError?
  private let policyEngine = Mutex<PolicyEngine?>(nil)

  /// Opens everything `settings` names; a Redis queue is pinged first, so that one that cannot
  /// be reached is reported at once, by name.
  public static func open(_ settings: NovaSettings, registry: JobRegistry? = nil) async throws -> NovaApplication {
    var jobKindsError: NovaError?
    var loaded = registry ?? BuiltinJobs.registry
    if registry == nil {
      do {
        loaded = try jobRegistry(settings)
      } catch {
        jobKindsError = error
      }
    }
    let database: NovaDatabase
    let queue: any JobQueue
    if let url = settings.queueURL, url.hasPrefix("sqlite://") {
      let opened = try await QueueURL.open(url, synchronous: settings.synchronous, journal: AuditJournal())
      guard let sqlite = opened as? SQLiteJobQueue else { throw NovaError.storage("\(url) did not open a SQLite queue") }
      database = sqlite.database
      queue = sqlite
    } else {
      let path = try DataDirectory.prepare(settings.dataDirectory)
      database = try NovaDatabase(configuration: .init(path: path, synchronous: settings.synchronous))
      if let url = settings.queueURL {
        queue = try await QueueURL.open(url, synchronous: settings.synchronous, journal: AuditJournal())
      } else {
        queue = try SQLiteJobQueue(database: database, journal: AuditJournal())
      }
    }
    return NovaApplication(
      settings: settings, database: database, queue: queue,
      security: try SecurityContext(database: database, keyPath: settings.signingKeyPath), kpis: try KPIStore(database: database),
      journal: try OrchestrationJournal(database: database), alertStore: try AlertStore(database: database), registry: loaded,
      jobKindsError: jobKindsError)
  }

  private init(
    settings: NovaSettings, database: NovaDatabase, queue: any JobQueue, security: SecurityContext, kpis: KPIStore,
    journal: OrchestrationJournal, alertStore: AlertStore, registry: JobRegistry, jobKindsError: NovaError?
  ) {
    self.settings = settings
    self.database = database
    self.queue = queue
    self.security = security
    self.kpis = kpis
    self.journal = journal
    self.alertStore = alertStore
    self.registry = registry
    self.jobKindsError = jobKindsError
  }

  /// The store of transition records to import into the audit log (a Redis queue), if any.
  public var transitionSource: (any TransitionSource)? { queue as? any TransitionSource }

  /// The queue, as the lister of its jobs that audit coverage needs.
  public var jobStates: any JobStateListing { jobStateListing(of: queue) }

  /// The policy engine, loaded on first use from `settings.policyPath` (or the built-in role
  /// rules), recording every decision in the audit log.
  public func policy() throws -> PolicyEngine {
    if let loaded = policyEngine.withLock({ $0 }) { return loaded }
    let engine: PolicyEngine
    do {
      engine = try PolicyEngine(path: settings.policyPath, recorder: AuditDecisionRecorder(audit: security.audit))
    } catch {
      throw NovaError.invalidInput(field: "--policy", message: error.description)
    }
    return policyEngine.withLock { current in
      if let current { return current }
      current = engine
      return engine
    }
  }

  /// The job actions, decided by the policy for each caller.
  public func jobs() throws -> JobActions {
    var actions = JobActions(queue: queue, registry: registry, policy: try policy())
    actions.journal = journal
    return actions
  }

  /// Throws `forbidden` unless the policy permits `caller` (the local user by default) to take
  /// `action` on `resource`; the decision is audited.
  public func authorize(_ action: String, _ resource: PolicyResource, caller: Caller = .localUser) async throws {
    try await jobs().authorize(caller, action, resource)
  }

  /// Moves the transition records a Redis queue holds into the audit log, so that what a
  /// command reads or signs includes every transition so far (nothing to do on SQLite).
  public func importTransitions() async throws {
    if let source = transitionSource { try await security.audit.importAllTransitions(from: source) }
  }

  /// Closes the queue's connections (Redis).
  public func close() {
    (queue as? RedisJobQueue)?.close()
  }
}

extension NovaApplication {
  /// The built-in kinds and those of the settings' `nova-jobs.yaml`; a file that cannot be used
  /// is refused (exit 2) with its file, line and column.
  public static func jobRegistry(_ settings: NovaSettings) throws(NovaError) -> JobRegistry {
    do {
      return try JobKindsFile.registry(base: BuiltinJobs.registry, path: settings.jobsPath)
    } catch {
      throw NovaError.invalidInput(field: "--jobs", message: error.description)
    }
  }
}
