import Foundation
import NovaCore
import NovaQueue
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// Runs a `type: command` job: the program (no shell) under its attempt's supervisor
/// (`AttemptSupervision`), the payload on its standard input, `NOVA_JOB_*` in its environment,
/// its output bounded, as the kind's `user` where it names one. Timeout, cancellation and
/// shutdown send SIGTERM to every process of the attempt, then SIGKILL after `kill_grace`;
/// whatever the program left running when it ends goes the same way, so nothing outlives the
/// attempt, and the run returns only once all of it is reaped.
public struct CommandJobRunner: Sendable {
  public let name: String
  public let kind: CommandKind
  public let timeout: Duration
  /// The worker's environment (what `env_pass`, `PATH`, `HOME` and `LANG` are read from).
  public let environment: [String: String]

  /// How the attempt's processes are contained.
  public let supervision: AttemptSupervision

  public init(
    name: String, kind: CommandKind, timeout: Duration, environment: [String: String] = ProcessInfo.processInfo.environment,
    supervision: AttemptSupervision = .detected
  ) {
    self.name = name
    self.kind = kind
    self.timeout = timeout
    self.environment = environment
    self.supervision = supervision
  }

  /// How long a stopped attempt may take to end: the kill grace, then the reaping.
  public var stopGrace: Duration { kind.killGrace + .seconds(10) }

  /// How much of stderr goes into the job's `last_error`.
  static let errorTailBytes = 4096

  /// How a run ended.
  public enum Termination: Sendable, Equatable {
    case exited(Int32)
    case signaled(Int32)
  }

  /// What one run produced.
  public struct Outcome: Sendable {
    public var status: Termination
    public var stdout: BoundedOutput
    public var stderr: BoundedOutput
  }

  /// Runs the job and maps its end to the pool's outcomes: the result on exit 0, a
  /// `NonRetryableJobError` for `dead_exit_codes`, a retryable error otherwise.
  public func handle(payload: Data, context: JobContext) async throws -> Data? {
    let outcome = try await run(payload: payload, context: context)
    switch outcome.status {
    case .exited(0):
      return Self.result(from: outcome.stdout)
    case .exited(let code):
      let message = "exit code \(code)\(kind.retryExitCodes.contains(code) ? " (temporary failure)" : "")\(Self.stderrSuffix(outcome.stderr))"
      if kind.deadExitCodes.contains(code) { throw NonRetryableJobError(message) }
      throw CommandFailure(message: message)
    case .signaled(let signal):
      throw CommandFailure(message: "killed by signal \(signal)\(Self.stderrSuffix(outcome.stderr))")
    }
  }

  /// Writing to a program that exited without reading its input must fail the write, not kill
  /// the worker (`ChildProgram` writes with plain `write`; a worker on SQLite may never open
  /// the socket after which NIO ignores SIGPIPE).
  private static let sigpipeIgnored: Bool = {
    signal(SIGPIPE, SIG_IGN)
    return true
  }()

