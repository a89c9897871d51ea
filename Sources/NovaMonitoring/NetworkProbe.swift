import Foundation
import NovaCore

/// TCP throughput and round-trip latency to a peer running `nova bench net-server`. The first
/// byte of a connection picks the test: `T` (the client streams bytes, the server answers with
/// the count once the client stops sending) or `L` (the server echoes every byte).
public enum NetworkProbe {
  public struct Result: Codable, Sendable, Equatable {
    public var target: String
    public var throughput_mbit_s: CPUProbe.Measure
    public var rtt_p50_us: Double
    public var rtt_p99_us: Double

    public init(target: String, throughput_mbit_s: CPUProbe.Measure, rtt_p50_us: Double, rtt_p99_us: Double) {
      self.target = target
      self.throughput_mbit_s = throughput_mbit_s
      self.rtt_p50_us = rtt_p50_us
      self.rtt_p99_us = rtt_p99_us
    }
  }

  /// Runs `runs` throughput transfers of `megabytes` and `pings` round trips against `host:port`.
  public static func run(host: String, port: Int, runs: Int, megabytes: Int = 256, pings: Int = 2000) throws -> Result {
    var rates: [Double] = []
    for _ in 0..<runs {
      let fd = try connect(host: host, port: port)
      defer { close(fd) }
      try sendAll(fd, [UInt8(ascii: "T")])
      let chunk = [UInt8](repeating: 0xA5, count: 1 << 16)
      let start = DispatchTime.now().uptimeNanoseconds
      for _ in 0..<(megabytes * 16) { try sendAll(fd, chunk) }
      shutdown(fd, Int32(SHUT_WR))
      var count: UInt64 = 0
      guard recv(fd, &count, 8, Int32(MSG_WAITALL)) == 8, count == UInt64(megabytes) << 20 else {
        throw NovaError.unavailable("the peer at \(host):\(port) did not confirm the transfer")
      }
      let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
      rates.append(Double(megabytes) * 8 * 1.048576 / seconds)
    }
    let fd = try connect(host: host, port: port)
    defer { close(fd) }
    try sendAll(fd, [UInt8(ascii: "L")])
    var times: [Double] = []
    var byte: UInt8 = 1
    for _ in 0..<pings {
      let start = DispatchTime.now().uptimeNanoseconds
      try sendAll(fd, [byte])
      guard recv(fd, &byte, 1, Int32(MSG_WAITALL)) == 1 else {
        throw NovaError.unavailable("the peer at \(host):\(port) stopped echoing")
      }
      times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1000)
    }
    times.sort()
    return Result(
      target: "\(host):\(port)", throughput_mbit_s: CPUProbe.measure("network.throughput", "Mbit/s", rates),
      rtt_p50_us: times[times.count / 2], rtt_p99_us: times[min(times.count - 1, times.count * 99 / 100)])
  }

  static func connect(host: String, port: Int) throws -> Int32 {
    var hints = addrinfo()
    hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
    var result: UnsafeMutablePointer<addrinfo>?
    guard getaddrinfo(host, String(port), &hints, &result) == 0, let info = result else {
      throw NovaError.invalidInput(field: "--target", message: "cannot resolve \(host)")
    }
    defer { freeaddrinfo(result) }
    let fd = socket(info.pointee.ai_family, info.pointee.ai_socktype, info.pointee.ai_protocol)
    guard fd >= 0 else { throw NovaError.unavailable("socket() failed") }
    var one: Int32 = 1
    setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    guard Foundation.connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 else {
      close(fd)
      throw NovaError.unavailable("cannot connect to \(host):\(port) (is `nova bench net-server --port \(port)` running there?)")
    }
    return fd
  }

  static func sendAll(_ fd: Int32, _ bytes: [UInt8]) throws {
    var offset = 0
    while offset < bytes.count {
      let sent = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
      guard sent > 0 else { throw NovaError.unavailable("the connection closed while sending") }
      offset += sent
    }
  }
}

/// The peer of `NetworkProbe`: accepts connections on a port, one thread each.
public final class NetServer: Sendable {
  public let port: Int
  private let listener: Int32

  /// Listens on `host:port` (port 0 picks one).
  public init(host: String = "127.0.0.1", port: Int) throws {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw NovaError.unavailable("socket() failed") }
    var one: Int32 = 1
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = UInt16(port).bigEndian
    address.sin_addr.s_addr = inet_addr(host)
    let bound = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0, listen(fd, 64) == 0 else {
      close(fd)
      throw NovaError.invalidInput(field: "--port", message: "cannot listen on \(host):\(port): \(String(cString: strerror(errno)))")
    }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    self.port = Int(UInt16(bigEndian: address.sin_port))
    listener = fd
    let listening = fd
    Thread.detachNewThread {
      while true {
        let client = accept(listening, nil, nil)
        if client < 0 { return }
        Thread.detachNewThread { NetServer.serve(client) }
      }
    }
  }

  private static func serve(_ fd: Int32) {
    defer { close(fd) }
    var mode: UInt8 = 0
    guard recv(fd, &mode, 1, Int32(MSG_WAITALL)) == 1 else { return }
    var buffer = [UInt8](repeating: 0, count: 1 << 16)
    if mode == UInt8(ascii: "T") {
      var total: UInt64 = 0
      while true {
        let count = recv(fd, &buffer, buffer.count, 0)
        if count <= 0 { break }
        total += UInt64(count)
      }
      _ = send(fd, &total, 8, Int32(MSG_NOSIGNAL))
    } else {
      while true {
        let count = recv(fd, &buffer, buffer.count, 0)
        if count <= 0 { return }
        _ = buffer.withUnsafeBytes { send(fd, $0.baseAddress, count, Int32(MSG_NOSIGNAL)) }
      }
    }
  }

  /// Stops accepting.
  public func stop() {
    shutdown(listener, Int32(SHUT_RDWR))
    close(listener)
  }
}
