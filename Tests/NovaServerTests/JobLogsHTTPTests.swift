import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import NovaCore
import NovaQueue
import NovaServer
import Testing

/// `GET /v1/jobs/{id}/logs` as people read it (issue #21 point 8), with the HTTP workers' setup.
extension WorkerHTTPTests {
  /// Issue #21 point 8: the route escapes what could drive a terminal unless `raw=1` (the bytes as
  /// stored, answered as `application/octet-stream`), puts each stream's lines together, and marks
  /// their stream with `prefix=1`; following answers the same.
  @Test func logsAreEscapedUnlessRawAndKeepEachStreamsLines() async throws {
    let setup = try await makeServer()
    let app = Application(router: setup.server.makeRouter())
    try await app.test(.live) { client in
      let ops = setup.tokens["ops"]!
      let id = try await submit(client, ops)
      let claim = try #require(try await setup.queue.claim(queues: [], worker: "w", leaseDuration: .seconds(30), limit: 1).first)
      let written: [(JobLogStream, [UInt8])] = [
        (.stdout, Array("\u{1B}[31mpartial ".utf8)), (.stderr, Array("bell\u{07}\r\n".utf8)), (.stdout, Array("line\n".utf8)),
        (.stdout, [0xFF, 0x41, 0x0A]),
      ]
      try await setup.queue.appendLogs(
        written.map { JobLogChunk(job: JobID(id), queue: "default", attempt: 1, stream: $0.0, data: Data($0.1), time: Date()) })
      try await setup.queue.complete(claim, result: nil)
      let escaped = #"bell\x07\x0d"# + "\n" + #"\x1b[31mpartial line"# + "\n" + #"\xffA"# + "\n"
      for query in ["attempt=1", "attempt=1&follow=1"] {
        let response = try await client.execute(uri: "/v1/jobs/\(id)/logs?\(query)", method: .get, headers: bearer(ops))
        #expect(response.status == .ok)
        #expect(response.headers[.contentType] == "text/plain; charset=utf-8")
        #expect(response.headers[.xContentTypeOptions] == "nosniff")
        #expect(String(buffer: response.body) == escaped, "\(query)")
      }
      let prefixed = try await client.execute(uri: "/v1/jobs/\(id)/logs?prefix=1&follow=1", method: .get, headers: bearer(ops))
      let lines = ["==> attempt 1 <==", #"stderr: bell\x07\x0d"#, #"stdout: \x1b[31mpartial line"#, #"stdout: \xffA"#]
      #expect(String(buffer: prefixed.body) == lines.map { $0 + "\n" }.joined())
      for query in ["attempt=1&raw=1", "attempt=1&raw=true&follow=1"] {
        let raw = try await client.execute(uri: "/v1/jobs/\(id)/logs?\(query)", method: .get, headers: bearer(ops))
        #expect(raw.status == .ok)
        #expect(raw.headers[.contentType] == "application/octet-stream")
        #expect(Array(raw.body.readableBytesView) == written.flatMap { $0.1 }, "\(query)")
      }
      for (query, field) in [("raw=2", "raw"), ("prefix=yes", "prefix")] {
        let refused = try await client.execute(uri: "/v1/jobs/\(id)/logs?\(query)", method: .get, headers: bearer(ops))
        #expect(refused.status == .unprocessableContent, "\(query)")
        #expect(String(buffer: refused.body).contains(field))
      }
    }
  }
}
