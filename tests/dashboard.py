#!/usr/bin/env python3
"""The admin dashboard (GET / on [admin] bind) in headless Chromium and without JavaScript:
listeners, servers with their health-check detail and why they are down, percentiles, the history
sparklines on first paint (also after a reload), the drain / disable / weight controls, a phone-wide
viewport. Screenshots go to the test's directory and to tests/artifacts/.

    python3 tests/dashboard.py [--only SUBSTR] [--keep]

Chromium (Debian's /usr/bin/chromium, or $CHROMIUM) is driven through the DevTools protocol over
--remote-debugging-pipe by tests/chromium.py: no websocket module, no npm, nothing from the network. Without Chromium the
browser tests skip with the reason; the no-JavaScript tests still run. lb samples its history every
200 ms here (LB_HISTORY_INTERVAL_MS, an environment variable for tests) instead of every 5 s.
"""
import json
import os
import re
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import integration as it  # noqa: E402
import policy as po  # noqa: E402
from integration import HOST, Fail, check, eq, free_port, short  # noqa: E402
from policy import ask, section, lsn  # noqa: E402
from admin import Admin, TOKEN  # noqa: E402
import tls as tl  # noqa: E402
from chromium import Browser  # noqa: E402

SUITE_BUDGET = 60
TESTS = []
test = it.registrar(TESTS, 45)
os.environ["LB_HISTORY_INTERVAL_MS"] = "200"


# ---------------------------------------------------------------------------------------- helpers

def setup(ctx, dead_port=None, cert=None):
    """lb with pool p (a, b and, given dead_port, a server z nobody listens on), route r, checks every
    200 ms; given cert, also an https listener serving it."""
    a, b = ctx.b["a"], ctx.b["b"]
    port = free_port()
    servers = [("server", "a %s:%d" % (HOST, a.port)), ("server", "b %s:%d" % (HOST, b.port))]
    if dead_port:
        servers.append(("server", "z %s:%d" % (HOST, dead_port)))
    more = [lsn("secure", free_port(), ("tls", "on"), ("cert", cert))] if cert else []
    ad = Admin(ctx, [lsn("web", port), *more, section("pool p", *servers, ("health_interval", "200ms"),
                                                      ("health_check", "http GET /"), ("health_fall", "2")),
                     section("route r", ("path", "/r/*"), ("pool", "p"))])
    return ad, port


def traffic(port, n=120, seconds=3.0):
    """n requests (bounded in time) through route r and the listener's pool."""
    end, done = time.monotonic() + seconds, 0
    while done < n and time.monotonic() < end:
        ask(port, "/r/%d" % done if done % 2 else "/plain/%d" % done)
        done += 1
    return done


def history(ad):
    st, body = ad.get("/api/history")
    eq(st, 200, "GET /api/history")
    return json.loads(body)


def wait_history(ad, samples, what="requests", timeout=6.0):
    """/api/history once it holds `samples` points and the servers' points show traffic."""
    end = time.monotonic() + timeout
    while True:
        h = history(ad)
        if h["samples"] >= samples and sum(sum(s[what]) for s in h["servers"]) > 0:
            return h
        if time.monotonic() > end:
            raise Fail("history after %.0f s: %d samples, %s" % (timeout, h["samples"], short(json.dumps(h), 300)))
        time.sleep(0.2)


def wait_down(ad, pool, name, timeout=5.0):
    end = time.monotonic() + timeout
    while ad.server(pool, name)["state"] != "down":
        if time.monotonic() > end:
            raise Fail("server %s/%s not down after %.0f s: %s" % (pool, name, timeout, ad.server(pool, name)))
        time.sleep(0.1)


# ---------------------------------------------------------------------------------------- tests

