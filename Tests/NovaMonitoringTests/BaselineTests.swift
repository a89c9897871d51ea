import Foundation
import NovaCore
import NovaTestSupport
import Testing

@testable import NovaMonitoring

@Suite("Hardware baselines", .timeLimit(.minutes(5)))
struct BaselineTests {
  func directory() throws -> URL {
    let url = try TemporaryDirectory.make("nova-baseline")
    return url
  }

  func run(cpu: Double, spread: Double = 0.02, network: Double = 1000, gpu: Double? = 80) -> BaselineRun {
    BaselineRun(
      host: HostFacts.current(version: "test", revision: "test"), started_at: "2026-11-26T00:00:00Z", runs: 5,
      cpu: CPUProbe.Result(measures: [CPUProbe.Measure(name: "cpu.sha256.single", unit: "MB/s", median: cpu, spread: spread, runs: [cpu])]),
      gpu: gpu.map { GPUProbe.Result(available: true, median_utilization_percent: [$0]) },
      network: NetworkProbe.Result(
        target: "loopback",
        throughput_mbit_s: CPUProbe.Measure(name: "network.throughput", unit: "Mbit/s", median: network, spread: 0.01, runs: [network]),
        rtt_p50_us: 20, rtt_p99_us: 40))
  }

  @Test func comparisonsFlagRealChangesNotNoise() throws {
    let baseline = run(cpu: 1000)
    let unchanged = BaselineComparison.compare(run(cpu: 990, network: 980, gpu: 78), with: baseline, name: "b", thresholds: BaselineThresholds())
    #expect(!unchanged.breached && unchanged.deltas.count == 3)
    let slower = BaselineComparison.compare(run(cpu: 800), with: baseline, name: "b", thresholds: BaselineThresholds())
    #expect(slower.breached && slower.deltas.filter(\.breached).map(\.name) == ["cpu.sha256.single"])
    let samples = slower.kpiSamples(time: 5)
    #expect(samples.filter { $0.name == "baseline.delta" }.count == slower.deltas.count)
    let breach = try #require(samples.first { $0.name == "baseline.breach" })
    #expect(breach.labels == ["baseline": "b", "measure": "cpu.sha256.single"] && breach.value == -20 && breach.time == 5)
    #expect(samples.first { $0.name == "baseline.delta" && $0.labels["measure"] == "cpu.sha256.single" }?.labels["threshold_percent"] == "10")
    #expect(slower.deltas.first { $0.name == "cpu.sha256.single" }?.delta_percent == -20)
    // 20 % slower, but the runs themselves spread by 30 %: noise, not a change.
    let noisy = BaselineComparison.compare(run(cpu: 800, spread: 0.3), with: baseline, name: "b", thresholds: BaselineThresholds())
    #expect(!noisy.breached)
    let network = BaselineComparison.compare(run(cpu: 1000, network: 900), with: baseline, name: "b", thresholds: BaselineThresholds())
    #expect(network.deltas.filter(\.breached).map(\.name) == ["network.throughput"])
    let gpu = BaselineComparison.compare(run(cpu: 1000, gpu: 70), with: baseline, name: "b", thresholds: BaselineThresholds())
    let host = HostFacts.current(version: "test", revision: "test").shortName
    #expect(gpu.deltas.filter(\.breached).map(\.name) == ["gpu.\(host).0.utilization"])
    var loose = BaselineThresholds()
    loose.cpu_percent = 25
    #expect(!BaselineComparison.compare(run(cpu: 800), with: baseline, name: "b", thresholds: loose).breached)
  }

