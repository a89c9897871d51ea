import Foundation
import GRDB
import NovaCore
import NovaDatabase
import NovaMonitoring

/// A request waiting in the outbox (or sent, or given up).
public struct Delivery: Sendable, Equatable {
  public enum Status: String, Sendable, Codable { case pending, sent, failed }

  public var id: Int64
  public var request: OutboundRequest
  public var attempts: Int
  public var status: Status
  public var createdAt: Int64
  public var nextAttemptAt: Int64
  public var lastError: String?
}

/// Alerts, their notification outbox and journal entries in Nova's database. Every change is
/// one transaction that reads the open alerts, applies a change and stores the alerts with the
/// requests it causes, so a restart neither loses a firing alert nor sends its page twice, and a
/// CLI acknowledgement and the server's evaluation never overwrite each other.
public final class AlertStore: Sendable {
  public let database: NovaDatabase

  public init(database: NovaDatabase) throws {
    self.database = database
    try database.migrate("alert") { migrator in
      OrchestrationJournal.registerSchema(in: &migrator)
      migrator.registerMigration("v7-alerts") { db in
        try db.execute(
          sql: """
            CREATE TABLE nova_alerts (
              id INTEGER PRIMARY KEY,
              fingerprint TEXT NOT NULL,
              rule TEXT NOT NULL,
              state TEXT NOT NULL,
              is_open INTEGER NOT NULL,
              updated_at INTEGER NOT NULL,
              body TEXT NOT NULL
            );
            CREATE UNIQUE INDEX nova_alerts_open ON nova_alerts(fingerprint) WHERE is_open = 1;
            CREATE INDEX nova_alerts_updated ON nova_alerts(updated_at);
            CREATE TABLE nova_alert_outbox (
              id INTEGER PRIMARY KEY,
              receiver TEXT NOT NULL,
              kind TEXT NOT NULL,
              action TEXT NOT NULL,
              url TEXT NOT NULL,
              body TEXT NOT NULL,
              alert_ids TEXT NOT NULL,
              created_at INTEGER NOT NULL,
              next_attempt_at INTEGER NOT NULL,
              attempts INTEGER NOT NULL DEFAULT 0,
              status TEXT NOT NULL DEFAULT 'pending',
              last_error TEXT
            );
            CREATE INDEX nova_alert_outbox_due ON nova_alert_outbox(next_attempt_at) WHERE status = 'pending';
            """)
      }
      migrator.registerMigration("v8-webhook-events") { db in
        // PagerDuty webhook events already acted on, kept while a replay could still be fresh.
        try db.execute(sql: "CREATE TABLE nova_webhook_events (id TEXT PRIMARY KEY NOT NULL, received_at INTEGER NOT NULL)")
      }
    }
  }

  /// Remembers webhook event `id` (received at `now`, ms); false when it was seen before. Events
  /// older than `forgetBefore` are forgotten (they are refused as stale anyway).
  public func admitWebhookEvent(id: String, now: Int64, forgetBefore: Int64) async throws -> Bool {
    try await database.write { db in
      try db.execute(sql: "DELETE FROM nova_webhook_events WHERE received_at < ?", arguments: [forgetBefore])
      try db.execute(sql: "INSERT OR IGNORE INTO nova_webhook_events (id, received_at) VALUES (?, ?)", arguments: [id, now])
      return db.changesCount == 1
    }
  }

  private static let encoder: JSONEncoder = {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    return encoder
  }()

  private static let decoder = JSONDecoder()

  /// The alert of a `SELECT id, body` row.
  private static func alert(_ row: Row) throws -> AlertInstance {
    let body: String = row[1]
    var alert = try decoder.decode(AlertInstance.self, from: Data(body.utf8))
    alert.id = row[0]
    return alert
  }

  static func openAlerts(_ db: Database) throws -> [String: AlertInstance] {
    var open: [String: AlertInstance] = [:]
    for row in try Row.fetchAll(db.cachedStatement(sql: "SELECT id, body FROM nova_alerts WHERE is_open = 1")) {
      let alert = try alert(row)
      open[alert.fingerprint] = alert
    }
    return open
  }

  /// The open alerts (pending, firing, or resolved by hand before their condition cleared), by fingerprint.
  public func openAlerts() async throws -> [String: AlertInstance] {
    try await database.read { db in try Self.openAlerts(db) }
  }

  /// One alert by id.
  public func alert(id: Int64) async throws -> AlertInstance? {
    try await database.read { db in
      try Row.fetchOne(db, sql: "SELECT id, body FROM nova_alerts WHERE id = ?", arguments: [id]).map(Self.alert)
    }
  }

  /// Alerts, newest first: `states` only when given, updated at or after `since`.
  public func list(states: [AlertState] = [], since: Int64 = 0, limit: Int = 100) async throws -> [AlertInstance] {
    try await database.read { db in
      var sql = "SELECT id, body FROM nova_alerts WHERE updated_at >= ?"
      var arguments: [any DatabaseValueConvertible] = [since]
      if !states.isEmpty {
        sql += " AND state IN (" + states.map { _ in "?" }.joined(separator: ",") + ")"
        arguments += states.map(\.rawValue)
      }
      sql += " ORDER BY id DESC LIMIT ?"
      arguments.append(limit)
      return try Row.fetchAll(db, sql: sql, arguments: StatementArguments(arguments)).map(Self.alert)
    }
  }

