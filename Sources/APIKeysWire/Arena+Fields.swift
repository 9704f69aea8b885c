internal import CProtobufC
#if canImport(Glibc)
    import Glibc
#endif

/// Reading fields out of unpacked C messages into Swift values.
extension Arena {
    /// The string at `pointer`, checked for valid UTF-8 and for a NUL that C would have cut it at.
    func string(_ pointer: UnsafeMutablePointer<CChar>?, field: String, of message: String, reusing recent: String = "")
        throws -> String
    {
        try read(pointer, field: field, of: message, reusing: recent).value
    }

    /// ``string(_:field:of:reusing:)``, and whether it is `recent` (the same bytes; not merely
    /// equal by `==`, which is canonical equivalence).
    private func read(
        _ pointer: UnsafeMutablePointer<CChar>?, field: String, of message: String, reusing recent: String
    )
        throws -> (value: String, reused: Bool)
    {
        // An absent field is protobuf-c's shared empty default; every other string protobuf-c
        // unpacked is a block of this arena, its size the length plus NUL.
        guard let pointer, capikeys_is_protobuf_empty_string(pointer) == 0 else { return ("", recent.isEmpty) }
        guard let size = allocatedSize(of: pointer) else {
            throw WireError.malformedMessage(message: message)
        }
        let bytes = UnsafeRawBufferPointer(start: pointer, count: size - 1)
        // The same bytes as `recent`, a string read (and checked) before: that string, without a
        // new one.
        if recent.hasBytes(bytes) { return (recent, true) }
        if memchr(pointer, 0, bytes.count) != nil { throw WireError.nulInString(message: message, field: field) }
        // ASCII (keys, permission names, ids) is valid UTF-8 as it is; only the rest needs the
        // stdlib's validation, which is generic and costs a metadata lookup per call.
        if !bytes.contains(where: { $0 >= 0x80 }) { return (String(decoding: bytes, as: UTF8.self), false) }
        guard let value = String(validating: bytes, as: UTF8.self) else {
            throw WireError.invalidUTF8(message: message, field: field)
        }
        return (value, false)
    }

    /// A repeated string field.
    func strings(
        _ pointer: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?,
        count: Int, field: String, of message: String, reusing recent: [String] = []
    ) throws -> [String] {
        guard let pointer, count > 0 else { return [] }
        let pointers = UnsafeBufferPointer(start: pointer, count: count)
        guard count == recent.count else { return try pointers.map { try string($0, field: field, of: message) } }
        // The same strings as `recent`, a list read before: that list, without a new array. Each
        // string is read once; a new array is made at the first one that differs.
        var read: [String]?
        for (index, element) in pointers.enumerated() {
            let (value, reused) = try self.read(element, field: field, of: message, reusing: recent[index])
            if read == nil, !reused { read = Array(recent[..<index]) }
            read?.append(value)
        }
        return read ?? recent
    }

    /// A bytes field.
    func bytes(_ data: ProtobufCBinaryData) -> [UInt8] {
        guard data.len > 0, let base = data.data else { return [] }
        return Array(UnsafeBufferPointer(start: base, count: data.len))
    }

    /// A singular message field; an absent one reads as the default value, as in proto3.
    func message<M: WireMessage, C>(_ pointer: UnsafeMutablePointer<C>?) throws -> M {
        guard let pointer else { return M() }
        return try M.codec.read(UnsafeRawPointer(pointer), self)
    }

    /// A repeated message field.
    func messages<M: WireMessage, C>(_ pointer: UnsafeMutablePointer<UnsafeMutablePointer<C>?>?, count: Int) throws
        -> [M]
    {
        guard let pointer, count > 0 else { return [] }
        return try UnsafeBufferPointer(start: pointer, count: count).map { try message($0) }
    }
}

