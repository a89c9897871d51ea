import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import NovaCore
import NovaQueue
import NovaServer
import NovaTestSupport
import Testing

@Suite("HTTP API", .timeLimit(.minutes(5)))
struct HTTPAPITests {
  func makeServer(maxPayloadBytes: Int = 1024) throws -> NovaServer {
    let path = try TemporaryDirectory.make().appendingPathComponent("q.sqlite").path
    var logger = Logger(label: "test")
    logger.logLevel = .warning
    TestMetrics.bootstrap()
    return try NovaServer(
      configuration: .init(workers: 0, maxPayloadBytes: maxPayloadBytes), queue: try SQLiteJobQueue(path: path), security: nil, logger: logger)
  }

  func errorCode(_ buffer: ByteBuffer) throws -> String? {
    (try json(buffer)["error"] as? [String: Any])?["code"] as? String
  }

  @Test func submitShowListCancelRetry() async throws {
    let server = try makeServer()
    let app = Application(router: server.makeRouter())
    try await app.test(.router) { client in
      var id = ""
      try await client.execute(
        uri: "/v1/jobs", method: .post,
        body: ByteBuffer(string: #"{"kind":"echo","payload":{"n":1},"queue":"gpu","priority":5,"max_attempts":2,"idempotency_key":"k1"}"#)
      ) { response in
        #expect(response.status == .created)
        #expect(response.headers[.contentType] == "application/json")
        let body = try json(response.body)
        #expect(body["state"] as? String == "available")
        #expect(body["queue"] as? String == "gpu")
        #expect(body["priority"] as? Int == 5)
        #expect((body["payload"] as? [String: Any])?["n"] as? Int == 1)
        id = try #require(body["id"] as? String)
      }
      try await client.execute(
        uri: "/v1/jobs", method: .post, body: ByteBuffer(string: #"{"kind":"echo","payload":{"n":1},"queue":"gpu","idempotency_key":"k1"}"#)
      ) { response in
        #expect(response.status == .ok)
        let value1 = try json(response.body)["id"] as? String
        #expect(value1 == id)
      }
      // Issue #14 point 13: the key reused for another job is 409 naming the earlier one.
      try await client.execute(uri: "/v1/jobs", method: .post, body: ByteBuffer(string: #"{"kind":"noop","queue":"gpu","idempotency_key":"k1"}"#)) {
        response in
        #expect(response.status == .conflict)
        let code = try errorCode(response.body)
        #expect(code == "idempotency_conflict")
        #expect(String(buffer: response.body).contains(id))
      }
      try await client.execute(uri: "/v1/jobs", method: .post, body: ByteBuffer(string: #"{"kind":"sleep","payload":{"ms":1},"delay_seconds":3600}"#))
      { response in
        #expect(response.status == .created)
        let value2 = try json(response.body)["state"] as? String
        #expect(value2 == "scheduled")
      }
      try await client.execute(uri: "/v1/jobs/\(id)", method: .get) { response in
        #expect(response.status == .ok)
        let value3 = try json(response.body)["kind"] as? String
        #expect(value3 == "echo")
      }
      try await client.execute(uri: "/v1/jobs?queue=gpu&limit=10", method: .get) { response in
        #expect(response.status == .ok)
        let jobs = try #require(try json(response.body)["jobs"] as? [[String: Any]])
        #expect(jobs.map { $0["id"] as? String } == [id])
      }
      try await client.execute(uri: "/v1/jobs?state=scheduled", method: .get) { response in
        let jobs = try json(response.body)["jobs"] as? [Any]
        #expect(jobs?.count == 1)
      }
      try await client.execute(uri: "/v1/jobs/\(id)/retry", method: .post) { response in
        #expect(response.status == .conflict)
        let value4 = try errorCode(response.body)
        #expect(value4 == "invalid_state")
      }
      try await client.execute(uri: "/v1/jobs/\(id)/cancel", method: .post) { response in
        #expect(response.status == .ok)
        let value5 = try json(response.body)["state"] as? String
        #expect(value5 == "cancelled")
      }
      try await client.execute(uri: "/v1/jobs/\(id)/retry", method: .post) { response in
        #expect(response.status == .ok)
        let value6 = try json(response.body)["state"] as? String
        #expect(value6 == "available")
      }
      try await client.execute(uri: "/v1/queues/stats", method: .get) { response in
        let queues = try #require(try json(response.body)["queues"] as? [String: [String: Int]])
        #expect(queues["gpu"]?["available"] == 1)
        #expect(queues["default"]?["scheduled"] == 1)
      }
    }
  }

  /// Issue #14 point 12: the payload a handler receives is the text the client sent: integers
  /// beyond 2^53, `1.0` and key order survive.
  @Test func payloadsRoundTripExactly() async throws {
    let path = try TemporaryDirectory.make().appendingPathComponent("q.sqlite").path
    let queue = try SQLiteJobQueue(path: path)
    TestMetrics.bootstrap()
    let server = try NovaServer(configuration: .init(workers: 0), queue: queue, security: nil, logger: Logger(label: "test"))
    let app = Application(router: server.makeRouter())
    let payload = #"{"z":9007199254740993,"a":1.0,"nested":{"big":-123456789012345678901234567890,"s":"\u00e9\n"},"list":[1e300,0.10]}"#
    try await app.test(.router) { client in
      try await client.execute(
        uri: "/v1/jobs", method: .post, body: ByteBuffer(string: #"{"kind":"echo", "payload": "# + payload + #" ,"queue":"exact"}"#)
      ) { response in
        #expect(response.status == .created, "\(String(buffer: response.body))")
      }
      try await client.execute(uri: "/v1/jobs", method: .post, body: ByteBuffer(string: #"{"kind":"echo","payload":{"a":1},"payload":{"a":2}}"#)) {
        #expect($0.status == .badRequest || $0.status == .unprocessableContent)
      }
    }
    let lease = try #require(try await queue.claim(queues: ["exact"], worker: "w", leaseDuration: .seconds(30), limit: 1).first)
    #expect(String(decoding: lease.job.payload, as: UTF8.self) == payload)
    #expect(try JSONValue.rawMember("payload", in: Data(#"{"kind":"x"}"#.utf8)) == nil)
    #expect(try JSONValue.rawMember("payload", in: Data(#"[1]"#.utf8)) == nil)
    #expect(try JSONValue.rawMember("p", in: Data(#" { "q" : [ "]" , {"p":1} ] , "p" : true } "#.utf8)) == Data("true".utf8))
  }

  @Test func badInputGetsAClearErrorAndTheServerKeepsServing() async throws {
    let server = try makeServer(maxPayloadBytes: 256)
    let app = Application(router: server.makeRouter())
    let cases: [(body: String, status: HTTPResponse.Status, code: String, mentions: String)] = [
      (#"{"kind":"noop","#, .badRequest, "malformed_input", "byte offset"),
      (#"[1,2]"#, .badRequest, "malformed_input", "JSON object"),
      (#"{"payload":{}}"#, .badRequest, "malformed_input", "kind"),
      (#"{"kind":"noop","priority":"high"}"#, .badRequest, "malformed_input", "priority"),
      (#"{"kind":"noop","priorty":3}"#, .badRequest, "malformed_input", "priorty"),
      (#"{"kind":"noop","payload":[1]}"#, .badRequest, "malformed_input", "payload"),
      (#"{"kind":"sleep","payload":{"ms":"x"}}"#, .badRequest, "malformed_input", "ms"),
      (#"{"kind":"noop","priority":-1}"#, .unprocessableContent, "invalid_input", "priority"),
      (#"{"kind":"noop","max_attempts":0}"#, .unprocessableContent, "invalid_input", "max_attempts"),
      (#"{"kind":"noop","delay_seconds":-5}"#, .unprocessableContent, "invalid_input", "delay_seconds"),
      (#"{"kind":"train.llm"}"#, .unprocessableContent, "unknown_job_kind", "train.llm"),
      (#"{"kind":"noop","queue":"bad queue"}"#, .unprocessableContent, "invalid_input", "queue"),
      (#"{"kind":"echo","payload":{"blob":"\#(String(repeating: "x", count: 300))"}}"#, .contentTooLarge, "payload_too_large", "256"),
      (#"{"kind":"echo","payload":{"blob":"\#(String(repeating: "x", count: 40000))"}}"#, .contentTooLarge, "payload_too_large", "limit"),
    ]
    try await app.test(.router) { client in
      for item in cases {
        try await client.execute(uri: "/v1/jobs", method: .post, body: ByteBuffer(string: item.body)) { response in
          #expect(response.status == item.status, "\(item.body.prefix(60))")
          let error = try #require(try json(response.body)["error"] as? [String: Any])
          #expect(error["code"] as? String == item.code, "\(item.body.prefix(60))")
          #expect((error["message"] as? String)?.contains(item.mentions) == true, "\(error["message"] ?? "")")
        }
      }
      try await client.execute(uri: "/v1/jobs/not-a-uuid", method: .get) { response in
        #expect(response.status == .unprocessableContent)
      }
      try await client.execute(uri: "/v1/jobs/01000000-0000-7000-8000-000000000000", method: .get) { response in
        #expect(response.status == .notFound)
        let value7 = try errorCode(response.body)
        #expect(value7 == "not_found")
      }
      try await client.execute(uri: "/v1/jobs?state=bogus", method: .get) { response in
        #expect(response.status == .unprocessableContent)
      }
      try await client.execute(uri: "/v1/jobs?limit=abc", method: .get) { response in
        #expect(response.status == .unprocessableContent)
      }
      try await client.execute(uri: "/v1/jobs?colour=red", method: .get) { response in
        #expect(response.status == .unprocessableContent)
      }
      try await client.execute(uri: "/v1/nothing-here", method: .get) { response in
        #expect(response.status == .notFound)
        let value8 = try errorCode(response.body)
        #expect(value8 == "not_found")
      }
      try await client.execute(uri: "/healthz", method: .get) { response in
        #expect(response.status == .ok)
      }
      try await client.execute(uri: "/readyz", method: .get) { response in
        #expect(response.status == .ok)
      }
    }
    let value9 = try await server.queue.stats().total(.available)
    #expect(value9 == 0)
  }

  @Test func metricsEndpointServesPrometheusText() async throws {
    let server = try makeServer()
    let app = Application(router: server.makeRouter())
    try await app.test(.router) { client in
      try await client.execute(uri: "/v1/jobs", method: .post, body: ByteBuffer(string: #"{"kind":"noop","queue":"metrics-test"}"#)) { response in
        #expect(response.status == .created)
      }
      try await QueueMetricsCollector(queue: server.queue, pool: nil, logger: server.logger).collect()
      try await client.execute(uri: "/metrics", method: .get) { response in
        #expect(response.status == .ok)
        #expect(response.headers[.contentType]?.hasPrefix("text/plain") == true)
        let text = String(buffer: response.body)
        #expect(text.contains(#"nova_jobs_enqueued_total{queue="metrics-test"}"#))
        #expect(text.contains(#"nova_queue_jobs{queue="metrics-test",state="available"} 1"#))
        #expect(text.contains("# HELP nova_jobs_enqueued_total"))
        #expect(text.contains("nova_http_requests_total"))
      }
    }
  }
}
