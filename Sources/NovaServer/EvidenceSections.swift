import Foundation
import NovaAlerting
import NovaCore
import NovaMonitoring
import NovaPolicy
import NovaSecurity

/// The parts of an evidence bundle beyond the audit log: the policy status and the window's
/// alert journal and SLA report. `nova evidence export` and `GET /v1/evidence` write the same.
public enum EvidenceSections {
  /// The sections for a window (`until` nil: now).
  public static func build(
    journal: OrchestrationJournal, alertStore: AlertStore, policy: PolicyEngine, baseline: PolicyBaseline?, alertSettings: AlertSettings,
    since: Int64?, until: Int64?
  ) async throws -> [String: [UInt8]] {
    var status: [String: JSONValue] = [
      "version": .string(policy.version), "enforce": .bool(policy.document.enforce),
      "rules": .int(Int64(policy.document.rules.count)), "source": .string(policy.path ?? "built-in role rules"),
      "opa": policy.document.opa.map { .string(Redaction.url("\($0.url)/v1/data/\($0.path)")) } ?? .null,
      "drift": .null,
    ]
    if let baseline {
      let drift = policy.drift(from: baseline)
      status["drift"] = .object(["drifted": .bool(drift.drifted), "differences": .array(drift.differences.map(JSONValue.string))])
    }
    let end = until ?? Date().millisecondsSince1970
    let history = try await journal.entries(since: since ?? 0, kinds: ["alert.", "notification.failed", "alerts.dry_run"], limit: 1_000_000)
      .filter { $0.time <= end }
    var historyLines: [UInt8] = []
    for entry in history {
      historyLines +=
        try CanonicalJSON.encode(
          .object([
            "seq": .int(entry.seq), "time": .string(AuditTime.string(entry.time)), "kind": .string(entry.kind),
            "subject": entry.subject.map(JSONValue.string) ?? .null, "actor": .string(entry.actor), "payload": entry.payload,
          ])) + [0x0A]
    }
    let alerts = try await alertStore.fired(since: since)
    let sla = AlertSLAReport.compute(alerts, settings: alertSettings, since: since, until: end)
    return [
      "policy/status.json": try CanonicalJSON.encode(.object(status)), "alerts/history.jsonl": historyLines,
      "alerts/sla.json": try CanonicalJSON.encode(try JSONValue.parse(JSONEncoder().encode(sla))),
    ]
  }
}
