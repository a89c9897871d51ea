import Foundation
import HTTPTypes
import Hummingbird
import NovaAlerting
import NovaCore
import NovaMonitoring
import NovaSecurity

/// An alert as the API and `nova alerts list --json` show it, times in RFC 3339.
public struct AlertResource: Encodable, Sendable {
  var id: Int64
  var rule: String
  var state: String
  var severity: String
  var fingerprint: String
  var dedup_key: String
  var labels: [String: String]
  var kpi: String
  var value: Double
  var threshold: Double
  var unit: String
  var summary: String
  var description: String
  var runbook: String?
  var route: String?
  var active_since: String
  var fired_at: String?
  var acknowledged_at: String?
  var acknowledged_by: String?
  var acknowledge_deadline: String?
  var escalated_at: String?
  var resolved_at: String?
  var resolved_by: String?
  var resolve_deadline: String?

  public init(_ alert: AlertInstance, settings: AlertSettings) {
    func time(_ millis: Int64?) -> String? { millis.map(AuditTime.string) }
    id = alert.id
    rule = alert.rule
    state = alert.state.rawValue
    severity = alert.severity
    fingerprint = alert.fingerprint
    dedup_key = alert.dedupKey
    labels = alert.labels
    kpi = alert.kpi
    value = alert.value
    threshold = alert.threshold
    unit = alert.unit
    summary = alert.summary
    description = alert.description
    runbook = alert.runbook
    route = alert.route
    active_since = AuditTime.string(alert.activeSince)
    fired_at = time(alert.firedAt)
    acknowledged_at = time(alert.acknowledgedAt)
    acknowledged_by = alert.acknowledgedBy
    acknowledge_deadline = time(alert.firedAt.map { $0 + Int64(settings.acknowledgeWithin.seconds * 1000) })
    escalated_at = time(alert.escalatedAt)
    resolved_at = time(alert.resolvedAt)
    resolved_by = alert.resolvedBy
    resolve_deadline = time(alert.firedAt.map { $0 + Int64(settings.resolveWithin.seconds * 1000) })
  }
}

/// `GET /v1/alerts[?state=firing&limit=]`, `GET /v1/alerts/{id}`, `POST /v1/alerts/{id}/ack|resolve`
/// (operator) and `POST /v1/alerts/pagerduty` (PagerDuty webhooks v3, verified by signature).
struct AlertsController {
  let engine: AlertEngine
  /// The secret PagerDuty signs its webhooks with; nil refuses them.
  let pagerDutySecret: String?
  /// Where refused webhook events are journaled.
  let journal: OrchestrationJournal?
  let clock: any NovaClock

  func addRoutes(to router: Router<NovaRequestContext>) {
    router.get("v1/alerts", use: list)
    router.get("v1/alerts/:id", use: show)
    router.post(RouterPath(String(AuthMiddleware.pagerDutyWebhookPath.dropFirst())), use: pagerDuty)
    router.post("v1/alerts/:id/ack", use: acknowledge)
    router.post("v1/alerts/:id/resolve", use: resolve)
  }

  private func id(_ context: NovaRequestContext) throws -> Int64 {
    let text = context.parameters.get("id") ?? ""
    guard let id = Int64(text), id > 0 else { throw NovaError.invalidInput(field: "id", message: "'\(text)' is not an alert id") }
    return id
  }

  @Sendable func list(_ request: Request, context: NovaRequestContext) async throws -> Response {
    var states: [AlertState] = []
    var limit = 100
    for (key, value) in request.uri.queryParameters {
      switch key {
      case "state": states += try AlertState.parseList(String(value), field: "state")
      case "limit":
        guard let parsed = Int(String(value)), (1...1000).contains(parsed) else {
          throw NovaError.invalidInput(field: "limit", message: "'\(value)' is not a number in 1...1000")
        }
        limit = parsed
      default: throw NovaError.invalidInput(field: String(key), message: "unknown parameter; use state and limit")
      }
    }
    let settings = await engine.configuration.settings
    let alerts = try await engine.store.list(states: states, limit: limit).map { AlertResource($0, settings: settings) }
    return try jsonResponse(["alerts": alerts])
  }

