#!/usr/bin/env python3
"""Integration tests for lb's process model: master and workers, SIGHUP reload, worker restart,
privilege drop, pid file, SIGTERM, log rotation and SIGUSR1.

    python3 tests/process.py [--only SUBSTR] [--keep]

The lb binary is $LB_BIN (default ./lb, relative to the repository root). Helpers (ports, backends,
clients, WebSocket frames) come from tests/integration.py. Each test writes its own config with free
ports, starts lb (the master), checks, and stops every process it started by PID: the master, then any
worker (a child of the master, seen in /proc/MASTER/task/*/children) still alive, identified by PID and
start time. Backends a, b, c, d (tests/backend.py) are shared between tests. One line per test:
"PASS name" or "FAIL name: reason"; then "process: N passed, N failed"; exit status 1 when any failed.
"""
import base64
import hashlib
import http.client
import json
import os
import pwd
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import integration as it  # noqa: E402
from integration import HOST, Fail, Skip, Timeout, check, eq, free_port, short, count_by, children_of  # noqa: E402

ROOT = it.ROOT
LB_BIN = it.LB_BIN
IS_ROOT = os.geteuid() == 0
# as root, lb refuses to start without `[global] user =` unless told -u root
ROOT_ARGS = ["-u", "root"] if IS_ROOT else []
SUITE_BUDGET = 238  # seconds for all tests; with cleanup the run stays under ~4 minutes
ROTATED_RE_FMT = r"^%s\.\d{8}-\d{6}(?:\.\d+)?$"


# ---------------------------------------------------------------------------------------- /proc

def proc_stat(pid):
    """(state, starttime) of pid from /proc/PID/stat, or None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
        rest = s[s.rindex(")") + 2:].split()
        return rest[0], int(rest[19])
    except (OSError, ValueError, IndexError):
        return None


def status_ids(pid):
    """{'Uid': [r, e, s, fs], 'Gid': [...], 'Groups': [...]} from /proc/PID/status."""
    d = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("Uid", "Gid", "Groups"):
                d[k] = [int(x) for x in v.split()]
    return d


# ---------------------------------------------------------------------------------------- config

def _kv(kw):
    return ["%s = %s" % (k, v) for k, v in kw.items() if v is not None]


def conf(*sections, workers=2, glob=None, log=None, access="off", fmt="json"):
    """A whole config: [global] workers and glob keys, [log] access/format and log keys, then sections."""
    g = ["[global]", "workers = %s" % workers] + _kv(glob or {})
    lg = ["[log]", "access = %s" % access]
    if access != "off" and fmt:
        lg.append("format = %s" % fmt)
    lg += _kv(log or {})
    return "\n".join(g) + "\n\n" + "\n".join(lg) + "\n\n" + "\n".join(sections)


def listener(name, ports, pool, **kw):
    ports = [ports] if isinstance(ports, int) else ports
    lines = ["[listener %s]" % name, "bind = %s" % ", ".join("%s:%d" % (HOST, p) for p in ports),
             "mode = http", "pool = %s" % pool]
    return "\n".join(lines + _kv(kw)) + "\n"


def pool(name, backends, **kw):
    """backends: Backend objects; each becomes `server = NAME 127.0.0.1:PORT`."""
    lines = ["[pool %s]" % name] + ["server = %s %s:%d" % (b.name, HOST, b.port) for b in backends]
    return "\n".join(lines + _kv(kw)) + "\n"


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------- processes

class Master(it.StderrFile):
    """lb run in the foreground as the master; its workers are tracked by PID and start time."""

    def __init__(self, ctx, conf_text, ports, args=None, tag="lb", preexec=None):
        if not (os.path.isfile(LB_BIN) and os.access(LB_BIN, os.X_OK)):
            raise Fail("lb binary not found or not executable: %s" % LB_BIN)
        self.ctx = ctx
        self.conf = os.path.join(ctx.dir, tag + ".ini")
        write_atomic(self.conf, conf_text)
        self.err_path = os.path.join(ctx.dir, tag + ".stderr")
        self.out_path = os.path.join(ctx.dir, tag + ".stdout")
        self.out = open(self.out_path, "wb")
        self.err = open(self.err_path, "wb")
        self.args = ROOT_ARGS if args is None else list(args)
        self.argv = [LB_BIN, "-c", self.conf] + self.args
        self.expected_exit = False
        self.known = {}  # pid -> starttime of every child ever seen
        self.lock = threading.Lock()
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self.out, stderr=self.err,
                                     cwd=ROOT, preexec_fn=preexec)
        self.pid = self.proc.pid
        ctx.masters.append(self)
        self.sampling = threading.Event()
        self.sampler = threading.Thread(target=self._sample, daemon=True)
        self.sampler.start()
        if ports and not it.wait_listening(ports, time.monotonic() + 5, self.proc):
            if self.proc.poll() is not None:
                self.expected_exit = True  # reported here, not again at cleanup
                raise Fail("lb exited with status %s at start: %s" % (self.proc.returncode, self.stderr_head()))
            raise Fail("lb not listening on %s within 5s: %s" % (ports, self.stderr_tail()))

    def _sample(self):
        while not self.sampling.wait(0.1):
            if self.proc.poll() is not None:
                return
            self.all_children()

    def all_children(self):
        """[(pid, state)] of the master's children (zombies included); remembers every pid seen."""
        out = []
        for pid in children_of(self.pid):
            st = proc_stat(pid)
            if st is None:
                continue
            with self.lock:
                self.known.setdefault(pid, st[1])
            out.append((pid, st[0]))
        return out

    def workers(self):
        """PIDs of the master's live (non-zombie) children."""
        return sorted(p for p, s in self.all_children() if s != "Z")

    def wait_workers(self, n, timeout=3.0, exclude=(), what=""):
        """Wait until the master has exactly n live children, none of them in exclude."""
        exclude = set(exclude)
        deadline = time.monotonic() + timeout
        while True:
            w = self.workers()
            if len(w) == n and not exclude & set(w):
                return w
            if self.proc.poll() is not None:
                raise Fail("%slb master exited with status %s: %s" % (what, self.proc.returncode, self.stderr_tail()))
            if time.monotonic() > deadline:
                old = sorted(exclude & set(w))
                raise Fail("%smaster pid %d has %d worker processes %s after %.1f s (want %d%s)"
                           % (what, self.pid, len(w), w, timeout, n,
                              ", none of the old %s" % old if old else ""))
            time.sleep(0.05)

    def alive(self):
        return self.proc.poll() is None

    def signal(self, sig):
        if self.proc.poll() is not None:
            raise Fail("lb master exited with status %s before %s: %s"
                       % (self.proc.returncode, signal.Signals(sig).name, self.stderr_tail()))
        os.kill(self.pid, sig)

    def reload(self, text):
        write_atomic(self.conf, text)
        self.signal(signal.SIGHUP)

    def stderr_head(self, n=2):
        lines = [l.strip() for l in self.stderr().splitlines() if l.strip()]
        return " / ".join(lines[:n])[:300] if lines else "(no stderr)"

    def live_known(self):
        """Known workers (pid, start time) that still run (not zombies)."""
        with self.lock:
            items = list(self.known.items())
        out = []
        for pid, start in items:
            st = proc_stat(pid)
            if st and st[1] == start and st[0] != "Z":
                out.append(pid)
        return out

    def stop(self, grace=3.0):
        """SIGTERM the master (SIGKILL after grace), then SIGKILL every worker still alive.
        Returns (exit status, [pids of workers that outlived a master that exited by itself])."""
        self.expected_exit = True
        if self.proc.poll() is None:
            self.all_children()
        killed_master = False
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                killed_master = True
                self.proc.kill()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        self.sampling.set()
        left = self.kill_workers(wait=0.0 if killed_master else 2.0)
        for f in (self.out, self.err):
            try:
                f.close()
            except OSError:
                pass
        return self.proc.returncode, ([] if killed_master else left)

    def kill_workers(self, wait=2.0):
        """Wait up to `wait` s for known workers to exit, SIGKILL the rest (by pid and start time)."""
        deadline = time.monotonic() + wait
        left = self.live_known()
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = self.live_known()
        with self.lock:
            known = dict(self.known)
        for pid in left:
            st = proc_stat(pid)
            if st and st[1] == known[pid]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        return left


