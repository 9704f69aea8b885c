import APIKeysCore
import HTTPTypes
import Synchronization

/// The console's signed-in browsers: one session per sign-in, in this server's memory (a restart
/// or another replica means signing in again). A session holds the admin token it was opened
/// with, so every request it makes is authenticated with that token as a Bearer request would be:
/// a token revoked or expired ends the session at its next request.
final class ConsoleSessions: Sendable {
    struct Session: Sendable {
        let token: String
        /// Sent back in `X-CSRF-Token` by every state-changing request of the session.
        let csrf: String
        let createdAtMS: Int64
        var lastSeenMS: Int64
    }

    /// A session unused this long ends.
    static let idleMS: Int64 = 30 * 60_000
    /// A session ends this long after its sign-in, used or not.
    static let absoluteMS: Int64 = 12 * 3_600_000
    /// Sessions held at most; past it, the one idle longest ends.
    static let maxSessions = 10_000
    /// Failed sign-ins one client address may make a minute; more are refused (429) until the
    /// minute is over.
    static let maxFailuresPerMinute = 5

    /// `__Host-` with `Secure` over TLS (the cookie then cannot be set or read by plain HTTP, nor
    /// scoped below `/`), else a plain name.
    let cookieName: String
    private let secure: Bool
    private let sessions = Mutex<[String: Session]>([:])
    private let failures = Mutex<[String: (windowStartMS: Int64, count: Int)]>([:])

    init(secure: Bool) {
        self.secure = secure
        cookieName = secure ? "__Host-apikeyd_session" : "apikeyd_session"
    }

    /// A new session for `token` (already authenticated): its id (for the cookie) and CSRF token.
    func open(token: String, nowMS: Int64) -> (id: String, session: Session) {
        let id = Self.randomHex()
        let session = Session(token: token, csrf: Self.randomHex(), createdAtMS: nowMS, lastSeenMS: nowMS)
        sessions.withLock { sessions in
            if sessions.count >= Self.maxSessions,
                let oldest = sessions.min(by: { $0.value.lastSeenMS < $1.value.lastSeenMS })
            {
                sessions[oldest.key] = nil
            }
            sessions[id] = session
        }
        return (id, session)
    }

    /// The live session `id` names, marked as used now; nil (and ended) when it is idle or too old.
    func use(_ id: String, nowMS: Int64) -> Session? {
        sessions.withLock { sessions in
            guard var session = sessions[id] else { return nil }
            guard nowMS - session.lastSeenMS < Self.idleMS, nowMS - session.createdAtMS < Self.absoluteMS else {
                sessions[id] = nil
                return nil
            }
            session.lastSeenMS = nowMS
            sessions[id] = session
            return session
        }
    }

    func end(_ id: String) { sessions.withLock { $0[id] = nil } }

    /// The admin token of session `id` while it is held (not yet ended; it may be past its time
    /// until its next use), else nil.
    func token(of id: String) -> String? { sessions.withLock { $0[id]?.token } }

    /// The session id in `request`'s cookie, if it has one.
    func id(in request: HTTPRequest) -> String? {
        for field in request.headerFields[values: .cookie] {
            for pair in field.split(separator: ";") {
                let parts = pair.trimmingCharacters(in: .whitespaces).split(separator: "=", maxSplits: 1)
                if parts.count == 2, parts[0] == cookieName, parts[1].utf8.count == 64 { return String(parts[1]) }
            }
        }
        return nil
    }

    /// The `Set-Cookie` value that opens session `id`, or (nil) ends it in the browser.
    func cookie(_ id: String?) -> String {
        var attributes = ["Path=/", "HttpOnly", "SameSite=Strict"]
        if secure { attributes.append("Secure") }
        guard let id else { return (["\(cookieName)="] + attributes + ["Max-Age=0"]).joined(separator: "; ") }
        return (["\(cookieName)=\(id)"] + attributes + ["Max-Age=\(Self.absoluteMS / 1000)"]).joined(separator: "; ")
    }

    /// Milliseconds until `address` may try to sign in again; nil when it may now.
    func signInWait(address: String, nowMS: Int64) -> Int64? {
        failures.withLock { failures in
            guard let window = failures[address], nowMS - window.windowStartMS < 60_000 else { return nil }
            return window.count >= Self.maxFailuresPerMinute ? 60_000 - (nowMS - window.windowStartMS) : nil
        }
    }

    /// Counts a failed sign-in from `address`.
    func signInFailed(address: String, nowMS: Int64) {
        failures.withLock { failures in
            if failures.count > 10_000 { failures = failures.filter { nowMS - $0.value.windowStartMS < 60_000 } }
            if let window = failures[address], nowMS - window.windowStartMS < 60_000 {
                failures[address] = (window.windowStartMS, window.count + 1)
            } else {
                failures[address] = (nowMS, 1)
            }
        }
    }

    /// 256 random bits as 64 hex digits.
    private static func randomHex() -> String {
        var bytes = [UInt8](repeating: 0, count: 32)
        bytes.withUnsafeMutableBytes { SecureRandom.fill($0) }
        return AuditChain.hex(bytes)
    }
}
