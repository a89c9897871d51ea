import HTTPTypes
import Hummingbird
import NovaCore
import NovaPolicy
import NovaSecurity

/// Requires a bearer token whose role allows the route's action, except on the open routes
/// (`/healthz`, `/readyz`, and `/metrics` when configured open). Whatever the request then does
/// is audited under `token:<name>`.
public struct AuthMiddleware: RouterMiddleware {
  public typealias Context = NovaRequestContext

  let access: AccessGuard
  let metricsOpen: Bool
  /// Decides what an authenticated caller may do; nil decides by role alone.
  let gate: PolicyGate?
  /// PagerDuty's webhooks carry no token; the route checks their signature instead.
  var pagerDutyWebhookOpen = false
  /// Serve the compliance page and its figures without a token (behind an authenticating proxy).
  var luxOpen = false
  /// The largest body each route reads.
  var bodyLimits = RouteBodyLimits(maxPayloadBytes: 1 << 20)
  /// The console's sign-in: its routes check sessions themselves, and `/lux` opened in a browser
  /// (no bearer token) takes a console session.
  var console: ConsoleAuthenticator?

  /// The route PagerDuty's webhooks (v3) are delivered to.
  public static let pagerDutyWebhookPath = "/v1/alerts/pagerduty"

  public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
    -> Response
  {
    let path = request.uri.path
    if path == "/healthz" || path == "/readyz" || (metricsOpen && path == "/metrics")
      || (pagerDutyWebhookOpen && path == Self.pagerDutyWebhookPath && request.method == .post)
      || (luxOpen && request.method == .get && (path == "/lux" || path == "/v1/compliance"))
    {
      return try await next(request, context)
    }
    let source = context.remoteAddress?.ipAddress ?? "unknown"
    if let console {
      if ConsoleController.isConsolePath(path) { return try await next(request, context) }
      if path == "/lux", request.method == .get, request.headers[.authorization] == nil {
        return try await consoleCompliance(request, context: context, console: console, source: source, next: next)
      }
    }
    let action = Self.action(method: request.method, path: path)
    let token: APIToken
    if let gate {
      switch try await access.authenticate(authorization: request.headers[.authorization], action: action.rawValue, source: source) {
      case .refused(let refusal): try Self.refuse(refusal, source: source)
      case .token(let authenticated): token = authenticated
      }
      // Job and queue actions are decided by `JobActions`, which knows the job's queue and kind;
      // a caller whom no rule could allow the action is refused here, before its body is read
      // (a viewer's 60 MB batch is never parsed).
      if !Self.isDecidedByJobActions(method: request.method, path: path) {
        try await gate.check(token, action: action.rawValue, resource: Self.resource(path: path), source: source)
      } else if !gate.engine.mayAllow(action: action.rawValue, subject: PolicyGate.subject(token)) {
        try await gate.check(token, action: action.rawValue, resource: Self.resource(path: path), source: source)
        throw APIError(.forbidden, code: "forbidden", message: "token '\(token.name)' may not \(action.rawValue)")
      }
    } else {
      let decision = try await access.authorize(authorization: request.headers[.authorization], action: action, source: source)
      guard case .allowed(let authorized) = decision else { try Self.refuse(decision, source: source) }
      token = authorized
    }
    // A body announced larger than the route takes is refused before a byte of it is read.
    let limit = bodyLimits.limit(method: request.method, path: path)
    if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > limit {
      throw APIError(
        .contentTooLarge, code: "payload_too_large", message: "the body is \(length) bytes; \(request.method.rawValue) \(path) takes at most \(limit)"
      )
    }
    var context = context
    context.caller = token
    return try await AuditContext.$actor.withValue("token:\(token.name)") {
      try await next(request, context)
    }
  }

  /// `/lux` for a person signed in to the console (or named by the trusted proxy); others are
  /// sent to sign in.
  private func consoleCompliance(
    _ request: Request, context: Context, console: ConsoleAuthenticator, source: String, next: (Request, Context) async throws -> Response
  ) async throws -> Response {
    let identity: ConsoleIdentity?
    do {
      identity = try await console.identify(request, context: context)
    } catch {
      throw APIError(.forbidden, code: "forbidden", message: "the sign-in header is not accepted from \(source), or names no console role")
    }
    guard let identity else { return ConsoleController.redirect("/login?next=/lux") }
    if let gate {
      let decision = try await gate.engine.decide(
        PolicyRequest(subject: identity.subject, action: APIAction.read.rawValue, resource: Self.resource(path: "/lux"), source: source))
      if !decision.permits { throw APIError(.forbidden, code: "forbidden", message: decision.refusal) }
    }
    return try await AuditContext.$actor.withValue(identity.actor) { try await next(request, context) }
  }

