import Foundation
import GRDB
import NovaCore
import NovaDatabase
import NovaQueue
import NovaSecurity
import NovaTestSupport
import Testing

/// Single enqueues that wait for the SQLite writer together are stored by one operation at the
/// end of its next transaction, each caller's jobs all or none, one caller's refusal alone.
@Suite("Pending enqueues", .timeLimit(.minutes(5)))
struct PendingEnqueueTests {
  private func makeQueue(journal: Bool = false) throws -> SQLiteJobQueue {
    let path = try TemporaryDirectory.make().appendingPathComponent("q.sqlite").path
    return try SQLiteJobQueue(configuration: .init(path: path, journal: journal ? AuditJournal() : nil))
  }

  /// Holds the writer while `body` runs, until `waiting` enqueues have gathered behind it (or
  /// 10 s passed), so that what `body` starts piles up however slowly its tasks get going.
  private func withWriterBusy<T: Sendable>(
    _ queue: SQLiteJobQueue, waiting: Int, _ body: @escaping @Sendable () async throws -> T
  ) async throws -> T {
    let holding = TestFlag()
    let busy = Task {
      try await queue.database.write(savepoint: false) { _ in
        holding.set()
        let end = Date().addingTimeInterval(10)
        while queue.pendingEnqueueCount < waiting && Date() < end { Thread.sleep(forTimeInterval: 0.002) }
      }
    }
    try await eventually("the writer to be held", poll: .milliseconds(1)) { holding.isSet }
    let result = try await body()
    try await busy.value
    return result
  }

  @Test func singleEnqueuesWaitingTogetherShareOneOperation() async throws {
    let queue = try makeQueue(journal: true)
    let before = queue.writeStatistics
    let ids = try await withWriterBusy(queue, waiting: 50) {
      try await withThrowingTaskGroup(of: JobID.self) { group in
        for index in 0..<50 {
          group.addTask { try await queue.enqueue(JobRequest(kind: "k", payload: Data("{\"n\":\(index)}".utf8))).id }
        }
        return try await group.reduce(into: [JobID]()) { $0.append($1) }
      }
    }
    #expect(Set(ids).count == 50)
    let after = queue.writeStatistics
    // The busy writer's own operation, then one that stored all fifty.
    #expect(after.operations - before.operations <= 2, "\(after.operations - before.operations) operations for 50 enqueues")
    // The writer was held in a transaction meanwhile: its busy time counts it.
    #expect(after.busy > before.busy && after.busy < .seconds(60), "busy \(before.busy) → \(after.busy)")
    #expect(try await queue.stats().total(.available) == 50)
    // Each job has its own audit entry, in the order the jobs were stored.
    let entries = try await queue.database.read { db in
      try String.fetchAll(db, sql: "SELECT subject FROM nova_audit WHERE event = 'job.enqueued' ORDER BY seq")
    }
    #expect(Set(entries) == Set(ids.map(\.rawValue)))
    #expect(entries.count == 50)
  }

  @Test func oneCallersRefusalLeavesTheOthersJobs() async throws {
    let queue = try makeQueue(journal: true)
    var first = JobRequest(kind: "k", payload: Data("{\"a\":1}".utf8))
    first.idempotencyKey = "key-1"
    let existing = try await queue.enqueue(first).id
    var conflicting = first
    conflicting.payload = Data("{\"a\":2}".utf8)
    var batchWithConflict = [JobRequest(kind: "k"), conflicting]
    batchWithConflict[0].queue = "batch"
    let (conflict, batchRequests, repeated) = (conflicting, batchWithConflict, first)
    let outcomes = try await withWriterBusy(queue, waiting: 4) {
      async let plain = outcome { try await queue.enqueue(JobRequest(kind: "k")) }
      async let refused = outcome { try await queue.enqueue(conflict) }
      async let batch = outcome { try await queue.enqueue(batch: batchRequests) }
      async let again = outcome { try await queue.enqueue(repeated) }
      return await (plain, refused, batch, again)
    }
    let plain = try outcomes.0.get()
    #expect(!plain.existing)
    #expect(throws: NovaError.self) { try outcomes.1.get() }
    // A caller's jobs go in all or none: the batch's first job is not stored either.
    #expect(throws: NovaError.self) { try outcomes.2.get() }
    let again = try outcomes.3.get()
    #expect(again.existing && again.id == existing)
    let stats = try await queue.stats()
    #expect(stats.total(.available) == 2)
    #expect(try await queue.list(JobFilter(queue: "batch")).jobs.isEmpty)
    let enqueued = try await queue.database.read { db in
      try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM nova_audit WHERE event = 'job.enqueued'")
    }
    #expect(enqueued == 2)
  }

  @Test func aSingleSubmissionReadsItsJobBackInTheSameTransaction() async throws {
    let queue = try makeQueue()
    let (job, existing) = try await withWriterBusy(queue, waiting: 1) {
      try await queue.enqueueReadingBack(JobRequest(kind: "k", payload: Data("{\"x\":true}".utf8)))
    }
    #expect(!existing)
    #expect(job.state == .available && job.kind == "k")
    #expect(String(decoding: job.payload, as: UTF8.self) == "{\"x\":true}")
    #expect(try await queue.get(job.id) == job)
  }
}

/// What `body` returned or threw.
private func outcome<T: Sendable>(_ body: @Sendable () async throws -> T) async -> Result<T, any Error> {
  do { return .success(try await body()) } catch { return .failure(error) }
}
