import Synchronization

/// An answer given once and awaited by one task: the first `resolve` sets it, later ones are
/// ignored (a timeout and a late result may race), and `wait` returns it whether it came before
/// or after the wait began.
public final class OneShotAnswer<Value: Sendable>: Sendable {
  private struct State {
    var value: Value?
    var waiter: CheckedContinuation<Value, Never>?
  }

  private let state = Mutex(State())

  public init() {}

  /// Sets the answer unless one was set, and wakes the waiter; false when one was set already
  /// (the caller still owns what it offered).
  @discardableResult
  public func resolve(_ value: Value) -> Bool {
    let (set, waiter) = state.withLock { state -> (Bool, CheckedContinuation<Value, Never>?) in
      guard state.value == nil else { return (false, nil) }
      state.value = value
      defer { state.waiter = nil }
      return (true, state.waiter)
    }
    waiter?.resume(returning: value)
    return set
  }

  /// Whether it has its answer.
  public var isResolved: Bool { state.withLock { $0.value != nil } }

  /// The answer, once there is one. One task waits.
  public func wait() async -> Value {
    await withCheckedContinuation { continuation in
      let ready = state.withLock { state -> Value? in
        if let value = state.value { return value }
        state.waiter = continuation
        return nil
      }
      if let ready { continuation.resume(returning: ready) }
    }
  }
}
