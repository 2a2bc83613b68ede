#!/usr/bin/env python3
"""A local ACME CA for tests: Debian's pebble, with certbot as the client, on loopback only.

    python3 tests/acme.py --selftest [--keep]

Stdlib only.  Needs the Debian packages `pebble` (pebble and pebble-challtestsrv) and `certbot`,
and openssl.

    import acme
    ok, why = acme.available()                 # skip the test when not ok
    with acme.Pebble.start(tmpdir, http_port) as p:   # http_port: where HTTP-01 is validated
        r = acme.certbot_obtain(p, tmpdir, "lb-test.example", webroot,
                                deploy_hook_cmd=ROOT + "/deploy/certbot-deploy-hook.sh",
                                env_extra={"LB_CERT_DIR": certs, "LB_PIDFILE": pidfile})
        r.lineage                  # .../live/lb-test.example: fullchain.pem, privkey.pem
        p.root_file()                          # pebble's root CA, to verify what lb serves
        acme.verify_cert(p, served_chain_pem, "lb-test.example")

Real validation: pebble's VA resolves the name through pebble-challtestsrv, a mock DNS server that
answers every A query with 127.0.0.1 (and no AAAA), then GETs
http://NAME:http_port/.well-known/acme-challenge/TOKEN from 127.0.0.1, three times (its log:
"Starting 3 validations"), with `Host: NAME:http_port`, `Connection: close` and User-Agent
`LetsEncrypt-Pebble-VA`.  Any name works (lb-test.example by default); no /etc/hosts entry and no
query to the machine's resolver.  PEBBLE_VA_ALWAYS_VALID is removed from pebble's environment.
PEBBLE_VA_NOSLEEP=1 drops pebble's random 0-15 s sleep before validating; PEBBLE_WFE_NONCEREJECT=0
stops it rejecting 15 % of good nonces.

Debian's pebble ships no certificate for its own HTTPS API (upstream's test/certs/ is not packaged):
start() makes a throwaway CA and a cert for 127.0.0.1 with openssl; `ca_bundle` is that CA, which
certbot trusts through REQUESTS_CA_BUNDLE.  The CA that *issues* (pebble's root and intermediate) is
another one, regenerated at every start: `root_pem()` / `root_file()` from the management port.

Timing on a 2-core box: pebble answers within about 1 s of starting (7 s seen on a cold first
run; it makes RSA keys), one issuance takes about 3 s, the whole self-test about 15 s.
certbot (2.1 in Debian 12) requests an ECDSA P-256 key by default (key_type="rsa" for RSA 2048); the
chain is signed by pebble's RSA intermediate either way.  certbot exits 0 even when the deploy hook
fails: certbot_obtain() detects that in its output and raises.
"""
import argparse
import atexit
import collections
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HOST = "127.0.0.1"
DEFAULT_NAME = "lb-test.example"
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEPLOY_HOOK = os.path.join(ROOT, "deploy", "certbot-deploy-hook.sh")
TOOLS = {"pebble": "pebble", "pebble-challtestsrv": "pebble", "certbot": "certbot",
         "openssl": "openssl"}
HOOK_FAILED_RE = re.compile(r"Hook '(?:deploy-hook|pre-hook|post-hook)' reported error code (\d+)")

CertbotResult = collections.namedtuple("CertbotResult", "returncode output lineage")


class AcmeError(Exception):
    """Pebble or certbot failed; the message ends with the tail of the relevant logs."""


def available():
    """(True, "") when pebble, pebble-challtestsrv, certbot and openssl are installed, else
    (False, reason naming the Debian packages to install)."""
    missing = sorted({pkg for tool, pkg in TOOLS.items() if not shutil.which(tool)})
    if missing:
        return False, "missing Debian package(s): %s (apt-get install -y %s)" % (
            ", ".join(missing), " ".join(missing))
    return True, ""


def free_port(udp=False):
    """A port free on 127.0.0.1 now (TCP, and UDP too when udp: a DNS server binds both)."""
    for _ in range(100):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
            if udp:
                u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    u.bind((HOST, port))
                except OSError:
                    continue
                finally:
                    u.close()
            return port
        finally:
            s.close()
    raise AcmeError("no free port on %s" % HOST)


def tail(path, lines=30):
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError as e:
        return "(no %s: %s)" % (path, e.strerror)
    return "\n".join(text.splitlines()[-lines:])


def _run(argv, **kw):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=60, **kw)
    if r.returncode != 0:
        raise AcmeError("%s failed (exit %d):\n%s" % (" ".join(argv), r.returncode, r.stdout))
    return r.stdout