  /// Runs the program once and returns how it ended and what it wrote.
  public func run(payload: Data, context: JobContext) async throws -> Outcome {
    _ = Self.sigpipeIgnored
    let program = try resolve(kind.command[0])
    let account = try resolveAccount()
    var executable = program
    var arguments = Array(kind.command.dropFirst())
    var cgroup: String?
    // On cancellation (timeout, a cancelled job, shutdown) the program's process group gets
    // SIGTERM, then SIGKILL after the grace.
    var stopGrace = kind.killGrace
    if let supervisor = supervision.supervisor {
      // The supervisor passes the SIGTERM to every process of the attempt and SIGKILLs them after
      // the grace; it is killed itself only if it has not exited 5 s later.
      stopGrace = kind.killGrace + .seconds(5)
      var options = supervision.prefix + ["--grace-ms", String(Int(kind.killGrace.seconds * 1000))]
      if let root = supervision.cgroupRoot, let folder = AttemptCgroups.make(in: root, job: context.id, attempt: context.attempt) {
        cgroup = folder
        options += ["--cgroup", folder]
        if let placement = context.placement { AttemptCgroups.limit(folder, cpus: placement.cpus, memoryMiB: placement.memory_mib) }
      }
      if let account {
        options += ["--uid", String(account.uid), "--gid", String(account.gid), "--groups", account.groups.map(String.init).joined(separator: ",")]
      }
      if let files = ProcessHardening.originalOpenFileLimit { options += ["--nofile", String(files)] }
      executable = supervisor
      arguments = options + ["--", program] + arguments
    } else if FileManager.default.isExecutableFile(atPath: Self.setpriv) {
      // The program dies with the worker: setpriv sets its parent-death signal before exec (and
      // switches to the kind's account first, where it names one).
      var options = ["--pdeathsig", "KILL"]
      if let account {
        options += ["--reuid", String(account.uid), "--regid", String(account.gid)]
        options += account.groups.isEmpty ? ["--clear-groups"] : ["--groups", account.groups.map(String.init).joined(separator: ",")]
      }
      executable = Self.setpriv
      arguments = options + ["--", program] + arguments
    } else if account != nil {
      throw NonRetryableJobError("kind '\(name)': running as another account needs the attempt supervisor or \(Self.setpriv)")
    }
    // Whatever the supervisor could not reap (it was killed itself) goes with the cgroup.
    defer { if let cgroup { AttemptCgroups.empty(cgroup, within: .seconds(5)) } }
    let limit = kind.maxOutputBytes
    let log = context.logStore.map { AttemptLog(store: $0, context: context) }
    let flusher = log.map { log in Task { await log.flushPeriodically() } }
    defer { flusher?.cancel() }
    do {
      let (termination, output) = try await ChildProgram.run(
        executable, arguments: arguments, environment: childEnvironment(context, home: account?.home), workingDirectory: kind.cwd,
        input: Array(payload), stopGrace: stopGrace
      ) { execution in
        async let stdout = BoundedOutput.collect(execution.standardOutput, limit: limit, stream: .stdout, log: log)
        async let stderr = BoundedOutput.collect(execution.standardError, limit: limit, stream: .stderr, log: log)
        return await (stdout, stderr, execution.pid)
      }
      let (stdout, stderr, pid) = output
      // Without a supervisor, whatever of its group outlived the program (a child it forked)
      // goes with it. (The supervisor reaps everything itself; its pid, reaped, may already name
      // another process's group.)
      if supervision.supervisor == nil { _ = kill(-pid, SIGKILL) }
      flusher?.cancel()
      await log?.finish(stdout: stdout, stderr: stderr, limit: limit)
      let status: Termination
      switch termination {
      case .exited(let code): status = .exited(code)
      case .signaled(let signal): status = .signaled(signal)
      }
      return Outcome(status: status, stdout: stdout, stderr: stderr)
    } catch let error as ChildProgram.SpawnError where [ENOENT, EACCES, ENOTDIR, ENOEXEC].contains(error.code) {
      // The kind's setup is wrong: no retry will fix it.
      throw NonRetryableJobError("kind '\(name)': could not start \(kind.command[0]): \(error)")
    } catch let error as ChildProgram.SpawnError {
      // Out of processes or descriptors: retried with backoff.
      throw CommandFailure(message: "kind '\(name)': running \(kind.command[0]) failed: \(error)")
    } catch {
      // Stopped (timeout, cancellation, shutdown): what it wrote so far is still kept, by a write
      // outside the cancelled task.
      if let log { await Task { await log.flush() }.value }
      throw error
    }
  }

  static let setpriv = "/usr/bin/setpriv"

  /// The account a kind's `user` and `group` name, resolved when a job runs (an account made
  /// after the kinds file was loaded is found).
  struct Account: Equatable {
    var uid: UInt32
    var gid: UInt32
    var groups: [UInt32]
    /// The account's home folder, the program's `HOME`.
    var home: String? = nil
  }

  func resolveAccount() throws -> Account? {
    guard kind.user != nil || kind.group != nil else { return nil }
    var uid = getuid()
    var gid = getgid()
    var userName: String?
    var home: String?
    if let user = kind.user {
      guard let entry = Self.passwordEntry(user) else {
        throw NonRetryableJobError("kind '\(name)': user '\(user)' does not exist on this host")
      }
      (uid, gid, userName, home) = entry
    }
    if let group = kind.group {
      guard let id = Self.groupID(group) else { throw NonRetryableJobError("kind '\(name)': group '\(group)' does not exist on this host") }
      gid = id
    }
    // The worker's own account: nothing to switch (a worker that is not root could not).
    if uid == getuid(), gid == getgid() { return nil }
    // The user's own supplementary groups, not the worker's.
    var groups: [UInt32] = [gid]
    if let userName {
      var count: Int32 = 64
      var list = [UInt32](repeating: 0, count: 64)
      if getgrouplist(userName, gid, &list, &count) >= 0 { groups = Array(list.prefix(Int(count))) }
    }
    return Account(uid: uid, gid: gid, groups: groups, home: home)
  }

