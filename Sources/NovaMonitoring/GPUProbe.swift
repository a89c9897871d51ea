import Foundation

/// Samples `nvidia-smi` while the probe (or a user's GPU workload) runs. Fields that read
/// `[N/A]` are missing, never zero; a host without `nvidia-smi` says so.
public enum GPUProbe {
  public static let query = "name,utilization.gpu,memory.used,memory.total,power.draw,temperature.gpu,clocks.sm"

  /// One GPU at one moment.
  public struct Reading: Codable, Sendable, Equatable {
    public var name: String
    public var utilization_percent: Double?
    public var memory_used_mib: Double?
    public var memory_total_mib: Double?
    public var power_watts: Double?
    public var temperature_c: Double?
    public var sm_clock_mhz: Double?
  }

  public struct Result: Codable, Sendable, Equatable {
    /// False with `reason` when there is no GPU to measure.
    public var available: Bool
    public var reason: String?
    public var samples: [[Reading]]
    /// Median utilisation over the samples, per GPU.
    public var median_utilization_percent: [Double?]
    /// Memory from /proc/meminfo when the GPU reports none (unified memory).
    public var unified_memory_total_mib: Double?

    public init(
      available: Bool, reason: String? = nil, samples: [[Reading]] = [], median_utilization_percent: [Double?] = [],
      unified_memory_total_mib: Double? = nil
    ) {
      self.available = available
      self.reason = reason
      self.samples = samples
      self.median_utilization_percent = median_utilization_percent
      self.unified_memory_total_mib = unified_memory_total_mib
    }
  }

  /// Parses `nvidia-smi --query-gpu=… --format=csv,noheader,nounits` output (one line per GPU).
  public static func parse(_ output: String) -> [Reading] {
    output.split(separator: "\n").compactMap { line in
      let fields = line.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
      guard fields.count >= 7 else { return nil }
      func number(_ text: String) -> Double? {
        if text.isEmpty || text.hasPrefix("[") { return nil }  // [N/A], [Not Supported]
        return Double(text)
      }
      return Reading(
        name: fields[0], utilization_percent: number(fields[1]), memory_used_mib: number(fields[2]),
        memory_total_mib: number(fields[3]), power_watts: number(fields[4]), temperature_c: number(fields[5]),
        sm_clock_mhz: number(fields[6]))
    }
  }

  /// Samples `samples` times, `interval` apart, while `load` (a shell command) runs if given.
  public static func run(samples: Int, interval: Duration, load: String?, environment: [String: String] = ProcessInfo.processInfo.environment) async
    -> Result
  {
    guard let binary = locate("nvidia-smi", path: environment["PATH"] ?? "/usr/bin:/bin") else {
      return Result(
        available: false, reason: "no GPU: nvidia-smi is not on PATH", samples: [], median_utilization_percent: [], unified_memory_total_mib: nil)
    }
    let workload = load.map { ProbeProgram.start(shell: $0) }
    var readings: [[Reading]] = []
    var failure: String?
    sampling: for index in 0..<samples {
      if index > 0 { try? await Task.sleep(for: interval) }
      switch await capture(binary, ["--query-gpu=\(query)", "--format=csv,noheader,nounits"]) {
      case .success(let output):
        let parsed = parse(output)
        if parsed.isEmpty { failure = "nvidia-smi reported no GPU" } else { readings.append(parsed) }
      case .failure(let message):
        failure = message
      case .timedOut(let message):
        failure = message
        break sampling
      }
    }
    if let workload { await ProbeProgram.stop(workload) }
    guard let first = readings.first else {
      return Result(
        available: false, reason: "no GPU: \(failure ?? "nvidia-smi gave nothing")", samples: [], median_utilization_percent: [],
        unified_memory_total_mib: nil)
    }
    let medians = first.indices.map { gpu -> Double? in
      let values = readings.compactMap { $0.count > gpu ? $0[gpu].utilization_percent : nil }.sorted()
      return values.isEmpty ? nil : values[values.count / 2]
    }
    var unified: Double?
    if first.allSatisfy({ $0.memory_total_mib == nil }) {
      let meminfo = (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8)) ?? ""
      unified = meminfo.split(separator: "\n").first { $0.hasPrefix("MemTotal:") }
        .flatMap { Double($0.split(separator: " ").dropFirst().first ?? "") }.map { $0 / 1024 }
    }
    return Result(available: true, reason: nil, samples: readings, median_utilization_percent: medians, unified_memory_total_mib: unified)
  }

  static func locate(_ name: String, path: String) -> String? {
    for directory in path.split(separator: ":") {
      let candidate = "\(directory)/\(name)"
      if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return nil
  }

  /// How long one query may take: a hung driver must not hang the baseline with it.
  static let sampleTimeout: Duration = .seconds(20)

  enum Captured {
    case success(String)
    case failure(String)
    /// No answer in time: later samples would only wait on the same hung driver.
    case timedOut(String)
  }

  static func capture(_ binary: String, _ arguments: [String], timeout: Duration = sampleTimeout) async -> Captured {
    switch await ProbeProgram.run(binary, arguments, timeout: timeout) {
    case .finished(0, let output): return .success(output)
    case .finished(let status, _): return .failure("\(binary) exited with \(status)")
    case .timedOut: return .timedOut("\(binary) did not answer within \(timeout)")
    case .missing: return .failure("cannot run \(binary): it does not exist")
    case .failed(let reason): return .failure("cannot run \(binary): \(reason)")
    }
  }
}
