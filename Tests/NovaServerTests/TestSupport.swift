import Dispatch
import Foundation
import HTTPTypes
import Metrics
import NIOCore
import NovaCore
import NovaQueue
import NovaServer
import NovaTestSupport
import Synchronization
import Testing

/// The `nova` executable built beside the tests.
enum NovaBinary {
  static var path: String { novaExecutablePath }
}

/// A `nova` child process whose output is collected in files (read at any time, complete once
/// it exited).
final class NovaProcess: Sendable {
  let child: ChildProcess
  private let outputDirectory: URL

  /// With `niceness`, the process runs at that lower priority (through `nice`): heavy background
  /// tests then leave the CPU to the timing-sensitive ones running beside them.
  init(_ arguments: [String], environment: [String: String] = [:], niceness: Int? = nil) throws {
    outputDirectory = try TemporaryDirectory.make()
    let (program, argv) = niceness.map { ("/usr/bin/nice", ["-n", String($0), NovaBinary.path] + arguments) } ?? (NovaBinary.path, arguments)
    child = try ChildProcess(
      program, argv, environment: environment,
      standardOutput: outputDirectory.appendingPathComponent("stdout").path,
      standardError: outputDirectory.appendingPathComponent("stderr").path)
  }

  var pid: Int32 { child.pid }
  var stdout: String { read("stdout") }
  var stderr: String { read("stderr") }

  private func read(_ name: String) -> String {
    (try? String(contentsOf: outputDirectory.appendingPathComponent(name), encoding: .utf8)) ?? ""
  }

  /// Signals the child while it runs (never a pid that may have been reused).
  func signal(_ signal: Int32) { child.signal(signal) }

  /// Waits for the exit code (128 + N after signal N) without blocking the cooperative pool.
  func waitForExit(timeout: Duration = .seconds(60)) async -> Int32? {
    await child.waitForExit(timeout: timeout)
  }

  /// Runs `nova ARGS` to completion.
  static func run(_ arguments: [String], timeout: Duration = .seconds(60)) async throws -> (code: Int32, stdout: String, stderr: String) {
    let process = try NovaProcess(arguments)
    guard let code = await process.waitForExit(timeout: timeout) else {
      process.signal(SIGKILL)
      throw TestFailure("nova \(arguments.joined(separator: " ")) did not finish")
    }
    return (code, process.stdout, process.stderr)
  }

  /// Waits until `nova serve` says where it listens; its port.
  func listeningPort() async throws -> Int {
    var port = 0
    try await eventually("the server to listen") {
      guard let range = stderr.range(of: "listening on http://127.0.0.1:") else { return false }
      port = Int(stderr[range.upperBound...].prefix { $0.isNumber }) ?? 0
      return port > 0
    }
    return port
  }

  deinit {
    child.signal(SIGKILL)
    try? FileManager.default.removeItem(at: outputDirectory)
  }
}

/// Runs a bash script; its exit code and output (stdout and stderr together).
func shell(_ script: String, timeout: Duration = .seconds(60)) async throws -> (code: Int32, output: String) {
  let dir = try TemporaryDirectory.make()
  let log = dir.appendingPathComponent("out").path
  let child = try ChildProcess("/bin/bash", ["-c", script], standardOutput: log, standardError: log)
  let code = await child.waitForExit(timeout: timeout)
  if code == nil { child.signal(SIGKILL) }
  return (code ?? -1, (try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
}

/// The repository's root (for checked-in files the tests compare with).
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// A JSON object response body.
func json(_ buffer: ByteBuffer) throws -> [String: Any] {
  try #require(try JSONSerialization.jsonObject(with: Data(buffer.readableBytesView)) as? [String: Any])
}

/// The authorization header of a bearer token.
func bearer(_ token: String) -> HTTPFields { [.authorization: "Bearer \(token)"] }

/// Bootstraps swift-metrics with Nova's registry once for the test process, as the executable
/// does, so that in-process servers export what `nova serve` would.
enum TestMetrics {
  private static let once: Void = {
    MetricsSystem.bootstrap(NovaMetrics.factory)
    NovaMetrics.recordBuildInfo()
  }()

  static func bootstrap() { once }
}
