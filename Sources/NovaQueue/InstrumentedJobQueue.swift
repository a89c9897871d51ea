import Foundation
import Metrics
import NovaCore
import Synchronization

/// Wraps any backend and records queue metrics through swift-metrics, so that every backend
/// exports the same series.
public final class InstrumentedJobQueue: JobQueue {
  /// Metric names, shared with the dashboards.
  public enum Names {
    public static let enqueued = "nova_jobs_enqueued_total"
    public static let claimed = "nova_jobs_claimed_total"
    public static let completed = "nova_jobs_completed_total"
    public static let failed = "nova_jobs_failed_total"
    public static let dead = "nova_jobs_dead_total"
    public static let cancelled = "nova_jobs_cancelled_total"
    public static let reaped = "nova_jobs_lease_expired_total"
    public static let waitSeconds = "nova_job_wait_seconds"
    public static let runSeconds = "nova_job_run_seconds"
  }

  private struct Handles {
    let enqueued: Metrics.Counter
    let claimed: Metrics.Counter
    let completed: Metrics.Counter
    let failed: Metrics.Counter
    let dead: Metrics.Counter
    let cancelled: Metrics.Counter
    let reaped: Metrics.Counter
    let wait: Metrics.Timer
    let run: Metrics.Timer

    init(queue: String) {
      let dimensions = [("queue", queue)]
      enqueued = Metrics.Counter(label: Names.enqueued, dimensions: dimensions)
      claimed = Metrics.Counter(label: Names.claimed, dimensions: dimensions)
      completed = Metrics.Counter(label: Names.completed, dimensions: dimensions)
      failed = Metrics.Counter(label: Names.failed, dimensions: dimensions)
      dead = Metrics.Counter(label: Names.dead, dimensions: dimensions)
      cancelled = Metrics.Counter(label: Names.cancelled, dimensions: dimensions)
      reaped = Metrics.Counter(label: Names.reaped, dimensions: dimensions)
      wait = Metrics.Timer(label: Names.waitSeconds, dimensions: dimensions, preferredDisplayUnit: .seconds)
      run = Metrics.Timer(label: Names.runSeconds, dimensions: dimensions, preferredDisplayUnit: .seconds)
    }
  }

  /// The wrapped backend.
  public let base: any JobQueue
  private let clock: any NovaClock
  private let handles = Mutex<[String: Handles]>([:])

  public var writesHeldAuditEvents: Bool { base.writesHeldAuditEvents }

  public init(_ base: any JobQueue, clock: any NovaClock = SystemClock()) {
    self.base = base
    self.clock = clock
  }

  /// Creates the series of `queues` now, at zero, so that they are exported before any job moves.
  public func registerQueues(_ queues: [String]) {
    for queue in queues { _ = metrics(queue) }
  }

  private func metrics(_ queue: String) -> Handles {
    handles.withLock { handles in
      if let existing = handles[queue] { return existing }
      let made = Handles(queue: queue)
      handles[queue] = made
      return made
    }
  }

  private static func nanoseconds(from start: Date, to end: Date) -> Int64 {
    Int64(max(0, end.timeIntervalSince(start)) * 1e9)
  }

  public func enqueue(_ request: JobRequest) async throws -> EnqueueResult {
    let result: EnqueueResult = try await base.enqueue(request)
    if !result.existing { metrics(request.queue).enqueued.increment() }
    return result
  }

  public func enqueueReadingBack(_ request: JobRequest) async throws -> (job: Job, existing: Bool) {
    let result = try await base.enqueueReadingBack(request)
    if !result.existing { metrics(request.queue).enqueued.increment() }
    return result
  }

  public func enqueue(batch requests: [JobRequest]) async throws -> [EnqueueResult] {
    let results = try await base.enqueue(batch: requests)
    for (request, result) in zip(requests, results) where !result.existing {
      metrics(request.queue).enqueued.increment()
    }
    return results
  }

  public func claim(_ request: ClaimRequest) async throws -> [JobLease] {
    count(try await base.claim(request))
  }

  public func claim(_ request: ClaimRequest, waitingUpTo timeout: Duration) async throws -> [JobLease] {
    count(try await base.claim(request, waitingUpTo: timeout))
  }

