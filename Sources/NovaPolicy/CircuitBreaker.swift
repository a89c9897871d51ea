import Synchronization

/// Stops calling a failing service: after `threshold` failures in a row it opens for
/// `cooldown`, then lets one probe through (half-open); a success closes it again.
public final class CircuitBreaker: Sendable {
  public enum State: Sendable, Equatable {
    case closed(failures: Int)
    case open(until: UInt64)
    case halfOpen
  }

  private let state = Mutex<State>(.closed(failures: 0))
  private let threshold: Int
  private let cooldown: UInt64

  public init(threshold: Int, cooldown: Duration) {
    self.threshold = max(1, threshold)
    self.cooldown = cooldown.nanoseconds
  }

  /// Whether a call may go out now; when the cooldown is over, the first caller gets the probe.
  public func allows(now: UInt64) -> Bool {
    state.withLock { state in
      switch state {
      case .closed: return true
      case .halfOpen: return false
      case .open(let until):
        if now >= until {
          state = .halfOpen
          return true
        }
        return false
      }
    }
  }

  public func recordSuccess() { state.withLock { $0 = .closed(failures: 0) } }

  public func recordFailure(now: UInt64) {
    state.withLock { state in
      switch state {
      case .closed(let failures):
        state = failures + 1 >= threshold ? .open(until: now + cooldown) : .closed(failures: failures + 1)
      case .halfOpen, .open:
        state = .open(until: now + cooldown)
      }
    }
  }

  public var current: State { state.withLock { $0 } }
}
