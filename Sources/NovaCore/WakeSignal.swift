import Synchronization

/// Wakes waiting tasks when something happened (new jobs, a free worker slot).
/// A signal with nobody waiting is remembered for the next wait, so none is missed.
public final class WakeSignal: Sendable {
  private struct State {
    var pending = false
    var nextID = 0
    var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
  }

  private let state = Mutex(State())

  public init() {}

  /// Wakes every waiting task, or the next one to wait.
  public func signal() {
    let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
      if state.waiters.isEmpty {
        state.pending = true
        return []
      }
      let waiters = Array(state.waiters.values)
      state.waiters.removeAll(keepingCapacity: true)
      return waiters
    }
    for waiter in waiters { waiter.resume() }
  }

  /// Returns after a signal, or when the task is cancelled.
  public func wait() async {
    let id = state.withLock { state -> Int in
      state.nextID += 1
      return state.nextID
    }
    await withTaskCancellationHandler {
      await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let resumeNow = state.withLock { state -> Bool in
          if state.pending {
            state.pending = false
            return true
          }
          if Task.isCancelled { return true }
          state.waiters[id] = continuation
          return false
        }
        if resumeNow { continuation.resume() }
      }
    } onCancel: {
      let continuation = state.withLock { $0.waiters.removeValue(forKey: id) }
      continuation?.resume()
    }
  }

  /// Returns after a signal, after `timeout` of `clock`'s time, or when the task is cancelled;
  /// true when a signal ended the wait.
  @discardableResult
  public func wait(timeout: Duration, clock: any NovaClock = SystemClock()) async -> Bool {
    await withTaskGroup(of: Bool.self) { group in
      group.addTask {
        await self.wait()
        return !Task.isCancelled
      }
      group.addTask {
        try? await clock.sleep(for: timeout)
        return false
      }
      let signalled = await group.next() ?? false
      group.cancelAll()
      return signalled
    }
  }
}
