#!/usr/bin/env python3
"""Integration tests for lb's health checks, circuit breaker, retries, backups and alerts.

    python3 tests/health.py [--only SUBSTR] [--keep]

The lb binary is $LB_BIN (default ./lb). The suite runner, clients and config helpers come from
tests/policy.py; backends are tests/backend.py processes: a and b shared, and per test ones that
are killed and restarted on the same port or switched to failing modes through their /mode
endpoint (500 to every request, slow answers, reset connections). Health and circuit times
are scaled down from the defaults (health_interval 300ms instead of 10s, circuit_open 1-2s instead
of 30s) so that the suite stays short; the slow-answer case keeps the issue's 6 s answers against
circuit_slow = 5s. The bounds asserted are derived from the configured values.
One line per test: "PASS name" or "FAIL name: reason"; then "health: N passed, N failed".
"""
import http.client
import json
import os
import resource
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import integration as it  # noqa: E402
import process as pr  # noqa: E402
import policy as po  # noqa: E402
from integration import HOST, Fail, check, eq, free_port, short  # noqa: E402
from process import conf  # noqa: E402
from policy import ask, section, lsn  # noqa: E402

SUITE_BUDGET = 275
TESTS = []
test = it.registrar(TESTS, 40)


def own_backend(ctx, name):
    """A backend process of this test only (it may be killed); stopped at cleanup."""
    bk = it.Backend(name, "http", ctx.dir)
    bk.start()
    ctx.on_cleanup(bk.stop)
    if not bk.wait_ready(time.monotonic() + 10):
        raise Fail("backend %s did not start" % name)
    return bk


def restart(bk):
    bk.start(bk.port)
    if not bk.wait_ready(time.monotonic() + 10):
        raise Fail("backend %s did not restart on port %d" % (bk.name, bk.port))


def set_mode(bk, mode, ms=0):
    c = http.client.HTTPConnection(HOST, bk.port, timeout=5)
    try:
        c.request("GET", "/mode?set=%s&ms=%d" % (mode, ms))
        r = c.getresponse()
        r.read()
        eq(r.status, 200, "backend %s: /mode?set=%s" % (bk.name, mode))
    finally:
        c.close()


def app(bk):
    return bk.stats()["app"]


def wait_log(m, text, timeout, after=0):
    """Seconds until lb's stderr (from offset `after`) contains text; Fail after timeout."""
    t0 = time.monotonic()
    while True:
        if text in m.stderr()[after:]:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise Fail("no '%s' in lb's log within %.1f s: %s" % (text, timeout, short(m.stderr()[after:], 400)))
        time.sleep(0.02)


def read_alerts(path):
    """The JSON events alert_command wrote, one per line; every line must be a complete event."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for ln in lines:
        try:
            o = json.loads(ln)
        except ValueError:
            raise Fail("alert_command got a line that is not JSON: %s" % short(ln))
        check(isinstance(o, dict) and set(o) == {"time", "kind", "pool", "server", "reason"},
              "alert event fields: %s" % short(ln))
        check(o["time"].endswith("Z") and len(o["time"]) == 24, "alert event time %r" % o["time"])
        out.append(o)
    return out


def wait_alerts(path, pred, timeout, what):
    t0 = time.monotonic()
    while True:
        ev = read_alerts(path)
        if pred(ev):
            return ev
        if time.monotonic() - t0 > timeout:
            raise Fail("%s: alert events %s" % (what, [(e["kind"], e["server"]) for e in ev]))
        time.sleep(0.05)


class Loop(threading.Thread):
    """Sequential GETs on new connections until stopped; counts answers by status and failures."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.stopped = port, threading.Event()
        self.ok = 0
        self.bad = []

    def run(self):
        i = 0
        while not self.stopped.is_set():
            i += 1
            try:
                r = ask(self.port, "/loop/%d" % i)
                if r.status == 200:
                    self.ok += 1
                else:
                    self.bad.append("request %d: status %d" % (i, r.status))
            except Exception as e:
                self.bad.append("request %d: %s" % (i, e))
            time.sleep(0.005)

    def stop(self):
        self.stopped.set()
        self.join(10)


HC_FAST = (("health_interval", "300ms"), ("health_timeout", "200ms"))


