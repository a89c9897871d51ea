import Foundation
import NovaCore

/// Times in KPI queries: a duration back from now (`90s`, `30m`, `1h`, `7d`) or RFC 3339.
public enum KPITime {
  /// Milliseconds since 1970 for `text`; `flag` names the input in errors.
  public static func parse(_ text: String, now: Int64, flag: String) throws(NovaError) -> Int64 {
    if let unit = text.last, let amount = Double(text.dropLast()), amount >= 0 {
      let scale: Double? = ["s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000][unit]
      if let scale { return now - Int64(amount * scale) }
    }
    if let millis = AuditTime.parse(text) { return millis }
    throw .invalidInput(field: flag, message: "'\(text)' is neither a duration (90s, 30m, 1h, 7d) nor an RFC 3339 time")
  }
}
