import Crypto
import Foundation
import GRDB
import NovaCore
import NovaDatabase

/// A person signed in to the console with an API token: the session's role is its token's.
public struct ConsoleSession: Sendable, Equatable {
  /// A short public handle of the session (the first bytes of its id's hash), for the audit log.
  public var handle: String
  public var token: APIToken
  /// The value every state-changing form of this session must carry.
  public var csrf: String
  public var createdAt: Date
  public var lastSeen: Date
  /// The session ends at this time however active it is.
  public var expiresAt: Date
}

/// Console sessions in the security database: only SHA-256 of each session id is stored, so a
/// copy of the database opens no session. A session ends at sign-out, after its absolute or idle
/// lifetime, or when its token is revoked (in the revocation's transaction). Sign-in and sign-out
/// are audited.
public final class ConsoleSessionStore: Sendable {
  /// How long sessions live.
  public struct Lifetime: Sendable, Equatable {
    /// From sign-in, however active.
    public var absolute: Duration
    /// Since the last request.
    public var idle: Duration

    public init(absolute: Duration = .seconds(12 * 3600), idle: Duration = .seconds(30 * 60)) {
      self.absolute = absolute
      self.idle = idle
    }
  }

  public let audit: AuditLog
  public let lifetime: Lifetime
  private var database: NovaDatabase { audit.database }
  /// A session's last-seen time is written at most this often (not on every page view).
  static let touchInterval: Int64 = 30_000

  public init(audit: AuditLog, lifetime: Lifetime = Lifetime()) {
    self.audit = audit
    self.lifetime = lifetime
  }

  static func registerSchema(in migrator: inout DatabaseMigrator) {
    migrator.registerMigration("v9-console-sessions") { db in
      try db.execute(
        sql: """
          CREATE TABLE nova_console_sessions (
            id_sha256 BLOB PRIMARY KEY NOT NULL,
            token_id TEXT NOT NULL,
            csrf TEXT NOT NULL,
            source TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            last_seen INTEGER NOT NULL,
            expires_at INTEGER NOT NULL
          );
          CREATE INDEX nova_console_sessions_token ON nova_console_sessions(token_id);
          """)
    }
  }

