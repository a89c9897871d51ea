import Foundation
import NovaCore
import NovaQueue
import NovaRedis
import Synchronization

/// The queue backend for workers on many hosts: the same contract as `SQLiteJobQueue`, on Redis
/// (or Valkey). Every state change is one Lua script; enqueue, claim, complete and heartbeat
/// take many jobs per call.
public final class RedisJobQueue: JobQueue, JobLogStore {
  /// Settings of a Redis queue.
  public struct Configuration: Sendable {
    public var client: RedisClient.Configuration
    public var retryPolicy: RetryPolicy
    public var clock: any NovaClock
    /// First part of every key.
    public var keyPrefix: String
    /// Write an audit record of every state change (in each queue's `audit` stream).
    public var audit: Bool
    /// Leases, delays and reaping follow Redis's own clock (`TIME` inside the scripts), so hosts
    /// whose clocks differ agree; false follows `clock` (tests that move time by hand).
    public var serverTime: Bool

    public init(
      client: RedisClient.Configuration, retryPolicy: RetryPolicy = RetryPolicy(),
      clock: any NovaClock = SystemClock(), keyPrefix: String = "nova", audit: Bool = true, serverTime: Bool = true
    ) {
      self.client = client
      self.retryPolicy = retryPolicy
      self.clock = clock
      self.keyPrefix = keyPrefix
      self.audit = audit
      self.serverTime = serverTime
    }
  }

  public let configuration: Configuration
  /// The underlying client (for tests and tools).
  public let client: RedisClient
  /// Every call to Redis goes through here: bounded by the caller's deadline, errors translated.
  let redis: RedisStoreBoundary
  private let knownQueues = Mutex<Set<String>>([])
  /// Queues whose `state:available` set, left by a build before the `available` set served
  /// listings, this process has deleted (once each, not at every purge).
  private let cleanedQueues = Mutex<Set<String>>([])
  private let wake = WakeSignal()
  /// Single enqueues that arrive while one is out go together.
  private let coalescer = EnqueueCoalescer()
  /// Ids strictly increase in enqueue order (the available set orders equal priorities by id).
  private let ids = JobID.Generator()

  public init(configuration: Configuration) {
    self.configuration = configuration
    client = RedisClient(configuration: configuration.client)
    redis = RedisStoreBoundary(client: client)
  }

  /// A queue on the Redis at `url` (`redis://…`).
  public convenience init(url: String) throws {
    self.init(configuration: Configuration(client: .init(url: try RedisURL(parsing: url))))
  }

  /// Checks that Redis answers (and fails with a clear error when it does not).
  public func ping() async throws {
    let reply = try await redis.send("PING")
    guard reply.string == "PONG" else { throw RedisStoreBoundary.badReply("PING answered \(reply)") }
  }

  /// Closes the connections.
  public func close() { client.close() }

  /// Deletes every key under this queue's prefix (for benchmarks and tests on a shared Redis).
  public func deleteAllKeys() async throws {
    var cursor = "0"
    repeat {
      let reply = try await redis.send("SCAN", .string(cursor), "MATCH", .string("\(configuration.keyPrefix):*"), "COUNT", 1000)
      guard let parts = reply.elements, parts.count == 2 else { throw RedisStoreBoundary.badReply("SCAN returned \(reply)") }
      cursor = parts[0].string ?? "0"
      let keys = (parts[1].elements ?? []).compactMap(\.string)
      if !keys.isEmpty { _ = try await redis.send(["UNLINK"] + keys.map { .string($0) }) }
    } while cursor != "0"
  }

  private var now: Int64 { Self.millis(configuration.clock.now()) }
  /// The scripts' `now`: empty for Redis's own clock.
  private var scriptNow: RESPArgument { configuration.serverTime ? "" : .int(now) }
  private static func millis(_ date: Date) -> Int64 { date.millisecondsSince1970 }
  private static func date(_ millis: Int64) -> Date { Date(millisecondsSince1970: millis) }

  func prefix(_ queue: String) -> RESPArgument { .string("\(configuration.keyPrefix):{\(queue)}:") }
  private var queuesKey: RESPArgument { .string("\(configuration.keyPrefix):queues") }
  /// Incremented by every enqueue that makes jobs available: what idle workers on other hosts watch.
  private var enqueuedKey: RESPArgument { .string("\(configuration.keyPrefix):enqueued") }

  private func run(_ script: RedisScript, queue: String, _ arguments: [RESPArgument], extraKeys: [RESPArgument] = []) async throws
    -> RESPValue
  {
    // The acting name goes last: the scripts' audit records carry it ('' records nothing).
    let actor: RESPArgument = .string(configuration.audit ? AuditContext.actor : "")
    return try await redis.evaluate(script, keys: [prefix(queue)] + extraKeys, arguments: arguments + [actor])
  }

  func allQueues() async throws -> [String] {
    let reply = try await redis.send("SMEMBERS", queuesKey)
    let names = (reply.elements ?? []).compactMap(\.string)
    knownQueues.withLock { $0.formUnion(names) }
    return names.sorted()
  }

  /// The sorted set (after the queue's prefix) that holds a queue's jobs in `state`.
  static func set(of state: JobState) -> String {
    switch state {
    case .running: "running"
    case .available: "available"
    default: "state:\(state.rawValue)"
    }
  }

  // MARK: - Parsing

