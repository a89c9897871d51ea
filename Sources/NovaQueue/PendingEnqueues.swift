import NovaCore
import Synchronization

/// Enqueues waiting for the SQLite writer. Concurrent single submissions (one job per HTTP
/// request, one per arrival) are stored together by the next transaction, as one operation:
/// one statement lookup, one counter update and one audit sequence read for all of them,
/// where each used to pay its own (with a savepoint), most of a trickling job's write cost.
final class PendingEnqueues: Sendable {
  /// One caller's jobs and how to answer it.
  struct Entry: Sendable {
    let requests: [JobRequest]
    /// Read the first job back in the same transaction (a single submission's answer).
    let readBack: Bool
    let actor: String
    /// The caller's held audit events (its policy decision), written right before its jobs.
    let held: HeldAuditEvents?
    let heldEvents: [HeldAuditEvents.Event]
    let continuation: CheckedContinuation<Stored, any Error>
  }

  /// What an entry stored.
  struct Stored: Sendable {
    var results: [EnqueueResult]
    var job: Job?
  }

  private struct State {
    var entries: [Entry] = []
    /// A transaction that will store them is asked for and has not taken them yet.
    var requested = false
  }

  private let state = Mutex(State())

  /// Adds an entry; true when the caller must ask the writer for a transaction (none is asked
  /// for yet).
  func add(_ entry: Entry) -> Bool {
    state.withLock { state in
      state.entries.append(entry)
      if state.requested { return false }
      state.requested = true
      return true
    }
  }

  /// Entries waiting for the writer.
  var count: Int { state.withLock { $0.entries.count } }

  /// Takes every entry (on the writer): a later one asks for a transaction of its own.
  func takeAll() -> [Entry] {
    state.withLock { state in
      state.requested = false
      defer { state.entries.removeAll(keepingCapacity: true) }
      return state.entries
    }
  }

  /// Answers every waiting entry with `error` (the transaction asked for never ran).
  func failAll(_ error: any Error) {
    for entry in takeAll() { entry.continuation.resume(throwing: error) }
  }
}
