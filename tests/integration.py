#!/usr/bin/env python3
"""Integration tests for lb: real lb processes, real backends (tests/backend.py), real clients.

    python3 tests/integration.py [--only SUBSTR] [--keep]

The lb binary is $LB_BIN (default ./lb, relative to the repository root). Each test writes its own
config with free ports, starts lb, checks, and stops every process it started (by PID). Backends are
shared between tests. One line per test: "PASS name" or "FAIL name: reason"; then
"integration: N passed, N failed"; exit status 1 when any test failed.
"""
import argparse
import base64
import hashlib
import http.client
import json
import os
import re
import select
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKEND = os.path.join(ROOT, "tests", "backend.py")
LB_BIN = os.environ.get("LB_BIN", "./lb")
if not os.path.isabs(LB_BIN):
    LB_BIN = os.path.normpath(os.path.join(ROOT, LB_BIN))
HOST = "127.0.0.1"
PIECE = 65536
BLOCK = bytes(range(256)) * (PIECE // 256)  # the backend's /bytes pattern
SUITE_BUDGET = 194  # seconds for all tests (the two keep-alive pool tests take ~11 s, the access-log ones ~7); with cleanup ~3 minutes
RID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class Fail(Exception):
    pass


class Timeout(BaseException):
    """Raised by SIGALRM when a test overruns (BaseException: tests' `except Exception` lets it by)."""


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def eq(actual, expected, what):
    if actual != expected:
        raise Fail("%s: expected %r, got %r" % (what, expected, actual))


def short(b, n=120):
    r = repr(b)
    return r if len(r) <= n else r[:n] + "..."


# ---------------------------------------------------------------------------------------- ports

_used_ports = set()


def free_port():
    for _ in range(100):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((HOST, 0))
        p = s.getsockname()[1]
        s.close()
        if p not in _used_ports:
            _used_ports.add(p)
            return p
    raise Fail("no free port")


def proc_net_tcp():
    """The rows of /proc/net/tcp and /proc/net/tcp6, each split into its fields (a file that cannot be
    read gives none)."""
    rows = []
    for fn in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(fn) as f:
                next(f)
                rows += [line.split() for line in f]
        except OSError:
            pass
    return rows


def listening_ports():
    """Ports in LISTEN state (from /proc/net/tcp{,6}): checking needs no connection to lb."""
    return {int(p[1].rsplit(":", 1)[1], 16) for p in proc_net_tcp() if len(p) > 3 and p[3] == "0A"}


def wait_listening(ports, deadline, proc=None):
    ports = set(ports)
    while True:
        if proc is not None and proc.poll() is not None:
            return False
        if ports <= listening_ports():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


# ---------------------------------------------------------------------------------------- processes

def stop_proc(p, grace=3.0):
    """SIGTERM, then SIGKILL after grace seconds. Returns the exit status."""
    if p.poll() is None:
        try:
            p.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                p.kill()
            except ProcessLookupError:
                pass
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
    return p.returncode


class Backend:
    def __init__(self, name, mode, logdir):
        self.name, self.mode, self.logdir = name, mode, logdir
        self.port = None
        self.proc = None

    def start(self, port=None):
        """Start it, on `port` (a restart at the same address) or on a free port."""
        self.port = port or free_port()
        self.err = open(os.path.join(self.logdir, "backend-%s.stderr" % self.name), "ab")
        self.proc = subprocess.Popen(
            [sys.executable, BACKEND, "--port", str(self.port), "--name", self.name, "--mode", self.mode],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.err, cwd=ROOT)

    def wait_ready(self, deadline):
        fd = self.proc.stdout.fileno()
        buf = b""
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            r, _, _ = select.select([fd], [], [], left)
            if r:
                d = os.read(fd, 100)
                if not d:
                    return False
                buf += d
        return buf.startswith(b"ready")

    def stop(self):
        if self.proc:
            stop_proc(self.proc)
            self.proc.stdout.close()
            self.err.close()

    def stats(self):
        c = http.client.HTTPConnection(HOST, self.port, timeout=5)
        try:
            c.request("GET", "/stats")
            return json.loads(c.getresponse().read())
        finally:
            c.close()


class StderrFile:
    """An lb process's stderr, written to self.err_path: its text and its last line."""

    def stderr(self):
        try:
            with open(self.err_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stderr_tail(self, n=200):
        lines = [l for l in self.stderr().splitlines() if l.strip()]
        return (lines[-1][:n] if lines else "(no stderr)")


class LB(StderrFile):
    def __init__(self, ctx, conf_text, ports, tag="lb"):
        self.ctx = ctx
        self.ports = list(ports)
        self.expected_exit = False
        self.conf = os.path.join(ctx.dir, tag + ".ini")
        with open(self.conf, "w") as f:
            f.write(conf_text)
        self.out_path = os.path.join(ctx.dir, tag + ".stdout")
        self.err_path = os.path.join(ctx.dir, tag + ".stderr")
        if not (os.path.isfile(LB_BIN) and os.access(LB_BIN, os.X_OK)):
            raise Fail("lb binary not found or not executable: %s" % LB_BIN)
        self.out = open(self.out_path, "wb")
        self.err = open(self.err_path, "wb")
        # as root (CI), lb refuses to run without `user =` unless told -u root
        argv = [LB_BIN, "-c", self.conf] + (["-u", "root"] if os.geteuid() == 0 else [])
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=self.out, stderr=self.err, cwd=ROOT)
        self.pid = self.proc.pid
        ctx.lbs.append(self)
        if not wait_listening(self.ports, time.monotonic() + 5, self.proc):
            if self.proc.poll() is not None:
                raise Fail("lb exited with status %s at start: %s" % (self.proc.returncode, self.stderr_tail()))
            raise Fail("lb not listening on %s within 5s: %s" % (self.ports, self.stderr_tail()))

    def stop(self, grace=5.0):
        self.expected_exit = True
        rc = stop_proc(self.proc, grace)
        for f in (self.out, self.err):
            try:
                f.close()
            except OSError:
                pass
        return rc


def sanitizer_line(stderr_text):
    """The first ASan/UBSan report line in an lb's stderr (cut to 200 characters), or None."""
    m = re.search(r"(ERROR: \w*Sanitizer[^\n]*|runtime error:[^\n]*)", stderr_text)
    return m.group(1)[:200] if m else None


class TestDir:
    """A test's context: the suite, its shared backends (b) and the test's own directory (dir)."""

    def __init__(self, suite, name):
        self.suite = suite
        self.b = suite.backends
        self.dir = os.path.join(suite.tmp, name)
        os.makedirs(self.dir, exist_ok=True)


class Ctx(TestDir):
    def __init__(self, suite, name):
        super().__init__(suite, name)
        self.lbs = []
        self.backends = []  # a test's own backends (own_backend), stopped after it

    def lb(self, conf_text, ports, tag="lb"):
        return LB(self, conf_text, ports, tag)

    def cleanup(self):
        problems = []
        for bk in self.backends:
            bk.stop()
        for lb in self.lbs:
            rc = lb.proc.poll()
            if rc is not None and not lb.expected_exit:
                problems.append("lb exited unexpectedly with status %s: %s" % (rc, lb.stderr_tail()))
            lb.stop(grace=2.0)
            report = sanitizer_line(lb.stderr())
            if report:
                problems.append("lb stderr has a sanitizer report: %s" % report)
        return "; ".join(problems)


# ---------------------------------------------------------------------------------------- config

def config(*sections, access="off", fmt=None):
    s = "[global]\nworkers = 1\n\n[log]\naccess = %s\n" % access
    if fmt:
        s += "format = %s\n" % fmt
    return s + "\n" + "\n".join(sections)


def _kv(kw):
    return ["%s = %s" % (k, v) for k, v in kw.items() if v is not None]


def listener(name, port, pool=None, mode="http", **kw):
    lines = ["[listener %s]" % name, "bind = %s:%d" % (HOST, port), "mode = %s" % mode]
    if pool:
        lines.append("pool = %s" % pool)
    return "\n".join(lines + _kv(kw)) + "\n"


def pool(name, servers, **kw):
    """servers: list of (name, port) or (name, port, options)."""
    lines = ["[pool %s]" % name]
    for s in servers:
        lines.append(("server = %s %s:%d %s" % (s[0], HOST, s[1], s[2] if len(s) > 2 else "")).rstrip())
    return "\n".join(lines + _kv(kw)) + "\n"


def route(name, **kw):
    return "\n".join(["[route %s]" % name] + _kv(kw)) + "\n"


# ---------------------------------------------------------------------------------------- clients

class Resp:
    def __init__(self, status, reason, headers):
        self.status, self.reason, self.headers = status, reason, headers
        self.body = b""
        self.nbytes = 0

    def hdr(self, name):
        vals = [v for n, v in self.headers if n == name.lower()]
        return ", ".join(vals) if vals else None

    @property
    def backend(self):
        return self.hdr("x-backend")


def request(port, path, method="GET", headers=None, body=None, host=None, timeout=4.0):
    """One request on a new connection (http.client); returns Resp with the whole body."""
    c = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        c.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        c.putheader("Host", host or "%s:%d" % (HOST, port))
        for k, v in (headers or {}).items():
            c.putheader(k, v)
        if body is not None:
            c.putheader("Content-Length", str(len(body)))
        c.endheaders(body)
        r = c.getresponse()
        resp = Resp(r.status, r.reason, [(k.lower(), v) for k, v in r.getheaders()])
        resp.body = r.read()
        resp.nbytes = len(resp.body)
        return resp
    finally:
        c.close()


class Closed(Fail):
    pass


class RawConn:
    """A client connection with its own buffer: exact control of what is sent and read."""

    def __init__(self, port, timeout=4.0):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        d = self.sock.recv(262144)
        if not d:
            return False
        self.buf += d
        return True

    def readline(self, limit=1 << 20):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                return line
            if len(self.buf) > limit:
                raise Fail("line longer than %d bytes" % limit)
            if not self._fill():
                line = bytes(self.buf)
                self.buf.clear()
                return line

    def read_some(self, n):
        if self.buf:
            d = bytes(self.buf[:n])
            del self.buf[:n]
            return d
        return self.sock.recv(min(n, 1 << 20))

    def read_exact(self, n):
        out = bytearray()
        while len(out) < n:
            d = self.read_some(n - len(out))
            if not d:
                raise Closed("connection closed after %d of %d bytes" % (len(out), n))
            out += d
        return bytes(out)

    def read_until_eof(self, limit=1 << 26):
        out = bytearray(self.buf)
        self.buf.clear()
        while True:
            d = self.sock.recv(262144)
            if not d:
                return bytes(out)
            out += d
            if len(out) > limit:
                raise Fail("more than %d bytes before EOF" % limit)

    def closed_within(self, seconds):
        """True when the peer closes (EOF or reset) within seconds with no further data."""
        if self.buf:
            return False
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                return False
            try:
                d = self.sock.recv(4096)
            except (ConnectionResetError, ConnectionAbortedError):
                return True
            if not d:
                return True
            self.buf += d
            return False

    def stray(self, seconds):
        """Bytes that arrive within seconds when none are expected (b"" when quiet); they stay buffered."""
        if not self.buf:
            r, _, _ = select.select([self.sock], [], [], seconds)
            if r:
                try:
                    self.buf += self.sock.recv(4096)
                except OSError:
                    pass
        return bytes(self.buf)

    def read_final(self, method="GET", sink=None):
        """The next final response, skipping interim 1xx ones (but not 101)."""
        while True:
            r = self.read_response(method, sink)
            if r.status >= 200 or r.status == 101:
                return r

    def read_head(self):
        """The next response head: a Resp with its status, reason and headers, no body read."""
        line = self.readline()
        if not line:
            raise Closed("connection closed before a response")
        m = re.match(rb"HTTP/1\.[01] (\d{3})(?: ([^\r\n]*))?\r\n$", line)
        if not m:
            raise Fail("bad status line %s" % short(line))
        headers = []
        while True:
            h = self.readline()
            if not h:
                raise Closed("connection closed inside a response head")
            if h == b"\r\n":
                break
            name, sep, value = h.decode("latin-1").partition(":")
            if not sep:
                raise Fail("bad response header line %s" % short(h))
            headers.append((name.strip().lower(), value.strip()))
        return Resp(int(m.group(1)), (m.group(2) or b"").decode("latin-1"), headers)

    def read_response(self, method="GET", sink=None):
        resp = self.read_head()
        parts = []

        def deliver(d):
            resp.nbytes += len(d)
            if sink:
                sink(d)
            else:
                parts.append(d)

        if method == "HEAD" or resp.status < 200 or resp.status in (204, 304):
            return resp
        te = resp.hdr("transfer-encoding")
        cl = resp.hdr("content-length")
        if te and te.lower().split(",")[-1].strip() == "chunked":
            while True:
                sl = self.readline(8192)
                if not sl.endswith(b"\r\n"):
                    raise Fail("bad chunk size line %s" % short(sl))
                size = int(sl[:-2].split(b";")[0].strip(), 16)
                if size == 0:
                    while True:
                        t = self.readline(8192)
                        if t == b"\r\n":
                            break
                        if not t:
                            raise Closed("connection closed in trailers")
                    break
                while size:
                    d = self.read_some(min(size, 1 << 20))
                    if not d:
                        raise Closed("connection closed inside a chunk")
                    size -= len(d)
                    deliver(d)
                if self.read_exact(2) != b"\r\n":
                    raise Fail("chunk not followed by CRLF")
        elif cl is not None:
            n = int(cl)
            while n:
                d = self.read_some(min(n, 1 << 20))
                if not d:
                    raise Closed("connection closed with %d body bytes missing" % n)
                n -= len(d)
                deliver(d)
        else:
            deliver(self.read_until_eof())
        resp.body = b"".join(parts)
        return resp


def sum_metric(text, metric_name, **labels):
    """The sum of a Prometheus metric's samples whose labels include these."""
    tot = 0.0
    for line in text.splitlines():
        m = re.match(r"^(\w+)(?:\{([^}]*)\})? (\S+)$", line)
        if not m or m.group(1) != metric_name:
            continue
        lab = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(lab.get(k) == v for k, v in labels.items()):
            tot += float(m.group(3))
    return tot


def raw_request(path, host="x", method="GET", headers=(), body=b""):
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: %s" % host] + ["%s: %s" % h for h in headers]
    if body:
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def xor_mask(data, mask):
    n = len(data)
    if not n:
        return b""
    m = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(data, "big") ^ m).to_bytes(n, "big")


