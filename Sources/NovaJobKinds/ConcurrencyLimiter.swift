import Synchronization

/// A counting semaphore for async code: at most `permits` holders at once, the others suspended
/// (not polling) in arrival order until a holder releases. A waiter that is cancelled leaves the
/// line at once.
final class ConcurrencyLimiter: Sendable {
  private struct Waiter {
    var id: UInt64
    var continuation: CheckedContinuation<Void, any Error>
  }

  private struct State {
    var available: Int
    var waiters: [Waiter] = []
    var nextID: UInt64 = 0
  }

  private enum Admission {
    case granted
    case cancelled
    case queued
  }

  /// How many holders there may be at once.
  let permits: Int
  private let state: Mutex<State>

  init(permits: Int) {
    self.permits = max(1, permits)
    state = Mutex(State(available: max(1, permits)))
  }

  /// Holders now (for tests and diagnostics).
  var inUse: Int { state.withLock { permits - $0.available } }

  /// Tasks waiting for a permit now.
  var waiting: Int { state.withLock { $0.waiters.count } }

  /// Waits for a permit; the caller must ``release()`` it. Throws `CancellationError` (holding
  /// nothing) when the task is cancelled while waiting.
  func acquire() async throws {
    let id = state.withLock { state -> UInt64 in
      defer { state.nextID += 1 }
      return state.nextID
    }
    try await withTaskCancellationHandler {
      try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
        // Checked under the lock: a cancellation that ran its handler before the waiter was queued
        // is seen here, and one after finds the waiter queued.
        let admission = state.withLock { state -> Admission in
          if Task.isCancelled { return .cancelled }
          if state.available > 0 {
            state.available -= 1
            return .granted
          }
          state.waiters.append(Waiter(id: id, continuation: continuation))
          return .queued
        }
        switch admission {
        case .granted: continuation.resume()
        case .cancelled: continuation.resume(throwing: CancellationError())
        case .queued: break
        }
      }
    } onCancel: {
      let waiter = state.withLock { state -> Waiter? in
        guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
        return state.waiters.remove(at: index)
      }
      waiter?.continuation.resume(throwing: CancellationError())
    }
  }

  /// ``acquire()``, giving up after `limit`: true when a permit is held (release it), false when
  /// none came in time. Throws `CancellationError` (holding nothing) when the task is cancelled.
  func acquire(waitingAtMost limit: Duration) async throws -> Bool {
    let acquired = await withTaskGroup(of: Bool.self) { group in
      group.addTask {
        do {
          try await self.acquire()
          return true
        } catch {
          return false
        }
      }
      group.addTask {
        try? await Task.sleep(for: limit)
        return false
      }
      var acquired = false
      var first = true
      // Both children are awaited: a permit granted just as the time ran out is kept, not lost.
      while let result = await group.next() {
        if result { acquired = true }
        if first {
          first = false
          group.cancelAll()
        }
      }
      return acquired
    }
    if Task.isCancelled {
      if acquired { release() }
      throw CancellationError()
    }
    return acquired
  }

  /// Hands the permit to the longest waiter, or returns it.
  func release() {
    let next = state.withLock { state -> Waiter? in
      if state.waiters.isEmpty {
        state.available = min(state.available + 1, permits)
        return nil
      }
      return state.waiters.removeFirst()
    }
    next?.continuation.resume()
  }
}
