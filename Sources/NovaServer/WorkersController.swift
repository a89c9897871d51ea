import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import NovaApplication
import NovaCore
import NovaQueue
import ServiceLifecycle

/// The routes of workers in any language: `POST /v1/workers/claim` (a long-poll), and the
/// reports on claimed jobs, one at a time (`/v1/jobs/{id}/heartbeat|complete|fail`) or in
/// batches (`/v1/jobs/heartbeat|complete|release`), so that a fast worker needs one round trip
/// per batch. Every body is checked strictly: an unknown field or a wrong type is a 400 naming it.
struct WorkersController {
  typealias Context = NovaRequestContext
  let actions: WorkerActions
  let maxPayloadBytes: Int

  /// The most entries one batch report may carry.
  static let maxBatch = 1000

  func addRoutes(to router: Router<Context>) {
    router.post("v1/workers/claim", use: claim)
    let jobs = router.group("v1/jobs")
    jobs.post("heartbeat", use: heartbeatBatch)
    jobs.post("complete", use: completeBatch)
    jobs.post("release", use: releaseBatch)
    jobs.post(":id/heartbeat", use: heartbeat)
    jobs.post(":id/complete", use: complete)
    jobs.post(":id/fail", use: fail)
  }

  @Sendable func claim(_ request: Request, context: Context) async throws -> Response {
    let body = try await Self.object(request, limit: RouteBodyLimits.claim)
    try body.only(["worker", "queues", "kinds", "max", "lease_seconds", "wait_seconds", "capacity", "host_capacity"])
    let claim = try WorkerClaim(
      worker: try body.string("worker"), queues: try body.strings("queues") ?? ["default"], kinds: try body.strings("kinds"),
      limit: try body.integer("max") ?? 1, leaseSeconds: try body.number("lease_seconds") ?? 60,
      waitSeconds: try body.number("wait_seconds") ?? 0,
      capacity: try body.fields["capacity"].map { value throws(NovaError) in try HostCapacity(json: value) },
      hostCapacity: try body.fields["host_capacity"].map { value throws(NovaError) in try HostCapacity(json: value, field: "host_capacity") })
    // A server that begins to stop answers waiting claims at once: the HTTP server waits for
    // requests in flight before the other services hear of the shutdown.
    let actions = actions
    let caller = JobsController.caller(context)
    let leases: [JobLease]
    do {
      leases = try await withGracefulShutdownHandler {
        try await actions.claim(claim, by: caller)
      } onGracefulShutdown: {
        actions.endWaitingClaims()
      }
    } catch let refusal as WorkerActions.Refusal {
      var headers = HTTPFields()
      headers[.retryAfter] = "1"
      throw APIError(.tooManyRequests, code: "too_many_claims", message: refusal.description, headers: headers)
    }
    return try jsonResponse(ClaimResponse(jobs: leases.map { ClaimedJob($0, token: actions.token(of: $0, for: caller)) }))
  }

  @Sendable func heartbeat(_ request: Request, context: Context) async throws -> Response {
    let body = try await Self.object(request, limit: RouteBodyLimits.heartbeat)
    try body.only(["lease", "lease_seconds"])
    let reference = LeaseReference(id: try Self.jobID(context), lease: try body.lease("lease"))
    let outcomes = try await actions.heartbeat(
      [reference], leaseDuration: try Self.leaseDuration(body), by: JobsController.caller(context))
    switch outcomes[reference.id] ?? .lost {
    case .extended(let expiry):
      return try jsonResponse(HeartbeatAnswer(id: reference.id.rawValue, cancel_requested: false, expires_at: JobResource.timestamp(expiry)))
    case .cancelled:
      return try jsonResponse(HeartbeatAnswer(id: reference.id.rawValue, cancel_requested: true, expires_at: nil))
    case .lost: throw NovaError.leaseLost(reference.id)
    }
  }

