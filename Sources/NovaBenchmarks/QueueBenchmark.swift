import Foundation
import Logging
import NovaCore
import NovaJobKinds
import NovaQueue
import NovaRedis
import Synchronization

/// `nova bench queue`: enqueues N jobs, runs them to completion in-process, checks that none was
/// lost or completed twice, and measures throughput and enqueue-to-completion latency. With a rate,
/// jobs arrive one at a time at a steady pace instead, and it measures how soon each one starts.
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
    /// Steady arrivals: jobs enqueued one at a time at this many per second (`enqueueBatch` unused);
    /// nil enqueues them all at once in batches.
    public var rate: Double?
    /// How long each job's handler sleeps (before its program, for a command kind).
    public var jobDuration: Duration = .zero
    /// GPUs each job asks for (0: none, no placement).
    public var gpusPerJob = 0
    /// The pool's host offers this many GPUs (0: it declares no capacity).
    public var fakeGPUs = 0
    /// Jobs carry one of this many concurrency keys, each limited to `workers` running at once
    /// (a limit that never binds: the cost of checking it); 0: no keys.
    public var concurrencyKeys = 0
    /// Enqueue every job before the workers start, then time how they burn the backlog down
    /// (without a rate only).
    public var backlog = false
    /// Steady arrivals: the jobs due in this first span warm the process up (code run for the
    /// first time, the pool's first claims, the database's first pages) and are left out of the
    /// start figures, which measure the steady state; `start_p99_all_ms` still counts them.
    public var warmup: Duration = .zero
    /// The Redis server behind the queue, sampled (INFO) before and after the jobs ran for its
    /// own CPU time and commands per job; nil for none.
    public var redisServer: RedisClient? = nil

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
    // The rest are set only with a rate (absent from burst runs' JSON).
    /// Arrivals per second asked for.
    public var rate_per_s: Double? = nil
    /// Arrivals per second achieved (first enqueue to last).
    public var arrival_per_s: Double? = nil
    /// How long each job's handler slept.
    public var job_ms: Double? = nil
    /// Arrival (the instant the job was due) to the handler's start, median.
    public var start_p50_ms: Double? = nil
    /// Arrival to the handler's start, 99th percentile.
    public var start_p99_ms: Double? = nil
    /// The same over every job, those of the warm-up included.
    public var start_p99_all_ms: Double? = nil
    /// The span at the start whose jobs the start figures leave out, in seconds.
    public var warmup_s: Double? = nil
    /// The start's two parts. Arrival to the enqueue's return (the job stored), median and 99th
    /// percentile: the store's share.
    public var enqueue_p50_ms: Double? = nil
    public var enqueue_p99_ms: Double? = nil
    /// The enqueue's return to the handler's start: the claim's and the pool's share.
    public var pickup_p50_ms: Double? = nil
    public var pickup_p99_ms: Double? = nil
    /// The most handlers running at once.
    public var max_running: Int? = nil
    // Set only with placement (--gpus-per-job, --fake-gpus) or keys.
    public var gpus_per_job: Int? = nil
    public var fake_gpus: Int? = nil
    public var concurrency_keys: Int? = nil
    /// From a GPU's job ending to the next job on that GPU starting, median and 99th percentile.
    public var gpu_handoff_p50_ms: Double? = nil
    public var gpu_handoff_p99_ms: Double? = nil
    // Redis runs only: the server's own cost, from INFO before and after the run.
    /// Redis's CPU time per job, in milliseconds.
    public var redis_cpu_ms_per_job: Double? = nil
    /// Scripts run per job (most of a job's round trips; batches share theirs).
    public var redis_scripts_per_job: Double? = nil
    /// Commands Redis ran per job, those inside scripts included.
    public var redis_calls_per_job: Double? = nil
    // SQLite runs only: the writer's transactions (commits) over the run.
    /// Commits per job (group commit shares them; a steady trickle pays each one's fixed cost).
    public var sqlite_commits_per_job: Double? = nil
    /// Operations (enqueues, claims, completions...) per commit.
    public var sqlite_operations_per_commit: Double? = nil
    /// The share of the run (0-1) the single writer spent in transactions and its own
    /// checkpoints: near 1, every write waits for the ones before it, and starts' tails grow.
    public var sqlite_writer_busy: Double? = nil
    /// True when the jobs were all enqueued before the workers started: `e2e_per_s` and the
    /// tenths then time the burn-down alone.
    public var backlog: Bool? = nil
    // Set for runs of at least 10 jobs: how the rate and the memory hold up as the run goes on.
    /// Completions per second within each tenth of the jobs (the first from the start).
    public var tenths_per_s: [Double]? = nil
    /// The last tenth's rate over the first's (1: flat).
    public var last_to_first_tenth: Double? = nil
    /// The process's resident memory as each tenth of the jobs completed, in MiB.
    public var rss_mib_by_tenth: [Double]? = nil
    /// The process's peak resident memory by the last completion, in MiB.
    public var peak_rss_mib: Double? = nil
  }

  /// Runs the benchmark against `queue`, which should be empty and used by nobody else.
  public static func run(
    queue: any JobQueue, backend: String, options: Options, logger: Logger,
    progress: (@Sendable (_ completed: Int, _ total: Int) -> Void)? = nil
  ) async throws -> Result {
    guard options.jobs > 0, options.workers > 0, options.payloadBytes >= 0 else {
      throw NovaError.invalidInput(field: "jobs/workers/payload-bytes", message: "jobs and workers must be positive")
    }
    if let rate = options.rate, !(rate > 0 && rate.isFinite) {
      throw NovaError.invalidInput(field: "rate", message: "the rate must be a positive number of jobs per second")
    }
    let counting = CompletionCountingQueue(queue, tenthsOf: options.jobs >= 10 ? options.jobs : nil)
    let job: @Sendable (Data, JobContext) async throws -> Data?
    if let command = options.command {
      let runner = CommandJobRunner(name: "bench", kind: CommandKind(command: command), timeout: .seconds(60))
      job = { payload, context in try await runner.handle(payload: payload, context: context) }
    } else {
      job = { _, _ in nil }
    }
    var registry = JobRegistry()
    // Burst runs without a sleep keep the bare handler, so that their throughput stays comparable
    // with earlier runs'.
    let starts = options.rate == nil ? nil : StartRecorder(reserving: options.jobs)
    let devices = options.fakeGPUs > 0 ? DeviceRecorder() : nil
    let jobDuration = options.jobDuration
    if starts == nil && devices == nil && jobDuration == .zero {
      registry.registerRaw("bench", job)
    } else {
      registry.registerRaw("bench") { payload, context in
        starts?.begin(context.id)
        let began = ContinuousClock.now
        defer {
          starts?.end()
          devices?.record(context.placement?.gpus.map(\.index) ?? [], from: began, to: .now)
        }
        if jobDuration > .zero { try await Task.sleep(for: jobDuration) }
        return try await job(payload, context)
      }
    }
    var configuration = WorkerPool.Configuration(
      concurrency: options.workers, queues: ["bench"], pollInterval: .milliseconds(50), prefetch: options.prefetch)
    if options.fakeGPUs > 0 {
      configuration.capacity = HostCapacity(
        host: "bench",
        gpus: (0..<options.fakeGPUs).map { HostCapacity.GPU(index: $0, uuid: "GPU-bench-\($0)", model: "Bench GPU", memory_mib: 81_920) },
        cpus: 1024, memory_mib: 1 << 22)
    }
    let queueName = "bench"
    let pool = WorkerPool(queue: counting, registry: registry, configuration: configuration, logger: logger)
    let filler = String(repeating: "x", count: max(0, options.payloadBytes - 10))
    let payload = Data("{\"data\":\"\(filler)\"}".utf8)
    let clock = ContinuousClock()

    var loadBefore: RedisServerLoad?
    if let server = options.redisServer { loadBefore = try await RedisServerLoad.sample(server) }
    let writesBefore = (queue as? SQLiteJobQueue)?.writeStatistics
    let start = clock.now
    var enqueueElapsed = Duration.zero
    // Ids as UUIDs (16 bytes, not a 36-character string each): the benchmark's own bookkeeping
    // must not pass for the store's memory on a million jobs.
    var ids: [UUID] = []
    ids.reserveCapacity(options.jobs)
    var arrivals: [Arrival] = []
    var drainStart = start
    try await withThrowingTaskGroup(of: Void.self) { group in
      let backlog = options.backlog && options.rate == nil
      if !backlog { group.addTask { try await pool.run() } }
      var request = JobRequest(kind: "bench", payload: payload, queue: queueName)
      if options.gpusPerJob > 0 { request.resources = JobResources(gpus: options.gpusPerJob) }
      if options.concurrencyKeys > 0 { request.keyLimits = KeyLimits(maxRunning: options.workers) }
      let keys = options.concurrencyKeys
      let template = request
      let keyed: @Sendable (Int) -> JobRequest = { index in
        var copy = template
        if keys > 0 { copy.concurrencyKey = "key-\(index % keys)" }
        return copy
      }
      if let rate = options.rate {
        arrivals = try await arrive(jobs: options.jobs, rate: rate, request: keyed, queue: counting) {
          progress?(counting.completedCount, options.jobs)
        }
        ids = arrivals.map { CompletionCountingQueue.key($0.id) }
      } else {
        var remaining = options.jobs
        while remaining > 0 {
          let count = min(options.enqueueBatch, remaining)
          let batch = keys > 0 ? (0..<count).map { keyed(remaining - $0) } : Array(repeating: request, count: count)
          ids.append(contentsOf: try await counting.enqueue(batch: batch).map { CompletionCountingQueue.key($0.id) })
          remaining -= count
        }
      }
      enqueueElapsed = clock.now - start
      if backlog {
        drainStart = clock.now
        group.addTask { try await pool.run() }
      }
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
    let finished = clock.now
    // Before the listing below, whose reads are not the jobs' cost.
    var load: RedisServerLoad?
    if let server = options.redisServer { load = try await RedisServerLoad.sample(server) }
    let writes = (queue as? SQLiteJobQueue)?.writeStatistics
    let elapsed = (finished - start).seconds
    // Without a backlog the workers started with the first enqueue: the same span.
    let working = (finished - drainStart).seconds
    progress?(counting.completedCount, options.jobs)

    var latencies: [Double] = []
    latencies.reserveCapacity(options.jobs)
    var succeeded = Set<UUID>()
    var cursor: String?
    repeat {
      let page = try await queue.list(JobFilter(state: .succeeded, queue: queueName, limit: 1000, cursor: cursor))
      for job in page.jobs {
        succeeded.insert(CompletionCountingQueue.key(job.id))
        if let finished = job.finishedAt { latencies.append(finished.timeIntervalSince(job.createdAt) * 1000) }
      }
      cursor = page.nextCursor
    } while cursor != nil
    latencies.sort()
    let lost = ids.filter { !succeeded.contains($0) }.count
    var result = Result(
      backend: backend, jobs: options.jobs, workers: options.workers, payload_bytes: payload.count,
      enqueue_per_s: Double(options.jobs) / max(enqueueElapsed.seconds, 1e-9),
      e2e_per_s: Double(options.jobs - lost) / max(working, 1e-9),
      p50_ms: Statistics.percentile(sorted: latencies, 0.50) ?? 0, p99_ms: Statistics.percentile(sorted: latencies, 0.99) ?? 0, lost: lost,
      duplicate_completions: counting.duplicateCompletions, elapsed_s: elapsed, kind: options.command == nil ? "in-process" : "command",
      processes: options.command == nil ? 0 : counting.completedCount)
    let marks = counting.tenths
    if marks.count == 10 {
      var previous = (count: 0, at: drainStart)
      var rate = 0.0
      result.tenths_per_s = marks.map { mark in
        // A tenth crossed by the same batch as the one before it shares that one's rate.
        if mark.count > previous.count { rate = Double(mark.count - previous.count) / max((mark.at - previous.at).seconds, 1e-9) }
        previous = (mark.count, mark.at)
        return rate
      }
      if let rates = result.tenths_per_s, let first = rates.first, first > 0 { result.last_to_first_tenth = (rates.last ?? 0) / first }
      result.rss_mib_by_tenth = marks.map { Double($0.rssBytes) / 1_048_576 }
      result.peak_rss_mib = Double(marks.last?.peakBytes ?? 0) / 1_048_576
    }
    if options.backlog && options.rate == nil { result.backlog = true }
    if let loadBefore, let load { attach(load.since(loadBefore), to: &result) }
    if let writesBefore, let writes, writes.transactions > writesBefore.transactions {
      let commits = Double(writes.transactions - writesBefore.transactions)
      result.sqlite_commits_per_job = commits / Double(max(result.jobs, 1))
      result.sqlite_operations_per_commit = Double(writes.operations - writesBefore.operations) / commits
      result.sqlite_writer_busy = min(1, (writes.busy - writesBefore.busy).seconds / max(elapsed, 1e-9))
    }
    if options.gpusPerJob > 0 || options.fakeGPUs > 0 || options.concurrencyKeys > 0 {
      result.gpus_per_job = options.gpusPerJob
      result.fake_gpus = options.fakeGPUs
      result.concurrency_keys = options.concurrencyKeys
    }
    if let devices {
      let gaps = devices.handoffs().sorted()
      result.gpu_handoff_p50_ms = Statistics.percentile(sorted: gaps, 0.50)
      result.gpu_handoff_p99_ms = Statistics.percentile(sorted: gaps, 0.99)
    }
    if let rate = options.rate, let starts {
      setStartFigures(of: arrivals, started: starts.starts, warmup: options.warmup, in: &result)
      result.rate_per_s = rate
      result.job_ms = options.jobDuration.seconds * 1000
      result.max_running = starts.mostRunning
    }
    return result
  }

  /// Sets the start figures of a steady run: each job's wait from its arrival to its handler's
  /// start (`started`), and that wait's two parts, over the jobs due after `warmup`; the p99 over
  /// every job as well; and the arrival rate achieved.
  package static func setStartFigures(
    of arrivals: [Arrival], started: [JobID: ContinuousClock.Instant], warmup: Duration, in result: inout Result
  ) {
    func waits(_ jobs: [Arrival]) -> [Double] {
      jobs.compactMap { arrival in started[arrival.id].map { ($0 - arrival.at).seconds * 1000 } }.sorted()
    }
    let warmedUp = arrivals.map(\.at).min().map { first in arrivals.filter { $0.at >= first + warmup } } ?? []
    let everyWait = waits(arrivals)
    let warmWaits = waits(warmedUp)
    let stores = warmedUp.map { ($0.stored - $0.at).seconds * 1000 }.sorted()
    // A job can start before its enqueue returns (the pool claims it first): no wait then.
    let pickups = warmedUp.compactMap { arrival in started[arrival.id].map { max(0, ($0 - arrival.stored).seconds * 1000) } }.sorted()
    result.start_p50_ms = Statistics.percentile(sorted: warmWaits, 0.50)
    result.start_p99_ms = Statistics.percentile(sorted: warmWaits, 0.99)
    result.start_p99_all_ms = Statistics.percentile(sorted: everyWait, 0.99)
    result.warmup_s = warmup.seconds
    result.enqueue_p50_ms = Statistics.percentile(sorted: stores, 0.50)
    result.enqueue_p99_ms = Statistics.percentile(sorted: stores, 0.99)
    result.pickup_p50_ms = Statistics.percentile(sorted: pickups, 0.50)
    result.pickup_p99_ms = Statistics.percentile(sorted: pickups, 0.99)
    // From the first send to the last (the arrivals are in the order their enqueues returned):
    // below the rate asked when the load generator fell behind.
    if let first = arrivals.map(\.sent).min(), let last = arrivals.map(\.sent).max(), arrivals.count > 1 {
      result.arrival_per_s = Double(arrivals.count - 1) / max((last - first).seconds, 1e-9)
    }
  }

  /// A job of a steady run: its id, the instant it was due, the instant its enqueue was sent and
  /// the instant the enqueue returned.
  package typealias Arrival = (id: JobID, at: ContinuousClock.Instant, sent: ContinuousClock.Instant, stored: ContinuousClock.Instant)

  /// Enqueues `jobs` jobs one at a time (the i-th is `request(i)`), due i/rate seconds after the first, and returns
  /// each one's id with the instant it was due to arrive and the instant its enqueue was sent; `tick` runs every
  /// half second.
  ///
  /// Open loop, as independent clients arrive: each enqueue starts at its instant whether or not
  /// the ones before it have returned (up to `maxInFlight` at once), so a slow enqueue neither
  /// delays the next arrivals nor hides its own wait. (One caller enqueueing one job after
  /// another could not go past one job per commit: 1,500 a second on SQLite.) The loop wakes at
  /// most once per `wakeQuantum` and sends what fell due meanwhile.
  package static func arrive(
    jobs: Int, rate: Double, request: @escaping @Sendable (Int) -> JobRequest, queue: any JobQueue, maxInFlight: Int = 1000,
    wakeQuantum: Duration = .microseconds(500), tick: () -> Void = {}
  ) async throws -> [Arrival] {
    let clock = ContinuousClock()
    let first = clock.now
    var lastTick = first
    var lastWake = first
    var arrivals: [Arrival] = []
    arrivals.reserveCapacity(jobs)
    try await withThrowingTaskGroup(of: Arrival.self) { group in
      var inFlight = 0
      for index in 0..<jobs {
        let due = first.advanced(by: .seconds(Double(index) / rate))
        if due > clock.now {
          // At most one wake per `wakeQuantum`, which sends every job due by then: a timer per
          // arrival (every 45 µs at 22,000 a second) cost more CPU, on the machine under test,
          // than the enqueues themselves. The wait counts in the jobs' starts (see `at`).
          try await clock.sleep(until: max(due, lastWake.advanced(by: wakeQuantum)))
          lastWake = clock.now
        }
        // The job arrives at its instant, however late this loop gets to it: a wait for room under
        // the cap, or for the task to first run on a busy machine, counts in the job's start (a
        // load generator that counted from its own late send would hide the wait it caused).
        let at = due
        if inFlight >= maxInFlight, let done = try await group.next() {
          arrivals.append(done)
          inFlight -= 1
        }
        let job = request(index)
        let sent = clock.now
        group.addTask {
          let id = try await queue.enqueue(job).id
          return (id, at, sent, clock.now)
        }
        inFlight += 1
        if clock.now - lastTick > .milliseconds(500) {
          tick()
          lastTick = clock.now
        }
      }
      while let done = try await group.next() { arrivals.append(done) }
    }
    return arrivals
  }

  /// Sets the Redis figures of `result` from the server's load over the run.
  public static func attach(_ load: RedisServerLoad, to result: inout Result) {
    let jobs = Double(max(result.jobs, 1))
    result.redis_cpu_ms_per_job = load.cpuSeconds * 1000 / jobs
    result.redis_scripts_per_job = Double(load.scripts) / jobs
    result.redis_calls_per_job = Double(load.calls) / jobs
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
    // Rate runs only: nil stays nil, so that a burst summary gains no fields.
    func medPresent(_ key: (Result) -> Double?) -> Double? { Statistics.median(results.compactMap(key)) }
    out.arrival_per_s = medPresent(\.arrival_per_s)
    out.start_p50_ms = medPresent(\.start_p50_ms)
    out.start_p99_ms = medPresent(\.start_p99_ms)
    out.start_p99_all_ms = medPresent(\.start_p99_all_ms)
    out.enqueue_p50_ms = medPresent(\.enqueue_p50_ms)
    out.enqueue_p99_ms = medPresent(\.enqueue_p99_ms)
    out.pickup_p50_ms = medPresent(\.pickup_p50_ms)
    out.pickup_p99_ms = medPresent(\.pickup_p99_ms)
    out.max_running = Statistics.median(results.compactMap(\.max_running))
    out.gpu_handoff_p50_ms = medPresent(\.gpu_handoff_p50_ms)
    out.gpu_handoff_p99_ms = medPresent(\.gpu_handoff_p99_ms)
    out.redis_cpu_ms_per_job = medPresent(\.redis_cpu_ms_per_job)
    out.redis_scripts_per_job = medPresent(\.redis_scripts_per_job)
    out.redis_calls_per_job = medPresent(\.redis_calls_per_job)
    out.sqlite_commits_per_job = medPresent(\.sqlite_commits_per_job)
    out.sqlite_operations_per_commit = medPresent(\.sqlite_operations_per_commit)
    out.sqlite_writer_busy = medPresent(\.sqlite_writer_busy)
    out.last_to_first_tenth = medPresent(\.last_to_first_tenth)
    out.peak_rss_mib = medPresent(\.peak_rss_mib)
    // Per tenth, the median over the runs.
    func medTenths(_ key: (Result) -> [Double]?) -> [Double]? {
      let lists = results.compactMap(key).filter { $0.count == 10 }
      return lists.isEmpty ? nil : (0..<10).map { index in Statistics.median(lists.map { $0[index] }) ?? 0 }
    }
    out.tenths_per_s = medTenths(\.tenths_per_s)
    out.rss_mib_by_tenth = medTenths(\.rss_mib_by_tenth)
    return out
  }
}

