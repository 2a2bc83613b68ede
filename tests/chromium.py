"""Headless Chromium driven over the DevTools protocol (--remote-debugging-pipe): no websocket module,
no npm, nothing from the network. Shared by the suites that load pages in a real browser
(tests/dashboard.py, tests/browser.py).

Chromium is Debian's /usr/bin/chromium, or $CHROMIUM. Without it, Browser() raises Skip with the reason.
Messages are JSON separated by NUL bytes: commands go to Chromium's fd 3, answers and events come from
its fd 4. Events that arrive while a command waits for its answer are kept in `events`, in order.
"""
import base64
import json
import os
import select
import shutil
import subprocess
import time

import integration as it
from integration import Fail, check, short
from process import Skip


class Browser:
    """Headless Chromium with one page, spoken to over the DevTools pipe (fd 3 in, fd 4 out).
    args: more command-line flags (e.g. --host-resolver-rules, certificate flags)."""

    def __init__(self, ctx, args=()):
        exe = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
        if not exe:
            raise Skip("no chromium: the browser checks need Debian's chromium package")
        r3, self.w = os.pipe()
        self.r, w4 = os.pipe()
        cmd = ("exec %s --headless --no-sandbox --disable-gpu --no-first-run --disable-extensions "
               "--disable-background-networking --remote-debugging-pipe --user-data-dir=%s %s about:blank "
               "3<&%d 4>&%d" % (exe, os.path.join(ctx.dir, "chromium"), " ".join("'%s'" % a for a in args),
                                r3, w4))
        self.log = open(os.path.join(ctx.dir, "chromium.log"), "wb")
        self.proc = subprocess.Popen(["bash", "-c", cmd], pass_fds=(r3, w4), stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=self.log)
        os.close(r3)
        os.close(w4)
        ctx.on_cleanup(self.close)
        self.buf, self.id, self.events = b"", 0, []
        page = [t for t in self.call("Target.getTargets", timeout=30)["targetInfos"] if t["type"] == "page"]
        check(page, "chromium shows no page target")
        self.session = self.call("Target.attachToTarget", {"targetId": page[0]["targetId"], "flatten": True})["sessionId"]
        self.call("Page.enable", session=True)
        self.call("Runtime.enable", session=True)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        for fd in (self.r, self.w):
            try:
                os.close(fd)
            except OSError:
                pass
        self.log.close()

    def _read(self, deadline):
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.r], [], [], left)[0]:
                raise Fail("chromium: no answer in time")
            d = os.read(self.r, 1 << 16)
            if not d:
                raise Fail("chromium exited (status %s)" % self.proc.poll())
            self.buf += d
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method, params=None, session=False, timeout=15):
        self.id += 1
        m = {"id": self.id, "method": method, "params": params or {}}
        if session:
            m["sessionId"] = self.session
        os.write(self.w, json.dumps(m).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            r = self._read(deadline)
            if r.get("id") == self.id:
                if "error" in r:
                    raise Fail("chromium %s: %s" % (method, r["error"]))
                return r["result"]
            self.events.append(r)

    def wait_event(self, method, timeout=15):
        deadline = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e.get("method") == method:
                    del self.events[:i + 1]
                    return e
            self.events.append(self._read(deadline))

    def load(self, url, timeout=15):
        """Navigate and wait for the load event. The events before it (e.g. Network.*) are returned,
        in order, instead of being dropped."""
        self.events.clear()
        self.call("Page.navigate", {"url": url}, session=True)
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            while self.events:
                e = self.events.pop(0)
                if e.get("method") == "Page.loadEventFired":
                    return seen
                seen.append(e)
            self.events.append(self._read(deadline))

    def js(self, expr):
        r = self.call("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True},
                      session=True)
        if "exceptionDetails" in r:
            raise Fail("page script %s: %s" % (short(expr, 80), short(str(r["exceptionDetails"]), 300)))
        return r["result"].get("value")

    def click_and_load(self, selector):
        """Click what selector finds (a submit button): the form posts and the page loads again."""
        self.events.clear()
        check(self.js("!!document.querySelector(%s)" % json.dumps(selector)), "no %s on the page" % selector)
        self.js("document.querySelector(%s).click()" % json.dumps(selector))
        self.wait_event("Page.loadEventFired")

    def viewport(self, width, height, mobile=False):
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                         "mobile": mobile}, session=True)

    def screenshot(self, ctx, name):
        png = base64.b64decode(self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                                         session=True)["data"])
        path = os.path.join(ctx.dir, name)
        with open(path, "wb") as f:
            f.write(png)
        art = os.path.join(it.ROOT, "tests", "artifacts")
        os.makedirs(art, exist_ok=True)
        shutil.copy(path, os.path.join(art, name))
        check(len(png) > 5000, "screenshot %s is only %d bytes" % (name, len(png)))
