import Foundation
import NovaTestSupport
import Testing

/// Issue #22's fleet, as it runs: three `nova worker` processes on one store, each on a "host"
/// of its own with a fake `nvidia-smi` (one unified-memory GB10, two H100s, eight H100s), and
/// jobs that ask 1, 2, 4 and 16 GPUs, some pinned by model or host. Every job's program records
/// the host and `CUDA_VISIBLE_DEVICES` it got, and when it started and ended.
@Suite("GPU fleet", .serialized, .timeLimit(.minutes(4)))
struct GPUFleetProcessTests {
  /// A store: SQLite in the shared data directory, or a Redis of the test's own.
  enum Store: String, CaseIterable, CustomTestStringConvertible {
    case sqlite, redis
    var testDescription: String { rawValue }
  }

  static var stores: [Store] { TestServers.redisAvailable ? Store.allCases : [.sqlite] }

  /// One simulated host: its name and what its fake `nvidia-smi` lists.
  struct Host {
    var name: String
    var gpus: [String]

    static let spark = Host(name: "spark-1", gpus: ["0, GPU-spark1-0, NVIDIA GB10, [N/A]"])
    static let gpu2 = Host(name: "gpu-2", gpus: (0..<2).map { "\($0), GPU-gpu2-\($0), NVIDIA H100 80GB HBM3, 81559" })
    static let gpu8 = Host(name: "gpu-8", gpus: (0..<8).map { "\($0), GPU-gpu8-\($0), NVIDIA H100 80GB HBM3, 81559" })
  }

  /// A folder with a fake `nvidia-smi` for `host`, to put first on the worker's PATH.
  func fakeGPUs(_ host: Host, in folder: URL) throws -> String {
    let bin = folder.appendingPathComponent("bin-\(host.name)")
    try FileManager.default.createDirectory(at: bin, withIntermediateDirectories: true)
    let script = "#!/bin/sh\n" + host.gpus.map { "echo '\($0)'\n" }.joined()
    let path = bin.appendingPathComponent("nvidia-smi").path
    try writeExecutable(path, script)
    return bin.path
  }

  /// The kinds: each asks what its name says (as the kind's default), and its program logs its
  /// placement around a short sleep.
  func kindsFile(in folder: URL, log: String, seconds: Double, filename: String = "nova-jobs.yaml") throws -> String {
    let program =
      "echo \"start $NOVA_JOB_ID $NOVA_JOB_KIND${NOVA_JOB_CONCURRENCY_KEY:+/$NOVA_JOB_CONCURRENCY_KEY} $NOVA_JOB_HOST [$CUDA_VISIBLE_DEVICES] [$NVIDIA_VISIBLE_DEVICES] $(date +%s%N)\" >> \(log); "
      + "sleep \(seconds); echo \"end $NOVA_JOB_ID $NOVA_JOB_KIND $NOVA_JOB_HOST [$CUDA_VISIBLE_DEVICES] [$NVIDIA_VISIBLE_DEVICES] $(date +%s%N)\" >> \(log)"
    func kind(_ name: String, _ extra: String) -> String {
      "  \(name):\n    type: command\n    command: [/bin/sh, -c, '\(program)']\n    timeout: 60s\n\(extra)"
    }
    let yaml =
      "kinds:\n"
      + kind("one", "    resources: {gpus: 1}\n")
      + kind("two", "    resources: {gpus: 2}\n")
      + kind("four", "    resources: {gpus: 4, cpus: 1}\n")
      + kind("gb10", "    resources: {gpus: 1}\n    constraints: {gpu_model: \"*GB10*\"}\n")
      + kind("pinned", "    resources: {gpus: 1}\n    constraints: {host: \"gpu-8\"}\n")
      + kind("huge", "    resources: {gpus: 16}\n")
      + kind("flex", "")
      + kind("plain", "")
      + kind("keyed", "    max_running_per_key: 2\n")
    let path = folder.appendingPathComponent(filename).path
    try yaml.write(toFile: path, atomically: true, encoding: .utf8)
    return path
  }

  /// One run of a job's program, from its log lines (its kind as `kind/key` for a job with a
  /// concurrency key).
  struct Run {
    var job: String
    var kind: String
    var host: String
    var devices: [Int]
    var uuids: String
    var start: UInt64
    var end: UInt64
  }

