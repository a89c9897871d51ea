import Foundation
import NovaCore
import NovaSecurity

/// Who is looking at a console page: the name shown, the role that decides which buttons are
/// drawn, and the CSRF value every form of the page carries.
public struct ConsoleViewer: Sendable, Equatable {
  public var name: String
  public var role: Role
  public var csrf: String

  public init(name: String, role: Role, csrf: String) {
    self.name = name
    self.role = role
    self.csrf = csrf
  }

  /// Operators and admins get action buttons; viewers only read.
  public var mayOperate: Bool { role == .operator || role == .admin }
}

/// The console's pages: server-rendered HTML, everything text escaped as it is written, no
/// external assets (one stylesheet and one small script, both served by Nova), a strict CSP.
public enum ConsoleHTML {
  /// The Content-Security-Policy of every console page: only Nova's own style and script.
  public static let contentSecurityPolicy =
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

  /// The sections of the console, as the navigation lists them.
  public enum Section: String, Sendable, CaseIterable {
    case overview, queues, jobs, workers, alerts, compliance

    var title: String { rawValue.prefix(1).uppercased() + rawValue.dropFirst() }
    var path: String {
      switch self {
      case .overview: "/console"
      case .compliance: "/lux"
      default: "/console/\(rawValue)"
      }
    }
  }

  /// `text` made safe inside HTML text and attribute values.
  public static func escape(_ text: String) -> String { HTMLText.escape(text) }

  /// `text` as one component of a URL's query.
  public static func query(_ text: String) -> String {
    var allowed = CharacterSet.urlQueryAllowed
    allowed.remove(charactersIn: "&=+?#/")
    return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? ""
  }

  /// A whole page: navigation, the viewer and their sign-out button, then `body`.
  public static func page(title: String, section: Section?, viewer: ConsoleViewer?, body: String, live: String? = nil) -> String {
    var nav = ""
    if let viewer {
      nav += "<nav aria-label=\"Console\"><ul>"
      for item in Section.allCases {
        let current = item == section ? " aria-current=\"page\"" : ""
        nav += "<li><a href=\"\(item.path)\"\(current)>\(item.title)</a></li>"
      }
      nav += "</ul></nav>"
      nav +=
        "<div class=\"who\"><span>Signed in as <strong data-viewer=\"\(escape(viewer.name))\">\(escape(viewer.name))</strong> (\(viewer.role.rawValue))</span>"
      nav += "<form method=\"post\" action=\"/logout\">\(csrfField(viewer))<button type=\"submit\">Sign out</button></form></div>"
    }
    let liveAttribute = live.map { " data-live=\"\(escape($0))\"" } ?? ""
    return """
      <!doctype html>
      <html lang="en">
      <head>
      <meta charset="utf-8">
      <meta name="viewport" content="width=device-width, initial-scale=1">
      <title>\(escape(title)) · Nova</title>
      <link rel="stylesheet" href="/console/assets/console.css">
      <script src="/console/assets/console.js" defer></script>
      </head>
      <body\(liveAttribute)>
      <a class="skip" href="#main">Skip to the content</a>
      <header class="top"><a class="brand" href="/console">Nova</a>\(nav)</header>
      <main id="main">
      <h1>\(escape(title))</h1>
      \(body)
      </main>
      </body>
      </html>

      """
  }

  /// The hidden field that carries the viewer's CSRF value.
  public static func csrfField(_ viewer: ConsoleViewer) -> String {
    "<input type=\"hidden\" name=\"csrf\" value=\"\(escape(viewer.csrf))\">"
  }

  /// A one-button form that posts to `action`.
  public static func button(_ label: String, action: String, viewer: ConsoleViewer, fields: [(String, String)] = [], style: String = "")
    -> String
  {
    var out = "<form class=\"inline\" method=\"post\" action=\"\(escape(action))\">\(csrfField(viewer))"
    for (name, value) in fields { out += "<input type=\"hidden\" name=\"\(escape(name))\" value=\"\(escape(value))\">" }
    out += "<button type=\"submit\" class=\"\(style)\">\(escape(label))</button></form>"
    return out
  }

  /// A state as a badge with its name in words (never colour alone).
  public static func stateBadge(_ state: String) -> String {
    "<span class=\"badge s-\(escape(state))\">\(escape(state))</span>"
  }

  /// A time as UTC text, in a `<time>` element.
  public static func time(_ date: Date?) -> String {
    guard let date else { return "<span class=\"muted\">–</span>" }
    let text = AuditTime.string(date.millisecondsSince1970)
    return "<time datetime=\"\(text)\">\(text.replacingOccurrences(of: "T", with: " ").replacingOccurrences(of: "Z", with: ""))</time>"
  }

  /// A time given in milliseconds.
  public static func time(millis: Int64?) -> String { time(millis.map { Date(millisecondsSince1970: $0) }) }

  /// How long ago `date` was, in words.
  public static func ago(_ date: Date?, now: Date) -> String {
    guard let date else { return "never" }
    let seconds = Int(now.timeIntervalSince(date))
    if seconds < 0 { return "in \(-seconds) s" }
    if seconds < 120 { return "\(seconds) s ago" }
    if seconds < 7200 { return "\(seconds / 60) min ago" }
    return "\(seconds / 3600) h ago"
  }

  /// A notice at the top of a page (after an action), as a live region.
  public static func notice(_ text: String?, error: Bool = false) -> String {
    guard let text, !text.isEmpty else { return "" }
    return "<p class=\"notice\(error ? " error" : "")\" role=\"status\">\(escape(text))</p>"
  }

  /// JSON bytes as indented text for a `<pre>`, or the raw text when they are not JSON.
  public static func pretty(_ data: Data?) -> String {
    guard let data, !data.isEmpty else { return "" }
    if let object = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]),
      let text = try? JSONSerialization.data(
        withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .fragmentsAllowed, .withoutEscapingSlashes])
    {
      return String(decoding: text, as: UTF8.self)
    }
    return String(decoding: data, as: UTF8.self)
  }
}
