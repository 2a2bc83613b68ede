#!/usr/bin/env python3
"""Differential request-smuggling test for lb: ambiguous requests in, exact bytes recorded behind lb.

    python3 tests/smuggle.py [--only SUBSTR] [--verbose] [--keep]

The lb binary is $LB_BIN (default ./lb, relative to the repository root). One lb (workers = 1) is
started from a generated config with LANES listeners on free loopback ports; listener i forwards to
pool i, whose only server is recording backend i, a small threaded TCP server inside this script
that keeps the exact bytes it receives on every connection and parses them with a strict RFC 9112
parser: request-line, field lines (CRLF only, no bare CR/LF, no NUL, no obs-fold, token names),
exactly one Host in HTTP/1.1, and body framing that is exactly one of Content-Length (one field
line, 1*DIGIT) or chunked (Transfer-Encoding whose last coding is chunked, not in HTTP/1.0, never
with Content-Length; chunk sizes 1*HEXDIG, chunk extensions per the ABNF with quoted strings,
CRLF after each chunk, trailer fields as field lines). Each request it can parse gets a small
200 response carrying `X-Rec: <lane>-<n>`; anything else is a violation: it is recorded and the
connection is closed after a 400.

Each case sends its bytes on a new client connection to one lane (lanes run in parallel, cases in a
lane one after the other, so every backend connection belongs to one case at a time), reads every
response until lb closes or goes quiet, then waits for the lane's backend connections to settle.
The property, for every case:
  - no violation: every request the backend received is well-formed under strict framing, and its
    framing (Content-Length or chunked, exactly one) matches the bytes lb forwarded: what is left
    on a backend connection after a request is the start of the next request, never stray bytes;
  - no hidden request: the number of complete requests the backend parsed equals the number of
    responses with X-Rec the client received, and each X-Rec arrives exactly once;
  - every response lb made itself (no X-Rec) is a 4xx/5xx status line;
  - what is left unparsed on a backend connection when lb closes it (lb streams bodies, so a body
    refused half-way leaves its head and a prefix behind) is a valid head with an incomplete body,
    never a partial or invalid head: a request refused for its head never reaches the backend.
Control cases (valid requests) must also be forwarded, so a harness where lb refuses everything
cannot pass. One line per case: "PASS name" or "FAIL name: reason"; then "smuggle: N passed, N
failed"; exit status 1 when any case failed.
"""
import argparse
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import integration as it  # noqa: E402
from integration import HOST, free_port, short  # noqa: E402

ROOT = it.ROOT
LB_BIN = it.LB_BIN
LANES = 4
SUITE_BUDGET = 50.0   # seconds for all cases; the whole run stays under ~60 s
CASE_BUDGET = 6.0     # one case: send, read, settle
QUIET = 0.5           # the client stops reading after this long without a byte
FIRST_BYTE = 1.2      # ... or this long when nothing at all came back
SETTLE = 1.5          # bound on waiting for the lane's backend connections to settle

TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
VALUE_OK = frozenset([9] + list(range(0x20, 0x7f)) + list(range(0x80, 0x100)))
QDTEXT = frozenset([9, 0x20, 0x21] + list(range(0x23, 0x5c)) + list(range(0x5d, 0x7f)) + list(range(0x80, 0x100)))
QPAIR = frozenset([9, 0x20] + list(range(0x21, 0x7f)) + list(range(0x80, 0x100)))
HEX = frozenset(b"0123456789abcdefABCDEF")
REQ_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP/1\.([01])\Z")
HOST_RE = re.compile(rb"(?:[A-Za-z0-9\-._~!$&'()*+,;=%]*|\[[0-9A-Fa-f:.]+\])(?::[0-9]*)?\Z")
BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")
MAX_HEAD = 65536
MAX_BODY = 1 << 20


class Violation(Exception):
    pass


# ---------------------------------------------------------------------------------- strict parser

def field_line(line, what):
    """name ":" OWS value OWS; returns (lower-case name, value)."""
    name, sep, rest = line.partition(b":")
    if not sep or not name or any(c not in TCHAR for c in name):
        raise Violation("%s is not a field line: %s" % (what, short(line, 80)))
    value = rest.strip(b" \t")
    bad = [c for c in value if c not in VALUE_OK]
    if bad:
        raise Violation("%s has a control byte 0x%02x in its value: %s" % (what, bad[0], short(line, 80)))
    return name.lower(), value


def list_elements(values):
    out = []
    for v in values:
        for el in v.split(b","):
            out.append(el.strip(b" \t"))
    return out


