import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import NovaCore
import NovaQueue
import NovaRedis
import NovaRedisQueue
import NovaServer
import NovaTestSupport
import Testing

/// With the queue's Redis down, the API answers 503 `unavailable` with `Retry-After` within 2 s
/// (not a 500 after the client's 30 s retry window), and `/readyz` answers within 1 s.
@Suite("HTTP with the store down", .serialized, .timeLimit(.minutes(2)))
struct StoreOutageHTTPTests {
  @Test(.enabled(if: TestServers.redisAvailable, TestServers.redisMissing))
  func redisDownAnswers503WithinTwoSecondsAndReadyzWithinOne() async throws {
    let redis = try RedisTestServer()
    // The production client settings: a 30 s retry window for background loops.
    let queue = RedisJobQueue(
      configuration: .init(
        client: .init(url: try RedisURL(parsing: redis.url), retryWindow: .seconds(30)),
        keyPrefix: "outage-\(UUID().uuidString.prefix(6))"))
    defer { queue.close() }
    var logger = Logger(label: "test")
    logger.logLevel = .critical
    TestMetrics.bootstrap()
    let server = try NovaServer(configuration: .init(workers: 0), queue: queue, security: nil, logger: logger)
    let app = Application(router: server.makeRouter())
    try await app.test(.router) { client in
      // The first requests also open connections; on a loaded test machine they may need a retry.
      try await eventually("readiness", timeout: .seconds(20)) {
        try await client.execute(uri: "/readyz", method: .get) { $0.status == .ok }
      }
      var id = ""
      try await eventually("a job submitted while Redis is up", timeout: .seconds(20)) {
        try await client.execute(uri: "/v1/jobs", method: .post, body: ByteBuffer(string: #"{"kind":"noop"}"#)) { response in
          guard response.status == .created else { return false }
          id = try #require(try json(response.body)["id"] as? String)
          return true
        }
      }
      redis.stop(kill: SIGKILL)
      let requests: [(String, HTTPRequest.Method, String?)] = [
        ("/v1/jobs", .post, #"{"kind":"noop"}"#), ("/v1/jobs/\(id)", .get, nil), ("/v1/jobs", .get, nil),
        ("/v1/queues/stats", .get, nil), ("/v1/jobs/\(id)/cancel", .post, nil),
      ]
      for (uri, method, body) in requests {
        let start = ContinuousClock.now
        try await client.execute(uri: uri, method: method, body: body.map { ByteBuffer(string: $0) }) { response in
          #expect(response.status == .serviceUnavailable, "\(method) \(uri)")
          #expect(response.headers[.retryAfter] == "2", "\(method) \(uri)")
          #expect(try errorCode(response.body) == "unavailable", "\(method) \(uri)")
          let message = try #require((try json(response.body)["error"] as? [String: Any])?["message"] as? String)
          #expect(message.contains("redis at 127.0.0.1:\(redis.port)"), "\(message)")
        }
        #expect(ContinuousClock.now - start < .seconds(2), "\(method) \(uri) answered within 2 s")
      }
      let start = ContinuousClock.now
      try await client.execute(uri: "/readyz", method: .get) { response in
        #expect(response.status == .serviceUnavailable)
        #expect(response.headers[.retryAfter] != nil)
      }
      #expect(ContinuousClock.now - start < .seconds(1), "/readyz answered within 1 s")
      // Back up: the same server recovers without a restart.
      try redis.start()
      try await eventually("readiness after Redis restarts", timeout: .seconds(10)) {
        try await client.execute(uri: "/readyz", method: .get) { $0.status == .ok }
      }
    }
  }

  func errorCode(_ buffer: ByteBuffer) throws -> String? {
    (try json(buffer)["error"] as? [String: Any])?["code"] as? String
  }
}
