import ArgumentParser
import Foundation
import NovaBenchmarks

extension BenchCommand {
  struct SQLiteCeilingBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "sqlite-ceiling",
      abstract: "The bare job lifecycle (insert, claim, delete) in plain SQL on one SQLite file: the ceiling `bench queue` is measured against.")

    @Option(help: "Jobs per run.")
    var jobs: Int = 100_000

    @Option(help: "Jobs per transaction.")
    var batch: Int = 100

    @Option(help: "Runs; the summary reports the median of each figure.")
    var runs: Int = 3

    @Option(help: "A folder for the database files (default: a temporary folder); each run's file is removed afterwards.")
    var dataDir: String?

    @OptionGroup var output: OutputOptions

    func validate() throws {
      guard (1...10_000_000).contains(jobs) else { throw ValidationError("--jobs must be in 1...10000000") }
      guard (1...10_000).contains(batch) else { throw ValidationError("--batch must be in 1...10000") }
      guard (1...100).contains(runs) else { throw ValidationError("--runs must be in 1...100") }
      if let dataDir {
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dataDir, isDirectory: &isFolder), isFolder.boolValue else {
          throw ValidationError("--data-dir '\(dataDir)' is not an existing folder")
        }
      }
    }

    func run() async throws {
      var results: [SQLiteCeilingBenchmark.Result] = []
      for _ in 1...runs {
        let base = dataDir.map { URL(fileURLWithPath: $0) } ?? FileManager.default.temporaryDirectory
        let folder = base.appendingPathComponent("nova-ceiling-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        results.append(try SQLiteCeilingBenchmark.run(path: folder.appendingPathComponent("ceiling.sqlite").path, jobs: jobs, batch: batch))
      }
      let summary = SQLiteCeilingBenchmark.median(results)
      if output.json {
        try printJSON(SQLiteCeilingOutput(median: summary, runs: results), pretty: false)
      } else {
        print(
          """
          SQLite ceiling: \(summary.jobs) jobs (insert, claim, delete), \(summary.batch) per transaction, WAL, synchronous NORMAL; median of \(runs) run(s)
            lifecycle    \(Int(summary.jobs_per_s)) jobs/s (\(String(format: "%.2f", summary.seconds)) s)
            inserts      \(Int(summary.inserts_per_s)) jobs/s
          """)
      }
    }
  }
}

/// `nova bench sqlite-ceiling --json`: the median figures at the top level, every run under `runs`.
struct SQLiteCeilingOutput: Encodable {
  var median: SQLiteCeilingBenchmark.Result
  var runs: [SQLiteCeilingBenchmark.Result]

  enum CodingKeys: String, CodingKey { case runs }

  func encode(to encoder: any Encoder) throws {
    try median.encode(to: encoder)
    var container = encoder.container(keyedBy: CodingKeys.self)
    try container.encode(runs, forKey: .runs)
  }
}
