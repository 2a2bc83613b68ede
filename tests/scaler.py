#!/usr/bin/env python3
"""Tests of linode-scaler against a fake Linode API (tests/linode_mock.py) and a real lb.

    python3 tests/scaler.py [--only SUBSTR] [--keep]

The scaler is $SCALER_BIN (default ./linode-scaler, `make scaler`), lb is $LB_BIN (default ./lb).
Each test starts its own fake API (which checks every request against the official Linode spec:
the part of it the scaler uses, tests/data/linode-openapi-subset.yaml, or $LINODE_SPEC; and its own
answers too), an lb with an [admin] section and
token_file, and linode-scaler processes reading the [scaler] section of the same config file.
Instances the fake creates are tests/backend.py processes on 127.0.0.N:PORT (their private IPv4);
nothing is sent anywhere but loopback. Times are scaled down (interval 1s, scale_down_after 2s,
status steps of 0.4 s, stats after 1 s) so that the suite stays under about 2 minutes.
One line per test: "PASS name" or "FAIL name: reason"; then "scaler: N passed, N failed".
"""
import base64
import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import integration as it  # noqa: E402
import policy as po  # noqa: E402
import health as he  # noqa: E402
import linode_mock as lm  # noqa: E402
import linode_spec_cut as spec_cut  # noqa: E402
import openapi_check as oc  # noqa: E402
from integration import HOST, Fail, check, eq, free_port, short  # noqa: E402
from process import conf  # noqa: E402
from policy import ask, section, lsn  # noqa: E402

SUITE_BUDGET = 130
SCALER_BIN = os.environ.get("SCALER_BIN", os.path.join(it.ROOT, "linode-scaler"))
TOKEN = "linode-pat-3f9b1c7e5a2d4e6f8091a2b3c4d5e6f7"
ADMIN_TOKEN = "lb-admin-9c8b7a6f5e4d3c2b1a00ffee"
TAG = "lb-pool-web"
KEYS = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGz0s1Xq5b7kYx3o test@ops",
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 ops@bastion"]
USER_DATA = "#cloud-config\npackage_update: true\nruncmd:\n  - [systemctl, enable, --now, app]\n"
TESTS = []


test = it.registrar(TESTS)


def wait(fn, timeout, what, step=0.1):
    """fn() until truthy; its value. Fail after timeout seconds."""
    end = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > end:
            raise Fail("%s: not within %.0f s" % (what, timeout))
        time.sleep(step)


