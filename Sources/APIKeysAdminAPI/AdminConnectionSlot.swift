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
/// Phases, from the HTTP parts it sees: busy while a whole request waits for its answer (a
/// pipelined one included), else incomplete from a request's head to its end, else idle, from
/// the connection's start and from its last answer (bytes that never make a request head, a
/// TLS handshake included, leave it idle).
final class AdminConnectionSlot: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let connections: OpenConnections
    private var activity: OpenConnections.Activity?
    /// A request's head is read, its end not yet.
    private var requestBegun = false
    /// Requests read whole and not answered yet.
    private var unanswered = 0

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
        case .head:
            requestBegun = true
            updatePhase()
        case .body:
            break
        case .end:
            requestBegun = false
            unanswered += 1
            updatePhase()
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) {
            unanswered = max(0, unanswered - 1)
            updatePhase(answered: true)
        }
        context.write(data, promise: promise)
    }

    /// `answered`: an answer has just gone out, so an idle phase starts now.
    private func updatePhase(answered: Bool = false) {
        if unanswered > 0 {
            activity?.set(.busy)
        } else if requestBegun {
            activity?.set(.incomplete)
        } else if answered {
            activity?.restart(.idle)
        }
    }
}
