import Synchronization

/// Who is acting, for the audit trail. The HTTP layer binds the caller's token name, the CLI
/// the local user, a worker its id; whatever a task does inside `$actor.withValue` is recorded
/// under that name.
public enum AuditContext {
  @TaskLocal public static var actor: String = "system"
  /// Where the audit events of the action under way wait for the store transaction that makes
  /// its change, when the action holds them (a single submission's policy decision).
  @TaskLocal public static var held: HeldAuditEvents?
}

/// Audit events held back to be written in the transaction of the change they lead to (a
/// submission's policy decision with its job: one write where there were two), or on their own
/// when no transaction took them.
public final class HeldAuditEvents: Sendable {
  /// One audit entry, as the log stores it (its payload in canonical JSON).
  public struct Event: Sendable, Equatable {
    public var time: Int64
    public var actor: String
    public var event: String
    public var subject: String?
    public var payload: String

    public init(time: Int64, actor: String, event: String, subject: String?, payload: String) {
      self.time = time
      self.actor = actor
      self.event = event
      self.subject = subject
      self.payload = payload
    }
  }

  private struct State {
    var events: [Event] = []
    var writeAlone: (@Sendable ([Event]) async throws -> Void)?
  }

  private let state = Mutex(State())

  public init() {}

  /// Holds `event`; `writeAlone` writes events that no transaction took.
  public func hold(_ event: Event, writeAlone: @escaping @Sendable ([Event]) async throws -> Void) {
    state.withLock { state in
      state.events.append(event)
      state.writeAlone = writeAlone
    }
  }

  /// The events held, for a transaction to write.
  public var events: [Event] { state.withLock { $0.events } }

  /// The transaction that wrote the first `count` of `events` committed.
  public func written(_ count: Int) {
    state.withLock { $0.events.removeFirst(min(count, $0.events.count)) }
  }

  /// Writes on their own the events no transaction took.
  public func writeRemaining() async throws {
    let (events, write) = state.withLock { state in
      defer { state.events = [] }
      return (state.events, state.writeAlone)
    }
    guard !events.isEmpty, let write else { return }
    try await write(events)
  }
}
