/// The life cycle of a job: `scheduled → available → running → succeeded | failed (→ available) | dead | cancelled`.
public enum JobState: String, Sendable, Codable, CaseIterable, CustomStringConvertible {
  /// Waiting for its run-at time (a delayed job).
  case scheduled
  /// Ready to be claimed by a worker.
  case available
  /// Claimed under a lease by a worker.
  case running
  /// Completed with a result.
  case succeeded
  /// Its last attempt failed; it becomes available again after its backoff.
  case failed
  /// Failed its last allowed attempt (the dead-letter state).
  case dead
  /// Cancelled before it completed.
  case cancelled

  /// True for states a job never leaves on its own.
  public var isTerminal: Bool {
    switch self {
    case .succeeded, .dead, .cancelled: return true
    case .scheduled, .available, .running, .failed: return false
    }
  }

  public var description: String { rawValue }

  /// Parses a state name, with an error that lists the valid names.
  public static func parse(_ text: String) throws(NovaError) -> JobState {
    guard let state = JobState(rawValue: text.lowercased()) else {
      throw NovaError.invalidInput(
        field: "state",
        message: "unknown job state '\(text)'; expected one of \(allCases.map(\.rawValue).joined(separator: ", "))")
    }
    return state
  }
}
