import Foundation
import GRDB
import NovaCore
import NovaDatabase

/// Every audit entry about one subject (a job), each with its inclusion proof checked against
/// the latest signed checkpoint: the console's "verified" is this check, not a stored flag.
public struct AuditTrail: Sendable {
  /// One entry and what its proof showed.
  public struct Item: Sendable, Equatable {
    public var entry: AuditEntry
    public var status: Status

    public init(entry: AuditEntry, status: Status) {
      self.entry = entry
      self.status = status
    }
  }

  /// What the check of one entry found.
  public enum Status: String, Sendable, Equatable {
    /// Its leaf, hashed from its content, leads by its audit path to the signed root.
    case verified
    /// Written after the latest signed checkpoint: the next checkpoint will cover it.
    case pending
    /// The path does not lead to the signed root (the entry or the log was changed), or the
    /// checkpoint itself does not verify.
    case failed
  }

  public var items: [Item]
  /// The checkpoint the proofs were checked against (nil: none signed yet).
  public var checkpointSize: Int64?
  public var checkpointTime: Int64?
  /// Whether the checkpoint's signature verifies with this log's key and names this log.
  public var checkpointValid: Bool
  /// Why something failed, in words.
  public var problem: String?
  /// More entries exist than were checked.
  public var truncated: Bool

  public init(items: [Item], checkpointSize: Int64?, checkpointTime: Int64?, checkpointValid: Bool, problem: String?, truncated: Bool) {
    self.items = items
    self.checkpointSize = checkpointSize
    self.checkpointTime = checkpointTime
    self.checkpointValid = checkpointValid
    self.problem = problem
    self.truncated = truncated
  }
}

extension AuditLog {
  /// The entries whose subject is `subject` (the first `limit`), each proved against the latest
  /// signed checkpoint, which must verify with `verifier` and name `origin`. One pass over the
  /// stored leaf hashes serves every proof; each entry's own leaf is recomputed from its content
  /// and the root compared is the signed one, so neither a changed entry nor a changed stored
  /// hash can pass.
  public func trail(subject: String, verifier: NoteVerifier, origin: String, limit: Int = 500) async throws -> AuditTrail {
    let latest = try await latestCheckpoint()
    let (entries, truncated) = try await database.read { db -> ([AuditEntry], Bool) in
      let statement = try db.cachedStatement(
        sql: "SELECT seq, time, actor, event, subject, payload FROM nova_audit WHERE subject = ? ORDER BY seq LIMIT ?")
      let rows = try Row.fetchAll(statement, arguments: [subject, limit + 1])
      let entries = rows.prefix(limit).map { row in
        AuditEntry(seq: row[0], time: row[1], actor: row[2], event: row[3], subject: row[4], payload: row[5])
      }
      return (Array(entries), rows.count > limit)
    }
    guard let latest else {
      return AuditTrail(
        items: entries.map { AuditTrail.Item(entry: $0, status: .pending) }, checkpointSize: nil, checkpointTime: nil, checkpointValid: false,
        problem: nil, truncated: truncated)
    }
    var problem: String?
    var signedRoot: MerkleTree.Hash?
    do {
      let signed = try Checkpoint.verify(note: latest.note, verifier: verifier)
      if signed.origin != origin {
        problem = "the latest checkpoint names the log '\(signed.origin)', not '\(origin)'"
      } else if Int64(signed.size) != latest.size {
        problem = "the latest checkpoint signs \(signed.size) entries but is stored as \(latest.size)"
      } else {
        signedRoot = signed.rootHash
      }
    } catch {
      problem = "the latest checkpoint's signature does not verify: \(error)"
    }
    let covered = entries.filter { $0.seq <= latest.size }
    var proven: Set<Int64> = []
    if signedRoot != nil, !covered.isEmpty { try await updateTiles(through: latest.size) }
    if let signedRoot, !covered.isEmpty {
      let paths = covered.map { MerkleTree.inclusionRanges(index: Int($0.seq - 1), size: Int(latest.size)) }
      // Entries of one job lie close together: their paths share most ranges, hashed once.
      let unique = Array(Set(paths.flatMap { $0 })).sorted { ($0.lowerBound, $0.upperBound) < ($1.lowerBound, $1.upperBound) }
      let hashes = try await database.read { db in try Self.subtreeHashes(db, ranges: unique, size: latest.size) }
      let hashOf = Dictionary(uniqueKeysWithValues: zip(unique.map { [$0.lowerBound, $0.upperBound] }, hashes))
      for (entry, path) in zip(covered, paths) {
        let proof = path.map { hashOf[[$0.lowerBound, $0.upperBound]] ?? [] }
        if MerkleTree.verifyInclusion(index: Int(entry.seq - 1), size: Int(latest.size), leafHash: entry.leafHash, proof: proof, root: signedRoot) {
          proven.insert(entry.seq)
        }
      }
      if proven.count < covered.count {
        problem =
          "\(covered.count - proven.count) of this job's entries do not lead to the signed root: the entry or the log was changed after signing"
      }
    }
    let items = entries.map { entry -> AuditTrail.Item in
      if entry.seq > latest.size { return AuditTrail.Item(entry: entry, status: .pending) }
      return AuditTrail.Item(entry: entry, status: proven.contains(entry.seq) ? .verified : .failed)
    }
    return AuditTrail(
      items: items, checkpointSize: latest.size, checkpointTime: latest.createdAt, checkpointValid: signedRoot != nil, problem: problem,
      truncated: truncated)
  }