def parse_head(buf):
    """None when the head is incomplete; else a dict. Raises Violation."""
    end = buf.find(b"\r\n\r\n")
    region = bytes(buf[:end + 4] if end >= 0 else buf)
    check = region[:-1] if end < 0 and region.endswith(b"\r") else region
    m = BARE.search(check)
    if m:
        raise Violation("bare %s at offset %d of the head" % ("CR" if m.group(0) == b"\r" else "LF", m.start()))
    if b"\x00" in check:
        raise Violation("NUL in the head")
    if end < 0:
        if len(buf) > MAX_HEAD:
            raise Violation("head longer than %d bytes" % MAX_HEAD)
        return None
    lines = region[:end].split(b"\r\n")
    m = REQ_LINE.match(lines[0])
    if not m:
        raise Violation("invalid request-line %s" % short(lines[0], 80))
    method, target, minor = m.group(1), m.group(2), int(m.group(3))
    if target == b"*":
        if method != b"OPTIONS":
            raise Violation("asterisk-form with %r" % method)
    elif method == b"CONNECT":
        pass
    elif not (target.startswith(b"/") or target.lower().startswith((b"http://", b"https://"))):
        raise Violation("request-target %s is not origin- or absolute-form" % short(target, 60))
    headers = []
    for ln in lines[1:]:
        if ln[:1] in (b" ", b"\t"):
            raise Violation("obs-fold / whitespace before a field line: %s" % short(ln, 80))
        headers.append(field_line(ln, "header"))

    def get(n):
        return [v for k, v in headers if k == n]

    hosts = get(b"host")
    if minor == 1 and len(hosts) != 1:
        raise Violation("%d Host field lines in an HTTP/1.1 request" % len(hosts))
    for h in hosts:
        if not HOST_RE.match(h):
            raise Violation("invalid Host value %s" % short(h, 60))
    te, cl = get(b"transfer-encoding"), get(b"content-length")
    framing, length = "none", 0
    if te:
        if minor == 0:
            raise Violation("Transfer-Encoding in an HTTP/1.0 request")
        if cl:
            raise Violation("both Transfer-Encoding and Content-Length")
        codings = list_elements(te)
        if any(not c or any(x not in TCHAR for x in c) for c in codings):
            raise Violation("malformed Transfer-Encoding list %s" % short(b", ".join(te), 60))
        low = [c.lower() for c in codings]
        if low[-1] != b"chunked" or low.count(b"chunked") != 1:
            raise Violation("Transfer-Encoding %s does not end in one chunked" % short(b", ".join(te), 60))
        framing = "chunked"
    elif cl:
        if len(cl) != 1:
            raise Violation("%d Content-Length field lines (%s)" % (len(cl), b" | ".join(cl).decode("latin-1")))
        if not re.match(rb"[0-9]{1,12}\Z", cl[0]):
            raise Violation("invalid Content-Length %s" % short(cl[0], 40))
        length = int(cl[0])
        if length > MAX_BODY:
            raise Violation("Content-Length %d above the recorder's bound" % length)
        framing = "cl"
    conn = [c.lower() for c in list_elements(get(b"connection"))]
    if minor == 1:
        keep = b"close" not in conn
    else:
        keep = b"keep-alive" in conn and b"close" not in conn
    return {"end": end + 4, "method": method, "target": target, "minor": minor, "headers": headers,
            "framing": framing, "length": length, "keep": keep}


def check_ext(ext):
    """chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ( token / quoted-string ) ] )"""
    i, n = 0, len(ext)

    def bws(i):
        while i < n and ext[i] in (9, 32):
            i += 1
        return i

    def token(i):
        s = i
        while i < n and ext[i] in TCHAR:
            i += 1
        if i == s:
            raise Violation("chunk extension: token expected at %d in %s" % (s, short(ext, 60)))
        return i

    while i < n:
        i = bws(i)
        if i >= n or ext[i] != ord(";"):
            raise Violation("chunk extension: ';' expected at %d in %s" % (i, short(ext, 60)))
        i = token(bws(i + 1))
        j = bws(i)
        if j < n and ext[j] == ord("="):
            i = bws(j + 1)
            if i < n and ext[i] == ord('"'):
                i += 1
                while True:
                    if i >= n:
                        raise Violation("chunk extension: unterminated quoted-string in %s" % short(ext, 60))
                    c = ext[i]
                    if c == ord('"'):
                        i += 1
                        break
                    if c == ord("\\"):
                        if i + 1 >= n or ext[i + 1] not in QPAIR:
                            raise Violation("chunk extension: bad quoted-pair in %s" % short(ext, 60))
                        i += 2
                    elif c in QDTEXT:
                        i += 1
                    else:
                        raise Violation("chunk extension: byte 0x%02x in a quoted-string" % c)
            else:
                i = token(i)


def parse_chunked(buf, pos):
    """None when incomplete; else (end, body). Raises Violation."""
    body = bytearray()
    while True:
        eol = buf.find(b"\r\n", pos)
        line = bytes(buf[pos:eol] if eol >= 0 else buf[pos:])
        chk = line[:-1] if eol < 0 and line.endswith(b"\r") else line
        if BARE.search(chk) or b"\r" in chk:
            raise Violation("bare CR or LF in a chunk-size line %s" % short(line, 60))
        if eol < 0:
            if len(line) > 8192:
                raise Violation("chunk-size line longer than 8192 bytes")
            return None
        d = 0
        while d < len(line) and line[d] in HEX:
            d += 1
        if d == 0 or d > 16:
            raise Violation("invalid chunk-size %s" % short(line, 60))
        size = int(line[:d], 16)
        check_ext(line[d:])
        pos = eol + 2
        if size == 0:
            break
        if size > MAX_BODY or len(body) + size > MAX_BODY:
            raise Violation("chunk of %d bytes above the recorder's bound" % size)
        if len(buf) < pos + size + 2:
            if len(buf) > pos + size and buf[pos + size:pos + size + 1] != b"\r":
                raise Violation("chunk data not followed by CRLF")
            return None
        if buf[pos + size:pos + size + 2] != b"\r\n":
            raise Violation("chunk data not followed by CRLF: %s" % short(bytes(buf[pos + size:pos + size + 8])))
        body += buf[pos:pos + size]
        pos += size + 2
    while True:  # trailer section
        eol = buf.find(b"\r\n", pos)
        line = bytes(buf[pos:eol] if eol >= 0 else buf[pos:])
        chk = line[:-1] if eol < 0 and line.endswith(b"\r") else line
        if BARE.search(chk) or b"\r" in chk or b"\x00" in chk:
            raise Violation("bare CR/LF or NUL in the trailer section %s" % short(line, 60))
        if eol < 0:
            if len(line) > 8192:
                raise Violation("trailer line longer than 8192 bytes")
            return None
        pos = eol + 2
        if not line:
            return pos, bytes(body)
        if line[:1] in (b" ", b"\t"):
            raise Violation("obs-fold in the trailer section: %s" % short(line, 60))
        field_line(line, "trailer line")


