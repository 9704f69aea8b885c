#if canImport(Glibc)
    import Glibc
#endif

extension String {
    /// Whether this string's UTF-8 is exactly `bytes`. (`==` on strings is canonical
    /// equivalence: `é` and `e` + U+0301 are equal by `==` and differ here.)
    func hasBytes(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard utf8.count == bytes.count else { return false }
        guard !bytes.isEmpty else { return true }
        if let same = utf8.withContiguousStorageIfAvailable({
            memcmp($0.baseAddress!, bytes.baseAddress!, bytes.count) == 0
        }) {
            return same
        }
        return utf8.elementsEqual(bytes)
    }

    /// Whether `other` is the same UTF-8 bytes as this string.
    func hasSameBytes(as other: String) -> Bool {
        guard utf8.count == other.utf8.count else { return false }
        if let same = other.utf8.withContiguousStorageIfAvailable({ hasBytes(UnsafeRawBufferPointer($0)) }) {
            return same
        }
        return utf8.elementsEqual(other.utf8)
    }
}
