import Foundation
import NovaCore

/// One HTTP request for a receiver, as stored in the outbox and printed by the dry-run: the
/// exact body, with secrets left out (the sender adds them).
public struct OutboundRequest: Sendable, Equatable {
  public var receiver: String
  public var kind: ReceiverConfig.Kind
  public var action: AlertNotification.Action
  public var url: String
  /// Canonical JSON; PagerDuty's `routing_key` reads `<redacted>` until sent.
  public var body: String
  public var alertIDs: [Int64]
}

/// Turns notifications into receiver requests: PagerDuty Events API v2 events, Alertmanager
/// webhook (version 4) notifications grouped by the route's labels, and Alertmanager API v2 alerts.
public struct NotificationRenderer: Sendable {
  public static let redacted = "<redacted>"
  public var configuration: AlertingConfiguration

  public init(configuration: AlertingConfiguration) { self.configuration = configuration }

  /// The requests for `notifications`, in order; webhook notifications of one group share a request.
  public func requests(for notifications: [AlertNotification], now: Int64) -> [OutboundRequest] {
    var requests: [OutboundRequest] = []
    var groups:
      [(receiver: ReceiverConfig, key: String, groupLabels: [String: String], action: AlertNotification.Action, alerts: [AlertNotification])] = []
    for notification in notifications {
      guard let route = notification.alert.route.flatMap({ name in configuration.routes.first { $0.name == name } }) else { continue }
      let names = notification.action == .escalate ? route.escalateTo : route.receivers
      for receiver in names.compactMap(configuration.receiver(named:)) {
        switch receiver.kind {
        case .pagerduty:
          guard notification.action != .refresh else { continue }
          requests.append(
            OutboundRequest(
              receiver: receiver.name, kind: .pagerduty, action: notification.action, url: receiver.url,
              body: pagerDuty(notification, receiver: receiver), alertIDs: [notification.alert.id]))
        case .alertmanager:
          guard notification.action != .acknowledge else { continue }
          requests.append(
            OutboundRequest(
              receiver: receiver.name, kind: .alertmanager, action: notification.action,
              url: receiver.url.hasSuffix("/api/v2/alerts") ? receiver.url : receiver.url.trimmingSuffix("/") + "/api/v2/alerts",
              body: alertmanager([notification], now: now), alertIDs: [notification.alert.id]))
        case .webhook:
          guard notification.action != .acknowledge, notification.action != .refresh else { continue }
          var groupLabels: [String: String] = [:]
          for label in route.groupBy { if let value = notification.alert.labels[label] { groupLabels[label] = value } }
          let key = Self.groupKey(route: route.name, labels: groupLabels)
          let action: AlertNotification.Action = notification.action == .resolve ? .resolve : .trigger
          if let index = groups.firstIndex(where: { $0.receiver.name == receiver.name && $0.key == key && $0.action == action }) {
            groups[index].alerts.append(notification)
          } else {
            groups.append((receiver, key, groupLabels, action, [notification]))
          }
        }
      }
    }
    for group in groups {
      requests.append(
        OutboundRequest(
          receiver: group.receiver.name, kind: .webhook, action: group.action, url: group.receiver.url,
          body: webhook(group.alerts, receiver: group.receiver.name, groupKey: group.key, groupLabels: group.groupLabels),
          alertIDs: group.alerts.map(\.alert.id)))
    }
    return requests
  }

  /// Alertmanager's group key form: `{}/{route="NAME"}:{label="value", ...}`.
  static func groupKey(route: String, labels: [String: String]) -> String {
    "{}/{route=\"\(route)\"}:{" + labels.keys.sorted().map { "\($0)=\(quoted(labels[$0]!))" }.joined(separator: ", ") + "}"
  }

  private static func quoted(_ text: String) -> String {
    "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
  }

  private func alertURL(_ alert: AlertInstance) -> String {
    configuration.settings.externalURL.trimmingSuffix("/") + "/v1/alerts/\(alert.id)"
  }

  private static func encode(_ value: JSONValue) -> String {
    // Bodies are built from strings and finite numbers, which always encode.
    (try? CanonicalJSON.string(value)) ?? "{}"
  }

