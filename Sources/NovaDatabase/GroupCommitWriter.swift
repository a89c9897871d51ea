import Dispatch
import GRDB
import Synchronization

/// Runs write operations from many tasks in shared transactions (group commit), so that the
/// queue's throughput is not bound by one commit (and one WAL sync) per operation.
///
/// Each operation runs in its own savepoint: one that throws is rolled back alone, the others
/// commit. Callers are resumed only after the shared transaction committed.
///
/// Waiters (claims parked until a job arrives) are served at the end of each transaction that
/// carried an operation marked `servesWaiters`, in that transaction: a waiting claim takes a
/// new job in the commit that stores it.
final class GroupCommitWriter: Sendable {
  /// How to resume a caller once the transaction committed (nil) or failed.
  typealias Resumer = @Sendable ((any Error)?) -> Void
  /// Runs inside a transaction, after its operations, and adds how to resume what it served
  /// (added before it throws, so that a transaction rolled back answers those too).
  typealias WaiterService = @Sendable (Database, inout [Resumer]) throws -> Void

  private struct Pending: Sendable {
    /// Runs the operation inside the open transaction and returns how to resume its caller.
    let execute: @Sendable (Database) -> Resumer
    /// Resumes the caller with an error without running the operation.
    let fail: @Sendable (any Error) -> Void
    /// Whether waiters are served at the end of the transaction that runs it.
    let servesWaiters: Bool
  }

  private struct State {
    var pending: [Pending] = []
    var flushing = false
  }

  private let writer: DatabasePool
  /// The database file, named in translated errors.
  private let path: String
  private let maxBatch: Int
  /// Told of each commit, on the writer's thread; may ask the writer to finish a checkpoint.
  private let checkpointer: WALCheckpointer?
  private let state = Mutex(State())
  /// The WAL file as this process's last commit left it, and how many times another process's
  /// commit was found before one of ours (`hasForeignCommits`).
  private let walWatch: Mutex<(own: FileStamp, foreign: Int, inTransaction: Bool)>
  /// The WAL file, looked at after each BEGIN and COMMIT.
  let wal: WatchedFile
  private let waiterServices = Mutex<[WaiterService]>([])
  private let counters = Mutex<(transactions: Int, operations: Int, busy: Duration)>((0, 0, .zero))

  /// Transactions committed, operations they carried, and the time the writer spent in
  /// transactions and its own checkpoints (how near its ceiling it runs), for diagnostics.
  var statistics: (transactions: Int, operations: Int, busy: Duration) { counters.withLock { $0 } }
  private let queue = DispatchQueue(label: "nova.sqlite.group-commit")

  init(writer: DatabasePool, path: String, maxBatch: Int, checkpointer: WALCheckpointer? = nil) {
    self.writer = writer
    self.path = path
    let wal = WatchedFile(path: path + "-wal")
    self.wal = wal
    self.walWatch = Mutex((wal.stamp(), 0, false))
    self.maxBatch = max(1, maxBatch)
    self.checkpointer = checkpointer
  }

  /// Runs `body` in a write transaction shared with other concurrent callers. With `savepoint`
  /// false the caller promises that `body` changes nothing when it throws (a single statement,
  /// or checks before the first write), which saves the savepoint's cost. With `servesWaiters`,
  /// the waiter services run at the end of the transaction.
  /// SQLite's errors leave translated (`NovaError.unavailable` for a lock, `.storage` otherwise).
  func perform<T: Sendable>(
    savepoint: Bool = true, servesWaiters: Bool = false, _ body: @escaping @Sendable (Database) throws -> T
  ) async throws -> T {
    do {
      return try await enqueue(savepoint: savepoint, servesWaiters: servesWaiters, body)
    } catch {
      throw SQLiteErrorTranslation.translate(error, path: path)
    }
  }

  /// Adds a service run at the end of each transaction that carries an operation marked
  /// `servesWaiters`, on the writer's thread (so in order with every operation).
  func addWaiterService(_ service: @escaping WaiterService) {
    waiterServices.withLock { $0.append(service) }
  }

  /// Commits of other processes found so far: a mark for `hasForeignCommits(since:)`.
  var foreignCommits: Int { walWatch.withLock { $0.foreign } }

