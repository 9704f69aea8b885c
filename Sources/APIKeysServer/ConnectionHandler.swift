import APIKeysCore
import APIKeysStore
import APIKeysWire
import Logging
import NIOCore
import NIOPosix

/// Serves one connection: splits frames in place, answers Check on the event loop from memory,
/// hands KeyAdmin calls to the thread pool, and writes the replies of one read burst at once.
final class ConnectionHandler: ChannelInboundHandler, TurnEndFlushing {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// What every connection of a server shares.
    struct Shared: Sendable {
        let service: KeyService
        /// Every KeyAdmin method, routed to the key service.
        let adminRoutes: RPCRouter<AdminCallContext>
        /// Authenticates and authorizes the KeyAdmin calls.
        let adminGate: AdminGate
        /// Authorize's methods that need no admin token and run off the event loop (ReportLeakedKey).
        let publicRoutes: RPCRouter<PublicCallContext>
        let state: ServerState
        let maxFrameSize: Int
        let maxAdminCallsInFlight: Int
        /// Close a connection that sends no complete frame for this long; nil: never.
        let idleTimeout: TimeAmount?
        /// A frame that has begun must be complete within this, else the connection is closed.
        let frameTimeout: TimeAmount
        /// One per event loop, by `ObjectIdentifier` of the loop.
        let readResumers: [ObjectIdentifier: ReadResumer]
        let replyFlushers: ReplyFlushers
        let metrics: ServerMetrics?
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
    /// Reading, pauses, deadlines, closing and the calls in flight; its clocks start at accept.
    private var connection: ConnectionStateMachine
    /// Fires at `connection`'s next deadline.
    private var timer = DeadlineTimer()
    /// Frames cut since the last `channelReadComplete`.
    private var framesThisBurst = 0
    /// Decodes calls, and decides and answers Check calls.
    private let checks: CheckReplier
    /// This connection's event loop's check tally (nil without metrics), set when added.
    private var checkTally: CheckTally?
    /// This connection's event loop's ``ReplyFlusher``, set when added.
    private var replyFlusher: ReplyFlusher?
    /// Whether this connection waits for `replyFlusher` this turn (kept by the flusher).
    var flushQueued = false

    /// The peer's IP address, recorded by calls that need no admin token.
    private let peerAddress: String
    /// What this connection is doing, for the port's choice of whom to close at the limit.
    private let activity: OpenConnections.Activity

    init(shared: Shared, remoteAddress: String, peerAddress: String, activity: OpenConnections.Activity) {
        self.shared = shared
        self.activity = activity
        self.peerAddress = peerAddress
        self.checks = CheckReplier(service: shared.service)
        self.inbound = FrameBuffer(maxFrameSize: shared.maxFrameSize)
        self.logger = shared.logger
        self.logger[metadataKey: "peer"] = "\(remoteAddress)"
        self.connection = ConnectionStateMachine(
            idleTimeout: shared.idleTimeout, frameTimeout: shared.frameTimeout,
            maxCallsInFlight: shared.maxAdminCallsInFlight, openedAt: .now())
    }

    func handlerAdded(context: ChannelHandlerContext) {
        checkTally = shared.metrics?.tally(for: context.eventLoop)
        replyFlusher = shared.replyFlushers.flusher(for: context.eventLoop)
    }

