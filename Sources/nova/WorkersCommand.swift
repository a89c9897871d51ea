import ArgumentParser
import Foundation
import NovaApplication
import NovaCore
import NovaQueue
import NovaServer

struct WorkersCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "workers",
    abstract: "The worker registry: every pool and HTTP worker, its host, capacity and jobs.",
    subcommands: [List.self, Show.self])

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "List workers, live and lapsed (those that stopped announcing themselves in the last hour).")

    @OptionGroup var store: StoreOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
      let now = Date()
      let workers = try await store.open().jobs().workers(by: .localUser).map { WorkerRegistryResource($0, now: now) }
      if output.json {
        try printJSON(WorkerRegistryList(workers: workers))
        return
      }
      var rows = [["ID", "STATE", "HOST", "GPUS", "CPUS", "MEMORY MIB", "RUNNING", "LAST SEEN"]]
      for worker in workers {
        rows.append([
          worker.id, worker.state, worker.host ?? "-", Self.usage(worker.in_use?.gpus.count, worker.capacity?.gpus.count),
          Self.usage(worker.in_use?.cpus, worker.capacity?.cpus), Self.usage(worker.in_use?.memory_mib, worker.capacity?.memory_mib),
          "\(worker.running.count)", worker.last_seen ?? "-",
        ])
      }
      print(TextTable.render(rows), terminator: "")
    }

    /// `used/total`, or `-` when the worker did not say.
    static func usage(_ used: Int?, _ total: Int?) -> String {
      guard let total else { return "-" }
      return "\(used ?? 0)/\(total)"
    }
  }

  struct Show: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show one worker as JSON.")

    @OptionGroup var store: StoreOptions

    @Argument(help: "The worker's id (its name as `nova workers list` shows it).")
    var id: String

    func run() async throws {
      let workers = try await store.open().jobs().workers(by: .localUser)
      guard let worker = workers.first(where: { $0.worker == id }) else {
        throw NovaError.notFound("worker '\(id)' is not in the registry (it never announced itself, or lapsed over an hour ago)")
      }
      try printJSON(WorkerRegistryResource(worker, now: Date()))
    }
  }
}
