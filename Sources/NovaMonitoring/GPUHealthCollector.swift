import Foundation
import Logging
import NovaCore
import ServiceLifecycle

/// Samples this host's GPUs every `interval` and records their health as KPIs (`gpu.utilization`,
/// `gpu.memory.used`, `gpu.temperature`, `gpu.power`, labelled by host and GPU). The KPIs go to
/// the store `nova serve` reads, which exports them as the `nova_gpu_*` gauges of the dashboard's
/// GPU rows: a worker process has no `/metrics` of its own.
public struct GPUHealthCollector: Service {
  /// The `host` label: the name the registry and jobs' host constraints know this host by.
  public var host: String
  /// Only these GPUs (`nvidia-smi` indices): a worker records the GPUs it offers, so that two
  /// workers sharing a host do not record each other's; nil records every GPU listed.
  public var devices: Set<Int>?
  /// Where the samples are recorded.
  public var kpis: KPIStore
  /// How often the GPUs are sampled.
  public var interval: Duration
  /// The samples' `source`.
  public var source: String
  /// Where a failed pass is reported (the next pass tries again).
  public var logger: Logger
  /// Where `nvidia-smi` is looked for (`PATH`; a fake one in tests).
  public var environment: [String: String]
  /// Dates the samples and paces the passes (a test clock in timing tests).
  public var clock: any NovaClock

  /// A collector of `host`'s GPUs (those of `devices`, or every one) into `kpis`.
  public init(
    host: String, kpis: KPIStore, interval: Duration = .seconds(15), devices: Set<Int>? = nil, source: String = GPUHealth.defaultSource,
    logger: Logger, environment: [String: String] = ProcessInfo.processInfo.environment, clock: any NovaClock = SystemClock()
  ) {
    self.host = host
    self.kpis = kpis
    self.interval = interval
    self.devices = devices
    self.source = source
    self.logger = logger
    self.environment = environment
    self.clock = clock
  }

  /// Samples the GPUs once and records them; returns the samples recorded.
  @discardableResult
  public func collect() async throws -> [KPISample] {
    var health = try await GPUHealth.sample(host: host, environment: environment)
    if let devices { health.readings.removeAll { !devices.contains($0.index) } }
    let samples = health.kpiSamples(time: clock.now().millisecondsSince1970, source: source)
    try await kpis.record(samples)
    return samples
  }

  /// Samples at once, then every `interval`, until graceful shutdown.
  public func run() async throws {
    // No pass at shutdown: a reading taken while the process stops adds nothing.
    await runPeriodically(every: interval, clock: clock, logger: logger, what: "GPU health collection", finalTick: false) { try await collect() }
  }
}
