import Foundation

/// Checks bodies against the documented wire formats; returns every problem found.
enum PayloadFormats {
  static func object(_ text: String) -> [String: Any]? {
    (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any]
  }

  static func isRFC3339(_ text: String) -> Bool {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    if formatter.date(from: text) != nil { return true }
    formatter.formatOptions = [.withInternetDateTime]
    return formatter.date(from: text) != nil
  }

  /// PagerDuty Events API v2 (developer.pagerduty.com, "Send an Alert Event").
  static func pagerDutyProblems(_ text: String, routingKey: String? = nil) -> [String] {
    guard let body = object(text) else { return ["not a JSON object"] }
    var problems: [String] = []
    let topLevel: Set<String> = ["routing_key", "event_action", "dedup_key", "payload", "images", "links", "client", "client_url"]
    for key in body.keys where !topLevel.contains(key) { problems.append("unknown top-level field \(key)") }
    guard let key = body["routing_key"] as? String else { return problems + ["routing_key missing"] }
    if key.count != 32 && key != "<redacted>" { problems.append("routing_key is not 32 characters") }
    if let routingKey, key != routingKey { problems.append("routing_key is not the configured key") }
    guard let action = body["event_action"] as? String, ["trigger", "acknowledge", "resolve"].contains(action) else {
      return problems + ["event_action is not trigger, acknowledge or resolve"]
    }
    let dedup = body["dedup_key"] as? String
    if let dedup, dedup.count > 255 || dedup.isEmpty { problems.append("dedup_key length \(dedup.count)") }
    if action != "trigger" {
      if dedup == nil { problems.append("\(action) without dedup_key") }
      for key in body.keys where !["routing_key", "event_action", "dedup_key"].contains(key) {
        problems.append("\(action) carries \(key)")
      }
      return problems
    }
    guard let payload = body["payload"] as? [String: Any] else { return problems + ["trigger without payload"] }
    let payloadKeys: Set<String> = ["summary", "source", "severity", "timestamp", "component", "group", "class", "custom_details"]
    for key in payload.keys where !payloadKeys.contains(key) { problems.append("unknown payload field \(key)") }
    if let summary = payload["summary"] as? String {
      if summary.isEmpty || summary.count > 1024 { problems.append("summary length \(summary.count)") }
    } else {
      problems.append("payload.summary missing")
    }
    if (payload["source"] as? String)?.isEmpty != false { problems.append("payload.source missing") }
    if !["critical", "error", "warning", "info"].contains(payload["severity"] as? String ?? "") { problems.append("payload.severity invalid") }
    if let timestamp = payload["timestamp"], !isRFC3339(timestamp as? String ?? "") { problems.append("payload.timestamp not ISO 8601") }
    for key in ["component", "group", "class"] where payload[key] != nil && !(payload[key] is String) {
      problems.append("payload.\(key) not a string")
    }
    if let details = payload["custom_details"], !(details is [String: Any]) { problems.append("custom_details not an object") }
    if let links = body["links"] {
      guard let list = links as? [[String: Any]] else { return problems + ["links not a list of objects"] }
      for link in list where (link["href"] as? String).flatMap(URL.init(string:)) == nil { problems.append("link without href") }
    }
    return problems
  }

  /// Alertmanager's webhook notification, version 4 (prometheus.io, webhook_config).
  static func webhookProblems(_ text: String) -> [String] {
    guard let body = object(text) else { return ["not a JSON object"] }
    var problems: [String] = []
    let keys: Set<String> = [
      "version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels", "commonLabels", "commonAnnotations", "externalURL", "alerts",
    ]
    if Set(body.keys) != keys { problems.append("fields \(body.keys.sorted()) are not \(keys.sorted())") }
    if body["version"] as? String != "4" { problems.append("version is not \"4\"") }
    if !["firing", "resolved"].contains(body["status"] as? String ?? "") { problems.append("status invalid") }
    for key in ["groupLabels", "commonLabels", "commonAnnotations"] where !(body[key] is [String: String]) {
      problems.append("\(key) not a string map")
    }
    guard let alerts = body["alerts"] as? [[String: Any]], !alerts.isEmpty else { return problems + ["no alerts"] }
    for alert in alerts {
      if !["firing", "resolved"].contains(alert["status"] as? String ?? "") { problems.append("alert status invalid") }
      guard let labels = alert["labels"] as? [String: String], labels["alertname"] != nil else {
        problems.append("alert labels without alertname")
        continue
      }
      if !(alert["annotations"] is [String: String]) { problems.append("annotations not a string map") }
      if !isRFC3339(alert["startsAt"] as? String ?? "") { problems.append("startsAt not RFC 3339") }
      if !isRFC3339(alert["endsAt"] as? String ?? "") { problems.append("endsAt not RFC 3339") }
      let fingerprint = alert["fingerprint"] as? String ?? ""
      if fingerprint.count != 16 || !fingerprint.allSatisfy(\.isHexDigit) { problems.append("fingerprint not 16 hex digits") }
      if !(alert["generatorURL"] is String) { problems.append("generatorURL missing") }
    }
    return problems
  }
}
