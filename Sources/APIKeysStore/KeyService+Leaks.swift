import APIKeysCore

extension KeyService {
    /// The actor recorded for leak reports (they need no admin token).
    public static let leakReportActor = "leak report"

    /// What became of a leak report. Callers must answer the reporter the same in every case, so
    /// that a report tells nothing about the key; this is for logs and tests.
    public enum LeakReport: Sendable, Hashable {
        /// The key was enabled and is now disabled.
        case disabled(keyID: String)
        /// The key was already disabled; the report is recorded all the same.
        case alreadyDisabled(keyID: String)
        /// An admin token (`adm_…`) was reported and is now revoked.
        case adminTokenRevoked(name: String)
        /// Malformed, unknown, rotated away or deleted: nothing to do, nothing recorded.
        case noKey
    }

    /// A secret was found where it should not be (`source`: a URL, a file), reported from
    /// `reporterAddress`: disables its key before returning and records `key.leak_reported` in
    /// the same transaction (the key's check is refused from then on, on every replica within
    /// the propagation bound). A secret that is no key's is ignored and not recorded, so that
    /// reports of made-up secrets cannot fill the audit trail; nor can repeated reports of a
    /// secret whose key is disabled: for such a key at most one report a minute is recorded
    /// (``leakReportInterval``, counted by this server). A live admin token (`adm_…`) reported
    /// the same way is revoked before this returns. A leading `Bearer ` is ignored.
    @discardableResult
    public func reportLeakedKey(secret: String, source: String, reporterAddress: String, deadline: Deadline = .never)
        async throws -> LeakReport
    {
        let resource = CheckLimits.recorded(resource: source)
        let address = String(decoding: reporterAddress.utf8.prefix(CheckLimits.maxClientAddressBytes), as: UTF8.self)
        if let tokenHash = Self.adminTokenFormat.hash(ofPresented: secret) {
            return try await revokeLeakedAdminToken(tokenHash, resource: resource, reporterAddress: address)
        }
        guard let hash = format.hash(ofPresented: secret), let known = index.lookup(hash) else { return .noKey }
        let now = clock.nowMS()
        if known.graceIsOver(atMS: now) { return .noKey }  // a replaced secret, dead
        if !known.enabled, !claimLeakRecord(keyID: known.id, nowMS: now) { return .alreadyDisabled(keyID: known.id) }
        do {
            return try await commit(reading: known.id, by: AdminActor(name: Self.leakReportActor), deadline: deadline) {
                stored in
                // Rotated between the lookup and the commit: the reported secret is dead already.
                guard let stored, stored.hash == hash || stored.liveGraceHash(at: now) == hash else {
                    return KeyDecision(result: .noKey)
                }
                var key = stored.key
                let wasEnabled = key.enabled
                if wasEnabled {
                    // Disabled, the key keeps no grace secret (``setEnabled(id:enabled:actor:deadline:)``).
                    key.enabled = false
                    key.updatedAtMS = now
                    key.graceEndsAtMS = nil
                }
                var event = Self.event(
                    .keyLeakReported, for: key, actor: Self.leakReportActor,
                    detail: wasEnabled ? "reported leaked; disabled" : "reported leaked; already disabled", at: now)
                event.resource = resource
                event.clientAddress = address
                return KeyDecision(
                    result: wasEnabled ? .disabled(keyID: key.id) : .alreadyDisabled(keyID: key.id),
                    writes: wasEnabled ? [.update(key, hash: stored.hash, from: stored)] : [], events: [event])
            }
        } catch let error as KeyError where error.code == .keyNotFound {
            return .noKey  // deleted between the lookup and the commit
        }
    }

    /// Revokes the live admin token with `hash`, recording who reported it where; an unknown
    /// token is ignored and not recorded (as an unknown key is).
    private func revokeLeakedAdminToken(_ hash: SecretHash, resource: String, reporterAddress: String) async throws
        -> LeakReport
    {
        guard let token = try await readAdminToken(hash) else { return .noKey }
        // Where it was found and who reported it go in the detail: admin-token events are
        // recorded without a resource or address on every store.
        let found = resource.isEmpty ? "" : " (found at \(resource))"
        let event = Self.event(
            .adminTokenRevoked, actor: Self.leakReportActor,
            detail: "admin token \"\(token.name)\" revoked: reported leaked\(found) by \(reporterAddress)",
            at: clock.nowMS())
        // Revoked by someone else between the lookup and now: gone either way.
        _ = try await store.revokeAdminToken(name: token.name, event: event)
        knownAdminTokens.withLock { _ = $0.removeValue(forKey: hash) }
        return .adminTokenRevoked(name: token.name)
    }

    /// Reports of an already disabled key recorded at most this often, per key and server.
    public static let leakReportInterval: Int64 = 60_000

    /// True (and noted) when a report of the disabled key `keyID` may be recorded at `nowMS`.
    private func claimLeakRecord(keyID: String, nowMS: Int64) -> Bool {
        recordedLeakReports.withLock { recorded in
            if let last = recorded[keyID], nowMS - last < Self.leakReportInterval { return false }
            // Bounded: entries older than the interval no longer matter.
            if recorded.count >= 10_000 { recorded = recorded.filter { nowMS - $0.value < Self.leakReportInterval } }
            recorded[keyID] = nowMS
            return true
        }
    }
}
