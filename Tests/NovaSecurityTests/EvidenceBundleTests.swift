import Crypto
import Foundation
import NovaCore
import NovaQueue
import NovaSecurity
import NovaTestSupport
import Testing

@Suite("Evidence bundles", .timeLimit(.minutes(5)))
struct EvidenceBundleTests {
  func export(_ fixture: SecurityFixture, _ name: String, since: Int64? = nil, until: Int64? = nil) async throws -> EvidenceBundle.ExportSummary {
    try await EvidenceBundle.export(
      log: fixture.audit, jobs: fixture.queue, signer: fixture.security.signer, origin: fixture.security.origin,
      to: fixture.directory.appendingPathComponent(name).path, since: since, until: until)
  }

  @Test func exportsAreByteIdenticalAndVerify() async throws {
    let fixture = try SecurityFixture()
    try await fixture.runJobs(6)
    try await fixture.audit.checkpoint(signer: fixture.security.signer, origin: fixture.security.origin)
    let first = try await export(fixture, "a.tar.gz")
    let second = try await export(fixture, "b.tar.gz")
    #expect(first.sha256 == second.sha256 && first.bytes == second.bytes)
    #expect(first.entries == 18 && first.firstSeq == 1 && first.lastSeq == 18)
    #expect(first.files == first.files.sorted() && first.files.contains("audit/entries.jsonl") && first.files.contains("manifest.json"))
    let result = try EvidenceBundle.verify(path: first.path, verifier: fixture.security.signer.verifier)
    #expect(result.passed, "\(result.problems)")
    #expect(result.entries == 18 && result.checks.count == 6)
    #expect(result.checks.contains("audit/checkpoints.jsonl: 1 stored checkpoints verify and are consistent with the bundle's tree"))
    // Nothing is left behind beside the bundle.
    let leftovers = try FileManager.default.contentsOfDirectory(atPath: fixture.directory.path).filter { $0.hasPrefix(".") }
    #expect(leftovers.isEmpty)
  }

  @Test func aWindowCarriesTheTreeBeforeIt() async throws {
    let fixture = try SecurityFixture()
    try await fixture.runJobs(3)
    fixture.clock.advance(by: 3600)
    let start = Int64(fixture.clock.now().timeIntervalSince1970 * 1000)
    try await fixture.runJobs(4)
    fixture.clock.advance(by: 3600)
    try await fixture.runJobs(2)
    let windowed = try await export(fixture, "w.tar.gz", since: start, until: start + 1000)
    #expect(windowed.firstSeq == 10 && windowed.lastSeq == 21 && windowed.entries == 12)
    let result = try EvidenceBundle.verify(path: windowed.path, verifier: fixture.security.signer.verifier)
    #expect(result.passed, "\(result.problems)")
    #expect(result.entries == 12)
    let empty = try await export(fixture, "e.tar.gz", since: start + 10_000_000)
    #expect(empty.entries == 0)
    #expect(try EvidenceBundle.verify(path: empty.path, verifier: fixture.security.signer.verifier).passed)
  }

