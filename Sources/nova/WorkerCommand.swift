import ArgumentParser
import Foundation
import Logging
import NovaApplication
import NovaCore
import NovaJobKinds
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

  func validate() throws {
    try pool.check()
    guard pool.workers > 0 else { throw ValidationError("--workers must be at least 1 for nova worker") }
  }

  func run() async throws {
    let queue = InstrumentedJobQueue(try await store.openQueue())
    let logger = NovaLogging.logger("nova.worker")
    let configuration = try pool.configuration()
    let settings = try store.settings()
    let registry = LiveJobRegistry(try NovaApplication.jobRegistry(settings))
    let workers = WorkerPool(queue: queue, registry: registry, configuration: configuration, logger: logger)
    // It also cleans up after workers on this host that died running programs.
    OrphanSweeper.start()
    let reaper = LeaseReaper(queue: queue, interval: .seconds(1), logger: logger)
    var services: [any Service] = [workers, reaper]
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
}
