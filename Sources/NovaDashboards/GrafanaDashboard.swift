import Foundation
import NovaCore

/// The Grafana dashboard of a migration window, generated as code: every query names only
/// metrics that `nova serve` exports (a test holds it to that), and the checked-in file is this
/// generator's output.
public struct GrafanaDashboard: Sendable {
  /// The availability objective of job attempts, in percent (99.9 leaves a 0.1 % error budget).
  public var slo: Double = 99.9
  public var uid = "nova-spark-migration"
  public var title = "Nova: Spark migration"
  /// Where the review schedule (docs/INTEGRATION_SECURITY_REVIEWS.md) and Nova's page are read.
  public var docsURL = Review.scheduleURL
  public var luxURL = "http://127.0.0.1:8080/lux"

  /// The schema version of the dashboard model this generator writes (the current one, as in Grafana's foundation SDK schema).
  public static let schemaVersion = 42

  /// The GPU health gauges `nova serve` exports from the KPIs workers record (`RecordedKPIGauges`), per host and GPU.
  static let gpuUtilizationMetric = "nova_gpu_utilization_percent"
  static let gpuMemoryUsedMetric = "nova_gpu_memory_used_mib"
  static let gpuTemperatureMetric = "nova_gpu_temperature_celsius"
  static let gpuPowerMetric = "nova_gpu_power_watts"
  /// The hosts with GPU readings, whose rows the dashboard repeats.
  static let hostQuery = "label_values(nova_gpu_utilization_percent{instance=~\"$instance\"}, host)"

  public init() {}

  /// The error ratio of job attempts over `window`: failed over finished, across instances.
  func errorRatio(_ window: String) -> String {
    "(sum(rate(nova_jobs_failed_total{instance=~\"$instance\"}[\(window)])) / clamp_min(sum(rate(nova_jobs_completed_total{instance=~\"$instance\"}[\(window)])) + sum(rate(nova_jobs_failed_total{instance=~\"$instance\"}[\(window)])), 1e-9))"
  }

  /// How fast the budget burns over `window`: the error ratio over the allowed one.
  func burnRate(_ window: String) -> String {
    "\(errorRatio(window)) / \(Formatting.budget(slo))"
  }

  private static let datasource: JSONValue = .object(["type": "prometheus", "uid": "${datasource}"])

  private struct Layout {
    var id = 0
    var y = 0
    var x = 0
    var rowHeight = 0

    mutating func next(width: Int, height: Int) -> (id: Int, grid: JSONValue) {
      if x + width > 24 {
        x = 0
        y += rowHeight
        rowHeight = 0
      }
      id += 1
      let grid: JSONValue = .object(["h": .int(Int64(height)), "w": .int(Int64(width)), "x": .int(Int64(x)), "y": .int(Int64(y))])
      x += width
      rowHeight = max(rowHeight, height)
      return (id, grid)
    }

    mutating func row() -> (id: Int, grid: JSONValue) {
      if x > 0 {
        x = 0
        y += rowHeight
        rowHeight = 0
      }
      id += 1
      let grid: JSONValue = .object(["h": 1, "w": 24, "x": 0, "y": .int(Int64(y))])
      y += 1
      return (id, grid)
    }
  }

  private func target(_ expr: String, legend: String, ref: String) -> JSONValue {
    .object(["datasource": Self.datasource, "expr": .string(expr), "legendFormat": .string(legend), "refId": .string(ref)])
  }

  private func thresholds(_ steps: [(Double?, String)]) -> JSONValue {
    .object([
      "mode": "absolute",
      "steps": .array(steps.map { .object(["value": $0.0.map(JSONValue.double) ?? .null, "color": .string($0.1)]) }),
    ])
  }

