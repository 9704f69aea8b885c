import APIKeysCore
import APIKeysServer
import HTTPTypes

/// The admin port's request rate (`--admin-rate`, ``AdminAPI/Options/requestsPerSecond``),
/// shared so that operators keep their part of it: anyone who can reach the port can send
/// requests, and one bucket for all callers let a flood of requests without a valid token take
/// every answer (every operator request answered 429).
///
/// Every answered request takes a token from the port's bucket (``requestsPerSecond``, bursts of
/// twice as many), as before. A request from a caller this server has not verified (no admin
/// token it has seen valid, ``KeyService/isKnownAdminToken(_:)``; no console session it holds)
/// first takes one from a second bucket of half that rate: unverified callers together get at
/// most half the port's answers, and verified ones at least the other half, whatever the flood.
/// Telling them apart is one hash and a lookup in memory, no store read.
struct AdminRequestRate: Sendable {
    let requestsPerSecond: UInt32
    private let all: RateBucket
    private let unverified: RateBucket
    private let gate: AdminGate
    private let sessions: ConsoleSessions
    /// Where refusals are counted (by caller: verified or not).
    private let metrics: ServerMetrics?

    /// nil when `requestsPerSecond` is 0 (no limit).
    init?(requestsPerSecond: UInt32, gate: AdminGate, sessions: ConsoleSessions, metrics: ServerMetrics?) {
        guard requestsPerSecond > 0 else { return nil }
        self.requestsPerSecond = requestsPerSecond
        all = RateBucket(
            limit: KeyRateLimit(requests: requestsPerSecond, periodSeconds: 1, burst: requestsPerSecond * 2))
        let half = max(1, requestsPerSecond / 2)
        unverified = RateBucket(limit: KeyRateLimit(requests: half, periodSeconds: 1, burst: half * 2))
        self.gate = gate
        self.sessions = sessions
        self.metrics = metrics
    }

    /// Takes the request's share at `nowMS`: nil when it may be answered, else the milliseconds
    /// until it may.
    func take(_ request: HTTPRequest, nowMS: Int64) -> Int64? {
        let verified = isVerified(request)
        guard let waitMS = wait(verified: verified, nowMS: nowMS) else { return nil }
        metrics?.countRefusal(verified ? .adminAPIRateVerified : .adminAPIRateUnverified)
        return waitMS
    }

    private func wait(verified: Bool, nowMS: Int64) -> Int64? {
        if !verified, let waitMS = unverified.take(nowMS: nowMS) { return waitMS }
        guard let waitMS = all.take(nowMS: nowMS) else { return nil }
        // Refused after all: the unverified share it took is not spent.
        if !verified { unverified.giveBack() }
        return waitMS
    }

    /// Whether `request` comes from a caller this server has verified: it presents an admin
    /// token seen valid (``AdminGate/presentsKnownAdminToken(_:)``) or a console session the
    /// server holds. Not authentication: the request is authenticated as any other.
    private func isVerified(_ request: HTTPRequest) -> Bool {
        if let authorization = request.headerFields[.authorization] {
            return gate.presentsKnownAdminToken(authorization)
        }
        return sessions.id(in: request).map(sessions.holds) ?? false
    }
}
