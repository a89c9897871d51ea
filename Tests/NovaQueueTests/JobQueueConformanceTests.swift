import Foundation
import NovaCore
import NovaQueue
import NovaTestSupport
import Testing

/// The backend contract, written once against `JobQueue` and run for every backend.
@Suite("JobQueue conformance", .timeLimit(.minutes(5)))
struct JobQueueConformanceTests {
  let clock = TestClock()
  let leaseTime: Duration = .seconds(30)

  func makeQueue(_ backend: QueueBackend, retry: RetryPolicy = RetryPolicy(baseDelay: 10, maxDelay: 100, jitter: 0))
    throws -> any JobQueue
  {
    try backend.make(clock, retry)
  }

  /// Every job `filter` lists, page after page, newest first; at most `pages` pages (a listing
  /// that never ends stops there, and the test's expectation on what it got fails).
  func listAll(_ queue: any JobQueue, _ filter: JobFilter, pages: Int = 1000) async throws -> [Job] {
    var filter = filter
    var jobs: [Job] = []
    for _ in 0..<pages {
      let page = try await queue.list(filter)
      jobs += page.jobs
      guard let next = page.nextCursor else { break }
      filter.cursor = next
    }
    return jobs
  }

  /// Enqueues each batch a little after the one before (ids follow that order); their ids.
  func enqueueSpaced(_ queue: any JobQueue, _ batches: [[JobRequest]]) async throws -> [JobID] {
    var ids: [JobID] = []
    for batch in batches {
      clock.advance(by: 0.01)
      ids += try await queue.enqueue(batch: batch).map(\.id)
    }
    return ids
  }

  func request(
    _ kind: String = "noop", queue: String = "default", priority: Int = 0, payload: String = "{}",
    maxAttempts: Int = 3, key: String? = nil, delay: TimeInterval? = nil
  ) -> JobRequest {
    JobRequest(
      kind: kind, payload: Data(payload.utf8), queue: queue, priority: priority,
      runAt: delay.map { clock.now().addingTimeInterval($0) }, maxAttempts: maxAttempts, idempotencyKey: key)
  }

  @Test(.enabled(if: TestServers.redisAvailable, TestServers.redisMissing))
  func redisBackendIsInTheConformanceRun() {
    #expect(QueueBackend.all.map(\.name) == ["sqlite", "redis"])
  }

  @Test(arguments: QueueBackend.all)
  func attemptOutputIsKeptInOrderAndGoesWithItsJob(backend: QueueBackend) async throws {
    let queue = try makeQueue(backend)
    let store = try #require(queue.logStore)
    let id: JobID = try await queue.enqueue(request(queue: "gpu"))
    let other: JobID = try await queue.enqueue(request(queue: "gpu"))
    func chunk(_ attempt: Int, _ stream: JobLogStream, _ text: String, job: JobID? = nil) -> JobLogChunk {
      JobLogChunk(job: job ?? id, queue: "gpu", attempt: attempt, stream: stream, data: Data(text.utf8), time: clock.now())
    }
    try await store.appendLogs([chunk(1, .stdout, "one\n"), chunk(1, .stderr, "warn|with|bars\n"), chunk(1, .stdout, "two\n", job: other)])
    // Bytes that are not UTF-8 come back as written.
    try await store.appendLogs([
      chunk(2, .stdout, "retry\n"),
      JobLogChunk(job: id, queue: "gpu", attempt: 2, stream: .stdout, data: Data([0xff, 0x00, 0x7c]), time: clock.now()),
    ])
    let all = try await store.logs(of: id, attempt: nil, after: 0, limit: 100)
    #expect(all.map { String(decoding: $0.data, as: UTF8.self) } == ["one\n", "warn|with|bars\n", "retry\n", "\u{FFFD}\u{0}|"])
    #expect(all.map(\.attempt) == [1, 1, 2, 2])
    #expect(all.map(\.stream) == [.stdout, .stderr, .stdout, .stdout])
    #expect(all.last?.data == Data([0xff, 0x00, 0x7c]))
    #expect(zip(all, all.dropFirst()).allSatisfy { $0.sequence < $1.sequence })
    // One attempt; a page; the rest after a sequence.
    #expect(try await store.logs(of: id, attempt: 2, after: 0, limit: 100).map(\.sequence) == Array(all.suffix(2).map(\.sequence)))
    #expect(try await store.logs(of: id, attempt: 2, after: 0, limit: 1).map(\.sequence) == [all[2].sequence])
    #expect(try await store.logs(of: id, attempt: nil, after: all[1].sequence, limit: 100) == Array(all.suffix(2)))
    #expect(try await store.logs(of: JobID.generate(), attempt: nil, after: 0, limit: 100).isEmpty)

    // Retention follows the jobs': a purged job's output is gone, another's stays.
    let lease = try #require(try await queue.claim(queues: ["gpu"], worker: "w", leaseDuration: leaseTime, limit: 1).first { $0.id == id })
    try await queue.complete(lease, result: nil)
    clock.advance(by: 120)
    #expect(try await queue.purgeFinished(before: clock.now().addingTimeInterval(-60), deadBefore: nil) == 1)
    #expect(try await store.logs(of: id, attempt: nil, after: 0, limit: 100).isEmpty)
    #expect(try await store.logs(of: other, attempt: nil, after: 0, limit: 100).count == 1)
  }

