import Foundation
import NovaCore
import NovaQueue
import NovaTestSupport
import Testing

/// `nova worker` with a job kinds file, as a real process.
@Suite("Job kinds in nova worker", .serialized, .timeLimit(.minutes(5)))
struct JobKindsProcessTests {
  /// SIGHUP reloads `nova-jobs.yaml`: a new kind runs; a bad file keeps the last good kinds, and
  /// the journal records both.
  @Test func sighupReloadsTheJobKinds() async throws {
    let dir = try TemporaryDirectory.make()
    let jobs = dir.appendingPathComponent("nova-jobs.yaml").path
    let first = "kinds:\n  first: {type: command, command: [/bin/echo, '{\"v\": 1}']}\n"
    try first.write(toFile: jobs, atomically: true, encoding: .utf8)
    let queue = try SQLiteJobQueue(path: dir.appendingPathComponent("nova.sqlite").path)
    let one: JobID = try await queue.enqueue(JobRequest(kind: "first"))
    let two: JobID = try await queue.enqueue(JobRequest(kind: "second"))
    let worker = try NovaProcess(["worker", "--data-dir", dir.path, "--jobs", jobs, "--workers", "2", "--poll-ms", "20"])
    defer { worker.signal(SIGKILL) }
    try await eventually("the first kind to run") { try await queue.get(one)?.state == .succeeded }
    // Before its handler is in place, SIGHUP would end the process (its default action).
    try await eventually("SIGHUP to be handled") { worker.stderr.contains("SIGHUP reloads: job kinds") }
    #expect(try await queue.get(two)?.state == .available, "a kind the worker does not run was taken")

    try "kinds:\n  first: {type: command, command: [/bin/echo], shell: true}\n".write(toFile: jobs, atomically: true, encoding: .utf8)
    worker.signal(SIGHUP)
    var journal = ""
    do {
      try await eventually("the failed reload to be journaled") {
        journal = try await NovaProcess.run(["journal", "show", "--data-dir", dir.path, "--kind", "jobs.", "--json"]).stdout
        return journal.contains("jobs.reload_failed") && journal.contains("unknown key 'shell'")
      }
    } catch {
      Issue.record("journal: \(journal); worker: \(worker.stderr)")
      throw error
    }
    let three: JobID = try await queue.enqueue(JobRequest(kind: "first"))
    try await eventually("the last good kinds to stay in force") { try await queue.get(three)?.state == .succeeded }

    try (first + "  second: {type: command, command: [/bin/echo, '{\"v\": 2}']}\n").write(toFile: jobs, atomically: true, encoding: .utf8)
    worker.signal(SIGHUP)
    do {
      try await eventually("the new kind to run") { try await queue.get(two)?.state == .succeeded }
    } catch {
      Issue.record("worker: \(worker.stderr); job: \(String(describing: try await queue.get(two)))")
      throw error
    }
    #expect(try await queue.get(two)?.result == Data(#"{"v": 2}"#.utf8))
    worker.signal(SIGTERM)
    #expect(await worker.waitForExit() == 0)
  }

