import APIKeysCore
import Dispatch
import Foundation
import Synchronization
import Testing
@testable import APIKeysSQLite
@testable import APIKeysStore

@Suite struct ConcurrencyTests {
    /// Checks on several threads while another rotates, disables and deletes keys: no check
    /// started after a kill returned is allowed, and every recorded check is in the trail once.
    @Test func noCheckIsAllowedAfterTheCallThatKilledTheSecretReturned() async throws {
        try await withService { service, _ in
            var live: [(id: String, secret: String)] = []
            for index in 0..<40 {
                let issued = try await service.createKey(name: "k\(index)", permissions: ["jobs:read"], actor: "ops")
                live.append((issued.key.id, issued.secret))
            }
            let allSecrets = live.map(\.secret)
            let killed = Mutex<Set<String>>([])
            let secretsPool = Mutex<[String]>(allSecrets)
            let violations = Atomic<Int>(0)
            let checks = Atomic<Int>(0)
            let done = Atomic<Bool>(false)
            let secretsToKill = live

            // Three checkers on threads of their own (never a task's executor, which the
            // killer's awaits need), while this task rotates, disables and deletes each key in turn.
            let checkers = DispatchGroup()
            for worker in 1...3 {
                checkers.enter()
                Thread.detachNewThread {
                    defer { checkers.leave() }
                    var round = 0
                    while !done.load(ordering: .acquiring) || round < 200 {
                        round += 1
                        let pool = secretsPool.withLock { $0 }
                        let secret = pool[(round * 7 + worker) % pool.count]
                        let wasKilled = killed.withLock { $0.contains(secret) }
                        do {
                            let outcome = try service.check(secret: secret, permissions: ["jobs:read"])
                            checks.add(1, ordering: .relaxed)
                            if wasKilled && outcome.isAllowed { violations.add(1, ordering: .relaxed) }
                        } catch {
                            Issue.record("check failed: \(error)")
                        }
                        usleep(20)  // leave the cores to the killer too (2 here), and the audit queue room
                    }
                }
            }
            for (index, entry) in secretsToKill.enumerated() {
                do {
                    switch index % 3 {
                    case 0:
                        let fresh = try await service.rotateKey(id: entry.id, actor: "ops").secret
                        secretsPool.withLock { $0.append(fresh) }
                    case 1: _ = try await service.setEnabled(id: entry.id, enabled: false, actor: "ops")
                    default: try await service.deleteKey(id: entry.id, actor: "ops")
                    }
                } catch {
                    Issue.record("mutation failed: \(error)")
                }
                killed.withLock { _ = $0.insert(entry.secret) }
            }
            done.store(true, ordering: .releasing)
            await withCheckedContinuation { continuation in checkers.notify(queue: .global()) { continuation.resume() }
            }
            #expect(violations.load(ordering: .relaxed) == 0)

            await service.flushAuditTrail()
            var events: [AuditRecord] = []
            var token: String?
            repeat {
                let page = try await service.listAuditEvents(
                    AuditQuery(action: .apiRequest), pageSize: 1000, pageToken: token)
                events += page.events
                token = page.nextPageToken
            } while token != nil
            // Checks of killed secrets are of unknown keys: written whole once per second, the
            // rest counted in summary events ("N more checks of unknown keys…").
            let counted = events.map { event in
                event.keyID.isEmpty && event.detail.contains("more check")
                    ? Int(event.detail.prefix { $0.isNumber }) ?? 0 : 1
            }
            #expect(counted.reduce(0, +) == checks.load(ordering: .relaxed))
            #expect(Set(events.map(\.seq)).count == events.count)
        }
    }
}
