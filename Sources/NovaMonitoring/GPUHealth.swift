import Foundation
import NovaCore

/// The health of a host's GPUs at one moment (issue #22 point 7): utilisation, memory,
/// temperature and power per device from `nvidia-smi`, kept as KPIs labelled by host and GPU.
public struct GPUHealth: Sendable, Equatable {
  /// The fields `nvidia-smi --query-gpu` is asked for, in order.
  public static let query = "index,uuid,name,utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw"

  /// KPI: how busy the GPU was over the driver's last sample period (percent).
  public static let utilizationKPI = "gpu.utilization"
  /// KPI: the GPU memory in use (MiB); not recorded for unified-memory GPUs, which report none.
  public static let memoryUsedKPI = "gpu.memory.used"
  /// KPI: the GPU's core temperature (°C).
  public static let temperatureKPI = "gpu.temperature"
  /// KPI: the GPU's power draw (W).
  public static let powerKPI = "gpu.power"
  /// Every KPI `kpiSamples` can record, in the order it records them.
  public static let kpiNames = [utilizationKPI, memoryUsedKPI, temperatureKPI, powerKPI]
  /// Who the samples say reported them when no other source is given.
  public static let defaultSource = "nova worker"
  /// How long one query may take: a hung driver must not stall the collector behind it.
  public static let defaultTimeout: Duration = .seconds(10)

  /// One GPU at one moment; a figure the device does not report (`[N/A]`, `[Not Supported]`) is nil, never zero.
  public struct Reading: Codable, Sendable, Equatable {
    /// `nvidia-smi`'s index, what `CUDA_VISIBLE_DEVICES` and the `gpu` label name.
    public var index: Int
    /// The GPU's own id (`GPU-…`), which stays with the device whatever its index.
    public var uuid: String
    /// `nvidia-smi`'s name for it (`NVIDIA H100 80GB HBM3`).
    public var model: String
    /// How busy it was over the driver's last sample period, in percent.
    public var utilization_percent: Double?
    /// Memory in use, in MiB (nil on unified-memory GPUs such as GB10).
    public var memory_used_mib: Double?
    /// Its own memory, in MiB (nil on unified-memory GPUs).
    public var memory_total_mib: Double?
    /// Core temperature, in °C.
    public var temperature_c: Double?
    /// Power draw, in W.
    public var power_watts: Double?

    /// A reading of GPU `index`; figures left out are not reported.
    public init(
      index: Int, uuid: String, model: String, utilization_percent: Double? = nil, memory_used_mib: Double? = nil,
      memory_total_mib: Double? = nil, temperature_c: Double? = nil, power_watts: Double? = nil
    ) {
      self.index = index
      self.uuid = uuid
      self.model = model
      self.utilization_percent = utilization_percent
      self.memory_used_mib = memory_used_mib
      self.memory_total_mib = memory_total_mib
      self.temperature_c = temperature_c
      self.power_watts = power_watts
    }
  }

  /// The host the readings were taken on (the `host` label).
  public var host: String
  /// One reading per GPU, in `nvidia-smi`'s order.
  public var readings: [Reading]

  /// The readings of `host`'s GPUs.
  public init(host: String, readings: [Reading]) {
    self.host = host
    self.readings = readings
  }

  /// Parses `nvidia-smi --query-gpu=<query> --format=csv,noheader,nounits` (one line per GPU); a
  /// line that is not index, uuid, name and five figures is an error naming it.
  public static func parse(_ output: String) throws(NovaError) -> [Reading] {
    var readings: [Reading] = []
    let lines = output.split(whereSeparator: \.isNewline).filter { !$0.allSatisfy(\.isWhitespace) }
    for (number, line) in lines.enumerated() {
      let field = "nvidia-smi line \(number + 1)"
      let fields = line.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
      guard fields.count == 8 else {
        throw .malformedInput(field: field, message: "expected 8 fields (\(query)), got \(fields.count): '\(line)'")
      }
      guard let index = Int(fields[0]), index >= 0, !fields[1].isEmpty, !fields[2].isEmpty else {
        throw .malformedInput(field: field, message: "expected a GPU index, uuid and name: '\(line)'")
      }
      let names = ["utilization.gpu", "memory.used", "memory.total", "temperature.gpu", "power.draw"]
      var figures: [Double?] = []
      for (name, text) in zip(names, fields[3...]) {
        // nvidia-smi writes what a device does not report in brackets ([N/A], [Not Supported],
        // [Unknown Error]): missing, not zero. GB10 reports no memory of its own, and power may be missing.
        if text.hasPrefix("[") && text.hasSuffix("]") {
          figures.append(nil)
          continue
        }
        guard let value = Double(text), value.isFinite, value >= 0 else {
          throw .malformedInput(field: field, message: "\(name) '\(text)' is not a number: '\(line)'")
        }
        figures.append(value)
      }
      readings.append(
        Reading(
          index: index, uuid: fields[1], model: fields[2], utilization_percent: figures[0], memory_used_mib: figures[1],
          memory_total_mib: figures[2], temperature_c: figures[3], power_watts: figures[4]))
    }
    return readings
  }

  /// Runs `nvidia-smi` once (found on `environment`'s PATH) and reads every GPU of `host`; a
  /// host without `nvidia-smi`, or whose driver finds no GPU, has none. A failing, hung or
  /// garbled `nvidia-smi` is an error that says which.
  public static func sample(
    host: String, environment: [String: String] = ProcessInfo.processInfo.environment, timeout: Duration = GPUHealth.defaultTimeout
  ) async throws(NovaError) -> GPUHealth {
    guard let binary = GPUProbe.locate("nvidia-smi", path: environment["PATH"] ?? "/usr/bin:/bin") else {
      return GPUHealth(host: host, readings: [])
    }
    switch await ProbeProgram.run(binary, ["--query-gpu=\(query)", "--format=csv,noheader,nounits"], timeout: timeout) {
    case .finished(0, let output):
      return GPUHealth(host: host, readings: try parse(output))
    // 6: "No devices were found" (a driver without GPUs), which is no GPU rather than a failure.
    case .finished(6, _):
      return GPUHealth(host: host, readings: [])
    case .finished(let status, _):
      throw .unavailable("\(binary) exited with \(status)")
    case .timedOut:
      throw .unavailable("\(binary) did not answer within \(timeout)")
    case .missing:
      return GPUHealth(host: host, readings: [])
    case .failed(let reason):
      throw .unavailable("cannot run \(binary): \(reason)")
    }
  }

  /// The readings as KPIs dated `time` (ms): `gpu.utilization` (percent), `gpu.memory.used` (MiB),
  /// `gpu.temperature` (celsius) and `gpu.power` (watts), labelled `host`, `gpu` (the index),
  /// `uuid` and `model`; a figure the GPU does not report gives no sample.
  public func kpiSamples(time: Int64, source: String = GPUHealth.defaultSource) -> [KPISample] {
    var samples: [KPISample] = []
    for reading in readings {
      let labels = ["host": host, "gpu": String(reading.index), "uuid": reading.uuid, "model": reading.model]
      let figures: [(String, Double?, String)] = [
        (Self.utilizationKPI, reading.utilization_percent, "percent"), (Self.memoryUsedKPI, reading.memory_used_mib, "MiB"),
        (Self.temperatureKPI, reading.temperature_c, "celsius"), (Self.powerKPI, reading.power_watts, "watts"),
      ]
      for (name, value, unit) in figures {
        guard let value else { continue }
        samples.append(KPISample(name: name, labels: labels, value: value, unit: unit, time: time, source: source))
      }
    }
    return samples
  }
}
