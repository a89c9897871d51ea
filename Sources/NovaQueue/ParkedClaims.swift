import NovaCore
import Synchronization

/// Claims that found nothing and wait at the SQLite writer for a job: the transaction that
/// enqueues one serves them before it commits, so that the job is handed over in the commit
/// that stores it (no wake-up, no second transaction).
///
/// Parking and serving both happen on the writer's thread, in order with every other write:
/// a claim parks in the transaction that found nothing, so no enqueue committed after it can
/// miss it. Whoever takes a claim out of the waiting set answers it, exactly once.
final class ParkedClaims: Sendable {
  /// One waiting claim and its answer.
  final class Claim: Sendable {
    let request: ClaimRequest
    /// The audit actor of the task that parked it.
    let actor: String
    fileprivate let id: Int
    private let answer = OneShotAnswer<Result<[JobLease], any Error>>()

    fileprivate init(request: ClaimRequest, actor: String, id: Int) {
      self.request = request
      self.actor = actor
      self.id = id
    }

    /// Sets the answer unless one was set, and wakes the waiter.
    fileprivate func resolve(_ result: Result<[JobLease], any Error>) { answer.resolve(result) }

    /// Whether it has its answer.
    var isAnswered: Bool { answer.isResolved }

    /// The answer, once there is one.
    func wait() async -> Result<[JobLease], any Error> { await answer.wait() }
  }

  private struct State {
    var nextID = 0
    var waiting: [Int: Claim] = [:]
    /// Being served now (out of `waiting`); true once its waiter gave up.
    var serving: [Int: Bool] = [:]
    /// Waiting claims that found jobs they did not take (held back by a limit, or by what their
    /// host had free): a job that ends may let them take one.
    var heldBack: Set<Int> = []
  }

  private let state = Mutex(State())

  /// A claim to park (not yet waiting).
  func make(_ request: ClaimRequest, actor: String) -> Claim {
    state.withLock { state in
      state.nextID += 1
      return Claim(request: request, actor: actor, id: state.nextID)
    }
  }

  /// Parks `claim` (on the writer, in the transaction that found nothing for it); `heldBack`:
  /// it found jobs waiting that it did not take.
  func park(_ claim: Claim, heldBack: Bool) {
    state.withLock { state in
      state.waiting[claim.id] = claim
      if heldBack { state.heldBack.insert(claim.id) }
    }
  }

  /// How many claims wait.
  var count: Int { state.withLock { $0.waiting.count } }

  /// Answers every waiting claim that was held back with nothing, so that its claimer tries
  /// again now (a job that ended may have freed what held it back). The others wait on for a new
  /// job, which is served to them in the commit that stores it.
  func releaseHeldBack() {
    let released = state.withLock { state -> [Claim] in
      // Claims being served now: should they take nothing, they are answered instead of
      // waiting again (whether they were held back shows only after).
      for id in state.serving.keys { state.serving[id] = true }
      if state.heldBack.isEmpty { return [] }
      let claims = state.heldBack.compactMap { state.waiting.removeValue(forKey: $0) }
      state.heldBack.removeAll(keepingCapacity: true)
      return claims
    }
    for claim in released { claim.resolve(.success([])) }
  }

  /// Takes every waiting claim out to be served (on the writer), oldest first.
  func takeAll() -> [Claim] {
    state.withLock { state in
      if state.waiting.isEmpty { return [] }
      let claims = state.waiting.values.sorted { $0.id < $1.id }
      state.waiting.removeAll(keepingCapacity: true)
      state.heldBack.removeAll(keepingCapacity: true)
      for claim in claims { state.serving[claim.id] = false }
      return claims
    }
  }

  /// Settles a claim that was served and took nothing: it waits again, or, if its waiter gave
  /// up meanwhile, is answered with nothing.
  func servedNothing(_ claim: Claim, heldBack: Bool) {
    let gaveUp = state.withLock { state -> Bool in
      if state.serving[claim.id] == true { return true }
      state.serving.removeValue(forKey: claim.id)
      state.waiting[claim.id] = claim
      if heldBack { state.heldBack.insert(claim.id) }
      return false
    }
    if gaveUp { answer(claim, .success([])) }
  }

  /// How to answer a claim that was served and took jobs (or failed), once the transaction's
  /// outcome is known: what it took if that committed, else the commit's error.
  func servedResumer(_ claim: Claim, _ result: Result<[JobLease], any Error>) -> @Sendable ((any Error)?) -> Void {
    { commitError in self.answer(claim, commitError.map { .failure($0) } ?? result) }
  }

  /// Answers a claim being served, then lets it go (in that order: a waiter giving up meanwhile
  /// finds it either still served or answered).
  private func answer(_ claim: Claim, _ result: Result<[JobLease], any Error>) {
    claim.resolve(result)
    _ = state.withLock { $0.serving.removeValue(forKey: claim.id) }
  }

  /// The waiter stops waiting: a parked claim is answered with nothing at once; one being served
  /// is answered when its transaction ends (with the jobs it took, which the waiter must take).
  /// False when the claim never parked (nor was answered): no answer will come.
  @discardableResult
  func giveUp(_ claim: Claim) -> Bool {
    let (parked, serving) = state.withLock { state -> (Bool, Bool) in
      if state.waiting.removeValue(forKey: claim.id) != nil {
        state.heldBack.remove(claim.id)
        return (true, false)
      }
      if state.serving[claim.id] != nil {
        state.serving[claim.id] = true
        return (false, true)
      }
      return (false, false)
    }
    if parked { claim.resolve(.success([])) }
    return parked || serving || claim.isAnswered
  }
}
