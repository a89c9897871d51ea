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
    let decision = try await engine.decide(
      PolicyRequest(subject: Self.subject(caller), action: action, resource: resource, source: source))
    if !decision.permits {
      throw APIError(.forbidden, code: "forbidden", message: decision.refusal)
    }
  }
}
