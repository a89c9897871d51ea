/// The sign-in form: a person pastes an API token; or, behind an authenticating proxy, a link
/// back once the proxy has signed them in.
public struct LoginPage: Sendable {
  /// Where to go once signed in (a console path).
  public var next: String
  public var error: String?
  public var notice: String?

  public init(next: String, error: String? = nil, notice: String? = nil) {
    self.next = next
    self.error = error
    self.notice = notice
  }

  /// Only console paths are followed after sign-in: never another site.
  public static func safeNext(_ path: String?) -> String {
    guard let path, path.hasPrefix("/"), !path.hasPrefix("//"), !path.contains("\\"), path.count <= 2000,
      path.hasPrefix("/console") || path == "/lux"
    else { return "/console" }
    return path
  }

  /// The page.
  public var html: String {
    var body = ConsoleHTML.notice(notice) + ConsoleHTML.notice(error, error: true)
    body += """
      <form class="login card" method="post" action="/login">
      <p><label for="token">API token</label><br><input id="token" name="token" type="password" autocomplete="current-password" required autofocus></p>
      <input type="hidden" name="next" value="\(ConsoleHTML.escape(LoginPage.safeNext(next)))">
      <p><button type="submit">Sign in</button></p>
      <p class="muted">Create one with <code>nova tokens create --name NAME --role viewer|operator|admin</code>. The session lasts until you sign out, stay idle too long, or the token is revoked.</p>
      </form>
      """
    return ConsoleHTML.page(title: "Sign in to Nova", section: nil, viewer: nil, body: body)
  }
}
