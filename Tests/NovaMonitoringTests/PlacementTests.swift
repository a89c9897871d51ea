import Foundation
import NovaCore
import NovaTestSupport
import Testing

@testable import NovaMonitoring

/// Issue #22 points 1 and 4, first step: a job's requests and constraints are read strictly, and a
/// host either holds all of a job (every GPU on it, exclusively chosen) or says what it lacks.
@Suite("Placement", .timeLimit(.minutes(1)))
struct PlacementTests {
  func parse(_ text: String) throws -> JSONValue { try JSONValue.parse(Data(text.utf8)) }

  @Test func requestsAreReadStrictly() throws {
    let resources = try JobResources(json: try parse(#"{"gpus": 2, "gpu_memory_mib": 40000, "cpus": 4, "memory_mib": 16000}"#))
    #expect(resources == JobResources(gpus: 2, gpu_memory_mib: 40000, cpus: 4, memory_mib: 16000))
    #expect(try JobResources(json: try parse("{}")) == JobResources())
    for (text, field) in [
      (#"{"gpu": 1}"#, "resources.gpu"), (#"{"gpus": -1}"#, "resources.gpus"), (#"{"gpus": 1000}"#, "resources.gpus"),
      (#"{"cpus": 1.5}"#, "resources.cpus"), (#"{"memory_mib": "16G"}"#, "resources.memory_mib"),
      (#"{"gpu_memory_mib": 100}"#, "resources.gpu_memory_mib"), ("[1]", "resources"),
    ] {
      #expect {
        _ = try JobResources(json: try parse(text))
      } throws: { error in
        guard case .invalidInput(let named, _) = error as? NovaError else { return false }
        return named == field
      }
    }
    let constraints = try JobConstraints(json: try parse(#"{"gpu_model": "*H100*", "host": "spark-*", "labels": {"zone": "b"}}"#))
    #expect(constraints == JobConstraints(gpu_model: "*H100*", host: "spark-*", labels: ["zone": "b"]))
    for (text, field) in [
      (#"{"model": "x"}"#, "constraints.model"), (#"{"host": ""}"#, "constraints.host"), (#"{"labels": {"zone": 3}}"#, "constraints.labels.zone"),
      (#"{"labels": ["zone"]}"#, "constraints.labels"),
    ] {
      #expect {
        _ = try JobConstraints(json: try parse(text))
      } throws: { error in
        guard case .invalidInput(let named, _) = error as? NovaError else { return false }
        return named == field
      }
    }
  }

  @Test func aHostHoldsAllOfAJobOrSaysWhatItLacks() throws {
    let server = HostCapacity(
      host: "gpu-7",
      gpus: (0..<4).map {
        HostCapacity.GPU(index: $0, uuid: "GPU-\($0)", model: $0 < 2 ? "NVIDIA H100 80GB HBM3" : "NVIDIA A10", memory_mib: $0 < 2 ? 81559 : 23028)
      },
      cpus: 32, memory_mib: 256_000, labels: ["zone": "b"])
    guard case .fits(let two) = server.place(JobResources(gpus: 2, gpu_memory_mib: 40000), JobConstraints(gpu_model: "*H100*")) else {
      throw TestFailure("two H100s did not fit")
    }
    #expect(two.map(\.uuid) == ["GPU-0", "GPU-1"])
    #expect(server.place(JobResources(gpus: 3), JobConstraints(gpu_model: "*H100*")) == .unfit("needs 3 GPU *H100*; 2 free on gpu-7"))
    #expect(server.place(JobResources(gpus: 1, gpu_memory_mib: 40000), JobConstraints()) == .fits(gpus: [server.gpus[0]]))
    #expect(server.place(JobResources(gpus: 1, gpu_memory_mib: 90000), JobConstraints()) == .unfit("needs 1 GPU with 90000 MiB; 0 free on gpu-7"))
    #expect(server.place(JobResources(cpus: 64), JobConstraints()) == .unfit("needs 64 CPUs; 32 free on gpu-7"))
    #expect(server.place(JobResources(memory_mib: 300_000), JobConstraints()) == .unfit("needs 300000 MiB of memory; 256000 free on gpu-7"))
    #expect(server.place(JobResources(), JobConstraints(host: "spark-*")) == .unfit("host gpu-7 does not match host spark-*"))
    #expect(server.place(JobResources(), JobConstraints(labels: ["zone": "a"])) == .unfit("host gpu-7 does not match label zone=a"))
    #expect(server.place(JobResources(), JobConstraints(host: "gpu-?", labels: ["zone": "b"])) == .fits(gpus: []))
    // A unified-memory host (GB10): its one GPU counts the host's memory.
    let spark = HostCapacity(
      host: "spark-1", gpus: [HostCapacity.GPU(index: 0, uuid: "GPU-s", model: "NVIDIA GB10", memory_mib: 119_000, unified_memory: true)],
      cpus: 20, memory_mib: 119_000)
    #expect(spark.place(JobResources(gpus: 1, gpu_memory_mib: 100_000), JobConstraints(host: "spark-*")) == .fits(gpus: spark.gpus))
    #expect(spark.place(JobResources(gpus: 2), JobConstraints()) == .unfit("needs 2 GPU; 1 free on spark-1"))
  }
}
