import Foundation
import NovaCore
import NovaDatabase
import NovaQueue
import NovaSecurity
import NovaTestSupport
import Testing

#if canImport(FoundationNetworking)
  import FoundationNetworking
#endif

/// Tests that run the real `nova` binary as a child process.
@Suite("nova processes", .serialized, .timeLimit(.minutes(5)))
struct ProcessTests {
  @Test func workerKilledWithSIGKILLMidJobLosesNothing() async throws {
    let dir = try TemporaryDirectory.make()
    let queue = try SQLiteJobQueue(path: dir.appendingPathComponent("nova.sqlite").path)
    // Enough work (about 4.5 s on 8 workers) that a loaded test process, polling late, still
    // finds the worker midway.
    let ids = try await queue.enqueue(
      batch: (0..<120).map { _ in
        JobRequest(kind: "sleep", payload: Data(#"{"ms":300}"#.utf8), maxAttempts: 5)
      }
    ).map(\.id)
    let common = ["--data-dir", dir.path, "--workers", "8", "--lease-seconds", "1", "--poll-ms", "20"]
    let victim = try NovaProcess(["worker"] + common)
    defer { victim.signal(SIGKILL) }
    try await eventually("the first worker to finish some jobs and hold others") {
      let stats = try await queue.stats()
      return stats.total(.succeeded) >= 8 && stats.total(.running) >= 4
    }
    victim.signal(SIGKILL)
    #expect(await victim.waitForExit() == 128 + SIGKILL)
    let orphaned = try await queue.list(JobFilter(state: .running, limit: 100)).jobs
    #expect(!orphaned.isEmpty, "the kill should leave jobs mid-run")

    let rescuer = try NovaProcess(["worker"] + common)
    defer { rescuer.signal(SIGKILL) }
    try await eventually("every job to succeed after the leases expire", timeout: .seconds(90)) {
      try await queue.stats().total(.succeeded) == ids.count
    }
    rescuer.signal(SIGTERM)
    #expect(await rescuer.waitForExit() == 0)

    var rerun = 0
    for id in ids {
      let job = try #require(try await queue.get(id))
      #expect(job.state == .succeeded)
      #expect(job.result != nil)
      if job.attempts > 1 { rerun += 1 }
    }
    // Jobs the killed worker held ran again, once their lease expired (those it had only
    // claimed ahead got their attempt back).
    #expect(rerun >= 1)
    for job in orphaned {
      let after = try #require(try await queue.get(job.id))
      #expect(after.attempts >= 1)
      #expect(after.fencingToken > job.fencingToken)
    }
    let stats = try await queue.stats()
    #expect(stats.total(.dead) == 0 && stats.total(.running) == 0 && stats.total(.available) == 0)
  }

  /// Issue #14 point 1: with `max_attempts: 1` and a prefetch of 32, a worker killed with SIGKILL
  /// dead-letters at most the jobs it was running (4 slots), not the 32 it had only claimed ahead.
  @Test func aKilledWorkerDeadLettersOnlyWhatItWasRunning() async throws {
    let dir = try TemporaryDirectory.make()
    let queue = try SQLiteJobQueue(path: dir.appendingPathComponent("nova.sqlite").path)
    let ids = try await queue.enqueue(
      batch: (0..<400).map { _ in JobRequest(kind: "sleep", payload: Data(#"{"ms":40}"#.utf8), maxAttempts: 1) }
    ).map(\.id)
    let common = ["--data-dir", dir.path, "--workers", "4", "--prefetch", "32", "--lease-seconds", "1", "--poll-ms", "20"]
    let victim = try NovaProcess(["worker"] + common)
    defer { victim.signal(SIGKILL) }
    try await eventually("the worker to run jobs with a full buffer") {
      let stats = try await queue.stats()
      return stats.total(.succeeded) >= 20 && stats.total(.running) >= 20
    }
    victim.signal(SIGKILL)
    _ = await victim.waitForExit()
    let held = try await queue.stats().total(.running)
    let rescuer = try NovaProcess(["worker"] + common)
    defer { rescuer.signal(SIGKILL) }
    try await eventually("every job to finish", timeout: .seconds(90)) {
      let stats = try await queue.stats()
      return stats.total(.succeeded) + stats.total(.dead) == ids.count
    }
    rescuer.signal(SIGTERM)
    _ = await rescuer.waitForExit()
    let dead = try await queue.stats().total(.dead)
    #expect(held >= 20 && dead <= 4, "the killed worker held \(held) jobs; \(dead) went dead")
  }

  @Test func workerFinishesInFlightJobsOnSIGTERM() async throws {
    let dir = try TemporaryDirectory.make()
    let queue = try SQLiteJobQueue(path: dir.appendingPathComponent("nova.sqlite").path)
    let ids = try await queue.enqueue(batch: (0..<4).map { _ in JobRequest(kind: "sleep", payload: Data(#"{"ms":2000}"#.utf8)) }).map(\.id)
    let worker = try NovaProcess(["worker", "--data-dir", dir.path, "--workers", "4", "--prefetch", "0", "--shutdown-grace-seconds", "20"])
    defer { worker.signal(SIGKILL) }
    try await eventually("jobs to start") { try await queue.stats().total(.running) == 4 }
    // Claimed is not yet started: a claimed job the pool has not handed to a worker is released
    // at shutdown, by design. The jobs run 2 s (long enough for a loaded test process to see them
    // running); give the pool a moment to start them.
    try await Task.sleep(for: .milliseconds(300))
    worker.signal(SIGTERM)
    #expect(await worker.waitForExit() == 0)
    for id in ids { #expect(try await queue.get(id)?.state == .succeeded) }
  }

  @Test func cliReportsBadInputWithExitCodes() async throws {
    let dir = try TemporaryDirectory.make().path
    let enqueue = try await NovaProcess.run(["enqueue", "echo", "--payload", #"{"a":1}"#, "--data-dir", dir])
    #expect(enqueue.code == 0)
    let id = enqueue.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    #expect(JobID(id).isWellFormed)

    let cases: [(args: [String], code: Int32, mentions: String)] = [
      (["enqueue", "echo", "--payload", "{\"a\":", "--data-dir", dir], 2, "byte offset"),
      (["enqueue", "echo", "--payload", "[1]", "--data-dir", dir], 2, "--payload"),
      (["enqueue", "gpu.train", "--data-dir", dir], 2, "unknown job kind 'gpu.train'"),
      (["enqueue", "noop", "--priority=-3", "--data-dir", dir], 2, "priority"),
      (["enqueue", "noop", "--priority", "many", "--data-dir", dir], 2, "--priority"),
      (["enqueue", "sleep", "--payload", #"{"ms":"x"}"#, "--data-dir", dir], 2, "'ms'"),
      (["jobs", "list", "--state", "sideways", "--data-dir", dir], 2, "unknown job state 'sideways'"),
      (["jobs", "show", "nope", "--data-dir", dir], 2, "not a job id"),
      (["jobs", "show", "01000000-0000-7000-8000-000000000000", "--data-dir", dir], 3, "not found"),
      (["jobs", "retry", id, "--data-dir", dir], 4, "cannot retry"),
      (["serve", "--port", "70000", "--data-dir", dir], 2, "--port"),
      (["worker", "--workers", "0", "--data-dir", dir], 2, "--workers"),
      // Issue #14 point 11: absurd numbers are refused instead of trapping.
      (["serve", "--lease-seconds", "inf", "--data-dir", dir], 2, "--lease-seconds inf is out of range"),
      (["worker", "--job-timeout-seconds", "1e10", "--data-dir", dir], 2, "--job-timeout-seconds"),
      (["serve", "--retention-hours", "1e8", "--data-dir", dir], 2, "--retention-hours"),
      (["serve", "--collect-seconds", "nan", "--data-dir", dir], 2, "--collect-seconds"),
      (["worker", "--gpu-sample-seconds=-1", "--data-dir", dir], 2, "--gpu-sample-seconds -1.0 is out of range"),
      (["worker", "--gpu-sample-seconds", "0.01", "--data-dir", dir], 2, "--gpu-sample-seconds must be 0 (never) or at least 0.1"),
      (["bench", "queue", "--backend", "postgres"], 2, "--backend"),
      // Sent as a header line as it is: a line break would split the request.
      (["bench", "http", "--token", "abc\r\nX-Evil: 1"], 2, "cannot be sent in a header at offset 3"),
      (["bench", "http", "--url", "http:///v1/jobs"], 2, "is not an http://HOST:PORT/PATH URL"),
      (["enqueue", "noop", "--data-dir", "\(dir)/nova.sqlite/sub"], 2, "data directory"),
      (["frobnicate"], 2, "frobnicate"),
    ]
    for item in cases {
      let result = try await NovaProcess.run(item.args)
      #expect(result.code == item.code, "nova \(item.args.joined(separator: " ")): \(result.stderr)")
      #expect(result.stderr.contains(item.mentions), "nova \(item.args.joined(separator: " ")): \(result.stderr)")
    }

    let junk = try TemporaryDirectory.make()
    try Data("definitely not sqlite".utf8).write(to: junk.appendingPathComponent("nova.sqlite"))
    let notNova = try await NovaProcess.run(["jobs", "list", "--data-dir", junk.path])
    #expect(notNova.code == 2)
    #expect(notNova.stderr.contains("is not a Nova database"))

    let list = try await NovaProcess.run(["jobs", "list", "--json", "--data-dir", dir])
    #expect(list.code == 0)
    let listed = try JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as? [String: Any]
    #expect((listed?["jobs"] as? [[String: Any]])?.first?["id"] as? String == id)
    let show = try await NovaProcess.run(["jobs", "show", id, "--data-dir", dir])
    #expect(show.stdout.contains("\"kind\" : \"echo\""))
    let cancel = try await NovaProcess.run(["jobs", "cancel", id, "--data-dir", dir])
    #expect(cancel.code == 0 && cancel.stdout.contains("cancelled \(id)"))
    let retry = try await NovaProcess.run(["jobs", "retry", id, "--json", "--data-dir", dir])
    #expect(retry.code == 0 && retry.stdout.contains("\"state\" : \"available\""))
    let stats = try await NovaProcess.run(["jobs", "stats", "--data-dir", dir])
    #expect(stats.code == 0 && stats.stdout.contains("default"))
    let help = try await NovaProcess.run(["jobs", "list", "--help"])
    #expect(help.code == 0 && help.stdout.contains("--state"))
    let bench = try await NovaProcess.run(["bench", "queue", "--jobs", "300", "--workers", "4", "--runs", "2", "--json"])
    #expect(bench.code == 0, "\(bench.stderr)")
    let figures = try #require(try JSONSerialization.jsonObject(with: Data(bench.stdout.utf8)) as? [String: Any])
    for key in ["backend", "jobs", "workers", "enqueue_per_s", "e2e_per_s", "p50_ms", "p99_ms", "lost", "duplicate_completions"] {
      #expect(figures[key] != nil, "bench JSON lacks \(key)")
    }
    #expect(figures["lost"] as? Int == 0)
    #expect(figures["duplicate_completions"] as? Int == 0)
    #expect((figures["runs"] as? [Any])?.count == 2)
  }

  @Test(.enabled(if: TestServers.promtoolAvailable, TestServers.promtoolMissing)) func serveRunsJobsAndServesMetricsThatPromtoolAccepts() async throws
  {
    let dir = try TemporaryDirectory.make().path
    let operatorToken = try await NovaProcess.run(["tokens", "create", "--name", "ops", "--role", "operator", "--data-dir", dir])
    #expect(operatorToken.code == 0, "\(operatorToken.stderr)")
    let viewerToken = try await NovaProcess.run(["tokens", "create", "--name", "dash", "--role", "viewer", "--data-dir", dir])
    let operatorBearer = "Bearer " + operatorToken.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    let viewerBearer = "Bearer " + viewerToken.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    let server = try NovaProcess(["serve", "--port", "0", "--data-dir", dir, "--workers", "2", "--checkpoint-mirror", "\(dir)/mirror"])
    defer { server.signal(SIGKILL) }
    let port = try await server.listeningPort()
    let base = "http://127.0.0.1:\(port)"
    func request(_ path: String, method: String = "GET", token: String?, body: String? = nil) async throws -> (Int, Data) {
      var request = URLRequest(url: URL(string: "\(base)\(path)")!)
      request.httpMethod = method
      request.httpBody = body.map { Data($0.utf8) }
      if let token { request.setValue(token, forHTTPHeaderField: "Authorization") }
      let (data, response) = try await URLSession.shared.data(for: request)
      return ((response as? HTTPURLResponse)?.statusCode ?? 0, data)
    }
    let job = #"{"kind":"echo","payload":{"hello":"nova"}}"#
    #expect(try await request("/healthz", token: nil).0 == 200)
    let anonymous = try await request("/v1/jobs", method: "POST", token: nil, body: job)
    #expect(anonymous.0 == 401)
    #expect(String(decoding: anonymous.1, as: UTF8.self).contains(#""code":"unauthorized""#))
    #expect(try await request("/v1/jobs", token: "Bearer nova_nope_nope").0 == 401)
    let weak = try await request("/v1/jobs", method: "POST", token: viewerBearer, body: job)
    #expect(weak.0 == 403)
    #expect(String(decoding: weak.1, as: UTF8.self).contains("no rule allows submit"))
    let (submitted, body) = try await request("/v1/jobs", method: "POST", token: operatorBearer, body: job)
    #expect(submitted == 201)
    let id = try #require((try JSONSerialization.jsonObject(with: body) as? [String: Any])?["id"] as? String)
    try await eventually("the job to succeed") {
      let (_, data) = try await request("/v1/jobs/\(id)", token: viewerBearer)
      return (try JSONSerialization.jsonObject(with: data) as? [String: Any])?["state"] as? String == "succeeded"
    }
    #expect(try await request("/metrics", token: nil).0 == 401)
    let (_, metrics) = try await request("/metrics", token: viewerBearer)
    let text = String(decoding: metrics, as: UTF8.self)
    #expect(text.contains("nova_jobs_completed_total"))
    #expect(text.contains("nova_job_wait_seconds_bucket"))

    let file = URL(fileURLWithPath: dir).appendingPathComponent("metrics.txt")
    try metrics.write(to: file)
    let report = URL(fileURLWithPath: dir).appendingPathComponent("promtool.txt")
    let promtool = try ChildProcess(
      "/bin/sh", ["-c", "promtool check metrics < '\(file.path)'"], standardOutput: report.path, standardError: report.path)
    let status = await promtool.waitForExit(timeout: .seconds(30))
    let complaint = (try? String(contentsOf: report, encoding: .utf8)) ?? ""
    #expect(status == 0, "promtool check metrics (install Debian's prometheus package): \(complaint)")

    server.signal(SIGTERM)
    #expect(await server.waitForExit() == 0)

    // The server kept queue depth and audit coverage as KPIs too.
    let depth = try await NovaProcess.run(["kpi", "query", "queue.depth", "--since", "10m", "--label", "state=available", "--data-dir", dir])
    #expect(depth.code == 0 && depth.stdout.contains("jobs\tqueue=default,state=available\tnova serve"), "\(depth.stdout)\(depth.stderr)")
    let coverageKPI = try await NovaProcess.run(["kpi", "query", "audit.coverage", "--since", "10m", "--data-dir", dir])
    #expect(coverageKPI.stdout.contains("1.0 ratio"), "\(coverageKPI.stdout)")

    // Everything above is in the audit log, which verifies against the checkpoints the server
    // signed at shutdown and mirrored, and every transition is audited.
    let verify = try await NovaProcess.run(["audit", "verify", "--checkpoint-dir", "\(dir)/mirror", "--data-dir", dir])
    #expect(verify.code == 0 && verify.stdout.contains(" mirrored (1 consistency proof)"), "\(verify.stdout)\(verify.stderr)")
    let coverage = try await NovaProcess.run(["audit", "coverage", "--json", "--data-dir", dir])
    #expect(coverage.stdout.contains(#""ratio" : 1"#), "\(coverage.stdout)")
    let log = try await NovaProcess.run(["audit", "list", "--json", "--limit", "1000", "--data-dir", dir])
    let events = try #require(try JSONSerialization.jsonObject(with: Data(log.stdout.utf8)) as? [[String: Any]])
    let names = events.compactMap { $0["event"] as? String }
    for expected in ["token.created", "config.loaded", "auth.failed", "policy.decided", "job.enqueued", "job.claimed", "job.completed"] {
      #expect(names.contains(expected), "no \(expected) in \(names)")
    }
    #expect(events.first { $0["event"] as? String == "job.enqueued" }?["actor"] as? String == "token:ops")
    #expect((events.first { $0["event"] as? String == "job.claimed" }?["actor"] as? String)?.hasPrefix("worker:") == true)
  }
}

/// The audit log and evidence through the CLI and standard tools, as an operator, an attacker
/// and a reviewer would use them.
@Suite("nova audit and evidence", .serialized, .timeLimit(.minutes(5)))
struct AuditProcessTests {

  /// A data directory with ten jobs and a checkpoint: the policy decision on the enqueue, ten
  /// `job.enqueued` entries, the decision on the checkpoint; returns it and the checkpoint's size.
  func seededDataDirectory() async throws -> (dir: String, size: Int) {
    let dir = try TemporaryDirectory.make().path
    let enqueue = try await NovaProcess.run(["enqueue", "echo", "--count", "10", "--data-dir", dir])
    #expect(enqueue.code == 0, "\(enqueue.stderr)")
    let checkpoint = try await NovaProcess.run(["audit", "checkpoint", "--data-dir", dir])
    let lines = checkpoint.stdout.split(separator: "\n")
    #expect(checkpoint.code == 0 && lines.count >= 3, "\(checkpoint.stdout)\(checkpoint.stderr)")
    let size = lines.count >= 2 ? Int(lines[1]) ?? 0 : 0
    #expect(size == 12, "\(checkpoint.stdout)")
    return (dir, size)
  }

  @Test(.enabled(if: TestServers.standardToolsAvailable, TestServers.standardToolsMissing)) func tamperingWithTheSQLiteCLIIsCaughtAndNamed()
    async throws
  {
    let attacks = [
      ("change one byte", "UPDATE nova_audit SET payload = replace(payload, 'echo', 'echO') WHERE seq = 4", "entry 4"),
      ("delete a row", "DELETE FROM nova_audit WHERE seq = 6", "entry 6 is missing"),
      (
        "reorder two rows",
        "UPDATE nova_audit SET seq = -1 WHERE seq = 2; UPDATE nova_audit SET seq = 2 WHERE seq = 3; UPDATE nova_audit SET seq = 3 WHERE seq = -1",
        "entry 2"
      ),
    ]
    for (name, sql, named) in attacks {
      let dir = try await seededDataDirectory().dir
      #expect(try await NovaProcess.run(["audit", "verify", "--data-dir", dir]).code == 0)
      let database = "\(dir)/nova.sqlite"
      let guarded = try await shell("sqlite3 '\(database)' \"DELETE FROM nova_audit WHERE seq = 1\"")
      #expect(guarded.code != 0 && guarded.output.contains("append-only"), "\(guarded.output)")
      let tampered = try await shell(
        "sqlite3 '\(database)' \"DROP TRIGGER nova_audit_no_update; DROP TRIGGER nova_audit_no_delete; \(sql)\"")
      #expect(tampered.code == 0, "\(name): \(tampered.output)")
      let verify = try await NovaProcess.run(["audit", "verify", "--json", "--data-dir", dir])
      #expect(verify.code == 5, "\(name): \(verify.stdout)")
      #expect(verify.stdout.contains(named) && verify.stdout.contains(#""passed" : false"#), "\(name): \(verify.stdout)")
    }
    // Swapping the key: the stored checkpoints no longer verify.
    let (dir, size) = try await seededDataDirectory()
    try FileManager.default.removeItem(atPath: "\(dir)/audit-signing.key")
    let swapped = try await NovaProcess.run(["audit", "verify", "--data-dir", dir])
    #expect(swapped.code == 5 && swapped.stderr.contains("stored checkpoint at size \(size)"), "\(swapped.stderr)")
  }

  /// Issue #13 point 2 through the CLI: with the database but not the key, drop the triggers,
  /// change an entry, recompute its stored hash and delete every checkpoint. `verify` says the
  /// log is unanchored (exit 8), the mirror names the removed checkpoints (exit 5), and no new
  /// checkpoint is signed over the forged history.
  @Test(.enabled(if: TestServers.standardToolsAvailable, TestServers.standardToolsMissing)) func deletingCheckpointsCannotLaunderARewrittenLog()
    async throws
  {
    let dir = try TemporaryDirectory.make().path
    let mirror = "\(dir)/mirror"
    #expect(try await NovaProcess.run(["enqueue", "echo", "--count", "5", "--data-dir", dir]).code == 0)
    let signed = try await NovaProcess.run(["audit", "checkpoint", "--checkpoint-mirror", mirror, "--data-dir", dir])
    #expect(signed.code == 0 && signed.stdout.contains("nova-chain 1 "), "\(signed.stdout)\(signed.stderr)")
    let ok = try await NovaProcess.run(["audit", "verify", "--checkpoint-dir", mirror, "--data-dir", dir])
    #expect(ok.code == 0 && ok.stdout.contains("1 mirrored (1 consistency proof)"), "\(ok.stdout)\(ok.stderr)")

    let entry = try await {
      let log = try AuditLog(database: try NovaDatabase(path: "\(dir)/nova.sqlite"))
      return try #require(try await log.entries(from: 3, through: 3).first)
    }()
    var forged = entry
    forged.actor = "someone-else"
    let hash = forged.leafHash.map { String(format: "%02x", $0) }.joined()
    let tampered = try await shell(
      """
      sqlite3 '\(dir)/nova.sqlite' "DROP TRIGGER nova_audit_no_update; DROP TRIGGER nova_audit_checkpoints_no_delete; \
      UPDATE nova_audit SET actor = 'someone-else', hash = x'\(hash)' WHERE seq = 3; DELETE FROM nova_audit_checkpoints"
      """)
    #expect(tampered.code == 0, "\(tampered.output)")

    let alone = try await NovaProcess.run(["audit", "verify", "--data-dir", dir])
    #expect(alone.code == 8 && alone.stderr.contains("unanchored"), "\(alone.stdout)\(alone.stderr)")
    let against = try await NovaProcess.run(["audit", "verify", "--checkpoint-dir", mirror, "--data-dir", dir])
    #expect(against.code == 5, "\(against.stdout)\(against.stderr)")
    #expect(against.stderr.contains("mirrored checkpoint checkpoint-0000000000000007.note at size 7 is not in the database"), "\(against.stderr)")
    let refused = try await NovaProcess.run(["audit", "checkpoint", "--checkpoint-mirror", mirror, "--data-dir", dir])
    #expect(refused.code == 5 && refused.stderr.contains("audit log was rewritten"), "\(refused.stdout)\(refused.stderr)")
    // Nor is evidence signed over it (point 3).
    let evidence = try await NovaProcess.run(["evidence", "export", "--out", "\(dir)/e.tar.gz", "--checkpoint-dir", mirror, "--data-dir", dir])
    #expect(evidence.code == 5 && evidence.stderr.contains("refusing to sign evidence"), "\(evidence.stdout)\(evidence.stderr)")
    #expect(!FileManager.default.fileExists(atPath: "\(dir)/e.tar.gz"))
  }

  @Test(.enabled(if: TestServers.standardToolsAvailable, TestServers.standardToolsMissing)) func evidenceIsDeterministicAndVerifiesWithStandardTools()
    async throws
  {
    let dir = try await seededDataDirectory().dir
    // Each export is itself audited (the policy decision on it), so the two share a window end.
    try await Task.sleep(for: .milliseconds(5))
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    let until = formatter.string(from: Date())
    let first = try await NovaProcess.run(["evidence", "export", "--out", "\(dir)/a.tar.gz", "--until", until, "--json", "--data-dir", dir])
    #expect(first.code == 0, "\(first.stderr)")
    let summary = try #require(try JSONSerialization.jsonObject(with: Data(first.stdout.utf8)) as? [String: Any])
    let exported = try #require(summary["entries"] as? Int)
    #expect(exported == 12)
    let second = try await NovaProcess.run(["evidence", "export", "--out", "\(dir)/b.tar.gz", "--until", until, "--data-dir", dir])
    #expect(second.code == 0, "\(second.stderr)")
    let sums = try await shell("cd '\(dir)' && sha256sum a.tar.gz b.tar.gz | cut -d' ' -f1 | uniq | wc -l")
    #expect(sums.output.trimmingCharacters(in: .whitespacesAndNewlines) == "1", "exports differ: \(sums.output)")
    let verifierKey = try await NovaProcess.run(["audit", "key", "--data-dir", dir]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    let verify = try await NovaProcess.run(["evidence", "verify", "\(dir)/a.tar.gz", "--key", verifierKey])
    #expect(verify.code == 0, "\(verify.stderr)")

    // Verification is read-only: in a folder of its own, without a key it refuses (exit 2, naming
    // what to pass) and creates nothing; NOVA_VERIFIER_KEY serves as --key; another key is named
    // as such, not as a malformed envelope.
    let reviewer = try TemporaryDirectory.make().path
    let nova = NovaBinary.path
    let keyless = try await shell("cd '\(reviewer)' && env -u NOVA_VERIFIER_KEY -u NOVA_DATA_DIR '\(nova)' evidence verify '\(dir)/a.tar.gz'")
    #expect(keyless.code == 2 && keyless.output.contains("no verifier key") && keyless.output.contains("nova audit key"), "\(keyless.output)")
    #expect(try FileManager.default.contentsOfDirectory(atPath: reviewer).isEmpty, "evidence verify created files")
    let fromEnvironment = try await shell("cd '\(reviewer)' && NOVA_VERIFIER_KEY='\(verifierKey)' '\(nova)' evidence verify '\(dir)/a.tar.gz'")
    #expect(fromEnvironment.code == 0, "\(fromEnvironment.output)")
    let strangerKey = try await NovaProcess.run(["audit", "key", "--data-dir", try TemporaryDirectory.make().path]).stdout
      .trimmingCharacters(in: .whitespacesAndNewlines)
    let stranger = try await shell("cd '\(reviewer)' && '\(nova)' evidence verify '\(dir)/a.tar.gz' --key '\(strangerKey)'")
    #expect(stranger.code == 5 && stranger.output.contains("signed by another key") && !stranger.output.contains("malformed"), "\(stranger.output)")
    #expect(try FileManager.default.contentsOfDirectory(atPath: reviewer).isEmpty, "evidence verify created files")
    let sla = try await shell("tar -xzOf '\(dir)/a.tar.gz' alerts/sla.json")
    #expect(sla.output.contains(#""acknowledge_within_s":300"#) && sla.output.contains(#""fired":0"#), "\(sla.output)")

    // The README's reviewer path: the operator's public key and standard tools only.
    let key = try await NovaProcess.run(["audit", "key", "--pem", "--data-dir", dir])
    try key.stdout.write(toFile: "\(dir)/trusted.pem", atomically: true, encoding: .utf8)
    let script = repositoryRoot.appendingPathComponent("scripts/verify-evidence.sh").path
    let reviewed = try await shell("'\(script)' '\(dir)/a.tar.gz' '\(dir)/trusted.pem'")
    #expect(reviewed.code == 0 && reviewed.output.contains("evidence bundle verified: \(exported) audit entries"), "\(reviewed.output)")

    // The README's own commands, pasted as they are, in a folder with the bundle and the key.
    let readme = try String(
      contentsOf: URL(fileURLWithPath: script).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("README.md"), encoding: .utf8)
    let section = try #require(readme.range(of: "**Checking a bundle without Nova.**"))
    let blockStart = try #require(readme.range(of: "```sh\n", range: section.upperBound..<readme.endIndex))
    let blockEnd = try #require(readme.range(of: "```", range: blockStart.upperBound..<readme.endIndex))
    let pasted = try TemporaryDirectory.make().path
    try FileManager.default.copyItem(atPath: "\(dir)/a.tar.gz", toPath: "\(pasted)/evidence.tar.gz")
    try FileManager.default.copyItem(atPath: "\(dir)/trusted.pem", toPath: "\(pasted)/trusted.pem")
    try String(readme[blockStart.upperBound..<blockEnd.lowerBound]).write(toFile: "\(pasted)/steps.sh", atomically: true, encoding: .utf8)
    let steps = try await shell("cd '\(pasted)' && bash -e -o pipefail steps.sh")
    #expect(steps.code == 0 && steps.output.contains("Signature Verified Successfully"), "\(steps.output)")

    // One changed entry in a repacked bundle fails both checks, naming the file.
    let repack = try await shell(
      """
      set -e; cd '\(dir)'; mkdir x; tar -xzf a.tar.gz -C x
      sed -i '3s/echo/echO/' x/audit/entries.jsonl
      (cd x && tar --owner=0 --group=0 --numeric-owner -czf ../forged.tar.gz $(find . -type f | cut -c3- | sort))
      """)
    #expect(repack.code == 0, "\(repack.output)")
    let status = try String(contentsOfFile: "\(dir)/x/policy/status.json", encoding: .utf8)
    #expect(status.contains(#""source":"built-in role rules""#) && status.contains(#""version":""#), "\(status)")
    let forged = try await NovaProcess.run(["evidence", "verify", "\(dir)/forged.tar.gz", "--key", verifierKey])
    #expect(forged.code == 5 && forged.stderr.contains("audit/entries.jsonl: SHA-256 does not match"), "\(forged.stderr)")
    let rejected = try await shell("'\(script)' '\(dir)/forged.tar.gz' '\(dir)/trusted.pem'")
    #expect(rejected.code != 0 && rejected.output.contains("audit/entries.jsonl: FAILED"), "\(rejected.output)")
    let otherKey = try await NovaProcess.run(["audit", "key", "--pem", "--data-dir", try TemporaryDirectory.make().path])
    try otherKey.stdout.write(toFile: "\(dir)/other.pem", atomically: true, encoding: .utf8)
    let wrongKey = try await shell("'\(script)' '\(dir)/a.tar.gz' '\(dir)/other.pem'")
    #expect(wrongKey.code != 0 && wrongKey.output.contains("Signature Verification Failure"), "\(wrongKey.output)")

    let badTime = try await NovaProcess.run(["evidence", "export", "--out", "\(dir)/c.tar.gz", "--since", "yesterday", "--data-dir", dir])
    #expect(badTime.code == 2 && badTime.stderr.contains("--since"), "\(badTime.stderr)")
  }
}

/// `nova policy …` and the CLI's own actions under a policy, as policy authors use them.
@Suite("nova policy", .serialized, .timeLimit(.minutes(5)))
struct PolicyProcessTests {
  static let policy = """
    rules:
      - name: local-cli
        effect: allow
        subjects: "cli:*"
      - name: trainer-submits-training
        effect: allow
        subjects: "token:trainer"
        actions: submit
        resource:
          kind: job
          attributes: {queue: gpu, job_kind: "train.*"}
      - name: frozen-queue
        effect: deny
        actions: submit
        resource:
          attributes: {queue: frozen}
    """

  @Test func checkTestValidateApproveDriftAndEnforcement() async throws {
    let dir = try TemporaryDirectory.make().path
    let policy = "\(dir)/nova-policy.yaml"
    try Self.policy.write(toFile: policy, atomically: true, encoding: .utf8)
    let valid = try await NovaProcess.run(["policy", "validate", policy])
    #expect(valid.code == 0 && valid.stdout.contains("3 rules"), "\(valid.stderr)")
    try "rules:\n  - name: x\n    effect: allow\n    actoins: read\n".write(toFile: "\(dir)/bad.yaml", atomically: true, encoding: .utf8)
    let invalid = try await NovaProcess.run(["policy", "validate", "\(dir)/bad.yaml"])
    #expect(invalid.code == 2 && invalid.stderr.contains("bad.yaml:4:5: rules[0]: unknown key 'actoins'"), "\(invalid.stderr)")

    let allowed = try await NovaProcess.run([
      "policy", "check", "--subject", "token:trainer", "--role", "viewer", "--action", "submit", "--resource-kind", "job",
      "--attr", "queue=gpu", "--attr", "job_kind=train.llama", "--data-dir", dir,
    ])
    #expect(allowed.code == 0 && allowed.stdout.contains("ALLOW: allowed by rule 'trainer-submits-training'"), "\(allowed.stdout)\(allowed.stderr)")
    let denied = try await NovaProcess.run([
      "policy", "check", "--subject", "token:trainer", "--action", "submit", "--resource-kind", "job", "--attr", "queue=frozen",
      "--json", "--data-dir", dir,
    ])
    #expect(denied.code == 6 && denied.stdout.contains(#""rule" : "frozen-queue""#), "\(denied.stdout)\(denied.stderr)")
    let badAttr = try await NovaProcess.run([
      "policy", "check", "--subject", "s", "--action", "a", "--resource-kind", "k", "--attr", "novalue", "--data-dir", dir,
    ])
    #expect(badAttr.code == 2 && badAttr.stderr.contains("--attr"))

    let fixtures = """
      - name: trainer trains on gpu
        subject: token:trainer
        action: submit
        resource: {kind: job, attributes: {queue: gpu, job_kind: train.x}}
        expect: allow
      - name: nobody submits to frozen
        subject: cli:root
        action: submit
        resource: {kind: job, attributes: {queue: frozen}}
        expect: deny
      """
    try fixtures.write(toFile: "\(dir)/fixtures.yaml", atomically: true, encoding: .utf8)
    let tested = try await NovaProcess.run(["policy", "test", "\(dir)/fixtures.yaml", "--data-dir", dir])
    #expect(tested.code == 0 && tested.stdout.contains("2 passed, 0 failed"), "\(tested.stdout)\(tested.stderr)")
    try fixtures.replacingOccurrences(of: "expect: deny", with: "expect: allow").write(
      toFile: "\(dir)/fixtures.yaml", atomically: true, encoding: .utf8)
    let failing = try await NovaProcess.run(["policy", "test", "\(dir)/fixtures.yaml", "--data-dir", dir])
    #expect(failing.code == 5 && failing.stdout.contains("FAIL nobody submits to frozen"), "\(failing.stdout)")

    // The CLI asks the policy too: the deny beats the local-cli allow.
    let frozen = try await NovaProcess.run(["enqueue", "echo", "--queue", "frozen", "--data-dir", dir])
    #expect(frozen.code == 6 && frozen.stderr.contains("denied by policy: denied by rule 'frozen-queue'"), "\(frozen.stderr)")
    #expect(try await NovaProcess.run(["enqueue", "echo", "--queue", "gpu", "--data-dir", dir]).code == 0)

    let approved = try await NovaProcess.run(["policy", "approve", "--out", "\(dir)/approved.json", "--data-dir", dir])
    #expect(approved.code == 0, "\(approved.stderr)")
    #expect(try await NovaProcess.run(["policy", "drift", "--approved", "\(dir)/approved.json", "--data-dir", dir]).code == 0)
    try (Self.policy + "\n  - name: extra\n    effect: deny\n    actions: retry\n").write(toFile: policy, atomically: true, encoding: .utf8)
    let drifted = try await NovaProcess.run(["policy", "drift", "--approved", "\(dir)/approved.json", "--json", "--data-dir", dir])
    #expect(drifted.code == 5 && drifted.stdout.contains(#""drifted" : true"#), "\(drifted.stdout)\(drifted.stderr)")
    let show = try await NovaProcess.run(["policy", "show", "--data-dir", dir])
    #expect(show.stdout.contains("deny\textra"))
  }

  @Test func theREADMEsPolicyExampleIsValid() async throws {
    let readme = try String(contentsOf: repositoryRoot.appendingPathComponent("README.md"), encoding: .utf8)
    let section = try #require(readme.range(of: "## Policy"))
    let start = try #require(readme.range(of: "```yaml\n", range: section.upperBound..<readme.endIndex))
    let end = try #require(readme.range(of: "```", range: start.upperBound..<readme.endIndex))
    let dir = try TemporaryDirectory.make().path
    try String(readme[start.upperBound..<end.lowerBound]).write(toFile: "\(dir)/nova-policy.yaml", atomically: true, encoding: .utf8)
    let valid = try await NovaProcess.run(["policy", "validate", "\(dir)/nova-policy.yaml"])
    #expect(valid.code == 0 && valid.stdout.contains("4 rules"), "\(valid.stdout)\(valid.stderr)")
  }

  @Test func kpisRecordedAndQueriedFromTheCLI() async throws {
    let dir = try TemporaryDirectory.make().path
    for value in ["12.5", "13.5"] {
      let recorded = try await NovaProcess.run(["kpi", "record", "gpu.util", value, "--label", "host=h1", "--unit", "percent", "--data-dir", dir])
      #expect(recorded.code == 0, "\(recorded.stderr)")
    }
    let query = try await NovaProcess.run(["kpi", "query", "gpu.util", "--since", "10m", "--label", "host=h1", "--data-dir", dir])
    #expect(
      query.code == 0 && query.stdout.contains("12.5 percent\thost=h1\tcli:") && query.stdout.contains("2 samples, mean 13"),
      "\(query.stdout)\(query.stderr)")
    let json = try await NovaProcess.run(["kpi", "query", "gpu.util", "--json", "--data-dir", dir])
    #expect(json.stdout.contains(#""count" : 2"#), "\(json.stdout)")
    let bad = try await NovaProcess.run(["kpi", "record", "gpu.util", "lots", "--data-dir", dir])
    #expect(bad.code == 2 && bad.stderr.contains("VALUE"))
    let badName = try await NovaProcess.run(["kpi", "record", "9x", "1", "--data-dir", dir])
    #expect(badName.code == 2 && badName.stderr.contains("name"))
    let badSince = try await NovaProcess.run(["kpi", "query", "gpu.util", "--since", "whenever", "--data-dir", dir])
    #expect(badSince.code == 2 && badSince.stderr.contains("--since"))
    #expect(try await NovaProcess.run(["kpi", "deploy", "start", "--service", "api", "--version", "2", "--data-dir", dir]).code == 0)
    let finished = try await NovaProcess.run(["kpi", "deploy", "finish", "--service", "api", "--version", "2", "--data-dir", dir])
    #expect(finished.code == 0 && finished.stdout.contains("deployment of api 2 finished after"), "\(finished.stdout)\(finished.stderr)")
    let durations = try await NovaProcess.run(["kpi", "query", "deploy.duration", "--data-dir", dir])
    #expect(durations.stdout.contains("service=api"), "\(durations.stdout)")
    let deployments = try await NovaProcess.run(["journal", "show", "--kind", "deploy.", "--data-dir", dir])
    #expect(deployments.stdout.contains("deploy.started\tapi") && deployments.stdout.contains("deploy.finished\tapi"), "\(deployments.stdout)")
    let unknown = try await NovaProcess.run(["kpi", "deploy", "finish", "--service", "web", "--version", "1", "--data-dir", dir])
    #expect(unknown.code == 3)
    #expect(try await NovaProcess.run(["kpi", "deploy", "halfway", "--service", "a", "--version", "1", "--data-dir", dir]).code == 2)
    let summary = try await NovaProcess.run(["kpi", "summary", "--data-dir", dir])
    #expect(summary.code == 0 && summary.stdout.contains("gpu.util") && summary.stdout.contains("kpi/summary-"), "\(summary.stdout)\(summary.stderr)")
    #expect(try await NovaProcess.run(["kpi", "summary", "--day", "someday", "--data-dir", dir]).code == 2)
  }

  @Test func baselinesMeasureSaveAndCompare() async throws {
    let dir = try TemporaryDirectory.make().path
    let full = try await NovaProcess.run(
      ["bench", "baseline", "--runs", "1", "--work-scale", "0.05", "--json", "--data-dir", dir], timeout: .seconds(120))
    #expect(full.code == 0, "\(full.stderr)")
    let run = try #require((try JSONSerialization.jsonObject(with: Data(full.stdout.utf8)) as? [String: Any])?["run"] as? [String: Any])
    #expect(((run["cpu"] as? [String: Any])?["measures"] as? [Any])?.count == 6)
    #expect(((run["network"] as? [String: Any])?["rtt_p50_us"] as? Double ?? 0) > 0)
    let gpu = try #require(run["gpu"] as? [String: Any])
    #expect(gpu["available"] as? Bool == false && (gpu["reason"] as? String)?.hasPrefix("no GPU") == true, "\(gpu)")

    let saved = try await NovaProcess.run([
      "bench", "baseline", "--network", "--runs", "2", "--work-scale", "0.05", "--save-baseline", "loopback", "--data-dir", dir,
    ])
    #expect(saved.code == 0 && FileManager.default.fileExists(atPath: "\(dir)/kpi/baselines/loopback.json"), "\(saved.stderr)")
    // Loopback throughput on a shared, loaded test machine varies by more than any threshold a
    // user would set, so the pass path runs with a wide one here; the noise rule itself is
    // tested with constructed runs (BaselineTests).
    try "baseline:\n  network_throughput_percent: 1000\n".write(toFile: "\(dir)/thresholds.yaml", atomically: true, encoding: .utf8)
    let same = try await NovaProcess.run([
      "bench", "baseline", "--network", "--runs", "2", "--work-scale", "0.05", "--compare", "loopback", "--data-dir", dir,
    ])
    #expect(same.code == 0 && same.stdout.contains("ok     network.throughput"), "\(same.stdout)\(same.stderr)")
    // A baseline a thousand times slower than this run: a change beyond any threshold and beyond
    // the runs' own spread (a loaded machine's loopback can spread over 100 %, which a slower
    // run, at most 100 % below, could never exceed), so a breach, exit 7, a KPI event.
    try FileManager.default.removeItem(atPath: "\(dir)/thresholds.yaml")
    let path = "\(dir)/kpi/baselines/loopback.json"
    var baseline = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
    var network = try #require(baseline["network"] as? [String: Any])
    var throughput = try #require(network["throughput_mbit_s"] as? [String: Any])
    throughput["median"] = (throughput["median"] as? Double ?? 1) / 1000
    network["throughput_mbit_s"] = throughput
    baseline["network"] = network
    try JSONSerialization.data(withJSONObject: baseline).write(to: URL(fileURLWithPath: path))
    let slower = try await NovaProcess.run([
      "bench", "baseline", "--network", "--runs", "2", "--work-scale", "0.05", "--compare", "loopback", "--data-dir", dir,
    ])
    #expect(slower.code == 7 && slower.stdout.contains("BREACH network.throughput"), "\(slower.stdout)\(slower.stderr)")
    let events = try await NovaProcess.run(["kpi", "query", "baseline.breach", "--data-dir", dir])
    #expect(events.stdout.contains("measure=network.throughput"), "\(events.stdout)")
    let breach = try await NovaProcess.run(["journal", "show", "--kind", "baseline.breach", "--data-dir", dir])
    #expect(breach.stdout.contains("network.throughput") && breach.stdout.contains("loopback"), "\(breach.stdout)")
    let artefacts = try FileManager.default.contentsOfDirectory(atPath: "\(dir)/kpi").filter { $0.hasPrefix("baseline-") }
    #expect(artefacts.count >= 3)
    let missing = try await NovaProcess.run([
      "bench", "baseline", "--network", "--runs", "1", "--work-scale", "0.05", "--compare", "nope", "--data-dir", dir,
    ])
    #expect(missing.code == 3 && missing.stderr.contains("no baseline named 'nope'"))
  }

  @Test func serveReloadsThePolicyOnSIGHUP() async throws {
    let dir = try TemporaryDirectory.make().path
    try Self.policy.write(toFile: "\(dir)/nova-policy.yaml", atomically: true, encoding: .utf8)
    let serve = try NovaProcess(["serve", "--port", "0", "--workers", "0", "--data-dir", dir])
    defer { serve.signal(SIGKILL) }
    try await eventually("the server to listen") { serve.stderr.contains("listening on") }
    #expect(serve.stderr.contains("policy "))
    try (Self.policy + "\n  - name: extra\n    effect: deny\n    actions: retry\n").write(
      toFile: "\(dir)/nova-policy.yaml", atomically: true, encoding: .utf8)
    serve.signal(SIGHUP)
    try await eventually("the reload") { serve.stderr.contains("policy reloaded on SIGHUP") }
    try "rules: [".write(toFile: "\(dir)/nova-policy.yaml", atomically: true, encoding: .utf8)
    serve.signal(SIGHUP)
    try await eventually("the failed reload") { serve.stderr.contains("policy reload failed") }
    serve.signal(SIGTERM)
    #expect(await serve.waitForExit() == 0)
    let log = try await NovaProcess.run(["audit", "list", "--limit", "100", "--data-dir", dir])
    #expect(log.stdout.contains("policy.reloaded") && log.stdout.contains("policy.reload_failed"), "\(log.stdout)")
  }
}
