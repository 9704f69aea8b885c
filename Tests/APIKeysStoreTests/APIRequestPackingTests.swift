import APIKeysCore
import Testing
@testable import APIKeysSQLite
@testable import APIKeysStore

/// The storage layout of packed `api.request` batches: a grace secret's check keeps its detail
/// through a batch (version 2), and batches written before it (version 1) still read.
@Suite struct APIRequestPackingTests {
    static let events = [
        AuditRecord(
            seq: 7, atMS: 1_000, action: .apiRequest, keyID: "key_1", keyName: "ci", permissions: ["jobs:read"],
            resource: "GET /", clientAddress: "10.0.0.1"),
        AuditRecord(
            seq: 8, atMS: 1_001, action: .apiRequest, keyID: "key_1", keyName: "ci",
            detail: KeyService.graceSecretDetail, denial: .rateLimited),
        AuditRecord(seq: 9, atMS: 1_002, action: .apiRequest, keyID: "", keyName: "", denial: .unknownKey),
    ]

    @Test func graceChecksKeepTheirDetailInABatch() throws {
        let bytes = APIRequestPacking.pack(Self.events[...])
        #expect(bytes.first == 2)
        let read = try bytes.withUnsafeBytes { try APIRequestPacking.unpack($0) }
        #expect(read == Self.events)
        #expect(APIRequestPacking.packs(Self.events[1]))
        var other = Self.events[0]
        other.detail = "anything else"
        #expect(!APIRequestPacking.packs(other))
    }

    @Test func batchesOfTheFirstVersionStillRead() throws {
        let plain = [Self.events[0], Self.events[2]]
        var bytes = APIRequestPacking.pack(plain[...])
        bytes[0] = 1
        #expect(try bytes.withUnsafeBytes { try APIRequestPacking.unpack($0) } == plain)
        bytes[0] = 3
        #expect(throws: APIRequestPacking.Malformed.self) {
            try bytes.withUnsafeBytes { try APIRequestPacking.unpack($0) }
        }
    }
}
