/// What the server takes in the messages it decodes before any authentication: an Envelope and
/// a CheckRequest. Their top-level fields are counted before protobuf-c unpacks them, and the
/// count stops past the limit, so a frame of many tiny entries (32,000 empty metadata entries or
/// permissions fit in 64 KiB) costs what any frame of its size does instead of an allocation and
/// a Swift value per entry (docs/PROTOCOL.md, section 1).
public enum WireLimits {
    /// Top-level fields (each entry of a repeated or map field counts) of an Envelope or a
    /// CheckRequest: every scalar field and 64 entries (what a Check may name), twice over.
    public static let maxFields = 160
}
