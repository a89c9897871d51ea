import Foundation

/// A real Prometheus Alertmanager (Debian's `prometheus-alertmanager`) on a free loopback port,
/// routing every alert at once (`group_wait: 0s`) to one webhook. Starting fails, with what to
/// install, when the binary is missing: nothing is skipped.
public final class AlertmanagerTestServer: Sendable {
  public let port: Int
  public let directory: URL
  private let child: ChildProcess

  public var url: String { "http://127.0.0.1:\(port)" }

  /// Starts Alertmanager with a route to `webhookURL`, without clustering.
  public init(webhookURL: String) throws {
    guard
      let binary = ["/usr/bin/prometheus-alertmanager", "/usr/local/bin/alertmanager", "/usr/bin/alertmanager"]
        .first(where: { FileManager.default.isExecutableFile(atPath: $0) })
    else {
      throw TestServerError("Alertmanager is not installed (Debian: apt-get install prometheus-alertmanager); scripts/test.sh installs it")
    }
    directory = FileManager.default.temporaryDirectory.appendingPathComponent("nova-alertmanager-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    let config = directory.appendingPathComponent("alertmanager.yml")
    try """
    route:
      receiver: nova-test
      group_by: ['alertname']
      group_wait: 0s
      group_interval: 1s
      repeat_interval: 1h
    receivers:
      - name: nova-test
        webhook_configs:
          - url: \(webhookURL)
            send_resolved: true
    """.write(to: config, atomically: true, encoding: .utf8)
    var attempt = 0
    while true {
      attempt += 1
      let candidate = try FreePort.find()
      let log = directory.appendingPathComponent("alertmanager-\(attempt).log")
      let process = try ChildProcess(
        binary,
        [
          "--config.file=\(config.path)", "--storage.path=\(directory.appendingPathComponent("data").path)",
          "--web.listen-address=127.0.0.1:\(candidate)", "--cluster.listen-address=",
        ], standardOutput: log.path, standardError: log.path)
      let deadline = Date().addingTimeInterval(15)
      var ready = false
      while Date() < deadline, process.exitCode == nil {
        // Its own log names the address it listens on: another listener must not pass for it.
        let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        if text.contains("Listening on") && text.contains("127.0.0.1:\(candidate)") && FreePort.accepts(port: candidate) {
          ready = true
          break
        }
        usleep(20_000)
      }
      if ready {
        port = candidate
        child = process
        return
      }
      process.signal(SIGKILL)
      if attempt >= 5 { throw TestServerError("Alertmanager did not start; see \(log.path)") }
    }
  }

  deinit {
    child.signal(SIGKILL)
    _ = child.waitForExitBlocking(timeout: .seconds(5))
  }
}