  /// A job from its hash (HGETALL); the queue is not stored in it, the caller knows it.
  static func job(from reply: RESPValue) throws -> Job {
    guard let elements = reply.elements, !elements.isEmpty else { throw RedisStoreBoundary.badReply("empty job hash") }
    var fields: [String: RESPValue] = [:]
    for index in stride(from: 0, to: elements.count - 1, by: 2) {
      if let key = elements[index].string { fields[key] = elements[index + 1] }
    }
    func text(_ key: String) -> String? { fields[key]?.string }
    // Empty values mean none (completion blanks lease_expires_at rather than deleting it).
    func int(_ key: String) -> Int64? { text(key).flatMap { Int64($0) } }
    func bytes(_ key: String) -> Data? {
      if case .bulkString(let value?)? = fields[key] { return Data(value) }
      return text(key).map { Data($0.utf8) }
    }
    guard let id = text("id"), let kind = text("kind"), let stateText = text("state"),
      let state = JobState(rawValue: stateText)
    else { throw RedisStoreBoundary.badReply("job hash without id, kind or state") }
    return Job(
      id: JobID(id), queue: "", kind: kind, payload: bytes("payload") ?? Data("{}".utf8),
      priority: Int(int("priority") ?? 0), state: state, runAt: date(int("run_at") ?? 0),
      attempts: Int(int("attempts") ?? 0), maxAttempts: Int(int("max_attempts") ?? 1), idempotencyKey: text("idem"),
      createdAt: date(int("created_at") ?? 0), updatedAt: date(int("updated_at") ?? 0),
      startedAt: int("started_at").map(date), finishedAt: int("finished_at").map(date), result: bytes("result"),
      lastError: text("last_error"), leaseOwner: text("lease_owner"),
      leaseExpiresAt: int("lease_expires_at").map(date), fencingToken: int("token") ?? 0,
      requirements: try text("req").flatMap { $0.isEmpty ? nil : try JobRequirements.decoded($0) },
      placement: try text("placement").flatMap { $0.isEmpty ? nil : try JobPlacement.decoded($0) }, concurrencyKey: text("ckey"),
      keyLimits: text("kmax") == nil && text("krate") == nil
        ? nil : KeyLimits(maxRunning: text("kmax").flatMap { Int($0) }, ratePerSecond: text("krate").flatMap { Double($0) }))
  }

  /// A lease from a claim's reply (the fields of `RedisQueueScripts.claimFields`, by position).
  static func lease(from reply: RESPValue, queue: String, worker: String, now: Int64, expires: Int64) throws -> JobLease {
    guard let f = reply.elements, f.count == RedisQueueScripts.claimFields.count, let id = f[0].string, let kind = f[1].string
    else { throw RedisStoreBoundary.badReply("claim returned \(reply)") }
    var payload = Data("{}".utf8)
    if case .bulkString(let bytes?) = f[2] { payload = Data(bytes) }
    let token = f[9].int ?? 0
    let job = Job(
      id: JobID(id), queue: queue, kind: kind, payload: payload, priority: Int(f[3].int ?? 0), state: .running,
      runAt: date(f[4].int ?? now), attempts: Int(f[5].int ?? 1), maxAttempts: Int(f[6].int ?? 1),
      idempotencyKey: f[7].string, createdAt: date(f[8].int ?? now), updatedAt: date(now), startedAt: date(now),
      leaseOwner: worker, leaseExpiresAt: date(expires), fencingToken: token,
      requirements: try f[11].string.flatMap { $0.isEmpty ? nil : try JobRequirements.decoded($0) },
      placement: try f[12].string.flatMap { $0.isEmpty ? nil : try JobPlacement.decoded($0) }, concurrencyKey: f[13].string)
    return JobLease(job: job, token: token, worker: worker, expiresAt: date(expires), started: f[10].string != "0")
  }

  private static func job(from reply: RESPValue, queue: String) throws -> Job {
    var job = try job(from: reply)
    job.queue = queue
    return job
  }

  private func mapScriptError(_ error: any Error, id: JobID, action: String) -> any Error {
    guard case RedisError.server(let message) = error, message.hasPrefix("NOVA ") else { return error }
    if message == "NOVA notfound" { return NovaError.jobNotFound(id) }
    if message.hasPrefix("NOVA state "), let state = JobState(rawValue: String(message.dropFirst("NOVA state ".count))) {
      return NovaError.invalidState(id, state, action)
    }
    return NovaError.storage("redis at \(redis.location) answered \(action) of job \(id) with '\(message)'")
  }

  // MARK: - Enqueue

  public func enqueue(_ request: JobRequest) async throws -> EnqueueResult {
    let actor = AuditContext.actor
    let deadline = StoreDeadline.current
    let key = EnqueueCoalescer.Key(queue: request.queue, actor: actor, bounded: deadline != nil)
    return try await coalescer.enqueue(request, key: key, deadline: deadline) { requests, deadline in
      try await AuditContext.$actor.withValue(actor) {
        try await StoreDeadline.$current.withValue(deadline) { try await self.enqueue(batch: requests) }
      }
    }
  }

