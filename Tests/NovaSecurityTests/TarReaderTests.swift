import Foundation
import NovaCore
import NovaTestSupport
import Testing

@testable import NovaSecurity

/// Issue #13 point 11: the bundle reader is strict and bounded.
@Suite("Strict tar reader")
struct TarReaderTests {
  /// A ustar header with the given fields (checksum computed), as a bundle would have it unless
  /// a test changes one.
  static func header(name: String, size: String? = nil, length: Int = 0, type: UInt8 = 0x30, prefix: String = "") -> [UInt8] {
    var block = [UInt8](repeating: 0, count: 512)
    func put(_ text: String, at offset: Int) { block.replaceSubrange(offset..<offset + text.utf8.count, with: Array(text.utf8)) }
    put(name, at: 0)
    put("0000644", at: 100)
    put("0000000", at: 108)
    put("0000000", at: 116)
    put(size ?? String(format: "%011o", length), at: 124)
    put("00000000000", at: 136)
    block[156] = type
    put("ustar", at: 257)
    put("00", at: 263)
    put(prefix, at: 345)
    put("        ", at: 148)
    put(String(format: "%06o", block.reduce(0) { $0 + Int($1) }) + "\0 ", at: 148)
    return block
  }

  static func entry(_ name: String, _ content: String) -> [UInt8] {
    let bytes = Array(content.utf8)
    return header(name: name, length: bytes.count) + bytes + [UInt8](repeating: 0, count: (512 - bytes.count % 512) % 512)
  }

  /// Reads `archive` whole; the names read, or the error.
  static func read(_ archive: [UInt8], limits: TarReader.Limits = .init()) -> Result<[String], TarError> {
    var handed = false
    var reader = TarReader(limits: limits) {
      defer { handed = true }
      return handed ? nil : archive
    }
    var names: [String] = []
    do {
      try reader.forEachFile { name, _ in
        names.append(name)
        return { _ in }
      }
      return .success(names)
    } catch let error as TarError {
      return .failure(error)
    } catch {
      Issue.record("unexpected \(error)")
      return .failure(TarError(offset: -1, message: "\(error)"))
    }
  }

  @Test func aWellFormedArchiveReads() {
    let archive = Self.entry("a.txt", "hello") + Self.entry("b/c.json", "{}") + [UInt8](repeating: 0, count: 1024)
    #expect(Self.read(archive) == .success(["a.txt", "b/c.json"]))
    #expect(TarReader.octal(Array("00000000012\0".utf8)[...]) == 10)
    #expect(TarReader.octal(Array("   12 ".utf8)[...]) == 10)
  }

  @Test(arguments: [
    (header(name: "x", size: "-0000000001"), "not an octal number"),
    (header(name: "x", size: "0000000009a"), "not an octal number"),
    ([UInt8](header(name: "x").enumerated().map { $0.offset == 124 ? 0x80 : $0.element }), "checksum"),
    (header(name: "x", prefix: "some/dir"), "ustar prefix"),
    (header(name: "link", type: 0x32), "not a regular file"),
    (header(name: "dir/", type: 0x35), "not a regular file"),
    (header(name: "/etc/passwd"), "not a plain relative path"),
    (header(name: "a/../../x"), "not a plain relative path"),
  ])
  func aBadHeaderIsRefusedNamingWhere(header: [UInt8], expected: String) {
    guard case .failure(let error) = Self.read(header + [UInt8](repeating: 0, count: 1024)) else {
      Issue.record("accepted a header that should fail with \(expected)")
      return
    }
    #expect(error.message.contains(expected), "\(error)")
    #expect(error.offset >= 0 && error.offset < 512)
  }

  @Test func duplicateOrUnsortedNamesAndTooManyEntriesOrBytesAreRefused() {
    let end = [UInt8](repeating: 0, count: 1024)
    guard case .failure(let twice) = Self.read(Self.entry("a", "1") + Self.entry("a", "2") + end) else {
      Issue.record("duplicate")
      return
    }
    #expect(twice.message.contains("'a' appears twice") && twice.offset == 1024)
    guard case .failure(let unsorted) = Self.read(Self.entry("b", "1") + Self.entry("a", "2") + end) else {
      Issue.record("order")
      return
    }
    #expect(unsorted.message.contains("comes after 'b'"))
    let many = (0..<5).flatMap { Self.entry("f\($0)", "x") } + end
    guard case .failure(let count) = Self.read(many, limits: .init(maxEntries: 4, maxTotalBytes: 1 << 20)) else {
      Issue.record("count")
      return
    }
    #expect(count.message.contains("more than 4 entries"))
    guard case .failure(let bytes) = Self.read(many, limits: .init(maxEntries: 10, maxTotalBytes: 3)) else {
      Issue.record("bytes")
      return
    }
    #expect(bytes.message.contains("more than 3 bytes"))
    guard case .failure(let short) = Self.read(Array(Self.entry("a", "hello").prefix(515))) else {
      Issue.record("short")
      return
    }
    #expect(short.message.contains("ends early"))
  }

  /// 64 MiB of zeros gzip to about 64 KiB: the reader refuses it as a bomb before reading it all.
  @Test func aGzipBombIsRefusedEarly() throws {
    let directory = try TemporaryDirectory.make("nova-bomb")
    let path = directory.appendingPathComponent("bomb.tar.gz").path
    _ = FileManager.default.createFile(atPath: path, contents: nil)
    let output = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
    let gzip = try GzipWriter(output: output, level: 9)
    try gzip.write(Self.header(name: "audit/entries.jsonl", length: 64 << 20))
    let zeros = [UInt8](repeating: 0, count: 1 << 20)
    for _ in 0..<64 { try gzip.write(zeros) }
    try gzip.finish()
    try output.close()
    #expect {
      _ = try EvidenceBundle.verify(path: path, verifier: NoteSigner.generate(name: "k").verifier)
    } throws: { "\($0)".contains("gzip bomb") }
  }
}
