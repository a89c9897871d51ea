import GRDB
import NovaCore
import NovaDatabase

/// What an operation of `SQLiteJobQueue` changed in the jobs per queue, kind and state, summed
/// and written to `nova_job_counts` in one statement per counter when it ends.
///
/// Triggers on `nova_jobs` kept the counters until migration v22: a trigger runs as a program of
/// its own for every row, two updates per state change, and they took a third of the writer's
/// time (`nova bench queue --audit off`: 23,700 jobs/s with them, 34,000 without). A claim or a
/// completion of a hundred jobs now writes two counters.
struct JobCountChanges {
  private struct Counter: Hashable {
    let queue: String
    let kind: String
    let state: JobState
  }

  private var deltas: [Counter: Int] = [:]

  /// A job of `queue` and `kind` entered `state` (by `count` jobs; negative: left it).
  mutating func add(queue: String, kind: String, state: JobState, count: Int = 1) {
    deltas[Counter(queue: queue, kind: kind, state: state), default: 0] += count
  }

  /// Adds `other`'s changes to these.
  mutating func merge(_ other: JobCountChanges) {
    for (counter, delta) in other.deltas { deltas[counter, default: 0] += delta }
  }

  /// A job of `queue` and `kind` went from one state to another.
  mutating func move(queue: String, kind: String, from: JobState, to: JobState) {
    if from == to { return }
    add(queue: queue, kind: kind, state: from, count: -1)
    add(queue: queue, kind: kind, state: to)
  }

  /// Writes the sums in `db` (a counter that does not exist yet is created).
  func save(_ db: Database) throws {
    if deltas.isEmpty { return }
    let upsert = try db.cachedStatement(sql: Self.upsertSQL)
    for (counter, delta) in deltas where delta != 0 {
      let statement = RawStatement(upsert, in: db)
      statement.bind(1, counter.queue)
      statement.bind(2, counter.kind)
      statement.bind(3, counter.state.rawValue)
      statement.bind(4, delta)
      _ = try statement.run()
    }
  }

  private static let upsertSQL = """
    INSERT INTO nova_job_counts (queue, kind, state, n) VALUES (?, ?, ?, ?)
      ON CONFLICT (queue, kind, state) DO UPDATE SET n = n + excluded.n
    """
}
