import ArgumentParser
import Foundation
import Logging
import NovaApplication
import NovaCore
import NovaDatabase
import NovaPolicy
import NovaQueue
import NovaRedis
import NovaRedisQueue
import NovaSecurity
import NovaServer

/// Options every command that touches data shares.
struct StoreOptions: ParsableArguments {
  @Option(name: .long, help: ArgumentHelp("Data directory holding the database.", valueName: "dir"))
  var dataDir: String = ProcessInfo.processInfo.environment["NOVA_DATA_DIR"] ?? "./nova-data"

  @Option(name: .long, help: ArgumentHelp("SQLite durability: normal (survives crashes) or full (also power loss).", valueName: "mode"))
  var synchronous: String = "normal"

  @Option(
    name: .long,
    help: ArgumentHelp(
      "Queue backend: redis://[user:password@]host:port/db or sqlite://PATH (default: the SQLite database in --data-dir).", valueName: "url"))
  var queueURL: String?

  @Option(
    name: .long,
    help: ArgumentHelp(
      "Ed25519 key that signs audit checkpoints and evidence (default: audit-signing.key in --data-dir, made on first use).", valueName: "file"))
  var signingKey: String?

  @Option(
    name: .long,
    help: ArgumentHelp(
      "Policy rules (default: nova-policy.yaml in --data-dir when it exists, else the built-in role rules; or NOVA_POLICY).", valueName: "file"))
  var policy: String?

  @Option(
    name: .long,
    help: ArgumentHelp(
      "Job kinds besides the built-in ones (default: nova-jobs.yaml in --data-dir when it exists; or NOVA_JOBS).", valueName: "file"))
  var jobs: String?

  /// The settings these flags and the environment name.
  func settings() throws -> NovaSettings {
    try NovaSettings.resolve(
      dataDirectory: dataDir, queueURL: queueURL, synchronous: synchronous, signingKey: signingKey, policy: policy, thresholds: nil,
      jobs: jobs)
  }

  /// The application over these settings, opened once per process: every store of a command
  /// comes from the one database and queue.
  func open() async throws -> NovaApplication {
    try await OpenedApplication.shared.application(for: try settings())
  }

  /// The policy rules alone (no store, nothing recorded), for the commands that check them.
  func loadPolicy() throws -> PolicyEngine {
    do {
      return try PolicyEngine(path: try settings().policyPath)
    } catch let error as NovaError {
      throw error
    } catch {
      throw NovaError.invalidInput(field: "--policy", message: "\(error)")
    }
  }

  /// Throws `forbidden` unless the policy permits the local user to take `action` on
  /// `resource`; the decision is audited (and one that cannot be fails the command).
  func authorize(_ action: String, _ resource: PolicyResource) async throws {
    try await open().authorize(action, resource)
  }

  /// The queue: the URL's backend, or the SQLite database in the data directory. A Redis queue
  /// is opened alone: a worker on another host has no data directory to touch.
  func openQueue() async throws -> any JobQueue {
    let settings = try settings()
    if let url = settings.queueURL, url.hasPrefix("redis://") || url.hasPrefix("rediss://") {
      return try await QueueURL.open(url, synchronous: settings.synchronous)
    }
    return try await open().queue
  }

  /// Audit log, tokens and signing key.
  func openSecurity() async throws -> SecurityContext { try await open().security }

  /// The security stores, with the transitions a Redis queue holds moved into the audit log
  /// first, so that what a command reads or signs includes every transition so far.
  func openSecurityUpToDate() async throws -> SecurityContext {
    let application = try await open()
    try await application.importTransitions()
    return application.security
  }

  /// `--queue-url`, else `NOVA_QUEUE_URL`; nil for the SQLite database in the data directory.
  var effectiveQueueURL: String? { (try? settings())?.queueURL }

  /// Where the data is, for log lines (passwords hidden).
  var location: String { (try? settings())?.location ?? dataDir }
}

/// The one application a CLI process opens, whatever number of stores its command uses.
actor OpenedApplication {
  static let shared = OpenedApplication()
  private var opened: (settings: NovaSettings, application: NovaApplication)?

  func application(for settings: NovaSettings) async throws -> NovaApplication {
    if let opened, opened.settings == settings { return opened.application }
    let application = try await NovaApplication.open(settings)
    opened = (settings, application)
    return application
  }
}

/// Output options.
struct OutputOptions: ParsableArguments {
  @Flag(name: .long, help: "Print machine-readable JSON.")
  var json = false
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
    LoggingSystem.bootstrap { label in StandardErrorLogHandler(label: label) }
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

/// Checks a numeric flag: a finite number within `range` (durations beyond it would overflow
/// or mean nothing), else the error names the flag, the value and the range.
func checkNumber(_ value: Double, _ flag: String, _ range: ClosedRange<Double>, _ unit: String) throws {
  guard value.isFinite, range.contains(value) else {
    throw ValidationError("\(flag) \(value) is out of range \(range.lowerBound.formatted())...\(range.upperBound.formatted()) \(unit)")
  }
}

/// The checkpoints of `--checkpoint-dir` (none without one); a path that is not a directory is
/// an error, not an empty mirror.
func mirroredCheckpoints(in directory: String?) async throws -> [MirroredCheckpoint] {
  guard let directory else { return [] }
  var isDirectory: ObjCBool = false
  guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
    throw NovaError.invalidInput(field: "--checkpoint-dir", message: "\(directory) is not a directory")
  }
  return try await CheckpointDirectory(path: directory).checkpoints() ?? []
}
