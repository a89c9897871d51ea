import Foundation

/// A job's requests as given on the command line (`--gpus 2 --gpu-memory 40G --cpus 4 --memory
/// 16G --constraint gpu_model=*H100*`), checked as strictly as on submit; errors name the flag.
public struct JobRequirementFlags: Sendable, Equatable {
  /// Nil when no resource flag was given (the kind's default applies).
  public var resources: JobResources?
  /// Nil when no `--constraint` was given (the kind's default applies).
  public var constraints: JobConstraints?

  public init(gpus: Int?, gpuMemory: String?, cpus: Int?, memory: String?, constraints: [String]) throws(NovaError) {
    if gpus != nil || gpuMemory != nil || cpus != nil || memory != nil {
      var resources = JobResources()
      for (flag, value, field) in [("--gpus", gpus, "gpus"), ("--cpus", cpus, "cpus")] {
        guard let value else { continue }
        let range = JobResources.limits.first { $0.field == field }?.range ?? 0...0
        guard range.contains(value) else {
          throw .invalidInput(field: flag, message: "\(value) is out of range \(range.lowerBound)...\(range.upperBound)")
        }
        if field == "gpus" { resources.gpus = value } else { resources.cpus = value }
      }
      if let gpuMemory { resources.gpu_memory_mib = try HostCapacity.mebibytes(gpuMemory, field: "--gpu-memory") }
      if let memory { resources.memory_mib = try HostCapacity.mebibytes(memory, field: "--memory") }
      for (flag, value, field) in [("--gpu-memory", resources.gpu_memory_mib, "gpu_memory_mib"), ("--memory", resources.memory_mib, "memory_mib")] {
        let range = JobResources.limits.first { $0.field == field }?.range ?? 0...0
        guard range.contains(value) else {
          throw .invalidInput(field: flag, message: "\(value) MiB is out of range \(range.lowerBound)...\(range.upperBound)")
        }
      }
      if resources.gpu_memory_mib > 0 && resources.gpus == 0 {
        throw .invalidInput(field: "--gpu-memory", message: "asks for GPU memory without --gpus")
      }
      self.resources = resources
    }
    if !constraints.isEmpty {
      var fields: [String: JSONValue] = [:]
      var labels: [String: JSONValue] = [:]
      for given in constraints {
        let parts = given.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[1].isEmpty else {
          throw .invalidInput(field: "--constraint", message: "'\(given)' is not key=value (gpu_model=GLOB, host=GLOB or label.KEY=VALUE)")
        }
        let key = String(parts[0])
        let value = JSONValue.string(String(parts[1]))
        if key.hasPrefix("label."), key.count > 6 {
          let label = String(key.dropFirst(6))
          guard labels[label] == nil else { throw .invalidInput(field: "--constraint", message: "label '\(label)' is given twice") }
          labels[label] = value
        } else if key == "gpu_model" || key == "host" {
          guard fields[key] == nil else { throw .invalidInput(field: "--constraint", message: "'\(key)' is given twice") }
          fields[key] = value
        } else {
          throw .invalidInput(field: "--constraint", message: "'\(key)' is not gpu_model, host or label.KEY")
        }
      }
      if !labels.isEmpty { fields["labels"] = .object(labels) }
      do {
        self.constraints = try JobConstraints(json: .object(fields))
      } catch {
        guard case .invalidInput(_, let message) = error else { throw error }
        throw .invalidInput(field: "--constraint", message: message)
      }
    }
  }
}
