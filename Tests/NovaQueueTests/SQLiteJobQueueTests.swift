import Foundation
import GRDB
import Logging
import NovaCore
import NovaDatabase
import NovaQueue
import NovaTestSupport
import Testing

@Suite("SQLiteJobQueue", .timeLimit(.minutes(5)))
struct SQLiteJobQueueTests {
  @Test func dataSurvivesReopening() async throws {
    let path = try TemporaryDirectory.make().appendingPathComponent("q.sqlite").path
    var id: JobID
    do {
      let queue = try SQLiteJobQueue(path: path)
      id = try await queue.enqueue(JobRequest(kind: "noop", idempotencyKey: "k"))
    }
    let reopened = try SQLiteJobQueue(configuration: .init(path: path, synchronous: .full))
    #expect(try await reopened.get(id)?.state == .available)
    let again: EnqueueResult = try await reopened.enqueue(JobRequest(kind: "noop", idempotencyKey: "k"))
    #expect(again.id == id && again.existing)
    #expect(try await reopened.sqliteVersion().hasPrefix("3."))
  }

  /// Issue #24: with SQLite's memory statistics on, every allocation of every connection took
  /// one process-wide mutex (5 % of the writer's time). They are off before the first database
  /// of the process opens, and stay off while it writes.
  @Test func sqliteCountsNoMemoryWhileNovaWrites() async throws {
    let queue = try SQLiteJobQueue(path: try TemporaryDirectory.make().appendingPathComponent("q.sqlite").path)
    _ = try await queue.enqueue(batch: (0..<50).map { _ in JobRequest(kind: "noop", payload: Data(repeating: 0x61, count: 512)) })
    #expect(NovaDatabase.memoryStatisticsOff == 0)
    #expect(NovaDatabase.sqliteMemoryCounted == 0)
  }

  /// Issue #24: every claim asks whether a queue holds a job that needs placing; over the
  /// listing index's (queue, state) range that read every available job of the queue, and
  /// `bench queue` fell from 18,800 to 9,600 jobs/s. It must use its own partial index, with a
  /// backlog of plain jobs too.
  @Test func theClaimsPlacingCheckReadsItsOwnIndex() async throws {
    let queue = try SQLiteJobQueue(path: try TemporaryDirectory.make().appendingPathComponent("q.sqlite").path)
    _ = try await queue.enqueue(batch: (0..<500).map { _ in JobRequest(kind: "noop") })
    let plan = try await queue.queryPlan(SQLiteJobQueue.placedWaitingSQL).joined(separator: "\n")
    #expect(plan.contains("nova_jobs_placed") && !plan.contains("nova_jobs_queue_state"), "\(plan)")
    let claimed = try await queue.claim(ClaimRequest(queues: ["default"], worker: "w", leaseDuration: .seconds(30), limit: 10))
    #expect(claimed.count == 10)
  }

  /// Issue #24: the listing index held every job, and moving each job's entry on enqueue, claim
  /// and completion was a third of the writer's SQL per job. It holds the jobs that rest (here
  /// the finished ones) and no others, in a new database and in one made before the change;
  /// the index on when jobs finished (another entry per completion) is gone.
  @Test func theListingIndexHoldsRestingJobsOnly() async throws {
    let path = try TemporaryDirectory.make().appendingPathComponent("q.sqlite").path
    do {
      // A database as v22 left it: the listing index over every job.
      let old = try SQLiteJobQueue(path: path)
      try await old.database.write { db in
        try db.execute(
          sql: """
            DROP INDEX nova_jobs_queue_state;
            CREATE INDEX nova_jobs_queue_state ON nova_jobs(queue, state, id);
            CREATE INDEX nova_jobs_finished ON nova_jobs(state, finished_at) WHERE finished_at IS NOT NULL;
            DELETE FROM grdb_migrations WHERE identifier IN ('v23-listing-at-rest', 'v24-purge-by-listing');
            """)
      }
    }
    let queue = try SQLiteJobQueue(path: path)
    let definition = try await queue.database.read { db in
      try String.fetchOne(db, sql: "SELECT sql FROM sqlite_master WHERE name = 'nova_jobs_queue_state'")
    }
    #expect(definition?.hasSuffix("WHERE \(SQLiteJobQueue.restingStates)") == true, "\(definition ?? "none")")
    // Purges walk the listing index: no index on when jobs finished is left for completions.
    let finishedIndex = try await queue.database.read { db in
      try Int.fetchOne(db, sql: "SELECT count(*) FROM sqlite_master WHERE name = 'nova_jobs_finished'")
    }
    #expect(finishedIndex == 0)
    _ = try await queue.enqueue(batch: (0..<300).map { JobRequest(kind: "noop", priority: $0 % 3) })
    let leases = try await queue.claim(ClaimRequest(queues: ["default"], worker: "w", leaseDuration: .seconds(30), limit: 100))
    _ = try await queue.complete(batch: leases.prefix(40).map { JobCompletion(lease: $0, result: nil) })
    let held = try await queue.database.read { db in
      try Row.fetchAll(
        db, sql: "SELECT state, count(*) FROM nova_jobs INDEXED BY nova_jobs_queue_state WHERE \(SQLiteJobQueue.restingStates) GROUP BY 1"
      )
      .map { "\($0[0] as String)=\($0[1] as Int)" }
    }
    #expect(held == ["succeeded=40"])
    #expect(try await queue.list(JobFilter(state: .running, limit: 1000)).jobs.count == 60)
    #expect(try await queue.list(JobFilter(state: .available, limit: 1000)).jobs.count == 200)
  }

