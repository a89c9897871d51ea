import Foundation
import Logging
import NovaCore
import NovaQueue
import NovaTestSupport
import Synchronization
import Testing

@testable import NovaJobKinds

/// Issue #21 point 2: nothing an attempt started outlives it, whichever way it ends. Each program
/// here forks a child that leaves the process group with `setsid()`, ignores SIGTERM and clears
/// its environment (it execs Python with an empty one), the three ways a child escaped a process
/// group kill and the sweep of dead workers' programs.
@Suite("Attempt containment", .serialized, .timeLimit(.minutes(5)))
struct AttemptContainmentTests {
  let logger: Logger = {
    var logger = Logger(label: "test")
    logger.logLevel = .critical
    return logger
  }()

  /// The worker's own supervisor (this test process is not `nova`, so it is named), with a cgroup
  /// per attempt where this machine delegates one.
  static let supervision = AttemptSupervision(
    supervisor: URL(fileURLWithPath: novaExecutablePath).deletingLastPathComponent().appendingPathComponent("nova-supervise").path,
    cgroupRoot: AttemptCgroups.root(setting: nil))

  /// The same supervisor run as `nova __supervise` (where `nova-supervise` was not built).
  static let subcommandSupervision = AttemptSupervision(supervisor: novaExecutablePath, cgroupRoot: AttemptCgroups.root(setting: nil))

  /// A program that starts an escaping child, writes both pids, then acts as `mode` says:
  /// `succeed`, `fail`, or `hang` (ignoring SIGTERM, so only SIGKILL after the grace ends it).
  static let program = """
    import json, os, signal, sys, time
    folder, mode = sys.argv[1], sys.argv[2]
    attempt = os.environ.get("NOVA_JOB_ATTEMPT", "1")
    child = os.fork()
    if child == 0:
        os.setsid()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.execve(sys.executable, [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"], {})
    open(os.path.join(folder, "child-" + attempt), "w").write(str(child))
    open(os.path.join(folder, "program-" + attempt), "w").write(str(os.getpid()))
    if mode == "succeed":
        print(json.dumps({"ok": True}))
        sys.exit(0)
    if mode == "fail":
        sys.exit(3)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(600)
    """

  func pid(_ folder: URL, _ name: String) -> Int32 {
    Int32((try? String(contentsOfFile: folder.appendingPathComponent(name).path, encoding: .utf8)) ?? "") ?? 0
  }

  /// A worker pool running one kind, `mode`, with `timeout` and `killGrace`.
  func registry(_ folder: URL, mode: String, timeout: Duration = .seconds(60), killGrace: Duration = .seconds(1)) throws -> JobRegistry {
    let script = folder.appendingPathComponent("agent.py").path
    try Self.program.write(toFile: script, atomically: true, encoding: .utf8)
    let kind = CommandKind(command: ["/usr/bin/python3", script, folder.path, mode], killGrace: killGrace)
    let file = JobKindsFile(kinds: [JobKindDefinition(name: "agent", timeout: timeout, action: .command(kind))])
    var registry = JobRegistry()
    file.register(into: &registry, environment: ["PATH": "/usr/bin:/bin"], supervision: Self.supervision)
    return registry
  }

  /// Runs a pool on a fresh queue while `body` runs, then shuts it down.
  func withPool(
    _ registry: JobRegistry, concurrency: Int = 2, grace: Duration = .seconds(5),
    _ body: (SQLiteJobQueue, WorkerPool) async throws -> Void
  ) async throws {
    let queue = try SQLiteJobQueue(
      configuration: .init(
        path: try TemporaryDirectory.make().appendingPathComponent("q.sqlite").path,
        retryPolicy: RetryPolicy(baseDelay: 0.01, maxDelay: 0.05, jitter: 0)))
    let pool = WorkerPool(
      queue: queue, registry: registry,
      configuration: .init(
        concurrency: concurrency, workerID: "containment", leaseDuration: .seconds(5), pollInterval: .milliseconds(20),
        shutdownGracePeriod: grace),
      logger: logger)
    let run = Task { try await pool.run() }
    do {
      try await body(queue, pool)
    } catch {
      pool.shutdown()
      try? await run.value
      throw error
    }
    pool.shutdown()
    try await run.value
  }

