import APIKeysClient
import APIKeysJSON
import APIKeysCore
import ArgumentParser
import Foundation

/// `apikey audit verify`: walks the audit trail's hash chain and names the first break.
struct AuditVerify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Verify the audit trail's hash chain, from the oldest event kept (or --since) to the newest.",
        discussion: "Exit status: 0 the chain holds, 1 it is broken (the first break is named), 2 error.")
    @OptionGroup var connection: ConnectionOptions

    @Option(
        help:
            "Only from the first link with an event at or after this time (a date, a date-time, or a duration such as 24h)."
    )
    var since: String?

    func run() async throws {
        let sinceMS = try since.map(Audit.past) ?? 0
        try await connection.withClient { client in
            do {
                let verified = try await client.verifyAuditChain(sinceMS: sinceMS)
                print(
                    "audit chain verified: \(verified.links) links, \(verified.events) events, from \(verified.start) to \(verified.head)"
                )
            } catch let broken as AuditChainVerifier.Break {
                print(Output.printable("audit chain broken at \(broken)"))
                throw ExitCode(1)
            }
        }
    }
}

/// `apikey audit export`: the trail with its chain hashes, as JSON lines.
struct AuditExport: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write the audit trail with its hash chain to standard output, one JSON object per line.",
        discussion: """
            A "chain" line (anchor and head), then for each link its "event" lines followed by its "link" line \
            (position, previous_hash, hash). The export is verified as it is written: a break stops it with exit \
            status 1 after the link that breaks. docs/PROTOCOL.md says how to verify a copy.
            """)
    enum Format: String, ExpressibleByArgument, CaseIterable { case jsonl }

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "Only from the first link with an event at or after this time.")
    var since: String?

    @Option(help: "The output format (jsonl).")
    var format: Format = .jsonl

    func run() async throws {
        let sinceMS = try since.map(Audit.past) ?? 0
        let out = FileHandle.standardOutput
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        func write(_ line: some Encodable) throws {
            out.write(try encoder.encode(line) + Data("\n".utf8))
        }
        var wroteState = false
        try await connection.withClient { client in
            do {
                try await client.verifyAuditChain(sinceMS: sinceMS) { state, links in
                    if !wroteState {
                        try write(ChainLine(state))
                        wroteState = true
                    }
                    for link in links {
                        for event in link.events { try write(EventLine(event, link: link.position)) }
                        try write(LinkLine(link))
                    }
                }
            } catch let broken as AuditChainVerifier.Break {
                FileHandle.standardError.write(Data("apikey: audit chain broken at \(broken)\n".utf8))
                throw ExitCode(1)
            }
        }
    }

    struct PointJSON: Encodable {
        let position: UInt64
        let hash: String
        init(_ point: AuditChain.Point) { (position, hash) = (point.position, AuditChain.hex(point.hash)) }
    }

    struct ChainLine: Encodable {
        let type = "chain"
        let anchor, head: PointJSON
        init(_ state: AuditChain.State) { (anchor, head) = (PointJSON(state.anchor), PointJSON(state.head)) }
    }

    struct LinkLine: Encodable {
        let type = "link"
        let position: UInt64
        let previous_hash, hash: String
        let events: Int
        /// A gap (its events pruned, its hash kept): the first position it stands for.
        let pruned_from: UInt64?
        init(_ link: AuditLink) {
            position = link.position
            previous_hash = AuditChain.hex(link.previousHash)
            hash = AuditChain.hex(link.hash)
            events = link.events.count
            pruned_from = link.prunedFrom == 0 ? nil : link.prunedFrom
        }
    }

    /// An event with every field the digest covers (`reason_code`: the DenyReason number).
    struct EventLine: Encodable {
        let type = "event"
        let link, seq: UInt64
        let at_ms: Int64
        let action, trigger, key_id, key_name, actor, detail, decision, reason, resource, client_address: String
        let reason_code: UInt32
        let permissions: [String]

        init(_ event: AuditEvent, link: UInt64) {
            let entry = AuditChain.Entry(event)
            self.link = link
            (seq, at_ms, action, trigger) = (event.seq, event.atMS, event.action, event.trigger)
            (key_id, key_name, actor, detail) = (event.keyID, event.keyName, event.actor, event.detail)
            let json = AuditEventJSON(event)
            (decision, reason, reason_code) = (json.decision, json.reason, entry.reason)
            (resource, client_address, permissions) = (event.resource, event.clientAddress, event.permissions)
        }
    }
}
