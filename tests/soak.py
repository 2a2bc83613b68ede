#!/usr/bin/env python3
"""A short soak: a client loop through lb while faults are injected in turn.

    python3 tests/soak.py [--only SUBSTR] [--keep]

Faults, one after the other, each with its own count of failed requests:
  worker kill      SIGKILL of one worker: only the requests in flight on it may fail (one per client thread)
  reload           SIGHUP with a changed file: nothing may fail
  descriptor squeeze  every worker's RLIMIT_NOFILE lowered to what it has open (prlimit), then given back:
                   lb pauses accepting and the clients wait in the backlog; nothing may fail
  backend reset    one backend resets every connection for a while: idempotent requests are retried on
                   the other, nothing may fail
At the end no client connection stays open in any lb process, none of lb's sockets is left in CLOSE_WAIT
(a connection the peer closed and lb forgot), and after SIGTERM no lb process is left behind.
The lb binary is $LB_BIN; helpers come from tests/process.py and tests/integration.py.
"""
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import integration as it  # noqa: E402
import process as pr  # noqa: E402
from integration import HOST, Fail, Skip, check, free_port  # noqa: E402

SUITE_BUDGET = 60
THREADS = 8
MAX_LOG_LINES = 150  # start, reload, restart and stop lines, retries, one throttled line a second per event


def common_line(lines):
    """The most frequent error-log line (its timestamp and pid cut) and its count."""
    counts = {}
    for l in lines:
        k = re.sub(r"^\S+ lb\[\d+\]: ", "", l)
        counts[k] = counts.get(k, 0) + 1
    return max(((n, k) for k, n in counts.items()), default=(0, ""))


def fds(pid):
    """{fd: link target} of a process (empty when it is gone)."""
    out = {}
    d = "/proc/%d/fd" % pid
    try:
        names = os.listdir(d)
    except OSError:
        return out
    for n in names:
        try:
            out[int(n)] = os.readlink(os.path.join(d, n))
        except OSError:
            pass
    return out


def tcp_sockets():
    """{inode: (local port, remote port, state)} of every IPv4/IPv6 TCP socket on the machine."""
    return {p[9]: (int(p[1].rsplit(":", 1)[1], 16), int(p[2].rsplit(":", 1)[1], 16), p[3]) for p in it.proc_net_tcp()}


def lb_sockets(pids):
    """[(pid, local port, remote port, state)] of the TCP sockets the processes hold."""
    socks = tcp_sockets()
    out = []
    for pid in pids:
        for target in fds(pid).values():
            m = re.match(r"socket:\[(\d+)\]$", target)
            if m and m.group(1) in socks:
                out.append((pid,) + socks[m.group(1)])
    return out


def nofile(pid):
    """(soft, hard) RLIMIT_NOFILE of a process, from /proc/PID/limits."""
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max open files"):
                p = line.split()
                return int(p[3]), int(p[4])
    raise Fail("no open-files limit for pid %d" % pid)


def set_nofile(pid, soft, hard):
    r = subprocess.run(["prlimit", "--pid", str(pid), "--nofile=%d:%d" % (soft, hard)],
                       capture_output=True, text=True, timeout=5)
    check(r.returncode == 0, "prlimit on pid %d: %s" % (pid, r.stderr.strip()))


def backend_mode(bk, mode):
    c = http.client.HTTPConnection(HOST, bk.port, timeout=5)
    try:
        c.request("GET", "/mode?set=%s" % mode)
        r = c.getresponse()
        r.read()
        check(r.status == 200, "backend %s /mode?set=%s: status %d" % (bk.name, mode, r.status))
    finally:
        c.close()


