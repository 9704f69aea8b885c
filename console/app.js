// The apikeyd console: a client of the JSON admin API (/v1, docs/openapi.json) on the same port.
// Signed in with an admin token once; the server keeps the session (an HttpOnly cookie) and every
// state-changing request carries the session's CSRF token. Everything the server did not write
// itself (key names, resources, audit details) is put on the page as text, never as markup.

const PRESETS = [
  ["Trigger backups only", ["jobs:execute"]],
  ["Trigger + monitor", ["jobs:execute", "jobs:read", "history:read"]],
  ["Full automation", ["jobs:read", "jobs:write", "jobs:execute", "history:read", "sources:read",
    "destinations:read", "storage:read", "notifications:read"]],
  ["Read-only monitoring", ["jobs:read", "history:read", "sources:read", "destinations:read", "storage:read",
    "notifications:read"]],
];
const ACTIONS = ["key.created", "key.updated", "key.permissions_changed", "key.enabled", "key.disabled",
  "key.rotated", "key.deleted", "key.leak_reported", "api.request", "audit.pruned", "admin_token.created",
  "admin_token.revoked", "admin.permission_denied", "key.change_lost"];
const SCOPES = { read: 1, keys: 2, admin: 3 };
const DAY = 86_400_000;

const state = { csrf: null, token: null, catalog: null, keyPages: [""], keyPage: 0 };
const main = document.getElementById("main");

// ---- DOM helpers: elements built with text, never HTML strings ----

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function say(text) { document.getElementById("status").textContent = text; }

function when(ms) { return ms ? new Date(ms).toLocaleString() : "—"; }

let uid = 0;
function id(prefix) { uid += 1; return `${prefix}-${uid}`; }

// ---- the API ----

class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || `HTTP ${status}`);
    this.status = status;
    this.code = problem?.code;
  }
}

async function api(method, path, body, attempt = 0) {
  const headers = {};
  if (method !== "GET") headers["X-CSRF-Token"] = state.csrf || "";
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin", cache: "no-store",
  });
  if (response.status === 204) return null;
  if (response.status === 429 && path !== "/console/session" && attempt < 3) {
    // The port's request rate (--admin-rate): wait as told (a few seconds at most), then again.
    const wait = Math.min(5, Number(response.headers.get("Retry-After")) || 1);
    await new Promise((resume) => setTimeout(resume, wait * 1000));
    return api(method, path, body, attempt + 1);
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    if (response.status === 401 && path !== "/console/session") { signedOut("Your session has ended; sign in again."); }
    throw new ApiError(response.status, data);
  }
  return data;
}

function may(scope) { return state.token && SCOPES[state.token.scope] >= SCOPES[scope]; }

// ---- sign in and out ----

function signedOut(message) {
  state.csrf = null;
  state.token = null;
  document.getElementById("who").hidden = true;
  document.getElementById("sign-out").hidden = true;
  document.getElementById("nav").hidden = true;
  showSignIn(message);
}

function showSignIn(message) {
  const error = el("p", { class: "error", role: "alert", id: "sign-in-error", text: message || "" });
  const input = el("input", { id: "token", type: "password", autocomplete: "off", required: true,
    "aria-describedby": "token-help sign-in-error", spellcheck: "false" });
  const form = el("form", { class: "panel", onsubmit: async (event) => {
    event.preventDefault();
    try {
      const session = await api("POST", "/console/session", { token: input.value.trim() });
      input.value = "";
      signedIn(session);
    } catch (failure) {
      error.textContent = failure.status === 429 ? "Too many failed sign-ins from here; wait a minute."
        : failure.message;
    }
  } },
  el("h1", { text: "Sign in" }),
  el("label", { for: "token", text: "Admin token" }),
  input,
  el("p", { id: "token-help", class: "desc", text: "Paste an admin token (adm_…) once; the server keeps a session for this browser." }),
  el("div", { class: "actions" }, el("button", { type: "submit", class: "primary", text: "Sign in" })),
  error);
  main.replaceChildren(form);
  input.focus();
}

