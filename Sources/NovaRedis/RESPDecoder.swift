/// Limits that keep a hostile or broken peer from making the decoder allocate without bound.
public struct RESPLimits: Sendable, Equatable {
  /// Longest bulk string accepted.
  public var maxBulkLength: Int
  /// Most elements of one array, set, map or push.
  public var maxAggregateCount: Int
  /// Deepest nesting of aggregates.
  public var maxDepth: Int
  /// Longest simple line (simple strings, errors, numbers).
  public var maxLineLength: Int

  public init(maxBulkLength: Int = 64 << 20, maxAggregateCount: Int = 1 << 20, maxDepth: Int = 32, maxLineLength: Int = 64 << 10) {
    self.maxBulkLength = maxBulkLength
    self.maxAggregateCount = maxAggregateCount
    self.maxDepth = maxDepth
    self.maxLineLength = maxLineLength
  }
}

/// Malformed or oversized RESP input; `offset` is the byte offset in the stream.
public struct RESPDecodingError: Error, Equatable, CustomStringConvertible {
  public var message: String
  public var offset: Int

  public init(_ message: String, offset: Int) {
    self.message = message
    self.offset = offset
  }

  public var description: String { "malformed RESP at byte offset \(offset): \(message)" }
}

/// An incremental RESP2/RESP3 decoder over raw bytes. It has no dependency on SwiftNIO, so the
/// fuzz target compiles it alone.
public struct RESPDecoder: Sendable {
  public var limits: RESPLimits
  /// Bytes consumed so far from the stream, for error offsets.
  public private(set) var streamOffset = 0

  public init(limits: RESPLimits = RESPLimits()) { self.limits = limits }

  /// Decodes one complete value from the front of `bytes`. Returns nil when more bytes are
  /// needed, or the value and how many bytes it used.
  public mutating func decode(_ bytes: UnsafeRawBufferPointer) throws(RESPDecodingError) -> (value: RESPValue, consumed: Int)? {
    var cursor = Cursor(bytes: bytes, position: 0, base: streamOffset, limits: limits)
    guard let value = try cursor.value(depth: 0) else { return nil }
    streamOffset += cursor.position
    return (value, cursor.position)
  }

  /// Decodes every complete value in `bytes` (a convenience for tests and the fuzz target).
  public mutating func decodeAll(_ bytes: [UInt8]) throws(RESPDecodingError) -> (values: [RESPValue], consumed: Int) {
    var values: [RESPValue] = []
    var consumed = 0
    while consumed < bytes.count {
      let attempt = bytes.withUnsafeBytes { raw -> Result<(value: RESPValue, consumed: Int)?, RESPDecodingError> in
        do throws(RESPDecodingError) {
          return .success(try decode(UnsafeRawBufferPointer(rebasing: raw[consumed...])))
        } catch {
          return .failure(error)
        }
      }
      guard let result = try attempt.get() else { break }
      values.append(result.value)
      consumed += result.consumed
    }
    return (values, consumed)
  }

  struct Cursor {
    let bytes: UnsafeRawBufferPointer
    var position: Int
    let base: Int
    let limits: RESPLimits

    func error(_ message: String, at position: Int? = nil) -> RESPDecodingError {
      RESPDecodingError(message, offset: base + (position ?? self.position))
    }

    /// The bytes of the line starting at `position`, without CRLF; nil if the line is incomplete.
    mutating func line() throws(RESPDecodingError) -> UnsafeRawBufferPointer? {
      let start = position
      var index = start
      while index < bytes.count {
        if bytes[index] == 13 {
          guard index + 1 < bytes.count else { return nil }
          guard bytes[index + 1] == 10 else { throw error("expected LF after CR", at: index + 1) }
          position = index + 2
          return UnsafeRawBufferPointer(rebasing: bytes[start..<index])
        }
        if bytes[index] == 10 { throw error("LF without CR", at: index) }
        index += 1
        if index - start > limits.maxLineLength {
          throw error("line longer than \(limits.maxLineLength) bytes", at: start)
        }
      }
      return nil
    }

    mutating func text() throws(RESPDecodingError) -> String? {
      guard let line = try line() else { return nil }
      return String(decoding: line, as: UTF8.self)
    }

    mutating func integer() throws(RESPDecodingError) -> Int64? {
      let start = position
      guard let line = try line() else { return nil }
      guard let value = Self.parseInteger(line) else {
        throw error("'\(String(decoding: line.prefix(32), as: UTF8.self))' is not an integer", at: start)
      }
      return value
    }

    static func parseInteger(_ line: UnsafeRawBufferPointer) -> Int64? {
      guard !line.isEmpty, line.count <= 20 else { return nil }
      var index = 0
      var negative = false
      if line[0] == UInt8(ascii: "-") || line[0] == UInt8(ascii: "+") {
        negative = line[0] == UInt8(ascii: "-")
        index = 1
        guard line.count > 1 else { return nil }
      }
      var value: Int64 = 0
      while index < line.count {
        let digit = line[index]
        guard digit >= 48 && digit <= 57 else { return nil }
        let (times, overflow1) = value.multipliedReportingOverflow(by: 10)
        let (sum, overflow2) = times.addingReportingOverflow(Int64(digit - 48))
        guard !overflow1 && !overflow2 else { return nil }
        value = sum
        index += 1
      }
      return negative ? -value : value
    }

