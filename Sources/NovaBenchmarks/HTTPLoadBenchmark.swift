import Foundation
import NIOCore
import NIOPosix
import NovaCore
import Synchronization

/// A closed-loop HTTP/1.1 load generator: `connections` keep-alive connections, each sending the
/// same request again as soon as the answer to the last one is in, for `duration`. Reports requests
/// per second and the latency of each (p50, p99, max), and counts answers by status.
public enum HTTPLoadBenchmark {
  /// What to send.
  public struct Request: Sendable {
    /// `GET` or `POST` (an answer to `HEAD` is not read as one).
    public var method: String
    public var host: String
    public var port: Int
    public var path: String
    public var headers: [(String, String)]
    public var body: [UInt8]

    public init(method: String, host: String, port: Int, path: String, headers: [(String, String)] = [], body: [UInt8] = []) {
      self.method = method
      self.host = host
      self.port = port
      self.path = path
      self.headers = headers
      self.body = body
    }

    /// A request for `url` (`http://HOST:PORT/PATH`); nil when it is not one.
    public init?(url: String, method: String, headers: [(String, String)] = [], body: [UInt8] = []) {
      guard let parsed = URLComponents(string: url), parsed.scheme == "http", let host = parsed.host, !host.isEmpty else {
        return nil
      }
      // Sent in the request line as written (percent-encoded).
      let path =
        (parsed.percentEncodedPath.isEmpty ? "/" : parsed.percentEncodedPath) + (parsed.percentEncodedQuery.map { "?" + $0 } ?? "")
      self.init(method: method, host: host, port: parsed.port ?? 80, path: path, headers: headers, body: body)
    }
  }

  /// One run's figures.
  public struct Result: Codable, Sendable, Equatable {
    public var connections: Int
    public var seconds: Double
    public var requests: Int
    public var requests_per_s: Double
    public var p50_ms: Double
    public var p99_ms: Double
    public var max_ms: Double
    /// Answers by status code ("201": 51234); "error" counts connections that failed.
    public var statuses: [String: Int]
  }

  /// Runs the load for `duration` after `warmup` (whose requests are not counted).
  public static func run(
    _ request: Request, connections: Int, duration: Duration, warmup: Duration = .seconds(1)
  ) async throws -> Result {
    try request.validate()
    let group = MultiThreadedEventLoopGroup(numberOfThreads: min(connections, max(1, ProcessInfo.processInfo.activeProcessorCount)))
    do {
      let result = try await load(request, group: group, connections: connections, duration: duration, warmup: warmup)
      try? await group.shutdownGracefully()
      return result
    } catch {
      try? await group.shutdownGracefully()
      throw error
    }
  }

