import ArgumentParser

/// `nova bench`: each benchmark is a subcommand in a file of its own, printing JSON (`--json`)
/// or a human summary, with medians over several runs.
struct BenchCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "bench", abstract: "Benchmarks that print JSON and a human summary.",
    subcommands: [
      QueueBench.self, PromotionBench.self, AuditBench.self, PolicyBench.self, KPIBench.self, AlertsBench.self, BaselineBench.self, NetServer.self,
      ConsoleBench.self, SQLiteCeilingBench.self, HTTPBench.self,
    ])
}
