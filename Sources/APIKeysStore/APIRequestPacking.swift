import APIKeysCore

/// The byte layout of a batch of `api.request` events (storage only; never on the wire), the same
/// in both stores: SQLite's `api_request_batches` and PostgreSQL's.
///
/// A version byte, then per event: seq and time (8 bytes each, little-endian), the denial
/// (1 byte: 0 = allowed, else the `Denial` raw value + 1; from version 2 its high bit marks a
/// check made with a grace secret, whose detail is ``KeyService/graceSecretDetail``), the number
/// of permissions (4 bytes), then key id, key name, each permission, resource and client
/// address, each as a 4-byte little-endian length and UTF-8 bytes. Version 1 batches (before
/// grace secrets) are read as they are.
package enum APIRequestPacking {
    package static let version: UInt8 = 2
    private static let graceBit: UInt8 = 0x80

    /// Most events in one stored batch: a page query decodes whole batches, so they stay small.
    package static let maxEventsPerRow = 2048

    /// How `events` (packable, in increasing seq order) are cut into stored batches: at most
    /// ``maxEventsPerRow`` each, and none whose seqs span more than `maxSeqSpan` (so that a reader
    /// of batches that several writers' ranges overlap knows how far back a batch can reach).
    package static func rows(_ events: ArraySlice<AuditRecord>, maxSeqSpan: UInt64 = .max) -> [Range<Int>] {
        var rows: [Range<Int>] = []
        var start = events.startIndex
        while start < events.endIndex {
            var end = start + 1
            let limit = min(start + maxEventsPerRow, events.endIndex)
            while end < limit, events[end].seq - events[start].seq <= maxSeqSpan { end += 1 }
            rows.append(start..<end)
            start = end
        }
        return rows
    }

    /// The distinct key ids of `events` (an event of an unknown key has none), for a batch's
    /// per-key index: what a page of one key's events reads.
    package static func keyIDs(of events: ArraySlice<AuditRecord>) -> Set<String> {
        var keys: Set<String> = []
        var run = ""  // consecutive events of one key are most of a busy batch: one lookup each run
        for index in events.indices where events[index].keyID != run {
            run = events[index].keyID
            if !run.isEmpty { keys.insert(run) }
        }
        return keys
    }

    /// Whether `event` can go into a batch: an api.request with no detail but the grace secret's.
    package static func packs(_ event: AuditRecord) -> Bool {
        event.action == .apiRequest && event.actor.isEmpty
            && (event.detail.isEmpty || event.detail == KeyService.graceSecretDetail)
    }

    package static func pack(_ events: ArraySlice<AuditRecord>) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(1 + events.count * 128)
        bytes.append(version)
        // Fields are read in place (`events[index].field`): copying each record out would retain
        // and release its six references, which the writer paid per event.
        for index in events.indices {
            precondition(packs(events[index]))
            append(events[index].seq, to: &bytes)
            append(UInt64(bitPattern: events[index].atMS), to: &bytes)
            bytes.append(
                (events[index].denial.map { UInt8($0.rawValue + 1) } ?? 0)
                    | (events[index].detail.isEmpty ? 0 : graceBit))
            append(UInt32(events[index].permissions.count), to: &bytes)
            append(events[index].keyID, to: &bytes)
            append(events[index].keyName, to: &bytes)
            for permission in events[index].permissions.indices {
                append(events[index].permissions[permission], to: &bytes)
            }
            append(events[index].resource, to: &bytes)
            append(events[index].clientAddress, to: &bytes)
        }
        return bytes
    }

    /// The events of a packed batch, in the order they were packed.
    /// Throws ``APIRequestPacking/Malformed`` when the bytes are not a batch of this version.
    package static func unpack(_ bytes: UnsafeRawBufferPointer) throws(Malformed) -> [AuditRecord] {
        var reader = Reader(bytes: bytes)
        let batchVersion = try reader.byte()
        guard batchVersion == 1 || batchVersion == version else { throw Malformed(offset: 0) }
        var events: [AuditRecord] = []
        while !reader.isAtEnd {
            let seq = try reader.uint64()
            let atMS = Int64(bitPattern: try reader.uint64())
            let flagged = try reader.byte()
            let grace = batchVersion >= 2 && flagged & graceBit != 0
            let denialByte = grace ? flagged & ~graceBit : flagged
            let denial = denialByte == 0 ? nil : Denial(rawValue: Int(denialByte) - 1)
            guard denialByte == 0 || denial != nil else { throw Malformed(offset: reader.offset) }
            let permissionCount = Int(try reader.uint32())
            let keyID = try reader.string()
            let keyName = try reader.string()
            var permissions: [String] = []
            permissions.reserveCapacity(permissionCount)
            for _ in 0..<permissionCount { permissions.append(try reader.string()) }
            events.append(
                AuditRecord(
                    seq: seq, atMS: atMS, action: .apiRequest, keyID: keyID, keyName: keyName,
                    detail: grace ? KeyService.graceSecretDetail : "", denial: denial,
                    permissions: permissions, resource: try reader.string(), clientAddress: try reader.string()))
        }
        return events
    }

    /// A batch that does not decode: the offset where it stopped making sense.
    package struct Malformed: Error, CustomStringConvertible {
        package let offset: Int
        package var description: String { "undecodable at byte \(offset)" }
    }

    private static func append(_ value: some FixedWidthInteger, to bytes: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    private static func append(_ text: String, to bytes: inout [UInt8]) {
        let copied: Void? = text.utf8.withContiguousStorageIfAvailable { utf8 in
            append(UInt32(utf8.count), to: &bytes)
            bytes.append(contentsOf: utf8)
        }
        if copied == nil {  // a bridged or lazily decoded string: not expected here
            append(UInt32(text.utf8.count), to: &bytes)
            bytes.append(contentsOf: text.utf8)
        }
    }

    private struct Reader {
        let bytes: UnsafeRawBufferPointer
        var offset = 0

        var isAtEnd: Bool { offset == bytes.count }

        mutating func take(_ count: Int) throws(Malformed) -> UnsafeRawBufferPointer {
            guard count >= 0, count <= bytes.count - offset else { throw Malformed(offset: offset) }
            defer { offset += count }
            return UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + count])
        }

        mutating func byte() throws(Malformed) -> UInt8 { try take(1)[0] }

        mutating func uint64() throws(Malformed) -> UInt64 {
            UInt64(littleEndian: try take(8).loadUnaligned(as: UInt64.self))
        }

        mutating func uint32() throws(Malformed) -> UInt32 {
            UInt32(littleEndian: try take(4).loadUnaligned(as: UInt32.self))
        }

        mutating func string() throws(Malformed) -> String {
            let count = try uint32()
            let start = offset
            let utf8 = try take(Int(count))
            guard let text = String(validating: utf8, as: UTF8.self) else { throw Malformed(offset: start) }
            return text
        }
    }
}
