import Foundation
import NovaTestSupport
import Testing

/// The README's module diagram is the package's: every target is in it, and no module depends on
/// one in its own row or a row above.
@Suite("Module graph", .timeLimit(.minutes(5)))
struct ModuleGraphTests {
  /// The rows of the README's diagram, top first.
  static func diagramRows() throws -> [[String]] {
    let readme = try String(contentsOf: repositoryRoot.appendingPathComponent("README.md"), encoding: .utf8)
    guard let section = readme.range(of: "## Architecture"),
      let start = readme.range(of: "```text\n", range: section.upperBound..<readme.endIndex),
      let end = readme.range(of: "```", range: start.upperBound..<readme.endIndex)
    else { throw TestFailure("README has no ```text diagram under ## Architecture") }
    return readme[start.upperBound..<end.lowerBound].split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
  }

  /// Each of the package's own (non-test) targets and the package targets it depends on, from
  /// `swift package dump-package`.
  static func packageTargets() async throws -> [String: [String]] {
    // A scratch path of its own: `swift test` holds the lock on .build while the tests run.
    let dump = try await shell(
      "cd '\(repositoryRoot.path)' && swift package --scratch-path \"\(FileManager.default.temporaryDirectory.path)/nova-dump-package\" dump-package 2>/dev/null",
      timeout: .seconds(120))
    guard dump.code == 0, let start = dump.output.firstIndex(of: "{") else {
      throw TestFailure("swift package dump-package failed: \(dump.output.prefix(500))")
    }
    let json = try #require(try JSONSerialization.jsonObject(with: Data(dump.output[start...].utf8)) as? [String: Any])
    var targets: [String: [String]] = [:]
    for target in json["targets"] as? [[String: Any]] ?? [] {
      guard let name = target["name"] as? String, let type = target["type"] as? String, type == "regular" || type == "executable"
      else { continue }
      let dependencies = (target["dependencies"] as? [[String: Any]] ?? []).compactMap { dependency -> String? in
        if let byName = dependency["byName"] as? [Any] { return byName.first as? String }
        if let target = dependency["target"] as? [Any] { return target.first as? String }
        return nil
      }
      targets[name] = dependencies
    }
    return targets
  }

  @Test func theREADMEDiagramMatchesPackageSwift() async throws {
    let rows = try Self.diagramRows()
    let targets = try await Self.packageTargets().filter { $0.key != "NovaTestSupport" }
    var row: [String: Int] = [:]
    for (index, names) in rows.enumerated() { for name in names { row[name] = index } }
    #expect(Set(row.keys) == Set(targets.keys), "diagram \(row.keys.sorted()) vs package \(targets.keys.sorted())")
    for (name, dependencies) in targets {
      for dependency in dependencies where targets[dependency] != nil {
        guard let own = row[name], let other = row[dependency] else { continue }
        #expect(other > own, "\(name) (row \(own + 1)) depends on \(dependency) (row \(other + 1)), which is not below it")
      }
    }
  }
}

/// The README's "Use Nova from Swift" example is the example target's source, and it runs.
@Suite("README Swift example", .timeLimit(.minutes(5)))
struct SwiftExampleTests {
  @Test func theREADMEExampleIsTheBuiltExampleAndItRuns() async throws {
    let readme = try String(contentsOf: repositoryRoot.appendingPathComponent("README.md"), encoding: .utf8)
    let source = try String(contentsOf: repositoryRoot.appendingPathComponent("Examples/HelloNova/HelloNova.swift"), encoding: .utf8)
    let section = try #require(readme.range(of: "## Use Nova from Swift"))
    let start = try #require(readme.range(of: "```swift\n", range: section.upperBound..<readme.endIndex))
    let end = try #require(readme.range(of: "```\n", range: start.upperBound..<readme.endIndex))
    #expect(String(readme[start.upperBound..<end.lowerBound]) == source)
    let binary = URL(fileURLWithPath: NovaBinary.path).deletingLastPathComponent().appendingPathComponent("HelloNova").path
    #expect(FileManager.default.isExecutableFile(atPath: binary), "build it with swift build")
    let run = try await shell("'\(binary)'", timeout: .seconds(60))
    #expect(run.code == 0 && run.output.contains(#"{"message":"hello, Ada (attempt 1 of 5)"}"#), "\(run.output)")
  }
}
