import APIKeysCore
import APIKeysServer
import APIKeysStore
import APIKeysWire
import ArgumentParser
import Foundation
import NIOCore

/// One RPC Check taken apart: the time and the heap allocations of each stage the connection
/// handler runs for it (`ConnectionHandler.answerCheck`), one stage at a time on one thread, then
/// all of them together; then the same for one forward-auth request on the HTTP port
/// (``HTTPStages``). Allocations are counted by `bench/allocations.c` when it is preloaded
/// (`bench/stages.sh`); they do not move with the machine's neighbours, as times do.
struct StagesBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stages",
        abstract:
            "Time and allocations per check of each stage of the RPC Check and HTTP /authorize paths (see bench/stages.sh)."
    )

    @Option(help: "Keys in the store.")
    var keys = 1000

    @Option(help: "Checks per stage.")
    var checks = 200_000

    func run() async throws {
        let store = try await BenchStore(databaseURL: nil, auditQueueCapacity: 1_000_000)
        defer { store.close() }
        let service = store.service
        let secrets = try await store.createKeys(keys)
        // What the load generators send: one key, one permission, a resource, a client address.
        let request = CheckRequest(
            key: secrets[0], permissions: ["jobs:read"], resource: "GET /bench", clientAddress: "10.0.0.1")
        let frame = try Self.frame(of: request)
        // The same check for another resource: decoded anew after the first (its payload differs).
        var other = request
        other.resource = "GET /bench2"
        let otherFrame = try Self.frame(of: other)
        var alternate = false
        let codec = CheckCallCodec()
        let tally = CheckTally(outcomes: ServerMetrics.slotCount)
        let replier = CheckReplier(service: service)
        var outbound = ByteBuffer()
        outbound.reserveCapacity(64 * 1024)
        let counter = AllocationCounter()
        print(
            "keys: \(keys), checks per stage: \(checks), allocations counted: \(counter.isAvailable ? "yes" : "no (run bench/stages.sh)")"
        )

        var decoded = request
        let memo = PresentedSecretMemo()
        var outcome = try service.check(secret: request.key, permissions: request.permissions)
        let stages: [(String, () throws -> Void)] = [
            (
                "frame -> CheckRequest, a request other than the previous (unpacked into the arena, strings reused)",
                {
                    alternate.toggle()
                    guard case .check(_, let request, false) = try codec.decode(frame: alternate ? otherFrame : frame)
                    else { throw StageError() }
                    decoded = request
                }
            ),
            (
                "frame -> CheckRequest, the previous request's bytes again (envelope unpacked only)",
                {
                    guard case .check(_, let request, true) = try codec.decode(frame: frame) else { throw StageError() }
                    decoded = request
                }
            ),
            (
                "decision (secret format, CRC, SHA-256, index)",
                {
                    outcome = service.index.check(
                        secret: decoded.key, permissions: decoded.permissions, format: service.format, nowMS: 0,
                        clientAddress: decoded.clientAddress)
                }
            ),
            (
                "decision, the secret the connection presented last (PresentedSecretMemo)",
                {
                    outcome = service.index.check(
                        hash: memo.hash(ofPresented: decoded.key, format: service.format),
                        permissions: decoded.permissions, nowMS: 0, clientAddress: decoded.clientAddress)
                }
            ),
            (
                "check: decision + audit event made and queued",
                {
                    outcome = try service.check(
                        secret: decoded.key, permissions: decoded.permissions, resource: decoded.resource,
                        clientAddress: decoded.clientAddress)
                }
            ),
            (
                "CheckOutcome -> reply frame in the outbound buffer",
                {
                    outbound.clear()
                    try codec.writeCheckReply(callID: 7, response: CheckResponse(outcome), to: &outbound)
                }
            ),
            (
                "whole: decode, metrics, check with audit, reply (the handler's CheckReplier)",
                {
                    guard case .check(let callID, let request, let repeated) = try replier.codec.decode(frame: frame)
                    else { throw StageError() }
                    outbound.clear()
                    try replier.answer(
                        callID: callID, request, repeated: repeated, tally: tally, to: &outbound)
                }
            ),
        ]
        print("RPC Check (one frame of the load generators' request):")
        try Self.measure(stages, checks: checks, counter: counter, service: service)
        try writerStages(events: request, outcome: outcome, counter: counter)
        try await HTTPStages.run(checks: checks, counter: counter)
    }

    /// Runs each of `stages` `checks` times after a warm-up, and prints its time and allocations
    /// per run; the audit events the stages queued are written between stages, so that the
    /// writer's work is not counted in the next. Synchronous: every stage runs on the calling
    /// thread (an `EmbeddedChannel` must stay on the thread that made it).
    static func measure(
        _ stages: [(String, () throws -> Void)], checks: Int, counter: AllocationCounter, service: KeyService
    ) throws {
        for (name, stage) in stages {
            for _ in 0..<1000 { try stage() }  // warm: caches, the arena's blocks, the buffer
            service.flushAuditTrail()
            let (allocationsBefore, retainsBefore) = (counter.count(), counter.retains())
            let start = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<checks { try stage() }
            let nanoseconds = DispatchTime.now().uptimeNanoseconds - start
            let allocations = counter.count() - allocationsBefore
            let retains = counter.retains() - retainsBefore
            print(
                String(
                    format: "%8.0f ns %7.2f allocations %7.2f retains/releases  %@",
                    Double(nanoseconds) / Double(checks), Double(allocations) / Double(checks),
                    Double(retains) / Double(checks), name))
            service.flushAuditTrail()
        }
    }

    /// The request frame of `request` as a client sends it (without its length prefix).
    private static func frame(of request: CheckRequest) throws -> ByteBuffer {
        ByteBuffer(
            bytes: try Envelope(callID: 7, method: Authorize.check.path, payload: request.serializedBytes())
                .serializedBytes())
    }

    /// What the audit writer's thread does per event before SQLite sees it (the same steps as
    /// `SQLiteAuditSink.write`): the chain's links and digests, and the batch's packed bytes,
    /// over batches of 1,000 events such as the checks above queue.
    private func writerStages(events request: CheckRequest, outcome: CheckOutcome, counter: AllocationCounter) throws {
        let batch = 1_000
        let events = (0..<batch).map { index in
            AuditRecord(
                seq: UInt64(index + 1), atMS: 1_000, action: .apiRequest, keyID: outcome.key?.id ?? "",
                keyName: outcome.key?.name ?? "", permissions: request.permissions, resource: request.resource,
                clientAddress: request.clientAddress)
        }
        let stages: [(String, () -> Void)] = [
            (
                "writer: chain links and digests (AuditChain.pendingLinks)",
                {
                    _ = AuditChain.pendingLinks(
                        events, maxEvents: AuditChain.maxEventsPerLink, maxBytes: AuditChain.maxLinkBytes)
                }
            ),
            ("writer: batch packed (APIRequestPacking.pack)", { _ = APIRequestPacking.pack(events[...]) }),
        ]
        let rounds = max(1, checks / batch)
        for (name, stage) in stages {
            stage()
            let (allocationsBefore, retainsBefore) = (counter.count(), counter.retains())
            let start = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<rounds { stage() }
            let perEvent = Double(rounds * batch)
            print(
                String(
                    format: "%8.0f ns %7.2f allocations %7.2f retains/releases  %@ (per event)",
                    Double(DispatchTime.now().uptimeNanoseconds - start) / perEvent,
                    Double(counter.count() - allocationsBefore) / perEvent,
                    Double(counter.retains() - retainsBefore) / perEvent, name))
        }
    }

    struct StageError: Error {}
}

/// The calling thread's heap allocations and Swift retains and releases so far, from
/// `bench/allocations.c` when it is preloaded.
struct AllocationCounter {
    private typealias Function = @convention(c) () -> UInt64
    private let allocations: Function?
    private let retainsAndReleases: Function?

    init() {
        allocations = dlsym(nil, "apikeyd_thread_allocations").map { unsafeBitCast($0, to: Function.self) }
        retainsAndReleases = dlsym(nil, "apikeyd_thread_retains").map { unsafeBitCast($0, to: Function.self) }
    }

    var isAvailable: Bool { allocations != nil }

    func count() -> UInt64 { allocations?() ?? 0 }

    func retains() -> UInt64 { retainsAndReleases?() ?? 0 }
}
