import Foundation
import NovaCore

/// The contract every queue backend keeps (SQLite, Redis): at-least-once execution,
/// exactly-once completion record.
public protocol JobQueue: Sendable {
  /// Adds a job, or returns the existing one when its idempotency key was seen before in the
  /// same queue.
  func enqueue(_ request: JobRequest) async throws -> EnqueueResult
  /// Adds many jobs in one step; results are in request order.
  func enqueue(batch requests: [JobRequest]) async throws -> [EnqueueResult]
  /// Adds a job as `enqueue` does and returns it as stored (the earlier job when its
  /// idempotency key was seen), with whether it was there already.
  func enqueueReadingBack(_ request: JobRequest) async throws -> (job: Job, existing: Bool)
  /// Atomically leases up to `request.limit` runnable jobs of the queues and kinds asked for,
  /// highest priority first, then in enqueue order. Jobs of other kinds are passed over, not
  /// taken: they wait for a worker that runs them.
  func claim(_ request: ClaimRequest) async throws -> [JobLease]
  /// Claims like `claim`; when nothing can be taken, waits up to `timeout` for news and returns
  /// what the wait brought: jobs, or nothing (the caller then claims again). A store may hand
  /// a job over in the very transaction that stores it (SQLite does).
  func claim(_ request: ClaimRequest, waitingUpTo timeout: Duration) async throws -> [JobLease]
  /// Marks leased jobs as started, just before their handlers run: from then on their attempt
  /// counts. A lease that expires before its job started (claimed ahead by a worker that died)
  /// gives the attempt back, so prefetched jobs are not dead-lettered for a crash they never saw.
  func start(_ leases: [JobLease]) async throws
  /// Extends leases; a lease whose job was cancelled or reclaimed reports so.
  func heartbeat(_ leases: [JobLease], leaseDuration: Duration) async throws -> [JobID: HeartbeatOutcome]
  /// Records success of many jobs in one step; per entry, true when recorded and false when its
  /// lease was lost. Repeating an entry with the same lease (a call retried after a dropped
  /// connection) reports true again without effect. Workers use it so that one commit (or one
  /// round trip) carries many outcomes.
  func complete(batch: [JobCompletion]) async throws -> [Bool]
  /// Records a failed attempt: retried after `retryIn` (nil: the retry policy's backoff), or
  /// dead-lettered after the last attempt.
  func fail(_ lease: JobLease, error: String, retryable: Bool, retryIn: Duration?) async throws -> FailOutcome
  /// Gives a job back without counting the attempt (used on graceful shutdown).
  func release(_ lease: JobLease) async throws
  /// Gives many jobs back in one step (a stopping worker's buffer); leases already lost are
  /// skipped. Returns how many were given back.
  func release(batch leases: [JobLease]) async throws -> Int
  /// Cancels a job: a waiting job never runs; a running job's worker sees cancellation.
  func cancel(_ id: JobID) async throws -> Job
  /// Puts a dead, cancelled or failed job back to available with its attempts reset.
  func retry(_ id: JobID) async throws -> Job
  /// Makes jobs whose lease expired available again (or dead, when out of attempts).
  func reapExpiredLeases() async throws -> ReapResult
  /// Deletes succeeded and cancelled jobs that finished before `before`, and dead ones that
  /// finished before `deadBefore` (nil keeps them), in bounded batches; returns how many.
  func purgeFinished(before: Date, deadBefore: Date?) async throws -> Int
  /// Deletes the jobs among `jobs` (id and queue) that are succeeded, dead or cancelled, with
  /// their output; returns how many were deleted (others are left alone).
  func delete(_ jobs: [(id: JobID, queue: String)]) async throws -> Int
  /// Counts per queue and state, available jobs per kind, and the live workers.
  func stats() async throws -> QueueStats
  /// Announces (or renews) a worker and what it takes; it lapses at `expiresAt`.
  func announce(_ presence: WorkerPresence) async throws
  /// Removes a stopping worker's announcement.
  func withdraw(worker: String) async throws
  /// The flow control of every known queue (the defaults for those never set).
  func controls() async throws -> [String: QueueControls]
  /// Sets a queue's flow control; it holds for every worker on the store from the next claim.
  func setControls(_ controls: QueueControls, queue: String) async throws
  /// The registry: every worker announced, live or lapsed within `WorkerPresence.retention`,
  /// by name.
  func workers() async throws -> [WorkerPresence]
  /// One job, or nil.
  func get(_ id: JobID) async throws -> Job?
  /// Jobs, newest first, with filters and a cursor.
  func list(_ filter: JobFilter) async throws -> JobPage
  /// Returns when new work may be available, or after `timeout`.
  func waitForJobs(timeout: Duration) async
  /// Whether `enqueueReadingBack` writes the audit events its caller held back
  /// (`AuditContext.held`) in the transaction that stores the job.
  var writesHeldAuditEvents: Bool { get }
}