@test("kill_backend_under_load", timeout=60)
def t_kill(ctx):
    """Kill one of three backends under a steady client loop: no failed GET (retries), marked down within
    health_fall x health_interval + health_timeout, back only after health_rise passed checks."""
    a, b = ctx.b["a"], ctx.b["b"]
    c = own_backend(ctx, "c")
    port = free_port()
    alerts = os.path.join(ctx.dir, "alerts.jsonl")
    m = ctx.master(conf(lsn("web", port),
                        section("pool p", ("server", "a %s:%d" % (HOST, a.port)), ("server", "b %s:%d" % (HOST, b.port)),
                                ("server", "c %s:%d" % (HOST, c.port)), *HC_FAST, ("health_fall", "2"),
                                ("health_rise", "3"), ("retries", "2")),
                        workers=2, glob={"alert_command": "cat >> %s" % alerts}), [port])
    m.wait_workers(2)
    loop = Loop(port)
    loop.start()
    ctx.on_cleanup(loop.stop)
    time.sleep(0.6)
    check(app(c) > 0, "backend c got no request before it was killed")
    mark = len(m.stderr())
    c.stop()
    took = wait_log(m, "server p/c is down", 5, mark)
    bound = 2 * 0.3 + 0.2
    check(took <= bound + 0.4, "c marked down %.2f s after it died; bound health_fall x health_interval + "
                               "health_timeout = %.1f s (+0.4 s for this test's polling)" % (took, bound))
    time.sleep(0.5)
    restart(c)
    mark = len(m.stderr())
    t0 = time.monotonic()
    while "server p/c is up" not in m.stderr()[mark:]:
        eq(app(c), 0, "requests c served after its restart but before it was marked up")
        check(time.monotonic() - t0 < 5, "c not marked up within 5 s of its restart")
        time.sleep(0.02)
    took = time.monotonic() - t0
    check(took >= 2 * 0.3 - 0.15, "c marked up %.2f s after its restart: sooner than health_rise = 3 checks "
                                  "300 ms apart allow" % took)
    check(c.stats()["health"] >= 3, "c marked up after %d checks (health_rise = 3)" % c.stats()["health"])
    t0 = time.monotonic()
    while app(c) == 0:
        check(time.monotonic() - t0 < 3, "c gets no requests 3 s after it was marked up")
        time.sleep(0.05)
    loop.stop()
    check(loop.ok > 50, "only %d requests in the loop" % loop.ok)
    check(not loop.bad, "%d failed GETs (of %d), with retries on: %s" % (len(loop.bad), loop.ok + len(loop.bad),
                                                                         loop.bad[:3]))
    ev = wait_alerts(alerts, lambda ev: [e["kind"] for e in ev if e["kind"].startswith("server_")]
                     == ["server_down", "server_up"], 3, "alert_command: expected server_down then server_up")
    ev = [e for e in ev if e["kind"].startswith("server_")]
    eq((ev[0]["pool"], ev[0]["server"]), ("p", "c"), "server_down event: pool, server")
    check("connect" in ev[0]["reason"], "server_down reason %r does not say why" % ev[0]["reason"])


@test("checks_do_not_multiply_with_workers")
def t_once(ctx):
    """Health checks run in one process: 4 workers, 200 ms interval, 2 s: about 10 checks, not 40."""
    c = own_backend(ctx, "c")
    port = free_port()
    m = ctx.master(conf(lsn("web", port), section("pool p", ("server", "c %s:%d" % (HOST, c.port)),
                                                  ("health_interval", "200ms")), workers=4), [port])
    m.wait_workers(4)
    time.sleep(0.3)
    h0 = c.stats()["health"]
    time.sleep(2.0)
    n = c.stats()["health"] - h0
    check(6 <= n <= 14, "%d health checks in 2 s at 200 ms with 4 workers (want about 10: one checker)" % n)
    # a reload hands the checks to the new generation's worker 1: still one checker
    m.reload(conf(lsn("web", port), section("pool p", ("server", "c %s:%d" % (HOST, c.port)),
                                            ("health_interval", "200ms")), workers=4))
    time.sleep(1.5)
    h0 = c.stats()["health"]
    time.sleep(2.0)
    n = c.stats()["health"] - h0
    check(6 <= n <= 14, "%d health checks in 2 s after a reload (want about 10)" % n)


def circuit_pool(a, c, *extra):
    return section("pool p", ("server", "a %s:%d" % (HOST, a.port)), ("server", "c %s:%d" % (HOST, c.port)),
                   ("circuit_failures", "5"), ("circuit_open", "1s"), *extra)


def sequential(port, n, prefix):
    return [ask(port, "%s/%d" % (prefix, i)) for i in range(n)]


