import ArgumentParser
import Foundation
import NovaBenchmarks
import NovaCore

extension BenchCommand {
  struct HTTPBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "http",
      abstract: "Load a running server over HTTP/1.1 keep-alive: N connections, each sending the next request as its answer arrives.",
      discussion: """
        Against `nova serve`, one job per request (the default request):
          nova bench http --url http://127.0.0.1:8080/v1/jobs --token "$TOKEN" --connections 16
        """)

    @Option(help: "The URL to load (http://HOST:PORT/PATH).")
    var url: String = "http://127.0.0.1:8080/v1/jobs"

    @Option(help: "GET or POST.")
    var method: String = "POST"

    @Option(help: "The request body for POST (JSON).")
    var body: String = #"{"kind":"echo","payload":{"n":1}}"#

    @Option(help: "A bearer token sent with every request (default: $NOVA_TOKEN).")
    var token: String?

    @Option(help: "Concurrent keep-alive connections.")
    var connections: Int = 16

    @Option(help: "Seconds each run is measured for (after a 1 s warm-up).")
    var seconds: Double = 10

    @Option(help: "Runs; the summary reports the median of each figure.")
    var runs: Int = 3

    @OptionGroup var output: OutputOptions

    func validate() throws {
      guard HTTPLoadBenchmark.Request(url: url, method: "GET") != nil else {
        throw ValidationError("--url '\(url)' is not an http://HOST:PORT/PATH URL")
      }
      guard ["GET", "POST"].contains(method.uppercased()) else { throw ValidationError("--method must be GET or POST") }
      guard (1...4096).contains(connections) else { throw ValidationError("--connections must be in 1...4096") }
      guard seconds > 0, seconds <= 3600 else { throw ValidationError("--seconds must be in (0, 3600]") }
      guard (1...100).contains(runs) else { throw ValidationError("--runs must be in 1...100") }
      // Sent as a header line as it is: a control character would break the request.
      if let token = token ?? ProcessInfo.processInfo.environment["NOVA_TOKEN"],
        let bad = token.unicodeScalars.firstIndex(where: { !(0x21...0x7E).contains($0.value) })
      {
        let offset = token.unicodeScalars.distance(from: token.unicodeScalars.startIndex, to: bad)
        throw ValidationError(
          "the token (\(self.token == nil ? "$NOVA_TOKEN" : "--token")) has a character that cannot be sent in a header at offset \(offset)")
      }
    }

    func run() async throws {
      let post = method.uppercased() == "POST"
      var headers: [(String, String)] = []
      if post { headers.append(("Content-Type", "application/json")) }
      if let token = token ?? ProcessInfo.processInfo.environment["NOVA_TOKEN"] { headers.append(("Authorization", "Bearer \(token)")) }
      guard
        let request = HTTPLoadBenchmark.Request(
          url: url, method: post ? "POST" : "GET", headers: headers, body: post ? Array(body.utf8) : [])
      else { throw ValidationError("--url '\(url)' is not an http://HOST:PORT/PATH URL") }
      var results: [HTTPLoadBenchmark.Result] = []
      for _ in 1...runs {
        do {
          results.append(try await HTTPLoadBenchmark.run(request, connections: connections, duration: .seconds(fractional: seconds)))
        } catch {
          throw NovaError.unavailable("cannot load \(url): \(error)")
        }
      }
      let summary = HTTPLoadBenchmark.median(results)
      if output.json {
        try printJSON(HTTPLoadOutput(median: summary, runs: results), pretty: false)
      } else {
        let statuses = summary.statuses.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ")
        print(
          """
          \(method.uppercased()) \(url), \(connections) connections, \(String(format: "%.0f", seconds)) s per run, median of \(runs) run(s)
            throughput   \(Int(summary.requests_per_s)) requests/s
            latency      p50 \(String(format: "%.2f", summary.p50_ms)) ms, p99 \(String(format: "%.2f", summary.p99_ms)) ms, max \(String(format: "%.1f", summary.max_ms)) ms
            answers      \(statuses)
          """)
      }
    }
  }
}

/// `nova bench http --json`: the median figures at the top level, every run under `runs`.
struct HTTPLoadOutput: Encodable {
  var median: HTTPLoadBenchmark.Result
  var runs: [HTTPLoadBenchmark.Result]

  enum CodingKeys: String, CodingKey { case runs }

  func encode(to encoder: any Encoder) throws {
    try median.encode(to: encoder)
    var container = encoder.container(keyedBy: CodingKeys.self)
    try container.encode(runs, forKey: .runs)
  }
}
