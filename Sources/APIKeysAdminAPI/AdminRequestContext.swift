import Hummingbird
import NIOCore

/// The admin port's request context: Hummingbird's basic one plus the peer's address (the
/// console throttles sign-ins per client address).
struct AdminRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    /// The connection's peer, as a string without the port ("127.0.0.1", "::1"); "" when unknown.
    let clientAddress: String

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        clientAddress = source.channel.remoteAddress?.ipAddress ?? ""
    }
}
