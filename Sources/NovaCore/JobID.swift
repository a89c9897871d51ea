import CNovaProcess
import Foundation
import Synchronization

/// A job's identifier: a UUIDv7 string, so ids sort by creation time and pages stay stable.
public struct JobID: Hashable, Sendable, Codable, Comparable, CustomStringConvertible {
  /// The canonical lower-case text form.
  public let rawValue: String

  /// Wraps an existing id (as read from storage or a URL).
  public init(_ rawValue: String) { self.rawValue = rawValue }

  /// Makes a new time-ordered id (UUID version 7, RFC 9562) with random bits after the time.
  public static func generate(now: Date = Date()) -> JobID {
    var rng = SystemRandomNumberGenerator()
    return make(millis: UInt64(max(0, now.timeIntervalSince1970 * 1000)), high: rng.next() & 0xFFF, low: rng.next() & 0x3FFF_FFFF_FFFF_FFFF)
  }

  /// The id of a millisecond and the 74 bits after the version and variant (12 of `rand_a`, 62
  /// of `rand_b`).
  static func make(millis: UInt64, high: UInt64, low: UInt64) -> JobID {
    var bytes = [UInt8](repeating: 0, count: 16)
    for i in 0..<6 { bytes[i] = UInt8(truncatingIfNeeded: millis >> UInt64(8 * (5 - i))) }
    bytes[6] = 0x70 | UInt8(truncatingIfNeeded: high >> 8)
    bytes[7] = UInt8(truncatingIfNeeded: high)
    bytes[8] = 0x80 | UInt8(truncatingIfNeeded: low >> 56)
    for i in 1..<8 { bytes[8 + i] = UInt8(truncatingIfNeeded: low >> UInt64(8 * (7 - i))) }
    return JobID(formatUUID(bytes))
  }

  /// Makes ids that strictly increase, also within a millisecond or when the clock steps back a
  /// little (RFC 9562 §6.2 method 3: the random part counts up from the last id), so that jobs a
  /// queue enqueues one after another, or in one batch, are claimed in that order among equal
  /// priorities. Each queue owns one.
  public final class Generator: Sendable {
    /// The last id's parts, and the random bits: drawn from the kernel a batch at a time (one
    /// system call per id cost 4 % of the SQLite writer's time, where ids are made).
    private let state = Mutex<(last: (millis: UInt64, high: UInt64, low: UInt64), random: BufferedSystemRandom)>(
      ((0, 0, 0), BufferedSystemRandom()))
    /// A clock that steps back further than this starts again from its own time (ids keep
    /// telling roughly when they were made).
    private static let maxStepBack = UInt64(JobID.maxLead * 1000)

    public init() {}

    /// The next id at `now`.
    public func next(now: Date = Date()) -> JobID {
      let clockMillis = UInt64(max(0, now.timeIntervalSince1970 * 1000))
      let (millis, high, low) = state.withLock { state -> (UInt64, UInt64, UInt64) in
        let last = state.last
        if clockMillis > last.millis || clockMillis + Self.maxStepBack < last.millis {
          // A new millisecond: fresh random bits, the top one clear to leave room to count up.
          state.last = (clockMillis, state.random.next() & 0x7FF, state.random.next() & 0x1FFF_FFFF_FFFF_FFFF)
        } else {
          // The same millisecond (or a little earlier): the last id plus a small random step.
          var low = last.low + 1 + state.random.next() % 1024
          var high = last.high
          if low > 0x3FFF_FFFF_FFFF_FFFF {
            low &= 0x3FFF_FFFF_FFFF_FFFF
            high += 1
          }
          state.last = high > 0xFFF ? (last.millis + 1, 0, low) : (last.millis, high, low)
        }
        return state.last
      }
      return JobID.make(millis: millis, high: high, low: low)
    }
  }

  /// How much later than the clock a new id's time may be: a generator counts up from its last
  /// id while the clock steps back by less than this.
  public static let maxLead: TimeInterval = 10

  /// The smallest id that `generate` can make at `date`: ids below it were made earlier.
  public static func lowerBound(for date: Date) -> JobID {
    let millis = UInt64(max(0, date.timeIntervalSince1970 * 1000))
    var bytes = [UInt8](repeating: 0, count: 16)
    for i in 0..<6 { bytes[i] = UInt8(truncatingIfNeeded: millis >> UInt64(8 * (5 - i))) }
    return JobID(formatUUID(bytes))
  }

  /// An id above every id `generate` made by `date` (an id's time runs at most `maxLead` ahead
  /// of the clock): what a walk by id for jobs made by then stops at.
  public static func upperBound(madeBy date: Date) -> JobID {
    lowerBound(for: date.addingTimeInterval(maxLead + 0.001))
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

/// The kernel's random bits (getrandom(2), as `SystemRandomNumberGenerator` draws them), 32
/// words per system call.
struct BufferedSystemRandom: RandomNumberGenerator {
  private var words = [UInt64](repeating: 0, count: 32)
  private var used = 32

  mutating func next() -> UInt64 {
    if used == words.count {
      let filled = words.withUnsafeMutableBytes { nova_random_bytes($0.baseAddress, $0.count) == 0 }
      if !filled {
        var system = SystemRandomNumberGenerator()
        for index in words.indices { words[index] = system.next() }
      }
      used = 0
    }
    defer { used += 1 }
    return words[used]
  }
}
