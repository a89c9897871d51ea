import Foundation
import Logging
import NovaCore
import NovaQueue
import NovaTestSupport
import Testing

@testable import NovaJobKinds

/// `type: command` kinds run real programs (Python scripts written by each test).
@Suite("Command job kinds", .serialized, .timeLimit(.minutes(5)))
struct CommandJobRunnerTests {
  func context(_ kind: String = "agent") -> JobContext {
    JobContext(id: JobID("01a2b3c4-0000-7000-8000-000000000001"), queue: "gpu", kind: kind, attempt: 2, maxAttempts: 5, logger: Logger(label: "test"))
  }

  /// A Python program in a fresh folder.
  func script(_ source: String) throws -> String {
    let path = try TemporaryDirectory.make().appendingPathComponent("agent.py").path
    try source.write(toFile: path, atomically: true, encoding: .utf8)
    return path
  }

  func runner(_ command: [String], kind: CommandKind = CommandKind(command: []), environment: [String: String]? = nil) -> CommandJobRunner {
    var kind = kind
    kind.command = command
    return CommandJobRunner(
      name: "agent", kind: kind, timeout: .seconds(60),
      environment: environment ?? ["PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8", "SECRET": "s3cret"])
  }

  @Test func thePayloadGoesInAndTheLastJSONLineComesBack() async throws {
    let path = try script(
      """
      import json, os, sys
      payload = json.load(sys.stdin)
      print("working on", payload["doc"], file=sys.stderr)
      print("some progress text")
      env = {k: v for k, v in os.environ.items() if k.startswith("NOVA_JOB_") or k in ("SECRET", "MODEL", "HOME")}
      print(json.dumps({"summary": payload["doc"].upper(), "big": payload["n"], "env": env}))
      """)
    let kind = CommandKind(command: [], env: ["MODEL": "small"])
    let result = try #require(
      try await runner(["python3", path], kind: kind).handle(payload: Data(#"{"doc":"abc","n":12345678901234567890}"#.utf8), context: context()))
    let value = try JSONValue.parse(result)
    guard case .object(let fields) = value, case .object(let env)? = fields["env"] else { throw TestFailure("result \(value)") }
    #expect(fields["summary"] == .string("ABC"))
    #expect(String(decoding: result, as: UTF8.self).contains("12345678901234567890"), "the result is stored as the program wrote it")
    #expect(env["NOVA_JOB_ID"] == .string("01a2b3c4-0000-7000-8000-000000000001"))
    #expect(env["NOVA_JOB_KIND"] == .string("agent") && env["NOVA_JOB_QUEUE"] == .string("gpu"))
    #expect(env["NOVA_JOB_ATTEMPT"] == .string("2") && env["NOVA_JOB_MAX_ATTEMPTS"] == .string("5"))
    #expect(env["NOVA_JOB_DEADLINE"] != nil && env["MODEL"] == .string("small") && env["HOME"] == .string("/root"))
    #expect(env["SECRET"] == nil, "a variable not in env_pass was inherited")
    let passing = CommandKind(command: [], envPass: ["SECRET"])
    let passed = try #require(
      try await runner(["python3", path], kind: passing).handle(payload: Data(#"{"doc":"x","n":1}"#.utf8), context: context()))
    #expect(String(decoding: passed, as: UTF8.self).contains("s3cret"))
  }

  /// The program's environment, by name, for a job placed as `placement`.
  func environment(of runner: CommandJobRunner, _ placement: JobPlacement?) -> [String: String] {
    var job = context()
    job.placement = placement
    return Dictionary(uniqueKeysWithValues: runner.childEnvironment(job).map { (String(describing: $0.key), $0.value) })
  }

  static let worker = [
    "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/root", "CUDA_VISIBLE_DEVICES": "0,1,2,3", "NVIDIA_VISIBLE_DEVICES": "all",
    "NOVA_JOB_HOST": "stale",
  ]
  static let twoGPUs = JobPlacement(host: "gpu-a", gpus: [.init(index: 1, uuid: "GPU-1"), .init(index: 3, uuid: "GPU-3")], cpus: 2, memory_mib: 1024)

  /// Issue #22 points 1 and 4: a program sees exactly the GPUs its job was placed on (by index
  /// for CUDA, by UUID for the NVIDIA container runtime) and what it holds; on a worker that
  /// declared no capacity neither variable is set, not even to the worker's own.
  @Test func theProgramSeesExactlyTheGPUsItWasPlacedOn() {
    let plain = runner(["/bin/true"], environment: Self.worker)
    let placed = environment(of: plain, Self.twoGPUs)
    #expect(placed["CUDA_VISIBLE_DEVICES"] == "1,3")
    #expect(placed["NVIDIA_VISIBLE_DEVICES"] == "GPU-1,GPU-3")
    #expect(placed["NOVA_JOB_HOST"] == "gpu-a")
    #expect(placed["NOVA_JOB_CPUS"] == "2" && placed["NOVA_JOB_MEMORY_MIB"] == "1024")
    #expect(placed["NOVA_JOB_ID"] == "01a2b3c4-0000-7000-8000-000000000001" && placed["PATH"] == "/usr/local/bin:/usr/bin:/bin")

    let noGPU = environment(of: plain, JobPlacement(host: "gpu-a", gpus: [], cpus: 0, memory_mib: 0))
    #expect(noGPU["CUDA_VISIBLE_DEVICES"] == "", "a job that asked for no GPU sees none")
    #expect(noGPU["NVIDIA_VISIBLE_DEVICES"] == "void")
    #expect(noGPU["NOVA_JOB_HOST"] == "gpu-a")
    #expect(noGPU["NOVA_JOB_CPUS"] == nil && noGPU["NOVA_JOB_MEMORY_MIB"] == nil)

    let unplaced = environment(of: plain, nil)
    #expect(unplaced["CUDA_VISIBLE_DEVICES"] == nil && unplaced["NVIDIA_VISIBLE_DEVICES"] == nil, "the worker's own are not inherited")
    #expect(unplaced["NOVA_JOB_HOST"] == nil && unplaced["NOVA_JOB_CPUS"] == nil && unplaced["NOVA_JOB_MEMORY_MIB"] == nil)
    #expect(unplaced["NOVA_JOB_ID"] == "01a2b3c4-0000-7000-8000-000000000001" && unplaced["HOME"] == "/root")

    // Neither the kind's env nor its env_pass widens what the job was given.
    let kind = CommandKind(command: [], env: ["CUDA_VISIBLE_DEVICES": "0,1,2,3"], envPass: ["NVIDIA_VISIBLE_DEVICES"])
    let widening = runner(["/bin/true"], kind: kind, environment: Self.worker)
    let narrowed = environment(of: widening, JobPlacement(host: "gpu-a", gpus: [.init(index: 2, uuid: "GPU-2")], cpus: 0, memory_mib: 0))
    #expect(narrowed["CUDA_VISIBLE_DEVICES"] == "2" && narrowed["NVIDIA_VISIBLE_DEVICES"] == "GPU-2")
    // Unplaced, what the kind declares applies as before.
    let declared = environment(of: widening, nil)
    #expect(declared["CUDA_VISIBLE_DEVICES"] == "0,1,2,3" && declared["NVIDIA_VISIBLE_DEVICES"] == "all")
  }

  @Test func aPlacedProgramRunsWithItsDevicesInItsEnvironment() async throws {
    let path = try script(
      """
      import json, os
      names = ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "NOVA_JOB_HOST", "NOVA_JOB_CPUS", "NOVA_JOB_MEMORY_MIB")
      print(json.dumps({name: os.environ.get(name) for name in names}))
      """)
    var job = context()
    job.placement = Self.twoGPUs
    let placed = try #require(try await runner(["python3", path], environment: Self.worker).handle(payload: Data("{}".utf8), context: job))
    #expect(
      try JSONValue.parse(placed)
        == .object([
          "CUDA_VISIBLE_DEVICES": "1,3", "NVIDIA_VISIBLE_DEVICES": "GPU-1,GPU-3", "NOVA_JOB_HOST": "gpu-a", "NOVA_JOB_CPUS": "2",
          "NOVA_JOB_MEMORY_MIB": "1024",
        ]))
    let unplaced = try #require(try await runner(["python3", path], environment: Self.worker).handle(payload: Data("{}".utf8), context: context()))
    #expect(
      try JSONValue.parse(unplaced)
        == .object([
          "CUDA_VISIBLE_DEVICES": .null, "NVIDIA_VISIBLE_DEVICES": .null, "NOVA_JOB_HOST": .null, "NOVA_JOB_CPUS": .null,
          "NOVA_JOB_MEMORY_MIB": .null,
        ]))
  }

  @Test func outputThatIsNotJSONComesBackAsItsTail() async throws {
    let result = try #require(try await runner(["/bin/echo", "hello", "world"]).handle(payload: Data("{}".utf8), context: context()))
    #expect(try JSONValue.parse(result) == .object(["stdout_tail": .string("hello world\n")]))
  }

  @Test func failingExitsAreRetriedOrDeadLetteredWithTheirStderr() async throws {
    let path = try script("import sys\nprint('model not loaded', file=sys.stderr)\nsys.exit(int(sys.argv[1]))\n")
    let kind = CommandKind(command: [], deadExitCodes: [3])
    do {
      _ = try await runner(["python3", path, "75"], kind: kind).handle(payload: Data("{}".utf8), context: context())
      Issue.record("exit 75 succeeded")
    } catch let error as CommandFailure {
      #expect(error.message == "exit code 75 (temporary failure); stderr: model not loaded")
    }
    await #expect(throws: NonRetryableJobError.self) {
      try await runner(["python3", path, "3"], kind: kind).handle(payload: Data("{}".utf8), context: context())
    }
  }

  @Test func aMissingProgramFailsTheJobClearly() async throws {
    do {
      _ = try await runner(["no-such-agent-program"]).handle(payload: Data("{}".utf8), context: context())
      Issue.record("a missing program succeeded")
    } catch let error as NonRetryableJobError {
      #expect(error.message.contains("command 'no-such-agent-program' was not found in PATH"), "\(error.message)")
    }
    await #expect(throws: NonRetryableJobError.self) {
      try await runner(["/nonexistent/agent"]).handle(payload: Data("{}".utf8), context: context())
    }
  }

