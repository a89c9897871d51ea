import Foundation

/// `{{name}}` placeholders in a rule's summary and description.
public enum AlertTemplate {
  /// The placeholders a template may use besides `labels.NAME`.
  public static let names: Set<String> = ["value", "threshold", "kpi", "rule", "severity", "unit"]

  /// The placeholders in `template` that are not known, in order; nil when a `{{` is unclosed.
  public static func unknownPlaceholders(in template: String) -> [String]? {
    var unknown: [String] = []
    var rest = Substring(template)
    while let open = rest.range(of: "{{") {
      guard let close = rest[open.upperBound...].range(of: "}}") else { return nil }
      let name = rest[open.upperBound..<close.lowerBound].trimmingCharacters(in: .whitespaces)
      if !names.contains(name) && !(name.hasPrefix("labels.") && name.count > 7) { unknown.append(name) }
      rest = rest[close.upperBound...]
    }
    return unknown
  }

  /// `template` with its placeholders replaced; a label the series lacks renders empty.
  public static func render(_ template: String, values: [String: String], labels: [String: String]) -> String {
    var out = ""
    var rest = Substring(template)
    while let open = rest.range(of: "{{"), let close = rest[open.upperBound...].range(of: "}}") {
      out += rest[..<open.lowerBound]
      let name = rest[open.upperBound..<close.lowerBound].trimmingCharacters(in: .whitespaces)
      if name.hasPrefix("labels.") {
        out += labels[String(name.dropFirst(7))] ?? ""
      } else {
        out += values[name] ?? ""
      }
      rest = rest[close.upperBound...]
    }
    return out + rest
  }

  /// A value as people read it: integers without a fraction, others with up to 3 decimals.
  public static func format(_ value: Double) -> String {
    if value.isFinite && value == value.rounded() && abs(value) < 1e15 { return String(Int64(value)) }
    var text = String(format: "%.3f", value)
    while text.hasSuffix("0") { text.removeLast() }
    if text.hasSuffix(".") { text.removeLast() }
    return text
  }
}
