import Foundation

/// What a baseline ran on, recorded in every artefact.
public struct HostFacts: Codable, Sendable, Equatable {
  public var hostname: String
  public var cpu_model: String
  public var cpu_count: Int
  public var memory_bytes: Int64
  public var kernel: String
  public var nova_version: String
  public var nova_revision: String

  /// Reads the facts of this host (Linux `/proc`, `uname`).
  public static func current(version: String, revision: String) -> HostFacts {
    let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
    let model =
      cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }
      .flatMap { $0.split(separator: ":", maxSplits: 1).last }.map { $0.trimmingCharacters(in: .whitespaces) } ?? "unknown"
    let kilobytes = Int64(memoryKiB())
    var names = utsname()
    uname(&names)
    let kernel = withUnsafeBytes(of: &names.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    return HostFacts(
      hostname: ProcessInfo.processInfo.hostName, cpu_model: model, cpu_count: ProcessInfo.processInfo.activeProcessorCount,
      memory_bytes: kilobytes * 1024, kernel: kernel, nova_version: version, nova_revision: revision)
  }

  /// The host name up to its first dot, as `nova worker` names its host (`HostCapacity.host`):
  /// what the baseline's GPU measures and the `gpu.*` KPIs' `host` label call it.
  public var shortName: String {
    hostname.split(separator: ".").first.map(String.init) ?? hostname
  }

  /// The host's memory in KiB (`MemTotal` of /proc/meminfo; 0 when it cannot be read).
  static func memoryKiB() -> Int {
    let meminfo = (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8)) ?? ""
    return meminfo.split(separator: "\n").first { $0.hasPrefix("MemTotal:") }
      .flatMap { Int($0.split(separator: " ").dropFirst().first ?? "") } ?? 0
  }
}
