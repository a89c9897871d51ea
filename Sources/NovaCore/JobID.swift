import Foundation

/// A job's identifier: a UUIDv7 string, so ids sort by creation time and pages stay stable.
public struct JobID: Hashable, Sendable, Codable, Comparable, CustomStringConvertible {
  /// The canonical lower-case text form.
  public let rawValue: String

  /// Wraps an existing id (as read from storage or a URL).
  public init(_ rawValue: String) { self.rawValue = rawValue }

  /// Makes a new time-ordered id (UUID version 7, RFC 9562).
  public static func generate(now: Date = Date()) -> JobID {
    let millis = UInt64(max(0, now.timeIntervalSince1970 * 1000))
    var rng = SystemRandomNumberGenerator()
    var bytes = [UInt8](repeating: 0, count: 16)
    for i in 0..<6 { bytes[i] = UInt8(truncatingIfNeeded: millis >> UInt64(8 * (5 - i))) }
    let random = rng.next() as UInt64
    let random2 = rng.next() as UInt64
    for i in 0..<8 { bytes[6 + i] = UInt8(truncatingIfNeeded: random >> UInt64(8 * i)) }
    for i in 0..<2 { bytes[14 + i] = UInt8(truncatingIfNeeded: random2 >> UInt64(8 * i)) }
    bytes[6] = (bytes[6] & 0x0F) | 0x70
    bytes[8] = (bytes[8] & 0x3F) | 0x80
    return JobID(formatUUID(bytes))
  }

  /// The smallest id that `generate` can make at `date`: ids below it were made earlier.
  public static func lowerBound(for date: Date) -> JobID {
    let millis = UInt64(max(0, date.timeIntervalSince1970 * 1000))
    var bytes = [UInt8](repeating: 0, count: 16)
    for i in 0..<6 { bytes[i] = UInt8(truncatingIfNeeded: millis >> UInt64(8 * (5 - i))) }
    return JobID(formatUUID(bytes))
  }

  /// True when the text has the shape of a UUID (8-4-4-4-12 hex digits).
  public var isWellFormed: Bool {
    let utf8 = Array(rawValue.utf8)
    guard utf8.count == 36 else { return false }
    for (i, c) in utf8.enumerated() {
      if i == 8 || i == 13 || i == 18 || i == 23 {
        if c != UInt8(ascii: "-") { return false }
      } else if !((c >= 48 && c <= 57) || (c >= 97 && c <= 102) || (c >= 65 && c <= 70)) {
        return false
      }
    }
    return true
  }

  public var description: String { rawValue }
  public static func < (lhs: JobID, rhs: JobID) -> Bool { lhs.rawValue < rhs.rawValue }

  public init(from decoder: any Decoder) throws {
    rawValue = try decoder.singleValueContainer().decode(String.self)
  }

  public func encode(to encoder: any Encoder) throws {
    var container = encoder.singleValueContainer()
    try container.encode(rawValue)
  }

  private static let hex: [UInt8] = Array("0123456789abcdef".utf8)

  private static func formatUUID(_ bytes: [UInt8]) -> String {
    var out = [UInt8]()
    out.reserveCapacity(36)
    for (i, b) in bytes.enumerated() {
      if i == 4 || i == 6 || i == 8 || i == 10 { out.append(UInt8(ascii: "-")) }
      out.append(hex[Int(b >> 4)])
      out.append(hex[Int(b & 0x0F)])
    }
    return String(decoding: out, as: UTF8.self)
  }
}
