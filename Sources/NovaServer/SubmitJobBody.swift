import Foundation
import NovaCore

/// The body of `POST /v1/jobs`: only `kind` is required.
public struct SubmitJobBody: Sendable {
  public static let fields: Set<String> = [
    "kind", "payload", "queue", "priority", "delay_seconds", "max_attempts", "idempotency_key",
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
      // The text as sent (validated above), so the handler gets exactly what the client wrote.
      request.payload = try JSONValue.rawMember("payload", in: data) ?? payload.encoded()
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
