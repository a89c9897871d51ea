import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// One argument of a command: text or raw bytes.
public enum RESPArgument: Sendable, ExpressibleByStringLiteral, ExpressibleByIntegerLiteral {
  case string(String)
  case bytes([UInt8])

  public init(stringLiteral value: String) { self = .string(value) }
  public init(integerLiteral value: Int) { self = .string(String(value)) }

  /// An integer argument.
  public static func int<T: BinaryInteger>(_ value: T) -> RESPArgument { .string(String(value)) }
}

/// Encodes commands as RESP arrays of bulk strings.
enum RESPCommandEncoder {
  static func encode(_ command: [RESPArgument], into buffer: inout ByteBuffer) {
    buffer.writeInteger(UInt8(ascii: "*"))
    writeDecimal(command.count, into: &buffer)
    for argument in command {
      switch argument {
      case .string(let text):
        buffer.writeInteger(UInt8(ascii: "$"))
        writeDecimal(text.utf8.count, into: &buffer)
        buffer.writeString(text)
      case .bytes(let bytes):
        buffer.writeInteger(UInt8(ascii: "$"))
        writeDecimal(bytes.count, into: &buffer)
        buffer.writeBytes(bytes)
      }
      buffer.writeStaticString("\r\n")
    }
  }

  /// A length and its CRLF, written without making a `String` of it.
  private static func writeDecimal(_ value: Int, into buffer: inout ByteBuffer) {
    if value < 10 {
      buffer.writeInteger(UInt8(ascii: "0") + UInt8(value))
    } else {
      withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { digits in
        var start = 20
        var rest = value
        while rest > 0 {
          start -= 1
          digits[start] = UInt8(ascii: "0") + UInt8(rest % 10)
          rest /= 10
        }
        buffer.writeBytes(UnsafeRawBufferPointer(rebasing: UnsafeMutableRawBufferPointer(digits)[start...]))
      }
    }
    buffer.writeStaticString("\r\n")
  }
}

/// Turns the byte stream into RESP values, rejecting malformed input.
struct RESPMessageDecoder: ByteToMessageDecoder {
  typealias InboundOut = RESPValue
  var decoder: RESPDecoder

  mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
    let result = try buffer.withUnsafeReadableBytes { bytes in try decoder.decode(bytes) }
    guard let result else { return .needMoreData }
    buffer.moveReaderIndex(forwardBy: result.consumed)
    context.fireChannelRead(wrapInboundOut(result.value))
    return .continue
  }

  mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
    try decode(context: context, buffer: &buffer)
  }
}

/// Sent through the pipeline when a command's reply is late.
/// The replies one `pipeline` call waits for: resumes its caller once, with every reply or the
/// first failure, whichever of the handler, the deadline or a failed write comes first.
final class PendingReplies: Sendable {
  let expected: Int
  /// When the connection gives up on these replies.
  let deadline: NIODeadline
  /// The timeout the deadline came from, for the error's text.
  let milliseconds: Int64
  /// The continuation is taken out under the lock to be resumed, so it is resumed exactly once.
  private let state: Mutex<State>

  private struct State {
    var replies: [RESPValue]
    var received = 0
    var continuation: UnsafeContinuation<[RESPValue], any Error>?
  }

  init(expected: Int, deadline: NIODeadline, milliseconds: Int64, continuation: UnsafeContinuation<[RESPValue], any Error>) {
    self.expected = expected
    self.deadline = deadline
    self.milliseconds = milliseconds
    var replies: [RESPValue] = []
    replies.reserveCapacity(expected)
    state = Mutex(State(replies: replies, continuation: continuation))
  }

  /// Counts a reply in; true once all have arrived (the caller is resumed then, unless it
  /// failed before). Replies are counted even after a failure, so that the next request's
  /// replies are never taken for this one's.
  func receive(_ value: RESPValue) -> Bool {
    let (complete, resumed) = state.withLock { state -> (Bool, (UnsafeContinuation<[RESPValue], any Error>, [RESPValue])?) in
      state.received += 1
      guard state.continuation != nil else { return (state.received == expected, nil) }
      state.replies.append(value)
      guard state.received == expected, let continuation = state.continuation else { return (false, nil) }
      state.continuation = nil
      defer { state.replies = [] }
      return (true, (continuation, state.replies))
    }
    if let (continuation, replies) = resumed { continuation.resume(returning: replies) }
    return complete
  }

