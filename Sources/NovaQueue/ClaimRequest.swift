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

  public init(
    queues: [String] = [], kinds: JobKindFilter = .all, worker: String, leaseDuration: Duration, limit: Int,
    starting: Int? = nil
  ) {
    self.queues = queues
    self.kinds = kinds
    self.worker = worker
    self.leaseDuration = leaseDuration
    self.limit = limit
    self.starting = starting ?? limit
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
