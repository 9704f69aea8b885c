#if canImport(Glibc)
    import Glibc
#endif

extension String {
    /// Whether `other` has exactly this string's UTF-8 bytes. Not `==`, which is canonical
    /// equivalence ("é" as one code point equals "e" and a combining accent): what the store
    /// keeps and audits is the bytes it was given.
    ///
    /// Two copies of one string (the audit writer compares each event's key id and request with
    /// the previous event's, mostly the very same strings) share their storage: equal without a
    /// byte read.
    func hasSameBytes(as other: String) -> Bool {
        guard utf8.count == other.utf8.count else { return false }
        let compared = utf8.withContiguousStorageIfAvailable { first in
            other.utf8.withContiguousStorageIfAvailable { second in
                first.isEmpty || first.baseAddress == second.baseAddress
                    || memcmp(first.baseAddress!, second.baseAddress!, first.count) == 0
            }
        }
        return (compared ?? nil) ?? utf8.elementsEqual(other.utf8)
    }
}