@test("circuit_opens_on_errors")
def t_circuit_errors(ctx):
    """A server answering 500 to everything: its circuit opens after 5 failures, it gets nothing while
    open, one trial after circuit_open (which fails and re-opens it), and once fixed a trial closes it."""
    a = ctx.b["a"]
    c = own_backend(ctx, "c")
    port = free_port()
    alerts = os.path.join(ctx.dir, "alerts.jsonl")
    m = ctx.master(conf(lsn("web", port), circuit_pool(a, c), workers=2,
                        glob={"alert_command": "cat >> %s" % alerts}), [port])
    m.wait_workers(2)
    set_mode(c, "500")
    c0, a0 = app(c), app(a)
    rs = sequential(port, 30, "/e1")
    st = [r.status for r in rs]
    eq(app(c) - c0, 5, "requests c (failing) got out of 30 with circuit_failures = 5 (statuses %s)" % st)
    eq((st.count(500), st.count(200)), (5, 25), "30 requests: (500s, 200s)")
    eq(app(a) - a0, 25, "requests a served")
    wait_log(m, "server p/c: circuit open", 1)
    ev = wait_alerts(alerts, lambda ev: len(ev) >= 1, 3, "circuit_open alert")
    eq((ev[0]["kind"], ev[0]["server"]), ("circuit_open", "c"), "first alert (kind, server)")
    check("5 consecutive failures" in ev[0]["reason"], "circuit_open reason %r" % ev[0]["reason"])
    time.sleep(1.1)
    c0 = app(c)
    rs = sequential(port, 10, "/e2")
    eq(app(c) - c0, 1, "requests c got after circuit_open while still failing (one trial, then open again)")
    wait_alerts(alerts, lambda ev: [e["kind"] for e in ev] == ["circuit_open", "circuit_open"], 3,
                "a failed trial re-opens the circuit")
    set_mode(c, "ok")
    time.sleep(1.1)
    c0 = app(c)
    rs = sequential(port, 10, "/e3")
    eq([r.status for r in rs], [200] * 10, "statuses once c is fixed")
    check(app(c) - c0 >= 4, "c got %d of 10 requests after its circuit closed (want about half)" % (app(c) - c0))
    wait_alerts(alerts, lambda ev: [e["kind"] for e in ev][-1:] == ["circuit_close"], 3, "circuit_close alert")
    wait_log(m, "server p/c: circuit closed", 1)


@test("circuit_max_open")
def t_circuit_max_open(ctx):
    """Both servers of a pool answer 500 (an overload looks like this): with circuit_max_open = 50% (the
    default) only the first to reach circuit_failures opens its circuit, the other stays closed and keeps
    serving (its 500s, not lb's 503s), and the log says why; with circuit_max_open = 100% both open and
    lb answers 503."""
    c, d = own_backend(ctx, "c"), own_backend(ctx, "d")
    set_mode(c, "500")
    set_mode(d, "500")

    def run(extra):
        port = free_port()
        pool = section("pool p", ("server", "c %s:%d" % (HOST, c.port)), ("server", "d %s:%d" % (HOST, d.port)),
                       ("circuit_failures", "5"), ("circuit_open", "10s"), ("health_check", "tcp"), *extra)
        m = ctx.master(conf(lsn("web", port), pool), [port])
        c0, d0 = app(c), app(d)
        st = [r.status for r in sequential(port, 20, "/m")]
        got = (app(c) - c0, app(d) - d0)
        m.stop()
        return st, got, m.stderr()

    st, got, log = run(())
    eq(got, (5, 15), "requests (c, d) got of 20 with the default circuit_max_open (statuses %s)" % st)
    eq(st, [500] * 20, "statuses: the server whose circuit stays closed keeps answering")
    eq(log.count("circuit open for"), 1, "circuits opened (log: %s)" % short(log, 600))
    check("server p/d: circuit stays closed: 1 of the pool's 2 circuits are open (circuit_max_open 50%)" in log,
          "the log does not say why d's circuit stayed closed: %s" % short(log, 600))
    st, got, log = run((("circuit_max_open", "100%"),))
    eq(got, (5, 5), "requests (c, d) got of 20 with circuit_max_open = 100%% (statuses %s)" % st)
    eq((st.count(500), st.count(503)), (10, 10), "statuses with both circuits open")
    eq(log.count("circuit open for"), 2, "circuits opened with circuit_max_open = 100%")


@test("circuit_opens_on_slow_answers")
def t_circuit_slow(ctx):
    """A server answering in 6 s with circuit_slow = 5s (the defaults' scale): 10 concurrent requests, of
    which round-robin gives it 5, open its circuit (circuit_failures = 5) though every answer was a 200;
    it then gets nothing while open, and once fixed a trial after circuit_open closes it."""
    a = ctx.b["a"]
    c = own_backend(ctx, "c")
    port = free_port()
    m = ctx.master(conf(lsn("web", port), section("pool p", ("server", "a %s:%d" % (HOST, a.port)),
                                                  ("server", "c %s:%d" % (HOST, c.port)), ("circuit_failures", "5"),
                                                  ("circuit_slow", "5s"), ("circuit_open", "2s")),
                        workers=1), [port])
    set_mode(c, "slow", 6000)
    c0 = app(c)
    res, lock = [], threading.Lock()

    def one(i):
        r = ask(port, "/s1/%d" % i, timeout=15)
        with lock:
            res.append((r.status, r.backend))

    ths = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(10)]
    for th in ths:
        th.start()
    for th in ths:
        th.join(15)
    eq(sorted(res), sorted([(200, "a")] * 5 + [(200, "c")] * 5), "10 concurrent requests: (status, server)")
    eq(app(c) - c0, 5, "requests the slow server got")
    wait_log(m, "server p/c: circuit open", 1)
    check("circuit_slow 5000 ms" in m.stderr(), "the log does not say the answers were slow: %s"
          % short(m.stderr(), 300))
    c0 = app(c)
    rs = sequential(port, 8, "/s2")
    eq([(r.status, r.backend) for r in rs], [(200, "a")] * 8, "requests while c's circuit is open")
    eq(app(c) - c0, 0, "requests the slow server got while its circuit was open")
    set_mode(c, "ok")
    time.sleep(2.1)
    sequential(port, 8, "/s3")
    check(app(c) - c0 >= 3, "c got %d of 8 requests after its fix and circuit_open" % (app(c) - c0))
    wait_log(m, "circuit closed", 1)


