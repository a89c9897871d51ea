import NIOCore

/// Finds where each HTTP/1.1 response ends in the bytes of a keep-alive connection, and its
/// status: what a closed-loop load generator needs, and no more. It reads the status line, the
/// `Content-Length` and `Transfer-Encoding: chunked` headers, and skips the body; it builds no
/// header list or body. A full client codec (NIO's encoder and decoder) cost the load generator
/// twice the CPU per request of `wrk`, CPU the server under test then lacked on a small machine.
/// It reads answers to GET and POST (an answer to HEAD, whose length names no body, is not one).
package struct HTTPResponseScanner {
  /// A response scanned to its end.
  package struct Response: Equatable, Sendable {
    package var status: Int
  }

  /// Bytes the scanner cannot read as an HTTP/1.1 response: what was wrong, and the bytes.
  package struct Malformed: Error, Equatable, CustomStringConvertible {
    package var reason: String
    package init(reason: String) { self.reason = reason }
    package var description: String { "malformed HTTP response: \(reason)" }
  }

  private enum Stage {
    case head
    case body(remaining: Int)
    case chunkSize
    case chunkData(remaining: Int)
    case chunkEnd
    case trailers
    /// A body without a length or chunks: it ends when the server closes (RFC 9112, 6.3).
    case untilClose
  }

  private var stage = Stage.head
  private var status = 0
  /// How far the search for the end of a head or line has looked already, so that bytes that
  /// arrive a few at a time are not searched again and again.
  private var searched = 0
  /// Trailer bytes read so far of the response's trailers.
  private var trailerBytes = 0
  /// The most a response head (or the trailers) may take before the scanner gives up on it.
  package static let maxHeadBytes = 64 * 1024

  package init() {}

  /// Consumes what it can of `buffer`; returns the responses that ended in it, in order.
  /// Interim answers (1xx but 101) are read and passed over: the final one follows.
  package mutating func scan(_ buffer: inout ByteBuffer) throws(Malformed) -> [Response] {
    var done: [Response] = []
    while true {
      switch stage {
      case .head:
        guard let end = find(Self.headEnd, in: buffer) else {
          if buffer.readableBytes > Self.maxHeadBytes { throw Malformed(reason: "no end of the head in \(Self.maxHeadBytes) bytes") }
          return done
        }
        let head = buffer.readSlice(length: end + Self.headEnd.count)!
        let framing = try Self.parseHead(head)
        status = framing.status
        switch framing.body {
        case .interim: break
        case .none: done.append(Response(status: status))
        case .length(let length): stage = .body(remaining: length)
        case .chunked: stage = .chunkSize
        case .untilClose: stage = .untilClose
        }
      case .body(let remaining):
        let left = Self.skip(remaining, in: &buffer)
        if left > 0 {
          stage = .body(remaining: left)
          return done
        }
        stage = .head
        done.append(Response(status: status))
      case .chunkSize:
        guard let end = find(Self.lineEnd, in: buffer) else {
          if buffer.readableBytes > 1024 { throw Malformed(reason: "a chunk size line longer than 1024 bytes") }
          return done
        }
        let line = buffer.readSlice(length: end + 2)!
        let size = try Self.chunkSize(line.readableBytesView.dropLast(2))
        trailerBytes = 0
        stage = size == 0 ? .trailers : .chunkData(remaining: size)
      case .chunkData(let remaining):
        let left = Self.skip(remaining, in: &buffer)
        if left > 0 {
          stage = .chunkData(remaining: left)
          return done
        }
        stage = .chunkEnd
      case .chunkEnd:
        guard buffer.readableBytes >= 2 else { return done }
        guard buffer.readBytes(length: 2) == Self.lineEnd else { throw Malformed(reason: "a chunk not followed by CRLF") }
        stage = .chunkSize
      case .trailers:
        guard let end = find(Self.lineEnd, in: buffer) else {
          if trailerBytes + buffer.readableBytes > Self.maxHeadBytes {
            throw Malformed(reason: "trailers longer than \(Self.maxHeadBytes) bytes")
          }
          return done
        }
        buffer.moveReaderIndex(forwardBy: end + 2)
        trailerBytes += end + 2
        // An empty line ends the trailers (and the response); a trailer field is skipped.
        if end == 0 {
          stage = .head
          done.append(Response(status: status))
        } else if trailerBytes > Self.maxHeadBytes {
          throw Malformed(reason: "trailers longer than \(Self.maxHeadBytes) bytes")
        }
      case .untilClose:
        buffer.moveReaderIndex(forwardBy: buffer.readableBytes)
        return done
      }
    }
  }

  /// Skips up to `remaining` bytes of `buffer` (a body's); returns how many are still to come.
  private static func skip(_ remaining: Int, in buffer: inout ByteBuffer) -> Int {
    let taken = min(remaining, buffer.readableBytes)
    buffer.moveReaderIndex(forwardBy: taken)
    return remaining - taken
  }

  /// The connection closed: the response whose body ran to the close, if one was being read.
  package mutating func finish() -> Response? {
    guard case .untilClose = stage else { return nil }
    stage = .head
    return Response(status: status)
  }

  private static let headEnd: [UInt8] = Array("\r\n\r\n".utf8)
  private static let lineEnd: [UInt8] = Array("\r\n".utf8)

  /// The offset of `needle` in `buffer`'s readable bytes, searched from where the last search
  /// of the same bytes stopped; the next search starts over once it is found.
  private mutating func find(_ needle: [UInt8], in buffer: ByteBuffer) -> Int? {
    let from = searched
    let found = buffer.withUnsafeReadableBytes { bytes -> Int? in
      guard bytes.count >= needle.count else { return nil }
      var index = from
      let last = bytes.count - needle.count
      while index <= last {
        if bytes[index] == needle[0] {
          var match = true
          for offset in 1..<needle.count where bytes[index + offset] != needle[offset] {
            match = false
            break
          }
          if match { return index }
        }
        index += 1
      }
      return nil
    }
    searched = found == nil ? max(0, buffer.readableBytes - needle.count + 1) : 0
    return found
  }

  /// How a response's body is framed.
  private enum BodyFraming {
    /// An interim answer (1xx but 101): no body, and the final answer follows.
    case interim
    case none
    case length(Int)
    case chunked
    case untilClose
  }

  /// The status, and how the body is framed: `Content-Length` bytes (0 without one), or chunks.
  /// Read from the bytes (no strings but for an error's message): it runs for every response.
  private static func parseHead(_ head: ByteBuffer) throws(Malformed) -> (status: Int, body: BodyFraming) {
    let bytes = Array(head.readableBytesView)
    func text(_ range: Range<Int>) -> String { String(decoding: bytes[range].prefix(80), as: UTF8.self) }
    // "HTTP/1.x NNN ..."
    let prefix = Array("HTTP/1.".utf8)
    guard bytes.count >= 12, Array(bytes[0..<7]) == prefix, bytes[8] == UInt8(ascii: " "),
      bytes[9...11].allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
      bytes.count == 12 || bytes[12] == UInt8(ascii: " ") || bytes[12] == UInt8(ascii: "\r")
    else {
      throw Malformed(reason: "status line '\(text(0..<(bytes.firstIndex(of: UInt8(ascii: "\r")) ?? bytes.count)))'")
    }
    let status = bytes[9...11].reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
    var length: Int?
    var chunked = false
    var lineStart = (bytes.firstIndex(of: UInt8(ascii: "\n")) ?? bytes.count) + 1
    while lineStart < bytes.count {
      let lineEnd = bytes[lineStart...].firstIndex(of: UInt8(ascii: "\r")) ?? bytes.count
      defer { lineStart = lineEnd + 2 }
      if lineEnd == lineStart { continue }
      guard let colon = bytes[lineStart..<lineEnd].firstIndex(of: UInt8(ascii: ":")) else {
        throw Malformed(reason: "header line '\(text(lineStart..<lineEnd))'")
      }
      var valueStart = colon + 1
      while valueStart < lineEnd, bytes[valueStart] == UInt8(ascii: " ") || bytes[valueStart] == UInt8(ascii: "\t") {
        valueStart += 1
      }
      var valueEnd = lineEnd
      while valueEnd > valueStart, bytes[valueEnd - 1] == UInt8(ascii: " ") || bytes[valueEnd - 1] == UInt8(ascii: "\t") {
        valueEnd -= 1
      }
      if equalsIgnoringCase(bytes[lineStart..<colon], contentLength) {
        guard valueEnd > valueStart, valueEnd - valueStart <= 18,
          bytes[valueStart..<valueEnd].allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") })
        else { throw Malformed(reason: "Content-Length '\(text(valueStart..<valueEnd))'") }
        length = bytes[valueStart..<valueEnd].reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
      } else if equalsIgnoringCase(bytes[lineStart..<colon], transferEncoding) {
        chunked = valueEnd - valueStart >= 7 && equalsIgnoringCase(bytes[(valueEnd - 7)..<valueEnd], chunkedWord)
      }
    }
    // No body, whatever the headers say (RFC 9112, 6.3).
    if (100..<200).contains(status) && status != 101 { return (status, .interim) }
    if status == 101 || status == 204 || status == 304 { return (status, .none) }
    if chunked { return (status, .chunked) }
    guard let length else { return (status, .untilClose) }
    return (status, length > 0 ? .length(length) : .none)
  }

  private static let contentLength = Array("content-length".utf8)
  private static let transferEncoding = Array("transfer-encoding".utf8)
  private static let chunkedWord = Array("chunked".utf8)

  /// Whether ASCII `bytes` equal `lowercase` (lower-case ASCII), ignoring case.
  private static func equalsIgnoringCase(_ bytes: ArraySlice<UInt8>, _ lowercase: [UInt8]) -> Bool {
    guard bytes.count == lowercase.count else { return false }
    return zip(bytes, lowercase).allSatisfy { byte, expected in
      (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte) == expected
    }
  }

  private static func chunkSize(_ line: ByteBufferView) throws(Malformed) -> Int {
    // Chunk extensions (";name=value") follow the size.
    let digits = line.prefix { $0 != UInt8(ascii: ";") }
    guard !digits.isEmpty, digits.count <= 15, let size = Int(String(decoding: digits, as: UTF8.self), radix: 16) else {
      throw Malformed(reason: "chunk size '\(String(decoding: line.prefix(40), as: UTF8.self))'")
    }
    return size
  }
}