  /// Waits for the attempt's child to have started, then for it to be gone by `bound`.
  func expectGone(_ folder: URL, attempt: Int = 1, within bound: Duration, after end: ContinuousClock.Instant) async throws {
    let child = pid(folder, "child-\(attempt)")
    let program = pid(folder, "program-\(attempt)")
    #expect(child > 0 && program > 0)
    try await eventually("the escaped child \(child) to be gone", timeout: .seconds(30), poll: .milliseconds(10)) {
      !isProcessAlive(child) && !isProcessAlive(program)
    }
    let took = ContinuousClock.now - end
    #expect(took < bound, "the attempt's processes outlived it by \(took)")
  }

  @Test func afterSuccess() async throws {
    let folder = try TemporaryDirectory.make()
    try await withPool(try registry(folder, mode: "succeed")) { queue, _ in
      let id: JobID = try await queue.enqueue(JobRequest(kind: "agent"))
      try await eventually("the job to succeed") { try await queue.get(id)?.state == .succeeded }
      // The job is recorded only once its processes are reaped: the child is gone already.
      let child = pid(folder, "child-1")
      #expect(child > 0 && !isProcessAlive(child), "the escaped child \(child) outlived a successful attempt")
    }
  }

  @Test func afterFailure() async throws {
    let folder = try TemporaryDirectory.make()
    try await withPool(try registry(folder, mode: "fail")) { queue, _ in
      let id: JobID = try await queue.enqueue(JobRequest(kind: "agent", maxAttempts: 1))
      try await eventually("the job to fail") { try await queue.get(id)?.state == .dead }
      let child = pid(folder, "child-1")
      #expect(child > 0 && !isProcessAlive(child), "the escaped child \(child) outlived a failed attempt")
    }
  }

  @Test func afterCancel() async throws {
    let folder = try TemporaryDirectory.make()
    try await withPool(try registry(folder, mode: "hang", killGrace: .seconds(1))) { queue, pool in
      let id: JobID = try await queue.enqueue(JobRequest(kind: "agent"))
      try await eventually("the program to start") { pid(folder, "child-1") > 0 && pid(folder, "program-1") > 0 }
      _ = try await queue.cancel(id)
      let cancelled = ContinuousClock.now
      // Seen at the next heartbeat (a third of the 5 s lease), then SIGTERM, SIGKILL after 1 s.
      try await expectGone(folder, within: .seconds(1) + .seconds(2) + .seconds(2), after: cancelled)
      try await eventually("the slot to be free") { pool.runningCount == 0 }
    }
  }

  @Test func afterTimeoutAndTheRetryNeverOverlapsIt() async throws {
    let folder = try TemporaryDirectory.make()
    // One slot, a 1 s timeout, a 2 s kill grace and a program that ignores SIGTERM: the retry
    // starts only once the first attempt's processes are gone.
    try await withPool(try registry(folder, mode: "hang", timeout: .seconds(1), killGrace: .seconds(2)), concurrency: 1) { queue, _ in
      let id: JobID = try await queue.enqueue(JobRequest(kind: "agent", maxAttempts: 2))
      try await eventually("the program to start") { pid(folder, "child-1") > 0 && pid(folder, "program-1") > 0 }
      let started = ContinuousClock.now
      let first = (pid(folder, "program-1"), pid(folder, "child-1"))
      try await eventually("the second attempt to start", timeout: .seconds(30), poll: .milliseconds(5)) { pid(folder, "program-2") > 0 }
      #expect(!isProcessAlive(first.0) && !isProcessAlive(first.1), "attempt 2 started while attempt 1's processes ran")
      #expect(ContinuousClock.now - started >= .seconds(2), "the retry did not wait for the kill grace")
      try await expectGone(folder, attempt: 1, within: .seconds(1) + .seconds(2) + .seconds(2), after: started)
      _ = try await queue.cancel(id)
    }
  }

