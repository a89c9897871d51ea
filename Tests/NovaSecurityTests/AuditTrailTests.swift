import Foundation
import GRDB
import NovaCore
import NovaDatabase
import NovaQueue
import NovaSecurity
import NovaTestSupport
import Testing

@Suite("Audit trails, tiles and incremental verification", .timeLimit(.minutes(5)))
struct AuditTrailTests {
  /// Appends `count` entries, the subject of each `s<n % subjects>`.
  func fill(_ fixture: SecurityFixture, count: Int, subjects: Int = 7) async throws {
    for index in 0..<count {
      try await fixture.audit.append(event: "test.event", subject: "s\(index % subjects)", payload: .object(["n": .int(Int64(index))]))
    }
  }

  /// Proofs built from tiles agree with the log's own (leaf-by-leaf) proofs, at sizes around the
  /// tile width and with tiles stored for only part of the log.
  @Test(arguments: [1, 2, 255, 256, 257, 511, 513, 1000, 2049])
  func tileProofsVerifyEveryEntryAtEverySize(size: Int) async throws {
    let fixture = try SecurityFixture()
    try await fill(fixture, count: size)
    if size > 600 { try await fixture.audit.updateTiles(through: 512) }  // the rest is added on demand
    _ = try await fixture.audit.checkpoint(signer: fixture.security.signer, origin: fixture.security.origin)
    for subject in 0..<min(size, 7) {
      let trail = try await fixture.audit.trail(
        subject: "s\(subject)", verifier: fixture.security.signer.verifier, origin: fixture.security.origin)
      #expect(trail.checkpointValid)
      #expect(trail.problem == nil)
      #expect(!trail.items.isEmpty)
      #expect(trail.items.allSatisfy { $0.status == .verified }, "size \(size), subject s\(subject)")
    }
    // The tiles are those of the leaf hashes: a proof from them equals the log's own proof.
    let seq = Int64(size / 2 + 1)
    let own = try await fixture.audit.inclusionProof(seq: seq)
    #expect(own.isValid)
  }

  /// Issue #24: tiles are hashed on a reader and stored by the writer; updates racing each
  /// other (another process's checkpointer) store each tile once, in order, and the proofs hold.
  @Test func racingTileUpdatesStoreEachTileOnce() async throws {
    let fixture = try SecurityFixture()
    try await fill(fixture, count: 1300)
    let other = try AuditLog(database: fixture.queue.database)
    try await withThrowingTaskGroup(of: Void.self) { group in
      for (log, size) in [(fixture.audit, 1300), (other, 700), (fixture.audit, 1030), (other, 1300)] {
        group.addTask { try await log.updateTiles(through: Int64(size)) }
      }
      try await group.waitForAll()
    }
    let tiles = try await fixture.queue.database.read { db in try Int.fetchAll(db, sql: "SELECT idx FROM nova_audit_tiles ORDER BY idx") }
    #expect(tiles == [0, 1, 2, 3, 4])
    _ = try await fixture.audit.checkpoint(signer: fixture.security.signer, origin: fixture.security.origin)
    let trail = try await fixture.audit.trail(subject: "s3", verifier: fixture.security.signer.verifier, origin: fixture.security.origin)
    #expect(trail.checkpointValid && trail.problem == nil && trail.items.allSatisfy { $0.status == .verified })
  }

  @Test func entriesAfterTheCheckpointWaitAndAChangedEntryFails() async throws {
    let fixture = try SecurityFixture()
    try await fill(fixture, count: 600, subjects: 3)
    _ = try await fixture.audit.checkpoint(signer: fixture.security.signer, origin: fixture.security.origin)
    try await fill(fixture, count: 5, subjects: 3)
    let verifier = fixture.security.signer.verifier
    var trail = try await fixture.audit.trail(subject: "s1", verifier: verifier, origin: fixture.security.origin)
    #expect(trail.items.filter { $0.status == .pending }.count == 2)
    #expect(trail.items.filter { $0.status == .verified }.count == 200)
    // One entry's content changed (its stored hash too): its proof fails, the others hold.
    try fixture.tamper("UPDATE nova_audit SET payload = '{\"n\":-1}' WHERE seq = 5")
    trail = try await fixture.audit.trail(subject: "s1", verifier: verifier, origin: fixture.security.origin)
    #expect(trail.items.first { $0.entry.seq == 5 }?.status == .failed)
    #expect(trail.items.filter { $0.status == .failed }.count == 1)
    #expect(trail.problem != nil)
    // A checkpoint signed by another key does not verify.
    let stranger = NoteSigner.generate(name: "someone-else")
    trail = try await fixture.audit.trail(subject: "s2", verifier: stranger.verifier, origin: fixture.security.origin)
    #expect(!trail.checkpointValid)
    #expect(trail.items.allSatisfy { $0.status != .verified })
    // Without any checkpoint, everything waits.
    let fresh = try SecurityFixture()
    try await fill(fresh, count: 3)
    let unsigned = try await fresh.audit.trail(subject: "s0", verifier: fresh.security.signer.verifier, origin: fresh.security.origin)
    #expect(unsigned.checkpointSize == nil && unsigned.items.allSatisfy { $0.status == .pending })
    // Only the first entries are checked past the limit.
    let limited = try await fixture.audit.trail(subject: "s0", verifier: verifier, origin: fixture.security.origin, limit: 10)
    #expect(limited.truncated && limited.items.count == 10)
  }

