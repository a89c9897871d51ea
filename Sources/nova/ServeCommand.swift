import ArgumentParser
import Foundation
import Logging
import Metrics
import NovaAlerting
import NovaApplication
import NovaCore
import NovaMonitoring
import NovaPolicy
import NovaQueue
import NovaRedisQueue
import NovaSecurity
import NovaServer
import ServiceLifecycle
import UnixSignals

struct ServeCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "serve",
    abstract: "Run the HTTP API, the worker pool and the lease reaper until SIGINT or SIGTERM.")

  @OptionGroup var store: StoreOptions

  @Option(help: "Address to listen on.")
  var host: String = "127.0.0.1"

  @Option(help: "Port to listen on (0 picks a free one).")
  var port: Int = 8080

  @OptionGroup var pool: PoolOptions

  @OptionGroup var thresholds: ThresholdsOptions

  @Option(name: .long, help: ArgumentHelp("Largest job payload accepted, in bytes.", valueName: "bytes"))
  var maxPayloadBytes: Int = 1 << 20

  @Option(name: .long, help: ArgumentHelp("Keep succeeded and cancelled jobs this many hours (0 keeps them forever).", valueName: "hours"))
  var retentionHours: Double = 168

  @Option(name: .long, help: ArgumentHelp("Keep dead jobs this many hours for inspection (0 keeps them forever).", valueName: "hours"))
  var deadRetentionHours: Double = 720

  @Flag(name: .long, help: "Serve /metrics without a token (for a Prometheus that sends none).")
  var metricsOpen = false

  @Option(name: .long, help: ArgumentHelp("Sign an audit checkpoint this often when the log grew.", valueName: "seconds"))
  var checkpointSeconds: Double = 60

  @Option(
    name: .long,
    help: ArgumentHelp(
      "Also keep every signed checkpoint here: a directory (one file each; check with `nova audit verify --checkpoint-dir`) or an http(s) URL that receives each by POST.",
      valueName: "dir|url"))
  var checkpointMirror: String?

  @Option(name: .long, help: ArgumentHelp("Approved policy baseline (from nova policy approve) to watch for drift.", valueName: "file"))
  var policyBaseline: String?

  @Option(name: .long, help: ArgumentHelp("Keep KPI samples this many days.", valueName: "days"))
  var kpiRetentionDays: Double = 30

  @Option(name: .long, help: ArgumentHelp("Refuse KPI samples dated more than this far ahead of now (clock skew).", valueName: "seconds"))
  var kpiFutureSeconds: Double = 300

  @Option(name: .long, help: ArgumentHelp("Collect queue, activity and policy KPIs (and the pool's GPU health) this often.", valueName: "seconds"))
  var collectSeconds: Double = 15

  @Flag(name: .long, help: "Serve /lux and /v1/compliance without a token (behind a proxy that authenticates).")
  var luxOpen = false

  @Option(name: .long, help: ArgumentHelp("Where the LUX page links the Grafana dashboard.", valueName: "url"))
  var dashboardURL: String?

  @OptionGroup var console: ConsoleOptions

  func validate() throws {
    guard (0...65535).contains(port) else { throw ValidationError("--port \(port) is out of range 0...65535") }
    guard maxPayloadBytes > 0 else { throw ValidationError("--max-payload-bytes must be positive") }
    try checkNumber(retentionHours, "--retention-hours", 0...87_600, "hours")
    try checkNumber(deadRetentionHours, "--dead-retention-hours", 0...87_600, "hours")
    try checkNumber(checkpointSeconds, "--checkpoint-seconds", 1...86_400, "seconds")
    try checkNumber(kpiFutureSeconds, "--kpi-future-seconds", 0...86_400, "seconds")
    try checkNumber(kpiRetentionDays, "--kpi-retention-days", 0.001...3650, "days")
    try checkNumber(collectSeconds, "--collect-seconds", 0.1...3600, "seconds")
    try pool.check()
    try console.check()
  }

  func run() async throws {
    // The executable, not a library, chooses where metrics go: Nova's Prometheus registry.
    MetricsSystem.bootstrap(NovaMetrics.factory)
    NovaMetrics.recordBuildInfo()
    let application = try await store.open()
    let logger = NovaLogging.logger("nova.serve")
    // Before anything is recorded: a second server on this Redis leaves no trace of its try.
    let lock = try await serveLock(on: application.queue, logger: logger)
    do {
      try await serve(application, lock: lock, logger: logger)
    } catch {
      // A server that fails before or while serving gives the lock back at once, so that it can
      // be started again without waiting for the lock to lapse.
      if let lock { try? await lock.release() }
      throw error
    }
  }

  /// The lock that keeps this the only `nova serve` on its Redis (none on SQLite).
  private func serveLock(on queue: any JobQueue, logger: Logger) async throws -> RedisServeLock? {
    guard let redis = queue as? RedisJobQueue else { return nil }
    let lock = RedisServeLock(queue: redis, listen: port == 0 ? nil : "\(host):\(port)")
    try await lock.acquire { logger.notice("\($0)") }
    return lock
  }

  private func serve(_ application: NovaApplication, lock: RedisServeLock?, logger: Logger) async throws {
    let security = application.security
    var poolConfiguration = try pool.configuration()
    if pool.workers > 0 {
      // The built-in pool places jobs on this host's GPUs, CPUs and memory as `nova worker` does.
      let detected = await HostCapacity.detect()
      poolConfiguration.capacity = detected.capacity
      logger.info(
        "host capacity", metadata: ["gpus": "\(detected.capacity.gpus.count)", "gpu_detection": "\(detected.gpuProblem ?? "ok")"])
    }
    let configuration = NovaServer.Configuration(
      host: host, port: port, workers: pool.workers, maxPayloadBytes: maxPayloadBytes,
      pool: poolConfiguration, metricsInterval: .seconds(fractional: collectSeconds),
      retention: retentionHours > 0 ? .seconds(fractional: retentionHours * 3600) : nil, metricsOpen: metricsOpen,
      checkpointInterval: .seconds(fractional: checkpointSeconds))
    // The configuration a server ran with is part of the record.
    try await security.audit.append(
      event: "config.loaded", subject: "serve",
      payload: .object([
        "backend": .string(store.effectiveQueueURL == nil ? "sqlite" : "redis"), "host": .string(host),
        "metrics_open": .bool(metricsOpen), "port": .int(Int64(port)), "workers": .int(Int64(pool.workers)),
      ]))
    if try await !security.tokens.hasActiveTokens() {
      logger.warning(
        "no API tokens yet: every request but /healthz will get 401; create one with `nova tokens create --name admin --role admin --data-dir \(store.dataDir)`"
      )
    }
    var withBaseline = configuration
    withBaseline.policyBaseline = try policyBaseline.map { try loadBaseline($0) }
    withBaseline.dataDirectory = store.dataDir
    withBaseline.deadRetention = deadRetentionHours > 0 ? .seconds(fractional: deadRetentionHours * 3600) : nil
    withBaseline.kpiRetention = .seconds(kpiRetentionDays * 86_400)
    withBaseline.kpiFutureTolerance = .seconds(fractional: kpiFutureSeconds)
    withBaseline.luxOpen = luxOpen
    withBaseline.console = try console.settings()
    withBaseline.dashboardURL = dashboardURL
    // The built-in pool's host records its GPUs' health (when it has any) with the other KPIs.
    withBaseline.gpuHealthInterval = .seconds(fractional: collectSeconds)
    withBaseline.checkpointMirror = try checkpointMirror.map { target -> any CheckpointMirror in
      target.hasPrefix("http://") || target.hasPrefix("https://") ? try HTTPCheckpointMirror(url: target) : CheckpointDirectory(path: target)
    }
    // An invalid thresholds file, or a receiver whose secret is missing, stops the server here.
    let alerting = try thresholds.load(dataDir: store.dataDir)
    var alertSecrets: [String: String] = [:]
    if let alerting {
      alertSecrets = try NotificationSender.secrets(for: alerting)
      if let secret = alerting.settings.pagerDutyWebhookSecret {
        do {
          alertSecrets[NovaServer.pagerDutyWebhookSecretName] = try secret.resolve()
        } catch {
          throw NovaError.invalidInput(field: "settings.pagerduty_webhook_secret", message: error.description)
        }
      }
      withBaseline.thresholdsPath = alerting.path
      logger.notice("alerting: \(alerting.rules.count) rules from \(alerting.path ?? "?")")
    }
    if let error = application.jobKindsError { throw error }
    withBaseline.jobsPath = application.settings.jobsPath
    let policy = try application.policy()
    logger.notice(
      "policy \(policy.version) from \(policy.path ?? "the built-in role rules")\(policy.document.enforce ? "" : " (shadow mode: its decisions are recorded; the built-in role rules are enforced)")"
    )
    let server = try NovaServer(
      configuration: withBaseline, queue: application.queue, registry: application.registry, security: security,
      transitionSource: application.transitionSource, policy: policy, alerting: alerting, alertSecrets: alertSecrets, logger: logger)
    let host = self.host
    let dataDir = store.location
    // What `NovaServer.run` does, with the lock beside the application in one group. The lock
    // comes first, so that it stops last: it is held until every other service has stopped. A
    // lost lock shuts the application down gracefully, and the group then throws its error.
    await server.exportInitialMetrics()
    var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
    if let lock {
      services.append(.init(service: ServeLockService(lock: lock, logger: logger), failureTerminationBehavior: .gracefullyShutdownGroup))
    }
    services.append(
      .init(
        service: server.makeApplication { port in
          logger.notice("nova listening on http://\(host):\(port) (data: \(dataDir))")
        }))
    let group = ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    try await group.run()
  }
}

