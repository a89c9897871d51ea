import Foundation
import GRDB
import Metrics
import NovaCore
import NovaDatabase
import NovaQueue
import Synchronization

/// The audit log of a Nova database: appends, streamed reads, verification, signed
/// checkpoints, inclusion and consistency proofs, and the audit coverage figure.
public final class AuditLog: Sendable {
  /// The database the log (and the tokens) live in.
  public let database: NovaDatabase
  /// Records from another store (Redis) that were not transitions and were set aside.
  public static let quarantinedMetric = "nova_audit_quarantined_total"

  /// The log in `database`, its tables created on first use.
  public init(database: NovaDatabase) throws {
    self.database = database
    try AuditJournal.prepare(database)
  }

  /// Job transitions counted in the log through an entry: entries never change or go, so a
  /// count reads only what was appended since the last one (the server counts each minute).
  private let jobTransitions = Mutex<(through: Int64, count: Int)>((0, 0))

  /// The log's job transitions, read in `db`'s snapshot.
  private func jobTransitionCount(_ db: Database) throws -> Int {
    let last = try AuditJournal.lastSequence(db)
    var (through, counted) = jobTransitions.withLock { $0 }
    // A log shorter than the last count (an older snapshot, or another file) is counted anew.
    if last < through { (through, counted) = (0, 0) }
    if last == through { return counted }
    let added =
      try Int.fetchOne(
        db, sql: "SELECT COUNT(*) FROM nova_audit WHERE seq > ? AND seq <= ? AND event LIKE 'job.%'", arguments: [through, last])
      ?? 0
    let total = counted + added
    // Any count through any entry stays true (even one from an older snapshot than the last).
    jobTransitions.withLock { $0 = (last, total) }
    return total
  }

  /// Appends one event other than a job transition, in the queue's shared write transaction.
  @discardableResult
  public func append(
    event: String, subject: String?, payload: JSONValue, actor: String = AuditContext.actor, time: Date = Date()
  ) async throws -> AuditEntry {
    let text = try CanonicalJSON.string(payload)
    let millis = time.millisecondsSince1970
    return try await database.write { db in
      try AuditJournal.append([(millis, actor, event, subject, text)], in: db)[0]
    }
  }

  /// Appends events an action held back and no transaction of its took (`AuditContext.held`).
  public func append(held events: [HeldAuditEvents.Event]) async throws {
    if events.isEmpty { return }
    try await database.write { db in try AuditJournal().record(held: events, in: DatabaseTransaction(db)) }
  }

  /// The number of the last entry (0 for an empty log).
  public func size() async throws -> Int64 {
    try await database.read { db in try AuditJournal.lastSequence(db) }
  }

  /// Entries `first...last`, in order (for listings; exports stream with `scan`).
  public func entries(from first: Int64, through last: Int64) async throws -> [AuditEntry] {
    try await database.read { db in
      var entries: [AuditEntry] = []
      try Self.scan(db, from: first, through: last) { entry, _ in entries.append(entry) }
      return entries
    }
  }

  /// Calls `body` with each entry from `first` through `last` and its stored hash, in order,
  /// one row at a time (flat memory).
  static func scan(_ db: Database, from first: Int64, through last: Int64, _ body: (AuditEntry, [UInt8]) throws -> Void) throws {
    let statement = RawStatement(
      try db.cachedStatement(
        sql: "SELECT seq, time, actor, event, subject, payload, hash FROM nova_audit WHERE seq BETWEEN ? AND ? ORDER BY seq"),
      in: db)
    statement.bind(1, first)
    statement.bind(2, last)
    defer { statement.finish() }
    while try statement.step() {
      let entry = AuditEntry(
        seq: statement.int64(0), time: statement.int64(1), actor: statement.string(2), event: statement.string(3),
        subject: statement.optionalString(4), payload: statement.string(5))
      try body(entry, statement.bytes(6))
    }
  }

