import Foundation
import NovaCore
import NovaPolicy
import NovaQueue
import NovaSecurity
import Synchronization

/// What an HTTP worker asks for in `POST /v1/workers/claim`, checked.
public struct WorkerClaim: Sendable, Equatable {
  /// The lease owner's name, as the worker gives it (`gpu-host-3/pid-77`).
  public var worker: String
  public var queues: [String]
  public var kinds: JobKindFilter
  /// At most this many jobs (1...`maxLimit`).
  public var limit: Int
  public var leaseDuration: Duration
  /// How long to wait for work when none is there (0...`maxWait`).
  public var wait: Duration
  /// What the worker has free now; without it, it gets only jobs that ask for nothing.
  public var capacity: HostCapacity?
  /// All its host offers, free or not: shown in the registry, and what a starving large job
  /// may reserve this host for (nil: the worker does not say, and reserves nothing).
  public var hostCapacity: HostCapacity?

  /// The largest `max` a claim may ask for.
  public static let maxLimit = 1000
  /// The longest lease a claim may ask for.
  public static let maxLease: Duration = .seconds(3600)
  /// The longest a claim may wait.
  public static let maxWait: Duration = .seconds(60)

  /// Checks every field; errors name it.
  public init(
    worker: String, queues: [String] = ["default"], kinds: [String]? = nil, limit: Int = 1, leaseSeconds: Double = 60,
    waitSeconds: Double = 0, capacity: HostCapacity? = nil, hostCapacity: HostCapacity? = nil
  ) throws(NovaError) {
    guard !worker.isEmpty, worker.utf8.count <= 200, !worker.contains(where: \.isNewline) else {
      throw .invalidInput(field: "worker", message: "must be 1 to 200 characters on one line")
    }
    guard !queues.isEmpty, queues.count <= 100 else {
      throw .invalidInput(field: "queues", message: "give 1 to 100 queue names")
    }
    for queue in queues { try JobRequest.validateName(queue, field: "queues") }
    guard (1...Self.maxLimit).contains(limit) else {
      throw .invalidInput(field: "max", message: "\(limit) is out of range 1...\(Self.maxLimit)")
    }
    guard leaseSeconds.isFinite, leaseSeconds >= 1, leaseSeconds <= Self.maxLease.seconds else {
      throw .invalidInput(field: "lease_seconds", message: "\(leaseSeconds) is out of range 1...\(Int(Self.maxLease.seconds))")
    }
    guard waitSeconds.isFinite, waitSeconds >= 0, waitSeconds <= Self.maxWait.seconds else {
      throw .invalidInput(field: "wait_seconds", message: "\(waitSeconds) is out of range 0...\(Int(Self.maxWait.seconds))")
    }
    if let kinds, kinds.isEmpty || kinds.count > 100 {
      throw .invalidInput(field: "kinds", message: "give 1 to 100 kind names or patterns, or leave it out for every kind")
    }
    self.worker = worker
    self.queues = queues
    self.kinds = try kinds.map { names throws(NovaError) in try JobKindFilter(names) } ?? .all
    self.limit = limit
    self.leaseDuration = .seconds(leaseSeconds)
    self.wait = .seconds(waitSeconds)
    if let hostCapacity {
      // What is free is part of what the host has: the same host, no GPU it lacks, no more CPUs
      // or memory.
      guard let capacity else {
        throw .invalidInput(field: "capacity", message: "give what is free as well as host_capacity")
      }
      guard capacity.host == hostCapacity.host else {
        throw .invalidInput(
          field: "capacity.host", message: "'\(capacity.host)' is not host_capacity's host '\(hostCapacity.host)'")
      }
      let indices = Set(hostCapacity.gpus.map(\.index))
      if let gpu = capacity.gpus.first(where: { !indices.contains($0.index) }) {
        throw .invalidInput(field: "capacity.gpus", message: "GPU \(gpu.index) is free but not in host_capacity")
      }
      guard capacity.cpus <= hostCapacity.cpus, capacity.memory_mib <= hostCapacity.memory_mib else {
        throw .invalidInput(field: "capacity", message: "more CPUs or memory free than host_capacity has")
      }
    }
    self.capacity = capacity
    self.hostCapacity = hostCapacity
  }
}

/// A report on one claimed job: the job and the lease token its claim returned.
public struct LeaseReference: Sendable, Equatable, Hashable {
  public var id: JobID
  /// The sealed token, as `WorkerActions.token(of:)` gave it.
  public var lease: String

  public init(id: JobID, lease: String) {
    self.id = id
    self.lease = lease
  }
}

