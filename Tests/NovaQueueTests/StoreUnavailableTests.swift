import Foundation
import GRDB
import NovaCore
import NovaQueue
import NovaRedis
import NovaRedisQueue
import NovaTestSupport
import Testing

/// Each backend reports a store that cannot be reached (or is locked past its bound) as
/// `NovaError.unavailable` naming the store, within the caller's deadline, and never as the
/// driver's own error type.
@Suite("Store unavailable", .serialized, .timeLimit(.minutes(5)))
struct StoreUnavailableTests {
  @Test func sqliteLockedPastTheBusyTimeoutIsUnavailable() async throws {
    let path = try TemporaryDirectory.make().appendingPathComponent("queue.sqlite").path
    let queue = try SQLiteJobQueue(configuration: .init(path: path, busyTimeout: 0.2))
    let id: JobID = try await queue.enqueue(JobRequest(kind: "noop"))
    // Another writer (as another process would) holds the lock until released.
    let other = try DatabaseQueue(path: path)
    let locked = DispatchSemaphore(value: 0)
    let release = DispatchSemaphore(value: 0)
    let holder = Task.detached {
      try other.inDatabase { db in
        try db.inTransaction(.exclusive) {
          locked.signal()
          release.wait()
          return .rollback
        }
      }
    }
    locked.wait()
    let start = ContinuousClock.now
    await #expect {
      _ = try await queue.enqueue(JobRequest(kind: "noop")) as EnqueueResult
    } throws: { error in
      guard case NovaError.unavailable(let message) = error else { return false }
      return message.contains(path) && message.contains("locked")
    }
    await #expect(throws: NovaError.self) {
      _ = try await queue.claim(queues: [], worker: "w", leaseDuration: .seconds(30), limit: 1)
    }
    #expect(ContinuousClock.now - start < .seconds(5))
    // Reads go on under WAL; once the lock is gone, writes do too.
    #expect(try await queue.get(id)?.state == .available)
    release.signal()
    try await holder.value
    let next: JobID = try await queue.enqueue(JobRequest(kind: "noop"))
    #expect(try await queue.get(next) != nil)
  }

  @Test func sqliteErrorsAreTranslatedWithThePath() throws {
    let directory = try TemporaryDirectory.make()
    let path = directory.appendingPathComponent("not-a-db.sqlite").path
    try Data(repeating: 0x41, count: 4096).write(to: URL(fileURLWithPath: path))
    #expect {
      _ = try SQLiteJobQueue(path: path)
    } throws: { error in
      guard case NovaError.storage(let message) = error else { return false }
      return message.contains(path)
    }
  }

  @Test(.enabled(if: TestServers.redisAvailable, TestServers.redisMissing))
  func redisDownIsUnavailableWithinTheDeadline() async throws {
    let server = try RedisTestServer(appendOnly: true)
    let queue = RedisJobQueue(
      configuration: .init(client: .init(url: try RedisURL(parsing: server.url)), keyPrefix: "down-\(UUID().uuidString.prefix(6))"))
    defer { queue.close() }
    let id: JobID = try await queue.enqueue(JobRequest(kind: "noop"))
    server.stop(kill: SIGKILL)
    let calls: [(String, @Sendable () async throws -> Void)] = [
      ("enqueue", { @Sendable in _ = try await queue.enqueue(JobRequest(kind: "noop")) as EnqueueResult }),
      ("get", { @Sendable in _ = try await queue.get(id) }),
      ("list", { @Sendable in _ = try await queue.list(JobFilter()) }),
      ("claim", { @Sendable in _ = try await queue.claim(queues: [], worker: "w", leaseDuration: .seconds(5), limit: 1) }),
    ]
    for (name, call) in calls {
      let start = ContinuousClock.now
      await #expect("\(name) reports redis unavailable") {
        try await StoreDeadline.within(.milliseconds(800)) { try await call() }
      } throws: { error in
        guard case NovaError.unavailable(let message) = error else { return false }
        return message.contains("redis at 127.0.0.1:\(server.port)")
      }
      #expect(ContinuousClock.now - start < .milliseconds(1500), "\(name) gave up within its deadline")
    }
    // Back up: the same queue works again.
    try server.start()
    #expect(try await queue.get(id)?.state == .available)
  }

  @Test(.enabled(if: TestServers.redisAvailable, TestServers.redisMissing))
  func redisHungIsUnavailableWithinTheDeadline() async throws {
    let server = try RedisTestServer()
    let queue = RedisJobQueue(
      configuration: .init(client: .init(url: try RedisURL(parsing: server.url)), keyPrefix: "hung-\(UUID().uuidString.prefix(6))"))
    defer { queue.close() }
    let id: JobID = try await queue.enqueue(JobRequest(kind: "noop"))
    // Stopped, not dead: connections stay open and nothing answers.
    server.signal(SIGSTOP)
    defer { server.signal(SIGCONT) }
    let start = ContinuousClock.now
    await #expect {
      try await StoreDeadline.within(.milliseconds(800)) { _ = try await queue.get(id) }
    } throws: { error in
      guard case NovaError.unavailable = error else { return false }
      return true
    }
    #expect(ContinuousClock.now - start < .milliseconds(1500))
    server.signal(SIGCONT)
    #expect(try await queue.get(id)?.state == .available)
  }
}