  /// Fails the caller, unless it was resumed already.
  func fail(_ error: RedisError) {
    state.withLock { state in
      defer { state.continuation = nil }
      return state.continuation
    }?.resume(throwing: error)
  }
}

/// Commands on their way out, encoded, with the replies they wait for.
struct RedisRequest: Sendable {
  var bytes: ByteBuffer
  var replies: PendingReplies
}

/// Matches replies to requests in order, which is what makes pipelining work: any number of
/// commands may be in flight on one connection. One timer per connection, armed at the earliest
/// deadline in flight, bounds the wait for replies.
final class RedisRequestHandler: ChannelDuplexHandler {
  typealias InboundIn = RESPValue
  typealias OutboundIn = RedisRequest
  typealias OutboundOut = ByteBuffer

  private var pending = CircularBuffer<PendingReplies>(initialCapacity: 16)
  private var failure: RedisError?
  private var timer: (deadline: NIODeadline, task: Scheduled<Void>)?

  func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
    let request = unwrapOutboundIn(data)
    if let failure {
      request.replies.fail(failure)
      promise?.fail(failure)
      return
    }
    pending.append(request.replies)
    arm(context: context, at: request.replies.deadline)
    context.write(wrapOutboundOut(request.bytes), promise: promise)
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let value = unwrapInboundIn(data)
    if case .push = value { return }  // out-of-band (RESP3 pub/sub, invalidation): not ours
    guard let first = pending.first else {
      failAll(.unexpectedReply("a reply arrived with no command waiting"), context: context)
      return
    }
    if first.receive(value) {
      pending.removeFirst()
      if pending.isEmpty, let timer {
        timer.task.cancel()
        self.timer = nil
      }
    }
  }

  /// Arms the timer for `deadline` unless it is armed for an earlier one already. It is not
  /// moved as replies arrive: when it fires early it is armed again for what is left.
  private func arm(context: ChannelHandlerContext, at deadline: NIODeadline) {
    if let timer {
      if timer.deadline <= deadline { return }
      timer.task.cancel()
    }
    let task = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
      self.timer = nil
      self.deadlinePassed(context: context)
    }
    timer = (deadline, task)
  }

  private func deadlinePassed(context: ChannelHandlerContext) {
    let now = NIODeadline.now()
    // Replies are matched by order, so one request past its deadline makes the connection
    // untrustworthy: everything in flight fails and the connection closes.
    if let late = pending.first(where: { $0.deadline <= now }) {
      failAll(.timeout("no reply within \(late.milliseconds) ms"), context: context)
    } else if let next = pending.map(\.deadline).min() {
      arm(context: context, at: next)
    }
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    if let decoding = error as? RESPDecodingError {
      failAll(.protocolError(decoding), context: context)
    } else {
      failAll(.connectionClosed, context: context)
    }
  }

  func channelInactive(context: ChannelHandlerContext) {
    failAll(.connectionClosed, context: nil)
    context.fireChannelInactive()
  }

  private func failAll(_ error: RedisError, context: ChannelHandlerContext?) {
    if failure == nil { failure = error }
    timer?.task.cancel()
    timer = nil
    while let replies = pending.popFirst() { replies.fail(error) }
    context?.close(promise: nil)
  }
}

/// One connection to Redis. Safe to use from many tasks at once: commands are pipelined.
public final class RedisConnection: Sendable {
  let channel: any Channel
  let commandTimeout: TimeAmount

  init(channel: any Channel, commandTimeout: TimeAmount) {
    self.channel = channel
    self.commandTimeout = commandTimeout
  }