function signedIn(session) {
  state.csrf = session.csrf_token;
  state.token = session.token;
  const who = document.getElementById("who");
  who.textContent = `Signed in as ${session.token.name} (${session.token.scope})`;
  who.hidden = false;
  document.getElementById("sign-out").hidden = false;
  document.getElementById("nav").hidden = false;
  route();
}

document.getElementById("sign-out").addEventListener("click", async () => {
  try { await api("DELETE", "/console/session"); } catch { /* signed out either way */ }
  signedOut("Signed out.");
});

// ---- routes: #/keys, #/keys/ID, #/audit, #/report ----

async function route() {
  if (!state.token) return;
  say("");
  const hash = location.hash || "#/keys";
  for (const [link, prefix] of [["nav-keys", "#/keys"], ["nav-audit", "#/audit"], ["nav-report", "#/report"]]) {
    const current = hash === prefix || hash.startsWith(prefix + "/");
    document.getElementById(link).toggleAttribute("aria-current", current);
    if (current) document.getElementById(link).setAttribute("aria-current", "page");
  }
  try {
    if (hash.startsWith("#/keys/")) await showKey(decodeURIComponent(hash.slice(7)));
    else if (hash === "#/audit") await showAudit();
    else if (hash === "#/report") await showReport();
    else await showKeys();
  } catch (failure) {
    if (state.token) main.replaceChildren(el("p", { class: "error", role: "alert", text: failure.message }));
  }
}
window.addEventListener("hashchange", route);

// To `hash`, rendered once: by the hashchange it causes, or here when the page is there already.
function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

async function catalog() {
  if (!state.catalog) state.catalog = await api("GET", "/v1/permissions");
  return state.catalog;
}

// ---- API Keys ----

function status(key) {
  const now = Date.now();
  if (key.expires_at_ms && key.expires_at_ms <= now) return ["expired", "state-expired"];
  if (!key.enabled) return ["disabled", "state-disabled"];
  if (key.grace_ends_at_ms && key.grace_ends_at_ms > now) return ["enabled, in rotation grace", "state-grace"];
  return ["enabled", "state-enabled"];
}

async function showKeys(search) {
  const query = search ?? state.search ?? "";
  state.search = query;
  const token = state.keyPages[state.keyPage] || "";
  const parameters = new URLSearchParams({ page_size: "50" });
  if (token) parameters.set("page_token", token);
  if (query) parameters.set("name_contains", query);
  const page = await api("GET", `/v1/keys?${parameters}`);
  state.keyPages[state.keyPage + 1] = page.next_page_token;

  const searchInput = el("input", { id: "key-search", type: "search", value: query });
  const rows = page.keys.map((key) => keyRow(key));
  const table = el("div", { class: "table-wrap" }, el("table", {},
    el("caption", { class: "skip", text: "API keys" }),
    el("thead", {}, el("tr", {}, ["Name", "Hint", "Permissions", "Status", "Expires", "Last used", "Created", "Actions"]
      .map((name) => el("th", { scope: "col", text: name })))),
    el("tbody", {}, rows.length ? rows : [el("tr", {}, el("td", { colspan: 8, text: query ? "No key matches." : "No keys yet." }))])));
  main.replaceChildren(
    el("h1", { text: "API Keys" }),
    el("form", { class: "toolbar", role: "search", onsubmit: (event) => {
      event.preventDefault();
      state.keyPages = [""]; state.keyPage = 0;
      showKeys(searchInput.value.trim());
    } },
    el("div", {}, el("label", { for: "key-search", text: "Search by name" }), searchInput),
    el("button", { type: "submit", text: "Search" }),
    may("keys") ? el("button", { type: "button", class: "primary", onclick: () => showKeyForm(), text: "Create API Key" }) : null),
    table,
    el("div", { class: "actions" },
      el("button", { type: "button", disabled: state.keyPage === 0, text: "Previous page",
        onclick: () => { state.keyPage -= 1; showKeys(); } }),
      el("button", { type: "button", disabled: !page.next_page_token, text: "Next page",
        onclick: () => { state.keyPage += 1; showKeys(); } })));
  say(page.keys.length === 1 ? "1 key shown" : `${page.keys.length} keys shown`);
}

