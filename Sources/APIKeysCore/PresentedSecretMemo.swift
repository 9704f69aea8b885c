#if canImport(Glibc)
    import Glibc
#endif

/// The hash a connection's previous check worked out from its secret, reused when the next check
/// presents the same bytes. A connection mostly repeats itself (one service, one key), and the
/// secret's format check (base-62, CRC-32) and its SHA-256 are the larger part of a decision.
/// The hash is a pure function of the bytes, so reusing it changes no answer: the key it names
/// is still looked up in the index for every check.
///
/// Not thread-safe: one per connection, used on its event loop (its state is exempt from Swift's
/// dynamic exclusivity checks, which cost more than the comparison they would guard).
public final class PresentedSecretMemo {
    @exclusivity(unchecked) private var secret: [UInt8] = []
    /// Nil: malformed.
    @exclusivity(unchecked) private var hash: SecretHash?
    /// Longest secret remembered: a valid one is far shorter; a longer one is hashed each time.
    private static let maxBytes = 128

    public init() {}

    /// `format`'s hash of the presented `secret` (``SecretFormat/hash(ofPresented:)``; nil when
    /// malformed), remembered for the next call.
    public func hash(ofPresented secret: String, format: SecretFormat) -> SecretHash? {
        let same = secret.utf8.withContiguousStorageIfAvailable { bytes in
            bytes.count == self.secret.count && !bytes.isEmpty
                && self.secret.withUnsafeBufferPointer { memcmp(bytes.baseAddress!, $0.baseAddress!, bytes.count) == 0 }
        }
        if same == true { return hash }
        let hash = format.hash(ofPresented: secret)
        self.hash = hash
        self.secret.removeAll(keepingCapacity: true)
        if secret.utf8.count <= Self.maxBytes {
            _ = secret.utf8.withContiguousStorageIfAvailable { self.secret.append(contentsOf: $0) }
        }
        return hash
    }
}
