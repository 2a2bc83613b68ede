#!/usr/bin/env python3
"""Test and demo backend for lb (Python 3 standard library only).

    python3 tests/backend.py --port P --name NAME [--host 127.0.0.1] [--mode http|tcp-echo|tcp-count]

http mode: a threaded HTTP/1.1 server with keep-alive. Every response carries `X-Backend: NAME`.
  GET /                 200 "NAME <path>\n" (also any unknown path)
  GET /health           200 "ok"
  GET /headers          200 JSON of the request headers (lower-cased names, repeats joined with
                        ", ") plus "_method", "_target" (as received) and "_version"
  GET /slow?ms=N        sleeps N ms, then 200 "NAME /slow\n"
  GET /bytes?n=N[&chunked=1]  N bytes of pattern data (bytes 0..255 repeated), streamed in 64 KiB pieces
  POST|PUT /upload      reads the body (Content-Length or chunked, streamed), 200 {"bytes": N, "sha256": ...}
  POST /echo            echoes the body back with Content-Length
  GET /stats            {"connections": accepted TCP connections, "open": those open now (this one included),
                         "requests": requests (this one included), "health": requests to /health,
                         "app": requests other than /health /stats /mode}
  GET /status?code=N    answers with that status (204 and 304 without a body)
  GET /mode?set=M[&ms=N]  how every other request (all but /health, /stats, /mode) is answered from now:
                        ok (as above), 500 (status 500), slow (after N ms), reset (the request is read,
                        then the connection is reset without an answer)
  GET /ws               WebSocket (RFC 6455): echoes text/binary frames, answers ping, echoes close
  GET /page?n=N         an HTML page with N images /px/1.gif ... /px/N.gif (a browser's page of sub-resources)
  GET /px/ANY           a 1x1 GIF (image/gif)
  Expect: 100-continue  "HTTP/1.1 100 Continue" is sent before the body is read.
tcp-echo mode: echoes bytes; on the client's EOF sends what remains, then closes.
tcp-count mode: reads until EOF, then sends "got N bytes\n" and closes.

Prints "ready" (flushed) once listening. SIGTERM exits.
"""
import argparse
import base64
import hashlib
import http
import json
import os
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
from urllib.parse import parse_qs, urlsplit

