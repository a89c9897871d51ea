import Foundation
import NovaCore
import NovaQueue
import Synchronization

/// `nova bench promotion`: N jobs fall due at the same instant; claims promote them (in bounded
/// batches) while another lease is heartbeated all along. Shows that promotion never holds the
/// store long enough to delay a heartbeat, and what memory it takes.
public enum PromotionBenchmark {
  /// One run's figures; the JSON keys are the stable output of `nova bench promotion --json`.
  public struct Result: Codable, Sendable, Equatable {
    public var backend: String
    public var jobs: Int
    /// From the instant the jobs fell due until the last was available.
    public var promote_s: Double
    public var promoted_per_s: Double
    public var heartbeats: Int
    public var heartbeat_p50_ms: Double
    public var heartbeat_p99_ms: Double
    public var heartbeat_max_ms: Double
    public var peak_rss_mb: Double
  }

  /// A wall clock that can be moved forward (jobs enqueued an hour ahead then fall due at once);
  /// uptime and sleeps are the system's.
  public final class WarpClock: NovaClock {
    private let offset = Mutex(0.0)
    public init() {}
    public func now() -> Date { Date().addingTimeInterval(offset.withLock { $0 }) }
    public func uptime() -> Duration { SystemClock().uptime() }
    public func sleep(for duration: Duration) async throws { try await Task.sleep(for: duration) }
    /// Moves the wall clock `seconds` ahead.
    public func warp(by seconds: TimeInterval) { offset.withLock { $0 += seconds } }
  }

  /// The median of several runs' figures, field by field (peak memory: the largest).
  public static func median(_ results: [Result]) -> Result {
    guard var out = results.first else { preconditionFailure("median of no results") }
    func med(_ key: (Result) -> Double) -> Double { Statistics.median(results.map(key)) ?? 0 }
    out.promote_s = med(\.promote_s)
    out.promoted_per_s = med(\.promoted_per_s)
    out.heartbeat_p50_ms = med(\.heartbeat_p50_ms)
    out.heartbeat_p99_ms = med(\.heartbeat_p99_ms)
    out.heartbeat_max_ms = med(\.heartbeat_max_ms)
    out.peak_rss_mb = results.map(\.peak_rss_mb).max() ?? 0
    return out
  }

  /// Runs against `queue`, empty and used by nobody else, whose clock is `clock`.
  public static func run(queue: any JobQueue, clock: WarpClock, backend: String, jobs: Int) async throws -> Result {
    guard jobs > 0 else { throw NovaError.invalidInput(field: "jobs", message: "must be positive") }
    let dueAt = clock.now().addingTimeInterval(3600)
    var remaining = jobs
    while remaining > 0 {
      let count = min(1000, remaining)
      _ = try await queue.enqueue(batch: Array(repeating: JobRequest(kind: "bench", queue: "due", runAt: dueAt), count: count))
      remaining -= count
    }
    _ = try await queue.enqueue(JobRequest(kind: "bench", queue: "held"))
    guard let lease = try await queue.claim(queues: ["held"], worker: "bench", leaseDuration: .seconds(600), limit: 1).first else {
      throw NovaError.storage("the heartbeat job could not be claimed")
    }
    clock.warp(by: 3601)
    let timer = ContinuousClock()
    let start = timer.now
    let heartbeats = HeartbeatRecorder()
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask {
        while !heartbeats.done.withLock({ $0 }) {
          let sent = timer.now
          _ = try await queue.heartbeat(lease, leaseDuration: .seconds(600))
          let took = (timer.now - sent).seconds * 1000
          heartbeats.latencies.withLock { $0.append(took) }
          try await Task.sleep(for: .milliseconds(10))
        }
      }
      // Each claim promotes at most one batch of due jobs (and leases one job).
      let waiting = JobFilter(state: .scheduled, queue: "due", limit: 1)
      while try await !queue.list(waiting).jobs.isEmpty {
        _ = try await queue.claim(queues: ["due"], worker: "bench", leaseDuration: .seconds(600), limit: 1)
      }
      heartbeats.done.withLock { $0 = true }
      try await group.waitForAll()
    }
    let elapsed = (timer.now - start).seconds
    let sorted = heartbeats.latencies.withLock { $0 }.sorted()
    return Result(
      backend: backend, jobs: jobs, promote_s: elapsed, promoted_per_s: Double(jobs) / max(elapsed, 1e-9), heartbeats: sorted.count,
      heartbeat_p50_ms: Statistics.percentile(sorted: sorted, 0.5) ?? 0, heartbeat_p99_ms: Statistics.percentile(sorted: sorted, 0.99) ?? 0,
      heartbeat_max_ms: sorted.last ?? 0, peak_rss_mb: AuditBenchmark.peakRSSMegabytes())
  }
}

/// What the heartbeat task of `PromotionBenchmark` measured, and when to stop.
final class HeartbeatRecorder: Sendable {
  let latencies = Mutex<[Double]>([])
  let done = Mutex(false)
}
