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
