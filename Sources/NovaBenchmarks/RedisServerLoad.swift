import NovaRedis

/// What a Redis server has done so far, from `INFO`: its CPU time and the commands it ran.
/// Two samples around a benchmark run give Redis's own cost per job.
public struct RedisServerLoad: Sendable, Equatable {
  /// CPU seconds the server has used (user and system, its main thread and the rest).
  public var cpuSeconds: Double
  /// Commands clients sent (a script's `EVALSHA` counts once): the round trips.
  public var clientCommands: Int
  /// Every command run, those a script calls included (the sum of `INFO commandstats`).
  public var calls: Int

  public init(cpuSeconds: Double, clientCommands: Int, calls: Int) {
    self.cpuSeconds = cpuSeconds
    self.clientCommands = clientCommands
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
    for line in info.split(whereSeparator: \.isNewline) where !line.hasPrefix("#") {
      guard let colon = line.firstIndex(of: ":") else { continue }
      let name = line[..<colon]
      let value = line[line.index(after: colon)...]
      fields[name] = value
      // cmdstat_hset:calls=12,usec=30,...
      if name.hasPrefix("cmdstat_"), let entry = value.split(separator: ",").first(where: { $0.hasPrefix("calls=") }) {
        calls += Int(entry.dropFirst("calls=".count)) ?? 0
      }
    }
    func number(_ name: Substring) throws -> Double {
      guard let text = fields[name], let value = Double(text) else {
        throw RedisServerLoadError(message: "INFO has no number for \(name)")
      }
      return value
    }
    return RedisServerLoad(
      cpuSeconds: try number("used_cpu_user") + number("used_cpu_sys"),
      clientCommands: Int(try number("total_commands_processed")), calls: calls)
  }

  /// What the server did between `earlier` and this sample.
  public func since(_ earlier: RedisServerLoad) -> RedisServerLoad {
    RedisServerLoad(
      cpuSeconds: cpuSeconds - earlier.cpuSeconds, clientCommands: clientCommands - earlier.clientCommands, calls: calls - earlier.calls)
  }
}

/// `INFO` did not have a figure the benchmark reads.
public struct RedisServerLoadError: Error, CustomStringConvertible {
  public var message: String
  public var description: String { message }
}
