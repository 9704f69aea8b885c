/// An HTTP field's optional whitespace (RFC 9110 §5.6.3): a space or a tab.
private func isOWS(_ byte: UInt8) -> Bool { byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") }

/// `byte` with an ASCII capital letter made lowercase.
private func asciiLowercased(_ byte: UInt8) -> UInt8 {
    byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
}

extension Substring {
    /// Without leading and trailing spaces and tabs: an HTTP field's optional whitespace (RFC 9110
    /// §5.6.3). Other whitespace is part of the value.
    var trimmingOptionalWhitespace: Substring {
        let bytes = utf8
        guard let first = bytes.firstIndex(where: { !isOWS($0) }) else { return self[endIndex...] }
        // Both ends fall next to an ASCII byte or an end, so on scalar boundaries.
        let end = bytes.index(after: bytes.lastIndex(where: { !isOWS($0) })!)
        return self[first..<end]
    }
}

extension StringProtocol {
    /// Whether this equals `lowercase` (lowercase ASCII) with ASCII letters compared regardless
    /// of case, as field names and authentication scheme names are (RFC 9110 §5.1, §11.1); every
    /// other byte must match. Runs for each header of each request, so over contiguous bytes
    /// where the string has them.
    func equalsIgnoringASCIICase(_ lowercase: StaticString) -> Bool {
        matchesIgnoringASCIICase(lowercase, wholly: true)
    }

    /// Whether this begins with `lowercase`, compared as ``equalsIgnoringASCIICase(_:)`` compares.
    func hasPrefixIgnoringASCIICase(_ lowercase: StaticString) -> Bool {
        matchesIgnoringASCIICase(lowercase, wholly: false)
    }

    private func matchesIgnoringASCIICase(_ lowercase: StaticString, wholly: Bool) -> Bool {
        lowercase.withUTF8Buffer { wanted in
            func matches(_ bytes: some Collection<UInt8>) -> Bool {
                (wholly ? bytes.count == wanted.count : bytes.count >= wanted.count)
                    && zip(bytes, wanted).allSatisfy { asciiLowercased($0) == $1 }
            }
            return utf8.withContiguousStorageIfAvailable(matches) ?? matches(utf8)
        }
    }
}

extension String {
    /// This field value from its byte `offset` on (an offset after ASCII bytes), without optional
    /// whitespace, as a new string: one copy of the bytes and no `Substring` on the way, as it
    /// runs for every request's credential.
    func fieldValue(fromByte offset: Int = 0) -> String {
        let value = utf8.withContiguousStorageIfAvailable { bytes in
            var (start, end) = (Swift.min(offset, bytes.count), bytes.count)
            while start < end && isOWS(bytes[start]) { start += 1 }
            while end > start && isOWS(bytes[end - 1]) { end -= 1 }
            return String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<end]), as: UTF8.self)
        }
        if let value { return value }
        var contiguous = self
        contiguous.makeContiguousUTF8()
        return contiguous.fieldValue(fromByte: offset)
    }
}