class Ctx(it.TestDir):
    def __init__(self, suite, name):
        super().__init__(suite, name)
        self.masters = []
        self.stoppers = []

    def master(self, conf_text, ports, args=None, tag="lb", preexec=None):
        """preexec: run in the child before lb starts (e.g. a setrlimit)."""
        return Master(self, conf_text, ports, args, tag, preexec)

    def on_cleanup(self, fn):
        self.stoppers.append(fn)

    def cleanup(self):
        problems = []
        for fn in self.stoppers:
            try:
                fn()
            except Exception as e:
                problems.append("cleanup: %s: %s" % (type(e).__name__, e))
        for m in self.masters:
            rc = m.proc.poll()
            if rc is not None and not m.expected_exit:
                problems.append("lb master exited unexpectedly with status %s: %s" % (rc, m.stderr_tail()))
            _, left = m.stop(grace=3.0)
            if left:
                problems.append("worker pids %s still running 2 s after the master exited (killed)" % left)
            report = it.sanitizer_line(m.stderr())
            if report:
                problems.append("lb stderr has a sanitizer report: %s" % report)
        return "; ".join(problems)


# ---------------------------------------------------------------------------------------- clients

def body_ok(body, backend, path):
    return body == ("%s %s\n" % (backend, path)).encode()


class Load:
    """Client threads that loop GET requests until stopped, `max_requests` answered or `seconds` passed.

    Threads with keepalive=True reuse one http.client connection (reconnecting when it closes); the
    others open a new connection per request. A request fails on any exception, a status other than
    200, an X-Backend outside `allowed`, or a body other than "NAME PATH\\n"."""

    def __init__(self, port, threads=6, keepalive=3, allowed=None, seconds=30.0, max_requests=None,
                 prefix="/p", record=False, timeout=5.0):
        self.port, self.allowed, self.prefix, self.timeout = port, allowed, prefix, timeout
        self.seconds, self.max_requests, self.record = seconds, max_requests, record
        self.kinds = [i < keepalive for i in range(threads)]
        self.lock = threading.Lock()
        self.ev = threading.Event()
        self.ok = 0
        self.failed = 0
        self.fail_kinds = {}
        self.fail_first = []
        self.backends = {}
        self.paths = []
        self.events = []  # (monotonic time, backend) of answered requests when record
        self.threads = []

    @property
    def total(self):
        return self.ok + self.failed

    def start(self):
        self.deadline = time.monotonic() + self.seconds
        for i, ka in enumerate(self.kinds):
            th = threading.Thread(target=self._run, args=(i, ka), daemon=True)
            th.start()
            self.threads.append(th)
        return self

    def stop(self, timeout=10.0):
        self.ev.set()
        end = time.monotonic() + timeout
        for th in self.threads:
            th.join(max(0.1, end - time.monotonic()))
        return not any(th.is_alive() for th in self.threads)

    def wait(self, timeout):
        end = time.monotonic() + timeout
        for th in self.threads:
            th.join(max(0.0, end - time.monotonic()))

    def _fail(self, kind, msg):
        with self.lock:
            self.failed += 1
            self.fail_kinds[kind] = self.fail_kinds.get(kind, 0) + 1
            if len(self.fail_first) < 3:
                self.fail_first.append(msg)

    def _run(self, idx, ka):
        conn, used, i = None, 0, 0
        while not self.ev.is_set() and time.monotonic() < self.deadline:
            if self.max_requests is not None and self.total >= self.max_requests:
                break
            path = "%s/%d/%d" % (self.prefix, idx, i)
            i += 1
            reused = False
            try:
                if ka:
                    if conn is None:
                        conn, used = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout), 0
                    reused = used > 0
                    conn.request("GET", path)
                    r = conn.getresponse()
                    body = r.read()
                    used += 1
                    status, backend = r.status, r.getheader("X-Backend")
                    if r.will_close:
                        conn.close()
                        conn = None
                else:
                    r = it.request(self.port, path, timeout=self.timeout)
                    status, backend, body = r.status, r.backend, r.body
                if status != 200:
                    raise Fail("status %d from %s: %s" % (status, backend, short(body, 80)))
                if self.allowed is not None and backend not in self.allowed:
                    raise Fail("X-Backend %r not in %s" % (backend, sorted(self.allowed)))
                if not body_ok(body, backend, path):
                    raise Fail("body %s (want %r)" % (short(body, 80), "%s %s\n" % (backend, path)))
                with self.lock:
                    self.ok += 1
                    self.backends[backend] = self.backends.get(backend, 0) + 1
                    if self.record:
                        self.paths.append(path)
                        self.events.append((time.monotonic(), backend))
            except Timeout:
                raise
            except Exception as e:
                kind = type(e).__name__ if not isinstance(e, Fail) else "bad response"
                if ka:
                    kind += " (keep-alive, %s connection)" % ("reused" if reused else "new")
                else:
                    kind += " (new connection)"
                self._fail(kind, "%s %s: %s: %s" % ("keep-alive" if ka else "new-conn", path, type(e).__name__, e))
                if conn is not None:
                    conn.close()
                    conn = None
                time.sleep(0.01)
        if conn is not None:
            conn.close()

    def failures(self):
        with self.lock:
            return "%d of %d requests failed %s; first: %s" % (
                self.failed, self.total, self.fail_kinds, " | ".join(self.fail_first))


