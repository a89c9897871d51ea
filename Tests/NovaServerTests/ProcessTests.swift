import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import NovaCore
import NovaQueue
import NovaTestSupport
import Testing

/// Tests that run the real `nova` binary as a child process.
@Suite("nova processes", .serialized)
struct ProcessTests {
  @Test func workerKilledWithSIGKILLMidJobLosesNothing() async throws {
    let dir = try TemporaryDirectory.make()
    let queue = try SQLiteJobQueue(path: dir.appendingPathComponent("nova.sqlite").path)
    let ids = try await queue.enqueue(batch: (0..<60).map { _ in
      JobRequest(kind: "sleep", payload: Data(#"{"ms":150}"#.utf8), maxAttempts: 5)
    }).map(\.id)
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
    // Jobs the killed worker held ran again, once their lease expired.
    #expect(rerun >= orphaned.count)
    for job in orphaned {
      let after = try #require(try await queue.get(job.id))
      #expect(after.attempts >= 2)
      #expect(after.fencingToken > job.fencingToken)
    }
    let stats = try await queue.stats()
    #expect(stats.total(.dead) == 0 && stats.total(.running) == 0 && stats.total(.available) == 0)
  }

  @Test func workerFinishesInFlightJobsOnSIGTERM() async throws {
    let dir = try TemporaryDirectory.make()
    let queue = try SQLiteJobQueue(path: dir.appendingPathComponent("nova.sqlite").path)
    let ids = try await queue.enqueue(batch: (0..<4).map { _ in JobRequest(kind: "sleep", payload: Data(#"{"ms":700}"#.utf8)) }).map(\.id)
    let worker = try NovaProcess(["worker", "--data-dir", dir.path, "--workers", "4", "--prefetch", "0", "--shutdown-grace-seconds", "20"])
    defer { worker.signal(SIGKILL) }
    try await eventually("jobs to start") { try await queue.stats().total(.running) == 4 }
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
      (["bench", "queue", "--backend", "postgres"], 2, "--backend"),
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

  @Test func serveRunsJobsAndServesMetricsThatPromtoolAccepts() async throws {
    let dir = try TemporaryDirectory.make().path
    let server = try NovaProcess(["serve", "--port", "0", "--data-dir", dir, "--workers", "2"])
    defer { server.signal(SIGKILL) }
    var port = 0
    try await eventually("the server to listen") {
      guard let range = server.stderr.range(of: "listening on http://127.0.0.1:") else { return false }
      port = Int(server.stderr[range.upperBound...].prefix { $0.isNumber }) ?? 0
      return port > 0
    }
    let base = "http://127.0.0.1:\(port)"
    var submit = URLRequest(url: URL(string: "\(base)/v1/jobs")!)
    submit.httpMethod = "POST"
    submit.httpBody = Data(#"{"kind":"echo","payload":{"hello":"nova"}}"#.utf8)
    let (body, response) = try await URLSession.shared.data(for: submit)
    #expect((response as? HTTPURLResponse)?.statusCode == 201)
    let id = try #require((try JSONSerialization.jsonObject(with: body) as? [String: Any])?["id"] as? String)
    try await eventually("the job to succeed") {
      let (data, _) = try await URLSession.shared.data(from: URL(string: "\(base)/v1/jobs/\(id)")!)
      return (try JSONSerialization.jsonObject(with: data) as? [String: Any])?["state"] as? String == "succeeded"
    }
    let (metrics, _) = try await URLSession.shared.data(from: URL(string: "\(base)/metrics")!)
    let text = String(decoding: metrics, as: UTF8.self)
    #expect(text.contains("nova_jobs_completed_total"))
    #expect(text.contains("nova_job_wait_seconds_bucket"))

    let file = URL(fileURLWithPath: dir).appendingPathComponent("metrics.txt")
    try metrics.write(to: file)
    let report = URL(fileURLWithPath: dir).appendingPathComponent("promtool.txt")
    let promtool = try ChildProcess("/bin/sh", ["-c", "promtool check metrics < '\(file.path)'"], standardOutput: report.path, standardError: report.path)
    let status = await promtool.waitForExit(timeout: .seconds(30))
    let complaint = (try? String(contentsOf: report, encoding: .utf8)) ?? ""
    #expect(status == 0, "promtool check metrics (install Debian's prometheus package): \(complaint)")

    server.signal(SIGTERM)
    #expect(await server.waitForExit() == 0)
  }
}
