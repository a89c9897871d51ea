import Foundation
import NovaCore
import NovaDatabase
import NovaQueue
import NovaRedis

/// Where a queue lives: `redis://[user:password@]host:port/db` or `sqlite://PATH`.
public enum QueueURL {
  /// Opens the queue a URL names (a SQLite one with `journal`, a Redis one writing audit records
  /// when `audit`); a Redis queue is pinged first, so that an unreachable server
  /// is reported at once and clearly.
  public static func open(
    _ url: String, synchronous: SQLiteJobQueue.Synchronous = .normal, keyPrefix: String = "nova",
    journal: (any JobTransitionJournal)? = nil, audit: Bool = true
  ) async throws -> any JobQueue {
    if url.hasPrefix("sqlite://") {
      let path = String(url.dropFirst("sqlite://".count))
      guard !path.isEmpty else {
        throw NovaError.invalidInput(
          field: "--queue-url", message: "'\(url)' names no file; use sqlite:///path/to/nova.sqlite or sqlite://relative/path")
      }
      return try SQLiteJobQueue(configuration: .init(path: path, synchronous: synchronous, journal: journal))
    }
    guard url.hasPrefix("redis://") || url.hasPrefix("rediss://") else {
      throw NovaError.invalidInput(field: "--queue-url", message: "'\(url)' is neither redis://… nor sqlite://…")
    }
    let parsed: RedisURL
    do {
      parsed = try RedisURL(parsing: url)
    } catch {
      throw NovaError.invalidInput(field: "--queue-url", message: error.description)
    }
    let queue = RedisJobQueue(
      configuration: .init(client: .init(url: parsed, retryWindow: .seconds(30)), keyPrefix: keyPrefix, audit: audit))
    do {
      let probe = RedisClient(configuration: .init(url: parsed, connectTimeout: .seconds(3), retryWindow: .zero))
      defer { probe.close() }
      _ = try await probe.send("PING")
    } catch {
      queue.close()
      throw NovaError.unavailable("cannot reach redis at \(parsed): \(error)")
    }
    return queue
  }
}
