import Foundation
import Logging
import NovaCore

/// What a handler learns about the job it runs.
public struct JobContext: Sendable {
  public var id: JobID
  public var queue: String
  public var kind: String
  /// 1 on the first run, 2 on the first retry, and so on.
  public var attempt: Int
  public var maxAttempts: Int
  /// Where the attempt's output is kept (`nova jobs logs`); nil keeps none.
  public var logStore: (any JobLogStore)?
  /// The devices, CPUs and memory the attempt holds on its host. On a worker with GPUs every
  /// job has one (with no GPUs when it asked for none): a program sees exactly its own GPUs.
  /// Nil on a worker that declared no capacity.
  public var placement: JobPlacement?
  /// The job's concurrency key (a tenant, a model, an account), if it has one.
  public var concurrencyKey: String?
  private let baseLogger: Logger

  public init(
    id: JobID, queue: String, kind: String, attempt: Int, maxAttempts: Int, logger: Logger, logStore: (any JobLogStore)? = nil,
    placement: JobPlacement? = nil, concurrencyKey: String? = nil
  ) {
    self.id = id
    self.queue = queue
    self.kind = kind
    self.attempt = attempt
    self.maxAttempts = maxAttempts
    self.logStore = logStore
    self.placement = placement
    self.concurrencyKey = concurrencyKey
    self.baseLogger = logger
  }

  /// A logger that tags every message with the job's id and kind (built on use: most jobs never log).
  public var logger: Logger {
    var logger = baseLogger
    logger[metadataKey: "job"] = "\(id)"
    logger[metadataKey: "kind"] = "\(kind)"
    return logger
  }
}

/// Thrown by a handler for a failure that retrying cannot fix: the job is dead-lettered at once.
public struct NonRetryableJobError: Error, CustomStringConvertible {
  public var message: String
  public init(_ message: String) { self.message = message }
  public var description: String { message }
}

/// Handlers by job kind, each decoding its own `Codable` parameters from the payload.
public struct JobRegistry: Sendable {
  typealias Handler = @Sendable (Data, JobContext) async throws -> Data?

  struct Entry: Sendable {
    var run: Handler
    var validate: @Sendable (Data) throws -> Void
    var timeout: Duration?
    /// How long a stopped handler (timeout, cancellation, shutdown) may take to end before its
    /// slot is freed anyway: a program's processes are reaped within it, so that attempts of one
    /// job never overlap and the pool's concurrency is never exceeded.
    var stopGrace: Duration = JobRegistry.defaultStopGrace
  }

  /// The stop grace of in-process handlers: one that ignores cancellation is abandoned after it.
  public static let defaultStopGrace: Duration = .seconds(1)

  private(set) var entries: [String: Entry] = [:]
  /// Kinds accepted for submission whose jobs workers elsewhere claim over HTTP.
  private(set) var external: Set<String> = []
  private var externalTimeouts: [String: Duration] = [:]
  /// What jobs of a kind ask for when they give nothing themselves (`nova-jobs.yaml`).
  private var requirementDefaults: [String: (resources: JobResources?, constraints: JobConstraints?)] = [:]
  /// The per-key limits of a kind's jobs (`max_running_per_key`, `rate_per_key`).
  private var keyLimits: [String: KeyLimits] = [:]

  /// Sets the per-key limits that jobs of `kind` carrying a concurrency key share.
  public mutating func setKeyLimits(_ kind: String, _ limits: KeyLimits?) {
    keyLimits[kind] = limits?.isEmpty == false ? limits : nil
  }

  /// Sets what jobs of `kind` ask of their host and where they may run, unless they say otherwise.
  public mutating func setDefaults(_ kind: String, resources: JobResources?, constraints: JobConstraints?) {
    if resources == nil && constraints == nil {
      requirementDefaults[kind] = nil
    } else {
      requirementDefaults[kind] = (resources, constraints)
    }
  }

  /// `request` with its kind's default resources and constraints where it gives none.
  public func withDefaults(_ request: JobRequest) -> JobRequest {
    var request = request
    if request.concurrencyKey != nil, let limits = keyLimits[request.kind] { request.keyLimits = limits }
    guard let defaults = requirementDefaults[request.kind] else { return request }
    return request.withDefaults(resources: defaults.resources, constraints: defaults.constraints)
  }

  public init() {}

