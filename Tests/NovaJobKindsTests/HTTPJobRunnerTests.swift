import Foundation
import Logging
import NovaBenchmarks
import NovaCore
import NovaQueue
import NovaTestSupport
import Synchronization
import Testing

@testable import NovaJobKinds

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
    // Signed the Standard Webhooks way: one message per attempt, the secret's bytes as the key.
    let id = try #require(request.header("webhook-id"))
    #expect(id == "\(context.id.rawValue)-3" && id == HTTPJobRunner.messageID(context))
    let timestamp = try #require(request.header("webhook-timestamp").flatMap { Int64($0) })
    let now = Int64(Date().timeIntervalSince1970)
    #expect(abs(timestamp - now) < 60)
    let signature = StandardWebhook.signature(id: id, timestamp: timestamp, body: Array(payload), key: Array("k3y".utf8))
    #expect(request.header("webhook-signature") == signature && signature.hasPrefix("v1,"))
    #expect(StandardWebhook.verify(headers: request.headers, body: request.body, secret: "k3y", now: now))
    #expect(!StandardWebhook.verify(headers: request.headers, body: request.body + [0x20], secret: "k3y", now: now))
    #expect(request.header("X-Nova-Signature") == nil && request.header("X-Nova-Timestamp") == nil)
  }

  /// Issue #21: a receiver using the Standard Webhooks library (Python's `standardwebhooks`) accepts
  /// Nova's calls, with a `whsec_` (base64) secret and with a plain one, and refuses a changed body
  /// or another secret.
  @Test(.enabled(if: StandardWebhooksReference.available, StandardWebhooksReference.missing))
  func theReferenceVerifierAcceptsTheCalls() async throws {
    let receiver = try await LocalHTTPReceiver()
    receiver.setDefault(status: 200, body: "{}")
    let payload = Data(#"{"question":"life","tags":["a","b"],"n":1.5}"#.utf8)
    let kind = HTTPKind(url: "", secretEnv: "AGENT_SECRET")
    let key = Data((1...32).map { UInt8($0) }).base64EncodedString()
    let secrets = [
      (secret: "whsec_" + key, other: "whsec_" + Data(repeating: 7, count: 32).base64EncodedString()),
      (secret: "a plain secret", other: "a plain secreT"),
    ]
    for (secret, _) in secrets {
      let call = runner(receiver.url + "/run", kind: kind, environment: ["AGENT_SECRET": secret])
      _ = try await call.handle(payload: payload, context: context)
    }
    let requests = try await receiver.waitForRequests(2)
    for (request, (secret, other)) in zip(requests, secrets) {
      #expect(try StandardWebhooksReference.refusal(headers: request.headers, body: request.body, secret: secret) == nil)
      let tampered = try StandardWebhooksReference.refusal(headers: request.headers, body: request.body + [0x20], secret: secret)
      #expect(tampered?.contains("No matching signature") == true, "\(tampered ?? "verified")")
      #expect(try StandardWebhooksReference.refusal(headers: request.headers, body: request.body, secret: other) != nil)
    }
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
    // A whsec_ secret whose key is not base64 cannot sign: refused before any call.
    do {
      _ = try await runner("http://127.0.0.1:1/run", kind: HTTPKind(url: "", secretEnv: "S"), environment: ["S": "whsec_%%%"])
        .handle(payload: Data("{}".utf8), context: context)
      Issue.record("a whsec_ secret that is not base64 signed a call")
    } catch let error as NonRetryableJobError {
      #expect(error.message.contains("secret_env S") && !error.message.contains("%%%"), "\(error.message)")
    }
  }

  /// Issue #21 point 4: the client used to open 8 connections per host whatever the pool ran; with
  /// max_concurrency 16, 16 calls of 500 ms are in flight at once.
  @Test func maxConcurrencyCallsAreInFlightAtOnce() async throws {
    let receiver = try await LocalHTTPReceiver()
    receiver.setDefault(status: 200, body: "{}")
    // Each call is held 500 ms: 250 ms on its way to the endpoint, 250 ms on the way back.
    let proxy = try await LatencyProxy(targetPort: receiver.port, delay: .milliseconds(250))
    let call = runner("http://127.0.0.1:\(proxy.port)/run", kind: HTTPKind(url: "", maxConcurrency: 16))
    let context = self.context
    try await withThrowingTaskGroup(of: Void.self) { group in
      for _ in 0..<16 { group.addTask { _ = try await call.handle(payload: Data("{}".utf8), context: context) } }
      try await group.waitForAll()
    }
    await proxy.close()
    let received = receiver.requests.map(\.received).sorted()
    #expect(received.count == 16)
    // A connection carries its next call to the endpoint no sooner than a round trip (500 ms)
    // after its last one arrived, so the calls that arrived within 500 ms of the first each had a
    // connection of their own, and were all in flight at once.
    let atOnce = received.first.map { first in received.filter { $0 < first + .milliseconds(500) }.count } ?? 0
    #expect(atOnce >= 16, "\(atOnce) calls were in flight at once")
  }

  /// Issue #21 point 4: waiting for a max_concurrency slot does not count against the timeout.
  /// Two slots, a 1 s timeout and calls held 700 ms: the third and fourth calls wait 700 ms for a
  /// slot, end 1.4 s after they were made, and succeed.
  @Test func theWaitForASlotIsOutsideTheTimeout() async throws {
    let receiver = try await LocalHTTPReceiver()
    receiver.setDefault(status: 200, body: #"{"ok":true}"#)
    let proxy = try await LatencyProxy(targetPort: receiver.port, delay: .milliseconds(350))
    let kind = HTTPKind(url: "http://127.0.0.1:\(proxy.port)/run", maxConcurrency: 2)
    let call = HTTPJobRunner(name: "notify", kind: kind, timeout: .seconds(1), environment: [:])
    let context = self.context
    let started = ContinuousClock.now
    let results = try await withThrowingTaskGroup(of: Data?.self) { group in
      for _ in 0..<4 { group.addTask { try await call.handle(payload: Data("{}".utf8), context: context) } }
      var results: [Data?] = []
      for try await result in group { results.append(result) }
      return results
    }
    let elapsed = ContinuousClock.now - started
    await proxy.close()
    #expect(results.count == 4 && results.allSatisfy { $0 == Data(#"{"ok":true}"#.utf8) })
    #expect(elapsed >= .milliseconds(1300), "4 calls of 700 ms, 2 at a time, took \(elapsed)")
    // Two at a time: the second pair reached the endpoint only once the first pair was answered.
    let received = receiver.requests.map(\.received).sorted()
    #expect(received.count == 4)
    if received.count == 4 { #expect(received[2] - received[0] >= .milliseconds(600)) }
    #expect(call.limiter?.inUse == 0)
    // The pool's own limit leaves room for the wait; without max_concurrency it is the timeout.
    #expect(call.poolTimeout == call.slotWaitLimit + .seconds(6) && call.slotWaitLimit == .seconds(300))
    #expect(runner("http://x/").poolTimeout == .seconds(5) && runner("http://x/").slotWaitLimit == .zero)
  }

  /// The slots: first come, first served; a waiter gives up after its limit or when cancelled,
  /// holding nothing.
  @Test func theLimiterHandsSlotsOverInOrder() async throws {
    let limiter = ConcurrencyLimiter(permits: 1)
    try await limiter.acquire()
    #expect(try await limiter.acquire(waitingAtMost: .milliseconds(50)) == false)
    let order = OrderLog()
    let first = Task {
      try await limiter.acquire()
      order.append(1)
      limiter.release()
    }
    try await eventually("the first waiter to queue") { limiter.waiting == 1 }
    let second = Task {
      try await limiter.acquire()
      order.append(2)
      limiter.release()
    }
    try await eventually("the second waiter to queue") { limiter.waiting == 2 }
    let cancelled = Task { try await limiter.acquire(waitingAtMost: .seconds(60)) }
    try await eventually("the third waiter to queue") { limiter.waiting == 3 }
    cancelled.cancel()
    await #expect(throws: CancellationError.self) { try await cancelled.value }
    #expect(limiter.waiting == 2)
    limiter.release()
    try await first.value
    try await second.value
    #expect(order.values == [1, 2] && limiter.inUse == 0)
    #expect(try await limiter.acquire(waitingAtMost: .milliseconds(50)))
    limiter.release()
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

/// What concurrent tasks recorded, in order.
private final class OrderLog: Sendable {
  private let entries = Mutex<[Int]>([])
  func append(_ value: Int) { entries.withLock { $0.append(value) } }
  var values: [Int] { entries.withLock { $0 } }
}
