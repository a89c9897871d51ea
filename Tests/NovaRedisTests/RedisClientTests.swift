import Foundation
import NIOCore
import NIOPosix
import NovaRedis
import NovaTestSupport
import Testing

@Suite("Redis client", .serialized, .timeLimit(.minutes(5)))
struct RedisClientTests {
  @Test func parsesURLs() throws {
    let full = try RedisURL(parsing: "redis://agent:s%40cret@redis.internal:6380/3?protocol=3")
    #expect(full.host == "redis.internal")
    #expect(full.port == 6380)
    #expect(full.username == "agent")
    #expect(full.password == "s@cret")
    #expect(full.database == 3)
    #expect(full.protocolVersion == 3)
    #expect(full.description == "redis://agent:***@redis.internal:6380/3")
    #expect(try RedisURL(parsing: "redis://localhost") == RedisURL(host: "localhost"))
    for bad in ["http://x", "redis://", "redis://h:0", "redis://h/db", "redis://h?protocol=4", "redis://h?x=1", "::"] {
      #expect(throws: RedisError.self, "\(bad)") { _ = try RedisURL(parsing: bad) }
    }
  }

  @Test(.enabled(if: TestServers.redisAvailable, TestServers.redisMissing)) func sendsPipelinesAndRunsScripts() async throws {
    // Its own server: the SCRIPT FLUSH below must not touch the scripts of tests running beside it.
    let server = try RedisTestServer()
    defer { server.stop() }
    let client = try RedisClient(url: server.url)
    defer { client.close() }
    let key = "client-test-\(UUID().uuidString)"
    #expect(try await client.send("SET", .string(key), "41").string == "OK")
    #expect(try await client.send("INCR", .string(key)).int == 42)
    let replies = try await client.pipeline((0..<100).map { _ in ["INCR", .string(key)] })
    #expect(replies.last?.int == 142)
    // Many concurrent commands share the pooled connections (pipelining).
    let sum = try await withThrowingTaskGroup(of: Int64.self) { group in
      for _ in 0..<200 { group.addTask { try await client.send("INCR", .string(key)).int ?? 0 } }
      return try await group.reduce(0, +)
    }
    #expect(sum > 0)
    #expect(try await client.send("GET", .string(key)).int == 342)
    await #expect(throws: RedisError.self) { try await client.send("NOSUCHCOMMAND") }
    // A script the server has not seen is sent with EVAL on NOSCRIPT, then known by its SHA-1.
    let script = RedisScript("return {KEYS[1], ARGV[1], \(UUID().uuidString.count)}")
    #expect(script.sha1.count == 40)
    let reply = try await client.evaluate(script, keys: ["k"], arguments: ["v"])
    #expect(reply.elements?.map(\.string) == ["k", "v", nil])
    #expect(try await client.send("SCRIPT", "EXISTS", .string(script.sha1)).elements?.first?.int == 1)
    _ = try await client.send("SCRIPT", "FLUSH")
    #expect(try await client.evaluate(script, keys: ["k2"], arguments: ["v"]).elements?.first?.string == "k2")
    #expect(RedisScript("return 1").sha1 == "e0e1f9fabfc9d4800c877a703b823ac0578ff8db")
  }

  @Test(.enabled(if: TestServers.redisAvailable, TestServers.redisMissing)) func authenticatesSelectsAndSpeaksRESP3() async throws {
    let server = try RedisTestServer(password: "hunter2")
    defer { server.stop() }
    let wrong = RedisClient(configuration: .init(url: try RedisURL(parsing: "redis://:nope@127.0.0.1:\(server.port)"), retryWindow: .zero))
    await #expect(throws: RedisError.self) { try await wrong.send("PING") }
    let client = RedisClient(configuration: .init(url: try RedisURL(parsing: "redis://:hunter2@127.0.0.1:\(server.port)/2?protocol=3")))
    defer { client.close() }
    _ = try await client.send("SET", "where", "db2")
    let other = try RedisClient(url: "redis://:hunter2@127.0.0.1:\(server.port)/0")
    defer { other.close() }
    #expect(try await other.send("GET", "where").isNull)
    let hello = try await client.send("HGETALL", "nothing")
    #expect(hello == .map([]))
  }

