import Foundation
import GRDB
import NovaCore
import NovaDatabase
import NovaQueue

/// The audit log's side of the queue's transactions: its tables, and the entries that job
/// transitions and other events append in the transaction that makes the change.
public struct AuditJournal: JobTransitionJournal {
  public init() {}

  public func prepare(_ database: NovaDatabase) throws {
    try Self.prepare(database)
  }

  /// Creates the audit and token tables in `database` (once).
  static func prepare(_ database: NovaDatabase) throws {
    try database.migrate("audit") { registerSchema(in: &$0) }
  }

  /// Adds the audit and token tables to a Nova database's migrations.
  static func registerSchema(in migrator: inout DatabaseMigrator) {
    migrator.registerMigration("v2-audit") { db in
      try db.execute(
        sql: """
          CREATE TABLE nova_audit (
            seq INTEGER PRIMARY KEY,
            time INTEGER NOT NULL,
            actor TEXT NOT NULL,
            event TEXT NOT NULL,
            subject TEXT,
            payload TEXT NOT NULL,
            hash BLOB NOT NULL
          );
          CREATE INDEX nova_audit_subject ON nova_audit(subject, seq) WHERE subject IS NOT NULL;
          -- Append-only: Nova never changes or removes an entry. (Whoever can write the file can
          -- drop these triggers; the hashes and signed checkpoints are what catch that.)
          CREATE TRIGGER nova_audit_no_update BEFORE UPDATE ON nova_audit
            BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
          CREATE TRIGGER nova_audit_no_delete BEFORE DELETE ON nova_audit
            BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
          CREATE TABLE nova_audit_checkpoints (
            size INTEGER PRIMARY KEY,
            root BLOB NOT NULL,
            frontier BLOB NOT NULL,
            note TEXT NOT NULL,
            created_at INTEGER NOT NULL
          );
          """)
    }
    TokenStore.registerSchema(in: &migrator)
    migrator.registerMigration("v4-audit-import") { db in
      // How far the records of each external source (a Redis queue's stream) were moved in.
      try db.execute(sql: "CREATE TABLE nova_audit_import (source TEXT PRIMARY KEY NOT NULL, cursor TEXT NOT NULL)")
    }
    migrator.registerMigration("v6-audit-checkpoint-chain") { db in
      // Checkpoints are chained (their notes carry the sequence and the predecessor's hash) and
      // append-only like the entries; the column lets the latest be found by its sequence.
      try db.execute(
        sql: """
          ALTER TABLE nova_audit_checkpoints ADD COLUMN sequence INTEGER;
          CREATE UNIQUE INDEX nova_audit_checkpoints_sequence ON nova_audit_checkpoints(sequence) WHERE sequence IS NOT NULL;
          CREATE TRIGGER nova_audit_checkpoints_no_update BEFORE UPDATE ON nova_audit_checkpoints
            BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
          CREATE TRIGGER nova_audit_checkpoints_no_delete BEFORE DELETE ON nova_audit_checkpoints
            BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
          """)
    }
    ConsoleSessionStore.registerSchema(in: &migrator)
    migrator.registerMigration("v10-audit-tiles") { db in
      // The hash of every complete run of 256 leaves (see `AuditLog.updateTiles`): inclusion
      // proofs read a few thousand of these instead of every leaf of the log.
      try db.execute(sql: "CREATE TABLE nova_audit_tiles (idx INTEGER PRIMARY KEY, hash BLOB NOT NULL)")
    }
  }

  public func record(_ transitions: [JobTransition], actor: String, in transaction: DatabaseTransaction) throws {
    if transitions.isEmpty { return }
    var appender = try Appender(transaction.db)
    for transition in transitions { try appender.append(transition, actor: actor) }
  }

  public func record(submissions: [JournalSubmission], in transaction: DatabaseTransaction) throws {
    if submissions.isEmpty { return }
    var appender = try Appender(transaction.db)
    for submission in submissions {
      for event in submission.held { try appender.append(event) }
      for transition in submission.transitions { try appender.append(transition, actor: submission.actor) }
    }
  }

  /// Appends entries after the last one, in the open transaction. One buffer for every entry's
  /// canonical bytes, the payload column a slice of them: on the single writer, no entry,
  /// payload string or hash array is made per entry, and the last sequence number and the
  /// statement are looked up once per batch.
  private struct Appender {
    private var seq: Int64
    private let insert: RawStatement
    private var line: [UInt8] = []

    init(_ db: Database) throws {
      seq = try AuditJournal.lastSequence(db)
      insert = RawStatement(try db.cachedStatement(sql: AuditJournal.insertSQL), in: db)
      line.reserveCapacity(512)
    }

