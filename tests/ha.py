#!/usr/bin/env python3
"""tests/ha.py: the lb HA pair failing over for real, in network namespaces.

Topology (all in namespaces made here, joined by a bridge in a namespace of their own):

    client 10.98.0.2 --+                      +-- lbA 10.98.0.11: lb + keepalived (priority 150)
                       +-- bridge (ns "sw") --+-- lbB 10.98.0.12: lb + keepalived (priority 100)
    backend 10.98.0.3 -+                      floating IP 10.98.0.100 on whichever is MASTER

Each lb node runs the repository's ./lb (LB_BIN) with [admin] on 127.0.0.1:8404 inside its
namespace, listening on the floating IP through ip_nonlocal_bind (as deploy/sysctl.d sets), and
adding `X-LB: A|B` to its responses so the client sees which node served it; and keepalived from
Debian in the foreground with deploy/keepalived.conf.in rendered by deploy/render.sh (unicast
peers, the /healthz vrrp_script) and deploy/keepalived-notify.sh logging each transition.
The client sends one GET a PERIOD on a new connection to the floating IP throughout.

Checks (one PASS/FAIL line each; summary `ha: N passed, N failed`):
  1. SIGTERM to lbA's lb (the master's): /healthz answers 503 and the process goes away; the
     floating IP is on lbB within  fall x interval + skew(lbB) + slack; the client's longest time
     without a success stays within that bound; the failures are bounded by it.
  2. lbA's lb started again: the IP comes back to lbA (preempt) within rise x interval + the master
     down timer (3 x advert_int + skew(lbA)) + preempt_delay + slack, with no client outage longer
     than the bound of 1.
  3. SIGKILL to lbA's keepalived (both processes: no goodbye advert): lbB takes the IP within the
     master down timer 3 x advert_int + skew(lbB) + slack; client outage within that bound.
  4. keepalived started again on lbA: it takes the IP back, the same bound as 2.
  5. planned switchover: SIGTERM to lbA's keepalived (`systemctl stop keepalived`) sends a
     priority-0 advert: lbB takes the IP within its skew time + slack; then lbA's lb is stopped.
Timing constants are read from the template (advert_int, interval, fall, rise), so the bounds
follow it.  Needs root, iproute2, keepalived, curl; everything is bounded (watchdog at 85 s) and
cleaned up: processes killed by PID, namespaces deleted, even on failure.
"""
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.chdir(ROOT)
LB = os.path.abspath(os.environ.get("LB_BIN", "./lb"))
TEMPLATE = "deploy/keepalived.conf.in"
PERIOD = 0.05  # client request period (s)
SLACK = 1.0  # scheduling, check run time, ARP update: added to every derived bound
DEADLINE = 85  # whole test (s)
PREEMPT_DELAY = 1  # rendered into the template for this test (production: see deploy/README.md)

SUB = "10.98.0"
VIP = SUB + ".100"
NODES = {"A": (SUB + ".11", 150), "B": (SUB + ".12", 100)}
CLIENT_IP, BACKEND_IP = SUB + ".2", SUB + ".3"

tag = "lbha%d" % os.getpid()
NS = {k: "%s%s" % (tag, k) for k in ("sw", "A", "B", "cl", "be")}
tmp = tempfile.mkdtemp(prefix="lb-ha-test.")
procs = {}  # name -> Popen
made_ns = []
SUITE = "ha"  # the name in PASS/FAIL lines (tests/ecmp.py reuses these helpers as "ecmp")
passed = failed = 0


def out(line):
    print(line, flush=True)


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        out("PASS %s/%s%s" % (SUITE, name, " (%s)" % detail if detail else ""))
    else:
        failed += 1
        out("FAIL %s/%s: %s" % (SUITE, name, detail or "failed"))
    return ok


def run(*cmd, ns=None, check_rc=True, timeout=10):
    if ns:
        cmd = ("ip", "netns", "exec", NS[ns]) + cmd
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if check_rc and r.returncode != 0:
        raise RuntimeError("%s: exit %d: %s" % (" ".join(cmd), r.returncode, r.stdout.strip()[-300:]))
    return r