  @Sendable func show(_ request: Request, context: NovaRequestContext) async throws -> Response {
    let id = try id(context)
    guard let alert = try await engine.store.alert(id: id) else { throw NovaError.notFound("no alert \(id)") }
    return try jsonResponse(AlertResource(alert, settings: await engine.configuration.settings))
  }

  private func actor(_ context: NovaRequestContext) -> String { context.caller.map { "token:\($0.name)" } ?? "api" }

  @Sendable func acknowledge(_ request: Request, context: NovaRequestContext) async throws -> Response {
    let alert = try await engine.acknowledge(id: try id(context), by: actor(context))
    return try jsonResponse(AlertResource(alert, settings: await engine.configuration.settings))
  }

  @Sendable func resolve(_ request: Request, context: NovaRequestContext) async throws -> Response {
    let alert = try await engine.resolve(id: try id(context), by: actor(context))
    return try jsonResponse(AlertResource(alert, settings: await engine.configuration.settings))
  }

  @Sendable func pagerDuty(_ request: Request, context: NovaRequestContext) async throws -> Response {
    guard let secret = pagerDutySecret else {
      throw APIError(.notFound, code: "not_configured", message: "PagerDuty webhooks are not configured (settings.pagerduty_webhook_secret_env)")
    }
    let body = Array((try await request.body.collect(upTo: RouteBodyLimits.alertWebhook)).readableBytesView)
    guard PagerDutyWebhook.verify(header: request.headers[HTTPField.Name(PagerDutyWebhook.signatureHeader)!], body: body, secret: secret) else {
      throw APIError(.unauthorized, code: "bad_signature", message: "X-PagerDuty-Signature does not match the body")
    }
    let event = try PagerDutyWebhook.parse(body)
    do {
      try await PagerDutyWebhook.admit(event, store: engine.store, now: clock.now().millisecondsSince1970)
    } catch let refusal as PagerDutyWebhook.Refusal {
      try await journal?.append(
        kind: "alert.webhook_refused", subject: event.id,
        payload: .object(["event_type": .string(event.type), "reason": .string(refusal.description), "code": .string(refusal.code)]),
        actor: "pagerduty")
      throw APIError(.conflict, code: refusal.code, message: refusal.description)
    }
    let outcome = try await AuditContext.$actor.withValue("pagerduty") { try await PagerDutyWebhook.apply(event, to: engine) }
    return try jsonResponse(["event": event.id, "outcome": outcome], status: .accepted)
  }
}

/// `GET /v1/journal?since=1h&kind=alert.&limit=`: the orchestration journal.
struct JournalController {
  let journal: OrchestrationJournal
  let clock: any NovaClock

  struct EntryResource: Encodable {
    var seq: Int64
    var time: String
    var kind: String
    var subject: String?
    var actor: String
    var payload: JSONValue
  }

  func addRoutes(to router: Router<NovaRequestContext>) {
    router.get("v1/journal", use: list)
  }

  @Sendable func list(_ request: Request, context: NovaRequestContext) async throws -> Response {
    var since: Int64 = 0
    var kinds: [String] = []
    var limit = 100
    for (key, value) in request.uri.queryParameters {
      switch key {
      case "since":
        since = try KPITime.parse(String(value), now: clock.now().millisecondsSince1970, flag: "since")
      case "kind": kinds.append(contentsOf: value.split(separator: ",").map(String.init))
      case "limit":
        guard let parsed = Int(String(value)), (1...10_000).contains(parsed) else {
          throw NovaError.invalidInput(field: "limit", message: "'\(value)' is not a number in 1...10000")
        }
        limit = parsed
      default: throw NovaError.invalidInput(field: String(key), message: "unknown parameter; use since, kind and limit")
      }
    }
    let entries = try await journal.entries(since: since, kinds: kinds, limit: limit).map {
      EntryResource(seq: $0.seq, time: AuditTime.string($0.time), kind: $0.kind, subject: $0.subject, actor: $0.actor, payload: $0.payload)
    }
    return try jsonResponse(["entries": entries])
  }
}
