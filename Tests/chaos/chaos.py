"""The hostile-peer battery: a built apikeyd under the faults and abuse it must survive, each check
printing one line with its figure. Usage:

    chaos.py APIKEYD_BINARY [--fast] [--only NAME,...] [--allow-skips]

A check that cannot run here (disk_full needs root to mount a tmpfs) fails the run unless
--allow-skips is given. Every check counts its workload against the plan before judging it.

`make chaos` runs the full battery against a release build; `make test` runs `--fast` (smaller
counts, a 15 s soak) against the debug build. Every server is started here on 127.0.0.1 with
port 0 and a temporary data directory, and stopped here. The client is independent of the Swift
code: the official protobuf runtime on proto/.
"""
import argparse
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "Tests", "interop"))
from wire_interop import compile_protos  # noqa: E402

OK, DEADLINE, UNAUTHENTICATED, RESOURCE_EXHAUSTED, UNAVAILABLE = 0, 4, 16, 8, 14
CHECK = "/apikeys.v1.Authorize/Check"
ADMIN = "/apikeys.v1.KeyAdmin/"


class Failure(Exception):
    pass


def expect(condition, message):
    if not condition:
        raise Failure(message)


class Server:
    """One apikeyd process on a free port; its log is drained so it never blocks."""

    def __init__(self, binary, data_dir, *args):
        self.binary, self.data_dir, self.args = binary, data_dir, list(args)
        self.log = []
        self.start()

    def start(self):
        command = [self.binary, "--data-dir", self.data_dir, "--port", "0", "--log-level", os.environ.get("CHAOS_LOG_LEVEL", "info"), *self.args]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.log = []
        ready = threading.Event()
        wants_http = "--http-port" in self.args
        wants_admin = "--admin-port" in self.args
        self.http_port = self.admin_port = None

        def drain():
            for raw in self.process.stderr:
                line = raw.decode(errors="replace")
                self.log.append(line)
                match = re.search(r"port=(\d+)", line)
                admin = re.search(r"url=\S+:(\d+)\b.*admin API listening", line)
                if admin:
                    self.admin_port = int(admin.group(1))
                elif match and "HTTP port listening" in line:
                    self.http_port = int(match.group(1))
                elif match and "listening" in line:
                    self.port = int(match.group(1))
                if getattr(self, "port", None) and (self.http_port or not wants_http) and (
                        self.admin_port or not wants_admin):
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        ready.wait(30)
        expect(self.process.poll() is None, "apikeyd did not start:\n" + "".join(self.log[-10:]))
        with open(os.path.join(self.data_dir, "admin.token")) as f:
            self.token = f.read().strip()

    def rss_kb(self):
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def cpu_seconds(self):
        """apikeyd's CPU time so far, user and system, all threads."""
        with open(f"/proc/{self.process.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def kill9(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill9()
                raise Failure("apikeyd did not stop within 30 s of SIGTERM")
        return self.process.returncode


class Connection:
    """A blocking connection speaking the framing and envelope of the contract."""

    def __init__(self, port, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.next_id = 1

    def close(self):
        self.sock.close()

    def frame(self, method, request, token=None, call_id=None, timeout_ms=0):
        if call_id is None:
            call_id, self.next_id = self.next_id, self.next_id + 1
        envelope = env.Envelope(call_id=call_id, method=method, payload=request.SerializeToString(),
                                timeout_ms=timeout_ms)
        if token is not None:
            envelope.metadata["authorization"] = token
        body = envelope.SerializeToString()
        return struct.pack(">I", len(body)) + body

    def read_exact(self, n):
        data = bytearray()
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed by the server")
            data += chunk
        return bytes(data)

    def reply(self):
        (length,) = struct.unpack(">I", self.read_exact(4))
        reply = env.Envelope()
        reply.ParseFromString(self.read_exact(length))
        return reply

    def call(self, method, request, reply_type=None, token=None, timeout_ms=0):
        self.sock.sendall(self.frame(method, request, token, timeout_ms=timeout_ms))
        reply = self.reply()
        message = None
        if reply.status == OK and reply_type is not None:
            message = reply_type()
            message.ParseFromString(reply.payload)
        return reply, message

    def admin(self, server, name, request, reply_type, timeout_ms=0):
        reply, message = self.call(ADMIN + name, request, reply_type, f"Bearer {server.token}", timeout_ms)
        expect(reply.status == OK, f"{name}: status {reply.status} {reply.status_message}")
        return message

    def check(self, secret, permissions=(), resource=""):
        reply, message = self.call(CHECK, az.CheckRequest(key=secret, permissions=list(permissions),
                                                          resource=resource), az.CheckResponse)
        expect(reply.status == OK, f"Check: status {reply.status} {reply.status_message}")
        return message


class Worker(threading.Thread):
    """A thread whose exception reaches the thread that joins it (Python drops it otherwise)."""

    def __init__(self, body, *args):
        super().__init__(daemon=True)
        self.body, self.args, self.error = body, args, None

    def run(self):
        try:
            self.body(*self.args)
        except BaseException as error:  # noqa: BLE001 - handed to the joining thread
            self.error = error


def join_all(workers, timeout=300):
    """Joins every worker; raises the first failure, or a hang, in the calling thread."""
    deadline = time.time() + timeout
    for worker in workers:
        worker.join(max(0, deadline - time.time()))
    hung = [w for w in workers if w.is_alive()]
    expect(not hung, f"{len(hung)} worker(s) still running after {timeout} s")
    failed = [w.error for w in workers if w.error is not None]
    if failed:
        raise Failure(f"a worker failed: {failed[0]!r}") from failed[0]


def closed_by_peer(sock, within):
    sock.settimeout(within)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except socket.timeout:
        return False
    except OSError:
        return True


# MARK: the checks

def never_reading_clients(ctx):
    server = ctx.server()
    conn = Connection(server.port)
    secret = conn.admin(server, "CreateKey", ka.CreateKeyRequest(name="busy", permissions=["jobs:read"]),
                        ka.CreateKeyResponse).secret
    frame = conn.frame(CHECK, az.CheckRequest(key=secret, permissions=["jobs:read"]), call_id=1)
    burst = frame * 1000
    before = server.rss_kb()
    clients, stop = [], time.time() + ctx.scale(5, 20)
    for _ in range(ctx.scale(10, 50)):
        s = socket.create_connection(("127.0.0.1", server.port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        s.setblocking(False)
        clients.append(s)
    sent = 0
    offsets = [0] * len(clients)
    halfway = time.time() + (stop - time.time()) / 2
    middle = None
    # A normal client, as the contract tells it, every quarter second while the abuse goes on:
    # answered each time, ALLOW, or UNAVAILABLE ("the audit trail is behind; try again
    # shortly") while the audit writer works off what the abusers' checks queued.
    meanwhile, next_probe = [], time.time() + 0.25
    wanted = ctx.scale(5, 20)
    # The server's RSS, sampled as the abuse goes on: (time, kB).
    samples = [(time.time(), before)]
    window, settled_growth = ctx.scale(2.0, 5.0), ctx.scale(8, 16) * 1024

    def recent_growth():
        """How much RSS grew over the last `window` seconds (the lowest sample in it to the last)."""
        recent = [kb for at, kb in samples if at >= samples[-1][0] - window]
        return samples[-1][1] - min(recent)

    # For the planned time, and on (up to 30 s more) until the normal client was asked `wanted`
    # times and RSS has stopped growing: whatever the abuse costs at first (queued replies up to
    # the water mark, the audit queue up to its capacity, allocator caches) is bounded, so it
    # levels off; a leak grows with the traffic and never does.
    while True:
        if samples[-1][0] + 0.25 <= time.time():
            samples.append((time.time(), server.rss_kb()))
            # Judged on the sample just taken: the run ends only on a level it has seen.
            if time.time() >= stop and ((len(meanwhile) >= wanted and recent_growth() < settled_growth)
                                        or time.time() >= stop + 30):
                break
        if middle is None and time.time() >= halfway:
            middle = server.rss_kb()
        if time.time() >= next_probe:
            asked = time.time()
            reply, answer = conn.call(CHECK, az.CheckRequest(key=secret, permissions=["jobs:read"]), az.CheckResponse)
            meanwhile.append((reply.status, answer.decision if answer else None, time.time() - asked))
            next_probe = time.time() + 0.25
        progress = False
        for index, s in enumerate(clients):
            try:
                taken = s.send(burst[offsets[index]:])
                offsets[index] = (offsets[index] + taken) % len(burst)
                sent += taken
                progress = True
            except BlockingIOError:
                pass
        if not progress:
            time.sleep(0.01)
    peak, late_growth, abused_for = max(kb for _, kb in samples), recent_growth(), samples[-1][0] - samples[0][0]
    # A normal client, as the contract tells it: UNAVAILABLE ("the audit trail is behind; try
    # again shortly") is the server failing closed while its audit writer works off what the
    # abusers' checks queued (in a debug build it falls behind), and is retried; nothing else is.
    started, backlogged = time.time(), 0
    while True:
        reply, answer = conn.call(CHECK, az.CheckRequest(key=secret, permissions=["jobs:read"]), az.CheckResponse)
        if reply.status != UNAVAILABLE or time.time() - started > 15:
            break
        backlogged += 1
        time.sleep(0.05)
    expect(reply.status == OK, f"Check: status {reply.status} {reply.status_message}")
    latency = (time.time() - started) * 1000
    for s in clients:
        s.close()
    conn.close()
    server.stop()
    expect(answer.decision == az.ALLOW, "a normal client was not served")
    expect(len(meanwhile) >= wanted, f"only {len(meanwhile)} normal checks during the abuse: "
                                               f"{[(m[0], round(m[2] * 1000)) for m in meanwhile]}")
    odd = [m for m in meanwhile if m[0] not in (OK, UNAVAILABLE) or (m[0] == OK and m[1] != az.ALLOW)]
    expect(not odd, f"normal checks during the abuse answered {odd[:3]}")
    allowed_meanwhile = sum(1 for m in meanwhile if m[0] == OK)
    expect(allowed_meanwhile > 0, f"none of {len(meanwhile)} normal checks during the abuse was allowed")
    # Bounded: RSS levelled off while the same abuse went on (a debug build's audit writer
    # falls behind, so its queue, up to 100,000 events, fills late: the run waits for it).
    timeline = " ".join(f"{kb // 1024}" for _, kb in samples[::max(1, len(samples) // 12)])
    expect(late_growth < settled_growth,
           f"RSS still growing after {abused_for:.0f} s of abuse: +{late_growth // 1024} MB in the last "
           f"{window:.0f} s (MB over time: {timeline})")
    return (f"{len(clients)} clients pipelined {sent / 1e6:.0f} MB of checks without reading for "
            f"{abused_for:.0f} s: RSS {before // 1024} -> {middle // 1024} MB halfway -> {peak // 1024} MB "
            f"at most, +{late_growth // 1024} MB in the last {window:.0f} s; "
            f"{allowed_meanwhile}/{len(meanwhile)} normal checks allowed meanwhile (slowest answer "
            f"{max(m[2] for m in meanwhile) * 1000:.0f} ms), one after in {latency:.1f} ms"
            + (f" (after {backlogged} UNAVAILABLE while the audit trail caught up)" if backlogged else ""))


def slowloris_at_the_limit(ctx):
    limit = ctx.scale(100, 1000)
    server = ctx.server("--max-connections", str(limit), "--frame-timeout", "2", "--idle-timeout", "3600")
    holders, trickling = [], []
    for index in range(limit):
        s = socket.create_connection(("127.0.0.1", server.port))
        if index % 2:
            s.sendall(b"\x00\x00\x00\x40")  # a 64-byte frame, trickled a byte at a time below
            trickling.append(s)
        else:
            s.sendall(b"\x00\x00\xea\x60" + b"\x0a" * 10)  # announces 60,000 bytes, sends 10
        holders.append(s)
    time.sleep(0.3)
    # At the limit a newcomer takes a slow connection's slot (the longest incomplete frame):
    # the next client is served at once, not refused until the frame timeout frees a slot.
    newcomer = Connection(server.port)
    newcomer_served = newcomer.call(ADMIN + "ListPermissions", ka.ListPermissionsRequest(),
                                    ka.ListPermissionsResponse, f"Bearer {server.token}")[0].status == OK
    given_way = sum(1 for s in holders if closed_by_peer(s, 0.005))
    newcomer.close()
    started = time.time()
    deadline = started + 10
    open_count = limit
    while open_count and time.time() < deadline:
        for s in trickling:
            try:
                s.send(b"\x0a")  # the trickle goes on; it must not keep the slot
            except OSError:
                pass
        time.sleep(0.5)
        open_count = sum(1 for s in holders if not closed_by_peer(s, 0.001))
    freed_after = time.time() - started
    conn = Connection(server.port)
    served = conn.call(ADMIN + "ListPermissions", ka.ListPermissionsRequest(), ka.ListPermissionsResponse,
                       f"Bearer {server.token}")[0].status == OK
    for s in holders:
        s.close()
    conn.close()
    server.stop()
    expect(newcomer_served, "a client at the limit was not served while slow connections held the slots")
    expect(given_way == 1, f"{given_way} slow connections gave way to one newcomer")
    expect(open_count == 0, f"{open_count} slow connections still open after {freed_after:.1f} s")
    expect(served, "a normal client was not served after the slow connections were closed")
    return (f"{limit} slowloris / lying-prefix connections (limit {limit}, frame timeout 2 s): "
            f"the next client served at once (a slow one gave way), all closed {freed_after:.1f} s later, "
            f"normal client served")


class StormProber:
    """A valid client beside a storm: asks `ask()` (true when answered right) on a thread of its
    own every 2 ms, timing each answer and counting the wrong ones and those that came while the
    storm was on."""

    def __init__(self, ask):
        self.ask, self.latencies, self.wrong, self.during = ask, [], 0, 0
        self.done, self.storming, self.lock = threading.Event(), threading.Event(), threading.Lock()
        self.worker = Worker(self._run)

    def _run(self):
        while not self.done.is_set():
            started = time.time()
            right = self.ask()
            with self.lock:
                self.latencies.append(time.time() - started)
                self.wrong += not right
                self.during += self.storming.is_set()
            time.sleep(0.002)

    def start(self):
        """Starts asking, and returns once answered: the storm, started next, interleaves with it."""
        self.worker.start()
        while not self.latencies and self.worker.is_alive():
            time.sleep(0.01)
        self.storming.set()

    def is_alive(self):
        return self.worker.is_alive()

    def stop(self):
        """Stops asking; the latencies sorted, the 99th percentile in ms returned."""
        self.storming.clear()
        self.done.set()
        join_all([self.worker], timeout=30)
        self.latencies.sort()
        return self.latencies[int(len(self.latencies) * 0.99)] * 1000 if self.latencies else float("inf")

    def stop_with(self, server, *connections):
        """Ends the storm: stops asking, closes `connections` (the probe's, the storm's) and stops
        `server`; the p99 in ms, and whether the server was still alive."""
        p99 = self.stop()
        for connection in connections:
            connection.close()
        alive = server.process.poll() is None
        server.stop()
        return p99, alive


def garbage_storm(ctx):
    server = ctx.server()
    conn = Connection(server.port)
    secret = conn.admin(server, "CreateKey", ka.CreateKeyRequest(name="k", permissions=["jobs:read"]),
                        ka.CreateKeyResponse).secret
    total = ctx.scale(20_000, 1_000_000)
    rng = random.Random(7)
    methods = [CHECK, ADMIN + "CreateKey", ADMIN + "Nope", "", "/x", ADMIN + "DeleteKey"]
    closes = 0
    probe = Connection(server.port)
    prober = StormProber(lambda: probe.check(secret, ["jobs:read"]).decision == az.ALLOW)
    prober.start()
    sent = 0
    storm = Connection(server.port)
    # At least the planned frames, and for as long as it takes the prober to be answered 50 times
    # meanwhile (a fast run's storm is over in a fraction of a second otherwise).
    give_up = time.time() + 60
    while (sent < total or prober.during < 50) and prober.is_alive() and time.time() < give_up:
        chunk = bytearray()
        for _ in range(1000):
            kind = rng.random()
            if kind < 0.98:
                # Well-framed envelopes with junk inside: each gets a status, the connection stays.
                envelope = env.Envelope(call_id=rng.randrange(1, 2**32), method=rng.choice(methods),
                                        payload=rng.randbytes(rng.randrange(0, 64)))
                body = envelope.SerializeToString()
            else:
                body = rng.randbytes(rng.randrange(1, 64))  # may not even be an envelope
            chunk += struct.pack(">I", len(body)) + body
        try:
            storm.sock.sendall(chunk)
            storm.sock.setblocking(False)
            try:
                while storm.sock.recv(1 << 20):
                    pass
            except BlockingIOError:
                pass
            storm.sock.setblocking(True)
        except (ConnectionError, OSError):
            pass
        if closed_by_peer_nowait(storm.sock):
            closes += 1
            storm.close()
            storm = Connection(server.port)
        sent += 1000
    p99, alive = prober.stop_with(server, probe, storm, conn)
    during, wrong = prober.during, prober.wrong
    expect(alive, "the server died")
    expect(sent >= total, f"the storm stopped after {sent} of {total} frames")
    # Checks were answered while the garbage arrived, not only before or after it.
    expect(during >= 50, f"only {during} valid checks answered during the storm")
    expect(wrong == 0, f"{wrong} valid checks answered wrong")
    # The one wall-clock bound here, and the claim itself: the garbage does not starve a valid
    # client (a debug build is given 5x).
    expect(p99 <= 100 * ctx.slack, f"valid checks' p99 {p99:.0f} ms during the storm")
    return (f"{sent} garbage frames ({closes} connections closed for bad frames), {during} valid checks "
            f"answered during the storm: all right, p99 {p99:.1f} ms, max {prober.latencies[-1] * 1000:.1f} ms")


def _http_garbage(rng, secrets, broken):
    """One mangled request for the HTTP port, every credential in it one that must never be
    allowed. Not `broken`: well-formed HTTP/1.1 with hostile content (targets that climb, encode
    separators or control characters, spoofed proxy headers, repeated or bent credentials), which
    the port answers and keeps the connection for. `broken`: what the parser refuses as well
    (bad methods, versions, header lines, lying lengths, bare LF, bytes that are no request)."""
    if broken and rng.random() < 0.1:
        return rng.randbytes(rng.randrange(1, 300))
    methods = ["GET", "GET", "GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"]
    if broken:
        methods += ["get", "CONNECT", "G\x00T", "X" * rng.randrange(1, 200)]
    rest = rng.choice(["/api/x", "/api/../vault/x", "/api/%2e%2e/vault", "/api/x%2Fy", "/api/x%5cy", "/api/x;y=1",
                       "/api//x", "/api/x?y=../../z", "/api/%ff%fe", "/api/%zz", "", "/", "/API/x",
                       "/api/" + "a" * rng.randrange(0, 6000), "/api/%00x", "/api/%7f", "/%2e%2e/api/x",
                       "/api/./././x", "/api/x/..", "/api/..%2f..%2fx", "/api/%c0%ae%c0%ae/x", "/api/%e2%80%ae"])
    targets = ["/authorize" + rest, "/authorize" + rest, "/authorizeX" + rest, "//authorize" + rest,
               "/authorize/%2e%2e" + rest, "/authorize" + rest.upper(), "/authorize/..%2f" + rest]
    if broken:
        targets += ["http://evil.example/authorize" + rest, "*", "/authorize/api/\\x", "/authorize/api/\x7f",
                    "/authorize/api/x#f"]
    secret = rng.choice(secrets)
    credentials = ["Bearer " + secret, "bearer  " + secret + " ", "Basic " + secret, "Bearer " + secret[:-1],
                   "Bearer " + secret + "x", "Bearer dbm_" + "A" * rng.randrange(0, 3000), "Bearer",
                   "Bearer " + secret.upper(), "BEARER " + secret]
    headers = [("Host", "x")]
    choices = [
        ("Authorization", rng.choice(credentials)),
        ("Authorization", rng.choice(credentials)),
        ("X-API-Key", rng.choice(credentials).split(" ")[-1]),
        ("X-Original-URI", rng.choice(["/api/x", "/api/../x", "%2e", "", "/vault/x", "/api/%2F"])),
        ("X-Original-Method", rng.choice(["GET", "POST", "get", ""])),
        ("X-Forwarded-Uri", "/api/x"), ("X-Forwarded-Method", "GET"),
        ("X-Required-Permissions", rng.choice(["jobs:read", "vault:read", ",", "", "x" * 300])),
        ("X-Forwarded-For", rng.choice(["1.2.3.4", "garbage", "::1, 10.0.0.1", "", "1.1.1.1," * 100])),
        ("Forwarded", "for=1.2.3.4;proto=http"),
        ("X-Rate-Limited-Status", "403"),
        ("X-" + "h" * 200, "v" * rng.randrange(0, 3000)),
    ]
    if broken:
        choices += [
            ("Content-Length", rng.choice(["5", "-1", "99999999999", "abc", "5, 6"])),
            ("Transfer-Encoding", rng.choice(["chunked", "gzip, chunked", "identity", "x"])),
            ("Connection", rng.choice(["close", "upgrade", ""])), ("Expect", "100-continue"), ("Host", "y"),
            ("X-Folded", "a\r\n b"), ("Bad Header", "x"), (":", "x"),
        ]
    for _ in range(rng.randrange(0, 7)):
        headers.append(rng.choice(choices))
    version = rng.choice(["HTTP/1.0", "HTTP/2.0", "HTTP/1.1\x00", "HTP/1.1", "HTTP/9"]) if broken and rng.random() < 0.3 \
        else "HTTP/1.1"
    eol = "\n" if broken and rng.random() < 0.2 else "\r\n"
    head = f"{rng.choice(methods)} {rng.choice(targets)} {version}{eol}"
    head += "".join(f"{name}: {value}{eol}" for name, value in headers) + eol
    body = rng.randbytes(rng.randrange(1, 64)) if broken and rng.random() < 0.3 else b""
    return head.encode("latin-1", errors="replace") + body


def http_garbage_storm(ctx):
    """Mangled forward-auth requests at the HTTP port, every credential in them disabled, unknown,
    malformed or lacking the route's permission, pipelined on eight connections (six well-formed,
    every request answered; two broken, reopened after each burst): not one is allowed, the server
    lives, and a valid client on its own keep-alive connection is allowed each time (and the
    disabled key refused) while the garbage arrives, with a p99 under 100 ms (a debug build is
    given 5x)."""
    routes = os.path.join(ctx.work, "storm.routes")
    with open(routes, "w") as f:
        f.write("GET /api/** jobs:read\nPOST /api/jobs/*/run jobs:execute\n")
    server = ctx.server("--http-port", "0", "--routes", routes)
    conn = Connection(server.port)

    def create(name, permissions):
        return conn.admin(server, "CreateKey", ka.CreateKeyRequest(name=name, permissions=permissions),
                          ka.CreateKeyResponse)

    reader = create("reader", ["jobs:read"]).secret
    disabled = create("disabled", ["jobs:read", "jobs:execute"])
    conn.admin(server, "SetKeyEnabled", ka.SetKeyEnabledRequest(id=disabled.key.id, enabled=False),
               ka.SetKeyEnabledResponse)
    unrelated = create("history", ["history:read"]).secret
    unknown = "dbm_" + "B" * 43
    never = [disabled.secret, unrelated, unknown, reader[:-1] + ("A" if reader[-1] != "A" else "B")]
    total = ctx.scale(20_000, 400_000)
    rng = random.Random(11)
    def ask(sock, secret):
        sock.sendall(f"GET /authorize/api/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secret}\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            expect(chunk, "the prober's connection was closed")
            data += chunk
        head = data.split(b"\r\n\r\n", 1)[0]
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
        rest = data.split(b"\r\n\r\n", 1)[1]
        while len(rest) < length:
            rest += sock.recv(4096)
        return head.split(b" ")[1]

    probe = socket.create_connection(("127.0.0.1", server.http_port), timeout=10)
    prober = StormProber(lambda: ask(probe, reader) == b"200" and ask(probe, disabled.secret) == b"401")
    prober.start()
    statuses, sent, reopened = {}, 0, 0
    # Six connections of well-formed hostile requests, two of requests the parser refuses.
    storms = [socket.create_connection(("127.0.0.1", server.http_port)) for _ in range(8)]
    give_up = time.time() + 120
    while (sent < total or prober.during < 50) and prober.is_alive() and time.time() < give_up:
        # 50 requests in one write on every connection, then each connection's answers: all 50 on
        # a well-formed one; on a broken one, up to the close the parser's refusal brings, or what
        # came within 0.2 s (a request announcing a body it never sends waits for its idle
        # timeout), after which the storm closes it itself.
        for index, sock in enumerate(storms):
            try:
                sock.sendall(b"".join(_http_garbage(rng, never, broken=index >= 6) for _ in range(50)))
            except OSError:
                pass
            sent += 50
        for index, sock in enumerate(storms):
            answered, closed, pending = 0, False, b""
            sock.settimeout(0.2 if index >= 6 else 10 * ctx.slack)
            while answered < 50 and not closed:
                try:
                    data = sock.recv(1 << 20)
                except socket.timeout:
                    expect(index >= 6, f"a well-formed connection's answers stopped after {answered} of 50")
                    data = b""
                except OSError:
                    data = b""
                closed = not data
                pending += data
                # Status lines, each at the start of a line (a body ends in a newline, a bodiless
                # answer in an empty line); what follows the last newline waits for the next read.
                whole, _, pending = pending.rpartition(b"\n")
                for match in re.finditer(rb"(?:^|\n)HTTP/1\.[01] (\d{3}) ", whole + b"\n"):
                    status = match.group(1).decode()
                    statuses[status] = statuses.get(status, 0) + 1
                    answered += 1
            if closed:
                expect(index >= 6, f"a well-formed connection was closed after {answered} of 50 answers")
                sock.close()
                storms[index] = socket.create_connection(("127.0.0.1", server.http_port))
                reopened += 1
    p99, alive = prober.stop_with(server, probe, *storms, conn)
    during, wrong = prober.during, prober.wrong
    expect(alive, "the server died")
    expect(sent >= total, f"the storm stopped after {sent} of {total} requests")
    expect(statuses.get("200", 0) == 0, f"{statuses.get('200')} mangled requests were allowed: {statuses}")
    # Every well-formed request is answered on its connection: three quarters of the storm is judged.
    expect(sum(statuses.values()) >= sent * 3 // 4, f"only {sum(statuses.values())} of {sent} mangled requests answered")
    expect(during >= 50, f"only {during} valid requests answered during the storm")
    expect(wrong == 0, f"{wrong} valid or disabled requests answered wrong")
    expect(p99 <= 100 * ctx.slack, f"valid requests' p99 {p99:.0f} ms during the storm")
    shown = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))
    return (f"{sent} mangled requests on 8 connections (the broken ones reopened {reopened} times); "
            f"answers {shown}, none allowed; {during} valid pairs answered during the storm: all right, "
            f"p99 {p99:.1f} ms")


def closed_by_peer_nowait(sock):
    try:
        sock.setblocking(False)
        data = sock.recv(1 << 20)
        return data == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        try:
            sock.setblocking(True)
        except OSError:
            pass


def admin_matrix(ctx):
    server = ctx.server()
    conn = Connection(server.port)
    created = conn.admin(server, "CreateKey", ka.CreateKeyRequest(name="victim", permissions=["jobs:read"]),
                         ka.CreateKeyResponse)
    revoked = subprocess.run([ctx.binary, "admin-token", "create", "mallory", "--data-dir", server.data_dir],
                             capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run([ctx.binary, "admin-token", "revoke", "mallory", "--data-dir", server.data_dir],
                   capture_output=True, check=True)
    key_id = created.key.id
    requests = {
        "CreateKey": ka.CreateKeyRequest(name="evil", permissions=["vault:read"]),
        "GetKey": ka.GetKeyRequest(id=key_id), "ListKeys": ka.ListKeysRequest(),
        "UpdateKey": ka.UpdateKeyRequest(id=key_id, name="owned"),
        "SetKeyEnabled": ka.SetKeyEnabledRequest(id=key_id, enabled=False),
        "RotateKey": ka.RotateKeyRequest(id=key_id), "DeleteKey": ka.DeleteKeyRequest(id=key_id),
        "ListPermissions": ka.ListPermissionsRequest(), "ListAuditEvents": ka.ListAuditEventsRequest(),
        "GetPolicy": ka.GetPolicyRequest(), "ExportAuditChain": ka.ExportAuditChainRequest(),
        "CreateAdminToken": ka.CreateAdminTokenRequest(name="evil", scope=ka.ADMIN),
        "ListAdminTokens": ka.ListAdminTokensRequest(), "RevokeAdminToken": ka.RevokeAdminTokenRequest(name="bootstrap"),
        "WhoAmI": ka.WhoAmIRequest(),
    }
    tokens = {"none": None, "garbage": "Bearer adm_garbage", "empty": "", "api key": f"Bearer {created.secret}",
              "revoked admin token": f"Bearer {revoked}", "no scheme": server.token, "basic": "Basic eDp5"}

    def state():
        keys = conn.admin(server, "ListKeys", ka.ListKeysRequest(page_size=1000), ka.ListKeysResponse).keys
        events = conn.admin(server, "ListAuditEvents", ka.ListAuditEventsRequest(page_size=1000),
                            ka.ListAuditEventsResponse).events
        tokens = conn.admin(server, "ListAdminTokens", ka.ListAdminTokensRequest(), ka.ListAdminTokensResponse).tokens
        return ([k.SerializeToString() for k in keys], [t.SerializeToString() for t in tokens],
                len([e for e in events if e.trigger == "admin"]))

    before = state()
    calls, wrong = 0, []
    for method, request in requests.items():
        for label, token in tokens.items():
            reply, _ = conn.call(ADMIN + method, request, None, token)
            calls += 1
            if reply.status != UNAUTHENTICATED:
                wrong.append(f"{method} with {label}: status {reply.status}")
    after = state()
    check = conn.check(created.secret, ["jobs:read"])
    conn.close()
    server.stop()
    expect(not wrong, "; ".join(wrong))
    expect(before == after, "an unauthenticated call changed the keys or the trail")
    expect(check.decision == az.ALLOW, "the victim key stopped working")
    return f"{len(requests)} KeyAdmin methods x {len(tokens)} bad credentials: {calls}/{calls} UNAUTHENTICATED, 0 state change"


def revocation_race(ctx):
    server = ctx.server()
    rounds = ctx.scale(100, 1000)
    kinds = ("delete", "disable", "rotate", "create-delete")
    per_kind = rounds // len(kinds)
    allows_after, checks, killed = 0, 0, 0
    lock = threading.Lock()

    def worker(kind):
        nonlocal allows_after, checks, killed
        admin = Connection(server.port)
        checker = Connection(server.port)
        for _ in range(per_kind):
            created = admin.admin(server, "CreateKey", ka.CreateKeyRequest(name="r", permissions=["jobs:read"]),
                                  ka.CreateKeyResponse)
            if kind == "delete":
                admin.admin(server, "DeleteKey", ka.DeleteKeyRequest(id=created.key.id), ka.DeleteKeyResponse)
            elif kind == "disable":
                admin.admin(server, "SetKeyEnabled", ka.SetKeyEnabledRequest(id=created.key.id, enabled=False),
                            ka.SetKeyEnabledResponse)
            elif kind == "rotate":
                admin.admin(server, "RotateKey", ka.RotateKeyRequest(id=created.key.id), ka.RotateKeyResponse)
            else:  # create-then-delete on another connection at once
                other = Connection(server.port)
                other.admin(server, "DeleteKey", ka.DeleteKeyRequest(id=created.key.id), ka.DeleteKeyResponse)
                other.close()
            with lock:
                killed += 1
            for _ in range(3):
                answer = checker.check(created.secret, ["jobs:read"])
                with lock:
                    checks += 1
                    allows_after += answer.decision == az.ALLOW
        admin.close()
        checker.close()

    workers = [Worker(worker, kind) for kind in kinds]
    for w in workers:
        w.start()
    join_all(workers)
    server.stop()
    # The workload ran as planned: every key was killed and checked three times after.
    expect(killed == per_kind * len(kinds), f"{killed} of {per_kind * len(kinds)} keys killed")
    expect(checks == 3 * killed, f"{checks} of {3 * killed} checks made")
    expect(allows_after == 0, f"{allows_after} checks allowed after the call that killed the key returned")
    return (f"{killed} keys killed (delete, disable, rotate, create-then-delete), {checks} checks after each "
            f"call returned: {allows_after} allowed")


def _hold_connections(port, source, count, report, release):
    """A flood process: `count` connections to `port` from `source`, held until `release` is
    set; reports how many it opened and how many could not be."""
    held, failed = [], 0
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((source, 0))
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            held.append(s)
        except OSError:
            failed += 1
            s.close()
    report.put((len(held), failed))
    release.wait(60)
    for s in held:
        s.close()


def http_connection_flood(ctx):
    """25,000 connections to the HTTP port, from 127.0.0.2-.5 in four processes (each under the
    descriptor limit a process has here): apikeyd never holds more than --max-http-connections
    (a new connection takes the slot of the oldest idle one), so it never runs out of
    descriptors; RPC Checks and /healthz are answered throughout."""
    cap = 1000
    server = ctx.server("--http-port", "0", "--max-http-connections", str(cap))
    return _connection_flood(server, server.http_port, 25_000, cap, "/healthz", b"HTTP/1.1 200", "HTTP")


def admin_connection_flood(ctx):
    """4,000 silent connections to the admin API's port (it holds 256), from four processes: a
    new connection takes the slot of the one idle longest, so the operator's requests are
    answered throughout (before, they waited in the listen backlog until a silent connection
    reached its 30 s request timeout), RPC Checks too, and apikeyd never runs out of descriptors."""
    server = ctx.server("--admin-port", "0")
    return _connection_flood(server, server.admin_port, 4_000, 256, "/v1/keys", b"HTTP/1.1 401", "admin")


def _connection_flood(server, port, total, cap, probe_path, probe_answer, name):
    """`total` connections to `port` (at most `cap` held), from 127.0.0.2-.5 in four processes,
    while RPC Checks and GET `probe_path` (answered `probe_answer`) are asked: each is answered,
    and apikeyd's descriptors stay within the cap (plus the connections being closed)."""
    import multiprocessing
    conn = Connection(server.port)
    secret = conn.admin(server, "CreateKey", ka.CreateKeyRequest(name="k", permissions=["jobs:read"]),
                        ka.CreateKeyResponse).secret
    spawn = multiprocessing.get_context("fork")
    report, release = spawn.Queue(), spawn.Event()
    floods = [spawn.Process(target=_hold_connections,
                            args=(port, f"127.0.0.{2 + i}", total // 4, report, release), daemon=True)
              for i in range(4)]
    for f in floods:
        f.start()
    tally = {"checks": 0, "allowed": 0, "probes": 0, "probed_ok": 0}
    results = []
    baseline = len(os.listdir(f"/proc/{server.process.pid}/fd"))
    most = baseline

    def sample():
        """Meanwhile: an RPC Check and the probe, each answered; apikeyd's descriptors counted."""
        nonlocal most
        tally["checks"] += 1
        tally["allowed"] += conn.check(secret, ["jobs:read"]).decision == az.ALLOW
        most = max(most, len(os.listdir(f"/proc/{server.process.pid}/fd")))
        tally["probes"] += 1
        try:
            tally["probed_ok"] += HTTPGet(port, probe_path).startswith(probe_answer)
        except OSError:
            pass

    try:
        deadline = time.time() + 120
        while len(results) < len(floods) and time.time() < deadline:
            sample()
            try:
                results.append(report.get(timeout=0.2))
            except Exception:  # noqa: BLE001 - queue.Empty: not done yet
                pass
        expect(len(results) == len(floods), f"{len(results)} of {len(floods)} flood processes reported")
        # The flood held: the server has accepted (and closed) what the kernel queued.
        for _ in range(20):
            time.sleep(0.25)
            sample()
    finally:
        release.set()
        for f in floods:
            f.join(30)
    healthy, deadline = False, time.time() + 30
    while time.time() < deadline and not healthy:
        try:
            healthy = HTTPGet(port, probe_path).startswith(probe_answer)
        except OSError:
            time.sleep(0.2)
    conn.close()
    alive = server.process.poll() is None
    server.stop()
    opened = sum(r[0] for r in results)
    failed = sum(r[1] for r in results)
    expect(alive, "the server died")
    expect(opened >= total * 9 // 10, f"only {opened} of {total} connections opened ({failed} failed)")
    # Over the cap by the connections being closed: a newcomer takes an idle connection's slot at
    # once, while that one's close waits its turn on its own event loop (seen: up to 59 over).
    expect(most <= baseline + cap + 100, f"apikeyd held {most} descriptors ({baseline} before; cap {cap})")
    checks, allowed, probes, probed_ok = tally["checks"], tally["allowed"], tally["probes"], tally["probed_ok"]
    expect(checks >= 5 and allowed == checks, f"{allowed} of {checks} RPC Checks allowed during the flood")
    expect(probed_ok == probes, f"{probe_path} answered {probed_ok} of {probes} times during the flood")
    expect(healthy, f"{probe_path} did not answer after the flood")
    return (f"{opened} {name} connections (cap {cap}): apikeyd's descriptors {baseline} -> at most {most}, the "
            f"rest closed on accept; "
            f"{allowed}/{checks} RPC Checks allowed and {probe_path} answered {probed_ok}/{probes} meanwhile")


def made_up_secret(rng, prefix="adm_"):
    """A well-formed secret nobody was given: 40 base-62 characters and their CRC-32 check
    digits (docs/PROTOCOL.md §5). Anyone can make these; only a store lookup tells them apart."""
    import zlib
    alphabet = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    head = prefix.encode() + bytes(rng.choice(alphabet) for _ in range(40))
    value, check = zlib.crc32(head), bytearray(6)
    for index in range(5, -1, -1):
        check[index], value = alphabet[value % 62], value // 62
    return (head + bytes(check)).decode()


def _in_threads(work, count):
    """Runs `work` in `count` threads at once and returns when all have."""
    threads = [threading.Thread(target=work) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _leak_report(body, forwarded_for=None):
    """`POST /leaked-keys` carrying the JSON `body` (bytes), from `forwarded_for` if given (the
    X-Forwarded-For a proxy on loopback, which apikeyd trusts by default, would write)."""
    forwarded = f"X-Forwarded-For: {forwarded_for}\r\n".encode() if forwarded_for else b""
    return (b"POST /leaked-keys HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%s"
            b"Content-Length: %d\r\n\r\n%s" % (forwarded, len(body), body))


def _report_and_leave(port, seconds, seed, sent):
    """A flood process: four threads post leak reports of 100 made-up admin tokens each (every
    one a store lookup) to `port` and close without reading the answer, for `seconds`."""
    import json
    rng = random.Random(seed)
    bodies = [json.dumps([{"token": made_up_secret(rng), "url": "x"} for _ in range(100)]).encode()
              for _ in range(20)]
    requests = [_leak_report(body) for body in bodies]
    count = [0]

    def post():
        end = time.time() + seconds
        while time.time() < end:
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.sendall(requests[count[0] % len(requests)])
                s.close()
                count[0] += 1
            except OSError:
                time.sleep(0.01)

    _in_threads(post, 4)
    sent.put(count[0])


def leak_report_flood(ctx):
    """Leak reports need no secret: four processes post reports of 100 made-up admin tokens each
    and leave without reading the answers. apikeyd takes 16 reports at once on the HTTP port
    (the rest are answered 503) and 32 reads of unknown admin tokens at once (the rest refused,
    not queued), so it does not queue work and memory without bound: its CPU settles as soon as
    the flood stops (before: 25 s of queued lookups after a 15 s flood, and 1 GB of memory), the
    operator's admin calls are answered throughout, a scanner reporting from another address
    meanwhile is taken each time (one address gets at most 4 of the 16 slots), and a real leak
    report, sent again on 503, disables its key."""
    import multiprocessing
    server = ctx.server("--http-port", "0")
    conn = Connection(server.port)
    secret = conn.admin(server, "CreateKey", ka.CreateKeyRequest(name="leaked", permissions=["jobs:read"]),
                        ka.CreateKeyResponse).secret
    seconds = ctx.scale(8, 20)
    spawn = multiprocessing.get_context("fork")
    sent = spawn.Queue()
    floods = [spawn.Process(target=_report_and_leave, args=(server.http_port, seconds, i, sent), daemon=True)
              for i in range(4)]
    before = server.rss_kb() // 1024
    most = before
    admin_waits = []
    scanner = {}
    rng = random.Random(7)
    for f in floods:
        f.start()
    try:
        time.sleep(1)
        while any(f.is_alive() for f in floods):
            started = time.time()
            conn.admin(server, "ListKeys", ka.ListKeysRequest(), ka.ListKeysResponse)
            admin_waits.append(time.time() - started)
            most = max(most, server.rss_kb() // 1024)
            # A scanner behind the trusted (loopback) proxy, from its own address.
            body = f'[{{"token": "{made_up_secret(rng)}", "url": "x"}}]'.encode()
            s = socket.create_connection(("127.0.0.1", server.http_port), timeout=10)
            s.sendall(_leak_report(body, forwarded_for="10.7.7.7"))
            status = s.recv(64)[9:12].decode()
            s.close()
            scanner[status] = scanner.get(status, 0) + 1
            time.sleep(0.2)
        for f in floods:
            f.join(30)
        reports = sum(sent.get(timeout=10) for _ in floods)
        # What the server still works on once the flood has stopped: queued lookups, if any.
        settled_from = server.cpu_seconds()
        time.sleep(3)
        after_flood = server.cpu_seconds() - settled_from
        # A real report gets through once the flood is over, sent again while it is refused.
        answered, tries = b"", 0
        while not answered.startswith(b"HTTP/1.1 200") and tries < 20:
            tries += 1
            body = f'[{{"token": "{secret}", "url": "x"}}]'.encode()
            s = socket.create_connection(("127.0.0.1", server.http_port), timeout=10)
            s.sendall(_leak_report(body))
            answered = s.recv(4096)
            s.close()
            if not answered.startswith(b"HTTP/1.1 200"):
                expect(answered.startswith(b"HTTP/1.1 503"), f"a leak report was answered {answered[:40]!r}")
                time.sleep(0.5)
        decision = conn.check(secret, ["jobs:read"])
    finally:
        for f in floods:
            f.kill()
    alive = server.process.poll() is None
    conn.close()
    server.stop()
    expect(alive, "the server died")
    expect(reports >= 1000, f"only {reports} reports sent")
    expect(after_flood < 1.0, f"apikeyd used {after_flood:.1f} s of CPU in the 3 s after the flood: work queued")
    expect(most - before < 300, f"apikeyd's memory grew from {before} to {most} MB")
    expect(len(admin_waits) >= 5 and max(admin_waits) < 2,
           f"admin calls during the flood waited up to {max(admin_waits, default=0):.2f} s ({len(admin_waits)})")
    expect(sum(scanner.values()) >= 5 and set(scanner) == {"200"},
           f"the scanner's reports during the flood were answered {scanner}")
    expect(answered.startswith(b"HTTP/1.1 200"), f"the real report was not taken in {tries} tries")
    expect(decision.decision != az.ALLOW, "the reported key is still allowed")
    return (f"{reports} reports of 100 made-up admin tokens in {seconds} s: CPU {after_flood:.2f} s in the 3 s "
            f"after, memory {before} -> at most {most} MB, {len(admin_waits)} admin calls answered within "
            f"{max(admin_waits):.2f} s, the scanner's {sum(scanner.values())} reports from another address all "
            f"taken, the real report taken on try {tries}")


def admin_request_flood(ctx):
    """Requests to the admin API's port without a valid token (none, or made-up ones), on
    keep-alive connections from three processes as fast as they go. They get at most half the
    port's rate (--admin-rate, 100 a second by default; the rest are answered 429), so the
    operator, whose token was live when the server started (so it is verified from its first
    call), is answered throughout: before, one bucket for all callers gave the flood every answer
    and the operator 429 for as long as it lasted."""
    import multiprocessing
    server = ctx.server("--admin-port", "0")
    seconds = ctx.scale(6, 15)
    operator = f"Bearer {server.token}"
    spawn = multiprocessing.get_context("fork")
    sent = spawn.Queue()
    floods = [spawn.Process(target=_admin_requests, args=(server.admin_port, seconds, i, sent), daemon=True)
              for i in range(3)]
    for f in floods:
        f.start()
    statuses = []
    try:
        time.sleep(1)
        while any(f.is_alive() for f in floods):
            statuses.append(_admin_status(server.admin_port, "/v1/policy", operator))
            time.sleep(0.1)
        for f in floods:
            f.join(30)
        answers = [sent.get(timeout=10) for _ in floods]
    finally:
        for f in floods:
            f.kill()
    alive = server.process.poll() is None
    server.stop()
    expect(alive, "the server died")
    requests = sum(a[0] for a in answers)
    answered = sum(a[1] for a in answers)
    expect(requests >= 1000, f"only {requests} flood requests answered")
    served = statuses.count(200)
    expect(len(statuses) >= 10 and served == len(statuses),
           f"the operator was answered {served} of {len(statuses)} times during the flood ({set(statuses)})")
    # Half of 100 a second, bursts of 100, for the flood's length (and a second's slack).
    expect(answered <= 100 + 50 * (seconds + 1), f"the flood got {answered} answers in {seconds} s")
    return (f"{requests} requests without a valid token in {seconds} s, {answered} of them answered (401), "
            f"the rest 429; the operator answered {served} of {len(statuses)} times")


def _admin_status(port, path, authorization):
    """The status of one GET to the admin API with `authorization` (Connection: close)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {authorization}\r\n"
              f"Connection: close\r\n\r\n".encode())
    head = s.recv(64)
    s.close()
    return int(head.split(b" ")[1]) if head.startswith(b"HTTP/1.1 ") else 0


def _admin_requests(port, seconds, seed, sent):
    """A flood process: four threads send GET /v1/keys without a token or with made-up ones on
    keep-alive connections, reading each answer, for `seconds`; reports (requests, not 429)."""
    rng = random.Random(seed)
    requests = [b"GET /v1/keys HTTP/1.1\r\nHost: x\r\n\r\n"] + [
        b"GET /v1/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n" % made_up_secret(rng).encode()
        for _ in range(20)]
    counts = [0, 0]
    lock = threading.Lock()

    def send():
        end, index = time.time() + seconds, 0
        while time.time() < end:
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                for _ in range(100):
                    index += 1
                    s.sendall(requests[index % len(requests)])
                    answer = _read_http_answer(s)
                    if not answer:
                        break
                    with lock:
                        counts[0] += 1
                        counts[1] += not answer.startswith(b"HTTP/1.1 429")
                s.close()
            except OSError:
                time.sleep(0.01)

    _in_threads(send, 4)
    sent.put(tuple(counts))


def _read_http_answer(s):
    """One HTTP/1.1 answer with a Content-Length body from `s`; b"" when the peer closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            return b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = s.recv(4096)
        if not chunk:
            return b""
        body += chunk
    return head


def http_never_reading_clients(ctx):
    """Clients that pipeline unauthenticated forward-auth requests to the HTTP port and never read
    the answers: the port stops reading them once their answers back up, so apikeyd's memory stays
    put (the answers queued per connection are bounded by one small read's worth beyond the write
    buffer's high water mark) and /healthz is answered meanwhile, without waiting long."""
    server = ctx.server("--http-port", "0")
    return never_reading_pipeliners(ctx, server, server.http_port, "/authorize/x", "/healthz", b"HTTP/1.1 200")


def admin_never_reading_clients(ctx):
    """The same against the JSON admin API's port (Hummingbird), unauthenticated: each request is
    refused (401, or 429 past the port's request rate), and the refusals are not read. Fewer
    clients in the fast variant: a debug build answers each refusal slowly, and the probe waits
    for a turn of every flooder (1.6 s with 16)."""
    server = ctx.server("--admin-port", "0")
    return never_reading_pipeliners(ctx, server, server.admin_port, "/v1/keys", "/v1/keys", b"HTTP/1.1 4",
                                    clients=ctx.scale(8, 40))


def never_reading_pipeliners(ctx, server, port, path, probe_path, probe_answer, clients=None):
    """Clients pipeline GET `path` to `port` without reading while `probe_path` is asked every
    0.5 s on a connection of its own: RSS must grow by less than 512 KB a client, and every probe
    be answered (`probe_answer`) within 1 s (5 s on a debug build)."""
    burst = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode() * 2000
    count, clients = clients or ctx.scale(16, 40), []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setblocking(False)
        clients.append(s)
    before, offsets, sent = server.rss_kb(), [0] * len(clients), 0
    peak, probes, probed_ok, slowest = before, 0, 0, 0.0
    stop, next_probe = time.time() + ctx.scale(8, 30), time.time() + 0.5
    while time.time() < stop:
        progress = False
        for index, s in enumerate(clients):
            try:
                taken = s.send(burst[offsets[index]:])  # from where the kernel stopped: never a cut request
                offsets[index] = (offsets[index] + taken) % len(burst)
                sent += taken
                progress = True
            except BlockingIOError:
                pass
        if time.time() >= next_probe:
            peak = max(peak, server.rss_kb())
            probes += 1
            asked = time.monotonic()
            probed_ok += HTTPGet(port, probe_path).startswith(probe_answer)
            slowest = max(slowest, time.monotonic() - asked)
            next_probe = time.time() + 0.5
        if not progress:
            time.sleep(0.01)
    peak = max(peak, server.rss_kb())
    for s in clients:
        s.close()
    server.stop()
    growth_kb = peak - before
    # Before the HTTP port had write backpressure, one such client grew apikeyd by ~750 MB in 30 s;
    # while the ports read up to 4 x 64 KiB per turn, each grew it by ~1.3 MB (the answers to one
    # read) and delayed the others by up to a second.
    expect(growth_kb < 512 * len(clients),
           f"RSS grew {growth_kb >> 10} MB ({growth_kb // len(clients)} KB a connection) while {len(clients)} "
           f"clients sent {sent >> 20} MB unread")
    expect(probed_ok == probes and probes > 0, f"{probe_path} answered {probed_ok} of {probes} times meanwhile")
    # The flooders' loop turns are short (one small read each), so others wait little.
    expect(slowest < 1.0 * ctx.slack, f"the slowest {probe_path} took {slowest * 1000:.0f} ms meanwhile")
    return (f"{len(clients)} clients pipelined {sent >> 20} MB of GET {path} without reading: RSS "
            f"{before // 1024} -> {peak // 1024} MB at most; {probe_path} answered {probed_ok}/{probes} "
            f"meanwhile, the slowest in {slowest * 1000:.0f} ms")


def HTTPGet(port, path):
    """One GET with Connection: close; the whole response."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    return data


def worst_shape_flood(ctx):
    """Two connections send 64 KiB frames of the costliest shape to decode (32,000 empty
    permissions in a Check; 32,000 empty metadata entries) as fast as they can, for a while; a
    normal client's checks meanwhile keep a p99 under 5 ms (a debug build is given 5x)."""
    server = ctx.server()
    conn = Connection(server.port)
    secret = conn.admin(server, "CreateKey", ka.CreateKeyRequest(name="k", permissions=["jobs:read"]),
                        ka.CreateKeyResponse).secret
    empties = b"\x12\x00" * 32_000  # CheckRequest.permissions (field 2), empty, 32,000 times
    check_body = env.Envelope(call_id=1, method=CHECK, payload=b"\x0a\x04dbm_" + empties).SerializeToString()
    meta_body = env.Envelope(call_id=1, method=ADMIN + "ListKeys").SerializeToString() + b"\x32\x00" * 32_000
    check_frame = struct.pack(">I", len(check_body)) + check_body
    meta_frame = struct.pack(">I", len(meta_body)) + meta_body
    expect(len(check_frame) <= 65_540 and len(meta_frame) <= 65_540, "frames over 64 KiB")
    stop = threading.Event()
    sent = [0, 0]

    def permissions_flood():
        c = Connection(server.port)
        while not stop.is_set():
            c.sock.sendall(check_frame * 4)
            for _ in range(4):
                reply = c.reply()
                expect(reply.status == 3, f"a Check of 32,000 permissions answered {reply.status}")  # INVALID_ARGUMENT
            sent[0] += 4
        c.close()

    def metadata_flood():
        while not stop.is_set():
            c = Connection(server.port)
            try:
                c.sock.sendall(meta_frame)
                expect(closed_by_peer(c.sock, 5), "an envelope of 32,000 metadata entries did not close its connection")
            except (ConnectionError, OSError):
                pass  # closed while sending: the refusal
            sent[1] += 1
            c.close()

    workers = [Worker(permissions_flood), Worker(metadata_flood)]
    for w in workers:
        w.start()
    latencies = []
    until = time.time() + ctx.scale(5, 30)
    while time.time() < until and all(w.is_alive() for w in workers):
        started = time.perf_counter()
        answer = conn.check(secret, ["jobs:read"])
        latencies.append(time.perf_counter() - started)
        expect(answer.decision == az.ALLOW, "a normal check was not allowed")
        time.sleep(0.005)
    stop.set()
    join_all(workers, timeout=30)
    conn.close()
    alive = server.process.poll() is None
    server.stop()
    expect(alive, "the server died")
    expect(sent[0] >= 100 and sent[1] >= 20, f"the flood sent only {sent} frames")
    expect(len(latencies) >= 100, f"only {len(latencies)} normal checks")
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)] * 1000
    expect(p99 < 5 * ctx.slack, f"normal checks' p99 {p99:.1f} ms under the flood")
    return (f"{sent[0]} Checks of 32,000 empty permissions (INVALID_ARGUMENT) and {sent[1]} envelopes of 32,000 "
            f"empty metadata entries (connection closed), 64 KiB each: {len(latencies)} normal checks meanwhile, "
            f"p50 {latencies[len(latencies) // 2] * 1000:.2f} ms, p99 {p99:.2f} ms")


def kill9_under_mutations(ctx):
    data_dir = ctx.data_dir()
    cycles = ctx.scale(5, 20)
    acknowledged, deleted, deleting = {}, set(), set()
    lost = 0
    acknowledged_per_cycle = []
    for cycle in range(cycles):
        server = Server(ctx.binary, data_dir)
        killed = threading.Event()
        lock = threading.Lock()
        before = len(acknowledged)

        def mutate():
            conn = Connection(server.port)
            try:
                while True:
                    created = conn.admin(server, "CreateKey", ka.CreateKeyRequest(name="k", permissions=["jobs:read"]),
                                         ka.CreateKeyResponse)
                    with lock:
                        acknowledged[created.key.id] = created.secret
                    if random.random() < 0.3:
                        with lock:
                            deleting.add(created.key.id)  # in flight: it may or may not commit
                        conn.admin(server, "DeleteKey", ka.DeleteKeyRequest(id=created.key.id), ka.DeleteKeyResponse)
                        with lock:
                            deleted.add(created.key.id)
            except (ConnectionError, OSError, Failure, struct.error):
                # Only the kill may end the loop: a refusal or a lost connection before it is a failure.
                if not killed.is_set():
                    raise

        workers = [Worker(mutate) for _ in range(4)]
        for w in workers:
            w.start()
        time.sleep(random.uniform(0.5, 1.5))
        killed.set()
        server.kill9()
        join_all(workers, timeout=30)
        acknowledged_per_cycle.append(len(acknowledged) - before)
        expect(acknowledged_per_cycle[-1] > 0, f"cycle {cycle}: no CreateKey was acknowledged before the kill")
        integrity = sqlite3.connect(os.path.join(data_dir, "apikeys.sqlite")).execute(
            "PRAGMA integrity_check").fetchone()[0]
        expect(integrity == "ok", f"cycle {cycle}: integrity_check says {integrity}")
    server = Server(ctx.binary, data_dir)
    conn = Connection(server.port)
    present = set()
    token = ""
    while True:
        page = conn.admin(server, "ListKeys", ka.ListKeysRequest(page_size=1000, page_token=token), ka.ListKeysResponse)
        present.update(k.id for k in page.keys)
        token = page.next_page_token
        if not token:
            break
    lost = len([i for i in acknowledged if i not in deleting and i not in present])
    resurrected = len([i for i in deleted if i in present])
    conn.close()
    server.stop()
    expect(lost == 0 and resurrected == 0, f"{lost} acknowledged creates lost, {resurrected} acknowledged deletes undone")
    expect(deleted, "no DeleteKey was acknowledged: the undone-delete half proved nothing")
    return (f"{cycles} kill -9 cycles under 4 mutating clients: {len(acknowledged)} creates (at least "
            f"{min(acknowledged_per_cycle)} a cycle) and {len(deleted)} deletes acknowledged, 0 lost, 0 undone, "
            f"integrity ok {cycles}/{cycles}")


def disk_full(ctx):
    mount = tempfile.mkdtemp(prefix="apikeyd-full-")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", mount], capture_output=True).returncode:
        os.rmdir(mount)
        if ctx.allow_skips:
            return "SKIPPED: cannot mount a small tmpfs here (needs root)"
        raise Failure("cannot mount a small tmpfs here (needs root; --allow-skips to skip this check)")
    try:
        data_dir = os.path.join(mount, "data")
        server = Server(ctx.binary, data_dir)
        conn = Connection(server.port)
        secret = conn.admin(server, "CreateKey", ka.CreateKeyRequest(name="k", permissions=["jobs:read"]),
                            ka.CreateKeyResponse).secret
        filler = os.path.join(mount, "filler")
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * (1 << 20))
                    f.flush()
            except OSError:
                pass
        acknowledged, refusals, leaks = 0, 0, []
        for index in range(300):
            reply, _ = conn.call(ADMIN + "CreateKey", ka.CreateKeyRequest(name=f"f{index}", permissions=["jobs:read"]),
                                 ka.CreateKeyResponse, f"Bearer {server.token}")
            if reply.status == OK:
                acknowledged += 1
            else:
                refusals += 1
                if "/" in reply.status_message or "SQLite" in reply.status_message:
                    leaks.append(reply.status_message)
        # Checks while the disk is full: each answered (conn.check fails on any other status) and
        # allowed, their events held in the writer's queue until space returns.
        answered = sum(conn.check(secret, ["jobs:read"], "r" * 500).decision == az.ALLOW for _ in range(2000))
        os.unlink(filler)
        recovered = False
        for _ in range(50):
            reply, _ = conn.call(ADMIN + "CreateKey", ka.CreateKeyRequest(name="after", permissions=["jobs:read"]),
                                 ka.CreateKeyResponse, f"Bearer {server.token}")
            if reply.status == OK:
                recovered = True
                acknowledged += 1
                break
            time.sleep(0.1)
        keys = conn.admin(server, "ListKeys", ka.ListKeysRequest(page_size=1000), ka.ListKeysResponse).keys
        conn.close()
        status = server.stop()
        expect(refusals > 0, "the disk never filled: the check proved nothing")
        expect(answered == 2000, f"{answered}/2000 checks allowed while the disk was full")
        expect(not leaks, f"internals in a status message: {leaks[0] if leaks else ''}")
        expect(recovered, "CreateKey did not succeed again after space returned")
        expect(len(keys) == acknowledged + 1, f"{len(keys) - 1} keys stored, {acknowledged} acknowledged")
        expect(status == 0, f"apikeyd exited {status} after space returned")
        return (f"disk full: {refusals} CreateKeys refused (RESOURCE_EXHAUSTED, no path or SQL), {acknowledged} "
                f"acknowledged and all stored, {answered}/2000 checks answered; resumed by itself when space returned")
    finally:
        subprocess.run(["umount", "-l", mount], capture_output=True)
        shutil.rmtree(mount, ignore_errors=True)


def soak(ctx):
    seconds = ctx.scale(15, 600)
    server = ctx.server()
    conn = Connection(server.port)
    secrets = [conn.admin(server, "CreateKey", ka.CreateKeyRequest(name=f"s{i}", permissions=["jobs:read"]),
                          ka.CreateKeyResponse).secret for i in range(20)]
    errors, calls = 0, 0
    lock = threading.Lock()
    stop = time.time() + seconds

    per_worker = [0] * 4

    def load(worker):
        nonlocal errors, calls
        c = None
        rng = random.Random(worker)
        while time.time() < stop:
            try:
                if c is None:
                    c = Connection(server.port)
                if rng.random() < 0.01:
                    created = c.admin(server, "CreateKey", ka.CreateKeyRequest(name="t", permissions=["jobs:read"]),
                                      ka.CreateKeyResponse)
                    c.admin(server, "DeleteKey", ka.DeleteKeyRequest(id=created.key.id), ka.DeleteKeyResponse)
                    made = 2
                else:
                    batch = b"".join(c.frame(CHECK, az.CheckRequest(key=rng.choice(secrets), permissions=["jobs:read"]))
                                     for _ in range(16))
                    c.sock.sendall(batch)
                    for _ in range(16):
                        if c.reply().status != OK:
                            with lock:
                                errors += 1
                    made = 16
                with lock:
                    calls += made
                    per_worker[worker] += made
            except Exception:  # noqa: BLE001 - every failure is an error of the soak
                with lock:
                    errors += 1
                if c is not None:
                    c.close()
                c = None
                time.sleep(0.05)
        if c is not None:
            c.close()

    workers = [Worker(load, w) for w in range(4)]
    for w in workers:
        w.start()
    samples = []
    while time.time() < stop:
        time.sleep(min(5, seconds / 10))
        samples.append(server.rss_kb())
    join_all(workers, timeout=60)
    # Each worker carried load the whole time (a dead or stuck one would leave its count near 0).
    expect(min(per_worker) >= 100 * seconds, f"calls per worker {per_worker}: a worker barely ran")
    expect(len(samples) >= 3, f"{len(samples)} RSS samples")
    conn.close()
    server.stop()
    warm = samples[len(samples) // 3] if samples else 1
    drift = (samples[-1] - warm) / warm * 100 if samples else 0
    expect(errors == 0, f"{errors} errors")
    expect(abs(drift) <= 10, f"RSS moved {drift:+.1f}% after warm-up ({warm // 1024} -> {samples[-1] // 1024} MB; "
                             f"{calls} calls, 0 errors)")
    return (f"{seconds} s soak, 4 clients: {calls} calls, 0 errors, RSS {warm // 1024} -> {samples[-1] // 1024} MB "
            f"after warm-up ({drift:+.1f}%)")


CHECKS = [never_reading_clients, slowloris_at_the_limit, garbage_storm, http_garbage_storm, worst_shape_flood,
          http_connection_flood, admin_connection_flood, leak_report_flood, admin_request_flood,
          http_never_reading_clients, admin_never_reading_clients, admin_matrix, revocation_race, kill9_under_mutations, disk_full, soak]


class Context:
    def __init__(self, binary, fast, work, allow_skips=False):
        self.binary, self.fast, self.work, self.allow_skips = binary, fast, work, allow_skips
        # A debug build answers several times slower than a release build.
        self.slack = 5 if fast else 1
        self.servers = []

    def scale(self, fast, full):
        return fast if self.fast else full

    def data_dir(self):
        return tempfile.mkdtemp(prefix="data-", dir=self.work)

    def server(self, *args):
        server = Server(self.binary, self.data_dir(), *args)
        self.servers.append(server)
        return server

    def cleanup(self):
        for server in self.servers:
            if server.process.poll() is None:
                server.kill9()
        self.servers = []


def main():
    global env, az, ka
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--fast", action="store_true")
    parser.add_argument("--only", default="")
    parser.add_argument("--allow-skips", action="store_true", help="a check that cannot run here is skipped, not failed")
    options = parser.parse_args()
    work = tempfile.mkdtemp(prefix="apikeyd-chaos-")
    try:
        compile_protos(os.path.join(ROOT, "proto"), os.path.join(work, "python"))
        from apikeys.v1 import authorize_pb2 as az  # noqa: F811
        from apikeys.v1 import envelope_pb2 as env  # noqa: F811
        from apikeys.v1 import keyadmin_pb2 as ka  # noqa: F811
        ctx = Context(os.path.abspath(options.binary), options.fast, work, options.allow_skips)
        chosen = [c for c in CHECKS if not options.only or c.__name__ in options.only.split(",")]
        passed, failed, skipped = 0, 0, 0
        for check in chosen:
            started = time.time()
            try:
                figure = check(ctx)
                if figure.startswith("SKIPPED"):
                    skipped += 1
                    print(f"chaos {check.__name__}: {figure}", flush=True)
                    continue
                passed += 1
                print(f"chaos {check.__name__}: ok ({time.time() - started:.0f} s): {figure}", flush=True)
            except Exception as error:  # noqa: BLE001 - a failed check is reported, then the next runs
                failed += 1
                print(f"chaos {check.__name__}: FAILED ({time.time() - started:.0f} s): {error}", flush=True)
            finally:
                ctx.cleanup()
        print(f"chaos: {passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
        return 1 if failed else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
