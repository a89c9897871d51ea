import Foundation
import NovaCore
import Yams

/// One case of a policy test table: a request and the decision it must get.
public struct PolicyFixture: Sendable {
  public var name: String
  public var request: PolicyRequest
  public var expectAllow: Bool
  public var line: Int

  /// Reads a fixtures file: a list of `{name, subject, roles, action, resource: {kind, id,
  /// attributes}, expect: allow|deny}`. Errors name file, line and column.
  public static func load(path: String) throws(PolicyFileError) -> [PolicyFixture] {
    try parse(try YAMLReader.text(path: path), file: path)
  }

  /// Parses fixtures YAML; `file` names it in errors.
  public static func parse(_ text: String, file: String) throws(PolicyFileError) -> [PolicyFixture] {
    let reader = YAMLReader(file: file)
    func fail(_ node: Node?, _ message: String) -> PolicyFileError { reader.fail(node, message) }
    let root = try reader.compose(text)
    guard case .sequence(let cases)? = root else { throw fail(root, "expected a list of cases") }
    var fixtures: [PolicyFixture] = []
    for (index, item) in cases.enumerated() {
      let field = "[\(index)]"
      guard case .mapping(let mapping) = item else { throw fail(item, "\(field): expected a mapping") }
      var values: [String: Node] = [:]
      for (key, value) in mapping {
        guard let name = key.string,
          ["name", "subject", "roles", "action", "resource", "expect"].contains(name)
        else { throw fail(key, "\(field): unknown key '\(key.string ?? "?")'") }
        values[name] = value
      }
      func string(_ key: String, required: Bool = true) throws(PolicyFileError) -> String? {
        guard let node = values[key] else {
          if required { throw fail(item, "\(field): needs '\(key)'") }
          return nil
        }
        guard case .scalar(let scalar) = node else { throw fail(node, "\(field).\(key): expected a string") }
        return scalar.string
      }
      let name = try string("name") ?? ""
      let subject = try string("subject") ?? ""
      let action = try string("action") ?? ""
      let expect = try string("expect") ?? ""
      guard expect == "allow" || expect == "deny" else { throw fail(values["expect"], "\(field).expect: '\(expect)' is not allow or deny") }
      var roles: [String] = []
      if let node = values["roles"] {
        switch node {
        case .scalar(let scalar): roles = [scalar.string]
        case .sequence(let sequence): roles = sequence.compactMap(\.string)
        default: throw fail(node, "\(field).roles: expected a list of strings")
        }
      }
      var resource = PolicyResource(kind: "job")
      if let node = values["resource"] {
        guard case .mapping(let parts) = node else { throw fail(node, "\(field).resource: expected a mapping") }
        for (key, value) in parts {
          switch key.string {
          case "kind": resource.kind = value.string ?? ""
          case "id": resource.id = value.string
          case "attributes":
            guard case .mapping(let attributes) = value else { throw fail(value, "\(field).resource.attributes: expected a mapping") }
            for (attribute, text) in attributes {
              guard let attributeName = attribute.string, let attributeValue = text.string else {
                throw fail(text, "\(field).resource.attributes: expected strings")
              }
              resource.attributes[attributeName] = attributeValue
            }
          default: throw fail(key, "\(field).resource: unknown key '\(key.string ?? "?")'")
          }
        }
      }
      fixtures.append(
        PolicyFixture(
          name: name, request: PolicyRequest(subject: PolicySubject(id: subject, roles: roles), action: action, resource: resource),
          expectAllow: expect == "allow", line: item.mark?.line ?? 0))
    }
    return fixtures
  }
}
