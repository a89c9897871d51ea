import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NovaCore

/// An error answered as `{"error":{"code":…,"message":…}}` with its HTTP status.
public struct APIError: HTTPResponseError, Equatable {
  public var status: HTTPResponse.Status
  public var code: String
  public var message: String
  /// Extra response headers (`WWW-Authenticate`, `Retry-After`).
  public var headers: HTTPFields

  public init(_ status: HTTPResponse.Status, code: String, message: String, headers: HTTPFields = [:]) {
    self.status = status
    self.code = code
    self.message = message
    self.headers = headers
  }

  /// Maps Nova's domain errors to statuses: unparseable input 400, invalid input 422, size 413, missing 404, state 409.
  public init(_ error: NovaError) {
    switch error {
    case .malformedInput: self.init(.badRequest, code: error.code, message: error.description)
    case .invalidInput: self.init(.unprocessableContent, code: error.code, message: error.description)
    case .unknownJobKind: self.init(.unprocessableContent, code: error.code, message: error.description)
    case .payloadTooLarge: self.init(.contentTooLarge, code: error.code, message: error.description)
    case .jobNotFound, .notFound: self.init(.notFound, code: error.code, message: error.description)
    case .invalidState, .leaseLost, .idempotencyConflict: self.init(.conflict, code: error.code, message: error.description)
    case .storage: self.init(.serviceUnavailable, code: error.code, message: error.description)
    case .unavailable:
      // A store that is down or locked: the client may retry, and is told when.
      var headers = HTTPFields()
      headers[.retryAfter] = String(Self.unavailableRetryAfterSeconds)
      self.init(.serviceUnavailable, code: error.code, message: error.description, headers: headers)
    case .forbidden: self.init(.forbidden, code: error.code, message: error.description)
    }
  }

  /// The `Retry-After` of a 503 for a store that is unavailable.
  public static let unavailableRetryAfterSeconds = 2

  /// The JSON body.
  public var body: Data {
    let object = ["error": ["code": code, "message": message]]
    return (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
  }

  public func response(from request: Request, context: some RequestContext) throws -> Response {
    var headers = self.headers
    headers[.contentType] = "application/json"
    return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
  }
}

/// Turns every error a route throws into a JSON error response, so clients never see an HTML or
/// empty error, and unexpected errors are logged rather than leaked.
struct JSONErrorMiddleware<Context: RequestContext>: RouterMiddleware {
  func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
    -> Response
  {
    do {
      return try await next(request, context)
    } catch let error as APIError {
      return try error.response(from: request, context: context)
    } catch let error as NovaError {
      return try APIError(error).response(from: request, context: context)
    } catch let error as NIOTooManyBytesError {
      let limit = error.maxBytes.map { " of \($0) bytes" } ?? ""
      return try APIError(.contentTooLarge, code: "payload_too_large", message: "request body is over the limit\(limit)")
        .response(from: request, context: context)
    } catch let error as HTTPError {
      let code = error.status == .notFound ? "not_found" : "http_\(error.status.code)"
      return try APIError(error.status, code: code, message: error.body ?? error.status.reasonPhrase)
        .response(from: request, context: context)
    } catch {
      context.logger.error("request failed", metadata: ["error": "\(error)"])
      return try APIError(.internalServerError, code: "internal", message: "internal error")
        .response(from: request, context: context)
    }
  }
}

/// Bounds the store calls of each request (`StoreDeadline`), so that a store that is down is
/// answered as 503 within the bound instead of after the store client's long retry window.
struct StoreDeadlineMiddleware<Context: RequestContext>: RouterMiddleware {
  let bound: Duration

  func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
    -> Response
  {
    try await StoreDeadline.within(bound) { try await next(request, context) }
  }
}
