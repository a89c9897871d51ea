import Foundation
import NovaCore
import NovaDatabase
import NovaQueue
import NovaSecurity

/// Measures the audit log at scale: filling it with job-transition entries, then a first full
/// checkpoint, `verify`, an evidence export and its verification, with the process's peak
/// memory after each step (flat in the number of entries when everything streams).
public enum AuditBenchmark {
  /// Figures of one run.
  public struct Result: Codable, Sendable {
    public var entries: Int
    public var fill_per_s: Double
    public var checkpoint_s: Double
    public var verify_s: Double
    public var export_s: Double
    public var bundle_verify_s: Double
    public var bundle_bytes: Int
    public var database_bytes: Int
    public var peak_rss_mb_after_fill: Double
    public var peak_rss_mb_after_verify: Double
    public var peak_rss_mb_after_export: Double
  }

  /// One run in a fresh database inside `directory`.
  public static func run(entries: Int, directory: URL, progress: @Sendable (String) -> Void = { _ in }) async throws -> Result {
    let queue = try SQLiteJobQueue(
      configuration: .init(path: directory.appendingPathComponent("audit-bench.sqlite").path, journal: AuditJournal()))
    let security = try SecurityContext(database: queue.database, keyPath: directory.appendingPathComponent("key").path)
    let clock = ContinuousClock()
    var start = clock.now
    let batch = 10_000
    var written = 0
    var time: Int64 = 1_800_000_000_000
    let events = JobTransition.Event.allCases
    while written < entries {
      let count = min(batch, entries - written)
      let transitions = (0..<count).map { index in
        JobTransition(
          event: events[(written + index) % events.count], job: JobID.generate(now: Date()), queue: "default",
          kind: "agent.step", from: .available, to: .running, attempt: 1, time: time + Int64(index), detail: "worker-\(index % 16)")
      }
      time += Int64(count)
      try await queue.database.write { db in try AuditJournal().record(transitions, actor: "worker:bench", in: DatabaseTransaction(db)) }
      written += count
      progress("filled \(written)/\(entries)")
    }
    let fill = seconds(since: start, clock)
    let afterFill = peakRSSMegabytes()

    start = clock.now
    try await security.audit.checkpoint(signer: security.signer, origin: security.origin)
    let checkpoint = seconds(since: start, clock)
    progress("checkpointed")

    start = clock.now
    let report = try await security.audit.verify(verifier: security.signer.verifier)
    let verify = seconds(since: start, clock)
    guard report.passed, report.entries == Int64(entries) else {
      throw NovaError.storage("benchmark log did not verify: \(report.problems.first?.message ?? "entry count \(report.entries)")")
    }
    let afterVerify = peakRSSMegabytes()
    progress("verified")

    start = clock.now
    let bundlePath = directory.appendingPathComponent("evidence.tar.gz").path
    let summary = try await EvidenceBundle.export(
      log: security.audit, jobs: queue, signer: security.signer, origin: security.origin, to: bundlePath)
    let export = seconds(since: start, clock)
    let afterExport = peakRSSMegabytes()
    progress("exported")

    start = clock.now
    let checked = try EvidenceBundle.verify(path: bundlePath, verifier: security.signer.verifier)
    let bundleVerify = seconds(since: start, clock)
    guard checked.passed else { throw NovaError.storage("benchmark bundle did not verify: \(checked.problems)") }
    let databaseBytes = [queue.database.path, queue.database.path + "-wal"].reduce(0) {
      $0 + ((try? FileManager.default.attributesOfItem(atPath: $1)[.size] as? Int) ?? 0)
    }
    return Result(
      entries: entries, fill_per_s: Double(entries) / fill, checkpoint_s: checkpoint, verify_s: verify, export_s: export,
      bundle_verify_s: bundleVerify, bundle_bytes: summary.bytes, database_bytes: databaseBytes,
      peak_rss_mb_after_fill: afterFill, peak_rss_mb_after_verify: afterVerify, peak_rss_mb_after_export: afterExport)
  }

  /// The median of each figure over several runs.
  public static func median(_ runs: [Result]) -> Result {
    func mid(_ values: [Double]) -> Double { Statistics.median(values) ?? 0 }
    func midInt(_ values: [Int]) -> Int { Statistics.median(values) ?? 0 }
    return Result(
      entries: runs[0].entries, fill_per_s: mid(runs.map(\.fill_per_s)), checkpoint_s: mid(runs.map(\.checkpoint_s)),
      verify_s: mid(runs.map(\.verify_s)), export_s: mid(runs.map(\.export_s)), bundle_verify_s: mid(runs.map(\.bundle_verify_s)),
      bundle_bytes: midInt(runs.map(\.bundle_bytes)), database_bytes: midInt(runs.map(\.database_bytes)),
      peak_rss_mb_after_fill: mid(runs.map(\.peak_rss_mb_after_fill)),
      peak_rss_mb_after_verify: mid(runs.map(\.peak_rss_mb_after_verify)),
      peak_rss_mb_after_export: mid(runs.map(\.peak_rss_mb_after_export)))
  }

  private static func seconds(since start: ContinuousClock.Instant, _ clock: ContinuousClock) -> Double {
    let elapsed = clock.now - start
    return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
  }

  /// The process's peak resident memory so far.
  public static func peakRSSMegabytes() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_maxrss) / 1024
  }
}
