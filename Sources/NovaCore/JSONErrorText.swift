import Foundation

/// Turns Foundation's JSON errors into one line that names the field or the position.
public enum JSONErrorText {
  /// A short description of a JSON decoding or parsing error.
  public static func describe(_ error: any Error) -> String {
    if let syntax = error as? JSONSyntaxError { return syntax.message }
    if let decoding = error as? DecodingError {
      switch decoding {
      case .typeMismatch(let type, let context):
        return "field '\(path(context.codingPath))': expected \(typeName(type)); \(context.debugDescription)"
      case .valueNotFound(let type, let context):
        return "field '\(path(context.codingPath))': expected \(typeName(type)), found null"
      case .keyNotFound(let key, let context):
        let parent = context.codingPath.isEmpty ? "" : " in '\(path(context.codingPath))'"
        return "missing required field '\(key.stringValue)'\(parent)"
      case .dataCorrupted(let context):
        let underlying = (context.underlyingError as NSError?)?.userInfo[NSDebugDescriptionErrorKey] as? String
        let location = context.codingPath.isEmpty ? "" : "field '\(path(context.codingPath))': "
        return location + (underlying ?? context.debugDescription)
      @unknown default:
        return String(describing: decoding)
      }
    }
    let ns = error as NSError
    if let text = ns.userInfo[NSDebugDescriptionErrorKey] as? String { return text }
    return ns.localizedDescription
  }

  /// Describes a JSON syntax error in `data` with its byte offset, line and column
  /// (Foundation's decoder on Linux reports none of them).
  public static func syntaxError(in data: Data) -> String? {
    do {
      _ = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
      return nil
    } catch {
      let text = ((error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String) ?? "malformed JSON"
      guard let range = text.range(of: "character "),
        let offset = Int(text[range.upperBound...].prefix { $0.isNumber })
      else {
        if text.lowercased().contains("end of file") {
          return "unexpected end of input at byte offset \(data.count)"
        }
        return text
      }
      var line = 1
      var column = 1
      for byte in data.prefix(offset) {
        if byte == UInt8(ascii: "\n") {
          line += 1
          column = 1
        } else {
          column += 1
        }
      }
      let reason = text.replacingOccurrences(of: " around character \(offset)", with: "")
        .trimmingCharacters(in: CharacterSet(charactersIn: "."))
      return "\(reason) at byte offset \(offset) (line \(line), column \(column))"
    }
  }

  private static func path(_ codingPath: [any CodingKey]) -> String {
    codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
  }

  private static func typeName(_ type: Any.Type) -> String {
    switch type {
    case is String.Type: return "a string"
    case is Int.Type, is Int64.Type: return "an integer"
    case is Double.Type: return "a number"
    case is Bool.Type: return "a boolean"
    default: return String(describing: type)
    }
  }
}
