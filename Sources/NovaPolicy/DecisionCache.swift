import Metrics
import Synchronization

/// A bounded (LRU) decision cache with a time to live, split into shards with a lock each, so
/// that concurrent callers rarely meet on one lock. Expired entries stay until evicted, so that
/// `stale-if-error` can still serve them.
public final class DecisionCache: Sendable {
  struct Entry: Sendable {
    var key: DecisionKey
    var decision: PolicyDecision
    var storedAt: UInt64
    var newer: Int
    var older: Int
  }

  /// One shard: a dictionary into a doubly linked list kept in an array (no per-entry objects).
  struct Shard: Sendable {
    var index: [DecisionKey: Int] = [:]
    var entries: [Entry] = []
    var free: [Int] = []
    var newest = -1
    var oldest = -1

    mutating func unlink(_ slot: Int) {
      let entry = entries[slot]
      if entry.newer >= 0 { entries[entry.newer].older = entry.older } else { newest = entry.older }
      if entry.older >= 0 { entries[entry.older].newer = entry.newer } else { oldest = entry.newer }
    }

    mutating func pushNewest(_ slot: Int) {
      entries[slot].older = newest
      entries[slot].newer = -1
      if newest >= 0 { entries[newest].newer = slot }
      newest = slot
      if oldest < 0 { oldest = slot }
    }
  }

  /// What a lookup found.
  public struct Hit: Sendable {
    public var decision: PolicyDecision
    public var ageNanoseconds: UInt64
    public var fresh: Bool
  }

  /// A shard behind its own lock (a class: `Mutex` cannot be copied into an array).
  final class LockedShard: Sendable {
    let lock = Mutex(Shard())
    func withLock<T>(_ body: (inout Shard) -> T) -> T { lock.withLock { body(&$0) } }
  }

  private let shards: [LockedShard]
  private let perShard: Int
  private let ttl: UInt64
  private let hits: Counter
  private let misses: Counter
  private let evictions: Counter
  public let capacity: Int

  /// `name` labels its metrics (`allow` or `deny`).
  public init(name: String, capacity: Int, ttl: Duration, shards: Int = 16) {
    self.capacity = capacity
    let count = max(1, min(shards, capacity))
    self.perShard = capacity == 0 ? 0 : (capacity + count - 1) / count
    self.shards = (0..<count).map { _ in LockedShard() }
    self.ttl = ttl.nanoseconds
    hits = Counter(label: "nova_policy_cache_hits_total", dimensions: [("cache", name)])
    misses = Counter(label: "nova_policy_cache_misses_total", dimensions: [("cache", name)])
    evictions = Counter(label: "nova_policy_cache_evictions_total", dimensions: [("cache", name)])
  }

  /// The entry for `key`, fresh or (when `staleFor` allows) expired up to that long.
  public func lookup(_ key: DecisionKey, now: UInt64, staleFor: UInt64 = 0) -> Hit? {
    guard perShard > 0 else { return nil }
    let hit = shards[key.shard(of: shards.count)].withLock { shard -> Hit? in
      guard let slot = shard.index[key] else { return nil }
      let entry = shard.entries[slot]
      let age = now &- entry.storedAt
      let fresh = age <= ttl
      guard fresh || age <= ttl &+ staleFor else { return nil }
      if fresh && shard.newest != slot {
        shard.unlink(slot)
        shard.pushNewest(slot)
      }
      return Hit(decision: entry.decision, ageNanoseconds: age, fresh: fresh)
    }
    if hit?.fresh == true { hits.increment() } else if staleFor == 0 { misses.increment() }
    return hit
  }

  /// Stores a decision, evicting the least recently used entry of its shard when full.
  public func store(_ key: DecisionKey, _ decision: PolicyDecision, now: UInt64) {
    guard perShard > 0 else { return }
    let evicted = shards[key.shard(of: shards.count)].withLock { shard -> Bool in
      if let slot = shard.index[key] {
        shard.entries[slot].decision = decision
        shard.entries[slot].storedAt = now
        shard.unlink(slot)
        shard.pushNewest(slot)
        return false
      }
      var evicted = false
      let slot: Int
      if shard.index.count >= perShard {
        slot = shard.oldest
        shard.unlink(slot)
        shard.index[shard.entries[slot].key] = nil
        evicted = true
      } else if let reused = shard.free.popLast() {
        slot = reused
      } else {
        shard.entries.append(Entry(key: key, decision: decision, storedAt: now, newer: -1, older: -1))
        slot = shard.entries.count - 1
      }
      shard.entries[slot] = Entry(key: key, decision: decision, storedAt: now, newer: -1, older: -1)
      shard.index[key] = slot
      shard.pushNewest(slot)
      return evicted
    }
    if evicted { evictions.increment() }
  }

  /// Forgets everything (the rules changed).
  public func clear() {
    for shard in shards { shard.withLock { $0 = Shard() } }
  }

  /// Entries held now.
  public var count: Int { shards.reduce(0) { total, shard in total + shard.withLock { $0.index.count } } }
}
