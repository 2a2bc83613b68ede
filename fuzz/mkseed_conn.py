#!/usr/bin/env python3
"""Write the seeds of fuzz/fuzz_conn.c into fuzz/corpus/conn/ (format: the top of fuzz_conn.c).

    python3 fuzz/mkseed_conn.py [DIR]

A seed is a first byte (listener, client address) and records separated by "\\n#": client data
first, then ops such as B0<bytes> (the newest server connection sends), E (the client closes),
K<digits> (how the next connects go), T<ms> (the clock moves). Files named regress-* in the corpus
are reproducers of fixed bugs and are not written here.
"""
import os
import sys

LISTENERS = {"web": 0, "tcp": 1, "pxweb": 2, "pxtcp": 3, "small": 4, "tcp2": 5}
ADDRS = {"v4": 0, "v4-untrusted": 1, "v6": 2, "v4mapped": 3}


def head(listener, addr="v4"):
    return bytes([64 + ADDRS[addr] * 8 + LISTENERS[listener]])


def seed(listener, client, *ops, addr="v4"):
    out = head(listener, addr) + client
    for op in ops:
        out += b"\n#" + op
    return out


def req(method="GET", path="/", host="a.example", headers=(), body=b""):
    h = "%s %s HTTP/1.1\r\nHost: %s\r\n" % (method, path, host)
    for k, v in headers:
        h += "%s: %s\r\n" % (k, v)
    return h.encode() + b"\r\n" + body


def resp(status=200, body=b"hi", headers=(), reason="OK"):
    h = "HTTP/1.1 %d %s\r\n" % (status, reason)
    for k, v in headers:
        h += "%s: %s\r\n" % (k, v)
    if not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in headers):
        h += "Content-Length: %d\r\n" % len(body)
    return h.encode() + b"\r\n" + body


CHUNKED = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"

# HTTP/2 (h2c with prior knowledge on the web listener): frames by hand, HPACK literals without indexing
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
END_STREAM, END_HEADERS = 1, 4


def frame(ftype, flags, sid, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big") + payload


def hpack_lit(fields):
    out = b""
    for n, v in fields:
        out += b"\x00" + bytes([len(n)]) + n.encode() + bytes([len(v)]) + v.encode()
    return out


def h2_req(sid, method="GET", path="/", extra=(), end=True):
    fields = [(":method", method), (":scheme", "http"), (":path", path), (":authority", "a.example")] + list(extra)
    return frame(1, END_HEADERS | (END_STREAM if end else 0), sid, hpack_lit(fields))


def h2_data(sid, data, end=True):
    return frame(0, END_STREAM if end else 0, sid, data)


H2_START = H2_PREFACE + frame(4, 0, 0)

SEEDS = {
    "get-keepalive-pipelined": seed("web", req() + req(path="/b"),
                                    b"B0" + resp(), b"B0" + resp(body=b"second"), b"E"),
    "post-chunked": seed("web", req("POST", "/up", headers=[("Transfer-Encoding", "chunked")]) + CHUNKED,
                         b"B0" + resp(201, b"", reason="Created"), b"E"),
    "expect-100-continue": seed("web", req("PUT", "/api/x", headers=[("Content-Length", "5"),
                                                                     ("Expect", "100-continue")]),
                                b"B0HTTP/1.1 100 Continue\r\n\r\n", b"Chello",
                                b"B0" + resp(204, b"", reason="No Content"), b"E"),
    "upgrade-websocket": seed("web", req(headers=[("Connection", "Upgrade"), ("Upgrade", "websocket")]),
                              b"B0HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nsrv",
                              b"Cclient bytes", b"F0", b"E"),
    "tcp-echo": seed("tcp", b"hello server", b"B0hello client", b"E", b"F0"),
    "tcp-connect-refused-retry": seed("tcp", b"", b"K3", b"Cdata", b"B0back", b"E"),
    "proxy-v1-http": seed("pxweb", b"PROXY TCP4 203.0.113.9 10.0.0.1 5555 80\r\n" + req(),
                          b"B0" + resp(), b"E"),
    "proxy-v1-tcp": seed("pxtcp", b"PROXY TCP4 203.0.113.9 10.0.0.1 5555 443\r\nsecret bytes",
                         b"B0answer", b"E", b"F0"),
    "proxy-v2-http-v6": seed("pxweb", b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xcb\x00\x71\x09\x0a\x00\x00\x01\x15\xb3\x00\x50"
                             + req(), b"B0" + resp(), b"E", addr="v6"),
    "backend-5xx-retry": seed("web", req(path="/r"), b"K02", b"T", b"B0" + resp(503, b"busy", reason="Service Unavailable"),
                              b"E"),
    "backend-closes-early": seed("web", req(), b"B0HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", b"F0", b"E"),
    "backend-reset-before-response": seed("web", req(), b"R0", b"B0" + resp(), b"E"),
    "response-chunked-head": seed("web", req("HEAD", "/") + req(path="/c"),
                                  b"B0HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                                  b"B0HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + CHUNKED, b"E"),
    "route-return-redirect": seed("web", req(path="/closed") + req(path="/old/x?y=1") + req(path="/private/p"), b"E",
                                  addr="v4-untrusted"),
    "rate-limit-sticky": seed("web", req(path="/limited", headers=[("Cookie", "SRV=w2")]) * 3,
                              b"B0" + resp(), b"B0" + resp(), b"E"),
    "api-body-too-large": seed("web", req("POST", "/api/up", headers=[("Content-Length", "2000")]) + b"x" * 100, b"E"),
    "small-window-slow": seed("small", req(path="/up/a", headers=[("Content-Length", "20")]) + b"0123456789",
                              b"W3", b"S2", b"C0123456789", b"B0" + resp(body=b"a" * 40), b"T", b"E"),
    "small-response-timeout": seed("small", req(), b"T1000", b"T", b"E", addr="v4mapped"),
    "tcp2-idle-timeout": seed("tcp2", b"x", b"K5", b"T600", b"T", b"E"),
    "head-timeout-partial": seed("web", b"GET / HTTP/1.1\r\nHost: a", b"T5000", b"E"),
    "h2c-get": seed("web", H2_START + h2_req(1), b"B0" + resp(), b"E"),
    "h2c-post-chunked": seed("web", H2_START + h2_req(1, "POST", "/up", end=False) + h2_data(1, b"hello", False)
                             + h2_data(1, b" world"), b"B0" + resp(201, b"", reason="Created"), b"E"),
    "h2c-post-cl-chunked-answer": seed("web", H2_START + h2_req(1, "POST", "/api/x", [("content-length", "5")], False)
                                       + h2_data(1, b"hello"),
                                       b"B0HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + CHUNKED, b"E"),
    "h2c-two-streams-reset": seed("web", H2_START + h2_req(1, path="/a") + h2_req(3, path="/closed")
                                  + frame(3, 0, 1, (8).to_bytes(4, "big")), b"B0" + resp(), b"E"),
    "http10-until-close": seed("web", b"GET / HTTP/1.0\r\n\r\n", b"B0HTTP/1.0 200 OK\r\n\r\nbody until close", b"F0"),
}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                             "corpus", "conn")
    os.makedirs(out, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print("%d seeds in %s" % (len(SEEDS), out))


if __name__ == "__main__":
    main()
