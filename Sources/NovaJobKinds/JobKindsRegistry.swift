import Foundation
import NovaCore
import NovaQueue

extension JobKindsFile {
  /// `base` and the kinds of the file at `path` (none when nil): what `nova serve` and `nova
  /// worker` run, at start and on each SIGHUP.
  public static func registry(base: JobRegistry, path: String?) throws(ConfigFileError) -> JobRegistry {
    var registry = base
    guard let path else { return registry }
    try load(path: path, builtins: Set(base.kinds)).register(into: &registry)
    return registry
  }

  /// Registers a handler for each kind of the file, with the kind's timeout.
  public func register(
    into registry: inout JobRegistry, environment: [String: String] = ProcessInfo.processInfo.environment,
    supervision: AttemptSupervision = .detected
  ) {
    for definition in kinds {
      registry.setDefaults(definition.name, resources: definition.resources, constraints: definition.constraints)
      registry.setKeyLimits(definition.name, definition.keyLimits)
      switch definition.action {
      case .command(let command):
        let runner = CommandJobRunner(
          name: definition.name, kind: command, timeout: definition.timeout, environment: environment, supervision: supervision)
        registry.registerRaw(definition.name, timeout: definition.timeout, stopGrace: runner.stopGrace) { payload, context in
          try await runner.handle(payload: payload, context: context)
        }
      case .http(let http):
        let runner = HTTPJobRunner(name: definition.name, kind: http, timeout: definition.timeout, environment: environment)
        // The runner times the call from when it has a max_concurrency slot; the pool's limit
        // covers the wait for one too.
        registry.registerRaw(definition.name, timeout: runner.poolTimeout) { payload, context in
          try await runner.handle(payload: payload, context: context)
        }
      case .external:
        registry.registerExternal(definition.name, timeout: definition.timeout > .zero ? definition.timeout : nil)
      }
    }
  }
}