function keyRow(key) {
  const [label, style] = status(key);
  return el("tr", {},
    el("td", { class: "name", "data-label": "Name" }, el("a", { href: `#/keys/${encodeURIComponent(key.id)}`, text: key.name })),
    el("td", { "data-label": "Hint" }, el("code", { text: key.hint })),
    el("td", { class: "perms", "data-label": "Permissions" }, key.permissions.map((p) => el("span", { class: "tag", text: p }))),
    el("td", { class: style, "data-label": "Status", text: label }),
    el("td", { "data-label": "Expires", text: key.expires_at_ms ? when(key.expires_at_ms) : "never" }),
    el("td", { "data-label": "Last used", text: key.last_used_at_ms ? when(key.last_used_at_ms) : "never" }),
    el("td", { "data-label": "Created", text: when(key.created_at_ms) }),
    el("td", { "data-label": "Actions" }, may("keys") ? actionsMenu(key) : "—"));
}

function actionsMenu(key) {
  const menuId = id("menu");
  const button = el("button", { type: "button", "aria-label": `Actions for ${key.name}`, "aria-haspopup": "menu",
    "aria-expanded": "false", "aria-controls": menuId, text: "⋯" });
  const item = (text, run) => el("button", { type: "button", role: "menuitem", text, onclick: () => { close(); run(); } });
  const menu = el("div", { role: "menu", id: menuId, hidden: true, "aria-label": `Actions for ${key.name}` },
    key.enabled ? item("Disable", () => setEnabled(key, false)) : item("Enable", () => setEnabled(key, true)),
    item("Rotate Key", () => rotate(key)),
    item("Edit", () => showKeyForm(key)),
    item("Delete", () => confirmDelete(key)));
  function close() { menu.hidden = true; button.setAttribute("aria-expanded", "false"); }
  button.addEventListener("click", () => {
    const opening = menu.hidden;
    document.querySelectorAll('[role="menu"]').forEach((other) => { other.hidden = true; });
    menu.hidden = !opening;
    button.setAttribute("aria-expanded", String(opening));
    if (opening) menu.querySelector("button").focus();
  });
  menu.addEventListener("keydown", (event) => {
    const items = [...menu.querySelectorAll("button")];
    const at = items.indexOf(document.activeElement);
    if (event.key === "Escape") { close(); button.focus(); }
    else if (event.key === "ArrowDown") { event.preventDefault(); items[(at + 1) % items.length].focus(); }
    else if (event.key === "ArrowUp") { event.preventDefault(); items[(at - 1 + items.length) % items.length].focus(); }
  });
  return el("div", { class: "menu-wrap" }, button, menu);
}

async function setEnabled(key, enabled) {
  try {
    await api("POST", `/v1/keys/${encodeURIComponent(key.id)}/${enabled ? "enable" : "disable"}`);
    say(`${key.name} ${enabled ? "enabled" : "disabled"}`);
  } catch (failure) { say(failure.message); }
  await route();
}

function dialog(title, build) {
  const node = el("dialog", { "aria-labelledby": "dialog-title" }, el("h2", { id: "dialog-title", text: title }));
  build(node, () => { node.close(); node.remove(); });
  document.body.append(node);
  node.showModal();
  return node;
}

function confirmDelete(key) {
  dialog(`Delete API Key ${key.name}?`, (node, close) => {
    node.append(
      el("p", { text: "Services using this key are refused from the moment it is deleted. This cannot be undone." }),
      el("div", { class: "actions" },
        el("button", { type: "button", class: "danger", text: "Delete", onclick: async () => {
          close();
          try {
            await api("DELETE", `/v1/keys/${encodeURIComponent(key.id)}`);
            say(`${key.name} deleted`);
          } catch (failure) { say(failure.message); }
          go("#/keys");
        } }),
        el("button", { type: "button", text: "Cancel", onclick: close })));
  });
}

