import NovaCore
import NovaRedis

/// The Redis queue's one door to its server. Every call is bounded by the caller's
/// `StoreDeadline`, and every client error leaves as a `NovaError` that names the server, so no
/// `RedisError` reaches the API, the CLI or the worker pool.
struct RedisStoreBoundary: Sendable {
  let client: RedisClient

  /// The server, for messages (host and port: never the password).
  var location: String { "\(client.configuration.url.host):\(client.configuration.url.port)" }

  /// A reply of a shape the queue does not expect: the keys were changed by something else.
  static func badReply(_ message: String) -> NovaError {
    .storage("unexpected redis reply: \(message)")
  }

  /// Runs `body` against the client within the task's deadline and translates its errors.
  func call<T: Sendable>(_ body: () async throws -> T) async throws -> T {
    do {
      return try await RedisClient.$deadline.withValue(StoreDeadline.current) { try await body() }
    } catch let error as RedisError {
      throw translate(error)
    }
  }

  /// The Nova error for a client error. The scripts' own `NOVA …` replies stay as they are:
  /// the queue maps them to not-found and state errors with the job's id.
  func translate(_ error: RedisError) -> any Error {
    if case .server(let message) = error, message.hasPrefix("NOVA ") { return error }
    if error.isTransient { return NovaError.unavailable("redis at \(location) is unavailable: \(error)") }
    return NovaError.storage("redis at \(location): \(error)")
  }

  @discardableResult
  func send(_ command: RESPArgument...) async throws -> RESPValue {
    try await send(command)
  }

  @discardableResult
  func send(_ command: [RESPArgument]) async throws -> RESPValue {
    try await call { try await client.send(command) }
  }

  func pipeline(_ commands: [[RESPArgument]]) async throws -> [RESPValue] {
    try await call { try await client.pipeline(commands) }
  }

  func evaluate(_ script: RedisScript, keys: [RESPArgument], arguments: [RESPArgument]) async throws -> RESPValue {
    try await call { try await client.evaluate(script, keys: keys, arguments: arguments) }
  }
}