def start(name, ns, *cmd, **kw):
    """Start cmd in namespace ns; `ip netns exec` execs it, so the Popen PID is the process's."""
    log = open(os.path.join(tmp, name + ".log"), "ab")
    p = subprocess.Popen(("ip", "netns", "exec", NS[ns]) + cmd, stdout=log, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, **kw)
    log.close()
    procs[name] = p
    return p


def cleanup():
    # SIGTERM first (keepalived and lb stop their children and reap them), SIGKILL after 3 s
    for name, p in list(procs.items()):
        if p.poll() is None:
            p.terminate()
    end = time.time() + 3
    for p in procs.values():
        try:
            p.wait(max(0.1, end - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
    # anything else still running in our namespaces (keepalived's VRRP child, lb workers, check
    # scripts): by PID, from `ip netns pids`
    for ns in made_ns:
        r = subprocess.run(("ip", "netns", "pids", ns), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for pid in r.stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
    for p in procs.values():
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            pass
    for ns in made_ns:
        subprocess.run(("ip", "netns", "delete", ns), stderr=subprocess.DEVNULL)
    if os.environ.get("HA_KEEP_TMP"):
        out("# kept %s" % tmp)
    else:
        shutil.rmtree(tmp, ignore_errors=True)


class Stopped(Exception):
    pass


def on_signal(signum, frame):
    raise Stopped("not finished within %d s" % DEADLINE if signum == signal.SIGALRM else
                  "interrupted by signal %d" % signum)


def template_timing():
    text = open(TEMPLATE).read()

    def num(key, block):
        m = re.search(r"%s\s*\{(.*?)\n\}" % block, text, re.S)
        v = re.search(r"^\s*%s\s+([0-9.]+)" % key, m.group(1), re.M) if m else None
        if not v:
            raise RuntimeError("%s: no %s in %s" % (TEMPLATE, key, block))
        return float(v.group(1))

    return {"advert": num("advert_int", "vrrp_instance LB"), "interval": num("interval", "vrrp_script chk_lb"),
            "fall": num("fall", "vrrp_script chk_lb"), "rise": num("rise", "vrrp_script chk_lb")}


def holders():
    """The lb nodes that have the floating IP on eth0 now."""
    h = []
    for k in ("A", "B"):
        r = run("ip", "-4", "-o", "addr", "show", "dev", "eth0", ns=k, check_rc=False)
        if (" %s/" % VIP) in r.stdout:
            h.append(k)
    return h


def wait_for(cond, secs, step=0.05):
    end = time.time() + secs
    while True:
        if cond():
            return time.time()
        if time.time() >= end:
            return None
        time.sleep(step)


def healthz(node):
    r = run("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "1",
            "http://127.0.0.1:8404/healthz", ns=node, check_rc=False)
    return r.stdout.strip()


def client_records():
    recs = []
    try:
        with open(os.path.join(tmp, "client.out")) as f:
            for line in f:
                p = line.split()
                if len(p) >= 3 and line.endswith("\n"):
                    recs.append((float(p[0]), p[1] == "ok", p[2]))
    except FileNotFoundError:
        pass
    return recs


def analyse(t0, t1):
    """Client requests started in [t0, t1]: (count, failures, longest time between two successes
    around or inside the window, the nodes that served, in order, repeats collapsed)."""
    recs = client_records()
    inside = [r for r in recs if t0 <= r[0] <= t1]
    before = [r for r in recs if r[0] < t0 and r[1]]
    oks = ([before[-1][0]] if before else []) + [r[0] for r in inside if r[1]]
    gap = max((b - a for a, b in zip(oks, oks[1:])), default=float("inf"))
    via = []
    for r in inside:
        if r[1] and via[-1:] != [r[2]]:
            via.append(r[2])
    return len(inside), sum(1 for r in inside if not r[1]), gap, via


def transitions(node):
    try:
        return [l.split()[-3] for l in open(os.path.join(tmp, "notify%s.log" % node)) if " is now " in l]
    except FileNotFoundError:
        return []


def textfile_master(node):
    """lb_keepalived_master as the notify script last wrote it for node exporter."""
    try:
        m = re.search(r"^lb_keepalived_master\{[^}]*\} (\d)$", open(os.path.join(tmp, "text%s" % node,
                                                                                "lb_keepalived.prom")).read(), re.M)
        return m.group(1) if m else "?"
    except OSError:
        return "-"


def lb_conf(node):
    return """[global]
workers = 1
user = nobody
shutdown_timeout = 5s
[log]
access = off
error = {tmp}/lb{n}.err
[admin]
bind = 127.0.0.1:8404
[listener web]
bind = {vip}:80
pool = app
[pool app]
server = be {be}:8080
health_interval = 1s
[route all]
pool = app
response_header_add = X-LB: {n}
""".format(tmp=tmp, n=node, vip=VIP, be=BACKEND_IP)


CLIENT = r"""
import os, socket, sys, time
vip, path, stop, secs, period = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
end = time.time() + secs
f = open(path, "w", buffering=1)
while time.time() < end and not os.path.exists(stop):
    t0 = time.time()
    what = "?"
    try:
        s = socket.create_connection((vip, 80), timeout=0.5)
        s.settimeout(0.5)
        s.sendall(b"GET / HTTP/1.1\r\nHost: ha.test\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
        s.close()
        head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        lbh = [h.split(":", 1)[1].strip() for h in head[1:] if h.lower().startswith("x-lb:")]
        ok = head[0].split(" ")[1:2] == ["200"] and len(lbh) == 1
        what = lbh[0] if ok else "status:" + head[0].replace(" ", "_")[:40]
    except Exception as e:
        ok, what = False, type(e).__name__
    f.write("%.3f %s %s\n" % (t0, "ok" if ok else "fail", what))
    time.sleep(max(0.0, period - (time.time() - t0)))
"""


def start_lb(node):
    p = start("lb" + node, node, LB, "-c", os.path.join(tmp, "lb%s.ini" % node))
    if wait_for(lambda: healthz(node) == "200", 10, 0.1) is None:
        raise RuntimeError("lb in %s: /healthz not 200 after 10 s: %s" % (node, tail("lb%s.log" % node)))
    return p


def start_keepalived(node):
    base = os.path.join(tmp, "ka" + node)
    return start("ka" + node, node, "keepalived", "-n", "-l", "-D", "-P", "-f", base + ".conf",
                 "-p", base + ".pid", "-r", base + ".vrrp.pid")


def tail(name, n=3):
    try:
        return " | ".join(open(os.path.join(tmp, name)).read().strip().splitlines()[-n:])
    except OSError:
        return "(no %s)" % name


def kill_keepalived(node):
    """SIGKILL keepalived's VRRP child, then its parent: a crash, no priority-0 advert."""
    pids = []
    try:
        pids.append(int(open(os.path.join(tmp, "ka%s.vrrp.pid" % node)).read().split()[0]))
    except (OSError, ValueError, IndexError):
        pass
    pids.append(procs["ka" + node].pid)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    procs["ka" + node].wait(5)
    return pids


def served(via):
    return " then ".join("lb" + v for v in via) or "nobody"


def fmt(x):
    return "inf" if x == float("inf") else "%.2f" % x


def main():
    missing = [t for t in ("ip", "keepalived", "curl") if not shutil.which(t)]
    if os.geteuid() != 0:
        check("setup", False, "needs root (network namespaces, keepalived); not run")
        return
    if missing:
        check("setup", False, "not found: %s (Debian packages iproute2, keepalived, curl)" % " ".join(missing))
        return
    if not os.access(LB, os.X_OK):
        check("setup", False, "%s is not built (make lb)" % LB)
        return
    tm = template_timing()
    adv, interval, fall, rise = tm["advert"], tm["interval"], tm["fall"], tm["rise"]

    def skew(prio):
        return (256 - prio) / 256.0 * adv

    down_timer = {k: 3 * adv + skew(p) for k, (_, p) in NODES.items()}
    b_lbfail = fall * interval + skew(NODES["B"][1]) + SLACK
    b_crash = down_timer["B"] + SLACK
    b_back = rise * interval + down_timer["A"] + PREEMPT_DELAY + SLACK + 1.0  # + lb / keepalived start
    b_stop = skew(NODES["B"][1]) + SLACK
    max_fail = math.ceil(b_lbfail / PERIOD) + 2
    out("# template: advert_int %gs, check interval %gs fall %d rise %d; bounds: lb failure %.2fs, keepalived "
        "crash %.2fs, failback %.2fs, switchover %.2fs; client: a GET every %gs"
        % (adv, interval, fall, rise, b_lbfail, b_crash, b_back, b_stop, PERIOD))

    # --- network: namespaces on a bridge -------------------------------------------------------
    try:
        for k, ns in NS.items():
            run("ip", "netns", "add", ns)
            made_ns.append(ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "-n", NS["sw"], "link", "add", "br0", "type", "bridge")
        run("ip", "-n", NS["sw"], "link", "set", "br0", "up")
        addrs = {"A": NODES["A"][0], "B": NODES["B"][0], "cl": CLIENT_IP, "be": BACKEND_IP}
        for k, ip in addrs.items():
            run("ip", "link", "add", "eth0", "netns", NS[k], "type", "veth", "peer", "name", "p" + k, "netns", NS["sw"])
            run("ip", "-n", NS["sw"], "link", "set", "p" + k, "master", "br0", "up")
            run("ip", "-n", NS[k], "addr", "add", ip + "/24", "dev", "eth0")
            run("ip", "-n", NS[k], "link", "set", "eth0", "up")
        for k in ("A", "B"):
            run("sysctl", "-qw", "net.ipv4.ip_nonlocal_bind=1", ns=k)
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
        check("setup", False, "network namespaces cannot be made here: %s" % e)
        return

    # --- backend, lb on both nodes ------------------------------------------------------------
    start("backend", "be", sys.executable, "tests/backend.py", "--host", BACKEND_IP, "--port", "8080", "--name", "be")
    if wait_for(lambda: "ready" in tail("backend.log"), 10, 0.1) is None:
        check("setup", False, "backend did not start: " + tail("backend.log"))
        return
    try:
        for k in ("A", "B"):
            open(os.path.join(tmp, "lb%s.ini" % k), "w").write(lb_conf(k))
            start_lb(k)
    except RuntimeError as e:
        check("setup", False, str(e))
        return

    # --- keepalived: the shipped template, the shipped notify script -------------------------
    notify = os.path.join(tmp, "notify.sh")
    shutil.copy("deploy/keepalived-notify.sh", notify)
    os.chmod(notify, 0o755)
    os.chmod(tmp, 0o755)
    for k, (ip, prio) in NODES.items():
        peer = NODES["B" if k == "A" else "A"][0]
        env = os.path.join(tmp, "ha%s.env" % k)
        os.mkdir(os.path.join(tmp, "text" + k))
        open(env, "w").write("LB_HA_LOG=%s/notify%s.log\nLB_HA_TEXTFILE_DIR=%s/text%s\n" % (tmp, k, tmp, k))
        r = subprocess.run(("deploy/render.sh", TEMPLATE, os.path.join(tmp, "ka%s.conf" % k), "ROUTER_ID=lb" + k,
                            "PRIORITY=%d" % prio, "IFACE=eth0", "SELF_IP=" + ip, "PEER_IP=" + peer, "VRID=51",
                            "VIP=%s/24" % VIP, "VIP_DEV=eth0", "PREEMPT_DELAY=%d" % PREEMPT_DELAY,
                            "NOTIFY=%s --env %s" % (notify, env)),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            check("setup", False, "render.sh: " + r.stdout.strip())
            return
    for k in ("A", "B"):
        start_keepalived(k)
    t = wait_for(lambda: holders() == ["A"], 15)
    if not check("start", t is not None and procs["kaA"].poll() is None and procs["kaB"].poll() is None,
                 "floating IP on lbA (priority %d), not on lbB" % NODES["A"][1] if t else
                 "floating IP on %s after 15 s; keepalived A: %s; B: %s" % (holders() or "no node", tail("kaA.log"),
                                                                           tail("kaB.log"))):
        return
    warn = [l for k in ("A", "B") for l in open(os.path.join(tmp, "ka%s.log" % k))
            if re.search(r"Unknown keyword|\(Line \d+\)|unsafe|[Ii]nsecure|not executable|cannot|Unable", l)]
    check("keepalived-config", not warn, "keepalived read the rendered template without complaint" if not warn
          else " | ".join(l.strip() for l in warn[:3]))

    open(os.path.join(tmp, "client.py"), "w").write(CLIENT)
    stop = os.path.join(tmp, "client.stop")
    start("client", "cl", sys.executable, os.path.join(tmp, "client.py"), VIP, os.path.join(tmp, "client.out"), stop,
          str(DEADLINE), str(PERIOD))
    t = wait_for(lambda: sum(1 for r in client_records() if r[1] and r[2] == "A") >= 10, 10)
    n, nf, gap, via = analyse(0, time.time())
    if not check("client-before", t is not None and nf == 0 and via == ["A"], "%d requests, all served by lbA" % n
                 if t is not None and nf == 0 and via == ["A"] else "%d requests, %d failed, served by %s" % (n, nf, via)):
        return
    summary = []

    # --- 1. lb on the master stopped ---------------------------------------------------------
    t0 = time.time()
    procs["lbA"].send_signal(signal.SIGTERM)
    codes = []
    wait_for(lambda: codes.append(healthz("A")) or codes[-1] != "200", 2, 0.02)
    code = codes[-1]
    t_fo = wait_for(lambda: holders() == ["B"], 3 * b_lbfail)
    try:
        rc = procs["lbA"].wait(10)
    except subprocess.TimeoutExpired:
        rc = None
    check("lb-stop-healthz", code in ("503", "000") and rc == 0,
          "lbA's /healthz said %s right after SIGTERM, lb exited %s" % (code, rc))
    time.sleep(1.0)
    n, nf, gap, via = analyse(t0, time.time())
    fo = t_fo - t0 if t_fo else float("inf")
    check("lb-stop-failover", t_fo is not None and fo <= b_lbfail,
          "floating IP on lbB %.2f s after SIGTERM to lbA's lb; bound %.2f s = fall %d x interval %gs + skew %.2fs + "
          "slack %gs" % (fo, b_lbfail, fall, interval, skew(NODES["B"][1]), SLACK) if t_fo else
          "floating IP on %s %.1f s after SIGTERM" % (holders(), 3 * b_lbfail))
    check("lb-stop-client", gap <= b_lbfail and nf <= max_fail and via[-1:] == ["B"],
          "%d of %d requests failed (bound %d), longest time without a success %s s (bound %.2f s), served by "
          "%s" % (nf, n, max_fail, fmt(gap), b_lbfail, served(via)))
    summary.append("lb stop: IP moved in %.2f s, client gap %s s, %d failed" % (fo, fmt(gap), nf))
    tr = (transitions("A"), transitions("B"))
    tf = (textfile_master("A"), textfile_master("B"))
    check("lb-stop-notify", tr[0][-1:] == ["FAULT"] and tr[1][-1:] == ["MASTER"] and tf == ("0", "1"),
          "notify script logged lbA %s, lbB %s; lb_keepalived_master A %s, B %s"
          % (" -> ".join(tr[0]), " -> ".join(tr[1]), tf[0], tf[1]))

    # --- 2. lb back on the primary: the IP comes back (preempt) -------------------------------
    t1 = time.time()
    try:
        start_lb("A")
    except RuntimeError as e:
        check("lb-return-failback", False, str(e))
        return
    t_fb = wait_for(lambda: holders() == ["A"], 2 * b_back)
    time.sleep(1.0)
    n, nf, gap, via = analyse(t1, time.time())
    fb = t_fb - t1 if t_fb else float("inf")
    check("lb-return-failback", t_fb is not None and fb <= b_back,
          "floating IP back on lbA %.2f s after its lb started; bound %.2f s = rise %d x interval %gs + master down "
          "%.2fs + preempt_delay %ds + slack %gs + start 1s" % (fb, b_back, rise, interval, down_timer["A"],
                                                                PREEMPT_DELAY, SLACK) if t_fb else
          "floating IP on %s %.1f s after lbA's lb started" % (holders(), 2 * b_back))
    check("lb-return-client", gap <= b_lbfail and via[-1:] == ["A"],
          "%d of %d requests failed, longest time without a success %s s (bound %.2f s), served by %s"
          % (nf, n, fmt(gap), b_lbfail, served(via)))
    summary.append("failback: %.2f s, client gap %s s, %d failed" % (fb, fmt(gap), nf))

    # --- 3. keepalived on the master crashes ------------------------------------------------
    t2 = time.time()
    killed = kill_keepalived("A")
    t_fo = wait_for(lambda: "B" in holders(), 3 * b_crash)
    time.sleep(1.0)
    n, nf, gap, via = analyse(t2, time.time())
    fo = t_fo - t2 if t_fo else float("inf")
    stale = "A" in holders()
    check("keepalived-crash-failover", t_fo is not None and fo <= b_crash,
          "SIGKILL to lbA's keepalived (PIDs %s): lbB took the floating IP after %.2f s; bound %.2f s = 3 x advert_int "
          "%gs + skew %.2fs + slack %gs%s" % (" ".join(map(str, killed)), fo, b_crash, adv, skew(NODES["B"][1]), SLACK,
                                             "; lbA still has the address (nobody removed it)" if stale else "")
          if t_fo else "floating IP on %s %.1f s after SIGKILL" % (holders(), 3 * b_crash))
    check("keepalived-crash-client", gap <= b_crash and via[-1:] == ["B"],
          "%d of %d requests failed, longest time without a success %s s (bound %.2f s), served by %s"
          % (nf, n, fmt(gap), b_crash, served(via)))
    summary.append("keepalived crash: IP on lbB in %.2f s, client gap %s s, %d failed" % (fo, fmt(gap), nf))

    # --- 4. keepalived back on the primary ---------------------------------------------------
    t3 = time.time()
    start_keepalived("A")
    t_fb = wait_for(lambda: holders() == ["A"], 2 * b_back)
    time.sleep(1.0)
    n, nf, gap, via = analyse(t3, time.time())
    fb = t_fb - t3 if t_fb else float("inf")
    check("keepalived-return-failback", t_fb is not None and fb <= b_back,
          "floating IP back on lbA only, %.2f s after its keepalived started (bound %.2f s)" % (fb, b_back) if t_fb
          else "floating IP on %s %.1f s after keepalived started on lbA" % (holders(), 2 * b_back))
    check("keepalived-return-client", gap <= b_lbfail and via[-1:] == ["A"],
          "%d of %d requests failed, longest time without a success %s s (bound %.2f s), served by %s"
          % (nf, n, fmt(gap), b_lbfail, served(via)))
    summary.append("failback: %.2f s, client gap %s s, %d failed" % (fb, fmt(gap), nf))

    # --- 5. planned switchover: `systemctl stop keepalived` on the master first, then lb --------
    t4 = time.time()
    procs["kaA"].send_signal(signal.SIGTERM)
    t_fo = wait_for(lambda: holders() == ["B"], 3 * b_stop)
    fo = t_fo - t4 if t_fo else float("inf")
    try:
        rc = procs["kaA"].wait(5)
    except subprocess.TimeoutExpired:
        rc = None
    procs["lbA"].send_signal(signal.SIGTERM)
    time.sleep(1.0)
    n, nf, gap, via = analyse(t4, time.time())
    check("switchover", t_fo is not None and fo <= b_stop and rc == 0,
          "SIGTERM to lbA's keepalived: priority-0 advert, lbB took the floating IP after %.2f s (bound %.2f s = skew "
          "%.2fs + slack %gs), keepalived exited %s" % (fo, b_stop, skew(NODES["B"][1]), SLACK, rc))
    check("switchover-client", gap <= b_stop and via[-1:] == ["B"],
          "%d of %d requests failed, longest time without a success %s s (bound %.2f s), served by %s; lbA's lb "
          "stopped after the move" % (nf, n, fmt(gap), b_stop, served(via)))
    summary.append("planned switchover: %.2f s, client gap %s s, %d failed" % (fo, fmt(gap), nf))

    open(stop, "w").close()
    procs["client"].wait(5)
    recs = client_records()
    out("# measured: " + "; ".join(summary) + "; client total %d requests, %d failed" %
        (len(recs), sum(1 for r in recs if not r[1])))


if __name__ == "__main__":
    for sig in (signal.SIGALRM, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    signal.alarm(DEADLINE)
    try:
        main()
    except Stopped as e:
        check("time-limit", False, str(e))
    except Exception as e:  # report, never a silent pass
        check("error", False, "%s: %s" % (type(e).__name__, e))
    finally:
        signal.alarm(0)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # let the cleanup finish
        cleanup()
    out("ha: %d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed or not passed else 0)