/// The actions of workers that claim over HTTP, written once for every adapter: claim (waiting
/// for work when asked), heartbeat, complete, fail and release. Each is decided by the policy
/// (`claim` on each queue, `report` once per queue and kind of the jobs reported on) and the
/// store records the transitions under the caller's name, exactly as for in-process workers.
/// A lease that is stale or belongs to another job changes nothing and reports `lost`.
public final class WorkerActions: Sendable {
  public let queue: any JobQueue
  public let policy: PolicyEngine?
  let longPoll: ClaimLongPoll
  let book = LeaseBook()
  let clock: any NovaClock
  let seal: LeaseSeal
  /// Workers announced, by name: the token that announced them, when, and what they had free.
  private let announced = Mutex<[String: (holder: String, time: Date, first: Date, free: HostCapacity?)]>([:])
  /// Claims waiting now, by token.
  private let waiting = Mutex<[String: Int]>([:])
  public let limits: Limits

  /// What one API token may hold at once.
  public struct Limits: Sendable {
    /// Claims waiting for work at the same time.
    public var waitingClaimsPerToken: Int
    /// Distinct worker names announced within a minute.
    public var presencesPerToken: Int

    public init(waitingClaimsPerToken: Int = 256, presencesPerToken: Int = 1000) {
      self.waitingClaimsPerToken = waitingClaimsPerToken
      self.presencesPerToken = presencesPerToken
    }
  }

  /// A claim refused because its token holds too much already (HTTP 429).
  public enum Refusal: Error, CustomStringConvertible, Sendable {
    case tooManyWaitingClaims(holder: String, limit: Int)
    case tooManyWorkers(holder: String, limit: Int)

    public var description: String {
      switch self {
      case .tooManyWaitingClaims(let holder, let limit):
        "\(holder.isEmpty ? "this caller" : holder) already has \(limit) claims waiting; wait for one to be answered"
      case .tooManyWorkers(let holder, let limit):
        "\(holder.isEmpty ? "this caller" : holder) announced \(limit) workers in the last minute; reuse worker names"
      }
    }
  }

  /// The kinds jobs may have, so that a claim is decided per kind (nil: per queue only).
  let registry: LiveJobRegistry?
  /// How long a job that asks for something may be passed over before a worker that sends its
  /// host's capacity reserves its host for it (nil: never).
  let reserveAfter: Duration?

  /// Actions over `queue`, decided by `policy` (nil: none), handing out leases sealed by `seal`;
  /// with `registry`, each claim is decided on every kind it could receive.
  public init(
    queue: any JobQueue, policy: PolicyEngine?, seal: LeaseSeal = LeaseSeal(), registry: LiveJobRegistry? = nil,
    limits: Limits = Limits(), clock: any NovaClock = SystemClock(), reserveAfter: Duration? = nil
  ) {
    self.limits = limits
    self.reserveAfter = reserveAfter
    self.queue = queue
    self.policy = policy
    self.seal = seal
    self.registry = registry
    self.clock = clock
    self.longPoll = ClaimLongPoll(queue: queue, clock: clock)
  }

  /// The token a worker is given for `lease`: only it, presented by the same API token that
  /// claimed it, opens reports on that job.
  public func token(of lease: JobLease, for caller: Caller?) -> String {
    seal.seal(id: lease.id.rawValue, token: lease.token, holder: Self.holder(caller))
  }

  /// What a lease is bound to: the caller's policy subject (`token:<name>`).
  static func holder(_ caller: Caller?) -> String { caller?.subject.id ?? "" }

  /// How many claims wait for work now.
  public var waitingClaims: Int { longPoll.waiting }

  /// Answers every waiting claim now, empty (on shutdown).
  public func endWaitingClaims() { longPoll.endWaiting() }

  /// How many HTTP leases this server remembers.
  var bookedLeases: Int { book.count }

  /// Leases up to `claim.limit` jobs, all started (their attempts count); waits up to
  /// `claim.wait` when none is available.
  public func claim(_ claim: WorkerClaim, by caller: Caller?) async throws -> [JobLease] {
    for queueName in claim.queues {
      try await JobActions.authorize(policy, caller, "claim", PolicyResource(kind: "queue", id: queueName, attributes: ["queue": queueName]))
    }
    let kinds = try await permittedKinds(claim, by: caller)
    let holder = Self.holder(caller)
    try await announce(claim, holder: holder)
    let request = ClaimRequest(
      queues: claim.queues, kinds: kinds, worker: claim.worker, leaseDuration: claim.leaseDuration, limit: claim.limit,
      capacity: claim.capacity, totalCapacity: claim.hostCapacity, reserveAfter: claim.hostCapacity == nil ? nil : reserveAfter)
    // Each waiting claim holds a connection and a waiter: one token may not hold them all.
    if claim.wait > .zero {
      let admitted = waiting.withLock { waiting -> Bool in
        guard waiting[holder, default: 0] < limits.waitingClaimsPerToken else { return false }
        waiting[holder, default: 0] += 1
        return true
      }
      guard admitted else { throw Refusal.tooManyWaitingClaims(holder: holder, limit: limits.waitingClaimsPerToken) }
    }
    defer {
      if claim.wait > .zero {
        waiting.withLock { waiting in
          waiting[holder, default: 1] -= 1
          if waiting[holder] == 0 { waiting[holder] = nil }
        }
      }
    }
    let leases = try await longPoll.claim(request, wait: claim.wait)
    if Task.isCancelled, !leases.isEmpty {
      // The client went away while its jobs were being claimed: nobody would run them.
      _ = try? await queue.release(batch: leases)
      return []
    }
    book.insert(leases, duration: claim.leaseDuration, now: clock.now())
    return leases
  }

