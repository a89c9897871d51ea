import Foundation

/// What decided a request.
public enum DecisionSource: String, Sendable, Codable {
  /// A local rule (or the default deny when no rule decides and no OPA is configured).
  case rule
  /// A cached earlier decision.
  case cache
  /// Open Policy Agent.
  case opa
  /// OPA could not answer; the configured fallback mode decided.
  case fallback
}

/// The engine's answer, with everything an auditor needs to know why.
public struct PolicyDecision: Sendable, Equatable, Codable {
  public var allowed: Bool
  public var reason: String
  public var source: DecisionSource
  /// The rule that decided (its name), for rule decisions and cache hits of them.
  public var rule: String?
  /// Version of the local rules (hash of their canonical form).
  public var policyVersion: String
  /// OPA's bundle revision, for OPA decisions.
  public var opaRevision: String?
  /// The fallback mode used, when OPA could not answer.
  public var fallback: String?
  /// Whether the decision was only recorded, not enforced (shadow mode).
  public var enforced: Bool
  /// In shadow mode, what the built-in role floor (viewer reads, operator works jobs, admin
  /// manages, the local CLI does everything) decides: that is what is enforced then. Nil when
  /// the policy is enforced.
  public var floorAllowed: Bool?
  /// How long the decision took, in nanoseconds.
  public var evaluationNanoseconds: UInt64

  public init(
    allowed: Bool, reason: String, source: DecisionSource, rule: String? = nil, policyVersion: String,
    opaRevision: String? = nil, fallback: String? = nil, enforced: Bool = true, evaluationNanoseconds: UInt64 = 0
  ) {
    self.allowed = allowed
    self.reason = reason
    self.source = source
    self.rule = rule
    self.policyVersion = policyVersion
    self.opaRevision = opaRevision
    self.fallback = fallback
    self.enforced = enforced
    self.evaluationNanoseconds = evaluationNanoseconds
  }

  /// Whether the action may proceed: the policy's decision when enforced; in shadow mode, the
  /// built-in role floor's, so that shadowing a policy never grants more than the roles do.
  public var permits: Bool { enforced ? allowed : (floorAllowed ?? false) }

  /// Why an action that is not permitted was refused.
  public var refusal: String {
    if enforced { return reason }
    return "denied by the built-in role rules (the policy is in shadow mode; it said: \(reason))"
  }
}
