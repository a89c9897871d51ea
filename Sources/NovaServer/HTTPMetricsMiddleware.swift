import Hummingbird
import Metrics
import NovaCore
import Synchronization

/// Counts requests and times them per method, route pattern and status.
struct HTTPMetricsMiddleware<Context: RequestContext>: RouterMiddleware {
  private let meters = Meters()

  func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
    -> Response
  {
    let start = ContinuousClock.now
    let response = try await next(request, context)
    // The route pattern, not the raw path, so that job ids do not explode the label set.
    let route = context.endpointPath ?? "unmatched"
    let (counter, timer) = meters.meters(method: request.method.rawValue, route: route, status: Int(response.status.code))
    counter.increment()
    timer.recordNanoseconds(Int64((ContinuousClock.now - start).seconds * 1e9))
    return response
  }

  /// The counter and timer of each method, route and status, made once: making them per request
  /// (the factory's lookup of the name and its labels) was a thirtieth of the server's time
  /// under single submissions. Few routes and statuses, so the table stays small.
  private final class Meters: Sendable {
    private struct Key: Hashable {
      var method: String
      var route: String
      var status: Int
    }

    private let table = Mutex<[Key: (Metrics.Counter, Metrics.Timer)]>([:])

    func meters(method: String, route: String, status: Int) -> (Metrics.Counter, Metrics.Timer) {
      let key = Key(method: method, route: route, status: status)
      if let found = table.withLock({ $0[key] }) { return found }
      let made = (
        Metrics.Counter(
          label: "nova_http_requests_total", dimensions: [("method", method), ("route", route), ("status", String(status))]),
        Metrics.Timer(label: "nova_http_request_duration_seconds", dimensions: [("method", method), ("route", route)])
      )
      return table.withLock { table in
        if let found = table[key] { return found }
        table[key] = made
        return made
      }
    }
  }
}