@test("backup_and_all_down")
def t_backup(ctx):
    """A backup takes over when the primary is marked down and gives back when it returns; a pool with
    every server down answers 503 with Retry-After. alert_command failures are logged."""
    a = ctx.b["a"]
    c = own_backend(ctx, "c")
    port, dead = free_port(), free_port()
    m = ctx.master(conf(lsn("web", port),
                        section("pool p", ("server", "c %s:%d" % (HOST, c.port)),
                                ("server", "a %s:%d backup" % (HOST, a.port)), *HC_FAST, ("health_fall", "1"),
                                ("health_rise", "1")),
                        section("pool q", ("server", "d %s:%d" % (HOST, dead)), *HC_FAST, ("health_fall", "1")),
                        section("route q", ("path", "/q/*"), ("pool", "q")),
                        workers=2, glob={"alert_command": "exit 3"}), [port])
    m.wait_workers(2)
    eq({ask(port, "/p/%d" % i).backend for i in range(4)}, {"c"}, "servers answering while the primary is up")
    c.stop()
    wait_log(m, "server p/c is down", 3)
    eq({ask(port, "/p/b%d" % i).backend for i in range(4)}, {"a"}, "servers answering with the primary down")
    restart(c)
    wait_log(m, "server p/c is up", 3)
    eq({ask(port, "/p/c%d" % i).backend for i in range(4)}, {"c"}, "servers answering once the primary is back")
    wait_log(m, "server q/d is down", 3)
    r = ask(port, "/q/x")
    eq((r.status, r.backend), (503, None), "pool with its only server down: (status, X-Backend)")
    check((r.hdr("retry-after") or "").isdigit(), "503 without a Retry-After in seconds: %s" % r.headers)
    wait_log(m, "failed with exit status 3", 3)


@test("check_failure_names_the_check")
def t_check_message(ctx):
    """A failed HTTP check's down line names the method, path and expected statuses and what came, and
    the server as HOST:PORT; a failed TCP check says TCP; with no health_check set the check is
    http GET /health (the backend counts those)."""
    a = ctx.b["a"]
    c = own_backend(ctx, "c")
    port, dead = free_port(), free_port()
    h0 = c.stats()["health"]
    m = ctx.master(conf(lsn("web", port),
                        section("pool p", ("server", "a %s:%d" % (HOST, a.port)), *HC_FAST, ("health_fall", "2"),
                                ("health_check", "http GET /status?code=404"), ("health_expect", "200, 204-206")),
                        section("pool t", ("server", "d %s:%d" % (HOST, dead)), *HC_FAST, ("health_fall", "1"),
                                ("health_check", "tcp")),
                        section("pool dflt", ("server", "c %s:%d" % (HOST, c.port)), *HC_FAST),
                        section("route t", ("path", "/t/*"), ("pool", "t")),
                        section("route d", ("path", "/d/*"), ("pool", "dflt")),
                        workers=1), [port])
    m.wait_workers(1)
    wait_log(m, "server p/a is down", 3)
    wait_log(m, "server t/d is down", 3)
    line = [ln for ln in m.stderr().splitlines() if "server p/a is down" in ln][0]
    want = "server p/a is down (%s:%d): health check: GET /status?code=404 expected 200, 204-206, got 404 " \
           "(2 failed in a row)" % (HOST, a.port)
    check(want in line, "down line %r does not contain %r" % (line, want))
    line = [ln for ln in m.stderr().splitlines() if "server t/d is down" in ln][0]
    check(("(%s:%d): health check: TCP connect: Connection refused (1 failed in a row)" % (HOST, dead)) in line,
          "tcp down line: %r" % line)
    t0 = time.monotonic()
    while c.stats()["health"] - h0 < 2:
        check(time.monotonic() - t0 < 3, "no GET /health reached the default-checked server within 3 s")
        time.sleep(0.05)