class Env:
    """A fake Linode API, an lb whose pool `web` holds the seeded instances marked in_lb, and the
    config file both lb and linode-scaler read."""

    def __init__(self, ctx, seed=(("1", True),), cpu=50.0, scaler=(), extra_lb_servers=(), page_size=2,
                 status_step=0.4, region="us-east", nodes=1):
        if not os.access(SCALER_BIN, os.X_OK):
            raise Fail("linode-scaler binary not found: %s (make scaler)" % SCALER_BIN)
        if not os.path.isfile(lm.SPEC_PATH):
            raise Fail("the Linode API spec is not at %s (set LINODE_SPEC)" % lm.SPEC_PATH)
        self.ctx = ctx
        self.server_port = free_port()
        self.mock = lm.LinodeMock(ctx.dir, TOKEN, self.server_port, page_size=page_size,
                                  status_step=status_step).start()
        ctx.on_cleanup(self.finish)
        self.procs = []
        self.seeded = {}
        for n, in_lb, *tags in seed:
            label = "%s-%s" % (TAG, n)
            self.seeded[label] = self.mock.add_instance(label, tags[0] if tags else [TAG], cpu=cpu)
        for inst in self.seeded.values():
            wait(lambda: not inst.ready.is_alive(), 10, "backend of seeded instance %s" % inst.label, 0.02)
        self.port, self.admin_port = free_port(), free_port()
        self.admin_url = "http://%s:%d" % (HOST, self.admin_port)
        files = {"token": TOKEN, "admin-token": ADMIN_TOKEN, "keys": "\n".join(KEYS) + "\n", "user-data": USER_DATA}
        for name, text in files.items():
            path = os.path.join(ctx.dir, name)
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, 0o600)
        servers = [("server", "%s %s:%d" % (lab, i.private_ip, self.server_port))
                   for (n, in_lb, *_), (lab, i) in zip(seed, self.seeded.items()) if in_lb]
        servers += [("server", s) for s in extra_lb_servers]
        # lb node 2.. (nodes > 1): the same pool, its own ports and admin token file (token_file= in admin_url)
        self.nodes = []
        for k in range(1, nodes):
            tok = os.path.join(ctx.dir, "admin-token-%d" % (k + 1))
            with open(tok, "w") as f:
                f.write(ADMIN_TOKEN + "\n")
            os.chmod(tok, 0o600)
            self.nodes.append({"port": free_port(), "admin_port": free_port(), "token_file": tok})
        for nd in self.nodes:
            nd["admin_url"] = "http://%s:%d" % (HOST, nd["admin_port"])
        admin_url = ", ".join([self.admin_url] + ["%s token_file=%s" % (nd["admin_url"], nd["token_file"])
                                                  for nd in self.nodes])
        sc = dict([("pool", "web"), ("admin_url", admin_url),
                   ("admin_token_file", os.path.join(ctx.dir, "admin-token")), ("api_url", self.mock.url),
                   ("token_file", os.path.join(ctx.dir, "token")), ("region", region), ("type", "g6-standard-2"),
                   ("image", "linode/debian12"), ("user_data", os.path.join(ctx.dir, "user-data")),
                   ("authorized_keys_file", os.path.join(ctx.dir, "keys")), ("tag", TAG), ("min", "1"),
                   ("max", "3"), ("scale_up_cpu", "80"), ("scale_down_cpu", "30"), ("scale_down_after", "2s"),
                   ("cooldown", "60s"), ("interval", "1s"), ("server_port", str(self.server_port)),
                   ("server_address", "private")])
        sc.update(dict(scaler))
        def lb_text(port, admin_port, token_file, scaler_section):
            return conf(section("admin", ("bind", "%s:%d" % (HOST, admin_port)), ("token_file", token_file)),
                        lsn("web", port, pool="web"),
                        section("pool web", *servers, ("health_interval", "200ms"), ("health_timeout", "500ms"),
                                ("health_rise", "2"), ("health_fall", "2"), ("retries", "2")),
                        *scaler_section, workers=2)
        text = lb_text(self.port, self.admin_port, os.path.join(ctx.dir, "admin-token"),
                       [section("scaler", *sc.items())])
        self.m = ctx.master(text, [self.port, self.admin_port])
        for k, nd in enumerate(self.nodes):
            nd["tag"] = "lb%d" % (k + 2)
            nd["m"] = ctx.master(lb_text(nd["port"], nd["admin_port"], nd["token_file"], []),
                                 [nd["port"], nd["admin_port"]], tag=nd["tag"])
        self.conf = self.m.conf
        self.logs = []

    def lb_stop(self, k):
        """lb node k (2..) stopped (SIGTERM; it drains)."""
        self.nodes[k - 2]["m"].stop()

    def lb_start(self, k):
        """lb node k (2..) started again with its config file as the admin API left it."""
        nd = self.nodes[k - 2]
        with open(nd["m"].conf) as f:
            text = f.read()
        for attempt in range(10):
            try:
                nd["m"] = self.ctx.master(text, [nd["port"], nd["admin_port"]], tag=nd["tag"])
                return
            except Fail as e:
                # while it was stopped, a client's ephemeral source port may have taken its port
                if "Address already in use" not in str(e) or attempt == 9:
                    raise
                time.sleep(0.2)

    # ------------------------------------------------------------------ processes
    def start(self, *args, name="scaler"):
        """linode-scaler ARGS -c CONFIG in the background; its stderr in the test's directory."""
        path = os.path.join(self.ctx.dir, "%s-%d.stderr" % (name, len(self.procs)))
        f = open(path, "wb")
        p = subprocess.Popen([SCALER_BIN] + list(args) + ["-c", self.conf], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=f)
        f.close()
        self.procs.append(p)
        self.logs.append(path)
        p.log_path = path
        return p

    def run(self, *args, timeout=25):
        """(exit status, stdout, stderr) of linode-scaler ARGS -c CONFIG."""
        p = subprocess.run([SCALER_BIN] + list(args) + ["-c", self.conf], capture_output=True, timeout=timeout)
        path = os.path.join(self.ctx.dir, "run-%d.stderr" % len(self.logs))
        with open(path, "wb") as f:
            f.write(p.stderr)
        self.logs.append(path)
        return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")

    @staticmethod
    def log(p):
        with open(p.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self, p, sig=signal.SIGTERM):
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def finish(self):
        """Cleanup: every scaler process stopped (by PID), the mock stopped; then what the fake API
        saw must have been valid, and no secret may be in any log."""
        for p in self.procs:
            self.stop(p)
        self.mock.stop()
        problems = []
        if self.mock.violations:
            problems.append("requests the spec refuses: %s" % " | ".join(self.mock.violations[:3]))
        if self.mock.mock_bugs:
            problems.append("fake API answers outside the spec: %s" % " | ".join(self.mock.mock_bugs[:3]))
        secrets = [TOKEN, ADMIN_TOKEN] + [r["body"]["root_pass"] for r in self.mock.calls("POST", r"/instances$")
                                          if isinstance(r["body"], dict) and r["body"].get("root_pass")]
        for path in self.logs + [self.m.err_path]:
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    text = f.read()
            except OSError:
                continue
            for s in secrets:
                if s in text:
                    problems.append("a secret (%s...) is in %s" % (s[:4], os.path.basename(path)))
        if problems:
            raise Fail("; ".join(problems))

    # ------------------------------------------------------------------ lb
    def servers(self, node=1):
        """{name: server} of lb node `node`'s pool web (from /api/stats)."""
        st, body = he_curl(self.admin_url if node == 1 else self.nodes[node - 2]["admin_url"], "/api/stats")
        if st != 200:
            raise Fail("GET /api/stats: %d %s" % (st, short(body)))
        for p in json.loads(body)["pools"]:
            if p["name"] == "web":
                return {s["name"]: s for s in p["servers"]}
        raise Fail("no pool web in /api/stats")

    def backend_seen(self, label, tries=40):
        """True once a request through lb was answered by backend `label`."""
        for i in range(tries):
            r = ask(self.port, "/probe/%d" % i)
            if r.status == 200 and r.backend == label:
                return True
        return False


def he_curl(url, path=""):
    u = urlsplit(url + path)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
    try:
        c.request("GET", u.path)
        r = c.getresponse()
        return r.status, r.read().decode("utf-8", "replace")
    finally:
        c.close()


def creates(env):
    return [r for r in env.mock.calls("POST", r"/linode/instances$")]


def label(n):
    return "%s-%d" % (TAG, n)


# ---------------------------------------------------------------------------------------- tests

