import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import NovaAlerting
import NovaApplication
import NovaConsole
import NovaCore
import NovaMonitoring
import NovaPolicy
import NovaQueue
import NovaSecurity
import ServiceLifecycle
import Synchronization

/// The console's routes: sign-in and sign-out, the pages, their actions (each a POST carrying
/// the session's CSRF value, decided by the same policy as the API, and audited), and the
/// server-sent events that keep pages live.
struct ConsoleController: Sendable {
  let auth: ConsoleAuthenticator
  let actions: JobActions
  let audit: AuditLog
  let security: SecurityContext
  let verifier: CheckpointVerifier
  let jobEvents: JobEventTally
  let alertStore: AlertStore?
  let alerts: AlertEngine?
  let clock: any NovaClock

  /// Paths the console answers (its own sign-in; `AuthMiddleware` lets them through).
  static func isConsolePath(_ path: String) -> Bool {
    path == "/" || path == "/login" || path == "/logout" || path == "/console" || path.hasPrefix("/console/")
  }

  /// How many jobs one batch of a bulk action handles, and the most one action counts or touches.
  static let bulkBatch = 500
  static let bulkMaximum = 100_000

  func addRoutes(to router: Router<NovaRequestContext>) {
    router.get("/") { _, _ in Self.redirect("/console") }
    router.get("login", use: loginPage)
    router.post("login", use: login)
    router.post("logout", use: logout)
    router.get("console/assets/console.css") { _, _ in Self.asset(ConsoleAssets.css, type: "text/css; charset=utf-8") }
    router.get("console/assets/console.js") { _, _ in Self.asset(ConsoleAssets.javascript, type: "text/javascript; charset=utf-8") }
    router.get("console") { request, context in try await page(request, context) { try await overview($0).html(viewer: $0.viewer) } }
    router.get("console/events", use: events)
    router.get("console/queues") { request, context in
      try await page(request, context) { identity in
        QueuesPage(queues: try await actions.queues(by: caller(identity, context)), notice: notice(request)).html(viewer: identity.viewer)
      }
    }
    router.post("console/queues/:queue/:action", use: queueAction)
    router.get("console/jobs") { request, context in try await page(request, context) { try await jobsPage(request, $0, context) } }
    router.post("console/jobs/bulk", use: bulk)
    router.get("console/jobs/:id") { request, context in try await page(request, context) { try await jobPage(request, $0, context) } }
    router.get("console/jobs/:id/output", use: followOutput)
    router.post("console/jobs/:id/:action", use: jobAction)
    router.get("console/workers") { request, context in
      try await page(request, context) { identity in
        WorkersPage(workers: try await actions.workers(by: caller(identity, context)), now: clock.now()).html(viewer: identity.viewer)
      }
    }
    router.get("console/alerts") { request, context in
      try await page(request, context) { identity in
        let settings = await alerts?.configuration.settings ?? AlertSettings()
        let list = try await alertStore?.list(limit: 200) ?? []
        return AlertsPage(alerts: list, settings: settings, configured: alerts != nil, now: clock.now(), notice: notice(request))
          .html(viewer: identity.viewer)
      }
    }
    router.post("console/alerts/:id/:action", use: alertAction)
  }

  // MARK: - Responses

  static func html(_ text: String, status: HTTPResponse.Status = .ok, headers extra: HTTPFields = [:]) -> Response {
    var headers = extra
    headers[.contentType] = "text/html; charset=utf-8"
    headers[.contentSecurityPolicy] = ConsoleHTML.contentSecurityPolicy
    headers[.xContentTypeOptions] = "nosniff"
    headers[.cacheControl] = "no-store"
    headers[HTTPField.Name("X-Frame-Options")!] = "DENY"
    headers[HTTPField.Name("Referrer-Policy")!] = "same-origin"
    return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
  }

  static func redirect(_ location: String, headers extra: HTTPFields = [:]) -> Response {
    var headers = extra
    headers[.location] = location
    headers[.cacheControl] = "no-store"
    return Response(status: .seeOther, headers: headers)
  }