  /// The counters the operations keep (per queue, kind and state) agree with a count over every
  /// job after every kind of change, including from a second handle on the file (another
  /// process's enqueue).
  @Test func jobCountersAgreeWithTheJobsAfterEveryChange() async throws {
    let clock = TestClock(Date(timeIntervalSince1970: 1_800_000_000))
    let path = try TemporaryDirectory.make().appendingPathComponent("q.sqlite").path
    let queue = try SQLiteJobQueue(configuration: .init(path: path, clock: clock))
    let other = try SQLiteJobQueue(configuration: .init(path: path, clock: clock))
    func agree(_ step: String) async throws {
      let (counted, kept) = try await queue.database.read { db in
        (
          try Row.fetchAll(db, sql: "SELECT queue, kind, state, COUNT(*) FROM nova_jobs GROUP BY 1, 2, 3")
            .map { "\($0[0] as String)/\($0[1] as String)/\($0[2] as String)=\($0[3] as Int)" },
          try Row.fetchAll(db, sql: "SELECT queue, kind, state, n FROM nova_job_counts WHERE n != 0 ORDER BY 1, 2, 3")
            .map { "\($0[0] as String)/\($0[1] as String)/\($0[2] as String)=\($0[3] as Int)" }
        )
      }
      #expect(kept == counted, "after \(step)")
      let counts = try await queue.database.read { db in
        try Row.fetchAll(db, sql: "SELECT queue, state, COUNT(*) FROM nova_jobs GROUP BY 1, 2").reduce(into: [String: [JobState: Int]]()) {
          $0[$1[0], default: [:]][JobState(rawValue: $1[1])!] = $1[2]
        }
      }
      let stats = try await queue.stats().counts.mapValues { $0.filter { $0.value > 0 } }.filter { !$0.value.isEmpty }
      #expect(stats == counts, "after \(step)")
    }
    _ = try await queue.enqueue(batch: (0..<20).map { JobRequest(kind: $0 % 2 == 0 ? "a" : "b", queue: $0 % 3 == 0 ? "x" : "y", maxAttempts: 1) })
    _ = try await other.enqueue(JobRequest(kind: "c", queue: "z", runAt: clock.now().addingTimeInterval(60)))
    // The same idempotency key twice is one job.
    for _ in 0..<2 { _ = try await other.enqueue(JobRequest(kind: "d", queue: "z", maxAttempts: 3, idempotencyKey: "once")) }
    try await agree("enqueues")
    let leases = try await queue.claim(queues: ["x", "y"], worker: "w", leaseDuration: .seconds(30), limit: 8)
    _ = try await queue.complete(batch: leases.prefix(4).map { JobCompletion(lease: $0, result: nil) })
    for lease in leases.dropFirst(4).prefix(2) { _ = try await queue.fail(lease, error: "x", retryable: false) }
    try await queue.release(leases[7])
    try await agree("claims, completions, failures, a release")
    _ = try await queue.cancel(leases[7].id)
    _ = try await queue.retry(leases[4].id)
    // A retryable failure waits as failed, then a claim makes it available again.
    let retrying = try #require(try await queue.claim(queues: ["z"], worker: "w", leaseDuration: .seconds(300), limit: 1).first)
    #expect(try await queue.fail(retrying, error: "again", retryable: true, retryIn: .seconds(10)) != .dead)
    try await agree("a cancel, a retry, a retryable failure")
    clock.advance(by: 120)
    _ = try await queue.reapExpiredLeases()
    try await agree("a reap")
    // The claim promotes the scheduled job and the failed one, and takes one of them.
    #expect(try await queue.claim(queues: ["z"], worker: "w", leaseDuration: .seconds(30), limit: 1).count == 1)
    try await agree("promotions")
    #expect(try await queue.delete(leases.prefix(2).map { ($0.id, $0.job.queue) }) == 2)
    try await agree("a delete")
    clock.advance(by: 3600)
    _ = try await queue.purgeFinished(before: clock.now(), deadBefore: clock.now())
    try await agree("a purge")
  }

