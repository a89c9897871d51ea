import Foundation
import GRDB
import Logging
import NovaCore
import NovaDatabase
import NovaQueue
import NovaSecurity
import NovaTestSupport
import Testing

@Suite("Audit log", .timeLimit(.minutes(5)))
struct AuditLogTests {
  @Test func everyTransitionIsRecordedWithItsActorInTheSameTransaction() async throws {
    let fixture = try SecurityFixture()
    let queue = fixture.queue
    let delayed: EnqueueResult = try await AuditContext.$actor.withValue("token:alice") {
      try await queue.enqueue(JobRequest(kind: "echo", runAt: fixture.clock.now().addingTimeInterval(5)))
    }
    let flaky: EnqueueResult = try await queue.enqueue(JobRequest(kind: "echo", maxAttempts: 2))
    let again: EnqueueResult = try await queue.enqueue(JobRequest(kind: "echo", idempotencyKey: "k"))
    let repeated: EnqueueResult = try await queue.enqueue(JobRequest(kind: "echo", idempotencyKey: "k"))
    #expect(repeated.existing && repeated.id == again.id)
    var leases = try await AuditContext.$actor.withValue("worker:w1") {
      try await queue.claim(queues: [], worker: "w1", leaseDuration: .seconds(5), limit: 10)
    }
    #expect(leases.count == 2)
    let flakyLease = try #require(leases.first { $0.id == flaky.id })
    #expect(try await queue.fail(flakyLease, error: "boom", retryable: true) != .dead)
    try await queue.complete(try #require(leases.first { $0.id == again.id }), result: nil)
    fixture.clock.advance(by: 60)
    leases = try await queue.claim(queues: [], worker: "w2", leaseDuration: .seconds(5), limit: 10)
    #expect(Set(leases.map(\.id)) == [delayed.id, flaky.id])
    // The worker starts the flaky job, so its expired lease counts the attempt.
    try await queue.start(leases.filter { $0.id == flaky.id })
    try await queue.release(try #require(leases.first { $0.id == delayed.id }))
    _ = try await queue.cancel(delayed.id)
    fixture.clock.advance(by: 60)
    #expect(try await queue.reapExpiredLeases() == ReapResult(dead: [flaky.id]))
    _ = try await queue.retry(flaky.id)
    _ = try await queue.retry(delayed.id)

    let entries = try await fixture.audit.entries(from: 1, through: 100)
    let events = entries.map(\.event)
    #expect(
      events == [
        "job.enqueued", "job.enqueued", "job.enqueued", "job.claimed", "job.claimed", "job.failed", "job.completed",
        "job.promoted", "job.promoted", "job.claimed", "job.claimed", "job.released", "job.cancelled", "job.dead",
        "job.retried", "job.retried",
      ])
    #expect(entries.map(\.seq) == Array(1...Int64(entries.count)))
    #expect(entries[0].actor == "token:alice")
    #expect(entries[3].actor == "worker:w1")
    #expect(entries[0].payload == #"{"attempt":0,"from":null,"kind":"echo","queue":"default","to":"scheduled"}"#)
    #expect(entries[5].payload == #"{"attempt":1,"detail":"boom","from":"running","kind":"echo","queue":"default","to":"failed"}"#)
    #expect(entries[13].payload.contains(#""detail":"lease expired""#))
    let coverage = try await fixture.audit.coverage(of: fixture.queue)
    #expect(coverage.ratio == 1 && coverage.unauditedJobs.isEmpty && coverage.jobs == 3 && coverage.auditedTransitions == 16)
  }

  @Test func aFailedOperationLeavesNoEntryAndAChangeWithoutItsEntryLowersCoverage() async throws {
    let fixture = try SecurityFixture()
    let id: JobID = try await fixture.queue.enqueue(JobRequest(kind: "echo"))
    // Retrying an available job is refused: no transition, no entry.
    await #expect(throws: NovaError.self) { _ = try await fixture.queue.retry(id) }
    #expect(try await fixture.audit.size() == 1)
    // A state changed behind Nova's back is a transition without an entry.
    try await fixture.queue.database.pool.write { db in
      try db.execute(sql: "UPDATE nova_jobs SET state = 'succeeded' WHERE id = ?", arguments: [id.rawValue])
    }
    let coverage = try await fixture.audit.coverage(of: fixture.queue)
    #expect(coverage.unauditedJobs == [id.rawValue])
    #expect(coverage.ratio == 0.5)
    // A state Nova does not even know is unexplained too (it was left out of the count before).
    let other: JobID = try await fixture.queue.enqueue(JobRequest(kind: "echo"))
    try await fixture.queue.database.pool.write { db in
      try db.execute(sql: "UPDATE nova_jobs SET state = 'bogus' WHERE id = ?", arguments: [other.rawValue])
    }
    let withUnknown = try await fixture.audit.coverage(of: fixture.queue)
    #expect(Set(withUnknown.unauditedJobs) == [id.rawValue, other.rawValue] && withUnknown.jobs == 2)
    // The transitions counted before are kept; only the entry since is read (and counted).
    #expect(coverage.auditedTransitions == 1 && withUnknown.auditedTransitions == 2)
    // The log refuses changes through SQL while its guards are in place.
    await #expect(throws: DatabaseError.self) {
      try await fixture.queue.database.pool.write { db in try db.execute(sql: "DELETE FROM nova_audit") }
    }
  }