class WS:
    """A WebSocket to the backend's /ws echo through lb."""

    def __init__(self, port):
        key = base64.b64encode(os.urandom(16)).decode()
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode())
                                  .digest()).decode()
        self.c = it.RawConn(port, timeout=5)
        self.c.send(it.raw_request("/ws", headers=[("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                                   ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")]))
        r = self.c.read_response()
        eq(r.status, 101, "WebSocket handshake status")
        eq(r.hdr("sec-websocket-accept"), accept, "Sec-WebSocket-Accept")
        self.backend = r.backend

    def echo(self, payload):
        self.c.send(it.ws_frame(0x2, payload))
        op, fin, data = it.ws_read(self.c)
        if (op, fin, data) != (0x2, True, payload):
            raise Fail("WebSocket echo: sent %d bytes, got opcode %d fin %s %s" % (len(payload), op, fin, short(data)))

    def close(self):
        try:
            self.c.send(it.ws_frame(0x8, struct.pack("!H", 1000)))
            op, _, data = it.ws_read(self.c)
            eq((op, data), (0x8, struct.pack("!H", 1000)), "WebSocket close echo")
        finally:
            self.c.close()


class WSPinger(threading.Thread):
    """Echoes a message on a WebSocket every `every` seconds until stopped; records the first failure."""

    def __init__(self, ws, every=0.2):
        super().__init__(daemon=True)
        self.ws, self.every = ws, every
        self.ev = threading.Event()
        self.n = 0
        self.error = None

    def run(self):
        while not self.ev.wait(self.every):
            try:
                self.ws.echo(b"ping %d " % self.n + os.urandom(64))
                self.n += 1
            except Exception as e:
                self.error = "echo %d failed: %s: %s" % (self.n + 1, type(e).__name__, e)
                return

    def stop(self):
        self.ev.set()
        self.join(10)


class SlowDownload(threading.Thread):
    """GET /bytes?n=N read slowly (piece bytes every pause s) through a small receive buffer;
    checks the byte count and the pattern's sha256."""

    def __init__(self, port, n, piece=65536, pause=0.02, limit=90.0):
        super().__init__(daemon=True)
        self.port, self.n, self.piece, self.pause, self.limit = port, n, piece, pause, limit
        self.ev = threading.Event()
        self.started = threading.Event()
        self.got = 0
        self.error = None
        self.done = False
        self.status = None

    def run(self):
        c = None
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 131072)
            s.settimeout(10)
            s.connect((HOST, self.port))
            c = it.RawConn.__new__(it.RawConn)
            c.sock, c.buf = s, bytearray()
            c.send(it.raw_request("/bytes?n=%d" % self.n))
            head = c.read_head()
            self.status, cl = head.status, head.hdr("content-length")
            cl = int(cl) if cl is not None else None
            if self.status != 200 or cl != self.n:
                raise Fail("status %d Content-Length %s" % (self.status, cl))
            self.started.set()
            h = hashlib.sha256()
            end = time.monotonic() + self.limit
            while self.got < self.n:
                if self.ev.is_set() or time.monotonic() > end:
                    raise Fail("stopped after %d of %d bytes" % (self.got, self.n))
                d = c.read_some(min(self.piece, self.n - self.got))
                if not d:
                    raise Fail("connection closed after %d of %d bytes" % (self.got, self.n))
                h.update(d)
                self.got += len(d)
                time.sleep(self.pause)
            if h.hexdigest() != it.pattern_sha(self.n):
                raise Fail("all %d bytes arrived but their sha256 differs from the pattern" % self.n)
            self.done = True
        except Exception as e:
            self.error = "%s: %s (after %d of %d bytes)" % (type(e).__name__, e, self.got, self.n)
        finally:
            self.started.set()
            if c is not None:
                c.close()

    def stop(self):
        self.ev.set()
        self.join(10)


