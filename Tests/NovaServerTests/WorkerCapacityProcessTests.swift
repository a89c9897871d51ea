import Foundation
import NovaTestSupport
import Testing

/// Issue #22 point 2: `nova worker` detects its host's capacity and takes the operator's word
/// over it (`--gpus`, `--cpus`, `--memory`, `--labels`), refusing what the host does not have.
@Suite("Worker capacity", .timeLimit(.minutes(2)))
struct WorkerCapacityProcessTests {
  @Test func theWorkerPrintsTheCapacityItWouldAdvertise() async throws {
    let folder = try TemporaryDirectory.make("nova-capacity")
    let fake = folder.appendingPathComponent("nvidia-smi").path
    try "#!/bin/sh\necho '0, GPU-aaaa, NVIDIA H200, 143771'\necho '1, GPU-bbbb, NVIDIA H200, 143771'\n"
      .write(toFile: fake, atomically: true, encoding: .utf8)
    chmod(fake, 0o755)
    let environment = ["PATH": "\(folder.path):/usr/bin:/bin"]
    let common = ["worker", "--data-dir", folder.appendingPathComponent("data").path, "--print-capacity"]
    let printed = try await run(common + ["--gpus", "1", "--cpus", "1", "--memory", "1G", "--labels", "zone=b"], environment: environment)
    #expect(printed.code == 0, "\(printed.stderr)")
    let capacity = try #require(try JSONSerialization.jsonObject(with: Data(printed.stdout.utf8)) as? [String: Any])
    let gpus = try #require(capacity["gpus"] as? [[String: Any]])
    #expect(gpus.map { $0["uuid"] as? String } == ["GPU-bbbb"] && gpus.first?["index"] as? Int == 1)
    #expect(capacity["cpus"] as? Int == 1 && capacity["memory_mib"] as? Int == 1024)
    #expect(capacity["labels"] as? [String: String] == ["zone": "b"])

    let missing = try await run(common + ["--gpus", "2"], environment: environment)
    #expect(missing.code == 2 && missing.stderr.contains("--gpus: this host has no GPU 2 (it has 0,1)"), "\(missing.stderr)")
    let badSize = try await run(common + ["--memory", "lots"], environment: environment)
    #expect(badSize.code == 2 && badSize.stderr.contains("--memory"), "\(badSize.stderr)")
  }

  func run(_ arguments: [String], environment: [String: String]) async throws -> (code: Int32?, stdout: String, stderr: String) {
    let process = try NovaProcess(arguments, environment: environment)
    let code = await process.waitForExit(timeout: .seconds(60))
    return (code, process.stdout, process.stderr)
  }
}
