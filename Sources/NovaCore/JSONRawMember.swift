import Foundation

extension JSONValue {
  /// The exact bytes of member `name` of the top-level object in `data`, which must already be
  /// known to be valid JSON (parse it first); nil when the object has no such member. Keeping the
  /// text, not a re-encoding, is what lets a job's payload reach its handler as it was sent:
  /// integers beyond 2^53 and `1.0` stay as written.
  public static func rawMember(_ name: String, in data: Data) throws(NovaError) -> Data? {
    let bytes = [UInt8](data)
    var index = 0
    func skipSpace() {
      while index < bytes.count, bytes[index] == 0x20 || bytes[index] == 0x09 || bytes[index] == 0x0A || bytes[index] == 0x0D {
        index += 1
      }
    }
    /// Moves past the string starting at `index` (a quote).
    func skipString() {
      index += 1
      while index < bytes.count, bytes[index] != 0x22 {
        index += bytes[index] == 0x5C ? 2 : 1
      }
      index += 1
    }
    /// Moves past the value starting at `index`.
    func skipValue() {
      switch bytes[index] {
      case 0x22: skipString()
      case 0x7B, 0x5B:
        var depth = 0
        repeat {
          switch bytes[index] {
          case 0x22:
            skipString()
            continue
          case 0x7B, 0x5B: depth += 1
          case 0x7D, 0x5D: depth -= 1
          default: break
          }
          index += 1
        } while depth > 0 && index < bytes.count
      default:
        while index < bytes.count, ![0x2C, 0x7D, 0x5D, 0x20, 0x09, 0x0A, 0x0D].contains(bytes[index]) { index += 1 }
      }
    }
    skipSpace()
    guard index < bytes.count, bytes[index] == 0x7B else { return nil }
    index += 1
    var found: Data?
    while true {
      skipSpace()
      guard index < bytes.count, bytes[index] == 0x22 else { return found }
      let keyStart = index
      skipString()
      guard index <= bytes.count, index - keyStart >= 2 else { return found }
      // A key without escapes is its bytes; only one with escapes needs a decoder.
      let text = bytes[(keyStart + 1)..<(index - 1)]
      let key =
        text.contains(0x5C)
        ? try? JSONDecoder().decode(String.self, from: Data(bytes[keyStart..<index])) : String(decoding: text, as: UTF8.self)
      skipSpace()
      index += 1  // the colon
      skipSpace()
      let valueStart = index
      skipValue()
      if key == name {
        guard found == nil else { throw .malformedInput(field: name, message: "appears more than once") }
        found = Data(bytes[valueStart..<index])
      }
      skipSpace()
      guard index < bytes.count, bytes[index] == 0x2C else { return found }
      index += 1
    }
  }
}