/// When each GPU was held, to measure how soon a freed GPU takes the next job.
final class DeviceRecorder: Sendable {
  private let spans = Mutex<[Int: [(from: ContinuousClock.Instant, to: ContinuousClock.Instant)]]>([:])

  func record(_ gpus: [Int], from: ContinuousClock.Instant, to: ContinuousClock.Instant) {
    spans.withLock { spans in for gpu in gpus { spans[gpu, default: []].append((from, to)) } }
  }

  /// Per GPU, from one job's end to the next job's start, in ms.
  func handoffs() -> [Double] {
    spans.withLock { spans in
      spans.values.flatMap { list -> [Double] in
        let sorted = list.sorted { $0.from < $1.from }
        return zip(sorted, sorted.dropFirst()).map { max(0, ($1.from - $0.to).seconds * 1000) }
      }
    }
  }
}

/// When each job's handler started, and the most handlers running at once (rate runs).
package final class StartRecorder: Sendable {
  private let state = Mutex((starts: [JobID: ContinuousClock.Instant](), running: 0, most: 0))

  /// With room for `jobs` starts from the outset: a table that doubled as it filled rehashed
  /// every id so far under the lock every handler takes (5-15 ms at 49,152 ids, at 2.2 s into a
  /// run at 22,000 a second), which stalled every start and showed as the run's p99.
  package init(reserving jobs: Int) {
    state.withLock { $0.starts.reserveCapacity(jobs) }
  }

  /// Each job's first start.
  package var starts: [JobID: ContinuousClock.Instant] { state.withLock { $0.starts } }
  /// The most handlers running at once.
  package var mostRunning: Int { state.withLock { $0.most } }
  /// Starts the table holds without growing.
  package var capacity: Int { state.withLock { $0.starts.capacity } }

  /// Records that job `id`'s handler started now.
  package func begin(_ id: JobID) {
    let now = ContinuousClock.now
    state.withLock { state in
      // A retried job keeps its first start: the figure is how soon a job found a slot.
      if state.starts[id] == nil { state.starts[id] = now }
      state.running += 1
      state.most = max(state.most, state.running)
    }
  }

  /// Records that a handler ended.
  package func end() { state.withLock { $0.running -= 1 } }
}

