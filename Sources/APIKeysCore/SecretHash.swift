internal import COpenSSLCrypto

/// SHA-256 of a whole secret: the only form in which a secret is kept.
public struct SecretHash: Hashable, Sendable {
    /// The 32 digest bytes as four words, so that hashing and comparing are cheap.
    private let words: (UInt64, UInt64, UInt64, UInt64)

    /// The hash of `secret`'s UTF-8 bytes.
    public init(of secret: String) {
        var secret = secret
        self = secret.withUTF8 { SecretHash(ofBytes: UnsafeRawBufferPointer($0)) }
    }

    /// The hash of `bytes`.
    public init(ofBytes bytes: UnsafeRawBufferPointer) {
        var digest = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        withUnsafeMutableBytes(of: &digest) { out in
            copensslcrypto_sha256(bytes.baseAddress, bytes.count, out.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
        self.words = digest
    }

    /// A hash from its 32 stored bytes; nil for any other length.
    public init?(digest: [UInt8]) {
        guard digest.count == 32 else { return nil }
        var words = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        withUnsafeMutableBytes(of: &words) { $0.copyBytes(from: digest) }
        self.words = words
    }

    /// The first 16 digest bytes as two words.
    public var prefix128: (UInt64, UInt64) { (words.0, words.1) }

    /// The 32 digest bytes.
    public var digest: [UInt8] { withUnsafeBytes(of: words) { Array($0) } }

    public static func == (lhs: SecretHash, rhs: SecretHash) -> Bool {
        lhs.words.0 == rhs.words.0 && lhs.words.1 == rhs.words.1 && lhs.words.2 == rhs.words.2
            && lhs.words.3 == rhs.words.3
    }

    public func hash(into hasher: inout Hasher) {
        // The digest is already uniformly distributed; one word is plenty for a hash table.
        hasher.combine(words.0)
    }
}