def make_api_cert(d):
    """A CA and, signed by it, a cert for 127.0.0.1 and localhost, for pebble's own HTTPS API.
    Returns (ca_pem, cert_pem, key_pem) paths."""
    os.makedirs(d, exist_ok=True)
    ca, ca_key = os.path.join(d, "api-ca.pem"), os.path.join(d, "api-ca.key")
    cert, key = os.path.join(d, "api.pem"), os.path.join(d, "api.key")
    csr, ext = os.path.join(d, "api.csr"), os.path.join(d, "api.ext")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    _run(["openssl", "req", "-x509"] + ec + ["-keyout", ca_key, "-out", ca, "-days", "7",
                                             "-subj", "/CN=lb test: pebble API CA"])
    _run(["openssl", "req"] + ec + ["-keyout", key, "-out", csr, "-subj", "/CN=localhost"])
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
                "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n")
    _run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
          "-out", cert, "-days", "7", "-extfile", ext])
    return ca, cert, key


def _popen(argv, log, env=None):
    f = open(log, "ab")
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    finally:
        f.close()


def _stop(proc, grace=5):
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class Pebble:
    """pebble + pebble-challtestsrv (its DNS), bound on 127.0.0.1 only, on free ports.

    Attributes: dir_url (ACME directory, for certbot --server), ca_bundle (CA of the API's HTTPS
    cert, for REQUESTS_CA_BUNDLE), mgmt_url, http_port (validated HTTP-01 port), dns_port,
    workdir, log (pebble's log), dns_log, config (pebble's JSON config)."""

    def __init__(self, workdir, http_port, tls_port=None):
        self.workdir = os.path.abspath(workdir)
        self.http_port = http_port
        self.tls_port = tls_port or free_port()
        self.api_port = free_port()
        self.mgmt_port = free_port()
        self.dns_port = free_port(udp=True)
        self.dns_mgmt_port = free_port()
        self.dir_url = "https://%s:%d/dir" % (HOST, self.api_port)
        self.mgmt_url = "https://%s:%d" % (HOST, self.mgmt_port)
        self.log = os.path.join(self.workdir, "pebble.log")
        self.dns_log = os.path.join(self.workdir, "pebble-challtestsrv.log")
        self.config = os.path.join(self.workdir, "pebble-config.json")
        self.ca_bundle = None
        self.proc = self.dns_proc = None
        self._ctx = None

    @classmethod
    def start(cls, workdir, http_port, tls_port=None, timeout=60):
        """Start pebble so that it validates HTTP-01 on 127.0.0.1:http_port; return once its
        directory answers.  Raises AcmeError with the logs' tails if it does not."""
        p = cls(workdir, http_port, tls_port)
        # a safety net for a test that dies without stop(): no pebble outlives the interpreter
        atexit.register(p.stop)
        try:
            p._start(timeout)
        except BaseException:
            p.stop()
            raise
        return p

    def _start(self, timeout):
        os.makedirs(self.workdir, exist_ok=True)
        self.ca_bundle, cert, key = make_api_cert(os.path.join(self.workdir, "pebble-api"))
        self._ctx = ssl.create_default_context(cafile=self.ca_bundle)
        with open(self.config, "w") as f:
            f.write('{"pebble": {"listenAddress": "%s:%d", "managementListenAddress": "%s:%d",\n'
                    ' "certificate": "%s", "privateKey": "%s", "httpPort": %d, "tlsPort": %d,\n'
                    ' "ocspResponderURL": "", "externalAccountBindingRequired": false}}\n'
                    % (HOST, self.api_port, HOST, self.mgmt_port, cert, key, self.http_port,
                       self.tls_port))
        # Every name resolves to 127.0.0.1 and only that: no AAAA, so the VA never tries ::1.
        # Its own HTTP-01/TLS-ALPN-01 responders are turned off: lb (or the stand-in) answers.
        self.dns_proc = _popen(
            ["pebble-challtestsrv", "-dns01", "%s:%d" % (HOST, self.dns_port), "-http01", "",
             "-https01", "", "-tlsalpn01", "", "-management", "%s:%d" % (HOST, self.dns_mgmt_port),
             "-defaultIPv4", HOST, "-defaultIPv6", ""], self.dns_log)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PEBBLE_")}
        env.update(PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0")
        self.proc = _popen(["pebble", "-config", self.config, "-strict=false",
                            "-dnsserver", "%s:%d" % (HOST, self.dns_port)], self.log, env)
        deadline = time.monotonic() + timeout
        dns_up = False
        while True:
            for name, proc, log in (("pebble", self.proc, self.log),
                                    ("pebble-challtestsrv", self.dns_proc, self.dns_log)):
                if proc.poll() is not None:
                    raise AcmeError("%s exited with %d at start\n%s" % (name, proc.returncode,
                                                                         self.logs()))
            if not dns_up:
                try:
                    socket.create_connection((HOST, self.dns_port), 0.5).close()
                    dns_up = True
                except OSError:
                    pass
            if dns_up:
                try:
                    self._get(self.dir_url, timeout=2)
                    return
                except (OSError, urllib.error.URLError):
                    pass
            if time.monotonic() > deadline:
                raise AcmeError("pebble did not answer %s within %ds\n%s" % (self.dir_url, timeout,
                                                                            self.logs()))
            time.sleep(0.2)

    def _get(self, url, timeout=10):
        with urllib.request.urlopen(url, context=self._ctx, timeout=timeout) as r:
            return r.read()

    def logs(self, lines=30):
        return "--- %s:\n%s\n--- %s:\n%s" % (self.log, tail(self.log, lines), self.dns_log,
                                              tail(self.dns_log, 10))

    def root_pem(self, i=0):
        """Pebble's issuing root CA (PEM text), new at every start."""
        return self._get("%s/roots/%d" % (self.mgmt_url, i)).decode()

    def intermediate_pem(self, i=0):
        return self._get("%s/intermediates/%d" % (self.mgmt_url, i)).decode()

    def root_file(self, i=0):
        """root_pem() written to WORKDIR/pebble-root-I.pem; returns the path (for openssl
        verify -CAfile, ssl cafile, curl --cacert)."""
        path = os.path.join(self.workdir, "pebble-root-%d.pem" % i)
        with open(path, "w") as f:
            f.write(self.root_pem(i))
        return path

    def stop(self):
        """Stop both processes (SIGTERM, then SIGKILL after 5 s).  Idempotent."""
        _stop(self.proc)
        _stop(self.dns_proc)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _certbot(pebble, workdir, args, deploy_hook_cmd, env_extra, timeout, what):
    base = os.path.join(os.path.abspath(workdir), "certbot")
    conf, work, logs = (os.path.join(base, d) for d in ("config", "work", "logs"))
    for d in (conf, work, logs):
        os.makedirs(d, exist_ok=True)
    # an empty cli.ini so that /etc/letsencrypt/cli.ini or ~/.config/letsencrypt/cli.ini of the
    # machine cannot change what the test runs
    ini = os.path.join(base, "cli.ini")
    open(ini, "a").close()
    argv = ["certbot"] + args + [
        "-c", ini, "--config-dir", conf, "--work-dir", work, "--logs-dir", logs,
        "--non-interactive", "--agree-tos", "--register-unsafely-without-email",
        "--no-random-sleep-on-renew"]
    if deploy_hook_cmd:
        argv += ["--deploy-hook", deploy_hook_cmd]
    env = dict(os.environ)
    env["REQUESTS_CA_BUNDLE"] = pebble.ca_bundle
    env.update(env_extra or {})
    try:
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=timeout, env=env)
        rc, out = r.returncode, r.stdout
    except subprocess.TimeoutExpired as e:
        out = e.stdout or ""
        if isinstance(out, bytes):
            out = out.decode("utf-8", "replace")
        raise AcmeError("certbot %s timed out after %ds\n%s\n--- certbot log:\n%s\n%s" % (
            what, timeout, out, tail(os.path.join(logs, "letsencrypt.log")), pebble.logs()))
    return rc, out, conf, logs, argv


