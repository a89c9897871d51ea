import Hummingbird
import Metrics
import NovaCore

/// Counts requests and times them per method, route pattern and status.
struct HTTPMetricsMiddleware<Context: RequestContext>: RouterMiddleware {
  func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
    -> Response
  {
    let start = ContinuousClock.now
    let response = try await next(request, context)
    // The route pattern, not the raw path, so that job ids do not explode the label set.
    let route = context.endpointPath ?? "unmatched"
    let method = request.method.rawValue
    Metrics.Counter(
      label: "nova_http_requests_total",
      dimensions: [("method", method), ("route", route), ("status", String(response.status.code))]
    ).increment()
    Metrics.Timer(
      label: "nova_http_request_duration_seconds", dimensions: [("method", method), ("route", route)]
    ).recordNanoseconds(Int64((ContinuousClock.now - start).seconds * 1e9))
    return response
  }
}
