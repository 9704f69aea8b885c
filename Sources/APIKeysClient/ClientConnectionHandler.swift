import APIKeysWire
import NIOCore

/// A call on its way out: its frame, and the promise its reply completes.
struct OutboundCall {
    let callID: UInt64
    let frame: ByteBuffer
    let timeout: TimeAmount
    let promise: EventLoopPromise<Envelope>
}

/// Matches replies to calls by `call_id` on one connection. Every promise is completed exactly
/// once, on the event loop: by its reply, its deadline, or the connection closing.
final class ClientConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = OutboundCall
    typealias OutboundOut = ByteBuffer

    private var inbound: FrameBuffer
    private var pending: [UInt64: (promise: EventLoopPromise<Envelope>, timer: Scheduled<Void>)] = [:]
    /// Why the server said the connection is ending (a reply with call_id 0), if it did.
    private var closeReason: String?

    init(maxFrameSize: Int) {
        self.inbound = FrameBuffer(maxFrameSize: maxFrameSize)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let call = unwrapOutboundIn(data)
        let loopBound = NIOLoopBound((handler: self, callID: call.callID), eventLoop: context.eventLoop)
        let timer = context.eventLoop.scheduleTask(in: call.timeout) {
            let (handler, callID) = loopBound.value
            handler.complete(
                callID,
                with: .failure(
                    APIKeysClientError(
                        code: .deadlineExceeded,
                        message:
                            "no reply from the server within \(Self.describe(call.timeout)); a KeyAdmin call may or may not have taken effect"
                    )))
        }
        pending[call.callID] = (call.promise, timer)
        promise?.succeed()  // the call is this handler's to complete from here on
        context.write(wrapOutboundOut(call.frame)).whenFailure { error in
            let (handler, callID) = loopBound.value
            handler.complete(
                callID,
                with: .failure(
                    APIKeysClientError(
                        code: .unavailable, message: "send failed: \(APIKeysClient.plainReason(error))", cause: error)))
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        inbound.append(unwrapInboundIn(data))
        do {
            while let frame = try inbound.nextFrame() {
                let reply = try Envelope(frame: frame)
                if reply.callID == 0 && reply.status != .ok { closeReason = "\(reply.status): \(reply.statusMessage)" }
                complete(reply.callID, with: .success(reply))
            }
        } catch {
            closeReason = "bad frame from server: \(error)"
            context.close(promise: nil)
        }
        inbound.compact()
    }

    func channelInactive(context: ChannelHandlerContext) {
        let error = APIKeysClientError(
            code: .unavailable, message: "connection closed" + (closeReason.map { " (\($0))" } ?? ""))
        for callID in Array(pending.keys) { complete(callID, with: .failure(error)) }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A TLS handshake refused by either side, say: the reason the calls in flight will see.
        if closeReason == nil { closeReason = "\(error)" }
        context.close(promise: nil)
    }

    private static func describe(_ amount: TimeAmount) -> String {
        let ms = amount.nanoseconds / 1_000_000
        return ms % 1000 == 0 ? "\(ms / 1000) s" : "\(ms) ms"
    }

    private func complete(_ callID: UInt64, with result: Result<Envelope, any Error>) {
        guard let call = pending.removeValue(forKey: callID) else { return }
        call.timer.cancel()
        call.promise.completeWith(result)
    }
}
