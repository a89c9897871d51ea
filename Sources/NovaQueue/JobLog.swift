import Foundation
import NovaCore

/// Which output of a program a log chunk came from.
public enum JobLogStream: String, Sendable, Codable, CaseIterable {
  case stdout, stderr
}

/// A piece of what an attempt wrote, as stored: output is kept per attempt, in the order it was
/// written, and deleted with its job.
public struct JobLogChunk: Sendable, Equatable {
  public var job: JobID
  /// The job's queue (where a backend keeps the job's keys).
  public var queue: String
  public var attempt: Int
  public var stream: JobLogStream
  /// Increasing within a job; assigned by the store (0 before it is stored).
  public var sequence: Int64
  public var data: Data
  public var time: Date

  public init(job: JobID, queue: String, attempt: Int, stream: JobLogStream, sequence: Int64 = 0, data: Data, time: Date) {
    self.job = job
    self.queue = queue
    self.attempt = attempt
    self.stream = stream
    self.sequence = sequence
    self.data = data
    self.time = time
  }
}

/// A store that keeps the output of attempts (both backends).
public protocol JobLogStore: Sendable {
  /// Appends chunks (of any jobs) in one step.
  func appendLogs(_ chunks: [JobLogChunk]) async throws
  /// A job's chunks after `sequence`, oldest first, at most `limit`; of one attempt when given.
  func logs(of id: JobID, attempt: Int?, after sequence: Int64, limit: Int) async throws -> [JobLogChunk]
}

extension JobQueue {
  /// The store's log half, when it keeps logs.
  public var logStore: (any JobLogStore)? { self as? any JobLogStore }
}
