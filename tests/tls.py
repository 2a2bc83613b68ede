#!/usr/bin/env python3
"""Integration tests for lb's TLS (BearSSL): certificates chosen by SNI, ALPN, session resumption
shared by the workers, HSTS and forwarded headers, HTTP->HTTPS redirects with the ACME challenge
path served from acme_webroot, certificate replacement on disk and by SIGHUP under a client loop,
mTLS, misbehaving TLS clients, and renewal end to end with pebble + certbot.

    python3 tests/tls.py [--only SUBSTR] [--keep]

Real clients: curl, openssl s_client, and Python's ssl module for the client loops. Certificates
are made with the openssl command in each test's directory. One line per test: "PASS name" or
"FAIL name: reason"; then "tls: N passed, N failed"; exit status 1 when any test failed.
"""
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import integration as it  # noqa: E402
import smuggle  # noqa: E402  (its response splitter)
import process as pr  # noqa: E402
import policy as po  # noqa: E402
from integration import HOST, Fail, check, eq, free_port, short  # noqa: E402
from process import Skip, conf  # noqa: E402

SUITE_BUDGET = 480


def tls_library():
    """The TLS library of the build under test, from `lb -v`: "openssl" or "bearssl". Cases only one
    can pass check each build for what it does (TLS 1.3 and tickets on OpenSSL, a clean refusal and
    session IDs on BearSSL), never skip."""
    out = subprocess.run([it.LB_BIN, "-v"], stdout=subprocess.PIPE, timeout=10).stdout.decode()
    return "openssl" if "OpenSSL" in out else "bearssl"


TLS_LIB = tls_library()
OSSL = TLS_LIB == "openssl"
TESTS = []
test = it.registrar(TESTS)


# ---------------------------------------------------------------------------------------- certificates

def run(cmd, **kw):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60, **kw)
    if p.returncode != 0:
        raise Fail("%s failed: %s" % (" ".join(cmd[:3]), short(p.stdout.decode("utf-8", "replace"), 300)))
    return p.stdout.decode("utf-8", "replace")


class CA:
    """A throwaway CA in dir; leaf() makes a combined PEM (chain, then key) for lb."""

    def __init__(self, d, name="Test CA", key="ec", days=30):
        self.dir = d
        os.makedirs(d, exist_ok=True)
        tag = re.sub(r"\W", "", name)
        self.key = os.path.join(d, tag + ".key")
        self.crt = os.path.join(d, tag + ".crt")
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-days", str(days), "-subj", "/O=lb tests/CN=" + name, "-keyout", self.key, "-out", self.crt])

    def leaf(self, fname, cn, names=(), key="ec:P-256", serial=None, client=False, days=30, ocsp_uri=None):
        """fname.pem (cert + CA cert + key); returns (path, serial in hex, upper case)."""
        base = os.path.join(self.dir, fname)
        # 63 random bits with bit 62 set: always 16 hex digits and 8 DER bytes (no leading 0 either way),
        # as lb prints it (a serial below 2^60 printed with 15 digits made a test flaky, 1 run in 16)
        serial = serial or (int.from_bytes(os.urandom(8), "big") & ((1 << 63) - 1)) | (1 << 62) | 1
        kind, _, param = key.partition(":")
        newkey = (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:" + param] if kind == "ec"
                  else ["-newkey", "rsa:" + param])
        run(["openssl", "req", "-new", "-nodes", *newkey, "-subj", "/O=Test/CN=" + cn, "-keyout", base + ".key",
             "-out", base + ".csr"])
        ext = base + ".ext"
        with open(ext, "w") as f:
            if names:
                f.write("subjectAltName=" + ",".join("DNS:" + n for n in names) + "\n")
            f.write("extendedKeyUsage=%s\n" % ("clientAuth" if client else "serverAuth"))
            if ocsp_uri:
                f.write("authorityInfoAccess=OCSP;URI:%s\n" % ocsp_uri)
        run(["openssl", "x509", "-req", "-in", base + ".csr", "-CA", self.crt, "-CAkey", self.key,
             "-set_serial", str(serial), "-days", str(days), "-extfile", ext, "-out", base + ".crt"])
        pem = base + ".pem"
        with open(pem, "w") as out:
            for part in (base + ".crt", self.crt, base + ".key"):
                with open(part) as f:
                    out.write(f.read())
        return pem, "%X" % serial


def replace_file(path, src_text):
    tmp = path + ".new"
    with open(tmp, "w") as f:
        f.write(src_text)
    os.replace(tmp, path)


def read(path):
    with open(path) as f:
        return f.read()


# ---------------------------------------------------------------------------------------- clients

def tls_ctx(cafile=None, cert=None, key=None, alpn=("http/1.1",)):
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile:
        c.load_verify_locations(cafile)
    else:
        c.check_hostname = False
        c.verify_mode = ssl.CERT_NONE
    if cert:
        c.load_cert_chain(cert, key)
    if alpn:
        c.set_alpn_protocols(list(alpn))
    c.options |= ssl.OP_NO_TICKET
    return c


def https_get(port, path="/", name="a.test", ctx=None, headers=(), timeout=5.0, session=None):
    """One request on a new TLS connection: (status, headers dict lower-case, body, peer cert dict, sslsock info)."""
    ctx = ctx or tls_ctx()
    raw = socket.create_connection((HOST, port), timeout=timeout)
    s = ctx.wrap_socket(raw, server_hostname=name, session=session)
    try:
        req = "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n%s\r\n" % (
            path, name, "".join("%s: %s\r\n" % h for h in headers))
        s.sendall(req.encode())
        data = it.recv_to_eof(s)
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for l in lines[1:]:
            k, _, v = l.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        info = {"cert": s.getpeercert(), "der": s.getpeercert(binary_form=True), "alpn": s.selected_alpn_protocol(),
                "version": s.version(), "cipher": s.cipher()[0], "session": s.session, "reused": s.session_reused}
        return status, hdrs, body, info
    finally:
        s.close()


def der_serial(der):
    """The serial of a DER certificate, in hex (Certificate > TBSCertificate > [0] version > serial)."""
    def tlv(b, i):
        n = b[i + 1]
        i += 2
        if n & 0x80:
            k = n & 0x7f
            n = int.from_bytes(b[i:i + k], "big")
            i += k
        return i, n  # content start, length
    i, _ = tlv(der, 0)        # Certificate
    i, _ = tlv(der, i)        # TBSCertificate
    if der[i] == 0xa0:
        j, n = tlv(der, i)
        i = j + n
    j, n = tlv(der, i)        # serial INTEGER
    return "%X" % int.from_bytes(der[j:j + n], "big")


def serial_of(info):
    return der_serial(info["der"]) if info["der"] else None


