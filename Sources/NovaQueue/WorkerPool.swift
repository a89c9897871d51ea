import Foundation
import Logging
import NovaCore
import ServiceLifecycle
import Synchronization

/// Runs jobs from a queue with N concurrent workers: claims ahead in batches, heartbeats long
/// jobs, enforces per-job timeouts, and shuts down gracefully (in-flight jobs finish, or their
/// leases are released when the grace period ends).
///
/// Three loops cooperate: a fetcher keeps a small buffer of claimed jobs topped up, a dispatcher
/// starts buffered jobs whenever a worker slot is free, and a supervisor heartbeats leases and
/// enforces timeouts. A worker slot frees as soon as a handler returns; recording its outcome
/// goes on in the background (bounded), so that outcomes of many jobs share one commit.
public final class WorkerPool: Service {
  /// Settings of a pool.
  public struct Configuration: Sendable {
    /// Jobs run at the same time.
    public var concurrency: Int
    /// Queues to take jobs from; empty means all.
    public var queues: [String]
    /// The name recorded as lease owner.
    public var workerID: String
    public var leaseDuration: Duration
    /// How often leases of running and buffered jobs are extended; a third of the lease by default.
    public var heartbeatInterval: Duration
    /// A job running longer is cancelled and fails (and is retried if attempts remain).
    public var jobTimeout: Duration
    /// How long an idle pool waits before looking for jobs again (other processes' jobs,
    /// delayed jobs that became due).
    public var pollInterval: Duration
    /// After shutdown begins, how long in-flight jobs may run before they are cancelled and
    /// their leases released.
    public var shutdownGracePeriod: Duration
    /// Jobs claimed ahead of free workers (leased and heartbeated while they wait). Nil (the
    /// default) adapts it to the pool's pace: about 100 ms of work, at most 32 per worker, so
    /// that one claim and one commit serve many short jobs while long jobs are not hoarded
    /// (at one job a second, nothing is claimed ahead). A number fixes it; 0 claims only for
    /// free workers.
    public var prefetch: Int?
    /// What this worker's host offers jobs (its GPUs, CPUs, memory, labels): jobs that ask for
    /// something are claimed only while they fit what is free of it, each on devices of its
    /// own. Nil takes only jobs that ask for nothing.
    public var capacity: HostCapacity?
    /// How long a job that asks for something may be passed over by smaller ones before this
    /// worker reserves its host for it (nil: never).
    public var reserveAfter: Duration? = .seconds(300)

    public init(
      concurrency: Int = 4, queues: [String] = [], workerID: String = WorkerPool.defaultWorkerID(),
      leaseDuration: Duration = .seconds(30), heartbeatInterval: Duration? = nil,
      jobTimeout: Duration = .seconds(300), pollInterval: Duration = .milliseconds(250),
      shutdownGracePeriod: Duration = .seconds(10), prefetch: Int? = nil, capacity: HostCapacity? = nil
    ) {
      self.concurrency = max(1, concurrency)
      self.queues = queues
      self.workerID = workerID
      self.leaseDuration = leaseDuration
      self.heartbeatInterval = heartbeatInterval ?? leaseDuration / 3
      self.jobTimeout = jobTimeout
      self.pollInterval = pollInterval
      self.shutdownGracePeriod = shutdownGracePeriod
      self.prefetch = prefetch.map { max(0, $0) }
      self.capacity = capacity
    }
  }

  /// Why the pool stopped a job's handler.
  enum StopReason: Sendable {
    case timeout
    case jobCancelled
    case leaseLost
    case shutdown
    /// The registry changed since the claim (a reload dropped the kind): given back for a
    /// worker that runs it.
    case noHandler
  }

  struct InFlight {
    var lease: JobLease
    let task: Task<Void, Never>
    /// Where the handler's outcome, or the reason it was stopped, arrives first.
    let gate: OutcomeGate
    /// The kind's timeout (or the pool's), and when it runs out.
    let timeout: Duration
    let deadline: Duration
    var lastHeartbeat: Duration
    var stopReason: StopReason?
    /// How long the handler may take to end once stopped.
    var stopGrace: Duration = JobRegistry.defaultStopGrace
  }

  struct Buffered {
    var lease: JobLease
    var lastHeartbeat: Duration
  }

