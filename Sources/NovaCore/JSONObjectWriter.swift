/// Writes a JSON object member by member, for answers and audit payloads written on hot paths
/// without building a `JSONValue` first. The caller gives the members in the order they go out
/// (sorted, where the form requires it); strings are escaped as `CanonicalJSON` escapes them.
public struct JSONObjectWriter {
  /// What is written so far; a caller may append a value of its own after `key`.
  public var bytes: [UInt8] = []
  private var first = true

  public init(capacity: Int = 256) {
    bytes.reserveCapacity(capacity)
  }

  /// Starts a member: its key (ASCII that needs no escape) and the colon.
  public mutating func key(_ name: StaticString) {
    bytes.append(first ? UInt8(ascii: "{") : UInt8(ascii: ","))
    first = false
    bytes.append(UInt8(ascii: "\""))
    bytes.append(contentsOf: UnsafeRawBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount))
    bytes.append(UInt8(ascii: "\""))
    bytes.append(UInt8(ascii: ":"))
  }

  /// A string member; none when `value` is nil.
  public mutating func string(_ name: StaticString, _ value: String?) {
    guard let value else { return }
    key(name)
    CanonicalJSON.writeString(value, into: &bytes)
  }

  /// A boolean member; none when `value` is nil.
  public mutating func bool(_ name: StaticString, _ value: Bool?) {
    guard let value else { return }
    key(name)
    bytes.append(contentsOf: (value ? "true" : "false").utf8)
  }

  /// An integer member.
  public mutating func integer(_ name: StaticString, _ value: Int) {
    key(name)
    bytes.append(contentsOf: String(value).utf8)
  }

  /// Closes the object and gives its bytes.
  public mutating func finish() -> [UInt8] {
    if first { bytes.append(UInt8(ascii: "{")) }
    bytes.append(UInt8(ascii: "}"))
    return bytes
  }
}
