import Crypto
import Foundation
import NovaSecurity
import NovaTestSupport
import Testing

@Suite("RFC 6962 Merkle tree", .timeLimit(.minutes(5)))
struct MerkleTreeTests {
  func hex(_ hash: [UInt8]) -> String { hash.map { String(format: "%02x", $0) }.joined() }
  func leaves(_ n: Int) -> [[UInt8]] { (0..<n).map { MerkleTree.leafHash(Array("entry \($0)".utf8)) } }

  @Test func knownValues() {
    #expect(hex(MerkleTree.emptyRoot) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    #expect(hex(MerkleTree.leafHash([UInt8]())) == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
    // RFC 6962's test tree (the leaves of certificate-transparency-go's test vectors).
    let inputs: [[UInt8]] = [
      [], [0x00], [0x10], [0x20, 0x21], [0x30, 0x31], [0x40, 0x41, 0x42, 0x43],
      [0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57],
      [0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f],
    ]
    let hashes = inputs.map { MerkleTree.leafHash($0) }
    #expect(hex(MerkleTree.root(hashes[...])) == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")
    #expect(hex(MerkleTree.root(hashes[0..<1])) == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
    #expect(hex(MerkleTree.root(hashes[0..<2])) == "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")
  }

  @Test func streamedRootMatchesTheRecursiveOne() {
    let all = leaves(70)
    var accumulator = MerkleAccumulator()
    #expect(accumulator.root == MerkleTree.emptyRoot)
    for (index, leaf) in all.enumerated() {
      accumulator.append(leafHash: leaf)
      #expect(accumulator.root == MerkleTree.root(all[0...index]))
    }
    #expect(accumulator.count == 70)
  }

  @Test func inclusionProofsVerifyAndDetectTampering() {
    for size in 1...33 {
      let all = leaves(size)
      let root = MerkleTree.root(all[...])
      for index in 0..<size {
        let proof = MerkleTree.inclusionProof(index: index, leaves: all[...])
        #expect(MerkleTree.verifyInclusion(index: index, size: size, leafHash: all[index], proof: proof, root: root))
        #expect(!MerkleTree.verifyInclusion(index: index, size: size, leafHash: MerkleTree.leafHash([9]), proof: proof, root: root))
        if !proof.isEmpty {
          var bad = proof
          bad[0][0] ^= 1
          #expect(!MerkleTree.verifyInclusion(index: index, size: size, leafHash: all[index], proof: bad, root: root))
          #expect(!MerkleTree.verifyInclusion(index: index, size: size, leafHash: all[index], proof: proof + [root], root: root))
        }
      }
      #expect(!MerkleTree.verifyInclusion(index: size, size: size, leafHash: all[0], proof: [], root: root))
    }
  }

  @Test func consistencyProofsShowTheLogOnlyGrew() {
    let all = leaves(40)
    for newSize in 1...40 {
      let newRoot = MerkleTree.root(all[0..<newSize])
      for oldSize in 1...newSize {
        let oldRoot = MerkleTree.root(all[0..<oldSize])
        let proof = MerkleTree.consistencyProof(oldSize: oldSize, leaves: all[0..<newSize])
        #expect(
          MerkleTree.verifyConsistency(oldSize: oldSize, newSize: newSize, oldRoot: oldRoot, newRoot: newRoot, proof: proof),
          "\(oldSize) → \(newSize)")
        if oldSize < newSize {
          // A rewritten history does not verify.
          var forged = all
          forged[oldSize - 1] = MerkleTree.leafHash([0xFF])
          let forgedRoot = MerkleTree.root(forged[0..<newSize])
          #expect(!MerkleTree.verifyConsistency(oldSize: oldSize, newSize: newSize, oldRoot: oldRoot, newRoot: forgedRoot, proof: proof))
        }
      }
    }
    #expect(!MerkleTree.verifyConsistency(oldSize: 0, newSize: 3, oldRoot: MerkleTree.emptyRoot, newRoot: MerkleTree.emptyRoot, proof: []))
    #expect(!MerkleTree.verifyConsistency(oldSize: 2, newSize: 3, oldRoot: MerkleTree.emptyRoot, newRoot: MerkleTree.emptyRoot, proof: []))
  }
}

@Suite("Signed checkpoints", .timeLimit(.minutes(5)))
struct CheckpointTests {
  @Test func signsAndVerifiesC2SPNotes() throws {
    let signer = NoteSigner.generate(name: "nova.test/audit")
    let checkpoint = Checkpoint(origin: "nova.test/audit", size: 42, rootHash: MerkleTree.leafHash([1, 2, 3]))
    let note = try checkpoint.signed(by: signer)
    let lines = note.split(separator: "\n", omittingEmptySubsequences: false)
    #expect(lines[0] == "nova.test/audit")
    #expect(lines[1] == "42")
    #expect(lines[3] == "")
    #expect(lines[4].hasPrefix("\u{2014} nova.test/audit "))
    #expect(try Checkpoint.verify(note: note, verifier: signer.verifier) == checkpoint)
    // The verifier key round-trips and names the same key.
    let parsed = try NoteVerifier(verifierKey: signer.verifier.verifierKey)
    #expect(parsed.keyID == signer.keyID)
    #expect(try Checkpoint.verify(note: note, verifier: parsed) == checkpoint)

    let tampered = note.replacingOccurrences(of: "\n42\n", with: "\n43\n")
    #expect(throws: Checkpoint.VerificationError.self) { try Checkpoint.verify(note: tampered, verifier: signer.verifier) }
    let other = NoteSigner.generate(name: "nova.test/audit")
    #expect(throws: Checkpoint.VerificationError.self) { try Checkpoint.verify(note: note, verifier: other.verifier) }
    let stranger = NoteSigner.generate(name: "someone.else")
    #expect(throws: Checkpoint.VerificationError.self) { try Checkpoint.verify(note: note, verifier: stranger.verifier) }
    for broken in ["", "a\nb\n", "o\nx\nAAAA\n\n", "o\n1\nnot-base64\n\n\u{2014} n x\n"] {
      #expect(throws: Checkpoint.VerificationError.self) { try Checkpoint.verify(note: broken, verifier: signer.verifier) }
    }
    #expect(throws: (any Error).self) { try NoteVerifier(verifierKey: "name+00+AAAA") }
  }
}
