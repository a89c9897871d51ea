import Dispatch
import Synchronization

/// Monotonic nanoseconds, injectable so that cache lifetimes and the breaker's cooldown can be
/// tested without waiting.
public protocol PolicyClock: Sendable {
  func nanoseconds() -> UInt64
}

/// The system's monotonic clock.
public struct SystemPolicyClock: PolicyClock {
  public init() {}
  public func nanoseconds() -> UInt64 { DispatchTime.now().uptimeNanoseconds }
}

/// A clock that moves only when told to.
public final class ManualPolicyClock: PolicyClock {
  private let now = Atomic<UInt64>(1_000_000_000)
  public init() {}
  public func nanoseconds() -> UInt64 { now.load(ordering: .relaxed) }
  /// Moves the clock forward.
  public func advance(by duration: Duration) {
    let (seconds, attoseconds) = duration.components
    now.add(UInt64(seconds) * 1_000_000_000 + UInt64(attoseconds / 1_000_000_000), ordering: .relaxed)
  }
}

extension Duration {
  var nanoseconds: UInt64 {
    let (seconds, attoseconds) = components
    return UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000)
  }
}
