#!/usr/bin/env python3
"""Integration tests for lb's admin API: auth, /healthz, /metrics (checked by promtool), /api/stats,
config dry-run and apply, server add / drain / weight / remove, split switches, reload, dashboard.

    python3 tests/admin.py [--only SUBSTR] [--keep]

Every call goes through curl, as an operator's script would. The runner, clients and backends come
from tests/policy.py and tests/health.py; lb is $LB_BIN (default ./lb). Client loops run during
changes and must see no failed request. One line per test: "PASS name" or "FAIL name: reason";
then "admin: N passed, N failed".
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import integration as it  # noqa: E402
import process as pr  # noqa: E402
import policy as po  # noqa: E402
import health as he  # noqa: E402
import tls as tl  # noqa: E402
from integration import HOST, Fail, check, eq, free_port, short  # noqa: E402
from process import Skip, conf  # noqa: E402
from policy import ask, section, lsn  # noqa: E402

SUITE_BUDGET = 210
TOKEN = "test-token-7f3a9c1e5b2d4068a1c3e5f7"
TESTS = []
test = it.registrar(TESTS, 40)


def curl(url, method="GET", data=None, token=None, src=None):
    """(status, body) of one call with curl; status 0 when no HTTP answer came."""
    cmd = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method, "--max-time", "10"]
    if token:
        cmd += ["-H", "Authorization: Bearer " + token]
    if src:
        cmd += ["--interface", src]
    if data is not None:
        cmd += ["--data-binary", "@-"]
    p = subprocess.run(cmd + [url], input=(data or "").encode(), capture_output=True, timeout=20)
    out = p.stdout.decode("utf-8", "replace")
    body, _, code = out.rpartition("\n")
    return int(code) if code.isdigit() else 0, body


def jcall(*a, **kw):
    st, body = curl(*a, **kw)
    try:
        return st, json.loads(body)
    except ValueError:
        raise Fail("%s %s: not JSON (status %d): %s" % (kw.get("method", "GET"), a[0], st, short(body)))


class Admin:
    """lb with an [admin] section, its config file in the test's directory (the API rewrites it)."""

    def __init__(self, ctx, sections, workers=2, token=True, admin_extra=()):
        self.port = free_port()
        self.url = "http://%s:%d" % (HOST, self.port)
        self.tokfile = os.path.join(ctx.dir, "token")
        with open(self.tokfile, "w") as f:
            f.write(TOKEN + "\n")
        adm = section("admin", ("bind", "%s:%d" % (HOST, self.port)),
                      ("token_file", self.tokfile if token else None), *admin_extra)
        self.text = conf(adm, *sections, workers=workers)
        self.m = ctx.master(self.text, [self.port])

    def get(self, path, **kw):
        return curl(self.url + path, **kw)

    def call(self, method, path, data=None, token=TOKEN):
        return curl(self.url + path, method=method, data=data, token=token)

    def stats(self):
        st, d = jcall(self.url + "/api/stats")
        eq(st, 200, "GET /api/stats")
        return d

    def server(self, pool, name):
        for p in self.stats()["pools"]:
            if p["name"] == pool:
                for s in p["servers"]:
                    if s["name"] == name:
                        return s
        return None


def conf_file(m):
    """The config file lb runs from (the admin API rewrites it)."""
    return m.conf


@test("auth_and_read_only")
def t_auth(ctx):
    a = ctx.b["a"]
    port = free_port()
    ad = Admin(ctx, [lsn("web", port), po.pl("p", [a])])
    eq(ad.get("/healthz"), (200, "ok\n"), "GET /healthz")
    for path in ("/metrics", "/api/stats", "/"):
        eq(ad.get(path)[0], 200, "GET %s without a token" % path)
    for token, what in ((None, "without a token"), ("wrong" + TOKEN, "with a wrong token"),
                        (TOKEN[:-1], "with the token cut by one character")):
        st, body = ad.call("POST", "/api/reload", token=token)
        eq(st, 401, "POST /api/reload %s" % what)
        check("Bearer" in body, "401 body does not say what is needed: %s" % short(body))
        st, _ = ad.call("POST", "/api/pools/p/servers/a/drain", token=token)
        eq(st, 401, "POST drain %s" % what)
    eq(ad.server("p", "a")["state"], "up", "server state after refused calls")
    st, body = ad.call("POST", "/api/reload")
    eq(st, 200, "POST /api/reload with the token")
    eq(json.loads(body)["generation"], 2, "generation after one reload")
    eq(ad.call("GET", "/api/reload")[0], 405, "GET /api/reload")
    eq(ad.get("/nope")[0], 404, "GET /nope")
    eq(ad.call("POST", "/api/pools/nope/servers/a/drain")[0], 404, "drain in an unknown pool")
    eq(ad.call("POST", "/api/pools/p/servers/nope/drain")[0], 404, "drain of an unknown server")
    eq(ad.call("PUT", "/api/pools/p/servers/a/weight", data="heavy")[0], 400, "PUT weight 'heavy'")
    check("missing or wrong bearer token" in ad.m.stderr(), "refused calls are not logged")


@test("no_token_file_and_allow")
def t_no_token(ctx):
    a = ctx.b["a"]
    port = free_port()
    ad = Admin(ctx, [lsn("web", port), po.pl("p", [a])], token=False,
               admin_extra=(("allow", "127.0.0.1/32"),))
    st, body = ad.call("POST", "/api/reload")
    eq(st, 401, "POST /api/reload without any token_file configured")
    check("token_file" in body, "the 401 does not say token_file is missing: %s" % short(body))
    eq(ad.get("/healthz")[0], 200, "GET /healthz from 127.0.0.1 (allowed)")
    st, _ = ad.get("/healthz", src="127.0.0.2")
    eq(st, 0, "GET /healthz from 127.0.0.2 (not in allow): no HTTP answer")


@test("check_token_file")
def t_check_token(ctx):
    """lb -t reads [admin] token_file as the start would: a missing one is an error, a present one fine."""
    path = os.path.join(ctx.dir, "t.ini")
    tok = os.path.join(ctx.dir, "nosuch.token")
    with open(path, "w") as f:
        f.write(conf(section("admin", ("bind", "%s:%d" % (HOST, free_port())), ("token_file", tok)),
                     lsn("web", free_port()), po.pl("p", [ctx.b["a"]])))
    p = subprocess.run([it.LB_BIN, "-t", "-c", path], capture_output=True, timeout=20)
    check(p.returncode == 1 and b"token_file" in p.stderr, "lb -t with a missing token_file: exit %d, %s"
          % (p.returncode, short(p.stderr)))
    with open(tok, "w") as f:
        f.write(TOKEN + "\n")
    p = subprocess.run([it.LB_BIN, "-t", "-c", path], capture_output=True, timeout=20)
    eq(p.returncode, 0, "lb -t once the token file exists (%s)" % short(p.stderr))


