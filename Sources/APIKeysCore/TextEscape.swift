/// Writing characters that must not reach a terminal or a log verbatim as visible escapes.
public enum TextEscape {
    /// `text` with every scalar `shouldEscape` picks written as `\xNN` (up to U+00FF) or
    /// `\u{NNNN}`; the text itself when it has none.
    public static func escaping(_ text: String, where shouldEscape: (Unicode.Scalar) -> Bool) -> String {
        guard text.unicodeScalars.contains(where: shouldEscape) else { return text }
        var escaped = ""
        for scalar in text.unicodeScalars {
            guard shouldEscape(scalar) else {
                escaped.unicodeScalars.append(scalar)
                continue
            }
            let hex = String(scalar.value, radix: 16)
            escaped += scalar.value <= 0xFF ? "\\x" + (hex.count < 2 ? "0" : "") + hex : "\\u{\(hex.uppercased())}"
        }
        return escaped
    }

    /// `text` with its C0 and C1 control characters and DEL (``CheckLimits/isControl(_:)``) escaped.
    public static func controlsEscaped(_ text: String) -> String { escaping(text, where: CheckLimits.isControl) }
}
