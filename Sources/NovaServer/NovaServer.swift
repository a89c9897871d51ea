import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NovaAlerting
import NovaApplication
import NovaCore
import NovaDashboards
import NovaDatabase
import NovaJobKinds
import NovaMonitoring
import NovaPolicy
import NovaQueue
import NovaSecurity
import ServiceLifecycle

/// Everything `nova serve` runs: the HTTP API, the worker pool, the lease reaper and the metrics
/// collector, as services of one group with graceful shutdown.
public struct NovaServer: Sendable {
  /// Settings of a server.
  public struct Configuration: Sendable {
    public var host: String
    public var port: Int
    /// Worker pool concurrency; 0 runs no workers in this process.
    public var workers: Int
    public var maxPayloadBytes: Int
    public var pool: WorkerPool.Configuration
    public var reaperInterval: Duration
    public var metricsInterval: Duration
    public var retention: Duration?
    /// Dead jobs are deleted this long after they died (nil keeps them).
    public var deadRetention: Duration? = .seconds(720 * 3600)
    /// Serve `/metrics` without a token (for a Prometheus that cannot send one).
    public var metricsOpen: Bool
    public var checkpointInterval: Duration
    /// Where every signed checkpoint is also kept, outside the database.
    public var checkpointMirror: (any CheckpointMirror)?
    /// The approved policy to check drift against (`nova_policy_drift`).
    public var policyBaseline: PolicyBaseline?
    /// The data directory (for the daily KPI summary files), and how long KPI samples are kept.
    public var dataDirectory: String?
    public var kpiRetention: Duration = .seconds(30 * 86_400)
    /// How far ahead of now a KPI sample may be dated (clock skew); later ones get 422.
    public var kpiFutureTolerance: Duration = KPIStore.defaultFutureTolerance
    /// The thresholds file alerting was loaded from (reloaded on SIGHUP).
    public var thresholdsPath: String?
    /// `nova-jobs.yaml`, reloaded on SIGHUP (its kinds on top of the built-in ones); nil for none.
    public var jobsPath: String?
    /// Serve `/lux` and `/v1/compliance` without a token.
    public var luxOpen = false
    /// The console's sign-in: session cookies and the authenticating proxy.
    public var console = ConsoleSettings()
    /// Where the LUX page links the review schedule and the Grafana dashboard.
    public var reviewScheduleURL = Review.scheduleURL
    public var dashboardURL: String?
    /// How long one request may wait for the stores (retries included) before it is answered
    /// 503 `unavailable`; `/readyz` waits at most half as long.
    public var storeDeadline: Duration = .seconds(1)
    /// A connection that has not sent a whole request head this long after connecting (or
    /// after starting a request) is closed: slow or silent clients cannot hold sockets.
    public var requestHeadTimeout: Duration = .seconds(20)
    /// A keep-alive connection idle this long between requests is closed.
    public var idleTimeout: Duration = .seconds(60)
    /// Open connections beyond which a new one is answered 503 and closed at once (nil: the
    /// open-file limit less a reserve for the database, pipes and outgoing calls): at the
    /// open-file limit the server could no longer accept, nor answer `/healthz`.
    public var maxConnections: Int?
    /// What one API token may hold of the worker routes at once (waiting claims, workers).
    public var workerLimits = WorkerActions.Limits()
    /// How often the built-in pool's host records its GPUs' health as KPIs (`gpu.*`, from
    /// `nvidia-smi`), when the pool runs and its capacity has GPUs; nil never does.
    public var gpuHealthInterval: Duration?

    public init(
      host: String = "127.0.0.1", port: Int = 8080, workers: Int = 4, maxPayloadBytes: Int = 1 << 20,
      pool: WorkerPool.Configuration = WorkerPool.Configuration(), reaperInterval: Duration = .seconds(1),
      metricsInterval: Duration = .seconds(15), retention: Duration? = .seconds(7 * 86400), metricsOpen: Bool = false,
      checkpointInterval: Duration = .seconds(60)
    ) {
      self.host = host
      self.port = port
      self.workers = workers
      self.maxPayloadBytes = maxPayloadBytes
      self.pool = pool
      self.reaperInterval = reaperInterval
      self.metricsInterval = metricsInterval
      self.retention = retention
      self.metricsOpen = metricsOpen
      self.checkpointInterval = checkpointInterval
      self.policyBaseline = nil
    }
  }