  /// Whether another process committed since `mark`: found at one of this writer's
  /// transactions, or now (the WAL is not as this process's last commit left it). This
  /// process's own commits are not news: unlike a bare look at the WAL, it does not wake a
  /// wait for each of them.
  func hasForeignCommits(since mark: Int) -> Bool {
    let watch = walWatch.withLock { $0 }
    if watch.foreign > mark { return true }
    // While this writer holds the write lock nobody else commits; its own frames are not news.
    if watch.inTransaction { return false }
    return wal.stamp() != watch.own
  }

  /// Asks for a transaction that runs the waiter services (nothing else of its own); `failed`
  /// is told when that transaction could not begin.
  func requestService(failed: @escaping @Sendable (any Error) -> Void) {
    submit(Pending(execute: { _ in { _ in } }, fail: failed, servesWaiters: true))
  }

  private func submit(_ pending: Pending) {
    let startFlush = state.withLock { state -> Bool in
      state.pending.append(pending)
      if state.flushing { return false }
      state.flushing = true
      return true
    }
    if startFlush { queue.async { self.flushLoop() } }
  }

  private func enqueue<T: Sendable>(
    savepoint: Bool, servesWaiters: Bool, _ body: @escaping @Sendable (Database) throws -> T
  ) async throws -> T {
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
      let pending = Pending(
        execute: { db in
          let result: Result<T, any Error>
          do {
            if savepoint {
              result = .success(try CachedSavepoint.operation.run(in: db) { try body(db) })
            } else {
              result = .success(try body(db))
            }
          } catch {
            result = .failure(error)
          }
          return { commitError in
            if let commitError {
              continuation.resume(throwing: commitError)
            } else {
              continuation.resume(with: result)
            }
          }
        }, fail: { continuation.resume(throwing: $0) }, servesWaiters: servesWaiters)
      submit(pending)
    }
  }

  private func flushLoop() {
    while true {
      let batch = state.withLock { state -> [Pending] in
        if state.pending.isEmpty {
          state.flushing = false
          return []
        }
        if state.pending.count <= maxBatch {
          let batch = state.pending
          state.pending.removeAll(keepingCapacity: true)
          return batch
        }
        let batch = Array(state.pending.prefix(maxBatch))
        state.pending.removeFirst(maxBatch)
        return batch
      }
      if batch.isEmpty { return }
      var resumers: [Resumer] = []
      resumers.reserveCapacity(batch.count)
      // Resumers of what the services served, after the operations' (which they follow).
      var served: [Resumer] = []
      let services = batch.contains { $0.servesWaiters } ? waiterServices.withLock { $0 } : []
      let began = ContinuousClock.now
      do {
        try writer.writeWithoutTransaction { db in
          // Prepared once, like the savepoints (GRDB's `inTransaction` prepares both each time).
          try db.cachedStatement(sql: "BEGIN IMMEDIATE TRANSACTION").execute()
          // The write lock is held: the WAL is what other processes left, as of now.
          let wal = wal
          walWatch.withLock { watch in
            if wal.stamp() != watch.own { watch.foreign += 1 }
            watch.inTransaction = true
          }
          defer { walWatch.withLock { $0 = (wal.stamp(), $0.foreign, false) } }
          do {
            for operation in batch { resumers.append(operation.execute(db)) }
            for service in services { try service(db, &served) }
            try db.cachedStatement(sql: "COMMIT TRANSACTION").execute()
          } catch {
            if db.isInsideTransaction { try? db.cachedStatement(sql: "ROLLBACK TRANSACTION").execute() }
            throw error
          }
        }
        let committed = ContinuousClock.now
        counters.withLock {
          $0.transactions += 1
          $0.operations += batch.count
          $0.busy += committed - began
        }
        checkpointer?.committed()
        for resume in resumers { resume(nil) }
        for resume in served { resume(nil) }
        // Between two transactions, after the callers of this one were answered: the operations
        // queued meanwhile wait for the last frames' copy (a few milliseconds), not for the
        // backstop's (the whole WAL's, in a commit).
        if let checkpointer, checkpointer.takeRestart() {
          let copying = ContinuousClock.now
          writer.writeWithoutTransaction { db in checkpointer.finishOnWriter(db.sqliteConnection) }
          let copied = ContinuousClock.now
          counters.withLock { $0.busy += copied - copying }
        }
      } catch {
        let failed = ContinuousClock.now
        counters.withLock { $0.busy += failed - began }
        // The transaction did not commit: every caller, whether its operation ran or not, gets the error.
        for resume in resumers { resume(error) }
        for resume in served { resume(error) }
        for operation in batch.dropFirst(resumers.count) { operation.fail(error) }
      }
    }
  }
}
