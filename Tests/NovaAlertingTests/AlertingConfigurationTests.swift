import Foundation
import NovaAlerting
import NovaCore
import NovaTestSupport
import Testing

@Suite("Alerting configuration", .timeLimit(.minutes(5)))
struct AlertingConfigurationTests {
  static var examplePath: String {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
      .appendingPathComponent("examples/thresholds.yaml").path
  }

  @Test func theShippedExampleIsValidAndCoversThePlansRules() throws {
    let configuration = try AlertingConfiguration.load(path: Self.examplePath)
    #expect(configuration.rules.count == 9)
    let byKPI = Dictionary(grouping: configuration.rules, by: \.kpi)
    // Issue #22: jobs no worker could ever hold page someone.
    #expect(byKPI["queue.waiting"]?.first?.name == "JobsUnschedulable")
    #expect(byKPI["queue.wait.p99"]?.first?.critical == 30_000)
    #expect(byKPI["audit.coverage"]?.first?.comparison == .below)
    #expect(byKPI["baseline.delta"]?.map(\.warn) == [5, 10, 7])
    #expect(configuration.settings.acknowledgeWithin == .seconds(300) && configuration.settings.resolveWithin == .seconds(1800))
    #expect(configuration.routes.first?.escalateTo == ["pagerduty-secondary"])
    #expect(configuration.receiver(named: "pagerduty-primary")?.secret == .environment("NOVA_PD_ROUTING_KEY"))
    #expect(configuration.route(for: configuration.rules[0])?.name == "oncall")
  }

  @Test func theREADMEsExampleIsValid() throws {
    let root = URL(fileURLWithPath: Self.examplePath).deletingLastPathComponent().deletingLastPathComponent()
    let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
    let section = try #require(readme.range(of: "## Alerting\n"))
    let start = try #require(readme.range(of: "```yaml\n", range: section.upperBound..<readme.endIndex))
    let end = try #require(readme.range(of: "```", range: start.upperBound..<readme.endIndex))
    let configuration = try AlertingConfiguration.parse(String(readme[start.upperBound..<end.lowerBound]), file: "README.md")
    #expect(configuration.rules.map(\.name) == ["QueueWaitHigh"] && configuration.receivers.count == 3)
  }

