import Foundation

/// What a client asks a queue to run.
public struct JobRequest: Sendable, Equatable {
  /// The largest priority; higher runs first.
  public static let maxPriority = 1000
  /// The most attempts a job may ask for.
  public static let maxAttemptsLimit = 1000
  /// Attempts when the request names none.
  public static let defaultMaxAttempts = 5

  public var kind: String
  /// JSON bytes; `{}` when the client sends none.
  public var payload: Data
  public var queue: String
  public var priority: Int
  /// Earliest run time; `nil` runs as soon as a worker is free.
  public var runAt: Date?
  public var maxAttempts: Int
  /// A second enqueue with the same key returns the first job instead of a new one.
  public var idempotencyKey: String?
  /// What the job asks of its host, as given (nil: its kind's default, if any).
  public var resources: JobResources?
  /// Where the job may run, as given (nil: its kind's default, if any).
  public var constraints: JobConstraints?

  /// Jobs with the same key (a tenant, a model, an API account) share the per-key limits of
  /// their kind and queue (`max_running_per_key`, `rate_per_key`).
  public var concurrencyKey: String?
  /// The per-key limits of the job's kind, set from `nova-jobs.yaml` on submit.
  public var keyLimits: KeyLimits?

  /// What the job asks of its host and where it may run, as stored; nil asks for nothing.
  public var requirements: JobRequirements? {
    get { JobRequirements.make(resources: resources, constraints: constraints) }
    set {
      resources = newValue?.resources
      constraints = newValue?.constraints
    }
  }

  public init(
    kind: String, payload: Data = Data("{}".utf8), queue: String = "default", priority: Int = 0,
    runAt: Date? = nil, maxAttempts: Int = JobRequest.defaultMaxAttempts,
    idempotencyKey: String? = nil, requirements: JobRequirements? = nil
  ) {
    self.kind = kind
    self.payload = payload
    self.queue = queue
    self.priority = priority
    self.runAt = runAt
    self.maxAttempts = maxAttempts
    self.idempotencyKey = idempotencyKey
    self.resources = requirements?.resources
    self.constraints = requirements?.constraints
  }

  /// This request with its kind's defaults where it gives none: a job's `resources` replace
  /// its kind's, and so do its `constraints`.
  public func withDefaults(resources kindResources: JobResources?, constraints kindConstraints: JobConstraints?) -> JobRequest {
    var request = self
    if request.resources == nil { request.resources = kindResources }
    if request.constraints == nil { request.constraints = kindConstraints }
    return request
  }

  /// Checks every field; the error names the first field that is wrong.
  public func validate(maxPayloadBytes: Int) throws(NovaError) {
    try Self.validateName(kind, field: "kind")
    try Self.validateName(queue, field: "queue")
    guard (0...Self.maxPriority).contains(priority) else {
      throw .invalidInput(
        field: "priority", message: "\(priority) is out of range 0...\(Self.maxPriority)")
    }
    guard (1...Self.maxAttemptsLimit).contains(maxAttempts) else {
      throw .invalidInput(
        field: "max_attempts", message: "\(maxAttempts) is out of range 1...\(Self.maxAttemptsLimit)")
    }
    if let key = idempotencyKey {
      guard !key.isEmpty, key.utf8.count <= 255 else {
        throw .invalidInput(field: "idempotency_key", message: "must be 1 to 255 bytes")
      }
    }
    if let key = concurrencyKey {
      guard !key.isEmpty, key.utf8.count <= 255, !key.contains(where: { $0.isNewline }) else {
        throw .invalidInput(field: "concurrency_key", message: "must be 1 to 255 bytes on one line")
      }
    }
    guard payload.count <= maxPayloadBytes else {
      throw .payloadTooLarge(limit: maxPayloadBytes, actual: payload.count)
    }
    // The common payload passes the fast parser (which takes only valid JSON) in a fraction of
    // the time `JSONSerialization` takes to say where the rest is wrong.
    if JSONFastParser.parse(payload) == nil, let syntax = JSONErrorText.syntaxError(in: payload) {
      throw .malformedInput(field: "payload", message: "not valid JSON: \(syntax)")
    }
  }

  /// Kinds and queue names: 1 to 128 characters of letters, digits, `.`, `_`, `-`, `:`.
  public static func validateName(_ name: String, field: String) throws(NovaError) {
    guard !name.isEmpty, name.utf8.count <= 128 else {
      throw .invalidInput(field: field, message: "must be 1 to 128 characters")
    }
    for byte in name.utf8 {
      let ok =
        (byte >= 48 && byte <= 57) || (byte >= 65 && byte <= 90) || (byte >= 97 && byte <= 122)
        || byte == 46 || byte == 95 || byte == 45 || byte == 58
      guard ok else {
        throw .invalidInput(
          field: field,
          message: "'\(name)' may hold only letters, digits, '.', '_', '-' and ':'")
      }
    }
  }
}