  public func enqueue(batch requests: [JobRequest]) async throws -> [EnqueueResult] {
    if requests.isEmpty { return [] }
    let nowDate = configuration.clock.now()
    let now = Self.millis(nowDate)
    let scriptNow: RESPArgument = configuration.serverTime ? "" : .int(now)
    knownQueues.withLock { $0.formUnion(requests.map(\.queue)) }
    // Ids are made here, so a call retried after a dropped connection finds its jobs instead
    // of adding them twice.
    var results = [EnqueueResult?](repeating: nil, count: requests.count)
    let byQueue = Dictionary(grouping: requests.indices, by: { requests[$0].queue })
    for (queue, indices) in byQueue.sorted(by: { $0.key < $1.key }) {
      var arguments: [RESPArgument] = [scriptNow, .int(indices.count)]
      arguments.reserveCapacity(2 + indices.count * 12)
      for index in indices {
        let request = requests[index]
        // A delay rather than an instant: the script adds it to its own clock.
        let delay = max(Self.millis(request.runAt ?? nowDate) - now, 0)
        arguments += [
          .string(ids.next(now: nowDate).rawValue), .string(request.kind), .bytes(Array(request.payload)),
          .int(request.priority), .int(-request.priority), .int(delay), .int(request.maxAttempts),
          .string(request.idempotencyKey ?? ""), .string(request.requirements?.encoded() ?? ""),
          .string(request.concurrencyKey ?? ""),
          .string(request.concurrencyKey == nil ? "" : request.keyLimits?.maxRunning.map(String.init) ?? ""),
          .string(request.concurrencyKey == nil ? "" : request.keyLimits?.ratePerSecond.map { String($0) } ?? ""),
        ]
      }
      let reply = try await run(RedisQueueScripts.enqueue, queue: queue, arguments, extraKeys: [queuesKey, enqueuedKey])
      if let values = reply.elements, values.count == 4, values[1].string == "conflict", let held = values[0].string {
        throw NovaError.idempotencyConflict(key: values[3].string ?? "", existing: JobID(held))
      }
      guard let values = reply.elements, values.count == indices.count * 3 else {
        throw RedisStoreBoundary.badReply("enqueue returned \(reply)")
      }
      for (position, index) in indices.enumerated() {
        let base = position * 3
        results[index] = EnqueueResult(
          id: JobID(values[base].string ?? ""), state: JobState(rawValue: values[base + 1].string ?? "") ?? .available,
          existing: values[base + 2].int == 1)
      }
    }
    wake.signal()
    return results.map { $0! }
  }

  // MARK: - Claim

  public func claim(_ request: ClaimRequest) async throws -> [JobLease] {
    let (queues, worker, limit, starting) = (request.queues, request.worker, request.limit, request.starting)
    guard limit > 0 else { return [] }
    let names = queues.isEmpty ? try await allQueues() : queues
    guard !names.isEmpty else { return [] }
    var counts: [(String, Int)] = [(names[0], limit)]
    let kinds = request.kinds.patterns.map(Self.luaPattern)
    if names.count > 1 && !kinds.isEmpty {
      // The peek below cannot see kinds: a filtered claim asks each queue in turn for what is
      // still missing.
      counts = names.map { ($0, limit) }
    } else if names.count > 1 {
      // Peek at each queue's best jobs, then take the best `limit` over all of them (shared by
      // weight when any queue has one).
      let replies = try await redis.pipeline(
        names.map { ["ZRANGE", .string("\(configuration.keyPrefix):{\($0)}:available"), 0, .int(limit - 1), "WITHSCORES"] }
          + names.map { ["HMGET", .string("\(configuration.keyPrefix):{\($0)}:settings"), "weight", "served", "paused"] })
      let weights = replies.dropFirst(names.count).map { reply -> (weight: Int, served: Int64, paused: Bool) in
        let fields = ((try? reply.checked().elements) ?? []).map(\.string)
        return (
          Int(fields.first.flatMap { $0 } ?? "") ?? 1, Int64(fields.dropFirst().first.flatMap { $0 } ?? "") ?? 0,
          fields.dropFirst(2).first.flatMap { $0 } == "1"
        )
      }
      // A paused queue's jobs are not counted: the others take its share.
      let peeks = zip(replies.prefix(names.count), weights).map { $1.paused ? RESPValue.array([]) : $0 }
      var candidates: [(queue: String, id: String, score: Double)] = []
      for (name, reply) in zip(names, peeks) {
        let values = try reply.checked().elements ?? []
        for index in stride(from: 0, to: values.count - 1, by: 2) {
          guard let id = values[index].string, let score = values[index + 1].string.flatMap(Double.init) else { continue }
          candidates.append((name, id, score))
        }
      }
      candidates.sort { $0.score != $1.score ? $0.score < $1.score : $0.id < $1.id }
      var perQueue: [String: Int] = [:]
      if weights.contains(where: { $0.weight != 1 }) {
        let available = Dictionary(grouping: candidates, by: \.queue).mapValues(\.count)
        perQueue = WeightedShare.split(
          limit: limit, queues: zip(names, weights).map { ($0, $1.weight, $1.served, available[$0] ?? 0) })
      } else {
        for candidate in candidates.prefix(limit) { perQueue[candidate.queue, default: 0] += 1 }
      }
      // Queues with nothing available still get a call of their own when others are short,
      // so that their due delayed jobs are promoted.
      counts = names.map { ($0, perQueue[$0] ?? 0) }
    }
    let leaseMillis = Int64(request.leaseDuration.seconds * 1000)
    let kindArguments: [RESPArgument] = [.int(kinds.count)] + kinds.map { RESPArgument.string($0) }
    // The client retries a call whose reply was lost; the claim id makes that retry return the
    // batch the first call leased instead of leasing a second one that nobody would hold.
    let claimID = UUID().uuidString
    var leases: [JobLease] = []
    var toStart = starting
    // What is still free as jobs are placed, over every queue of this claim.
    var walk = PlacementWalk(free: request.capacity, total: request.reserveAfter == nil ? nil : request.totalCapacity)
    let patience = request.reserveAfter.map { Int64($0.seconds * 1000) } ?? -1
    // What is free, in brief, for the script to leave out jobs that cannot fit (see `claim`).
    func brief(full: Bool) -> RESPArgument {
      guard let free = walk.free else { return "" }
      let memories = free.gpus.map(\.memory_mib)
      return .string(
        "\(free.gpus.count) \(free.cpus) \(free.memory_mib) \(memories.min() ?? 0) \(memories.max() ?? 0) \(patience) \(full ? 1 : 0)")
    }
    func claim(_ queue: String, count: Int, starting: Int, round: Int) async throws {
      let head: [RESPArgument] = [
        scriptNow, .int(count), .string(worker), .int(leaseMillis), .int(max(0, starting)), .string("\(claimID)/\(round)"),
      ]
      var reply = try await run(RedisQueueScripts.claim, queue: queue, head + kindArguments + [brief(full: false)])
      let before = walk
      var full = false
      while let items = reply.elements, items.first?.string == "place" {
        // Jobs that ask for something wait: the script listed the queue's first jobs that may
        // fit, placed here in order on what is free, and the picked ones are leased if still
        // available.
        var picked: [RESPArgument] = []
        var reserved: [RESPArgument] = []
        let now = items.count > 1 ? items[1].int ?? 0 : 0
        let endedEarly = items.count > 2 && items[2].string == "1"
        let starvingSince = request.reserveAfter.map { now - Int64($0.seconds * 1000) }
        for index in stride(from: 3, to: items.count - 4, by: 5) where picked.count < count * 2 {
          guard let id = items[index].string else { continue }
          let text = items[index + 1].string ?? ""
          let runAt = items[index + 2].int ?? 0
          let reservedBy = items[index + 3].string ?? ""
          let reservable = reservedBy.isEmpty || reservedBy == worker || (items[index + 4].int ?? 0) <= now
          let starving = starvingSince.map { runAt <= $0 } ?? false
          switch try walk.admit(stored: text.isEmpty ? nil : text, starving: starving, reservable: reservable) {
          case .take(let placement): picked += [.string(id), .string(placement?.encoded() ?? "")]
          case .reserve: reserved.append(.string(id))
          case .pass: break
          }
        }
        if endedEarly, !full, picked.count < count * 2 {
          // The script counted on a job that does not fit here after all: look again, at all.
          full = true
          walk = before
          reply = try await run(RedisQueueScripts.claim, queue: queue, head + kindArguments + [brief(full: true)])
          continue
        }
        reply = try await run(
          RedisQueueScripts.claimPlaced, queue: queue, head + [.int(picked.count / 2)] + picked + [.int(reserved.count)] + reserved)
      }
      guard let items = reply.elements, items.count >= 2, let now = items[0].int, let expires = items[1].int else {
        throw RedisStoreBoundary.badReply("claim returned \(reply)")
      }
      for item in items.dropFirst(2) {
        leases.append(try Self.lease(from: item, queue: queue, worker: worker, now: now, expires: expires))
      }
    }
    for (queue, count) in counts {
      let wanted = kinds.isEmpty ? count : min(count, limit - leases.count)
      let before = leases.count
      try await claim(queue, count: wanted, starting: toStart, round: 1)
      toStart -= kinds.isEmpty ? count : leases.count - before
    }
    // (A filtered claim already asked every queue for all it wants.)
    if counts.count > 1 && leases.isEmpty && kinds.isEmpty {
      // Promotion may just have made jobs available.
      for (queue, _) in counts where leases.count < limit {
        try await claim(queue, count: limit - leases.count, starting: starting - leases.count, round: 2)
      }
    }
    leases.sort { $0.job.priority != $1.job.priority ? $0.job.priority > $1.job.priority : $0.job.id < $1.job.id }
    return leases
  }

