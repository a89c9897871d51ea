import Foundation
import NovaCore
import Yams

/// One `nova bench baseline` run: the host, and the CPU, GPU and network figures.
public struct BaselineRun: Codable, Sendable, Equatable {
  public var host: HostFacts
  public var started_at: String
  public var runs: Int
  public var cpu: CPUProbe.Result?
  public var gpu: GPUProbe.Result?
  public var network: NetworkProbe.Result?
  public var duration_s: Double

  public init(
    host: HostFacts, started_at: String, runs: Int, cpu: CPUProbe.Result? = nil, gpu: GPUProbe.Result? = nil,
    network: NetworkProbe.Result? = nil, duration_s: Double = 0
  ) {
    self.host = host
    self.started_at = started_at
    self.runs = runs
    self.cpu = cpu
    self.gpu = gpu
    self.network = network
    self.duration_s = duration_s
  }

  /// Every comparable figure: name → (median, spread).
  var figures: [String: (value: Double, spread: Double, kind: ThresholdKind)] {
    var figures: [String: (Double, Double, ThresholdKind)] = [:]
    for measure in cpu?.measures ?? [] { figures[measure.name] = (measure.median, measure.spread, .cpu) }
    if let network { figures["network.throughput"] = (network.throughput_mbit_s.median, network.throughput_mbit_s.spread, .network) }
    for (index, utilization) in (gpu?.median_utilization_percent ?? []).enumerated() {
      if let utilization { figures[Self.gpuMeasure(host: host.shortName, index: index)] = (utilization, 0, .gpu) }
    }
    return figures
  }

  /// The name of a GPU's utilisation measure, `gpu.HOST.INDEX.utilization`. A GPU is compared only
  /// with the same host's GPU of that index, and each host's comparisons are series of their own
  /// (`baseline.delta{measure}`). Names are derived from the run's `host`, which every saved run
  /// has, so baselines saved before hosts were named give these names too.
  public static func gpuMeasure(host: String, index: Int) -> String { "gpu.\(host).\(index).utilization" }
}

enum ThresholdKind { case cpu, gpu, network }

/// Allowed deltas against a baseline, from the `baseline:` section of `thresholds.yaml`.
public struct BaselineThresholds: Codable, Sendable, Equatable {
  /// CPU workloads, relative, in percent.
  public var cpu_percent: Double = 10
  /// GPU utilisation, in percentage points.
  public var gpu_utilization_percent: Double = 5
  /// Network throughput, relative, in percent.
  public var network_throughput_percent: Double = 7

  public init() {}

  /// Reads the `baseline:` section of a thresholds file (other sections belong to alerting);
  /// errors name the file, line and column.
  public static func load(path: String) throws(NovaError) -> BaselineThresholds {
    guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
      throw .invalidInput(field: "--thresholds", message: "cannot read \(path)")
    }
    let root: Node?
    do {
      root = try Yams.compose(yaml: text)
    } catch {
      throw .malformedInput(field: path, message: "\(error)")
    }
    var thresholds = BaselineThresholds()
    guard case .mapping(let top)? = root, let section = top["baseline"] else { return thresholds }
    guard case .mapping(let entries) = section else {
      throw .invalidInput(field: "\(path):\(section.mark?.line ?? 0):\(section.mark?.column ?? 0): baseline", message: "expected a mapping")
    }
    for (key, value) in entries {
      let place = "\(path):\(key.mark?.line ?? 0):\(key.mark?.column ?? 0): baseline.\(key.string ?? "?")"
      guard let number = value.string.flatMap(Double.init), number >= 0, number <= 1000 else {
        throw .invalidInput(field: place, message: "expected a percentage in 0...1000")
      }
      switch key.string {
      case "cpu_percent": thresholds.cpu_percent = number
      case "gpu_utilization_percent": thresholds.gpu_utilization_percent = number
      case "network_throughput_percent": thresholds.network_throughput_percent = number
      default:
        throw .invalidInput(field: place, message: "unknown key; expected cpu_percent, gpu_utilization_percent, network_throughput_percent")
      }
    }
    return thresholds
  }

  func limit(_ kind: ThresholdKind) -> Double {
    switch kind {
    case .cpu: cpu_percent
    case .gpu: gpu_utilization_percent
    case .network: network_throughput_percent
    }
  }
}

/// A run against a saved baseline, measure by measure.
public struct BaselineComparison: Codable, Sendable, Equatable {
  public struct Delta: Codable, Sendable, Equatable {
    public var name: String
    public var baseline: Double
    public var current: Double
    /// Relative change in percent (GPU utilisation: the change in points).
    public var delta_percent: Double
    public var threshold_percent: Double
    /// The larger of the two runs' own spreads, in percent: changes within it are noise.
    public var noise_percent: Double
    public var breached: Bool
  }

