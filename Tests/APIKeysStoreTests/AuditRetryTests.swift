import APIKeysCore
import APIKeysTestSupport
import Foundation
import Logging
import PostgresNIO
import Testing
@testable import APIKeysPostgres
@testable import APIKeysSQLite
@_spi(Testing) @testable import APIKeysStore

/// The PostgreSQL audit writer retries a batch whose commit it did not hear back from; when that
/// commit went through, the retry must find the batch stored, not fail on its seqs for ever.
@Suite struct AuditRetryTests {
    @Test(.enabled(if: TestDatabase.url != nil))
    func aBatchWrittenAgainAfterALostCommitAnswerIsStoredOnce() async throws {
        let url = try await TestDatabase.createDatabase()
        let clock = ManualWallClock(nowMS: 1_700_000_000_000)
        let service = try await TestDatabase.openService(clock: clock, url: url)  // migrates
        let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        let location = try PostgresLocation(url: url)
        let client = PostgresClient(configuration: location.clientConfiguration, backgroundLogger: logger)
        let running = Task { await client.run() }
        defer { running.cancel() }
        let sink = PostgresAuditSink(
            client: client, server: location.description, index: KeyIndex(catalog: .standard), logger: logger)
        let batch = (0..<3).map { index in
            AuditRecord(
                seq: (1 << 62) + UInt64(index), atMS: clock.nowMS(), action: .apiRequest, keyID: "key_retried",
                keyName: "retried", resource: "GET /\(index)")
        }
        // On the writer's own kind of thread: the sink blocks until its transaction ends.
        try await onThread { try sink.write(batch, summaries: [], lastUsed: [:]) }
        try await onThread { try sink.write(batch, summaries: [], lastUsed: [:]) }

        let walked = try await AuditChainTests.walk(service)
        #expect(walked.events.filter { $0.keyID == "key_retried" }.map(\.seq) == batch.map(\.seq))
        await service.close(timeout: .seconds(10))
    }

    private func onThread(_ body: @escaping @Sendable () throws -> Void) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            Thread { continuation.resume(with: Result { try body() }) }.start()
        }
    }
}