  /// In one transaction: reads the open alerts, lets `change` decide, stores the alerts it
  /// changed, the requests their notifications make and the journal entries. Returns both.
  public func apply(
    now: Int64, renderer: NotificationRenderer, actor: String = AuditContext.actor,
    _ change: @escaping @Sendable ([String: AlertInstance]) throws -> EvaluationResult
  ) async throws -> (result: EvaluationResult, requests: [OutboundRequest]) {
    try await database.write { db in
      var result = try change(try Self.openAlerts(db))
      var ids: [String: Int64] = [:]
      for index in result.changed.indices {
        let alert = result.changed[index]
        let body = String(decoding: try Self.encoder.encode(alert), as: UTF8.self)
        if alert.id == 0 {
          try db.execute(
            sql: "INSERT INTO nova_alerts (fingerprint, rule, state, is_open, updated_at, body) VALUES (?, ?, ?, ?, ?, ?)",
            arguments: [alert.fingerprint, alert.rule, alert.state.rawValue, alert.isOpen, now, body])
          result.changed[index].id = db.lastInsertedRowID
        } else {
          try db.execute(
            sql: "UPDATE nova_alerts SET state = ?, is_open = ?, updated_at = ?, body = ? WHERE id = ?",
            arguments: [alert.state.rawValue, alert.isOpen, now, body, alert.id])
        }
        ids[alert.fingerprint] = result.changed[index].id
      }
      for alert in result.dropped where alert.id != 0 {
        try db.execute(sql: "DELETE FROM nova_alerts WHERE id = ? AND state = 'pending'", arguments: [alert.id])
      }
      for index in result.notifications.indices where result.notifications[index].alert.id == 0 {
        result.notifications[index].alert.id = ids[result.notifications[index].alert.fingerprint] ?? 0
      }
      let requests = renderer.requests(for: result.notifications, now: now)
      for request in requests {
        try db.execute(
          sql: """
            INSERT INTO nova_alert_outbox (receiver, kind, action, url, body, alert_ids, created_at, next_attempt_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            """,
          arguments: [
            request.receiver, request.kind.rawValue, request.action.rawValue, request.url, request.body,
            request.alertIDs.map(String.init).joined(separator: ","), now, now,
          ])
      }
      for index in result.journal.indices {
        var record = result.journal[index]
        if case .object(let payload) = record.payload, case .string(let fingerprint)? = payload["fingerprint"], let id = ids[fingerprint] {
          record.subject = String(id)
        }
        result.journal[index] = record
        try OrchestrationJournal.append(kind: record.kind, subject: record.subject, payload: record.payload, actor: actor, time: now, in: db)
      }
      return (result, requests)
    }
  }

  // MARK: - Outbox

  private static let deliveryColumns =
    "SELECT id, receiver, kind, action, url, body, alert_ids, attempts, status, created_at, next_attempt_at, last_error FROM nova_alert_outbox"

  /// Pending deliveries due at `now`, oldest first.
  public func dueDeliveries(now: Int64, limit: Int = 100) async throws -> [Delivery] {
    try await database.read { db in
      try Row.fetchAll(
        db,
        sql: Self.deliveryColumns + " WHERE status = 'pending' AND next_attempt_at <= ? ORDER BY id LIMIT ?",
        arguments: [now, limit]
      ).map(Self.delivery)
    }
  }

  /// Deliveries, newest first (for listings and tests).
  public func deliveries(limit: Int = 100) async throws -> [Delivery] {
    try await database.read { db in
      try Row.fetchAll(
        db,
        sql: Self.deliveryColumns + " ORDER BY id DESC LIMIT ?",
        arguments: [limit]
      ).map(Self.delivery)
    }
  }

  private static func delivery(_ row: Row) throws -> Delivery {
    let ids: String = row[6]
    let kindText: String = row[2]
    let actionText: String = row[3]
    let statusText: String = row[8]
    guard let kind = ReceiverConfig.Kind(rawValue: kindText), let action = AlertNotification.Action(rawValue: actionText),
      let status = Delivery.Status(rawValue: statusText)
    else { throw NovaError.storage("outbox row \(row[0] as Int64) is not readable") }
    return Delivery(
      id: row[0],
      request: OutboundRequest(
        receiver: row[1], kind: kind, action: action, url: row[4], body: row[5], alertIDs: ids.split(separator: ",").compactMap { Int64($0) }),
      attempts: row[7], status: status, createdAt: row[9], nextAttemptAt: row[10], lastError: row[11])
  }

  /// Records the outcome of one attempt: sent, retry at `retryAt`, or given up.
  public func record(_ id: Int64, status: Delivery.Status, retryAt: Int64? = nil, error: String? = nil) async throws {
    try await database.write { db in
      try db.execute(
        sql: """
          UPDATE nova_alert_outbox SET attempts = attempts + 1, status = ?, next_attempt_at = COALESCE(?, next_attempt_at), last_error = ?
          WHERE id = ?
          """,
        arguments: [status.rawValue, retryAt, error, id])
    }
  }

  /// Deliveries waiting to be sent.
  public func pendingDeliveryCount() async throws -> Int {
    try await database.read { db in
      try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM nova_alert_outbox WHERE status = 'pending'") ?? 0
    }
  }
}