  @Test func verificationSaysWhatFailed() async throws {
    let fixture = try SecurityFixture()
    try await fixture.runJobs(4)
    let bundle = try await export(fixture, "a.tar.gz")
    let stranger = NoteSigner.generate(name: fixture.security.signer.name)
    let wrongKey = try EvidenceBundle.verify(path: bundle.path, verifier: stranger.verifier)
    #expect(wrongKey.problems.contains { $0.hasPrefix("attestation.dsse.json: ") && $0.contains("signed by another key") })
    #expect(wrongKey.problems.contains { $0.hasPrefix("audit/checkpoint.note: ") })

    // A byte changed in the compressed stream is caught whenever it changes what the archive
    // holds: by the file digests, the deflate decoder, or the gzip checksum over the whole
    // archive, end blocks included. (Some changes decode to the same bytes, such as a copy of
    // zeros from another run of zeros in the end blocks: the content, which is what the
    // signatures cover, is then unchanged, and gzip -dc shows it.)
    let original = try Data(contentsOf: URL(fileURLWithPath: bundle.path))
    let damaged = fixture.directory.appendingPathComponent("damaged.tar.gz")
    func decompressed(_ path: String) async throws -> Data? {
      let out = fixture.directory.appendingPathComponent("decompressed").path
      let child = try ChildProcess("/bin/sh", ["-c", "gzip -dc '\(path)' > '\(out)' 2>/dev/null"])
      guard await child.waitForExit(timeout: .seconds(30)) == 0 else { return nil }
      return try Data(contentsOf: URL(fileURLWithPath: out))
    }
    let content = try await decompressed(bundle.path)
    for offset in stride(from: 10, to: original.count, by: max(1, original.count / 40)) + [original.count - 20, original.count - 4] {
      var bytes = original
      bytes[offset] ^= 0x5a
      try bytes.write(to: damaged)
      let caught: Bool
      do {
        caught = !(try EvidenceBundle.verify(path: damaged.path, verifier: fixture.security.signer.verifier).passed)
      } catch {
        caught = true
      }
      if !caught {
        let same = try await decompressed(damaged.path)
        #expect(same != nil && same == content, "a change at byte \(offset) altered the archive and went unnoticed")
      }
    }
    var trailing = original
    trailing.append(contentsOf: [0x1f, 0x8b])
    try trailing.write(to: damaged)
    #expect(throws: NovaError.self) { _ = try EvidenceBundle.verify(path: damaged.path, verifier: fixture.security.signer.verifier) }
    try Data("not gzip".utf8).write(to: damaged)
    #expect(throws: NovaError.self) { _ = try EvidenceBundle.verify(path: damaged.path, verifier: fixture.security.signer.verifier) }
    #expect(throws: NovaError.self) { _ = try EvidenceBundle.verify(path: "/nonexistent", verifier: fixture.security.signer.verifier) }

    // An export refuses a log that does not verify, and writes nothing.
    try fixture.tamper("UPDATE nova_audit SET actor = 'x' WHERE seq = 2")
    await #expect(throws: UnverifiedHistory.self) { _ = try await export(fixture, "refused.tar.gz") }
    #expect(!FileManager.default.fileExists(atPath: fixture.directory.appendingPathComponent("refused.tar.gz").path))
  }

  /// Issue #13 point 3: evidence is never signed over history that its checkpoints (stored or
  /// mirrored) contradict, and the refusal names what failed.
  @Test func exportRefusesHistoryTheCheckpointsContradict() async throws {
    let rehashed = try SecurityFixture()
    try await rehashed.runJobs(4)
    try await rehashed.audit.checkpoint(signer: rehashed.security.signer, origin: rehashed.security.origin)
    var forged = try #require(try await rehashed.audit.entries(from: 3, through: 3).first)
    forged.actor = "someone-else"
    try rehashed.tamper(
      "UPDATE nova_audit SET actor = 'someone-else', hash = x'\(forged.leafHash.map { String(format: "%02x", $0) }.joined())' WHERE seq = 3")
    await #expect {
      _ = try await export(rehashed, "refused.tar.gz")
    } throws: { "\($0)".contains("stored checkpoint at size 12 (#1) does not match the log: an entry after 0 and up to 12 was changed") }
    #expect(!FileManager.default.fileExists(atPath: rehashed.directory.appendingPathComponent("refused.tar.gz").path))

