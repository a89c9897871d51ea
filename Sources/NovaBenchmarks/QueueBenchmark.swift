import Foundation
import Logging
import NovaCore
import NovaJobKinds
import NovaQueue
import Synchronization

/// `nova bench queue`: enqueues N jobs, runs them to completion in-process, checks that none was
/// lost or completed twice, and measures throughput and enqueue-to-completion latency.
public enum QueueBenchmark {
  /// What to run.
  public struct Options: Sendable {
    public var jobs: Int
    public var workers: Int
    public var payloadBytes: Int
    /// Jobs per enqueue call.
    public var enqueueBatch: Int
    /// Give up (and count the rest as lost) after this long.
    public var timeout: Duration
    /// Jobs claimed ahead of free workers; nil uses the pool's default.
    public var prefetch: Int?
    /// Each job runs this program (a `type: command` kind: one process per job) instead of an
    /// in-process handler; nil runs in-process.
    public var command: [String]?

    public init(
      jobs: Int = 20000, workers: Int = 10, payloadBytes: Int = 64, enqueueBatch: Int = 500, timeout: Duration = .seconds(600), prefetch: Int? = nil
    ) {
      self.prefetch = prefetch
      self.command = nil
      self.jobs = jobs
      self.workers = workers
      self.payloadBytes = payloadBytes
      self.enqueueBatch = enqueueBatch
      self.timeout = timeout
    }
  }

  /// One run's figures; the JSON keys are the stable output of `nova bench queue --json`.
  public struct Result: Codable, Sendable, Equatable {
    public var backend: String
    public var jobs: Int
    public var workers: Int
    public var payload_bytes: Int
    public var enqueue_per_s: Double
    public var e2e_per_s: Double
    public var p50_ms: Double
    public var p99_ms: Double
    public var lost: Int
    public var duplicate_completions: Int
    public var elapsed_s: Double
    /// `in-process`, or `command` (one program run per job).
    public var kind: String = "in-process"
    /// Processes started (one per job of a command kind, none in-process).
    public var processes: Int = 0
  }

  /// Runs the benchmark against `queue`, which should be empty and used by nobody else.
  public static func run(
    queue: any JobQueue, backend: String, options: Options, logger: Logger,
    progress: (@Sendable (_ completed: Int, _ total: Int) -> Void)? = nil
  ) async throws -> Result {
    guard options.jobs > 0, options.workers > 0, options.payloadBytes >= 0 else {
      throw NovaError.invalidInput(field: "jobs/workers/payload-bytes", message: "jobs and workers must be positive")
    }
    let counting = CompletionCountingQueue(queue)
    var registry = JobRegistry()
    if let command = options.command {
      let runner = CommandJobRunner(name: "bench", kind: CommandKind(command: command), timeout: .seconds(60))
      registry.registerRaw("bench") { payload, context in try await runner.handle(payload: payload, context: context) }
    } else {
      registry.registerRaw("bench") { _, _ in nil }
    }
    let queueName = "bench"
    let pool = WorkerPool(
      queue: counting, registry: registry,
      configuration: .init(concurrency: options.workers, queues: [queueName], pollInterval: .milliseconds(50), prefetch: options.prefetch),
      logger: logger)
    let filler = String(repeating: "x", count: max(0, options.payloadBytes - 10))
    let payload = Data("{\"data\":\"\(filler)\"}".utf8)
    let clock = ContinuousClock()

    let start = clock.now
    var enqueueElapsed = Duration.zero
    var ids: [JobID] = []
    ids.reserveCapacity(options.jobs)
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask { try await pool.run() }
      var remaining = options.jobs
      while remaining > 0 {
        let count = min(options.enqueueBatch, remaining)
        let requests = Array(repeating: JobRequest(kind: "bench", payload: payload, queue: queueName), count: count)
        ids.append(contentsOf: try await counting.enqueue(batch: requests).map(\.id))
        remaining -= count
      }
      enqueueElapsed = clock.now - start
      let deadline = clock.now.advanced(by: options.timeout)
      var lastReport = clock.now
      while counting.completedCount < options.jobs && clock.now < deadline {
        try await Task.sleep(for: .milliseconds(5))
        if let progress, clock.now - lastReport > .milliseconds(500) {
          progress(counting.completedCount, options.jobs)
          lastReport = clock.now
        }
      }
      pool.shutdown()
      try await group.waitForAll()
    }
    let elapsed = (clock.now - start).seconds
    progress?(counting.completedCount, options.jobs)

