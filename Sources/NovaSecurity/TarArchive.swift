import Foundation
import NovaCore

/// Plain ustar archives: regular files only, no extended headers, owner 0:0, mode 0644, one
/// fixed modification time, so the same files give the same bytes.
enum TarArchive {
  static let blockSize = 512

  /// The 512-byte header of a regular file.
  static func header(name: String, size: Int, mtime: Int64) throws -> [UInt8] {
    let nameBytes = Array(name.utf8)
    guard nameBytes.count <= 100 else { throw NovaError.invalidInput(field: "tar entry", message: "name longer than 100 bytes: \(name)") }
    var block = [UInt8](repeating: 0, count: blockSize)
    func put(_ bytes: [UInt8], at offset: Int) { block.replaceSubrange(offset..<offset + bytes.count, with: bytes) }
    func octal(_ value: Int64, width: Int) -> [UInt8] {
      let digits = String(value, radix: 8)
      return Array((String(repeating: "0", count: max(0, width - 1 - digits.count)) + digits).utf8) + [0]
    }
    put(nameBytes, at: 0)
    put(octal(0o644, width: 8), at: 100)
    put(octal(0, width: 8), at: 108)
    put(octal(0, width: 8), at: 116)
    put(octal(Int64(size), width: 12), at: 124)
    put(octal(mtime, width: 12), at: 136)
    put(Array(repeating: UInt8(ascii: " "), count: 8), at: 148)
    block[156] = UInt8(ascii: "0")
    put(Array("ustar".utf8) + [0], at: 257)
    put(Array("00".utf8), at: 263)
    let checksum = block.reduce(0) { $0 + Int64($1) }
    put(Array(String(format: "%06o", checksum).utf8) + [0, UInt8(ascii: " ")], at: 148)
    return block
  }

  /// Zero bytes that pad `size` to whole blocks.
  static func padding(for size: Int) -> [UInt8] {
    let rest = size % blockSize
    return rest == 0 ? [] : [UInt8](repeating: 0, count: blockSize - rest)
  }

  /// The two zero blocks that end an archive.
  static let trailer = [UInt8](repeating: 0, count: 2 * blockSize)
}

/// Reads a tar stream (from gzip) entry by entry, handing each file's content over in chunks.
struct TarReader {
  private let next: () throws -> [UInt8]?
  private var buffer: [UInt8] = []
  private var offset = 0
  private(set) var position = 0
  let path: String

  init(path: String, chunks: @escaping () throws -> [UInt8]?) {
    self.path = path
    self.next = chunks
  }

  private mutating func take(_ count: Int) throws -> [UInt8]? {
    var out: [UInt8] = []
    out.reserveCapacity(count)
    while out.count < count {
      if offset == buffer.count {
        guard let chunk = try next() else { return out.isEmpty ? nil : out }
        buffer = chunk
        offset = 0
      }
      let n = min(count - out.count, buffer.count - offset)
      out += buffer[offset..<offset + n]
      offset += n
    }
    position += count
    return out
  }

  /// What is left of the stream after the end blocks, a chunk at a time; nil at its end.
  mutating func remainder() throws -> [UInt8]? {
    if offset < buffer.count {
      let rest = Array(buffer[offset...])
      offset = buffer.count
      position += rest.count
      return rest
    }
    guard let chunk = try next() else { return nil }
    buffer = chunk
    offset = chunk.count
    position += chunk.count
    return chunk
  }

  /// Calls `body(name, size)` for each file, then `chunk` with its content in pieces.
  mutating func forEachFile(_ body: (String, Int) throws -> ((([UInt8]) throws -> Void))) throws {
    while true {
      let at = position
      guard let header = try take(TarArchive.blockSize), header.count == TarArchive.blockSize else {
        throw NovaError.malformedInput(field: path, message: "the tar archive ends without its end blocks (byte \(at))")
      }
      if header.allSatisfy({ $0 == 0 }) { return }
      let name = String(decoding: header[0..<100].prefix { $0 != 0 }, as: UTF8.self)
      let sizeText = String(decoding: header[124..<136].prefix { $0 != 0 && $0 != UInt8(ascii: " ") }, as: UTF8.self)
      guard let size = Int(sizeText, radix: 8) else {
        throw NovaError.malformedInput(field: path, message: "tar header at byte \(at) has no valid size")
      }
      let stored = header[148..<156].prefix { $0 != 0 && $0 != UInt8(ascii: " ") }
      var blank = header
      blank.replaceSubrange(148..<156, with: Array(repeating: UInt8(ascii: " "), count: 8))
      guard Int(String(decoding: stored, as: UTF8.self), radix: 8) == Int(blank.reduce(0) { $0 + Int($1) }) else {
        throw NovaError.malformedInput(field: path, message: "tar header at byte \(at) (\(name)) has a wrong checksum")
      }
      guard header[156] == UInt8(ascii: "0") || header[156] == 0 else {
        throw NovaError.malformedInput(field: path, message: "tar entry \(name) is not a regular file")
      }
      let consume = try body(name, size)
      var left = size
      while left > 0 {
        guard let piece = try take(min(left, 1 << 16)), !piece.isEmpty else {
          throw NovaError.malformedInput(field: path, message: "tar entry \(name) ends early")
        }
        try consume(piece)
        left -= piece.count
      }
      _ = try take(TarArchive.padding(for: size).count)
    }
  }
}
