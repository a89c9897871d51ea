import Foundation
import NovaCore
import NovaPolicy
import NovaTestSupport
import Testing

/// The engine against real Rego, evaluated by the Go OPA engine behind OPA's REST API.
@Suite("OPA fallback against real Rego", .enabled(if: TestServers.opaAvailable, TestServers.opaMissing), .timeLimit(.minutes(5)))
struct OPAIntegrationTests {
  static let rego = """
    package nova.authz

    default allow := false

    allow if {
      input.subject.roles[_] == "trainer"
      input.action == "submit"
      glob.match("train.*", [], input.resource.attributes.job_kind)
    }

    maybe if input.subject.id == "agent:trainer"

    label := "yes"

    conflict := 1 if input.action == "x"
    conflict := 2 if input.action == "x"
    """

  /// An engine asking `server`; the timeout is generous (a loaded test machine) except where a
  /// test is about timeouts.
  func engine(
    _ server: OPATestServer, path: String = "nova/authz/allow", mode: String = "fail-closed", timeoutMS: Int = 3000, clock: TestClock = TestClock()
  ) throws -> PolicyEngine {
    let yaml = """
      rules:
        - name: local-admins
          effect: allow
          roles: admin
      opa:
        url: \(server.url)
        path: \(path)
        timeout_ms: \(timeoutMS)
        on_error: \(mode)
        breaker_failures: 2
        breaker_cooldown_seconds: 30
      """
    return PolicyEngine(document: try PolicyDocument.parse(yaml, file: "test"), clock: clock)
  }

  let trainer = request("submit", subject: "agent:trainer", roles: ["trainer"], attributes: ["queue": "gpu", "job_kind": "train.llama"])

  /// Issue #13 point 6: OPA sees the source address, so a decision allowed for one address is
  /// never served from the cache to another.
  @Test func cachedDecisionsAreKeptPerSourceAddress() async throws {
    let server = try OPATestServer(policies: [
      "authz.rego": Self.rego + "\nfrom_office if input.context.source == \"10.0.0.1\"\n"
    ])
    defer { server.stop() }
    let engine = try engine(server, path: "nova/authz/from_office")
    func ask(_ source: String?) -> PolicyRequest {
      var question = request("read", subject: "agent:x", roles: ["viewer"])
      question.source = source
      return question
    }
    let office = try await engine.decide(ask("10.0.0.1"))
    #expect(office.allowed && office.source == .opa)
    #expect(try await engine.decide(ask("10.0.0.1")).source == .cache)
    let elsewhere = try await engine.decide(ask("203.0.113.9"))
    #expect(!elsewhere.allowed && elsewhere.source == .opa, "\(elsewhere)")
    let unknown = try await engine.decide(ask(nil))
    #expect(!unknown.allowed && unknown.source == .opa)
    #expect(ask("a").cacheKey(withContext: true) != ask("b").cacheKey(withContext: true))
    #expect(ask("a").cacheKey == ask("b").cacheKey)
  }

  @Test func realRegoAllowsDeniesAndIsUndefined() async throws {
    let server = try OPATestServer(policies: ["authz.rego": Self.rego])
    defer { server.stop() }
    let engine = try engine(server)
    let allowed = try await engine.decide(trainer)
    #expect(allowed.allowed && allowed.source == .opa && allowed.reason.contains("data.nova.authz.allow is true"))
    #expect(allowed.opaRevision?.count == 16 && engine.opaRevision == allowed.opaRevision)
    let denied = try await engine.decide(request("submit", roles: ["trainer"], attributes: ["job_kind": "eval.x"]))
    #expect(!denied.allowed && denied.source == .opa && denied.reason.contains("is false"))
    // A local rule decides first; OPA is not asked.
    #expect(try await engine.decide(request("anything", roles: ["admin"])).source == .rule)
    #expect(try await engine.decide(trainer).source == .cache)

    let undefined = try await self.engine(server, path: "nova/authz/maybe").decide(request("read", subject: "someone"))
    #expect(!undefined.allowed && undefined.source == .opa && undefined.reason.contains("undefined"))
    let defined = try await self.engine(server, path: "nova/authz/maybe").decide(request("read", subject: "agent:trainer"))
    #expect(defined.allowed)
    let label = try await self.engine(server, path: "nova/authz/label").decide(request("read"))
    #expect(!label.allowed && label.reason.contains("non-boolean result"))
    let conflict = try await self.engine(server, path: "nova/authz/conflict").decide(request("x"))
    #expect(!conflict.allowed && conflict.source == .fallback && conflict.reason.contains("HTTP 500"), "\(conflict.reason)")
  }

