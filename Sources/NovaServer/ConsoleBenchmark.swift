import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import NovaApplication
import NovaCore
import NovaQueue
import NovaSecurity

/// `nova bench console`: a store filled with N jobs in assorted states (and their audit
/// entries, signed), a real `nova serve` over it, and the time every console page takes to
/// answer a signed-in browser, as percentiles over many requests.
public enum ConsoleBenchmark {
  /// One page's latencies.
  public struct Page: Codable, Sendable {
    public var path: String
    public var requests: Int
    public var p50_ms: Double
    public var p99_ms: Double
    public var max_ms: Double
    public var status: Int
  }

  /// A run's outcome.
  public struct Result: Codable, Sendable {
    public var backend: String
    public var jobs: Int
    public var audit_entries: Int64
    public var seed_s: Double
    public var pages: [Page]

    public init(backend: String, jobs: Int, audit_entries: Int64, seed_s: Double, pages: [Page]) {
      self.backend = backend
      self.jobs = jobs
      self.audit_entries = audit_entries
      self.seed_s = seed_s
      self.pages = pages
    }
  }

  /// Fills `application`'s store up to `jobs` jobs: queues `q0`…`q3`, kinds `k0`…`k4`; about 20 %
  /// succeed and 2 % die, the rest wait. Returns the seconds it took (0 when already full).
  public static func seed(_ application: NovaApplication, jobs: Int, progress: (String) -> Void) async throws -> Double {
    let queue = application.queue
    let have = try await queue.stats().counts.values.reduce(0) { $0 + $1.values.reduce(0, +) }
    guard have < jobs else { return 0 }
    let started = ContinuousClock.now
    var made = have
    let batch = 1000
    while made < jobs {
      let count = min(batch, jobs - made)
      let requests = (0..<count).map { index -> JobRequest in
        let number = made + index
        var request = JobRequest(
          kind: "k\(number % 5)", payload: Data("{\"n\":\(number)}".utf8), queue: "q\(number % 4)", maxAttempts: 1)
        if number % 10 == 0 { request.concurrencyKey = "tenant-\(number % 97)" }
        if number % 100 == 0 { request.idempotencyKey = "order-\(number)" }
        return request
      }
      _ = try await queue.enqueue(batch: requests)
      // A fifth of each batch runs to success and one in fifty dies, as on a busy store.
      for name in (0..<4).map({ "q\($0)" }) {
        let leases = try await queue.claim(
          ClaimRequest(queues: [name], worker: "bench-\(name)", leaseDuration: .seconds(300), limit: count / 20 + 1))
        let dying = leases.count / 10
        for lease in leases.prefix(dying) { _ = try await queue.fail(lease, error: "bench failure", retryable: false, retryIn: nil) }
        _ = try await queue.complete(batch: leases.dropFirst(dying).map { JobCompletion(lease: $0, result: Data("{\"ok\":true}".utf8)) })
      }
      made += count
      if made % 20_000 == 0 || made == jobs { progress("seeded \(made) of \(jobs) jobs") }
    }
    if let source = application.transitionSource {
      progress("moving the audit records into the log")
      _ = try await application.security.audit.importAllTransitions(from: source)
    }
    progress("signing a checkpoint")
    _ = try await application.security.audit.checkpoint(signer: application.security.signer, origin: application.security.origin)
    return (ContinuousClock.now - started).seconds
  }

