import Foundation
import NovaCore
import NovaQueue
import NovaTestSupport
import Testing

/// Issue #22 points 1 and 4 on every backend: requests stored with jobs, and claims that place
/// a job only where it fits, on devices of its own, never breaking a constraint.
@Suite("Placement conformance", .timeLimit(.minutes(3)))
struct PlacementConformanceTests {
  let clock = TestClock()
  let lease: Duration = .seconds(30)

  static func gpu(_ index: Int, model: String = "NVIDIA H100 80GB HBM3", memory: Int = 81_559) -> HostCapacity.GPU {
    HostCapacity.GPU(index: index, uuid: "GPU-\(index)-uuid", model: model, memory_mib: memory)
  }

  static func host(_ name: String = "gpu-a", gpus: Int = 2, cpus: Int = 16, memory: Int = 64_000, labels: [String: String] = [:])
    -> HostCapacity
  {
    HostCapacity(host: name, gpus: (0..<gpus).map { gpu($0) }, cpus: cpus, memory_mib: memory, labels: labels)
  }

  static func asks(gpus: Int = 0, gpuMemory: Int = 0, cpus: Int = 0, memory: Int = 0, constraints: JobConstraints = JobConstraints())
    -> JobRequirements?
  {
    JobRequirements.make(
      resources: JobResources(gpus: gpus, gpu_memory_mib: gpuMemory, cpus: cpus, memory_mib: memory), constraints: constraints)
  }

  func job(_ name: String, _ requirements: JobRequirements?, queue: String = "default", priority: Int = 0) -> JobRequest {
    JobRequest(kind: name, queue: queue, priority: priority, requirements: requirements)
  }

  func claim(_ queue: any JobQueue, _ capacity: HostCapacity?, queues: [String] = ["default"], limit: Int = 10, kinds: [String] = [])
    async throws -> [JobLease]
  {
    try await queue.claim(
      ClaimRequest(
        queues: queues, kinds: try JobKindFilter(kinds), worker: "w-\(capacity?.host ?? "none")", leaseDuration: lease, limit: limit,
        capacity: capacity))
  }

