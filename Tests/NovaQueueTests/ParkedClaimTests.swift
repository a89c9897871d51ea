import Foundation
import NovaCore
import NovaQueue
import NovaTestSupport
import Synchronization
import Testing

/// A claim that finds nothing waits at the SQLite writer, and the transaction that makes a job
/// claimable (an enqueue, a release, a retry) hands it over before it commits.
@Suite("Parked claims", .timeLimit(.minutes(5)))
struct ParkedClaimTests {
  private func makeQueue() throws -> SQLiteJobQueue {
    try SQLiteJobQueue(path: TemporaryDirectory.make().appendingPathComponent("q.sqlite").path)
  }

  private func request(_ worker: String = "w", kinds: JobKindFilter = .all, limit: Int = 1) -> ClaimRequest {
    ClaimRequest(kinds: kinds, worker: worker, leaseDuration: .seconds(30), limit: limit, starting: limit)
  }

  private func parked(_ queue: SQLiteJobQueue, _ count: Int) async throws {
    try await eventually("\(count) parked claim(s)", timeout: .seconds(10), poll: .milliseconds(2)) {
      queue.parkedClaimCount == count
    }
  }

  @Test func aWaitingClaimTakesTheJobInTheTransactionThatStoresIt() async throws {
    let queue = try makeQueue()
    let waiting = Task { try await queue.claim(request(), waitingUpTo: .seconds(20)) }
    try await parked(queue, 1)
    let transactions = queue.writeStatistics.transactions
    let id = try await queue.enqueue(JobRequest(kind: "k")).id
    let leases = try await waiting.value
    #expect(leases.map(\.id) == [id])
    // One transaction stored the job and leased it: no second one for the claim.
    #expect(queue.writeStatistics.transactions == transactions + 1)
    #expect(try await queue.get(id)?.state == .running)
    #expect(queue.parkedClaimCount == 0)
    let done = try await queue.complete(batch: [JobCompletion(lease: leases[0], result: nil)])
    #expect(done == [true])
    #expect(try await queue.stats().total(.running) == 0)
  }

  @Test func aWaitingClaimEndsEmptyAtItsTimeout() async throws {
    let queue = try makeQueue()
    let start = ContinuousClock.now
    let leases = try await queue.claim(request(), waitingUpTo: .milliseconds(200))
    #expect(leases.isEmpty)
    #expect(ContinuousClock.now - start >= .milliseconds(190))
    #expect(queue.parkedClaimCount == 0)
    // Nobody is left waiting to take a job that comes later.
    let id = try await queue.enqueue(JobRequest(kind: "k")).id
    #expect(try await queue.get(id)?.state == .available)
  }

  @Test func aCancelledWaitEndsAtOnceAndTakesNothingLater() async throws {
    let queue = try makeQueue()
    let waiting = Task { try await queue.claim(request(), waitingUpTo: .seconds(20)) }
    try await parked(queue, 1)
    let start = ContinuousClock.now
    waiting.cancel()
    #expect(try await waiting.value.isEmpty)
    #expect(ContinuousClock.now - start < .seconds(5))
    #expect(queue.parkedClaimCount == 0)
    let id = try await queue.enqueue(JobRequest(kind: "k")).id
    #expect(try await queue.get(id)?.state == .available)
  }

  @Test func aWaitingClaimTakesOnlyWhatItsFilterAsksFor() async throws {
    let queue = try makeQueue()
    let waiting = Task { try await queue.claim(request(kinds: JobKindFilter(exactly: ["a"])), waitingUpTo: .seconds(20)) }
    try await parked(queue, 1)
    let other = try await queue.enqueue(JobRequest(kind: "b")).id
    // Served and found nothing of its kind: it waits on (this process's commit is not news
    // from another, however many ticks of the wait see it).
    try await Task.sleep(for: .milliseconds(60))
    #expect(queue.parkedClaimCount == 1)
    #expect(try await queue.get(other)?.state == .available)
    let wanted = try await queue.enqueue(JobRequest(kind: "a")).id
    #expect(try await waiting.value.map(\.id) == [wanted])
    #expect(try await queue.get(other)?.state == .available)
  }

