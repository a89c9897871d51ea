import Dispatch
import GRDB
import Synchronization

/// Runs write operations from many tasks in shared transactions (group commit), so that the
/// queue's throughput is not bound by one commit (and one WAL sync) per operation.
///
/// Each operation runs in its own savepoint: one that throws is rolled back alone, the others
/// commit. Callers are resumed only after the shared transaction committed.
final class GroupCommitWriter: Sendable {
  private struct Pending: Sendable {
    /// Runs the operation inside the open transaction and returns how to resume its caller.
    let execute: @Sendable (Database) -> @Sendable ((any Error)?) -> Void
    /// Resumes the caller with an error without running the operation.
    let fail: @Sendable (any Error) -> Void
  }

  private struct State {
    var pending: [Pending] = []
    var flushing = false
  }

  private let writer: DatabasePool
  /// The database file, named in translated errors.
  private let path: String
  private let maxBatch: Int
  /// Called on the writer's thread after each commit.
  private let committed: @Sendable () -> Void
  private let state = Mutex(State())
  private let counters = Mutex<(transactions: Int, operations: Int)>((0, 0))

  /// Transactions committed and operations they carried, for diagnostics.
  var statistics: (transactions: Int, operations: Int) { counters.withLock { $0 } }
  private let queue = DispatchQueue(label: "nova.sqlite.group-commit")

  init(writer: DatabasePool, path: String, maxBatch: Int, committed: @escaping @Sendable () -> Void = {}) {
    self.writer = writer
    self.path = path
    self.maxBatch = max(1, maxBatch)
    self.committed = committed
  }

  /// Runs `body` in a write transaction shared with other concurrent callers. With `savepoint`
  /// false the caller promises that `body` changes nothing when it throws (a single statement,
  /// or checks before the first write), which saves the savepoint's cost.
  /// SQLite's errors leave translated (`NovaError.unavailable` for a lock, `.storage` otherwise).
  func perform<T: Sendable>(savepoint: Bool = true, _ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
    do {
      return try await enqueue(savepoint: savepoint, body)
    } catch {
      throw SQLiteErrorTranslation.translate(error, path: path)
    }
  }

  private func enqueue<T: Sendable>(savepoint: Bool, _ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
      let pending = Pending(
        execute: { db in
          let result: Result<T, any Error>
          do {
            if savepoint {
              // Prepared once per connection: GRDB's `inSavepoint` compiles its statements on
              // every call, which a profile of single submissions showed (with its authorizer).
              try db.cachedStatement(sql: "SAVEPOINT nova_operation").execute()
              do {
                let value = try body(db)
                try db.cachedStatement(sql: "RELEASE SAVEPOINT nova_operation").execute()
                result = .success(value)
              } catch {
                // (Some SQLite errors roll the whole transaction back themselves.)
                if db.isInsideTransaction {
                  try db.cachedStatement(sql: "ROLLBACK TRANSACTION TO SAVEPOINT nova_operation").execute()
                  try db.cachedStatement(sql: "RELEASE SAVEPOINT nova_operation").execute()
                }
                throw error
              }
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
        }, fail: { continuation.resume(throwing: $0) })
      let startFlush = state.withLock { state -> Bool in
        state.pending.append(pending)
        if state.flushing { return false }
        state.flushing = true
        return true
      }
      if startFlush { queue.async { self.flushLoop() } }
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
      var resumers: [@Sendable ((any Error)?) -> Void] = []
      resumers.reserveCapacity(batch.count)
      do {
        try writer.writeWithoutTransaction { db in
          // Prepared once, like the savepoints (GRDB's `inTransaction` prepares both each time).
          try db.cachedStatement(sql: "BEGIN IMMEDIATE TRANSACTION").execute()
          do {
            for operation in batch { resumers.append(operation.execute(db)) }
            try db.cachedStatement(sql: "COMMIT TRANSACTION").execute()
          } catch {
            if db.isInsideTransaction { try? db.cachedStatement(sql: "ROLLBACK TRANSACTION").execute() }
            throw error
          }
        }
        counters.withLock {
          $0.transactions += 1
          $0.operations += batch.count
        }
        committed()
        for resume in resumers { resume(nil) }
      } catch {
        // The transaction did not commit: every caller, whether its operation ran or not, gets the error.
        for resume in resumers { resume(error) }
        for operation in batch.dropFirst(resumers.count) { operation.fail(error) }
      }
    }
  }
}
