import NovaCore

/// Reloads the policy file and records the outcome: `policy.reloaded` with both versions, or
/// `policy.reload_failed` with why (the last good policy stays).
public struct PolicyReloader: Sendable {
  /// Records one event (in the audit log); nil records nothing.
  public typealias Recorder = @Sendable (_ event: String, _ subject: String, _ payload: JSONValue) async throws -> Void

  public let engine: PolicyEngine
  public let record: Recorder?

  public init(engine: PolicyEngine, record: Recorder?) {
    self.engine = engine
    self.record = record
  }

  /// Re-reads the file; throws `PolicyReloadFailure` naming file, line and column when it does
  /// not load (after recording the failure).
  public func reload() async throws {
    let versions: (old: String, new: String)
    let subject = engine.path ?? "built-in"
    do {
      versions = try engine.reload()
    } catch {
      try await record?(
        "policy.reload_failed", subject, .object(["error": .string(error.description), "kept_version": .string(engine.version)]))
      throw PolicyReloadFailure(reason: error.description, keptVersion: engine.version)
    }
    try await record?("policy.reloaded", subject, .object(["old_version": .string(versions.old), "new_version": .string(versions.new)]))
  }
}

/// A policy file that did not load; the last good policy stays in force.
public struct PolicyReloadFailure: Error, CustomStringConvertible {
  public var reason: String
  public var keptVersion: String

  public var description: String { "\(reason); kept version \(keptVersion)" }
}
