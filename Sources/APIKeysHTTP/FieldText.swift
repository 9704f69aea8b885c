extension Substring {
    /// Without leading and trailing spaces and tabs: an HTTP field's optional whitespace (RFC 9110
    /// §5.6.3). Other whitespace is part of the value.
    var trimmingOptionalWhitespace: Substring {
        let bytes = utf8
        func isOWS(_ byte: UInt8) -> Bool { byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") }
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
        func folded(_ byte: UInt8) -> UInt8 {
            byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
        }
        return lowercase.withUTF8Buffer { wanted in
            utf8.withContiguousStorageIfAvailable { bytes in
                bytes.count == wanted.count && zip(bytes, wanted).allSatisfy { folded($0) == $1 }
            } ?? (utf8.count == wanted.count && zip(utf8, wanted).allSatisfy { folded($0) == $1 })
        }
    }
}
