import Foundation
import NovaCore
import NovaDatabase

/// One change of a job's state, as the audit trail records it.
public struct JobTransition: Sendable, Equatable {
  /// What happened to the job.
  public enum Event: String, Sendable, CaseIterable {
    case enqueued, promoted, claimed, completed, failed, dead, released, requeued, cancelled, retried
  }

  public var event: Event
  public var job: JobID
  public var queue: String
  public var kind: String
  /// The state before; nil for a new job.
  public var from: JobState?
  public var to: JobState
  /// Attempts started so far, after the transition.
  public var attempt: Int
  /// Milliseconds since 1970, the time the queue stamped on the change.
  public var time: Int64
  /// The error of a failed or dead job, the worker of a claim.
  public var detail: String?

  public init(
    event: Event, job: JobID, queue: String, kind: String, from: JobState?, to: JobState, attempt: Int,
    time: Int64, detail: String? = nil
  ) {
    self.event = event
    self.job = job
    self.queue = queue
    self.kind = kind
    self.from = from
    self.to = to
    self.attempt = attempt
    self.time = time
    self.detail = detail
  }
}

/// Records job transitions in the SQLite queue's own write transaction, so that no transition
/// commits without its record (the audit log of `NovaSecurity` is one).
public protocol JobTransitionJournal: Sendable {
  /// Creates the journal's tables in the queue's database.
  func prepare(_ database: NovaDatabase) throws
  /// Records `transitions`, made by `actor`, inside the open transaction.
  func record(_ transitions: [JobTransition], actor: String, in transaction: DatabaseTransaction) throws
  /// Records, in order, each submission's held events and then its transitions, inside the open
  /// transaction: the whole of one transaction's submissions in one append.
  func record(submissions: [JournalSubmission], in transaction: DatabaseTransaction) throws
}

/// What one submission adds to the journal: the events its action held back (its policy
/// decision), then its jobs' transitions, made by `actor`.
public struct JournalSubmission: Sendable {
  public var held: [HeldAuditEvents.Event]
  public var transitions: [JobTransition]
  public var actor: String

  public init(held: [HeldAuditEvents.Event], transitions: [JobTransition], actor: String) {
    self.held = held
    self.transitions = transitions
    self.actor = actor
  }
}

/// A queue that can list every job it holds with its current state (for audit coverage).
public protocol JobStateListing: Sendable {
  /// Every job the store holds with its current state.
  func jobStates() async throws -> [(id: JobID, state: JobState)]
}

/// The job listing of any queue: its backend, under the metrics instrumentation if there is
/// one; a backend that cannot list its jobs gives a listing that says so when asked.
public func jobStateListing(of queue: any JobQueue) -> any JobStateListing {
  let backend = (queue as? InstrumentedJobQueue)?.base ?? queue
  return backend as? any JobStateListing ?? UnlistableQueue()
}

/// Stands in for a queue backend that cannot list its jobs: coverage reports that plainly.
private struct UnlistableQueue: JobStateListing {
  func jobStates() async throws -> [(id: JobID, state: JobState)] {
    throw NovaError.storage("this queue backend cannot list its jobs, so audit coverage cannot be computed")
  }
}

/// A store that keeps records of job transitions itself (Redis, inside its scripts) until they
/// are moved into the audit log. Records are read after a cursor per source and acknowledged
/// (deleted) once the audit log has committed them, so each is moved exactly once.
public protocol TransitionSource: JobStateListing {
  /// Up to `limit` records after `cursors` (source → last cursor taken), oldest first per source.
  func pendingTransitions(after cursors: [String: String], limit: Int) async throws -> [SourcedTransition]
  /// Deletes every record up to and including `cursors` (source → cursor).
  func acknowledgeTransitions(through cursors: [String: String]) async throws
  /// Records waiting to be moved.
  func pendingTransitionCount() async throws -> Int
}

/// A transition record as a `TransitionSource` keeps it.
public struct SourcedTransition: Sendable {
  /// Where it came from (a stream key), and its position there.
  public var source: String
  public var cursor: String
  /// The transition; nil when the record could not be read (see `problem`).
  public var transition: JobTransition?
  public var actor: String
  /// Why a malformed record could not be read; it is quarantined, not imported.
  public var problem: String?
  /// A malformed record's fields as stored.
  public var fields: [String: String] = [:]

  public init(source: String, cursor: String, transition: JobTransition, actor: String) {
    self.source = source
    self.cursor = cursor
    self.transition = transition
    self.actor = actor
  }

  /// A record that is not a transition: kept aside and journaled instead of stalling the import.
  public init(source: String, cursor: String, malformed problem: String, fields: [String: String]) {
    self.source = source
    self.cursor = cursor
    self.transition = nil
    self.actor = ""
    self.problem = problem
    self.fields = fields
  }
}
