import NIOCore
import NIOPosix
import NIOSSL

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
    buffer.writeStaticString("*")
    buffer.writeString(String(command.count))
    buffer.writeStaticString("\r\n")
    for argument in command {
      switch argument {
      case .string(let text):
        buffer.writeStaticString("$")
        buffer.writeString(String(text.utf8.count))
        buffer.writeStaticString("\r\n")
        buffer.writeString(text)
      case .bytes(let bytes):
        buffer.writeStaticString("$")
        buffer.writeString(String(bytes.count))
        buffer.writeStaticString("\r\n")
        buffer.writeBytes(bytes)
      }
      buffer.writeStaticString("\r\n")
    }
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
struct RedisTimeoutEvent {
  var milliseconds: Int64
}

/// A command on its way out, with the promise its reply fulfils.
struct RedisRequest {
  var commands: [[RESPArgument]]
  var promises: [EventLoopPromise<RESPValue>]
}

/// Matches replies to requests in order, which is what makes pipelining work: any number of
/// commands may be in flight on one connection.
final class RedisRequestHandler: ChannelDuplexHandler {
  typealias InboundIn = RESPValue
  typealias OutboundIn = RedisRequest
  typealias OutboundOut = ByteBuffer

  private var pending = CircularBuffer<EventLoopPromise<RESPValue>>(initialCapacity: 16)
  private var failure: RedisError?

  func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
    let request = unwrapOutboundIn(data)
    if let failure {
      for reply in request.promises { reply.fail(failure) }
      promise?.fail(failure)
      return
    }
    var buffer = context.channel.allocator.buffer(capacity: 64 * request.commands.count)
    for command in request.commands { RESPCommandEncoder.encode(command, into: &buffer) }
    pending.append(contentsOf: request.promises)
    context.write(wrapOutboundOut(buffer), promise: promise)
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let value = unwrapInboundIn(data)
    if case .push = value { return }  // out-of-band (RESP3 pub/sub, invalidation): not ours
    guard let promise = pending.popFirst() else {
      failAll(.unexpectedReply("a reply arrived with no command waiting"), context: context)
      return
    }
    promise.succeed(value)
  }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if let timeout = event as? RedisTimeoutEvent {
      failAll(.timeout("no reply within \(timeout.milliseconds) ms"), context: context)
    } else {
      context.fireUserInboundEventTriggered(event)
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
    while let promise = pending.popFirst() { promise.fail(error) }
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
    let loop = channel.eventLoop
    let promises = commands.map { _ in loop.makePromise(of: RESPValue.self) }
    let channel = self.channel
    let commandTimeout = TimeAmount(RedisClient.bounded(Duration(self.commandTimeout)))
    let millis = commandTimeout.nanoseconds / 1_000_000
    let timeout = loop.scheduleTask(in: commandTimeout) {
      // Replies are matched by order, so after a timeout the connection cannot be trusted:
      // the handler fails everything in flight and closes it. The promises are failed here
      // too, in case the handler is gone already (a channel closed meanwhile); a promise
      // completed before ignores the second result.
      channel.pipeline.fireUserInboundEventTriggered(RedisTimeoutEvent(milliseconds: millis))
      for promise in promises { promise.fail(RedisError.timeout("no reply within \(millis) ms")) }
    }
    // A write that cannot happen (the channel closed before it reached the handler) never
    // registers its promises with the handler: fail them here, or their callers would wait.
    let written = loop.makePromise(of: Void.self)
    written.futureResult.whenFailure { _ in
      for promise in promises { promise.fail(RedisError.connectionClosed) }
    }
    channel.writeAndFlush(RedisRequest(commands: commands, promises: promises), promise: written)
    do {
      var replies: [RESPValue] = []
      replies.reserveCapacity(promises.count)
      for promise in promises { replies.append(try await promise.futureResult.get()) }
      timeout.cancel()
      return replies
    } catch {
      timeout.cancel()
      throw error
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
