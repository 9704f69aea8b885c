"""Writes the fuzzer's seed corpus: real frames and real messages, made by the official protobuf
runtime from proto/. Usage: make_seeds.py PROTO_DIR WORK_DIR OUT_DIR

Each seed is one selector byte, then the bytes: selector 0 is a stream of frames (what the
server reads), 1.. one message each, in the order of `messageDecoders` in FuzzWire.swift.
"""
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "Tests", "interop"))
from wire_interop import compile_protos  # noqa: E402

# The order of messageDecoders in Sources/apikeys-fuzz/FuzzWire.swift.
MESSAGES = [
    "env.Envelope", "az.CheckRequest", "az.CheckResponse", "ka.CreateKeyRequest", "ka.CreateKeyResponse",
    "ka.GetKeyRequest", "ka.GetKeyResponse", "ka.ListKeysRequest", "ka.ListKeysResponse", "ka.UpdateKeyRequest",
    "ka.UpdateKeyResponse", "ka.PermissionSet", "ka.SetKeyEnabledRequest", "ka.SetKeyEnabledResponse",
    "ka.RotateKeyRequest", "ka.RotateKeyResponse", "ka.DeleteKeyRequest", "ka.DeleteKeyResponse",
    "ka.ListPermissionsRequest", "ka.ListPermissionsResponse", "ka.Permission", "ka.ApiKey", "ka.AuditEvent",
    "ka.ListAuditEventsRequest", "ka.ListAuditEventsResponse",
]


def main():
    proto_dir, work, out = sys.argv[1], sys.argv[2], sys.argv[3]
    compile_protos(proto_dir, os.path.join(work, "python"))
    from apikeys.v1 import authorize_pb2 as az
    from apikeys.v1 import envelope_pb2 as env
    from apikeys.v1 import keyadmin_pb2 as ka

    modules = {"env": env, "az": az, "ka": ka}
    secret = "dbm_" + "A" * 40 + "0ZqF1x"
    key = ka.ApiKey(id="key_0123456789abcdef", name="ci-pipeline", hint="dbm_AAAA…",
                    permissions=["jobs:read", "jobs:execute"], enabled=True, created_at_ms=1_700_000_000_000,
                    updated_at_ms=1_700_000_000_001, expires_at_ms=1_900_000_000_000)
    event = ka.AuditEvent(seq=42, at_ms=1_700_000_000_000, action="api.request", trigger="api", key_id=key.id,
                          key_name=key.name, decision=az.DENY, reason=az.MISSING_PERMISSION,
                          permissions=["vault:read"], resource="POST /api/jobs/42/run", client_address="10.0.0.7")
    samples = {
        "CheckRequest": az.CheckRequest(key=secret, permissions=["jobs:read"], resource="GET /api/jobs",
                                        client_address="192.0.2.1"),
        "CheckResponse": az.CheckResponse(decision=az.DENY, reason=az.MISSING_PERMISSION, http_status=403,
                                          key_id=key.id, missing_permissions=["vault:read"]),
        "CreateKeyRequest": ka.CreateKeyRequest(name="nightly", permissions=["storage:write"], expires_at_ms=1),
        "CreateKeyResponse": ka.CreateKeyResponse(key=key, secret=secret),
        "GetKeyRequest": ka.GetKeyRequest(id=key.id), "GetKeyResponse": ka.GetKeyResponse(key=key),
        "ListKeysRequest": ka.ListKeysRequest(page_size=50, page_token="17"),
        "ListKeysResponse": ka.ListKeysResponse(keys=[key, key], next_page_token="2"),
        "UpdateKeyRequest": ka.UpdateKeyRequest(id=key.id, name="renamed",
                                                permissions=ka.PermissionSet(names=["jobs:read"])),
        "UpdateKeyResponse": ka.UpdateKeyResponse(key=key),
        "PermissionSet": ka.PermissionSet(names=["jobs:read", "vault:read"]),
        "SetKeyEnabledRequest": ka.SetKeyEnabledRequest(id=key.id, enabled=True),
        "SetKeyEnabledResponse": ka.SetKeyEnabledResponse(key=key),
        "RotateKeyRequest": ka.RotateKeyRequest(id=key.id),
        "RotateKeyResponse": ka.RotateKeyResponse(key=key, secret=secret),
        "DeleteKeyRequest": ka.DeleteKeyRequest(id=key.id), "DeleteKeyResponse": ka.DeleteKeyResponse(),
        "ListPermissionsRequest": ka.ListPermissionsRequest(),
        "ListPermissionsResponse": ka.ListPermissionsResponse(
            permissions=[ka.Permission(name="jobs:read", description="Read jobs")]),
        "Permission": ka.Permission(name="jobs:read", description="Read jobs"), "ApiKey": key,
        "AuditEvent": event,
        "ListAuditEventsRequest": ka.ListAuditEventsRequest(key_id=key.id, action="api.request", since_ms=1,
                                                            until_ms=2, page_size=10, page_token="99"),
        "ListAuditEventsResponse": ka.ListAuditEventsResponse(events=[event], next_page_token="41",
                                                              oldest_retained_at_ms=1, retention_ms=2),
    }
    admin = {"authorization": "Bearer adm_" + "B" * 46}
    methods = {"CheckRequest": "/apikeys.v1.Authorize/Check"}
    for name in ["CreateKey", "GetKey", "ListKeys", "UpdateKey", "SetKeyEnabled", "RotateKey", "DeleteKey",
                 "ListPermissions", "ListAuditEvents"]:
        methods[name + "Request"] = "/apikeys.v1.KeyAdmin/" + name

    os.makedirs(out, exist_ok=True)

    def write(name, data):
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)

    frames = b""
    for call_id, (request, method) in enumerate(methods.items(), start=1):
        envelope = env.Envelope(call_id=call_id, method=method, payload=samples[request].SerializeToString(),
                                timeout_ms=1500)
        if "KeyAdmin" in method:
            envelope.metadata.update(admin)
        body = envelope.SerializeToString()
        frame = struct.pack(">I", len(body)) + body
        frames += frame
        write(f"frame-{request}", b"\x00" + frame)
        write(f"message-Envelope-{request}", bytes([MESSAGES.index("env.Envelope") + 1]) + body)
    write("frames-all", b"\x00" + frames)
    for index, qualified in enumerate(MESSAGES, start=1):
        name = qualified.split(".")[1]
        message = samples.get(name)
        if message is not None:
            write(f"message-{name}", bytes([index]) + message.SerializeToString())
    print(f"fuzz seeds: {len(os.listdir(out))} files in {out}")


if __name__ == "__main__":
    main()
