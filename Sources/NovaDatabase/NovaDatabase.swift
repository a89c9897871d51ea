import CNovaSQLite
import Foundation
import GRDB
import GRDBSQLite
import NovaCore

/// Nova's SQLite database: one WAL-mode file that every store of the application shares (the
/// queue on the default backend, the audit log and tokens, KPIs, alerts, the journal).
///
/// It owns what is common to them: the pragmas, the application id that refuses a foreign file,
/// each store's migrations, the group-commit writer whose shared transactions let one store's
/// records commit with another's changes, and the translation of SQLite's errors into
/// `NovaError`. No GRDB type is public: stores reach the connection through `package` API.
public final class NovaDatabase: Sendable {
  /// How SQLite syncs the WAL: `normal` survives process crashes, `full` also power loss.
  public enum Synchronous: String, Sendable {
    case normal = "NORMAL"
    case full = "FULL"
  }

  /// Settings for opening a database.
  public struct Configuration: Sendable {
    /// Path of the database file; its folder must exist and be writable.
    public var path: String
    public var synchronous: Synchronous
    /// How long a writer waits for another process's write lock before the call fails as
    /// `NovaError.unavailable`.
    public var busyTimeout: TimeInterval
    /// Most operations grouped into one transaction.
    public var maxBatchSize: Int
    /// WAL frames (4 KiB pages) from which the checkpoints have the writer start the WAL over
    /// (`WALCheckpointer`).
    public var walRestartFrames = 4096

    public init(path: String, synchronous: Synchronous = .normal, busyTimeout: TimeInterval = 10, maxBatchSize: Int = 1024) {
      self.path = path
      self.synchronous = synchronous
      self.busyTimeout = busyTimeout
      self.maxBatchSize = maxBatchSize
    }
  }

  /// `PRAGMA application_id` of a Nova database ("NOVA").
  public static let applicationID: Int32 = 0x4E4F_5641

  /// SQLite's result for turning its memory statistics off, once, before the first connection
  /// of the process (`SQLITE_MISUSE` if something else opened one first). With them on, every
  /// allocation of every connection takes one process-wide mutex: 5 % of the writer's time.
  package static let memoryStatisticsOff: Int32 = nova_sqlite_disable_memory_statistics()

  /// SQLite's result for making the WAL frame VFS the default, once, after the memory
  /// statistics are off (finding the default VFS initializes SQLite). It writes a WAL frame's
  /// header and page in one system call instead of two: under small group commits, those
  /// writes were the largest single cost of the writer thread.
  package static let walFrameVFSRegistered: Int32 = {
    _ = memoryStatisticsOff
    return nova_sqlite_register_wal_vfs()
  }()

  /// WAL frames written with one system call, and frame headers written alone (rewritten in
  /// place, mostly), by this process.
  package static var walFrameWrites: (joined: Int64, loneHeaders: Int64) {
    (nova_sqlite_wal_joined_writes(), nova_sqlite_wal_lone_header_writes())
  }

  /// The bytes SQLite counts as in use: 0 while its memory statistics are off.
  package static var sqliteMemoryCounted: Int64 {
    var current: Int64 = 0
    var highwater: Int64 = 0
    _ = sqlite3_status64(SQLITE_STATUS_MEMORY_USED, &current, &highwater, 0)
    return current
  }

  public let configuration: Configuration
  /// The connection pool (one writer, concurrent readers), for the stores of this package.
  package let pool: DatabasePool
  private let writer: GroupCommitWriter
  private let checkpointer: WALCheckpointer

  /// The database file.
  public var path: String { configuration.path }

  /// Opens (and creates) the database at `configuration.path`, refusing a file that is not
  /// Nova's. Stores add their tables with `migrate`.
  public init(configuration: Configuration) throws {
    _ = Self.walFrameVFSRegistered
    self.configuration = configuration
    var config = GRDB.Configuration()
    config.busyMode = .timeout(configuration.busyTimeout)
    config.maximumReaderCount = 4
    let synchronous = configuration.synchronous.rawValue
    config.prepareDatabase { db in
      try db.execute(sql: "PRAGMA synchronous = \(synchronous)")
      guard !db.configuration.readonly else { return }
      // Writer only. The checkpoints run beside it (`WALCheckpointer`); this one, in a commit,
      // only if they fall far behind.
      try db.execute(sql: "PRAGMA wal_autocheckpoint = \(Self.backstopCheckpointPages)")
      try db.execute(sql: "PRAGMA cache_size = -16384")
      // Each grouped operation runs in a savepoint, whose statement journal would otherwise be
      // a temporary file written for every operation.
      try db.execute(sql: "PRAGMA temp_store = MEMORY")
    }
    let path = configuration.path
    try Self.makePrivate(path)
    do {
      // Processes opening a fresh file at once would each switch it to WAL and stamp it.
      pool = try Self.withSchemaLock(path: path, timeout: Self.schemaLockTimeout(configuration)) {
        let opened = try DatabasePool(path: path, configuration: config)
        try opened.barrierWriteWithoutTransaction { db in
          try Self.checkIsNovaDatabase(db, path: path)
        }
        return opened
      }
    } catch {
      throw SQLiteErrorTranslation.translate(error, path: path)
    }
    let checkpointer = WALCheckpointer(path: path, restartFrames: configuration.walRestartFrames)
    self.checkpointer = checkpointer
    writer = GroupCommitWriter(writer: pool, path: path, maxBatch: configuration.maxBatchSize, checkpointer: checkpointer)
  }

