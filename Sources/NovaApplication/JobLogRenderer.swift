import Foundation
import NovaQueue

/// What `nova jobs logs` and `GET /v1/jobs/{id}/logs` show of stored output chunks.
///
/// Lines are put together per stream: a line that one stream left unended is never continued by
/// the other stream's output, and each line is shown once it ends (or its attempt or the read
/// ends), so lines come in the order they were finished. Unless `raw`, control characters and
/// bytes that are not UTF-8 are escaped (`\x1b`, `\xff`), so that a program's output cannot drive
/// the reader's terminal.
public struct JobLogRenderer: Sendable {
  /// How output is shown.
  public struct Options: Sendable, Equatable {
    /// Each line starts with `stdout: ` or `stderr: `.
    public var prefix: Bool
    /// Nothing escaped; without `prefix`, the bytes exactly as stored, chunk after chunk.
    public var raw: Bool

    /// Options for a reader; escaped lines without prefixes by default.
    public init(prefix: Bool = false, raw: Bool = false) {
      self.prefix = prefix
      self.raw = raw
    }
  }

  /// How output is shown.
  public let options: Options
  /// Whether each attempt's output comes under a `==> attempt N <==` line.
  public let headers: Bool
  /// An unended line longer than this is shown in pieces (what a follower holds stays bounded).
  public static let maxLine = 64 << 10

  private var attempt: Int?
  private var unended: [JobLogStream: [UInt8]] = [:]
  /// Streams with an unended line, the oldest first: the order they are shown in when cut short.
  private var unendedOrder: [JobLogStream] = []
  /// Whether the bytes written so far end a line (what a header in raw output needs to know).
  private var atLineStart = true

  private static let newline = UInt8(ascii: "\n")
  private static let hexDigits = Array("0123456789abcdef".utf8)

  /// A renderer for one read; `headers` when it shows several attempts.
  public init(_ options: Options = Options(), headers: Bool) {
    self.options = options
    self.headers = headers
  }

  /// Lines are assembled unless the bytes are to be written exactly as stored.
  private var assemblesLines: Bool { !options.raw || options.prefix }

  /// The chunks (in stored order, following the ones rendered before), rendered; an unended line
  /// is held until it ends.
  public mutating func render(_ chunks: [JobLogChunk]) -> Data {
    var out: [UInt8] = []
    for chunk in chunks {
      if chunk.attempt != attempt {
        endLines(into: &out)
        if headers {
          if !atLineStart { out.append(Self.newline) }
          out += Array("==> attempt \(chunk.attempt) <==\n".utf8)
          atLineStart = true
        }
        attempt = chunk.attempt
      }
      if assemblesLines {
        add(chunk.stream, [UInt8](chunk.data), into: &out)
      } else if let last = chunk.data.last {
        out += chunk.data
        atLineStart = last == Self.newline
      }
    }
    return Data(out)
  }

  /// The lines still unended, each ended; for when the read is over.
  public mutating func finish() -> Data {
    var out: [UInt8] = []
    endLines(into: &out)
    return Data(out)
  }

  private mutating func add(_ stream: JobLogStream, _ bytes: [UInt8], into out: inout [UInt8]) {
    var start = 0
    while let end = bytes[start...].firstIndex(of: Self.newline) {
      var line = unended.removeValue(forKey: stream) ?? []
      unendedOrder.removeAll { $0 == stream }
      line += bytes[start..<end]
      write(line[...], of: stream, into: &out)
      start = end + 1
    }
    guard start < bytes.count else { return }
    if unended[stream] == nil { unendedOrder.append(stream) }
    var line = unended.removeValue(forKey: stream) ?? []
    line += bytes[start...]
    var from = 0
    while line.count - from > Self.maxLine {
      // Cut between characters, not inside one.
      var cut = from + Self.maxLine
      while cut > from + Self.maxLine - 3, line[cut] & 0xC0 == 0x80 { cut -= 1 }
      write(line[from..<cut], of: stream, into: &out)
      from = cut
    }
    unended[stream] = from == 0 ? line : Array(line[from...])
  }

