import Foundation
import GRDB
import NovaApplication
import NovaCore
import NovaDatabase
import NovaPolicy
import NovaQueue
import NovaSecurity
import NovaTestSupport
import Testing

@Suite("Application layer", .serialized, .timeLimit(.minutes(5)))
struct NovaApplicationTests {
  static let policy = """
    rules:
      - name: local-cli
        effect: allow
        subjects: "cli:*"
      - name: frozen-queue
        effect: deny
        actions: [submit, cancel, retry, read]
        resource: {attributes: {queue: frozen}}
    """

  func open(policy: String? = Self.policy) async throws -> (NovaApplication, URL) {
    let directory = try TemporaryDirectory.make("nova-app")
    var policyPath: String?
    if let policy {
      policyPath = directory.appendingPathComponent("policy.yaml").path
      try policy.write(toFile: policyPath!, atomically: true, encoding: .utf8)
    }
    let settings = NovaSettings(dataDirectory: directory.appendingPathComponent("data").path, policyPath: policyPath)
    return (try await NovaApplication.open(settings), directory)
  }

  /// Issue #13 point 12: the data directory is its owner's only, the database and its WAL too,
  /// also when they were created with a looser mode before.
  @Test func filesAtRestArePrivate() async throws {
    func mode(_ path: String) -> mode_t {
      var info = stat()
      return stat(path, &info) == 0 ? info.st_mode & 0o777 : 0
    }
    let (application, directory) = try await open()
    let data = directory.appendingPathComponent("data").path
    _ = try await application.queue.enqueue(JobRequest(kind: "noop"))
    #expect(mode(data) == 0o700)
    #expect(mode("\(data)/nova.sqlite") == 0o600)
    #expect(mode("\(data)/nova.sqlite-wal") == 0o600)
    #expect(mode("\(data)/audit-signing.key") == 0o600)

    let loose = try TemporaryDirectory.make("nova-loose")
    let dataDir = loose.appendingPathComponent("data").path
    try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
    _ = FileManager.default.createFile(atPath: "\(dataDir)/nova.sqlite", contents: nil, attributes: [.posixPermissions: 0o644])
    let reopened = try await NovaApplication.open(NovaSettings(dataDirectory: dataDir))
    _ = try await reopened.queue.enqueue(JobRequest(kind: "noop"))
    #expect(mode(dataDir) == 0o700 && mode("\(dataDir)/nova.sqlite") == 0o600 && mode("\(dataDir)/nova.sqlite-wal") == 0o600)
  }

