import Foundation

/// A job as stored by a queue backend.
public struct Job: Sendable, Equatable {
  public var id: JobID
  public var queue: String
  public var kind: String
  /// The JSON payload, as the bytes that were enqueued.
  public var payload: Data
  public var priority: Int
  public var state: JobState
  /// When the job may run (its delay, or the end of its retry backoff).
  public var runAt: Date
  /// Claims so far; a claim counts as an attempt.
  public var attempts: Int
  public var maxAttempts: Int
  public var idempotencyKey: String?
  public var createdAt: Date
  public var updatedAt: Date
  public var startedAt: Date?
  public var finishedAt: Date?
  /// The JSON result of a succeeded job.
  public var result: Data?
  public var lastError: String?
  /// The worker holding the lease; after success, the worker that completed the job.
  public var leaseOwner: String?
  public var leaseExpiresAt: Date?
  /// Increases with every claim; a lease is valid only while its token matches.
  public var fencingToken: Int64
  /// What it asks of its host and where it may run; nil when it asks for nothing.
  public var requirements: JobRequirements?
  /// Where its current (or last) attempt was placed; nil when it asked for nothing.
  public var placement: JobPlacement?
  /// The key whose per-key limits it shares, if any.
  public var concurrencyKey: String?
  /// Its kind's per-key limits, as stored with it.
  public var keyLimits: KeyLimits?

  public init(
    id: JobID, queue: String, kind: String, payload: Data, priority: Int, state: JobState,
    runAt: Date, attempts: Int, maxAttempts: Int, idempotencyKey: String?, createdAt: Date,
    updatedAt: Date, startedAt: Date? = nil, finishedAt: Date? = nil, result: Data? = nil,
    lastError: String? = nil, leaseOwner: String? = nil, leaseExpiresAt: Date? = nil,
    fencingToken: Int64 = 0, requirements: JobRequirements? = nil, placement: JobPlacement? = nil,
    concurrencyKey: String? = nil, keyLimits: KeyLimits? = nil
  ) {
    self.id = id
    self.queue = queue
    self.kind = kind
    self.payload = payload
    self.priority = priority
    self.state = state
    self.runAt = runAt
    self.attempts = attempts
    self.maxAttempts = maxAttempts
    self.idempotencyKey = idempotencyKey
    self.createdAt = createdAt
    self.updatedAt = updatedAt
    self.startedAt = startedAt
    self.finishedAt = finishedAt
    self.result = result
    self.lastError = lastError
    self.leaseOwner = leaseOwner
    self.leaseExpiresAt = leaseExpiresAt
    self.fencingToken = fencingToken
    self.requirements = requirements
    self.placement = placement
    self.concurrencyKey = concurrencyKey
    self.keyLimits = keyLimits
  }
}