    /// A length for bulk data or aggregates: -1 (null) or 0...limit.
    mutating func length(limit: Int, what: String) throws(RESPDecodingError) -> Int? {
      let start = position
      guard let value = try integer() else { return nil }
      if value == -1 { return -1 }
      guard value >= 0 else { throw error("negative \(what) length \(value)", at: start) }
      guard value <= Int64(limit) else { throw error("\(what) length \(value) over the limit of \(limit)", at: start) }
      return Int(value)
    }

    /// `count` bytes followed by CRLF.
    mutating func blob(_ count: Int) throws(RESPDecodingError) -> [UInt8]? {
      guard bytes.count - position >= count + 2 else { return nil }
      let end = position + count
      guard bytes[end] == 13, bytes[end + 1] == 10 else { throw error("bulk data not followed by CRLF", at: end) }
      let data = [UInt8](UnsafeRawBufferPointer(rebasing: bytes[position..<end]))
      position = end + 2
      return data
    }

    mutating func elements(_ count: Int, depth: Int) throws(RESPDecodingError) -> [RESPValue]? {
      var values: [RESPValue] = []
      // Each element takes at least 3 bytes, so what is reserved is bounded by the input.
      values.reserveCapacity(min(count, (bytes.count - position) / 3 + 1))
      for _ in 0..<count {
        guard let value = try value(depth: depth + 1) else { return nil }
        values.append(value)
      }
      return values
    }

    mutating func value(depth: Int) throws(RESPDecodingError) -> RESPValue? {
      guard position < bytes.count else { return nil }
      guard depth <= limits.maxDepth else { throw error("nesting deeper than \(limits.maxDepth)") }
      let typeOffset = position
      let type = bytes[position]
      position += 1
      switch type {
      case UInt8(ascii: "+"):
        return try text().map(RESPValue.simpleString)
      case UInt8(ascii: "-"):
        return try text().map(RESPValue.error)
      case UInt8(ascii: ":"):
        return try integer().map(RESPValue.integer)
      case UInt8(ascii: "$"):
        guard let count = try length(limit: limits.maxBulkLength, what: "bulk string") else { return nil }
        if count == -1 { return .bulkString(nil) }
        return try blob(count).map { RESPValue.bulkString($0) }
      case UInt8(ascii: "*"), UInt8(ascii: "~"), UInt8(ascii: ">"):
        guard let count = try length(limit: limits.maxAggregateCount, what: "aggregate") else { return nil }
        if count == -1 {
          guard type == UInt8(ascii: "*") else { throw error("null length for a set or push", at: typeOffset) }
          return .array(nil)
        }
        guard let values = try elements(count, depth: depth) else { return nil }
        switch type {
        case UInt8(ascii: "~"): return .set(values)
        case UInt8(ascii: ">"): return .push(values)
        default: return .array(values)
        }
      case UInt8(ascii: "%"), UInt8(ascii: "|"):
        guard let count = try length(limit: limits.maxAggregateCount / 2, what: "map") else { return nil }
        guard count >= 0 else { throw error("null length for a map", at: typeOffset) }
        guard let flat = try elements(count * 2, depth: depth) else { return nil }
        var pairs: [RESPPair] = []
        pairs.reserveCapacity(count)
        for index in stride(from: 0, to: flat.count, by: 2) {
          pairs.append(RESPPair(key: flat[index], value: flat[index + 1]))
        }
        if type == UInt8(ascii: "|") {
          // An attribute annotates the value that follows; Nova has no use for it.
          return try value(depth: depth)
        }
        return .map(pairs)
      case UInt8(ascii: "_"):
        guard let line = try line() else { return nil }
        guard line.isEmpty else { throw error("null with content", at: typeOffset) }
        return .null
      case UInt8(ascii: "#"):
        guard let line = try line() else { return nil }
        guard line.count == 1, line[0] == UInt8(ascii: "t") || line[0] == UInt8(ascii: "f") else {
          throw error("boolean must be t or f", at: typeOffset)
        }
        return .boolean(line[0] == UInt8(ascii: "t"))
      case UInt8(ascii: ","):
        let start = position
        guard let text = try text() else { return nil }
        let normalized = text == "inf" ? "infinity" : text == "-inf" ? "-infinity" : text
        guard let value = Double(normalized) else { throw error("'\(text.prefix(32))' is not a double", at: start) }
        return .double(value)
      case UInt8(ascii: "("):
        let start = position
        guard let text = try text() else { return nil }
        guard !text.isEmpty, text.drop(while: { $0 == "-" || $0 == "+" }).allSatisfy(\.isNumber) else {
          throw error("'\(text.prefix(32))' is not a big number", at: start)
        }
        return .bigNumber(text)
      case UInt8(ascii: "!"):
        guard let count = try length(limit: limits.maxBulkLength, what: "bulk error") else { return nil }
        guard count >= 0 else { throw error("null bulk error", at: typeOffset) }
        return try blob(count).map { .error(String(decoding: $0, as: UTF8.self)) }
      case UInt8(ascii: "="):
        guard let count = try length(limit: limits.maxBulkLength, what: "verbatim string") else { return nil }
        guard count >= 4 else { throw error("verbatim string shorter than its format prefix", at: typeOffset) }
        guard let data = try blob(count) else { return nil }
        guard data[3] == UInt8(ascii: ":") else { throw error("verbatim string without 'fmt:' prefix", at: typeOffset) }
        return .verbatim(format: String(decoding: data[0..<3], as: UTF8.self), text: String(decoding: data[4...], as: UTF8.self))
      default:
        throw error("unknown type byte 0x\(String(type, radix: 16))", at: typeOffset)
      }
    }
  }
}
