/// Why bytes could not be decoded as, or a value could not be encoded to, a message of the contract.
///
/// A struct with a ``Code`` rather than an enum, so that new kinds can be added without breaking
/// code that switches over them.
public struct WireError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The kind of failure.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Kind: Hashable, Sendable { case malformedMessage, invalidUTF8, nulInString, tooManyFields }
        private let kind: Kind

        /// protobuf-c rejected the bytes: they are not a serialized message of that type.
        public static let malformedMessage = Code(kind: .malformedMessage)
        /// A string field holds bytes that are not valid UTF-8 (official runtimes reject these too).
        public static let invalidUTF8 = Code(kind: .invalidUTF8)
        /// A string field holds a NUL character, which protobuf-c's C strings cannot carry.
        public static let nulInString = Code(kind: .nulInString)
        /// The message holds more top-level fields than the receiver takes (``WireLimits``).
        public static let tooManyFields = Code(kind: .tooManyFields)

        public var description: String {
            switch kind {
            case .malformedMessage: "malformed message"
            case .invalidUTF8: "invalid UTF-8"
            case .nulInString: "NUL in string"
            case .tooManyFields: "too many fields"
            }
        }
    }

    public var code: Code
    /// The full protobuf name of the message, e.g. `apikeys.v1.CheckRequest`.
    public var message: String
    /// The field at fault, when there is one.
    public var field: String?

    public init(code: Code, message: String, field: String? = nil) {
        self.code = code
        self.message = message
        self.field = field
    }

    /// The bytes are not a serialized `message`.
    public static func malformedMessage(message: String) -> WireError {
        WireError(code: .malformedMessage, message: message)
    }

    /// `message.field` holds bytes that are not valid UTF-8.
    public static func invalidUTF8(message: String, field: String) -> WireError {
        WireError(code: .invalidUTF8, message: message, field: field)
    }

    /// `message.field` holds a NUL character.
    public static func nulInString(message: String, field: String) -> WireError {
        WireError(code: .nulInString, message: message, field: field)
    }

    /// `message` holds more than `limit` top-level fields (entries of repeated fields included).
    public static func tooManyFields(message: String, limit: Int) -> WireError {
        WireError(code: .tooManyFields, message: message, field: "\(limit)")
    }

    public var description: String {
        let subject = field.map { "\(message).\($0)" } ?? message
        switch code {
        case .invalidUTF8: return "\(subject) is not valid UTF-8"
        case .nulInString: return "\(subject) contains a NUL character"
        case .tooManyFields: return "\(message) holds more than \(field ?? "?") fields"
        default: return "bytes are not a valid \(subject)"
        }
    }
}