def served_serial(port, name, cafile=None):
    """The serial of the certificate lb shows for name (via openssl, no verification needed)."""
    p = subprocess.run(["openssl", "s_client", "-connect", "%s:%d" % (HOST, port), "-servername", name,
                        "-showcerts"], input=b"", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
    out = p.stdout.decode("utf-8", "replace")
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", out, re.S)
    if not m:
        raise Fail("openssl s_client got no certificate for %s: %s" % (name, short(out, 300)))
    x = subprocess.run(["openssl", "x509", "-noout", "-serial", "-subject"], input=m.group(0).encode(),
                       stdout=subprocess.PIPE, timeout=10).stdout.decode()
    return re.search(r"serial=([0-9A-F]+)", x).group(1).lstrip("0"), x


def metrics(port):
    with urllib.request.urlopen("http://%s:%d/metrics" % (HOST, port), timeout=5) as r:
        return r.read().decode()


metric = it.sum_metric


class Loop:
    """A client loop: a new TLS connection per request until stopped; counts failures and serials."""

    def __init__(self, port, name, cafile=None, pause=0.02):
        self.port, self.name, self.pause = port, name, pause
        self.ctx = tls_ctx(cafile)
        self.ok = 0
        self.failed = []
        self.serials = []
        self.stop_ev = threading.Event()
        self.th = threading.Thread(target=self.body, daemon=True)
        self.th.start()

    def body(self):
        while not self.stop_ev.is_set():
            try:
                st, _, _, info = https_get(self.port, "/loop", self.name, self.ctx, timeout=5)
                if st != 200:
                    self.failed.append("status %d" % st)
                else:
                    self.ok += 1
                    sr = serial_of(info)
                    if not self.serials or self.serials[-1] != sr:
                        self.serials.append(sr)
            except Exception as e:  # every failure counts
                self.failed.append("%s: %s" % (type(e).__name__, e))
            time.sleep(self.pause)

    def stop(self):
        self.stop_ev.set()
        self.th.join(10)


lsn, pl = po.lsn, po.pl


def admin(port):
    return "[admin]\nbind = %s:%d\n" % (HOST, port)


# ---------------------------------------------------------------------------------------- tests

@test("sni_alpn_real_clients")
def t_sni(ctx):
    """Three certificates (ECDSA P-256 default, RSA 2048, ECDSA P-384 wildcard): SNI picks by name with
    curl and openssl s_client, an unknown name gets the first; ALPN h2 first (http2 = auto), http/1.1 for
    clients without h2; TLS 1.2 AEAD only."""
    ca = CA(ctx.dir)
    a, sa = ca.leaf("a", "a.test", ["a.test"])
    b, sb = ca.leaf("b", "b.test", ["b.test", "www.b.test"], key="rsa:2048")
    w, sw = ca.leaf("w", "wild", ["*.wild.test"], key="ec:P-384")
    port = free_port()
    m = ctx.master(conf(lsn("https", port, ("tls", "on"), ("cert", a), ("cert", b), ("cert", w)),
                        pl("p", [ctx.b["a"]]), workers=1), [port])
    for name, want in (("a.test", sa), ("b.test", sb), ("www.b.test", sb), ("x.wild.test", sw),
                       ("unknown.test", sa), ("a.b.wild.test", sa)):
        got, subj = served_serial(port, name)
        eq(got, want.lstrip("0"), "serial of the certificate served for SNI %s (%s)" % (name, subj.strip()))
    for name in ("a.test", "www.b.test", "x.wild.test"):
        p = subprocess.run(["curl", "-sS", "--cacert", ca.crt, "--resolve", "%s:%d:%s" % (name, port, HOST),
                            "-w", "\\n%{http_code} %{http_version}", "https://%s:%d/curl" % (name, port)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=15)
        out = p.stdout.decode()
        check(p.returncode == 0 and out.endswith("200 2") and "a /curl" in out,
              "curl --cacert https://%s (verified): rc %d %s" % (name, p.returncode, short(out, 200)))
    p = subprocess.run(["openssl", "s_client", "-connect", "%s:%d" % (HOST, port), "-servername", "a.test",
                        "-alpn", "h2,http/1.1"], input=b"", stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=10)
    out = p.stdout.decode("utf-8", "replace")
    check("ALPN protocol: h2" in out, "ALPN with s_client -alpn h2,http/1.1: %s" % short(out, 200))
    if OSSL:  # TLS 1.3 when the client offers it, lb's first suite
        check(re.search(r"^New, TLSv1\.3, Cipher is TLS_AES_128_GCM_SHA256", out, re.M),
              "TLS 1.3 TLS_AES_128_GCM_SHA256: %s" % short(out, 300))
        p = subprocess.run(["openssl", "s_client", "-connect", "%s:%d" % (HOST, port), "-servername", "a.test",
                            "-tls1_2"], input=b"", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
        out = p.stdout.decode("utf-8", "replace")
    check(re.search(r"Protocol *: TLSv1\.2", out) and re.search(r"Cipher *: ECDHE-ECDSA-AES128-GCM-SHA256", out),
          "TLS 1.2 ECDHE-ECDSA-AES128-GCM: %s" % short(out, 300))
    for bad in (["-tls1_1"], ["-cipher", "AES128-SHA256", "-tls1_2"], ["-cipher", "ECDHE-ECDSA-AES128-SHA", "-tls1_2"]):
        p = subprocess.run(["openssl", "s_client", "-connect", "%s:%d" % (HOST, port)] + bad, input=b"",
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
        check(p.returncode != 0, "s_client %s must fail (TLS 1.2 ECDHE+AEAD only)" % " ".join(bad))
    m.stop()


@test("proxy_header_then_tls_pipelined")
def t_proxy_tls(ctx):
    """A PROXY v1 header and the ClientHello in one segment (the handshake starts from the bytes read
    with the header), then three requests as three TLS records in one segment (lb reads ahead of what
    BearSSL asks for and feeds it from there): all three answered in order, and the server sees the
    PROXY header's client in X-Forwarded-For."""
    ca = CA(ctx.dir)
    a, _ = ca.leaf("a", "a.test", ["a.test"])
    port = free_port()
    ctx.master(conf(lsn("https", port, ("tls", "on"), ("cert", a), ("proxy_protocol", "v1"),
                        ("trusted_proxies", "127.0.0.1")), pl("p", [ctx.b["a"]]), workers=1), [port])
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = tls_ctx().wrap_bio(inc, out, server_hostname="a.test")
    raw = socket.create_connection((HOST, port), timeout=5)
    try:
        first = True
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                pending = out.read()
                if first:
                    pending = b"PROXY TCP4 192.0.2.7 127.0.0.1 5555 443\r\n" + pending
                    first = False
                if pending:
                    raw.sendall(pending)
                d = raw.recv(65536)
                if not d:
                    raise Fail("lb closed during the handshake")
                inc.write(d)
        if out.pending:
            raw.sendall(out.read())
        for path, last in (("/p0", False), ("/p1", False), ("/headers", True)):
            obj.write(("GET %s HTTP/1.1\r\nHost: a.test\r\n%s\r\n" % (path, "Connection: close\r\n" if last else ""))
                      .encode())
        raw.sendall(out.read())
        data = b""
        while True:
            try:
                chunk = obj.read(65536)
                if not chunk:
                    break
                data += chunk
            except ssl.SSLWantReadError:
                d = raw.recv(65536)
                if not d:
                    break
                inc.write(d)
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                break
    finally:
        raw.close()
    rs, rest, err = smuggle.parse_responses(data, True)
    check(err is None and not rest, "responses do not parse: %s" % err)
    eq([st for st, _, _ in rs], [200, 200, 200], "statuses of three pipelined requests")
    eq([b.decode().strip() for _, _, b in rs[:2]], ["a /p0", "a /p1"], "bodies of the first two, in order")
    eq(json.loads(rs[2][2]).get("x-forwarded-for"), "192.0.2.7", "X-Forwarded-For from the PROXY header")


@test("resumption_shared_by_workers")
def t_resume(ctx):
    """openssl s_client -reconnect reports the session as reused; lb's two workers share the cache,
    and /metrics counts lookups and hits (promtool-valid names)."""
    ca = CA(ctx.dir)
    a, _ = ca.leaf("a", "a.test", ["a.test"])
    port, ap = free_port(), free_port()
    m = ctx.master(conf(lsn("https", port, ("tls", "on"), ("cert", a)), pl("p", [ctx.b["a"]]), admin(ap),
                        workers=2), [port, ap])
    m.wait_workers(2)
    # session IDs (-no_ticket) on both builds; OpenSSL: TLS 1.2 tickets too (s_client -reconnect does not
    # wait for TLS 1.3's tickets, sent after the handshake: ticket_keys_* cover those)
    for args in [["-no_ticket"] + (["-tls1_2"] if OSSL else [])] + ([["-tls1_2"]] if OSSL else []):
        p = subprocess.run(["openssl", "s_client", "-connect", "%s:%d" % (HOST, port), "-servername", "a.test",
                            "-reconnect"] + args, input=b"", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
        out = p.stdout.decode("utf-8", "replace")
        new, reused = len(re.findall(r"^New, ", out, re.M)), len(re.findall(r"^Reused, ", out, re.M))
        eq((new, reused), (1, 5), "s_client -reconnect %s: (new, reused) handshakes" % " ".join(args))
    # many resumptions from Python (session IDs: no ticket): with two workers some land on the other one
    c = tls_ctx()
    c.maximum_version = ssl.TLSVersion.TLSv1_2  # TLS 1.3 has no session IDs
    _, _, _, first = https_get(port, ctx=c)
    reused = sum(https_get(port, ctx=c, session=first["session"])[3]["reused"] for _ in range(20))
    eq(reused, 20, "connections resuming one session over 2 workers")
    t = metrics(ap)
    check(metric(t, "lb_tls_session_cache_hits_total") >= 25, "cache hits: %s" % metric(t, "lb_tls_session_cache_hits_total"))
    check(metric(t, "lb_tls_resumed_handshakes_total") >= 25 and metric(t, "lb_tls_handshakes_total") >= 27,
          "handshakes %s resumed %s" % (metric(t, "lb_tls_handshakes_total"), metric(t, "lb_tls_resumed_handshakes_total")))
    check(metric(t, "lb_tls_resumptions_total", kind="session_id") >= 25, "resumptions by session ID: %s"
          % metric(t, "lb_tls_resumptions_total", kind="session_id"))
    if OSSL:
        check(metric(t, "lb_tls_resumptions_total", kind="ticket") >= 5, "resumptions by ticket: %s"
              % metric(t, "lb_tls_resumptions_total", kind="ticket"))
    exp = metric(t, "lb_tls_cert_expiry_seconds", listener="https")
    check(29 * 86400 < exp <= 30 * 86400, "lb_tls_cert_expiry_seconds for a 30-day cert: %s" % exp)
    p = subprocess.run(["promtool", "check", "metrics"], input=t.encode(), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=20)
    check(p.returncode == 0, "promtool check metrics: %s" % short(p.stdout.decode(), 300))
    with urllib.request.urlopen("http://%s:%d/api/stats" % (HOST, ap), timeout=5) as r:
        st = json.loads(r.read())
    eq(st["tls"]["certificates"][0]["names"], ["a.test"], "/api/stats tls.certificates[0].names")


@test("hsts_forwarded_headers_access_log")
def t_hsts(ctx):
    """hsts is sent on TLS responses (lb's own and proxied, replacing the server's); the server sees
    X-Forwarded-Proto: https and never a client's own X-Client-Cert-Subject; the JSON access log says tls, its version and cipher."""
    ca = CA(ctx.dir)
    a, _ = ca.leaf("a", "a.test", ["a.test"])
    port = free_port()
    ctx.master(conf(lsn("https", port, ("tls", "on"), ("cert", a), ("hsts", "max-age=63072000; includeSubDomains")),
                        pl("p", [ctx.b["a"]]), "[route r]\npath = /gone\nreturn = 410 gone\n", workers=1,
                        access=os.path.join(ctx.dir, "access.log")), [port])
    st, h, body, info = https_get(port, "/headers", headers=[("X-Client-Cert-Subject", "CN=forged")])
    eq(st, 200, "GET /headers over TLS")
    eq(h.get("strict-transport-security"), "max-age=63072000; includeSubDomains", "HSTS on a proxied response")
    seen = json.loads(body)
    eq(seen.get("x-forwarded-proto"), "https", "X-Forwarded-Proto at the server")
    check("x-client-cert-subject" not in seen, "a client's X-Client-Cert-Subject reached the server: %s" % seen)
    eq(info["alpn"], "http/1.1", "ALPN from Python's ssl")
    st, h, _, _ = https_get(port, "/gone")
    eq((st, h.get("strict-transport-security")), (410, "max-age=63072000; includeSubDomains"), "HSTS on lb's own answer")
    time.sleep(0.3)
    lines = [json.loads(l) for l in read(os.path.join(ctx.dir, "access.log")).splitlines() if l.strip()]
    check(lines and all(l.get("tls") is True and l.get("sni") == "a.test" for l in lines),
          "access log tls/sni fields: %s" % short(str(lines[-1:]), 300))
    eq((lines[0].get("tls_version"), lines[0].get("tls_cipher")), (info["version"], info["cipher"]),
       "access log tls_version and tls_cipher against the client's view")


@test("redirect_https_and_acme_webroot")
def t_redirect(ctx):
    """A plain listener with redirect_https answers 308 to https://host:https_port/uri?query, except the
    ACME challenge path, served from acme_webroot; traversal, encoded tricks and symlinks get 404/400."""
    web = os.path.join(ctx.dir, "webroot")
    chal = os.path.join(web, ".well-known", "acme-challenge")
    os.makedirs(chal)
    with open(os.path.join(chal, "tok-EN_123"), "w") as f:
        f.write("tok-EN_123.keyauth")
    secret = os.path.join(ctx.dir, "secret")
    with open(secret, "w") as f:
        f.write("do not serve")
    os.symlink(secret, os.path.join(chal, "linked"))
    os.chmod(ctx.dir, 0o755)
    port = free_port()
    ctx.master(conf(lsn("http", port, ("redirect_https", "on"), ("https_port", "8443"), ("acme_webroot", web)),
                    pl("p", [ctx.b["a"]]), workers=1), [port])
    r = po.raw_exchange(port, it.raw_request("/some/path?x=1&y=%20", host="Site.Test"))
    eq((r.status, r.hdr("location")), (308, "https://site.test:8443/some/path?x=1&y=%20"), "redirect")
    r = po.raw_exchange(port, it.raw_request("/up", host="site.test", method="POST", headers=[("Content-Length", "3")])
                        + b"abc")
    eq((r.status, r.hdr("location")), (308, "https://site.test:8443/up"), "POST redirect (308 keeps the method)")
    r = po.raw_exchange(port, it.raw_request("/.well-known/acme-challenge/tok-EN_123", host="site.test"))
    eq((r.status, r.body), (200, b"tok-EN_123.keyauth"), "ACME token")
    for path, want in (("/.well-known/acme-challenge/missing", 404),
                       ("/.well-known/acme-challenge/linked", 404),
                       ("/.well-known/acme-challenge/../../secret", (400, 404)),
                       ("/.well-known/acme-challenge/%2e%2e%2fsecret", (400, 404)),
                       ("/.well-known/acme-challenge/..%2Fsecret", (400, 404)),
                       ("/.well-known/acme-challenge/a.b", 404),
                       ("/.well-known/acme-challenge/", 404)):
        r = po.raw_exchange(port, it.raw_request(path, host="site.test"))
        check(r.status in (want if isinstance(want, tuple) else (want,)) and b"do not serve" not in r.body,
              "%s: status %d body %r" % (path, r.status, r.body[:60]))


@test("mtls_client_ca")
def t_mtls(ctx):
    """client_ca: a client certificate from that CA is served and its subject reaches the server and
    the access log; no certificate, or one from another CA, fails the handshake and is counted."""
    ca = CA(ctx.dir)
    other = CA(os.path.join(ctx.dir, "other"), "Other CA")
    a, _ = ca.leaf("a", "a.test", ["a.test"])
    good, _ = ca.leaf("client1", "client1", client=True)
    bad, _ = other.leaf("intruder", "intruder", client=True)
    port, ap = free_port(), free_port()
    log = os.path.join(ctx.dir, "access.log")
    m = ctx.master(conf(lsn("https", port, ("tls", "on"), ("cert", a), ("client_ca", ca.crt)),
                        pl("p", [ctx.b["a"]]), admin(ap), workers=1, access=log, fmt=None), [port, ap])
    p = subprocess.run(["curl", "-sS", "--cacert", ca.crt, "--cert", good, "--resolve", "a.test:%d:%s" % (port, HOST),
                        "https://a.test:%d/headers" % port], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=15)
    check(p.returncode == 0, "curl with a client certificate: %s" % short(p.stdout.decode(), 200))
    seen = json.loads(p.stdout)
    eq(seen.get("x-client-cert-subject"), "CN=client1,O=Test", "X-Client-Cert-Subject at the server")
    for what, extra in (("no certificate", []), ("a certificate from another CA", ["--cert", bad])):
        p = subprocess.run(["curl", "-sS", "--cacert", ca.crt, "--resolve", "a.test:%d:%s" % (port, HOST)] + extra +
                           ["https://a.test:%d/" % port], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=15)
        check(p.returncode != 0 and b"a /" not in p.stdout, "curl with %s must fail: rc %d %s"
              % (what, p.returncode, short(p.stdout.decode(), 200)))
    time.sleep(0.3)
    t = metrics(ap)
    check(metric(t, "lb_tls_handshake_failures_total", reason="client_cert") + metric(t, "lb_tls_handshake_failures_total", reason="alert") >= 2,
          "client certificate failures counted: %s" % [l for l in t.splitlines() if "failures_total{" in l])
    check("CN=client1,O=Test" in read(log), "subject in the access log: %s" % short(read(log), 300))
    check("TLS handshake failed" in m.stderr(), "handshake failures logged: %s" % m.stderr_tail())


@test("handshake_failure_reasons", timeout=40)
def t_hs_reasons(ctx):
    """Each failed handshake counted under its own reason and logged with a clear text: TLS 1.1 ->
    protocol_version, a client offering only a CBC suite or only an unsupported curve ->
    no_shared_cipher, never client_cert on a listener without client_ca; a client certificate
    from another CA on a client_ca listener -> client_cert."""
    ca = CA(ctx.dir)
    other = CA(os.path.join(ctx.dir, "other"), "Other CA")
    a, _ = ca.leaf("a", "a.test", ["a.test"])
    bad, _ = other.leaf("intruder", "intruder", client=True)
    port, mport, ap = free_port(), free_port(), free_port()
    m = ctx.master(conf(lsn("https", port, ("tls", "on"), ("cert", a)),
                        lsn("mtls", mport, ("tls", "on"), ("cert", a), ("client_ca", ca.crt)),
                        pl("p", [ctx.b["a"]]), admin(ap), workers=1), [port, mport, ap])
    reasons = ("protocol_version", "no_shared_cipher", "bad_record", "protocol", "alert", "client_cert",
               "timeout", "closed")

    def counts():
        t = metrics(ap)
        return {r: metric(t, "lb_tls_handshake_failures_total", reason=r) for r in reasons}

    cases = [(port, ["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"], "protocol_version", "does not offer TLS 1.2"),
             (port, ["-tls1_2", "-cipher", "AES128-SHA"], "no_shared_cipher", "no cipher suite in common"),
             (port, ["-tls1_2", "-curves", "X448"], "no_shared_cipher", "no elliptic curve in common"),
             (mport, ["-tls1_2", "-cert", bad, "-key", bad], "client_cert", "not signed by client_ca")]
    last = {}
    for p, args, want, text in cases:
        # the error log says each reason at most once a second (the rest are counted): space them out
        time.sleep(max(0.0, last.get(want, 0) + 1.1 - time.monotonic()))
        last[want] = time.monotonic()
        before, log_before = counts(), len(m.stderr())
        subprocess.run(["openssl", "s_client", "-connect", "%s:%d" % (HOST, p), "-servername", "a.test"] + args,
                       input=b"", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)
        deadline = time.monotonic() + 3
        while True:
            after = counts()
            delta = {r: after[r] - before[r] for r in reasons if after[r] != before[r]}
            if delta or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        eq(delta, {want: 1}, "openssl s_client %s: failures counted by reason" % " ".join(args[:2]))
        said = m.stderr()[log_before:]
        check("TLS handshake failed: " in said and text in said,
              "openssl s_client %s: the error log says %r, not %r" % (" ".join(args[:2]), short(said, 300), text))
        if p == port:
            check("client certificate" not in said, "a listener without client_ca blames a client certificate: %s"
                  % short(said, 300))
    t = metrics(ap)  # the same failures as refused connections of their listener
    for lname, n in (("https", 3), ("mtls", 1)):
        eq(metric(t, "lb_connections_refused_total", listener=lname, protocol="https", reason="tls_handshake"), n,
           "lb_connections_refused_total{listener=%s,reason=tls_handshake}" % lname)
    check(m.alive(), "lb died")


@test("cert_replaced_on_disk_and_by_sighup", timeout=60)
def t_replace(ctx):
    """Replacing the cert file under a client loop: new handshakes see the new serial without a
    SIGHUP, 0 failed requests; a corrupt replacement (by file watch and by SIGHUP) is refused with a
    log line and the old serial stays in service."""
    ca = CA(ctx.dir)
    live = os.path.join(ctx.dir, "live.pem")
    first, s1 = ca.leaf("one", "a.test", ["a.test"], serial=0x1111)
    second, s2 = ca.leaf("two", "a.test", ["a.test"], serial=0x2222)
    third, s3 = ca.leaf("three", "a.test", ["a.test"], key="rsa:2048", serial=0x3333)
    replace_file(live, read(first))
    port = free_port()
    m = ctx.master(conf(lsn("https", port, ("tls", "on"), ("cert", live)), pl("p", [ctx.b["a"]]), workers=2), [port])
    loop = Loop(port, "a.test", ca.crt)
    try:
        time.sleep(0.5)
        replace_file(live, read(second))
        deadline = time.monotonic() + 8
        while served_serial(port, "a.test")[0] != s2:
            check(time.monotonic() < deadline, "serial still %s 8 s after the file changed" % s1)
            time.sleep(0.2)
        # corrupt: a key that does not match, then garbage; each refused, s2 stays
        replace_file(live, read(third).split("-----BEGIN PRIVATE KEY")[0] + read(second)[read(second).index("-----BEGIN PRIVATE KEY"):])
        time.sleep(2.5)
        eq(served_serial(port, "a.test")[0], s2, "serial after a replacement whose key does not match")
        check("does not belong to the first certificate" in m.stderr() and "refused" in m.stderr(),
              "the refusal is logged: %s" % m.stderr_tail())
        replace_file(live, "-----BEGIN CERTIFICATE-----\nnot base64 at all\n")
        m.signal(signal.SIGHUP)
        time.sleep(2.5)
        eq(served_serial(port, "a.test")[0], s2, "serial after a corrupt file and SIGHUP")
        replace_file(live, read(third))
        m.signal(signal.SIGHUP)
        deadline = time.monotonic() + 8
        while served_serial(port, "a.test")[0] != s3:
            check(time.monotonic() < deadline, "RSA serial not served 8 s after SIGHUP")
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        loop.stop()
    eq(loop.failed[:3], [], "failed requests of the client loop (%d ok)" % loop.ok)
    check(loop.ok > 50, "client loop made only %d requests" % loop.ok)
    eq([s for s in loop.serials if s in (s1, s2, s3)][:1] + [loop.serials[-1]], [s1, s3],
       "serials seen by the loop, first and last (%s)" % loop.serials)
    check(s2 in loop.serials, "the loop never saw the second serial: %s" % loop.serials)


@test("bad_tls_clients_do_not_disturb_others", timeout=60)
def t_bad(ctx):
    """Garbage instead of a ClientHello, a handshake stalled midway, early closes, plain HTTP on the
    TLS port: each ends alone (counted, logged), while a client loop sees no failure."""
    ca = CA(ctx.dir)
    a, _ = ca.leaf("a", "a.test", ["a.test"])
    port, ap = free_port(), free_port()
    m = ctx.master(conf(lsn("https", port, ("tls", "on"), ("cert", a), ("header_timeout", "1s")),
                        pl("p", [ctx.b["a"]]), admin(ap), workers=1), [port, ap])
    loop = Loop(port, "a.test", ca.crt)
    try:
        stalled = []
        for i in range(20):
            s = socket.create_connection((HOST, port), timeout=3)
            s.sendall(os.urandom(300) if i % 4 == 0 else b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" if i % 4 == 1 else
                      bytes.fromhex("16030100a5010000a10303") + os.urandom(20))  # a ClientHello cut short
            if i % 4 == 3:
                s.close()  # early close
            else:
                stalled.append(s)
        # a clean TLS close (close_notify) from an idle client: lb answers and closes at once
        raw = socket.create_connection((HOST, port), timeout=3)
        tl = tls_ctx(ca.crt).wrap_socket(raw, server_hostname="a.test")
        t0 = time.monotonic()  # header_timeout (1 s) would end it too: what counts is how soon
        plain = tl.unwrap()
        try:
            eq(plain.recv(10), b"", "after close_notify, lb's end of the connection")
        except socket.timeout:
            raise Fail("lb kept the connection open after the client's close_notify")
        check(time.monotonic() - t0 < 0.5, "lb closed %.2f s after close_notify" % (time.monotonic() - t0))
        plain.close()
        t0 = time.monotonic()
        st, _, _, _ = https_get(port, "/while-stalled", ctx=tls_ctx(ca.crt))
        eq(st, 200, "a good client while 15 bad ones hold connections")
        check(time.monotonic() - t0 < 2, "the good client waited %.1f s" % (time.monotonic() - t0))
        time.sleep(2.5)  # header_timeout ends the stalled ones
        for s in stalled:
            s.settimeout(1)
            try:
                d = s.recv(100)
                check(not d.startswith(b"HTTP/"), "lb answered HTTP on a TLS port in clear: %r" % d[:40])
            except socket.timeout:
                raise Fail("a stalled bad client was not closed after header_timeout")
            except ConnectionResetError:
                pass
            s.close()
    finally:
        loop.stop()
    eq(loop.failed[:3], [], "client loop failures (%d ok)" % loop.ok)
    t = metrics(ap)
    fails = {k: metric(t, "lb_tls_handshake_failures_total", reason=k) for k in ("bad_record", "timeout", "closed")}
    check(fails["bad_record"] >= 5 and fails["timeout"] + fails["closed"] >= 5, "failures by reason: %s" % fails)
    check(m.alive(), "lb died")


@test("acme_renewal_pebble_certbot", timeout=150)
def t_acme(ctx):
    """pebble (HTTP-01 against lb's plain listener, redirect_https on, token from acme_webroot) and
    certbot --webroot obtain a certificate; the deploy hook installs it into lb's cert file; lb serves
    it (file watch, no SIGHUP) while a client loop sees 0 failed requests."""
    import acme
    ok, why = acme.available()
    if not ok:
        raise Skip(why)
    name = acme.DEFAULT_NAME
    ca = CA(ctx.dir)
    certdir = os.path.join(ctx.dir, "certs")
    os.makedirs(certdir)
    live = os.path.join(certdir, name + ".pem")
    boot, s0 = ca.leaf("boot", name, [name])
    replace_file(live, read(boot))
    web = os.path.join(ctx.dir, "webroot")
    os.makedirs(web)
    os.chmod(ctx.dir, 0o755)
    hp, sp = free_port(), free_port()
    m = ctx.master(conf(lsn("http", hp, ("redirect_https", "on"), ("https_port", str(sp)), ("acme_webroot", web)),
                        lsn("https", sp, ("tls", "on"), ("cert", live)), pl("p", [ctx.b["a"]]), workers=2), [hp, sp])
    peb = acme.Pebble.start(os.path.join(ctx.dir, "pebble"), hp)
    ctx.on_cleanup(peb.stop)
    loop = Loop(sp, name)
    try:
        res = acme.certbot_obtain(peb, os.path.join(ctx.dir, "cb"), name, web,
                                  deploy_hook_cmd=acme.DEPLOY_HOOK,
                                  env_extra={"LB_CERT_DIR": certdir, "LB_RELOAD_CMD": "true"}, timeout=100)
        check(res.returncode == 0, "certbot: %s" % short(res.output, 300))
        deadline = time.monotonic() + 10
        while True:
            sr, subj = served_serial(sp, name)
            if sr != s0.lstrip("0"):
                break
            check(time.monotonic() < deadline, "lb still serves the bootstrap cert 10 s after the deploy hook")
            time.sleep(0.2)
        root = peb.root_file()
        st, _, _, info = https_get(sp, "/verified", name, tls_ctx(root))
        eq(st, 200, "a client verifying against pebble's root")
        time.sleep(0.5)
    finally:
        loop.stop()
    eq(loop.failed[:3], [], "client loop failures during issuance and install (%d ok)" % loop.ok)
    check(len(loop.serials) >= 2, "the loop saw serials %s (want the bootstrap one, then pebble's)" % loop.serials)
    check("changed on disk: reloading" in m.stderr(), "the file watch did not log the change: %s" % m.stderr_tail())


@test("config_errors_name_file_line")
def t_conf(ctx):
    """lb -t on bad cert files: missing file, no key, a key of another certificate, an RSA key below
    2048 bits, a client_ca without certificates: each error gives file:line and the key."""
    ca = CA(ctx.dir)
    a, _ = ca.leaf("a", "a.test", ["a.test"])
    b, _ = ca.leaf("b", "b.test", ["b.test"])
    nokey = os.path.join(ctx.dir, "nokey.pem")
    replace_file(nokey, read(a).split("-----BEGIN PRIVATE KEY")[0])
    mixed = os.path.join(ctx.dir, "mixed.pem")
    replace_file(mixed, read(a).split("-----BEGIN PRIVATE KEY")[0] + read(b)[read(b).index("-----BEGIN PRIVATE KEY"):])
    small = os.path.join(ctx.dir, "small")
    run(["openssl", "req", "-x509", "-newkey", "rsa:1024", "-nodes", "-days", "3", "-subj", "/CN=s.test",
         "-keyout", small + ".key", "-out", small + ".crt"])
    replace_file(small + ".pem", read(small + ".crt") + read(small + ".key"))
    for cert, want in ((os.path.join(ctx.dir, "missing.pem"), "cannot read"), (nokey, "no PRIVATE KEY"),
                       (mixed, "does not belong"), (small + ".pem", "at least 2048")):
        path = os.path.join(ctx.dir, "c.ini")
        replace_file(path, "[pool p]\nserver = s 127.0.0.1:9\n[listener l]\nbind = 127.0.0.1:1\ntls = on\ncert = %s\n"
                     "pool = p\n" % cert)
        p = subprocess.run([it.LB_BIN, "-t", "-c", path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
        out = p.stdout.decode()
        check(p.returncode == 1 and ("%s:6: cert" % path) in out and want in out,
              "lb -t with %s: rc %d: %s (want %s:6 and '%s')" % (os.path.basename(cert), p.returncode, short(out, 200),
                                                                   path, want))


@test("lb_ctl_ssl_update", timeout=60)
def t_ctl_ssl(ctx):
    """lb ctl ssl update --cert --key: installs the pair atomically as the cert file naming the same
    host (the old one kept as .bak), reloads and reports the serial now served, under a client loop
    with 0 failed requests; a key of another certificate is refused and nothing changes."""
    ca = CA(ctx.dir)
    live = os.path.join(ctx.dir, "a.test.pem")
    first, s1 = ca.leaf("one", "a.test", ["a.test"], serial=0xAA01)
    _, s2 = ca.leaf("two", "a.test", ["a.test", "www.a.test"], serial=0xAA02)
    _, s3 = ca.leaf("three", "a.test", ["a.test"], serial=0xAA03)
    replace_file(live, read(first))
    tok = os.path.join(ctx.dir, "token")
    replace_file(tok, "s3cret-token-for-tests\n")
    port, ap = free_port(), free_port()
    text = conf(lsn("https", port, ("tls", "on"), ("cert", live)), pl("p", [ctx.b["a"]]),
                admin(ap) + "token_file = %s\n" % tok, workers=2)
    m = ctx.master(text, [port, ap])
    loop = Loop(port, "a.test", ca.crt)
    try:
        time.sleep(0.3)
        two = os.path.join(ctx.dir, "two")
        p = subprocess.run([it.LB_BIN, "ctl", "-c", m.conf, "ssl", "update", "--cert", two + ".crt", "--key",
                            two + ".key"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        out = p.stdout.decode()
        check(p.returncode == 0 and ("serving serial %s" % s2) in out, "lb ctl ssl update: rc %d: %s"
              % (p.returncode, short(out, 300)))
        eq(served_serial(port, "www.a.test")[0], s2, "serial served after lb ctl ssl update")
        check(os.path.exists(live + ".bak") and read(live + ".bak") == read(first), "the previous file as .bak")
        three = os.path.join(ctx.dir, "three")
        p = subprocess.run([it.LB_BIN, "ctl", "-c", m.conf, "ssl", "update", "--cert", three + ".crt", "--key",
                            two + ".key"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        out = p.stdout.decode()
        check(p.returncode == 1 and "does not belong" in out, "a key of another certificate: rc %d: %s"
              % (p.returncode, short(out, 300)))
        eq(served_serial(port, "a.test")[0], s2, "serial served after the refused update")
        time.sleep(0.3)
    finally:
        loop.stop()
    eq(loop.failed[:3], [], "client loop failures (%d ok)" % loop.ok)
    check(s3 not in loop.serials, "the refused certificate was served")


class TlsBackend:
    """An HTTPS server (Python's ssl, HTTP/1.1 keep-alive) for server ... tls: answers with the SNI
    it was given and its connection count; /health 200."""

    def __init__(self, cert_pem, key):
        import http.server
        import socketserver
        outer = self
        self.snis = []
        self.conns = 0
        self.health = 0
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert_pem, key)
        ctx.sni_callback = lambda so, name, c: outer.snis.append(name) and None

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                outer.conns += 1
                super().setup()

            def do_GET(self):
                if self.path == "/health":
                    outer.health += 1
                body = json.dumps({"path": self.path, "sni": outer.snis[-1] if outer.snis else None,
                                   "conns": outer.conns}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.srv = S((HOST, 0), H)
        self.srv.socket = ctx.wrap_socket(self.srv.socket, server_side=True)
        self.port = self.srv.server_address[1]
        self.th = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.th.start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


@test("tls_to_servers", timeout=60)
def t_upstream(ctx):
    """server ... tls: lb speaks TLS 1.2 to the server, verifies its chain against tls_ca and its name
    (tls_sni, sent as SNI), keeps the connection alive for the next request, and health-checks it
    over TLS; a server whose certificate another CA signed, or that names another host, gets 502
    with the reason in the error log."""
    ca = CA(ctx.dir)
    other = CA(os.path.join(ctx.dir, "other"), "Other CA")
    good, _ = ca.leaf("srv", "backend.test", ["backend.test"])
    bad, _ = other.leaf("rogue", "backend.test", ["backend.test"])
    b1 = TlsBackend(os.path.join(ctx.dir, "srv.crt"), os.path.join(ctx.dir, "srv.key"))
    b2 = TlsBackend(os.path.join(ctx.dir, "other", "rogue.crt"), os.path.join(ctx.dir, "other", "rogue.key"))
    ctx.on_cleanup(b1.stop)
    ctx.on_cleanup(b2.stop)
    p1, p2, p3 = free_port(), free_port(), free_port()
    text = conf(lsn("good", p1, pool="good"), lsn("rogue", p2, pool="rogue"), lsn("name", p3, pool="name"),
                "[pool good]\nserver = s1 %s:%d tls\ntls_ca = %s\ntls_sni = backend.test\nhealth_interval = 300ms\n"
                % (HOST, b1.port, ca.crt),
                "[pool rogue]\nserver = s2 %s:%d tls\ntls_ca = %s\ntls_sni = backend.test\nhealth_check = off\n"
                "retries = 0\n" % (HOST, b2.port, ca.crt),
                "[pool name]\nserver = s3 %s:%d tls\ntls_ca = %s\ntls_sni = other.test\nhealth_check = off\n"
                "retries = 0\n" % (HOST, b1.port, ca.crt), workers=1)
    m = ctx.master(text, [p1, p2, p3])
    time.sleep(1.0)
    check(b1.health >= 2, "health checks over TLS reached the server %d times in 1 s (interval 300ms)" % b1.health)
    with po.Conn(p1) as c:
        r1 = c.ask("/one")
        r2 = c.ask("/two")
    eq((r1.status, r2.status), (200, 200), "two requests through a TLS server connection")
    j1, j2 = json.loads(r1.body), json.loads(r2.body)
    eq((j1["path"], j1["sni"]), ("/one", "backend.test"), "the server saw the path and SNI tls_sni")
    eq(j2["conns"], j1["conns"], "the second request reused the server connection (connections seen)")
    r = po.raw_exchange(p2, it.raw_request("/x"))
    eq(r.status, 502, "a server whose certificate another CA signed")
    r = po.raw_exchange(p3, it.raw_request("/x"))
    eq(r.status, 502, "a server whose certificate does not name tls_sni")
    time.sleep(0.2)
    err = m.stderr()
    check("not signed by a CA of tls_ca" in err and "does not name the host" in err,
          "the reasons in the error log: %s" % short(err[-600:], 600))


@test("cert_expiry_alert")
def t_expiry(ctx):
    """A certificate within 30 days of its end: alert_command gets one cert_expiring event naming the
    listener, file, host and serial (once, not at every check), and the metric says how long is left."""
    ca = CA(ctx.dir)
    soon, ss = ca.leaf("soon", "soon.test", ["soon.test"], days=10, serial=0x50)
    later, _ = ca.leaf("later", "later.test", ["later.test"], days=90)
    alerts = os.path.join(ctx.dir, "alerts.jsonl")
    port, ap = free_port(), free_port()
    ctx.master(conf(lsn("https", port, ("tls", "on"), ("cert", later), ("cert", soon)), pl("p", [ctx.b["a"]]),
                    admin(ap), workers=1, glob={"alert_command": "cat >> %s; echo >> %s" % (alerts, alerts)}),
               [port, ap])
    deadline = time.monotonic() + 5
    while not (os.path.exists(alerts) and read(alerts).strip()):
        check(time.monotonic() < deadline, "no alert within 5 s")
        time.sleep(0.1)
    time.sleep(1.5)
    evs = [json.loads(l) for l in read(alerts).splitlines() if l.strip()]
    eq([e["kind"] for e in evs], ["cert_expiring"], "events")
    r = evs[0]["reason"]
    check("https" in r and soon in r and "soon.test" in r and ss in r and re.search(r"expires in (9|10) days", r),
          "the event's reason: %s" % r)
    t = metrics(ap)
    left = metric(t, "lb_tls_cert_expiry_seconds", name="soon.test")
    check(9 * 86400 < left <= 10 * 86400, "lb_tls_cert_expiry_seconds for soon.test: %s" % left)


# ---------------------------------------------------------------------------------------- TLS 1.3, tickets

GET_CLOSE = b"GET /sc HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"


def s_client(port, *args):
    """openssl s_client with one request (-ign_eof: it reads the answer, and a TLS 1.3 ticket before it)."""
    p = subprocess.run(["openssl", "s_client", "-connect", "%s:%d" % (HOST, port), "-servername", "a.test",
                        "-ign_eof"] + list(args), input=GET_CLOSE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=15)
    return p.returncode, p.stdout.decode("utf-8", "replace")


def bearssl_refuses(ctx, text, key, why):
    """The BearSSL build's lb -t refuses a config using an OpenSSL-only key: exit 1, naming it and why."""
    path = os.path.join(ctx.dir, "c.ini")
    replace_file(path, text)
    p = subprocess.run([it.LB_BIN, "-t", "-c", path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
    out = p.stdout.decode()
    check(p.returncode == 1 and key in out and why in out,
          "BearSSL lb -t with %s: rc %d %s" % (key, p.returncode, short(out, 300)))


def resumed(port, sess, *args):
    """Whether s_client -sess_in sess resumed (and got its answer)."""
    _, out = s_client(port, "-sess_in", sess, *args)
    check("HTTP/1.1 200" in out, "no answer with -sess_in: %s" % short(out, 300))
    return bool(re.search(r"^Reused, ", out, re.M))


def ka_exchange(s, req):
    """One request on a kept-alive TLS socket: (status, body), the body read to its Content-Length."""
    s.sendall(req)
    data = b""
    while b"\r\n\r\n" not in data:
        got = s.recv(65536)
        if not got:
            raise Fail("connection closed before an answer's head")
        data += got
    head, _, body = data.partition(b"\r\n\r\n")
    n = int(re.search(rb"(?im)^content-length:\s*(\d+)", head).group(1))
    while len(body) < n:
        got = s.recv(65536)
        if not got:
            raise Fail("connection closed after %d of %d body bytes" % (len(body), n))
        body += got
    return int(head.split(b" ", 2)[1]), body


@test("idle_tls_connections_hold_no_record_buffer", timeout=90)
def t_idle_tls_memory(ctx):
    """300 TLS keep-alive connections, one request each, then idle: the worker's memory (Pss) grows by less
    than a bound per connection. BearSSL (12 KB): an idle connection lends its 33 KB record buffer back to
    the worker's pool and the client-certificate check is allocated only with client_ca (about 5.4 KB each
    here; 19-20 KB before). OpenSSL (17.5 KB, TLS 1.3): the SSL sits on lb's socket BIO (no memory BIOs
    keeping the largest flight's buffers) and a TLS 1.3 session is not copied into the session-ID cache
    (~15 KB here, 19.7 KB before, most of it OpenSSL's SSL object). Then every connection is used again,
    each taking some buffer: a 200 KB download and a 100 KB echo on every tenth, a small GET on the others;
    every answer must be whole. The ASan build checks the second half only (its allocator's redzones and
    quarantine make the memory figure meaningless)."""
    ca = CA(ctx.dir)
    a, _ = ca.leaf("a", "a.test", ["a.test"])
    port = free_port()
    m = ctx.master(conf(lsn("https", port, ("tls", "on"), ("cert", a)), pl("p", [ctx.b["a"]]), workers=1), [port])
    w = m.wait_workers(1)[0]
    asan = "asan" in os.path.basename(it.LB_BIN)
    limit = 17500 if OSSL else 12000
    for s in tls_keepalive(port, 30):  # warm: code pages, the allocator's arenas, the backend connection
        s.close()
    time.sleep(0.3)
    before = pss_kb(w)
    socks = tls_keepalive(port, 300)
    try:
        time.sleep(1.5)
        per = (pss_kb(w) - before) * 1024 // len(socks)
        if not asan:
            check(per < limit, "%d bytes resident per idle TLS connection (bound %d, %s build)" % (per, limit, TLS_LIB))
        body = os.urandom(100000)
        for i, s in enumerate(socks):
            if i % 10:
                st, got = ka_exchange(s, b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
                eq(st, 200, "small request after idling")
                continue
            st, got = ka_exchange(s, b"GET /bytes?n=200000 HTTP/1.1\r\nHost: a.test\r\n\r\n")
            check(st == 200 and got == bytes(i % 256 for i in range(200000)), "200 KB download after idling")
            st, got = ka_exchange(s, b"POST /echo HTTP/1.1\r\nHost: a.test\r\nContent-Length: 100000\r\n\r\n" + body)
            check(st == 200 and got == body, "100 KB echo after idling: status %d, %d bytes" % (st, len(got)))
    finally:
        for s in socks:
            s.close()
    check(m.alive() and w in m.workers(), "the worker died")


@test("tls13_s_client")
def t_tls13(ctx):
    """openssl s_client -tls1_3: TLS 1.3 and an answer on the OpenSSL build, counted by suite; on the BearSSL
    build (no TLS 1.3) the handshake fails cleanly, is counted, and lb keeps serving TLS 1.2."""
    ca = CA(ctx.dir)
    a, _ = ca.leaf("a", "a.test", ["a.test"])
    port, ap = free_port(), free_port()
    m = ctx.master(conf(lsn("https", port, ("tls", "on"), ("cert", a)), pl("p", [ctx.b["a"]]), admin(ap), workers=1),
                   [port, ap])
    rc, out = s_client(port, "-tls1_3")
    t = metrics(ap)
    if OSSL:
        check(rc == 0 and re.search(r"^New, TLSv1\.3, Cipher is TLS_AES_128_GCM_SHA256", out, re.M)
              and "HTTP/1.1 200" in out, "s_client -tls1_3: rc %d %s" % (rc, short(out, 400)))
        eq(metric(t, "lb_tls_handshakes_by_suite_total", version="TLSv1.3", cipher="TLS_AES_128_GCM_SHA256"), 1,
           "TLS 1.3 handshakes counted by suite")
    else:
        check(rc != 0 and "HTTP/1.1" not in out, "s_client -tls1_3 must fail on BearSSL: %s" % short(out, 300))
        check(metric(t, "lb_tls_handshake_failures_total") >= 1, "the refused TLS 1.3 handshake is counted")
    rc, out = s_client(port, "-tls1_2")
    check(rc == 0 and "HTTP/1.1 200" in out, "s_client -tls1_2: %s" % short(out, 300))
    eq(metric(metrics(ap), "lb_tls_handshakes_by_suite_total", version="TLSv1.2",
              cipher="TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"), 1, "TLS 1.2 handshakes counted by suite")
    check(m.alive(), "lb died")


@test("tls13_resumption_renews_the_ticket")
def t_tls13_renew(ctx):
    """OpenSSL build: a resumed TLS 1.3 handshake gets a new ticket (RFC 8446 C.4: a client uses a 1.3
    ticket once; without a new one its next connection is a full handshake), and that ticket resumes.
    BearSSL build: no TLS 1.3, nothing to check beyond tls13_s_client."""
    if not OSSL:
        raise Skip("the BearSSL build has no TLS 1.3 (tls13_s_client checks the refusal)")
    ca = CA(ctx.dir)
    a, _ = ca.leaf("a", "a.test", ["a.test"])
    port = free_port()
    ctx.master(conf(lsn("https", port, ("tls", "on"), ("cert", a)), pl("p", [ctx.b["a"]]), workers=1), [port])
    s1, s2 = os.path.join(ctx.dir, "s1.pem"), os.path.join(ctx.dir, "s2.pem")
    rc, out = s_client(port, "-tls1_3", "-sess_out", s1)
    check(rc == 0 and "New Session Ticket arrived" in out, "full handshake: no ticket: %s" % short(out, 300))
    rc, out = s_client(port, "-tls1_3", "-sess_in", s1, "-sess_out", s2)
    check(re.search(r"^Reused, TLSv1\.3", out, re.M), "the first ticket did not resume: %s" % short(out, 300))
    check("New Session Ticket arrived" in out, "a resumed TLS 1.3 handshake got no new ticket: %s" % short(out, 400))
    check(resumed(port, s2, "-tls1_3"), "the renewed ticket did not resume")


@test("ticket_keys_shared_reload_rotation", timeout=60)
def t_tickets(ctx):
    """OpenSSL build: a TLS 1.3 ticket (-sess_out) resumes (-sess_in) on both workers, after a SIGHUP
    reload and on a second lb process sharing tls_ticket_keys; after a rotation (new key first, old kept)
    it still resumes, once the old key is gone it does not, and a new ticket does; a file of a wrong size
    is refused and the keys stay. A TLS 1.2 ticket too. BearSSL build: tls_ticket_keys is refused."""
    ca = CA(ctx.dir)
    a, _ = ca.leaf("a", "a.test", ["a.test"])
    keys = os.path.join(ctx.dir, "ticket.key")
    k1, k2 = os.urandom(80), os.urandom(80)
    with open(keys, "wb") as f:
        f.write(k1)
    p1, p2, ap = free_port(), free_port(), free_port()
    text1 = conf(lsn("https", p1, ("tls", "on"), ("cert", a)), pl("p", [ctx.b["a"]]), admin(ap), workers=2,
                 glob={"tls_ticket_keys": keys})
    if not OSSL:
        bearssl_refuses(ctx, text1, "tls_ticket_keys", "no session tickets")
        return
    m = ctx.master(text1, [p1, ap])
    m.wait_workers(2)
    ctx.master(conf(lsn("https", p2, ("tls", "on"), ("cert", a)), pl("p", [ctx.b["a"]]), workers=1,
                    glob={"tls_ticket_keys": keys}), [p2], tag="lb2")
    s1, s12 = os.path.join(ctx.dir, "s1"), os.path.join(ctx.dir, "s12")
    _, out = s_client(p1, "-tls1_3", "-sess_out", s1)
    check(re.search(r"^New, TLSv1\.3", out, re.M) and os.path.getsize(s1) > 0, "first TLS 1.3 handshake: %s" % short(out, 300))
    _, out = s_client(p1, "-tls1_2", "-sess_out", s12)
    eq([resumed(p1, s1) for _ in range(6)], [True] * 6, "a TLS 1.3 ticket over 2 workers")
    eq([resumed(p1, s12, "-tls1_2") for _ in range(3)], [True] * 3, "a TLS 1.2 ticket")
    check(resumed(p2, s1), "a ticket of lb 1 at lb 2 (the same tls_ticket_keys)")
    m.signal(signal.SIGHUP)
    time.sleep(1.5)
    check(resumed(p1, s1), "a ticket after a SIGHUP reload")
    with open(keys + ".tmp", "wb") as f:  # rotation: the new key seals, the old one still opens
        f.write(k2 + k1)
    os.replace(keys + ".tmp", keys)
    time.sleep(2.2)
    check(resumed(p1, s1), "a ticket of the old key after a rotation (old key kept)")
    s2 = os.path.join(ctx.dir, "s2")
    s_client(p1, "-tls1_3", "-sess_out", s2)
    with open(keys + ".tmp", "wb") as f:
        f.write(k2)
    os.replace(keys + ".tmp", keys)
    time.sleep(2.2)
    check(not resumed(p1, s1), "a ticket of a key no longer in the file must not resume")
    check(resumed(p1, s2), "a ticket of the new key")
    with open(keys + ".tmp", "wb") as f:
        f.write(k1[:79])
    os.replace(keys + ".tmp", keys)
    time.sleep(2.2)
    check("80 bytes per key" in m.stderr(), "the refused file is logged: %s" % m.stderr_tail())
    check(resumed(p1, s2), "after a refused file the keys in use stay")
    t = metrics(ap)
    check(metric(t, "lb_tls_resumptions_total", kind="ticket") >= 11, "ticket resumptions: %s"
          % metric(t, "lb_tls_resumptions_total", kind="ticket"))


@test("ticket_keys_rotate_on_schedule", timeout=40)
def t_rotate(ctx):
    """OpenSSL build without tls_ticket_keys: a ticket resumes after one tls_ticket_rotate (the old key is
    kept), not after five (only 4 kept). BearSSL build: no tickets, the session-ID cache resumes instead."""
    ca = CA(ctx.dir)
    a, _ = ca.leaf("a", "a.test", ["a.test"])
    port = free_port()
    ctx.master(conf(lsn("https", port, ("tls", "on"), ("cert", a)), pl("p", [ctx.b["a"]]), workers=1,
                    glob={"tls_ticket_rotate": "1s"}), [port])
    s = os.path.join(ctx.dir, "s")
    if not OSSL:
        _, out = s_client(port, "-sess_out", s)
        check(resumed(port, s), "BearSSL: a session ID resumes")
        _, out = s_client(port, "-sess_out", s + "t")
        check("TLS session ticket:" not in out, "BearSSL sent a ticket: %s" % short(out, 300))
        return
    s_client(port, "-tls1_3", "-sess_out", s)
    time.sleep(1.6)
    check(resumed(port, s), "a ticket after one rotation")
    time.sleep(5)
    check(not resumed(port, s), "a ticket 5 rotations old must not resume (4 keys kept)")


def ocsp_response(ca, leaf_crt, out, expired=False):
    """A DER OCSP response "good" for leaf_crt signed by ca: by `openssl ocsp` (an index file and a
    request), or, expired (nextUpdate yesterday), built with Python's cryptography."""
    if not expired:
        serial = run(["openssl", "x509", "-in", leaf_crt, "-noout", "-serial"]).strip().split("=")[1]
        subj = run(["openssl", "x509", "-in", leaf_crt, "-noout", "-subject", "-nameopt", "compat"]).strip()[8:]
        idx = out + ".index"
        with open(idx, "w") as f:
            f.write("V\t%s\t\t%s\tunknown\t%s\n" % (time.strftime("%y%m%d%H%M%SZ", time.gmtime(time.time() + 86400 * 30)),
                                                 serial, subj))
        run(["openssl", "ocsp", "-issuer", ca.crt, "-cert", leaf_crt, "-no_nonce", "-reqout", out + ".req"])
        run(["openssl", "ocsp", "-index", idx, "-CA", ca.crt, "-rsigner", ca.crt, "-rkey", ca.key, "-reqin",
             out + ".req", "-respout", out, "-ndays", "1"])
        return out
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509 import ocsp
    load = lambda p: x509.load_pem_x509_certificate(open(p, "rb").read())
    cert, issuer = load(leaf_crt), load(ca.crt)
    key = serialization.load_pem_private_key(open(ca.key, "rb").read(), None)
    now = datetime.datetime.now(datetime.timezone.utc)
    b = ocsp.OCSPResponseBuilder().add_response(
        cert=cert, issuer=issuer, algorithm=hashes.SHA1(), cert_status=ocsp.OCSPCertStatus.GOOD,
        this_update=now - datetime.timedelta(days=3), next_update=now - datetime.timedelta(days=1),
        revocation_time=None, revocation_reason=None).responder_id(ocsp.OCSPResponderEncoding.HASH, issuer)
    with open(out, "wb") as f:
        f.write(b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))
    return out


def stapled(port):
    p = subprocess.run(["openssl", "s_client", "-connect", "%s:%d" % (HOST, port), "-servername", "a.test", "-status"],
                       input=b"", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
    out = p.stdout.decode("utf-8", "replace")
    check("CONNECTED" in out and "Certificate chain" in out, "s_client -status: %s" % short(out, 300))
    return "OCSP Response Status: successful" in out and "Cert Status: good" in out


@test("ocsp_stapling", timeout=60)
def t_ocsp(ctx):
    """OpenSSL build: ocsp = FILE (made with openssl ocsp and our own CA) is stapled for s_client -status,
    its age is a metric; replaced on disk by an expired response, or one for another certificate, it is
    no longer stapled (and the log says why); a good one again is. BearSSL build: ocsp is refused."""
    ca = CA(ctx.dir)
    a, _ = ca.leaf("a", "a.test", ["a.test"])
    ca.leaf("b", "b.test", ["b.test"])
    live = os.path.join(ctx.dir, "live.der")
    port, ap = free_port(), free_port()
    good = ocsp_response(ca, os.path.join(ctx.dir, "a.crt"), os.path.join(ctx.dir, "good.der"))
    text = conf(lsn("https", port, ("tls", "on"), ("cert", a), ("ocsp", live)), pl("p", [ctx.b["a"]]), admin(ap),
                workers=1)
    with open(good, "rb") as f:
        data = f.read()
    with open(live, "wb") as f:
        f.write(data)
    if not OSSL:
        bearssl_refuses(ctx, text, "ocsp", "no OCSP stapling")
        return
    m = ctx.master(text, [port, ap])
    check(stapled(port), "a good response is stapled")
    age = metric(metrics(ap), "lb_tls_ocsp_response_age_seconds", listener="https")
    check(0 <= age < 300, "lb_tls_ocsp_response_age_seconds: %s" % age)
    for what, der, note in (
            ("expired", ocsp_response(ca, os.path.join(ctx.dir, "a.crt"), os.path.join(ctx.dir, "old.der"), True),
             "expired"),
            ("for another certificate", ocsp_response(ca, os.path.join(ctx.dir, "b.crt"), os.path.join(ctx.dir, "b.der")),
             "not for this certificate")):
        with open(der, "rb") as f:
            data = f.read()
        with open(live + ".tmp", "wb") as f:
            f.write(data)
        os.replace(live + ".tmp", live)
        deadline = time.monotonic() + 8
        while note not in m.stderr():  # the file watch reloads it and says why it is not stapled
            check(time.monotonic() < deadline, "no log line %r 8 s after the file changed: %s" % (note, m.stderr_tail()))
            time.sleep(0.3)
        time.sleep(0.5)  # the new generation's workers take over
        check(not stapled(port), "a response %s is stapled" % what)
    with open(good, "rb") as f:
        data = f.read()
    with open(live + ".tmp", "wb") as f:
        f.write(data)
    os.replace(live + ".tmp", live)
    deadline = time.monotonic() + 8
    while not stapled(port):
        check(time.monotonic() < deadline, "the good response is not stapled again 8 s after the file changed")
        time.sleep(0.3)


@test("testssl_json", timeout=150)
def t_testssl(ctx):
    """testssl.sh (-p -S -U, JSON) on a TLS listener with a certificate of our own CA (--add-ca): SSLv2, SSLv3,
    TLS 1.0 and 1.1 not offered, TLS 1.2 offered, no finding HIGH or CRITICAL; OpenSSL build: TLS 1.3
    offered, session tickets, OCSP stapling offered (a response from openssl ocsp); BearSSL build: TLS 1.3
    and OCSP stapling not offered, resumption by session ID."""
    ca = CA(ctx.dir, days=400)
    a, _ = ca.leaf("l", "localhost", ["localhost"], days=200, ocsp_uri="http://127.0.0.1:9/")
    port = free_port()
    extra = (("ocsp", ocsp_response(ca, os.path.join(ctx.dir, "l.crt"), os.path.join(ctx.dir, "l.der"))),) if OSSL else ()
    ctx.master(conf(lsn("https", port, ("tls", "on"), ("cert", a), *extra), pl("p", [ctx.b["a"]]), workers=1), [port])
    out = os.path.join(ctx.dir, "testssl.json")
    p = subprocess.run(["testssl", "--quiet", "--color", "0", "--warnings", "off", "--ip", HOST, "--add-ca", ca.crt,
                        "-p", "-S", "-U", "--jsonfile", out, "https://localhost:%d/" % port],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=140)
    check(os.path.exists(out), "testssl wrote no JSON: %s" % short(p.stdout.decode("utf-8", "replace"), 300))
    with open(out) as f:
        found = {x["id"]: x for x in json.load(f)}
    fnd = lambda k: found.get(k, {}).get("finding", "(missing)")
    for k in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
        eq(fnd(k), "not offered", "testssl " + k)
    check(fnd("TLS1_2").startswith("offered"), "testssl TLS1_2: %s" % fnd("TLS1_2"))
    check("http/1.1" in fnd("ALPN"), "testssl ALPN: %s" % fnd("ALPN"))
    if OSSL:
        check(fnd("TLS1_3").startswith("offered"), "testssl TLS1_3: %s" % fnd("TLS1_3"))
        check("valid for" in fnd("TLS_session_ticket"), "testssl TLS_session_ticket: %s" % fnd("TLS_session_ticket"))
        eq(fnd("OCSP_stapling"), "offered", "testssl OCSP_stapling")
    else:
        check(fnd("TLS1_3").startswith("not offered"), "testssl TLS1_3 (BearSSL has none): %s" % fnd("TLS1_3"))
        eq(fnd("OCSP_stapling"), "not offered", "testssl OCSP_stapling (BearSSL has none)")
        eq(fnd("sessionresumption_ID"), "supported", "testssl sessionresumption_ID")
    bad = ["%s %s: %s" % (x["id"], x["severity"], x["finding"]) for x in found.values()
           if x.get("severity") in ("HIGH", "CRITICAL")]
    eq(bad, [], "testssl findings HIGH or CRITICAL")


def pss_kb(pid):
    """The process's proportional set size in KB (/proc/PID/smaps_rollup)."""
    with open("/proc/%d/smaps_rollup" % pid) as f:
        return int(re.search(r"^Pss:\s+(\d+) kB", f.read(), re.M).group(1))


def tls_keepalive(port, n, get=True):
    """n TLS 1.3 connections, each with one keep-alive request answered, left open."""
    c = tls_ctx()
    socks = []
    for _ in range(n):
        s = c.wrap_socket(socket.create_connection((HOST, port), timeout=5), server_hostname="a.test")
        socks.append(s)
        if get:
            s.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
            data = b""
            while not data.endswith(b"\n") or b"\r\n\r\n" not in data:
                d = s.recv(4096)
                if not d:
                    raise Fail("lb closed a keep-alive connection")
                data += d
    return socks


@test("tls_big_answer_to_a_slow_reader")
def t_slow_reader(ctx):
    """An 8 MB answer to a client that reads nothing for a second, then slowly: the records the socket does
    not take wait in lb (bounded; lb stops reading the server meanwhile) and arrive whole and in order."""
    ca = CA(ctx.dir)
    a, _ = ca.leaf("a", "a.test", ["a.test"])
    port = free_port()
    m = ctx.master(conf(lsn("https", port, ("tls", "on"), ("cert", a)), pl("p", [ctx.b["a"]]), workers=1), [port])
    n = 8 << 20
    raw = socket.create_connection((HOST, port), timeout=10)
    s = tls_ctx().wrap_socket(raw, server_hostname="a.test")
    try:
        s.sendall(b"GET /bytes?n=%d HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n" % n)
        time.sleep(1)
        data = bytearray()
        while True:
            d = s.recv(16384)
            if not d:
                break
            data += d
            if len(data) < (2 << 20):
                time.sleep(0.0005)
    except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
        pass
    finally:
        s.close()
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    check(head.startswith(b"HTTP/1.1 200"), "status: %r" % head[:60])
    eq(len(body), n, "body length")
    pattern = bytes(range(256)) * (n // 256)
    check(body == pattern, "body bytes differ from the backend's pattern")
    check(m.alive(), "lb died")

def run_suite(all_tests, label, budget, file_name):
    it.run_suite(all_tests, label, budget, file_name, pr.Ctx, [("a", "http")], cleanup_timeout=20)


if __name__ == "__main__":
    run_suite(TESTS, "tls", SUITE_BUDGET, __file__)
