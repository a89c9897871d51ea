import CoreMetrics
import Foundation
import Metrics
import NovaCore
import NovaQueue
import NovaSecurity
import Prometheus
import Synchronization

/// The process-wide Prometheus registry behind swift-metrics, with help text for every series
/// Nova exports (Prometheus' linter, `promtool check metrics`, requires it).
public enum NovaMetrics {
  /// Help text per metric name.
  public static let help: [String: String] = [
    InstrumentedJobQueue.Names.enqueued: "Jobs enqueued (idempotent repeats not counted).",
    InstrumentedJobQueue.Names.claimed: "Jobs claimed by workers (each attempt counts).",
    InstrumentedJobQueue.Names.completed: "Jobs that succeeded.",
    InstrumentedJobQueue.Names.failed: "Failed job attempts, retried or not.",
    InstrumentedJobQueue.Names.dead: "Jobs moved to the dead-letter state.",
    InstrumentedJobQueue.Names.cancelled: "Jobs cancelled by a client.",
    InstrumentedJobQueue.Names.reaped: "Job leases that expired and were reaped.",
    InstrumentedJobQueue.Names.waitSeconds: "Time from when a job became runnable until a worker claimed it.",
    InstrumentedJobQueue.Names.runSeconds: "Time a job ran, from claim to its recorded outcome.",
    QueueMetricsCollector.depthMetric: "Jobs per queue and state, as last read from the store.",
    QueueMetricsCollector.runningMetric: "Jobs running in this process's worker pool.",
    QueueMetricsCollector.waitingMetric: "Available jobs per queue by what they wait for (slot, resources, unschedulable, queue_paused, ...).",
    QueueMetricsCollector.capacityMetric: "What live workers' hosts offer jobs, per host and resource (gpus, cpus, memory_mib).",
    QueueMetricsCollector.inUseMetric: "What running jobs hold of their workers' hosts, per host and resource (gpus, cpus, memory_mib).",
    "nova_build_info": "Nova's version; always 1.",
    AuditCheckpointer.entriesMetric: "Entries in the audit log.",
    AuditImporter.pendingMetric: "Audit records waiting in the Redis queues' streams to be moved into the audit log.",
    AuditImporter.importedMetric: "Audit records moved from the Redis queues' streams into the audit log.",
    AuditCheckpointer.checkpointMetric: "Tree size of the latest signed audit checkpoint.",
    AuditCheckpointer.coverageMetric: "Audited job transitions over all of them, from the data (must be 1).",
    ActivityCollector.eventRateMetric: "Job events per second per queue and event, from the audit log (every worker on the store).",
    ActivityCollector.waitMetric: "Wait from available to claimed per queue, quantiles over the last collection interval, from the audit log.",
    ActivityCollector.failureRatioMetric: "Failed over finished job attempts per queue over the last collection interval.",
    ActivityCollector.decisionRateMetric: "Policy decisions per second by source and result, from the audit log.",
    ActivityCollector.cacheHitRatioMetric: "Policy decisions answered from the cache over all decisions, last collection interval.",
    ActivityCollector.opaErrorRateMetric: "Policy decisions per second that OPA could not answer (the fallback mode decided).",
    RecordedKPIGauges.deploymentDurationMetric: "Duration of the latest deployment per service (nova kpi deploy).",
    RecordedKPIGauges.deploymentFinishedMetric: "When the latest deployment per service finished, Unix time.",
    RecordedKPIGauges.baselineDeltaMetric: "Latest baseline comparison: change per measure against the saved baseline, percent.",
    RecordedKPIGauges.baselineThresholdMetric: "The threshold each baseline measure's change is held against, percent.",
    "nova_http_requests_total": "HTTP requests served, by method, route and status.",
    "nova_http_request_duration_seconds": "HTTP request latency by method and route.",
  ]

  /// Nova's registry; `/metrics` renders it.
  public static let registry = PrometheusCollectorRegistry()

  /// The swift-metrics backend that records into `registry`, with help text per metric. The
  /// executable bootstraps `MetricsSystem` with it (a library never does); until then metrics
  /// go nowhere and `/metrics` shows only what was registered directly.
  public static let factory: any MetricsFactory = HelpfulPrometheusFactory(registry: registry, help: help)

  /// Records which build this is (`nova_build_info`); call after bootstrapping.
  public static func recordBuildInfo() {
    Gauge(label: "nova_build_info", dimensions: [("version", NovaVersion.string)]).record(1)
  }

  /// The Prometheus text exposition of every metric.
  public static func render() -> [UInt8] { registry.emitToBuffer() }
}

/// swift-prometheus' swift-metrics factory, with help text per metric name.
struct HelpfulPrometheusFactory: MetricsFactory {
  let registry: PrometheusCollectorRegistry
  let help: [String: String]

  private let durationBuckets: [Duration] = [
    .microseconds(500), .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25),
    .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
    .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30), .seconds(60), .seconds(300),
  ]
  private let valueBuckets: [Double] = [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000]

  private func descriptor(_ label: String) -> MetricNameDescriptor {
    MetricNameDescriptor(
      metricName: label.replacingOccurrences(of: ".", with: "_"), unitName: "",
      helpText: help[label] ?? label.replacingOccurrences(of: "_", with: " "))
  }

  func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
    registry.makeCounter(descriptor: descriptor(label), labels: dimensions)
  }

  func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
    registry.makeCounter(descriptor: descriptor(label), labels: dimensions)
  }

  func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
    if aggregate {
      return registry.makeValueHistogram(descriptor: descriptor(label), labels: dimensions, buckets: valueBuckets)
    }
    return registry.makeGauge(descriptor: descriptor(label), labels: dimensions)
  }

  func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
    registry.makeGauge(descriptor: descriptor(label), labels: dimensions)
  }

  func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
    registry.makeDurationHistogram(descriptor: descriptor(label), labels: dimensions, buckets: durationBuckets)
  }

  func destroyCounter(_ handler: any CounterHandler) {
    if let counter = handler as? Prometheus.Counter { registry.unregisterCounter(counter) }
  }

  func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {
    if let counter = handler as? Prometheus.Counter { registry.unregisterCounter(counter) }
  }

  func destroyRecorder(_ handler: any RecorderHandler) {
    if let gauge = handler as? Prometheus.Gauge { registry.unregisterGauge(gauge) }
    if let histogram = handler as? ValueHistogram { registry.unregisterValueHistogram(histogram) }
  }

  func destroyMeter(_ handler: any MeterHandler) {
    if let gauge = handler as? Prometheus.Gauge { registry.unregisterGauge(gauge) }
  }

  func destroyTimer(_ handler: any TimerHandler) {
    if let histogram = handler as? DurationHistogram { registry.unregisterDurationHistogram(histogram) }
  }
}
