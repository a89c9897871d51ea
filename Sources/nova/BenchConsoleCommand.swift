import ArgumentParser
import Foundation
import NovaApplication
import NovaSecurity
import NovaServer

extension BenchCommand {
  struct ConsoleBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "console",
      abstract: "Fill a store with N jobs (kept in --data-dir for later runs), serve it, and time every console page.")

    @Option(help: "Jobs in the store.")
    var jobs: Int = 1_000_000

    @Option(help: "Requests timed per page.")
    var requests: Int = 50

    @Option(name: .long, help: ArgumentHelp("Where the store is kept (filled once, reused while it holds --jobs jobs).", valueName: "dir"))
    var dataDir: String?

    @Option(name: .long, help: ArgumentHelp("Use this Redis for the jobs (redis://host:port/db).", valueName: "url"))
    var queueURL: String?

    @OptionGroup var output: OutputOptions

    func validate() throws {
      guard (1...20_000_000).contains(jobs) else { throw ValidationError("--jobs must be in 1...20000000") }
      guard (1...10_000).contains(requests) else { throw ValidationError("--requests must be in 1...10000") }
    }

    func run() async throws {
      let directory = dataDir ?? FileManager.default.temporaryDirectory.appendingPathComponent("nova-console-bench-\(UUID().uuidString)").path
      try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
      defer { if dataDir == nil { try? FileManager.default.removeItem(atPath: directory) } }
      let application = try await NovaApplication.open(NovaSettings(dataDirectory: directory, queueURL: queueURL))
      let showProgress = stderrIsTerminal
      let report: (String) -> Void = { step in
        if showProgress { FileHandle.standardError.write(Data("\r\u{1B}[K  \(step)".utf8)) }
      }
      let seeded = try await ConsoleBenchmark.seed(application, jobs: jobs, progress: report)
      let pages = try await ConsoleBenchmark.measure(application, requests: requests, progress: report)
      if showProgress { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
      let result = ConsoleBenchmark.Result(
        backend: queueURL == nil ? "sqlite" : "redis", jobs: jobs, audit_entries: try await application.security.audit.size(), seed_s: seeded,
        pages: pages)
      if output.json {
        try printJSON(result, pretty: false)
      } else {
        print("console pages over \(result.jobs) jobs (\(result.backend), \(result.audit_entries) audit entries), \(requests) requests each")
        for page in pages {
          print(
            "  \(page.path.padding(toLength: 58, withPad: " ", startingAt: 0)) p50 \(String(format: "%7.1f", page.p50_ms)) ms  p99 \(String(format: "%7.1f", page.p99_ms)) ms  (HTTP \(page.status))"
          )
        }
        let slowest = pages.map(\.p99_ms).max() ?? 0
        print("  slowest p99: \(String(format: "%.1f", slowest)) ms (target: under 100 ms)")
      }
    }
  }
}