@test("healthz_draining")
def t_healthz(ctx):
    a = ctx.b["a"]
    port = free_port()
    ad = Admin(ctx, [lsn("web", port), po.pl("p", [a])], workers=1)
    eq(ad.get("/healthz")[0], 200, "GET /healthz while serving")
    import threading
    res = {}
    th = threading.Thread(target=lambda: res.setdefault("r", ask(port, "/slow?ms=1500", timeout=8)), daemon=True)
    th.start()
    # SIGTERM only once the request is in flight at the server, or lb rightly exits at once
    deadline = time.monotonic() + 5
    while sum_metric(ad.get("/metrics")[1], "lb_server_active_requests") < 1:
        check(time.monotonic() < deadline, "the slow request never reached the server")
        time.sleep(0.05)
    ad.m.signal(signal.SIGTERM)
    time.sleep(0.3)
    eq(ad.get("/healthz"), (503, "draining\n"), "GET /healthz during the graceful stop")
    th.join(8)
    eq(res.get("r") and res["r"].status, 200, "the request in flight during the stop")
    deadline = time.monotonic() + 5
    while ad.m.alive():
        check(time.monotonic() < deadline, "lb still running 5 s after its last request finished")
        time.sleep(0.05)
    ad.m.expected_exit = True


@test("stop_grace")
def t_stop_grace(ctx):
    """[global] stop_grace = 2s: after SIGTERM /healthz says draining at once while requests are still
    served; then the listeners close and lb exits."""
    a = ctx.b["a"]
    port = free_port()
    ad = Admin(ctx, [lsn("web", port), po.pl("p", [a])], workers=1)
    with open(conf_file(ad.m)) as f:
        text = f.read()
    eq(ad.get("/healthz")[0], 200, "GET /healthz before the stop")
    text = text.replace("[global]\n", "[global]\nstop_grace = 2s\n", 1)
    ad.m.reload(text)
    time.sleep(0.8)
    ad.m.signal(signal.SIGTERM)
    time.sleep(0.3)
    eq(ad.get("/healthz"), (503, "draining\n"), "GET /healthz during stop_grace")
    eq(ask(port, "/during-grace").status, 200, "a new request during stop_grace")
    deadline = time.monotonic() + 6
    while ad.m.alive():
        check(time.monotonic() < deadline, "lb still running 6 s after SIGTERM with stop_grace = 2s")
        time.sleep(0.1)
    ad.m.expected_exit = True
    check("stopping in 2000 ms (stop_grace)" in ad.m.stderr(), "the grace is not logged: %s" % short(ad.m.stderr(), 300))


def raise_nofile(n):
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard) if hard != resource.RLIM_INFINITY else n, hard))


def open_idle(port, n):
    """n TCP connections to the admin port that send nothing (some may be closed by lb meanwhile)."""
    import socket
    out = []
    for _ in range(n):
        try:
            out.append(socket.create_connection((HOST, port), timeout=2))
        except OSError:
            pass
    return out


def healthz_time(ad):
    t = time.monotonic()
    st, body = ad.get("/healthz")
    return st, body, time.monotonic() - t


@test("admin_flood_healthz", timeout=40)
def t_admin_flood(ctx):
    """300 idle admin connections, 40 that drip a request head and 260 that send a whole head then
    drip the body, a byte a second each, then 100 more idle ones: GET /healthz (keepalived's check)
    still answers 200 in well under 0.5 s each time, and the error log reports the evictions at most
    once a second, with counts."""
    import threading
    raise_nofile(4000)
    a = ctx.b["a"]
    ad = Admin(ctx, [lsn("web", free_port()), po.pl("p", [a])], workers=1)
    eq(ad.get("/healthz")[0], 200, "GET /healthz before the flood")
    socks = []
    stop = threading.Event()
    try:
        t0 = time.monotonic()
        socks += open_idle(ad.port, 300)
        heads = open_idle(ad.port, 40)
        bodies = open_idle(ad.port, 260)
        socks += heads + bodies

        def send(group, data):
            for s in group:
                try:
                    s.sendall(data)
                except OSError:
                    pass

        def dripper():
            send(heads, b"GET /healthz HTTP/1.1\r\nX-Slow: ")
            send(bodies, b"POST /api/config?dry_run=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
            while not stop.wait(1.0):
                send(heads + bodies, b"a")
        th = threading.Thread(target=dripper, daemon=True)
        th.start()
        time.sleep(0.5)
        for i in range(6):
            if i == 3:
                socks += open_idle(ad.port, 100)
            st, body, took = healthz_time(ad)
            eq((st, body), (200, "ok\n"), "GET /healthz %d under %d idle and dripping admin connections" % (i + 1, len(socks)))
            check(took < 0.5, "GET /healthz %d took %.2f s under the flood" % (i + 1, took))
            time.sleep(0.3)
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        for s in socks:
            s.close()
    time.sleep(1.2)  # the last counts are reported a second after the previous line
    lines = [l for l in ad.m.stderr().splitlines() if "admin connections (" in l]
    check(any(re.search(r"\b\d+ evicted", l) for l in lines),
          "no eviction reported in the error log: %s" % short(ad.m.stderr()[-400:], 400))
    check(len(lines) <= elapsed + 3, "%d admin connection lines in %.1f s: not throttled to one a second"
          % (len(lines), elapsed + 1.2))
    eq(ad.get("/healthz")[0], 200, "GET /healthz after the flood")


@test("admin_head_timeout", timeout=30)
def t_admin_head_timeout(ctx):
    """An admin connection that sends nothing, or drips its head, is closed after the head timeout
    (3 s), not held for the whole 10 s; the close is logged."""
    import socket
    a = ctx.b["a"]
    ad = Admin(ctx, [lsn("web", free_port()), po.pl("p", [a])], workers=1)
    idle = socket.create_connection((HOST, ad.port), timeout=8)
    drip = socket.create_connection((HOST, ad.port), timeout=8)
    t0 = time.monotonic()
    drip.sendall(b"GET /healthz HTTP/1.1\r\n")
    closed = {}
    while len(closed) < 2 and time.monotonic() - t0 < 7:
        for name, s in (("idle", idle), ("dripping", drip)):
            if name in closed:
                continue
            s.settimeout(0.25)
            try:
                if name == "dripping":
                    s.sendall(b"X")
                d = s.recv(100)
                if not d:
                    closed[name] = time.monotonic() - t0
            except socket.timeout:
                pass
            except OSError:
                closed[name] = time.monotonic() - t0
    idle.close()
    drip.close()
    for name in ("idle", "dripping"):
        check(name in closed, "the %s admin connection is still open %.1f s after it was made"
              % (name, time.monotonic() - t0))
        check(2.5 <= closed[name] <= 5, "the %s admin connection was closed after %.1f s (head timeout 3 s)"
              % (name, closed[name]))
    time.sleep(1.2)
    check("no request head within the head timeout" in ad.m.stderr(),
          "the head timeouts are not logged: %s" % short(ad.m.stderr()[-300:], 300))
    eq(ad.get("/healthz")[0], 200, "GET /healthz afterwards")


sum_metric = it.sum_metric


def series(text, name, **labels):
    """The value of the one sample of name with exactly these labels (None when there is none)."""
    for line in text.splitlines():
        m = re.match(r"^(\w+)(?:\{([^}]*)\})? (\S+)$", line)
        if m and m.group(1) == name and dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or "")) == labels:
            return float(m.group(3))
    return None


def promtool_ok(text):
    promtool = shutil.which("promtool")
    check(promtool, "promtool (Debian package prometheus) is not installed")
    p = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    check(p.returncode == 0, "promtool check metrics: %s" % short((p.stdout + p.stderr).decode(), 600))


