import Crypto
import Foundation
import GRDB
import NovaCore
import NovaDatabase
import NovaQueue
import Synchronization

/// What a caller may do. Viewer, operator and admin each allow more than the one before; a
/// worker stands apart: it claims jobs and reports on them, and reads nothing else.
public enum Role: String, Sendable, CaseIterable, Codable {
  /// Reads jobs, stats, metrics and the audit log.
  case viewer
  /// Also submits, cancels and retries jobs and acknowledges alerts.
  case `operator`
  /// Also manages tokens and reloads policy; may also work as a worker.
  case admin
  /// Claims jobs over HTTP and reports their outcome (heartbeat, complete, fail, release); it
  /// sees the payloads of the jobs it claimed, not others'.
  case worker

  /// Whether the role allows `action`.
  public func allows(_ action: APIAction) -> Bool { action.roles.contains(self) }

  /// The roles as a sentence lists them, for error messages.
  public static var names: String { "viewer, operator, admin or worker" }
}

/// An API action that a role must allow.
public enum APIAction: String, Sendable, CaseIterable {
  case read, submit, cancel, retry, acknowledge, resolve
  case recordKPI = "kpi.record"
  case manageTokens = "tokens.manage"
  case reloadPolicy = "policy.reload"
  case exportEvidence = "evidence.export"
  /// Take jobs from queues (`POST /v1/workers/claim`).
  case claim
  /// Heartbeat, complete, fail or release a claimed job.
  case report
  /// Pause, resume or limit a queue (`POST /v1/queues/{queue}/pause|resume|controls`).
  case control

  /// The roles allowed to take the action.
  public var roles: Set<Role> {
    switch self {
    case .read: [.viewer, .operator, .admin]
    case .submit, .cancel, .retry, .acknowledge, .resolve, .recordKPI, .control: [.operator, .admin]
    case .manageTokens, .reloadPolicy, .exportEvidence: [.admin]
    case .claim, .report: [.worker, .admin]
    }
  }

  /// The allowed roles, as an error message names them.
  public var rolesText: String { Role.allCases.filter(roles.contains).map(\.rawValue).joined(separator: " or ") }
}

/// A stored API token (never its secret).
public struct APIToken: Sendable, Equatable, Codable {
  /// The public part of the token, `nova_<id>_<secret>`.
  public var id: String
  public var name: String
  public var role: Role
  public var createdAt: Date
  public var revokedAt: Date?

  enum CodingKeys: String, CodingKey {
    case id, name, role
    case createdAt = "created_at"
    case revokedAt = "revoked_at"
  }

  public init(id: String, name: String, role: Role, createdAt: Date, revokedAt: Date?) {
    self.id = id
    self.name = name
    self.role = role
    self.createdAt = createdAt
    self.revokedAt = revokedAt
  }

  /// Times as RFC 3339 text, as everywhere in Nova's JSON.
  public func encode(to encoder: any Encoder) throws {
    var container = encoder.container(keyedBy: CodingKeys.self)
    try container.encode(id, forKey: .id)
    try container.encode(name, forKey: .name)
    try container.encode(role, forKey: .role)
    try container.encode(AuditTime.string(createdAt.millisecondsSince1970), forKey: .createdAt)
    try container.encode(revokedAt.map { AuditTime.string($0.millisecondsSince1970) }, forKey: .revokedAt)
  }

  public init(from decoder: any Decoder) throws {
    let container = try decoder.container(keyedBy: CodingKeys.self)
    func date(_ key: CodingKeys) throws -> Date? {
      guard let text = try container.decodeIfPresent(String.self, forKey: key) else { return nil }
      guard let millis = AuditTime.parse(text) else {
        throw DecodingError.dataCorruptedError(forKey: key, in: container, debugDescription: "'\(text)' is not an RFC 3339 time")
      }
      return Date(millisecondsSince1970: millis)
    }
    self.init(
      id: try container.decode(String.self, forKey: .id), name: try container.decode(String.self, forKey: .name),
      role: try container.decode(Role.self, forKey: .role), createdAt: try date(.createdAt) ?? Date(timeIntervalSince1970: 0),
      revokedAt: try date(.revokedAt))
  }
}

/// API tokens in the Nova database: only SHA-256 of each secret is stored, compared in constant
/// time; creating and revoking are audited.
public final class TokenStore: Sendable {
  public let audit: AuditLog
  private var database: NovaDatabase { audit.database }
  /// Tokens looked up lately (by id, with their stored digest), kept while no token was created
  /// or revoked by any process and for `recentLifetime` at most: a submission over HTTP then
  /// checks its token without a trip to a database reader and back (3,200 -> 3,700 requests/s).
  private let recent = Mutex(RecentTokens())
  /// The file that `create` and `revoke` touch, in every process, so that the others drop
  /// what they keep.
  private let changeMarker: WatchedFile