  /// Calls `body` with the stored leaf hash of each entry `first...last`, checking that none is missing.
  static func scanHashes(_ db: Database, from first: Int64 = 1, through last: Int64, _ body: (MerkleTree.Hash) -> Void) throws {
    let statement = RawStatement(
      try db.cachedStatement(sql: "SELECT seq, hash FROM nova_audit WHERE seq BETWEEN ? AND ? ORDER BY seq"), in: db)
    statement.bind(1, first)
    statement.bind(2, last)
    defer { statement.finish() }
    var expected = first
    while try statement.step() {
      let seq = statement.int64(0)
      guard seq == expected else {
        throw NovaError.storage("audit entry \(expected) is missing (the log jumps to \(seq)); run `nova audit verify`")
      }
      expected += 1
      body(statement.bytes(1))
    }
    guard expected == last + 1 else {
      throw NovaError.storage("the audit log has \(expected - 1) entries, fewer than \(last)")
    }
  }

  // MARK: - Checkpoints

  /// Signs and stores a checkpoint of the log as it is now (or returns the stored one of that
  /// size), chained to the latest stored one. Reads run on a snapshot, so appends go on
  /// meanwhile; only the entries added since the last checkpoint are read.
  ///
  /// Nothing stored is trusted blindly: the last checkpoint's signature and origin are checked
  /// and its stored frontier must give its signed root, and every new entry's leaf hash is
  /// recomputed from its content. A log that fails any of these is not signed.
  @discardableResult
  public func checkpoint(signer: NoteSigner, origin: String, time: Date = Date()) async throws -> StoredCheckpoint {
    let millis = time.millisecondsSince1970
    for _ in 0..<8 {
      let (computed, isNew) = try await database.read { db -> (StoredCheckpoint, Bool) in
        let size = try AuditJournal.lastSequence(db)
        if let stored = try Self.storedCheckpoint(db, size: size) { return (stored, false) }
        var accumulator = MerkleAccumulator()
        var from: Int64 = 1
        var sequence: Int64 = 1
        var previous = Checkpoint.noPredecessor
        if let row = try Row.fetchOne(
          db, sql: "SELECT size, frontier, note, sequence FROM nova_audit_checkpoints ORDER BY size DESC LIMIT 1")
        {
          let latest: Int64 = row[0]
          let blob: Data = row[1]
          let note: String = row[2]
          let parsed: Checkpoint
          do {
            parsed = try Checkpoint.verify(note: note, verifier: signer.verifier)
          } catch {
            throw NovaError.storage("refusing to sign: the stored checkpoint at size \(latest) does not verify (\(error)); run `nova audit verify`")
          }
          guard parsed.origin == origin, Int64(parsed.size) == latest else {
            throw NovaError.storage(
              "refusing to sign: the stored checkpoint at size \(latest) is for log '\(parsed.origin)' at size \(parsed.size); run `nova audit verify`"
            )
          }
          guard latest <= size else {
            throw NovaError.storage(
              "refusing to sign: the stored checkpoint covers \(latest) entries but the log has \(size): entries were removed; run `nova audit verify`"
            )
          }
          let frontier = stride(from: 0, to: blob.count, by: 32).map { Array(blob[$0..<min($0 + 32, blob.count)]) }
          guard let resumed = MerkleAccumulator(count: Int(latest), frontier: frontier), resumed.root == parsed.rootHash else {
            throw NovaError.storage(
              "refusing to sign: the stored frontier of checkpoint at size \(latest) does not give its signed root (the database was changed); run `nova audit verify`"
            )
          }
          accumulator = resumed
          from = latest + 1
          sequence = (parsed.sequence ?? 0) + 1
          previous = Checkpoint.noteHash(note)
        }
        var expected = from
        try Self.scan(db, from: from, through: size) { entry, storedHash in
          let hash = entry.leafHash
          guard entry.seq == expected, hash == storedHash else {
            throw NovaError.storage(
              "refusing to sign: audit entry \(expected) is missing or does not match its stored hash; run `nova audit verify`")
          }
          expected += 1
          accumulator.append(leafHash: hash)
        }
        guard expected == size + 1 else {
          throw NovaError.storage("refusing to sign: audit entries \(expected)...\(size) are missing; run `nova audit verify`")
        }
        let checkpoint = Checkpoint(origin: origin, size: Int(size), rootHash: accumulator.root, sequence: sequence, previous: previous)
        let signed = StoredCheckpoint(
          size: size, root: accumulator.root, note: try checkpoint.signed(by: signer), createdAt: millis,
          frontier: accumulator.frontier, sequence: sequence)
        return (signed, true)
      }
      if !isNew { return computed }
      // Another process may have signed meanwhile: store only if this one still extends the
      // latest checkpoint, else start again from the new latest.
      let stored = try await database.write { db -> Bool in
        let latest = try Int64.fetchOne(db, sql: "SELECT MAX(sequence) FROM nova_audit_checkpoints") ?? 0
        guard latest == computed.sequence! - 1 else { return false }
        try db.execute(
          sql: "INSERT OR IGNORE INTO nova_audit_checkpoints (size, root, frontier, note, created_at, sequence) VALUES (?, ?, ?, ?, ?, ?)",
          arguments: [
            computed.size, Data(computed.root), Data(computed.frontier.joined()), computed.note, computed.createdAt, computed.sequence,
          ])
        return db.changesCount == 1
      }
      if stored { return computed }
    }
    throw NovaError.unavailable("could not store a checkpoint: other processes kept signing first")
  }

