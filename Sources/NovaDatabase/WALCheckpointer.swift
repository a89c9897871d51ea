import Dispatch
import GRDBSQLite
import Synchronization

/// Copies the WAL back into the database file on a connection and thread of its own, so that
/// the single writer never stops to do it.
///
/// SQLite's automatic checkpoint runs in the commit that crosses its threshold: with 8,192
/// pages that commit copied 32 MiB and synced the file while every queued operation waited on
/// it (50 ms and more; most of the p99 of a job's enqueue→start at a steady 8,000 jobs/s). A
/// passive checkpoint here runs beside the writer: it copies the frames committed before it
/// began, takes no write lock, and lets the writer restart the WAL once every frame is back.
/// The writer keeps an automatic checkpoint far above what this one lets accumulate, as a
/// backstop should this one fail or fall behind.
///
/// A passive checkpoint never lets the WAL start over while the writer commits without pause
/// (it copies what was committed before it began, and the writer has committed more by then),
/// so the WAL grew to the backstop, whose checkpoint in a commit then held every operation
/// 17-37 ms, twice a second at a steady 16,000 jobs/s. Once the WAL holds `restartFrames`, this
/// one catches up on what was committed while it ran and asks the writer to copy the few
/// frames left itself, between two transactions (`takeRestart`): its next commit starts the
/// WAL over.
package final class WALCheckpointer: Sendable {
  private let path: String
  /// Least time between two checkpoints: a hot page rewritten by many commits in between is
  /// copied once.
  private let interval: DispatchTimeInterval
  private let queue = DispatchQueue(label: "nova.sqlite.checkpoint")
  private let scheduled = Atomic<Bool>(false)
  /// WAL frames from which a checkpoint that copied them all asks the writer to finish.
  private let restartFrames: Int
  private let restartWanted = Atomic<Bool>(false)
  /// Opened on the first checkpoint and used only on `queue` (or in deinit).
  private let connection = Mutex<OpaquePointer?>(nil)
  private let counters = Mutex<Statistics>(Statistics())

  /// What the checkpoints did, for tests and diagnostics.
  package struct Statistics: Sendable, Equatable {
    /// Checkpoints run.
    package var runs = 0
    /// Checkpoints that failed (an error other than a busy database).
    package var failures = 0
    /// Checkpoints that found the database busy (another checkpoint running, or a lock held at
    /// that instant): the next one does their work.
    package var busy = 0
    /// SQLite's result code of the last checkpoint that did not succeed.
    package var lastCode: Int32 = 0
    /// Frames in the WAL at the last checkpoint, and how many of them are back in the database.
    package var walFrames = 0
    package var framesBack = 0
    /// Times the writer copied the last frames itself so that the WAL could start over, and
    /// the frames the WAL held before its last restart.
    package var writerCheckpoints = 0
    package var restartedFrom = 0
  }

  package var statistics: Statistics { counters.withLock { $0 } }

  init(path: String, interval: DispatchTimeInterval = .milliseconds(100), restartFrames: Int = 4096) {
    self.path = path
    self.interval = interval
    self.restartFrames = restartFrames
  }

  deinit {
    connection.withLock { handle in
      if let open = handle { sqlite3_close_v2(open) }
      handle = nil
    }
  }

  /// Called after each commit of the writer: schedules a checkpoint unless one is scheduled.
  func committed() {
    guard scheduled.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else { return }
    queue.asyncAfter(deadline: .now() + interval) { [self] in
      // Commits from here on schedule the next one.
      scheduled.store(false, ordering: .releasing)
      checkpoint()
    }
  }

  /// Runs a passive checkpoint now, on the calling thread; with the WAL past `restartFrames`
  /// and all of it copied, catches up on the frames committed meanwhile (fewer each time) and
  /// then asks the writer to copy the rest.
  func checkpoint() {
    guard let first = passive(), first.frames >= restartFrames, first.back == first.frames else { return }
    var frames = first.frames
    for _ in 0..<Self.catchUpRounds {
      guard let next = passive(), next.back == next.frames else { return }
      // Fewer than before, or none: the WAL started over meanwhile.
      let committedMeanwhile = next.frames - frames
      frames = next.frames
      if committedMeanwhile <= Self.smallTail { break }
    }
    restartWanted.store(true, ordering: .releasing)
  }

  /// Catch-up checkpoints before the writer is asked to finish, and the frames committed
  /// meanwhile under which no further one is worth it.
  static let catchUpRounds = 3
  static let smallTail = 256

  /// True once, after a checkpoint asked the writer to copy the last frames itself.
  func takeRestart() -> Bool {
    restartWanted.exchange(false, ordering: .acquiringAndReleasing)
  }

  /// Copies the frames left on the writer's connection `handle`, outside any transaction: with
  /// every frame back in the database, its next commit starts the WAL over.
  func finishOnWriter(_ handle: OpaquePointer?) {
    guard let done = run(on: handle) else { return }
    counters.withLock {
      $0.writerCheckpoints += 1
      $0.restartedFrom = done.frames
    }
  }

  /// One passive checkpoint on this checkpointer's connection (opened on first use).
  private func passive() -> (frames: Int, back: Int)? {
    connection.withLock { handle -> (frames: Int, back: Int)? in
      if handle == nil {
        var opened: OpaquePointer?
        // A connection learns that the file is in WAL mode when it first reads it; until then
        // a checkpoint does nothing.
        var code = sqlite3_open_v2(path, &opened, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nil)
        if code == SQLITE_OK { code = sqlite3_exec(opened, "SELECT count(*) FROM sqlite_master", nil, nil, nil) }
        if code != SQLITE_OK {
          sqlite3_close_v2(opened)
          counters.withLock { $0.count(failed: code) }
          return nil
        }
        handle = opened
      }
      counters.withLock { $0.runs += 1 }
      guard let done = run(on: handle) else { return nil }
      counters.withLock {
        $0.walFrames = done.frames
        $0.framesBack = done.back
      }
      return done
    }
  }

  /// A passive checkpoint on `handle`: the WAL's frames and how many are back in the database,
  /// or nil (counted) when it did not succeed.
  private func run(on handle: OpaquePointer?) -> (frames: Int, back: Int)? {
    var logFrames: Int32 = 0
    var backFrames: Int32 = 0
    let code = sqlite3_wal_checkpoint_v2(handle, nil, SQLITE_CHECKPOINT_PASSIVE, &logFrames, &backFrames)
    guard code == SQLITE_OK, logFrames >= 0 else {
      // SQLITE_OK with -1 frames: the connection does not see the WAL (a failure).
      counters.withLock { $0.count(failed: code == SQLITE_OK ? SQLITE_ERROR : code) }
      return nil
    }
    return (Int(logFrames), Int(backFrames))
  }
}

extension WALCheckpointer.Statistics {
  /// Counts a checkpoint that did not succeed with SQLite's `code`.
  mutating func count(failed code: Int32) {
    lastCode = code
    if code & 0xFF == SQLITE_BUSY || code & 0xFF == SQLITE_LOCKED { busy += 1 } else { failures += 1 }
  }
}
