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
  struct PolicyBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "policy",
      abstract: "Time policy decisions: cached, uncached over N local rules, concurrent callers, and OPA when given.")

    @Option(help: "Local rules to generate.") var rules: Int = 1000
    @Option(help: "Decisions timed per path.") var samples: Int = 100_000
    @Option(help: "An OPA server to time uncached OPA decisions against (http://HOST:PORT).") var opaURL: String?
    @Option(help: "The decision path under /v1/data/ on that server.") var opaPath: String = "nova/authz/allow"
    @Option(help: "Runs; the summary reports medians.") var runs: Int = 3
    @OptionGroup var output: OutputOptions

    func validate() throws {
      guard (1...100_000).contains(rules) else { throw ValidationError("--rules must be in 1...100000") }
      guard (100...10_000_000).contains(samples) else { throw ValidationError("--samples must be in 100...10000000") }
      guard (1...20).contains(runs) else { throw ValidationError("--runs must be in 1...20") }
    }

    func run() async throws {
      var results: [PolicyBenchmark.Result] = []
      for _ in 0..<runs {
        results.append(await PolicyBenchmark.run(rules: rules, samples: samples, opa: opaURL.map { ($0, opaPath) }))
      }
      func median(_ values: [Double]) -> Double { Statistics.median(values) ?? 0 }
      let cachedP50 = median(results.map(\.cached.p50_us))
      let cachedP99 = median(results.map(\.cached.p99_us))
      let localP50 = median(results.map(\.uncached_local.p50_us))
      let localP99 = median(results.map(\.uncached_local.p99_us))
      let scaling = results[0].concurrency.indices.map { index in
        PolicyBenchmark.Scaling(
          callers: results[0].concurrency[index].callers, decisions_per_s: median(results.map { $0.concurrency[index].decisions_per_s }))
      }
      let opa = results.compactMap(\.opa)
      let summary = PolicyBenchOutput(
        rules: rules, runs: runs, cores: results[0].cores,
        cached: .init(p50_us: cachedP50, p99_us: cachedP99, samples: samples),
        uncached_local: .init(p50_us: localP50, p99_us: localP99, samples: samples),
        opa: opa.isEmpty ? nil : .init(p50_us: median(opa.map(\.p50_us)), p99_us: median(opa.map(\.p99_us)), samples: opa[0].samples),
        concurrency: scaling)
      if output.json {
        try printJSON(summary, pretty: false)
      } else {
        print("policy engine, \(rules) local rules, median of \(runs) run(s), \(summary.cores) cores")
        print(String(format: "  cached decision         p50 %.2f µs, p99 %.2f µs", cachedP50, cachedP99))
        print(String(format: "  uncached, local rules   p50 %.2f µs, p99 %.2f µs", localP50, localP99))
        if let opa = summary.opa { print(String(format: "  uncached, OPA           p50 %.0f µs, p99 %.0f µs", opa.p50_us, opa.p99_us)) }
        for point in scaling {
          print(String(format: "  %d concurrent caller(s)  %.0f cached decisions/s", point.callers, point.decisions_per_s))
        }
      }
    }
  }
}

/// `nova bench policy --json`.
struct PolicyBenchOutput: Encodable {
  var rules: Int
  var runs: Int
  var cores: Int
  var cached: PolicyBenchmark.Latency
  var uncached_local: PolicyBenchmark.Latency
  var opa: PolicyBenchmark.Latency?
  var concurrency: [PolicyBenchmark.Scaling]
}
