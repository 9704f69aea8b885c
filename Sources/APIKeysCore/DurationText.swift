/// Durations as operators type them: a whole number and a unit, `45s`, `30m`, `12h`, `90d`, `2w`.
public enum DurationText {
    /// The seconds `text` stands for, or nil when it is not such a duration (or not positive).
    public static func seconds(_ text: String) -> Int64? {
        guard let unit = text.last, let amount = Int64(text.dropLast()), amount > 0 else { return nil }
        let perUnit: Int64? =
            switch unit {
            case "s": 1
            case "m": 60
            case "h": 3600
            case "d": 86400
            case "w": 604_800
            default: nil
            }
        guard let perUnit else { return nil }
        let (seconds, overflow) = amount.multipliedReportingOverflow(by: perUnit)
        return overflow || seconds > Int64.max / 1000 ? nil : seconds
    }

    /// The milliseconds `text` stands for: ``seconds(_:)``'s forms, or a whole number of `ms`.
    public static func milliseconds(_ text: String) -> Int64? {
        if text.hasSuffix("ms") {
            guard let amount = Int64(text.dropLast(2)), amount > 0 else { return nil }
            return amount
        }
        return seconds(text).map { $0 * 1000 }
    }

    /// `seconds` in the form ``seconds(_:)`` reads, in the largest unit that divides it: `90d`, `2w`, `36h`.
    public static func text(seconds: Int64) -> String {
        for (unit, size) in [("w", Int64(604_800)), ("d", 86400), ("h", 3600), ("m", 60)]
        where seconds >= size && seconds % size == 0 {
            return "\(seconds / size)\(unit)"
        }
        return "\(seconds)s"
    }

    /// `milliseconds` in words: `250 ms`, `1.5 s`, `12 s`.
    public static func describe(milliseconds: Int64) -> String {
        if milliseconds < 1000 { return "\(milliseconds) ms" }
        if milliseconds < 10_000 && milliseconds % 1000 != 0 {
            return "\(milliseconds / 1000).\(milliseconds % 1000 / 100) s"
        }
        return "\(milliseconds / 1000) s"
    }
}