  /// Issue #21 point 2: a worker killed with SIGKILL mid-command leaves no program running, nor a
  /// child the program forked that left its group, ignores SIGTERM and cleared its environment:
  /// the attempt's supervisor kills them when its worker dies, before the lease expires and the
  /// job runs again.
  @Test func aWorkerKilledMidCommandLeavesNoOrphanAndTheJobRunsAgain() async throws {
    let dir = try TemporaryDirectory.make()
    let pidFile = dir.appendingPathComponent("agent.pid").path
    let script = dir.appendingPathComponent("agent.py").path
    try """
    import json, os, signal, sys, time
    if os.environ["NOVA_JOB_ATTEMPT"] == "1":
        child = os.fork()
        if child == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            os.setsid()
            os.environ.clear()
            os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(600)"])
        open(sys.argv[1] + ".child", "w").write(str(child))
        open(sys.argv[1], "w").write(str(os.getpid()))
        time.sleep(600)
    print(json.dumps({"attempt": int(os.environ["NOVA_JOB_ATTEMPT"])}))
    """.write(toFile: script, atomically: true, encoding: .utf8)
    let jobs = dir.appendingPathComponent("nova-jobs.yaml").path
    try "kinds:\n  agent: {type: command, command: [python3, \(script), \(pidFile)]}\n".write(toFile: jobs, atomically: true, encoding: .utf8)
    let queue = try SQLiteJobQueue(path: dir.appendingPathComponent("nova.sqlite").path)
    let id: JobID = try await queue.enqueue(JobRequest(kind: "agent", maxAttempts: 3))
    let common = ["worker", "--data-dir", dir.path, "--jobs", jobs, "--workers", "1", "--lease-seconds", "1", "--poll-ms", "20"]
    let victim = try NovaProcess(common)
    defer { victim.signal(SIGKILL) }
    var pid: Int32 = 0
    try await eventually("the program to start") {
      pid = Int32((try? String(contentsOfFile: pidFile, encoding: .utf8)) ?? "") ?? 0
      return pid > 0
    }
    // A child that left the program's process group and ignores SIGTERM.
    let child = Int32((try? String(contentsOfFile: pidFile + ".child", encoding: .utf8)) ?? "") ?? 0
    #expect(child > 0)
    defer { if child > 0 { kill(child, SIGKILL) } }
    victim.signal(SIGKILL)
    _ = await victim.waitForExit()
    let killed = ContinuousClock.now
    try await eventually("the program to die with its worker", timeout: .seconds(10)) { !isProcessAlive(pid) }
    try await eventually("the escaped child to die with its worker", timeout: .seconds(10)) { !isProcessAlive(child) }
    // Before the lease (1 s) lets the next attempt start.
    #expect(ContinuousClock.now - killed < .seconds(1), "the escaped child outlived its worker by \(ContinuousClock.now - killed)")
    let rescuer = try NovaProcess(common)
    defer { rescuer.signal(SIGKILL) }
    try await eventually("the job to run again", timeout: .seconds(60)) { try await queue.get(id)?.state == .succeeded }
    #expect(try await queue.get(id)?.result == Data(#"{"attempt": 2}"#.utf8))
    rescuer.signal(SIGTERM)
    _ = await rescuer.waitForExit()
    // The output of the attempt that ran to its end is kept, under its number.
    let logs = try await NovaProcess.run(["jobs", "logs", id.rawValue, "--data-dir", dir.path])
    #expect(logs.code == 0)
    #expect(logs.stdout == "==> attempt 2 <==\n{\"attempt\": 2}\n")
    let second = try await NovaProcess.run(["jobs", "logs", id.rawValue, "--attempt", "2", "--follow", "--data-dir", dir.path])
    #expect(second.stdout == "{\"attempt\": 2}\n")
    #expect(try await NovaProcess.run(["jobs", "logs", JobID.generate().rawValue, "--data-dir", dir.path]).code != 0)
  }

  /// A bad `nova-jobs.yaml` in the data directory stops what runs or submits jobs (exit 2, with
  /// its line and column), while reading commands still work, so that it can be looked into.
  @Test func aBadJobsFileStopsServeWorkerAndEnqueueButNotReading() async throws {
    let dir = try TemporaryDirectory.make()
    try "kinds:\n  a: {type: command}\n".write(toFile: dir.appendingPathComponent("nova-jobs.yaml").path, atomically: true, encoding: .utf8)
    for command in [["enqueue", "noop"], ["worker"], ["serve", "--port", "0"]] {
      let run = try await NovaProcess.run(command + ["--data-dir", dir.path], timeout: .seconds(30))
      #expect(run.code == 2 && run.stderr.contains("nova-jobs.yaml:2:6: kinds.a: 'command' is required"), "\(command): \(run.stderr)")
    }
    #expect(try await NovaProcess.run(["jobs", "list", "--data-dir", dir.path]).code == 0)
  }

  /// SIGTERM answers long-polling claims at once (empty) and ends log follows, so neither a
  /// worker's idle poll nor someone watching a job holds the server's shutdown.
  @Test func shutdownAnswersWaitingClaimsAtOnce() async throws {
    let dir = try TemporaryDirectory.make()
    let token = try await NovaProcess.run(["tokens", "create", "--name", "w", "--role", "admin", "--data-dir", dir.path]).stdout
      .trimmingCharacters(in: .whitespacesAndNewlines)
    let queue = try SQLiteJobQueue(path: dir.appendingPathComponent("nova.sqlite").path)
    let waiting: JobID = try await queue.enqueue(JobRequest(kind: "noop", queue: "elsewhere"))
    let server = try NovaProcess(["serve", "--data-dir", dir.path, "--port", "0", "--workers", "0"])
    defer { server.signal(SIGKILL) }
    let port = try await server.listeningPort()
    let claim = Task {
      try await shell(
        """
        curl -s -X POST http://127.0.0.1:\(port)/v1/workers/claim -H 'Authorization: Bearer \(token)' \
          -d '{"worker":"w","wait_seconds":60}'
        """, timeout: .seconds(90))
    }
    // A job no worker takes (none runs here): its follow would last until it ends.
    let follow = Task {
      try await shell(
        "curl -s 'http://127.0.0.1:\(port)/v1/jobs/\(waiting.rawValue)/logs?follow=1' -H 'Authorization: Bearer \(token)'; echo \"exit $?\"",
        timeout: .seconds(90))
    }
    // Time for curl to start and its claim to find nothing and wait.
    try await Task.sleep(for: .seconds(2))
    let started = ContinuousClock.now
    server.signal(SIGTERM)
    #expect(await server.waitForExit(timeout: .seconds(30)) == 0)
    #expect(ContinuousClock.now - started < .seconds(10))
    let answer = try await claim.value
    #expect(answer.output == #"{"jobs":[]}"#, "\(answer.output)")
    #expect(try await follow.value.output == "exit 0\n")
  }

