import Foundation
import GRDB
import NovaDatabase
import NovaTestSupport
import Synchronization
import Testing

/// Issue #24: a passive checkpoint copies what was committed before it began, and a writer that
/// never pauses has committed more by then, so the WAL never started over: it grew to the
/// backstop (128 MiB), whose checkpoint in a commit then held every operation 17-37 ms, twice a
/// second at a steady 16,000 jobs/s. The checkpoints now catch up and have the writer copy the
/// last frames itself between two transactions.
@Suite("WAL restart", .timeLimit(.minutes(5)))
struct WALRestartTests {
  @Test func theWALStartsOverWhileTheWriterCommitsWithoutPause() async throws {
    let directory = try TemporaryDirectory.make()
    // Fifty to a hundred megabytes of rows here: gone when the test ends.
    defer { try? FileManager.default.removeItem(at: directory) }
    let path = directory.appendingPathComponent("restart.sqlite").path
    var configuration = NovaDatabase.Configuration(path: path)
    configuration.walRestartFrames = 64
    let database = try NovaDatabase(configuration: configuration)
    try await database.write { db in try db.execute(sql: "CREATE TABLE t (id INTEGER PRIMARY KEY, data BLOB NOT NULL)") }
    let row = Data(repeating: 0x5A, count: 1000)
    let rows = RowCount()
    let start = ContinuousClock.now
    // Eight writers without a pause between their writes, for 48 MB and at least 1.5 s (however
    // busy the machine): the writer commits back to back, many times over the checkpoints' 100 ms.
    try await withThrowingTaskGroup(of: Void.self) { group in
      for _ in 0..<8 {
        group.addTask {
          while rows.value.withLock({ $0 }) < 48_000 || ContinuousClock.now - start < .milliseconds(1500) {
            try await database.write { db in
              for _ in 0..<8 { try db.execute(sql: "INSERT INTO t (data) VALUES (?)", arguments: [row]) }
            }
            rows.value.withLock { $0 += 8 }
          }
        }
      }
      try await group.waitForAll()
    }
    let written = rows.value.withLock { $0 } * row.count
    let wal = try FileManager.default.attributesOfItem(atPath: path + "-wal")[.size] as? Int ?? 0
    let statistics = database.checkpointStatistics
    #expect(statistics.writerCheckpoints > 0, "the writer never finished a checkpoint: \(statistics)")
    #expect(statistics.failures == 0, "checkpoints failed, the last with SQLite code \(statistics.lastCode)")
    // Started over, the WAL file is reused from its beginning: it stays a fraction of what went
    // through it (without restarts it held every frame, more than the rows' bytes; it reached
    // the 128 MiB backstop here).
    #expect(wal < written / 4, "WAL \(wal) bytes after \(written) bytes of rows")
    #expect(try await database.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM t") } == written / row.count)
  }
}

/// Rows written by the test's writers together.
private final class RowCount: Sendable {
  let value = Mutex(0)
}
