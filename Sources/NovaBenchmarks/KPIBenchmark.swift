import Foundation
import NovaDatabase
import NovaMonitoring

/// Ingests samples in batches into a fresh store, then times queries for one name over one hour.
public enum KPIBenchmark {
  public struct Result: Codable, Sendable {
    public var samples: Int
    public var batch: Int
    public var ingest_per_s: Double
    public var query_rows: Int
    public var query_p50_ms: Double
    public var query_p99_ms: Double

    public init(samples: Int, batch: Int, ingest_per_s: Double, query_rows: Int, query_p50_ms: Double, query_p99_ms: Double) {
      self.samples = samples
      self.batch = batch
      self.ingest_per_s = ingest_per_s
      self.query_rows = query_rows
      self.query_p50_ms = query_p50_ms
      self.query_p99_ms = query_p99_ms
    }
  }

  /// `samples` spread over 20 names and 24 hours; queries of one name over one hour.
  public static func run(samples: Int, batch: Int, directory: URL) async throws -> Result {
    // Fixed sample times (the same data every run), a store whose clock allows them.
    let store = try KPIStore(
      database: try NovaDatabase(path: directory.appendingPathComponent("kpi-bench.sqlite").path), futureTolerance: .seconds(10 * 365 * 86_400))
    let start = Int64(1_800_000_000_000)
    let span = Int64(86_400_000)
    let names = (0..<20).map { "bench.metric_\($0)" }
    let clock = ContinuousClock()
    let began = clock.now
    var written = 0
    // Batches go in concurrently, as many reporters would send them.
    try await withThrowingTaskGroup(of: Void.self) { group in
      var inFlight = 0
      while written < samples {
        let count = min(batch, samples - written)
        let first = written
        let chunk = (0..<count).map { index -> KPISample in
          let n = first + index
          return KPISample(
            name: names[n % names.count], labels: ["host": "h\(n % 4)"], value: Double(n % 1000), unit: "ms",
            time: start + Int64(n) * span / Int64(samples), source: "bench")
        }
        written += count
        group.addTask { try await store.record(chunk) }
        inFlight += 1
        if inFlight >= 8 {
          try await group.next()
          inFlight -= 1
        }
      }
      try await group.waitForAll()
    }
    let ingest = clock.now - began
    var times: [Double] = []
    var rows = 0
    for index in 0..<50 {
      let from = start + Int64(index % 23) * 3_600_000
      let began = clock.now
      rows = try await store.query(name: names[index % names.count], since: from, until: from + 3_600_000, limit: .max).count
      let elapsed = clock.now - began
      times.append(Double(elapsed.components.attoseconds) / 1e15 + Double(elapsed.components.seconds) * 1000)
    }
    times.sort()
    let seconds = Double(ingest.components.seconds) + Double(ingest.components.attoseconds) / 1e18
    return Result(
      samples: samples, batch: batch, ingest_per_s: Double(samples) / seconds, query_rows: rows,
      query_p50_ms: times[times.count / 2], query_p99_ms: times[min(times.count - 1, times.count * 99 / 100)])
  }
}
