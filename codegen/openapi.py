#!/usr/bin/env python3
"""The HTTP admin API's OpenAPI 3.1 document, written once here as data.

    codegen/openapi.py OUT_DIR   writes OUT_DIR/openapi.json (committed as docs/openapi.json) and
                                 OUT_DIR/OpenAPIDocument.swift (Sources/APIKeysAdminAPI/Generated),
                                 the same bytes the server serves at GET /openapi.json.

codegen/generate.sh runs it and, with --check, fails when either committed file is stale.
"""
import json
import os
import sys

PROBLEM = {"$ref": "#/components/responses/Problem"}


def obj(properties, required=(), description=None, extra=False):
    schema = {"type": "object", "properties": properties, "additionalProperties": extra}
    if required:
        schema["required"] = list(required)
    if description:
        schema["description"] = description
    return schema


def ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


def string(description=None, **more):
    schema = {"type": "string", **more}
    if description:
        schema["description"] = description
    return schema


def integer(description=None, fmt="int64", **more):
    """`fmt` None: an unsigned 32-bit number (no standard format names it; the bounds say it)."""
    schema = {"type": "integer", **({"format": fmt} if fmt else {}), **more}
    if description:
        schema["description"] = description
    return schema


def strings(description=None, **more):
    schema = {"type": "array", "items": {"type": "string"}, **more}
    if description:
        schema["description"] = description
    return schema


def time_pair(name, what):
    """A time as the contract's JSON gives it: milliseconds, and RFC 3339 beside it when set."""
    return {
        f"{name}_ms": integer(f"{what}, in milliseconds since 1970 (0: not set)."),
        name: string(f"{what}, RFC 3339 UTC; absent when not set.", format="date-time"),
    }


def json_body(schema, required=True):
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def json_response(description, schema):
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def errors(*statuses):
    return {str(status): PROBLEM for status in statuses} | {"default": PROBLEM}


def operation(op_id, summary, scope, responses, description=None, parameters=(), body=None):
    result = {
        "operationId": op_id,
        "summary": summary,
        "description": (description + "\n\n" if description else "") + f"Admin token scope: `{scope}`.",
        "responses": responses | errors(400, 401, 403, 429),
    }
    if parameters:
        result["parameters"] = list(parameters)
    if body:
        result["requestBody"] = body
    return result


def query(name, description, schema):
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def path_param(name, description):
    return {"name": name, "in": "path", "required": True, "description": description, "schema": {"type": "string"}}


NAME = string("1 to 100 characters, unique.", minLength=1, maxLength=100)
KEY_ID = path_param("id", "The key's id (`key_…`).")
IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "A retry with the same key, token and body returns the first answer and creates nothing "
    "(kept 24 h in the answering server's memory); the same key with another body is 422, one still running 409.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}
PAGE = [
    query("page_size", "At most this many (0 or absent: the server's default).", integer(fmt=None, minimum=0, maximum=4294967295)),
    query("page_token", "The `next_page_token` of the previous page.", string()),
]