@test("list_pages_filter_and_auth", timeout=20)
def t_list(ctx):
    """`list`: every page read (page size 2 in the fake), only instances with the tag (X-Filter),
    a bearer token on every call; a wrong token: exit 1 with the API's 401 reason, token not shown."""
    env = Env(ctx, seed=[("1", True), ("2", True), ("3", False), ("4", False), ("5", False),
                         ("x1", False, ["other"]), ("x2", False, ["other", "team-a"])])
    rc, out, errs = env.run("list")
    eq(rc, 0, "list exit status (stderr: %s)" % short(errs, 300))
    listed = re.findall(r"^\d+\s+(\S+)\s+running", out, re.M)
    eq(sorted(listed), [label(i) for i in range(1, 6)], "instances listed")
    pages = [r for r in env.mock.calls("GET", r"/linode/instances$")]
    eq(sorted(r["query"].get("page") for r in pages), ["1", "2", "3"], "pages asked for (5 results, 2 a page)")
    check(all(json.loads(r["filter"]) == {"tags": TAG} for r in pages), "X-Filter of the list calls: %s" %
          [r["filter"] for r in pages])
    check(all(r["auth"] == "Bearer " for r in env.mock.requests), "a call without Authorization: Bearer")
    with open(os.path.join(ctx.dir, "token"), "w") as f:
        f.write("wrong-token\n")
    rc, out, errs = env.run("list")
    eq(rc, 1, "list with a wrong token: exit status")
    check("401" in errs and "Invalid Token" in errs and "token_file" in errs,
          "no clear 401 line: %s" % short(errs, 300))
    check("wrong-token" not in errs + out, "the token is in the output")


@test("spec_subset_is_current", timeout=20)
def t_spec_subset(ctx):
    """tests/data/linode-openapi-subset.yaml (what the fake checks against) holds exactly the operations
    tests/linode_spec_cut.py lists, each as in the full spec; checked when the full spec is at hand
    (../shared/linode/openapi.yaml or $LINODE_SPEC_FULL), skipped with the reason otherwise."""
    full = os.environ.get("LINODE_SPEC_FULL", spec_cut.DEFAULT_SRC)
    if not os.path.isfile(full):
        raise it.Skip("no full Linode spec at %s to compare the subset with (set LINODE_SPEC_FULL)" %
                      os.path.normpath(full))
    paths = sorted({p for _, p in spec_cut.OPERATIONS})
    subset, whole = oc.Spec(spec_cut.OUT, paths), oc.Spec(full, paths)
    kept = {(m, p) for p in paths for m in subset.paths[p] if m in spec_cut.METHODS}
    eq(sorted(kept), sorted(spec_cut.OPERATIONS), "operations in the subset")
    for p in paths:
        for k, v in whole.paths[p].items():
            if k not in spec_cut.METHODS or (k, p) in kept:
                check(subset.paths[p].get(k) == v, "%s %s differs from the full spec: run "
                      "/usr/bin/python3 tests/linode_spec_cut.py" % (k.upper(), p))


@test("api_error_reasons", timeout=20)
def t_api_errors(ctx):
    """A create the API refuses (an unknown region): exit 1, the API's [field] reason in the log,
    nothing created; config errors name file and line."""
    env = Env(ctx, region="mars-1")
    rc, out, errs = env.run("up")
    eq(rc, 1, "up with region mars-1: exit status")
    check(re.search(r"error: linode: POST /linode/instances \(%s\): 400: \[region\] region is not valid" % label(2),
                    errs), "no clear error line: %s" % short(errs, 400))
    eq(len(env.mock.live()), 1, "instances after a refused create")
    # values are read by lb's own parser (one row of lb.c's key table per key): the scaler and `lb -t`
    # refuse the same lines with the same words
    bad = os.path.join(ctx.dir, "bad.ini")
    with open(bad, "w") as f:
        f.write("[scaler]\npool = web\nscale_up_cpu = 20%\nscale_down_cpu = 101\ncooldown = 5 minutes\nbogus = 1\n"
                "admin_url = http://a:1, ftp://b\n")
    wants = ("bad.ini:4: scale_down_cpu: '101' is not a number from 1 to 100",
             "bad.ini:5: cooldown: invalid duration '5 minutes'", "bad.ini:6: unknown key 'bogus' in [scaler]",
             "bad.ini:7: admin_url: 'ftp://b' is not an http:// or https:// URL")
    p = subprocess.run([SCALER_BIN, "once", "-c", bad], capture_output=True, timeout=10)
    e = p.stderr.decode()
    eq(p.returncode, 2, "once with a bad config: exit status")
    lbt = subprocess.run([it.LB_BIN, "-t", "-c", bad], capture_output=True, timeout=10)
    for want in wants:
        check(want in e, "scaler's config errors lack %r: %s" % (want, short(e, 400)))
        check(want in lbt.stderr.decode(), "lb -t's errors lack %r: %s" % (want, short(lbt.stderr.decode(), 400)))
    # what only the scaler needs: required keys, down below up
    with open(bad, "w") as f:
        f.write("[scaler]\npool = web\nscale_up_cpu = 20\nscale_down_cpu = 30\n"
                "[pool web]\nserver = s1 127.0.0.1:9000\n[listener l]\nbind = 127.0.0.1:8000\npool = web\n")
    p = subprocess.run([SCALER_BIN, "once", "-c", bad], capture_output=True, timeout=10)
    e = p.stderr.decode()
    eq(p.returncode, 2, "once without token_file: exit status")
    for want in ("bad.ini:1: scale_down_cpu (30) must be below scale_up_cpu (20)", "bad.ini:1: [scaler] needs token_file"):
        check(want in e, "config errors lack %r: %s" % (want, short(e, 400)))


