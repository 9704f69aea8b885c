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

    /// 1,000 check frames of one size (call ids 1000–1999 all take two bytes).
    private static func checkBurst() throws -> [UInt8] {
        var burst: [UInt8] = []
        for call in 1000...1999 { burst += try checkFrame(callID: UInt64(call)) }
        return burst
    }

    /// Pipelines `burst`, over and over, without reading, until the kernel has refused every send
    /// for a second (the server stopped reading) or 20 s passed: the bytes sent, and whether it stalled.
    private static func sendUntilStalled(_ connection: RawConnection, _ burst: [UInt8]) -> (sent: Int, stalled: Bool) {
        var sent = 0
        var stalledSince: Date?
        let start = Date()
        while Date().timeIntervalSince(start) < 20 {
            let taken = connection.sendWithoutWaiting(burst[(sent % burst.count)...])
            sent += taken
            if taken > 0 {
                stalledSince = nil
            } else if let since = stalledSince {
                if Date().timeIntervalSince(since) > 1 { return (sent, true) }
                usleep(10_000)
            } else {
                stalledSince = Date()
            }
        }
        return (sent, false)
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
            let burst = try Self.checkBurst()
            let frameSize = burst.count / 1000
            var sentFrames = 0
            let (sentBytes, stalled) = Self.sendUntilStalled(connection, burst)
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

    /// A connection that asked one check and got its answer: idle from then on.
    private func answeredConnection(_ port: Int, callID: UInt64 = 1) throws -> RawConnection {
        let connection = try RawConnection(port: port, receiveTimeoutSeconds: 10)
        connection.send(try Self.checkFrame(callID: callID))
        _ = try #require(try connection.receiveEnvelope())
        return connection
    }

    /// A connection holding the start of a frame that never completes (a slowloris).
    private func incompleteConnection(_ port: Int) throws -> RawConnection {
        let connection = try RawConnection(port: port, receiveTimeoutSeconds: 10)
        connection.send([0, 0, 0, 64] + [UInt8](repeating: 0x0a, count: 10))
        return connection
    }

    /// At the connection limit a newcomer is served: it takes the slot of the connection that has
    /// waited longest on an incomplete frame, then, when none has, of the one idle longest.
    @Test func atTheLimitSlowThenIdleConnectionsGiveWay() async throws {
        try await withServer(configure: {
            $0.maxConnections = 3; $0.frameTimeoutSeconds = 60
        }) { server, _ in
            let idle = try answeredConnection(server.port)
            let slowest = try incompleteConnection(server.port)
            try await Task.sleep(for: .milliseconds(100))
            let slow = try incompleteConnection(server.port)
            try await Task.sleep(for: .milliseconds(100))

            let first = try answeredConnection(server.port, callID: 2)
            #expect(slowest.isClosedByPeer(waitingMS: 2000), "the longest incomplete frame kept its slot")
            #expect(!slow.isClosedByPeer(waitingMS: 100) && !idle.isClosedByPeer(waitingMS: 100))

            let second = try answeredConnection(server.port, callID: 3)
            #expect(slow.isClosedByPeer(waitingMS: 2000))
            #expect(!idle.isClosedByPeer(waitingMS: 100) && !first.isClosedByPeer(waitingMS: 100))

            // No incomplete frame left: the connection idle longest gives way.
            let third = try answeredConnection(server.port, callID: 4)
            #expect(idle.isClosedByPeer(waitingMS: 2000))
            #expect(![first, second, third].contains { $0.isClosedByPeer(waitingMS: 100) })
        }
    }

    /// Only when every connection is busy with complete traffic (here: one that pipelines checks
    /// and never reads, so the server stops reading it) is the newcomer closed on accept.
    @Test func atTheLimitBusyConnectionsKeepTheirSlots() async throws {
        try await withServer(configure: {
            $0.maxConnections = 1
            $0.maxQueuedReplyBytes = 64 * 1024
            $0.auditQueueCapacity = 10_000_000
        }) { server, _ in
            let flooding = try RawConnection(
                port: server.port, receiveTimeoutSeconds: 10, receiveBufferBytes: 16 * 1024)
            #expect(Self.sendUntilStalled(flooding, try Self.checkBurst()).stalled)
            let newcomer = try RawConnection(port: server.port)
            #expect(newcomer.isClosedByPeer(waitingMS: 2000), "a newcomer took the slot of a busy connection")
            #expect(!flooding.isClosedByPeer())
        }
    }
}