  /// Issue #13 point 14: `rediss://` speaks TLS, trusting only the CA given; the password comes
  /// from a variable or a private file, never the command line.
  @Test(.enabled(if: TestServers.redisAvailable, TestServers.redisMissing)) func tlsAndCredentialsFromTheEnvironmentOrAFile() async throws {
    let server = try RedisTestServer(password: "hunter2", tls: true)
    defer { server.stop() }
    let secretFile = server.directory.appendingPathComponent("redis-password").path
    _ = FileManager.default.createFile(atPath: secretFile, contents: Data("hunter2\n".utf8), attributes: [.posixPermissions: 0o600])
    let viaFile = try RedisURL(parsing: "\(server.url)&password_file=\(secretFile)")
    #expect(viaFile.tls && viaFile.password == "hunter2" && viaFile.description.hasPrefix("rediss://:***@127.0.0.1"))
    let client = RedisClient(configuration: .init(url: viaFile))
    defer { client.close() }
    #expect(try await client.send("SET", "over", "tls").string == "OK")
    let viaEnvironment = try RedisURL(parsing: "\(server.url)&password_env=NOVA_TEST_REDIS", environment: ["NOVA_TEST_REDIS": "hunter2"])
    let other = RedisClient(configuration: .init(url: viaEnvironment))
    defer { other.close() }
    #expect(try await other.send("GET", "over").string == "tls")
    // Without the CA the server's certificate is not trusted; plain RESP to the TLS port fails.
    let untrusted = RedisClient(
      configuration: .init(url: try RedisURL(parsing: "rediss://:hunter2@127.0.0.1:\(server.port)"), retryWindow: .zero))
    await #expect(throws: RedisError.self) { try await untrusted.send("PING") }
    let plain = RedisClient(
      configuration: .init(
        url: try RedisURL(parsing: "redis://:hunter2@127.0.0.1:\(server.port)"), connectTimeout: .seconds(1), commandTimeout: .seconds(1),
        retryWindow: .zero))
    await #expect(throws: RedisError.self) { try await plain.send("PING") }
    // A password file others may read, an unset variable, or a CA on plain redis:// are refused.
    try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: secretFile)
    #expect { _ = try RedisURL(parsing: "\(server.url)&password_file=\(secretFile)") } throws: { "\($0)".contains("may be read by others") }
    #expect(throws: RedisError.self) { _ = try RedisURL(parsing: "\(server.url)&password_env=NOVA_UNSET", environment: [:]) }
    #expect(throws: RedisError.self) { _ = try RedisURL(parsing: "redis://127.0.0.1?ca_file=\(server.caFile!)") }
    #expect { _ = try RedisURL(parsing: "ftp://:pa55@h") } throws: { !"\($0)".contains("pa55") }
  }

  @Test(.enabled(if: TestServers.redisAvailable, TestServers.redisMissing)) func oneTimerPerConnectionBoundsEveryRequestInFlight() async throws {
    let server = try RedisTestServer()
    defer { server.stop() }
    let proxy = try await LatencyProxy(targetPort: server.port, delay: .milliseconds(150))
    // The connection's timer is armed for the first request (600 ms) and fires while the
    // second (sent at 400 ms, due at 1,000) is still in flight: it must be armed again for the
    // second, not fail it. Each reply takes about 300 ms (150 each way).
    let client = RedisClient(
      configuration: .init(url: RedisURL(port: proxy.port), poolSize: 1, commandTimeout: .milliseconds(600), retryWindow: .zero))
    async let first = client.send("PING")
    try await Task.sleep(for: .milliseconds(400))
    async let second = client.send("ECHO", "later")
    #expect(try await first.string == "PONG")
    #expect(try await second.string == "later")
    client.close()

    // A request with a nearer deadline (a request path's bound) behind one with a far one: the
    // timer moves up to it, and it fails on time, taking the connection's other request with it
    // (replies are matched by order, so the connection is closed).
    let bounded = RedisClient(
      configuration: .init(url: RedisURL(port: proxy.port), poolSize: 1, commandTimeout: .seconds(20), retryWindow: .zero))
    defer { bounded.close() }
    _ = try? await bounded.send("PING")  // connected, so both requests below share one connection
    let started = ContinuousClock.now
    async let far = bounded.send("PING")
    try await Task.sleep(for: .milliseconds(50))
    await #expect {
      try await RedisClient.$deadline.withValue(ContinuousClock.now + .milliseconds(100)) { try await bounded.send("PING") }
    } throws: { error in
      guard case RedisError.timeout = error else { return false }
      return true
    }
    do {
      _ = try await far
      Issue.record("the request behind the late one was answered on a connection that timed out")
    } catch {
      #expect(error is RedisError)
    }
    #expect(ContinuousClock.now - started < .seconds(2))
    await proxy.close()
  }

  @Test(.enabled(if: TestServers.redisAvailable, TestServers.redisMissing)) func commandTimeoutAndReconnectAfterADroppedConnection() async throws {
    let server = try RedisTestServer()
    defer { server.stop() }
    let proxy = try await LatencyProxy(targetPort: server.port, delay: .milliseconds(300))
    let slow = RedisClient(configuration: .init(url: RedisURL(port: proxy.port), commandTimeout: .milliseconds(100), retryWindow: .zero))
    await #expect(throws: RedisError.timeout("no reply within 100 ms")) { try await slow.send("PING") }
    slow.close()

    let client = RedisClient(configuration: .init(url: RedisURL(port: server.port), poolSize: 1, retryWindow: .seconds(20)))
    defer { client.close() }
    #expect(try await client.send("PING").string == "PONG")
    _ = try await client.send("CLIENT", "KILL", "TYPE", "normal")
    #expect(try await client.send("PING").string == "PONG")
    // Redis down for a while: commands retry until it is back.
    server.stop()
    async let reply = client.send("PING")
    try await Task.sleep(for: .milliseconds(500))
    try server.start()
    #expect(try await reply.string == "PONG")
    let unreachable = RedisClient(configuration: .init(url: RedisURL(port: try FreePort.find()), retryWindow: .zero))
    await #expect(throws: RedisError.self) { try await unreachable.send("PING") }
    await proxy.close()
  }

  @Test(.enabled(if: TestServers.redisAvailable, TestServers.redisMissing)) func aServerSendingGarbageGetsAProtocolError() async throws {
    let port = try FreePort.find()
    let garbage = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(GarbageResponder()) }
      }
      .bind(host: "127.0.0.1", port: port).get()
    let client = RedisClient(configuration: .init(url: RedisURL(port: port), retryWindow: .zero))
    await #expect {
      try await client.send("PING")
    } throws: { error in
      guard case RedisError.protocolError(let decoding) = error else { return false }
      return decoding.offset == 0
    }
    client.close()
    try await garbage.close()
  }
}

final class GarbageResponder: ChannelInboundHandler, Sendable {
  typealias InboundIn = ByteBuffer
  typealias OutboundOut = ByteBuffer
  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "?garbage\r\n")), promise: nil)
  }

  @Test(.enabled(if: TestServers.redisAvailable, TestServers.redisMissing)) func aCommandOnAClosedConnectionFailsAtOnceInsteadOfWaiting() async throws
  {
    // A write that never reaches the handler (the channel closed first) must still fail its
    // caller: this once left a stress test waiting forever.
    let connection = try await RedisConnection.connect(
      to: RedisURL(port: RedisTestServer.shared.port), commandTimeout: .seconds(60))
    connection.close()
    try await Task.sleep(for: .milliseconds(50))
    let start = ContinuousClock.now
    await #expect(throws: RedisError.self) { _ = try await connection.send(["PING"]) }
    #expect(ContinuousClock.now - start < .seconds(5))
  }
}