  /// A PagerDuty Events API v2 event.
  func pagerDuty(_ notification: AlertNotification, receiver: ReceiverConfig) -> String {
    let alert = notification.alert
    var body: [String: JSONValue] = [
      "routing_key": .string(Self.redacted), "dedup_key": .string(alert.dedupKey),
    ]
    switch notification.action {
    case .acknowledge: body["event_action"] = "acknowledge"
    case .resolve: body["event_action"] = "resolve"
    case .trigger, .escalate, .refresh:
      body["event_action"] = "trigger"
      var details: [String: JSONValue] = [
        "alert_id": .int(alert.id), "rule": .string(alert.rule), "kpi": .string(alert.kpi), "value": .double(alert.value),
        "threshold": .double(alert.threshold), "unit": .string(alert.unit), "labels": .object(alert.labels.mapValues(JSONValue.string)),
        "fingerprint": .string(alert.fingerprint),
      ]
      if !alert.description.isEmpty { details["description"] = .string(alert.description) }
      if notification.action == .escalate { details["escalated"] = .bool(true) }
      var payload: [String: JSONValue] = [
        "summary": .string(String(alert.summary.prefix(1024))), "source": .string(receiver.source),
        "severity": .string(["critical", "error", "warning", "info"].contains(alert.severity) ? alert.severity : "warning"),
        "timestamp": .string(AuditTime.string(alert.firedAt ?? alert.activeSince)),
        "component": .string(receiver.component ?? alert.kpi), "class": .string(receiver.eventClass ?? alert.rule),
        "custom_details": .object(details),
      ]
      if let group = receiver.group ?? alert.labels["queue"] { payload["group"] = .string(group) }
      body["payload"] = .object(payload)
      var links: [JSONValue] = [.object(["href": .string(alertURL(alert)), "text": .string("Nova alert \(alert.id)")])]
      if let runbook = alert.runbook { links.append(.object(["href": .string(runbook), "text": "Runbook"])) }
      body["links"] = .array(links)
      body["client"] = "Nova"
      body["client_url"] = .string(configuration.settings.externalURL)
    }
    return Self.encode(.object(body))
  }

  private func annotations(_ alert: AlertInstance) -> [String: JSONValue] {
    var annotations: [String: JSONValue] = ["summary": .string(alert.summary)]
    if !alert.description.isEmpty { annotations["description"] = .string(alert.description) }
    if let runbook = alert.runbook { annotations["runbook_url"] = .string(runbook) }
    return annotations
  }

  private func labels(_ alert: AlertInstance) -> [String: String] {
    alert.labels.merging(["severity": alert.severity]) { $1 }
  }

  /// Alertmanager's webhook notification (version 4).
  func webhook(_ notifications: [AlertNotification], receiver: String, groupKey: String, groupLabels: [String: String]) -> String {
    let alerts = notifications.map(\.alert)
    let firing = notifications.contains { $0.action != .resolve }
    let labelSets = alerts.map(labels)
    let common = labelSets.dropFirst().reduce(labelSets.first ?? [:]) { common, next in common.filter { next[$0.key] == $0.value } }
    let annotationSets = alerts.map(annotations)
    let commonAnnotations = annotationSets.dropFirst().reduce(annotationSets.first ?? [:]) { common, next in
      common.filter { next[$0.key] == $0.value }
    }
    let body: JSONValue = .object([
      "version": "4", "groupKey": .string(groupKey), "truncatedAlerts": .int(0), "status": .string(firing ? "firing" : "resolved"),
      "receiver": .string(receiver), "groupLabels": .object(groupLabels.mapValues(JSONValue.string)),
      "commonLabels": .object(common.mapValues(JSONValue.string)), "commonAnnotations": .object(commonAnnotations),
      "externalURL": .string(configuration.settings.externalURL),
      "alerts": .array(
        notifications.map { notification in
          let alert = notification.alert
          let resolved = notification.action == .resolve
          return .object([
            "status": .string(resolved ? "resolved" : "firing"), "labels": .object(labels(alert).mapValues(JSONValue.string)),
            "annotations": .object(annotations(alert)), "startsAt": .string(AuditTime.string(alert.firedAt ?? alert.activeSince)),
            "endsAt": .string(resolved ? AuditTime.string(alert.resolvedAt ?? alert.lastTrueAt) : "0001-01-01T00:00:00Z"),
            "generatorURL": .string(alertURL(alert)), "fingerprint": .string(alert.fingerprint),
          ])
        }),
    ])
    return Self.encode(body)
  }

  /// Alertmanager API v2 alerts. A firing alert ends three re-send periods ahead, so that
  /// Alertmanager resolves it by itself if Nova stops; a resolved one ends when it resolved.
  func alertmanager(_ notifications: [AlertNotification], now: Int64) -> String {
    let ahead = Int64(configuration.settings.alertmanagerResend.seconds * 3000)
    return Self.encode(
      .array(
        notifications.map { notification in
          let alert = notification.alert
          let ends = notification.action == .resolve ? (alert.resolvedAt ?? now) : now + ahead
          return .object([
            "labels": .object(labels(alert).mapValues(JSONValue.string)), "annotations": .object(annotations(alert)),
            "startsAt": .string(AuditTime.string(alert.firedAt ?? alert.activeSince)), "endsAt": .string(AuditTime.string(ends)),
            "generatorURL": .string(alertURL(alert)),
          ])
        }))
  }
}

extension String {
  func trimmingSuffix(_ suffix: String) -> String {
    hasSuffix(suffix) ? String(dropLast(suffix.count)) : self
  }
}
