import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import NovaApplication
import NovaCore
import NovaDatabase
import NovaPolicy
import NovaQueue
import NovaSecurity
import NovaServer
import NovaTestSupport
import Testing

@Suite("HTTP API under a policy", .timeLimit(.minutes(5)))
struct PolicyHTTPTests {
  static let policy = """
    rules:
      - name: readers
        effect: allow
        roles: [viewer, operator, admin]
        actions: read
      - name: trainer-submits-training
        effect: allow
        subjects: "token:trainer"
        actions: submit
        resource:
          kind: job
          attributes: {queue: gpu, job_kind: "echo"}
      - name: frozen-queue
        effect: deny
        actions: [submit, cancel, retry]
        resource:
          attributes: {queue: frozen}
      - name: operators
        effect: allow
        roles: operator
        actions: [submit, cancel, retry]
      - name: admins
        effect: allow
        roles: admin
    """

  struct Setup {
    let server: NovaServer
    let security: SecurityContext
    let engine: PolicyEngine
    let policyPath: String
    let tokens: [String: String]
  }

  func makeServer(enforce: Bool = true, extra: String = "") async throws -> Setup {
    let directory = try TemporaryDirectory.make()
    let queue = try SQLiteJobQueue(
      configuration: .init(path: directory.appendingPathComponent("nova.sqlite").path, journal: AuditJournal()))
    let security = try SecurityContext(database: queue.database, keyPath: directory.appendingPathComponent("key").path)
    let policyPath = directory.appendingPathComponent("nova-policy.yaml").path
    try ((enforce ? "" : "enforce: false\n") + Self.policy + extra).write(toFile: policyPath, atomically: true, encoding: .utf8)
    let engine = try PolicyEngine(path: policyPath, recorder: AuditDecisionRecorder(audit: security.audit))
    var tokens: [String: String] = [:]
    for (name, role) in [("trainer", Role.viewer), ("ops", .operator), ("root", .admin), ("reader", .viewer)] {
      tokens[name] = try await security.tokens.create(name: name, role: role).token
    }
    var logger = Logger(label: "test")
    logger.logLevel = .warning
    TestMetrics.bootstrap()
    let server = try NovaServer(
      configuration: .init(workers: 0), queue: queue, security: security, policy: engine, logger: logger)
    return Setup(server: server, security: security, engine: engine, policyPath: policyPath, tokens: tokens)
  }

  func bearer(_ token: String?) -> HTTPFields { [.authorization: "Bearer \(token ?? "")"] }

