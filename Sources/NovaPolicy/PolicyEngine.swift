import Atomics
import Foundation
import Logging
import Metrics
import NovaCore
import Synchronization

/// Where decisions are recorded (the audit log); the engine calls it for every decision.
public protocol DecisionRecorder: Sendable {
  /// Records one decision; throws when it cannot, and then the decision does not stand.
  func record(_ decision: PolicyDecision, for request: PolicyRequest) async throws
}

/// Decides every action: cached decisions first, then the local rules (deny beats allow), then
/// OPA for what no rule decides, with a fallback mode when OPA cannot answer. Every decision
/// goes to the recorder. The rules can be swapped atomically while decisions are being made.
public final class PolicyEngine: Sendable {
  /// The rules and everything derived from them, swapped as one on reload (a class, so that
  /// taking it under the lock costs one reference count).
  final class Active: AtomicReference, Sendable {
    let document: PolicyDocument
    let rules: RuleSet
    let version: String
    let allowCache: DecisionCache
    let denyCache: DecisionCache
    let opa: OPAClient?
    let breaker: CircuitBreaker?
    /// When these rules became active.
    let since = Date()

    init(
      document: PolicyDocument, rules: RuleSet, version: String, allowCache: DecisionCache, denyCache: DecisionCache,
      opa: OPAClient?, breaker: CircuitBreaker?
    ) {
      self.document = document
      self.rules = rules
      self.version = version
      self.allowCache = allowCache
      self.denyCache = denyCache
      self.opa = opa
      self.breaker = breaker
    }
  }

  /// Read without a lock on every decision (an atomic reference), swapped whole on reload.
  private let active: ManagedAtomic<Active>
  /// Serialises reloads (never decisions).
  private let reloading = Mutex<Void>(())
  private let opaState = Mutex<(revision: String?, checkedHealth: Bool)>((nil, false))
  private let clock: any NovaClock
  private let recorder: (any DecisionRecorder)?
  private let logger: Logger
  /// Where the rules came from (nil: built in), for reloads and messages.
  public let path: String?

  /// One counter per source and result, made up front so that counting takes no lock.
  private let decisionCounters: [Int: Counter]
  private static let driftMetric = "nova_policy_drift"

  /// An engine over `document` (from `path`, when it came from a file).
  public init(
    document: PolicyDocument, path: String? = nil, recorder: (any DecisionRecorder)? = nil,
    clock: any NovaClock = SystemClock(), logger: Logger = Logger(label: "nova.policy")
  ) {
    self.path = path
    self.clock = clock
    self.recorder = recorder
    self.logger = logger
    active = ManagedAtomic(Self.compile(document))
    decisionCounters = Dictionary(
      uniqueKeysWithValues: [DecisionSource.rule, .cache, .opa, .fallback].flatMap { source in
        [true, false].map { allowed in
          (
            Self.counterIndex(source, allowed),
            Counter(
              label: "nova_policy_decisions_total", dimensions: [("source", source.rawValue), ("result", allowed ? "allow" : "deny")])
          )
        }
      })
    Gauge(label: "nova_policy_rules").record(document.rules.count)
  }

  /// An engine over the file at `path`, or the built-in rules when `path` is nil.
  public convenience init(
    path: String?, recorder: (any DecisionRecorder)? = nil, clock: any NovaClock = SystemClock(),
    logger: Logger = Logger(label: "nova.policy")
  ) throws(PolicyFileError) {
    let document = try path.map { path throws(PolicyFileError) in try PolicyDocument.load(path: path) } ?? .builtIn
    self.init(document: document, path: path, recorder: recorder, clock: clock, logger: logger)
  }

  private static func compile(_ document: PolicyDocument) -> Active {
    let opa = document.opa.map { OPAClient(url: $0.url, path: $0.path, timeout: $0.timeout) }
    let breaker = document.opa.map { CircuitBreaker(threshold: $0.breakerFailures, cooldown: $0.breakerCooldown) }
    return Active(
      document: document, rules: RuleSet(document.rules), version: document.version,
      allowCache: DecisionCache(name: "allow", capacity: document.cache.allowSize, ttl: document.cache.allowTTL),
      denyCache: DecisionCache(name: "deny", capacity: document.cache.denySize, ttl: document.cache.denyTTL), opa: opa,
      breaker: breaker)
  }

  /// The active rules' version.
  public var version: String { active.load(ordering: .acquiring).version }

  /// When the active rules were loaded (at start or by the last reload).
  public var activeSince: Date { active.load(ordering: .acquiring).since }
  /// The active document.
  public var document: PolicyDocument { active.load(ordering: .acquiring).document }
  /// OPA's bundle revision as last reported.
  public var opaRevision: String? { opaState.withLock { $0.revision } }

