import HTTPTypes

/// The largest body each route reads, in one table: the routes stop reading there (a chunked
/// body announces no size), and `AuthMiddleware` refuses a larger `Content-Length` before a byte
/// of the body is read.
struct RouteBodyLimits: Sendable {
  /// The largest job payload or result the server takes.
  let maxPayloadBytes: Int

  static let claim = 64 * 1024
  static let heartbeat = 16 * 1024
  static let heartbeatBatch = 1024 * 1024
  static let release = 1024 * 1024
  static let fail = 256 * 1024
  static let completeBatch = 64 * 1024 * 1024
  static let kpis = 4 << 20
  static let token = 16 * 1024
  static let alertWebhook = 256 * 1024
  /// Routes that read no body (or a small one): cancel, retry, acknowledge, reload, ...
  static let other = 64 * 1024

  /// A job or a single completion: the payload and the fields around it.
  var job: Int { maxPayloadBytes + 16 * 1024 }
  /// A batch of jobs.
  var jobBatch: Int { max(32 << 20, maxPayloadBytes + 16 * 1024) }

  /// The limit of the route `method` `path` takes.
  func limit(method: HTTPRequest.Method, path: String) -> Int {
    guard method == .post || method == .put || method == .patch else { return Self.other }
    let parts = path.split(separator: "/")
    switch (parts.count, parts.dropFirst().first, parts.last) {
    case (2, "jobs", _): return job
    case (3, "jobs", "batch"): return jobBatch
    case (3, "workers", "claim"): return Self.claim
    case (3, "jobs", "heartbeat"): return Self.heartbeatBatch
    case (3, "jobs", "complete"): return Self.completeBatch
    case (3, "jobs", "release"): return Self.release
    case (4, "jobs", "heartbeat"): return Self.heartbeat
    case (4, "jobs", "complete"): return job
    case (4, "jobs", "fail"): return Self.fail
    case (2, "kpis", _): return Self.kpis
    case (2, "tokens", _): return Self.token
    case (3, "alerts", "pagerduty"): return Self.alertWebhook
    default: return Self.other
    }
  }
}
