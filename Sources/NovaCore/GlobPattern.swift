/// A compiled glob: `*` matches any run of characters, `?` one; anything else matches itself.
/// Patterns without wildcards compare as plain strings, `prefix*` by prefix.
public struct GlobPattern: Sendable, Hashable, CustomStringConvertible {
  enum Form: Sendable, Hashable {
    case anything
    case exact(String)
    case prefix(String)
    case general([UInt8])
  }

  let form: Form
  public let description: String

  public init(_ pattern: String) {
    description = pattern
    let wild = pattern.utf8.contains { $0 == UInt8(ascii: "*") || $0 == UInt8(ascii: "?") }
    if pattern == "*" {
      form = .anything
    } else if !wild {
      form = .exact(pattern)
    } else if pattern.hasSuffix("*"), !pattern.dropLast().utf8.contains(where: { $0 == UInt8(ascii: "*") || $0 == UInt8(ascii: "?") }) {
      form = .prefix(String(pattern.dropLast()))
    } else {
      form = .general(Array(pattern.utf8))
    }
  }

  /// The literal value, when the pattern has no wildcard (for indexing).
  package var literal: String? {
    if case .exact(let value) = form { return value }
    return nil
  }

  /// Whether `text` matches.
  public func matches(_ text: String) -> Bool {
    switch form {
    case .anything: return true
    case .exact(let value): return text == value
    case .prefix(let value): return text.hasPrefix(value)
    case .general(let pattern): return Self.match(pattern[...], Array(text.utf8)[...])
    }
  }

  /// Iterative glob matching with one backtrack point (linear for `*` runs).
  private static func match(_ pattern: ArraySlice<UInt8>, _ text: ArraySlice<UInt8>) -> Bool {
    var p = pattern.startIndex
    var t = text.startIndex
    var star: Int?
    var resume = t
    while t < text.endIndex {
      if p < pattern.endIndex, pattern[p] == UInt8(ascii: "?") || pattern[p] == text[t] {
        p += 1
        t += 1
      } else if p < pattern.endIndex, pattern[p] == UInt8(ascii: "*") {
        star = p
        p += 1
        resume = t
      } else if let star {
        p = star + 1
        resume += 1
        t = resume
      } else {
        return false
      }
    }
    while p < pattern.endIndex, pattern[p] == UInt8(ascii: "*") { p += 1 }
    return p == pattern.endIndex
  }
}

/// Any of several patterns; an absent matcher (nil) matches everything.
public struct PatternList: Sendable, Hashable, CustomStringConvertible {
  public let patterns: [GlobPattern]

  public init(_ patterns: [String]) { self.patterns = patterns.map(GlobPattern.init) }

  public func matches(_ text: String) -> Bool { patterns.contains { $0.matches(text) } }

  public var description: String { patterns.map(\.description).joined(separator: ", ") }
}
