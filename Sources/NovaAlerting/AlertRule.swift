import Foundation
import NovaCore

/// One rule of `thresholds.yaml`: when a KPI series crosses a value for long enough, an alert fires.
public struct AlertRule: Sendable, Equatable {
  /// How a sample's value is held against the thresholds.
  public enum Comparison: String, Sendable, CaseIterable {
    /// Value greater than the threshold.
    case above
    /// Value less than the threshold.
    case below
    /// Absolute value greater than the threshold (for signed deltas such as `baseline.delta`).
    case outside
    /// Change in percent of the latest value against the mean over `window` before it, either way.
    case changePercent = "change_percent"
  }

  /// A label value pattern: exact, or with `*` matching any run of characters.
  public struct Matcher: Sendable, Equatable {
    public var pattern: String
    public init(_ pattern: String) { self.pattern = pattern }

    public func matches(_ value: String?) -> Bool {
      guard let value else { return false }
      if !pattern.contains("*") { return pattern == value }
      let parts = pattern.split(separator: "*", omittingEmptySubsequences: false)
      var rest = Substring(value)
      for (index, part) in parts.enumerated() {
        if index == 0 {
          guard rest.hasPrefix(part) else { return false }
          rest = rest.dropFirst(part.count)
        } else if index == parts.count - 1 {
          return rest.hasSuffix(part)
        } else if let range = rest.range(of: part) {
          rest = rest[range.upperBound...]
        } else {
          return false
        }
      }
      return rest.isEmpty
    }
  }

  public var name: String
  public var kpi: String
  /// Label matchers a series must satisfy (every one).
  public var matchers: [String: Matcher] = [:]
  public var comparison: Comparison = .above
  /// Thresholds: crossing `critical` gives severity critical, crossing only `warn` the rule's
  /// `severity` (warning by default).
  public var warn: Double?
  public var critical: Double?
  /// The reference window of `change_percent`.
  public var window: Duration = .seconds(3600)
  /// How long the condition must hold before the alert fires.
  public var forDuration: Duration = .zero
  /// How long a firing alert stays firing after the condition cleared.
  public var keepFiringFor: Duration = .zero
  /// Samples older than this do not count (a series that stopped reporting clears).
  public var staleAfter: Duration = .seconds(300)
  /// Severity when only `warn` is crossed: critical, error, warning or info.
  public var severity: String = "warning"
  /// Templates with `{{value}}`, `{{threshold}}`, `{{kpi}}`, `{{rule}}`, `{{severity}}`, `{{unit}}`, `{{labels.NAME}}`.
  public var summary: String
  public var description: String = ""
  public var runbook: String?
  /// The route (receivers, escalation) its notifications take; the default route when nil.
  public var route: String?
  /// Extra labels every alert of the rule carries (team, service, ...).
  public var labels: [String: String] = [:]
  /// Where the rule is written (1-based line), for messages.
  public var line: Int = 0

  public init(name: String, kpi: String, summary: String) {
    self.name = name
    self.kpi = kpi
    self.summary = summary
  }

  /// Whether the series' labels satisfy every matcher.
  public func matches(_ labels: [String: String]) -> Bool {
    matchers.allSatisfy { $0.value.matches(labels[$0.key]) }
  }

  /// The severity and threshold that `value` crosses, or nil when it crosses none.
  public func crossing(_ value: Double) -> (severity: String, threshold: Double)? {
    func crosses(_ threshold: Double) -> Bool {
      switch comparison {
      case .above: return value > threshold
      case .below: return value < threshold
      case .outside, .changePercent: return abs(value) > threshold
      }
    }
    if let critical, crosses(critical) { return ("critical", critical) }
    if let warn, crosses(warn) { return (severity, warn) }
    return nil
  }
}

/// Where notifications go: receivers, the receivers an unacknowledged alert escalates to, and
/// how webhook notifications are grouped and repeated.
public struct AlertRoute: Sendable, Equatable {
  public var name: String
  public var receivers: [String]
  public var escalateTo: [String] = []
  /// Labels that group alerts into one webhook notification.
  public var groupBy: [String] = ["alertname"]
  /// A firing alert is notified again this often.
  public var repeatInterval: Duration = .seconds(4 * 3600)

  public init(name: String, receivers: [String]) {
    self.name = name
    self.receivers = receivers
  }
}

/// A notification target and how to reach it. Secrets are named (environment variable or file),
/// read when the server starts, never written to logs, the journal or dry-run output.
public struct ReceiverConfig: Sendable, Equatable {
  public enum Kind: String, Sendable, CaseIterable {
    case pagerduty, webhook, alertmanager
  }

  /// A secret's source.
  public enum Secret: Sendable, Equatable {
    case environment(String)
    case file(String)

    /// The secret's value; throws naming the variable or file when it is missing or empty.
    public func resolve(environment: [String: String] = ProcessInfo.processInfo.environment) throws(NovaError) -> String {
      switch self {
      case .environment(let name):
        guard let value = environment[name], !value.isEmpty else {
          throw .invalidInput(field: name, message: "environment variable \(name) is not set (it holds a receiver's secret)")
        }
        return value
      case .file(let path):
        var info = stat()
        if stat(path, &info) == 0, info.st_mode & 0o077 != 0 {
          throw .invalidInput(
            field: path,
            message: "the secret file \(path) may be read by others (mode \(String(info.st_mode & 0o777, radix: 8))); run chmod 600 \(path)")
        }
        guard let data = FileManager.default.contents(atPath: path),
          let value = String(data: data, encoding: .utf8)?.trimmingCharacters(in: .whitespacesAndNewlines), !value.isEmpty
        else { throw .invalidInput(field: path, message: "cannot read a secret from \(path)") }
        return value
      }
    }
  }

  public var name: String
  public var kind: Kind
  public var url: String
  /// PagerDuty's routing key; a webhook's HMAC secret (optional).
  public var secret: Secret?
  /// Where the URL comes from when it carries credentials (`url_env`, `url_file`): then `url`
  /// is only ``secretURLPrefix`` and the name, and the real one is filled in when sending.
  public var urlSecret: Secret?

  /// What stands for a URL kept secret, in stored and journaled requests.
  public static let secretURLPrefix = "secret-url://"
  /// PagerDuty's `source`, `component`, `group` and `class` fields.
  public var source: String = "nova"
  public var component: String?
  public var group: String?
  public var eventClass: String?

  public init(name: String, kind: Kind, url: String, secret: Secret? = nil) {
    self.name = name
    self.kind = kind
    self.url = url
    self.secret = secret
  }
}

/// Engine-wide settings of `thresholds.yaml`.
public struct AlertSettings: Sendable, Equatable {
  /// How often every rule is evaluated (new KPI samples also trigger an evaluation at once).
  public var evaluationInterval: Duration = .seconds(10)
  /// An alert not acknowledged this long after it fired escalates.
  public var acknowledgeWithin: Duration = .seconds(300)
  /// An alert resolved later than this after it fired breaches the SLA.
  public var resolveWithin: Duration = .seconds(1800)
  /// Alertmanager forgets an alert it has not heard about; firing alerts are re-sent this often.
  public var alertmanagerResend: Duration = .seconds(60)
  /// Route of rules that name none.
  public var defaultRoute: String?
  /// The secret that signs PagerDuty's webhooks (v3) to `/v1/alerts/pagerduty`.
  public var pagerDutyWebhookSecret: ReceiverConfig.Secret?
  /// Where links in notifications point (Nova's own address as users reach it).
  public var externalURL: String = "http://127.0.0.1:8080"

  public init() {}
}
