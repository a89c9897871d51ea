import Foundation
import Logging
import NovaApplication
import NovaCore
import NovaPolicy
import NovaQueue
import NovaSecurity
import NovaServer
import NovaTestSupport

/// A server on a fresh SQLite queue under the built-in policy (decisions audited), with a token
/// per name and role: what the worker-route tests share.
struct PolicedTestServer {
  let server: NovaServer
  let queue: SQLiteJobQueue
  let security: SecurityContext
  /// Each token's secret, by its name.
  let tokens: [String: String]

  static func make(
    roles: [(String, Role)], registry: JobRegistry, configuration: NovaServer.Configuration = NovaServer.Configuration(workers: 0)
  ) async throws -> PolicedTestServer {
    let directory = try TemporaryDirectory.make()
    let queue = try SQLiteJobQueue(
      configuration: .init(
        path: directory.appendingPathComponent("nova.sqlite").path, retryPolicy: RetryPolicy(baseDelay: 0.01, maxDelay: 0.01, jitter: 0),
        journal: AuditJournal()))
    let security = try SecurityContext(database: queue.database, keyPath: directory.appendingPathComponent("key").path)
    let engine = PolicyEngine(document: .builtIn, recorder: AuditDecisionRecorder(audit: security.audit))
    var tokens: [String: String] = [:]
    for (name, role) in roles { tokens[name] = try await security.tokens.create(name: name, role: role).token }
    var logger = Logger(label: "test")
    logger.logLevel = .warning
    TestMetrics.bootstrap()
    let server = try NovaServer(
      configuration: configuration, queue: queue, registry: registry, security: security, policy: engine, logger: logger)
    return PolicedTestServer(server: server, queue: queue, security: security, tokens: tokens)
  }
}
