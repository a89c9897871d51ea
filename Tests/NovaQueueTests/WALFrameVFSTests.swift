import Foundation
import GRDB
import NovaDatabase
import NovaTestSupport
import Testing

/// Issue #24: SQLite appends a WAL frame as two writes, its 24-byte header and then its page;
/// under small group commits those system calls were the largest single cost of the writer
/// thread. Nova's VFS shim writes both with one call.
///
/// Each test writes through a connection of its own with no checkpoint, copies the database and
/// its WAL while that connection is open and idle, and opens the copy: SQLite then recovers
/// every transaction from the WAL alone (the database file holds none of them), checking each
/// frame's checksums and salt, so a header written out of place, out of order or not at all
/// loses rows or frames here.
@Suite("WAL frame VFS")
struct WALFrameVFSTests {
  private static func row(_ index: Int, _ salt: Int = 0) -> Data {
    Data((0..<3000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ index &+ salt) })
  }

  /// A database written by `write` on a connection without checkpoints; returns its copy,
  /// recovered from the WAL, and the number of frames the WAL file holds.
  private func recoveredCopy(
    _ directory: URL, configure: @escaping @Sendable (Database) throws -> Void, write: (DatabaseQueue) throws -> Void
  ) throws -> (DatabaseQueue, frames: Int) {
    #expect(NovaDatabase.walFrameVFSRegistered == 0)
    let path = directory.appendingPathComponent("frames.sqlite").path
    var configuration = Configuration()
    configuration.journalMode = .wal
    configuration.prepareDatabase { db in
      try db.execute(sql: "PRAGMA wal_autocheckpoint = 0")
      try configure(db)
    }
    let source = try DatabaseQueue(path: path, configuration: configuration)
    try source.write { db in try db.execute(sql: "CREATE TABLE t (id INTEGER PRIMARY KEY, data BLOB NOT NULL)") }
    try write(source)
    let copy = directory.appendingPathComponent("copy")
    try FileManager.default.createDirectory(at: copy, withIntermediateDirectories: true)
    let copied = copy.appendingPathComponent("frames.sqlite").path
    try FileManager.default.copyItem(atPath: path + "-wal", toPath: copied + "-wal")
    try FileManager.default.copyItem(atPath: path, toPath: copied)
    let walBytes = try FileManager.default.attributesOfItem(atPath: copied + "-wal")[.size] as? Int ?? 0
    _ = source
    return (try DatabaseQueue(path: copied), (walBytes - 32) / (4096 + 24))
  }

  /// The frames SQLite recovered from the copy's WAL (a passive checkpoint reports them).
  private func recoveredFrames(_ database: DatabaseQueue) throws -> Int {
    try database.writeWithoutTransaction { db in try Row.fetchOne(db, sql: "PRAGMA wal_checkpoint(PASSIVE)")?[1] as Int? } ?? -1
  }

  @Test func framesWrittenWithOneCallAreWhatSQLiteRecoversFromTheWAL() throws {
    let directory = try TemporaryDirectory.make()
    defer { try? FileManager.default.removeItem(at: directory) }
    let before = NovaDatabase.walFrameWrites
    // One commit per row, as single submissions arrive: each commit appends frames.
    let (recovered, frames) = try recoveredCopy(directory, configure: { _ in }) { source in
      for index in 0..<60 {
        try source.write { db in try db.execute(sql: "INSERT INTO t (id, data) VALUES (?, ?)", arguments: [index, Self.row(index)]) }
      }
    }
    let after = NovaDatabase.walFrameWrites
    #expect(after.joined - before.joined >= 60, "frames written with one call: \(after.joined - before.joined)")
    #expect(frames >= 60)
    #expect(try recoveredFrames(recovered) == frames)
    let rows = try recovered.read { db in try Row.fetchAll(db, sql: "SELECT id, data FROM t ORDER BY id") }
    #expect(rows.map { $0["id"] as Int } == Array(0..<60))
    for (index, row) in rows.enumerated() { #expect(row["data"] as Data == Self.row(index), "row \(index)") }
  }

  /// A transaction larger than the page cache spills pages into the WAL before it commits; when
  /// it changes a spilled page again, SQLite overwrites that frame in place and, at the commit,
  /// rewrites the headers (checksums) of the frames from there on, with no page after them.
  /// Holding the last of those headers back, as an appended one is, left the commit frame's
  /// old checksum on disk: recovery dropped the whole committed transaction.
  @Test func aCommitThatRewritesItsSpilledFramesIsRecoveredWhole() throws {
    let directory = try TemporaryDirectory.make()
    defer { try? FileManager.default.removeItem(at: directory) }
    let before = NovaDatabase.walFrameWrites
    let (recovered, frames) = try recoveredCopy(directory, configure: { db in try db.execute(sql: "PRAGMA cache_size = 8") }) { source in
      try source.write { db in
        for index in 0..<200 { try db.execute(sql: "INSERT INTO t (id, data) VALUES (?, ?)", arguments: [index, Self.row(index)]) }
        for index in 0..<20 { try db.execute(sql: "UPDATE t SET data = ? WHERE id = ?", arguments: [Self.row(index, 7), index]) }
      }
    }
    let after = NovaDatabase.walFrameWrites
    #expect(after.loneHeaders - before.loneHeaders >= 1, "no frame header was rewritten: the test no longer spills")
    #expect(try recoveredFrames(recovered) == frames)
    let rows = try recovered.read { db in try Row.fetchAll(db, sql: "SELECT id, data FROM t ORDER BY id") }
    #expect(rows.count == 200)
    for (index, row) in rows.enumerated() { #expect(row["data"] as Data == Self.row(index, index < 20 ? 7 : 0), "row \(index)") }
    let integrity = try recovered.read { db in try String.fetchOne(db, sql: "PRAGMA integrity_check") }
    #expect(integrity == "ok")
  }
}