function rotate(key) {
  dialog(`Rotate ${key.name}`, (node, close) => {
    const grace = el("input", { id: "grace", type: "number", min: 0, max: 604800, value: 0, inputmode: "numeric" });
    const error = el("p", { class: "error", role: "alert" });
    node.append(
      el("p", { text: "A new secret replaces the current one. Without a grace period the current one is refused at once." }),
      el("label", { for: "grace", text: "Grace period (seconds, optional)" }), grace, error,
      el("div", { class: "actions" },
        el("button", { type: "button", class: "primary", text: "Rotate Key", onclick: async () => {
          try {
            const issued = await api("POST", `/v1/keys/${encodeURIComponent(key.id)}/rotate`,
              { grace_seconds: Number(grace.value || 0) });
            close();
            showSecret(issued, "rotated");
          } catch (failure) { error.textContent = failure.message; }
        } }),
        el("button", { type: "button", text: "Cancel", onclick: close })));
  });
}

function showSecret(issued, verb) {
  say("");
  let value = issued.secret;
  const secret = el("code", { class: "secret", id: "secret", text: value });
  const copied = el("span", { role: "status" });
  main.replaceChildren(el("section", { class: "panel", "aria-labelledby": "secret-title" },
    el("h1", { id: "secret-title", text: `API key ${verb}: ${issued.key.name}` }),
    el("p", { class: "warning", text: "Copy the key immediately: it won't be shown again." }),
    el("label", { for: "secret", text: "Secret" }), secret,
    el("div", { class: "actions" },
      el("button", { type: "button", class: "primary", text: "Copy", onclick: async () => {
        try { await navigator.clipboard.writeText(value); copied.textContent = "Copied."; }
        catch { copied.textContent = "Copy failed: select the key and copy it."; }
      } }),
      el("button", { type: "button", text: "Done", onclick: () => { value = ""; go("#/keys"); } }),
      copied)));
  // Held only by this view: gone when it is left, and never in history (the URL does not change).
  issued.secret = "";
  window.addEventListener("pagehide", () => { value = ""; }, { once: true });
  main.querySelector("button").focus();
}

// Leaving or hiding the page drops a secret still shown (the back-forward cache keeps nothing).
window.addEventListener("pagehide", () => { const node = document.getElementById("secret"); if (node) node.textContent = ""; });