# Everything the page shows on first paint, collected in the page (no refresh has run yet).
PAGE_FACTS = r"""(() => {
  const q = s => Array.from(document.querySelectorAll(s));
  const row = k => document.querySelector('tr[data-server="' + k + '"]');
  const cells = k => row(k) ? Array.from(row(k).cells).map(c => c.textContent.trim()) : null;
  const sp = q('#history svg.sp polyline').map(p => p.getAttribute('points').trim().split(/\s+/).length);
  return {
    listeners: q('#listeners tr').length - 1, listener: q('#listeners td').map(c => c.textContent),
    servers: q('table.servers tr[data-server]').length, a: cells('p/a'), b: cells('p/b'), z: cells('p/z'),
    routes: q('#routes tr').length - 1, series: q('#history tr[data-series]').length,
    sparklines: sp.length, points: Math.min(...sp),
    ya: q('tr[data-series="server p/a"] svg.sp polyline')[0].getAttribute('points').trim().split(/\s+/)
          .map(p => +p.split(',')[1]),
    buttons: q('button[name=do]').map(b => b.value),
    scroll: document.documentElement.scrollWidth, width: window.innerWidth,
    bodyScroll: document.body.scrollWidth, scripts: q('script[src]').length,
  };
})()"""


@test("dashboard_first_paint_and_controls", timeout=60)
def t_browser(ctx):
    dead = free_port()
    ad, port = setup(ctx, dead)
    wait_down(ad, "p", "z")
    n = traffic(port)
    check(n >= 50, "only %d requests in the traffic run" % n)
    wait_history(ad, 8)
    br = Browser(ctx)
    br.viewport(1280, 900)
    br.load(ad.url + "/")
    f = br.js(PAGE_FACTS)
    eq(f["listeners"], 1, "listener rows")
    check("web" in f["listener"] and "http" in f["listener"], "listener row: %s" % f["listener"])
    eq(f["servers"], 3, "server rows")
    check(f["a"] and f["a"][1] == "up", "server a's row: %s" % f["a"])
    check(f["z"] and f["z"][1] == "down", "server z's row: %s" % f["z"])
    why = f["z"][2]
    check("health check" in why and "refused" in why.lower() and "failed in a row" in why,
          "the down server's reason: %r" % why)
    check(f["a"][11] != "-" and "ms" in f["a"][11], "server a's p99 cell: %r" % f["a"][11])
    check("ok in" in f["a"][12], "server a's last check cell: %r" % f["a"][12])
    eq(f["routes"], 1, "route rows")
    eq(f["series"], 4, "history rows (3 servers, 1 route)")
    eq(f["sparklines"], 12, "sparklines (3 per row)")
    check(f["points"] >= 8, "sparklines on first paint have only %d points" % f["points"])
    check(max(f["ya"]) - min(f["ya"]) > 1, "server a's request-rate sparkline is flat: %s" % f["ya"][-20:])
    for act in ("drain", "enable", "disable", "weight"):
        check("%s p/a" % act in f["buttons"], "no %s button for p/a: %s" % (act, f["buttons"][:8]))
    eq(f["scripts"], 0, "scripts loaded from a src")
    check(f["scroll"] <= f["width"], "the page overflows at 1280 px: %d" % f["scroll"])
    br.screenshot(ctx, "dashboard.png")

    br.viewport(390, 844, mobile=True)
    br.load(ad.url + "/")
    f = br.js(PAGE_FACTS)
    eq(f["width"], 390, "viewport width")
    check(f["scroll"] <= 390 and f["bodyScroll"] <= 390,
          "the page overflows a 390 px viewport: document %d, body %d px" % (f["scroll"], f["bodyScroll"]))
    eq(f["servers"], 3, "server rows at 390 px")
    br.screenshot(ctx, "dashboard-390.png")

    # the controls: the token typed once (the script keeps it for the tab), then each action a form post
    br.js("document.getElementById('tok').value = %s" % json.dumps(TOKEN))
    br.click_and_load('button[value="drain p/a"]')
    eq(ad.server("p", "a")["state"], "drain", "a after the page's drain")
    br.click_and_load('button[value="disable p/b"]')
    eq(ad.server("p", "b")["state"], "disabled", "b after the page's disable (token kept by the page)")
    br.js("document.querySelector('input[name=\"w.p/a\"]').value = '7'")
    br.click_and_load('button[value="weight p/a"]')
    eq(ad.server("p", "a")["weight"], 7, "a's weight after the page's weight")
    br.click_and_load('button[value="enable p/b"]')
    eq(ad.server("p", "b")["state"], "up", "b after the page's enable")
    f = br.js(PAGE_FACTS)
    eq(f["a"][1], "drain", "a's state on the page after the post")
    eq(f["a"][3], "7", "a's weight on the page after the post")
    check("drain" in f["a"][2], "a's why: %r" % f["a"][2])
    # the script refreshes the tables in place (no navigation) every 5 s
    br.js("window.lbMark = 1")
    shown = int(f["b"][5])
    traffic(port, n=20)
    end = time.monotonic() + 9
    while int(br.js(PAGE_FACTS)["b"][5]) <= shown:
        if time.monotonic() > end:
            raise Fail("server b's requests on the page stayed %d for 9 s after 20 more requests" % shown)
        time.sleep(0.5)
    eq(br.js("window.lbMark"), 1, "the page was reloaded instead of refreshed")
    # a wrong token changes nothing
    br.js("document.getElementById('tok').value = 'wrong'")
    br.click_and_load('button[value="disable p/a"]')
    check("token" in br.js("document.body.textContent"), "the page after a wrong token does not say why")
    eq(ad.server("p", "a")["state"], "drain", "a after a post with a wrong token")


