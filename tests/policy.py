#!/usr/bin/env python3
"""Integration tests for lb's traffic policies: listener allow/deny (L4 ACL), route acl (403),
return and redirect, request/response header transforms, rate limits (429 + Retry-After, exact
across workers, by ip / global / header, exemptions) and their configuration errors.

    python3 tests/policy.py [--only SUBSTR] [--keep]

The lb binary is $LB_BIN (default ./lb, relative to the repository root). Helpers come from
tests/integration.py (ports, backends, raw HTTP client) and tests/process.py (config builder, lb master
with its workers tracked by PID and start time, cleanup). Clients connect from other loopback source
addresses (127.0.0.2, 127.0.0.3, ...: Linux routes all of 127.0.0.0/8 to lo) to be different clients.
Backends a and b (tests/backend.py) are shared between tests. One line per test: "PASS name" or
"FAIL name: reason"; then "policy: N passed, N failed"; exit status 1 when any test failed.
"""
import json
import os
import re
import select
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import integration as it  # noqa: E402
import process as pr  # noqa: E402
from integration import HOST, Fail, check, eq, free_port, short, count_by  # noqa: E402
from process import Skip, conf  # noqa: E402

ROOT = it.ROOT
LB_BIN = it.LB_BIN
SUITE_BUDGET = 205  # seconds for all tests; with cleanup the run stays well under 4 minutes
INT_RE = re.compile(r"^[0-9]{1,10}$")


# ---------------------------------------------------------------------------------------- config

def section(header, *pairs):
    """'[header]' then one `key = value` line per pair (keys may repeat; None values are left out)."""
    return "\n".join(["[%s]" % header] + ["%s = %s" % (k, v) for k, v in pairs if v is not None]) + "\n"


def bind_addr(host, port):
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


def lsn(name, port, *pairs, pool="p", host=HOST):
    return section("listener " + name, ("bind", bind_addr(host, port)), ("mode", "http"), ("pool", pool), *pairs)


def pl(name, backends):
    return section("pool " + name, *[("server", "%s %s:%d" % (b.name, HOST, b.port)) for b in backends])


def rt(name, *pairs):
    return section("route " + name, *pairs)


# ---------------------------------------------------------------------------------------- clients

class Conn(it.RawConn):
    """A client connection from a chosen source address (keep-alive capable: RawConn's reader)."""

    def __init__(self, port, src=HOST, dst=HOST, timeout=4.0):
        fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM)
        try:
            s.settimeout(timeout)
            s.bind((src, 0))
            s.connect((dst, port))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except BaseException:
            s.close()
            raise
        self.sock = s
        self.buf = bytearray()

    def ask(self, path, host="x", headers=(), method="GET"):
        self.send(it.raw_request(path, host=host, method=method, headers=list(headers)))
        return self.read_response(method)


def ask(port, path, src=HOST, host="x", headers=(), method="GET", dst=HOST, timeout=4.0):
    """One request on a new connection from src; returns it.Resp."""
    try:
        with Conn(port, src=src, dst=dst, timeout=timeout) as c:
            return c.ask(path, host=host, headers=headers, method=method)
    except it.Closed as e:
        raise Fail("%s %s from %s: %s" % (method, path, src, e))
    except socket.timeout:
        raise Fail("%s %s from %s: no answer within %.0f s" % (method, path, src, timeout))
    except OSError as e:
        raise Fail("%s %s from %s: %s: %s" % (method, path, src, type(e).__name__, e))


def refused(port, src, dst=HOST, send=True, wait=2.0):
    """None when lb closes a connection from src without any HTTP byte within `wait` s (EOF, reset, or
    refused at connect); else a description of what happened instead."""
    try:
        c = Conn(port, src=src, dst=dst, timeout=wait)
    except (ConnectionRefusedError, ConnectionResetError):
        return None
    except OSError as e:
        return "connect from %s: %s: %s" % (src, type(e).__name__, e)
    try:
        if send:
            try:
                c.send(it.raw_request("/refused-%s" % src.replace(":", "_"), host="refused.example"))
            except OSError:
                return None  # already reset
        deadline = time.monotonic() + wait
        got = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                if got:
                    return "got %s instead of a closed connection" % short(got)
                return "connection from %s still open %.0f s after connecting, no answer" % (src, wait)
            r, _, _ = select.select([c.sock], [], [], left)
            if not r:
                continue
            try:
                d = c.sock.recv(4096)
            except (ConnectionResetError, ConnectionAbortedError):
                d = b""
            except OSError as e:
                return "recv: %s: %s" % (type(e).__name__, e)
            if not d:
                return None if not got else "got %s before the close" % short(got)
            got += d
    finally:
        c.close()


def seq(port, prefix, n, src=HOST, headers=()):
    """n requests, each on a new connection, one after the other; (responses, elapsed seconds)."""
    out = []
    t0 = time.monotonic()
    for i in range(n):
        out.append(ask(port, "%s/%d" % (prefix, i), src=src, headers=headers))
    return out, time.monotonic() - t0


def statuses(rs):
    return [r.status for r in rs]


def max_ok(burst, per_second, elapsed):
    """Upper bound of admitted requests by a full bucket over `elapsed` s (50 ms slack for clocks)."""
    return burst + int((elapsed + 0.05) * per_second)


def check_200(r, what, backend="a"):
    eq((r.status, r.backend), (200, backend), what + " (status, X-Backend)")


def check_429(r, what, lo=1, hi=None):
    """429 answered by lb itself (no X-Backend) with `Retry-After: S`, S an integer in [lo, hi]."""
    eq(r.status, 429, what + " status")
    check(r.backend is None, "%s: 429 carries X-Backend %r (came from a backend?)" % (what, r.backend))
    ra = r.hdr("retry-after")
    check(ra is not None, "%s: 429 without Retry-After (headers %s)" % (what, r.headers))
    check(INT_RE.match(ra), "%s: Retry-After %r is not an integer of seconds" % (what, ra))
    v = int(ra)
    check(v >= lo and (hi is None or v <= hi), "%s: Retry-After %d, want %d..%s" % (what, v, lo, hi or "inf"))
    return v


def check_limited(rs, elapsed, burst, per_second, what, backend="a"):
    """Sequential requests into a full bucket: the first `burst` pass, at most max_ok pass in all,
    every other answer is a proper 429. Returns the number admitted."""
    st = statuses(rs)
    bad = [s for s in st if s not in (200, 429)]
    check(not bad, "%s: statuses %s (want only 200 and 429)" % (what, st))
    first = min(burst, len(rs))
    eq(st[:first], [200] * first, "%s: the first %d statuses (bucket starts full; all: %s)" % (what, first, st))
    ok = st.count(200)
    hi = min(len(rs), max_ok(burst, per_second, elapsed))
    check(burst <= ok <= hi or ok == len(rs) <= hi,
          "%s: %d of %d requests admitted in %.3f s, want %s (statuses %s)"
          % (what, ok, len(rs), elapsed, burst if hi == burst else "%d..%d" % (burst, hi), st))
    for i, r in enumerate(rs):
        if r.status == 200:
            check_200(r, "%s request %d" % (what, i + 1), backend)
        else:
            check_429(r, "%s request %d" % (what, i + 1))
    return ok


def reached(b, fn):
    """Requests backend b received while fn() ran (its /stats request excluded)."""
    before = b.stats()["requests"]
    v = fn()
    return b.stats()["requests"] - before - 1, v


def have_ipv6():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        return False
    try:
        s.bind(("::1", 0))
        s.listen(1)
        c = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            c.settimeout(2)
            c.connect(s.getsockname()[:2])
        finally:
            c.close()
        return True
    except OSError:
        return False
    finally:
        s.close()


# ---------------------------------------------------------------------------------------- tests

TESTS = []


