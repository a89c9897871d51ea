import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NovaCore

/// Open Policy Agent's REST Data API: `POST {url}/v1/data/{path}?provenance` with
/// `{"input": …}`. Connections are pooled and reused (AsyncHTTPClient).
public struct OPAClient: Sendable {
  /// OPA's answer to one query.
  public struct Answer: Sendable, Equatable {
    public var allowed: Bool
    /// Why, in OPA's terms: `true`, `false`, `undefined` or `non-boolean result`.
    public var detail: String
    /// The bundle (policy) revision OPA reports, when it does.
    public var revision: String?
  }

  /// OPA could not answer.
  public struct Failure: Error, Sendable, CustomStringConvertible {
    public var description: String
  }

  public let url: String
  public let path: String
  public let timeout: Duration
  private let client: HTTPClient

  /// A client that never follows redirects: the input (who asks for what) goes to OPA only.
  public static let client = HTTPClient(
    eventLoopGroupProvider: .singleton, configuration: HTTPClient.Configuration(redirectConfiguration: .disallow))

  public init(url: String, path: String, timeout: Duration, client: HTTPClient = OPAClient.client) {
    self.url = url
    self.path = path
    self.timeout = timeout
    self.client = client
  }

  /// Asks for the decision at `path` with `input`.
  public func query(input: JSONValue) async throws(Failure) -> Answer {
    var request = HTTPClientRequest(url: "\(url)/v1/data/\(path)?provenance=true")
    request.method = .POST
    request.headers.add(name: "Content-Type", value: "application/json")
    request.body = .bytes(ByteBuffer(bytes: Array(JSONValue.object(["input": input]).encoded())))
    let (status, data) = try await exchange(request)
    guard status == 200 else {
      throw Failure(description: "OPA answered HTTP \(status): \(String(decoding: data.prefix(300), as: UTF8.self))")
    }
    guard case .object(let object)? = try? JSONValue.parse(data) else {
      throw Failure(description: "OPA's answer is not a JSON object")
    }
    let revision = Self.revision(in: object["provenance"])
    switch object["result"] {
    case nil: return Answer(allowed: false, detail: "undefined", revision: revision)
    case .bool(let flag)?: return Answer(allowed: flag, detail: flag ? "true" : "false", revision: revision)
    default: return Answer(allowed: false, detail: "non-boolean result", revision: revision)
    }
  }

  /// `GET {url}/health`: true when OPA is ready to serve.
  public func healthy() async -> Bool {
    var request = HTTPClientRequest(url: "\(url)/health")
    request.method = .GET
    return (try? await exchange(request))?.status == 200
  }

  private static func revision(in provenance: JSONValue?) -> String? {
    guard case .object(let fields)? = provenance else { return nil }
    if case .string(let revision)? = fields["revision"], !revision.isEmpty { return revision }
    // OPA with bundles reports one revision per bundle.
    if case .object(let bundles)? = fields["bundles"] {
      let revisions = bundles.keys.sorted().compactMap { name -> String? in
        if case .object(let bundle)? = bundles[name], case .string(let revision)? = bundle["revision"] { return revision }
        return nil
      }
      if !revisions.isEmpty { return revisions.joined(separator: ",") }
    }
    return nil
  }

  /// One request and its whole body within the timeout.
  private func exchange(_ request: HTTPClientRequest) async throws(Failure) -> (status: UInt, body: Data) {
    let client = self.client
    let limit = timeout
    do {
      return try await withThrowingTaskGroup(of: (UInt, Data)?.self) { group in
        group.addTask {
          let response = try await client.execute(request, timeout: .nanoseconds(Int64(limit.nanoseconds)))
          let body = try await response.body.collect(upTo: 1 << 20)
          return (response.status.code, Data(body.readableBytesView))
        }
        group.addTask {
          try await Task.sleep(for: limit)
          return nil
        }
        let first = try await group.next()!
        group.cancelAll()
        guard let first else { throw Failure(description: "OPA did not answer within \(limit)") }
        return first
      }
    } catch let failure as Failure {
      throw failure
    } catch let error as HTTPClientError where error == .deadlineExceeded {
      throw Failure(description: "OPA did not answer within \(limit)")
    } catch {
      throw Failure(description: "OPA unreachable: \(error)")
    }
  }
}