def parse_request(buf):
    """None when incomplete, else (request dict, bytes used). Raises Violation."""
    h = parse_head(buf)
    if h is None:
        return None
    if h["framing"] == "cl":
        if len(buf) < h["end"] + h["length"]:
            return None
        h["body"] = bytes(buf[h["end"]:h["end"] + h["length"]])
        return h, h["end"] + h["length"]
    if h["framing"] == "chunked":
        r = parse_chunked(buf, h["end"])
        if r is None:
            return None
        h["body"] = r[1]
        return h, r[0]
    h["body"] = b""
    return h, h["end"]


# ---------------------------------------------------------------------------------- recording backend

class BConn:
    def __init__(self, cid, sock):
        self.id, self.sock = cid, sock
        self.buf = bytearray()   # bytes received and not yet parsed into a request
        self.raw = bytearray()   # everything received
        self.open = True


class Recorder:
    """A threaded TCP server that records the bytes of every connection and answers each strictly
    parsed request with a fixed small response carrying X-Rec."""

    def __init__(self, lane):
        self.lane = lane
        self.lock = threading.Lock()
        self.events = []         # (kind, conn id, detail)
        self.conns = []
        self.nreq = 0
        self.stop = False
        self.ls = it.listen_socket(64)
        self.ls.settimeout(0.2)
        self.port = self.ls.getsockname()[1]
        self.thread = threading.Thread(target=self.accept_loop, daemon=True)
        self.thread.start()

    def accept_loop(self):
        while not self.stop:
            try:
                s, _ = self.ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            s.settimeout(0.2)
            with self.lock:
                c = BConn(len(self.conns), s)
                self.conns.append(c)
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        try:
            while not self.stop:
                try:
                    d = c.sock.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    d = b""
                with self.lock:
                    if not d:
                        if c.buf:
                            self.events.append(("residue", c.id, bytes(c.buf)))
                        c.open = False
                        return
                    c.buf += d
                    c.raw += d
                    keep, out = self.consume(c)
                if out:
                    try:
                        c.sock.sendall(out)
                    except OSError:
                        keep = False
                if not keep:
                    with self.lock:
                        if c.buf:
                            self.events.append(("residue", c.id, bytes(c.buf)))
                            c.buf.clear()
                        c.open = False
                    return
        finally:
            try:
                c.sock.close()
            except OSError:
                pass

    def consume(self, c):
        """Parse what is complete in c.buf (lock held); returns (keep the connection, bytes to send)."""
        out = bytearray()
        while c.buf:
            try:
                r = parse_request(c.buf)
            except Violation as e:
                self.events.append(("violation", c.id, "%s; bytes: %s" % (e, short(bytes(c.buf), 240))))
                c.buf.clear()
                out += b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nX-Rec-Violation: 1\r\nConnection: close\r\n\r\n"
                return False, bytes(out)
            if r is None:
                break
            req, used = r
            req["raw"] = bytes(c.buf[:used])
            del c.buf[:used]
            self.nreq += 1
            rid = "%d-%d" % (self.lane, self.nreq)
            req["rid"] = rid
            self.events.append(("request", c.id, req))
            body = b"" if req["method"] == b"HEAD" else b"rec " + rid.encode()
            out += b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Rec: %s\r\n%s\r\n%s" % (
                0 if req["method"] == b"HEAD" else len(body), rid.encode(),
                b"" if req["keep"] else b"Connection: close\r\n", body)
            if not req["keep"]:
                if c.buf:
                    self.events.append(("residue", c.id, bytes(c.buf)))
                    c.buf.clear()
                return False, bytes(out)
        return True, bytes(out)

    def mark(self):
        with self.lock:
            return len(self.events)

    def since(self, mark):
        with self.lock:
            return list(self.events[mark:])

    def settled(self):
        """Every connection is closed or has no unparsed bytes."""
        with self.lock:
            return all(not c.open or not c.buf for c in self.conns)

    def pending(self):
        with self.lock:
            return [(c.id, bytes(c.buf)) for c in self.conns if c.open and c.buf]

    def close(self):
        self.stop = True
        try:
            self.ls.close()
        except OSError:
            pass


# ---------------------------------------------------------------------------------- client side

