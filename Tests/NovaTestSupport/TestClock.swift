import Foundation
import NovaCore
import Synchronization

/// A clock that moves only when a test says so: wall time and monotonic time advance together,
/// and sleepers whose time has come are woken by `advance`. Timing tests (heartbeats, leases,
/// cache lifetimes, SLA deadlines) use it instead of sleeping.
public final class TestClock: NovaClock {
  private struct Sleeper {
    var deadline: Duration
    var continuation: CheckedContinuation<Void, any Error>
  }

  private struct State {
    var wall: Date
    var uptime: Duration = .seconds(1000)
    var sleepers: [UInt64: Sleeper] = [:]
    var nextID: UInt64 = 0
  }

  private let state: Mutex<State>

  public init(_ start: Date = Date(timeIntervalSince1970: 1_800_000_000)) {
    state = Mutex(State(wall: start))
  }

  public func now() -> Date { state.withLock { $0.wall } }

  public func uptime() -> Duration { state.withLock { $0.uptime } }

  /// Tasks sleeping on this clock now (a test may wait for a loop to park before advancing).
  public var sleeperCount: Int { state.withLock { $0.sleepers.count } }

  public func sleep(for duration: Duration) async throws {
    try Task.checkCancellation()
    if duration <= .zero { return }
    let id = state.withLock { state -> UInt64 in
      state.nextID += 1
      return state.nextID
    }
    try await withTaskCancellationHandler {
      try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
        let cancelled = state.withLock { state -> Bool in
          // Cancelled before registering: the handler below found nothing to remove.
          if Task.isCancelled { return true }
          state.sleepers[id] = Sleeper(deadline: state.uptime + duration, continuation: continuation)
          return false
        }
        if cancelled { continuation.resume(throwing: CancellationError()) }
      }
    } onCancel: {
      let sleeper = state.withLock { $0.sleepers.removeValue(forKey: id) }
      sleeper?.continuation.resume(throwing: CancellationError())
    }
  }

  /// Moves both clocks forward and wakes every sleeper whose deadline has come, earliest first.
  public func advance(by duration: Duration) {
    let due = state.withLock { state -> [Sleeper] in
      state.uptime += duration
      state.wall += duration.seconds
      let due = state.sleepers.filter { $0.value.deadline <= state.uptime }
      for id in due.keys { state.sleepers[id] = nil }
      return due.values.sorted { $0.deadline < $1.deadline }
    }
    for sleeper in due { sleeper.continuation.resume() }
  }

  /// Moves both clocks forward by `seconds`.
  public func advance(by seconds: TimeInterval) {
    advance(by: .seconds(seconds))
  }
}
