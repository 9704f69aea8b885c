import Testing
@testable import APIKeysCore

@Suite struct RateLimitTests {
    @Test func theTextFormsReadAndPrint() {
        #expect(KeyRateLimit(text: "100/s") == KeyRateLimit(requests: 100, periodSeconds: 1, burst: 100))
        #expect(KeyRateLimit(text: "6000/m")?.periodSeconds == 60)
        #expect(KeyRateLimit(text: "10/h")?.periodSeconds == 3600)
        #expect(KeyRateLimit(text: "5/d")?.periodSeconds == 86400)
        for bad in ["", "100", "0/s", "-1/s", "100/x", "100/s/1", "/s", "1e3/s"] {
            #expect(KeyRateLimit(text: bad) == nil)
        }
        #expect(KeyRateLimit(requests: 100, periodSeconds: 60, burst: 10).description == "100/m burst 10")
        let limit = KeyRateLimit(requests: 7, periodSeconds: 3600, burst: 3)
        #expect(KeyRateLimit(stored: limit.stored) == limit)
        #expect(KeyRateLimit(stored: "") == nil)
        #expect(KeyRateLimit(stored: "0/1/1") == nil)
    }

    @Test func theRulesApplyDefaultsAndBounds() throws {
        #expect(try KeyRules.validRateLimit(nil) == nil)
        #expect(try KeyRules.validRateLimit(KeyRateLimit(requests: 0)) == nil)
        #expect(try KeyRules.validRateLimit(KeyRateLimit(requests: 5, periodSeconds: 0)) == KeyRateLimit(requests: 5))
        #expect(throws: KeyError.self) { try KeyRules.validRateLimit(KeyRateLimit(requests: 5, periodSeconds: 86401)) }
        #expect(throws: KeyError.self) { try KeyRules.validRateLimit(KeyRateLimit(requests: 5, burst: 1_000_001)) }
    }