  struct State {
    /// Handlers running.
    var running = 0
    /// Jobs started whose outcome is not yet recorded (includes `running`).
    var unrecorded = 0
    /// Successes waiting to be recorded together.
    var completions: [JobCompletion] = []
    var buffer: [Buffered] = []
    var bufferHead = 0
    /// Jobs that left the buffer and run, whose start mark is not written yet.
    var pendingStarts: [JobLease] = []
    var inFlight: [JobID: InFlight] = [:]
    var stopping = false
    /// Jobs finished per second (`PaceMeter`), from the pool's start.
    var pace = PaceMeter(now: .zero)
    var stopDeadline: Duration?
    /// When a stopping pool must be done with the store (real time: store deadlines are).
    var exitBy: ContinuousClock.Instant?
    var forceStopped = false
    /// Successes being written, by job: their leases are still heartbeated, so that a store
    /// that is slow or briefly down does not let them expire (and the job run again, or be
    /// dead-lettered by the reaper) while the write is retried.
    var recording: [JobID: Buffered] = [:]
    /// After a handler or the store reported the store unavailable, claims wait until then.
    var pausedUntil: Duration?
    /// The next pause, doubled on every unavailable outcome and reset by a recorded one.
    var storeBackoff: Duration = .milliseconds(100)
    /// What claimed jobs hold of the host, from their claim until their handler has ended (a
    /// program in its kill grace still holds its GPU).
    var held: [JobID: JobPlacement] = [:]
    /// Whether the last claim that brought jobs brought one placed on the host's devices: while
    /// such jobs come, claims ask only for free slots (see `fetch`).
    var placing = false
    /// Changes with `held` and the running jobs: the registry entry is renewed sooner then.
    var occupancy = 0

    var buffered: Int { buffer.count - bufferHead }

    mutating func popBuffered() -> Buffered? {
      guard bufferHead < buffer.count else { return nil }
      let next = buffer[bufferHead]
      bufferHead += 1
      if bufferHead > 64 && bufferHead * 2 > buffer.count {
        buffer.removeFirst(bufferHead)
        bufferHead = 0
      }
      return next
    }

    mutating func drainBuffer() -> [JobLease] {
      let rest = buffer[bufferHead...].map(\.lease)
      buffer.removeAll()
      bufferHead = 0
      return rest
    }
  }

  /// `host-pid-random`, unique per process.
  public static func defaultWorkerID() -> String {
    let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "host"
    return "\(host)-\(ProcessInfo.processInfo.processIdentifier)-\(UInt16.random(in: 0...UInt16.max))"
  }

  public let configuration: Configuration
  /// When the pool was made: its registry entry's start.
  private let startedAt: Date
  private let queue: any JobQueue
  /// The handlers; the pool claims only their kinds.
  private let registry: LiveJobRegistry
  private let logger: Logger
  private let state = Mutex(State())
  /// Wakes the dispatcher: jobs buffered, a slot freed, an outcome recorded, shutdown.
  private let dispatchWake = WakeSignal()
  /// Wakes the fetcher: the buffer has room, shutdown.
  private let fetchWake = WakeSignal()
  /// Ends a claim's wait for jobs: shutdown, or devices freed on a host that places jobs (a
  /// claim that waits for a new job is served it by the store, whatever ends meanwhile).
  private let claimWake = WakeSignal()
  /// Wakes the recorder: successes to record.
  private let recordWake = WakeSignal()
  /// Wakes the start-mark writer.
  private let startWake = WakeSignal()
  /// Deadlines, heartbeats and pauses are kept on this clock (a test clock in timing tests).
  private let clock: any NovaClock
  private var maxPrefetch: Int { configuration.prefetch ?? configuration.concurrency * 32 }
  private var maxUnrecorded: Int { configuration.concurrency * 4 + maxPrefetch }

  /// The prefetch to use now: fixed, or about 100 ms of work at the pace measured so far.
  private func currentPrefetch(_ state: State) -> Int {
    if let fixed = configuration.prefetch { return fixed }
    return min(maxPrefetch, Int(state.pace.pace * 0.1))
  }

  public convenience init(
    queue: any JobQueue, registry: JobRegistry, configuration: Configuration, logger: Logger, clock: any NovaClock = SystemClock()
  ) {
    self.init(queue: queue, registry: LiveJobRegistry(registry), configuration: configuration, logger: logger, clock: clock)
  }

  /// A pool whose handlers can be replaced while it runs (`LiveJobRegistry.replace`).
  public init(
    queue: any JobQueue, registry: LiveJobRegistry, configuration: Configuration, logger: Logger, clock: any NovaClock = SystemClock()
  ) {
    self.clock = clock
    self.startedAt = clock.now()
    self.queue = queue
    self.registry = registry
    self.configuration = configuration
    self.logger = logger
  }

