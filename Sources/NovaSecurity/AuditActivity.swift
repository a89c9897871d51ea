import Foundation
import GRDB
import NovaCore
import NovaDatabase
import NovaQueue

/// What a stretch of the audit log says happened: job events per queue, how long claimed jobs
/// waited, and policy decisions by source and outcome. Read from the log, it counts the work of
/// every worker and server that shares the store, not one process's.
public struct AuditActivity: Sendable, Equatable {
  /// Job events of one queue.
  public struct QueueActivity: Sendable, Equatable {
    /// Entries per transition event.
    public var events: [JobTransition.Event: Int] = [:]
    /// For each claim, milliseconds from when the job became available until it was claimed.
    public var waitMilliseconds: [Int64] = []

    public init() {}

    /// Entries of `event`.
    public func count(_ event: JobTransition.Event) -> Int { events[event] ?? 0 }

    /// Failed attempts (retried or dead) over finished attempts; nil when none finished.
    public var failureRatio: Double? {
      let finished = count(.completed) + count(.failed) + count(.dead)
      return finished == 0 ? nil : Double(count(.failed) + count(.dead)) / Double(finished)
    }

    /// The nearest-rank `quantile` (0...1) of the waits; nil without claims.
    public func waitQuantile(_ quantile: Double) -> Int64? {
      waitQuantiles([quantile]).first ?? nil
    }

    /// Nearest-rank `quantiles` of the waits, sorting them once; nils without claims.
    public func waitQuantiles(_ quantiles: [Double]) -> [Int64?] {
      guard !waitMilliseconds.isEmpty else { return quantiles.map { _ in nil } }
      let sorted = waitMilliseconds.sorted().map(Double.init)
      return quantiles.map { Int64(Statistics.percentile(sorted: sorted, $0) ?? 0) }
    }
  }

  /// Where policy decisions come from (`PolicyDecision.source`).
  public static let decisionSources = ["rule", "cache", "opa", "fallback"]

  /// A policy decision's source (`rule`, `cache`, `opa`, `fallback`) and outcome.
  public struct DecisionKey: Hashable, Sendable {
    public var source: String
    public var allowed: Bool
    public init(source: String, allowed: Bool) {
      self.source = source
      self.allowed = allowed
    }
  }

  /// The last entry read (the cursor for the next read).
  public var through: Int64
  public var queues: [String: QueueActivity] = [:]
  public var decisions: [DecisionKey: Int] = [:]

  public init(through: Int64) { self.through = through }

  /// All policy decisions.
  public var decisionCount: Int { decisions.values.reduce(0, +) }

  /// Decisions of `source`, allowed and denied.
  public func decisions(from source: String) -> Int {
    decisions.filter { $0.key.source == source }.values.reduce(0, +)
  }

  /// Cached decisions over all decisions; nil when there were none.
  public var cacheHitRatio: Double? {
    let all = decisionCount
    return all == 0 ? nil : Double(decisions(from: "cache")) / Double(all)
  }
}

extension AuditLog {
  /// The activity in entries after `cursor` through the end of the log.
  public func activity(after cursor: Int64) async throws -> AuditActivity {
    try await database.read { db in
      let last = try AuditJournal.lastSequence(db)
      var activity = AuditActivity(through: max(cursor, last))
      guard last > cursor else { return activity }
      let statement = RawStatement(
        try db.cachedStatement(
          sql: """
            SELECT seq, time, event, subject, json_extract(payload, '$.queue'), json_extract(payload, '$.to'),
                   json_extract(payload, '$.source'), json_extract(payload, '$.allowed')
            FROM nova_audit WHERE seq > ? AND seq <= ? AND (event LIKE 'job.%' OR event = 'policy.decided')
            ORDER BY seq
            """),
        in: db)
      statement.bind(1, cursor)
      statement.bind(2, last)
      defer { statement.finish() }
      // When each job last became available, for the claims that follow in this stretch.
      var availableSince: [String: Int64] = [:]
      var claimsToLookUp: [(queue: String, job: String, seq: Int64, time: Int64)] = []
      while try statement.step() {
        let event = statement.string(2)
        if event == "policy.decided" {
          let key = AuditActivity.DecisionKey(source: statement.optionalString(6) ?? "unknown", allowed: statement.int64(7) != 0)
          activity.decisions[key, default: 0] += 1
          continue
        }
        guard let transition = JobTransition.Event(rawValue: String(event.dropFirst(4))),
          let queueName = statement.optionalString(4), let job = statement.optionalString(3)
        else { continue }
        let time = statement.int64(1)
        activity.queues[queueName, default: AuditActivity.QueueActivity()].events[transition, default: 0] += 1
        if statement.optionalString(5) == JobState.available.rawValue {
          availableSince[job] = time
        } else if transition == .claimed {
          if let since = availableSince.removeValue(forKey: job) {
            activity.queues[queueName]!.waitMilliseconds.append(max(0, time - since))
          } else {
            claimsToLookUp.append((queueName, job, statement.int64(0), time))
          }
        }
      }
      // Jobs that became available before the stretch: their last such entry, by the subject index.
      if !claimsToLookUp.isEmpty {
        let lookup = RawStatement(
          try db.cachedStatement(
            sql: """
              SELECT time FROM nova_audit WHERE subject = ? AND seq < ? AND json_extract(payload, '$.to') = 'available'
              ORDER BY seq DESC LIMIT 1
              """),
          in: db)
        for claim in claimsToLookUp {
          lookup.bind(1, claim.job)
          lookup.bind(2, claim.seq)
          if try lookup.step() {
            activity.queues[claim.queue]!.waitMilliseconds.append(max(0, claim.time - lookup.int64(0)))
          }
          lookup.finish()
        }
      }
      return activity
    }
  }
}

extension AuditLog {
  /// The first entry at or after `time` (ms), found by bisection over the sequence (entries are
  /// appended in time order; records imported from Redis may be a second late, which is fine for
  /// windows of hours); nil when every entry is older.
  public func firstEntry(atOrAfter time: Int64) async throws -> Int64? {
    try await database.read { db in
      let last = try AuditJournal.lastSequence(db)
      let statement = RawStatement(try db.cachedStatement(sql: "SELECT time FROM nova_audit WHERE seq = ?"), in: db)
      func timeOf(_ seq: Int64) throws -> Int64 {
        statement.bind(1, seq)
        defer { statement.finish() }
        return try statement.step() ? statement.int64(0) : .max
      }
      guard last > 0, try timeOf(last) >= time else { return nil }
      var low: Int64 = 1
      var high = last
      while low < high {
        let middle = low + (high - low) / 2
        if try timeOf(middle) >= time { high = middle } else { low = middle + 1 }
      }
      return low
    }
  }

  /// Policy decisions recorded from `time` (ms) on, by source and outcome.
  public func decisionCounts(since time: Int64) async throws -> [AuditActivity.DecisionKey: Int] {
    guard let first = try await firstEntry(atOrAfter: time) else { return [:] }
    return try await database.read { db in
      var counts: [AuditActivity.DecisionKey: Int] = [:]
      let rows = try Row.fetchAll(
        db,
        sql: """
          SELECT json_extract(payload, '$.source'), json_extract(payload, '$.allowed'), COUNT(*) FROM nova_audit
          WHERE seq >= ? AND event = 'policy.decided' GROUP BY 1, 2
          """, arguments: [first])
      for row in rows {
        let source: String? = row[0]
        let allowed: Int64? = row[1]
        counts[AuditActivity.DecisionKey(source: source ?? "unknown", allowed: (allowed ?? 0) != 0)] = row[2]
      }
      return counts
    }
  }
}