  /// Extends leases by `leaseDuration`, or by the length each was claimed for (60 s when this
  /// server did not hand it out); per job, the new expiry, `cancelled` (stop working on it) or `lost`.
  public func heartbeat(_ references: [LeaseReference], leaseDuration: Duration?, by caller: Caller?) async throws -> [JobID:
    HeartbeatOutcome]
  {
    let (resolved, missing) = try await resolve(references, action: "report", by: caller)
    var outcomes: [JobID: HeartbeatOutcome] = [:]
    // An attempt past its kind's timeout is failed instead of extended, and its worker told to
    // stop: a hung external handler cannot hold a job by heartbeating forever.
    var leases: [JobLease] = []
    for lease in resolved {
      guard let timeout = registry?.current.externalTimeout(lease.job.kind), let started = lease.job.startedAt,
        clock.now().timeIntervalSince(started) > timeout.seconds
      else {
        leases.append(lease)
        continue
      }
      _ = try? await queue.fail(
        lease, error: "timed out after \(timeout.seconds.formatted()) s (the \(lease.job.kind) timeout)", retryable: true, retryIn: nil)
      book.remove([(lease.id, lease.token)])
      outcomes[lease.id] = .cancelled
    }
    let byDuration = Dictionary(grouping: leases) { leaseDuration ?? book.duration($0.id, token: $0.token) ?? .seconds(60) }
    for (duration, group) in byDuration {
      outcomes.merge(try await queue.heartbeat(group, leaseDuration: duration)) { $1 }
    }
    for lease in leases {
      switch outcomes[lease.id] ?? .lost {
      case .extended(let expiry): book.extend(lease.id, token: lease.token, to: expiry)
      case .cancelled, .lost: book.remove([(lease.id, lease.token)])
      }
    }
    for reference in missing where outcomes[reference.id] == nil { outcomes[reference.id] = .lost }
    return outcomes
  }

