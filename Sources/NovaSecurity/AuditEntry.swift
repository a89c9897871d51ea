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