  public let configuration: Configuration
  public let queue: any JobQueue
  /// The handlers of submissions and of the in-process workers, replaced when the job kinds
  /// file is reloaded.
  public let liveRegistry: LiveJobRegistry
  /// The handlers in force.
  public var registry: JobRegistry { liveRegistry.current }
  public let logger: Logger
  public let clock: any NovaClock
  /// Tokens, audit and signing; nil serves without authentication (tests of the routes alone).
  public let security: SecurityContext?
  /// Where job transitions wait to be moved into the audit log (a Redis queue), if anywhere.
  public let transitionSource: (any TransitionSource)?
  /// Decides every API action; nil decides by role alone.
  public let policy: PolicyEngine?
  /// KPI samples, in the security database (nil without one); shared by routes and collectors.
  public let kpis: KPIStore?
  /// The orchestration journal, in the security database.
  public let journal: OrchestrationJournal?
  /// Alerts and their outbox, in the security database (the alert engine's store, and the
  /// compliance page's source of the alert SLA when alerting is not configured).
  public let alertStore: AlertStore?
  /// The alert engine, when alerting is configured.
  public let alerts: AlertEngine?
  /// Sends the alert engine's notifications.
  public let alertDispatcher: NotificationDispatcher?
  /// The secret of PagerDuty's webhooks, when configured.
  let pagerDutyWebhookSecret: String?
  /// The actions of HTTP workers; one per server, as it holds their waiting claims and leases.
  public let workerActions: WorkerActions
  /// Verifies the latest signed checkpoint incrementally, for the console and the LUX page.
  public let checkpointVerifier: CheckpointVerifier?
  /// The audit coverage the checkpointer computed last, for the compliance page.
  let coverageCache = AuditCoverageCache()
  /// The last day's policy decisions, for the compliance page.
  let decisionTally: DecisionTally?

  /// Wraps the backend in metrics instrumentation; throws when a store cannot be opened.
  public init(
    configuration: Configuration, queue: any JobQueue, registry: JobRegistry = BuiltinJobs.registry,
    security: SecurityContext?, transitionSource: (any TransitionSource)? = nil, policy: PolicyEngine? = nil,
    alerting: AlertingConfiguration? = nil, alertSecrets: [String: String] = [:], logger: Logger,
    clock: any NovaClock = SystemClock()
  ) throws {
    self.configuration = configuration
    self.queue = queue is InstrumentedJobQueue ? queue : InstrumentedJobQueue(queue, clock: clock)
    self.liveRegistry = LiveJobRegistry(registry)
    self.logger = logger
    self.clock = clock
    self.security = security
    self.transitionSource = transitionSource
    self.policy = policy
    self.decisionTally = security.map { DecisionTally(log: $0.audit) }
    self.checkpointVerifier = security.map { CheckpointVerifier(log: $0.audit, verifier: $0.signer.verifier, origin: $0.origin) }
    self.workerActions = WorkerActions(
      queue: self.queue, policy: security == nil ? nil : policy, seal: security.map { LeaseSeal(signer: $0.signer) } ?? LeaseSeal(),
      registry: liveRegistry, limits: configuration.workerLimits, clock: clock, reserveAfter: configuration.pool.reserveAfter)
    // A store that cannot be opened stops the server: no route may silently go missing.
    let kpis = try security.map {
      try KPIStore(database: $0.database, clock: clock, futureTolerance: configuration.kpiFutureTolerance)
    }
    let journal = try security.map { try OrchestrationJournal(database: $0.database) }
    let alertStore = try security.map { try AlertStore(database: $0.database) }
    self.kpis = kpis
    self.journal = journal
    self.alertStore = alertStore
    if let alerting, let kpis, let store = alertStore {
      let engine = AlertEngine(configuration: alerting, store: store, kpis: kpis, clock: clock)
      alerts = engine
      alertDispatcher = NotificationDispatcher(
        store: store, sender: NotificationSender(secrets: alertSecrets), journal: journal, clock: clock, logger: logger)
      pagerDutyWebhookSecret = alertSecrets[Self.pagerDutyWebhookSecretName]
    } else {
      alerts = nil
      alertDispatcher = nil
      pagerDutyWebhookSecret = nil
    }
  }

  /// The job actions of the API: decided by the policy only when callers are authenticated.
  public var jobActions: JobActions {
    var actions = JobActions(queue: queue, liveRegistry: liveRegistry, policy: security == nil ? nil : policy)
    actions.journal = journal
    return actions
  }