/// Renews the one-`nova serve`-per-Redis lock while the server runs and gives it back when the
/// group shuts down; a lock that another server took stops this one.
struct ServeLockService: Service {
  let lock: RedisServeLock
  let logger: Logger

  func run() async throws {
    let lock = lock
    let logger = logger
    do {
      try await cancelWhenGracefulShutdown {
        try await lock.keepRenewing { event in
          switch event {
          case .renewalFailed(let error):
            logger.warning(
              "could not renew the serve lock \(lock.key); it lapses \(lock.ttl) after the last renewal that worked",
              metadata: ["error": "\(error)"])
          case .retaken:
            logger.warning("the serve lock \(lock.key) had lapsed (Redis unreachable or restarted) and is held again")
          }
        }
      }
    } catch is CancellationError {
      // Shutdown: the lock is given back below.
    } catch {
      logger.error("\(error)")
      throw error
    }
    do {
      try await lock.release()
    } catch {
      logger.warning("could not give back the serve lock \(lock.key); it lapses \(lock.ttl) from now", metadata: ["error": "\(error)"])
    }
  }
}

/// Worker pool flags shared by `serve` and `worker`.
struct PoolOptions: ParsableArguments {
  @Option(help: "Jobs run at the same time (0: no workers in this process).")
  var workers: Int = 4