  static func asset(_ text: String, type: String) -> Response {
    var headers = HTTPFields()
    headers[.contentType] = type
    headers[.cacheControl] = "public, max-age=300"
    headers[.xContentTypeOptions] = "nosniff"
    return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
  }

  /// A page of the console with only a message (errors, refusals).
  static func message(_ title: String, _ text: String, status: HTTPResponse.Status, viewer: ConsoleViewer?) -> Response {
    let body = "<p class=\"notice error\" role=\"alert\">\(ConsoleHTML.escape(text))</p><p><a href=\"/console\">Back to the console</a></p>"
    return html(ConsoleHTML.page(title: title, section: nil, viewer: viewer, body: body), status: status)
  }

  /// The page's notice from the redirect after an action (`?done=`).
  func notice(_ request: Request) -> String? { request.uri.queryParameters["done"].map(String.init) }

  func caller(_ identity: ConsoleIdentity, _ context: NovaRequestContext) -> Caller {
    Caller(subject: identity.subject, source: context.remoteAddress?.ipAddress)
  }

  // MARK: - Identity

  /// The identity of a request, or the response that refuses it: a page asked for without
  /// signing in goes to the sign-in form.
  func identify(_ request: Request, _ context: NovaRequestContext) async throws -> Passage<ConsoleIdentity> {
    do {
      if let identity = try await auth.identify(request, context: context) { return .success(identity) }
    } catch ConsoleAuthenticator.Refusal.untrustedProxy(let source) {
      return .failure(
        Self.message(
          "Not signed in", "The sign-in header is only believed from the authenticating proxy's addresses; this request came from \(source).",
          status: .forbidden, viewer: nil))
    } catch ConsoleAuthenticator.Refusal.noRole(let who) {
      return .failure(
        Self.message("Not allowed", "\(who.isEmpty ? "This person" : who) has no console role in the role map.", status: .forbidden, viewer: nil))
    }
    if request.method == .get || request.method == .head {
      let target = request.uri.path + (request.uri.query.map { "?" + $0 } ?? "")
      return .failure(Self.redirect("/login?next=" + ConsoleHTML.query(LoginPage.safeNext(target))))
    }
    return .failure(Self.message("Not signed in", "Sign in to do this.", status: .forbidden, viewer: nil))
  }

  /// Renders a page for the signed-in identity, as it: errors become pages with their status.
  func page(_ request: Request, _ context: NovaRequestContext, _ render: (ConsoleIdentity) async throws -> String) async throws -> Response {
    switch try await identify(request, context) {
    case .failure(let response): return response
    case .success(let identity):
      do {
        return Self.html(try await AuditContext.$actor.withValue(identity.actor) { try await render(identity) })
      } catch let redirect as Redirect {
        return Self.redirect(redirect.location)
      } catch {
        return Self.failure(error, viewer: identity.viewer)
      }
    }
  }

  static func failure(_ error: any Error, viewer: ConsoleViewer?) -> Response {
    switch error {
    case NovaError.forbidden(let reason): return message("Not allowed", reason, status: .forbidden, viewer: viewer)
    case NovaError.notFound(let what): return message("Not found", what, status: .notFound, viewer: viewer)
    case NovaError.jobNotFound(let id): return message("Not found", "No job \(id.rawValue).", status: .notFound, viewer: viewer)
    case NovaError.invalidInput(let field, let text): return message("Not accepted", "\(field): \(text)", status: .badRequest, viewer: viewer)
    case let error as APIError: return message("Not accepted", error.message, status: error.status, viewer: viewer)
    default: return message("Something went wrong", "\(error)", status: .internalServerError, viewer: viewer)
    }
  }