  /// Issue #22 point 7: a GPU measure names its host, so a GPU is compared only with the same
  /// host's, and a baseline saved before (the file format is unchanged) gives the same names.
  @Test func gpuMeasuresArePerHostAndOldBaselinesStillCompare() throws {
    var here = run(cpu: 1000)
    here.host.hostname = "gpu-a.example.com"
    #expect(here.host.shortName == "gpu-a" && here.figures.keys.contains("gpu.gpu-a.0.utilization"))
    var elsewhere = run(cpu: 1000, gpu: 40)
    elsewhere.host.hostname = "gpu-b"
    let across = BaselineComparison.compare(elsewhere, with: here, name: "b", thresholds: BaselineThresholds())
    #expect(across.deltas.map(\.name) == ["cpu.sha256.single", "network.throughput"] && !across.breached)
    var later = run(cpu: 1000, gpu: 70)
    later.host.hostname = "gpu-a"
    let same = BaselineComparison.compare(later, with: here, name: "b", thresholds: BaselineThresholds())
    #expect(same.deltas.filter(\.breached).map(\.name) == ["gpu.gpu-a.0.utilization"])
    #expect(same.kpiSamples(time: 1).contains { $0.name == "baseline.breach" && $0.labels["measure"] == "gpu.gpu-a.0.utilization" })
    // A baseline saved before GPU measures were named by host reads as it did, and compares per host.
    let files = BaselineFiles(dataDirectory: try directory().path)
    let saved = files.directory.appendingPathComponent("baselines")
    try FileManager.default.createDirectory(at: saved, withIntermediateDirectories: true)
    try #"""
    {
      "duration_s": 1.5, "runs": 3, "started_at": "2026-01-05T10:00:00Z",
      "gpu": {
        "available": true, "median_utilization_percent": [80],
        "samples": [[{"memory_total_mib": 143771, "memory_used_mib": 30721, "name": "NVIDIA H200", "power_watts": 412.35,
          "sm_clock_mhz": 1980, "temperature_c": 61, "utilization_percent": 80}]]
      },
      "host": {
        "cpu_count": 64, "cpu_model": "Grace", "hostname": "gpu-a", "kernel": "6.8.0", "memory_bytes": 137438953472,
        "nova_revision": "abc1234", "nova_version": "0.9.0"
      }
    }
    """#.write(to: saved.appendingPathComponent("old.json"), atomically: true, encoding: .utf8)
    let old = try files.load("old")
    #expect(old.gpu?.median_utilization_percent == [80] && old.host.hostname == "gpu-a")
    let compared = BaselineComparison.compare(later, with: old, name: "old", thresholds: BaselineThresholds())
    #expect(compared.deltas.map(\.name) == ["gpu.gpu-a.0.utilization"] && compared.breached)
    #expect(try files.savedMeasures().map(\.name) == ["gpu.gpu-a.0.utilization"])
  }

  @Test func thresholdsComeFromTheBaselineSection() throws {
    let folder = try directory()
    let path = folder.appendingPathComponent("thresholds.yaml").path
    try "alerts: []\nbaseline:\n  cpu_percent: 15\n  network_throughput_percent: 3\n".write(toFile: path, atomically: true, encoding: .utf8)
    let thresholds = try BaselineThresholds.load(path: path)
    #expect(thresholds.cpu_percent == 15 && thresholds.network_throughput_percent == 3 && thresholds.gpu_utilization_percent == 5)
    try "baseline:\n  cpu_percnt: 15\n".write(toFile: path, atomically: true, encoding: .utf8)
    #expect(throws: NovaError.self) { _ = try BaselineThresholds.load(path: path) }
    do { _ = try BaselineThresholds.load(path: path) } catch { #expect("\(error)".contains("thresholds.yaml:2:3: baseline.cpu_percnt")) }
    try "baseline:\n  cpu_percent: lots\n".write(toFile: path, atomically: true, encoding: .utf8)
    #expect(throws: NovaError.self) { _ = try BaselineThresholds.load(path: path) }
    try "baseline: [1]\n".write(toFile: path, atomically: true, encoding: .utf8)
    #expect(throws: NovaError.self) { _ = try BaselineThresholds.load(path: path) }
    try "baseline: {\n".write(toFile: path, atomically: true, encoding: .utf8)
    #expect(throws: NovaError.self) { _ = try BaselineThresholds.load(path: path) }
    try "other: 1\n".write(toFile: path, atomically: true, encoding: .utf8)
    #expect(try BaselineThresholds.load(path: path) == BaselineThresholds())
    #expect(throws: NovaError.self) { _ = try BaselineThresholds.load(path: "/nonexistent") }
  }

  @Test func baselinesAreSavedLoadedAndEveryRunIsAnArtefact() throws {
    let folder = try directory()
    let files = BaselineFiles(dataDirectory: folder.path)
    let artefact = try files.write(run: run(cpu: 1))
    #expect(FileManager.default.fileExists(atPath: artefact) && artefact.contains("/kpi/baseline-"))
    try files.save(run(cpu: 2), as: "staging-a100")
    #expect(try files.load("staging-a100").cpu?.measures.first?.median == 2)
    #expect(throws: NovaError.self) { _ = try files.load("missing") }
    #expect(throws: NovaError.self) { try files.save(run(cpu: 2), as: "../escape") }
  }

  @Test func theGPUProbeReadsNvidiaSmiAndSaysWhenThereIsNone() async throws {
    let folder = try directory()
    // Captured from a DGX-class host: one GPU with power and memory reported, one where they read [N/A].
    let fake = folder.appendingPathComponent("nvidia-smi")
    try writeExecutable(
      fake.path,
      """
      #!/bin/sh
      echo "NVIDIA H200, 87, 30721, 143771, 412.35, 61, 1980"
      echo "NVIDIA GB10, 45, [N/A], [N/A], [N/A], 48, 2418"
      """)
    let result = await GPUProbe.run(samples: 3, interval: .milliseconds(10), load: "true", environment: ["PATH": folder.path])
    #expect(result.available && result.samples.count == 3)
    let gb10 = try #require(result.samples.first?.last)
    #expect(gb10.name == "NVIDIA GB10" && gb10.memory_used_mib == nil && gb10.power_watts == nil && gb10.utilization_percent == 45)
    #expect(result.median_utilization_percent == [87, 45])
    #expect(result.samples.first?.first?.memory_total_mib == 143771 && result.samples.first?.first?.power_watts == 412.35)
    let none = await GPUProbe.run(samples: 1, interval: .milliseconds(1), load: nil, environment: ["PATH": try directory().path])
    #expect(!none.available && none.reason == "no GPU: nvidia-smi is not on PATH" && none.samples.isEmpty)
    try writeExecutable(fake.path, "#!/bin/sh\nexit 9\n")
    let failing = await GPUProbe.run(samples: 1, interval: .milliseconds(1), load: nil, environment: ["PATH": folder.path])
    #expect(!failing.available && failing.reason?.contains("exited with 9") == true)
    // Unified memory: no GPU memory reported, the host's taken instead.
    try writeExecutable(fake.path, "#!/bin/sh\necho \"NVIDIA GB10, 10, [N/A], [N/A], [N/A], 40, 2000\"\n")
    let unified = await GPUProbe.run(samples: 1, interval: .milliseconds(1), load: nil, environment: ["PATH": folder.path])
    #expect(unified.unified_memory_total_mib.map { $0 > 0 } == true)
    #expect(GPUProbe.parse("garbage\n").isEmpty)
    // A hung nvidia-smi is killed and named; a vanished one is reported as missing.
    try writeExecutable(fake.path, "#!/bin/sh\nsleep 30\n")
    guard case .timedOut(let message) = await GPUProbe.capture(fake.path, [], timeout: .milliseconds(200)) else {
      Issue.record("a hung nvidia-smi was not timed out")
      return
    }
    #expect(message.contains("did not answer"))
    guard case .failure(let missing) = await GPUProbe.capture(folder.appendingPathComponent("none").path, []) else {
      Issue.record("a missing nvidia-smi was not reported")
      return
    }
    #expect(missing.contains("does not exist"))
  }

  @Test func probeProgramsRunAndAreStoppedAtTheirTimeout() async throws {
    #expect(await ProbeProgram.run("/bin/sh", ["-c", "echo ok; exit 3"], timeout: .seconds(30)) == .finished(status: 3, output: "ok\n"))
    #expect(await ProbeProgram.run("/bin/sh", ["-c", "kill -9 $$"], timeout: .seconds(30)) == .finished(status: 137, output: ""))
    let clock = ContinuousClock()
    let started = clock.now
    // Killed well before its 30 s: the run returns only once the program is reaped.
    #expect(await ProbeProgram.run("/bin/sh", ["-c", "sleep 30"], timeout: .milliseconds(200)) == .timedOut)
    let load = ProbeProgram.start(shell: "sleep 30")
    try await Task.sleep(for: .milliseconds(200))
    await ProbeProgram.stop(load)
    #expect(clock.now - started < .seconds(10))
    #expect(await ProbeProgram.run("/nonexistent/nvidia-smi", [], timeout: .seconds(30)) == .missing)
    let flood = await ProbeProgram.run("/bin/sh", ["-c", "head -c 5000 /dev/zero"], timeout: .seconds(30), limit: 1000)
    #expect(flood == .failed("more than 1000 bytes of output"))
  }

  @Test func theCPUAndNetworkProbesMeasureForReal() async throws {
    let cpu = await CPUProbe.run(runs: 1, scale: 0.05)
    #expect(cpu.measures.count == 6 && cpu.measures.allSatisfy { $0.median > 0 })
    let server = try NetServer(port: 0)
    defer { server.stop() }
    let network = try NetworkProbe.run(host: "127.0.0.1", port: server.port, runs: 2, megabytes: 4, pings: 100)
    #expect(network.throughput_mbit_s.median > 0 && network.rtt_p50_us > 0 && network.rtt_p50_us <= network.rtt_p99_us)
    #expect(throws: NovaError.self) { _ = try NetworkProbe.run(host: "127.0.0.1", port: 1, runs: 1) }
    #expect(throws: NovaError.self) { _ = try NetServer(port: server.port) }
    let facts = HostFacts.current(version: "v", revision: "r")
    #expect(facts.cpu_count > 0 && facts.memory_bytes > 0 && !facts.kernel.isEmpty)
  }
}
