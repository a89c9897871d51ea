import Foundation

/// RFC 3339 timestamps in UTC with milliseconds, written without Foundation's formatters (the
/// audit log writes and verifies millions of them).
public enum AuditTime {
  /// `2026-11-26T06:15:34.123Z` for `millis` since 1970.
  public static func string(_ millis: Int64) -> String {
    var out: [UInt8] = []
    write(millis, into: &out)
    return String(decoding: out, as: UTF8.self)
  }

  /// Appends the timestamp's characters.
  public static func write(_ millis: Int64, into out: inout [UInt8]) {
    let (days, dayMillis) = floorDivide(millis, 86_400_000)
    let (year, month, day) = civil(fromDays: days)
    let seconds = dayMillis / 1000
    digits(year, 4, &out)
    out.append(UInt8(ascii: "-"))
    digits(month, 2, &out)
    out.append(UInt8(ascii: "-"))
    digits(day, 2, &out)
    out.append(UInt8(ascii: "T"))
    digits(seconds / 3600, 2, &out)
    out.append(UInt8(ascii: ":"))
    digits(seconds / 60 % 60, 2, &out)
    out.append(UInt8(ascii: ":"))
    digits(seconds % 60, 2, &out)
    out.append(UInt8(ascii: "."))
    digits(dayMillis % 1000, 3, &out)
    out.append(UInt8(ascii: "Z"))
  }

  /// Milliseconds since 1970 of an RFC 3339 time (`Z` or an offset, optional fraction), or nil.
  public static func parse(_ text: String) -> Int64? {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    if let date = formatter.date(from: text) { return date.millisecondsSince1970 }
    formatter.formatOptions = [.withInternetDateTime]
    if let date = formatter.date(from: text) { return date.millisecondsSince1970 }
    return nil
  }

  private static func floorDivide(_ a: Int64, _ b: Int64) -> (Int64, Int64) {
    let q = a / b
    let r = a % b
    return r < 0 ? (q - 1, r + b) : (q, r)
  }

  /// Howard Hinnant's days-to-civil algorithm.
  private static func civil(fromDays days: Int64) -> (Int64, Int64, Int64) {
    let z = days + 719_468
    let era = (z >= 0 ? z : z - 146_096) / 146_097
    let doe = z - era * 146_097
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
    let mp = (5 * doy + 2) / 153
    let day = doy - (153 * mp + 2) / 5 + 1
    let month = mp < 10 ? mp + 3 : mp - 9
    return (yoe + era * 400 + (month <= 2 ? 1 : 0), month, day)
  }

  private static func digits(_ value: Int64, _ width: Int, _ out: inout [UInt8]) {
    let start = out.count
    out.append(contentsOf: repeatElement(UInt8(ascii: "0"), count: width))
    var rest = value
    var index = start + width - 1
    while index >= start {
      out[index] = UInt8(ascii: "0") + UInt8(rest % 10)
      rest /= 10
      index -= 1
    }
  }
}
