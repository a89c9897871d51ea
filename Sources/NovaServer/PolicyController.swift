import Foundation
import Hummingbird
import NovaCore
import NovaPolicy
import NovaSecurity

/// `GET /v1/policy` and `POST /v1/policy/reload` (admin).
struct PolicyController {
  let engine: PolicyEngine
  let audit: AuditLog?

  struct Status: Encodable {
    var version: String
    var enforce: Bool
    var rules: Int
    var file: String?
    var opa: String?
    var opa_revision: String?
  }

  func addRoutes(to router: Router<NovaRequestContext>) {
    router.get("v1/policy") { _, _ in try jsonResponse(status()) }
    router.post("v1/policy/reload") { _, _ in
      try await PolicyReloader(engine: engine, audit: audit).reload()
      return try jsonResponse(status())
    }
  }

  func status() -> Status {
    let document = engine.document
    return Status(
      version: engine.version, enforce: document.enforce, rules: document.rules.count, file: engine.path,
      opa: document.opa.map { "\($0.url)/v1/data/\($0.path)" }, opa_revision: engine.opaRevision)
  }
}

/// Reloads the policy file and records the outcome: `policy.reloaded` with both versions, or
/// `policy.reload_failed` with why (the last good policy stays).
public struct PolicyReloader: Sendable {
  public let engine: PolicyEngine
  public let audit: AuditLog?

  public init(engine: PolicyEngine, audit: AuditLog?) {
    self.engine = engine
    self.audit = audit
  }

  /// Throws a 422 `APIError` naming file, line and column when the file does not load.
  public func reload() async throws {
    let versions: (old: String, new: String)
    do {
      versions = try engine.reload()
    } catch {
      try await audit?.append(
        event: "policy.reload_failed", subject: engine.path ?? "built-in",
        payload: .object(["error": .string(error.description), "kept_version": .string(engine.version)]))
      throw APIError(.unprocessableContent, code: "invalid_policy", message: "\(error.description); kept version \(engine.version)")
    }
    try await audit?.append(
      event: "policy.reloaded", subject: engine.path ?? "built-in",
      payload: .object(["old_version": .string(versions.old), "new_version": .string(versions.new)]))
  }
}
