import ArgumentParser
import Foundation
import Logging
import NovaCore
import NovaDatabase
import NovaQueue
import NovaRedis
import NovaPolicy
import NovaRedisQueue
import NovaSecurity
import NovaServer

/// Options every command that touches data shares.
struct StoreOptions: ParsableArguments {
  @Option(name: .long, help: ArgumentHelp("Data directory holding the database.", valueName: "dir"))
  var dataDir: String = ProcessInfo.processInfo.environment["NOVA_DATA_DIR"] ?? "./nova-data"

  @Option(name: .long, help: ArgumentHelp("SQLite durability: normal (survives crashes) or full (also power loss).", valueName: "mode"))
  var synchronous: String = "normal"

  @Option(name: .long, help: ArgumentHelp("Queue backend: redis://[user:password@]host:port/db or sqlite://PATH (default: the SQLite database in --data-dir).", valueName: "url"))
  var queueURL: String?

  @Option(name: .long, help: ArgumentHelp("Ed25519 key that signs audit checkpoints and evidence (default: audit-signing.key in --data-dir, made on first use).", valueName: "file"))
  var signingKey: String?

  @Option(name: .long, help: ArgumentHelp("Policy rules (default: nova-policy.yaml in --data-dir when it exists, else the built-in role rules; or NOVA_POLICY).", valueName: "file"))
  var policy: String?

  /// The policy file in effect, or nil for the built-in rules.
  var policyPath: String? {
    if let policy, !policy.isEmpty { return policy }
    if let path = ProcessInfo.processInfo.environment["NOVA_POLICY"], !path.isEmpty { return path }
    let inDataDir = (dataDir as NSString).appendingPathComponent("nova-policy.yaml")
    return FileManager.default.fileExists(atPath: inDataDir) ? inDataDir : nil
  }

  /// The policy engine, recording its decisions in `security`'s audit log.
  func openPolicy(security: SecurityContext?) throws -> PolicyEngine {
    do {
      return try PolicyEngine(path: policyPath, recorder: security.map { AuditDecisionRecorder(audit: $0.audit) })
    } catch {
      throw NovaError.invalidInput(field: "--policy", message: error.description)
    }
  }

  /// Asks the policy engine whether the local user may take `action` on `resource`; throws
  /// `forbidden` when not (and enforced). The decision is audited.
  func authorize(_ action: String, _ resource: PolicyResource, security: SecurityContext? = nil) async throws {
    let opened: SecurityContext
    if let security { opened = security } else { opened = try await openSecurity() }
    let security = opened
    let engine = try openPolicy(security: security)
    let decision = await engine.decide(
      PolicyRequest(subject: PolicySubject(id: AuditContext.actor), action: action, resource: resource))
    if !decision.permits { throw NovaError.forbidden(decision.reason) }
  }

  /// Opens the queue: the URL's backend, or the SQLite database in the data directory (created
  /// on first use).
  func openQueue() async throws -> any JobQueue {
    guard let mode = SQLiteJobQueue.Synchronous(rawValue: synchronous.uppercased()) else {
      throw NovaError.invalidInput(field: "--synchronous", message: "'\(synchronous)' is not normal or full")
    }
    if let url = effectiveQueueURL {
      return try await QueueURL.open(url, synchronous: mode, journal: AuditJournal())
    }
    return try openDatabase(mode)
  }

  /// The queue in the SQLite database in the data directory, with every job transition audited.
  func openDatabase(_ mode: SQLiteJobQueue.Synchronous? = nil) throws -> SQLiteJobQueue {
    let synchronous = mode ?? SQLiteJobQueue.Synchronous(rawValue: self.synchronous.uppercased()) ?? .normal
    let path = try DataDirectory.prepare(dataDir)
    return try SQLiteJobQueue(configuration: .init(path: path, synchronous: synchronous, journal: AuditJournal()))
  }

