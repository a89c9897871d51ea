import Foundation
import GRDB
import NovaCore
import NovaDatabase
import NovaQueue
import NovaRedis
import NovaRedisQueue
import NovaTestSupport
import Testing

/// Issue #22 point 5, per key: jobs with one concurrency key (a tenant, a model, an API account)
/// share their kind's and queue's per-key limits on every backend, and every way a job leaves
/// running gives its key's slot back.
@Suite("Concurrency keys", .timeLimit(.minutes(2)))
struct ConcurrencyKeyTests {
  let clock = TestClock()
  let lease: Duration = .seconds(60)

  func job(_ key: String?, limits: KeyLimits? = nil, queue: String = "llm") -> JobRequest {
    var request = JobRequest(kind: "call", queue: queue)
    request.concurrencyKey = key
    request.keyLimits = limits
    return request
  }

  func claim(_ queue: any JobQueue, limit: Int = 10, capacity: HostCapacity? = nil) async throws -> [JobLease] {
    try await queue.claim(ClaimRequest(queues: ["llm"], worker: "w", leaseDuration: lease, limit: limit, capacity: capacity))
  }

  func keys(_ leases: [JobLease]) -> [String] { leases.map { $0.job.concurrencyKey ?? "-" }.sorted() }

  @Test(arguments: QueueBackend.all)
  func aKindsMaxRunningPerKeyHoldsPerKey(backend: QueueBackend) async throws {
    let queue = try backend.make(clock, RetryPolicy())
    let one = KeyLimits(maxRunning: 1)
    _ = try await queue.enqueue(batch: [
      job("a", limits: one), job("a", limits: one), job("a", limits: one), job("b", limits: one), job("b", limits: one), job(nil),
    ])
    let first = try await claim(queue)
    #expect(keys(first) == ["-", "a", "b"], "one per key, and the job without a key")
    #expect(try await claim(queue).isEmpty)
    #expect(try await queue.get(first[0].id)?.concurrencyKey == first[0].job.concurrencyKey)
    // Each way out of running gives the slot back: success, failure, release, cancellation.
    let a = try #require(first.first { $0.job.concurrencyKey == "a" })
    try await queue.complete(a, result: nil)
    let a2 = try await claim(queue)
    #expect(keys(a2) == ["a"])
    _ = try await queue.fail(a2[0], error: "rate limited", retryable: true, retryIn: .seconds(3600))
    let a3 = try await claim(queue)
    #expect(keys(a3) == ["a"])
    #expect(try await queue.release(batch: a3) == 1)
    let a4 = try await claim(queue)
    #expect(keys(a4) == ["a"])
    _ = try await queue.cancel(a4[0].id)
    let b = try #require(first.first { $0.job.concurrencyKey == "b" })
    clock.advance(by: 120)
    _ = try await queue.reapExpiredLeases()
    // Reaped: b's first job and the job without a key are back (a's last job waits for its retry).
    let after = try await claim(queue)
    #expect(keys(after) == ["-", "b"], "\(keys(after))")
    #expect(after.contains { $0.id == b.id })
    // The failed job's retry comes due: a's slot is free again (the cancel gave it back).
    clock.advance(by: 3600)
    #expect(keys(try await claim(queue)) == ["a"])
  }

  @Test(arguments: QueueBackend.all)
  func aQueuesPerKeyLimitsHoldForJobsWhoseKindSetsNone(backend: QueueBackend) async throws {
    let queue = try backend.make(clock, RetryPolicy())
    try await queue.setControls(QueueControls(maxRunningPerKey: 2), queue: "llm")
    #expect(try await queue.controls()["llm"]?.maxRunningPerKey == 2)
    _ = try await queue.enqueue(batch: (0..<5).map { _ in job("tenant-1") } + (0..<5).map { _ in job("tenant-2") })
    #expect(keys(try await claim(queue)) == ["tenant-1", "tenant-1", "tenant-2", "tenant-2"])
    // The tighter of the kind's and the queue's holds.
    _ = try await queue.enqueue(batch: (0..<3).map { _ in job("tenant-3", limits: KeyLimits(maxRunning: 1)) })
    #expect(keys(try await claim(queue)) == ["tenant-3"])
  }

  @Test(arguments: QueueBackend.all)
  func aRatePerKeyPacesEachKey(backend: QueueBackend) async throws {
    let queue = try backend.make(clock, RetryPolicy())
    let paced = KeyLimits(ratePerSecond: 2)
    _ = try await queue.enqueue(batch: (0..<10).map { _ in job("model-x", limits: paced) } + (0..<10).map { _ in job("model-y", limits: paced) })
    #expect(keys(try await claim(queue, limit: 100)) == ["model-x", "model-x", "model-y", "model-y"])
    #expect(try await claim(queue, limit: 100).isEmpty)
    clock.advance(by: 0.5)
    #expect(keys(try await claim(queue, limit: 100)) == ["model-x", "model-y"])
    clock.advance(by: 30)
    #expect(try await claim(queue, limit: 100).count == 4, "a key's bucket holds one second's worth")
  }

