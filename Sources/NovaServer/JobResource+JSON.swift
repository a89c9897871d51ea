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
    var out = JSONObjectWriter(capacity: 512)
    // The keys in `JSONEncoder`'s sorted order (Swift's `<` on the names); nil members are left
    // out, as the synthesised `encode(to:)` leaves them.
    out.integer("attempts", attempts)
    out.string("concurrency_key", concurrency_key)
    out.string("created_at", created_at)
    out.string("finished_at", finished_at)
    out.string("id", id)
    out.string("idempotency_key", idempotency_key)
    out.string("kind", kind)
    out.string("last_error", last_error)
    out.string("lease_expires_at", lease_expires_at)
    out.string("lease_owner", lease_owner)
    out.integer("max_attempts", max_attempts)
    out.key("payload")
    guard Self.write(payload, into: &out.bytes) else { return nil }
    out.integer("priority", priority)
    out.string("queue", queue)
    if let result {
      out.key("result")
      guard Self.write(result, into: &out.bytes) else { return nil }
    }
    out.string("run_at", run_at)
    out.string("started_at", started_at)
    out.string("state", state)
    out.string("updated_at", updated_at)
    return out.finish()
  }

  /// Appends `value` as `JSONEncoder` with sorted keys writes it (keys in Swift's `<` order);
  /// false on a fractional number, whose digits are `JSONEncoder`'s own to choose.
  private static func write(_ value: JSONValue, into out: inout [UInt8]) -> Bool {
    (try? CanonicalJSON.write(value, into: &out, keysInOrder: <) { _ in throw FractionalNumber() }) != nil
  }

  private struct FractionalNumber: Error {}
}