  /// A kind pattern as an anchored Lua pattern (`.` and `-`, kind characters, are magic in Lua).
  static func luaPattern(_ pattern: String) -> String {
    var lua = "^"
    for character in pattern {
      switch character {
      case "*": lua += ".*"
      case ".", "-": lua += "%\(character)"
      default: lua.append(character)
      }
    }
    return lua + "$"
  }

  // MARK: - Leases

  public func start(_ leases: [JobLease]) async throws {
    for (queue, group) in Dictionary(grouping: leases, by: { $0.job.queue }) {
      var arguments: [RESPArgument] = [.int(group.count)]
      for lease in group { arguments += [.string(lease.id.rawValue), .int(lease.token)] }
      _ = try await run(RedisQueueScripts.start, queue: queue, arguments)
    }
  }

  public func heartbeat(_ leases: [JobLease], leaseDuration: Duration) async throws -> [JobID: HeartbeatOutcome] {
    if leases.isEmpty { return [:] }
    var outcomes: [JobID: HeartbeatOutcome] = [:]
    for (queue, group) in Dictionary(grouping: leases, by: \.job.queue) {
      var arguments: [RESPArgument] = [scriptNow, .int(Int64(leaseDuration.seconds * 1000)), .int(group.count)]
      for lease in group { arguments += [.string(lease.id.rawValue), .int(lease.token)] }
      let reply = try await run(RedisQueueScripts.heartbeat, queue: queue, arguments)
      guard let items = reply.elements, let expires = items.first?.int else {
        throw RedisStoreBoundary.badReply("heartbeat returned \(reply)")
      }
      for (lease, value) in zip(group, items.dropFirst()) {
        switch value.string {
        case "ok": outcomes[lease.id] = .extended(Self.date(expires))
        case "cancelled": outcomes[lease.id] = .cancelled
        default: outcomes[lease.id] = .lost
        }
      }
    }
    return outcomes
  }

  public func complete(batch: [JobCompletion]) async throws -> [Bool] {
    if batch.isEmpty { return [] }
    let now = scriptNow
    var recorded = [Bool](repeating: false, count: batch.count)
    let byQueue = Dictionary(grouping: batch.indices, by: { batch[$0].lease.job.queue })
    for (queue, indices) in byQueue {
      var arguments: [RESPArgument] = [now, .int(indices.count)]
      arguments.reserveCapacity(2 + indices.count * 3)
      for index in indices {
        let entry = batch[index]
        let result: RESPArgument = entry.result.map { .bytes([UInt8(ascii: "=")] + Array($0)) } ?? .string("")
        arguments += [.string(entry.lease.id.rawValue), .int(entry.lease.token), result]
      }
      let reply = try await run(RedisQueueScripts.complete, queue: queue, arguments)
      for (index, value) in zip(indices, reply.elements ?? []) { recorded[index] = value.int == 1 }
    }
    return recorded
  }

