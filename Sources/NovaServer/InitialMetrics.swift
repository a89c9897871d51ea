import Foundation
import Metrics
import NovaAlerting
import NovaCore
import NovaMonitoring
import NovaQueue

/// The series `nova serve` exports at zero as soon as it starts: every counter, histogram and
/// gauge whose label values are already known (the queues, alert severities and SLA kinds, the
/// measures of saved baselines, the services that deployed), so that the shipped dashboard and
/// rules show zeros on a fresh server instead of "No data".
enum InitialMetrics {
  /// The queue every job goes to unless it names another.
  static let defaultQueue = "default"
  /// Alert severities the shipped rules and dashboard group by.
  static let severities = ["warning", "critical"]
  /// The kinds of alert SLA breach.
  static let slaBreachKinds = ["acknowledge", "resolve"]

  /// What is known at start, read from the stores.
  struct Known: Sendable, Equatable {
    var queues: [String]
    var services: [String]
    /// Saved baselines' measures and their default thresholds (percent).
    var measures: [String: Double]
  }

  /// Reads the known queues, deployed services and baseline measures.
  static func known(queue: any JobQueue, kpis: KPIStore?, dataDirectory: String?, now: Int64) async throws -> Known {
    let queues = Set(try await queue.stats().counts.keys).union([defaultQueue]).sorted()
    var services: [String] = []
    if let kpis {
      let started = try await kpis.latestSamples(names: ["deploy.started", "deploy.duration"], since: now - 30 * 86_400_000)
      services = Set(started.samples.compactMap { $0.labels["service"] }).sorted()
    }
    var measures: [String: Double] = [:]
    if let dataDirectory {
      for measure in try BaselineFiles(dataDirectory: dataDirectory).savedMeasures() {
        measures[measure.name] = measure.thresholdPercent
      }
    }
    return Known(queues: queues, services: services, measures: measures)
  }

  /// Creates every known series at zero (a gauge already set keeps its value: this runs before
  /// the collectors do).
  static func export(_ known: Known, queue: any JobQueue, now: Int64) {
    (queue as? InstrumentedJobQueue)?.registerQueues(known.queues)
    for name in known.queues { QueueMetricsCollector.recordDepth(queue: name, counts: [:]) }
    for sample in ActivityCollector.zeroSamples(queues: Set(known.queues), time: now) { ActivityCollector.export(sample) }
    for severity in severities {
      Gauge(label: AlertEngine.firingMetric, dimensions: [("severity", severity)]).record(0)
    }
    for kind in slaBreachKinds {
      _ = Metrics.Counter(label: AlertEngine.slaBreachesMetric, dimensions: [("kind", kind)])
    }
    _ = Recorder(label: AlertEngine.timeToAcknowledgeMetric)
    _ = Recorder(label: AlertEngine.timeToResolveMetric)
    for service in known.services {
      Gauge(label: RecordedKPIGauges.deploymentDurationMetric, dimensions: [("service", service)]).record(0)
    }
    for (measure, threshold) in known.measures {
      Gauge(label: RecordedKPIGauges.baselineDeltaMetric, dimensions: [("measure", measure)]).record(0)
      Gauge(label: RecordedKPIGauges.baselineThresholdMetric, dimensions: [("measure", measure)]).record(threshold)
    }
  }
}