  @Test func afterShutdown() async throws {
    let folder = try TemporaryDirectory.make()
    var stopped = ContinuousClock.now
    try await withPool(try registry(folder, mode: "hang", killGrace: .seconds(1)), grace: .milliseconds(200)) { queue, _ in
      _ = try await queue.enqueue(JobRequest(kind: "agent"))
      try await eventually("the program to start") { pid(folder, "child-1") > 0 && pid(folder, "program-1") > 0 }
      stopped = ContinuousClock.now
    }
    // The pool returned: everything of the attempt is gone already.
    #expect(!isProcessAlive(pid(folder, "child-1")) && !isProcessAlive(pid(folder, "program-1")))
    #expect(ContinuousClock.now - stopped < .milliseconds(200) + .seconds(1) + .seconds(2))
  }

  /// The supervisor alone: its worker SIGKILLed, it kills the attempt at once.
  @Test func whenTheWorkerIsKilled() async throws {
    let folder = try TemporaryDirectory.make()
    let script = folder.appendingPathComponent("agent.py").path
    try Self.program.write(toFile: script, atomically: true, encoding: .utf8)
    // A shell stands in for the worker: the supervisor is its child, as under `nova worker`.
    let worker = try ChildProcess(
      "/bin/sh", ["-c", "'\(novaExecutablePath)' __supervise --grace-ms 10000 -- /usr/bin/python3 '\(script)' '\(folder.path)' hang & wait"],
      environment: [:], standardOutput: "/dev/null", standardError: "/dev/null")
    try await eventually("the program to start") { pid(folder, "child-1") > 0 && pid(folder, "program-1") > 0 }
    kill(worker.pid, SIGKILL)
    let killed = ContinuousClock.now
    try await expectGone(folder, within: .seconds(2), after: killed)
  }

  @Test(arguments: [AttemptContainmentTests.supervision, AttemptContainmentTests.subcommandSupervision])
  func theSupervisorMirrorsTheProgramsExit(supervision: AttemptSupervision) async throws {
    #expect(FileManager.default.isExecutableFile(atPath: supervision.supervisor ?? ""))
    let runner = CommandJobRunner(
      name: "agent", kind: CommandKind(command: ["/bin/sh", "-c", "echo out; echo err >&2; exit 7"]), timeout: .seconds(10),
      environment: ["PATH": "/usr/bin:/bin"], supervision: supervision)
    let context = JobContext(id: JobID("01a2b3c4-0000-7000-8000-0000000000c1"), queue: "q", kind: "agent", attempt: 1, maxAttempts: 1, logger: logger)
    let outcome = try await runner.run(payload: Data("{}".utf8), context: context)
    #expect(outcome.status == .exited(7))
    #expect(String(decoding: outcome.stdout.head, as: UTF8.self) == "out\n")
    #expect(String(decoding: outcome.stderr.head, as: UTF8.self) == "err\n")
    let killed = CommandJobRunner(
      name: "agent", kind: CommandKind(command: ["/bin/sh", "-c", "kill -9 $$"]), timeout: .seconds(10),
      environment: ["PATH": "/usr/bin:/bin"], supervision: supervision)
    #expect(try await killed.run(payload: Data(), context: context).status == .signaled(SIGKILL))
  }
}

/// Issue #21 point 3: a kind's `user` and `group`.
@Suite("Command kinds as another account", .timeLimit(.minutes(2)))
struct CommandAccountTests {
  let context = JobContext(
    id: JobID("01a2b3c4-0000-7000-8000-0000000000a1"), queue: "q", kind: "agent", attempt: 1, maxAttempts: 1, logger: Logger(label: "test"))

  func runner(user: String?, group: String?, supervision: AttemptSupervision) -> CommandJobRunner {
    CommandJobRunner(
      name: "agent", kind: CommandKind(command: ["/bin/sh", "-c", "echo $(id -u) $(id -g) $HOME"], user: user, group: group),
      timeout: .seconds(10), environment: ["PATH": "/usr/bin:/bin"], supervision: supervision)
  }

