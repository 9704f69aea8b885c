import APIKeysTestSupport
import APIKeysWire
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The built `apikeyd-bench floor`, the reference `make bench` and `bench/compare-forward-auth.sh`
/// measure apikeyd against: it must answer what a client of each port expects (every Check
/// allowed under its own call id, every HTTP request 200), or its figures mean nothing.
@Suite struct FloorServerTests {
    static let binary = productsDirectory.appendingPathComponent("apikeyd-bench")

    /// Runs `apikeyd-bench floor` with `arguments` on a free port until `body` returns.
    private func withFloor(_ arguments: [String], _ body: (Int) throws -> Void) throws {
        let port = try freePort()
        let process = ChildProcess()
        process.executableURL = Self.binary
        process.arguments = ["floor", "--port", "\(port)"] + arguments
        // Not FileHandle.nullDevice: on Linux it has no descriptor, and the child would write here.
        let devNull = FileHandle(forWritingAtPath: "/dev/null")
        process.standardOutput = devNull
        process.standardError = devNull
        try process.run()
        defer {
            process.terminate()
            process.waitUntilExit()
        }
        for _ in 0..<200 where (try? RawConnection(port: port)) == nil { usleep(20_000) }
        try body(port)
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: binary.path)))
    func answersEveryCheckUnderItsOwnCallIDAndClosesOnAnythingElse() throws {
        try withFloor([]) { port in
            let connection = try RawConnection(port: port)
            let check = try CheckRequest(key: "dbm_any", permissions: ["jobs:read"]).serializedBytes()
            // Call ids of one, two and three varint bytes, sent together: one read, one write.
            let callIDs: [UInt64] = [1, 300, 70_000, 1]
            var frames: [UInt8] = []
            for callID in callIDs {
                frames += RawConnection.frame(
                    try Envelope(callID: callID, method: Authorize.check.path, payload: check).serializedBytes())
            }
            connection.send(frames)
            for callID in callIDs {
                let reply = try #require(try connection.receiveEnvelope())
                #expect(reply.callID == callID && reply.method == Authorize.check.path)
                let response = try CheckResponse(serializedBytes: reply.payload)
                #expect(response.decision == .allow && response.httpStatus == 200)
            }
            try connection.send(Envelope(callID: 9, method: KeyAdmin.listKeys.path, payload: []))
            #expect(connection.isClosedByPeer(waitingMS: 5_000))
        }
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: binary.path)))
    func answersEveryHTTPRequest200AndKeepsOnlyKeptAliveConnections() throws {
        try withFloor(["--http"]) { port in
            let connection = try RawConnection(port: port)
            let request = "GET /authorize/api/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            connection.send(Array((request + request).utf8))
            let ok = Array("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".utf8)
            #expect(connection.receive(ok.count * 2) == ok + ok)
            #expect(!connection.isClosedByPeer(waitingMS: 200))

            connection.send(Array("GET /authorize/x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".utf8))
            #expect(connection.receive(ok.count) == ok)
            #expect(connection.isClosedByPeer(waitingMS: 5_000))
        }
    }
}
