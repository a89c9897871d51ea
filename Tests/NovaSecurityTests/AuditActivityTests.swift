import Foundation
import NovaCore
import NovaQueue
import NovaSecurity
import NovaTestSupport
import Testing

@Suite("Audit activity", .timeLimit(.minutes(5)))
struct AuditActivityTests {
  @Test func countsEventsPerQueueAndWaitsFromTheLogAcrossReads() async throws {
    let fixture = try SecurityFixture()
    let queue = fixture.queue
    for _ in 0..<3 { _ = try await queue.enqueue(JobRequest(kind: "echo", queue: "a", maxAttempts: 1)) }
    fixture.clock.advance(by: 2)
    let leases = try await queue.claim(queues: ["a"], worker: "w1", leaseDuration: .seconds(30), limit: 2)
    #expect(leases.count == 2)
    #expect(try await queue.fail(leases[0], error: "boom", retryable: true) == .dead)
    try await queue.complete(leases[1], result: nil)
    _ = try await queue.enqueue(JobRequest(kind: "echo", queue: "b"))
    try await fixture.audit.append(
      event: "policy.decided", subject: "token:t", payload: .object(["source": .string("cache"), "allowed": .bool(true)]))
    try await fixture.audit.append(
      event: "policy.decided", subject: "token:t", payload: .object(["source": .string("fallback"), "allowed": .bool(false)]))
    try await fixture.audit.append(event: "token.created", subject: "t", payload: .object([:]))

    let first = try await fixture.audit.activity(after: 0)
    #expect(first.through == (try await fixture.audit.size()))
    let a = try #require(first.queues["a"])
    #expect(a.count(.enqueued) == 3 && a.count(.claimed) == 2 && a.count(.dead) == 1 && a.count(.completed) == 1)
    #expect(a.waitMilliseconds == [2000, 2000])
    #expect(a.failureRatio == 0.5)
    #expect(first.queues["b"]?.count(.enqueued) == 1 && first.queues["b"]?.failureRatio == nil)
    #expect(first.decisionCount == 2 && first.cacheHitRatio == 0.5 && first.decisions(from: "fallback") == 1)
    #expect(first.decisions[AuditActivity.DecisionKey(source: "fallback", allowed: false)] == 1)

    // Claims of jobs that became available before the stretch read their wait from earlier entries.
    fixture.clock.advance(by: 3)
    let later = try await queue.claim(queues: [], worker: "w2", leaseDuration: .seconds(30), limit: 10)
    #expect(later.count == 2)
    let second = try await fixture.audit.activity(after: first.through)
    #expect(second.queues["a"]?.waitMilliseconds == [5000])
    #expect(second.queues["b"]?.waitMilliseconds == [3000])
    #expect(second.queues["a"]?.count(.enqueued) == 0 && second.decisionCount == 0 && second.cacheHitRatio == nil)
    #expect(try await fixture.audit.activity(after: second.through).queues.isEmpty)
  }

  @Test func waitQuantilesAreNearestRank() {
    var activity = AuditActivity.QueueActivity()
    #expect(activity.waitQuantile(0.5) == nil)
    activity.waitMilliseconds = Array(1...100).reversed().map(Int64.init)
    #expect(activity.waitQuantile(0.5) == 50)
    #expect(activity.waitQuantile(0.95) == 95)
    #expect(activity.waitQuantile(0.99) == 99)
    #expect(activity.waitQuantile(0) == 1)
    #expect(activity.waitQuantile(1) == 100)
  }
}
