import ArgumentParser
import Foundation
import NovaApplication
import NovaCore
import NovaPolicy
import NovaQueue
import NovaServer

struct JobsCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "jobs",
    abstract: "Inspect and manage jobs.",
    subcommands: [List.self, Show.self, Logs.self, Cancel.self, Retry.self, Stats.self])

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List jobs, newest first.")

    @OptionGroup var store: StoreOptions
    @OptionGroup var output: OutputOptions

    @Option(help: "Only jobs in this state (scheduled, available, running, succeeded, failed, dead, cancelled).")
    var state: String?

    @Option(help: "Only jobs of this queue.")
    var queue: String?

    @Option(help: "Only jobs of this kind.")
    var kind: String?

    @Option(help: "At most this many jobs (1...1000).")
    var limit: Int = 50

    @Option(help: "Continue after this cursor (printed by the previous page).")
    var cursor: String?

    func run() async throws {
      let filter = JobFilter(
        state: try state.map { try JobState.parse($0) }, queue: queue, kind: kind, limit: limit, cursor: cursor)
      let page = try await store.open().jobs().list(filter, by: .localUser)
      if output.json {
        try printJSON(JobListOutput(jobs: page.jobs.map(JobResource.init), next_cursor: page.nextCursor))
        return
      }
      var rows = [["ID", "QUEUE", "KIND", "STATE", "ATTEMPTS", "CREATED"]]
      for job in page.jobs {
        rows.append([
          job.id.rawValue, job.queue, job.kind, job.state.rawValue, "\(job.attempts)/\(job.maxAttempts)",
          JobResource.timestamp(job.createdAt),
        ])
      }
      print(TextTable.render(rows), terminator: "")
      if let next = page.nextCursor { print("more: --cursor \(next)") }
    }
  }

  struct Show: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show one job as JSON.")

    @OptionGroup var store: StoreOptions

    @Argument(help: "The job id.")
    var id: String

    func run() async throws {
      let jobID = try parseID(id)
      let actions = try await store.open().jobs()
      let job = try await actions.get(jobID, by: .localUser)
      var resource = JobResource(job)
      resource.waiting_for = try await actions.waitingFor(job)
      try printJSON(resource)
    }
  }

  struct Logs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Print what a job's program wrote (stdout and stderr, per attempt, as kept in the store).",
      discussion: """
        Lines come in the order they were written, each stream's own (a line one stream left \
        unfinished is never continued by the other's). Control characters and bytes that are not \
        UTF-8 are shown escaped (ESC as \\x1b), so that output cannot drive the terminal; --raw \
        writes them as they are.
        """)

    @OptionGroup var store: StoreOptions

    @Argument(help: "The job id.")
    var id: String

    @Option(help: "Only this attempt (1, 2, …); by default every attempt, each under a '==> attempt N <==' line.")
    var attempt: Int?

    @Flag(name: [.short, .long], help: "Keep printing while the job runs; stop when it is over.")
    var follow = false

    @Flag(help: "Start each line with 'stdout: ' or 'stderr: '.")
    var prefix = false

    @Flag(help: "Write the output unescaped; without --prefix, the bytes exactly as stored.")
    var raw = false

    func run() async throws {
      let jobID = try parseID(id)
      let feed = try await store.open().jobs().logs(jobID, attempt: attempt, by: .localUser)
      try await feed.render(JobLogRenderer.Options(prefix: prefix, raw: raw), follow: follow) { FileHandle.standardOutput.write($0) }
    }
  }

  struct Cancel: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Cancel a job: a waiting job never runs; a running job's handler is cancelled.")

    @OptionGroup var store: StoreOptions
    @OptionGroup var output: OutputOptions

    @Argument(help: "The job id.")
    var id: String

    func run() async throws {
      let job = try await store.open().jobs().cancel(try parseID(id), by: .localUser)
      if output.json { try printJSON(JobResource(job)) } else { print("cancelled \(job.id)") }
    }
  }

  struct Retry: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Put a dead, cancelled or failed job back to available, with its attempts reset.")

    @OptionGroup var store: StoreOptions
    @OptionGroup var output: OutputOptions

    @Argument(help: "The job id.")
    var id: String

    func run() async throws {
      let job = try await store.open().jobs().retry(try parseID(id), by: .localUser)
      if output.json { try printJSON(JobResource(job)) } else { print("retrying \(job.id) (now \(job.state))") }
    }
  }

  struct Stats: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Count jobs per queue and state.")

    @OptionGroup var store: StoreOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
      let stats = StatsResource(try await store.open().jobs().stats(by: .localUser))
      if output.json {
        try printJSON(stats)
        return
      }
      let states = JobState.allCases.map(\.rawValue)
      var rows = [["QUEUE"] + states.map { $0.uppercased() }]
      for name in stats.queues.keys.sorted() {
        rows.append([name] + states.map { "\(stats.queues[name]?[$0] ?? 0)" })
      }
      rows.append(["(all)"] + states.map { "\(stats.totals[$0] ?? 0)" })
      print(TextTable.render(rows), terminator: "")
      var workers = [["WORKER", "QUEUES", "KINDS", "UNTIL"]]
      for worker in stats.workers {
        workers.append([
          worker.worker, worker.queues.isEmpty ? "*" : worker.queues.joined(separator: ","),
          worker.kinds.isEmpty ? "*" : worker.kinds.joined(separator: ","), worker.expires_at,
        ])
      }
      print(stats.workers.isEmpty ? "\nNo live workers." : "\n" + TextTable.render(workers), terminator: stats.workers.isEmpty ? "\n" : "")
      var waiting = [["QUEUE", "KIND", "AVAILABLE JOBS NO LIVE WORKER TAKES"]]
      for queue in stats.unclaimable.keys.sorted() {
        for (kind, count) in stats.unclaimable[queue, default: [:]].sorted(by: { $0.key < $1.key }) {
          waiting.append([queue, kind, "\(count)"])
        }
      }
      if waiting.count > 1 { print("\n" + TextTable.render(waiting), terminator: "") }
    }
  }
}

struct JobListOutput: Codable {
  var jobs: [JobResource]
  var next_cursor: String?
}

func parseID(_ text: String) throws -> JobID {
  let id = JobID(text)
  guard id.isWellFormed else {
    throw NovaError.invalidInput(field: "id", message: "'\(text)' is not a job id (a UUID)")
  }
  return id
}

/// Left-aligned columns separated by two spaces.
enum TextTable {
  static func render(_ rows: [[String]]) -> String {
    guard let columns = rows.map(\.count).max() else { return "" }
    var widths = [Int](repeating: 0, count: columns)
    for row in rows {
      for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) }
    }
    var out = ""
    for row in rows {
      let cells = row.enumerated().map { index, cell in
        index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
      }
      out += cells.joined(separator: "  ") + "\n"
    }
    return out
  }
}
