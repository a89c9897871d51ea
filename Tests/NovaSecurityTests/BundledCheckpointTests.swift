import Foundation
import NovaCore
import NovaTestSupport
import Testing

@testable import NovaSecurity

/// What `nova evidence verify` says of the stored checkpoints a bundle carries when they were
/// tampered with (issue #13 point 3); the bundles an export writes pass (EvidenceBundleTests).
@Suite("Checkpoints carried in bundles")
struct BundledCheckpointTests {
  @Test func aBadProofAGapOrAnotherLogIsNamed() async throws {
    let fixture = try SecurityFixture()
    for round in 0..<3 {
      try await fixture.runJobs(round + 1)
      try await fixture.audit.checkpoint(signer: fixture.security.signer, origin: fixture.security.origin)
    }
    let stored = try await fixture.audit.checkpoints()
    let size = try await fixture.audit.size()
    let bundle = try Checkpoint.verify(note: stored.last!.note, verifier: fixture.security.signer.verifier)
    func line(_ checkpoint: StoredCheckpoint, proof: [MerkleTree.Hash]? = nil) async throws -> [UInt8] {
      var hashes: [MerkleTree.Hash] = []
      if let proof {
        hashes = proof
      } else if checkpoint.size < size {
        hashes = try await fixture.audit.consistencyProof(oldSize: checkpoint.size, newSize: size).path
      }
      return try CanonicalJSON.encode(
        .object([
          "consistency": .array(hashes.map { .string(Data($0).base64EncodedString()) }), "note": .string(checkpoint.note),
          "size": .int(checkpoint.size),
        ])) + [0x0A]
    }
    func check(_ lines: [[UInt8]]) -> EvidenceBundle.Verification {
      var result = EvidenceBundle.Verification()
      EvidenceBundle.checkStoredCheckpoints(lines.flatMap { $0 }, against: bundle, verifier: fixture.security.signer.verifier, into: &result)
      return result
    }
    let good = check([try await line(stored[0]), try await line(stored[1]), try await line(stored[2])])
    #expect(good.passed && good.checks == ["audit/checkpoints.jsonl: 3 stored checkpoints verify and are consistent with the bundle's tree"])

    var proof = try await fixture.audit.consistencyProof(oldSize: stored[0].size, newSize: size).path
    proof[0][0] ^= 1
    let badProof = check([try await line(stored[0], proof: proof)])
    #expect(
      badProof.problems == [
        "audit/checkpoints.jsonl line 1 (stored checkpoint at size 3 #1): its consistency proof to the bundle's tree of 18 fails (the history was rewritten)"
      ])

    let gap = check([try await line(stored[0]), try await line(stored[2])])
    #expect(
      gap.problems == ["audit/checkpoints.jsonl line 2 (stored checkpoint at size 18 #3) follows checkpoint #1: the ones between were left out"])

    let other = try Checkpoint(origin: "elsewhere", size: 3, rootHash: stored[0].root).signed(by: fixture.security.signer)
    var foreign = stored[0]
    foreign.note = other
    let otherLog = check([try await line(foreign), Array("junk\n".utf8)])
    #expect(
      otherLog.problems.first
        == "audit/checkpoints.jsonl line 1 (stored checkpoint at size 3) is for log 'elsewhere', not '\(fixture.security.origin)'")
    #expect(otherLog.problems.last?.hasPrefix("audit/checkpoints.jsonl line 2 is not") == true)

    let missing = check([])
    #expect(missing.checks.first?.contains("0 stored checkpoints") == true)
    var none = EvidenceBundle.Verification()
    EvidenceBundle.checkStoredCheckpoints(nil, against: bundle, verifier: fixture.security.signer.verifier, into: &none)
    #expect(none.problems == ["audit/checkpoints.jsonl is missing"])
  }
}
