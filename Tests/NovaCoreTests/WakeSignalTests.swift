import Foundation
import NovaCore
import Synchronization
import Testing

@Suite("Wake signal", .timeLimit(.minutes(2)))
struct WakeSignalTests {
  /// A signal that arrives as a timed wait ends is taken either by that wait (which then says so)
  /// or by the next one. Before, a wait that timed out could swallow it: a waiter on the Redis
  /// queue then slept its whole 20 s while a job waited (CI saw 22.9 s).
  @Test func aSignalIsNeverLostToAWaitThatTimesOut() async {
    let signal = WakeSignal()
    var lost = 0
    for _ in 0..<3000 {
      async let timed = signal.wait(timeout: .zero)
      signal.signal()
      if await timed { continue }
      if await !signal.wait(timeout: .seconds(2)) { lost += 1 }
    }
    #expect(lost == 0, "\(lost) signals lost")
  }

  /// A wait that has begun but not yet registered when a signal wakes the registered waiters is
  /// woken by it too. It used to miss it and sleep until its timeout or the next signal (a claim
  /// long-poll beside a job that had just arrived).
  @Test func aWaitBetweenItsStartAndItsRegistrationIsWokenByTheSignal() async throws {
    let window = RegistrationWindow()
    let signal = WakeSignal(beforeRegistering: { await window.passThrough() })
    let first = Task { await signal.wait(timeout: .seconds(30)) }
    try await Task.sleep(for: .milliseconds(100))
    window.hold()
    let second = Task { await signal.wait(timeout: .seconds(30)) }
    while !window.isHeld { try await Task.sleep(for: .milliseconds(1)) }
    signal.signal()
    window.release()
    #expect(await first.value)
    let start = ContinuousClock.now
    #expect(await second.value, "the second wait timed out")
    #expect(ContinuousClock.now - start < .seconds(5))
  }

  @Test func aSignalWithNobodyWaitingIsKeptForTheNextWait() async {
    let signal = WakeSignal()
    signal.signal()
    #expect(await signal.wait(timeout: .seconds(5)))
    #expect(await !signal.wait(timeout: .milliseconds(20)))
    let waiting = Task { await signal.wait(timeout: .seconds(30)) }
    try? await Task.sleep(for: .milliseconds(50))
    signal.signal()
    #expect(await waiting.value)
    let cancelled = Task { await signal.wait(timeout: .seconds(30)) }
    cancelled.cancel()
    #expect(await !cancelled.value)
  }

  /// A cancelled task's timed waits answer at once and start nothing. Before, each one started a
  /// timer task: the worker pool's completion loop, cancelled while a job still ran, waited in a
  /// tight loop and piled up timers faster than they ended (the test process grew past 16 GB).
  @Test func aCancelledTasksWaitsStartNoTimer() async {
    let signal = WakeSignal()
    let clock = CountingClock()
    let waits = Task {
      withUnsafeCurrentTask { $0?.cancel() }
      var signalled = 0
      for _ in 0..<1000 where await signal.wait(timeout: .seconds(30), clock: clock) { signalled += 1 }
      return signalled
    }
    #expect(await waits.value == 0)
    try? await Task.sleep(for: .milliseconds(200))
    #expect(clock.sleeps == 0, "\(clock.sleeps) timers started")
  }
}

/// The system clock, counting the sleeps begun on it.
private final class CountingClock: NovaClock {
  private let count = Mutex(0)
  var sleeps: Int { count.withLock { $0 } }
  func now() -> Date { Date() }
  func uptime() -> Duration { SystemClock().uptime() }
  func sleep(for duration: Duration) async throws {
    count.withLock { $0 += 1 }
    try await Task.sleep(for: duration)
  }
}

/// Holds the next wait between its start and its registration until released (without
/// blocking a thread: the tests share a small pool of them).
private final class RegistrationWindow: Sendable {
  private let state = Mutex((holdNext: false, held: false, released: false))

  func hold() { state.withLock { $0.holdNext = true } }

  var isHeld: Bool { state.withLock { $0.held } }

  func release() { state.withLock { $0.released = true } }

  /// Called by the wait: returns once the window, held open for it, is released.
  func passThrough() async {
    let hold = state.withLock { state -> Bool in
      guard state.holdNext else { return false }
      state.holdNext = false
      state.held = true
      return true
    }
    guard hold else { return }
    while !state.withLock({ $0.released }) { try? await Task.sleep(for: .milliseconds(1)) }
  }
}