  @Test(arguments: QueueBackend.all)
  func requirementsAreStoredWithTheJobAndShownOnIt(backend: QueueBackend) async throws {
    let queue = try backend.make(clock, RetryPolicy())
    let wanted = try #require(
      Self.asks(gpus: 2, gpuMemory: 40_000, cpus: 4, memory: 16_000, constraints: JobConstraints(gpu_model: "*H100*", labels: ["zone": "b"])))
    let one: JobID = try await queue.enqueue(job("train", wanted))
    let batch = try await queue.enqueue(batch: [job("plain", nil), job("train", wanted)])
    #expect(try await queue.get(one)?.requirements == wanted)
    #expect(try await queue.get(batch[0].id)?.requirements == nil)
    #expect(try await queue.get(batch[1].id)?.requirements == wanted)
    #expect(try await queue.list(JobFilter(kind: "train")).jobs.allSatisfy { $0.requirements == wanted })
    #expect(JobRequirements.make(resources: JobResources(), constraints: JobConstraints()) == nil, "asking for nothing is stored as nothing")
  }

  @Test(arguments: QueueBackend.all)
  func aWorkerThatDeclaresNothingGetsOnlyJobsThatAskForNothing(backend: QueueBackend) async throws {
    let queue = try backend.make(clock, RetryPolicy())
    let first: JobID = try await queue.enqueue(job("plain", nil))
    let gpu: JobID = try await queue.enqueue(job("train", Self.asks(gpus: 1)))
    let labelled: JobID = try await queue.enqueue(job("train", Self.asks(constraints: JobConstraints(labels: ["zone": "b"]))))
    let last: JobID = try await queue.enqueue(job("plain", nil))
    let plain = try await claim(queue, nil)
    #expect(plain.map(\.id) == [first, last])
    #expect(plain.allSatisfy { $0.job.placement == nil })
    #expect(try await queue.get(gpu)?.state == .available)
    #expect(try await queue.get(labelled)?.state == .available)
    // A worker with a GPU and the label takes both, each placed.
    let placed = try await claim(queue, Self.host(gpus: 1, labels: ["zone": "b"]))
    #expect(Set(placed.map(\.id)) == [gpu, labelled])
    let onGPU = try #require(placed.first { $0.id == gpu })
    #expect(onGPU.job.placement == JobPlacement(host: "gpu-a", gpus: [.init(index: 0, uuid: "GPU-0-uuid")], cpus: 0, memory_mib: 0))
    #expect(onGPU.job.placement?.visibleDevices == "0")
    #expect(try await queue.get(gpu)?.placement == onGPU.job.placement, "the placement is kept on the job")
    #expect(placed.first { $0.id == labelled }?.job.placement?.gpus == [])
  }

  @Test(arguments: QueueBackend.all)
  func devicesAreExclusiveAndJobsThatFitAreTakenInPriorityOrder(backend: QueueBackend) async throws {
    let queue = try backend.make(clock, RetryPolicy())
    let big: JobID = try await queue.enqueue(job("train", Self.asks(gpus: 2, cpus: 8), priority: 5))
    let small1: JobID = try await queue.enqueue(job("infer", Self.asks(gpus: 1)))
    let small2: JobID = try await queue.enqueue(job("infer", Self.asks(gpus: 1)))
    let plain: JobID = try await queue.enqueue(job("plain", nil))
    let host = Self.host(gpus: 2, cpus: 16)
    let first = try await claim(queue, host)
    // The 2-GPU job takes both GPUs; the 1-GPU jobs find none free; the plain job fits anywhere.
    #expect(Set(first.map(\.id)) == [big, plain])
    let bigLease = try #require(first.first { $0.id == big })
    #expect(bigLease.job.placement?.gpus.map(\.index) == [0, 1])
    #expect(bigLease.job.placement?.cpus == 8)
    #expect(try await queue.get(small1)?.state == .available)
    // With the big job's devices still held (the worker declares only what is free), nothing fits.
    #expect(try await claim(queue, host.subtracting(try #require(bigLease.job.placement))).isEmpty)
    try await queue.complete(bigLease, result: nil)
    let second = try await claim(queue, host)
    #expect(second.map(\.id) == [small1, small2])
    #expect(second.compactMap { $0.job.placement?.gpus.first?.index }.sorted() == [0, 1], "one GPU each, never the same")
    // A limit of one takes only the first that fits.
    _ = try await queue.enqueue(job("infer", Self.asks(gpus: 1)))
    #expect(try await claim(queue, host, limit: 1).count == 1)
  }

  @Test(arguments: QueueBackend.all)
  func aConstraintIsNeverBroken(backend: QueueBackend) async throws {
    let queue = try backend.make(clock, RetryPolicy())
    let a100: JobID = try await queue.enqueue(job("train", Self.asks(gpus: 1, constraints: JobConstraints(gpu_model: "*A100*"))))
    let spark: JobID = try await queue.enqueue(job("train", Self.asks(constraints: JobConstraints(host: "spark-*"))))
    let zoneB: JobID = try await queue.enqueue(job("train", Self.asks(constraints: JobConstraints(labels: ["zone": "b"]))))
    let bigMemory: JobID = try await queue.enqueue(job("train", Self.asks(gpus: 1, gpuMemory: 100_000)))
    let tooMany: JobID = try await queue.enqueue(job("train", Self.asks(gpus: 4)))
    let hungry: JobID = try await queue.enqueue(job("train", Self.asks(memory: 128_000)))
    #expect(try await claim(queue, Self.host(gpus: 2, labels: ["zone": "a"])).isEmpty)
    for id in [a100, spark, zoneB, bigMemory, tooMany, hungry] { #expect(try await queue.get(id)?.state == .available) }
    // Each is taken where it fits.
    var spark1 = Self.host("spark-1", gpus: 1)
    spark1.gpus[0] = HostCapacity.GPU(index: 0, uuid: "GPU-gb10", model: "NVIDIA GB10", memory_mib: 128_000, unified_memory: true)
    spark1.memory_mib = 64_000
    let onSpark = try await claim(queue, spark1)
    #expect(Set(onSpark.map(\.id)) == [spark, bigMemory], "host glob and GPU memory (\(onSpark.map(\.job.kind)))")
    #expect(onSpark.first { $0.id == bigMemory }?.job.placement?.gpus.map(\.uuid) == ["GPU-gb10"])
    let zoned = try await claim(queue, Self.host("gpu-b", gpus: 0, memory: 256_000, labels: ["zone": "b"]))
    #expect(Set(zoned.map(\.id)) == [zoneB, hungry])
    var a100Host = Self.host("gpu-c", gpus: 5)
    for index in a100Host.gpus.indices { a100Host.gpus[index].model = "NVIDIA A100-SXM4-80GB" }
    let onA100 = try await claim(queue, a100Host)
    #expect(Set(onA100.map(\.id)) == [a100, tooMany], "1 + 4 of 5 GPUs")
    #expect(onA100.first { $0.id == tooMany }?.job.placement?.gpus.count == 4)
  }

  @Test(arguments: QueueBackend.all)
  func aJobThatComesBackStillWaitsForAPlace(backend: QueueBackend) async throws {
    let queue = try backend.make(clock, RetryPolicy(baseDelay: 1, maxDelay: 1, jitter: 0))
    let id: JobID = try await queue.enqueue(job("train", Self.asks(gpus: 1)))
    let host = Self.host(gpus: 1)
    // Released: back to available, still not for a worker without GPUs.
    var leases = try await claim(queue, host)
    #expect(leases.map(\.id) == [id])
    #expect(try await queue.release(batch: leases) == 1)
    #expect(try await claim(queue, nil).isEmpty)
    // Failed and retried after its backoff: the same.
    leases = try await claim(queue, host)
    #expect(leases.map(\.id) == [id])
    _ = try await queue.fail(leases[0], error: "oom", retryable: true, retryIn: .seconds(1))
    clock.advance(by: 2)
    #expect(try await claim(queue, nil).isEmpty)
    #expect(try await queue.get(id)?.state == .available)
    // Its lease lapsed (a crashed worker): the same again, and its GPU is placed anew.
    leases = try await claim(queue, host)
    #expect(leases.count == 1)
    clock.advance(by: 60)
    #expect(try await queue.reapExpiredLeases().requeued == [id])
    #expect(try await claim(queue, nil).isEmpty)
    let again = try await claim(queue, host)
    #expect(again.map(\.id) == [id])
    #expect(again.first?.job.attempts == 3)
    // Once it is gone, plain jobs are taken without a look at what they ask for.
    try await queue.complete(again[0], result: nil)
    let plain: JobID = try await queue.enqueue(job("plain", nil))
    #expect(try await claim(queue, nil).map(\.id) == [plain])
  }

  @Test(arguments: QueueBackend.all)
  func aClaimOverSeveralQueuesAndKindsPlacesOnOneHostOnce(backend: QueueBackend) async throws {
    let queue = try backend.make(clock, RetryPolicy())
    let inA: JobID = try await queue.enqueue(job("train", Self.asks(gpus: 1), queue: "a"))
    let inB: JobID = try await queue.enqueue(job("train", Self.asks(gpus: 1), queue: "b"))
    let otherKind: JobID = try await queue.enqueue(job("render", Self.asks(gpus: 1), queue: "a"))
    let taken = try await claim(queue, Self.host(gpus: 1), queues: ["a", "b"], kinds: ["train"])
    #expect(taken.count == 1, "one GPU: one job over both queues")
    #expect([inA, inB].contains(try #require(taken.first).id))
    let rest = try await claim(queue, Self.host(gpus: 4), queues: ["a", "b"], kinds: ["train"])
    #expect(rest.count == 1)
    #expect(Set((taken + rest).map(\.id)) == [inA, inB])
    #expect(try await queue.get(otherKind)?.state == .available)
    // Cancelling a waiting job that asks for something leaves plain jobs to the fast path.
    _ = try await queue.cancel(otherKind)
    let plain: JobID = try await queue.enqueue(job("render", nil, queue: "a"))
    #expect(try await claim(queue, nil, queues: ["a"]).map(\.id) == [plain])
  }

  /// Issue #22 point 4: a large job passed over by smaller ones gets a reservation after the
  /// wait, and starts once the host has drained, while small jobs keep arriving.
  @Test(arguments: QueueBackend.all)
  func aStarvingLargeJobReservesAHostAndStartsWhenItDrains(backend: QueueBackend) async throws {
    let queue = try backend.make(clock, RetryPolicy())
    let host = Self.host(gpus: 8)
    func claim(_ worker: String, _ running: [JobLease]) async throws -> [JobLease] {
      let free = running.compactMap(\.job.placement).reduce(host) { $0.subtracting($1) }
      return try await queue.claim(
        ClaimRequest(
          queues: ["default"], worker: worker, leaseDuration: lease, limit: 8, capacity: free, totalCapacity: host,
          reserveAfter: .seconds(60)))
    }
    func small() -> JobRequest { job("infer", Self.asks(gpus: 1)) }
    _ = try await queue.enqueue(batch: (0..<8).map { _ in small() })
    var running = try await claim("w", [])
    #expect(running.count == 8)
    let big: JobID = try await queue.enqueue(job("train", Self.asks(gpus: 8)))
    _ = try await queue.enqueue(batch: (0..<20).map { _ in small() })
    // Before its wait is over, a GPU that frees goes to the next small job.
    try await queue.complete(running.removeFirst(), result: nil)
    running += try await claim("w", running)
    #expect(running.count == 8 && !running.contains { $0.id == big })
    clock.advance(by: 61)
    // Past it: the host is reserved; freed GPUs stay free until all eight are.
    for _ in 0..<7 {
      try await queue.complete(running.removeFirst(), result: nil)
      #expect(try await claim("w", running).isEmpty, "a reserved host takes no small job")
    }
    // A worker on a smaller host, which could never hold the big job, is not held back.
    let smaller = Self.host("gpu-b", gpus: 4)
    let elsewhere = try await queue.claim(
      ClaimRequest(
        queues: ["default"], worker: "other", leaseDuration: lease, limit: 8, capacity: smaller, totalCapacity: smaller,
        reserveAfter: .seconds(60)))
    #expect(elsewhere.map(\.job.kind) == Array(repeating: "infer", count: 4))
    try await queue.complete(running.removeFirst(), result: nil)
    let started = try await claim("w", running)
    #expect(started.map(\.id) == [big])
    #expect(started.first?.job.placement?.gpus.count == 8)
  }
}
