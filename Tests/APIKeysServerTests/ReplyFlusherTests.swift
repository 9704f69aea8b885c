import APIKeysServer
import NIOCore
import NIOEmbedded
import Testing

/// ``ReplyFlusher`` on one embedded loop: the replies that connections gather while the loop
/// reads them leave only once the loop has read every one, and each turn starts afresh.
@Suite struct ReplyFlusherTests {
    /// Holds what it reads as its reply and asks the flusher at the end of the read, as the
    /// ports' handlers do.
    final class Gatherer: ChannelInboundHandler, TurnEndFlushing {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let flusher: ReplyFlusher
        var gathered: [ByteBuffer] = []
        var flushes = 0
        var flushQueued = false

        init(flusher: ReplyFlusher) { self.flusher = flusher }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) { gathered.append(unwrapInboundIn(data)) }

        func channelReadComplete(context: ChannelHandlerContext) {
            // Asked twice in a turn: queued once.
            flusher.flushAtEndOfTurn(self, context: context)
            flusher.flushAtEndOfTurn(self, context: context)
        }

        func flushGatheredReplies(context: ChannelHandlerContext) {
            flushes += 1
            for reply in gathered { context.write(wrapOutboundOut(reply), promise: nil) }
            gathered = []
            context.flush()
        }
    }

    @Test func repliesLeaveOnceTheLoopHasReadEveryReadyConnection() throws {
        let loop = EmbeddedEventLoop()
        let flusher = ReplyFlusher(eventLoop: loop)
        let handlers = (0..<3).map { _ in Gatherer(flusher: flusher) }
        let channels = handlers.map { EmbeddedChannel(handler: $0, loop: loop) }

        for turn in 0..<2 {
            for (index, channel) in channels.enumerated() {
                try channel.writeInbound(ByteBuffer(string: "turn \(turn) connection \(index)"))
            }
            for channel in channels { #expect(try channel.readOutbound(as: ByteBuffer.self) == nil) }
            loop.run()
            for (index, channel) in channels.enumerated() {
                #expect(
                    try channel.readOutbound(as: ByteBuffer.self)
                        == ByteBuffer(string: "turn \(turn) connection \(index)"))
                #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
            }
            #expect(handlers.map(\.flushes) == Array(repeating: turn + 1, count: handlers.count))
        }
        for channel in channels { _ = try channel.finish() }
    }
}
