#!/usr/bin/env python3
"""Verifies an `apikey audit export --format jsonl` file as an external system would, from the
format docs/PROTOCOL.md describes ("Audit hash chain"), with nothing of apikeyd's code.

Usage: verify_audit_export.py [--partial] EXPORT.jsonl
  exit 0: the chain holds; 1: the first break is printed.
  --partial: the export was made with --since, so it may start after the anchor.

What is checked: the first link follows the anchor (its previous hash is the anchor's hash, or
32 zero bytes for anchor 0) unless --partial; positions have no gap; each link's events are its
own, as many as it says, and hash to its recorded hash; no event follows the last link; the
walk ends at the head (an export with no link is whole only when the head is the anchor); and
when the anchor is not 0, the newest audit.pruned event names it.
"""
import hashlib
import json
import re
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


PRUNED = re.compile(r"the chain now starts after link (\d+), hash ([0-9a-f]{64})")
GAPS = re.compile(r"events of links (.*?) removed, their hashes kept")


def main(path, partial=False):
    lines = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    if not lines or lines[0].get("type") != "chain":
        return "the first line is not the chain's state"
    chain = lines[0]
    anchor, head = chain["anchor"], chain["head"]
    previous = None
    position = None
    links = 0
    events = []
    pruned = None  # the newest audit.pruned event's anchor sentence
    gaps, named_gaps = [], set()  # links read as gaps; positions audit.pruned events name as emptied
    for line in lines[1:]:
        if line["type"] == "event":
            events.append(line)
            if line["action"] == "audit.pruned" and PRUNED.search(line["detail"]):
                pruned = PRUNED.search(line["detail"])
            if line["action"] == "audit.pruned" and GAPS.search(line["detail"]):
                for part in GAPS.search(line["detail"]).group(1).split(", "):
                    low, high = (int(x) for x in part.split("\u2013"))
                    named_gaps.add((low, high))
            continue
        if line["type"] != "link":
            return f"a line of unknown type {line['type']!r}"
        if previous is None:
            previous, position = bytes.fromhex(line["previous_hash"]), line["position"] - 1
            if position == anchor["position"]:
                if previous.hex() != anchor["hash"]:
                    return f"link {line['position']} does not follow the anchor (link {anchor['position']})"
            elif not partial:
                return (f"the export starts at link {line['position']}, not after the anchor "
                        f"(link {anchor['position']}): links are missing at the front")
        if line.get("pruned_from"):
            # A gap: retention emptied links pruned_from..position; only this hash is kept.
            if line["pruned_from"] > position + 1 or line["position"] <= position:
                return f"link {line['position']}: a gap that does not follow link {position}"
            if events or line["events"] != 0:
                return f"link {line['position']}: a gap with events"
            gaps.append((position + 1, line["position"]))
            previous, position = bytes.fromhex(line["hash"]), line["position"]
            links += 1
            continue
        if line["position"] != position + 1:
            return f"link {position + 1} is missing"
        if any(e["link"] != line["position"] for e in events):
            return f"link {line['position']}: events of another link"
        if len(events) != line["events"]:
            return f"link {line['position']}: {len(events)} events, the link says {line['events']}"
        digest = hashlib.sha256(b"".join(event_bytes(e) for e in sorted(events, key=lambda e: e["seq"]))).digest()
        if hashlib.sha256(previous + digest).hexdigest() != line["hash"]:
            return f"link {line['position']}: its events do not hash to its recorded hash"
        previous, position, events = bytes.fromhex(line["hash"]), line["position"], []
        links += 1
    if events:
        return f"{len(events)} events after the last link, in no link"
    if links == 0:
        if head["position"] != anchor["position"] or head["hash"] != anchor["hash"]:
            return f"no link, but the head is link {head['position']}"
    elif position != head["position"] or previous.hex() != head["hash"]:
        return f"the export ends at link {position}, not at the head {head['position']}"
    for low, high in gaps:
        covered = low
        for named_low, named_high in sorted(named_gaps):
            if named_low <= covered <= named_high:
                covered = named_high + 1
        if covered <= high:
            return f"links {low}-{high} have no events and no audit.pruned event records their pruning"
    if anchor["position"] != 0 and not partial:
        if pruned is None:
            return f"the anchor is link {anchor['position']}, and no audit.pruned event names it"
        if int(pruned.group(1)) != anchor["position"] or pruned.group(2) != anchor["hash"]:
            return f"the newest audit.pruned event names link {pruned.group(1)}, not the anchor {anchor['position']}"
    print(f"verified {links} links, up to link {head['position']}")
    return None


if __name__ == "__main__":
    arguments = sys.argv[1:]
    partial = "--partial" in arguments
    files = [a for a in arguments if a != "--partial"]
    if len(files) != 1:
        print(__doc__)
        sys.exit(2)
    problem = main(files[0], partial)
    if problem:
        print(problem)
        sys.exit(1)
