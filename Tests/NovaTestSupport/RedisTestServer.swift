import Foundation
import Synchronization

/// A real `redis-server` child process on a free loopback port, for tests. Tests that need Redis
/// start one; nothing is skipped when Redis is missing: starting fails with a message that says
/// what to install.
public final class RedisTestServer: Sendable {
  public let port: Int
  public let directory: URL
  public let password: String?
  private let process: Mutex<pid_t>
  private let arguments: [String]

  /// `redis://` URL of this server.
  public var url: String {
    password.map { "redis://:\($0)@127.0.0.1:\(port)" } ?? "redis://127.0.0.1:\(port)"
  }

  /// Starts a server; `appendOnly` turns on AOF with fsync every write (for restart tests).
  public init(appendOnly: Bool = false, password: String? = nil) throws {
    port = try FreePort.find()
    directory = FileManager.default.temporaryDirectory.appendingPathComponent("nova-redis-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    self.password = password
    var arguments = [
      "--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--dir", directory.path,
      "--daemonize", "no", "--logfile", directory.appendingPathComponent("redis.log").path,
      "--appendonly", appendOnly ? "yes" : "no", "--appendfsync", "always",
    ]
    if let password { arguments += ["--requirepass", password] }
    self.arguments = arguments
    process = Mutex(0)
    try start()
  }

  /// The server that most tests share, started on first use and stopped when the tests exit.
  public static let shared: RedisTestServer = {
    do {
      let server = try RedisTestServer()
      sharedPID.withLock { $0 = server.pid }
      atexit {
        let pid = sharedPID.withLock { $0 }
        if pid > 0 { kill(pid, SIGKILL) }
      }
      return server
    } catch {
      fatalError("cannot start redis-server for the tests: \(error)")
    }
  }()

  private static let sharedPID = Mutex<Int32>(0)

  var pid: Int32 { process.withLock { $0 } }

  /// Starts (or restarts) the server and waits until it accepts connections.
  public func start() throws {
    guard let binary = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
      throw TestServerError("redis-server is not installed (Debian: apt-get install redis-server); scripts/test.sh installs it")
    }
    let child = try ChildProcess.spawn(binary, arguments)
    process.withLock { $0 = child }
    let deadline = Date().addingTimeInterval(10)
    while Date() < deadline {
      if FreePort.accepts(port: port) { return }
      usleep(20_000)
    }
    throw TestServerError("redis-server on port \(port) did not start; see \(directory.path)/redis.log")
  }

  /// Stops the server: SIGTERM (Redis flushes its AOF) or SIGKILL.
  public func stop(kill signal: Int32 = SIGTERM) {
    let pid = process.withLock { process -> pid_t in
      defer { process = 0 }
      return process
    }
    guard pid > 0 else { return }
    kill(pid, signal)
    // Reaped here with waitpid: Foundation's own notice of the exit can lag for seconds while
    // the test's threads are busy.
    let deadline = Date().addingTimeInterval(10)
    var status: Int32 = 0
    while Date() < deadline {
      let reaped = waitpid(pid, &status, WNOHANG)
      if reaped == pid || reaped == -1 { return }
      usleep(5_000)
    }
    kill(pid, SIGKILL)
  }

  deinit { stop(kill: SIGKILL) }
}

/// Starts programs with every signal unblocked and at its default action. Foundation's Process
/// passes on the spawning thread's signal mask, and the threads of a Swift test process block
/// most signals, so a server started that way would ignore SIGTERM.
public enum ChildProcess {
  public static func spawn(_ path: String, _ arguments: [String]) throws -> pid_t {
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var empty = sigset_t()
    sigemptyset(&empty)
    posix_spawnattr_setsigmask(&attributes, &empty)
    var defaults = sigset_t()
    sigemptyset(&defaults)
    for signal in [SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGCHLD] { sigaddset(&defaults, signal) }
    posix_spawnattr_setsigdefault(&attributes, &defaults)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
    let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
    defer { for pointer in argv { free(pointer) } }
    var pid: pid_t = 0
    let result = posix_spawn(&pid, path, &actions, &attributes, argv, environ)
    guard result == 0 else { throw TestServerError("cannot start \(path): error \(result)") }
    return pid
  }
}

public struct TestServerError: Error, CustomStringConvertible {
  public var description: String
  public init(_ description: String) { self.description = description }
}

/// Loopback ports for test servers.
public enum FreePort {
  /// A port that was free a moment ago (the kernel picks it).
  public static func find() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw TestServerError("socket() failed") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
    }
    guard bound == 0 else { throw TestServerError("bind() failed") }
    let named = withUnsafeMutablePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    guard named == 0 else { throw TestServerError("getsockname() failed") }
    return Int(UInt16(bigEndian: address.sin_port))
  }

  /// True when something accepts TCP connections on the loopback port.
  public static func accepts(port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = UInt16(port).bigEndian
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    return withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    } == 0
  }
}