def raw_answer(port, data, wait=0.0):
    """The status line lb answers to raw bytes (after `wait` s of silence when wanted)."""
    with po.Conn(port, timeout=4.0) as c:
        c.send(data)
        if wait:
            time.sleep(wait)
        return c.read_response("GET").status


def every_answer(ctx):
    """lb with listeners and routes that make each of its own answers once; the metrics text after them,
    and the Admin. Listener web (pool p) serves the routes; bare has no pool (404); plain redirects (308)."""
    a, b = ctx.b["a"], ctx.b["b"]
    web, bare, plain, shut, tun = free_port(), free_port(), free_port(), free_port(), free_port()
    ad = Admin(ctx, [lsn("web", web, ("max_header_size", "1k"), ("header_timeout", "400ms")),
                     lsn("bare", bare, pool=None), lsn("plain", plain, ("redirect_https", "on"), pool=None),
                     lsn("shut", shut, ("deny", "127.0.0.2/32")),
                     section("listener tun", ("bind", "%s:%d" % (HOST, tun)), ("mode", "tcp"), ("pool", "p")),
                     po.pl("p", [a]), po.pl("d", [b]), po.pl("s", [a]),
                     section("pool gone", ("server", "x %s:%d" % (HOST, free_port())), ("health_check", "tcp"),
                             ("health_interval", "100ms"), ("health_fall", "1")),
                     section("route gone", ("path", "/gone/*"), ("pool", "gone")),
                     section("route lim", ("path", "/lim/*"), ("pool", "p"), ("rate_limit", "1/minute burst=1")),
                     section("route deny", ("path", "/deny/*"), ("pool", "p"), ("acl", "deny 127.0.0.0/8")),
                     section("route down", ("path", "/down/*"), ("pool", "d")),
                     section("route maint", ("path", "/maint/*"), ("return", "503 down for maintenance")),
                     section("route small", ("path", "/small/*"), ("pool", "p"), ("max_body_size", "1k")),
                     section("route late", ("path", "/slow"), ("header", "X-Late: *"), ("pool", "p"),
                             ("response_timeout", "100ms")),
                     section("route slow", ("path", "/slow"), ("split", "s 100"))], workers=1)
    eq(ad.call("POST", "/api/pools/d/servers/b/disable")[0], 200, "disable the only server of pool d")
    eq(ask(web, "/m").status, 200, "listener's pool")
    eq([ask(web, "/lim/%d" % i).status for i in range(2)], [200, 429], "rate-limited route")
    eq(ask(web, "/deny/x").status, 403, "acl")
    eq(ask(web, "/down/x").status, 503, "pool with every server disabled")
    deadline = time.time() + 5
    while sum_metric(it.metrics_text(ad.port), "lb_server_up", pool="gone") != 0.0:
        check(time.time() < deadline, "pool gone's server (nothing listens) not down after 5 s")
        time.sleep(0.1)
    eq(ask(web, "/gone/x").status, 503, "pool with every server down by health checks")
    eq(ask(bare, "/nothing").status, 404, "listener without a pool, no route")
    eq(ask(plain, "/x").status, 308, "redirect_https")
    eq(raw_answer(web, b"NONSENSE\r\n\r\n"), 400, "a malformed request line")
    eq(raw_answer(web, b"GET /h HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 2048 + b"\r\n\r\n"), 431, "a 2 KB head")
    eq(raw_answer(web, b"GET /t HTTP/1.1\r\nHost: x\r\n", wait=0.6), 408, "a head not complete in 400 ms")
    eq(ask(web, "/slow?ms=150").status, 200, "a server answering after 150 ms")
    eq(ask(web, "/maint/x").status, 503, "a route's return = 503")
    eq(raw_answer(web, b"POST /small/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"), 413,
       "a body over the route's max_body_size")
    eq(ask(plain, "/" + "u" * 12000).status, 414, "a redirect_https target too long for the Location")
    eq(ask(web, "/slow?ms=600", headers=[("X-Late", "1")]).status, 504, "no answer within response_timeout")
    check(po.refused(shut, "127.0.0.2") is None, "listener deny = 127.0.0.2/32 did not refuse")
    eq(ask(tun, "/through-tcp").status, 200, "mode tcp listener")
    held = po.Conn(web, timeout=4.0)  # open while /metrics is read: lb_connections_active
    try:
        held.ask("/held", host="x")
        time.sleep(0.2)
        code, text = ad.get("/metrics")
    finally:
        held.close()
    eq(code, 200, "GET /metrics")
    return ad, text, web


@test("metrics_every_answer")
def t_metrics_every_answer(ctx):
    """Each of lb's own answers, and the servers', in lb_requests_total with listener, route, class
    and reason; connections by listener and protocol; promtool passes."""
    ad, text, web = every_answer(ctx)
    promtool_ok(text)
    eq(series(text, "lb_requests_total", listener="web", route="", code="2xx", reason="server"), 2.0,
       "lb_requests_total{listener=web,route='',code=2xx,reason=server} (/m and /held)")
    want = [("web", "lim", "2xx", "server"), ("web", "lim", "4xx", "rate_limited"),
            ("web", "deny", "4xx", "denied"), ("web", "down", "5xx", "no_server"), ("web", "gone", "5xx", "no_server"), ("bare", "", "4xx", "no_route"),
            ("plain", "", "3xx", "redirect"), ("web", "", "4xx", "bad_request"),
            ("web", "", "4xx", "header_too_large"), ("web", "", "4xx", "timeout"), ("web", "slow", "2xx", "server"),
            ("web", "maint", "5xx", "return"), ("web", "small", "4xx", "too_large"), ("plain", "", "4xx", "uri_too_long"),
            ("web", "late", "5xx", "server_timeout")]
    for lsn_, route, cls, why in want:
        eq(series(text, "lb_requests_total", listener=lsn_, route=route, code=cls, reason=why), 1.0,
           "lb_requests_total{listener=%s,route=%r,code=%s,reason=%s}" % (lsn_, route, cls, why))
    eq(sum_metric(text, "lb_requests_total", code="5xx", reason="server"), 0.0, "5xx from servers")
    check(series(text, "lb_connections_accepted_total", listener="web", protocol="http") >= 9,
          "lb_connections_accepted_total{listener=web}: %s" % series(text, "lb_connections_accepted_total",
                                                                    listener="web", protocol="http"))
    eq(series(text, "lb_connections_active", listener="web", protocol="http"), 1.0, "one held connection open")
    eq(series(text, "lb_connections_refused_total", listener="shut", protocol="http", reason="acl"), 1.0,
       "refused by the listener's deny")
    eq(series(text, "lb_connections_accepted_total", listener="shut", protocol="http"), 1.0,
       "the refused connection was accepted first")
    eq(series(text, "lb_connections_accepted_total", listener="tun", protocol="tcp"), 1.0, "tcp listener accepted")
    eq(sum_metric(text, "lb_requests_total", listener="tun"), 0.0, "a tunnel is no HTTP answer")
    eq(series(text, "lb_route_errors_total", route="down"), 1.0, "lb_route_errors_total{route=down}")
    eq(series(text, "lb_route_request_duration_seconds_count", route="lim"), 2.0, "route lim's duration count")
    # a server that answers after 150 ms: in the pool's first-byte and the route's duration histograms
    # +- 20 ms; the ASan build on a busy CI machine adds its own delay: 50 ms over there
    slack = 0.05 if "asan" in os.path.basename(it.LB_BIN) else 0.02
    for name, lab, hi in (("lb_upstream_first_byte_duration_seconds", {"pool": "s"}, 0.15 + slack),
                          ("lb_route_request_duration_seconds", {"route": "slow"}, 0.18 + slack)):
        eq(series(text, name + "_bucket", le="0.1", **lab), 0.0, "%s%s le=0.1" % (name, lab))
        eq(series(text, name + "_bucket", le="0.25", **lab), 1.0, "%s%s le=0.25" % (name, lab))
        sm = series(text, name + "_sum", **lab)
        check(0.13 <= sm <= hi, "%s_sum%s = %s, not in 0.13 .. %s s" % (name, lab, sm, hi))
    check(series(text, "lb_upstream_connect_duration_seconds_count", pool="s") == 1.0, "one connect in pool s")
    for name, lab in (("lb_route_request_duration_seconds", 'route="slow"'), ("lb_upstream_connect_duration_seconds",
                                                                              'pool="s"'),
                      ("lb_upstream_first_byte_duration_seconds", 'pool="s"')):
        les = re.findall(r'^%s_bucket\{%s,le="([^"]+)"\}' % (name, lab), text, re.M)
        eq((les[:1], les[-2:]), (["0.0001"], ["60", "+Inf"]), "%s{%s} buckets from 100 us to 60 s: %s" % (name, lab, les))
    deadline = time.time() + 3  # the held connection closed: active drops to 0
    while series(it.metrics_text(ad.port), "lb_connections_active", listener="web", protocol="http") != 0.0:
        check(time.time() < deadline, "lb_connections_active{listener=web} still not 0 after the close")
        time.sleep(0.1)


@test("metrics_grafana_names")
def t_metrics_grafana_names(ctx):
    """Every lb_* metric the Grafana dashboard queries has samples in /metrics after traffic."""
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "..", "deploy", "grafana", "lb-dashboard.json")) as f:
        d = json.load(f)
    exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", []) if t.get("expr")]
    names = sorted(set(n for e in exprs for n in re.findall(r"\blb_[a-z0-9_]+", e)))
    check(len(names) > 10, "only %d lb_* names in the dashboard" % len(names))
    _, text, _ = every_answer(ctx)
    have = set(re.findall(r"^(lb_[a-z0-9_]+)[{ ]", text, re.M))
    missing = [n for n in names if n not in have]
    eq(missing, [], "dashboard metrics without a sample in /metrics")
    for n in ("lb_requests_total", "lb_connections_active", "lb_upstream_first_byte_duration_seconds_bucket",
              "lb_route_request_duration_seconds_bucket"):
        check(n in names, "the dashboard does not query %s" % n)