  /// Issue #24: a database whose counters were kept by triggers (migration v19) loses them, and
  /// its counters are counted again, when it is opened by this version.
  @Test func theCounterTriggersGoAndTheCountersAreCountedAgain() async throws {
    let path = try TemporaryDirectory.make().appendingPathComponent("q.sqlite").path
    do {
      let queue = try SQLiteJobQueue(path: path)
      _ = try await queue.enqueue(batch: (0..<5).map { JobRequest(kind: $0 < 3 ? "a" : "b") })
      // As v21 left it: the triggers, counters that (here) disagree, v22 not applied.
      try await queue.database.write { db in
        try db.execute(
          sql: """
            CREATE TRIGGER nova_job_counts_insert AFTER INSERT ON nova_jobs BEGIN
              UPDATE nova_job_counts SET n = n + 1 WHERE queue = NEW.queue AND kind = NEW.kind AND state = NEW.state;
            END;
            UPDATE nova_job_counts SET n = 99;
            DELETE FROM grdb_migrations WHERE identifier = 'v22-job-counts-kept-by-operations';
            """)
      }
    }
    let reopened = try SQLiteJobQueue(path: path)
    let triggers = try await reopened.database.read { db in
      try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'nova_job_counts%'")
    }
    #expect(triggers.isEmpty)
    #expect(try await reopened.stats().total(.available) == 5)
    #expect(try await reopened.stats().availableByKind["default"] == ["a": 3, "b": 2])
    _ = try await reopened.enqueue(JobRequest(kind: "a"))
    #expect(try await reopened.stats().availableByKind["default"] == ["a": 4, "b": 2])
  }

