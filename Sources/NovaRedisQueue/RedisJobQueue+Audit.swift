import Foundation
import NovaCore
import NovaQueue
import NovaRedis

/// The audit records that the scripts write to each queue's `audit` stream, read in order and
/// trimmed once the audit log holds them.
extension RedisJobQueue: TransitionSource {
  public func pendingTransitions(after cursors: [String: String], limit: Int) async throws -> [SourcedTransition] {
    var records: [SourcedTransition] = []
    for queue in try await allQueues() where records.count < limit {
      let key = "\(configuration.keyPrefix):{\(queue)}:audit"
      let start = cursors[key].map { "(" + $0 } ?? "-"
      let reply = try await redis.send("XRANGE", .string(key), .string(start), "+", "COUNT", .int(limit - records.count))
      for item in reply.elements ?? [] {
        guard let parts = item.elements, parts.count == 2, let id = parts[0].string, let flat = parts[1].elements else {
          throw RedisStoreBoundary.badReply("XRANGE \(key) returned \(item)")
        }
        var fields: [String: String] = [:]
        for index in stride(from: 0, to: flat.count - 1, by: 2) {
          if let name = flat[index].string { fields[name] = flat[index + 1].string ?? "" }
        }
        do {
          records.append(try Self.transition(from: fields, queue: queue, source: key, cursor: id))
        } catch NovaError.storage(let problem) {
          // Any client with write access can add to the stream: a record that is not a
          // transition is copied aside (under its own id, so once) and the import goes on.
          var quarantine: [RESPArgument] = ["XADD", .string(key + ":quarantine"), .string(id), "reason", .string(problem)]
          for (name, value) in fields.sorted(by: { $0.key < $1.key }) { quarantine += [.string("f:" + name), .string(value)] }
          _ = try? await redis.send(quarantine)
          records.append(SourcedTransition(source: key, cursor: id, malformed: problem, fields: fields))
        }
      }
    }
    return records
  }

  static func transition(from fields: [String: String], queue: String, source: String, cursor: String) throws -> SourcedTransition {
    func bad(_ what: String) -> NovaError {
      NovaError.storage("audit record \(cursor) in \(source): \(what)")
    }
    guard let eventName = fields["e"], let event = JobTransition.Event(rawValue: eventName) else {
      throw bad("unknown event '\(fields["e"] ?? "")'")
    }
    guard let to = fields["t"].flatMap(JobState.init(rawValue:)) else { throw bad("unknown state '\(fields["t"] ?? "")'") }
    let fromText = fields["f"] ?? ""
    let from = fromText.isEmpty ? nil : JobState(rawValue: fromText)
    if !fromText.isEmpty && from == nil { throw bad("unknown state '\(fromText)'") }
    guard let job = fields["j"], !job.isEmpty else { throw bad("no job id") }
    // A time may come formatted by Lua as a float ("1.8e+12"): read it as a number either way.
    guard let timeText = fields["ts"], let time = Int64(timeText) ?? Double(timeText).map({ Int64($0) }) else {
      throw bad("no time")
    }
    let detail = fields["d"].flatMap { $0.isEmpty ? nil : $0 }
    return SourcedTransition(
      source: source, cursor: cursor,
      transition: JobTransition(
        event: event, job: JobID(job), queue: queue, kind: fields["k"] ?? "", from: from, to: to,
        attempt: Int(fields["a"] ?? "0") ?? 0, time: time, detail: detail),
      actor: fields["ac"] ?? "")
  }

  public func acknowledgeTransitions(through cursors: [String: String]) async throws {
    for (key, cursor) in cursors {
      // MINID keeps ids at or above the one after the cursor: every record up to it goes.
      let parts = cursor.split(separator: "-")
      guard parts.count == 2, let milliseconds = UInt64(parts[0]), let sequence = UInt64(parts[1]) else {
        throw NovaError.invalidInput(field: "cursor", message: "'\(cursor)' is not a stream id")
      }
      let next = sequence == UInt64.max ? "\(milliseconds + 1)-0" : "\(milliseconds)-\(sequence + 1)"
      _ = try await redis.send("XTRIM", .string(key), "MINID", .string(next))
    }
  }

  public func jobStates() async throws -> [(id: JobID, state: JobState)] {
    var states: [(id: JobID, state: JobState)] = []
    for queue in try await allQueues() {
      let base = "\(configuration.keyPrefix):{\(queue)}:"
      for state in JobState.allCases {
        let key = base + (state == .running ? "running" : "state:" + state.rawValue)
        for id in try await members(of: key) { states.append((JobID(id), state)) }
      }
    }
    return states
  }

  /// Audit records waiting in the queues' streams.
  public func pendingTransitionCount() async throws -> Int {
    let queues = try await allQueues()
    let replies = try await redis.pipeline(queues.map { ["XLEN", .string("\(configuration.keyPrefix):{\($0)}:audit")] })
    return replies.reduce(0) { $0 + Int($1.int ?? 0) }
  }
}