  /// A state-changing form: signed in, from this site (`Origin`), carrying the identity's CSRF
  /// value; returns the identity and the form's fields, or the refusal (403).
  func form(_ request: Request, _ context: NovaRequestContext) async throws -> Passage<(ConsoleIdentity, [(String, String)])> {
    let identity: ConsoleIdentity
    switch try await identify(request, context) {
    case .failure(let response): return .failure(response)
    case .success(let found): identity = found
    }
    if let refusal = Self.crossSite(request) { return .failure(Self.message("Refused", refusal, status: .forbidden, viewer: identity.viewer)) }
    var request = request
    let fields: [(String, String)]
    do {
      fields = try await Self.fields(&request)
    } catch {
      return .failure(Self.failure(error, viewer: identity.viewer))
    }
    let presented = fields.last(where: { $0.0 == "csrf" })?.1 ?? ""
    guard TokenStore.constantTimeEqual(Array(presented.utf8), Array(identity.viewer.csrf.utf8)) else {
      return .failure(
        Self.message(
          "Refused", "This form is missing its CSRF token or carries another session's; reload the page and try again.", status: .forbidden,
          viewer: identity.viewer))
    }
    return .success((identity, fields.filter { $0.0 != "csrf" }))
  }

  /// Why a POST is refused as cross-site: an `Origin` (or, lacking it, a `Referer`) that names
  /// another host than the request's.
  static func crossSite(_ request: Request) -> String? {
    let host = request.head.authority
    let origin = request.headers[.origin] ?? request.headers[.referer]
    guard let origin, origin != "null" else { return request.headers[.origin] == "null" ? "A form from an opaque origin is refused." : nil }
    guard let url = URL(string: origin), let originHost = url.host else { return "The Origin header '\(origin)' is not a URL." }
    let originAuthority = originHost + (url.port.map { ":\($0)" } ?? "")
    guard let host, host.lowercased() == originAuthority.lowercased() else {
      return "A form from \(origin) is refused: forms are accepted from this site only."
    }
    return nil
  }

  /// The fields of an URL-encoded form body (at most 1 MiB).
  static func fields(_ request: inout Request) async throws -> [(String, String)] {
    let buffer = try await request.collectBody(upTo: 1 << 20)
    return Self.decodeForm(String(buffer: buffer))
  }

  /// `a=b&c=d` decoded (`+` is a space).
  static func decodeForm(_ text: String) -> [(String, String)] {
    text.split(separator: "&").compactMap { pair in
      let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
      func decode(_ part: Substring) -> String? { part.replacingOccurrences(of: "+", with: " ").removingPercentEncoding }
      guard let name = decode(parts[0]), !name.isEmpty else { return nil }
      return (name, parts.count == 2 ? decode(parts[1]) ?? "" : "")
    }
  }

  /// Runs an action as the identity (its audit actor), and answers with a redirect to `back`
  /// carrying the outcome; refusals and bad input become pages.
  func act(_ identity: ConsoleIdentity, back: String, _ body: () async throws -> String) async -> Response {
    do {
      let done = try await AuditContext.$actor.withValue(identity.actor) { try await body() }
      let separator = back.contains("?") ? "&" : "?"
      return Self.redirect(back + separator + "done=" + ConsoleHTML.query(done))
    } catch {
      return Self.failure(error, viewer: identity.viewer)
    }
  }

  /// Throws `forbidden` unless the identity's role allows `action` (whatever the policy says, a
  /// viewer's forged POST is refused, as on the API).
  func require(_ action: APIAction, _ identity: ConsoleIdentity) throws {
    guard identity.viewer.role.allows(action) else {
      throw NovaError.forbidden("\(identity.viewer.name) has role \(identity.viewer.role.rawValue); \(action.rawValue) needs \(action.rolesText)")
    }
  }

  /// Records a console action in the audit log (signed into it with the next checkpoint).
  func record(_ action: String, subject: String?, _ payload: [String: JSONValue], identity: ConsoleIdentity, source: String?) async throws {
    var payload = payload
    payload["via"] = .string(identity.cookie == nil ? "proxy" : "session")
    if let source { payload["source"] = .string(source) }
    try await audit.append(event: "console.\(action)", subject: subject, payload: .object(payload), actor: identity.actor)
  }