  func runs(_ log: String) throws -> [Run] {
    let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
    var starts: [String: [String]] = [:]
    var runs: [Run] = []
    for line in text.split(separator: "\n") {
      let fields = line.split(separator: " ").map(String.init)
      guard fields.count == 7 else { continue }
      if fields[0] == "start" {
        starts[fields[1]] = fields
      } else if let start = starts.removeValue(forKey: fields[1]) {
        let devices = fields[4].dropFirst().dropLast().split(separator: ",").compactMap { Int($0) }
        runs.append(
          Run(
            job: fields[1], kind: start[2], host: fields[3], devices: devices, uuids: String(fields[5].dropFirst().dropLast()),
            start: UInt64(start[6]) ?? 0, end: UInt64(fields[6]) ?? 0))
      }
    }
    return runs
  }

  func storeArguments(_ store: Store, data: URL, redis: RedisTestServer?, jobs: String) -> [String] {
    var arguments = ["--data-dir", data.path, "--jobs", jobs]
    if store == .redis, let redis { arguments += ["--queue-url", redis.url] }
    return arguments
  }

  /// A fleet's folder, its store (a Redis of the test's own, which the caller stops), the runs
  /// log of its jobs' programs (each sleeping `seconds`), and the store arguments of every command.
  func fleet(_ store: Store, _ name: String, seconds: Double) throws -> (folder: URL, redis: RedisTestServer?, log: String, common: [String]) {
    let folder = try TemporaryDirectory.make(name)
    let redis = store == .redis ? try RedisTestServer() : nil
    let log = folder.appendingPathComponent("runs.log").path
    let jobs = try kindsFile(in: folder, log: log, seconds: seconds)
    return (folder, redis, log, storeArguments(store, data: folder.appendingPathComponent("data"), redis: redis, jobs: jobs))
  }

  func worker(_ host: Host, store: [String], folder: URL, extra: [String] = []) throws -> NovaProcess {
    let bin = try fakeGPUs(host, in: folder)
    return try NovaProcess(
      ["worker"] + store + ["--workers", "4", "--poll-ms", "20", "--host-name", host.name] + extra,
      environment: ["PATH": "\(bin):/usr/bin:/bin"], niceness: 5)
  }

  @discardableResult
  func enqueue(_ arguments: [String], store: [String]) async throws -> String {
    let result = try await NovaProcess.run(["enqueue"] + arguments + store)
    #expect(result.code == 0, "nova enqueue \(arguments): \(result.stderr)")
    return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
  }

  func stats(_ store: [String]) async throws -> [String: Int] {
    let result = try await NovaProcess.run(["jobs", "stats", "--json"] + store)
    let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
    return (object?["totals"] as? [String: Int]) ?? [:]
  }

