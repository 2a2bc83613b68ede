#!/usr/bin/env python3
"""tests/ecmp.py: three active lb nodes behind an ECMP route, one killed, in network namespaces.

Topology (namespaces made here; tests/ha.py's helpers start, check and clean up):

    client 10.97.1.2 --- router --+-- node 1 10.97.11.2 --+
    backend 10.97.2.2 --/   |     +-- node 2 10.97.12.2 --+-- each: the shared address 10.97.0.100/32
                            |     +-- node 3 10.97.13.2 --+   on lo, ./lb listening on it (X-LB: N)
           route 10.97.0.100/32 nexthop via .11.2 nexthop via .12.2 nexthop via .13.2  (L4 hash)

The router stands in for Linode's route servers (BGP multipath) or a NodeBalancer: its multipath
route holds the nodes that announce the shared address. Each node runs the shipped
deploy/ecmp/lb-health-route.sh against its own lb's /healthz, with LB_ANNOUNCE / LB_WITHDRAW set
to a stand-in for FRR's `network` statement (rs.sh: the announcing nodes become the route's
nexthops, as a BGP speaker with multipath installs them). A client sends one GET a PERIOD on a new
connection to the shared address (ha.py's client, bounded in time).

Checks (PASS/FAIL lines `ecmp/NAME`, summary `ecmp: N passed, N failed`):
  1. start: the three nodes announced, the route has three nexthops, all three serve the client.
  2. kill: SIGKILL to node 2's lb (master and workers): its health script withdraws within
     FALL x INTERVAL + TIMEOUT + slack; the client's failures stop at the withdrawal (none later) and
     their count is bounded; nodes 1 and 3 serve. Reports failed requests and the time to recover.
  3. rejoin: node 2's lb started again is announced after RISE checks and serves again.
  4. tls-resumption: a TLS session made on node 1 is resumed on node 3 with the shared ticket key
      file (tls_ticket_keys); needs the OpenSSL build (run.sh runs the suite with ./lb-openssl when it is
     built); a BearSSL lb refuses the key and the check says it is skipped and why.
Without namespaces, first: health-script-frr: lb-health-route.sh's default (FRR) commands, run
through a fake vtysh against a local /healthz that turns 503, then SIGTERM; frr-config: the
rendered deploy/ecmp/frr.conf.in passes `vtysh -C` (skipped without FRR).
Needs root, iproute2, curl, flock, openssl; everything is bounded (watchdog DEADLINE s) and cleaned up.
"""
import http.server
import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ha  # noqa: E402  (its namespaces, processes and temporary directory are this run's)

PERIOD = 0.02      # client request period (s)
INTERVAL, FALL, RISE, TIMEOUT = 0.2, 2, 2, 0.5  # lb-health-route.sh -i -f -r -t
SLACK = 1.0
DEADLINE = 60
SUB = "10.97"
VIP = SUB + ".0.100"
NODES = ("1", "2", "3")
HEALTH = os.path.join(ha.ROOT, "deploy", "ecmp", "lb-health-route.sh")

RS = r"""#!/bin/sh
# rs.sh announce|withdraw NODE: the router's route to the shared address has the announcing nodes
# as nexthops (what a BGP speaker with multipath installs from the route servers)
set -e
exec 9>"{tmp}/rs.lock"
flock 9
case $1 in announce) touch "{tmp}/ann.$2" ;; withdraw) rm -f "{tmp}/ann.$2" ;; *) exit 2 ;; esac
hops=""
for f in "{tmp}"/ann.*; do
	[ -e "$f" ] || continue
	hops="$hops nexthop via {sub}.1${{f##*.}}.2"
done
if [ -n "$hops" ]; then
	ip netns exec {rt} ip route replace {vip}/32 $hops
else
	ip netns exec {rt} ip route del {vip}/32 2>/dev/null || true
fi
"""


def nexthops():
    """The nodes the router's route to the shared address leads to now."""
    r = ha.run("ip", "route", "show", VIP, ns="rt", check_rc=False)
    return sorted(n for n in NODES if " %s.1%s.2 " % (SUB, n) in r.stdout + " ")


def kill_lb(node):
    """SIGKILL to every lb process of the node (master and workers): the node's lb is gone at once."""
    r = subprocess.run(("ip", "netns", "pids", ha.NS[node]), stdout=subprocess.PIPE, text=True)
    killed = 0
    for pid in r.stdout.split():
        try:
            if os.readlink("/proc/%s/exe" % pid) == ha.LB:
                os.kill(int(pid), signal.SIGKILL)
                killed += 1
        except (OSError, ValueError):
            pass
    ha.procs["lb" + node].wait(5)
    return killed


