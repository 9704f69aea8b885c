import APIKeysServer
import NIOCore
import NIOHTTPTypes

/// A connection's slot among the admin port's ``OpenConnections``, as the RPC and HTTP ports
/// keep theirs: at the cap, a new connection takes the slot of the one waiting longest on an
/// incomplete request, else of the one idle longest, which is closed; only when every
/// connection is being answered is the new one closed instead. So a flood of silent or slow
/// connections cannot keep an operator out of the port (with connections merely counted, a new
/// one waited in the listen backlog until a silent one reached its request timeout).
///
/// Phases, from the HTTP parts it sees: idle from the connection's start and after each answer
/// (bytes that never make a request head, a TLS handshake included, leave it idle), incomplete
/// from a request's head to its end, busy from its end to its answer.
final class AdminConnectionSlot: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let connections: OpenConnections
    private var activity: OpenConnections.Activity?

    init(_ connections: OpenConnections) { self.connections = connections }

    func handlerAdded(context: ChannelHandlerContext) {
        guard let activity = connections.admit(context.channel) else {
            context.close(promise: nil)
            return
        }
        self.activity = activity
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head: activity?.set(.incomplete)
        case .body: break
        case .end: activity?.set(.busy)
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { activity?.restart(.idle) }
        context.write(data, promise: promise)
    }
}