  /// Issue #21 point 5: giving back a started attempt is free three times (a worker restarting
  /// mid-job); after that it counts, and the job goes dead at its last attempt, so a handler
  /// that hangs and is released on every restart cannot run forever.
  @Test(arguments: QueueBackend.all)
  func releasingAStartedAttemptCountsAfterABound(backend: QueueBackend) async throws {
    let queue = try makeQueue(backend)
    let id: JobID = try await queue.enqueue(request(maxAttempts: 2))
    func claimAndRelease() async throws -> Job {
      let leases = try await queue.claim(ClaimRequest(worker: "w", leaseDuration: leaseTime, limit: 1, starting: 1))
      #expect(leases.map(\.id) == [id])
      #expect(try await queue.release(batch: leases) == 1)
      return try #require(try await queue.get(id))
    }
    for _ in 0..<3 {
      let job = try await claimAndRelease()
      #expect(job.state == .available && job.attempts == 0, "\(job)")
    }
    let counted = try await claimAndRelease()
    #expect(counted.state == .available && counted.attempts == 1, "\(counted)")
    #expect(counted.lastError == "released 4 times after it started")
    let dead = try await claimAndRelease()
    #expect(dead.state == .dead && dead.attempts == 2, "\(dead)")
    // Claimed ahead and given back unstarted (a stopping worker's buffer) stays free.
    let other: JobID = try await queue.enqueue(request(maxAttempts: 1))
    for _ in 0..<5 {
      let leases = try await queue.claim(ClaimRequest(worker: "w", leaseDuration: leaseTime, limit: 1, starting: 0))
      #expect(try await queue.release(batch: leases) == 1)
    }
    #expect(try await queue.get(other)?.state == .available)
  }

