import Foundation
import NovaCore
import NovaQueue
import Synchronization

/// Holds the claims of HTTP workers that asked to wait for work: when new jobs may be available
/// (an enqueue, a release, a reaped lease) or at the latest every `tick` (delayed jobs coming
/// due, jobs enqueued by other hosts), one loop claims for the waiters in the order they came.
/// Waiters asking for the same queues and kinds share one finding of "nothing there", so a
/// thousand idle workers cost one claim per wake-up, not a thousand.
public final class ClaimLongPoll: Sendable {
  private final class Waiter: Sendable {
    let request: ClaimRequest
    /// Who asked: the claims made for this waiter are recorded under this name, not under the
    /// name of whichever request happened to start the loop.
    let actor = AuditContext.actor
    private let outcome = OneShotAnswer<[JobLease]>()

    init(request: ClaimRequest) { self.request = request }

    /// Hands the waiter its answer; false when it already had one (it timed out), in which
    /// case the caller still owns `leases`.
    func resolve(_ leases: [JobLease]) -> Bool { outcome.resolve(leases) }

    func wait() async -> [JobLease] { await outcome.wait() }
  }

  private struct State {
    var waiters: [ObjectIdentifier: (order: Int, waiter: Waiter)] = [:]
    var nextOrder = 0
    var looping = false
    /// Set on shutdown: claims no longer wait.
    var ended = false
  }

  private let queue: any JobQueue
  private let clock: any NovaClock
  private let tick: Duration
  private let state = Mutex(State())

  /// How long one claim of the loop may take, retries included.
  static let roundBound: Duration = .seconds(2)

  /// A long-poll over `queue`; `tick` bounds how late a waiter learns of work no wake-up announced.
  public init(queue: any JobQueue, clock: any NovaClock = SystemClock(), tick: Duration = .milliseconds(250)) {
    self.queue = queue
    self.clock = clock
    self.tick = tick
  }

  /// How many claims wait now.
  public var waiting: Int { state.withLock { $0.waiters.count } }

  /// Answers every waiting claim now, empty (the server is stopping: a long poll must not hold
  /// its shutdown for the rest of its wait).
  public func endWaiting() {
    let waiters = state.withLock { state in
      state.ended = true
      defer { state.waiters.removeAll() }
      return state.waiters.values.map(\.waiter)
    }
    for waiter in waiters { _ = waiter.resolve([]) }
  }

  /// Claims at once; when nothing is there, waits up to `wait` for jobs to claim. The answer is
  /// empty when the wait ran out (or the task was cancelled).
  public func claim(_ request: ClaimRequest, wait: Duration) async throws -> [JobLease] {
    let leases = try await queue.claim(request)
    if !leases.isEmpty || wait <= .zero { return leases }
    let waiter = Waiter(request: request)
    let startLoop = state.withLock { state -> Bool? in
      if state.ended { return nil }
      state.waiters[ObjectIdentifier(waiter)] = (state.nextOrder, waiter)
      state.nextOrder += 1
      defer { state.looping = true }
      return !state.looping
    }
    guard let startLoop else { return [] }
    // The loop outlives this request: it must not inherit the request's store deadline (an
    // instant soon past, after which every claim it made would fail at once) nor its actor.
    if startLoop {
      Task { await StoreDeadline.$current.withValue(nil) { await AuditContext.$actor.withValue("system") { await self.serve() } } }
    }
    let clock = clock
    let timer = Task {
      try? await clock.sleep(for: wait)
      _ = waiter.resolve([])
    }
    let answer = await withTaskCancellationHandler {
      await waiter.wait()
    } onCancel: {
      _ = waiter.resolve([])
    }
    timer.cancel()
    state.withLock { _ = $0.waiters.removeValue(forKey: ObjectIdentifier(waiter)) }
    return answer
  }

  /// The loop: a round of claims, then a wait for news; it ends when nobody waits.
  private func serve() async {
    while true {
      let waiters = state.withLock { state -> [Waiter] in
        let waiting = state.waiters.values.sorted { $0.order < $1.order }.map(\.waiter)
        if waiting.isEmpty { state.looping = false }
        return waiting
      }
      if waiters.isEmpty { return }
      await round(waiters)
      await queue.waitForJobs(timeout: tick)
    }
  }

  private func round(_ waiters: [Waiter]) async {
    // Filters (queues and kinds) found empty in this round: nobody else asking for the same is
    // tried (in any order of its names: one claim per filter and round, whoever asks).
    var exhausted: Set<[String]> = []
    for waiter in waiters {
      let key = waiter.request.queues.sorted() + ["|"] + waiter.request.kinds.patterns.sorted()
      if exhausted.contains(key) { continue }
      do {
        // Bounded like a request's store calls, so that a store that is down does not hold the
        // loop (the waiters' own deadlines still answer them).
        let leases = try await StoreDeadline.within(Self.roundBound) {
          try await AuditContext.$actor.withValue(waiter.actor) { try await queue.claim(waiter.request) }
        }
        if leases.count < waiter.request.limit { exhausted.insert(key) }
        if leases.isEmpty { continue }
        // Answered: out of the next rounds at once, not when its task gets to run again.
        state.withLock { _ = $0.waiters.removeValue(forKey: ObjectIdentifier(waiter)) }
        if !waiter.resolve(leases) {
          // The waiter gave up meanwhile: the jobs go back, their attempts not counted.
          _ = try? await AuditContext.$actor.withValue(waiter.actor) { try await queue.release(batch: leases) }
        }
      } catch {
        // A store that fails now is tried again on the next wake-up; the waiters' own deadlines hold.
        exhausted.insert(key)
      }
    }
  }
}