  /// Records successes; per entry, in order, true when recorded (now or by an earlier call with
  /// the same lease) and false when the lease was lost.
  public func complete(_ entries: [(LeaseReference, Data?)], by caller: Caller?) async throws -> [Bool] {
    let (leases, _) = try await resolve(entries.map(\.0), action: "report", by: caller)
    let byID = Dictionary(leases.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
    var completions: [JobCompletion] = []
    var positions: [Int] = []
    for (index, entry) in entries.enumerated() {
      guard let lease = byID[entry.0.id], seal.open(entry.0.lease, id: entry.0.id.rawValue, holder: Self.holder(caller)) == lease.token
      else { continue }
      completions.append(JobCompletion(lease: lease, result: entry.1))
      positions.append(index)
    }
    var answers = Array(repeating: false, count: entries.count)
    if !completions.isEmpty {
      for (position, recorded) in zip(positions, try await queue.complete(batch: completions)) { answers[position] = recorded }
    }
    book.remove(leases.map { ($0.id, $0.token) })
    return answers
  }

  /// Records a failed attempt: retried after `retryIn` (nil: the retry policy's backoff) or
  /// dead-lettered. Throws `leaseLost` when the lease is stale or foreign.
  public func fail(_ reference: LeaseReference, error: String, retryable: Bool, retryIn: Duration?, by caller: Caller?)
    async throws -> FailOutcome
  {
    let (leases, _) = try await resolve([reference], action: "report", by: caller)
    guard let lease = leases.first else { throw NovaError.leaseLost(reference.id) }
    let outcome = try await queue.fail(lease, error: error, retryable: retryable, retryIn: retryIn)
    book.remove([(lease.id, lease.token)])
    return outcome
  }

  /// Gives jobs back without counting their attempts (a stopping worker); returns how many.
  public func release(_ references: [LeaseReference], by caller: Caller?) async throws -> Int {
    let (leases, _) = try await resolve(references, action: "report", by: caller)
    let released = leases.isEmpty ? 0 : try await queue.release(batch: leases)
    book.remove(leases.map { ($0.id, $0.token) })
    return released
  }

  /// The leases named, as claimed (from the book, else from the store), after one policy
  /// decision per queue and kind among them; references whose token does not open for their
  /// job (stale tokens open; forged or foreign ones do not) or whose job is gone come back as
  /// missing.
  private func resolve(_ references: [LeaseReference], action: String, by caller: Caller?) async throws -> (
    leases: [JobLease], missing: [LeaseReference]
  ) {
    var leases: [JobLease] = []
    var missing: [LeaseReference] = []
    // The queue and kind of every job named, decided on even when its lease does not hold, so a
    // caller without the right is refused (403) before it learns anything of leases (409).
    var resources: [[String]] = []
    leases.reserveCapacity(references.count)
    for reference in references {
      guard let token = seal.open(reference.lease, id: reference.id.rawValue, holder: Self.holder(caller)) else {
        missing.append(reference)
        if let job = try await queue.get(reference.id) { resources.append([job.queue, job.kind]) }
        continue
      }
      if let lease = book.lease(reference.id, token: token) {
        leases.append(lease)
      } else if let job = try await queue.get(reference.id) {
        // Not in the book (the server restarted): the store's fencing check decides whether the token still holds.
        leases.append(JobLease(job: job, token: token, worker: job.leaseOwner ?? "", expiresAt: job.leaseExpiresAt ?? clock.now()))
      } else {
        missing.append(reference)
      }
    }
    try await JobActions.authorize(policy, caller, action, jobs: leases.map { [$0.job.queue, $0.job.kind] } + resources)
    return (leases, missing)
  }

  /// The claim's kind filter narrowed to the kinds the policy lets `caller` claim in every queue
  /// of the claim (the resource carries `job_kind`): a worker never receives the payload of a
  /// job it may not report on. Throws 403 when no kind is left.
  private func permittedKinds(_ claim: WorkerClaim, by caller: Caller?) async throws -> JobKindFilter {
    // Only a policy that looks at `job_kind` can decide kinds apart; otherwise every kind's
    // decision is the queue's, already made (and each decision is an audit entry, every claim).
    guard let policy, let caller, let registry, policy.consults(attribute: "job_kind", action: "claim") else { return claim.kinds }
    var permitted: [String] = []
    var refused: [String] = []
    for kind in registry.current.kinds where claim.kinds.matches(kind) {
      var allowed = true
      for queueName in claim.queues where allowed {
        let decision = try await policy.decide(
          PolicyRequest(
            subject: caller.subject, action: "claim",
            resource: PolicyResource(kind: "queue", id: queueName, attributes: ["queue": queueName, "job_kind": kind]),
            source: caller.source))
        allowed = decision.permits
      }
      if allowed { permitted.append(kind) } else { refused.append(kind) }
    }
    if refused.isEmpty { return claim.kinds }
    guard !permitted.isEmpty else {
      throw NovaError.forbidden(
        "\(caller.subject.id) may claim none of the kinds \(refused.joined(separator: ", ")) in \(claim.queues.joined(separator: ", "))")
    }
    return JobKindFilter(exactly: permitted)
  }

  /// Announces the worker (at most every 10 s per name), so that stats count its kinds as taken;
  /// a token may announce at most `limits.presencesPerToken` workers a minute.
  private func announce(_ claim: WorkerClaim, holder: String) async throws {
    let now = clock.now()
    let limit = limits.presencesPerToken
    let first = try announced.withLock { announced throws(Refusal) -> Date? in
      // A worker whose free capacity changed is announced again at once: the registry shows
      // what it has free.
      if let last = announced[claim.worker], now.timeIntervalSince(last.time) < 10, claim.capacity == last.free { return nil }
      if announced[claim.worker] == nil {
        let recent = announced.values.lazy.filter { $0.holder == holder && now.timeIntervalSince($0.time) < 60 }.count
        guard recent < limit else { throw Refusal.tooManyWorkers(holder: holder, limit: limit) }
      }
      let first = announced[claim.worker]?.first ?? now
      announced[claim.worker] = (holder, now, first, claim.capacity)
      if announced.count > 10_000 { announced = announced.filter { now.timeIntervalSince($0.value.time) < 60 } }
      return first
    }
    guard let first else { return }
    let lapses = now.addingTimeInterval(max(30, claim.wait.seconds + 30))
    try await queue.announce(
      WorkerPresence(
        worker: claim.worker, queues: claim.queues, kinds: claim.kinds.patterns, expiresAt: lapses, host: claim.capacity?.host,
        startedAt: first, lastSeen: now, capacity: claim.hostCapacity, free: claim.capacity))
  }

}
