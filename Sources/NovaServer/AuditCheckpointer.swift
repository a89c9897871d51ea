import Foundation
import Logging
import Metrics
import NovaSecurity
import ServiceLifecycle

/// Signs a checkpoint of the audit log at an interval when it grew (and once more at shutdown),
/// and exports the log's size and audit coverage as gauges.
public struct AuditCheckpointer: Service {
  public static let entriesMetric = "nova_audit_entries"
  public static let checkpointMetric = "nova_audit_checkpoint_size"
  public static let coverageMetric = "nova_audit_coverage_ratio"

  public var security: SecurityContext
  public var interval: Duration
  public var logger: Logger

  public init(security: SecurityContext, interval: Duration = .seconds(60), logger: Logger) {
    self.security = security
    self.interval = interval
    self.logger = logger
  }

  /// Checkpoints when entries arrived since the last checkpoint; updates the gauges.
  public func tick() async throws {
    let size = try await security.audit.size()
    let last = try await security.audit.checkpoints().last?.size ?? 0
    if size > last {
      let checkpoint = try await security.audit.checkpoint(signer: security.signer, origin: security.origin)
      Gauge(label: Self.checkpointMetric).record(checkpoint.size)
    } else {
      Gauge(label: Self.checkpointMetric).record(last)
    }
    Gauge(label: Self.entriesMetric).record(size)
    Gauge(label: Self.coverageMetric).record(try await security.audit.coverage().ratio)
  }

  public func run() async throws {
    while !Task.isShuttingDownGracefully && !Task.isCancelled {
      do {
        try await tick()
      } catch {
        logger.error("audit checkpoint failed", metadata: ["error": "\(error)"])
      }
      try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
    }
    do {
      try await tick()
    } catch {
      logger.error("final audit checkpoint failed", metadata: ["error": "\(error)"])
    }
  }
}
