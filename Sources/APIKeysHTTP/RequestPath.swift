import APIKeysCore

/// The path forward-auth judges: a request target normalized as RFC 3986 section 6 says, so that
/// every spelling an upstream would serve as one path is judged as that path, and every spelling
/// an upstream might read in more than one way is refused.
///
/// - Percent-encoded unreserved characters (`A–Z a–z 0–9 - . _ ~`) are decoded; other
///   percent-encodings stay encoded, their hex digits in upper case.
/// - Dot segments (`.`, `..`, also encoded as `%2e`) are removed and repeated slashes merged.
/// - Refused: an encoded `/` or `\`, a raw `\`, a `;` (path parameters, which Java containers
///   drop), a NUL or any other control character (raw or encoded), invalid percent-encoding,
///   percent-encoded bytes that are not UTF-8 (overlong forms included), a `..` that climbs
///   above the root, a target that does not start with `/`.
///
/// Matching stays case-sensitive. The query (after `?`) is not part of the path.
package enum RequestPath {
    /// Why a request target cannot be judged safely.
    package enum Refusal: Error, Hashable, CustomStringConvertible {
        case notAbsolutePath
        case encodedSeparator
        case backslash
        case parameter
        case controlCharacter
        case invalidPercentEncoding
        case invalidUTF8
        case fragment
        case climbsAboveRoot

        package var description: String {
            switch self {
            case .notAbsolutePath: "the path does not start with /"
            case .encodedSeparator: "the path holds an encoded / or \\"
            case .backslash: "the path holds a \\"
            case .parameter: "the path holds a ; parameter"
            case .controlCharacter: "the path holds a control character"
            case .invalidPercentEncoding: "the path holds invalid percent-encoding"
            case .invalidUTF8: "the path's percent-encoded bytes are not UTF-8"
            case .fragment: "the path holds a #"
            case .climbsAboveRoot: "the path's .. climbs above the root"
            }
        }
    }

    /// The normalized path of `target` (a path with an optional query): its segments without
    /// dot segments or empty ones, joined by `/`, a trailing `/` kept.
    package static func normalized(_ target: String) throws(Refusal) -> String {
        if let canonical = alreadyCanonical(target) { return canonical }
        return try normalizedInFull(target)
    }

    /// The path of `target` when normalizing would return it unchanged (the common case, which
    /// then costs one pass over the bytes and no allocation); nil when it must be normalized in
    /// full. Unchanged means: it starts with `/`, holds only unreserved characters and `/`, no
    /// empty segment but a last one (`/api/`), and no `.` or `..` segment.
    static func alreadyCanonical(_ target: String) -> String? {
        let path = withoutQuery(target)
        let bytes = path.utf8
        guard bytes.first == UInt8(ascii: "/") else { return nil }
        var segmentLength = 0
        var segmentDots = 0
        var index = bytes.index(after: bytes.startIndex)
        while index < bytes.endIndex {
            let byte = bytes[index]
            if byte == UInt8(ascii: "/") {
                // An empty, `.` or `..` segment before this slash.
                guard segmentLength > 0, segmentDots < segmentLength || segmentLength > 2 else { return nil }
                segmentLength = 0
                segmentDots = 0
            } else {
                guard isUnreserved(byte) else { return nil }
                segmentLength += 1
                if byte == UInt8(ascii: ".") { segmentDots += 1 }
            }
            index = bytes.index(after: index)
        }
        // The last segment may be empty (a trailing slash, or the root), not `.` or `..`.
        guard segmentLength == 0 || segmentDots < segmentLength || segmentLength > 2 else { return nil }
        return path.endIndex == target.endIndex ? target : String(path)
    }

    /// `target` up to its query (the first `?`), the query left out.
    static func withoutQuery(_ target: String) -> Substring {
        target[..<(target.utf8.firstIndex(of: UInt8(ascii: "?")) ?? target.endIndex)]
    }

    /// ``normalized(_:)`` step by step, whatever the target.
    static func normalizedInFull(_ target: String) throws(Refusal) -> String {
        let path = withoutQuery(target).utf8
        guard path.first == UInt8(ascii: "/") else { throw .notAbsolutePath }
        var canonical: [UInt8] = []
        canonical.reserveCapacity(path.count)
        // Every percent-encoded byte decoded, to check what an upstream decodes: UTF-8 without
        // control characters, whether they came raw or encoded.
        var decoded: [UInt8] = []
        var index = path.startIndex
        while index < path.endIndex {
            let byte = path[index]
            switch byte {
            case UInt8(ascii: "%"):
                let first = path.index(after: index)
                guard first < path.endIndex, path.index(after: first) < path.endIndex,
                    let high = hexValue(path[first]), let low = hexValue(path[path.index(after: first)])
                else { throw .invalidPercentEncoding }
                let value = high << 4 | low
                if value == UInt8(ascii: "/") || value == UInt8(ascii: "\\") { throw .encodedSeparator }
                decoded.append(value)
                if isUnreserved(value) {
                    canonical.append(value)
                } else {
                    canonical += [UInt8(ascii: "%"), hexDigits[Int(high)], hexDigits[Int(low)]]
                }
                index = path.index(index, offsetBy: 3)
                continue
            case UInt8(ascii: "\\"): throw .backslash
            case UInt8(ascii: ";"): throw .parameter
            case UInt8(ascii: "#"): throw .fragment
            default:
                canonical.append(byte)
                decoded.append(byte)
            }
            index = path.index(after: index)
        }
        guard let text = String(validating: decoded, as: UTF8.self) else { throw .invalidUTF8 }
        if text.unicodeScalars.contains(where: CheckLimits.isControl) { throw .controlCharacter }

        var segments: [ArraySlice<UInt8>] = []
        // Whether the last segment read names a directory: empty (a trailing `/`), `.` or `..`.
        var endsInDirectory = false
        for segment in canonical.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).dropFirst() {
            let isDot = segment.elementsEqual(".".utf8)
            let isDotDot = segment.elementsEqual("..".utf8)
            endsInDirectory = segment.isEmpty || isDot || isDotDot
            if isDotDot {
                guard segments.popLast() != nil else { throw .climbsAboveRoot }
            } else if !endsInDirectory {
                segments.append(segment)
            }
        }
        let joined = "/" + segments.map { String(decoding: $0, as: UTF8.self) }.joined(separator: "/")
        return !segments.isEmpty && endsInDirectory ? joined + "/" : joined
    }

    private static let hexDigits = Array("0123456789ABCDEF".utf8)

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    private static func isUnreserved(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
            UInt8(ascii: "~"):
            true
        default: false
        }
    }
}