  /// Connects, authenticates and selects the database.
  public static func connect(
    to url: RedisURL, connectTimeout: TimeAmount = .seconds(5), commandTimeout: TimeAmount = .seconds(10),
    limits: RESPLimits = RESPLimits(), group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
  ) async throws -> RedisConnection {
    let channel: any Channel
    let tls: NIOSSLContext?
    if url.tls {
      var configuration = TLSConfiguration.makeClientConfiguration()
      if let caFile = url.caFile { configuration.trustRoots = .file(caFile) }
      do {
        tls = try NIOSSLContext(configuration: configuration)
      } catch {
        throw RedisError.connectFailed("\(url.host):\(url.port): TLS setup failed: \(error)")
      }
    } else {
      tls = nil
    }
    do {
      channel = try await ClientBootstrap(group: group)
        .connectTimeout(connectTimeout)
        .channelOption(.socketOption(.tcp_nodelay), value: 1)
        .channelInitializer { channel in
          channel.eventLoop.makeCompletedFuture {
            if let tls {
              // A host name is checked against the certificate (and sent as SNI); an address
              // is checked against the certificate's IP addresses.
              let hostname = Self.isIPAddress(url.host) ? nil : url.host
              try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: tls, serverHostname: hostname))
            }
            try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(RESPMessageDecoder(decoder: RESPDecoder(limits: limits))))
            try channel.pipeline.syncOperations.addHandler(RedisRequestHandler())
          }
        }
        .connect(host: url.host, port: url.port).get()
    } catch {
      throw RedisError.connectFailed("\(url.host):\(url.port): \(error)")
    }
    let connection = RedisConnection(channel: channel, commandTimeout: commandTimeout)
    do {
      if url.protocolVersion == 3 {
        var hello: [RESPArgument] = ["HELLO", "3"]
        if let password = url.password { hello += ["AUTH", .string(url.username ?? "default"), .string(password)] }
        _ = try await connection.send(hello).checked()
      } else if let password = url.password {
        let auth: [RESPArgument] = url.username.map { ["AUTH", .string($0), .string(password)] } ?? ["AUTH", .string(password)]
        _ = try await connection.send(auth).checked()
      }
      if url.database != 0 { _ = try await connection.send(["SELECT", .int(url.database)]).checked() }
    } catch {
      connection.close()
      throw error
    }
    return connection
  }

  static func isIPAddress(_ host: String) -> Bool {
    var v4 = in_addr()
    var v6 = in6_addr()
    return inet_pton(AF_INET, host, &v4) == 1 || inet_pton(AF_INET6, host, &v6) == 1
  }

  /// True while the socket is open.
  public var isActive: Bool { channel.isActive }

  /// Sends one command and returns its reply (an error reply is returned, not thrown).
  public func send(_ command: [RESPArgument]) async throws -> RESPValue {
    try await pipeline([command])[0]
  }

  /// Writes several commands at once and returns their replies in order.
  public func pipeline(_ commands: [[RESPArgument]]) async throws -> [RESPValue] {
    if commands.isEmpty { return [] }
    let channel = self.channel
    let timeout = RedisClient.bounded(Duration(commandTimeout))
    let deadline = NIODeadline.now() + TimeAmount(timeout)
    // Encoded here, off the event loop, which then only writes the bytes.
    var bytes = channel.allocator.buffer(capacity: 64 * commands.count)
    for command in commands { RESPCommandEncoder.encode(command, into: &bytes) }
    let request = bytes
    return try await withUnsafeThrowingContinuation { continuation in
      let replies = PendingReplies(
        expected: commands.count, deadline: deadline, milliseconds: Int64(timeout / .milliseconds(1)), continuation: continuation)
      // One hop to the event loop per call: the write, the failure callback and the timer are
      // all set up there, where they cost no further wake-ups.
      channel.eventLoop.execute {
        // A write that cannot happen (the channel closed before it reached the handler) never
        // registers its replies with the handler: fail them here, or their caller would wait.
        let written = channel.eventLoop.makePromise(of: Void.self)
        written.futureResult.whenFailure { _ in replies.fail(.connectionClosed) }
        channel.writeAndFlush(RedisRequest(bytes: request, replies: replies), promise: written)
      }
    }
  }

  /// Closes the connection.
  public func close() {
    channel.close(promise: nil)
  }
}

extension RESPValue {
  /// Throws the server's error reply as `RedisError.server`.
  public func checked() throws(RedisError) -> RESPValue {
    if case .error(let message) = self { throw .server(message) }
    return self
  }
}
