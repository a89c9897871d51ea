import Foundation
import GRDB
import NovaCore
import NovaDatabase
import NovaQueue
import NovaSecurity
import NovaTestSupport
import Testing

@Suite("API tokens and access", .timeLimit(.minutes(5)))
struct TokenAndAccessTests {
  @Test func leaseTokensOpenOnlyForTheirJobAndKey() {
    let signer = NoteSigner.generate(name: "nova-audit-test")
    let seal = LeaseSeal(signer: signer)
    let token = seal.seal(id: "job-a", token: 3)
    #expect(token.hasPrefix("3.") && token.count == 2 + 32)
    #expect(seal.open(token, id: "job-a") == 3)
    // Another job, a changed count, a changed code, or another installation's key: nothing opens.
    #expect(seal.open(token, id: "job-b") == nil)
    #expect(seal.open("4" + token.dropFirst(), id: "job-a") == nil)
    #expect(seal.open(String(token.dropLast()) + (token.last == "0" ? "1" : "0"), id: "job-a") == nil)
    #expect(seal.open(String(token.dropLast()), id: "job-a") == nil)
    #expect(LeaseSeal(signer: NoteSigner.generate(name: "other")).open(token, id: "job-a") == nil)
    #expect(LeaseSeal().open(token, id: "job-a") == nil)
    for garbage in ["", "3", ".", "x.y", "-1.00", "3.", "99999999999999999999.ab"] { #expect(seal.open(garbage, id: "job-a") == nil) }
    // The same key after a restart opens what was handed out before it.
    #expect(LeaseSeal(signer: signer).open(token, id: "job-a") == 3)
  }

  @Test func tokensAreShownOnceStoredHashedAndRevocable() async throws {
    let fixture = try SecurityFixture()
    let tokens = fixture.security.tokens
    #expect(try await tokens.hasActiveTokens() == false)
    let (secret, record) = try await tokens.create(name: "ci-bot", role: .operator)
    #expect(secret.hasPrefix("nova_\(record.id)_") && secret.count > 40)
    #expect(try await tokens.authenticate(secret) == .valid(record))
    let encoded = try JSONEncoder().encode(record)
    #expect(String(decoding: encoded, as: UTF8.self).contains(#""created_at":"2"#))
    let decoded = try JSONDecoder().decode(APIToken.self, from: encoded)
    #expect(decoded.name == record.name && decoded.role == .operator && abs(decoded.createdAt.timeIntervalSince(record.createdAt)) < 0.001)
    #expect(throws: DecodingError.self) {
      _ = try JSONDecoder().decode(APIToken.self, from: Data(#"{"id":"a","name":"b","role":"viewer","created_at":"x"}"#.utf8))
    }
    #expect(try await tokens.hasActiveTokens())
    // Only the SHA-256 of the secret is in the database.
    let stored = try await fixture.queue.database.read { db in try Data.fetchOne(db, sql: "SELECT secret_sha256 FROM nova_tokens") }
    #expect(stored?.count == 32)
    let secretPart = String(secret.split(separator: "_", maxSplits: 2)[2])
    let everything = try await fixture.queue.database.read { db in
      try String.fetchAll(db, sql: "SELECT name || role || id || hex(secret_sha256) FROM nova_tokens").joined()
    }
    #expect(!everything.contains(secretPart))

    await #expect(throws: NovaError.self) { _ = try await tokens.create(name: "ci-bot", role: .viewer) }
    await #expect(throws: NovaError.self) { _ = try await tokens.create(name: "bad name!", role: .viewer) }
    #expect(try await tokens.authenticate(secret + "x") == .invalid("the token is not valid"))
    #expect(try await tokens.authenticate("nova_unknown_secret") == .invalid("the token is not valid"))
    #expect(try await tokens.authenticate("Bearer") == .invalid("the token is not a Nova token (nova_<id>_<secret>)"))

    let revoked = try await tokens.revoke(name: "ci-bot")
    #expect(revoked.revokedAt != nil)
    #expect(try await tokens.authenticate(secret) == .invalid("the token was revoked"))
    try await tokens.revoke(name: "ci-bot")
    await #expect(throws: NovaError.notFound("no token is named 'nobody'")) { try await tokens.revoke(name: "nobody") }
    #expect(try await tokens.list().map(\.name) == ["ci-bot"])
    let events = try await fixture.audit.entries(from: 1, through: 10).map(\.event)
    #expect(events == ["token.created", "token.revoked"])
  }

  /// Issue #24: tokens looked up lately are kept in memory, and a revocation ends that at once,
  /// in the process that revokes and in every other one on the same database (here a second
  /// store on its own connections, as `nova tokens revoke` in another process).
  @Test func aKeptTokenStopsWorkingWhenAnyProcessRevokesIt() async throws {
    let fixture = try SecurityFixture()
    let server = fixture.security.tokens
    let (secret, record) = try await server.create(name: "agent", role: .operator)
    let (otherSecret, _) = try await server.create(name: "other", role: .viewer)
    #expect(try await server.authenticate(secret) == .valid(record))
    #expect(try await server.authenticate(secret) == .valid(record))  // from what it kept
    let elsewhere = TokenStore(audit: try AuditLog(database: try NovaDatabase(path: fixture.queue.database.path)))
    try await elsewhere.revoke(name: "agent")
    #expect(try await server.authenticate(secret) == .invalid("the token was revoked"))
    #expect(try await server.authenticate(otherSecret) != .invalid("the token was revoked"))
    // A token created elsewhere works here at once, and one revoked here fails there.
    let (third, thirdRecord) = try await elsewhere.create(name: "third", role: .admin)
    #expect(try await server.authenticate(third) == .valid(thirdRecord))
    #expect(try await elsewhere.authenticate(third) == .valid(thirdRecord))
    try await server.revoke(name: "third")
    #expect(try await elsewhere.authenticate(third) == .invalid("the token was revoked"))
    #expect(try await server.authenticate(third) == .invalid("the token was revoked"))
    // A wrong secret for a kept token is refused like any other.
    #expect(try await server.authenticate(otherSecret + "x") == .invalid("the token is not valid"))
  }

  @Test func rolesAllowTheirActionsAndFailuresAreAuditedAndLimited() async throws {
    let fixture = try SecurityFixture()
    let tokens = fixture.security.tokens
    let viewer = try await tokens.create(name: "viewer", role: .viewer).token
    let admin = try await tokens.create(name: "admin", role: .admin).token
    let access = AccessGuard(tokens: tokens, maxFailures: 3, window: 60)
    let now = Date(timeIntervalSince1970: 1_800_000_000)

    #expect(try await access.authorize(authorization: "Bearer \(viewer)", action: .read, source: "10.0.0.1", now: now) != .unauthenticated(""))
    if case .allowed(let token) = try await access.authorize(authorization: "bearer \(admin)", action: .manageTokens, source: "10.0.0.1", now: now) {
      #expect(token.name == "admin")
    } else {
      Issue.record("admin may manage tokens")
    }
    guard case .forbidden(let why) = try await access.authorize(authorization: "Bearer \(viewer)", action: .submit, source: "10.0.0.1", now: now)
    else {
      Issue.record("a viewer may not submit")
      return
    }
    #expect(why.contains("needs operator or admin"))
    for action in APIAction.allCases {
      #expect(Role.admin.allows(action))
      #expect(Role.viewer.allows(action) == (action == .read))
      // A worker claims and reports, and reads nothing: not even the payloads of others' jobs.
      #expect(Role.worker.allows(action) == [.claim, .report].contains(action))
    }

    #expect(
      try await access.authorize(authorization: nil, action: .read, source: "10.0.0.2", now: now)
        == .unauthenticated("no Authorization header; send Authorization: Bearer <token>"))
    #expect(
      try await access.authorize(authorization: "Basic abc", action: .read, source: "10.0.0.2", now: now)
        == .unauthenticated("the Authorization header is not 'Bearer <token>'"))
    #expect(
      try await access.authorize(authorization: "Bearer nova_x_y", action: .read, source: "10.0.0.2", now: now)
        == .unauthenticated("the token is not valid"))
    // Issue #13 point 9: past the limit a source's failures get 429; its valid tokens still pass
    // (a proxy carries many clients), and the limit ends with its window.
    #expect(
      try await access.authorize(authorization: "Bearer nova_x_z", action: .read, source: "10.0.0.2", now: now)
        == .rateLimited(retryAfterSeconds: 60))
    #expect(
      try await access.authorize(authorization: "Bearer nova_y_z", action: .read, source: "10.0.0.2", now: now.addingTimeInterval(30))
        == .rateLimited(retryAfterSeconds: 30))
    if case .allowed = try await access.authorize(authorization: "Bearer \(viewer)", action: .read, source: "10.0.0.2", now: now) {
    } else {
      Issue.record("a valid token is never refused for others' failures")
    }
    #expect(
      try await access.authorize(authorization: "Bearer nova_x_y", action: .read, source: "10.0.0.2", now: now.addingTimeInterval(61))
        == .unauthenticated("the token is not valid"))
    // Failures are audited at most once a minute per address, with their count.
    let entries = try await fixture.audit.entries(from: 1, through: 100)
    #expect(entries.map(\.event) == ["token.created", "token.created", "auth.denied", "auth.failed", "auth.failed"])
    #expect(entries[3].subject == "10.0.0.2" && entries[3].actor == "anonymous" && entries[3].payload.contains(#""count":1"#))
    #expect(entries[4].payload.contains(#""count":5"#) && entries[4].payload.contains(#""token_id":"x""#), "\(entries[4].payload)")
    #expect(
      TokenStore.constantTimeEqual([1, 2], [1, 2]) && !TokenStore.constantTimeEqual([1, 2], [1, 3]) && !TokenStore.constantTimeEqual([1], [1, 2]))
  }

  /// The bytes-only reading of `Authorization` takes what the general path would, and leaves
  /// everything else (other schemes, whitespace to trim, non-ASCII) to it.
  @Test func theFastBearerReadingAgreesWithTheGeneralOne() async throws {
    #expect(AccessGuard.plainBearerToken("Bearer nova_a_b") == "nova_a_b")
    #expect(AccessGuard.plainBearerToken("bEaReR nova_a_b") == "nova_a_b")
    for header in ["Bearer", "Bearer ", "Bearer  nova_a_b", "Bearer nova_a_b ", "Bearer\tnova_a_b", "Basic abc", "Bearer nova_é_b", "Bearerxnova"] {
      #expect(AccessGuard.plainBearerToken(header) == nil, "\(header)")
    }
    let fixture = try SecurityFixture()
    let secret = try await fixture.security.tokens.create(name: "op", role: .operator).token
    let access = AccessGuard(tokens: fixture.security.tokens)
    // Trimmed by the general path: the same token.
    for header in ["Bearer \(secret)", "BEARER \(secret)", "Bearer  \(secret)\u{00A0}", "Bearer \(secret)\t"] {
      guard case .allowed(let token) = try await access.authorize(authorization: header, action: .submit, source: "10.0.0.9") else {
        Issue.record("'\(header)' carries a valid token")
        continue
      }
      #expect(token.name == "op")
    }
    #expect(
      try await access.authorize(authorization: "Bearer \(secret)x", action: .submit, source: "10.0.0.9")
        == .unauthenticated("the token is not valid"))
  }

  @Test func signingKeysAreFilesOnlyTheirOwnerMayRead() throws {
    let directory = try TemporaryDirectory.make("nova-key")
    let path = directory.appendingPathComponent("key").path
    let created = try SigningKeyFile.loadOrCreate(path: path, name: "nova-audit-test")
    let attributes = try FileManager.default.attributesOfItem(atPath: path)
    #expect((attributes[.posixPermissions] as? Int) == 0o600)
    let loaded = try SigningKeyFile.loadOrCreate(path: path, name: "ignored")
    #expect(loaded.verifier.verifierKey == created.verifier.verifierKey && loaded.name == "nova-audit-test")
    #expect(try NoteVerifier(verifierKey: created.verifier.verifierKey).publicKeyBytes == created.verifier.publicKeyBytes)
    #expect(created.verifier.pem.hasPrefix("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA"))
    chmod(path, 0o644)
    #expect(throws: NovaError.self) { _ = try SigningKeyFile.load(path: path) }
    chmod(path, 0o600)
    #expect(throws: NovaError.self) { _ = try SigningKeyFile.decode("PRIVATE+KEY+x+00000000+AAAA", source: "k") }
    let text = SigningKeyFile.encode(created)
    let wrongID = text.replacingOccurrences(of: "+\(created.keyID.map { String(format: "%02x", $0) }.joined())+", with: "+00000000+")
    #expect(throws: NovaError.self) { _ = try SigningKeyFile.decode(wrongID, source: "k") }
    #expect(throws: NovaError.self) { _ = try SigningKeyFile.load(path: directory.appendingPathComponent("missing").path) }
  }
}