  /// Every stored checkpoint larger than `size` (all by default), smallest first.
  public func checkpoints(after size: Int64 = -1) async throws -> [StoredCheckpoint] {
    try await database.read { db in
      try Row.fetchAll(
        db, sql: "SELECT size, root, note, created_at, sequence FROM nova_audit_checkpoints WHERE size > ? ORDER BY size", arguments: [size]
      ).map(Self.stored)
    }
  }

  /// The stored checkpoint of `size` entries, if any.
  func checkpoint(size: Int64) async throws -> StoredCheckpoint? {
    try await database.read { db in try Self.storedCheckpoint(db, size: size) }
  }

  /// A checkpoint from a `size, root, note, created_at, sequence` row.
  private static func stored(_ row: Row) -> StoredCheckpoint {
    StoredCheckpoint(size: row[0], root: Array(row[1] as Data), note: row[2], createdAt: row[3], frontier: [], sequence: row[4])
  }

  /// The latest stored checkpoint (one row, however many there are).
  public func latestCheckpoint() async throws -> StoredCheckpoint? {
    try await database.read { db in
      try Row.fetchOne(db, sql: "SELECT size, root, note, created_at, sequence FROM nova_audit_checkpoints ORDER BY size DESC LIMIT 1")
        .map(Self.stored)
    }
  }

  private static func storedCheckpoint(_ db: Database, size: Int64) throws -> StoredCheckpoint? {
    try Row.fetchOne(
      db, sql: "SELECT size, root, note, created_at, sequence FROM nova_audit_checkpoints WHERE size = ?", arguments: [size]
    ).map(Self.stored)
  }

  // MARK: - Verification

