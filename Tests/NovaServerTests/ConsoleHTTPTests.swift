import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import NovaApplication
import NovaConsole
import NovaCore
import NovaDatabase
import NovaQueue
import NovaSecurity
import NovaServer
import NovaTestSupport
import Testing

@Suite("Console over HTTP", .timeLimit(.minutes(5)))
struct ConsoleHTTPTests {
  struct Setup {
    let server: NovaServer
    let queue: SQLiteJobQueue
    let security: SecurityContext
    let admin: String
    let operatorToken: String
    let viewer: String
  }

  func makeServer(console: ConsoleSettings = ConsoleSettings()) async throws -> Setup {
    let directory = try TemporaryDirectory.make()
    let queue = try SQLiteJobQueue(
      configuration: .init(path: directory.appendingPathComponent("nova.sqlite").path, journal: AuditJournal()))
    let security = try SecurityContext(database: queue.database, keyPath: directory.appendingPathComponent("key").path)
    let admin = try await security.tokens.create(name: "root", role: .admin).token
    let operatorToken = try await security.tokens.create(name: "ops", role: .operator).token
    let viewer = try await security.tokens.create(name: "eve", role: .viewer).token
    var logger = Logger(label: "test")
    logger.logLevel = .warning
    TestMetrics.bootstrap()
    var configuration = NovaServer.Configuration(workers: 0)
    configuration.console = console
    let server = try NovaServer(configuration: configuration, queue: queue, security: security, logger: logger)
    return Setup(server: server, queue: queue, security: security, admin: admin, operatorToken: operatorToken, viewer: viewer)
  }

  /// A browser's state: its session cookie, and the CSRF value of the last page it read.
  struct Browser {
    var cookie = ""
    var csrf = ""

    var headers: HTTPFields { cookie.isEmpty ? [:] : [.cookie: "nova_session=\(cookie)"] }

    func form(_ fields: [(String, String)], csrf: String? = nil) -> ByteBuffer {
      let all = fields + [("csrf", csrf ?? self.csrf)]
      return ByteBuffer(
        string: all.map { "\($0.0)=\($0.1.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "")" }.joined(separator: "&"))
    }

    var formHeaders: HTTPFields {
      var headers = self.headers
      headers[.contentType] = "application/x-www-form-urlencoded"
      return headers
    }