def _checked(pebble, rc, out, logs, argv, lineage, check, what):
    hook = HOOK_FAILED_RE.search(out)
    if check and (rc != 0 or hook):
        why = "exit %d" % rc if rc != 0 else "a hook failed (certbot still exits 0)"
        raise AcmeError("certbot %s: %s\n$ %s\n%s\n--- certbot log:\n%s\n%s" % (
            what, why, " ".join(argv), out, tail(os.path.join(logs, "letsencrypt.log")),
            pebble.logs()))
    return CertbotResult(rc, out, lineage)


def certbot_obtain(pebble, workdir, name, webroot, deploy_hook_cmd=None, env_extra=None,
                   timeout=120, key_type=None, extra_names=(), extra_args=(), check=True):
    """`certbot certonly --webroot -w WEBROOT -d NAME [-d EXTRA...]` against pebble.

    certbot's state goes to WORKDIR/certbot/{config,work,logs} (reused across calls: one ACME
    account).  The lineage is named NAME (--cert-name).  deploy_hook_cmd is a shell command run by
    certbot with RENEWED_LINEAGE and RENEWED_DOMAINS; env_extra is added to certbot's environment,
    which the hook inherits.  key_type: None (certbot's default, ecdsa), "ecdsa" or "rsa".
    Returns CertbotResult(returncode, output, lineage); with check (default) raises AcmeError
    with the logs' tails when certbot fails or a hook reported an error."""
    args = ["certonly", "--server", pebble.dir_url, "--webroot", "-w", os.path.abspath(webroot),
            "--cert-name", name, "-d", name]
    for n in extra_names:
        args += ["-d", n]
    if key_type:
        args += ["--key-type", key_type]
    args += list(extra_args)
    rc, out, conf, logs, argv = _certbot(pebble, workdir, args, deploy_hook_cmd, env_extra, timeout,
                                         "certonly")
    lineage = os.path.join(conf, "live", name)
    return _checked(pebble, rc, out, logs, argv, lineage, check, "certonly")


