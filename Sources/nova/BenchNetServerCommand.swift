import ArgumentParser
import Foundation
import Logging
import NovaAlerting
import NovaBenchmarks
import NovaCore
import NovaDatabase
import NovaMonitoring
import NovaPolicy
import NovaQueue
import NovaRedisQueue
import NovaSecurity
import NovaServer

extension BenchCommand {
  struct NetServer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "net-server", abstract: "Serve as the peer of nova bench baseline --network --target HOST:PORT.")
    @Option(help: "Port to listen on.") var port: Int
    @Option(help: "Address to listen on.") var host: String = "0.0.0.0"

    func run() async throws {
      let server = try NovaMonitoring.NetServer(host: host, port: port)
      FileHandle.standardError.write(Data("nova net-server listening on \(host):\(server.port)\n".utf8))
      while true { try await Task.sleep(for: .seconds(3600)) }
    }
  }
}