  /// Jobs being run right now.
  public var runningCount: Int { state.withLock { $0.running } }

  /// Runs until shutdown (graceful shutdown of the service group, `shutdown()`, or task
  /// cancellation, which releases in-flight leases at once).
  public func run() async throws {
    let started = clock.uptime()
    state.withLock { $0.pace = PaceMeter(now: started) }
    // Everything the pool does is audited as this worker.
    await AuditContext.$actor.withValue("worker:\(configuration.workerID)") {
      await withGracefulShutdownHandler {
        await withDiscardingTaskGroup { group in
          group.addTask { await self.supervise() }
          group.addTask { await self.renewLeases() }
          group.addTask { await self.markStarts() }
          group.addTask { await self.fetch() }
          group.addTask { await self.recordCompletions() }
          await self.dispatch(into: &group)
        }
      } onGracefulShutdown: {
        self.shutdown()
      }
    }
    logger.info("worker pool stopped", metadata: ["worker": "\(configuration.workerID)"])
  }

  /// Stops claiming; in-flight jobs get the grace period to finish.
  public func shutdown() {
    let deadline = clock.uptime() + configuration.shutdownGracePeriod
    state.withLock { state in
      if !state.stopping {
        state.stopping = true
        state.stopDeadline = deadline
        state.exitBy = ContinuousClock.now + configuration.shutdownGracePeriod + Self.exitMargin
      }
    }
    dispatchWake.signal()
    fetchWake.signal()
    claimWake.signal()
  }

  private var isStopping: Bool { state.withLock { $0.stopping } || Task.isCancelled }

  /// Keeps `concurrency + prefetch` jobs leased (running or buffered).
  private func fetch() async {
    while !isStopping {
      // Refill only when the buffer is half empty, so that each claim takes many jobs: with a
      // remote backend every claim is a round trip, however few jobs it brings.
      let (want, buffered, lowWater, freeSlots) = state.withLock { state -> (Int, Int, Int, Int) in
        let prefetch = currentPrefetch(state)
        return (
          configuration.concurrency + prefetch - state.running - state.buffered, state.buffered, prefetch / 2,
          max(0, configuration.concurrency - state.running - state.buffered)
        )
      }
      // Free slots that the buffer does not cover are claimed for at once, whatever the low
      // water mark: with prefetch 0 (slow jobs) a job that trickles in must not wait for a
      // running one to finish.
      if want <= 0 || (buffered > lowWater && freeSlots == 0) {
        await fetchWake.wait()
        continue
      }
      if let pausedUntil = state.withLock({ $0.pausedUntil }), clock.uptime() < pausedUntil {
        await fetchWake.wait(timeout: pausedUntil - clock.uptime(), clock: clock)
        continue
      }
      // No handlers (an empty registry) claims nothing: an empty kind filter would take every kind.
      if registry.kinds.isAll {
        await fetchWake.wait(timeout: configuration.pollInterval)
        continue
      }
      // A job placed on the host's devices holds them from its claim on: one claimed ahead of a
      // free slot would keep its GPUs idle in the buffer, and a claim for more than the free
      // slots walks the queue for jobs it could never place. While such jobs come, a claim asks
      // for the free slots only; jobs that ask for nothing are claimed ahead as before.
      let limit = configuration.capacity != nil && state.withLock({ $0.placing }) ? freeSlots : want
      if limit <= 0 {
        await fetchWake.wait()
        continue
      }
      let leases: [JobLease]
      do {
        // Those that will run at once are marked started in the claim itself (no second
        // write); the rest are marked when they leave the buffer.
        // Only kinds this pool has handlers for: a job of another kind waits for a worker that
        // runs it instead of failing here.
        let request = ClaimRequest(
          queues: configuration.queues, kinds: registry.kinds, worker: configuration.workerID,
          leaseDuration: configuration.leaseDuration, limit: limit, starting: freeSlots, capacity: freeCapacity(),
          totalCapacity: configuration.capacity, reserveAfter: configuration.reserveAfter)
        leases = try await claimOrWait(request)
      } catch {
        logger.error("claim failed", metadata: ["error": "\(error)"])
        await fetchWake.wait(timeout: configuration.pollInterval)
        continue
      }
      if leases.isEmpty { continue }
      let now = clock.uptime()
      let stopping = state.withLock { state -> Bool in
        state.buffer.append(contentsOf: leases.map { Buffered(lease: $0, lastHeartbeat: now) })
        for lease in leases { if let placement = lease.job.placement { state.held[lease.id] = placement } }
        state.placing = leases.contains { $0.job.requirements != nil }
        state.occupancy += 1
        return state.stopping
      }
      dispatchWake.signal()
      if stopping { break }
    }
    await releaseBuffered()
  }

