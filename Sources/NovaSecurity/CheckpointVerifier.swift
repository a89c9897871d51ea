import Foundation
import GRDB
import NovaCore
import NovaDatabase

/// Verifies the latest signed checkpoint incrementally: the first check recomputes the root
/// from every entry's content; each later one continues from the last checkpoint it verified,
/// hashing only the entries after it. A page asking "does the log verify?" thus never reads
/// the whole log, and every newly signed root is still held against recomputed leaves.
public actor CheckpointVerifier {
  /// The outcome of a check.
  public struct Status: Sendable, Equatable {
    public var entries: Int64
    /// The latest checkpoint (nil: none signed yet).
    public var checkpointSize: Int64?
    public var checkpointTime: Int64?
    public var checkpointRoot: MerkleTree.Hash?
    /// The signature verifies, names this log, and signs the root the entries give.
    public var valid: Bool
    public var problem: String?
  }

  let log: AuditLog
  let verifier: NoteVerifier
  let origin: String
  /// The last checkpoint verified: its size, and the tree's frontier there.
  private var verified: (size: Int64, root: MerkleTree.Hash, frontier: [MerkleTree.Hash])?
  /// How often the whole log is hashed again (a rewrite of entries verified before is found
  /// within this time; `nova audit verify` finds it at once).
  let fullPassInterval: Duration
  private var lastFullPass: ContinuousClock.Instant?

  public init(log: AuditLog, verifier: NoteVerifier, origin: String, fullPassInterval: Duration = .seconds(600)) {
    self.log = log
    self.verifier = verifier
    self.origin = origin
    self.fullPassInterval = fullPassInterval
  }

  /// Forgets what was verified: the next check hashes the whole log again.
  public func forgetVerified() {
    verified = nil
    lastFullPass = nil
  }

  /// The latest checkpoint and whether it verifies.
  public func status() async throws -> Status {
    if let lastFullPass, ContinuousClock.now - lastFullPass >= fullPassInterval { verified = nil }
    let entries = try await log.size()
    guard let latest = try await log.latestCheckpoint() else {
      return Status(entries: entries, valid: false, problem: nil)
    }
    var status = Status(
      entries: entries, checkpointSize: latest.size, checkpointTime: latest.createdAt, checkpointRoot: latest.root, valid: false, problem: nil)
    let signed: Checkpoint
    do {
      signed = try Checkpoint.verify(note: latest.note, verifier: verifier)
    } catch {
      status.problem = "the latest checkpoint's signature does not verify: \(error)"
      return status
    }
    guard signed.origin == origin, Int64(signed.size) == latest.size else {
      status.problem = "the latest checkpoint names log '\(signed.origin)' of \(signed.size) entries, not '\(origin)' of \(latest.size)"
      return status
    }
    if let verified, verified.size == latest.size {
      status.valid = verified.root == signed.rootHash
      if !status.valid { status.problem = "the checkpoint of \(latest.size) entries changed since it was verified" }
      return status
    }
    // Continue from the last verified tree when the log only grew since; otherwise start over.
    var start: (size: Int64, frontier: [MerkleTree.Hash]) = (0, [])
    if let verified, verified.size < latest.size { start = (verified.size, verified.frontier) }
    guard let initial = MerkleAccumulator(count: Int(start.size), frontier: start.frontier) else {
      status.problem = "the verified frontier does not fit its size"
      return status
    }
    let last = latest.size
    let first = start.size
    let (expected, complete) = try await log.database.read { db -> (MerkleAccumulator, Bool) in
      var accumulator = initial
      var expected = first + 1
      var complete = true
      try AuditLog.scan(db, from: first + 1, through: last) { entry, _ in
        if entry.seq != expected { complete = false }
        expected = entry.seq + 1
        accumulator.append(leafHash: entry.leafHash)
      }
      return (accumulator, complete && expected == last + 1)
    }
    guard complete else {
      status.problem = "entries are missing below \(last); run `nova audit verify`"
      return status
    }
    guard expected.root == signed.rootHash else {
      verified = nil
      status.problem = "the entries up to \(last) do not give the signed root: the log was changed after signing; run `nova audit verify`"
      return status
    }
    if start.size == 0 { lastFullPass = ContinuousClock.now }
    verified = (last, expected.root, expected.frontier)
    status.valid = true
    return status
  }
}
