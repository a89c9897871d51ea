import Foundation

/// Hides the secrets a URL may carry (credentials in its userinfo, tokens in its query) before
/// it is shown to viewers, written to the journal, put in an evidence bundle or logged.
public enum Redaction {
  /// What replaces a hidden part.
  public static let marker = "redacted"

  /// `url` with any userinfo replaced by `redacted@` and any query by `?redacted`; a string
  /// that is not a URL is returned as it is.
  public static func url(_ url: String) -> String {
    guard var components = URLComponents(string: url), components.scheme != nil else { return url }
    if components.user != nil || components.password != nil {
      components.user = marker
      components.password = nil
    }
    if components.query != nil { components.percentEncodedQuery = marker }
    components.fragment = nil
    return components.string ?? url
  }
}