  @Test func accountsResolveByNameOrNumber() throws {
    let nobody = try #require(try runner(user: "nobody", group: nil, supervision: .none).resolveAccount())
    #expect(nobody.uid == 65534 && nobody.gid == 65534 && nobody.groups.contains(65534) && nobody.home == "/nonexistent")
    // The worker's own account needs no switch (a worker that is not root could not make one).
    let own = String(getuid())
    #expect(try runner(user: own, group: String(getgid()), supervision: .none).resolveAccount() == nil)
    let daemonGroup = try #require(try runner(user: "nobody", group: "daemon", supervision: .none).resolveAccount())
    #expect(daemonGroup.uid == 65534 && daemonGroup.gid == 1)
    let numbered = try #require(try runner(user: "54321", group: "4321", supervision: .none).resolveAccount())
    #expect(numbered == CommandJobRunner.Account(uid: 54321, gid: 4321, groups: [4321]))
    #expect(try runner(user: nil, group: nil, supervision: .none).resolveAccount() == nil)
    #expect(throws: NonRetryableJobError.self) { try runner(user: "no-such-user-here", group: nil, supervision: .none).resolveAccount() }
    #expect(throws: NonRetryableJobError.self) { try runner(user: nil, group: "no-such-group-here", supervision: .none).resolveAccount() }
  }

  @Test(
    .enabled(if: getuid() == 0, "switching to another account needs root"),
    arguments: [AttemptContainmentTests.supervision, AttemptSupervision.none])
  func theProgramRunsAsTheKindsAccount(supervision: AttemptSupervision) async throws {
    let outcome = try await runner(user: "nobody", group: "daemon", supervision: supervision).run(payload: Data(), context: context)
    #expect(outcome.status == .exited(0))
    let ids = String(decoding: outcome.stdout.head, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines).split(separator: " ")
    #expect(ids == ["65534", "1", "/nonexistent"], "ran as \(ids)")
  }

