import Foundation
import NovaCore
import NovaQueue
import Synchronization

/// The leases this server handed to HTTP workers, by job: a report names only the job and its
/// lease token, and the book gives back the job as it was claimed (its queue, kind and attempt,
/// which the policy decision and the audit record need) without reading the store. A report for
/// a lease the book does not hold (another server handed it out, or this one restarted) reads the
/// job instead; the store's fencing check decides either way.
final class LeaseBook: Sendable {
  /// A lease handed out and how long it was claimed for (what a heartbeat extends it by, unless told).
  private struct Entry {
    var lease: JobLease
    var duration: Duration
  }

  private struct State {
    var entries: [JobID: Entry] = [:]
    var insertsSinceSweep = 0

    /// The entry of `id` when it holds `token`.
    func entry(_ id: JobID, token: Int64) -> Entry? {
      guard let entry = entries[id], entry.lease.token == token else { return nil }
      return entry
    }
  }

  private let state = Mutex(State())
  /// Leases kept this long past their expiry (a late report still finds its job).
  private let slack: Duration = .seconds(60)

  /// Records leases just handed out; now and then drops those long expired, so that leases of
  /// workers that died do not pile up.
  func insert(_ leases: [JobLease], duration: Duration, now: Date) {
    let cutoff = now.addingTimeInterval(-slack.seconds)
    state.withLock { state in
      for lease in leases { state.entries[lease.id] = Entry(lease: lease, duration: duration) }
      state.insertsSinceSweep += leases.count
      if state.insertsSinceSweep >= 4096 {
        state.insertsSinceSweep = 0
        state.entries = state.entries.filter { $0.value.lease.expiresAt > cutoff }
      }
    }
  }

  /// The length the lease on `id` with `token` was claimed for, when this server handed it out.
  func duration(_ id: JobID, token: Int64) -> Duration? {
    state.withLock { $0.entry(id, token: token)?.duration }
  }

  /// The lease on `id` with `token`, when this server handed it out.
  func lease(_ id: JobID, token: Int64) -> JobLease? {
    state.withLock { $0.entry(id, token: token)?.lease }
  }

  /// Moves a lease's expiry after a heartbeat.
  func extend(_ id: JobID, token: Int64, to expiresAt: Date) {
    state.withLock { state in
      if state.entry(id, token: token) != nil { state.entries[id]?.lease.expiresAt = expiresAt }
    }
  }

  /// Forgets leases that ended (recorded, failed, released or lost).
  func remove(_ ids: some Sequence<(JobID, Int64)>) {
    state.withLock { state in
      for (id, token) in ids where state.entry(id, token: token) != nil { state.entries[id] = nil }
    }
  }

  /// How many leases the book holds.
  var count: Int { state.withLock { $0.entries.count } }
}
