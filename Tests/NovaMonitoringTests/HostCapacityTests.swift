import Foundation
import NovaCore
import NovaTestSupport
import Testing

@testable import NovaMonitoring

/// Issue #22 point 2: hosts advertise their capacity, detected from `nvidia-smi` (a fake one on
/// PATH here, for a unified-memory host, a 2-GPU and an 8-GPU server) and narrowed by the operator.
@Suite("Host capacity", .timeLimit(.minutes(2)))
struct HostCapacityTests {
  /// A folder whose `nvidia-smi` prints `lines` (and exits with `status`).
  func fakeNvidiaSmi(_ lines: [String], status: Int = 0) throws -> URL {
    let folder = try TemporaryDirectory.make("nova-capacity")
    let path = folder.appendingPathComponent("nvidia-smi").path
    let script = "#!/bin/sh\n" + lines.map { "echo '\($0)'" }.joined(separator: "\n") + "\nexit \(status)\n"
    try writeExecutable(path, script)
    return folder
  }

  static let eight = (0..<8).map { "\($0), GPU-8f2c\($0)a1e-0000-4000-8000-00000000000\($0), NVIDIA H100 80GB HBM3, 81559" }

  @Test func nvidiaSmiIsReadForOneUnifiedTwoAndEightGPUs() async throws {
    let spark = try fakeNvidiaSmi(["0, GPU-5c1d7e9a-1111-4222-8333-944455556666, NVIDIA GB10, [N/A]"])
    let (sparkCapacity, sparkProblem) = await HostCapacity.detect(environment: ["PATH": spark.path])
    #expect(sparkProblem == nil)
    let gb10 = try #require(sparkCapacity.gpus.first)
    #expect(sparkCapacity.gpus.count == 1 && gb10.model == "NVIDIA GB10" && gb10.unified_memory)
    #expect(gb10.memory_mib == HostCapacity.hostMemoryMiB() && gb10.memory_mib > 0, "a unified-memory GPU counts the host's memory")

    let pair = try fakeNvidiaSmi(["0, GPU-aaaa, NVIDIA H200, 143771", "1, GPU-bbbb, NVIDIA H200, 143771"])
    let (pairCapacity, _) = await HostCapacity.detect(environment: ["PATH": pair.path])
    #expect(pairCapacity.gpus.map(\.index) == [0, 1] && pairCapacity.gpus.map(\.uuid) == ["GPU-aaaa", "GPU-bbbb"])
    #expect(pairCapacity.gpus.allSatisfy { $0.memory_mib == 143771 && !$0.unified_memory })

    let server = try fakeNvidiaSmi(Self.eight)
    let (serverCapacity, _) = await HostCapacity.detect(environment: ["PATH": server.path])
    #expect(serverCapacity.gpus.count == 8 && Set(serverCapacity.gpus.map(\.uuid)).count == 8)
    #expect(serverCapacity.cpus == ProcessInfo.processInfo.activeProcessorCount && serverCapacity.memory_mib > 0)
  }

  @Test func aHostWithoutWorkingNvidiaSmiHasNoGPUsAndSaysWhy() async throws {
    let (none, problem) = await HostCapacity.detect(environment: ["PATH": try TemporaryDirectory.make().path])
    #expect(none.gpus.isEmpty && problem == "nvidia-smi is not on PATH")
    let broken = try fakeNvidiaSmi(["NVIDIA-SMI has failed"], status: 9)
    let (failed, why) = await HostCapacity.detect(environment: ["PATH": broken.path])
    #expect(failed.gpus.isEmpty && why == "nvidia-smi exited with 9")
    let garbled = try fakeNvidiaSmi(["0, GPU-aaaa, NVIDIA H200, lots"])
    let (_, garbledWhy) = await HostCapacity.detect(environment: ["PATH": garbled.path])
    #expect(garbledWhy?.contains("nvidia-smi line 1") == true, "\(String(describing: garbledWhy))")
  }

  @Test func overridesAreParsedStrictly() throws {
    let overrides = try HostCapacity.Overrides(gpus: "0, 2", cpus: 4, memory: "16G", labels: ["zone=b", "rack/row=r1-3"])
    #expect(overrides == HostCapacity.Overrides(gpus: [0, 2], cpus: 4, memoryMiB: 16384, labels: ["zone": "b", "rack/row": "r1-3"]))
    #expect(try HostCapacity.Overrides(gpus: "none", cpus: nil, memory: "512M", labels: []).gpus == [])
    #expect(try HostCapacity.mebibytes("1.5GiB", field: "x") == 1536 && HostCapacity.mebibytes("16000", field: "x") == 16000)
    #expect(try HostCapacity.mebibytes("1T", field: "x") == 1_048_576)
    for (gpus, cpus, memory, labels, field) in [
      ("a", nil, nil, [], "--gpus"), ("0,0", nil, nil, [], "--gpus"), ("-1", nil, nil, [], "--gpus"), (nil, 0, nil, [], "--cpus"),
      (nil, nil, "lots", [], "--memory"), (nil, nil, "0G", [], "--memory"), (nil, nil, nil, ["zone"], "--labels"),
      (nil, nil, nil, ["zone=b", "zone=c"], "--labels"), (nil, nil, nil, ["bad key=x"], "--labels"),
    ] as [(String?, Int?, String?, [String], String)] {
      #expect {
        _ = try HostCapacity.Overrides(gpus: gpus, cpus: cpus, memory: memory, labels: labels)
      } throws: { error in
        guard case .invalidInput(let named, _) = error as? NovaError else { return false }
        return named == field
      }
    }
  }

  @Test func overridesNarrowWhatWasDetectedAndNeverWiden() throws {
    let host = HostCapacity(
      host: "gpu-7", gpus: try HostCapacity.parse(Self.eight.joined(separator: "\n"), hostMemoryMiB: 0), cpus: 32, memory_mib: 256_000,
      labels: ["zone": "a"])
    let narrowed = try host.applying(HostCapacity.Overrides(gpus: [6, 7], cpus: 8, memoryMiB: 64_000, labels: ["zone": "b", "tier": "x"]))
    #expect(narrowed.gpus.map(\.index) == [6, 7] && narrowed.cpus == 8 && narrowed.memory_mib == 64_000)
    #expect(narrowed.labels == ["zone": "b", "tier": "x"])
    #expect(try host.applying(HostCapacity.Overrides()) == host)
    #expect(throws: NovaError.invalidInput(field: "--gpus", message: "this host has no GPU 8 (it has 0,1,2,3,4,5,6,7)")) {
      _ = try host.applying(HostCapacity.Overrides(gpus: [8]))
    }
    #expect(throws: NovaError.self) { _ = try host.applying(HostCapacity.Overrides(cpus: 33)) }
    #expect(throws: NovaError.self) { _ = try host.applying(HostCapacity.Overrides(memoryMiB: 300_000)) }
    #expect(throws: NovaError.self) { _ = try HostCapacity.parse("0, GPU-a, H100", hostMemoryMiB: 1) }
  }
}