def ws_frame(opcode, payload, fin=True):
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    mask = os.urandom(4)
    return head + mask + xor_mask(payload, mask)


def ws_read(conn):
    b0, b1 = conn.read_exact(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", conn.read_exact(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", conn.read_exact(8))[0]
    check(not (b1 & 0x80), "server frame is masked")
    return b0 & 0x0F, bool(b0 & 0x80), conn.read_exact(n)


_pattern_sha = {}


def pattern_sha(n):
    if n not in _pattern_sha:
        h = hashlib.sha256()
        left = n
        while left:
            k = min(PIECE, left)
            h.update(BLOCK[:k])
            left -= k
        _pattern_sha[n] = h.hexdigest()
    return _pattern_sha[n]


def count_by(items):
    d = {}
    for i in items:
        d[i] = d.get(i, 0) + 1
    return d


# ---------------------------------------------------------------------------------------- tests

TESTS = []


def registrar(tests, default_timeout=30):
    """A @test(name, timeout) decorator that appends to the list `tests` (one per suite)."""
    def test(name, timeout=default_timeout):
        def deco(fn):
            tests.append((name, fn, timeout))
            return fn
        return deco
    return test


test = registrar(TESTS)


@test("routing")
def t_routing(ctx):
    b = ctx.b
    web, nodef = free_port(), free_port()
    conf = config(
        listener("web", web, pool="dflt"),
        listener("nodef", nodef),
        pool("p1", [("b1", b["b1"].port)]), pool("p2", [("b2", b["b2"].port)]),
        pool("p3", [("b3", b["b3"].port)]), pool("p4", [("b4", b["b4"].port)]),
        pool("p5", [("b5", b["b5"].port)]), pool("dflt", [("b6", b["b6"].port)]),
        route("hosts", host="api.example.com, *.api.example.com", pool="p1"),
        route("exact", path="/exact", pool="p2"),
        route("prefix", path="/pre/*", pool="p3"),
        route("hdr", header="X-Canary: yes", pool="p4"),
        route("meth", method="DELETE", pool="p5"),
        route("combo", path="/combo/*", method="POST", pool="p2"),
        route("first1", path="/first/*", pool="p1"),
        route("first2", path="/first/x", pool="p2"),
    )
    ctx.lb(conf, [web, nodef])
    cases = [
        # (port, method, path, host, headers, expected backend or status)
        (web, "GET", "/", "api.example.com", {}, "b1"),
        (web, "GET", "/", "x.api.example.com", {}, "b1"),
        (web, "GET", "/", "API.Example.COM:8080", {}, "b1"),
        (web, "GET", "/", "notapi.example.com", {}, "b6"),
        (web, "GET", "/", "api.example.com.evil.test", {}, "b6"),
        (web, "GET", "/exact", None, {}, "b2"),
        (web, "GET", "/exact/more", None, {}, "b6"),
        (web, "GET", "/exactly", None, {}, "b6"),
        (web, "GET", "/pre/x/y", None, {}, "b3"),
        (web, "GET", "/pre", None, {}, "b3"),
        (web, "GET", "/prefix", None, {}, "b6"),
        (web, "GET", "/h", None, {"X-Canary": "yes"}, "b4"),
        (web, "GET", "/h", None, {"x-canary": "yes"}, "b4"),
        (web, "GET", "/h", None, {"X-Canary": "no"}, "b6"),
        (web, "DELETE", "/m", None, {}, "b5"),
        (web, "GET", "/m", None, {}, "b6"),
        (web, "POST", "/combo/1", None, {}, "b2"),
        (web, "GET", "/combo/1", None, {}, "b6"),
        (web, "GET", "/first/x", None, {}, "b1"),
        (web, "GET", "/unmatched", None, {}, "b6"),
        (nodef, "GET", "/unmatched", None, {}, 404),
        (nodef, "GET", "/exact", None, {}, "b2"),
    ]
    for port, method, path, host, hdrs, want in cases:
        body = b"x" if method == "POST" else None
        r = request(port, path, method=method, host=host, headers=hdrs, body=body)
        what = "%s %s host=%s %s on %s" % (method, path, host, hdrs, "web" if port == web else "nodef")
        if isinstance(want, int):
            eq(r.status, want, what + " status")
        else:
            eq(r.status, 200, what + " status")
            eq(r.backend, want, what + " backend")


@test("round_robin")
def t_round_robin(ctx):
    b = ctx.b
    l1, l2 = free_port(), free_port()
    conf = config(
        listener("rr", l1, pool="rr"), listener("wrr", l2, pool="wrr"),
        pool("rr", [("b1", b["b1"].port), ("b2", b["b2"].port), ("b3", b["b3"].port)],
             algorithm="round_robin"),
        pool("wrr", [("b1", b["b1"].port, "weight=1"), ("b2", b["b2"].port, "weight=2"),
                     ("b3", b["b3"].port, "weight=1")], algorithm="round_robin"),
    )
    ctx.lb(conf, [l1, l2])
    for port, n, want in ((l1, 30, {"b1": 10, "b2": 10, "b3": 10}),
                          (l2, 40, {"b1": 10, "b2": 20, "b3": 10})):
        c = http.client.HTTPConnection(HOST, port, timeout=5)
        seen = []
        try:
            for i in range(n):
                c.request("GET", "/rr/%d" % i)
                r = c.getresponse()
                r.read()
                eq(r.status, 200, "request %d status" % i)
                seen.append(r.getheader("X-Backend"))
        finally:
            c.close()
        eq(count_by(seen), want, "%d requests spread (%s)" % (n, "equal" if port == l1 else "weights 1,2,1"))


@test("keepalive_reuse")
def t_keepalive(ctx):
    b1 = ctx.b["b1"]
    port = free_port()
    ctx.lb(config(listener("web", port, pool="one"), pool("one", [("b1", b1.port)], keepalive=32)), [port])
    before = b1.stats()
    for i in range(200):
        r = request(port, "/ka/%d" % i)
        eq(r.status, 200, "request %d status" % i)
        eq(r.backend, "b1", "request %d backend" % i)
    after = b1.stats()
    reqs = after["requests"] - before["requests"] - 1
    conns = after["connections"] - before["connections"] - 1
    eq(reqs, 200, "requests seen by the backend")
    check(conns < 50, "200 requests on new client connections opened %d backend connections (want < 50)" % conns)