test = it.registrar(TESTS)


def must_refuse(port, src, what, dst=HOST, send=True):
    why = refused(port, src, dst=dst, send=send)
    check(why is None, "%s: a connection from %s should be closed without an answer: %s" % (what, src, why))


@test("listener_deny")
def t_listener_deny(ctx):
    a = ctx.b["a"]
    p1, p2 = free_port(), free_port()
    ctx.master(conf(lsn("d", p1, ("deny", "127.0.0.2/32")),
                    lsn("d2", p2, ("deny", "10.0.0.0/8, 127.0.0.4/31"), ("deny", "127.0.0.7")),
                    pl("p", [a]), workers=1), [p1, p2])
    n, _ = reached(a, lambda: must_refuse(p1, "127.0.0.2", "deny = 127.0.0.2/32"))
    eq(n, 0, "requests that reached the backend from a denied client")
    # closed at accept, before any byte is read: a client that sends nothing is closed too
    must_refuse(p1, "127.0.0.2", "deny = 127.0.0.2/32, client sending nothing", send=False)
    check_200(ask(p1, "/ok", src="127.0.0.1"), "deny = 127.0.0.2/32: from 127.0.0.1")
    check_200(ask(p1, "/ok", src="127.0.0.3"), "deny = 127.0.0.2/32: from 127.0.0.3")
    # a list and a repeated key; a bare address is /32; /31 covers .4 and .5
    for src in ("127.0.0.4", "127.0.0.5", "127.0.0.7"):
        must_refuse(p2, src, "deny = 10.0.0.0/8, 127.0.0.4/31 + deny = 127.0.0.7")
    for src in ("127.0.0.1", "127.0.0.6", "127.0.0.8"):
        check_200(ask(p2, "/ok", src=src), "deny = 10.0.0.0/8, 127.0.0.4/31 + deny = 127.0.0.7: from %s" % src)
    # lb keeps serving the allowed after refusing
    must_refuse(p1, "127.0.0.2", "deny = 127.0.0.2/32 (again)")
    check_200(ask(p1, "/after", src="127.0.0.1"), "deny = 127.0.0.2/32: from 127.0.0.1 after refusals")


@test("listener_allow")
def t_listener_allow(ctx):
    a = ctx.b["a"]
    p1, p2 = free_port(), free_port()
    ctx.master(conf(lsn("al", p1, ("allow", "127.0.0.3/32")),
                    lsn("mix", p2, ("allow", "127.0.0.0/24"), ("deny", "127.0.0.5/32"), ("allow", "127.0.0.5")),
                    pl("p", [a]), workers=1), [p1, p2])
    check_200(ask(p1, "/ok", src="127.0.0.3"), "allow = 127.0.0.3/32: from 127.0.0.3")
    n, _ = reached(a, lambda: must_refuse(p1, "127.0.0.1", "allow = 127.0.0.3/32"))
    eq(n, 0, "requests that reached the backend from a client not allowed")
    must_refuse(p1, "127.0.0.4", "allow = 127.0.0.3/32")
    must_refuse(p1, "127.0.0.1", "allow = 127.0.0.3/32, client sending nothing", send=False)
    # deny wins over allow, whatever the order
    must_refuse(p2, "127.0.0.5", "allow = 127.0.0.0/24 + deny = 127.0.0.5/32 + allow = 127.0.0.5 (deny wins)")
    for src in ("127.0.0.1", "127.0.0.4", "127.0.0.200"):
        check_200(ask(p2, "/ok", src=src), "allow = 127.0.0.0/24, deny .5: from %s" % src)
    must_refuse(p2, "127.0.1.1", "allow = 127.0.0.0/24 (127.0.1.1 outside)")
    check_200(ask(p1, "/after", src="127.0.0.3"), "allow = 127.0.0.3/32: from 127.0.0.3 after refusals")


@test("listener_ipv6")
def t_listener_ipv6(ctx):
    if not have_ipv6():
        raise Skip("::1 unavailable on this machine")
    a = ctx.b["a"]
    p1, p2 = free_port(), free_port()
    ctx.master(conf(lsn("v6deny", p1, ("deny", "::1/128"), host="::1"),
                    lsn("v6allow", p2, ("allow", "::1"), ("deny", "127.0.0.0/8"), host="::1"),
                    pl("p", [a]), workers=1), [p1, p2])
    must_refuse(p1, "::1", "[::1] listener with deny = ::1/128", dst="::1")
    must_refuse(p1, "::1", "[::1] listener with deny = ::1/128, client sending nothing", dst="::1", send=False)
    check_200(ask(p2, "/ok", src="::1", dst="::1"), "[::1] listener with allow = ::1, deny = 127.0.0.0/8: from ::1")


@test("route_acl")
def t_route_acl(ctx):
    a, b = ctx.b["a"], ctx.b["b"]
    port = free_port()
    ctx.master(conf(lsn("web", port),
                    pl("p", [a]), pl("q", [b]),
                    rt("admin", ("path", "/admin/*"), ("pool", "q"), ("acl", "allow 127.0.0.2/32")),
                    rt("ord", ("path", "/ord/*"), ("pool", "q"), ("acl", "deny 127.0.0.5/32"),
                       ("acl", "allow 127.0.0.0/8")),
                    rt("denyonly", ("path", "/d/*"), ("pool", "q"), ("acl", "deny 127.0.0.7"),
                       ("acl", "deny 10.0.0.0/8")),
                    workers=1), [port])

    def denied(path, src, what):
        n, r = reached(b, lambda: ask(port, path, src=src))
        eq(r.status, 403, "%s: GET %s from %s status" % (what, path, src))
        check(r.backend is None, "%s: 403 carries X-Backend %r" % (what, r.backend))
        check(0 < len(r.body) <= 512, "%s: 403 body should be short and non-empty: %s" % (what, short(r.body)))
        eq(n, 0, "%s: requests that reached the backend for a denied GET %s" % (what, path))

    check_200(ask(port, "/admin/x", src="127.0.0.2"), "acl = allow 127.0.0.2/32: /admin/x from 127.0.0.2", "b")
    denied("/admin/x", "127.0.0.1", "acl = allow 127.0.0.2/32 (no match, an allow rule exists)")
    denied("/admin/", "127.0.0.3", "acl = allow 127.0.0.2/32 (no match, an allow rule exists)")
    check_200(ask(port, "/other", src="127.0.0.1"), "no acl on /other: from 127.0.0.1")
    check_200(ask(port, "/adminx", src="127.0.0.1"), "no acl on /adminx: from 127.0.0.1")
    # ordered, first match wins
    denied("/ord/1", "127.0.0.5", "acl = deny 127.0.0.5/32, acl = allow 127.0.0.0/8")
    check_200(ask(port, "/ord/1", src="127.0.0.6"), "acl = deny .5, allow 127.0.0.0/8: from 127.0.0.6", "b")
    check_200(ask(port, "/ord/1", src="127.0.0.1"), "acl = deny .5, allow 127.0.0.0/8: from 127.0.0.1", "b")
    # only deny rules: no match is allowed
    denied("/d/1", "127.0.0.7", "acl = deny 127.0.0.7")
    check_200(ask(port, "/d/1", src="127.0.0.1"), "only deny rules, no match: from 127.0.0.1", "b")
    # the same keep-alive connection goes on after a 403
    with Conn(port, src="127.0.0.1") as c:
        eq(c.ask("/admin/y").status, 403, "keep-alive: /admin/y from 127.0.0.1 status")
        check_200(c.ask("/other/2"), "keep-alive: /other/2 after a 403 on the same connection")