  /// Another process's enqueue cannot serve this one's claims: its commit ends their wait, and
  /// they claim again.
  @Test func anotherProcesssCommitEndsTheWait() async throws {
    let path = try TemporaryDirectory.make().appendingPathComponent("q.sqlite").path
    let queue = try SQLiteJobQueue(path: path)
    let other = try SQLiteJobQueue(path: path)
    let waiting = Task { try await queue.claim(request(), waitingUpTo: .seconds(20)) }
    try await parked(queue, 1)
    let start = ContinuousClock.now
    let id = try await other.enqueue(JobRequest(kind: "k")).id
    #expect(try await waiting.value.isEmpty)
    #expect(ContinuousClock.now - start < .seconds(5))
    #expect(try await queue.claim(request()).map(\.id) == [id])
  }

  /// A job that ends (here one cancelled) may free what held a parked claim back (here the
  /// queue's running limit, with a second job waiting): the claim tries again and takes it.
  @Test func aJobThatEndsEndsTheWaitOfAClaimHeldBack() async throws {
    let queue = try makeQueue()
    try await queue.setControls(QueueControls(maxRunning: 1), queue: "default")
    let id = try await queue.enqueue(JobRequest(kind: "k")).id
    #expect(try await queue.claim(request("first")).count == 1)
    let second = try await queue.enqueue(JobRequest(kind: "k")).id
    // The limit's change was news to claims: one that waits ends at it, held back or not.
    #expect(try await queue.claim(request("second"), waitingUpTo: .seconds(20)).isEmpty)
    let waiting = Task { try await queue.claim(request("second"), waitingUpTo: .seconds(20)) }
    try await parked(queue, 1)
    let start = ContinuousClock.now
    _ = try await queue.cancel(id)
    let answer = try await waiting.value
    #expect(ContinuousClock.now - start < .seconds(5))
    #expect(queue.parkedClaimCount == 0)
    // The claim ended: it took the job, or (given up before the news) the next claim does.
    let taken = answer.isEmpty ? try await queue.claim(request("second")) : answer
    #expect(taken.map(\.id) == [second])
  }

