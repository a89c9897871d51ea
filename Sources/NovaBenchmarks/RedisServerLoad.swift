import NovaRedis

/// What a Redis server has done so far, from `INFO`: its CPU time and the commands it ran.
/// Two samples around a benchmark run give Redis's own cost per job.
public struct RedisServerLoad: Sendable, Equatable {
  /// CPU seconds the server has used (user and system, its main thread and the rest).
  public var cpuSeconds: Double
  /// Scripts run (`EVALSHA`, `EVAL`, `FCALL` and their read-only forms).
  public var scripts: Int
  /// Every command run, those scripts call included (the sum of `INFO commandstats`; Redis 7
  /// counts a script's own calls there and in `total_commands_processed` alike).
  public var calls: Int

  public init(cpuSeconds: Double, scripts: Int, calls: Int) {
    self.cpuSeconds = cpuSeconds
    self.scripts = scripts
    self.calls = calls
  }

  /// Samples the server behind `client`.
  public static func sample(_ client: RedisClient) async throws -> RedisServerLoad {
    let info = try await client.send("INFO", "all").string ?? ""
    return try parse(info)
  }

  /// Reads the figures out of `INFO all`'s text; throws naming the field when one is missing.
  public static func parse(_ info: String) throws -> RedisServerLoad {
    var fields: [Substring: Substring] = [:]
    var calls = 0
    var scripts = 0
    for line in info.split(whereSeparator: \.isNewline) where !line.hasPrefix("#") {
      guard let colon = line.firstIndex(of: ":") else { continue }
      let name = line[..<colon]
      let value = line[line.index(after: colon)...]
      fields[name] = value
      // cmdstat_hset:calls=12,usec=30,...
      if name.hasPrefix("cmdstat_"), let entry = value.split(separator: ",").first(where: { $0.hasPrefix("calls=") }) {
        let count = Int(entry.dropFirst("calls=".count)) ?? 0
        calls += count
        if Self.scriptCommands.contains(String(name.dropFirst("cmdstat_".count))) { scripts += count }
      }
    }
    func number(_ name: Substring) throws -> Double {
      guard let text = fields[name], let value = Double(text) else {
        throw RedisServerLoadError(message: "INFO has no number for \(name)")
      }
      return value
    }
    return RedisServerLoad(cpuSeconds: try number("used_cpu_user") + number("used_cpu_sys"), scripts: scripts, calls: calls)
  }

  private static let scriptCommands: Set<String> = ["evalsha", "eval", "evalsha_ro", "eval_ro", "fcall", "fcall_ro"]

  /// What the server did between `earlier` and this sample.
  public func since(_ earlier: RedisServerLoad) -> RedisServerLoad {
    RedisServerLoad(cpuSeconds: cpuSeconds - earlier.cpuSeconds, scripts: scripts - earlier.scripts, calls: calls - earlier.calls)
  }
}

/// `INFO` did not have a figure the benchmark reads.
public struct RedisServerLoadError: Error, CustomStringConvertible {
  public var message: String
  public var description: String { message }
}
