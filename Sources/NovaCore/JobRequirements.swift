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

extension JobResources {
  /// True when it asks for nothing.
  public var isZero: Bool { gpus == 0 && gpu_memory_mib == 0 && cpus == 0 && memory_mib == 0 }
}

extension JobConstraints {
  /// True when it admits every host.
  public var isEmpty: Bool { gpu_model == nil && host == nil && labels.isEmpty }
}

/// What a job asks of its host and where it may run, stored with the job; a job that asks for
/// nothing has none (nil), and any worker may take it.
public struct JobRequirements: Codable, Sendable, Equatable {
  public var resources: JobResources
  public var constraints: JobConstraints

  /// Requirements, or nil when `resources` asks for nothing and `constraints` admit every host.
  public static func make(resources: JobResources?, constraints: JobConstraints?) -> JobRequirements? {
    let requirements = JobRequirements(resources: resources ?? JobResources(), constraints: constraints ?? JobConstraints())
    return requirements.resources.isZero && requirements.constraints.isEmpty ? nil : requirements
  }

  public init(resources: JobResources = JobResources(), constraints: JobConstraints = JobConstraints()) {
    self.resources = resources
    self.constraints = constraints
  }

  /// The stored form: compact JSON with sorted keys.
  public func encoded() -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
  }

  /// The stored form read back (strictly, as on submit); an error names the job's field.
  public static func decoded(_ text: String) throws(NovaError) -> JobRequirements {
    let value: JSONValue
    do {
      value = try JSONValue.parse(Data(text.utf8))
    } catch {
      throw .storage("a job's stored requirements are not JSON: \(text.prefix(200))")
    }
    guard case .object(let fields) = value else { throw .storage("a job's stored requirements are not an object") }
    return JobRequirements(
      resources: try fields["resources"].map { value throws(NovaError) in try JobResources(json: value) } ?? JobResources(),
      constraints: try fields["constraints"].map { value throws(NovaError) in try JobConstraints(json: value) } ?? JobConstraints())
  }
}

/// Where an attempt runs: its host and the devices, CPUs and memory it holds there. The GPUs are
/// its own until the attempt ends: no other job is placed on them meanwhile.
public struct JobPlacement: Codable, Sendable, Equatable {
  /// One GPU, by index (what `CUDA_VISIBLE_DEVICES` names) and UUID.
  public struct Device: Codable, Sendable, Equatable {
    public var index: Int
    public var uuid: String

    public init(index: Int, uuid: String) {
      self.index = index
      self.uuid = uuid
    }
  }

  public var host: String
  public var gpus: [Device]
  public var cpus: Int
  public var memory_mib: Int

  public init(host: String, gpus: [Device], cpus: Int, memory_mib: Int) {
    self.host = host
    self.gpus = gpus
    self.cpus = cpus
    self.memory_mib = memory_mib
  }

  /// The GPU indices as `CUDA_VISIBLE_DEVICES` takes them (`0,1`; empty for none).
  public var visibleDevices: String { gpus.map { String($0.index) }.joined(separator: ",") }

  /// The GPU UUIDs as `NVIDIA_VISIBLE_DEVICES` takes them (empty for none).
  public var visibleUUIDs: String { gpus.map(\.uuid).joined(separator: ",") }

  /// The stored form: compact JSON with sorted keys.
  public func encoded() -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
  }

  /// The stored form read back.
  public static func decoded(_ text: String) throws(NovaError) -> JobPlacement {
    do {
      return try JSONDecoder().decode(JobPlacement.self, from: Data(text.utf8))
    } catch {
      throw .storage("a job's stored placement is not one: \(text.prefix(200))")
    }
  }
}

/// Limits shared by all running jobs of one concurrency key (per queue): at most `maxRunning`
/// at once, and at most `ratePerSecond` starts per second (bursts of one second's worth).
public struct KeyLimits: Sendable, Equatable, Codable {
  public var maxRunning: Int?
  public var ratePerSecond: Double?

  public init(maxRunning: Int? = nil, ratePerSecond: Double? = nil) {
    self.maxRunning = maxRunning
    self.ratePerSecond = ratePerSecond
  }

  /// True when it limits nothing.
  public var isEmpty: Bool { maxRunning == nil && ratePerSecond == nil }

  /// The tighter of each limit.
  public func tightened(by other: KeyLimits?) -> KeyLimits {
    guard let other else { return self }
    func least<T: Comparable>(_ a: T?, _ b: T?) -> T? { [a, b].compactMap { $0 }.min() }
    return KeyLimits(maxRunning: least(maxRunning, other.maxRunning), ratePerSecond: least(ratePerSecond, other.ratePerSecond))
  }
}
