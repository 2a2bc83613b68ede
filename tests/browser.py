#!/usr/bin/env python3
"""A real browser through lb's TLS listener: headless Chromium loads a page with 50 sub-resources and
says, through the DevTools protocol and the page's own `performance` entries, which protocol (h2) and
TLS version it got and over how many connections (issues 19 and 20).

    LB_BIN=./lb python3 tests/browser.py [--only SUBSTR] [--keep]
    LB_BIN=./lb-openssl python3 tests/browser.py

Chromium is driven by tests/chromium.py (DevTools over --remote-debugging-pipe). The listener is on
127.0.0.1; Chromium reaches it as https://lb.test:PORT/ through `--host-resolver-rules=MAP lb.test
127.0.0.1`, and lb serves a certificate for lb.test from a throwaway CA made in the test's directory.

How Chromium trusts that certificate: Chromium on Linux verifies against the NSS db in ~/.pki/nssdb
(not the profile given by --user-data-dir), and adding a root there needs certutil. Instead the test
pins the leaf's key: `--ignore-certificate-errors-spki-list=BASE64`, the base64 SHA-256 of the
certificate's DER SubjectPublicKeyInfo (`openssl x509 -pubkey | openssl pkey -pubin -outform der |
openssl dgst -sha256 -binary | base64`). Chromium then accepts a certificate whose chain holds a key in
the list, and only those: any other certificate still fails. --ignore-certificate-errors (every error
ignored) is NOT used: the pin alone works with headless Chromium 156 here (checked by hand with and
without --user-data-dir; chromium.py always gives one), and tls13_h2_openssl proves the pin is what
makes the load succeed (a load with a wrong pin fails with a certificate error before the real one).
The connection is then a normal TLS one (Network.responseReceived carries securityDetails).

Which build: `lb -v` names its TLS library (BearSSL or OpenSSL); tls13_h2_openssl asserts TLS 1.3
for OpenSSL and TLS 1.2 for BearSSL, never a silent skip. HTTP/2: until lb has it, `lb -t` rejects
`http2 = on` in a listener, and the h2 checks report themselves skipped with that reason; once `lb -t`
accepts the key, every h2 check is a hard assertion.
"""
import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import integration as it  # noqa: E402
from integration import HOST, Fail, check, eq, free_port, short  # noqa: E402
from process import Skip, conf  # noqa: E402
from policy import lsn, pl  # noqa: E402
import tls as tl  # noqa: E402
from chromium import Browser  # noqa: E402

SUITE_BUDGET = 40
TESTS = []
test = it.registrar(TESTS, 20)
NAME = "lb.test"
SUBRESOURCES = 50
NO_H2 = "lb build has no HTTP/2 (`lb -t` rejects http2 = on)"


# ---------------------------------------------------------------------------------------- helpers

def spki_pin(cert_path):
    """base64 SHA-256 of the certificate's DER SubjectPublicKeyInfo: the value of
    --ignore-certificate-errors-spki-list."""
    pub = tl.run(["openssl", "x509", "-in", cert_path, "-noout", "-pubkey"])
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub.encode(),
                         stdout=subprocess.PIPE, check=True, timeout=10).stdout
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def cert_for_lb_test(ctx):
    """(combined PEM for lb, SPKI pin of its leaf)."""
    ca = tl.CA(os.path.join(ctx.dir, "ca"))
    pem, _ = ca.leaf("lbtest", NAME, names=(NAME,))
    return pem, spki_pin(os.path.join(ctx.dir, "ca", "lbtest.crt"))


def browser_for(ctx, port, pin):
    """Chromium resolving lb.test to 127.0.0.1 and trusting only the key `pin` beyond its own roots."""
    br = Browser(ctx, ["--host-resolver-rules=MAP %s %s" % (NAME, HOST), "--ignore-certificate-errors-spki-list=" + pin])
    br.call("Network.enable", session=True)
    br.call("Network.setCacheDisabled", {"cacheDisabled": True}, session=True)
    return br


