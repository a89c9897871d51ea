import Foundation

/// What a job asks of the host it runs on (`resources` on submit): GPUs, GPU memory, CPUs and
/// memory. Zero asks for none of that resource.
public struct JobResources: Codable, Sendable, Equatable {
  public var gpus: Int
  /// Memory each GPU must have, in MiB.
  public var gpu_memory_mib: Int
  public var cpus: Int
  public var memory_mib: Int

  public init(gpus: Int = 0, gpu_memory_mib: Int = 0, cpus: Int = 0, memory_mib: Int = 0) {
    self.gpus = gpus
    self.gpu_memory_mib = gpu_memory_mib
    self.cpus = cpus
    self.memory_mib = memory_mib
  }

  /// The most of each resource one job may ask for: more is a typo, not a job.
  public static let limits: [(field: String, range: ClosedRange<Int>)] = [
    ("gpus", 0...64), ("gpu_memory_mib", 0...(16 << 20)), ("cpus", 0...4096), ("memory_mib", 0...(64 << 20)),
  ]

  /// Reads `{"gpus": 2, "gpu_memory_mib": 40000, "cpus": 4, "memory_mib": 16000}` strictly: an
  /// unknown field, a value that is not a whole number, negative or absurd, is an error naming
  /// it (`resources.gpus`).
  public init(json value: JSONValue, field: String = "resources") throws(NovaError) {
    guard case .object(let fields) = value else { throw .invalidInput(field: field, message: "must be an object") }
    var numbers: [String: Int] = [:]
    let known = Set(Self.limits.map(\.field))
    for key in fields.keys.sorted() where !known.contains(key) {
      throw .invalidInput(field: "\(field).\(key)", message: "unknown; expected one of \(known.sorted().joined(separator: ", "))")
    }
    for (name, range) in Self.limits {
      guard let raw = fields[name] else { continue }
      let number: Int
      switch raw {
      case .int(let whole) where whole >= Int64(Int.min) && whole <= Int64(Int.max): number = Int(whole)
      case .double(let real) where real == real.rounded() && abs(real) < 1e15: number = Int(real)
      default: throw .invalidInput(field: "\(field).\(name)", message: "must be a whole number")
      }
      guard range.contains(number) else {
        throw .invalidInput(field: "\(field).\(name)", message: "\(number) is out of range \(range.lowerBound)...\(range.upperBound)")
      }
      numbers[name] = number
    }
    self.init(
      gpus: numbers["gpus"] ?? 0, gpu_memory_mib: numbers["gpu_memory_mib"] ?? 0, cpus: numbers["cpus"] ?? 0,
      memory_mib: numbers["memory_mib"] ?? 0)
    if gpu_memory_mib > 0, gpus == 0 {
      throw .invalidInput(field: "\(field).gpu_memory_mib", message: "asks for GPU memory without asking for GPUs")
    }
  }
}

/// Where a job may run (`constraints` on submit): the GPU model and host name as globs (`*H100*`,
/// `spark-*`) and labels the host must carry with these values.
public struct JobConstraints: Codable, Sendable, Equatable {
  public var gpu_model: String?
  public var host: String?
  public var labels: [String: String]

  public init(gpu_model: String? = nil, host: String? = nil, labels: [String: String] = [:]) {
    self.gpu_model = gpu_model
    self.host = host
    self.labels = labels
  }

  /// Reads `{"gpu_model": "*H100*", "host": "spark-*", "labels": {"zone": "b"}}` strictly; errors
  /// name the field (`constraints.labels.zone`).
  public init(json value: JSONValue, field: String = "constraints") throws(NovaError) {
    guard case .object(let fields) = value else { throw .invalidInput(field: field, message: "must be an object") }
    for key in fields.keys.sorted() where !["gpu_model", "host", "labels"].contains(key) {
      throw .invalidInput(field: "\(field).\(key)", message: "unknown; expected one of gpu_model, host, labels")
    }
    func pattern(_ name: String) throws(NovaError) -> String? {
      guard let raw = fields[name] else { return nil }
      guard case .string(let text) = raw, !text.isEmpty, text.utf8.count <= 200, !text.contains(where: \.isNewline) else {
        throw .invalidInput(field: "\(field).\(name)", message: "must be a pattern of 1 to 200 characters (* and ? match)")
      }
      return text
    }
    var labels: [String: String] = [:]
    if let raw = fields["labels"] {
      guard case .object(let entries) = raw, entries.count <= 32 else {
        throw .invalidInput(field: "\(field).labels", message: "must be an object of at most 32 labels")
      }
      for (key, entry) in entries.sorted(by: { $0.key < $1.key }) {
        guard case .string(let text) = entry, !text.isEmpty, text.utf8.count <= 200 else {
          throw .invalidInput(field: "\(field).labels.\(key)", message: "must be a string of 1 to 200 characters")
        }
        labels[key] = text
      }
    }
    self.init(gpu_model: try pattern("gpu_model"), host: try pattern("host"), labels: labels)
  }

  /// Whether a host named `host` with `labels` meets the host and label constraints.
  public func admitsHost(_ host: String, labels hostLabels: [String: String]) -> Bool {
    if let pattern = self.host, !GlobPattern(pattern).matches(host) { return false }
    return labels.allSatisfy { hostLabels[$0.key] == $0.value }
  }

  /// Whether a GPU of `model` meets the model constraint.
  public func admitsGPU(model: String) -> Bool {
    gpu_model.map { GlobPattern($0).matches(model) } ?? true
  }
}
