import Foundation
import NovaCore
import NovaQueue
import NovaRedis
import NovaRedisQueue
import NovaTestSupport
import Testing

#if canImport(FoundationNetworking)
  import FoundationNetworking
#endif

/// Real `nova worker` processes sharing a real `redis-server`.
@Suite("nova workers on Redis", .serialized, .enabled(if: TestServers.redisAvailable, TestServers.redisMissing), .timeLimit(.minutes(5)))
struct RedisProcessTests {
  func queue(_ server: RedisTestServer) throws -> RedisJobQueue {
    RedisJobQueue(configuration: .init(client: .init(url: try RedisURL(parsing: server.url), retryWindow: .seconds(30))))
  }

  func workerArguments(_ server: RedisTestServer, workers: Int = 4) -> [String] {
    ["worker", "--queue-url", server.url, "--workers", "\(workers)", "--lease-seconds", "1", "--poll-ms", "20", "--prefetch", "2"]
  }

  /// Issue #14 point 9: SIGTERM while Redis is down: the worker exits within its grace period
  /// plus 5 s (buffered leases are given back in one bounded call; what cannot be recorded
  /// expires and runs again).
  @Test func sigtermDuringARedisOutageExitsWithinTheGracePeriod() async throws {
    let server = try RedisTestServer()
    let queue = try queue(server)
    _ = try await queue.enqueue(
      batch: (0..<40).map { _ in JobRequest(kind: "sleep", payload: Data(#"{"ms":500}"#.utf8)) })
    let worker = try NovaProcess(workerArguments(server, workers: 2) + ["--shutdown-grace-seconds", "1"])
    defer { worker.signal(SIGKILL) }
    try await eventually("the worker to run jobs") { try await queue.stats().total(.running) >= 2 }
    queue.close()
    server.stop(kill: SIGKILL)
    let signalled = ContinuousClock.now
    worker.signal(SIGTERM)
    let code = await worker.waitForExit(timeout: .seconds(30))
    let took = ContinuousClock.now - signalled
    #expect(code != nil && took < .seconds(6), "exit \(String(describing: code)) after \(took); stderr: \(worker.stderr.suffix(3000))")
  }

  @Test func twoWorkersShareTheQueueAndOneKilledMidJobLosesNothing() async throws {
    let server = try RedisTestServer()
    defer { server.stop() }
    let queue = try queue(server)
    // Enough work (about 5 s on the eight slots) that jobs are still running when one worker
    // is killed, however late a loaded machine starts the second; jobs long enough (0.8 s) that
    // those the victim holds cannot all finish between the look and the kill on a loaded machine
    // (with 0.3 s they once did, and no job was seen to run again).
    let ids = try await queue.enqueue(
      batch: (0..<48).map { _ in
        JobRequest(kind: "sleep", payload: Data(#"{"ms":800}"#.utf8), maxAttempts: 5)
      }
    ).map(\.id)
    let first = try NovaProcess(workerArguments(server))
    let second = try NovaProcess(workerArguments(server))
    defer {
      first.signal(SIGKILL)
      second.signal(SIGKILL)
    }
    // Both workers hold running jobs (on a loaded machine one may start well after the other),
    // and the first has finished some (else, when both start at once, it is killed before it
    // completes anything and only the second is seen to complete jobs).
    try await eventually("both workers to run jobs", timeout: .seconds(60)) {
      let owners = try await queue.list(JobFilter(state: .running, limit: 100)).jobs.compactMap(\.leaseOwner)
      let done = try await queue.list(JobFilter(state: .succeeded, limit: 100)).jobs.compactMap(\.leaseOwner)
      return owners.contains { $0.contains("-\(first.pid)-") } && owners.contains { $0.contains("-\(second.pid)-") }
        && done.contains { $0.contains("-\(first.pid)-") }
    }
    let killedPID = first.pid
    // What the worker holds as it is killed (its id is host-pid-random). After the kill, these
    // leases expire within a second and the other worker's reaper requeues them, which on a
    // loaded machine can happen before this test looks again: so they are taken before.
    let held = try await queue.list(JobFilter(state: .running, limit: 100)).jobs
      .filter { $0.leaseOwner?.contains("-\(killedPID)-") == true }
    first.signal(SIGKILL)
    _ = await first.waitForExit()
    #expect(!held.isEmpty, "the kill should leave jobs mid-run; killed \(killedPID)")
    try await eventually("every job to succeed", timeout: .seconds(90)) {
      try await queue.stats().total(.succeeded) == ids.count
    }
    second.signal(SIGTERM)
    #expect(await second.waitForExit() == 0)
    var owners = Set<String>()
    for id in ids {
      let job = try #require(try await queue.get(id))
      #expect(job.state == .succeeded)
      if let owner = job.leaseOwner { owners.insert(owner) }
    }
    #expect(owners.count == 2, "both workers completed jobs: \(owners)")
    // Jobs the killed worker held ran again elsewhere (any it finished in the instant before the
    // kill keep its name); those it had only claimed ahead got their attempt back.
    var rerun = 0
    for job in held {
      let after = try #require(try await queue.get(job.id))
      #expect(after.state == .succeeded && after.attempts >= 1)
      if after.leaseOwner != job.leaseOwner {
        rerun += 1
        #expect(after.fencingToken > job.fencingToken)
      }
    }
    #expect(rerun >= 1, "no job the killed worker held ran elsewhere")
    let stats = try await queue.stats()
    #expect(stats.total(.dead) == 0 && stats.total(.running) == 0 && stats.total(.available) == 0)
    queue.close()
  }

  @Test func redisRestartedMidRunIsSurvived() async throws {
    let server = try RedisTestServer(appendOnly: true)
    defer { server.stop() }
    let queue = try queue(server)
    let ids = try await queue.enqueue(
      batch: (0..<60).map { _ in
        JobRequest(kind: "sleep", payload: Data(#"{"ms":50}"#.utf8), maxAttempts: 10)
      }
    ).map(\.id)
    let worker = try NovaProcess(workerArguments(server))
    defer { worker.signal(SIGKILL) }
    try await eventually("some jobs to finish", timeout: .seconds(60)) {
      try await queue.stats().total(.succeeded) >= 10
    }
    server.stop()
    try await Task.sleep(for: .milliseconds(700))
    try server.start()
    try await eventually("every job to succeed after the restart", timeout: .seconds(90)) {
      try await queue.stats().total(.succeeded) == ids.count
    }
    worker.signal(SIGTERM)
    #expect(await worker.waitForExit() == 0)
    for id in ids { #expect(try await queue.get(id)?.state == .succeeded) }
    queue.close()
  }

  @Test func cliTalksToRedis() async throws {
    let server = try RedisTestServer()
    defer { server.stop() }
    let enqueue = try await NovaProcess.run(["enqueue", "echo", "--payload", #"{"x":1}"#, "--queue-url", server.url])
    #expect(enqueue.code == 0, "\(enqueue.stderr)")
    let id = enqueue.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    let show = try await NovaProcess.run(["jobs", "show", id, "--queue-url", server.url])
    #expect(show.stdout.contains("\"state\" : \"available\""))
    let stats = try await NovaProcess.run(["jobs", "stats", "--json", "--queue-url", server.url])
    #expect(stats.stdout.contains("\"available\" : 1"))
    let bench = try await NovaProcess.run(["bench", "queue", "--backend", server.url, "--jobs", "500", "--workers", "4", "--json"])
    #expect(bench.code == 0, "\(bench.stderr)")
    let figures = try #require(try JSONSerialization.jsonObject(with: Data(bench.stdout.utf8)) as? [String: Any])
    #expect(figures["backend"] as? String == "redis")
    #expect(figures["lost"] as? Int == 0)
    #expect(figures["duplicate_completions"] as? Int == 0)
    let unreachable = try await NovaProcess.run(["jobs", "list", "--queue-url", "redis://127.0.0.1:\(try FreePort.find())"])
    #expect(unreachable.code == 1)
    #expect(unreachable.stderr.contains("cannot reach redis"))
    let badURL = try await NovaProcess.run(["jobs", "list", "--queue-url", "postgres://x"])
    #expect(badURL.code == 2)
    #expect(badURL.stderr.contains("--queue-url"))
  }

  @Test func serveOnRedisAuditsEveryTransition() async throws {
    let server = try RedisTestServer()
    defer { server.stop() }
    let dir = try TemporaryDirectory.make().path
    let token = try await NovaProcess.run(["tokens", "create", "--name", "ops", "--role", "operator", "--data-dir", dir])
    let bearer = "Bearer " + token.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    let serve = try NovaProcess(["serve", "--port", "0", "--queue-url", server.url, "--data-dir", dir, "--workers", "2", "--poll-ms", "20"])
    defer { serve.signal(SIGKILL) }
    let port = try await serve.listeningPort()
    var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)/v1/jobs")!)
    request.httpMethod = "POST"
    request.httpBody = Data(#"{"kind":"echo","payload":{"n":1}}"#.utf8)
    request.setValue(bearer, forHTTPHeaderField: "Authorization")
    let (body, response) = try await URLSession.shared.data(for: request)
    #expect((response as? HTTPURLResponse)?.statusCode == 201)
    let id = try #require((try JSONSerialization.jsonObject(with: body) as? [String: Any])?["id"] as? String)
    let queue = try queue(server)
    defer { queue.close() }
    try await eventually("the job to succeed") { try await queue.get(JobID(id))?.state == .succeeded }
    serve.signal(SIGTERM)
    #expect(await serve.waitForExit() == 0)

    // The server moved the records from Redis into the signed log on its way out.
    #expect(try await queue.pendingTransitionCount() == 0)
    let log = try await NovaProcess.run(["audit", "list", "--json", "--queue-url", server.url, "--data-dir", dir])
    let events = try #require(try JSONSerialization.jsonObject(with: Data(log.stdout.utf8)) as? [[String: Any]])
    let forJob = events.filter { $0["subject"] as? String == id }
    #expect(forJob.compactMap { $0["event"] as? String } == ["job.enqueued", "job.claimed", "job.completed"])
    #expect(forJob.first?["actor"] as? String == "token:ops")
    #expect((forJob.dropFirst().first?["actor"] as? String)?.hasPrefix("worker:") == true)
    let coverage = try await NovaProcess.run(["audit", "coverage", "--json", "--queue-url", server.url, "--data-dir", dir])
    #expect(coverage.stdout.contains(#""ratio" : 1"#), "\(coverage.stdout)\(coverage.stderr)")
    let verify = try await NovaProcess.run(["audit", "verify", "--queue-url", server.url, "--data-dir", dir])
    #expect(verify.code == 0, "\(verify.stderr)")
  }

  /// Issue #21: one `nova serve` per Redis. A second is refused, naming the first; after the
  /// first is killed, a new one waits for its lock to lapse and starts; one that stops cleanly
  /// gives the lock back.
  @Test func aSecondServeOnTheSameRedisIsRefusedNamingTheFirst() async throws {
    let server = try RedisTestServer()
    defer { server.stop() }
    func serve() throws -> NovaProcess {
      let dir = try TemporaryDirectory.make().path
      return try NovaProcess(["serve", "--port", "0", "--queue-url", server.url, "--data-dir", dir, "--workers", "0"])
    }
    let first = try serve()
    defer { first.signal(SIGKILL) }
    _ = try await first.listeningPort()
    let second = try serve()
    defer { second.signal(SIGKILL) }
    let code = await second.waitForExit(timeout: .seconds(60))
    #expect(code == 1, "\(second.stderr)")
    #expect(second.stderr.contains("error: another nova serve (host "), "\(second.stderr)")
    #expect(second.stderr.contains("pid \(first.pid), started"), "\(second.stderr)")
    #expect(second.stderr.contains("run one nova serve per Redis"), "\(second.stderr)")
    #expect(!second.stderr.contains("listening on http://"), "\(second.stderr)")

    first.signal(SIGKILL)
    _ = await first.waitForExit()
    let third = try serve()
    defer { third.signal(SIGKILL) }
    _ = try await third.listeningPort()
    #expect(third.stderr.contains("watching it"), "\(third.stderr)")
    third.signal(SIGTERM)
    #expect(await third.waitForExit() == 0, "\(third.stderr)")
    let raw = try RedisClient(url: server.url)
    defer { raw.close() }
    #expect(try await raw.send("GET", "nova:serve-lock").isNull)
  }
}
