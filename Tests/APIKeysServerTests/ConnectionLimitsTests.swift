import APIKeysClient
import APIKeysCore
import Foundation
import Testing

/// Clients that hold a connection without making progress, or never read their replies, cost
/// the server a bounded amount and lose their slot; everybody else is served meanwhile.
@Suite struct ConnectionLimitsTests {
    private static func checkFrame(callID: UInt64) throws -> [UInt8] {
        RawConnection.frame(
            try Envelope(
                callID: callID, method: Authorize.check.path,
                payload: try CheckRequest(key: SecretFormat.standard.generate(), permissions: ["jobs:read"])
                    .serializedBytes()
            ).serializedBytes())
    }

    /// Seconds until the server closed `connection`, waiting at most `limit`.
    private func secondsUntilClosed(_ connection: RawConnection, sending trickle: [UInt8] = [], limit: Double)
        -> Double?
    {
        let start = Date()
        var next = 0
        while Date().timeIntervalSince(start) < limit {
            if next < trickle.count {
                connection.send([trickle[next]])
                next += 1
            }
            if connection.isClosedByPeer(waitingMS: 300) { return Date().timeIntervalSince(start) }
        }
        return nil
    }

    /// A frame trickled a byte at a time is closed by whichever limit it meets: the frame
    /// timeout, and the idle timeout too, since bytes that never make a frame are no activity.
    @Test(arguments: [(frame: Int64(1), idle: Int64(30)), (frame: 30, idle: 1)])
    func aTrickledFrameIsClosed(timeouts: (frame: Int64, idle: Int64)) async throws {
        try await withServer(configure: {
            $0.frameTimeoutSeconds = timeouts.frame
            $0.idleTimeoutSeconds = timeouts.idle
        }) { server, _ in
            let connection = try RawConnection(port: server.port)
            let closedAfter = secondsUntilClosed(connection, sending: try Self.checkFrame(callID: 1), limit: 8)
            #expect(closedAfter != nil && closedAfter! < 4, "closed after \(String(describing: closedAfter)) s")
        }
    }

    @Test func aLyingLengthPrefixIsClosedAtTheFrameTimeout() async throws {
        try await withServer(configure: { $0.frameTimeoutSeconds = 1 }) { server, client in
            let connection = try RawConnection(port: server.port)
            connection.send([0, 0, 0xEA, 0x60] + [UInt8](repeating: 0x0A, count: 10))  // says 60,000, sends 10
            let closedAfter = secondsUntilClosed(connection, limit: 8)
            #expect(closedAfter != nil && closedAfter! < 4, "closed after \(String(describing: closedAfter)) s")
            #expect(try await client.listPermissions().count == 10)
        }
    }

    /// A client that pipelines checks and never reads: the server stops reading from it once its
    /// replies back up (the client's sends then stall), serves others meanwhile, and answers
    /// every call it read once the client reads again.
    @Test func aClientThatNeverReadsIsThrottledNotBuffered() async throws {
        try await withServer(configure: {
            $0.maxQueuedReplyBytes = 64 * 1024
            // So large that audit backpressure (which also stops reading) never sets in here.
            $0.auditQueueCapacity = 10_000_000
        }) { server, client in
            let connection = try RawConnection(
                port: server.port, receiveTimeoutSeconds: 10, receiveBufferBytes: 16 * 1024)
            var burst: [UInt8] = []
            // Call ids 1000–1999 all take two bytes: every frame has the same size.
            for call in 1000...1999 { burst += try Self.checkFrame(callID: UInt64(call)) }
            let frameSize = burst.count / 1000
            var sentFrames = 0
            var sentBytes = 0
            var stalledSince: Date?
            var stalled = false
            let start = Date()
            // Send until the kernel has refused every send for a second: the server stopped reading.
            while Date().timeIntervalSince(start) < 20 {
                let offset = sentBytes % burst.count
                let taken = connection.sendWithoutWaiting(burst[offset...])
                sentBytes += taken
                if taken == 0 {
                    if stalledSince == nil { stalledSince = Date() }
                    if Date().timeIntervalSince(stalledSince!) > 1 {
                        stalled = true
                        break
                    }
                    usleep(10_000)
                } else {
                    stalledSince = nil
                }
            }
            #expect(stalled, "the server kept reading from a client that never reads")
            // Another client is served at once meanwhile.
            let other = try await client.createKey(name: "other", permissions: ["jobs:read"])
            #expect(try await client.check(key: other.secret, permissions: ["jobs:read"]).decision == .allow)
            // Bounded: what the server took is what the socket buffers and its write buffer hold,
            // not everything sent so far (which would keep growing as long as the client sends).
            sentFrames = sentBytes / frameSize
            print(
                "never-reading client: the server took \(sentBytes) bytes (\(sentFrames) checks) before it stopped reading"
            )
            #expect(sentBytes < 24 << 20, "\(sentBytes) bytes taken from a client that never reads")
            // Read again: every whole frame sent is answered, in order.
            for call in 1...sentFrames {
                let reply = try #require(try connection.receiveEnvelope(), "reply \(call) of \(sentFrames) missing")
                #expect(reply.callID == UInt64((call - 1) % 1000 + 1000) && reply.status == .ok)
            }
        }
    }
}
