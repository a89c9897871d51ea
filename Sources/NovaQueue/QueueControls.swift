import Foundation
import NovaCore

/// How a queue hands out its jobs, fleet-wide: every worker on the store obeys it, since the
/// store's claim applies it in the same step that leases the jobs.
public struct QueueControls: Sendable, Equatable, Codable {
  /// A paused queue accepts jobs and hands none out.
  public var paused: Bool
  /// At most this many of its jobs run at once (nil: no limit).
  public var maxRunning: Int?
  /// At most this many of its jobs start per second, on average, in bursts of up to one
  /// second's worth (nil: no limit).
  public var ratePerSecond: Double?
  /// Its share of workers that take from several busy queues (1...1000; 3 against 1 gets three
  /// jobs for every one).
  public var weight: Int
  /// At most this many of its jobs with one concurrency key run at once (nil: the kind's).
  public var maxRunningPerKey: Int?
  /// At most this many of its jobs with one concurrency key start per second (nil: the kind's).
  public var ratePerKey: Double?

  /// Its per-key limits.
  public var keyLimits: KeyLimits { KeyLimits(maxRunning: maxRunningPerKey, ratePerSecond: ratePerKey) }

  public static let weights = 1...1000
  public static let maxRunningRange = 0...1_000_000
  /// From one a day to a million a second.
  public static let rateRange = (1.0 / 86_400)...1_000_000.0

  public init(
    paused: Bool = false, maxRunning: Int? = nil, ratePerSecond: Double? = nil, weight: Int = 1, maxRunningPerKey: Int? = nil,
    ratePerKey: Double? = nil
  ) {
    self.paused = paused
    self.maxRunning = maxRunning
    self.ratePerSecond = ratePerSecond
    self.weight = weight
    self.maxRunningPerKey = maxRunningPerKey
    self.ratePerKey = ratePerKey
  }

  /// True when it changes nothing: the claim takes its fast path.
  public var isDefault: Bool {
    !paused && maxRunning == nil && ratePerSecond == nil && weight == 1 && maxRunningPerKey == nil && ratePerKey == nil
  }

  /// Checks each setting; errors name it as the CLI and the API do (`max_running`).
  public func validate() throws(NovaError) {
    if let maxRunning, !Self.maxRunningRange.contains(maxRunning) {
      throw .invalidInput(field: "max_running", message: "\(maxRunning) is out of range 0...1000000")
    }
    if let ratePerSecond, !(ratePerSecond.isFinite && Self.rateRange.contains(ratePerSecond)) {
      throw .invalidInput(field: "rate", message: "\(ratePerSecond) per second is out of range (1/d to 1000000/s)")
    }
    guard Self.weights.contains(weight) else { throw .invalidInput(field: "weight", message: "\(weight) is out of range 1...1000") }
    if let maxRunningPerKey, !Self.maxRunningRange.contains(maxRunningPerKey) {
      throw .invalidInput(field: "max_running_per_key", message: "\(maxRunningPerKey) is out of range 0...1000000")
    }
    if let ratePerKey, !(ratePerKey.isFinite && Self.rateRange.contains(ratePerKey)) {
      throw .invalidInput(field: "rate_per_key", message: "\(ratePerKey) per second is out of range (1/d to 1000000/s)")
    }
  }

  /// `10/s`, `600/m`, `2/h` or a plain number per second, as a rate per second.
  public static func parseRate(_ text: String, field: String = "--rate") throws(NovaError) -> Double {
    let parts = text.split(separator: "/", maxSplits: 1)
    let per: Double
    switch parts.count == 2 ? String(parts[1]) : "s" {
    case "s", "sec", "second": per = 1
    case "m", "min", "minute": per = 60
    case "h", "hour": per = 3600
    case "d", "day": per = 86_400
    default: throw .invalidInput(field: field, message: "'\(text)' is not a rate such as 10/s, 600/m, 2/h or 1/d")
    }
    guard let count = Double(parts.first ?? ""), count.isFinite, count > 0 else {
      throw .invalidInput(field: field, message: "'\(text)' is not a rate such as 10/s, 600/m, 2/h or 1/d")
    }
    return count / per
  }

