import Foundation
import NovaCore
import NovaMonitoring

/// A notification the engine decided to send: what happened to which alert.
public struct AlertNotification: Sendable, Equatable {
  public enum Action: String, Sendable, Codable {
    /// The alert fired, changed severity, or is repeated after the route's repeat interval.
    case trigger
    /// Someone acknowledged it.
    case acknowledge
    /// Its condition cleared, or someone resolved it.
    case resolve
    /// It was not acknowledged in time: sent to the route's escalation receivers.
    case escalate
    /// Re-sent so that Alertmanager, which forgets silent alerts, keeps it (Alertmanager receivers only).
    case refresh
  }

  public var action: Action
  public var alert: AlertInstance

  public init(action: Action, alert: AlertInstance) {
    self.action = action
    self.alert = alert
  }
}

/// Something for the orchestration journal.
public struct JournalRecord: Sendable, Equatable {
  public var kind: String
  /// The alert's id; the store fills it in from the payload's fingerprint.
  public var subject: String?
  public var payload: JSONValue
}

/// What one evaluation pass changed.
public struct EvaluationResult: Sendable {
  /// Alerts created or changed (id 0 for new ones).
  public var changed: [AlertInstance] = []
  /// Pending alerts whose condition cleared before they fired (stored ones are deleted).
  public var dropped: [AlertInstance] = []
  public var notifications: [AlertNotification] = []
  public var journal: [JournalRecord] = []
  public var kpis: [KPISample] = []
  /// Series that were compared with a rule.
  public var seriesEvaluated = 0
  /// Alerts firing after the pass, by severity.
  public var firing: [String: Int] = [:]

  public init() {}
}

/// The latest sample of every KPI series, kept up to date from the store's new rows.
public struct KPISeriesIndex: Sendable {
  /// KPI name → label text → latest sample up to now.
  public private(set) var series: [String: [String: KPISample]] = [:]
  /// Samples dated after `now` when they were read: they join `series` when their time comes,
  /// so that a sample from a skewed clock never shadows the current ones.
  public private(set) var pending: [KPISample] = []

  public init() {}

  /// Takes `samples` in; an older sample never replaces a newer one, and one dated after `now`
  /// waits until then.
  public mutating func add(_ samples: [KPISample], now: Int64 = .max) {
    for sample in samples {
      if sample.time > now {
        pending.append(sample)
        continue
      }
      let key = sample.labelText
      if let existing = series[sample.name]?[key], existing.time > sample.time { continue }
      series[sample.name, default: [:]][key] = sample
    }
  }

  /// Moves the pending samples whose time has come into the series.
  public mutating func release(now: Int64) {
    guard pending.contains(where: { $0.time <= now }) else { return }
    let due = pending.filter { $0.time <= now }.sorted { $0.time < $1.time }
    pending.removeAll { $0.time <= now }
    add(due, now: now)
  }

  /// Forgets samples older than `time`.
  public mutating func prune(before time: Int64) {
    for (name, byLabels) in series {
      let kept = byLabels.filter { $0.value.time >= time }
      series[name] = kept.isEmpty ? nil : kept
    }
  }
}

/// The alert state machine: rules against the latest samples, alert by alert, with the SLA clock.
/// Pure: the engine gives it the open alerts and persists what it returns.
public struct AlertEvaluator: Sendable {
  public var configuration: AlertingConfiguration

  public init(configuration: AlertingConfiguration) { self.configuration = configuration }

  /// The reference a `change_percent` rule compares a series with, keyed by `referenceKey`.
  public static func referenceKey(rule: String, labels: String) -> String { "\(rule)\u{0}\(labels)" }

  /// The samples of `index` that `rule` looks at: matching and fresh at `now`.
  public func candidates(of rule: AlertRule, in index: KPISeriesIndex, now: Int64) -> [KPISample] {
    guard let series = index.series[rule.kpi] else { return [] }
    let oldest = now - Int64(rule.staleAfter.seconds * 1000)
    return series.values.filter { $0.time >= oldest && $0.time <= now && rule.matches($0.labels) }
  }

