import Foundation

/// Nova's one clock: wall time for what is stored (jobs, audit entries, samples), monotonic time
/// for what is measured (deadlines, heartbeats, cache lifetimes), and sleeping. Every component
/// that waits or times takes one, so that tests advance time instead of waiting for it
/// (`TestClock` in the test support module).
public protocol NovaClock: Sendable {
  /// The current wall-clock time.
  func now() -> Date
  /// Monotonic time since an arbitrary origin; only differences mean anything.
  func uptime() -> Duration
  /// Suspends for `duration` of this clock's time; throws `CancellationError` when cancelled.
  func sleep(for duration: Duration) async throws
}

/// The system's clocks: `Date` and `ContinuousClock`.
public struct SystemClock: NovaClock {
  private static let origin = ContinuousClock.now

  public init() {}

  public func now() -> Date { Date() }

  public func uptime() -> Duration { Self.origin.duration(to: .now) }

  public func sleep(for duration: Duration) async throws { try await Task.sleep(for: duration) }
}
