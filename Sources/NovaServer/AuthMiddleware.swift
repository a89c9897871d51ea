import HTTPTypes
import Hummingbird
import NovaCore
import NovaSecurity

/// Requires a bearer token whose role allows the route's action, except on the open routes
/// (`/healthz`, `/readyz`, and `/metrics` when configured open). Whatever the request then does
/// is audited under `token:<name>`.
public struct AuthMiddleware: RouterMiddleware {
  public typealias Context = NovaRequestContext

  let access: AccessGuard
  let metricsOpen: Bool

  public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
    -> Response
  {
    let path = request.uri.path
    if path == "/healthz" || path == "/readyz" || (metricsOpen && path == "/metrics") {
      return try await next(request, context)
    }
    let source = context.remoteAddress?.ipAddress ?? "unknown"
    let action = Self.action(method: request.method, path: path)
    let decision = try await access.authorize(
      authorization: request.headers[.authorization], action: action, source: source)
    switch decision {
    case .allowed(let token):
      var context = context
      context.caller = token
      return try await AuditContext.$actor.withValue("token:\(token.name)") {
        try await next(request, context)
      }
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

  /// The action a request takes: reads are `read`; writes name their action; writes to paths
  /// Nova does not know need admin, so that a new route is never open by mistake.
  public static func action(method: HTTPRequest.Method, path: String) -> APIAction {
    let parts = path.split(separator: "/").map(String.init)
    // Tokens are admin business, reading the list included.
    if parts.count >= 2, parts[0] == "v1", parts[1] == "tokens" { return .manageTokens }
    if method == .get || method == .head { return .read }
    switch (method, parts.count, parts.first, parts.dropFirst().first, parts.last) {
    case (.post, 2, "v1", "jobs", _): return .submit
    case (.post, 4, "v1", "jobs", "cancel"): return .cancel
    case (.post, 4, "v1", "jobs", "retry"): return .retry
    default: return .manageTokens
    }
  }
}
