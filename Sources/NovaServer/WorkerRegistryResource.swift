import Foundation
import NovaCore
import NovaQueue

/// A worker as `GET /v1/workers` and `nova workers list --json` show it: who and where it is,
/// what it takes, what its host offers and what of it is in use, the jobs it runs, and whether
/// it is live or has lapsed (stopped announcing itself).
public struct WorkerRegistryResource: Codable, Sendable, Equatable {
  public var id: String
  /// `live`, or `lapsed` once its announcements stopped (it died or lost the store).
  public var state: String
  public var host: String?
  public var version: String?
  /// Empty: every queue.
  public var queues: [String]
  /// Names and `*` patterns; empty: every kind.
  public var kinds: [String]
  public var labels: [String: String]
  /// What its host offers jobs, when it says (workers over HTTP send only what is free).
  public var capacity: HostCapacity?
  /// What is free of it now.
  public var free: HostCapacity?
  public var in_use: Usage?
  public var running: [String]
  public var started_at: String?
  public var last_seen: String?
  public var expires_at: String

  /// What a worker's jobs hold: GPUs by index, CPUs and memory.
  public struct Usage: Codable, Sendable, Equatable {
    public var gpus: [Int]
    public var cpus: Int
    public var memory_mib: Int
  }

  public init(_ presence: WorkerPresence, now: Date) {
    id = presence.worker
    state = presence.lapsed(at: now) ? "lapsed" : "live"
    host = presence.host
    version = presence.version
    queues = presence.queues
    kinds = presence.kinds
    labels = (presence.capacity ?? presence.free)?.labels ?? [:]
    capacity = presence.capacity
    free = presence.free
    if let capacity = presence.capacity, let free = presence.free {
      let freeGPUs = Set(free.gpus.map(\.index))
      in_use = Usage(
        gpus: capacity.gpus.map(\.index).filter { !freeGPUs.contains($0) }, cpus: max(0, capacity.cpus - free.cpus),
        memory_mib: max(0, capacity.memory_mib - free.memory_mib))
    }
    running = presence.running ?? []
    started_at = presence.startedAt.map(JobResource.timestamp)
    last_seen = presence.lastSeen.map(JobResource.timestamp)
    expires_at = JobResource.timestamp(presence.expiresAt)
  }
}

/// The answer of `GET /v1/workers`.
public struct WorkerRegistryList: Codable, Sendable, Equatable {
  public var workers: [WorkerRegistryResource]

  public init(workers: [WorkerRegistryResource]) {
    self.workers = workers
  }
}