    /// 10/s with bursts of 5: five at once, then one every 100 ms, and a wait that says so.
    @Test func theBucketTakesABurstThenRefillsAtTheRate() {
        let bucket = RateBucket(limit: KeyRateLimit(requests: 10, periodSeconds: 1, burst: 5))
        let start: Int64 = 1_700_000_000_000
        for _ in 0..<5 { #expect(bucket.take(nowMS: start) == nil) }
        #expect(bucket.take(nowMS: start) == 100)
        #expect(bucket.take(nowMS: start + 40) == 60)
        #expect(bucket.take(nowMS: start + 100) == nil)
        #expect(bucket.take(nowMS: start + 100) == 100)
        // Idle for long: the bucket is full again, not fuller.
        for _ in 0..<5 { #expect(bucket.take(nowMS: start + 60_000) == nil) }
        #expect(bucket.take(nowMS: start + 60_000) != nil)
    }

    /// Threads taking from one bucket at once get exactly the burst between them.
    @Test func concurrentTakersShareOneBucketExactly() async {
        let bucket = RateBucket(limit: KeyRateLimit(requests: 1, periodSeconds: 86400, burst: 1000))
        let allowed = await withTaskGroup(of: Int.self) { group in
            for _ in 0..<8 {
                group.addTask { (0..<500).reduce(0) { count, _ in count + (bucket.take(nowMS: 5_000) == nil ? 1 : 0) } }
            }
            return await group.reduce(0, +)
        }
        #expect(allowed == 1000)
    }

    /// Through the index: a limited key is RATE_LIMITED (429) once its burst is spent, only
    /// checks that would be allowed take a token, both secrets of a key in a rotation's grace
    /// share its bucket, and a change of the key that keeps its limit keeps what was taken.
    @Test func theIndexDecidesRateLimitedLastAndKeepsTheBucket() {
        let index = KeyIndex(catalog: .standard)
        let format = SecretFormat.standard
        let (current, old) = (format.generate(), format.generate())
        let limit = KeyRateLimit(requests: 2, periodSeconds: 60)
        var state = KeyCheckState(
            id: "key_1", name: "ci", permissions: PermissionCatalog.standard.mask(of: ["jobs:read"]), enabled: true,
            expiresAtMS: nil, rateLimit: limit)
        var grace = state
        grace.graceEndsAtMS = 10_000
        index.apply([
            .upsert(state, SecretHash(of: current), replacing: nil),
            .upsert(grace, SecretHash(of: old), replacing: nil),
        ])
        func check(_ secret: String, _ permissions: [String] = ["jobs:read"]) -> CheckOutcome {
            index.check(secret: secret, permissions: permissions, format: format, nowMS: 1_000)
        }
        #expect(check(current, ["vault:read"]).denial == .missingPermission)
        #expect(check(current).isAllowed)
        #expect(check(old).isAllowed)
        let limited = check(current)
        #expect(limited.denial == .rateLimited)
        #expect(limited.httpStatus == 429)
        #expect(limited.retryAfterMS == 30_000)
        #expect(check(old).denial == .rateLimited)
        // A rename keeps the bucket; a new limit starts a new one; no limit, none.
        state.name = "renamed"
        index.upsert(state, hash: SecretHash(of: current))
        #expect(check(current).denial == .rateLimited)
        state.rateLimit = KeyRateLimit(requests: 3, periodSeconds: 60)
        index.upsert(state, hash: SecretHash(of: current))
        #expect(check(current).isAllowed)
        state.rateLimit = nil
        index.upsert(state, hash: SecretHash(of: current))
        for _ in 0..<10 { #expect(check(current).isAllowed) }
    }
}

@Suite struct UsageCreditsTests {
    @Test func creditsAreSpentOnceEachAndNeverBelowZero() async {
        let credits = UsageCredits(granted: 1000, spent: 10)
        #expect(credits.remaining == 990)
        let spent = await withTaskGroup(of: Int.self) { group in
            for _ in 0..<8 { group.addTask { (0..<200).reduce(0) { count, _ in count + (credits.spend() ? 1 : 0) } } }
            return await group.reduce(0, +)
        }
        #expect(spent == 990)
        #expect(credits.remaining == 0)
        #expect(!credits.spend())
        // A refill tops up; a stored count below this server's never lowers it.
        credits.grant(1500)
        #expect(credits.remaining == 500)
        credits.noteStored(spent: 900)
        #expect(credits.remaining == 500)
        credits.noteStored(spent: 1400)
        #expect(credits.remaining == 100)
    }

    /// Through the index: the credits are spent by allowed checks only, USAGE_EXCEEDED (403) comes
    /// before RATE_LIMITED and takes no token, and a refill by a new grant keeps what was spent.
    @Test func theIndexSpendsCreditsOnAllowedChecksOnly() {
        let index = KeyIndex(catalog: .standard)
        let format = SecretFormat.standard
        let secret = format.generate()
        var state = KeyCheckState(
            id: "key_1", name: "ci", permissions: PermissionCatalog.standard.mask(of: ["jobs:read"]), enabled: true,
            expiresAtMS: nil, rateLimit: KeyRateLimit(requests: 3, periodSeconds: 60),
            usage: UsageGrant(granted: 2, spent: 0))
        index.upsert(state, hash: SecretHash(of: secret))
        func check(_ permissions: [String] = ["jobs:read"]) -> CheckOutcome {
            index.check(secret: secret, permissions: permissions, format: format, nowMS: 1_000)
        }
        #expect(check(["vault:read"]).denial == .missingPermission)
        #expect(check().isAllowed)
        #expect(check().isAllowed)
        let spent = check()
        #expect(spent.denial == .usageExceeded)
        #expect(spent.httpStatus == 403)
        // Refilled with 1 more (granted 3, spent 2 as stored): one more, and the bucket still has its third token.
        state.usage = UsageGrant(granted: 3, spent: 2)
        index.upsert(state, hash: SecretHash(of: secret))
        #expect(check().isAllowed)
        #expect(check().denial == .usageExceeded)
        state.usage = UsageGrant(granted: 103, spent: 3)
        index.upsert(state, hash: SecretHash(of: secret))
        #expect(check().denial == .rateLimited)
        // Another server's spending, as its audit batches store it.
        index.noteStoredSpending(["key_1": 103])
        #expect(check().denial == .usageExceeded)
    }

    /// Threads racing for a key's last credits: a check that finds a credit, takes a token and
    /// then loses the credit to another thread gives its token back, so the bucket has lost
    /// exactly one token per allowed check.
    @Test func aCheckThatLosesTheLastCreditToARaceTakesNoToken() async {
        let index = KeyIndex(catalog: .standard)
        let format = SecretFormat.standard
        let secret = format.generate()
        var state = KeyCheckState(
            id: "key_1", name: "ci", permissions: PermissionCatalog.standard.mask(of: ["jobs:read"]), enabled: true,
            expiresAtMS: nil, rateLimit: KeyRateLimit(requests: 1, periodSeconds: 86400, burst: 100_000))
        index.upsert(state, hash: SecretHash(of: secret))
        let (rounds, grant, threads, perThread) = (300, 10, 8, 8)
        for round in 1...rounds {
            state.usage = UsageGrant(granted: Int64(round * grant), spent: Int64((round - 1) * grant))
            index.upsert(state, hash: SecretHash(of: secret))
            let allowed = await withTaskGroup(of: Int.self) { group in
                for _ in 0..<threads {
                    group.addTask {
                        (0..<perThread).reduce(0) { count, _ in
                            let outcome = index.check(
                                secret: secret, permissions: ["jobs:read"], format: format, nowMS: 1_000)
                            return count + (outcome.isAllowed ? 1 : 0)
                        }
                    }
                }
                return await group.reduce(0, +)
            }
            #expect(allowed == grant)
        }
        // Unlimited credits now: what is left in the bucket is the burst less one token per allowed check.
        state.usage = nil
        index.upsert(state, hash: SecretHash(of: secret))
        var left = 0
        while index.check(secret: secret, permissions: ["jobs:read"], format: format, nowMS: 1_000).isAllowed {
            left += 1
        }
        #expect(left == 100_000 - rounds * grant)
    }
}