/// Forwards to a queue and counts the completions it accepted per job, so that a job recorded
/// as completed twice would show (the benchmark's and the stress tests' check).
public final class CompletionCountingQueue: JobQueue {
  /// When a tenth of the jobs had completed, and the process's memory then.
  public struct Mark: Sendable {
    /// Jobs completed at the mark.
    public var count: Int
    public var at: ContinuousClock.Instant
    /// Resident memory (VmRSS) and its peak so far (VmHWM), in bytes; 0 where /proc has none.
    public var rssBytes: Int
    public var peakBytes: Int
  }

  private struct State {
    // Keyed by the id's 16 bytes (ids that are not UUIDs by their text), so that counting a
    // million jobs costs tens of megabytes, not hundreds.
    var counts: [UUID: Int] = [:]
    var others: [String: Int] = [:]
    var marks: [Mark] = []
  }

  private let base: any JobQueue
  private let state = Mutex(State())
  private let total: Int?

  /// Counts `base`'s completions; with `tenthsOf`, marks each tenth of that many jobs completed.
  public init(_ base: any JobQueue, tenthsOf total: Int? = nil) {
    self.base = base
    self.total = total
    // Room for every job from the start: the table's growth (it doubles) would otherwise show in
    // the memory by tenth as if the store grew.
    if let total { state.withLock { $0.counts.reserveCapacity(total) } }
  }