@test("post_not_retried")
def t_post(ctx):
    """A server that resets every connection after reading the request: a POST that reached it fails
    (502) and is not sent to another server; a GET is retried on the other one."""
    a = ctx.b["a"]
    c = own_backend(ctx, "c")
    port = free_port()
    ctx.master(conf(lsn("web", port), section("pool p", ("server", "a %s:%d" % (HOST, a.port)),
                                              ("server", "c %s:%d" % (HOST, c.port)), ("retries", "2"),
                                              ("circuit_failures", "off"), ("circuit_error_rate", "off")),
                    workers=1), [port])
    set_mode(c, "reset")
    c0, a0 = app(c), app(a)
    st = []
    for i in range(6):
        with po.Conn(port) as cn:
            cn.send(it.raw_request("/upload", method="POST", body=b"hello"))
            st.append(cn.read_response("POST").status)
    dc, da = app(c) - c0, app(a) - a0
    eq(st.count(502) + st.count(200), 6, "POST statuses %s (want only 200 and 502)" % st)
    check(st.count(502) >= 1, "no POST reached the resetting server (statuses %s)" % st)
    eq((dc, da), (st.count(502), st.count(200)), "POSTs the servers got (c, a): each exactly once, none retried")
    c0, a0 = app(c), app(a)
    rs = sequential(port, 6, "/get")
    eq([r.status for r in rs], [200] * 6, "GET statuses (retried on a)")
    eq(app(a) - a0, 6, "GETs a served")
    check(app(c) - c0 >= 1, "no GET was tried on the resetting server first (retry not exercised)")


class CutServer(it.RawServer):
    """A raw HTTP server whose answers go wrong, chosen by the first element of the request path:
    /close/..: Content-Length 100000, 20 KB of body, then a FIN; /reset/..: the same, then a reset
    (SO_LINGER 0); /chunked/..: a chunked head and one 20 KB chunk, then a FIN before the last chunk;
    /drip/..: a whole small answer sent a byte every 0.5 s (the first at once); /stall/..: Content-Length
    100000, 20 KB, then silence until stopped; anything else: a whole 2-byte answer. Each request head it
    got is kept."""

    def __init__(self):
        self.heads = []
        super().__init__(16)

    def _serve(self, c):
        try:
            c.settimeout(10)
            data = it.read_head(c)
            if b"\r\n\r\n" not in data:
                return
            self.heads.append(data)
            mode = data.split(b" ", 2)[1].split(b"/")[1]
            cut = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 20480
            if mode == b"drip":
                for ch in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok":
                    c.sendall(bytes([ch]))
                    if self.stopped.wait(0.5):
                        return
            elif mode in (b"close", b"reset", b"stall"):
                c.sendall(cut)
                self.stopped.wait(0.3 if mode != b"stall" else 30)  # lb reads the 20 KB before the end
                if mode == b"reset":
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif mode == b"chunked":
                c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5000\r\n" + b"x" * 0x5000 + b"\r\n")
                self.stopped.wait(0.3)
            else:
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                self.stopped.wait(0.3)
        except OSError:
            pass
        finally:
            c.close()


def fetch_raw(port, path, rid, timeout=5.0, close=False):
    """One GET with X-Request-ID rid on a new connection (keep-alive unless close), read until lb closes
    it: (status, Content-Length, body bytes, 'eof'|'reset'|'timeout', seconds)."""
    t0 = time.monotonic()
    s = socket.create_connection((HOST, port), timeout=timeout)
    data, end = b"", "eof"
    try:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nX-Request-ID: %s\r\n%s\r\n"
                  % (path.encode(), rid.encode(), b"Connection: close\r\n" if close else b""))
        while True:
            try:
                d = s.recv(65536)
            except ConnectionResetError:
                end = "reset"
                break
            except socket.timeout:
                end = "timeout"
                break
            if not d:
                break
            data += d
    finally:
        s.close()
    el = time.monotonic() - t0
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1]) if lines[0].startswith(b"HTTP/1.") else 0
    cl = None
    for ln in lines[1:]:
        k, _, v = ln.partition(b":")
        if k.strip().lower() == b"content-length":
            cl = int(v)
    return status, cl, len(body), end, el


def cut_lb(ctx, srv, fmt, *pool_extra, lsn_extra=()):
    """lb (one worker, an admin API) in front of the CutServer alone; returns (master, port, admin port, log)."""
    port, aport = free_port(), free_port()
    log = os.path.join(ctx.dir, "access.%s" % fmt)
    m = ctx.master(conf(section("admin", ("bind", "%s:%d" % (HOST, aport))), lsn("web", port, *lsn_extra),
                        section("pool p", ("server", "cut %s:%d" % (HOST, srv.port)), ("health_check", "off"),
                                ("retries", "0"), *pool_extra), workers=1, access=log, fmt=fmt), [port, aport])
    return m, port, aport, log


def api_stats(port):
    return json.loads(it.admin_get(port, "/api/stats"))


def server_stats(aport):
    return api_stats(aport)["pools"][0]["servers"][0]


