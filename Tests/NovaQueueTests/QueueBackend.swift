import Foundation
import NovaCore
import NovaQueue
import NovaRedis
import NovaRedisQueue
import NovaTestSupport
import Testing

/// A queue backend under test. The conformance suite runs once per entry of `all`.
struct QueueBackend: CustomTestStringConvertible, Sendable {
  let name: String
  let make: @Sendable (_ clock: any NovaClock, _ retry: RetryPolicy) throws -> any JobQueue

  var testDescription: String { name }

  static let sqlite = QueueBackend(name: "sqlite") { clock, retry in
    let path = try TemporaryDirectory.make().appendingPathComponent("queue.sqlite").path
    return try SQLiteJobQueue(configuration: .init(path: path, retryPolicy: retry, clock: clock))
  }

  /// A fresh key prefix on the shared test `redis-server`, so every test has its own keyspace.
  static let redis = QueueBackend(name: "redis") { clock, retry in
    RedisJobQueue(
      configuration: .init(
        client: .init(url: try RedisURL(parsing: RedisTestServer.shared.url)), retryPolicy: retry, clock: clock,
        keyPrefix: "test-\(UUID().uuidString.prefix(8))", serverTime: false))
  }

  /// Every backend the conformance suite runs against.
  /// Without `redis-server` (and without `NOVA_REQUIRE_ALL_TESTS`), only SQLite; the skipped
  /// test `redisBackendIsInTheConformanceRun` then says why.
  static let all: [QueueBackend] = TestServers.redisAvailable ? [.sqlite, .redis] : [.sqlite]
}