  private static func refuse(_ decision: AccessGuard.Decision, source: String) throws -> Never {
    switch decision {
    case .allowed: preconditionFailure("refuse(_:) takes a refusal")
    case .unauthenticated(let reason):
      var headers = HTTPFields()
      headers[.wwwAuthenticate] = #"Bearer realm="nova""#
      throw APIError(.unauthorized, code: "unauthorized", message: reason, headers: headers)
    case .forbidden(let reason):
      throw APIError(.forbidden, code: "forbidden", message: reason)
    case .rateLimited(let seconds):
      var headers = HTTPFields()
      headers[.retryAfter] = String(seconds)
      throw APIError(
        .tooManyRequests, code: "rate_limited",
        message: "too many failed attempts from \(source); try again in \(seconds) s", headers: headers)
    }
  }

  static func isDecidedByJobActions(method: HTTPRequest.Method, path: String) -> Bool {
    let parts = path.split(separator: "/")
    return parts.count >= 2 && parts[0] == "v1" && ["jobs", "queues", "workers"].contains(parts[1])
  }

  /// What a path acts on, for the policy engine.
  public static func resource(path: String) -> PolicyResource {
    let parts = path.split(separator: "/").map(String.init)
    guard parts.first == "v1", parts.count >= 2 else { return PolicyResource(kind: parts.first ?? "root") }
    let kinds = [
      "jobs": "job", "queues": "queue", "tokens": "token", "audit": "audit", "policy": "policy", "kpis": "kpi", "alerts": "alert",
      "journal": "journal", "compliance": "compliance", "evidence": "evidence", "workers": "queue",
    ]
    return PolicyResource(kind: kinds[parts[1]] ?? parts[1], id: parts.count >= 3 ? parts[2] : nil)
  }

  /// The action a request takes: reads are `read`; writes name their action; writes to paths
  /// Nova does not know need admin, so that a new route is never open by mistake.
  public static func action(method: HTTPRequest.Method, path: String) -> APIAction {
    // The one route every submission takes, before the split below.
    if method == .post, path == "/v1/jobs" { return .submit }
    let parts = path.split(separator: "/").map(String.init)
    // Tokens are admin business, reading the list included.
    if parts.count >= 2, parts[0] == "v1", parts[1] == "tokens" { return .manageTokens }
    if method == .post, parts == ["v1", "policy", "reload"] { return .reloadPolicy }
    if method == .post, parts == ["v1", "kpis"] { return .recordKPI }
    if parts == ["v1", "evidence"] { return .exportEvidence }
    if method == .post, parts.count == 4, parts[0] == "v1", parts[1] == "alerts" {
      if parts[3] == "ack" { return .acknowledge }
      if parts[3] == "resolve" { return .resolve }
    }
    if method == .get || method == .head { return .read }
    switch (method, parts.count, parts.first, parts.dropFirst().first, parts.last) {
    case (.post, 2, "v1", "jobs", _): return .submit
    case (.post, 3, "v1", "jobs", "batch"): return .submit
    case (.post, 4, "v1", "jobs", "cancel"): return .cancel
    case (.post, 4, "v1", "jobs", "retry"): return .retry
    case (.post, 3, "v1", "workers", "claim"): return .claim
    case (.post, 4, "v1", "queues", "pause"), (.post, 4, "v1", "queues", "resume"), (.post, 4, "v1", "queues", "controls"): return .control
    case (.post, 4, "v1", "jobs", "heartbeat"), (.post, 4, "v1", "jobs", "complete"), (.post, 4, "v1", "jobs", "fail"): return .report
    case (.post, 3, "v1", "jobs", "heartbeat"), (.post, 3, "v1", "jobs", "complete"), (.post, 3, "v1", "jobs", "release"): return .report
    default: return .manageTokens
    }
  }
}
