import Foundation
import Logging
import NovaCore
import NovaQueue
import NovaServer
import NovaTestSupport
import Testing

/// Issue #22 point 6: waiting jobs are counted by reason (`nova_queue_waiting_jobs`, KPI
/// `queue.waiting`), and a series that clears goes back to zero.
@Suite("Waiting jobs metrics")
struct WaitingMetricsTests {
  func line(_ queue: String, _ reason: String, _ value: Int) -> String {
    #"nova_queue_waiting_jobs{queue="\#(queue)",reason="\#(reason)"} \#(value).0"#
  }

  @Test func waitingJobsAreCountedByReason() async throws {
    TestMetrics.bootstrap()
    let path = try TemporaryDirectory.make().appendingPathComponent("queue.sqlite").path
    let queue = try SQLiteJobQueue(configuration: .init(path: path))
    let tag = UUID().uuidString.prefix(6).lowercased()
    let (gpu, paused, open) = ("gpu-\(tag)", "paused-\(tag)", "open-\(tag)")
    let capacity = HostCapacity(
      host: "gpu-8", gpus: (0..<8).map { HostCapacity.GPU(index: $0, uuid: "GPU-\($0)", model: "NVIDIA H100", memory_mib: 80_000) }, cpus: 32,
      memory_mib: 256_000)
    try await queue.announce(
      WorkerPresence(worker: "w", queues: [], kinds: [], expiresAt: Date().addingTimeInterval(60), host: "gpu-8", capacity: capacity, free: capacity))
    let huge = JobRequest(kind: "train", queue: gpu, requirements: JobRequirements(resources: JobResources(gpus: 16)))
    let fits = JobRequest(kind: "train", queue: gpu, requirements: JobRequirements(resources: JobResources(gpus: 2)))
    _ = try await queue.enqueue(batch: [huge, huge, fits])
    try await queue.setControls(QueueControls(paused: true), queue: paused)
    _ = try await queue.enqueue(batch: [JobRequest(kind: "noop", queue: paused), JobRequest(kind: "noop", queue: paused)])
    _ = try await queue.enqueue(JobRequest(kind: "noop", queue: open))
    // One of three jobs of a key limited to one runs: the other two wait on the key.
    let keyed = "keyed-\(tag)"
    var call = JobRequest(kind: "call", queue: keyed)
    call.concurrencyKey = "tenant-a"
    call.keyLimits = KeyLimits(maxRunning: 1)
    _ = try await queue.enqueue(batch: [call, call, call])
    #expect(try await queue.claim(queues: [keyed], worker: "w", leaseDuration: .seconds(60), limit: 10).count == 1)
    let collector = QueueMetricsCollector(queue: queue, pool: nil, logger: Logger(label: "test"))
    try await collector.collect()
    var lines = Set(String(decoding: NovaMetrics.render(), as: UTF8.self).split(separator: "\n").map(String.init))
    #expect(lines.contains(line(gpu, "unschedulable", 2)))
    #expect(lines.contains(line(gpu, "slot", 1)))
    #expect(lines.contains(line(paused, "queue_paused", 2)))
    #expect(lines.contains(line(open, "slot", 1)))
    #expect(lines.contains(line(keyed, "key_limit", 2)))
    // Resumed and drained: the series go back to zero.
    try await queue.setControls(QueueControls(), queue: paused)
    _ = try await queue.claim(queues: [paused, gpu], worker: "w", leaseDuration: .seconds(60), limit: 10)
    try await collector.collect()
    lines = Set(String(decoding: NovaMetrics.render(), as: UTF8.self).split(separator: "\n").map(String.init))
    #expect(lines.contains(line(paused, "queue_paused", 0)))
    #expect(lines.contains(line(gpu, "unschedulable", 2)), "still nobody can hold them")
  }
}