  private static func load(
    _ request: Request, group: MultiThreadedEventLoopGroup, connections: Int, duration: Duration, warmup: Duration
  ) async throws -> Result {
    let recorder = Recorder()
    let bytes = request.encoded
    var channels: [any Channel] = []
    for _ in 0..<connections {
      let channel = try await ClientBootstrap(group: group)
        .channelOption(.socketOption(.tcp_nodelay), value: 1)
        .channelInitializer { channel in
          channel.pipeline.addHandler(LoopHandler(request: bytes, recorder: recorder))
        }
        .connect(host: request.host, port: request.port).get()
      channels.append(channel)
    }
    try await Task.sleep(for: warmup)
    recorder.start()
    let started = ContinuousClock.now
    try await Task.sleep(for: duration)
    let (latencies, statuses) = recorder.stop()
    let seconds = (ContinuousClock.now - started).seconds
    for channel in channels { try? await channel.close() }
    let sorted = latencies.sorted()
    func percentile(_ p: Double) -> Double {
      sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] * 1000
    }
    return Result(
      connections: connections, seconds: seconds, requests: sorted.count, requests_per_s: Double(sorted.count) / seconds,
      p50_ms: percentile(0.5), p99_ms: percentile(0.99), max_ms: (sorted.last ?? 0) * 1000,
      statuses: Dictionary(uniqueKeysWithValues: statuses.map { ($0.key < 0 ? "error" : String($0.key), $0.value) }))
  }

  /// The median of several runs, figure by figure (statuses: summed).
  public static func median(_ results: [Result]) -> Result {
    func middle(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
    guard var out = results.first else {
      return Result(connections: 0, seconds: 0, requests: 0, requests_per_s: 0, p50_ms: 0, p99_ms: 0, max_ms: 0, statuses: [:])
    }
    out.seconds = middle(results.map(\.seconds))
    out.requests = Int(middle(results.map { Double($0.requests) }))
    out.requests_per_s = middle(results.map(\.requests_per_s))
    out.p50_ms = middle(results.map(\.p50_ms))
    out.p99_ms = middle(results.map(\.p99_ms))
    out.max_ms = results.map(\.max_ms).max() ?? 0
    out.statuses = results.reduce(into: [:]) { sum, result in sum.merge(result.statuses, uniquingKeysWith: +) }
    return out
  }

  /// Latencies (seconds) and statuses of the answers that arrived while recording.
  final class Recorder: Sendable {
    private struct State {
      var recording = false
      var latencies: [Double] = []
      var statuses: [Int: Int] = [:]
    }
    private let state = Mutex(State())

    func start() { state.withLock { $0.recording = true } }

    func stop() -> ([Double], [Int: Int]) {
      state.withLock { state in
        state.recording = false
        return (state.latencies, state.statuses)
      }
    }

    func record(seconds: Double, status: Int) {
      state.withLock { state in
        guard state.recording else { return }
        if status >= 0 { state.latencies.append(seconds) }
        state.statuses[status, default: 0] += 1
      }
    }
  }

  /// Sends the request, waits for the whole answer, records it, sends it again. The request's
  /// bytes are made once; answers are scanned for their ends (`HTTPResponseScanner`).
  final class LoopHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// The request's bytes, written again and again (a write does not copy them).
    let request: ByteBuffer
    let recorder: Recorder
    /// When the request in flight was sent, what has arrived of its answer, and the scanner.
    /// Only this channel's event loop touches them; the Mutex keeps the type Sendable.
    private let connection = Mutex(
      (sent: ContinuousClock.now, inFlight: false, received: ByteBuffer(), scanner: HTTPResponseScanner()))

    init(request: [UInt8], recorder: Recorder) {
      self.request = ByteBuffer(bytes: request)
      self.recorder = recorder
    }

    func channelActive(context: ChannelHandlerContext) {
      send(context)
      context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
      var bytes = unwrapInboundIn(data)
      let scanned = connection.withLock {
        state -> Swift.Result<(sent: ContinuousClock.Instant, answers: [HTTPResponseScanner.Response]), HTTPResponseScanner.Malformed> in
        if state.received.readableBytes == 0 {
          swap(&state.received, &bytes)
        } else {
          state.received.writeBuffer(&bytes)
        }
        do throws(HTTPResponseScanner.Malformed) {
          let answers = try state.scanner.scan(&state.received)
          state.received.discardReadBytes()
          if !answers.isEmpty { state.inFlight = false }
          return .success((state.sent, answers))
        } catch {
          state.inFlight = false
          return .failure(error)
        }
      }
      switch scanned {
      case .success(let (sent, answers)):
        guard !answers.isEmpty else { return }
        let seconds = (ContinuousClock.now - sent).seconds
        for answer in answers { recorder.record(seconds: seconds, status: answer.status) }
        send(context)
      case .failure:
        recorder.record(seconds: 0, status: -1)
        context.close(promise: nil)
      }
    }

    /// A server that closes ends the answer whose body ran to the close, or fails the request
    /// in flight: either is counted (an error, like a failed connection).
    func channelInactive(context: ChannelHandlerContext) {
      let (answer, failed, sent) = connection.withLock { state -> (HTTPResponseScanner.Response?, Bool, ContinuousClock.Instant) in
        let answer = state.scanner.finish()
        defer { state.inFlight = false }
        return (answer, answer == nil && state.inFlight, state.sent)
      }
      if let answer {
        recorder.record(seconds: (ContinuousClock.now - sent).seconds, status: answer.status)
      } else if failed {
        recorder.record(seconds: 0, status: -1)
      }
      context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
      connection.withLock { $0.inFlight = false }
      recorder.record(seconds: 0, status: -1)
      context.close(promise: nil)
    }

    private func send(_ context: ChannelHandlerContext) {
      connection.withLock { state in
        state.sent = .now
        state.inFlight = true
      }
      context.writeAndFlush(wrapOutboundOut(request), promise: nil)
    }
  }
}

extension HTTPLoadBenchmark.Request {
  /// Throws unless every part can be written into the request's head as it is: a line break or
  /// control character would split it, or end it early.
  func validate() throws {
    func check(_ text: String, _ what: String, spaces: Bool) throws {
      if let bad = text.unicodeScalars.firstIndex(where: { $0.value < 0x20 || $0.value == 0x7F || (!spaces && $0 == " ") }) {
        let offset = text.unicodeScalars.distance(from: text.unicodeScalars.startIndex, to: bad)
        throw NovaError.invalidInput(field: what, message: "has a character that cannot be sent in a request head at offset \(offset)")
      }
    }
    try check(method, "method", spaces: false)
    try check(path, "path", spaces: false)
    try check(host, "host", spaces: false)
    for (name, value) in headers {
      try check(name, "header name '\(name.prefix(40))'", spaces: false)
      try check(value, "header '\(name.prefix(40))'", spaces: true)
    }
  }

  /// The whole request as HTTP/1.1 bytes: request line, `Host`, `Content-Length`, the headers
  /// given, and the body.
  var encoded: [UInt8] {
    var head = "\(method) \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nContent-Length: \(body.count)\r\n"
    for (name, value) in headers { head += "\(name): \(value)\r\n" }
    head += "\r\n"
    return Array(head.utf8) + body
  }
}
