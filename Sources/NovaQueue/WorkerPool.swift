import Foundation
import Logging
import NovaCore
import ServiceLifecycle
import Synchronization

/// Runs jobs from a queue with N concurrent workers: claims in batches, heartbeats long jobs,
/// enforces per-job timeouts, and shuts down gracefully (in-flight jobs finish, or their leases
/// are released when the grace period ends).
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
    /// How often running jobs' leases are extended; a third of the lease by default.
    public var heartbeatInterval: Duration
    /// A job running longer is cancelled and fails (and is retried if attempts remain).
    public var jobTimeout: Duration
    /// How long an idle pool waits before looking for jobs again (other processes' jobs,
    /// delayed jobs that became due).
    public var pollInterval: Duration
    /// After shutdown begins, how long in-flight jobs may run before they are cancelled and
    /// their leases released.
    public var shutdownGracePeriod: Duration

    public init(
      concurrency: Int = 4, queues: [String] = [], workerID: String = WorkerPool.defaultWorkerID(),
      leaseDuration: Duration = .seconds(30), heartbeatInterval: Duration? = nil,
      jobTimeout: Duration = .seconds(300), pollInterval: Duration = .milliseconds(250),
      shutdownGracePeriod: Duration = .seconds(10)
    ) {
      self.concurrency = max(1, concurrency)
      self.queues = queues
      self.workerID = workerID
      self.leaseDuration = leaseDuration
      self.heartbeatInterval = heartbeatInterval ?? leaseDuration / 3
      self.jobTimeout = jobTimeout
      self.pollInterval = pollInterval
      self.shutdownGracePeriod = shutdownGracePeriod
    }
  }

  /// Why the pool stopped a job's handler.
  enum StopReason: Sendable {
    case timeout
    case jobCancelled
    case leaseLost
    case shutdown
  }

  struct InFlight {
    var lease: JobLease
    let task: Task<Data?, any Error>
    let deadline: ContinuousClock.Instant
    var lastHeartbeat: ContinuousClock.Instant
    var stopReason: StopReason?
  }

  struct State {
    var running = 0
    var inFlight: [JobID: InFlight] = [:]
    var stopping = false
    var stopDeadline: ContinuousClock.Instant?
    var forceStopped = false
  }

  /// `host-pid-random`, unique per process.
  public static func defaultWorkerID() -> String {
    let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "host"
    return "\(host)-\(ProcessInfo.processInfo.processIdentifier)-\(UInt16.random(in: 0...UInt16.max))"
  }

  public let configuration: Configuration
  private let queue: any JobQueue
  private let registry: JobRegistry
  private let logger: Logger
  private let state = Mutex(State())
  private let slotFreed = WakeSignal()
  private let clock = ContinuousClock()

  public init(queue: any JobQueue, registry: JobRegistry, configuration: Configuration, logger: Logger) {
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
    await withGracefulShutdownHandler {
      await withDiscardingTaskGroup { group in
        group.addTask { await self.supervise() }
        await self.dispatch(into: &group)
      }
    } onGracefulShutdown: {
      self.shutdown()
    }
    logger.info("worker pool stopped", metadata: ["worker": "\(configuration.workerID)"])
  }

  /// Stops claiming; in-flight jobs get the grace period to finish.
  public func shutdown() {
    let deadline = clock.now.advanced(by: configuration.shutdownGracePeriod)
    state.withLock { state in
      if !state.stopping {
        state.stopping = true
        state.stopDeadline = deadline
      }
    }
    slotFreed.signal()
  }

  private var isStopping: Bool { state.withLock { $0.stopping } }

  private func dispatch(into group: inout DiscardingTaskGroup) async {
    while !isStopping && !Task.isCancelled {
      let free = state.withLock { configuration.concurrency - $0.running }
      if free <= 0 {
        await slotFreed.wait()
        continue
      }
      let leases: [JobLease]
      do {
        leases = try await queue.claim(
          queues: configuration.queues, worker: configuration.workerID,
          leaseDuration: configuration.leaseDuration, limit: free)
      } catch {
        logger.error("claim failed", metadata: ["error": "\(error)"])
        try? await Task.sleep(for: configuration.pollInterval)
        continue
      }
      if leases.isEmpty {
        await queue.waitForJobs(timeout: configuration.pollInterval)
        continue
      }
      state.withLock { $0.running += leases.count }
      for lease in leases {
        group.addTask { await self.execute(lease) }
      }
    }
  }

  private func execute(_ lease: JobLease) async {
    defer {
      state.withLock { $0.running -= 1 }
      slotFreed.signal()
    }
    let job = lease.job
    guard let entry = registry.entry(for: job.kind) else {
      await finish(lease, outcome: .failure(NonRetryableJobError("no handler for job kind '\(job.kind)'")), reason: nil)
      return
    }
    var jobLogger = logger
    jobLogger[metadataKey: "job"] = "\(job.id)"
    jobLogger[metadataKey: "kind"] = "\(job.kind)"
    let context = JobContext(
      id: job.id, queue: job.queue, kind: job.kind, attempt: job.attempts, maxAttempts: job.maxAttempts,
      logger: jobLogger)
    let payload = job.payload
    let run = entry.run
    let task = Task { try await run(payload, context) }
    let now = clock.now
    let forced = state.withLock { state -> Bool in
      state.inFlight[job.id] = InFlight(
        lease: lease, task: task, deadline: now.advanced(by: entry.timeout ?? configuration.jobTimeout),
        lastHeartbeat: now, stopReason: state.forceStopped ? .shutdown : nil)
      return state.forceStopped
    }
    if forced { task.cancel() }
    let outcome = await withTaskCancellationHandler {
      await task.result
    } onCancel: {
      self.stop(job.id, reason: .shutdown)
    }
    let (reason, currentLease) = state.withLock { state -> (StopReason?, JobLease) in
      let entry = state.inFlight.removeValue(forKey: job.id)
      return (entry?.stopReason, entry?.lease ?? lease)
    }
    await finish(currentLease, outcome: outcome, reason: reason)
  }

  private func stop(_ id: JobID, reason: StopReason) {
    let task = state.withLock { state -> Task<Data?, any Error>? in
      guard state.inFlight[id] != nil, state.inFlight[id]?.stopReason == nil else { return nil }
      state.inFlight[id]?.stopReason = reason
      return state.inFlight[id]?.task
    }
    task?.cancel()
  }

  private func finish(_ lease: JobLease, outcome: Result<Data?, any Error>, reason: StopReason?) async {
    do {
      switch (reason, outcome) {
      case (.jobCancelled, _), (.leaseLost, _):
        logger.info("job stopped", metadata: ["job": "\(lease.id)", "reason": "\(reason!)"])
      case (_, .success(let result)):
        try await queue.complete(lease, result: result)
      case (.shutdown, .failure):
        try await queue.release(lease)
      case (.timeout, .failure):
        _ = try await queue.fail(
          lease, error: "timed out after \(configuration.jobTimeout.seconds) s", retryable: true)
      case (nil, .failure(let error)):
        let retryable = !(error is NonRetryableJobError) && !(error is NovaError)
        let outcome = try await queue.fail(lease, error: String(describing: error), retryable: retryable)
        logger.debug("job failed", metadata: ["job": "\(lease.id)", "error": "\(error)", "outcome": "\(outcome)"])
      }
    } catch NovaError.leaseLost(let id) {
      logger.warning("lease lost before the job's outcome was recorded", metadata: ["job": "\(id)"])
    } catch {
      // The lease stays; when it expires the reaper makes the job available again.
      logger.error("could not record job outcome", metadata: ["job": "\(lease.id)", "error": "\(error)"])
    }
  }

  private func supervise() async {
    let tick = min(configuration.heartbeatInterval / 2, .milliseconds(100))
    while true {
      let (stopping, empty) = state.withLock { ($0.stopping, $0.inFlight.isEmpty && $0.running == 0) }
      if stopping && empty { return }
      if Task.isCancelled && empty { return }
      try? await Task.sleep(for: tick)
      let now = clock.now
      var toCancel: [Task<Data?, any Error>] = []
      let due = state.withLock { state -> [JobLease] in
        if state.stopping, let deadline = state.stopDeadline, now >= deadline, !state.forceStopped {
          state.forceStopped = true
        }
        var due: [JobLease] = []
        for (id, entry) in state.inFlight where entry.stopReason == nil {
          if state.forceStopped {
            state.inFlight[id]?.stopReason = .shutdown
            toCancel.append(entry.task)
          } else if now >= entry.deadline {
            state.inFlight[id]?.stopReason = .timeout
            toCancel.append(entry.task)
          } else if now - entry.lastHeartbeat >= configuration.heartbeatInterval {
            due.append(entry.lease)
          }
        }
        return due
      }
      for task in toCancel { task.cancel() }
      if !due.isEmpty { await heartbeat(due, at: now) }
    }
  }

  private func heartbeat(_ leases: [JobLease], at now: ContinuousClock.Instant) async {
    let outcomes: [JobID: HeartbeatOutcome]
    do {
      outcomes = try await queue.heartbeat(leases, leaseDuration: configuration.leaseDuration)
    } catch {
      logger.error("heartbeat failed", metadata: ["error": "\(error)"])
      return
    }
    for (id, outcome) in outcomes {
      switch outcome {
      case .extended(let expiresAt):
        state.withLock { state in
          state.inFlight[id]?.lastHeartbeat = now
          state.inFlight[id]?.lease.expiresAt = expiresAt
        }
      case .cancelled:
        stop(id, reason: .jobCancelled)
      case .lost:
        stop(id, reason: .leaseLost)
      }
    }
  }
}
