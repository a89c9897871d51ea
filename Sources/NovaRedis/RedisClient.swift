import NIOCore
import NIOPosix
import Synchronization

/// A pooled Redis client: a few pipelined connections, opened lazily, reopened after a drop,
/// with `EVALSHA` script calls that load the script on `NOSCRIPT`.
public final class RedisClient: Sendable {
  /// Settings of a client.
  public struct Configuration: Sendable {
    public var url: RedisURL
    /// Connections; commands are spread over them round-robin and pipelined on each.
    public var poolSize: Int
    public var connectTimeout: Duration
    public var commandTimeout: Duration
    /// How long a command keeps retrying transient failures (dropped connections, Redis
    /// restarting) before it gives up; zero disables retries.
    public var retryWindow: Duration
    public var limits: RESPLimits

    public init(
      url: RedisURL, poolSize: Int = 4, connectTimeout: Duration = .seconds(5), commandTimeout: Duration = .seconds(10),
      retryWindow: Duration = .seconds(30), limits: RESPLimits = RESPLimits()
    ) {
      self.url = url
      self.poolSize = max(1, poolSize)
      self.connectTimeout = connectTimeout
      self.commandTimeout = commandTimeout
      self.retryWindow = retryWindow
      self.limits = limits
    }
  }

  /// When set, calls on this task stop retrying, connecting and waiting for replies at this
  /// instant, whatever the configured windows and timeouts (a request path's bound).
  @TaskLocal public static var deadline: ContinuousClock.Instant?

  public let configuration: Configuration
  private let slots: [ConnectionSlot]
  private let next = Mutex(0)
  private let group: any EventLoopGroup

  public init(configuration: Configuration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
    self.configuration = configuration
    self.group = group
    slots = (0..<configuration.poolSize).map { _ in ConnectionSlot() }
  }

  /// A client for a `redis://` URL.
  public convenience init(url: String) throws(RedisError) {
    self.init(configuration: Configuration(url: try RedisURL(parsing: url)))
  }

  /// Closes every connection.
  public func close() {
    for slot in slots { slot.close() }
  }

  private func connection() async throws -> RedisConnection {
    let index = next.withLock { value -> Int in
      value = (value + 1) % slots.count
      return value
    }
    let connectTimeout = Self.bounded(configuration.connectTimeout)
    return try await slots[index].connection {
      try await RedisConnection.connect(
        to: self.configuration.url, connectTimeout: TimeAmount(connectTimeout),
        commandTimeout: TimeAmount(self.configuration.commandTimeout),
        limits: self.configuration.limits, group: self.group)
    }
  }

  /// Runs `body` on a pooled connection, retrying transient failures with backoff within the
  /// retry window. Only for work that is safe to repeat.
  public func withConnection<T: Sendable>(_ body: (RedisConnection) async throws -> T) async throws -> T {
    var deadline = ContinuousClock.now.advanced(by: configuration.retryWindow)
    if let bound = Self.deadline, bound < deadline { deadline = bound }
    var delay = Duration.milliseconds(20)
    while true {
      do {
        return try await body(try await connection())
      } catch let error as RedisError where error.isTransient {
        // No time left for another try after the pause: report this failure, not a timeout of
        // a last try squeezed into what remains.
        guard ContinuousClock.now.advanced(by: delay) < deadline else { throw error }
        try await Task.sleep(for: delay)
        delay = min(delay * 2, .seconds(1))
      }
    }
  }

  /// Sends one command; an error reply is thrown as `RedisError.server`.
  @discardableResult
  public func send(_ command: RESPArgument...) async throws -> RESPValue {
    try await send(command)
  }

  /// Sends one command; an error reply is thrown as `RedisError.server`.
  @discardableResult
  public func send(_ command: [RESPArgument]) async throws -> RESPValue {
    try await withConnection { try await $0.send(command).checked() }
  }

  /// Sends commands pipelined on one connection; replies in order, error replies included.
  public func pipeline(_ commands: [[RESPArgument]]) async throws -> [RESPValue] {
    try await withConnection { try await $0.pipeline(commands) }
  }

