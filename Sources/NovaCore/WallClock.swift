import Foundation
import Synchronization

/// A source of wall-clock time, injectable so that tests control delays and backoff.
public protocol WallClock: Sendable {
  /// The current time.
  func now() -> Date
}

/// The system's clock.
public struct SystemWallClock: WallClock {
  public init() {}
  public func now() -> Date { Date() }
}

/// A clock that moves only when told to, for deterministic tests.
public final class ManualWallClock: WallClock {
  private let current: Mutex<Date>

  public init(_ start: Date = Date(timeIntervalSince1970: 1_800_000_000)) { current = Mutex(start) }

  public func now() -> Date { current.withLock { $0 } }

  /// Moves the clock forward.
  public func advance(by seconds: TimeInterval) { current.withLock { $0 += seconds } }
}
