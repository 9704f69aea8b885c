import APIKeysCore
import APIKeysClient
import ArgumentParser
import Foundation

/// `--json`, which every command that prints takes: one JSON document on stdout instead of text.
struct OutputOptions: ParsableArguments {
    @Flag(help: "Print JSON instead of text (for scripts: `apikey create ci -p jobs:read --json | jq -r .secret`).")
    var json = false
}

/// Text and JSON renderings of what the server returns.
enum Output {
    /// A unix-millisecond time as ISO 8601 UTC, or `never` for 0.
    static func time(_ ms: Int64, zero: String = "never") -> String {
        guard ms != 0 else { return zero }
        // The same style as the server's audit details; no formatter built per cell of a listing.
        return Date(timeIntervalSince1970: Double(ms) / 1000).formatted(.iso8601)
    }

    /// `100/s burst 200`, as `--rate` and `--burst` take it.
    static func rate(_ limit: RateLimit) -> String {
        KeyRateLimit(requests: limit.requests, periodSeconds: limit.periodSeconds, burst: limit.burst).description
    }

    /// `text` safe to show on a terminal: every control character (C0, DEL, C1), format
    /// character (bidirectional overrides, zero-width ones) and line or paragraph separator
    /// written as an escape (`\x1b`, `\u{202E}`), so that what a caller stored (a check's
    /// resource, say) can neither move the cursor, recolour the screen nor forge a line. JSON
    /// output is exact instead.
    static func printable(_ text: String) -> String { TextEscape.escaping(text, where: needsEscape) }

    private static func needsEscape(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .control, .format, .lineSeparator, .paragraphSeparator: return true
        default: return false
        }
    }

    /// Columns padded to their widest cell; every cell ``printable(_:)``.
    static func table(_ header: [String], _ rows: [[String]]) -> String {
        let all = [header] + rows.map { $0.map(printable) }
        let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
        return all.map { row in
            row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }.joined(separator: "\n")
    }

    /// A key as `field: value` lines.
    static func details(_ key: ApiKey) -> String {
        table(
            ["FIELD", "VALUE"],
            [
                ["id", key.id], ["name", key.name], ["hint", key.hint],
                ["permissions", key.permissions.joined(separator: " ")], ["enabled", key.enabled ? "yes" : "no"],
                ["created", time(key.createdAtMS)], ["updated", time(key.updatedAtMS)],
                ["expires", time(key.expiresAtMS)], ["last used", time(key.lastUsedAtMS)],
                ["rotated", time(key.rotatedAtMS)],
                ["old secret until", time(key.graceEndsAtMS, zero: "—")],
                ["rate limit", key.hasRateLimit ? rate(key.rateLimit) : "none"],
                ["uses left", key.remainingUses.map(String.init) ?? "unlimited"],
                [
                    "allowed from",
                    key.allowedNetworks.isEmpty ? "anywhere" : key.allowedNetworks.joined(separator: " "),
                ],
            ]
        ).split(separator: "\n").dropFirst().joined(separator: "\n")
    }

    /// The show-once secret, with the warning that goes with it.
    static func secret(_ secret: String) -> String {
        """
        Secret (copy it now, it will not be shown again):

            \(secret)

        """
    }

    /// A key for `--json`.
    struct KeyJSON: Encodable {
        let id, name, hint: String
        let permissions: [String]
        let enabled: Bool
        let createdAtMS, updatedAtMS, expiresAtMS, lastUsedAtMS, rotatedAtMS: Int64
        /// Until when the secret replaced by the last rotation is accepted; 0 = not at all.
        let graceEndsAtMS: Int64
        /// The same times in ISO 8601 (nil, so absent, when not set).
        let createdAt, updatedAt, expiresAt, lastUsedAt, rotatedAt, graceEndsAt: String?
        /// Empty = any address.
        let allowedNetworks: [String]
        /// nil = no limit.
        let rateLimit: RateJSON?
        /// Usage credits left; nil = unlimited.
        let remainingUses: Int64?

        struct RateJSON: Encodable {
            let requests, periodSeconds, burst: UInt32
        }

        init(_ key: ApiKey) {
            (id, name, hint, permissions, enabled) = (key.id, key.name, key.hint, key.permissions, key.enabled)
            allowedNetworks = key.allowedNetworks
            remainingUses = key.remainingUses
            rateLimit =
                key.hasRateLimit
                ? RateJSON(
                    requests: key.rateLimit.requests, periodSeconds: key.rateLimit.periodSeconds,
                    burst: key.rateLimit.burst) : nil
            (createdAtMS, updatedAtMS, expiresAtMS) = (key.createdAtMS, key.updatedAtMS, key.expiresAtMS)
            (lastUsedAtMS, rotatedAtMS, graceEndsAtMS) = (key.lastUsedAtMS, key.rotatedAtMS, key.graceEndsAtMS)
            (createdAt, updatedAt, expiresAt) = (iso(createdAtMS), iso(updatedAtMS), iso(expiresAtMS))
            (lastUsedAt, rotatedAt, graceEndsAt) = (iso(lastUsedAtMS), iso(rotatedAtMS), iso(graceEndsAtMS))
        }
    }

    /// `ms` (since 1970, UTC) in ISO 8601 with milliseconds; nil for 0 (not set).
    static func iso(_ ms: Int64) -> String? {
        guard ms != 0 else { return nil }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: Date(timeIntervalSince1970: Double(ms) / 1000))
    }

    /// A key and what `report` found about it, for `report --json`.
    struct ReportJSON: Encodable {
        let key: KeyJSON
        let findings: [String]

        init(key: ApiKey, findings: [String]) {
            self.key = KeyJSON(key)
            self.findings = findings
        }
    }

    /// A key with its show-once secret, for `create --json` and `rotate --json`.
    struct IssuedJSON: Encodable {
        let key: KeyJSON
        let secret: String
    }

    /// A check's answer for `check --json`.
    struct CheckJSON: Encodable {
        let decision: String
        let httpStatus: UInt32
        /// Set when denied.
        let reason: String?
        let keyId, keyName: String
        let missingPermissions: [String]

        init(_ answer: CheckResponse) {
            decision = answer.decision == .allow ? "ALLOW" : "DENY"
            httpStatus = answer.httpStatus
            reason = answer.decision == .allow ? nil : CheckText.reason(answer.reason)
            (keyId, keyName, missingPermissions) = (answer.keyID, answer.keyName, answer.missingPermissions)
        }
    }

    /// Every `--json` document: names in snake_case as the proto spells its fields
    /// (`created_at_ms`, `key_id`), and each time in milliseconds also as ISO 8601 UTC beside it
    /// (`created_at`, absent when the time is not set).
    static func json(_ value: some Encodable) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        return String(decoding: (try? encoder.encode(value)) ?? Data(), as: UTF8.self)
    }
}