  public func fail(_ lease: JobLease, error: String, retryable: Bool, retryIn: Duration?) async throws -> FailOutcome {
    var policy = configuration.retryPolicy
    if let retryIn {
      // The script's backoff with its bounds both at `retryIn` and no jitter is `retryIn`.
      policy = RetryPolicy(baseDelay: retryIn.seconds, maxDelay: retryIn.seconds, jitter: 0)
    }
    let reply = try await run(
      RedisQueueScripts.fail, queue: lease.job.queue,
      [
        scriptNow, .string(lease.id.rawValue), .int(lease.token), .string(error), retryable ? "1" : "0",
        .int(Int64(policy.baseDelay * 1000)), .int(Int64(policy.maxDelay * 1000)), .string(String(policy.jitter)),
        .string(String(Double.random(in: 0..<1))),
      ])
    let values = reply.elements ?? []
    switch values.first?.string {
    case "retry": return .retryScheduled(Self.date(values.count > 1 ? values[1].int ?? 0 : 0))
    case "dead": return .dead
    default: throw NovaError.leaseLost(lease.id)
    }
  }

  public func release(_ lease: JobLease) async throws {
    if try await release(batch: [lease]) != 1 { throw NovaError.leaseLost(lease.id) }
  }

  public func release(batch leases: [JobLease]) async throws -> Int {
    var released = 0
    for (queue, group) in Dictionary(grouping: leases, by: { $0.job.queue }) {
      var arguments: [RESPArgument] = [scriptNow, .int(group.count)]
      for lease in group { arguments += [.string(lease.id.rawValue), .int(lease.token)] }
      released += Int(try await run(RedisQueueScripts.release, queue: queue, arguments).int ?? 0)
    }
    if released > 0 { wake.signal() }
    return released
  }

  // MARK: - Operator actions

  /// The queue a job lives in (ids do not name it, so every known queue is asked at once).
  // MARK: - Logs

  /// Each job's output is a list `log:<id>` beside the job (deleted with it by the purge); an
  /// element is `attempt|stream|time ms|bytes`, and its sequence is its position plus one.
  public func appendLogs(_ chunks: [JobLogChunk]) async throws {
    if chunks.isEmpty { return }
    var commands: [[RESPArgument]] = []
    for (key, group) in Dictionary(grouping: chunks, by: { "\(configuration.keyPrefix):{\($0.queue)}:log:\($0.job.rawValue)" }) {
      var command: [RESPArgument] = ["RPUSH", .string(key)]
      for chunk in group {
        command.append(.bytes(Array("\(chunk.attempt)|\(chunk.stream.rawValue)|\(chunk.time.millisecondsSince1970)|".utf8) + chunk.data))
      }
      commands.append(command)
    }
    for reply in try await redis.pipeline(commands) {
      if case .error(let message) = reply { throw NovaError.storage("keeping job output: \(message)") }
    }
  }

  public func logs(of id: JobID, attempt: Int?, after sequence: Int64, limit: Int) async throws -> [JobLogChunk] {
    guard id.isWellFormed, let queue = try await queueOf(id) else { return [] }
    let key = RESPArgument.string("\(configuration.keyPrefix):{\(queue)}:log:\(id.rawValue)")
    var chunks: [JobLogChunk] = []
    var next = sequence
    // Read on past other attempts' chunks until `limit` of the one asked for, or the end.
    while chunks.count < limit {
      let reply = try await redis.send("LRANGE", key, .string(String(next)), .string(String(next + Int64(limit) - 1)))
      let elements = reply.elements ?? []
      for element in elements {
        next += 1
        guard case .bulkString(let bytes?) = element, let chunk = Self.logChunk(bytes, job: id, queue: queue, sequence: next) else {
          continue
        }
        if attempt == nil || chunk.attempt == attempt { chunks.append(chunk) }
        if chunks.count == limit { break }
      }
      if elements.count < limit { break }
    }
    return chunks
  }

  static func logChunk(_ bytes: [UInt8], job: JobID, queue: String, sequence: Int64) -> JobLogChunk? {
    var fields: [Substring] = []
    var start = 0
    for (index, byte) in bytes.enumerated() where byte == UInt8(ascii: "|") {
      fields.append(Substring(decoding: bytes[start..<index], as: UTF8.self))
      start = index + 1
      if fields.count == 3 { break }
    }
    guard fields.count == 3, let attempt = Int(fields[0]), let stream = JobLogStream(rawValue: String(fields[1])),
      let millis = Int64(fields[2])
    else { return nil }
    return JobLogChunk(
      job: job, queue: queue, attempt: attempt, stream: stream, sequence: sequence, data: Data(bytes[start...]),
      time: Date(millisecondsSince1970: millis))
  }

  private func queueOf(_ id: JobID) async throws -> String? {
    let names = try await allQueues()
    if names.isEmpty { return nil }
    let replies = try await redis.pipeline(names.map { ["EXISTS", .string("\(configuration.keyPrefix):{\($0)}:job:\(id.rawValue)")] })
    for (name, reply) in zip(names, replies) where reply.int == 1 { return name }
    return nil
  }

  public func delete(_ jobs: [(id: JobID, queue: String)]) async throws -> Int {
    var deleted = 0
    for (queue, group) in Dictionary(grouping: jobs, by: \.queue) {
      for chunk in stride(from: 0, to: group.count, by: 500).map({ group[$0..<min(group.count, $0 + 500)] }) {
        let reply = try await run(RedisQueueScripts.delete, queue: queue, chunk.map { .string($0.id.rawValue) })
        guard let count = reply.int else { throw RedisStoreBoundary.badReply("delete returned \(reply)") }
        deleted += Int(count)
      }
    }
    return deleted
  }

