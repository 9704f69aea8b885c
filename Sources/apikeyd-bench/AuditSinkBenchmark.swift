import APIKeysCore
import APIKeysPostgres
import APIKeysStore
import ArgumentParser
import Foundation

/// How many `api.request` events per second a PostgreSQL database absorbs: batches written as the
/// audit writer writes them (the chain's links, last-used times, one transaction each), back to
/// back from one thread, without the checks that would make them.
struct AuditSinkBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit-sink",
        abstract: "api.request events per second a PostgreSQL database absorbs, written back to back.")

    @Option(help: "The PostgreSQL database (migrated if needed).")
    var databaseURL: String

    @Option(help: "Events to write.")
    var events = 1_000_000

    @Option(help: "Events per transaction (the writer takes what 5 ms of checks queued).")
    var batch = 2048

    @Option(help: "Distinct keys the events are checks of.")
    var keys = 100

    func run() async throws {
        let store = try await BenchStore(databaseURL: databaseURL, auditQueueCapacity: 1000)
        defer { store.close() }
        guard let sink = store.postgres?.makeAuditSink() else { throw ValidationError("--database-url is required") }
        // Events as checks make them, 400 per millisecond of their clock, from a replica number
        // no store takes (255).
        var seqs = AuditSequence(.clock(replica: 255))
        let startMS = SystemWallClock().nowMS()
        let made = (0..<events).map { index in
            let atMS = startMS + Int64(index / 400)
            return AuditRecord(
                seq: seqs.next(atMS: atMS), atMS: atMS, action: .apiRequest, keyID: "key_bench\(index % keys)",
                keyName: "bench \(index % keys)", permissions: ["jobs:read"], resource: "GET /jobs/\(index % 1000)",
                clientAddress: "10.0.\(index % 7).\(index % 250)")
        }
        let batches = stride(from: 0, to: made.count, by: batch).map { Array(made[$0..<min($0 + batch, made.count)]) }
        let seconds = try await onThread {
            let start = DispatchTime.now().uptimeNanoseconds
            for events in batches {
                try sink.write(events, summaries: [], lastUsed: KeyUse.tally(events[...]))
            }
            return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        }
        print(
            String(
                format: "audit-sink: %.0f events/s (%d events in %.2f s, %d per transaction, %d keys)",
                Double(events) / seconds, events, seconds, batch, keys))
    }

    /// Runs `body` on a thread of its own: the sink blocks until its transaction ends.
    private func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result { try body() }) }.start()
        }
    }
}