  /// Registers a handler for `kind`. The payload is decoded as `Parameters`; the returned value
  /// is stored as the job's JSON result. `timeout` overrides the pool's per-job timeout.
  public mutating func register<Parameters: Decodable & Sendable, Output: Encodable & Sendable>(
    _ kind: String, parameters: Parameters.Type = Parameters.self, timeout: Duration? = nil,
    stopGrace: Duration = JobRegistry.defaultStopGrace, _ body: @escaping @Sendable (Parameters, JobContext) async throws -> Output
  ) {
    let decode: @Sendable (Data) throws -> Parameters = { data in
      do {
        // Any JSON (`echo`): the parser's fast path, not `Codable`'s walk through every case.
        if Parameters.self == JSONValue.self, let value = try JSONValue.parse(data) as? Parameters { return value }
        return try JSONDecoder().decode(Parameters.self, from: data)
      } catch {
        let detail = JSONErrorText.syntaxError(in: data) ?? JSONErrorText.describe(error)
        throw NovaError.malformedInput(field: "payload", message: "for kind '\(kind)': \(detail)")
      }
    }
    entries[kind] = Entry(
      run: { data, context in
        let parameters: Parameters
        do {
          parameters = try decode(data)
        } catch {
          throw NonRetryableJobError(String(describing: error))
        }
        let output = try await body(parameters, context)
        if output is EmptyResult { return nil }
        // Any JSON (`echo`): its canonical form (RFC 8785: keys sorted, the shortest escapes).
        if Output.self == JSONValue.self, let value = output as? JSONValue { return Data(try CanonicalJSON.encode(value)) }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return try encoder.encode(output)
      },
      validate: { data in _ = try decode(data) },
      timeout: timeout, stopGrace: stopGrace)
  }

  /// Registers a handler that takes the payload's JSON bytes as they are and returns the result's
  /// JSON bytes (or nil for none), for handlers that parse their own input.
  /// `stopGrace` is how long the handler may take to end once stopped (its slot is held
  /// meanwhile).
  public mutating func registerRaw(
    _ kind: String, timeout: Duration? = nil, stopGrace: Duration = JobRegistry.defaultStopGrace,
    _ body: @escaping @Sendable (Data, JobContext) async throws -> Data?
  ) {
    entries[kind] = Entry(run: body, validate: { _ in }, timeout: timeout, stopGrace: stopGrace)
    external.remove(kind)
  }

  /// Accepts jobs of `kind` (any JSON object as payload) without running them here: workers in
  /// other processes claim them over HTTP. With `timeout`, an attempt heartbeated past it is failed.
  public mutating func registerExternal(_ kind: String, timeout: Duration? = nil) {
    entries[kind] = nil
    external.insert(kind)
    externalTimeouts[kind] = timeout
  }

  /// How long an attempt of the external `kind` may run; nil for no bound but its lease.
  public func externalTimeout(_ kind: String) -> Duration? { externalTimeouts[kind] }

  /// The kinds accepted for submission (those run here and the external ones), sorted.
  public var kinds: [String] { Set(entries.keys).union(external).sorted() }

  /// The kinds this process runs (external ones excluded), sorted.
  public var handledKinds: [String] { entries.keys.sorted() }

  /// Whether `kind` is run by workers elsewhere.
  public func isExternal(_ kind: String) -> Bool { external.contains(kind) }

  /// Checks that the kind is known and that the payload decodes as its handler's parameters.
  public func validate(kind: String, payload: Data) throws(NovaError) {
    if external.contains(kind) { return }
    guard let entry = entries[kind] else {
      throw NovaError.unknownJobKind(kind)
    }
    do {
      try entry.validate(payload)
    } catch let error as NovaError {
      throw error
    } catch {
      throw NovaError.invalidInput(field: "payload", message: String(describing: error))
    }
  }

  func entry(for kind: String) -> Entry? { entries[kind] }

  /// Runs the handler of `kind` once, outside any queue (tools and tests; workers run jobs
  /// through `WorkerPool`).
  public func run(kind: String, payload: Data, context: JobContext) async throws -> Data? {
    guard let entry = entries[kind] else { throw NovaError.unknownJobKind(kind) }
    return try await entry.run(payload, context)
  }
}

/// A failure to retry no sooner than `delay` (an HTTP endpoint's `Retry-After`), instead of after
/// the retry policy's backoff.
public struct RetryLaterJobError: Error, CustomStringConvertible, Sendable {
  public var message: String
  public var delay: Duration
  public init(_ message: String, delay: Duration) {
    self.message = message
    self.delay = delay
  }
  public var description: String { message }
}

/// A handler output that stores no result.
public struct EmptyResult: Codable, Sendable {
  public init() {}
}
