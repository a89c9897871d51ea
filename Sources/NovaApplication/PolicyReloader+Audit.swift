import NovaCore
import NovaPolicy
import NovaSecurity

extension PolicyReloader {
  /// A reloader that records its outcome in `audit` (nothing without one).
  public init(engine: PolicyEngine, audit: AuditLog?) {
    var record: Recorder?
    if let audit {
      record = { event, subject, payload in
        _ = try await audit.append(event: event, subject: subject, payload: payload)
      }
    }
    self.init(engine: engine, record: record)
  }
}
