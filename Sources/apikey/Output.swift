import APIKeysCore
import APIKeysClient
import APIKeysJSON
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

    /// A key and what `report` found about it, for `report --json`.
    struct ReportJSON: Encodable {
        let key: KeyJSON
        let findings: [String]

        init(key: ApiKey, findings: [String]) {
            self.key = KeyJSON(key)
            self.findings = findings
        }
    }

    /// Every `--json` document, in the contract's JSON naming (``ContractJSON``), the HTTP
    /// admin API's too.
    static func json(_ value: some Encodable) -> String {
        String(decoding: (try? ContractJSON.encoder(pretty: true).encode(value)) ?? Data(), as: UTF8.self)
    }
}
