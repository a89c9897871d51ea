import NovaQueue
import Testing

/// The pace a pool claims ahead at (about 100 ms of work): measured as jobs end, so that a pool
/// starting into a stream of short jobs claims ahead within milliseconds (issue #24: measured on
/// the supervisor's 100 ms tick alone, 16,000 jobs/s arriving fell 30 ms behind at start).
@Suite("Pace meter")
struct PaceMeterTests {
  @Test func aStreamOfShortJobsIsMeasuredWithinTheFirstWindow() {
    var meter = PaceMeter(now: .seconds(1000))
    // 11,000 jobs/s: one every 91 µs, for 11 ms.
    for index in 1...121 { meter.finish(at: .seconds(1000) + .microseconds(index * 91)) }
    // The old meter had 0 until its first tick at 100 ms: the pool claimed for free slots only.
    #expect(meter.pace * 0.1 >= 90, "prefetch \(meter.pace * 0.1) after 11 ms")
  }

  @Test func aSteadyRateIsMeasuredWhateverTheSpacingOfTheMeasurements() {
    var byJobs = PaceMeter(now: .zero)
    var byTicks = PaceMeter(now: .zero)
    // 2,000 jobs/s for 2 s; one meter measures as jobs end, the other on a 100 ms tick only
    // (its jobs are counted at the last tick's instant, which never measures).
    var lastTick = Duration.zero
    for index in 1...4000 {
      let now = Duration.microseconds(index * 500)
      byJobs.finish(at: now)
      byTicks.finish(at: lastTick)
      if index % 200 == 0 {
        byTicks.measure(now: now)
        lastTick = now
      }
    }
    #expect(abs(byJobs.pace - 2000) < 40, "\(byJobs.pace)")
    #expect(abs(byTicks.pace - 2000) < 40, "\(byTicks.pace)")
  }

  @Test func withoutJobsEndingThePaceDecaysToNothing() {
    var meter = PaceMeter(now: .zero)
    for index in 1...1000 { meter.finish(at: .milliseconds(index)) }
    #expect(meter.pace > 900)
    // Slow jobs now: the supervisor's ticks find none ended, and the pool stops claiming ahead.
    for tick in 1...10 { meter.measure(now: .seconds(1) + .milliseconds(100 * tick)) }
    #expect(meter.pace * 0.1 < 1, "\(meter.pace)")
  }
}