@test("scale_up_on_high_cpu", timeout=40)
def t_up(ctx):
    """CPU 90% -> one instance created with the right body, waited for until running, added to lb,
    health-checked by lb, then given traffic; afterwards, still at 90%, cooldown holds."""
    env = Env(ctx, cpu=90.0, scaler=[("max", "3"), ("cooldown", "60s")])
    p = env.start("run")
    new = label(2)
    wait(lambda: creates(env), 10, "a create call (scaler log: %s)" % short(env.log(p)[-600:], 600))
    body = creates(env)[0]["body"]
    eq({k: body.get(k) for k in ("type", "region", "image", "label", "tags", "private_ip")},
       {"type": "g6-standard-2", "region": "us-east", "image": "linode/debian12", "label": new, "tags": [TAG],
        "private_ip": True}, "create body")
    eq(body.get("authorized_keys"), KEYS, "authorized_keys from authorized_keys_file")
    eq(base64.b64decode(body["metadata"]["user_data"]).decode(), USER_DATA, "metadata.user_data (base64 of the file)")
    pw = body.get("root_pass", "")
    check(len(pw) >= 32 and re.search("[A-Z]", pw) and re.search("[a-z]", pw) and re.search("[0-9]", pw) and
          re.search("[^A-Za-z0-9]", pw), "root_pass is not a strong random password (length %d)" % len(pw))
    wait(lambda: new in env.servers(), 15, "%s in lb's pool (scaler log: %s)" % (new, short(env.log(p)[-500:], 500)))
    polls = [r for r in env.mock.calls("GET", r"/linode/instances/\d+$")]
    check(len(polls) >= 2, "the scaler polled the new instance %d times" % len(polls))
    log = env.log(p)
    for st in ("booting", "running"):
        check("is %s" % st in log, "the log does not show the instance %s: %s" % (st, short(log[-500:], 500)))
    inst = [i for i in env.mock.live() if i.label == new][0]
    eq(env.servers()[new]["address"], "%s:%d" % (inst.private_ip, env.server_port), "address of the new server")
    wait(lambda: env.servers()[new]["state"] == "up", 10, "%s up in lb" % new)
    check(env.backend_seen(new), "no request through lb reached %s" % new)
    c = http.client.HTTPConnection(inst.private_ip, env.server_port, timeout=5)
    c.request("GET", "/stats")
    bst = json.loads(c.getresponse().read())
    c.close()
    check(bst["health"] >= 2 and bst["app"] > 0, "backend %s: %s (want lb's health checks, then traffic)" % (new, bst))
    wait(lambda: "lb: web/%s passed its health checks" % new in env.log(p), 5, "the log line that %s is up" % new)
    # still 90% on every instance: the cooldown (60 s) keeps a second one from being made
    env.mock.set_cpu(90.0, history=True)
    wait(lambda: "in cooldown" in env.log(p), 8, "a cooldown decision")
    time.sleep(1.5)
    eq(len(creates(env)), 1, "instances created during the cooldown")


