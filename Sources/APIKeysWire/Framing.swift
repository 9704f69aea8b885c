public import NIOCore

/// The frame rules of the contract: `[4-byte big-endian length N][N bytes of an Envelope]`, 1 <= N <= max.
public enum Framing {
    /// Bytes of the length prefix.
    public static let headerSize = 4
    /// Default maximum for frames the server reads.
    public static let defaultServerMaxFrameSize = 64 * 1024
    /// Default maximum for frames a client reads.
    public static let defaultClientMaxFrameSize = 4 * 1024 * 1024

    /// Appends `envelope` to `buffer` as one frame.
    public static func write(_ envelope: Envelope, to buffer: inout ByteBuffer) throws {
        let bytes = try envelope.serializedBytes()
        buffer.writeInteger(UInt32(bytes.count), endianness: .big)
        buffer.writeBytes(bytes)
    }
}

/// A frame that breaks the rules; the receiver closes the connection.
///
/// A struct with a ``Code`` rather than an enum, so that new kinds can be added without breaking
/// callers; ``underlying`` keeps the decoding error of a malformed envelope.
public struct FramingError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The kind of failure.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Kind: Hashable, Sendable { case emptyFrame, frameTooLarge, malformedEnvelope }
        private let kind: Kind

        /// A length prefix of 0.
        public static let emptyFrame = Code(kind: .emptyFrame)
        /// A length prefix above the receiver's maximum.
        public static let frameTooLarge = Code(kind: .frameTooLarge)
        /// The frame's bytes are not an Envelope.
        public static let malformedEnvelope = Code(kind: .malformedEnvelope)

        public var description: String {
            switch kind {
            case .emptyFrame: "empty frame"
            case .frameTooLarge: "frame too large"
            case .malformedEnvelope: "malformed envelope"
            }
        }
    }

    public var code: Code
    /// With ``Code/frameTooLarge``: the length the prefix announced, and the receiver's limit.
    public var length: Int?
    public var limit: Int?
    /// With ``Code/malformedEnvelope``: why the bytes did not decode.
    public var underlying: WireError?

    public init(code: Code, length: Int? = nil, limit: Int? = nil, underlying: WireError? = nil) {
        self.code = code
        self.length = length
        self.limit = limit
        self.underlying = underlying
    }

    /// A length prefix of 0.
    public static let emptyFrame = FramingError(code: .emptyFrame)

    /// A length prefix of `length`, above the receiver's `limit`.
    public static func frameTooLarge(length: Int, limit: Int) -> FramingError {
        FramingError(code: .frameTooLarge, length: length, limit: limit)
    }

    /// Frame bytes that are not an Envelope.
    public static func malformedEnvelope(_ error: WireError) -> FramingError {
        FramingError(code: .malformedEnvelope, underlying: error)
    }

    public var description: String {
        switch code {
        case .emptyFrame: "frame length 0"
        case .frameTooLarge: "frame of \(length ?? 0) bytes exceeds the limit of \(limit ?? 0)"
        default: "bad envelope: \(underlying.map { "\($0)" } ?? "not an Envelope")"
        }
    }
}

/// Splits a byte stream into frame bodies, checking the length before buffering the body.
///
/// Use it as `ByteToMessageHandler(FrameDecoder(maxFrameSize: ...))`; it emits one `ByteBuffer`
/// per frame (the body, without the prefix) and throws ``FramingError`` on a bad length.
public struct FrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = ByteBuffer

    public let maxFrameSize: Int

    public init(maxFrameSize: Int) {
        self.maxFrameSize = maxFrameSize
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let body = try Self.nextFrame(in: &buffer, maxFrameSize: maxFrameSize) else { return .needMoreData }
        context.fireChannelRead(Self.wrapInboundOut(body))
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws
        -> DecodingState
    {
        try decode(context: context, buffer: &buffer)
    }

    /// Takes the next complete frame body out of `buffer`, or returns nil (consuming nothing) if
    /// it is not all there yet. Throws on a length of 0 or above `maxFrameSize`.
    public static func nextFrame(in buffer: inout ByteBuffer, maxFrameSize: Int) throws -> ByteBuffer? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, endianness: .big, as: UInt32.self) else {
            return nil
        }
        guard length > 0 else { throw FramingError.emptyFrame }
        guard length <= maxFrameSize else { throw FramingError.frameTooLarge(length: Int(length), limit: maxFrameSize) }
        guard buffer.readableBytes >= Framing.headerSize + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: Framing.headerSize)
        return buffer.readSlice(length: Int(length))
    }
}

/// The bytes a connection has read and not yet framed: each read is appended, complete frames are
/// cut out in place (without a pipeline event per frame), and what is left waits for the next read.
/// The one reader of the frame rules shared by the server, the client and the load generator.
public struct FrameBuffer {
    /// Largest frame body accepted.
    public let maxFrameSize: Int
    private var pending: ByteBuffer?

    public init(maxFrameSize: Int) {
        self.maxFrameSize = maxFrameSize
    }

    /// Appends what a read returned.
    public mutating func append(_ bytes: ByteBuffer) {
        if pending == nil || pending!.readableBytes == 0 {
            pending = bytes
        } else {
            var bytes = bytes
            pending!.writeBuffer(&bytes)
        }
    }

    /// The next complete frame body, or nil until one is all there. Throws ``FramingError`` for a
    /// length of 0 or above ``maxFrameSize``, as soon as the length is read.
    public mutating func nextFrame() throws -> ByteBuffer? {
        guard pending != nil else { return nil }
        return try FrameDecoder.nextFrame(in: &pending!, maxFrameSize: maxFrameSize)
    }

    /// Bytes held that do not yet make a whole frame (after ``nextFrame()`` returned nil).
    public var bufferedBytes: Int { pending?.readableBytes ?? 0 }

    /// Releases the bytes already framed; call once after each read.
    public mutating func compact() {
        if pending?.readableBytes == 0 { pending = nil } else { pending?.discardReadBytes() }
    }
}

/// Writes each outbound ``Envelope`` as one frame.
public struct EnvelopeFrameEncoder: MessageToByteEncoder {
    public typealias OutboundIn = Envelope

    public init() {}

    public func encode(data: Envelope, out: inout ByteBuffer) throws {
        try Framing.write(data, to: &out)
    }
}

extension Envelope {
    /// Decodes an envelope from a frame body.
    public init(frame: ByteBuffer) throws {
        do {
            self = try frame.withUnsafeReadableBytes { try Envelope(serializedBytes: $0) }
        } catch let error as WireError {
            throw FramingError.malformedEnvelope(error)
        }
    }
}
