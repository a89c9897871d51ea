import Foundation
import NovaCore
import NovaPolicy
import NovaTestSupport
import Synchronization
import Testing

func request(
  _ action: String, subject: String = "token:alice", roles: [String] = [], kind: String = "job",
  attributes: [String: String] = [:]
) -> PolicyRequest {
  PolicyRequest(
    subject: PolicySubject(id: subject, roles: roles), action: action,
    resource: PolicyResource(kind: kind, attributes: attributes))
}

@Suite("Policy rules", .timeLimit(.minutes(5)))
struct PolicyRulesTests {
  static let yaml = """
    # Nova policy
    enforce: true
    rules:
      - name: viewers-read
        effect: allow
        roles: [viewer, operator, admin]
        actions: read
      - name: trainer-submits-training
        effect: allow
        subjects: "agent:trainer"
        actions: [submit]
        resource:
          kind: job
          attributes:
            queue: gpu
            job_kind: "train.*"
      - name: nobody-submits-to-frozen
        effect: deny
        actions: "*"
        resource:
          attributes:
            queue: frozen
      - name: operators-work
        effect: allow
        roles: operator
        actions: [submit, cancel, retry]
    cache:
      allow_ttl_seconds: 30
      deny_size: 100
    """

  @Test func globsMatchAsShellPatternsDo() {
    #expect(GlobPattern("train.*").matches("train.llama") && !GlobPattern("train.*").matches("eval.x"))
    #expect(GlobPattern("*").matches("") && GlobPattern("a?c").matches("abc") && !GlobPattern("a?c").matches("ac"))
    #expect(GlobPattern("*.gpu.*").matches("x.gpu.y") && !GlobPattern("*.gpu.*").matches("x.cpu.y"))
    #expect(GlobPattern("a*b*c").matches("aXXbYYc") && !GlobPattern("a*b*c").matches("aXXbYY"))
    #expect(GlobPattern("exact").matches("exact") && !GlobPattern("exact").matches("exactly"))
    #expect(PatternList(["a", "b*"]).matches("bee") && !PatternList(["a", "b*"]).matches("c"))
  }

  @Test func rulesDecideWithDenyBeatingAllow() async throws {
    let document = try PolicyDocument.parse(Self.yaml, file: "nova-policy.yaml")
    #expect(document.rules.count == 4 && document.cache.allowTTL == .seconds(30) && document.cache.denySize == 100)
    let engine = PolicyEngine(document: document)
    let read = try await engine.decide(request("read", roles: ["viewer"]))
    #expect(read.allowed && read.rule == "viewers-read" && read.source == .rule && read.policyVersion == engine.version)
    let train = try await engine.decide(
      request("submit", subject: "agent:trainer", attributes: ["queue": "gpu", "job_kind": "train.llama"]))
    #expect(train.allowed && train.rule == "trainer-submits-training")
    let wrongQueue = try await engine.decide(
      request("submit", subject: "agent:trainer", attributes: ["queue": "cpu", "job_kind": "train.llama"]))
    #expect(!wrongQueue.allowed && wrongQueue.rule == nil && wrongQueue.reason.contains("default deny"))
    let frozen = try await engine.decide(request("submit", roles: ["operator"], attributes: ["queue": "frozen"]))
    #expect(!frozen.allowed && frozen.rule == "nobody-submits-to-frozen" && frozen.reason.contains("denied by rule"))
    let operatorSubmit = try await engine.decide(request("submit", roles: ["operator"], attributes: ["queue": "cpu"]))
    #expect(operatorSubmit.allowed && operatorSubmit.rule == "operators-work")
    // The same question again is answered from the cache, with the deciding rule kept.
    let again = try await engine.decide(request("submit", roles: ["operator"], attributes: ["queue": "cpu"]))
    #expect(again.allowed && again.source == .cache && again.rule == "operators-work")
  }

  @Test func theBuiltInPolicyFollowsTheRoles() async {
    let engine = PolicyEngine(document: .builtIn)
    #expect(await engine.evaluate(request("read", roles: ["viewer"])).allowed)
    #expect(!(await engine.evaluate(request("submit", roles: ["viewer"])).allowed))
    #expect(await engine.evaluate(request("submit", roles: ["operator"])).allowed)
    #expect(!(await engine.evaluate(request("tokens.manage", roles: ["operator"])).allowed))
    #expect(await engine.evaluate(request("tokens.manage", roles: ["admin"])).allowed)
    #expect(await engine.evaluate(request("evidence.export", subject: "cli:root")).allowed)
  }

