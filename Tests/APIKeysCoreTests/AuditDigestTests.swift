import Testing
@testable import APIKeysCore

/// The digest's byte layout, as docs/PROTOCOL.md states it, built here field by field: the
/// writer's digest of stored records and the verifier's of exported entries both match it.
@Suite struct AuditDigestTests {
    static let events = [
        AuditRecord(
            seq: 7, atMS: 1_700_000_000_123, action: .apiRequest, keyID: "key_1", keyName: "ci-bot ✓",
            denial: .missingPermission, permissions: ["jobs:read", "", "history:read storage:read"],
            resource: "GET /api/jobs?x=1", clientAddress: "[2001:db8::1]:443"),
        AuditRecord(
            seq: 9, atMS: -5, action: .keyCreated, keyID: "key_2", keyName: "", actor: "ops",
            detail: "created with jobs:read", permissions: [" jobs:read  "]),
    ]

    static func documentedBytes(_ record: AuditRecord) -> [UInt8] {
        var bytes: [UInt8] = []
        func integer(_ value: some FixedWidthInteger) { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }
        func text(_ value: String) {
            integer(UInt32(value.utf8.count))
            bytes += value.utf8
        }
        integer(record.seq)
        integer(record.atMS)
        integer(UInt32(record.denial?.rawValue ?? 0))
        for field in [record.action.rawValue, record.keyID, record.keyName, record.actor, record.detail] { text(field) }
        text(record.permissions.flatMap { $0.split(separator: " ") }.joined(separator: " "))
        text(record.resource)
        text(record.clientAddress)
        return bytes
    }

    @Test func theDigestIsTheDocumentedBytes() {
        let expected = AuditChain.sha256(Self.events.flatMap(Self.documentedBytes))
        #expect(AuditChain.digest(of: Self.events) == expected)
        // The verifier's path: exported entries, in any order.
        #expect(AuditChain.digest(Self.events.reversed().map(AuditChain.Entry.init)) == expected)
        // One link of the writer's: the same digest.
        #expect(AuditChain.pendingLinks(Self.events).map(\.digest) == [expected])
        #expect(AuditChain.digest(of: [AuditRecord]()) == AuditChain.sha256([]))
        // Every field counts.
        var edited = Self.events
        edited[1].permissions = ["jobs:read", "jobs:write"]
        #expect(AuditChain.digest(of: edited) != expected)
    }

    /// The writer's links are cut at a number of events or of bytes, whichever comes first, and
    /// an event larger than the byte bound is a link of its own.
    @Test func linksAreCutByCountAndBytes() {
        let small = (1...10).map {
            AuditRecord(seq: UInt64($0), atMS: 1, action: .apiRequest, keyID: "k", keyName: "n")
        }
        let size = small[0].approximateEncodedSize
        #expect(AuditChain.pendingLinks(small, maxEvents: 4).map(\.count) == [4, 4, 2])
        #expect(AuditChain.pendingLinks(small, maxEvents: 4, maxBytes: size * 3).map(\.count) == [3, 3, 3, 1])
        #expect(AuditChain.pendingLinks(small, maxBytes: size - 1).map(\.count) == Array(repeating: 1, count: 10))
        let links = AuditChain.pendingLinks(small, maxEvents: 4)
        #expect(links.map(\.firstSeq) == [1, 5, 9] && links.map(\.lastSeq) == [4, 8, 10])
        #expect(links[1].digest == AuditChain.digest(of: small[4..<8]))
    }
}