  // MARK: - Sign-in

  @Sendable func loginPage(_ request: Request, context: NovaRequestContext) async throws -> Response {
    let next = LoginPage.safeNext(request.uri.queryParameters["next"].map(String.init))
    if case .success = try await identify(request, context) { return Self.redirect(next) }
    let signedOut = request.uri.queryParameters["signed_out"] != nil
    return Self.html(LoginPage(next: next, notice: signedOut ? "You are signed out." : nil).html)
  }

  @Sendable func login(_ request: Request, context: NovaRequestContext) async throws -> Response {
    if let refusal = Self.crossSite(request) { return Self.message("Refused", refusal, status: .forbidden, viewer: nil) }
    var request = request
    let fields = try await Self.fields(&request)
    let next = LoginPage.safeNext(fields.last(where: { $0.0 == "next" })?.1)
    let token = fields.last(where: { $0.0 == "token" })?.1.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
    let source = context.remoteAddress?.ipAddress ?? "unknown"
    switch try await auth.signIn(token: token, source: source) {
    case .refused(let reason):
      return Self.html(LoginPage(next: next, error: reason).html, status: reason.hasPrefix("Too many") ? .tooManyRequests : .unauthorized)
    case .started(let cookie):
      var headers = HTTPFields()
      headers[.setCookie] = auth.cookieHeader(cookie)
      return Self.redirect(next, headers: headers)
    }
  }

  @Sendable func logout(_ request: Request, context: NovaRequestContext) async throws -> Response {
    switch try await form(request, context) {
    case .failure(let response): return response
    case .success(let (identity, _)):
      if let cookie = identity.cookie { try await auth.sessions.end(cookie: cookie) }
      var headers = HTTPFields()
      headers[.setCookie] = auth.clearingCookieHeader
      return Self.redirect("/login?signed_out=1", headers: headers)
    }
  }

  // MARK: - Overview

  func overview(_ identity: ConsoleIdentity) async throws -> OverviewPage {
    let caller = Caller(subject: identity.subject)
    let queues = try await actions.queues(by: caller)
    let workers = try await actions.workers(by: caller)
    let now = clock.now()
    let live = workers.filter { $0.expiresAt > now }
    var gpus = 0
    var inUse = 0
    for worker in live {
      guard let capacity = worker.capacity else { continue }
      gpus += capacity.gpus.count
      inUse += capacity.gpus.count - (worker.free?.gpus.count ?? capacity.gpus.count)
    }
    let firing = try await alertStore?.list(states: [.firing], limit: 100) ?? []
    let status = try await verifier.status()
    let audit = AuditStatus(
      entries: status.entries, checkpointSize: status.checkpointSize, checkpointTime: status.checkpointTime,
      verified: status.checkpointSize == nil ? nil : status.valid, problem: status.problem)
    let (completed, failed) = try await perMinute(now: now)
    return OverviewPage(
      queues: queues, workersLive: live.count, workersLapsed: workers.count - live.count, gpus: gpus, gpusInUse: inUse, firing: firing,
      audit: audit, completedPerMinute: completed, failedPerMinute: failed, now: now)
  }

  /// Jobs finished and failed per minute over the last hour, from the audit log's job
  /// transitions (counted incrementally).
  func perMinute(now: Date) async throws -> ([Int], [Int]) {
    let counts = try await jobEvents.perMinute(now: now.millisecondsSince1970)
    return (counts.completed, counts.failed)
  }

