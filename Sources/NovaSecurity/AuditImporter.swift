import Foundation
import Logging
import Metrics
import NovaCore
import NovaQueue
import ServiceLifecycle

/// Moves the transition records a Redis queue keeps (written by its scripts, atomically with each
/// change) into the signed audit log, every `interval`, and exports how many wait.
public struct AuditImporter: Service {
  public static let pendingMetric = "nova_audit_pending_records"
  public static let importedMetric = "nova_audit_imported_records_total"

  public var security: SecurityContext
  public var source: any TransitionSource
  public var interval: Duration
  public var logger: Logger
  /// Paces the passes (a test clock in timing tests).
  public var clock: any NovaClock

  public init(
    security: SecurityContext, source: any TransitionSource, interval: Duration = .seconds(1), logger: Logger, clock: any NovaClock = SystemClock()
  ) {
    self.security = security
    self.source = source
    self.interval = interval
    self.logger = logger
    self.clock = clock
  }

  /// One pass: imports until nothing is pending.
  public func tick() async throws {
    let count = try await security.audit.importAllTransitions(from: source)
    Counter(label: Self.importedMetric).increment(by: count)
    Gauge(label: Self.pendingMetric).record(try await source.pendingTransitionCount())
  }

  public func run() async throws {
    await runPeriodically(every: interval, clock: clock, logger: logger, what: "audit import", finalTick: true) { try await tick() }
  }
}
