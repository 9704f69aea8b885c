import APIKeysCore
import APIKeysStore
import APIKeysWire
import Logging
import NIOCore
import NIOPosix

/// Serves one connection: splits frames in place, answers Check on the event loop from memory,
/// hands KeyAdmin calls to the thread pool, and writes the replies of one read burst at once.
final class ConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// What every connection of a server shares.
    struct Shared: Sendable {
        let service: KeyService
        let dispatcher: AdminDispatcher
        let threadPool: NIOThreadPool
        let state: ServerState
        let maxFrameSize: Int
        let maxAdminCallsInFlight: Int
        /// Close a connection that sends nothing for this long; nil: never.
        let idleTimeout: TimeAmount?
        /// One per event loop, by `ObjectIdentifier` of the loop.
        let readResumers: [ObjectIdentifier: ReadResumer]
        let logger: Logger
    }

    private let shared: Shared
    private var logger: Logger
    /// Bytes read but not yet framed.
    private var inbound: FrameBuffer
    /// Replies gathered during this read burst, written and flushed once in `channelReadComplete`.
    /// One buffer for the connection's life: once the socket has taken a write, clearing it
    /// reuses its storage instead of allocating for every burst.
    private var outbound = ByteBufferAllocator().buffer(capacity: 512)
    /// When this connection last sent something (for the idle timeout).
    private var lastReadAt = NIODeadline.now()
    private var idleCheck: Scheduled<Void>?
    private var adminCallsInFlight = 0
    private var closing = false
    private var readingPaused = false
    /// Decodes calls and encodes Check replies with one reused arena.
    private let codec = CheckCallCodec()

    init(shared: Shared, remoteAddress: String) {
        self.shared = shared
        self.inbound = FrameBuffer(maxFrameSize: shared.maxFrameSize)
        self.logger = shared.logger
        self.logger[metadataKey: "peer"] = "\(remoteAddress)"
    }

    func channelActive(context: ChannelHandlerContext) {
        scheduleIdleCheck(context: context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        idleCheck?.cancel()
        idleCheck = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        inbound.append(unwrapInboundIn(data))
        do {
            while !closing, let frame = try inbound.nextFrame() {
                handle(frame: frame, context: context)
            }
        } catch FramingError.frameTooLarge(let length, let limit) {
            let message = "frame of \(length) bytes exceeds the limit of \(limit) bytes"
            append(Envelope(status: .resourceExhausted, statusMessage: message), context: context)
            closeForProtocolError(message, context: context)
        } catch {
            closeForProtocolError("\(error)", context: context)
        }
        inbound.compact()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if shared.idleTimeout != nil { lastReadAt = .now() }
        flushReplies(context: context)
        if shared.service.auditIsBacklogged { pauseReading(context: context) }
    }

    /// Backpressure: while the audit writer is far behind, read nothing more from this connection
    /// (TCP then slows the client) instead of refusing checks, until this loop's ``ReadResumer``
    /// sees the backlog gone.
    private func pauseReading(context: ChannelHandlerContext) {
        guard !readingPaused, let options = context.channel.syncOptions,
            let resumer = shared.readResumers[ObjectIdentifier(context.eventLoop)]
        else { return }
        try? options.setOption(.autoRead, value: false)
        readingPaused = true
        let loopBound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
        resumer.waitForBacklog {
            let (handler, context) = loopBound.value
            handler.readingPaused = false
            guard context.channel.isActive else { return }
            try? context.channel.syncOptions?.setOption(.autoRead, value: true)
            context.read()
        }
    }

    /// Closes the connection once it has sent nothing for the idle timeout. One timer per
    /// connection, re-armed from the last read when it fires (not on every read).
    private func scheduleIdleCheck(context: ChannelHandlerContext) {
        guard let timeout = shared.idleTimeout else { return }
        let loopBound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
        idleCheck = context.eventLoop.scheduleTask(deadline: lastReadAt + timeout) {
            let (handler, context) = loopBound.value
            guard context.channel.isActive else { return }
            if NIODeadline.now() - handler.lastReadAt >= timeout {
                handler.logger.info("closing idle connection")
                context.close(promise: nil)
            } else {
                handler.scheduleIdleCheck(context: context)
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    // MARK: Calls

    private func handle(frame: ByteBuffer, context: ChannelHandlerContext) {
        let request: Envelope
        do {
            switch try codec.decode(frame: frame) {
            case .check(let callID, let check):
                answerCheck(callID: callID, check, context: context)
                return
            case .invalidCheck(let callID, let error):
                reply(
                    to: Envelope(callID: callID, method: Method.check.rawValue), error: RPCError(error),
                    context: context)
                return
            case .other(let envelope):
                request = envelope
            }
        } catch {
            closeForProtocolError("\(error)", context: context)
            return
        }
        // Check never gets here (the codec answers it above), so a known method is a KeyAdmin one.
        guard let method = Method(rawValue: request.method), method.isKeyAdmin else {
            reply(
                to: request, error: RPCError(.unimplemented, "unknown method \"\(request.method)\""), context: context)
            return
        }
        startAdminCall(method, request: request, context: context)
    }

    /// The hot path: decide from memory, encode the reply straight into the outbound buffer.
    private func answerCheck(callID: UInt64, _ check: CheckRequest, context: ChannelHandlerContext) {
        do {
            let outcome = try shared.service.check(
                secret: check.key, permissions: check.permissions, resource: check.resource,
                clientAddress: check.clientAddress)
            try codec.writeCheckReply(callID: callID, response: CheckResponse(outcome), to: &outbound)
        } catch {
            reply(to: Envelope(callID: callID, method: Method.check.rawValue), error: RPCError(error), context: context)
        }
    }

    private func startAdminCall(_ method: Method, request: Envelope, context: ChannelHandlerContext) {
        guard adminCallsInFlight < shared.maxAdminCallsInFlight else {
            let message = "more than \(shared.maxAdminCallsInFlight) KeyAdmin calls in flight on this connection"
            reply(to: request, error: RPCError(.resourceExhausted, message), context: context)
            return
        }
        adminCallsInFlight += 1
        shared.state.adminCallStarted()
        // The deadline counts from the frame's arrival. It is checked when the call starts and
        // again before its transaction commits (KeyService): a call that commits is answered with
        // its result however late, so a DEADLINE_EXCEEDED reply always means nothing was changed.
        let deadline = Deadline.after(milliseconds: request.timeoutMS)
        let loopBound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
        let dispatcher = shared.dispatcher
        let service = shared.service
        let logger = logger
        shared.threadPool.runIfActive(eventLoop: context.eventLoop) { () throws -> [UInt8] in
            try deadline.check()
            let token = Self.bearerToken(request.metadata[MetadataKey.authorization])
            guard let token, let actor = try service.adminTokenName(for: token) else {
                throw RPCError(
                    .unauthenticated,
                    token == nil
                        ? "KeyAdmin calls need \"authorization: Bearer <admin token>\"" : "the admin token is not valid"
                )
            }
            do {
                let reply = try dispatcher.handle(method, payload: request.payload, actor: actor, deadline: deadline)
                logger.info("admin call", metadata: ["method": "\(method.rawValue)", "actor": "\(actor)"])
                return reply
            } catch {
                let status = RPCError(error)
                logger.info(
                    "admin call failed",
                    metadata: [
                        "method": "\(method.rawValue)", "actor": "\(actor)", "status": "\(status.code)",
                    ])
                throw status
            }
        }.whenComplete { result in
            let (handler, context) = loopBound.value
            handler.adminCallsInFlight -= 1
            handler.shared.state.adminCallFinished()
            switch result {
            case .success(let payload): handler.reply(to: request, payload: payload, context: context)
            case .failure(let error): handler.reply(to: request, error: RPCError(error), context: context)
            }
            handler.flushReplies(context: context)
        }
    }

    /// The token of an `authorization: Bearer <token>` value.
    private static func bearerToken(_ value: String?) -> String? {
        guard let value, value.hasPrefix(SecretFormat.bearerScheme) else { return nil }
        return String(value.dropFirst(SecretFormat.bearerScheme.count))
    }

    // MARK: Replies

    private func reply(to request: Envelope, payload: [UInt8], context: ChannelHandlerContext) {
        append(Envelope(callID: request.callID, method: request.method, payload: payload), context: context)
    }

    private func reply(to request: Envelope, error: RPCError, context: ChannelHandlerContext) {
        // Echo the method only when it is a known one: an unknown method string may not be encodable.
        let method = Method(rawValue: request.method)?.rawValue ?? ""
        append(
            Envelope(callID: request.callID, method: method, status: error.code, statusMessage: error.message),
            context: context)
    }

    private func append(_ envelope: Envelope, context: ChannelHandlerContext) {
        do {
            try Framing.write(envelope, to: &outbound)
        } catch {
            logger.error("reply not encodable", metadata: ["error": "\(error)"])
            try? Framing.write(
                Envelope(callID: envelope.callID, status: .internal, statusMessage: "reply not encodable"),
                to: &outbound)
        }
    }

    private func flushReplies(context: ChannelHandlerContext) {
        guard outbound.readableBytes > 0 else { return }
        context.writeAndFlush(wrapOutboundOut(outbound), promise: nil)
        outbound.clear()
    }

    /// Sends what is pending, then closes: the contract's answer to a bad frame.
    private func closeForProtocolError(_ reason: String, context: ChannelHandlerContext) {
        guard !closing else { return }
        closing = true
        logger.warning("closing connection: protocol error", metadata: ["reason": "\(reason)"])
        let replies = outbound
        outbound.clear()
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(replies)).whenComplete { _ in channel.close(promise: nil) }
    }
}
