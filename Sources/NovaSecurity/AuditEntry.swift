import Foundation
import NovaCore

/// One record of the audit log: who did what to which subject, when, and the canonical bytes
/// that its Merkle leaf hashes.
public struct AuditEntry: Sendable, Equatable {
  /// Position in the log, from 1; leaf `seq - 1` of the Merkle tree.
  public var seq: Int64
  /// Milliseconds since 1970.
  public var time: Int64
  public var actor: String
  /// What happened, as `area.verb` (`job.claimed`, `auth.failed`, `policy.decided`).
  public var event: String
  /// What it happened to (a job id, a token name), if anything.
  public var subject: String?
  /// Canonical JSON (RFC 8785) of the details.
  public var payload: String

  public init(seq: Int64, time: Int64, actor: String, event: String, subject: String?, payload: String) {
    self.seq = seq
    self.time = time
    self.actor = actor
    self.event = event
    self.subject = subject
    self.payload = payload
  }

  /// The canonical JSON of the whole entry: keys in JCS order, time as RFC 3339 UTC with
  /// milliseconds. This is what the leaf hash covers and what evidence bundles carry.
  public var canonicalBytes: [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(96 + actor.utf8.count + event.utf8.count + payload.utf8.count + (subject?.utf8.count ?? 0))
    out += Self.actorKey
    CanonicalJSON.writeString(actor, into: &out)
    out += Self.eventKey
    CanonicalJSON.writeString(event, into: &out)
    out += Self.payloadKey
    out += payload.utf8
    out += Self.seqKey
    out += String(seq).utf8
    out += Self.subjectKey
    if let subject { CanonicalJSON.writeString(subject, into: &out) } else { out += Self.null }
    out += Self.timeKey
    out.append(UInt8(ascii: "\""))
    AuditTime.write(time, into: &out)
    out += Self.close
    return out
  }

  /// The entry's Merkle leaf hash.
  public var leafHash: MerkleTree.Hash { MerkleTree.leafHash(canonicalBytes) }

  private static let actorKey = Array(#"{"actor":"#.utf8)
  private static let eventKey = Array(#","event":"#.utf8)
  private static let payloadKey = Array(#","payload":"#.utf8)
  private static let seqKey = Array(#","seq":"#.utf8)
  private static let subjectKey = Array(#","subject":"#.utf8)
  private static let timeKey = Array(#","time":"#.utf8)
  private static let null = Array("null".utf8)
  private static let close = Array("\"}".utf8)
}

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
