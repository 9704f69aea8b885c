import Foundation
import Logging

/// `--log-format json`: one JSON object a line on standard error, for log shippers. Fields:
/// `time` (ISO 8601 UTC, milliseconds), `level`, `label`, `source`, `message`, then the metadata
/// (each value as a string, nested values flattened as text).
struct JSONLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    init(label: String) {
        self.label = label
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let (level, message, source) = (event.level, event.message, event.source)
        var fields = metadata
        if let provided = metadataProvider?.get() { fields.merge(provided) { _, new in new } }
        if let explicit = event.metadata { fields.merge(explicit) { _, new in new } }
        var text = "{\"time\":\(Self.quoted(Date().formatted(Self.timeFormat)))"
        text += ",\"level\":\(Self.quoted(level.rawValue)),\"label\":\(Self.quoted(label))"
        text += ",\"source\":\(Self.quoted(source)),\"message\":\(Self.quoted(message.description))"
        for (key, value) in fields.sorted(by: { $0.key < $1.key }) {
            text += ",\(Self.quoted(key)):\(Self.quoted(value.description))"
        }
        text += "}\n"
        // One write(2) per line: lines of concurrent threads never interleave.
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
    }

    private static let timeFormat = Date.ISO8601FormatStyle(includingFractionalSeconds: true)

    /// `value` as a JSON string literal.
    static func quoted(_ value: String) -> String {
        var out = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}
