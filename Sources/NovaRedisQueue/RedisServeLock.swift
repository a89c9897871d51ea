import Foundation
import NovaCore
import NovaRedis

/// The lock that keeps one `nova serve` per Redis (per key prefix): two break each other, since
/// leases sealed through one are refused through the other. It is the key `<prefix>:serve-lock`,
/// whose value names its holder; the holder renews it while it serves and deletes it when it
/// stops, so the lock of a server that died without deleting it lapses one TTL later.
public final class RedisServeLock: Sendable {
  /// Who holds the lock: the key's value (JSON), named to a server that is refused.
  public struct Holder: Codable, Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var pid: Int32
    /// Random per start, so that a server restarted with the same pid (pid 1 in a container)
    /// is not taken for the one before it.
    public var instance: String
    public var startedAt: String
    /// Where it serves HTTP, when known before it listens.
    public var listen: String?

    enum CodingKeys: String, CodingKey {
      case host, pid, instance, listen
      case startedAt = "started_at"
    }

    public init(host: String, pid: Int32, instance: String, startedAt: String, listen: String? = nil) {
      self.host = host
      self.pid = pid
      self.instance = instance
      self.startedAt = startedAt
      self.listen = listen
    }

    /// This process, started now.
    public static func current(listen: String? = nil) -> Holder {
      Holder(
        host: ProcessInfo.processInfo.hostName, pid: ProcessInfo.processInfo.processIdentifier,
        instance: String(UUID().uuidString.prefix(8)).lowercased(), startedAt: Date().formatted(.iso8601), listen: listen)
    }