  @Test func theKindsFileReadsUserAndGroup() throws {
    let file = try JobKindsFile.parse(
      "kinds:\n  agent: {type: command, command: [/bin/true], user: nobody, group: \"1\"}\n", file: "nova-jobs.yaml")
    guard case .command(let kind) = try #require(file.kinds.first).action else { throw TestFailure("not a command kind") }
    #expect(kind.user == "nobody" && kind.group == "1")
    #expect(throws: ConfigFileError.self) {
      try JobKindsFile.parse("kinds:\n  agent: {type: command, command: [/bin/true], user: \"no body\"}\n", file: "nova-jobs.yaml")
    }
  }

  /// Issue #22 point 4: an attempt's cgroup is limited to the CPUs and memory its job holds (on a
  /// plain folder here, where the files are only written).
  @Test func theCgroupIsLimitedToWhatThePlacementHolds() throws {
    let folder = try TemporaryDirectory.make().path
    #expect(AttemptCgroups.limit(folder, cpus: 2, memoryMiB: 1024) == ["cpu.max", "memory.max"])
    #expect(try String(contentsOfFile: folder + "/cpu.max", encoding: .utf8) == "200000 100000")
    #expect(try String(contentsOfFile: folder + "/memory.max", encoding: .utf8) == "1073741824")

    let untouched = try TemporaryDirectory.make().path
    #expect(AttemptCgroups.limit(untouched, cpus: 0, memoryMiB: 0).isEmpty)
    #expect(try FileManager.default.contentsOfDirectory(atPath: untouched).isEmpty, "asking for nothing limits nothing")

    let cpusOnly = try TemporaryDirectory.make().path
    #expect(AttemptCgroups.limit(cpusOnly, cpus: 1, memoryMiB: 0) == ["cpu.max"])
    #expect(try String(contentsOfFile: cpusOnly + "/cpu.max", encoding: .utf8) == "100000 100000")
    #expect(!FileManager.default.fileExists(atPath: cpusOnly + "/memory.max"))

    // Where the files cannot be written, none is reported written.
    #expect(AttemptCgroups.limit(folder + "/missing", cpus: 2, memoryMiB: 1024).isEmpty)
  }

  /// Issue #22 point 4: where `cpu` and `memory` are delegated to the worker's cgroup (systemd's
  /// `Delegate=yes`), the worker moves itself into a leaf of its own and hands them down, so that
  /// each attempt's cgroup gets `cpu.max` and `memory.max`. On a folder laid out as a cgroup (the
  /// kernel's rules cannot be met here), the writes and their order are checked.
  @Test func delegatedControllersAreHandedDownToTheAttempts() throws {
    func cgroupFolder(controllers: String) throws -> String {
      let base = try TemporaryDirectory.make().path
      try controllers.write(toFile: base + "/cgroup.controllers", atomically: false, encoding: .utf8)
      try "".write(toFile: base + "/cgroup.subtree_control", atomically: false, encoding: .utf8)
      try "".write(toFile: base + "/cgroup.kill", atomically: false, encoding: .utf8)
      return base
    }
    let pid = getpid()
    let base = try cgroupFolder(controllers: "cpuset cpu io memory pids\n")
    // A dead worker's leaf is removed on the way.
    try FileManager.default.createDirectory(atPath: base + "/nova-worker-2147483000", withIntermediateDirectories: false)
    let root = try #require(AttemptCgroups.root(setting: base))
    #expect(root == "\(base)/nova-\(pid)")
    // Nothing moves until the first attempt.
    #expect(!FileManager.default.fileExists(atPath: "\(base)/nova-worker-\(pid)"))
    _ = try #require(AttemptCgroups.make(in: root, job: JobID.generate(), attempt: 1))
    #expect(try String(contentsOfFile: "\(base)/nova-worker-\(pid)/cgroup.procs", encoding: .utf8) == "\(pid)")
    #expect(try String(contentsOfFile: base + "/cgroup.subtree_control", encoding: .utf8) == "+cpu +memory")
    #expect(try String(contentsOfFile: root + "/cgroup.subtree_control", encoding: .utf8) == "+cpu +memory")
    #expect(!FileManager.default.fileExists(atPath: base + "/nova-worker-2147483000"))
    // Handed down already (by an earlier call): this process does not move again.
    let again = try cgroupFolder(controllers: "cpu memory\n")
    try "cpu memory".write(toFile: again + "/cgroup.subtree_control", atomically: false, encoding: .utf8)
    #expect(AttemptCgroups.delegateControllers(base: again, root: again) == ["cpu", "memory"])
    #expect(!FileManager.default.fileExists(atPath: "\(again)/nova-worker-\(pid)"))
    // Only memory delegated: only memory is handed down.
    let memoryOnly = try cgroupFolder(controllers: "memory pids")
    let memoryRoot = try #require(AttemptCgroups.root(setting: memoryOnly))
    _ = AttemptCgroups.make(in: memoryRoot, job: JobID.generate(), attempt: 1)
    #expect(try String(contentsOfFile: memoryRoot + "/cgroup.subtree_control", encoding: .utf8) == "+memory")
    // Neither delegated: nothing moves, and attempts still get their cgroups (without limits).
    let bare = try cgroupFolder(controllers: "pids\n")
    let bareRoot = try #require(AttemptCgroups.root(setting: bare))
    _ = AttemptCgroups.make(in: bareRoot, job: JobID.generate(), attempt: 1)
    #expect(!FileManager.default.fileExists(atPath: "\(bare)/nova-worker-\(pid)"))
    #expect(!FileManager.default.fileExists(atPath: bareRoot + "/cgroup.subtree_control"))
    #expect(try String(contentsOfFile: bare + "/cgroup.subtree_control", encoding: .utf8).isEmpty)
  }

  @Test func cgroupSettings() throws {
    #expect(AttemptCgroups.root(setting: "off") == nil)
    #expect(AttemptCgroups.root(setting: "/nonexistent/cgroup") == nil)
    guard let root = AttemptCgroups.root(setting: nil) else { return }
    let folder = try #require(AttemptCgroups.make(in: root, job: context.id, attempt: 9))
    #expect(!AttemptCgroups.isPopulated(folder))
    #expect(AttemptCgroups.empty(folder, within: .seconds(1)))
    #expect(!FileManager.default.fileExists(atPath: folder))
  }
}