  /// Runs a Lua script by its SHA-1; when the server does not know it (a fresh or restarted
  /// Redis, or a `SCRIPT FLUSH`), sends the source with `EVAL`, which also caches it, so a flush
  /// racing between a load and a call cannot fail the call.
  public func evaluate(_ script: RedisScript, keys: [RESPArgument], arguments: [RESPArgument]) async throws -> RESPValue {
    try await withConnection { connection in
      let tail: [RESPArgument] = [.int(keys.count)] + keys + arguments
      let reply = try await connection.send(["EVALSHA", .string(script.sha1)] + tail)
      if case .error(let message) = reply, message.hasPrefix("NOSCRIPT") {
        return try await connection.send(["EVAL", .string(script.source)] + tail).checked()
      }
      return try reply.checked()
    }
  }
}

extension RedisClient {
  /// `timeout`, or less when the task's deadline comes sooner (at least 1 ms, so that a passed
  /// deadline fails at once rather than never).
  static func bounded(_ timeout: Duration) -> Duration {
    guard let deadline else { return timeout }
    return max(min(timeout, deadline - ContinuousClock.now), .milliseconds(1))
  }
}

/// A Lua script and its SHA-1 (computed here, as Redis does, so `EVALSHA` needs no round trip).
public struct RedisScript: Sendable {
  public let source: String
  public let sha1: String

  public init(_ source: String) {
    self.source = source
    self.sha1 = SHA1.hex(Array(source.utf8))
  }
}

/// One pooled connection, opened on first use and reopened when it dropped; callers arriving
/// while it connects wait for that one attempt.
final class ConnectionSlot: Sendable {
  private enum State {
    case idle
    case connecting([CheckedContinuation<RedisConnection, any Error>])
    case connected(RedisConnection)
  }

  private let state = Mutex(State.idle)

  func connection(connect: @escaping @Sendable () async throws -> RedisConnection) async throws -> RedisConnection {
    enum Next {
      case ready(RedisConnection)
      case wait
      case connect
    }
    let decision: Next = state.withLock { state in
      switch state {
      case .connected(let connection) where connection.isActive:
        return .ready(connection)
      case .connecting:
        return .wait
      case .idle, .connected:
        state = .connecting([])
        return .connect
      }
    }
    switch decision {
    case .ready(let connection):
      return connection
    case .wait:
      return try await withCheckedThrowingContinuation { continuation in
        let resumeNow: Result<RedisConnection, any Error>? = state.withLock { state in
          switch state {
          case .connecting(var waiters):
            waiters.append(continuation)
            state = .connecting(waiters)
            return nil
          case .connected(let connection):
            return .success(connection)
          case .idle:
            return .failure(RedisError.connectionClosed)
          }
        }
        if let resumeNow { continuation.resume(with: resumeNow) }
      }
    case .connect:
      let result: Result<RedisConnection, any Error>
      do {
        result = .success(try await connect())
      } catch {
        result = .failure(error)
      }
      let waiters = state.withLock { state -> [CheckedContinuation<RedisConnection, any Error>] in
        guard case .connecting(let waiters) = state else { return [] }
        if case .success(let connection) = result { state = .connected(connection) } else { state = .idle }
        return waiters
      }
      for waiter in waiters { waiter.resume(with: result) }
      return try result.get()
    }
  }

  func close() {
    let connection = state.withLock { state -> RedisConnection? in
      defer { state = .idle }
      if case .connected(let connection) = state { return connection }
      return nil
    }
    connection?.close()
  }
}

extension TimeAmount {
  /// The same span as a Swift `Duration`.
  init(_ duration: Duration) {
    let (seconds, attoseconds) = duration.components
    self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
  }
}

extension Duration {
  /// The same span as a NIO `TimeAmount`.
  init(_ amount: TimeAmount) {
    self = .nanoseconds(amount.nanoseconds)
  }
}