def parse_responses(buf, eof):
    """Split what lb sent into responses: list of (status, headers dict, body), leftover, error."""
    out = []
    pos = 0
    while pos < len(buf):
        end = buf.find(b"\r\n\r\n", pos)
        if end < 0:
            if eof:
                return out, buf[pos:], "incomplete response head %s" % short(bytes(buf[pos:]), 100)
            return out, buf[pos:], None
        lines = bytes(buf[pos:end]).split(b"\r\n")
        m = re.match(rb"HTTP/1\.[01] (\d{3})(?: [^\r\n]*)?\Z", lines[0])
        if not m:
            return out, buf[pos:], "bad status line %s" % short(lines[0], 100)
        hdrs = {}
        for ln in lines[1:]:
            k, sep, v = ln.partition(b":")
            if not sep:
                return out, buf[pos:], "bad response header line %s" % short(ln, 100)
            k = k.strip().lower().decode("latin-1")
            hdrs[k] = (hdrs[k] + b", " if k in hdrs else b"") + v.strip()
        status = int(m.group(1))
        bstart = end + 4
        if 100 <= status < 200 and status != 101:
            out.append((status, hdrs, b""))
            pos = bstart
            continue
        if "content-length" in hdrs:
            n = int(hdrs["content-length"])
            if len(buf) < bstart + n:
                if eof:
                    return out, buf[pos:], "connection closed inside a response body"
                return out, buf[pos:], None
            out.append((status, hdrs, bytes(buf[bstart:bstart + n])))
            pos = bstart + n
        elif "transfer-encoding" in hdrs:
            return out, buf[pos:], "unexpected chunked response"
        else:
            if not eof:
                return out, buf[pos:], None
            out.append((status, hdrs, bytes(buf[bstart:])))
            pos = len(buf)
    return out, b"", None


def talk(port, pieces, gap, answered):
    """Send the pieces on a new connection; read until EOF or quiet. answered() is how many responses
    the backend has sent in this case: while fewer X-Rec responses came back, quiet is no reason to stop
    (a slow machine must not turn into a "hidden request"). Returns (bytes, eof, error)."""
    got = bytearray()
    eof = False
    try:
        s = socket.create_connection((HOST, port), timeout=2.0)
    except OSError as e:
        return got, True, "connect: %s" % e
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i, p in enumerate(pieces):
            if i and gap:
                time.sleep(gap)
            try:
                s.sendall(p)
            except OSError:
                break  # lb answered and closed before taking everything: the answer is what counts
        t0 = last = time.monotonic()
        while time.monotonic() - t0 < CASE_BUDGET - SETTLE - 1:
            now = time.monotonic()
            wait = (QUIET if got else FIRST_BYTE) - (now - last)
            if wait <= 0:
                if got.count(b"\r\nX-Rec: ") >= answered():
                    break
                wait = 0.05
            r, _, _ = select.select([s], [], [], wait)
            if not r:
                continue
            try:
                d = s.recv(65536)
            except (ConnectionResetError, ConnectionAbortedError):
                d = b""
            except OSError as e:
                return got, True, "recv: %s" % e
            if not d:
                eof = True
                break
            got += d
            last = time.monotonic()
        return got, eof, None
    finally:
        s.close()


class Case:
    def __init__(self, name, data, control=0, bodies=None, gap=0.0):
        self.name = name
        self.pieces = data if isinstance(data, list) else [data]
        self.control = control      # > 0: a valid exchange that must be forwarded as this many requests
        self.bodies = bodies        # expected decoded bodies of the forwarded requests, when any is
        self.gap = gap


def run_case(lane, case):
    rec = lane["rec"]
    mark = rec.mark()
    got, eof, err = talk(lane["port"], case.pieces, case.gap,
                         lambda: sum(1 for k, _, _ in rec.since(mark) if k == "request"))
    if err:
        return "client: %s" % err, ""
    deadline = time.monotonic() + SETTLE
    while not rec.settled() and time.monotonic() < deadline:
        time.sleep(0.02)
    resps, left, perr = parse_responses(got, eof)
    events = rec.since(mark)
    reqs = [d for k, _, d in events if k == "request"]
    viol = [(cid, d) for k, cid, d in events if k == "violation"]
    resid = [(cid, d) for k, cid, d in events if k == "residue"] + rec.pending()
    finals = [r for r in resps if not (100 <= r[0] < 200 and r[0] != 101)]
    recs = [r[1].get("x-rec", b"").decode("latin-1") for r in finals if "x-rec" in r[1]]
    own = [r for r in finals if "x-rec" not in r[1]]
    summary = "lb answered %s; backend parsed %d request(s)%s" % (
        [r[0] for r in finals] or "nothing", len(reqs),
        "" if not reqs else ": " + ", ".join("%s %s %s%s" % (
            q["method"].decode("latin-1"), q["target"].decode("latin-1")[:40], q["framing"],
            " %d" % len(q["body"]) if q["framing"] != "none" else "") for q in reqs))
    problems = []
    for cid, d in viol:
        problems.append("backend saw a malformed request (conn %d): %s" % (cid, d))
    if perr:
        problems.append("client: %s" % perr)
    if len(reqs) != len(recs):
        problems.append("backend parsed %d request(s) but the client got %d response(s) from it (hidden request)"
                        % (len(reqs), len(recs)))
    want = sorted(q["rid"] for q in reqs)
    if sorted(recs) != want and len(reqs) == len(recs):
        problems.append("responses %s do not match the backend's requests %s" % (sorted(recs), want))
    for st, h, _ in own:
        if "x-rec-violation" in h:
            continue
        if st < 400:
            problems.append("lb answered %d by itself (want 4xx/5xx)" % st)
    for cid, d in resid:
        try:
            h = parse_head(d)
        except Violation as e:
            problems.append("lb left a malformed partial request on backend conn %d: %s; bytes %s"
                            % (cid, e, short(d, 200)))
            continue
        if h is None:
            problems.append("lb forwarded a partial request head to backend conn %d: %s" % (cid, short(d, 200)))
        # else: a valid head whose body lb stopped streaming (refused mid-body or the client left)
    if case.control:
        if len(reqs) != case.control or [r[0] for r in finals] != [200] * case.control:
            problems.append("control case: want %d request(s) forwarded and %d 200 response(s)"
                            % (case.control, case.control))
    if case.bodies is not None and (case.control or reqs) and [q["body"] for q in reqs] != case.bodies:
        problems.append("backend got bodies %s, want %s" % ([short(q["body"], 40) for q in reqs], case.bodies))
    if resid and not problems:
        summary += "; body stream cut after a valid head (%d byte(s) left)" % sum(len(d) for _, d in resid)
    return "; ".join(problems), summary


