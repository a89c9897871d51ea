import Foundation
import Logging
import NovaCore
import NovaQueue
import NovaSecurity
import NovaTestSupport
import Testing

@testable import NovaMonitoring

/// Issue #22 point 7: each worker records its GPUs' utilisation, memory used, temperature and
/// power from `nvidia-smi` (a fake one on PATH here: two H100s, and a GB10 whose memory and power
/// read `[N/A]`) as KPIs labelled by host and GPU.
@Suite("GPU health", .timeLimit(.minutes(2)))
struct GPUHealthTests {
  static let h100s = [
    "0, GPU-8f2c0a1e-0000-4000-8000-000000000000, NVIDIA H100 80GB HBM3, 87, 30721, 81559, 61, 412.35",
    "1, GPU-8f2c1a1e-0000-4000-8000-000000000001, NVIDIA H100 80GB HBM3, 0, 1, 81559, 33, 69.80",
  ]
  static let gb10 = "0, GPU-5c1d7e9a-1111-4222-8333-944455556666, NVIDIA GB10, 45, [N/A], [N/A], 48, [N/A]"

  /// A folder whose `nvidia-smi` prints `lines` and exits with `status` when asked GPUHealth's
  /// query (and fails with 3 when asked anything else).
  func fakeNvidiaSmi(_ lines: [String], status: Int = 0) throws -> URL {
    let folder = try TemporaryDirectory.make("nova-gpu-health")
    try writeExecutable(
      folder.appendingPathComponent("nvidia-smi").path,
      """
      #!/bin/sh
      if [ "$1" != "--query-gpu=\(GPUHealth.query)" ] || [ "$2" != "--format=csv,noheader,nounits" ]; then
        echo "unexpected arguments: $*" >&2
        exit 3
      fi

      """ + lines.map { "echo '\($0)'\n" }.joined() + "exit \(status)\n")
    return folder
  }

  /// The field and message of the error parsing `output` throws; nil when it parses.
  func parseError(_ output: String) -> (field: String, message: String)? {
    do {
      _ = try GPUHealth.parse(output)
      return nil
    } catch {
      guard case .malformedInput(let field, let message) = error else { return ("?", "\(error)") }
      return (field, message)
    }
  }

