import Foundation
import Logging
import NovaBenchmarks
import NovaCore
import NovaPolicy
import NovaQueue
import NovaRedis
import NovaRedisQueue
import NovaSecurity
import NovaTestSupport
import Testing

/// Each benchmark behind `nova bench` runs small and reports figures that make sense.
@Suite("Benchmarks", .serialized, .timeLimit(.minutes(5)))
struct BenchmarkTests {
  /// Issue #24: the SQLite ceiling runs every lifecycle it was asked for, and inserts alone are
  /// faster than whole lifecycles.
  @Test func theSQLiteCeilingRunsEveryLifecycle() throws {
    let path = try TemporaryDirectory.make().appendingPathComponent("ceiling.sqlite").path
    let result = try SQLiteCeilingBenchmark.run(path: path, jobs: 1_050, batch: 100)
    #expect(result.jobs == 1_050 && result.batch == 100)
    #expect(result.jobs_per_s > 0 && result.inserts_per_s > result.jobs_per_s)
    #expect(SQLiteCeilingBenchmark.median([result, result, result]) == result)
  }

  /// Issue #24: the HTTP load generator keeps its connections busy, sends the request as given
  /// and counts the answers by status.
  @Test func theHTTPLoadGeneratorSendsTheRequestOnEveryConnection() async throws {
    let receiver = try await LocalHTTPReceiver()
    receiver.setDefault(status: 201, body: #"{"id":"x"}"#)
    let request = try #require(
      HTTPLoadBenchmark.Request(
        url: receiver.url + "/v1/jobs", method: "POST", headers: [("Authorization", "Bearer t")], body: Array(#"{"kind":"echo"}"#.utf8)))
    // A window in which nothing was answered (a machine busy with every other suite) says
    // nothing about what is sent and counted: the run is tried again, three times at most.
    var result = try await HTTPLoadBenchmark.run(request, connections: 3, duration: .milliseconds(500), warmup: .milliseconds(100))
    for _ in 0..<2 where result.requests == 0 {
      result = try await HTTPLoadBenchmark.run(request, connections: 3, duration: .seconds(1), warmup: .milliseconds(100))
    }
    #expect(result.requests > 0 && result.requests_per_s > 0)
    #expect(result.statuses == ["201": result.requests])
    #expect(result.p50_ms <= result.p99_ms && result.p99_ms <= result.max_ms)
    let sent = receiver.requests
    #expect(sent.allSatisfy { $0.method == "POST" && $0.path == "/v1/jobs" && $0.header("Authorization") == "Bearer t" })
    #expect(sent.first?.text == #"{"kind":"echo"}"#)
    #expect(HTTPLoadBenchmark.median([result, result]).requests_per_s == result.requests_per_s)
    #expect(HTTPLoadBenchmark.Request(url: "ftp://host/x", method: "GET") == nil)
    await #expect(throws: (any Error).self) {
      _ = try await HTTPLoadBenchmark.run(
        try #require(HTTPLoadBenchmark.Request(url: "http://127.0.0.1:1/", method: "GET")), connections: 1, duration: .milliseconds(10))
    }
  }

  @Test func queueBenchmarkLosesNothing() async throws {
    let path = try TemporaryDirectory.make().appendingPathComponent("bench.sqlite").path
    let result = try await QueueBenchmark.run(
      queue: try SQLiteJobQueue(path: path), backend: "sqlite",
      options: .init(jobs: 500, workers: 4, payloadBytes: 100, enqueueBatch: 64), logger: .init(label: "bench"))
    #expect(result.jobs == 500)
    #expect(result.lost == 0)
    #expect(result.duplicate_completions == 0)
    #expect(result.e2e_per_s > 0)
    #expect(result.p99_ms >= result.p50_ms)
    let median = QueueBenchmark.median([result, result, result])
    #expect(median.e2e_per_s == result.e2e_per_s)
    // Issue #24: the rate and the memory by tenth of the jobs, so that a long run shows whether it holds up.
    let rates = try #require(result.tenths_per_s)
    #expect(rates.count == 10 && rates.allSatisfy { $0 > 0 }, "\(rates)")
    let memory = try #require(result.rss_mib_by_tenth)
    #expect(memory.count == 10 && memory.allSatisfy { $0 > 1 }, "\(memory)")
    #expect((result.peak_rss_mib ?? 0) >= memory.max() ?? .infinity)
    #expect(result.last_to_first_tenth == rates[9] / rates[0])
    #expect(median.tenths_per_s == rates && median.rss_mib_by_tenth == memory)
  }

  /// Issue #24: `--backlog` enqueues every job first and times the burn-down alone.
  @Test func queueBenchmarkBurnsDownABacklog() async throws {
    let path = try TemporaryDirectory.make().appendingPathComponent("bench.sqlite").path
    var options = QueueBenchmark.Options(jobs: 300, workers: 4, payloadBytes: 16, enqueueBatch: 50)
    options.backlog = true
    let result = try await QueueBenchmark.run(
      queue: try SQLiteJobQueue(path: path), backend: "sqlite", options: options, logger: .init(label: "bench"))
    #expect(result.backlog == true && result.lost == 0 && result.duplicate_completions == 0)
    // Timed from the workers' start: the burn-down took less than the whole run.
    #expect(result.e2e_per_s > Double(result.jobs) / result.elapsed_s)
    #expect(result.tenths_per_s?.count == 10)
  }

  /// Issue #24: on Redis, the server's own CPU time and commands per job, from INFO around the run.
  @Test(.enabled(if: TestServers.redisAvailable, TestServers.redisMissing))
  func queueBenchmarkReportsRedisOwnCost() async throws {
    let url = try RedisURL(parsing: RedisTestServer.shared.url)
    let queue = RedisJobQueue(configuration: .init(client: .init(url: url), keyPrefix: "bench-\(UUID().uuidString.prefix(6))"))
    let server = RedisClient(configuration: .init(url: url))
    defer {
      queue.close()
      server.close()
    }
    var options = QueueBenchmark.Options(jobs: 200, workers: 4, payloadBytes: 16, enqueueBatch: 50)
    options.redisServer = server
    let result = try await QueueBenchmark.run(queue: queue, backend: "redis", options: options, logger: .init(label: "bench"))
    try await queue.deleteAllKeys()
    #expect(result.lost == 0)
    let scripts = try #require(result.redis_scripts_per_job)
    let calls = try #require(result.redis_calls_per_job)
    // Each job is enqueued, claimed and completed by scripts (in batches), which call more inside.
    #expect(scripts > 0 && calls > scripts, "\(scripts) scripts, \(calls) commands per job")
    #expect((result.redis_cpu_ms_per_job ?? -1) >= 0)
    #expect(QueueBenchmark.median([result]).redis_calls_per_job == calls)
  }

  @Test func redisServerLoadReadsInfoAndNamesWhatIsMissing() throws {
    let info =
      "# CPU\r\nused_cpu_sys:1.5\r\nused_cpu_user:2.25\r\n# Stats\r\ntotal_commands_processed:40\r\n"
      + "# Commandstats\r\ncmdstat_hset:calls=12,usec=30,usec_per_call=2.5\r\ncmdstat_evalsha:calls=8,usec=90\r\n"
    let load = try RedisServerLoad.parse(info)
    #expect(load == RedisServerLoad(cpuSeconds: 3.75, scripts: 8, calls: 20))
    #expect(
      load.since(RedisServerLoad(cpuSeconds: 1, scripts: 2, calls: 5)) == RedisServerLoad(cpuSeconds: 2.75, scripts: 6, calls: 15))
    #expect(throws: RedisServerLoadError.self) { try RedisServerLoad.parse("used_cpu_sys:1\r\n") }
    #expect((try? RedisServerLoad.parse("used_cpu_sys:1\r\nused_cpu_user:x\r\n")) == nil)
  }

  /// Open-loop arrivals count from each job's due instant, even when the loop is held back (here
  /// by a cap of one enqueue in flight, so every arrival waits for the one before it).
  @Test func steadyArrivalsCountFromTheirDueInstant() async throws {
    let path = try TemporaryDirectory.make().appendingPathComponent("arrive.sqlite").path
    let queue = try SQLiteJobQueue(path: path)
    let rate = 100_000.0
    let arrivals = try await QueueBenchmark.arrive(
      jobs: 30, rate: rate, request: { _ in JobRequest(kind: "k") }, queue: queue, maxInFlight: 1)
    #expect(Set(arrivals.map(\.id)).count == 30)
    let instants = arrivals.map(\.at).sorted()
    for (index, instant) in instants.enumerated() {
      let offset = instant - instants[0]
      #expect(abs((offset - .seconds(Double(index) / rate)).seconds) < 1e-6, "arrival \(index) at \(offset)")
    }
    // The sends fell behind (each waited for the enqueue before it), which the achieved rate shows.
    let sends = arrivals.map(\.sent).sorted()
    #expect(sends[29] - sends[0] > instants[29] - instants[0])
    #expect(arrivals.allSatisfy { $0.stored >= $0.sent && $0.sent >= $0.at })
  }

  /// Issue #24: the generator woke for every arrival (a timer every 45 µs at 22,000 a second, more
  /// CPU than the enqueues on the machine under test). It wakes once per quantum and sends what
  /// fell due, each job still counted from its own instant: here 10 ms windows at 10,000 a
  /// second, so jobs go out late by about half a window on average, never early.
  @Test func steadyArrivalsWakeOncePerQuantum() async throws {
    let path = try TemporaryDirectory.make().appendingPathComponent("quantum.sqlite").path
    let queue = try SQLiteJobQueue(path: path)
    let arrivals = try await QueueBenchmark.arrive(
      jobs: 400, rate: 10_000, request: { _ in JobRequest(kind: "k") }, queue: queue, wakeQuantum: .milliseconds(10))
    #expect(arrivals.count == 400)
    let late = arrivals.map { ($0.sent - $0.at).seconds * 1000 }
    #expect(late.allSatisfy { $0 >= 0 })
    let mean = late.reduce(0, +) / Double(late.count)
    #expect(mean > 2, "mean lateness \(mean) ms")
    let sends = arrivals.map(\.sent).sorted()
    let wakes = 1 + zip(sends, sends.dropFirst()).filter { $1 - $0 > .milliseconds(3) }.count
    #expect(wakes <= 6, "\(wakes) wakes")
  }

  /// The start recorder holds every job's start without its table growing while jobs run (a
  /// doubling rehashed every id under the handlers' lock: a stall of every start).
  @Test func startRecorderHoldsEveryStartWithoutGrowing() {
    let recorder = StartRecorder(reserving: 50_000)
    let capacity = recorder.capacity
    #expect(capacity >= 50_000)
    for index in 0..<50_000 {
      recorder.begin(JobID("job-\(index)"))
      recorder.end()
    }
    #expect(recorder.capacity == capacity && recorder.starts.count == 50_000 && recorder.mostRunning == 1)
  }

  /// A steady run's start figures leave out the warm-up's jobs, and its p99 over every job keeps them.
  @Test func steadyStartFiguresLeaveOutTheWarmUp() throws {
    let base = ContinuousClock.now
    var arrivals: [QueueBenchmark.Arrival] = []
    var started: [JobID: ContinuousClock.Instant] = [:]
    for index in 0..<100 {
      let at = base + .milliseconds(index)
      let id = JobID("job-\(index)")
      arrivals.append((id: id, at: at, sent: at, stored: at + .microseconds(500)))
      // The first ten start 50 ms late (a cold process), the rest 1 ms after they arrive.
      started[id] = at + (index < 10 ? .milliseconds(50) : .milliseconds(1))
    }
    let blank =
      #"{"backend":"sqlite","jobs":100,"workers":1,"payload_bytes":0,"enqueue_per_s":0,"e2e_per_s":0,"p50_ms":0,"p99_ms":0,"lost":0,"duplicate_completions":0,"elapsed_s":0,"kind":"in-process","processes":0}"#
    var warm = try JSONDecoder().decode(QueueBenchmark.Result.self, from: Data(blank.utf8))
    QueueBenchmark.setStartFigures(of: arrivals, started: started, warmup: .milliseconds(10), in: &warm)
    let p99 = try #require(warm.start_p99_ms)
    let all = try #require(warm.start_p99_all_ms)
    #expect(abs(p99 - 1) < 0.01 && abs(all - 50) < 0.01, "p99 \(p99) ms after the warm-up, \(all) ms over every job")
    #expect(warm.warmup_s == 0.01 && abs((warm.pickup_p99_ms ?? 0) - 0.5) < 0.01 && abs((warm.enqueue_p99_ms ?? 0) - 0.5) < 0.01)
    var cold = try JSONDecoder().decode(QueueBenchmark.Result.self, from: Data(blank.utf8))
    QueueBenchmark.setStartFigures(of: arrivals, started: started, warmup: .zero, in: &cold)
    #expect(cold.start_p99_ms.map { abs($0 - 50) < 0.01 } == true && cold.start_p99_all_ms == cold.start_p99_ms)
    #expect(cold.arrival_per_s.map { abs($0 - 1000) < 1 } == true)
  }

  /// Each tenth of the jobs is marked once, in order, even when one batch of completions crosses several.
  @Test func completionCountingMarksEachTenthOnce() async throws {
    let path = try TemporaryDirectory.make().appendingPathComponent("count.sqlite").path
    let queue = CompletionCountingQueue(try SQLiteJobQueue(path: path), tenthsOf: 20)
    let ids = try await queue.enqueue(batch: Array(repeating: JobRequest(kind: "k"), count: 20)).map(\.id)
    for size in [1, 5, 14] {
      let leases = try await queue.claim(queues: [], worker: "w", leaseDuration: .seconds(30), limit: size)
      _ = try await queue.complete(batch: leases.map { JobCompletion(lease: $0, result: nil) })
    }
    #expect(queue.tenths.map(\.count) == [6, 6, 6, 20, 20, 20, 20, 20, 20, 20])
    #expect(queue.completedCount == 20 && queue.duplicateCompletions == 0)
    #expect(Set(queue.completions.keys) == Set(ids))
  }

  /// Issue #15: `--kind command` runs each job as a program (the cost of spawning).
  @Test func queueBenchmarkRunsACommandKind() async throws {
    let path = try TemporaryDirectory.make().appendingPathComponent("bench.sqlite").path
    var options = QueueBenchmark.Options(jobs: 60, workers: 4, payloadBytes: 16, enqueueBatch: 30)
    options.command = ["/bin/true"]
    let result = try await QueueBenchmark.run(
      queue: try SQLiteJobQueue(path: path), backend: "sqlite", options: options, logger: .init(label: "bench"))
    #expect(result.kind == "command" && result.processes == 60)
    #expect(result.lost == 0 && result.duplicate_completions == 0 && result.e2e_per_s > 0)
  }

  /// Issue #21 point 1: `--rate` enqueues jobs one at a time and reports how soon each one starts.
  @Test func queueBenchmarkMeasuresStartsOfSteadyArrivals() async throws {
    let path = try TemporaryDirectory.make().appendingPathComponent("bench.sqlite").path
    // About five jobs run at once (50 ms each, one every 10 ms): eight workers leave slots free.
    var options = QueueBenchmark.Options(jobs: 40, workers: 8, payloadBytes: 16)
    options.rate = 100
    options.jobDuration = .milliseconds(50)
    let result = try await QueueBenchmark.run(
      queue: try SQLiteJobQueue(path: path), backend: "sqlite", options: options, logger: .init(label: "bench"))
    #expect(result.lost == 0 && result.duplicate_completions == 0)
    #expect(result.rate_per_s == 100 && result.job_ms == 50)
    let p50 = try #require(result.start_p50_ms)
    let p99 = try #require(result.start_p99_ms)
    // The target is 50 ms p99 on the benchmark machine; a loaded CI machine gets more, still far
    // below what a job waiting for another's end would cost.
    #expect(p50 <= p99 && p99 < 3000, "enqueue to start: p50 \(p50) ms, p99 \(p99) ms")
    // Its parts: the store's, and the pickup's, which is at most the whole (a job can start
    // before its enqueue returns, so the store's may not be).
    let stored = try #require(result.enqueue_p99_ms)
    let pickedUp = try #require(result.pickup_p99_ms)
    #expect(stored >= 0 && pickedUp >= 0 && pickedUp <= p99, "stored \(stored), picked up \(pickedUp), start \(p99)")
    // A job lasts five arrivals' time, so free slots must have run several at once.
    #expect((result.max_running ?? 0) >= 2)
    #expect((result.arrival_per_s ?? 0) > 0)
    let median = QueueBenchmark.median([result, result, result])
    #expect(median.start_p99_ms == p99 && median.max_running == result.max_running)
    // The writer's commits: a free slot's claim waits for the next job and is served in the
    // commit that stores it, so a job takes its enqueue's, its completion's and the pool's next
    // claim's, which finds nothing and waits (four, were the claim not served at the enqueue;
    // more than four when every job's end ended the claims' wait).
    let commits = try #require(result.sqlite_commits_per_job)
    let operations = try #require(result.sqlite_operations_per_commit)
    #expect(commits > 0 && commits < 3.5 && operations >= 1, "\(commits) commits per job, \(operations) operations per commit")
    // The writer works a share of the run: jobs were written, and never longer than the run.
    let busy = try #require(result.sqlite_writer_busy)
    #expect(busy > 0 && busy <= 1, "writer busy \(busy)")
    #expect(median.sqlite_commits_per_job == commits)
  }

  /// Issue #14 point 8: jobs due at one instant are all promoted, in bounded batches, while a
  /// heartbeat keeps answering.
  @Test func promotionBenchmarkPromotesEveryDueJobWhileHeartbeating() async throws {
    let clock = PromotionBenchmark.WarpClock()
    let path = try TemporaryDirectory.make().appendingPathComponent("bench.sqlite").path
    let queue = try SQLiteJobQueue(configuration: .init(path: path, clock: clock))
    let result = try await PromotionBenchmark.run(queue: queue, clock: clock, backend: "sqlite", jobs: 2500)
    #expect(result.jobs == 2500 && result.heartbeats >= 1 && result.promote_s > 0)
    #expect(try await queue.stats().count(queue: "due", state: .scheduled) == 0)
    #expect(result.heartbeat_max_ms >= result.heartbeat_p50_ms && result.peak_rss_mb > 0)
    var slower = result
    slower.promote_s *= 3
    #expect(PromotionBenchmark.median([result, slower, result]).promote_s == result.promote_s)
  }

  @Test(.enabled(if: TestServers.opaAvailable, TestServers.opaMissing)) func policyBenchmarkTimesEveryPath() async throws {
    let server = try OPATestServer(policies: ["authz.rego": "package nova.authz\n\ndefault allow := false\n"])
    defer { server.stop() }
    let result = await PolicyBenchmark.run(rules: 50, samples: 200, opa: (server.url, "nova/authz/allow"), window: .milliseconds(20))
    #expect(result.rules == 50 && result.cached.samples == 200 && result.uncached_local.samples == 200)
    #expect(result.cached.p50_us > 0 && result.cached.p50_us <= result.cached.p99_us)
    #expect(result.opa?.samples == 200 && result.concurrency.map(\.callers) == [1, 2, 4, 8])
    #expect(result.concurrency.allSatisfy { $0.decisions_per_s > 0 })
    #expect(PolicyBenchmark.document(rules: 100).rules.count == 100)
  }

  @Test func kpiBenchmarkIngestsAndQueries() async throws {
    let directory = try TemporaryDirectory.make("nova-kpi-bench")
    let result = try await KPIBenchmark.run(samples: 20_000, batch: 500, directory: directory)
    #expect(result.samples == 20_000 && result.ingest_per_s > 0 && result.query_rows > 0 && result.query_p50_ms <= result.query_p99_ms)
  }

  @Test func alertBenchmarkTimesEvaluationsAndPagesWithoutDuplicates() async throws {
    let directory = try TemporaryDirectory.make("nova-alert-bench")
    let result = try await AlertBenchmark.run(rules: 300, runs: 2, pages: 3, directory: directory)
    #expect(result.rules == 300 && result.firing_alerts == 3 && result.pages == 3 && result.duplicate_pages == 0)
    #expect(result.evaluation_ms.p50 > 0 && result.page_latency_ms.max >= result.page_latency_ms.p50 && result.evaluation_interval_s == 10)
    #expect(AlertBenchmark.Figures([3, 1, 2]) == AlertBenchmark.Figures([1, 2, 3]) && AlertBenchmark.Figures([1, 2, 3]).p50 == 2)
  }

  @Test func auditBenchmarkFillsCheckpointsVerifiesAndExports() async throws {
    let directory = try TemporaryDirectory.make("nova-audit-bench")
    let result = try await AuditBenchmark.run(entries: 3000, directory: directory)
    #expect(result.entries == 3000 && result.fill_per_s > 0 && result.bundle_bytes > 0 && result.database_bytes > 0)
    #expect(result.checkpoint_s >= 0 && result.verify_s >= 0 && result.export_s >= 0 && result.bundle_verify_s >= 0)
    #expect(result.peak_rss_mb_after_export >= result.peak_rss_mb_after_fill)
    let median = AuditBenchmark.median([result, result, result])
    #expect(median.entries == 3000 && median.fill_per_s == result.fill_per_s)
  }
}
