import Foundation
import NovaCore
import Yams

/// Alerting as `thresholds.yaml` describes it: settings, SLA, rules, receivers and routes. (Its
/// `baseline:` section belongs to `nova bench baseline` and is read there.)
public struct AlertingConfiguration: Sendable, Equatable {
  public var settings = AlertSettings()
  public var rules: [AlertRule] = []
  public var receivers: [ReceiverConfig] = []
  public var routes: [AlertRoute] = []
  /// The file it came from, if any.
  public var path: String?

  public init() {}

  /// The route a rule's notifications take: its own, the default, or the first; nil without routes.
  public func route(for rule: AlertRule) -> AlertRoute? {
    let name = rule.route ?? settings.defaultRoute
    return name.flatMap { name in routes.first { $0.name == name } } ?? routes.first
  }

  public func receiver(named name: String) -> ReceiverConfig? { receivers.first { $0.name == name } }

  /// Reads and checks a thresholds file; every error names the file, line and column.
  public static func load(path: String) throws(ConfigFileError) -> AlertingConfiguration {
    var configuration = try parse(try YAMLReader.text(path: path), file: path)
    configuration.path = path
    return configuration
  }

  /// Parses thresholds YAML; `file` names it in errors.
  public static func parse(_ text: String, file: String) throws(ConfigFileError) -> AlertingConfiguration {
    let reader = YAMLReader(file: file)
    guard let root = try reader.compose(text) else {
      throw ConfigFileError(file: file, line: 1, column: 1, message: "the file is empty; expected a mapping with rules")
    }
    return try reader.alerting(root)
  }
}

extension YAMLReader {
  fileprivate func alerting(_ root: Node) throws(ConfigFileError) -> AlertingConfiguration {
    var configuration = AlertingConfiguration()
    var ruleNodes: [Node] = []
    var receiverNodes: [Node] = []
    var routeNodes: [Node] = []
    for entry in try mapping(root, "thresholds", allowed: ["baseline", "settings", "sla", "rules", "receivers", "routes"]) {
      switch entry.key {
      case "baseline": continue  // read by `nova bench baseline`
      case "settings": try settings(entry.value, into: &configuration.settings)
      case "sla":
        for item in try mapping(entry.value, "sla", allowed: ["acknowledge_within", "resolve_within"]) {
          let value = try duration(item.value, "sla.\(item.key)", range: .seconds(1) ... .seconds(30 * 86_400))
          if item.key == "acknowledge_within" {
            configuration.settings.acknowledgeWithin = value
          } else {
            configuration.settings.resolveWithin = value
          }
        }
      case "rules": ruleNodes = try list(entry.value, "rules")
      case "receivers": receiverNodes = try list(entry.value, "receivers")
      default: routeNodes = try list(entry.value, "routes")
      }
    }
    for (index, node) in receiverNodes.enumerated() {
      let receiver = try self.receiver(node, "receivers[\(index)]")
      guard configuration.receiver(named: receiver.name) == nil else {
        throw fail(node, "receivers[\(index)].name: '\(receiver.name)' is used twice")
      }
      configuration.receivers.append(receiver)
    }
    for (index, node) in routeNodes.enumerated() {
      let route = try self.route(node, "routes[\(index)]", receivers: configuration.receivers)
      guard !configuration.routes.contains(where: { $0.name == route.name }) else {
        throw fail(node, "routes[\(index)].name: '\(route.name)' is used twice")
      }
      configuration.routes.append(route)
    }
    if let name = configuration.settings.defaultRoute, !configuration.routes.contains(where: { $0.name == name }) {
      throw fail(root, "settings.default_route: no route is named '\(name)'")
    }
    var names = Set<String>()
    for (index, node) in ruleNodes.enumerated() {
      let rule = try self.rule(node, "rules[\(index)]", routes: configuration.routes)
      guard names.insert(rule.name).inserted else { throw fail(node, "rules[\(index)].name: '\(rule.name)' is used twice") }
      configuration.rules.append(rule)
    }
    return configuration
  }

