import APIKeysTestSupport
@testable import APIKeysWire
import Foundation
import Testing

/// Bytes written by this layer are read by the official protobuf runtime (Python) to the same
/// values, and the reverse. `make test` provides the Python with `protobuf` and `grpcio-tools`
/// through APIKEYS_INTEROP_PYTHON; see Tests/interop/wire_interop.py for the other half.
@Suite(.enabled(if: interopPython != nil))
struct InteropTests {
    static let unicode = Fixtures.unicode

    /// Must match `fixtures()` in Tests/interop/wire_interop.py.
    static let fixtures: [(String, any WireMessage)] = [
        (
            "envelope",
            Envelope(
                callID: UInt64.max, method: KeyAdmin.createKey.path, payload: [0, 1, 0, 255, 0],
                status: .unauthenticated, statusMessage: unicode,
                metadata: ["authorization": "Bearer abc", "x-empty": ""], timeoutMS: 1500)
        ),
        (
            "create_request",
            CreateKeyRequest(
                name: unicode, permissions: ["jobs:read", "storage:write"], expiresAtMS: 1_900_000_000_000,
                allowedNetworks: ["::1/128"], rateLimit: RateLimit(requests: 100, periodSeconds: 60, burst: 5),
                remainingUses: 1000)
        ),
        ("create_response", CreateKeyResponse(key: Fixtures.apiKey, secret: "dbm_secret")),
        ("update_bare", UpdateKeyRequest(id: "key_1")),
        ("update_zero", UpdateKeyRequest(id: "key_1", name: "", expiresAtMS: 0, permissions: PermissionSet())),
        (
            "update_full",
            UpdateKeyRequest(
                id: "key_1", name: "renamed", expiresAtMS: 5, permissions: PermissionSet(names: ["jobs:read"]),
                allowedNetworks: NetworkList(networks: ["10.0.0.0/8"]), rateLimit: RateLimit(), remainingUses: -1)
        ),
        (
            "check_request",
            CheckRequest(
                key: "Bearer dbm_x", permissions: ["jobs:read", "jobs:write"], resource: "POST /api/jobs/42/run",
                clientAddress: "::1")
        ),
        (
            "check_response",
            CheckResponse(
                decision: .deny, reason: .missingPermission, httpStatus: 403, keyID: "k", keyName: unicode,
                missingPermissions: ["vault:read"], expiresAtMS: 3)
        ),
        (
            "rate_limited_response",
            CheckResponse(decision: .deny, reason: .rateLimited, httpStatus: 429, keyID: "k", retryAfterMS: 20_000)
        ),
        ("api_key", Fixtures.apiKey),
        ("get_request", GetKeyRequest(id: "key_1")),
        ("get_response", GetKeyResponse(key: Fixtures.apiKey)),
        ("list_request", ListKeysRequest(pageSize: UInt32.max, pageToken: unicode)),
        ("list_response", ListKeysResponse(keys: [Fixtures.apiKey, ApiKey()], nextPageToken: "next")),
        ("permission_set", PermissionSet(names: ["a", ""])),
        ("network_list", NetworkList(networks: ["192.0.2.0/24", ""])),
        ("update_response", UpdateKeyResponse(key: Fixtures.apiKey)),
        ("set_enabled_request", SetKeyEnabledRequest(id: "key_1", enabled: true)),
        ("set_enabled_response", SetKeyEnabledResponse(key: Fixtures.apiKey)),
        ("rotate_request", RotateKeyRequest(id: "key_1", graceSeconds: 604_800)),
        ("rotate_response", RotateKeyResponse(key: Fixtures.apiKey, secret: "dbm_new")),
        ("delete_request", DeleteKeyRequest(id: "key_1")),
        ("delete_response", DeleteKeyResponse()),
        ("permissions_request", ListPermissionsRequest()),
        (
            "permissions_response",
            ListPermissionsResponse(permissions: [Permission(name: "jobs:read", description: unicode), Permission()])
        ),
        ("permission", Permission(name: "vault:read", description: "List encryption profiles")),
        (
            "audit_request",
            ListAuditEventsRequest(
                keyID: "key_1", action: "key.rotated", sinceMS: -5, untilMS: Int64.max, pageSize: 7, pageToken: "t")
        ),
        (
            "audit_response",
            ListAuditEventsResponse(
                events: [AuditEvent(seq: 1, action: "key.created", trigger: "admin", actor: "ops", detail: unicode)],
                nextPageToken: "n", oldestRetainedAtMS: 1_700_000_000_000, retentionMS: 2_592_000_000)
        ),
        ("audit_event", Fixtures.auditEvent),
        ("leak_request", ReportLeakedKeyRequest(key: "Bearer dbm_x", source: unicode)),
        ("leak_response", ReportLeakedKeyResponse()),
        ("policy_request", GetPolicyRequest()),
        ("policy_response", GetPolicyResponse(maxKeyLifetimeMS: 7_776_000_000)),
        ("rate_limit", RateLimit(requests: 100, periodSeconds: 3600, burst: 1_000_000)),
        ("chain_request", ExportAuditChainRequest(afterPosition: 41, sinceMS: 1_700_000_000_000, pageSize: 50)),
        (
            "chain_response",
            ExportAuditChainResponse(
                chain: AuditChainState(
                    anchor: AuditChainPoint(position: 40, hash: Array(repeating: 7, count: 32)),
                    head: AuditChainPoint(position: 42, hash: Array(repeating: 9, count: 32))),
                links: [
                    AuditLink(
                        position: 41, previousHash: Array(repeating: 7, count: 32),
                        hash: Array(repeating: 8, count: 32), events: [Fixtures.auditEvent])
                ])
        ),
        ("chain_point", AuditChainPoint(position: 3, hash: [1, 2, 3])),
        ("chain_state", AuditChainState(head: AuditChainPoint(position: 1, hash: [0]))),
        ("chain_link", AuditLink(position: 1, hash: [0xFF])),
        ("admin_token", adminToken),
        (
            "create_admin_token_request",
            CreateAdminTokenRequest(
                name: "deploy", scope: .keys, ceiling: ["jobs:execute"], maxKeyLifetimeMS: 86_400_000,
                expiresAtMS: 1_800_000_000_000)
        ),
        ("create_admin_token_response", CreateAdminTokenResponse(token: adminToken, secret: "adm_x")),
        ("list_admin_tokens_request", ListAdminTokensRequest()),
        ("list_admin_tokens_response", ListAdminTokensResponse(tokens: [adminToken, AdminToken()])),
        ("revoke_admin_token_request", RevokeAdminTokenRequest(name: "deploy")),
        ("revoke_admin_token_response", RevokeAdminTokenResponse()),
        ("who_am_i_request", WhoAmIRequest()),
        ("who_am_i_response", WhoAmIResponse(token: adminToken)),
    ]

