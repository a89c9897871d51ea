import Foundation
import NovaCore

/// What a worker's host offers jobs: its GPUs (each by index, UUID, model and memory), CPUs,
/// memory and labels. Detected at start (`detect`), then narrowed by the operator
/// (`applying(_:)`): the worker advertises it and places jobs within it.
public struct HostCapacity: Codable, Sendable, Equatable {
  /// One GPU device.
  public struct GPU: Codable, Sendable, Equatable {
    /// `nvidia-smi`'s index, what `CUDA_VISIBLE_DEVICES` names.
    public var index: Int
    public var uuid: String
    public var model: String
    /// Its memory; for a unified-memory GPU (GB10: `[N/A]`), the host's.
    public var memory_mib: Int
    /// The GPU shares the host's memory (no memory of its own).
    public var unified_memory: Bool

    public init(index: Int, uuid: String, model: String, memory_mib: Int, unified_memory: Bool = false) {
      self.index = index
      self.uuid = uuid
      self.model = model
      self.memory_mib = memory_mib
      self.unified_memory = unified_memory
    }
  }

  public var host: String
  public var gpus: [GPU]
  public var cpus: Int
  public var memory_mib: Int
  public var labels: [String: String]

  public init(host: String, gpus: [GPU], cpus: Int, memory_mib: Int, labels: [String: String] = [:]) {
    self.host = host
    self.gpus = gpus
    self.cpus = cpus
    self.memory_mib = memory_mib
    self.labels = labels
  }

  /// The fields `nvidia-smi --query-gpu` is asked for, in order.
  public static let query = "index,uuid,name,memory.total"

  /// Detects this host: GPUs from `nvidia-smi` when it is on `PATH` (none otherwise, or when it
  /// fails: the reason comes back), the CPUs this process may run on, and the memory it may use.
  public static func detect(environment: [String: String] = ProcessInfo.processInfo.environment) async -> (
    capacity: HostCapacity, gpuProblem: String?
  ) {
    let memory = hostMemoryMiB()
    var gpus: [GPU] = []
    var problem: String?
    if let binary = GPUProbe.locate("nvidia-smi", path: environment["PATH"] ?? "/usr/bin:/bin") {
      switch await ProbeProgram.run(binary, ["--query-gpu=\(query)", "--format=csv,noheader,nounits"], timeout: .seconds(20)) {
      case .finished(0, let output):
        do {
          gpus = try parse(output, hostMemoryMiB: memory)
        } catch {
          problem = "\(error)"
        }
      case .finished(let status, _): problem = "nvidia-smi exited with \(status)"
      case .timedOut: problem = "nvidia-smi did not answer within 20 s"
      case .missing: problem = "nvidia-smi is not on PATH"
      case .failed(let reason): problem = "cannot run nvidia-smi: \(reason)"
      }
    } else {
      problem = "nvidia-smi is not on PATH"
    }
    let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "host"
    return (HostCapacity(host: host, gpus: gpus, cpus: ProcessInfo.processInfo.activeProcessorCount, memory_mib: memory), problem)
  }

  /// Parses `nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits`.
  /// A memory that reads `[N/A]` (a unified-memory GPU) counts `hostMemoryMiB`.
  public static func parse(_ output: String, hostMemoryMiB: Int) throws(NovaError) -> [GPU] {
    var gpus: [GPU] = []
    for (number, line) in output.split(separator: "\n", omittingEmptySubsequences: true).enumerated() {
      let fields = line.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
      guard fields.count == 4, let index = Int(fields[0]), index >= 0, !fields[1].isEmpty else {
        throw .malformedInput(field: "nvidia-smi line \(number + 1)", message: "expected index, uuid, name, memory: '\(line)'")
      }
      let unified = fields[3] == "[N/A]" || fields[3] == "[Not Supported]"
      guard let memory = unified ? hostMemoryMiB : Int(fields[3]), memory >= 0 else {
        throw .malformedInput(field: "nvidia-smi line \(number + 1)", message: "memory '\(fields[3])' is not a number of MiB")
      }
      gpus.append(GPU(index: index, uuid: fields[1], model: fields[2], memory_mib: memory, unified_memory: unified))
    }
    return gpus
  }

