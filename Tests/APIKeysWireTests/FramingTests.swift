import NIOCore
import NIOEmbedded
import Testing
@testable import APIKeysWire

@Suite struct FramingTests {
    private func makeChannel(max: Int = 64) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(maxFrameSize: max)))
        return channel
    }

    private func frame(_ body: [UInt8]) -> [UInt8] {
        withUnsafeBytes(of: UInt32(body.count).bigEndian) { Array($0) } + body
    }

    @Test func splitFrameIsReassembled() throws {
        let channel = try makeChannel()
        let bytes = frame([1, 2, 3, 4, 5])
        for byte in bytes {
            #expect(try channel.readInbound(as: ByteBuffer.self) == nil)
            try channel.writeInbound(ByteBuffer(bytes: [byte]))
        }
        #expect(try channel.readInbound(as: ByteBuffer.self) == ByteBuffer(bytes: [1, 2, 3, 4, 5]))
        #expect(try channel.finish().isClean)
    }

    @Test func mergedFramesAreSplit() throws {
        let channel = try makeChannel()
        try channel.writeInbound(ByteBuffer(bytes: frame([1]) + frame([2, 2]) + frame([3, 3, 3])))
        #expect(try channel.readInbound(as: ByteBuffer.self) == ByteBuffer(bytes: [1]))
        #expect(try channel.readInbound(as: ByteBuffer.self) == ByteBuffer(bytes: [2, 2]))
        #expect(try channel.readInbound(as: ByteBuffer.self) == ByteBuffer(bytes: [3, 3, 3]))
        #expect(try channel.readInbound(as: ByteBuffer.self) == nil)
    }

    @Test func zeroLengthFrameIsAnError() throws {
        let channel = try makeChannel()
        #expect(throws: FramingError.emptyFrame) { try channel.writeInbound(ByteBuffer(bytes: [0, 0, 0, 0])) }
    }

    @Test func oversizeFrameIsRejectedBeforeItsBodyArrives() throws {
        let channel = try makeChannel(max: 64)
        #expect(throws: FramingError.frameTooLarge(length: 65, limit: 64)) {
            try channel.writeInbound(ByteBuffer(bytes: [0, 0, 0, 65]))
        }
    }

    @Test func frameOfExactlyTheMaximumIsAccepted() throws {
        let channel = try makeChannel(max: 64)
        try channel.writeInbound(ByteBuffer(bytes: frame(Array(repeating: 7, count: 64))))
        #expect(try channel.readInbound(as: ByteBuffer.self)?.readableBytes == 64)
    }

    @Test func envelopeEncoderAndDecoderAgree() throws {
        let channel = try makeChannel(max: 1 << 20)
        try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(EnvelopeFrameEncoder()))
        let envelope = Envelope(callID: 9, method: Authorize.check.path, payload: [0, 1, 2])
        try channel.writeOutbound(envelope)
        let written = try #require(try channel.readOutbound(as: ByteBuffer.self))
        try channel.writeInbound(written)
        let body = try #require(try channel.readInbound(as: ByteBuffer.self))
        #expect(try Envelope(frame: body) == envelope)
    }

    @Test func garbageFrameBodyIsAMalformedEnvelope() throws {
        #expect(throws: FramingError.self) { try Envelope(frame: ByteBuffer(bytes: [0xFF, 0xFF, 0xFF])) }
    }

    @Test func frameBufferCutsFramesAcrossReadsAndKeepsTheRest() throws {
        var buffer = FrameBuffer(maxFrameSize: 64)
        let bytes = frame([1, 2, 3]) + frame([4]) + frame([5, 6])
        buffer.append(ByteBuffer(bytes: bytes.prefix(5)))
        #expect(try buffer.nextFrame() == nil)
        buffer.compact()
        buffer.append(ByteBuffer(bytes: bytes.dropFirst(5).prefix(9)))
        #expect(try buffer.nextFrame() == ByteBuffer(bytes: [1, 2, 3]))
        #expect(try buffer.nextFrame() == ByteBuffer(bytes: [4]))
        #expect(try buffer.nextFrame() == nil)
        buffer.compact()
        buffer.append(ByteBuffer(bytes: bytes.dropFirst(14)))
        #expect(try buffer.nextFrame() == ByteBuffer(bytes: [5, 6]))
        #expect(try buffer.nextFrame() == nil)
        buffer.append(ByteBuffer(bytes: [0, 0, 0, 65]))
        #expect(throws: FramingError.frameTooLarge(length: 65, limit: 64)) { try buffer.nextFrame() }
    }
}
