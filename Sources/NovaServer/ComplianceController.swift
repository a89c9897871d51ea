import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import NovaAlerting
import NovaCore
import NovaDashboards
import NovaMonitoring
import NovaPolicy
import NovaQueue
import NovaSecurity

/// Gathers the compliance figures from the stores: audit coverage and its trend, the audit chain
/// and its last signed checkpoint, policy drift, decisions by source, the alert SLA and the last
/// baseline comparison.
struct ComplianceReporter: Sendable {
  let security: SecurityContext
  let jobs: any JobStateListing
  let transitionSource: (any TransitionSource)?
  let policy: PolicyEngine?
  let policyBaseline: PolicyBaseline?
  let kpis: KPIStore
  let alertStore: AlertStore
  let alertSettings: @Sendable () async -> AlertSettings
  let reviewScheduleURL: String
  let dashboardURL: String?
  /// Verifies the latest checkpoint from the last one verified (no request reads the whole log).
  var verifier: CheckpointVerifier?
  /// The coverage the checkpointer computed last (over every job), and how old it may be.
  var coverageCache: AuditCoverageCache?
  var coverageMaxAge: Duration = .seconds(180)
  /// The last day's policy decisions, counted incrementally.
  var decisionTally: DecisionTally?

  /// The report at `now` (ms).
  func report(now: Int64 = Date().millisecondsSince1970) async throws -> ComplianceReport {
    let audit = security.audit
    let coverage: AuditCoverage
    if let cached = coverageCache?.coverage(within: coverageMaxAge) {
      coverage = cached
    } else {
      // Until the checkpointer's first pass (or when its figure is stale), counted here.
      coverage = try await audit.coverage(of: jobs)
    }
    // Only samples up to now count: one dated in the future is not yet a figure.
    var trend = try await kpis.query(name: "audit.coverage", since: now - 7 * 86_400_000, until: now, limit: .max)
      .map { ComplianceReport.Point(time: AuditTime.string($0.time), value: $0.value) }
    if trend.count > 96 {  // every n-th sample, the latest kept
      let step = (trend.count + 95) / 96
      trend = trend.enumerated().filter { ($0.offset - (trend.count - 1)) % step == 0 }.map(\.element)
    }
    let size = try await audit.size()
    var checkpoint: ComplianceReport.Checkpoint?
    if let verifier {
      let status = try await verifier.status()
      if let size = status.checkpointSize, let time = status.checkpointTime, let root = status.checkpointRoot {
        checkpoint = ComplianceReport.Checkpoint(
          size: size, created_at: AuditTime.string(time), root: EvidenceBundle.hex(root), signature_valid: status.valid)
      }
    } else if let latest = try await audit.latestCheckpoint() {
      // Valid means the signature verifies, names this log, and signs the root the entries
      // give now, recomputed from their content (not the stored hashes or root).
      let signed = try? Checkpoint.verify(note: latest.note, verifier: security.signer.verifier)
      var valid = false
      if let signed, signed.origin == security.origin, Int64(signed.size) == latest.size {
        valid = try await audit.recomputedRoot(size: latest.size) == signed.rootHash
      }
      checkpoint = ComplianceReport.Checkpoint(
        size: latest.size, created_at: AuditTime.string(latest.createdAt), root: EvidenceBundle.hex(latest.root), signature_valid: valid)
    }
    let auditFigures = ComplianceReport.Audit(
      coverage: coverage.ratio, audited_transitions: coverage.auditedTransitions, jobs: coverage.jobs,
      unaudited_jobs: coverage.unauditedJobs.count, coverage_trend: trend, entries: size, checkpoint: checkpoint,
      entries_since_checkpoint: size - (checkpoint?.size ?? 0))

    let policyFigures: ComplianceReport.Policy
    if let policy {
      let drift = policyBaseline.map { policy.drift(from: $0) }
      policyFigures = ComplianceReport.Policy(
        version: policy.version, source: policy.path ?? "built-in role rules", enforce: policy.document.enforce,
        active_since: AuditTime.string(policy.activeSince.millisecondsSince1970), opa_revision: policy.opaRevision,
        approved_version: policyBaseline?.policyVersion, approved_opa_revision: policyBaseline?.opaRevision, drifted: drift?.drifted,
        differences: drift?.differences ?? [])
    } else {
      policyFigures = ComplianceReport.Policy(
        version: "roles", source: "role checks (no policy engine)", enforce: true, active_since: AuditTime.string(now), opa_revision: nil,
        approved_version: nil, approved_opa_revision: nil, drifted: nil, differences: [])
    }

    let counts: [AuditActivity.DecisionKey: Int]
    if let decisionTally {
      counts = try await decisionTally.counts(now: now)
    } else {
      counts = try await audit.decisionCounts(since: now - 86_400_000)
    }
    let sources = Set(counts.keys.map(\.source)).union(AuditActivity.decisionSources).sorted()
    let decisions = ComplianceReport.Decisions(
      window_hours: 24,
      by_source: sources.map { source in
        ComplianceReport.DecisionCount(
          source: source, allowed: counts[AuditActivity.DecisionKey(source: source, allowed: true)] ?? 0,
          denied: counts[AuditActivity.DecisionKey(source: source, allowed: false)] ?? 0)
      })

    let settings = await alertSettings()
    let since = now - 30 * 86_400_000
    let sla = AlertSLAReport.compute(try await alertStore.fired(since: since), settings: settings, since: since, until: now)
    let firing = try await alertStore.openAlerts().values.filter { $0.state == .firing }.count
    let alerts = ComplianceReport.Alerts(
      window_days: 30, firing: firing, fired: sla.fired, acknowledge_within_s: sla.acknowledge_within_s, resolve_within_s: sla.resolve_within_s,
      acknowledged_within_sla: sla.acknowledged_within_sla, resolved_within_sla: sla.resolved_within_sla, escalated: sla.escalated,
      acknowledge_compliance: sla.acknowledge_compliance, resolve_compliance: sla.resolve_compliance)

    var baseline: ComplianceReport.Baseline?
    // The newest sample of each measure; the last comparison is those with the newest time.
    let deltas = try await kpis.latestSamples(names: ["baseline.delta"], since: now - 30 * 86_400_000, until: now).samples.filter { $0.time <= now }
    if let last = deltas.max(by: { $0.time < $1.time }) {
      let comparison = deltas.filter { $0.time == last.time && $0.labels["baseline"] == last.labels["baseline"] }
      let breaches = try await kpis.query(name: "baseline.breach", since: last.time, until: last.time, limit: .max)
      baseline = ComplianceReport.Baseline(
        baseline: last.labels["baseline"] ?? "?", compared_at: AuditTime.string(last.time),
        deltas: comparison.map { sample in
          let measure = sample.labels["measure"] ?? "?"
          return ComplianceReport.BaselineDelta(
            measure: measure, delta_percent: sample.value, threshold_percent: sample.labels["threshold_percent"].flatMap(Double.init),
            breached: breaches.contains { $0.labels["measure"] == measure })
        }.sorted { $0.measure < $1.measure })
    }
    return ComplianceReport(
      generated_at: AuditTime.string(now), audit: auditFigures, policy: policyFigures, decisions: decisions, alerts: alerts, baseline: baseline,
      links: ComplianceReport.Links(evidence: "/v1/evidence", review_schedule: reviewScheduleURL, dashboard: dashboardURL))
  }
}

