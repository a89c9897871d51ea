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
    let payload = payload
    Self.writeCanonical(into: &out, actor: actor, event: event, seq: seq, subject: subject, time: time) { $0 += payload.utf8 }
    return out
  }

  /// Appends an entry's canonical JSON to `out`, its payload (canonical JSON already) written by
  /// `payload`; returns where the payload's bytes are in `out`. The journal writes the entries of
  /// job transitions through this without making an `AuditEntry` (or a payload string) first.
  @discardableResult
  static func writeCanonical(
    into out: inout [UInt8], actor: String, event: String, seq: Int64, subject: String?, time: Int64,
    payload: (inout [UInt8]) -> Void
  ) -> Range<Int> {
    out += Self.actorKey
    CanonicalJSON.writeString(actor, into: &out)
    out += Self.eventKey
    CanonicalJSON.writeString(event, into: &out)
    out += Self.payloadKey
    let payloadStart = out.count
    payload(&out)
    let payloadEnd = out.count
    out += Self.seqKey
    writeDecimal(seq, into: &out)
    out += Self.subjectKey
    if let subject { CanonicalJSON.writeString(subject, into: &out) } else { out += Self.null }
    out += Self.timeKey
    out.append(UInt8(ascii: "\""))
    AuditTime.write(time, into: &out)
    out += Self.close
    return payloadStart..<payloadEnd
  }

  /// Appends `value` in decimal, as `String(value)` would spell it, without making the string.
  static func writeDecimal(_ value: Int64, into out: inout [UInt8]) {
    if value < 0 {
      out += String(value).utf8
      return
    }
    let number = UInt64(value)
    var divisor: UInt64 = 1
    while divisor <= number / 10 { divisor *= 10 }
    while divisor > 0 {
      out.append(UInt8(ascii: "0") + UInt8(number / divisor % 10))
      divisor /= 10
    }
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