  @Test func badFilesNameFileLineAndColumn() {
    let cases: [(String, String)] = [
      ("rules:\n  - name: x\n    effect: alow\n", "nova-policy.yaml:3:13: rules[0].effect: 'alow' is not allow or deny"),
      ("rules:\n  - name: x\n    effect: allow\n    colour: red\n", "nova-policy.yaml:4:5: rules[0]: unknown key 'colour'"),
      ("rules:\n  - effect: allow\n", "nova-policy.yaml:2:5: rules[0]: a rule needs a name"),
      ("rules: [\n", "nova-policy.yaml:2:1: YAML syntax"),
      ("enforce: maybe\nrules: []\n", "nova-policy.yaml:1:10: enforce: expected true or false"),
      ("rules:\n  - name: a\n    effect: allow\n  - name: a\n    effect: deny\n", "nova-policy.yaml:4:5: rules[1].name: 'a' is used twice"),
      ("rules: []\nopa:\n  url: ftp://x\n  path: a/b\n", "nova-policy.yaml:3:8: opa.url: 'ftp://x' is not an http(s) URL"),
      ("rules: []\nopa:\n  url: http://x\n  path: a/b\n  on_error: fail-open\n", "fail-open needs fail_open_actions"),
      ("rules: []\nopa:\n  url: http://x\n  path: a/b\n  on_error: sometimes\n", "'sometimes' is not fail-closed"),
      ("rules: []\ncache:\n  allow_size: -1\n", "nova-policy.yaml:3:15: cache.allow_size: expected a number"),
      ("rules:\n  - name: a\n    effect: allow\n    roles: []\n", "an empty list matches nothing"),
      ("enforce: true\n", "policy: no 'rules' list"),
      ("", "the file is empty"),
      ("rules:\n  - name: a\n    effect: allow\n    resource: {kind: [1, [2]]}\n", "rules[0].resource.kind[1]: expected a string"),
    ]
    for (yaml, expected) in cases {
      do {
        _ = try PolicyDocument.parse(yaml, file: "nova-policy.yaml")
        Issue.record("accepted: \(yaml)")
      } catch {
        #expect(error.description.contains(expected), "\(error.description)")
      }
    }
    #expect(throws: PolicyFileError.self) { _ = try PolicyDocument.load(path: "/nonexistent/policy.yaml") }
  }

  @Test func theVersionIsAHashOfTheCanonicalRules() throws {
    let a = try PolicyDocument.parse(Self.yaml, file: "a")
    let b = try PolicyDocument.parse(Self.yaml.replacingOccurrences(of: "# Nova policy", with: "# other comment"), file: "b")
    #expect(a.version == b.version && a.version.count == 16)
    var c = a
    c.rules[0].actions = ["read", "list"]
    #expect(c.version != a.version)
    // Issue #13 point 13: every setting of the file is in the version, so changing one is drift.
    var opa = PolicyDocument.OPA(url: "http://opa:8181", path: "nova/allow")
    let base = PolicyDocument(rules: a.rules, opa: opa)
    var versions: Set<String> = [base.version]
    let changes: [(inout PolicyDocument) -> Void] = [
      { $0.cache.allowSize = 5 }, { $0.cache.allowTTL = .seconds(61) }, { $0.cache.denySize = 5 }, { $0.cache.denyTTL = .seconds(11) },
      { $0.opa?.timeout = .milliseconds(251) }, { $0.opa?.onError = .staleIfError }, { $0.opa?.staleMaxAge = .seconds(301) },
      { $0.opa?.breakerFailures = 6 }, { $0.opa?.breakerCooldown = .seconds(11) }, { $0.opa?.failOpenActions = ["read"] },
      { $0.opa?.url = "http://other:8181" }, { $0.opa?.path = "nova/other" }, { $0.enforce = false },
    ]
    for change in changes {
      var changed = base
      change(&changed)
      versions.insert(changed.version)
    }
    #expect(versions.count == changes.count + 1)
    opa.timeout = .milliseconds(250)
    #expect(PolicyDocument(rules: a.rules, opa: opa).version == base.version)
  }