  /// The key a job is counted under.
  static func key(_ id: JobID) -> UUID {
    UUID(uuidString: id.rawValue) ?? UUID(uuid: (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
  }

  /// Completions accepted, per job.
  public var completions: [JobID: Int] {
    state.withLock { state in
      var all = Dictionary(uniqueKeysWithValues: state.counts.map { (JobID($0.key.uuidString.lowercased()), $0.value) })
      for (id, count) in state.others { all[JobID(id)] = count }
      return all
    }
  }
  /// Jobs with at least one accepted completion.
  public var completedCount: Int { state.withLock { $0.counts.count + $0.others.count } }
  /// Accepted completions beyond the first, over all jobs (must be 0).
  public var duplicateCompletions: Int {
    state.withLock { state in (state.counts.values.reduce(0) { $0 + $1 - 1 }) + state.others.values.reduce(0) { $0 + $1 - 1 } }
  }
  /// The tenths reached so far (with `tenthsOf`).
  public var tenths: [Mark] { state.withLock { $0.marks } }

  public func complete(batch: [JobCompletion]) async throws -> [Bool] {
    let recorded = try await base.complete(batch: batch)
    let reached = state.withLock { state -> Int? in
      for (entry, ok) in zip(batch, recorded) where ok {
        if let uuid = UUID(uuidString: entry.lease.id.rawValue) {
          state.counts[uuid, default: 0] += 1
        } else {
          state.others[entry.lease.id.rawValue, default: 0] += 1
        }
      }
      guard let total else { return nil }
      let done = state.counts.count + state.others.count
      let next = state.marks.count + 1
      return next <= 10 && done >= total * next / 10 ? done : nil
    }
    if let reached, let total {
      let (rss, peak) = Self.memory()
      state.withLock { state in
        // One batch may cross several marks: each tenth is marked once, in order.
        while state.marks.count < 10, reached >= total * (state.marks.count + 1) / 10 {
          state.marks.append(Mark(count: reached, at: .now, rssBytes: rss, peakBytes: peak))
        }
      }
    }
    return recorded
  }

  /// This process's resident memory and its peak, from /proc/self/status (zeros elsewhere).
  static func memory() -> (rss: Int, peak: Int) {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return (0, 0) }
    func kibibytes(_ field: String) -> Int {
      guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(field) }) else { return 0 }
      return (Int(line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first ?? "") ?? 0) * 1024
    }
    return (kibibytes("VmRSS:"), kibibytes("VmHWM:"))
  }

  public func enqueue(_ request: JobRequest) async throws -> EnqueueResult { try await base.enqueue(request) }
  public func enqueue(batch requests: [JobRequest]) async throws -> [EnqueueResult] { try await base.enqueue(batch: requests) }
  public func enqueueReadingBack(_ request: JobRequest) async throws -> (job: Job, existing: Bool) {
    try await base.enqueueReadingBack(request)
  }
  public func claim(_ request: ClaimRequest) async throws -> [JobLease] {
    try await base.claim(request)
  }
  public func claim(_ request: ClaimRequest, waitingUpTo timeout: Duration) async throws -> [JobLease] {
    try await base.claim(request, waitingUpTo: timeout)
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
