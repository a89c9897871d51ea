import Testing
import Foundation
import NovaCore
import NovaQueue

/// A queue backend under test. The conformance suite runs once per entry of `all`.
struct QueueBackend: CustomTestStringConvertible, Sendable {
  let name: String
  let make: @Sendable (_ clock: any WallClock, _ retry: RetryPolicy) throws -> any JobQueue

  var testDescription: String { name }

  static let sqlite = QueueBackend(name: "sqlite") { clock, retry in
    let path = try TemporaryDirectory.make().appendingPathComponent("queue.sqlite").path
    return try SQLiteJobQueue(configuration: .init(path: path, retryPolicy: retry, clock: clock))
  }

  /// Every backend the conformance suite runs against.
  static let all: [QueueBackend] = [.sqlite]
}

enum TemporaryDirectory {
  /// A fresh folder under the system's temporary directory.
  static func make() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("nova-test-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
  }
}