  @Test func checkpointsAreIncrementalSignedNotesThatVerify() async throws {
    let fixture = try SecurityFixture()
    let signer = fixture.security.signer
    try await fixture.runJobs(5)
    let first = try await fixture.audit.checkpoint(signer: signer, origin: fixture.security.origin)
    #expect(first.size == 15)
    #expect(try await fixture.audit.checkpoint(signer: signer, origin: fixture.security.origin).note == first.note)
    try await fixture.runJobs(4)
    try await fixture.audit.append(event: "config.loaded", subject: nil, payload: .object(["x": .int(1)]))
    let second = try await fixture.audit.checkpoint(signer: signer, origin: fixture.security.origin)
    #expect(second.size == 28)
    let parsed = try Checkpoint.verify(note: second.note, verifier: signer.verifier)
    // The incremental root equals one computed from all leaves.
    let leaves = try await fixture.audit.entries(from: 1, through: 28).map(\.leafHash)
    #expect(parsed.rootHash == MerkleTree.root(leaves[...]))
    #expect(try await fixture.audit.checkpoints().map(\.size) == [15, 28])
    let report = try await fixture.audit.verify(verifier: signer.verifier)
    #expect(report.passed && report.entries == 28 && report.checkpointsChecked == 2)
  }

  @Test func verifyNamesTheEntryThatWasChangedDeletedOrReordered() async throws {
    for attack in ["change", "delete", "reorder", "rehash", "truncate"] {
      let fixture = try SecurityFixture()
      try await fixture.runJobs(4)
      try await fixture.audit.checkpoint(signer: fixture.security.signer, origin: fixture.security.origin)
      switch attack {
      case "change": try fixture.tamper("UPDATE nova_audit SET payload = replace(payload, 'echo', 'ecno') WHERE seq = 6")
      case "delete": try fixture.tamper("DELETE FROM nova_audit WHERE seq = 7")
      case "reorder":
        try fixture.tamper(
          "UPDATE nova_audit SET seq = -1 WHERE seq = 5; UPDATE nova_audit SET seq = 5 WHERE seq = 6; UPDATE nova_audit SET seq = 6 WHERE seq = -1")
      case "rehash":
        // Content and stored hash both changed: only the signed checkpoint catches it.
        let entry = try #require(try await fixture.audit.entries(from: 3, through: 3).first)
        var forged = entry
        forged.actor = "someone-else"
        try fixture.tamper(
          "UPDATE nova_audit SET actor = 'someone-else', hash = x'\(forged.leafHash.map { String(format: "%02x", $0) }.joined())' WHERE seq = 3")
      default: try fixture.tamper("DELETE FROM nova_audit WHERE seq > 10")
      }
      let report = try await fixture.audit.verify(verifier: fixture.security.signer.verifier)
      #expect(!report.passed, "\(attack)")
      let first = try #require(report.problems.first, "\(attack)")
      switch attack {
      case "change": #expect(first.seq == 6 && first.message.contains("entry 6"), "\(first)")
      case "delete": #expect(first.seq == 7 && first.message.contains("entry 7 is missing"), "\(first)")
      case "reorder": #expect(first.seq == 5 && first.message.contains("entry 5"), "\(first)")
      case "rehash": #expect(first.message.contains("checkpoint at size 12 (#1) does not match"), "\(first)")
      default: #expect(first.message.contains("covers 12 entries but the log has 10"), "\(first)")
      }
    }
  }

