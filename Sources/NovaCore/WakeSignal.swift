import Synchronization

/// Wakes waiting tasks when something happened (new jobs, a free worker slot).
/// A signal with nobody waiting is remembered for the next wait, so none is missed; and a signal
/// is taken only by a wait that then reports it (a wait that times out at the same moment leaves
/// it to the next one).
public final class WakeSignal: Sendable {
  private struct State {
    var pending = false
    var nextID = 0
    var waiters: [Int: CheckedContinuation<Bool, Never>] = [:]
    /// Waits begun and not yet returned, each with the signals counted when it began.
    var active: [Int: Int] = [:]
    /// Signals that woke registered waiters: a wait that began before one and registers after
    /// it was meant to be woken too.
    var signals = 0
    /// Active waits that ended (timed out or cancelled) before their continuation was registered.
    var ended: Set<Int> = []
  }

  private let state = Mutex(State())
  /// Runs between a wait's start and its registration (tests hold that window open with it).
  private let beforeRegistering: (@Sendable () async -> Void)?

  public init() { beforeRegistering = nil }

  /// A signal whose waits run `beforeRegistering` between their start and their registration.
  package init(beforeRegistering: @escaping @Sendable () async -> Void) { self.beforeRegistering = beforeRegistering }

  /// Wakes every waiting task, or the next one to wait.
  public func signal() {
    let waiters = state.withLock { state -> [CheckedContinuation<Bool, Never>] in
      if state.waiters.isEmpty {
        state.pending = true
        return []
      }
      let waiters = Array(state.waiters.values)
      state.waiters.removeAll(keepingCapacity: true)
      state.signals += 1
      return waiters
    }
    for waiter in waiters { waiter.resume(returning: true) }
  }

  /// Returns after a signal, or when the task is cancelled.
  public func wait() async {
    _ = await wait(until: nil)
  }

  /// Returns after a signal, after `timeout` of `clock`'s time, or when the task is cancelled;
  /// true when a signal ended the wait.
  @discardableResult
  public func wait(timeout: Duration, clock: any NovaClock = SystemClock()) async -> Bool {
    await wait(until: (timeout, clock))
  }

  private func wait(until limit: (timeout: Duration, clock: any NovaClock)?) async -> Bool {
    // A signal already there, or a cancelled task, answers at once: no timer is started (a loop
    // that keeps waiting while cancelled must not pile up timer tasks).
    let begun = state.withLock { state -> Int? in
      if state.pending {
        state.pending = false
        return nil
      }
      if Task.isCancelled { return 0 }
      state.nextID += 1
      state.active[state.nextID] = state.signals
      return state.nextID
    }
    // nil: a signal was waiting; 0: cancelled; else the wait's id (ids start at 1).
    guard let id = begun else { return true }
    if id == 0 { return false }
    let timer = limit.map { limit in
      Task {
        do { try await limit.clock.sleep(for: limit.timeout) } catch { return }
        self.end(id)
      }
    }
    defer {
      timer?.cancel()
      state.withLock { state in
        state.active.removeValue(forKey: id)
        state.ended.remove(id)
      }
    }
    if let beforeRegistering { await beforeRegistering() }
    return await withTaskCancellationHandler {
      await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
        let resumeNow = state.withLock { state -> Bool? in
          if state.pending {
            state.pending = false
            return true
          }
          // A signal came between this wait's start and now, and woke the waiters registered
          // then: it was meant for this one too.
          if let begun = state.active[id], begun != state.signals {
            state.ended.remove(id)
            return true
          }
          if state.ended.remove(id) != nil || Task.isCancelled { return false }
          state.waiters[id] = continuation
          return nil
        }
        if let resumeNow { continuation.resume(returning: resumeNow) }
      }
    } onCancel: {
      end(id)
    }
  }

  /// Ends wait `id` without a signal: resumes it if it waits, else marks it so that it does not.
  private func end(_ id: Int) {
    let continuation = state.withLock { state -> CheckedContinuation<Bool, Never>? in
      if let continuation = state.waiters.removeValue(forKey: id) { return continuation }
      // Not registered yet: it must not register. (A wait already resumed is no longer active.)
      if state.active[id] != nil { state.ended.insert(id) }
      return nil
    }
    continuation?.resume(returning: false)
  }
}