  @Test(arguments: stores)
  func threeHostsRunEveryJobWhereItFitsAndNeverShareADevice(store: Store) async throws {
    let (folder, redis, log, common) = try fleet(store, "nova-fleet", seconds: 0.4)
    defer { redis?.stop() }
    // Jobs first: every worker then meets a full queue, the hardest case for exclusivity.
    try await enqueue(["one", "--count", "6"], store: common)
    try await enqueue(["two", "--count", "3"], store: common)
    try await enqueue(["four", "--count", "2"], store: common)
    try await enqueue(["gb10", "--count", "2"], store: common)
    try await enqueue(["pinned", "--count", "2"], store: common)
    let huge = try await enqueue(["huge"], store: common)
    // The job's own request replaces its kind's (none here): 2 GPUs, on gpu-2 only.
    try await enqueue(["flex", "--gpus", "2", "--constraint", "host=gpu-2"], store: common)
    try await enqueue(["plain", "--count", "2"], store: common)
    let workers = try [Host.spark, Host.gpu2, Host.gpu8].map { try worker($0, store: common, folder: folder) }
    defer { for worker in workers { worker.signal(SIGKILL) } }
    do {
      try await eventually("every job that fits somewhere to finish", timeout: .seconds(90)) { try runs(log).count >= 18 }
    } catch {
      let list = try await NovaProcess.run(["jobs", "list", "--json", "--limit", "50"] + common)
      Issue.record("jobs: \(list.stdout.prefix(6000))\nruns: \(try runs(log).map { "\($0.kind)@\($0.host)\($0.devices)" })")
      Issue.record("workers: \(workers.map { String($0.stderr.suffix(3000)) })")
      throw error
    }
    let done = try runs(log)
    #expect(done.count == 18, "\(done.map(\.kind))")
    let gpuCount = ["spark-1": 1, "gpu-2": 2, "gpu-8": 8]
    let wanted = ["one": 1, "two": 2, "four": 4, "gb10": 1, "pinned": 1, "flex": 2, "plain": 0]
    for run in done {
      #expect(run.devices.count == wanted[run.kind], "\(run.kind) got \(run.devices) on \(run.host)")
      #expect(run.devices.allSatisfy { $0 >= 0 && $0 < gpuCount[run.host, default: 0] }, "\(run.kind) on \(run.host): \(run.devices)")
      #expect(Set(run.devices).count == run.devices.count)
      // NVIDIA_VISIBLE_DEVICES names the same GPUs by UUID; a job that asked none sees none.
      let expected = run.devices.map { "GPU-\(run.host.replacingOccurrences(of: "-", with: ""))-\($0)" }.joined(separator: ",")
      #expect(run.uuids == (run.devices.isEmpty ? "void" : expected), "\(run.kind) on \(run.host): \(run.uuids)")
      switch run.kind {
      case "four", "pinned": #expect(run.host == "gpu-8", "\(run.kind) ran on \(run.host)")
      case "gb10": #expect(run.host == "spark-1")
      case "two": #expect(run.host != "spark-1")
      case "flex": #expect(run.host == "gpu-2")
      default: break
      }
    }
    // No two runs that overlapped in time held one device of one host.
    for (index, run) in done.enumerated() {
      for other in done[(index + 1)...] where other.host == run.host && run.start < other.end && other.start < run.end {
        #expect(Set(run.devices).isDisjoint(with: other.devices), "\(run.kind) and \(other.kind) shared a GPU on \(run.host)")
      }
    }
    // More than one job ran at a time on the 8-GPU host: placement packs, it does not serialise.
    let onGPU8 = done.filter { $0.host == "gpu-8" }
    #expect(onGPU8.contains { run in onGPU8.contains { $0.job != run.job && run.start < $0.end && $0.start < run.end } })
    // The 16-GPU job fits nowhere: it waits, untouched.
    let totals = try await stats(common)
    #expect(totals["succeeded"] == 18 && totals["available"] == 1, "\(totals)")
    // And it says why, naming the host that came closest.
    let shown = try await NovaProcess.run(["jobs", "show", huge] + common)
    let job = try #require(try JSONSerialization.jsonObject(with: Data(shown.stdout.utf8)) as? [String: Any], "\(shown.stderr)")
    let waiting = try #require(job["waiting_for"] as? [String: String], "\(shown.stdout)")
    #expect(waiting["reason"] == "unschedulable")
    #expect(waiting["detail"] == "no registered worker could ever hold it; closest host gpu-8: needs 16 GPU; 8 on gpu-8", "\(waiting)")
    // The registry lists the three hosts with their GPUs.
    let listed = try await NovaProcess.run(["workers", "list", "--json"] + common)
    let registry = try #require(try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [String: Any])
    let entries = try #require(registry["workers"] as? [[String: Any]])
    let hosts = Dictionary(entries.compactMap { entry in (entry["host"] as? String).map { ($0, entry) } }) { first, _ in first }
    #expect(Set(hosts.keys) == ["spark-1", "gpu-2", "gpu-8"], "\(listed.stdout)")
    for (host, count) in gpuCount {
      let capacity = hosts[host]?["capacity"] as? [String: Any]
      #expect((capacity?["gpus"] as? [Any])?.count == count, "\(host): \(String(describing: capacity))")
      #expect(hosts[host]?["state"] as? String == "live")
    }
  }

  @Test(arguments: stores)
  func aKilledWorkersGPUIsFreeAgainAfterItsLease(store: Store) async throws {
    let (folder, redis, log, common) = try fleet(store, "nova-fleet-kill", seconds: 30)
    defer { redis?.stop() }
    try await enqueue(["gb10"], store: common)
    let first = try worker(.spark, store: common, folder: folder, extra: ["--lease-seconds", "2"])
    defer { first.signal(SIGKILL) }
    try await eventually("the job to start") {
      ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("start")
    }
    first.signal(SIGKILL)
    _ = await first.waitForExit(timeout: .seconds(10))
    // The host's one GPU comes back with the lease: a new worker there runs the job again.
    let second = try worker(.spark, store: common, folder: folder, extra: ["--lease-seconds", "2"])
    defer { second.signal(SIGKILL) }
    try await eventually("the job to start again on the freed GPU", timeout: .seconds(30)) {
      ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").components(separatedBy: "start ").count - 1 >= 2
    }
    let starts = ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n").filter { $0.hasPrefix("start") }
    #expect(starts.allSatisfy { $0.contains(" spark-1 [0] ") }, "\(starts)")
  }