    func channelActive(context: ChannelHandlerContext) {
        armTimer(context: context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer.cancel()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !connection.isClosing else { return }
        inbound.append(unwrapInboundIn(data))
        do {
            while !connection.isClosing, let frame = try inbound.nextFrame() {
                framesThisBurst += 1
                handle(frame: frame, context: context)
            }
        } catch let error as FramingError where error.code == .frameTooLarge {
            let message = "frame of \(error.length ?? 0) bytes exceeds the limit of \(error.limit ?? 0) bytes"
            append(Envelope(status: .resourceExhausted, statusMessage: message), context: context)
            closeForProtocolError(message, context: context)
        } catch {
            closeForProtocolError("\(error)", context: context)
        }
        inbound.compact()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        let completedFrames = framesThisBurst
        let now = NIODeadline.now()
        if framesThisBurst > 0 || inbound.bufferedBytes > 0 {
            connection.readBurstEnded(
                completedFrames: framesThisBurst, bufferedBytes: inbound.bufferedBytes, now: now)
            armTimer(context: context)
        }
        framesThisBurst = 0
        flushAtEndOfTurn(context: context)
        pauseReadingForAudit(checksInBurst: completedFrames, now: now, context: context)
        updateActivity(frameStarted: completedFrames > 0, now: now)
    }

    /// Tells the port's connection table what this connection is doing: busy while it has calls
    /// running or is not read from (its complete traffic waits), incomplete while a frame is only
    /// partly here (since the frame began: `frameStarted` when this burst completed one before
    /// it), else idle since now.
    private func updateActivity(frameStarted: Bool = false, now: NIODeadline = .now()) {
        if !connection.isReading || connection.callsInFlight > 0 {
            activity.set(.busy, now: now)
        } else if inbound.bufferedBytes > 0 {
            if frameStarted { activity.restart(.incomplete, now: now) } else { activity.set(.incomplete, now: now) }
        } else {
            activity.restart(.idle, now: now)
        }
    }

    /// Write backpressure: a client that does not read its replies is not read from either, until
    /// NIO's write buffer is below its low water mark again, so the replies queued for one
    /// connection stay bounded (by the high water mark plus one read burst) and others are unaffected.
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        apply(connection.writabilityChanged(isWritable: context.channel.isWritable, now: .now()), context: context)
        context.fireChannelWritabilityChanged()
    }

    /// Backpressure: while the audit writer is far behind, read nothing more from this connection
    /// (TCP then slows the client) instead of refusing checks, until this loop's ``ReadResumer``
    /// sees the backlog gone. Heavy senders (a burst of ``ConnectionStateMachine/heavyBurst``
    /// checks or more) stop first, everyone once the queue is nearly full.
    private func pauseReadingForAudit(checksInBurst: Int, now: NIODeadline, context: ChannelHandlerContext) {
        let pressure = shared.service.auditPressure
        guard pressure != .none, let resumer = shared.readResumers[ObjectIdentifier(context.eventLoop)] else {
            return
        }
        let wasPaused = connection.pausedForAudit
        let action = connection.auditPressure(pressure, checksInBurst: checksInBurst, now: now)
        guard !wasPaused, connection.pausedForAudit else { return }
        apply(action, context: context)
        let loopBound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
        resumer.waitForBacklog {
            let (handler, context) = loopBound.value
            handler.apply(handler.connection.auditCaughtUp(now: .now()), context: context)
        }
    }

    /// Carries out what the state machine decided about reading, and keeps its deadlines.
    private func apply(_ action: ConnectionStateMachine.ReadAction, context: ChannelHandlerContext) {
        guard context.channel.isActive else { return }
        if action != .none, let options = context.channel.syncOptions {
            try? options.setOption(.autoRead, value: action == .startReading)
            if action == .startReading { context.read() }
            updateActivity()
        }
        armTimer(context: context)
    }