  /// The memory this process may use, in MiB: the host's, or its cgroup's limit when lower.
  static func hostMemoryMiB() -> Int {
    let total = HostFacts.memoryKiB() / 1024
    let limit = ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"].lazy
      .compactMap { try? String(contentsOfFile: $0, encoding: .utf8) }
      .compactMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }.first.map { $0 / (1 << 20) }
    guard let limit, limit > 0 else { return total }
    return min(total, limit)
  }

  /// What the operator says of a host, over what was detected.
  public struct Overrides: Sendable, Equatable {
    /// Only these GPU indices (an empty list: none).
    public var gpus: [Int]?
    public var cpus: Int?
    public var memoryMiB: Int?
    public var labels: [String: String]

    public init(gpus: [Int]? = nil, cpus: Int? = nil, memoryMiB: Int? = nil, labels: [String: String] = [:]) {
      self.gpus = gpus
      self.cpus = cpus
      self.memoryMiB = memoryMiB
      self.labels = labels
    }

    /// Parses `--gpus 0,1` (or `none`), `--cpus 8`, `--memory 16G` and `--labels k=v` as given on
    /// the command line; errors name the flag and the value.
    public init(gpus: String?, cpus: Int?, memory: String?, labels: [String]) throws(NovaError) {
      if let gpus {
        if gpus == "none" {
          self.gpus = []
        } else {
          var indices: [Int] = []
          for part in gpus.split(separator: ",", omittingEmptySubsequences: false) {
            guard let index = Int(part.trimmingCharacters(in: .whitespaces)), index >= 0 else {
              throw .invalidInput(field: "--gpus", message: "'\(gpus)' is not a list of GPU indices such as 0,1 (or none)")
            }
            guard !indices.contains(index) else { throw .invalidInput(field: "--gpus", message: "GPU \(index) is named twice") }
            indices.append(index)
          }
          self.gpus = indices
        }
      }
      if let cpus, !(1...4096).contains(cpus) {
        throw .invalidInput(field: "--cpus", message: "\(cpus) is out of range 1...4096")
      }
      self.cpus = cpus
      self.memoryMiB = try memory.map { text throws(NovaError) in try HostCapacity.mebibytes(text, field: "--memory") }
      var parsed: [String: String] = [:]
      for label in labels {
        let parts = label.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, HostCapacity.isLabelKey(parts[0]), !parts[1].isEmpty, parts[1].count <= 200 else {
          throw .invalidInput(field: "--labels", message: "'\(label)' is not key=value (key: letters, digits, '.', '-', '_', '/')")
        }
        guard parsed[String(parts[0])] == nil else { throw .invalidInput(field: "--labels", message: "'\(parts[0])' is given twice") }
        parsed[String(parts[0])] = String(parts[1])
      }
      self.labels = parsed
    }
  }

  /// This capacity narrowed by `overrides`: a GPU named that this host does not have, or more
  /// CPUs or memory than it has, is an error naming it (a typo must not advertise what is not there).
  public func applying(_ overrides: Overrides) throws(NovaError) -> HostCapacity {
    var result = self
    if let indices = overrides.gpus {
      for index in indices where !gpus.contains(where: { $0.index == index }) {
        let present = gpus.map { String($0.index) }.joined(separator: ",")
        throw .invalidInput(field: "--gpus", message: "this host has no GPU \(index) (it has \(present.isEmpty ? "none" : present))")
      }
      result.gpus = gpus.filter { indices.contains($0.index) }
    }
    if let cpus = overrides.cpus {
      guard cpus <= self.cpus else { throw .invalidInput(field: "--cpus", message: "\(cpus) is more than the \(self.cpus) this host has") }
      result.cpus = cpus
    }
    if let memory = overrides.memoryMiB {
      guard memory <= memory_mib else {
        throw .invalidInput(field: "--memory", message: "\(memory) MiB is more than the \(memory_mib) MiB this host has")
      }
      result.memory_mib = memory
    }
    result.labels.merge(overrides.labels) { $1 }
    return result
  }

  /// `16G`, `16GiB`, `16000M`, `512MiB`, `1T` or a plain number of MiB, as MiB.
  public static func mebibytes(_ text: String, field: String) throws(NovaError) -> Int {
    let trimmed = text.trimmingCharacters(in: .whitespaces)
    let digits = trimmed.prefix { $0.isNumber || $0 == "." }
    let unit = trimmed.dropFirst(digits.count).lowercased()
    let tebi = 1_048_576.0
    let factors: [String: Double] = ["": 1, "m": 1, "mi": 1, "mib": 1, "g": 1024, "gi": 1024, "gib": 1024, "t": tebi, "ti": tebi, "tib": tebi]
    guard let value = Double(digits), let factor = factors[unit], value > 0 else {
      throw .invalidInput(field: field, message: "'\(text)' is not a size such as 16G, 512M or 16000 (MiB)")
    }
    let mebibytes = value * factor
    guard mebibytes >= 1, mebibytes < 1e12 else { throw .invalidInput(field: field, message: "'\(text)' is out of range") }
    return Int(mebibytes.rounded())
  }

  static func isLabelKey(_ key: Substring) -> Bool {
    !key.isEmpty && key.count <= 63
      && key.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) || [45, 46, 47, 95].contains($0) }
  }
}

extension HostCapacity {
  /// Where a job would run on this host, or why it cannot.
  public enum Placement: Sendable, Equatable {
    /// It fits, on these GPUs (the lowest indices that qualify; none when it asks for none).
    case fits(gpus: [GPU])
    /// It does not fit: what is missing, for `waiting_for`.
    case unfit(String)
  }

  /// Places a job asking `resources` under `constraints` on this host's free part (this capacity
  /// less what running jobs hold). All its GPUs are on this host or it does not fit.
  public func place(_ resources: JobResources, _ constraints: JobConstraints) -> Placement {
    guard constraints.admitsHost(host, labels: labels) else {
      var wanted: [String] = []
      if let pattern = constraints.host { wanted.append("host \(pattern)") }
      wanted += constraints.labels.sorted { $0.key < $1.key }.map { "label \($0.key)=\($0.value)" }
      return .unfit("host \(host) does not match \(wanted.joined(separator: ", "))")
    }
    var assigned: [GPU] = []
    if resources.gpus > 0 {
      let qualified = gpus.filter { constraints.admitsGPU(model: $0.model) && $0.memory_mib >= resources.gpu_memory_mib }
        .sorted { $0.index < $1.index }
      guard qualified.count >= resources.gpus else {
        var kind = "GPU"
        if let model = constraints.gpu_model { kind += " \(model)" }
        if resources.gpu_memory_mib > 0 { kind += " with \(resources.gpu_memory_mib) MiB" }
        return .unfit("needs \(resources.gpus) \(kind); \(qualified.count) free on \(host)")
      }
      assigned = Array(qualified.prefix(resources.gpus))
    }
    guard cpus >= resources.cpus else { return .unfit("needs \(resources.cpus) CPUs; \(cpus) free on \(host)") }
    guard memory_mib >= resources.memory_mib else {
      return .unfit("needs \(resources.memory_mib) MiB of memory; \(memory_mib) free on \(host)")
    }
    return .fits(gpus: assigned)
  }
}
