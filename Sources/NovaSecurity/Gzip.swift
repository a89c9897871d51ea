import CZlib
import Foundation
import NovaCore

/// Streams bytes into a gzip file with a fixed header (no name, no time, OS "unknown"), so that
/// equal input gives equal bytes.
final class GzipWriter {
  private var stream = z_stream()
  private let output: FileHandle
  private var crc: uLong = crc32(0, nil, 0)
  private var size: UInt32 = 0
  private var buffer = [UInt8](repeating: 0, count: 1 << 16)
  private var finished = false

  init(output: FileHandle, level: Int32 = 6) throws {
    self.output = output
    // Raw deflate (negative window bits): the gzip header and trailer are written here.
    let status = deflateInit2_(
      &stream, level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size))
    guard status == Z_OK else { throw NovaError.storage("zlib deflateInit2 failed: \(status)") }
    // ID1 ID2 CM FLG MTIME(4) XFL OS: no flags, time 0, OS 255 (unknown).
    try output.write(contentsOf: [0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0xff])
  }

  /// Compresses `bytes`.
  func write(_ bytes: some ContiguousBytes) throws {
    try bytes.withUnsafeBytes { raw in
      guard raw.count > 0 else { return }
      crc = crc32(crc, raw.bindMemory(to: Bytef.self).baseAddress, uInt(raw.count))
      size &+= UInt32(truncatingIfNeeded: raw.count)
      stream.next_in = UnsafeMutablePointer(mutating: raw.bindMemory(to: Bytef.self).baseAddress)
      stream.avail_in = uInt(raw.count)
      try pump(flush: Z_NO_FLUSH)
    }
  }

  /// Ends the stream and writes the trailer (CRC-32 and size, little-endian).
  func finish() throws {
    guard !finished else { return }
    finished = true
    stream.next_in = nil
    stream.avail_in = 0
    try pump(flush: Z_FINISH)
    deflateEnd(&stream)
    var trailer: [UInt8] = []
    for value in [UInt32(truncatingIfNeeded: crc), size] {
      trailer += [UInt8(value & 0xff), UInt8(value >> 8 & 0xff), UInt8(value >> 16 & 0xff), UInt8(value >> 24)]
    }
    try output.write(contentsOf: trailer)
  }

  /// Runs deflate until it has taken all input (and, finishing, given all output), as zlib's
  /// zpipe example does: the output buffer coming back not full means it is done.
  private func pump(flush: Int32) throws {
    var full = true
    while full {
      let (status, produced) = try buffer.withUnsafeMutableBytes { raw -> (Int32, Int) in
        stream.next_out = raw.bindMemory(to: Bytef.self).baseAddress
        stream.avail_out = uInt(raw.count)
        let status = deflate(&stream, flush)
        guard status != Z_STREAM_ERROR else { throw NovaError.storage("zlib deflate failed: \(status)") }
        return (status, raw.count - Int(stream.avail_out))
      }
      if produced > 0 { try output.write(contentsOf: buffer[0..<produced]) }
      full = stream.avail_out == 0
      if flush == Z_FINISH && !full && status != Z_STREAM_END {
        throw NovaError.storage("zlib deflate did not finish: \(status)")
      }
    }
  }

  deinit {
    if !finished { deflateEnd(&stream) }
  }
}

/// Reads a gzip file as a stream of decompressed chunks; names the byte offset of damage.
final class GzipReader {
  private var stream = z_stream()
  private let input: FileHandle
  private var inputBuffer = [UInt8]()
  private var inputOffset = 0
  private var consumed = 0
  private var ended = false
  private var crc: uLong = crc32(0, nil, 0)
  private var size: UInt32 = 0
  private var produced = 0
  private let path: String
  /// Output may be at most this many times the input read (past the first MiB): a gzip bomb
  /// is refused early, and memory stays flat either way since output is streamed.
  static let maxRatio = 200

  init(input: FileHandle, path: String) throws {
    self.input = input
    self.path = path
    guard inflateInit2_(&stream, -15, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
      throw NovaError.storage("zlib inflateInit2 failed")
    }
    try readHeader()
  }

