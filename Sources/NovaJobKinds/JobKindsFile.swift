import Foundation
import NovaCore
import NovaQueue
import Yams

/// `nova-jobs.yaml`: the job kinds a deployment defines besides the built-in ones, read
/// strictly (unknown keys, wrong types and bad values are errors naming file, line, column and
/// field).
///
/// ```yaml
/// kinds:
///   summarise:
///     type: command
///     command: [python3, -m, agents.summarise]
///     timeout: 5m
///   notify:
///     type: http
///     url: http://127.0.0.1:8080/run
///   train.step:
///     type: external   # run by workers that claim over HTTP (the Python client's Worker)
/// ```
public struct JobKindsFile: Sendable, Equatable {
  /// The kinds, in file order.
  public var kinds: [JobKindDefinition]

  public init(kinds: [JobKindDefinition]) { self.kinds = kinds }

  /// The default name, looked for in the data directory.
  public static let defaultName = "nova-jobs.yaml"

  /// Reads and checks the file at `path`.
  public static func load(path: String, builtins: Set<String> = []) throws(ConfigFileError) -> JobKindsFile {
    try parse(YAMLReader.text(path: path), file: path, builtins: builtins)
  }

  /// Parses and checks `text`; `file` names it in errors. A kind may not take a built-in's name.
  public static func parse(_ text: String, file: String, builtins: Set<String> = []) throws(ConfigFileError) -> JobKindsFile {
    let reader = YAMLReader(file: file)
    guard let root = try reader.compose(text) else { return JobKindsFile(kinds: []) }
    var kinds: [JobKindDefinition] = []
    for entry in try reader.mapping(root, "file", allowed: ["kinds"]) {
      guard case .mapping(let mapping) = entry.value else { throw reader.fail(entry.value, "kinds: expected a mapping of kind names") }
      for (key, value) in mapping {
        guard let name = key.string else { throw reader.fail(key, "kinds: names must be strings") }
        do {
          try JobRequest.validateName(name, field: "kinds.\(name)")
        } catch {
          throw reader.fail(key, error.description)
        }
        if builtins.contains(name) { throw reader.fail(key, "kinds.\(name): is a built-in kind; choose another name") }
        if kinds.contains(where: { $0.name == name }) { throw reader.fail(key, "kinds: '\(name)' appears twice") }
        kinds.append(try kind(name, value, reader))
      }
    }
    return JobKindsFile(kinds: kinds)
  }

  private static let commandKeys: Set<String> = [
    "type", "command", "cwd", "env", "env_pass", "timeout", "max_output_bytes", "retry_exit_codes", "dead_exit_codes", "kill_grace",
    "user", "group", "resources", "constraints", "max_running_per_key", "rate_per_key",
  ]
  private static let httpKeys: Set<String> = [
    "type", "url", "method", "headers", "headers_env", "timeout", "secret_env", "max_concurrency", "resources", "constraints",
    "max_running_per_key", "rate_per_key",
  ]
  /// What `max_concurrency` may be: beyond 1024 calls at once to one kind, a limit no longer limits.
  public static let maxConcurrencyRange = 1...1024
  private static let externalKeys: Set<String> = [
    "type", "description", "timeout", "resources", "constraints", "max_running_per_key", "rate_per_key",
  ]

  private static func kind(_ name: String, _ node: Node, _ reader: YAMLReader) throws(ConfigFileError) -> JobKindDefinition {
    let field = "kinds.\(name)"
    guard case .mapping(let mapping) = node else { throw reader.fail(node, "\(field): expected a mapping") }
    guard let typeNode = mapping["type"] else { throw reader.fail(node, "\(field): 'type' is required (command, http or external)") }
    let type = try reader.string(typeNode, "\(field).type")
    var definition: JobKindDefinition
    switch type {
    case "command": definition = try command(name, node, reader)
    case "http": definition = try http(name, node, reader)
    case "external": definition = try external(name, node, reader)
    default: throw reader.fail(typeNode, "\(field).type: '\(type)' is not command, http or external")
    }
    if let resources = mapping["resources"] {
      definition.resources = try requirement(resources, "\(field).resources", reader) { value throws(NovaError) in
        try JobResources(json: value, field: "\(field).resources")
      }
    }
    if let constraints = mapping["constraints"] {
      definition.constraints = try requirement(constraints, "\(field).constraints", reader) { value throws(NovaError) in
        try JobConstraints(json: value, field: "\(field).constraints")
      }
    }
    var limits = KeyLimits()
    if let node = mapping["max_running_per_key"] {
      let text = try reader.string(node, "\(field).max_running_per_key")
      guard let number = Int(text), (1...1_000_000).contains(number) else {
        throw reader.fail(node, "\(field).max_running_per_key: expected a whole number in 1...1000000")
      }
      limits.maxRunning = number
    }
    if let node = mapping["rate_per_key"] {
      let text = try reader.string(node, "\(field).rate_per_key")
      do {
        limits.ratePerSecond = try QueueControls.parseRate(text, field: "\(field).rate_per_key")
      } catch {
        throw reader.fail(node, "\(error)")
      }
    }
    definition.keyLimits = limits.isEmpty ? nil : limits
    return definition
  }

