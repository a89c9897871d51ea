import Foundation
import NovaCore
import NovaMonitoring
import NovaPolicy
import NovaQueue

/// Who takes an action: the policy subject (an API token's name and role, or the local user of
/// the CLI) and the address the request came from.
public struct Caller: Sendable, Equatable {
  public var subject: PolicySubject
  /// The client's address, for rules and OPA (nil from the CLI).
  public var source: String?

  public init(subject: PolicySubject, source: String? = nil) {
    self.subject = subject
    self.source = source
  }

  /// The local user of the CLI, as the audit log names them (`cli:<user>`).
  public static var localUser: Caller { Caller(subject: PolicySubject(id: AuditContext.actor)) }
}

/// The job actions, written once for the HTTP API and the CLI: each reads what its policy
/// decision needs (the job's queue and kind), asks the policy engine (which audits the
/// decision: one that cannot be audited fails the action), then acts on the queue (whose store
/// audits the transition). The adapters only translate requests and answers.
public struct JobActions: Sendable {
  public let queue: any JobQueue
  /// The handlers submissions are checked against (replaced when `nova-jobs.yaml` is reloaded).
  public let liveRegistry: LiveJobRegistry
  /// Decides every action of a caller; nil (tests of the routes alone) decides nothing.
  public let policy: PolicyEngine?
  /// Where changes of queues' flow control are recorded (who, what, when), if anywhere.
  public var journal: OrchestrationJournal?

  /// The handlers in force.
  public var registry: JobRegistry { liveRegistry.current }

  public init(queue: any JobQueue, registry: JobRegistry, policy: PolicyEngine?) {
    self.init(queue: queue, liveRegistry: LiveJobRegistry(registry), policy: policy)
  }

  public init(queue: any JobQueue, liveRegistry: LiveJobRegistry, policy: PolicyEngine?) {
    self.queue = queue
    self.liveRegistry = liveRegistry
    self.policy = policy
  }

  /// The policy resource of a job: its id, queue and kind.
  public static func resource(of job: Job) -> PolicyResource {
    PolicyResource(kind: "job", id: job.id.rawValue, attributes: ["queue": job.queue, "job_kind": job.kind])
  }

  /// Throws `forbidden` unless the policy permits `caller` to take `action` on `resource`.
  public func authorize(_ caller: Caller?, _ action: String, _ resource: PolicyResource) async throws {
    try await Self.authorize(policy, caller, action, resource)
  }

  /// Throws `forbidden` unless `policy` permits `caller` to take `action` on `resource`; without
  /// a policy or a caller, nothing is decided.
  static func authorize(_ policy: PolicyEngine?, _ caller: Caller?, _ action: String, _ resource: PolicyResource) async throws {
    guard let policy, let caller else { return }
    let decision = try await policy.decide(
      PolicyRequest(subject: caller.subject, action: action, resource: resource, source: caller.source))
    if !decision.permits { throw NovaError.forbidden(decision.refusal) }
  }

  /// Throws `forbidden` unless the policy permits `caller` to take `action` on every job of
  /// `jobs` (given as `[queue, kind]`): one decision per distinct queue and kind, not per job.
  public func authorize(_ caller: Caller?, _ action: String, jobs: some Sequence<[String]>) async throws {
    try await Self.authorize(policy, caller, action, jobs: jobs)
  }

  /// One decision on jobs per distinct queue and kind among `jobs` (given as `[queue, kind]`).
  static func authorize(_ policy: PolicyEngine?, _ caller: Caller?, _ action: String, jobs: some Sequence<[String]>) async throws {
    var decided: Set<[String]> = []
    for job in jobs where decided.insert(job).inserted {
      try await authorize(policy, caller, action, PolicyResource(kind: "job", attributes: ["queue": job[0], "job_kind": job[1]]))
    }
  }

  /// Submits a job (validated against its kind's handler); the stored job, and whether it is new
  /// (false when an earlier job with the same idempotency key was returned).
  public func submit(_ request: JobRequest, by caller: Caller?) async throws -> (job: Job, created: Bool) {
    let registry = registry
    let request = registry.withDefaults(request)
    try registry.validate(kind: request.kind, payload: request.payload)
    let resource = PolicyResource(kind: "job", attributes: ["queue": request.queue, "job_kind": request.kind])
    guard queue.writesHeldAuditEvents, policy != nil, caller != nil else {
      try await authorize(caller, "submit", resource)
      let (job, existing) = try await queue.enqueueReadingBack(request)
      return (job, !existing)
    }
    // The decision is written in the job's transaction: one write per submission, not two.
    let held = HeldAuditEvents()
    do {
      let (job, existing) = try await AuditContext.$held.withValue(held) {
        try await authorize(caller, "submit", resource)
        return try await queue.enqueueReadingBack(request)
      }
      try await held.writeRemaining()
      return (job, !existing)
    } catch {
      // The job was not stored (a conflicting idempotency key, the store down): the decision
      // is recorded all the same, on its own, when it can be.
      try? await held.writeRemaining()
      throw error
    }
  }

  /// Submits many jobs in one store step (each validated against its kind's handler, one policy
  /// decision per queue and kind); per job, in order, its id and whether it is new.
  public func submit(batch requests: [JobRequest], by caller: Caller?) async throws -> [EnqueueResult] {
    let registry = registry
    let requests = requests.map(registry.withDefaults)
    for (index, request) in requests.enumerated() {
      do {
        try registry.validate(kind: request.kind, payload: request.payload)
      } catch {
        throw error.inEntry("jobs[\(index)]")
      }
    }
    try await Self.authorize(policy, caller, "submit", jobs: requests.map { [$0.queue, $0.kind] })
    return try await queue.enqueue(batch: requests)
  }