@test("return_and_redirect")
def t_return_redirect(ctx):
    a = ctx.b["a"]
    port = free_port()
    ctx.master(conf(lsn("web", port), pl("p", [a]),
                    rt("maint", ("path", "/maint/*"), ("return", "503 down for maintenance")),
                    rt("empty", ("path", "/empty"), ("return", "204")),
                    rt("tls", ("path", "/r/*"), ("redirect", "308 https://$host$uri")),
                    rt("moved", ("path", "/old"), ("redirect", "301 http://other.example/fixed")),
                    rt("tmp", ("path", "/t"), ("redirect", "302 http://x.example$uri?from=$host")),
                    workers=1), [port])
    with Conn(port) as c:
        n, r = reached(a, lambda: c.ask("/maint/page", host="example.com"))
        eq(r.status, 503, "return = 503 down for maintenance: status")
        check(b"down for maintenance" in r.body, "return = 503 ...: body %s lacks 'down for maintenance'"
              % short(r.body))
        check(r.backend is None, "return: response carries X-Backend %r" % r.backend)
        eq(n, 0, "return: requests that reached the backend")

        r = c.ask("/r/a?b=1", host="example.com:8080")
        eq(r.status, 308, "redirect = 308 https://$host$uri: status")
        eq(r.hdr("location"), "https://example.com/r/a?b=1", "redirect = 308 https://$host$uri: Location "
                                                             "(GET /r/a?b=1, Host example.com:8080)")
        r = c.ask("/r/deep/x.html", host="www.example.org")
        eq((r.status, r.hdr("location")), (308, "https://www.example.org/r/deep/x.html"),
           "redirect = 308 https://$host$uri: (status, Location) for GET /r/deep/x.html, Host www.example.org")

        r = c.ask("/old", host="example.com")
        eq((r.status, r.hdr("location")), (301, "http://other.example/fixed"),
           "redirect = 301 http://other.example/fixed: (status, Location)")
        r = c.ask("/t", host="h.example:81")
        eq((r.status, r.hdr("location")), (302, "http://x.example/t?from=h.example"),
           "redirect = 302 http://x.example$uri?from=$host: (status, Location)")

        n, r = reached(a, lambda: c.ask("/empty"))
        eq((r.status, r.body), (204, b""), "return = 204: (status, body)")
        eq(n, 0, "return = 204: requests that reached the backend")
        check_200(c.ask("/normal"), "keep-alive: a proxied request after return/redirect answers")
        extra = c.stray(0.2)
        check(not extra, "bytes after the last response: %s" % short(extra))
    r = ask(port, "/maint/", method="HEAD")
    eq((r.status, r.body), (503, b""), "HEAD on a return route: (status, body)")


@test("header_transforms")
def t_header_transforms(ctx):
    a = ctx.b["a"]
    port = free_port()
    ctx.master(conf(lsn("web", port), pl("p", [a]),
                    rt("tx", ("host", "tx.example"), ("pool", "p"),
                       ("request_header_add", "X-Env: prod"), ("request_header_add", "X-Two: 2"),
                       ("request_header_remove", "X-Secret"), ("request_header_remove", "x-other"),
                       ("response_header_add", "Strict-Transport-Security: max-age=60"),
                       ("response_header_add", "X-Policy: on"),
                       ("response_header_remove", "X-Backend")),
                    workers=1), [port])
    sent = [("X-Secret", "s3cret"), ("X-OTHER", "o"), ("X-Keep", "k")]
    r = ask(port, "/headers", host="tx.example", headers=sent)
    eq(r.status, 200, "GET /headers on the transform route: status")
    try:
        h = json.loads(r.body)
    except ValueError:
        raise Fail("backend /headers answer is not JSON: %s" % short(r.body))
    eq(h.get("x-env"), "prod", "request_header_add = X-Env: prod (as the backend saw it)")
    eq(h.get("x-two"), "2", "request_header_add = X-Two: 2 (as the backend saw it)")
    check("x-secret" not in h, "request_header_remove = X-Secret: the backend saw x-secret: %r" % h.get("x-secret"))
    check("x-other" not in h, "request_header_remove = x-other: the backend saw X-OTHER: %r" % h.get("x-other"))
    eq(h.get("x-keep"), "k", "a header not named by the route (as the backend saw it)")
    eq(r.hdr("strict-transport-security"), "max-age=60", "response_header_add = Strict-Transport-Security")
    eq(r.hdr("x-policy"), "on", "response_header_add = X-Policy: on")
    check(r.backend is None, "response_header_remove = X-Backend: the client saw X-Backend %r" % r.backend)
    # another route (the listener's pool): untouched
    r = ask(port, "/headers", host="plain.example", headers=sent)
    eq(r.status, 200, "GET /headers without the transform route: status")
    h = json.loads(r.body)
    eq((h.get("x-env"), h.get("x-secret"), h.get("x-other")), (None, "s3cret", "o"),
       "request headers without the transform route (x-env, x-secret, x-other)")
    eq((r.backend, r.hdr("strict-transport-security")), ("a", None),
       "response headers without the transform route (X-Backend, Strict-Transport-Security)")


@test("rate_limit_ip", timeout=40)
def t_rate_limit_ip(ctx):
    a = ctx.b["a"]
    port = free_port()
    log = os.path.join(ctx.dir, "access.log")
    m = ctx.master(conf(lsn("web", port), pl("p", [a]),
                        rt("rl", ("path", "/rl/*"), ("pool", "p"), ("rate_limit", "5/second burst=5")),
                        rt("rb", ("path", "/rb/*"), ("pool", "p"), ("rate_limit", "5/second burst=2")),
                        rt("rd", ("path", "/rd/*"), ("pool", "p"), ("rate_limit", "4/second")),
                        rt("rc", ("path", "/rc/*"), ("pool", "p"), ("rate_limit", "1/minute burst=10 by=ip")),
                        workers=2, glob={"rate_limit_entries": 1024}, access=log), [port])
    m.wait_workers(2)
    rs, t = seq(port, "/rl/one", 20, src="127.0.0.1")
    check_limited(rs, t, 5, 5, "5/second burst=5, 20 requests from 127.0.0.1")
    for i, r in enumerate(rs):
        if r.status == 429:
            eq(check_429(r, "5/second request %d" % (i + 1)), 1, "5/second: Retry-After of request %d" % (i + 1))
    rs, t = seq(port, "/rl/two", 8, src="127.0.0.2")
    check_limited(rs, t, 5, 5, "5/second burst=5, 8 requests from 127.0.0.2 (its own bucket)")
    time.sleep(1.1)
    rs, t = seq(port, "/rl/three", 5, src="127.0.0.1")
    eq(statuses(rs), [200] * 5, "5/second: 5 requests from 127.0.0.1 after waiting 1.1 s")

    rs, t = seq(port, "/rb/x", 6, src="127.0.0.1")
    check_limited(rs, t, 2, 5, "5/second burst=2, 6 requests")
    rs, t = seq(port, "/rd/x", 8, src="127.0.0.1")
    check_limited(rs, t, 4, 4, "4/second (burst defaults to 4), 8 requests")

    # exact under concurrency across both workers: 40 requests from 8 threads, 10 tokens, no refill to speak of
    res, errs = [], []
    lock = threading.Lock()

    def worker(k):
        for i in range(5):
            try:
                r = ask(port, "/rc/%d/%d" % (k, i), src="127.0.0.3")
                with lock:
                    res.append(r)
            except Exception as e:
                with lock:
                    errs.append("%s: %s" % (type(e).__name__, e))
                return

    ths = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(8)]
    for th in ths:
        th.start()
    for th in ths:
        th.join(20)
    check(not errs, "concurrent requests failed: %s" % errs[:2])
    eq(len(res), 40, "concurrent requests answered")
    st = count_by(statuses(res))
    eq(st, {200: 10, 429: 30}, "1/minute burst=10: statuses of 40 concurrent requests from 127.0.0.3 (2 workers)")
    for r in res:
        if r.status == 429:
            check_429(r, "1/minute burst=10 concurrent", 1, 60)
    # both workers must have answered for "exact across workers" to mean anything
    pr.wait_for(lambda: pr.count_lines(log) >= 87, 3)
    objs, _ = pr.read_json_log(log)
    per = count_by(o.get("worker") for o in objs
                   if str(o.get("uri", "")).startswith(("/rl/", "/rc/")) and "worker" in o)
    if per:
        check(len(per) >= 2, "rate-limited requests were all served by one worker %s: cross-worker exactness "
                             "not exercised" % per)


