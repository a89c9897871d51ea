import Foundation
import Testing

@testable import NovaSecurity

/// Issue #13 point 9: the failure table is bounded, evicts the least recently used key (never
/// everything), and counts concurrent failures atomically.
@Suite("Failed-authentication limiter")
struct FailureLimiterTests {
  let now = Date(timeIntervalSince1970: 1_800_000_000)

  @Test func aFullTableEvictsTheLeastRecentlyUsedKeyAndNeverWipes() {
    let limiter = FailureLimiter(maxFailures: 2, window: 60, capacity: 3)
    for _ in 0..<3 { _ = limiter.recordFailure(keys: ["address a"], now: now) }
    _ = limiter.recordFailure(keys: ["address b"], now: now)
    _ = limiter.recordFailure(keys: ["address c"], now: now)
    #expect(limiter.recordFailure(keys: ["address a"], now: now).retryAfter == 60)
    // A spray of new addresses evicts the ones used least recently, one at a time.
    for spray in 0..<50 { _ = limiter.recordFailure(keys: ["address spray-\(spray)"], now: now) }
    #expect(limiter.count == 3)
    let limiter2 = FailureLimiter(maxFailures: 2, window: 60, capacity: 3)
    for _ in 0..<3 { _ = limiter2.recordFailure(keys: ["address a"], now: now) }
    _ = limiter2.recordFailure(keys: ["address b"], now: now)
    _ = limiter2.recordFailure(keys: ["address a"], now: now)
    _ = limiter2.recordFailure(keys: ["address c"], now: now)
    _ = limiter2.recordFailure(keys: ["address d"], now: now)  // evicts b, the least recently used
    #expect(limiter2.count == 3)
    #expect(limiter2.recordFailure(keys: ["address a"], now: now).retryAfter == 60)
    #expect(limiter2.recordFailure(keys: ["address b"], now: now).retryAfter == nil)
  }

  @Test func concurrentFailuresAreAllCounted() async {
    let limiter = FailureLimiter(maxFailures: 799, window: 60)
    let now = self.now
    let limited = await withTaskGroup(of: Int.self) { group in
      for _ in 0..<8 {
        group.addTask {
          var limited = 0
          for _ in 0..<100 where limiter.recordFailure(keys: ["address p", "token t"], now: now).retryAfter != nil { limited += 1 }
          return limited
        }
      }
      return await group.reduce(0, +)
    }
    #expect(limited == 1)
  }

  @Test func auditEntriesArePacedPerAddressWithTheirCount() {
    let limiter = FailureLimiter(maxFailures: 100, window: 60)
    #expect(limiter.recordFailure(keys: ["address a"], now: now).auditCount == 1)
    for second in 1...59 { #expect(limiter.recordFailure(keys: ["address a"], now: now.addingTimeInterval(Double(second))).auditCount == nil) }
    #expect(limiter.recordFailure(keys: ["address b"], now: now).auditCount == 1)
    #expect(limiter.recordFailure(keys: ["address a"], now: now.addingTimeInterval(60)).auditCount == 60)
  }
}