  private func list(_ node: Node, _ field: String) throws(ConfigFileError) -> [Node] {
    if case .scalar(let scalar) = node, ["", "~", "null"].contains(scalar.string) { return [] }
    guard case .sequence(let sequence) = node else { throw fail(node, "\(field): expected a list") }
    return Array(sequence)
  }

  private func settings(_ node: Node, into settings: inout AlertSettings) throws(ConfigFileError) {
    for entry in try mapping(
      node, "settings",
      allowed: [
        "evaluation_interval", "alertmanager_resend", "default_route", "pagerduty_webhook_secret_env", "pagerduty_webhook_secret_file",
        "external_url",
      ])
    {
      let field = "settings.\(entry.key)"
      switch entry.key {
      case "evaluation_interval": settings.evaluationInterval = try duration(entry.value, field, range: .milliseconds(100) ... .seconds(3600))
      case "alertmanager_resend": settings.alertmanagerResend = try duration(entry.value, field, range: .seconds(1) ... .seconds(3600))
      case "default_route": settings.defaultRoute = try string(entry.value, field)
      case "pagerduty_webhook_secret_env": settings.pagerDutyWebhookSecret = .environment(try variableName(entry.value, field))
      case "pagerduty_webhook_secret_file": settings.pagerDutyWebhookSecret = .file(try string(entry.value, field))
      default: settings.externalURL = try url(entry.value, field)
      }
    }
  }