  /// Serves `application` on a free loopback port, signs in with a new operator token, and
  /// times `requests` requests of each console page (after a few to warm up).
  public static func measure(_ application: NovaApplication, requests: Int, progress: (String) -> Void) async throws -> [Page] {
    var logger = Logger(label: "nova.bench.console")
    // The server is cancelled at the end; what its services say about that is not news.
    logger.logLevel = .critical
    let name = "bench-\(UUID().uuidString.prefix(8).lowercased())"
    let token = try await application.security.tokens.create(name: name, role: .operator).token
    let server = try NovaServer(
      configuration: NovaServer.Configuration(port: 0, workers: 0, metricsInterval: .seconds(3600), checkpointInterval: .seconds(3600)),
      queue: application.queue, registry: application.registry, security: application.security,
      transitionSource: application.transitionSource, policy: try application.policy(), logger: logger)
    let port = AsyncStream<Int>.makeStream()
    let app = server.makeApplication { port.continuation.yield($0) }
    return try await withThrowingTaskGroup(of: [Page]?.self) { group in
      group.addTask {
        try await app.run()
        return nil
      }
      var ports = port.stream.makeAsyncIterator()
      guard let bound = await ports.next() else { throw NovaError.storage("the server did not start") }
      let base = "http://127.0.0.1:\(bound)"
      // Redirects are the console's answers (the sign-in's 303 carries the cookie), not followed.
      let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: HTTPClient.Configuration(redirectConfiguration: .disallow))
      do {
        let pages = try await timePages(client, base: base, token: token, application: application, requests: requests, progress: progress)
        try await client.shutdown()
        group.cancelAll()
        return pages
      } catch {
        try? await client.shutdown()
        group.cancelAll()
        throw error
      }
    }
  }

  static func timePages(
    _ client: HTTPClient, base: String, token: String, application: NovaApplication, requests: Int, progress: (String) -> Void
  ) async throws -> [Page] {
    do {
      let cookie = try await signIn(client, base: base, token: token)
      // Pages deep in the listing: a job from the middle of the store, and a cursor there.
      let middle = try await application.queue.list(JobFilter(state: .available, limit: 1000)).jobs.last
      let finished = try await application.queue.list(JobFilter(state: .succeeded, limit: 1)).jobs.first
      var paths = [
        "/console", "/console/queues", "/console/jobs", "/console/jobs?state=dead&kind=k3", "/console/jobs?queue=q2&state=succeeded",
        "/console/jobs?queue=q1", "/console/jobs?kind=k2&key=tenant-7", "/console/jobs?q=order-500",
        "/console/jobs?state=succeeded&from=2026-01-01T00:00", "/console/workers", "/console/alerts", "/lux",
      ]
      if let middle { paths.append("/console/jobs?state=available&cursor=\(middle.id.rawValue)") }
      if let finished { paths.append("/console/jobs/\(finished.id.rawValue)") }
      var pages: [Page] = []
      for path in paths {
        progress("timing \(path)")
        var samples: [Double] = []
        var status = 0
        for round in 0..<(requests + 3) {
          let started = ContinuousClock.now
          var request = HTTPClientRequest(url: base + path)
          request.headers.add(name: "Cookie", value: cookie)
          let response = try await client.execute(request, timeout: .seconds(60))
          _ = try await response.body.collect(upTo: 64 << 20)
          status = Int(response.status.code)
          if round >= 3 { samples.append((ContinuousClock.now - started).seconds * 1000) }
        }
        samples.sort()
        pages.append(
          Page(
            path: path, requests: samples.count, p50_ms: Statistics.percentile(sorted: samples, 0.5) ?? 0,
            p99_ms: Statistics.percentile(sorted: samples, 0.99) ?? 0,
            max_ms: samples.last ?? 0, status: status))
      }
      return pages
    }
  }

  static func signIn(_ client: HTTPClient, base: String, token: String) async throws -> String {
    var request = HTTPClientRequest(url: base + "/login")
    request.method = .POST
    request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
    request.body = .bytes(ByteBuffer(string: "token=\(token)"))
    let response = try await client.execute(request, timeout: .seconds(30))
    guard response.status == .seeOther, let cookie = response.headers.first(name: "Set-Cookie") else {
      throw NovaError.storage("could not sign in to the console (HTTP \(response.status.code))")
    }
    return String(cookie.prefix { $0 != ";" })
  }
}
