import Foundation
import Synchronization

/// A real `redis-server` (the one on `PATH`) as a child process on a free loopback port, for
/// tests. Tests that need it carry `.enabled(if: TestServers.redisAvailable, …)`, so they are
/// skipped, saying why, where it is not installed; starting one anyway fails with a message that
/// says what to install.
public final class RedisTestServer: Sendable {
  public let port: Int
  public let directory: URL
  public let password: String?
  /// The CA that signed the server's certificate, when it speaks TLS only.
  public let caFile: String?
  private let process: Mutex<ChildProcess?>
  private let arguments: [String]

  /// `redis://` URL of this server (`rediss://`, trusting its CA, when it speaks TLS).
  public var url: String {
    if let caFile { return "rediss://127.0.0.1:\(port)?ca_file=\(caFile)" }
    return password.map { "redis://:\($0)@127.0.0.1:\(port)" } ?? "redis://127.0.0.1:\(port)"
  }

  /// Starts a server; `appendOnly` turns on AOF with fsync every write (for restart tests). A
  /// port that another process takes between being found free and being bound is given up for
  /// another (outgoing connections draw from the same range).
  public init(appendOnly: Bool = false, password: String? = nil, tls: Bool = false) throws {
    directory = FileManager.default.temporaryDirectory.appendingPathComponent("nova-redis-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    self.password = password
    caFile = tls ? try Self.makeCertificates(in: directory) : nil
    var attempt = 0
    while true {
      attempt += 1
      let candidate = try FreePort.find()
      var arguments = [
        "--port", "\(candidate)", "--bind", "127.0.0.1", "--save", "", "--dir", directory.path,
        "--daemonize", "no", "--logfile", directory.appendingPathComponent("redis.log").path,
        "--appendonly", appendOnly ? "yes" : "no", "--appendfsync", "always",
      ]
      if let password { arguments += ["--requirepass", password] }
      if tls {
        // TLS only: the plain port is off.
        arguments[1] = "0"
        arguments += [
          "--tls-port", "\(candidate)", "--tls-cert-file", directory.appendingPathComponent("server.crt").path,
          "--tls-key-file", directory.appendingPathComponent("server.key").path, "--tls-ca-cert-file",
          directory.appendingPathComponent("ca.crt").path, "--tls-auth-clients", "no",
        ]
      }
      do {
        let child = try Self.launch(arguments, port: candidate, directory: directory)
        port = candidate
        self.arguments = arguments
        process = Mutex(child)
        return
      } catch {
        if attempt >= 5 { throw error }
      }
    }
  }

  /// A CA and a server certificate for 127.0.0.1 signed by it (openssl); the CA's path.
  private static func makeCertificates(in directory: URL) throws -> String {
    let script = """
      set -e
      openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj "/CN=Nova Test CA"
      openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=127.0.0.1"
      printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > san.ext
      openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile san.ext
      """
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/sh")
    process.arguments = ["-c", script]
    process.currentDirectoryURL = directory
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    try process.run()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else { throw TestServerError("openssl could not make test certificates (install openssl)") }
    return directory.appendingPathComponent("ca.crt").path
  }

  /// The server that most tests share, started on first use and killed when the tests exit.
  public static let shared: RedisTestServer = {
    do {
      return try RedisTestServer()
    } catch {
      fatalError("cannot start redis-server for the tests: \(error)")
    }
  }()

  /// Restarts the server on its port and waits until it accepts connections.
  public func start() throws {
    let child = try Self.launch(arguments, port: port, directory: directory)
    process.withLock { $0 = child }
  }

  /// Starts redis-server and waits until it accepts connections; fails at once when it exits
  /// (a port taken meanwhile), rather than mistaking another listener for it.
  private static func launch(_ arguments: [String], port: Int, directory: URL) throws -> ChildProcess {
    guard let binary = TestServers.executable("redis-server") else {
      throw TestServerError("redis-server is not installed (Debian: apt-get install redis-server); scripts/test.sh installs it")
    }
    let log = directory.appendingPathComponent("redis.log")
    let before = (try? Data(contentsOf: log).count) ?? 0
    let child = try ChildProcess(binary, arguments)
    let deadline = Date().addingTimeInterval(10)
    while Date() < deadline {
      if child.exitCode != nil { break }
      // Our server's own log says it listens: something else on the port (another test's
      // server that drew the same free port) must not pass for it.
      let written = (try? Data(contentsOf: log)) ?? Data()
      if written.count > before, String(decoding: written.dropFirst(before), as: UTF8.self).contains("Ready to accept connections"),
        FreePort.accepts(port: port)
      {
        return child
      }
      usleep(20_000)
    }
    child.signal(SIGKILL)
    throw TestServerError("redis-server on port \(port) did not start; see \(directory.path)/redis.log")
  }

  /// Stops the server: SIGTERM (Redis flushes its AOF) or SIGKILL.
  public func stop(kill signal: Int32 = SIGTERM) {
    guard let child = process.withLock({ $0.take() }) else { return }
    child.signal(signal)
    if child.waitForExitBlocking(timeout: .seconds(10)) == nil {
      child.signal(SIGKILL)
      _ = child.waitForExitBlocking(timeout: .seconds(5))
    }
  }

  /// Sends `signal` to the running server (SIGSTOP and SIGCONT freeze and thaw it).
  public func signal(_ signal: Int32) {
    process.withLock { $0?.signal(signal) }
  }

  deinit { stop(kill: SIGKILL) }
}

/// A child program that this process alone reaps, with `waitpid` polling.
///
/// Not Foundation's `Process`: it learns of a child's exit from SIGCHLD, and the threads of a
/// Swift test process block that signal, so its `isRunning` and `waitUntilExit` could lag for
/// seconds or wait forever. It also passes on the spawning thread's signal mask, so a child would
/// ignore SIGTERM; here every signal starts unblocked and at its default action.
public final class ChildProcess: Sendable {
  public let pid: pid_t
  /// The wait status once reaped; until then, `kill` on `pid` cannot reach a reused pid.
  private let reaped = Mutex<Int32?>(nil)

