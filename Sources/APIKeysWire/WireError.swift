/// Why bytes could not be decoded as, or a value could not be encoded to, a message of the contract.
public enum WireError: Error, Hashable, Sendable, CustomStringConvertible {
    /// protobuf-c rejected the bytes: they are not a serialized `message`.
    case malformedMessage(message: String)
    /// A string field holds bytes that are not valid UTF-8 (official runtimes reject these too).
    case invalidUTF8(message: String, field: String)
    /// A string field holds a NUL character, which protobuf-c's C strings cannot carry.
    case nulInString(message: String, field: String)

    public var description: String {
        switch self {
        case .malformedMessage(let message):
            return "bytes are not a valid \(message)"
        case .invalidUTF8(let message, let field):
            return "\(message).\(field) is not valid UTF-8"
        case .nulInString(let message, let field):
            return "\(message).\(field) contains a NUL character"
        }
    }
}
