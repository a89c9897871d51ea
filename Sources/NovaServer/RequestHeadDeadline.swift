import Foundation
import HummingbirdCore
import Logging
import NIOCore
import Synchronization

/// Closes a connection whose request head does not arrive in time: one that sends nothing after
/// connecting, or sends its headers a byte at a time (slowloris), is closed `timeout` after it
/// connected or started the request. Sits in front of the HTTP decoder and sees raw bytes: a
/// head is complete at its blank line; the next request starts with the first byte read after a
/// response was written. (Idle keep-alive connections are closed by the HTTP channel's idle
/// timeout; a request being processed has no deadline here.)
final class RequestHeadDeadline: ChannelDuplexHandler, RemovableChannelHandler {
  typealias InboundIn = ByteBuffer
  typealias InboundOut = ByteBuffer
  typealias OutboundIn = IOData
  typealias OutboundOut = IOData

  private enum State {
    /// Waiting for (the rest of) a request head; `tail` holds its last four bytes so far, the
    /// latest lowest.
    case head(tail: UInt32)
    /// The head arrived: the body is read and the request processed.
    case request
    /// A response was written; the next byte starts a new head.
    case idle
  }

  private let timeout: TimeAmount
  private var state = State.head(tail: 0)
  private var timer: Scheduled<Void>?

  init(timeout: TimeAmount) {
    self.timeout = timeout
  }

  func handlerAdded(context: ChannelHandlerContext) {
    if context.channel.isActive { arm(context) }
  }

  func channelActive(context: ChannelHandlerContext) {
    if timer == nil, case .head = state { arm(context) }
    context.fireChannelActive()
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    timer?.cancel()
    timer = nil
  }

  func channelInactive(context: ChannelHandlerContext) {
    timer?.cancel()
    timer = nil
    context.fireChannelInactive()
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let buffer = unwrapInboundIn(data)
    var tail: UInt32
    let starting: Bool
    switch state {
    case .request:
      context.fireChannelRead(data)
      return
    case .idle:
      (tail, starting) = (0, true)
    case .head(let sofar):
      (tail, starting) = (sofar, false)
    }
    // The head ends at the first CRLF CRLF; the last four bytes are kept in one integer (every
    // request passes through here).
    let complete = buffer.withUnsafeReadableBytes { bytes in
      for byte in bytes {
        tail = tail << 8 | UInt32(byte)
        if tail == 0x0D0A_0D0A { return true }
      }
      return false
    }
    if complete {
      timer?.cancel()
      timer = nil
      state = .request
    } else {
      // A head that came whole in one read never needs the timer (most requests of a
      // keep-alive connection): it is armed only for one still arriving.
      if starting { arm(context) }
      state = .head(tail: tail)
    }
    context.fireChannelRead(data)
  }

  func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
    if case .request = state { state = .idle }
    context.write(data, promise: promise)
  }

  private func arm(_ context: ChannelHandlerContext) {
    timer?.cancel()
    let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
    timer = context.eventLoop.scheduleTask(in: timeout) {
      loopBound.value.close(promise: nil)
    }
  }
}

/// Hummingbird's HTTP/1 channel with a ``RequestHeadDeadline`` in front of it.
struct DeadlineHTTP1Channel: ServerChildChannel {
  let inner: HTTP1Channel
  let headTimeout: TimeAmount
  let connections: ConnectionLimit

  /// The HTTP/1 channel's value and the watch on its client.
  struct Value: ServerChildChannelValue {
    let inner: HTTP1Channel.Value
    let departure: ClientDeparture
    var channel: any Channel { inner.channel }
  }

