import Foundation
import NovaCore
import Synchronization

/// Decides whether an API request may proceed: a bearer token that is valid and whose role
/// allows the action. Failed attempts are audited and limited per source address.
public final class AccessGuard: Sendable {
  /// What happens to a request.
  public enum Decision: Sendable, Equatable {
    case allowed(APIToken)
    /// 401: no token, or one that is not valid.
    case unauthenticated(String)
    /// 403: a valid token whose role does not allow the action.
    case forbidden(String)
    /// 429: too many failed attempts from this source lately.
    case rateLimited(retryAfterSeconds: Int)
  }

  public let tokens: TokenStore
  private let limiter: FailureLimiter

  /// `maxFailures` failed attempts per source within `window` seconds are answered, later ones
  /// refused until the window has passed.
  public init(tokens: TokenStore, maxFailures: Int = 10, window: TimeInterval = 60) {
    self.tokens = tokens
    self.limiter = FailureLimiter(maxFailures: maxFailures, window: window)
  }

  /// Who presents a request: a valid token, or the refusal to answer with.
  public enum Identity: Sendable, Equatable {
    case token(APIToken)
    case refused(Decision)
  }

  /// Checks the `Authorization` header value `authorization` from `source` (an address). A
  /// valid token is never refused, however many others failed from the same address (a proxy
  /// carries many clients). Failures count against the address and the token id presented;
  /// past the limit they are answered 429 instead of 401; they are audited at most once per
  /// address a minute, with the count since the last entry, so the log cannot be flooded.
  public func authenticate(authorization: String?, action: String, source: String, now: Date = Date()) async throws -> Identity {
    guard let authorization, !authorization.isEmpty else {
      return .refused(
        try await fail(source: source, tokenID: nil, action: action, reason: "no Authorization header; send Authorization: Bearer <token>", now: now))
    }
    let presented: String
    if let plain = Self.plainBearerToken(authorization) {
      presented = plain
    } else {
      guard authorization.count > 7, authorization.prefix(7).lowercased() == "bearer " else {
        return .refused(
          try await fail(source: source, tokenID: nil, action: action, reason: "the Authorization header is not 'Bearer <token>'", now: now))
      }
      presented = authorization.dropFirst(7).trimmingCharacters(in: .whitespaces)
    }
    switch try await tokens.authenticate(presented) {
    case .invalid(let reason):
      return .refused(try await fail(source: source, tokenID: TokenStore.id(of: presented), action: action, reason: reason, now: now))
    case .valid(let token): return .token(token)
    }
  }

  /// Decides on a request for `action` by role alone (when no policy engine decides): a valid
  /// token whose role is at least the action's minimum.
  public func authorize(authorization: String?, action: APIAction, source: String, now: Date = Date()) async throws -> Decision {
    switch try await authenticate(authorization: authorization, action: action.rawValue, source: source, now: now) {
    case .refused(let decision): return decision
    case .token(let token):
      guard token.role.allows(action) else {
        let message = "token '\(token.name)' has role \(token.role.rawValue); \(action.rawValue) needs \(action.rolesText)"
        try await tokens.audit.append(
          event: "auth.denied", subject: token.name,
          payload: .object(["action": .string(action.rawValue), "role": .string(token.role.rawValue), "source": .string(source)]),
          actor: "token:\(token.name)", time: now)
        return .forbidden(message)
      }
      return .allowed(token)
    }
  }

  /// The token of `Bearer <token>` (the scheme in any case) when the token is printable ASCII
  /// with nothing to trim, read from the bytes: every request carries one. Anything else is
  /// left to the general path, which trims Unicode whitespace and explains what is wrong.
  package static func plainBearerToken(_ authorization: String) -> String? {
    let utf8 = authorization.utf8
    return utf8.withContiguousStorageIfAvailable { bytes -> String? in
      guard bytes.count > 7 else { return nil }
      for (index, letter) in "bearer".utf8.enumerated() where bytes[index] | 0x20 != letter { return nil }
      guard bytes[6] == UInt8(ascii: " ") else { return nil }
      let token = UnsafeBufferPointer(rebasing: bytes[7...])
      guard token.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { return nil }
      return String(decoding: token, as: UTF8.self)
    } ?? nil
  }

  private func fail(source: String, tokenID: String?, action: String, reason: String, now: Date) async throws -> Decision {
    let outcome = limiter.recordFailure(keys: ["address " + source] + (tokenID.map { ["token " + $0] } ?? []), now: now)
    if let count = outcome.auditCount {
      var payload: [String: JSONValue] = ["action": .string(action), "reason": .string(reason), "count": .int(Int64(count))]
      if let tokenID { payload["token_id"] = .string(tokenID) }
      if outcome.retryAfter != nil { payload["rate_limited"] = .bool(true) }
      try await tokens.audit.append(event: "auth.failed", subject: source, payload: .object(payload), actor: "anonymous", time: now)
    }
    if let wait = outcome.retryAfter { return .rateLimited(retryAfterSeconds: wait) }
    return .unauthenticated(reason)
  }
}
