import Hummingbird
import NIOCore
import NovaSecurity

/// The request context of Nova's routes: the caller's address (for limits on failed logins)
/// and, once authenticated, its token.
public struct NovaRequestContext: RequestContext, RemoteAddressRequestContext {
  public var coreContext: CoreRequestContextStorage
  public let remoteAddress: SocketAddress?
  /// The authenticated caller; nil on open routes or when the server runs without auth.
  public var caller: APIToken?

  public init(source: ApplicationRequestContextSource) {
    coreContext = .init(source: source)
    remoteAddress = source.channel.remoteAddress
  }
}