  /// The backend under the metrics instrumentation, which lists its jobs for audit coverage.
  var jobs: any JobStateListing { jobStateListing(of: queue) }

  /// The key of PagerDuty's webhook secret among the alert secrets.
  public static let pagerDutyWebhookSecretName = "pagerduty-webhook"

  /// The HTTP routes, without any background service (tests drive them directly).
  public func makeRouter() -> Router<NovaRequestContext> {
    let router = Router(context: NovaRequestContext.self)
    router.add(middleware: HTTPMetricsMiddleware())
    router.add(middleware: JSONErrorMiddleware())
    router.add(middleware: StoreDeadlineMiddleware(bound: configuration.storeDeadline))
    let gate = security == nil ? nil : policy.map(PolicyGate.init)
    if let security {
      let console = ConsoleAuthenticator(
        sessions: ConsoleSessionStore(audit: security.audit, lifetime: configuration.console.lifetime), access: security.access,
        settings: configuration.console)
      router.add(
        middleware: AuthMiddleware(
          access: security.access, metricsOpen: configuration.metricsOpen, gate: gate,
          pagerDutyWebhookOpen: pagerDutyWebhookSecret != nil, luxOpen: configuration.luxOpen,
          bodyLimits: RouteBodyLimits(maxPayloadBytes: configuration.maxPayloadBytes), console: console))
      SecurityController(security: security, jobs: jobs).addRoutes(to: router)
      ConsoleController(
        auth: console, actions: jobActions, audit: security.audit, security: security,
        verifier: checkpointVerifier
          ?? CheckpointVerifier(
            log: security.audit, verifier: security.signer.verifier, origin: security.origin),
        jobEvents: JobEventTally(log: security.audit), alertStore: alertStore, alerts: alerts, clock: clock
      ).addRoutes(to: router)
    }
    if let policy {
      PolicyController(engine: policy, audit: security?.audit).addRoutes(to: router)
    }
    if let kpis {
      KPIController(store: kpis, clock: clock).addRoutes(to: router)
    }
    if let journal {
      JournalController(journal: journal, clock: clock).addRoutes(to: router)
    }
    if let alerts {
      AlertsController(engine: alerts, pagerDutySecret: pagerDutyWebhookSecret, journal: journal, clock: clock).addRoutes(to: router)
    }
    if let security, let kpis, let journal, let alertStore {
      let alerts = self.alerts
      let configuration = self.configuration
      let engine = policy ?? PolicyEngine(document: .builtIn)
      let reporter = ComplianceReporter(
        security: security, jobs: jobs, transitionSource: transitionSource, policy: policy, policyBaseline: configuration.policyBaseline, kpis: kpis,
        alertStore: alertStore, alertSettings: { await alerts?.configuration.settings ?? AlertSettings() },
        reviewScheduleURL: configuration.reviewScheduleURL, dashboardURL: configuration.dashboardURL, verifier: checkpointVerifier,
        coverageCache: coverageCache, coverageMaxAge: configuration.checkpointInterval * 3, decisionTally: decisionTally)
      let evidence: @Sendable (Int64?, Int64?) async throws -> [UInt8] = { since, until in
        let sections = try await EvidenceSections.build(
          journal: journal, alertStore: alertStore, policy: engine, baseline: configuration.policyBaseline,
          alertSettings: await alerts?.configuration.settings ?? AlertSettings(), since: since, until: until)
        // Staged in the data directory (private), not the world-readable temporary folder.
        let staging = configuration.dataDirectory.map { URL(fileURLWithPath: $0) } ?? FileManager.default.temporaryDirectory
        let path = staging.appendingPathComponent(".evidence-\(UUID().uuidString).tar.gz").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let mirrored = try await configuration.checkpointMirror?.checkpoints() ?? []
        do {
          _ = try await EvidenceBundle.export(
            log: security.audit, jobs: jobs, signer: security.signer, origin: security.origin, to: path, since: since, until: until,
            sections: sections, mirrored: mirrored)
        } catch let error as UnverifiedHistory {
          throw APIError(.conflict, code: "audit_log_does_not_verify", message: error.description)
        }
        guard let data = FileManager.default.contents(atPath: path) else { throw NovaError.storage("cannot read the bundle just written") }
        return Array(data)
      }
      ComplianceController(reporter: reporter, evidence: evidence, clock: clock).addRoutes(to: router)
    }
    router.get("healthz") { _, _ in try jsonResponse(["status": "ok"]) }
    let readinessBound = configuration.storeDeadline / 2
    router.get("readyz") { _, _ in
      do {
        _ = try await StoreDeadline.within(readinessBound) { try await queue.list(JobFilter(limit: 1)) }
        return try jsonResponse(["status": "ready"])
      } catch {
        var headers = HTTPFields()
        headers[.retryAfter] = String(APIError.unavailableRetryAfterSeconds)
        throw APIError(.serviceUnavailable, code: "not_ready", message: "queue store unavailable: \(error)", headers: headers)
      }
    }
    router.get("metrics") { _, _ in
      var headers = HTTPFields()
      headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
      return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: NovaMetrics.render())))
    }
    let actions = jobActions
    JobsController(actions: actions, maxPayloadBytes: configuration.maxPayloadBytes, clock: clock)
      .addRoutes(to: router.group("v1/jobs"))
    WorkersController(actions: workerActions, maxPayloadBytes: configuration.maxPayloadBytes).addRoutes(to: router)
    router.get("v1/workers") { _, context in
      let now = Date()
      let workers = try await actions.workers(by: JobsController.caller(context))
      return try jsonResponse(WorkerRegistryList(workers: workers.map { WorkerRegistryResource($0, now: now) }))
    }
    router.get("v1/workers/:id") { _, context in
      let id = try context.parameters.require("id")
      guard let worker = try await actions.workers(by: JobsController.caller(context)).first(where: { $0.worker == id }) else {
        throw NovaError.notFound("worker '\(id)' is not in the registry (it never announced itself, or lapsed over an hour ago)")
      }
      return try jsonResponse(WorkerRegistryResource(worker, now: Date()))
    }
    QueuesController(actions: actions).addRoutes(to: router)
    router.get("v1/queues/stats") { _, context in
      try jsonResponse(StatsResource(try await actions.stats(by: JobsController.caller(context))))
    }
    return router
  }

  /// The background services: worker pool (when `workers > 0`), lease reaper, metrics collector.
  public func makeServices() -> (pool: WorkerPool?, services: [any Service]) {
    var services: [any Service] = []
    var pool: WorkerPool?
    if configuration.workers > 0 {
      // A process that runs jobs also cleans up after workers on this host that died running programs.
      OrphanSweeper.start()
      var poolConfiguration = configuration.pool
      poolConfiguration.concurrency = configuration.workers
      let made = WorkerPool(queue: queue, registry: liveRegistry, configuration: poolConfiguration, logger: logger, clock: clock)
      pool = made
      services.append(made)
    }
    services.append(
      LeaseReaper(
        queue: queue, interval: configuration.reaperInterval, retention: configuration.retention, deadRetention: configuration.deadRetention,
        logger: logger, clock: clock))
    services.append(
      QueueMetricsCollector(queue: queue, pool: pool, interval: configuration.metricsInterval, logger: logger, kpis: kpis, clock: clock))
    if let kpis, let interval = configuration.gpuHealthInterval, pool != nil, let capacity = configuration.pool.capacity, !capacity.gpus.isEmpty {
      services.append(
        GPUHealthCollector(
          host: capacity.host, kpis: kpis, interval: interval, devices: Set(capacity.gpus.map(\.index)), source: "nova serve", logger: logger,
          clock: clock))
    }
    if let kpis, let dataDirectory = configuration.dataDirectory {
      services.append(KPIMaintenance(store: kpis, dataDirectory: dataDirectory, retention: configuration.kpiRetention, logger: logger, clock: clock))
    }
    if let security {
      services.append(ActivityCollector(audit: security.audit, kpis: kpis, interval: configuration.metricsInterval, logger: logger, clock: clock))
      if let transitionSource {
        services.append(AuditImporter(security: security, source: transitionSource, logger: logger, clock: clock))
      }
      services.append(
        AuditCheckpointer(
          security: security, jobs: jobs, source: transitionSource, interval: configuration.checkpointInterval, logger: logger,
          kpis: kpis, mirror: configuration.checkpointMirror, clock: clock, coverageCache: coverageCache))
    }
    var reloads: [(name: String, reload: @Sendable () async throws -> Void)] = []
    if let policy {
      services.append(PolicyService(engine: policy, baseline: configuration.policyBaseline, logger: logger, clock: clock))
      let reloader = PolicyReloader(engine: policy, audit: security?.audit)
      reloads.append(("policy", { try await reloader.reload() }))
    }
    if let alerts, let alertDispatcher {
      let service = AlertService(
        engine: alerts, dispatcher: alertDispatcher, journal: journal, path: configuration.thresholdsPath, logger: logger)
      services.append(service)
      reloads.append(("alert rules", { await service.reload() }))
    }
    if let jobsPath = configuration.jobsPath {
      let reloader = JobKindsReloader(registry: liveRegistry, path: jobsPath, journal: journal, logger: logger)
      reloads.append(("job kinds", { try await reloader.reload() }))
    }
    services.append(ReloadOnHangup(reloads: reloads, logger: logger))
    return (pool, services)
  }

  /// The whole application: HTTP server plus background services.
  public func makeApplication(onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in })
    -> some ApplicationProtocol
  {
    let (_, services) = makeServices()
    let connections = ConnectionLimit(max: configuration.maxConnections ?? ConnectionLimit.fromOpenFileLimit())
    let headTimeout = TimeAmount.nanoseconds(Int64(configuration.requestHeadTimeout.seconds * 1e9))
    let idleTimeout = TimeAmount.nanoseconds(Int64(configuration.idleTimeout.seconds * 1e9))
    return Application(
      router: makeRouter(),
      server: HTTPServerBuilder { responder in
        DeadlineHTTP1Channel(
          inner: HTTP1Channel(responder: responder, configuration: .init(idleTimeout: idleTimeout)), headTimeout: headTimeout,
          connections: connections)
      },
      configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "nova"),
      services: services,
      onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? 0) },
      logger: logger)
  }

  /// Runs until SIGINT or SIGTERM, then shuts down gracefully.
  public func run(onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
    await exportInitialMetrics()
    try await makeApplication(onServerRunning: onServerRunning).runService()
  }

  /// Exports every series whose labels are known at zero, then the KPIs other processes
  /// recorded, so that the first scrape already has what the dashboard queries. A store that
  /// cannot be read yet only delays this to the collectors' first pass.
  public func exportInitialMetrics() async {
    do {
      let now = clock.now().millisecondsSince1970
      let known = try await InitialMetrics.known(
        queue: queue, kpis: kpis, dataDirectory: configuration.dataDirectory, now: now)
      InitialMetrics.export(known, queue: queue, now: now)
      if let kpis { try await RecordedKPIGauges.export(from: kpis, now: now) }
    } catch {
      logger.warning("initial metrics not exported; the collectors will export them", metadata: ["error": "\(error)"])
    }
  }
}