@test("metrics_reload_failure")
def t_metrics_reload_failure(ctx):
    """A reload of a file with errors: lb_reload_failures_total and the failure's time."""
    a = ctx.b["a"]
    port = free_port()
    ad = Admin(ctx, [lsn("web", port), po.pl("p", [a])], workers=1)
    t0 = time.time()
    text = it.metrics_text(ad.port)
    eq(series(text, "lb_reload_failures_total"), 0.0, "lb_reload_failures_total at start")
    with open(conf_file(ad.m), "a") as f:
        f.write("\n[pool broken]\nnot_a_key = 1\n")
    st, _ = ad.call("POST", "/api/reload")
    check(st != 200, "POST /api/reload of a file with errors answered %d" % st)
    text = it.metrics_text(ad.port)
    eq(series(text, "lb_reload_failures_total"), 1.0, "lb_reload_failures_total after a failed reload")
    fail_t = series(text, "lb_last_reload_failure_timestamp_seconds")
    check(fail_t is not None and t0 - 1 <= fail_t <= time.time() + 1, "last failure time %s" % fail_t)
    ok_t = series(text, "lb_last_reload_success_timestamp_seconds")
    check(ok_t is not None and ok_t <= fail_t, "last success time %s (start) after the failure %s" % (ok_t, fail_t))
    eq(sum_metric(text, "lb_reloads_total"), 0.0, "lb_reloads_total (no success)")
    eq(ask(port, "/still").status, 200, "still serving")


@test("metrics_survive_reload")
def t_metrics_survive_reload(ctx):
    """Answer and connection counters live in shared memory by name: a reload keeps them."""
    a = ctx.b["a"]
    port = free_port()
    ad = Admin(ctx, [lsn("web", port), po.pl("p", [a]), section("route r", ("path", "/r/*"), ("pool", "p"))],
               workers=1)
    for i in range(3):
        eq(ask(port, "/r/%d" % i).status, 200, "request %d" % i)
    eq(ask(port, "/r/x", headers=[("X-Big", "y" * 20000)]).status, 431, "a head over max_header_size")
    st, _ = ad.call("POST", "/api/reload")
    eq(st, 200, "POST /api/reload")
    for i in range(2):
        eq(ask(port, "/r/%d" % i).status, 200, "request %d after the reload" % i)
    text = it.metrics_text(ad.port)
    eq(series(text, "lb_requests_total", listener="web", route="r", code="2xx", reason="server"), 5.0,
       "route r's 2xx across the reload")
    eq(series(text, "lb_requests_total", listener="web", route="", code="4xx", reason="header_too_large"), 1.0,
       "the 431 before the reload")
    eq(series(text, "lb_connections_accepted_total", listener="web", protocol="http"), 6.0,
       "connections accepted across the reload")
    eq(series(text, "lb_route_request_duration_seconds_count", route="r"), 5.0, "route r's durations")
    eq(series(text, "lb_reloads_total"), 1.0, "lb_reloads_total")


@test("metrics_promtool")
def t_metrics(ctx):
    promtool = shutil.which("promtool")
    a, b = ctx.b["a"], ctx.b["b"]
    port = free_port()
    ad = Admin(ctx, [lsn("web", port), po.pl("p", [a, b]),
                     section("route lim", ("path", "/lim/*"), ("pool", "p"), ("rate_limit", "1/minute burst=2")),
                     section("route deny", ("path", "/deny/*"), ("pool", "p"), ("acl", "deny 127.0.0.0/8"))])
    for i in range(20):
        eq(ask(port, "/m/%d" % i).status, 200, "request %d" % i)
    for i in range(3):
        ask(port, "/status?code=503")
    st = [ask(port, "/lim/%d" % i).status for i in range(5)]
    eq(st, [200, 200, 429, 429, 429], "rate-limited route statuses")
    eq(ask(port, "/deny/x").status, 403, "acl route")
    time.sleep(0.2)
    code, text = ad.get("/metrics")
    eq(code, 200, "GET /metrics")
    check(promtool, "promtool (Debian package prometheus) is not installed")
    p = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    check(p.returncode == 0, "promtool check metrics: %s" % short((p.stdout + p.stderr).decode(), 600))
    eq(sum_metric(text, "lb_server_requests_total", code="2xx"), 22.0, "lb_server_requests_total 2xx (20 + 2 admitted)")
    eq(sum_metric(text, "lb_server_requests_total", code="5xx"), 3.0, "lb_server_requests_total 5xx")
    eq(sum_metric(text, "lb_server_request_duration_seconds_count"), 25.0, "duration histogram count")
    eq(sum_metric(text, "lb_route_rate_limited_total", route="lim"), 3.0, "lb_route_rate_limited_total{route=lim}")
    eq(sum_metric(text, "lb_route_denied_total", route="deny"), 1.0, "lb_route_denied_total{route=deny}")
    eq(sum_metric(text, "lb_server_up"), 2.0, "lb_server_up (both)")
    eq(sum_metric(text, "lb_workers"), 2.0, "lb_workers")
    d = ad.stats()
    reqs = sum(s["requests"] for p_ in d["pools"] for s in p_["servers"])
    eq(reqs, 25, "requests in /api/stats")