  func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
    let timeout = headTimeout
    let departure = ClientDeparture()
    let connections = connections
    return channel.eventLoop.makeCompletedFuture {
      // Over the limit: answered 503 and closed, before any byte of it is read. Uncounted when
      // it closes, whatever happens below.
      let admitted = connections.open()
      channel.closeFuture.whenComplete { _ in connections.close() }
      if !admitted {
        try channel.pipeline.syncOperations.addHandler(OverloadAnswer())
      }
      try channel.pipeline.syncOperations.addHandler(ClientDepartureHandler(departure: departure))
      try channel.pipeline.syncOperations.addHandler(RequestHeadDeadline(timeout: timeout))
    }.flatMap { inner.setup(channel: channel, logger: logger) }.map { Value(inner: $0, departure: departure) }
  }

  /// Handles the connection's requests; when the client goes away (closes its side), the request
  /// being handled is cancelled, so that a long-polling claim nobody waits for claims nothing.
  func handle(value: Value, logger: Logger) async {
    let inner = inner
    let connection = Task { await inner.handle(value: value.inner, logger: logger) }
    value.departure.watch(connection)
    await withTaskCancellationHandler {
      await connection.value
    } onCancel: {
      connection.cancel()
    }
  }
}

/// Whether a connection's client went away, and the task to cancel when it does.
final class ClientDeparture: Sendable {
  private let state = Mutex<(gone: Bool, task: Task<Void, Never>?)>((false, nil))

  /// The client closed its side of the connection, or the connection closed.
  func departed() {
    let task = state.withLock { state -> Task<Void, Never>? in
      state.gone = true
      return state.task
    }
    task?.cancel()
  }

  /// Cancels `task` when the client departs (at once when it already has).
  func watch(_ task: Task<Void, Never>) {
    let gone = state.withLock { state -> Bool in
      state.task = task
      return state.gone
    }
    if gone { task.cancel() }
  }
}

/// Sees a connection's end of input (the server allows half-closed connections, so a client
/// that closes shows as `inputClosed`, not as the channel closing).
final class ClientDepartureHandler: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = ByteBuffer
  let departure: ClientDeparture

  init(departure: ClientDeparture) { self.departure = departure }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if let event = event as? ChannelEvent, event == .inputClosed { departure.departed() }
    context.fireUserInboundEventTriggered(event)
  }

  func channelInactive(context: ChannelHandlerContext) {
    departure.departed()
    context.fireChannelInactive()
  }
}

/// Counts open connections against a maximum.
final class ConnectionLimit: Sendable {
  let max: Int
  private let count = Mutex(0)

  init(max: Int) { self.max = max }

  /// The open-file limit less a reserve (the database, programs' pipes, outgoing calls).
  static func fromOpenFileLimit() -> Int {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
    let files = limit.rlim_cur > 1 << 30 ? 1 << 20 : Int(limit.rlim_cur)
    return Swift.max(16, files - Swift.max(64, files / 8))
  }

  /// Counts a new connection; false when it is over the maximum (it is counted all the same,
  /// and uncounted when it closes).
  func open() -> Bool {
    count.withLock { count in
      count += 1
      return count <= max
    }
  }

  func close() { count.withLock { $0 -= 1 } }

  /// Connections open now.
  var current: Int { count.withLock { $0 } }
}

/// Answers a connection the server has no room for: 503 with Retry-After, then closes it.
/// Nothing it sends is read.
final class OverloadAnswer: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = ByteBuffer
  typealias OutboundOut = ByteBuffer

  static let body = #"{"error":{"code":"overloaded","message":"the server has no room for another connection now"}}"#
  static let response =
    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\n"
    + "Content-Length: \(body.utf8.count)\r\n\r\n\(body)"

  func handlerAdded(context: ChannelHandlerContext) {
    if context.channel.isActive { answer(context) }
  }

  func channelActive(context: ChannelHandlerContext) { answer(context) }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

  private var answered = false

  private func answer(_ context: ChannelHandlerContext) {
    guard !answered else { return }
    answered = true
    let buffer = context.channel.allocator.buffer(string: Self.response)
    let channel = context.channel
    // Only the sending side is closed at first: closing with the client's request unread could
    // reset the connection and lose the answer. The rest goes a second later.
    context.writeAndFlush(wrapOutboundOut(buffer)).whenComplete { _ in
      channel.close(mode: .output).whenFailure { _ in channel.close(promise: nil) }
      channel.eventLoop.scheduleTask(in: .seconds(1)) { channel.close(promise: nil) }
    }
  }
}
