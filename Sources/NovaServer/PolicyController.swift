import Foundation
import Hummingbird
import NovaApplication
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
      do {
        try await PolicyReloader(engine: engine, audit: audit).reload()
      } catch let failure as PolicyReloadFailure {
        throw APIError(.unprocessableContent, code: "invalid_policy", message: failure.description)
      }
      return try jsonResponse(status())
    }
  }

  func status() -> Status {
    let document = engine.document
    return Status(
      version: engine.version, enforce: document.enforce, rules: document.rules.count, file: engine.path,
      opa: document.opa.map { Redaction.url("\($0.url)/v1/data/\($0.path)") }, opa_revision: engine.opaRevision)
  }
}