  private func panel(
    _ layout: inout Layout, type: String, title: String, description: String, width: Int = 12, height: Int = 8, unit: String,
    targets: [(String, String)], thresholds steps: [(Double?, String)]? = nil, thresholdLines: Bool = false, min: Double? = nil,
    max: Double? = nil
  ) -> JSONValue {
    let (id, grid) = layout.next(width: width, height: height)
    var defaults: [String: JSONValue] = ["unit": .string(unit)]
    if let steps { defaults["thresholds"] = thresholds(steps) }
    if let min { defaults["min"] = .double(min) }
    if let max { defaults["max"] = .double(max) }
    if thresholdLines { defaults["custom"] = .object(["thresholdsStyle": .object(["mode": "line+area"])]) }
    var options: [String: JSONValue] = [:]
    if type == "timeseries" {
      options = [
        "legend": .object(["displayMode": "table", "placement": "bottom", "showLegend": true]),
        "tooltip": .object(["mode": "multi", "sort": "desc"]),
      ]
    } else {
      options = ["reduceOptions": .object(["calcs": .array(["lastNotNull"]), "fields": "", "values": false]), "orientation": "auto"]
    }
    let refs = "ABCDEFGHIJ".map(String.init)
    return .object([
      "type": .string(type), "id": .int(Int64(id)), "title": .string(title), "description": .string(description),
      "datasource": Self.datasource, "gridPos": grid,
      "targets": .array(targets.enumerated().map { target($0.element.0, legend: $0.element.1, ref: refs[$0.offset]) }),
      "fieldConfig": .object(["defaults": .object(defaults), "overrides": .array([])]), "options": .object(options),
    ])
  }

  /// A row; with `repeat`, Grafana repeats it and the panels under it once per value of that variable.
  private func row(_ layout: inout Layout, _ title: String, repeat variable: String? = nil) -> JSONValue {
    let (id, grid) = layout.row()
    var row: [String: JSONValue] = [
      "type": "row", "id": .int(Int64(id)), "title": .string(title), "collapsed": false, "gridPos": grid, "panels": .array([]),
    ]
    if let variable { row["repeat"] = .string(variable) }
    return .object(row)
  }

