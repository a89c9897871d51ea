import Foundation
import GRDB
import NovaCore
import NovaDatabase

/// The most a job queue on one SQLite file can do on this machine: the bare lifecycle of a job
/// (insert, claim, delete) in plain SQL, 100 jobs per transaction, WAL with `synchronous = NORMAL`,
/// one connection, nothing else. `nova bench queue --backend sqlite` is measured against it, so
/// that "how close to the ceiling" is one command on any machine.
public enum SQLiteCeilingBenchmark {
  /// One run's figures.
  public struct Result: Codable, Sendable, Equatable {
    public var jobs: Int
    public var batch: Int
    public var seconds: Double
    /// Whole lifecycles (insert, claim, delete) per second.
    public var jobs_per_s: Double
    /// Inserts alone, in transactions of `batch`.
    public var inserts_per_s: Double
  }

  /// Runs `jobs` lifecycles in a fresh database at `path`, `batch` jobs per transaction; the
  /// payload is `payloadBytes` of JSON, like a small job's.
  public static func run(path: String, jobs: Int, batch: Int = 100, payloadBytes: Int = 64) throws -> Result {
    // SQLite set up as Nova's own database sets it (no memory statistics, the WAL frame VFS),
    // before it opens.
    _ = NovaDatabase.walFrameVFSRegistered
    var configuration = Configuration()
    configuration.journalMode = .wal
    configuration.prepareDatabase { db in
      try db.execute(sql: "PRAGMA synchronous = NORMAL")
    }
    let queue = try DatabaseQueue(path: path, configuration: configuration)
    try queue.write { db in
      try db.execute(
        sql: """
          CREATE TABLE jobs (
            id INTEGER PRIMARY KEY, queue TEXT NOT NULL, payload BLOB NOT NULL, state INTEGER NOT NULL,
            lease_owner TEXT, lease_expires_at REAL);
          CREATE INDEX jobs_available ON jobs(queue, id) WHERE state = 0;
          """)
    }
    let payload = Data(("{\"n\":\"" + String(repeating: "x", count: max(0, payloadBytes - 8)) + "\"}").utf8)
    let start = ContinuousClock.now
    var inserted = 0
    while inserted < jobs {
      let count = min(batch, jobs - inserted)
      try queue.write { db in
        let statement = try db.cachedStatement(sql: "INSERT INTO jobs (queue, payload, state) VALUES ('default', ?, 0)")
        for _ in 0..<count { try statement.execute(arguments: [payload]) }
      }
      inserted += count
    }
    let insertSeconds = (ContinuousClock.now - start).seconds
    var done = 0
    while done < jobs {
      let claimed: [Int64] = try queue.write { db in
        try Int64.fetchAll(
          db.cachedStatement(
            sql: """
              UPDATE jobs SET state = 1, lease_owner = 'w', lease_expires_at = ?
              WHERE id IN (SELECT id FROM jobs WHERE queue = 'default' AND state = 0 ORDER BY id LIMIT ?) RETURNING id
              """),
          arguments: [Date().timeIntervalSince1970 + 30, batch])
      }
      guard !claimed.isEmpty else { break }
      try queue.write { db in
        let statement = try db.cachedStatement(sql: "DELETE FROM jobs WHERE id = ? AND state = 1")
        for id in claimed { try statement.execute(arguments: [id]) }
      }
      done += claimed.count
    }
    let seconds = (ContinuousClock.now - start).seconds
    return Result(
      jobs: done, batch: batch, seconds: seconds, jobs_per_s: Double(done) / seconds, inserts_per_s: Double(jobs) / insertSeconds)
  }

  /// The median of several runs, figure by figure.
  public static func median(_ results: [Result]) -> Result {
    func middle(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
    guard var out = results.first else { return Result(jobs: 0, batch: 0, seconds: 0, jobs_per_s: 0, inserts_per_s: 0) }
    out.seconds = middle(results.map(\.seconds))
    out.jobs_per_s = middle(results.map(\.jobs_per_s))
    out.inserts_per_s = middle(results.map(\.inserts_per_s))
    return out
  }
}