  /// A kind's `resources` or `constraints`, checked as strictly as a job's own on submit.
  private static func requirement<T>(
    _ node: Node, _ field: String, _ reader: YAMLReader, _ parse: (JSONValue) throws(NovaError) -> T
  ) throws(ConfigFileError) -> T {
    do {
      return try parse(json(node))
    } catch {
      throw reader.fail(node, "\(error)")
    }
  }

  /// A YAML node as JSON: mappings as objects, sequences as arrays, scalars as numbers when
  /// they read as one and strings otherwise.
  private static func json(_ node: Node) -> JSONValue {
    switch node {
    case .mapping(let mapping):
      var object: [String: JSONValue] = [:]
      for (key, value) in mapping { object[key.string ?? ""] = json(value) }
      return .object(object)
    case .sequence(let sequence): return .array(sequence.map(json))
    case .scalar(let scalar):
      if let whole = Int64(scalar.string) { return .int(whole) }
      if let real = Double(scalar.string), real.isFinite { return .double(real) }
      return .string(scalar.string)
    case .alias: return .null
    }
  }

  /// A kind run by workers that claim over HTTP: its name, a description, and optionally a
  /// `timeout`: an attempt still heartbeated past it is failed (and retried while attempts remain).
  private static func external(_ name: String, _ node: Node, _ reader: YAMLReader) throws(ConfigFileError) -> JobKindDefinition {
    var description: String?
    // No timeout (zero): the worker's lease alone bounds an attempt, however long it heartbeats.
    var timeout: Duration = .zero
    for entry in try reader.mapping(node, "kinds.\(name)", allowed: externalKeys) {
      switch entry.key {
      case "description": description = try reader.string(entry.value, "kinds.\(name).description")
      case "timeout": timeout = try reader.duration(entry.value, "kinds.\(name).timeout", range: .seconds(1) ... .seconds(7 * 86_400))
      default: break
      }
    }
    return JobKindDefinition(name: name, timeout: timeout, action: .external(description: description))
  }

  private static func command(_ name: String, _ node: Node, _ reader: YAMLReader) throws(ConfigFileError) -> JobKindDefinition {
    let field = "kinds.\(name)"
    var kind = CommandKind(command: [])
    var timeout: Duration = .seconds(300)
    for entry in try reader.mapping(node, field, allowed: commandKeys) {
      let path = "\(field).\(entry.key)"
      switch entry.key {
      case "command":
        guard case .sequence(let items) = entry.value else {
          throw reader.fail(entry.value, "\(path): expected a list: the program, then its arguments (no shell runs it)")
        }
        var argv: [String] = []
        for (index, item) in items.enumerated() { argv.append(try reader.string(item, "\(path)[\(index)]")) }
        guard let program = argv.first, !program.isEmpty else { throw reader.fail(entry.value, "\(path): the program is missing") }
        kind.command = argv
      case "cwd":
        let cwd = try reader.string(entry.value, path)
        guard cwd.hasPrefix("/") else { throw reader.fail(entry.value, "\(path): '\(cwd)' is not an absolute path") }
        kind.cwd = cwd
      case "env":
        kind.env = try reader.stringMap(entry.value, path)
        for key in kind.env.keys where !isVariableName(key) {
          throw reader.fail(entry.value, "\(path): '\(key)' is not an environment variable name")
        }
      case "env_pass":
        kind.envPass = try reader.strings(entry.value, path)
        for variable in kind.envPass where !isVariableName(variable) {
          throw reader.fail(entry.value, "\(path): '\(variable)' is not an environment variable name")
        }
      case "timeout": timeout = try reader.duration(entry.value, path, range: .seconds(1) ... .seconds(7 * 86_400))
      case "max_output_bytes":
        kind.maxOutputBytes = Int(try reader.number(entry.value, path, range: 1024...Double(64 << 20)))
      case "retry_exit_codes": kind.retryExitCodes = try exitCodes(entry.value, path, reader)
      case "dead_exit_codes": kind.deadExitCodes = try exitCodes(entry.value, path, reader)
      case "kill_grace": kind.killGrace = try reader.duration(entry.value, path, range: .zero ... .seconds(600))
      case "user", "group":
        let account = try reader.string(entry.value, path)
        guard !account.isEmpty, account.utf8.allSatisfy({ $0 > 32 && $0 != 58 && $0 < 127 }) else {
          throw reader.fail(entry.value, "\(path): '\(account)' is not an account name or number")
        }
        if entry.key == "user" { kind.user = account } else { kind.group = account }
      default: break
      }
    }
    if kind.command.isEmpty { throw reader.fail(node, "\(field): 'command' is required for type command") }
    if let both = kind.retryExitCodes.intersection(kind.deadExitCodes).min() {
      throw reader.fail(node, "\(field): exit code \(both) is in both retry_exit_codes and dead_exit_codes")
    }
    return JobKindDefinition(name: name, timeout: timeout, action: .command(kind))
  }

