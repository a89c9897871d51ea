import Foundation
import NovaCore
import NovaQueue
import NovaRedis
import NovaRedisQueue
import NovaTestSupport
import Testing

/// Issue #24, single submissions on Redis: single enqueues that arrive while one is out share
/// the next script call, each with its own answer, its own actor in the audit records, and its
/// own idempotency outcome.
@Suite("Redis single enqueues sharing calls", .enabled(if: TestServers.redisAvailable, TestServers.redisMissing), .timeLimit(.minutes(5)))
struct RedisEnqueueCoalescingTests {
  func scriptCalls(_ client: RedisClient) async throws -> Int {
    let info = try await client.send("INFO", "commandstats").string ?? ""
    guard let line = info.split(whereSeparator: \.isNewline).first(where: { $0.hasPrefix("cmdstat_evalsha:") }),
      let calls = line.split(separator: ",").first?.split(separator: "=").last
    else { return 0 }
    return Int(calls) ?? 0
  }

  @Test func concurrentSingleEnqueuesShareCallsAndEachGetsItsOwnAnswer() async throws {
    // Its own server, so that the script calls counted are this test's alone.
    let server = try RedisTestServer()
    defer { server.stop() }
    let queue = RedisJobQueue(
      configuration: .init(client: .init(url: try RedisURL(parsing: server.url)), keyPrefix: "coalesce", serverTime: false))
    defer { queue.close() }
    _ = try await queue.enqueue(JobRequest(kind: "warm"))
    let before = try await scriptCalls(queue.client)
    let results = try await withThrowingTaskGroup(of: (Int, String, EnqueueResult).self) { group in
      for index in 0..<300 {
        let actor = index % 2 == 0 ? "token:even" : "token:odd"
        group.addTask {
          let result = try await AuditContext.$actor.withValue(actor) {
            try await queue.enqueue(JobRequest(kind: "echo", payload: Data("{\"n\":\(index)}".utf8)))
          }
          return (index, actor, result)
        }
      }
      return try await group.reduce(into: []) { $0.append($1) }
    }
    let calls = try await scriptCalls(queue.client) - before
    #expect(Set(results.map(\.2.id)).count == 300)
    #expect(results.allSatisfy { !$0.2.existing && $0.2.state == .available })
    #expect(calls < 300, "\(calls) script calls for 300 concurrent enqueues")
    // Each job has its own payload and the actor of its own caller.
    for (index, _, result) in results.prefix(20) {
      #expect(try await queue.get(result.id)?.payload == Data("{\"n\":\(index)}".utf8))
    }
    let transitions = try await queue.pendingTransitions(after: [:], limit: 1000)
    let actors = Dictionary(transitions.compactMap { record in record.transition.map { ($0.job, record.actor) } }, uniquingKeysWith: { $1 })
    for (_, actor, result) in results { #expect(actors[result.id] == actor) }
  }

  @Test func aConflictInASharedCallFailsOnlyItsOwnJob() async throws {
    let queue = try QueueBackend.redis.make(SystemClock(), RetryPolicy())
    let held: JobID = try await queue.enqueue(JobRequest(kind: "echo", payload: Data("{}".utf8), idempotencyKey: "held"))
    let outcomes = try await withThrowingTaskGroup(of: (Int, Result<EnqueueResult, any Error>).self) { group in
      for index in 0..<100 {
        group.addTask {
          // Job 50 reuses the held key for another payload: a conflict.
          let request = JobRequest(
            kind: "echo", payload: Data("{\"n\":\(index)}".utf8), idempotencyKey: index == 50 ? "held" : index == 60 ? "fresh" : nil)
          do {
            return (index, .success(try await queue.enqueue(request)))
          } catch {
            return (index, .failure(error))
          }
        }
      }
      return try await group.reduce(into: [:]) { $0[$1.0] = $1.1 }
    }
    for (index, outcome) in outcomes {
      switch outcome {
      case .success(let result):
        #expect(index != 50)
        #expect(!result.existing)
      case .failure(let error):
        #expect(index == 50)
        guard case NovaError.idempotencyConflict(_, let existing) = error else {
          Issue.record("job 50 failed with \(error)")
          continue
        }
        #expect(existing == held)
      }
    }
    #expect(try await queue.stats().count(queue: "default", state: .available) == 100)
  }

  /// A waiter that leads a shared call after its own task was cancelled (its client went away)
  /// does not take the others down with it: with Redis down, a retry's pause in a cancelled
  /// task would throw, failing every job of the call.
  @Test func aCancelledLeaderDoesNotFailTheJobsItSendsForOthers() async throws {
    let server = try RedisTestServer()
    defer { server.stop() }
    let queue = RedisJobQueue(
      configuration: .init(
        client: .init(url: try RedisURL(parsing: server.url), retryWindow: .seconds(2)), keyPrefix: "cancelled", serverTime: false))
    defer { queue.close() }
    _ = try await queue.enqueue(JobRequest(kind: "warm"))
    server.stop()
    // The first caller sends alone and fails once its retry window ends; the next leads the
    // others' call.
    let first = Task { try await queue.enqueue(JobRequest(kind: "echo")) }
    try await Task.sleep(for: .milliseconds(100))
    let cancelled = Task { try await queue.enqueue(JobRequest(kind: "echo")) }
    try await Task.sleep(for: .milliseconds(100))
    let others = (0..<3).map { _ in Task { try await queue.enqueue(JobRequest(kind: "echo")) } }
    try await Task.sleep(for: .milliseconds(100))
    cancelled.cancel()
    _ = await first.result
    try await Task.sleep(for: .milliseconds(300))
    try server.start()
    for other in others {
      let result = try await other.value
      #expect(!result.existing)
    }
    _ = await cancelled.result
  }
}