  /// Claims; with nothing to take, waits in the store's claim (up to the poll interval) for
  /// jobs, which a SQLite store hands over in the transaction that enqueues them. A job of
  /// this pool that ends and frees devices ends the wait (the claim asked for what was free
  /// before), and so does shutdown. A slot freed under a queue's or a key's limit wakes the
  /// store's claims itself. Any other end leaves the claim waiting: ended on every job's end,
  /// it cost a claim that found nothing, and a commit, per job.
  private func claimOrWait(_ request: ClaimRequest) async throws -> [JobLease] {
    let wait = configuration.pollInterval
    return try await withThrowingTaskGroup(of: [JobLease]?.self) { group in
      group.addTask { try await self.bounded { try await self.queue.claim(request, waitingUpTo: wait) } }
      group.addTask {
        await self.claimWake.wait()
        return nil
      }
      // The claim's answer is always awaited: given up, it still brings what it took meanwhile.
      var leases: [JobLease] = []
      while let answer = try await group.next() {
        group.cancelAll()
        if let answer { leases = answer }
      }
      return leases
    }
  }

  /// What the host has that no claimed job holds.
  private func freeCapacity() -> HostCapacity? {
    guard let capacity = configuration.capacity else { return nil }
    return state.withLock { state in state.held.values.reduce(capacity) { $0.subtracting($1) } }
  }

  /// Gives the jobs claimed ahead back in one call, bounded: with the store down, a stopping
  /// worker does not wait for it (the leases expire and the jobs come back without an attempt).
  private func releaseBuffered() async {
    let leftovers = state.withLock { $0.drainBuffer() }
    if leftovers.isEmpty { return }
    do {
      _ = try await StoreDeadline.within(Self.releaseBound) { try await bounded { try await queue.release(batch: leftovers) } }
    } catch {
      logger.warning("could not release buffered leases; they will expire", metadata: ["jobs": "\(leftovers.count)", "error": "\(error)"])
    }
  }

  /// How long a stopping worker tries to give its buffered jobs back.
  static let releaseBound: Duration = .seconds(2)

  /// The longest one store call of the pool may take (retries by the store's client included):
  /// the pool's loops try again themselves, so a store that is down never holds a loop, a
  /// timeout or shutdown longer than this.
  static let storeCallBound: Duration = .seconds(3)

  /// How long after its grace period a stopping pool may still wait for the store.
  static let exitMargin: Duration = .seconds(3)

  private func bounded<T: Sendable>(_ body: () async throws -> T) async throws -> T {
    var bound = Self.storeCallBound
    if let exitBy = state.withLock({ $0.exitBy }) { bound = min(bound, max(.milliseconds(1), exitBy - ContinuousClock.now)) }
    return try await StoreDeadline.within(bound) { try await body() }
  }

  private func dispatch(into group: inout DiscardingTaskGroup) async {
    while true {
      // Every job a free slot can take now, so that those claimed ahead are marked started
      // in one store call.
      let next = state.withLock { state -> (stop: Bool, leases: [JobLease]) in
        if state.stopping || Task.isCancelled { return (true, []) }
        var leases: [JobLease] = []
        while state.running < configuration.concurrency, state.unrecorded < maxUnrecorded, let buffered = state.popBuffered() {
          state.running += 1
          state.unrecorded += 1
          leases.append(buffered.lease)
        }
        return (false, leases)
      }
      if next.stop { break }
      if !next.leases.isEmpty {
        // Jobs claimed ahead get their start mark written alongside (their attempt counts from
        // then on: one still in the buffer when this worker dies is given back).
        let ahead = next.leases.filter { !$0.started }
        if !ahead.isEmpty {
          state.withLock { $0.pendingStarts += ahead }
          startWake.signal()
        }
        for lease in next.leases { group.addTask { await self.execute(lease) } }
        // The buffer has room again: the fetcher tops it up (and claims for slots still free).
        fetchWake.signal()
        continue
      }
      await dispatchWake.wait()
    }
    // Shutdown (or cancellation): wake the fetcher so that it releases what it buffered.
    state.withLock { $0.stopping = true }
    fetchWake.signal()
    claimWake.signal()
  }

