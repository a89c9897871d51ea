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
    /// Waiting for (the rest of) a request head; `tail` is its last bytes so far.
    case head(tail: [UInt8])
    /// The head arrived: the body is read and the request processed.
    case request
    /// A response was written; the next byte starts a new head.
    case idle
  }

  private let timeout: TimeAmount
  private var state = State.head(tail: [])
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
    var tail: [UInt8]
    switch state {
    case .request:
      context.fireChannelRead(data)
      return
    case .idle:
      tail = []
      arm(context)
    case .head(let sofar):
      tail = sofar
    }
    // The head ends at the first CRLF CRLF.
    let bytes = buffer.readableBytesView
    var window = tail
    var complete = false
    for byte in bytes {
      window.append(byte)
      if window.count > 4 { window.removeFirst(window.count - 4) }
      if window == [13, 10, 13, 10] {
        complete = true
        break
      }
    }
    if complete {
      timer?.cancel()
      timer = nil
      state = .request
    } else {
      state = .head(tail: window)
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

  /// The HTTP/1 channel's value and the watch on its client.
  struct Value: ServerChildChannelValue {
    let inner: HTTP1Channel.Value
    let departure: ClientDeparture
    var channel: any Channel { inner.channel }
  }

  func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
    let timeout = headTimeout
    let departure = ClientDeparture()
    return channel.eventLoop.makeCompletedFuture {
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
