import Foundation
import NovaCore
import NovaPolicy
import NovaTestSupport
import Testing

@Suite("Decision caches and the circuit breaker", .timeLimit(.minutes(5)))
struct DecisionCacheTests {
  func decision(_ allowed: Bool, _ rule: String) -> PolicyDecision {
    PolicyDecision(allowed: allowed, reason: rule, source: .rule, rule: rule, policyVersion: "v")
  }

  @Test func entriesLiveForTheirTTLAndThenOnlyAsStale() {
    let cache = DecisionCache(name: "test", capacity: 10, ttl: .seconds(5), shards: 1)
    let key = request("read").cacheKey
    cache.store(key, decision(true, "r"), now: 1_000)
    #expect(cache.lookup(key, now: 1_000 + 4_000_000_000)?.fresh == true)
    #expect(cache.lookup(key, now: 1_000 + 6_000_000_000) == nil)
    let stale = cache.lookup(key, now: 1_000 + 6_000_000_000, staleFor: 2_000_000_000)
    #expect(stale?.fresh == false && stale?.decision.rule == "r" && stale?.ageNanoseconds == 6_000_000_000)
    #expect(cache.lookup(key, now: 1_000 + 8_000_000_000, staleFor: 2_000_000_000) == nil)
  }

  @Test func theLeastRecentlyUsedEntryGoesFirst() {
    let cache = DecisionCache(name: "test", capacity: 3, ttl: .seconds(60), shards: 1)
    let keys = (0..<4).map { request("a\($0)").cacheKey }
    for (index, key) in keys.prefix(3).enumerated() { cache.store(key, decision(true, "\(index)"), now: 0) }
    _ = cache.lookup(keys[0], now: 1)  // 0 is now the most recent; 1 the least
    cache.store(keys[3], decision(true, "3"), now: 2)
    #expect(cache.count == 3)
    #expect(cache.lookup(keys[1], now: 3) == nil)
    #expect(cache.lookup(keys[0], now: 3)?.decision.rule == "0")
    #expect(cache.lookup(keys[3], now: 3)?.decision.rule == "3")
    cache.store(keys[3], decision(false, "3b"), now: 4)
    #expect(cache.lookup(keys[3], now: 5)?.decision.rule == "3b" && cache.count == 3)
    cache.clear()
    #expect(cache.count == 0 && cache.lookup(keys[0], now: 6) == nil)
    let none = DecisionCache(name: "test", capacity: 0, ttl: .seconds(1))
    none.store(keys[0], decision(true, "x"), now: 0)
    #expect(none.lookup(keys[0], now: 0) == nil)
  }

  @Test func shardedCachesHoldTheirCapacity() {
    let cache = DecisionCache(name: "test", capacity: 1000, ttl: .seconds(60), shards: 16)
    for index in 0..<5000 { cache.store(request("a\(index)").cacheKey, decision(true, "r"), now: 0) }
    #expect(cache.count <= 16 * 63 && cache.count >= 900)
  }

  @Test func allowAndDenyCachesExpireOnTheirOwnClock() async throws {
    let clock = TestClock()
    var document = try PolicyDocument.parse(
      "rules:\n  - name: read\n    effect: allow\n    actions: read\n  - name: no-submit\n    effect: deny\n    actions: submit\n", file: "p")
    document.cache.allowTTL = .seconds(60)
    document.cache.denyTTL = .seconds(5)
    let engine = PolicyEngine(document: document, clock: clock)
    _ = try await engine.decide(request("read"))
    _ = try await engine.decide(request("submit"))
    clock.advance(by: .seconds(10))
    #expect(try await engine.decide(request("read")).source == .cache)
    #expect(try await engine.decide(request("submit")).source == .rule)
    clock.advance(by: .seconds(61))
    #expect(try await engine.decide(request("read")).source == .rule)
  }

  @Test func theBreakerOpensCoolsDownAndProbes() {
    let breaker = CircuitBreaker(threshold: 2, cooldown: .seconds(1))
    #expect(breaker.allows(now: 0))
    breaker.recordFailure(now: 0)
    #expect(breaker.current == .closed(failures: 1) && breaker.allows(now: 0))
    breaker.recordFailure(now: 0)
    #expect(!breaker.allows(now: 500_000_000))
    #expect(breaker.allows(now: 1_000_000_000))  // the probe
    #expect(!breaker.allows(now: 1_000_000_001))  // only one
    breaker.recordFailure(now: 1_000_000_002)
    #expect(!breaker.allows(now: 1_500_000_000))
    #expect(breaker.allows(now: 2_000_000_002))
    breaker.recordSuccess()
    #expect(breaker.current == .closed(failures: 0) && breaker.allows(now: 2_000_000_003))
  }
}
