/// What an unauthenticated caller may make the audit trail store with one check.
///
/// Anyone who can reach the port can send checks (with a made-up, well-formed key), and each is
/// recorded: without these bounds one caller could store megabytes per second. A permission
/// list or client address beyond them is refused (INVALID_ARGUMENT): no catalog permission is
/// longer than 64 bytes nor a catalog larger than 64, and no address needs 64 bytes. A long
/// `resource` (a full URL with its query string, say) is cut instead, with a marker, because
/// refusing it would turn a long URL into a failed request.
public enum CheckLimits {
    /// Most permissions one check may ask for (the size of the largest catalog).
    public static let maxPermissions = PermissionCatalog.maxEntries
    /// Longest permission name, in UTF-8 bytes.
    public static let maxPermissionBytes = 64
    /// Longest client address, in UTF-8 bytes (an IPv6 address with zone and port fits).
    public static let maxClientAddressBytes = 64
    /// Longest resource stored, in UTF-8 bytes; a longer one is cut to fit, marker included.
    public static let maxResourceBytes = 1024

    /// Throws ``KeyError/checkFieldTooLarge(field:limit:)`` for a permission list or client
    /// address beyond the limits, ``KeyError/controlCharacter(field:scalar:)`` for a control
    /// character (C0, DEL, C1) in any of the three text fields: they would reach the terminals of
    /// the people reading the audit trail.
    public static func validate(permissions: [String], resource: String, clientAddress: String) throws(KeyError) {
        guard permissions.count <= maxPermissions else {
            throw .checkFieldTooLarge(field: "permissions", limit: "at most \(maxPermissions) names")
        }
        for name in permissions {
            // The common case, a short name of printable ASCII without a space, in one pass.
            if name.utf8.count <= maxPermissionBytes, !name.isEmpty, Self.all(of: name, in: 0x21...0x7E) { continue }
            guard name.utf8.count <= maxPermissionBytes else {
                throw .checkFieldTooLarge(field: "permissions", limit: "names of at most \(maxPermissionBytes) bytes")
            }
            // A stored permission list is its names joined by spaces (so is the audit chain's
            // digest of it): an empty name or one holding a space would make two lists one.
            guard !name.isEmpty, !name.utf8.contains(UInt8(ascii: " ")) else { throw .invalidPermissionName }
            try refuseControlCharacters(name, field: "permissions")
        }
        guard clientAddress.utf8.count <= maxClientAddressBytes else {
            throw .checkFieldTooLarge(field: "client_address", limit: "at most \(maxClientAddressBytes) bytes")
        }
        try refuseControlCharacters(resource, field: "resource")
        try refuseControlCharacters(clientAddress, field: "client_address")
    }

    /// Throws for the first C0 or C1 control character or DEL in `text`. ASCII without one (the
    /// common case) costs one pass over the bytes.
    static func refuseControlCharacters(_ text: String, field: String) throws(KeyError) {
        guard !all(of: text, in: 0x20...0x7E) else { return }
        if let control = text.unicodeScalars.first(where: Self.isControl) {
            throw .controlCharacter(field: field, scalar: control)
        }
    }

    /// Whether every UTF-8 byte of `text` is in `range`: one pass over its contiguous bytes (a
    /// check's strings always have them), without the string's index arithmetic.
    @inline(__always)
    static func all(of text: String, in range: ClosedRange<UInt8>) -> Bool {
        let (low, span) = (range.lowerBound, range.upperBound &- range.lowerBound)
        return text.utf8.withContiguousStorageIfAvailable { bytes in
            for byte in bytes where byte &- low > span { return false }
            return true
        } ?? text.utf8.allSatisfy(range.contains)
    }

    /// C0 (U+0000–U+001F), DEL (U+007F) and C1 (U+0080–U+009F): Unicode's control category,
    /// which key names refuse too (``KeyRules/validName(_:)``).
    public static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value)
    }

    /// `resource` as recorded: itself when it fits, else its start (cut between code points)
    /// followed by `…[+N bytes]`, N the bytes left out, the whole at most ``maxResourceBytes``.
    public static func recorded(resource: String) -> String {
        let total = resource.utf8.count
        guard total > maxResourceBytes else { return resource }
        let reserve = 24  // "…[+NNNNNNNNNN bytes]" fits with room
        var bytes = Array(resource.utf8.prefix(maxResourceBytes - reserve))
        while let last = bytes.last, last & 0xC0 == 0x80 { bytes.removeLast() }  // a continuation byte
        if let last = bytes.last, last >= 0xC0 { bytes.removeLast() }  // a lead byte without its rest
        return String(decoding: bytes, as: UTF8.self) + "…[+\(total - bytes.count) bytes]"
    }
}