  @Test func shadowModeRecordsButDoesNotBlock() async throws {
    let recorder = RecordingRecorder()
    let document = try PolicyDocument.parse("enforce: false\nrules:\n  - name: deny-all\n    effect: deny\n", file: "p")
    let engine = PolicyEngine(document: document, recorder: recorder)
    let decision = try await engine.decide(request("submit", roles: ["operator"]))
    #expect(!decision.allowed && !decision.enforced && decision.permits && decision.floorAllowed == true)
    #expect(recorder.decisions.count == 1 && recorder.decisions.first?.0.rule == "deny-all")
  }

  /// Shadow mode shadows the file's rules only: the built-in role floor is still enforced, so a
  /// shadowed policy that allows everything grants a viewer nothing beyond reading.
  @Test func shadowModeGrantsNothingBeyondTheRoles() async throws {
    let document = try PolicyDocument.parse("enforce: false\nrules:\n  - name: allow-all\n    effect: allow\n", file: "p")
    let engine = PolicyEngine(document: document)
    for action in ["tokens.manage", "policy.reload", "evidence.export", "submit", "cancel"] {
      let decision = try await engine.decide(request(action, roles: ["viewer"], kind: "token"))
      #expect(decision.allowed && !decision.enforced && decision.floorAllowed == false && !decision.permits, "\(action)")
      #expect(decision.refusal.contains("built-in role rules"))
    }
    #expect(try await engine.decide(request("read", roles: ["viewer"])).permits)
    #expect(try await engine.decide(request("submit", roles: ["operator"])).permits)
    #expect(try await engine.decide(request("tokens.manage", roles: ["admin"])).permits)
    #expect(try await engine.decide(request("tokens.manage", subject: "cli:someone")).permits)
  }

  @Test func reloadIsAtomicAndKeepsTheLastGoodPolicy() async throws {
    let directory = try TemporaryDirectory.make("nova-policy")
    let path = directory.appendingPathComponent("nova-policy.yaml").path
    try "rules:\n  - name: allow-read\n    effect: allow\n    actions: read\n".write(toFile: path, atomically: true, encoding: .utf8)
    let engine = try PolicyEngine(path: path)
    let first = engine.version
    #expect(try await engine.decide(request("read")).allowed)
    try "rules:\n  - name: deny-read\n    effect: deny\n    actions: read\n".write(toFile: path, atomically: true, encoding: .utf8)
    let swapped = try engine.reload()
    #expect(swapped.old == first && swapped.new != first)
    // The cached allow went with the old rules.
    let denied = try await engine.decide(request("read"))
    #expect(!denied.allowed && denied.source == .rule && denied.rule == "deny-read")
    try "rules:\n  - name: broken\n    effect: perhaps\n".write(toFile: path, atomically: true, encoding: .utf8)
    #expect(throws: PolicyFileError.self) { try engine.reload() }
    #expect(engine.version == swapped.new)
    #expect(!(try await engine.decide(request("read")).allowed))
  }

  @Test func driftComparesWithTheApprovedBaseline() throws {
    let engine = PolicyEngine(document: .builtIn)
    #expect(!engine.drift(from: PolicyBaseline(policyVersion: engine.version, opaRevision: nil)).drifted)
    let drift = engine.drift(from: PolicyBaseline(policyVersion: "0000000000000000", opaRevision: "r1"))
    #expect(drift.drifted && drift.differences.count == 2)
    let encoded = try JSONEncoder().encode(PolicyBaseline(policyVersion: "v", opaRevision: nil))
    #expect(String(decoding: encoded, as: UTF8.self).contains("policy_version"))
  }

  @Test func cacheKeysIgnoreOrderButNotContent() {
    var a = request("submit", roles: ["b", "a"], attributes: ["x": "1", "y": "2"])
    var b = request("submit", roles: ["a", "b"], attributes: ["y": "2", "x": "1"])
    a.time = Date(timeIntervalSince1970: 0)
    b.time = Date(timeIntervalSince1970: 99)
    #expect(a.cacheKey == b.cacheKey)
    #expect(a.cacheKey != request("submit", roles: ["a"], attributes: ["x": "1", "y": "2"]).cacheKey)
    #expect(request("a", attributes: ["k": "v"]).cacheKey != request("a", attributes: ["kv": ""]).cacheKey)
  }
}

final class RecordingRecorder: DecisionRecorder {
  private let stored = Mutex<[(PolicyDecision, PolicyRequest)]>([])
  func record(_ decision: PolicyDecision, for request: PolicyRequest) async {
    stored.withLock { $0.append((decision, request)) }
  }
  var decisions: [(PolicyDecision, PolicyRequest)] { stored.withLock { $0 } }
}
