/// The format of API key secrets (docs/PROTOCOL.md §5):
/// `prefix + 40 base-62 characters + 6-character base-62 CRC-32 of (prefix + body)`.
///
/// ```swift
/// let format = SecretFormat.standard           // prefix "dbm_"
/// let secret = format.generate()               // "dbm_…" (50 characters)
/// format.isWellFormed(secret)                  // true
/// ```
public struct SecretFormat: Sendable, Hashable {
    /// Characters of random body.
    public static let bodyLength = 40
    /// Characters of check.
    public static let checkLength = 6
    /// Base-62 digits in order: 0-9, A-Z, a-z.
    static let alphabet = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)

    /// The prefix every secret starts with, e.g. `dbm_`.
    public let prefix: String
    private let prefixBytes: [UInt8]

    /// Secrets with `prefix`: 1–16 characters of ASCII letters, digits and `_`.
    public init(prefix: String) throws(KeyError) {
        let bytes = Array(prefix.utf8)
        guard (1...16).contains(bytes.count),
            bytes.allSatisfy({ Self.alphabet.contains($0) || $0 == UInt8(ascii: "_") })
        else { throw .invalidCatalog("key prefix \"\(prefix)\" must be 1-16 characters of [0-9A-Za-z_]") }
        self.prefix = prefix
        self.prefixBytes = bytes
    }

    /// The prefix of the default format.
    public static let defaultPrefix = "dbm_"

    /// The default format, prefix ``defaultPrefix``.
    public static let standard = try! SecretFormat(prefix: defaultPrefix)

    /// Total characters of a secret.
    public var length: Int { prefixBytes.count + Self.bodyLength + Self.checkLength }

    /// A new secret with a body from OpenSSL's random source (> 238 bits).
    public func generate() -> String {
        let body = SecureRandom.string(count: Self.bodyLength, alphabet: Self.alphabet)
        let head = prefix + body
        return head + Self.checkDigits(head.utf8)
    }

    /// Whether `secret` has the right prefix, length, alphabet and check. Touches no storage.
    public func isWellFormed(_ secret: String) -> Bool {
        var secret = secret
        return secret.withUTF8 { isWellFormed(bytes: UnsafeRawBufferPointer($0)) }
    }

    /// Whether `key` as a caller presents it, a leading `Bearer ` allowed (docs/PROTOCOL.md §6), is a
    /// well-formed secret.
    public func isWellFormed(presented key: String) -> Bool {
        var key = key
        return key.withUTF8 { isWellFormed(bytes: Self.secret(presentedAs: UnsafeRawBufferPointer($0))) }
    }

    /// The hash of `key` as a caller presents it (a leading `Bearer ` allowed), or nil when it is
    /// not a well-formed secret of this format: what a check and a leak report look up.
    public func hash(ofPresented key: String) -> SecretHash? {
        func hash(_ utf8: UnsafeBufferPointer<UInt8>) -> SecretHash? {
            let bytes = Self.secret(presentedAs: UnsafeRawBufferPointer(utf8))
            return isWellFormed(bytes: bytes) ? SecretHash(ofBytes: bytes) : nil
        }
        // Read in place (a native string always is): `withUTF8` mutates, so needs a copy first.
        if let hashed = key.utf8.withContiguousStorageIfAvailable(hash) { return hashed }
        var copy = key
        return copy.withUTF8(hash)
    }

    /// The scheme a presented secret may carry: `Bearer <secret>` stands for the secret.
    public static let bearerScheme = "Bearer "
    private static let bearerBytes = Array(bearerScheme.utf8)

    /// The bytes of a presented key without a leading `Bearer `.
    public static func secret(presentedAs bytes: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        bytes.starts(with: bearerBytes) ? UnsafeRawBufferPointer(rebasing: bytes[bearerBytes.count...]) : bytes
    }

    /// ``isWellFormed(_:)`` on raw bytes.
    public func isWellFormed(bytes: UnsafeRawBufferPointer) -> Bool {
        guard bytes.count == length, bytes.starts(with: prefixBytes) else { return false }
        let headLength = prefixBytes.count + Self.bodyLength
        for byte in bytes[prefixBytes.count...] where Self.digitValue(byte) == nil { return false }
        // Compare the check digits in place, least significant last, without building a string.
        var value = CRC32.checksum(UnsafeRawBufferPointer(rebasing: bytes[..<headLength]))
        for index in stride(from: bytes.count - 1, through: headLength, by: -1) {
            guard bytes[index] == Self.alphabet[Int(value % 62)] else { return false }
            value /= 62
        }
        return true
    }

    /// A display hint that identifies a secret without revealing it: the prefix and 4 characters.
    public func hint(for secret: String) -> String {
        String(secret.prefix(prefixBytes.count + 4)) + "…"
    }

    /// The CRC-32 of `bytes` as 6 base-62 digits, most significant first.
    static func checkDigits(_ bytes: String.UTF8View) -> String {
        var value =
            bytes.withContiguousStorageIfAvailable { CRC32.checksum(UnsafeRawBufferPointer($0)) }
            ?? CRC32.checksum(Array(bytes))
        var digits = [UInt8](repeating: alphabet[0], count: checkLength)
        for index in stride(from: checkLength - 1, through: 0, by: -1) {
            digits[index] = alphabet[Int(value % 62)]
            value /= 62
        }
        return String(decoding: digits, as: UTF8.self)
    }

    private static func digitValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): byte - UInt8(ascii: "A") + 10
        case UInt8(ascii: "a")...UInt8(ascii: "z"): byte - UInt8(ascii: "a") + 36
        default: nil
        }
    }
}

/// CRC-32 (IEEE 802.3, as zlib's `crc32`), eight bytes per step ("slicing-by-8"): a secret's
/// 40 characters take 5 steps instead of 40 dependent table lookups.
enum CRC32 {
    /// Table k maps a byte to its CRC contribution k bytes further on; table 0 is the classic one.
    private static let tables: [UInt32] = {
        var tables = [UInt32](repeating: 0, count: 8 * 256)
        for index in 0..<256 {
            var crc = UInt32(index)
            for _ in 0..<8 { crc = crc & 1 == 1 ? 0xEDB8_8320 ^ (crc >> 1) : crc >> 1 }
            tables[index] = crc
        }
        for table in 1..<8 {
            for index in 0..<256 {
                let previous = tables[(table - 1) * 256 + index]
                tables[table * 256 + index] = (previous >> 8) ^ tables[Int(previous & 0xFF)]
            }
        }
        return tables
    }()

    static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        tables.withUnsafeBufferPointer { table in
            var crc: UInt32 = 0xFFFF_FFFF
            var offset = 0
            while offset + 8 <= bytes.count {
                let low = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self)) ^ crc
                let high = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self))
                crc =
                    table[7 * 256 + Int(low & 0xFF)] ^ table[6 * 256 + Int((low >> 8) & 0xFF)]
                    ^ table[5 * 256 + Int((low >> 16) & 0xFF)] ^ table[4 * 256 + Int(low >> 24)]
                    ^ table[3 * 256 + Int(high & 0xFF)] ^ table[2 * 256 + Int((high >> 8) & 0xFF)]
                    ^ table[256 + Int((high >> 16) & 0xFF)] ^ table[Int(high >> 24)]
                offset += 8
            }
            while offset < bytes.count {
                crc = table[Int((crc ^ UInt32(bytes[offset])) & 0xFF)] ^ (crc >> 8)
                offset += 1
            }
            return crc ^ 0xFFFF_FFFF
        }
    }

    static func checksum(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBytes { checksum($0) }
    }
}
