import Foundation
import Testing
@testable import APIKeysWire

/// Leak check: 10^5 encode/decode round trips leave the resident set flat.
@Suite struct MemoryTests {
    private func residentBytes() throws -> Int {
        let statm = try String(contentsOfFile: "/proc/self/statm", encoding: .utf8)
        let pages = Int(statm.split(separator: " ")[1])!
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    private func roundTrips(_ count: Int) throws {
        let response = ListKeysResponse(keys: Array(repeating: Fixtures.apiKey, count: 4), nextPageToken: "n")
        let envelope = Envelope(callID: 1, method: KeyAdmin.listKeys.path, metadata: ["authorization": "Bearer x"])
        for _ in 0..<count {
            var e = envelope
            e.payload = try response.serializedBytes()
            let decoded = try Envelope(serializedBytes: e.serializedBytes())
            _ = try ListKeysResponse(serializedBytes: decoded.payload)
        }
    }

    @Test func hundredThousandRoundTripsKeepMemoryFlat() throws {
        try roundTrips(10_000)  // warm up allocator caches
        let chunks = Arena.liveChunksOnThisThread
        // Two phases of 10^5 round trips each: a leak grows the resident set in both, by about
        // the same; what the suites beside this one allocate (they share the process, and one of
        // them once took 70 MB during a phase) grows it in one phase or the other.
        var growth: [Int] = []
        for _ in 0..<2 {
            let before = try residentBytes()
            try roundTrips(100_000)
            growth.append(try residentBytes() - before)
        }
        // Exact, whatever runs beside this test: every arena chunk made on this thread was freed.
        #expect(Arena.liveChunksOnThisThread == chunks, "arena chunks leaked")
        // Coarse, for leaks outside the arenas: leaking 512 bytes a round trip would grow each
        // phase by 50 MB.
        #expect(growth.min()! < 32 << 20, "resident set grew by \(growth) bytes in the two phases")
    }
}