extension JobQueue {
  /// A claim, then, if it took nothing, `waitForJobs`.
  public func claim(_ request: ClaimRequest, waitingUpTo timeout: Duration) async throws -> [JobLease] {
    let leases = try await claim(request)
    if leases.isEmpty { await waitForJobs(timeout: timeout) }
    return leases
  }

  /// How many times a job's attempt is given back because its lease expired before it was
  /// marked started; after that its attempts count anyway. Start marks are written alongside
  /// the handler, so a job that kills its worker before its mark lands would otherwise be
  /// given back forever instead of reaching dead.
  public static var freeReturns: Int { 3 }

  /// None by default: a store outside the audit log's database cannot.
  public var writesHeldAuditEvents: Bool { false }

  /// Enqueues, then reads the job (backends that can read it in the same step do).
  public func enqueueReadingBack(_ request: JobRequest) async throws -> (job: Job, existing: Bool) {
    let result: EnqueueResult = try await enqueue(request)
    guard let job = try await get(result.id) else { throw NovaError.jobNotFound(result.id) }
    return (job, result.existing)
  }

  /// Enqueues one job and returns its id.
  public func enqueue(_ request: JobRequest) async throws -> JobID {
    let result: EnqueueResult = try await enqueue(request)
    return result.id
  }

  /// Records success of one job; throws `NovaError.leaseLost` when another lease took the job
  /// (it expired and was reclaimed) or the job was cancelled.
  public func complete(_ lease: JobLease, result: Data?) async throws {
    let recorded = try await complete(batch: [JobCompletion(lease: lease, result: result)])
    if recorded.first != true { throw NovaError.leaseLost(lease.id) }
  }

  /// Records a failed attempt, retried after the retry policy's backoff.
  public func fail(_ lease: JobLease, error: String, retryable: Bool) async throws -> FailOutcome {
    try await fail(lease, error: error, retryable: retryable, retryIn: nil)
  }

  /// Extends one lease.
  public func heartbeat(_ lease: JobLease, leaseDuration: Duration) async throws -> HeartbeatOutcome {
    let outcomes = try await heartbeat([lease], leaseDuration: leaseDuration)
    return outcomes[lease.id] ?? .lost
  }
}

/// A successful job's lease and result, for `complete(batch:)`.
public struct JobCompletion: Sendable, Equatable {
  public var lease: JobLease
  public var result: Data?

  public init(lease: JobLease, result: Data?) {
    self.lease = lease
    self.result = result
  }
}

/// What an enqueue did.
public struct EnqueueResult: Sendable, Equatable {
  public var id: JobID
  public var state: JobState
  /// True when an earlier job with the same idempotency key was returned instead of a new one.
  public var existing: Bool

  public init(id: JobID, state: JobState, existing: Bool) {
    self.id = id
    self.state = state
    self.existing = existing
  }
}

/// A claimed job and the proof of the claim.
public struct JobLease: Sendable, Equatable {
  public var job: Job
  /// The fencing token: complete and fail succeed only while it still matches.
  public var token: Int64
  public var worker: String
  public var expiresAt: Date
  /// Whether the store counts this lease's attempt already (claimed to start at once); false
  /// for a job claimed ahead, which `JobQueue.start` marks when its handler starts.
  public var started: Bool

  public var id: JobID { job.id }

  public init(job: Job, token: Int64, worker: String, expiresAt: Date, started: Bool = true) {
    self.job = job
    self.token = token
    self.worker = worker
    self.expiresAt = expiresAt
    self.started = started
  }
}

/// The answer to a heartbeat.
public enum HeartbeatOutcome: Sendable, Equatable {
  /// The lease now runs until this time.
  case extended(Date)
  /// The job was cancelled: stop working on it.
  case cancelled
  /// The lease expired and the job was reclaimed, or it no longer exists.
  case lost
}

/// What happened to a failed attempt.
public enum FailOutcome: Sendable, Equatable {
  /// The job runs again at this time.
  case retryScheduled(Date)
  /// Out of attempts (or not retryable): the job is dead-lettered.
  case dead
}

/// What a reaper pass did.
public struct ReapResult: Sendable, Equatable {
  public var requeued: [JobID]
  public var dead: [JobID]

  public init(requeued: [JobID] = [], dead: [JobID] = []) {
    self.requeued = requeued
    self.dead = dead
  }
}

