import Foundation
import Hummingbird
import NovaCore
import NovaMonitoring
import NovaSecurity

/// `POST /v1/kpis` (operator) and `GET /v1/kpis?name=&since=&until=&label=k=v&limit=`.
struct KPIController {
  let store: KPIStore
  let clock: any NovaClock

  struct SampleBody: Decodable {
    var name: String
    var value: Double
    var labels: [String: String]?
    var unit: String?
    /// RFC 3339; default now.
    var time: String?
  }

  struct Body: Decodable {
    var samples: [SampleBody]
  }

  struct Stored: Encodable {
    var recorded: Int
  }

  struct QueryResult: Encodable {
    var samples: [KPISample]
    var summary: KPISummary
  }

  func addRoutes(to router: Router<NovaRequestContext>) {
    router.post("v1/kpis", use: record)
    router.get("v1/kpis", use: query)
  }

  @Sendable func record(_ request: Request, context: NovaRequestContext) async throws -> Response {
    let data = Data((try await request.body.collect(upTo: RouteBodyLimits.kpis)).readableBytesView)
    let bodies: [SampleBody]
    do {
      if let many = try? JSONDecoder().decode(Body.self, from: data) {
        bodies = many.samples
      } else {
        bodies = [try JSONDecoder().decode(SampleBody.self, from: data)]
      }
    } catch {
      throw NovaError.malformedInput(
        field: "body",
        message: "expected {\"name\", \"value\", \"labels\", \"unit\", \"time\"} or {\"samples\": [...]}: \(JSONErrorText.describe(error))")
    }
    guard bodies.count <= 10_000 else {
      throw NovaError.invalidInput(field: "samples", message: "\(bodies.count) samples; at most 10000 per request")
    }
    let now = clock.now().millisecondsSince1970
    let notAfter = now + Int64(store.futureTolerance.seconds * 1000)
    let source = context.caller.map { "token:\($0.name)" } ?? "api"
    var samples: [KPISample] = []
    for (index, body) in bodies.enumerated() {
      var time = now
      if let text = body.time {
        guard let parsed = AuditTime.parse(text) else {
          throw NovaError.invalidInput(field: "samples[\(index)].time", message: "'\(text)' is not an RFC 3339 time")
        }
        time = parsed
      }
      let sample = KPISample(name: body.name, labels: body.labels ?? [:], value: body.value, unit: body.unit ?? "", time: time, source: source)
      do {
        try sample.validate(notAfter: notAfter)
      } catch {
        if case .invalidInput(let field, let message) = error {
          throw NovaError.invalidInput(field: "samples[\(index)].\(field)", message: message)
        }
        throw error
      }
      samples.append(sample)
    }
    try await store.record(samples)
    return try jsonResponse(Stored(recorded: samples.count), status: .created)
  }

  @Sendable func query(_ request: Request, context: NovaRequestContext) async throws -> Response {
    let query = request.uri.queryParameters
    for (key, _) in query where !["name", "since", "until", "label", "limit"].contains(String(key)) {
      throw NovaError.invalidInput(field: String(key), message: "unknown query parameter; expected name, since, until, label, limit")
    }
    guard let name = query["name"].map(String.init) else { throw NovaError.invalidInput(field: "name", message: "required") }
    let now = clock.now().millisecondsSince1970
    let since = try KPITime.parse(query["since"].map(String.init) ?? "1h", now: now, flag: "since")
    let until = try query["until"].map { try KPITime.parse(String($0), now: now, flag: "until") } ?? now
    var labels: [String: String] = [:]
    for pair in query.getAll("label") {
      guard let equals = pair.firstIndex(of: "="), equals != pair.startIndex else {
        throw NovaError.invalidInput(field: "label", message: "'\(pair)' is not key=value")
      }
      labels[String(pair[..<equals])] = String(pair[pair.index(after: equals)...])
    }
    guard let limit = Int(query["limit"].map(String.init) ?? "1000"), (1...100_000).contains(limit) else {
      throw NovaError.invalidInput(field: "limit", message: "must be 1...100000")
    }
    let samples = try await store.query(name: name, since: since, until: until, labels: labels, limit: limit)
    let summary = try await store.summary(name: name, since: since, until: until, labels: labels)
    return try jsonResponse(QueryResult(samples: samples, summary: summary))
  }
}
