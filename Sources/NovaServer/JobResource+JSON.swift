import Foundation
import NovaCore

extension JobResource {
  /// The bytes `NovaJSON.encode(self)` gives, written directly, for the common job: no resources,
  /// constraints, placement or waiting reasons, and no fractional numbers in its payload or
  /// result. Nil for any other job, which goes through `JSONEncoder`.
  ///
  /// Every `POST /v1/jobs` answers with its job: through `JSONEncoder` that was a sixteenth of
  /// the server's time under single submissions.
  func encodedDirectly() -> [UInt8]? {
    guard resources == nil, constraints == nil, placement == nil, waiting_for == nil else { return nil }
    var out: [UInt8] = []
    out.reserveCapacity(512)
    var first = true
    func key(_ name: StaticString) {
      out.append(first ? UInt8(ascii: "{") : UInt8(ascii: ","))
      first = false
      out.append(UInt8(ascii: "\""))
      out.append(contentsOf: UnsafeRawBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount))
      out.append(UInt8(ascii: "\""))
      out.append(UInt8(ascii: ":"))
    }
    func string(_ name: StaticString, _ value: String?) {
      guard let value else { return }
      key(name)
      CanonicalJSON.writeString(value, into: &out)
    }
    func integer(_ name: StaticString, _ value: Int) {
      key(name)
      out.append(contentsOf: String(value).utf8)
    }
    // The keys in `JSONEncoder`'s sorted order (Swift's `<` on the names); nil members are left
    // out, as the synthesised `encode(to:)` leaves them.
    integer("attempts", attempts)
    string("concurrency_key", concurrency_key)
    string("created_at", created_at)
    string("finished_at", finished_at)
    string("id", id)
    string("idempotency_key", idempotency_key)
    string("kind", kind)
    string("last_error", last_error)
    string("lease_expires_at", lease_expires_at)
    string("lease_owner", lease_owner)
    integer("max_attempts", max_attempts)
    key("payload")
    guard Self.write(payload, into: &out) else { return nil }
    integer("priority", priority)
    string("queue", queue)
    if let result {
      key("result")
      guard Self.write(result, into: &out) else { return nil }
    }
    string("run_at", run_at)
    string("started_at", started_at)
    string("state", state)
    string("updated_at", updated_at)
    out.append(UInt8(ascii: "}"))
    return out
  }

  /// Appends `value` as `JSONEncoder` with sorted keys writes it; false on a fractional number,
  /// whose digits are `JSONEncoder`'s own to choose.
  private static func write(_ value: JSONValue, into out: inout [UInt8]) -> Bool {
    switch value {
    case .null: out.append(contentsOf: "null".utf8)
    case .bool(let flag): out.append(contentsOf: (flag ? "true" : "false").utf8)
    case .int(let number): out.append(contentsOf: String(number).utf8)
    case .double: return false
    case .string(let text): CanonicalJSON.writeString(text, into: &out)
    case .array(let values):
      out.append(UInt8(ascii: "["))
      for (index, element) in values.enumerated() {
        if index > 0 { out.append(UInt8(ascii: ",")) }
        guard write(element, into: &out) else { return false }
      }
      out.append(UInt8(ascii: "]"))
    case .object(let members):
      out.append(UInt8(ascii: "{"))
      for (index, key) in members.keys.sorted().enumerated() {
        if index > 0 { out.append(UInt8(ascii: ",")) }
        CanonicalJSON.writeString(key, into: &out)
        out.append(UInt8(ascii: ":"))
        guard write(members[key]!, into: &out) else { return false }
      }
      out.append(UInt8(ascii: "}"))
    }
    return true
  }
}
