import Foundation
import Yams

/// A configuration file that cannot be used, with where: `file:line:column: field: problem`.
public struct ConfigFileError: Error, Sendable, Equatable, CustomStringConvertible {
  public var file: String
  public var line: Int
  public var column: Int
  public var message: String

  public init(file: String, line: Int, column: Int, message: String) {
    self.file = file
    self.line = line
    self.column = column
    self.message = message
  }

  public var description: String { "\(file):\(line):\(column): \(message)" }
}

/// Reads a YAML node tree strictly: unknown keys, repeated keys and wrong types are errors
/// that name the file, line, column and field.
public struct YAMLReader: Sendable {
  public let file: String

  public init(file: String) { self.file = file }

  /// The UTF-8 text of the file at `path`.
  public static func text(path: String) throws(ConfigFileError) -> String {
    guard let data = FileManager.default.contents(atPath: path) else {
      throw ConfigFileError(file: path, line: 0, column: 0, message: "cannot read the file")
    }
    guard let text = String(data: data, encoding: .utf8) else {
      throw ConfigFileError(file: path, line: 0, column: 0, message: "not UTF-8 text")
    }
    return text
  }

  /// The node tree of `text` (nil for an empty document); syntax errors carry their position.
  public func compose(_ text: String) throws(ConfigFileError) -> Node? {
    do {
      return try Yams.compose(yaml: text)
    } catch let error as YamlError {
      switch error {
      case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _), .composer(_, let problem, let mark, _):
        throw ConfigFileError(file: file, line: mark.line, column: mark.column, message: "YAML syntax: \(problem)")
      default:
        throw ConfigFileError(file: file, line: 0, column: 0, message: "YAML: \(error)")
      }
    } catch {
      throw ConfigFileError(file: file, line: 0, column: 0, message: "YAML: \(error)")
    }
  }

  /// An error at `node`'s position.
  public func fail(_ node: Node?, _ message: String) -> ConfigFileError {
    ConfigFileError(file: file, line: node?.mark?.line ?? 0, column: node?.mark?.column ?? 0, message: message)
  }

  /// The entries of a mapping whose keys must be among `allowed`, each at most once.
  public func mapping(_ node: Node, _ field: String, allowed: Set<String>) throws(ConfigFileError) -> [(key: String, keyNode: Node, value: Node)] {
    guard case .mapping(let mapping) = node else { throw fail(node, "\(field): expected a mapping") }
    var entries: [(String, Node, Node)] = []
    var seen = Set<String>()
    for (key, value) in mapping {
      guard let name = key.string else { throw fail(key, "\(field): keys must be strings") }
      guard allowed.contains(name) else {
        throw fail(key, "\(field): unknown key '\(name)'; expected one of \(allowed.sorted().joined(separator: ", "))")
      }
      guard seen.insert(name).inserted else { throw fail(key, "\(field): '\(name)' appears twice") }
      entries.append((name, key, value))
    }
    return entries
  }

  /// A mapping of strings to strings (labels, matchers).
  public func stringMap(_ node: Node, _ field: String) throws(ConfigFileError) -> [String: String] {
    guard case .mapping(let mapping) = node else { throw fail(node, "\(field): expected a mapping") }
    var result: [String: String] = [:]
    for (key, value) in mapping {
      guard let name = key.string else { throw fail(key, "\(field): keys must be strings") }
      guard result[name] == nil else { throw fail(key, "\(field): '\(name)' appears twice") }
      result[name] = try string(value, "\(field).\(name)")
    }
    return result
  }

  public func string(_ node: Node, _ field: String) throws(ConfigFileError) -> String {
    guard case .scalar(let scalar) = node else { throw fail(node, "\(field): expected a string") }
    return scalar.string
  }

  /// One string or a non-empty list of them.
  public func strings(_ node: Node, _ field: String) throws(ConfigFileError) -> [String] {
    switch node {
    case .scalar(let scalar): return [scalar.string]
    case .sequence(let sequence):
      var values: [String] = []
      for (index, item) in sequence.enumerated() {
        values.append(try string(item, "\(field)[\(index)]"))
      }
      if values.isEmpty { throw fail(node, "\(field): an empty list matches nothing; leave the key out to match anything") }
      return values
    default: throw fail(node, "\(field): expected a string or a list of strings")
    }
  }

  public func number(_ node: Node, _ field: String, range: ClosedRange<Double>) throws(ConfigFileError) -> Double {
    guard case .scalar(let scalar) = node, let value = Double(scalar.string), value.isFinite, range.contains(value) else {
      throw fail(node, "\(field): expected a number in \(range.lowerBound)...\(range.upperBound)")
    }
    return value
  }

  public func bool(_ node: Node, _ field: String) throws(ConfigFileError) -> Bool {
    guard case .scalar(let scalar) = node, let value = Bool(scalar.string.lowercased()) else {
      throw fail(node, "\(field): expected true or false")
    }
    return value
  }

  /// A duration such as `250ms`, `30s`, `5m`, `1h`, `1d` or `1h30m` (a bare number is seconds).
  public func duration(_ node: Node, _ field: String, range: ClosedRange<Duration> = .zero ... .seconds(366 * 86_400)) throws(ConfigFileError)
    -> Duration
  {
    let text = try string(node, field)
    guard let value = Self.parseDuration(text), range.contains(value) else {
      throw fail(
        node,
        "\(field): '\(text)' is not a duration such as 30s, 5m, 1h or 1d from \(Self.describe(range.lowerBound)) to \(Self.describe(range.upperBound))"
      )
    }
    return value
  }

  /// A duration the way the file writes it: `250ms`, `30s`, `5m`, `2h`, `366d`.
  public static func describe(_ duration: Duration) -> String {
    let seconds = duration.seconds
    for (unit, size) in [("d", 86_400.0), ("h", 3600), ("m", 60), ("s", 1)]
    where seconds >= size && seconds.truncatingRemainder(dividingBy: size) == 0 {
      return "\(Int(seconds / size))\(unit)"
    }
    return seconds == 0 ? "0s" : "\(Int((seconds * 1000).rounded()))ms"
  }

  /// Parses `250ms`, `30s`, `5m`, `1h`, `1d`, `1h30m` or a bare number of seconds.
  public static func parseDuration(_ text: String) -> Duration? {
    let trimmed = text.trimmingCharacters(in: .whitespaces)
    if let seconds = Double(trimmed) { return seconds >= 0 && seconds.isFinite ? .seconds(seconds) : nil }
    var total: Duration = .zero
    var rest = Substring(trimmed)
    guard !rest.isEmpty else { return nil }
    while !rest.isEmpty {
      let digits = rest.prefix { $0.isNumber || $0 == "." }
      guard let number = Double(digits) else { return nil }
      rest = rest.dropFirst(digits.count)
      let unit = rest.prefix { $0.isLetter }
      rest = rest.dropFirst(unit.count)
      let scale: Double
      switch unit {
      case "ms": scale = 0.001
      case "s": scale = 1
      case "m": scale = 60
      case "h": scale = 3600
      case "d": scale = 86_400
      default: return nil
      }
      total += .seconds(number * scale)
    }
    return total
  }
}