  private func execute(_ lease: JobLease) async {
    let job = lease.job
    let outcome: Result<Data?, any Error>
    let reason: StopReason?
    var currentLease = lease
    var ranFor = configuration.jobTimeout
    if let entry = registry.current.entry(for: job.kind) {
      // On a host with GPUs, a job that asked for none gets none: it must not use another's.
      let placement =
        job.placement
        ?? configuration.capacity.flatMap { $0.gpus.isEmpty ? nil : JobPlacement(host: $0.host, gpus: [], cpus: 0, memory_mib: 0) }
      let context = JobContext(
        id: job.id, queue: job.queue, kind: job.kind, attempt: job.attempts, maxAttempts: job.maxAttempts,
        logger: logger, logStore: queue.logStore, placement: placement, concurrencyKey: job.concurrencyKey)
      let payload = job.payload
      let run = entry.run
      // The handler runs in its own task; the pool waits on the gate, which a stop (timeout,
      // cancellation, shutdown) also opens: a handler that ignores cancellation is abandoned,
      // its slot freed and its late result ignored, instead of holding the pool.
      let gate = OutcomeGate()
      let ended = WakeSignal()
      let task = Task {
        do {
          gate.resolve(.success(try await run(payload, context)))
        } catch {
          gate.resolve(.failure(error))
        }
        ended.signal()
      }
      let now = clock.uptime()
      let timeout = entry.timeout ?? configuration.jobTimeout
      let forced = state.withLock { state -> Bool in
        state.inFlight[job.id] = InFlight(
          lease: lease, task: task, gate: gate, timeout: timeout, deadline: now + timeout, lastHeartbeat: now,
          stopReason: state.forceStopped ? .shutdown : nil, stopGrace: entry.stopGrace)
        return state.forceStopped
      }
      if forced {
        task.cancel()
        gate.resolve(.failure(CancellationError()))
      }
      outcome = await withTaskCancellationHandler {
        await gate.wait()
      } onCancel: {
        self.stop(job.id, reason: .shutdown)
      }
      // A stopped handler keeps its slot (and its lease, still heartbeated) until it has ended:
      // a program in its kill grace still holds its GPU, and the job's next attempt must not
      // start beside it. One that ignores cancellation past the kind's stop grace is abandoned.
      if state.withLock({ $0.inFlight[job.id]?.stopReason != nil }) {
        // In a task of its own: this one is cancelled when the pool is, and a cancelled wait
        // would return at once.
        let grace = entry.stopGrace
        if !(await Task { await ended.wait(timeout: grace) }.value) {
          logger.warning(
            "a stopped job's handler did not end within its stop grace; its slot is freed",
            metadata: ["job": "\(job.id)", "stop_grace_s": "\(entry.stopGrace.seconds)"])
        }
      }
      let finishedAt = clock.uptime()
      (reason, currentLease, ranFor) = state.withLock { state -> (StopReason?, JobLease, Duration) in
        state.running -= 1
        state.pace.finish(at: finishedAt)
        state.held[job.id] = nil
        state.occupancy += 1
        // A job that ended before its start mark went out needs none: its outcome is recorded
        // next, and the mark would cost the store a read and a write for nothing.
        if !lease.started, !state.pendingStarts.isEmpty, let waiting = state.pendingStarts.firstIndex(where: { $0.id == job.id }) {
          state.pendingStarts.remove(at: waiting)
        }
        let entry = state.inFlight.removeValue(forKey: job.id)
        return (entry?.stopReason, entry?.lease ?? lease, entry?.timeout ?? timeout)
      }
    } else {
      outcome = .failure(NonRetryableJobError("no handler for job kind '\(job.kind)'"))
      reason = .noHandler
      ranFor = configuration.jobTimeout
      state.withLock { state in
        state.running -= 1
        state.held[job.id] = nil
      }
    }
    if configuration.capacity != nil { claimWake.signal() }
    if reason == nil, case .success(let result) = outcome {
      state.withLock { $0.completions.append(JobCompletion(lease: currentLease, result: result)) }
      recordWake.signal()
      dispatchWake.signal()
      fetchWake.signal()
      return
    }
    dispatchWake.signal()
    fetchWake.signal()
    await record(currentLease, outcome: outcome, reason: reason, timeout: ranFor)
    state.withLock { $0.unrecorded -= 1 }
    dispatchWake.signal()
  }