  @Test func verifyRejectsCheckpointsOfAnotherKeyAndChecksOnesKeptElsewhere() async throws {
    let fixture = try SecurityFixture()
    try await fixture.runJobs(3)
    let kept = try await fixture.audit.checkpoint(signer: fixture.security.signer, origin: fixture.security.origin)
    let stranger = NoteSigner.generate(name: fixture.security.signer.name)
    let swapped = try await fixture.audit.verify(verifier: stranger.verifier)
    #expect(!swapped.passed)
    #expect(swapped.problems.first?.message.contains("stored checkpoint at size 9") == true)
    let withKept = try await fixture.audit.verify(verifier: fixture.security.signer.verifier, extraCheckpoints: [kept.note])
    #expect(withKept.passed && withKept.checkpointsChecked == 2)
    let forged = try Checkpoint(origin: "x", size: 9, rootHash: [UInt8](repeating: 1, count: 32)).signed(by: fixture.security.signer)
    let bad = try await fixture.audit.verify(verifier: fixture.security.signer.verifier, extraCheckpoints: [forged, "junk"])
    #expect(bad.problems.map(\.message).contains { $0.contains("given checkpoint at size 9 does not match") })
    #expect(bad.problems.map(\.message).contains { $0.contains("given checkpoint 2") })
  }

  @Test func inclusionAndConsistencyProofsFromStreamedLeavesVerify() async throws {
    let fixture = try SecurityFixture()
    try await fixture.runJobs(7)
    try await fixture.audit.checkpoint(signer: fixture.security.signer, origin: fixture.security.origin)
    let leaves = try await fixture.audit.entries(from: 1, through: 21).map(\.leafHash)
    for seq in Int64(1)...21 {
      let proof = try await fixture.audit.inclusionProof(seq: seq)
      #expect(proof.isValid && proof.treeSize == 21 && proof.checkpoint != nil)
      #expect(proof.path == MerkleTree.inclusionProof(index: Int(seq - 1), leaves: leaves[...]))
    }
    let partial = try await fixture.audit.inclusionProof(seq: 3, treeSize: 5)
    #expect(partial.isValid && partial.root == MerkleTree.root(leaves[0..<5]))
    for (old, new) in [(1, 21), (4, 21), (7, 13), (8, 16), (21, 21)] {
      let proof = try await fixture.audit.consistencyProof(oldSize: Int64(old), newSize: Int64(new))
      #expect(proof.isValid, "\(old) → \(new)")
      #expect(proof.oldRoot == MerkleTree.root(leaves[0..<old]) && proof.newRoot == MerkleTree.root(leaves[0..<new]))
      #expect(proof.path == MerkleTree.consistencyProof(oldSize: old, leaves: leaves[0..<new]))
    }
    await #expect(throws: NovaError.self) { _ = try await fixture.audit.inclusionProof(seq: 22) }
    await #expect(throws: NovaError.self) { _ = try await fixture.audit.inclusionProof(seq: 5, treeSize: 4) }
    await #expect(throws: NovaError.self) { _ = try await fixture.audit.consistencyProof(oldSize: 5, newSize: 4) }
  }

