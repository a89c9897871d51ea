import Foundation
import NovaCore
import NovaQueue
import Testing

/// Issue #22 point 6: every wait explained, each reason produced.
@Suite("Waiting for")
struct WaitingForTests {
  static let now = Date(timeIntervalSince1970: 1_800_000_000)

  static func host(_ name: String, gpus: Int, model: String = "NVIDIA H100", labels: [String: String] = [:]) -> HostCapacity {
    HostCapacity(
      host: name, gpus: (0..<gpus).map { HostCapacity.GPU(index: $0, uuid: "GPU-\(name)-\($0)", model: model, memory_mib: 80_000) },
      cpus: 32, memory_mib: 256_000, labels: labels)
  }

  static func worker(_ name: String, capacity: HostCapacity?, free: HostCapacity? = nil, queues: [String] = [], kinds: [String] = [])
    -> WorkerPresence
  {
    WorkerPresence(
      worker: name, queues: queues, kinds: kinds, expiresAt: now.addingTimeInterval(30), host: capacity?.host, capacity: capacity,
      free: free ?? capacity)
  }

  static func job(
    _ state: JobState = .available, queue: String = "gpu", kind: String = "train", requirements: JobRequirements? = nil, key: String? = nil,
    keyLimits: KeyLimits? = nil
  ) -> Job {
    Job(
      id: JobID.generate(), queue: queue, kind: kind, payload: Data("{}".utf8), priority: 0, state: state, runAt: now.addingTimeInterval(60),
      attempts: 0, maxAttempts: 3, idempotencyKey: nil, createdAt: now, updatedAt: now, requirements: requirements, concurrencyKey: key,
      keyLimits: keyLimits)
  }

  static func gpus(_ count: Int, model: String? = nil) -> JobRequirements {
    JobRequirements(resources: JobResources(gpus: count), constraints: JobConstraints(gpu_model: model))
  }

  let eight = host("gpu-8", gpus: 8)
  let two = host("gpu-2", gpus: 2)

  func facts(
    controls: [String: QueueControls] = [:], running: [String: Int] = [:], workers: [WorkerPresence]? = nil,
    perKey: [[String]: Int] = [:]
  ) -> WaitFacts {
    WaitFacts(
      controls: controls, running: running, workers: workers ?? [Self.worker("w8", capacity: eight), Self.worker("w2", capacity: two)],
      runningPerKey: perKey)
  }

  @Test func eachReasonIsProducedAndSaysWhy() throws {
    #expect(facts().explain(Self.job(.scheduled))?.reason == "scheduled")
    #expect(facts().explain(Self.job(.failed))?.reason == "scheduled")
    #expect(facts().explain(Self.job(.running)) == nil)
    #expect(facts().explain(Self.job(.succeeded)) == nil)

    let paused = facts(controls: ["gpu": QueueControls(paused: true)]).explain(Self.job())
    #expect(paused == WaitingFor(.queuePaused, "queue gpu is paused (nova queues resume gpu)"))
    let full = facts(controls: ["gpu": QueueControls(maxRunning: 3)], running: ["gpu": 3]).explain(Self.job())
    #expect(full == WaitingFor(.queueLimit, "queue gpu runs 3 of its max 3"))
    #expect(facts(controls: ["gpu": QueueControls(maxRunning: 3)], running: ["gpu": 2]).explain(Self.job())?.reason == "slot")

    let keyFull = facts(perKey: [["gpu", "tenant-a"]: 2]).explain(Self.job(key: "tenant-a", keyLimits: KeyLimits(maxRunning: 2)))
    #expect(keyFull == WaitingFor(.keyLimit, "key tenant-a runs 2 of its max 2 in queue gpu"))
    // The queue's per-key limit holds for a kind that sets none.
    let queueKey = facts(controls: ["gpu": QueueControls(maxRunningPerKey: 1)], perKey: [["gpu", "t"]: 1]).explain(Self.job(key: "t"))
    #expect(queueKey?.reason == "key_limit")

    let nobody = facts(workers: [Self.worker("cpu-only", capacity: nil, queues: ["cpu"])]).explain(Self.job())
    #expect(nobody == WaitingFor(.noWorker, "no live worker takes queue gpu and kind train"))
    let wrongKind = facts(workers: [Self.worker("w", capacity: eight, kinds: ["render.*"])]).explain(Self.job())
    #expect(wrongKind?.reason == "no_worker")

    let huge = try #require(facts().explain(Self.job(requirements: Self.gpus(16))))
    #expect(huge.reason == "unschedulable")
    #expect(huge.detail == "no registered worker could ever hold it; closest host gpu-8: needs 16 GPU; 8 on gpu-8", "\(huge.detail)")
    let model = try #require(facts().explain(Self.job(requirements: Self.gpus(1, model: "*B200*"))))
    #expect(model.reason == "unschedulable" && model.detail.contains("GPU *B200*"), "\(model.detail)")
    let blind = facts(workers: [Self.worker("http", capacity: nil)]).explain(Self.job(requirements: Self.gpus(1)))
    #expect(blind?.reason == "unschedulable" && blind?.detail.contains("send their capacity") == true)

    // It fits gpu-8, whose GPUs are all held now; gpu-2 could never hold 4.
    var busy = eight
    busy.gpus = []
    let waits = facts(workers: [Self.worker("w8", capacity: eight, free: busy), Self.worker("w2", capacity: two)])
      .explain(Self.job(requirements: Self.gpus(4)))
    #expect(waits == WaitingFor(.resources, "hosts that can hold it are busy: gpu-8"))
    #expect(facts().explain(Self.job(requirements: Self.gpus(4)))?.reason == "slot", "free now: the next claim takes it")

    let paced = facts(controls: ["gpu": QueueControls(ratePerSecond: 2)]).explain(Self.job())
    #expect(paced == WaitingFor(.rate, "queue gpu starts at most 2.0/s"))
    #expect(facts().explain(Self.job()) == WaitingFor(.slot, "a free slot on a worker that takes queue gpu and kind train"))
  }

  @Test func everyReasonHasAName() {
    #expect(
      WaitingFor.Reason.allCases.map(\.rawValue) == [
        "scheduled", "queue_paused", "queue_limit", "key_limit", "no_worker", "unschedulable", "resources", "rate", "slot",
      ])
  }
}
