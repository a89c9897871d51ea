import Foundation

/// Parses the common shape of JSON straight into `JSONValue`: ASCII text, the short escapes,
/// integers of up to 18 digits, keys once each, nesting to 64 levels. On anything else it gives
/// up (nil) and `JSONValue.parse` leaves the input to `JSONDecoder`, which parses it or says
/// where it is wrong; what it does parse, it parses as `JSONDecoder` does.
///
/// Decoding `JSONValue` through `Codable` tries each case in turn at every value, and was a
/// tenth of the server's time under single submissions (`POST /v1/jobs`).
struct JSONFastParser {
  private let bytes: UnsafeRawBufferPointer
  private var index = 0

  static let maxDepth = 64

  private init(_ bytes: UnsafeRawBufferPointer) {
    self.bytes = bytes
  }

  /// The value of `data`, or nil when it is not of the common shape (or not JSON).
  static func parse(_ data: Data) -> JSONValue? {
    data.withUnsafeBytes { raw -> JSONValue? in
      var parser = JSONFastParser(raw)
      guard let value = parser.value(depth: 0) else { return nil }
      parser.skipWhitespace()
      return parser.index == raw.count ? value : nil
    }
  }

  private enum Byte {
    static let quote = UInt8(ascii: "\"")
    static let backslash = UInt8(ascii: "\\")
    static let comma = UInt8(ascii: ",")
    static let colon = UInt8(ascii: ":")
    static let openBrace = UInt8(ascii: "{")
    static let closeBrace = UInt8(ascii: "}")
    static let openBracket = UInt8(ascii: "[")
    static let closeBracket = UInt8(ascii: "]")
    static let minus = UInt8(ascii: "-")
    static let zero = UInt8(ascii: "0")
    static let nine = UInt8(ascii: "9")
  }

  private var atEnd: Bool { index >= bytes.count }

  private mutating func skipWhitespace() {
    while index < bytes.count {
      switch bytes[index] {
      case 0x20, 0x09, 0x0A, 0x0D: index += 1
      default: return
      }
    }
  }

  private mutating func value(depth: Int) -> JSONValue? {
    skipWhitespace()
    guard !atEnd, depth < Self.maxDepth else { return nil }
    switch bytes[index] {
    case Byte.openBrace: return object(depth: depth)
    case Byte.openBracket: return array(depth: depth)
    case Byte.quote: return string().map(JSONValue.string)
    case UInt8(ascii: "t"): return literal("true", .bool(true))
    case UInt8(ascii: "f"): return literal("false", .bool(false))
    case UInt8(ascii: "n"): return literal("null", .null)
    case Byte.minus, Byte.zero...Byte.nine: return integer()
    default: return nil
    }
  }

  private mutating func object(depth: Int) -> JSONValue? {
    index += 1
    var members: [String: JSONValue] = [:]
    skipWhitespace()
    if !atEnd, bytes[index] == Byte.closeBrace {
      index += 1
      return .object(members)
    }
    while true {
      skipWhitespace()
      guard !atEnd, bytes[index] == Byte.quote, let key = string() else { return nil }
      skipWhitespace()
      guard !atEnd, bytes[index] == Byte.colon else { return nil }
      index += 1
      guard let member = value(depth: depth + 1) else { return nil }
      // A key given twice: which one counts is `JSONDecoder`'s to say.
      guard members.updateValue(member, forKey: key) == nil else { return nil }
      guard let more = next(closing: Byte.closeBrace) else { return nil }
      if !more { return .object(members) }
    }
  }

  private mutating func array(depth: Int) -> JSONValue? {
    index += 1
    var elements: [JSONValue] = []
    skipWhitespace()
    if !atEnd, bytes[index] == Byte.closeBracket {
      index += 1
      return .array(elements)
    }
    while true {
      guard let element = value(depth: depth + 1) else { return nil }
      elements.append(element)
      guard let more = next(closing: Byte.closeBracket) else { return nil }
      if !more { return .array(elements) }
    }
  }

  /// After a member or an element: true past a comma (another follows), false past `close`,
  /// nil at anything else.
  private mutating func next(closing close: UInt8) -> Bool? {
    skipWhitespace()
    guard !atEnd else { return nil }
    switch bytes[index] {
    case Byte.comma:
      index += 1
      return true
    case close:
      index += 1
      return false
    default:
      return nil
    }
  }

  /// A string of printable ASCII with the short escapes (`\"`, `\\`, `\/`, `\b`, `\f`, `\n`,
  /// `\r`, `\t`); `index` is at its opening quote.
  private mutating func string() -> String? {
    index += 1
    let start = index
    var escaped = false
    while index < bytes.count {
      let byte = bytes[index]
      if byte == Byte.quote { break }
      if byte == Byte.backslash {
        escaped = true
        index += 2
        continue
      }
      guard byte >= 0x20, byte < 0x80 else { return nil }
      index += 1
    }
    guard index < bytes.count else { return nil }
    let end = index
    index += 1
    guard escaped else { return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<end]), as: UTF8.self) }
    var text: [UInt8] = []
    text.reserveCapacity(end - start)
    var position = start
    while position < end {
      let byte = bytes[position]
      guard byte == Byte.backslash else {
        text.append(byte)
        position += 1
        continue
      }
      guard position + 1 < end else { return nil }
      switch bytes[position + 1] {
      case Byte.quote, Byte.backslash, UInt8(ascii: "/"): text.append(bytes[position + 1])
      case UInt8(ascii: "b"): text.append(0x08)
      case UInt8(ascii: "f"): text.append(0x0C)
      case UInt8(ascii: "n"): text.append(0x0A)
      case UInt8(ascii: "r"): text.append(0x0D)
      case UInt8(ascii: "t"): text.append(0x09)
      default: return nil  // \u, or not an escape
      }
      position += 2
    }
    return String(decoding: text, as: UTF8.self)
  }

  /// `-?(0|[1-9][0-9]*)` of at most 18 digits; a fraction or an exponent gives up.
  private mutating func integer() -> JSONValue? {
    var position = index
    let negative = bytes[position] == Byte.minus
    if negative { position += 1 }
    let first = position
    if position < bytes.count, bytes[position] == Byte.zero {
      position += 1
    } else {
      while position < bytes.count, (Byte.zero...Byte.nine).contains(bytes[position]) { position += 1 }
    }
    let digits = position - first
    guard digits > 0, digits <= 18 else { return nil }
    if position < bytes.count {
      switch bytes[position] {
      case UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "E"), Byte.zero...Byte.nine: return nil
      default: break
      }
    }
    var value: Int64 = 0
    for offset in first..<position { value = value * 10 + Int64(bytes[offset] - Byte.zero) }
    index = position
    return .int(negative ? -value : value)
  }

  private mutating func literal(_ word: StaticString, _ value: JSONValue) -> JSONValue? {
    let count = word.utf8CodeUnitCount
    guard index + count <= bytes.count else { return nil }
    let expected = UnsafeRawBufferPointer(start: word.utf8Start, count: count)
    for offset in 0..<count where bytes[index + offset] != expected[offset] { return nil }
    index += count
    return value
  }
}
