import APIKeysServer
import NIOCore
import NIOHTTP1

/// One HTTP connection, behind NIO's HTTP/1.1 request decoder (llhttp) and nothing else: each
/// request is answered on the event loop when its end arrives (a body is read and dropped), its
/// response serialized straight into one outbound buffer (``HTTPResponseBytes``) that is written
/// and flushed once per read burst, at the end of the loop's turn (``ReplyFlusher``), as the RPC
/// port does. A leak report is the exception: its body (at most
/// ``HTTPResponder/maxLeakBodyBytes``, else 413) is answered by a task, and the connection closed
/// after the answer (whatever was sent after the report is dropped); at most
/// ``OffLoopTasks/limit`` reports at once on the port, and ``OffLoopTasks/limitPerSource`` from
/// one client address, the others answered 503.
///
/// - Requests are answered in order, so pipelining needs no queue of its own.
/// - A connection whose peer does not read its responses is not read from either until NIO's
///   write buffer drains below its low water mark: what is queued for it stays bounded.
/// - A request NIO's decoder refuses is answered 400 and the connection closed.
/// - A connection with no complete request for `idleTimeout` (since it opened or since its
///   last answer) is closed, however slowly its bytes trickle in.
package final class HTTPConnectionHandler: ChannelInboundHandler, RemovableChannelHandler, TurnEndFlushing {
    package typealias InboundIn = HTTPServerRequestPart
    package typealias OutboundOut = ByteBuffer

    private let responder: HTTPResponder
    /// The peer, judged once for the connection (trusted proxy or not), with its secret memo.
    private let peer: ForwardAuth.Peer
    /// Idle from the connection's start or its last answer (no frame deadline: a request's
    /// bytes trickling in count against the idle timeout).
    private var deadlines: ConnectionDeadlines
    private var timer = DeadlineTimer()
    private var request: HTTPRequestHead?
    /// The body of the leak report being read.
    private var leakBody: ByteBuffer?
    /// A leak report is being answered, a response said it closes the connection, or the peer
    /// sent what the decoder refused: nothing more is read or answered on this connection.
    private var finishing = false
    /// Responses of this read burst, written and flushed in `channelReadComplete`; one buffer
    /// for the connection's life, cleared (its storage kept) once the socket has taken a write.
    private var outbound = ByteBufferAllocator().buffer(capacity: 256)
    /// The last allowed response, written again for the same key.
    private var allowedResponses = AllowedResponseMemo()
    /// Busy from the first byte of a request to its answer (``OpenConnections``).
    private let activity: OpenConnections.Activity?
    /// The server is stopping: the request under way is answered, then the connection closed.
    private var quiescing = false
    /// Flushes the responses of a read burst at the end of the loop's turn; nil: at once.
    private let replyFlusher: ReplyFlusher?
    /// Whether this connection waits for `replyFlusher` this turn (kept by the flusher).
    package var flushQueued = false
    /// Where leak reports are stored, off the loop: counted, so that the port's loops outlive them.
    private let offLoop: OffLoopTasks

    /// `checkTally`: the tally of the connection's event loop, where its checks are counted.
    package init(
        responder: HTTPResponder, peer: String, idleTimeout: TimeAmount, offLoop: OffLoopTasks,
        activity: OpenConnections.Activity? = nil, replyFlusher: ReplyFlusher? = nil, checkTally: CheckTally? = nil
    ) {
        self.offLoop = offLoop
        self.replyFlusher = replyFlusher
        self.responder = responder
        self.peer = responder.peer(peer, tally: checkTally)
        self.deadlines = ConnectionDeadlines(idleTimeout: idleTimeout, frameTimeout: nil, openedAt: .now())
        self.activity = activity
    }

    package func handlerAdded(context: ChannelHandlerContext) { armTimer(context: context) }

    package func handlerRemoved(context: ChannelHandlerContext) { timer.cancel() }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !finishing else { return }
        switch unwrapInboundIn(data) {
        case .head(let head):
            request = head
            if responder.isLeakReport(head) {
                leakBody = ByteBuffer()
                if Self.expectsContinue(head) { answerExpectation(of: head, context: context) }
            }
        case .body(let part):
            guard var body = leakBody else { break }
            guard body.readableBytes + part.readableBytes <= HTTPResponder.maxLeakBodyBytes else {
                answerAndClose(Self.reportTooLarge, to: request, context: context)
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
                flush(context: context)
                answerLeakReport(
                    body, request: request,
                    reporter: responder.clientAddress.resolve(peer: peer.address, headers: request.headers).address,
                    context: context)
                return
            }
            let close = quiescing || !request.isKeepAlive
            append(responder.answer(request, peer: peer), to: request, close: close)
            activity?.restart(.idle)
            deadlines.unitCompleted(now: .now())
            if close { finish(context: context) }
        }
    }

    /// The server stops (``HTTPFrontend/stop()``): an idle connection is closed now, one in the
    /// middle of a request after its answer.
    package func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is ChannelShouldQuiesceEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        quiescing = true
        if request == nil && !finishing { finish(context: context) }
    }

    package func channelReadComplete(context: ChannelHandlerContext) {
        if let replyFlusher, outbound.readableBytes > 0 {
            replyFlusher.flushAtEndOfTurn(self, context: context)
        } else {
            flush(context: context)
        }
        armTimer(context: context)
        context.fireChannelReadComplete()
    }

    /// Write backpressure: a peer that does not read its responses is not read from either.
    package func channelWritabilityChanged(context: ChannelHandlerContext) {
        let writable = context.channel.isWritable
        if !finishing, let options = context.channel.syncOptions {
            try? options.setOption(.autoRead, value: writable)
            if writable { context.read() }
        }
        context.fireChannelWritabilityChanged()
    }

    private func answerLeakReport(
        _ body: ByteBuffer, request: HTTPRequestHead, reporter: String, context: ChannelHandlerContext
    ) {
        let loopBound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
        let (responder, eventLoop) = (responder, context.eventLoop)
        let started = offLoop.run(from: OffLoopTasks.source(of: reporter)) {
            let answer = await responder.reportLeaks(body, peer: reporter)
            eventLoop.execute {
                let (handler, context) = loopBound.value
                guard context.channel.isActive else { return }  // the reporter left; the report was acted on
                handler.answerAndClose(answer, to: request, context: context)
            }
        }
        if !started {
            responder.server.metrics?.countRefusal(.leakReportsInFlight)
            answerAndClose(Self.tooManyReports, to: request, context: context)
        }
    }

    /// The port has as many reports in flight as it takes (``OffLoopTasks/limit``), or as many of
    /// this client address's (``OffLoopTasks/limitPerSource``): this one is not read, and the
    /// reporter sends it again.
    private static var tooManyReports: HTTPResponder.Answer {
        var answer = HTTPResponder.text(.serviceUnavailable, "too many reports under way; send it again\n")
        answer.headers.add(name: "Retry-After", value: "1")
        return answer
    }

    private static var reportTooLarge: HTTPResponder.Answer {
        HTTPResponder.text(.payloadTooLarge, "a report is at most \(HTTPResponder.maxLeakBodyBytes) bytes\n")
    }

    /// Whether the client waits for `100 Continue` before sending its body (RFC 9110 §10.1.1:
    /// curl does so for a body over 1 KiB, and would wait a second for it).
    private static func expectsContinue(_ head: HTTPRequestHead) -> Bool {
        head.version == .http1_1 && head.headers["expect"].contains { $0.lowercased() == "100-continue" }
    }

    /// Tells a leak reporter waiting with `Expect: 100-continue` to send its body, or refuses at
    /// once a body announced larger than a report may be (the client then sends nothing).
    private func answerExpectation(of head: HTTPRequestHead, context: ChannelHandlerContext) {
        if let length = head.headers.first(name: "content-length").flatMap(Int.init),
            length > HTTPResponder.maxLeakBodyBytes
        {
            answerAndClose(Self.reportTooLarge, to: head, context: context)
            return
        }
        outbound.writeStaticString("HTTP/1.1 100 Continue\r\n\r\n")
        flush(context: context)
    }

    /// Serializes `answer` to `request` (nil: a request whose head was not understood) into the
    /// outbound buffer.
    private func append(_ answer: HTTPResponder.Answer, to request: HTTPRequestHead?, close: Bool) {
        let omitBody = request?.method == .HEAD
        // HTTP/1.0 closes after each response unless asked to keep the connection.
        let keepAlive = !close && request?.version == .http1_0
        if allowedResponses.write(answer, close: close, keepAlive: keepAlive, to: &outbound) { return }
        if !outbound.writeHTTPResponse(answer, omitBody: omitBody, close: close, keepAlive: keepAlive) {
            // A header value that would split the response (never one this port writes).
            let failed = HTTPResponder.text(.internalServerError, "response not encodable\n")
            _ = outbound.writeHTTPResponse(failed, omitBody: omitBody, close: close, keepAlive: keepAlive)
        }
    }

    package func flushGatheredReplies(context: ChannelHandlerContext) { flush(context: context) }

    private func flush(context: ChannelHandlerContext) {
        guard outbound.readableBytes > 0 else { return }
        context.writeAndFlush(wrapOutboundOut(outbound), promise: nil)
        outbound.clear()
    }

    /// Sends what is pending and `answer`, saying the connection closes, then closes it.
    private func answerAndClose(
        _ answer: HTTPResponder.Answer, to request: HTTPRequestHead?, context: ChannelHandlerContext
    ) {
        append(answer, to: request, close: true)
        finish(context: context)
    }

    /// Sends what is pending, then closes: nothing more is read or answered.
    private func finish(context: ChannelHandlerContext) {
        finishing = true
        let pending = outbound
        outbound.clear()
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(pending)).whenComplete { _ in channel.close(promise: nil) }
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

    /// A request the decoder refused (bad syntax, a head over its limits) is answered 400, after
    /// the answers already due, and the connection closed; any other error closes it.
    package func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard !finishing, error is HTTPParserError else {
            context.close(promise: nil)
            return
        }
        answerAndClose(HTTPResponder.text(.badRequest, "bad request\n"), to: nil, context: context)
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