  @Test func refusesAFileThatIsNotADatabase() throws {
    let path = try TemporaryDirectory.make().appendingPathComponent("junk.sqlite").path
    try Data(repeating: 0x41, count: 4096).write(to: URL(fileURLWithPath: path))
    #expect {
      _ = try SQLiteJobQueue(path: path)
    } throws: { error in
      guard case NovaError.storage(let message) = error else { return false }
      return message.contains("is not a Nova database") && message.contains(path)
    }
  }

  @Test func refusesAnotherApplicationsDatabase() throws {
    let path = try TemporaryDirectory.make().appendingPathComponent("other.sqlite").path
    let other = try DatabaseQueue(path: path)
    try other.write { try $0.execute(sql: "CREATE TABLE invoices (id INTEGER)") }
    try other.close()
    #expect {
      _ = try SQLiteJobQueue(path: path)
    } throws: { error in
      guard case NovaError.storage(let message) = error else { return false }
      return message.contains("invoices")
    }
  }

  @Test func refusesAPathThatCannotBeOpened() throws {
    let file = try TemporaryDirectory.make().appendingPathComponent("plain-file")
    try Data("x".utf8).write(to: file)
    #expect(throws: NovaError.self) {
      _ = try SQLiteJobQueue(path: file.appendingPathComponent("q.sqlite").path)
    }
  }

  @Test func oneFailingOperationDoesNotSpoilItsGroupCommit() async throws {
    let path = try TemporaryDirectory.make().appendingPathComponent("q.sqlite").path
    let queue = try SQLiteJobQueue(path: path)
    let id: JobID = try await queue.enqueue(JobRequest(kind: "noop"))
    let lease = try #require(try await queue.claim(queues: [], worker: "w", leaseDuration: .seconds(30), limit: 1).first)
    try await queue.complete(lease, result: nil)
    let stale = JobLease(job: lease.job, token: 999, worker: "w", expiresAt: lease.expiresAt)
    // Many concurrent operations share transactions; the invalid ones fail alone.
    let outcomes = await withTaskGroup(of: Bool.self) { group in
      for index in 0..<100 {
        group.addTask {
          if index.isMultiple(of: 10) {
            return (try? await queue.complete(stale, result: nil)) != nil
          }
          return (try? await queue.enqueue(JobRequest(kind: "noop")) as JobID) != nil
        }
      }
      var results: [Bool] = []
      for await ok in group { results.append(ok) }
      return results
    }
    #expect(outcomes.filter { $0 }.count == 90)
    #expect(try await queue.stats().total(.available) == 90)
    #expect(try await queue.get(id)?.state == .succeeded)
  }

  /// Issue #24: a claim's kind filter was `kind GLOB ?`, and SQLite prepares a statement again
  /// each time a GLOB pattern is bound: every claim parsed its statements anew (a sixth of the
  /// writer's time at a steady 8,000 jobs a second). Named kinds are compared with `=`; a
  /// pattern with `*` still matches by GLOB.
  @Test func claimsForNamedKindsDoNotPrepareTheirStatementsAgain() async throws {
    let queue = try SQLiteJobQueue(path: TemporaryDirectory.make().appendingPathComponent("q.sqlite").path)
    let request = ClaimRequest(kinds: JobKindFilter(exactly: ["a", "b"]), worker: "w", leaseDuration: .seconds(30), limit: 1)
    _ = try await queue.claim(request)
    let before = try await queue.database.writerStatementsPreparedAgain()
    for _ in 0..<20 {
      _ = try await queue.enqueue(JobRequest(kind: "a"))
      _ = try await queue.enqueue(JobRequest(kind: "c"))
      #expect(try await queue.claim(request).map(\.job.kind) == ["a"])
    }
    let again = try await queue.database.writerStatementsPreparedAgain() - before
    #expect(again == 0, "statements prepared again: \(again)")
    let patterned = ClaimRequest(kinds: try JobKindFilter(["c*"]), worker: "w", leaseDuration: .seconds(30), limit: 50)
    #expect(try await queue.claim(patterned).count == 20)
  }

  /// Issue #24: the writer checkpointed the WAL in the commit that crossed 8,192 pages, and
  /// every operation queued behind it waited (the p99 of enqueue→start at a steady rate). The
  /// checkpoints now run on a connection of their own after commits; the writer's own is a
  /// backstop far above.
  @Test func theWALIsCheckpointedBesideTheWriter() async throws {
    let path = try TemporaryDirectory.make().appendingPathComponent("q.sqlite").path
    let queue = try SQLiteJobQueue(path: path)
    let before = try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int ?? 0
    for _ in 0..<20 { _ = try await queue.enqueue(batch: (0..<100).map { _ in JobRequest(kind: "noop") }) }
    try await eventually("a checkpoint that copied every frame back", timeout: .seconds(10)) {
      let statistics = queue.database.checkpointStatistics
      return statistics.walFrames > 0 && statistics.framesBack == statistics.walFrames
    }
    let statistics = queue.database.checkpointStatistics
    #expect(statistics.failures == 0, "checkpoints failed, the last with SQLite code \(statistics.lastCode)")
    let after = try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int ?? 0
    #expect(after > before, "the jobs' pages are in the database file (\(before) -> \(after) bytes)")
    let backstop = try await queue.database.write(savepoint: false) { db in try Int.fetchOne(db, sql: "PRAGMA wal_autocheckpoint") }
    #expect(backstop == 32_768)
    #expect(try await queue.stats().total(.available) == 2000)
  }
}

@Suite("Queue model", .timeLimit(.minutes(5)))
struct QueueModelTests {
  @Test func retryPolicyGrowsExponentiallyWithBoundedJitter() {
    let policy = RetryPolicy(baseDelay: 1, maxDelay: 60, jitter: 0.5)
    #expect(policy.delay(afterAttempt: 1, random: 0) == 0.5)
    #expect(policy.delay(afterAttempt: 1, random: 0.999) < 1.0)
    #expect(policy.delay(afterAttempt: 3, random: 0) == 2)
    #expect(policy.delay(afterAttempt: 30, random: 0.999) <= 60)
    #expect(RetryPolicy(jitter: 7).jitter == 1)
    for attempt in 1...10 {
      let delay = policy.delay(afterAttempt: attempt)
      #expect(delay >= 0 && delay <= 60)
    }
  }

