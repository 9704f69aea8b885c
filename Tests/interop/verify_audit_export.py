#!/usr/bin/env python3
"""Verifies an `apikey audit export --format jsonl` file as an external system would, from the
format docs/PROTOCOL.md describes ("Audit hash chain"), with nothing of apikeyd's code.

Usage: verify_audit_export.py EXPORT.jsonl   (exit 0: the chain holds; 1: the first break is printed)
"""
import hashlib
import json
import struct
import sys


def text(value):
    data = value.encode("utf-8")
    return struct.pack("<I", len(data)) + data


def event_bytes(e):
    permissions = " ".join(p for p in " ".join(e["permissions"]).split(" ") if p)
    out = struct.pack("<QqI", e["seq"], e["at_ms"], e["reason_code"])
    for field in (e["action"], e["key_id"], e["key_name"], e["actor"], e["detail"], permissions,
                  e["resource"], e["client_address"]):
        out += text(field)
    return out


def main(path):
    lines = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    chain = lines[0]
    assert chain["type"] == "chain", "the first line is not the chain's state"
    previous = None
    position = None
    events = []
    for line in lines[1:]:
        if line["type"] == "event":
            events.append(line)
            continue
        if previous is None:  # the first link: from the hash the export gives for the one before it
            previous, position = bytes.fromhex(line["previous_hash"]), line["position"] - 1
        if line["position"] != position + 1:
            return f"link {position + 1} is missing"
        if any(e["link"] != line["position"] for e in events):
            return f"link {line['position']}: events of another link"
        digest = hashlib.sha256(b"".join(event_bytes(e) for e in sorted(events, key=lambda e: e["seq"]))).digest()
        if hashlib.sha256(previous + digest).hexdigest() != line["hash"]:
            return f"link {line['position']}: its events do not hash to its recorded hash"
        previous, position, events = bytes.fromhex(line["hash"]), line["position"], []
    if position is not None and (position != chain["head"]["position"] or previous.hex() != chain["head"]["hash"]):
        return f"the export ends at link {position}, not at the head {chain['head']['position']}"
    print(f"verified up to link {position}")
    return None


if __name__ == "__main__":
    problem = main(sys.argv[1])
    if problem:
        print(problem)
        sys.exit(1)