  /// WAL pages at which the writer checkpoints in its own commit (128 MiB of 4 KiB pages).
  static let backstopCheckpointPages = 32_768

  /// The WAL file's stamp now: changes whenever a process commits (or checkpoints the WAL
  /// away), for waiting on other processes' writes without reading the database.
  package func walStamp() -> FileStamp { writer.wal.stamp() }

  /// Creates the database file readable by its owner only (SQLite gives its WAL and shared-memory
  /// files the database file's mode), or takes group and other access away from an existing one.
  static func makePrivate(_ path: String) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
    if fd >= 0 {
      close(fd)
      return
    }
    guard errno == EEXIST else { return }  // SQLite reports what is wrong with the path
    for file in [path, path + "-wal", path + "-shm"] {
      var info = stat()
      if stat(file, &info) == 0, info.st_mode & 0o077 != 0, chmod(file, info.st_mode & 0o700) != 0 {
        throw NovaError.storage("\(file) may be read by others and cannot be made private: \(String(cString: strerror(errno)))")
      }
    }
  }

  /// Opens the database at `path` with default settings.
  public convenience init(path: String) throws {
    try self.init(configuration: Configuration(path: path))
  }

  /// Applies a store's migrations (identifiers unique across the database: `v1-jobs`, …);
  /// those already applied are skipped, so every store calls this when it opens.
  package func migrate(_ store: String, _ register: (inout DatabaseMigrator) -> Void) throws {
    var migrator = DatabaseMigrator()
    register(&migrator)
    // GRDB reads which migrations are applied, then applies each in a transaction of its own: two processes opening a
    // fresh file would both find a table missing and both create it, and one would fail.
    try Self.withSchemaLock(path: path, timeout: Self.schemaLockTimeout(configuration)) {
      do {
        try migrator.migrate(pool)
      } catch {
        throw NovaError.storage("cannot create the \(store) tables in \(path): \(SQLiteErrorTranslation.translate(error, path: path))")
      }
    }
  }

  /// The lock file that serializes opening and migrating the database at `path` across processes.
  package static func schemaLockPath(_ path: String) -> String { path + ".migrate-lock" }

  /// A holder may first wait up to its busy timeout for SQLite's write lock, then migrate; the minute more is for a
  /// migration that rewrites a large table.
  private static func schemaLockTimeout(_ configuration: Configuration) -> TimeInterval {
    max(configuration.busyTimeout, 0) + 60
  }

  /// Runs `body` holding an exclusive `flock` on the schema lock file, waiting at most `timeout` for another process
  /// to release it (`NovaError.unavailable` after that).
  private static func withSchemaLock<T>(path: String, timeout: TimeInterval, _ body: () throws -> T) throws -> T {
    let lockPath = schemaLockPath(path)
    // Never deleted: were it unlinked while another process waited on it, a third could lock a new file and both
    // would migrate at once.
    let fd = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
    // Where no lock file can be made, SQLite reports what is wrong with the folder (or opens as it did before).
    guard fd >= 0 else { return try body() }
    // Closing releases the lock, as the kernel does when a holder dies: a crash never leaves it held.
    defer { close(fd) }
    let start = ContinuousClock.now
    var pause: UInt32 = 1_000
    while flock(fd, LOCK_EX | LOCK_NB) != 0 {
      let error = errno
      // A file system without flock: no worse off than before the lock existed.
      guard error == EWOULDBLOCK || error == EINTR else { return try body() }
      guard ContinuousClock.now - start < .seconds(timeout) else {
        throw NovaError.unavailable(
          "the SQLite database \(path) is being created or migrated by another process: \(lockPath) held for over \(Int(timeout)) s")
      }
      usleep(pause)
      pause = min(pause * 2, 50_000)
    }
    return try body()
  }

  /// Runs `body` in the shared write transaction (in a savepoint of its own unless `savepoint`
  /// is false, which the caller may choose when `body` changes nothing before it throws). With
  /// `servesWaiters` (a write that may give waiters what they wait for), the waiter services
  /// run at the end of that transaction.
  package func write<T: Sendable>(
    savepoint: Bool = true, servesWaiters: Bool = false, _ body: @escaping @Sendable (Database) throws -> T
  ) async throws -> T {
    try await writer.perform(savepoint: savepoint, servesWaiters: servesWaiters, body)
  }

  /// A mark for `hasForeignCommits(since:)`: other processes' commits found so far.
  package var foreignCommits: Int { writer.foreignCommits }

  /// Whether another process committed to the database since `mark` (this process's own
  /// commits do not count).
  package func hasForeignCommits(since mark: Int) -> Bool { writer.hasForeignCommits(since: mark) }

  /// Adds `service`, run on the writer at the end of each transaction that carries a write
  /// marked `servesWaiters`, after its operations and before its commit. The closures it adds
  /// are called once that transaction committed (nil) or failed; one that throws rolls the
  /// transaction back (it must have added its closures first).
  package func addWaiterService(
    _ service: @escaping @Sendable (Database, inout [@Sendable ((any Error)?) -> Void]) throws -> Void
  ) {
    writer.addWaiterService(service)
  }

  /// How many times SQLite prepared the writer's statements again (a schema change, or a bound
  /// value that may change a statement's plan, such as a GLOB pattern): each costs a parse.
  package func writerStatementsPreparedAgain() async throws -> Int {
    try await write(savepoint: false) { db in
      var total: Int32 = 0
      var statement = sqlite3_next_stmt(db.sqliteConnection, nil)
      while let current = statement {
        total += sqlite3_stmt_status(current, SQLITE_STMTSTATUS_REPREPARE, 0)
        statement = sqlite3_next_stmt(db.sqliteConnection, current)
      }
      return Int(total)
    }
  }

  /// SQLite's error as the writer reports it (`NovaError.unavailable` for a lock, `.storage`
  /// otherwise), for results delivered by a waiter service.
  package func translate(_ error: any Error) -> any Error { SQLiteErrorTranslation.translate(error, path: path) }

  /// Asks for a transaction that runs the waiter services; `failed` is told if it cannot begin.
  package func requestWaiterService(failed: @escaping @Sendable (any Error) -> Void) {
    writer.requestService(failed: failed)
  }

  /// Runs `body` on a reader, its errors translated like the writer's.
  package func read<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
    do {
      return try await pool.read(body)
    } catch {
      throw SQLiteErrorTranslation.translate(error, path: path)
    }
  }

  /// Runs `body`, which must run a single statement (a statement reads one snapshot by itself),
  /// on a reader without a transaction around it: `read` begins and ends one, two statements
  /// more to prepare and run on the hot paths (a token check, a job by id).
  package func readStatement<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
    do {
      return try await pool.unsafeRead(body)
    } catch {
      throw SQLiteErrorTranslation.translate(error, path: path)
    }
  }

  /// Checkpoints run beside the writer, and the WAL at the last of them.
  package var checkpointStatistics: WALCheckpointer.Statistics { checkpointer.statistics }

  /// Write transactions committed and the operations they grouped (group commit's effect).
  public var writeStatistics: (transactions: Int, operations: Int, busy: Duration) { writer.statistics }

  /// The SQLite version linked into this process.
  public func sqliteVersion() async throws -> String {
    try await read { db in try String.fetchOne(db, sql: "SELECT sqlite_version()") ?? "?" }
  }

  private static func checkIsNovaDatabase(_ db: Database, path: String) throws {
    if try isStamped(db, path: path) { return }
    // The file looked fresh: read it again and stamp it in one write transaction, so that no other process (one that
    // does not take the schema lock) creates tables or stamps it in between.
    try db.inTransaction(.immediate) {
      if try !isStamped(db, path: path) {
        try db.execute(sql: "PRAGMA application_id = \(applicationID)")
      }
      return .commit
    }
  }

  /// Whether the file carries Nova's application id: false for a fresh file; throws for another application's.
  private static func isStamped(_ db: Database, path: String) throws -> Bool {
    let appID = try Int32.fetchOne(db, sql: "PRAGMA application_id") ?? 0
    if appID == applicationID { return true }
    let tables = try String.fetchAll(
      db, sql: "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
    if appID != 0 || !tables.isEmpty {
      let detail = tables.isEmpty ? "application_id \(appID)" : "tables: \(tables.prefix(5).joined(separator: ", "))"
      throw NovaError.storage("\(path) is not a Nova database (\(detail)); use another --data-dir")
    }
    return false
  }
}

/// An open write transaction of a `NovaDatabase`, handed to hooks that write in it (the audit
/// journal records each job transition in the transaction that makes it). Its connection is
/// visible only inside this package.
public struct DatabaseTransaction {
  package let db: Database

  package init(_ db: Database) {
    self.db = db
  }
}