@test("dashboard_without_javascript")
def t_nojs(ctx):
    dead = free_port()
    pem, serial = tl.CA(os.path.join(ctx.dir, "ca")).leaf("soon", "soon.example", names=("soon.example",), days=10)
    ad, port = setup(ctx, dead, cert=pem)
    wait_down(ad, "p", "z")
    traffic(port, n=60)
    wait_history(ad, 3)
    with urllib.request.urlopen(ad.url + "/", timeout=10) as r:
        html = r.read().decode()
        csp = r.headers.get("Content-Security-Policy", "")
    for want in ('<table class=servers data-pool="p">', '<tr data-server="p/a">', '<tr data-server="p/z">',
                 "<table id=listeners>", "<table id=routes>", "<table id=history>", "<svg class=sp",
                 "failed in a row", 'action="/"', 'name=token', 'value="weight p/a"', 'name="w.p/a"'):
        check(want in html, "the page without JavaScript has no %r" % want)
    check("http://" not in html and "https://" not in html, "the page loads something from elsewhere")
    check("form-action 'self'" in csp, "CSP: %r" % csp)
    m = re.search(r"<table id=certs>.*?<td>secure</td><td>soon\.example</td>.*?<td>%s</td><td class=(\w+)>(\d+)</td>"
                  % serial, html)
    check(m and m.group(1) == "warn" and int(m.group(2)) in (9, 10),
          "certificate row (10 days left, serial %s): %s" % (serial, m.groups() if m else short(html[-800:], 800)))
    rows = {k: [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", v)]
            for k, v in re.findall(r'<tr data-server="(p/[az])">(.*?)</tr>', html)}
    z, a = rows.get("p/z"), rows.get("p/a")
    check(z and a, "server rows of p/a and p/z: %s" % sorted(rows))
    # server, state, why, weight, active, requests, 2xx, 4xx, 5xx, sent, p50, p99, last check, since change, counts
    check(re.match(r"^connect: Connection refused in [\d.]+ ?[mµu]?s, [\d.]+ ?\w+ ago$", z[12]),
          "z's last check (result, latency, age): %r" % z[12])
    check(re.match(r"^[\d.]+ ?\w+$", z[13]), "z's time since its last change: %r" % z[13])
    cnt = [int(x) for x in re.findall(r"\d+", z[14])]
    check(len(cnt) == 3 and cnt[0] >= cnt[1] >= 2 and cnt[2] == 1, "z's checks / failed / down: %r" % z[14])
    check(int(a[6]) >= 30 and a[7] == "0" and a[8] == "0" and a[9] != "0", "a's 2xx, 4xx, 5xx, bytes: %s" % a[6:10])
    stats = ad.stats()
    a = ad.server("p", "a")
    check(a["p99_ms"] is not None and a["p50_ms"] is not None, "a's percentiles in /api/stats: %s" % a)
    check(a["check"] and a["check"]["ok"] and a["check"]["checks"] > 0, "a's check in /api/stats: %s" % a["check"])
    z = ad.server("p", "z")
    check("failed in a row" in z["reason"] and not z["check"]["ok"], "z in /api/stats: %s" % z)
    r = stats["routes"][0]
    check(r["requests"] >= 30 and r["p99_ms"] is not None and r["errors"] == 0, "route r in /api/stats: %s" % r)
    eq([(x["name"], x["protocol"]) for x in stats["listeners"]], [("web", "http"), ("secure", "https")],
       "listeners in /api/stats")
    check(stats["listeners"][0]["accepted"] >= 60, "listener web accepted: %s" % stats["listeners"][0])

    def post(fields):
        data = urllib.parse.urlencode(fields).encode()
        req = urllib.request.Request(ad.url + "/", data=data, method="POST")

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *a, **k):
                return None
        try:
            with urllib.request.build_opener(NoRedirect).open(req, timeout=10) as resp:
                return resp.status, resp.headers.get("Location")
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("Location")

    eq(post({"token": "nope", "do": "drain p/a"})[0], 401, "form post with a wrong token")
    eq(ad.server("p", "a")["state"], "up", "a after the refused form")
    eq(post({"token": TOKEN, "do": "drain p/a"}), (303, "/"), "form post: drain")
    eq(ad.server("p", "a")["state"], "drain", "a after the form's drain")
    eq(post({"token": TOKEN, "w.p/a": "3", "w.p/b": "9", "do": "weight p/b"})[0], 303, "form post: weight of b")
    eq((ad.server("p", "a")["weight"], ad.server("p", "b")["weight"]), (1, 9), "weights after the form")
    eq(post({"token": TOKEN, "do": "explode p/a"})[0], 400, "form post with an unknown action")


