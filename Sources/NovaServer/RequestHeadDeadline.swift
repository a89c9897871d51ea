import HummingbirdCore
import Logging
import NIOCore

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

  func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<HTTP1Channel.Value> {
    let timeout = headTimeout
    return channel.eventLoop.makeCompletedFuture {
      try channel.pipeline.syncOperations.addHandler(RequestHeadDeadline(timeout: timeout))
    }.flatMap { inner.setup(channel: channel, logger: logger) }
  }

  func handle(value: HTTP1Channel.Value, logger: Logger) async {
    await inner.handle(value: value, logger: logger)
  }
}