  @Option(help: ArgumentHelp("Queues to take jobs from, comma-separated; * for all.", valueName: "names"))
  var queues: String = "*"

  @Option(name: .long, help: ArgumentHelp("Lease length; a worker silent for this long loses its jobs.", valueName: "seconds"))
  var leaseSeconds: Double = 30

  @Option(name: .long, help: ArgumentHelp("A job running longer is cancelled and retried.", valueName: "seconds"))
  var jobTimeoutSeconds: Double = 300

  @Option(name: .long, help: ArgumentHelp("On shutdown, how long running jobs may finish before their leases are released.", valueName: "seconds"))
  var shutdownGraceSeconds: Double = 10

  @Option(name: .long, help: ArgumentHelp("How often an idle worker looks for jobs.", valueName: "ms"))
  var pollMs: Int = 250

  @Option(
    help: ArgumentHelp(
      "Jobs claimed ahead of free workers (default: adapts to about 100 ms of work, at most 32 per worker; 0 claims only for free workers).",
      valueName: "n"))
  var prefetch: Int?

  @Option(
    help: ArgumentHelp(
      "A job that asks for GPUs (or CPUs, memory) and is passed over by smaller ones this long gets this host reserved for it; 0: never.",
      valueName: "seconds"))
  var reserveAfterSeconds: Double = 300

