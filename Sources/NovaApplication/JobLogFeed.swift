import Foundation
import NovaCore
import NovaQueue

/// The output of a job's attempts, for a caller already allowed to read the job: read once, or
/// followed while the job runs (polling the store every `interval`, one reader per follower),
/// ending when the job (or the attempt asked for) is over and its last output was read.
public struct JobLogFeed: Sendable {
  public let job: Job
  /// One attempt's output only; nil for every attempt's.
  public let attempt: Int?
  let store: any JobLogStore
  let queue: any JobQueue
  let clock: any NovaClock

  /// How often a follower looks for more.
  public static let interval: Duration = .milliseconds(250)
  /// The longest one follow lasts; a follower that wants more asks again.
  public static let maxFollow: Duration = .seconds(3600)
  static let page = 1000

  /// Hands the output to `body` in the order written, page by page; with `follow`, goes on until
  /// the job is over, `stop` says so (the server is stopping), `maxFollow` passed, or the task is
  /// cancelled (the client went away).
  public func read(follow: Bool, stop: @Sendable () -> Bool = { false }, _ body: ([JobLogChunk]) async throws -> Void) async throws {
    var after: Int64 = 0
    var finishing = false
    let started = clock.uptime()
    while true {
      let chunks = try await store.logs(of: job.id, attempt: attempt, after: after, limit: Self.page)
      if !chunks.isEmpty {
        after = chunks[chunks.count - 1].sequence
        try await body(chunks)
        if chunks.count == Self.page { continue }
      }
      if !follow || finishing || stop() || clock.uptime() - started >= Self.maxFollow { return }
      // Over: one more read catches what the last write of the attempt left.
      if try await isOver() {
        finishing = true
        continue
      }
      try await clock.sleep(for: Self.interval)
    }
  }

  private func isOver() async throws -> Bool {
    guard let current = try await queue.get(job.id) else { return true }
    if current.state.isTerminal { return true }
    guard let attempt else { return false }
    return current.attempts > attempt || (current.attempts == attempt && current.state != .running)
  }
}

extension JobActions {
  /// The output of a job's attempts (one attempt's when `attempt` is given), once the policy
  /// allows the caller to read the job.
  public func logs(_ id: JobID, attempt: Int?, clock: any NovaClock = SystemClock(), by caller: Caller?) async throws -> JobLogFeed {
    if let attempt, attempt < 1 { throw NovaError.invalidInput(field: "attempt", message: "\(attempt) is not an attempt number (1, 2, …)") }
    let job = try await get(id, by: caller)
    guard let store = queue.logStore else { throw NovaError.notFound("this store keeps no job output") }
    return JobLogFeed(job: job, attempt: attempt, store: store, queue: queue, clock: clock)
  }
}