def keepalive_burst(port, clients, rounds, path, limit=10.0):
    """`clients` keep-alive connections at once; in each of `rounds` rounds every one sends a GET of
    `path` and all answers are awaited before the next round (so between rounds every server
    connection is idle at once, as with clients that pause). The number of 200 answers; one
    selector loop in this thread, bounded by `limit` s."""
    req = ("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode()
    sel = selectors.DefaultSelector()
    socks, ok = [], 0
    end = time.monotonic() + limit
    try:
        for _ in range(clients):
            s = socket.create_connection((HOST, port), timeout=4)
            socks.append(s)
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        for r in range(rounds):
            got = {}
            for s in socks:
                s.setblocking(True)
                s.sendall(req)
                s.setblocking(False)
                got[s] = b""
            while got and time.monotonic() < end:
                for key, _ in sel.select(0.2):
                    s = key.fileobj
                    if s not in got:
                        continue
                    try:
                        d = s.recv(65536)
                    except BlockingIOError:
                        continue
                    if not d:
                        raise Fail("lb closed a keep-alive client connection in round %d (%d 200s in all)"
                                   % (r + 1, ok))
                    got[s] += d
                    i = got[s].find(b"\r\n\r\n")
                    m = re.search(rb"(?im)^content-length:\s*(\d+)", got[s][:i]) if i >= 0 else None
                    if m and len(got[s]) >= i + 4 + int(m.group(1)):
                        ok += got[s].startswith(b"HTTP/1.1 200")
                        del got[s]
            if got:
                raise Fail("round %d: %d answers missing after %.0f s" % (r + 1, len(got), limit))
    finally:
        for s in socks:
            s.close()
        sel.close()
    return ok


def own_backend(ctx, name):
    """A backend of this test alone (its connection counts are this test's)."""
    bk = Backend(name, "http", ctx.dir)
    bk.start()
    ctx.backends.append(bk)
    if not bk.wait_ready(time.monotonic() + 5):
        raise Fail("backend %s did not start" % name)
    return bk


@test("keepalive_pool_follows_concurrency", timeout=20)
def t_keepalive_pool(ctx):
    """At defaults (keepalive = auto) the idle server-connection pool follows the concurrency in use:
    200 keep-alive clients, 5 rounds of one request each, open about one server connection per client
    (200 per 1,000 requests), not one per request beyond a fixed idle cap (with 32: ~870)."""
    bk = own_backend(ctx, "kp")
    port = free_port()
    ctx.lb(config(listener("web", port, pool="one"), pool("one", [("kp", bk.port)], health_check="off")), [port])
    before = bk.stats()
    ok = keepalive_burst(port, 200, 5, "/slow?ms=20")
    eq(ok, 1000, "answers with status 200")
    after = bk.stats()
    eq(after["app"] - before["app"], 1000, "requests the server saw")
    opened = after["connections"] - before["connections"] - 1
    check(opened <= 300, "1,000 requests of 200 concurrent keep-alive clients opened %d server connections "
          "(want about 200, at most 300)" % opened)


@test("keepalive_pool_purged_gradually", timeout=20)
def t_keepalive_purge(ctx):
    """After a burst the idle pool keeps what the burst needed, then closes the unused connections
    over a few seconds (half the excess a second, HAProxy's pool purge), not all at once."""
    bk = own_backend(ctx, "kq")
    port = free_port()
    ctx.lb(config(listener("web", port, pool="one"), pool("one", [("kq", bk.port)], health_check="off")), [port])
    eq(keepalive_burst(port, 200, 3, "/slow?ms=20"), 600, "answers with status 200")
    t0 = time.monotonic()
    first = bk.stats()["open"] - 1
    check(first >= 150, "server connections open right after a burst of 200 concurrent clients: %d "
          "(want the pool the burst needed, >= 150)" % first)
    seen = [(0.0, first)]
    while time.monotonic() - t0 < 7.5 and seen[-1][1] > first // 3:
        time.sleep(0.25)
        seen.append((time.monotonic() - t0, bk.stats()["open"] - 1))
    trace = " ".join("%.1fs:%d" % x for x in seen)
    check(seen[-1][1] <= first // 3, "idle server connections not purged to a third within 7.5 s: %s" % trace)
    check(all(n >= first // 2 for t, n in seen if t < 0.9), "purged at once, not gradually: %s" % trace)
    between = {n for _, n in seen if first // 3 < n < first}
    check(len(between) >= 2, "purged in fewer than 3 steps: %s" % trace)


@test("pipelining")
def t_pipelining(ctx):
    b = ctx.b
    port = free_port()
    ctx.lb(config(listener("web", port, pool="rr"),
                  pool("rr", [("b1", b["b1"].port), ("b2", b["b2"].port), ("b3", b["b3"].port)])), [port])
    paths = ["/slow?ms=200"] + ["/pipe/%d" % i for i in range(1, 10)]
    with RawConn(port) as c:
        c.send(b"".join(raw_request(p) for p in paths))
        for i, p in enumerate(paths):
            r = c.read_response()
            eq(r.status, 200, "response %d status" % i)
            want = " /slow\n" if i == 0 else " %s\n" % p
            check(r.body.decode("latin-1").endswith(want) and r.backend in ("b1", "b2", "b3"),
                  "response %d out of order or wrong: body %s from %s, want ...%r" % (i, short(r.body), r.backend, want))
        c.send(raw_request("/pipe/after"))
        r = c.read_response()
        check(r.status == 200 and r.body.endswith(b" /pipe/after\n"), "connection unusable after pipeline: %s" % short(r.body))


def tree_rss_kb(pid):
    """VmRSS of pid plus its children (lb may fork workers)."""
    pids = [pid]
    try:
        for t in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, t)) as f:
                pids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    total = 0
    for p in pids:
        try:
            with open("/proc/%d/status" % p) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


class RssSampler(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.base = tree_rss_kb(pid)
        self.peak = self.base
        self.stop_ev = threading.Event()

    def run(self):
        while not self.stop_ev.wait(0.02):
            self.peak = max(self.peak, tree_rss_kb(self.pid))

    def stop(self):
        self.stop_ev.set()
        self.join(2)
        return self.peak - self.base


@test("big_transfers", timeout=100)
def t_big(ctx):
    b1 = ctx.b["b1"]
    port = free_port()
    lb = ctx.lb(config(listener("web", port, pool="one", max_body_size="1g", idle_timeout="30s"),
                       pool("one", [("b1", b1.port)], response_timeout="30s")), [port])
    N = 100 * 1024 * 1024
    # warm up: buffers lb allocates once should not count as growth
    with RawConn(port) as c:
        c.send(raw_request("/bytes?n=1000000&chunked=1"))
        eq(c.read_response().nbytes, 1000000, "warm-up download bytes")
        c.send(raw_request("/upload", method="POST", body=os.urandom(1000000)))
        eq(c.read_response().status, 200, "warm-up upload status")
    time.sleep(0.2)
    sampler = RssSampler(lb.pid)
    check(sampler.base > 0, "cannot read VmRSS of lb pid %d" % lb.pid)
    sampler.start()
    try:
        # 1) 100 MB chunked upload, chunks of varying size
        src = os.urandom(1 << 20)
        sizes = [65536, 1, 4093, 200000, 65535, 17, 131072, 300000]
        h = hashlib.sha256()
        with RawConn(port, timeout=30) as c:
            c.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                   b"Content-Type: application/octet-stream\r\n\r\n")
            sent, i, off = 0, 0, 0
            try:
                while sent < N:
                    k = min(sizes[i % len(sizes)], N - sent)
                    if off + k > len(src):
                        off = 0
                    piece = src[off:off + k]
                    h.update(piece)
                    c.send(b"%x\r\n" % k + piece + b"\r\n")
                    sent += k
                    off += k
                    i += 1
                c.send(b"0\r\n\r\n")
            except OSError as e:
                answer = ""
                try:
                    r = c.read_response()
                    answer = "; lb answered %d %s" % (r.status, short(r.body))
                except (OSError, Fail):
                    pass
                raise Fail("upload cut after %d bytes (%s)%s" % (sent, e, answer))
            r = c.read_response()
            eq(r.status, 200, "upload status")
            got = json.loads(r.body)
            eq(got["bytes"], N, "bytes the backend received")
            eq(got["sha256"], h.hexdigest(), "sha256 of the uploaded body")
        # 2) 100 MB downloads, chunked and with Content-Length
        for q in ("/bytes?n=%d&chunked=1" % N, "/bytes?n=%d" % N):
            h = hashlib.sha256()
            with RawConn(port, timeout=30) as c:
                c.send(raw_request(q))
                r = c.read_response(sink=h.update)
            eq(r.status, 200, q + " status")
            eq(r.nbytes, N, q + " bytes received")
            eq(h.hexdigest(), pattern_sha(N), q + " sha256")
    finally:
        growth = sampler.stop()
    check(growth < 10 * 1024, "lb RSS grew by %d kB during 300 MB of transfers (limit 10240 kB)" % growth)


@test("websocket")
def t_websocket(ctx):
    b1 = ctx.b["b1"]
    port = free_port()
    ctx.lb(config(listener("web", port, pool="one", idle_timeout="10s"), pool("one", [("b1", b1.port)])), [port])
    key = base64.b64encode(os.urandom(16)).decode()
    accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
    with RawConn(port) as c:
        c.send(raw_request("/ws", headers=[("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                           ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")]))
        r = c.read_response()
        eq(r.status, 101, "handshake status")
        eq((r.hdr("upgrade") or "").lower(), "websocket", "Upgrade header of the 101")
        eq(r.hdr("sec-websocket-accept"), accept, "Sec-WebSocket-Accept")
        msgs = [(0x1, "hello \u26a1 world".encode()), (0x2, bytes(range(256))), (0x1, b"m" * 300),
                (0x2, os.urandom(100 * 1024)), (0x1, b"")]
        for i, (op, payload) in enumerate(msgs):
            c.send(ws_frame(op, payload))
            rop, fin, data = ws_read(c)
            eq((rop, fin, len(data)), (op, True, len(payload)), "frame %d echo (opcode, fin, length)" % i)
            check(data == payload, "frame %d echoed payload differs" % i)
        # several frames in one write
        c.send(b"".join(ws_frame(0x1, b"batch %d" % i) for i in range(5)))
        for i in range(5):
            eq(ws_read(c)[2], b"batch %d" % i, "batched frame %d" % i)
        c.send(ws_frame(0x8, struct.pack("!H", 1000)))
        rop, fin, data = ws_read(c)
        eq((rop, data), (0x8, struct.pack("!H", 1000)), "close frame echo")
        check(c.closed_within(3), "tunnel not closed after the close handshake")


@test("slowloris")
def t_slowloris(ctx):
    b1 = ctx.b["b1"]
    port = free_port()
    ctx.lb(config(listener("web", port, pool="one", header_timeout="1s", idle_timeout="5s"),
                  pool("one", [("b1", b1.port)])), [port])
    payload = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    s = socket.create_connection((HOST, port), timeout=5)
    got, closed_at, normal, i = b"", None, None, 0
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < 6 and closed_at is None:
            if i < len(payload):
                try:
                    s.send(payload[i:i + 1])
                except OSError:
                    pass
                i += 1
            end = time.monotonic() + 0.3
            while closed_at is None:
                left = end - time.monotonic()
                if left <= 0:
                    break
                r, _, _ = select.select([s], [], [], left)
                if r:
                    try:
                        d = s.recv(4096)
                    except OSError:
                        d = b""
                    if not d:
                        closed_at = time.monotonic() - t0
                    got += d
            if normal is None and time.monotonic() - t0 > 0.5 and closed_at is None:
                r = request(port, "/normal", timeout=2)
                normal = (r.status, r.backend, round(time.monotonic() - t0, 2))
    finally:
        s.close()
    eq(normal and normal[:2], (200, "b1"), "normal client served during the slow one")
    check(got.startswith(b"HTTP/1.1 408"), "slow client got %s, want HTTP/1.1 408" % short(got[:60]))
    check(closed_at is not None, "slow connection not closed within 6 s")
    check(0.8 <= closed_at <= 3.5, "slow connection closed after %.2f s (header_timeout 1s; want 0.8..3.5)" % closed_at)


def children_of(pid):
    """Direct children of pid (every thread's children list), zombies included."""
    out = set()
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return []
    for t in tasks:
        try:
            with open("/proc/%d/task/%s/children" % (pid, t)) as f:
                out.update(int(x) for x in f.read().split())
        except (OSError, ValueError):
            pass
    return sorted(out)


def pipes_of_children(pid):
    """Pipe file descriptors held by the direct children (the workers) of pid."""
    n = 0
    for k in children_of(pid):
        try:
            fds = os.listdir("/proc/%d/fd" % k)
        except OSError:
            continue
        for fd in fds:
            try:
                n += os.readlink("/proc/%d/fd/%s" % (k, fd)).startswith("pipe:")
            except OSError:
                pass
    return n


def tcp_tunnels(ctx, splice):
    """Echo (both directions at once, then half-close) and count (1 MiB, half-close, answer) through
    mode tcp listeners; with splice = on the worker moves the bytes through 2 pipes per open tunnel
    (4 descriptors), with off through buffers (none)."""
    b = ctx.b
    pe, pc = free_port(), free_port()
    sp = "on" if splice else "off"
    lb = ctx.lb(config(listener("techo", pe, pool="echo", mode="tcp", idle_timeout="5s", splice=sp),
                       listener("tcount", pc, pool="count", mode="tcp", idle_timeout="5s", splice=sp),
                       pool("echo", [("e1", b["echo"].port)]), pool("count", [("c1", b["count"].port)])), [pe, pc])
    idle_pipes = pipes_of_children(lb.proc.pid)
    with RawConn(pe) as c:
        c.send(b"hello\n")
        eq(c.read_exact(6), b"hello\n", "interactive echo")
        eq(pipes_of_children(lb.proc.pid) - idle_pipes, 4 if splice else 0,
           "pipe descriptors of the worker with one tunnel open (splice = %s)" % sp)
        data = os.urandom(3 * 1024 * 1024 + 17)
        err = []

        def sender():
            try:
                c.sock.sendall(data)
                c.sock.shutdown(socket.SHUT_WR)
            except OSError as e:
                err.append(e)

        t = threading.Thread(target=sender, daemon=True)
        t.start()
        back = c.read_until_eof()
        t.join(5)
        check(not err, "sending to the echo tunnel failed: %s" % (err and err[0]))
        eq(len(back), len(data), "echoed bytes before EOF after half-close")
        check(back == data, "echoed data differs")
    with RawConn(pc) as c:
        c.send(os.urandom(1 << 20))
        c.sock.shutdown(socket.SHUT_WR)
        eq(c.read_until_eof(), b"got 1048576 bytes\n", "tcp-count answer after half-close")


def worker_rss_kb(pid):
    """Resident kilobytes of the direct children (the workers) of pid."""
    total = 0
    for k in children_of(pid):
        with open("/proc/%d/status" % k) as st:
            total += int(re.search(r"VmRSS:\s+(\d+)", st.read()).group(1))
    return total


@test("buffers_given_back")
def t_buffers_given_back(ctx):
    """400 clients that stop reading a 2 MB download each pin a full response buffer; once they are
    gone the worker keeps 64 free buffers warm and gives the pages of the rest back to the kernel
    within about a second, so a burst does not leave its memory resident."""
    if "asan" in os.path.basename(LB_BIN):
        raise Skip("the ASan build keeps each buffer a heap block (redzones) and does not trim them")
    port = free_port()
    lb = ctx.lb(config(listener("l", port, pool="one"), pool("one", [("b1", ctx.b["b1"].port)])), [port])
    base = worker_rss_kb(lb.proc.pid)
    conns = []
    try:
        for _ in range(400):
            c = RawConn(port)
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            c.send(b"GET /bytes?n=2000000 HTTP/1.1\r\nHost: x\r\n\r\n")
            conns.append(c)
        # On a loaded machine not every download has filled its buffer yet: wait up to 10 s for 16 KB
        # each, and ask only for 12 KB each, still far above what the worker may keep afterwards.
        peak = base
        for _ in range(100):
            peak = max(peak, worker_rss_kb(lb.proc.pid))
            if peak - base > 400 * 16:
                break
            time.sleep(0.1)
    finally:
        for c in conns:
            c.close()
    check(peak - base > 400 * 12, "worker RSS grew by %d KB only with 400 stalled downloads" % (peak - base))
    after = peak
    for _ in range(40):
        time.sleep(0.1)
        after = worker_rss_kb(lb.proc.pid)
        if after - base < 64 * 24 + 2048:
            break
    check(after - base < 64 * 24 + 2048, "worker RSS %d KB above its start 3 s after the burst (peak +%d KB)"
          % (after - base, peak - base))


@test("tcp_mode")
def t_tcp(ctx):
    tcp_tunnels(ctx, True)


@test("tcp_mode_no_splice")
def t_tcp_nosplice(ctx):
    tcp_tunnels(ctx, False)


@test("tcp_server_closes_first")
def t_tcp_server_first(ctx):
    """The server sends and closes first; the client answers and half-closes after lb shut its side
    (the client socket then polls POLLIN|POLLHUP): its last bytes and its EOF must reach the server
    at once, not be dropped while the tunnel waits for idle_timeout (found by fuzz/fuzz_conn)."""
    port = free_port()
    srv = socket.socket()
    srv.bind((HOST, 0))
    srv.listen(1)
    srv.settimeout(5)
    ctx.lb(config(listener("t", port, pool="one", mode="tcp", idle_timeout="10s"),
                  pool("one", [("s1", srv.getsockname()[1])], health_check="off")), [port])
    try:
        with RawConn(port) as c:
            s, _ = srv.accept()
            s.settimeout(5)
            s.sendall(b"banner")
            s.shutdown(socket.SHUT_WR)
            eq(c.read_until_eof(), b"banner", "what the client got before lb shut its side")
            t0 = time.monotonic()
            c.sock.sendall(b"last words")
            c.sock.shutdown(socket.SHUT_WR)
            got = b""
            try:
                while True:
                    d = s.recv(4096)
                    if not d:
                        break
                    got += d
            except socket.timeout:
                pass
            waited = time.monotonic() - t0
            s.close()
        eq(got, b"last words", "what the server got after its own close")
        check(waited < 2, "the server saw the end of the tunnel after %.1f s (idle_timeout 10s)" % waited)
    finally:
        srv.close()


@test("errors_5xx")
def t_5xx(ctx):
    b = ctx.b
    port, dead = free_port(), free_port()
    lb = ctx.lb(config(
        listener("web", port, pool="main"),
        pool("main", [("b1", b["b1"].port)]),
        pool("dead", [("gone", dead)], connect_timeout="1s", retries=0),
        pool("slowp", [("b1", b["b1"].port)], response_timeout="1s", retries=0),
        pool("offp", [("b1", b["b1"].port, "disabled"), ("b2", b["b2"].port, "disabled")]),
        route("dead", path="/dead/*", pool="dead"),
        route("slow", path="/slow", pool="slowp"),
        route("off", path="/off/*", pool="offp"),
    ), [port])
    r = request(port, "/dead/x")
    eq(r.status, 502, "backend on a closed port")
    t = time.monotonic()
    r = request(port, "/slow?ms=3000", timeout=6)
    el = time.monotonic() - t
    eq(r.status, 504, "/slow?ms=3000 with response_timeout 1s")
    check(0.8 <= el <= 2.8, "504 after %.2f s (response_timeout 1s)" % el)
    r = request(port, "/off/x")
    eq(r.status, 503, "every server disabled")
    r = request(port, "/fine")
    eq((r.status, r.backend), (200, "b1"), "normal request after the errors")
    rc = lb.stop()
    err = lb.stderr()
    for code in ("502", "503", "504"):
        check(code in err, "lb stderr does not mention %s: %s" % (code, short(err, 200)))


def lb_test_config(ctx, name, lines):
    """Write lines as ctx.dir/NAME.ini and check it with `lb -t`: (path, exit status, stderr)."""
    path = os.path.join(ctx.dir, name + ".ini")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    p = subprocess.run([LB_BIN, "-t", "-c", path], cwd=ROOT, stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=10)
    return path, p.returncode, p.stderr.decode("utf-8", "replace")


@test("config_check")
def t_config_check(ctx):
    check(os.path.isfile(LB_BIN) and os.access(LB_BIN, os.X_OK), "lb binary not found: %s" % LB_BIN)
    p1, p2, p3 = free_port(), free_port(), free_port()
    base = [
        "[global]",                        # 1
        "workers = 1",                     # 2
        "",                                # 3
        "[log]",                           # 4
        "access = off",                    # 5
        "",                                # 6
        "[listener web]",                  # 7
        "bind = 127.0.0.1:%d" % p1,        # 8
        "mode = http",                     # 9
        "pool = main",                     # 10
        "header_timeout = 1s",             # 11
        "",                                # 12
        "[pool main]",                     # 13
        "server = a 127.0.0.1:%d" % p2,    # 14
        "server = b 127.0.0.1:%d weight=2" % p3,  # 15
        "connect_timeout = 1s",            # 16
        "",                                # 17
        "[route api]",                     # 18
        "path = /api/*",                   # 19
        "pool = main",                     # 20
    ]

    path, rc, err = lb_test_config(ctx, "valid", base)
    eq(rc, 0, "exit status of lb -t on a valid file (stderr: %s)" % short(err, 150))

    def with_line(n, text, replace=True):
        lines = list(base)
        if replace:
            lines[n - 1] = text
        else:
            lines.insert(n - 1, text)
        return lines

    bad = [
        ("unknown_key", with_line(10, "bnd = 127.0.0.1:%d" % p1, replace=False), [10], "bnd"),
        ("unknown_pool", with_line(20, "pool = nope"), [20], None),
        ("dup_pool", base + ["", "[pool main]", "server = c 127.0.0.1:%d" % p2], [len(base) + 2], None),
        ("dup_bind", base + ["", "[listener web2]", "bind = 127.0.0.1:%d" % p1, "mode = http", "pool = main"],
         [len(base) + 3], None),
        ("weight0", with_line(15, "server = b 127.0.0.1:%d weight=0" % p3), [15], None),
        ("duration_nounit", with_line(11, "header_timeout = 10"), [11], None),
        ("duration_bad", with_line(16, "connect_timeout = 1x"), [16], None),
        ("two_errors", with_line(15, "server = b 127.0.0.1:%d weight=0" % p3)[:10]
         + ["bnd = 127.0.0.1:1"] + with_line(15, "server = b 127.0.0.1:%d weight=0" % p3)[10:], [11, 16], None),
    ]
    for name, lines, want_lines, key in bad:
        path, rc, err = lb_test_config(ctx, name, lines)
        eq(rc, 1, "%s: exit status of lb -t (stderr: %s)" % (name, short(err, 150)))
        base_name = re.escape(os.path.basename(path))
        for ln in want_lines:
            m = re.search(r"%s:%d: ([^\n]*)" % (base_name, ln), err)
            check(m, "%s: no '%s:%d:' on stderr: %s" % (name, path, ln, short(err, 200)))
            if key:
                check(key in m.group(1), "%s: message does not name the key %r: %s" % (name, key, m.group(0)))


STRICT_CASES = [
    # (name, bytes, acceptable statuses; None means "closed without an answer" is acceptable too)
    ("cl_and_te", b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"0\r\n\r\n", (400,)),
    ("two_content_lengths", b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
                            b"hello!", (400,)),
    ("obs_fold", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", (400,)),
    ("bare_lf_only", b"GET / HTTP/1.1\nHost: x\n\n", (400,)),
    ("bare_lf_mixed", b"GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n", (400,)),
    ("bare_cr", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", (400,)),
    ("te_gzip", b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc", (400,)),
    ("te_chunked_gzip", b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"
                        b"0\r\n\r\n", (400,)),
    ("two_hosts", b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n", (400,)),
    ("absolute_form_host_mismatch", b"GET http://a.com/ HTTP/1.1\r\nHost: b.com\r\n\r\n", (400,)),
    ("chunk_size_overflow", b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"fffffffffffffffffff\r\nabc\r\n0\r\n\r\n", (400, None)),
]


@test("strictness", timeout=60)
def t_strict(ctx):
    b1 = ctx.b["b1"]
    port = free_port()
    ctx.lb(config(listener("web", port, pool="one", header_timeout="2s", max_header_size="16k",
                           max_body_size="10m"), pool("one", [("b1", b1.port)])), [port])
    cases = list(STRICT_CASES) + [
        ("header_too_large", raw_request("/", headers=[("X-Big", "a" * 20000)]), (431,)),
        ("body_too_large", b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 20971520\r\n\r\n", (413,)),
    ]
    for name, data, ok in cases:
        before = b1.stats()["requests"]
        with RawConn(port, timeout=3) as c:
            try:
                c.send(data)
            except OSError:
                pass  # lb may answer and close before taking everything: the answer is what counts
            try:
                r = c.read_response()
                status = r.status
            except (Closed, ConnectionResetError):
                status = None
            except socket.timeout:
                raise Fail("%s: no answer within 3 s (want %s)" % (name, ok))
            check(status in ok, "%s: got %s, want %s" % (name, status, " or ".join(
                "close" if s is None else str(s) for s in ok)))
            if status == 400:
                check(c.closed_within(2), "%s: connection not closed after 400" % name)
        leaked = b1.stats()["requests"] - before - 1
        eq(leaked, 0, "%s: requests that reached the backend" % name)
    before = b1.stats()["requests"]
    r = request(port, "/still-fine")
    eq((r.status, r.backend), (200, "b1"), "a valid request afterwards")
    eq(b1.stats()["requests"] - before - 1, 1, "valid request reached the backend")


@test("route_max_body_size_0")
def t_route_body_0(ctx):
    """max_body_size = 0 on a route means no request body there (413), as on a listener; it used to be
    taken for "not set", so the listener's 1m applied."""
    b1 = ctx.b["b1"]
    port = free_port()
    ctx.lb(config(listener("web", port, pool="one", max_body_size="1m"), pool("one", [("b1", b1.port)]),
                  route("nobody", path="/nobody/*", pool="one", max_body_size="0"),
                  route("other", path="/other/*", pool="one")), [port])
    eq(request(port, "/nobody/x", method="POST", body=b"abc").status, 413, "POST with a body where max_body_size = 0")
    eq(request(port, "/nobody/x", method="POST", body=b"").status, 200, "POST with Content-Length: 0 there")
    eq(request(port, "/nobody/x").status, 200, "GET without a body there")
    with RawConn(port, timeout=3) as c:
        c.send(b"POST /nobody/c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        eq(c.read_response().status, 413, "a chunked body there")
    eq(request(port, "/other/x", method="POST", body=b"abc").status, 200, "POST with a body on a route without the key")


@test("expect_head_nobody")
def t_expect(ctx):
    b1 = ctx.b["b1"]
    port = free_port()
    ctx.lb(config(listener("web", port, pool="one"), pool("one", [("b1", b1.port)])), [port])
    data = os.urandom(2 * 1024 * 1024 + 7)
    src = os.path.join(ctx.dir, "upload.bin")
    with open(src, "wb") as f:
        f.write(data)
    t = time.monotonic()
    p = subprocess.run(["curl", "-sS", "--max-time", "8", "--expect100-timeout", "5", "-H", "Expect: 100-continue",
                        "--data-binary", "@" + src, "-w", "\n%{http_code}", "http://%s:%d/upload" % (HOST, port)],
                       capture_output=True, timeout=15)
    el = time.monotonic() - t
    out = p.stdout.decode("utf-8", "replace").rsplit("\n", 1)
    eq(p.returncode, 0, "curl exit status (%s)" % p.stderr.decode(errors="replace").strip())
    eq(out[-1], "200", "curl upload status")
    got = json.loads(out[0])
    eq((got["bytes"], got["sha256"]), (len(data), hashlib.sha256(data).hexdigest()), "uploaded bytes, sha256")
    check(el < 3, "curl upload took %.1f s: 100 Continue not relayed (curl waited its expect100-timeout)" % el)
    with RawConn(port) as c:
        c.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n")
        r = c.read_response()
        eq(r.status, 100, "interim answer before the body is sent")
        c.send(b"hello world")
        r = c.read_final()
        eq(r.status, 200, "final status after 100")
        eq(json.loads(r.body)["bytes"], 11, "bytes after 100-continue")
        # HEAD, 204 and 304 carry no body, and the connection stays usable after each
        c.send(raw_request("/bytes?n=5000", method="HEAD"))
        r = c.read_response(method="HEAD")
        eq(r.status, 200, "HEAD status")
        eq(r.hdr("content-length"), "5000", "HEAD Content-Length")
        extra = c.stray(0.3)
        check(not extra, "bytes after the HEAD response: %s" % short(extra))
        c.send(raw_request("/after-head"))
        r = c.read_response()
        eq(r.body, b"b1 /after-head\n", "response after HEAD")
        for code in (204, 304):
            c.send(raw_request("/status?code=%d" % code))
            r = c.read_response()
            eq(r.status, code, "status")
            check(r.hdr("transfer-encoding") is None and r.hdr("content-length") in (None, "0"),
                  "%d with body framing: TE %s CL %s" % (code, r.hdr("transfer-encoding"), r.hdr("content-length")))
            extra = c.stray(0.3)
            check(not extra, "bytes after the %d response: %s" % (code, short(extra)))
            c.send(raw_request("/after-%d" % code))
            r = c.read_response()
            eq(r.body, b"b1 /after-%d\n" % code, "response after %d on the same connection" % code)


@test("error_after_head_has_body")
def t_error_after_head(ctx):
    """lb's own answer to a request that follows a HEAD on the same connection carries the body its
    Content-Length announces: it was framed as if it answered the HEAD (found by fuzz/fuzz_conn)."""
    port = free_port()
    ctx.lb(config(listener("web", port, pool="one"), pool("one", [("b1", ctx.b["b1"].port)])), [port])
    with RawConn(port) as c:
        c.send(raw_request("/x", method="HEAD"))
        eq(c.read_response(method="HEAD").status, 200, "HEAD status")
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        try:
            r = c.read_response()
        except Exception as e:  # the body lb announced never came
            raise Fail("400 after a HEAD: %s" % e)
        eq(r.status, 400, "status of a malformed request after a HEAD")
        eq(len(r.body), int(r.hdr("content-length")), "400 body length against its Content-Length")


@test("forwarded_headers")
def t_headers(ctx):
    b1 = ctx.b["b1"]
    port = free_port()
    ctx.lb(config(listener("web", port, pool="one"), pool("one", [("b1", b1.port)])), [port])

    def seen(headers=None, target="/headers", host="front.example"):
        r = request(port, target, host=host, headers=headers)
        eq(r.status, 200, "GET %s status" % target)
        return json.loads(r.body)

    h = seen({"X-Request-ID": "req-abc.123:XYZ", "X-Custom": "v1"})
    eq(h.get("x-forwarded-for"), "127.0.0.1", "X-Forwarded-For")
    eq(h.get("x-forwarded-proto"), "http", "X-Forwarded-Proto")
    eq(h.get("x-forwarded-host"), "front.example", "X-Forwarded-Host")
    eq(h.get("x-request-id"), "req-abc.123:XYZ", "well-formed client X-Request-ID kept")
    eq(h.get("x-custom"), "v1", "ordinary header passed")
    eq(h.get("_version"), "HTTP/1.1", "version to the backend")
    h = seen({"X-Request-ID": "bad id!{}"})
    rid = h.get("x-request-id")
    check(rid and rid != "bad id!{}" and RID_RE.match(rid), "malformed X-Request-ID not replaced: %r" % rid)
    ids = [seen().get("x-request-id") for _ in range(2)]
    check(all(i and RID_RE.match(i) for i in ids) and ids[0] != ids[1], "generated X-Request-IDs: %r" % ids)
    h = seen({"Connection": "keep-alive, X-Secret", "X-Secret": "1", "Keep-Alive": "timeout=5",
              "Proxy-Connection": "keep-alive", "TE": "trailers", "Upgrade": "foo/1"})
    for name in ("x-secret", "keep-alive", "proxy-connection", "te", "upgrade"):
        check(name not in h, "hop-by-hop header %r reached the backend: %r" % (name, h.get(name)))
    check("x-secret" not in (h.get("connection") or "").lower(), "Connection names x-secret: %r" % h.get("connection"))
    with RawConn(port) as c:
        for target, want in (("/a/./b/../c", b"b1 /a/c\n"), ("/%7Euser/%41x", b"b1 /~user/Ax\n"),
                             ("/x/y/../../z/.", b"b1 /z/\n")):
            c.send(raw_request(target))
            r = c.read_response()
            eq((r.status, r.body), (200, want), "path %s as the backend saw it" % target)
    h = seen(target="/q/../headers?x=1&y=%2F")
    eq(h.get("_target"), "/headers?x=1&y=%2F", "target after normalisation (query kept)")


JSON_KEYS = {"time", "client", "method", "uri", "status", "bytes", "term", "duration_ms", "route", "pool", "server",
             "request_id", "tls"}
COMBINED_RE = re.compile(
    r'^(\S+) (\S+) (\S+) \[(\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\] '
    r'"(\S+) (\S+) (HTTP/1\.[01])" (\d{3}) (\d+|-) "((?:[^"\\]|\\.)*)" "((?:[^"\\]|\\.)*)"(?: .*)?$')


@test("access_log")
def t_access_log(ctx):
    b1 = ctx.b["b1"]
    port = free_port()
    jpath = os.path.join(ctx.dir, "access.json")
    lb = ctx.lb(config(listener("web", port, pool="logpool"), pool("logpool", [("s1", b1.port)]),
                       access=jpath, fmt="json"), [port], tag="lb-json")
    reqs = [("GET", "/log/1", None, {}, 200), ("GET", "/status?code=404", None, {}, 404),
            ("GET", "/status?code=500", None, {}, 500), ("POST", "/upload", b"z" * 1000, {}, 200),
            ("GET", "/log/5", None, {"X-Request-ID": "log-req-5"}, 200), ("HEAD", "/log/6", None, {}, 200)]
    for m, path, body, hdrs, st in reqs:
        eq(request(port, path, method=m, body=body, headers=hdrs).status, st, "%s %s status" % (m, path))
    eq(lb.stop(), 0, "lb exit status on SIGTERM")
    with open(jpath, encoding="utf-8") as f:
        lines = f.read().splitlines()
    eq(len(lines), len(reqs), "json access log lines")
    for i, (line, (m, path, body, hdrs, st)) in enumerate(zip(lines, reqs)):
        try:
            o = json.loads(line)
        except ValueError:
            raise Fail("json log line %d is not JSON: %s" % (i + 1, short(line)))
        missing = JSON_KEYS - set(o)
        check(not missing, "json log line %d lacks %s" % (i + 1, sorted(missing)))
        eq((o["method"], o["uri"], o["status"], o["client"], o["pool"], o["term"]),
           (m, path, st, "127.0.0.1", "logpool", "--"),
           "json log line %d (method, uri, status, client, pool, term)" % (i + 1))
        check(o["server"] in ("s1", "%s:%d" % (HOST, b1.port)), "json log line %d server %r" % (i + 1, o["server"]))
        check(isinstance(o["bytes"], int) and o["bytes"] >= 0, "json log line %d bytes %r" % (i + 1, o["bytes"]))
        check(isinstance(o["duration_ms"], (int, float)) and o["duration_ms"] >= 0,
              "json log line %d duration_ms %r" % (i + 1, o["duration_ms"]))
        check(isinstance(o["request_id"], str) and RID_RE.match(o["request_id"]),
              "json log line %d request_id %r" % (i + 1, o["request_id"]))
        if "X-Request-ID" in hdrs:
            eq(o["request_id"], hdrs["X-Request-ID"], "json log line %d request_id" % (i + 1))
    # combined
    port = free_port()
    cpath = os.path.join(ctx.dir, "access.log")
    lb = ctx.lb(config(listener("web", port, pool="logpool"), pool("logpool", [("s1", b1.port)]),
                       access=cpath, fmt="combined"), [port], tag="lb-combined")
    url = "http://%s:%d" % (HOST, port)
    curls = [(["%s/c/1" % url], "GET", "/c/1", "200"),
             (["%s/status?code=404" % url], "GET", "/status?code=404", "404"),
             (["--data-binary", "abc", "%s/upload" % url], "POST", "/upload", "200")]
    for args, *_ in curls:
        p = subprocess.run(["curl", "-s", "-o", "/dev/null", "--max-time", "5", "-A", "it-agent/1.0",
                            "-e", "http://ref.example/p"] + args, capture_output=True, timeout=10)
        eq(p.returncode, 0, "curl %s exit status" % args)
    eq(lb.stop(), 0, "lb exit status on SIGTERM")
    with open(cpath, encoding="utf-8") as f:
        lines = f.read().splitlines()
    eq(len(lines), len(curls), "combined access log lines")
    for i, (line, (_, m, path, st)) in enumerate(zip(lines, curls)):
        mm = COMBINED_RE.match(line)
        check(mm, "combined log line %d does not match the combined format: %s" % (i + 1, short(line, 200)))
        eq((mm.group(1), mm.group(5), mm.group(6), mm.group(7), mm.group(8), mm.group(10), mm.group(11)),
           ("127.0.0.1", m, path, "HTTP/1.1", st, "http://ref.example/p", "it-agent/1.0"),
           "combined log line %d fields" % (i + 1))


def json_log_lines(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(l) for l in f.read().splitlines() if l.strip()]


def recv_to_eof(s, ends=()):
    """What socket s gives until its peer closes it; an exception of the classes in ends stops the
    reading too (any other propagates)."""
    data = b""
    while True:
        try:
            d = s.recv(65536)
        except ends:
            break
        if not d:
            break
        data += d
    return data


def raw_exchange(port, data, timeout=3.0):
    """Send bytes on a new connection, read until the server closes (or timeout): the bytes read."""
    s = socket.create_connection((HOST, port), timeout=timeout)
    try:
        s.sendall(data)
        return recv_to_eof(s, (socket.timeout, ConnectionResetError))
    finally:
        s.close()


def listen_socket(backlog=16):
    """A TCP socket listening on HOST, at a free port (SO_REUSEADDR): raw test servers' own."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((HOST, 0))
    ls.listen(backlog)
    return ls


def connect_nowait(port):
    """A non-blocking socket whose connect to HOST:port is under way (floods and held clients)."""
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect((HOST, port))
    except BlockingIOError:
        pass
    return s


def read_head(c):
    """What a raw test server reads of one request: up to and including the blank line after its head,
    or what came before the peer closed (then without it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        d = c.recv(65536)
        if not d:
            break
        data += d
    return data


class RawServer:
    """A raw TCP test server on HOST: accepts until stop(), serving each connection on a thread of its
    own with self._serve(conn), which a subclass defines (setting its own fields before calling
    RawServer.__init__, which starts accepting). self.stopped is an Event set by stop()."""

    def __init__(self, backlog=16):
        self.ls = listen_socket(backlog)
        self.port = self.ls.getsockname()[1]
        self.stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped.is_set():
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        raise NotImplementedError

    def stop(self):
        self.stopped.set()
        self.ls.close()


def cutting_server():
    """A server that answers one request with Content-Length 1000, 100 body bytes, then a reset: (port, thread)."""
    ls = listen_socket(4)
    ls.settimeout(5)

    def serve():
        try:
            c, _ = ls.accept()
            c.settimeout(5)
            read_head(c)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)
            time.sleep(0.1)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
        except OSError:
            pass
        finally:
            ls.close()
    th = threading.Thread(target=serve, daemon=True)
    th.start()
    return ls.getsockname()[1], th


@test("access_log_timers")
def t_access_log_timers(ctx):
    """A server that waits 150 ms before its answer: the json line's first-byte timer says 150 ms
    (+-20 ms) in microseconds, the other timers are ordered, and the fields name the server by name and
    HOST:PORT, the listener, host, user agent, bytes in, HTTP version and no TLS."""
    b1 = ctx.b["b1"]
    port = free_port()
    jpath = os.path.join(ctx.dir, "access.json")
    lb = ctx.lb(config(listener("web", port, pool="tp"), pool("tp", [("s1", b1.port)]), access=jpath, fmt="json"),
                [port])
    r = request(port, "/slow?ms=150", headers={"User-Agent": "timer-agent/2"})
    eq(r.status, 200, "/slow?ms=150 status")
    eq(lb.stop(), 0, "lb exit status on SIGTERM")
    lines = json_log_lines(jpath)
    eq(len(lines), 1, "access log lines")
    o = lines[0]
    missing = set(["t_request_us", "t_connect_us", "t_first_byte_us", "t_total_us", "server_addr", "retries",
                   "bytes_in", "listener", "host", "user_agent", "tls_version", "tls_cipher", "proto"]) - set(o)
    check(not missing, "json line lacks %s: %s" % (sorted(missing), short(str(o), 300)))
    fb = o["t_first_byte_us"]
    slack = 50000 if "asan" in os.path.basename(LB_BIN) else 20000  # the ASan build adds its own delay under load
    check(isinstance(fb, int) and 130000 <= fb <= 150000 + slack, "t_first_byte_us %r is not 150 ms -20/+%d ms" % (fb, slack // 1000))
    check(0 <= o["t_request_us"] <= o["t_total_us"] and 0 <= o["t_connect_us"] and fb <= o["t_total_us"],
          "timers out of order: %s" % short(str(o), 300))
    check(abs(o["duration_ms"] * 1000 - o["t_total_us"]) <= 1, "duration_ms %r against t_total_us %r"
          % (o["duration_ms"], o["t_total_us"]))
    eq((o["server"], o["server_addr"], o["listener"], o["host"], o["user_agent"], o["retries"], o["proto"], o["term"],
        o["tls"], o["tls_version"]),
       ("s1", "%s:%d" % (HOST, b1.port), "web", "%s:%d" % (HOST, port), "timer-agent/2", 0, "HTTP/1.1", "--",
        False, None), "json fields")
    check(o["bytes_in"] > 40, "bytes_in %r" % o["bytes_in"])


@test("access_log_term_states")
def t_access_log_term_states(ctx):
    """Each way lb ends an exchange itself has its termination state in the access log: 404 (no
    route), 403 (acl), 429 (rate limit), 400 (bad request, refused before parsing: its method, target
    and request id still logged, and the same id in the error log), 308 (redirect_https), 503 (no
    usable server: SC; a route's return = 503: LR), 413, 414 and 431 (PR, the 431 with its method and
    target), 504 (sH), 408 (a head left incomplete: cR, its method and target logged); a server that
    resets its answer mid-body is SD, a client that resets its download CD."""
    b1 = ctx.b["b1"]
    port, rport = free_port(), free_port()
    cport, _th = cutting_server()
    jpath = os.path.join(ctx.dir, "access.json")
    lb = ctx.lb(config(
        listener("web", port, header_timeout="1s"), listener("plain", rport, pool="ok", redirect_https="on"),
        pool("ok", [("s1", b1.port)]), pool("offp", [("s1", b1.port, "disabled")]),
        pool("cut", [("c1", cport)], retries=0, health_check="off"),
        route("deny", path="/deny/*", pool="ok", acl="deny 127.0.0.0/8"),
        route("rl", path="/rl/*", pool="ok", rate_limit="1/minute burst=1"),
        route("off", path="/off/*", pool="offp"),
        route("cut", path="/cut/*", pool="cut"),
        route("fine", path="/fine/*", pool="ok"), route("bytes", path="/bytes", pool="ok"),
        route("maint", path="/maint/*", **{"return": "503 down for maintenance"}),
        route("small", path="/small/*", pool="ok", max_body_size="1k"),
        route("late", path="/slow", pool="ok", response_timeout="100ms"),
        access=jpath, fmt="json"), [port, rport])
    eq(request(port, "/nowhere").status, 404, "no route")
    eq(request(port, "/deny/x").status, 403, "acl deny")
    eq(request(port, "/rl/1").status, 200, "first within the rate limit")
    eq(request(port, "/rl/2").status, 429, "second over the rate limit")
    eq(request(port, "/off/x").status, 503, "every server disabled")
    eq(request(rport, "/redir").status, 308, "redirect_https")
    eq(request(port, "/maint/x").status, 503, "a route's return = 503")
    got = raw_exchange(port, b"POST /small/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
    check(got.startswith(b"HTTP/1.1 413 "), "a body over max_body_size: %s" % short(got))
    eq(request(rport, "/" + "u" * 12000).status, 414, "a redirect_https target too long")
    got = raw_exchange(port, b"GET /fine/big HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 20000 + b"\r\n\r\n")
    check(got.startswith(b"HTTP/1.1 431 "), "a head over max_header_size: %s" % short(got))
    eq(request(port, "/slow?ms=600").status, 504, "no answer within response_timeout")
    got = raw_exchange(port, b"GET /bad\x01target HTTP/1.1\r\nHost: x\r\n\r\n")
    check(got.startswith(b"HTTP/1.1 400 "), "bad request answer: %s" % short(got))
    got = raw_exchange(port, b"GET /fine/a%zz HTTP/1.1\r\nHost: x\r\n\r\n")
    check(got.startswith(b"HTTP/1.1 400 "), "bad percent-encoding answer: %s" % short(got))
    got = raw_exchange(port, b"GET /cut/x HTTP/1.1\r\nHost: x\r\n\r\n")
    check(got.startswith(b"HTTP/1.1 200 ") and len(got.split(b"\r\n\r\n", 1)[1]) == 100,
          "the cut answer: %s" % short(got))
    eq(request(port, "/fine/x").status, 200, "a whole exchange")
    got = raw_exchange(port, b"GET /fine/slowhead HTTP/1.1\r\nHost: x\r\n")
    check(got.startswith(b"HTTP/1.1 408 "), "a head left incomplete: %s" % short(got))
    s = socket.create_connection((HOST, port), timeout=3)
    s.sendall(b"GET /bytes?n=20000000 HTTP/1.1\r\nHost: x\r\n\r\n")
    check(s.recv(4096).startswith(b"HTTP/1.1 200 "), "the start of a big download")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    time.sleep(0.3)
    eq(lb.stop(), 0, "lb exit status on SIGTERM")
    by_uri = {}
    for o in json_log_lines(jpath):
        by_uri[o["uri"]] = o
    want = [("/nowhere", 404, "PR"), ("/deny/x", 403, "PR"), ("/rl/2", 429, "PR"), ("/off/x", 503, "SC"),
            ("/redir", 308, "LR"), ("/cut/x", 200, "SD"), ("/fine/x", 200, "--"), ("/fine/slowhead", 408, "cR"),
            ("/bytes?n=20000000", 200, "CD"), ("/maint/x", 503, "LR"), ("/small/x", 413, "PR"),
            ("/" + "u" * 12000, 414, "PR"), ("/fine/big", 431, "PR"), ("/slow?ms=600", 504, "sH")]
    for uri, st, term in want:
        o = by_uri.get(uri)
        check(o is not None, "no access log line for %s: %s" % (uri, sorted(by_uri)))
        eq((o["status"], o["term"]), (st, term), "status and term of %s" % uri)
    bad = sorted((o for o in by_uri.values() if o["status"] == 400), key=lambda o: o["uri"])
    eq([(o["method"], o["uri"], o["term"]) for o in bad], [("GET", "/bad\x01target", "PR"), ("GET", "/fine/a%zz", "PR")],
       "the 400s' method, target and term")
    check(bad[1]["request_id"] and RID_RE.match(bad[1]["request_id"]), "request id %r" % bad[1]["request_id"])
    o = bad[0]
    check(o["request_id"] and RID_RE.match(o["request_id"]), "the 400's request id %r" % o["request_id"])
    err = [l for l in lb.stderr().splitlines() if " 400 Bad Request" in l]
    check(err and ("request id %s" % o["request_id"]) in err[0], "the 400's error-log line names request id %s: %s"
          % (o["request_id"], short(err, 300)))
    eq(by_uri["/cut/x"]["bytes"], 100, "body bytes of the cut answer")


@test("access_log_template")
def t_access_log_template(ctx):
    """[log] format as a template of %{field}s: the line is the template with its fields filled in
    (a %% is a %); lb -t refuses an unknown field with FILE:LINE and its name."""
    b1 = ctx.b["b1"]
    port = free_port()
    path = os.path.join(ctx.dir, "access.log")
    tpl = "%{client} %{method} %{uri} %{status} %{term} %{server_addr} %{route} rt=%{t_first_byte_us} %% end"
    lb = ctx.lb(config(listener("web", port, pool="tp"), pool("tp", [("s1", b1.port)]), access=path, fmt=tpl),
                [port])
    eq(request(port, "/tpl/1?a=b").status, 200, "request status")
    eq(lb.stop(), 0, "lb exit status on SIGTERM")
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    eq(len(lines), 1, "access log lines")
    m = re.match(r"^127\.0\.0\.1 GET /tpl/1\?a=b 200 -- 127\.0\.0\.1:%d - rt=(\d+) %% end$" % b1.port, lines[0])
    check(m, "template line: %s" % short(lines[0], 200))
    p, rc, err = lb_test_config(ctx, "badfield", ["[log]", "access = stdout", "format = %{client} %{stauts}",
                                                  "[listener web]", "bind = %s:%d" % (HOST, free_port()),
                                                  "pool = p", "[pool p]", "server = a %s:%d" % (HOST, b1.port)])
    eq(rc, 1, "lb -t exit status with an unknown field")
    check(("%s:3:" % p) in err and "stauts" in err and "status" in err,
          "lb -t names FILE:LINE, the unknown field and a close one: %s" % short(err, 300))


@test("error_log_levels")
def t_error_log_levels(ctx):
    """Every error-log line has a millisecond timestamp and a level; [log] level = warn leaves out the
    info lines (the start) and keeps a 503's warn line, level = error leaves out both."""
    b1 = ctx.b["b1"]
    line_re = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z lb\[\d+\]: (error|warn|info|debug): \S")
    for level, want in ((None, {"info", "warn"}), ("warn", {"warn"}), ("error", set())):
        port = free_port()
        text = config(listener("web", port, pool="offp"), pool("offp", [("s1", b1.port, "disabled")]))
        if level:
            text = text.replace("[log]\n", "[log]\nlevel = %s\n" % level)
        lb = ctx.lb(text, [port], tag="lb-%s" % (level or "default"))
        eq(request(port, "/x").status, 503, "every server disabled")
        time.sleep(0.1)
        lb.stop()
        lines = [l for l in lb.stderr().splitlines() if l.strip()]
        bad = [l for l in lines if not line_re.match(l)]
        check(not bad, "level %s: lines without a ms timestamp and a level: %s" % (level, short(bad, 300)))
        levels = {line_re.match(l).group(1) for l in lines}
        started = any(": info: lb " in l and "master pid" in l for l in lines)
        answered = any(": warn: " in l and "503 Service Unavailable" in l for l in lines)
        eq((started, answered), ("info" in want, "warn" in want), "level %s: (start line, 503 line) in %s"
           % (level, sorted(levels)))


@test("access_log_full_disk", timeout=40)
def t_access_log_full_disk(ctx):
    """The access log on a 64 KB tmpfs that fills up: every request is still answered, the file holds
    only whole lines (a line cut by the full disk is taken back), each lost line is counted in
    lb_log_lines_dropped_total and said in the error log; once space frees, new lines are whole and
    not glued to a fragment. 2 workers write the same file."""
    if os.geteuid() != 0:
        raise Skip("mounting a tmpfs needs root")
    b1 = ctx.b["b1"]
    mnt = os.path.join(ctx.dir, "small")
    os.makedirs(mnt)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", mnt], capture_output=True, timeout=10)
    if p.returncode != 0:
        raise Skip("cannot mount a tmpfs here: %s" % short(p.stderr.decode(), 200))
    lb = None
    try:
        port, ap = free_port(), free_port()
        log = os.path.join(mnt, "access.log")
        lb = ctx.lb(config(listener("web", port, pool="logpool"), pool("logpool", [("s1", b1.port)]),
                           "[admin]\nbind = %s:%d\n" % (HOST, ap), access=log).replace("workers = 1", "workers = 2"),
                    [port, ap])

        def get(path):
            r = request(port, path)
            eq((r.status, r.body), (200, ("b1 %s\n" % path).encode()), "answer to %s" % path)

        def logged():
            with open(log, "rb") as f:
                return f.read()

        def wait_lines(n):
            deadline = time.monotonic() + 3
            while logged().count(b"\n") < n and time.monotonic() < deadline:
                time.sleep(0.05)

        def whole_lines(data):
            check(data.endswith(b"\n"), "the log ends inside a line: %s" % short(data[-120:]))
            paths = []
            for i, line in enumerate(data.decode("utf-8", "replace").splitlines()):
                mm = COMBINED_RE.match(line)
                check(mm and mm.group(8) == "200", "log line %d is not a whole line: %s" % (i + 1, short(line, 200)))
                paths.append(mm.group(6))
            return paths

        for i in range(20):
            get("/before-%03d" % i)
        wait_lines(20)
        size = len(logged())
        line_len = size // 20
        slack = 4096 - size % 4096  # the log's last page: what it can still take once the disk is full
        if slack % line_len == 0:  # make the full disk cut a line in two
            get("/x")
            wait_lines(21)
            slack = 4096 - len(logged()) % 4096
        fd = os.open(os.path.join(mnt, "fill"), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while os.write(fd, b"\0" * 4096) > 0:
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        n_full = 150
        t_full = time.monotonic()
        for i in range(n_full):
            get("/during-%03d" % i)
        time.sleep(1.3)  # the error log says losses at most once a second
        during = [q for q in whole_lines(logged()) if q.startswith("/during-")]
        check(len(during) < n_full, "all %d lines fit on a full disk?" % n_full)
        t = metrics_text(ap)
        dropped = sum_metric(t, "lb_log_lines_dropped_total")
        eq(dropped, n_full - len(during), "lb_log_lines_dropped_total (%d of %d lines logged)" % (len(during), n_full))
        said = sum(int(n) for n in re.findall(r"access log: (\d+) lines? dropped: No space left on device", lb.stderr()))
        check(1 <= said <= dropped, "the error log says %d lines dropped (%d counted): %s"
              % (said, dropped, lb.stderr_tail()))
        per_worker = int(time.monotonic() - t_full) + 2  # the first at once, then at most one a second
        check(len(re.findall(r"access log: \d+ lines? dropped", lb.stderr())) <= 2 * per_worker,
              "losses said more than once a second per worker: %s" % lb.stderr_tail())
        promtool = shutil.which("promtool")
        if promtool:
            pr_ = subprocess.run([promtool, "check", "metrics"], input=t.encode(), capture_output=True, timeout=30)
            check(pr_.returncode == 0, "promtool check metrics: %s" % short((pr_.stdout + pr_.stderr).decode(), 300))
        os.unlink(os.path.join(mnt, "fill"))
        for i in range(20):
            get("/after-%03d" % i)
        wait_lines(len(whole_lines(logged())) + 20)
        paths = whole_lines(logged())
        eq(sorted(q for q in paths if q.startswith("/after-")), ["/after-%03d" % i for i in range(20)],
           "lines logged once space is free")
        eq(sum_metric(metrics_text(ap), "lb_log_lines_dropped_total"), dropped, "drops once space is free")
        eq(lb.stop(), 0, "lb exit status on SIGTERM")
        eq(whole_lines(logged()), paths, "the log after lb stopped")
    finally:
        if lb:
            lb.stop()
        subprocess.run(["umount", "-l", mnt], capture_output=True, timeout=10)


@test("access_log_line_longer_than_buffer")
def t_access_log_long_line(ctx):
    """A line longer than the 64 KB log buffer (a 30 KB User-Agent of bytes logged as \\xHH) is not
    written cut: it is dropped whole, counted and said; the lines around it are whole."""
    b1 = ctx.b["b1"]
    port, ap = free_port(), free_port()
    log = os.path.join(ctx.dir, "access.log")
    lb = ctx.lb(config(listener("web", port, pool="logpool", max_header_size="64k"), pool("logpool", [("s1", b1.port)]),
                       "[admin]\nbind = %s:%d\n" % (HOST, ap), access=log), [port, ap])
    for path, ua in (("/first", "ua"), ("/long", "\xe9" * 30000), ("/last", "ua")):
        eq(request(port, path, headers={"User-Agent": ua}).status, 200, "%s status" % path)
    eq(sum_metric(metrics_text(ap), "lb_log_lines_dropped_total"), 1, "lb_log_lines_dropped_total")
    eq(lb.stop(), 0, "lb exit status on SIGTERM")
    with open(log, "rb") as f:
        data = f.read()
    check(data.endswith(b"\n"), "the log ends inside a line: %s" % short(data[-120:]))
    paths = []
    for i, line in enumerate(data.decode("utf-8", "replace").splitlines()):
        mm = COMBINED_RE.match(line)
        check(mm, "log line %d is not a whole line: %s" % (i + 1, short(line, 200)))
        paths.append(mm.group(6))
    eq(paths, ["/first", "/last"], "paths logged")
    check(re.search(r"access log: 1 line dropped: the line is longer than the 64 KB buffer", lb.stderr()),
          "the error log does not say the long line was dropped: %s" % lb.stderr_tail())


def admin_get(port, path):
    """The body of GET path on lb's admin API, which must answer 200."""
    c = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        c.request("GET", path)
        r = c.getresponse()
        eq(r.status, 200, "GET %s status" % path)
        return r.read()
    finally:
        c.close()


def metrics_text(port):
    return admin_get(port, "/metrics").decode()


@test("graceful_sigterm")
def t_sigterm(ctx):
    b1 = ctx.b["b1"]
    port = free_port()
    lb = ctx.lb(config(listener("web", port, pool="one"), pool("one", [("b1", b1.port)], response_timeout="5s")),
                [port])
    res = {}

    def slow():
        try:
            t = time.monotonic()
            r = request(port, "/slow?ms=1500", timeout=6)
            res["r"] = (r.status, r.body, time.monotonic() - t)
        except Exception as e:  # reported below
            res["e"] = "%s: %s" % (type(e).__name__, e)

    th = threading.Thread(target=slow, daemon=True)
    th.start()
    time.sleep(0.4)
    lb.expected_exit = True
    os.kill(lb.pid, signal.SIGTERM)
    t_sig = time.monotonic()
    refused = False
    while time.monotonic() - t_sig < 1.0:
        try:
            s = socket.create_connection((HOST, port), timeout=0.5)
            s.close()
        except ConnectionRefusedError:
            refused = True
            break
        except OSError:
            pass
        time.sleep(0.05)
    th.join(6)
    check("e" not in res, "in-flight request failed after SIGTERM: %s" % res.get("e"))
    check("r" in res, "in-flight request did not finish")
    eq(res["r"][:2], (200, b"b1 /slow\n"), "in-flight request result")
    check(refused, "new connections still accepted 1 s after SIGTERM")
    try:
        rc = lb.proc.wait(5)
    except subprocess.TimeoutExpired:
        raise Fail("lb still running 5 s after the in-flight request finished")
    eq(rc, 0, "lb exit status after SIGTERM")


@test("least_conn_ip_hash")
def t_least_conn(ctx):
    b = ctx.b
    lc, ih = free_port(), free_port()
    three = [("b1", b["b1"].port), ("b2", b["b2"].port), ("b3", b["b3"].port)]
    ctx.lb(config(listener("lc", lc, pool="lc"), listener("ih", ih, pool="ih"),
                  pool("lc", three, algorithm="least_conn", response_timeout="5s"),
                  pool("ih", three, algorithm="ip_hash")), [lc, ih])
    slow = []
    lock = threading.Lock()

    def one():
        try:
            r = request(lc, "/slow?ms=1500", timeout=6)
            with lock:
                slow.append((r.status, r.backend))
        except Exception as e:
            with lock:
                slow.append(("%s: %s" % (type(e).__name__, e), None))

    t0 = time.monotonic()
    threads = []
    for _ in range(5):
        th = threading.Thread(target=one, daemon=True)
        th.start()
        threads.append(th)
        time.sleep(0.02)
    time.sleep(0.3)
    quick = []
    while len(quick) < 20 and time.monotonic() - t0 < 1.3:
        r = request(lc, "/quick", timeout=2)
        eq(r.status, 200, "quick request status")
        quick.append(r.backend)
    for th in threads:
        th.join(5)
    eq(len(slow), 5, "slow requests finished")
    check(all(s == 200 for s, _ in slow), "slow requests: %r" % slow)
    check(len(quick) >= 10, "only %d quick requests ran while the slow ones were in flight" % len(quick))
    load = {n: 0 for n in ("b1", "b2", "b3")}
    for _, n in slow:
        load[n] += 1
    check(max(load.values()) - min(load.values()) <= 1, "least_conn spread 5 concurrent requests as %r" % load)
    least = {n for n, v in load.items() if v == min(load.values())}
    good = sum(1 for q in quick if q in least)
    check(good >= 0.9 * len(quick), "quick requests %r went to %r; least loaded %s (in flight %r)"
          % (len(quick), count_by(quick), sorted(least), load))
    seen = []
    for _ in range(20):
        r = request(ih, "/ih")
        eq(r.status, 200, "ip_hash request status")
        seen.append(r.backend)
    eq(len(set(seen)), 1, "servers chosen by ip_hash for one client address (%r)" % count_by(seen))


# ---------------------------------------------------------------------------------------- runner
# One runner for every suite (integration, process, policy, health, admin): backends shared by the
# suite's tests, a time budget per test and per suite, cleanup bounded, one PASS/FAIL line per test.

class Skip(Exception):
    """A test that cannot run here: reported as PASS with the reason."""


class Suite:
    def __init__(self, tmp):
        self.tmp = tmp
        self.backends = {}


def start_backends(suite, specs):
    """Start the (name, mode) backends; None, or why they did not start."""
    logdir = os.path.join(suite.tmp, "backends")
    os.makedirs(logdir, exist_ok=True)
    pending = []
    for name, mode in specs:
        bk = Backend(name, mode, logdir)
        bk.start()
        suite.backends[name] = bk
        pending.append(bk)
    for attempt in range(3):
        deadline = time.monotonic() + 10
        failed = [bk for bk in pending if not bk.wait_ready(deadline)]
        if not failed:
            return None
        for bk in failed:  # a port taken in between: try another
            bk.stop()
            bk.start()
        pending = failed
    return "backends did not start: %s (see %s)" % ([bk.name for bk in pending], logdir)


def where(exc, file_name=__file__):
    """' (FILE:LINE,...)': the lines of the test file the exception passed through, outermost first."""
    me = os.path.abspath(file_name)
    lines = [str(f.lineno) for f in traceback.extract_tb(exc.__traceback__)
             if os.path.abspath(f.filename) == me and f.name not in ("main", "run_suite", "run_one")]
    return " (%s:%s)" % (os.path.basename(me), ",".join(lines)) if lines else ""


def run_one(suite, name, fn, timeout, make_ctx, file_name, cleanup_timeout):
    """(passed, line) of one test: its function, then its context's cleanup, each bounded."""
    ctx = reason = skipped = None
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        ctx = make_ctx(suite, name)
        fn(ctx)
    except Timeout as e:
        reason = "timed out after %.0f s%s" % (timeout, where(e, file_name))
    except Skip as e:
        skipped = str(e)
    except Fail as e:
        reason = str(e)
    except Exception as e:
        reason = "%s: %s%s" % (type(e).__name__, e, where(e, file_name))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    if ctx is not None:
        if cleanup_timeout:
            signal.setitimer(signal.ITIMER_REAL, cleanup_timeout)  # cleanup must not hang either
        try:
            crash = ctx.cleanup()
        except Timeout:
            crash = "cleanup timed out"
        except Exception as e:
            crash = "cleanup: %s: %s" % (type(e).__name__, e)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        procs = ctx.lbs if hasattr(ctx, "lbs") else ctx.masters
        if crash:
            reason = crash if reason is None else reason + "; " + crash
        elif reason is not None and procs and not reason.startswith("lb "):
            tail = procs[-1].stderr_tail(150)
            if tail != "(no stderr)":
                reason += " [lb stderr: %s]" % tail
    if reason is None:
        return True, "PASS %s%s" % (name, " (skipped: %s)" % skipped if skipped else "")
    return False, "FAIL %s: %s" % (name, " | ".join(reason.splitlines()))


def run_suite(all_tests, label, budget, file_name, make_ctx, backend_specs, cleanup_timeout=None):
    """Run (name, fn, timeout) tests; print "LABEL: N passed, N failed" last; exit 1 when any failed."""
    ap = argparse.ArgumentParser(description="lb %s integration tests" % label)
    ap.add_argument("--only", help="run tests whose name contains this")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    tests = [t for t in all_tests if not args.only or args.only in t[0]]
    suite_end = time.monotonic() + budget
    tmp = tempfile.mkdtemp(prefix="lb-%s-" % label)
    os.chmod(tmp, 0o755)  # workers running as nobody read the configs there
    suite = Suite(tmp)
    passed = failed = 0

    def on_alarm(signum, frame):
        raise Timeout()

    signal.signal(signal.SIGALRM, on_alarm)
    try:
        setup_error = start_backends(suite, backend_specs)
        for name, fn, timeout in tests:
            left = suite_end - time.monotonic()
            if setup_error:
                ok, line = False, "FAIL %s: %s" % (name, setup_error)
            elif left < 1:
                ok, line = False, "FAIL %s: not run: the suite's %d s budget is spent" % (name, budget)
            else:
                ok, line = run_one(suite, name, fn, min(timeout, left), make_ctx, file_name, cleanup_timeout)
            print(line, flush=True)
            passed += ok
            failed += not ok
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        failed += 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for bk in suite.backends.values():
            try:
                bk.stop()
            except Exception:
                pass
        if args.keep:
            print("kept %s" % tmp, file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print("%s: %d passed, %d failed" % (label, passed, failed), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    run_suite(TESTS, "integration", SUITE_BUDGET, __file__, Ctx,
              [("b%d" % i, "http") for i in range(1, 7)] + [("echo", "tcp-echo"), ("count", "tcp-count")])
