import APIKeysCore

/// The byte layout of a batch of `api.request` events (storage only; never on the wire), the same
/// in both stores: SQLite's `api_request_batches` and PostgreSQL's.
///
/// A version byte, then per event (version 3, written since 2026-12-07):
/// - seq, as its increase over the previous event's (the first: over 0), and time, as its
///   zigzag-encoded change from the previous event's (the first: from 0), both LEB128 varints;
/// - the denial (1 byte: 0 = allowed, else the `Denial` raw value + 1; its high bit marks a
///   check made with a grace secret, whose detail is ``KeyService/graceSecretDetail``);
/// - a byte of ``Repeats``: the fields that equal the previous event's and are not written again;
/// - of the rest, in this order: key id, key name, the permissions (a varint count, then each
///   name), resource and client address, each text as a varint length and its UTF-8 bytes.
///
/// A busy batch is mostly the same key asking the same thing from the same address: such a check
/// takes 4 bytes plus its resource, where version 2 took about a hundred.
///
/// Versions 1 and 2 (still read): seq and time as 8 bytes each, little-endian; the denial byte
/// (without the grace bit in version 1); the number of permissions (4 bytes); then key id, key
/// name, each permission, resource and client address, each as a 4-byte little-endian length and
/// UTF-8 bytes.
package enum APIRequestPacking {
    package static let version: UInt8 = 3
    private static let graceBit: UInt8 = 0x80

    /// The fields of an event equal to the previous event's in a version 3 batch.
    struct Repeats: OptionSet {
        let rawValue: UInt8
        static let keyID = Repeats(rawValue: 1)
        static let keyName = Repeats(rawValue: 2)
        static let permissions = Repeats(rawValue: 4)
        static let resource = Repeats(rawValue: 8)
        static let clientAddress = Repeats(rawValue: 16)
    }

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
    package static func packs(_ event: AuditRecord) -> Bool { withUnsafePointer(to: event) { $0.isPackable } }

    /// Whether every one of `events` can go into a batch, each read where it lies.
    package static func allPack(_ events: ArraySlice<AuditRecord>) -> Bool {
        events.withUnsafeBufferPointer { events in
            guard let event = events.baseAddress else { return true }
            return events.indices.allSatisfy { (event + $0).isPackable }
        }
    }

    package static func pack(_ events: ArraySlice<AuditRecord>) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(1 + events.count * 32)
        bytes.append(version)
        var (seq, atMS) = (UInt64(0), Int64(0))
        // Fields are read where they lie, through a pointer: copying a record out (a loop over
        // them, or a property of one called through a subscript) would retain and release its
        // six references, which the writer paid per event.
        events.withUnsafeBufferPointer { events in
            guard let first = events.baseAddress else { return }
            for index in events.indices {
                let event = first + index
                precondition(event.isPackable)
                appendVarint(event.pointee.seq &- seq, to: &bytes)
                appendVarint(zigzag(event.pointee.atMS &- atMS), to: &bytes)
                (seq, atMS) = (event.pointee.seq, event.pointee.atMS)
                bytes.append(
                    (event.pointee.denial.map { UInt8($0.rawValue + 1) } ?? 0)
                        | (event.pointee.detail.isEmpty ? 0 : graceBit))
                var repeats: Repeats = []
                if index > 0 {
                    let previous = event - 1
                    if same(event.pointee.keyID, previous.pointee.keyID) { repeats.insert(.keyID) }
                    if same(event.pointee.keyName, previous.pointee.keyName) { repeats.insert(.keyName) }
                    if same(event.pointee.permissions, previous.pointee.permissions) { repeats.insert(.permissions) }
                    if same(event.pointee.resource, previous.pointee.resource) { repeats.insert(.resource) }
                    if same(event.pointee.clientAddress, previous.pointee.clientAddress) {
                        repeats.insert(.clientAddress)
                    }
                }
                bytes.append(repeats.rawValue)
                if !repeats.contains(.keyID) { append(event.pointee.keyID, to: &bytes) }
                if !repeats.contains(.keyName) { append(event.pointee.keyName, to: &bytes) }
                if !repeats.contains(.permissions) {
                    appendVarint(UInt64(event.pointee.permissions.count), to: &bytes)
                    for permission in event.pointee.permissions.indices {
                        append(event.pointee.permissions[permission], to: &bytes)
                    }
                }
                if !repeats.contains(.resource) { append(event.pointee.resource, to: &bytes) }
                if !repeats.contains(.clientAddress) { append(event.pointee.clientAddress, to: &bytes) }
            }
        }
        return bytes
    }

    /// The events of a packed batch, in the order they were packed.
    /// Throws ``APIRequestPacking/Malformed`` when the bytes are not a batch of a known version.
    package static func unpack(_ bytes: UnsafeRawBufferPointer) throws(Malformed) -> [AuditRecord] {
        var reader = Reader(bytes: bytes)
        let batchVersion = try reader.byte()
        switch batchVersion {
        case 1, 2: return try unpackFixedWidth(&reader, version: batchVersion)
        case 3: return try unpackCompact(&reader)
        default: throw Malformed(offset: 0)
        }
    }

    private static func unpackCompact(_ reader: inout Reader) throws(Malformed) -> [AuditRecord] {
        var events: [AuditRecord] = []
        var (seq, atMS) = (UInt64(0), Int64(0))
        while !reader.isAtEnd {
            let start = reader.offset
            let (seqStep, atStep) = (try reader.varint(), unzigzag(try reader.varint()))
            guard seqStep > 0 || events.isEmpty, case (let next, false) = seq.addingReportingOverflow(seqStep) else {
                throw Malformed(offset: start)
            }
            (seq, atMS) = (next, atMS &+ atStep)
            let (denial, grace) = try denial(reader.byte(), version: 3, offset: reader.offset)
            let repeats = Repeats(rawValue: try reader.byte())
            guard repeats.rawValue & ~0x1F == 0, let previous = events.last ?? (repeats.isEmpty ? blank : nil) else {
                throw Malformed(offset: reader.offset - 1)
            }
            let keyID = repeats.contains(.keyID) ? previous.keyID : try reader.string(length: reader.varint())
            let keyName = repeats.contains(.keyName) ? previous.keyName : try reader.string(length: reader.varint())
            var permissions = previous.permissions
            if !repeats.contains(.permissions) {
                let count = try reader.varint()
                // Each name takes at least its length byte: a count beyond the bytes left lies.
                guard count <= UInt64(reader.bytesLeft) else { throw Malformed(offset: reader.offset) }
                permissions = []
                permissions.reserveCapacity(Int(count))
                for _ in 0..<count { permissions.append(try reader.string(length: reader.varint())) }
            }
            let resource = repeats.contains(.resource) ? previous.resource : try reader.string(length: reader.varint())
            let clientAddress =
                repeats.contains(.clientAddress) ? previous.clientAddress : try reader.string(length: reader.varint())
            events.append(
                AuditRecord(
                    seq: seq, atMS: atMS, action: .apiRequest, keyID: keyID, keyName: keyName,
                    detail: grace ? KeyService.graceSecretDetail : "", denial: denial, permissions: permissions,
                    resource: resource, clientAddress: clientAddress))
        }
        return events
    }

    /// What the first event of a version 3 batch follows: nothing repeats from it.
    private static let blank = AuditRecord(atMS: 0, action: .apiRequest, keyID: "", keyName: "")

    private static func unpackFixedWidth(_ reader: inout Reader, version: UInt8) throws(Malformed) -> [AuditRecord] {
        var events: [AuditRecord] = []
        while !reader.isAtEnd {
            let seq = try reader.uint64()
            let atMS = Int64(bitPattern: try reader.uint64())
            let (denial, grace) = try denial(reader.byte(), version: version, offset: reader.offset)
            let permissionCount = Int(try reader.uint32())
            let keyID = try reader.string(length: UInt64(reader.uint32()))
            let keyName = try reader.string(length: UInt64(reader.uint32()))
            var permissions: [String] = []
            permissions.reserveCapacity(min(permissionCount, reader.bytesLeft / 4))
            for _ in 0..<permissionCount { permissions.append(try reader.string(length: UInt64(reader.uint32()))) }
            events.append(
                AuditRecord(
                    seq: seq, atMS: atMS, action: .apiRequest, keyID: keyID, keyName: keyName,
                    detail: grace ? KeyService.graceSecretDetail : "", denial: denial,
                    permissions: permissions, resource: try reader.string(length: UInt64(reader.uint32())),
                    clientAddress: try reader.string(length: UInt64(reader.uint32()))))
        }
        return events
    }

    /// The denial byte: the denial (nil: allowed) and whether the grace bit is set (version 2 on).
    private static func denial(_ flagged: UInt8, version: UInt8, offset: Int) throws(Malformed) -> (Denial?, Bool) {
        let grace = version >= 2 && flagged & graceBit != 0
        let denialByte = grace ? flagged & ~graceBit : flagged
        let denial = denialByte == 0 ? nil : Denial(rawValue: Int(denialByte) - 1)
        guard denialByte == 0 || denial != nil else { throw Malformed(offset: offset) }
        return (denial, grace)
    }

    /// A batch that does not decode: the offset where it stopped making sense.
    package struct Malformed: Error, CustomStringConvertible {
        package let offset: Int
        package var description: String { "undecodable at byte \(offset)" }
    }

    /// Whether two texts have the same bytes (``Swift/String/hasSameBytes(as:)``): a repeat must
    /// give back the very bytes the chain's digest was taken over.
    private static func same(_ one: String, _ other: String) -> Bool { one.hasSameBytes(as: other) }

    /// Two copies of one list (the request's, kept by every event of a repeated check) share their
    /// storage: equal without a name compared.
    private static func same(_ one: [String], _ other: [String]) -> Bool {
        guard one.count == other.count else { return false }
        let shared = one.withUnsafeBufferPointer { one in
            other.withUnsafeBufferPointer { other in one.baseAddress == other.baseAddress }
        }
        return shared || one.indices.allSatisfy { same(one[$0], other[$0]) }
    }

    private static func zigzag(_ value: Int64) -> UInt64 { UInt64(bitPattern: (value << 1) ^ (value >> 63)) }

    private static func unzigzag(_ value: UInt64) -> Int64 {
        Int64(bitPattern: value >> 1) ^ -Int64(bitPattern: value & 1)
    }

    private static func appendVarint(_ value: UInt64, to bytes: inout [UInt8]) {
        var value = value
        while value >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: value) | 0x80)
            value >>= 7
        }
        bytes.append(UInt8(value))
    }

    private static func append(_ text: String, to bytes: inout [UInt8]) {
        let copied: Void? = text.utf8.withContiguousStorageIfAvailable { utf8 in
            appendVarint(UInt64(utf8.count), to: &bytes)
            bytes.append(contentsOf: utf8)
        }
        if copied == nil {  // a bridged or lazily decoded string: not expected here
            appendVarint(UInt64(text.utf8.count), to: &bytes)
            bytes.append(contentsOf: text.utf8)
        }
    }

    private struct Reader {
        let bytes: UnsafeRawBufferPointer
        var offset = 0

        var isAtEnd: Bool { offset == bytes.count }
        var bytesLeft: Int { bytes.count - offset }

        mutating func take(_ count: UInt64) throws(Malformed) -> UnsafeRawBufferPointer {
            guard count <= UInt64(bytesLeft) else { throw Malformed(offset: offset) }
            defer { offset += Int(count) }
            return UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + Int(count)])
        }

        mutating func byte() throws(Malformed) -> UInt8 { try take(1)[0] }

        mutating func uint64() throws(Malformed) -> UInt64 {
            UInt64(littleEndian: try take(8).loadUnaligned(as: UInt64.self))
        }

        mutating func uint32() throws(Malformed) -> UInt32 {
            UInt32(littleEndian: try take(4).loadUnaligned(as: UInt32.self))
        }

        /// An unsigned LEB128 varint of at most 64 bits.
        mutating func varint() throws(Malformed) -> UInt64 {
            let start = offset
            var value: UInt64 = 0
            for shift in stride(from: 0, to: 64, by: 7) {
                let byte = try self.byte()
                guard shift < 63 || byte <= 1 else { throw Malformed(offset: start) }
                value |= UInt64(byte & 0x7F) << shift
                if byte < 0x80 { return value }
            }
            throw Malformed(offset: start)
        }

        mutating func string(length: UInt64) throws(Malformed) -> String {
            let start = offset
            let utf8 = try take(length)
            guard let text = String(validating: utf8, as: UTF8.self) else { throw Malformed(offset: start) }
            return text
        }
    }
}

extension UnsafePointer<AuditRecord> {
    /// ``APIRequestPacking/packs(_:)`` of the record here, its fields read where they lie (a
    /// function or property of the record would copy it first).
    package var isPackable: Bool {
        pointee.action == .apiRequest && pointee.actor.isEmpty
            && (pointee.detail.isEmpty || pointee.detail == KeyService.graceSecretDetail)
    }
}
