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
