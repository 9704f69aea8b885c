import APIKeysCore
import Foundation

/// Parses `--expires` and audit time bounds: a duration from now (`90d`, `12h`, `30m`, `45s`,
/// `2w`), a date (`2027-01-31`, midnight UTC) or a date-time (`2027-01-31T12:00:00Z`); `never` = 0.
enum TimeArgument {
    static func milliseconds(_ text: String, nowMS: Int64 = Int64(Date().timeIntervalSince1970 * 1000)) throws -> Int64
    {
        if text == "never" { return 0 }
        if let seconds = DurationText.seconds(text) { return nowMS + seconds * 1000 }
        let full = ISO8601DateFormatter()
        if let date = full.date(from: text) { return Int64(date.timeIntervalSince1970 * 1000) }
        let day = ISO8601DateFormatter()
        day.formatOptions = [.withFullDate]
        if let date = day.date(from: text) { return Int64(date.timeIntervalSince1970 * 1000) }
        throw CLIError(
            "\"\(text)\" is not a duration (90d, 12h, 30m), a date (2027-01-31) or a date-time (2027-01-31T12:00:00Z)")
    }
}