  /// Re-reads the policy file; a file that does not load keeps the current rules and throws why.
  @discardableResult
  public func reload() throws(PolicyFileError) -> (old: String, new: String) {
    guard let path else { return (version, version) }
    let document = try PolicyDocument.load(path: path)
    return replace(with: document)
  }

  /// Swaps in `document` at once; caches start empty when the version changed.
  @discardableResult
  public func replace(with document: PolicyDocument) -> (old: String, new: String) {
    let fresh = Self.compile(document)
    let old = reloading.withLock { _ -> String in
      let current = active.load(ordering: .acquiring)
      let old = current.version
      if old == fresh.version {
        // Same rules: keep the warm caches and the breaker's state.
        active.store(
          Active(
            document: document, rules: fresh.rules, version: fresh.version, allowCache: current.allowCache,
            denyCache: current.denyCache, opa: fresh.opa, breaker: current.breaker ?? fresh.breaker),
          ordering: .releasing)
      } else {
        active.store(fresh, ordering: .releasing)
      }
      return old
    }
    if old != fresh.version { opaState.withLock { $0.checkedHealth = false } }
    Gauge(label: "nova_policy_rules").record(document.rules.count)
    return (old, fresh.version)
  }

  /// Decides `request` and records the decision. A decision that cannot be recorded is not
  /// given: the error (the audit store's) is thrown, and the action it was asked for fails.
  public func decide(_ request: PolicyRequest) async throws -> PolicyDecision {
    let decision = await evaluate(request)
    count(decision)
    try await recorder?.record(decision, for: request)
    return decision
  }

  /// The built-in role rules, enforced under a policy in shadow mode.
  static let roleFloor = RuleSet(PolicyDocument.builtIn.rules)

  /// Whether `subject` could be allowed `action` on any resource: false when no rule could allow
  /// it and no OPA could be asked (in shadow mode, when the built-in role floor could not). A
  /// caller refused here is refused before the body of its request is read.
  public func mayAllow(action: String, subject: PolicySubject) -> Bool {
    let state = active.load(ordering: .acquiring)
    guard state.document.enforce else { return Self.roleFloor.mayAllow(action: action, subject: subject) }
    return state.opa != nil || state.rules.mayAllow(action: action, subject: subject)
  }

  /// Whether a decision on `action` can depend on the resource attribute `name` (always with OPA,
  /// which sees the whole request): callers skip deciding per value when it cannot.
  public func consults(attribute name: String, action: String) -> Bool {
    let state = active.load(ordering: .acquiring)
    return state.opa != nil || state.rules.consults(attribute: name, action: action)
      || (!state.document.enforce && Self.roleFloor.consults(attribute: name, action: action))
  }

  /// Decides without recording (for `nova policy check` and tests of the rules alone).
  public func evaluate(_ request: PolicyRequest) async -> PolicyDecision {
    let start = clock.nanoseconds()
    let state = active.load(ordering: .acquiring)
    let enforce = state.document.enforce
    func finish(_ decision: PolicyDecision) -> PolicyDecision {
      var decision = decision
      decision.enforced = enforce
      decision.floorAllowed = enforce ? nil : (Self.roleFloor.evaluate(request)?.allow ?? false)
      decision.evaluationNanoseconds = clock.nanoseconds() &- start
      return decision
    }
    // With OPA behind the rules, the answer may depend on what OPA sees beyond the question.
    let key = request.cacheKey(withContext: state.opa != nil)
    if let hit = state.allowCache.lookup(key, now: start) ?? state.denyCache.lookup(key, now: start) {
      var decision = hit.decision
      decision.source = .cache
      return finish(decision)
    }
    if let (allow, rule) = state.rules.evaluate(request) {
      let decision = PolicyDecision(
        allowed: allow, reason: "\(allow ? "allowed" : "denied") by rule '\(rule)'", source: .rule, rule: rule,
        policyVersion: state.version)
      (allow ? state.allowCache : state.denyCache).store(key, decision, now: start)
      return finish(decision)
    }
    guard let opa = state.opa, let breaker = state.breaker, let settings = state.document.opa else {
      return finish(
        PolicyDecision(
          allowed: false, reason: "no rule allows \(request.action) on \(request.resource.kind) (default deny)", source: .rule,
          rule: nil, policyVersion: state.version))
    }
    return finish(await askOPA(request, key: key, opa: opa, breaker: breaker, settings: settings, state: state, now: start))
  }

