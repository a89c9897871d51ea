import Foundation
import GRDB
import NovaDatabase
import NovaTestSupport
import Testing

/// Issue #24: SQLite appends a WAL frame as two writes, its 24-byte header and then its page;
/// under small group commits those system calls were the largest single cost of the writer
/// thread. Nova's VFS shim writes both with one call.
@Suite("WAL frame VFS")
struct WALFrameVFSTests {
  @Test func framesWrittenWithOneCallAreWhatSQLiteRecoversFromTheWAL() async throws {
    #expect(NovaDatabase.walFrameVFSRegistered == 0)
    let directory = try TemporaryDirectory.make()
    defer { try? FileManager.default.removeItem(at: directory) }
    let path = directory.appendingPathComponent("frames.sqlite").path
    var configuration = NovaDatabase.Configuration(path: path)
    // No restart while the test writes: every frame it commits stays in the WAL.
    configuration.walRestartFrames = 1_000_000
    let database = try NovaDatabase(configuration: configuration)
    try await database.write { db in try db.execute(sql: "CREATE TABLE t (id INTEGER PRIMARY KEY, data BLOB NOT NULL)") }
    let before = NovaDatabase.walFrameWrites
    // One commit per row, as single submissions arrive: each commit appends frames.
    for index in 0..<60 {
      let row = Data((0..<3000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ index) })
      try await database.write { db in try db.execute(sql: "INSERT INTO t (id, data) VALUES (?, ?)", arguments: [index, row]) }
    }
    let after = NovaDatabase.walFrameWrites
    #expect(after.joined - before.joined >= 60, "frames written with one call: \(after.joined - before.joined)")

    // A copy of the database and its WAL, opened afresh, is recovered from the WAL: SQLite
    // checks every frame's checksums and salt, so a header and page written out of place or
    // out of order would lose rows here.
    let copy = directory.appendingPathComponent("copy")
    try FileManager.default.createDirectory(at: copy, withIntermediateDirectories: true)
    let copied = copy.appendingPathComponent("frames.sqlite").path
    try FileManager.default.copyItem(atPath: path + "-wal", toPath: copied + "-wal")
    try FileManager.default.copyItem(atPath: path, toPath: copied)
    let recovered = try DatabaseQueue(path: copied)
    let rows = try recovered.read { db in try Row.fetchAll(db, sql: "SELECT id, data FROM t ORDER BY id") }
    #expect(rows.count == 60)
    for (index, row) in rows.enumerated() {
      let expected = Data((0..<3000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ index) })
      #expect(row["id"] as Int == index)
      #expect(row["data"] as Data == expected, "row \(index)")
    }
    let integrity = try await recovered.read { db in try String.fetchOne(db, sql: "PRAGMA integrity_check") }
    #expect(integrity == "ok")
  }
}