class SoakLoad(pr.Load):
    """The client loop, keeping every failure's message (the first 200) so each phase can show its own."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.msgs = []

    def _fail(self, kind, msg):
        super()._fail(kind, msg)
        with self.lock:
            if len(self.msgs) < 200:
                self.msgs.append(msg)


class Phases:
    """Failed-request counts of the load, phase by phase, with the first failures of each."""

    def __init__(self, load):
        self.load, self.rows = load, []
        self.mark = (load.ok, load.failed, 0)

    def end(self, name, allowed):
        with self.load.lock:
            ok, failed, n = self.load.ok, self.load.failed, len(self.load.msgs)
        self.rows.append((name, ok - self.mark[0], failed - self.mark[1], allowed, self.load.msgs[self.mark[2]:n][:2]))
        self.mark = (ok, failed, n)

    def report(self):
        return ", ".join("%s %d ok %d failed (allowed %d)%s" % (r[:4] + (" [%s]" % " | ".join(r[4]) if r[4] else "",))
                         for r in self.rows)

    def over(self):
        return [r for r in self.rows if r[2] > r[3]]


TESTS = []
test = it.registrar(TESTS)


@test("faults_in_turn", timeout=55)
def t_faults_in_turn(ctx):
    if subprocess.run(["which", "prlimit"], capture_output=True).returncode != 0:
        raise Skip("prlimit (util-linux) is not installed")
    b = ctx.b
    port = free_port()

    def text(order):
        return pr.conf(pr.listener("web", port, "p"), pr.pool("p", [b[n] for n in order]), workers=2)

    m = ctx.master(text("ab"), [port])
    m.wait_workers(2)
    master_fds = len(fds(m.pid))
    load = SoakLoad(port, threads=THREADS, keepalive=THREADS // 2, allowed={"a", "b"}, seconds=40.0)
    ctx.on_cleanup(load.stop)
    load.start()
    ph = Phases(load)
    time.sleep(2.0)
    ph.end("warm-up", 0)

    victim = m.workers()[0]
    os.kill(victim, signal.SIGKILL)
    m.wait_workers(2, timeout=3.0, exclude=[victim], what="after the worker kill: ")
    time.sleep(2.0)
    ph.end("worker kill", THREADS)

    m.reload(text("ba"))
    time.sleep(1.0)
    m.wait_workers(2, timeout=5.0, what="after the reload: ")
    time.sleep(1.5)
    ph.end("reload", 0)

    squeezed = []
    try:
        for w in m.workers():
            lim = nofile(w)
            squeezed.append((w, lim))
            set_nofile(w, len(fds(w)), lim[1])
        time.sleep(2.0)
    finally:
        for w, lim in squeezed:
            if pr.proc_stat(w):
                set_nofile(w, lim[0], lim[1])
    time.sleep(2.0)
    ph.end("descriptor squeeze", 0)

    backend_mode(b["a"], "reset")
    try:
        time.sleep(2.0)
    finally:
        backend_mode(b["a"], "ok")
    time.sleep(1.5)
    ph.end("backend reset", 0)

    check(load.stop(), "client threads still running 10 s after the load was stopped")
    ph.end("stop", 0)
    check(not ph.over(), ph.report())
    check(sum(r[1] for r in ph.rows[1:-1]) > 200, "too few requests answered: %s" % ph.report())
    check(m.alive(), "lb master exited with status %s" % m.proc.returncode)

    pids = [m.pid] + m.workers()
    left = []
    end = time.monotonic() + 3
    while time.monotonic() < end:
        left = [s for s in lb_sockets(pids) if s[3] != "0A" and (s[1] == port or s[3] == "08")]
        if not left:
            break
        time.sleep(0.1)
    check(not left, "lb sockets left after the clients closed (pid, local port, remote port, state): %s" % left)
    check(len(fds(m.pid)) == master_fds, "the master holds %d descriptors, %d at start: %s"
          % (len(fds(m.pid)), master_fds, sorted(fds(m.pid).values())))
    lines = m.stderr().splitlines()
    check(len(lines) < MAX_LOG_LINES, "the error log has %d lines after %.0f s of faults (at most %d): "
          "repeated events are not throttled; most common: %s" % (len(lines), load.seconds, MAX_LOG_LINES,
                                                                  common_line(lines)))

    known = list(m.known)
    code, outlived = m.stop(grace=10)
    check(code == 0, "master exit status %s: %s" % (code, m.stderr_tail()))
    check(not outlived, "workers %s outlived the master" % outlived)
    alive = [p for p in known if pr.proc_stat(p) and pr.proc_stat(p)[0] != "Z"]
    check(not alive, "lb processes left after the stop: %s" % alive)
    check(port not in it.listening_ports(), "port %d still listening after the stop" % port)
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((HOST, port))
    finally:
        s.close()


if __name__ == "__main__":
    it.run_suite(TESTS, "soak", SUITE_BUDGET, __file__, pr.Ctx, [(n, "http") for n in ("a", "b")],
                 cleanup_timeout=30)