  /// Recomputes every entry's leaf hash and the tree's root at every checkpoint (the stored
  /// ones, whose signatures `verifier` checks, `extraCheckpoints`, signed notes kept elsewhere,
  /// and `mirrored`, the notes of a checkpoint mirror), checks the chain of stored checkpoints
  /// and that every mirrored one is still stored, proves the log consistent (RFC 6962) with the
  /// latest mirrored checkpoint, and reports every entry or checkpoint that does not match,
  /// first one first. With `origin`, every checkpoint must name that log.
  public func verify(
    verifier: NoteVerifier, origin: String? = nil, extraCheckpoints: [String] = [], mirrored: [MirroredCheckpoint] = []
  ) async throws -> AuditVerification {
    let stored = try await checkpoints()
    var report = AuditVerification()
    var targets: [(size: Int64, root: MerkleTree.Hash, source: String)] = []
    func parse(_ note: String, _ what: String) -> Checkpoint? {
      do {
        let parsed = try Checkpoint.verify(note: note, verifier: verifier)
        if let origin, parsed.origin != origin {
          report.add(AuditProblem(seq: nil, message: "\(what) is for log '\(parsed.origin)', not this log '\(origin)'"))
          return nil
        }
        return parsed
      } catch {
        report.add(AuditProblem(seq: nil, message: "\(what): \(error)"))
        return nil
      }
    }
    // The chain: sequences 1, 2, … in the order of their sizes, each naming its predecessor.
    var previousNote: String?
    var previousSequence: Int64 = 0
    for checkpoint in stored {
      let what = "stored checkpoint at size \(checkpoint.size)\(checkpoint.sequence.map { " (#\($0))" } ?? "")"
      guard let parsed = parse(checkpoint.note, what) else { continue }
      targets.append((Int64(parsed.size), parsed.rootHash, what))
      if let sequence = parsed.sequence {
        if sequence != checkpoint.sequence {
          report.add(AuditProblem(seq: nil, message: "\(what) is signed as checkpoint #\(sequence): the table was changed"))
        } else if sequence <= previousSequence {
          report.add(
            AuditProblem(
              seq: nil, message: "\(what) is out of order: it comes after checkpoint #\(previousSequence) but has a smaller number"))
        } else if sequence > previousSequence + 1 {
          let missing = previousSequence + 1 == sequence - 1 ? " #\(sequence - 1) is" : "s #\(previousSequence + 1)…#\(sequence - 1) are"
          report.add(AuditProblem(seq: nil, message: "checkpoint\(missing) missing before \(what): removed from the database"))
        } else if parsed.previous != previousNote.map(Checkpoint.noteHash) ?? Checkpoint.noPredecessor {
          report.add(AuditProblem(seq: nil, message: "\(what) does not chain to the checkpoint stored before it: that one was replaced"))
        }
        previousSequence = sequence
      } else if previousSequence > 0 {
        report.add(AuditProblem(seq: nil, message: "\(what) is not chained but follows chained checkpoints: it was inserted"))
      }
      previousNote = checkpoint.note
    }
    for (index, note) in extraCheckpoints.enumerated() {
      guard let parsed = parse(note, "given checkpoint \(index + 1)") else { continue }
      targets.append((Int64(parsed.size), parsed.rootHash, "given checkpoint at size \(parsed.size)"))
    }
    // Every mirrored checkpoint must still be stored, unchanged.
    let storedNotes = Dictionary(stored.map { ($0.size, $0.note) }, uniquingKeysWith: { first, _ in first })
    var latestMirrored: (size: Int64, root: MerkleTree.Hash, source: String)?
    for mirror in mirrored {
      let what = "mirrored checkpoint \(mirror.name)"
      guard let parsed = parse(mirror.note, what) else { continue }
      let size = Int64(parsed.size)
      let source = "\(what) at size \(size)"
      targets.append((size, parsed.rootHash, source))
      report.mirroredChecked += 1
      switch storedNotes[size] {
      case nil:
        report.add(AuditProblem(seq: nil, message: "\(source) is not in the database: it was removed"))
      case let note? where note != mirror.note:
        report.add(AuditProblem(seq: nil, message: "\(source) differs from the one stored in the database: it was replaced"))
      default: break
      }
      if size > (latestMirrored?.size ?? -1) { latestMirrored = (size, parsed.rootHash, source) }
    }
    targets.sort { $0.size < $1.size }
    let sortedTargets = targets
    let initial = report
    report = try await database.read { db -> AuditVerification in
      var report = initial
      var accumulator = MerkleAccumulator()
      var expected: Int64 = 1
      var next = 0
      var lastGood: Int64 = 0
      func checkTargets() {
        while next < sortedTargets.count, sortedTargets[next].size <= Int64(accumulator.count) {
          let target = sortedTargets[next]
          if target.size == Int64(accumulator.count) {
            if target.root == accumulator.root {
              lastGood = target.size
              report.checkpointsChecked += 1
            } else {
              report.add(
                AuditProblem(
                  seq: nil,
                  message:
                    "\(target.source) does not match the log: an entry after \(lastGood) and up to \(target.size) was changed, removed or inserted"))
            }
          }
          next += 1
        }
      }
      checkTargets()
      try Self.scan(db, from: 1, through: .max) { entry, storedHash in
        if entry.seq != expected {
          report.add(
            AuditProblem(seq: expected, message: "entry \(expected) is missing: the log jumps from \(expected - 1) to \(entry.seq)"))
        }
        expected = entry.seq + 1
        let hash = entry.leafHash
        if hash != storedHash {
          report.add(
            AuditProblem(
              seq: entry.seq,
              message: "entry \(entry.seq) (\(entry.event) at \(AuditTime.string(entry.time))) does not match its stored hash: it was changed"))
        }
        accumulator.append(leafHash: hash)
        report.entries += 1
        checkTargets()
      }
      while next < sortedTargets.count {
        let target = sortedTargets[next]
        report.add(
          AuditProblem(
            seq: nil,
            message: "\(target.source) covers \(target.size) entries but the log has \(accumulator.count): entries were removed"))
        next += 1
      }
      report.root = accumulator.root
      return report
    }
    report.unanchored = report.entries > 0 && targets.isEmpty
    // RFC 6962 consistency of the latest mirrored checkpoint with the log as it is now: the
    // mirror's tree must be a prefix of this one.
    if let latestMirrored, latestMirrored.size >= 1, latestMirrored.size <= report.entries {
      let proof = try await consistencyProof(oldSize: latestMirrored.size, newSize: report.entries)
      if MerkleTree.verifyConsistency(
        oldSize: Int(latestMirrored.size), newSize: Int(report.entries), oldRoot: latestMirrored.root, newRoot: report.root,
        proof: proof.path)
      {
        report.consistencyProofs += 1
      } else {
        report.add(
          AuditProblem(
            seq: nil,
            message: "the log of \(report.entries) entries is not consistent with \(latestMirrored.source) (RFC 6962 consistency proof fails)"))
      }
    }
    return report
  }

  /// The root of the first `size` entries, each leaf hashed from the entry's content; nil when
  /// an entry is missing.
  public func recomputedRoot(size: Int64) async throws -> MerkleTree.Hash? {
    try await database.read { db in
      var accumulator = MerkleAccumulator()
      var expected: Int64 = 1
      var gap = false
      try Self.scan(db, from: 1, through: size) { entry, _ in
        if entry.seq != expected { gap = true }
        expected = entry.seq + 1
        accumulator.append(leafHash: entry.leafHash)
      }
      return gap || expected != size + 1 ? nil : accumulator.root
    }
  }

  // MARK: - Proofs

  /// The proof that entry `seq` is in the tree of the first `treeSize` entries (by default the
  /// latest checkpoint that covers it, or the whole log).
  public func inclusionProof(seq: Int64, treeSize: Int64? = nil) async throws -> InclusionProof {
    let stored = try await checkpoints()
    let current = try await size()
    guard seq >= 1, seq <= current else {
      throw NovaError.notFound("audit entry \(seq) does not exist: the log has entries 1 to \(current)")
    }
    let size = treeSize ?? stored.first(where: { $0.size >= seq })?.size ?? current
    guard size >= seq, size <= current else {
      throw NovaError.invalidInput(field: "tree size", message: "tree size \(size) must be at least \(seq) and at most \(current)")
    }
    let ranges = MerkleTree.inclusionRanges(index: Int(seq - 1), size: Int(size))
    let (hashes, root, leaf) = try await database.read { db in
      try Self.rangeHashes(db, ranges: ranges, size: size, leafIndex: Int(seq - 1))
    }
    let entry = try await entries(from: seq, through: seq)[0]
    return InclusionProof(
      entry: entry, treeSize: size, leafHash: leaf, path: hashes, root: root,
      checkpoint: stored.first(where: { $0.size == size })?.note)
  }

  /// The proof that the tree of the first `oldSize` entries is a prefix of that of `newSize`.
  public func consistencyProof(oldSize: Int64, newSize: Int64) async throws -> ConsistencyProof {
    let current = try await size()
    guard oldSize >= 1, oldSize <= newSize, newSize <= current else {
      throw NovaError.invalidInput(field: "OLD NEW", message: "need 1 ≤ OLD ≤ NEW ≤ \(current) (the log's size); got OLD \(oldSize), NEW \(newSize)")
    }
    let ranges = MerkleTree.consistencyRanges(oldSize: Int(oldSize), newSize: Int(newSize))
    let stored = try await checkpoints()
    return try await database.read { db in
      let (hashes, newRoot, _) = try Self.rangeHashes(db, ranges: ranges + [0..<Int(oldSize)], size: newSize, leafIndex: nil)
      return ConsistencyProof(
        oldSize: oldSize, newSize: newSize, oldRoot: hashes.last!, newRoot: newRoot, path: Array(hashes.dropLast()),
        oldCheckpoint: stored.first(where: { $0.size == oldSize })?.note,
        newCheckpoint: stored.first(where: { $0.size == newSize })?.note)
    }
  }

  /// The subtree hash of each range, the root of the first `size` leaves, and one leaf's hash,
  /// from one streamed pass over the stored leaf hashes.
  private static func rangeHashes(_ db: Database, ranges: [Range<Int>], size: Int64, leafIndex: Int?) throws
    -> ([MerkleTree.Hash], MerkleTree.Hash, MerkleTree.Hash)
  {
    var accumulators = Array(repeating: MerkleAccumulator(), count: ranges.count)
    let order = ranges.indices.sorted { ranges[$0].lowerBound < ranges[$1].lowerBound }
    var whole = MerkleAccumulator()
    var leaf: MerkleTree.Hash = []
    var index = 0
    var cursor = 0
    try scanHashes(db, through: size) { hash in
      whole.append(leafHash: hash)
      if index == leafIndex { leaf = hash }
      while cursor < order.count, ranges[order[cursor]].upperBound <= index { cursor += 1 }
      // Ranges may nest (the old tree's range in a consistency proof), so every range that
      // holds the leaf gets it.
      var probe = cursor
      while probe < order.count, ranges[order[probe]].lowerBound <= index {
        if ranges[order[probe]].contains(index) { accumulators[order[probe]].append(leafHash: hash) }
        probe += 1
      }
      index += 1
    }
    return (accumulators.map(\.root), whole.root, leaf)
  }

  // MARK: - Records kept by other stores

  /// Moves up to `limit` pending transition records from `source` (a Redis queue) into the log,
  /// with the cursor of each source in the same transaction, then lets the source delete them:
  /// each record lands exactly once, even with several importers or a crash in between.
  @discardableResult
  public func importTransitions(from source: any TransitionSource, limit: Int = 5000) async throws -> Int {
    let cursors = try await database.read { db in
      Dictionary(
        try Row.fetchAll(db, sql: "SELECT source, cursor FROM nova_audit_import").map { ($0[0] as String, $0[1] as String) },
        uniquingKeysWith: { $1 })
    }
    let records = try await source.pendingTransitions(after: cursors, limit: limit)
    if records.isEmpty {
      // A crash between the commit and the trim left records already moved: trim them now.
      if !cursors.isEmpty { try await source.acknowledgeTransitions(through: cursors) }
      return 0
    }
    let imported = try await database.write { db -> (count: Int, cursors: [String: String]) in
      var stored = Dictionary(
        try Row.fetchAll(db, sql: "SELECT source, cursor FROM nova_audit_import").map { ($0[0] as String, $0[1] as String) },
        uniquingKeysWith: { $1 })
      // Another importer may have taken some of these meanwhile.
      let fresh = records.filter { record in stored[record.source].map { Self.streamID(record.cursor, isAfter: $0) } ?? true }
      var index = 0
      while index < fresh.count {
        if let problem = fresh[index].problem {
          // Kept aside by the source; recorded here, in order, so the log says what was skipped.
          let record = fresh[index]
          let fields = record.fields.mapValues { JSONValue.string(String($0.prefix(1024))) }
          try AuditJournal.append(
            [
              (
                Date().millisecondsSince1970, "nova", "audit.quarantined", record.source,
                try CanonicalJSON.string(.object(["cursor": .string(record.cursor), "problem": .string(problem), "fields": .object(fields)]))
              )
            ], in: db)
          index += 1
          continue
        }
        var end = index + 1
        while end < fresh.count, fresh[end].problem == nil, fresh[end].actor == fresh[index].actor { end += 1 }
        try AuditJournal().record(fresh[index..<end].compactMap(\.transition), actor: fresh[index].actor, in: DatabaseTransaction(db))
        index = end
      }
      for record in fresh { stored[record.source] = record.cursor }
      for (source, cursor) in stored {
        try db.execute(
          sql: "INSERT INTO nova_audit_import (source, cursor) VALUES (?, ?) ON CONFLICT(source) DO UPDATE SET cursor = excluded.cursor",
          arguments: [source, cursor])
      }
      return (fresh.count, stored)
    }
    try await source.acknowledgeTransitions(through: imported.cursors)
    let quarantined = records.filter { $0.problem != nil }.count
    if quarantined > 0 { Counter(label: Self.quarantinedMetric).increment(by: quarantined) }
    return imported.count
  }

  /// Imports until `source` has nothing pending (at most `rounds` batches).
  @discardableResult
  public func importAllTransitions(from source: any TransitionSource, rounds: Int = 1000) async throws -> Int {
    var total = 0
    for _ in 0..<rounds {
      let count = try await importTransitions(from: source)
      total += count
      if count == 0 { break }
    }
    return total
  }

  /// Whether stream id `a` ("ms-seq") comes after `b`.
  static func streamID(_ a: String, isAfter b: String) -> Bool {
    func parts(_ id: String) -> (UInt64, UInt64) {
      let split = id.split(separator: "-")
      return (UInt64(split.first ?? "") ?? 0, UInt64(split.dropFirst().first ?? "") ?? 0)
    }
    let (x, y) = (parts(a), parts(b))
    return x.0 != y.0 ? x.0 > y.0 : x.1 > y.1
  }

  /// Coverage of the jobs a queue holds.
  ///
  /// A SQLite queue in this log's database is read in the same snapshot as the log, so every
  /// job's current state must be the state its latest entry moved it to. Other queues are read
  /// first: then a state must be one that an entry moved the job to (a transition made between
  /// the two reads is in the log but not in the states). A queue that keeps its own records
  /// (Redis) has them imported first.
  public func coverage(of jobs: any JobStateListing) async throws -> AuditCoverage {
    if let sqlite = jobs as? SQLiteJobQueue, sqlite.database === database {
      return try await database.read { db in
        let jobs = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM nova_jobs") ?? 0
        let audited = try self.jobTransitionCount(db)
        // One statement for every job, its state against its latest entry's: the server
        // computes this each minute, and a lookup per job from Swift took a second per 300,000
        // jobs (this, a quarter of that). A state no entry names (even one Nova does not know)
        // is unexplained.
        let unexplained = try String.fetchAll(
          db,
          sql: """
            SELECT id FROM nova_jobs AS job WHERE job.state IS NOT (
              SELECT json_extract(entry.payload, '$.to') FROM nova_audit AS entry WHERE entry.subject = job.id
              ORDER BY entry.seq DESC LIMIT 1)
            """)
        return AuditCoverage(auditedTransitions: audited, jobs: jobs, unauditedJobs: unexplained)
      }
    }
    let states = try await jobs.jobStates()
    if let source = jobs as? any TransitionSource { try await importAllTransitions(from: source) }
    return try await database.read { db in
      let audited = try self.jobTransitionCount(db)
      let check = try db.cachedStatement(
        sql: "SELECT 1 FROM nova_audit WHERE subject = ? AND json_extract(payload, '$.to') = ? LIMIT 1")
      var unexplained: [String] = []
      for (id, state) in states where try Int.fetchOne(check, arguments: [id.rawValue, state.rawValue]) == nil {
        unexplained.append(id.rawValue)
      }
      return AuditCoverage(auditedTransitions: audited, jobs: states.count, unauditedJobs: unexplained)
    }
  }
}

/// A signed checkpoint as stored in the database.
public struct StoredCheckpoint: Sendable, Equatable {
  public var size: Int64
  public var root: MerkleTree.Hash
  /// The C2SP signed note.
  public var note: String
  public var createdAt: Int64
  /// Roots of the complete subtrees at `size` (to continue the tree; empty when not loaded).
  public var frontier: [MerkleTree.Hash]
  /// Its place in the chain of checkpoints (nil for one signed before checkpoints were chained).
  public var sequence: Int64?