@test("config_dry_run_and_apply", timeout=60)
def t_config(ctx):
    a, b = ctx.b["a"], ctx.b["b"]
    port = free_port()
    ad = Admin(ctx, [lsn("web", port), po.pl("p", [a]), po.pl("q", [b])])
    path = conf_file(ad.m)
    with open(path) as f:
        old = f.read()
    broken = old + "\n[route r]\npath = /x/*\npool = nosuch\n"
    st, d = jcall(ad.url + "/api/config?dry_run=1", method="POST", data=broken, token=TOKEN)
    eq(st, 400, "dry run of a config with an unknown pool")
    line = broken.splitlines().index("pool = nosuch") + 1
    check(any(e["line"] == line and e["key"] == "pool" for e in d["errors"]),
          "dry run errors %s do not name line %d, key pool" % (d["errors"], line))
    with open(path) as f:
        eq(f.read(), old, "the file after a dry run")
    st, d = jcall(ad.url + "/api/config?dry_run=1", method="POST", data=old, token=TOKEN)
    eq((st, d), (200, {"valid": True}), "dry run of a valid config")
    eq(ad.call("POST", "/api/config", data=broken)[0], 400, "applying a broken config")
    with open(path) as f:
        eq(f.read(), old, "the file after a refused apply")
    loop = he.Loop(port)
    loop.start()
    ctx.on_cleanup(loop.stop)
    time.sleep(0.3)
    new = old + "\n[route r]\npath = /loop/*\npool = q\n"
    st, d = jcall(ad.url + "/api/config", method="POST", data=new, token=TOKEN)
    eq((st, d.get("reloaded")), (200, True), "applying a config with a new route")
    time.sleep(0.5)
    loop.stop()
    check(not loop.bad, "%d failed requests while the config was applied: %s" % (len(loop.bad), loop.bad[:3]))
    eq(ask(port, "/loop/after").backend, "b", "route from the applied config")
    with open(path) as f:
        eq(f.read(), new, "the file after apply")
    with open(path + ".bak") as f:
        eq(f.read(), old, "the .bak after apply")


@test("config_limits_dry_run_as_lb_t", timeout=60)
def t_config_limits(ctx):
    """POST /api/config?dry_run=1 runs lb -t's check: a pool over 1,024 servers gets the one error lb -t
    prints (line, key, message). A file that lb -t passes but that finds no slot in the shared memory this
    lb made at start (300 routes where it started with 256 slots) is refused by the dry run and by the apply,
    before the file is written (the apply used to write it, then fail to reload)."""
    a = ctx.b["a"]
    port = free_port()
    ad = Admin(ctx, [lsn("web", port), po.pl("p", [a])], workers=1)
    path = conf_file(ad.m)
    with open(path) as f:
        old = f.read()
    over = old + "\n[pool big]\nhealth_check = off\n" + "".join(
        "server = s%d %s:%d\n" % (k, HOST, 1 + k % 1000) for k in range(1100))
    check_path = os.path.join(ctx.dir, "check.ini")
    with open(check_path, "w") as f:
        f.write(over)
    p = subprocess.run([it.LB_BIN, "-t", "-c", check_path], capture_output=True, timeout=20)
    lines = p.stderr.decode().splitlines()
    check(p.returncode == 1 and len(lines) == 1, "lb -t on a pool of 1,100 servers: exit %d, %s"
          % (p.returncode, short(p.stderr, 300)))
    st, d = jcall(ad.url + "/api/config?dry_run=1", method="POST", data=over, token=TOKEN)
    eq((st, d.get("total")), (400, 1), "dry run of a pool of 1,100 servers: %s" % short(json.dumps(d), 300))
    e = d["errors"][0]
    eq("%s:%d: %s" % (check_path, e["line"], e["message"]), lines[0], "the dry run's error against lb -t's")
    eq(e["key"], "server", "the dry run error's key")
    routes = "".join("\n[route r%d]\npath = /r%d/*\npool = p\n" % (i, i) for i in range(300))
    many = old + routes
    with open(check_path, "w") as f:
        f.write(many)
    p = subprocess.run([it.LB_BIN, "-t", "-c", check_path], capture_output=True, timeout=20)
    eq(p.returncode, 0, "lb -t on 300 routes (a start sizes for them): %s" % short(p.stderr, 200))
    line = many.splitlines().index("[route r256]") + 1
    for url, what in (("/api/config?dry_run=1", "dry run"), ("/api/config", "apply")):
        st, d = jcall(ad.url + url, method="POST", data=many, token=TOKEN)
        check(st == 400 and any(e["line"] == line and e["key"] == "route" and "restart lb" in e["message"]
                                for e in d.get("errors", [])),
              "%s of 300 routes on an lb started with 256 route slots: %d %s (want 400 at line %d)"
              % (what, st, short(json.dumps(d), 300), line))
    with open(path) as f:
        eq(f.read(), old, "the file after the refused apply")
    eq(ask(port, "/still").status, 200, "a request after the refused apply")


@test("server_add_drain_remove_under_load", timeout=60)
def t_servers(ctx):
    a = ctx.b["a"]
    c = he.own_backend(ctx, "c")
    port = free_port()
    ad = Admin(ctx, [lsn("web", port), section("pool p", ("server", "a %s:%d" % (HOST, a.port)),
                                               ("health_interval", "200ms"), ("health_rise", "2"))])
    path = conf_file(ad.m)
    loop = he.Loop(port)
    loop.start()
    ctx.on_cleanup(loop.stop)
    time.sleep(0.3)
    eq(ad.call("POST", "/api/pools/p/servers", data="c %s:%d weight=2" % (HOST, c.port))[0], 201, "add server c")
    eq(ad.call("POST", "/api/pools/p/servers", data="c %s:%d" % (HOST, c.port))[0], 409, "add c again")
    eq(ad.call("POST", "/api/pools/p/servers", data="bad name!")[0], 400, "add a malformed server line")
    eq(ad.call("POST", "/api/pools/nope/servers", data="d %s:%d" % (HOST, c.port))[0], 404, "add to an unknown pool")
    with open(path) as f:
        check("server = c %s:%d weight=2" % (HOST, c.port) in f.read(), "server c not written to the file")
    deadline = time.monotonic() + 4
    while he.app(c) == 0:
        check(time.monotonic() < deadline, "the added server got no request within 4 s (state %s)"
              % ad.server("p", "c"))
        time.sleep(0.05)
    st, d = jcall(ad.url + "/api/pools/p/servers/c/drain", method="POST", token=TOKEN)
    eq((st, d.get("state")), (200, "drain"), "drain c")
    time.sleep(0.3)
    n0 = he.app(c)
    time.sleep(0.6)
    eq(he.app(c) - n0, 0, "requests c got while drained")
    eq(ad.call("POST", "/api/pools/p/servers/c/enable")[0], 200, "enable c")
    deadline = time.monotonic() + 3
    while he.app(c) == n0:
        check(time.monotonic() < deadline, "c got no request within 3 s of enable")
        time.sleep(0.05)
    eq(ad.call("DELETE", "/api/pools/p/servers/c")[0], 202, "remove c")
    deadline = time.monotonic() + 5
    while ad.server("p", "c") is not None:
        check(time.monotonic() < deadline, "c still in /api/stats 5 s after DELETE")
        time.sleep(0.1)
    eq(ad.call("DELETE", "/api/pools/p/servers/a")[0], 409, "remove the last server of a pool")
    time.sleep(0.3)
    loop.stop()
    check(loop.ok > 50, "only %d requests in the loop" % loop.ok)
    check(not loop.bad, "%d failed requests during add/drain/remove: %s" % (len(loop.bad), loop.bad[:3]))
    with open(path) as f:
        check("server = c " not in f.read(), "server c still in the file after removal")


