import Foundation
import GRDB
import Logging
import NovaCore
import NovaDatabase

/// One operational event in the orchestration journal.
public struct JournalEntry: Sendable, Equatable, Codable {
  public var seq: Int64
  /// Milliseconds since 1970.
  public var time: Int64
  /// What happened: `alerts.dry_run`, `alert.fired`, `alert.escalated`, `deploy.finished`, ...
  public var kind: String
  /// What it concerns (an alert id, a service), if anything.
  public var subject: String?
  public var actor: String
  public var payload: JSONValue

  public init(seq: Int64, time: Int64, kind: String, subject: String?, actor: String, payload: JSONValue) {
    self.seq = seq
    self.time = time
    self.kind = kind
    self.subject = subject
    self.actor = actor
    self.payload = payload
  }
}

/// Nova's chronological record of operational events (alert dry-runs, firings, escalations,
/// deployments, baseline breaches), in Nova's database. The audit log records who was allowed to
/// do what; the journal records what happened to the fleet, for people on call and reviewers.
public final class OrchestrationJournal: Sendable {
  private let database: NovaDatabase

  /// The journal in `database`; creates its table on first use.
  public init(database: NovaDatabase) throws {
    self.database = database
    try database.migrate("journal") { Self.registerSchema(in: &$0) }
  }

  /// The journal's table, for migrators of other stores that write to it in their transactions.
  package static func registerSchema(in migrator: inout DatabaseMigrator) {
    migrator.registerMigration("v6-journal") { db in
      try db.execute(
        sql: """
          CREATE TABLE IF NOT EXISTS nova_journal (
            seq INTEGER PRIMARY KEY,
            time INTEGER NOT NULL,
            kind TEXT NOT NULL,
            subject TEXT,
            actor TEXT NOT NULL,
            payload TEXT NOT NULL
          );
          CREATE INDEX IF NOT EXISTS nova_journal_time ON nova_journal(time);
          """)
    }
  }

  /// Appends one entry.
  @discardableResult
  public func append(
    kind: String, subject: String? = nil, payload: JSONValue, actor: String = AuditContext.actor, time: Date = Date()
  ) async throws -> JournalEntry {
    try await database.write { db in
      try Self.append(kind: kind, subject: subject, payload: payload, actor: actor, time: time.millisecondsSince1970, in: db)
    }
  }

  /// Appends one entry, or logs why it could not: for notes (a reload, a dry-run) that must not
  /// fail the work they describe, yet are never silently skipped.
  public func note(kind: String, subject: String?, payload: JSONValue, actor: String, logger: Logger) async {
    do {
      try await append(kind: kind, subject: subject, payload: payload, actor: actor)
    } catch {
      logger.error("could not journal \(kind)", metadata: ["error": "\(error)"])
    }
  }

  /// Appends one entry inside the open transaction `db`.
  @discardableResult
  public static func append(
    kind: String, subject: String?, payload: JSONValue, actor: String, time: Int64, in db: Database
  ) throws -> JournalEntry {
    let text = try CanonicalJSON.string(payload)
    try db.execute(
      sql: "INSERT INTO nova_journal (time, kind, subject, actor, payload) VALUES (?, ?, ?, ?, ?)",
      arguments: [time, kind, subject, actor, text])
    return JournalEntry(seq: db.lastInsertedRowID, time: time, kind: kind, subject: subject, actor: actor, payload: payload)
  }

  /// Entries from `since` (ms), oldest first; only `kinds` (exact, or a prefix ending in `.`
  /// such as `alert.`) when given; at most `limit`, the newest ones when there are more.
  public func entries(since: Int64 = 0, kinds: [String] = [], limit: Int = 1000) async throws -> [JournalEntry] {
    try await database.read { db in
      var sql = "SELECT seq, time, kind, subject, actor, payload FROM nova_journal WHERE time >= ?"
      var arguments: [any DatabaseValueConvertible] = [since]
      if !kinds.isEmpty {
        sql += " AND (" + kinds.map { $0.hasSuffix(".") ? "kind LIKE ? ESCAPE '\\'" : "kind = ?" }.joined(separator: " OR ") + ")"
        arguments += kinds.map { $0.hasSuffix(".") ? Self.likePrefix($0) : $0 }
      }
      sql += " ORDER BY seq DESC LIMIT ?"
      arguments.append(limit)
      let rows = try Row.fetchAll(db, sql: sql, arguments: StatementArguments(arguments))
      return try rows.reversed().map { row in
        let text: String = row[5]
        return JournalEntry(
          seq: row[0], time: row[1], kind: row[2], subject: row[3], actor: row[4], payload: try JSONValue.parse(Data(text.utf8)))
      }
    }
  }

  private static func likePrefix(_ prefix: String) -> String {
    prefix.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "%", with: "\\%")
      .replacingOccurrences(of: "_", with: "\\_") + "%"
  }
}
