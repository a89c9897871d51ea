import Foundation
import NovaCore

/// How many jobs a pool finishes per second, smoothed exponentially over time: the pool claims
/// about 100 ms of work ahead at this pace.
///
/// Measured as jobs end (at most once per `window`) as well as on the pool's supervisor tick,
/// so that a pool that starts, or wakes from an idle spell, into a stream of short jobs claims
/// ahead within milliseconds. Measured on the tick alone (100 ms), it claimed for its free slots
/// only until the first tick, and 16,000 jobs/s arriving one by one fell 30 ms behind.
package struct PaceMeter: Sendable {
  /// The smoothing's time constant.
  package static let smoothing: Duration = .milliseconds(100)
  /// The least time between two measurements as jobs end.
  package static let window: Duration = .milliseconds(10)

  /// Jobs finished per second, smoothed.
  package private(set) var pace: Double = 0
  private var finished = 0
  private var measuredAt: Duration

  /// A meter that starts measuring at `now` (uptime).
  package init(now: Duration) { measuredAt = now }

  /// Counts a job that ended at `now`; measures when the window has passed.
  package mutating func finish(at now: Duration) {
    finished += 1
    if now - measuredAt >= Self.window { measure(now: now) }
  }

  /// Folds the jobs finished since the last measurement into the pace, weighted by how long
  /// ago that was (the same average whatever the spacing of the calls).
  package mutating func measure(now: Duration) {
    let elapsed = (now - measuredAt).seconds
    guard elapsed > 0 else { return }
    let weight = 1 - exp(-elapsed / Self.smoothing.seconds)
    pace += weight * (Double(finished) / elapsed - pace)
    finished = 0
    measuredAt = now
  }
}