  /// `text/event-stream` of the overview's figures every two seconds, for ten minutes (the
  /// browser reconnects by itself).
  @Sendable func events(_ request: Request, context: NovaRequestContext) async throws -> Response {
    let identity: ConsoleIdentity
    switch try await identify(request, context) {
    case .failure(let response): return response
    case .success(let found): identity = found
    }
    let clock = clock
    return Self.eventStream { send, stopping in
      for _ in 0..<300 {
        if stopping() || Task.isCancelled { break }
        let figures = try await overview(identity).figures
        let data = try JSONSerialization.data(withJSONObject: figures, options: [.sortedKeys])
        try await send("figures", String(decoding: data, as: UTF8.self))
        try await clock.sleep(for: .seconds(2))
      }
    }
  }

  /// A `text/event-stream` response whose events `body` sends (`send(event, data)`) until it
  /// returns or `stopping()` says the server is stopping; the browser reconnects after 5 s.
  static func eventStream(
    _ body: @escaping @Sendable (_ send: (String, String) async throws -> Void, _ stopping: @Sendable () -> Bool) async throws -> Void
  ) -> Response {
    var headers = HTTPFields()
    headers[.contentType] = "text/event-stream"
    headers[.cacheControl] = "no-store"
    return Response(
      status: .ok, headers: headers,
      body: ResponseBody { writer in
        let stopping = Mutex(false)
        try await withGracefulShutdownHandler {
          try await writer.write(ByteBuffer(string: "retry: 5000\n\n"))
          try await body({ event, data in try await writer.write(ByteBuffer(string: "event: \(event)\ndata: \(data)\n\n")) }) {
            stopping.withLock { $0 }
          }
        } onGracefulShutdown: {
          stopping.withLock { $0 = true }
        }
        try await writer.finish(nil)
      })
  }

  // MARK: - Queues

  @Sendable func queueAction(_ request: Request, context: NovaRequestContext) async throws -> Response {
    switch try await form(request, context) {
    case .failure(let response): return response
    case .success(let (identity, fields)):
      let name = context.parameters.get("queue") ?? ""
      let action = context.parameters.get("action") ?? ""
      return await act(identity, back: "/console/queues") {
        try require(.control, identity)
        let caller = caller(identity, context)
        switch action {
        case "pause": _ = try await actions.changeControls(of: name, by: caller) { $0.paused = true }
        case "resume": _ = try await actions.changeControls(of: name, by: caller) { $0.paused = false }
        case "controls":
          _ = try await actions.changeControls(of: name, by: caller) { controls in
            for (field, raw) in fields {
              let value = raw.trimmingCharacters(in: .whitespaces)
              func int() throws -> Int? {
                if value.isEmpty { return nil }
                guard let number = Int(value) else { throw NovaError.invalidInput(field: field, message: "'\(value)' is not a whole number") }
                return number
              }
              func rate() throws -> Double? {
                if value.isEmpty { return nil }
                guard let number = Double(value), number.isFinite else {
                  throw NovaError.invalidInput(field: field, message: "'\(value)' is not a number")
                }
                return number
              }
              switch field {
              case "max_running": controls.maxRunning = try int()
              case "weight": controls.weight = try int() ?? 1
              case "rate_per_second": controls.ratePerSecond = try rate()
              case "max_running_per_key": controls.maxRunningPerKey = try int()
              case "rate_per_key": controls.ratePerKey = try rate()
              default: throw NovaError.invalidInput(field: field, message: "unknown field of a queue's limits")
              }
            }
          }
        default: throw NovaError.notFound("no queue action '\(action)'; use pause, resume or controls")
        }
        try await record("queue_\(action)", subject: name, ["queue": .string(name)], identity: identity, source: context.remoteAddress?.ipAddress)
        return action == "controls" ? "Saved the limits of \(name)." : "Queue \(name) \(action == "pause" ? "paused" : "resumed")."
      }
    }
  }

  // MARK: - Jobs

  func jobsPage(_ request: Request, _ identity: ConsoleIdentity, _ context: NovaRequestContext) async throws -> String {
    let query = try JobsQuery(fields: request.uri.queryParameters.map { (String($0.key), String($0.value)) }, allowing: ["done"])
    if let id = query.jobID, try await actions.queue.get(id) != nil {
      // A search for a job id opens the job.
      throw Redirect(location: "/console/jobs/\(id.rawValue)")
    }
    let page = try await actions.list(query.filter, by: caller(identity, context))
    return JobsPage(query: query, jobs: page.jobs, nextCursor: page.nextCursor, notice: notice(request)).html(viewer: identity.viewer)
  }

