import Foundation
import NovaCore
import NovaQueue
import NovaTestSupport
import Testing

/// Issue #22 point 3 on every backend: workers announce what they are and hold; a worker whose
/// announcements stop lapses (and is no longer counted as taking work), is listed as lapsed for
/// an hour, then forgotten.
@Suite("Worker registry", .timeLimit(.minutes(2)))
struct WorkerRegistryTests {
  let clock = TestClock()

  func presence(_ name: String, lapsesIn seconds: TimeInterval, running: [String] = []) -> WorkerPresence {
    let capacity = HostCapacity(
      host: "gpu-a", gpus: [HostCapacity.GPU(index: 0, uuid: "GPU-0", model: "NVIDIA H100", memory_mib: 81_559)], cpus: 16,
      memory_mib: 64_000, labels: ["zone": "b"])
    var free = capacity
    free.gpus = []
    free.cpus = 12
    return WorkerPresence(
      worker: name, queues: ["gpu"], kinds: ["train.*"], expiresAt: clock.now().addingTimeInterval(seconds), host: "gpu-a",
      version: NovaVersion.string, startedAt: clock.now(), lastSeen: clock.now(), capacity: capacity, free: free, running: running)
  }

  @Test(arguments: QueueBackend.all)
  func workersAreListedLiveThenLapsedThenForgotten(backend: QueueBackend) async throws {
    let queue = try backend.make(clock, RetryPolicy())
    let announced = presence("w-1", lapsesIn: 30, running: ["job-a"])
    try await queue.announce(announced)
    try await queue.announce(presence("w-2", lapsesIn: 300))
    // As stored: times to the millisecond.
    let stored = try [announced, presence("w-2", lapsesIn: 300)].map { try #require(WorkerPresence.decoded(try $0.encoded())) }
    #expect(try await queue.workers() == stored)
    #expect(try await queue.stats().workers.map(\.worker) == ["w-1", "w-2"])
    // w-1 stops announcing itself: it lapses, is no longer counted as taking work, but is listed.
    clock.advance(by: 60)
    #expect(try await queue.stats().workers.map(\.worker) == ["w-2"])
    let listed = try await queue.workers()
    #expect(listed.map(\.worker) == ["w-1", "w-2"])
    #expect(listed[0].lapsed(at: clock.now()) && !listed[1].lapsed(at: clock.now()))
    // An hour after it lapsed it is forgotten (w-2 lapsed later: it is still listed).
    clock.advance(by: WorkerPresence.retention)
    try await queue.announce(presence("w-3", lapsesIn: 30))
    #expect(try await queue.workers().map(\.worker) == ["w-2", "w-3"])
    // A worker that stops withdraws itself at once.
    try await queue.withdraw(worker: "w-3")
    #expect(try await queue.workers().map(\.worker) == ["w-2"])
  }

  @Test func anAnnouncementListsAtMostSoManyRunningJobs() {
    let many = (0..<(WorkerPresence.maxRunningListed + 5)).map { "job-\($0)" }
    #expect(presence("w", lapsesIn: 30, running: many).running?.count == WorkerPresence.maxRunningListed)
    // One written before the registry (no host, capacity or dates) still reads.
    let old = Data(#"{"worker":"w","queues":[],"kinds":[],"expires_at":1700000000000}"#.utf8)
    let read = WorkerPresence.decoded(old)
    #expect(read?.worker == "w" && read?.capacity == nil && read?.host == nil)
  }
}