  /// Starts `path` with `arguments`; standard input is /dev/null, output goes to the given files.
  public init(
    _ path: String, _ arguments: [String], environment: [String: String]? = nil,
    standardOutput: String = "/dev/null", standardError: String = "/dev/null"
  ) throws {
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
    posix_spawn_file_actions_addopen(&actions, 1, standardOutput, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    if standardError == standardOutput {
      // One open file (one offset), so the two streams interleave instead of overwriting.
      posix_spawn_file_actions_adddup2(&actions, 1, 2)
    } else {
      posix_spawn_file_actions_addopen(&actions, 2, standardError, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    }
    let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
    defer { for pointer in argv { free(pointer) } }
    let variables = environment.map { ProcessInfo.processInfo.environment.merging($0) { $1 } } ?? ProcessInfo.processInfo.environment
    let envp: [UnsafeMutablePointer<CChar>?] = variables.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { for pointer in envp { free(pointer) } }
    var pid: pid_t = 0
    let result = posix_spawn(&pid, path, &actions, &attributes, argv, envp)
    guard result == 0 else { throw TestServerError("cannot start \(path): error \(result)") }
    self.pid = pid
    ChildRegistry.add(self)
  }

  /// The exit code once the child has exited (128 + N after signal N), nil while it runs.
  public var exitCode: Int32? {
    reaped.withLock { status -> Int32? in
      if status == nil {
        var raw: Int32 = 0
        let result = waitpid(pid, &raw, WNOHANG)
        if result == pid { status = raw } else if result == -1 { status = -1 }
      }
      guard let status else { return nil }
      if status == -1 { return -1 }
      let signal = status & 0x7f
      return signal == 0 ? (status >> 8) & 0xff : 128 + signal
    }
  }

  /// Sends `signal` unless the child was already reaped (its pid may belong to anyone now).
  public func signal(_ signal: Int32) {
    reaped.withLock { status in
      if status == nil { kill(pid, signal) }
    }
  }

  /// Waits for the exit without blocking the cooperative thread pool; nil after `timeout`.
  public func waitForExit(timeout: Duration = .seconds(60)) async -> Int32? {
    let deadline = ContinuousClock.now.advanced(by: timeout)
    while true {
      if let code = exitCode { return code }
      if ContinuousClock.now > deadline { return nil }
      try? await Task.sleep(for: .milliseconds(10))
    }
  }

  /// Waits for the exit, blocking this thread (for synchronous teardown); nil after `timeout`.
  public func waitForExitBlocking(timeout: Duration) -> Int32? {
    let deadline = ContinuousClock.now.advanced(by: timeout)
    while true {
      if let code = exitCode { return code }
      if ContinuousClock.now > deadline { return nil }
      usleep(5_000)
    }
  }
}

/// Every child the tests started: killed when the test process exits, so that a failed or
/// interrupted test never leaves a worker behind to take jobs from a later test's server.
enum ChildRegistry {
  private static let children = Mutex<[ChildProcess]>([])
  private static let installed: Void = {
    atexit {
      for child in ChildRegistry.children.withLock({ $0 }) where child.exitCode == nil {
        child.signal(SIGKILL)
      }
    }
  }()

  static func add(_ child: ChildProcess) {
    _ = installed
    children.withLock { list in
      list.removeAll { $0.exitCode != nil }
      list.append(child)
    }
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
