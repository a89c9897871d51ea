import Foundation
import NovaCore
import NovaPolicy
import NovaSecurity

/// Records every policy decision in the audit log as `policy.decided`.
public struct AuditDecisionRecorder: DecisionRecorder {
  public let audit: AuditLog

  public init(audit: AuditLog) { self.audit = audit }

  public func record(_ decision: PolicyDecision, for request: PolicyRequest) async throws {
    var payload: [String: JSONValue] = [
      "action": .string(request.action),
      "allowed": .bool(decision.allowed),
      "enforced": .bool(decision.enforced),
      "reason": .string(decision.reason),
      "source": .string(decision.source.rawValue),
      "policy_version": .string(decision.policyVersion),
      "roles": .array(request.subject.roles.map(JSONValue.string)),
      "resource": .object(
        ["kind": .string(request.resource.kind), "attributes": .object(request.resource.attributes.mapValues(JSONValue.string))]
          .merging(request.resource.id.map { ["id": JSONValue.string($0)] } ?? [:]) { $1 }),
    ]
    if let rule = decision.rule { payload["rule"] = .string(rule) }
    // In shadow mode the role floor's decision is the one enforced, recorded beside the shadowed one.
    if let floor = decision.floorAllowed { payload["floor_allowed"] = .bool(floor) }
    if let revision = decision.opaRevision { payload["opa_revision"] = .string(revision) }
    if let fallback = decision.fallback { payload["fallback"] = .string(fallback) }
    if let source = request.source { payload["source_address"] = .string(source) }
    // A permit for an action that holds its events is written with the action's change (or on
    // its own if that fails); others now. A decision that cannot be recorded does not stand:
    // the error fails the request.
    if decision.permits, let held = AuditContext.held {
      let audit = audit
      held.hold(
        HeldAuditEvents.Event(
          time: Date().millisecondsSince1970, actor: request.subject.id, event: "policy.decided", subject: request.subject.id,
          payload: try CanonicalJSON.string(.object(payload)))
      ) { events in try await audit.append(held: events) }
      return
    }
    try await audit.append(
      event: "policy.decided", subject: request.subject.id, payload: .object(payload), actor: request.subject.id)
  }
}
