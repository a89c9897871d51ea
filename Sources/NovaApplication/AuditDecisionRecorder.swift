import Foundation
import NovaCore
import NovaPolicy
import NovaSecurity

/// Records every policy decision in the audit log as `policy.decided`.
public struct AuditDecisionRecorder: DecisionRecorder {
  public let audit: AuditLog

  public init(audit: AuditLog) { self.audit = audit }

  public func record(_ decision: PolicyDecision, for request: PolicyRequest) async throws {
    let event = HeldAuditEvents.Event(
      time: Date().millisecondsSince1970, actor: request.subject.id, event: "policy.decided", subject: request.subject.id,
      payload: try Self.payload(of: decision, for: request))
    // A permit for an action that holds its events is written with the action's change (or on
    // its own if that fails); others now. A decision that cannot be recorded does not stand:
    // the error fails the request.
    if decision.permits, let held = AuditContext.held {
      let audit = audit
      held.hold(event) { events in try await audit.append(held: events) }
      return
    }
    try await audit.append(held: [event])
  }

  /// The entry's payload in canonical JSON (RFC 8785), written directly: one is written for
  /// every request, and building it as a `JSONValue` to canonicalise was a thirtieth of the
  /// server's time under single submissions. Keys in code-unit order, as `CanonicalJSON` sorts them.
  static func payload(of decision: PolicyDecision, for request: PolicyRequest) throws -> String {
    var out = JSONObjectWriter(capacity: 384)
    out.string("action", request.action)
    out.bool("allowed", decision.allowed)
    out.bool("enforced", decision.enforced)
    out.string("fallback", decision.fallback)
    // In shadow mode the role floor's decision is the one enforced, recorded beside the shadowed one.
    out.bool("floor_allowed", decision.floorAllowed)
    out.string("opa_revision", decision.opaRevision)
    out.string("policy_version", decision.policyVersion)
    out.string("reason", decision.reason)
    out.key("resource")
    var resource = JSONObjectWriter(capacity: 128)
    resource.key("attributes")
    resource.bytes += try CanonicalJSON.encode(.object(request.resource.attributes.mapValues(JSONValue.string)))
    resource.string("id", request.resource.id)
    resource.string("kind", request.resource.kind)
    out.bytes += resource.finish()
    out.key("roles")
    out.bytes.append(UInt8(ascii: "["))
    for (index, role) in request.subject.roles.enumerated() {
      if index > 0 { out.bytes.append(UInt8(ascii: ",")) }
      CanonicalJSON.writeString(role, into: &out.bytes)
    }
    out.bytes.append(UInt8(ascii: "]"))
    out.string("rule", decision.rule)
    out.string("source", decision.source.rawValue)
    out.string("source_address", request.source)
    return String(decoding: out.finish(), as: UTF8.self)
  }
}
