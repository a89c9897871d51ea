import Foundation
import Synchronization
import Testing

/// Fresh folders for tests, under the system's temporary directory.
public enum TemporaryDirectory {
  /// A new, empty folder named `prefix-UUID`.
  public static func make(_ prefix: String = "nova-test") throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
  }
}

/// Thrown by a helper after it recorded an issue, so that the test stops there.
public struct TestFailure: Error, CustomStringConvertible {
  public var description: String
  public init(_ description: String) { self.description = description }
}

/// Waits until `condition` holds, polling; records an issue and throws after `timeout`.
public func eventually(
  _ what: String, timeout: Duration = .seconds(30), poll: Duration = .milliseconds(20),
  _ condition: () async throws -> Bool
) async throws {
  let deadline = ContinuousClock.now.advanced(by: timeout)
  while ContinuousClock.now < deadline {
    if try await condition() { return }
    try await Task.sleep(for: poll)
  }
  Issue.record("timed out waiting for \(what)")
  throw TestFailure("timed out waiting for \(what)")
}

/// A flag that concurrent tasks set and read (a task that finished, a handler that ran).
public final class TestFlag: Sendable {
  private let value = Mutex(false)

  public init() {}

  /// Sets the flag.
  public func set() { value.withLock { $0 = true } }

  /// Whether the flag was set.
  public var isSet: Bool { value.withLock { $0 } }
}

/// Whether process `pid` is alive and not a zombie waiting to be reaped.
public func isProcessAlive(_ pid: Int32) -> Bool {
  guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else {
    return false
  }
  return !stat[stat.index(close, offsetBy: 2)...].hasPrefix("Z")
}

/// The `nova` executable built beside the tests (`NOVA_BIN` overrides it).
public var novaExecutablePath: String {
  if let override = ProcessInfo.processInfo.environment["NOVA_BIN"] { return override }
  let beside = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("nova")
  if FileManager.default.isExecutableFile(atPath: beside.path) { return beside.path }
  let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
  return root.appendingPathComponent(".build/debug/nova").path
}

/// Writes a script in one step, executable, with close-on-exec: a child that another test starts
/// meanwhile must not inherit it open for writing (exec would fail with ETXTBSY).
public func writeExecutable(_ path: String, _ text: String) throws {
  unlink(path)
  let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o755)
  guard fd >= 0 else { throw TestFailure("cannot write \(path)") }
  defer { close(fd) }
  let bytes = Array(text.utf8)
  guard write(fd, bytes, bytes.count) == bytes.count else { throw TestFailure("cannot write \(path)") }
}
