/// Errors that Nova reports to its users: each names what is wrong and where.
public enum NovaError: Error, Sendable, Equatable, CustomStringConvertible {
  /// Input (a flag, a field of a request body, a payload) is out of range or not allowed.
  case invalidInput(field: String, message: String)
  /// Input that cannot be parsed: malformed JSON, a field of the wrong type, an unknown field.
  case malformedInput(field: String, message: String)
  /// A job kind that no handler is registered for.
  case unknownJobKind(String)
  /// A payload or body larger than the configured limit.
  case payloadTooLarge(limit: Int, actual: Int)
  /// The requested job does not exist.
  case jobNotFound(JobID)
  /// Another requested thing (a token, an audit entry) does not exist.
  case notFound(String)
  /// The operation is not valid in the job's current state.
  case invalidState(JobID, JobState, String)
  /// The lease was lost (expired, reclaimed, or the job was cancelled): the worker must stop.
  case leaseLost(JobID)
  /// An idempotency key was reused for a different job: it names the earlier job (409, exit 4).
  case idempotencyConflict(key: String, existing: JobID)
  /// The data directory or database cannot be used.
  case storage(String)
  /// A service Nova depends on (Redis) cannot be reached.
  case unavailable(String)
  /// The policy engine denied the action; the message says why.
  case forbidden(String)

  public var description: String {
    switch self {
    case .invalidInput(let field, let message): return "invalid \(field): \(message)"
    case .malformedInput(let field, let message): return "malformed \(field): \(message)"
    case .unknownJobKind(let kind): return "unknown job kind '\(kind)'"
    case .payloadTooLarge(let limit, let actual):
      return "payload is \(actual) bytes, over the limit of \(limit) bytes"
    case .jobNotFound(let id): return "job \(id) not found"
    case .notFound(let message): return message
    case .invalidState(let id, let state, let action): return "cannot \(action) job \(id): it is \(state)"
    case .leaseLost(let id): return "lease on job \(id) was lost (expired, reclaimed or cancelled)"
    case .idempotencyConflict(let key, let existing):
      return "idempotency key '\(key)' was already used for job \(existing) with a different kind or payload"
    case .storage(let message): return message
    case .unavailable(let message): return message
    case .forbidden(let message): return "denied by policy: \(message)"
    }
  }

  /// The family this error belongs to, which decides how every caller reacts to it: HTTP status,
  /// CLI exit code, and whether a worker retries.
  public var kind: NovaErrorKind {
    switch self {
    case .invalidInput, .malformedInput, .unknownJobKind, .payloadTooLarge: return .invalid
    case .jobNotFound, .notFound: return .notFound
    case .invalidState, .leaseLost, .idempotencyConflict: return .conflict
    case .storage: return .storage
    case .unavailable: return .unavailable
    case .forbidden: return .denied
    }
  }

  /// True when the same call may succeed later without any change (a store that is down or
  /// locked); workers retry such failures instead of counting them against the job.
  public var isTransient: Bool { kind == .unavailable }

  /// A stable machine-readable code, used in HTTP error bodies.
  public var code: String {
    switch self {
    case .invalidInput: return "invalid_input"
    case .malformedInput: return "malformed_input"
    case .unknownJobKind: return "unknown_job_kind"
    case .payloadTooLarge: return "payload_too_large"
    case .jobNotFound, .notFound: return "not_found"
    case .invalidState: return "invalid_state"
    case .leaseLost: return "lease_lost"
    case .idempotencyConflict: return "idempotency_conflict"
    case .storage: return "storage_error"
    case .unavailable: return "unavailable"
    case .forbidden: return "forbidden"
    }
  }
}

/// The families of `NovaError`: each maps to one HTTP status class and one CLI exit code.
public enum NovaErrorKind: String, Sendable, CaseIterable {
  /// A store (Redis, SQLite) cannot be reached, or is locked past a bound: retry later.
  case unavailable
  /// A store answered, but with something unusable (a corrupt or foreign database, a full disk).
  case storage
  /// The thing asked for does not exist.
  case notFound = "not_found"
  /// The action does not fit the current state.
  case conflict
  /// The input is wrong; the message names the field.
  case invalid
  /// Policy or role denies the action.
  case denied
}

extension Error {
  /// True when the error is a `NovaError` that is worth retrying later (`unavailable`).
  public var isTransientNovaError: Bool { (self as? NovaError)?.isTransient ?? false }
}

extension NovaError {
  /// The error with its field placed inside a batch entry (`kind` → `jobs[3].kind`).
  public func inEntry(_ entry: String) -> NovaError {
    switch self {
    case .invalidInput(let field, let message): .invalidInput(field: "\(entry).\(field)", message: message)
    case .malformedInput(let field, let message): .malformedInput(field: "\(entry).\(field)", message: message)
    case .unknownJobKind(let kind): .invalidInput(field: "\(entry).kind", message: "unknown job kind '\(kind)'")
    default: self
    }
  }
}