  /// One job.
  public func get(_ id: JobID, by caller: Caller?) async throws -> Job {
    guard let job = try await queue.get(id) else { throw NovaError.jobNotFound(id) }
    try await authorize(caller, "read", Self.resource(of: job))
    return job
  }

  /// A page of jobs; the decision sees the queue and kind filtered on, when given, and the page
  /// holds only jobs the caller may read (a rule denying `read` on a queue hides its jobs; the
  /// page may then be shorter than the limit, with the cursor still leading on).
  public func list(_ filter: JobFilter, by caller: Caller?) async throws -> JobPage {
    try filter.validate()
    var attributes: [String: String] = [:]
    if let queue = filter.queue { attributes["queue"] = queue }
    if let kind = filter.kind { attributes["job_kind"] = kind }
    try await authorize(caller, "read", PolicyResource(kind: "job", attributes: attributes))
    var page = try await queue.list(filter)
    guard let policy, let caller else { return page }
    // One decision per queue and kind on the page (the listing's own decision is the one recorded).
    var readable: [[String]: Bool] = [:]
    var kept: [Job] = []
    for job in page.jobs {
      let key = [job.queue, job.kind]
      if readable[key] == nil {
        let request = PolicyRequest(
          subject: caller.subject, action: "read", resource: PolicyResource(kind: "job", attributes: ["queue": job.queue, "job_kind": job.kind]),
          source: caller.source)
        readable[key] = await policy.evaluate(request).permits
      }
      if readable[key] == true { kept.append(job) }
    }
    page.jobs = kept
    return page
  }

  /// Cancels a job: a waiting job never runs; a running job's handler is cancelled.
  public func cancel(_ id: JobID, by caller: Caller?) async throws -> Job {
    try await act("cancel", id, by: caller) { try await queue.cancel(id) }
  }

  /// Puts a dead, cancelled or failed job back to available, its attempts reset.
  public func retry(_ id: JobID, by caller: Caller?) async throws -> Job {
    try await act("retry", id, by: caller) { try await queue.retry(id) }
  }

  /// Job counts per queue and state.
  public func stats(by caller: Caller?) async throws -> QueueStats {
    try await authorize(caller, "read", PolicyResource(kind: "queue"))
    return try await queue.stats()
  }

  /// Every known queue: its flow control and its jobs by state.
  public func queues(by caller: Caller?) async throws -> [QueueSummary] {
    try await authorize(caller, "read", PolicyResource(kind: "queue"))
    let stats = try await queue.stats()
    let controls = try await queue.controls()
    return Set(stats.counts.keys).union(controls.keys).sorted().map { name in
      QueueSummary(name: name, controls: controls[name] ?? QueueControls(), counts: stats.counts[name] ?? [:])
    }
  }

  /// Changes a queue's flow control (`change` is given the current one): decided as `control`
  /// on the queue, recorded in the journal.
  public func changeControls(of name: String, by caller: Caller?, _ change: (inout QueueControls) throws -> Void) async throws
    -> QueueControls
  {
    try JobRequest.validateName(name, field: "queue")
    try await authorize(caller, "control", PolicyResource(kind: "queue", id: name, attributes: ["queue": name]))
    var controls = try await queue.controls()[name] ?? QueueControls()
    try change(&controls)
    try controls.validate()
    try await queue.setControls(controls, queue: name)
    var payload: [String: JSONValue] = ["paused": .bool(controls.paused), "weight": .int(Int64(controls.weight))]
    payload["max_running"] = controls.maxRunning.map { .int(Int64($0)) } ?? .null
    payload["rate_per_second"] = controls.ratePerSecond.map { .double($0) } ?? .null
    payload["max_running_per_key"] = controls.maxRunningPerKey.map { .int(Int64($0)) } ?? .null
    payload["rate_per_key"] = controls.ratePerKey.map { .double($0) } ?? .null
    try await journal?.append(
      kind: "queue.controls", subject: name, payload: .object(payload), actor: caller?.subject.id ?? AuditContext.actor)
    return controls
  }

  /// What the store says that explains waits: controls, running jobs per queue, live workers,
  /// and running jobs per key in `keyQueues` (the first 1,000 running jobs of each).
  public func waitFacts(keyQueues: Set<String> = []) async throws -> WaitFacts {
    let stats = try await queue.stats()
    var facts = WaitFacts(controls: try await queue.controls(), running: stats.counts.mapValues { $0[.running] ?? 0 }, workers: stats.workers)
    for name in keyQueues { try await facts.countKeys(of: name, in: queue) }
    return facts
  }

  /// Why `job` waits (nil when it does not).
  public func waitingFor(_ job: Job) async throws -> WaitingFor? {
    guard job.state == .available || job.state == .scheduled || job.state == .failed else { return nil }
    let facts = try await waitFacts(keyQueues: job.concurrencyKey == nil ? [] : [job.queue])
    return facts.explain(job)
  }

  /// The worker registry: every worker live or lapsed within `WorkerPresence.retention`.
  public func workers(by caller: Caller?) async throws -> [WorkerPresence] {
    try await authorize(caller, "read", PolicyResource(kind: "queue"))
    return try await queue.workers()
  }

  private func act(_ action: String, _ id: JobID, by caller: Caller?, _ body: () async throws -> Job) async throws -> Job {
    if policy != nil, caller != nil {
      guard let job = try await queue.get(id) else { throw NovaError.jobNotFound(id) }
      try await authorize(caller, action, Self.resource(of: job))
    }
    return try await body()
  }
}