  private func askOPA(
    _ request: PolicyRequest, key: DecisionKey, opa: OPAClient, breaker: CircuitBreaker, settings: PolicyDocument.OPA,
    state: Active, now: UInt64
  ) async -> PolicyDecision {
    var problem = "circuit breaker open after repeated OPA failures"
    if breaker.allows(now: clock.nanoseconds()) {
      do {
        // Health first: before the first request, and before the probe after the breaker opened.
        let needsHealth = opaState.withLock { !$0.checkedHealth } || breaker.current == .halfOpen
        if needsHealth {
          guard await opa.healthy() else { throw OPAClient.Failure(description: "OPA's /health is not ok") }
          opaState.withLock { $0.checkedHealth = true }
        }
        let answer = try await opa.query(input: request.opaInput)
        breaker.recordSuccess()
        let changed = opaState.withLock { opaState -> Bool in
          defer { opaState.revision = answer.revision }
          return opaState.revision != nil && opaState.revision != answer.revision
        }
        if changed {
          // OPA's policy changed: what it decided before may no longer hold.
          state.allowCache.clear()
          state.denyCache.clear()
          logger.notice("OPA bundle revision changed; decision caches cleared", metadata: ["revision": "\(answer.revision ?? "-")"])
        }
        let decision = PolicyDecision(
          allowed: answer.allowed, reason: "OPA data.\(opa.path.replacingOccurrences(of: "/", with: ".")) is \(answer.detail)",
          source: .opa, policyVersion: state.version, opaRevision: answer.revision)
        (answer.allowed ? state.allowCache : state.denyCache).store(key, decision, now: clock.nanoseconds())
        return decision
      } catch {
        breaker.recordFailure(now: clock.nanoseconds())
        opaState.withLock { $0.checkedHealth = false }
        problem = "\(error)"
      }
    }
    return fallback(request, key: key, settings: settings, state: state, problem: problem, now: now)
  }

  private func fallback(
    _ request: PolicyRequest, key: DecisionKey, settings: PolicyDocument.OPA, state: Active, problem: String, now: UInt64
  ) -> PolicyDecision {
    let mode = settings.onError
    switch mode {
    case .failClosed:
      return PolicyDecision(
        allowed: false, reason: "OPA unavailable (\(problem)); fail-closed denies", source: .fallback,
        policyVersion: state.version, fallback: mode.rawValue)
    case .staleIfError:
      let stale = settings.staleMaxAge.nanoseconds
      if let hit = state.allowCache.lookup(key, now: now, staleFor: stale) ?? state.denyCache.lookup(key, now: now, staleFor: stale) {
        var decision = hit.decision
        decision.source = .fallback
        decision.fallback = mode.rawValue
        decision.reason = "OPA unavailable (\(problem)); stale decision from \(hit.ageNanoseconds / 1_000_000_000) s ago: \(hit.decision.reason)"
        return decision
      }
      return PolicyDecision(
        allowed: false, reason: "OPA unavailable (\(problem)) and no earlier decision within \(settings.staleMaxAge); denied",
        source: .fallback, policyVersion: state.version, fallback: mode.rawValue)
    case .failOpen:
      let open = PatternList(settings.failOpenActions).matches(request.action)
      return PolicyDecision(
        allowed: open,
        reason: open
          ? "OPA unavailable (\(problem)); fail-open allows \(request.action)"
          : "OPA unavailable (\(problem)); fail-open does not cover \(request.action), denied",
        source: .fallback, policyVersion: state.version, fallback: mode.rawValue)
    }
  }

  private static func counterIndex(_ source: DecisionSource, _ allowed: Bool) -> Int {
    let base: Int
    switch source {
    case .rule: base = 0
    case .cache: base = 2
    case .opa: base = 4
    case .fallback: base = 6
    }
    return base + (allowed ? 1 : 0)
  }

  private func count(_ decision: PolicyDecision) {
    decisionCounters[Self.counterIndex(decision.source, decision.allowed)]?.increment()
  }

  /// Compares the active version and OPA's revision with an approved baseline; sets the drift gauge.
  public func drift(from baseline: PolicyBaseline) -> PolicyDrift {
    var differences: [String] = []
    if baseline.policyVersion != version {
      differences.append("policy version \(version) is not the approved \(baseline.policyVersion)")
    }
    if let approved = baseline.opaRevision, approved != opaRevision {
      differences.append("OPA bundle revision \(opaRevision ?? "unknown") is not the approved \(approved)")
    }
    Gauge(label: Self.driftMetric).record(differences.isEmpty ? 0 : 1)
    return PolicyDrift(differences: differences)
  }
}

/// The approved policy: what `nova policy drift --approved FILE` compares with.
public struct PolicyBaseline: Codable, Sendable, Equatable {
  public var policyVersion: String
  public var opaRevision: String?

  enum CodingKeys: String, CodingKey {
    case policyVersion = "policy_version"
    case opaRevision = "opa_revision"
  }

  public init(policyVersion: String, opaRevision: String?) {
    self.policyVersion = policyVersion
    self.opaRevision = opaRevision
  }
}

/// What differs from the approved baseline (nothing: no drift).
public struct PolicyDrift: Sendable, Equatable {
  public var differences: [String]
  public var drifted: Bool { !differences.isEmpty }
}
