import Foundation
import NovaCore

/// One `nova bench baseline` run: measures what was asked, and records a comparison where the
/// alert engine and the dashboards see it.
public enum BaselineMeasurement {
  /// What to measure and how hard.
  public struct Options: Sendable {
    public var cpu: Bool
    public var gpu: Bool
    public var network: Bool
    /// Runs of each measure (figures are medians).
    public var runs: Int
    /// A peer running `nova bench net-server`, as host and port; nil measures against one on loopback.
    public var target: (host: String, port: Int)?
    /// A command that loads the GPU while it is sampled.
    public var gpuLoad: String?
    /// Shrinks CPU workloads and network transfers (tests).
    public var workScale: Double

    public init(
      cpu: Bool, gpu: Bool, network: Bool, runs: Int = 5, target: (host: String, port: Int)? = nil, gpuLoad: String? = nil,
      workScale: Double = 1
    ) {
      self.cpu = cpu
      self.gpu = gpu
      self.network = network
      self.runs = runs
      self.target = target
      self.gpuLoad = gpuLoad
      self.workScale = workScale
    }
  }

  /// Measures this host; `host` describes it in the run.
  public static func run(_ options: Options, host: HostFacts, progress: @Sendable (String) -> Void = { _ in }) async throws -> BaselineRun {
    let began = Date()
    let start = ContinuousClock.now
    var result = BaselineRun(host: host, started_at: AuditTime.string(began.millisecondsSince1970), runs: options.runs)
    if options.cpu { result.cpu = await CPUProbe.run(runs: options.runs, scale: options.workScale, progress: progress) }
    if options.gpu {
      progress("gpu")
      result.gpu = await GPUProbe.run(samples: max(options.runs, 3), interval: .milliseconds(200), load: options.gpuLoad)
    }
    if options.network {
      progress("network")
      let megabytes = max(1, Int(256 * options.workScale))
      if let target = options.target {
        result.network = try NetworkProbe.run(host: target.host, port: target.port, runs: options.runs, megabytes: megabytes)
      } else {
        let server = try NetServer(port: 0)
        defer { server.stop() }
        result.network = try NetworkProbe.run(host: "127.0.0.1", port: server.port, runs: options.runs, megabytes: megabytes)
      }
    }
    result.duration_s = (ContinuousClock.now - start).seconds
    return result
  }
}

extension BaselineComparison {
  /// Records the comparison: a `baseline.delta` KPI per measure (and `baseline.breach` per
  /// breached one), and, when a measure breached, a `baseline.breach` journal entry naming them.
  public func record(kpis: KPIStore, journal: OrchestrationJournal, time: Int64) async throws {
    try await kpis.record(kpiSamples(time: time))
    guard breached else { return }
    try await journal.append(
      kind: "baseline.breach", subject: baseline_name,
      payload: .object([
        "breaches": .array(
          deltas.filter(\.breached).map {
            .object([
              "measure": .string($0.name), "delta_percent": .double($0.delta_percent),
              "threshold_percent": .double($0.threshold_percent), "noise_percent": .double($0.noise_percent),
            ])
          })
      ]))
  }
}