  private static func http(_ name: String, _ node: Node, _ reader: YAMLReader) throws(ConfigFileError) -> JobKindDefinition {
    let field = "kinds.\(name)"
    var kind = HTTPKind(url: "")
    var timeout: Duration = .seconds(30)
    for entry in try reader.mapping(node, field, allowed: httpKeys) {
      let path = "\(field).\(entry.key)"
      switch entry.key {
      case "url":
        let url = try reader.string(entry.value, path)
        guard let parsed = URL(string: url), ["http", "https"].contains(parsed.scheme ?? ""), parsed.host != nil else {
          throw reader.fail(entry.value, "\(path): '\(url)' is not an http:// or https:// URL")
        }
        kind.url = url
      case "method":
        let method = try reader.string(entry.value, path).uppercased()
        guard ["POST", "PUT", "PATCH"].contains(method) else {
          throw reader.fail(entry.value, "\(path): '\(method)' is not POST, PUT or PATCH (the payload is the body)")
        }
        kind.method = method
      case "headers": kind.headers = try reader.stringMap(entry.value, path)
      case "headers_env":
        kind.headersEnv = try reader.stringMap(entry.value, path)
        for variable in kind.headersEnv.values where !isVariableName(variable) {
          throw reader.fail(entry.value, "\(path): '\(variable)' is not an environment variable name")
        }
      case "timeout": timeout = try reader.duration(entry.value, path, range: .milliseconds(100) ... .seconds(86_400))
      case "secret_env":
        let variable = try reader.string(entry.value, path)
        guard isVariableName(variable) else { throw reader.fail(entry.value, "\(path): '\(variable)' is not an environment variable name") }
        kind.secretEnv = variable
      case "max_concurrency":
        let range = maxConcurrencyRange
        guard case .scalar(let scalar) = entry.value, let value = Int(scalar.string), range.contains(value) else {
          throw reader.fail(entry.value, "\(path): expected a whole number from \(range.lowerBound) to \(range.upperBound)")
        }
        kind.maxConcurrency = value
      default: break
      }
    }
    if kind.url.isEmpty { throw reader.fail(node, "\(field): 'url' is required for type http") }
    return JobKindDefinition(name: name, timeout: timeout, action: .http(kind))
  }

  private static func exitCodes(_ node: Node, _ field: String, _ reader: YAMLReader) throws(ConfigFileError) -> Set<Int32> {
    guard case .sequence(let items) = node else { throw reader.fail(node, "\(field): expected a list of exit codes") }
    var codes: Set<Int32> = []
    for (index, item) in items.enumerated() {
      let value = try reader.number(item, "\(field)[\(index)]", range: 1...255)
      guard value == value.rounded() else { throw reader.fail(item, "\(field)[\(index)]: expected a whole number in 1...255") }
      codes.insert(Int32(value))
    }
    return codes
  }

  private static func isVariableName(_ name: String) -> Bool {
    guard let first = name.utf8.first, !(48...57).contains(first) else { return false }
    return name.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) || $0 == 95 }
  }
}
