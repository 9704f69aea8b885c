import APIKeysCore
import APIKeysStore
import ArgumentParser
import Foundation

/// Measures the key domain without the network: checks per second on one thread, and the
/// batched audit writer's sustained `api.request` events per second.
struct InProcessBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inprocess",
        abstract: "Checks per second on one thread, and audit events per second the batched writer sustains.")

    @Option(help: "Keys in the store.")
    var keys = 1000

    @Option(help: "Seconds to run each check measurement.")
    var seconds = 2.0

    @Option(help: "api.request events to push through the audit writer.")
    var events = 500_000

    @Option(help: "A PostgreSQL URL: measure a replica on that database instead of a SQLite file.")
    var databaseURL: String?

    func run() async throws {
        let store = try await BenchStore(databaseURL: databaseURL, auditQueueCapacity: max(events, 100_000))
        defer { store.close() }
        let service = store.service
        let secrets = try await store.createKeys(keys)
        print("keys: \(keys)")

        let decisionOnly = measure(seconds: seconds) { round in
            _ = service.index.check(
                secret: secrets[round % secrets.count], permissions: ["jobs:read"], format: service.format,
                nowMS: 0)
        }
        print(
            String(
                format: "check decision only (parse, CRC, SHA-256, index):  %10.0f checks/s  (%.2f µs each)",
                decisionOnly, 1e6 / decisionOnly))

        // Checks with their audit event, while the queue has room (a burst): half the queue.
        let burst = min(events, 100_000) / 2
        let burstStart = DispatchTime.now().uptimeNanoseconds
        for round in 0..<burst {
            _ = try service.check(
                secret: secrets[round % secrets.count], permissions: ["jobs:read"], resource: "GET /bench")
        }
        let withAudit = Double(burst) / (Double(DispatchTime.now().uptimeNanoseconds - burstStart) / 1e9)
        await service.flushAuditTrail()
        print(
            String(
                format: "check + audit enqueue, queue not full (burst):    %10.0f checks/s  (%.2f µs each)", withAudit,
                1e6 / withAudit))

        let start = DispatchTime.now()
        for round in 0..<events {
            while (try? service.check(
                secret: secrets[round % secrets.count], permissions: ["jobs:read"], resource: "GET /bench")) == nil
            {
                usleep(100)  // queue full: wait for the writer, as a sustained load would
            }
        }
        await service.flushAuditTrail()
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
        print(
            String(
                format: "sustained checks with every api.request committed:  %10.0f events/s  (%d events in %.2f s)",
                Double(events) / elapsed, events, elapsed))
    }

    /// Runs `body` repeatedly for about `seconds` and returns calls per second.
    private func measure(seconds: Double, _ body: (Int) -> Void) -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        let deadline = start + UInt64(seconds * 1e9)
        var calls = 0
        while true {
            for _ in 0..<1000 {
                body(calls)
                calls += 1
            }
            let now = DispatchTime.now().uptimeNanoseconds
            if now >= deadline { return Double(calls) / (Double(now - start) / 1e9) }
        }
    }
}