@test("rate_limit_global_and_header")
def t_rate_limit_global_header(ctx):
    a = ctx.b["a"]
    port = free_port()
    m = ctx.master(conf(lsn("web", port), pl("p", [a]),
                        rt("g", ("path", "/g/*"), ("pool", "p"), ("rate_limit", "3/second burst=3 by=global")),
                        rt("k", ("path", "/k/*"), ("pool", "p"),
                           ("rate_limit", "2/second burst=2 by=header:X-Api-Key")),
                        workers=2), [port])
    m.wait_workers(2)
    t0 = time.monotonic()
    rs1, _ = seq(port, "/g/one", 3, src="127.0.0.1")
    rs2, _ = seq(port, "/g/two", 3, src="127.0.0.2")
    t = time.monotonic() - t0
    eq(statuses(rs1), [200] * 3, "by=global 3/second burst=3: 3 requests from 127.0.0.1")
    if t < 0.3:
        eq(statuses(rs2), [429] * 3, "by=global: 3 requests from 127.0.0.2 right after (shared bucket, %.3f s)" % t)
    else:
        check_limited(rs1 + rs2, t, 3, 3, "by=global: 3 from 127.0.0.1 then 3 from 127.0.0.2")
    for r in rs2:
        if r.status == 429:
            check_429(r, "by=global 429", 1, 1)

    def key(v):
        return [("X-Api-Key", v)]

    ta = time.monotonic()
    rs, t = seq(port, "/k/a", 3, src="127.0.0.1", headers=key("A"))
    check_limited(rs, t, 2, 2, "by=header:X-Api-Key 2/second, key A")
    # key A from another address, header name in lower case: A's bucket, still empty
    r = ask(port, "/k/a2", src="127.0.0.2", headers=[("x-api-key", "A")])
    if time.monotonic() - ta < 0.45:  # no token refilled yet (one every 0.5 s)
        check_429(r, "by=header: key A from 127.0.0.2 (x-api-key) right after A's requests", 1, 1)
    rs, t = seq(port, "/k/b", 3, src="127.0.0.1", headers=key("B"))
    check_limited(rs, t, 2, 2, "by=header:X-Api-Key 2/second, key B (its own bucket)")
    # requests without the header share one bucket, whatever their address
    t0 = time.monotonic()
    rs, _ = seq(port, "/k/none", 2, src="127.0.0.1")
    rs2, _ = seq(port, "/k/none2", 2, src="127.0.0.2")
    check_limited(rs + rs2, time.monotonic() - t0, 2, 2,
                  "by=header: 2 requests without X-Api-Key from 127.0.0.1, then 2 from 127.0.0.2")


@test("rate_limit_exempt")
def t_rate_limit_exempt(ctx):
    a = ctx.b["a"]
    port = free_port()
    m = ctx.master(conf(lsn("web", port), pl("p", [a]),
                        rt("e", ("path", "/e/*"), ("pool", "p"), ("rate_limit", "3/second burst=3"),
                           ("rate_limit_exempt", "127.0.0.2/32, 10.0.0.0/8")),
                        rt("eg", ("path", "/eg/*"), ("pool", "p"), ("rate_limit", "3/minute burst=3 by=global"),
                           ("rate_limit_exempt", "127.0.0.2")),
                        workers=2), [port])
    m.wait_workers(2)
    rs, _ = seq(port, "/e/x", 20, src="127.0.0.2")
    eq(statuses(rs), [200] * 20, "rate_limit_exempt = 127.0.0.2/32: 20 requests from 127.0.0.2")
    rs, t = seq(port, "/e/y", 10, src="127.0.0.1")
    check_limited(rs, t, 3, 3, "3/second with 127.0.0.2 exempt: 10 requests from 127.0.0.1")
    rs, _ = seq(port, "/e/z", 10, src="127.0.0.2")
    eq(statuses(rs), [200] * 10, "exempt 127.0.0.2 while 127.0.0.1 is limited")
    # exempt clients neither are limited nor take tokens from a shared (global) bucket
    rs, _ = seq(port, "/eg/x", 10, src="127.0.0.2")
    eq(statuses(rs), [200] * 10, "by=global, exempt 127.0.0.2: 10 requests from 127.0.0.2")
    rs, t = seq(port, "/eg/y", 5, src="127.0.0.1")
    eq(statuses(rs), [200, 200, 200, 429, 429], "by=global 3/minute: 127.0.0.1 after 10 exempt requests")
    check_429(ask(port, "/eg/z", src="127.0.0.3"), "by=global 3/minute: 127.0.0.3 after the bucket is empty", 1, 60)
    check_200(ask(port, "/eg/w", src="127.0.0.2"), "by=global: exempt 127.0.0.2 with the bucket empty")


@test("rate_limit_minute_retry_after")
def t_rate_limit_minute(ctx):
    a = ctx.b["a"]
    port = free_port()
    m = ctx.master(conf(lsn("web", port), pl("p", [a]),
                        rt("m", ("path", "/m/*"), ("pool", "p"), ("rate_limit", "2/minute burst=2")),
                        rt("h", ("path", "/h/*"), ("pool", "p"), ("rate_limit", "1/hour")),
                        workers=2), [port])
    m.wait_workers(2)
    rs, _ = seq(port, "/m/x", 4, src="127.0.0.1")
    eq(statuses(rs), [200, 200, 429, 429], "2/minute burst=2: 4 requests")
    ra = check_429(rs[2], "2/minute: third request", 1, 60)
    check(28 <= ra <= 31, "2/minute: Retry-After %d, want about 30 (one token every 30 s)" % ra)
    ra4 = check_429(rs[3], "2/minute: fourth request", 1, 60)
    check(ra4 <= ra, "2/minute: Retry-After grew from %d to %d" % (ra, ra4))
    rs, _ = seq(port, "/h/x", 2, src="127.0.0.1")
    eq(statuses(rs), [200, 429], "1/hour: 2 requests")
    ra = check_429(rs[1], "1/hour: second request", 1, 3601)
    check(3500 <= ra <= 3601, "1/hour: Retry-After %d, want about 3600" % ra)


@test("sticky_cookie")
def t_sticky_cookie(ctx):
    """sticky = cookie SRV: a new client gets a cookie naming its server (by name), requests that
    carry it stay there, and a cookie naming an unusable or unknown server goes elsewhere and gets
    a new cookie."""
    a, b = ctx.b["a"], ctx.b["b"]
    port, dead = free_port(), free_port()
    pool_text = section("pool p", ("server", "a %s:%d" % (HOST, a.port)), ("server", "b %s:%d" % (HOST, b.port)),
                        ("server", "dead %s:%d" % (HOST, dead)), ("sticky", "cookie SRV"), ("retries", "2"))
    ctx.master(conf(lsn("web", port), pool_text, workers=2), [port])
    r = ask(port, "/first")
    eq(r.status, 200, "first request: status")
    cookie = r.hdr("set-cookie") or ""
    check(cookie.startswith("SRV=%s;" % r.backend), "first request: Set-Cookie %r does not name its server %r"
          % (cookie, r.backend))
    for name in ("a", "b"):
        got = set()
        for i in range(12):   # new connections: both workers must honour it
            r = ask(port, "/pinned/%d" % i, headers=[("Cookie", "theme=dark; SRV=%s" % name)])
            eq(r.status, 200, "request with SRV=%s: status" % name)
            check(r.hdr("set-cookie") is None, "request with a valid SRV=%s got Set-Cookie %r" % (name, r.hdr("set-cookie")))
            got.add(r.backend)
        eq(got, {name}, "servers answering requests with cookie SRV=%s" % name)
    for bad in ("dead", "nosuch"):
        for i in range(4):
            r = ask(port, "/moved/%d" % i, headers=[("Cookie", "SRV=%s" % bad)])
            eq(r.status, 200, "request with cookie SRV=%s: status" % bad)
            check(r.backend in ("a", "b"), "SRV=%s answered by %r" % (bad, r.backend))
            eq(r.hdr("set-cookie"), "SRV=%s; Path=/; HttpOnly" % r.backend, "SRV=%s: the new cookie" % bad)