def log_lines(path, n, timeout=3.0):
    """The access log's first n lines, once there are n (lb writes its buffer once per loop turn)."""
    t0 = time.monotonic()
    while True:
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            lines = []
        if len(lines) >= n or time.monotonic() - t0 > timeout:
            eq(len(lines), n, "access log lines")
            return lines
        time.sleep(0.05)


@test("cut_answer_close_counts_against_server")
def t_cut_close(ctx):
    """A server that sends Content-Length 100000, 20 KB and closes, or a chunked answer closed before its
    last chunk: the client gets what came and then a closed connection; each counts as a failure of that
    server (errors, status class none, not 2xx; circuit_failures = 2 opens its circuit: 503 after), the JSON
    access log says term SD, and the error log names the server, the request id, the URI and the close."""
    srv = CutServer()
    ctx.on_cleanup(srv.stop)
    m, port, aport, log = cut_lb(ctx, srv, "json", ("circuit_failures", "2"), ("circuit_open", "30s"))
    st, cl, n, end, el = fetch_raw(port, "/close/a?x=1", "cut-close-1")
    eq((st, cl, n, end), (200, 100000, 20480, "eof"), "cut answer: (status, Content-Length, body bytes, end)")
    check(el < 3, "the client connection was closed %.1f s after the request (want at once)" % el)
    st, cl, n, end, el = fetch_raw(port, "/chunked/b", "cut-chunk-2")
    eq((st, cl, end), (200, None, "eof"), "chunked cut answer: (status, Content-Length, end)")
    check(n >= 0x5000 and not n > 0x5000 + 16, "chunked cut answer: %d bytes after the head" % n)
    eq(fetch_raw(port, "/ok", "after-open-3", close=True)[0], 503, "status once the circuit opened")
    eq(len(srv.heads), 2, "requests the server got (a cut answer is not retried; none while the circuit is open)")
    s = server_stats(aport)
    eq((s["requests"], s["errors"], s["status"]["2xx"], s["status"]["none"], s["status"]["5xx"], s["circuit"]),
       (2, 2, 0, 2, 0, "open"), "server stats (requests, errors, 2xx, none, 5xx, circuit)")
    lines = [json.loads(x) for x in log_lines(log, 3)]
    eq([(o["uri"], o["status"], o["term"], o["request_id"]) for o in lines],
       [("/close/a?x=1", 200, "SD", "cut-close-1"), ("/chunked/b", 200, "SD", "cut-chunk-2"),
        ("/ok", 503, "SC", "after-open-3")], "access log (uri, status, term, request_id)")
    err = m.stderr()
    for want in ("server p/cut: GET /close/a?x=1 (request id cut-close-1, client 127.0.0.1): server closed before "
                 "the whole answer, 20480 of 100000 body bytes",
                 "server p/cut: GET /chunked/b (request id cut-chunk-2, client 127.0.0.1): server closed before the "
                 "whole answer, 20480 body bytes and no last chunk", "server p/cut: circuit open"):
        check(want in err, "the error log lacks %r: %s" % (want, short(err, 900)))


@test("cut_answer_reset_counts_against_server")
def t_cut_reset(ctx):
    """The same answer ended by a reset: the error log says reset, not close; the combined access log line
    of the cut answer ends with term=SD while a whole answer's line stays plain combined."""
    srv = CutServer()
    ctx.on_cleanup(srv.stop)
    m, port, aport, log = cut_lb(ctx, srv, "combined")
    st, cl, n, end, el = fetch_raw(port, "/reset/a", "cut-reset-1")
    eq((st, cl, n), (200, 100000, 20480), "reset answer: (status, Content-Length, body bytes)")
    check(end in ("eof", "reset") and el < 3, "client connection after the reset: %s after %.1f s" % (end, el))
    eq(fetch_raw(port, "/ok", "whole-2", close=True)[:4], (200, 2, 2, "eof"), "a whole answer")
    s = server_stats(aport)
    eq((s["requests"], s["errors"], s["status"]["2xx"], s["status"]["none"], s["circuit"]), (2, 1, 1, 1, "closed"),
       "server stats (requests, errors, 2xx, none, circuit)")
    lines = log_lines(log, 2)
    for ln, what in zip(lines, ("the cut answer", "the whole answer")):
        check(it.COMBINED_RE.match(ln), "%s's line is not combined: %s" % (what, short(ln, 200)))
    check(lines[0].endswith('" term=SD') and '"GET /reset/a HTTP/1.1" 200 20480 ' in lines[0],
          "the cut answer's combined line: %s" % short(lines[0], 300))
    check("term=" not in lines[1], "the whole answer's combined line has a term: %s" % short(lines[1], 300))
    err = m.stderr()
    want = "server p/cut: GET /reset/a (request id cut-reset-1, client 127.0.0.1): connection reset by server"
    check(want in err and "20480 of 100000 body bytes" in err, "the error log lacks %r: %s" % (want, short(err, 600)))
    check("server closed before the whole answer" not in err, "a reset logged as a close: %s" % short(err, 600))


