import Foundation
import Logging
import NovaCore
import NovaQueue

/// The parameters of a job kind of your own: any `Decodable`.
struct Greeting: Codable, Sendable {
  var name: String
}

@main
struct HelloNova {
  static func main() async throws {
    // Register a handler for the kind: its payload is decoded, its result encoded as JSON.
    var registry = JobRegistry()
    registry.register("greet", parameters: Greeting.self) { greeting, context in
      ["message": "hello, \(greeting.name) (attempt \(context.attempt) of \(context.maxAttempts))"]
    }
    // A queue in a SQLite file of its own (or `RedisJobQueue(url:)` for workers on many hosts).
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("hello-nova-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    let queue = try SQLiteJobQueue(path: directory.appendingPathComponent("nova.sqlite").path)
    let id: JobID = try await queue.enqueue(JobRequest(kind: "greet", payload: Data(#"{"name":"Ada"}"#.utf8)))

    // A pool of two workers runs it; shutdown lets running jobs finish.
    let pool = WorkerPool(queue: queue, registry: registry, configuration: .init(concurrency: 2), logger: Logger(label: "hello-nova"))
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask { try await pool.run() }
      while try await queue.get(id)?.state != .succeeded { try await Task.sleep(for: .milliseconds(20)) }
      pool.shutdown()
      try await group.waitForAll()
    }
    let job = try await queue.get(id)
    print(String(decoding: job?.result ?? Data(), as: UTF8.self))  // {"message":"hello, Ada (attempt 1 of 5)"}
  }
}
