import APIKeysCore
import APIKeysTestSupport
import Foundation
import Synchronization
import Testing
@testable import APIKeysSQLite
@_spi(Testing) @testable import APIKeysStore

/// A mutation that lands right after another one's commit must not be undone by the first one's
/// index update: the check index changes in commit order, for every kind of mutation.
@Suite struct MutationOrderTests {
    enum Kill: CaseIterable { case delete, rotate, disable }

    /// Holds a CreateKey between its commit and its index update while another thread kills the
    /// new key; afterwards the secret must be refused, as `getKey` says it is gone or disabled.
    @Test(arguments: Kill.allCases)
    func aKillRightAfterCreateHolds(_ kill: Kill) async throws {
        try await withService { service, _ in
            let held = Atomic<Bool>(false)
            let killerDone = Mutex<DispatchSemaphore?>(nil)
            service.setCommitHook { ids in
                guard ids.count == 1, !held.exchange(true, ordering: .relaxed) else { return }
                let done = DispatchSemaphore(value: 0)
                killerDone.withLock { $0 = done }
                let id = ids[0]
                Thread.detachNewThread {
                    switch kill {
                    case .delete: try? runBlocking { try await service.deleteKey(id: id, actor: "killer") }
                    case .rotate: _ = try? runBlocking { try await service.rotateKey(id: id, actor: "killer") }
                    case .disable:
                        _ = try? runBlocking { try await service.setEnabled(id: id, enabled: false, actor: "killer") }
                    }
                    done.signal()
                }
                // Give the killer every chance to run inside this window; with the index updated
                // under the admin lock it cannot, and the wait runs out.
                if done.wait(timeout: .now() + .milliseconds(300)) == .success { done.signal() }
            }
            let created = try await service.createKey(name: "raced", permissions: ["jobs:read"], actor: "ops")
            let done = try #require(killerDone.withLock { $0 })
            // Waited for off the executor: the killer's own awaits need its threads.
            let finished = try await offThePool { done.wait(timeout: .now() + .seconds(10)) }
            #expect(finished == .success)
            service.setCommitHook(nil)

            let outcome = try service.check(secret: created.secret, permissions: ["jobs:read"])
            #expect(!outcome.isAllowed, "the \(kill) that returned after the create was undone in the index")
            switch kill {
            case .delete:
                await #expect(throws: KeyError.keyNotFound(id: created.key.id)) {
                    try await service.getKey(id: created.key.id)
                }
            case .rotate: #expect(try await service.getKey(id: created.key.id).rotatedAtMS != nil)
            case .disable: #expect(try await service.getKey(id: created.key.id).enabled == false)
            }
        }
    }

    /// A call whose deadline has passed changes nothing: no key, no audit event, no index entry.
    @Test func aPassedDeadlineCommitsNothing() async throws {
        try await withService { service, _ in
            let kept = try await service.createKey(name: "kept", permissions: ["jobs:read"], actor: "ops")
            let passed = Deadline(.now - .milliseconds(1))
            await #expect(throws: KeyError.deadlineExceeded) {
                _ = try await service.createKey(
                    name: "late", permissions: ["jobs:read"], actor: "ops", deadline: passed)
            }
            await #expect(throws: KeyError.deadlineExceeded) {
                _ = try await service.rotateKey(id: kept.key.id, actor: "ops", deadline: passed)
            }
            await #expect(throws: KeyError.deadlineExceeded) {
                try await service.deleteKey(id: kept.key.id, actor: "ops", deadline: passed)
            }
            #expect(try await service.listKeys().keys.map(\.name) == ["kept"])
            #expect(try service.check(secret: kept.secret, permissions: ["jobs:read"]).isAllowed)
            let admin = try await service.listAuditEvents(AuditQuery(action: nil)).events.filter {
                $0.action != .apiRequest
            }
            #expect(admin.map(\.action) == [.keyCreated])
        }
    }
}
