import Foundation
import Logging
import NovaAlerting
import NovaCore
import NovaDatabase
import NovaMonitoring

/// `nova bench alerts`: how long one evaluation of many rules over fresh KPIs takes, and how long
/// a page takes from the KPI that crosses a threshold to the webhook receiving it.
public enum AlertBenchmark {
  /// Milliseconds: median, 99th percentile and maximum of several measurements.
  public struct Figures: Codable, Sendable, Equatable {
    public var p50: Double
    public var p99: Double
    public var max: Double

    public init(_ values: [Double]) {
      let sorted = values.sorted()
      p50 = Statistics.percentile(sorted: sorted, 0.5) ?? 0
      p99 = Statistics.percentile(sorted: sorted, 0.99) ?? 0
      self.max = sorted.last ?? 0
    }
  }

  public struct Result: Codable, Sendable {
    public var rules: Int
    public var runs: Int
    /// One evaluation pass over fresh samples of every rule's KPI (1 % of them crossing).
    public var evaluation_ms: Figures
    public var firing_alerts: Int
    public var pages: Int
    /// From recording the crossing sample to the webhook receiving the page.
    public var page_latency_ms: Figures
    /// The same for the resolve notification after the sample clears.
    public var resolve_latency_ms: Figures
    /// Pages the receiver got beyond one per crossing (must be 0).
    public var duplicate_pages: Int
    public var evaluation_interval_s: Double
  }

  private static func database(_ directory: URL, name: String) throws -> NovaDatabase {
    try NovaDatabase(path: directory.appendingPathComponent(name).path)
  }

  /// Runs both measurements in a fresh database under `directory`.
  public static func run(rules: Int = 10_000, runs: Int = 5, pages: Int = 50, directory: URL) async throws -> Result {
    // 1. Evaluation: `rules` rules, each on a KPI of its own, evaluated right after fresh samples.
    let queue = try database(directory, name: "evaluation.sqlite")
    let kpis = try KPIStore(database: queue)
    var configuration = AlertingConfiguration()
    configuration.rules = (0..<rules).map { index in
      var rule = AlertRule(name: "Bench\(index)", kpi: "bench.kpi.\(index)", summary: "{{kpi}} is {{value}}")
      rule.warn = 100
      return rule
    }
    let engine = AlertEngine(configuration: configuration, store: try AlertStore(database: queue), kpis: kpis)
    var timings: [Double] = []
    for run in 0...runs {
      let now = Date().millisecondsSince1970
      try await kpis.record(
        (0..<rules).map { index in
          KPISample(name: "bench.kpi.\(index)", value: index % 100 == 0 ? 150 : Double(run), time: now, source: "bench")
        })
      let started = ContinuousClock.now
      try await engine.evaluate()
      if run > 0 { timings.append((ContinuousClock.now - started).seconds * 1000) }  // the first one loads the store
    }
    let firing = try await engine.store.openAlerts().count

    // 2. Latency: one rule with `for: 0s` and a webhook on loopback, the server's loops running.
    let receiver = try await LocalHTTPReceiver()
    defer { Task { await receiver.close() } }
    receiver.setDefault(status: 200, body: "{}")
    let latencyQueue = try database(directory, name: "latency.sqlite")
    let latencyKPIs = try KPIStore(database: latencyQueue)
    let latencyConfiguration = try AlertingConfiguration.parse(
      """
      receivers: [{name: hook, type: webhook, url: "\(receiver.url)/hook"}]
      routes: [{name: r, receivers: [hook]}]
      rules: [{name: LatencyProbe, kpi: bench.latency, above: 100}]
      """, file: "bench")  // the default evaluation interval
    let latencyEngine = AlertEngine(configuration: latencyConfiguration, store: try AlertStore(database: latencyQueue), kpis: latencyKPIs)
    let logger = Logger(label: "nova.bench.alerts")
    let dispatcher = NotificationDispatcher(
      store: latencyEngine.store, sender: NotificationSender(secrets: [:]), journal: nil, logger: logger)
    let loops = Task {
      await withTaskGroup(of: Void.self) { group in
        group.addTask { await latencyEngine.runEvaluations(logger: logger) }
        group.addTask { await dispatcher.runDeliveries(signal: latencyEngine.outboxSignal) }
      }
    }
    defer { loops.cancel() }
    try await Task.sleep(for: .milliseconds(100))
    var pageLatencies: [Double] = []
    var resolveLatencies: [Double] = []
    for _ in 0..<pages {
      for (value, isPage) in [(200.0, true), (0.0, false)] {
        let before = receiver.requests.count
        let sent = ContinuousClock.now
        try await latencyKPIs.record([KPISample(name: "bench.latency", value: value, time: Date().millisecondsSince1970, source: "bench")])
        let arrived = try await receiver.waitForRequests(before + 1, timeout: .seconds(30))
        let latency = (arrived[before].received - sent).seconds * 1000
        if isPage { pageLatencies.append(latency) } else { resolveLatencies.append(latency) }
      }
    }
    try await Task.sleep(for: .milliseconds(200))
    let triggers = receiver.requests.filter { $0.text.contains(#""status":"firing""#) }.count
    return Result(
      rules: rules, runs: runs, evaluation_ms: Figures(timings), firing_alerts: firing, pages: pages,
      page_latency_ms: Figures(pageLatencies), resolve_latency_ms: Figures(resolveLatencies), duplicate_pages: max(0, triggers - pages),
      evaluation_interval_s: latencyConfiguration.settings.evaluationInterval.seconds)
  }
}
