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
    try writeExecutable(fake, "#!/bin/sh\necho '0, GPU-aaaa, NVIDIA H200, 143771'\necho '1, GPU-bbbb, NVIDIA H200, 143771'\n")
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

  /// Issue #22 point 7: a running worker records the health of the GPUs it offers (only those),
  /// labelled by the host name it goes by, every `--gpu-sample-seconds`.
  @Test func theWorkerRecordsTheHealthOfTheGPUsItOffers() async throws {
    let folder = try TemporaryDirectory.make("nova-gpu-health")
    let fake = folder.appendingPathComponent("nvidia-smi").path
    // Capacity and health are different queries; the fake answers each as nvidia-smi would.
    try writeExecutable(
      fake,
      """
      #!/bin/sh
      case "$1" in
      --query-gpu=index,uuid,name,memory.total)
        echo '0, GPU-aaaa, NVIDIA H200, 143771'
        echo '1, GPU-bbbb, NVIDIA H200, 143771' ;;
      --query-gpu=index,uuid,name,utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw)
        echo '0, GPU-aaaa, NVIDIA H200, 87, 30721, 143771, 61, 412.35'
        echo '1, GPU-bbbb, NVIDIA H200, 12, 2048, 143771, 35, [N/A]' ;;
      *)
        exit 3 ;;
      esac

      """)
    let data = folder.appendingPathComponent("data").path
    let worker = try NovaProcess(
      ["worker", "--data-dir", data, "--workers", "1", "--gpus", "1", "--host-name", "gpu-a", "--gpu-sample-seconds", "0.2"],
      environment: ["PATH": "\(folder.path):/usr/bin:/bin"])
    defer { worker.signal(SIGKILL) }
    func samples(_ name: String) async throws -> [[String: Any]] {
      let query = try await NovaProcess.run(["kpi", "query", name, "--json", "--data-dir", data])
      let output = try? JSONSerialization.jsonObject(with: Data(query.stdout.utf8)) as? [String: Any]
      return output?["samples"] as? [[String: Any]] ?? []
    }
    var temperatures: [[String: Any]] = []
    do {
      // Each poll starts a `nova` process: a few a second, not fifty.
      try await eventually("two GPU health passes", timeout: .seconds(60), poll: .milliseconds(200)) {
        temperatures = try await samples("gpu.temperature")
        return temperatures.count >= 2
      }
    } catch {
      // What the worker and the store said, for the report.
      let query = try await NovaProcess.run(["kpi", "query", "gpu.temperature", "--json", "--data-dir", data])
      Issue.record("kpi query (exit \(query.code)): \(query.stdout.prefix(2000)) \(query.stderr.prefix(2000))\nworker: \(worker.stderr.suffix(4000))")
      throw error
    }
    for sample in temperatures {
      #expect(sample["labels"] as? [String: String] == ["host": "gpu-a", "gpu": "1", "uuid": "GPU-bbbb", "model": "NVIDIA H200"])
      #expect((sample["value"] as? NSNumber)?.doubleValue == 35 && sample["unit"] as? String == "celsius")
      #expect(sample["source"] as? String == "nova worker")
    }
    let utilization = try await samples("gpu.utilization")
    #expect(!utilization.isEmpty && utilization.allSatisfy { ($0["labels"] as? [String: String])?["gpu"] == "1" })
    #expect(utilization.allSatisfy { ($0["value"] as? NSNumber)?.doubleValue == 12 })
    // GPU 1 reads [N/A] for power (GPU 0, which does report it, is not this worker's).
    #expect(try await samples("gpu.power").isEmpty)
    worker.signal(SIGTERM)
    #expect(await worker.waitForExit() == 0, "\(worker.stderr)")
    #expect(!worker.stderr.contains("GPU health collection failed"), "\(worker.stderr)")
  }

  func run(_ arguments: [String], environment: [String: String]) async throws -> (code: Int32?, stdout: String, stderr: String) {
    let process = try NovaProcess(arguments, environment: environment)
    let code = await process.waitForExit(timeout: .seconds(60))
    return (code, process.stdout, process.stderr)
  }
}