def blue_green(ctx, *more):
    """An lb with pools blue (a), green (b) and both (a, b), listener "web" to both, route bg (/bg/*)
    split blue 100, green 0, and the sections in more: (port, Admin)."""
    a, b = ctx.b["a"], ctx.b["b"]
    port = free_port()
    ad = Admin(ctx, [lsn("web", port, pool="both"), po.pl("blue", [a]), po.pl("green", [b]),
                     section("pool both", ("server", "a %s:%d" % (HOST, a.port)), ("server", "b %s:%d" % (HOST, b.port))),
                     section("route bg", ("path", "/bg/*"), ("split", "blue 100, green 0"))] + list(more))
    return port, ad


@test("weight_and_split_switch", timeout=40)
def t_split(ctx):
    port, ad = blue_green(ctx, section("route w", ("path", "/w/*"), ("pool", "both")))
    path = conf_file(ad.m)
    eq({ask(port, "/bg/%d" % i).backend for i in range(10)}, {"a"}, "split blue 100, green 0")
    st, _ = ad.call("PUT", "/api/routes/bg/split", data="blue 0, green 100")
    eq(st, 200, "PUT split blue 0, green 100")
    time.sleep(1.0)
    eq({ask(port, "/bg/x%d" % i).backend for i in range(20)}, {"b"}, "backends 1 s after the switch")
    with open(path) as f:
        check("split = blue 0, green 100" in f.read(), "the switch is not persisted in the file")
    eq(ad.call("PUT", "/api/routes/bg/split", data="red 1")[0], 400, "split naming a pool outside the route")
    eq(ad.call("PUT", "/api/routes/bg/split", data="blue 0, green 0")[0], 400, "split with every weight 0")
    eq(ad.call("PUT", "/api/routes/w/split", data="both 1")[0], 409, "split on a route without one")
    eq(ad.call("PUT", "/api/routes/none/split", data="blue 1")[0], 404, "split on an unknown route")
    st, _ = ad.call("PUT", "/api/pools/both/servers/a/weight", data="3")
    eq(st, 200, "PUT weight 3 for a")
    time.sleep(0.5)
    got = [ask(port, "/w/%d" % i).backend for i in range(40)]
    # smooth weighted round-robin gives a 3 of every 4 picks in each worker, so each of the two
    # workers is within one pick of 3/4 of its share whatever its phase
    check(28 <= got.count("a") <= 32, "requests to a of 40 with weights a 3, b 1: %d (want 30 +- 2)"
          % got.count("a"))
    eq(ad.server("both", "a")["weight"], 3, "weight in /api/stats")


@test("sticky_moves_when_disabled")
def t_sticky_disable(ctx):
    """100 requests with a sticky cookie all reach its server; once that server is disabled through the
    API they move and the cookie is replaced; a drained server keeps its pinned clients."""
    a, b = ctx.b["a"], ctx.b["b"]
    port = free_port()
    ad = Admin(ctx, [lsn("web", port), section("pool p", ("server", "a %s:%d" % (HOST, a.port)),
                                               ("server", "b %s:%d" % (HOST, b.port)), ("sticky", "cookie SRV"))])
    hdr = [("Cookie", "SRV=a")]
    eq({ask(port, "/s/%d" % i, headers=hdr).backend for i in range(100)}, {"a"}, "100 requests with SRV=a")
    eq(ad.call("POST", "/api/pools/p/servers/a/drain")[0], 200, "drain a")
    time.sleep(0.2)
    eq({ask(port, "/d/%d" % i, headers=hdr).backend for i in range(10)}, {"a"}, "SRV=a while a drains (pinned)")
    eq({ask(port, "/n/%d" % i).backend for i in range(10)}, {"b"}, "new clients while a drains")
    eq(ad.call("POST", "/api/pools/p/servers/a/disable")[0], 200, "disable a")
    time.sleep(0.2)
    for i in range(10):
        r = ask(port, "/m/%d" % i, headers=hdr)
        eq(r.backend, "b", "SRV=a with a disabled: server")
        eq(r.hdr("set-cookie"), "SRV=b; Path=/; HttpOnly", "SRV=a with a disabled: new cookie")


@test("dashboard")
def t_dashboard(ctx):
    a = ctx.b["a"]
    port = free_port()
    ad = Admin(ctx, [lsn("web", port), po.pl("p", [a])])
    st, html = ad.get("/")
    eq(st, 200, "GET /")
    for want in ("<table", "drain", "enable", "disable", "weight", 'name=token'):
        check(want in html, "dashboard has no %r" % want)
    check("http://" not in html and "https://" not in html, "dashboard loads something from elsewhere")
    chromium = shutil.which("chromium")
    if not chromium:
        raise Skip("no chromium: the page was checked without a browser")
    shot = os.path.join(ctx.dir, "dashboard.png")
    p = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=3000",
                        "--dump-dom", ad.url + "/"], capture_output=True, timeout=60)
    dom = p.stdout.decode("utf-8", "replace")
    check("pool p" in dom and ">a<" in dom, "the rendered page does not show pool p and server a: %s" % short(dom, 300))
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=3000",
                    "--screenshot=" + shot, "--window-size=1200,800", ad.url + "/"], capture_output=True, timeout=60)
    art = os.path.join(it.ROOT, "tests", "artifacts")
    os.makedirs(art, exist_ok=True)
    if os.path.exists(shot):
        shutil.copy(shot, os.path.join(art, "dashboard.png"))

def ctl(ad, *args):
    """(exit status, stdout, stderr) of `lb ctl -c CONFIG ARGS`."""
    p = subprocess.run([it.LB_BIN, "ctl", "-c", conf_file(ad.m)] + list(args), capture_output=True, timeout=20)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


