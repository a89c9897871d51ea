import Foundation
import NovaCore

/// Job kinds every Nova process knows, for smoke tests and benchmarks.
public enum BuiltinJobs {
  /// Parameters of `sleep`.
  public struct SleepParameters: Codable, Sendable {
    public var ms: Int
    public init(ms: Int) { self.ms = ms }
  }

  /// Parameters of `fail`.
  public struct FailParameters: Codable, Sendable {
    /// Attempts that fail before one succeeds.
    public var times: Int
    public var message: String?
    public init(times: Int, message: String? = nil) {
      self.times = times
      self.message = message
    }
  }

  /// A failure raised on purpose by the `fail` kind.
  public struct IntendedFailure: Error, CustomStringConvertible {
    public var description: String
  }

  /// Any JSON object; the built-ins that ignore their payload still require an object.
  struct AnyObject: Decodable, Sendable {
    init(from decoder: any Decoder) throws {
      _ = try decoder.container(keyedBy: JSONCodingKey.self)
    }
  }

  struct JSONCodingKey: CodingKey {
    var stringValue: String
    var intValue: Int?
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) {
      self.stringValue = String(intValue)
      self.intValue = intValue
    }
  }

  /// Adds `noop`, `sleep`, `fail` and `echo` to a registry.
  public static func register(into registry: inout JobRegistry) {
    registry.register("noop", parameters: AnyObject.self) { _, _ in EmptyResult() }
    registry.register("sleep", parameters: SleepParameters.self) { parameters, _ in
      guard parameters.ms >= 0 else { throw NonRetryableJobError("sleep: ms must not be negative") }
      try await Task.sleep(for: .milliseconds(parameters.ms))
      return ["slept_ms": parameters.ms]
    }
    registry.register("fail", parameters: FailParameters.self) { parameters, context in
      if context.attempt <= parameters.times {
        throw IntendedFailure(
          description: parameters.message ?? "failing on purpose (attempt \(context.attempt) of \(parameters.times) to fail)")
      }
      return ["attempts": context.attempt]
    }
    registry.register("echo", parameters: JSONValue.self) { payload, _ in payload }
  }

  /// A registry holding just the built-in kinds.
  public static var registry: JobRegistry {
    var registry = JobRegistry()
    register(into: &registry)
    return registry
  }
}
