import APIKeysWire
import Histogram
import NIOCore
import Synchronization

/// What every connection of a load run shares: whether to keep sending, whether to record, and
/// with a request count, how many replies are left to record.
final class LoadControl: Sendable {
    let running = Atomic<Bool>(true)
    let recording = Atomic<Bool>(false)
    private let counted: Bool
    private let budget: Atomic<Int>
    /// With a request count: when the last counted reply arrived (uptime nanoseconds), else 0.
    let lastCountedAt = Atomic<UInt64>(0)

    /// `requests`: stop recording after this many replies; nil: record until told.
    init(requests: Int?) {
        counted = requests != nil
        budget = Atomic(requests ?? 0)
    }

    /// With a request count, true once every reply asked for is recorded.
    var budgetSpent: Bool { counted && budget.load(ordering: .relaxed) <= 0 }

    /// Whether a reply arriving at `now` is one to record (it takes one from the budget).
    func takeReply(at now: UInt64) -> Bool {
        guard counted else { return true }
        let left = budget.subtract(1, ordering: .relaxed).newValue
        if left == 0 { lastCountedAt.store(now, ordering: .relaxed) }
        return left >= 0
    }
}

/// What one connection saw. Counted in plain fields (no dictionary per reply: the generator
/// must cost less than what it measures).
struct LoadTally: Sendable {
    var latencies = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
    var replies = 0
    var ok = 0
    /// Replies with a status other than OK (rare), by status.
    var failures: [StatusCode: Int] = [:]
    var allowed = 0
    var denied401 = 0
    var denied403 = 0

    var statuses: [StatusCode: Int] { ok > 0 ? failures.merging([.ok: ok], uniquingKeysWith: +) : failures }

    var decisions: [String: Int] {
        ["allow": allowed, "deny 401": denied401, "deny 403": denied403].filter { $0.value > 0 }
    }

    mutating func add(_ other: LoadTally) {
        latencies.add(other.latencies)
        replies += other.replies
        ok += other.ok
        failures.merge(other.failures, uniquingKeysWith: +)
        allowed += other.allowed
        denied401 += other.denied401
        denied403 += other.denied403
    }
}

/// Keeps `frames.count` calls in flight on one connection: every reply sends its slot's frame
/// again. Frames are encoded once up front (one per slot, each with its own call_id), so the
/// generator spends its time on the socket and on decoding replies, not on building requests.
final class LoadConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let frames: [ByteBuffer]
    private let control: LoadControl
    private let decodeCheck: Bool
    private let finished: EventLoopPromise<LoadTally>
    private var sentAt: [UInt64]
    private var inFlight = 0
    private var inbound = FrameBuffer(maxFrameSize: Framing.defaultClientMaxFrameSize)
    private var outbound: ByteBuffer?
    private var tally = LoadTally()
    private let codec = CheckCallCodec()

    init(frames: [ByteBuffer], control: LoadControl, decodeCheck: Bool, finished: EventLoopPromise<LoadTally>) {
        self.frames = frames
        self.control = control
        self.decodeCheck = decodeCheck
        self.finished = finished
        self.sentAt = Array(repeating: 0, count: frames.count)
    }

    func channelActive(context: ChannelHandlerContext) {
        var burst = context.channel.allocator.buffer(capacity: frames.reduce(0) { $0 + $1.readableBytes })
        let now = NIODeadline.now().uptimeNanoseconds
        for slot in frames.indices {
            var frame = frames[slot]
            burst.writeBuffer(&frame)
            sentAt[slot] = now
        }
        inFlight = frames.count
        context.writeAndFlush(wrapOutboundOut(burst), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        inbound.append(unwrapInboundIn(data))
        let now = NIODeadline.now().uptimeNanoseconds
        let recording = control.recording.load(ordering: .relaxed)
        let running = control.running.load(ordering: .relaxed)
        do {
            while let frame = try inbound.nextFrame() {
                let reply = try codec.decodeReply(frame: frame, payload: decodeCheck && recording ? .decision : .none)
                let slot = Int(reply.callID) - 1
                guard frames.indices.contains(slot) else { throw FramingError.emptyFrame }
                inFlight -= 1
                if recording, control.takeReply(at: now) { record(reply, latency: now - sentAt[slot]) }
                if running {
                    if outbound == nil { outbound = context.channel.allocator.buffer(capacity: 4096) }
                    var frame = frames[slot]
                    outbound!.writeBuffer(&frame)
                    sentAt[slot] = now
                    inFlight += 1
                }
            }
        } catch {
            tally.failures[.internal, default: 0] += 1
            context.close(promise: nil)
        }
        inbound.compact()
        if !running && inFlight == 0 { context.close(promise: nil) }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if let buffer = outbound {
            outbound = nil
            context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        finished.succeed(tally)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private func record(_ reply: CheckCallCodec.Reply, latency: UInt64) {
        _ = tally.latencies.record(latency)
        tally.replies += 1
        guard reply.status == .ok else {
            tally.failures[reply.status, default: 0] += 1
            return
        }
        tally.ok += 1
        switch (reply.decision, reply.reason) {
        case (nil, _): break
        case (.allow, _): tally.allowed += 1
        case (_, .missingPermission), (_, .ipNotAllowed): tally.denied403 += 1
        default: tally.denied401 += 1
        }
    }
}