@test("response_head_timeout_and_stalled_body")
def t_head_drip(ctx):
    """response_timeout covers the whole response head: a head sent a byte every 0.5 s (each byte well
    within response_timeout = 1s of the last, so a timer re-armed by each byte never fires) is answered
    504 at about 1 s; it used to take as long as the head (19 s). A body that stops for the listener's
    idle_timeout is cut like a closed one (term sD). Both count against the server."""
    srv = CutServer()
    ctx.on_cleanup(srv.stop)
    m, port, aport, log = cut_lb(ctx, srv, "json", ("response_timeout", "1s"), lsn_extra=(("idle_timeout", "1s"),))
    st, cl, n, end, el = fetch_raw(port, "/drip/a", "drip-1", timeout=8, close=True)
    eq(st, 504, "status of a head dripped at 2 bytes/s with response_timeout 1s (after %.1f s)" % el)
    check(0.8 <= el <= 1.6, "504 after %.2f s (response_timeout 1s)" % el)
    st, cl, n, end, el = fetch_raw(port, "/stall/b", "stall-2", timeout=8)
    eq((st, cl, n, end), (200, 100000, 20480, "eof"), "stalled body: (status, Content-Length, body bytes, end)")
    check(0.8 <= el <= 2.0, "stalled body cut after %.2f s (idle_timeout 1s)" % el)
    s = server_stats(aport)
    eq((s["requests"], s["errors"], s["status"]["5xx"], s["status"]["none"]), (2, 2, 1, 1),
       "server stats (requests, errors, 5xx, none)")
    lines = [json.loads(x) for x in log_lines(log, 2)]
    eq([(o["status"], o["term"]) for o in lines], [(504, "sH"), (200, "sD")], "access log (status, term)")
    err = m.stderr()
    for want in ("response head from cut not complete within response_timeout",
                 "server p/cut: GET /stall/b (request id stall-2, client 127.0.0.1): server sent nothing more for "
                 "idle_timeout, 20480 of 100000 body bytes"):
        check(want in err, "the error log lacks %r: %s" % (want, short(err, 600)))
# ---------------------------------------------------------------------------------------- descriptors