  @Test func theCheckpointIsVerifiedIncrementally() async throws {
    let fixture = try SecurityFixture()
    let checker = CheckpointVerifier(log: fixture.audit, verifier: fixture.security.signer.verifier, origin: fixture.security.origin)
    var status = try await checker.status()
    #expect(status.checkpointSize == nil && !status.valid)
    try await fill(fixture, count: 50)
    _ = try await fixture.audit.checkpoint(signer: fixture.security.signer, origin: fixture.security.origin)
    status = try await checker.status()
    #expect(status.valid && status.checkpointSize == 50 && status.entries == 50)
    // Grown and signed again: only the new entries are hashed, and they must give the new root.
    try await fill(fixture, count: 30)
    _ = try await fixture.audit.checkpoint(signer: fixture.security.signer, origin: fixture.security.origin)
    status = try await checker.status()
    #expect(status.valid && status.checkpointSize == 80)
    // An entry after the verified checkpoint changed before the next signing is signed as it is;
    // one changed below it is found by the full pass (forced here; it runs every ten minutes).
    try fixture.tamper("UPDATE nova_audit SET payload = '{\"n\":-1}' WHERE seq = 7")
    status = try await checker.status()
    #expect(status.valid)
    await checker.forgetVerified()
    status = try await checker.status()
    #expect(!status.valid)
    #expect(status.problem?.contains("do not give the signed root") == true)
    // A checkpoint signed with another key does not verify.
    let other = CheckpointVerifier(log: fixture.audit, verifier: NoteSigner.generate(name: "x").verifier, origin: fixture.security.origin)
    #expect(try await other.status().valid == false)
  }

  @Test func jobEventsAreCountedPerMinuteFromNewEntriesOnly() async throws {
    let fixture = try SecurityFixture()
    let now: Int64 = 1_800_000_000_000
    let tally = JobEventTally(log: fixture.audit)
    func add(_ event: String, minutesAgo: Int64) async throws {
      try await fixture.audit.append(
        event: event, subject: "j", payload: .object([:]), time: Date(millisecondsSince1970: now - minutesAgo * 60_000))
    }
    try await add("job.completed", minutesAgo: 90)
    try await add("job.completed", minutesAgo: 30)
    try await add("job.dead", minutesAgo: 30)
    try await add("job.enqueued", minutesAgo: 0)
    var counts = try await tally.perMinute(now: now)
    #expect(counts.completed.count == 60 && counts.failed.count == 60)
    #expect(counts.completed.reduce(0, +) == 1 && counts.failed.reduce(0, +) == 1)
    #expect(counts.completed[29] == 1)
    try await add("job.failed", minutesAgo: 0)
    try await add("job.completed", minutesAgo: 0)
    counts = try await tally.perMinute(now: now)
    #expect(counts.completed.last == 1 && counts.failed.last == 1)
    counts = try await tally.perMinute(now: now + 3_600_000)
    #expect(counts.completed.reduce(0, +) == 0)
  }

  @Test func decisionsAreTalliedFromNewEntriesOnly() async throws {
    let fixture = try SecurityFixture()
    let now = Date().millisecondsSince1970
    let tally = DecisionTally(log: fixture.audit)
    #expect(try await tally.counts(now: now).isEmpty)
    for (index, allowed) in [true, true, false].enumerated() {
      try await fixture.audit.append(
        event: "policy.decided", subject: "job", payload: .object(["source": .string("rules"), "allowed": .bool(allowed), "n": .int(Int64(index))]),
        time: Date(millisecondsSince1970: now - 1000))
    }
    try await fixture.audit.append(event: "test.event", subject: nil, payload: .object([:]))
    var counts = try await tally.counts(now: now)
    #expect(counts[AuditActivity.DecisionKey(source: "rules", allowed: true)] == 2)
    #expect(counts[AuditActivity.DecisionKey(source: "rules", allowed: false)] == 1)
    try await fixture.audit.append(
      event: "policy.decided", subject: "job", payload: .object(["source": .string("opa"), "allowed": .bool(true)]),
      time: Date(millisecondsSince1970: now))
    counts = try await tally.counts(now: now)
    #expect(counts[AuditActivity.DecisionKey(source: "opa", allowed: true)] == 1)
    #expect(counts.values.reduce(0, +) == 4)
    // A day later the old minutes have left the window.
    counts = try await tally.counts(now: now + 86_400_000 + 120_000)
    #expect(counts.isEmpty)
  }
}