@test("config_errors")
def t_config_errors(ctx):
    check(os.path.isfile(LB_BIN) and os.access(LB_BIN, os.X_OK), "lb binary not found: %s" % LB_BIN)
    p1, p2 = free_port(), free_port()
    base = [
        "[global]",                                        # 1
        "workers = 1",                                     # 2
        "rate_limit_entries = 1024",                       # 3
        "",                                                # 4
        "[log]",                                           # 5
        "access = off",                                    # 6
        "",                                                # 7
        "[listener web]",                                  # 8
        "bind = 127.0.0.1:%d" % p1,                        # 9
        "mode = http",                                     # 10
        "pool = main",                                     # 11
        "deny = 10.0.0.0/8, ::1/128",                      # 12
        "allow = 127.0.0.0/8",                             # 13
        "",                                                # 14
        "[pool main]",                                     # 15
        "server = a 127.0.0.1:%d" % p2,                    # 16
        "",                                                # 17
        "[route api]",                                     # 18
        "path = /api/*",                                   # 19
        "pool = main",                                     # 20
        "acl = deny 127.0.0.5/32",                         # 21
        "acl = allow 127.0.0.0/8",                         # 22
        "rate_limit = 10/second burst=20 by=header:X-Api-Key",  # 23
        "rate_limit_exempt = 127.0.0.2/32, 2001:db8::/32",  # 24
        "request_header_add = X-Env: prod",                # 25
        "request_header_remove = X-Secret",                # 26
        "response_header_add = Strict-Transport-Security: max-age=60",  # 27
        "response_header_remove = X-Backend",              # 28
        "",                                                # 29
        "[route down]",                                    # 30
        "path = /down/*",                                  # 31
        "return = 503 down for maintenance",               # 32
        "",                                                # 33
        "[route moved]",                                   # 34
        "path = /moved",                                   # 35
        "redirect = 308 https://$host$uri",                # 36
    ]

    # the valid file first: otherwise "not supported yet" would pass every error case below
    path, rc, err = it.lb_test_config(ctx, "valid", base)
    eq(rc, 0, "exit status of lb -t on a valid file using every policy key (stderr: %s)" % short(err, 300))

    def with_line(n, text):
        lines = list(base)
        lines[n - 1] = text
        return lines

    bad = [
        ("acl_verb", 21, "acl = maybe 1.2.3.4"),
        ("acl_prefix", 22, "acl = allow 127.0.0.0/33"),
        ("acl_v6_prefix", 22, "acl = allow ::1/129"),
        ("rate_unit", 23, "rate_limit = 10/fortnight"),
        ("rate_burst", 23, "rate_limit = 10/second burst=x"),
        ("rate_by", 23, "rate_limit = 10/second by=cookie"),
        ("rate_number", 23, "rate_limit = ten/second"),
        ("exempt_bad", 24, "rate_limit_exempt = 127.0.0.2/32, nonsense"),
        ("deny_octet", 12, "deny = 300.1.1.1/8"),
        ("allow_prefix", 13, "allow = 127.0.0.0/40"),
        ("return_99", 32, "return = 99 x"),
        ("return_1000", 32, "return = 1000 x"),
        ("redirect_200", 36, "redirect = 200 http://x"),
        ("redirect_no_url", 36, "redirect = 308"),
        ("req_add_nocolon", 25, "request_header_add = NoColon"),
        ("resp_add_nocolon", 27, "response_header_add = AlsoNoColon"),
        ("entries_word", 3, "rate_limit_entries = many"),
    ]
    problems = []
    for name, ln, text in bad:
        path, rc, err = it.lb_test_config(ctx, name, with_line(ln, text))
        if rc != 1:
            problems.append("%s (%r at line %d): exit status %s, want 1 (stderr: %s)" % (name, text, ln, rc,
                                                                                      short(err, 150)))
            continue
        base_name = re.escape(os.path.basename(path))
        lines = [int(x) for x in re.findall(r"%s:(\d+):" % base_name, err)]
        if ln not in lines:
            problems.append("%s (%r): no '%s:%d:' on stderr: %s" % (name, text, os.path.basename(path), ln,
                                                                    short(err, 200)))
        else:
            # a consequence at the section's header ("[route down] needs a pool ...") is fair; others are not
            head = max(i + 1 for i in range(ln) if base[i].startswith("["))
            extra = sorted(set(lines) - {ln, head})
            if extra:
                problems.append("%s (%r at line %d): errors reported at lines %s too: %s"
                                % (name, text, ln, extra, short(err, 200)))
    check(not problems, "%d of %d bad files: %s" % (len(problems), len(bad), " || ".join(problems)))


@test("canary_split_and_header_ab", timeout=60)
def t_canary(ctx):
    """split = stable 90, canary 10: 10,000 requests (4 keep-alive clients, 2 workers) put 10% +- 1.5% on
    canary; header A/B through route order sends 100% of X-Test-Group: B to B and nothing else there."""
    a, b = ctx.b["a"], ctx.b["b"]
    port = free_port()
    ctx.master(conf(lsn("web", port, pool="stable"), pl("stable", [a]), pl("canary", [b]), pl("pa", [a]), pl("pb", [b]),
                    rt("groupb", ("path", "/ab/*"), ("header", "X-Test-Group: B"), ("pool", "pb")),
                    rt("groupa", ("path", "/ab/*"), ("pool", "pa")),
                    rt("main", ("split", "stable 90, canary 10")), workers=2), [port])
    counts, errs = {}, []
    lock = threading.Lock()

    def client(k):
        try:
            with Conn(port, timeout=10) as c:
                for i in range(2500):
                    r = c.ask("/c/%d/%d" % (k, i))
                    with lock:
                        counts[r.backend] = counts.get(r.backend, 0) + 1
        except Exception as e:
            with lock:
                errs.append("%s: %s" % (type(e).__name__, e))

    ths = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(4)]
    for th in ths:
        th.start()
    for th in ths:
        th.join(50)
    check(not errs, "clients failed: %s" % errs[:2])
    total = sum(counts.values())
    eq(total, 10000, "answers (by backend %s)" % counts)
    share = counts.get("b", 0) / total
    check(0.085 <= share <= 0.115, "canary share %.2f%% of 10,000 (want 10%% +- 1.5%%; %s)" % (100 * share, counts))
    with Conn(port) as c:
        got_b = [c.ask("/ab/%d" % i, headers=[("X-Test-Group", "B")]).backend for i in range(100)]
        got_a = [c.ask("/ab/n%d" % i).backend for i in range(100)]
        got_o = [c.ask("/ab/o%d" % i, headers=[("X-Test-Group", "A")]).backend for i in range(100)]
    eq(got_b.count("b"), 100, "requests with X-Test-Group: B that reached B")
    eq(got_a.count("b") + got_o.count("b"), 0, "requests without it (or with A) that reached B")