  private func fill() throws -> Bool {
    if inputOffset < inputBuffer.count { return true }
    consumed += inputBuffer.count
    inputBuffer = Array(try input.read(upToCount: 1 << 16) ?? Data())
    inputOffset = 0
    return !inputBuffer.isEmpty
  }

  private func byte() throws -> UInt8 {
    guard try fill() else { throw NovaError.malformedInput(field: path, message: "gzip data ends early at byte \(consumed + inputOffset)") }
    defer { inputOffset += 1 }
    return inputBuffer[inputOffset]
  }

  private func readHeader() throws {
    let id1 = try byte()
    let id2 = try byte()
    let method = try byte()
    guard id1 == 0x1f, id2 == 0x8b, method == 8 else {
      throw NovaError.malformedInput(field: path, message: "\(path) is not a gzip file (byte 0 should start 1f 8b 08)")
    }
    let flags = try byte()
    for _ in 0..<6 { _ = try byte() }
    if flags & 0x04 != 0 {
      let length = Int(try byte()) | Int(try byte()) << 8
      for _ in 0..<length { _ = try byte() }
    }
    if flags & 0x08 != 0 { while try byte() != 0 {} }
    if flags & 0x10 != 0 { while try byte() != 0 {} }
    if flags & 0x02 != 0 {
      _ = try byte()
      _ = try byte()
    }
  }

  /// The next decompressed chunk, or nil at the end (after checking the trailer).
  func read() throws -> [UInt8]? {
    if ended { return nil }
    var output = [UInt8](repeating: 0, count: 1 << 16)
    while true {
      guard try fill() else {
        throw NovaError.malformedInput(field: path, message: "gzip data ends early at byte \(consumed + inputOffset)")
      }
      let start = inputOffset
      let (status, produced, used) = inputBuffer.withUnsafeMutableBytes { inRaw in
        output.withUnsafeMutableBytes { outRaw -> (Int32, Int, Int) in
          stream.next_in = inRaw.bindMemory(to: Bytef.self).baseAddress! + start
          stream.avail_in = uInt(inRaw.count - start)
          stream.next_out = outRaw.bindMemory(to: Bytef.self).baseAddress
          stream.avail_out = uInt(outRaw.count)
          let status = inflate(&stream, Z_NO_FLUSH)
          return (status, outRaw.count - Int(stream.avail_out), inRaw.count - start - Int(stream.avail_in))
        }
      }
      inputOffset += used
      guard status == Z_OK || status == Z_STREAM_END || status == Z_BUF_ERROR else {
        throw NovaError.malformedInput(field: path, message: "compressed data is damaged near byte \(consumed + inputOffset)")
      }
      self.produced += produced
      if self.produced > 1 << 20, self.produced > Self.maxRatio * max(1, consumed + inputOffset) {
        throw NovaError.malformedInput(
          field: path, message: "decompresses to over \(Self.maxRatio) times its size by byte \(consumed + inputOffset): refused as a gzip bomb")
      }
      if produced > 0 {
        output.removeSubrange(produced...)
        output.withUnsafeBytes { crc = crc32(crc, $0.bindMemory(to: Bytef.self).baseAddress, uInt(produced)) }
        size &+= UInt32(truncatingIfNeeded: produced)
      }
      if status == Z_STREAM_END {
        ended = true
        inflateEnd(&stream)
        var trailer: [UInt32] = []
        for _ in 0..<2 {
          trailer.append(UInt32(try byte()) | UInt32(try byte()) << 8 | UInt32(try byte()) << 16 | UInt32(try byte()) << 24)
        }
        guard trailer[0] == UInt32(truncatingIfNeeded: crc), trailer[1] == size else {
          throw NovaError.malformedInput(field: path, message: "gzip checksum does not match: the file was changed or damaged")
        }
        if try fill() {
          throw NovaError.malformedInput(field: path, message: "data follows the gzip stream at byte \(consumed + inputOffset)")
        }
        return produced > 0 ? output : nil
      }
      if produced > 0 { return output }
    }
  }

  deinit {
    if !ended { inflateEnd(&stream) }
  }
}