    public var description: String {
      "host \(host), pid \(pid), started \(startedAt)" + (listen.map { ", listening on \($0)" } ?? "")
    }
  }

  /// Another server holds the lock: this one may not start, or (having lost it) go on serving.
  public struct Refused: Error, Sendable, CustomStringConvertible {
    /// The other holder; nil when the key holds something that Nova did not write.
    public let holder: Holder?
    /// The key's value as it was read.
    public let heldValue: String
    /// Milliseconds the other holder's lock had left; negative when the key has no expiry.
    public let remaining: Int64
    /// True when this server held the lock and lost it while serving.
    public let lostWhileServing: Bool
    /// The Redis (password hidden) and the key prefix the lock guards.
    public let redis: String
    public let keyPrefix: String
    public let key: String
    public let ttl: Duration

    public var description: String {
      let other =
        holder.map { "another nova serve (\($0))" } ?? "something that is not a nova serve (the lock's value is '\(heldValue.prefix(200))')"
      let place = "\(redis) (key prefix '\(keyPrefix)')"
      if lostWhileServing {
        return "this nova serve lost its lock on \(place) to \(other): its renewals failed for longer than the lock's "
          + "\(RedisServeLock.text(ttl)) (Redis unreachable, or this process paused) and the other took it; two on one Redis "
          + "break each other's leases, so this one stops"
      }
      if remaining < 0 {
        return "\(other) holds \(place), and the lock key \(key) has no expiry, so no nova serve set it (they always set one): "
          + "delete it (DEL \(key)) if no nova serve runs on this Redis"
      }
      return "\(other) holds \(place) and is running (it renewed its lock while this one watched); run one nova serve per Redis: "
        + "stop that one first (a stopped server gives the lock back; one that died loses it \(RedisServeLock.text(ttl)) later), "
        + "or give this one another Redis or database (redis://host:port/N)"
    }
  }

  /// What `keepRenewing` reports as it goes on.
  public enum Event: Sendable {
    /// A renewal failed; the lock lapses one TTL after the last renewal that worked.
    case renewalFailed(any Error)
    /// The lock had lapsed (renewals failed for a whole TTL, or Redis lost its data) and is held again.
    case retaken
  }

  /// The key, `<prefix>:serve-lock`.
  public let key: String
  /// `<prefix>:serve-lock:taken`: the nonce of the call that last took the lock.
  private let takenKey: String
  public let holder: Holder
  public let ttl: Duration
  /// A third of the TTL: two renewals in a row may fail before the lock lapses.
  public var renewInterval: Duration { ttl / 3 }
  private let value: String
  private let keyPrefix: String
  /// A client of its own with one connection: a renewal never waits behind the queue's large
  /// calls.
  private let client: RedisClient
  private let redis: RedisStoreBoundary

  /// A lock on the Redis at `url` for the keys under `keyPrefix`; nothing is sent before `acquire`.
  public init(url: RedisURL, keyPrefix: String = "nova", ttl: Duration = .seconds(15), holder: Holder = .current()) {
    let ttl = max(ttl, .milliseconds(30))
    key = "\(keyPrefix):serve-lock"
    takenKey = "\(keyPrefix):serve-lock:taken"
    self.keyPrefix = keyPrefix
    self.ttl = ttl
    self.holder = holder
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    value = (try? encoder.encode(holder)).map { String(decoding: $0, as: UTF8.self) } ?? holder.description
    // A dropped connection (a command that timed out closes it) is reconnected within a short
    // window rather than failing a start or a renewal on one bad moment. The floors (3 s to
    // answer, 2 s to retry) hold for short TTLs too: a late renewal cannot take a lock another
    // server holds (the script checks the holder), and a loaded host's slow reply is not a
    // failure.
    client = RedisClient(
      configuration: .init(
        url: url, poolSize: 1, connectTimeout: .seconds(3), commandTimeout: max(ttl / 3, .seconds(3)),
        retryWindow: max(ttl / 5, .seconds(2))))
    redis = RedisStoreBoundary(client: client)
  }

  /// The lock on the Redis and key prefix of `queue`.
  public convenience init(queue: RedisJobQueue, ttl: Duration = .seconds(15), listen: String? = nil) {
    self.init(url: queue.configuration.client.url, keyPrefix: queue.configuration.keyPrefix, ttl: ttl, holder: .current(listen: listen))
  }

  /// Takes the lock, or throws `Refused` naming its holder. A held lock is watched (for about a
  /// third of the TTL while its holder runs): refused as soon as its holder renews it, taken as
  /// soon as it lapses, so a server restarted after a crash waits for its own old lock instead
  /// of failing. `onWait` gets a message once when the watch starts.
  public func acquire(onWait: (String) -> Void = { _ in }) async throws {
    let giveUp = ContinuousClock.now.advanced(by: ttl + renewInterval)
    var last: (value: String, remaining: Int64)?
    while true {
      guard case .held(let held, let remaining) = try await hold() else { return }
      // A lock nobody renews only ages, so a longer remaining time (or another value) is a
      // renewal. The watch looks more often than holders renew, so it sees each renewal.
      let renewed = last.map { held != $0.value || remaining > $0.remaining } ?? false
      if renewed || remaining < 0 || ContinuousClock.now >= giveUp {
        throw refusal(held: held, remaining: remaining, lostWhileServing: false)
      }
      if last == nil {
        let who = Self.holder(of: held).map { "another nova serve (\($0))" } ?? "'\(held.prefix(200))'"
        onWait(
          "the serve lock on \(client.configuration.url) (key prefix '\(keyPrefix)') is held by \(who); watching it for up to "
            + "\(Self.text(ttl + renewInterval)): it is taken if it lapses, and this server stops if its holder renews it")
      }
      last = (held, remaining)
      try await Task.sleep(for: min(renewInterval / 4, .milliseconds(remaining + 1)))
    }
  }

  /// Renews the lock; `.retaken` when it had lapsed and is held again. Throws `Refused` when
  /// another server holds it now.
  @discardableResult
  public func renew() async throws -> Event? {
    switch try await hold() {
    case .kept: return nil
    case .taken: return .retaken
    case .held(let held, let remaining): throw refusal(held: held, remaining: remaining, lostWhileServing: true)
    }
  }

  /// Renews the lock every `renewInterval` until the task is cancelled (then throws
  /// `CancellationError`) or another server holds it (then throws `Refused`). Failed renewals
  /// are reported and retried at the next turn.
  public func keepRenewing(report: (Event) -> Void = { _ in }) async throws {
    while true {
      try await Task.sleep(for: renewInterval)
      do {
        if let event = try await renew() { report(event) }
      } catch let refused as Refused {
        throw refused
      } catch {
        try Task.checkCancellation()
        report(.renewalFailed(error))
      }
    }
  }

  /// Deletes the lock if it is still this holder's, then closes the connection.
  public func release() async throws {
    defer { client.close() }
    // In a task of its own: a cancelled caller (a server shutting down) still gives the lock back.
    try await Task {
      _ = try await self.redis.evaluate(
        Self.releaseScript, keys: [.string(self.key), .string(self.takenKey)], arguments: [.string(self.value)])
    }.value
  }

  // MARK: - Redis

  private enum Answer {
    case kept
    case taken
    case held(value: String, remaining: Int64)
  }

  /// KEYS: the lock, the mark of the last take. ARGV: this holder's value, the TTL in ms, this
  /// call's nonce. Renews the lock when it is ours ({1}), takes it when it is free ({2}), else
  /// returns {0, the holder's value, its remaining ms}. A take marks the nonce, so a call the
  /// client repeats after its reply was lost (a timeout, a dropped connection) still answers
  /// {2}: otherwise the repeat would find the lock its first try took and say "kept", and a
  /// retaken lock would go unreported.
  private static let holdScript = RedisScript(
    """
    local held = redis.call('GET', KEYS[1])
    if held == ARGV[1] then
      redis.call('PEXPIRE', KEYS[1], ARGV[2])
      if redis.call('GET', KEYS[2]) == ARGV[3] then return {2} end
      return {1}
    end
    if not held then
      redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
      redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
      return {2}
    end
    return {0, held, redis.call('PTTL', KEYS[1])}
    """)

  /// KEYS: the lock, the mark of the last take. ARGV: this holder's value. Deletes the lock
  /// only when it is ours: a server that lost it must not delete the lock of the one that took
  /// it over.
  private static let releaseScript = RedisScript(
    """
    if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1], KEYS[2]) end
    return 0
    """)

  private func hold() async throws -> Answer {
    let milliseconds = max(1, Int64((ttl.seconds * 1000).rounded()))
    let nonce = UUID().uuidString
    let reply = try await redis.evaluate(
      Self.holdScript, keys: [.string(key), .string(takenKey)], arguments: [.string(value), .int(milliseconds), .string(nonce)])
    let parts = reply.elements ?? []
    switch parts.first?.int {
    case 1?: return .kept
    case 2?: return .taken
    case 0? where parts.count == 3: return .held(value: parts[1].string ?? "", remaining: parts[2].int ?? -1)
    default: throw RedisStoreBoundary.badReply("the serve lock script answered \(reply)")
    }
  }

  private func refusal(held: String, remaining: Int64, lostWhileServing: Bool) -> Refused {
    Refused(
      holder: Self.holder(of: held), heldValue: held, remaining: remaining, lostWhileServing: lostWhileServing,
      redis: "\(client.configuration.url)", keyPrefix: keyPrefix, key: key, ttl: ttl)
  }

  private static func holder(of value: String) -> Holder? {
    try? JSONDecoder().decode(Holder.self, from: Data(value.utf8))
  }

  /// A duration for messages: `15 s`, `0.6 s`.
  static func text(_ duration: Duration) -> String {
    let seconds = duration.seconds
    return seconds == seconds.rounded() ? "\(Int(seconds)) s" : "\((seconds * 10).rounded() / 10) s"
  }
}
