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

  /// Whether the action may proceed: allowed, or denied in shadow mode.
  public var permits: Bool { allowed || !enforced }
}
