import Crypto
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

  /// SHA-256 of the request's canonical form (subject, roles as a set, action, resource,
  /// attributes sorted): equal questions get equal keys, whatever the order they were built in.
  public var cacheKey: DecisionKey {
    var bytes: [UInt8] = []
    bytes.reserveCapacity(128)
    func put(_ text: String) {
      let utf8 = text.utf8
      let count = UInt32(utf8.count)
      bytes.append(UInt8(truncatingIfNeeded: count >> 24))
      bytes.append(UInt8(truncatingIfNeeded: count >> 16))
      bytes.append(UInt8(truncatingIfNeeded: count >> 8))
      bytes.append(UInt8(truncatingIfNeeded: count))
      bytes.append(contentsOf: utf8)
    }
    func put(_ map: [String: String]) {
      put(String(map.count))
      for key in map.keys.sorted() {
        put(key)
        put(map[key]!)
      }
    }
    put(subject.id)
    let roles = subject.roles.count > 1 ? Array(Set(subject.roles)).sorted() : subject.roles
    put(String(roles.count))
    for role in roles { put(role) }
    put(subject.attributes)
    put(action)
    put(resource.kind)
    put(resource.id ?? "")
    put(resource.attributes)
    return DecisionKey(SHA256.hash(data: bytes))
  }

  /// The request as OPA's `input` document.
  public var opaInput: JSONValue {
    var context: [String: JSONValue] = ["time": .string(ISO8601DateFormatter().string(from: time))]
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

/// A 256-bit digest used as a cache key.
public struct DecisionKey: Hashable, Sendable {
  let a: UInt64, b: UInt64, c: UInt64, d: UInt64

  init(_ digest: SHA256.Digest) {
    var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
    digest.withUnsafeBytes { raw in
      words = (
        raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self), raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self),
        raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self), raw.loadUnaligned(fromByteOffset: 24, as: UInt64.self)
      )
    }
    (a, b, c, d) = words
  }

  /// Which shard of a cache holds the key.
  func shard(of count: Int) -> Int { Int(truncatingIfNeeded: a % UInt64(count)) }
}
