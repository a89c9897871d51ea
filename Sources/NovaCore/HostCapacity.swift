import Foundation

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

  /// What the operator says of a host, over what was detected.
  public struct Overrides: Sendable, Equatable {
    /// Only these GPU indices (an empty list: none).
    public var gpus: [Int]?
    public var cpus: Int?
    public var memoryMiB: Int?
    public var labels: [String: String]
    /// The name placement and the registry know the host by (its host name by default).
    public var hostName: String?

    public init(gpus: [Int]? = nil, cpus: Int? = nil, memoryMiB: Int? = nil, labels: [String: String] = [:], hostName: String? = nil) {
      self.gpus = gpus
      self.cpus = cpus
      self.memoryMiB = memoryMiB
      self.labels = labels
      self.hostName = hostName
    }

    /// Parses `--gpus 0,1` (or `none`), `--cpus 8`, `--memory 16G` and `--labels k=v` as given on
    /// the command line; errors name the flag and the value.
    public init(gpus: String?, cpus: Int?, memory: String?, labels: [String], hostName: String? = nil) throws(NovaError) {
      if let hostName {
        guard !hostName.isEmpty, hostName.utf8.count <= 200, !hostName.contains(where: { $0.isWhitespace || $0.isNewline }) else {
          throw .invalidInput(field: "--host-name", message: "must be 1 to 200 characters without spaces")
        }
      }
      self.hostName = hostName
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
    if let name = overrides.hostName { result.host = name }
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

  package static func isLabelKey(_ key: Substring) -> Bool {
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

extension HostCapacity {
  /// What is left of this capacity once `placement` holds its part (its GPUs, CPUs and memory).
  public func subtracting(_ placement: JobPlacement) -> HostCapacity {
    var left = self
    let taken = Set(placement.gpus.map(\.index))
    left.gpus.removeAll { taken.contains($0.index) }
    left.cpus = max(0, cpus - placement.cpus)
    left.memory_mib = max(0, memory_mib - placement.memory_mib)
    return left
  }

  /// Where a job with `requirements` goes on this (free) capacity: `nil` when it does not fit.
  public func placement(for requirements: JobRequirements) -> JobPlacement? {
    guard case .fits(let gpus) = place(requirements.resources, requirements.constraints) else { return nil }
    return JobPlacement(
      host: host, gpus: gpus.map { JobPlacement.Device(index: $0.index, uuid: $0.uuid) }, cpus: requirements.resources.cpus,
      memory_mib: requirements.resources.memory_mib)
  }
}

extension HostCapacity {
  /// Reads a capacity a worker sends with its claim (`{"host", "gpus": [{"index", "uuid",
  /// "model", "memory_mib", "unified_memory"}], "cpus", "memory_mib", "labels"}`) strictly: an
  /// unknown field, a wrong type or an absurd value is an error naming it (`capacity.gpus[1].uuid`).
  public init(json value: JSONValue, field: String = "capacity") throws(NovaError) {
    guard case .object(let fields) = value else { throw .invalidInput(field: field, message: "must be an object") }
    let known = ["host", "gpus", "cpus", "memory_mib", "labels"]
    for key in fields.keys.sorted() where !known.contains(key) {
      throw .invalidInput(field: "\(field).\(key)", message: "unknown; expected one of \(known.sorted().joined(separator: ", "))")
    }
    func text(_ value: JSONValue?, _ name: String, required: Bool = true) throws(NovaError) -> String? {
      guard let value else {
        if required { throw .invalidInput(field: name, message: "is required") }
        return nil
      }
      guard case .string(let text) = value, !text.isEmpty, text.utf8.count <= 200, !text.contains(where: \.isNewline) else {
        throw .invalidInput(field: name, message: "must be a string of 1 to 200 characters on one line")
      }
      return text
    }
    func whole(_ value: JSONValue?, _ name: String, _ range: ClosedRange<Int>) throws(NovaError) -> Int {
      guard let value else { return 0 }
      let number: Int
      switch value {
      case .int(let raw) where raw >= Int64(Int.min) && raw <= Int64(Int.max): number = Int(raw)
      case .double(let raw) where raw == raw.rounded() && abs(raw) < 1e15: number = Int(raw)
      default: throw .invalidInput(field: name, message: "must be a whole number")
      }
      guard range.contains(number) else {
        throw .invalidInput(field: name, message: "\(number) is out of range \(range.lowerBound)...\(range.upperBound)")
      }
      return number
    }
    let host = try text(fields["host"], "\(field).host") ?? ""
    var gpus: [GPU] = []
    if let raw = fields["gpus"] {
      guard case .array(let entries) = raw, entries.count <= 256 else {
        throw .invalidInput(field: "\(field).gpus", message: "must be a list of at most 256 GPUs")
      }
      for (position, entry) in entries.enumerated() {
        let path = "\(field).gpus[\(position)]"
        guard case .object(let gpu) = entry else { throw .invalidInput(field: path, message: "must be an object") }
        let gpuKeys = ["index", "uuid", "model", "memory_mib", "unified_memory"]
        for key in gpu.keys.sorted() where !gpuKeys.contains(key) {
          throw .invalidInput(field: "\(path).\(key)", message: "unknown; expected one of \(gpuKeys.sorted().joined(separator: ", "))")
        }
        guard gpu["index"] != nil else { throw .invalidInput(field: "\(path).index", message: "is required") }
        let index = try whole(gpu["index"], "\(path).index", 0...1023)
        guard !gpus.contains(where: { $0.index == index }) else {
          throw .invalidInput(field: "\(path).index", message: "GPU \(index) is listed twice")
        }
        var unified = false
        if let flag = gpu["unified_memory"] {
          guard case .bool(let value) = flag else { throw .invalidInput(field: "\(path).unified_memory", message: "must be true or false") }
          unified = value
        }
        gpus.append(
          GPU(
            index: index, uuid: try text(gpu["uuid"], "\(path).uuid") ?? "", model: try text(gpu["model"], "\(path).model") ?? "",
            memory_mib: try whole(gpu["memory_mib"], "\(path).memory_mib", 0...(16 << 20)), unified_memory: unified))
      }
    }
    var labels: [String: String] = [:]
    if let raw = fields["labels"] {
      guard case .object(let entries) = raw, entries.count <= 64 else {
        throw .invalidInput(field: "\(field).labels", message: "must be an object of at most 64 labels")
      }
      for (key, entry) in entries.sorted(by: { $0.key < $1.key }) {
        guard Self.isLabelKey(key[...]) else {
          throw .invalidInput(field: "\(field).labels", message: "'\(key.prefix(80))' is not a label key (letters, digits, '.', '-', '_', '/')")
        }
        labels[key] = try text(entry, "\(field).labels.\(key)")
      }
    }
    self.init(
      host: host, gpus: gpus, cpus: try whole(fields["cpus"], "\(field).cpus", 0...4096),
      memory_mib: try whole(fields["memory_mib"], "\(field).memory_mib", 0...(64 << 20)), labels: labels)
  }
}
