import Foundation
import NovaCore
import NovaQueue
import Synchronization

/// A queue whose chosen operations fail with `NovaError.unavailable` while `down` is set, as a
/// store that went away would; everything else goes to the real queue underneath.
final class FlakyJobQueue: JobQueue {
  enum Operation: Sendable { case complete, fail, release }

  let base: any JobQueue
  private let failing: Mutex<Set<Operation>>
  private let calls = Mutex<[Operation: Int]>([:])
  private let heartbeatDelay = Mutex(Duration.zero)
  private let startDelay = Mutex(Duration.zero)
  private let marked = Mutex<[JobID]>([])

  /// Makes every start mark call take `delay` first.
  func setStartDelay(_ delay: Duration) { startDelay.withLock { $0 = delay } }

  /// The jobs start marks were written for, in order.
  var startMarked: [JobID] { marked.withLock { $0 } }

  /// Makes every heartbeat take `delay` first (a slow store).
  func setHeartbeatDelay(_ delay: Duration) { heartbeatDelay.withLock { $0 = delay } }

  init(_ base: any JobQueue, failing: Set<Operation> = []) {
    self.base = base
    self.failing = Mutex(failing)
  }

  /// Makes `operations` fail (or, with an empty set, succeed again).
  func setFailing(_ operations: Set<Operation>) { failing.withLock { $0 = operations } }

  /// How often `operation` was called, failed calls included.
  func callCount(_ operation: Operation) -> Int { calls.withLock { $0[operation] ?? 0 } }

  private func check(_ operation: Operation) throws {
    calls.withLock { $0[operation, default: 0] += 1 }
    if failing.withLock({ $0.contains(operation) }) { throw NovaError.unavailable("test store is down") }
  }

  func enqueue(_ request: JobRequest) async throws -> EnqueueResult { try await base.enqueue(request) }
  func enqueue(batch requests: [JobRequest]) async throws -> [EnqueueResult] { try await base.enqueue(batch: requests) }
  func claim(_ request: ClaimRequest) async throws -> [JobLease] {
    try await base.claim(request)
  }
  func start(_ leases: [JobLease]) async throws {
    marked.withLock { $0 += leases.map(\.id) }
    let delay = startDelay.withLock { $0 }
    if delay > .zero { try await Task.sleep(for: delay) }
    try await base.start(leases)
  }
  func heartbeat(_ leases: [JobLease], leaseDuration: Duration) async throws -> [JobID: HeartbeatOutcome] {
    let delay = heartbeatDelay.withLock { $0 }
    if delay > .zero { try await Task.sleep(for: delay) }
    return try await base.heartbeat(leases, leaseDuration: leaseDuration)
  }
  func complete(batch: [JobCompletion]) async throws -> [Bool] {
    try check(.complete)
    return try await base.complete(batch: batch)
  }
  func fail(_ lease: JobLease, error: String, retryable: Bool, retryIn: Duration?) async throws -> FailOutcome {
    try check(.fail)
    return try await base.fail(lease, error: error, retryable: retryable, retryIn: retryIn)
  }
  func release(_ lease: JobLease) async throws {
    try check(.release)
    try await base.release(lease)
  }
  func release(batch leases: [JobLease]) async throws -> Int {
    try check(.release)
    return try await base.release(batch: leases)
  }
  func cancel(_ id: JobID) async throws -> Job { try await base.cancel(id) }
  func retry(_ id: JobID) async throws -> Job { try await base.retry(id) }
  func reapExpiredLeases() async throws -> ReapResult { try await base.reapExpiredLeases() }
  func purgeFinished(before: Date, deadBefore: Date?) async throws -> Int {
    try await base.purgeFinished(before: before, deadBefore: deadBefore)
  }
  func delete(_ jobs: [(id: JobID, queue: String)]) async throws -> Int { try await base.delete(jobs) }
  func stats() async throws -> QueueStats { try await base.stats() }
  func announce(_ presence: WorkerPresence) async throws { try await base.announce(presence) }
  func withdraw(worker: String) async throws { try await base.withdraw(worker: worker) }
  func workers() async throws -> [WorkerPresence] { try await base.workers() }
  func controls() async throws -> [String: QueueControls] { try await base.controls() }
  func setControls(_ controls: QueueControls, queue: String) async throws { try await base.setControls(controls, queue: queue) }
  func get(_ id: JobID) async throws -> Job? { try await base.get(id) }
  func list(_ filter: JobFilter) async throws -> JobPage { try await base.list(filter) }
  func waitForJobs(timeout: Duration) async { await base.waitForJobs(timeout: timeout) }
}