PIECE = 65536
BLOCK = bytes(range(256)) * (PIECE // 256)  # the pattern: offset i holds byte i % 256
MAX_HEAD = 1 << 20
MAX_ECHO = 256 << 20
MAX_WS_FRAME = 256 << 20
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PIXEL = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
         b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")

NAME = "backend"


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.connections = 0
        self.open = 0
        self.requests = 0
        self.health = 0
        self.app = 0

    def conn(self):
        with self.lock:
            self.connections += 1
            self.open += 1

    def gone(self):
        with self.lock:
            self.open -= 1

    def req(self, path):
        with self.lock:
            self.requests += 1
            if path == "/health":
                self.health += 1
            elif path not in CONTROL:
                self.app += 1

    def snapshot(self):
        with self.lock:
            return {"connections": self.connections, "open": self.open, "requests": self.requests,
                    "health": self.health, "app": self.app}


STATS = Stats()
CONTROL = ("/health", "/stats", "/mode")
MODE = {"m": "ok", "ms": 0}


class Close(Exception):
    """Stop serving this connection (after whatever was already sent)."""


def reason_of(code):
    try:
        return http.HTTPStatus(code).phrase
    except ValueError:
        return "Status"


class Request:
    def __init__(self, method, target, version, headers):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers  # list of (lower-case name, value)
        if target.startswith("/") or target == "*":
            path, _, query = target.partition("?")
        else:
            u = urlsplit(target)
            path, query = (u.path or "/"), u.query
        self.path = path
        self.query = parse_qs(query, keep_blank_values=True)

    def hdr(self, name):
        vals = [v for n, v in self.headers if n == name]
        return ", ".join(vals) if vals else None

    def tokens(self, name):
        v = self.hdr(name)
        return [t.strip().lower() for t in v.split(",")] if v else []

    def qint(self, name, default):
        try:
            return int(self.query[name][0])
        except (KeyError, ValueError, IndexError):
            return default


class Body:
    """Streaming reader of a request body (Content-Length or chunked)."""

    def __init__(self, rfile, sock, req):
        self.rfile = rfile
        self.sock = sock
        te = req.tokens("transfer-encoding")
        self.chunked = bool(te) and te[-1] == "chunked"
        if te and not self.chunked:
            raise ValueError("unsupported transfer-encoding")
        self.remaining = 0
        if not self.chunked:
            cl = req.hdr("content-length")
            if cl is not None:
                vals = {v.strip() for v in cl.split(",")}
                if len(vals) != 1 or not next(iter(vals)).isdigit():
                    raise ValueError("bad content-length")
                self.remaining = int(next(iter(vals)))
        self.done = not (self.chunked or self.remaining > 0)
        self.expect = (req.hdr("expect") or "").strip().lower() == "100-continue"
        self.continue_sent = False
        self.chunk_left = 0
        self.total = 0

    def send_continue(self):
        if self.expect and not self.continue_sent and not self.done:
            self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.continue_sent = True

    def _line(self):
        line = self.rfile.readline(4098)
        if not line:
            raise Close()
        if not line.endswith(b"\r\n"):
            raise Close()
        return line[:-2]

    def read(self, n=PIECE):
        if self.done:
            return b""
        self.send_continue()
        if not self.chunked:
            data = self.rfile.read(min(n, self.remaining))
            if not data:
                raise Close()
            self.remaining -= len(data)
            self.total += len(data)
            if self.remaining == 0:
                self.done = True
            return data
        while True:
            if self.chunk_left == 0:
                size = self._line().split(b";", 1)[0].strip()
                if not size or len(size) > 16 or any(c not in b"0123456789abcdefABCDEF" for c in size):
                    raise Close()
                self.chunk_left = int(size, 16)
                if self.chunk_left == 0:
                    while self._line():  # trailers
                        pass
                    self.done = True
                    return b""
            data = self.rfile.read(min(n, self.chunk_left))
            if not data:
                raise Close()
            self.chunk_left -= len(data)
            self.total += len(data)
            if self.chunk_left == 0 and self._line() != b"":
                raise Close()
            return data

    def chunks(self):
        while True:
            data = self.read()
            if not data:
                return
            yield data


class HTTPHandler(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        sock.settimeout(300)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.sock = sock
        self.rfile = sock.makefile("rb", buffering=PIECE)
        try:
            while self.handle_one():
                pass
        except (Close, OSError, ValueError):
            pass
        finally:
            try:
                self.rfile.close()
            except OSError:
                pass

    # -- head
    def simple_error(self, code):
        body = ("%d %s\n" % (code, reason_of(code))).encode()
        self.sock.sendall(("HTTP/1.1 %d %s\r\nX-Backend: %s\r\nContent-Type: text/plain\r\n"
                           "Content-Length: %d\r\nConnection: close\r\n\r\n"
                           % (code, reason_of(code), NAME, len(body))).encode() + body)
        raise Close()

    def read_head(self):
        line = self.rfile.readline(MAX_HEAD)
        while line in (b"\r\n", b"\n"):
            line = self.rfile.readline(MAX_HEAD)
        if not line:
            return None
        if not line.endswith(b"\n"):
            self.simple_error(414)
        parts = line.rstrip(b"\r\n").decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self.simple_error(400)
        headers = []
        total = len(line)
        while True:
            h = self.rfile.readline(MAX_HEAD)
            if not h:
                raise Close()
            total += len(h)
            if total > MAX_HEAD:
                self.simple_error(431)
            if h in (b"\r\n", b"\n"):
                break
            name, sep, value = h.decode("latin-1").rstrip("\r\n").partition(":")
            if not sep or not name or name != name.strip():
                self.simple_error(400)
            headers.append((name.lower(), value.strip()))
        return Request(parts[0], parts[1], parts[2], headers)

    # -- responses
    def send_head(self, code, headers, keep, body=b""):
        """The head, and a small body in the same write: a backend killed (SIGTERM) between two
        writes would cut an answer in the middle, which no proxy can mend."""
        lines = ["HTTP/1.1 %d %s" % (code, reason_of(code)), "X-Backend: " + NAME]
        lines += ["%s: %s" % kv for kv in headers]
        if not keep:
            lines.append("Connection: close")
        elif self.req.version == "HTTP/1.0":
            lines.append("Connection: keep-alive")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def respond(self, code, body=b"", ctype="text/plain"):
        if isinstance(body, str):
            body = body.encode()
        headers = []
        if code in (204, 304) or 100 <= code < 200:
            body = b""
        else:
            headers = [("Content-Type", ctype), ("Content-Length", str(len(body)))]
        self.send_head(code, headers, self.keep, body if self.req.method != "HEAD" else b"")

    def respond_json(self, obj, code=200):
        self.respond(code, json.dumps(obj) + "\n", "application/json")

    # -- one request
    def handle_one(self):
        req = self.read_head()
        if req is None:
            return False
        STATS.req(req.path)
        self.req = req
        conn = req.tokens("connection")
        if req.version == "HTTP/1.0":
            self.keep = "keep-alive" in conn
        else:
            self.keep = "close" not in conn
        try:
            body = Body(self.rfile, self.sock, req)
        except ValueError:
            self.simple_error(400)
        self.dispatch(req, body)
        if not body.done:
            if body.expect and not body.continue_sent:
                return False  # the client waits for 100 before sending: cannot drain
            for _ in body.chunks():
                pass
        return self.keep

    def dispatch(self, req, body):
        p, m = req.path, req.method
        mode = MODE["m"] if p not in CONTROL else "ok"
        if mode == "slow":
            time.sleep(MODE["ms"] / 1000.0)
        elif mode == "500":
            for _ in body.chunks():
                pass
            self.respond(500, "%s failing\n" % NAME)
            return
        elif mode == "reset":
            for _ in body.chunks():
                pass
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raise Close()
        if p == "/mode":
            want = req.query.get("set", ["ok"])[0]
            MODE["m"] = want if want in ("ok", "500", "slow", "reset") else "ok"
            MODE["ms"] = max(0, req.qint("ms", 0))
            self.respond(200, "mode %s\n" % MODE["m"])
        elif p == "/health":
            self.respond(200, "ok")
        elif p == "/headers":
            d = {}
            for n, v in req.headers:
                d[n] = d[n] + ", " + v if n in d else v
            d["_method"], d["_target"], d["_version"] = m, req.target, req.version
            self.respond_json(d)
        elif p == "/slow":
            time.sleep(max(0, req.qint("ms", 1000)) / 1000.0)
            self.respond(200, "%s /slow\n" % NAME)
        elif p == "/bytes":
            self.send_bytes(max(0, req.qint("n", 0)), req.qint("chunked", 0) == 1)
        elif p == "/upload" and m in ("POST", "PUT"):
            h = hashlib.sha256()
            for data in body.chunks():
                h.update(data)
            self.respond_json({"bytes": body.total, "sha256": h.hexdigest()})
        elif p == "/echo" and m == "POST":
            buf = bytearray()
            for data in body.chunks():
                buf += data
                if len(buf) > MAX_ECHO:
                    self.keep = False
                    self.respond(413, "too large\n")
                    raise Close()
            self.respond(200, bytes(buf), req.hdr("content-type") or "application/octet-stream")
        elif p == "/stats":
            self.respond_json(STATS.snapshot())
        elif p == "/status":
            code = req.qint("code", 200)
            if not 200 <= code <= 999:
                code = 400
            self.respond(code, "status %d\n" % code)
        elif p == "/ws":
            self.websocket(req)
        elif p == "/page":
            imgs = "".join('<img src="/px/%d.gif" width=1 height=1>' % i for i in range(1, min(req.qint("n", 50), 1000) + 1))
            self.respond(200, "<!doctype html><title>%s</title>%s\n" % (NAME, imgs), "text/html")
        elif p.startswith("/px/"):
            self.respond(200, PIXEL, "image/gif")
        else:
            self.respond(200, "%s %s\n" % (NAME, p))

    def send_bytes(self, n, chunked):
        if chunked:
            self.send_head(200, [("Content-Type", "application/octet-stream"),
                                 ("Transfer-Encoding", "chunked")], self.keep)
        else:
            self.send_head(200, [("Content-Type", "application/octet-stream"),
                                 ("Content-Length", str(n))], self.keep)
        if self.req.method == "HEAD":
            return
        mv = memoryview(BLOCK)
        left = n
        while left > 0:
            k = min(PIECE, left)
            if chunked:
                self.sock.sendall(b"%x\r\n" % k + mv[:k] + b"\r\n")
            else:
                self.sock.sendall(mv[:k])
            left -= k
        if chunked:
            self.sock.sendall(b"0\r\n\r\n")

    # -- websocket
    def websocket(self, req):
        key = req.hdr("sec-websocket-key")
        if "websocket" not in req.tokens("upgrade") or "upgrade" not in req.tokens("connection") or not key:
            self.keep = False
            self.respond(400, "websocket upgrade required\n")
            raise Close()
        accept = base64.b64encode(hashlib.sha1(key.strip().encode() + WS_GUID).digest()).decode()
        self.sock.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\nX-Backend: %s\r\n\r\n"
                           % (accept, NAME)).encode())
        while True:
            fin, opcode, payload = self.ws_read()
            if opcode == 0x8:  # close: echo the status code, then close
                self.ws_send(0x8, payload[:2])
                raise Close()
            if opcode == 0x9:  # ping
                self.ws_send(0xA, payload)
            elif opcode == 0xA:
                pass
            elif opcode in (0x0, 0x1, 0x2):
                self.ws_send(opcode, payload, fin)
            else:
                self.ws_send(0x8, struct.pack("!H", 1002))
                raise Close()

    def ws_exact(self, n):
        data = self.rfile.read(n)
        if len(data) != n:
            raise Close()
        return data

    def ws_read(self):
        b0, b1 = self.ws_exact(2)
        fin, opcode, masked, n = b0 >> 7, b0 & 0x0F, b1 >> 7, b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self.ws_exact(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self.ws_exact(8))[0]
        if not masked or n > MAX_WS_FRAME:  # client frames must be masked (RFC 6455 5.1)
            self.ws_send(0x8, struct.pack("!H", 1002 if not masked else 1009))
            raise Close()
        mask = self.ws_exact(4)
        data = self.ws_exact(n)
        if n:
            m = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
            data = (int.from_bytes(data, "big") ^ m).to_bytes(n, "big")
        return fin, opcode, data

    def ws_send(self, opcode, payload, fin=1):
        n = len(payload)
        head = bytes([(0x80 if fin else 0) | opcode])
        if n < 126:
            head += bytes([n])
        elif n < 65536:
            head += bytes([126]) + struct.pack("!H", n)
        else:
            head += bytes([127]) + struct.pack("!Q", n)
        self.sock.sendall(head + payload)


