import ArgumentParser
import Foundation
import NovaApplication
import NovaCore
import NovaQueue
import NovaServer

struct QueuesCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "queues",
    abstract: "Queues and their flow control, for every worker on the store: pause, resume, limits and weights.",
    subcommands: [List.self, Pause.self, Resume.self, Set.self])

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List queues with their controls and jobs by state.")

    @OptionGroup var store: StoreOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
      let queues = try await store.open().jobs().queues(by: .localUser).map(QueueResource.init)
      if output.json {
        try printJSON(QueueListResource(queues: queues))
        return
      }
      var rows = [
        ["QUEUE", "STATE", "RUNNING", "MAX RUNNING", "RATE", "WEIGHT", "PER KEY", "KEY RATE", "AVAILABLE", "SCHEDULED", "DEAD"]
      ]
      for queue in queues {
        rows.append([
          queue.name, queue.paused ? "paused" : "active", "\(queue.jobs["running"] ?? 0)", queue.max_running.map(String.init) ?? "-",
          queue.rate_per_second.map { "\(QueuesCommand.number($0))/s" } ?? "-", "\(queue.weight)",
          queue.max_running_per_key.map(String.init) ?? "-", queue.rate_per_key.map { "\(QueuesCommand.number($0))/s" } ?? "-",
          "\(queue.jobs["available"] ?? 0)", "\(queue.jobs["scheduled"] ?? 0)", "\(queue.jobs["dead"] ?? 0)",
        ])
      }
      print(TextTable.render(rows), terminator: "")
    }
  }

  struct Pause: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Pause a queue: it accepts jobs and hands none out.")

    @OptionGroup var store: StoreOptions
    @Argument(help: "The queue.") var queue: String

    func run() async throws { try await QueuesCommand.setPaused(true, queue: queue, store: store) }
  }

  struct Resume: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Resume a paused queue.")

    @OptionGroup var store: StoreOptions
    @Argument(help: "The queue.") var queue: String

    func run() async throws { try await QueuesCommand.setPaused(false, queue: queue, store: store) }
  }

  struct Set: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Set a queue's limits and weight; settings not given are kept.",
      discussion: "Examples: nova queues set llm --max-running 4 --rate 10/s; nova queues set batch --weight 1 --max-running none")

    @OptionGroup var store: StoreOptions
    @OptionGroup var output: OutputOptions
    @Argument(help: "The queue.") var queue: String

    @Option(name: .long, help: ArgumentHelp("At most this many of its jobs run at once, fleet-wide, or none.", valueName: "n|none"))
    var maxRunning: String?

    @Option(help: ArgumentHelp("At most this many of its jobs start per second (10/s, 600/m, 2/h), or none.", valueName: "n/s|none"))
    var rate: String?

    @Option(help: ArgumentHelp("Its share of workers that take from several busy queues (1...1000).", valueName: "w"))
    var weight: Int?

    @Option(name: .long, help: ArgumentHelp("At most this many of its jobs with one concurrency key run at once, or none.", valueName: "n|none"))
    var maxRunningPerKey: String?

    @Option(
      name: .long, help: ArgumentHelp("At most this many of its jobs with one concurrency key start per second, or none.", valueName: "n/s|none"))
    var ratePerKey: String?

    func run() async throws {
      guard maxRunning != nil || rate != nil || weight != nil || maxRunningPerKey != nil || ratePerKey != nil else {
        throw NovaError.invalidInput(
          field: "nova queues set", message: "give --max-running, --rate, --weight, --max-running-per-key or --rate-per-key")
      }
      let perKey = try maxRunningPerKey.map { text throws(NovaError) in try QueuesCommand.limit(text, flag: "--max-running-per-key") }
      let keyPace: Double?? = try ratePerKey.map { text throws(NovaError) in
        text == "none" ? nil : try QueueControls.parseRate(text, field: "--rate-per-key")
      }
      let limit = try maxRunning.map { text throws(NovaError) in try QueuesCommand.limit(text, flag: "--max-running") }
      let pace: Double?? = try rate.map { text throws(NovaError) in text == "none" ? nil : try QueueControls.parseRate(text) }
      let controls = try await store.open().jobs().changeControls(of: queue, by: .localUser) { controls in
        if let limit { controls.maxRunning = limit }
        if let pace { controls.ratePerSecond = pace }
        if let weight { controls.weight = weight }
        if let perKey { controls.maxRunningPerKey = perKey }
        if let keyPace { controls.ratePerKey = keyPace }
      }
      if output.json {
        try printJSON(QueueResource(QueueSummary(name: queue, controls: controls, counts: [:])))
      } else {
        let rate = controls.ratePerSecond.map { "\(QueuesCommand.number($0))/s" } ?? "none"
        let keyRate = controls.ratePerKey.map { "\(QueuesCommand.number($0))/s" } ?? "none"
        print(
          "\(queue): max running \(controls.maxRunning.map(String.init) ?? "none"), rate \(rate), weight \(controls.weight), "
            + "max running per key \(controls.maxRunningPerKey.map(String.init) ?? "none"), rate per key \(keyRate)"
            + (controls.paused ? ", paused" : ""))
      }
    }
  }

  /// Pauses or resumes `queue` (journaled as any change of its controls) and says so.
  static func setPaused(_ paused: Bool, queue: String, store: StoreOptions) async throws {
    _ = try await store.open().jobs().changeControls(of: queue, by: .localUser) { $0.paused = paused }
    print("\(paused ? "paused" : "resumed") \(queue)")
  }

  /// `N` or `none` (no limit), as `--max-running` and `--max-running-per-key` take it.
  static func limit(_ text: String, flag: String) throws(NovaError) -> Int? {
    if text == "none" { return nil }
    guard let number = Int(text) else { throw .invalidInput(field: flag, message: "'\(text)' is not a number or none") }
    return number
  }

  /// A rate as people read it: `10`, `0.5`, `0.000556`.
  static func number(_ value: Double) -> String {
    value == value.rounded() ? String(Int(value)) : String(format: "%g", value)
  }
}
