import Foundation
import NovaCore
import NovaQueue

extension JobKindsFile {
  /// Registers a handler for each command kind of the file, with the kind's timeout. HTTP kinds
  /// are not run by this build yet and are refused with a clear error.
  public func register(into registry: inout JobRegistry, environment: [String: String] = ProcessInfo.processInfo.environment)
    throws(ConfigFileError)
  {
    for definition in kinds {
      switch definition.action {
      case .command(let command):
        let runner = CommandJobRunner(name: definition.name, kind: command, timeout: definition.timeout, environment: environment)
        registry.registerRaw(definition.name, timeout: definition.timeout) { payload, context in
          try await runner.handle(payload: payload, context: context)
        }
      case .http:
        throw ConfigFileError(
          file: Self.defaultName, line: 0, column: 0, message: "kinds.\(definition.name): type http is not supported by this build yet")
      }
    }
  }
}