def network():
    for k, ns in ha.NS.items():
        ha.run("ip", "netns", "add", ns)
        ha.made_ns.append(ns)
        ha.run("ip", "-n", ns, "link", "set", "lo", "up")
    links = {"cl": (SUB + ".1.1", SUB + ".1.2"), "be": (SUB + ".2.1", SUB + ".2.2")}
    links.update({n: ("%s.1%s.1" % (SUB, n), "%s.1%s.2" % (SUB, n)) for n in NODES})
    for k, (rt_ip, ip) in links.items():
        ha.run("ip", "link", "add", "eth0", "netns", ha.NS[k], "type", "veth", "peer", "name", "to" + k,
               "netns", ha.NS["rt"])
        ha.run("ip", "-n", ha.NS["rt"], "addr", "add", rt_ip + "/24", "dev", "to" + k)
        ha.run("ip", "-n", ha.NS["rt"], "link", "set", "to" + k, "up")
        ha.run("ip", "-n", ha.NS[k], "addr", "add", ip + "/24", "dev", "eth0")
        ha.run("ip", "-n", ha.NS[k], "link", "set", "eth0", "up")
        ha.run("ip", "-n", ha.NS[k], "route", "add", "default", "via", rt_ip)
    for n in NODES:
        ha.run("ip", "-n", ha.NS[n], "addr", "add", VIP + "/32", "dev", "lo")
    for sysctl in ("net.ipv4.ip_forward=1", "net.ipv4.fib_multipath_hash_policy=1", "net.ipv4.conf.all.rp_filter=0"):
        ha.run("sysctl", "-qw", sysctl, ns="rt")


def start_health(node):
    env = dict(os.environ, LB_ANNOUNCE="sh %s/rs.sh announce %s" % (ha.tmp, node),
               LB_WITHDRAW="sh %s/rs.sh withdraw %s" % (ha.tmp, node))
    ha.start("health" + node, node, "sh", HEALTH, "-i", str(INTERVAL), "-f", str(FALL), "-r", str(RISE),
             "-t", str(TIMEOUT), env=env)


def since(t0):
    """(requests, failures, first and last failure start - t0, the nodes that served) of the client after t0"""
    recs = [r for r in ha.client_records() if r[0] >= t0]
    fails = [r[0] - t0 for r in recs if not r[1]]
    return len(recs), len(fails), (fails[0] if fails else None), (fails[-1] if fails else None), \
        sorted({r[2] for r in recs if r[1]})


def ticket_key_check(lbconf):
    """None when lb -t takes tls_ticket_keys (with the TLS listener in lbconf), else why not."""
    r = subprocess.run((ha.LB, "-t", "-c", lbconf), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=10)
    if r.returncode != 0 and "tls_ticket_keys" in r.stdout:
        return "needs tls_ticket_keys (the OpenSSL build, ./lb-openssl): lb -t says: %s" % r.stdout.strip().splitlines()[0][-160:]
    return None if r.returncode == 0 else "lb -t refused the TLS listener: %s" % r.stdout.strip()[-200:]


def with_tls(conf):
    """A node's config with a TLS listener (one certificate for all) and the shared ticket key file
    ([global] tls_ticket_keys)."""
    cert, key = os.path.join(ha.tmp, "cert.pem"), os.path.join(ha.tmp, "ticket.key")
    return conf.replace("[global]\n", "[global]\ntls_ticket_keys = %s\n" % key, 1) + \
        "[listener tls]\nbind = *:443\ntls = on\ncert = %s\npool = app\n" % cert


def make_tls_files():
    """The certificate (ecmp.test) and one ticket key file (80 random bytes: one key) every node reads."""
    cert, key = os.path.join(ha.tmp, "cert.pem"), os.path.join(ha.tmp, "ticket.key")
    ha.run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
           "-subj", "/CN=ecmp.test", "-keyout", cert, "-out", cert + ".crt")
    with open(cert, "a") as f:
        f.write(open(cert + ".crt").read())
    with open(key, "wb") as f:
        f.write(os.urandom(80))
    os.chmod(key, 0o644)


def tls_resumed():
    """(resumed, detail): a session from node 1 offered to node 3, from the router."""
    sess = os.path.join(ha.tmp, "sess.pem")
    a = ha.run("openssl", "s_client", "-connect", SUB + ".11.2:443", "-servername", "ecmp.test", "-sess_out", sess,
               "-no_tls1_3", ns="rt", check_rc=False, timeout=10)
    b = ha.run("openssl", "s_client", "-connect", SUB + ".13.2:443", "-servername", "ecmp.test", "-sess_in", sess,
               "-no_tls1_3", ns="rt", check_rc=False, timeout=10)
    return "Reused," in b.stdout, "node 1: %s; node 3: %s" % (
        "session made" if os.path.exists(sess) else a.stdout.strip()[-120:],
        [l for l in b.stdout.splitlines() if l.startswith(("Reused", "New"))][:1])