  @Test func timesAreRFC3339InUTCWithMilliseconds() {
    #expect(AuditTime.string(0) == "1970-01-01T00:00:00.000Z")
    #expect(AuditTime.string(1_800_000_000_123) == "2027-01-15T08:00:00.123Z")
    #expect(AuditTime.string(951_782_400_000) == "2000-02-29T00:00:00.000Z")
    #expect(AuditTime.string(-1) == "1969-12-31T23:59:59.999Z")
    var generator = SystemRandomNumberGenerator()
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    for _ in 0..<500 {
      let millis = Int64.random(in: 0...4_102_444_800_000, using: &generator)
      let text = AuditTime.string(millis)
      #expect(formatter.string(from: Date(timeIntervalSince1970: Double(millis) / 1000)) == text)
      #expect(AuditTime.parse(text) == millis)
    }
    #expect(AuditTime.parse("2026-11-01T00:00:00Z") == 1_793_491_200_000)
    #expect(AuditTime.parse("yesterday") == nil)
  }

  @Test func entriesAreCanonicalJSON() throws {
    let entry = AuditEntry(seq: 7, time: 0, actor: "a\"b", event: "e", subject: nil, payload: #"{"x":1}"#)
    let text = String(decoding: entry.canonicalBytes, as: UTF8.self)
    #expect(text == #"{"actor":"a\"b","event":"e","payload":{"x":1},"seq":7,"subject":null,"time":"1970-01-01T00:00:00.000Z"}"#)
    #expect(try CanonicalJSON.string(try JSONValue.parse(Data(text.utf8))) == text)
    // Sequence numbers are written digit by digit, not through `String`: the same text.
    for seq: Int64 in [0, 1, 9, 10, 99, 100, 101, 999_999, 1_000_000, 1_234_567_890_123, .max, -1, .min] {
      let bytes = AuditEntry(seq: seq, time: 0, actor: "a", event: "e", subject: "s", payload: "{}").canonicalBytes
      #expect(String(decoding: bytes, as: UTF8.self).contains(#","seq":\#(seq),"subject""#), "seq \(seq)")
    }
  }

  /// The journal writes job transitions' entries straight into one buffer (no `AuditEntry`
  /// first): what it stores must be what an entry of the same fields hashes, for every sequence
  /// number's digits and for details that need escaping.
  @Test func theJournalStoresTheHashOfTheEntryItsRowsMake() async throws {
    let fixture = try SecurityFixture()
    try await fixture.runJobs(12)
    _ = try await fixture.queue.enqueue(JobRequest(kind: "echo", payload: Data("{}".utf8)))
    let lease = try #require(try await fixture.queue.claim(queues: [], worker: "w1", leaseDuration: .seconds(30), limit: 1).first)
    _ = try await fixture.queue.fail(lease, error: "line \"one\"\n\ttab \u{1} é", retryable: true)
    let rows = try fixture.queue.database.pool.read { db in
      try Row.fetchAll(db, sql: "SELECT seq, time, actor, event, subject, payload, hash FROM nova_audit ORDER BY seq")
    }
    #expect(rows.count >= 38)
    var sawDetail = false
    for row in rows {
      let entry = AuditEntry(seq: row[0], time: row[1], actor: row[2], event: row[3], subject: row[4], payload: row[5])
      #expect(Array(row[6] as Data) == entry.leafHash, "entry \(entry.seq)")
      #expect(try CanonicalJSON.string(try JSONValue.parse(Data(entry.payload.utf8))) == entry.payload)
      if entry.payload.contains(#""detail":"line \"one\"\n\ttab \u0001 é""#) { sawDetail = true }
    }
    #expect(sawDetail)
  }
}

/// The checkpoints anchor the log: chained, append-only, mirrored outside the database, and
/// never signed over a log that does not match them (issue #13, points 2 and 13).
@Suite("Audit anchoring", .timeLimit(.minutes(5)))
struct AuditAnchoringTests {
  /// Three chained checkpoints of a log with 3, 6 and 9 jobs.
  func chainedFixture() async throws -> SecurityFixture {
    let fixture = try SecurityFixture()
    for _ in 0..<3 {
      try await fixture.runJobs(1)
      try await fixture.audit.checkpoint(signer: fixture.security.signer, origin: fixture.security.origin)
    }
    return fixture
  }

  @Test func checkpointsAreChainedAndAppendOnly() async throws {
    let fixture = try await chainedFixture()
    let stored = try await fixture.audit.checkpoints()
    #expect(stored.map(\.sequence) == [1, 2, 3])
    let parsed = try stored.map { try Checkpoint.verify(note: $0.note, verifier: fixture.security.signer.verifier) }
    #expect(parsed[0].previous == Checkpoint.noPredecessor)
    #expect(parsed[1].previous == Checkpoint.noteHash(stored[0].note) && parsed[2].previous == Checkpoint.noteHash(stored[1].note))
    #expect(parsed.map(\.sequence) == [1, 2, 3])
    // The table refuses changes as the entries do.
    #expect(throws: (any Error).self) {
      try fixture.queue.database.pool.write { try $0.execute(sql: "DELETE FROM nova_audit_checkpoints WHERE sequence = 2") }
    }
    #expect(throws: (any Error).self) {
      try fixture.queue.database.pool.write { try $0.execute(sql: "UPDATE nova_audit_checkpoints SET created_at = 0") }
    }
    #expect(try await fixture.audit.verify(verifier: fixture.security.signer.verifier, origin: fixture.security.origin).passed)
  }

