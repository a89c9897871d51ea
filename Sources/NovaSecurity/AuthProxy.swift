import Foundation
import NovaCore
import Yams

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#endif

/// Sign-in by an authenticating proxy in front of Nova (oauth2-proxy and the like): the proxy
/// puts the person's identity in a header, and Nova believes it only from the proxy's addresses.
/// The role comes from a role map; a person it gives no role is refused.
public struct AuthProxy: Sendable {
  /// The header that names the person (`X-Forwarded-Email`).
  public var header: String
  public var roles: AuthProxyRoles
  /// The addresses the header is believed from.
  public var trusted: [AddressRange]

  public init(header: String, roles: AuthProxyRoles, trusted: [AddressRange]) {
    self.header = header
    self.roles = roles
    self.trusted = trusted
  }

  /// Whether `address` (the peer's IP address) is one of the proxy's.
  public func trusts(_ address: String?) -> Bool {
    guard let address, let bytes = AddressRange.bytes(of: address) else { return false }
    return trusted.contains { $0.contains(bytes) }
  }
}

/// Who gets which role through the proxy: exact identities first, then patterns in file order,
/// then the default (none: refused).
public struct AuthProxyRoles: Sendable, Equatable {
  public var users: [String: Role]
  public var patterns: [(pattern: GlobPattern, role: Role)]
  public var fallback: Role?

  public init(users: [String: Role] = [:], patterns: [(GlobPattern, Role)] = [], fallback: Role? = nil) {
    self.users = users
    self.patterns = patterns.map { (pattern: $0.0, role: $0.1) }
    self.fallback = fallback
  }

  public static func == (lhs: AuthProxyRoles, rhs: AuthProxyRoles) -> Bool {
    lhs.users == rhs.users && lhs.fallback == rhs.fallback
      && lhs.patterns.map(\.pattern) == rhs.patterns.map(\.pattern) && lhs.patterns.map(\.role) == rhs.patterns.map(\.role)
  }

  /// The role of `identity` (compared without regard to case), or nil.
  public func role(of identity: String) -> Role? {
    let key = identity.lowercased()
    if let role = users[key] { return role }
    if let match = patterns.first(where: { $0.pattern.matches(key) }) { return match.role }
    return fallback
  }

  /// Reads a role map:
  ///
  /// ```yaml
  /// users:
  ///   alice@example.com: operator
  /// patterns:
  ///   - match: "*@example.com"
  ///     role: viewer
  /// default: none
  /// ```
  public static func load(path: String) throws(ConfigFileError) -> AuthProxyRoles {
    try parse(YAMLReader.text(path: path), file: path)
  }

  /// Parses a role map's text (`file` names it in errors).
  public static func parse(_ text: String, file: String) throws(ConfigFileError) -> AuthProxyRoles {
    let reader = YAMLReader(file: file)
    guard let root = try reader.compose(text) else {
      throw ConfigFileError(file: file, line: 0, column: 0, message: "the role map is empty; give users, patterns or default")
    }
    var roles = AuthProxyRoles()
    func role(_ node: Node, _ field: String) throws(ConfigFileError) -> Role? {
      let text = try reader.string(node, field)
      if text == "none" { return nil }
      guard let role = Role(rawValue: text), role != .worker else {
        throw reader.fail(node, "\(field): '\(text)' is not a console role; use viewer, operator, admin or none")
      }
      return role
    }
    for (key, _, value) in try reader.mapping(root, "role map", allowed: ["users", "patterns", "default"]) {
      switch key {
      case "users":
        guard case .mapping(let mapping) = value else { throw reader.fail(value, "users: expected a mapping of identity to role") }
        for (name, roleNode) in mapping {
          guard let identity = name.string, !identity.isEmpty else { throw reader.fail(name, "users: keys must be identities") }
          guard roles.users[identity.lowercased()] == nil else { throw reader.fail(name, "users: '\(identity)' appears twice") }
          if let given = try role(roleNode, "users.\(identity)") { roles.users[identity.lowercased()] = given }
        }
      case "patterns":
        guard case .sequence(let items) = value else { throw reader.fail(value, "patterns: expected a list of {match, role}") }
        for (index, item) in items.enumerated() {
          var match: String?
          var given: Role?
          var hasRole = false
          for (field, _, node) in try reader.mapping(item, "patterns[\(index)]", allowed: ["match", "role"]) {
            if field == "match" { match = try reader.string(node, "patterns[\(index)].match").lowercased() }
            if field == "role" {
              given = try role(node, "patterns[\(index)].role")
              hasRole = true
            }
          }
          guard let match, hasRole else { throw reader.fail(item, "patterns[\(index)]: needs both match and role") }
          if let given { roles.patterns.append((GlobPattern(match), given)) }
        }
      default:
        roles.fallback = try role(value, "default")
      }
    }
    return roles
  }
}

/// An IP address or a CIDR range (`127.0.0.1`, `10.0.0.0/8`, `::1`, `fd00::/8`).
public struct AddressRange: Sendable, Equatable, CustomStringConvertible {
  let network: [UInt8]
  let prefix: Int
  public let description: String

  /// Parses `text`; nil when it is not an address or range.
  public init?(_ text: String) {
    let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
    guard let bytes = Self.bytes(of: String(parts[0])) else { return nil }
    let bits = bytes.count * 8
    var prefix = bits
    if parts.count == 2 {
      guard let given = Int(parts[1]), (0...bits).contains(given) else { return nil }
      prefix = given
    }
    network = bytes
    self.prefix = prefix
    description = text
  }

  /// Parses a comma-separated list; throws naming the first entry that is not a range.
  public static func list(_ text: String, field: String) throws(NovaError) -> [AddressRange] {
    var ranges: [AddressRange] = []
    for item in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !item.isEmpty {
      guard let range = AddressRange(item) else {
        throw .invalidInput(field: field, message: "'\(item)' is not an IP address or CIDR range (such as 127.0.0.1 or 10.0.0.0/8)")
      }
      ranges.append(range)
    }
    if ranges.isEmpty { throw .invalidInput(field: field, message: "give at least one address or range") }
    return ranges
  }

  func contains(_ address: [UInt8]) -> Bool {
    var address = address
    // An IPv4 peer seen on an IPv6 socket (::ffff:a.b.c.d) is its IPv4 address.
    if network.count == 4, address.count == 16, address[0..<10].allSatisfy({ $0 == 0 }), address[10] == 0xff, address[11] == 0xff {
      address = Array(address[12...])
    }
    guard address.count == network.count else { return false }
    var left = prefix
    for index in network.indices where left > 0 {
      let bits = min(8, left)
      let mask: UInt8 = bits == 8 ? 0xff : ~(0xff >> UInt8(bits))
      if address[index] & mask != network[index] & mask { return false }
      left -= bits
    }
    return true
  }

  /// The bytes of an IPv4 or IPv6 address, or nil.
  static func bytes(of text: String) -> [UInt8]? {
    var v4 = in_addr()
    if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
    var v6 = in6_addr()
    if inet_pton(AF_INET6, text, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
    return nil
  }
}
