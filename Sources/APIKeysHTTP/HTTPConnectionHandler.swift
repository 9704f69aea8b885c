import APIKeysServer
import Foundation
import HTTPTypes
import Logging
import Metrics
import NIOCore
import NIOExtras
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOPosix
import Prometheus
import ServiceLifecycle
import Synchronization

/// One HTTP connection: each request is answered on the event loop when its end arrives (a body
/// is read and dropped), except a leak report: its body (at most
/// ``HTTPResponder/maxLeakBodyBytes``, else 413) is answered by a task, and the connection closed
/// after the answer (whatever was sent after the report is dropped). A connection with no
/// complete request for `idleTimeout` (since it opened or since its last answer) is closed,
/// however slowly its bytes trickle in.
final class HTTPConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias OutboundOut = HTTPResponsePart

    private let responder: HTTPResponder
    private let peer: String
    /// Idle from the connection's start or its last answer (no frame deadline: a request's
    /// bytes trickling in count against the idle timeout).
    private var deadlines: ConnectionDeadlines
    private var timer = DeadlineTimer()
    private var request: HTTPRequest?
    /// The body of the leak report being read.
    private var leakBody: ByteBuffer?
    /// A leak report is being answered, or was refused: nothing more is read on this connection.
    private var finishing = false
    /// Busy from the first byte of a request to its answer (``OpenConnections``).
    private let activity: OpenConnections.Activity?

    init(responder: HTTPResponder, peer: String, idleTimeout: TimeAmount, activity: OpenConnections.Activity? = nil) {
        self.responder = responder
        self.peer = peer
        self.deadlines = ConnectionDeadlines(idleTimeout: idleTimeout, frameTimeout: nil, openedAt: .now())
        self.activity = activity
    }

    func handlerAdded(context: ChannelHandlerContext) { armTimer(context: context) }

    func handlerRemoved(context: ChannelHandlerContext) { timer.cancel() }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !finishing else { return }
        switch unwrapInboundIn(data) {
        case .head(let head):
            request = head
            if responder.isLeakReport(head) { leakBody = ByteBuffer() }
        case .body(let part):
            guard var body = leakBody else { break }
            guard body.readableBytes + part.readableBytes <= HTTPResponder.maxLeakBodyBytes else {
                finishing = true
                let refused = HTTPResponder.text(
                    .contentTooLarge, "a report is at most \(HTTPResponder.maxLeakBodyBytes) bytes\n")
                write(refused, close: true, context: context)
                return
            }
            leakBody = nil  // keep the buffer uniquely referenced while appending
            body.writeImmutableBuffer(part)
            leakBody = body
        case .end:
            guard let request else { return }
            activity?.set(.busy)
            self.request = nil
            if let body = leakBody {
                leakBody = nil
                finishing = true
                answerLeakReport(
                    body, reporter: responder.clientAddress.resolve(peer: peer, headers: request.headerFields).address,
                    context: context)
            } else {
                let close = request.headerFields[.connection]?.lowercased().contains("close") == true
                write(responder.answer(request, peer: peer), close: close, context: context)
            }
        }
    }

    private func answerLeakReport(_ body: ByteBuffer, reporter: String, context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
        let (responder, eventLoop) = (responder, context.eventLoop)
        Task {
            let answer = await responder.reportLeaks(body, peer: reporter)
            eventLoop.execute {
                let (handler, context) = loopBound.value
                guard context.channel.isActive else { return }  // the reporter left; the report was acted on
                handler.write(answer, close: true, context: context)
            }
        }
    }

    private func write(_ answer: HTTPResponder.Answer, close: Bool, context: ChannelHandlerContext) {
        var answer = answer
        answer.headers[.contentLength] = "\(answer.body.readableBytes)"
        if close { answer.headers[.connection] = "close" }
        context.write(
            wrapOutboundOut(.head(HTTPResponse(status: answer.status, headerFields: answer.headers))), promise: nil)
        if answer.body.readableBytes > 0 { context.write(wrapOutboundOut(.body(answer.body)), promise: nil) }
        let written = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        activity?.restart(.idle)
        if close {
            let channel = context.channel
            written.whenComplete { _ in channel.close(promise: nil) }
        }
        deadlines.unitCompleted(now: .now())
        armTimer(context: context)
    }

    /// The one timer of ``ConnectionDeadlines``, as on the RPC port: closes the connection once
    /// it has been idle for the timeout, else is armed again.
    private func armTimer(context: ChannelHandlerContext) {
        guard timer.needsArming(for: deadlines.nextDeadline) else { return }
        let loopBound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
        timer.arm(for: deadlines.nextDeadline, on: context.eventLoop) {
            let (handler, context) = loopBound.value
            handler.timer.fired()
            if handler.deadlines.expiry(at: .now()) != nil {
                context.close(promise: nil)
            } else {
                handler.armTimer(context: context)
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// First in an HTTP connection's pipeline: bytes on an idle connection begin a request, so that
/// it is taken for incomplete, not idle, until the request is whole (``OpenConnections``).
final class ActivityMarker: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    private let activity: OpenConnections.Activity

    init(_ activity: OpenConnections.Activity) { self.activity = activity }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if activity.current.phase == .idle { activity.set(.incomplete) }
        context.fireChannelRead(data)
    }
}