  /// 100 MiB of output: the first `max_output_bytes` are kept, the rest counted, and the
  /// worker's memory stays flat (it reads on, keeping only bounded buffers).
  @Test func hugeOutputIsTruncated() async throws {
    let path = try script(
      "import sys\nchunk = b'x' * (1 << 20)\nfor _ in range(100):\n    sys.stdout.buffer.write(chunk)\nprint()\nprint('{\"done\": true}')\n")
    let kind = CommandKind(command: [], maxOutputBytes: 1 << 20)
    let queue = try SQLiteJobQueue(path: try TemporaryDirectory.make().appendingPathComponent("q.sqlite").path)
    var context = context()
    context.logStore = queue
    let outcome = try await runner(["python3", path], kind: kind).run(payload: Data("{}".utf8), context: context)
    #expect(outcome.status == .exited(0))
    #expect(outcome.stdout.head.count == 1 << 20 && outcome.stdout.truncated)
    #expect(outcome.stdout.total == 100 * (1 << 20) + 16)
    #expect(outcome.stdout.tail.count <= 64 << 10)
    // The store keeps the attempt's first MiB (one line with no end: cut at the limit), a marker
    // line saying what was dropped, and the tail from the first line that starts in its 64 KiB.
    let chunks = try await queue.logs(of: context.id, attempt: 2, after: 0, limit: 10_000)
    let kept = chunks.reduce(into: Data()) { $0.append($1.data) }
    let dropped = 100 * (1 << 20) + 16 - (1 << 20) - 15
    let marker = "\n[nova: \(dropped) bytes of stdout not kept (max_output_bytes 1048576); its last 15 bytes follow]\n"
    #expect(kept.count == (1 << 20) + marker.utf8.count + 15)
    #expect(kept.prefix(1 << 20).allSatisfy { $0 == UInt8(ascii: "x") })
    #expect(String(decoding: kept.dropFirst(1 << 20).prefix(marker.utf8.count), as: UTF8.self) == marker)
    #expect(String(decoding: kept.suffix(16), as: UTF8.self) == "\n{\"done\": true}\n")
    #expect(chunks.allSatisfy { $0.stream == .stdout && $0.attempt == 2 })
  }