  /// The account's uid, primary gid, name and home folder.
  static func passwordEntry(_ user: String) -> (uid: UInt32, gid: UInt32, name: String?, home: String?)? {
    var entry = passwd()
    var result: UnsafeMutablePointer<passwd>?
    var buffer = [CChar](repeating: 0, count: 16384)
    if getpwnam_r(user, &entry, &buffer, buffer.count, &result) == 0, result != nil {
      return (entry.pw_uid, entry.pw_gid, user, String(cString: entry.pw_dir))
    }
    guard let uid = UInt32(user) else { return nil }
    if getpwuid_r(uid, &entry, &buffer, buffer.count, &result) == 0, result != nil {
      return (entry.pw_uid, entry.pw_gid, String(cString: entry.pw_name), String(cString: entry.pw_dir))
    }
    // A bare number with no account: its own group, no home.
    return (uid, uid, nil, nil)
  }

  static func groupID(_ group: String) -> UInt32? {
    var entry = Glibc.group()
    var result: UnsafeMutablePointer<Glibc.group>?
    var buffer = [CChar](repeating: 0, count: 16384)
    if getgrnam_r(group, &entry, &buffer, buffer.count, &result) == 0, result != nil { return entry.gr_gid }
    return UInt32(group)
  }

  /// The program's absolute path: as given when it holds a `/`, else found in the `PATH` the
  /// program gets.
  func resolve(_ program: String) throws -> String {
    if program.contains("/") {
      guard FileManager.default.isExecutableFile(atPath: program) else {
        throw NonRetryableJobError("kind '\(name)': command \(program) does not exist or is not executable")
      }
      return program
    }
    let path = environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
    for directory in path.split(separator: ":") where directory.hasPrefix("/") {
      let candidate = "\(directory)/\(program)"
      if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    throw NonRetryableJobError("kind '\(name)': command '\(program)' was not found in PATH (\(path))")
  }

  /// The program's whole environment: nothing is inherited but `PATH`, `HOME`, `LANG` and the
  /// `env_pass` names; then the kind's fixed `env`, then the job's `NOVA_JOB_*`.
  func childEnvironment(_ context: JobContext, home: String? = nil) -> [String: String] {
    var values: [String: String] = [:]
    for name in ["PATH", "HOME", "LANG"] + kind.envPass { values[name] = environment[name] }
    // A program run as another account gets that account's home, not the worker's.
    if let home { values["HOME"] = home }
    for (name, value) in kind.env { values[name] = value }
    values["NOVA_JOB_ID"] = context.id.rawValue
    values["NOVA_JOB_KIND"] = context.kind
    values["NOVA_JOB_QUEUE"] = context.queue
    values["NOVA_JOB_ATTEMPT"] = String(context.attempt)
    values["NOVA_JOB_MAX_ATTEMPTS"] = String(context.maxAttempts)
    if let key = context.concurrencyKey { values["NOVA_JOB_CONCURRENCY_KEY"] = key }
    values["NOVA_JOB_DEADLINE"] = Date().addingTimeInterval(timeout.seconds).formatted(.iso8601)
    if let placement = context.placement {
      // Exactly its own GPUs (none when it asked for none): CUDA by index, the NVIDIA container
      // runtime by UUID ("void" hides every GPU from it).
      values["CUDA_VISIBLE_DEVICES"] = placement.visibleDevices
      values["NVIDIA_VISIBLE_DEVICES"] = placement.gpus.isEmpty ? "void" : placement.visibleUUIDs
      values["NOVA_JOB_HOST"] = placement.host
      if placement.cpus > 0 { values["NOVA_JOB_CPUS"] = String(placement.cpus) }
      if placement.memory_mib > 0 { values["NOVA_JOB_MEMORY_MIB"] = String(placement.memory_mib) }
    }
    // Inherited by whatever the program forks: how a sweep finds them once this worker is gone.
    values[OrphanSweeper.variable] = OrphanSweeper.identity
    // A name with `=` or a NUL cannot be passed (and is refused when the kinds file loads).
    return values.filter { !$0.key.isEmpty && !$0.key.contains("=") && !$0.key.contains("\0") && !$0.value.contains("\0") }
  }

  /// The result of a successful run: its last stdout line when that is a JSON value, else the
  /// tail of stdout as `{"stdout_tail": "..."}`.
  static func result(from stdout: BoundedOutput) -> Data {
    let text = String(decoding: stdout.tail, as: UTF8.self)
    let lastLine = text.split(separator: "\n", omittingEmptySubsequences: true).last.map(String.init) ?? ""
    // The line as the program wrote it (like a submitted payload, it is stored as sent).
    if (try? JSONValue.parse(Data(lastLine.utf8))) != nil { return Data(lastLine.utf8) }
    let tail = String(text.suffix(Self.errorTailBytes))
    return (try? CanonicalJSON.encode(JSONValue.object(["stdout_tail": .string(tail)]))).map { Data($0) } ?? Data("{}".utf8)
  }

  static func stderrSuffix(_ stderr: BoundedOutput) -> String {
    let text = String(decoding: stderr.tail.suffix(errorTailBytes), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    return text.isEmpty ? "" : "; stderr: \(text)"
  }
}

/// A failed run that is retried with backoff.
public struct CommandFailure: Error, CustomStringConvertible, Sendable {
  public var message: String
  public var description: String { message }
}

/// One output stream of a run, bounded: the first `limit` bytes (ending at the end of a line when
/// one ends in their last `lineWindow` bytes), the last 64 KiB (for the result and error tails),
/// and how much was written in all.
public struct BoundedOutput: Sendable, Equatable {
  public var head: [UInt8] = []
  public var tail: [UInt8] = []
  public var total = 0

  static let tailBytes = 64 << 10
  /// How far back from the limit the head may end early so that its last line is whole.
  static let lineWindow = 4 << 10
  static let newline = UInt8(ascii: "\n")

  /// Whether bytes were dropped.
  public var truncated: Bool { total > head.count }

  /// What the head did not keep: how many bytes are dropped and the last of them (at most 64 KiB),
  /// starting at the beginning of a line unless none begins before the last byte.
  func unkeptTail() -> (dropped: Int, tail: ArraySlice<UInt8>) {
    let unseen = total - head.count
    var kept = tail.suffix(min(tail.count, unseen))
    // Unless the tail follows the head, the byte before it is gone: its first line may be the end
    // of a longer one.
    let atLineStart = kept.count == unseen && (head.last.map { $0 == Self.newline } ?? true)
    if !atLineStart, let end = kept.firstIndex(of: Self.newline), end < kept.endIndex - 1 { kept = kept[(end + 1)...] }
    return (unseen - kept.count, kept)
  }

  static func collect(_ sequence: ChildProgram.Output, limit: Int, stream: JobLogStream, log: AttemptLog?) async -> BoundedOutput {
    var output = BoundedOutput()
    // The head is forwarded as it comes, but for an unended line in the last `lineWindow` bytes of
    // the limit: whether it is kept depends on whether the stream goes past the limit.
    let windowStart = max(0, limit - lineWindow)
    var lineEnd = 0
    var forwarded = 0
    var full = false
    // Reading on even past the limit: a program whose pipe fills would block. (A stopped run
    // ends the sequence early.)
    for await chunk in sequence {
      let wasFull = full
      let passed = chunk.withUnsafeBytes { bytes -> Bool in
        output.total += bytes.count
        output.tail.append(contentsOf: bytes.suffix(tailBytes))
        if output.tail.count > 2 * tailBytes { output.tail.removeFirst(output.tail.count - tailBytes) }
        if wasFull { return true }
        let room = max(0, limit - output.head.count)
        let start = output.head.count
        output.head.append(contentsOf: bytes.prefix(room))
        if let end = output.head[start...].lastIndex(of: Self.newline) { lineEnd = end + 1 }
        guard bytes.count > room else { return false }
        // Past the limit: the head ends with its last whole line when that ends near the limit.
        if lineEnd > 0, lineEnd >= windowStart { output.head.removeLast(output.head.count - lineEnd) }
        return true
      }
      full = passed
      let ready = (full || output.head.count <= windowStart) ? output.head.count : max(windowStart, lineEnd)
      if let log, ready > forwarded { await log.add(stream, Array(output.head[forwarded..<ready])) }
      forwarded = max(forwarded, ready)
    }
    if let log, output.head.count > forwarded { await log.add(stream, Array(output.head[forwarded...])) }
    if output.tail.count > tailBytes { output.tail.removeFirst(output.tail.count - tailBytes) }
    return output
  }
}