  @Test func decisionsUseTheJobsQueueAndKindAndAreAudited() async throws {
    let setup = try await makeServer()
    let app = Application(router: setup.server.makeRouter())
    try await app.test(.router) { client in
      // A viewer token whose subject a rule names may submit what that rule allows, and only that.
      try await client.execute(
        uri: "/v1/jobs", method: .post, headers: bearer(setup.tokens["trainer"]),
        body: ByteBuffer(string: #"{"kind":"echo","queue":"gpu"}"#)
      ) { #expect($0.status == .created) }
      try await client.execute(
        uri: "/v1/jobs", method: .post, headers: bearer(setup.tokens["trainer"]),
        body: ByteBuffer(string: #"{"kind":"echo","queue":"cpu"}"#)
      ) { response in
        #expect(response.status == .forbidden)
        #expect(String(buffer: response.body).contains("no rule allows submit on job"))
      }
      var frozenJob = ""
      try await client.execute(
        uri: "/v1/jobs", method: .post, headers: bearer(setup.tokens["ops"]), body: ByteBuffer(string: #"{"kind":"echo","queue":"frozen"}"#)
      ) { response in
        #expect(response.status == .forbidden)
        #expect(String(buffer: response.body).contains("denied by rule 'frozen-queue'"))
      }
      try await client.execute(
        uri: "/v1/jobs", method: .post, headers: bearer(setup.tokens["root"]), body: ByteBuffer(string: #"{"kind":"echo","queue":"frozen"}"#)
      ) { response in
        // Deny beats allow, for admins too.
        #expect(response.status == .forbidden)
      }
      try await client.execute(
        uri: "/v1/jobs", method: .post, headers: bearer(setup.tokens["ops"]), body: ByteBuffer(string: #"{"kind":"echo","queue":"cpu"}"#)
      ) { response in
        #expect(response.status == .created)
        frozenJob = (try JSONSerialization.jsonObject(with: Data(response.body.readableBytesView)) as? [String: Any])?["id"] as? String ?? ""
      }
      try await client.execute(uri: "/v1/jobs/\(frozenJob)/cancel", method: .post, headers: bearer(setup.tokens["reader"])) {
        #expect($0.status == .forbidden)
      }
      try await client.execute(uri: "/v1/jobs/\(frozenJob)/cancel", method: .post, headers: bearer(setup.tokens["ops"])) {
        #expect($0.status == .ok)
      }
      try await client.execute(uri: "/v1/jobs/01a21689-3824-7ac0-8b31-53a22aba4050/retry", method: .post, headers: bearer(setup.tokens["ops"])) {
        #expect($0.status == .notFound)
      }
      try await client.execute(uri: "/v1/queues/stats", method: .get, headers: bearer(setup.tokens["reader"])) { #expect($0.status == .ok) }
      try await client.execute(uri: "/v1/tokens", method: .get, headers: bearer(setup.tokens["ops"])) { #expect($0.status == .forbidden) }
      try await client.execute(uri: "/v1/policy", method: .get, headers: bearer(setup.tokens["reader"])) { response in
        #expect(String(buffer: response.body).contains(setup.engine.version))
      }
    }
    let decided = try await setup.security.audit.entries(from: 1, through: 1000).filter { $0.event == "policy.decided" }
    let denied = decided.filter { $0.payload.contains(#""allowed":false"#) }
    #expect(denied.count == 5)
    let frozen = try #require(denied.first { $0.payload.contains("frozen-queue") })
    #expect(frozen.actor == "token:ops" && frozen.payload.contains(#""queue":"frozen""#) && frozen.payload.contains(setup.engine.version))
  }

  /// Issue #13 point 10: viewers see the OPA URL without its credentials or query.
  @Test func thePolicyShowsTheOPAURLWithoutSecrets() async throws {
    let setup = try await makeServer(extra: "\nopa:\n  url: http://nova:0pa-pass@127.0.0.1:1/?token=s3cret\n  path: nova/allow\n")
    let app = Application(router: setup.server.makeRouter())
    try await app.test(.router) { client in
      try await client.execute(uri: "/v1/policy", method: .get, headers: bearer(setup.tokens["reader"])) { response in
        let text = String(buffer: response.body)
        #expect(response.status == .ok && text.contains("127.0.0.1:1"), "\(text)")
        #expect(!text.contains("0pa-pass") && !text.contains("s3cret"), "\(text)")
      }
    }
  }

  @Test func shadowModeRecordsWithoutBlocking() async throws {
    let setup = try await makeServer(enforce: false)
    let app = Application(router: setup.server.makeRouter())
    try await app.test(.router) { client in
      try await client.execute(
        uri: "/v1/jobs", method: .post, headers: bearer(setup.tokens["ops"]), body: ByteBuffer(string: #"{"kind":"echo","queue":"frozen"}"#)
      ) { #expect($0.status == .created) }
    }
    let decided = try await setup.security.audit.entries(from: 1, through: 100).filter { $0.event == "policy.decided" }
    #expect(decided.contains { $0.payload.contains(#""allowed":false"#) && $0.payload.contains(#""enforced":false"#) })
  }

  /// #13 point 1: with `enforce: false` a viewer token used to get 201 for an admin token (and
  /// policy reloads, evidence, revocations). The role floor is enforced in shadow mode.
  @Test func shadowModeGrantsAViewerNothingBeyondReading() async throws {
    let setup = try await makeServer(enforce: false)
    let app = Application(router: setup.server.makeRouter())
    let viewer = bearer(setup.tokens["reader"])
    try await app.test(.router) { client in
      try await client.execute(uri: "/v1/tokens", method: .post, headers: viewer, body: ByteBuffer(string: #"{"name":"evil","role":"admin"}"#)) {
        #expect($0.status == .forbidden)
        #expect(String(buffer: $0.body).contains("built-in role rules"))
      }
      try await client.execute(uri: "/v1/policy/reload", method: .post, headers: viewer) { #expect($0.status == .forbidden) }
      try await client.execute(uri: "/v1/evidence", method: .get, headers: viewer) { #expect($0.status == .forbidden) }
      try await client.execute(uri: "/v1/tokens/ops", method: .delete, headers: viewer) { #expect($0.status == .forbidden) }
      try await client.execute(uri: "/v1/jobs", method: .post, headers: viewer, body: ByteBuffer(string: #"{"kind":"echo"}"#)) {
        #expect($0.status == .forbidden)
      }
      try await client.execute(uri: "/v1/jobs", method: .get, headers: viewer) { #expect($0.status == .ok) }
    }
    #expect(try await setup.security.tokens.list().contains { $0.name == "evil" } == false)
    let decided = try await setup.security.audit.entries(from: 1, through: 200).filter { $0.event == "policy.decided" }
    #expect(decided.contains { $0.payload.contains(#""floor_allowed":false"#) && $0.payload.contains(#""enforced":false"#) })
  }

  @Test func reloadSwapsAtomicallyAndABadFileKeepsTheLastGoodPolicy() async throws {
    let setup = try await makeServer()
    let app = Application(router: setup.server.makeRouter())
    let before = setup.engine.version
    try await app.test(.router) { client in
      try await client.execute(uri: "/v1/policy/reload", method: .post, headers: bearer(setup.tokens["ops"])) { #expect($0.status == .forbidden) }
      try Self.policy.replacingOccurrences(of: "queue: frozen", with: "queue: glacier")
        .write(toFile: setup.policyPath, atomically: true, encoding: .utf8)
      try await client.execute(uri: "/v1/policy/reload", method: .post, headers: bearer(setup.tokens["root"])) { response in
        #expect(response.status == .ok)
        #expect(!String(buffer: response.body).contains(before))
      }
      try await client.execute(
        uri: "/v1/jobs", method: .post, headers: bearer(setup.tokens["ops"]), body: ByteBuffer(string: #"{"kind":"echo","queue":"frozen"}"#)
      ) { #expect($0.status == .created) }
      try "rules:\n  - name: x\n    effect: maybe\n".write(toFile: setup.policyPath, atomically: true, encoding: .utf8)
      try await client.execute(uri: "/v1/policy/reload", method: .post, headers: bearer(setup.tokens["root"])) { response in
        #expect(response.status == .unprocessableContent)
        #expect(String(buffer: response.body).contains("nova-policy.yaml:3:13"))
      }
    }
    #expect(setup.engine.version != before)
    let events = try await setup.security.audit.entries(from: 1, through: 1000).map(\.event)
    #expect(events.contains("policy.reloaded") && events.contains("policy.reload_failed"))
  }
}