SCHEMAS = {
    "RateLimit": obj(
        {
            "requests": integer("Checks allowed per period; 0 in an update removes the limit.", fmt=None, minimum=0, maximum=4294967295),
            "period_seconds": integer("The period (default 1 s).", fmt=None, minimum=0, maximum=4294967295),
            "burst": integer("Checks allowed at once (default: requests).", fmt=None, minimum=0, maximum=4294967295),
        },
        required=["requests"],
        description="A key's rate limit, counted by each server on its own.",
    ),
    "Key": obj(
        {
            "id": string("The key's id."),
            "name": string(),
            "hint": string("The secret's first characters, to recognise it; never the secret."),
            "permissions": strings(),
            "enabled": {"type": "boolean"},
            **time_pair("created_at", "Created"),
            **time_pair("updated_at", "Last changed"),
            **time_pair("expires_at", "Expires"),
            **time_pair("last_used_at", "Last allowed check"),
            **time_pair("rotated_at", "Last rotated"),
            **time_pair("grace_ends_at", "Until when the secret replaced by the last rotation is accepted"),
            "allowed_networks": strings("Networks checks may come from; empty: anywhere."),
            "rate_limit": ref("RateLimit"),
            "remaining_uses": integer("Usage credits left; absent: unlimited."),
        },
        required=[
            "id", "name", "hint", "permissions", "enabled", "created_at_ms", "updated_at_ms", "expires_at_ms",
            "last_used_at_ms", "rotated_at_ms", "grace_ends_at_ms", "allowed_networks",
        ],
        description="An API key, never its secret.",
    ),
    "IssuedKey": obj(
        {"key": ref("Key"), "secret": string("The key's secret, shown this once: store it now.")},
        required=["key", "secret"],
    ),
    "KeyPage": obj(
        {"keys": {"type": "array", "items": ref("Key")}, "next_page_token": string("Empty on the last page.")},
        required=["keys", "next_page_token"],
    ),
    "Permission": obj({"name": string(), "description": string()}, required=["name", "description"]),
    "AuditEvent": obj(
        {
            "seq": integer("The event's place in the trail.", fmt="int64", minimum=0),
            "at_ms": integer("When, in milliseconds since 1970."),
            "at": string("When, RFC 3339 UTC.", format="date-time"),
            "action": string("`key.created`, `api.request`, `admin.permission_denied`…"),
            "trigger": string("`admin`, `api`, `system`…"),
            "key_id": string(),
            "key_name": string(),
            "actor": string("The admin token's name, for admin events."),
            "detail": string(),
            "decision": string("`allow` or `deny` for checks, else empty."),
            "reason": string("A DenyReason name when denied (`MISSING_PERMISSION`)."),
            "resource": string(),
            "client_address": string(),
            "permissions": strings(),
        },
        required=[
            "seq", "at_ms", "action", "trigger", "key_id", "key_name", "actor", "detail", "decision", "reason",
            "resource", "client_address", "permissions",
        ],
    ),
    "AuditPage": obj(
        {
            "events": {"type": "array", "items": ref("AuditEvent")},
            "next_page_token": string("Empty on the last page."),
            "oldest_retained_at_ms": integer("The oldest event retention kept (0: nothing pruned yet)."),
            "retention_ms": integer("How long events are kept (0: forever)."),
        },
        required=["events", "next_page_token", "oldest_retained_at_ms", "retention_ms"],
    ),
    "ChainPoint": obj(
        {"position": integer(fmt="int64", minimum=0), "hash": string("SHA-256, lowercase hex.")},
        required=["position", "hash"],
    ),
    "ChainLink": obj(
        {
            "position": integer(fmt="int64", minimum=0),
            "previous_hash": string(),
            "hash": string(),
            "events": {"type": "array", "items": ref("AuditEvent")},
            "pruned_from": integer(
                "Present for a gap: retention emptied the links from this position through this one "
                "(checks, while older history is kept); only this link's hash is left, with no events.",
                minimum=1,
            ),
        },
        required=["position", "previous_hash", "hash", "events"],
    ),
    "ChainVerification": obj(
        {
            "verified": {"type": "boolean"},
            "links": integer("Links verified.", minimum=0),
            "events": integer("Events verified.", minimum=0),
            "head_position": integer("The head the walk reached.", minimum=0),
            "broken_at": integer("Where it does not hold (only when not verified).", minimum=0),
            "reason": string("Why it does not hold (only when not verified)."),
            "checked_at_ms": integer("When the walk ended, in milliseconds since 1970; a verdict is answered "
                                     "again for a minute.", minimum=0),
            "checked_at": string("When the walk ended, RFC 3339 UTC.", format="date-time"),
        },
        required=["verified", "links", "events", "head_position", "checked_at_ms"],
        description="A client that does not trust the server verifies the export itself (GET /v1/audit-chain).",
    ),
    "AuditChainPage": obj(
        {
            "anchor": ref("ChainPoint"),
            "head": ref("ChainPoint"),
            "links": {"type": "array", "items": ref("ChainLink")},
        },
        required=["anchor", "head", "links"],
        description="Whole links of the audit trail's hash chain (docs/PROTOCOL.md says how to verify them).",
    ),
    "Policy": obj(
        {"max_key_lifetime_ms": integer("The server's maximum key lifetime; 0: none.")},
        required=["max_key_lifetime_ms"],
    ),
    "AdminToken": obj(
        {
            "name": string(),
            "scope": string(enum=["read", "keys", "admin"]),
            "ceiling": strings("scope keys: the only permissions its keys may hold; empty: any."),
            "max_key_lifetime_ms": integer("scope keys: keys it creates must expire within this; 0: no limit of its own."),
            **time_pair("created_at", "Created"),
            **time_pair("expires_at", "Stops working"),
            **time_pair("last_used_at", "The last call made with it, to within a minute"),
        },
        required=["name", "scope", "ceiling", "max_key_lifetime_ms", "created_at_ms", "expires_at_ms", "last_used_at_ms"],
        description="An admin token, never its secret.",
    ),
    "IssuedAdminToken": obj(
        {"token": ref("AdminToken"), "secret": string("The token's secret (`adm_…`), shown this once.")},
        required=["token", "secret"],
    ),
    "Check": obj(
        {
            "decision": string(enum=["ALLOW", "DENY"]),
            "http_status": integer("200, 401 or 403, as forward-auth answers.", fmt=None, minimum=0),
            "reason": string("A DenyReason name when denied."),
            "key_id": string(),
            "key_name": string(),
            "missing_permissions": strings(),
        },
        required=["decision", "http_status", "key_id", "key_name", "missing_permissions"],
    ),
    "Problem": obj(
        {
            "type": string("`urn:apikeyd:problem:<status>`."),
            "title": string("The HTTP status's reason phrase."),
            "status": {"type": "integer", "description": "The HTTP status."},
            "detail": string("What went wrong, for the caller; never a path, SQL or internals."),
            "code": string("The contract's status name (`PERMISSION_DENIED`, `INVALID_ARGUMENT`…)."),
        },
        required=["type", "title", "status", "detail", "code"],
        description="RFC 9457 problem details.",
    ),
    "CreateKey": obj(
        {
            "name": NAME,
            "permissions": strings("At least one, from GET /v1/permissions.", minItems=1),
            "expires_at": string("RFC 3339; absent: never (or the server's maximum lifetime).", format="date-time"),
            "allowed_networks": strings("CIDR networks checks may come from; absent or empty: anywhere."),
            "rate_limit": ref("RateLimit"),
            "remaining_uses": integer("Usage credits (0 to 2^53); absent: unlimited."),
        },
        required=["name", "permissions"],
    ),
    "UpdateKey": obj(
        {
            "name": NAME,
            "permissions": strings("Replaces the whole set; at least one.", minItems=1),
            "expires_at": {"type": ["string", "null"], "format": "date-time", "description": "null: never expires."},
            "allowed_networks": strings("Replaces the list; empty: anywhere."),
            "rate_limit": {"anyOf": [ref("RateLimit"), {"type": "null"}], "description": "null: no limit."},
            "remaining_uses": {"type": ["integer", "null"], "format": "int64", "description": "Refills the credits; null or -1: unlimited."},
        },
        description="Absent fields are unchanged.",
    ),
    "RotateKey": obj(
        {"grace_seconds": integer("How long the old secret keeps working (0: dead at once).", fmt=None, minimum=0, maximum=4294967295)},
    ),
    "CreateAdminToken": obj(
        {
            "name": NAME,
            "scope": string(enum=["read", "keys", "admin"]),
            "ceiling": strings("scope keys: the only permissions its keys may hold."),
            "max_key_lifetime_seconds": integer("scope keys: keys it creates must expire within this.", minimum=1),
            "expires_at": string("When it stops working; absent: never.", format="date-time"),
        },
        required=["name", "scope"],
        description="No token can create a token with more than it holds.",
    ),
    "CheckRequest": obj(
        {
            "key": string("The API key's secret."),
            "permissions": strings("What the caller wants to do."),
            "resource": string("Recorded in the audit trail."),
            "client_address": string("The caller's IP address, for allowlists."),
        },
        required=["key"],
    ),
}

