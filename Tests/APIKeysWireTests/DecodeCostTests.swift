import NIOCore
import Testing
@testable import APIKeysWire

/// Decoding costs time linear in the frame's size, whatever its shape: frames are decoded before
/// routing or authentication, so a shape that costs more per byte is a way to stop the server
/// without credentials. The worst shape is many empty strings (each one a lookup of its arena
/// block): 32,000 empty metadata entries, or a Check with 32,000 empty permissions, fit in 64 KiB.
///
/// Times are ratios of minimums over interleaved runs in one process (like with like); a lookup
/// that walked the arena's chunks made the 64 KiB frame ~70× the cost of eight 8 KiB ones.
@Suite struct DecodeCostTests {
    /// A length-delimited field `number` of `count` empty values: 2 bytes each.
    private static func emptyFields(_ number: UInt8, count: Int) -> [UInt8] {
        (0..<count).flatMap { _ in [number << 3 | 2, 0] }
    }

    /// An Envelope of another method with `count` empty metadata entries.
    private static func metadataFrame(entries count: Int) throws -> ByteBuffer {
        let head = try Envelope(callID: 1, method: KeyAdmin.listKeys.path).serializedBytes()
        return ByteBuffer(bytes: head + emptyFields(6, count: count))
    }

    /// A Check whose CheckRequest carries `count` empty permissions.
    private static func permissionsFrame(entries count: Int) throws -> ByteBuffer {
        let request = [0x0A, 4] + Array("dbm_".utf8) + emptyFields(2, count: count)
        return ByteBuffer(
            bytes: try Envelope(callID: 2, method: Authorize.check.path, payload: request).serializedBytes())
    }

    /// An ordinary frame of the same size: a Check whose resource is one long string, or another
    /// method's envelope with one long payload.
    private static func ordinaryFrame(_ shape: String, bytes: Int) throws -> ByteBuffer {
        let body: [UInt8]
        if shape == "metadata" {
            body = try Envelope(
                callID: 1, method: KeyAdmin.listKeys.path, payload: Array(repeating: 0x41, count: bytes)
            )
            .serializedBytes()
        } else {
            let request = try CheckRequest(key: "dbm_", resource: String(repeating: "r", count: bytes))
                .serializedBytes()
            body = try Envelope(callID: 2, method: Authorize.check.path, payload: request).serializedBytes()
        }
        return ByteBuffer(bytes: body)
    }

    /// The least time, in nanoseconds, of decoding each frame, over `rounds` interleaved rounds.
    private static func minimumNanoseconds(_ frames: [ByteBuffer], rounds: Int = 15) -> [Double] {
        let codec = CheckCallCodec()
        var best = Array(repeating: Double.infinity, count: frames.count)
        let clock = ContinuousClock()
        for _ in 0..<rounds {
            for (index, frame) in frames.enumerated() {
                let elapsed = clock.measure { _ = try? codec.decode(frame: frame) }
                let (seconds, attoseconds) = elapsed.components
                best[index] = min(best[index], Double(seconds) * 1e9 + Double(attoseconds) / 1e9)
            }
        }
        return best
    }

    /// Past the field limit (``WireLimits/maxFields``) a frame is refused before protobuf-c
    /// unpacks its entries, so the worst shape of 64 KiB costs less than twice an ordinary frame
    /// of its size, and the cost per byte does not grow with the frame.
    @Test(arguments: ["metadata", "permissions"])
    func theWorstShapeCostsAboutWhatAnOrdinaryFrameDoes(shape: String) throws {
        let make = shape == "metadata" ? Self.metadataFrame : Self.permissionsFrame
        let small = try make(4_000)
        let large = try make(32_000)
        #expect(large.readableBytes <= 65_536)
        let ordinary = try Self.ordinaryFrame(shape, bytes: large.readableBytes - 64)

        // The worst shape is refused (the metadata closes the connection, the permissions fail
        // the call), the ordinary frame decodes.
        let codec = CheckCallCodec()
        if shape == "metadata" {
            #expect(throws: FramingError.self) { _ = try codec.decode(frame: large) }
            guard case .other = try codec.decode(frame: ordinary) else {
                Issue.record("the ordinary frame did not decode")
                return
            }
        } else {
            guard case .invalidCheck(_, let error) = try codec.decode(frame: large) else {
                Issue.record("32,000 permissions were not refused")
                return
            }
            #expect(error.code == .tooManyFields, "\(error)")
            guard case .check = try codec.decode(frame: ordinary) else {
                Issue.record("the ordinary frame did not decode")
                return
            }
        }

        let times = Self.minimumNanoseconds([small, large, ordinary])
        let perByteRatio = (times[1] / Double(large.readableBytes)) / (times[0] / Double(small.readableBytes))
        #expect(perByteRatio < 2, "per byte, 64 KiB cost \(perByteRatio)× what 8 KiB did (\(times) ns)")
        let worstToOrdinary = times[1] / times[2]
        #expect(worstToOrdinary < 2, "the worst 64 KiB frame cost \(worstToOrdinary)× an ordinary one (\(times) ns)")
    }
}