  /// Past `max_output_bytes` the kept head ends with a whole line, the marker is a line of its own
  /// and the tail starts at a line start (issue #21 point 8); stderr keeps chunks of its own.
  @Test func truncatedOutputKeepsWholeLines() async throws {
    let path = try script(
      """
      import sys
      for i in range(200000):
          print(f"line {i:06d}")
          if i % 50000 == 0:
              print(f"progress {i}", file=sys.stderr, flush=True)
      """)
    let kind = CommandKind(command: [], maxOutputBytes: 100_000)
    let queue = try SQLiteJobQueue(path: try TemporaryDirectory.make().appendingPathComponent("q.sqlite").path)
    var context = context()
    context.logStore = queue
    let outcome = try await runner(["python3", path], kind: kind).run(payload: Data("{}".utf8), context: context)
    #expect(outcome.status == .exited(0))
    func lines(_ numbers: Range<Int>) -> String {
      numbers.map { (number: Int) -> String in
        let digits = String(number)
        return "line \(String(repeating: "0", count: 6 - digits.count))\(digits)\n"
      }.joined()
    }
    // Lines of 12 bytes: 8333 whole ones fit in 100000.
    #expect(outcome.stdout.head == Array(lines(0..<8333).utf8))
    #expect(outcome.stdout.total == 2_400_000 && outcome.stdout.truncated)
    let chunks = try await queue.logs(of: context.id, attempt: 2, after: 0, limit: 10_000)
    let stdout = chunks.filter { $0.stream == .stdout }.reduce(into: Data()) { $0.append($1.data) }
    // The last 64 KiB start inside line 194538: the tail starts with the next one.
    let tail = lines(194_539..<200_000)
    let dropped = 2_400_000 - 99_996 - tail.utf8.count
    let marker = "[nova: \(dropped) bytes of stdout not kept (max_output_bytes 100000); its last \(tail.utf8.count) bytes follow]\n"
    #expect(String(decoding: stdout, as: UTF8.self) == lines(0..<8333) + marker + tail)
    let stderr = chunks.filter { $0.stream == .stderr }.reduce(into: Data()) { $0.append($1.data) }
    #expect(String(decoding: stderr, as: UTF8.self) == "progress 0\nprogress 50000\nprogress 100000\nprogress 150000\n")
  }