  @Test func aRemovedOrReorderedCheckpointIsNamed() async throws {
    let removed = try await chainedFixture()
    try removed.tamper(
      "DROP TRIGGER nova_audit_checkpoints_no_delete; DELETE FROM nova_audit_checkpoints WHERE sequence = 2")
    let gap = try await removed.audit.verify(verifier: removed.security.signer.verifier)
    #expect(!gap.passed)
    #expect(
      gap.problems.map(\.message).contains { $0.contains("checkpoint #2 is missing before stored checkpoint at size 9 (#3)") }, "\(gap.problems)")

    let reordered = try await chainedFixture()
    try reordered.tamper(
      """
      DROP TRIGGER nova_audit_checkpoints_no_update;
      UPDATE nova_audit_checkpoints SET sequence = -1 WHERE sequence = 1;
      UPDATE nova_audit_checkpoints SET sequence = 1 WHERE sequence = 2;
      UPDATE nova_audit_checkpoints SET sequence = 2 WHERE sequence = -1
      """)
    let swapped = try await reordered.audit.verify(verifier: reordered.security.signer.verifier)
    #expect(
      swapped.problems.map(\.message).contains { $0.contains("stored checkpoint at size 3 (#2) is signed as checkpoint #1") }, "\(swapped.problems)")
  }

  @Test func aLogWithEntriesButNoCheckpointIsUnanchored() async throws {
    let fixture = try SecurityFixture()
    #expect(try await fixture.audit.verify(verifier: fixture.security.signer.verifier).unanchored == false)
    try await fixture.runJobs(2)
    let report = try await fixture.audit.verify(verifier: fixture.security.signer.verifier)
    #expect(report.passed && report.unanchored && report.entries == 6)
    try await fixture.audit.checkpoint(signer: fixture.security.signer, origin: fixture.security.origin)
    #expect(try await fixture.audit.verify(verifier: fixture.security.signer.verifier).unanchored == false)
  }

  /// The attack of the issue: change an entry, recompute its stored hash, delete every
  /// checkpoint. The database alone then looks unanchored; the mirror names what was removed,
  /// and the checkpointer refuses to sign the forged history.
  @Test func rewritingEntriesAndDeletingCheckpointsIsCaughtByTheMirror() async throws {
    let fixture = try SecurityFixture()
    let mirror = CheckpointDirectory(path: fixture.directory.appendingPathComponent("mirror").path)
    let checkpointer = AuditCheckpointer(
      security: fixture.security, jobs: fixture.queue, logger: Logger(label: "test"), mirror: mirror, clock: fixture.clock)
    try await fixture.runJobs(3)
    try await checkpointer.tick()
    try await fixture.runJobs(1)
    try await checkpointer.tick()
    let kept = try #require(try await mirror.checkpoints())
    #expect(kept.map(\.name) == [CheckpointDirectory.fileName(size: 9), CheckpointDirectory.fileName(size: 12)])
    let honest = try await fixture.audit.verify(verifier: fixture.security.signer.verifier, mirrored: kept)
    #expect(honest.passed && honest.mirroredChecked == 2 && honest.consistencyProofs == 1, "\(honest.problems)")
    // The log grows after the last mirrored checkpoint: still consistent with it.
    try await fixture.runJobs(1)
    let grown = try await fixture.audit.verify(verifier: fixture.security.signer.verifier, mirrored: kept)
    #expect(grown.passed && grown.consistencyProofs == 1 && grown.entries == 15, "\(grown.problems)")

    let entry = try #require(try await fixture.audit.entries(from: 2, through: 2).first)
    var forged = entry
    forged.actor = "someone-else"
    try fixture.tamper(
      """
      DROP TRIGGER nova_audit_checkpoints_no_delete;
      UPDATE nova_audit SET actor = 'someone-else', hash = x'\(forged.leafHash.map { String(format: "%02x", $0) }.joined())' WHERE seq = 2;
      DELETE FROM nova_audit_checkpoints
      """)
    let alone = try await fixture.audit.verify(verifier: fixture.security.signer.verifier)
    #expect(alone.passed && alone.unanchored)
    let against = try await fixture.audit.verify(verifier: fixture.security.signer.verifier, mirrored: kept)
    #expect(!against.passed)
    let messages = against.problems.map(\.message)
    #expect(messages.contains { $0.contains("mirrored checkpoint \(CheckpointDirectory.fileName(size: 9)) at size 9 is not in the database") })
    #expect(messages.contains { $0.contains("does not match the log") })
    #expect(messages.contains { $0.contains("RFC 6962 consistency proof fails") }, "\(messages)")
    // The server does not sign over it.
    await #expect(throws: NovaError.self) { try await checkpointer.tick() }
    #expect(try await fixture.audit.checkpoints().isEmpty)
  }

  @Test func theCheckpointerDoesNotTrustTheStoredFrontierOrHashes() async throws {
    let frontier = try SecurityFixture()
    try await frontier.runJobs(3)
    try await frontier.audit.checkpoint(signer: frontier.security.signer, origin: frontier.security.origin)
    try await frontier.runJobs(1)
    try frontier.tamper("DROP TRIGGER nova_audit_checkpoints_no_update; UPDATE nova_audit_checkpoints SET frontier = randomblob(length(frontier))")
    await #expect {
      try await frontier.audit.checkpoint(signer: frontier.security.signer, origin: frontier.security.origin)
    } throws: { "\($0)".contains("frontier of checkpoint at size 9 does not give its signed root") }

    let entries = try SecurityFixture()
    try await entries.runJobs(3)
    try await entries.audit.checkpoint(signer: entries.security.signer, origin: entries.security.origin)
    try await entries.runJobs(1)
    try entries.tamper("UPDATE nova_audit SET payload = replace(payload, 'echo', 'ecno') WHERE seq = 11")
    await #expect {
      try await entries.audit.checkpoint(signer: entries.security.signer, origin: entries.security.origin)
    } throws: { "\($0)".contains("audit entry 11 is missing or does not match its stored hash") }
    #expect(try await entries.audit.checkpoints().count == 1)
  }

  @Test func aCheckpointOfAnotherLogIsRefused() async throws {
    let fixture = try SecurityFixture()
    try await fixture.runJobs(1)
    let other = try Checkpoint(origin: "another-log", size: 3, rootHash: try #require(await fixture.audit.recomputedRoot(size: 3)))
      .signed(by: fixture.security.signer)
    let report = try await fixture.audit.verify(
      verifier: fixture.security.signer.verifier, origin: fixture.security.origin, extraCheckpoints: [other])
    #expect(report.problems.map(\.message).contains { $0.contains("is for log 'another-log', not this log") }, "\(report.problems)")
  }
}