def certbot_renew(pebble, workdir, name, deploy_hook_cmd=None, env_extra=None, timeout=120,
                  check=True):
    """`certbot renew --force-renewal --cert-name NAME`: a new certificate for a lineage that
    certbot_obtain() made (same workdir; the webroot must be served again), with the deploy hook
    run as on a real renewal.  Returns/raises like certbot_obtain()."""
    args = ["renew", "--cert-name", name, "--force-renewal"]
    rc, out, conf, logs, argv = _certbot(pebble, workdir, args, deploy_hook_cmd, env_extra, timeout,
                                         "renew")
    lineage = os.path.join(conf, "live", name)
    return _checked(pebble, rc, out, logs, argv, lineage, check, "renew")


def cert_info(pem_path):
    """openssl x509 -noout -subject -ext subjectAltName of the first certificate in the file."""
    return _run(["openssl", "x509", "-in", pem_path, "-noout", "-subject",
                 "-ext", "subjectAltName"])


def verify_cert(pebble, pem_path, name):
    """Check that the first certificate in pem_path (leaf, then its chain; a trailing key is
    ignored) chains to pebble's current root and is valid for NAME.  Raises AcmeError if not."""
    with open(pem_path) as f:
        certs = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", f.read(),
                           re.S)
    if not certs:
        raise AcmeError("%s holds no certificate" % pem_path)
    with tempfile.TemporaryDirectory() as d:
        leaf, chain = os.path.join(d, "leaf.pem"), os.path.join(d, "chain.pem")
        with open(leaf, "w") as f:
            f.write(certs[0] + "\n")
        with open(chain, "w") as f:
            f.write("\n".join(certs[1:]) + "\n")
        argv = ["openssl", "verify", "-CAfile", pebble.root_file(), "-verify_hostname", name]
        if len(certs) > 1:
            argv += ["-untrusted", chain]
        _run(argv + [leaf])


# -------------------------------------------------------------------------------------- self-test

