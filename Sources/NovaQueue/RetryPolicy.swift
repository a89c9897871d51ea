import Foundation

/// Exponential backoff with jitter between attempts.
public struct RetryPolicy: Sendable, Equatable {
  /// Delay after the first failed attempt.
  public var baseDelay: TimeInterval
  /// Upper bound of any delay.
  public var maxDelay: TimeInterval
  /// Fraction of the delay that is randomised (0 = none, 1 = full jitter).
  public var jitter: Double

  public init(baseDelay: TimeInterval = 1, maxDelay: TimeInterval = 300, jitter: Double = 0.5) {
    self.baseDelay = baseDelay
    self.maxDelay = maxDelay
    self.jitter = min(max(jitter, 0), 1)
  }

  /// The delay after failed attempt number `attempt` (1-based): `base·2^(attempt-1)`, capped,
  /// with its top `jitter` fraction drawn at random so that retries of many jobs spread out.
  public func delay(afterAttempt attempt: Int, random: Double = Double.random(in: 0..<1)) -> TimeInterval {
    let exponent = Double(max(0, min(attempt - 1, 62)))
    let raw = min(maxDelay, baseDelay * pow(2, exponent))
    return raw * (1 - jitter) + raw * jitter * random
  }
}
