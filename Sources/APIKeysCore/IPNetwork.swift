#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// An IPv4 or IPv6 network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`; an address alone is
/// the network of that address), for a key's allowlist. Held as 128 bits, IPv4 as IPv4-mapped IPv6
/// (`::ffff:a.b.c.d`), so that an IPv4 client seen through an IPv6 socket matches an IPv4 range.
public struct IPNetwork: Sendable, Hashable, CustomStringConvertible {
    /// The network's address, its host bits cleared.
    private let high: UInt64
    private let low: UInt64
    /// In the 128-bit space (an IPv4 /8 is 104).
    private let prefixLength: Int
    /// The network as given, normalised (`10.1.2.3/8` → `10.0.0.0/8`).
    public let description: String

    /// The network `text` names, or nil when it is not one.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), let (address, isV4) = Self.parse(String(parts[0])) else { return nil }
        let width = isV4 ? 32 : 128
        var length = width
        if parts.count == 2 {
            guard let given = Int(parts[1]), (0...width).contains(given), parts[1].allSatisfy(\.isASCII) else {
                return nil
            }
            length = given
        }
        prefixLength = (isV4 ? 96 : 0) + length
        (high, low) = Self.mask(address, prefixLength)
        description = "\(Self.format(high: high, low: low, isV4: isV4))/\(length)"
    }

    /// Whether the address `(high, low)` (from ``address(_:)``) is in this network.
    public func contains(_ address: (high: UInt64, low: UInt64)) -> Bool {
        let masked = Self.mask(address, prefixLength)
        return masked.0 == high && masked.1 == low
    }

    /// A client address as checks carry it, as 128 bits: IPv4 (`192.0.2.7`, also with a `:port`),
    /// IPv6 (`2001:db8::1`, `[2001:db8::1]:443`, a `%zone` ignored), IPv4-mapped IPv6. Nil for
    /// anything else. On the check path: reads the UTF-8 bytes in place, allocates nothing.
    public static func address(_ text: String) -> (high: UInt64, low: UInt64)? {
        var text = text
        return text.withUTF8 { utf8 -> (high: UInt64, low: UInt64)? in
            var start = 0
            var end = utf8.count
            guard end > 0, end <= 64 else { return nil }
            if utf8[0] == UInt8(ascii: "[") {
                guard let close = utf8.firstIndex(of: UInt8(ascii: "]")) else { return nil }
                (start, end) = (1, close)
            } else if let colon = utf8.firstIndex(of: UInt8(ascii: ":")),
                utf8.lastIndex(of: UInt8(ascii: ":")) == colon,
                utf8.contains(UInt8(ascii: "."))
            {
                end = colon  // a.b.c.d:port
            }
            if let zone = utf8[start..<end].firstIndex(of: UInt8(ascii: "%")) { end = zone }
            guard start < end else { return nil }
            return withUnsafeTemporaryAllocation(of: CChar.self, capacity: 65) { buffer in
                for index in start..<end { buffer[index - start] = CChar(bitPattern: utf8[index]) }
                buffer[end - start] = 0
                return parse(cString: buffer.baseAddress!).map { ($0.0.0, $0.0.1) }
            }
        }
    }

    /// ``parse(cString:)`` of a Swift string.
    private static func parse(_ text: String) -> ((UInt64, UInt64), Bool)? {
        guard !text.isEmpty, text.utf8.count <= 64 else { return nil }
        return text.withCString { parse(cString: $0) }
    }

    /// The 128 bits of an IPv4 (mapped) or IPv6 address, and whether it was written as IPv4.
    private static func parse(cString text: UnsafePointer<CChar>) -> ((UInt64, UInt64), Bool)? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            return ((0, 0xffff_0000_0000 | UInt64(UInt32(bigEndian: v4.s_addr))), true)
        }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, text, &v6) == 1 else { return nil }
        return withUnsafeBytes(of: &v6) { raw in
            (
                (
                    UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self)),
                    UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
                ), false
            )
        }
    }

    private static func mask(_ address: (UInt64, UInt64), _ length: Int) -> (UInt64, UInt64) {
        let highMask: UInt64 = length >= 64 ? ~0 : (length == 0 ? 0 : ~0 << (64 - length))
        let lowMask: UInt64 = length >= 128 ? ~0 : (length <= 64 ? 0 : ~0 << (128 - length))
        return (address.0 & highMask, address.1 & lowMask)
    }

    private static func format(high: UInt64, low: UInt64, isV4: Bool) -> String {
        if isV4 {
            let v4 = UInt32(truncatingIfNeeded: low)
            return "\(v4 >> 24).\(v4 >> 16 & 0xff).\(v4 >> 8 & 0xff).\(v4 & 0xff)"
        }
        var v6 = in6_addr()
        withUnsafeMutableBytes(of: &v6) { raw in
            for index in 0..<8 {
                raw[index] = UInt8(truncatingIfNeeded: high >> (56 - 8 * UInt64(index)))
                raw[8 + index] = UInt8(truncatingIfNeeded: low >> (56 - 8 * UInt64(index)))
            }
        }
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        inet_ntop(AF_INET6, &v6, &buffer, socklen_t(buffer.count))
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
