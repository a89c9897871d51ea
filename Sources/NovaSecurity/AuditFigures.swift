import Foundation
import GRDB
import NovaCore
import NovaDatabase
import NovaQueue
import Synchronization

/// The audit coverage last computed (by the checkpointer, over every job), shared with the pages
/// that show it: a page reads this instead of checking a million jobs per request.
public final class AuditCoverageCache: Sendable {
  private let latest = Mutex<(coverage: AuditCoverage, at: ContinuousClock.Instant)?>(nil)

  public init() {}

  /// Keeps `coverage`, computed now.
  public func store(_ coverage: AuditCoverage) {
    latest.withLock { $0 = (coverage, ContinuousClock.now) }
  }

  /// The coverage computed within `age`, if any.
  public func coverage(within age: Duration) -> AuditCoverage? {
    latest.withLock { value in
      guard let value, ContinuousClock.now - value.at <= age else { return nil }
      return value.coverage
    }
  }
}

/// Policy decisions of the last 24 hours by source and outcome, kept per minute and brought up
/// to date from the entries appended since the last call: one request reads only what is new.
public actor DecisionTally {
  let log: AuditLog
  /// The last entry counted.
  private var cursor: Int64?
  /// Counts per minute (ms since 1970 / 60,000).
  private var minutes: [Int64: [AuditActivity.DecisionKey: Int]] = [:]
  static let window: Int64 = 86_400_000

  public init(log: AuditLog) { self.log = log }

  /// Decisions recorded from `now` less 24 hours to `now`, by source and outcome.
  public func counts(now: Int64) async throws -> [AuditActivity.DecisionKey: Int] {
    let since = now - Self.window
    let start = try await log.tallyStart(after: cursor, since: since)
    let (rows, last) = try await log.database.read { db -> ([(Int64, String?, Bool)], Int64) in
      let last = try AuditJournal.lastSequence(db)
      guard last >= start else { return ([], last) }
      let rows = try Row.fetchAll(
        db,
        sql: """
          SELECT time, json_extract(payload, '$.source'), json_extract(payload, '$.allowed') FROM nova_audit
          WHERE seq BETWEEN ? AND ? AND event = 'policy.decided'
          """, arguments: [start, last]
      ).map { row -> (Int64, String?, Bool) in
        let allowed: Int64? = row[2]
        return (row[0], row[1], (allowed ?? 0) != 0)
      }
      return (rows, last)
    }
    for (time, source, allowed) in rows {
      minutes[time / 60_000, default: [:]][AuditActivity.DecisionKey(source: source ?? "unknown", allowed: allowed), default: 0] += 1
    }
    cursor = max(cursor ?? 0, last)
    let firstMinute = since / 60_000
    minutes = minutes.filter { $0.key >= firstMinute }
    var total: [AuditActivity.DecisionKey: Int] = [:]
    for (minute, counts) in minutes where minute * 60_000 <= now {
      for (key, count) in counts { total[key, default: 0] += count }
    }
    return total
  }
}

/// Jobs finished and failed per minute over the last hour, counted from the job transitions in
/// the audit log and brought up to date from the entries appended since the last call.
public actor JobEventTally {
  let log: AuditLog
  private var cursor: Int64?
  /// Per minute (ms since 1970 / 60,000): jobs completed, and jobs that failed or died.
  private var minutes: [Int64: (completed: Int, failed: Int)] = [:]
  static let window: Int64 = 3_600_000

  public init(log: AuditLog) { self.log = log }

  /// The last 60 whole minutes before `now` and the current one, oldest first: (completed, failed).
  public func perMinute(now: Int64) async throws -> (completed: [Int], failed: [Int]) {
    let since = now - Self.window
    let start = try await log.tallyStart(after: cursor, since: since)
    let (rows, last) = try await log.database.read { db -> ([(Int64, String)], Int64) in
      let last = try AuditJournal.lastSequence(db)
      guard last >= start else { return ([], last) }
      let rows = try Row.fetchAll(
        db,
        sql: """
          SELECT time, event FROM nova_audit
          WHERE seq BETWEEN ? AND ? AND event IN ('job.completed', 'job.failed', 'job.dead')
          """, arguments: [start, last]
      ).map { ($0[0] as Int64, $0[1] as String) }
      return (rows, last)
    }
    for (time, event) in rows {
      var counts = minutes[time / 60_000] ?? (0, 0)
      if event == "job.completed" { counts.completed += 1 } else { counts.failed += 1 }
      minutes[time / 60_000] = counts
    }
    cursor = max(cursor ?? 0, last)
    let current = now / 60_000
    minutes = minutes.filter { $0.key > current - 61 }
    let range = (current - 59)...current
    return (range.map { minutes[$0]?.completed ?? 0 }, range.map { minutes[$0]?.failed ?? 0 })
  }
}

extension AuditLog {
  /// Where an incremental tally reads from: after its cursor, or (the first time) the first
  /// entry written at or after `since` (one past the end when there is none).
  func tallyStart(after cursor: Int64?, since: Int64) async throws -> Int64 {
    if let cursor { return cursor + 1 }
    let size = try await size()
    return try await firstEntry(atOrAfter: since) ?? size + 1
  }
}