def health_script_frr():
    """The script's FRR commands (a fake vtysh records them): announce while /healthz is 200, withdraw
    after FALL failures, withdraw again on SIGTERM (the repeat is silent)."""
    code = [200]

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(code[0])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    bindir, log = os.path.join(ha.tmp, "fakebin"), os.path.join(ha.tmp, "vtysh.log")
    os.makedirs(bindir, exist_ok=True)
    with open(os.path.join(bindir, "vtysh"), "w") as f:
        f.write("#!/bin/sh\nprintf '%%s|' \"$@\" >>%s\necho >>%s\n" % (log, log))
    os.chmod(os.path.join(bindir, "vtysh"), 0o755)
    env = dict(os.environ, PATH=bindir + ":" + os.environ["PATH"], VIP="203.0.113.10", BGP_ASN="65001")
    env.pop("LB_ANNOUNCE", None)
    env.pop("LB_WITHDRAW", None)
    p = subprocess.Popen(("sh", HEALTH, "-u", "http://127.0.0.1:%d/healthz" % srv.server_address[1], "-i", "0.1",
                          "-f", "2", "-r", "2", "-R", "0"), env=env, stderr=subprocess.PIPE, text=True)
    lines = lambda: open(log).read().replace("-c|", "").splitlines() if os.path.exists(log) else []  # noqa: E731
    try:
        for n, then in ((1, 503), (2, 200), (3, None)):  # announced, withdrawn, announced again
            ha.wait_for(lambda: len(lines()) >= n, 3)
            code[0] = then or code[0]
    finally:
        p.terminate()
        err = p.communicate(timeout=5)[1]
        srv.shutdown()
    frr = "configure terminal|router bgp 65001|address-family ipv4 unicast|"
    on, off = frr + "network 203.0.113.10/32 route-map primary|", frr + "no network 203.0.113.10/32|"
    want = [on, off, on, off]
    ha.check("health-script-frr", lines() == want and "withdraw (stopping)" in err,
             "vtysh calls: announce, withdraw after 2 failed checks, announce, withdraw on SIGTERM" if lines() == want else
             "vtysh calls %r, want %r; stderr %s" % (lines(), want, err.strip()[-200:]))