  private func variableName(_ node: Node, _ field: String) throws(ConfigFileError) -> String {
    let name = try string(node, field)
    guard !name.isEmpty, name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }), !name.first!.isNumber else {
      throw fail(node, "\(field): '\(name)' is not an environment variable name (it names the variable, not the secret)")
    }
    return name
  }

  private func url(_ node: Node, _ field: String) throws(ConfigFileError) -> String {
    let text = try string(node, field)
    guard let parsed = URL(string: text), parsed.scheme == "http" || parsed.scheme == "https", parsed.host != nil else {
      throw fail(node, "\(field): '\(text)' is not an http(s) URL")
    }
    return text
  }

  private func kpiName(_ node: Node, _ field: String) throws(ConfigFileError) -> String {
    let name = try string(node, field)
    guard !name.isEmpty, name.utf8.count <= 128,
      name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "." || $0 == ":") })
    else { throw fail(node, "\(field): '\(name)' is not a KPI name (letters, digits, _ . :)") }
    return name
  }

  private func receiver(_ node: Node, _ field: String) throws(ConfigFileError) -> ReceiverConfig {
    var values: [String: (key: Node, value: Node)] = [:]
    for entry in try mapping(
      node, field,
      allowed: [
        "name", "type", "url", "url_env", "url_file", "routing_key_env", "routing_key_file", "secret_env", "secret_file", "source", "component",
        "group", "class",
      ])
    {
      values[entry.key] = (entry.keyNode, entry.value)
    }
    guard let nameNode = values["name"] else { throw fail(node, "\(field): a receiver needs a name") }
    let name = try string(nameNode.value, "\(field).name")
    guard let typeNode = values["type"] else { throw fail(node, "\(field) (\(name)): needs a type: pagerduty, webhook or alertmanager") }
    let typeText = try string(typeNode.value, "\(field).type")
    guard let kind = ReceiverConfig.Kind(rawValue: typeText) else {
      throw fail(typeNode.value, "\(field).type: '\(typeText)' is not pagerduty, webhook or alertmanager")
    }
    let url: String
    var urlSecret: ReceiverConfig.Secret?
    let urlKeys = ["url", "url_env", "url_file"].filter { values[$0] != nil }
    if urlKeys.count > 1 { throw fail(values[urlKeys[1]]!.key, "\(field): give one of url, url_env and url_file") }
    if let node = values["url"] {
      url = try self.url(node.value, "\(field).url")
    } else if let node = values["url_env"] {
      urlSecret = .environment(try variableName(node.value, "\(field).url_env"))
      url = ReceiverConfig.secretURLPrefix + name
    } else if let node = values["url_file"] {
      urlSecret = .file(try string(node.value, "\(field).url_file"))
      url = ReceiverConfig.secretURLPrefix + name
    } else if kind == .pagerduty {
      url = "https://events.pagerduty.com/v2/enqueue"
    } else {
      throw fail(node, "\(field) (\(name)): a \(kind.rawValue) receiver needs a url")
    }
    var receiver = ReceiverConfig(name: name, kind: kind, url: url)
    receiver.urlSecret = urlSecret
    let secretKeys = kind == .pagerduty ? ("routing_key_env", "routing_key_file") : ("secret_env", "secret_file")
    for key in ["routing_key_env", "routing_key_file", "secret_env", "secret_file"] where values[key] != nil {
      guard key == secretKeys.0 || key == secretKeys.1, kind != .alertmanager else {
        throw fail(values[key]!.key, "\(field).\(key): a \(kind.rawValue) receiver does not take \(key)")
      }
    }
    if let node = values[secretKeys.0] {
      receiver.secret = .environment(try variableName(node.value, "\(field).\(secretKeys.0)"))
    }
    if let node = values[secretKeys.1] {
      guard receiver.secret == nil else { throw fail(node.key, "\(field): give \(secretKeys.0) or \(secretKeys.1), not both") }
      receiver.secret = .file(try string(node.value, "\(field).\(secretKeys.1)"))
    }
    if kind == .pagerduty && receiver.secret == nil {
      throw fail(node, "\(field) (\(name)): a pagerduty receiver needs routing_key_env or routing_key_file")
    }
    for key in ["source", "component", "group", "class"] where values[key] != nil {
      guard kind == .pagerduty else { throw fail(values[key]!.key, "\(field).\(key): only pagerduty receivers take \(key)") }
      let text = try string(values[key]!.value, "\(field).\(key)")
      switch key {
      case "source": receiver.source = text
      case "component": receiver.component = text
      case "group": receiver.group = text
      default: receiver.eventClass = text
      }
    }
    return receiver
  }

  private func route(_ node: Node, _ field: String, receivers: [ReceiverConfig]) throws(ConfigFileError) -> AlertRoute {
    var route = AlertRoute(name: "", receivers: [])
    var sawReceivers = false
    for entry in try mapping(node, field, allowed: ["name", "receivers", "escalate_to", "group_by", "repeat_interval"]) {
      let path = "\(field).\(entry.key)"
      switch entry.key {
      case "name": route.name = try string(entry.value, path)
      case "receivers", "escalate_to":
        let names = try strings(entry.value, path)
        for name in names where !receivers.contains(where: { $0.name == name }) {
          throw fail(entry.value, "\(path): no receiver is named '\(name)'")
        }
        if entry.key == "receivers" {
          route.receivers = names
          sawReceivers = true
        } else {
          route.escalateTo = names
        }
      case "group_by": route.groupBy = try strings(entry.value, path)
      default: route.repeatInterval = try duration(entry.value, path, range: .seconds(1) ... .seconds(30 * 86_400))
      }
    }
    guard !route.name.isEmpty else { throw fail(node, "\(field): a route needs a name") }
    guard sawReceivers else { throw fail(node, "\(field) (\(route.name)): a route needs receivers") }
    return route
  }

  private func rule(_ node: Node, _ field: String, routes: [AlertRoute]) throws(ConfigFileError) -> AlertRule {
    var rule = AlertRule(name: "", kpi: "", summary: "")
    rule.line = node.mark?.line ?? 0
    var condition: (AlertRule.Comparison, Node)?
    var sawSummary = false
    for entry in try mapping(
      node, field,
      allowed: [
        "name", "kpi", "labels", "match", "above", "below", "outside", "change_percent", "window", "for", "keep_firing_for", "stale_after",
        "severity", "summary", "description", "runbook", "route",
      ])
    {
      let path = "\(field).\(entry.key)"
      switch entry.key {
      case "name": rule.name = try string(entry.value, path)
      case "kpi": rule.kpi = try kpiName(entry.value, path)
      case "match": rule.matchers = try stringMap(entry.value, path).mapValues(AlertRule.Matcher.init)
      case "labels": rule.labels = try stringMap(entry.value, path)
      case "above", "below", "outside", "change_percent":
        if let (existing, _) = condition {
          throw fail(entry.keyNode, "\(path): the rule already has '\(existing.rawValue)'; one condition per rule")
        }
        condition = (AlertRule.Comparison(rawValue: entry.key)!, entry.value)
      case "window": rule.window = try duration(entry.value, path, range: .seconds(1) ... .seconds(30 * 86_400))
      case "for": rule.forDuration = try duration(entry.value, path)
      case "keep_firing_for": rule.keepFiringFor = try duration(entry.value, path)
      case "stale_after": rule.staleAfter = try duration(entry.value, path, range: .seconds(1) ... .seconds(366 * 86_400))
      case "severity":
        let text = try string(entry.value, path)
        guard ["critical", "error", "warning", "info"].contains(text) else {
          throw fail(entry.value, "\(path): '\(text)' is not critical, error, warning or info")
        }
        rule.severity = text
      case "summary", "description":
        let text = try string(entry.value, path)
        guard let unknown = AlertTemplate.unknownPlaceholders(in: text) else { throw fail(entry.value, "\(path): a '{{' is not closed") }
        if let first = unknown.first {
          throw fail(
            entry.value,
            "\(path): unknown placeholder '{{\(first)}}'; use \(AlertTemplate.names.sorted().map { "{{\($0)}}" }.joined(separator: ", ")) or {{labels.NAME}}"
          )
        }
        if entry.key == "summary" {
          rule.summary = text
          sawSummary = true
        } else {
          rule.description = text
        }
      case "runbook": rule.runbook = try url(entry.value, path)
      default:
        let name = try string(entry.value, path)
        guard routes.contains(where: { $0.name == name }) else { throw fail(entry.value, "\(path): no route is named '\(name)'") }
        rule.route = name
      }
    }
    guard !rule.name.isEmpty else { throw fail(node, "\(field): a rule needs a name") }
    guard !rule.kpi.isEmpty else { throw fail(node, "\(field) (\(rule.name)): a rule needs a kpi") }
    guard let (comparison, thresholdNode) = condition else {
      throw fail(node, "\(field) (\(rule.name)): a rule needs a condition: above, below, outside or change_percent")
    }
    rule.comparison = comparison
    let path = "\(field).\(comparison.rawValue)"
    switch thresholdNode {
    case .scalar:
      rule.warn = try number(thresholdNode, path, range: -1e15...1e15)
    default:
      for entry in try mapping(thresholdNode, path, allowed: ["warn", "critical"]) {
        let value = try number(entry.value, "\(path).\(entry.key)", range: -1e15...1e15)
        if entry.key == "warn" { rule.warn = value } else { rule.critical = value }
      }
      guard rule.warn != nil || rule.critical != nil else { throw fail(thresholdNode, "\(path): needs warn, critical or both") }
    }
    if let warn = rule.warn, let critical = rule.critical {
      let ordered = comparison == .below ? critical <= warn : critical >= warn
      guard ordered else {
        throw fail(thresholdNode, "\(path): critical (\(AlertTemplate.format(critical))) must be beyond warn (\(AlertTemplate.format(warn)))")
      }
    }
    if comparison == .outside || comparison == .changePercent, (rule.warn ?? 0) < 0 || (rule.critical ?? 0) < 0 {
      throw fail(thresholdNode, "\(path): \(comparison.rawValue) compares sizes; thresholds must not be negative")
    }
    if !sawSummary { rule.summary = "\(rule.name): {{kpi}} is {{value}} (threshold {{threshold}})" }
    return rule
  }
}
