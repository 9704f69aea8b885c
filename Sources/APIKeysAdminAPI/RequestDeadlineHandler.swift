import APIKeysServer
import HTTPTypes
import NIOCore
import NIOHTTPTypes

/// Closes a connection whose next request is not complete `timeout` after the connection
/// opened or its last answer went out: a client trickling its headers or body byte by byte,
/// or one that opens a connection (or a TLS session) and sends nothing, frees its slot after
/// `timeout` instead of holding it for as long as it keeps sending. The same clock is the
/// keep-alive idle timeout. An answer that says `Connection: close` (a body too large, whose
/// rest is not worth reading) ends the connection once written.
final class RequestDeadlineHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let timeout: TimeAmount
    private var timer: Scheduled<Void>?
    private var closeAfterAnswer = false
    /// The answer that ends the connection is sent and our side shut: what the client still
    /// sends is read and dropped until it closes too or the timer closes the connection.
    private var lingering = false

    init(timeout: TimeAmount) {
        self.timeout = timeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        // Hummingbird's bootstrap is not ours: the port's reads are limited here, once per
        // connection, as on the other ports (a pipelining client that never reads held ~1.6 MB
        // of answers and delayed everyone on its loop by up to a second with NIO's defaults).
        try? ReadLimits.apply(to: context.channel)
        arm(context: context)
    }

    func handlerRemoved(context: ChannelHandlerContext) { timer?.cancel() }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !lingering else { return }
        if case .end = unwrapInboundIn(data) {
            timer?.cancel()
            timer = nil
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let head):
            closeAfterAnswer = head.headerFields[.connection]?.lowercased() == "close"
            context.write(data, promise: promise)
        case .body:
            context.write(data, promise: promise)
        case .end:
            arm(context: context)
            guard closeAfterAnswer else { return context.write(data, promise: promise) }
            let written = context.eventLoop.makePromise(of: Void.self)
            written.futureResult.cascade(to: promise)
            let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
            // A lingering close, as nginx does: closing at once would make the kernel answer the
            // rest of a body still on its way with a reset, and the client could lose this
            // answer unread. Our side is shut (FIN); the client's close, or the timer armed
            // above, ends the connection.
            lingering = true
            written.futureResult.whenComplete { _ in
                loopBound.value.close(mode: .output).whenFailure { _ in loopBound.value.close(promise: nil) }
            }
            context.write(data, promise: written)
        }
    }

    private func arm(context: ChannelHandlerContext) {
        timer?.cancel()
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: timeout) { loopBound.value.close(promise: nil) }
    }
}
