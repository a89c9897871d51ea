import Foundation
import NovaCore
import Testing

/// Issue #22 points 1 and 4: what a job asks of its host (its stored form, its kind's defaults,
/// the command-line flags), where it is placed on a host's free capacity, and the capacity a
/// worker sends with its claim, read strictly.
@Suite("Job requirements", .timeLimit(.minutes(1)))
struct JobRequirementsTests {
  func parse(_ text: String) throws -> JSONValue { try JSONValue.parse(Data(text.utf8)) }

  static let kindResources = JobResources(gpus: 1, memory_mib: 2048)
  static let kindConstraints = JobConstraints(gpu_model: "*H100*", labels: ["zone": "b"])

  /// Four GPUs, listed out of index order: 0 an A10, 1 and 3 80 GB H100s, 2 a 40 GB H100.
  static let server = HostCapacity(
    host: "gpu-a",
    gpus: [
      HostCapacity.GPU(index: 3, uuid: "GPU-3", model: "NVIDIA H100 80GB HBM3", memory_mib: 81_559),
      HostCapacity.GPU(index: 1, uuid: "GPU-1", model: "NVIDIA H100 80GB HBM3", memory_mib: 81_559),
      HostCapacity.GPU(index: 0, uuid: "GPU-0", model: "NVIDIA A10", memory_mib: 23_028),
      HostCapacity.GPU(index: 2, uuid: "GPU-2", model: "NVIDIA H100 PCIe", memory_mib: 40_960),
    ],
    cpus: 16, memory_mib: 64_000, labels: ["zone": "b"])

  @Test func askingForNothingIsNoRequirements() throws {
    #expect(JobRequirements.make(resources: nil, constraints: nil) == nil)
    #expect(JobRequirements.make(resources: JobResources(), constraints: JobConstraints()) == nil)
    #expect(JobRequirements.make(resources: JobResources(), constraints: nil) == nil)
    let gpus = try #require(JobRequirements.make(resources: JobResources(gpus: 1), constraints: nil))
    #expect(gpus == JobRequirements(resources: JobResources(gpus: 1), constraints: JobConstraints()))
    let labelled = try #require(JobRequirements.make(resources: nil, constraints: JobConstraints(labels: ["zone": "b"])))
    #expect(labelled.resources == JobResources() && labelled.constraints.labels == ["zone": "b"])
    #expect(JobResources().isZero && !JobResources(memory_mib: 1).isZero)
    #expect(JobConstraints().isEmpty && !JobConstraints(host: "spark-*").isEmpty)
  }

