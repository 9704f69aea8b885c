extension AuditChain {
    /// An event as the digest reads it: a stored record, or an exported entry.
    public protocol DigestInput {
        var seq: UInt64 { get }
        var atMS: Int64 { get }
        /// The deny reason's number (`DenyReason`), 0 for none.
        var reasonNumber: UInt32 { get }
        var actionName: String { get }
        var keyID: String { get }
        var keyName: String { get }
        var actor: String { get }
        var detail: String { get }
        var permissions: [String] { get }
        var resource: String { get }
        var clientAddress: String { get }
    }

    /// The fields of an event the digest covers, as plain values (from a stored record, or from
    /// an exported `AuditEvent` whose action this version may not know).
    public struct Entry: Sendable, Hashable, DigestInput {
        public var seq: UInt64
        public var atMS: Int64
        public var action: String
        public var keyID: String
        public var keyName: String
        public var actor: String
        public var detail: String
        /// The deny reason's number (`DenyReason`), 0 for none.
        public var reason: UInt32
        public var permissions: [String]
        public var resource: String
        public var clientAddress: String

        public init(
            seq: UInt64, atMS: Int64, action: String, keyID: String, keyName: String, actor: String, detail: String,
            reason: UInt32, permissions: [String], resource: String, clientAddress: String
        ) {
            self.seq = seq
            self.atMS = atMS
            self.action = action
            self.keyID = keyID
            self.keyName = keyName
            self.actor = actor
            self.detail = detail
            self.reason = reason
            self.permissions = permissions
            self.resource = resource
            self.clientAddress = clientAddress
        }

        public init(_ record: AuditRecord) {
            self.init(
                seq: record.seq, atMS: record.atMS, action: record.action.rawValue, keyID: record.keyID,
                keyName: record.keyName, actor: record.actor, detail: record.detail,
                reason: UInt32(record.denial?.rawValue ?? 0), permissions: record.permissions,
                resource: record.resource, clientAddress: record.clientAddress)
        }

        public var reasonNumber: UInt32 { reason }
        public var actionName: String { action }
    }

    /// SHA-256 of the entries' bytes, in seq order.
    public static func digest(_ entries: [Entry]) -> [UInt8] {
        let inOrder = entries.indices.dropFirst().allSatisfy { entries[$0 - 1].seq < entries[$0].seq }
        return digest(of: inOrder ? entries : entries.sorted { $0.seq < $1.seq })
    }

    /// SHA-256 of the events' bytes, taken in the order given (seq order). The audit writer takes
    /// one per link it stores: the bytes are counted, then written into one buffer, and no field
    /// is copied.
    public static func digest<Events: Collection>(of events: Events) -> [UInt8] where Events.Element: DigestInput {
        events.withContiguousStorageIfAvailable(digest(of:)) ?? Array(events).withUnsafeBufferPointer(digest(of:))
    }

    /// ``digest(of:)`` over events in place: each read where it lies (a subscript, or passing an
    /// event on, would copy it: a retain and a release for each of its strings and arrays).
    private static func digest<Event: DigestInput>(of events: UnsafeBufferPointer<Event>) -> [UInt8] {
        guard let base = events.baseAddress else { return sha256([]) }
        var size = 0
        for index in 0..<events.count { size += DigestWriter.size(of: base + index) }
        let bytes = [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
            var writer = DigestWriter(into: UnsafeMutableRawBufferPointer(buffer))
            for index in 0..<events.count { writer.write(base + index) }
            precondition(writer.offset == size, "digest bytes miscounted")
            count = size
        }
        return sha256(bytes)
    }

    /// Writes events in the digest's layout into a buffer ``size(of:)`` measured.
    private struct DigestWriter {
        let buffer: UnsafeMutableRawBufferPointer
        var offset = 0

        init(into buffer: UnsafeMutableRawBufferPointer) { self.buffer = buffer }

        /// Fixed fields (seq, at_ms, reason) and eight byte counts.
        private static let fixedSize = 8 + 8 + 4 + 8 * 4

        static func size<Event: DigestInput>(of event: UnsafePointer<Event>) -> Int {
            var size = fixedSize + event.pointee.actionName.utf8.count + event.pointee.keyID.utf8.count
            size += event.pointee.keyName.utf8.count + event.pointee.actor.utf8.count
            size += event.pointee.detail.utf8.count + event.pointee.resource.utf8.count
            size += event.pointee.clientAddress.utf8.count
            var first = true
            forEachName(in: event.pointee.permissions) { name in
                size += name.count + (first ? 0 : 1)
                first = false
            }
            return size
        }

        mutating func write<Event: DigestInput>(_ event: UnsafePointer<Event>) {
            write(event.pointee.seq)
            write(UInt64(bitPattern: event.pointee.atMS))
            write(event.pointee.reasonNumber)
            write(text: event.pointee.actionName)
            write(text: event.pointee.keyID)
            write(text: event.pointee.keyName)
            write(text: event.pointee.actor)
            write(text: event.pointee.detail)
            writeJoined(event.pointee.permissions)
            write(text: event.pointee.resource)
            write(text: event.pointee.clientAddress)
        }

        private mutating func write(_ value: some FixedWidthInteger) {
            withUnsafeBytes(of: value.littleEndian) { write(bytes: $0) }
        }

        private mutating func write(bytes: UnsafeRawBufferPointer) {
            guard let source = bytes.baseAddress, !bytes.isEmpty else { return }
            (buffer.baseAddress! + offset).copyMemory(from: source, byteCount: bytes.count)
            offset += bytes.count
        }

        private mutating func write(text: String) {
            write(UInt32(text.utf8.count))
            Self.withUTF8(text) { write(bytes: UnsafeRawBufferPointer($0)) }
        }

        /// The permissions joined by single spaces, empty names left out (the form every store
        /// reads back): each name split at its spaces, as a stored list would be.
        private mutating func writeJoined(_ permissions: [String]) {
            let countAt = offset
            write(UInt32(0))
            var first = true
            Self.forEachName(in: permissions) { name in
                if !first { withUnsafeBytes(of: UInt8(0x20)) { write(bytes: $0) } }
                write(bytes: UnsafeRawBufferPointer(name))
                first = false
            }
            buffer.storeBytes(of: UInt32(offset - countAt - 4).littleEndian, toByteOffset: countAt, as: UInt32.self)
        }

        /// Each space-free run of bytes in `permissions`, in order.
        private static func forEachName(in permissions: [String], _ body: (UnsafeBufferPointer<UInt8>) -> Void) {
            for permission in permissions {
                withUTF8(permission) { utf8 in
                    var index = 0
                    while index < utf8.count {
                        guard utf8[index] != 0x20 else {
                            index += 1
                            continue
                        }
                        var end = index + 1
                        while end < utf8.count, utf8[end] != 0x20 { end += 1 }
                        body(UnsafeBufferPointer(rebasing: utf8[index..<end]))
                        index = end
                    }
                }
            }
        }

        private static func withUTF8(_ text: String, _ body: (UnsafeBufferPointer<UInt8>) -> Void) {
            if text.utf8.withContiguousStorageIfAvailable(body) == nil {
                Array(text.utf8).withUnsafeBufferPointer(body)
            }
        }
    }

    /// A link's hash: SHA-256 of the previous link's hash and the link's digest.
    public static func linkHash(previous: [UInt8], digest: [UInt8]) -> [UInt8] {
        sha256(previous + digest)
    }

    /// SHA-256 of `bytes` (OpenSSL, through ``SecretHash``: one wrapper).
    static func sha256(_ bytes: [UInt8]) -> [UInt8] {
        bytes.withUnsafeBytes { SecretHash(ofBytes: $0).digest }
    }
}
