import Foundation
import GRDB
import NovaCore
import NovaDatabase
import NovaQueue
import NovaRedis
import NovaRedisQueue
import NovaSecurity
import NovaTestSupport
import Testing

@Suite("Audit of a Redis queue", .enabled(if: TestServers.redisAvailable, TestServers.redisMissing), .timeLimit(.minutes(5)))
struct RedisAuditTests {
  func redisQueue(clock: any NovaClock, audit: Bool = true) throws -> RedisJobQueue {
    RedisJobQueue(
      configuration: .init(
        client: .init(url: try RedisURL(parsing: RedisTestServer.shared.url)), clock: clock,
        keyPrefix: "audit-\(UUID().uuidString.prefix(8))", audit: audit, serverTime: false))
  }

  /// Drives one job through most transitions; the same calls on either backend.
  func scenario(_ queue: any JobQueue, clock: TestClock) async throws {
    let id: JobID = try await AuditContext.$actor.withValue("token:alice") {
      try await queue.enqueue(JobRequest(kind: "echo", queue: "gpu", maxAttempts: 2))
    }
    let first = try #require(
      try await AuditContext.$actor.withValue("worker:w1") {
        try await queue.claim(queues: ["gpu"], worker: "w1", leaseDuration: .seconds(5), limit: 1).first
      })
    _ = try await queue.fail(first, error: "boom", retryable: true)
    clock.advance(by: 120)
    let second = try #require(try await queue.claim(queues: ["gpu"], worker: "w2", leaseDuration: .seconds(5), limit: 1).first)
    try await queue.release(second)
    let third = try #require(try await queue.claim(queues: ["gpu"], worker: "w2", leaseDuration: .seconds(5), limit: 1).first)
    try await queue.complete(third, result: nil)
    let other: JobID = try await queue.enqueue(JobRequest(kind: "noop", queue: "gpu"))
    _ = try await queue.cancel(other)
    _ = try await queue.retry(other)
    _ = id
  }

  @Test func redisScriptsRecordTheSameTransitionsAsSQLite() async throws {
    let sqlite = try SecurityFixture()
    try await scenario(sqlite.queue, clock: sqlite.clock)
    let expected = try await sqlite.audit.entries(from: 1, through: 100)

    let fixture = try SecurityFixture()
    let redis = try redisQueue(clock: fixture.clock)
    defer { redis.close() }
    try await scenario(redis, clock: fixture.clock)
    #expect(try await redis.pendingTransitionCount() == expected.count)
    #expect(try await fixture.audit.importTransitions(from: redis, limit: 3) == 3)
    #expect(try await fixture.audit.importAllTransitions(from: redis) == expected.count - 3)
    #expect(try await redis.pendingTransitionCount() == 0)
    #expect(try await fixture.audit.importTransitions(from: redis) == 0)
    let imported = try await fixture.audit.entries(from: 1, through: 100)
    #expect(imported.map(\.event) == expected.map(\.event))
    #expect(imported.map(\.actor) == expected.map(\.actor))
    // Same payloads but for the job ids (each backend made its own).
    #expect(imported.map(\.payload) == expected.map(\.payload))
    #expect(imported.map(\.time) == expected.map(\.time))
    let coverage = try await fixture.audit.coverage(of: redis)
    #expect(coverage.ratio == 1 && coverage.jobs == 2 && coverage.unauditedJobs.isEmpty)
    #expect(try await fixture.audit.verify(verifier: fixture.security.signer.verifier).passed)
  }

  @Test func importsLandOnceDespiteConcurrentImportersAndUntrimmedRecords() async throws {
    let fixture = try SecurityFixture()
    let redis = try redisQueue(clock: fixture.clock)
    defer { redis.close() }
    for _ in 0..<20 {
      _ = try await redis.enqueue(batch: (0..<50).map { _ in JobRequest(kind: "noop") })
    }
    let audit = fixture.audit
    let total = try await withThrowingTaskGroup(of: Int.self) { group in
      for _ in 0..<4 { group.addTask { try await audit.importAllTransitions(from: redis) } }
      var sum = 0
      for try await count in group { sum += count }
      return sum
    }
    #expect(total == 1000)
    #expect(try await audit.size() == 1000)
    // Records whose trim was lost (a crash after the commit) are skipped, then trimmed.
    _ = try await redis.enqueue(JobRequest(kind: "noop"))
    let pending = try await redis.pendingTransitions(after: [:], limit: 10)
    #expect(pending.count == 1)
    try await fixture.queue.database.write { db in
      try db.execute(sql: "UPDATE nova_audit_import SET cursor = ? WHERE source = ?", arguments: [pending[0].cursor, pending[0].source])
    }
    #expect(try await audit.importTransitions(from: redis) == 0)
    #expect(try await redis.pendingTransitionCount() == 0)
    #expect(try await audit.size() == 1000)
  }

  @Test func aStateChangedBehindTheScriptsShowsInCoverageAndBadRecordsAreNamed() async throws {
    let fixture = try SecurityFixture()
    let redis = try redisQueue(clock: fixture.clock)
    defer { redis.close() }
    let id: JobID = try await redis.enqueue(JobRequest(kind: "noop"))
    let prefix = "\(redis.configuration.keyPrefix):{default}:"
    _ = try await redis.client.send("ZREM", .string(prefix + "available"), .string(id.rawValue))
    _ = try await redis.client.send("ZADD", .string(prefix + "state:succeeded"), "0", .string(id.rawValue))
    let coverage = try await fixture.audit.coverage(of: redis)
    #expect(coverage.unauditedJobs == [id.rawValue] && coverage.ratio < 1)

    // Issue #13 point 14: a malformed record (anyone with write access to Redis can add one) is
    // quarantined: kept aside in Redis, journaled in the log, and the import goes on past it.
    _ = try await redis.client.send("XADD", .string(prefix + "audit"), "*", "e", "exploded", "j", "x")
    let after: JobID = try await redis.enqueue(JobRequest(kind: "noop"))
    let imported = try await fixture.audit.importAllTransitions(from: redis)
    #expect(imported == 2)
    #expect(try await redis.pendingTransitionCount() == 0)
    let entries = try await fixture.audit.entries(from: 1, through: 100)
    let quarantined = try #require(entries.first { $0.event == "audit.quarantined" })
    #expect(quarantined.payload.contains("unknown event 'exploded'") && quarantined.payload.contains(#""e":"exploded""#))
    #expect(entries.last?.subject == after.rawValue)
    let aside = try await redis.client.send("XRANGE", .string(prefix + "audit:quarantine"), "-", "+")
    #expect(aside.elements?.count == 1)
    #expect(try await fixture.audit.verify(verifier: fixture.security.signer.verifier).passed)
    let quiet = try redisQueue(clock: fixture.clock, audit: false)
    defer { quiet.close() }
    _ = try await quiet.enqueue(JobRequest(kind: "noop"))
    #expect(try await quiet.pendingTransitionCount() == 0)
  }
  /// A script call's records share one stream entry (one XADD per call); entries written one
  /// record each (before batches) still import; a batch that is not one the scripts write is
  /// quarantined whole, named; a detail holding the separator keeps it.
  @Test func batchesOfRecordsOlderEntriesAndBadBatchesAreRead() async throws {
    let fixture = try SecurityFixture()
    let redis = try redisQueue(clock: fixture.clock)
    defer { redis.close() }
    let stream = RESPArgument.string("\(redis.configuration.keyPrefix):{default}:audit")
    _ = try await redis.enqueue(batch: (0..<300).map { _ in JobRequest(kind: "noop") })
    #expect(try await redis.client.send("XLEN", stream).int == 2, "256 records, then 44")
    #expect(try await redis.pendingTransitionCount() == 300)
    let lease = try #require(try await redis.claim(queues: [], worker: "w", leaseDuration: .seconds(5), limit: 1).first)
    _ = try await redis.fail(lease, error: "bad\u{1F}news", retryable: false)
    _ = try await redis.client.send(
      "XADD", stream, "*", "e", "enqueued", "j", "from-an-older-version", "f", "", "t", "available", "a", "0", "k", "noop", "d", "", "ts",
      "1700000000000", "ac", "token:old")
    _ = try await redis.client.send("XADD", stream, "*", "v", "2", "ac", "x", "r", "enqueued\u{1F}j", "r", "another")
    _ = try await redis.client.send("XADD", stream, "*", "v", "3", "r", "x")
    #expect(try await fixture.audit.importAllTransitions(from: redis) == 300 + 2 + 1 + 2)
    #expect(try await redis.pendingTransitionCount() == 0)
    let entries = try await fixture.audit.entries(from: 1, through: 400)
    #expect(entries.filter { $0.event == "job.enqueued" }.count == 301)
    let dead = try #require(entries.first { $0.event == "job.dead" })
    #expect(dead.subject == lease.id.rawValue && dead.payload.contains(#"bad\u001fnews"#))
    let older = try #require(entries.first { $0.subject == "from-an-older-version" })
    #expect(older.actor == "token:old" && older.time == 1_700_000_000_000)
    let quarantined = entries.filter { $0.event == "audit.quarantined" }.map(\.payload)
    #expect(quarantined.count == 2)
    #expect(quarantined.first?.contains("record 1 has 2 of its 8 fields") == true && quarantined.first?.contains(#""r.2":"another""#) == true)
    #expect(quarantined.last?.contains("unknown version '3'") == true)
    #expect(try await fixture.audit.verify(verifier: fixture.security.signer.verifier).passed)
  }
}