@test("dashboard_history_survives_reload")
def t_reload(ctx):
    ad, port = setup(ctx)
    traffic(port, n=80)
    before = wait_history(ad, 5)
    time.sleep(0.3)
    before = history(ad)
    old = {s["server"]: s["requests"] for s in before["servers"]}
    ad.m.proc.send_signal(signal.SIGHUP)
    end = time.monotonic() + 8
    while ad.stats()["generation"] < 2:
        if time.monotonic() > end:
            raise Fail("no generation 2 within 8 s of SIGHUP")
        time.sleep(0.1)
    after = history(ad)
    check(after["samples"] >= before["samples"], "samples %d after the reload, %d before" % (after["samples"], before["samples"]))
    for s in after["servers"]:
        # the points taken before the reload are still there, in order, followed by the new ones
        k, seq = len(old[s["server"]]), s["requests"]
        found = any(seq[i:i + k] == old[s["server"]] for i in range(0, len(seq) - k + 1))
        check(found and sum(old[s["server"]]) > 0, "server %s's history after the reload does not hold the %d "
              "points from before: %s" % (s["server"], k, short(str(seq), 200)))
    with urllib.request.urlopen(ad.url + "/", timeout=10) as r:
        html = r.read().decode()
    check("generation 2" in html, "the page after the reload does not say generation 2")
    pts = [int(x) for x in re.findall(r"data-points=(\d+)", html)]
    check(pts and min(pts) >= before["samples"], "sparklines after the reload: %s points (%d before)" % (pts[:6], before["samples"]))


if __name__ == "__main__":
    po.run_suite(TESTS, "dashboard", SUITE_BUDGET, __file__)
