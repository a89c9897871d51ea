import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import NovaApplication
import NovaConsole
import NovaCore
import NovaPolicy
import NovaSecurity

/// Who a console request comes from: a signed-in session or a person named by the trusted
/// authenticating proxy.
public struct ConsoleIdentity: Sendable, Equatable {
  public var viewer: ConsoleViewer
  /// The name actions are audited under (`token:<name>` or `proxy:<identity>`).
  public var actor: String
  /// The policy subject: a session's token (so its rules apply), or the proxy's person.
  public var subject: PolicySubject
  /// The session's cookie value (nil behind the proxy).
  public var cookie: String?
}

/// Settings of the console's sign-in.
public struct ConsoleSettings: Sendable {
  /// Mark the session cookie `Secure` (set it when Nova is reached over TLS, through a proxy).
  public var cookieSecure = false
  public var lifetime = ConsoleSessionStore.Lifetime()
  /// Sign-in by an authenticating proxy's header, when configured.
  public var authProxy: AuthProxy?

  public init(cookieSecure: Bool = false, lifetime: ConsoleSessionStore.Lifetime = .init(), authProxy: AuthProxy? = nil) {
    self.cookieSecure = cookieSecure
    self.lifetime = lifetime
    self.authProxy = authProxy
  }
}

/// Finds the console identity of a request, from the proxy's header (believed only from the
/// proxy's addresses) or the session cookie. Cookies are read on console routes only: they never
/// authorize the API, so a page can't be made to call `/v1` on a person's behalf.
struct ConsoleAuthenticator: Sendable {
  let sessions: ConsoleSessionStore
  let access: AccessGuard
  let settings: ConsoleSettings
  /// Keys the CSRF values of proxy users (who have no session row); new per process.
  let proxyKey: [UInt8] = (0..<32).map { _ in UInt8.random(in: 0...255) }

  var cookieName: String { settings.cookieSecure ? "__Host-nova_session" : "nova_session" }

  /// Why a request has no identity, when it should be told.
  enum Refusal: Error, Equatable {
    /// The proxy's header came from an address that is not the proxy's.
    case untrustedProxy(String)
    /// The proxy named a person the role map gives no role.
    case noRole(String)
  }

  /// The identity of `request`, nil when it is not signed in; throws a refusal worth telling.
  func identify(_ request: Request, context: NovaRequestContext) async throws -> ConsoleIdentity? {
    let source = context.remoteAddress?.ipAddress
    if let proxy = settings.authProxy, let field = HTTPField.Name(proxy.header), let named = request.headers[field] {
      let identity = named.trimmingCharacters(in: .whitespaces)
      guard proxy.trusts(source) else { throw Refusal.untrustedProxy(source ?? "an unknown address") }
      guard !identity.isEmpty, identity.utf8.count <= 320, let role = proxy.roles.role(of: identity) else {
        throw Refusal.noRole(identity)
      }
      let mac = HMAC<SHA256>.authenticationCode(for: Data(identity.lowercased().utf8), using: SymmetricKey(data: proxyKey))
      let csrf = Data(mac).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        .replacingOccurrences(of: "=", with: "")
      return ConsoleIdentity(
        viewer: ConsoleViewer(name: identity, role: role, csrf: csrf), actor: "proxy:\(identity)",
        subject: PolicySubject(id: "proxy:\(identity)", roles: [role.rawValue]), cookie: nil)
    }
    guard let cookie = request.cookies[cookieName]?.value, !cookie.isEmpty,
      let session = try await sessions.session(cookie: cookie)
    else { return nil }
    return ConsoleIdentity(
      viewer: ConsoleViewer(name: session.token.name, role: session.token.role, csrf: session.csrf), actor: "token:\(session.token.name)",
      subject: PolicyGate.subject(session.token), cookie: cookie)
  }

  /// Signs in with a pasted token: the brute-force limits of the API apply.
  /// The outcome of a sign-in.
  enum SignIn {
    case started(cookie: String)
    case refused(String)
  }

  func signIn(token: String, source: String) async throws -> SignIn {
    switch try await access.authenticate(authorization: "Bearer " + token, action: "console.signin", source: source) {
    case .refused(.rateLimited(let seconds)): return .refused("Too many failed attempts from \(source); try again in \(seconds) s.")
    case .refused(.unauthenticated(let reason)), .refused(.forbidden(let reason)): return .refused("Not signed in: \(reason).")
    case .refused(.allowed): return .refused("Not signed in.")
    case .token(let token):
      guard token.role != .worker else { return .refused("A worker token cannot sign in to the console; use a viewer, operator or admin token.") }
      return .started(cookie: try await sessions.start(for: token, source: source).cookie)
    }
  }

  /// The `Set-Cookie` value of a new session.
  func cookieHeader(_ value: String) -> String {
    let maxAge = Int(settings.lifetime.absolute.seconds)
    return "\(cookieName)=\(value); Path=/; Max-Age=\(maxAge); HttpOnly; SameSite=Strict\(settings.cookieSecure ? "; Secure" : "")"
  }

  /// The `Set-Cookie` value that removes the session cookie.
  var clearingCookieHeader: String {
    "\(cookieName)=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict\(settings.cookieSecure ? "; Secure" : "")"
  }
}