  @Test func nvidiaSmiLinesOfTwoH100sAndAGB10AreRead() throws {
    let h100s = try GPUHealth.parse(Self.h100s.joined(separator: "\n") + "\n\n")
    #expect(
      h100s == [
        GPUHealth.Reading(
          index: 0, uuid: "GPU-8f2c0a1e-0000-4000-8000-000000000000", model: "NVIDIA H100 80GB HBM3", utilization_percent: 87,
          memory_used_mib: 30721, memory_total_mib: 81559, temperature_c: 61, power_watts: 412.35),
        GPUHealth.Reading(
          index: 1, uuid: "GPU-8f2c1a1e-0000-4000-8000-000000000001", model: "NVIDIA H100 80GB HBM3", utilization_percent: 0,
          memory_used_mib: 1, memory_total_mib: 81559, temperature_c: 33, power_watts: 69.8),
      ])
    // GB10 has unified memory: no memory of its own, and its power may not be reported either.
    let gb10 = try #require(try GPUHealth.parse(Self.gb10).first)
    #expect(
      gb10
        == GPUHealth.Reading(
          index: 0, uuid: "GPU-5c1d7e9a-1111-4222-8333-944455556666", model: "NVIDIA GB10", utilization_percent: 45, temperature_c: 48))
    let unsupported = try #require(try GPUHealth.parse("3, GPU-cccc, Tesla T4, [Not Supported], 10, 15360, 40, 27.5\r\n").first)
    #expect(unsupported.index == 3 && unsupported.utilization_percent == nil && unsupported.power_watts == 27.5)
    #expect(try GPUHealth.parse("").isEmpty)
    #expect(GPUHealth.query == "index,uuid,name,utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw")
  }

  @Test func malformedLinesAreErrorsThatNameTheLine() {
    let short = parseError(Self.h100s[0] + "\n0, GPU-aaaa, NVIDIA H100, 87, 30721, 81559, 61")
    #expect(short?.field == "nvidia-smi line 2" && short?.message.contains("expected 8 fields") == true)
    #expect(short?.message.contains("'0, GPU-aaaa, NVIDIA H100, 87, 30721, 81559, 61'") == true, "\(String(describing: short))")
    let words = parseError("0, GPU-aaaa, NVIDIA H100, lots, 30721, 81559, 61, 400")
    #expect(words?.field == "nvidia-smi line 1" && words?.message.contains("utilization.gpu 'lots' is not a number") == true)
    let negative = parseError("0, GPU-aaaa, NVIDIA H100, 5, 30721, 81559, 61, -4")
    #expect(negative?.field == "nvidia-smi line 1" && negative?.message.contains("power.draw '-4'") == true)
    #expect(parseError("x, GPU-aaaa, NVIDIA H100, 5, 30721, 81559, 61, 4")?.message.contains("GPU index") == true)
    #expect(parseError("0, , NVIDIA H100, 5, 30721, 81559, 61, 4")?.field == "nvidia-smi line 1")
    #expect(parseError("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.")?.field == "nvidia-smi line 1")
    #expect(parseError(Self.h100s.joined(separator: "\n")) == nil)
  }

  @Test func sampleRunsNvidiaSmiFromPATHAndAHostWithoutOneHasNoGPUs() async throws {
    let pair = try fakeNvidiaSmi(Self.h100s)
    let health = try await GPUHealth.sample(host: "gpu-a", environment: ["PATH": pair.path])
    #expect(health.host == "gpu-a" && health.readings.map(\.index) == [0, 1] && health.readings[0].power_watts == 412.35)
    let spark = try await GPUHealth.sample(host: "spark", environment: ["PATH": try fakeNvidiaSmi([Self.gb10]).path])
    #expect(spark.readings.count == 1 && spark.readings[0].memory_used_mib == nil)
    // No nvidia-smi, or a driver that finds no GPU (exit 6): no GPUs, not an error.
    let none = try await GPUHealth.sample(host: "cpu-only", environment: ["PATH": try TemporaryDirectory.make().path])
    #expect(none == GPUHealth(host: "cpu-only", readings: []))
    let noDevices = try await GPUHealth.sample(host: "h", environment: ["PATH": try fakeNvidiaSmi(["No devices were found"], status: 6).path])
    #expect(noDevices.readings.isEmpty)
    // A failing, garbled or hung nvidia-smi is an error that says which.
    let failing = try fakeNvidiaSmi(["NVIDIA-SMI has failed"], status: 9)
    await #expect(throws: NovaError.unavailable("\(failing.path)/nvidia-smi exited with 9")) {
      _ = try await GPUHealth.sample(host: "h", environment: ["PATH": failing.path])
    }
    await #expect(throws: NovaError.self) {
      _ = try await GPUHealth.sample(host: "h", environment: ["PATH": try fakeNvidiaSmi(["0, GPU-aaaa, NVIDIA H100, lots, 1, 2, 3, 4"]).path])
    }
    let hung = try TemporaryDirectory.make("nova-gpu-health")
    try writeExecutable(hung.appendingPathComponent("nvidia-smi").path, "#!/bin/sh\nsleep 30\n")
    let started = ContinuousClock.now
    do {
      _ = try await GPUHealth.sample(host: "h", environment: ["PATH": hung.path], timeout: .milliseconds(200))
      Issue.record("a hung nvidia-smi was not timed out")
    } catch {
      #expect("\(error)".contains("did not answer within"), "\(error)")
    }
    #expect(ContinuousClock.now - started < .seconds(10))
  }

  @Test func readingsBecomeKPIsLabelledByHostAndGPU() throws {
    let gb10AsThird = Self.gb10.replacingOccurrences(of: "0, GPU-5c1d", with: "2, GPU-5c1d")
    let readings = try GPUHealth.parse((Self.h100s + [gb10AsThird]).joined(separator: "\n"))
    let samples = GPUHealth(host: "gpu-a", readings: readings).kpiSamples(time: 1_800_000_000_000)
    // Two figures of the GB10 read [N/A]: they give no sample rather than a zero.
    #expect(samples.count == 4 + 4 + 2)
    for sample in samples { try sample.validate() }
    #expect(samples.allSatisfy { $0.time == 1_800_000_000_000 && $0.source == "nova worker" && $0.labels["host"] == "gpu-a" })
    let first = samples.filter { $0.labels["gpu"] == "0" }
    #expect(first.map(\.name) == ["gpu.utilization", "gpu.memory.used", "gpu.temperature", "gpu.power"])
    #expect(first.map(\.value) == [87, 30721, 61, 412.35] && first.map(\.unit) == ["percent", "MiB", "celsius", "watts"])
    #expect(
      first[0].labels == ["host": "gpu-a", "gpu": "0", "uuid": "GPU-8f2c0a1e-0000-4000-8000-000000000000", "model": "NVIDIA H100 80GB HBM3"])
    let gb10 = samples.filter { $0.labels["gpu"] == "2" }
    #expect(gb10.map(\.name) == ["gpu.utilization", "gpu.temperature"] && gb10.map(\.value) == [45, 48])
    #expect(gb10.first?.labels["model"] == "NVIDIA GB10")
    #expect(GPUHealth.kpiNames == ["gpu.utilization", "gpu.memory.used", "gpu.temperature", "gpu.power"])
    #expect(GPUHealth(host: "h", readings: readings).kpiSamples(time: 5, source: "nova serve").allSatisfy { $0.source == "nova serve" })
  }

  @Test func theCollectorRecordsTheOfferedGPUsIntoTheKPIStore() async throws {
    let directory = try TemporaryDirectory.make("nova-gpu-health")
    let queue = try SQLiteJobQueue(configuration: .init(path: directory.appendingPathComponent("nova.sqlite").path, journal: AuditJournal()))
    let clock = TestClock()
    let store = try KPIStore(database: queue.database, clock: clock)
    let folder = try fakeNvidiaSmi(Self.h100s)
    // This worker offers GPU 1 only: GPU 0 is another worker's to record.
    let collector = GPUHealthCollector(
      host: "gpu-a", kpis: store, interval: .seconds(15), devices: [1], logger: Logger(label: "test"), environment: ["PATH": folder.path],
      clock: clock)
    let recorded = try await collector.collect()
    #expect(recorded.count == 4 && recorded.allSatisfy { $0.labels["gpu"] == "1" })
    let now = clock.now().millisecondsSince1970
    let stored = try await store.query(name: "gpu.power", since: 0, labels: ["host": "gpu-a"])
    #expect(stored.map(\.value) == [69.8] && stored.first?.time == now && stored.first?.unit == "watts")
    #expect(try await store.query(name: "gpu.utilization", since: 0, labels: ["gpu": "0"]).isEmpty)
    // Running, it samples at once and then every interval of its clock.
    let running = Task { try await collector.run() }
    try await eventually("the first pass, then its wait") { clock.sleeperCount == 1 }
    clock.advance(by: .seconds(15))
    try await eventually("a pass after the interval") {
      try await store.query(name: "gpu.temperature", since: 0, labels: ["host": "gpu-a", "gpu": "1"]).count == 3
    }
    running.cancel()
    _ = await running.result
    let latest = try await store.latestSamples(names: Set(GPUHealth.kpiNames), since: 0)
    #expect(latest.samples.count == 4 && latest.samples.allSatisfy { $0.time == now + 15_000 })
    #expect(latest.samples.first { $0.name == "gpu.memory.used" }?.value == 1)
  }
}
