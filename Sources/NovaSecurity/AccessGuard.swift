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

  /// Checks the `Authorization` header value `authorization` from `source` (an address):
  /// failures are audited (for `action`) and counted against the source.
  public func authenticate(authorization: String?, action: String, source: String, now: Date = Date()) async throws -> Identity {
    if let wait = limiter.blockedFor(source: source, now: now) {
      return .refused(.rateLimited(retryAfterSeconds: wait))
    }
    guard let authorization, !authorization.isEmpty else {
      return .refused(try await fail(source: source, action: action, reason: "no Authorization header; send Authorization: Bearer <token>", now: now))
    }
    guard authorization.count > 7, authorization.prefix(7).lowercased() == "bearer " else {
      return .refused(try await fail(source: source, action: action, reason: "the Authorization header is not 'Bearer <token>'", now: now))
    }
    let presented = authorization.dropFirst(7).trimmingCharacters(in: .whitespaces)
    switch try await tokens.authenticate(presented) {
    case .invalid(let reason): return .refused(try await fail(source: source, action: action, reason: reason, now: now))
    case .valid(let token): return .token(token)
    }
  }

  /// Decides on a request for `action` by role alone (when no policy engine decides): a valid
  /// token whose role is at least the action's minimum.
  public func authorize(authorization: String?, action: APIAction, source: String, now: Date = Date()) async throws -> Decision {
    switch try await authenticate(authorization: authorization, action: action.rawValue, source: source, now: now) {
    case .refused(let decision): return decision
    case .token(let token):
      guard token.role >= action.minimumRole else {
        let message = "token '\(token.name)' has role \(token.role.rawValue); \(action.rawValue) needs \(action.minimumRole.rawValue)"
        try await tokens.audit.append(
          event: "auth.denied", subject: token.name,
          payload: .object(["action": .string(action.rawValue), "role": .string(token.role.rawValue), "source": .string(source)]),
          actor: "token:\(token.name)", time: now)
        return .forbidden(message)
      }
      return .allowed(token)
    }
  }

  private func fail(source: String, action: String, reason: String, now: Date) async throws -> Decision {
    let firstRefused = limiter.recordFailure(source: source, now: now)
    try await tokens.audit.append(
      event: firstRefused ? "auth.rate_limited" : "auth.failed", subject: source,
      payload: .object(["action": .string(action), "reason": .string(reason)]), actor: "anonymous", time: now)
    return .unauthenticated(reason)
  }
}

/// Failed attempts per source in a sliding window, bounded in memory.
final class FailureLimiter: Sendable {
  private let maxFailures: Int
  private let window: TimeInterval
  private let failures = Mutex<[String: [Date]]>([:])
  private static let maxSources = 10_000

  init(maxFailures: Int, window: TimeInterval) {
    self.maxFailures = maxFailures
    self.window = window
  }

  /// Seconds until `source` may try again, or nil when it may now.
  func blockedFor(source: String, now: Date) -> Int? {
    failures.withLock { table in
      guard var times = table[source] else { return nil }
      times.removeAll { now.timeIntervalSince($0) >= window }
      table[source] = times.isEmpty ? nil : times
      guard times.count >= maxFailures, let oldest = times.first else { return nil }
      return max(1, Int((window - now.timeIntervalSince(oldest)).rounded(.up)))
    }
  }

  /// Counts a failure; true when it is the one that reaches the limit.
  func recordFailure(source: String, now: Date) -> Bool {
    failures.withLock { table in
      if table[source] == nil, table.count >= Self.maxSources {
        // Forget the sources whose failures are oldest; an attacker spraying addresses cannot
        // grow the table without bound.
        let cutoff = now.addingTimeInterval(-window)
        table = table.filter { $0.value.last.map { $0 > cutoff } ?? false }
        if table.count >= Self.maxSources { table.removeAll() }
      }
      table[source, default: []].append(now)
      return table[source]!.count == maxFailures
    }
  }
}
