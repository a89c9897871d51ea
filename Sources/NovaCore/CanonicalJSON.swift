/// RFC 8785 JSON Canonicalization Scheme: object keys sorted by UTF-16 code units, no whitespace,
/// numbers as ECMAScript prints them, minimal string escaping. Equal values give equal bytes,
/// which is what makes audit entries hashable and evidence bundles reproducible.
public enum CanonicalJSON {
  /// A value JCS cannot represent (NaN or an infinity).
  public struct InvalidNumber: Error, CustomStringConvertible {
    public var description: String { "JSON has no representation for NaN or infinity" }
  }

  /// The canonical bytes of a value.
  public static func encode(_ value: JSONValue) throws -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(128)
    try write(value, into: &out)
    return out
  }

  /// The canonical text of a value.
  public static func string(_ value: JSONValue) throws -> String {
    String(decoding: try encode(value), as: UTF8.self)
  }

  private static func write(_ value: JSONValue, into out: inout [UInt8]) throws {
    try write(value, into: &out, keysInOrder: { $0.utf16.lexicographicallyPrecedes($1.utf16) }) { Array(try format($0).utf8) }
  }

  /// Appends `value` with this form's strings, its object keys in `keysInOrder`'s order and its
  /// fractional numbers as `number` writes them (which may refuse by throwing): the one
  /// writer behind canonical JSON and the answers written without `JSONEncoder`.
  public static func write(
    _ value: JSONValue, into out: inout [UInt8], keysInOrder: (String, String) -> Bool, number: (Double) throws -> [UInt8]
  ) throws {
    switch value {
    case .null: out += Array("null".utf8)
    case .bool(let flag): out += Array((flag ? "true" : "false").utf8)
    case .int(let number): out += Array(String(number).utf8)
    case .double(let value): out += try number(value)
    case .string(let text): writeString(text, into: &out)
    case .array(let values):
      out.append(UInt8(ascii: "["))
      for (index, element) in values.enumerated() {
        if index > 0 { out.append(UInt8(ascii: ",")) }
        try write(element, into: &out, keysInOrder: keysInOrder, number: number)
      }
      out.append(UInt8(ascii: "]"))
    case .object(let members):
      out.append(UInt8(ascii: "{"))
      for (index, key) in members.keys.sorted(by: keysInOrder).enumerated() {
        if index > 0 { out.append(UInt8(ascii: ",")) }
        writeString(key, into: &out)
        out.append(UInt8(ascii: ":"))
        try write(members[key]!, into: &out, keysInOrder: keysInOrder, number: number)
      }
      out.append(UInt8(ascii: "}"))
    }
  }

  private static let hex: [UInt8] = Array("0123456789abcdef".utf8)

  /// Appends a string as a canonical JSON string literal.
  public static func writeString(_ text: String, into out: inout [UInt8]) {
    out.append(UInt8(ascii: "\""))
    // Most strings (ids, names, states) need no escape: checked and copied whole from their
    // contiguous bytes (walking the UTF-8 view byte by byte cost a tenth of the audit's time).
    let clean =
      text.utf8.withContiguousStorageIfAvailable { bytes -> Bool in
        for byte in bytes where byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") { return false }
        out.append(contentsOf: bytes)
        return true
      } ?? false
    if clean {
      out.append(UInt8(ascii: "\""))
      return
    }
    for byte in text.utf8 {
      switch byte {
      case UInt8(ascii: "\""): out += [UInt8(ascii: "\\"), UInt8(ascii: "\"")]
      case UInt8(ascii: "\\"): out += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
      case 0x08: out += [UInt8(ascii: "\\"), UInt8(ascii: "b")]
      case 0x0C: out += [UInt8(ascii: "\\"), UInt8(ascii: "f")]
      case 0x0A: out += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
      case 0x0D: out += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
      case 0x09: out += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
      case 0..<0x20:
        out += Array("\\u00".utf8)
        out += [hex[Int(byte >> 4)], hex[Int(byte & 0xF)]]
      default: out.append(byte)
      }
    }
    out.append(UInt8(ascii: "\""))
  }

  /// ECMAScript's Number::toString, from Swift's shortest round-trip digits.
  static func format(_ number: Double) throws -> String {
    guard number.isFinite else { throw InvalidNumber() }
    if number == 0 { return "0" }
    let negative = number < 0
    // Swift prints the shortest digits that round-trip, as "d.ddde±x" or plain decimal.
    let text = "\(abs(number))"
    var mantissa = text
    var exponent = 0
    if let e = text.firstIndex(where: { $0 == "e" || $0 == "E" }) {
      mantissa = String(text[..<e])
      exponent = Int(text[text.index(after: e)...])!
    }
    var integerPart = mantissa
    var fraction = ""
    if let dot = mantissa.firstIndex(of: ".") {
      integerPart = String(mantissa[..<dot])
      fraction = String(mantissa[mantissa.index(after: dot)...])
    }
    var digits = integerPart + fraction
    // n: the decimal point's position relative to the digits' start.
    var n = integerPart.count + exponent
    let leading = digits.prefix { $0 == "0" }.count
    digits.removeFirst(leading)
    n -= leading
    while digits.last == "0" { digits.removeLast() }
    let k = digits.count
    var result: String
    if k <= n && n <= 21 {
      result = digits + String(repeating: "0", count: n - k)
    } else if 0 < n && n <= 21 {
      let index = digits.index(digits.startIndex, offsetBy: n)
      result = String(digits[..<index]) + "." + String(digits[index...])
    } else if -6 < n && n <= 0 {
      result = "0." + String(repeating: "0", count: -n) + digits
    } else {
      let e = n - 1
      let sign = e < 0 ? "-" : "+"
      let head = String(digits.first!)
      let tail = String(digits.dropFirst())
      result = head + (tail.isEmpty ? "" : "." + tail) + "e" + sign + String(abs(e))
    }
    return negative ? "-" + result : result
  }
}
