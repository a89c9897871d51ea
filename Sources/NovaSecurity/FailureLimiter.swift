import Foundation
import Synchronization

/// Failed authentications per key (an address, a token id) in a sliding window. The table has
/// a fixed capacity and evicts the least recently used key when full: it never wipes, so an
/// attacker spraying addresses cannot reset the count of the one that matters, and its memory
/// is bounded. Every update happens under one lock, so concurrent failures are all counted.
final class FailureLimiter: Sendable {
  /// What one failure leads to.
  struct Outcome: Equatable {
    /// Seconds to wait, when a key is over its limit (answer 429).
    var retryAfter: Int?
    /// Failures of the address to write in one audit entry now; nil while the address's last
    /// entry is less than a minute old.
    var auditCount: Int?
  }

  private struct Entry {
    var key: String
    /// Times of the latest failures, at most `maxFailures + 1`, oldest first.
    var times: [Date] = []
    /// Failures since the key's last audit entry, and when that was written.
    var unaudited = 0
    var lastAudit: Date?
    var newer = -1
    var older = -1
  }

  /// The entries in a recency list (`newest` first), addressed by slot.
  private struct Table {
    var slots: [Entry] = []
    var index: [String: Int] = [:]
    var newest = -1
    var oldest = -1

    mutating func unlink(_ slot: Int) {
      let (newer, older) = (slots[slot].newer, slots[slot].older)
      if newer >= 0 { slots[newer].older = older } else { newest = older }
      if older >= 0 { slots[older].newer = newer } else { oldest = newer }
    }

    mutating func pushNewest(_ slot: Int) {
      slots[slot].newer = -1
      slots[slot].older = newest
      if newest >= 0 { slots[newest].newer = slot }
      newest = slot
      if oldest < 0 { oldest = slot }
    }

    /// The slot of `key`, made the most recent; a new key takes a free slot or the least
    /// recently used one.
    mutating func touch(_ key: String, capacity: Int) -> Int {
      if let slot = index[key] {
        unlink(slot)
        pushNewest(slot)
        return slot
      }
      let slot: Int
      if slots.count < capacity {
        slots.append(Entry(key: key))
        slot = slots.count - 1
      } else {
        slot = oldest
        unlink(slot)
        index[slots[slot].key] = nil
        slots[slot] = Entry(key: key)
      }
      index[key] = slot
      pushNewest(slot)
      return slot
    }
  }

  private let maxFailures: Int
  private let window: TimeInterval
  private let capacity: Int
  private let auditInterval: TimeInterval
  private let table = Mutex(Table())

  init(maxFailures: Int, window: TimeInterval, capacity: Int = 10_000, auditInterval: TimeInterval = 60) {
    self.maxFailures = maxFailures
    self.window = window
    self.capacity = max(1, capacity)
    self.auditInterval = auditInterval
  }

  /// The number of keys held (at most the capacity).
  var count: Int { table.withLock { $0.index.count } }

  /// Counts a failure against each of `keys` (the first is the address, whose audit entries
  /// are paced).
  func recordFailure(keys: [String], now: Date) -> Outcome {
    table.withLock { table in
      var outcome = Outcome()
      for (position, key) in keys.enumerated() {
        let slot = table.touch(key, capacity: capacity)
        var entry = table.slots[slot]
        entry.times.removeAll { now.timeIntervalSince($0) >= window }
        entry.times.append(now)
        if entry.times.count > maxFailures + 1 { entry.times.removeFirst(entry.times.count - maxFailures - 1) }
        if entry.times.count > maxFailures {
          let wait = max(1, Int((window - now.timeIntervalSince(entry.times[1])).rounded(.up)))
          outcome.retryAfter = max(outcome.retryAfter ?? 0, wait)
        }
        if position == 0 {
          entry.unaudited += 1
          if entry.lastAudit.map({ now.timeIntervalSince($0) >= auditInterval }) ?? true {
            outcome.auditCount = entry.unaudited
            entry.unaudited = 0
            entry.lastAudit = now
          }
        }
        table.slots[slot] = entry
      }
      return outcome
    }
  }
}
