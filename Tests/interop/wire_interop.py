"""Cross-checks the Swift wire layer against the official protobuf runtime.

Usage: wire_interop.py PROTO_DIR WORK_DIR

Compiles PROTO_DIR with the official protoc (grpcio-tools), then for every fixture below:
reads WORK_DIR/NAME.swift.bin (written by the Swift test), checks that the official runtime
parses it to exactly the expected message (field presence included), and writes the expected
message as serialized by the official runtime to WORK_DIR/NAME.python.bin for the Swift side
to check in turn. The fixture values must match InteropTests.swift.
"""
import glob
import os
import sys

from grpc_tools import protoc


def compile_protos(proto_dir, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    files = sorted(glob.glob(os.path.join(proto_dir, "apikeys", "v1", "*.proto")))
    args = ["protoc", f"-I{proto_dir}", f"--python_out={out_dir}", *files]
    if protoc.main(args) != 0:
        sys.exit("interop: protoc failed on proto/")
    sys.path.insert(0, out_dir)


def fixtures():
    from apikeys.v1 import authorize_pb2 as az
    from apikeys.v1 import envelope_pb2 as env
    from apikeys.v1 import keyadmin_pb2 as ka

    unicode = "clé Ünïcødé ✓ 鍵 🔑"
    key = ka.ApiKey(
        id="key_0123456789abcdef", name=unicode, hint="dbm_AbC1…", permissions=["jobs:read", "vault:read"],
        enabled=True, created_at_ms=1_700_000_000_000, updated_at_ms=1_700_000_000_001,
        expires_at_ms=1_900_000_000_000, last_used_at_ms=-1, rotated_at_ms=2**63 - 1,
        allowed_networks=["10.0.0.0/8", "2001:db8::/32"], grace_ends_at_ms=1_700_000_600_000,
        rate_limit=ka.RateLimit(requests=2**32 - 1, period_seconds=86400), remaining_uses=0)
    admin_token = ka.AdminToken(
        name="ci", scope=ka.READ, ceiling=["jobs:read", "history:read"], max_key_lifetime_ms=3_600_000,
        created_at_ms=1_700_000_000_000, expires_at_ms=1_800_000_000_000)
    return {
        "envelope": env.Envelope(
            call_id=2**64 - 1, method="/apikeys.v1.KeyAdmin/CreateKey", payload=b"\x00\x01\x00\xff\x00",
            status=16, status_message=unicode, metadata={"authorization": "Bearer abc", "x-empty": ""},
            timeout_ms=1500),
        "create_request": ka.CreateKeyRequest(name=unicode, permissions=["jobs:read", "storage:write"],
                                              expires_at_ms=1_900_000_000_000, allowed_networks=["::1/128"],
                                              rate_limit=ka.RateLimit(requests=100, period_seconds=60, burst=5),
                                              remaining_uses=1000),
        "create_response": ka.CreateKeyResponse(key=key, secret="dbm_secret"),
        "update_bare": ka.UpdateKeyRequest(id="key_1"),
        "update_zero": ka.UpdateKeyRequest(id="key_1", name="", expires_at_ms=0,
                                           permissions=ka.PermissionSet(names=[])),
        "update_full": ka.UpdateKeyRequest(id="key_1", name="renamed", expires_at_ms=5,
                                           permissions=ka.PermissionSet(names=["jobs:read"]),
                                           allowed_networks=ka.NetworkList(networks=["10.0.0.0/8"]),
                                           rate_limit=ka.RateLimit(), remaining_uses=-1),
        "check_request": az.CheckRequest(key="Bearer dbm_x", permissions=["jobs:read", "jobs:write"],
                                         resource="POST /api/jobs/42/run", client_address="::1"),
        "check_response": az.CheckResponse(decision=az.DENY, reason=az.MISSING_PERMISSION, http_status=403,
                                           key_id="k", key_name=unicode, missing_permissions=["vault:read"],
                                           expires_at_ms=3),
        "rate_limited_response": az.CheckResponse(decision=az.DENY, reason=az.RATE_LIMITED, http_status=429,
                                                  key_id="k", retry_after_ms=20_000),
        "leak_request": az.ReportLeakedKeyRequest(key="Bearer dbm_x", source=unicode),
        "leak_response": az.ReportLeakedKeyResponse(),
        "policy_request": ka.GetPolicyRequest(),
        "policy_response": ka.GetPolicyResponse(max_key_lifetime_ms=7_776_000_000),
        "rate_limit": ka.RateLimit(requests=100, period_seconds=3600, burst=1_000_000),
        "api_key": key,
        "get_request": ka.GetKeyRequest(id="key_1"),
        "get_response": ka.GetKeyResponse(key=key),
        "list_request": ka.ListKeysRequest(page_size=2**32 - 1, page_token=unicode),
        "list_response": ka.ListKeysResponse(keys=[key, ka.ApiKey()], next_page_token="next"),
        "permission_set": ka.PermissionSet(names=["a", ""]),
        "network_list": ka.NetworkList(networks=["192.0.2.0/24", ""]),
        "update_response": ka.UpdateKeyResponse(key=key),
        "set_enabled_request": ka.SetKeyEnabledRequest(id="key_1", enabled=True),
        "set_enabled_response": ka.SetKeyEnabledResponse(key=key),
        "rotate_request": ka.RotateKeyRequest(id="key_1", grace_seconds=604_800),
        "rotate_response": ka.RotateKeyResponse(key=key, secret="dbm_new"),
        "delete_request": ka.DeleteKeyRequest(id="key_1"),
        "delete_response": ka.DeleteKeyResponse(),
        "permissions_request": ka.ListPermissionsRequest(),
        "permissions_response": ka.ListPermissionsResponse(
            permissions=[ka.Permission(name="jobs:read", description=unicode), ka.Permission()]),
        "permission": ka.Permission(name="vault:read", description="List encryption profiles"),
        "audit_request": ka.ListAuditEventsRequest(key_id="key_1", action="key.rotated", since_ms=-5,
                                                   until_ms=2**63 - 1, page_size=7, page_token="t"),
        "audit_response": ka.ListAuditEventsResponse(
            events=[ka.AuditEvent(seq=1, action="key.created", trigger="admin", actor="ops", detail=unicode)],
            next_page_token="n", oldest_retained_at_ms=1_700_000_000_000, retention_ms=2_592_000_000),
        "audit_event": ka.AuditEvent(
            seq=2**64 - 1, at_ms=1_700_000_000_123, action="api.request", trigger="api", key_id="key_1",
            key_name="ci", decision=az.DENY, reason=az.MISSING_PERMISSION, permissions=["jobs:write"],
            resource="POST /api/jobs/42/run", client_address="10.0.0.7"),
        "chain_request": ka.ExportAuditChainRequest(after_position=41, since_ms=1_700_000_000_000, page_size=50),
        "chain_response": ka.ExportAuditChainResponse(
            chain=ka.AuditChainState(anchor=ka.AuditChainPoint(position=40, hash=bytes([7]) * 32),
                                     head=ka.AuditChainPoint(position=42, hash=bytes([9]) * 32)),
            links=[ka.AuditLink(position=41, previous_hash=bytes([7]) * 32, hash=bytes([8]) * 32, events=[
                ka.AuditEvent(
                    seq=2**64 - 1, at_ms=1_700_000_000_123, action="api.request", trigger="api", key_id="key_1",
                    key_name="ci", decision=az.DENY, reason=az.MISSING_PERMISSION, permissions=["jobs:write"],
                    resource="POST /api/jobs/42/run", client_address="10.0.0.7")])]),
        "chain_point": ka.AuditChainPoint(position=3, hash=bytes([1, 2, 3])),
        "chain_state": ka.AuditChainState(head=ka.AuditChainPoint(position=1, hash=bytes([0]))),
        "chain_link": ka.AuditLink(position=1, hash=bytes([0xFF])),
        "admin_token": admin_token,
        "create_admin_token_request": ka.CreateAdminTokenRequest(
            name="deploy", scope=ka.KEYS, ceiling=["jobs:execute"], max_key_lifetime_ms=86_400_000,
            expires_at_ms=1_800_000_000_000),
        "create_admin_token_response": ka.CreateAdminTokenResponse(token=admin_token, secret="adm_x"),
        "list_admin_tokens_request": ka.ListAdminTokensRequest(),
        "list_admin_tokens_response": ka.ListAdminTokensResponse(tokens=[admin_token, ka.AdminToken()]),
        "revoke_admin_token_request": ka.RevokeAdminTokenRequest(name="deploy"),
        "revoke_admin_token_response": ka.RevokeAdminTokenResponse(),
        "who_am_i_request": ka.WhoAmIRequest(),
        "who_am_i_response": ka.WhoAmIResponse(token=admin_token),
    }


def main():
    proto_dir, work = sys.argv[1], sys.argv[2]
    compile_protos(proto_dir, os.path.join(work, "python"))
    failures = []
    expected_all = fixtures()
    for name, expected in expected_all.items():
        with open(os.path.join(work, f"{name}.swift.bin"), "rb") as f:
            data = f.read()
        parsed = type(expected)()
        parsed.ParseFromString(data)
        if parsed != expected:
            failures.append(f"{name}: parsed {parsed} but expected {expected}")
        with open(os.path.join(work, f"{name}.python.bin"), "wb") as f:
            f.write(expected.SerializeToString())
    if failures:
        sys.exit("interop: official runtime read different values:\n" + "\n".join(failures))
    print(f"interop: {len(expected_all)} messages read by the official runtime as written")


if __name__ == "__main__":
    main()
