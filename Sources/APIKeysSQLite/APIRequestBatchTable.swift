import APIKeysCore
import APIKeysStore

/// SQL for `api.request` events, stored as batches: one row per batch the audit writer commits.
///
/// Writing one row (and its index entries) per check costs ~2.7 µs of B-tree work and was the
/// limit of the whole server; a batch is one row, one index entry per distinct key, and a blob
/// of the events packed by ``APIRequestPacking``. The writer assigns seqs and times in queue
/// order, so batches cover disjoint, increasing seq ranges and times never decrease from one
/// event to the next; queries rely on both to read only the batches a page needs.
enum APIRequestBatchTable {
    /// Most events in one row: a page query decodes whole batches, so they stay small.
    static let maxEventsPerRow = 2048

    /// Stores `events` (api.request, in increasing seq order) as one or more batch rows of the
    /// chain's link `link`.
    static func insert(_ events: ArraySlice<AuditRecord>, link: Int64, in db: SQLiteConnection) throws {
        let insertBatch = try db.statement(
            """
            INSERT INTO api_request_batches (first_seq, last_seq, first_at_ms, last_at_ms, count, events, link)
            VALUES (?, ?, ?, ?, ?, ?, ?)
            """)
        let insertKey = try db.statement(
            "INSERT OR IGNORE INTO api_request_batch_keys (key_id, first_seq) VALUES (?, ?)")
        var start = events.startIndex
        while start < events.endIndex {
            let rows = events[start..<min(start + maxEventsPerRow, events.endIndex)]
            start = rows.endIndex
            guard let first = rows.first, let last = rows.last else { continue }
            insertBatch.reset()
            try insertBatch.bind(
                .integer(Int64(bitPattern: first.seq)), .integer(Int64(bitPattern: last.seq)), .integer(first.atMS),
                .integer(last.atMS), .integer(Int64(rows.count)), .blob(APIRequestPacking.pack(rows)), .integer(link)
            ).run()
            for key in KeyUse.tally(rows).keys {
                insertKey.reset()
                try insertKey.bind(.text(key), .integer(Int64(bitPattern: first.seq))).run()
            }
        }
    }

    /// Up to `limit` events matching `query` (action nil or api.request) with seq below
    /// `beforeSeq`, newest first.
    static func page(_ query: AuditQuery, beforeSeq: Int64, limit: Int, in db: SQLiteConnection) throws
        -> [AuditRecord]
    {
        // The batches to read: first_seq in [low, high]. Times never decrease with seq, so the
        // batches that can hold an event before `untilMS` end with the last one starting before
        // it, and those that can hold one at or after `sinceMS` begin with the last one starting
        // before it (every earlier batch ended before that one started).
        var low: Int64 = 0
        var high = beforeSeq - 1
        if let until = query.untilMS {
            guard let bound = try lastBatchStarting(before: until, in: db) else { return [] }
            high = min(high, bound)
        }
        if let since = query.sinceMS, let bound = try lastBatchStarting(before: since, in: db) { low = bound }
        guard low <= high else { return [] }

        let statement: SQLiteStatement
        if let keyID = query.keyID {
            statement = try db.statement(
                """
                SELECT b.events FROM api_request_batch_keys k JOIN api_request_batches b ON b.first_seq = k.first_seq
                WHERE k.key_id = ? AND k.first_seq BETWEEN ? AND ? ORDER BY k.first_seq DESC
                """)
            try statement.bind(.text(keyID), .integer(low), .integer(high))
        } else {
            statement = try db.statement(
                "SELECT events FROM api_request_batches WHERE first_seq BETWEEN ? AND ? ORDER BY first_seq DESC")
            try statement.bind(.integer(low), .integer(high))
        }
        var found: [AuditRecord] = []
        try statement.scan { row in
            let events = try unpack(row, column: 0, in: db)
            for event in events.reversed() where Int64(bitPattern: event.seq) < beforeSeq {
                guard query.keyID.map({ $0 == event.keyID }) ?? true,
                    query.sinceMS.map({ event.atMS >= $0 }) ?? true,
                    query.untilMS.map({ event.atMS < $0 }) ?? true
                else { continue }
                found.append(event)
                if found.count == limit { return false }
            }
            return true
        }
        return found
    }

    /// The events of the packed batch in `column` of `row`.
    static func unpack(_ row: SQLiteStatement, column: Int32, in db: SQLiteConnection) throws -> [AuditRecord] {
        do {
            return try row.withBlob(column) { bytes throws(APIRequestPacking.Malformed) in
                try APIRequestPacking.unpack(bytes)
            }
        } catch {
            throw StoreError.corrupt(path: db.path, message: "an api.request batch is \(error)")
        }
    }

    /// The seq and time of the last event stored in a batch, zeros when there is none.
    static func lastEvent(in db: SQLiteConnection) throws -> (seq: UInt64, atMS: Int64) {
        let last = try db.statement(
            "SELECT last_seq, last_at_ms FROM api_request_batches ORDER BY first_seq DESC LIMIT 1"
        ).firstRow { (UInt64(bitPattern: $0.int64(0)), $0.int64(1)) }
        return last ?? (0, 0)
    }

    /// The first seq of the newest batch that started before `atMS`.
    private static func lastBatchStarting(before atMS: Int64, in db: SQLiteConnection) throws -> Int64? {
        try db.statement(
            """
            SELECT first_seq FROM api_request_batches WHERE first_at_ms < ?
            ORDER BY first_at_ms DESC, first_seq DESC LIMIT 1
            """
        ).bind(.integer(atMS)).firstRow { $0.int64(0) }
    }
}

/// The byte layout of a batch of `api.request` events (storage only; never on the wire).
///
/// A version byte, then per event: seq and time (8 bytes each, little-endian), the denial
/// (1 byte: 0 = allowed, else the `Denial` raw value + 1; from version 2 its high bit marks a
/// check made with a grace secret, whose detail is ``KeyService/graceSecretDetail``), the number
/// of permissions (4 bytes), then key id, key name, each permission, resource and client
/// address, each as a 4-byte little-endian length and UTF-8 bytes. Version 1 batches (before
/// grace secrets) are read as they are.
enum APIRequestPacking {
    static let version: UInt8 = 2
    private static let graceBit: UInt8 = 0x80

    /// Whether `event` can go into a batch: an api.request with no detail but the grace secret's.
    static func packs(_ event: AuditRecord) -> Bool {
        event.action == .apiRequest && event.actor.isEmpty
            && (event.detail.isEmpty || event.detail == KeyService.graceSecretDetail)
    }

    static func pack(_ events: ArraySlice<AuditRecord>) -> [UInt8] {
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
    static func unpack(_ bytes: UnsafeRawBufferPointer) throws(Malformed) -> [AuditRecord] {
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
    struct Malformed: Error, CustomStringConvertible {
        let offset: Int
        var description: String { "undecodable at byte \(offset)" }
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
