import Foundation
import Metrics
import NovaMonitoring

/// Exports as gauges the latest KPIs that other processes record in the store (`nova kpi
/// deploy`, `nova bench baseline --compare`, the GPU health `nova worker` records), so that
/// Prometheus and the dashboards see them.
public enum RecordedKPIGauges {
  /// Gauge: the latest deployment's duration per service (seconds).
  public static let deploymentDurationMetric = "nova_deployment_duration_seconds"
  /// Gauge: when the latest deployment per service finished (Unix seconds).
  public static let deploymentFinishedMetric = "nova_deployment_last_finished_timestamp_seconds"
  /// Gauge: the latest baseline comparison's delta per measure (percent).
  public static let baselineDeltaMetric = "nova_baseline_delta_percent"
  /// Gauge: the threshold that delta was held against (percent).
  public static let baselineThresholdMetric = "nova_baseline_threshold_percent"
  /// Gauge: the latest utilisation per host and GPU (percent), from `gpu.utilization`.
  public static let gpuUtilizationMetric = "nova_gpu_utilization_percent"
  /// Gauge: the latest memory used per host and GPU (MiB), from `gpu.memory.used`.
  public static let gpuMemoryUsedMetric = "nova_gpu_memory_used_mib"
  /// Gauge: the latest temperature per host and GPU (°C), from `gpu.temperature`.
  public static let gpuTemperatureMetric = "nova_gpu_temperature_celsius"
  /// Gauge: the latest power draw per host and GPU (W), from `gpu.power`.
  public static let gpuPowerMetric = "nova_gpu_power_watts"
  /// Each GPU health KPI and the gauge it is exported as.
  public static let gpuMetrics: [(kpi: String, metric: String)] = [
    (GPUHealth.utilizationKPI, gpuUtilizationMetric), (GPUHealth.memoryUsedKPI, gpuMemoryUsedMetric),
    (GPUHealth.temperatureKPI, gpuTemperatureMetric), (GPUHealth.powerKPI, gpuPowerMetric),
  ]
  /// GPU readings older than this (ms) are not exported: after a restart, a host that stopped
  /// reporting is not shown as if it were current.
  public static let gpuLookback: Int64 = 15 * 60_000

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
    let gpu = try await store.latestSamples(names: Set(gpuMetrics.map(\.kpi)), since: now - min(lookback, gpuLookback), until: now).samples
      .filter { $0.time <= now }
    for (kpi, metric) in gpuMetrics {
      // Per host and GPU index only: a uuid or model label would start a new series when a GPU is swapped.
      for sample in latest(gpu.filter { $0.name == kpi }, by: ["host", "gpu"]) {
        Gauge(label: metric, dimensions: [("host", sample.labels["host"] ?? ""), ("gpu", sample.labels["gpu"] ?? "")]).record(sample.value)
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
