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
  struct AlertsBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "alerts",
      abstract: "Time one evaluation of many rules over fresh KPIs, and a page from the crossing sample to the webhook.")
    @Option(help: "Rules, each on a KPI of its own (1 % of them crossing).") var rules: Int = 10_000
    @Option(help: "Evaluations to time.") var runs: Int = 5
    @Option(help: "Pages (and resolves) to time through a webhook on loopback.") var pages: Int = 50
    @OptionGroup var output: OutputOptions

    func validate() throws {
      guard (1...1_000_000).contains(rules) else { throw ValidationError("--rules must be in 1...1000000") }
      guard (1...100).contains(runs) else { throw ValidationError("--runs must be in 1...100") }
      guard (1...10_000).contains(pages) else { throw ValidationError("--pages must be in 1...10000") }
    }

    func run() async throws {
      let folder = FileManager.default.temporaryDirectory.appendingPathComponent("nova-alerts-bench-\(UUID().uuidString)")
      try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
      defer { try? FileManager.default.removeItem(at: folder) }
      let result = try await AlertBenchmark.run(rules: rules, runs: runs, pages: pages, directory: folder)
      if output.json {
        try printJSON(result, pretty: false)
      } else {
        print("alert engine: \(rules) rules, \(result.firing_alerts) firing")
        print(
          String(
            format: "  evaluation over fresh KPIs   p50 %.1f ms, p99 %.1f ms (%d runs)", result.evaluation_ms.p50, result.evaluation_ms.p99, runs))
        print(
          String(
            format: "  KPI crossing -> webhook page p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d pages, evaluation interval %.0f s)",
            result.page_latency_ms.p50, result.page_latency_ms.p99, result.page_latency_ms.max, pages, result.evaluation_interval_s))
        print(String(format: "  KPI clearing -> resolve      p50 %.1f ms, p99 %.1f ms", result.resolve_latency_ms.p50, result.resolve_latency_ms.p99))
        print("  duplicate pages              \(result.duplicate_pages)")
      }
    }
  }
}
