import ArgumentParser
import Foundation
import NovaAlerting
import NovaApplication
import NovaCore
import NovaDatabase
import NovaMonitoring
import NovaPolicy
import NovaSecurity
import NovaServer

/// Where the alerting rules come from.
struct ThresholdsOptions: ParsableArguments {
  @Option(
    name: .long,
    help: ArgumentHelp(
      "Alert rules, receivers and SLA (default: thresholds.yaml in --data-dir when it exists, or NOVA_THRESHOLDS).", valueName: "file"))
  var thresholds: String?

  /// The thresholds file in effect, if any.
  func path(dataDir: String) -> String? {
    NovaSettings.thresholdsPath(flag: thresholds, dataDirectory: dataDir)
  }

  /// The configuration, or nil without a file; an invalid file is an error naming its place.
  func load(dataDir: String) throws -> AlertingConfiguration? {
    guard let path = path(dataDir: dataDir) else { return nil }
    do {
      return try AlertingConfiguration.load(path: path)
    } catch {
      throw NovaError.invalidInput(field: "--thresholds", message: error.description)
    }
  }

  func require(dataDir: String) throws -> AlertingConfiguration {
    guard let configuration = try load(dataDir: dataDir) else {
      throw NovaError.invalidInput(field: "--thresholds", message: "no thresholds file: give --thresholds FILE or put thresholds.yaml in \(dataDir)")
    }
    return configuration
  }
}

struct AlertsCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "alerts", abstract: "Validate alert rules, dry-run them, and list, acknowledge or resolve alerts.",
    subcommands: [Validate.self, Evaluate.self, List.self, Ack.self, Resolve.self])

  struct Validate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Check a thresholds file; every error names its file, line and column.")
    @Argument(help: "The thresholds file.") var file: String

    func run() async throws {
      let configuration: AlertingConfiguration
      do {
        configuration = try AlertingConfiguration.load(path: file)
      } catch {
        throw NovaError.invalidInput(field: "FILE", message: error.description)
      }
      print("\(file): \(configuration.rules.count) rules, \(configuration.receivers.count) receivers, \(configuration.routes.count) routes; valid")
    }
  }

  struct Evaluate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Evaluate every rule once against the current KPIs and print each payload that would be sent.",
      discussion: """
        With --dry-run nothing is sent or stored: each body goes to stdout as one JSON line, exactly as it would be \
        sent but with PagerDuty routing keys redacted (webhook signatures are computed when sending), where it would \
        go to stderr, and the whole run into the orchestration journal (alerts.dry_run). Every alert whose condition \
        holds counts as new, its `for:` elapsed.
        """)
    @OptionGroup var store: StoreOptions
    @OptionGroup var thresholds: ThresholdsOptions
    @Flag(help: "Send nothing; print the payloads (required: the server does the real evaluations).") var dryRun = false

    func run() async throws {
      guard dryRun else {
        throw NovaError.invalidInput(field: "--dry-run", message: "only dry runs from the CLI; `nova serve` evaluates and sends")
      }
      let configuration = try thresholds.require(dataDir: store.dataDir)
      let security = try await store.openSecurity()
      try await store.authorize("read", PolicyResource(kind: "alert"))
      let kpis = try KPIStore(database: security.database)
      let engine = AlertEngine(configuration: configuration, store: try AlertStore(database: security.database), kpis: kpis)
      let (alerts, requests) = try await engine.dryRun()
      for request in requests {
        FileHandle.standardError.write(
          Data("→ \(request.receiver) (\(request.kind.rawValue), \(request.action.rawValue)) POST \(Redaction.url(request.url))\n".utf8))
        print(request.body)
      }
      FileHandle.standardError.write(Data("\(alerts.count) alerts would fire; \(requests.count) payloads; nothing sent\n".utf8))
      try await OrchestrationJournal(database: security.database).append(
        kind: "alerts.dry_run", subject: configuration.path,
        payload: .object([
          "rules": .int(Int64(configuration.rules.count)),
          "alerts": .array(
            alerts.map {
              .object([
                "rule": .string($0.rule), "fingerprint": .string($0.fingerprint), "severity": .string($0.severity), "value": .double($0.value),
              ])
            }),
          "payloads": .array(
            requests.map {
              .object([
                "receiver": .string($0.receiver), "type": .string($0.kind.rawValue), "action": .string($0.action.rawValue),
                "url": .string(Redaction.url($0.url)),
                "body": (try? JSONValue.parse(Data($0.body.utf8))) ?? .string($0.body),
              ])
            }),
        ]))
    }
  }

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List alerts, newest first (JSON as GET /v1/alerts shows them).")
    @OptionGroup var store: StoreOptions
    @OptionGroup var output: OutputOptions
    @OptionGroup var thresholds: ThresholdsOptions
    @Option(help: ArgumentHelp("Only these states, comma-separated (pending, firing, resolved).", valueName: "states")) var state: String?
    @Option(help: "At most this many.") var limit: Int = 50

    func run() async throws {
      let states = try AlertState.parseList(state ?? "", field: "--state")
      guard (1...10_000).contains(limit) else { throw NovaError.invalidInput(field: "--limit", message: "must be 1...10000") }
      let security = try await store.openSecurity()
      try await store.authorize("read", PolicyResource(kind: "alert"))
      let alerts = try await AlertStore(database: security.database).list(states: states, limit: limit)
      if output.json {
        let settings = try thresholds.load(dataDir: store.dataDir)?.settings ?? AlertSettings()
        try printJSON(alerts.map { AlertResource($0, settings: settings) })
        return
      }
      for alert in alerts {
        let acknowledged = alert.acknowledgedBy.map { " ack by \($0)" } ?? ""
        print("\(alert.id)\t\(alert.state.rawValue)\t\(alert.severity)\t\(alert.rule)\t\(alert.summary)\(acknowledged)")
      }
    }
  }

  struct Ack: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Acknowledge a firing alert (stops its escalation; PagerDuty receivers get an acknowledge event, sent by nova serve).")
    @OptionGroup var store: StoreOptions
    @OptionGroup var thresholds: ThresholdsOptions
    @Argument(help: "The alert's id.") var id: Int64

    func run() async throws {
      let alert = try await AlertsCommand.engine(store, thresholds, action: "acknowledge", id: id) { engine in
        try await engine.acknowledge(id: id, by: AuditContext.actor)
      }
      print("alert \(alert.id) acknowledged by \(alert.acknowledgedBy ?? "?")")
    }
  }

  struct Resolve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Resolve an alert by hand (its receivers hear it; it does not page again until its condition has cleared).")
    @OptionGroup var store: StoreOptions
    @OptionGroup var thresholds: ThresholdsOptions
    @Argument(help: "The alert's id.") var id: Int64

    func run() async throws {
      let alert = try await AlertsCommand.engine(store, thresholds, action: "resolve", id: id) { engine in
        try await engine.resolve(id: id, by: AuditContext.actor)
      }
      print("alert \(alert.id) resolved by \(alert.resolvedBy ?? "?")")
    }
  }

  static func engine(
    _ store: StoreOptions, _ thresholds: ThresholdsOptions, action: String, id: Int64, _ body: (AlertEngine) async throws -> AlertInstance
  ) async throws -> AlertInstance {
    let security = try await store.openSecurity()
    try await store.authorize(action, PolicyResource(kind: "alert", id: String(id)))
    let configuration = try thresholds.load(dataDir: store.dataDir) ?? AlertingConfiguration()
    let engine = AlertEngine(
      configuration: configuration, store: try AlertStore(database: security.database), kpis: try KPIStore(database: security.database))
    return try await body(engine)
  }
}

