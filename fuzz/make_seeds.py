"""Writes the fuzzer's seed corpus: real frames and real messages, made by the official protobuf
runtime from proto/. Usage: make_seeds.py PROTO_DIR WORK_DIR OUT_DIR

Each seed is one selector byte, then the bytes: selector 0 is a stream of frames (what the
server reads), 1.. one message each, in the order of `WireContract.messageTypes` (generated from
proto/ into Sources/APIKeysWire/Generated/WireContract.swift), which the fuzzer follows too. A
message without a hand-made sample below gets one with every field set, from its descriptor.
"""
import os
import re
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "Tests", "interop"))
from wire_interop import compile_protos  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CONTRACT = os.path.join(ROOT, "Sources", "APIKeysWire", "Generated", "WireContract.swift")


def contract_messages():
    """The message names of WireContract.messageTypes, in its order."""
    text = open(CONTRACT, encoding="utf-8").read()
    body = text[text.index("messageTypes"):]
    body = body[body.index("= [") + 3:]
    body = body[:body.index("]")]
    return re.findall(r"(\w+)\.self", body)


def filled(message_class, depth=0):
    """A message with every field set (repeated fields twice), from its descriptor."""
    from google.protobuf import message_factory
    from google.protobuf.descriptor import FieldDescriptor as F
    message = message_class()
    for field in message_class.DESCRIPTOR.fields:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            getattr(message, field.name)["k"] = "v" if field.message_type.fields_by_name["value"].type == F.TYPE_STRING else 1
            continue
        if field.type == F.TYPE_MESSAGE:
            if depth > 2:
                continue
            sub = filled(message_factory.GetMessageClass(field.message_type), depth + 1)
            if _repeated(field):
                getattr(message, field.name).extend([sub, sub])
            else:
                getattr(message, field.name).CopyFrom(sub)
            continue
        value = {F.TYPE_STRING: "jobs:read", F.TYPE_BYTES: bytes(range(32)), F.TYPE_BOOL: True,
                 F.TYPE_ENUM: (field.enum_type.values[-1].number if field.enum_type else 1)}.get(field.type, 7)
        if field.type in (F.TYPE_INT32, F.TYPE_INT64, F.TYPE_SINT32, F.TYPE_SINT64, F.TYPE_SFIXED32,
                          F.TYPE_SFIXED64):
            value = -7
        if _repeated(field):
            getattr(message, field.name).extend([value, value])
        else:
            setattr(message, field.name, value)
    return message


def _repeated(field):
    return field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED


def main():
    proto_dir, work, out = sys.argv[1], sys.argv[2], sys.argv[3]
    compile_protos(proto_dir, os.path.join(work, "python"))
    from apikeys.v1 import authorize_pb2 as az
    from apikeys.v1 import envelope_pb2 as env
    from apikeys.v1 import keyadmin_pb2 as ka

    modules = {"env": env, "az": az, "ka": ka}
    messages = contract_messages()
    missing = [n for n in messages if not any(hasattr(m, n) for m in modules.values())]
    assert not missing, f"messages of the contract not found in proto/: {missing}"
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
    # Every method of every service of proto/, with its request type.
    methods = {}
    for module in modules.values():
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                methods[f"/{service.full_name}/{method.name}"] = method.input_type.name

    os.makedirs(out, exist_ok=True)

    def write(name, data):
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)

    frames = b""
    for call_id, (method, request) in enumerate(methods.items(), start=1):
        message_class = next(getattr(m, request) for m in modules.values() if hasattr(m, request))
        payload = samples[request] if request in samples else filled(message_class)
        envelope = env.Envelope(call_id=call_id, method=method, payload=payload.SerializeToString(),
                                timeout_ms=1500)
        if "KeyAdmin" in method:
            envelope.metadata.update(admin)
        body = envelope.SerializeToString()
        frame = struct.pack(">I", len(body)) + body
        frames += frame
        name = method.rsplit("/", 1)[1]
        write(f"frame-{name}", b"\x00" + frame)
        write(f"message-Envelope-{name}", bytes([messages.index("Envelope") + 1]) + body)
    write("frames-all", b"\x00" + frames)
    # Check calls in a row as a service sends them: the same request again, then ones that
    # differ from the one before in a single byte (its last, its first field's, one between), for
    # the codec's memory of the previous request (CheckCallCodec) to tell apart.
    check = samples["CheckRequest"]
    alike = [check, check, az.CheckRequest(key=check.key, permissions=check.permissions, resource=check.resource,
                                           client_address="192.0.2.2"),
             az.CheckRequest(key=check.key[:-1] + "y", permissions=check.permissions, resource=check.resource,
                             client_address="192.0.2.2"),
             az.CheckRequest(key=check.key[:-1] + "y", permissions=["jobs:reae"], resource=check.resource,
                             client_address="192.0.2.2"),
             check, check]
    checks = b""
    for call_id, request in enumerate(alike, start=1):
        body = env.Envelope(call_id=call_id, method="/apikeys.v1.Authorize/Check",
                            payload=request.SerializeToString()).SerializeToString()
        checks += struct.pack(">I", len(body)) + body
    write("frames-checks-alike", b"\x00" + checks)
    for index, name in enumerate(messages, start=1):
        message_class = next(getattr(m, name) for m in modules.values() if hasattr(m, name))
        write(f"message-{name}-filled", bytes([index]) + filled(message_class).SerializeToString())
        if name in samples:
            write(f"message-{name}", bytes([index]) + samples[name].SerializeToString())
    print(f"fuzz seeds: {len(os.listdir(out))} files in {out}")


if __name__ == "__main__":
    main()
