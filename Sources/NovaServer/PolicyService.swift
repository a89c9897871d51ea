import Foundation
import Logging
import NovaCore
import NovaPolicy
import NovaSecurity
import ServiceLifecycle
import UnixSignals

/// Reloads the policy file on SIGHUP (atomically; a bad file keeps the last good policy and is
/// audited) and checks drift from an approved baseline at an interval (`nova_policy_drift`).
public struct PolicyService: Service {
  public var engine: PolicyEngine
  public var audit: AuditLog?
  public var baseline: PolicyBaseline?
  public var interval: Duration
  public var logger: Logger
  /// Paces the passes (a test clock in timing tests).
  public var clock: any NovaClock

  public init(engine: PolicyEngine, audit: AuditLog?, baseline: PolicyBaseline?, interval: Duration = .seconds(30), logger: Logger, clock: any NovaClock = SystemClock()) {
    self.engine = engine
    self.audit = audit
    self.baseline = baseline
    self.interval = interval
    self.logger = logger
    self.clock = clock
  }

  public func run() async throws {
    let reloader = PolicyReloader(engine: engine, audit: audit)
    let signals = await UnixSignalsSequence(trapping: .sighup)
    await withTaskGroup(of: Void.self) { group in
      group.addTask {
        for await _ in signals {
          do {
            try await reloader.reload()
            logger.notice("policy reloaded on SIGHUP", metadata: ["version": "\(engine.version)"])
          } catch {
            logger.error("policy reload failed; the last good policy stays", metadata: ["error": "\(error)"])
          }
        }
      }
      group.addTask {
        while !Task.isCancelled {
          if let baseline {
            let drift = engine.drift(from: baseline)
            if drift.drifted { logger.warning("policy drift", metadata: ["differences": "\(drift.differences)"]) }
          }
          try? await clock.sleep(for: interval)
        }
      }
      try? await gracefulShutdown()
      group.cancelAll()
    }
  }
}
