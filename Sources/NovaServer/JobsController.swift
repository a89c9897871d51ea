import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import NovaCore
import NovaPolicy
import NovaQueue

/// The `/v1/jobs` routes. Submitting, cancelling and retrying ask the policy gate with the
/// job's queue and kind.
struct JobsController {
  typealias Context = NovaRequestContext
  let queue: any JobQueue
  let registry: JobRegistry
  let maxPayloadBytes: Int
  let clock: any NovaClock
  let gate: PolicyGate?

  private func check(_ action: String, _ context: Context, id: JobID?, queue name: String, kind: String) async throws {
    try await gate?.check(
      context.caller, action: action,
      resource: PolicyResource(kind: "job", id: id?.rawValue, attributes: ["queue": name, "job_kind": kind]),
      source: context.remoteAddress?.ipAddress)
  }

  func addRoutes(to group: RouterGroup<Context>) {
    group.post(use: submit)
    group.get(use: list)
    group.get(":id", use: show)
    group.post(":id/cancel", use: cancel)
    group.post(":id/retry", use: retry)
  }

  @Sendable func submit(_ request: Request, context: Context) async throws -> Response {
    // Room for the envelope around a payload of the largest allowed size.
    let body = try await request.body.collect(upTo: maxPayloadBytes + 16 * 1024)
    let submit = try SubmitJobBody.parse(Data(body.readableBytesView), now: clock.now(), maxPayloadBytes: maxPayloadBytes)
    try registry.validate(kind: submit.request.kind, payload: submit.request.payload)
    try await check("submit", context, id: nil, queue: submit.request.queue, kind: submit.request.kind)
    let result: EnqueueResult = try await queue.enqueue(submit.request)
    guard let job = try await queue.get(result.id) else { throw NovaError.jobNotFound(result.id) }
    return try jsonResponse(JobResource(job), status: result.existing ? .ok : .created)
  }

  @Sendable func list(_ request: Request, context: Context) async throws -> Response {
    let query = request.uri.queryParameters
    var filter = JobFilter()
    for (key, _) in query where !["state", "queue", "kind", "limit", "cursor"].contains(String(key)) {
      throw NovaError.invalidInput(field: String(key), message: "unknown query parameter; expected state, queue, kind, limit, cursor")
    }
    if let state = query["state"] { filter.state = try JobState.parse(String(state)) }
    if let queueName = query["queue"] { filter.queue = String(queueName) }
    if let kind = query["kind"] { filter.kind = String(kind) }
    if let limitText = query["limit"] {
      guard let limit = Int(limitText) else {
        throw NovaError.invalidInput(field: "limit", message: "'\(limitText)' is not an integer")
      }
      filter.limit = limit
    }
    if let cursor = query["cursor"] { filter.cursor = String(cursor) }
    let page = try await queue.list(filter)
    return try jsonResponse(JobListResponse(jobs: page.jobs.map(JobResource.init), next_cursor: page.nextCursor))
  }

  @Sendable func show(_ request: Request, context: Context) async throws -> Response {
    let id = try jobID(context)
    guard let job = try await queue.get(id) else { throw NovaError.jobNotFound(id) }
    return try jsonResponse(JobResource(job))
  }

  @Sendable func cancel(_ request: Request, context: Context) async throws -> Response {
    let id = try jobID(context)
    if gate != nil {
      guard let job = try await queue.get(id) else { throw NovaError.jobNotFound(id) }
      try await check("cancel", context, id: id, queue: job.queue, kind: job.kind)
    }
    return try jsonResponse(JobResource(try await queue.cancel(id)))
  }

  @Sendable func retry(_ request: Request, context: Context) async throws -> Response {
    let id = try jobID(context)
    if gate != nil {
      guard let job = try await queue.get(id) else { throw NovaError.jobNotFound(id) }
      try await check("retry", context, id: id, queue: job.queue, kind: job.kind)
    }
    return try jsonResponse(JobResource(try await queue.retry(id)))
  }

  private func jobID(_ context: Context) throws -> JobID {
    let id = JobID(try context.parameters.require("id"))
    guard id.isWellFormed else {
      throw NovaError.invalidInput(field: "id", message: "'\(id)' is not a job id (a UUID)")
    }
    return id
  }
}

/// The body of `GET /v1/jobs`.
struct JobListResponse: Codable {
  var jobs: [JobResource]
  var next_cursor: String?
}

/// A JSON response with sorted keys.
func jsonResponse<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
  var headers = HTTPFields()
  headers[.contentType] = "application/json"
  return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: try NovaJSON.encode(value))))
}