  /// Thrown by a page renderer that answers with a redirect instead.
  struct Redirect: Error { var location: String }

  func jobPage(_ request: Request, _ identity: ConsoleIdentity, _ context: NovaRequestContext) async throws -> String {
    let text = context.parameters.get("id") ?? ""
    let id = JobID(text)
    guard id.isWellFormed else { throw NovaError.invalidInput(field: "id", message: "'\(text)' is not a job id") }
    let caller = caller(identity, context)
    let job = try await actions.get(id, by: caller)
    var attemptShown: Int?
    if let raw = request.uri.queryParameters["attempt"] {
      guard let number = Int(raw), number >= 1 else { throw NovaError.invalidInput(field: "attempt", message: "'\(raw)' is not an attempt number") }
      attemptShown = number
    }
    let trail = try await audit.trail(subject: id.rawValue, verifier: security.signer.verifier, origin: security.origin)
    var attempts = JobAttempt.from(trail.items.map(\.entry))
    let registry = Dictionary(try await actions.queue.workers().map { ($0.worker, $0) }, uniquingKeysWith: { $1 })
    for index in attempts.indices {
      if let worker = attempts[index].worker, let presence = registry[worker] {
        attempts[index].host = presence.capacity?.host ?? presence.host
      }
      if index == attempts.count - 1, let placement = job.placement {
        attempts[index].host = attempts[index].host ?? placement.host
        attempts[index].gpus = placement.gpus.isEmpty ? "none" : placement.visibleDevices
      }
    }
    let shown = attemptShown ?? (job.attempts > 0 ? job.attempts : nil)
    var output: String?
    if let store = actions.queue.logStore {
      var text = ""
      if let shown {
        var after: Int64 = 0
        // The page shows the first 4 MiB; the API has all of it.
        while text.utf8.count < 4 << 20 {
          let chunks = try await store.logs(of: id, attempt: shown, after: after, limit: 1000)
          for chunk in chunks { text += String(decoding: chunk.data, as: UTF8.self) }
          guard let last = chunks.last, chunks.count == 1000 else { break }
          after = last.sequence
        }
      }
      output = text
    }
    let waiting = try await actions.waitingFor(job)
    return JobDetailPage(
      job: job, waitingFor: waiting, attempts: attempts, outputAttempt: shown, output: output, trail: trail, notice: notice(request)
    ).html(viewer: identity.viewer)
  }

  /// A running attempt's output as server-sent events (`output` per piece, `end` when over).
  @Sendable func followOutput(_ request: Request, context: NovaRequestContext) async throws -> Response {
    let identity: ConsoleIdentity
    switch try await identify(request, context) {
    case .failure(let response): return response
    case .success(let found): identity = found
    }
    let id = JobID(context.parameters.get("id") ?? "")
    let attempt = request.uri.queryParameters["attempt"].flatMap { Int(String($0)) }
    let feed: JobLogFeed
    do {
      feed = try await actions.logs(id, attempt: attempt, clock: clock, by: caller(identity, context))
    } catch {
      return Self.failure(error, viewer: identity.viewer)
    }
    return Self.eventStream { send, stopping in
      try await feed.read(follow: true, stop: stopping) { chunks in
        let text = chunks.map { String(decoding: $0.data, as: UTF8.self) }.joined()
        let data = try JSONSerialization.data(withJSONObject: ["text": text])
        try await send("output", String(decoding: data, as: UTF8.self))
      }
      try await send("end", "{}")
    }
  }

