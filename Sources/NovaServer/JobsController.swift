import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import NovaApplication
import NovaCore
import NovaPolicy
import NovaQueue
import ServiceLifecycle
import Synchronization

/// The `/v1/jobs` routes: each translates a request into one of the shared `JobActions` (which
/// decide with the job's queue and kind and audit the decision) and its answer into JSON.
struct JobsController {
  typealias Context = NovaRequestContext
  let actions: JobActions
  let maxPayloadBytes: Int
  let clock: any NovaClock

  /// The caller of a request, as the policy sees it; nil on a server without authentication.
  static func caller(_ context: Context) -> Caller? {
    context.caller.map { Caller(subject: PolicyGate.subject($0), source: context.remoteAddress?.ipAddress) }
  }

  func addRoutes(to group: RouterGroup<Context>) {
    group.post(use: submit)
    group.post("batch", use: submitBatch)
    group.get(use: list)
    group.get(":id", use: show)
    group.post(":id/cancel", use: cancel)
    group.post(":id/retry", use: retry)
    group.get(":id/logs", use: logs)
  }

  /// `GET /v1/jobs/{id}/logs?attempt=N&follow=1&prefix=1&raw=1`: the output of the job's attempts
  /// line by line, in the order the lines were written (every attempt under a `==> attempt N <==`
  /// line unless one is asked for), as text with control characters and bytes that are not UTF-8
  /// escaped (`\x1b`); `prefix=1` starts each line with `stdout: ` or `stderr: `; `raw=1` answers
  /// the bytes as stored, unescaped (`application/octet-stream`). With `follow=1` the response is
  /// chunked and goes on while the job runs, ending when it is over.
  @Sendable func logs(_ request: Request, context: Context) async throws -> Response {
    let query = request.uri.queryParameters
    for (key, _) in query where !["attempt", "follow", "prefix", "raw"].contains(String(key)) {
      throw NovaError.invalidInput(field: String(key), message: "unknown query parameter; expected attempt, follow, prefix, raw")
    }
    var attempt: Int?
    if let text = query["attempt"] {
      guard let number = Int(text) else { throw NovaError.invalidInput(field: "attempt", message: "'\(text)' is not an integer") }
      attempt = number
    }
    func flag(_ name: Substring) throws -> Bool {
      guard let text = query[name] else { return false }
      guard ["1", "true", "0", "false"].contains(String(text)) else {
        throw NovaError.invalidInput(field: String(name), message: "'\(text)' is not 1, true, 0 or false")
      }
      return text == "1" || text == "true"
    }
    let following = try flag("follow")
    let options = JobLogRenderer.Options(prefix: try flag("prefix"), raw: try flag("raw"))
    let feed = try await actions.logs(try jobID(context), attempt: attempt, clock: clock, by: Self.caller(context))
    var headers = HTTPFields()
    // Raw output is whatever the program wrote, which need not be text.
    headers[.contentType] = options.raw ? "application/octet-stream" : "text/plain; charset=utf-8"
    // A browser must not take a program's output for HTML.
    headers[.xContentTypeOptions] = "nosniff"
    headers[.cacheControl] = "no-store"
    return Response(
      status: .ok, headers: headers,
      body: ResponseBody { writer in
        // A stopping server ends the follow (it waits for requests in flight before stopping).
        let stopping = Mutex(false)
        try await withGracefulShutdownHandler {
          try await feed.render(options, follow: following, stop: { stopping.withLock { $0 } }) { text in
            try await writer.write(ByteBuffer(bytes: text))
          }
        } onGracefulShutdown: {
          stopping.withLock { $0 = true }
        }
        try await writer.finish(nil)
      })
  }

  @Sendable func submit(_ request: Request, context: Context) async throws -> Response {
    // Room for the envelope around a payload of the largest allowed size.
    let body = try await request.body.collect(upTo: RouteBodyLimits(maxPayloadBytes: maxPayloadBytes).job)
    let submit = try SubmitJobBody.parse(Data(body.readableBytesView), now: clock.now(), maxPayloadBytes: maxPayloadBytes)
    let (job, created) = try await actions.submit(submit.request, by: Self.caller(context))
    return try jsonResponse(JobResource(job), status: created ? .created : .ok)
  }

  /// `POST /v1/jobs/batch`: up to 1000 jobs in one request and one store write.
  @Sendable func submitBatch(_ request: Request, context: Context) async throws -> Response {
    // Bounded as a whole (each payload is also checked against its own limit).
    let body = try await request.body.collect(upTo: RouteBodyLimits(maxPayloadBytes: maxPayloadBytes).jobBatch)
    let requests = try SubmitJobBody.parseBatch(Data(body.readableBytesView), now: clock.now(), maxPayloadBytes: maxPayloadBytes)
    let results = try await actions.submit(batch: requests, by: Self.caller(context))
    let jobs = results.map { SubmittedJob(id: $0.id.rawValue, state: $0.state.rawValue, created: !$0.existing) }
    return try jsonResponse(SubmittedJobs(jobs: jobs), status: jobs.contains { $0.created } ? .created : .ok)
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
    let page = try await actions.list(filter, by: Self.caller(context))
    return try jsonResponse(JobListResponse(jobs: page.jobs.map(JobResource.init), next_cursor: page.nextCursor))
  }

  @Sendable func show(_ request: Request, context: Context) async throws -> Response {
    let job = try await actions.get(try jobID(context), by: Self.caller(context))
    var resource = JobResource(job)
    resource.waiting_for = try await actions.waitingFor(job)
    return try jsonResponse(resource)
  }

  @Sendable func cancel(_ request: Request, context: Context) async throws -> Response {
    try jsonResponse(JobResource(try await actions.cancel(try jobID(context), by: Self.caller(context))))
  }

  @Sendable func retry(_ request: Request, context: Context) async throws -> Response {
    try jsonResponse(JobResource(try await actions.retry(try jobID(context), by: Self.caller(context))))
  }

  private func jobID(_ context: Context) throws -> JobID {
    let id = JobID(try context.parameters.require("id"))
    guard id.isWellFormed else {
      throw NovaError.invalidInput(field: "id", message: "'\(id)' is not a job id (a UUID)")
    }
    return id
  }
}

/// The answer of `POST /v1/jobs/batch`, in request order.
struct SubmittedJobs: Codable {
  var jobs: [SubmittedJob]
}

struct SubmittedJob: Codable {
  var id: String
  var state: String
  /// False when an earlier job with the same idempotency key was returned.
  var created: Bool
}

/// The body of `GET /v1/jobs`.
struct JobListResponse: Codable {
  var jobs: [JobResource]
  var next_cursor: String?
}

/// A job's answer, with sorted keys: written directly when `JobResource.encodedDirectly` can (the same bytes).
func jsonResponse(_ job: JobResource, status: HTTPResponse.Status = .ok) throws -> Response {
  if let bytes = job.encodedDirectly() { return jsonBody(bytes, status: status) }
  return jsonBody(try NovaJSON.encode(job), status: status)
}

/// A JSON response with sorted keys.
func jsonResponse<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
  jsonBody(try NovaJSON.encode(value), status: status)
}

private func jsonBody(_ bytes: some Sequence<UInt8>, status: HTTPResponse.Status) -> Response {
  var headers = HTTPFields()
  headers[.contentType] = "application/json"
  return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
}
