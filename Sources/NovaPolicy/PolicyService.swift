import Foundation
import Logging
import NovaCore
import ServiceLifecycle

/// Checks drift from an approved baseline at an interval (`nova_policy_drift`) while `nova serve`
/// runs; the policy file is reloaded by the server's SIGHUP handler through `PolicyReloader`.
public struct PolicyService: Service {
  public var engine: PolicyEngine
  public var baseline: PolicyBaseline?
  public var interval: Duration
  public var logger: Logger
  /// Paces the checks (a test clock in timing tests).
  public var clock: any NovaClock

  public init(
    engine: PolicyEngine, baseline: PolicyBaseline?, interval: Duration = .seconds(30), logger: Logger,
    clock: any NovaClock = SystemClock()
  ) {
    self.engine = engine
    self.baseline = baseline
    self.interval = interval
    self.logger = logger
    self.clock = clock
  }

  public func run() async throws {
    guard let baseline else {
      // Nothing to watch; a service that returned would end the whole group.
      try? await gracefulShutdown()
      return
    }
    await runPeriodically(every: interval, clock: clock, logger: logger, what: "policy drift check", finalTick: false) {
      let drift = engine.drift(from: baseline)
      if drift.drifted { logger.warning("policy drift", metadata: ["differences": "\(drift.differences)"]) }
    }
  }
}
