import Foundation
import NovaCore
import NovaQueue
import NovaTestSupport
import Testing

/// Issue #22 point 5 on every backend: a queue's flow control holds in the store's claim, so it
/// holds for every worker on the store.
@Suite("Queue controls", .timeLimit(.minutes(2)))
struct QueueControlsTests {
  let clock = TestClock()
  let lease: Duration = .seconds(60)

  func fill(_ queue: any JobQueue, _ name: String, _ count: Int, key: String? = nil) async throws {
    _ = try await queue.enqueue(
      batch: (0..<count).map { _ in
        var request = JobRequest(kind: "noop", queue: name)
        request.concurrencyKey = key
        return request
      })
  }

  func claim(_ queue: any JobQueue, _ queues: [String], limit: Int) async throws -> [JobLease] {
    try await queue.claim(queues: queues, worker: "w", leaseDuration: lease, limit: limit)
  }

  @Test(arguments: QueueBackend.all)
  func aPausedQueueAcceptsJobsAndHandsNoneOut(backend: QueueBackend) async throws {
    let queue = try backend.make(clock, RetryPolicy())
    try await queue.setControls(QueueControls(paused: true), queue: "gpu")
    try await fill(queue, "gpu", 3)
    try await fill(queue, "cpu", 2)
    #expect(try await claim(queue, ["gpu"], limit: 10).isEmpty)
    #expect(try await queue.stats().count(queue: "gpu", state: .available) == 3)
    // A claim over both takes only the other queue's.
    #expect(try await claim(queue, ["gpu", "cpu"], limit: 10).map(\.job.queue) == ["cpu", "cpu"])
    #expect(try await claim(queue, [], limit: 10).isEmpty)
    #expect(try await queue.controls()["gpu"] == QueueControls(paused: true))
    try await queue.setControls(QueueControls(), queue: "gpu")
    #expect(try await claim(queue, ["gpu"], limit: 10).count == 3)
  }

  @Test(arguments: QueueBackend.all)
  func maxRunningHoldsOverClaimsUntilJobsFinish(backend: QueueBackend) async throws {
    let queue = try backend.make(clock, RetryPolicy())
    try await queue.setControls(QueueControls(maxRunning: 2), queue: "llm")
    try await fill(queue, "llm", 6)
    let first = try await claim(queue, ["llm"], limit: 10)
    #expect(first.count == 2)
    #expect(try await claim(queue, ["llm"], limit: 10).isEmpty)
    try await queue.complete(first[0], result: nil)
    #expect(try await claim(queue, ["llm"], limit: 10).count == 1)
    // A released job frees its slot as well; a lease that lapsed does once it is reaped.
    #expect(try await queue.release(batch: [first[1]]) == 1)
    let more = try await claim(queue, ["llm", "other"], limit: 10)
    #expect(more.count == 1)
    clock.advance(by: 120)
    _ = try await queue.reapExpiredLeases()
    #expect(try await claim(queue, ["llm"], limit: 10).count == 2)
    #expect(try await queue.controls()["llm"]?.maxRunning == 2)
  }

  @Test(arguments: QueueBackend.all)
  func aRateHandsOutJobsAtItsPaceInBurstsOfOneSecond(backend: QueueBackend) async throws {
    let queue = try backend.make(clock, RetryPolicy())
    try await queue.setControls(QueueControls(ratePerSecond: 4), queue: "api")
    try await fill(queue, "api", 40)
    #expect(try await claim(queue, ["api"], limit: 100).count == 4, "a full bucket: one second's worth")
    #expect(try await claim(queue, ["api"], limit: 100).isEmpty)
    clock.advance(by: 0.5)
    #expect(try await claim(queue, ["api"], limit: 100).count == 2)
    clock.advance(by: 60)
    #expect(try await claim(queue, ["api"], limit: 100).count == 4, "the bucket holds one second's worth, not a minute's")
    // Slower than one a second: one now, the next after its interval.
    try await queue.setControls(QueueControls(ratePerSecond: 0.5), queue: "api")
    #expect(try await claim(queue, ["api"], limit: 100).count == 1)
    clock.advance(by: 1)
    #expect(try await claim(queue, ["api"], limit: 100).isEmpty)
    clock.advance(by: 1.1)
    #expect(try await claim(queue, ["api"], limit: 100).count == 1)
  }