# ------------------------------------------------------------------------ real client address

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v1(src, dst="10.0.0.1", sport=5555, dport=80):
    fam = "TCP6" if ":" in src else "TCP4"
    return ("PROXY %s %s %s %d %d\r\n" % (fam, src, dst, sport, dport)).encode()


def proxy_v2(src, dst, sport=5555, dport=80):
    fam = socket.AF_INET6 if ":" in src else socket.AF_INET
    a = socket.inet_pton(fam, src) + socket.inet_pton(fam, dst)
    body = a + sport.to_bytes(2, "big") + dport.to_bytes(2, "big")
    return V2_SIG + bytes([0x21, 0x21 if fam == socket.AF_INET6 else 0x11]) + len(body).to_bytes(2, "big") + body


def parse_proxy(data):
    """(header text or dict, rest) of what a send_proxy server connection started with."""
    if data.startswith(b"PROXY "):
        i = data.find(b"\r\n")
        return data[:i].decode(), data[i + 2:]
    if data.startswith(V2_SIG) and len(data) >= 16:
        n = int.from_bytes(data[14:16], "big")
        fam = data[13]
        al = 4 if fam == 0x11 else 16
        af = socket.AF_INET if al == 4 else socket.AF_INET6
        b = data[16:16 + n]
        return ({"cmd": data[12], "src": socket.inet_ntop(af, b[:al]), "dst": socket.inet_ntop(af, b[al:2 * al]),
                 "sport": int.from_bytes(b[2 * al:2 * al + 2], "big"),
                 "dport": int.from_bytes(b[2 * al + 2:2 * al + 4], "big")}, data[16 + n:])
    return None, data


class ProxyServer(it.RawServer):
    """A server behind send_proxy: records the PROXY header each connection starts with and answers
    every GET with JSON {"proxy": header, "conn": connection number, "req": request number}; in tcp
    mode it echoes what follows the header."""

    def __init__(self, mode="http"):
        self.mode = mode
        self.conns = []      # header of each connection, in accept order
        self.lock = threading.Lock()
        super().__init__(64)

    def _serve(self, c):
        c.settimeout(10)
        data, hdr, idx, nreq = b"", None, None, 0
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    return
                data += d
                if idx is None:
                    hdr, rest = parse_proxy(data)
                    maybe = b"PROXY "[:len(data)] == data[:6] or V2_SIG[:len(data)] == data[:12]
                    if hdr is None and maybe and len(data) < 16:
                        continue
                    with self.lock:
                        self.conns.append(hdr)
                        idx = len(self.conns)
                    data = rest
                if self.mode == "tcp":
                    c.sendall(data)
                    data = b""
                    continue
                while b"\r\n\r\n" in data:
                    head, data = data.split(b"\r\n\r\n", 1)
                    nreq += 1
                    body = json.dumps({"proxy": hdr, "conn": idx, "req": nreq,
                                       "first": head.split(b"\r\n")[0].decode()}).encode()
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Backend: px\r\n\r\n%s" % (len(body), body))
        except OSError:
            pass
        finally:
            c.close()


def echoed(port, data, n, src=HOST, secs=3.0):
    """Send data on a new connection to a tcp listener; up to n bytes it gets back within secs."""
    with Conn(port, src=src) as c:
        c.send(data)
        got = b""
        deadline = time.monotonic() + secs
        while len(got) < n and time.monotonic() < deadline:
            d = c.sock.recv(100)
            if not d:
                break
            got += d
        return got


def raw_exchange(port, data, src=HOST, timeout=4.0):
    """Send bytes as they are on a new connection from src; the first response (it.Resp)."""
    try:
        with Conn(port, src=src, timeout=timeout) as c:
            c.send(data)
            return c.read_response("GET")
    except it.Closed as e:
        raise Fail("raw request from %s: %s" % (src, e))
    except OSError as e:
        raise Fail("raw request from %s: %s: %s" % (src, type(e).__name__, e))


def seen_headers(r, what):
    eq(r.status, 200, what + ": status")
    try:
        return json.loads(r.body)
    except ValueError:
        raise Fail("%s: backend /headers answer is not JSON: %s" % (what, short(r.body)))


