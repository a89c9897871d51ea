import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// An HTTP receiver on loopback that records every request and answers with scripted statuses:
/// the stand-in for PagerDuty or a webhook endpoint in tests and in `nova bench alerts`.
public final class LocalHTTPReceiver: Sendable {
  /// One request as received.
  public struct Request: Sendable {
    public var method: String
    public var path: String
    public var headers: [(String, String)]
    public var body: [UInt8]
    /// When it arrived (the server's monotonic clock).
    public var received: ContinuousClock.Instant

    public func header(_ name: String) -> String? {
      headers.first { $0.0.lowercased() == name.lowercased() }?.1
    }

    public var text: String { String(decoding: body, as: UTF8.self) }
  }

  fileprivate struct State {
    var requests: [Request] = []
    /// Statuses to answer next, in order; afterwards `defaultStatus`.
    var script: [(status: Int, body: String)] = []
    var defaultStatus = 202
    var defaultBody = #"{"status":"success","message":"Event processed"}"#
  }

  public let port: Int
  private let channel: any Channel
  private let box = RecordingState()

  public init() async throws {
    let box = self.box
    channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .childChannelInitializer { channel in
        // The initializer runs on the channel's event loop, so the handlers are added there
        // synchronously and never cross threads (they need not be Sendable).
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.configureHTTPServerPipeline()
          try channel.pipeline.syncOperations.addHandler(RecordingHandler(box: box))
        }
      }
      .bind(host: "127.0.0.1", port: 0).get()
    port = channel.localAddress?.port ?? 0
  }

  public var url: String { "http://127.0.0.1:\(port)" }

  /// Answers the next requests with these statuses (and bodies), then with the default. A 3xx
  /// answer's body is sent as its `Location`, a 429 answer's numeric body as its `Retry-After`.
  public func script(_ answers: [(status: Int, body: String)]) {
    box.state.withLock { $0.script += answers }
  }

  /// The answer once the script is used up.
  public func setDefault(status: Int, body: String) {
    box.state.withLock {
      $0.defaultStatus = status
      $0.defaultBody = body
    }
  }

  public var requests: [Request] { box.state.withLock { $0.requests } }

  /// Waits until at least `count` requests arrived; returns them (fails after `timeout`).
  public func waitForRequests(_ count: Int, timeout: Duration = .seconds(10)) async throws -> [Request] {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
      let current = requests
      if current.count >= count { return current }
      try await Task.sleep(for: .milliseconds(5))
    }
    throw RecordingTimeout(expected: count, got: requests.count)
  }

  public func close() async { try? await channel.close() }

  fileprivate static func answer(_ box: RecordingState, _ request: Request) -> (Int, String) {
    box.state.withLock { state in
      state.requests.append(request)
      if !state.script.isEmpty { return (state.script.removeFirst()) }
      return (state.defaultStatus, state.defaultBody)
    }
  }
}

/// Not enough requests arrived in time.
public struct RecordingTimeout: Error, CustomStringConvertible {
  public var expected: Int
  public var got: Int
  public var description: String { "expected \(expected) requests, got \(got)" }
}

/// The server's shared state (a class: the handlers of every connection hold it).
private final class RecordingState: Sendable {
  let state = Mutex(LocalHTTPReceiver.State())
}

/// Collects one request's parts on its channel's event loop (NIO calls a handler only there).
private final class RecordingHandler: ChannelInboundHandler {
  typealias InboundIn = HTTPServerRequestPart
  typealias OutboundOut = HTTPServerResponsePart

  private let box: RecordingState
  private var head: HTTPRequestHead?
  private var body: [UInt8] = []

  fileprivate init(box: RecordingState) { self.box = box }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    switch unwrapInboundIn(data) {
    case .head(let head):
      self.head = head
      body = []
    case .body(var buffer):
      body += buffer.readBytes(length: buffer.readableBytes) ?? []
    case .end:
      guard let head else { return }
      let request = LocalHTTPReceiver.Request(
        method: head.method.rawValue, path: head.uri, headers: head.headers.map { ($0.name, $0.value) }, body: body,
        received: .now)
      let (status, text) = LocalHTTPReceiver.answer(box, request)
      var headers = HTTPHeaders()
      headers.add(name: "Content-Type", value: "application/json")
      headers.add(name: "Content-Length", value: String(text.utf8.count))
      if (300..<400).contains(status) { headers.add(name: "Location", value: text) }
      // A 429 answer's body, when it is a number, is also sent as its `Retry-After`.
      if status == 429, Int(text) != nil { headers.add(name: "Retry-After", value: text) }
      context.write(
        wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .init(statusCode: status), headers: headers))), promise: nil)
      context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: text)))), promise: nil)
      context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
      self.head = nil
    }
  }
}
