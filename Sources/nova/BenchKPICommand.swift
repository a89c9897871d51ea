import ArgumentParser
import Foundation
import Logging
import NovaAlerting
import NovaBenchmarks
import NovaCore
import NovaDatabase
import NovaMonitoring
import NovaPolicy
import NovaQueue
import NovaRedisQueue
import NovaSecurity
import NovaServer

extension BenchCommand {
  struct KPIBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "kpi", abstract: "Ingest KPI samples in batches into a fresh store, then time one-name, one-hour queries.")
    @Option(help: "Samples to ingest (20 names over 24 hours).") var samples: Int = 1_000_000
    @Option(help: "Samples per batch.") var batch: Int = 1000
    @Option(help: "Runs; the summary reports medians.") var runs: Int = 3
    @OptionGroup var output: OutputOptions

    func validate() throws {
      guard (1000...50_000_000).contains(samples) else { throw ValidationError("--samples must be in 1000...50000000") }
      guard (1...10_000).contains(batch) else { throw ValidationError("--batch must be in 1...10000") }
      guard (1...20).contains(runs) else { throw ValidationError("--runs must be in 1...20") }
    }

    func run() async throws {
      var results: [KPIBenchmark.Result] = []
      for _ in 0..<runs {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("nova-kpi-bench-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        results.append(try await KPIBenchmark.run(samples: samples, batch: batch, directory: folder))
      }
      func median(_ values: [Double]) -> Double { Statistics.median(values) ?? 0 }
      let summary = KPIBenchmark.Result(
        samples: samples, batch: batch, ingest_per_s: median(results.map(\.ingest_per_s)), query_rows: results[0].query_rows,
        query_p50_ms: median(results.map(\.query_p50_ms)), query_p99_ms: median(results.map(\.query_p99_ms)))
      if output.json {
        try printJSON(summary, pretty: false)
      } else {
        print("KPI store, \(samples) samples in batches of \(batch), median of \(runs) run(s)")
        print(String(format: "  ingest   %.0f samples/s", summary.ingest_per_s))
        print(
          String(
            format: "  query    one name, one hour (%d rows): p50 %.2f ms, p99 %.2f ms", summary.query_rows, summary.query_p50_ms,
            summary.query_p99_ms))
      }
    }
  }
}
