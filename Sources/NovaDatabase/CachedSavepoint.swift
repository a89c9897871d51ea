import GRDB

/// A named savepoint whose statements are prepared once per connection: GRDB's `inSavepoint`
/// compiles its statements on every call, which a profile of single submissions showed (with
/// its authorizer).
package struct CachedSavepoint: Sendable {
  private let begin: String
  private let release: String
  private let rollback: String

  package init(_ name: String) {
    begin = "SAVEPOINT \(name)"
    release = "RELEASE SAVEPOINT \(name)"
    rollback = "ROLLBACK TRANSACTION TO SAVEPOINT \(name)"
  }

  /// One operation of a shared transaction.
  package static let operation = CachedSavepoint("nova_operation")

  /// Runs `body` inside the savepoint, in `db`'s transaction: when `body` throws, what it wrote
  /// is undone, and only that.
  package func run<T>(in db: Database, _ body: () throws -> T) throws -> T {
    try db.cachedStatement(sql: begin).execute()
    do {
      let value = try body()
      try db.cachedStatement(sql: release).execute()
      return value
    } catch {
      // (Some SQLite errors roll the whole transaction back themselves.)
      if db.isInsideTransaction {
        try db.cachedStatement(sql: rollback).execute()
        try db.cachedStatement(sql: release).execute()
      }
      throw error
    }
  }
}
