import ArgumentParser
import Foundation
import Logging
import NovaAlerting
import NovaBenchmarks
import NovaCore
import NovaDatabase
import NovaMonitoring
import NovaPolicy
import NovaQueue
import NovaRedis
import NovaRedisQueue
import NovaSecurity
import NovaServer

extension BenchCommand {
  struct QueueBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "queue",
      abstract: "Enqueue N jobs, run them to completion in-process, check none was lost or completed twice.",
      discussion: "With --rate, jobs arrive one at a time at a steady pace, and it reports how soon each one starts.")

    @Option(
      help:
        "Queue backend: sqlite (a fresh database in a temporary folder), sqlite://PATH, or redis://HOST:PORT (keys under a fresh prefix, deleted afterwards)."
    )
    var backend: String = "sqlite"

    @Option(help: "Jobs per run.")
    var jobs: Int = 20000

    @Option(help: "Concurrent workers.")
    var workers: Int = 10

    @Option(name: .long, help: "Payload size of each job in bytes.")
    var payloadBytes: Int = 64

    @Option(help: "Jobs the pool claims ahead of free workers (default: adaptive, as for nova worker).")
    var prefetch: Int?

    @Option(help: "Steady arrivals: enqueue one job at a time, this many per second (default: all at once, in batches).")
    var rate: Int?

    @Option(name: .customLong("job-ms"), help: "How long each job runs, in milliseconds (default: 100 with --rate, else 0).")
    var jobMs: Int?

    @Option(
      name: .customLong("warmup-ms"),
      help:
        "With --rate: the jobs due in this first span warm the process up and are left out of the start figures (start_p99_all_ms keeps them); default 500, at most a tenth of the run."
    )
    var warmupMs: Int?

    @Option(help: "Runs; the summary reports the median of each figure.")
    var runs: Int = 1

    @Option(help: "How each job runs: in-process (a no-op handler) or command (/bin/true, one process per job: the cost of spawning).")
    var kind: String = "in-process"

    @Option(help: "SQLite durability: normal or full.")
    var synchronous: String = "normal"

    @Option(help: "Audit every job transition (on, as nova serve does, or off): in the SQLite transaction, or as records in the Redis scripts.")
    var audit: String = "on"

    @Option(name: .long, help: "GPUs each job asks for (placement on; with --fake-gpus).")
    var gpusPerJob: Int = 0

    @Option(name: .customLong("fake-gpus"), help: "GPUs the benchmark's host offers (a declared capacity; no real GPU is used).")
    var fakeGPUs: Int = 0

    @Option(name: .long, help: "Jobs carry one of this many concurrency keys, each limited to --workers running (the cost of the check).")
    var concurrencyKeys: Int = 0

    @Flag(help: "Enqueue every job before the workers start and time the burn-down alone (not with --rate).")
    var backlog = false

    @OptionGroup var output: OutputOptions

    func validate() throws {
      guard (0...64).contains(gpusPerJob), (0...1024).contains(fakeGPUs) else {
        throw ValidationError("--gpus-per-job must be in 0...64 and --fake-gpus in 0...1024")
      }
      guard gpusPerJob == 0 || (fakeGPUs >= gpusPerJob) else {
        throw ValidationError("--gpus-per-job \(gpusPerJob) needs --fake-gpus of at least as many, or no job would ever fit")
      }
      guard (0...1_000_000).contains(concurrencyKeys) else { throw ValidationError("--concurrency-keys must be in 0...1000000") }
      guard (1...10_000_000).contains(jobs) else { throw ValidationError("--jobs must be in 1...10000000") }
      guard (1...10_000).contains(workers) else { throw ValidationError("--workers must be in 1...10000") }
      guard (0...(1 << 20)).contains(payloadBytes) else { throw ValidationError("--payload-bytes must be in 0...1048576") }
      guard (1...100).contains(runs) else { throw ValidationError("--runs must be in 1...100") }
      guard (0...100_000).contains(prefetch ?? 0) else { throw ValidationError("--prefetch must be in 0...100000") }
      guard (1...100_000).contains(rate ?? 1) else { throw ValidationError("--rate must be in 1...100000 jobs per second") }
      guard !backlog || rate == nil else { throw ValidationError("--backlog enqueues everything at once; it cannot go with --rate") }
      guard (0...60_000).contains(jobMs ?? 0) else { throw ValidationError("--job-ms must be in 0...60000") }
      guard (0...60_000).contains(warmupMs ?? 0) else { throw ValidationError("--warmup-ms must be in 0...60000") }
      guard warmupMs == nil || rate != nil else {
        throw ValidationError("--warmup-ms leaves the first jobs of steady arrivals out of the start figures; it goes with --rate")
      }
      if let span = arrivalSpanMs, let warmupMs, Double(warmupMs) >= span {
        throw ValidationError(
          "--warmup-ms \(warmupMs) leaves no job to measure: \(jobs) jobs at \(rate ?? 0) a second all arrive within \(Int(span)) ms")
      }
      guard audit == "on" || audit == "off" else { throw ValidationError("--audit must be on or off") }
      guard kind == "in-process" || kind == "command" else { throw ValidationError("--kind must be in-process or command") }
      guard backend == "sqlite" || backend.hasPrefix("sqlite://") || backend.hasPrefix("redis://") else {
        throw ValidationError("--backend '\(backend)' is not supported; use sqlite, sqlite://PATH or redis://HOST:PORT")
      }
    }

    /// With a rate: how long the arrivals last, in ms.
    var arrivalSpanMs: Double? { rate.map { Double(jobs) / Double($0) * 1000 } }

    /// The warm-up asked for, or 500 ms but no more than a tenth of the arrivals' span.
    var warmup: Int { warmupMs ?? arrivalSpanMs.map { min(500, Int($0 / 10)) } ?? 0 }

    func run() async throws {
      guard let mode = SQLiteJobQueue.Synchronous(rawValue: synchronous.uppercased()) else {
        throw NovaError.invalidInput(field: "--synchronous", message: "'\(synchronous)' is not normal or full")
      }
      var logger = NovaLogging.logger("nova.bench")
      logger.logLevel = .warning
      var results: [QueueBenchmark.Result] = []
      for run in 1...runs {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("nova-bench-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let queue: any JobQueue
        let backendName: String
        if backend.hasPrefix("redis://") {
          queue = try await QueueURL.open(backend, keyPrefix: "nova-bench-\(UUID().uuidString.prefix(8))", audit: audit == "on")
          backendName = "redis"
        } else {
          let path =
            backend.hasPrefix("sqlite://")
            ? String(backend.dropFirst("sqlite://".count)) : folder.appendingPathComponent("bench.sqlite").path
          queue = try SQLiteJobQueue(
            configuration: .init(path: path, synchronous: mode, journal: audit == "on" ? AuditJournal() : nil))
          backendName = "sqlite"
        }
        var options = QueueBenchmark.Options(jobs: jobs, workers: workers, payloadBytes: payloadBytes, prefetch: prefetch)
        if kind == "command" { options.command = ["/bin/true"] }
        options.rate = rate.map { Double($0) }
        options.jobDuration = .milliseconds(jobMs ?? (rate == nil ? 0 : 100))
        options.warmup = .milliseconds(warmup)
        options.gpusPerJob = gpusPerJob
        options.fakeGPUs = fakeGPUs
        options.concurrencyKeys = concurrencyKeys
        options.backlog = backlog
        let redisServer = try backend.hasPrefix("redis://") ? RedisClient(configuration: .init(url: RedisURL(parsing: backend))) : nil
        defer { redisServer?.close() }
        options.redisServer = redisServer
        let showProgress = stderrIsTerminal
        let result = try await QueueBenchmark.run(
          queue: queue, backend: backendName, options: options,
          logger: logger,
          progress: { done, total in
            if showProgress {
              FileHandle.standardError.write(Data("\r  run \(run)/\(runs): \(done)/\(total) jobs".utf8))
            }
          })
        if showProgress { FileHandle.standardError.write(Data("\n".utf8)) }
        if let redis = queue as? RedisJobQueue {
          try await redis.deleteAllKeys()
          redis.close()
        }
        results.append(result)
      }
      let median = QueueBenchmark.median(results)
      if output.json {
        try printJSON(
          BenchOutput(median: median, runs: results, synchronous: mode.rawValue.lowercased(), audit: audit == "on"),
          pretty: false)
      } else {
        print(
          """
          backend \(median.backend)\(median.backend == "sqlite" ? " (synchronous=\(mode.rawValue.lowercased()), audit \(audit))" : " (audit \(audit))"), \(median.jobs) jobs (\(median.kind == "command" ? "each one process of /bin/true: \(median.processes) processes" : "in-process")), \(median.workers) workers, \(median.payload_bytes)-byte payloads, median of \(runs) run(s)
            end to end   \(Int(median.e2e_per_s)) jobs/s\(median.backlog == true ? " (the backlog burned down, enqueued first)" : "")
            enqueue      \(Int(median.enqueue_per_s)) jobs/s
            latency      p50 \(String(format: "%.1f", median.p50_ms)) ms, p99 \(String(format: "%.1f", median.p99_ms)) ms (enqueue to completion)
          \(steadyLines(median))\(placementLines(median))\(tenthLines(median))\(redisLines(median))\(writerLines(median))  lost \(median.lost), completed twice \(median.duplicate_completions)
          """)
      }
      if median.lost > 0 || median.duplicate_completions > 0 { throw ExitCode(1) }
    }

    /// The summary's line for Redis's own cost (none for SQLite).
    func redisLines(_ median: QueueBenchmark.Result) -> String {
      guard let cpu = median.redis_cpu_ms_per_job, let scripts = median.redis_scripts_per_job, let calls = median.redis_calls_per_job
      else { return "" }
      return "  redis        \(String(format: "%.3f", cpu)) ms CPU, \(String(format: "%.1f", calls)) commands (scripts' own included), "
        + "\(String(format: "%.2f", scripts)) scripts per job\n"
    }

    /// The summary's line for the SQLite writer's commits (none for Redis).
    func writerLines(_ median: QueueBenchmark.Result) -> String {
      guard let commits = median.sqlite_commits_per_job, let operations = median.sqlite_operations_per_commit else { return "" }
      let busy = median.sqlite_writer_busy.map { String(format: ", busy %.0f %% of the run", $0 * 100) } ?? ""
      return "  writer       \(String(format: "%.2f", commits)) commits per job, \(String(format: "%.1f", operations)) operations per commit\(busy)\n"
    }

    /// The summary's lines for the rate and memory by tenth of the jobs (none under 10 jobs).
    func tenthLines(_ median: QueueBenchmark.Result) -> String {
      guard let rates = median.tenths_per_s, let memory = median.rss_mib_by_tenth, let ratio = median.last_to_first_tenth else {
        return ""
      }
      let perTenth = rates.map { String(Int($0)) }.joined(separator: " ")
      let resident = memory.map { String(Int($0)) }.joined(separator: " ")
      return "  by tenth     \(perTenth) jobs/s (last/first \(String(format: "%.2f", ratio)))\n"
        + "  memory       \(resident) MiB resident by tenth, peak \(Int(median.peak_rss_mib ?? 0)) MiB\n"
    }

    /// The summary's lines for placement and keys (none without), each ending in a newline.
    func placementLines(_ median: QueueBenchmark.Result) -> String {
      var lines = ""
      if fakeGPUs > 0 {
        lines += "  placement    \(gpusPerJob) GPU(s) per job on a host of \(fakeGPUs)"
        if let p50 = median.gpu_handoff_p50_ms, let p99 = median.gpu_handoff_p99_ms {
          lines += "; a freed GPU's next job starts after p50 \(String(format: "%.1f", p50)) ms, p99 \(String(format: "%.1f", p99)) ms"
        }
        lines += "\n"
      }
      if concurrencyKeys > 0 { lines += "  keys         \(concurrencyKeys) concurrency keys, each limited to \(workers) running\n" }
      return lines
    }

    /// The summary's lines for steady arrivals (none for a burst), each ending in a newline.
    func steadyLines(_ median: QueueBenchmark.Result) -> String {
      func format(_ value: Double?) -> String { value.map { String(format: "%.1f", $0) } ?? "-" }
      guard let rate, let start50 = median.start_p50_ms, let start99 = median.start_p99_ms else { return "" }
      let achieved = median.arrival_per_s.map { String(format: "%.1f", $0) } ?? "-"
      return """
          arrivals     \(rate) jobs/s asked, \(achieved) achieved, one at a time; each job runs \(Int(median.job_ms ?? 0)) ms
          start        p50 \(String(format: "%.1f", start50)) ms, p99 \(String(format: "%.1f", start99)) ms (arrival to handler start, after a \(warmup) ms warm-up); p99 \(format(median.start_p99_all_ms)) ms over every job
          of which     stored p50 \(format(median.enqueue_p50_ms)) ms, p99 \(format(median.enqueue_p99_ms)) ms (arrival to the enqueue's return); picked up p50 \(format(median.pickup_p50_ms)) ms, p99 \(format(median.pickup_p99_ms)) ms (its return to the start)
          running      \(median.max_running ?? 0) at most at once

        """
    }
  }
}

/// `nova bench queue --json`: the median figures at the top level, every run under `runs`.
struct BenchOutput: Encodable {
  var median: QueueBenchmark.Result
  var runs: [QueueBenchmark.Result]
  var synchronous: String
  var audit: Bool

  enum CodingKeys: String, CodingKey { case runs, synchronous, audit }

  func encode(to encoder: any Encoder) throws {
    try median.encode(to: encoder)
    var container = encoder.container(keyedBy: CodingKeys.self)
    try container.encode(runs, forKey: .runs)
    try container.encode(synchronous, forKey: .synchronous)
    try container.encode(audit, forKey: .audit)
  }
}