def cpu_seconds(pids):
    """utime + stime of pids from /proc/PID/stat, in seconds (0 for a pid that is gone)."""
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                rest = f.read().rsplit(")", 1)[1].split()
            total += int(rest[11]) + int(rest[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def hold_clients(port, n, seconds):
    """n connections, each sending one keep-alive GET, held `seconds`; then {status: count} of what each
    got by then ("none": no answer yet, still in lb's listen backlog) and the sockets, still open."""
    socks = []
    for _ in range(n):
        socks.append(it.connect_nowait(port))
    time.sleep(0.2)
    for s in socks:
        try:
            s.send(b"GET /squeeze HTTP/1.1\r\nHost: x\r\n\r\n")
        except OSError:
            pass
    time.sleep(seconds)
    got = {}
    for s in socks:
        try:
            d = s.recv(4096)
        except BlockingIOError:
            d = None
        except OSError:
            d = b""
        k = "none" if d is None else d[9:12].decode() if d.startswith(b"HTTP/1.1 ") else "closed"
        got[k] = got.get(k, 0) + 1
    return got, socks


def close_all(socks):
    for s in socks:
        s.close()


@test("descriptor_spare_for_the_server", timeout=20)
def t_fd_spare(ctx):
    """A worker whose limit is cut to the descriptors it holds: a client waits in the backlog (accept
    fails) until another closes; the freed descriptor then goes to that client, and its server socket
    comes from the worker's reserve of spares, so it is answered 200 rather than 503."""
    a = ctx.b["a"]
    port = free_port()
    m = ctx.master(conf(lsn("web", port), section("pool p", ("server", "a %s:%d" % (HOST, a.port)),
                                                    ("health_check", "off"), ("keepalive", "0")), workers=1), [port])
    w = m.wait_workers(1)[0]
    first = it.RawConn(port)
    ctx.on_cleanup(first.close)
    first.send(it.raw_request("/first"))
    eq(first.read_response().status, 200, "first request")
    time.sleep(0.2)
    resource.prlimit(w, resource.RLIMIT_NOFILE, (len(os.listdir("/proc/%d/fd" % w)), 4096))
    second = it.RawConn(port, timeout=8)
    ctx.on_cleanup(second.close)
    second.send(it.raw_request("/second"))
    check(second.stray(0.5) == b"", "a client was answered although the worker had no descriptor to accept it")
    first.close()
    r = second.read_response()
    eq((r.status, r.backend), (200, "a"), "the client accepted with the descriptor another freed: (status, backend)")


@test("descriptors_exhausted", timeout=40)
def t_descriptors(ctx):
    """lb started with 256 descriptors (prlimit) and max_connections = 1000 in the file: one warning, each
    worker takes what its descriptors allow and the other clients wait in the backlog, CPU idle. Then the
    workers' limit is cut to 80 (below what they sized themselves for): accept pauses with a back-off
    (CPU stays idle, a few throttled 'accept:' lines with counts), a request that cannot get a server
    socket gets 503 (never 502), and nothing is blamed on a server: health up, circuit closed, errors 0;
    once the clients leave, requests succeed again."""
    a, b = ctx.b["a"], ctx.b["b"]
    port, aport = free_port(), free_port()
    text = conf(section("admin", ("bind", "%s:%d" % (HOST, aport))), lsn("web", port),
                section("pool p", ("server", "a %s:%d" % (HOST, a.port)), ("server", "b %s:%d" % (HOST, b.port)),
                        *HC_FAST, ("health_fall", "1"), ("circuit_failures", "3"), ("keepalive", "0")),
                workers=2, glob={"max_connections": 1000})
    m = ctx.master(text, [port], preexec=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)))
    workers = m.wait_workers(2)
    err = m.stderr()
    warn = [ln for ln in err.splitlines() if "max_connections = 1000 needs" in ln]
    eq(len(warn), 1, "warnings about max_connections against the descriptor limit: %s" % short(err, 400))
    check("each worker takes at most 110 connections" in warn[0], "the warning: %s" % short(warn[0], 300))

    cpu0 = cpu_seconds(workers)
    got, socks = hold_clients(port, 600, 1.5)
    cpu = cpu_seconds(workers) - cpu0
    close_all(socks)
    check(cpu < 0.5, "workers used %.2f s of CPU holding 600 clients with 256 descriptors" % cpu)
    check(set(got) <= {"200", "none"} and got.get("200", 0) >= 100,
          "600 clients, 2 workers of 110 connections: statuses %s (want up to 220 answered 200, the rest waiting)"
          % got)

    # a limit below the descriptors a process holds is not one a process can start with (poll() would
    # refuse the set): cut it once the clients' close has reached the workers (keepalive 0: no idle
    # server connections stay)
    deadline = time.monotonic() + 3
    while max(len(os.listdir("/proc/%d/fd" % w)) for w in workers) > 40:
        check(time.monotonic() < deadline, "the workers still hold %s descriptors 3 s after the clients left"
              % [len(os.listdir("/proc/%d/fd" % w)) for w in workers])
        time.sleep(0.05)
    for w in workers:
        resource.prlimit(w, resource.RLIMIT_NOFILE, (80, 80))
    mark = len(m.stderr())
    cpu0 = cpu_seconds(workers)
    got, socks = hold_clients(port, 600, 2.0)
    cpu = cpu_seconds(workers) - cpu0
    close_all(socks)
    log = m.stderr()[mark:]
    check(cpu < 0.5, "workers used %.2f s of CPU over 2 s out of descriptors (want idle)" % cpu)
    check(set(got) <= {"200", "503", "none"}, "statuses out of descriptors: %s (want only 200, 503, waiting)" % got)
    accepts = [ln for ln in log.splitlines() if "accept: Too many open files" in ln]
    check(1 <= len(accepts) <= 10, "%d 'accept:' lines in the error log over the squeeze (want 1 to 10): %s"
          % (len(accepts), short("\n".join(accepts[:3]), 400)))
    check(any("more like this" in ln for ln in accepts), "no 'accept:' line counts its repeats: %s"
          % short("\n".join(accepts[:3]), 400))
    check(len(log.splitlines()) <= 40, "%d error-log lines over the squeeze: %s" % (len(log.splitlines()), short(log, 400)))
    if got.get("503"):
        check("a local resource, not the server" in log, "503s without the local reason in the log: %s" % short(log, 400))

    deadline = time.monotonic() + 5
    while True:
        try:
            r = ask(port, "/after")
            if r.status == 200:
                break
            last = r.status
        except Exception as e:
            last = e
        check(time.monotonic() < deadline, "no 200 within 5 s after the clients left (last: %s)" % last)
        time.sleep(0.1)
    time.sleep(0.7)  # two health checks after the squeeze
    for srv in api_stats(aport)["pools"][0]["servers"]:
        eq((srv["health"], srv["circuit"], srv["errors"], srv["status"]["5xx"]), ("up", "closed", 0, 0),
           "server %s after the squeeze: (health, circuit, errors, 5xx)" % srv["name"])
    check("is down" not in m.stderr() and "circuit open" not in m.stderr(),
          "a server was blamed: %s" % short(m.stderr()[mark:], 400))


if __name__ == "__main__":
    po.run_suite(TESTS, "health", SUITE_BUDGET, __file__)
