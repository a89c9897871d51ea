import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import NovaCore
import NovaQueue
import NovaSecurity

/// `/v1/tokens` (admin) and `/v1/audit` (viewer) routes.
struct SecurityController {
  let security: SecurityContext
  /// The queue whose jobs audit coverage is computed over.
  let jobs: any JobStateListing

  func addRoutes(to router: Router<NovaRequestContext>) {
    let tokens = router.group("v1/tokens")
    tokens.get { _, _ in try jsonResponse(TokenList(tokens: try await security.tokens.list())) }
    tokens.post(use: createToken)
    tokens.delete(":name") { _, context in
      let name = try context.parameters.require("name")
      return try jsonResponse(try await security.tokens.revoke(name: name))
    }
    let audit = router.group("v1/audit")
    audit.get("checkpoint") { _, _ in
      guard let latest = try await security.audit.latestCheckpoint() else {
        throw NovaError.notFound("no checkpoint yet: one is signed every minute while entries arrive, or run `nova audit checkpoint`")
      }
      var headers = HTTPFields()
      headers[.contentType] = "text/plain; charset=utf-8"
      return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: latest.note)))
    }
    audit.get("coverage") { _, _ in try jsonResponse(CoverageResource(try await security.audit.coverage(of: jobs))) }
    audit.get("entries", use: listEntries)
  }

  struct CreateTokenBody: Decodable {
    var name: String
    var role: String
  }

  struct CreatedToken: Encodable {
    var token: String
    var name: String
    var role: Role
    var note = "the token is shown once; only its hash is stored"
  }

  struct TokenList: Encodable {
    var tokens: [APIToken]
  }

  @Sendable func createToken(_ request: Request, context: NovaRequestContext) async throws -> Response {
    let data = Data((try await request.body.collect(upTo: RouteBodyLimits.token)).readableBytesView)
    let body: CreateTokenBody
    do {
      body = try JSONDecoder().decode(CreateTokenBody.self, from: data)
    } catch {
      throw NovaError.malformedInput(field: "body", message: "expected {\"name\": \"...\", \"role\": \"viewer|operator|admin|worker\"}")
    }
    guard let role = Role(rawValue: body.role) else {
      throw NovaError.invalidInput(field: "role", message: "'\(body.role)' is not \(Role.names)")
    }
    let created = try await security.tokens.create(name: body.name, role: role)
    return try jsonResponse(CreatedToken(token: created.token, name: body.name, role: role), status: .created)
  }

  @Sendable func listEntries(_ request: Request, context: NovaRequestContext) async throws -> Response {
    let query = request.uri.queryParameters
    for (key, _) in query where !["from", "limit"].contains(String(key)) {
      throw NovaError.invalidInput(field: String(key), message: "unknown query parameter; expected from, limit")
    }
    guard let from = Int64(query["from"].map(String.init) ?? "1"), from >= 1 else {
      throw NovaError.invalidInput(field: "from", message: "must be a sequence number ≥ 1")
    }
    guard let limit = Int64(query["limit"].map(String.init) ?? "100"), (1...1000).contains(limit) else {
      throw NovaError.invalidInput(field: "limit", message: "must be 1...1000")
    }
    let entries = try await security.audit.entries(from: from, through: from + limit - 1)
    return try jsonResponse(EntryList(entries: entries.map(EntryResource.init)))
  }
}

/// An audit entry as JSON (HTTP and `nova audit list --json`): the stored fields, the time in
/// RFC 3339, the payload as an object.
public struct EntryResource: Codable, Sendable {
  public var seq: Int64
  public var time: String
  public var actor: String
  public var event: String
  public var subject: String?
  public var payload: JSONValue

  public init(_ entry: AuditEntry) {
    seq = entry.seq
    time = AuditTime.string(entry.time)
    actor = entry.actor
    event = entry.event
    subject = entry.subject
    payload = (try? JSONValue.parse(Data(entry.payload.utf8))) ?? .string(entry.payload)
  }
}

struct EntryList: Codable {
  var entries: [EntryResource]
}

/// `GET /v1/audit/coverage`.
struct CoverageResource: Codable {
  var ratio: Double
  var auditedTransitions: Int
  var jobs: Int
  var unauditedJobs: [String]

  init(_ coverage: AuditCoverage) {
    ratio = coverage.ratio
    auditedTransitions = coverage.auditedTransitions
    jobs = coverage.jobs
    unauditedJobs = Array(coverage.unauditedJobs.prefix(100))
  }
}