    /// An event an action held back: its payload is canonical JSON already.
    mutating func append(_ event: HeldAuditEvents.Event) throws {
      try append(actor: event.actor, event: event.event, subject: event.subject, time: event.time) { $0 += event.payload.utf8 }
    }

    mutating func append(_ transition: JobTransition, actor: String) throws {
      try append(actor: actor, event: AuditJournal.eventNames[transition.event]!, subject: transition.job.rawValue, time: transition.time) {
        AuditJournal.writePayload(of: transition, into: &$0)
      }
    }

    /// Appends an entry whose payload (canonical JSON) `payload` writes; returns its sequence
    /// number.
    @discardableResult
    mutating func append(
      actor: String, event: String, subject: String?, time: Int64, payload: (inout [UInt8]) -> Void
    ) throws -> Int64 {
      seq += 1
      line.removeAll(keepingCapacity: true)
      let range = AuditEntry.writeCanonical(
        into: &line, actor: actor, event: event, seq: seq, subject: subject, time: time, payload: payload)
      insert.bind(1, seq)
      insert.bind(2, time)
      insert.bind(3, actor)
      insert.bind(4, event)
      insert.bind(5, subject)
      insert.bind(6, text: line[range])
      MerkleTree.withLeafHash(line[...]) { insert.bind(7, blob: $0) }
      _ = try insert.run()
      return seq
    }
  }

  /// Writes audit events an action held back (`AuditContext.held`) inside the open transaction.
  public func record(held events: [HeldAuditEvents.Event], in transaction: DatabaseTransaction) throws {
    if events.isEmpty { return }
    var appender = try Appender(transaction.db)
    for event in events { try appender.append(event) }
  }

  /// Appends entries for events other than job transitions inside the open transaction `db`;
  /// returns them with their sequence numbers.
  @discardableResult
  static func append(
    _ events: [(time: Int64, actor: String, event: String, subject: String?, payload: String)], in db: Database
  ) throws -> [AuditEntry] {
    if events.isEmpty { return [] }
    var appender = try Appender(db)
    var entries: [AuditEntry] = []
    entries.reserveCapacity(events.count)
    for event in events {
      let seq = try appender.append(actor: event.actor, event: event.event, subject: event.subject, time: event.time) {
        $0 += event.payload.utf8
      }
      entries.append(
        AuditEntry(seq: seq, time: event.time, actor: event.actor, event: event.event, subject: event.subject, payload: event.payload))
    }
    return entries
  }

  static func lastSequence(_ db: Database) throws -> Int64 {
    // Read for every batch of entries the writer appends: around GRDB's row machinery.
    let read = RawStatement(try db.cachedStatement(sql: "SELECT COALESCE(MAX(seq), 0) FROM nova_audit"), in: db)
    defer { read.finish() }
    return try read.step() ? read.int64(0) : 0
  }

  private static let insertSQL =
    "INSERT INTO nova_audit (seq, time, actor, event, subject, payload, hash) VALUES (?, ?, ?, ?, ?, ?, ?)"

  private static let eventNames = Dictionary(
    uniqueKeysWithValues: JobTransition.Event.allCases.map { ($0, "job.\($0.rawValue)") })

  /// Appends a transition's payload to `out`: `{"attempt":…,"detail":…,"from":…,"kind":…,
  /// "queue":…,"to":…}` in canonical form, built directly (it is written for every transition).
  static func writePayload(of transition: JobTransition, into out: inout [UInt8]) {
    out += Keys.attempt
    AuditEntry.writeDecimal(Int64(transition.attempt), into: &out)
    if let detail = transition.detail {
      out += Keys.detail
      CanonicalJSON.writeString(detail.utf8.count <= 512 ? detail : String(detail.prefix(512)), into: &out)
    }
    out += Keys.from
    if let from = transition.from {
      CanonicalJSON.writeString(from.rawValue, into: &out)
    } else {
      out += Keys.null
    }
    out += Keys.kind
    CanonicalJSON.writeString(transition.kind, into: &out)
    out += Keys.queue
    CanonicalJSON.writeString(transition.queue, into: &out)
    out += Keys.to
    CanonicalJSON.writeString(transition.to.rawValue, into: &out)
    out.append(UInt8(ascii: "}"))
  }

  private enum Keys {
    static let attempt = Array(#"{"attempt":"#.utf8)
    static let detail = Array(#","detail":"#.utf8)
    static let from = Array(#","from":"#.utf8)
    static let kind = Array(#","kind":"#.utf8)
    static let queue = Array(#","queue":"#.utf8)
    static let to = Array(#","to":"#.utf8)
    static let null = Array("null".utf8)
  }
}