def lb_build():
    """'openssl' or 'bearssl', from `lb -v` (e.g. "lb 0.1.0 (BearSSL, inih; epoll)")."""
    out = subprocess.run([it.LB_BIN, "-v"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10).stdout.decode()
    for lib in ("openssl", "bearssl"):
        if lib in out.lower():
            return lib
    raise Fail("`lb -v` names neither OpenSSL nor BearSSL: %r" % out.strip())


def has_http2(ctx, cert):
    """Whether `lb -t` accepts `http2 = on` on a TLS listener (an lb without HTTP/2 rejects the key)."""
    path = os.path.join(ctx.dir, "h2probe.ini")
    with open(path, "w") as f:
        f.write(conf(lsn("h", free_port(), ("tls", "on"), ("cert", cert), ("http2", "on")), pl("p", [ctx.b["a"]])))
    p = subprocess.run([it.LB_BIN, "-t", "-c", path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
    if p.returncode != 0 and "http2" not in p.stdout.decode("utf-8", "replace"):
        raise Fail("`lb -t` failed on the http2 probe for another reason: %s" % short(p.stdout.decode(), 300))
    return p.returncode == 0


def start_lb(ctx, cert):
    """lb with one TLS listener (defaults: ALPN as the build offers it) before backend a, JSON access log."""
    port = free_port()
    log = os.path.join(ctx.dir, "access.log")
    ctx.master(conf(lsn("web", port, ("tls", "on"), ("cert", cert)), pl("p", [ctx.b["a"]]), workers=1,
                    access=log), [port])
    return port, log


def page_load(br, url, want):
    """Load url (a page of `want` - 1 images), return what Chromium saw:
    {"responses": [Network.responseReceived response], "perf": [(name, nextHopProtocol)], "images": n loaded}."""
    events = br.load(url, timeout=20)
    # responses of the last images may be reported after the load event: collect until `want` are in
    end = time.monotonic() + 5
    resp = [e["params"]["response"] for e in events if e.get("method") == "Network.responseReceived"]
    while len(resp) < want and time.monotonic() < end:
        e = br.wait_event("Network.responseReceived", timeout=max(0.1, end - time.monotonic()))
        resp.append(e["params"]["response"])
    failed = [e["params"] for e in events if e.get("method") == "Network.loadingFailed"]
    check(not failed, "Chromium could not load %d resources: %s" % (len(failed), short(str(failed[:2]), 300)))
    perf = br.js("performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))"
                 ".map(e => [e.name, e.nextHopProtocol])")
    images = br.js("Array.from(document.images).filter(i => i.complete && i.naturalWidth == 1).length")
    return {"responses": resp, "perf": perf, "images": images}


def assert_one_h2_connection(seen, want):
    """All `want` responses (the page and its images) came by h2 over a single connection, in DevTools
    and in the page's performance entries."""
    resp = [r for r in seen["responses"] if "/page" in r["url"] or "/px/" in r["url"]]
    eq(len(resp), want, "Network.responseReceived for the page and its %d images" % (want - 1))
    eq(seen["images"], want - 1, "images decoded on the page")
    protos = it.count_by(r.get("protocol") for r in resp)
    conns = it.count_by(r.get("connectionId") for r in resp)
    check(protos == {"h2": want} and len(conns) == 1,
          "expected %d h2 responses over 1 connection (DevTools response.protocol, connectionId), got %s over %d "
          "connections %s" % (want, protos, len(conns), sorted(conns.values(), reverse=True)))
    perf = [(n, p) for n, p in seen["perf"] if "/page" in n or "/px/" in n]
    eq(len(perf), want, "performance entries (navigation + resource)")
    bad = [(n, p) for n, p in perf if p != "h2"]
    check(not bad, "performance entries whose nextHopProtocol is not h2: %d, e.g. %s" % (len(bad), bad[:3]))


def access_log_protocols(path, want, timeout=5.0):
    """The access log's proto of the page's and images' lines once `want` are written; None when the
    log has no proto field."""
    end = time.monotonic() + timeout
    while True:
        lines = []
        if os.path.exists(path):
            with open(path) as f:
                lines = [json.loads(x) for x in f if x.strip()]
        lines = [x for x in lines if re.match(r"/(page|px/)", x.get("uri") or "")]
        if len(lines) >= want or time.monotonic() > end:
            break
        time.sleep(0.1)
    eq(len(lines), want, "access-log lines for the page and its images")
    if not any("proto" in x for x in lines):
        return None
    return it.count_by(x.get("proto") for x in lines)


# ---------------------------------------------------------------------------------------- tests

@test("h2_page_one_connection")
def t_h2_page(ctx):
    """A page with 50 images over lb's TLS listener: each of the 51 responses came by h2 (DevTools
    response.protocol and the page's performance nextHopProtocol) over one connection (a single DevTools
    connectionId); the access log has 51 lines with proto HTTP/2.0."""
    cert, pin = cert_for_lb_test(ctx)
    if not has_http2(ctx, cert):
        raise Skip(NO_H2)
    port, log = start_lb(ctx, cert)
    br = browser_for(ctx, port, pin)
    want = SUBRESOURCES + 1
    assert_one_h2_connection(page_load(br, "https://%s:%d/page?n=%d" % (NAME, port, SUBRESOURCES), want), want)
    protos = access_log_protocols(log, want)
    if protos is None:
        print("note: h2_page_one_connection: the access log has no proto field; its check was left out", flush=True)
    else:
        eq(protos, {"HTTP/2.0": want}, "access-log proto of the %d requests" % want)


@test("tls13_h2_openssl")
def t_tls_version(ctx):
    """Marked by build (`lb -v`): Chromium's securityDetails.protocol is TLS 1.3 through lb-openssl, TLS
    1.2 through the BearSSL build, the certificate is lb.test's, and the protocol h2 (HTTP/1.1 until lb
    has HTTP/2, then reported skipped for that part only). First, a wrong SPKI pin must make the load
    fail: the pin, not something looser, is what makes Chromium accept the test certificate."""
    build = lb_build()
    cert, pin = cert_for_lb_test(ctx)
    h2 = has_http2(ctx, cert)
    port, _ = start_lb(ctx, cert)
    wrong = base64.b64encode(bytes(32)).decode()
    br = browser_for(ctx, port, wrong)
    events = br.load("https://%s:%d/page?n=1" % (NAME, port), timeout=15)
    fails = [e["params"].get("errorText") for e in events if e.get("method") == "Network.loadingFailed"]
    check(any("CERT" in (f or "") for f in fails), "a wrong SPKI pin must fail the load with a certificate error: %s" % fails)
    br.close()
    br = browser_for(ctx, port, pin)
    seen = page_load(br, "https://%s:%d/page?n=1" % (NAME, port), 2)
    page = [r for r in seen["responses"] if "/page" in r["url"]]
    eq(len(page), 1, "responses for /page")
    sd = page[0].get("securityDetails") or {}
    want_tls = {"openssl": "TLS 1.3", "bearssl": "TLS 1.2"}[build]
    eq(sd.get("protocol"), want_tls, "securityDetails.protocol through the %s build" % build)
    eq(sd.get("subjectName"), NAME, "certificate subject Chromium saw")
    if not h2:
        eq(page[0].get("protocol"), "http/1.1", "protocol without HTTP/2")
        raise Skip("%s checked; the h2 part: %s" % (want_tls, NO_H2))
    eq(page[0].get("protocol"), "h2", "protocol through the %s build" % build)


if __name__ == "__main__":
    tl.run_suite(TESTS, "browser", SUITE_BUDGET, __file__)