  /// One pass at `now` over `index`, given the open alerts by fingerprint and the `change_percent`
  /// references (mean over the rule's window, by `referenceKey`).
  public func evaluate(
    index: KPISeriesIndex, open: [String: AlertInstance], references: [String: Double] = [:], now: Int64
  ) -> EvaluationResult {
    var result = EvaluationResult()
    var open = open
    var holding = Set<String>()
    let settings = configuration.settings
    for rule in configuration.rules {
      let route = configuration.route(for: rule)
      for sample in candidates(of: rule, in: index, now: now) {
        result.seriesEvaluated += 1
        var value = sample.value
        if rule.comparison == .changePercent {
          guard let reference = references[Self.referenceKey(rule: rule.name, labels: sample.labelText)], reference != 0 else { continue }
          value = (sample.value - reference) / abs(reference) * 100
        }
        guard let crossing = rule.crossing(value) else { continue }
        var labels = sample.labels.merging(rule.labels) { $1 }
        labels["alertname"] = rule.name
        let fingerprint = AlertInstance.fingerprint(rule: rule.name, labels: labels)
        holding.insert(fingerprint)
        if var alert = open[fingerprint] {
          if alert.state == .resolved { continue }  // resolved by hand; quiet until the condition clears
          let severityChanged = alert.severity != crossing.severity
          alert.value = value
          alert.threshold = crossing.threshold
          alert.severity = crossing.severity
          alert.lastTrueAt = now
          render(&alert, rule: rule, unit: sample.unit)
          if alert.state == .pending {
            if now - alert.activeSince >= Int64(rule.forDuration.seconds * 1000) { fire(&alert, now: now, into: &result) }
          } else if severityChanged {
            alert.lastNotifiedAt = now
            result.notifications.append(AlertNotification(action: .trigger, alert: alert))
          } else if let last = alert.lastNotifiedAt, now - last >= Int64((route?.repeatInterval ?? .seconds(14_400)).seconds * 1000) {
            alert.lastNotifiedAt = now
            result.notifications.append(AlertNotification(action: .trigger, alert: alert))
          }
          open[fingerprint] = alert
          result.changed.append(alert)
        } else {
          var alert = AlertInstance(
            fingerprint: fingerprint, rule: rule.name, labels: labels, severity: crossing.severity, kpi: rule.kpi, value: value,
            threshold: crossing.threshold, unit: sample.unit, summary: "", description: "", runbook: rule.runbook, route: route?.name,
            activeSince: now, lastTrueAt: now)
          render(&alert, rule: rule, unit: sample.unit)
          if rule.forDuration == .zero { fire(&alert, now: now, into: &result) }
          open[fingerprint] = alert
          result.changed.append(alert)
        }
      }
    }
    let rules = Dictionary(configuration.rules.map { ($0.name, $0) }) { first, _ in first }
    for (fingerprint, var alert) in open where !holding.contains(fingerprint) {
      let rule = rules[alert.rule]
      switch alert.state {
      case .pending:
        result.dropped.append(alert)
        open[fingerprint] = nil
        continue
      case .resolved:
        alert.cleared = true
        result.changed.append(alert)
        open[fingerprint] = nil
        continue
      case .firing:
        if let rule, now - alert.lastTrueAt < Int64(rule.keepFiringFor.seconds * 1000) { break }
        resolve(&alert, by: rule == nil ? AlertInstance.ruleRemovedReason : AlertInstance.clearedReason, now: now, into: &result)
        alert.cleared = true
        open[fingerprint] = nil
        result.changed.append(alert)
        continue
      }
      open[fingerprint] = alert
    }
    // The SLA clock of every alert still firing.
    let ackWithin = Int64(settings.acknowledgeWithin.seconds * 1000)
    let resolveWithin = Int64(settings.resolveWithin.seconds * 1000)
    let resend = Int64(settings.alertmanagerResend.seconds * 1000)
    for (fingerprint, var alert) in open where alert.state == .firing {
      guard let firedAt = alert.firedAt else { continue }
      var touched = false
      if alert.acknowledgedAt == nil, alert.escalatedAt == nil, now - firedAt >= ackWithin {
        alert.escalatedAt = now
        touched = true
        result.notifications.append(AlertNotification(action: .escalate, alert: alert))
        result.journal.append(
          JournalRecord(
            kind: "alert.escalated", subject: nil,
            payload: .object([
              "rule": .string(alert.rule), "fingerprint": .string(alert.fingerprint), "fired_at": .int(firedAt),
              "acknowledge_within_s": .double(settings.acknowledgeWithin.seconds), "route": alert.route.map(JSONValue.string) ?? .null,
            ])))
        result.kpis.append(breach(alert, kind: "acknowledge", now: now))
      }
      if alert.resolveBreachedAt == nil, now - firedAt >= resolveWithin {
        alert.resolveBreachedAt = now
        touched = true
        result.journal.append(
          JournalRecord(
            kind: "alert.sla_breached", subject: nil,
            payload: .object([
              "rule": .string(alert.rule), "fingerprint": .string(alert.fingerprint), "kind": .string("resolve"),
              "resolve_within_s": .double(settings.resolveWithin.seconds),
            ])))
        result.kpis.append(breach(alert, kind: "resolve", now: now))
      }
      if now - (alert.lastRefreshAt ?? firedAt) >= resend {
        alert.lastRefreshAt = now
        touched = true
        result.notifications.append(AlertNotification(action: .refresh, alert: alert))
      }
      if touched {
        open[fingerprint] = alert
        if let index = result.changed.lastIndex(where: { $0.fingerprint == fingerprint }) {
          result.changed[index] = alert
        } else {
          result.changed.append(alert)
        }
      }
    }
    for alert in open.values where alert.state == .firing { result.firing[alert.severity, default: 0] += 1 }
    return result
  }