  func check() throws {
    guard workers >= 0, workers <= 10_000 else { throw ValidationError("--workers \(workers) is out of range 0...10000") }
    try checkNumber(leaseSeconds, "--lease-seconds", 0.1...86_400, "seconds")
    try checkNumber(jobTimeoutSeconds, "--job-timeout-seconds", 0.001...604_800, "seconds")
    try checkNumber(shutdownGraceSeconds, "--shutdown-grace-seconds", 0...3600, "seconds")
    guard (1...60_000).contains(pollMs) else { throw ValidationError("--poll-ms \(pollMs) is out of range 1...60000") }
    guard (prefetch ?? 0) >= 0 else { throw ValidationError("--prefetch must not be negative") }
    try checkNumber(reserveAfterSeconds, "--reserve-after-seconds", 0...604_800, "seconds")
  }

  func configuration() throws -> WorkerPool.Configuration {
    var configuration = WorkerPool.Configuration(
      concurrency: workers, queues: try parseQueues(queues), leaseDuration: .seconds(fractional: leaseSeconds),
      jobTimeout: .seconds(fractional: jobTimeoutSeconds), pollInterval: .milliseconds(pollMs),
      shutdownGracePeriod: .seconds(fractional: shutdownGraceSeconds), prefetch: prefetch)
    configuration.reserveAfter = reserveAfterSeconds > 0 ? .seconds(fractional: reserveAfterSeconds) : nil
    return configuration
  }
}

/// The console's sign-in options of `nova serve`.
struct ConsoleOptions: ParsableArguments {
  @Flag(name: .long, help: "Mark the console's session cookie Secure (Nova reached over TLS through a proxy).")
  var cookieSecure = false

  @Option(name: .long, help: ArgumentHelp("A console session ends this long after sign-in.", valueName: "minutes"))
  var sessionMinutes: Double = 720

  @Option(name: .long, help: ArgumentHelp("A console session idle this long ends.", valueName: "minutes"))
  var sessionIdleMinutes: Double = 30

  @Option(
    name: .long,
    help: ArgumentHelp("Sign in to the console by this header of an authenticating proxy (such as X-Forwarded-Email).", valueName: "header"))
  var authProxyHeader: String?

  @Option(name: .long, help: ArgumentHelp("The role map of people the proxy signs in (YAML: users, patterns, default).", valueName: "file"))
  var authProxyRoles: String?

  @Option(
    name: .long,
    help: ArgumentHelp(
      "The proxy's addresses, comma-separated (IP addresses or CIDR ranges); the header is believed only from these.", valueName: "addresses"))
  var authProxyTrusted: String?

  func check() throws {
    try checkNumber(sessionMinutes, "--session-minutes", 1...43_200, "minutes")
    try checkNumber(sessionIdleMinutes, "--session-idle-minutes", 1...43_200, "minutes")
    let given = [authProxyHeader, authProxyRoles, authProxyTrusted].filter { $0 != nil }.count
    if given != 0 && given != 3 {
      throw ValidationError("--auth-proxy-header, --auth-proxy-roles and --auth-proxy-trusted go together: give all three or none")
    }
    if let header = authProxyHeader, header.isEmpty || !header.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) {
      throw ValidationError("--auth-proxy-header '\(header)' is not a header name")
    }
  }

  /// The settings these options give; reads and checks the role map.
  func settings() throws -> ConsoleSettings {
    var settings = ConsoleSettings(
      cookieSecure: cookieSecure,
      lifetime: ConsoleSessionStore.Lifetime(absolute: .seconds(fractional: sessionMinutes * 60), idle: .seconds(fractional: sessionIdleMinutes * 60))
    )
    if let header = authProxyHeader, let rolesPath = authProxyRoles, let trusted = authProxyTrusted {
      settings.authProxy = AuthProxy(
        header: header, roles: try AuthProxyRoles.load(path: rolesPath), trusted: try AddressRange.list(trusted, field: "--auth-proxy-trusted"))
    }
    return settings
  }
}