  /// With keyed jobs too (a claim that walks the jobs one by one, as placing claims do: it kept
  /// no weights on SQLite and took the older queue's jobs first).
  @Test(arguments: QueueBackend.all, [false, true])
  func weightsShareWorkersBetweenBusyQueues(backend: QueueBackend, keyed: Bool) async throws {
    let queue = try backend.make(clock, RetryPolicy())
    try await queue.setControls(QueueControls(weight: 3), queue: "gold")
    try await queue.setControls(QueueControls(weight: 1), queue: "bronze")
    try await fill(queue, "gold", 100, key: keyed ? "tenant" : nil)
    try await fill(queue, "bronze", 100, key: keyed ? "tenant" : nil)
    var taken: [String: Int] = [:]
    // One job at a time (workers with one free slot) and four at a time.
    for _ in 0..<40 {
      for lease in try await claim(queue, ["gold", "bronze"], limit: 1) { taken[lease.job.queue, default: 0] += 1 }
    }
    #expect(taken == ["gold": 30, "bronze": 10], "\(taken)")
    for _ in 0..<10 {
      for lease in try await claim(queue, ["bronze", "gold"], limit: 4) { taken[lease.job.queue, default: 0] += 1 }
    }
    #expect(taken == ["gold": 60, "bronze": 20], "\(taken)")
    // A queue with nothing waiting leaves its share to the others.
    let rest = try await claim(queue, ["gold", "bronze", "empty"], limit: 100)
    #expect(rest.count == 100)
  }

  @Test(arguments: QueueBackend.all)
  func badControlsAreRefusedNamingTheSetting(backend: QueueBackend) async throws {
    let queue = try backend.make(clock, RetryPolicy())
    await #expect(throws: NovaError.invalidInput(field: "weight", message: "0 is out of range 1...1000")) {
      try await queue.setControls(QueueControls(weight: 0), queue: "q")
    }
    await #expect(throws: NovaError.invalidInput(field: "max_running", message: "-1 is out of range 0...1000000")) {
      try await queue.setControls(QueueControls(maxRunning: -1), queue: "q")
    }
    await #expect(throws: NovaError.self) { try await queue.setControls(QueueControls(ratePerSecond: 0), queue: "q") }
    await #expect(throws: NovaError.self) { try await queue.setControls(QueueControls(), queue: "bad queue") }
    #expect(try await queue.controls()["q"] == nil)
  }

  @Test func ratesAreReadAsPeopleWriteThem() throws {
    #expect(try QueueControls.parseRate("10/s") == 10)
    #expect(try QueueControls.parseRate("600/m") == 10)
    #expect(try QueueControls.parseRate("2/h") == 2.0 / 3600)
    #expect(try QueueControls.parseRate("5") == 5)
    #expect(throws: NovaError.invalidInput(field: "--rate", message: "'fast' is not a rate such as 10/s, 600/m, 2/h or 1/d")) {
      try QueueControls.parseRate("fast")
    }
    #expect(throws: NovaError.self) { try QueueControls.parseRate("10/w") }
    #expect(throws: NovaError.self) { try QueueControls.parseRate("-1/s") }
  }

  @Test func weightedSharesFollowTheWeightsAndCatchUpIdleQueuesGently() {
    #expect(WeightedShare.split(limit: 8, queues: [("a", 3, 0, 100), ("b", 1, 0, 100)]) == ["a": 6, "b": 2])
    // What one cannot take goes to the other.
    #expect(WeightedShare.split(limit: 8, queues: [("a", 3, 0, 2), ("b", 1, 0, 100)]) == ["a": 2, "b": 6])
    // A queue idle for long (served far behind) gets its share, not everything until it catches up.
    let share = WeightedShare.split(limit: 8, queues: [("a", 1, 10_000, 100), ("b", 1, 0, 100)])
    #expect(share["b"] == 4 && share["a"] == 4, "\(share)")
    #expect(WeightedShare.split(limit: 8, queues: [("a", 1, 0, 0)]).isEmpty)
  }
}
