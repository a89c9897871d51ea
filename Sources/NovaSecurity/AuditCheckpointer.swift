import Foundation
import Logging
import Metrics
import NovaCore
import NovaDatabase
import NovaMonitoring
import NovaQueue
import ServiceLifecycle
import Synchronization

/// Signs a checkpoint of the audit log at an interval when it grew (and once more at shutdown),
/// and exports the log's size and audit coverage as gauges.
public struct AuditCheckpointer: Service {
  public static let entriesMetric = "nova_audit_entries"
  public static let checkpointMetric = "nova_audit_checkpoint_size"
  public static let coverageMetric = "nova_audit_coverage_ratio"
  /// 1 when the last pass found the log and its checkpoints intact and signed; 0 when it refused.
  public static let intactMetric = "nova_audit_intact"

  public var security: SecurityContext
  /// The queue whose jobs audit coverage is computed over.
  public var jobs: any JobStateListing
  /// The store of the jobs (a Redis queue) when they are not in the audit log's database.
  public var source: (any TransitionSource)?
  public var interval: Duration
  public var logger: Logger
  /// Paces the passes (a test clock in timing tests).
  public var clock: any NovaClock
  /// Where the coverage computed last is kept for the compliance page, if anywhere.
  let coverageCache: AuditCoverageCache?
  /// Where audit coverage is also kept as a KPI (`audit.coverage`), if anywhere.
  public var kpis: KPIStore?
  /// Where every checkpoint is also kept, outside the database.
  public var mirror: (any CheckpointMirror)?
  /// How far `mirror` is known to hold the stored checkpoints.
  private let mirrored = MirrorProgress()

  public init(
    security: SecurityContext, jobs: any JobStateListing, source: (any TransitionSource)? = nil,
    interval: Duration = .seconds(60), logger: Logger, kpis: KPIStore? = nil, mirror: (any CheckpointMirror)? = nil,
    clock: any NovaClock = SystemClock(), coverageCache: AuditCoverageCache? = nil
  ) {
    self.coverageCache = coverageCache
    self.mirror = mirror
    self.security = security
    self.jobs = jobs
    self.source = source
    self.interval = interval
    self.logger = logger
    self.clock = clock
    self.kpis = kpis
  }

  /// Checkpoints when entries arrived since the last checkpoint (after checking that the
  /// database still holds every mirrored checkpoint), mirrors it, and updates the gauges.
  public func tick() async throws {
    do {
      try await signAndMirror()
      Gauge(label: Self.intactMetric).record(1)
    } catch {
      Gauge(label: Self.intactMetric).record(0)
      throw error
    }
    let size = try await security.audit.size()
    Gauge(label: Self.entriesMetric).record(size)
    let coverage = try await security.audit.coverage(of: jobs)
    coverageCache?.store(coverage)
    Gauge(label: Self.coverageMetric).record(coverage.ratio)
    try await kpis?.record([
      KPISample(
        name: "audit.coverage", value: coverage.ratio, unit: "ratio", time: Date().millisecondsSince1970,
        source: "nova serve")
    ])
  }

  private func signAndMirror() async throws {
    if let mirror {
      mirrored.set(try await security.audit.synchronize(mirror: mirror, publishedThrough: mirrored.get()))
    }
    let size = try await security.audit.size()
    let last = try await security.audit.latestCheckpoint()?.size ?? 0
    if size > last {
      let checkpoint = try await security.audit.checkpoint(signer: security.signer, origin: security.origin)
      Gauge(label: Self.checkpointMetric).record(checkpoint.size)
      try await security.audit.updateTiles(through: checkpoint.size)
      if let mirror {
        mirrored.set(try await security.audit.synchronize(mirror: mirror, publishedThrough: mirrored.get()))
      }
    } else {
      Gauge(label: Self.checkpointMetric).record(last)
    }
  }

  public func run() async throws {
    await runPeriodically(every: interval, clock: clock, logger: logger, what: "audit checkpoint", finalTick: true) { try await tick() }
  }
}

/// The largest checkpoint size a mirror is known to hold (shared by the copies of a checkpointer).
private final class MirrorProgress: Sendable {
  private let size = Mutex<Int64>(0)
  func get() -> Int64 { size.withLock { $0 } }
  func set(_ value: Int64) { size.withLock { $0 = value } }
}
