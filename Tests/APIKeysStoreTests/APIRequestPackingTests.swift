import APIKeysCore
import APIKeysTestSupport
import Testing
@testable import APIKeysSQLite
@testable import APIKeysStore

/// The storage layout of packed `api.request` batches: a grace secret's check keeps its detail,
/// a busy batch is written compactly (version 3), and batches written before (versions 1 and 2)
/// still read.
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

    private static func unpack(_ bytes: [UInt8]) throws -> [AuditRecord] {
        try bytes.withUnsafeBytes { try APIRequestPacking.unpack($0) }
    }

    @Test func graceChecksKeepTheirDetailInABatch() throws {
        let bytes = APIRequestPacking.pack(Self.events[...])
        #expect(bytes.first == 3)
        #expect(try Self.unpack(bytes) == Self.events)
        #expect(APIRequestPacking.packs(Self.events[1]))
        var other = Self.events[0]
        other.detail = "anything else"
        #expect(!APIRequestPacking.packs(other))
    }

    /// Every field changing or not from one event to the next, texts of every length class,
    /// seq gaps and times that step back (another replica's clock), all read back as packed.
    @Test func aVariedBatchReadsBackAsPacked() throws {
        var generator = SplitMix64(state: 30)
        let texts = ["", "a", "key_1", "café ü", String(repeating: "x", count: 200), "GET /api/jobs/1?q=2"]
        var events: [AuditRecord] = []
        var (seq, atMS) = (UInt64(1), Int64(1_765_000_000_000))
        for _ in 0..<2_000 {
            seq += generator.next() % 4 == 0 ? generator.next() % (1 << 40) + 1 : 1
            atMS += Int64(generator.next() % 2_000) - 500
            func text() -> String { texts[Int(generator.next() % UInt64(texts.count))] }
            let previous = events.last
            func maybeRepeat(_ field: KeyPath<AuditRecord, String>) -> String {
                if let previous, generator.next() % 2 == 0 { return previous[keyPath: field] }
                return text()
            }
            let permissions =
                previous.flatMap { generator.next() % 2 == 0 ? $0.permissions : nil }
                ?? (0..<Int(generator.next() % 4)).map { _ in
                    ["jobs:read", "vault:read", "x"][Int(generator.next() % 3)]
                }
            let denial: Denial? =
                generator.next() % 3 == 0 ? Denial.allCases[Int(generator.next() % UInt64(Denial.allCases.count))] : nil
            events.append(
                AuditRecord(
                    seq: seq, atMS: atMS, action: .apiRequest, keyID: maybeRepeat(\.keyID),
                    keyName: maybeRepeat(\.keyName),
                    detail: generator.next() % 5 == 0 ? KeyService.graceSecretDetail : "",
                    denial: denial, permissions: permissions, resource: maybeRepeat(\.resource),
                    clientAddress: maybeRepeat(\.clientAddress)))
        }
        #expect(try Self.unpack(APIRequestPacking.pack(events[...])) == events)
        #expect(try Self.unpack(APIRequestPacking.pack(events[500..<501])) == [events[500]])
        #expect(try Self.unpack(APIRequestPacking.pack([][...])) == [])
    }

    /// One key checked from one address over and over, each time for another resource: every
    /// check after the first takes its resource and 5 bytes (version 2 took 60 more).
    @Test func aBusyBatchTakesLittleMoreThanItsResources() throws {
        let events = (0..<1_000).map { index in
            AuditRecord(
                seq: UInt64(1_000 + index), atMS: 1_765_000_000_000 + Int64(index / 10), action: .apiRequest,
                keyID: "key_0123456789abcdef", keyName: "billing-service", permissions: ["jobs:read"],
                resource: "GET /api/jobs/\(index)", clientAddress: "10.1.2.3")
        }
        let bytes = APIRequestPacking.pack(events[...])
        let resources = events.dropFirst().reduce(0) { $0 + $1.resource.utf8.count + 1 }
        #expect(bytes.count <= 1 + 100 + resources + 4 * (events.count - 1), "\(bytes.count) bytes")
        #expect(try Self.unpack(bytes) == events)
    }

    /// Texts that Swift's `==` calls equal (canonically equivalent) but whose bytes differ are
    /// never written as repeats: each event reads back with its own bytes, those its link's digest
    /// was taken over.
    @Test func equivalentTextsWithOtherBytesAreNotRepeats() throws {
        let (composed, decomposed) = ("caf\u{E9}", "cafe\u{301}")
        #expect(composed == decomposed && Array(composed.utf8) != Array(decomposed.utf8))
        let events = [composed, decomposed, decomposed, composed].enumerated().map { index, text in
            AuditRecord(
                seq: UInt64(index + 1), atMS: 1_000, action: .apiRequest, keyID: "key_1", keyName: text,
                permissions: [text], resource: "GET /" + text, clientAddress: text)
        }
        let read = try Self.unpack(APIRequestPacking.pack(events[...]))
        for (event, back) in zip(events, read) {
            for field in [\AuditRecord.keyName, \.resource, \.clientAddress] {
                #expect(Array(back[keyPath: field].utf8) == Array(event[keyPath: field].utf8))
            }
            #expect(back.permissions.map { Array($0.utf8) } == event.permissions.map { Array($0.utf8) })
        }
    }

    /// Batches stored by earlier versions: the fixed-width layout, the grace bit from version 2.
    @Test func batchesOfEarlierVersionsStillRead() throws {
        #expect(try Self.unpack(Self.fixedWidth(Self.events, version: 2)) == Self.events)
        let plain = [Self.events[0], Self.events[2]]
        #expect(try Self.unpack(Self.fixedWidth(plain, version: 1)) == plain)
        var unknown = APIRequestPacking.pack(plain[...])
        unknown[0] = 4
        #expect(throws: APIRequestPacking.Malformed.self) { try Self.unpack(unknown) }
    }

    /// Bytes that are not a batch (cut inside an event, a first event claiming to repeat, a varint
    /// too long, counts and lengths beyond the bytes) are refused, never trusted.
    @Test func malformedBatchesAreRefused() throws {
        let bytes = APIRequestPacking.pack(Self.events[...])
        // A cut between events leaves a shorter batch (the version byte alone, an empty one);
        // a cut anywhere else is refused.
        var shorter: [[AuditRecord]] = []
        for cut in 1..<bytes.count {
            do {
                shorter.append(try Self.unpack(Array(bytes.prefix(cut))))
            } catch is APIRequestPacking.Malformed {}
        }
        #expect(shorter == (0..<Self.events.count).map { Array(Self.events.prefix($0)) })
        // version, seq step 1, time step 0, allowed, repeats the key id of no previous event.
        #expect(throws: APIRequestPacking.Malformed.self) { try Self.unpack([3, 1, 0, 0, 1]) }
        #expect(throws: APIRequestPacking.Malformed.self) { try Self.unpack([3] + Array(repeating: 0xFF, count: 11)) }
        // ... a permission count of 2^62 with nothing after it.
        #expect(throws: APIRequestPacking.Malformed.self) {
            try Self.unpack([3, 1, 0, 0, 0, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40])
        }
        #expect(throws: APIRequestPacking.Malformed.self) {
            try Self.unpack(Self.fixedWidth([Self.events[0]], version: 2).dropLast(3) + [0xFF, 0xFF, 0xFF])
        }
        // A batch of the fixed-width layout claiming 2^32 − 1 permissions: refused where it runs
        // out, without making room for them first (64 GB).
        var lying = Self.fixedWidth([Self.events[0]], version: 2)
        lying.replaceSubrange(18..<22, with: [0xFF, 0xFF, 0xFF, 0xFF])
        #expect(throws: APIRequestPacking.Malformed.self) { try Self.unpack(lying) }
        var generator = SplitMix64(state: 7)
        for _ in 0..<2_000 {  // whatever a flipped byte makes of a batch, reading it does not crash
            var damaged = bytes
            damaged[1 + Int(generator.next() % UInt64(bytes.count - 1))] ^= UInt8(
                truncatingIfNeeded: generator.next() | 1)
            _ = try? Self.unpack(damaged)
        }
    }

    /// The layout of versions 1 and 2, as their writer laid it out.
    private static func fixedWidth(_ events: [AuditRecord], version: UInt8) -> [UInt8] {
        var bytes: [UInt8] = [version]
        func append(_ value: some FixedWidthInteger) { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }
        func append(_ text: String) {
            append(UInt32(text.utf8.count))
            bytes += text.utf8
        }
        for event in events {
            append(event.seq)
            append(event.atMS)
            bytes.append(
                (event.denial.map { UInt8($0.rawValue + 1) } ?? 0) | (version >= 2 && !event.detail.isEmpty ? 0x80 : 0))
            append(UInt32(event.permissions.count))
            append(event.keyID)
            append(event.keyName)
            event.permissions.forEach(append)
            append(event.resource)
            append(event.clientAddress)
        }
        return bytes
    }
}