  /// Records successes in batches: whatever finished while the previous batch was being
  /// written goes into the next one.
  private func recordCompletions() async {
    while true {
      let (batch, done) = state.withLock { state -> ([JobCompletion], Bool) in
        if state.completions.isEmpty {
          return ([], (state.stopping || Task.isCancelled) && state.unrecorded == 0)
        }
        let batch = state.completions
        state.completions.removeAll(keepingCapacity: true)
        return (batch, false)
      }
      if done { return }
      if batch.isEmpty {
        if Task.isCancelled {
          // Cancelled with attempts still to record: a wait here would answer at once, so it
          // waits outside this task (else the loop spins a core until the last job ends).
          _ = await Task { await self.recordWake.wait(timeout: .milliseconds(100)) }.value
        } else {
          await recordWake.wait(timeout: .milliseconds(100))
        }
        continue
      }
      let recorded = await recordWithRetries(batch)
      if let recorded {
        for (entry, ok) in zip(batch, recorded) where !ok {
          logger.warning("lease lost before the job's success was recorded", metadata: ["job": "\(entry.lease.id)"])
        }
      }
      // Unrecorded successes keep their leases; when those expire the jobs run again.
      state.withLock { state in
        state.unrecorded -= batch.count
        for entry in batch { state.recording[entry.lease.id] = nil }
      }
      dispatchWake.signal()
    }
  }

  /// Writes a batch of successes. A store that is unavailable is waited for (with backoff, the
  /// leases heartbeated meanwhile) until it answers or the pool is forced to stop; any other
  /// error is tried three times.
  private func recordWithRetries(_ batch: [JobCompletion]) async -> [Bool]? {
    let now = clock.uptime()
    state.withLock { state in
      for entry in batch { state.recording[entry.lease.id] = Buffered(lease: entry.lease, lastHeartbeat: now) }
    }
    var failures = 0
    var delay = Duration.milliseconds(100)
    while true {
      // Heartbeats move the leases' expiry meanwhile; the completion checks the fencing token only.
      do {
        let recorded = try await bounded { try await queue.complete(batch: batch) }
        storeAnswered()
        return recorded
      } catch {
        let transient = error.isTransientNovaError
        if !transient { failures += 1 }
        let forced = state.withLock { $0.forceStopped }
        logger.error(
          "could not record completions",
          metadata: ["jobs": "\(batch.count)", "transient": "\(transient)", "error": "\(error)"])
        if failures >= 3 || forced { return nil }
        try? await clock.sleep(for: delay)
        delay = min(delay * 2, .seconds(1))
      }
    }
  }

  /// The store answered: claims need not wait any more.
  private func storeAnswered() {
    state.withLock { state in
      state.pausedUntil = nil
      state.storeBackoff = .milliseconds(100)
    }
  }

  /// The store was unavailable (to the pool or to a handler): claims wait a growing pause, so
  /// that jobs given back are not claimed and failed again in a tight loop.
  private func storeUnavailable() {
    let now = clock.uptime()
    state.withLock { state in
      state.pausedUntil = now + state.storeBackoff
      state.storeBackoff = min(state.storeBackoff * 2, .seconds(5))
    }
  }

  private func stop(_ id: JobID, reason: StopReason) {
    let stopped = state.withLock { state -> (Task<Void, Never>, OutcomeGate)? in
      guard let entry = state.inFlight[id], entry.stopReason == nil else { return nil }
      state.inFlight[id]?.stopReason = reason
      return (entry.task, entry.gate)
    }
    guard let (task, gate) = stopped else { return }
    task.cancel()
    gate.resolve(.failure(CancellationError()))
  }

  private func record(_ lease: JobLease, outcome: Result<Data?, any Error>, reason: StopReason?, timeout: Duration) async {
    do {
      switch (reason, outcome) {
      case (.jobCancelled, _), (.leaseLost, _):
        logger.info("job stopped", metadata: ["job": "\(lease.id)", "reason": "\(reason!)"])
      case (_, .success(let result)):
        try await bounded { try await queue.complete(lease, result: result) }
      case (.shutdown, .failure):
        try await bounded { try await queue.release(lease) }
      case (.noHandler, _):
        logger.warning("no handler for the job's kind any more (reloaded?); released", metadata: ["job": "\(lease.id)", "kind": "\(lease.job.kind)"])
        try await bounded { try await queue.release(lease) }
      case (.timeout, .failure):
        _ = try await bounded {
          try await queue.fail(lease, error: "timed out after \(timeout.seconds.formatted()) s (the \(lease.job.kind) timeout)", retryable: true)
        }
      case (nil, .failure(let error)) where error.isTransientNovaError:
        // A store the handler needed is down: not the job's fault, so the attempt is given back
        // (never counted towards dead-lettering) and claims pause before it runs again.
        logger.warning("job met an unavailable store; released to run again", metadata: ["job": "\(lease.id)", "error": "\(error)"])
        storeUnavailable()
        try await bounded { try await queue.release(lease) }
      case (nil, .failure(let error)):
        let retryable = !(error is NonRetryableJobError) && !(error is NovaError)
        let retryIn = (error as? RetryLaterJobError)?.delay
        let outcome = try await bounded {
          try await queue.fail(lease, error: String(describing: error), retryable: retryable, retryIn: retryIn)
        }
        logger.debug("job failed", metadata: ["job": "\(lease.id)", "error": "\(error)", "outcome": "\(outcome)"])
      }
    } catch NovaError.leaseLost(let id) {
      logger.warning("lease lost before the job's outcome was recorded", metadata: ["job": "\(id)"])
    } catch {
      // The lease stays; when it expires the reaper makes the job available again.
      logger.error("could not record job outcome", metadata: ["job": "\(lease.id)", "error": "\(error)"])
    }
  }

