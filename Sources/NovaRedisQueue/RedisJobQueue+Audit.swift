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
      var start = cursors[key].map { "(" + $0 } ?? "-"
      // An entry holds up to `auditBatch` records: entries are read a page at a time, and
      // whole, so the batch may pass `limit` by less than a page's worth.
      while records.count < limit {
        let page = min(limit - records.count, Self.auditEntryPage)
        let reply = try await redis.send("XRANGE", .string(key), .string(start), "+", "COUNT", .int(page))
        let entries = reply.elements ?? []
        for item in entries {
          guard let parts = item.elements, parts.count == 2, let id = parts[0].string, let flat = parts[1].elements else {
            throw RedisStoreBoundary.badReply("XRANGE \(key) returned \(item)")
          }
          start = "(" + id
          var fields: [(name: String, value: String)] = []
          for index in stride(from: 0, to: flat.count - 1, by: 2) {
            if let name = flat[index].string { fields.append((name, flat[index + 1].string ?? "")) }
          }
          do {
            records += try Self.transitions(from: fields, queue: queue, source: key, cursor: id)
          } catch NovaError.storage(let problem) {
            // Any client with write access can add to the stream: an entry that is not one the
            // scripts write is copied aside (under its own id, so once) and the import goes on.
            let named = Self.uniquelyNamed(fields)
            var quarantine: [RESPArgument] = ["XADD", .string(key + ":quarantine"), .string(id), "reason", .string(problem)]
            for (name, value) in named.sorted(by: { $0.key < $1.key }) { quarantine += [.string("f:" + name), .string(value)] }
            _ = try? await redis.send(quarantine)
            records.append(SourcedTransition(source: key, cursor: id, malformed: problem, fields: named))
          }
        }
        if entries.count < page { break }
      }
    }
    return records
  }

  /// Stream entries read per `XRANGE`.
  static let auditEntryPage = 64

  /// The records of one stream entry: a batch as the scripts write it (`v` 2: the actor, then
  /// an `r` per record holding event, job, from, to, attempt, kind, time and detail, joined by
  /// U+001F, the detail last so that it may hold anything), or one record as versions before
  /// batches wrote it (a field each).
  static func transitions(from fields: [(name: String, value: String)], queue: String, source: String, cursor: String) throws
    -> [SourcedTransition]
  {
    guard let version = fields.first(where: { $0.name == "v" })?.value else {
      return [try transition(from: uniquelyNamed(fields), queue: queue, source: source, cursor: cursor)]
    }
    guard version == "2" else { throw NovaError.storage("audit record \(cursor) in \(source): unknown version '\(version)'") }
    let actor = fields.first { $0.name == "ac" }?.value ?? ""
    var records: [SourcedTransition] = []
    for (position, record) in fields.filter({ $0.name == "r" }).map(\.value).enumerated() {
      let parts = record.split(separator: "\u{1F}", maxSplits: 7, omittingEmptySubsequences: false).map(String.init)
      guard parts.count == 8 else {
        throw NovaError.storage("audit record \(cursor) in \(source): record \(position + 1) has \(parts.count) of its 8 fields")
      }
      records.append(
        try transition(
          from: [
            "e": parts[0], "j": parts[1], "f": parts[2], "t": parts[3], "a": parts[4], "k": parts[5], "ts": parts[6], "d": parts[7], "ac": actor,
          ],
          queue: queue, source: source, cursor: cursor))
    }
    guard !records.isEmpty else { throw NovaError.storage("audit record \(cursor) in \(source): a batch with no records") }
    return records
  }

  /// Fields by name; a name that repeats gets its position after the first (`r`, `r.2`, ...).
  static func uniquelyNamed(_ fields: [(name: String, value: String)]) -> [String: String] {
    var named: [String: String] = [:]
    var seen: [String: Int] = [:]
    for (name, value) in fields {
      let count = (seen[name] ?? 0) + 1
      seen[name] = count
      named[count == 1 ? name : "\(name).\(count)"] = value
    }
    return named
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
        let key = base + RedisJobQueue.set(of: state)
        for id in try await members(of: key) { states.append((JobID(id), state)) }
      }
    }
    return states
  }

  /// Audit records waiting in the queues' streams: counted exactly while a queue's stream holds
  /// up to `auditEntryPage` entries (as after each import), estimated from its first entries
  /// beyond that.
  public func pendingTransitionCount() async throws -> Int {
    var total = 0
    for queue in try await allQueues() {
      let key = "\(configuration.keyPrefix):{\(queue)}:audit"
      let entries = try await redis.send("XLEN", .string(key)).int ?? 0
      if entries == 0 { continue }
      let first = try await redis.send("XRANGE", .string(key), "-", "+", "COUNT", .int(Self.auditEntryPage)).elements ?? []
      var records = 0
      for item in first {
        let flat = item.elements?.last?.elements ?? []
        let names = stride(from: 0, to: flat.count - 1, by: 2).compactMap { flat[$0].string }
        records += names.contains("v") ? names.filter { $0 == "r" }.count : 1
      }
      total += first.isEmpty ? Int(entries) : Int((Double(records) / Double(first.count) * Double(entries)).rounded())
    }
    return total
  }
}
