/// Errors of the Redis client.
public enum RedisError: Error, Sendable, Equatable, CustomStringConvertible {
  /// The server answered with an error reply.
  case server(String)
  /// The connection closed (or was closed after a timeout) before the reply came.
  case connectionClosed
  /// No reply within the command timeout.
  case timeout(String)
  /// The server sent bytes that are not valid RESP.
  case protocolError(RESPDecodingError)
  /// Could not connect (after retries within the connect timeout).
  case connectFailed(String)
  /// The `redis://` URL is malformed.
  case invalidURL(String)
  /// A reply of an unexpected shape.
  case unexpectedReply(String)

  public var description: String {
    switch self {
    case .server(let message): return "redis error: \(message)"
    case .connectionClosed: return "redis connection closed"
    case .timeout(let what): return "redis timeout: \(what)"
    case .protocolError(let error): return "redis protocol error: \(error)"
    case .connectFailed(let message): return "cannot connect to redis: \(message)"
    case .invalidURL(let message): return "invalid redis URL: \(message)"
    case .unexpectedReply(let message): return "unexpected redis reply: \(message)"
    }
  }

  /// True when retrying on a fresh connection may succeed.
  public var isTransient: Bool {
    switch self {
    case .connectionClosed, .timeout, .connectFailed: return true
    case .server(let message): return message.hasPrefix("LOADING") || message.hasPrefix("BUSY") || message.hasPrefix("TRYAGAIN")
    case .protocolError, .invalidURL, .unexpectedReply: return false
    }
  }
}