/// Writing Swift values into C messages to pack.
extension Arena {
    /// A NUL-terminated copy of `value`; protobuf-c cannot carry a NUL inside a string.
    func cString(_ value: String, field: String, of message: String) throws -> UnsafeMutablePointer<CChar> {
        var value = value
        return try value.withUTF8 { utf8 in
            if utf8.contains(0) { throw WireError.nulInString(message: message, field: field) }
            let block = allocate(utf8.count + 1)
            block.copyMemory(from: utf8.baseAddress!, byteCount: utf8.count)
            block.storeBytes(of: 0, toByteOffset: utf8.count, as: UInt8.self)
            return block.assumingMemoryBound(to: CChar.self)
        }
    }

    /// A repeated string field as protobuf-c's count and array.
    func cStrings(_ values: [String], field: String, of message: String)
        throws -> (Int, UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?)
    {
        guard !values.isEmpty else { return (0, nil) }
        let array = pointerArray(of: CChar.self, count: values.count)
        for (index, value) in values.enumerated() {
            array[index] = try cString(value, field: field, of: message)
        }
        return (values.count, array)
    }

    /// A bytes field.
    func binary(_ value: [UInt8]) -> ProtobufCBinaryData {
        guard !value.isEmpty else { return ProtobufCBinaryData(len: 0, data: nil) }
        let block = allocate(value.count)
        value.withUnsafeBytes { block.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        return ProtobufCBinaryData(len: value.count, data: block.assumingMemoryBound(to: UInt8.self))
    }

    /// A C message struct of type `C`, initialised and filled from `value`.
    func make<M: WireMessage, C>(_ value: M, as type: C.Type) throws -> UnsafeMutablePointer<C> {
        try M.codec.make(value, self).assumingMemoryBound(to: C.self)
    }

    /// A repeated message field as protobuf-c's count and array of struct pointers.
    func makeArray<M: WireMessage, C>(_ values: [M], as type: C.Type)
        throws -> (Int, UnsafeMutablePointer<UnsafeMutablePointer<C>?>?)
    {
        guard !values.isEmpty else { return (0, nil) }
        let array = pointerArray(of: C.self, count: values.count)
        for (index, value) in values.enumerated() {
            array[index] = try make(value, as: C.self)
        }
        return (values.count, array)
    }

    private func pointerArray<T>(of: T.Type, count: Int) -> UnsafeMutablePointer<UnsafeMutablePointer<T>?> {
        let stride = MemoryLayout<UnsafeMutablePointer<T>?>.stride
        return allocate(stride * count).bindMemory(to: UnsafeMutablePointer<T>?.self, capacity: count)
    }
}

/// The entry message protobuf writes a `map<K, V>` field as (a repeated `{ key = 1; value = 2 }`).
protocol WireMapEntry: WireMessage {
    associatedtype Key: Hashable & Comparable & Sendable
    associatedtype Value: Hashable & Sendable
    var key: Key { get }
    var value: Value { get }
    init(key: Key, value: Value)
}

/// Map fields.
extension Arena {
    /// A map field; a repeated key takes its last value, as in every protobuf runtime.
    func dictionary<Entry: WireMapEntry, C>(
        _ pointer: UnsafeMutablePointer<UnsafeMutablePointer<C>?>?, count: Int, of: Entry.Type
    ) throws -> [Entry.Key: Entry.Value] {
        let entries: [Entry] = try messages(pointer, count: count)
        return Dictionary(entries.map { ($0.key, $0.value) }, uniquingKeysWith: { _, last in last })
    }

    /// A map field as protobuf-c's count and array of entries, in key order (deterministic bytes).
    func makeMap<Entry: WireMapEntry, C>(_ dictionary: [Entry.Key: Entry.Value], of: Entry.Type, as type: C.Type)
        throws -> (Int, UnsafeMutablePointer<UnsafeMutablePointer<C>?>?)
    {
        let entries = dictionary.sorted { $0.key < $1.key }.map { Entry(key: $0.key, value: $0.value) }
        return try makeArray(entries, as: C.self)
    }
}