  @Test(arguments: [
    ("rules: [{name: a, kpi: x, above: 1, bogus: 2}]", "t.yaml:1:37: rules[0]: unknown key 'bogus'"),
    ("rules:\n  - name: a\n    kpi: x\n", "t.yaml:2:5: rules[0] (a): a rule needs a condition"),
    ("rules: [{name: a, kpi: x, above: 1, below: 2}]", "t.yaml:1:37: rules[0].below: the rule already has 'above'"),
    ("rules: [{name: a, kpi: x, above: {warn: 5, critical: 2}}]", "t.yaml:1:34: rules[0].above: critical (2) must be beyond warn (5)"),
    ("rules: [{name: a, kpi: x, above: 1, for: soon}]", "t.yaml:1:42: rules[0].for: 'soon' is not a duration"),
    ("rules: [{name: a, kpi: x, above: 1, summary: 'v {{valeu}}'}]", "rules[0].summary: unknown placeholder '{{valeu}}'"),
    ("rules: [{name: a, kpi: x, above: 1, route: nowhere}]", "rules[0].route: no route is named 'nowhere'"),
    ("rules: [{name: a, kpi: x, above: 1}, {name: a, kpi: y, below: 1}]", "rules[1].name: 'a' is used twice"),
    ("rules: [{name: a, kpi: 'x y', above: 1}]", "rules[0].kpi: 'x y' is not a KPI name"),
    ("rules: [{name: a, kpi: x, above: 1, severity: loud}]", "rules[0].severity: 'loud' is not critical, error, warning or info"),
    ("receivers: [{name: pd, type: pagerduty}]", "t.yaml:1:13: receivers[0] (pd): a pagerduty receiver needs routing_key_env"),
    ("receivers: [{name: pd, type: pagerduty, routing_key_env: 'abc123 secret'}]", "is not an environment variable name"),
    ("receivers: [{name: w, type: webhook}]", "receivers[0] (w): a webhook receiver needs a url"),
    ("receivers: [{name: w, type: webhook, url: 'ftp://x'}]", "receivers[0].url: 'ftp://x' is not an http(s) URL"),
    ("receivers: [{name: w, type: carrier-pigeon, url: 'http://x'}]", "receivers[0].type: 'carrier-pigeon' is not pagerduty"),
    ("receivers: [{name: w, type: webhook, url: 'http://x', routing_key_env: K}]", "receivers[0].routing_key_env: a webhook receiver does not take"),
    ("routes: [{name: r, receivers: [ghost]}]", "routes[0].receivers: no receiver is named 'ghost'"),
    ("settings: {default_route: r}", "settings.default_route: no route is named 'r'"),
    ("sla: {acknowledge_within: 0s}", "sla.acknowledge_within: '0s' is not a duration"),
    ("rules: [{name: a\n", "t.yaml:2:1: YAML syntax"),
    ("", "t.yaml:1:1: the file is empty"),
  ])
  func badFilesAreRefusedWithTheirPlace(text: String, expected: String) {
    #expect {
      _ = try AlertingConfiguration.parse(text, file: "t.yaml")
    } throws: { error in
      "\(error)".contains(expected)
    }
  }

  /// Issue #13 point 12: a receiver's secret file that others may read is refused, like the
  /// signing key.
  @Test func secretFilesOthersMayReadAreRefused() throws {
    let directory = try TemporaryDirectory.make("nova-secrets")
    let path = directory.appendingPathComponent("routing-key").path
    _ = FileManager.default.createFile(atPath: path, contents: Data("R0UTINGKEY\n".utf8), attributes: [.posixPermissions: 0o644])
    #expect {
      _ = try ReceiverConfig.Secret.file(path).resolve()
    } throws: { "\($0)".contains("may be read by others (mode 644); run chmod 600") }
    try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: path)
    #expect(try ReceiverConfig.Secret.file(path).resolve() == "R0UTINGKEY")
    #expect(throws: NovaError.self) { _ = try ReceiverConfig.Secret.file(directory.appendingPathComponent("none").path).resolve() }
  }

  @Test func receiverURLsMayComeFromAVariableOrAFile() throws {
    let both = """
      receivers: [{name: h, type: webhook, url: "http://x", url_env: H}]
      routes: [{name: r, receivers: [h]}]
      rules: []
      """
    #expect { _ = try AlertingConfiguration.parse(both, file: "t.yaml") } throws: { "\($0)".contains("give one of url, url_env and url_file") }
    let fromFile = try AlertingConfiguration.parse(
      both.replacingOccurrences(of: #"url: "http://x", url_env: H"#, with: "url_file: /run/h"), file: "t.yaml")
    #expect(fromFile.receiver(named: "h")?.urlSecret == .file("/run/h"))
  }

  @Test func durationsTemplatesAndMatchers() {
    #expect(YAMLReader.parseDuration("1h30m") == .seconds(5400))
    #expect(YAMLReader.parseDuration("250ms") == .milliseconds(250))
    #expect(YAMLReader.parseDuration("2d") == .seconds(172_800))
    #expect(YAMLReader.parseDuration("90") == .seconds(90))
    #expect(YAMLReader.parseDuration("5 minutes") == nil && YAMLReader.parseDuration("") == nil && YAMLReader.parseDuration("-1") == nil)
    #expect(
      AlertTemplate.render("{{ rule }}: {{labels.queue}} at {{value}}{{labels.none}}", values: ["rule": "R", "value": "2.5"], labels: ["queue": "q"])
        == "R: q at 2.5")
    #expect(AlertTemplate.unknownPlaceholders(in: "{{value}} {{x}}") == ["x"] && AlertTemplate.unknownPlaceholders(in: "{{value") == nil)
    #expect(AlertTemplate.format(3) == "3" && AlertTemplate.format(0.12345) == "0.123" && AlertTemplate.format(-12.5) == "-12.5")
    let matcher = AlertRule.Matcher("gpu*.util*")
    #expect(matcher.matches("gpu0.utilization") && !matcher.matches("cpu.x") && !matcher.matches(nil))
    #expect(AlertRule.Matcher("a*b*c").matches("aXbYc") && !AlertRule.Matcher("a*b*c").matches("aXbY"))
    #expect(AlertRule.Matcher("exact").matches("exact") && !AlertRule.Matcher("exact").matches("exactly"))
  }
}
