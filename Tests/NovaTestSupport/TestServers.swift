import Foundation
import Testing

/// Which real servers and tools this machine has, for test tiers.
///
/// A plain `swift test` on a laptop runs what it can: a test that needs a server that is not
/// installed is skipped, and the skip names what to install. CI sets `NOVA_REQUIRE_ALL_TESTS=1`,
/// which makes every such test run (and so fail when its server is missing), so a CI machine
/// that lost a package cannot pass by skipping.
public enum TestServers {
  /// True when missing servers must fail tests instead of skipping them.
  public static let requireAll: Bool = {
    let value = ProcessInfo.processInfo.environment["NOVA_REQUIRE_ALL_TESTS"] ?? ""
    return !value.isEmpty && value != "0"
  }()

  /// `name` as found on `PATH`, if it is there and executable.
  public static func executable(_ name: String) -> String? {
    let directories = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":")
    return directories.map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
  }

  private static func available(_ name: String) -> Bool {
    requireAll || executable(name) != nil
  }

  /// `redis-server` can be started (or CI requires it).
  public static let redisAvailable = available("redis-server")
  public static let redisMissing: Comment = "redis-server is not installed (Debian: apt-get install redis-server)"

  /// Alertmanager can be started (or CI requires it).
  public static let alertmanagerAvailable = available("prometheus-alertmanager") || available("alertmanager")
  public static let alertmanagerMissing: Comment = "Alertmanager is not installed (Debian: apt-get install prometheus-alertmanager)"

  /// `promtool` is installed (or CI requires it).
  public static let promtoolAvailable = available("promtool")
  public static let promtoolMissing: Comment = "promtool is not installed (Debian: apt-get install prometheus)"

  /// Headless Chromium is installed (or CI requires it).
  public static let chromiumAvailable = available("chromium") || available("chromium-browser")
  public static let chromiumMissing: Comment = "Chromium is not installed (Debian: apt-get install chromium)"

  /// The OPA engine's Python environment (`scripts/install-opa-engine.sh .build/opa-venv`).
  public static let opaAvailable = requireAll || OPATestServer.enginePath != nil
  public static let opaMissing: Comment = "the OPA engine is not installed; run scripts/install-opa-engine.sh .build/opa-venv"

  /// `sqlite3`, `jq` and `openssl`, the standard tools the audit and evidence tests use.
  public static let standardToolsAvailable = available("sqlite3") && available("jq") && available("openssl")
  public static let standardToolsMissing: Comment = "sqlite3, jq or openssl is not installed (Debian: apt-get install sqlite3 jq openssl)"

  /// Python's jsonschema module.
  public static let jsonSchemaAvailable: Bool = {
    if requireAll { return true }
    guard let python = executable("python3") else { return false }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: python)
    process.arguments = ["-c", "import jsonschema"]
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    do {
      try process.run()
      process.waitUntilExit()
      return process.terminationStatus == 0
    } catch {
      return false
    }
  }()
  public static let jsonSchemaMissing: Comment = "Python's jsonschema is not installed (Debian: apt-get install python3-jsonschema)"
}