@contextlib.contextmanager
def slow_load(env, clients, ms, limit=12):
    """`clients` threads, each asking lb for /slow?ms=MS until the block ends, at most `limit` times:
    requests in flight on lb while the instances' CPU stays low. Yields the answers (statuses or
    errors); on leaving, the threads are stopped and the answers must all have been 200."""
    stop, answers = threading.Event(), []

    def one():
        for _ in range(limit):
            if stop.is_set():
                return
            try:
                answers.append(ask(env.port, "/slow?ms=%d" % ms, timeout=ms / 1000.0 + 5).status)
            except Fail as e:
                answers.append(str(e))
    threads = [threading.Thread(target=one, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        yield answers
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    eq([a for a in answers if a != 200], [], "answers through lb during the load")


@test("scale_up_on_lb_inflight_with_low_cpu", timeout=40)
def t_up_inflight(ctx):
    """scale_up_inflight = 3: 8 slow requests in flight through a real lb on one server (CPU 10%, far
    below scale_up_cpu) -> an instance is created, the decision names lb's figure; without load at the
    same CPU the first cycle scales nothing (the figure, not CPU, decided)."""
    env = Env(ctx, cpu=10.0, scaler=[("scale_up_inflight", "3"), ("max", "3"), ("cooldown", "60s"),
                                     ("scale_down_cpu", "5")])
    rc, out, errs = env.run("status")
    eq(rc, 0, "status exit: %s" % short(errs, 300))
    check(re.search(r"in flight 0\.0 per server \(1 serving\)", out) and "decision: none" in out,
          "idle: want in flight 0.0 and no decision: %s" % short(out[-500:], 500))
    with slow_load(env, 8, 2500):
        wait(lambda: env.servers()[label(1)]["active"] >= 6, 5, "8 slow requests in flight on lb")
        p = env.start("run")
        wait(lambda: creates(env), 10, "a create call (scaler log: %s)" % short(env.log(p)[-600:], 600))
        check(re.search(r"cpu 10\.0%.*decision: up: in flight [0-9.]+ per server \(1 serving\) >= "
                        r"scale_up_inflight 3", env.log(p)),
              "the decision does not name lb's figure: %s" % short(env.log(p)[-600:], 600))
    eq(len(creates(env)), 1, "instances created")


@test("scale_up_on_lb_p99_with_low_cpu", timeout=40)
def t_up_p99(ctx):
    """scale_up_p99 = 250ms: requests through a real lb taking 400 ms (CPU 10%) -> between two cycles
    more than 1% of them are over 250 ms (lb's /metrics histogram) -> an instance is created."""
    env = Env(ctx, cpu=10.0, scaler=[("scale_up_p99", "250ms"), ("max", "3"), ("cooldown", "60s"),
                                     ("scale_down_cpu", "5"), ("interval", "2s")])
    with slow_load(env, 8, 400, limit=40):
        p = env.start("run")
        wait(lambda: creates(env), 12, "a create call (scaler log: %s)" % short(env.log(p)[-600:], 600))
        check(re.search(r"cpu 10\.0%.*decision: up: p99 > 250ms \(100\.0% of [0-9]+ requests slower\) >= "
                        r"scale_up_p99", env.log(p)), "the decision does not name lb's p99: %s" % short(env.log(p)[-600:], 600))
    eq(len(creates(env)), 1, "instances created")


@test("max_respected", timeout=40)
def t_max(ctx):
    """max 2, cooldown 0s, CPU 95% everywhere: one instance is added, then 'at max' and no more."""
    env = Env(ctx, cpu=95.0, scaler=[("max", "2"), ("cooldown", "0s")])
    p = env.start("run")
    wait(lambda: label(2) in env.servers(), 15, "%s in lb (log: %s)" % (label(2), short(env.log(p)[-500:], 500)))
    env.mock.set_cpu(95.0, history=True)
    wait(lambda: "but at max (2)" in env.log(p), 8, "an 'at max' decision")
    time.sleep(2)
    eq(len(creates(env)), 1, "instances created with max 2")
    eq(len(env.mock.live()), 2, "instances")


@test("scale_down_drains_then_deletes", timeout=45)
def t_down(ctx):
    """Three instances (one that lb did not know: reconciled in first), CPU 10% held for
    scale_down_after: the newest are drained from lb (gone from its pool) and only then deleted,
    one per decision, down to min (1) and no further; a client loop through lb sees 0 failures."""
    env = Env(ctx, seed=[("1", True), ("2", True), ("3", False)], cpu=60.0,
              scaler=[("min", "1"), ("cooldown", "0s"), ("scale_down_after", "2s")])
    loop = he.Loop(env.port)
    loop.start()
    ctx.on_cleanup(loop.stop)
    env.mock.set_cpu(10.0)  # from now on; the 5-minute points before are 60%: only this process's clock counts
    t0 = time.time()
    p = env.start("run")
    wait(lambda: env.servers().get(label(3), {}).get("state") == "up", 8, "reconcile: %s added to lb, up" % label(3))
    check(env.backend_seen(label(3)), "no request reached %s after it was added" % label(3))
    wait(lambda: env.log(p).count("linode: deleted instance") >= 2, 25,
         "two instances deleted (log: %s)" % short(env.log(p)[-600:], 600))
    log = env.log(p)
    gone = [lab for _, _, lab in env.mock.deleted]
    eq(gone, [label(3), label(2)], "deleted, in order")
    first_del = min(t for t, _, _ in env.mock.deleted)
    check(first_del - t0 >= 2.0, "first deletion %.1f s after CPU went low (scale_down_after 2s)" % (first_del - t0))
    for lab in gone:
        drained = log.find("lb: web/%s drained and removed" % lab)
        deleted = log.find("linode: deleted instance %s" % lab)
        check(0 <= drained < deleted, "%s: lb removal not logged before the deletion" % lab)
        check(lab not in env.servers(), "%s still in lb" % lab)
    puts = env.mock.calls("PUT", r"/linode/instances/\d+$")
    check(len(puts) >= 2 and all(r["body"]["tags"] == [TAG, TAG + "-draining"] for r in puts),
          "instances not marked %s-draining before removal: %s" % (TAG, [r["body"] for r in puts]))
    wait(lambda: "but at min (1)" in env.log(p), 8, "an 'at min' decision")
    time.sleep(1.5)
    eq([i.label for i in env.mock.live()], [label(1)], "instances left (min 1)")
    loop.stop()
    check(loop.ok > 100, "only %d requests in the client loop" % loop.ok)
    check(not loop.bad, "%d failed requests through lb during scale-down: %s" % (len(loop.bad), loop.bad[:3]))


@test("rate_limit_and_server_errors", timeout=40)
def t_faults(ctx):
    """429 with Retry-After: 2 on the list (waited for), 500 on stats and 503 on a poll (retried with
    backoff), 500 after a create that did happen (found by its label: no second instance)."""
    env = Env(ctx, cpu=90.0)
    env.mock.fault("GET", r"/linode/instances$", 429, retry_after=2)
    env.mock.fault("GET", r"/stats$", 500)
    env.mock.fault("POST", r"/linode/instances$", 500, after=True)
    env.mock.fault("GET", r"/linode/instances/\d+$", 503)
    p = env.start("run")
    wait(lambda: label(2) in env.servers(), 25, "%s in lb (log: %s)" % (label(2), short(env.log(p)[-600:], 600)))
    log = env.log(p)
    lists = env.mock.calls("GET", r"/linode/instances$")
    eq(lists[0]["status"], 429, "first list call")
    gap = lists[1]["t"] - lists[0]["t"]
    check(gap >= 2.0, "the call after 429 Retry-After: 2 came %.2f s later" % gap)
    check(re.search(r"429 rate limited .*Retry-After 2 s", log), "no 429 line: %s" % short(log, 400))
    stats = env.mock.calls("GET", r"/stats$")
    eq(stats[0]["status"], 500, "first stats call")
    check(len(stats) > 1 and stats[1]["t"] - stats[0]["t"] < 3, "stats not retried after the 500")
    check(re.search(r"GET /linode/instances/\d+/stats: 500: .*retry 1/5 in", log), "no 500 retry line")
    check(re.search(r"GET /linode/instances/\d+: 503: .*retry 1/5 in", log), "no 503 retry line")
    eq(len(creates(env)), 1, "create calls (the 500 answer is not sent again: the label is found)")
    eq(len(env.mock.live()), 2, "instances")
    check("exists after all" in log, "the log does not say the instance was found by label")


@test("restart_recovery", timeout=45)
def t_restart(ctx):
    """Start: an instance tagged -draining (a removal cut short) is finished (out of lb, deleted); a
    server lb has for the pool without an instance is removed from lb. Then the scaler is killed
    (SIGKILL) right after its create call; a new one finds the instance by tag, makes no second one,
    and adds it to lb once it runs."""
    orphan = "%s-9 127.0.0.1:%d" % (TAG, free_port())
    env = Env(ctx, seed=[("1", True), ("5", True, [TAG, TAG + "-draining"])], cpu=90.0, status_step=1.0,
              extra_lb_servers=[orphan], scaler=[("cooldown", "0s"), ("max", "5")])
    env.mock.set_cpu(90.0, ids=[env.seeded[label(1)].id], history=True)
    p1 = env.start("run", name="first")
    wait(lambda: creates(env), 15, "a create call (log: %s)" % short(env.log(p1)[-600:], 600))
    env.stop(p1, signal.SIGKILL)
    log1 = env.log(p1)
    check("was being removed" in log1 and "linode: deleted instance %s" % label(5) in log1,
          "the cut-short removal of %s was not finished: %s" % (label(5), short(log1, 500)))
    check(re.search(r"reconcile: lb server web/%s .* has no Linode instance" % label(9), log1),
          "the orphan lb server was not reconciled")
    wait(lambda: not {label(5), label(9)} & set(env.servers()), 5, "lb without %s and %s (has %s)"
         % (label(5), label(9), sorted(env.servers())))
    new = creates(env)[0]["body"]["label"]
    eq(new, label(2), "label of the new instance")
    p2 = env.start("run", name="second")
    wait(lambda: new in env.servers(), 15, "%s added to lb by the restarted scaler (log: %s)"
         % (new, short(env.log(p2)[-600:], 600)))
    log2 = env.log(p2)
    check("not running yet: waiting" in log2 or "is running but not in lb" in log2,
          "the second scaler did not see the pending instance: %s" % short(log2, 400))
    time.sleep(1.5)
    eq(len(creates(env)), 1, "create calls over both runs")
    eq(sorted(i.label for i in env.mock.live()), [label(1), label(2)], "instances")


@test("dry_run_changes_nothing", timeout=30)
def t_dry(ctx):
    """--dry-run: reconcile and decisions logged with the requests they would make (password
    redacted); the fake API sees only GETs, lb's config file and pool stay as they were."""
    env = Env(ctx, seed=[("1", True), ("2", False)], cpu=90.0)
    with open(env.conf, "rb") as f:
        before = f.read()
    srv_before = sorted(env.servers())
    rc, out, errs = env.run("once", "--dry-run")
    eq(rc, 0, "once --dry-run exit status (stderr %s)" % short(errs, 300))
    check("dry-run: would add server '%s 127.0.0." % label(2) in errs, "no 'would add': %s" % short(errs, 500))
    m = re.search(r"dry-run: would create instance %s: POST /linode/instances (\{.*\})" % label(3), errs)
    check(m, "no 'would create': %s" % short(errs, 500))
    shown = json.loads(m.group(1))
    check(shown["root_pass"].startswith("<redacted") and shown["tags"] == [TAG] and shown["private_ip"] is True,
          "the request shown: %s" % short(m.group(1), 300))
    env.mock.set_cpu(10.0, history=True)
    rc, out, errs = env.run("once", "--dry-run", "-v")
    eq(rc, 0, "second once --dry-run")
    check("decision: down" in errs and "dry-run: would delete instance" in errs, "no down decision: %s"
          % short(errs, 600))
    rc, out, _ = env.run("status")
    eq(rc, 0, "status exit status")
    row = re.search(r"^\d+\s+%s\s+running\s+10\.0%%\s+yes\s+up$" % label(1), out, re.M)
    check(row and "decision: down" in out,
          "status output (want %s at 10.0%% in lb and a down decision): %s" % (label(1), short(out, 500)))
    # with --host-cpu the decision also weighs this machine's load, which other work may raise:
    # only that the host's CPU is shown is checked here
    rc, out, _ = env.run("status", "--host-cpu")
    eq(rc, 0, "status --host-cpu exit status")
    check(re.search(r"lb host \d+\.\d%", out), "status --host-cpu does not show the host's CPU: %s" % short(out, 500))
    eq([r["method"] for r in env.mock.requests if r["method"] != "GET"], [], "non-GET calls to the fake API")
    with open(env.conf, "rb") as f:
        eq(f.read(), before, "lb's config file after dry runs")
    eq(sorted(env.servers()), srv_before, "lb's pool after dry runs")
    eq(len(env.mock.live()), 2, "instances after dry runs")


@test("once_scale_down_from_history", timeout=30)
def t_once(ctx):
    """`once` (cron): no process memory, so "sustained" comes from Linode's 5-minute points: 10% for
    hours with scale_down_after 10m -> the newest instance is drained and deleted; the next run is
    held by the cooldown that --state remembers."""
    env = Env(ctx, seed=[("1", True), ("2", True), ("3", True)], cpu=10.0,
              scaler=[("scale_down_after", "10m"), ("cooldown", "5m")])
    state = os.path.join(ctx.dir, "state")
    rc, out, errs = env.run("once", "--state", state)
    eq(rc, 0, "once exit status (stderr %s)" % short(errs, 400))
    check("decision: down: cpu 10.0% < scale_down_cpu 30% for 10m" in errs, "decision: %s" % short(errs, 500))
    eq([lab for _, _, lab in env.mock.deleted], [label(3)], "deleted")
    check(label(3) not in env.servers(), "%s still in lb" % label(3))
    with open(state) as f:
        check(re.fullmatch(r"last_action_ms \d+\n", f.read()), "state file content")
    rc, out, errs = env.run("once", "--state", state)
    eq(rc, 0, "second once")
    check("but in cooldown (5m, " in errs, "second decision: %s" % short(errs, 400))
    eq(len(env.mock.deleted), 1, "instances deleted after the second run")


@test("dns_set", timeout=20)
def t_dns(ctx):
    """dns-set NAME IP: the A record of NAME in its Linode Domain is updated (PUT), or created."""
    env = Env(ctx)
    did = env.mock.add_domain("example.com", [("www", "A", "198.51.100.1"), ("mail", "MX", "mx.example.com")])
    rc, out, errs = env.run("dns-set", "www.example.com", "203.0.113.7")
    eq(rc, 0, "dns-set www exit status (stderr %s)" % short(errs, 300))
    recs = {r["name"]: r for r in env.mock.records.values() if r["_domain"] == did and r["type"] == "A"}
    eq(recs["www"]["target"], "203.0.113.7", "www A target")
    rc, out, errs = env.run("dns-set", "api.example.com", "203.0.113.8")
    eq(rc, 0, "dns-set api exit status (stderr %s)" % short(errs, 300))
    recs = {r["name"]: r for r in env.mock.records.values() if r["_domain"] == did and r["type"] == "A"}
    eq(recs.get("api", {}).get("target"), "203.0.113.8", "api A record created")
    eq([r["method"] for r in env.mock.calls(path_re=r"/records/\d+$")], ["PUT"], "record calls")
    rc, out, errs = env.run("dns-set", "www.example.org", "203.0.113.9")
    eq(rc, 1, "dns-set in a domain that is not there")
    check("no Linode Domain holds www.example.org" in errs, "error line: %s" % short(errs, 300))


def admin_call(url, method, path, body=None):
    """(status, text) of an authenticated call to an lb admin API."""
    u = urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
    try:
        c.request(method, path, body=body, headers={"Authorization": "Bearer " + ADMIN_TOKEN})
        r = c.getresponse()
        return r.status, r.read().decode("utf-8", "replace")
    finally:
        c.close()


def hand_backend(ctx, env, name, host="127.0.0.250"):
    """A backend an operator runs outside the scaler (tests/backend.py on HOST:server_port)."""
    p = subprocess.Popen([sys.executable, lm.BACKEND, "--host", host, "--port", str(env.server_port), "--name", name],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    ctx.on_cleanup(lambda: (p.terminate(), p.wait(5)))
    p.stdout.readline()
    return "%s %s:%d" % (name, host, env.server_port)


@test("two_lb_nodes_scale_up_and_node_restart", timeout=30)
def t_nodes_up(ctx):
    """admin_url lists two real lb processes (the second with its own token_file=): a scale-up on CPU
    adds the new server to both; with lb node 2 stopped, a scale-up reaches node 1, the scaler logs
    node 2 down and keeps serving node 1; node 2 restarted (its config without the server) has it
    within one interval (1 s) plus its back-off; a server added by hand (not ours) stays on both."""
    env = Env(ctx, cpu=90.0, nodes=2, scaler=[("max", "3"), ("cooldown", "60s")])
    manual = hand_backend(ctx, env, "manual")
    for url in (env.admin_url, env.nodes[0]["admin_url"]):
        st, body = admin_call(url, "POST", "/api/pools/web/servers", manual)
        eq(st, 201, "adding %s by hand to %s: %s" % (manual, url, short(body)))
    p = env.start("run")
    new = label(2)
    for node in (1, 2):
        wait(lambda: env.servers(node).get(new, {}).get("state") == "up", 10,
             "%s up in lb node %d (log: %s)" % (new, node, short(env.log(p)[-600:], 600)))
    wait(lambda: env.log(p).count("passed its health checks") >= 2, 5, "both nodes' health-check lines")
    env.lb_stop(2)
    rc, out, errs = env.run("up")
    eq(rc, 1, "up with lb node 2 stopped: exit status (a node did not get the server)")
    third = label(3)
    check(re.search(r"lb 127\.0\.0\.1:%d: lb node \S+ is down" % env.nodes[0]["admin_port"], errs),
          "the log does not say node 2 is down: %s" % short(errs, 600))
    eq(env.servers(1).get(third, {}).get("address", "").endswith(":%d" % env.server_port), True,
       "%s in lb node 1 while node 2 is down" % third)
    wait(lambda: re.search(r"on nodes \S+ \d server\(s\), \S+ down", env.log(p)), 5,
         "a cycle line with node 2 down (log: %s)" % short(env.log(p)[-400:], 400))
    env.lb_start(2)
    t0 = time.monotonic()
    wait(lambda: third in env.servers(2), 5, "%s on restarted node 2 (log: %s)" % (third, short(env.log(p)[-600:], 600)))
    took = time.monotonic() - t0
    check(took < 3.0, "node 2 converged %.1f s after its restart (interval 1 s, back-off at most 1 s)" % took)
    check("answers again" in env.log(p), "the log does not say node 2 is back")
    time.sleep(1.2)
    for node in (1, 2):
        srv = env.servers(node)
        check("manual" in srv, "the hand-added server left lb node %d" % node)
        eq(sorted(x for x in srv if x != "manual"), [label(1), new, third], "lb node %d's scaled servers" % node)
    eq(len(creates(env)), 2, "instances created")


@test("two_lb_nodes_scale_down_no_failures", timeout=30)
def t_nodes_down(ctx):
    """Three instances on two lb nodes, CPU 10% for scale_down_after: the newest is drained out of
    both nodes, and only then deleted; a client loop through each node sees 0 failed requests; a
    server added by hand stays."""
    env = Env(ctx, seed=[("1", True), ("2", True), ("3", True)], cpu=60.0, nodes=2,
              scaler=[("min", "2"), ("cooldown", "0s"), ("scale_down_after", "2s")])
    manual = hand_backend(ctx, env, "manual")
    for url in (env.admin_url, env.nodes[0]["admin_url"]):
        eq(admin_call(url, "POST", "/api/pools/web/servers", manual)[0], 201, "adding %s by hand" % manual)
    loops = [he.Loop(env.port), he.Loop(env.nodes[0]["port"])]
    for lp in loops:
        lp.start()
        ctx.on_cleanup(lp.stop)
    env.mock.set_cpu(10.0)
    p = env.start("run")
    wait(lambda: "linode: deleted instance" in env.log(p), 12, "a deletion (log: %s)" % short(env.log(p)[-600:], 600))
    log = env.log(p)
    eq([lab for _, _, lab in env.mock.deleted], [label(3)], "deleted")
    deleted = log.find("linode: deleted instance %s" % label(3))
    for node in env.nodes:
        tag = "lb 127.0.0.1:%d" % node["admin_port"]
        drained = log.find("%s: web/%s drained and removed" % (tag, label(3)))
        check(0 <= drained < deleted, "%s: removal not logged before the deletion" % tag)
    drained1 = log.find("lb 127.0.0.1:%d: web/%s drained and removed" % (env.admin_port, label(3)))
    check(0 <= drained1 < deleted, "node 1: removal not logged before the deletion")
    wait(lambda: "but at min (2)" in env.log(p), 6, "an 'at min' decision")
    for lp in loops:
        lp.stop()
    for node in (1, 2):
        eq(sorted(env.servers(node)), sorted([label(1), label(2), "manual"]), "lb node %d's pool" % node)
    for k, lp in enumerate(loops):
        check(lp.ok > 50, "only %d requests in the client loop through node %d" % (lp.ok, k + 1))
        check(not lp.bad, "%d failed requests through node %d: %s" % (len(lp.bad), k + 1, lp.bad[:3]))


def ha_state(path, master):
    """What deploy/keepalived-notify.sh writes for node exporter (lb_keepalived.prom), atomically."""
    with open(path + ".tmp", "w") as f:
        f.write("# HELP lb_keepalived_master 1 while this node's keepalived instance is MASTER.\n"
                "# TYPE lb_keepalived_master gauge\n"
                'lb_keepalived_master{vrrp_instance="LB"} %d\n' % (1 if master else 0))
    os.rename(path + ".tmp", path)


@test("ha_only_the_master_scales", timeout=30)
def t_ha(ctx):
    """Two scalers (one per lb node of a pair, both reconciling both nodes), --ha-state naming each
    node's keepalived state file: only the master's creates; the backup logs reconcile only. The
    state is switched right after the master's create (the instance still provisioning): the new
    master waits for it, then makes the next one; the old master makes none. Every create is
    counted in the fake API: one per label, none refused as a duplicate."""
    env = Env(ctx, cpu=90.0, nodes=2, scaler=[("max", "3"), ("cooldown", "0s")])
    st = [os.path.join(ctx.dir, "node%d.prom" % i) for i in (1, 2)]
    ha_state(st[0], True)
    ha_state(st[1], False)
    a = env.start("run", "--ha-state", st[0], name="scaler-a")
    b = env.start("run", "--ha-state", st[1], name="scaler-b")
    wait(lambda: creates(env), 10, "a create call (log a: %s)" % short(env.log(a)[-500:], 500))
    ha_state(st[0], False)
    ha_state(st[1], True)
    t_switch = time.time()
    env.mock.set_cpu(90.0, history=True)  # the new instance too, once it has stats
    log_b_before = env.log(b)
    wait(lambda: len(creates(env)) >= 2, 12, "a create by the new master (log b: %s)" % short(env.log(b)[-600:], 600))
    took = creates(env)[1]["t"] - t_switch
    for node in (1, 2):
        wait(lambda: {label(2), label(3)} <= set(env.servers(node)), 8, "both new servers on lb node %d" % node)
    wait(lambda: "but at max (3)" in env.log(b), 6, "an 'at max' decision by the new master")
    time.sleep(1.5)
    eq([(c["body"]["label"], c["status"]) for c in creates(env)], [(label(2), 200), (label(3), 200)],
       "create calls (label, status)")
    la, lbl = env.log(a), env.log(b)
    check("reconcile only (not the VRRP master" in log_b_before and "scale up: creating" not in log_b_before,
          "the backup scaler did more than reconcile before the switch: %s" % short(log_b_before, 400))
    check("scale up: creating instance %s" % label(2) in la and "creating instance %s" % label(3) not in la,
          "the first master's creates: %s" % short(la, 400))
    check("creating instance %s" % label(3) in lbl and "creating instance %s" % label(2) not in lbl,
          "the new master's creates: %s" % short(lbl, 400))
    check("says this node is not the VRRP master: reconcile only" in la.split("creating instance")[-1],
          "the old master did not log its handover")
    check(took < 8, "the new master's create came %.1f s after the switch" % took)
    eq(len(env.mock.live()), 3, "instances")


def syscall_set(name, seen=None):
    """The system calls of a systemd syscall group, recursively (systemd-analyze syscall-filter)."""
    seen = set() if seen is None else seen
    out = set()
    p = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True, timeout=30)
    for ln in p.stdout.splitlines()[1:]:
        x = ln.strip()
        if not x or x.startswith("#"):
            continue
        if x.startswith("@"):
            if x not in seen:
                seen.add(x)
                out |= syscall_set(x, seen)
        else:
            out.add(x)
    return out


@test("runs_under_the_units_seccomp_filter", timeout=30)
def t_seccomp(ctx):
    """deploy/linode-scaler.service's SystemCallFilter (@system-service minus @privileged @resources),
    MemoryDenyWriteExecute and RestrictAddressFamilies, applied by tests/sandbox_exec.py: a whole
    scale-up (libcurl's resolver threads, HTTP to the API and to lb) works under them."""
    import shutil
    if not shutil.which("systemd-analyze"):
        raise Fail("systemd-analyze not found (Debian package systemd)")
    unit = os.path.join(it.ROOT, "deploy", "linode-scaler.service")
    with open(unit) as f:
        text = f.read()
    check("SystemCallFilter=@system-service\nSystemCallFilter=~@privileged @resources\n" in text,
          "the unit's SystemCallFilter lines changed: update this test")
    allowed = syscall_set("@system-service") - syscall_set("@privileged") - syscall_set("@resources")
    path = os.path.join(ctx.dir, "allowed.txt")
    with open(path, "w") as f:
        f.write("\n".join(sorted(allowed)) + "\n")
    env = Env(ctx, cpu=90.0)
    p = subprocess.run([sys.executable, os.path.join(it.ROOT, "tests", "sandbox_exec.py"), path, "--", SCALER_BIN,
                        "up", "-c", env.conf], capture_output=True, timeout=25)
    errs = p.stderr.decode("utf-8", "replace")
    env.logs.append(os.path.join(ctx.dir, "sandboxed.stderr"))
    with open(env.logs[-1], "w") as f:
        f.write(errs)
    eq(p.returncode, 0, "linode-scaler up under the filter: exit status (stderr %s)" % short(errs[-500:], 500))
    check(label(2) in env.servers(), "%s not in lb after the sandboxed scale-up" % label(2))


if __name__ == "__main__":
    po.run_suite(TESTS, "scaler", SUITE_BUDGET, __file__)