  public init(size: Int64, root: MerkleTree.Hash, note: String, createdAt: Int64, frontier: [MerkleTree.Hash], sequence: Int64? = nil) {
    self.size = size
    self.root = root
    self.note = note
    self.createdAt = createdAt
    self.frontier = frontier
    self.sequence = sequence
  }
}

/// A signed checkpoint read from a mirror, and the name it has there (a file name).
public struct MirroredCheckpoint: Sendable, Equatable {
  public var name: String
  public var note: String

  public init(name: String, note: String) {
    self.name = name
    self.note = note
  }
}

/// One thing `nova audit verify` found wrong.
public struct AuditProblem: Sendable, Equatable, CustomStringConvertible {
  /// The entry concerned, when one can be named.
  public var seq: Int64?
  public var message: String
  public var description: String { message }
}

/// The outcome of verifying the whole log.
public struct AuditVerification: Sendable {
  public var entries: Int64 = 0
  /// Signed roots (stored, given or mirrored) recomputed from the entries and found equal.
  public var checkpointsChecked = 0
  /// Checkpoints read from a mirror.
  public var mirroredChecked = 0
  /// RFC 6962 consistency proofs that held (the latest mirrored checkpoint to the log now).
  public var consistencyProofs = 0
  /// The log has entries but no signed checkpoint anchors them (nothing to check them against).
  public var unanchored = false
  /// What did not match, first found first (at most 100 kept).
  public var problems: [AuditProblem] = []
  public var problemCount = 0
  public var root: MerkleTree.Hash = MerkleTree.emptyRoot
  public var passed: Bool { problemCount == 0 && problems.isEmpty }