    var latencies: [Double] = []
    latencies.reserveCapacity(options.jobs)
    var succeeded = Set<JobID>()
    var cursor: String?
    repeat {
      let page = try await queue.list(JobFilter(state: .succeeded, queue: queueName, limit: 1000, cursor: cursor))
      for job in page.jobs {
        succeeded.insert(job.id)
        if let finished = job.finishedAt { latencies.append(finished.timeIntervalSince(job.createdAt) * 1000) }
      }
      cursor = page.nextCursor
    } while cursor != nil
    latencies.sort()
    let lost = ids.filter { !succeeded.contains($0) }.count
    return Result(
      backend: backend, jobs: options.jobs, workers: options.workers, payload_bytes: payload.count,
      enqueue_per_s: Double(options.jobs) / max(enqueueElapsed.seconds, 1e-9),
      e2e_per_s: Double(options.jobs - lost) / max(elapsed, 1e-9),
      p50_ms: Statistics.percentile(sorted: latencies, 0.50) ?? 0, p99_ms: Statistics.percentile(sorted: latencies, 0.99) ?? 0, lost: lost,
      duplicate_completions: counting.duplicateCompletions, elapsed_s: elapsed, kind: options.command == nil ? "in-process" : "command",
      processes: options.command == nil ? 0 : counting.completedCount)
  }

  /// The median of several runs' results, field by field (the first run's identity fields).
  public static func median(_ results: [Result]) -> Result {
    guard var out = results.first else { preconditionFailure("median of no results") }
    func med(_ key: (Result) -> Double) -> Double { Statistics.median(results.map(key)) ?? 0 }
    out.enqueue_per_s = med(\.enqueue_per_s)
    out.e2e_per_s = med(\.e2e_per_s)
    out.p50_ms = med(\.p50_ms)
    out.p99_ms = med(\.p99_ms)
    out.elapsed_s = med(\.elapsed_s)
    out.lost = results.map(\.lost).max() ?? 0
    out.duplicate_completions = results.map(\.duplicate_completions).max() ?? 0
    return out
  }
}

/// Forwards to a queue and counts the completions it accepted per job, so that a job recorded
/// as completed twice would show (the benchmark's and the stress tests' check).
public final class CompletionCountingQueue: JobQueue {
  private let base: any JobQueue
  private let counts = Mutex<[JobID: Int]>([:])

  public init(_ base: any JobQueue) { self.base = base }

  /// Completions accepted, per job.
  public var completions: [JobID: Int] { counts.withLock { $0 } }
  /// Jobs with at least one accepted completion.
  public var completedCount: Int { counts.withLock { $0.count } }
  /// Accepted completions beyond the first, over all jobs (must be 0).
  public var duplicateCompletions: Int { counts.withLock { $0.values.reduce(0) { $0 + $1 - 1 } } }

  public func complete(batch: [JobCompletion]) async throws -> [Bool] {
    let recorded = try await base.complete(batch: batch)
    counts.withLock { counts in
      for (entry, ok) in zip(batch, recorded) where ok { counts[entry.lease.id, default: 0] += 1 }
    }
    return recorded
  }

  public func enqueue(_ request: JobRequest) async throws -> EnqueueResult { try await base.enqueue(request) }
  public func enqueue(batch requests: [JobRequest]) async throws -> [EnqueueResult] { try await base.enqueue(batch: requests) }
  public func claim(_ request: ClaimRequest) async throws -> [JobLease] {
    try await base.claim(request)
  }
  public func start(_ leases: [JobLease]) async throws {
    try await base.start(leases)
  }
  public func heartbeat(_ leases: [JobLease], leaseDuration: Duration) async throws -> [JobID: HeartbeatOutcome] {
    try await base.heartbeat(leases, leaseDuration: leaseDuration)
  }
  public func fail(_ lease: JobLease, error: String, retryable: Bool, retryIn: Duration?) async throws -> FailOutcome {
    try await base.fail(lease, error: error, retryable: retryable, retryIn: retryIn)
  }
  public func release(_ lease: JobLease) async throws { try await base.release(lease) }
  public func release(batch leases: [JobLease]) async throws -> Int { try await base.release(batch: leases) }
  public func cancel(_ id: JobID) async throws -> Job { try await base.cancel(id) }
  public func retry(_ id: JobID) async throws -> Job { try await base.retry(id) }
  public func reapExpiredLeases() async throws -> ReapResult { try await base.reapExpiredLeases() }
  public func purgeFinished(before: Date, deadBefore: Date?) async throws -> Int {
    try await base.purgeFinished(before: before, deadBefore: deadBefore)
  }
  public func stats() async throws -> QueueStats { try await base.stats() }
  public func announce(_ presence: WorkerPresence) async throws { try await base.announce(presence) }
  public func withdraw(worker: String) async throws { try await base.withdraw(worker: worker) }
  public func get(_ id: JobID) async throws -> Job? { try await base.get(id) }
  public func list(_ filter: JobFilter) async throws -> JobPage { try await base.list(filter) }
  public func waitForJobs(timeout: Duration) async { await base.waitForJobs(timeout: timeout) }
}