  private func render(_ alert: inout AlertInstance, rule: AlertRule, unit: String) {
    let values = [
      "value": AlertTemplate.format(alert.value), "threshold": AlertTemplate.format(alert.threshold), "kpi": rule.kpi, "rule": rule.name,
      "severity": alert.severity, "unit": unit,
    ]
    alert.summary = String(AlertTemplate.render(rule.summary, values: values, labels: alert.labels).prefix(1024))
    alert.description = AlertTemplate.render(rule.description, values: values, labels: alert.labels)
  }

  private func fire(_ alert: inout AlertInstance, now: Int64, into result: inout EvaluationResult) {
    alert.state = .firing
    alert.firedAt = now
    alert.lastNotifiedAt = now
    alert.lastRefreshAt = now
    result.notifications.append(AlertNotification(action: .trigger, alert: alert))
    result.journal.append(
      JournalRecord(
        kind: "alert.fired", subject: nil,
        payload: .object([
          "rule": .string(alert.rule), "fingerprint": .string(alert.fingerprint), "severity": .string(alert.severity),
          "value": .double(alert.value), "threshold": .double(alert.threshold), "summary": .string(alert.summary),
          "labels": .object(alert.labels.mapValues(JSONValue.string)),
        ])))
  }

  /// Marks `alert` resolved at `now` and records time to resolve and a late resolve.
  public func resolve(_ alert: inout AlertInstance, by who: String, now: Int64, into result: inout EvaluationResult) {
    let wasFiring = alert.state == .firing
    alert.state = .resolved
    alert.resolvedAt = now
    alert.resolvedBy = who
    guard wasFiring, let firedAt = alert.firedAt else { return }
    result.notifications.append(AlertNotification(action: .resolve, alert: alert))
    let seconds = Double(now - firedAt) / 1000
    result.kpis.append(
      KPISample(name: "alert.time_to_resolve", labels: ["rule": alert.rule], value: seconds, unit: "s", time: now, source: "alerts"))
    result.journal.append(
      JournalRecord(
        kind: "alert.resolved", subject: nil,
        payload: .object([
          "rule": .string(alert.rule), "fingerprint": .string(alert.fingerprint), "by": .string(who),
          "time_to_resolve_s": .double(seconds),
          "within_sla": .bool(now - firedAt <= Int64(configuration.settings.resolveWithin.seconds * 1000)),
        ])))
  }

  private func breach(_ alert: AlertInstance, kind: String, now: Int64) -> KPISample {
    KPISample(name: "alert.sla_breach", labels: ["rule": alert.rule, "kind": kind], value: 1, unit: "", time: now, source: "alerts")
  }
}
