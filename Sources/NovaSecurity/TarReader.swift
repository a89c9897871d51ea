/// A tar stream that is not a Nova bundle's strict ustar, and where (byte offset in the stream).
struct TarError: Error, CustomStringConvertible, Equatable {
  var offset: Int
  var message: String
  var description: String { "\(message) (byte \(offset))" }
}

/// Reads a tar stream entry by entry, handing each file's content over in chunks, and refuses
/// anything a Nova bundle never holds: non-regular entries, a ustar `prefix`, sizes that are not
/// plain octal, names that are empty, absolute, climb with `..`, repeat or are out of order, and
/// more entries or bytes than the limits. Depends on nothing but the standard library, so that
/// the fuzzer (Fuzz/TarReaderFuzzer.swift) compiles it alone.
struct TarReader {
  /// Bounds on what one archive may hold.
  struct Limits: Equatable {
    var maxEntries = 256
    var maxTotalBytes = 64 << 30
  }

  static let blockSize = 512
  private let next: () throws -> [UInt8]?
  private let limits: Limits
  private var buffer: [UInt8] = []
  private var offset = 0
  private(set) var position = 0
  private var entries = 0
  private var totalBytes = 0
  private var lastName: [UInt8]?

  init(limits: Limits = Limits(), chunks: @escaping () throws -> [UInt8]?) {
    self.limits = limits
    self.next = chunks
  }

  private mutating func take(_ count: Int) throws -> [UInt8]? {
    var out: [UInt8] = []
    out.reserveCapacity(count)
    while out.count < count {
      if offset == buffer.count {
        guard let chunk = try next() else { break }
        buffer = chunk
        offset = 0
        continue
      }
      let n = min(count - out.count, buffer.count - offset)
      out += buffer[offset..<offset + n]
      offset += n
    }
    position += out.count
    return out.isEmpty ? nil : out
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

  /// A header's numeric field: octal digits, optionally padded with leading spaces or zeros and
  /// ended by NUL or space; nil for anything else (a sign, base-256, other characters).
  static func octal(_ field: ArraySlice<UInt8>) -> Int? {
    var value = 0
    var digits = 0
    var ended = false
    for byte in field {
      if ended {
        guard byte == 0 || byte == 0x20 else { return nil }
        continue
      }
      switch byte {
      case 0x30...0x37:
        guard digits < 20 else { return nil }
        value = value * 8 + Int(byte - 0x30)
        digits += 1
      case 0x20 where digits == 0: continue
      case 0, 0x20: ended = true
      default: return nil
      }
    }
    return digits > 0 ? value : nil
  }

  /// Calls `body(name, size)` for each file, then its returned closure with the content in
  /// pieces; stops at the end blocks.
  mutating func forEachFile(_ body: (String, Int) throws -> (([UInt8]) throws -> Void)) throws {
    while true {
      let at = position
      guard let header = try take(Self.blockSize), header.count == Self.blockSize else {
        throw TarError(offset: at, message: "the tar archive ends without its end blocks")
      }
      if header.allSatisfy({ $0 == 0 }) { return }
      let nameBytes = Array(header[0..<100].prefix { $0 != 0 })
      let name = String(decoding: nameBytes, as: UTF8.self)
      var blank = header
      blank.replaceSubrange(148..<156, with: [UInt8](repeating: 0x20, count: 8))
      guard let stored = Self.octal(header[148..<156]), stored == blank.reduce(0, { $0 + Int($1) }) else {
        throw TarError(offset: at, message: "tar header of '\(name)' has a wrong checksum")
      }
      guard header[156] == 0x30 || header[156] == 0 else {
        throw TarError(offset: at, message: "tar entry '\(name)' is not a regular file (type '\(Character(Unicode.Scalar(header[156])))')")
      }
      guard let size = Self.octal(header[124..<136]) else {
        throw TarError(offset: at + 124, message: "tar entry '\(name)' has a size that is not an octal number")
      }
      guard header[345..<500].allSatisfy({ $0 == 0 }) else {
        throw TarError(offset: at + 345, message: "tar entry '\(name)' has a ustar prefix; Nova bundles never use one")
      }
      let components = name.split(separator: "/", omittingEmptySubsequences: false)
      guard !nameBytes.isEmpty, nameBytes.first != 0x2F, !components.contains(".."), !components.contains("") else {
        throw TarError(offset: at, message: "tar entry name '\(name)' is empty, absolute or not a plain relative path")
      }
      if let lastName {
        guard lastName.lexicographicallyPrecedes(nameBytes) else {
          let what = lastName == nameBytes ? "appears twice" : "comes after '\(String(decoding: lastName, as: UTF8.self))'"
          throw TarError(offset: at, message: "tar entry '\(name)' \(what): names must be unique and sorted")
        }
      }
      lastName = nameBytes
      entries += 1
      totalBytes += size
      guard entries <= limits.maxEntries else {
        throw TarError(offset: at, message: "the archive has more than \(limits.maxEntries) entries")
      }
      guard totalBytes <= limits.maxTotalBytes else {
        throw TarError(offset: at, message: "the archive holds more than \(limits.maxTotalBytes) bytes")
      }
      let consume = try body(name, size)
      var left = size
      while left > 0 {
        guard let piece = try take(min(left, 1 << 16)), !piece.isEmpty else {
          throw TarError(offset: position, message: "tar entry '\(name)' ends early")
        }
        try consume(piece)
        left -= piece.count
      }
      let rest = size % Self.blockSize
      if rest != 0 {
        guard let padding = try take(Self.blockSize - rest), padding.count == Self.blockSize - rest else {
          throw TarError(offset: position, message: "tar entry '\(name)' is not padded to a whole block")
        }
      }
    }
  }
}
