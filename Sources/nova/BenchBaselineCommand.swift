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
import NovaRedisQueue
import NovaSecurity
import NovaServer

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
      var peer: (host: String, port: Int)?
      if let target {
        guard let colon = target.lastIndex(of: ":"), let port = Int(target[target.index(after: colon)...]) else {
          throw NovaError.invalidInput(field: "--target", message: "'\(target)' is not host:port")
        }
        peer = (String(target[..<colon]), port)
      }
      let progress: @Sendable (String) -> Void = { step in
        if stderrIsTerminal { FileHandle.standardError.write(Data("\r\u{1B}[K  \(step)".utf8)) }
      }
      let host = HostFacts.current(
        version: NovaVersion.string, revision: ProcessInfo.processInfo.environment["NOVA_GIT_REVISION"] ?? NovaVersion.revision)
      let result = try await BaselineMeasurement.run(
        .init(
          cpu: all || cpu, gpu: all || gpu, network: all || network, runs: runs, target: peer, gpuLoad: gpuLoad,
          workScale: workScale),
        host: host, progress: progress)
      if stderrIsTerminal { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
      let files = BaselineFiles(dataDirectory: store.dataDir)
      let artefact = try files.write(run: result)
      if let saveBaseline { try files.save(result, as: saveBaseline) }
      var comparison: BaselineComparison?
      if let compare {
        let baseline = try files.load(compare)
        let thresholdsPath =
          thresholds
          ?? {
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
        try await comparison.record(
          kpis: try KPIStore(database: security.database), journal: try OrchestrationJournal(database: security.database),
          time: Date().millisecondsSince1970)
        if comparison.breached { throw ExitCode(ExitStatus.baselineBreach) }
      }
    }

    func printSummary(_ run: BaselineRun, comparison: BaselineComparison?, artefact: String) {
      print(
        "host \(run.host.hostname): \(run.host.cpu_model), \(run.host.cpu_count) CPUs, \(run.host.memory_bytes >> 20) MiB, kernel \(run.host.kernel); \(run.runs) runs, \(String(format: "%.1f", run.duration_s)) s"
      )
      for measure in run.cpu?.measures ?? [] {
        print(
          "  " + measure.name.padding(toLength: 22, withPad: " ", startingAt: 0) + String(format: "%10.1f ", measure.median) + measure.unit
            + String(format: " (spread %.1f %%)", measure.spread * 100))
      }
      if let cpu = run.cpu {
        print(String(format: "  cpu utilisation %.0f %%, load %.2f", (cpu.utilisation ?? 0) * 100, cpu.load1 ?? 0))
      }
      if let gpu = run.gpu {
        if gpu.available {
          for (index, reading) in (gpu.samples.last ?? []).enumerated() {
            let utilization = gpu.median_utilization_percent[index].map { String(format: "%.0f %%", $0) } ?? "missing"
            print(
              "  gpu\(index) \(reading.name): utilisation \(utilization), memory \(reading.memory_used_mib.map { "\(Int($0))" } ?? "missing")/\(reading.memory_total_mib.map { "\(Int($0))" } ?? "missing") MiB, power \(reading.power_watts.map { "\($0) W" } ?? "missing"), \(reading.temperature_c.map { "\(Int($0)) °C" } ?? "missing")"
            )
          }
        } else {
          print("  \(gpu.reason ?? "no GPU")")
        }
      }
      if let network = run.network {
        print(
          String(
            format: "  network to %@: %.0f Mbit/s (spread %.1f %%), rtt p50 %.0f µs, p99 %.0f µs", network.target as NSString,
            network.throughput_mbit_s.median, network.throughput_mbit_s.spread * 100, network.rtt_p50_us, network.rtt_p99_us))
      }
      print("  written to \(artefact)")
      if let comparison {
        print("compared with baseline '\(comparison.baseline_name)':")
        for delta in comparison.deltas {
          print(
            "  " + (delta.breached ? "BREACH " : "ok     ") + delta.name.padding(toLength: 22, withPad: " ", startingAt: 0)
              + String(format: " %+.1f %% (threshold %.0f %%, noise %.1f %%)", delta.delta_percent, delta.threshold_percent, delta.noise_percent))
        }
      }
    }
  }
}

struct BaselineOutput: Encodable {
  var run: BaselineRun
  var comparison: BaselineComparison?
  var artefact: String
}
