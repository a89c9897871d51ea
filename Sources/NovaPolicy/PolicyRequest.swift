import Foundation
import NovaCore

/// Who asks: an id (`token:ci-bot`, `agent:trainer`, `cli:root`), roles, and free attributes.
public struct PolicySubject: Sendable, Hashable, Codable {
  public var id: String
  public var roles: [String]
  public var attributes: [String: String]

  public init(id: String, roles: [String] = [], attributes: [String: String] = [:]) {
    self.id = id
    self.roles = roles
    self.attributes = attributes
  }
}

/// What is acted on: a kind (`job`, `token`, `policy`, `evidence`, `alert`), an id, and
/// attributes such as `queue` and `job_kind`.
public struct PolicyResource: Sendable, Hashable, Codable {
  public var kind: String
  public var id: String?
  public var attributes: [String: String]

  public init(kind: String, id: String? = nil, attributes: [String: String] = [:]) {
    self.kind = kind
    self.id = id
    self.attributes = attributes
  }
}

/// One question to the policy engine: may `subject` take `action` on `resource`?
public struct PolicyRequest: Sendable, Hashable, Codable {
  public var subject: PolicySubject
  public var action: String
  public var resource: PolicyResource
  /// When and from where (not part of the cache key: rules that depend on them should not be cached).
  public var time: Date
  public var source: String?

  public init(subject: PolicySubject, action: String, resource: PolicyResource, time: Date = Date(), source: String? = nil) {
    self.subject = subject
    self.action = action
    self.resource = resource
    self.time = time
    self.source = source
  }

  /// The request's canonical form (subject, roles as a set, action, resource, attributes
  /// sorted, each length-prefixed): equal questions get equal keys, whatever order they were
  /// built in. The key hashes with SipHash under the process's random seed, and a hit compares
  /// the whole form, so no crafted request can collide with another's cached decision.
  public var cacheKey: DecisionKey { cacheKey(withContext: false) }

  /// The cache key, with the request's source address when `withContext` (OPA sees it in
  /// `input.context`, so its answer for one address must never be served to another).
  public func cacheKey(withContext: Bool) -> DecisionKey {
    var bytes: [UInt8] = []
    bytes.reserveCapacity(160)
    func put(_ text: String) {
      var text = text
      text.withUTF8 { utf8 in
        let count = UInt32(utf8.count)
        bytes.append(UInt8(truncatingIfNeeded: count >> 24))
        bytes.append(UInt8(truncatingIfNeeded: count >> 16))
        bytes.append(UInt8(truncatingIfNeeded: count >> 8))
        bytes.append(UInt8(truncatingIfNeeded: count))
        bytes.append(contentsOf: utf8)
      }
    }
    func put(_ map: [String: String]) {
      bytes.append(UInt8(truncatingIfNeeded: map.count))
      if map.count == 1, let (key, value) = map.first {
        put(key)
        put(value)
        return
      }
      for key in map.keys.sorted() {
        put(key)
        put(map[key]!)
      }
    }
    put(subject.id)
    if subject.roles.count <= 1 {
      bytes.append(UInt8(subject.roles.count))
      for role in subject.roles { put(role) }
    } else {
      var previous: String?
      let sorted = subject.roles.sorted()
      bytes.append(UInt8(truncatingIfNeeded: sorted.count))
      for role in sorted where role != previous {
        put(role)
        previous = role
      }
    }
    put(subject.attributes)
    put(action)
    put(resource.kind)
    put(resource.id ?? "")
    put(resource.attributes)
    if withContext {
      bytes.append(source == nil ? 0 : 1)
      put(source ?? "")
    }
    return DecisionKey(bytes)
  }

  /// The request as OPA's `input` document.
  public var opaInput: JSONValue {
    var context: [String: JSONValue] = ["time": .string(AuditTime.string(time.millisecondsSince1970))]
    if let source { context["source"] = .string(source) }
    var resourceFields: [String: JSONValue] = [
      "kind": .string(resource.kind), "attributes": .object(resource.attributes.mapValues(JSONValue.string)),
    ]
    if let id = resource.id { resourceFields["id"] = .string(id) }
    return .object([
      "subject": .object([
        "id": .string(subject.id), "roles": .array(subject.roles.map(JSONValue.string)),
        "attributes": .object(subject.attributes.mapValues(JSONValue.string)),
      ]),
      "action": .string(action),
      "resource": .object(resourceFields),
      "context": .object(context),
    ])
  }
}

/// A request's canonical bytes with their hash computed once, as a cache key.
public struct DecisionKey: Hashable, Sendable {
  let bytes: [UInt8]
  let hash: Int

  init(_ bytes: [UInt8]) {
    self.bytes = bytes
    var hasher = Hasher()
    bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
    hash = hasher.finalize()
  }

  public func hash(into hasher: inout Hasher) { hasher.combine(hash) }

  public static func == (lhs: DecisionKey, rhs: DecisionKey) -> Bool {
    lhs.hash == rhs.hash && lhs.bytes == rhs.bytes
  }

  /// Which shard of a cache holds the key.
  func shard(of count: Int) -> Int { Int(UInt(bitPattern: hash) % UInt(count)) }
}