    // With the checkpoints deleted too, the mirror still refuses it.
    let mirror = CheckpointDirectory(path: rehashed.directory.appendingPathComponent("mirror").path)
    try await rehashed.audit.synchronize(mirror: mirror)
    try rehashed.tamper("DROP TRIGGER nova_audit_checkpoints_no_delete; DELETE FROM nova_audit_checkpoints")
    _ = try await export(rehashed, "unanchored.tar.gz")
    let mirrored = try #require(try await mirror.checkpoints())
    await #expect {
      _ = try await EvidenceBundle.export(
        log: rehashed.audit, jobs: rehashed.queue, signer: rehashed.security.signer, origin: rehashed.security.origin,
        to: rehashed.directory.appendingPathComponent("m.tar.gz").path, mirrored: mirrored)
    } throws: { "\($0)".contains("at size 12 is not in the database") }
  }

  /// The bundle carries the stored checkpoints its window touches (from the last one before it),
  /// each with an RFC 6962 consistency proof to the bundle's signed tree, computed in the one
  /// pass over the log; `verify` checks each.
  @Test func bundlesCarryStoredCheckpointsWithConsistencyProofs() async throws {
    let fixture = try SecurityFixture()
    var starts: [Int64] = []
    for round in 0..<7 {
      starts.append(Int64(fixture.clock.now().timeIntervalSince1970 * 1000))
      try await fixture.runJobs(round + 1)
      try await fixture.audit.checkpoint(signer: fixture.security.signer, origin: fixture.security.origin)
      fixture.clock.advance(by: 3600)
    }
    try await fixture.runJobs(2)
    let sizes = try await fixture.audit.checkpoints().map(\.size)
    #expect(sizes == [3, 9, 18, 30, 45, 63, 84])
    for (since, until, expected) in [
      (nil, nil, 7), (starts[2], starts[4] + 1000, 4), (starts[3], nil, 5), (starts[0], starts[0] + 1000, 1), (nil, starts[6] + 1000, 7),
    ] as [(Int64?, Int64?, Int)] {
      let bundle = try await export(fixture, "w.tar.gz", since: since, until: until)
      let result = try EvidenceBundle.verify(path: bundle.path, verifier: fixture.security.signer.verifier)
      #expect(result.passed, "\(String(describing: since))…\(String(describing: until)): \(result.problems)")
      #expect(
        result.checks.contains("audit/checkpoints.jsonl: \(expected) stored checkpoints verify and are consistent with the bundle's tree"),
        "\(String(describing: since))…\(String(describing: until)): \(result.checks)")
    }
  }

  @Test func dsseEnvelopesSignThePreAuthenticationEncoding() throws {
    let signer = NoteSigner.generate(name: "k")
    let envelope = try DSSEEnvelope.sign(payload: Array("{}".utf8), signer: signer)
    #expect(try envelope.verifiedPayload(verifier: signer.verifier) == Array("{}".utf8))
    #expect(DSSEEnvelope.preAuthenticationEncoding(payloadType: "t", payload: Array("ab".utf8)) == Array("DSSEv1 1 t 2 ab".utf8))
    var forged = envelope
    forged.payload = Data("{\"x\":1}".utf8).base64EncodedString()
    #expect { _ = try forged.verifiedPayload(verifier: signer.verifier) } throws: { error in
      (error as? SignatureMismatch)?.message.contains("changed after signing") == true
    }
    let stranger = NoteSigner.generate(name: "k")
    #expect { _ = try envelope.verifiedPayload(verifier: stranger.verifier) } throws: { error in
      (error as? SignatureMismatch)?.message.contains("signed by another key") == true
    }
    forged.payload = "***"
    #expect(throws: NovaError.self) { _ = try forged.verifiedPayload(verifier: signer.verifier) }
  }

  @Test func largeExportsStreamThroughGzipAndTar() async throws {
    let fixture = try SecurityFixture()
    // Enough entries for several compression and tar chunks.
    for _ in 0..<40 {
      _ = try await fixture.queue.enqueue(batch: (0..<250).map { _ in JobRequest(kind: "echo") })
    }
    let bundle = try await export(fixture, "big.tar.gz")
    #expect(bundle.entries == 10_000)
    let result = try EvidenceBundle.verify(path: bundle.path, verifier: fixture.security.signer.verifier)
    #expect(result.passed && result.entries == 10_000, "\(result.problems)")
  }
}
