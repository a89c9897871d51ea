import Foundation
import Metrics
import NovaMonitoring

/// Exports as gauges the latest KPIs that other processes record in the store (`nova kpi
/// deploy`, `nova bench baseline --compare`), so that Prometheus and the dashboards see them.
public enum RecordedKPIGauges {
  /// Gauge: the latest deployment's duration per service (seconds).
  public static let deploymentDurationMetric = "nova_deployment_duration_seconds"
  /// Gauge: when the latest deployment per service finished (Unix seconds).
  public static let deploymentFinishedMetric = "nova_deployment_last_finished_timestamp_seconds"
  /// Gauge: the latest baseline comparison's delta per measure (percent).
  public static let baselineDeltaMetric = "nova_baseline_delta_percent"
  /// Gauge: the threshold that delta was held against (percent).
  public static let baselineThresholdMetric = "nova_baseline_threshold_percent"

  /// Sets the gauges from the samples of the last `lookback` milliseconds before `now`.
  public static func export(from store: KPIStore, now: Int64, lookback: Int64 = 30 * 86_400_000) async throws {
    for sample in latest(
      try await store.latestSamples(names: ["deploy.duration"], since: now - lookback, until: now).samples.filter { $0.time <= now }, by: ["service"])
    {
      let service = [("service", sample.labels["service"] ?? "")]
      Gauge(label: deploymentDurationMetric, dimensions: service).record(sample.value)
      Gauge(label: deploymentFinishedMetric, dimensions: service).record(Double(sample.time) / 1000)
    }
    for sample in latest(
      try await store.latestSamples(names: ["baseline.delta"], since: now - lookback, until: now).samples.filter { $0.time <= now }, by: ["measure"])
    {
      let measure = [("measure", sample.labels["measure"] ?? "")]
      Gauge(label: baselineDeltaMetric, dimensions: measure).record(sample.value)
      if let threshold = sample.labels["threshold_percent"].flatMap(Double.init) {
        Gauge(label: baselineThresholdMetric, dimensions: measure).record(threshold)
      }
    }
  }

  /// The newest sample per value of `keys` (of series that differ in other labels too).
  static func latest(_ samples: [KPISample], by keys: [String]) -> [KPISample] {
    var newest: [[String]: KPISample] = [:]
    for sample in samples {
      let key = keys.map { sample.labels[$0] ?? "" }
      if let kept = newest[key], kept.time > sample.time { continue }
      newest[key] = sample
    }
    return newest.keys.sorted { $0.lexicographicallyPrecedes($1) }.map { newest[$0]! }
  }
}