  /// Audit log, tokens and signing key, in the SQLite database of the queue (`queue`, or the
  /// one `--queue-url sqlite://` names), or else the data directory's.
  func openSecurity(queue: (any JobQueue)? = nil) async throws -> SecurityContext {
    let database: NovaDatabase
    if let sqlite = queue as? SQLiteJobQueue {
      database = sqlite.database
    } else if effectiveQueueURL?.hasPrefix("sqlite://") == true, let sqlite = try await openQueue() as? SQLiteJobQueue {
      database = sqlite.database
    } else {
      database = try openDatabase().database
    }
    let keyPath = signingKey ?? ProcessInfo.processInfo.environment["NOVA_SIGNING_KEY"]
      ?? (dataDir as NSString).appendingPathComponent(SecurityContext.keyFileName)
    return try SecurityContext(database: database, keyPath: keyPath)
  }

  /// The security stores, with the audit records that a Redis queue holds moved in first, so
  /// that what a command reads or signs includes every transition so far.
  func openSecurityUpToDate(queue: (any JobQueue)? = nil) async throws -> SecurityContext {
    let security = try await openSecurity(queue: queue)
    var source = queue as? any TransitionSource
    if queue == nil, effectiveQueueURL != nil { source = try await openQueue() as? any TransitionSource }
    if let source {
      try await security.audit.importAllTransitions(from: source)
    }
    return security
  }

  /// `--queue-url`, else `NOVA_QUEUE_URL`; nil for the SQLite database in the data directory.
  var effectiveQueueURL: String? {
    let url = queueURL ?? ProcessInfo.processInfo.environment["NOVA_QUEUE_URL"]
    return url?.isEmpty == false ? url : nil
  }

  /// Where the data is, for log lines (passwords hidden).
  var location: String { effectiveQueueURL.map { (try? RedisURL(parsing: $0))?.description ?? $0 } ?? dataDir }
}

/// Output options.
struct OutputOptions: ParsableArguments {
  @Flag(name: .long, help: "Print machine-readable JSON.")
  var json = false
}

/// The data directory: created on first use, checked for writability.
enum DataDirectory {
  /// Returns the database path inside `dir`.
  static func prepare(_ dir: String) throws -> String {
    let manager = FileManager.default
    var isDirectory: ObjCBool = false
    if manager.fileExists(atPath: dir, isDirectory: &isDirectory) {
      guard isDirectory.boolValue else {
        throw NovaError.storage("data directory \(dir) exists but is not a directory")
      }
    } else {
      do {
        try manager.createDirectory(atPath: dir, withIntermediateDirectories: true)
      } catch {
        throw NovaError.storage("cannot create data directory \(dir): \((error as NSError).localizedDescription)")
      }
    }
    guard manager.isWritableFile(atPath: dir) else {
      throw NovaError.storage("data directory \(dir) is not writable")
    }
    return (dir as NSString).appendingPathComponent("nova.sqlite")
  }
}

/// Logging to stderr at the level of `NOVA_LOG_LEVEL` (info by default).
enum NovaLogging {
  static func logger(_ label: String) -> Logger {
    LoggingSystem.bootstrapOnce
    var logger = Logger(label: label)
    let level = ProcessInfo.processInfo.environment["NOVA_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:))
    logger.logLevel = level ?? .info
    return logger
  }
}

extension LoggingSystem {
  fileprivate static let bootstrapOnce: Void = {
    LoggingSystem.bootstrap(StreamLogHandler.standardError)
  }()
}

/// Prints an `Encodable` as JSON on stdout.
func printJSON<T: Encodable>(_ value: T, pretty: Bool = true) throws {
  let encoder = JSONEncoder()
  encoder.outputFormatting = pretty ? [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
  FileHandle.standardOutput.write(try encoder.encode(value))
  FileHandle.standardOutput.write(Data("\n".utf8))
}

/// True when stderr is a terminal, so progress lines are worth drawing.
var stderrIsTerminal: Bool { isatty(STDERR_FILENO) != 0 }

/// Parses a comma-separated queue list; empty or `*` means all queues.
func parseQueues(_ text: String) throws -> [String] {
  if text.isEmpty || text == "*" { return [] }
  let names = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
  for name in names { try JobRequest.validateName(name, field: "--queues") }
  return names
}
