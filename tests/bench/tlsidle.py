#!/usr/bin/python3
"""bench/tlsidle.py — N idle TLS connections for bench/run.sh (the h2 and tls13 figures' idle memory).

    /usr/bin/python3 tests/bench/tlsidle.py -n N -p h2|http/1.1 [-t SECS] HOST PORT

Opens N TLS connections one after the other (ALPN PROTO offered alone; the certificate is not
checked), each sends one GET / and reads its 200 (h2: the client preface and SETTINGS, the
server's SETTINGS acknowledged, one stream; http/1.1: a keep-alive request), then all stay open
and idle. Prints "ready ok N failed N alpn_mismatch N" once all are done, then holds them until
SIGTERM or -t SECS (default 600), then prints "conns ok N closed N" (closed: connections the
server closed while idle). h2 needs Debian's python3-h2 (hence /usr/bin/python3).
"""
import argparse
import select
import signal
import socket
import ssl
import sys
import time


def h2_request(sock, host):
    import h2.config
    import h2.connection
    import h2.events
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "GET"), (":path", "/"), (":scheme", "https"),
                            (":authority", host)], end_stream=True)
    sock.sendall(conn.data_to_send())
    status = None
    while True:
        data = sock.recv(65536)
        if not data:
            return None
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                status = dict(ev.headers).get(b":status")
            elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                out = conn.data_to_send()
                if out:
                    sock.sendall(out)  # SETTINGS ACK, WINDOW_UPDATE
                return status == b"200"
        out = conn.data_to_send()
        if out:
            sock.sendall(out)


def h1_request(sock, host):
    sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            return None
        buf += data
    head, body = buf.split(b"\r\n\r\n", 1)
    clen = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            clen = int(v)
    while len(body) < clen:
        data = sock.recv(65536)
        if not data:
            return None
        body += data
    return head.split(b" ")[1] == b"200"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, required=True)
    ap.add_argument("-p", choices=["h2", "http/1.1"], required=True)
    ap.add_argument("-t", type=float, default=600)
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    a = ap.parse_args()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols([a.p])
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    socks, failed, mismatch = [], 0, 0
    host = "bench.test"
    for _ in range(a.n):
        if stop:
            break
        try:
            raw = socket.create_connection((a.host, a.port), timeout=10)
            s = ctx.wrap_socket(raw, server_hostname=host)
            # no ALPN at all is HTTP/1.1 (a server without ALPN configured)
            if s.selected_alpn_protocol() not in ((a.p, None) if a.p == "http/1.1" else (a.p,)):
                mismatch += 1
                s.close()
                continue
            ok = (h2_request if a.p == "h2" else h1_request)(s, host)
            if ok:
                s.setblocking(False)
                socks.append(s)
            else:
                failed += 1
                s.close()
        except (OSError, ValueError) as e:
            failed += 1
            if failed <= 3:
                print(f"tlsidle: {e}", file=sys.stderr)
    print(f"ready ok {len(socks)} failed {failed} alpn_mismatch {mismatch}", flush=True)
    closed = 0
    live = {s.fileno(): s for s in socks}
    end = time.monotonic() + a.t
    ep = select.epoll()
    for fd in live:
        ep.register(fd, select.EPOLLIN)
    while not stop and time.monotonic() < end and live:
        for fd, _ in ep.poll(0.2):
            try:
                if not live[fd].recv(65536):
                    raise OSError
            except ssl.SSLWantReadError:
                continue
            except OSError:
                closed += 1
                ep.unregister(fd)
                del live[fd]
    print(f"conns ok {len(socks)} closed {closed}", flush=True)


if __name__ == "__main__":
    main()
