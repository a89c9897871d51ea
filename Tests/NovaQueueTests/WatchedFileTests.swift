import Foundation
import NovaDatabase
import NovaTestSupport
import Testing

/// Issue #24: the token change marker (per request) and the WAL (twice per commit) are watched
/// through a descriptor kept open. What another process does to the file must still show at the
/// next look: a write through another descriptor, a removal, a file put in its place.
@Suite("Watched file")
struct WatchedFileTests {
  private func append(_ bytes: Int, to path: String) throws {
    let handle = try #require(FileHandle(forWritingAtPath: path))
    try handle.seekToEnd()
    try handle.write(contentsOf: Data(repeating: 0x2E, count: bytes))
    try handle.close()
  }

  @Test func aWriteThroughAnotherDescriptorChangesTheStamp() throws {
    let directory = try TemporaryDirectory.make()
    defer { try? FileManager.default.removeItem(at: directory) }
    let path = directory.appendingPathComponent("marker").path
    #expect(FileManager.default.createFile(atPath: path, contents: Data([1])))
    let watched = WatchedFile(path: path)
    let first = watched.stamp()
    #expect(first != .absent && first.size == 1)
    #expect(watched.stamp() == first, "nothing written, nothing changed")
    for round in 1...3 {
      try append(1, to: path)
      let next = watched.stamp()
      #expect(next.size == Int64(1 + round), "round \(round): the kept descriptor sees the new size")
      #expect(next.inode == first.inode)
    }
  }

  @Test func aFileRemovedOrReplacedIsFollowedByItsPath() throws {
    let directory = try TemporaryDirectory.make()
    defer { try? FileManager.default.removeItem(at: directory) }
    let path = directory.appendingPathComponent("wal").path
    let watched = WatchedFile(path: path)
    #expect(watched.stamp() == .absent, "no file yet")

    #expect(FileManager.default.createFile(atPath: path, contents: Data(count: 10)))
    let created = watched.stamp()
    #expect(created.size == 10)

    try FileManager.default.removeItem(atPath: path)
    #expect(watched.stamp() == .absent, "the kept descriptor's file has no name left")

    #expect(FileManager.default.createFile(atPath: path, contents: Data(count: 20)))
    #expect(watched.stamp().size == 20)

    // Replaced by a rename, as an editor or a restore would: the kept inode loses its name.
    let replacement = directory.appendingPathComponent("wal.new").path
    #expect(FileManager.default.createFile(atPath: replacement, contents: Data(count: 30)))
    let replacementInode = try #require(
      (try FileManager.default.attributesOfItem(atPath: replacement)[.systemFileNumber] as? NSNumber)?.uint64Value)
    #expect(rename(replacement, path) == 0)
    let replaced = watched.stamp()
    #expect(replaced.size == 30 && replaced.inode == replacementInode)

    // And the file put in place is the one watched from now on.
    try append(5, to: path)
    #expect(watched.stamp().size == 35)
  }
}
