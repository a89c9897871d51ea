import Foundation
import NovaCore

/// Why a job that could run is not running: shown on the job (`waiting_for`) and counted per
/// queue and reason as a KPI (`queue.waiting`).
public struct WaitingFor: Codable, Sendable, Equatable {
  /// One of `Reason`'s values.
  public var reason: String
  /// The same in words, naming the limit, host or resource.
  public var detail: String

  public init(_ reason: Reason, _ detail: String) {
    self.reason = reason.rawValue
    self.detail = detail
  }

  /// What a job waits for, most specific first.
  public enum Reason: String, Sendable, CaseIterable {
    /// Its delay or its retry's backoff.
    case scheduled
    /// Its queue is paused.
    case queuePaused = "queue_paused"
    /// Its queue runs as many as its max-running allows.
    case queueLimit = "queue_limit"
    /// Its concurrency key runs as many as allowed.
    case keyLimit = "key_limit"
    /// No live worker takes its queue and kind.
    case noWorker = "no_worker"
    /// No registered worker could ever hold it (too many GPUs, a model or label no host has).
    case unschedulable
    /// Hosts that could hold it are busy: it waits for their GPUs (or CPUs, memory) to free.
    case resources
    /// Its queue's rate (or its key's) spaces its jobs out.
    case rate
    /// A worker slot: every worker that takes it is busy.
    case slot
  }
}

/// What the store says that explains a wait (read once, for one job or many).
public struct WaitFacts: Sendable {
  public var controls: [String: QueueControls]
  /// Running jobs per queue.
  public var running: [String: Int]
  /// Live workers.
  public var workers: [WorkerPresence]
  /// Running jobs per queue and concurrency key (`[queue, key]`), where known.
  public var runningPerKey: [[String]: Int]

  public init(
    controls: [String: QueueControls], running: [String: Int], workers: [WorkerPresence], runningPerKey: [[String]: Int] = [:]
  ) {
    self.controls = controls
    self.running = running
    self.workers = workers
    self.runningPerKey = runningPerKey
  }

  /// Why `job` waits, or nil when it does not (it runs, or is finished).
  public func explain(_ job: Job, now: Date = Date()) -> WaitingFor? {
    switch job.state {
    case .scheduled, .failed:
      return WaitingFor(.scheduled, "runs no earlier than \(job.runAt.formatted(.iso8601))")
    case .available: break
    default: return nil
    }
    let controls = controls[job.queue] ?? QueueControls()
    if controls.paused { return WaitingFor(.queuePaused, "queue \(job.queue) is paused (nova queues resume \(job.queue))") }
    if let limit = controls.maxRunning, running[job.queue, default: 0] >= limit {
      return WaitingFor(.queueLimit, "queue \(job.queue) runs \(running[job.queue, default: 0]) of its max \(limit)")
    }
    if let key = job.concurrencyKey {
      let limits = (job.keyLimits ?? KeyLimits()).tightened(by: controls.keyLimits)
      if let limit = limits.maxRunning, let count = runningPerKey[[job.queue, key]], count >= limit {
        return WaitingFor(.keyLimit, "key \(key) runs \(count) of its max \(limit) in queue \(job.queue)")
      }
    }
    let takers = workers.filter { $0.takes(queue: job.queue, kind: job.kind) }
    if takers.isEmpty {
      return WaitingFor(.noWorker, "no live worker takes queue \(job.queue) and kind \(job.kind)")
    }
    if let requirements = job.requirements {
      let hosts = takers.compactMap { $0.capacity }
      var fitsSomewhere = false
      var closest: (host: String, why: String, score: Int)?
      for capacity in hosts {
        switch capacity.place(requirements.resources, requirements.constraints) {
        case .fits: fitsSomewhere = true
        case .unfit(let why):
          // Closest: meets the constraints on host and labels, and has the most GPUs.
          let admits = requirements.constraints.admitsHost(capacity.host, labels: capacity.labels)
          let score = (admits ? 1_000 : 0) + capacity.gpus.count
          if closest == nil || score > closest!.score {
            closest = (capacity.host, why.replacingOccurrences(of: " free on ", with: " on "), score)
          }
        }
      }
      if !fitsSomewhere {
        guard let closest else {
          return WaitingFor(.unschedulable, "no live worker that takes it says what its host has (workers must send their capacity)")
        }
        return WaitingFor(.unschedulable, "no registered worker could ever hold it; closest host \(closest.host): \(closest.why)")
      }
      let free = takers.compactMap { $0.free }
      if !free.contains(where: { $0.placement(for: requirements) != nil }) {
        let busy = hosts.filter { $0.placement(for: requirements) != nil }.map(\.host)
        return WaitingFor(.resources, "hosts that can hold it are busy: \(Array(Set(busy)).sorted().joined(separator: ", "))")
      }
    }
    if controls.ratePerSecond != nil || controls.ratePerKey != nil || job.keyLimits?.ratePerSecond != nil {
      let rate = controls.ratePerSecond.map { "queue \(job.queue) starts at most \($0)/s" } ?? "its key's rate spaces its jobs out"
      return WaitingFor(.rate, rate)
    }
    return WaitingFor(.slot, "a free slot on a worker that takes queue \(job.queue) and kind \(job.kind)")
  }
}

extension WaitFacts {
  /// How many running jobs of one queue a key count looks at.
  public static let keyCountLimit = 1000

  /// Counts the running jobs of `queueName` per concurrency key (its first `keyCountLimit`
  /// running jobs) into `runningPerKey`, so that a wait on a key's limit is explained.
  public mutating func countKeys(of queueName: String, in queue: any JobQueue) async throws {
    for job in try await queue.list(JobFilter(state: .running, queue: queueName, limit: Self.keyCountLimit)).jobs {
      if let key = job.concurrencyKey { runningPerKey[[queueName, key], default: 0] += 1 }
    }
  }
}
