import ArgumentParser
import Foundation
import Logging
import NovaAlerting
import NovaCore
import NovaDatabase
import NovaMonitoring
import NovaPolicy
import NovaQueue
import NovaRedisQueue
import NovaSecurity
import NovaServer

struct BenchCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "bench", abstract: "Benchmarks that print JSON and a human summary.",
    subcommands: [QueueBench.self, AuditBench.self, PolicyBench.self, KPIBench.self, AlertsBench.self, BaselineBench.self, NetServer.self])

  struct QueueBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "queue",
      abstract: "Enqueue N jobs, run them to completion in-process, check none was lost or completed twice.")

    @Option(help: "Queue backend: sqlite (a fresh database in a temporary folder), sqlite://PATH, or redis://HOST:PORT (keys under a fresh prefix, deleted afterwards).")
    var backend: String = "sqlite"

    @Option(help: "Jobs per run.")
    var jobs: Int = 20000

    @Option(help: "Concurrent workers.")
    var workers: Int = 10

    @Option(name: .long, help: "Payload size of each job in bytes.")
    var payloadBytes: Int = 64

    @Option(help: "Jobs the pool claims ahead of free workers (default: adaptive, as for nova worker).")
    var prefetch: Int?

    @Option(help: "Runs; the summary reports the median of each figure.")
    var runs: Int = 1

    @Option(help: "SQLite durability: normal or full.")
    var synchronous: String = "normal"

    @Option(help: "Audit every job transition (on, as nova serve does, or off): in the SQLite transaction, or as records in the Redis scripts.")
    var audit: String = "on"

    @OptionGroup var output: OutputOptions

    func validate() throws {
      guard (1...10_000_000).contains(jobs) else { throw ValidationError("--jobs must be in 1...10000000") }
      guard (1...10_000).contains(workers) else { throw ValidationError("--workers must be in 1...10000") }
      guard (0...(1 << 20)).contains(payloadBytes) else { throw ValidationError("--payload-bytes must be in 0...1048576") }
      guard (1...100).contains(runs) else { throw ValidationError("--runs must be in 1...100") }
      guard (0...100_000).contains(prefetch ?? 0) else { throw ValidationError("--prefetch must be in 0...100000") }
      guard audit == "on" || audit == "off" else { throw ValidationError("--audit must be on or off") }
      guard backend == "sqlite" || backend.hasPrefix("sqlite://") || backend.hasPrefix("redis://") else {
        throw ValidationError("--backend '\(backend)' is not supported; use sqlite, sqlite://PATH or redis://HOST:PORT")
      }
    }

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
          let path = backend.hasPrefix("sqlite://")
            ? String(backend.dropFirst("sqlite://".count)) : folder.appendingPathComponent("bench.sqlite").path
          queue = try SQLiteJobQueue(
            configuration: .init(path: path, synchronous: mode, journal: audit == "on" ? AuditJournal() : nil))
          backendName = "sqlite"
        }
        let showProgress = stderrIsTerminal
        let result = try await QueueBenchmark.run(
          queue: queue, backend: backendName, options: .init(jobs: jobs, workers: workers, payloadBytes: payloadBytes, prefetch: prefetch),
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
          backend \(median.backend)\(median.backend == "sqlite" ? " (synchronous=\(mode.rawValue.lowercased()), audit \(audit))" : " (audit \(audit))"), \(median.jobs) jobs, \(median.workers) workers, \(median.payload_bytes)-byte payloads, median of \(runs) run(s)
            end to end   \(Int(median.e2e_per_s)) jobs/s
            enqueue      \(Int(median.enqueue_per_s)) jobs/s
            latency      p50 \(String(format: "%.1f", median.p50_ms)) ms, p99 \(String(format: "%.1f", median.p99_ms)) ms (enqueue to completion)
            lost \(median.lost), completed twice \(median.duplicate_completions)
          """)
      }
      if median.lost > 0 || median.duplicate_completions > 0 { throw ExitCode(1) }
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

extension BenchCommand {
  struct AuditBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "audit",
      abstract: "Fill an audit log with N entries, then time a full checkpoint, verify, evidence export and bundle verification.")

    @Option(help: "Entries in the log.")
    var entries: Int = 1_000_000

    @Option(help: "Runs (each in a fresh database); the summary reports medians.")
    var runs: Int = 1

    @OptionGroup var output: OutputOptions

    func validate() throws {
      guard (1...50_000_000).contains(entries) else { throw ValidationError("--entries must be in 1...50000000") }
      guard (1...20).contains(runs) else { throw ValidationError("--runs must be in 1...20") }
    }

    func run() async throws {
      var results: [AuditBenchmark.Result] = []
      let showProgress = stderrIsTerminal
      for run in 1...runs {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("nova-audit-bench-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        results.append(
          try await AuditBenchmark.run(entries: entries, directory: folder) { step in
            if showProgress { FileHandle.standardError.write(Data("\r\u{1B}[K  run \(run)/\(runs): \(step)".utf8)) }
          })
        if showProgress { FileHandle.standardError.write(Data("\n".utf8)) }
      }
      let median = AuditBenchmark.median(results)
      if output.json {
        try printJSON(AuditBenchOutput(median: median, runs: results), pretty: false)
      } else {
        print(
          """
          audit log of \(median.entries) entries, median of \(runs) run(s)
            fill              \(Int(median.fill_per_s)) entries/s (\(median.database_bytes / 1_048_576) MiB database)
            checkpoint        \(String(format: "%.2f", median.checkpoint_s)) s (first, over every leaf)
            verify            \(String(format: "%.2f", median.verify_s)) s
            evidence export   \(String(format: "%.2f", median.export_s)) s (\(median.bundle_bytes / 1_048_576) MiB bundle)
            bundle verify     \(String(format: "%.2f", median.bundle_verify_s)) s
            peak memory       \(Int(median.peak_rss_mb_after_fill)) MB after fill, \(Int(median.peak_rss_mb_after_verify)) after verify, \(Int(median.peak_rss_mb_after_export)) after export
          """)
      }
    }
  }
}

/// `nova bench audit --json`: medians at the top level, every run under `runs`.
struct AuditBenchOutput: Encodable {
  var median: AuditBenchmark.Result
  var runs: [AuditBenchmark.Result]

  enum CodingKeys: String, CodingKey { case runs }

  func encode(to encoder: any Encoder) throws {
    try median.encode(to: encoder)
    var container = encoder.container(keyedBy: CodingKeys.self)
    try container.encode(runs, forKey: .runs)
  }
}

extension BenchCommand {
  struct PolicyBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "policy",
      abstract: "Time policy decisions: cached, uncached over N local rules, concurrent callers, and OPA when given.")

    @Option(help: "Local rules to generate.") var rules: Int = 1000
    @Option(help: "Decisions timed per path.") var samples: Int = 100_000
    @Option(help: "An OPA server to time uncached OPA decisions against (http://HOST:PORT).") var opaURL: String?
    @Option(help: "The decision path under /v1/data/ on that server.") var opaPath: String = "nova/authz/allow"
    @Option(help: "Runs; the summary reports medians.") var runs: Int = 3
    @OptionGroup var output: OutputOptions

    func validate() throws {
      guard (1...100_000).contains(rules) else { throw ValidationError("--rules must be in 1...100000") }
      guard (100...10_000_000).contains(samples) else { throw ValidationError("--samples must be in 100...10000000") }
      guard (1...20).contains(runs) else { throw ValidationError("--runs must be in 1...20") }
    }

    func run() async throws {
      var results: [PolicyBenchmark.Result] = []
      for _ in 0..<runs {
        results.append(await PolicyBenchmark.run(rules: rules, samples: samples, opa: opaURL.map { ($0, opaPath) }))
      }
      func median(_ values: [Double]) -> Double { Statistics.median(values) ?? 0 }
      let cachedP50 = median(results.map(\.cached.p50_us))
      let cachedP99 = median(results.map(\.cached.p99_us))
      let localP50 = median(results.map(\.uncached_local.p50_us))
      let localP99 = median(results.map(\.uncached_local.p99_us))
      let scaling = results[0].concurrency.indices.map { index in
        PolicyBenchmark.Scaling(callers: results[0].concurrency[index].callers, decisions_per_s: median(results.map { $0.concurrency[index].decisions_per_s }))
      }
      let opa = results.compactMap(\.opa)
      let summary = PolicyBenchOutput(
        rules: rules, runs: runs, cores: results[0].cores,
        cached: .init(p50_us: cachedP50, p99_us: cachedP99, samples: samples),
        uncached_local: .init(p50_us: localP50, p99_us: localP99, samples: samples),
        opa: opa.isEmpty ? nil : .init(p50_us: median(opa.map(\.p50_us)), p99_us: median(opa.map(\.p99_us)), samples: opa[0].samples),
        concurrency: scaling)
      if output.json {
        try printJSON(summary, pretty: false)
      } else {
        print("policy engine, \(rules) local rules, median of \(runs) run(s), \(summary.cores) cores")
        print(String(format: "  cached decision         p50 %.2f µs, p99 %.2f µs", cachedP50, cachedP99))
        print(String(format: "  uncached, local rules   p50 %.2f µs, p99 %.2f µs", localP50, localP99))
        if let opa = summary.opa { print(String(format: "  uncached, OPA           p50 %.0f µs, p99 %.0f µs", opa.p50_us, opa.p99_us)) }
        for point in scaling {
          print(String(format: "  %d concurrent caller(s)  %.0f cached decisions/s", point.callers, point.decisions_per_s))
        }
      }
    }
  }
}

/// `nova bench policy --json`.
struct PolicyBenchOutput: Encodable {
  var rules: Int
  var runs: Int
  var cores: Int
  var cached: PolicyBenchmark.Latency
  var uncached_local: PolicyBenchmark.Latency
  var opa: PolicyBenchmark.Latency?
  var concurrency: [PolicyBenchmark.Scaling]
}

extension BenchCommand {
  struct KPIBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "kpi", abstract: "Ingest KPI samples in batches into a fresh store, then time one-name, one-hour queries.")
    @Option(help: "Samples to ingest (20 names over 24 hours).") var samples: Int = 1_000_000
    @Option(help: "Samples per batch.") var batch: Int = 1000
    @Option(help: "Runs; the summary reports medians.") var runs: Int = 3
    @OptionGroup var output: OutputOptions

    func validate() throws {
      guard (1000...50_000_000).contains(samples) else { throw ValidationError("--samples must be in 1000...50000000") }
      guard (1...10_000).contains(batch) else { throw ValidationError("--batch must be in 1...10000") }
      guard (1...20).contains(runs) else { throw ValidationError("--runs must be in 1...20") }
    }

    func run() async throws {
      var results: [KPIBenchmark.Result] = []
      for _ in 0..<runs {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("nova-kpi-bench-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        results.append(try await KPIBenchmark.run(samples: samples, batch: batch, directory: folder))
      }
      func median(_ values: [Double]) -> Double { Statistics.median(values) ?? 0 }
      let summary = KPIBenchmark.Result(
        samples: samples, batch: batch, ingest_per_s: median(results.map(\.ingest_per_s)), query_rows: results[0].query_rows,
        query_p50_ms: median(results.map(\.query_p50_ms)), query_p99_ms: median(results.map(\.query_p99_ms)))
      if output.json {
        try printJSON(summary, pretty: false)
      } else {
        print("KPI store, \(samples) samples in batches of \(batch), median of \(runs) run(s)")
        print(String(format: "  ingest   %.0f samples/s", summary.ingest_per_s))
        print(String(format: "  query    one name, one hour (%d rows): p50 %.2f ms, p99 %.2f ms", summary.query_rows, summary.query_p50_ms, summary.query_p99_ms))
      }
    }
  }
}

extension BenchCommand {
  struct BaselineBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "baseline",
      abstract: "Measure this host's CPU, GPU and network; save the run as a baseline or compare it with one.",
      discussion: "A comparison that breaches a threshold exits with status 7 and records a baseline.breach KPI.")

    @OptionGroup var store: StoreOptions
    @OptionGroup var output: OutputOptions
    @Flag(help: "Measure the CPU.") var cpu = false
    @Flag(help: "Measure the GPU (nvidia-smi).") var gpu = false
    @Flag(help: "Measure the network.") var network = false
    @Option(help: "Runs of each measure; figures are medians.") var runs: Int = 5
    @Option(help: ArgumentHelp("A peer running nova bench net-server (default: one on loopback).", valueName: "host:port")) var target: String?
    @Option(help: ArgumentHelp("A GPU workload to run while the GPU is sampled.", valueName: "command")) var gpuLoad: String?
    @Option(help: ArgumentHelp("Save this run as baseline NAME.", valueName: "name")) var saveBaseline: String?
    @Option(help: ArgumentHelp("Compare this run with baseline NAME.", valueName: "name")) var compare: String?
    @Option(help: ArgumentHelp("Thresholds file (default: thresholds.yaml in --data-dir when it exists).", valueName: "file")) var thresholds: String?
    @Option(help: ArgumentHelp("Shrinks the CPU workloads and network transfers (tests).", visibility: .private)) var workScale: Double = 1

    func validate() throws {
      guard (1...50).contains(runs) else { throw ValidationError("--runs must be in 1...50") }
      guard workScale > 0, workScale <= 1 else { throw ValidationError("--work-scale must be in (0, 1]") }
    }

    func run() async throws {
      let all = !cpu && !gpu && !network
      let began = Date()
      let clock = ContinuousClock()
      let start = clock.now
      let progress: @Sendable (String) -> Void = { step in
        if stderrIsTerminal { FileHandle.standardError.write(Data("\r\u{1B}[K  \(step)".utf8)) }
      }
      let formatter = ISO8601DateFormatter()
      formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
      var result = BaselineRun(
        host: HostFacts.current(version: NovaVersion.string, revision: ProcessInfo.processInfo.environment["NOVA_GIT_REVISION"] ?? NovaVersion.revision),
        started_at: formatter.string(from: began), runs: runs, cpu: nil, gpu: nil, network: nil, duration_s: 0)
      if all || cpu { result.cpu = await CPUProbe.run(runs: runs, scale: workScale, progress: progress) }
      let megabytes = max(1, Int(256 * workScale))
      if all || gpu {
        progress("gpu")
        result.gpu = await GPUProbe.run(samples: max(runs, 3), interval: .milliseconds(200), load: gpuLoad)
      }
      if all || network {
        progress("network")
        if let target {
          guard let colon = target.lastIndex(of: ":"), let port = Int(target[target.index(after: colon)...]) else {
            throw NovaError.invalidInput(field: "--target", message: "'\(target)' is not host:port")
          }
          result.network = try NetworkProbe.run(host: String(target[..<colon]), port: port, runs: runs, megabytes: megabytes)
        } else {
          let server = try NovaMonitoring.NetServer(port: 0)
          defer { server.stop() }
          result.network = try NetworkProbe.run(host: "127.0.0.1", port: server.port, runs: runs, megabytes: megabytes)
        }
      }
      if stderrIsTerminal { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
      let elapsed = clock.now - start
      result.duration_s = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
      let files = BaselineFiles(dataDirectory: store.dataDir)
      let artefact = try files.write(run: result)
      if let saveBaseline { try files.save(result, as: saveBaseline) }
      var comparison: BaselineComparison?
      if let compare {
        let baseline = try files.load(compare)
        let thresholdsPath = thresholds ?? {
          let inDataDir = (store.dataDir as NSString).appendingPathComponent("thresholds.yaml")
          return FileManager.default.fileExists(atPath: inDataDir) ? inDataDir : nil
        }()
        let limits = try thresholdsPath.map { try BaselineThresholds.load(path: $0) } ?? BaselineThresholds()
        comparison = BaselineComparison.compare(result, with: baseline, name: compare, thresholds: limits)
      }
      if output.json {
        try printJSON(BaselineOutput(run: result, comparison: comparison, artefact: artefact), pretty: false)
      } else {
        printSummary(result, comparison: comparison, artefact: artefact)
      }
      if let comparison {
        let security = try await store.openSecurity()
        try await KPIStore(database: security.database).record(comparison.kpiSamples(time: Date().millisecondsSince1970))
        if comparison.breached {
          try await OrchestrationJournal(database: security.database).append(
            kind: "baseline.breach", subject: comparison.baseline_name,
            payload: .object([
              "breaches": .array(
                comparison.deltas.filter(\.breached).map {
                  .object([
                    "measure": .string($0.name), "delta_percent": .double($0.delta_percent), "threshold_percent": .double($0.threshold_percent),
                    "noise_percent": .double($0.noise_percent),
                  ])
                })
            ]))
          throw ExitCode(ExitStatus.baselineBreach)
        }
      }
    }

    func printSummary(_ run: BaselineRun, comparison: BaselineComparison?, artefact: String) {
      print("host \(run.host.hostname): \(run.host.cpu_model), \(run.host.cpu_count) CPUs, \(run.host.memory_bytes >> 20) MiB, kernel \(run.host.kernel); \(run.runs) runs, \(String(format: "%.1f", run.duration_s)) s")
      for measure in run.cpu?.measures ?? [] {
        print("  " + measure.name.padding(toLength: 22, withPad: " ", startingAt: 0) + String(format: "%10.1f ", measure.median) + measure.unit + String(format: " (spread %.1f %%)", measure.spread * 100))
      }
      if let cpu = run.cpu {
        print(String(format: "  cpu utilisation %.0f %%, load %.2f", (cpu.utilisation ?? 0) * 100, cpu.load1 ?? 0))
      }
      if let gpu = run.gpu {
        if gpu.available {
          for (index, reading) in (gpu.samples.last ?? []).enumerated() {
            let utilization = gpu.median_utilization_percent[index].map { String(format: "%.0f %%", $0) } ?? "missing"
            print("  gpu\(index) \(reading.name): utilisation \(utilization), memory \(reading.memory_used_mib.map { "\(Int($0))" } ?? "missing")/\(reading.memory_total_mib.map { "\(Int($0))" } ?? "missing") MiB, power \(reading.power_watts.map { "\($0) W" } ?? "missing"), \(reading.temperature_c.map { "\(Int($0)) °C" } ?? "missing")")
          }
        } else {
          print("  \(gpu.reason ?? "no GPU")")
        }
      }
      if let network = run.network {
        print(String(format: "  network to %@: %.0f Mbit/s (spread %.1f %%), rtt p50 %.0f µs, p99 %.0f µs", network.target as NSString, network.throughput_mbit_s.median, network.throughput_mbit_s.spread * 100, network.rtt_p50_us, network.rtt_p99_us))
      }
      print("  written to \(artefact)")
      if let comparison {
        print("compared with baseline '\(comparison.baseline_name)':")
        for delta in comparison.deltas {
          print("  " + (delta.breached ? "BREACH " : "ok     ") + delta.name.padding(toLength: 22, withPad: " ", startingAt: 0) + String(format: " %+.1f %% (threshold %.0f %%, noise %.1f %%)", delta.delta_percent, delta.threshold_percent, delta.noise_percent))
        }
      }
    }
  }

  struct NetServer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "net-server", abstract: "Serve as the peer of nova bench baseline --network --target HOST:PORT.")
    @Option(help: "Port to listen on.") var port: Int
    @Option(help: "Address to listen on.") var host: String = "0.0.0.0"

    func run() async throws {
      let server = try NovaMonitoring.NetServer(host: host, port: port)
      FileHandle.standardError.write(Data("nova net-server listening on \(host):\(server.port)\n".utf8))
      while true { try await Task.sleep(for: .seconds(3600)) }
    }
  }
}

struct BaselineOutput: Encodable {
  var run: BaselineRun
  var comparison: BaselineComparison?
  var artefact: String
}

extension BenchCommand {
  struct AlertsBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "alerts",
      abstract: "Time one evaluation of many rules over fresh KPIs, and a page from the crossing sample to the webhook.")
    @Option(help: "Rules, each on a KPI of its own (1 % of them crossing).") var rules: Int = 10_000
    @Option(help: "Evaluations to time.") var runs: Int = 5
    @Option(help: "Pages (and resolves) to time through a webhook on loopback.") var pages: Int = 50
    @OptionGroup var output: OutputOptions

    func validate() throws {
      guard (1...1_000_000).contains(rules) else { throw ValidationError("--rules must be in 1...1000000") }
      guard (1...100).contains(runs) else { throw ValidationError("--runs must be in 1...100") }
      guard (1...10_000).contains(pages) else { throw ValidationError("--pages must be in 1...10000") }
    }

    func run() async throws {
      let folder = FileManager.default.temporaryDirectory.appendingPathComponent("nova-alerts-bench-\(UUID().uuidString)")
      try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
      defer { try? FileManager.default.removeItem(at: folder) }
      let result = try await AlertBenchmark.run(rules: rules, runs: runs, pages: pages, directory: folder)
      if output.json {
        try printJSON(result, pretty: false)
      } else {
        print("alert engine: \(rules) rules, \(result.firing_alerts) firing")
        print(String(format: "  evaluation over fresh KPIs   p50 %.1f ms, p99 %.1f ms (%d runs)", result.evaluation_ms.p50, result.evaluation_ms.p99, runs))
        print(String(format: "  KPI crossing -> webhook page p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d pages, evaluation interval %.0f s)", result.page_latency_ms.p50, result.page_latency_ms.p99, result.page_latency_ms.max, pages, result.evaluation_interval_s))
        print(String(format: "  KPI clearing -> resolve      p50 %.1f ms, p99 %.1f ms", result.resolve_latency_ms.p50, result.resolve_latency_ms.p99))
        print("  duplicate pages              \(result.duplicate_pages)")
      }
    }
  }
}
