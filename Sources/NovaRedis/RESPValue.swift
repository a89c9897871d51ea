/// A RESP2 or RESP3 reply.
public enum RESPValue: Sendable, Equatable {
  case simpleString(String)
  /// A simple error (`-ERR …`) or RESP3 bulk error.
  case error(String)
  case integer(Int64)
  /// A bulk string; nil is RESP2's null bulk string.
  case bulkString([UInt8]?)
  /// An array; nil is RESP2's null array.
  case array([RESPValue]?)
  /// RESP3 null.
  case null
  case boolean(Bool)
  case double(Double)
  case bigNumber(String)
  case verbatim(format: String, text: String)
  case map([RESPPair])
  case set([RESPValue])
  case push([RESPValue])

  /// The value as text, for simple, bulk and verbatim strings.
  public var string: String? {
    switch self {
    case .simpleString(let text): return text
    case .bulkString(let bytes?): return String(decoding: bytes, as: UTF8.self)
    case .verbatim(_, let text): return text
    default: return nil
    }
  }

  /// The value as an integer (integers, and strings that hold one).
  public var int: Int64? {
    switch self {
    case .integer(let value): return value
    case .bulkString, .simpleString: return string.flatMap { Int64($0) }
    default: return nil
    }
  }

  /// The elements of an array, set or push.
  public var elements: [RESPValue]? {
    switch self {
    case .array(let values?), .set(let values), .push(let values): return values
    case .map(let pairs): return pairs.flatMap { [$0.key, $0.value] }
    default: return nil
    }
  }

  /// True for every kind of null.
  public var isNull: Bool {
    switch self {
    case .null, .bulkString(nil), .array(nil): return true
    default: return false
    }
  }
}

/// One entry of a RESP3 map.
public struct RESPPair: Sendable, Equatable {
  public var key: RESPValue
  public var value: RESPValue
  public init(key: RESPValue, value: RESPValue) {
    self.key = key
    self.value = value
  }
}