  @Sendable func jobAction(_ request: Request, context: NovaRequestContext) async throws -> Response {
    switch try await form(request, context) {
    case .failure(let response): return response
    case .success(let (identity, _)):
      let id = JobID(context.parameters.get("id") ?? "")
      let action = context.parameters.get("action") ?? ""
      return await act(identity, back: "/console/jobs/\(id.rawValue)") {
        try require(action == "cancel" ? .cancel : .retry, identity)
        let caller = caller(identity, context)
        switch action {
        case "retry": _ = try await actions.retry(id, by: caller)
        case "cancel": _ = try await actions.cancel(id, by: caller)
        default: throw NovaError.notFound("no job action '\(action)'; use retry or cancel")
        }
        try await record("job_\(action)", subject: id.rawValue, [:], identity: identity, source: context.remoteAddress?.ipAddress)
        return action == "retry" ? "The job is queued again." : "The job is cancelled."
      }
    }
  }

  /// A bulk action: the first POST answers the confirmation with the count; the confirmed one
  /// runs in batches and is audited as one action with its filter and count.
  @Sendable func bulk(_ request: Request, context: NovaRequestContext) async throws -> Response {
    switch try await form(request, context) {
    case .failure(let response): return response
    case .success(let (identity, fields)):
      do {
        let chosen = fields.last(where: { $0.0 == "bulk" })?.1 ?? ""
        let parts = chosen.split(separator: "-")
        guard parts.count == 2, let action = BulkAction(rawValue: String(parts[0])), parts[1] == "all" || parts[1] == "selected" else {
          throw NovaError.invalidInput(field: "bulk", message: "'\(chosen)' is not an action; use retry, cancel or delete with -all or -selected")
        }
        let query = try JobsQuery(fields: fields, allowing: ["bulk", "id", "confirm"])
        let selected: [String]? = parts[1] == "selected" ? fields.filter { $0.0 == "id" }.map { $0.1 } : nil
        if let selected {
          if selected.isEmpty { throw NovaError.invalidInput(field: "id", message: "no job is selected; tick the jobs first") }
          if selected.count > Self.bulkMaximum { throw NovaError.invalidInput(field: "id", message: "at most \(Self.bulkMaximum) jobs at once") }
          for id in selected where !JobID(id).isWellFormed { throw NovaError.invalidInput(field: "id", message: "'\(id)' is not a job id") }
        }
        try require(action == .retry ? .retry : .cancel, identity)
        let caller = caller(identity, context)
        try await actions.authorize(
          caller, action == .delete ? "cancel" : action.rawValue, PolicyResource(kind: "job", attributes: query.policyAttributes))
        guard let confirmed = fields.last(where: { $0.0 == "confirm" })?.1 else {
          let (jobs, capped) = try await targets(action, query: query, selected: selected, caller: caller)
          return Self.html(
            BulkConfirmationPage(action: action, query: query, selected: selected, count: jobs.count, capped: capped).html(viewer: identity.viewer))
        }
        return await act(identity, back: "/console/jobs" + (query.queryString.isEmpty ? "" : "?" + query.queryString)) {
          let (jobs, _) = try await targets(action, query: query, selected: selected, caller: caller)
          // One policy decision per queue and kind among the jobs (each recorded), not one per job.
          try await actions.authorize(caller, action == .delete ? "cancel" : action.rawValue, jobs: jobs.map { [$0.queue, $0.kind] })
          var done = 0
          var skipped = 0
          for start in stride(from: 0, to: jobs.count, by: Self.bulkBatch) {
            let batch = Array(jobs[start..<min(jobs.count, start + Self.bulkBatch)])
            switch action {
            case .delete:
              done += try await actions.queue.delete(batch.map { ($0.id, $0.queue) })
            case .retry, .cancel:
              for job in batch {
                do {
                  _ = action == .retry ? try await actions.queue.retry(job.id) : try await actions.queue.cancel(job.id)
                  done += 1
                } catch {
                  // A job that moved on since it was counted (finished, retried by another) is skipped.
                  skipped += 1
                }
              }
            }
          }
          var payload: [String: JSONValue] = [
            "action": .string(action.rawValue), "count": .int(Int64(done)), "confirmed_count": .string(confirmed),
            "filter": .object(Dictionary(query.pairs.map { ($0.0, JSONValue.string($0.1)) }, uniquingKeysWith: { $1 })),
          ]
          if let selected { payload["selected"] = .int(Int64(selected.count)) }
          if skipped > 0 { payload["skipped"] = .int(Int64(skipped)) }
          try await record("bulk", subject: nil, payload, identity: identity, source: context.remoteAddress?.ipAddress)
          let verb = action == .retry ? "Retried" : action == .cancel ? "Cancelled" : "Deleted"
          return "\(verb) \(done) jobs\(skipped > 0 ? " (\(skipped) had moved on and were left alone)" : "")."
        }
      } catch {
        return Self.failure(error, viewer: identity.viewer)
      }
    }
  }

