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
        let envelope = Envelope(callID: 1, method: Method.listKeys.rawValue, metadata: ["authorization": "Bearer x"])
        for _ in 0..<count {
            var e = envelope
            e.payload = try response.serializedBytes()
            let decoded = try Envelope(serializedBytes: e.serializedBytes())
            _ = try ListKeysResponse(serializedBytes: decoded.payload)
        }
    }

    @Test func hundredThousandRoundTripsKeepMemoryFlat() throws {
        try roundTrips(10_000)  // warm up allocator caches
        let before = try residentBytes()
        try roundTrips(100_000)
        let growth = try residentBytes() - before
        // Each round trip packs and unpacks ~4 KB through arenas: leaking one arena chunk per round
        // trip would grow the resident set by 400 MB, leaking 200 bytes by 20 MB. The margin leaves
        // room for the tests that run beside this one in the same process.
        #expect(growth < 16 << 20, "resident set grew by \(growth) bytes")
    }
}
