import ArgumentParser
import Foundation
import NovaCore
import NovaDashboards

struct DashboardsCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "dashboards", abstract: "Generate the Grafana dashboard and the Prometheus rules from the metrics Nova exports.",
    subcommands: [Grafana.self, PrometheusRulesCommand.self])

  struct SLOOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Availability objective of job attempts, percent.", valueName: "percent")) var slo: Double = 99.9

    func validate() throws {
      guard slo > 50, slo < 100 else { throw ValidationError("--slo must be between 50 and 100 (exclusive), such as 99.9") }
    }
  }

  static func write(_ text: String, to path: String?) throws {
    guard let path else {
      print(text, terminator: "")
      return
    }
    do {
      try text.write(toFile: path, atomically: true, encoding: .utf8)
    } catch {
      throw NovaError.invalidInput(field: "--out", message: "cannot write \(path): \(error.localizedDescription)")
    }
    FileHandle.standardError.write(Data("wrote \(path)\n".utf8))
  }

  struct Grafana: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The migration dashboard as Grafana JSON (stdout, or --out FILE).")
    @OptionGroup var slo: SLOOptions
    @Option(help: ArgumentHelp("File to write.", valueName: "file")) var out: String?
    @Option(help: ArgumentHelp("Where the dashboard links Nova's compliance page.", valueName: "url")) var luxURL = "http://127.0.0.1:8080/lux"

    func run() async throws {
      var dashboard = GrafanaDashboard()
      dashboard.slo = slo.slo
      dashboard.luxURL = luxURL
      try DashboardsCommand.write(dashboard.json(), to: out)
    }
  }

  struct PrometheusRulesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "prometheus-rules", abstract: "Recording rules and multiwindow burn-rate alerts (stdout, or --out FILE).")
    @OptionGroup var slo: SLOOptions
    @Option(help: ArgumentHelp("File to write.", valueName: "file")) var out: String?

    func run() async throws {
      var rules = PrometheusRules()
      rules.slo = slo.slo
      try DashboardsCommand.write(rules.yaml(), to: out)
    }
  }
}
