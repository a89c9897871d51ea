import Foundation
import NovaCore

/// What a worker asks for when it claims jobs.
public struct ClaimRequest: Sendable, Equatable {
  /// Queues to take from; empty means every queue.
  public var queues: [String]
  /// Kinds the worker runs; jobs of other kinds stay available for workers that run them.
  public var kinds: JobKindFilter
  /// The lease owner's name (host/pid or a token's worker name).
  public var worker: String
  public var leaseDuration: Duration
  /// At most this many jobs.
  public var limit: Int
  /// The first `starting` are marked started at once (their handlers run now); the rest wait in
  /// the worker's buffer until `JobQueue.start`.
  public var starting: Int
  /// What the worker has free now. Jobs that ask for something (resources or constraints) are
  /// claimed only when they fit it, each placed on its own devices; without it, only jobs that
  /// ask for nothing are claimed.
  public var capacity: HostCapacity?
  /// All the worker's host offers (free or not): a job that asks for something and has waited
  /// `reserveAfter` while smaller ones were placed gets a reservation on this worker if it
  /// would fit here once its jobs end. The worker then places no other job that asks for
  /// something until it fits (jobs that ask for nothing still run), so it cannot starve.
  public var totalCapacity: HostCapacity?
  public var reserveAfter: Duration?

  public init(
    queues: [String] = [], kinds: JobKindFilter = .all, worker: String, leaseDuration: Duration, limit: Int,
    starting: Int? = nil, capacity: HostCapacity? = nil, totalCapacity: HostCapacity? = nil, reserveAfter: Duration? = nil
  ) {
    self.queues = queues
    self.kinds = kinds
    self.worker = worker
    self.leaseDuration = leaseDuration
    self.limit = limit
    self.starting = starting ?? limit
    self.capacity = capacity
    self.totalCapacity = totalCapacity
    self.reserveAfter = reserveAfter
  }
}

/// The job kinds a worker runs: exact names, or patterns where `*` stands for any run of
/// characters (`train.*`). Empty means every kind.
public struct JobKindFilter: Sendable, Equatable, CustomStringConvertible {
  /// The names and patterns, as given.
  public let patterns: [String]

  /// Every kind.
  public static let all = JobKindFilter(checked: [])

  /// Checks each pattern: the characters of a kind name, and `*`.
  public init(_ patterns: [String]) throws(NovaError) {
    for pattern in patterns {
      try JobRequest.validateName(pattern.replacingOccurrences(of: "*", with: "a"), field: "kinds")
    }
    self.init(checked: patterns)
  }

  /// The kinds a registry handles (names it has already checked).
  public init(exactly names: [String]) {
    self.init(checked: names)
  }

  private init(checked patterns: [String]) {
    self.patterns = patterns
  }

  /// True for every kind.
  public var isAll: Bool { patterns.isEmpty }

  /// Whether a job of `kind` may be claimed.
  public func matches(_ kind: String) -> Bool {
    isAll || patterns.contains { Self.glob($0[...], kind[...]) }
  }

  public var description: String { isAll ? "*" : patterns.joined(separator: ",") }

  private static func glob(_ pattern: Substring, _ text: Substring) -> Bool {
    guard let star = pattern.firstIndex(of: "*") else { return pattern == text }
    let head = pattern[..<star]
    guard text.hasPrefix(head) else { return false }
    let rest = pattern[pattern.index(after: star)...]
    var remaining = text.dropFirst(head.count)
    while true {
      if glob(rest, remaining) { return true }
      if remaining.isEmpty { return false }
      remaining = remaining.dropFirst()
    }
  }
}

/// The walk of a claim over jobs in priority order: which of them fit what the worker has free,
/// and where each goes. Both backends place with it, so a rule means the same on either.
public struct PlacementWalk: Sendable {
  /// What is still free; nil when the worker declared nothing.
  public private(set) var free: HostCapacity?
  /// All the host has, for reservations (nil: none are made).
  public let total: HostCapacity?
  /// True once this walk reserved the host for a starving job: it places nothing else that
  /// asks for something.
  public private(set) var draining = false
  /// Stored requirements read once per walk: a queue's jobs mostly share a few shapes.
  private var decoded: [String: JobRequirements] = [:]
  /// Shapes that did not fit: what is free only shrinks during a walk, so they never will.
  private var unfit: Set<String> = []

  public init(free: HostCapacity?, total: HostCapacity? = nil) {
    self.free = free
    self.total = total
  }

  /// What becomes of one job.
  public enum Admission: Sendable, Equatable {
    /// Taken, placed here (nil: it asks for nothing).
    case take(JobPlacement?)
    /// Passed over.
    case pass
    /// Passed over now, and the host is reserved for it.
    case reserve
  }

  /// `admit(_:starving:reservable:)` for requirements as stored (JSON; nil for none), each
  /// distinct text decoded once, and a shape that did not fit passed over at once.
  public mutating func admit(stored text: String?, starving: Bool = false, reservable: Bool = true) throws(NovaError) -> Admission {
    guard let text else { return admit(nil, starving: starving, reservable: reservable) }
    if draining || (unfit.contains(text) && !(starving && reservable && total != nil)) { return .pass }
    let requirements: JobRequirements
    if let known = decoded[text] {
      requirements = known
    } else {
      requirements = try JobRequirements.decoded(text)
      decoded[text] = requirements
    }
    let admission = admit(requirements, starving: starving, reservable: reservable)
    if admission == .pass { unfit.insert(text) }
    return admission
  }

  /// Whether a job with `requirements` is taken, and where; `starving` when it has waited past
  /// the reservation wait, `reservable` when no other live worker holds a reservation for it.
  public mutating func admit(_ requirements: JobRequirements?, starving: Bool = false, reservable: Bool = true) -> Admission {
    guard let requirements else { return .take(nil) }
    guard let capacity = free, !draining else { return .pass }
    if let placement = capacity.placement(for: requirements) {
      free = capacity.subtracting(placement)
      return .take(placement)
    }
    if starving, reservable, let total, total.placement(for: requirements) != nil {
      draining = true
      return .reserve
    }
    return .pass
  }
}
