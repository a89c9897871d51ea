import ArgumentParser
import Foundation
import NovaCore
import NovaDatabase
import NovaMonitoring
import NovaPolicy
import NovaSecurity

struct KPICommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "kpi", abstract: "Record and query KPI samples.", subcommands: [Record.self, Query.self, Deploy.self, Summary.self])

  struct Summary: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Summarise every KPI of a UTC day and write kpi/summary-YYYY-MM-DD.json.")
    @OptionGroup var store: StoreOptions
    @OptionGroup var output: OutputOptions
    @Option(help: ArgumentHelp("The day (default: today, UTC).", valueName: "YYYY-MM-DD")) var day: String?

    func run() async throws {
      let now = Date().millisecondsSince1970
      var start = KPIStore.dayStart(now)
      if let day {
        guard let parsed = AuditTime.parse("\(day)T00:00:00Z") else {
          throw NovaError.invalidInput(field: "--day", message: "'\(day)' is not YYYY-MM-DD")
        }
        start = parsed
      }
      let security = try await store.openSecurity()
      try await store.authorize("read", PolicyResource(kind: "kpi"))
      let kpis = try KPIStore(database: security.database)
      let path = try await kpis.writeDailySummary(day: start, dataDirectory: store.dataDir, generatedAt: now)
      let summaries = try await kpis.dailySummary(day: start)
      if output.json {
        try printJSON(summaries)
      } else {
        for summary in summaries {
          print(
            summary.name.padding(toLength: 28, withPad: " ", startingAt: 0) + "\(summary.count) samples"
              + (summary.mean.map { String(format: ", mean %.4g, p50 %.4g, p95 %.4g, max %.4g", $0, summary.p50!, summary.p95!, summary.max!) } ?? "")
          )
        }
        print("written to \(path)")
      }
    }
  }

  struct Deploy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Mark a deployment's start or finish; the finish records its duration (deploy.duration).")
    @OptionGroup var store: StoreOptions
    @Argument(help: "start or finish.") var phase: String
    @Option(help: "The service deployed.") var service: String
    @Option(help: "The version deployed.") var version: String

    func run() async throws {
      guard phase == "start" || phase == "finish" else {
        throw NovaError.invalidInput(field: "PHASE", message: "'\(phase)' is not start or finish")
      }
      let security = try await store.openSecurity()
      try await store.authorize("kpi.record", PolicyResource(kind: "kpi", id: "deploy"))
      let kpis = try KPIStore(database: security.database)
      let now = Date().millisecondsSince1970
      let journal = try OrchestrationJournal(database: security.database)
      if phase == "start" {
        try await kpis.deploymentStarted(service: service, version: version, at: now, source: AuditContext.actor)
        try await journal.append(kind: "deploy.started", subject: service, payload: .object(["version": .string(version)]))
        print("deployment of \(service) \(version) started")
      } else {
        let seconds = try await kpis.deploymentFinished(service: service, version: version, at: now, source: AuditContext.actor)
        try await journal.append(
          kind: "deploy.finished", subject: service, payload: .object(["version": .string(version), "duration_s": .double(seconds)]))
        print(String(format: "deployment of %@ %@ finished after %.1f s", service, version, seconds))
      }
    }
  }

  struct Record: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Record one sample.")
    @OptionGroup var store: StoreOptions
    @Argument(help: "The KPI's name (letters, digits, _ . :).") var name: String
    @Argument(help: "The value.") var value: String
    @Option(help: ArgumentHelp("A label (repeatable).", valueName: "key=value")) var label: [String] = []
    @Option(help: "The unit (s, ms, percent, bytes, jobs/s …).") var unit: String = ""

    func run() async throws {
      guard let number = Double(value), number.isFinite else {
        throw NovaError.invalidInput(field: "VALUE", message: "'\(value)' is not a number")
      }
      let sample = KPISample(
        name: name, labels: try parseAttributes(label), value: number, unit: unit,
        time: Date().millisecondsSince1970, source: AuditContext.actor)
      try sample.validate()
      let security = try await store.openSecurity()
      try await store.authorize("kpi.record", PolicyResource(kind: "kpi", id: name))
      try await KPIStore(database: security.database).record([sample])
    }
  }

  struct Query: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print samples of one KPI, oldest first, with a summary.")
    @OptionGroup var store: StoreOptions
    @OptionGroup var output: OutputOptions
    @Argument(help: "The KPI's name.") var name: String
    @Option(help: ArgumentHelp("Window start: a duration back from now (90s, 30m, 1h, 7d) or an RFC 3339 time.", valueName: "when")) var since:
      String = "1h"
    @Option(help: ArgumentHelp("Window end, RFC 3339 (default: now).", valueName: "time")) var until: String?
    @Option(help: ArgumentHelp("Only samples with this label (repeatable).", valueName: "key=value")) var label: [String] = []
    @Option(help: "At most this many samples.") var limit: Int = 1000

    func run() async throws {
      let now = Date().millisecondsSince1970
      let from = try KPITime.parse(since, now: now, flag: "--since")
      let to = try until.map { try KPITime.parse($0, now: now, flag: "--until") } ?? now
      guard (1...1_000_000).contains(limit) else { throw NovaError.invalidInput(field: "--limit", message: "must be 1...1000000") }
      let security = try await store.openSecurity()
      try await store.authorize("read", PolicyResource(kind: "kpi", id: name))
      let kpis = try KPIStore(database: security.database)
      let labels = try parseAttributes(label)
      let samples = try await kpis.query(name: name, since: from, until: to, labels: labels, limit: limit)
      let summary = try await kpis.summary(name: name, since: from, until: to, labels: labels)
      if output.json {
        try printJSON(KPIQueryOutput(samples: samples, summary: summary))
        return
      }
      for sample in samples {
        let labels = sample.labels.keys.sorted().map { "\($0)=\(sample.labels[$0]!)" }.joined(separator: ",")
        print("\(AuditTime.string(sample.time))\t\(sample.value)\(sample.unit.isEmpty ? "" : " \(sample.unit)")\t\(labels)\t\(sample.source)")
      }
      print(
        "\(summary.count) samples"
          + (summary.mean.map { String(format: ", mean %.4g, p50 %.4g, p95 %.4g, max %.4g", $0, summary.p50!, summary.p95!, summary.max!) } ?? ""))
    }
  }
}

struct KPIQueryOutput: Encodable {
  var samples: [KPISample]
  var summary: KPISummary
}
