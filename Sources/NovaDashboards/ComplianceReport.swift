import Foundation

/// The figures of the LUX compliance page, as `GET /v1/compliance` serves them.
public struct ComplianceReport: Codable, Sendable, Equatable {
  public struct Point: Codable, Sendable, Equatable {
    public var time: String
    public var value: Double
    public init(time: String, value: Double) {
      self.time = time
      self.value = value
    }
  }

  public struct Checkpoint: Codable, Sendable, Equatable {
    public var size: Int64
    public var created_at: String
    /// SHA-256 root of the tree at `size`, hex.
    public var root: String
    /// Whether the checkpoint's signature verifies with this server's key and what it signs is
    /// the root recomputed from the entries now.
    public var signature_valid: Bool
    public init(size: Int64, created_at: String, root: String, signature_valid: Bool) {
      self.size = size
      self.created_at = created_at
      self.root = root
      self.signature_valid = signature_valid
    }
  }

  public struct Audit: Codable, Sendable, Equatable {
    /// Audited job transitions over all of them (1 means every one).
    public var coverage: Double
    public var audited_transitions: Int
    public var jobs: Int
    public var unaudited_jobs: Int
    /// `audit.coverage` over the last days, oldest first.
    public var coverage_trend: [Point]
    public var entries: Int64
    public var checkpoint: Checkpoint?
    public var entries_since_checkpoint: Int64
    public init(
      coverage: Double, audited_transitions: Int, jobs: Int, unaudited_jobs: Int, coverage_trend: [Point], entries: Int64,
      checkpoint: Checkpoint?, entries_since_checkpoint: Int64
    ) {
      self.coverage = coverage
      self.audited_transitions = audited_transitions
      self.jobs = jobs
      self.unaudited_jobs = unaudited_jobs
      self.coverage_trend = coverage_trend
      self.entries = entries
      self.checkpoint = checkpoint
      self.entries_since_checkpoint = entries_since_checkpoint
    }
  }

  public struct Policy: Codable, Sendable, Equatable {
    public var version: String
    public var source: String
    public var enforce: Bool
    public var active_since: String
    public var opa_revision: String?
    /// The approved version and OPA revision, when an approved baseline is configured.
    public var approved_version: String?
    public var approved_opa_revision: String?
    /// nil without an approved baseline.
    public var drifted: Bool?
    public var differences: [String]
    public init(
      version: String, source: String, enforce: Bool, active_since: String, opa_revision: String?, approved_version: String?,
      approved_opa_revision: String?, drifted: Bool?, differences: [String]
    ) {
      self.version = version
      self.source = source
      self.enforce = enforce
      self.active_since = active_since
      self.opa_revision = opa_revision
      self.approved_version = approved_version
      self.approved_opa_revision = approved_opa_revision
      self.drifted = drifted
      self.differences = differences
    }
  }

  public struct DecisionCount: Codable, Sendable, Equatable {
    public var source: String
    public var allowed: Int
    public var denied: Int
    public init(source: String, allowed: Int, denied: Int) {
      self.source = source
      self.allowed = allowed
      self.denied = denied
    }
  }

  public struct Decisions: Codable, Sendable, Equatable {
    public var window_hours: Int
    public var allowed: Int
    public var denied: Int
    public var by_source: [DecisionCount]
    public init(window_hours: Int, by_source: [DecisionCount]) {
      self.window_hours = window_hours
      self.by_source = by_source
      allowed = by_source.map(\.allowed).reduce(0, +)
      denied = by_source.map(\.denied).reduce(0, +)
    }
  }

  public struct Alerts: Codable, Sendable, Equatable {
    public var window_days: Int
    public var firing: Int
    public var fired: Int
    public var acknowledge_within_s: Double
    public var resolve_within_s: Double
    public var acknowledged_within_sla: Int
    public var resolved_within_sla: Int
    public var escalated: Int
    public var acknowledge_compliance: Double?
    public var resolve_compliance: Double?
    public init(
      window_days: Int, firing: Int, fired: Int, acknowledge_within_s: Double, resolve_within_s: Double, acknowledged_within_sla: Int,
      resolved_within_sla: Int, escalated: Int, acknowledge_compliance: Double?, resolve_compliance: Double?
    ) {
      self.window_days = window_days
      self.firing = firing
      self.fired = fired
      self.acknowledge_within_s = acknowledge_within_s
      self.resolve_within_s = resolve_within_s
      self.acknowledged_within_sla = acknowledged_within_sla
      self.resolved_within_sla = resolved_within_sla
      self.escalated = escalated
      self.acknowledge_compliance = acknowledge_compliance
      self.resolve_compliance = resolve_compliance
    }
  }