  /// True once the pool stops and holds nothing: no job running, buffered or being recorded.
  private var isFinished: Bool {
    state.withLock { state in
      (state.stopping || Task.isCancelled) && state.inFlight.isEmpty && state.unrecorded == 0 && state.buffered == 0
    }
  }

  private var supervisorTick: Duration { min(configuration.heartbeatInterval / 2, .milliseconds(100)) }

  /// Enforces timeouts and the shutdown deadline. Store calls happen elsewhere
  /// (`renewLeases`), so a slow store never delays stopping a job that ran out of time.
  private func supervise() async {
    let tick = supervisorTick
    while !isFinished {
      try? await clock.sleep(for: tick)
      let now = clock.uptime()
      // Without jobs ending, the pace decays here.
      state.withLock { $0.pace.measure(now: now) }
      var toCancel: [(Task<Void, Never>, OutcomeGate)] = []
      state.withLock { state in
        if state.stopping, let deadline = state.stopDeadline, now >= deadline, !state.forceStopped {
          state.forceStopped = true
          // Stopped handlers may take their stop grace to end (a program in its kill grace), and
          // their leases must be heartbeated, then released, meanwhile.
          let grace = state.inFlight.values.map(\.stopGrace).max() ?? .zero
          let end = ContinuousClock.now + grace + Self.exitMargin
          if let exitBy = state.exitBy, exitBy < end { state.exitBy = end }
        }
        for (id, entry) in state.inFlight where entry.stopReason == nil {
          if state.forceStopped {
            state.inFlight[id]?.stopReason = .shutdown
            toCancel.append((entry.task, entry.gate))
          } else if now >= entry.deadline {
            state.inFlight[id]?.stopReason = .timeout
            toCancel.append((entry.task, entry.gate))
          }
        }
      }
      // Stopped handlers are cancelled and their slots freed at once: one that ignores the
      // cancellation is abandoned (its late result is ignored).
      for (task, gate) in toCancel {
        task.cancel()
        gate.resolve(.failure(CancellationError()))
      }
    }
  }

  /// Writes the start marks of jobs that left the buffer, as many per call as have gathered
  /// while the previous call was out. Handlers do not wait for them: a store call before each
  /// dispatch round cost a third of the throughput. A worker that dies before a mark lands has
  /// that job's attempt given back, which the store bounds (`JobQueue.reapExpiredLeases`), so a
  /// job that kills its worker at once still ends dead.
  private func markStarts() async {
    while true {
      let batch = state.withLock { state -> [JobLease] in
        defer { state.pendingStarts = [] }
        return state.pendingStarts
      }
      if batch.isEmpty {
        if isFinished || Task.isCancelled { return }
        await startWake.wait(timeout: .milliseconds(100))
        continue
      }
      do {
        try await bounded { try await queue.start(batch) }
      } catch {
        logger.error(
          "could not mark jobs started; trying again", metadata: ["jobs": "\(batch.count)", "error": "\(error)"])
        // Those still running are marked on the next try.
        state.withLock { state in state.pendingStarts = batch.filter { state.inFlight[$0.id] != nil } + state.pendingStarts }
        await startWake.wait(timeout: .milliseconds(100))
      }
    }
  }

  /// How often the pool renews its announcement (`WorkerPresence`); it lapses after three.
  static let presenceInterval: Duration = .seconds(10)

