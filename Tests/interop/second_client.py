"""An independent client of the apikeyd wire contract, built only from proto/ and the official
protobuf runtime. Usage: second_client.py PROTO_DIR WORK_DIR PORT ADMIN_TOKEN [CA_FILE [CERT KEY]]

With CA_FILE it speaks TLS (Python's ssl module), verifying the server's certificate for 127.0.0.1
against CA_FILE; with CERT and KEY it presents that client certificate (mutual TLS).

Creates a key over the real protocol, checks its format with zlib's CRC-32, then checks it: allowed
for a granted permission, 403 MISSING_PERMISSION for another, 401 UNKNOWN_KEY for a well-formed
stranger and 401 MALFORMED_KEY for a tampered copy.
"""
import os
import random
import socket
import ssl
import struct
import sys
import zlib

from wire_interop import compile_protos


ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def check_digits(head):
    value = zlib.crc32(head.encode("ascii"))
    digits = ""
    for _ in range(6):
        digits = ALPHABET[value % 62] + digits
        value //= 62
    return digits


def main():
    proto_dir, work, port, token = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    ca_file = sys.argv[5] if len(sys.argv) > 5 else None
    client_cert = sys.argv[6:8] if len(sys.argv) > 7 else None
    compile_protos(proto_dir, os.path.join(work, "python"))
    from apikeys.v1 import authorize_pb2 as az
    from apikeys.v1 import envelope_pb2 as env
    from apikeys.v1 import keyadmin_pb2 as ka

    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if ca_file:
        context = ssl.create_default_context(cafile=ca_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if client_cert:
            context.load_cert_chain(*client_cert)
        sock = context.wrap_socket(sock, server_hostname="127.0.0.1")

    def read_exact(n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                sys.exit("server closed the connection")
            data += chunk
        return data

    def call(call_id, method, request, reply_type, metadata=None):
        envelope = env.Envelope(call_id=call_id, method=method, payload=request.SerializeToString())
        for key, value in (metadata or {}).items():
            envelope.metadata[key] = value
        body = envelope.SerializeToString()
        sock.sendall(struct.pack(">I", len(body)) + body)
        (length,) = struct.unpack(">I", read_exact(4))
        reply = env.Envelope()
        reply.ParseFromString(read_exact(length))
        assert reply.call_id == call_id, reply
        assert reply.status == 0, f"{method}: status {reply.status} {reply.status_message}"
        message = reply_type()
        message.ParseFromString(reply.payload)
        return message

    created = call(1, "/apikeys.v1.KeyAdmin/CreateKey",
                   ka.CreateKeyRequest(name="python-client", permissions=["jobs:read"]),
                   ka.CreateKeyResponse, {"authorization": f"Bearer {token}"})
    assert created.secret.startswith("dbm_") and len(created.secret) == 50, created
    assert created.key.name == "python-client" and list(created.key.permissions) == ["jobs:read"]

    allowed = call(2, "/apikeys.v1.Authorize/Check",
                   az.CheckRequest(key=created.secret, permissions=["jobs:read"], resource="GET /py"),
                   az.CheckResponse)
    assert allowed.decision == az.ALLOW and allowed.http_status == 200, allowed
    assert allowed.key_id == created.key.id, allowed

    denied = call(3, "/apikeys.v1.Authorize/Check",
                  az.CheckRequest(key="Bearer " + created.secret, permissions=["vault:read"]), az.CheckResponse)
    assert denied.decision == az.DENY and denied.reason == az.MISSING_PERMISSION, denied
    assert denied.http_status == 403 and list(denied.missing_permissions) == ["vault:read"], denied

    # The key format of docs/PROTOCOL.md section 5, checked with zlib's CRC-32.
    assert created.secret[-6:] == check_digits(created.secret[:-6]), created.secret
    stranger_head = "dbm_" + "".join(random.choice(ALPHABET) for _ in range(40))
    stranger = stranger_head + check_digits(stranger_head)
    unknown = call(4, "/apikeys.v1.Authorize/Check", az.CheckRequest(key=stranger), az.CheckResponse)
    assert unknown.decision == az.DENY and unknown.reason == az.UNKNOWN_KEY and unknown.http_status == 401, unknown
    tampered = created.secret[:-1] + ("0" if created.secret[-1] != "0" else "1")
    malformed = call(5, "/apikeys.v1.Authorize/Check", az.CheckRequest(key=tampered), az.CheckResponse)
    assert malformed.reason == az.MALFORMED_KEY and malformed.http_status == 401, malformed
    transport = f"TLS ({sock.version()})" if ca_file else "plain TCP"
    print(f"second client: create + 4 checks answered as the contract says, over {transport}")


if __name__ == "__main__":
    main()
