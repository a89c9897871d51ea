import Foundation
import Logging
import NovaBenchmarks
import NovaCore
import NovaJobKinds
import NovaQueue
import NovaTestSupport
import Testing

/// `type: http` kinds call a real local endpoint that records what it receives.
@Suite("HTTP job kinds", .serialized, .timeLimit(.minutes(5)))
struct HTTPJobRunnerTests {
  let context = JobContext(
    id: JobID("01a2b3c4-0000-7000-8000-000000000002"), queue: "default", kind: "notify", attempt: 3, maxAttempts: 5,
    logger: Logger(label: "test"))

  func runner(_ url: String, kind: HTTPKind? = nil, environment: [String: String] = ["AGENT_TOKEN": "t0k", "AGENT_SECRET": "k3y"])
    -> HTTPJobRunner
  {
    var kind = kind ?? HTTPKind(url: url)
    kind.url = url
    return HTTPJobRunner(name: "notify", kind: kind, timeout: .seconds(5), environment: environment)
  }

  @Test func thePayloadIsPostedSignedAndTheJSONAnswerIsTheResult() async throws {
    let receiver = try await LocalHTTPReceiver()
    receiver.setDefault(status: 200, body: #"{"answer": 42, "big": 12345678901234567890}"#)
    let kind = HTTPKind(url: "", headers: ["X-Team": "ml"], headersEnv: ["Authorization": "AGENT_TOKEN"], secretEnv: "AGENT_SECRET")
    let payload = Data(#"{"question":"life"}"#.utf8)
    let result = try await runner(receiver.url + "/run", kind: kind).handle(payload: payload, context: context)
    #expect(result == Data(#"{"answer": 42, "big": 12345678901234567890}"#.utf8))
    let request = try #require(try await receiver.waitForRequests(1).first)
    #expect(request.method == "POST" && request.path == "/run" && request.body == Array(payload))
    #expect(request.header("X-Nova-Job-Id") == context.id.rawValue && request.header("X-Nova-Job-Kind") == "notify")
    #expect(request.header("X-Nova-Job-Attempt") == "3" && request.header("X-Team") == "ml" && request.header("Authorization") == "t0k")
    let timestamp = try #require(request.header("X-Nova-Timestamp").flatMap { Int($0) })
    #expect(abs(timestamp - Int(Date().timeIntervalSince1970)) < 60)
    #expect(request.header("X-Nova-Signature") == HTTPJobRunner.signature(secret: "k3y", timestamp: timestamp, body: payload))
    #expect(HTTPJobRunner.signature(secret: "k3y", timestamp: timestamp, body: payload).hasPrefix("sha256="))
  }

  @Test func temporaryFailuresAreRetriedAndOthersDeadLettered() async throws {
    let receiver = try await LocalHTTPReceiver()
    receiver.script([(500, "model server down"), (408, "slow"), (429, "7"), (429, "busy"), (404, "no such agent"), (302, "http://elsewhere/")])
    let call = runner(receiver.url + "/run")
    let payload = Data("{}".utf8)
    await #expect(throws: CommandFailure.self) { try await call.handle(payload: payload, context: context) }
    await #expect(throws: CommandFailure.self) { try await call.handle(payload: payload, context: context) }
    do {
      _ = try await call.handle(payload: payload, context: context)
      Issue.record("a 429 succeeded")
    } catch let error as RetryLaterJobError {
      #expect(error.delay == .seconds(7) && error.message.contains("429"))
    }
    await #expect(throws: CommandFailure.self) { try await call.handle(payload: payload, context: context) }
    do {
      _ = try await call.handle(payload: payload, context: context)
      Issue.record("a 404 succeeded")
    } catch let error as NonRetryableJobError {
      #expect(error.message.contains("answered 404: no such agent"))
    }
    do {
      _ = try await call.handle(payload: payload, context: context)
      Issue.record("a redirect succeeded")
    } catch let error as NonRetryableJobError {
      #expect(error.message.contains("redirect to http://elsewhere/") && error.message.contains("not followed"))
    }
    #expect(try await receiver.waitForRequests(6).count == 6, "a redirect was followed")
  }

  /// A result too large to keep dead-letters (retrying would repeat what the agent did).
  @Test func anOversizedResultIsNotRetried() async throws {
    let receiver = try await LocalHTTPReceiver()
    receiver.setDefault(status: 200, body: "\"" + String(repeating: "x", count: 5 << 20) + "\"")
    await #expect(throws: NonRetryableJobError.self) {
      try await runner(receiver.url + "/run").handle(payload: Data("{}".utf8), context: context)
    }
  }

  @Test func aClosedPortIsRetriedAndAMissingSecretRefused() async throws {
    await #expect(throws: CommandFailure.self) {
      try await runner("http://127.0.0.1:1/run").handle(payload: Data("{}".utf8), context: context)
    }
    let kind = HTTPKind(url: "", secretEnv: "NOT_SET")
    await #expect(throws: NonRetryableJobError.self) {
      try await runner("http://127.0.0.1:1/run", kind: kind, environment: [:]).handle(payload: Data("{}".utf8), context: context)
    }
  }

  /// A 429's Retry-After reaches the queue: the retry waits that long, not the backoff.
  @Test func retryAfterSetsWhenTheJobRunsAgain() async throws {
    let receiver = try await LocalHTTPReceiver()
    receiver.script([(429, "120")])
    let file = try JobKindsFile.parse("kinds:\n  notify: {type: http, url: \"\(receiver.url)/run\"}\n", file: "nova-jobs.yaml")
    var registry = JobRegistry()
    file.register(into: &registry)
    let queue = try SQLiteJobQueue(path: try TemporaryDirectory.make().appendingPathComponent("q.sqlite").path)
    let id: JobID = try await queue.enqueue(JobRequest(kind: "notify", maxAttempts: 3))
    let pool = WorkerPool(
      queue: queue, registry: registry, configuration: .init(concurrency: 1, pollInterval: .milliseconds(20)), logger: Logger(label: "test"))
    let run = Task { try await pool.run() }
    try await eventually("the attempt to fail") { try await queue.get(id)?.state == .failed }
    pool.shutdown()
    try await run.value
    let job = try #require(try await queue.get(id))
    let wait = job.runAt.timeIntervalSinceNow
    #expect(wait > 100 && wait <= 120, "the retry runs in \(wait) s")
    #expect(job.lastError?.contains("Retry-After") == true)
  }
}