  public struct BaselineDelta: Codable, Sendable, Equatable {
    public var measure: String
    public var delta_percent: Double
    public var threshold_percent: Double?
    public var breached: Bool
    public init(measure: String, delta_percent: Double, threshold_percent: Double?, breached: Bool) {
      self.measure = measure
      self.delta_percent = delta_percent
      self.threshold_percent = threshold_percent
      self.breached = breached
    }
  }

  public struct Baseline: Codable, Sendable, Equatable {
    public var baseline: String
    public var compared_at: String
    public var deltas: [BaselineDelta]
    /// Whether any measure breached its threshold.
    public var breached: Bool
    public init(baseline: String, compared_at: String, deltas: [BaselineDelta]) {
      self.baseline = baseline
      self.compared_at = compared_at
      self.deltas = deltas
      breached = deltas.contains(where: \.breached)
    }
  }

  public struct Links: Codable, Sendable, Equatable {
    public var evidence: String
    public var review_schedule: String
    public var dashboard: String?
    public init(evidence: String, review_schedule: String, dashboard: String?) {
      self.evidence = evidence
      self.review_schedule = review_schedule
      self.dashboard = dashboard
    }
  }

  public var generated_at: String
  public var audit: Audit
  public var policy: Policy
  public var decisions: Decisions
  public var alerts: Alerts
  /// The last baseline comparison, if any in the retention window.
  public var baseline: Baseline?
  public var reviews: [Review]
  public var links: Links

  public init(
    generated_at: String, audit: Audit, policy: Policy, decisions: Decisions, alerts: Alerts, baseline: Baseline?,
    reviews: [Review] = Review.schedule,
    links: Links
  ) {
    self.generated_at = generated_at
    self.audit = audit
    self.policy = policy
    self.decisions = decisions
    self.alerts = alerts
    self.baseline = baseline
    self.reviews = reviews
    self.links = links
  }
}

/// A governance review: who holds it, how often, and the Nova evidence it works from. The same
/// schedule is written out in docs/INTEGRATION_SECURITY_REVIEWS.md (a test keeps them together).
public struct Review: Codable, Sendable, Equatable {
  public var name: String
  public var owner_role: String
  public var cadence: String
  public var evidence: String
  public var commands: [String]

  /// Where the schedule is written out (the dashboard and the LUX page link it).
  public static let scheduleURL = "https://github.com/nova/nova/blob/main/docs/INTEGRATION_SECURITY_REVIEWS.md"

  public static let schedule = [
    Review(
      name: "PagerDuty integration review", owner_role: "On-call lead (operator)", cadence: "Monthly, and before a migration window",
      evidence: "Dry-run payloads in the orchestration journal, notification failures, alert SLA report",
      commands: ["nova alerts evaluate --dry-run", "nova journal show --kind alerts.dry_run --kind notification.failed", "nova alerts list"]),
    Review(
      name: "Policy review", owner_role: "Security engineer (admin)", cadence: "Monthly, and after every policy change",
      evidence: "Active policy version, drift from the approved one, decisions by source, the policy test table",
      commands: ["nova policy show", "nova policy drift --approved approved.json", "nova policy test fixtures.yaml"]),
    Review(
      name: "Evidence review", owner_role: "Governance reviewer (viewer)", cadence: "Quarterly",
      evidence: "Signed evidence bundle of the quarter: audit entries, checkpoint, policy status, alert history and SLA",
      commands: [
        "nova evidence export --out q.tar.gz --since START --until END", "nova evidence verify q.tar.gz --key trusted.pem", "nova audit verify",
      ]),
  ]
}