  @Sendable func heartbeatBatch(_ request: Request, context: Context) async throws -> Response {
    let body = try await Self.object(request, limit: RouteBodyLimits.heartbeatBatch)
    try body.only(["leases", "lease_seconds"])
    let references = try Self.references(body, "leases")
    let outcomes = try await actions.heartbeat(references, leaseDuration: try Self.leaseDuration(body), by: JobsController.caller(context))
    let results = references.map { reference -> HeartbeatResult in
      switch outcomes[reference.id] ?? .lost {
      case .extended(let expiry): HeartbeatResult(id: reference.id.rawValue, status: "extended", expires_at: JobResource.timestamp(expiry))
      case .cancelled: HeartbeatResult(id: reference.id.rawValue, status: "cancelled", expires_at: nil)
      case .lost: HeartbeatResult(id: reference.id.rawValue, status: "lost", expires_at: nil)
      }
    }
    return try jsonResponse(HeartbeatResults(results: results))
  }

  @Sendable func complete(_ request: Request, context: Context) async throws -> Response {
    let data = try await Self.data(request, limit: RouteBodyLimits(maxPayloadBytes: maxPayloadBytes).job)
    let body = try BodyObject(data)
    try body.only(["lease", "result"])
    let reference = LeaseReference(id: try Self.jobID(context), lease: try body.lease("lease"))
    // The result as sent (it parsed above), so the job keeps exactly what the worker wrote.
    let result = body.has("result") ? try JSONValue.rawMember("result", in: data) : nil
    try checkSize(result, field: "result")
    let recorded = try await actions.complete([(reference, result)], by: JobsController.caller(context))
    guard recorded.first == true else { throw NovaError.leaseLost(reference.id) }
    return try jsonResponse(StateAnswer(id: reference.id.rawValue, state: JobState.succeeded.rawValue, run_at: nil))
  }

  @Sendable func completeBatch(_ request: Request, context: Context) async throws -> Response {
    let body = try await Self.object(request, limit: RouteBodyLimits.completeBatch)
    try body.only(["jobs"])
    let entries = try body.objects("jobs", max: Self.maxBatch)
    var completions: [(LeaseReference, Data?)] = []
    completions.reserveCapacity(entries.count)
    for (index, entry) in entries.enumerated() {
      let field = "jobs[\(index)]"
      try entry.only(["id", "lease", "result"])
      let reference = LeaseReference(id: try entry.jobID("id"), lease: try entry.lease("lease"))
      let result = entry.fields["result"].map { $0.encoded() }
      try checkSize(result, field: "\(field).result")
      completions.append((reference, result))
    }
    let recorded = try await actions.complete(completions, by: JobsController.caller(context))
    return try jsonResponse(
      CompleteResults(results: zip(completions, recorded).map { CompleteResult(id: $0.0.id.rawValue, recorded: $1) }))
  }

  @Sendable func fail(_ request: Request, context: Context) async throws -> Response {
    let body = try await Self.object(request, limit: RouteBodyLimits.fail)
    try body.only(["lease", "error", "retry", "retry_in_seconds"])
    let reference = LeaseReference(id: try Self.jobID(context), lease: try body.lease("lease"))
    let message = try body.string("error")
    guard message.utf8.count <= 64 * 1024 else {
      throw NovaError.invalidInput(field: "error", message: "is \(message.utf8.count) bytes; at most 65536")
    }
    var retryIn: Duration?
    if let seconds = try body.number("retry_in_seconds") {
      guard seconds >= 0, seconds <= 366 * 86_400 else {
        throw NovaError.invalidInput(field: "retry_in_seconds", message: "\(seconds) is out of range 0...31622400")
      }
      retryIn = .seconds(seconds)
    }
    let outcome = try await actions.fail(
      reference, error: message, retryable: try body.bool("retry") ?? true, retryIn: retryIn, by: JobsController.caller(context))
    switch outcome {
    case .retryScheduled(let runAt):
      return try jsonResponse(StateAnswer(id: reference.id.rawValue, state: JobState.failed.rawValue, run_at: JobResource.timestamp(runAt)))
    case .dead:
      return try jsonResponse(StateAnswer(id: reference.id.rawValue, state: JobState.dead.rawValue, run_at: nil))
    }
  }