  public func cancel(_ id: JobID) async throws -> Job {
    guard let queue = try await queueOf(id) else { throw NovaError.jobNotFound(id) }
    do {
      return try Self.job(from: try await run(RedisQueueScripts.cancel, queue: queue, [scriptNow, .string(id.rawValue)]), queue: queue)
    } catch {
      throw mapScriptError(error, id: id, action: "cancel")
    }
  }

  public func retry(_ id: JobID) async throws -> Job {
    guard let queue = try await queueOf(id) else { throw NovaError.jobNotFound(id) }
    do {
      // The request id lets a call retried after a lost reply find its own change done.
      let arguments: [RESPArgument] = [scriptNow, .string(id.rawValue), .string(UUID().uuidString)]
      let job = try Self.job(from: try await run(RedisQueueScripts.retry, queue: queue, arguments), queue: queue)
      wake.signal()
      return job
    } catch {
      throw mapScriptError(error, id: id, action: "retry")
    }
  }

  // MARK: - Maintenance

  public func reapExpiredLeases() async throws -> ReapResult {
    var result = ReapResult()
    let now = scriptNow
    for queue in try await allQueues() {
      let reply = try await run(RedisQueueScripts.reap, queue: queue, [now])
      var dead = false
      for value in reply.elements ?? [] {
        guard let id = value.string else { continue }
        if id == "|" {
          dead = true
        } else if dead {
          result.dead.append(JobID(id))
        } else {
          result.requeued.append(JobID(id))
        }
      }
    }
    if !result.requeued.isEmpty { wake.signal() }
    return result
  }

  public func purgeFinished(before: Date, deadBefore: Date?) async throws -> Int {
    var total = 0
    var targets: [(state: String, before: Date)] = [("succeeded", before), ("cancelled", before)]
    if let deadBefore { targets.append(("dead", deadBefore)) }
    for queue in try await allQueues() {
      if !cleanedQueues.withLock({ $0.contains(queue) }) {
        _ = try await redis.send("UNLINK", .string("\(configuration.keyPrefix):{\(queue)}:state:available"))
        cleanedQueues.withLock { _ = $0.insert(queue) }
      }
      for target in targets {
        var cursor = ""
        // A job finishes after it is made.
        let madeBy = JobID.upperBound(madeBy: target.before).rawValue
        repeat {
          let reply = try await run(
            RedisQueueScripts.purge, queue: queue,
            [.int(Self.millis(target.before)), .string(madeBy), .string(target.state), .string(cursor)])
          guard let parts = reply.elements, parts.count == 2 else { throw RedisStoreBoundary.badReply("purge returned \(reply)") }
          total += Int(parts[0].int ?? 0)
          cursor = parts[1].string ?? ""
        } while !cursor.isEmpty
      }
      // Per-key rate buckets that are full again (as good as absent).
      var cursor = "0"
      repeat {
        let reply = try await run(RedisQueueScripts.purgeKeyBuckets, queue: queue, [scriptNow, .string(cursor)])
        guard let parts = reply.elements, parts.count == 2, let next = parts[1].string else {
          throw RedisStoreBoundary.badReply("purgeKeyBuckets returned \(reply)")
        }
        cursor = next
      } while cursor != "0"
    }
    return total
  }

  // MARK: - Reads

  public func stats() async throws -> QueueStats {
    let names = try await allQueues()
    var commands: [[RESPArgument]] = []
    for name in names {
      for state in JobState.allCases {
        commands.append(["ZCARD", .string("\(configuration.keyPrefix):{\(name)}:\(Self.set(of: state))")])
      }
      commands.append(["HGETALL", .string("\(configuration.keyPrefix):{\(name)}:kinds")])
    }
    let replies = try await redis.pipeline(commands)
    var counts: [String: [JobState: Int]] = [:]
    var byKind: [String: [String: Int]] = [:]
    var index = 0
    for name in names {
      var row: [JobState: Int] = [:]
      for state in JobState.allCases {
        let count = Int(try replies[index].checked().int ?? 0)
        if count > 0 { row[state] = count }
        index += 1
      }
      counts[name] = row
      let pairs = try replies[index].checked().elements ?? []
      index += 1
      for at in stride(from: 0, to: pairs.count - 1, by: 2) {
        if let kind = pairs[at].string, let count = pairs[at + 1].int, count > 0 { byKind[name, default: [:]][kind] = Int(count) }
      }
    }
    return QueueStats(counts: counts, availableByKind: byKind, workers: try await liveWorkers())
  }

  private var workersKey: RESPArgument { .string("\(configuration.keyPrefix):workers") }

  /// The announcements that have not lapsed.
  private func liveWorkers() async throws -> [WorkerPresence] {
    let now = configuration.clock.now()
    return try await workers().filter { !$0.lapsed(at: now) }
  }

  /// Every announcement kept; those lapsed longer than the registry keeps them are deleted on
  /// the way.
  public func workers() async throws -> [WorkerPresence] {
    let reply = try await redis.send("HGETALL", workersKey)
    let pairs = reply.elements ?? []
    let forgetBefore = configuration.clock.now().addingTimeInterval(-WorkerPresence.retention)
    var kept: [WorkerPresence] = []
    var forgotten: [RESPArgument] = []
    for at in stride(from: 0, to: pairs.count - 1, by: 2) {
      guard let name = pairs[at].string else { continue }
      if case .bulkString(let bytes?) = pairs[at + 1], let presence = WorkerPresence.decoded(Data(bytes)), presence.expiresAt > forgetBefore {
        kept.append(presence)
      } else {
        forgotten.append(.string(name))
      }
    }
    if !forgotten.isEmpty { _ = try await redis.send(["HDEL", workersKey] + forgotten) }
    return kept.sorted { $0.worker < $1.worker }
  }

