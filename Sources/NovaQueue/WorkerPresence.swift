import Foundation
import NovaCore

/// A running worker's announcement of what it takes, renewed while it runs: what `nova jobs
/// stats` checks waiting jobs against, to show those no live worker would ever claim.
public struct WorkerPresence: Sendable, Equatable, Codable {
  /// The lease owner's name.
  public var worker: String
  /// Queues it claims from; empty means every queue.
  public var queues: [String]
  /// Kind names and patterns it runs; empty means every kind.
  public var kinds: [String]
  /// When the announcement lapses unless renewed (a worker that died drops out by itself).
  public var expiresAt: Date
  /// The host it runs on.
  public var host: String?
  /// The Nova version it runs (or the client's, for workers over HTTP).
  public var version: String?
  /// When it started, and when it last announced itself.
  public var startedAt: Date?
  public var lastSeen: Date?
  /// What its host offers jobs (GPUs, CPUs, memory, labels), when it says.
  public var capacity: HostCapacity?
  /// What of it is free now: the capacity less what its jobs hold (for workers over HTTP, what
  /// they sent with their last claim).
  public var free: HostCapacity?
  /// The jobs it runs (at most `maxRunningListed`).
  public var running: [String]?

  /// The most running jobs one announcement lists.
  public static let maxRunningListed = 1000
  /// How long a lapsed worker is still listed (as lapsed) before it is forgotten.
  public static let retention: TimeInterval = 3600

  public init(
    worker: String, queues: [String], kinds: [String], expiresAt: Date, host: String? = nil, version: String? = nil,
    startedAt: Date? = nil, lastSeen: Date? = nil, capacity: HostCapacity? = nil, free: HostCapacity? = nil, running: [String]? = nil
  ) {
    self.worker = worker
    self.queues = queues
    self.kinds = kinds
    self.expiresAt = expiresAt
    self.host = host
    self.version = version
    self.startedAt = startedAt
    self.lastSeen = lastSeen
    self.capacity = capacity
    self.free = free
    self.running = running.map { Array($0.prefix(Self.maxRunningListed)) }
  }

  enum CodingKeys: String, CodingKey {
    case worker, queues, kinds, host, version, capacity, free, running
    case expiresAt = "expires_at"
    case startedAt = "started_at"
    case lastSeen = "last_seen"
  }

  /// Whether it has stopped announcing itself (it died, or stopped without withdrawing).
  public func lapsed(at now: Date) -> Bool { expiresAt <= now }

  /// Whether this worker would claim a job of `kind` in `queue`.
  public func takes(queue: String, kind: String) -> Bool {
    (queues.isEmpty || queues.contains(queue)) && JobKindFilter(exactly: kinds).matches(kind)
  }

  /// The stored form (JSON, dates in milliseconds).
  package func encoded() throws -> Data {
    let encoder = JSONEncoder()
    encoder.dateEncodingStrategy = .millisecondsSince1970
    encoder.outputFormatting = [.sortedKeys]
    return try encoder.encode(self)
  }

  /// The stored form read back; nil for bytes that are not one.
  package static func decoded(_ data: Data) -> WorkerPresence? {
    let decoder = JSONDecoder()
    decoder.dateDecodingStrategy = .millisecondsSince1970
    return try? decoder.decode(WorkerPresence.self, from: data)
  }
}

extension QueueStats {
  /// Available jobs that no live worker would claim, `[queue][kind]`: a kind nothing runs (a
  /// typo, a worker not deployed), which waits instead of being dead-lettered.
  public var unclaimable: [String: [String: Int]] {
    var out: [String: [String: Int]] = [:]
    for (queue, kinds) in availableByKind {
      for (kind, count) in kinds where count > 0 && !workers.contains(where: { $0.takes(queue: queue, kind: kind) }) {
        out[queue, default: [:]][kind] = count
      }
    }
    return out
  }
}