  /// A long-polling claim whose client went away claims nothing: a job enqueued after it stays
  /// available for a worker that is there (before, it was leased to the gone client and lost an
  /// attempt when the lease ran out).
  @Test func aClaimWhoseClientLeftTakesNoJob() async throws {
    let dir = try TemporaryDirectory.make()
    let jobs = dir.appendingPathComponent("nova-jobs.yaml").path
    try "kinds:\n  shout: {type: external}\n".write(toFile: jobs, atomically: true, encoding: .utf8)
    let token = try await NovaProcess.run(["tokens", "create", "--name", "w", "--role", "admin", "--data-dir", dir.path]).stdout
      .trimmingCharacters(in: .whitespacesAndNewlines)
    let server = try NovaProcess(["serve", "--data-dir", dir.path, "--port", "0", "--workers", "0", "--jobs", jobs])
    defer { server.signal(SIGKILL) }
    let port = try await server.listeningPort()
    let base = "http://127.0.0.1:\(port)"
    // The client gives up after 1 s of a 30 s wait.
    let gone = try await shell(
      "curl -s --max-time 1 -X POST \(base)/v1/workers/claim -H 'Authorization: Bearer \(token)' -d '{\"worker\":\"gone\",\"wait_seconds\":30}'")
    #expect(gone.code == 28, "\(gone.output)")
    try await Task.sleep(for: .milliseconds(300))
    let enqueued = try await shell(
      "curl -s -X POST \(base)/v1/jobs -H 'Authorization: Bearer \(token)' -d '{\"kind\":\"shout\",\"payload\":{\"text\":\"x\"}}'")
    let id = try #require(try JSONSerialization.jsonObject(with: Data(enqueued.output.utf8)) as? [String: Any])["id"] as? String
    try await Task.sleep(for: .seconds(1))
    let job = try await shell("curl -s \(base)/v1/jobs/\(id ?? "") -H 'Authorization: Bearer \(token)'")
    #expect(job.output.contains(#""state":"available""#) && job.output.contains(#""attempts":0"#), "\(job.output)")
    server.signal(SIGTERM)
    _ = await server.waitForExit()
  }

  /// A program that prints 100 MiB: its output is truncated and the worker's memory stays flat
  /// (its peak resident size, read from /proc after the job, stays far below what it printed).
  @Test func aHundredMegabytesOfOutputLeavesTheWorkersMemoryFlat() async throws {
    let dir = try TemporaryDirectory.make()
    let jobs = dir.appendingPathComponent("nova-jobs.yaml").path
    try """
    kinds:
      loud:
        type: command
        command: [python3, -c, "import sys\\nchunk = b'x' * (1 << 20)\\nfor _ in range(100): sys.stdout.buffer.write(chunk)\\nprint()\\nprint('{}')"]
    """.write(toFile: jobs, atomically: true, encoding: .utf8)
    let queue = try SQLiteJobQueue(path: dir.appendingPathComponent("nova.sqlite").path)
    let id: JobID = try await queue.enqueue(JobRequest(kind: "loud"))
    let worker = try NovaProcess(["worker", "--data-dir", dir.path, "--jobs", jobs, "--workers", "1", "--poll-ms", "20"])
    defer { worker.signal(SIGKILL) }
    try await eventually("the job to succeed", timeout: .seconds(60)) { try await queue.get(id)?.state == .succeeded }
    let status = try String(contentsOfFile: "/proc/\(worker.pid)/status", encoding: .utf8)
    let peakLine = try #require(status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") })
    let peakKiB = try #require(Int(peakLine.split(separator: " ").dropFirst().first ?? ""))
    #expect(peakKiB < 80 * 1024, "the worker peaked at \(peakKiB) KiB while its program printed 100 MiB")
    let kept = try await queue.logs(of: id, attempt: 1, after: 0, limit: 1000).reduce(0) { $0 + $1.data.count }
    #expect(kept < 2 << 20, "kept \(kept) bytes of output")
    worker.signal(SIGTERM)
    _ = await worker.waitForExit()
  }
}