def frr_config():
    conf = os.path.join(ha.tmp, "frr.conf")
    r = subprocess.run(("deploy/render.sh", "deploy/ecmp/frr.conf.in", conf, "HOSTNAME=lb1", "DC_ID=14",
                        "VIP=203.0.113.10"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        ha.check("frr-config", False, "render.sh: " + r.stdout.strip())
    elif not os.path.exists("/usr/bin/vtysh"):
        ha.out("PASS ecmp/frr-config (skipped: no vtysh; Debian package frr)")  # not counted
    else:
        r = subprocess.run(("vtysh", "-C", "-f", conf), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=20)
        ha.check("frr-config", r.returncode == 0, "vtysh -C accepts the rendered frr.conf.in" if r.returncode == 0
                 else "vtysh -C: exit %d: %s" % (r.returncode, r.stdout.strip()[-300:]))


def main():
    health_script_frr()
    frr_config()
    if os.geteuid() != 0:
        ha.check("setup", False, "needs root (network namespaces); not run")
        return
    tag = "lbec%d" % os.getpid()
    ha.NS = {k: tag + k for k in ("rt", "cl", "be") + NODES}
    ha.VIP, ha.BACKEND_IP = VIP, SUB + ".2.2"
    try:
        network()
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
        ha.check("setup", False, "network namespaces cannot be made here: %s" % e)
        return
    os.chmod(ha.tmp, 0o755)
    with open(os.path.join(ha.tmp, "rs.sh"), "w") as f:
        f.write(RS.format(tmp=ha.tmp, sub=SUB, rt=ha.NS["rt"], vip=VIP))
    ha.start("backend", "be", sys.executable, "tests/backend.py", "--host", ha.BACKEND_IP, "--port", "8080",
             "--name", "be")
    if ha.wait_for(lambda: "ready" in ha.tail("backend.log"), 10, 0.1) is None:
        ha.check("setup", False, "backend did not start: " + ha.tail("backend.log"))
        return
    make_tls_files()
    tls_conf = os.path.join(ha.tmp, "tls-check.ini")
    with open(tls_conf, "w") as f:
        f.write(with_tls(ha.lb_conf("1")))
    tls_skip = ticket_key_check(tls_conf)
    for n in NODES:
        with open(os.path.join(ha.tmp, "lb%s.ini" % n), "w") as f:
            f.write(ha.lb_conf(n) if tls_skip else with_tls(ha.lb_conf(n)))
        ha.start_lb(n)
        start_health(n)

    # 1. all three announced and serving
    t = ha.wait_for(lambda: nexthops() == list(NODES), 5)
    if not ha.check("start-announced", t is not None, "route to %s: nexthops %s" % (VIP, nexthops())):
        return
    open(os.path.join(ha.tmp, "client.py"), "w").write(ha.CLIENT)
    stop = os.path.join(ha.tmp, "client.stop")
    t0 = time.time()
    ha.start("client", "cl", sys.executable, os.path.join(ha.tmp, "client.py"), VIP,
             os.path.join(ha.tmp, "client.out"), stop, str(DEADLINE - 20), str(PERIOD))
    ha.wait_for(lambda: since(t0)[4] == list(NODES), 5)
    n, nf, _, _, via = since(t0)
    if not ha.check("start-serving", via == list(NODES) and nf == 0,
                    "%d requests, %d failed, served by nodes %s" % (n, nf, " ".join(via))):
        return

    # 2. node 2's lb killed: withdrawn, the loop goes on through nodes 1 and 3
    bound = FALL * INTERVAL + TIMEOUT + SLACK
    t_kill = time.time()
    killed = kill_lb("2")
    t_wd = ha.wait_for(lambda: nexthops() == ["1", "3"], bound + 2, 0.01)
    withdraw = (t_wd - t_kill) if t_wd else float("inf")
    time.sleep(1.5)
    n, nf, first, last, via = since(t_kill)
    recover = last if last is not None else 0.0
    late = [r for r in ha.client_records() if t_wd and r[0] > t_wd + 0.25 and not r[1]]
    max_fail = int(bound / PERIOD) + 2
    ha.check("kill-withdrawn", withdraw <= bound,
             "%d lb processes killed; route withdrawn after %.2f s (bound FALL %d x INTERVAL %gs + TIMEOUT %gs + "
             "slack %gs = %.2f s); %s" % (killed, withdraw, FALL, INTERVAL, TIMEOUT, SLACK, bound, ha.tail("health2.log", 2)))
    ha.check("kill-client", t_wd and not late and recover <= bound and nf <= max_fail and via == ["1", "3"],
             "%d requests since the kill, %d failed (bound %d), the last failure %.2f s after the kill (time to "
             "recover; bound %.2f s), failures after the withdrawal + 0.25 s: %d, served by nodes %s"
             % (n, nf, max_fail, recover, bound, len(late), " ".join(via)))
    ha.out("# measured: route withdrawn %.2f s after the kill; %d of %d requests failed; recovered %.2f s after "
           "the kill" % (withdraw, nf, n, recover))

    # 3. node 2's lb back: announced after RISE passed checks, serving again
    t_back = time.time()
    ha.start_lb("2")
    t = ha.wait_for(lambda: nexthops() == list(NODES), 5, 0.02)
    ha.wait_for(lambda: "2" in since(t_back)[4], 3)
    n, nf, _, _, via = since(t_back)
    ha.check("rejoin", t is not None and "2" in via and nf <= 2,
             "announced again %.2f s after lb started; %d requests, %d failed, served by nodes %s"
             % ((t - t_back) if t else float("inf"), n, nf, " ".join(via)))
    open(stop, "w").close()
    ha.procs["client"].wait(5)

    # 4. TLS sessions across nodes with the shared ticket keys
    if tls_skip:
        ha.out("PASS ecmp/tls-resumption (skipped: %s)" % tls_skip)  # not counted: nothing was checked
    else:
        ok, detail = tls_resumed()
        ha.check("tls-resumption", ok, detail)


if __name__ == "__main__":
    ha.SUITE, ha.DEADLINE = "ecmp", DEADLINE
    for sig in (signal.SIGALRM, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, ha.on_signal)
    signal.alarm(DEADLINE)
    try:
        main()
    except ha.Stopped as e:
        ha.check("time-limit", False, str(e))
    except Exception as e:  # report, never a silent pass
        ha.check("error", False, "%s: %s" % (type(e).__name__, e))
    finally:
        signal.alarm(0)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # let the cleanup finish
        ha.cleanup()
    ha.out("ecmp: %d passed, %d failed" % (ha.passed, ha.failed))
    sys.exit(1 if ha.failed or not ha.passed else 0)
