import Foundation
import Hummingbird
import NovaApplication
import NovaCore
import NovaQueue

/// The queues and their flow control: `GET /v1/queues` (anyone who reads), and for operators
/// `POST /v1/queues/{queue}/pause`, `/resume` and `/controls` (`{"max_running": 4, "rate": "10/s",
/// "weight": 3}`; a field left out is kept, `null` removes the limit).
struct QueuesController {
  typealias Context = NovaRequestContext
  let actions: JobActions

  func addRoutes(to router: Router<Context>) {
    router.get("v1/queues", use: list)
    router.post("v1/queues/:queue/pause") { request, context in try await change(request, context) { $0.paused = true } }
    router.post("v1/queues/:queue/resume") { request, context in try await change(request, context) { $0.paused = false } }
    router.post("v1/queues/:queue/controls", use: controls)
  }

  @Sendable func list(_ request: Request, context: Context) async throws -> Response {
    let queues = try await actions.queues(by: JobsController.caller(context))
    return try jsonResponse(QueueListResource(queues: queues.map(QueueResource.init)))
  }

  @Sendable func controls(_ request: Request, context: Context) async throws -> Response {
    let body = try BodyObject(Data(try await request.body.collect(upTo: 16 * 1024).readableBytesView))
    try body.only(["max_running", "rate", "weight", "paused", "max_running_per_key", "rate_per_key"])
    let fields = body.fields
    var maxRunning: Int??
    if let value = fields["max_running"] {
      if case .null = value { maxRunning = .some(nil) } else { maxRunning = .some(try Self.whole(value, "max_running")) }
    }
    let rate = try fields["rate"].map { value throws(NovaError) in try Self.rate(value, "rate") }
    let weight = try fields["weight"].map { value throws(NovaError) in try Self.whole(value, "weight") }
    var perKey: Int??
    if let value = fields["max_running_per_key"] {
      if case .null = value { perKey = .some(nil) } else { perKey = .some(try Self.whole(value, "max_running_per_key")) }
    }
    let ratePerKey = try fields["rate_per_key"].map { value throws(NovaError) in try Self.rate(value, "rate_per_key") }
    var paused: Bool?
    if let value = fields["paused"] {
      guard case .bool(let flag) = value else { throw NovaError.invalidInput(field: "paused", message: "must be true or false") }
      paused = flag
    }
    return try await change(request, context) { controls in
      if let maxRunning { controls.maxRunning = maxRunning }
      if let rate { controls.ratePerSecond = rate }
      if let weight { controls.weight = weight }
      if let paused { controls.paused = paused }
      if let perKey { controls.maxRunningPerKey = perKey }
      if let ratePerKey { controls.ratePerKey = ratePerKey }
    }
  }

  private func change(_ request: Request, _ context: Context, _ body: (inout QueueControls) -> Void) async throws -> Response {
    let name = try context.parameters.require("queue")
    let caller = JobsController.caller(context)
    _ = try await actions.changeControls(of: name, by: caller, body)
    let queue = try await actions.queues(by: caller).first { $0.name == name } ?? QueueSummary(name: name, controls: QueueControls(), counts: [:])
    return try jsonResponse(QueueResource(queue))
  }

  /// A rate: `"10/s"`, a number per second, or null (no limit).
  private static func rate(_ value: JSONValue, _ field: String) throws(NovaError) -> Double? {
    switch value {
    case .null: return nil
    case .string(let text): return try QueueControls.parseRate(text, field: field)
    case .int(let number): return Double(number)
    case .double(let number): return number
    default: throw .invalidInput(field: field, message: "must be a rate such as \"10/s\", a number per second, or null")
    }
  }

  private static func whole(_ value: JSONValue, _ field: String) throws(NovaError) -> Int {
    switch value {
    case .int(let number) where number >= Int64(Int32.min) && number <= Int64(Int32.max): return Int(number)
    case .double(let number) where number == number.rounded() && abs(number) < 1e9: return Int(number)
    default: throw .invalidInput(field: field, message: "must be a whole number")
    }
  }
}

/// A queue as `GET /v1/queues` and `nova queues list --json` show it.
public struct QueueResource: Codable, Sendable, Equatable {
  public var name: String
  public var paused: Bool
  public var max_running: Int?
  public var rate_per_second: Double?
  public var weight: Int
  public var max_running_per_key: Int?
  public var rate_per_key: Double?
  /// Its jobs by state, every state present.
  public var jobs: [String: Int]

  public init(_ queue: QueueSummary) {
    name = queue.name
    paused = queue.controls.paused
    max_running = queue.controls.maxRunning
    rate_per_second = queue.controls.ratePerSecond
    weight = queue.controls.weight
    max_running_per_key = queue.controls.maxRunningPerKey
    rate_per_key = queue.controls.ratePerKey
    jobs = Dictionary(uniqueKeysWithValues: JobState.allCases.map { ($0.rawValue, queue.counts[$0] ?? 0) })
  }
}

/// The answer of `GET /v1/queues`.
public struct QueueListResource: Codable, Sendable, Equatable {
  public var queues: [QueueResource]

  public init(queues: [QueueResource]) {
    self.queues = queues
  }
}