class TCPEchoHandler(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        sock.settimeout(300)
        try:
            while True:
                data = sock.recv(PIECE)
                if not data:
                    break
                sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class TCPCountHandler(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        sock.settimeout(300)
        n = 0
        try:
            while True:
                data = sock.recv(PIECE)
                if not data:
                    break
                n += len(data)
            sock.sendall(b"got %d bytes\n" % n)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512
    block_on_close = False

    def process_request_thread(self, request, client_address):
        STATS.conn()  # counted here for every mode: accepted, and open until the handler ends
        try:
            super().process_request_thread(request, client_address)
        finally:
            STATS.gone()


def main():
    global NAME
    ap = argparse.ArgumentParser(description="lb test backend")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--mode", choices=("http", "tcp-echo", "tcp-count"), default="http")
    args = ap.parse_args()
    NAME = args.name
    handler = {"http": HTTPHandler, "tcp-echo": TCPEchoHandler, "tcp-count": TCPCountHandler}[args.mode]

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    Server.address_family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    try:
        srv = Server((args.host, args.port), handler)
    except OSError as e:
        print("backend %s: cannot listen on %s:%d: %s" % (NAME, args.host, args.port, e), file=sys.stderr)
        sys.exit(1)
    print("ready", flush=True)
    try:
        srv.serve_forever(poll_interval=0.2)
    except (SystemExit, KeyboardInterrupt):
        pass
    try:
        srv.server_close()
    finally:
        sys.stdout.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