@test("lb_ctl_commands", timeout=60)
def t_ctl(ctx):
    port, ad = blue_green(ctx)
    rc, out, err = ctl(ad, "status", "--json")
    eq(rc, 0, "lb ctl status --json: exit status (%s)" % short(err))
    check('"name":"both"' in out, "lb ctl status --json does not show pool both: %s" % short(out))
    eq(ctl(ad, "server", "drain", "both", "a")[0], 0, "lb ctl server drain both a")
    eq({ask(port, "/x%d" % i).backend for i in range(6)}, {"b"}, "backends with a drained")
    eq(ctl(ad, "server", "enable", "both", "a")[0], 0, "lb ctl server enable both a")
    eq(ctl(ad, "server", "weight", "both", "a", "3")[0], 0, "lb ctl server weight both a 3")
    eq(ad.server("both", "a")["weight"], 3, "weight after lb ctl")
    eq(ctl(ad, "split", "bg", "blue 0, green 100")[0], 0, "lb ctl split")
    time.sleep(0.3)
    eq({ask(port, "/bg/%d" % i).backend for i in range(6)}, {"b"}, "backends after lb ctl split")
    rc, _, err = ctl(ad, "server", "drain", "both", "nosuch")
    check(rc != 0 and "no such server" in err, "lb ctl on an unknown server: exit %d, %s" % (rc, short(err)))
    bad = os.path.join(ctx.dir, "bad.ini")
    with open(bad, "w") as f:
        f.write("[listener x]\nbind = nowhere\n")
    rc, _, err = ctl(ad, "config", "apply", "--file", bad, "--validate")
    check(rc != 0 and '"line":2' in err, "lb ctl config apply --validate of a bad file: exit %d, %s" % (rc, short(err)))
    with open(conf_file(ad.m)) as f:
        good = f.read()
    rc, out, err = ctl(ad, "config", "apply", "--file", conf_file(ad.m))
    eq(rc, 0, "lb ctl config apply of the current file (%s)" % short(err))
    check('"reloaded":true' in out, "apply output: %s" % short(out))
    eq(ctl(ad, "reload")[0], 0, "lb ctl reload")
    eq(ctl(ad, "bogus")[0], 2, "lb ctl bogus: usage")
    with open(conf_file(ad.m)) as f:
        eq(f.read(), good, "the file after applying itself")


def table(out, head):
    """The rows (lists of cells) of the table of `lb ctl status` whose header line starts with head."""
    lines = out.splitlines()
    for i, ln in enumerate(lines):
        if ln.startswith(head):
            rows = []
            for r in lines[i + 1:]:
                if not r.strip():
                    break
                rows.append(r.split())
            return ln.split(), rows
    raise Fail("no table headed %r in: %s" % (head, short(out, 600)))


AGES = ("age_s", "changed_s_ago", "expires_in_s")  # /api/stats fields that move between two reads


def timeless(v):
    """/api/stats without its ages (each read is a moment apart: a check's age_s moves by 0.1 s);
    each age must still be a number."""
    if isinstance(v, list):
        return [timeless(x) for x in v]
    if isinstance(v, dict):
        for k in AGES:
            check(k not in v or isinstance(v[k], (int, float)), "%s is not a number: %r" % (k, v.get(k)))
        return {k: timeless(x) for k, x in v.items() if k not in AGES}
    return v


