"""The web console in a real browser: Debian's chromium driven by Playwright (PyPI), against a real
apikeyd on free ports (SQLite in a temporary directory), checks made through the `apikey` CLI (the
Swift client library).

    Tests/console/console_test.py BIN_DIR [--screenshots DIR]

BIN_DIR holds the built `apikeyd` and `apikey`. Every seed flow by visible labels and roles; the
hostile cases (markup in a key name, cross-site and token-less state changes, signed-out requests,
a revoked token, the secret after a reload, cookie attributes, sign-in throttling); the lifecycle by
keyboard alone; screenshots of each page at desktop and phone width. Exits 1 at the first failure.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from playwright.sync_api import expect, sync_playwright

CHROMIUM = os.environ.get("APIKEYS_CHROMIUM", "/usr/bin/chromium")
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


class Server:
    """apikeyd with its RPC port and admin port on free ports."""

    def __init__(self, bin_dir, work, extra=()):
        self.bin_dir = bin_dir
        os.makedirs(work, exist_ok=True)
        self.data = os.path.join(work, "data")
        self.log_path = os.path.join(work, "server.log")
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [os.path.join(bin_dir, "apikeyd"), "--data-dir", self.data, "--port", "0", "--admin-port", "0", *extra],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.url = self.rpc_port = None
        for _ in range(200):
            text = open(self.log_path).read()
            admin = re.search(r"url=(https?://[^ ]+).*admin API listening", text)
            rpc = re.search(r"port=(\d+)", text)
            if admin and rpc:
                self.url, self.rpc_port = admin.group(1), int(rpc.group(1))
                break
            if self.process.poll() is not None:
                raise SystemExit(f"apikeyd stopped:\n{text}")
            time.sleep(0.05)
        if not self.url:
            raise SystemExit(f"apikeyd did not start:\n{open(self.log_path).read()}")
        self.token = open(os.path.join(self.data, "admin.token")).read().strip()

    def api(self, method, path, body=None, token=None, headers=None):
        """A JSON API call with a Bearer token (the bootstrap one by default): (status, body)."""
        request = urllib.request.Request(self.url + path, method=method,
                                         data=None if body is None else json.dumps(body).encode())
        request.add_header("Authorization", f"Bearer {token or self.token}")
        if body is not None:
            request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                data = response.read()
                return response.status, json.loads(data) if data else None
        except urllib.error.HTTPError as error:
            data = error.read()
            return error.code, json.loads(data) if data else None

    def check(self, secret, permission="jobs:execute"):
        """A Check through the client library (`apikey check`): its JSON answer."""
        run = subprocess.run(
            [os.path.join(self.bin_dir, "apikey"), "check", secret, "-p", permission, "--json",
             "--server", f"127.0.0.1:{self.rpc_port}", "--token", self.token],
            capture_output=True, text=True, timeout=30)
        return json.loads(run.stdout)

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)
        self.log.close()


def raw(url, method, path, headers=None, body=None):
    """A request with exactly these headers (no token): (status, body text)."""
    request = urllib.request.Request(url + path, method=method, data=body)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def sign_in(page, server, token=None):
    page.goto(server.url + "/")
    page.get_by_label("Admin token").fill(token or server.token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="API Keys")).to_be_visible()


def shot(page, directory, name):
    if not directory:
        return
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(size)
        # The whole page at desktop width; the first screen of it on a phone.
        page.screenshot(path=os.path.join(directory, f"{name}-{label}.png"), full_page=label == "desktop")
    page.set_viewport_size(DESKTOP)


def row(page, name):
    return page.get_by_role("row").filter(has=page.get_by_role("link", name=name, exact=True))


def seed_flows(browser, server, screenshots):
    """Sign in, create with a preset and an expiry, copy, check, disable, enable, rotate, delete,
    and the Audit Log showing each step with its actor."""
    context = browser.new_context(viewport=DESKTOP)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    page = context.new_page()
    page.goto(server.url + "/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    shot(page, screenshots, "sign-in")
    sign_in(page, server)
    cookies = {c["name"]: c for c in context.cookies()}
    cookie = cookies["apikeyd_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and not cookie["secure"], cookie
    assert len(cookie["value"]) == 64, "the session id is 256 random bits"

    page.get_by_role("button", name="Create API Key").click()
    expect(page.get_by_role("heading", name="Create API Key")).to_be_visible()
    page.get_by_label("Name", exact=True).fill("ci-deploy")
    page.get_by_label("Expiration Date").fill("2031-12-31")
    page.get_by_role("button", name="Trigger + monitor").click()
    expect(page.get_by_label("jobs:execute")).to_be_checked()
    expect(page.get_by_label("history:read")).to_be_checked()
    expect(page.get_by_label("vault:read")).not_to_be_checked()
    page.get_by_text("Advanced").click()
    shot(page, screenshots, "create-key")
    page.get_by_role("button", name="Create Key").click()
    expect(page.get_by_text("Copy the key immediately: it won't be shown again.")).to_be_visible()
    secret = page.locator("#secret").inner_text()
    assert secret.startswith("dbm_") and len(secret) == 50, secret
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_text("Copied.")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == secret, "the clipboard holds the secret"
    shot(page, screenshots, "secret-shown-once")
    assert server.check(secret)["decision"] == "ALLOW"

    # Reloading never shows it again.
    page.reload()
    expect(page.get_by_role("heading", name="API Keys")).to_be_visible()
    assert secret not in page.content(), "the secret is in the page after a reload"
    page.go_back()
    page.go_forward()
    assert secret not in page.content(), "the secret came back through history"

    page.get_by_role("button", name="Actions for ci-deploy").click()
    page.get_by_role("menuitem", name="Disable").click()
    expect(row(page, "ci-deploy").get_by_text("disabled")).to_be_visible()
    answer = server.check(secret)
    assert answer["decision"] == "DENY" and answer["reason"] == "DISABLED" and answer["http_status"] == 401, answer
    page.get_by_role("button", name="Actions for ci-deploy").click()
    page.get_by_role("menuitem", name="Enable").click()
    expect(row(page, "ci-deploy").get_by_text("enabled", exact=True)).to_be_visible()
    assert server.check(secret)["decision"] == "ALLOW"
    shot(page, screenshots, "api-keys")

    page.get_by_role("button", name="Actions for ci-deploy").click()
    page.get_by_role("menuitem", name="Rotate Key").click()
    shot(page, screenshots, "rotate-dialog")
    page.get_by_role("button", name="Rotate Key").click()
    expect(page.get_by_text("Copy the key immediately: it won't be shown again.")).to_be_visible()
    rotated = page.locator("#secret").inner_text()
    assert rotated != secret and rotated.startswith("dbm_")
    assert server.check(secret)["decision"] == "DENY", "the old secret still works after rotation"
    assert server.check(rotated)["decision"] == "ALLOW"
    page.get_by_role("button", name="Done").click()

    # Edit: the permissions become the read-only preset; the client's next check says so.
    page.get_by_role("button", name="Actions for ci-deploy").click()
    page.get_by_role("menuitem", name="Edit").click()
    expect(page.get_by_role("heading", name="Edit ci-deploy")).to_be_visible()
    page.get_by_role("button", name="Read-only monitoring").click()
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("heading", name="ci-deploy")).to_be_visible()
    answer = server.check(rotated)
    assert answer["reason"] == "MISSING_PERMISSION" and answer["http_status"] == 403, answer
    # Only what changed is sent: one event, the permissions'.
    _, changes = server.api("GET", "/v1/audit-events?action=key.updated")
    assert not changes["events"], f"an edit of the permissions also recorded {changes['events']}"
    assert server.check(rotated, "history:read")["decision"] == "ALLOW"
    page.get_by_role("link", name="← API Keys").click()

    page.get_by_role("link", name="ci-deploy").click()
    expect(page.get_by_role("heading", name="ci-deploy")).to_be_visible()
    expect(page.get_by_text("Its audit events")).to_be_visible()
    shot(page, screenshots, "key-page")
    page.get_by_role("link", name="← API Keys").click()

    page.get_by_role("button", name="Actions for ci-deploy").click()
    page.get_by_role("menuitem", name="Delete").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    shot(page, screenshots, "delete-confirmation")
    assert server.check(rotated, "history:read")["decision"] == "ALLOW", "the key went before the confirmation"
    dialog.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("link", name="ci-deploy", exact=True)).to_have_count(0)
    assert server.check(rotated, "history:read")["decision"] == "DENY"

    page.get_by_role("link", name="Audit Log").click()
    expect(page.get_by_role("heading", name="Audit Log")).to_be_visible()
    table = page.get_by_role("table")
    for action in ("key.created", "key.disabled", "key.enabled", "key.rotated", "key.permissions_changed", "key.deleted"):
        expect(table.get_by_role("row").filter(has_text=action).filter(has_text="bootstrap").first).to_be_visible()
    expect(table.get_by_role("row").filter(has_text="api.request").filter(has_text="DISABLED").first).to_be_visible()
    page.get_by_role("button", name="Verify now").click()
    expect(page.get_by_text(re.compile(r"Audit chain: verified \(\d+ links"))).to_be_visible()
    shot(page, screenshots, "audit-log")
    page.get_by_label("Action", exact=True).select_option("key.deleted")
    page.get_by_role("button", name="Filter").click()
    expect(table.get_by_role("row").filter(has_text="key.created")).to_have_count(0)
    expect(table.get_by_role("row").filter(has_text="key.deleted")).to_have_count(1)
    # The hygiene view: a key never used, and one expiring within 14 days.
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3 * 86400))
    assert server.api("POST", "/v1/keys", {"name": "nightly-export", "permissions": ["storage:read"]})[0] == 201
    assert server.api("POST", "/v1/keys", {"name": "contractor", "permissions": ["jobs:read"], "expires_at": soon})[0] == 201
    page.get_by_role("link", name="Key Hygiene").click()
    expect(page.get_by_role("heading", name="Key Hygiene")).to_be_visible()
    expect(row(page, "nightly-export").get_by_text("never used")).to_be_visible()
    expect(row(page, "contractor").get_by_text(re.compile("expires within 14 days"))).to_be_visible()
    shot(page, screenshots, "key-hygiene")
    for name in ("nightly-export", "contractor"):
        _, found = server.api("GET", f"/v1/keys?name_contains={name}")
        server.api("DELETE", f"/v1/keys/{found['keys'][0]['id']}")

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    status, _ = raw(server.url, "GET", "/v1/keys", {"Cookie": f"apikeyd_session={cookie['value']}"})
    assert status == 401, f"the session outlived its sign-out ({status})"
    context.close()


def hostile(browser, server):
    # Markup in a key name is text: no dialog, the name shown as written.
    status, _ = server.api("POST", "/v1/keys", {"name": "<img src=x onerror=alert(1)>", "permissions": ["jobs:read"]})
    assert status == 201
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    sign_in(page, server)
    expect(page.get_by_role("link", name="<img src=x onerror=alert(1)>")).to_be_visible()
    assert page.locator("main img").count() == 0 and not dialogs, dialogs
    headers = page.request.get(server.url + "/").headers
    csp = headers["content-security-policy"]
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "frame-ancestors 'none'" in csp, csp
    assert headers["referrer-policy"] == "no-referrer" and headers["cache-control"] == "no-store"

    # State changes without the CSRF token, or from another origin, are refused and change nothing.
    _, listed = server.api("GET", "/v1/keys?name_contains=onerror")
    victim = listed["keys"][0]
    refused = page.evaluate(
        """async (id) => (await fetch(`/v1/keys/${id}/disable`, {method: "POST"})).status""", victim["id"])
    assert refused == 403, refused
    session = {c["name"]: c["value"] for c in context.cookies()}["apikeyd_session"]
    csrf = page.evaluate("""async () => (await (await fetch('/console/session')).json()).csrf_token""")
    for origin in ("http://evil.example", None):
        headers = {"Cookie": f"apikeyd_session={session}", "X-CSRF-Token": csrf}
        if origin:
            headers["Origin"] = origin
        status, _ = raw(server.url, "POST", f"/v1/keys/{victim['id']}/disable", headers)
        assert status == 403, f"a cross-site disable got {status}"
    status, _ = raw(server.url, "POST", f"/v1/keys/{victim['id']}/disable",
                    {"Cookie": f"apikeyd_session={session}", "X-CSRF-Token": csrf, "Origin": server.url})
    assert status == 200, "the same request from the console's origin should pass"
    _, after = server.api("GET", f"/v1/keys/{victim['id']}")
    assert after["enabled"] is False
    server.api("POST", f"/v1/keys/{victim['id']}/enable")
    context.close()

    # Signed out: only the sign-in page.
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.goto(server.url + "/#/keys")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.request.get(server.url + "/v1/keys").status == 401
    context.close()

    # Revoking the token ends its session at the next request.
    status, issued = server.api("POST", "/v1/admin-tokens", {"name": "console-user", "scope": "keys"})
    assert status == 201
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    sign_in(page, server, issued["secret"])
    expect(page.get_by_text("Signed in as console-user (keys)")).to_be_visible()
    assert server.api("DELETE", "/v1/admin-tokens/console-user")[0] == 204
    page.get_by_role("link", name="Audit Log").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.reload()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    context.close()

    # A read token is not offered what it may not do.
    status, issued = server.api("POST", "/v1/admin-tokens", {"name": "auditor", "scope": "read"})
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    sign_in(page, server, issued["secret"])
    expect(page.get_by_role("button", name="Create API Key")).to_have_count(0)
    expect(page.get_by_role("button", name=re.compile("^Actions for"))).to_have_count(0)
    context.close()

    # Ten wrong sign-ins from one address are throttled: a valid token the server has not seen
    # yet is refused too, but one it has seen valid is not a guess and signs in (others behind
    # the same proxy or NAT may have spent the address's failures).
    status, unseen = server.api("POST", "/v1/admin-tokens", {"name": "unseen", "scope": "read"})
    assert status == 201
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.goto(server.url + "/")
    for attempt in range(10):
        page.get_by_label("Admin token").fill(f"adm_{'x' * 40}{attempt}")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).not_to_have_text("")
    expect(page.get_by_role("alert")).to_have_text(re.compile("Too many failed sign-ins"))
    page.get_by_label("Admin token").fill(unseen["secret"])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text(re.compile("Too many failed sign-ins"))
    page.get_by_label("Admin token").fill(server.token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="API Keys")).to_be_visible()
    context.close()


def keyboard_only(browser, server):
    """Create, copy, disable and delete with Tab, Enter and Space only."""
    context = browser.new_context(viewport=DESKTOP)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    page = context.new_page()
    page.goto(server.url + "/")
    expect(page.get_by_label("Admin token")).to_be_focused()
    page.keyboard.type(server.token)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="API Keys")).to_be_visible()

    def tab_to(name, limit=80):
        for _ in range(limit):
            page.keyboard.press("Tab")
            focused = page.evaluate(
                "() => { const e = document.activeElement; return e.getAttribute('aria-label') || e.textContent.trim() || e.id }")
            if focused == name:
                return
        raise AssertionError(f"Tab never reached {name!r}")

    tab_to("Create API Key")
    page.keyboard.press("Enter")
    expect(page.get_by_label("Name", exact=True)).to_be_focused()
    page.keyboard.type("keyboard-key")
    tab_to("Trigger backups only")
    page.keyboard.press("Space")
    tab_to("Create Key")
    page.keyboard.press("Enter")
    expect(page.get_by_text("Copy the key immediately: it won't be shown again.")).to_be_visible()
    secret = page.locator("#secret").inner_text()
    expect(page.get_by_role("button", name="Copy")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_text("Copied.")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    tab_to("Done")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="API Keys")).to_be_visible()
    tab_to("Actions for keyboard-key")
    page.keyboard.press("Enter")
    expect(page.get_by_role("menuitem", name="Disable")).to_be_focused()
    page.keyboard.press("Enter")
    expect(row(page, "keyboard-key").get_by_text("disabled")).to_be_visible()
    assert server.check(secret)["reason"] == "DISABLED"
    tab_to("Actions for keyboard-key")
    page.keyboard.press("Space")
    for _ in range(3):
        page.keyboard.press("ArrowDown")
    expect(page.get_by_role("menuitem", name="Delete")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("dialog").get_by_role("button", name="Delete")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("link", name="keyboard-key", exact=True)).to_have_count(0)
    assert server.check(secret)["decision"] == "DENY"
    context.close()


def zoomed(browser, server):
    """400% zoom of a 1280-pixel window is a 320-pixel-wide page: every view fits it without
    scrolling sideways (tables become cards), and the controls stay reachable."""
    server.api("POST", "/v1/keys", {"name": "zoomed-key", "permissions": ["jobs:read", "history:read"]})
    context = browser.new_context(viewport={"width": 320, "height": 640})
    page = context.new_page()
    sign_in(page, server)

    def fits(view):
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 320, f"{view} is {width} px wide at 400% zoom"

    fits("API Keys")
    page.get_by_role("button", name="Actions for zoomed-key").click()
    expect(page.get_by_role("menuitem", name="Delete")).to_be_visible()
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Create API Key").click()
    expect(page.get_by_role("heading", name="Create API Key")).to_be_visible()
    fits("Create API Key")
    page.get_by_role("link", name="Audit Log").click()
    expect(page.get_by_role("heading", name="Audit Log")).to_be_visible()
    fits("Audit Log")
    page.get_by_role("link", name="Key Hygiene").click()
    expect(page.get_by_role("heading", name="Key Hygiene")).to_be_visible()
    fits("Key Hygiene")
    context.close()


def tls_cookie(browser, bin_dir, work):
    """Over TLS the session cookie is __Host- prefixed and Secure."""
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    server = Server(bin_dir, os.path.join(work, "tls"),
                    ["--admin-tls-cert", cert, "--admin-tls-key", key])
    try:
        context = browser.new_context(viewport=DESKTOP, ignore_https_errors=True)
        page = context.new_page()
        sign_in(page, server)
        cookie = {c["name"]: c for c in context.cookies()}["__Host-apikeyd_session"]
        assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
        context.close()
    finally:
        server.stop()


def main():
    bin_dir = sys.argv[1]
    screenshots = None
    if "--screenshots" in sys.argv:
        screenshots = sys.argv[sys.argv.index("--screenshots") + 1]
        os.makedirs(screenshots, exist_ok=True)
    work = tempfile.mkdtemp(prefix="apikeyd-console-")
    server = Server(bin_dir, work)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            seed_flows(browser, server, screenshots)
            print("console: seed flows passed")
            keyboard_only(browser, server)
            print("console: keyboard-only lifecycle passed")
            zoomed(browser, server)
            print("console: 400% zoom passed")
            # Last: its ten wrong sign-ins hold this address's sign-ins off for a minute.
            hostile(browser, server)
            print("console: hostile cases passed")
            tls_cookie(browser, bin_dir, work)
            print("console: TLS cookie passed")
            browser.close()
    except Exception:
        print(open(server.log_path).read()[-3000:], file=sys.stderr)
        raise
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