  public func controls() async throws -> [String: QueueControls] {
    let names = try await allQueues()
    if names.isEmpty { return [:] }
    let replies = try await redis.pipeline(
      names.map {
        [
          "HMGET", .string("\(configuration.keyPrefix):{\($0)}:settings"), "paused", "max_running", "rate", "weight", "max_running_per_key",
          "rate_per_key",
        ]
      })
    var all: [String: QueueControls] = [:]
    for (name, reply) in zip(names, replies) {
      let fields = (try reply.checked().elements ?? []).map(\.string)
      func field(_ index: Int) -> String? { index < fields.count ? fields[index] : nil }
      all[name] = QueueControls(
        paused: field(0) == "1", maxRunning: field(1).flatMap { Int($0) }, ratePerSecond: field(2).flatMap { Double($0) },
        weight: field(3).flatMap { Int($0) } ?? 1, maxRunningPerKey: field(4).flatMap { Int($0) },
        ratePerKey: field(5).flatMap { Double($0) })
    }
    return all
  }

  public func setControls(_ controls: QueueControls, queue: String) async throws {
    try controls.validate()
    try JobRequest.validateName(queue, field: "queue")
    knownQueues.withLock { _ = $0.insert(queue) }
    let key = RESPArgument.string("\(configuration.keyPrefix):{\(queue)}:settings")
    let before = try await redis.send("HGET", key, "rate").string
    var commands: [[RESPArgument]] = [
      ["SADD", queuesKey, .string(queue)],
      ["HSET", key, "paused", controls.paused ? "1" : "0", "weight", .int(controls.weight)],
    ]
    commands.append(controls.maxRunning.map { ["HSET", key, "max_running", .int($0)] } ?? ["HDEL", key, "max_running"])
    let rate = controls.ratePerSecond.map { String($0) }
    commands.append(rate.map { ["HSET", key, "rate", .string($0)] } ?? ["HDEL", key, "rate"])
    commands.append(controls.maxRunningPerKey.map { ["HSET", key, "max_running_per_key", .int($0)] } ?? ["HDEL", key, "max_running_per_key"])
    commands.append(controls.ratePerKey.map { ["HSET", key, "rate_per_key", .string(String($0))] } ?? ["HDEL", key, "rate_per_key"])
    // A new rate starts with a full bucket.
    if before != rate { commands.append(["HDEL", key, "tokens", "refilled_at"]) }
    for reply in try await redis.pipeline(commands) { _ = try reply.checked() }
    wake.signal()
  }

  public func announce(_ presence: WorkerPresence) async throws {
    _ = try await redis.send("HSET", workersKey, .string(presence.worker), .bytes(Array(try presence.encoded())))
  }

  public func withdraw(worker: String) async throws {
    _ = try await redis.send("HDEL", workersKey, .string(worker))
  }

  public func get(_ id: JobID) async throws -> Job? {
    guard id.isWellFormed, let queue = try await queueOf(id) else { return nil }
    let reply = try await redis.send("HGETALL", .string("\(configuration.keyPrefix):{\(queue)}:job:\(id.rawValue)"))
    if (reply.elements ?? []).isEmpty { return nil }
    return try Self.job(from: reply, queue: queue)
  }

  public func list(_ filter: JobFilter) async throws -> JobPage {
    try filter.validate()
    let names: [String]
    if let queue = filter.queue { names = [queue] } else { names = try await allQueues() }
    if let key = filter.idempotencyKey {
      // Each queue keeps its idempotency keys in a hash: one look-up per queue.
      let replies = try await redis.pipeline(names.map { ["HGET", .string("\(configuration.keyPrefix):{\($0)}:idem"), .string(key)] })
      var jobs: [Job] = []
      for (name, reply) in zip(names, replies) {
        guard let id = try reply.checked().string else { continue }
        let hash = try await redis.send("HGETALL", .string("\(configuration.keyPrefix):{\(name)}:job:\(id)"))
        guard !(hash.elements ?? []).isEmpty else { continue }
        let job = try Self.job(from: hash, queue: name)
        if filter.matches(job), filter.state.map({ $0 == job.state }) ?? true, filter.cursor.map({ id < $0 }) ?? true { jobs.append(job) }
      }
      return JobPage(newestFirst: jobs.sorted { $0.id.rawValue > $1.id.rawValue }, limit: filter.limit)
    }
    // Newest first by id: each state set is ordered by id (creation time); the running set is
    // small and sorted here; without a state filter, every set is read and merged.
    let states = filter.state.map { [$0] } ?? JobState.allCases
    var ids: [(queue: String, id: String)] = []
    // A filter that looks inside jobs reads about 2,000 of them per page at most (spread over
    // the sets); a page that finds fewer matches says where to go on (its cursor).
    let fetch = filter.looksInsideJobs ? max(filter.limit + 1, 2000 / max(1, names.count * states.count)) : filter.limit + 1
    var commands: [[RESPArgument]] = []
    var owners: [String] = []
    for name in names {
      let base = "\(configuration.keyPrefix):{\(name)}:"
      if states.contains(.running) {
        // The running set is ordered by lease expiry, not id: read whole, a page at a time.
        for id in try await members(of: base + "running") where filter.cursor.map({ id < $0 }) ?? true { ids.append((name, id)) }
      }
      for state in states where state != .running && state != .available {
        let upper: RESPArgument = filter.cursor.map { .string("(\($0)") } ?? "+"
        commands.append(["ZREVRANGEBYLEX", .string(base + "state:\(state.rawValue)"), upper, "-", "LIMIT", 0, .int(fetch)])
        owners.append(name)
      }
    }
    // Available jobs: the `available` set orders by priority first, a script reads it by id;
    // one call per queue, all at once (the order of the replies does not matter below).
    var availableReplies: [(String, RESPValue)] = []
    if states.contains(.available) {
      let cursor = filter.cursor ?? ""
      availableReplies = try await withThrowingTaskGroup(of: (String, RESPValue).self) { group in
        for name in names {
          group.addTask { (name, try await self.run(RedisQueueScripts.listAvailable, queue: name, [.string(cursor), .int(fetch)])) }
        }
        return try await group.reduce(into: []) { $0.append($1) }
      }
    }
    // A set that filled its `fetch` may hold more below its last id: the page covers only ids
    // down to the highest such last id, and continues from there (a kind filter can leave it
    // short of `limit`; the cursor still leads on).
    var floor: String?
    let replies = try await redis.pipeline(commands)
    for (name, reply) in zip(owners, replies) + availableReplies {
      let values = (try reply.checked().elements ?? []).compactMap(\.string)
      if values.count == fetch, let last = values.last, floor.map({ last > $0 }) ?? true { floor = last }
      for id in values { ids.append((name, id)) }
    }
    if let floor { ids.removeAll { $0.id < floor } }
    // A job that moved between two sets while they were read shows once.
    var listed = Set<String>()
    ids.removeAll { !listed.insert($0.queue + "\u{0}" + $0.id).inserted }
    ids.sort { $0.id > $1.id }
    var jobs: [Job] = []
    var position = 0
    while position < ids.count && jobs.count <= filter.limit {
      let chunk = ids[position..<min(ids.count, position + 200)]
      position += chunk.count
      let hashes = try await redis.pipeline(chunk.map { ["HGETALL", .string("\(configuration.keyPrefix):{\($0.queue)}:job:\($0.id)")] })
      for (entry, reply) in zip(chunk, hashes) where !(reply.elements ?? []).isEmpty {
        let job = try Self.job(from: reply, queue: entry.queue)
        if !filter.matches(job) { continue }
        jobs.append(job)
        if jobs.count > filter.limit { break }
      }
    }
    if jobs.count <= filter.limit, let floor { return JobPage(jobs: jobs, nextCursor: floor) }
    return JobPage(newestFirst: jobs, limit: filter.limit)
  }