  private func count(_ leases: [JobLease]) -> [JobLease] {
    let now = clock.now()
    for lease in leases {
      let handles = metrics(lease.job.queue)
      handles.claimed.increment()
      handles.wait.recordNanoseconds(Self.nanoseconds(from: lease.job.runAt, to: lease.job.startedAt ?? now))
    }
    return leases
  }

  public func start(_ leases: [JobLease]) async throws {
    try await base.start(leases)
  }

  public func heartbeat(_ leases: [JobLease], leaseDuration: Duration) async throws -> [JobID: HeartbeatOutcome] {
    try await base.heartbeat(leases, leaseDuration: leaseDuration)
  }

  public func complete(batch: [JobCompletion]) async throws -> [Bool] {
    let recorded = try await base.complete(batch: batch)
    let now = clock.now()
    for (entry, ok) in zip(batch, recorded) where ok {
      let handles = metrics(entry.lease.job.queue)
      handles.completed.increment()
      handles.run.recordNanoseconds(Self.nanoseconds(from: entry.lease.job.startedAt ?? now, to: now))
    }
    return recorded
  }

  public func fail(_ lease: JobLease, error: String, retryable: Bool, retryIn: Duration?) async throws -> FailOutcome {
    let outcome = try await base.fail(lease, error: error, retryable: retryable, retryIn: retryIn)
    let handles = metrics(lease.job.queue)
    handles.failed.increment()
    handles.run.recordNanoseconds(Self.nanoseconds(from: lease.job.startedAt ?? clock.now(), to: clock.now()))
    if outcome == .dead { handles.dead.increment() }
    return outcome
  }

  public func release(_ lease: JobLease) async throws {
    try await base.release(lease)
  }

  public func release(batch leases: [JobLease]) async throws -> Int {
    try await base.release(batch: leases)
  }

  public func cancel(_ id: JobID) async throws -> Job {
    let before = try await base.get(id)
    let job = try await base.cancel(id)
    if before?.state != .cancelled { metrics(job.queue).cancelled.increment() }
    return job
  }

  public func retry(_ id: JobID) async throws -> Job {
    try await base.retry(id)
  }

  public func reapExpiredLeases() async throws -> ReapResult {
    let result = try await base.reapExpiredLeases()
    for id in result.requeued + result.dead {
      guard let job = try await base.get(id) else { continue }
      let handles = metrics(job.queue)
      handles.reaped.increment()
      if job.state == .dead { handles.dead.increment() }
    }
    return result
  }

  public func purgeFinished(before: Date, deadBefore: Date?) async throws -> Int {
    try await base.purgeFinished(before: before, deadBefore: deadBefore)
  }

  public func delete(_ jobs: [(id: JobID, queue: String)]) async throws -> Int { try await base.delete(jobs) }

  public func stats() async throws -> QueueStats { try await base.stats() }
  public func announce(_ presence: WorkerPresence) async throws { try await base.announce(presence) }
  public func withdraw(worker: String) async throws { try await base.withdraw(worker: worker) }
  public func workers() async throws -> [WorkerPresence] { try await base.workers() }
  public func controls() async throws -> [String: QueueControls] { try await base.controls() }
  public func setControls(_ controls: QueueControls, queue: String) async throws { try await base.setControls(controls, queue: queue) }
  public func get(_ id: JobID) async throws -> Job? { try await base.get(id) }
  public func list(_ filter: JobFilter) async throws -> JobPage { try await base.list(filter) }
  public func waitForJobs(timeout: Duration) async { await base.waitForJobs(timeout: timeout) }
}

extension InstrumentedJobQueue: JobLogStore {
  /// Output goes to the backend's log store; a backend without one keeps nothing.
  public func appendLogs(_ chunks: [JobLogChunk]) async throws { try await base.logStore?.appendLogs(chunks) }

  public func logs(of id: JobID, attempt: Int?, after sequence: Int64, limit: Int) async throws -> [JobLogChunk] {
    try await base.logStore?.logs(of: id, attempt: attempt, after: sequence, limit: limit) ?? []
  }
}