  /// The jobs a bulk action would touch now: the selected ones, or every job matching the
  /// filter, in a state the action applies to (counted up to `bulkMaximum`).
  func targets(_ action: BulkAction, query: JobsQuery, selected: [String]?, caller: Caller) async throws -> (jobs: [Job], capped: Bool) {
    var found: [Job] = []
    if let selected {
      for id in selected {
        if let job = try await actions.queue.get(JobID(id)), action.states.contains(job.state) { found.append(job) }
      }
      return (found, false)
    }
    // One listing per state the action applies to (or the state filtered on), page by page.
    let states = query.state.map { action.states.contains($0) ? [$0] : [] } ?? action.states.sorted { $0.rawValue < $1.rawValue }
    for state in states {
      var filter = query.filter
      filter.state = state
      filter.limit = 1000
      filter.cursor = nil
      while true {
        let page = try await actions.list(filter, by: caller)
        found += page.jobs
        if found.count >= Self.bulkMaximum { return (Array(found.prefix(Self.bulkMaximum)), true) }
        guard let next = page.nextCursor else { break }
        filter.cursor = next
      }
    }
    return (found, false)
  }

  // MARK: - Alerts

  @Sendable func alertAction(_ request: Request, context: NovaRequestContext) async throws -> Response {
    switch try await form(request, context) {
    case .failure(let response): return response
    case .success(let (identity, _)):
      let text = context.parameters.get("id") ?? ""
      let action = context.parameters.get("action") ?? ""
      return await act(identity, back: "/console/alerts") {
        guard let id = Int64(text), id > 0 else { throw NovaError.invalidInput(field: "id", message: "'\(text)' is not an alert id") }
        guard let alerts else { throw NovaError.notFound("alerting is not configured (start nova serve with --thresholds)") }
        let decided = action == "ack" ? "acknowledge" : action
        guard decided == "acknowledge" || decided == "resolve" else {
          throw NovaError.notFound("no alert action '\(action)'; use ack or resolve")
        }
        try require(decided == "acknowledge" ? .acknowledge : .resolve, identity)
        try await actions.authorize(caller(identity, context), decided, PolicyResource(kind: "alert", id: text))
        if decided == "acknowledge" {
          _ = try await alerts.acknowledge(id: id, by: identity.actor)
        } else {
          _ = try await alerts.resolve(id: id, by: identity.actor)
        }
        try await record("alert_\(decided)", subject: text, [:], identity: identity, source: context.remoteAddress?.ipAddress)
        return decided == "acknowledge" ? "Alert \(id) acknowledged." : "Alert \(id) resolved."
      }
    }
  }
}

extension JobsQuery {
  /// What the policy sees of a bulk action's filter.
  var policyAttributes: [String: String] {
    var attributes: [String: String] = [:]
    if let queue { attributes["queue"] = queue }
    if let kind { attributes["job_kind"] = kind }
    return attributes
  }
}

/// A check's outcome: go on with the value, or answer with the response.
enum Passage<Value> {
  case success(Value)
  case failure(Response)
}
