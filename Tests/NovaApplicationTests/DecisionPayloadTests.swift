import Foundation
import NovaCore
import NovaPolicy
import Testing

@testable import NovaApplication

/// The `policy.decided` payload is written directly, without a `JSONValue` to canonicalise: its
/// bytes must be those `CanonicalJSON` gives for the same members, or entries written before and
/// after would not read alike (and their hashes commit to the bytes).
@Suite("Policy decision payloads")
struct DecisionPayloadTests {
  /// The members as the recorder built them before, canonicalised.
  func reference(_ decision: PolicyDecision, _ request: PolicyRequest) throws -> String {
    var resource: [String: JSONValue] = [
      "kind": .string(request.resource.kind), "attributes": .object(request.resource.attributes.mapValues(JSONValue.string)),
    ]
    if let id = request.resource.id { resource["id"] = .string(id) }
    var payload: [String: JSONValue] = [
      "action": .string(request.action), "allowed": .bool(decision.allowed), "enforced": .bool(decision.enforced),
      "reason": .string(decision.reason), "source": .string(decision.source.rawValue),
      "policy_version": .string(decision.policyVersion), "roles": .array(request.subject.roles.map(JSONValue.string)),
      "resource": .object(resource),
    ]
    if let rule = decision.rule { payload["rule"] = .string(rule) }
    if let floor = decision.floorAllowed { payload["floor_allowed"] = .bool(floor) }
    if let revision = decision.opaRevision { payload["opa_revision"] = .string(revision) }
    if let fallback = decision.fallback { payload["fallback"] = .string(fallback) }
    if let source = request.source { payload["source_address"] = .string(source) }
    return try CanonicalJSON.string(.object(payload))
  }

  @Test("the direct payload is the canonical form of every shape of decision")
  func directPayloadIsCanonical() throws {
    let requests = [
      PolicyRequest(
        subject: PolicySubject(id: "token:ci", roles: ["operator"]), action: "job.submit",
        resource: PolicyResource(kind: "job", attributes: ["queue": "default", "kind": "echo"])),
      PolicyRequest(
        subject: PolicySubject(id: "cli:root", roles: ["admin", "operator", "viewer"]), action: "job.cancel",
        resource: PolicyResource(
          kind: "job", id: "0190-abc", attributes: ["é": "1", "z": "q\"uote\\", "Z": "ctl\u{1}", "a10": "", "a9": "\u{1F600}", "\u{FB01}": "lig"]),
        source: "10.0.0.7"),
      PolicyRequest(subject: PolicySubject(id: "agent:x"), action: "queue.pause", resource: PolicyResource(kind: "queue")),
    ]
    var decisions = [
      PolicyDecision(allowed: true, reason: "role operator may submit", source: .rule, rule: "operators", policyVersion: "v1"),
      PolicyDecision(allowed: false, reason: "no rule allows it\nsecond line", source: .opa, policyVersion: "v2", opaRevision: "rev-9"),
      PolicyDecision(allowed: false, reason: "OPA unreachable", source: .fallback, policyVersion: "v3", fallback: "deny"),
    ]
    var shadowed = PolicyDecision(allowed: false, reason: "shadow", source: .cache, policyVersion: "v4", enforced: false)
    shadowed.floorAllowed = true
    decisions.append(shadowed)
    for request in requests {
      for decision in decisions {
        let direct = try AuditDecisionRecorder.payload(of: decision, for: request)
        #expect(direct == (try reference(decision, request)))
        #expect((try JSONValue.parse(Data(direct.utf8))).objectValue?.count ?? 0 >= 8)
      }
    }
  }
}