  /// Every member of a sorted set, read a page at a time: one reply never holds more than
  /// `page` ids (a client refuses replies of over 1,048,576 elements, and a huge reply would
  /// block Redis while it is written). The `state:` sets (all scores 0) are paged by id, so
  /// changes between pages skip nothing; the `running` set (scored by expiry, reordered by every
  /// heartbeat) is paged by rank, the `available` set (scored by priority) scanned, and an id
  /// seen twice is kept once.
  func members(of key: String, page: Int = 10_000) async throws -> [String] {
    var all: [String] = []
    if key.hasSuffix(":available") {
      // Claims take from its front while it is read: ZSCAN returns every member that stays in
      // it for the whole scan (some perhaps twice), where pages by rank would skip some.
      var seen = Set<String>()
      var cursor = "0"
      repeat {
        let reply = try await redis.send("ZSCAN", .string(key), .string(cursor), "COUNT", .int(page))
        guard let parts = reply.elements, parts.count == 2, let next = parts[0].string else {
          throw RedisStoreBoundary.badReply("ZSCAN returned \(reply)")
        }
        let pairs = parts[1].elements ?? []
        for index in stride(from: 0, to: pairs.count, by: 2) {
          if let id = pairs[index].string, seen.insert(id).inserted { all.append(id) }
        }
        cursor = next
      } while cursor != "0"
      return all
    }
    if key.hasSuffix(":running") {
      var seen = Set<String>()
      var start = 0
      while true {
        let reply = try await redis.send("ZRANGE", .string(key), .int(start), .int(start + page - 1))
        let chunk = (reply.elements ?? []).compactMap(\.string)
        for id in chunk where seen.insert(id).inserted { all.append(id) }
        if chunk.count < page { return all }
        start += page
      }
    }
    var after: String?
    while true {
      let low: RESPArgument = after.map { .string("(" + $0) } ?? "-"
      let reply = try await redis.send("ZRANGEBYLEX", .string(key), low, "+", "LIMIT", 0, .int(page))
      let chunk = (reply.elements ?? []).compactMap(\.string)
      all += chunk
      if chunk.count < page { return all }
      after = chunk.last
    }
  }

  public func waitForJobs(timeout: Duration) async {
    // Jobs enqueued by this process wake the wait at once; other processes' enqueues move a
    // counter that one GET every few milliseconds watches (far cheaper than a claim).
    let deadline = ContinuousClock.now + timeout
    // Each look is bounded and a failed one ends the looking: with Redis down, the wait must
    // still end on time (a stopping worker waits in here).
    func enqueues() async -> Result<String?, any Error> {
      do {
        return .success(try await StoreDeadline.within(Self.crossProcessLookBound) { try await redis.send("GET", enqueuedKey).string })
      } catch {
        return .failure(error)
      }
    }
    guard case .success(let before) = await enqueues() else {
      await wake.wait(timeout: timeout)
      return
    }
    while ContinuousClock.now < deadline {
      if await wake.wait(timeout: min(Self.crossProcessTick, deadline - ContinuousClock.now)) { return }
      if Task.isCancelled { return }
      guard case .success(let now) = await enqueues() else {
        await wake.wait(timeout: max(.zero, deadline - ContinuousClock.now))
        return
      }
      if now != before { return }
    }
  }

  /// The longest one look at the enqueue counter may take.
  static let crossProcessLookBound: Duration = .milliseconds(250)

  /// How often an idle wait looks for other processes' enqueues.
  static let crossProcessTick: Duration = .milliseconds(10)
}