  /// Shows every unended line, oldest first: its attempt or the read is over.
  private mutating func endLines(into out: inout [UInt8]) {
    for stream in unendedOrder {
      if let line = unended[stream] { write(line[...], of: stream, into: &out) }
    }
    unended = [:]
    unendedOrder = []
  }

  private func write(_ line: ArraySlice<UInt8>, of stream: JobLogStream, into out: inout [UInt8]) {
    if options.prefix { out += Array("\(stream.rawValue): ".utf8) }
    if options.raw { out += line } else { Self.escape(line, into: &out) }
    out.append(Self.newline)
  }

  /// `bytes` with C0 controls but tab and newline, DEL and bytes that are not UTF-8 as `\xNN`, and
  /// the C1 controls (U+0080…U+009F, which some terminals obey) as `\u{NN}`.
  static func escape(_ bytes: ArraySlice<UInt8>, into out: inout [UInt8]) {
    var index = bytes.startIndex
    while index < bytes.endIndex {
      let byte = bytes[index]
      if byte < 0x80 {
        if (byte < 0x20 && byte != UInt8(ascii: "\t") && byte != newline) || byte == 0x7F {
          hex(byte, into: &out)
        } else {
          out.append(byte)
        }
        index += 1
        continue
      }
      let length = sequenceLength(bytes, at: index)
      if length == 0 {
        hex(byte, into: &out)
        index += 1
      } else {
        // U+0080…U+009F is C2 followed by the code point's own value.
        if byte == 0xC2, bytes[index + 1] < 0xA0 {
          out += Array("\\u{\(String(bytes[index + 1], radix: 16))}".utf8)
        } else {
          out += bytes[index..<index + length]
        }
        index += length
      }
    }
  }

  private static func hex(_ byte: UInt8, into out: inout [UInt8]) {
    out += [UInt8(ascii: "\\"), UInt8(ascii: "x"), hexDigits[Int(byte >> 4)], hexDigits[Int(byte & 0x0F)]]
  }

  /// The length of the well-formed UTF-8 sequence (RFC 3629) starting at `index`; 0 when there is none.
  static func sequenceLength(_ bytes: ArraySlice<UInt8>, at index: Int) -> Int {
    let length: Int
    var lower: UInt8 = 0x80
    var upper: UInt8 = 0xBF
    switch bytes[index] {
    case 0xC2...0xDF:
      length = 2
    case 0xE0:
      length = 3
      lower = 0xA0
    case 0xE1...0xEC, 0xEE...0xEF:
      length = 3
    case 0xED:
      length = 3
      upper = 0x9F
    case 0xF0:
      length = 4
      lower = 0x90
    case 0xF1...0xF3:
      length = 4
    case 0xF4:
      length = 4
      upper = 0x8F
    default:
      return 0
    }
    guard bytes.endIndex - index >= length else { return 0 }
    for offset in 1..<length {
      let byte = bytes[index + offset]
      let (low, high): (UInt8, UInt8) = offset == 1 ? (lower, upper) : (0x80, 0xBF)
      guard byte >= low, byte <= high else { return 0 }
    }
    return length
  }
}

extension JobLogFeed {
  /// Reads like `read`, handing `body` the output rendered (never empty), the lines still unended
  /// last; attempts are headed when the feed shows more than one.
  public func render(
    _ options: JobLogRenderer.Options, follow: Bool, stop: @Sendable () -> Bool = { false }, _ body: (Data) async throws -> Void
  ) async throws {
    var renderer = JobLogRenderer(options, headers: attempt == nil)
    try await read(follow: follow, stop: stop) { chunks in
      let text = renderer.render(chunks)
      if !text.isEmpty { try await body(text) }
    }
    let rest = renderer.finish()
    if !rest.isEmpty { try await body(rest) }
  }
}