  /// Issue #22 point 5: a queue's max-running holds across three worker processes; a paused
  /// queue accepts jobs and none of them runs until it is resumed.
  @Test(arguments: stores)
  func queueLimitsHoldAcrossThreeWorkerProcesses(store: Store) async throws {
    let (folder, redis, log, common) = try fleet(store, "nova-fleet-limits", seconds: 0.3)
    defer { redis?.stop() }
    let set = try await NovaProcess.run(["queues", "set", "llm", "--max-running", "2"] + common)
    #expect(set.code == 0, "\(set.stderr)")
    let paused = try await NovaProcess.run(["queues", "pause", "llm"] + common)
    #expect(paused.code == 0, "\(paused.stderr)")
    try await enqueue(["plain", "--queue", "llm", "--count", "10"], store: common)
    let workers = try [Host.spark, Host.gpu2, Host.gpu8].map {
      try worker($0, store: common, folder: folder, extra: ["--queues", "llm"])
    }
    defer { for worker in workers { worker.signal(SIGKILL) } }
    // Paused: the workers are up and take nothing.
    try await eventually("three workers in the registry") {
      let listed = try await NovaProcess.run(["workers", "list", "--json"] + common)
      return listed.stdout.components(separatedBy: "\"live\"").count - 1 == 3
    }
    try await Task.sleep(for: .seconds(1))
    #expect(try runs(log).isEmpty && !FileManager.default.fileExists(atPath: log))
    let resumed = try await NovaProcess.run(["queues", "resume", "llm"] + common)
    #expect(resumed.code == 0, "\(resumed.stderr)")
    do {
      try await eventually("every job to finish", timeout: .seconds(120)) { try runs(log).count >= 10 }
    } catch {
      // What the store and the workers say, for the report.
      let queues = try await NovaProcess.run(["queues", "list", "--json"] + common)
      let stats = try await NovaProcess.run(["jobs", "stats", "--json"] + common)
      Issue.record("queues: \(queues.stdout)\nstats: \(stats.stdout)\nworkers: \(workers.map { String($0.stderr.suffix(2000)) })")
      throw error
    }
    let done = try runs(log)
    // At no instant did more than two run, and two did run together.
    var most = 0
    for run in done {
      most = max(most, done.filter { $0.start <= run.start && run.start < $0.end }.count)
    }
    #expect(most == 2, "at most \(most) ran at once; the limit is 2")
  }

  /// Issue #22 point 5, per key: a kind's `max_running_per_key` holds across three worker
  /// processes (12 slots) on one store, while another key's jobs run beside them.
  @Test(arguments: stores)
  func perKeyLimitsHoldAcrossThreeWorkerProcesses(store: Store) async throws {
    let (folder, redis, log, common) = try fleet(store, "nova-fleet-keys", seconds: 0.3)
    defer { redis?.stop() }
    try await enqueue(["keyed", "--concurrency-key", "tenant-a", "--count", "8"], store: common)
    try await enqueue(["keyed", "--concurrency-key", "tenant-b", "--count", "4"], store: common)
    try await enqueue(["plain", "--count", "4"], store: common)
    let workers = try [Host.spark, Host.gpu2, Host.gpu8].map { try worker($0, store: common, folder: folder) }
    defer { for worker in workers { worker.signal(SIGKILL) } }
    do {
      try await eventually("every job to finish", timeout: .seconds(120)) { try runs(log).count >= 16 }
    } catch {
      let stats = try await NovaProcess.run(["jobs", "stats", "--json"] + common)
      Issue.record("stats: \(stats.stdout)\nruns: \(try runs(log).map(\.kind))\nworkers: \(workers.map { String($0.stderr.suffix(2000)) })")
      throw error
    }
    let done = try runs(log)
    #expect(done.filter { $0.kind == "keyed/tenant-a" }.count == 8 && done.filter { $0.kind == "keyed/tenant-b" }.count == 4, "\(done.map(\.kind))")
    // The most of one set of runs that ran at one instant.
    func most(_ runs: [Run]) -> Int {
      runs.map { run in runs.filter { $0.start <= run.start && run.start < $0.end }.count }.max() ?? 0
    }
    let a = done.filter { $0.kind == "keyed/tenant-a" }
    let b = done.filter { $0.kind == "keyed/tenant-b" }
    #expect(most(a) == 2, "tenant-a: at most \(most(a)) at once; its limit is 2")
    #expect(most(b) <= 2, "tenant-b: \(most(b)) at once")
    // The limit is per key, not per kind: more than two of the kind ran together.
    #expect(most(a + b) > 2, "the keys ran one after the other")
  }
}
