import Foundation
import GRDB
import NovaCore
import NovaDatabase
import NovaQueue
import NovaSecurity
import NovaTestSupport

/// A fresh Nova database with the audit journal, a manual clock and a signing key.
struct SecurityFixture {
  let directory: URL
  let clock = TestClock(Date(timeIntervalSince1970: 1_800_000_000))
  let queue: SQLiteJobQueue
  let security: SecurityContext

  init() throws {
    directory = try TemporaryDirectory.make("nova-security")
    queue = try SQLiteJobQueue(
      configuration: .init(path: directory.appendingPathComponent("nova.sqlite").path, clock: clock, journal: AuditJournal()))
    security = try SecurityContext(database: queue.database, keyPath: directory.appendingPathComponent("key").path)
  }

  var audit: AuditLog { security.audit }

  /// Runs SQL around the audit log's guards, as someone with the file would.
  func tamper(_ sql: String) throws {
    try queue.database.pool.write { db in
      try db.execute(sql: "DROP TRIGGER IF EXISTS nova_audit_no_update; DROP TRIGGER IF EXISTS nova_audit_no_delete")
      try db.execute(sql: sql)
    }
  }

  /// Enqueues `count` echo jobs and runs each through claim and completion.
  func runJobs(_ count: Int) async throws {
    for _ in 0..<count {
      _ = try await queue.enqueue(JobRequest(kind: "echo", payload: Data("{}".utf8)))
    }
    let leases = try await queue.claim(queues: [], worker: "w1", leaseDuration: .seconds(30), limit: count)
    _ = try await queue.complete(batch: leases.map { JobCompletion(lease: $0, result: nil) })
  }
}