  private struct RecentTokens {
    var stamp = FileStamp.absent
    var tokens: [String: (token: APIToken, digest: [UInt8], at: ContinuousClock.Instant)] = [:]
  }

  /// The longest a looked-up token is kept.
  static let recentLifetime: Duration = .seconds(5)
  /// The most tokens kept (only existing tokens are: presenting unknown ids fills nothing).
  static let recentLimit = 1000

  public init(audit: AuditLog) {
    self.audit = audit
    changeMarker = WatchedFile(path: audit.database.path + ".tokens-changed")
  }

  /// Tells every process that tokens changed (called before the change and after it commits:
  /// a lookup between the two keeps what it read under the first stamp only).
  private func markChanged() {
    recent.withLock { $0 = RecentTokens() }
    let fd = open(changeMarker.path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
    guard fd >= 0 else { return }
    // Appending changes the size as well as the time, so that two changes within the file
    // system's time resolution still differ.
    _ = withUnsafeBytes(of: UInt8(0x2E)) { write(fd, $0.baseAddress, 1) }
    close(fd)
  }

  static func registerSchema(in migrator: inout DatabaseMigrator) {
    migrator.registerMigration("v3-tokens") { db in
      try db.execute(
        sql: """
          CREATE TABLE nova_tokens (
            id TEXT PRIMARY KEY NOT NULL,
            name TEXT NOT NULL UNIQUE,
            role TEXT NOT NULL,
            secret_sha256 BLOB NOT NULL,
            created_at INTEGER NOT NULL,
            revoked_at INTEGER
          );
          """)
    }
  }

  /// Token names: what `--name` accepts.
  public static func validate(name: String) throws {
    guard !name.isEmpty, name.count <= 64,
      name.unicodeScalars.allSatisfy({ CharacterSet.alphanumerics.contains($0) || "-_.@".unicodeScalars.contains($0) })
    else {
      throw NovaError.invalidInput(field: "name", message: "token name '\(name)' must be 1 to 64 letters, digits or - _ . @")
    }
  }

  /// Creates a token; the returned secret string is shown once and never stored.
  public func create(name: String, role: Role, now: Date = Date()) async throws -> (token: String, record: APIToken) {
    try Self.validate(name: name)
    let id = Self.randomString(bytes: 6)
    let secret = Self.randomString(bytes: 32)
    let digest = Data(SHA256.hash(data: Data(secret.utf8)))
    let millis = now.millisecondsSince1970
    let actor = AuditContext.actor
    let payload = try CanonicalJSON.string(.object(["id": .string(id), "role": .string(role.rawValue)]))
    markChanged()
    defer { markChanged() }
    try await database.write { db in
      if try Bool.fetchOne(db, sql: "SELECT 1 FROM nova_tokens WHERE name = ?", arguments: [name]) == true {
        throw NovaError.invalidInput(field: "name", message: "a token named '\(name)' exists already (revoked ones keep their name)")
      }
      try db.execute(
        sql: "INSERT INTO nova_tokens (id, name, role, secret_sha256, created_at) VALUES (?, ?, ?, ?, ?)",
        arguments: [id, name, role.rawValue, digest, millis])
      try AuditJournal.append([(millis, actor, "token.created", name, payload)], in: db)
    }
    return ("nova_\(id)_\(secret)", APIToken(id: id, name: name, role: role, createdAt: Self.date(millis), revokedAt: nil))
  }

  /// Every token, oldest first.
  public func list() async throws -> [APIToken] {
    try await database.read { db in
      try Row.fetchAll(db, sql: "SELECT id, name, role, created_at, revoked_at FROM nova_tokens ORDER BY created_at, name")
        .map { row in
          APIToken(
            id: row[0], name: row[1], role: Role(rawValue: row[2]) ?? .viewer, createdAt: Self.date(row[3]),
            revokedAt: (row[4] as Int64?).map(Self.date))
        }
    }
  }

  /// Revokes the token named `name`; it stops working at once.
  @discardableResult
  public func revoke(name: String, now: Date = Date()) async throws -> APIToken {
    let millis = now.millisecondsSince1970
    let actor = AuditContext.actor
    markChanged()
    defer { markChanged() }
    try await database.write { db in
      guard let revokedAt = try Row.fetchOne(db, sql: "SELECT revoked_at FROM nova_tokens WHERE name = ?", arguments: [name])
      else { throw NovaError.notFound("no token is named '\(name)'") }
      if (revokedAt[0] as Int64?) != nil { return }
      try db.execute(sql: "UPDATE nova_tokens SET revoked_at = ? WHERE name = ?", arguments: [millis, name])
      // Console sessions signed in with the token end with it, in the same transaction.
      if let id = try String.fetchOne(db, sql: "SELECT id FROM nova_tokens WHERE name = ?", arguments: [name]) {
        try ConsoleSessionStore.endSessions(ofToken: id, in: db)
      }
      try AuditJournal.append([(millis, actor, "token.revoked", name, "{}")], in: db)
    }
    guard let token = try await list().first(where: { $0.name == name }) else {
      throw NovaError.notFound("no token is named '\(name)'")
    }
    return token
  }

  /// Whether any token that is not revoked exists.
  public func hasActiveTokens() async throws -> Bool {
    try await database.read { db in
      try Bool.fetchOne(db, sql: "SELECT 1 FROM nova_tokens WHERE revoked_at IS NULL LIMIT 1") ?? false
    }
  }

  /// The outcome of presenting a token.
  public enum Authentication: Sendable, Equatable {
    case valid(APIToken)
    /// Why the token was refused, safe to tell the caller.
    case invalid(String)
  }

  /// The id part of a presented `nova_<id>_<secret>` (whether or not the token is valid).
  public static func id(of presented: String) -> String? {
    let parts = presented.split(separator: "_", maxSplits: 2, omittingEmptySubsequences: false)
    guard parts.count == 3, parts[0] == "nova", !parts[1].isEmpty, parts[1].utf8.count <= 64 else { return nil }
    return String(parts[1])
  }

  /// The stored token with id `id` and its secret's digest.
  private func lookUp(_ id: String) async throws -> (APIToken, [UInt8])? {
    try await database.readStatement { db -> (APIToken, [UInt8])? in
      try Row.fetchOne(
        db.cachedStatement(sql: "SELECT id, name, role, secret_sha256, created_at, revoked_at FROM nova_tokens WHERE id = ?"),
        arguments: [id]
      ).map { row in
        let token = APIToken(
          id: row[0], name: row[1], role: Role(rawValue: row[2]) ?? .viewer, createdAt: Self.date(row[4]),
          revokedAt: (row[5] as Int64?).map(Self.date))
        return (token, Array(row[3] as Data))
      }
    }
  }

  /// Checks a presented token string.
  public func authenticate(_ presented: String) async throws -> Authentication {
    let parts = presented.split(separator: "_", maxSplits: 2, omittingEmptySubsequences: false)
    guard parts.count == 3, parts[0] == "nova", !parts[1].isEmpty, !parts[2].isEmpty else {
      return .invalid("the token is not a Nova token (nova_<id>_<secret>)")
    }
    let id = String(parts[1])
    let presentedDigest = Array(SHA256.hash(data: Data(parts[2].utf8)))
    let stamp = changeMarker.stamp()
    let now = ContinuousClock.now
    let kept = recent.withLock { recent -> (APIToken, [UInt8])? in
      guard recent.stamp == stamp, let entry = recent.tokens[id], now - entry.at < Self.recentLifetime else { return nil }
      return (entry.token, entry.digest)
    }
    var found = kept
    if found == nil { found = try await lookUp(id) }
    if kept == nil, let found {
      recent.withLock { recent in
        // Kept under the stamp read before the lookup: a change since makes it stale at once.
        if recent.stamp != stamp || recent.tokens.count >= Self.recentLimit { recent = RecentTokens(stamp: stamp) }
        recent.tokens[id] = (found.0, found.1, now)
      }
    }
    // Compared in full even for unknown ids, so that timing tells nothing about which exist.
    let matches = Self.constantTimeEqual(presentedDigest, found?.1 ?? Self.decoy)
    guard let token = found?.0, matches else { return .invalid("the token is not valid") }
    if token.revokedAt != nil { return .invalid("the token was revoked") }
    return .valid(token)
  }

  /// Equal length and content, in time that depends only on the length.
  public static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    var difference: UInt8 = 0
    for index in a.indices { difference |= a[index] ^ b[index] }
    return difference == 0
  }

  private static let decoy = Array(SHA256.hash(data: Data("nova decoy".utf8)))

  private static func randomString(bytes: Int) -> String {
    var generator = SystemRandomNumberGenerator()
    let raw = (0..<bytes).map { _ in UInt8.random(in: 0...255, using: &generator) }
    // base64url without padding, and without '_' so the token splits cleanly.
    return Data(raw).base64EncodedString()
      .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "-")
      .replacingOccurrences(of: "=", with: "")
  }

  private static func date(_ millis: Int64) -> Date { Date(millisecondsSince1970: millis) }
}
