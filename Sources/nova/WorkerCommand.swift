import ArgumentParser
import Foundation
import Logging
import NovaApplication
import NovaCore
import NovaJobKinds
import NovaMonitoring
import NovaQueue
import NovaServer
import ServiceLifecycle
import UnixSignals

struct WorkerCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "worker",
    abstract: "Run workers (and the lease reaper) without the HTTP API, until SIGINT or SIGTERM.")

  @OptionGroup var store: StoreOptions
  @OptionGroup var pool: PoolOptions

  @Option(help: ArgumentHelp("GPU indices this worker offers, as nvidia-smi numbers them (default: every GPU it lists), or none.", valueName: "0,1"))
  var gpus: String?

  @Option(help: ArgumentHelp("CPUs this worker offers (default: all this process may use).", valueName: "n"))
  var cpus: Int?

  @Option(help: ArgumentHelp("Memory this worker offers: 16G, 512M (default: the host's, or its cgroup's limit).", valueName: "size"))
  var memory: String?

  @Option(name: .customLong("labels"), help: ArgumentHelp("A label this worker advertises; repeatable.", valueName: "key=value"))
  var labels: [String] = []

  @Option(help: ArgumentHelp("The name jobs' host constraints and the registry know this host by (default: its host name).", valueName: "name"))
  var hostName: String?

  @Flag(help: "Print the capacity this worker detects and advertises (JSON), then exit.")
  var printCapacity = false

  @Option(
    help: ArgumentHelp(
      "Record the utilisation, memory, temperature and power of the GPUs this worker offers as KPIs this often (0: never).",
      valueName: "seconds"))
  var gpuSampleSeconds: Double = 15

  func validate() throws {
    try pool.check()
    guard pool.workers > 0 else { throw ValidationError("--workers must be at least 1 for nova worker") }
    try checkNumber(gpuSampleSeconds, "--gpu-sample-seconds", 0...3600, "seconds")
    guard gpuSampleSeconds == 0 || gpuSampleSeconds >= 0.1 else { throw ValidationError("--gpu-sample-seconds must be 0 (never) or at least 0.1") }
  }

  func run() async throws {
    let overrides = try HostCapacity.Overrides(gpus: gpus, cpus: cpus, memory: memory, labels: labels, hostName: hostName)
    let detected = await HostCapacity.detect()
    let capacity = try detected.capacity.applying(overrides)
    if printCapacity {
      let encoder = JSONEncoder()
      encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
      print(String(decoding: try encoder.encode(capacity), as: UTF8.self))
      return
    }
    let queue = InstrumentedJobQueue(try await store.openQueue())
    let logger = NovaLogging.logger("nova.worker")
    logger.notice(
      "host capacity",
      metadata: [
        "gpus": "\(capacity.gpus.map { "\($0.index):\($0.model)" })", "cpus": "\(capacity.cpus)", "memory_mib": "\(capacity.memory_mib)",
        "labels": "\(capacity.labels)", "gpu_detection": "\(detected.gpuProblem ?? "ok")",
      ])
    var configuration = try pool.configuration()
    configuration.capacity = capacity
    let settings = try store.settings()
    let registry = LiveJobRegistry(try NovaApplication.jobRegistry(settings))
    let workers = WorkerPool(queue: queue, registry: registry, configuration: configuration, logger: logger)
    // It also cleans up after workers on this host that died running programs.
    OrphanSweeper.start()
    let reaper = LeaseReaper(queue: queue, interval: .seconds(1), logger: logger)
    var services: [any Service] = [workers, reaper]
    if let collector = try await gpuHealthCollector(capacity, settings: settings, logger: logger) { services.append(collector) }
    if let path = settings.jobsPath {
      // SIGHUP reloads the job kinds; a bad file keeps the last good ones (and the journal says so).
      let reloader = JobKindsReloader(registry: registry, path: path, journal: try await store.open().journal, logger: logger)
      services.append(ReloadOnHangup(reloads: [("job kinds", { try await reloader.reload() })], logger: logger))
    }
    let group = ServiceGroup(
      configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    logger.notice(
      "nova worker started",
      metadata: ["worker": "\(configuration.workerID)", "workers": "\(configuration.concurrency)", "data": "\(store.location)"])
    try await group.run()
  }

  /// The collector of the offered GPUs' health, into the KPI store `nova serve` reads; nil when
  /// there are no GPUs, `--gpu-sample-seconds` is 0, or there is no such store on this host.
  private func gpuHealthCollector(_ capacity: HostCapacity, settings: NovaSettings, logger: Logger) async throws -> GPUHealthCollector? {
    guard gpuSampleSeconds > 0, !capacity.gpus.isEmpty else { return nil }
    // A Redis worker on another host has no data directory (and opening one would create a
    // database nobody reads): it records GPU health only where the data directory is present.
    let redis = settings.queueURL.map { $0.hasPrefix("redis://") || $0.hasPrefix("rediss://") } ?? false
    if redis && !FileManager.default.fileExists(atPath: settings.dataDirectory) {
      logger.notice(
        "GPU health is not recorded: this Redis worker's host has no data directory (\(settings.dataDirectory)) with the KPI store nova serve reads")
      return nil
    }
    return GPUHealthCollector(
      host: capacity.host, kpis: try await store.open().kpis, interval: .seconds(fractional: gpuSampleSeconds),
      devices: Set(capacity.gpus.map(\.index)), logger: logger)
  }
}
