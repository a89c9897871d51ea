import Dispatch
import Foundation
import Synchronization
import NovaCore
import NovaQueue
import Testing

enum TemporaryDirectory {
  static func make() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("nova-test-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
  }
}

/// The `nova` executable built beside the tests.
enum NovaBinary {
  static var path: String {
    if let override = ProcessInfo.processInfo.environment["NOVA_BIN"] { return override }
    let beside = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("nova")
    if FileManager.default.isExecutableFile(atPath: beside.path) { return beside.path }
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    return root.appendingPathComponent(".build/debug/nova").path
  }
}

/// A `nova` child process.
final class NovaProcess: @unchecked Sendable {
  // Safe: `process` and the pipes are set up in init and only read afterwards; Foundation's
  // Process is thread-safe for terminate/waitUntilExit, and output is collected through locks.
  let process = Process()
  private let stdoutPipe = Pipe()
  private let stderrPipe = Pipe()
  private let output = NSLock()
  private var stdoutData = Data()
  private var stderrData = Data()

  init(_ arguments: [String], environment: [String: String] = [:]) throws {
    process.executableURL = URL(fileURLWithPath: NovaBinary.path)
    process.arguments = arguments
    var env = ProcessInfo.processInfo.environment
    env.merge(environment) { $1 }
    process.environment = env
    process.standardOutput = stdoutPipe
    process.standardError = stderrPipe
    process.standardInput = FileHandle.nullDevice
    stdoutPipe.fileHandleForReading.readabilityHandler = { [weak self] handle in
      let chunk = handle.availableData
      guard let self else { return }
      self.output.lock()
      self.stdoutData.append(chunk)
      self.output.unlock()
    }
    stderrPipe.fileHandleForReading.readabilityHandler = { [weak self] handle in
      let chunk = handle.availableData
      guard let self else { return }
      self.output.lock()
      self.stderrData.append(chunk)
      self.output.unlock()
    }
    try process.run()
    ChildRegistry.add(process.processIdentifier)
  }

  var stdout: String {
    output.lock()
    defer { output.unlock() }
    return String(decoding: stdoutData, as: UTF8.self)
  }

  var stderr: String {
    output.lock()
    defer { output.unlock() }
    return String(decoding: stderrData, as: UTF8.self)
  }

  /// Signals the child while it runs (never a pid that may have been reused).
  func signal(_ signal: Int32) {
    if process.isRunning { kill(process.processIdentifier, signal) }
  }

  /// Waits for exit without blocking the cooperative thread pool.
  func waitForExit(timeout: Duration = .seconds(60)) async -> Int32? {
    let deadline = ContinuousClock.now.advanced(by: timeout)
    while process.isRunning {
      if ContinuousClock.now > deadline { return nil }
      try? await Task.sleep(for: .milliseconds(20))
    }
    try? await Task.sleep(for: .milliseconds(50))  // let the pipes drain
    return process.terminationStatus
  }

  /// Runs `nova ARGS` to completion.
  static func run(_ arguments: [String], timeout: Duration = .seconds(60)) async throws -> (code: Int32, stdout: String, stderr: String) {
    let child = try NovaProcess(arguments)
    guard let code = await child.waitForExit(timeout: timeout) else {
      child.signal(SIGKILL)
      throw TestFailure("nova \(arguments.joined(separator: " ")) did not finish")
    }
    return (code, child.stdout, child.stderr)
  }
}

/// Every `nova` child the tests started: killed when the test process exits, so that a failed
/// or interrupted test never leaves a worker behind to take jobs from a later test's server.
enum ChildRegistry {
  private static let pids = Mutex<[Int32]>([])
  private static let installed: Void = {
    atexit {
      // Only children still running (waitpid answers 0): a reaped pid may belong to anyone now.
      var status: Int32 = 0
      for pid in ChildRegistry.pids.withLock({ $0 }) where waitpid(pid, &status, WNOHANG) == 0 {
        kill(pid, SIGKILL)
      }
    }
  }()

  static func add(_ pid: Int32) {
    _ = installed
    pids.withLock { $0.append(pid) }
  }
}

struct TestFailure: Error, CustomStringConvertible {
  var description: String
  init(_ description: String) { self.description = description }
}

/// Waits until `condition` holds, polling; fails the test after `timeout`.
func eventually(_ what: String, timeout: Duration = .seconds(30), _ condition: () async throws -> Bool) async throws {
  let deadline = ContinuousClock.now.advanced(by: timeout)
  while ContinuousClock.now < deadline {
    if try await condition() { return }
    try await Task.sleep(for: .milliseconds(25))
  }
  Issue.record("timed out waiting for \(what)")
  throw TestFailure("timed out waiting for \(what)")
}