  /// The dashboard model.
  public func model() -> JSONValue {
    var layout = Layout()
    let i = "instance=~\"$instance\""
    var panels: [JSONValue] = []
    panels.append(row(&layout, "Error budget (SLO \(Formatting.format(slo)) % of job attempts succeed)"))
    panels.append(
      panel(
        &layout, type: "stat", title: "Error budget remaining (30 d)",
        description: "Share of the 30-day error budget of job attempts left: 1 - (failed over finished attempts) / (1 - SLO).",
        width: 6, unit: "percentunit",
        targets: [("1 - \(errorRatio("30d")) / \(Formatting.budget(slo))", "remaining")],
        thresholds: [(nil, "red"), (0.25, "orange"), (0.5, "green")]))
    panels.append(
      panel(
        &layout, type: "timeseries", title: "Burn rate (multiwindow: 14.4x 1h/5m, 6x 6h/30m, 1x 3d/6h)",
        description:
          "Error ratio over the allowed one. Page when both windows of a pair burn faster than its factor: 14.4x over 1 h and 5 min spends 2 % of a 30-day budget in an hour; 6x over 6 h and 30 min, 5 % in 6 h; 1x over 3 d and 6 h, 10 % in 3 days.",
        width: 18, unit: "x",
        targets: [
          (burnRate("5m"), "5m"), (burnRate("30m"), "30m"), (burnRate("1h"), "1h"), (burnRate("6h"), "6h"), (burnRate("3d"), "3d"),
        ],
        thresholds: [(nil, "green"), (1, "yellow"), (6, "orange"), (14.4, "red")], thresholdLines: true, min: 0))
    panels.append(row(&layout, "Migration"))
    panels.append(
      panel(
        &layout, type: "bargauge", title: "Deployment duration",
        description: "The latest deployment of each service (nova kpi deploy start|finish).", unit: "s",
        targets: [("nova_deployment_duration_seconds{\(i)}", "{{service}}")], thresholds: [(nil, "green"), (600, "orange"), (1800, "red")]))
    panels.append(
      panel(
        &layout, type: "bargauge", title: "Baseline deltas against their thresholds",
        description:
          "The latest nova bench baseline --compare: change per measure (percent; GPU in points) and the threshold it is held to (GPU ±5, CPU ±10, network ±7).",
        unit: "percent",
        targets: [
          ("nova_baseline_delta_percent{\(i)}", "{{measure}} delta"), ("nova_baseline_threshold_percent{\(i)}", "{{measure}} threshold"),
        ],
        thresholds: [(nil, "green"), (5, "orange"), (10, "red")]))
    panels.append(row(&layout, "Queue"))
    panels.append(
      panel(
        &layout, type: "timeseries", title: "Queue throughput",
        description: "Jobs per second per queue, from the audit log (every worker on the store).", unit: "ops",
        targets: [
          ("sum by (queue) (nova_queue_event_rate{\(i),event=\"enqueued\"})", "{{queue}} enqueued"),
          ("sum by (queue) (nova_queue_event_rate{\(i),event=\"completed\"})", "{{queue}} completed"),
        ]))
    panels.append(
      panel(
        &layout, type: "timeseries", title: "Wait time percentiles",
        description: "From available to claimed, per queue (p50, p95, p99 of the last collection interval).", unit: "s",
        targets: [("max by (queue, percentile) (nova_queue_wait_quantile_seconds{\(i)})", "{{queue}} {{percentile}}")],
        thresholds: [(nil, "green"), (5, "orange"), (30, "red")], thresholdLines: true))
    panels.append(
      panel(
        &layout, type: "timeseries", title: "Dead letters",
        description: "Jobs in the dead-letter state, and how fast jobs move there.", unit: "short",
        targets: [
          ("max by (queue) (nova_queue_jobs{\(i),state=\"dead\"})", "{{queue}} dead"),
          ("sum by (queue) (nova_queue_event_rate{\(i),event=\"dead\"})", "{{queue}} per second"),
        ]))
    panels.append(
      panel(
        &layout, type: "timeseries", title: "Failure ratio",
        description: "Failed over finished job attempts per queue.", unit: "percentunit",
        targets: [("max by (queue) (nova_queue_failure_ratio{\(i)})", "{{queue}}")], thresholds: [(nil, "green"), (0.05, "orange"), (0.2, "red")],
        thresholdLines: true, min: 0))
    panels.append(row(&layout, "Policy"))
    panels.append(
      panel(
        &layout, type: "timeseries", title: "Policy decisions",
        description: "Decisions per second by source (rule, cache, opa, fallback) and result.", unit: "ops",
        targets: [("sum by (source, result) (nova_policy_decision_rate{\(i)})", "{{source}} {{result}}")]))
    panels.append(
      panel(
        &layout, type: "timeseries", title: "Cache hit ratio and OPA errors",
        description: "Decisions answered from the cache; decisions the fallback made because OPA could not answer.", width: 12,
        unit: "percentunit",
        targets: [
          ("max(nova_policy_cache_hit_ratio{\(i)})", "cache hit ratio"), ("sum(nova_policy_opa_error_rate{\(i)})", "OPA errors per second"),
        ]))
    panels.append(row(&layout, "Governance"))
    panels.append(
      panel(
        &layout, type: "stat", title: "Audit coverage",
        description: "Audited job transitions over all of them, from the data. Anything below 100 % names unaudited jobs in nova audit coverage.",
        width: 6, unit: "percentunit", targets: [("min(nova_audit_coverage_ratio{\(i)})", "coverage")],
        thresholds: [(nil, "red"), (1, "green")], min: 0, max: 1))
    panels.append(
      panel(
        &layout, type: "stat", title: "Firing alerts", description: "Alerts firing now, by severity.", width: 6, unit: "short",
        targets: [("sum by (severity) (nova_alerts_firing{\(i)})", "{{severity}}")], thresholds: [(nil, "green"), (1, "red")]))
    panels.append(
      panel(
        &layout, type: "timeseries", title: "Alert time to acknowledge and resolve (SLA 5 / 30 min)",
        description:
          "p90 over a day of the time from firing to acknowledgement and to resolution, against the SLA lines (300 s, 1800 s); breaches per day.",
        unit: "s",
        targets: [
          ("histogram_quantile(0.9, sum by (le) (rate(nova_alert_time_to_acknowledge_seconds_bucket{\(i)}[1d])))", "acknowledge p90"),
          ("histogram_quantile(0.9, sum by (le) (rate(nova_alert_time_to_resolve_seconds_bucket{\(i)}[1d])))", "resolve p90"),
          ("sum by (kind) (increase(nova_alert_sla_breaches_total{\(i)}[1d]))", "{{kind}} SLA breaches"),
        ],
        thresholds: [(nil, "green"), (300, "orange"), (1800, "red")], thresholdLines: true))
    // Last, because Grafana repeats the row (and its panels) for every host of $host.
    panels.append(row(&layout, "GPU health: $host", repeat: "host"))
    let gpu = "\(i),host=~\"$host\""
    panels.append(
      panel(
        &layout, type: "timeseries", title: "GPU utilisation",
        description: "Per GPU of the host, from nvidia-smi every --gpu-sample-seconds (nova worker) or --collect-seconds (nova serve's pool).",
        unit: "percent", targets: [("max by (host, gpu) (\(Self.gpuUtilizationMetric){\(gpu)})", "GPU {{gpu}}")], min: 0, max: 100))
    panels.append(
      panel(
        &layout, type: "timeseries", title: "GPU memory used",
        description: "Per GPU of the host. Unified-memory GPUs (GB10) report none of their own and are not shown.", unit: "mbytes",
        targets: [("max by (host, gpu) (\(Self.gpuMemoryUsedMetric){\(gpu)})", "GPU {{gpu}}")], min: 0))
    panels.append(
      panel(
        &layout, type: "timeseries", title: "GPU temperature", description: "Per GPU of the host.", unit: "celsius",
        targets: [("max by (host, gpu) (\(Self.gpuTemperatureMetric){\(gpu)})", "GPU {{gpu}}")],
        thresholds: [(nil, "green"), (80, "orange"), (90, "red")], thresholdLines: true))
    panels.append(
      panel(
        &layout, type: "timeseries", title: "GPU power", description: "Power draw per GPU of the host, where the GPU reports it.",
        unit: "watt", targets: [("max by (host, gpu) (\(Self.gpuPowerMetric){\(gpu)})", "GPU {{gpu}}")], min: 0))
    let links: JSONValue = .array([
      .object([
        "title": "Review schedule", "type": "link", "icon": "doc", "tooltip": "docs/INTEGRATION_SECURITY_REVIEWS.md",
        "url": .string(docsURL), "tags": .array([]), "asDropdown": false, "targetBlank": true, "includeVars": false, "keepTime": false,
      ]),
      .object([
        "title": "LUX compliance page", "type": "link", "icon": "external link", "tooltip": "Nova's own compliance page",
        "url": .string(luxURL), "tags": .array([]), "asDropdown": false, "targetBlank": true, "includeVars": false, "keepTime": false,
      ]),
    ])
    return .object([
      "uid": .string(uid), "title": .string(title),
      "description": "Generated by `nova dashboards grafana`; edit the generator, not this file.",
      "tags": .array(["nova", "migration", "slo"]), "timezone": "utc", "editable": false, "graphTooltip": 1,
      "time": .object(["from": "now-6h", "to": "now"]), "refresh": "30s", "schemaVersion": .int(Int64(Self.schemaVersion)),
      "version": 1, "links": links, "panels": .array(panels),
      "annotations": .object([
        "list": .array([
          .object([
            "name": "Annotations & Alerts", "builtIn": 1, "enable": true, "hide": true, "iconColor": "rgba(0, 211, 255, 1)", "type": "dashboard",
            "datasource": .object(["type": "grafana", "uid": "-- Grafana --"]),
          ])
        ])
      ]),
      "templating": .object([
        "list": .array([
          .object([
            "name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
            "current": .object(["text": "Prometheus", "value": "prometheus"]), "hide": 0, "refresh": 1,
          ]),
          .object([
            "name": "instance", "label": "Nova instance", "type": "query", "datasource": Self.datasource,
            "query": "label_values(nova_build_info, instance)",
            "definition": "label_values(nova_build_info, instance)", "refresh": 2, "multi": true, "includeAll": true, "allValue": ".*",
            "current": .object(["text": "All", "value": "$__all"]), "sort": 1,
          ]),
          .object([
            "name": "host", "label": "GPU host", "type": "query", "datasource": Self.datasource,
            "query": .string(Self.hostQuery), "definition": .string(Self.hostQuery), "refresh": 2, "multi": true, "includeAll": true,
            "allValue": ".*", "current": .object(["text": "All", "value": "$__all"]), "sort": 1,
          ]),
        ])
      ]),
    ])
  }

  /// The dashboard as written to its file: pretty, keys sorted, one trailing newline.
  public func json() -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    // A JSONValue of strings, numbers and containers always encodes.
    let data = (try? encoder.encode(model())) ?? Data()
    return String(decoding: data, as: UTF8.self) + "\n"
  }
}

/// Number formatting shared by the generators.
enum Formatting {
  static func format(_ value: Double) -> String {
    if value == value.rounded() && abs(value) < 1e15 { return String(Int64(value)) }
    return String(value)
  }

  /// The error budget of an SLO in percent, as a ratio (99.9 → 0.001).
  static func budget(_ slo: Double) -> String {
    let budget = (100 - slo) / 100
    return String(format: "%.6g", budget)
  }
}
