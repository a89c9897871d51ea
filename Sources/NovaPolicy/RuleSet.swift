import NovaCore

/// Local rules compiled for evaluation: patterns parsed once, and rules indexed by the literal
/// actions they name, so a request looks only at rules that can match its action.
public struct RuleSet: Sendable {
  /// A class: scanning many rules then moves one reference per rule, not each rule's fields.
  final class Compiled: Sendable {
    let order: Int
    let name: String
    let allow: Bool
    let subjects: PatternList?
    let roles: PatternList?
    let actions: PatternList?
    let kinds: PatternList?
    let ids: PatternList?
    let attributes: [(String, PatternList)]

    init(
      order: Int, name: String, allow: Bool, subjects: PatternList?, roles: PatternList?, actions: PatternList?,
      kinds: PatternList?, ids: PatternList?, attributes: [(String, PatternList)]
    ) {
      self.order = order
      self.name = name
      self.allow = allow
      self.subjects = subjects
      self.roles = roles
      self.actions = actions
      self.kinds = kinds
      self.ids = ids
      self.attributes = attributes
    }

    func matches(_ request: PolicyRequest) -> Bool {
      if let actions, !actions.matches(request.action) { return false }
      if let subjects, !subjects.matches(request.subject.id) { return false }
      if let roles, !request.subject.roles.contains(where: roles.matches) { return false }
      if let kinds, !kinds.matches(request.resource.kind) { return false }
      if let ids, !ids.matches(request.resource.id ?? "") { return false }
      for (name, patterns) in attributes {
        guard let value = request.resource.attributes[name], patterns.matches(value) else { return false }
      }
      return true
    }
  }

  let byAction: [String: [Compiled]]
  let anyAction: [Compiled]
  public let count: Int

  public init(_ rules: [PolicyDocument.Rule]) {
    var byAction: [String: [Compiled]] = [:]
    var anyAction: [Compiled] = []
    for (order, rule) in rules.enumerated() {
      let compiled = Compiled(
        order: order, name: rule.name, allow: rule.effect == .allow, subjects: rule.subjects.map(PatternList.init),
        roles: rule.roles.map(PatternList.init), actions: rule.actions.map(PatternList.init),
        kinds: rule.resourceKinds.map(PatternList.init), ids: rule.resourceIDs.map(PatternList.init),
        attributes: rule.resourceAttributes.keys.sorted().map { ($0, PatternList(rule.resourceAttributes[$0]!)) })
      if let actions = compiled.actions, actions.patterns.allSatisfy({ $0.literal != nil }) {
        for literal in Set(actions.patterns.compactMap(\.literal)) { byAction[literal, default: []].append(compiled) }
      } else {
        anyAction.append(compiled)
      }
    }
    self.byAction = byAction
    self.anyAction = anyAction
    count = rules.count
  }

  /// The deciding rule: the first matching deny, else the first matching allow, else nil.
  public func evaluate(_ request: PolicyRequest) -> (allow: Bool, rule: String)? {
    var firstAllow: Compiled?
    var firstDeny: Compiled?
    func consider(_ rules: [Compiled]) {
      for rule in rules where rule.matches(request) {
        if rule.allow {
          if firstAllow.map({ rule.order < $0.order }) ?? true { firstAllow = rule }
        } else if firstDeny.map({ rule.order < $0.order }) ?? true {
          firstDeny = rule
        }
      }
    }
    if let rules = byAction[request.action] { consider(rules) }
    consider(anyAction)
    if let firstDeny { return (false, firstDeny.name) }
    if let firstAllow { return (true, firstAllow.name) }
    return nil
  }

  /// Whether some rule that can decide `action` looks at the resource attribute `name`: when none
  /// does, requests that differ only in that attribute are decided alike.
  public func consults(attribute name: String, action: String) -> Bool {
    ((byAction[action] ?? []) + anyAction).contains { rule in
      (rule.actions?.matches(action) ?? true) && rule.attributes.contains { $0.0 == name }
    }
  }

  /// Whether some rule could allow `subject` to take `action` on some resource (resource
  /// conditions are not looked at): when none can, a request is refused before its body is read.
  public func mayAllow(action: String, subject: PolicySubject) -> Bool {
    let candidates = (byAction[action] ?? []) + anyAction
    return candidates.contains { rule in
      guard rule.allow else { return false }
      if let actions = rule.actions, !actions.matches(action) { return false }
      if let subjects = rule.subjects, !subjects.matches(subject.id) { return false }
      if let roles = rule.roles, !subject.roles.contains(where: roles.matches) { return false }
      return true
    }
  }
}
