import Foundation

/// A parsed `redis://[user:password@]host[:port][/db][?protocol=3]` URL.
public struct RedisURL: Sendable, Equatable, CustomStringConvertible {
  public var host: String
  public var port: Int
  public var username: String?
  public var password: String?
  public var database: Int
  /// 2 or 3; with 3 the client sends `HELLO 3` and receives RESP3 replies.
  public var protocolVersion: Int

  public init(
    host: String = "127.0.0.1", port: Int = 6379, username: String? = nil, password: String? = nil, database: Int = 0, protocolVersion: Int = 2
  ) {
    self.host = host
    self.port = port
    self.username = username
    self.password = password
    self.database = database
    self.protocolVersion = protocolVersion
  }

  /// Parses a URL; the error names the part that is wrong.
  public init(parsing text: String) throws(RedisError) {
    guard let components = URLComponents(string: text) else { throw .invalidURL("'\(text)' is not a URL") }
    guard components.scheme == "redis" else {
      throw .invalidURL("'\(text)': scheme must be redis://")
    }
    guard let host = components.host, !host.isEmpty else { throw .invalidURL("'\(text)': no host") }
    self.init(host: host)
    if let port = components.port {
      guard (1...65535).contains(port) else { throw .invalidURL("'\(text)': port \(port) out of range") }
      self.port = port
    }
    if let user = components.user, !user.isEmpty { username = user.removingPercentEncoding ?? user }
    if let password = components.password { self.password = password.removingPercentEncoding ?? password }
    let path = components.path.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
    if !path.isEmpty {
      guard let db = Int(path), db >= 0 else { throw .invalidURL("'\(text)': database '\(path)' is not a number") }
      database = db
    }
    for item in components.queryItems ?? [] {
      switch item.name {
      case "protocol":
        guard let value = item.value.flatMap(Int.init), value == 2 || value == 3 else {
          throw .invalidURL("'\(text)': protocol must be 2 or 3")
        }
        protocolVersion = value
      default:
        throw .invalidURL("'\(text)': unknown parameter '\(item.name)'")
      }
    }
  }

  /// The URL with the password hidden, for logs.
  public var description: String {
    var auth = ""
    if let username { auth = username + (password == nil ? "" : ":***") + "@" } else if password != nil { auth = ":***@" }
    return "redis://\(auth)\(host):\(port)/\(database)"
  }
}