async function showKeyForm(key) {
  say("");
  const permissions = await catalog();
  const editing = Boolean(key);
  const name = el("input", { id: "key-name", required: true, maxlength: 100, value: key?.name ?? "", autocomplete: "off" });
  const expiry = el("input", { id: "key-expiry", type: "date",
    value: key?.expires_at_ms ? new Date(key.expires_at_ms).toISOString().slice(0, 10) : "" });
  const boxes = permissions.map((permission) => {
    const boxId = id("perm");
    const descId = `${boxId}-desc`;
    const box = el("input", { type: "checkbox", id: boxId, value: permission.name, "aria-describedby": descId,
      checked: key?.permissions.includes(permission.name) });
    return { box, row: el("div", { class: "perm" }, box, el("div", {},
      el("label", { for: boxId, text: permission.name }), " ",
      el("span", { class: "desc", id: descId, text: permission.description }))) };
  });
  const networks = el("textarea", { id: "key-networks", rows: 2, text: (key?.allowed_networks ?? []).join("\n") });
  const rate = el("input", { id: "key-rate", type: "number", min: 1, inputmode: "numeric",
    value: key?.rate_limit ? Math.round(key.rate_limit.requests * 60 / (key.rate_limit.period_seconds || 1)) : "" });
  const credits = el("input", { id: "key-credits", type: "number", min: 0, inputmode: "numeric",
    value: key?.remaining_uses ?? "" });
  const error = el("p", { class: "error", role: "alert" });

  const form = el("form", { class: "panel", "aria-labelledby": "form-title", onsubmit: async (event) => {
    event.preventDefault();
    const chosen = boxes.filter(({ box }) => box.checked).map(({ box }) => box.value);
    if (!chosen.length) { error.textContent = "Choose at least one permission."; return; }
    const body = { name: name.value.trim(), permissions: chosen };
    const until = expiry.value ? new Date(`${expiry.value}T23:59:59`).toISOString() : null;
    const list = networks.value.split(/[\s,]+/).filter(Boolean);
    if (editing) {
      // Only what changed: an unchanged field is left out, so the audit trail records the change made.
      if (body.name === key.name) delete body.name;
      if ([...chosen].sort().join(" ") === [...key.permissions].sort().join(" ")) delete body.permissions;
      if (expiry.value !== expiry.defaultValue) body.expires_at = until;
      if (networks.value !== networks.defaultValue) body.allowed_networks = list;
      if (rate.value !== rate.defaultValue) {
        body.rate_limit = rate.value ? { requests: Number(rate.value), period_seconds: 60 } : null;
      }
      if (credits.value !== credits.defaultValue) body.remaining_uses = credits.value === "" ? null : Number(credits.value);
    } else {
      if (until) body.expires_at = until;
      if (list.length) body.allowed_networks = list;
      if (rate.value) body.rate_limit = { requests: Number(rate.value), period_seconds: 60 };
      if (credits.value !== "") body.remaining_uses = Number(credits.value);
    }
    try {
      if (editing) {
        await api("PATCH", `/v1/keys/${encodeURIComponent(key.id)}`, body);
        say(`${body.name} saved`);
        go(`#/keys/${encodeURIComponent(key.id)}`);
      } else {
        showSecret(await api("POST", "/v1/keys", body), "created");
      }
    } catch (failure) { error.textContent = failure.message; }
  } },
  el("h1", { id: "form-title", text: editing ? `Edit ${key.name}` : "Create API Key" }),
  el("label", { for: "key-name", text: "Name" }), name,
  el("label", { for: "key-expiry", text: "Expiration Date" }), expiry,
  el("p", { class: "desc", text: "Optional; empty: never expires. The key stops working at the end of that day." }),
  el("fieldset", {}, el("legend", { text: "Recommended Permission Sets" }), el("div", { class: "presets" },
    PRESETS.map(([label, set]) => el("button", { type: "button", text: label, onclick: () => {
      for (const { box } of boxes) box.checked = set.includes(box.value);
    } })))),
  el("fieldset", {}, el("legend", { text: "Permissions" }), boxes.map(({ row }) => row)),
  el("details", {}, el("summary", { text: "Advanced" }),
    el("label", { for: "key-networks", text: "Allowed networks (CIDR, one per line; empty: anywhere)" }), networks,
    el("label", { for: "key-rate", text: "Rate limit (requests per minute; empty: none)" }), rate,
    el("label", { for: "key-credits", text: "Usage credits (checks allowed; empty: unlimited)" }), credits),
  error,
  el("div", { class: "actions" },
    el("button", { type: "submit", class: "primary", text: editing ? "Save" : "Create Key" }),
    el("button", { type: "button", text: "Cancel", onclick: () => route() })));
  main.replaceChildren(form);
  name.focus();
}

// ---- a key's own page ----

function findings(key, policy) {
  const now = Date.now();
  const found = [];
  if (!key.last_used_at_ms) found.push("never used");
  else if (now - key.last_used_at_ms > 30 * DAY) found.push(`idle for ${Math.floor((now - key.last_used_at_ms) / DAY)} days`);
  if (key.expires_at_ms && key.expires_at_ms > now && key.expires_at_ms - now < 14 * DAY) found.push("expires within 14 days");
  const lifetime = policy?.max_key_lifetime_ms;
  if (lifetime && (!key.expires_at_ms || key.expires_at_ms - key.created_at_ms > lifetime)) found.push("beyond the lifetime policy");
  return found;
}

