import Foundation
import NovaCore

/// The body of `POST /v1/jobs`: only `kind` is required.
public struct SubmitJobBody: Sendable {
  public static let fields: Set<String> = [
    "kind", "payload", "queue", "priority", "delay_seconds", "max_attempts", "idempotency_key", "resources", "constraints",
    "concurrency_key",
  ]

  public var request: JobRequest

  /// Parses and checks a body; errors name the field (or the byte position of a syntax error).
  public static func parse(_ data: Data, now: Date, maxPayloadBytes: Int) throws(NovaError) -> SubmitJobBody {
    let value: JSONValue
    do {
      value = try JSONValue.parse(data)
    } catch {
      throw .malformedInput(field: "body", message: "malformed JSON: \(JSONErrorText.describe(error))")
    }
    guard let object = value.objectValue else {
      throw .malformedInput(field: "body", message: "expected a JSON object")
    }
    // The payload's text as sent (it parsed above), so the handler gets exactly what the client wrote.
    let raw = object["payload"] == nil ? nil : try JSONValue.rawMember("payload", in: data)
    return try parse(object: object, rawPayload: raw, now: now, maxPayloadBytes: maxPayloadBytes)
  }

  /// The most jobs one `POST /v1/jobs/batch` may submit.
  public static let maxBatch = 1000

  /// Parses `{"jobs": [body, …]}` (1 to `maxBatch` bodies, each as for one job); errors name the
  /// entry (`jobs[3].kind`).
  public static func parseBatch(_ data: Data, now: Date, maxPayloadBytes: Int) throws(NovaError) -> [JobRequest] {
    let value: JSONValue
    do {
      value = try JSONValue.parse(data)
    } catch {
      throw .malformedInput(field: "body", message: "malformed JSON: \(JSONErrorText.describe(error))")
    }
    guard let object = value.objectValue else { throw .malformedInput(field: "body", message: "expected a JSON object") }
    for key in object.keys.sorted() where key != "jobs" {
      throw .malformedInput(field: key, message: "unknown field; expected jobs")
    }
    guard case .array(let entries)? = object["jobs"] else {
      throw .malformedInput(field: "jobs", message: object["jobs"] == nil ? "is required" : "must be a list of jobs")
    }
    guard (1...maxBatch).contains(entries.count) else {
      throw .invalidInput(field: "jobs", message: "holds \(entries.count) jobs; give 1 to \(maxBatch)")
    }
    var requests: [JobRequest] = []
    requests.reserveCapacity(entries.count)
    for (index, entry) in entries.enumerated() {
      guard let fields = entry.objectValue else { throw .malformedInput(field: "jobs[\(index)]", message: "must be an object") }
      do {
        requests.append(try parse(object: fields, rawPayload: nil, now: now, maxPayloadBytes: maxPayloadBytes).request)
      } catch {
        throw error.inEntry("jobs[\(index)]")
      }
    }
    return requests
  }

  /// Checks one job's fields; `rawPayload` is the payload's text as sent, when known.
  static func parse(object: [String: JSONValue], rawPayload: Data?, now: Date, maxPayloadBytes: Int) throws(NovaError)
    -> SubmitJobBody
  {
    for key in object.keys.sorted() where !fields.contains(key) {
      throw .malformedInput(
        field: key, message: "unknown field; expected one of \(fields.sorted().joined(separator: ", "))")
    }
    guard case .string(let kind)? = object["kind"] else {
      throw .malformedInput(field: "kind", message: object["kind"] == nil ? "is required" : "must be a string")
    }
    var request = JobRequest(kind: kind)
    if let payload = object["payload"] {
      guard case .object = payload else {
        throw .malformedInput(field: "payload", message: "must be a JSON object")
      }
      request.payload = rawPayload ?? payload.encoded()
    }
    if let queue = object["queue"] {
      guard case .string(let name) = queue else { throw .malformedInput(field: "queue", message: "must be a string") }
      request.queue = name
    }
    if let priority = object["priority"] { request.priority = try integer(priority, field: "priority") }
    if let attempts = object["max_attempts"] { request.maxAttempts = try integer(attempts, field: "max_attempts") }
    if let delay = object["delay_seconds"] {
      let seconds: Double
      switch delay {
      case .int(let value): seconds = Double(value)
      case .double(let value): seconds = value
      default: throw .malformedInput(field: "delay_seconds", message: "must be a number")
      }
      guard seconds >= 0, seconds <= 366 * 86400 else {
        throw .invalidInput(field: "delay_seconds", message: "\(seconds) is out of range 0...31622400")
      }
      if seconds > 0 { request.runAt = now.addingTimeInterval(seconds) }
    }
    if let key = object["idempotency_key"] {
      switch key {
      case .null: break
      case .string(let text): request.idempotencyKey = text
      default: throw .malformedInput(field: "idempotency_key", message: "must be a string")
      }
    }
    if let key = object["concurrency_key"] {
      switch key {
      case .null: break
      case .string(let text): request.concurrencyKey = text
      default: throw .malformedInput(field: "concurrency_key", message: "must be a string")
      }
    }
    if let resources = object["resources"] { request.resources = try JobResources(json: resources) }
    if let constraints = object["constraints"] { request.constraints = try JobConstraints(json: constraints) }
    try request.validate(maxPayloadBytes: maxPayloadBytes)
    return SubmitJobBody(request: request)
  }

  private static func integer(_ value: JSONValue, field: String) throws(NovaError) -> Int {
    switch value {
    case .int(let number): return Int(number)
    case .double(let number) where number == number.rounded() && abs(number) < 1e15: return Int(number)
    default: throw .malformedInput(field: field, message: "must be an integer")
    }
  }
}