PATHS = {
    "/v1/keys": {
        "post": operation(
            "createKey", "Create a key; its secret is in the answer, once", "keys",
            {"201": json_response("The key and its secret.", ref("IssuedKey"))} | errors(409, 413, 415, 422),
            parameters=[IDEMPOTENCY], body=json_body(ref("CreateKey")),
        ),
        "get": operation(
            "listKeys", "List keys, a page at a time", "read",
            {"200": json_response("A page of keys.", ref("KeyPage"))},
            parameters=[
                query("name_contains", "Only keys whose name holds this, ignoring case. A search reads at most "
                      "10,000 keys per request: follow next_page_token (a page may then hold fewer keys than "
                      "page_size, or none).", string(maxLength=100)),
                *PAGE,
            ],
        ),
    },
    "/v1/keys/{id}": {
        "get": operation("getKey", "One key", "read", {"200": json_response("The key.", ref("Key"))} | errors(404),
                         parameters=[KEY_ID]),
        "patch": operation(
            "updateKey", "Change a key's name, permissions, expiry, networks, rate limit or credits", "keys",
            {"200": json_response("The key as changed.", ref("Key"))} | errors(404, 413, 415),
            parameters=[KEY_ID], body=json_body(ref("UpdateKey")),
        ),
        "delete": operation("deleteKey", "Delete a key: its secret is dead once this returns", "keys",
                            {"204": {"description": "Deleted."}} | errors(404), parameters=[KEY_ID]),
    },
    "/v1/keys/{id}/enable": {
        "post": operation("enableKey", "Enable a key", "keys", {"200": json_response("The key.", ref("Key"))} | errors(404),
                          parameters=[KEY_ID]),
    },
    "/v1/keys/{id}/disable": {
        "post": operation("disableKey", "Disable a key: refused from the moment this returns", "keys",
                          {"200": json_response("The key.", ref("Key"))} | errors(404), parameters=[KEY_ID]),
    },
    "/v1/keys/{id}/rotate": {
        "post": operation(
            "rotateKey", "Give a key a new secret; the old one is dead at once unless a grace is given", "keys",
            {"200": json_response("The key and its new secret, shown once.", ref("IssuedKey"))} | errors(404, 413, 415),
            parameters=[KEY_ID], body=json_body(ref("RotateKey"), required=False),
        ),
    },
    "/v1/permissions": {
        "get": operation("listPermissions", "The permission catalog", "read",
                         {"200": json_response("Every permission.", {"type": "array", "items": ref("Permission")})}),
    },
    "/v1/audit-events": {
        "get": operation(
            "listAuditEvents", "The audit trail, newest first", "read",
            {"200": json_response("A page of events.", ref("AuditPage"))},
            parameters=[
                query("key_id", "Only this key's events.", string()),
                query("action", "Only this action (`key.created`, `api.request`…).", string()),
                query("since", "Only events at or after this (RFC 3339).", string(format="date-time")),
                query("until", "Only events before this (RFC 3339).", string(format="date-time")),
                *PAGE,
            ],
        ),
    },
    "/v1/audit-chain": {
        "get": operation(
            "exportAuditChain", "The audit trail's hash chain, whole links at a time", "read",
            {"200": json_response("A page of links.", ref("AuditChainPage"))},
            parameters=[
                query("after_position", "Links after this position (0: from the start).",
                      integer(fmt="int64", minimum=0)),
                query("since", "Start at the link holding this time (RFC 3339).", string(format="date-time")),
                PAGE[0],
            ],
        ),
    },
    "/v1/audit-chain/verify": {
        "get": operation(
            "verifyAuditChain", "The server walks its own audit chain, anchor to head, and says whether it holds", "read",
            {"200": json_response("The verdict; a broken chain is an answer, not an error.", ref("ChainVerification"))}
            | errors(409),
        ),
    },
    "/v1/policy": {
        "get": operation("getPolicy", "The server's key policies", "read", {"200": json_response("The policies.", ref("Policy"))}),
    },
    "/v1/whoami": {
        "get": operation("whoAmI", "The calling admin token", "read", {"200": json_response("The token.", ref("AdminToken"))}),
    },
    "/v1/admin-tokens": {
        "get": operation("listAdminTokens", "Every admin token, never a secret", "admin",
                         {"200": json_response("The tokens.", {"type": "array", "items": ref("AdminToken")})}),
        "post": operation(
            "createAdminToken", "Create an admin token; its secret is in the answer, once", "admin",
            {"201": json_response("The token and its secret.", ref("IssuedAdminToken"))} | errors(409, 413, 415, 422),
            parameters=[IDEMPOTENCY], body=json_body(ref("CreateAdminToken")),
        ),
    },
    "/v1/admin-tokens/{name}": {
        "delete": operation(
            "revokeAdminToken", "Revoke an admin token: refused from the moment this returns", "admin",
            {"204": {"description": "Revoked."}} | errors(404), parameters=[path_param("name", "The token's name.")],
        ),
    },
    "/v1/check": {
        "post": operation(
            "check", "A Check decision, as the RPC port answers it (recorded in the audit trail)", "read",
            {"200": json_response("The decision; a denial is an answer, not an error.", ref("Check"))} | errors(413, 415),
            body=json_body(ref("CheckRequest")),
        ),
    },
    "/openapi.json": {
        "get": {
            "operationId": "openAPIDocument",
            "summary": "This document",
            "security": [],
            "responses": {"200": {"description": "The OpenAPI document.", "content": {"application/json": {"schema": {"type": "object"}}}}}
            | errors(429),
        },
    },
}