  @Sendable func releaseBatch(_ request: Request, context: Context) async throws -> Response {
    let body = try await Self.object(request, limit: RouteBodyLimits.release)
    try body.only(["jobs"])
    let references = try Self.references(body, "jobs")
    let released = try await actions.release(references, by: JobsController.caller(context))
    return try jsonResponse(ReleaseAnswer(released: released))
  }

  private func checkSize(_ result: Data?, field: String) throws {
    if let result, result.count > maxPayloadBytes {
      throw NovaError.payloadTooLarge(limit: maxPayloadBytes, actual: result.count)
    }
  }

  private static func references(_ body: BodyObject, _ field: String) throws -> [LeaseReference] {
    try body.objects(field, max: maxBatch).map { entry in
      try entry.only(["id", "lease"])
      return LeaseReference(id: try entry.jobID("id"), lease: try entry.lease("lease"))
    }
  }

  /// The body's `lease_seconds`; nil (each lease's own claimed length) when not given.
  private static func leaseDuration(_ body: BodyObject) throws -> Duration? {
    guard let seconds = try body.number("lease_seconds") else { return nil }
    guard seconds >= 1, seconds <= WorkerClaim.maxLease.seconds else {
      throw NovaError.invalidInput(field: "lease_seconds", message: "\(seconds) is out of range 1...\(Int(WorkerClaim.maxLease.seconds))")
    }
    return .seconds(seconds)
  }

  private static func data(_ request: Request, limit: Int) async throws -> Data {
    Data(try await request.body.collect(upTo: limit).readableBytesView)
  }

  private static func object(_ request: Request, limit: Int) async throws -> BodyObject {
    try BodyObject(try await data(request, limit: limit))
  }

  private static func jobID(_ context: Context) throws -> JobID {
    let id = JobID(try context.parameters.require("id"))
    guard id.isWellFormed else { throw NovaError.invalidInput(field: "id", message: "'\(id)' is not a job id (a UUID)") }
    return id
  }
}

/// The body of `POST /v1/workers/claim`.
struct ClaimResponse: Encodable {
  var jobs: [ClaimedJob]
}

/// A claimed job: the job as everywhere, with its lease.
struct ClaimedJob: Encodable {
  var job: JobResource
  var lease: LeaseResource

  init(_ lease: JobLease, token: String) {
    job = JobResource(lease.job)
    self.lease = LeaseResource(token: token, expires_at: JobResource.timestamp(lease.expiresAt))
  }

  func encode(to encoder: any Encoder) throws {
    try job.encode(to: encoder)
    var container = encoder.container(keyedBy: CodingKeys.self)
    try container.encode(lease, forKey: .lease)
  }

  enum CodingKeys: String, CodingKey { case lease }
}

struct LeaseResource: Encodable {
  var token: String
  var expires_at: String
}

struct HeartbeatAnswer: Encodable {
  var id: String
  var cancel_requested: Bool
  var expires_at: String?

  func encode(to encoder: any Encoder) throws {
    var container = encoder.container(keyedBy: CodingKeys.self)
    try container.encode(id, forKey: .id)
    try container.encode(cancel_requested, forKey: .cancel_requested)
    try container.encode(expires_at, forKey: .expires_at)
  }

  enum CodingKeys: String, CodingKey { case id, cancel_requested, expires_at }
}

struct HeartbeatResult: Encodable {
  var id: String
  /// extended, cancelled or lost.
  var status: String
  var expires_at: String?
}

struct HeartbeatResults: Encodable {
  var results: [HeartbeatResult]
}

struct CompleteResult: Encodable {
  var id: String
  var recorded: Bool
}

struct CompleteResults: Encodable {
  var results: [CompleteResult]
}

struct StateAnswer: Encodable {
  var id: String
  var state: String
  var run_at: String?
}

struct ReleaseAnswer: Encodable {
  var released: Int
}
