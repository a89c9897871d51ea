import Foundation
import NovaCore

/// A JSON object body whose fields are read with checks naming the field (`jobs[3].lease`).
struct BodyObject {
  let fields: [String: JSONValue]
  /// The path of this object in the body, for messages ("" at the top).
  let path: String

  init(_ data: Data) throws {
    let value: JSONValue
    do {
      value = try JSONValue.parse(data)
    } catch {
      throw NovaError.malformedInput(field: "body", message: "malformed JSON: \(JSONErrorText.describe(error))")
    }
    guard let object = value.objectValue else { throw NovaError.malformedInput(field: "body", message: "expected a JSON object") }
    self.init(fields: object, path: "")
  }

  init(fields: [String: JSONValue], path: String) {
    self.fields = fields
    self.path = path
  }

  private func name(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

  func has(_ key: String) -> Bool { fields[key] != nil }

  /// Refuses fields other than `allowed`.
  func only(_ allowed: Set<String>) throws {
    for key in fields.keys.sorted() where !allowed.contains(key) {
      throw NovaError.malformedInput(field: name(key), message: "unknown field; expected one of \(allowed.sorted().joined(separator: ", "))")
    }
  }

  func string(_ key: String) throws -> String {
    guard let value = fields[key] else { throw NovaError.malformedInput(field: name(key), message: "is required") }
    guard case .string(let text) = value else { throw NovaError.malformedInput(field: name(key), message: "must be a string") }
    return text
  }

  func strings(_ key: String) throws -> [String]? {
    guard let value = fields[key], value != .null else { return nil }
    guard case .array(let items) = value else { throw NovaError.malformedInput(field: name(key), message: "must be a list of strings") }
    return try items.enumerated().map { index, item in
      guard case .string(let text) = item else { throw NovaError.malformedInput(field: "\(name(key))[\(index)]", message: "must be a string") }
      return text
    }
  }

  func integer(_ key: String) throws -> Int? {
    switch fields[key] {
    case nil, .null?: return nil
    case .int(let number)?: return Int(clamping: number)
    case .double(let number)? where number == number.rounded() && abs(number) < 1e15: return Int(number)
    default: throw NovaError.malformedInput(field: name(key), message: "must be an integer")
    }
  }

  func number(_ key: String) throws -> Double? {
    switch fields[key] {
    case nil, .null?: return nil
    case .int(let number)?: return Double(number)
    case .double(let number)?: return number
    default: throw NovaError.malformedInput(field: name(key), message: "must be a number")
    }
  }

  func bool(_ key: String) throws -> Bool? {
    switch fields[key] {
    case nil, .null?: return nil
    case .bool(let flag)?: return flag
    default: throw NovaError.malformedInput(field: name(key), message: "must be true or false")
    }
  }

  /// A lease token as the claim gave it (whether it opens for the job is the actions' business:
  /// a foreign or stale one is a conflict, not bad input).
  func lease(_ key: String) throws -> String {
    switch fields[key] {
    case nil: throw NovaError.malformedInput(field: name(key), message: "is required (the lease token the claim returned)")
    case .string(let text)? where !text.isEmpty && text.utf8.count <= 200: return text
    default: throw NovaError.malformedInput(field: name(key), message: "must be the lease token string the claim returned")
    }
  }

  func jobID(_ key: String) throws -> JobID {
    let id = JobID(try string(key))
    guard id.isWellFormed else { throw NovaError.invalidInput(field: name(key), message: "'\(id)' is not a job id (a UUID)") }
    return id
  }

  /// A list of 1...`max` objects.
  func objects(_ key: String, max: Int) throws -> [BodyObject] {
    guard let value = fields[key] else { throw NovaError.malformedInput(field: name(key), message: "is required") }
    guard case .array(let items) = value else { throw NovaError.malformedInput(field: name(key), message: "must be a list") }
    guard (1...max).contains(items.count) else {
      throw NovaError.invalidInput(field: name(key), message: "holds \(items.count) entries; give 1 to \(max)")
    }
    return try items.enumerated().map { index, item in
      guard let object = item.objectValue else {
        throw NovaError.malformedInput(field: "\(name(key))[\(index)]", message: "must be an object")
      }
      return BodyObject(fields: object, path: "\(name(key))[\(index)]")
    }
  }
}
