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
  private struct State {
    var leases: [JobID: JobLease] = [:]
    /// How long each lease was claimed for (what a heartbeat extends it by, unless told).
    var durations: [JobID: Duration] = [:]
    var insertsSinceSweep = 0
  }

  private let state = Mutex(State())
  /// Leases kept this long past their expiry (a late report still finds its job).
  private let slack: Duration = .seconds(60)

  /// Records leases just handed out; now and then drops those long expired, so that leases of
  /// workers that died do not pile up.
  func insert(_ leases: [JobLease], duration: Duration, now: Date) {
    let cutoff = now.addingTimeInterval(-slack.seconds)
    state.withLock { state in
      for lease in leases {
        state.leases[lease.id] = lease
        state.durations[lease.id] = duration
      }
      state.insertsSinceSweep += leases.count
      if state.insertsSinceSweep >= 4096 {
        state.insertsSinceSweep = 0
        state.leases = state.leases.filter { $0.value.expiresAt > cutoff }
        state.durations = state.durations.filter { state.leases[$0.key] != nil }
      }
    }
  }

  /// The length the lease on `id` with `token` was claimed for, when this server handed it out.
  func duration(_ id: JobID, token: Int64) -> Duration? {
    state.withLock { state in state.leases[id]?.token == token ? state.durations[id] : nil }
  }

  /// The lease on `id` with `token`, when this server handed it out.
  func lease(_ id: JobID, token: Int64) -> JobLease? {
    state.withLock { state in
      guard let lease = state.leases[id], lease.token == token else { return nil }
      return lease
    }
  }

  /// Moves a lease's expiry after a heartbeat.
  func extend(_ id: JobID, token: Int64, to expiresAt: Date) {
    state.withLock { state in
      if state.leases[id]?.token == token { state.leases[id]?.expiresAt = expiresAt }
    }
  }

  /// Forgets leases that ended (recorded, failed, released or lost).
  func remove(_ ids: some Sequence<(JobID, Int64)>) {
    state.withLock { state in
      for (id, token) in ids where state.leases[id]?.token == token {
        state.leases[id] = nil
        state.durations[id] = nil
      }
    }
  }

  /// How many leases the book holds.
  var count: Int { state.withLock { $0.leases.count } }
}