  /// Every claim held back is answered when a job ends, each directly: a shared signal reached
  /// only the waits that had begun, and a claim whose wait began after it waited on to its timeout.
  @Test func aJobThatEndsAnswersEveryClaimHeldBack() async throws {
    let queue = try makeQueue()
    try await queue.setControls(QueueControls(maxRunning: 1), queue: "default")
    #expect(try await queue.claim(request("probe"), waitingUpTo: .seconds(20)).isEmpty)
    _ = try await queue.enqueue(batch: [JobRequest(kind: "k"), JobRequest(kind: "k")])
    let running = try await queue.claim(request("first"))
    #expect(running.count == 1)
    let waiting = (0..<2).map { index in Task { try await queue.claim(request("w\(index)"), waitingUpTo: .seconds(20)) } }
    try await parked(queue, 2)
    let start = ContinuousClock.now
    #expect(try await queue.complete(batch: [JobCompletion(lease: running[0], result: nil)]) == [true])
    for task in waiting { #expect(try await task.value.isEmpty) }
    #expect(ContinuousClock.now - start < .seconds(5))
    #expect(queue.parkedClaimCount == 0)
    #expect(try await queue.claim(request("again")).count == 1)
  }

  /// Issue #24: a claim that waits for a job in an empty queue waits on when another job ends
  /// (only a new job can serve it, and the transaction that stores one does). Ended by every
  /// job's end, it cost a claim that found nothing, and a commit, per job.
  @Test func aJobThatEndsLeavesAClaimWaitingForANewJob() async throws {
    let queue = try makeQueue()
    let ids = try await queue.enqueue(batch: [JobRequest(kind: "k"), JobRequest(kind: "k")]).map(\.id)
    let first = try await queue.claim(request("first", limit: 2))
    #expect(first.count == 2)
    let waiting = Task { try await queue.claim(request("second"), waitingUpTo: .seconds(20)) }
    try await parked(queue, 1)
    // One job succeeds, the other is cancelled: neither ends the wait.
    #expect(try await queue.complete(batch: [JobCompletion(lease: first[0], result: nil)]) == [true])
    _ = try await queue.cancel(first[1].id)
    try await Task.sleep(for: .milliseconds(100))
    #expect(queue.parkedClaimCount == 1)
    let next = try await queue.enqueue(JobRequest(kind: "k")).id
    #expect(try await waiting.value.map(\.id) == [next])
    #expect(try await queue.get(ids[0])?.state == .succeeded)
    #expect(try await queue.get(ids[1])?.state == .cancelled)
  }

  @Test func aReleasedJobIsHandedToAWaitingClaim() async throws {
    let queue = try makeQueue()
    let id = try await queue.enqueue(JobRequest(kind: "k")).id
    let first = try await queue.claim(request("first"))
    #expect(first.map(\.id) == [id])
    let waiting = Task { try await queue.claim(request("second"), waitingUpTo: .seconds(20)) }
    try await parked(queue, 1)
    #expect(try await queue.release(batch: first) == 1)
    let second = try await waiting.value
    #expect(second.map(\.id) == [id])
    #expect(second.first?.worker == "second")
    #expect(try await queue.get(id)?.leaseOwner == "second")
  }

  @Test func waitingClaimsAreServedOldestFirstAndEachJobOnce() async throws {
    let queue = try makeQueue()
    var tasks: [Task<[JobLease], any Error>] = []
    for index in 0..<5 {
      tasks.append(Task { try await queue.claim(self.request("w\(index)"), waitingUpTo: .seconds(20)) })
      try await parked(queue, index + 1)
    }
    let ids = try await queue.enqueue(batch: (0..<3).map { _ in JobRequest(kind: "k") }).map(\.id)
    #expect(queue.parkedClaimCount == 2)
    var taken: [String: JobID] = [:]
    for (index, task) in tasks.prefix(3).enumerated() {
      let leases = try await task.value
      #expect(leases.count == 1)
      taken["w\(index)"] = leases.first?.id
    }
    #expect(Set(taken.values) == Set(ids))
    let later = try await queue.enqueue(batch: (0..<2).map { _ in JobRequest(kind: "k") }).map(\.id)
    // The other two were served in that commit, or had stopped waiting when it came (a commit
    // changes the WAL, which a wait takes for another process's news) and claim again.
    var rest: [JobID] = []
    for (index, task) in tasks.suffix(2).enumerated() {
      let leases = try await task.value
      rest += leases.isEmpty ? try await queue.claim(request("again\(index)")).map(\.id) : leases.map(\.id)
    }
    #expect(Set(rest) == Set(later))
    #expect(queue.parkedClaimCount == 0)
  }

  /// Jobs trickling in one at a time while several claimers wait and claim again: every job is
  /// leased exactly once and none is left behind.
  @Test func jobsTricklingInReachWaitingClaimersExactlyOnce() async throws {
    let queue = try makeQueue()
    let jobs = 300
    let taken = TakenIDs()
    try await withThrowingTaskGroup(of: Void.self) { group in
      for worker in 0..<4 {
        group.addTask {
          while taken.ids.withLock({ $0.count }) < jobs {
            let leases = try await queue.claim(self.request("w\(worker)", limit: 2), waitingUpTo: .milliseconds(50))
            taken.ids.withLock { $0.append(contentsOf: leases.map(\.id)) }
          }
        }
      }
      group.addTask {
        for index in 0..<jobs {
          _ = try await queue.enqueue(JobRequest(kind: "k", payload: Data("{\"n\":\(index)}".utf8)))
          if index % 3 == 0 { try await Task.sleep(for: .microseconds(Int.random(in: 0...800))) }
        }
      }
      try await group.waitForAll()
    }
    let ids = taken.ids.withLock { $0 }
    #expect(ids.count == jobs)
    #expect(Set(ids).count == jobs)
    #expect(try await queue.stats().total(.running) == jobs)
    #expect(try await queue.stats().total(.available) == 0)
  }
}

/// Job ids taken by concurrent claimers.
private final class TakenIDs: Sendable {
  let ids = Mutex<[JobID]>([])
}