struct JournalCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "journal", abstract: "The orchestration journal: dry-runs, alerts, escalations, deployments, baseline breaches.",
    subcommands: [Show.self])

  struct Show: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print journal entries, oldest first.")
    @OptionGroup var store: StoreOptions
    @OptionGroup var output: OutputOptions
    @Option(help: ArgumentHelp("A duration back from now (90s, 30m, 1h, 7d) or an RFC 3339 time.", valueName: "when")) var since: String = "7d"
    @Option(help: ArgumentHelp("Only this kind, or kinds starting with it when it ends in a dot (alert.); repeatable.", valueName: "kind")) var kind:
      [String] = []
    @Option(help: "At most this many (the newest).") var limit: Int = 200

    func run() async throws {
      let from = try KPITime.parse(since, now: Date().millisecondsSince1970, flag: "--since")
      guard (1...100_000).contains(limit) else { throw NovaError.invalidInput(field: "--limit", message: "must be 1...100000") }
      let security = try await store.openSecurity()
      try await store.authorize("read", PolicyResource(kind: "journal"))
      let entries = try await OrchestrationJournal(database: security.database).entries(since: from, kinds: kind, limit: limit)
      if output.json {
        try printJSON(entries)
        return
      }
      for entry in entries {
        let payload = (try? CanonicalJSON.string(entry.payload)) ?? ""
        print("\(AuditTime.string(entry.time))\t\(entry.kind)\t\(entry.subject ?? "-")\t\(entry.actor)\t\(payload)")
      }
    }
  }
}