# ---------------------------------------------------------------------------------- the cases

H = b"Host: x\r\n"
SMUG = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
NEXT = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"


def post(headers, body=b"", version=b"HTTP/1.1", method=b"POST", target=b"/up"):
    return method + b" " + target + b" " + version + b"\r\n" + H + headers + b"\r\n" + body


def te(line, body=b"0\r\n\r\n" + SMUG):
    """A body framed by an obfuscated Transfer-Encoding line, then a request only lax parsers see."""
    return post(line + b"\r\n", body)


def te_cl(line, body=b"0\r\n\r\n" + SMUG):
    """The same with a Content-Length covering the whole rest (CL.TE desync if lb ignores the TE)."""
    return post(line + b"\r\nContent-Length: %d\r\n" % len(body), body)


def chunked(body, then=NEXT):
    return post(b"Transfer-Encoding: chunked\r\n", body + then)


def cl(value, body=b"hello", then=NEXT):
    return post(b"Content-Length: " + value + b"\r\n", body + then)


CASES = [
    # controls: valid requests that must be forwarded
    Case("control_get", b"GET / HTTP/1.1\r\n" + H + b"\r\n", control=1, bodies=[b""]),
    Case("control_post_content_length", post(b"Content-Length: 5\r\n", b"hello"), control=1, bodies=[b"hello"]),
    Case("control_post_chunked", post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
         control=1, bodies=[b"hello"]),
    Case("control_pipelined_pair", b"GET /a HTTP/1.1\r\n" + H + b"\r\n" + NEXT, control=2),
    Case("control_chunk_extension_token", chunked(b"5;name=value\r\nhello\r\n0\r\n\r\n", b""), control=1,
         bodies=[b"hello"]),
    Case("control_chunk_extension_quoted", chunked(b'5;a="b; c"\r\nhello\r\n0\r\n\r\n', b""), control=1,
         bodies=[b"hello"]),
    Case("control_chunked_trailer", chunked(b"5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n", b""), control=1,
         bodies=[b"hello"]),
    Case("control_head_then_body_later", [post(b"Content-Length: 5\r\n"), b"hello"], control=1,
         bodies=[b"hello"], gap=0.1),

    # CL.TE and TE.CL
    Case("cl_te", post(b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\nG" + SMUG)),
    Case("te_cl", post(b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", b"8\r\nSMUGGLED\r\n0\r\n\r\n" + SMUG)),
    Case("cl_te_zero_length", post(b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n")),
    Case("cl_te_http10", post(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUG,
                              version=b"HTTP/1.0")),
    Case("te_chunked_http10", post(b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n",
                                   b"0\r\n\r\n" + SMUG, version=b"HTTP/1.0")),

    # TE.TE: obfuscated Transfer-Encoding
    Case("te_xchunked", te(b"Transfer-Encoding: xchunked")),
    Case("te_xchunked_with_cl", te_cl(b"Transfer-Encoding: xchunked")),
    Case("te_value_leading_space", te(b"Transfer-Encoding:  chunked")),
    Case("te_value_trailing_space", te(b"Transfer-Encoding: chunked ")),
    Case("te_line_leading_space", te(b" Transfer-Encoding: chunked")),
    Case("te_line_leading_space_with_cl", te_cl(b" Transfer-Encoding: chunked")),
    Case("te_chunked_identity", te(b"Transfer-Encoding: chunked, identity")),
    Case("te_identity_chunked", te(b"Transfer-Encoding: identity, chunked")),
    Case("te_chunked_gzip", te(b"Transfer-Encoding: chunked, gzip")),
    Case("te_gzip_chunked_two_lines", te(b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked")),
    Case("te_chunked_chunked", te(b"Transfer-Encoding: chunked, chunked")),
    Case("te_space_before_colon", te(b"Transfer-Encoding : chunked")),
    Case("te_space_before_colon_with_cl", te_cl(b"Transfer-Encoding : chunked")),
    Case("te_tab_before_colon", te(b"Transfer-Encoding\t: chunked")),
    Case("te_duplicated", te(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked")),
    Case("te_duplicated_identity", te(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity")),
    Case("te_upper_case", te(b"TRANSFER-ENCODING: CHUNKED")),
    Case("te_mixed_case", te(b"Transfer-encoding: cHuNkEd")),
    Case("te_tab_value", te(b"Transfer-Encoding:\tchunked")),
    Case("te_vertical_tab", te(b"Transfer-Encoding:\x0bchunked")),
    Case("te_form_feed", te(b"Transfer-Encoding:\x0cchunked")),
    Case("te_vertical_tab_with_cl", te_cl(b"Transfer-Encoding:\x0bchunked")),
    Case("te_line_folded", te(b"Transfer-Encoding:\r\n chunked")),
    Case("te_line_folded_with_cl", te_cl(b"Transfer-Encoding: x\r\n chunked")),
    Case("te_quoted", te(b'Transfer-Encoding: "chunked"')),
    Case("te_trailing_comma", te(b"Transfer-Encoding: chunked,")),
    Case("te_leading_comma", te(b"Transfer-Encoding: , chunked")),
    Case("te_nul", te(b"Transfer-Encoding: chunked\x00")),
    Case("te_parameter", te(b"Transfer-Encoding: chunked;q=1")),
    Case("te_underscore_name", te(b"Transfer_Encoding: chunked")),
    Case("te_empty", te(b"Transfer-Encoding: ")),

    # Content-Length
    Case("cl_duplicate_same", post(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello" + NEXT)),
    Case("cl_duplicate_differing", post(b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!" + NEXT)),
    Case("cl_duplicate_5_05", post(b"Content-Length: 5\r\nContent-Length: 05\r\n", b"hello" + NEXT)),
    Case("cl_list_same", cl(b"5, 5")),
    Case("cl_list_differing", cl(b"5, 6")),
    Case("cl_space_padded", cl(b"  5  "), bodies=[b"hello", b""]),
    Case("cl_plus", cl(b"+5")),
    Case("cl_minus", cl(b"-5")),
    Case("cl_negative_zero", cl(b"-0", b"")),
    Case("cl_hex", cl(b"0x5")),
    Case("cl_decimal_point", cl(b"5.0")),
    Case("cl_overflow", cl(b"99999999999999999999999999")),
    Case("cl_int64_max_plus_1", cl(b"9223372036854775808")),
    Case("cl_uint64_wrap", cl(b"18446744073709551621")),
    Case("cl_leading_zeros", cl(b"0000000005")),
    Case("cl_empty", cl(b"")),
    Case("cl_internal_space", cl(b"5 5")),
    Case("cl_space_before_colon", post(b"Content-Length : 5\r\n", b"hello" + NEXT)),
    Case("cl_underscore_name", post(b"Content_Length: 5\r\n", b"hello" + NEXT)),
    Case("cl_vertical_tab", cl(b"\x0b5")),
    Case("cl_longer_than_body", cl(b"10", b"hello", b"")),
    Case("cl_hides_request_in_body", cl(b"%d" % len(SMUG), SMUG, b"")),
    Case("cl_body_then_pipelined", cl(b"5")),

    # chunk sizes and chunk lines
    Case("chunk_size_overflow", chunked(b"fffffffffffffffff1\r\nhello\r\n0\r\n\r\n")),
    Case("chunk_size_overflow_wrap", chunked(b"10000000000000005\r\nhello\r\n0\r\n\r\n")),
    Case("chunk_size_negative", chunked(b"-5\r\nhello\r\n0\r\n\r\n")),
    Case("chunk_size_0x", chunked(b"0x5\r\nhello\r\n0\r\n\r\n")),
    Case("chunk_size_leading_space", chunked(b" 5\r\nhello\r\n0\r\n\r\n")),
    Case("chunk_size_trailing_space", chunked(b"5 \r\nhello\r\n0\r\n\r\n")),
    Case("chunk_size_underscore", chunked(b"1_0\r\n0123456789abcdef\r\n0\r\n\r\n")),
    Case("chunk_size_plus", chunked(b"+5\r\nhello\r\n0\r\n\r\n")),
    Case("chunk_size_empty", chunked(b"\r\nhello\r\n0\r\n\r\n")),
    Case("chunk_size_19_digits", chunked(b"0000000000000000005\r\nhello\r\n0\r\n\r\n")),
    Case("chunk_size_bare_lf", chunked(b"5\nhello\r\n0\r\n\r\n")),
    Case("chunk_data_bare_lf", chunked(b"5\r\nhello\n0\r\n\r\n")),
    Case("chunk_data_longer_than_size", chunked(b"3\r\nhello\r\n0\r\n\r\n")),
    Case("chunk_last_bare_lf", chunked(b"5\r\nhello\r\n0\n\n")),
    Case("chunk_bare_cr", chunked(b"5\rhello\r\n0\r\n\r\n")),
    Case("chunk_ext_bare_lf", chunked(b"5;a=b\nhello\r\n0\r\n\r\n")),
    Case("chunk_ext_quoted_crlf", chunked(b'1;a="\r\nX\r\n0\r\n\r\n' + SMUG + b'"\r\nY\r\n0\r\n\r\n', b"")),
    Case("chunk_ext_unterminated_quote", chunked(b'5;a="b\r\nhello\r\n0\r\n\r\n')),
    Case("chunk_ext_empty_name", chunked(b"5;\r\nhello\r\n0\r\n\r\n")),
    Case("chunk_ext_empty_value", chunked(b"5;a=\r\nhello\r\n0\r\n\r\n")),
    Case("chunk_ext_space_in_value", chunked(b"5;a=b c\r\nhello\r\n0\r\n\r\n")),
    Case("chunk_ext_bws", chunked(b"5 ; a = b\r\nhello\r\n0\r\n\r\n")),
    Case("chunk_ext_obs_text", chunked(b"5;a=\x80\r\nhello\r\n0\r\n\r\n")),
    Case("chunk_ext_no_semicolon", chunked(b"5a=b\r\nhello\r\n0\r\n\r\n")),
    Case("chunk_size_line_4000", chunked(b"5;a=" + b"b" * 4000 + b"\r\nhello\r\n0\r\n\r\n"), bodies=[b"hello", b""]),
    Case("chunk_size_line_5000", chunked(b"5;a=" + b"b" * 5000 + b"\r\nhello\r\n0\r\n\r\n")),
    Case("chunk_last_missing_crlf_smuggle", chunked(b"5\r\nhello\r\n0\r\n", SMUG)),
    Case("chunk_trailer_no_colon", chunked(b"5\r\nhello\r\n0\r\nX-Trailer\r\n\r\n")),
    Case("chunk_trailer_space_before_colon", chunked(b"5\r\nhello\r\n0\r\nX-Trailer : 1\r\n\r\n")),
    Case("chunk_trailer_obs_fold", chunked(b"5\r\nhello\r\n0\r\nX-Trailer: 1\r\n 2\r\n\r\n")),
    Case("chunk_hides_request", chunked(b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMUG), SMUG))),

    # line ends and bytes in the head
    Case("bare_lf_request", b"GET / HTTP/1.1\nHost: x\n\n" + NEXT),
    Case("bare_lf_one_header", b"GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n" + NEXT),
    Case("bare_lf_end_of_head", b"GET / HTTP/1.1\r\nHost: x\r\n\n" + NEXT),
    Case("bare_cr_in_value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n" + NEXT),
    Case("bare_cr_line_ends", b"GET / HTTP/1.1\rHost: x\r\r" + NEXT),
    Case("nul_in_value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n" + NEXT),
    Case("nul_in_name", b"GET / HTTP/1.1\r\nHost: x\r\nX-\x00A: b\r\n\r\n" + NEXT),
    Case("header_name_with_space", b"GET / HTTP/1.1\r\nHost: x\r\nX A: b\r\n\r\n" + NEXT),
    Case("header_without_colon", b"GET / HTTP/1.1\r\nHost: x\r\nX-A\r\n\r\n" + NEXT),
    Case("header_empty_name", b"GET / HTTP/1.1\r\nHost: x\r\n: b\r\n\r\n" + NEXT),
    Case("obs_fold", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n" + NEXT),
    Case("first_header_indented", b"GET / HTTP/1.1\r\n Host: x\r\n\r\n" + NEXT),
    Case("del_in_value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x7fb\r\n\r\n" + NEXT),

    # request line
    Case("http09_request_line", b"GET /\r\n\r\n" + NEXT),
    Case("request_line_trailing_space", b"GET / HTTP/1.1 \r\n" + H + b"\r\n" + NEXT),
    Case("request_line_double_space", b"GET  / HTTP/1.1\r\n" + H + b"\r\n" + NEXT),
    Case("request_line_tab", b"GET\t/\tHTTP/1.1\r\n" + H + b"\r\n" + NEXT),
    Case("request_line_leading_space", b" GET / HTTP/1.1\r\n" + H + b"\r\n" + NEXT),
    Case("request_line_leading_crlf", b"\r\n\r\nGET / HTTP/1.1\r\n" + H + b"\r\n"),
    Case("version_lower_case", b"GET / http/1.1\r\n" + H + b"\r\n" + NEXT),
    Case("version_1_2", b"GET / HTTP/1.2\r\n" + H + b"\r\n" + NEXT),
    Case("version_2_0", b"GET / HTTP/2.0\r\n" + H + b"\r\n" + NEXT),
    Case("target_with_nul_escape", b"GET /a%00b HTTP/1.1\r\n" + H + b"\r\n" + NEXT),
    Case("target_dot_segments", b"GET /a/../../b/./c HTTP/1.1\r\n" + H + b"\r\n"),
    Case("method_lower_case", b"get / HTTP/1.1\r\n" + H + b"\r\n" + NEXT),
    Case("connect_method", b"CONNECT x:80 HTTP/1.1\r\nHost: x:80\r\n\r\n" + NEXT),
    Case("options_asterisk", b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n" + NEXT),

    # absolute-form and Host
    Case("absolute_form_ok", b"GET http://x/p?q HTTP/1.1\r\nHost: x\r\n\r\n" + NEXT),
    Case("absolute_form_host_mismatch", b"GET http://a.test/ HTTP/1.1\r\nHost: b.test\r\n\r\n" + NEXT),
    Case("absolute_form_port_mismatch", b"GET http://x:81/ HTTP/1.1\r\nHost: x:82\r\n\r\n" + NEXT),
    Case("absolute_form_userinfo", b"GET http://user@x/ HTTP/1.1\r\nHost: x\r\n\r\n" + NEXT),
    Case("absolute_form_non_http_scheme", b"GET ftp://x/ HTTP/1.1\r\nHost: x\r\n\r\n" + NEXT),
    Case("absolute_form_empty_authority", b"GET http:///p HTTP/1.1\r\nHost: x\r\n\r\n" + NEXT),
    Case("absolute_form_no_host_header", b"GET http://x/ HTTP/1.1\r\n\r\n" + NEXT),
    Case("host_duplicated", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" + NEXT),
    Case("host_missing", b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n" + NEXT),
    Case("host_with_space", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n" + NEXT),
    Case("host_with_at", b"GET / HTTP/1.1\r\nHost: a@b\r\n\r\n" + NEXT),

    # HTTP/1.0 and Connection
    Case("http10_keepalive_pipelined", b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" + NEXT),
    Case("http10_no_keepalive_pipelined", b"GET /a HTTP/1.0\r\n\r\n" + SMUG),
    Case("http10_keepalive_body_pipelined", post(b"Connection: keep-alive\r\nContent-Length: 5\r\n",
                                                 b"hello" + NEXT, version=b"HTTP/1.0")),
    Case("http10_close_and_keepalive", b"GET /a HTTP/1.0\r\nConnection: close, keep-alive\r\n\r\n" + SMUG),
    Case("connection_close_pipelined", b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" + SMUG),
    Case("connection_close_body_pipelined", post(b"Connection: close\r\nContent-Length: 5\r\n", b"hello" + SMUG)),
    Case("connection_lists_content_length", post(b"Connection: Content-Length\r\nContent-Length: 5\r\n",
                                                 b"hello" + NEXT)),
    Case("connection_lists_transfer_encoding", post(b"Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n",
                                                    b"5\r\nhello\r\n0\r\n\r\n" + NEXT)),
    Case("connection_lists_host", b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Host\r\n\r\n" + NEXT),

    # Expect, bodies on GET/HEAD, Upgrade
    Case("expect_100_continue", post(b"Expect: 100-continue\r\nContent-Length: 5\r\n", b"hello" + NEXT)),
    Case("expect_100_continue_http10", post(b"Expect: 100-continue\r\nContent-Length: 5\r\n", b"hello",
                                            version=b"HTTP/1.0")),
    Case("expect_unknown", post(b"Expect: 200-ok\r\nContent-Length: 5\r\n", b"hello" + SMUG)),
    Case("expect_100_continue_get_no_body", b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n" + NEXT),
    Case("get_with_content_length_body", post(b"Content-Length: %d\r\n" % len(SMUG), SMUG + NEXT, method=b"GET")),
    Case("get_with_chunked_body", post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n" + NEXT,
                                       method=b"GET")),
    Case("head_with_body", post(b"Content-Length: 5\r\n", b"hello" + NEXT, method=b"HEAD")),
    Case("post_without_length_body", post(b"", b"hello" + NEXT)),
    Case("upgrade_h2c_not_accepted", b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                                     b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n" + SMUG),
    Case("upgrade_websocket_not_accepted", b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                                           b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                                           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n" + SMUG),
    Case("too_many_headers", b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(120))
         + b"\r\n" + NEXT),
]


# ---------------------------------------------------------------------------------- main

def lb_config(lanes):
    s = "[global]\nworkers = 1\n\n[log]\naccess = off\n\n"
    for i, ln in enumerate(lanes):
        s += "[listener l%d]\nbind = %s:%d\nmode = http\npool = p%d\nheader_timeout = 3s\n\n" % (i, HOST, ln["port"], i)
        s += "[pool p%d]\nserver = r%d %s:%d\nretries = 0\nhealth_check = off\n\n" % (i, i, HOST, ln["rec"].port)
    return s


def main():
    ap = argparse.ArgumentParser(description="lb differential request-smuggling test")
    ap.add_argument("--only", help="run cases whose name contains this")
    ap.add_argument("--verbose", action="store_true", help="print what lb and the backend did for each case")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)), "duplicate case names"
    cases = [c for c in CASES if not args.only or args.only in c.name]
    tmp = tempfile.mkdtemp(prefix="lb-smuggle-")
    lanes = [{"rec": Recorder(i), "port": free_port()} for i in range(LANES)]
    results = {}
    passed = failed = 0
    proc = None
    try:
        conf = os.path.join(tmp, "lb.ini")
        with open(conf, "w") as f:
            f.write(lb_config(lanes))
        if not (os.path.isfile(LB_BIN) and os.access(LB_BIN, os.X_OK)):
            raise RuntimeError("lb binary not found or not executable: %s" % LB_BIN)
        errf = open(os.path.join(tmp, "lb.stderr"), "wb")
        argv = [LB_BIN, "-c", conf] + (["-u", "root"] if os.geteuid() == 0 else [])
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errf, cwd=ROOT)
        if not it.wait_listening([ln["port"] for ln in lanes], time.monotonic() + 5, proc):
            raise RuntimeError("lb did not start listening (exit status %s)" % proc.poll())
        suite_end = time.monotonic() + SUITE_BUDGET

        def lane_worker(i):
            for c in cases[i::LANES]:
                if time.monotonic() > suite_end - CASE_BUDGET:
                    results[c.name] = ("not run: the suite's %.0f s budget is spent" % SUITE_BUDGET, "")
                    continue
                if proc.poll() is not None:
                    results[c.name] = ("lb exited with status %s" % proc.returncode, "")
                    continue
                try:
                    results[c.name] = run_case(lanes[i], c)
                except Exception as e:  # a harness error is a failure of the case, never a crash
                    results[c.name] = ("%s: %s" % (type(e).__name__, e), "")

        threads = [threading.Thread(target=lane_worker, args=(i,), daemon=True) for i in range(LANES)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(SUITE_BUDGET + 10)
        for c in cases:
            reason, summary = results.get(c.name, ("not finished", ""))
            if args.verbose and summary:
                print("   %s: %s" % (c.name, summary), flush=True)
            if reason:
                print("FAIL %s: %s" % (c.name, reason), flush=True)
                failed += 1
            else:
                print("PASS %s" % c.name, flush=True)
                passed += 1
        alive = proc.poll() is None
        rc = it.stop_proc(proc, 5.0)
        errf.close()
        with open(os.path.join(tmp, "lb.stderr"), "rb") as f:
            err = f.read().decode("utf-8", "replace")
        report = it.sanitizer_line(err)
        if not alive or rc != 0 or report:
            print("FAIL lb_survived: %s" % (report or "lb exited with status %s%s" % (
                rc, "" if alive else " during the cases")), flush=True)
            failed += 1
        else:
            print("PASS lb_survived", flush=True)
            passed += 1
    except Exception as e:
        print("FAIL setup: %s: %s" % (type(e).__name__, e), flush=True)
        failed += 1
    finally:
        if proc is not None and proc.poll() is None:
            it.stop_proc(proc, 3.0)
        for ln in lanes:
            ln["rec"].close()
        if args.keep:
            print("kept %s" % tmp, file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print("smuggle: %d passed, %d failed" % (passed, failed), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
