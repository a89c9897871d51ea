import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import NovaAlerting
import NovaBenchmarks
import NovaCore
import NovaDashboards
import NovaMonitoring
import NovaQueue
import NovaSecurity
import NovaServer
import NovaTestSupport
import Testing

#if canImport(FoundationNetworking)
  import FoundationNetworking
#endif

@Suite("Dashboards as code", .timeLimit(.minutes(5)))
struct DashboardTests {
  static let dashboardPath = repositoryRoot.appendingPathComponent("docs/dashboards/spark_migration_grafana.json").path
  static let rulesPath = repositoryRoot.appendingPathComponent("docs/dashboards/nova_rules.yml").path

  @Test func theCheckedInFilesAreTheGeneratorsOutput() throws {
    #expect(
      try String(contentsOfFile: Self.dashboardPath, encoding: .utf8) == GrafanaDashboard().json(),
      "regenerate: nova dashboards grafana --out docs/dashboards/spark_migration_grafana.json")
    #expect(
      try String(contentsOfFile: Self.rulesPath, encoding: .utf8) == PrometheusRules().yaml(),
      "regenerate: nova dashboards prometheus-rules --out docs/dashboards/nova_rules.yml")
    let model = try #require(try JSONSerialization.jsonObject(with: Data(GrafanaDashboard().json().utf8)) as? [String: Any])
    let variables = ((model["templating"] as? [String: Any])?["list"] as? [[String: Any]]) ?? []
    #expect(variables.map { $0["type"] as? String } == ["datasource", "query", "query"] && variables.first?["query"] as? String == "prometheus")
    #expect(variables.map { $0["name"] as? String } == ["datasource", "instance", "host"])
    #expect(model["uid"] as? String == "nova-spark-migration" && (model["schemaVersion"] as? Int ?? 0) >= 39)
    let titles = ((model["panels"] as? [[String: Any]]) ?? []).compactMap { $0["title"] as? String }
    for wanted in [
      "Deployment duration", "Error budget remaining (30 d)", "Queue throughput", "Wait time percentiles", "Dead letters", "Policy decisions",
      "Cache hit ratio and OPA errors", "Audit coverage", "Baseline deltas against their thresholds",
    ] {
      #expect(titles.contains(wanted), "panel \(wanted)")
    }
    #expect(titles.contains { $0.hasPrefix("Burn rate (multiwindow: 14.4x 1h/5m, 6x 6h/30m, 1x 3d/6h)") })
    #expect(titles.contains { $0.hasPrefix("Alert time to acknowledge and resolve") })
    try Self.expectTheGPURowPerHost(model, variables: variables)
    var custom = GrafanaDashboard()
    custom.slo = 99.5
    #expect(custom.json().contains("/ 0.005"))
  }

  /// Issue #22 point 7: the last row shows GPU health, repeated for every host of `$host` (the
  /// hosts with GPU readings), with utilisation, memory used, temperature and power per GPU.
  static func expectTheGPURowPerHost(_ model: [String: Any], variables: [[String: Any]]) throws {
    let host = try #require(variables.first { $0["name"] as? String == "host" })
    let hostQuery = #"label_values(nova_gpu_utilization_percent{instance=~"$instance"}, host)"#
    #expect(host["query"] as? String == hostQuery && host["definition"] as? String == hostQuery)
    #expect(host["includeAll"] as? Bool == true && host["multi"] as? Bool == true)
    let panels = (model["panels"] as? [[String: Any]]) ?? []
    // Grafana repeats a row with the panels under it up to the next row: the GPU row comes last.
    let gpuSection = Array(panels.suffix(5))
    let row = try #require(gpuSection.first)
    #expect(row["type"] as? String == "row" && row["title"] as? String == "GPU health: $host" && row["repeat"] as? String == "host")
    var queries: [String: String] = [:]
    var units: [String: String] = [:]
    for panel in gpuSection.dropFirst() {
      let title = panel["title"] as? String ?? "?"
      queries[title] = ((panel["targets"] as? [[String: Any]])?.first?["expr"] as? String) ?? ""
      units[title] = ((panel["fieldConfig"] as? [String: Any])?["defaults"] as? [String: Any])?["unit"] as? String
      #expect((panel["targets"] as? [[String: Any]])?.first?["legendFormat"] as? String == "GPU {{gpu}}", "\(title)")
    }
    let selector = #"{instance=~"$instance",host=~"$host"}"#
    #expect(
      queries == [
        "GPU utilisation": "max by (host, gpu) (nova_gpu_utilization_percent\(selector))",
        "GPU memory used": "max by (host, gpu) (nova_gpu_memory_used_mib\(selector))",
        "GPU temperature": "max by (host, gpu) (nova_gpu_temperature_celsius\(selector))",
        "GPU power": "max by (host, gpu) (nova_gpu_power_watts\(selector))",
      ])
    #expect(units == ["GPU utilisation": "percent", "GPU memory used": "mbytes", "GPU temperature": "celsius", "GPU power": "watt"])
    // The gauges the row queries are the ones nova serve exports from the workers' GPU KPIs.
    #expect(
      Set(RecordedKPIGauges.gpuMetrics.map(\.metric))
        == ["nova_gpu_utilization_percent", "nova_gpu_memory_used_mib", "nova_gpu_temperature_celsius", "nova_gpu_power_watts"])
  }

  /// `nova kpi record` commands for one GPU's health on host `host`, as a worker records it.
  static func gpuHealthCommands(host: String) -> [[String]] {
    [("gpu.utilization", "87"), ("gpu.memory.used", "30721"), ("gpu.temperature", "61"), ("gpu.power", "412.5")].map {
      ["kpi", "record", $0.0, $0.1, "--label", "host=\(host)", "--label", "gpu=0", "--label", "uuid=GPU-aaaa", "--label", "model=NVIDIA H200"]
    }
  }

  @Test(.enabled(if: TestServers.jsonSchemaAvailable, TestServers.jsonSchemaMissing)) func theDashboardValidatesAgainstGrafanasSchemaWithJSONSchema()
    async throws
  {
    let schema = repositoryRoot.appendingPathComponent("Tests/Fixtures/grafana/grafana-dashboard.jsonschema.json").path
    let check = try await shell(
      """
      python3 -c 'import json, sys, jsonschema
      validator = jsonschema.Draft7Validator(json.load(open(sys.argv[1])))
      errors = list(validator.iter_errors(json.load(open(sys.argv[2]))))
      for error in errors: print(list(error.path), error.message[:300])
      sys.exit(1 if errors else 0)' '\(schema)' '\(Self.dashboardPath)'
      """)
    #expect(check.code == 0, "python3-jsonschema must be installed (scripts/test.sh does it): \(check.output)")
    // The schema catches what it should: a dashboard without schemaVersion fails.
    let broken = FileManager.default.temporaryDirectory.appendingPathComponent("broken-\(UUID().uuidString).json").path
    var model = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Self.dashboardPath))) as? [String: Any])
    model["schemaVersion"] = nil
    try JSONSerialization.data(withJSONObject: model).write(to: URL(fileURLWithPath: broken))
    let refused = try await shell(
      "python3 -c 'import json, sys, jsonschema; jsonschema.validate(json.load(open(sys.argv[2])), json.load(open(sys.argv[1])))' '\(schema)' '\(broken)'"
    )
    #expect(refused.code != 0 && refused.output.contains("schemaVersion"))
  }

  @Test(.enabled(if: TestServers.promtoolAvailable, TestServers.promtoolMissing)) func theRulesPassPromtoolAndItsUnitTests() async throws {
    let check = try await shell("promtool check rules '\(Self.rulesPath)'")
    #expect(check.code == 0 && check.output.contains("SUCCESS: 8 rules found"), "\(check.output)")
    let unit = try await shell("cd '\(repositoryRoot.path)/docs/dashboards' && promtool test rules nova_rules_test.yml")
    #expect(unit.code == 0 && unit.output.contains("SUCCESS"), "\(unit.output)")
    let config = try await shell("promtool check config '\(repositoryRoot.path)/docs/dashboards/prometheus.yml'")
    #expect(config.code == 0, "\(config.output)")
  }

  @Test func theReviewScheduleOnTheLUXPageIsTheDocsSchedule() throws {
    let doc = try String(contentsOf: repositoryRoot.appendingPathComponent("docs/INTEGRATION_SECURITY_REVIEWS.md"), encoding: .utf8)
    for review in Review.schedule {
      let row =
        "| \(review.name) | \(review.owner_role) | \(review.cadence) | \(review.evidence) | "
        + review.commands.map { "`\($0)`" }.joined(separator: ", ") + " |"
      #expect(doc.contains(row), "docs/INTEGRATION_SECURITY_REVIEWS.md lacks the row: \(row)")
    }
    #expect(doc.contains("dashboards/spark_migration_grafana.json") && doc.contains("/lux"))
    let plan = try String(contentsOf: repositoryRoot.appendingPathComponent("docs/SPARK_MIGRATION_PLAN.md"), encoding: .utf8)
    #expect(plan.contains("dashboards/spark_migration_grafana.json"))
    #expect(GrafanaDashboard().json().contains("INTEGRATION_SECURITY_REVIEWS.md"))
  }

  /// The metric names a PromQL expression uses (identifiers that start with `nova_`).
  static func metricNames(inQueries text: String) -> Set<String> {
    var names = Set<String>()
    var current = ""
    for character in text + " " {
      if character.isLetter || character.isNumber || character == "_" || character == ":" {
        current.append(character)
      } else {
        if current.hasPrefix("nova_") { names.insert(current) }
        current = ""
      }
    }
    return names
  }

  /// The sample names in a Prometheus text exposition.
  static func exportedNames(_ exposition: String) -> Set<String> {
    Set(
      exposition.split(separator: "\n").filter { !$0.hasPrefix("#") }.compactMap { line in
        line.split(whereSeparator: { $0 == "{" || $0 == " " }).first.map(String.init)
      })
  }

  @Test func everyMetricTheDashboardQueriesIsOneNovaServeExports() async throws {
    let dir = try TemporaryDirectory.make().path
    let hook = try await LocalHTTPReceiver()
    hook.setDefault(status: 200, body: "{}")
    try """
    settings: {evaluation_interval: 200ms}
    sla: {acknowledge_within: 1s, resolve_within: 30m}
    receivers: [{name: hook, type: webhook, url: "\(hook.url)/h"}]
    routes: [{name: r, receivers: [hook], escalate_to: [hook]}]
    rules: [{name: Probe, kpi: probe.value, above: 1}, {name: Probe2, kpi: probe.other, above: 1}]
    """.write(toFile: "\(dir)/thresholds.yaml", atomically: true, encoding: .utf8)
    let admin = try await NovaProcess.run(["tokens", "create", "--name", "root", "--role", "admin", "--data-dir", dir])
    let bearer = "Bearer " + admin.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    for command in [
      ["kpi", "deploy", "start", "--service", "api", "--version", "7"], ["kpi", "deploy", "finish", "--service", "api", "--version", "7"],
      ["kpi", "record", "baseline.delta", "12.5", "--label", "measure=cpu.sort.single", "--label", "threshold_percent=10", "--label", "baseline=b"],
    ] + Self.gpuHealthCommands(host: "gpu-a") {
      let result = try await NovaProcess.run(command + ["--data-dir", dir])
      #expect(result.code == 0, "\(command): \(result.stderr)")
    }
    let server = try NovaProcess([
      "serve", "--port", "0", "--data-dir", dir, "--workers", "2", "--collect-seconds", "0.3", "--checkpoint-seconds", "1", "--lease-seconds", "2",
    ])
    defer { server.signal(SIGKILL) }
    let port = try await server.listeningPort()
    func request(_ path: String, method: String = "GET", body: String? = nil) async throws -> (Int, Data) {
      var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
      request.httpMethod = method
      request.httpBody = body.map { Data($0.utf8) }
      request.setValue(bearer, forHTTPHeaderField: "Authorization")
      let (data, response) = try await URLSession.shared.data(for: request)
      return ((response as? HTTPURLResponse)?.statusCode ?? 0, data)
    }
    // Work of every kind: jobs that succeed and fail, decisions, alerts acknowledged, resolved and escalated.
    for _ in 0..<5 { _ = try await request("/v1/jobs", method: "POST", body: #"{"kind":"echo","payload":{}}"#) }
    _ = try await request("/v1/jobs", method: "POST", body: #"{"kind":"fail","payload":{"message":"x"},"max_attempts":1}"#)
    _ = try await request("/v1/kpis", method: "POST", body: #"{"samples":[{"name":"probe.value","value":5},{"name":"probe.other","value":5}]}"#)
    var alertIDs: [Int64] = []
    try await eventually("two firing alerts") {
      let (_, data) = try await request("/v1/alerts?state=firing")
      let alerts = (try JSONSerialization.jsonObject(with: data) as? [String: Any])?["alerts"] as? [[String: Any]] ?? []
      alertIDs = alerts.compactMap { ($0["id"] as? NSNumber)?.int64Value }
      return alertIDs.count == 2
    }
    #expect(try await request("/v1/alerts/\(alertIDs[0])/ack", method: "POST").0 == 200)
    #expect(try await request("/v1/alerts/\(alertIDs[0])/resolve", method: "POST").0 == 200)
    try await eventually("the escalation of the other alert") {
      let journal = try await request("/v1/journal?kind=alert.escalated").1
      return String(decoding: journal, as: UTF8.self).contains("alert.escalated")
    }
    try await eventually("a dead job and a collection after it") {
      let metrics = String(decoding: try await request("/metrics").1, as: UTF8.self)
      return metrics.contains("nova_jobs_dead_total") && metrics.contains(#"nova_queue_failure_ratio{queue="default"}"#)
        && metrics.contains("nova_alert_sla_breaches_total") && metrics.contains("nova_deployment_duration_seconds")
    }
    let exposition = String(decoding: try await request("/metrics").1, as: UTF8.self)
    try Self.expectEveryQueriedMetric(in: exposition)
  }

  /// Every metric the dashboard and the rules file query (their own recording rules aside) is in
  /// `exposition`.
  static func expectEveryQueriedMetric(in exposition: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let exported = exportedNames(exposition)
    let dashboard = try String(contentsOfFile: dashboardPath, encoding: .utf8)
    let model = try #require(try JSONSerialization.jsonObject(with: Data(dashboard.utf8)) as? [String: Any])
    var queries = ""
    for panel in (model["panels"] as? [[String: Any]]) ?? [] {
      for target in (panel["targets"] as? [[String: Any]]) ?? [] { queries += (target["expr"] as? String ?? "") + "\n" }
    }
    queries += ((((model["templating"] as? [String: Any])?["list"] as? [[String: Any]]) ?? []).compactMap { $0["definition"] as? String }).joined(
      separator: "\n")
    let used = metricNames(inQueries: queries)
    #expect(used.count >= 15, "\(used.sorted())", sourceLocation: sourceLocation)
    let missing = used.subtracting(exported)
    #expect(missing.isEmpty, "the dashboard queries metrics nova serve does not export: \(missing.sorted())", sourceLocation: sourceLocation)
    let rules = try String(contentsOfFile: rulesPath, encoding: .utf8)
    let missingFromRules = metricNames(inQueries: rules).subtracting(exported)
    #expect(
      missingFromRules.isEmpty, "the rules query metrics nova serve does not export: \(missingFromRules.sorted())", sourceLocation: sourceLocation)
  }

  /// The first scrape of a server that has run nothing yet already has every series the
  /// dashboard queries, at zero: the dashboard shows zeros, not "No data". Deployments and
  /// baseline deltas are per service and measure, so one service has started a deployment and
  /// one baseline is saved (without either, there is no label value to show a zero for).
  @Test func theFirstScrapeOfAFreshServerHasEveryMetricTheDashboardQueries() async throws {
    let dir = try TemporaryDirectory.make().path
    for command in [
      ["kpi", "deploy", "start", "--service", "api", "--version", "1"],
      ["bench", "baseline", "--network", "--runs", "1", "--work-scale", "0.05", "--save-baseline", "fresh"],
    ] + Self.gpuHealthCommands(host: "gpu-a") {
      let result = try await NovaProcess.run(command + ["--data-dir", dir])
      #expect(result.code == 0, "\(command): \(result.stderr)")
    }
    let server = try NovaProcess(["serve", "--port", "0", "--data-dir", dir, "--workers", "0", "--metrics-open"])
    defer { server.signal(SIGKILL) }
    let port = try await server.listeningPort()
    let (data, _) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)/metrics")!)
    let exposition = String(decoding: data, as: UTF8.self)
    try Self.expectEveryQueriedMetric(in: exposition)
    #expect(exposition.contains(#"nova_jobs_completed_total{queue="default"} 0"#))
    #expect(exposition.contains(#"nova_alert_sla_breaches_total{kind="acknowledge"} 0"#))
    #expect(exposition.contains(#"nova_deployment_duration_seconds{service="api"} 0"#))
    #expect(exposition.contains(#"nova_baseline_delta_percent{measure="network.throughput"} 0"#))
    #expect(exposition.contains(#"nova_baseline_threshold_percent{measure="network.throughput"} 7"#))
    // GPU health a worker recorded is exported per host and GPU from the first scrape.
    #expect(exposition.contains(#"nova_gpu_utilization_percent{host="gpu-a",gpu="0"} 87"#))
    #expect(exposition.contains(#"nova_gpu_memory_used_mib{host="gpu-a",gpu="0"} 30721"#))
    #expect(exposition.contains(#"nova_gpu_temperature_celsius{host="gpu-a",gpu="0"} 61"#))
    #expect(exposition.contains(#"nova_gpu_power_watts{host="gpu-a",gpu="0"} 412.5"#))
  }
}