  /// Leaves per tile: the stored hash of every complete, aligned run of this many leaves.
  static let tileWidth = 256

  /// Stores the hash of every complete tile of the first `size` leaves not stored yet (from the
  /// stored leaf hashes, once each: the log is append-only). The checkpointer calls it after
  /// each checkpoint; proofs call it for what is missing.
  public func updateTiles(through size: Int64) async throws {
    let complete = Int(size) / Self.tileWidth
    // Hashed on a reader, stored by the writer: a checkpoint a minute into a busy server hashed
    // 100,000 leaves inside a write transaction, and every submission waited 400 ms behind it.
    let (from, roots) = try await database.read { db -> (Int, [Data]) in
      let from = try Self.tilesStored(db)
      guard from < complete else { return (from, []) }
      var leaves: [MerkleTree.Hash] = []
      leaves.reserveCapacity(Self.tileWidth)
      var roots: [Data] = []
      try AuditLog.scanHashes(db, from: Int64(from * Self.tileWidth) + 1, through: Int64(complete * Self.tileWidth)) { hash in
        leaves.append(hash)
        if leaves.count == Self.tileWidth {
          roots.append(Data(MerkleTree.root(leaves[...])))
          leaves.removeAll(keepingCapacity: true)
        }
      }
      return (from, roots)
    }
    guard !roots.isEmpty else { return }
    try await database.write { db in
      // Another process may have stored some of them meanwhile (the same hashes: the leaves
      // never change); the rest follow on from its last.
      let next = try Self.tilesStored(db)
      guard next >= from else { return }
      let insert = try db.cachedStatement(sql: "INSERT INTO nova_audit_tiles (idx, hash) VALUES (?, ?)")
      for (offset, root) in roots.enumerated() where from + offset >= next { try insert.execute(arguments: [from + offset, root]) }
    }
  }

  /// How many tiles are stored (they are stored in order, from the first).
  private static func tilesStored(_ db: Database) throws -> Int {
    try Int.fetchOne(db, sql: "SELECT COALESCE(MAX(idx) + 1, 0) FROM nova_audit_tiles") ?? 0
  }

  /// The hash of each range of leaves among the first `size`: whole aligned tiles from the
  /// tile table, the few leaves at the edges from the stored leaf hashes.
  static func subtreeHashes(_ db: Database, ranges: [Range<Int>], size: Int64) throws -> [MerkleTree.Hash] {
    let tiles = try db.cachedStatement(sql: "SELECT idx, hash FROM nova_audit_tiles WHERE idx >= ? AND idx < ? ORDER BY idx")
    func tileHashes(_ range: Range<Int>) throws -> [MerkleTree.Hash]? {
      let rows = try Row.fetchAll(tiles, arguments: [range.lowerBound, range.upperBound])
      guard rows.count == range.count else { return nil }
      return rows.map { Array($0[1] as Data) }
    }
    func leaves(_ range: Range<Int>) throws -> [MerkleTree.Hash] {
      var hashes: [MerkleTree.Hash] = []
      try scanHashes(db, from: Int64(range.lowerBound) + 1, through: Int64(range.upperBound)) { hashes.append($0) }
      return hashes
    }
    func hash(_ range: Range<Int>) throws -> MerkleTree.Hash {
      let count = range.count
      let width = tileWidth
      // A perfect subtree made of whole tiles: their stored hashes, combined.
      if count >= width, count & (count - 1) == 0, range.lowerBound % count == 0,
        let stored = try tileHashes((range.lowerBound / width)..<(range.upperBound / width))
      {
        return MerkleTree.root(stored[...])
      }
      if count <= width { return MerkleTree.root(try leaves(range)[...]) }
      let split = MerkleTree.split(count)
      return MerkleTree.nodeHash(try hash(range.lowerBound..<(range.lowerBound + split)), try hash((range.lowerBound + split)..<range.upperBound))
    }
    _ = size
    return try ranges.map(hash)
  }
}
