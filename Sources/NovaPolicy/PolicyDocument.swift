import Crypto
import Foundation
import NovaCore
import Yams

/// A policy file as written: rules, enforcement, the OPA fallback and cache settings.
public struct PolicyDocument: Sendable, Equatable {
  /// One ordered rule. A rule matches when every matcher it names matches; deny beats allow.
  public struct Rule: Sendable, Equatable {
    public enum Effect: String, Sendable { case allow, deny }

    public var name: String
    public var effect: Effect
    public var subjects: [String]?
    public var roles: [String]?
    public var actions: [String]?
    public var resourceKinds: [String]?
    public var resourceIDs: [String]?
    public var resourceAttributes: [String: [String]]
    /// Where the rule was written, for messages.
    public var line: Int

    public init(
      name: String, effect: Effect, subjects: [String]? = nil, roles: [String]? = nil, actions: [String]? = nil,
      resourceKinds: [String]? = nil, resourceIDs: [String]? = nil, resourceAttributes: [String: [String]] = [:],
      line: Int = 0
    ) {
      self.name = name
      self.effect = effect
      self.subjects = subjects
      self.roles = roles
      self.actions = actions
      self.resourceKinds = resourceKinds
      self.resourceIDs = resourceIDs
      self.resourceAttributes = resourceAttributes
      self.line = line
    }
  }

  /// What decides when OPA cannot answer.
  public enum FallbackMode: String, Sendable {
    case failClosed = "fail-closed"
    case staleIfError = "stale-if-error"
    case failOpen = "fail-open"
  }

  /// Open Policy Agent, asked about requests no local rule decides.
  public struct OPA: Sendable, Equatable {
    public var url: String
    /// The decision's path under `/v1/data/` (`nova/authz/allow`).
    public var path: String
    public var timeout: Duration = .milliseconds(250)
    public var onError: FallbackMode = .failClosed
    public var staleMaxAge: Duration = .seconds(300)
    /// Actions that `fail-open` allows (no other action ever fails open).
    public var failOpenActions: [String] = []
    public var breakerFailures = 5
    public var breakerCooldown: Duration = .seconds(10)

    public init(url: String, path: String) {
      self.url = url
      self.path = path
    }
  }

  /// Sizes and lifetimes of the decision caches.
  public struct Cache: Sendable, Equatable {
    public var allowSize = 10_000
    public var allowTTL: Duration = .seconds(60)
    public var denySize = 10_000
    public var denyTTL: Duration = .seconds(10)
    public init() {}
  }

  public var rules: [Rule]
  /// False: decisions are recorded but never block (shadow mode).
  public var enforce: Bool
  public var opa: OPA?
  public var cache: Cache

  public init(rules: [Rule], enforce: Bool = true, opa: OPA? = nil, cache: Cache = Cache()) {
    self.rules = rules
    self.enforce = enforce
    self.opa = opa
    self.cache = cache
  }

  /// Nova's policy when no file is given: roles as the API documents them, and the local CLI
  /// (whoever can run it can read the data directory anyway) may do everything.
  public static let builtIn = PolicyDocument(rules: [
    Rule(name: "local-cli", effect: .allow, subjects: ["cli:*"]),
    Rule(name: "viewer-reads", effect: .allow, roles: ["viewer", "operator", "admin"], actions: ["read"]),
    Rule(
      name: "operator-runs-jobs", effect: .allow, roles: ["operator", "admin"],
      actions: ["submit", "cancel", "retry", "acknowledge", "resolve", "run", "kpi.record", "control"]),
    Rule(name: "worker-works", effect: .allow, roles: ["worker"], actions: ["claim", "report"]),
    Rule(name: "admin-manages", effect: .allow, roles: ["admin"]),
  ])

  /// The version every decision names: SHA-256 of the document's canonical JSON, 16 hex digits.
  public var version: String {
    let canonical = (try? CanonicalJSON.encode(canonicalJSON)) ?? []
    return SHA256.hash(data: canonical).prefix(8).map { String(format: "%02x", $0) }.joined()
  }