  @Test func jobIDsAreTimeOrderedUUIDv7() {
    let earlier = JobID.generate(now: Date(timeIntervalSince1970: 1_700_000_000))
    let later = JobID.generate(now: Date(timeIntervalSince1970: 1_700_000_001))
    #expect(earlier < later)
    #expect(earlier.isWellFormed)
    #expect(Array(earlier.rawValue)[14] == "7")
    #expect(!JobID("not-a-uuid").isWellFormed)
    #expect(!JobID("0123456789-123456789-123456789-12345").isWellFormed)
    #expect(Set((0..<1000).map { _ in JobID.generate() }).count == 1000)
  }

  @Test func jobRequestValidationNamesTheField() {
    func field(_ request: JobRequest) -> String? {
      do {
        try request.validate(maxPayloadBytes: 64)
        return nil
      } catch {
        switch error {
        case .invalidInput(let field, _), .malformedInput(let field, _): return field
        case .payloadTooLarge: return "size"
        default: return "other"
        }
      }
    }
    #expect(field(JobRequest(kind: "ok")) == nil)
    #expect(field(JobRequest(kind: "")) == "kind")
    #expect(field(JobRequest(kind: "bad kind")) == "kind")
    #expect(field(JobRequest(kind: "ok", queue: "q/1")) == "queue")
    #expect(field(JobRequest(kind: "ok", priority: -1)) == "priority")
    #expect(field(JobRequest(kind: "ok", priority: 1001)) == "priority")
    #expect(field(JobRequest(kind: "ok", maxAttempts: 0)) == "max_attempts")
    #expect(field(JobRequest(kind: "ok", idempotencyKey: "")) == "idempotency_key")
    #expect(field(JobRequest(kind: "ok", payload: Data("{bad".utf8))) == "payload")
    #expect(field(JobRequest(kind: "ok", payload: Data(repeating: 0x20, count: 65))) == "size")
  }

  @Test func jsonErrorsNameThePosition() throws {
    let message = JSONErrorText.syntaxError(in: Data("{\"a\": 1,\n  oops}".utf8))
    #expect(message?.contains("byte offset") == true)
    #expect(message?.contains("line 2") == true)
    #expect(JSONErrorText.syntaxError(in: Data("{\"a\":".utf8))?.contains("end of input at byte offset 5") == true)
    #expect(JSONErrorText.syntaxError(in: Data("[1]".utf8)) == nil)
    var registry = JobRegistry()
    BuiltinJobs.register(into: &registry)
    #expect(registry.kinds == ["echo", "fail", "noop", "sleep"])
    #expect(throws: NovaError.unknownJobKind("gpu.train")) { try registry.validate(kind: "gpu.train", payload: Data("{}".utf8)) }
    #expect {
      try registry.validate(kind: "sleep", payload: Data(#"{"ms":"x"}"#.utf8))
    } throws: { error in
      "\(error)".contains("field 'ms': expected an integer")
    }
    #expect {
      try registry.validate(kind: "fail", payload: Data("{}".utf8))
    } throws: { error in
      "\(error)".contains("missing required field 'times'")
    }
    #expect(throws: NovaError.self) { try registry.validate(kind: "noop", payload: Data("[1]".utf8)) }
    // Any JSON (echo's parameters) is checked by the fast parser, its errors as before.
    try registry.validate(kind: "echo", payload: Data(#"{"n":1,"s":"x\ny"}"#.utf8))
    try registry.validate(kind: "echo", payload: Data(#"{"π":1.5e3}"#.utf8))
    #expect {
      try registry.validate(kind: "echo", payload: Data("{\"a\": 1,\n  oops}".utf8))
    } throws: { error in
      "\(error)".contains("for kind 'echo'") && "\(error)".contains("line 2")
    }
    #expect(try JobState.parse("DEAD") == .dead)
  }

  @Test func wakeSignalIsRememberedAndCancellable() async {
    let signal = WakeSignal()
    signal.signal()
    await signal.wait()
    let start = ContinuousClock.now
    await signal.wait(timeout: .milliseconds(50))
    #expect(ContinuousClock.now - start >= .milliseconds(40))
    let task = Task { await signal.wait() }
    task.cancel()
    await task.value
  }

}