def requests_now(port, n, path="/now", allowed=None, threads=1):
    """n requests on new connections (from `threads` threads); returns the list of backends;
    raises Fail on the first failure."""
    out, errs = [], []
    lock = threading.Lock()

    def one(k):
        for i in range(k):
            p = "%s/%d" % (path, i)
            try:
                r = it.request(port, p, timeout=5)
                if r.status != 200 or not body_ok(r.body, r.backend, p):
                    raise Fail("status %d body %s" % (r.status, short(r.body, 80)))
                with lock:
                    out.append(r.backend)
            except Exception as e:
                with lock:
                    errs.append("%s %s: %s" % (p, type(e).__name__, e))
                return

    if threads == 1:
        one(n)
    else:
        ths = [threading.Thread(target=one, args=(n // threads + (1 if i < n % threads else 0),), daemon=True)
               for i in range(threads)]
        for th in ths:
            th.start()
        for th in ths:
            th.join(30)
    if errs:
        raise Fail("request failed: %s" % errs[0])
    if allowed is not None:
        bad = [b for b in out if b not in allowed]
        check(not bad, "answers from %s (want only %s)" % (count_by(bad), sorted(allowed)))
    return out


def read_json_log(path):
    """(objects, problems) of a JSON-lines file; a problem is a line that is not one JSON object
    or a last line without its newline."""
    objs, problems = [], []
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return objs, problems
    if not data:  # a live log just rotated is empty: no line, no problem
        return objs, problems
    if not data.endswith(b"\n"):
        problems.append("%s: last line has no newline: %s" % (os.path.basename(path), short(data[-80:])))
    for i, line in enumerate(data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n")):
        try:
            o = json.loads(line)
            if not isinstance(o, dict):
                raise ValueError
            objs.append(o)
        except ValueError:
            problems.append("%s:%d is not a JSON object: %s" % (os.path.basename(path), i + 1, short(line, 100)))
    return objs, problems


def count_lines(path):
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def rotated_files(path):
    """Rotated files of the access log `path` (PATH.YYYYmmdd-HHMMSS[.N]) and other unexpected
    names starting with PATH."""
    d, base = os.path.split(path)
    rx = re.compile(ROTATED_RE_FMT % re.escape(base))
    rot, odd = [], []
    for n in sorted(os.listdir(d)):
        if n == base or not n.startswith(base):
            continue
        (rot if rx.match(n) else odd).append(os.path.join(d, n))
    return rot, odd


def wait_for(fn, timeout, step=0.05):
    """Poll fn() until it returns a true value or timeout passes; returns the last value."""
    end = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > end:
            return v
        time.sleep(step)


# ---------------------------------------------------------------------------------------- tests

TESTS = []


test = it.registrar(TESTS)


def logged_master(ctx, servers, workers=2):
    """A master with one http listener "web" to pool p (the named suite backends) and an access log:
    (port, access log path, master, worker pids)."""
    port = free_port()
    log = os.path.join(ctx.dir, "access.log")
    m = ctx.master(conf(listener("web", port, "p"), pool("p", [ctx.b[n] for n in servers]), workers=workers, access=log),
                   [port])
    return port, log, m, m.wait_workers(workers)


@test("workers", timeout=30)
def t_workers(ctx):
    port, log, m, w = logged_master(ctx, "ab")
    eq(len(requests_now(port, 400, path="/w", allowed={"a", "b"}, threads=20)), 400, "answered requests")
    wait_for(lambda: count_lines(log) >= 400, 3)
    objs, problems = read_json_log(log)
    check(not problems, "access log: %s" % "; ".join(problems[:3]))
    eq(len(objs), 400, "access log lines")
    missing = [o for o in objs if "worker" not in o or "pid" not in o]
    check(not missing, "access log lines without worker/pid: %d, e.g. %s" % (len(missing), short(json.dumps(
        missing[0]) if missing else "", 200)))
    bad = [o for o in objs if not (isinstance(o["worker"], int) and not isinstance(o["worker"], bool)
                                   and isinstance(o["pid"], int) and 1 <= o["worker"] <= 2)]
    check(not bad, "access log worker/pid values: %s" % short([(o["worker"], o["pid"]) for o in bad[:3]]))
    per = count_by(o["worker"] for o in objs)
    pids = {}
    for o in objs:
        pids.setdefault(o["worker"], set()).add(o["pid"])
    check(m.pid not in {o["pid"] for o in objs}, "the master (pid %d) handled requests" % m.pid)
    check(all(len(v) == 1 for v in pids.values()), "a worker id logged with several pids: %s" % pids)
    logged = {p for v in pids.values() for p in v}
    check(logged <= set(w), "logged pids %s are not the master's children %s" % (sorted(logged), w))
    check(per.get(1, 0) > 0 and per.get(2, 0) > 0, "requests per worker id %s: both workers should serve" % per)
    eq(m.workers(), w, "worker pids after the requests")


@test("reload_under_load", timeout=110)
def t_reload_under_load(ctx):
    b = ctx.b
    port = free_port()
    TARGET, RELOADS, N = 20000, 10, 50 * 1024 * 1024

    def cfg(names):
        return conf(listener("web", port, "p", idle_timeout="60s"),
                    pool("p", [b[n] for n in names], response_timeout="30s"),
                    workers=2, glob={"shutdown_timeout": "60s"})

    A, B = cfg(["a", "b"]), cfg(["c", "d"])
    m = ctx.master(A, [port])
    gen1 = m.wait_workers(2)
    ws = WS(port)
    ctx.on_cleanup(lambda: ws.c.close())
    ws.echo(b"before the reloads")
    check(ws.backend in ("a", "b"), "WebSocket answered by %r" % ws.backend)
    dl = SlowDownload(port, N)
    ctx.on_cleanup(dl.stop)
    dl.start()
    dl.started.wait(5)
    check(dl.error is None, "50 MB download did not start: %s" % dl.error)
    check(dl.started.is_set(), "50 MB download: no response head within 5 s")
    pinger = WSPinger(ws)
    ctx.on_cleanup(pinger.stop)
    pinger.start()
    load = Load(port, threads=6, keepalive=3, allowed={"a", "b", "c", "d"}, seconds=70, record=True)
    ctx.on_cleanup(load.stop)
    load.start()
    time.sleep(0.5)
    problems = []
    last = time.monotonic()
    reload_times = []
    for i in range(1, RELOADS + 1):
        # 0.5 to 1 s apart, spread over the first TARGET requests
        while True:
            now = time.monotonic()
            if now - last >= 1.0 or (now - last >= 0.5 and load.total >= i * TARGET / (RELOADS + 0.5)):
                break
            time.sleep(0.02)
        if not m.alive():
            raise Fail("lb master exited with status %s during the reloads: %s" % (m.proc.returncode, m.stderr_tail()))
        m.reload(B if i % 2 else A)
        last = time.monotonic()
        reload_times.append(last)
    # keep the load going until TARGET requests were made
    end = time.monotonic() + 45
    while load.total < TARGET and time.monotonic() < end and any(th.is_alive() for th in load.threads):
        time.sleep(0.05)
    load.stop()
    if load.total < TARGET:
        problems.append("only %d requests made (want %d)" % (load.total, TARGET))
    if load.failed:
        problems.append(load.failures())
    seen = set(load.backends)
    if not seen & {"c", "d"}:
        problems.append("no request reached c or d: the reloads to config B never took effect (backends %s)"
                        % load.backends)
    # settled: the last config (A: a, b) answers every new request
    last_reload = reload_times[-1]
    settled = None
    end = time.monotonic() + 5
    got = []
    try:
        while time.monotonic() < end:
            got = requests_now(port, 20, path="/settle")
            if set(got) <= {"a", "b"}:
                settled = time.monotonic() - last_reload
                break
            time.sleep(0.2)
        else:
            problems.append("5 s after the last reload new requests still reach %s (want only a, b)" % count_by(got))
    except Fail as e:
        problems.append("after the last reload: %s" % e)
    if settled is not None:
        try:
            requests_now(port, 60, path="/after", allowed={"a", "b"}, threads=6)
            after = Load(port, threads=2, keepalive=2, allowed={"a", "b"}, max_requests=100, seconds=10).start()
            after.wait(12)
            after.stop()
            if after.failed or after.ok < 100:
                problems.append("keep-alive requests after the reloads: %s" % after.failures())
        except Fail as e:
            problems.append("after the reloads settled: %s" % e)
    # the WebSocket opened before the reloads still echoes
    pinger.stop()
    if pinger.error:
        problems.append("WebSocket opened before the reloads: %s" % pinger.error)
    else:
        try:
            ws.echo(b"after the reloads")
            ws.close()
        except Exception as e:
            problems.append("WebSocket after the reloads: %s: %s" % (type(e).__name__, e))
    if pinger.n < 10:
        problems.append("only %d WebSocket echoes during the reloads" % pinger.n)
    # the slow download started before the reloads completes
    dl.join(60)
    if dl.is_alive():
        problems.append("50 MB download still running 60 s after the load (%d bytes)" % dl.got)
    elif not dl.done:
        problems.append("50 MB download started before the reloads: %s" % dl.error)
    # the old workers are gone
    if m.alive():
        try:
            w = m.wait_workers(2, timeout=5, exclude=gen1, what="after the reloads: ")
            stale = [p for p in m.live_known() if p not in w]
            if stale:
                problems.append("old workers %s still running after the reloads (current %s)" % (stale, w))
        except Fail as e:
            problems.append(str(e))
    else:
        problems.append("lb master exited with status %s: %s" % (m.proc.returncode, m.stderr_tail()))
    check(not problems, "; ".join(problems) + " [%d requests, backends %s, settled %s s after the last reload]"
          % (load.total, load.backends, "%.1f" % settled if settled is not None else "never"))


@test("reload_invalid", timeout=30)
def t_reload_invalid(ctx):
    b = ctx.b
    port = free_port()
    valid = conf(listener("web", port, "p"), pool("p", [b["a"]]), workers=2)
    m = ctx.master(valid, [port])
    w = m.wait_workers(2)
    requests_now(port, 10, allowed={"a"})
    # the same file with pool p on c, plus two errors at known lines
    changed = conf(listener("web", port, "p"), pool("p", [b["c"]]), workers=2)
    if not changed.endswith("\n"):
        changed += "\n"
    l1 = changed.count("\n") + 1
    invalid = changed + "bogus_key = 1\nalgorithm = nonsense\n"
    l2 = l1 + 1
    load = Load(port, threads=4, keepalive=2, allowed={"a"}, seconds=10)
    ctx.on_cleanup(load.stop)
    load.start()
    time.sleep(0.7)
    m.reload(invalid)
    marks = ["%s:%d:" % (m.conf, l1), "%s:%d:" % (m.conf, l2)]
    logged = wait_for(lambda: all(k in m.stderr() for k in marks), 3)
    time.sleep(1.0)
    load.stop()
    check(logged, "after SIGHUP with an invalid file the error log lacks %s: %s"
          % ([k for k in marks if k not in m.stderr()], short(m.stderr()[-400:], 400)))
    check(m.alive(), "lb master exited with status %s after an invalid reload: %s"
          % (m.proc.returncode, m.stderr_tail()))
    check(load.failed == 0 and load.ok > 50, "traffic around the invalid reload: %s (%d answered)"
          % (load.failures(), load.ok))
    requests_now(port, 20, path="/still", allowed={"a"})
    eq(m.workers(), w, "worker pids after an invalid reload")
    # a valid reload afterwards still applies
    m.reload(changed)
    got = wait_for(lambda: set(requests_now(port, 4, path="/fixed")) == {"c"}, 5, step=0.1)
    check(got, "a valid reload after a rejected one did not apply (pool p on c)")


# ------------------------------------------------------------------ large files (README "Limits")

def big_conf(port, real, nroutes, npools, per_pool, workers=1):
    """A listener on port, pool `real` (the backend), npools pools of per_pool servers on closed loopback
    ports (health checks off), nroutes routes /rN/* over those pools; the last route goes to `real`."""
    secs = [listener("web", port, "real"), pool("real", [real])]
    for p in range(npools):
        secs.append("[pool q%d]\nhealth_check = off\n" % p + "".join(
            "server = s%d %s:%d\n" % (k, HOST, 1 + (p * per_pool + k) % 1000) for k in range(per_pool)))
    for r in range(nroutes):
        target = "real" if r == nroutes - 1 else "q%d" % (r % npools)
        secs.append("[route r%d]\npath = /r%d/*\npool = %s\n" % (r, r, target))
    return conf(*secs, workers=workers)


def lb_check(ctx, text, name):
    """(exit status, stderr lines, path) of `lb -t` on text written to name in the test's directory."""
    path = os.path.join(ctx.dir, name)
    write_atomic(path, text)
    p = subprocess.run([LB_BIN, "-t", "-c", path], capture_output=True, timeout=30, cwd=ROOT)
    return p.returncode, p.stderr.decode("utf-8", "replace").splitlines(), path


@test("large_configs_check_and_start", timeout=60)
def t_large_configs(ctx):
    """lb -t and the start agree on large files: 257 routes with 3 pools of 500 servers (lb -t said valid,
    the start failed with "more than 256 distinct routes since start"), and 2,000 routes with 5,000 servers
    (HAProxy starts such a file in 0.44 s; lb in about 0.05 s, bounded here at 3 s for slow builds)."""
    a = ctx.b["a"]
    for name, nroutes, npools, per_pool in (("r257_s1500", 257, 3, 500), ("r2000_s5000", 2000, 5, 1000)):
        port = free_port()
        text = big_conf(port, a, nroutes, npools, per_pool)
        rc, err, _ = lb_check(ctx, text, name + ".ini")
        eq(rc, 0, "%s: lb -t (%s)" % (name, short(" / ".join(err), 200)))
        t0 = time.monotonic()
        m = ctx.master(text, [port], tag=name)
        r = it.request(port, "/r%d/x" % (nroutes - 1))
        took = time.monotonic() - t0
        eq((r.status, r.backend), (200, "a"), "%s: a request on the last route" % name)
        check(took < 3.0, "%s: lb took %.2f s to start and answer" % (name, took))
        m.stop(grace=3.0)


@test("check_reports_limit_once", timeout=30)
def t_check_limit_once(ctx):
    """A pool of 1,100 servers (over 1,024): lb -t prints one line at the first server past the limit (it
    printed one per extra server), and the start refuses the file with the same line."""
    port = free_port()
    text = big_conf(port, ctx.b["a"], 1, 1, 1100)
    rc, err, path = lb_check(ctx, text, "over.ini")
    line = text.splitlines().index("server = s1024 %s:%d" % (HOST, 1 + 1024 % 1000)) + 1
    want = "%s:%d: server: more than 1024 servers in [pool q0] (76 server lines past the limit" % (path, line)
    check(rc == 1 and len(err) == 1 and err[0].startswith(want),
          "lb -t on a pool of 1,100 servers: exit %d, %d lines: %s (want one: %s)"
          % (rc, len(err), short(" / ".join(err), 300), want))
    p = subprocess.run([LB_BIN, "-c", path] + ROOT_ARGS, capture_output=True, timeout=10, cwd=ROOT)
    check(p.returncode == 1 and err[0] in p.stderr.decode("utf-8", "replace"),
          "the start on the same file: exit %d, %s" % (p.returncode, short(p.stderr.decode("utf-8", "replace"), 300)))


@test("check_unknown_user", timeout=20)
def t_check_unknown_user(ctx):
    """As root, `user = ` naming no user stops the start: lb -t says so too (it said valid)."""
    if not IS_ROOT:
        raise Skip("needs root: lb looks the user up only when started as root")
    port = free_port()
    text = conf(listener("web", port, "real"), pool("real", [ctx.b["a"]]), glob={"user": "no-such-user-h17"})
    rc, err, path = lb_check(ctx, text, "user.ini")
    check(rc == 1 and any("no-such-user-h17: no such user" in l for l in err),
          "lb -t with an unknown user: exit %d, %s" % (rc, short(" / ".join(err), 300)))
    p = subprocess.run([LB_BIN, "-c", path], capture_output=True, timeout=10, cwd=ROOT)
    check(p.returncode == 1 and b"no such user" in p.stderr, "the start: exit %d, %s" % (p.returncode, short(p.stderr)))


@test("reload_past_shared_memory", timeout=40)
def t_reload_past_shm(ctx):
    """lb started with 10 routes has 256 route slots: a SIGHUP to 300 routes is refused with FILE:LINE of
    the first route without a slot, the old generation serves on; a fresh start runs the file."""
    a = ctx.b["a"]
    port = free_port()
    m = ctx.master(big_conf(port, a, 10, 1, 2), [port])
    w = m.wait_workers(1)
    big = big_conf(port, a, 300, 1, 2)
    line = big.splitlines().index("[route r256]") + 1
    eq(lb_check(ctx, big, "big.ini")[0], 0, "lb -t on the 300-route file (a start sizes for it)")
    m.reload(big)
    mark = "%s:%d: shared memory: no slot for [route r256]" % (m.conf, line)
    check(wait_for(lambda: mark in m.stderr() and "still serving generation 1" in m.stderr(), 3),
          "the error log after the refused reload lacks '%s': %s" % (mark, short(m.stderr()[-400:], 400)))
    eq(m.workers(), w, "worker pids after the refused reload")
    eq(it.request(port, "/r9/x").backend, "a", "the old generation's last route")
    m.stop(grace=3.0)
    port2 = free_port()
    ctx.master(big_conf(port2, a, 300, 1, 2), [port2], tag="fresh")
    eq(it.request(port2, "/r299/x").backend, "a", "a fresh start on the 300-route file: its last route")


@test("reload_listeners", timeout=40)
def t_reload_listeners(ctx):
    b = ctx.b
    p1, p2 = free_port(), free_port()
    one = conf(listener("web", p1, "p"), pool("p", [b["a"], b["b"]]), workers=2)
    two = conf(listener("web", [p1, p2], "p"), pool("p", [b["a"], b["b"]]), workers=2)
    m = ctx.master(one, [p1])
    m.wait_workers(2)
    check(p2 not in it.listening_ports(), "port %d listening before the reload" % p2)
    stats = {"ok": 0, "refused": 0, "other": 0, "first": []}
    lock = threading.Lock()
    ev = threading.Event()

    def probe(idx):
        i, end = 0, time.monotonic() + 30
        while not ev.is_set() and time.monotonic() < end:
            path = "/probe/%d/%d" % (idx, i)
            i += 1
            try:
                r = it.request(p1, path, timeout=5)
                if r.status != 200 or not body_ok(r.body, r.backend, path):
                    raise Fail("status %d body %s" % (r.status, short(r.body, 60)))
                with lock:
                    stats["ok"] += 1
            except ConnectionRefusedError:
                with lock:
                    stats["refused"] += 1
            except Exception as e:
                with lock:
                    stats["other"] += 1
                    if len(stats["first"]) < 3:
                        stats["first"].append("%s: %s" % (type(e).__name__, e))
                time.sleep(0.01)

    ths = [threading.Thread(target=probe, args=(i,), daemon=True) for i in range(2)]
    ctx.on_cleanup(ev.set)
    for th in ths:
        th.start()
    time.sleep(0.5)
    m.reload(two)

    def p2_serves():
        try:
            r = it.request(p2, "/p2", timeout=2)
            return r.status == 200 and body_ok(r.body, r.backend, "/p2")
        except OSError:
            return False

    added = wait_for(p2_serves, 3, step=0.1)
    if added:
        requests_now(p2, 20, path="/p2more", allowed={"a", "b"}, threads=4)
    time.sleep(0.5)
    m.reload(one)

    def p2_refuses():
        try:
            s = socket.create_connection((HOST, p2), timeout=1)
            s.close()
            return False
        except ConnectionRefusedError:
            return True
        except OSError:
            return False

    removed = wait_for(p2_refuses, 3, step=0.1)
    time.sleep(0.5)
    ev.set()
    for th in ths:
        th.join(10)
    check(added, "port %d added by a reload does not serve within 3 s" % p2)
    check(removed, "port %d removed by a reload still accepts connections 3 s later" % p2)
    check(p2 not in it.listening_ports(), "port %d still in LISTEN state after its removal" % p2)
    eq(stats["refused"], 0, "connections to port %d (in both configs) refused during the reloads" % p1)
    check(stats["other"] == 0, "%d requests to port %d failed during the reloads (%d ok); first: %s"
          % (stats["other"], p1, stats["ok"], " | ".join(stats["first"])))
    check(stats["ok"] > 50, "only %d probe requests answered" % stats["ok"])
    check(m.alive(), "lb master exited with status %s" % m.proc.returncode)


@test("kill_worker", timeout=30)
def t_kill_worker(ctx):
    port, log, m, w = logged_master(ctx, "ab")
    THREADS = 8
    load = Load(port, threads=THREADS, keepalive=4, allowed={"a", "b"}, seconds=4.0)
    ctx.on_cleanup(load.stop)
    load.start()
    time.sleep(1.5)
    victim = w[0]
    ok_at_kill = load.ok
    os.kill(victim, signal.SIGKILL)
    t_kill = time.monotonic()
    replaced = None
    while time.monotonic() - t_kill < 1.5:
        cur = m.workers()
        if len(cur) == 2 and victim not in cur:
            replaced = cur
            break
        time.sleep(0.02)
    took = time.monotonic() - t_kill
    ok_at_new = load.ok
    load.wait(10)
    load.stop()
    check(m.alive(), "lb master exited with status %s after a worker was killed: %s"
          % (m.proc.returncode, m.stderr_tail()))
    check(replaced, "1.5 s after kill -9 of worker %d the master's workers are %s (want 2, a new one)"
          % (victim, m.workers()))
    new = sorted(set(replaced) - set(w))
    check(len(new) == 1, "workers %s after the kill of %d (before: %s)" % (replaced, victim, w))
    check(load.ok - ok_at_new > 50, "only %d requests answered after the new worker appeared (%.2f s after the kill)"
          % (load.ok - ok_at_new, took))
    check(ok_at_kill > 0, "no request answered before the kill")
    check(load.failed <= THREADS, "%s (allowed: %d, one per client thread)" % (load.failures(), THREADS))
    check(victim not in children_of(m.pid), "killed worker %d not reaped (still a child of the master)" % victim)
    check(re.search(r"\b%d\b[^\n]*signal 9" % victim, m.stderr()),
          "error log lacks a line with pid %d and 'signal 9': %s" % (victim, short(m.stderr()[-300:], 300)))
    # the replacement worker serves too
    newpid = new[0]

    def new_served():
        objs, _ = read_json_log(log)
        return any(o.get("pid") == newpid for o in objs)

    end = time.monotonic() + 4
    while not new_served() and time.monotonic() < end:
        requests_now(port, 40, path="/more", allowed={"a", "b"}, threads=8)
    check(new_served(), "no access log line from the new worker pid %d" % newpid)


@test("privilege_drop", timeout=20)
def t_privilege_drop(ctx):
    if not IS_ROOT:
        raise Skip("not running as root")
    b = ctx.b
    port = free_port()
    pw = pwd.getpwnam("nobody")
    m = ctx.master(conf(listener("web", port, "p"), pool("p", [b["a"]]), workers=2, glob={"user": "nobody"}),
                   [port], args=[])
    w = m.wait_workers(2)
    for pid in w:
        ids = status_ids(pid)
        eq(ids.get("Uid"), [pw.pw_uid] * 4, "worker %d Uid (real, effective, saved, fs)" % pid)
        eq(ids.get("Gid"), [pw.pw_gid] * 4, "worker %d Gid (real, effective, saved, fs)" % pid)
        check(pw.pw_gid == 0 or 0 not in ids.get("Groups", []),
              "worker %d keeps root's supplementary groups %s" % (pid, ids.get("Groups")))
    ids = status_ids(m.pid)
    eq(ids["Uid"][:2], [0, 0], "master Uid (real, effective)")
    requests_now(port, 20, allowed={"a"}, threads=4)
    eq(m.workers(), w, "worker pids after the requests")


def master_kill9(ctx, glob, args):
    """kill -9 of the master with a request in flight: every worker must be gone within 3 s (an
    orphan finishes in-flight work for at most a second) and a new lb must bind the same port."""
    b = ctx.b
    port = free_port()
    text = conf(listener("web", port, "p"), pool("p", [b["a"]], response_timeout="20s"), workers=2, glob=glob)
    m = ctx.master(text, [port], args=args)
    w = m.wait_workers(2)
    requests_now(port, 4, allowed={"a"}, threads=2)
    slow = {}

    def in_flight():
        try:
            slow["r"] = it.request(port, "/slow?ms=8000", timeout=12).status
        except Exception as e:
            slow["e"] = type(e).__name__
    th = threading.Thread(target=in_flight, daemon=True)
    th.start()
    time.sleep(0.4)
    m.expected_exit = True
    t0 = time.monotonic()
    m.proc.kill()
    m.proc.wait(5)
    left = wait_for(lambda: not m.live_known(), 3) or m.live_known()
    check(left is True, "workers %s (of %s) still running %.1f s after kill -9 of the master"
          % (left, w, time.monotonic() - t0))
    m2 = ctx.master(text, [port], args=args, tag="lb2")
    m2.wait_workers(2, what="new lb on the same port: ")
    requests_now(port, 4, allowed={"a"}, threads=2)
    check(m2.alive(), "new lb exited: %s" % m2.stderr_tail())


@test("master_kill9_user_nobody", timeout=25)
def t_master_kill9_user(ctx):
    if not IS_ROOT:
        raise Skip("not running as root: `user = nobody` needs root (the parent-death signal is lost on the uid change)")
    master_kill9(ctx, {"user": "nobody"}, [])


@test("master_kill9", timeout=25)
def t_master_kill9(ctx):
    master_kill9(ctx, None, None)


@test("refuse_root", timeout=15)
def t_refuse_root(ctx):
    if not IS_ROOT:
        raise Skip("not running as root")
    b = ctx.b
    port = free_port()
    path = os.path.join(ctx.dir, "lb.ini")
    write_atomic(path, conf(listener("web", port, "p"), pool("p", [b["a"]]), workers=2))
    p = subprocess.Popen([LB_BIN, "-c", path], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, cwd=ROOT)
    kids = set()
    try:
        end = time.monotonic() + 3
        while p.poll() is None and time.monotonic() < end:
            kids.update((k, proc_stat(k)) for k in children_of(p.pid))
            time.sleep(0.05)
        running = p.poll() is None
        if running:
            kids.update((k, proc_stat(k)) for k in children_of(p.pid))
            p.kill()
        out, err = p.communicate(timeout=5)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
        for k, st in kids:  # workers it may have started
            cur = proc_stat(k)
            if st and cur and cur[1] == st[1]:
                try:
                    os.kill(k, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    text = (out + err).decode("utf-8", "replace")
    check(not running, "lb started as root without `user` or -u root (still running after 3 s)")
    eq(p.returncode, 1, "exit status as root without `user` or -u root")
    check("root" in text.lower(), "the refusal does not mention root: %s" % short(text.strip(), 200))


@test("pid_file_and_term", timeout=25)
def t_pid_file(ctx):
    b = ctx.b
    port = free_port()
    pidf = os.path.join(ctx.dir, "lb.pid")
    m = ctx.master(conf(listener("web", port, "p"), pool("p", [b["a"]], response_timeout="5s"), workers=2,
                        glob={"pid_file": pidf}), [port])
    w = m.wait_workers(2)

    def pid_in_file():
        try:
            with open(pidf) as f:
                return f.read().strip() == str(m.pid)
        except OSError:
            return False

    content = wait_for(pid_in_file, 2)
    if not content:
        try:
            with open(pidf) as f:
                content = "contains %r" % f.read()[:50]
        except OSError as e:
            content = "unreadable: %s" % e
        raise Fail("pid_file %s does not hold the master pid %d: %s" % (pidf, m.pid, content))
    res = {}

    def slow():
        try:
            r = it.request(port, "/slow?ms=1500", timeout=8)
            res["r"] = (r.status, r.body)
        except Exception as e:
            res["e"] = "%s: %s" % (type(e).__name__, e)

    th = threading.Thread(target=slow, daemon=True)
    th.start()
    time.sleep(0.4)
    m.expected_exit = True
    m.signal(signal.SIGTERM)
    th.join(8)
    check("e" not in res, "request in flight at SIGTERM failed: %s" % res.get("e"))
    check("r" in res, "request in flight at SIGTERM did not finish")
    eq(res["r"], (200, b"a /slow\n"), "request in flight at SIGTERM (status, body)")
    try:
        rc = m.proc.wait(5)
    except subprocess.TimeoutExpired:
        raise Fail("lb master still running 5 s after the in-flight request finished")
    eq(rc, 0, "master exit status after SIGTERM")
    check(wait_for(lambda: not os.path.exists(pidf), 1), "pid_file %s still exists after exit" % pidf)
    left = wait_for(lambda: not m.live_known(), 2) or m.live_known()
    check(left is True, "workers %s still running after the master exited (workers were %s)" % (left, w))


def rotation_conf(ctx, port, log, rotate, retention):
    b = ctx.b
    return conf(listener("web", port, "p"), pool("p", [b["a"], b["b"]]), workers=2, access=log,
                log={"rotate": rotate, "retention": retention})


@test("rotation_keeps_lines", timeout=45)
def t_rotation_keeps_lines(ctx):
    port = free_port()
    log = os.path.join(ctx.dir, "access.log")
    m = ctx.master(rotation_conf(ctx, port, log, "1s", "1h"), [port])
    m.wait_workers(2)
    load = Load(port, threads=4, keepalive=2, allowed={"a", "b"}, seconds=10, record=True, prefix="/rot")
    ctx.on_cleanup(load.stop)
    load.start()
    load.wait(15)
    load.stop()
    check(load.failed == 0, load.failures())
    check(load.ok > 500, "only %d requests in 10 s" % load.ok)

    def total():
        rot, _ = rotated_files(log)
        return sum(count_lines(p) for p in rot + [log])

    wait_for(lambda: total() >= load.ok, 3)
    rot, odd = rotated_files(log)
    check(not odd, "files named like the access log but not PATH.YYYYmmdd-HHMMSS[.N]: %s"
          % [os.path.basename(p) for p in odd])
    check(len(rot) >= 5, "%d rotated files after 10 s with rotate = 1s: %s"
          % (len(rot), [os.path.basename(p) for p in rot]))
    uris, problems = [], []
    for p in rot + [log]:
        objs, pr = read_json_log(p)
        problems += pr
        uris += [o.get("uri") for o in objs]
    check(not problems, "split or broken lines: %s" % "; ".join(problems[:3]))
    dup = [u for u, n in count_by(uris).items() if n > 1]
    lost = set(load.paths) - set(uris)
    check(not dup, "%d requests logged more than once, e.g. %s" % (len(dup), dup[:3]))
    check(not lost, "%d of %d requests missing from the access logs, e.g. %s" % (len(lost), load.ok, sorted(lost)[:3]))
    eq(len(uris), load.ok, "lines over the live and %d rotated files" % len(rot))


@test("rotation_retention", timeout=45)
def t_rotation_retention(ctx):
    port = free_port()
    log = os.path.join(ctx.dir, "access.log")
    m = ctx.master(rotation_conf(ctx, port, log, "1s", "3s"), [port])
    m.wait_workers(2)
    load = Load(port, threads=2, keepalive=1, allowed={"a", "b"}, seconds=12)
    ctx.on_cleanup(load.stop)
    load.start()
    seen, gone = set(), set()
    t0 = time.monotonic()
    odd = []
    while time.monotonic() - t0 < 10:
        rot, o = rotated_files(log)
        odd += [p for p in o if p not in odd]
        now = set(rot)
        gone |= seen - now
        seen |= now
        time.sleep(0.2)
    rot, _ = rotated_files(log)
    now_wall = time.time()
    ages = []
    for p in rot:
        try:
            ages.append((os.stat(p).st_mtime, p))
        except FileNotFoundError:
            pass
    load.stop()
    check(load.failed == 0, load.failures())
    check(not odd, "files named like the access log but not PATH.YYYYmmdd-HHMMSS[.N]: %s"
          % [os.path.basename(p) for p in odd])
    check(len(seen) >= 3, "only %d rotated files appeared in 10 s with rotate = 1s" % len(seen))
    check(len(gone) >= 2, "only %d of %d rotated files were deleted in 10 s with retention = 3s"
          % (len(gone), len(seen)))
    ages.sort()
    old = ["%s (%.1f s)" % (os.path.basename(p), now_wall - t) for t, p in ages[:-1] if now_wall - t > 5.0]
    check(not old, "rotated files older than retention 3s + 2s slack: %s" % old)
    check(os.path.exists(log), "live access log %s missing" % log)


@test("sigusr1_reopen", timeout=20)
def t_sigusr1(ctx):
    port, log, m, _ = logged_master(ctx, "a")
    requests_now(port, 20, path="/before", threads=4)
    check(wait_for(lambda: count_lines(log) >= 20, 3), "access log has %d lines after 20 requests" % count_lines(log))
    os.rename(log, log + ".old")
    m.signal(signal.SIGUSR1)
    time.sleep(0.5)
    requests_now(port, 20, path="/after", threads=4)
    wait_for(lambda: count_lines(log) >= 20, 3)
    check(os.path.exists(log), "no new %s after rename + SIGUSR1 + 20 requests" % os.path.basename(log))
    new, p1 = read_json_log(log)
    old, p2 = read_json_log(log + ".old")
    check(not p1 and not p2, "broken lines: %s" % "; ".join((p1 + p2)[:3]))
    after_in_old = [o.get("uri") for o in old if str(o.get("uri", "")).startswith("/after")]
    check(not after_in_old, "%d requests after SIGUSR1 logged to the renamed file, e.g. %s"
          % (len(after_in_old), after_in_old[:2]))
    eq(sorted(o.get("uri") for o in new), sorted("/after/%d" % i for i in range(5) for _ in range(4)),
       "uris in the reopened access log")
    eq(len(old), 20, "lines in the renamed file")


@test("counters_summed", timeout=30)
def t_counters_summed(ctx):
    """Per-worker counters in shared memory, summed by the master (live and exited workers):
    requests split over two workers and a reload still add up to what the clients made."""
    b = ctx.b
    port = free_port()
    log = os.path.join(ctx.dir, "access.log")
    text = conf(listener("web", port, "p"), pool("p", [b["a"]]), workers=2, access=log)
    m = ctx.master(text, [port])
    m.wait_workers(2)
    requests_now(port, 120, path="/one", threads=6)
    m.reload(text)          # the first generation exits: its counts must survive as retired totals
    time.sleep(0.5)
    requests_now(port, 80, path="/two", threads=6)
    check(wait_for(lambda: count_lines(log) >= 200, 3), "access log has %d lines" % count_lines(log))
    workers = {o.get("pid") for o in read_json_log(log)[0]}
    check(len(workers) >= 3, "requests were served by only %d worker processes: %s" % (len(workers), workers))
    code, _ = m.stop(grace=10)
    eq(code, 0, "master exit status")
    lines = [l for l in m.stderr().splitlines() if "totals: server p/" in l]
    check(lines, "no totals line in the error log: %s" % m.stderr_tail())
    check(" 200 requests" in lines[-1], "totals line %r does not count the 200 requests" % lines[-1])


if __name__ == "__main__":
    it.run_suite(TESTS, "process", SUITE_BUDGET, __file__, Ctx, [(n, "http") for n in ("a", "b", "c", "d")],
                 cleanup_timeout=30)
