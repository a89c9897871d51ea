import Foundation
import GRDB
import GRDBSQLite

/// Binds, steps and reads a statement that GRDB prepared and caches, through SQLite's C API.
/// The queue's hot statements (insert, claim, complete) run tens of thousands of times a second
/// on the single writer; going around GRDB's per-call argument boxing and row copying there is
/// what lets one writer keep up with many workers.
package struct RawStatement {
  private let handle: SQLiteStatement
  private let connection: SQLiteConnection?
  /// Kept for error messages only: GRDB computes `sql` by trimming, too slow for every use.
  private let statement: Statement

  private static let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

  /// Wraps a statement of `db` (from `db.cachedStatement`), reset and with bindings cleared.
  package init(_ statement: Statement, in db: Database) {
    handle = statement.sqliteStatement
    connection = db.sqliteConnection
    self.statement = statement
    sqlite3_reset(handle)
    sqlite3_clear_bindings(handle)
  }

  package func bind(_ index: Int32, _ value: Int64) { sqlite3_bind_int64(handle, index, value) }
  package func bind(_ index: Int32, _ value: Int) { sqlite3_bind_int64(handle, index, Int64(value)) }

  package func bind(_ index: Int32, _ value: String?) {
    guard let value else {
      sqlite3_bind_null(handle, index)
      return
    }
    sqlite3_bind_text(handle, index, value, -1, Self.transient)
  }

  package func bind(_ index: Int32, _ value: Data?) {
    guard let value else {
      sqlite3_bind_null(handle, index)
      return
    }
    if value.isEmpty {
      sqlite3_bind_zeroblob(handle, index, 0)
      return
    }
    value.withUnsafeBytes { bytes in
      _ = sqlite3_bind_blob(handle, index, bytes.baseAddress, Int32(bytes.count), Self.transient)
    }
  }

  /// Binds a floating-point value.
  package func bind(_ index: Int32, _ value: Double) { sqlite3_bind_double(handle, index, value) }

  /// Binds bytes as a blob.
  package func bind(_ index: Int32, bytes: [UInt8]) {
    bytes.withUnsafeBytes { bind(index, blob: $0) }
  }

  /// Binds UTF-8 bytes as text.
  package func bind(_ index: Int32, text bytes: ArraySlice<UInt8>) {
    bytes.withUnsafeBytes { raw in
      // No address (no bytes) would bind NULL.
      guard let base = raw.baseAddress else {
        _ = sqlite3_bind_text(handle, index, "", 0, Self.transient)
        return
      }
      _ = sqlite3_bind_text(handle, index, base.assumingMemoryBound(to: CChar.self), Int32(raw.count), Self.transient)
    }
  }

  /// Binds bytes as a blob.
  package func bind(_ index: Int32, blob bytes: UnsafeRawBufferPointer) {
    _ = sqlite3_bind_blob(handle, index, bytes.baseAddress, Int32(bytes.count), Self.transient)
  }

  /// Advances; true when a row is ready to read.
  package func step() throws -> Bool {
    let code = sqlite3_step(handle)
    switch code {
    case SQLITE_ROW: return true
    case SQLITE_DONE: return false
    default:
      let message = connection.map { String(cString: sqlite3_errmsg($0)) }
      sqlite3_reset(handle)
      throw DatabaseError(resultCode: ResultCode(rawValue: code), message: message, sql: statement.sql)
    }
  }

  /// Runs a statement that returns no rows; returns the number of rows it changed.
  package func run() throws -> Int {
    while try step() {}
    sqlite3_reset(handle)
    return connection.map { Int(sqlite3_changes($0)) } ?? 0
  }

  /// Ends the use of the statement so that it holds no lock.
  package func finish() { sqlite3_reset(handle) }

  package func isNull(_ column: Int32) -> Bool { sqlite3_column_type(handle, column) == SQLITE_NULL }
  package func int64(_ column: Int32) -> Int64 { sqlite3_column_int64(handle, column) }
  package func int(_ column: Int32) -> Int { Int(sqlite3_column_int64(handle, column)) }
  package func optionalInt64(_ column: Int32) -> Int64? { isNull(column) ? nil : int64(column) }
  package func double(_ column: Int32) -> Double { sqlite3_column_double(handle, column) }

  package func string(_ column: Int32) -> String {
    guard let text = sqlite3_column_text(handle, column) else { return "" }
    return String(cString: text)
  }

  package func optionalString(_ column: Int32) -> String? { isNull(column) ? nil : string(column) }

  package func data(_ column: Int32) -> Data {
    let count = Int(sqlite3_column_bytes(handle, column))
    guard count > 0, let bytes = sqlite3_column_blob(handle, column) else { return Data() }
    return Data(bytes: bytes, count: count)
  }

  package func optionalData(_ column: Int32) -> Data? { isNull(column) ? nil : data(column) }

  /// A column's bytes (text or blob).
  package func bytes(_ column: Int32) -> [UInt8] {
    let count = Int(sqlite3_column_bytes(handle, column))
    guard count > 0, let pointer = sqlite3_column_blob(handle, column) else { return [] }
    return Array(UnsafeRawBufferPointer(start: pointer, count: count))
  }
}
