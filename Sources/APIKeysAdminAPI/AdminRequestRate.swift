import APIKeysCore
import APIKeysServer
import HTTPTypes
import Synchronization

/// The admin port's request rate (`--admin-rate`, ``AdminAPI/Options/requestsPerSecond``),
/// shared so that no one caller can take all of it: anyone who can reach the port can send
/// requests, and one bucket for all callers let a flood of requests without a valid token take
/// every answer (every operator request answered 429), as could any one token (a read-only one
/// given to a script included).
///
/// Every answered request takes a token from the port's bucket (``requestsPerSecond``, bursts of
/// twice as many), as before. First it takes one from its caller's own bucket of half that rate:
/// each admin token this server has seen valid (``KeyService/knownAdminTokenHash(_:)``; a console
/// session counts as its token) has its own, and every other caller shares one. So no caller,
/// and not all unverified callers together, gets more than half the port's answers: against one
/// flooding caller, the others keep at least the other half. Telling callers apart is one hash
/// and a lookup in memory, no store read.
final class AdminRequestRate: Sendable {
    let requestsPerSecond: UInt32
    private let all: RateBucket
    private let unverified: RateBucket
    /// One bucket per token seen valid that has made a request; at most ``maxCallers`` (then
    /// emptied and begun again: a burst more for each token, once).
    private let verified = Mutex<[SecretHash: RateBucket]>([:])
    private let callerLimit: KeyRateLimit
    private static let maxCallers = 1024
    /// Its admin gate and key service tell the tokens seen valid.
    private let server: APIKeysServer
    private let sessions: ConsoleSessions
    /// Where refusals are counted (by caller: verified or not).
    private let metrics: ServerMetrics?

    /// nil when `requestsPerSecond` is 0 (no limit).
    init?(requestsPerSecond: UInt32, server: APIKeysServer, sessions: ConsoleSessions) {
        guard requestsPerSecond > 0 else { return nil }
        self.requestsPerSecond = requestsPerSecond
        all = RateBucket(
            limit: KeyRateLimit(requests: requestsPerSecond, periodSeconds: 1, burst: requestsPerSecond * 2))
        let half = max(1, requestsPerSecond / 2)
        callerLimit = KeyRateLimit(requests: half, periodSeconds: 1, burst: half * 2)
        unverified = RateBucket(limit: callerLimit)
        self.server = server
        self.sessions = sessions
        metrics = server.metrics
    }

    /// Takes the request's share at `nowMS`: nil when it may be answered, else the milliseconds
    /// until it may.
    func take(_ request: HTTPRequest, nowMS: Int64) -> Int64? {
        let caller = verifiedCaller(request)
        let own = caller.map(bucket(of:)) ?? unverified
        guard let waitMS = wait(own, nowMS: nowMS) else { return nil }
        metrics?.countRefusal(caller == nil ? .adminAPIRateUnverified : .adminAPIRateVerified)
        return waitMS
    }

    private func wait(_ own: RateBucket, nowMS: Int64) -> Int64? {
        if let waitMS = own.take(nowMS: nowMS) { return waitMS }
        guard let waitMS = all.take(nowMS: nowMS) else { return nil }
        // Refused after all: the caller's share it took is not spent.
        own.giveBack()
        return waitMS
    }

    private func bucket(of caller: SecretHash) -> RateBucket {
        verified.withLock { buckets in
            if let bucket = buckets[caller] { return bucket }
            if buckets.count >= Self.maxCallers { buckets.removeAll() }
            let bucket = RateBucket(limit: callerLimit)
            buckets[caller] = bucket
            return bucket
        }
    }

    /// The token of the caller of `request` when this server has verified it: an admin token
    /// seen valid (``AdminGate/knownAdminToken(_:)``), or a console session the server holds
    /// whose token is. Not authentication: the request is authenticated as any other.
    private func verifiedCaller(_ request: HTTPRequest) -> SecretHash? {
        if let authorization = request.headerFields[.authorization] {
            return server.adminGate.knownAdminToken(authorization)
        }
        guard let id = sessions.id(in: request), let token = sessions.token(of: id) else { return nil }
        return server.service.knownAdminTokenHash(token)
    }
}
