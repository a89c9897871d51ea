import Foundation
import NovaCore

/// One measurement: a named value with labels, a unit, when, and who reported it.
public struct KPISample: Sendable, Equatable, Codable {
  public var name: String
  public var labels: [String: String]
  public var value: Double
  public var unit: String
  /// Milliseconds since 1970.
  public var time: Int64
  /// Who reported it (`nova serve`, `cli:root`, `token:ci`, `bench baseline`).
  public var source: String

  public init(name: String, labels: [String: String] = [:], value: Double, unit: String = "", time: Int64, source: String) {
    self.name = name
    self.labels = labels
    self.value = value
    self.unit = unit
    self.time = time
    self.source = source
  }

  /// Names and label keys: letters, digits, `_`, `.`, `:` (Prometheus-compatible, plus dots).
  /// Checks names, labels, value and unit, and that the sample is not dated after `notAfter` (ms).
  public func validate(notAfter: Int64 = .max) throws(NovaError) {
    try Self.validateName(name, field: "name")
    guard time <= notAfter else {
      throw .invalidInput(
        field: "time",
        message:
          "\(AuditTime.string(time)) is in the future: after \(AuditTime.string(notAfter)), now plus the clock skew allowed (--kpi-future-seconds); check the sender's clock"
      )
    }
    for (key, value) in labels {
      try Self.validateName(key, field: "label '\(key)'")
      guard value.utf8.count <= 256 else { throw .invalidInput(field: "label '\(key)'", message: "value longer than 256 bytes") }
    }
    guard labels.count <= 16 else { throw .invalidInput(field: "labels", message: "\(labels.count) labels; at most 16") }
    guard value.isFinite else { throw .invalidInput(field: "value", message: "\(value) is not a finite number") }
    guard unit.utf8.count <= 32 else { throw .invalidInput(field: "unit", message: "longer than 32 bytes") }
  }

  static func validateName(_ name: String, field: String) throws(NovaError) {
    guard !name.isEmpty, name.utf8.count <= 128,
      name.utf8.allSatisfy({
        ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5a) || ($0 >= 0x61 && $0 <= 0x7a) || $0 == 0x5f || $0 == 0x2e || $0 == 0x3a
      }),
      !(name.utf8.first! >= 0x30 && name.utf8.first! <= 0x39)
    else {
      throw .invalidInput(field: field, message: "'\(name)' must be 1 to 128 letters, digits, _ . : and not start with a digit")
    }
  }

  /// Labels as canonical JSON (keys sorted, RFC 8785), the stored and exported form.
  public var labelText: String { Self.labelText(labels) }

  /// Labels as canonical JSON.
  public static func labelText(_ labels: [String: String]) -> String {
    if labels.isEmpty { return "{}" }
    var out: [UInt8] = [UInt8(ascii: "{")]
    for (index, key) in labels.keys.sorted().enumerated() {
      if index > 0 { out.append(UInt8(ascii: ",")) }
      CanonicalJSON.writeString(key, into: &out)
      out.append(UInt8(ascii: ":"))
      CanonicalJSON.writeString(labels[key]!, into: &out)
    }
    out.append(UInt8(ascii: "}"))
    return String(decoding: out, as: UTF8.self)
  }
}
