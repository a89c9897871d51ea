import Foundation
import NovaCore
import NovaDatabase
import NovaRedis
import NovaSecurity

/// Where Nova's data lives and which files configure it: what `nova serve` and every CLI command
/// open. Flags win over the environment (`NOVA_DATA_DIR`, `NOVA_QUEUE_URL`, `NOVA_SIGNING_KEY`,
/// `NOVA_POLICY`, `NOVA_THRESHOLDS`, `NOVA_JOBS`), which wins over the data directory's defaults.
public struct NovaSettings: Sendable, Equatable {
  /// The data directory: the SQLite database, the signing key, and default policy and thresholds files.
  public var dataDirectory: String
  /// `redis://…` or `sqlite://PATH`; nil for the database in the data directory.
  public var queueURL: String?
  public var synchronous: NovaDatabase.Synchronous
  /// The Ed25519 key that signs checkpoints and evidence (made on first use).
  public var signingKeyPath: String
  /// The policy rules; nil for the built-in role rules.
  public var policyPath: String?
  /// `thresholds.yaml` (alerting); nil when there is none.
  public var thresholdsPath: String?
  /// `nova-jobs.yaml` (job kinds besides the built-in ones); nil when there is none.
  public var jobsPath: String?

  public init(
    dataDirectory: String, queueURL: String? = nil, synchronous: NovaDatabase.Synchronous = .normal, signingKeyPath: String? = nil,
    policyPath: String? = nil, thresholdsPath: String? = nil, jobsPath: String? = nil
  ) {
    self.jobsPath = jobsPath
    self.dataDirectory = dataDirectory
    self.queueURL = queueURL
    self.synchronous = synchronous
    self.signingKeyPath = signingKeyPath ?? (dataDirectory as NSString).appendingPathComponent(SecurityContext.keyFileName)
    self.policyPath = policyPath
    self.thresholdsPath = thresholdsPath
  }

  /// Settings from flags (nil where not given), the environment and the data directory's files.
  public static func resolve(
    dataDirectory: String?, queueURL: String?, synchronous: String, signingKey: String?, policy: String?, thresholds: String?,
    jobs: String? = nil, environment: [String: String] = ProcessInfo.processInfo.environment
  ) throws -> NovaSettings {
    func given(_ flag: String?, _ variable: String) -> String? { Self.given(flag, variable, environment) }
    guard let mode = NovaDatabase.Synchronous(rawValue: synchronous.uppercased()) else {
      throw NovaError.invalidInput(field: "--synchronous", message: "'\(synchronous)' is not normal or full")
    }
    let directory = given(dataDirectory, "NOVA_DATA_DIR") ?? "./nova-data"
    return NovaSettings(
      dataDirectory: directory, queueURL: given(queueURL, "NOVA_QUEUE_URL"), synchronous: mode,
      signingKeyPath: given(signingKey, "NOVA_SIGNING_KEY"),
      policyPath: file(flag: policy, variable: "NOVA_POLICY", name: "nova-policy.yaml", dataDirectory: directory, environment: environment),
      thresholdsPath: thresholdsPath(flag: thresholds, dataDirectory: directory, environment: environment),
      jobsPath: file(flag: jobs, variable: "NOVA_JOBS", name: "nova-jobs.yaml", dataDirectory: directory, environment: environment))
  }

  /// The thresholds file in effect: the flag, else `NOVA_THRESHOLDS`, else `thresholds.yaml` in
  /// the data directory when it exists.
  public static func thresholdsPath(
    flag: String?, dataDirectory: String, environment: [String: String] = ProcessInfo.processInfo.environment
  ) -> String? {
    file(flag: flag, variable: "NOVA_THRESHOLDS", name: "thresholds.yaml", dataDirectory: dataDirectory, environment: environment)
  }

  /// The flag when given, else the environment variable when set.
  private static func given(_ flag: String?, _ variable: String, _ environment: [String: String]) -> String? {
    if let flag, !flag.isEmpty { return flag }
    if let value = environment[variable], !value.isEmpty { return value }
    return nil
  }

  /// A configuration file: the flag, else the variable, else `name` in the data directory when it exists.
  private static func file(flag: String?, variable: String, name: String, dataDirectory: String, environment: [String: String]) -> String? {
    if let given = given(flag, variable, environment) { return given }
    let path = (dataDirectory as NSString).appendingPathComponent(name)
    return FileManager.default.fileExists(atPath: path) ? path : nil
  }

  /// Where the data is, for log lines (a Redis URL's password hidden).
  public var location: String {
    guard let queueURL else { return dataDirectory }
    guard queueURL.hasPrefix("redis://") || queueURL.hasPrefix("rediss://"), let parsed = try? RedisURL(parsing: queueURL) else { return queueURL }
    return parsed.description
  }
}

/// The data directory: created on first use, checked for writability.
public enum DataDirectory {
  /// Creates `dir` when missing; returns the database path inside it.
  public static func prepare(_ dir: String) throws -> String {
    let manager = FileManager.default
    var isDirectory: ObjCBool = false
    if manager.fileExists(atPath: dir, isDirectory: &isDirectory) {
      guard isDirectory.boolValue else {
        throw NovaError.storage("data directory \(dir) exists but is not a directory")
      }
      // It holds the signing key, the token hashes and the audit log: its owner's only.
      var info = stat()
      if stat(dir, &info) == 0, info.st_mode & 0o077 != 0, chmod(dir, info.st_mode & 0o700) != 0 {
        throw NovaError.storage("data directory \(dir) may be read by others and cannot be made private")
      }
    } else {
      do {
        try manager.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
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
