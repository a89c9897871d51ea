import NIOCore
import NIOPosix
import Synchronization

/// A TCP proxy for tests, between a client and a server on loopback: it delays every chunk by a
/// fixed time in each direction and can cut all connections (now, or at random intervals).
public final class LatencyProxy: Sendable {
  public let port: Int
  private let server: any Channel
  private let connections: ConnectionList

  /// Starts listening on a free loopback port and forwards to `targetPort`.
  public init(targetPort: Int, delay: Duration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws {
    let connections = ConnectionList()
    self.connections = connections
    let (seconds, attoseconds) = delay.components
    let amount = TimeAmount.nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    server = try await ServerBootstrap(group: group)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
      .childChannelInitializer { inbound in
        ClientBootstrap(group: inbound.eventLoop)
          .channelOption(.socketOption(.tcp_nodelay), value: 1)
          .connect(host: "127.0.0.1", port: targetPort)
          .flatMap { outbound in
            connections.list.withLock { $0 += [inbound, outbound] }
            return outbound.pipeline.addHandler(DelayedForwarder(peer: inbound, delay: amount, drops: connections)).flatMap {
              inbound.pipeline.addHandler(DelayedForwarder(peer: outbound, delay: amount, drops: nil))
            }
          }
      }
      .bind(host: "127.0.0.1", port: 0).get()
    port = server.localAddress?.port ?? 0
  }

  /// Closes every open connection (clients see a dropped connection and must reconnect).
  public func cutAll() {
    let open = connections.list.withLock { list -> [any Channel] in
      defer { list.removeAll() }
      return list
    }
    for channel in open { channel.close(promise: nil) }
  }

  /// Loses the next `count` replies from the server: each is dropped and its connection cut, as
  /// when a network fails after the server acted on a request (the client must retry it blind).
  public func loseNextReplies(_ count: Int) {
    connections.repliesToLose.withLock { $0 += count }
  }

  /// Stops accepting and closes everything.
  public func close() async {
    cutAll()
    try? await server.close()
  }
}

/// The proxy's open connections.
final class ConnectionList: Sendable {
  let list = Mutex<[any Channel]>([])
  let repliesToLose = Mutex(0)
}

/// Forwards what one side reads to the other side after a delay, in order.
final class DelayedForwarder: ChannelInboundHandler, Sendable {
  typealias InboundIn = ByteBuffer
  let peer: any Channel
  let delay: TimeAmount
  /// Set on the server-to-client side only: where replies to lose are counted.
  let drops: ConnectionList?

  init(peer: any Channel, delay: TimeAmount, drops: ConnectionList?) {
    self.peer = peer
    self.delay = delay
    self.drops = drops
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let buffer = unwrapInboundIn(data)
    let peer = self.peer
    let lose = drops?.repliesToLose.withLock { count -> Bool in
      guard count > 0 else { return false }
      count -= 1
      return true
    }
    if lose == true {
      peer.close(promise: nil)
      context.close(promise: nil)
      return
    }
    if delay.nanoseconds == 0 {
      peer.writeAndFlush(buffer, promise: nil)
    } else {
      peer.eventLoop.scheduleTask(in: delay) { peer.writeAndFlush(buffer, promise: nil) }
    }
  }

  func channelInactive(context: ChannelHandlerContext) {
    let peer = self.peer
    peer.eventLoop.scheduleTask(in: delay) { peer.close(promise: nil) }
    context.fireChannelInactive()
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    context.close(promise: nil)
  }
}