  public var baseline_name: String
  public var deltas: [Delta]
  public var breached: Bool { deltas.contains(where: \.breached) }

  /// A change counts only when it exceeds both the threshold and the runs' own spread.
  public static func compare(_ current: BaselineRun, with baseline: BaselineRun, name: String, thresholds: BaselineThresholds) -> BaselineComparison {
    let old = baseline.figures
    let new = current.figures
    var deltas: [Delta] = []
    for key in old.keys.sorted() {
      guard let before = old[key], let after = new[key] else { continue }
      let delta: Double
      if before.kind == .gpu {
        delta = after.value - before.value
      } else {
        delta = before.value == 0 ? 0 : (after.value - before.value) / before.value * 100
      }
      let noise = max(before.spread, after.spread) * 100
      let limit = thresholds.limit(before.kind)
      deltas.append(
        Delta(
          name: key, baseline: before.value, current: after.value, delta_percent: delta, threshold_percent: limit,
          noise_percent: noise, breached: abs(delta) > limit && abs(delta) > noise))
    }
    return BaselineComparison(baseline_name: name, deltas: deltas)
  }

  /// The comparison as KPIs: `baseline.delta` for every measure (percent, with its threshold as
  /// a label) and `baseline.breach` for each that breached, which the alert engine watches.
  public func kpiSamples(time: Int64, source: String = "bench baseline") -> [KPISample] {
    deltas.map {
      KPISample(
        name: "baseline.delta",
        labels: ["baseline": baseline_name, "measure": $0.name, "threshold_percent": String(format: "%g", $0.threshold_percent)],
        value: $0.delta_percent, unit: "percent", time: time, source: source)
    }
      + deltas.filter(\.breached).map {
        KPISample(
          name: "baseline.breach", labels: ["baseline": baseline_name, "measure": $0.name], value: $0.delta_percent,
          unit: "percent", time: time, source: source)
      }
  }
}

/// Where baselines and runs are kept: `kpi/baselines/NAME.json` and `kpi/baseline-TIME.json`.
public struct BaselineFiles: Sendable {
  public let directory: URL

  /// The `kpi/` folder of a data directory.
  public init(dataDirectory: String) {
    directory = URL(fileURLWithPath: dataDirectory).appendingPathComponent("kpi")
  }

  static let encoder: JSONEncoder = {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
    return encoder
  }()

  /// Writes the run as an artefact; returns its path.
  @discardableResult
  public func write(run: BaselineRun) throws -> String {
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    let stamp = run.started_at.replacingOccurrences(of: ":", with: "-")
    let url = directory.appendingPathComponent("baseline-\(stamp).json")
    try Self.encoder.encode(run).write(to: url, options: .atomic)
    return url.path
  }

  /// Every measure in the saved baselines (what a comparison can report on), with the threshold
  /// `thresholds` holds it to.
  public func savedMeasures(thresholds: BaselineThresholds = BaselineThresholds()) throws -> [(name: String, thresholdPercent: Double)] {
    let folder = directory.appendingPathComponent("baselines")
    let files = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
    var measures: [String: Double] = [:]
    for file in files where file.hasSuffix(".json") {
      for (name, figure) in try load(String(file.dropLast(".json".count))).figures {
        measures[name] = thresholds.limit(figure.kind)
      }
    }
    return measures.keys.sorted().map { ($0, measures[$0]!) }
  }

  /// Saves the run as baseline `name`.
  @discardableResult
  public func save(_ run: BaselineRun, as name: String) throws -> String {
    try Self.validate(name)
    let folder = directory.appendingPathComponent("baselines")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    let url = folder.appendingPathComponent("\(name).json")
    try Self.encoder.encode(run).write(to: url, options: .atomic)
    return url.path
  }

  /// Loads baseline `name`.
  public func load(_ name: String) throws -> BaselineRun {
    try Self.validate(name)
    let url = directory.appendingPathComponent("baselines/\(name).json")
    guard let data = FileManager.default.contents(atPath: url.path) else {
      throw NovaError.notFound("no baseline named '\(name)' in \(directory.path)/baselines; save one with --save-baseline \(name)")
    }
    do {
      return try JSONDecoder().decode(BaselineRun.self, from: data)
    } catch {
      throw NovaError.malformedInput(field: url.path, message: JSONErrorText.describe(error))
    }
  }

  static func validate(_ name: String) throws {
    guard !name.isEmpty, name.count <= 64, name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }), !name.hasPrefix(".") else {
      throw NovaError.invalidInput(field: "baseline name", message: "'\(name)' must be 1 to 64 letters, digits, - _ .")
    }
  }
}