    private static let adminToken = AdminToken(
        name: "ci", scope: .read, ceiling: ["jobs:read", "history:read"], maxKeyLifetimeMS: 3_600_000,
        createdAtMS: 1_700_000_000_000, expiresAtMS: 1_800_000_000_000)

    /// A message added to proto/ without a fixture here (and in wire_interop.py) fails this.
    @Test func everyMessageTypeHasAFixture() {
        let covered = Set(Self.fixtures.map { ObjectIdentifier(type(of: $0.1)) })
        let missing = WireContract.messageTypes.filter { !covered.contains(ObjectIdentifier($0)) }
        #expect(missing.isEmpty, "no interop fixture for \(missing)")
        let roundTripped = Set(Fixtures.all.map { ObjectIdentifier(type(of: $0)) })
        #expect(WireContract.messageTypes.allSatisfy { roundTripped.contains(ObjectIdentifier($0)) })
    }

    @Test func officialRuntimeAgreesBothWays() throws {
        try withTemporaryDirectory { work in
            for (name, message) in Self.fixtures {
                try Data(message.serializedBytes()).write(to: URL(fileURLWithPath: "\(work)/\(name).swift.bin"))
            }
            let run = try runCommand(
                interopPython!,
                [
                    repositoryRoot.appendingPathComponent("Tests/interop/wire_interop.py").path,
                    repositoryRoot.appendingPathComponent("proto").path, work,
                ])
            #expect(run.status == 0, "\(run.stdout)\(run.stderr)")
            for (name, message) in Self.fixtures {
                let bytes = try Data(contentsOf: URL(fileURLWithPath: "\(work)/\(name).python.bin"))
                try expectDecodes(Array(bytes), as: message, name: name)
            }
        }
    }

    private func expectDecodes<M: WireMessage>(_ bytes: [UInt8], as expected: M, name: String) throws {
        #expect(try M(serializedBytes: bytes) == expected, "\(name)")
    }
}