  var canonicalJSON: JSONValue {
    func list(_ values: [String]?) -> JSONValue { values.map { .array($0.map(JSONValue.string)) } ?? .null }
    var object: [String: JSONValue] = [
      "enforce": .bool(enforce),
      "rules": .array(
        rules.map { rule in
          .object([
            "name": .string(rule.name), "effect": .string(rule.effect.rawValue), "subjects": list(rule.subjects),
            "roles": list(rule.roles), "actions": list(rule.actions), "resource_kinds": list(rule.resourceKinds),
            "resource_ids": list(rule.resourceIDs),
            "resource_attributes": .object(rule.resourceAttributes.mapValues { .array($0.map(JSONValue.string)) }),
          ])
        }),
    ]
    // Every setting is in the version, so that changing any of them is drift.
    func milliseconds(_ duration: Duration) -> JSONValue { .int(Int64((duration.seconds * 1000).rounded())) }
    if let opa {
      object["opa"] = .object([
        "url": .string(opa.url), "path": .string(opa.path), "on_error": .string(opa.onError.rawValue),
        "fail_open_actions": .array(opa.failOpenActions.map(JSONValue.string)), "timeout_ms": milliseconds(opa.timeout),
        "stale_max_age_ms": milliseconds(opa.staleMaxAge), "breaker_failures": .int(Int64(opa.breakerFailures)),
        "breaker_cooldown_ms": milliseconds(opa.breakerCooldown),
      ])
    }
    object["cache"] = .object([
      "allow_size": .int(Int64(cache.allowSize)), "allow_ttl_ms": milliseconds(cache.allowTTL), "deny_size": .int(Int64(cache.denySize)),
      "deny_ttl_ms": milliseconds(cache.denyTTL),
    ])
    return .object(object)
  }
}

/// A policy file that cannot be used, with where: `file:line:column: field: problem`.
public typealias PolicyFileError = ConfigFileError

extension PolicyDocument {
  /// Reads and checks a policy file.
  public static func load(path: String) throws(PolicyFileError) -> PolicyDocument {
    try parse(try YAMLReader.text(path: path), file: path)
  }

  /// Parses policy YAML; `file` names it in errors.
  public static func parse(_ text: String, file: String) throws(PolicyFileError) -> PolicyDocument {
    let reader = YAMLReader(file: file)
    guard let root = try reader.compose(text) else {
      throw PolicyFileError(file: file, line: 1, column: 1, message: "the file is empty; expected a mapping with rules")
    }
    return try reader.document(root)
  }
}

/// The policy file's sections, read strictly.
extension YAMLReader {
  fileprivate func document(_ root: Node) throws(PolicyFileError) -> PolicyDocument {
    var document = PolicyDocument(rules: [])
    var sawRules = false
    for entry in try mapping(root, "policy", allowed: ["rules", "enforce", "opa", "cache"]) {
      switch entry.key {
      case "enforce": document.enforce = try bool(entry.value, "enforce")
      case "rules":
        sawRules = true
        guard case .sequence(let sequence) = entry.value else { throw fail(entry.value, "rules: expected a list of rules") }
        var names = Set<String>()
        for (index, item) in sequence.enumerated() {
          let rule = try self.rule(item, "rules[\(index)]")
          guard names.insert(rule.name).inserted else { throw fail(item, "rules[\(index)].name: '\(rule.name)' is used twice") }
          document.rules.append(rule)
        }
      case "opa": document.opa = try opa(entry.value)
      default: document.cache = try cache(entry.value)
      }
    }
    if !sawRules { throw fail(root, "policy: no 'rules' list") }
    return document
  }

  fileprivate func rule(_ node: Node, _ field: String) throws(PolicyFileError) -> PolicyDocument.Rule {
    var name: String?
    var effect: PolicyDocument.Rule.Effect?
    var rule = PolicyDocument.Rule(name: "", effect: .deny, line: node.mark?.line ?? 0)
    for entry in try mapping(node, field, allowed: ["name", "effect", "subjects", "roles", "actions", "resource"]) {
      let path = "\(field).\(entry.key)"
      switch entry.key {
      case "name": name = try string(entry.value, path)
      case "effect":
        let text = try string(entry.value, path)
        guard let parsed = PolicyDocument.Rule.Effect(rawValue: text) else {
          throw fail(entry.value, "\(path): '\(text)' is not allow or deny")
        }
        effect = parsed
      case "subjects": rule.subjects = try strings(entry.value, path)
      case "roles": rule.roles = try strings(entry.value, path)
      case "actions": rule.actions = try strings(entry.value, path)
      default:
        for part in try mapping(entry.value, path, allowed: ["kind", "id", "attributes"]) {
          let partPath = "\(path).\(part.key)"
          switch part.key {
          case "kind": rule.resourceKinds = try strings(part.value, partPath)
          case "id": rule.resourceIDs = try strings(part.value, partPath)
          default:
            guard case .mapping(let attributes) = part.value else { throw fail(part.value, "\(partPath): expected a mapping") }
            for (key, value) in attributes {
              guard let attribute = key.string else { throw fail(key, "\(partPath): keys must be strings") }
              rule.resourceAttributes[attribute] = try strings(value, "\(partPath).\(attribute)")
            }
          }
        }
      }
    }
    guard let name, !name.isEmpty else { throw fail(node, "\(field): a rule needs a name") }
    guard let effect else { throw fail(node, "\(field) (\(name)): a rule needs an effect (allow or deny)") }
    rule.name = name
    rule.effect = effect
    return rule
  }

