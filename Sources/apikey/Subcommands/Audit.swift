import APIKeysClient
import APIKeysJSON
import ArgumentParser
import Foundation

struct Audit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the audit trail, newest first.",
        discussion: "`apikey audit verify` checks the trail's hash chain; `apikey audit export` writes it out.",
        subcommands: [AuditVerify.self, AuditExport.self])
    @OptionGroup var connection: ConnectionOptions

    @Option(help: "Only events of this key id.")
    var key: String?

    @Option(
        help:
            "Only this action (key.created, key.updated, key.permissions_changed, key.enabled, key.disabled, key.rotated, key.deleted, admin_token.created, admin_token.revoked, audit.pruned, key.leak_reported, admin.permission_denied, key.change_lost, api.request)."
    )
    var action: String?

    @Option(help: "Only events at or after this time (a date, a date-time, or a duration back from now such as 24h).")
    var since: String?

    @Option(help: "Only events before this time.")
    var until: String?

    @Option(help: "At most this many events.")
    var limit: Int = 50

    @OptionGroup var output: OutputOptions

    func run() async throws {
        let request = ListAuditEventsRequest(
            keyID: key ?? "", action: action ?? "", sinceMS: try since.map(Self.past) ?? 0,
            untilMS: try until.map(Self.past) ?? 0, pageSize: UInt32(clamping: limit))
        let (events, last) = try await connection.withClient { client in
            var events: [AuditEvent] = []
            var page = request
            var reply: ListAuditEventsResponse
            repeat {
                reply = try await client.listAuditEvents(
                    keyID: page.keyID, action: page.action, sinceMS: page.sinceMS, untilMS: page.untilMS,
                    pageSize: page.pageSize, pageToken: page.pageToken)
                events += reply.events
                page.pageToken = reply.nextPageToken
            } while !page.pageToken.isEmpty && events.count < limit
            return (Array(events.prefix(limit)), reply)
        }
        if output.json {
            print(Output.json(events.map(AuditEventJSON.init)))
            return
        }
        print(Output.table(["SEQ", "TIME", "ACTION", "KEY", "NAME", "BY", "DECISION", "DETAIL"], events.map(Self.row)))
        print(Self.retentionLine(last))
    }

    /// Since when the server keeps events, so that an empty or short answer is not misread.
    static func retentionLine(_ reply: ListAuditEventsResponse) -> String {
        let kept =
            reply.oldestRetainedAtMS == 0
            ? "no events kept" : "events kept since \(Output.time(reply.oldestRetainedAtMS))"
        let retention = reply.retentionMS == 0 ? "kept forever" : "retention \(Self.describe(ms: reply.retentionMS))"
        return "(\(kept); \(retention))"
    }

    private static func row(_ event: AuditEvent) -> [String] {
        let isAPI = event.trigger == "api"
        let detail = isAPI ? "\(event.permissions.joined(separator: " ")) \(event.resource)" : event.detail
        return [
            String(event.seq), Output.time(event.atMS), event.action, event.keyID, event.keyName,
            isAPI ? "api" : event.actor, decision(event), detail,
        ]
    }

    /// A retention in the largest unit that divides it: `30d`, `12h`, `90s`.
    private static func describe(ms: Int64) -> String {
        let seconds = ms / 1000
        for (unit, size) in [("d", Int64(86400)), ("h", 3600), ("m", 60)] where seconds % size == 0 {
            return "\(seconds / size)\(unit)"
        }
        return "\(seconds)s"
    }

    /// A duration counts back from now; dates are absolute.
    static func past(_ text: String) throws -> Int64 {
        let now = Int64(Date.now.timeIntervalSince1970 * 1000)
        let value = try TimeArgument.milliseconds(text, nowMS: now)
        return value > now ? now - (value - now) : value
    }

    private static func decision(_ event: AuditEvent) -> String {
        switch event.decision {
        case .allow: "allow"
        case .deny: "deny \(event.reason.name)"
        default: ""
        }
    }

}
