import Foundation
import NovaCore
import NovaDatabase

/// Everything security a Nova process uses, over one database: the audit log, API tokens and
/// their access guard, and the key that signs checkpoints and evidence.
public struct SecurityContext: Sendable {
  /// The SQLite database holding the audit log and tokens (the queue's own on the default backend).
  public let database: NovaDatabase
  public let audit: AuditLog
  public let tokens: TokenStore
  public let access: AccessGuard
  public let signer: NoteSigner

  /// The log's name in checkpoints: the signing key's name, unique per installation.
  public var origin: String { signer.name }

  /// The key file's name inside a data directory.
  public static let keyFileName = "audit-signing.key"

  /// Opens the stores over `database` (creating their tables on first use) and loads the
  /// signing key at `keyPath`, generating it there on first use.
  public init(database: NovaDatabase, keyPath: String) throws {
    self.database = database
    audit = try AuditLog(database: database)
    tokens = TokenStore(audit: audit)
    access = AccessGuard(tokens: tokens)
    let suffix = (0..<4).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
    signer = try SigningKeyFile.loadOrCreate(path: keyPath, name: "nova-audit-\(suffix)")
  }
}