  @Test func aSlowOPATripsTheTimeoutThenTheBreaker() async throws {
    let server = try OPATestServer(policies: ["authz.rego": Self.rego], delayMilliseconds: 1500)
    defer { server.stop() }
    let engine = try engine(server, timeoutMS: 300)
    for _ in 0..<2 {
      let slow = try await engine.decide(trainer)
      #expect(!slow.allowed && slow.source == .fallback && slow.fallback == "fail-closed")
      // The query times out; on a loaded machine the health check before it (same 300 ms
      // bound) may be what times out first. Either way OPA is too slow, and the breaker counts it.
      #expect(slow.reason.contains("did not answer within") || slow.reason.contains("/health is not ok"), "\(slow.reason)")
    }
    let start = ContinuousClock.now
    let open = try await engine.decide(trainer)
    #expect(open.reason.contains("circuit breaker open") && ContinuousClock.now - start < .milliseconds(100), "\(open.reason)")
  }

  @Test func whenOPAIsDownEachFallbackModeDecides() async throws {
    let server = try OPATestServer(policies: ["authz.rego": Self.rego])
    defer { server.stop() }
    let clock = TestClock()
    let closed = try engine(server, clock: clock)
    let stale = try engine(server, mode: "stale-if-error\n  stale_max_age_seconds: 600", clock: clock)
    let open = try engine(server, mode: "fail-open\n  fail_open_actions: [read, submit]", clock: clock)
    for engine in [closed, stale, open] { #expect(try await engine.decide(trainer).allowed) }
    server.stop()
    clock.advance(by: .seconds(120))  // past the allow cache's 60 s

    let failClosed = try await closed.decide(trainer)
    #expect(!failClosed.allowed && failClosed.fallback == "fail-closed" && failClosed.reason.contains("OPA unavailable"))
    let served = try await stale.decide(trainer)
    #expect(served.allowed && served.source == .fallback && served.fallback == "stale-if-error", "\(served.reason)")
    #expect(served.reason.contains("stale decision from 120 s ago"))
    let neverSeen = try await stale.decide(request("submit", subject: "new", roles: ["trainer"], attributes: ["job_kind": "train.x"]))
    #expect(!neverSeen.allowed && neverSeen.reason.contains("no earlier decision"))
    #expect(try await open.decide(request("read", subject: "x")).allowed)
    let notCovered = try await open.decide(request("cancel", subject: "x"))
    #expect(!notCovered.allowed && notCovered.reason.contains("does not cover cancel"))
  }

  @Test func aRestartedOPAWithNewRulesClearsTheCachesAndIsRecorded() async throws {
    let server = try OPATestServer(policies: ["authz.rego": Self.rego])
    defer { server.stop() }
    let engine = try engine(server)
    let before = try await engine.decide(trainer)
    #expect(before.allowed)
    server.stop()
    try server.write(["authz.rego": Self.rego.replacingOccurrences(of: "\"train.*\"", with: "\"none.*\"")])
    try server.start()
    // Another question reaches OPA, which reports a new revision: earlier answers are dropped.
    _ = try await engine.decide(request("submit", subject: "other", roles: ["trainer"], attributes: ["job_kind": "x"]))
    let after = try await engine.decide(trainer)
    #expect(!after.allowed && after.source == .opa && after.opaRevision != before.opaRevision, "\(after)")
  }
}