  fileprivate func opa(_ node: Node) throws(PolicyFileError) -> PolicyDocument.OPA {
    var url: String?
    var path: String?
    var settings: [(String, Node)] = []
    for entry in try mapping(
      node, "opa",
      allowed: [
        "url", "path", "timeout_ms", "on_error", "stale_max_age_seconds", "fail_open_actions", "breaker_failures",
        "breaker_cooldown_seconds",
      ])
    {
      switch entry.key {
      case "url":
        let text = try string(entry.value, "opa.url")
        guard let parsed = URL(string: text), parsed.scheme == "http" || parsed.scheme == "https", parsed.host != nil else {
          throw fail(entry.value, "opa.url: '\(text)' is not an http(s) URL")
        }
        url = text.hasSuffix("/") ? String(text.dropLast()) : text
      case "path":
        let text = try string(entry.value, "opa.path").trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        guard !text.isEmpty, text.split(separator: "/").allSatisfy({ !$0.isEmpty && $0.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" } })
        else {
          throw fail(entry.value, "opa.path: '\(text)' is not a rule path such as nova/authz/allow")
        }
        path = text
      default: settings.append((entry.key, entry.value))
      }
    }
    guard let url else { throw fail(node, "opa: needs a url") }
    guard let path else { throw fail(node, "opa: needs a path (the decision under /v1/data/, such as nova/authz/allow)") }
    var opa = PolicyDocument.OPA(url: url, path: path)
    for (key, value) in settings {
      switch key {
      case "timeout_ms": opa.timeout = .milliseconds(Int64(try number(value, "opa.timeout_ms", range: 1...60_000)))
      case "on_error":
        let text = try string(value, "opa.on_error")
        guard let mode = PolicyDocument.FallbackMode(rawValue: text) else {
          throw fail(value, "opa.on_error: '\(text)' is not fail-closed, stale-if-error or fail-open")
        }
        opa.onError = mode
      case "stale_max_age_seconds": opa.staleMaxAge = .seconds(try number(value, "opa.stale_max_age_seconds", range: 0...86_400))
      case "fail_open_actions": opa.failOpenActions = try strings(value, "opa.fail_open_actions")
      case "breaker_failures": opa.breakerFailures = Int(try number(value, "opa.breaker_failures", range: 1...1000))
      default: opa.breakerCooldown = .seconds(try number(value, "opa.breaker_cooldown_seconds", range: 0.01...3600))
      }
    }
    if opa.onError == .failOpen && opa.failOpenActions.isEmpty {
      throw fail(node, "opa: on_error fail-open needs fail_open_actions (the actions that may proceed when OPA is down)")
    }
    return opa
  }

  fileprivate func cache(_ node: Node) throws(PolicyFileError) -> PolicyDocument.Cache {
    var cache = PolicyDocument.Cache()
    for entry in try mapping(node, "cache", allowed: ["allow_size", "allow_ttl_seconds", "deny_size", "deny_ttl_seconds"]) {
      let field = "cache.\(entry.key)"
      switch entry.key {
      case "allow_size": cache.allowSize = Int(try number(entry.value, field, range: 0...10_000_000))
      case "deny_size": cache.denySize = Int(try number(entry.value, field, range: 0...10_000_000))
      case "allow_ttl_seconds": cache.allowTTL = .seconds(try number(entry.value, field, range: 0...86_400))
      default: cache.denyTTL = .seconds(try number(entry.value, field, range: 0...86_400))
      }
    }
    return cache
  }
}
