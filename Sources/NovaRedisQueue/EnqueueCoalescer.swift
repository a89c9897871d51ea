import NovaCore
import NovaQueue
import Synchronization

/// Single enqueues for one queue, by one actor, that arrive while a call for them is out go to
/// Redis together in the next call: one script call (and one audit entry) for many jobs where
/// each job paid for its own. A caller that finds no call out sends at once, alone.
///
/// The caller whose call comes back hands the turn to the first that waited, which sends for
/// every waiter and resumes each with its own result. Idempotency keys are checked per call, so
/// a conflict in a shared call sends each of its jobs again on its own: only the job whose key
/// conflicts fails.
final class EnqueueCoalescer: Sendable {
  /// Who may share a call: the audit records of a call name one actor, and callers bounded by
  /// a deadline (request paths) share only with others that are.
  struct Key: Hashable, Sendable {
    var queue: String
    var actor: String
    var bounded: Bool
  }

  /// Stores a batch within a deadline (the nearest of its callers'; nil for none).
  typealias Send = @Sendable ([JobRequest], ContinuousClock.Instant?) async throws -> [EnqueueResult]

  private struct Waiter: Sendable {
    var request: JobRequest
    var deadline: ContinuousClock.Instant?
    var continuation: UnsafeContinuation<Turn, Never>
  }

  private enum Turn: Sendable {
    /// Send for these waiters (the first is the one resumed).
    case lead([Waiter])
    case done(Result<EnqueueResult, any Error>)
  }

  /// A key is present while a call for it is out; its callers waiting for the next call.
  private let calls = Mutex<[Key: [Waiter]]>([:])

  /// The most jobs one shared call sends; the rest wait for the next.
  static let largestCall = 256

  /// Enqueues `request`, alone or with others waiting under `key`; `send` stores a batch.
  func enqueue(_ request: JobRequest, key: Key, deadline: ContinuousClock.Instant?, send: @escaping Send) async throws -> EnqueueResult {
    let idle = calls.withLock { calls in
      if calls[key] != nil { return false }
      calls[key] = []
      return true
    }
    if idle { return try await lead([request], deadline: deadline, waiters: [], key: key, send: send) }
    let turn = await withUnsafeContinuation { (continuation: UnsafeContinuation<Turn, Never>) in
      let waiter = Waiter(request: request, deadline: deadline, continuation: continuation)
      let leadNow = calls.withLock { calls in
        if calls[key] != nil {
          calls[key]?.append(waiter)
          return false
        }
        calls[key] = []
        return true
      }
      if leadNow { continuation.resume(returning: .lead([waiter])) }
    }
    switch turn {
    case .done(let result):
      return try result.get()
    case .lead(let waiters):
      let deadlines = waiters.compactMap(\.deadline)
      return try await lead(waiters.map(\.request), deadline: deadlines.min(), waiters: Array(waiters.dropFirst()), key: key, send: send)
    }
  }

  /// Sends `requests` (the leader's first, then one per waiter), hands the turn on, and
  /// resumes the waiters with their results; returns the leader's.
  private func lead(
    _ requests: [JobRequest], deadline: ContinuousClock.Instant?, waiters: [Waiter], key: Key, send: @escaping Send
  ) async throws -> EnqueueResult {
    // A shared call runs in a task of its own: the leader's cancellation (its client gone)
    // must not fail the others' jobs (a retry's pause would throw it).
    let results: [Result<EnqueueResult, any Error>]
    if waiters.isEmpty {
      results = await Self.store(requests, deadline: deadline, send: send)
    } else {
      results = await Task { await Self.store(requests, deadline: deadline, send: send) }.value
    }
    handOver(key)
    for (waiter, result) in zip(waiters, results.dropFirst()) { waiter.continuation.resume(returning: .done(result)) }
    return try results[0].get()
  }

  /// Each request's result: one call for all, or, when an idempotency key conflicts in a
  /// shared call (which then writes nothing), one call each.
  private static func store(
    _ requests: [JobRequest], deadline: ContinuousClock.Instant?, send: @escaping Send
  ) async -> [Result<EnqueueResult, any Error>] {
    do {
      return try await send(requests, deadline).map { .success($0) }
    } catch NovaError.idempotencyConflict where requests.count > 1 {
      var results: [Result<EnqueueResult, any Error>] = []
      for request in requests {
        do {
          results.append(.success(try await send([request], deadline)[0]))
        } catch {
          results.append(.failure(error))
        }
      }
      return results
    } catch {
      return Array(repeating: .failure(error), count: requests.count)
    }
  }

  /// Gives the turn to the first waiter, with every waiter for it to send, or ends it.
  private func handOver(_ key: Key) {
    let next = calls.withLock { calls -> [Waiter] in
      let waiting = calls[key] ?? []
      if waiting.isEmpty {
        calls[key] = nil
        return []
      }
      // The new leader's call is out: the key stays, with whoever waits beyond this call.
      calls[key] = Array(waiting.dropFirst(Self.largestCall))
      return Array(waiting.prefix(Self.largestCall))
    }
    if let first = next.first { first.continuation.resume(returning: .lead(next)) }
  }
}