@test("lb_ctl_status_tables_and_top", timeout=40)
def t_ctl_status(ctx):
    """`lb ctl status` prints aligned tables (pools, servers with state and down reason, routes,
    listeners) that agree with /api/stats; `--json` prints /api/stats itself; `lb ctl top --count 2`
    refreshes twice and exits; without -c, lb ctl reads ./config.ini when /etc/lb/config.ini is absent
    and says both names when neither is there."""
    a, b = ctx.b["a"], ctx.b["b"]
    port, dead, sport = free_port(), free_port(), free_port()
    pem, serial = tl.CA(os.path.join(ctx.dir, "ca")).leaf("soon", "soon.example", names=("soon.example",), days=10)
    ad = Admin(ctx, [lsn("web", port, pool="both"), lsn("secure", sport, ("tls", "on"), ("cert", pem), pool="both"),
                     section("pool both", ("server", "a %s:%d" % (HOST, a.port)), ("server", "b %s:%d" % (HOST, b.port))),
                     section("pool gone", ("server", "d %s:%d" % (HOST, dead)), ("health_interval", "200ms"),
                             ("health_fall", "1")),
                     section("route g", ("path", "/g/*"), ("pool", "gone"))], workers=1)
    for i in range(4):
        ask(port, "/t%d" % i)
    t0 = time.monotonic()
    while ad.server("gone", "d")["state"] != "down":
        check(time.monotonic() - t0 < 5, "server gone/d not down within 5 s")
        time.sleep(0.1)
    stats = ad.stats()
    rc, out, err = ctl(ad, "status", "--json")
    eq(rc, 0, "lb ctl status --json: exit status (%s)" % short(err))
    eq(timeless(json.loads(out)), timeless(stats), "lb ctl status --json against GET /api/stats (ages apart)")
    rc, out, err = ctl(ad, "status")
    eq(rc, 0, "lb ctl status: exit status (%s)" % short(err))
    check(not out.lstrip().startswith("{"), "lb ctl status printed JSON: %s" % short(out))
    head, rows = table(out, "POOL  SERVER")
    eq(head, ["POOL", "SERVER", "ADDRESS", "STATE", "WEIGHT", "ACTIVE", "REQUESTS", "ERRORS", "5XX", "CIRCUIT", "REASON"],
       "servers table header")
    col = out.splitlines()[[l.startswith("POOL  SERVER") for l in out.splitlines()].index(True)].index("STATE")
    want = []
    for p in stats["pools"]:
        for s in p["servers"]:
            want.append([p["name"], s["name"], s["address"], s["state"], str(s["weight"]), str(s["active"]),
                         str(s["requests"]), str(s["errors"]), str(s["status"]["5xx"]), s["circuit"]])
    eq([r[:10] for r in rows], want, "servers table rows against /api/stats")
    reasons = {r[1]: " ".join(r[10:]) for r in rows}
    eq((reasons["a"], reasons["d"]), ("-", " ".join(ad.server("gone", "d")["reason"].split())),
       "reasons of a (up) and d (down, as /api/stats says)")
    check(reasons["d"].startswith("health check: GET /health"), "reason of d: %r" % reasons["d"])
    lines = out.splitlines()
    i = [l.startswith("POOL  SERVER") for l in lines].index(True)
    check(all(len(l) > col and l[col - 2:col] == "  " and l[col] != " " for l in lines[i + 1:i + 1 + len(rows)]),
          "the STATE column is not aligned: %s" % short("\n".join(lines[i:i + 4]), 400))
    _, prow = table(out, "POOL  ALGORITHM")
    eq([r[:4] for r in prow], [["both", "round_robin", "2", "2"], ["gone", "round_robin", "1", "0"]], "pools table")
    _, rrow = table(out, "ROUTE")
    eq([r[:2] for r in rrow], [["g", "gone"]], "routes table")
    _, lrow = table(out, "LISTENER")
    lst = stats["listeners"]
    eq(lrow, [["web", "%s:%d" % (HOST, port), "http", str(lst[0]["active"]), str(lst[0]["accepted"]), "both"],
              ["secure", "%s:%d" % (HOST, sport), "https", str(lst[1]["active"]), str(lst[1]["accepted"]), "both"]],
       "listeners table against /api/stats")
    head, crow = table(out, "CERTIFICATE")
    eq(head, ["CERTIFICATE", "LISTENER", "NAMES", "SERIAL", "EXPIRES_IN_DAYS"], "certificates table header")
    cert = stats["tls"]["certificates"]
    eq(len(cert), 1, "certificates in /api/stats")
    eq(crow, [[cert[0]["file"], "secure", "soon.example", cert[0]["serial"], str(cert[0]["expires_in_s"] // 86400)]],
       "certificates table against /api/stats")
    check(cert[0]["serial"].lstrip("0").upper() == serial.lstrip("0") and 9 * 86400 < cert[0]["expires_in_s"] <= 10 * 86400,
          "the certificate of 10 days, serial %s: %s" % (serial, cert[0]))
    rc, out, err = ctl(ad, "top", "--count", "2", "--interval", "200ms")
    eq(rc, 0, "lb ctl top --count 2: exit status (%s)" % short(err))
    frames = out.count("(q quits)")
    eq(frames, 2, "frames of lb ctl top --count 2")
    check(out.count("gone/d  ") == 2 and "health check: GET /health" in out, "lb ctl top rows: %s" % short(out, 400))
    here = os.path.join(ctx.dir, "cwd")
    os.makedirs(here, exist_ok=True)
    run = lambda: subprocess.run([it.LB_BIN, "ctl", "status", "--json"], cwd=here, capture_output=True, timeout=20)
    p = run()
    check(p.returncode == 1 and b"/etc/lb/config.ini" in p.stderr and b"./config.ini" in p.stderr,
          "lb ctl without -c and without a config: %d %s" % (p.returncode, short(p.stderr)))
    if not os.path.exists("/etc/lb/config.ini"):
        shutil.copy(conf_file(ad.m), os.path.join(here, "config.ini"))
        p = run()
        eq((p.returncode, json.loads(p.stdout or b"{}").get("pools", [{}])[0].get("name")), (0, "both"),
           "lb ctl status --json with ./config.ini (%s)" % short(p.stderr))


@test("lb_ctl_several_nodes", timeout=30)
def t_ctl_nodes(ctx):
    """`lb ctl --admin HOST:PORT` repeated: status and server drain/enable go to each node in turn,
    each answer under "== NODE: STATUS"; a node that does not answer is reported, the others still
    get the command, exit status 1. The token from --token-file (no config file needed) or -c's."""
    a, b = ctx.b["a"], ctx.b["b"]
    pool = section("pool both", ("server", "a %s:%d" % (HOST, a.port)), ("server", "b %s:%d" % (HOST, b.port)))
    ad = Admin(ctx, [lsn("web", free_port(), pool="both"), pool])
    port2 = free_port()
    m2 = ctx.master(conf(section("admin", ("bind", "%s:%d" % (HOST, port2)), ("token_file", ad.tokfile)),
                         lsn("web", free_port(), pool="both"), pool), [port2], tag="lb2")
    n1, n2, dead = ad.url, "%s:%d" % (HOST, port2), "%s:%d" % (HOST, free_port())
    url2 = "http://" + n2

    def run(*args):
        p = subprocess.run([it.LB_BIN, "ctl"] + list(args), capture_output=True, timeout=20)
        return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")

    def state(url, name):
        st, d = jcall(url + "/api/stats")
        return [s for p in d["pools"] if p["name"] == "both" for s in p["servers"] if s["name"] == name][0]["state"]

    rc, out, err = run("--token-file", ad.tokfile, "--admin", n1, "--admin", n2, "status")
    eq(rc, 0, "status on two nodes: exit status (%s)" % short(err))
    parts = re.split(r"^== (\S+): (\d+)$", out, flags=re.M)
    eq([(parts[i], parts[i + 1]) for i in range(1, len(parts), 3)], [(n1, "200"), (n2, "200")], "the answers' heads")
    check(all('"name":"both"' in parts[i + 2] for i in range(1, len(parts), 3)), "a node's status lacks pool both")
    rc, out, err = run("--token-file", ad.tokfile, "--admin", n1, "--admin", n2, "server", "drain", "both", "a")
    eq(rc, 0, "drain on two nodes: exit status (%s)" % short(err + out))
    eq([state(u, "a") for u in (n1, url2)], ["drain", "drain"], "a's state on both nodes after drain")
    rc, out, err = run("-c", conf_file(ad.m), "--admin", n1, "--admin", dead, "--admin", n2,
                       "server", "enable", "both", "a")
    eq(rc, 1, "enable with a dead node among them: exit status")
    check(re.search(r"^== %s: no answer$" % re.escape(dead), out, re.M) and "cannot connect" in err,
          "the dead node is not reported: %s / %s" % (short(out), short(err)))
    eq(len(re.findall(r"^== \S+: 2\d\d$", out, re.M)), 2, "2xx answers (token from -c's [admin])")
    eq([state(u, "a") for u in (n1, url2)], ["up", "up"], "a's state on both nodes after enable")
    rc, out, err = run("--token-file", ad.tokfile, "--admin", n1, "rollout", "both", "--new-servers", "x 1.2.3.4:1")
    eq(rc, 2, "rollout with --admin: usage")
    check(m2.alive(), "lb node 2 exited")


@test("lb_ctl_rollout_and_rollback", timeout=90)
def t_rollout(ctx):
    olds = [he.own_backend(ctx, "o%d" % i) for i in range(3)]
    news = [he.own_backend(ctx, "n%d" % i) for i in range(3)]
    port, dead = free_port(), free_port()
    ad = Admin(ctx, [lsn("web", port), section("pool p", *[("server", "%s %s:%d" % (bk.name, HOST, bk.port)) for bk in olds],
                                               ("health_interval", "200ms"), ("health_rise", "2"),
                                               ("health_timeout", "150ms"))])
    loop = he.Loop(port)
    loop.start()
    ctx.on_cleanup(loop.stop)
    time.sleep(0.3)
    # a new server that never passes its checks: rolled back, the old ones stay
    rc, out, err = ctl(ad, "rollout", "p", "--new-servers", "x %s:%d" % (HOST, dead), "--timeout", "2s",
                       "--interval", "100ms")
    check(rc != 0 and "rolled back" in out + err, "rollout to a dead server: exit %d, %s %s" % (rc, short(out), short(err)))
    d = [s["name"] for p_ in ad.stats()["pools"] for s in p_["servers"]]
    eq(sorted(d), ["o0", "o1", "o2"], "servers after the rollback")
    spec = ", ".join("%s %s:%d" % (bk.name, HOST, bk.port) for bk in news)
    rc, out, err = ctl(ad, "rollout", "p", "--new-servers", spec, "--batch-size", "1", "--interval", "200ms",
                       "--timeout", "5s")
    eq(rc, 0, "rollout to n0..n2: exit status (%s %s)" % (short(out), short(err)))
    d = [s["name"] for p_ in ad.stats()["pools"] for s in p_["servers"]]
    eq(sorted(d), ["n0", "n1", "n2"], "servers after the rollout")
    n0 = sum(he.app(bk) for bk in news)
    time.sleep(0.5)
    loop.stop()
    check(sum(he.app(bk) for bk in news) > n0, "the new servers serve the loop")
    check(loop.ok > 50, "only %d requests in the loop" % loop.ok)
    check(not loop.bad, "%d failed requests during the rollout and rollback: %s" % (len(loop.bad), loop.bad[:3]))


if __name__ == "__main__":
    po.run_suite(TESTS, "admin", SUITE_BUDGET, __file__)
