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
  struct AuditBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "audit",
      abstract: "Fill an audit log with N entries, then time a full checkpoint, verify, evidence export and bundle verification.")

    @Option(help: "Entries in the log.")
    var entries: Int = 1_000_000

    @Option(help: "Runs (each in a fresh database); the summary reports medians.")
    var runs: Int = 1

    @OptionGroup var output: OutputOptions

    func validate() throws {
      guard (1...50_000_000).contains(entries) else { throw ValidationError("--entries must be in 1...50000000") }
      guard (1...20).contains(runs) else { throw ValidationError("--runs must be in 1...20") }
    }

    func run() async throws {
      var results: [AuditBenchmark.Result] = []
      let showProgress = stderrIsTerminal
      for run in 1...runs {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("nova-audit-bench-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        results.append(
          try await AuditBenchmark.run(entries: entries, directory: folder) { step in
            if showProgress { FileHandle.standardError.write(Data("\r\u{1B}[K  run \(run)/\(runs): \(step)".utf8)) }
          })
        if showProgress { FileHandle.standardError.write(Data("\n".utf8)) }
      }
      let median = AuditBenchmark.median(results)
      if output.json {
        try printJSON(AuditBenchOutput(median: median, runs: results), pretty: false)
      } else {
        print(
          """
          audit log of \(median.entries) entries, median of \(runs) run(s)
            fill              \(Int(median.fill_per_s)) entries/s (\(median.database_bytes / 1_048_576) MiB database)
            checkpoint        \(String(format: "%.2f", median.checkpoint_s)) s (first, over every leaf)
            verify            \(String(format: "%.2f", median.verify_s)) s
            evidence export   \(String(format: "%.2f", median.export_s)) s (\(median.bundle_bytes / 1_048_576) MiB bundle)
            bundle verify     \(String(format: "%.2f", median.bundle_verify_s)) s
            peak memory       \(Int(median.peak_rss_mb_after_fill)) MB after fill, \(Int(median.peak_rss_mb_after_verify)) after verify, \(Int(median.peak_rss_mb_after_export)) after export
          """)
      }
    }
  }
}

/// `nova bench audit --json`: medians at the top level, every run under `runs`.
struct AuditBenchOutput: Encodable {
  var median: AuditBenchmark.Result
  var runs: [AuditBenchmark.Result]

  enum CodingKeys: String, CodingKey { case runs }

  func encode(to encoder: any Encoder) throws {
    try median.encode(to: encoder)
    var container = encoder.container(keyedBy: CodingKeys.self)
    try container.encode(runs, forKey: .runs)
  }
}
