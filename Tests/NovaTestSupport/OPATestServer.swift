import Foundation
import Synchronization

/// The OPA test fixture (the real Go OPA engine behind OPA's REST API, in
/// `Tests/Fixtures/opa/opa_fixture.py`) on a free loopback port, serving `.rego` files written
/// for the test. scripts/test.sh installs the engine into `.build/opa-venv`; without it, starting
/// fails and says so.
public final class OPATestServer: Sendable {
  public let port: Int
  public let directory: URL
  private let delayMilliseconds: Int
  private let process = Mutex<ChildProcess?>(nil)

  /// `http://127.0.0.1:PORT`.
  public var url: String { "http://127.0.0.1:\(port)" }

  /// Starts a server for `policies` (file name → Rego source).
  public init(policies: [String: String], delayMilliseconds: Int = 0) throws {
    directory = FileManager.default.temporaryDirectory.appendingPathComponent("nova-opa-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    self.delayMilliseconds = delayMilliseconds
    port = try FreePort.find()
    try write(policies)
    try start()
  }

  /// The engine's Python, when installed.
  public static var enginePath: String? {
    let python =
      ProcessInfo.processInfo.environment["NOVA_OPA_PYTHON"]
      ?? repository.appendingPathComponent(".build/opa-venv/bin/python").path
    return FileManager.default.isExecutableFile(atPath: python) ? python : nil
  }

  private static var repository: URL {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
  }

  /// Replaces the policy files (a restart or SIGHUP picks them up).
  public func write(_ policies: [String: String]) throws {
    for file in try FileManager.default.contentsOfDirectory(atPath: directory.path) where file.hasSuffix(".rego") {
      try FileManager.default.removeItem(at: directory.appendingPathComponent(file))
    }
    for (name, source) in policies {
      try source.write(to: directory.appendingPathComponent(name), atomically: true, encoding: .utf8)
    }
  }

  /// Starts (or restarts) the server and waits until it answers.
  public func start() throws {
    let python =
      ProcessInfo.processInfo.environment["NOVA_OPA_PYTHON"]
      ?? Self.repository.appendingPathComponent(".build/opa-venv/bin/python").path
    guard FileManager.default.isExecutableFile(atPath: python) else {
      throw TestServerError("the OPA engine is not installed at \(python); run scripts/install-opa-engine.sh .build/opa-venv (scripts/test.sh does)")
    }
    let script = Self.repository.appendingPathComponent("Tests/Fixtures/opa/opa_fixture.py").path
    let log = directory.appendingPathComponent("opa.log").path
    let child = try ChildProcess(
      python, [script, "\(port)", directory.path, "--delay-ms", "\(delayMilliseconds)"], standardOutput: log, standardError: log)
    process.withLock { $0 = child }
    let deadline = Date().addingTimeInterval(20)
    while Date() < deadline {
      if child.exitCode != nil { break }
      // The fixture's own line, printed once it is bound: not another process on the port.
      let written = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
      if written.contains("listening on 127.0.0.1:\(port)"), FreePort.accepts(port: port) { return }
      usleep(20_000)
    }
    let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
    throw TestServerError("the OPA fixture on port \(port) did not start: \(output)")
  }

  /// Stops the server (its port stays reserved for a restart).
  public func stop() {
    guard let child = process.withLock({ $0.take() }) else { return }
    child.signal(SIGTERM)
    if child.waitForExitBlocking(timeout: .seconds(5)) == nil {
      child.signal(SIGKILL)
      _ = child.waitForExitBlocking(timeout: .seconds(5))
    }
  }

  deinit { stop() }
}
