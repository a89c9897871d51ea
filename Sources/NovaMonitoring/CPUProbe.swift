import Crypto
import Foundation
import NovaCore

/// Fixed, deterministic CPU workloads (SHA-256 over a buffer, a dense matrix multiply, a sort),
/// on one thread and on every core, each run `runs` times; medians and spreads, plus the CPU
/// utilisation and load average while they ran.
public enum CPUProbe {
  /// One workload's figures.
  public struct Measure: Codable, Sendable, Equatable {
    public var name: String
    public var unit: String
    /// Median over the runs (higher is faster).
    public var median: Double
    /// (max − min) / median over the runs: how noisy the measure is here.
    public var spread: Double
    public var runs: [Double]

    public init(name: String, unit: String, median: Double, spread: Double, runs: [Double]) {
      self.name = name
      self.unit = unit
      self.median = median
      self.spread = spread
      self.runs = runs
    }
  }

  public struct Result: Codable, Sendable, Equatable {
    public var measures: [Measure]
    /// Busy share of all CPUs while the probe ran, from /proc/stat.
    public var utilisation: Double?
    /// /proc/loadavg's 1-minute figure after the probe.
    public var load1: Double?

    public init(measures: [Measure], utilisation: Double? = nil, load1: Double? = nil) {
      self.measures = measures
      self.utilisation = utilisation
      self.load1 = load1
    }
  }

  /// `scale` shrinks the workloads (tests use a fraction; figures stay rates).
  public static func run(runs: Int, scale: Double = 1, progress: @Sendable (String) -> Void = { _ in }) async -> Result {
    let before = cpuTimes()
    var measures: [Measure] = []
    let cores = ProcessInfo.processInfo.activeProcessorCount
    for (name, unit, work) in workloads {
      var single: [Double] = []
      var multi: [Double] = []
      for run in 1...runs {
        progress("cpu \(name) run \(run)/\(runs)")
        single.append(await rate(threads: 1) { work(scale) })
        multi.append(await rate(threads: cores) { work(scale) })
      }
      measures.append(measure("cpu.\(name).single", unit, single))
      measures.append(measure("cpu.\(name).multi", unit, multi))
    }
    let after = cpuTimes()
    var utilisation: Double?
    if let before, let after, after.total > before.total {
      utilisation = Double(after.busy - before.busy) / Double(after.total - before.total)
    }
    let load = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)).flatMap { Double($0.split(separator: " ").first ?? "") }
    return Result(measures: measures, utilisation: utilisation, load1: load)
  }

  static func measure(_ name: String, _ unit: String, _ values: [Double]) -> Measure {
    let sorted = values.sorted()
    let median = Statistics.median(sorted) ?? 0
    return Measure(name: name, unit: unit, median: median, spread: median > 0 ? (sorted.last! - sorted.first!) / median : 0, runs: values)
  }

  /// Units of work per second with `threads` threads each doing the work once.
  static func rate(threads: Int, _ work: @escaping @Sendable () -> Double) async -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    let units = await withTaskGroup(of: Double.self) { group in
      for _ in 0..<threads { group.addTask { work() } }
      return await group.reduce(0, +)
    }
    let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    return units / seconds
  }

  /// name, unit, and a function that does a fixed amount of work and returns how many units.
  static let workloads: [(String, String, @Sendable (Double) -> Double)] = [
    (
      "sha256", "MB/s",
      { scale in
        let buffer = [UInt8](repeating: 0x5a, count: 1 << 20)
        let megabytes = max(1, Int(256 * scale))
        var digest = SHA256.hash(data: buffer)
        for _ in 1..<megabytes { digest = SHA256.hash(data: Array(digest) + buffer) }
        return Array(digest).count == 32 ? Double(megabytes) : 0
      }
    ),
    (
      "matmul", "MFLOP/s",
      { scale in
        let n = max(16, Int(320 * scale.squareRoot()))
        var a = [Double](repeating: 0, count: n * n)
        var b = [Double](repeating: 0, count: n * n)
        for i in 0..<(n * n) {
          a[i] = Double(i % 7) * 0.5
          b[i] = Double(i % 5) * 0.25
        }
        var c = [Double](repeating: 0, count: n * n)
        for i in 0..<n {
          for k in 0..<n {
            let aik = a[i * n + k]
            for j in 0..<n { c[i * n + j] += aik * b[k * n + j] }
          }
        }
        return c[n + 1] >= 0 ? 2 * Double(n * n * n) / 1e6 : 0
      }
    ),
    (
      "sort", "Mitems/s",
      { scale in
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        var values = [UInt64](repeating: 0, count: max(1000, Int(2_000_000 * scale)))
        for index in values.indices {
          state &+= 0x9E37_79B9_7F4A_7C15
          var z = state
          z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
          z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
          values[index] = z ^ (z >> 31)
        }
        values.sort()
        return values[0] <= values[1] ? Double(values.count) / 1e6 : 0
      }
    ),
  ]

  static func cpuTimes() -> (busy: UInt64, total: UInt64)? {
    guard let stat = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
      let line = stat.split(separator: "\n").first, line.hasPrefix("cpu ")
    else { return nil }
    let fields = line.split(separator: " ").dropFirst().compactMap { UInt64($0) }
    guard fields.count >= 4 else { return nil }
    let total = fields.reduce(0, +)
    let idle = fields[3] + (fields.count > 4 ? fields[4] : 0)
    return (total - idle, total)
  }
}
