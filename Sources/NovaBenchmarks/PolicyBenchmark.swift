import Foundation
import NovaCore
import NovaPolicy

/// Times the engine's paths: a cached decision, an uncached local decision over many rules,
/// many concurrent callers on the cache, and (given a server) an uncached OPA decision.
public enum PolicyBenchmark {
  /// p50 and p99 of one path, in microseconds.
  public struct Latency: Codable, Sendable {
    public var p50_us: Double
    public var p99_us: Double
    public var samples: Int

    public init(p50_us: Double, p99_us: Double, samples: Int) {
      self.p50_us = p50_us
      self.p99_us = p99_us
      self.samples = samples
    }
  }

  /// Decisions per second with N concurrent callers.
  public struct Scaling: Codable, Sendable {
    public var callers: Int
    public var decisions_per_s: Double

    public init(callers: Int, decisions_per_s: Double) {
      self.callers = callers
      self.decisions_per_s = decisions_per_s
    }
  }

  public struct Result: Codable, Sendable {
    public var rules: Int
    public var cached: Latency
    public var uncached_local: Latency
    public var opa: Latency?
    public var concurrency: [Scaling]
    public var cores: Int
  }

  /// `rules` generated rules: 24 literal actions, roles, subjects and resource attributes with
  /// globs, the last matching nothing but scanned anyway.
  public static func document(rules count: Int, cacheSize: Int = 10_000) -> PolicyDocument {
    let actions = (0..<24).map { "action\($0)" } + ["submit", "read"]
    var rules: [PolicyDocument.Rule] = []
    for index in 0..<count {
      var rule = PolicyDocument.Rule(
        name: "rule-\(index)", effect: index % 7 == 0 ? .deny : .allow, roles: ["role\(index % 13)"],
        actions: [actions[index % actions.count]])
      if index % 3 == 0 { rule.subjects = ["agent:team\(index % 11)-*"] }
      if index % 2 == 0 { rule.resourceAttributes = ["queue": ["q\(index % 17)", "gpu-*"], "job_kind": ["train.\(index % 5).*"]] }
      rules.append(rule)
    }
    var document = PolicyDocument(rules: rules)
    document.cache.allowSize = cacheSize
    document.cache.denySize = cacheSize
    return document
  }

  static func request(_ index: Int) -> PolicyRequest {
    PolicyRequest(
      subject: PolicySubject(id: "agent:team\(index % 11)-\(index % 97)", roles: ["role\(index % 13)", "viewer"]),
      action: index % 4 == 0 ? "submit" : "action\(index % 24)",
      resource: PolicyResource(kind: "job", attributes: ["queue": "gpu-\(index % 3)", "job_kind": "train.\(index % 5).run\(index)"]))
  }

  /// Runs every path; `opa` names a server and decision path for the OPA figure.
  /// `window` is how long each concurrency level runs (tests shorten it: the callers saturate
  /// every thread of the process meanwhile).
  public static func run(
    rules: Int = 1000, samples: Int = 100_000, opa: (url: String, path: String)? = nil, window: Duration = .milliseconds(500)
  ) async -> Result {
    // Cached: one warm request asked again and again.
    let cachedEngine = PolicyEngine(document: document(rules: rules))
    let warm = request(7)
    _ = await cachedEngine.evaluate(warm)
    var cached: [UInt64] = []
    cached.reserveCapacity(samples)
    for _ in 0..<samples {
      let start = DispatchTime.now().uptimeNanoseconds
      _ = await cachedEngine.evaluate(warm)
      cached.append(DispatchTime.now().uptimeNanoseconds - start)
    }

    // Uncached: caches off, a different request each time.
    let uncachedEngine = PolicyEngine(document: document(rules: rules, cacheSize: 0))
    let requests = (0..<1000).map(request)
    var uncached: [UInt64] = []
    uncached.reserveCapacity(samples)
    for index in 0..<samples {
      let question = requests[index % requests.count]
      let start = DispatchTime.now().uptimeNanoseconds
      _ = await uncachedEngine.evaluate(question)
      uncached.append(DispatchTime.now().uptimeNanoseconds - start)
    }

    var opaLatency: Latency?
    if let opa {
      var document = document(rules: 0, cacheSize: 0)
      var settings = PolicyDocument.OPA(url: opa.url, path: opa.path)
      settings.timeout = .seconds(2)
      document.opa = settings
      let engine = PolicyEngine(document: document)
      var times: [UInt64] = []
      for index in 0..<min(samples, 2000) {
        let start = DispatchTime.now().uptimeNanoseconds
        _ = await engine.evaluate(requests[index % requests.count])
        times.append(DispatchTime.now().uptimeNanoseconds - start)
      }
      opaLatency = latency(times)
    }

    // Concurrency: callers hammering the cache (a few hundred warm keys) for a fixed time each.
    let shared = PolicyEngine(document: document(rules: rules))
    let keys = (0..<256).map(request)
    for key in keys { _ = await shared.evaluate(key) }
    var scaling: [Scaling] = []
    for callers in [1, 2, 4, 8] {
      let deadline =
        DispatchTime.now().uptimeNanoseconds + UInt64(window.components.seconds) * 1_000_000_000
        + UInt64(window.components.attoseconds / 1_000_000_000)
      let start = DispatchTime.now().uptimeNanoseconds
      let total = await withTaskGroup(of: Int.self) { group in
        for caller in 0..<callers {
          group.addTask {
            var count = 0
            var index = caller * 31
            // At least one round each: a caller that starts after the window (a loaded
            // machine) still counts what it did rather than nothing.
            repeat {
              for _ in 0..<64 {
                _ = await shared.evaluate(keys[index & 255])
                index += 1
              }
              count += 64
            } while DispatchTime.now().uptimeNanoseconds < deadline
            return count
          }
        }
        return await group.reduce(0, +)
      }
      let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
      scaling.append(Scaling(callers: callers, decisions_per_s: Double(total) / elapsed))
    }
    return Result(
      rules: rules, cached: latency(cached), uncached_local: latency(uncached), opa: opaLatency, concurrency: scaling,
      cores: ProcessInfo.processInfo.activeProcessorCount)
  }

  static func latency(_ nanoseconds: [UInt64]) -> Latency {
    let sorted = nanoseconds.sorted()
    func at(_ fraction: Double) -> Double {
      Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * fraction))]) / 1000
    }
    return Latency(p50_us: at(0.5), p99_us: at(0.99), samples: sorted.count)
  }
}