/// Job counts per queue and state.
public struct QueueStats: Sendable, Equatable {
  /// `counts[queue][state]`; states with no jobs are absent.
  public var counts: [String: [JobState: Int]]
  /// `availableByKind[queue][kind]`: available jobs per kind; kinds with none are absent.
  public var availableByKind: [String: [String: Int]]
  /// Workers whose announcement has not lapsed, by name.
  public var workers: [WorkerPresence]

  public init(
    counts: [String: [JobState: Int]] = [:], availableByKind: [String: [String: Int]] = [:], workers: [WorkerPresence] = []
  ) {
    self.counts = counts
    self.availableByKind = availableByKind
    self.workers = workers
  }

  /// The count for one queue and state.
  public func count(queue: String, state: JobState) -> Int { counts[queue]?[state] ?? 0 }

  /// The count for one state over all queues.
  public func total(_ state: JobState) -> Int { counts.values.reduce(0) { $0 + ($1[state] ?? 0) } }
}

/// Filters for listing jobs.
public struct JobFilter: Sendable, Equatable {
  public var state: JobState?
  public var queue: String?
  public var kind: String?
  /// At most this many jobs (1...1000).
  public var limit: Int
  /// The `nextCursor` of the previous page.
  public var cursor: String?
  /// Only jobs with this concurrency key.
  public var concurrencyKey: String?
  /// Only jobs whose current or last lease is this worker's.
  public var worker: String?
  /// Only the job submitted with this idempotency key.
  public var idempotencyKey: String?
  /// Only jobs created at or after, and before, these times.
  public var createdAfter: Date?
  public var createdBefore: Date?

  /// Whether the filter looks inside jobs beyond their queue and state (a store that indexes
  /// only those reads more to fill a page).
  public var looksInsideJobs: Bool {
    kind != nil || concurrencyKey != nil || worker != nil || idempotencyKey != nil || createdAfter != nil || createdBefore != nil
  }

  /// Whether `job` passes the filters other than queue, state and cursor.
  public func matches(_ job: Job) -> Bool {
    if let kind, job.kind != kind { return false }
    if let concurrencyKey, job.concurrencyKey != concurrencyKey { return false }
    if let worker, job.leaseOwner != worker { return false }
    if let idempotencyKey, job.idempotencyKey != idempotencyKey { return false }
    if let createdAfter, job.createdAt < createdAfter { return false }
    if let createdBefore, job.createdAt >= createdBefore { return false }
    return true
  }

  /// Checks the limit and the cursor (a job id from a previous page).
  public func validate() throws(NovaError) {
    guard (1...1000).contains(limit) else {
      throw .invalidInput(field: "limit", message: "\(limit) is out of range 1...1000")
    }
    if let cursor, !JobID(cursor).isWellFormed {
      throw .invalidInput(field: "cursor", message: "'\(cursor)' is not a cursor this server issued")
    }
  }

  public init(
    state: JobState? = nil, queue: String? = nil, kind: String? = nil, limit: Int = 50,
    cursor: String? = nil
  ) {
    self.state = state
    self.queue = queue
    self.kind = kind
    self.limit = limit
    self.cursor = cursor
  }
}

/// One page of a job listing.
public struct JobPage: Sendable, Equatable {
  public var jobs: [Job]
  /// Pass as `cursor` to get the next page; nil on the last page.
  public var nextCursor: String?

  public init(jobs: [Job], nextCursor: String?) {
    self.jobs = jobs
    self.nextCursor = nextCursor
  }

  /// A page from up to `limit + 1` jobs read newest first: the extra one, when present, only
  /// shows that another page follows.
  public init(newestFirst jobs: [Job], limit: Int) {
    guard jobs.count > limit else {
      self.init(jobs: jobs, nextCursor: nil)
      return
    }
    let page = Array(jobs.prefix(limit))
    self.init(jobs: page, nextCursor: page.last?.id.rawValue)
  }
}

extension JobQueue {
  /// Leases up to `limit` jobs of any kind, all marked started (their handlers run at once).
  public func claim(queues: [String], worker: String, leaseDuration: Duration, limit: Int) async throws -> [JobLease] {
    try await claim(ClaimRequest(queues: queues, worker: worker, leaseDuration: leaseDuration, limit: limit))
  }

  /// Leases up to `limit` jobs of any kind; the first `starting` are marked started.
  public func claim(queues: [String], worker: String, leaseDuration: Duration, limit: Int, starting: Int) async throws
    -> [JobLease]
  {
    try await claim(ClaimRequest(queues: queues, worker: worker, leaseDuration: leaseDuration, limit: limit, starting: starting))
  }

  /// Deletes succeeded and cancelled jobs that finished before `before` (dead ones are kept).
  public func purgeFinished(before: Date) async throws -> Int {
    try await purgeFinished(before: before, deadBefore: nil)
  }
}