  /// Cancellation (a timeout, a cancelled job, shutdown) stops the whole process group: SIGTERM,
  /// then SIGKILL after the grace, a forked child that ignores SIGTERM included.
  @Test func cancellingKillsTheGroupEvenAChildThatIgnoresSIGTERM() async throws {
    let folder = try TemporaryDirectory.make()
    let pidFile = folder.appendingPathComponent("child.pid").path
    let path = try script(
      """
      import os, signal, sys, time
      signal.signal(signal.SIGTERM, signal.SIG_IGN)
      pid = os.fork()
      if pid == 0:
          time.sleep(600)
          sys.exit(0)
      open(sys.argv[1], "w").write(str(pid))
      time.sleep(600)
      """)
    let kind = CommandKind(command: [], killGrace: .milliseconds(300))
    let task = Task { try await runner(["python3", path, pidFile], kind: kind).run(payload: Data("{}".utf8), context: context()) }
    var child: Int32 = 0
    try await eventually("the program to fork") {
      child = Int32((try? String(contentsOfFile: pidFile, encoding: .utf8)) ?? "") ?? 0
      return child > 0
    }
    let started = ContinuousClock.now
    task.cancel()
    _ = try? await task.value
    #expect(ContinuousClock.now - started < .seconds(5))
    try await eventually("the forked child to be gone") { !isProcessAlive(child) }
  }

