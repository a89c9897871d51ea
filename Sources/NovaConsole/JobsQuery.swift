import Foundation
import NovaCore
import NovaQueue

/// The filters of the jobs page as its form sends them: state, queue, kind, key, worker, the
/// creation window, and a search (a job id or an idempotency key).
public struct JobsQuery: Sendable, Equatable {
  public var state: JobState?
  public var queue: String?
  public var kind: String?
  public var key: String?
  public var worker: String?
  /// Created at or after, and before (UTC, `YYYY-MM-DDTHH:MM` as a datetime-local field sends).
  public var from: Date?
  public var until: Date?
  /// A job id or an idempotency key.
  public var search: String?
  public var cursor: String?
  public var limit = 50

  public init() {}

  /// The fields a filter form and its links use.
  public static let fields = ["state", "queue", "kind", "key", "worker", "from", "until", "q", "cursor", "limit"]

  /// Reads the filters from form or query fields; unknown fields and bad values throw, naming the field.
  public init(fields: [(String, String)], allowing extra: Set<String> = []) throws(NovaError) {
    for (name, raw) in fields {
      let value = raw.trimmingCharacters(in: .whitespaces)
      if extra.contains(name) { continue }
      if value.isEmpty, Self.fields.contains(name) { continue }
      switch name {
      case "state":
        guard let state = JobState(rawValue: value) else {
          throw .invalidInput(field: "state", message: "'\(value)' is not a state; use \(JobState.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        self.state = state
      case "queue": queue = value
      case "kind": kind = value
      case "key": key = value
      case "worker": worker = value
      case "from": from = try Self.time(value, field: "from")
      case "until": until = try Self.time(value, field: "until")
      case "q": search = value
      case "cursor":
        guard JobID(value).isWellFormed else { throw .invalidInput(field: "cursor", message: "'\(value)' is not a cursor this server issued") }
        cursor = value
      case "limit":
        guard let parsed = Int(value), (1...500).contains(parsed) else {
          throw .invalidInput(field: "limit", message: "'\(value)' is not a number in 1...500")
        }
        limit = parsed
      default: throw .invalidInput(field: name, message: "unknown field; the filters are \(Self.fields.joined(separator: ", "))")
      }
    }
  }

  /// A time as a datetime-local field sends it (UTC), or RFC 3339.
  static func time(_ text: String, field: String) throws(NovaError) -> Date {
    if let millis = AuditTime.parse(text) { return Date(millisecondsSince1970: millis) }
    for suffix in [":00.000Z", ".000Z", "Z"] {
      if let millis = AuditTime.parse(text + suffix) { return Date(millisecondsSince1970: millis) }
    }
    throw .invalidInput(field: field, message: "'\(text)' is not a time such as 2026-12-06T09:30 (UTC)")
  }

  /// The store filter; a search that is a job id is looked up by the page itself, any other
  /// search is an idempotency key.
  public var filter: JobFilter {
    var filter = JobFilter(state: state, queue: queue, kind: kind, limit: limit, cursor: cursor)
    filter.concurrencyKey = key
    filter.worker = worker
    filter.createdAfter = from
    filter.createdBefore = until
    if let search, !JobID(search).isWellFormed { filter.idempotencyKey = search }
    return filter
  }

  /// The search when it names a job by id.
  public var jobID: JobID? { search.map(JobID.init).flatMap { $0.isWellFormed ? $0 : nil } }

  /// Whether any filter is set (a bulk action over no filter means every job).
  public var isEmpty: Bool { self.withoutPaging == JobsQuery() }

  var withoutPaging: JobsQuery {
    var copy = self
    copy.cursor = nil
    copy.limit = 50
    return copy
  }

  /// The filters as (name, value) pairs, without paging.
  public var pairs: [(String, String)] {
    var pairs: [(String, String)] = []
    if let state { pairs.append(("state", state.rawValue)) }
    if let queue { pairs.append(("queue", queue)) }
    if let kind { pairs.append(("kind", kind)) }
    if let key { pairs.append(("key", key)) }
    if let worker { pairs.append(("worker", worker)) }
    if let from { pairs.append(("from", AuditTime.string(from.millisecondsSince1970))) }
    if let until { pairs.append(("until", AuditTime.string(until.millisecondsSince1970))) }
    if let search { pairs.append(("q", search)) }
    return pairs
  }

  /// The filters as a URL query (`a=b&c=d`, not escaped for HTML).
  public var queryString: String { pairs.map { "\($0.0)=\(ConsoleHTML.query($0.1))" }.joined(separator: "&") }

  /// The filters in words, for confirmations and the audit log.
  public var description: String {
    pairs.isEmpty ? "every job" : pairs.map { "\($0.0)=\($0.1)" }.joined(separator: ", ")
  }
}