  @Test func theStoredFormRoundTrips() throws {
    let requirements = JobRequirements(
      resources: JobResources(gpus: 2, gpu_memory_mib: 40_960, cpus: 4, memory_mib: 16_384),
      constraints: JobConstraints(gpu_model: "*H100*", labels: ["zone": "b"]))
    let text = requirements.encoded()
    #expect(!text.contains(" ") && !text.contains("\n") && text.hasPrefix(#"{"constraints":{"gpu_model":"*H100*","labels":{"zone":"b"}},"#))
    let expected = #"""
      {"resources": {"gpus": 2, "gpu_memory_mib": 40960, "cpus": 4, "memory_mib": 16384},
       "constraints": {"gpu_model": "*H100*", "labels": {"zone": "b"}}}
      """#
    #expect(try parse(text) == parse(expected), "every field, and no host constraint")
    #expect(try JobRequirements.decoded(text) == requirements)
    let everything = JobRequirements(
      resources: JobResources(cpus: 1), constraints: JobConstraints(gpu_model: "NVIDIA GB10", host: "spark-*", labels: ["a": "1", "b/c": "2"]))
    #expect(try JobRequirements.decoded(everything.encoded()) == everything)
    #expect(try JobRequirements.decoded("{}") == JobRequirements())
  }

  @Test func aStoredFormThatIsNotOneIsAStorageError() throws {
    for text in ["not json", "[1]", "\"text\"", ""] {
      #expect {
        _ = try JobRequirements.decoded(text)
      } throws: { error in
        guard case .storage(let message) = error as? NovaError else { return false }
        return message.contains("stored requirements")
      }
    }
    // What is stored is read as strictly as a submission.
    #expect(throws: NovaError.invalidInput(field: "resources.gpus", message: "-1 is out of range 0...64")) {
      _ = try JobRequirements.decoded(#"{"resources":{"gpus":-1}}"#)
    }
    #expect(throws: NovaError.self) { _ = try JobPlacement.decoded("{\"host\":1}") }
  }

  @Test func aJobsOwnResourcesAndConstraintsReplaceItsKinds() {
    let defaults = JobRequest(kind: "train").withDefaults(resources: Self.kindResources, constraints: Self.kindConstraints)
    #expect(defaults.resources == Self.kindResources && defaults.constraints == Self.kindConstraints)
    #expect(defaults.requirements == JobRequirements(resources: Self.kindResources, constraints: Self.kindConstraints))

    var ownResources = JobRequest(kind: "train")
    ownResources.resources = JobResources(cpus: 8)
    let replaced = ownResources.withDefaults(resources: Self.kindResources, constraints: Self.kindConstraints)
    #expect(replaced.resources == JobResources(cpus: 8), "the kind's resources are replaced whole, not field by field")
    #expect(replaced.constraints == Self.kindConstraints)

    var ownConstraints = JobRequest(kind: "train")
    ownConstraints.constraints = JobConstraints(host: "spark-*")
    let constrained = ownConstraints.withDefaults(resources: Self.kindResources, constraints: Self.kindConstraints)
    #expect(constrained.resources == Self.kindResources)
    #expect(constrained.constraints == JobConstraints(host: "spark-*"), "the kind's labels and model are not merged in")

    // A job that says it asks for nothing keeps saying so.
    var nothing = JobRequest(kind: "train")
    nothing.resources = JobResources()
    let kept = nothing.withDefaults(resources: Self.kindResources, constraints: nil)
    #expect(kept.resources == JobResources() && kept.requirements == nil)

    #expect(JobRequest(kind: "train").withDefaults(resources: nil, constraints: nil).requirements == nil)
    let given = JobRequirements(resources: JobResources(gpus: 4), constraints: JobConstraints(labels: ["zone": "a"]))
    let request = JobRequest(kind: "train", requirements: given)
    #expect(request.withDefaults(resources: Self.kindResources, constraints: Self.kindConstraints) == request)
  }

  @Test func aPlacementNamesItsDevicesForCUDAAndTheContainerRuntime() throws {
    let placement = JobPlacement(host: "gpu-a", gpus: [.init(index: 1, uuid: "GPU-1"), .init(index: 3, uuid: "GPU-3")], cpus: 2, memory_mib: 1024)
    #expect(placement.visibleDevices == "1,3")
    #expect(placement.visibleUUIDs == "GPU-1,GPU-3")
    let none = JobPlacement(host: "gpu-a", gpus: [], cpus: 0, memory_mib: 0)
    #expect(none.visibleDevices == "" && none.visibleUUIDs == "")
    #expect(placement.encoded() == #"{"cpus":2,"gpus":[{"index":1,"uuid":"GPU-1"},{"index":3,"uuid":"GPU-3"}],"host":"gpu-a","memory_mib":1024}"#)
    #expect(try JobPlacement.decoded(placement.encoded()) == placement)
    #expect(try JobPlacement.decoded(none.encoded()) == none)
    #expect {
      _ = try JobPlacement.decoded("garbage")
    } throws: { error in
      guard case .storage(let message) = error as? NovaError else { return false }
      return message.contains("garbage")
    }
  }

  @Test func aJobIsPlacedOnTheLowestQualifyingGPUs() throws {
    let host = Self.server
    let one = try #require(host.placement(for: JobRequirements(resources: JobResources(gpus: 1))))
    #expect(one == JobPlacement(host: "gpu-a", gpus: [.init(index: 0, uuid: "GPU-0")], cpus: 0, memory_mib: 0))
    let twoH100s = JobRequirements(resources: JobResources(gpus: 2, cpus: 4, memory_mib: 8192), constraints: JobConstraints(gpu_model: "*H100*"))
    let h100s = try #require(host.placement(for: twoH100s))
    #expect(h100s == JobPlacement(host: "gpu-a", gpus: [.init(index: 1, uuid: "GPU-1"), .init(index: 2, uuid: "GPU-2")], cpus: 4, memory_mib: 8192))
    let big = try #require(host.placement(for: JobRequirements(resources: JobResources(gpus: 2, gpu_memory_mib: 80_000))))
    #expect(big.gpus.map(\.index) == [1, 3], "the A10 and the 40 GB H100 are too small")
    let a10 = try #require(host.placement(for: JobRequirements(resources: JobResources(gpus: 1), constraints: JobConstraints(gpu_model: "*A10"))))
    #expect(a10.gpus == [.init(index: 0, uuid: "GPU-0")])
    let cpuOnly = try #require(host.placement(for: JobRequirements(resources: JobResources(cpus: 16, memory_mib: 64_000))))
    #expect(cpuOnly.gpus.isEmpty && cpuOnly.cpus == 16 && cpuOnly.memory_mib == 64_000)
    let zoned = try #require(host.placement(for: JobRequirements(constraints: JobConstraints(host: "gpu-*", labels: ["zone": "b"]))))
    #expect(zoned == JobPlacement(host: "gpu-a", gpus: [], cpus: 0, memory_mib: 0))
  }

  @Test func aJobThatDoesNotFitIsNotPlaced() {
    let host = Self.server
    for requirements in [
      JobRequirements(resources: JobResources(gpus: 5)),
      JobRequirements(resources: JobResources(gpus: 3, gpu_memory_mib: 80_000)),
      JobRequirements(resources: JobResources(gpus: 4), constraints: JobConstraints(gpu_model: "*H100*")),
      JobRequirements(resources: JobResources(gpus: 1), constraints: JobConstraints(gpu_model: "*A100*")),
      JobRequirements(resources: JobResources(gpus: 1, gpu_memory_mib: 100_000)),
      JobRequirements(resources: JobResources(cpus: 17)),
      JobRequirements(resources: JobResources(memory_mib: 64_001)),
      JobRequirements(constraints: JobConstraints(host: "spark-*")),
      JobRequirements(constraints: JobConstraints(labels: ["zone": "a"])),
      JobRequirements(constraints: JobConstraints(labels: ["rack": "r1"])),
    ] {
      #expect(host.placement(for: requirements) == nil, "\(requirements)")
    }
  }

  @Test func whatAPlacementHoldsIsNoLongerFree() throws {
    let host = Self.server
    let placed = try #require(
      host.placement(for: JobRequirements(resources: JobResources(gpus: 2, gpu_memory_mib: 80_000, cpus: 10, memory_mib: 60_000))))
    let left = host.subtracting(placed)
    #expect(left.gpus.map(\.index) == [0, 2], "the other GPUs, in the order the host lists them")
    #expect(left.cpus == 6 && left.memory_mib == 4_000)
    #expect(left.host == host.host && left.labels == host.labels)
    #expect(left.placement(for: JobRequirements(resources: JobResources(gpus: 1, gpu_memory_mib: 80_000))) == nil)
    let oneH100 = JobRequirements(resources: JobResources(gpus: 1), constraints: JobConstraints(gpu_model: "*H100*"))
    #expect(left.placement(for: oneH100)?.gpus.map(\.index) == [2])
    #expect(left.placement(for: JobRequirements(resources: JobResources(cpus: 7))) == nil)
    // Holding more than is left leaves none, never less than none.
    let greedy = JobPlacement(host: "gpu-a", gpus: [.init(index: 7, uuid: "GPU-7")], cpus: 100, memory_mib: 100_000)
    let drained = left.subtracting(greedy)
    #expect(drained.cpus == 0 && drained.memory_mib == 0 && drained.gpus.map(\.index) == [0, 2])
    #expect(host.subtracting(JobPlacement(host: "gpu-a", gpus: [], cpus: 0, memory_mib: 0)) == host)
  }

  @Test func aCapacityIsReadFully() throws {
    let text = #"""
      {"host": "gpu-a", "cpus": 16, "memory_mib": 64000, "labels": {"zone": "b", "rack/row": "r1-3"},
       "gpus": [{"index": 1, "uuid": "GPU-b", "model": "NVIDIA GB10", "memory_mib": 128000, "unified_memory": true},
                {"index": 0, "uuid": "GPU-a", "model": "NVIDIA H100", "memory_mib": 81559}]}
      """#
    let capacity = try HostCapacity(json: try parse(text))
    #expect(
      capacity
        == HostCapacity(
          host: "gpu-a",
          gpus: [
            HostCapacity.GPU(index: 1, uuid: "GPU-b", model: "NVIDIA GB10", memory_mib: 128_000, unified_memory: true),
            HostCapacity.GPU(index: 0, uuid: "GPU-a", model: "NVIDIA H100", memory_mib: 81_559),
          ],
          cpus: 16, memory_mib: 64_000, labels: ["zone": "b", "rack/row": "r1-3"]))
    #expect(try HostCapacity(json: try parse(#"{"host": "cpu-1"}"#)) == HostCapacity(host: "cpu-1", gpus: [], cpus: 0, memory_mib: 0))
    // What a worker encodes is what the server reads.
    let encoded = try JSONEncoder().encode(Self.server)
    #expect(try HostCapacity(json: try JSONValue.parse(encoded)) == Self.server)
  }

  @Test func aCapacityIsReadStrictlyAndItsErrorsNameTheField() throws {
    let gpu = #"{"index": 0, "uuid": "GPU-a", "model": "NVIDIA H100", "memory_mib": 81559}"#
    let cases: [(String, NovaError)] = [
      (#"{"host": "a", "foo": 1}"#, .invalidInput(field: "capacity.foo", message: "unknown; expected one of cpus, gpus, host, labels, memory_mib")),
      (#"{"cpus": 4}"#, .invalidInput(field: "capacity.host", message: "is required")),
      ("{}", .invalidInput(field: "capacity.host", message: "is required")),
      (#"{"host": "a", "gpus": [\#(gpu), \#(gpu)]}"#, .invalidInput(field: "capacity.gpus[1].index", message: "GPU 0 is listed twice")),
      (#"{"host": "a", "cpus": -1}"#, .invalidInput(field: "capacity.cpus", message: "-1 is out of range 0...4096")),
      (
        #"{"host": "a", "gpus": [{"index": 0, "uuid": "u", "model": "m", "unified_memory": "yes"}]}"#,
        .invalidInput(field: "capacity.gpus[0].unified_memory", message: "must be true or false")
      ),
      (#"{"host": "a", "gpus": [{"index": "zero"}]}"#, .invalidInput(field: "capacity.gpus[0].index", message: "must be a whole number")),
      (#"{"host": "a", "gpus": [{"uuid": "u"}]}"#, .invalidInput(field: "capacity.gpus[0].index", message: "is required")),
      ("[1]", .invalidInput(field: "capacity", message: "must be an object")),
    ]
    for (text, expected) in cases {
      #expect(throws: expected, "\(text)") { _ = try HostCapacity(json: try parse(text)) }
    }
    for (text, field) in [
      (#"{"host": ""}"#, "capacity.host"), (#"{"host": 7}"#, "capacity.host"), (#"{"host": "a", "memory_mib": 1.5}"#, "capacity.memory_mib"),
      (#"{"host": "a", "gpus": {"index": 0}}"#, "capacity.gpus"), (#"{"host": "a", "gpus": [{"index": 0, "model": "m"}]}"#, "capacity.gpus[0].uuid"),
      (#"{"host": "a", "gpus": [{"index": 0, "uuid": "u", "model": "m", "vendor": "x"}]}"#, "capacity.gpus[0].vendor"),
      (#"{"host": "a", "gpus": [{"index": 1024, "uuid": "u", "model": "m"}]}"#, "capacity.gpus[0].index"),
      (#"{"host": "a", "labels": {"zone": 3}}"#, "capacity.labels.zone"), (#"{"host": "a", "labels": {"bad key": "x"}}"#, "capacity.labels"),
    ] {
      #expect {
        _ = try HostCapacity(json: try parse(text))
      } throws: { error in
        guard case .invalidInput(let named, _) = error as? NovaError else { return false }
        return named == field
      }
    }
  }

  @Test func commandLineFlagsAreReadAsStrictlyAsASubmission() throws {
    let flags = try JobRequirementFlags(
      gpus: 2, gpuMemory: "40G", cpus: 4, memory: "16G", constraints: ["gpu_model=*H100*", "host=spark-*", "label.zone=b"])
    #expect(flags.resources == JobResources(gpus: 2, gpu_memory_mib: 40_960, cpus: 4, memory_mib: 16_384))
    #expect(flags.constraints == JobConstraints(gpu_model: "*H100*", host: "spark-*", labels: ["zone": "b"]))

    let none = try JobRequirementFlags(gpus: nil, gpuMemory: nil, cpus: nil, memory: nil, constraints: [])
    #expect(none.resources == nil && none.constraints == nil, "no flags: the kind's defaults apply")
    let cpus = try JobRequirementFlags(gpus: nil, gpuMemory: nil, cpus: 4, memory: nil, constraints: [])
    #expect(cpus.resources == JobResources(cpus: 4) && cpus.constraints == nil)
    let zeroGPUs = try JobRequirementFlags(gpus: 0, gpuMemory: nil, cpus: nil, memory: nil, constraints: ["label.zone=b", "label.rack=r1"])
    #expect(zeroGPUs.resources == JobResources(), "--gpus 0 says the job asks for nothing, over its kind's default")
    #expect(zeroGPUs.constraints == JobConstraints(labels: ["zone": "b", "rack": "r1"]))
  }

  @Test func badCommandLineFlagsAreErrorsNamingTheFlag() {
    let cases: [(gpus: Int?, gpuMemory: String?, cpus: Int?, memory: String?, constraints: [String], error: NovaError)] = [
      (-1, nil, nil, nil, [], .invalidInput(field: "--gpus", message: "-1 is out of range 0...64")),
      (65, nil, nil, nil, [], .invalidInput(field: "--gpus", message: "65 is out of range 0...64")),
      (nil, nil, 5000, nil, [], .invalidInput(field: "--cpus", message: "5000 is out of range 0...4096")),
      (nil, "10G", nil, nil, [], .invalidInput(field: "--gpu-memory", message: "asks for GPU memory without --gpus")),
      (nil, nil, nil, "lots", [], .invalidInput(field: "--memory", message: "'lots' is not a size such as 16G, 512M or 16000 (MiB)")),
      (
        nil, nil, nil, nil, ["nokey"],
        .invalidInput(field: "--constraint", message: "'nokey' is not key=value (gpu_model=GLOB, host=GLOB or label.KEY=VALUE)")
      ),
      (nil, nil, nil, nil, ["color=red"], .invalidInput(field: "--constraint", message: "'color' is not gpu_model, host or label.KEY")),
      (nil, nil, nil, nil, ["label.zone=a", "label.zone=a"], .invalidInput(field: "--constraint", message: "label 'zone' is given twice")),
      (nil, nil, nil, nil, ["host=a-*", "host=b-*"], .invalidInput(field: "--constraint", message: "'host' is given twice")),
    ]
    for item in cases {
      #expect(throws: item.error, "\(item.error)") {
        _ = try JobRequirementFlags(gpus: item.gpus, gpuMemory: item.gpuMemory, cpus: item.cpus, memory: item.memory, constraints: item.constraints)
      }
    }
    // A value the submission would refuse is refused under the flag's name.
    #expect {
      _ = try JobRequirementFlags(gpus: nil, gpuMemory: nil, cpus: nil, memory: nil, constraints: ["gpu_model=\(String(repeating: "x", count: 201))"])
    } throws: { error in
      guard case .invalidInput(let named, _) = error as? NovaError else { return false }
      return named == "--constraint"
    }
  }
}
