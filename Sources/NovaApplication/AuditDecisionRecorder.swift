import Foundation
import NovaCore
import NovaPolicy
import NovaSecurity

/// Records every policy decision in the audit log as `policy.decided`.
public struct AuditDecisionRecorder: DecisionRecorder {
  public let audit: AuditLog

  public init(audit: AuditLog) { self.audit = audit }

  public func record(_ decision: PolicyDecision, for request: PolicyRequest) async throws {
    let event = HeldAuditEvents.Event(
      time: Date().millisecondsSince1970, actor: request.subject.id, event: "policy.decided", subject: request.subject.id,
      payload: Self.payload(of: decision, for: request))
    // A permit for an action that holds its events is written with the action's change (or on
    // its own if that fails); others now. A decision that cannot be recorded does not stand:
    // the error fails the request.
    if decision.permits, let held = AuditContext.held {
      let audit = audit
      held.hold(event) { events in try await audit.append(held: events) }
      return
    }
    try await audit.append(held: [event])
  }

  /// The entry's payload in canonical JSON (RFC 8785), written directly: one is written for
  /// every request, and building it as a `JSONValue` to canonicalise was a thirtieth of the
  /// server's time under single submissions. Keys in code-unit order; `resource.attributes`
  /// sorted as `CanonicalJSON` sorts them.
  static func payload(of decision: PolicyDecision, for request: PolicyRequest) -> String {
    var out: [UInt8] = []
    out.reserveCapacity(384)
    var first = true
    func key(_ name: StaticString) {
      out.append(first ? UInt8(ascii: "{") : UInt8(ascii: ","))
      first = false
      out.append(UInt8(ascii: "\""))
      out.append(contentsOf: UnsafeRawBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount))
      out.append(contentsOf: [UInt8(ascii: "\""), UInt8(ascii: ":")])
    }
    func string(_ name: StaticString, _ value: String?) {
      guard let value else { return }
      key(name)
      CanonicalJSON.writeString(value, into: &out)
    }
    func flag(_ name: StaticString, _ value: Bool?) {
      guard let value else { return }
      key(name)
      out.append(contentsOf: (value ? "true" : "false").utf8)
    }
    string("action", request.action)
    flag("allowed", decision.allowed)
    flag("enforced", decision.enforced)
    string("fallback", decision.fallback)
    // In shadow mode the role floor's decision is the one enforced, recorded beside the shadowed one.
    flag("floor_allowed", decision.floorAllowed)
    string("opa_revision", decision.opaRevision)
    string("policy_version", decision.policyVersion)
    string("reason", decision.reason)
    key("resource")
    out.append(contentsOf: #"{"attributes":{"#.utf8)
    let attributes = request.resource.attributes
    for (index, name) in attributes.keys.sorted(by: { $0.utf16.lexicographicallyPrecedes($1.utf16) }).enumerated() {
      if index > 0 { out.append(UInt8(ascii: ",")) }
      CanonicalJSON.writeString(name, into: &out)
      out.append(UInt8(ascii: ":"))
      CanonicalJSON.writeString(attributes[name]!, into: &out)
    }
    out.append(UInt8(ascii: "}"))
    if let id = request.resource.id {
      out.append(contentsOf: #","id":"#.utf8)
      CanonicalJSON.writeString(id, into: &out)
    }
    out.append(contentsOf: #","kind":"#.utf8)
    CanonicalJSON.writeString(request.resource.kind, into: &out)
    out.append(UInt8(ascii: "}"))
    key("roles")
    out.append(UInt8(ascii: "["))
    for (index, role) in request.subject.roles.enumerated() {
      if index > 0 { out.append(UInt8(ascii: ",")) }
      CanonicalJSON.writeString(role, into: &out)
    }
    out.append(UInt8(ascii: "]"))
    string("rule", decision.rule)
    string("source", decision.source.rawValue)
    string("source_address", request.source)
    out.append(UInt8(ascii: "}"))
    return String(decoding: out, as: UTF8.self)
  }
}