async function showKey(keyId) {
  const [key, policy, events] = await Promise.all([
    api("GET", `/v1/keys/${encodeURIComponent(keyId)}`),
    api("GET", "/v1/policy"),
    api("GET", `/v1/audit-events?key_id=${encodeURIComponent(keyId)}&page_size=50`),
  ]);
  const [label] = status(key);
  const field = (name, value) => [el("dt", { text: name }), el("dd", {}, value)];
  const rate = key.rate_limit ? `${key.rate_limit.requests} per ${key.rate_limit.period_seconds || 1} s` : "none";
  const found = findings(key, policy);
  main.replaceChildren(
    el("p", {}, el("a", { href: "#/keys", text: "← API Keys" })),
    el("h1", { text: key.name }),
    el("dl", { class: "fields" },
      field("Status", label), field("Hint", el("code", { text: key.hint })),
      field("Permissions", key.permissions.map((p) => el("span", { class: "tag", text: p }))),
      field("Expires", key.expires_at_ms ? when(key.expires_at_ms) : "never"),
      field("Rotation grace ends", key.grace_ends_at_ms ? when(key.grace_ends_at_ms) : "—"),
      field("Usage credits left", key.remaining_uses ?? "unlimited"),
      field("Rate limit", rate),
      field("Allowed networks", key.allowed_networks.length ? key.allowed_networks.join(", ") : "anywhere"),
      field("Last used", key.last_used_at_ms ? when(key.last_used_at_ms) : "never"),
      field("Created", when(key.created_at_ms)),
      field("Findings", found.length ? found.join("; ") : "none")),
    may("keys") ? el("div", { class: "actions" }, actionsMenu(key)) : null,
    el("h2", { text: "Its audit events" }),
    eventsTable(events.events, false));
}

// ---- Audit Log ----

function eventsTable(events, withKey = true) {
  const columns = ["Time", "Action", ...(withKey ? ["Key"] : []), "Actor", "Decision", "Reason", "Resource", "Detail"];
  return el("div", { class: "table-wrap" }, el("table", {},
    el("thead", {}, el("tr", {}, columns.map((name) => el("th", { scope: "col", text: name })))),
    el("tbody", {}, events.length ? events.map((event) => el("tr", {},
      el("td", { "data-label": "Time", text: when(event.at_ms) }), el("td", { "data-label": "Action", text: event.action }),
      withKey ? el("td", { "data-label": "Key", text: event.key_name || event.key_id || "—" }) : null,
      el("td", { "data-label": "Actor", text: event.actor || (event.trigger === "api" ? "api" : "—") }),
      el("td", { "data-label": "Decision", text: event.decision || "—" }),
      el("td", { "data-label": "Reason", text: event.reason || "—" }),
      el("td", { "data-label": "Resource", text: event.resource || "—" }),
      el("td", { "data-label": "Detail", text: event.detail || "—" })))
      : [el("tr", {}, el("td", { colspan: columns.length, text: "No events." }))])));
}