@test("proxy_protocol_in")
def t_proxy_in(ctx):
    """PROXY v1/v2 from a trusted proxy names the client (XFF, ACLs, access log); from anyone else,
    or missing from a trusted proxy, it is a 400; in tcp mode the header is not forwarded."""
    a, echo = ctx.b["a"], ctx.b.get("echo")
    port, tport = free_port(), free_port()
    log = os.path.join(ctx.dir, "access.log")
    tcp_srv = ProxyServer("tcp")
    ctx.on_cleanup(tcp_srv.stop)
    ctx.master(conf(lsn("web", port, ("proxy_protocol", "any"), ("trusted_proxies", "127.0.0.1, 127.0.0.9")),
                    pl("p", [a]),
                    rt("acl", ("path", "/acl/*"), ("pool", "p"), ("acl", "deny 203.0.113.0/24")),
                    section("listener raw", ("bind", "%s:%d" % (HOST, tport)), ("mode", "tcp"), ("pool", "t"),
                            ("proxy_protocol", "v2"), ("trusted_proxies", "127.0.0.1")),
                    section("pool t", ("server", "t1 %s:%d" % (HOST, tcp_srv.port))),
                    workers=2, access=log), [port, tport])
    get = it.raw_request("/headers", host="x")
    h = seen_headers(raw_exchange(port, proxy_v1("203.0.113.7") + get), "PROXY v1 TCP4 then GET /headers")
    eq(h.get("x-forwarded-for"), "203.0.113.7", "X-Forwarded-For after a PROXY v1 header")
    h = seen_headers(raw_exchange(port, proxy_v2("2001:db8::5", "2001:db8::1") + get), "PROXY v2 TCP6")
    eq(h.get("x-forwarded-for"), "2001:db8::5", "X-Forwarded-For after a PROXY v2 header")
    h = seen_headers(raw_exchange(port, b"PROXY UNKNOWN\r\n" + get), "PROXY UNKNOWN")
    eq(h.get("x-forwarded-for"), "127.0.0.1", "X-Forwarded-For after PROXY UNKNOWN (the connection's own peer)")
    # the header is read in pieces as a slow proxy sends it
    with Conn(port) as c:
        hdr = proxy_v1("198.51.100.20")
        for i in range(0, len(hdr), 7):
            c.send(hdr[i:i + 7])
            time.sleep(0.01)
        c.send(get)
        h = seen_headers(c.read_response("GET"), "PROXY v1 sent 7 bytes at a time")
        eq(h.get("x-forwarded-for"), "198.51.100.20", "X-Forwarded-For after a PROXY header sent in pieces")
        # keep-alive: the next request on the connection has the same client
        c.send(get)
        h = seen_headers(c.read_response("GET"), "second request after PROXY")
        eq(h.get("x-forwarded-for"), "198.51.100.20", "X-Forwarded-For of the second request on the connection")
    # the ACL sees the PROXY client
    eq(raw_exchange(port, proxy_v1("203.0.113.7") + it.raw_request("/acl/x")).status, 403,
       "route acl deny 203.0.113.0/24, PROXY client 203.0.113.7: status")
    r = raw_exchange(port, proxy_v1("198.51.100.1") + it.raw_request("/acl/x"))
    check_200(r, "route acl deny 203.0.113.0/24, PROXY client 198.51.100.1")
    # an untrusted source sending the header, a trusted one without it, a malformed one: 400 from lb
    for what, data, src in (("PROXY v1 from untrusted 127.0.0.2", proxy_v1("203.0.113.7") + get, "127.0.0.2"),
                            ("PROXY v2 from untrusted 127.0.0.2", proxy_v2("192.0.2.1", "192.0.2.2") + get, "127.0.0.2"),
                            ("no PROXY header from trusted 127.0.0.1", get, "127.0.0.1"),
                            ("PROXY v1 with a bad port", b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 80\r\n" + get, "127.0.0.1")):
        r = raw_exchange(port, data, src=src)
        eq((r.status, r.backend), (400, None), what + ": (status, X-Backend)")
    # a plain client from an untrusted address is served as usual
    h = seen_headers(ask(port, "/headers", src="127.0.0.2"), "plain request from untrusted 127.0.0.2")
    eq(h.get("x-forwarded-for"), "127.0.0.2", "X-Forwarded-For of a direct client")
    # a PROXY header cut short then closed: no answer, lb unharmed
    with Conn(port) as c:
        c.send(b"PROXY TCP4 1.2")
    check_200(raw_exchange(port, proxy_v1("192.0.2.8") + it.raw_request("/after-cut")), "request after a cut PROXY header")
    # tcp mode: the v2 header is consumed, the bytes after it reach the server
    eq(echoed(tport, proxy_v2("192.0.2.44", "192.0.2.1") + b"hello", 5), b"hello",
       "tcp listener with proxy_protocol v2: echoed bytes")
    # the access log names the PROXY client
    pr.wait_for(lambda: pr.count_lines(log) >= 12, 3)
    objs, _ = pr.read_json_log(log)
    clients = {o.get("client") for o in objs}
    for want in ("203.0.113.7", "2001:db8::5", "198.51.100.20", "198.51.100.1"):
        check(want in clients, "access log: no line with client %s (clients %s)" % (want, sorted(map(str, clients))))


@test("x_forwarded_for_trusted")
def t_xff(ctx):
    """X-Forwarded-For counts only from trusted_proxies: the rightmost hop that is not a trusted proxy
    is the client for ACLs and logs; the chain is passed on with the peer appended. From anyone else
    the header is replaced by the peer's address."""
    a = ctx.b["a"]
    port = free_port()
    log = os.path.join(ctx.dir, "access.log")
    ctx.master(conf(lsn("web", port, ("trusted_proxies", "127.0.0.1, 10.0.0.0/8")), pl("p", [a]),
                    rt("acl", ("path", "/acl/*"), ("pool", "p"), ("acl", "deny 198.51.100.0/24")),
                    workers=1, access=log), [port])
    cases = [
        ("rightmost untrusted", [("X-Forwarded-For", "198.51.100.9, 10.1.1.1")], "127.0.0.1",
         "198.51.100.9", "198.51.100.9, 10.1.1.1, 127.0.0.1", 403),
        ("spoofed left hop ignored", [("X-Forwarded-For", "198.51.100.66, 192.0.2.5")], "127.0.0.1",
         "192.0.2.5", "198.51.100.66, 192.0.2.5, 127.0.0.1", 200),
        ("garbage hop stops the walk", [("X-Forwarded-For", "not-an-ip, 10.1.1.1")], "127.0.0.1",
         "10.1.1.1", "not-an-ip, 10.1.1.1, 127.0.0.1", 200),
        ("two headers in order", [("X-Forwarded-For", "198.51.100.9"), ("X-Forwarded-For", "10.0.0.2")], "127.0.0.1",
         "198.51.100.9", "198.51.100.9, 10.0.0.2, 127.0.0.1", 403),
        ("port and brackets", [("X-Forwarded-For", "[2001:db8::7]:4711, 198.51.100.3:99")], "127.0.0.1",
         "198.51.100.3", "[2001:db8::7]:4711, 198.51.100.3:99, 127.0.0.1", 403),
        ("untrusted peer: replaced", [("X-Forwarded-For", "10.1.1.1")], "127.0.0.2",
         "127.0.0.2", "127.0.0.2", 200),
        ("trusted peer, no header", [], "127.0.0.1", "127.0.0.1", "127.0.0.1", 200),
    ]
    for i, (what, hdrs, src, client, chain, acl_status) in enumerate(cases):
        h = seen_headers(ask(port, "/headers?case=%d" % i, src=src, headers=hdrs), what)
        eq(h.get("x-forwarded-for"), chain, "%s: X-Forwarded-For the backend saw" % what)
        r = ask(port, "/acl/case%d" % i, src=src, headers=hdrs)
        eq(r.status, acl_status, "%s: acl deny 198.51.100.0/24 for client %s: status" % (what, client))
    pr.wait_for(lambda: pr.count_lines(log) >= 2 * len(cases), 3)
    objs, _ = pr.read_json_log(log)
    got = {}
    for o in objs:
        m = re.search(r"case=?(\d+)", str(o.get("uri", "")))
        if m:
            got.setdefault(int(m.group(1)), set()).add(o.get("client"))
    for i, (what, _, _, client, _, _) in enumerate(cases):
        eq(got.get(i), {client}, "%s: access log client" % what)


@test("send_proxy")
def t_send_proxy(ctx):
    """send_proxy = v1 / v2: each new server connection starts with a PROXY header naming its client;
    a server connection carrying one client's header is never given to another client; a PROXY
    client received on the listener is the one passed on; tcp mode too."""
    v1, v2, tsrv = ProxyServer(), ProxyServer(), ProxyServer("tcp")
    for s_ in (v1, v2, tsrv):
        ctx.on_cleanup(s_.stop)
    port, port2, tport = free_port(), free_port(), free_port()
    ctx.master(conf(lsn("web", port, pool="p1"),
                    lsn("chain", port2, ("proxy_protocol", "v1"), ("trusted_proxies", "127.0.0.1"), pool="p2"),
                    section("listener raw", ("bind", "%s:%d" % (HOST, tport)), ("mode", "tcp"), ("pool", "t")),
                    section("pool p1", ("server", "s %s:%d" % (HOST, v1.port)), ("send_proxy", "v1")),
                    section("pool p2", ("server", "s %s:%d" % (HOST, v2.port)), ("send_proxy", "v2")),
                    section("pool t", ("server", "s %s:%d" % (HOST, tsrv.port)), ("send_proxy", "v1")),
                    workers=1), [port, port2, tport])
    with Conn(port, src="127.0.0.2") as c:
        cport = c.sock.getsockname()[1]
        seen = []
        for i in range(3):
            c.send(it.raw_request("/ka/%d" % i))
            seen.append(seen_headers(c.read_response("GET"), "send_proxy v1, request %d from 127.0.0.2" % (i + 1)))
    eq(seen[0]["proxy"], "PROXY TCP4 127.0.0.2 %s %d %d" % (HOST, cport, port), "send_proxy v1: the header")
    eq([(x["conn"], x["req"]) for x in seen], [(seen[0]["conn"], k) for k in (1, 2, 3)],
       "three keep-alive requests of one client: (server connection, request number)")
    x = seen_headers(ask(port, "/other", src="127.0.0.3"), "send_proxy v1 from 127.0.0.3")
    check(x["conn"] != seen[0]["conn"], "a second client was given the first client's server connection")
    check(str(x["proxy"]).startswith("PROXY TCP4 127.0.0.3 "), "second client's header: %r" % x["proxy"])
    # a PROXY client on the way in is the client on the way out (v2 this time)
    x = seen_headers(raw_exchange(port2, proxy_v1("203.0.113.9", "10.9.9.9", 4242, 443) + it.raw_request("/c")),
                     "PROXY in, send_proxy v2 out")
    eq(x["proxy"], {"cmd": 0x21, "src": "203.0.113.9", "dst": "10.9.9.9", "sport": 4242, "dport": 443},
       "send_proxy v2 after a received PROXY v1 header")
    # tcp mode: header first even before the client speaks, then the client's bytes
    eq(echoed(tport, b"ping", 4, src="127.0.0.4"), b"ping", "tcp send_proxy: echoed bytes (the header is not data)")
    pr.wait_for(lambda: tsrv.conns, 2)
    check(str(tsrv.conns[-1]).startswith("PROXY TCP4 127.0.0.4 "), "tcp send_proxy header: %r" % tsrv.conns[-1:])


@test("max_conn_per_ip")
def t_max_conn_per_ip(ctx):
    """max_conn_per_ip = 3 across 2 workers: a 4th connection from one address is closed unanswered,
    others are unaffected, and a closed connection frees its place."""
    a = ctx.b["a"]
    port = free_port()
    m = ctx.master(conf(lsn("web", port, ("max_conn_per_ip", "3")), pl("p", [a]), workers=2), [port])
    m.wait_workers(2)
    held = []
    try:
        for i in range(3):
            c = Conn(port, src="127.0.0.2")
            held.append(c)
            r = c.ask("/held/%d" % i)
            check_200(r, "held connection %d from 127.0.0.2" % (i + 1))
        must_refuse(port, "127.0.0.2", "4th connection from 127.0.0.2 with max_conn_per_ip = 3")
        check_200(ask(port, "/other", src="127.0.0.3"), "a connection from 127.0.0.3 meanwhile")
        r = held[0].ask("/held/again")
        check_200(r, "a held connection still serves")
        held.pop(0).close()
        deadline = time.monotonic() + 3
        while True:
            try:
                check_200(ask(port, "/after-close", src="127.0.0.2"), "127.0.0.2 after closing one connection")
                break
            except Fail:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        for c in held:
            c.close()
    err = m.stderr()
    check("max_conn_per_ip" in err, "no error-log line names max_conn_per_ip: %s" % short(err, 300))


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def proxy_flood(port, first, n, conc=256, deadline=60.0):
    """n connections, each a PROXY v1 header with a distinct address from 10.0.0.0/8 (numbered from
    first) and one request; returns {status: count}. Bounded by `deadline` seconds."""
    import selectors
    sel = selectors.DefaultSelector()
    statuses_ = {}
    nxt, live, end = first, 0, time.monotonic() + deadline

    def start(k):
        s = it.connect_nowait(port)
        ip = "10.%d.%d.%d" % ((k >> 16) & 255, (k >> 8) & 255, k & 255)
        data = proxy_v1(ip) + b"GET /flood HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        sel.register(s, selectors.EVENT_WRITE, [data, b""])

    while (nxt < first + n or live) and time.monotonic() < end:
        while live < conc and nxt < first + n:
            start(nxt)
            nxt += 1
            live += 1
        for key, ev in sel.select(1.0):
            s, st = key.fileobj, key.data
            try:
                if ev & selectors.EVENT_WRITE:
                    s.send(st[0])
                    sel.modify(s, selectors.EVENT_READ, st)
                    continue
                d = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                d = b""
                st[1] = st[1] or b"HTTP/1.1 000"
            if d:
                st[1] += d
                continue
            sel.unregister(s)
            s.close()
            live -= 1
            code = int(st[1][9:12]) if st[1][:5] == b"HTTP/" and st[1][9:12].isdigit() else 0
            statuses_[code] = statuses_.get(code, 0) + 1
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    check(nxt == first + n and not live, "PROXY flood: %d of %d connections done in %.0f s"
          % (nxt - first - live, n, deadline))
    return statuses_


@test("proxy_flood_bounded_memory", timeout=120)
def t_proxy_flood(ctx):
    """100,000 distinct client addresses (PROXY v1 from a trusted proxy) through a rate-limited route:
    the shared table holds rate_limit_entries buckets, so the worker's memory does not grow with them."""
    if "asan" in os.path.basename(LB_BIN):
        raise Skip("memory figures of an ASan build are not lb's")
    a = ctx.b["a"]
    port = free_port()
    m = ctx.master(conf(lsn("web", port, ("proxy_protocol", "v1"), ("trusted_proxies", "127.0.0.1")),
                        pl("p", [a]), rt("rl", ("pool", "p"), ("rate_limit", "1/minute burst=1")),
                        workers=1, glob={"rate_limit_entries": 1024}), [port])
    w = m.wait_workers(1)[0]
    warm = proxy_flood(port, 0, 5000)
    check(warm.get(200, 0) == 5000, "5,000 distinct addresses, 1 request each: statuses %s (want all 200)" % warm)
    # lb gives the pages of buffers beyond its 64 warm ones back once a second: read both figures
    # after an idle trim, not one before and one after it (about 1.8 MB apart here)
    time.sleep(1.5)
    before = rss_kb(w)
    got = proxy_flood(port, 5000, 100000, deadline=90.0)
    time.sleep(1.5)
    after = rss_kb(w)
    check(got.get(200, 0) == 100000, "100,000 more distinct addresses: statuses %s (want all 200)" % got)
    # a per-address entry of even 16 bytes would be 1.6 MB; lb's table is 1024 entries, already touched
    check(after - before < 1024, "worker RSS grew by %d kB over 100,000 distinct addresses (%d -> %d kB)"
          % (after - before, before, after))
    # the table still limits: the same address twice in a row
    r1 = raw_exchange(port, proxy_v1("192.0.2.200") + it.raw_request("/again"))
    r2 = raw_exchange(port, proxy_v1("192.0.2.200") + it.raw_request("/again"))
    eq((r1.status, r2.status), (200, 429), "one address twice after the flood (1/minute burst=1)")


@test("slowloris_log_throttled", timeout=30)
def t_slowloris_log(ctx):
    """200 connections that send part of a head and stop get 408 after header_timeout, and the error log
    says so in a few lines, one a second per worker, that count the rest (every 408 accounted for)."""
    a = ctx.b["a"]
    port = free_port()
    m = ctx.master(conf(lsn("web", port, ("header_timeout", "1s")), pl("p", [a]), workers=2), [port])
    m.wait_workers(2)
    mark = len(m.stderr())
    socks = []
    try:
        for _ in range(200):
            s = socket.create_connection((HOST, port), timeout=5)
            s.sendall(b"GET /drip HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        got = {}
        for s in socks:
            d = b""
            try:
                while b"\r\n" not in d:
                    piece = s.recv(4096)
                    if not piece:
                        break
                    d += piece
            except OSError:
                pass
            k = d[9:12].decode() if d.startswith(b"HTTP/1.1 ") else "none"
            got[k] = got.get(k, 0) + 1
    finally:
        for s in socks:
            s.close()
    eq(got, {"408": 200}, "answers to 200 heads left incomplete past header_timeout")

    def counted():
        """a line is its event and the N before it it counts; a "(repeated: N more" line only those N"""
        lines = [ln for ln in m.stderr()[mark:].splitlines() if "408 Request Timeout" in ln]
        more = sum(int(x) for x in re.findall(r"\((?:repeated: )?(\d+) more like this", "\n".join(lines)))
        return lines, more + sum(1 for ln in lines if "(repeated: " not in ln)
    deadline = time.monotonic() + 4
    while counted()[1] < 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    lines, total = counted()
    check(len(lines) <= 6, "%d error-log lines for 200 timed-out heads (want a few): %s"
          % (len(lines), short("\n".join(lines[:4]), 400)))
    eq(total, 200, "408s the error log accounts for (lines + their counts): %s" % short("\n".join(lines), 400))


# ---------------------------------------------------------------------------------------- runner

def run_suite(all_tests, label, budget, file_name):
    """The shared runner with backends a and b: policy.py, health.py and admin.py."""
    it.run_suite(all_tests, label, budget, file_name, pr.Ctx, [("a", "http"), ("b", "http")], cleanup_timeout=20)


if __name__ == "__main__":
    run_suite(TESTS, "policy", SUITE_BUDGET, __file__)