/// Job counts for `GET /v1/queues/stats` and `nova jobs stats --json`.
public struct StatsResource: Codable, Sendable, Equatable {
  /// `queues[queue][state]`, every state present.
  public var queues: [String: [String: Int]]
  /// Per state over all queues.
  public var totals: [String: Int]
  /// Available jobs no live worker would claim, `[queue][kind]`: kinds nothing running takes.
  public var unclaimable: [String: [String: Int]]
  /// Live workers (announced and not lapsed) and what they take.
  public var workers: [WorkerResource]

  /// A worker in `StatsResource`.
  public struct WorkerResource: Codable, Sendable, Equatable {
    public var worker: String
    /// Empty: every queue.
    public var queues: [String]
    /// Names and `*` patterns; empty: every kind.
    public var kinds: [String]
    public var expires_at: String
  }

  public init(_ stats: QueueStats) {
    var queues: [String: [String: Int]] = [:]
    var totals: [String: Int] = Dictionary(uniqueKeysWithValues: JobState.allCases.map { ($0.rawValue, 0) })
    for (name, counts) in stats.counts {
      var row: [String: Int] = [:]
      for state in JobState.allCases {
        row[state.rawValue] = counts[state] ?? 0
        totals[state.rawValue, default: 0] += counts[state] ?? 0
      }
      queues[name] = row
    }
    self.queues = queues
    self.totals = totals
    unclaimable = stats.unclaimable
    workers = stats.workers.map {
      WorkerResource(worker: $0.worker, queues: $0.queues, kinds: $0.kinds, expires_at: JobResource.timestamp($0.expiresAt))
    }
  }
}