async function showAudit(pages = [""], at = 0) {
  const filters = state.auditFilters ?? {};
  const parameters = new URLSearchParams({ page_size: "50" });
  if (pages[at]) parameters.set("page_token", pages[at]);
  if (filters.key) parameters.set("key_id", filters.key);
  if (filters.action) parameters.set("action", filters.action);
  if (filters.since) parameters.set("since", new Date(filters.since).toISOString());
  if (filters.until) parameters.set("until", new Date(filters.until).toISOString());
  const page = await api("GET", `/v1/audit-events?${parameters}`);
  pages[at + 1] = page.next_page_token;

  const keyInput = el("input", { id: "audit-key", value: filters.key ?? "", placeholder: "key_…" });
  const action = el("select", { id: "audit-action" }, el("option", { value: "", text: "any" }),
    ACTIONS.map((name) => el("option", { value: name, selected: filters.action === name, text: name })));
  const since = el("input", { id: "audit-since", type: "datetime-local", value: filters.since ?? "" });
  const until = el("input", { id: "audit-until", type: "datetime-local", value: filters.until ?? "" });
  const chain = el("p", { id: "chain-state", role: "status", text: state.chain ?? "Audit chain: not verified yet." });
  main.replaceChildren(
    el("h1", { text: "Audit Log" }),
    el("div", { class: "toolbar" }, chain,
      el("button", { type: "button", text: "Verify now", onclick: async () => {
        chain.textContent = "Audit chain: verifying…";
        try {
          const result = await api("GET", "/v1/audit-chain/verify");
          state.chain = result.verified
            ? `Audit chain: verified (${result.links} links, ${result.events} events, up to link ${result.head_position}) at ${when(result.checked_at_ms)}`
            : `Audit chain: broken at link ${result.broken_at}: ${result.reason} (checked at ${when(result.checked_at_ms)})`;
          chain.textContent = state.chain;
        } catch (failure) { chain.textContent = `Audit chain: ${failure.message}`; }
      } })),
    el("form", { class: "toolbar", "aria-label": "Filter events", onsubmit: (event) => {
      event.preventDefault();
      state.auditFilters = { key: keyInput.value.trim(), action: action.value, since: since.value, until: until.value };
      showAudit();
    } },
    el("div", {}, el("label", { for: "audit-key", text: "Key ID" }), keyInput),
    el("div", {}, el("label", { for: "audit-action", text: "Action" }), action),
    el("div", {}, el("label", { for: "audit-since", text: "Since" }), since),
    el("div", {}, el("label", { for: "audit-until", text: "Until" }), until),
    el("button", { type: "submit", text: "Filter" })),
    eventsTable(page.events),
    el("div", { class: "actions" },
      el("button", { type: "button", disabled: at === 0, text: "Newer events", onclick: () => showAudit(pages, at - 1) }),
      el("button", { type: "button", disabled: !page.next_page_token, text: "Older events",
        onclick: () => showAudit(pages, at + 1) })),
    el("p", { class: "desc", text: `Kept since ${when(page.oldest_retained_at_ms)}; newest first; times in your time zone.` }));
}

// ---- Key Hygiene: the keys that need a look ----

async function showReport() {
  const policy = await api("GET", "/v1/policy");
  const flagged = [];
  let token = "";
  let scanned = 0;
  do {
    const parameters = new URLSearchParams({ page_size: "1000" });
    if (token) parameters.set("page_token", token);
    const page = await api("GET", `/v1/keys?${parameters}`);
    for (const key of page.keys) {
      const found = findings(key, policy);
      if (found.length) flagged.push([key, found]);
    }
    scanned += page.keys.length;
    token = page.next_page_token;
  } while (token && scanned < 100_000);
  main.replaceChildren(
    el("h1", { text: "Key Hygiene" }),
    el("p", { text: `${flagged.length} of ${scanned} keys need a look: never used, idle over 30 days, expiring within 14 days, or beyond the lifetime policy.` }),
    el("div", { class: "table-wrap" }, el("table", {},
      el("thead", {}, el("tr", {}, ["Name", "Findings", "Last used", "Expires"].map((name) => el("th", { scope: "col", text: name })))),
      el("tbody", {}, flagged.length ? flagged.map(([key, found]) => el("tr", {},
        el("td", { class: "name", "data-label": "Name" }, el("a", { href: `#/keys/${encodeURIComponent(key.id)}`, text: key.name })),
        el("td", { "data-label": "Findings", text: found.join("; ") }),
        el("td", { "data-label": "Last used", text: key.last_used_at_ms ? when(key.last_used_at_ms) : "never" }),
        el("td", { "data-label": "Expires", text: key.expires_at_ms ? when(key.expires_at_ms) : "never" })))
        : [el("tr", {}, el("td", { colspan: 4, text: "No key needs a look." }))]))));
}

// ---- start: a session still open (a reload) goes straight in ----

api("GET", "/console/session").then(signedIn, () => signedOut(""));
