import Foundation

/// A parsed `redis[s]://[user[:password]@]host[:port][/db][?protocol=3&ca_file=…&password_env=…&password_file=…]`
/// URL. `rediss://` connects over TLS (trusting the system's roots, or only `ca_file`); the
/// password may come from an environment variable or a file (readable by its owner only) so
/// that it never appears on a command line.
public struct RedisURL: Sendable, Equatable, CustomStringConvertible {
  public var host: String
  public var port: Int
  public var username: String?
  public var password: String?
  public var database: Int
  /// 2 or 3; with 3 the client sends `HELLO 3` and receives RESP3 replies.
  public var protocolVersion: Int
  /// Connect over TLS (`rediss://`).
  public var tls = false
  /// PEM file of the certificate authorities to trust for TLS (default: the system's).
  public var caFile: String?

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
  public init(parsing text: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws(RedisError) {
    guard let components = URLComponents(string: text) else { throw .invalidURL("'\(Self.redacted(text))' is not a URL") }
    let text = Self.redacted(text)
    guard components.scheme == "redis" || components.scheme == "rediss" else {
      throw .invalidURL("'\(text)': scheme must be redis:// or rediss:// (TLS)")
    }
    guard let host = components.host, !host.isEmpty else { throw .invalidURL("'\(text)': no host") }
    self.init(host: host)
    tls = components.scheme == "rediss"
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
      case "ca_file":
        guard tls, let value = item.value, !value.isEmpty else { throw .invalidURL("'\(text)': ca_file needs rediss:// and a path") }
        guard FileManager.default.isReadableFile(atPath: value) else { throw .invalidURL("'\(text)': cannot read ca_file \(value)") }
        caFile = value
      case "password_env":
        guard password == nil, let name = item.value, let value = environment[name], !value.isEmpty else {
          throw .invalidURL("'\(text)': password_env names a variable that is not set (or a password is given twice)")
        }
        password = value
      case "password_file":
        guard password == nil, let path = item.value else { throw .invalidURL("'\(text)': password_file needs a path (and no other password)") }
        var info = stat()
        guard stat(path, &info) == 0, let data = FileManager.default.contents(atPath: path),
          let value = String(data: data, encoding: .utf8)?.trimmingCharacters(in: .whitespacesAndNewlines), !value.isEmpty
        else { throw .invalidURL("'\(text)': cannot read a password from \(path)") }
        guard info.st_mode & 0o077 == 0 else {
          throw .invalidURL("'\(text)': the password file \(path) may be read by others; run chmod 600 \(path)")
        }
        password = value
      default:
        throw .invalidURL("'\(text)': unknown parameter '\(item.name)'")
      }
    }
  }

  /// The URL with the password hidden, for logs.
  public var description: String {
    var auth = ""
    if let username { auth = username + (password == nil ? "" : ":***") + "@" } else if password != nil { auth = ":***@" }
    return "\(tls ? "rediss" : "redis")://\(auth)\(host):\(port)/\(database)"
  }

  /// `text` with any password in it hidden, for messages.
  static func redacted(_ text: String) -> String {
    guard var components = URLComponents(string: text), components.password != nil else { return text }
    components.password = "***"
    return components.string ?? "(a URL with a password)"
  }
}
