import APIKeysWire
import CFuzzerDriver
import NIOCore

#if canImport(Glibc)
    import Glibc
#endif

/// Runs libFuzzer with its usual flags (`-runs=N`, `-max_total_time=S`, corpus directories).
@main enum FuzzMain {
    static func main() {
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv, fuzzWire))
    }
}

/// The fuzz target. The first byte picks what the rest is fed to: the frame decoder with the
/// envelope and the hot-path Check codec behind it, or one message's unpack. Whatever decodes
/// must encode again and decode to the same value.
func fuzzWire(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data, size > 0 else { return 0 }
    let body = UnsafeRawBufferPointer(start: data + 1, count: size - 1)
    let selector = Int(data[0]) % (messageDecoders.count + 1)
    if selector == 0 {
        fuzzFrames(body)
    } else {
        messageDecoders[selector - 1](body)
    }
    return 0
}

/// Frames as the server reads them: cut in place, each body an Envelope, Check calls through
/// the in-place codec. A bad frame ends the stream, as it closes a connection.
private func fuzzFrames(_ bytes: UnsafeRawBufferPointer) {
    var buffer = FrameBuffer(maxFrameSize: 64 * 1024)
    // Split the input in two reads, as TCP may.
    let cut = bytes.count / 2
    buffer.append(ByteBuffer(bytes: bytes[..<cut]))
    let codec = CheckCallCodec()
    for round in 0..<2 {
        while true {
            let frame: ByteBuffer
            do {
                guard let next = try buffer.nextFrame() else { break }
                frame = next
            } catch {
                return
            }
            let envelope = try? Envelope(serializedBytes: Array(frame.readableBytesView))
            if let envelope { roundTrip(envelope) }
            if case .check(let callID, let request, _) = try? codec.decode(frame: frame) {
                roundTrip(request)
                // What the codec read is what the general decoder reads from the payload, to the byte.
                if let envelope, let own = try? CheckRequest(serializedBytes: envelope.payload),
                    (try? own.serializedBytes()) != (try? request.serializedBytes())
                {
                    fatalError("the Check codec read \(request), the payload holds \(own)")
                }
                // The same frame again is the same request, taken from the codec's memory when short.
                guard case .check(_, let again, let repeated) = try? codec.decode(frame: frame),
                    (try? again.serializedBytes()) == (try? request.serializedBytes())
                else { fatalError("a Check frame decoded twice read two requests: \(request)") }
                let payload = envelope?.payload.count ?? Int.max
                if repeated != (payload <= CheckCallCodec.maxRememberedRequestBytes), envelope != nil {
                    fatalError("a Check frame of \(payload) payload bytes decoded twice: repeated \(repeated)")
                }
                var reply = ByteBuffer()
                try? codec.writeCheckReply(callID: callID, response: CheckResponse(), to: &reply)
            }
        }
        buffer.compact()
        if round == 0 { buffer.append(ByteBuffer(bytes: bytes[cut...])) }
    }
}

private func roundTrip<M: WireMessage>(_ message: M) {
    guard let bytes = try? message.serializedBytes() else {
        fatalError("\(M.self) decoded but does not encode: \(message)")
    }
    guard let again = try? M(serializedBytes: bytes), again == message else {
        fatalError("\(M.self) changed across encode and decode: \(message)")
    }
}

private func decoder<M: WireMessage>(_ type: M.Type) -> @Sendable (UnsafeRawBufferPointer) -> Void {
    { bytes in
        if let message = try? M(serializedBytes: bytes) { roundTrip(message) }
    }
}

/// Every message of the contract, in the order of `WireContract.messageTypes` (which the seeds of
/// make_seeds.py follow): selector N + 1 feeds message N.
private let messageDecoders: [@Sendable (UnsafeRawBufferPointer) -> Void] = WireContract.messageTypes.map {
    decoder($0)
}