  mutating func add(_ problem: AuditProblem) {
    problemCount += 1
    if problems.count < 100 { problems.append(problem) }
  }
}

/// An entry, the tree it is in, and the audit path that links them.
public struct InclusionProof: Sendable {
  public var entry: AuditEntry
  public var treeSize: Int64
  public var leafHash: MerkleTree.Hash
  public var path: [MerkleTree.Hash]
  public var root: MerkleTree.Hash
  /// The signed checkpoint of `treeSize`, when one is stored.
  public var checkpoint: String?

  /// True when the path leads from the entry's recomputed leaf hash to the root.
  public var isValid: Bool {
    MerkleTree.verifyInclusion(
      index: Int(entry.seq - 1), size: Int(treeSize), leafHash: entry.leafHash, proof: path, root: root)
  }
}

/// Two tree heads and the hashes that prove the older is a prefix of the newer.
public struct ConsistencyProof: Sendable {
  public var oldSize: Int64
  public var newSize: Int64
  public var oldRoot: MerkleTree.Hash
  public var newRoot: MerkleTree.Hash
  public var path: [MerkleTree.Hash]
  public var oldCheckpoint: String?
  public var newCheckpoint: String?

  /// True when the path proves consistency of the two roots.
  public var isValid: Bool {
    MerkleTree.verifyConsistency(
      oldSize: Int(oldSize), newSize: Int(newSize), oldRoot: oldRoot, newRoot: newRoot, proof: path)
  }
}

/// How much of the job activity the audit log accounts for.
public struct AuditCoverage: Sendable, Equatable {
  public var auditedTransitions: Int
  public var jobs: Int
  /// Jobs whose current state no audit entry explains (each hides at least one transition).
  public var unauditedJobs: [String]

  /// Audited transitions over all of them (1 when there are none).
  public var ratio: Double {
    let total = auditedTransitions + unauditedJobs.count
    return total == 0 ? 1 : Double(auditedTransitions) / Double(total)
  }
}
