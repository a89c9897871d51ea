import Foundation
import NovaCore

extension HostCapacity {
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
}