  @Test func settingsPreferFlagsThenTheEnvironmentThenTheDataDirectory() throws {
    let directory = try TemporaryDirectory.make("nova-settings")
    try "rules: []".write(toFile: directory.appendingPathComponent("nova-policy.yaml").path, atomically: true, encoding: .utf8)
    let environment = ["NOVA_DATA_DIR": directory.path, "NOVA_QUEUE_URL": "redis://:secret@127.0.0.1:6379", "NOVA_THRESHOLDS": "/t.yaml"]
    let fromEnvironment = try NovaSettings.resolve(
      dataDirectory: nil, queueURL: nil, synchronous: "full", signingKey: nil, policy: nil, thresholds: nil, environment: environment)
    #expect(fromEnvironment.dataDirectory == directory.path)
    #expect(fromEnvironment.synchronous == .full)
    #expect(fromEnvironment.policyPath == directory.appendingPathComponent("nova-policy.yaml").path)
    #expect(fromEnvironment.thresholdsPath == "/t.yaml")
    #expect(fromEnvironment.signingKeyPath == directory.appendingPathComponent("audit-signing.key").path)
    #expect(!fromEnvironment.location.contains("secret"))
    let fromFlags = try NovaSettings.resolve(
      dataDirectory: "/d", queueURL: "sqlite:///q.sqlite", synchronous: "normal", signingKey: "/k", policy: "/p", thresholds: "/t",
      environment: environment)
    #expect(
      fromFlags == NovaSettings(dataDirectory: "/d", queueURL: "sqlite:///q.sqlite", signingKeyPath: "/k", policyPath: "/p", thresholdsPath: "/t"))
    #expect(throws: NovaError.self) {
      _ = try NovaSettings.resolve(dataDirectory: nil, queueURL: nil, synchronous: "sometimes", signingKey: nil, policy: nil, thresholds: nil)
    }
  }

  @Test func jobActionsDecideWithTheJobsQueueAndAuditTheDecision() async throws {
    let (application, _) = try await open()
    let jobs = try application.jobs()
    let caller = Caller(subject: PolicySubject(id: "cli:tester"))
    let (job, created) = try await jobs.submit(JobRequest(kind: "noop", queue: "cpu"), by: caller)
    #expect(created && job.queue == "cpu")
    #expect(try await jobs.get(job.id, by: caller).id == job.id)
    #expect(try await jobs.list(JobFilter(queue: "cpu"), by: caller).jobs.map(\.id) == [job.id])
    #expect(try await jobs.stats(by: caller).count(queue: "cpu", state: .available) == 1)
    #expect(try await jobs.cancel(job.id, by: caller).state == .cancelled)
    #expect(try await jobs.retry(job.id, by: caller).state == .available)
    // The frozen queue: submit, read and cancel are denied, with the rule in the reason.
    await #expect(throws: NovaError.self) { _ = try await jobs.submit(JobRequest(kind: "noop", queue: "frozen"), by: caller) }
    let frozen: JobID = try await application.queue.enqueue(JobRequest(kind: "noop", queue: "frozen"))
    await #expect { _ = try await jobs.get(frozen, by: caller) } throws: { error in
      guard case NovaError.forbidden(let reason) = error else { return false }
      return reason.contains("frozen-queue")
    }
    await #expect(throws: NovaError.self) { _ = try await jobs.cancel(frozen, by: caller) }
    await #expect(throws: NovaError.self) { _ = try await jobs.list(JobFilter(queue: "frozen"), by: caller) }
    #expect(try await application.queue.get(frozen)?.state == .available)
    // Issue #13 point 7: a listing without a queue never shows the frozen queue's jobs.
    let listed = try await jobs.list(JobFilter(), by: caller).jobs.map(\.id)
    #expect(listed == [job.id], "\(listed)")
    #expect(try await jobs.list(JobFilter(), by: nil).jobs.count == 2)
    // Every decision is in the audit log, with the job's queue.
    let size = try await application.security.audit.size()
    let decisions = try await application.security.audit.entries(from: 1, through: size).filter { $0.event == "policy.decided" }
    #expect(decisions.count == 11)
    #expect(decisions.contains { $0.payload.contains(#""queue":"frozen""#) && $0.payload.contains(#""allowed":false"#) })
    // Without a caller (a server without authentication) nothing is decided.
    #expect(try await jobs.get(frozen, by: nil).id == frozen)
    await #expect(throws: NovaError.unknownJobKind("unknown.kind")) { _ = try await jobs.submit(JobRequest(kind: "unknown.kind"), by: nil) }
  }

  /// Issue #24: a submission's decision is written in its job's transaction (one write, the
  /// decision first); a submission the store refuses still has its decision recorded, and one
  /// whose decision cannot be recorded stores no job.
  @Test func aSubmissionsDecisionIsWrittenWithItsJob() async throws {
    let (application, _) = try await open()
    let jobs = try application.jobs()
    let caller = Caller(subject: PolicySubject(id: "cli:tester"))
    let audit = application.security.audit
    _ = try await jobs.submit(JobRequest(kind: "noop", queue: "cpu"), by: caller)
    let before = application.database.writeStatistics.operations
    let (job, created) = try await jobs.submit(JobRequest(kind: "noop", payload: Data("{}".utf8), queue: "cpu", idempotencyKey: "k"), by: caller)
    #expect(created)
    #expect(application.database.writeStatistics.operations == before + 1)
    var size = try await audit.size()
    let last = try await audit.entries(from: size - 1, through: size)
    #expect(last.map(\.event) == ["policy.decided", "job.enqueued"])
    #expect(last.first?.payload.contains(#""queue":"cpu""#) == true && last.last?.subject == job.id.rawValue)
    // The same key for another payload: refused by the store, the decision recorded on its own.
    await #expect(throws: NovaError.self) {
      _ = try await jobs.submit(JobRequest(kind: "noop", payload: Data(#"{"a":1}"#.utf8), queue: "cpu", idempotencyKey: "k"), by: caller)
    }
    #expect(try await audit.size() == size + 1)
    size += 1
    #expect(try await audit.entries(from: size, through: size).map(\.event) == ["policy.decided"])
    // The audit log refuses writes: the submission fails and no job is stored.
    try await application.database.pool.write { db in
      try db.execute(sql: "CREATE TRIGGER refuse BEFORE INSERT ON nova_audit BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    }
    await #expect(throws: NovaError.self) { _ = try await jobs.submit(JobRequest(kind: "noop", queue: "gpu"), by: caller) }
    #expect(try await application.queue.list(JobFilter(queue: "gpu")).jobs.isEmpty)
  }

  /// Submissions as clients send them, one job each and many at once (their writes share
  /// transactions): each job's decision is the entry right before its `job.enqueued`.
  @Test func concurrentSubmissionsEachWriteTheirDecisionBeforeTheirJob() async throws {
    let (application, _) = try await open()
    let jobs = try application.jobs()
    let ids = try await withThrowingTaskGroup(of: JobID.self) { group in
      for index in 0..<40 {
        group.addTask {
          try await Task.sleep(for: .milliseconds(index % 4))
          return try await jobs.submit(JobRequest(kind: "noop", queue: "q\(index % 3)"), by: Caller(subject: PolicySubject(id: "cli:c\(index)"))).job
            .id
        }
      }
      return try await group.reduce(into: [JobID]()) { $0.append($1) }
    }
    let audit = application.security.audit
    let entries = try await audit.entries(from: 1, through: try await audit.size())
    for id in ids {
      let index = try #require(entries.firstIndex { $0.event == "job.enqueued" && $0.subject == id.rawValue })
      #expect(index > 0 && entries[index - 1].event == "policy.decided", "\(id)")
    }
    #expect(entries.filter { $0.event == "policy.decided" }.count == 40)
    // Appended a transaction's submissions at a time: sequence numbers without gaps, every
    // leaf hash and a checkpoint over them all verify.
    #expect(entries.map(\.seq) == Array(1...Int64(entries.count)))
    _ = try await audit.checkpoint(signer: application.security.signer, origin: application.security.origin)
    let report = try await audit.verify(verifier: application.security.signer.verifier)
    #expect(report.passed && report.entries == Int64(entries.count) && report.checkpointsChecked >= 1)
  }

  @Test func aDecisionThatCannotBeAuditedFailsTheAction() async throws {
    let (application, _) = try await open()
    let jobs = try application.jobs()
    let caller = Caller(subject: PolicySubject(id: "cli:tester"))
    let id: JobID = try await application.queue.enqueue(JobRequest(kind: "noop"))
    // The audit log refuses writes (as a full disk or a lost lock would).
    try await application.database.pool.write { db in
      try db.execute(sql: "CREATE TRIGGER refuse BEFORE INSERT ON nova_audit BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    }
    await #expect { _ = try await jobs.cancel(id, by: caller) } throws: { error in
      guard case NovaError.storage(let message) = error else { return false }
      return message.contains("disk full")
    }
    #expect(try await application.queue.get(id)?.state == .available)
  }
}