    /// Keeps the one timer set for the state's next deadline; when it fires, the connection is
    /// closed if its time ran out (idle, or a frame not completed in time), else armed again.
    private func armTimer(context: ChannelHandlerContext) {
        guard timer.needsArming(for: connection.nextDeadline) else { return }
        let loopBound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
        timer.arm(for: connection.nextDeadline, on: context.eventLoop) {
            let (handler, context) = loopBound.value
            handler.timer.fired()
            guard context.channel.isActive else { return }
            switch handler.connection.deadlineReached(now: .now()) {
            case .frameNotCompleted:
                handler.logger.info(
                    "closing connection: frame not completed in time",
                    metadata: [
                        "frameTimeout": "\(handler.shared.frameTimeout)",
                        "bufferedBytes": "\(handler.inbound.bufferedBytes)",
                    ])
                context.close(promise: nil)
            case .idle:
                handler.logger.info("closing idle connection")
                context.close(promise: nil)
            case nil:
                handler.armTimer(context: context)
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
            switch try checks.codec.decode(frame: frame) {
            case .check(let callID, let check, let repeated):
                answerCheck(callID: callID, check, repeated: repeated, context: context)
                return
            case .invalidCheck(let callID, let error):
                reply(
                    to: Envelope(callID: callID, method: Authorize.check.path), error: RPCError(error),
                    context: context)
                return
            case .other(let envelope):
                request = envelope
            }
        } catch {
            closeForProtocolError("\(error)", context: context)
            return
        }
        // Check never gets here (the codec answers it above).
        let logger = logger
        if let route = shared.adminRoutes.route(for: request.method) {
            let gate = shared.adminGate
            startCall(request, method: route.method, context: context) { deadline in
                try await gate.run(
                    route.method, authorization: request.metadata[MetadataKey.authorization], deadline: deadline,
                    logger: logger
                ) { try await route(payload: request.payload, context: $0) }
            }
        } else if let route = shared.publicRoutes.route(for: request.method) {
            let peerAddress = peerAddress
            startCall(request, method: route.method, context: context) { deadline in
                try await route(
                    payload: request.payload, context: PublicCallContext(peerAddress: peerAddress, deadline: deadline))
            }
        } else {
            reply(
                to: request, error: RPCError(.unimplemented, "unknown method \"\(request.method)\""), context: context)
        }
    }

    /// The hot path: decide from memory, encode the reply straight into the outbound buffer.
    private func answerCheck(callID: UInt64, _ check: CheckRequest, repeated: Bool, context: ChannelHandlerContext) {
        do {
            try checks.answer(callID: callID, check, repeated: repeated, tally: checkTally, to: &outbound)
        } catch {
            reply(to: Envelope(callID: callID, method: Authorize.check.path), error: RPCError(error), context: context)
        }
    }

    /// Runs a call that is not a Check (`run`, given the call's deadline) in a task on the store's
    /// executor, at most ``Shared/maxAdminCallsInFlight`` at a time on this connection, and
    /// answers it on the event loop.
    private func startCall(
        _ request: Envelope, method: any RPCMethodDescriptor, context: ChannelHandlerContext,
        _ run: @escaping @Sendable (Deadline) async throws -> [UInt8]
    ) {
        guard connection.callStarting() else {
            let message = "more than \(shared.maxAdminCallsInFlight) calls besides Check in flight on this connection"
            reply(to: request, error: RPCError(.resourceExhausted, message), context: context)
            return
        }
        shared.state.adminCallStarted()
        // The deadline counts from the frame's arrival. It is checked when the call starts and
        // again before its transaction commits (KeyService): a call that commits is answered with
        // its result however late, so a DEADLINE_EXCEEDED reply always means nothing was changed.
        let deadline = Deadline.after(milliseconds: request.timeoutMS)
        let loopBound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
        let answered = context.eventLoop.makePromise(of: [UInt8].self)
        Task(executorPreference: StoreExecutor.shared) {
            do {
                answered.succeed(try await run(deadline))
            } catch {
                answered.fail(error)
            }
        }
        answered.futureResult.whenComplete { result in
            let (handler, context) = loopBound.value
            handler.connection.callFinished()
            handler.shared.state.adminCallFinished()
            handler.updateActivity()
            let status: StatusCode
            switch result {
            case .success(let payload):
                handler.reply(to: request, payload: payload, context: context)
                status = .ok
            case .failure(let error):
                let failure = RPCError(error)
                handler.reply(to: request, error: failure, context: context)
                status = failure.code
            }
            handler.shared.metrics?.recordAdminCall(method: method.name, status: "\(status)")
            handler.flushReplies(context: context)
        }
    }

    // MARK: Replies

    private func reply(to request: Envelope, payload: [UInt8], context: ChannelHandlerContext) {
        append(Envelope(callID: request.callID, method: request.method, payload: payload), context: context)
    }

    private func reply(to request: Envelope, error: RPCError, context: ChannelHandlerContext) {
        error.logIfServerFailure(to: logger, method: request.method)
        // Echo the method only when it is a known one: an unknown method string may not be encodable.
        let method = WireContract.method(path: request.method)?.path ?? ""
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

    /// Replies to a read burst go out once the loop has read every connection ready this turn.
    private func flushAtEndOfTurn(context: ChannelHandlerContext) {
        guard outbound.readableBytes > 0 else { return }
        guard let replyFlusher else { return flushReplies(context: context) }
        replyFlusher.flushAtEndOfTurn(self, context: context)
    }

    func flushGatheredReplies(context: ChannelHandlerContext) { flushReplies(context: context) }

    private func flushReplies(context: ChannelHandlerContext) {
        guard outbound.readableBytes > 0 else { return }
        context.writeAndFlush(wrapOutboundOut(outbound), promise: nil)
        outbound.clear()
    }

    /// Sends what is pending, then closes: the contract's answer to a bad frame.
    private func closeForProtocolError(_ reason: String, context: ChannelHandlerContext) {
        guard connection.protocolError() else { return }
        logger.warning("closing connection: protocol error", metadata: ["reason": "\(reason)"])
        let replies = outbound
        outbound.clear()
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(replies)).whenComplete { _ in channel.close(promise: nil) }
    }
}