  @Test(arguments: QueueBackend.all)
  func keysAndPlacementHoldTogether(backend: QueueBackend) async throws {
    let queue = try backend.make(clock, RetryPolicy())
    var gpuJob = job("a", limits: KeyLimits(maxRunning: 1))
    gpuJob.resources = JobResources(gpus: 1)
    _ = try await queue.enqueue(batch: [gpuJob, gpuJob, job("b", limits: KeyLimits(maxRunning: 1))])
    let host = HostCapacity(
      host: "gpu-a", gpus: (0..<2).map { HostCapacity.GPU(index: $0, uuid: "GPU-\($0)", model: "H100", memory_mib: 80_000) }, cpus: 8,
      memory_mib: 32_000)
    let taken = try await claim(queue, capacity: host)
    #expect(keys(taken) == ["a", "b"], "two GPUs free, but key a runs one at a time")
    #expect(taken.first { $0.job.concurrencyKey == "a" }?.job.placement?.gpus.count == 1)
    // Without capacity only the job that asks for nothing could go, and its key is full.
    #expect(try await claim(queue).isEmpty)
  }

  /// A placing claim passes over a job whose key is full: the job behind it that fits takes the
  /// free GPU (it did not on Redis, whose walk picked the full key's job and then leased nothing).
  @Test(arguments: QueueBackend.all)
  func aJobWhoseKeyIsFullDoesNotHideTheJobsBehindIt(backend: QueueBackend) async throws {
    let queue = try backend.make(clock, RetryPolicy())
    var keyed = job("a", limits: KeyLimits(maxRunning: 1))
    keyed.resources = JobResources(gpus: 1)
    var plain = job(nil)
    plain.resources = JobResources(gpus: 1)
    _ = try await queue.enqueue(batch: [keyed, keyed, plain])
    let gpus = (0..<2).map { HostCapacity.GPU(index: $0, uuid: "GPU-\($0)", model: "H100", memory_mib: 80_000) }
    let first = try await claim(queue, limit: 1, capacity: HostCapacity(host: "h", gpus: gpus, cpus: 8, memory_mib: 32_000))
    #expect(keys(first) == ["a"])
    let second = try await claim(queue, limit: 1, capacity: HostCapacity(host: "h", gpus: [gpus[1]], cpus: 8, memory_mib: 32_000))
    #expect(keys(second) == ["-"], "the second job of key a waits; the one behind it runs")
    #expect(second.first?.job.placement?.gpus.map(\.index) == [1])
  }

  /// A key's rate bucket is deleted by the purge once it is full again (as good as absent), and
  /// not before: a fleet whose keys are tenants or requests does not keep one per key for ever.
  @Test(arguments: QueueBackend.all)
  func rateBucketsArePurgedOnceFullAndNotBefore(backend: QueueBackend) async throws {
    let queue = try backend.make(clock, RetryPolicy())
    _ = try await queue.enqueue(
      batch: (0..<3).map { _ in job("slow", limits: KeyLimits(ratePerSecond: 0.5)) } + [job("fast", limits: KeyLimits(ratePerSecond: 100))])
    #expect(keys(try await claim(queue)) == ["fast", "slow"])
    #expect(try await bucketCount(queue) == 2)
    clock.advance(by: 1)
    _ = try await queue.purgeFinished(before: clock.now())
    #expect(try await bucketCount(queue) == 1, "fast's bucket is full again; slow's needs two seconds")
    #expect(try await claim(queue).isEmpty, "slow's bucket still paces it")
    clock.advance(by: 1.5)
    #expect(keys(try await claim(queue)) == ["slow"])
    clock.advance(by: 3)
    _ = try await queue.purgeFinished(before: clock.now())
    #expect(try await bucketCount(queue) == 0)
    #expect(keys(try await claim(queue)) == ["slow"], "an absent bucket is a full one")
  }

  /// The per-key rate buckets the store keeps for queue `llm`.
  func bucketCount(_ queue: any JobQueue) async throws -> Int {
    if let sqlite = queue as? SQLiteJobQueue {
      return try await sqlite.database.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM nova_key_buckets") ?? 0 }
    }
    let redis = try #require(queue as? RedisJobQueue)
    let raw = try RedisClient(url: RedisTestServer.shared.url)
    defer { raw.close() }
    let fields = try await raw.send("HLEN", .string("\(redis.configuration.keyPrefix):{llm}:keybuckets")).int ?? -1
    return Int(fields) / 3
  }
}