  /// Starts a session for `token` (already authenticated); returns the cookie value, shown once.
  public func start(for token: APIToken, source: String, now: Date = Date()) async throws -> (cookie: String, session: ConsoleSession) {
    guard token.role != .worker else {
      throw NovaError.forbidden("token '\(token.name)' has role worker, which cannot sign in to the console")
    }
    let cookie = Self.random(bytes: 32)
    let csrf = Self.random(bytes: 24)
    let digest = Self.digest(cookie)
    let millis = now.millisecondsSince1970
    let expires = millis + Int64(lifetime.absolute.seconds * 1000)
    let handle = Self.handle(digest)
    let payload = try CanonicalJSON.string(.object(["session": .string(handle), "source": .string(source), "role": .string(token.role.rawValue)]))
    try await database.write { db in
      // Sessions long over are swept here, so the table never grows with old ones.
      try db.execute(sql: "DELETE FROM nova_console_sessions WHERE expires_at <= ?", arguments: [millis])
      try db.execute(
        sql: "INSERT INTO nova_console_sessions (id_sha256, token_id, csrf, source, created_at, last_seen, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        arguments: [digest, token.id, csrf, source, millis, millis, expires])
      try AuditJournal.append([(millis, "token:\(token.name)", "console.signed_in", token.name, payload)], in: db)
    }
    let started = Date(millisecondsSince1970: millis)
    let session = ConsoleSession(
      handle: handle, token: token, csrf: csrf, createdAt: started, lastSeen: started, expiresAt: Date(millisecondsSince1970: expires))
    return (cookie, session)
  }

  /// The live session of a cookie value, or nil (unknown, expired, idle too long, or its token
  /// revoked); a live session's last-seen time moves on.
  public func session(cookie: String, now: Date = Date()) async throws -> ConsoleSession? {
    guard !cookie.isEmpty, cookie.utf8.count <= 128 else { return nil }
    let digest = Self.digest(cookie)
    let millis = now.millisecondsSince1970
    let idle = Int64(lifetime.idle.seconds * 1000)
    let found = try await database.read { db -> (ConsoleSession, Int64)? in
      try Row.fetchOne(
        db,
        sql: """
          SELECT s.csrf, s.created_at, s.last_seen, s.expires_at, t.id, t.name, t.role, t.created_at, t.revoked_at
          FROM nova_console_sessions s JOIN nova_tokens t ON t.id = s.token_id WHERE s.id_sha256 = ?
          """, arguments: [digest]
      ).map { row in
        let token = APIToken(
          id: row[4], name: row[5], role: Role(rawValue: row[6]) ?? .viewer, createdAt: Date(millisecondsSince1970: row[7]),
          revokedAt: (row[8] as Int64?).map { Date(millisecondsSince1970: $0) })
        let lastSeen: Int64 = row[2]
        return (
          ConsoleSession(
            handle: Self.handle(digest), token: token, csrf: row[0], createdAt: Date(millisecondsSince1970: row[1]),
            lastSeen: Date(millisecondsSince1970: lastSeen), expiresAt: Date(millisecondsSince1970: row[3])),
          lastSeen
        )
      }
    }
    guard var (session, lastSeen) = found else { return nil }
    if session.token.revokedAt != nil || session.token.role == .worker || session.expiresAt.millisecondsSince1970 <= millis
      || lastSeen + idle <= millis
    {
      try await database.write { db in try db.execute(sql: "DELETE FROM nova_console_sessions WHERE id_sha256 = ?", arguments: [digest]) }
      return nil
    }
    if millis - lastSeen >= Self.touchInterval {
      try await database.write { db in
        try db.execute(sql: "UPDATE nova_console_sessions SET last_seen = ? WHERE id_sha256 = ?", arguments: [millis, digest])
      }
      lastSeen = millis
      session.lastSeen = Date(millisecondsSince1970: millis)
    }
    return session
  }

  /// Ends the session of `cookie` (sign-out); audited when it was live.
  public func end(cookie: String, now: Date = Date()) async throws {
    let digest = Self.digest(cookie)
    let millis = now.millisecondsSince1970
    let payload = try CanonicalJSON.string(.object(["session": .string(Self.handle(digest))]))
    try await database.write { db in
      guard
        let name = try String.fetchOne(
          db, sql: "SELECT t.name FROM nova_console_sessions s JOIN nova_tokens t ON t.id = s.token_id WHERE s.id_sha256 = ?",
          arguments: [digest])
      else { return }
      try db.execute(sql: "DELETE FROM nova_console_sessions WHERE id_sha256 = ?", arguments: [digest])
      try AuditJournal.append([(millis, "token:\(name)", "console.signed_out", name, payload)], in: db)
    }
  }

  /// Sessions open now (for tests and the workers page of an admin).
  public func liveCount(now: Date = Date()) async throws -> Int {
    let millis = now.millisecondsSince1970
    let idle = Int64(lifetime.idle.seconds * 1000)
    return try await database.read { db in
      try Int.fetchOne(
        db,
        sql: """
          SELECT COUNT(*) FROM nova_console_sessions s JOIN nova_tokens t ON t.id = s.token_id
          WHERE s.expires_at > ? AND s.last_seen + ? > ? AND t.revoked_at IS NULL
          """, arguments: [millis, idle, millis]) ?? 0
    }
  }

  /// Ends every session of the token `tokenID` inside a revocation's transaction.
  static func endSessions(ofToken tokenID: String, in db: Database) throws {
    try db.execute(sql: "DELETE FROM nova_console_sessions WHERE token_id = ?", arguments: [tokenID])
  }

  static func digest(_ cookie: String) -> Data { Data(SHA256.hash(data: Data(cookie.utf8))) }

  static func handle(_ digest: Data) -> String { digest.prefix(6).map { String(format: "%02x", $0) }.joined() }

  /// URL-safe random text of `bytes` random bytes.
  public static func random(bytes: Int) -> String {
    var generator = SystemRandomNumberGenerator()
    let raw = (0..<bytes).map { _ in UInt8.random(in: 0...255, using: &generator) }
    return Data(raw).base64EncodedString()
      .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
      .replacingOccurrences(of: "=", with: "")
  }
}
