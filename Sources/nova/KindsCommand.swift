import ArgumentParser
import Foundation
import NovaApplication
import NovaCore
import NovaJobKinds
import NovaQueue

struct KindsCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "kinds", abstract: "Job kinds: the built-in ones and those of nova-jobs.yaml.", subcommands: [List.self, Validate.self])

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the kinds in force (built-in ones included).")

    @OptionGroup var store: StoreOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
      let settings = try store.settings()
      var kinds = BuiltinJobs.registry.kinds.map { KindListing(name: $0, type: "builtin", timeout_s: nil, run: "in-process", source: "nova") }
      if let path = settings.jobsPath {
        for definition in try KindsCommand.load(path).kinds {
          let run: String
          switch definition.action {
          case .command(let command): run = command.command.joined(separator: " ")
          case .http(let http): run = "\(http.method) \(http.url)"
          case .external(let description): run = "HTTP workers" + (description.map { ": \($0)" } ?? "")
          }
          let timeout = definition.timeout > .zero ? definition.timeout.seconds : nil
          kinds.append(KindListing(name: definition.name, type: definition.type, timeout_s: timeout, run: run, source: path))
        }
      }
      if output.json {
        try printJSON(kinds)
        return
      }
      var rows = [["KIND", "TYPE", "TIMEOUT", "RUNS", "FROM"]]
      for kind in kinds {
        rows.append([kind.name, kind.type, kind.timeout_s.map { YAMLReader.describe(.seconds($0)) } ?? "-", kind.run, kind.source])
      }
      print(TextTable.render(rows), terminator: "")
    }
  }

  struct Validate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Check a job kinds file; exit 2 with file, line and column when it is not usable.")

    @Argument(help: "The file to check.") var file: String

    func run() async throws {
      let kinds = try KindsCommand.load(file).kinds
      print("\(file): \(kinds.count) kind(s)\(kinds.isEmpty ? "" : ": " + kinds.map(\.name).joined(separator: ", "))")
    }
  }

  /// The file read strictly; a problem is bad input (exit 2) naming its position.
  static func load(_ path: String) throws -> JobKindsFile {
    do {
      return try JobKindsFile.load(path: path, builtins: Set(BuiltinJobs.registry.kinds))
    } catch {
      throw NovaError.invalidInput(field: "jobs file", message: error.description)
    }
  }
}

/// A row of `nova kinds list --json`.
struct KindListing: Codable {
  var name: String
  /// builtin, command, http or external.
  var type: String
  var timeout_s: Double?
  /// The program and its arguments, the method and URL, or who runs an external kind.
  var run: String
  /// The file that declares it, or `nova` for built-in kinds.
  var source: String
}