/// `GET /lux` (the compliance page), `GET /v1/compliance` (its figures) and `GET /v1/evidence`
/// (an evidence bundle of `since`...`until`, admin unless the policy allows `evidence.export`).
struct ComplianceController {
  let reporter: ComplianceReporter
  let evidence: @Sendable (_ since: Int64?, _ until: Int64?) async throws -> [UInt8]
  let clock: any NovaClock

  func addRoutes(to router: Router<NovaRequestContext>) {
    router.get("lux", use: page)
    router.get("v1/compliance", use: figures)
    router.get("v1/evidence", use: bundle)
  }

  @Sendable func page(_ request: Request, context: NovaRequestContext) async throws -> Response {
    let html = LUXPage.html(try await reporter.report(now: clock.now().millisecondsSince1970))
    var headers = HTTPFields()
    headers[.contentType] = "text/html; charset=utf-8"
    // Everything is inline; nothing else may load (the page must work offline and stay inert).
    headers[.contentSecurityPolicy] = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:"
    return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: html)))
  }

  @Sendable func figures(_ request: Request, context: NovaRequestContext) async throws -> Response {
    try jsonResponse(try await reporter.report(now: clock.now().millisecondsSince1970))
  }

  @Sendable func bundle(_ request: Request, context: NovaRequestContext) async throws -> Response {
    var since: Int64?
    var until: Int64?
    let now = clock.now().millisecondsSince1970
    for (key, value) in request.uri.queryParameters {
      switch key {
      case "since": since = try KPITime.parse(String(value), now: now, flag: "since")
      case "until": until = try KPITime.parse(String(value), now: now, flag: "until")
      default: throw NovaError.invalidInput(field: String(key), message: "unknown parameter; use since and until")
      }
    }
    if let since, let until, since > until { throw NovaError.invalidInput(field: "since", message: "is after until") }
    let bytes = try await evidence(since, until)
    var headers = HTTPFields()
    headers[.contentType] = "application/gzip"
    headers[.contentDisposition] = "attachment; filename=\"nova-evidence.tar.gz\""
    return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
  }
}
