/// The chain's text forms: hex digests, and the anchor sentence of an `audit.pruned` event.
extension AuditChain {
    /// How an `audit.pruned` event names the anchor its pruning left.
    public static func anchorDetail(_ anchor: Point) -> String {
        "the chain now starts after link \(anchor.position), hash \(hex(anchor.hash))"
    }

    /// The anchor an `audit.pruned` event's detail names, if it names one.
    public static func anchor(inDetail detail: String) -> Point? {
        let marker = "the chain now starts after link "
        guard let start = detail.firstRange(of: marker)?.upperBound else { return nil }
        let rest = detail[start...]
        guard let comma = rest.firstRange(of: ", hash "), let position = UInt64(rest[..<comma.lowerBound]),
            let hash = bytes(hex: String(rest[comma.upperBound...].prefix(64)))
        else { return nil }
        return Point(position: position, hash: hash)
    }

    /// How an `audit.pruned` event names the links whose events it removed while keeping their
    /// hashes (gaps): "events of links 5–9, 12–12 removed, their hashes kept".
    public static func gapDetail(_ ranges: [ClosedRange<UInt64>]) -> String {
        "events of links " + ranges.map { "\($0.lowerBound)–\($0.upperBound)" }.joined(separator: ", ")
            + " removed, their hashes kept"
    }

    /// The position ranges an `audit.pruned` event's detail names as emptied (``gapDetail(_:)``).
    public static func gaps(inDetail detail: String) -> [ClosedRange<UInt64>] {
        guard let start = detail.firstRange(of: "events of links ")?.upperBound,
            let end = detail[start...].firstRange(of: " removed, their hashes kept")?.lowerBound
        else { return [] }
        return detail[start..<end].split(separator: ", ").compactMap { part in
            let bounds = part.split(separator: "–")
            guard bounds.count == 2, let low = UInt64(bounds[0]), let high = UInt64(bounds[1]), low <= high else {
                return nil
            }
            return low...high
        }
    }

    public static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// 32 bytes from 64 hex digits; nil for anything else.
    public static func bytes(hex text: String) -> [UInt8]? {
        let utf8 = Array(text.utf8)
        guard utf8.count == 64 else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case 48...57: c - 48
            case 97...102: c - 87
            case 65...70: c - 55
            default: nil
            }
        }
        var out: [UInt8] = []
        for index in stride(from: 0, to: 64, by: 2) {
            guard let high = nibble(utf8[index]), let low = nibble(utf8[index + 1]) else { return nil }
            out.append(high << 4 | low)
        }
        return out
    }
}
