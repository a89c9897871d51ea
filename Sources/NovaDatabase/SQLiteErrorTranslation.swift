import GRDB
import NovaCore

/// Turns SQLite's errors into Nova's at the database boundary, naming the file: a lock held past
/// the busy timeout is `unavailable` (worth retrying), anything else SQLite reports is `storage`.
enum SQLiteErrorTranslation {
  static func translate(_ error: any Error, path: String) -> any Error {
    guard let error = error as? DatabaseError else { return error }
    let detail = error.message ?? "\(error.resultCode)"
    switch error.resultCode {
    case .SQLITE_BUSY, .SQLITE_LOCKED:
      return NovaError.unavailable("the SQLite database \(path) is locked by another writer: \(detail)")
    case .SQLITE_NOTADB:
      return NovaError.storage("\(path) is not a Nova database (SQLite says: file is not a database)")
    case .SQLITE_CANTOPEN, .SQLITE_READONLY, .SQLITE_PERM:
      return NovaError.storage("cannot open \(path) for writing: \(detail)")
    case .SQLITE_FULL:
      return NovaError.storage("the disk holding \(path) is full: \(detail)")
    default:
      return NovaError.storage("database error at \(path): \(detail)")
    }
  }
}