  /// Heartbeats the leases that are due (running, buffered, or whose success is being
  /// recorded) and renews the worker's announcement; withdraws it when the pool stops.
  private func renewLeases() async {
    let tick = supervisorTick
    var lastAnnounced: Duration?
    var announcedOccupancy = -1
    // A cancelled pool gives its leases back at once: nothing left to renew.
    while !isFinished && !Task.isCancelled {
      let now = clock.uptime()
      let occupancy = state.withLock { $0.occupancy }
      // Every `presenceInterval`, and within a second of its jobs changing (what the registry
      // shows as running and in use follows them).
      let announceDue = lastAnnounced.map { now - $0 >= Self.presenceInterval || (occupancy != announcedOccupancy && now - $0 >= .seconds(1)) }
      if !isStopping, announceDue ?? true {
        lastAnnounced = now
        announcedOccupancy = occupancy
        await announce()
      }
      let due = state.withLock { state -> [JobLease] in
        var due: [JobLease] = []
        // Stopped jobs too: their handlers may still be ending (a program in its kill grace),
        // and a lapsed lease would let the next attempt start beside them.
        for entry in state.inFlight.values
        where now - entry.lastHeartbeat >= configuration.heartbeatInterval {
          due.append(entry.lease)
        }
        for index in state.bufferHead..<state.buffer.count
        where now - state.buffer[index].lastHeartbeat >= configuration.heartbeatInterval {
          due.append(state.buffer[index].lease)
        }
        for entry in state.recording.values where now - entry.lastHeartbeat >= configuration.heartbeatInterval {
          due.append(entry.lease)
        }
        return due
      }
      if !due.isEmpty { await heartbeat(due, at: now) }
      try? await clock.sleep(for: tick)
    }
    do {
      try await bounded { try await queue.withdraw(worker: configuration.workerID) }
    } catch {
      logger.debug("withdrawing the worker's announcement failed", metadata: ["error": "\(error)"])
    }
  }

  private func announce() async {
    let now = clock.now()
    let lapses = now.addingTimeInterval((Self.presenceInterval * 3).seconds)
    let running = state.withLock { state in state.inFlight.keys.map(\.rawValue).sorted() }
    let presence = WorkerPresence(
      worker: configuration.workerID, queues: configuration.queues, kinds: registry.kinds.patterns, expiresAt: lapses,
      host: configuration.capacity?.host ?? ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init),
      version: NovaVersion.string, startedAt: startedAt, lastSeen: now, capacity: configuration.capacity, free: freeCapacity(),
      running: running)
    do {
      try await bounded { try await queue.announce(presence) }
    } catch {
      logger.debug("announcing the worker failed", metadata: ["error": "\(error)"])
    }
  }

  private func heartbeat(_ leases: [JobLease], at now: Duration) async {
    let outcomes: [JobID: HeartbeatOutcome]
    do {
      outcomes = try await bounded { try await queue.heartbeat(leases, leaseDuration: configuration.leaseDuration) }
    } catch {
      logger.error("heartbeat failed", metadata: ["error": "\(error)"])
      return
    }
    var gone: Set<JobID> = []
    for (id, outcome) in outcomes {
      switch outcome {
      case .extended(let expiresAt):
        state.withLock { state in
          if state.inFlight[id] != nil {
            state.inFlight[id]?.lastHeartbeat = now
            state.inFlight[id]?.lease.expiresAt = expiresAt
          } else if let index = state.buffer[state.bufferHead...].firstIndex(where: { $0.lease.id == id }) {
            state.buffer[index].lastHeartbeat = now
            state.buffer[index].lease.expiresAt = expiresAt
          } else if state.recording[id] != nil {
            state.recording[id]?.lastHeartbeat = now
          }
        }
      case .cancelled:
        stop(id, reason: .jobCancelled)
        gone.insert(id)
      case .lost:
        stop(id, reason: .leaseLost)
        gone.insert(id)
      }
    }
    if !gone.isEmpty {
      // Buffered jobs that were cancelled or reclaimed must not start, and the devices they
      // were placed on are free again (a running one frees its own when its handler ends).
      let freed = state.withLock { state -> Bool in
        let dropped = state.buffer[state.bufferHead...].filter { gone.contains($0.lease.id) }.map(\.lease.id)
        state.buffer = state.buffer[state.bufferHead...].filter { !gone.contains($0.lease.id) }
        state.bufferHead = 0
        for id in dropped where state.held.removeValue(forKey: id) != nil { state.occupancy += 1 }
        return !dropped.isEmpty
      }
      if freed {
        fetchWake.signal()
        claimWake.signal()
      }
    }
  }
}

/// A handler's outcome, given once: by the handler's task when it ends, or by the pool when it
/// stops the job first (the handler's later result is then ignored).
typealias OutcomeGate = OneShotAnswer<Result<Data?, any Error>>
