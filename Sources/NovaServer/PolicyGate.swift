import Foundation
import HTTPTypes
import Hummingbird
import NovaCore
import NovaPolicy
import NovaSecurity

/// Asks the policy engine about an API caller's action and answers 403 with the reason when it
/// is denied (and enforced).
public struct PolicyGate: Sendable {
  public let engine: PolicyEngine

  public init(engine: PolicyEngine) { self.engine = engine }

  /// The policy subject of a token: `token:<name>` with its role.
  public static func subject(_ token: APIToken) -> PolicySubject {
    PolicySubject(id: "token:\(token.name)", roles: [token.role.rawValue])
  }

  /// Throws 403 unless the engine permits `caller` to take `action` on `resource`.
  public func check(_ caller: APIToken?, action: String, resource: PolicyResource, source: String?) async throws {
    guard let caller else { return }
    let decision = await engine.decide(
      PolicyRequest(subject: Self.subject(caller), action: action, resource: resource, source: source))
    if !decision.permits {
      throw APIError(.forbidden, code: "forbidden", message: decision.reason)
    }
  }
}

/// Records every policy decision in the audit log as `policy.decided`.
public struct AuditDecisionRecorder: DecisionRecorder {
  public let audit: AuditLog

  public init(audit: AuditLog) { self.audit = audit }

  public func record(_ decision: PolicyDecision, for request: PolicyRequest) async {
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
    if let revision = decision.opaRevision { payload["opa_revision"] = .string(revision) }
    if let fallback = decision.fallback { payload["fallback"] = .string(fallback) }
    if let source = request.source { payload["source_address"] = .string(source) }
    // A decision that cannot be recorded is logged by the caller's audit failure path; the
    // decision itself stands (the request is still refused when denied).
    _ = try? await audit.append(
      event: "policy.decided", subject: request.subject.id, payload: .object(payload), actor: request.subject.id)
  }
}