  /// The file's kinds run in a worker pool like built-in ones.
  @Test func aDeclaredKindRunsInTheWorkerPool() async throws {
    let file = try JobKindsFile.parse(
      "kinds:\n  upper:\n    type: command\n    command: [python3, -c, \"import sys, json; print('upper-casing', file=sys.stderr); print(json.dumps(sys.stdin.read().upper()))\"]\n",
      file: "nova-jobs.yaml")
    var registry = BuiltinJobs.registry
    file.register(into: &registry)
    let queue = try SQLiteJobQueue(path: try TemporaryDirectory.make().appendingPathComponent("q.sqlite").path)
    let id: JobID = try await queue.enqueue(JobRequest(kind: "upper", payload: Data(#"{"a":"b"}"#.utf8)))
    let pool = WorkerPool(
      queue: queue, registry: registry, configuration: .init(concurrency: 2, pollInterval: .milliseconds(20)), logger: Logger(label: "test"))
    let run = Task { try await pool.run() }
    try await eventually("the command job to succeed") { try await queue.get(id)?.state == .succeeded }
    pool.shutdown()
    try await run.value
    #expect(try await queue.get(id)?.result == Data(#""{\"A\":\"B\"}""#.utf8))
    // What it wrote is kept as the output of its first attempt.
    let chunks = try await queue.logs(of: id, attempt: 1, after: 0, limit: 100)
    #expect(chunks.filter { $0.stream == .stderr }.map { String(decoding: $0.data, as: UTF8.self) } == ["upper-casing\n"])
    #expect(chunks.filter { $0.stream == .stdout }.map { String(decoding: $0.data, as: UTF8.self) } == [#""{\"A\":\"B\"}""# + "\n"])
  }

  /// The sweep kills processes whose worker is gone (a pid not running, or a pid reused by
  /// another process), and leaves those of live workers alone.
  @Test func theSweepKillsOnlyWhatDeadWorkersLeft() async throws {
    #expect(OrphanSweeper.identity == OrphanSweeper.identity(of: getpid()))
    #expect(OrphanSweeper.isRunning(OrphanSweeper.identity))
    let reused = "\(OrphanSweeper.namespace)/\(getpid()):1"
    #expect(!OrphanSweeper.isRunning(reused))
    let orphan = try ChildProcess("/bin/sleep", ["60"], environment: ["NOVA_WORKER": "\(OrphanSweeper.namespace)/999999999:5", "PATH": "/bin"])
    // A worker of another pid namespace (a container) is not judged by this namespace's pids.
    let foreign = try ChildProcess("/bin/sleep", ["60"], environment: ["NOVA_WORKER": "pid:[1]/999999999:5", "PATH": "/bin"])
    defer { foreign.signal(SIGKILL) }
    let stale = try ChildProcess("/bin/sleep", ["60"], environment: ["NOVA_WORKER": reused, "PATH": "/bin"])
    let kept = try ChildProcess("/bin/sleep", ["60"], environment: ["NOVA_WORKER": OrphanSweeper.identity, "PATH": "/bin"])
    defer { kept.signal(SIGKILL) }
    // Each child's environment is readable once its exec is done, which takes each its own time.
    try await eventually("the environments to be readable") {
      OrphanSweeper.workerOf(kept.pid) == OrphanSweeper.identity && OrphanSweeper.workerOf(stale.pid) == reused
        && OrphanSweeper.workerOf(orphan.pid) == "\(OrphanSweeper.namespace)/999999999:5"
        && OrphanSweeper.workerOf(foreign.pid) == "pid:[1]/999999999:5"
    }
    #expect(!OrphanSweeper.isRunning("\(OrphanSweeper.namespace)/999999999:5"))
    // Another sweeper on this machine may take the orphans first: a `nova worker` or `nova serve`
    // that another suite started, or this process's own periodic sweep once a server test
    // started it (CI saw it happen). Whichever sweep takes them, they are killed, and no sweep
    // takes the others.
    let killed = OrphanSweeper.sweep()
    #expect(!killed.contains(kept.pid) && !killed.contains(foreign.pid))
    #expect(await orphan.waitForExit(timeout: .seconds(5)) == 128 + SIGKILL)
    #expect(await stale.waitForExit(timeout: .seconds(5)) == 128 + SIGKILL)
    #expect(isProcessAlive(kept.pid) && isProcessAlive(foreign.pid))
  }
}