def _selftest(keep=False):
    ok, why = available()
    if not ok:
        print("SKIP acme selftest: %s" % why)
        return 0
    results = []
    tmp = tempfile.mkdtemp(prefix="lb-acme-")
    webroot = os.path.join(tmp, "webroot")
    os.makedirs(webroot)
    http_port = free_port()
    t0 = time.monotonic()
    http = pebble = None

    def check(name, fn):
        t = time.monotonic()
        try:
            fn()
            results.append(True)
            print("PASS %s (%.1fs)" % (name, time.monotonic() - t), flush=True)
        except Exception as e:  # noqa: BLE001 - report and go on
            results.append(False)
            print("FAIL %s: %s" % (name, e), flush=True)

    try:
        # stand-in for lb's plain listener serving [tls] acme_webroot
        http = _popen([sys.executable, "-m", "http.server", "-b", HOST, "-d", webroot,
                       str(http_port)], os.path.join(tmp, "http.log"))
        pebble = Pebble.start(os.path.join(tmp, "pebble"), http_port)
        print("pebble up in %.1fs: %s (validates http://NAME:%d)" % (time.monotonic() - t0,
                                                                    pebble.dir_url, http_port))
        certs = os.path.join(tmp, "lb-certs")
        hook_env = {"LB_CERT_DIR": certs, "LB_RELOAD_CMD": "true"}

        def issue(name, key_type, want_key):
            def fn():
                r = certbot_obtain(pebble, tmp, name, webroot, deploy_hook_cmd=DEPLOY_HOOK,
                                   env_extra=hook_env, key_type=key_type, timeout=60)
                pem = os.path.join(certs, name + ".pem")
                with open(pem) as f:
                    text = f.read()
                if "-----BEGIN CERTIFICATE-----" not in text or "PRIVATE KEY-----" not in text:
                    raise AcmeError("%s lacks a CERTIFICATE or a PRIVATE KEY" % pem)
                if text.index("PRIVATE KEY-----") < text.rindex("-----END CERTIFICATE-----"):
                    raise AcmeError("%s: the key is not after the chain" % pem)
                info = cert_info(pem)
                if "DNS:%s" % name not in info or "CN = %s" % name not in info:
                    raise AcmeError("%s is not for %s:\n%s" % (pem, name, info))
                if oct(os.stat(pem).st_mode & 0o777) != "0o640":
                    raise AcmeError("%s mode %o" % (pem, os.stat(pem).st_mode & 0o777))
                key = _run(["openssl", "pkey", "-in", os.path.join(r.lineage, "privkey.pem"),
                            "-noout", "-text"])
                if want_key not in key:
                    raise AcmeError("key is not %s:\n%s" % (want_key, key[:200]))
                verify_cert(pebble, pem, name)
                with open(os.path.join(tmp, "http.log")) as f:
                    if "/.well-known/acme-challenge/" not in f.read():
                        raise AcmeError("pebble never fetched the challenge from the stand-in")
                if os.listdir(webroot) not in ([], [".well-known"]):
                    raise AcmeError("webroot left with %r" % os.listdir(webroot))
            return fn

        check("issue ecdsa (certbot's default key) + deploy hook",
              issue(DEFAULT_NAME, None, "ASN1 OID: prime256v1"))
        check("issue rsa + deploy hook",
              issue("rsa." + DEFAULT_NAME, "rsa", "Private-Key: (2048 bit"))

        def renew():
            pem = os.path.join(certs, DEFAULT_NAME + ".pem")
            before = _run(["openssl", "x509", "-in", pem, "-noout", "-serial"])
            marker = os.path.join(tmp, "reloaded")
            certbot_renew(pebble, tmp, DEFAULT_NAME, deploy_hook_cmd=DEPLOY_HOOK, timeout=60,
                          env_extra=dict(hook_env, LB_RELOAD_CMD="touch " + marker))
            after = _run(["openssl", "x509", "-in", pem, "-noout", "-serial"])
            if before == after or not os.path.exists(marker):
                raise AcmeError("renewal did not replace %s or did not reload" % pem)
        check("renew replaces the file and reloads", renew)

        def hook_failure_raises():
            try:
                certbot_renew(pebble, tmp, DEFAULT_NAME, deploy_hook_cmd=DEPLOY_HOOK, timeout=60,
                              env_extra=dict(hook_env, LB_RELOAD_CMD="exit 7"))
            except AcmeError as e:
                if "hook failed" not in str(e):
                    raise
                return
            raise AcmeError("a failing deploy hook went unnoticed")
        check("failing deploy hook is reported", hook_failure_raises)

        def validation_is_real():
            # the token is written under a directory nobody serves: pebble must refuse
            unserved = os.path.join(tmp, "unserved")
            os.makedirs(unserved, exist_ok=True)
            r = certbot_obtain(pebble, tmp, "unserved." + DEFAULT_NAME, unserved, timeout=60,
                               check=False)
            if r.returncode == 0:
                raise AcmeError("issued without a served token: validation is not real")
            if "404" not in r.output:
                raise AcmeError("unexpected failure:\n%s" % r.output)
        check("no served token, no certificate", validation_is_real)
    except Exception as e:  # noqa: BLE001
        results.append(False)
        print("FAIL acme selftest setup: %s" % e, flush=True)
    finally:
        if pebble:
            pebble.stop()
        _stop(http)
        if keep:
            print("kept %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    passed = sum(results)
    print("acme: %d passed, %d failed" % (passed, len(results) - passed))
    print("(%.1fs)" % (time.monotonic() - t0))
    return 0 if results and all(results) else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--selftest", action="store_true",
                    help="issue certificates with pebble, certbot and "
                    "deploy/certbot-deploy-hook.sh, python3 -m http.server standing in for lb")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    a = ap.parse_args()
    if not a.selftest:
        ap.print_help()
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return _selftest(a.keep)


if __name__ == "__main__":
    sys.exit(main())
