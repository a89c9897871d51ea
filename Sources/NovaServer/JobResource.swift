import Foundation
import NovaCore
import NovaQueue

/// A job as the HTTP API and `--json` output show it.
public struct JobResource: Codable, Sendable, Equatable {
  public var id: String
  public var queue: String
  public var kind: String
  public var state: String
  public var payload: JSONValue
  public var priority: Int
  public var attempts: Int
  public var max_attempts: Int
  public var idempotency_key: String?
  public var run_at: String
  public var created_at: String
  public var updated_at: String
  public var started_at: String?
  public var finished_at: String?
  public var result: JSONValue?
  public var last_error: String?
  public var lease_owner: String?
  public var lease_expires_at: String?
  /// What the job asks of its host (absent when nothing).
  public var resources: JobResources?
  /// Where the job may run (absent when anywhere).
  public var constraints: JobConstraints?
  /// Where its current or last attempt was placed: host, GPUs, CPUs, memory.
  public var placement: JobPlacement?
  /// The key whose per-key limits the job shares.
  public var concurrency_key: String?
  /// Why it waits, for a job that could run (`nova jobs show`, `GET /v1/jobs/{id}`).
  public var waiting_for: WaitingFor?

  public init(_ job: Job) {
    id = job.id.rawValue
    queue = job.queue
    kind = job.kind
    state = job.state.rawValue
    payload = (try? JSONValue.parse(job.payload)) ?? .null
    priority = job.priority
    attempts = job.attempts
    max_attempts = job.maxAttempts
    idempotency_key = job.idempotencyKey
    run_at = Self.timestamp(job.runAt)
    created_at = Self.timestamp(job.createdAt)
    updated_at = Self.timestamp(job.updatedAt)
    started_at = job.startedAt.map(Self.timestamp)
    finished_at = job.finishedAt.map(Self.timestamp)
    result = job.result.flatMap { try? JSONValue.parse($0) }
    last_error = job.lastError
    lease_owner = job.leaseOwner
    lease_expires_at = job.leaseExpiresAt.map(Self.timestamp)
    resources = job.requirements.map(\.resources)
    constraints = job.requirements.map(\.constraints)
    placement = job.placement
    concurrency_key = job.concurrencyKey
  }

  /// RFC 3339 with milliseconds, UTC: the stored millisecond, as the audit log writes it.
  /// (Foundation's ISO 8601 style cut the fraction off the binary double, so that half of all
  /// times read a millisecond early.)
  public static func timestamp(_ date: Date) -> String {
    AuditTime.string(date.millisecondsSince1970)
  }
}

/// Shared JSON encoding for API bodies and CLI output: sorted keys, so output is stable.
public enum NovaJSON {
  /// Encodes with sorted keys (and indentation when `pretty`).
  public static func encode<T: Encodable>(_ value: T, pretty: Bool = false) throws -> Data {
    let encoder = JSONEncoder()
    encoder.outputFormatting = pretty ? [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
    return try encoder.encode(value)
  }
}