  @Test(arguments: QueueBackend.all)
  func enqueueThenGetReturnsTheStoredJob(backend: QueueBackend) async throws {
    let queue = try makeQueue(backend)
    let id: JobID = try await queue.enqueue(request("echo", queue: "gpu", priority: 7, payload: #"{"a":1}"#, maxAttempts: 4))
    let job = try #require(try await queue.get(id))
    #expect(job.id == id)
    #expect(job.kind == "echo")
    #expect(job.queue == "gpu")
    #expect(job.priority == 7)
    #expect(job.maxAttempts == 4)
    #expect(job.attempts == 0)
    #expect(job.state == .available)
    #expect(try JSONValue.parse(job.payload) == .object(["a": .int(1)]))
    #expect(try await queue.get(JobID.generate()) == nil)
  }

  @Test(arguments: QueueBackend.all)
  func delayedJobIsScheduledUntilItsRunAt(backend: QueueBackend) async throws {
    let queue = try makeQueue(backend)
    let id: JobID = try await queue.enqueue(request(delay: 60))
    #expect(try await queue.get(id)?.state == .scheduled)
    #expect(try await queue.claim(queues: [], worker: "w", leaseDuration: leaseTime, limit: 10).isEmpty)
    clock.advance(by: 61)
    let leases = try await queue.claim(queues: [], worker: "w", leaseDuration: leaseTime, limit: 10)
    #expect(leases.map(\.id) == [id])
  }

  @Test(arguments: QueueBackend.all)
  func claimsHighestPriorityFirstThenOldest(backend: QueueBackend) async throws {
    let queue = try makeQueue(backend)
    let low: JobID = try await queue.enqueue(request(priority: 1))
    clock.advance(by: 1)
    let high: JobID = try await queue.enqueue(request(priority: 9))
    clock.advance(by: 1)
    let lowLater: JobID = try await queue.enqueue(request(priority: 1))
    let otherQueue: JobID = try await queue.enqueue(request(queue: "other", priority: 5))
    let leases = try await queue.claim(queues: ["default", "other"], worker: "w", leaseDuration: leaseTime, limit: 10)
    #expect(leases.map(\.id) == [high, otherQueue, low, lowLater])
    #expect(leases.allSatisfy { $0.job.state == .running && $0.job.attempts == 1 && $0.worker == "w" })
  }

  @Test(arguments: QueueBackend.all)
  func claimHonoursLimitAndQueueFilter(backend: QueueBackend) async throws {
    let queue = try makeQueue(backend)
    for _ in 0..<5 { _ = try await queue.enqueue(request(queue: "a")) as JobID }
    let inB: JobID = try await queue.enqueue(request(queue: "b"))
    let first = try await queue.claim(queues: ["a"], worker: "w", leaseDuration: leaseTime, limit: 3)
    #expect(first.count == 3)
    #expect(first.allSatisfy { $0.job.queue == "a" })
    let onlyB = try await queue.claim(queues: ["b"], worker: "w", leaseDuration: leaseTime, limit: 10)
    #expect(onlyB.map(\.id) == [inB])
    let rest = try await queue.claim(queues: [], worker: "w", leaseDuration: leaseTime, limit: 10)
    #expect(rest.count == 2)
    #expect(try await queue.claim(queues: [], worker: "w", leaseDuration: leaseTime, limit: 0).isEmpty)
  }

  @Test(arguments: QueueBackend.all)
  func idempotencyKeyReturnsTheFirstJob(backend: QueueBackend) async throws {
    let queue = try makeQueue(backend)
    let first: EnqueueResult = try await queue.enqueue(request(payload: #"{"n":1}"#, key: "order-42"))
    let second: EnqueueResult = try await queue.enqueue(request(payload: #"{"n":1}"#, key: "order-42"))
    #expect(first.existing == false)
    #expect(second.existing == true)
    #expect(second.id == first.id)
    // Issue #14 point 13: the key reused for another payload or kind is a conflict naming the
    // earlier job, and nothing of the batch it came in is written.
    await #expect(throws: NovaError.idempotencyConflict(key: "order-42", existing: first.id)) {
      _ = try await queue.enqueue(request(payload: #"{"other":true}"#, key: "order-42"))
    }
    await #expect(throws: NovaError.idempotencyConflict(key: "order-42", existing: first.id)) {
      _ = try await queue.enqueue(request("echo", payload: #"{"n":1}"#, key: "order-42"))
    }
    await #expect(throws: NovaError.self) {
      _ = try await queue.enqueue(batch: [request(payload: #"{"fresh":1}"#), request(payload: #"{"n":2}"#, key: "order-42")])
    }
    #expect(try await queue.stats().total(.available) == 1)
  }

  /// Issue #24: a single submission reads the job back with its enqueue (SQLite: in the same
  /// transaction), exactly as `get` would, and an idempotency key answers the earlier job.
  @Test(arguments: QueueBackend.all)
  func aJobEnqueuedIsReadBackAsStored(backend: QueueBackend) async throws {
    let queue = try makeQueue(backend)
    let (job, existing) = try await queue.enqueueReadingBack(request(payload: #"{"n":1}"#, key: "read-back", delay: 60))
    #expect(!existing)
    #expect(try await queue.get(job.id) == job)
    #expect(job.state == .scheduled && job.payload == Data(#"{"n":1}"#.utf8) && job.idempotencyKey == "read-back")
    let again = try await queue.enqueueReadingBack(request(payload: #"{"n":1}"#, key: "read-back", delay: 60))
    #expect(again.existing && again.job == job)
    await #expect(throws: NovaError.idempotencyConflict(key: "read-back", existing: job.id)) {
      _ = try await queue.enqueueReadingBack(request(payload: #"{"n":2}"#, key: "read-back"))
    }
    #expect(try await queue.stats().total(.scheduled) == 1)
  }

  /// The job a submission answers with is the one stored, to the last field, for a job that
  /// asks for a host, carries a limited concurrency key and runs at once (SQLite builds it from
  /// the row it wrote instead of reading the row back).
  @Test(arguments: QueueBackend.all)
  func aJobWithRequirementsAndAKeyIsAnsweredAsStored(backend: QueueBackend) async throws {
    let queue = try makeQueue(backend)
    var submitted = request("gpu", priority: 7, payload: #"{"model":"x"}"#, maxAttempts: 5)
    submitted.requirements = JobRequirements(
      resources: JobResources(gpus: 2, gpu_memory_mib: 40_000, cpus: 8, memory_mib: 1024),
      constraints: JobConstraints(gpu_model: "H100*", labels: ["zone": "a"]))
    submitted.concurrencyKey = "tenant-9"
    submitted.keyLimits = KeyLimits(maxRunning: 2, ratePerSecond: 0.5)
    let (job, existing) = try await queue.enqueueReadingBack(submitted)
    #expect(!existing)
    #expect(try await queue.get(job.id) == job)
    #expect(job.state == .available && job.priority == 7 && job.maxAttempts == 5 && job.attempts == 0)
    #expect(job.requirements == submitted.requirements && job.concurrencyKey == "tenant-9")
    #expect(job.keyLimits == KeyLimits(maxRunning: 2, ratePerSecond: 0.5))
  }

  /// Issue #14 point 5: within one millisecond (the test clock stands still) and within a batch,
  /// jobs of equal priority are claimed in the order they were enqueued.
  @Test(arguments: QueueBackend.all)
  func enqueueOrderHoldsWithinAMillisecondAndABatch(backend: QueueBackend) async throws {
    let queue = try makeQueue(backend)
    _ = try await queue.enqueue(batch: (0..<100).map { request(queue: "fifo", payload: #"{"n":\#($0)}"#) })
    for n in 100..<150 { _ = try await queue.enqueue(request(queue: "fifo", payload: #"{"n":\#(n)}"#)) }
    let leases = try await queue.claim(queues: ["fifo"], worker: "w", leaseDuration: leaseTime, limit: 150)
    let order = try leases.map { lease -> Int64 in
      guard case .object(let fields) = try JSONValue.parse(lease.job.payload), case .int(let n)? = fields["n"] else { return -1 }
      return n
    }
    #expect(order == Array(0..<150), "\(order)")
  }

  @Test(arguments: QueueBackend.all)
  func batchEnqueueKeepsRequestOrder(backend: QueueBackend) async throws {
    let queue = try makeQueue(backend)
    let results = try await queue.enqueue(batch: (0..<20).map { request(payload: #"{"n":\#($0)}"#) })
    #expect(results.count == 20)
    for (index, result) in results.enumerated() {
      let job = try #require(try await queue.get(result.id))
      #expect(try JSONValue.parse(job.payload) == .object(["n": .int(Int64(index))]))
    }
    #expect(try await queue.enqueue(batch: []).isEmpty)
  }

  @Test(arguments: QueueBackend.all)
  func concurrentClaimsNeverShareAJob(backend: QueueBackend) async throws {
    let queue = try makeQueue(backend)
    _ = try await queue.enqueue(batch: (0..<200).map { _ in request() })
    let claimed = try await withThrowingTaskGroup(of: [JobID].self) { group in
      for worker in 0..<10 {
        group.addTask {
          var mine: [JobID] = []
          while true {
            let leases = try await queue.claim(queues: [], worker: "w\(worker)", leaseDuration: leaseTime, limit: 7)
            if leases.isEmpty { return mine }
            mine += leases.map(\.id)
          }
        }
      }
      var all: [JobID] = []
      for try await ids in group { all += ids }
      return all
    }
    #expect(claimed.count == 200)
    #expect(Set(claimed).count == 200)
  }

  @Test(arguments: QueueBackend.all)
  func completeRecordsResultOnceAndFencesStaleLeases(backend: QueueBackend) async throws {
    let queue = try makeQueue(backend)
    let id: JobID = try await queue.enqueue(request())
    let lease = try #require(try await queue.claim(queues: [], worker: "w", leaseDuration: leaseTime, limit: 1).first)
    try await queue.complete(lease, result: Data(#"{"ok":true}"#.utf8))
    let job = try #require(try await queue.get(id))
    #expect(job.state == .succeeded)
    #expect(try JSONValue.parse(try #require(job.result)) == .object(["ok": .bool(true)]))
    #expect(job.finishedAt != nil)
    // Repeating the call with the same lease (as after a dropped connection) changes nothing.
    try await queue.complete(lease, result: Data(#"{"ok":false}"#.utf8))
    #expect(try await queue.get(id)?.result == job.result)
    #expect(try await queue.complete(batch: [JobCompletion(lease: lease, result: nil)]) == [true])
  }

  @Test(arguments: QueueBackend.all)
  func expiredLeaseIsReapedAndTheOldHolderIsFencedOut(backend: QueueBackend) async throws {
    let queue = try makeQueue(backend)
    let id: JobID = try await queue.enqueue(request())
    let stale = try #require(try await queue.claim(queues: [], worker: "w1", leaseDuration: .seconds(5), limit: 1).first)
    try await queue.start([stale])
    #expect(try await queue.reapExpiredLeases() == ReapResult())
    clock.advance(by: 6)
    #expect(try await queue.reapExpiredLeases() == ReapResult(requeued: [id]))
    let fresh = try #require(try await queue.claim(queues: [], worker: "w2", leaseDuration: leaseTime, limit: 1).first)
    #expect(fresh.token > stale.token)
    #expect(fresh.job.attempts == 2)
    await #expect(throws: NovaError.leaseLost(id)) { try await queue.complete(stale, result: nil) }
    await #expect(throws: NovaError.leaseLost(id)) { _ = try await queue.fail(stale, error: "x", retryable: true) }
    #expect(try await queue.heartbeat(stale, leaseDuration: leaseTime) == .lost)
    try await queue.complete(fresh, result: nil)
    #expect(try await queue.get(id)?.state == .succeeded)
  }

  @Test(arguments: QueueBackend.all)
  func reapingTheLastAttemptDeadLetters(backend: QueueBackend) async throws {
    let queue = try makeQueue(backend)
    let id: JobID = try await queue.enqueue(request(maxAttempts: 1))
    try await queue.start(try await queue.claim(queues: [], worker: "w", leaseDuration: .seconds(1), limit: 1))
    clock.advance(by: 2)
    #expect(try await queue.reapExpiredLeases() == ReapResult(dead: [id]))
    let job = try #require(try await queue.get(id))
    #expect(job.state == .dead)
    #expect(job.lastError?.contains("lease expired") == true)
  }

  /// Issue #14 point 1: a claim that never started is not an attempt. A worker dies holding one
  /// running job and four claimed ahead, all of `max_attempts: 1`: only the running one is
  /// dead-lettered; the others go back with no attempt counted, and run normally.
  @Test(arguments: QueueBackend.all)
  func aClaimThatNeverStartedIsNotAnAttempt(backend: QueueBackend) async throws {
    let queue = try makeQueue(backend)
    let ids = try await queue.enqueue(batch: (0..<5).map { _ in request(maxAttempts: 1) }).map(\.id)
    let leases = try await queue.claim(queues: [], worker: "doomed", leaseDuration: .seconds(5), limit: 5, starting: 1)
    #expect(leases.count == 5 && leases.map(\.started) == [true, false, false, false, false])
    clock.advance(by: 6)
    let reaped = try await queue.reapExpiredLeases()
    #expect(reaped.dead == [ids[0]] && Set(reaped.requeued) == Set(ids[1...]))
    for id in ids[1...] {
      let job = try #require(try await queue.get(id))
      #expect(job.state == .available && job.attempts == 0, "\(job)")
    }
    let again = try await queue.claim(queues: [], worker: "next", leaseDuration: leaseTime, limit: 5)
    #expect(again.count == 4 && again.allSatisfy { $0.job.attempts == 1 })
    // A start with a stale lease changes nothing.
    try await queue.start(leases)
    _ = try await queue.complete(batch: again.map { JobCompletion(lease: $0, result: nil) })
    let stats = try await queue.stats()
    #expect(stats.total(.succeeded) == 4 && stats.total(.dead) == 1)
  }

  @Test(arguments: QueueBackend.all)
  func failRetriesWithBackoffThenDeadLetters(backend: QueueBackend) async throws {
    let queue = try makeQueue(backend)
    let id: JobID = try await queue.enqueue(request(maxAttempts: 2))
    let first = try #require(try await queue.claim(queues: [], worker: "w", leaseDuration: leaseTime, limit: 1).first)
    let outcome = try await queue.fail(first, error: "boom", retryable: true)
    #expect(outcome == .retryScheduled(clock.now().addingTimeInterval(10)))
    var job = try #require(try await queue.get(id))
    #expect(job.state == .failed)
    #expect(job.lastError == "boom")
    #expect(try await queue.claim(queues: [], worker: "w", leaseDuration: leaseTime, limit: 1).isEmpty)
    clock.advance(by: 10)
    let second = try #require(try await queue.claim(queues: [], worker: "w", leaseDuration: leaseTime, limit: 1).first)
    #expect(second.job.attempts == 2)
    #expect(try await queue.fail(second, error: "boom again", retryable: true) == .dead)
    job = try #require(try await queue.get(id))
    #expect(job.state == .dead)
    #expect(job.lastError == "boom again")
  }

  @Test(arguments: QueueBackend.all)
  func nonRetryableFailureDeadLettersAtOnce(backend: QueueBackend) async throws {
    let queue = try makeQueue(backend)
    let id: JobID = try await queue.enqueue(request(maxAttempts: 5))
    let lease = try #require(try await queue.claim(queues: [], worker: "w", leaseDuration: leaseTime, limit: 1).first)
    #expect(try await queue.fail(lease, error: "bad payload", retryable: false) == .dead)
    #expect(try await queue.get(id)?.state == .dead)
  }

  @Test(arguments: QueueBackend.all)
  func heartbeatExtendsTheLeaseAndReportsCancellation(backend: QueueBackend) async throws {
    let queue = try makeQueue(backend)
    let id: JobID = try await queue.enqueue(request())
    let lease = try #require(try await queue.claim(queues: [], worker: "w", leaseDuration: .seconds(10), limit: 1).first)
    clock.advance(by: 8)
    let outcome = try await queue.heartbeat(lease, leaseDuration: .seconds(10))
    #expect(outcome == .extended(clock.now().addingTimeInterval(10)))
    clock.advance(by: 8)
    #expect(try await queue.reapExpiredLeases() == ReapResult())
    _ = try await queue.cancel(id)
    #expect(try await queue.heartbeat(lease, leaseDuration: .seconds(10)) == .cancelled)
    await #expect(throws: NovaError.leaseLost(id)) { try await queue.complete(lease, result: nil) }
    #expect(try await queue.get(id)?.state == .cancelled)
    #expect(try await queue.heartbeat([], leaseDuration: .seconds(1)).isEmpty)
  }

  @Test(arguments: QueueBackend.all)
  func cancelledWaitingJobNeverRuns(backend: QueueBackend) async throws {
    let queue = try makeQueue(backend)
    let waiting: JobID = try await queue.enqueue(request())
    let delayed: JobID = try await queue.enqueue(request(delay: 30))
    #expect(try await queue.cancel(waiting).state == .cancelled)
    #expect(try await queue.cancel(delayed).state == .cancelled)
    #expect(try await queue.cancel(waiting).state == .cancelled)
    clock.advance(by: 60)
    #expect(try await queue.claim(queues: [], worker: "w", leaseDuration: leaseTime, limit: 10).isEmpty)
    await #expect(throws: NovaError.self) { _ = try await queue.cancel(JobID.generate()) }
  }

  @Test(arguments: QueueBackend.all)
  func finishedJobsCannotBeCancelledAndOnlyFinishedOnesRetried(backend: QueueBackend) async throws {
    let queue = try makeQueue(backend)
    let id: JobID = try await queue.enqueue(request())
    await #expect(throws: NovaError.invalidState(id, .available, "retry")) { _ = try await queue.retry(id) }
    let lease = try #require(try await queue.claim(queues: [], worker: "w", leaseDuration: leaseTime, limit: 1).first)
    try await queue.complete(lease, result: nil)
    await #expect(throws: NovaError.invalidState(id, .succeeded, "cancel")) { _ = try await queue.cancel(id) }
    await #expect(throws: NovaError.invalidState(id, .succeeded, "retry")) { _ = try await queue.retry(id) }
    await #expect(throws: NovaError.jobNotFound(JobID("01000000-0000-7000-8000-000000000000"))) {
      _ = try await queue.retry(JobID("01000000-0000-7000-8000-000000000000"))
    }
  }

  @Test(arguments: QueueBackend.all)
  func retryPutsADeadJobBackWithAttemptsReset(backend: QueueBackend) async throws {
    let queue = try makeQueue(backend)
    let id: JobID = try await queue.enqueue(request(maxAttempts: 1))
    let lease = try #require(try await queue.claim(queues: [], worker: "w", leaseDuration: leaseTime, limit: 1).first)
    #expect(try await queue.fail(lease, error: "x", retryable: true) == .dead)
    let retried = try await queue.retry(id)
    #expect(retried.state == .available)
    #expect(retried.attempts == 0)
    let again = try #require(try await queue.claim(queues: [], worker: "w", leaseDuration: leaseTime, limit: 1).first)
    #expect(again.id == id)
    try await queue.complete(again, result: nil)
    #expect(try await queue.get(id)?.state == .succeeded)
  }

  /// Issue #14 point 6: a claim takes only the kinds asked for (names or `*` patterns), from every
  /// queue asked; jobs of other kinds stay available, their place kept.
  @Test(arguments: QueueBackend.all)
  func claimsTakeOnlyTheKindsAskedFor(backend: QueueBackend) async throws {
    let queue = try makeQueue(backend)
    let small: JobID = try await queue.enqueue(request("train.small"))
    let infer: JobID = try await queue.enqueue(request("infer"))
    let big: JobID = try await queue.enqueue(request("train.big"))
    let other: JobID = try await queue.enqueue(request("trainer"))
    let gpu: JobID = try await queue.enqueue(JobRequest(kind: "train.gpu", queue: "gpu"))
    let training = try await queue.claim(
      ClaimRequest(queues: ["default", "gpu"], kinds: try JobKindFilter(["train.*"]), worker: "w", leaseDuration: leaseTime, limit: 10))
    #expect(Set(training.map(\.id)) == [small, big, gpu])
    let named = try await queue.claim(
      ClaimRequest(kinds: try JobKindFilter(["infer", "nothing"]), worker: "w", leaseDuration: leaseTime, limit: 10))
    #expect(named.map(\.id) == [infer])
    #expect(try await queue.get(other)?.state == .available)
    #expect(try await queue.claim(queues: [], worker: "w", leaseDuration: leaseTime, limit: 10).map(\.id) == [other])
    #expect(throws: NovaError.self) { try JobKindFilter(["train.[ab]"]) }
  }

  /// Issue #14 point 6: stats count available jobs per kind and show those no live worker takes
  /// (announcements lapse, and a stopping worker withdraws its own).
  @Test(arguments: QueueBackend.all)
  func statsShowTheKindsNoLiveWorkerTakes(backend: QueueBackend) async throws {
    let queue = try makeQueue(backend)
    _ = try await queue.enqueue(batch: [request("train.a"), request("train.a"), request("infer"), request("train.b", queue: "gpu")])
    let delayed: JobID = try await queue.enqueue(request("infer", delay: 5))
    var stats = try await queue.stats()
    #expect(stats.availableByKind == ["default": ["train.a": 2, "infer": 1], "gpu": ["train.b": 1]])
    #expect(stats.unclaimable == stats.availableByKind, "with no worker, nothing is taken")
    let soon = clock.now().addingTimeInterval(30)
    try await queue.announce(WorkerPresence(worker: "w1", queues: [], kinds: ["train.*"], expiresAt: soon))
    try await queue.announce(WorkerPresence(worker: "w2", queues: ["gpu"], kinds: ["infer"], expiresAt: soon))
    stats = try await queue.stats()
    #expect(stats.workers.map(\.worker) == ["w1", "w2"])
    #expect(stats.unclaimable == ["default": ["infer": 1]])
    // Counts follow every move in and out of available.
    let leases = try await queue.claim(
      ClaimRequest(kinds: try JobKindFilter(["train.a"]), worker: "w1", leaseDuration: leaseTime, limit: 2))
    try await queue.release(leases[0])
    clock.advance(by: 6)
    _ = try await queue.cancel(delayed)
    stats = try await queue.stats()
    #expect(stats.availableByKind == ["default": ["train.a": 1, "infer": 1], "gpu": ["train.b": 1]])
    // Past their announcement, workers drop out; a withdrawn one at once.
    clock.advance(by: 30)
    try await queue.announce(WorkerPresence(worker: "w3", queues: [], kinds: [], expiresAt: clock.now().addingTimeInterval(30)))
    stats = try await queue.stats()
    #expect(stats.workers.map(\.worker) == ["w3"])
    #expect(stats.unclaimable.isEmpty)
    try await queue.withdraw(worker: "w3")
    #expect(try await queue.stats().workers.isEmpty)
  }

  /// Start marks land just after a handler starts, so a lease that expires before its mark gives
  /// its attempt back, but only `freeReturns` times: a job that kills its worker at once still
  /// reaches dead.
  @Test(arguments: QueueBackend.all)
  func neverStartedLeasesGiveTheirAttemptBackABoundedNumberOfTimes(backend: QueueBackend) async throws {
    let queue = try makeQueue(backend)
    let id: JobID = try await queue.enqueue(request(maxAttempts: 1))
    for round in 1...(SQLiteJobQueue.freeReturns + 1) {
      let leases = try await queue.claim(ClaimRequest(worker: "w", leaseDuration: leaseTime, limit: 1, starting: 0))
      #expect(leases.map(\.id) == [id])
      clock.advance(by: leaseTime.seconds + 1)
      let reaped = try await queue.reapExpiredLeases()
      if round <= SQLiteJobQueue.freeReturns {
        #expect(reaped.requeued == [id] && reaped.dead.isEmpty, "round \(round)")
        #expect(try await queue.get(id)?.attempts == 0)
      } else {
        #expect(reaped.dead == [id], "a job given back \(round - 1) times still gave its attempt back")
      }
    }
    // An operator's retry starts the count again.
    _ = try await queue.retry(id)
    _ = try await queue.claim(ClaimRequest(worker: "w", leaseDuration: leaseTime, limit: 1, starting: 0))
    clock.advance(by: leaseTime.seconds + 1)
    #expect(try await queue.reapExpiredLeases().requeued == [id])
  }

  @Test(arguments: QueueBackend.all)
  func releaseGivesTheJobBackWithoutCountingTheAttempt(backend: QueueBackend) async throws {
    let queue = try makeQueue(backend)
    let id: JobID = try await queue.enqueue(request())
    let lease = try #require(try await queue.claim(queues: [], worker: "w", leaseDuration: leaseTime, limit: 1).first)
    try await queue.release(lease)
    let job = try #require(try await queue.get(id))
    #expect(job.state == .available)
    #expect(job.attempts == 0)
    await #expect(throws: NovaError.leaseLost(id)) { try await queue.release(lease) }
  }

  @Test(arguments: QueueBackend.all)
  func statsCountPerQueueAndState(backend: QueueBackend) async throws {
    let queue = try makeQueue(backend)
    _ = try await queue.enqueue(request(queue: "a")) as JobID
    _ = try await queue.enqueue(request(queue: "a")) as JobID
    _ = try await queue.enqueue(request(queue: "b", delay: 100)) as JobID
    let lease = try #require(try await queue.claim(queues: ["a"], worker: "w", leaseDuration: leaseTime, limit: 1).first)
    try await queue.complete(lease, result: nil)
    let stats = try await queue.stats()
    #expect(stats.count(queue: "a", state: .available) == 1)
    #expect(stats.count(queue: "a", state: .succeeded) == 1)
    #expect(stats.count(queue: "b", state: .scheduled) == 1)
    #expect(stats.total(.running) == 0)
  }

  @Test(arguments: QueueBackend.all)
  func listFiltersAndPagesNewestFirst(backend: QueueBackend) async throws {
    let queue = try makeQueue(backend)
    let ids = try await enqueueSpaced(
      queue, (0..<7).map { [request($0.isMultiple(of: 2) ? "echo" : "noop", queue: $0 < 5 ? "a" : "b")] })
    let seen = try await listAll(queue, JobFilter(queue: "a", limit: 2)).map(\.id)
    #expect(seen == Array(ids[0..<5].reversed()))
    #expect(try await queue.list(JobFilter(kind: "echo")).jobs.count == 4)
    #expect(try await queue.list(JobFilter(state: .running)).jobs.isEmpty)
    await #expect(throws: NovaError.self) { _ = try await queue.list(JobFilter(limit: 0)) }
    await #expect(throws: NovaError.self) { _ = try await queue.list(JobFilter(cursor: "'; DROP TABLE")) }
  }

  /// Issue #24: every state of every queue lists newest first, page after page, whichever
  /// index holds it on SQLite (available jobs of several priorities, running ones, resting ones).
  @Test(arguments: QueueBackend.all)
  func everyStateListsNewestFirstAcrossPriorities(backend: QueueBackend) async throws {
    let queue = try makeQueue(backend)
    _ = try await enqueueSpaced(
      queue,
      (0..<24).map { index in
        [
          request(
            index.isMultiple(of: 3) ? "echo" : "noop", queue: index < 16 ? "a" : "b", priority: [0, 5, 1000, 5][index % 4],
            maxAttempts: 2, delay: index == 7 ? 60 : nil)
        ]
      })
    let leases = try await queue.claim(queues: ["a", "b"], worker: "w", leaseDuration: leaseTime, limit: 12)
    #expect(leases.count == 12)
    for (index, lease) in leases.enumerated() {
      switch index % 4 {
      case 0: try await queue.complete(lease, result: nil)
      case 1: _ = try await queue.fail(lease, error: "again", retryable: true)
      case 2: _ = try await queue.fail(lease, error: "no", retryable: false)
      default: break
      }
    }
    let waiting = try await queue.list(JobFilter(state: .available, limit: 100)).jobs
    _ = try await queue.cancel(try #require(waiting.first).id)
    var all: [Job] = []
    for name in ["a", "b"] { all += try await listAll(queue, JobFilter(queue: name, limit: 1000)) }
    #expect(all.count == 24)
    #expect(Set(all.map(\.state)) == [.available, .running, .succeeded, .failed, .dead, .cancelled, .scheduled])
    for name in ["a", "b"] {
      for state in JobState.allCases {
        let expected = all.filter { $0.queue == name && $0.state == state }.map(\.id).sorted(by: >)
        let listed = try await listAll(queue, JobFilter(state: state, queue: name, limit: 2), pages: expected.count + 2).map(\.id)
        #expect(listed == expected, "\(name) \(state)")
        var filter = JobFilter(state: state, queue: name, kind: "echo")
        filter.limit = 1
        let rare = all.filter { $0.queue == name && $0.state == state && $0.kind == "echo" }.map(\.id).sorted(by: >).first
        #expect(try await queue.list(filter).jobs.first?.id == rare, "\(name) \(state) echo")
      }
      let newest = all.filter { $0.queue == name }.map(\.id).sorted(by: >)
      #expect(try await queue.list(JobFilter(queue: name, limit: 3)).jobs.map(\.id) == Array(newest.prefix(3)))
    }
    for state in JobState.allCases {
      let expected = all.filter { $0.state == state }.map(\.id).sorted(by: >)
      #expect(try await queue.list(JobFilter(state: state, limit: 100)).jobs.map(\.id) == expected, "\(state)")
    }
  }

  /// Available jobs list newest first across 40 priorities, page after page, none twice: on
  /// SQLite each priority's range of the claims' index is read a chunk at a time and merged; on
  /// Redis a script finds each priority's run in the `available` set and the cursor's place in it.
  @Test(arguments: QueueBackend.all)
  func availableJobsListNewestFirstAcrossManyPriorities(backend: QueueBackend) async throws {
    let queue = try makeQueue(backend)
    let ids = try await enqueueSpaced(queue, (0..<4).map { round in (0..<300).map { request(priority: ($0 * 7 + round) % 40) } })
    let listed = try await listAll(queue, JobFilter(state: .available, queue: "default", limit: 45), pages: 40).map(\.id)
    #expect(listed == ids.sorted(by: >))
    #expect(try await queue.stats().count(queue: "default", state: .available) == 1200)
    // Claimed jobs leave the listing at once.
    let leases = try await queue.claim(queues: ["default"], worker: "w", leaseDuration: leaseTime, limit: 100)
    let left = try await queue.list(JobFilter(state: .available, queue: "default", limit: 1000)).jobs.map(\.id)
    #expect(left == Array(Set(ids).subtracting(leases.map(\.id))).sorted(by: >).prefix(1000).map { $0 })
  }

  @Test(arguments: QueueBackend.all)
  func listFiltersByKeyWorkerIdempotencyKeyAndTime(backend: QueueBackend) async throws {
    let queue = try makeQueue(backend)
    let start = clock.now()
    var keyed = request("echo", key: "order-7")
    keyed.concurrencyKey = "tenant-a"
    let first: JobID = try await queue.enqueue(keyed)
    clock.advance(by: 10)
    let middle = clock.now()
    let second: JobID = try await queue.enqueue(request("echo"))
    let lease = try #require(try await queue.claim(queues: ["default"], worker: "w-9", leaseDuration: leaseTime, limit: 1).first)
    var filter = JobFilter()
    filter.concurrencyKey = "tenant-a"
    #expect(try await queue.list(filter).jobs.map(\.id) == [first])
    filter = JobFilter()
    filter.idempotencyKey = "order-7"
    #expect(try await queue.list(filter).jobs.map(\.id) == [first])
    filter = JobFilter()
    filter.worker = "w-9"
    #expect(try await queue.list(filter).jobs.map(\.id) == [lease.id])
    filter = JobFilter()
    filter.createdAfter = middle
    #expect(try await queue.list(filter).jobs.map(\.id) == [second])
    filter = JobFilter()
    filter.createdAfter = start
    filter.createdBefore = middle
    #expect(try await queue.list(filter).jobs.map(\.id) == [first])
  }

  /// A rare match deep in a big store: each page looks at a bounded number of jobs and its
  /// cursor goes on from the deepest one looked at, until the match is found.
  @Test(arguments: QueueBackend.all)
  func aFilterInsideJobsPagesOnToARareMatch(backend: QueueBackend) async throws {
    let queue = try makeQueue(backend)
    let rare: JobID = try await queue.enqueue(request("rare"))
    clock.advance(by: 0.01)
    for _ in 0..<3 { _ = try await queue.enqueue(batch: (0..<1500).map { _ in request("bulk", queue: "other") }) }
    var found: [JobID] = []
    var cursor: String?
    var pages = 0
    repeat {
      let page = try await queue.list(JobFilter(kind: "rare", limit: 10, cursor: cursor))
      found += page.jobs.map(\.id)
      cursor = page.nextCursor
      pages += 1
    } while cursor != nil && pages < 50
    #expect(found == [rare])
    #expect(pages < 50)
    // Two filters inside jobs that nothing matches: pages still end, each looking at a bounded
    // number of jobs (on SQLite the kind's index leads, then the worker is checked).
    var filter = JobFilter(kind: "bulk", limit: 10)
    filter.worker = "nobody"
    var empty = 0
    cursor = nil
    repeat {
      filter.cursor = cursor
      let page = try await queue.list(filter)
      #expect(page.jobs.isEmpty)
      cursor = page.nextCursor
      empty += 1
    } while cursor != nil && empty < 50
    #expect(empty > 1 && empty < 50)
  }

  @Test(arguments: QueueBackend.all)
  func deleteRemovesOnlyFinishedJobs(backend: QueueBackend) async throws {
    let queue = try makeQueue(backend)
    let done: JobID = try await queue.enqueue(request(key: "k1"))
    let waiting: JobID = try await queue.enqueue(request())
    let lease = try #require(try await queue.claim(queues: ["default"], worker: "w", leaseDuration: leaseTime, limit: 1).first)
    #expect(lease.id == done)
    try await queue.complete(lease, result: nil)
    #expect(try await queue.delete([(done, "default"), (waiting, "default")]) == 1)
    #expect(try await queue.get(done) == nil)
    #expect(try await queue.get(waiting) != nil)
    // Its idempotency key is free again.
    let again: JobID = try await queue.enqueue(request(key: "k1"))
    #expect(again != done)
    #expect(try await queue.delete([]) == 0)
  }

  @Test(arguments: QueueBackend.all)
  func purgeDeletesOnlyOldFinishedJobs(backend: QueueBackend) async throws {
    let queue = try makeQueue(backend)
    let done: JobID = try await queue.enqueue(request())
    let waiting: JobID = try await queue.enqueue(request(queue: "other"))
    let lease = try #require(try await queue.claim(queues: ["default"], worker: "w", leaseDuration: leaseTime, limit: 1).first)
    try await queue.complete(lease, result: nil)
    #expect(try await queue.purgeFinished(before: clock.now().addingTimeInterval(-60)) == 0)
    clock.advance(by: 120)
    #expect(try await queue.purgeFinished(before: clock.now().addingTimeInterval(-60)) == 1)
    #expect(try await queue.get(done) == nil)
    #expect(try await queue.get(waiting) != nil)
  }

  /// Issue #14 point 8: dead jobs are purged after their own retention; an old job that finished
  /// recently never stalls the purge of the older-finished jobs behind it (more than a batch of
  /// them); due jobs are promoted in bounded batches.
  @Test(arguments: QueueBackend.all)
  func purgeIsBoundedAndNeverStallsAndDeadJobsHaveTheirOwnRetention(backend: QueueBackend) async throws {
    let queue = try makeQueue(backend)
    // In one queue: 1,100 jobs made first and finished last, then 50 made later and finished first.
    let late = try await queue.enqueue(batch: (0..<1100).map { _ in request(queue: "mixed") }).map(\.id)
    let early = try await queue.enqueue(batch: (0..<50).map { _ in request(queue: "mixed") }).map(\.id)
    let dead: JobID = try await queue.enqueue(request(queue: "doomed", maxAttempts: 1))
    let leases = try await queue.claim(queues: ["mixed"], worker: "w", leaseDuration: .seconds(7200), limit: 1150)
    #expect(leases.count == 1150)
    let earlyIDs = Set(early)
    _ = try await queue.complete(batch: leases.filter { earlyIDs.contains($0.id) }.map { JobCompletion(lease: $0, result: nil) })
    let doomed = try #require(try await queue.claim(queues: ["doomed"], worker: "w", leaseDuration: leaseTime, limit: 1).first)
    #expect(try await queue.fail(doomed, error: "no", retryable: false) == .dead)
    clock.advance(by: 3600)
    _ = try await queue.complete(batch: leases.filter { !earlyIDs.contains($0.id) }.map { JobCompletion(lease: $0, result: nil) })
    clock.advance(by: 60)
    // Finished more than 30 minutes ago: the 50 fast ones only, behind 1,100 older ids.
    let cutoff = clock.now().addingTimeInterval(-1800)
    #expect(try await queue.purgeFinished(before: cutoff, deadBefore: nil) == 50)
    let (gone, kept, keptDead) = (try await queue.get(early[0]), try await queue.get(late[0]), try await queue.get(dead))
    #expect(gone == nil && kept != nil && keptDead != nil)
    #expect(try await queue.purgeFinished(before: cutoff, deadBefore: cutoff) == 1)
    #expect(try await queue.get(dead) == nil)
  }

  @Test(arguments: QueueBackend.all)
  func dueJobsArePromotedInBoundedBatches(backend: QueueBackend) async throws {
    let queue = try makeQueue(backend)
    _ = try await queue.enqueue(batch: (0..<2500).map { _ in request(queue: "burst", delay: 10) })
    clock.advance(by: 11)
    _ = try await queue.claim(queues: ["burst"], worker: "w", leaseDuration: leaseTime, limit: 1)
    let stats = try await queue.stats()
    // SQLite writes an audit entry per promoted job in the same transaction: its batches are smaller.
    let batch = backend.name == "sqlite" ? SQLiteJobQueue.promotionBatch : 1000
    #expect(
      stats.count(queue: "burst", state: .available) == batch - 1 && stats.count(queue: "burst", state: .scheduled) == 2500 - batch,
      "\(stats.counts)")
  }

  @Test(arguments: QueueBackend.all)
  func waitForJobsReturnsWhenAJobArrives(backend: QueueBackend) async throws {
    let queue = try makeQueue(backend)
    let start = ContinuousClock.now
    async let waited: Void = queue.waitForJobs(timeout: .seconds(20))
    try await Task.sleep(for: .milliseconds(50))
    _ = try await queue.enqueue(request()) as JobID
    await waited
    #expect(ContinuousClock.now - start < .seconds(10))
  }
}