    mutating func read(_ page: String) {
      if let range = page.range(of: #"name="csrf" value="([^"]+)""#, options: .regularExpression) {
        csrf = String(page[range].dropFirst(#"name="csrf" value=""#.count).dropLast())
      }
    }
  }

  func signIn(_ client: some TestClientProtocol, token: String) async throws -> Browser {
    var browser = Browser()
    try await client.execute(
      uri: "/login", method: .post, headers: [.contentType: "application/x-www-form-urlencoded"],
      body: ByteBuffer(string: "token=\(token)&next=%2Fconsole")
    ) { response in
      #expect(response.status == .seeOther)
      #expect(response.headers[.location] == "/console")
      let cookie = try #require(response.headers[.setCookie])
      #expect(cookie.contains("HttpOnly"))
      #expect(cookie.contains("SameSite=Strict"))
      #expect(!cookie.contains("Secure"))
      browser.cookie = String(cookie.prefix { $0 != ";" }.dropFirst("nova_session=".count))
    }
    try await client.execute(uri: "/console", method: .get, headers: browser.headers) { response in
      #expect(response.status == .ok)
      #expect(response.headers[.contentSecurityPolicy]?.contains("default-src 'none'") == true)
      browser.read(String(buffer: response.body))
    }
    #expect(!browser.csrf.isEmpty)
    return browser
  }

  @Test func signInSessionsCSRFAndRoles() async throws {
    let setup = try await makeServer()
    let app = Application(router: setup.server.makeRouter())
    _ = try await setup.queue.enqueue(JobRequest(kind: "echo", queue: "mail"))
    try await app.test(.router) { client in
      // Not signed in: pages go to the sign-in form, actions are refused.
      try await client.execute(uri: "/console/jobs?state=dead", method: .get) { response in
        #expect(response.status == .seeOther)
        #expect(response.headers[.location] == "/login?next=%2Fconsole%2Fjobs%3Fstate%3Ddead")
      }
      try await client.execute(uri: "/login", method: .get) { response in
        #expect(response.status == .ok)
        #expect(String(buffer: response.body).contains("name=\"token\""))
      }
      try await client.execute(uri: "/lux", method: .get) { #expect($0.headers[.location] == "/login?next=/lux") }
      try await client.execute(
        uri: "/login", method: .post, headers: [.contentType: "application/x-www-form-urlencoded"], body: ByteBuffer(string: "token=nova_x_y")
      ) { response in
        #expect(response.status == .unauthorized)
        #expect(response.headers[.setCookie] == nil)
      }
      // A forged sign-in form from another site is refused.
      try await client.execute(
        uri: "/login", method: .post, headers: [.contentType: "application/x-www-form-urlencoded", .origin: "https://evil.example"],
        body: ByteBuffer(string: "token=\(setup.admin)")
      ) { #expect($0.status == .forbidden) }

      var ops = try await signIn(client, token: setup.operatorToken)
      var eve = try await signIn(client, token: setup.viewer)
      // A cookie never authorizes the API.
      try await client.execute(uri: "/v1/jobs", method: .get, headers: ops.headers) { #expect($0.status == .unauthorized) }
      // The viewer sees no action buttons, and a forged POST with its own CSRF value is 403.
      try await client.execute(uri: "/console/queues", method: .get, headers: eve.headers) { response in
        let page = String(buffer: response.body)
        #expect(page.contains("data-queue=\"mail\""))
        #expect(!page.contains("Pause mail"))
        eve.read(page)
      }
      try await client.execute(uri: "/console/queues/mail/pause", method: .post, headers: eve.formHeaders, body: eve.form([])) {
        #expect($0.status == .forbidden)
      }
      #expect(try await setup.queue.controls()["mail"]?.paused != true)
      // The operator's POST without a CSRF value, or with the viewer's, is 403.
      try await client.execute(uri: "/console/queues", method: .get, headers: ops.headers) { response in
        let page = String(buffer: response.body)
        #expect(page.contains("Pause mail"))
        ops.read(page)
      }
      try await client.execute(uri: "/console/queues/mail/pause", method: .post, headers: ops.formHeaders, body: ops.form([], csrf: "")) {
        #expect($0.status == .forbidden)
      }
      try await client.execute(uri: "/console/queues/mail/pause", method: .post, headers: ops.formHeaders, body: ops.form([], csrf: eve.csrf)) {
        #expect($0.status == .forbidden)
      }
      var crossSite = ops.formHeaders
      crossSite[.origin] = "https://evil.example"
      try await client.execute(uri: "/console/queues/mail/pause", method: .post, headers: crossSite, body: ops.form([])) {
        #expect($0.status == .forbidden)
      }
      #expect(try await setup.queue.controls()["mail"]?.paused != true)
      try await client.execute(uri: "/console/queues/mail/pause", method: .post, headers: ops.formHeaders, body: ops.form([])) { response in
        #expect(response.status == .seeOther)
        #expect(response.headers[.location]?.hasPrefix("/console/queues?done=") == true)
      }
      #expect(try await setup.queue.controls()["mail"]?.paused == true)
      try await client.execute(
        uri: "/console/queues/mail/controls", method: .post, headers: ops.formHeaders,
        body: ops.form([("max_running", "3"), ("weight", "5"), ("rate_per_second", ""), ("max_running_per_key", ""), ("rate_per_key", "")])
      ) { #expect($0.status == .seeOther) }
      #expect(try await setup.queue.controls()["mail"]?.maxRunning == 3)
      try await client.execute(
        uri: "/console/queues/mail/controls", method: .post, headers: ops.formHeaders, body: ops.form([("max_running", "lots")])
      ) { response in
        #expect(response.status == .badRequest)
        #expect(String(buffer: response.body).contains("max_running"))
      }
      try await client.execute(uri: "/console/queues/mail/resume", method: .post, headers: ops.formHeaders, body: ops.form([])) {
        #expect($0.status == .seeOther)
      }
      #expect(try await setup.queue.controls()["mail"]?.paused == false)
      // The compliance page takes the session.
      try await client.execute(uri: "/lux", method: .get, headers: eve.headers) { response in
        #expect(response.status == .ok)
        #expect(String(buffer: response.body).contains("Nova compliance"))
      }
      // Every page renders for a viewer.
      for path in ["/console", "/console/jobs", "/console/workers", "/console/alerts", "/console/jobs?state=available&queue=mail"] {
        try await client.execute(uri: path, method: .get, headers: eve.headers) { #expect($0.status == .ok, "\(path)") }
      }
      try await client.execute(uri: "/console/jobs?state=lost", method: .get, headers: eve.headers) { response in
        #expect(response.status == .badRequest)
        #expect(String(buffer: response.body).contains("state"))
      }

      // Revoking the token ends its sessions at once.
      try await setup.security.tokens.revoke(name: "eve")
      try await client.execute(uri: "/console", method: .get, headers: eve.headers) { #expect($0.status == .seeOther) }

      // Sign-out ends the session; the old cookie no longer works.
      try await client.execute(uri: "/logout", method: .post, headers: ops.formHeaders, body: ops.form([])) { response in
        #expect(response.status == .seeOther)
        #expect(response.headers[.setCookie]?.contains("Max-Age=0") == true)
      }
      try await client.execute(uri: "/console", method: .get, headers: ops.headers) { #expect($0.status == .seeOther) }
    }
    let events = try await setup.security.audit.entries(from: 1, through: try await setup.security.audit.size()).map(\.event)
    #expect(events.filter { $0 == "console.signed_in" }.count == 2)
    #expect(events.contains("console.signed_out"))
    #expect(events.contains("console.queue_pause"))
    #expect(events.contains("auth.failed"))
  }

  @Test func workerTokensCannotSignInAndSessionsExpire() async throws {
    let setup = try await makeServer()
    let worker = try await setup.security.tokens.create(name: "w1", role: .worker).token
    let app = Application(router: setup.server.makeRouter())
    try await app.test(.router) { client in
      try await client.execute(
        uri: "/login", method: .post, headers: [.contentType: "application/x-www-form-urlencoded"], body: ByteBuffer(string: "token=\(worker)")
      ) { response in
        #expect(response.status == .unauthorized)
        #expect(String(buffer: response.body).contains("worker token"))
      }
    }
    let sessions = ConsoleSessionStore(audit: setup.security.audit, lifetime: .init(absolute: .seconds(3600), idle: .seconds(600)))
    let token = try #require(try await setup.security.tokens.list().first { $0.name == "eve" })
    let start = Date()
    let (cookie, session) = try await sessions.start(for: token, source: "127.0.0.1", now: start)
    let later = try #require(try await sessions.session(cookie: cookie, now: start.addingTimeInterval(300)))
    #expect(later.handle == session.handle && later.csrf == session.csrf && later.token.name == "eve")
    #expect(later.lastSeen.timeIntervalSince(start) > 299)
    // Idle more than ten minutes since the last request: over.
    #expect(try await sessions.session(cookie: cookie, now: start.addingTimeInterval(300 + 601)) == nil)
    // However active, an hour after sign-in: over.
    let (active, _) = try await sessions.start(for: token, source: "127.0.0.1", now: start)
    for minute in stride(from: 5, through: 55, by: 5) {
      #expect(try await sessions.session(cookie: active, now: start.addingTimeInterval(Double(minute * 60))) != nil)
    }
    #expect(try await sessions.session(cookie: active, now: start.addingTimeInterval(3601)) == nil)
    #expect(try await sessions.session(cookie: "not-a-session") == nil)
    #expect(try await sessions.liveCount(now: start) == 0)
    await #expect(throws: NovaError.self) {
      _ = try await sessions.start(for: APIToken(id: "x", name: "w", role: .worker, createdAt: start, revokedAt: nil), source: "x")
    }
  }

  @Test func bulkRetryOfDeadJobsAndTheJobPageTrail() async throws {
    let setup = try await makeServer()
    let app = Application(router: setup.server.makeRouter())
    var made: [JobID] = []
    for index in 0..<3 {
      let id: JobID = try await setup.queue.enqueue(JobRequest(kind: index < 2 ? "resize" : "other", maxAttempts: 1))
      let lease = try #require(try await setup.queue.claim(queues: ["default"], worker: "w-1", leaseDuration: .seconds(30), limit: 1).first)
      #expect(lease.id == id)
      _ = try await setup.queue.fail(lease, error: "boom \(index)", retryable: false)
      made.append(id)
    }
    let dead = made
    _ = try await setup.security.audit.checkpoint(signer: setup.security.signer, origin: setup.security.origin)
    try await app.test(.router) { client in
      var ops = try await signIn(client, token: setup.operatorToken)
      // The overview counts the three jobs that died this minute, from their audit entries.
      try await client.execute(uri: "/console", method: .get, headers: ops.headers) { response in
        #expect(String(buffer: response.body).contains("<span data-live-id=\"failures.hour\">3</span>"))
      }
      // Search by id opens the job; its trail is proved against the signed checkpoint.
      try await client.execute(uri: "/console/jobs?q=\(dead[0].rawValue)", method: .get, headers: ops.headers) { response in
        #expect(response.status == .seeOther)
        #expect(response.headers[.location] == "/console/jobs/\(dead[0].rawValue)")
      }
      try await client.execute(uri: "/console/jobs/\(dead[0].rawValue)", method: .get, headers: ops.headers) { response in
        let page = String(buffer: response.body)
        #expect(page.contains("data-trail=\"verified\""))
        #expect(page.contains("data-proof=\"verified\""))
        #expect(!page.contains("data-proof=\"failed\""))
        #expect(page.contains("boom 0"))
        #expect(page.contains("w-1"))
        #expect(page.contains("Retry job"))
      }
      try await client.execute(uri: "/console/jobs/\(dead[0].rawValue)", method: .get, headers: ops.headers) { ops.read(String(buffer: $0.body)) }
      // Bulk: the first POST asks for confirmation with the count of dead resize jobs.
      try await client.execute(
        uri: "/console/jobs/bulk", method: .post, headers: ops.formHeaders,
        body: ops.form([("state", "dead"), ("kind", "resize"), ("bulk", "retry-all")])
      ) { response in
        #expect(response.status == .ok)
        #expect(String(buffer: response.body).contains("data-bulk-count=\"2\""))
      }
      #expect(try await setup.queue.get(dead[0])?.state == .dead)
      try await client.execute(
        uri: "/console/jobs/bulk", method: .post, headers: ops.formHeaders,
        body: ops.form([("state", "dead"), ("kind", "resize"), ("bulk", "retry-all"), ("confirm", "2")])
      ) { response in
        #expect(response.status == .seeOther)
        #expect(response.headers[.location]?.contains("Retried%202%20jobs") == true)
      }
      #expect(try await setup.queue.get(dead[0])?.state == .available)
      #expect(try await setup.queue.get(dead[1])?.state == .available)
      #expect(try await setup.queue.get(dead[2])?.state == .dead)
      // Selected rows: delete the one left dead.
      try await client.execute(
        uri: "/console/jobs/bulk", method: .post, headers: ops.formHeaders,
        body: ops.form([("bulk", "delete-selected"), ("id", dead[2].rawValue), ("confirm", "1")])
      ) { #expect($0.status == .seeOther) }
      #expect(try await setup.queue.get(dead[2]) == nil)
      // A job page after the trail's entries were changed behind Nova's back shows it.
      let tampered = try await shell(
        "sqlite3 '\(setup.queue.database.path)' \"DROP TRIGGER nova_audit_no_update; UPDATE nova_audit SET payload = replace(payload, 'boom 1', 'fine') WHERE subject = '\(dead[1].rawValue)'\""
      )
      #expect(tampered.code == 0, "\(tampered.output)")
      try await client.execute(uri: "/console/jobs/\(dead[1].rawValue)", method: .get, headers: ops.headers) { response in
        let page = String(buffer: response.body)
        #expect(page.contains("data-trail=\"failed\""))
        #expect(page.contains("data-proof=\"failed\""))
      }
    }
    let bulk = try await setup.security.audit.entries(from: 1, through: try await setup.security.audit.size()).filter { $0.event == "console.bulk" }
    #expect(bulk.count == 2)
    #expect(bulk.first?.payload.contains(#""count":2"#) == true)
    #expect(bulk.first?.payload.contains(#""kind":"resize""#) == true)
  }

  /// A long job's output arrives piece by piece while a browser follows it: each piece comes as
  /// an event when written, and the stream ends once the job is over.
  @Test func aRunningAttemptsOutputIsFollowedAsItIsWritten() async throws {
    let setup = try await makeServer()
    let id: JobID = try await setup.queue.enqueue(JobRequest(kind: "echo", queue: "long"))
    let lease = try #require(try await setup.queue.claim(queues: ["long"], worker: "w-1", leaseDuration: .seconds(60), limit: 1).first)
    let queue = setup.queue
    @Sendable func write(_ text: String) async throws {
      try await queue.appendLogs([JobLogChunk(job: id, queue: "long", attempt: 1, stream: .stdout, data: Data(text.utf8), time: Date())])
    }
    try await write("epoch 1\n")
    let app = Application(router: setup.server.makeRouter())
    try await app.test(.live) { client in
      let ops = try await signIn(client, token: setup.operatorToken)
      try await client.execute(uri: "/console/jobs/\(id.rawValue)", method: .get, headers: ops.headers) { response in
        #expect(String(buffer: response.body).contains("data-follow=\"/console/jobs/\(id.rawValue)/output?attempt=1\""))
      }
      // The job goes on writing, then ends, while the follower waits.
      let writer = Task {
        try await Task.sleep(for: .milliseconds(400))
        try await write("epoch 2\n")
        try await Task.sleep(for: .milliseconds(400))
        try await queue.complete(lease, result: nil)
      }
      let started = ContinuousClock.now
      try await client.execute(uri: "/console/jobs/\(id.rawValue)/output?attempt=1", method: .get, headers: ops.headers) { response in
        #expect(response.headers[.contentType] == "text/event-stream")
        let body = String(buffer: response.body)
        let first = try #require(body.range(of: "epoch 1"))
        let second = try #require(body.range(of: "epoch 2"))
        #expect(first.lowerBound < second.lowerBound)
        #expect(body.hasSuffix("event: end\ndata: {}\n\n"))
      }
      #expect(ContinuousClock.now - started >= .milliseconds(700))
      try await writer.value
    }
  }

  @Test func signInThroughTheAuthenticatingProxy() async throws {
    let roles = try AuthProxyRoles.parse(
      """
      users:
        ada@example.com: operator
      patterns:
        - match: "*@example.com"
          role: viewer
      default: none
      """, file: "roles.yaml")
    for (trusted, allowed) in [("127.0.0.1, ::1", true), ("10.0.0.0/8", false)] {
      let setup = try await makeServer(
        console: ConsoleSettings(
          authProxy: AuthProxy(header: "X-Forwarded-Email", roles: roles, trusted: try AddressRange.list(trusted, field: "trusted"))))
      _ = try await setup.queue.enqueue(JobRequest(kind: "echo", queue: "mail"))
      let app = Application(router: setup.server.makeRouter())
      try await app.test(.live) { client in
        try await client.execute(uri: "/console/queues", method: .get, headers: [HTTPField.Name("X-Forwarded-Email")!: "ada@example.com"]) {
          response in
          let page = String(buffer: response.body)
          if allowed {
            #expect(response.status == .ok)
            #expect(page.contains("data-viewer=\"ada@example.com\""))
            #expect(page.contains("Pause mail"))
          } else {
            #expect(response.status == .forbidden)
            #expect(page.contains("only believed from"))
          }
        }
        if allowed {
          try await client.execute(uri: "/console/queues", method: .get, headers: [HTTPField.Name("X-Forwarded-Email")!: "bob@example.com"]) {
            response in
            #expect(response.status == .ok)
            #expect(String(buffer: response.body).contains("data-viewer=\"bob@example.com\""))
            #expect(!String(buffer: response.body).contains("/pause"))
          }
          try await client.execute(uri: "/console", method: .get, headers: [HTTPField.Name("X-Forwarded-Email")!: "mallory@elsewhere.org"]) {
            #expect($0.status == .forbidden)
          }
          try await client.execute(uri: "/lux", method: .get, headers: [HTTPField.Name("X-Forwarded-Email")!: "bob@example.com"]) {
            #expect($0.status == .ok)
          }
        }
      }
    }
  }

  @Test func roleMapsAndAddressRanges() throws {
    #expect(throws: ConfigFileError.self) { _ = try AuthProxyRoles.parse("users:\n  a@b: root\n", file: "r.yaml") }
    do {
      _ = try AuthProxyRoles.parse("users:\n  a@b: viewer\nextra: 1\n", file: "r.yaml")
      Issue.record("an unknown key was accepted")
    } catch {
      #expect("\(error)".hasPrefix("r.yaml:3:"))
    }
    #expect(throws: ConfigFileError.self) { _ = try AuthProxyRoles.parse("patterns:\n  - match: '*'\n", file: "r.yaml") }
    #expect(throws: ConfigFileError.self) { _ = try AuthProxyRoles.parse("", file: "r.yaml") }
    let roles = try AuthProxyRoles.parse("users:\n  Ada@Example.com: admin\ndefault: viewer\n", file: "r.yaml")
    #expect(roles.role(of: "ada@example.com") == .admin)
    #expect(roles.role(of: "x@y") == .viewer)
    let ranges = try AddressRange.list("10.0.0.0/8,::1,192.168.1.7", field: "t")
    let proxy = AuthProxy(header: "X", roles: roles, trusted: ranges)
    #expect(proxy.trusts("10.200.3.4"))
    #expect(proxy.trusts("::ffff:10.1.2.3"))
    #expect(proxy.trusts("::1"))
    #expect(proxy.trusts("192.168.1.7"))
    #expect(!proxy.trusts("192.168.1.8"))
    #expect(!proxy.trusts("11.0.0.1"))
    #expect(!proxy.trusts(nil))
    #expect(throws: NovaError.self) { _ = try AddressRange.list("10.0.0.0/33", field: "t") }
    #expect(throws: NovaError.self) { _ = try AddressRange.list("", field: "t") }
    #expect(LoginPage.safeNext("https://evil.example/") == "/console")
    #expect(LoginPage.safeNext("//evil.example/") == "/console")
    #expect(LoginPage.safeNext("/console/jobs?state=dead") == "/console/jobs?state=dead")
  }
}

@Suite("nova bench console", .timeLimit(.minutes(5)))
struct ConsoleBenchmarkTests {
  @Test func theBenchmarkFillsOnceAndTimesEveryPage() async throws {
    let directory = try TemporaryDirectory.make()
    TestMetrics.bootstrap()
    let application = try await NovaApplication.open(NovaSettings(dataDirectory: directory.path))
    var steps: [String] = []
    let seeded = try await ConsoleBenchmark.seed(application, jobs: 2000, progress: { steps.append($0) })
    #expect(seeded > 0)
    #expect(steps.contains("signing a checkpoint"))
    let stats = try await application.queue.stats()
    #expect(stats.counts.values.reduce(0) { $0 + $1.values.reduce(0, +) } == 2000)
    #expect(stats.total(.succeeded) > 0 && stats.total(.dead) > 0)
    // A store that holds the jobs already is not filled again.
    #expect(try await ConsoleBenchmark.seed(application, jobs: 2000, progress: { _ in }) == 0)
    let pages = try await ConsoleBenchmark.measure(application, requests: 2, progress: { _ in })
    #expect(pages.count >= 14)
    for page in pages {
      #expect(page.status == 200, "\(page.path)")
      #expect(page.requests == 2 && page.p99_ms >= page.p50_ms && page.max_ms >= page.p99_ms)
    }
  }
}
