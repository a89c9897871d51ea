import Foundation
import NovaTestSupport
import Testing

/// Issue #22 point 8 (first part): the systemd units in deploy/systemd are valid as systemd reads
/// them (`systemd-analyze verify`, with `ExecStart` pointed at the `nova` just built, since
/// /usr/local/bin/nova is not installed here), and the worker's keeps what running jobs needs.
@Suite("Deploy units", .timeLimit(.minutes(2)))
struct DeployUnitsTests {
  static let available = FileManager.default.isExecutableFile(atPath: "/usr/bin/systemd-analyze")

  @Test(.enabled(if: available || ProcessInfo.processInfo.environment["NOVA_REQUIRE_ALL_TESTS"] != nil, "needs systemd-analyze (Debian's systemd)"))
  func theUnitsVerify() async throws {
    let folder = try TemporaryDirectory.make("nova-units")
    for name in ["nova-serve.service", "nova-worker.service"] {
      let text = try String(contentsOf: repositoryRoot.appendingPathComponent("deploy/systemd/\(name)"), encoding: .utf8)
      #expect(text.contains("ExecStart=/usr/local/bin/nova "), "\(name)")
      try text.replacingOccurrences(of: "/usr/local/bin/nova ", with: "\(novaExecutablePath) ")
        .write(to: folder.appendingPathComponent(name), atomically: true, encoding: .utf8)
      let verify = try await shell("systemd-analyze verify '\(folder.appendingPathComponent(name).path)' 2>&1", timeout: .seconds(60))
      #expect(verify.code == 0 && verify.output.isEmpty, "\(name): \(verify.output)")
    }
    let worker = try String(contentsOf: repositoryRoot.appendingPathComponent("deploy/systemd/nova-worker.service"), encoding: .utf8)
    // A cgroup per attempt needs the delegated subtree; GPU programs need the devices.
    for line in ["Delegate=yes", "KillMode=mixed", "Restart=on-failure"] { #expect(worker.contains("\n\(line)\n"), "\(line)") }
    #expect(!worker.contains("PrivateDevices=yes"))
  }
}