DOCUMENT = {
    "openapi": "3.1.0",
    "info": {
        "title": "apikeyd admin API",
        "version": "1",
        "description": "Manage apikeyd's API keys and admin tokens over JSON. Every call needs "
        "`Authorization: Bearer adm_…`, an admin token whose scope (`read`, `keys`, `admin`) covers the call; "
        "the same rules, audit events and errors as the RPC contract (docs/PROTOCOL.md). Names are snake_case; "
        "times are milliseconds since 1970 (`*_ms`) with RFC 3339 beside them; errors are RFC 9457 problem "
        "details. Credentials in a URL are refused. The port answers at most `--admin-rate` requests a second "
        "(100 by default, all callers together; no one admin token, and not all callers without a token the "
        "server has seen valid together, get more than half of it, so that no one caller locks out the others): "
        "429 with `Retry-After` beyond.",
    },
    "servers": [{"url": "http://127.0.0.1:7413", "description": "`make run`"}],
    "security": [{"adminToken": []}],
    "paths": PATHS,
    "components": {
        "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer", "description": "An admin token, `adm_…`."}},
        "schemas": SCHEMAS,
        "responses": {
            "Problem": {
                "description": "The call failed; nothing was changed unless the detail says the outcome is unknown.",
                "content": {"application/problem+json": {"schema": ref("Problem")}},
            },
        },
    },
}


def main():
    out = sys.argv[1]
    text = json.dumps(DOCUMENT, indent=2, ensure_ascii=False) + "\n"
    with open(os.path.join(out, "openapi.json"), "w") as f:
        f.write(text)
    assert '"""#' not in text
    with open(os.path.join(out, "OpenAPIDocument.swift"), "w") as f:
        f.write("// generated by codegen/generate.sh from codegen/openapi.py: do not edit\n\n")
        f.write("/// The admin API's OpenAPI document (docs/openapi.json), served at `GET /openapi.json`.\n")
        f.write("enum OpenAPIDocument {\n    static let json = #\"\"\"\n")
        f.write(text)
        f.write("\"\"\"#\n}\n")


if __name__ == "__main__":
    main()