  enum CodingKeys: String, CodingKey {
    case paused, weight
    case maxRunning = "max_running"
    case ratePerSecond = "rate_per_second"
    case maxRunningPerKey = "max_running_per_key"
    case ratePerKey = "rate_per_key"
  }
}

/// A queue's controls and the state the claim keeps for them.
public struct QueueControlState: Sendable, Equatable {
  public var controls: QueueControls
  /// Jobs that may still start now under the rate (a token bucket of one second's worth).
  public var tokens: Double
  /// When `tokens` was last brought up to date, in ms.
  public var refilledAt: Int64
  /// Jobs handed out since weights were set: with the weight, where a shared claim goes next.
  public var served: Int64

  public init(controls: QueueControls, tokens: Double = 0, refilledAt: Int64 = 0, served: Int64 = 0) {
    self.controls = controls
    self.tokens = tokens
    self.refilledAt = refilledAt
    self.served = served
  }

  /// The bucket's size: one second's worth, and at least one job.
  public var burst: Double { max(1, controls.ratePerSecond ?? 1) }

  /// The tokens at `now` (ms), refilled at the rate since the last update.
  public func tokens(at now: Int64) -> Double {
    guard let rate = controls.ratePerSecond else { return .infinity }
    if refilledAt == 0 { return burst }
    return min(burst, tokens + Double(max(0, now - refilledAt)) / 1000 * rate)
  }

  /// How many jobs the queue may hand out now, with `running` of them running.
  public func allowance(running: Int, at now: Int64) -> Int {
    if controls.paused { return 0 }
    var allowed = Int.max
    if let maxRunning = controls.maxRunning { allowed = max(0, maxRunning - running) }
    let tokens = tokens(at: now)
    if tokens.isFinite { allowed = min(allowed, Int(tokens.rounded(.down))) }
    return allowed
  }
}

/// Shares `limit` jobs between queues by weight (stride scheduling): one job at a time to the
/// queue whose next job ends soonest on its own clock, `(served + 1) / weight`, within what each
/// may take and has. A queue that sat idle is brought up to the others (less one job's worth),
/// so it does not take everything until it has caught up.
public enum WeightedShare {
  public static func split(limit: Int, queues: [(name: String, weight: Int, served: Int64, available: Int)]) -> [String: Int] {
    let busy = queues.filter { $0.available > 0 && $0.weight > 0 }
    // Busy queues' clocks move together (each gets jobs in proportion to its weight); one far
    // behind was idle, and starts one job's worth behind the front.
    guard let front = busy.map({ Double($0.served) / Double($0.weight) }).max() else { return [:] }
    let floor = front - 1
    // The pass of each queue: where its clock stands.
    var pass = Dictionary(uniqueKeysWithValues: busy.map { ($0.name, max(Double($0.served) / Double($0.weight), floor)) })
    var taken: [String: Int] = [:]
    for _ in 0..<max(0, limit) {
      let open = busy.filter { taken[$0.name, default: 0] < $0.available }
      guard
        let next = open.min(by: {
          let left = (pass[$0.name] ?? 0) + 1 / Double($0.weight)
          let right = (pass[$1.name] ?? 0) + 1 / Double($1.weight)
          return left != right ? left < right : $0.name < $1.name
        })
      else { break }
      taken[next.name, default: 0] += 1
      pass[next.name, default: 0] += 1 / Double(next.weight)
    }
    return taken
  }
}

/// A queue as `nova queues list` and `GET /v1/queues` show it.
public struct QueueSummary: Sendable, Equatable {
  public var name: String
  public var controls: QueueControls
  public var counts: [JobState: Int]

  public init(name: String, controls: QueueControls, counts: [JobState: Int]) {
    self.name = name
    self.controls = controls
    self.counts = counts
  }
}
