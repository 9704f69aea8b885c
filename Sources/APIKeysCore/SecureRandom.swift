internal import COpenSSLCrypto

/// Cryptographically secure random bytes from OpenSSL's `RAND_bytes`.
public enum SecureRandom {
    /// Fills `buffer` with random bytes. OpenSSL's generator failing is unrecoverable: no secret
    /// may ever come from a source that reported an error, so this stops the process.
    public static func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        guard buffer.count > 0 else { return }
        guard RAND_bytes(buffer.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(buffer.count)) == 1 else {
            fatalError("OpenSSL RAND_bytes failed: refusing to continue without a secure random source")
        }
    }

    /// `count` characters drawn uniformly from `alphabet` (at most 256 symbols), by rejection
    /// sampling so that no symbol is more likely than another.
    public static func string(count: Int, alphabet: [UInt8]) -> String {
        precondition(!alphabet.isEmpty && alphabet.count <= 256)
        let limit = 256 - 256 % alphabet.count  // bytes at or above this would bias the result
        var result: [UInt8] = []
        result.reserveCapacity(count)
        var pool = [UInt8](repeating: 0, count: 64)
        while result.count < count {
            pool.withUnsafeMutableBytes { fill($0) }
            for byte in pool where Int(byte) < limit && result.count < count {
                result.append(alphabet[Int(byte) % alphabet.count])
            }
        }
        return String(decoding: result, as: UTF8.self)
    }
}
