import ArgumentParser
import Foundation
import NovaBenchmarks
import NovaCore
import NovaQueue
import NovaRedis
import NovaRedisQueue
import NovaSecurity

extension BenchCommand {
  struct PromotionBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "promotion",
      abstract: "N jobs fall due at one instant; measure their promotion and a concurrent heartbeat's latency.")

    @Option(
      help: "Queue backend: sqlite (a fresh database in a temporary folder) or redis://HOST:PORT (keys under a fresh prefix, deleted afterwards).")
    var backend: String = "sqlite"

    @Option(help: "Jobs due at the same instant.")
    var jobs: Int = 200_000

    @Option(help: "Runs; the summary reports the median of each figure.")
    var runs: Int = 1

    @OptionGroup var output: OutputOptions

    func validate() throws {
      guard (1...10_000_000).contains(jobs) else { throw ValidationError("--jobs must be in 1...10000000") }
      guard (1...100).contains(runs) else { throw ValidationError("--runs must be in 1...100") }
      guard backend == "sqlite" || backend.hasPrefix("redis://") else {
        throw ValidationError("--backend '\(backend)' is not supported; use sqlite or redis://HOST:PORT")
      }
    }

    func run() async throws {
      var results: [PromotionBenchmark.Result] = []
      for _ in 1...runs {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("nova-bench-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let clock = PromotionBenchmark.WarpClock()
        if backend.hasPrefix("redis://") {
          // The warp needs the queue on this process's clock, not Redis's.
          let queue = RedisJobQueue(
            configuration: .init(
              client: .init(url: try RedisURL(parsing: backend)), clock: clock, keyPrefix: "nova-bench-\(UUID().uuidString.prefix(8))",
              serverTime: false))
          results.append(try await PromotionBenchmark.run(queue: queue, clock: clock, backend: "redis", jobs: jobs))
          try await queue.deleteAllKeys()
          queue.close()
        } else {
          let queue = try SQLiteJobQueue(
            configuration: .init(path: folder.appendingPathComponent("bench.sqlite").path, clock: clock, journal: AuditJournal()))
          results.append(try await PromotionBenchmark.run(queue: queue, clock: clock, backend: "sqlite", jobs: jobs))
        }
      }
      let summary = PromotionBenchmark.median(results)
      if output.json {
        try printJSON(PromotionOutput(median: summary, runs: results), pretty: false)
      } else {
        print(
          """
          backend \(summary.backend), \(summary.jobs) jobs due at one instant, median of \(runs) run(s)
            promoted     in \(String(format: "%.2f", summary.promote_s)) s (\(Int(summary.promoted_per_s)) jobs/s)
            heartbeat    p50 \(String(format: "%.1f", summary.heartbeat_p50_ms)) ms, p99 \(String(format: "%.1f", summary.heartbeat_p99_ms)) ms, max \(String(format: "%.1f", summary.heartbeat_max_ms)) ms while promoting
            peak RSS     \(Int(summary.peak_rss_mb)) MB
          """)
      }
    }
  }
}

/// `nova bench promotion --json`: the median figures at the top level, every run under `runs`.
struct PromotionOutput: Encodable {
  var median: PromotionBenchmark.Result
  var runs: [PromotionBenchmark.Result]

  enum CodingKeys: String, CodingKey { case runs }

  func encode(to encoder: any Encoder) throws {
    try median.encode(to: encoder)
    var container = encoder.container(keyedBy: CodingKeys.self)
    try container.encode(runs, forKey: .runs)
  }
}
