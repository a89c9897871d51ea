import Foundation
import Logging
import NovaBenchmarks
import NovaCore
import NovaQueue
import NovaRedis
import NovaRedisQueue
import NovaTestSupport
import Synchronization
import Testing

@Suite(
  "Redis queue under latency and dropped connections", .serialized, .enabled(if: TestServers.redisAvailable, TestServers.redisMissing),
  .timeLimit(.minutes(5)))
struct RedisResilienceTests {
  let logger: Logger = {
    var logger = Logger(label: "test")
    logger.logLevel = .critical
    return logger
  }()

  func redisQueue(port: Int, prefix: String) throws -> RedisJobQueue {
    RedisJobQueue(
      configuration: .init(
        client: .init(url: RedisURL(port: port), commandTimeout: .seconds(2), retryWindow: .seconds(30)),
        retryPolicy: RetryPolicy(baseDelay: 0.05, maxDelay: 0.2), keyPrefix: prefix))
  }

  /// 1,000 jobs, 10 workers, through a proxy adding 2 ms each way; with `cutEvery`, every
  /// connection is cut at random moments while the jobs run.
  func runStress(cutEvery: ClosedRange<Int>?) async throws {
    let proxy = try await LatencyProxy(targetPort: RedisTestServer.shared.port, delay: .milliseconds(2))
    let prefix = "stress-\(UUID().uuidString.prefix(8))"
    let redis = try redisQueue(port: proxy.port, prefix: prefix)
    let queue = CompletionCountingQueue(redis)
    let ledger = RunLedger()
    var registry = JobRegistry()
    registry.register("count", parameters: TestParameters.self) { _, context in
      ledger.record(context.id)
      return ["id": context.id.rawValue]
    }
    let pool = WorkerPool(
      queue: queue, registry: registry,
      configuration: .init(
        concurrency: 10, workerID: "stress", leaseDuration: .seconds(2), pollInterval: .milliseconds(20), prefetch: 10),
      logger: logger)
    let reaper = LeaseReaper(queue: queue, interval: .milliseconds(200), logger: logger)
    let reaped = RunLedger()
    var ids: [JobID] = []
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask { try await pool.run() }
      group.addTask {
        while !Task.isCancelled {
          try? await Task.sleep(for: .milliseconds(200))
          if let result = try? await reaper.runOnce() { for id in result.requeued { reaped.record(id) } }
        }
      }
      if let cutEvery {
        group.addTask {
          while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(Int.random(in: cutEvery)))
            proxy.cutAll()
          }
        }
      }
      for chunk in stride(from: 0, to: 1000, by: 100) {
        ids += try await queue.enqueue(batch: (chunk..<chunk + 100).map { _ in JobRequest(kind: "count") }).map(\.id)
      }
      let deadline = ContinuousClock.now.advanced(by: .seconds(120))
      while ContinuousClock.now < deadline {
        if (try? await redis.stats().total(.succeeded)) == 1000 { break }
        try await Task.sleep(for: .milliseconds(50))
      }
      pool.shutdown()
      group.cancelAll()
      _ = try? await group.waitForAll()
    }
    await proxy.close()
    redis.close()
    // Checked over a direct connection: the proxy is gone.
    let direct = try redisQueue(port: RedisTestServer.shared.port, prefix: prefix)
    #expect(Set(ids).count == 1000)
    let stats = try await direct.stats()
    #expect(stats.total(.succeeded) == 1000, "\(stats)")
    #expect(stats.total(.dead) == 0)
    // Every job ran, and exactly one completion was recorded for each.
    let runs = ledger.all
    #expect(ids.allSatisfy { (runs[$0] ?? 0) >= 1 })
    let completions = queue.completions
    #expect(completions.count == 1000)
    #expect(completions.values.allSatisfy { $0 == 1 })
    // A job runs again only after its lease lapsed and the reaper gave it back: without cuts
    // that takes a process starved for the lease's 2 s (once, under the full suite on two
    // cores), so the check is that no job ran twice without it.
    if cutEvery == nil {
      let lapsed = reaped.all
      let twice = runs.filter { $0.value > 1 }.map(\.key)
      #expect(twice.allSatisfy { lapsed[$0] != nil }, "ran more than once without a lapsed lease: \(twice)")
    }
    try await direct.deleteAllKeys()
    direct.close()
  }

  /// Issue #24: the `available` set serves listings and counts; no job's enqueue or claim writes
  /// a second set of available jobs, and one that an earlier build left is deleted by a purge.
  @Test func availableJobsAreKeptInOneSet() async throws {
    let prefix = "available-\(UUID().uuidString.prefix(8))"
    let queue = try redisQueue(port: RedisTestServer.shared.port, prefix: prefix)
    defer { queue.close() }
    let stale = "\(prefix):{default}:state:available"
    _ = try await queue.client.send("ZADD", .string(stale), "0", "left-by-an-earlier-build")
    let ids = try await queue.enqueue(batch: (0..<5).map { JobRequest(kind: "noop", priority: $0) }).map(\.id)
    _ = try await queue.claim(queues: ["default"], worker: "w", leaseDuration: .seconds(30), limit: 2)
    #expect(try await queue.client.send("ZCARD", .string(stale)).int == 1)
    #expect(try await queue.stats().count(queue: "default", state: .available) == 3)
    #expect(Set(try await queue.jobStates().filter { $0.state == .available }.map(\.id)) == Set(ids.dropLast(2)))
    _ = try await queue.purgeFinished(before: Date(), deadBefore: nil)
    #expect(try await queue.client.send("EXISTS", .string(stale)).int == 0)
    try await queue.deleteAllKeys()
  }

  /// Issue #14 point 3: the queue registry is written by every enqueue; after it is lost (`DEL`,
  /// a failover) a new job is still claimable and visible.
  @Test func aLostQueueRegistryStrandsNoNewJob() async throws {
    let prefix = "registry-\(UUID().uuidString.prefix(8))"
    let queue = try redisQueue(port: RedisTestServer.shared.port, prefix: prefix)
    defer { queue.close() }
    _ = try await queue.enqueue(JobRequest(kind: "noop", queue: "gpu"))
    _ = try await queue.client.send("DEL", .string("\(prefix):queues"))
    let id: JobID = try await queue.enqueue(JobRequest(kind: "noop", queue: "gpu"))
    #expect(try await queue.get(id)?.state == .available)
    #expect(try await queue.stats().count(queue: "gpu", state: .available) == 2)
    let other = try redisQueue(port: RedisTestServer.shared.port, prefix: prefix)
    defer { other.close() }
    let claimed = try await other.claim(queues: [], worker: "w", leaseDuration: .seconds(30), limit: 10)
    #expect(Set(claimed.map(\.job.queue)) == ["gpu"] && claimed.count == 2)
  }

  /// Issue #14 point 2: a reply lost after Redis acted makes the client send the call again; the
  /// second call must answer as the first would have. Jobs have one attempt each, so a claim
  /// that leased a second batch would strand the first one running and then dead.
  @Test func callsRetriedAfterALostReplyAnswerAsTheFirstWould() async throws {
    let proxy = try await LatencyProxy(targetPort: RedisTestServer.shared.port, delay: .zero)
    defer { Task { await proxy.close() } }
    let prefix = "lost-\(UUID().uuidString.prefix(8))"
    let queue = try redisQueue(port: proxy.port, prefix: prefix)
    defer { queue.close() }
    // Every script once without losses, so that Redis has them cached and no lost reply is a
    // NOSCRIPT answer.
    let warm: JobID = try await queue.enqueue(JobRequest(kind: "noop", queue: "warm", maxAttempts: 1))
    let warmLeases = try await queue.claim(queues: ["warm"], worker: "w", leaseDuration: .seconds(30), limit: 2)
    _ = try await queue.release(batch: warmLeases)
    let warmLease = try await queue.claim(queues: ["warm"], worker: "w", leaseDuration: .seconds(30), limit: 1)
    _ = try await queue.fail(warmLease[0], error: "warm", retryable: false)
    _ = try await queue.retry(warm)

    proxy.loseNextReplies(1)
    let created = try await queue.enqueue(batch: (0..<10).map { _ in JobRequest(kind: "noop", maxAttempts: 1) })
    #expect(created.allSatisfy { !$0.existing }, "a retried enqueue reported its own jobs as earlier ones (200, not 201)")
    proxy.loseNextReplies(1)
    let leases = try await queue.claim(queues: ["default"], worker: "w", leaseDuration: .seconds(30), limit: 4)
    #expect(leases.map(\.id) == Array(created.prefix(4).map(\.id)))
    var stats = try await queue.stats()
    #expect(stats.count(queue: "default", state: .running) == 4, "a retried claim leased a second batch: \(stats)")
    #expect(stats.count(queue: "default", state: .available) == 6)
    proxy.loseNextReplies(1)
    #expect(try await queue.fail(leases[0], error: "boom", retryable: false) == .dead)
    // A release retried blind finds its lease gone (reported as lost), but gives the attempt back once.
    proxy.loseNextReplies(1)
    _ = try await queue.release(batch: [leases[1]])
    proxy.loseNextReplies(1)
    #expect(try await queue.retry(leases[0].id).state == .available)
    stats = try await queue.stats()
    #expect(stats.count(queue: "default", state: .running) == 2)
    #expect(stats.count(queue: "default", state: .available) == 8)
    #expect(stats.count(queue: "default", state: .dead) == 0)
    #expect(try await queue.get(leases[1].id)?.attempts == 0, "the released job's attempt was given back twice or not at all")
    try await queue.deleteAllKeys()
  }

  /// Issue #14 point 4: leases, delays and reaping follow Redis's clock, so two hosts whose
  /// clocks are 50 s apart neither requeue each other's live leases nor run delayed jobs early.
  @Test func hostsWithSkewedClocksAgreeOnLeasesAndDelays() async throws {
    let prefix = "skew-\(UUID().uuidString.prefix(8))"
    func host(_ offset: TimeInterval) -> (RedisJobQueue, TestClock) {
      let clock = TestClock(Date().addingTimeInterval(offset))
      let queue = RedisJobQueue(
        configuration: .init(client: .init(url: RedisURL(port: RedisTestServer.shared.port)), clock: clock, keyPrefix: prefix))
      return (queue, clock)
    }
    let (ahead, aheadClock) = host(25)
    let (behind, behindClock) = host(-25)
    defer {
      ahead.close()
      behind.close()
    }
    let early: JobID = try await behind.enqueue(JobRequest(kind: "noop", queue: "a", runAt: behindClock.now().addingTimeInterval(1)))
    let late: JobID = try await ahead.enqueue(JobRequest(kind: "noop", queue: "b", runAt: aheadClock.now().addingTimeInterval(1)))
    #expect(try await ahead.claim(queues: ["a"], worker: "ahead", leaseDuration: .seconds(10), limit: 1).isEmpty, "ran a delayed job early")
    try await Task.sleep(for: .milliseconds(1200))
    #expect(try await behind.claim(queues: ["b"], worker: "behind", leaseDuration: .seconds(10), limit: 1).map(\.id) == [late])
    let leased = try await behind.claim(queues: ["a"], worker: "behind", leaseDuration: .seconds(10), limit: 1)
    #expect(leased.map(\.id) == [early])
    let reaped = try await ahead.reapExpiredLeases()
    #expect(reaped.requeued.isEmpty && reaped.dead.isEmpty, "requeued a live lease: \(reaped)")
    #expect(try await behind.heartbeat(leased[0], leaseDuration: .seconds(10)) != .lost)
    try await ahead.deleteAllKeys()
  }

  /// Issue #14 point 8: listings and reads of a state set past 1,048,576 ids (the most one reply
  /// may hold) page through it instead of failing.
  @Test func listingsPageThroughSetsPastAMillionIds() async throws {
    let prefix = "big-\(UUID().uuidString.prefix(8))"
    // A server of its own: filling a million ids holds Redis for seconds, which would stall every
    // other test on the shared one; and a client that waits for it.
    let server = try RedisTestServer()
    defer { server.stop() }
    let queue = RedisJobQueue(
      configuration: .init(
        client: .init(url: RedisURL(port: server.port), commandTimeout: .seconds(60), retryWindow: .seconds(30)), keyPrefix: prefix))
    defer { queue.close() }
    _ = try await queue.enqueue(batch: [JobRequest(kind: "noop"), JobRequest(kind: "noop")])
    let leases = try await queue.claim(queues: ["default"], worker: "w", leaseDuration: .seconds(600), limit: 2)
    #expect(leases.count == 2)
    // 1,048,577 more running ids (no job behind them) that sort below the real ones.
    let fill = "for i = 1, 1048577 do redis.call('ZADD', KEYS[1], i, string.format('00000000-%08d', i)) end return 1"
    _ = try await queue.client.send("EVAL", .string(fill), 1, .string("\(prefix):{default}:running"))
    let page = try await queue.list(JobFilter(state: .running, limit: 1))
    #expect(page.jobs.map(\.id) == [leases[1].id] && page.nextCursor == leases[1].id.rawValue)
    #expect(try await queue.jobStates().count == 1_048_579)
    try await queue.deleteAllKeys()
  }

  /// A claim for named kinds pops the first jobs, as an unfiltered one does, when every kind the
  /// queue counts available jobs of is one it takes; a job the counts miss (from before they
  /// existed) that it does not take goes back, keeping its place, and the jobs behind it are
  /// leased instead.
  @Test func aKindFilteredClaimPassesOverJobsTheKindCountsMiss() async throws {
    let prefix = "fastkinds-\(UUID().uuidString.prefix(8))"
    let queue = try redisQueue(port: RedisTestServer.shared.port, prefix: prefix)
    defer { queue.close() }
    let first: JobID = try await queue.enqueue(JobRequest(kind: "legacy", priority: 5))
    let wanted: [JobID] = try await queue.enqueue(batch: (0..<3).map { _ in JobRequest(kind: "echo") }).map(\.id)
    let filter = try JobKindFilter(["echo"])
    // While the counts know of the legacy job the claim scans past it.
    var leases = try await queue.claim(ClaimRequest(kinds: filter, worker: "w", leaseDuration: .seconds(30), limit: 1))
    #expect(leases.map(\.id) == [wanted[0]])
    // Counts lost (as before the hash existed): the fast path pops the legacy job first.
    _ = try await queue.client.send("HDEL", .string("\(prefix):{default}:kinds"), "legacy")
    leases = try await queue.claim(ClaimRequest(kinds: filter, worker: "w", leaseDuration: .seconds(30), limit: 5))
    #expect(leases.map(\.id) == Array(wanted[1...]))
    #expect(leases.allSatisfy { $0.job.attempts == 1 && $0.job.kind == "echo" })
    #expect(try await queue.get(first)?.state == .available)
    let rest = try await queue.claim(queues: [], worker: "w", leaseDuration: .seconds(30), limit: 5)
    #expect(rest.map(\.id) == [first])
    try await queue.deleteAllKeys()
  }

  /// A kind filter that matches nothing in the newest 1,000 ids of a state still leads on: the
  /// page comes back short, with a cursor to the rest.
  @Test func aKindFilteredListingLeadsPastNonMatchingJobs() async throws {
    let prefix = "kinds-\(UUID().uuidString.prefix(8))"
    let queue = try redisQueue(port: RedisTestServer.shared.port, prefix: prefix)
    defer { queue.close() }
    let wanted: JobID = try await queue.enqueue(JobRequest(kind: "rare"))
    _ = try await queue.enqueue(batch: (0..<1200).map { _ in JobRequest(kind: "common") })
    var filter = JobFilter(state: .available, kind: "rare", limit: 10)
    var found: [JobID] = []
    var pages = 0
    repeat {
      let page = try await queue.list(filter)
      found += page.jobs.map(\.id)
      filter.cursor = page.nextCursor
      pages += 1
    } while filter.cursor != nil && pages < 10
    #expect(found == [wanted])
    try await queue.deleteAllKeys()
  }

  @Test func stressThroughTwoMillisecondsOfLatency() async throws {
    try await runStress(cutEvery: nil)
  }

  @Test func stressWithConnectionsCutAtRandom() async throws {
    try await runStress(cutEvery: 100...400)
  }
}
