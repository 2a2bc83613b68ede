#!/usr/bin/env python3
"""README's key tables agree with lb's key table (`lb --keys`).

For each section kind: the same keys on both sides, the same ones marked repeatable (`key*`), and
the same defaults (README's default cell is lb's default, or starts with it and a parenthesis, as
`0 (off)`; a key without a default in lb has a description there: "(none)", "—" or one listed in
DESCRIBED). [scaler] is compared with deploy/README.md's table (linode-scaler reads it with lb's parser).
One line per section: "PASS readme/[kind]" or "FAIL readme/[kind]: what differs"; then
"keys: N passed, N failed". Run: LB_BIN=./lb python3 tests/keys.py
"""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LB = os.environ.get("LB_BIN", os.path.join(ROOT, "lb"))
NONE = {"—", "(none)", "— (required)"}
DESCRIBED = {  # keys without a value default whose README default cell describes what happens
    ("listener", "pool"): "—", ("pool", "tls_ca"): "system CAs", ("pool", "tls_sni"): "the server's host name",
    ("route", "listener"): "all http listeners", ("route", "host"): "any", ("route", "path"): "any",
    ("route", "method"): "any", ("route", "response_timeout"): "pool / listener value",
    ("route", "max_body_size"): "pool / listener value", ("admin", "allow"): "loopback",
    ("scaler", "tag"): "lb-pool-POOL",
}


def lb_keys():
    out = subprocess.run([LB, "--keys"], capture_output=True, text=True, timeout=10)
    if out.returncode != 0:
        raise SystemExit("FAIL readme/lb-keys: %s --keys exited %d: %s" % (LB, out.returncode, out.stderr.strip()[:200]))
    keys = {}
    for ln in out.stdout.splitlines():
        sect, name, default, _doc = ln.split("\t")
        keys.setdefault(sect, {})[name.rstrip("*")] = (name.endswith("*"), None if default == "-" else default)
    return keys


def readme_tables(path):
    """{kind: {key: (repeatable, default cell)}} from the `| key | default | meaning |` tables under `### [kind ...]`"""
    tables, kind, in_table, fence = {}, None, False, False
    with open(path, encoding="utf-8") as f:
        for ln in f:
            if ln.startswith("```"):
                fence = not fence
            if fence:
                continue
            if re.match(r"^#{1,4} ", ln):
                m = re.search(r"\[(\w+)", ln)
                kind, in_table = m.group(1) if m else None, False
                continue
            if kind and re.match(r"^\| key \| default \| meaning \|", ln):
                in_table = True
                tables.setdefault(kind, {})
                continue
            if in_table and not ln.startswith("|"):
                in_table = False
            if not in_table or ln.startswith("|---"):
                continue
            cells = [c.strip() for c in ln.strip().strip("|").split("|")]
            for name in cells[0].split(","):
                name = name.strip().strip("`")
                tables[kind][name.rstrip("*")] = (name.endswith("*"), cells[1])
    return tables


def compare(kind, lb, rd):
    errs = []
    for k in sorted(set(lb) - set(rd)):
        errs.append("'%s' is in lb but not in README" % k)
    for k in sorted(set(rd) - set(lb)):
        errs.append("'%s' is in README but not in lb" % k)
    for k in sorted(set(lb) & set(rd)):
        (lrep, ldef), (rrep, rdef) = lb[k], rd[k]
        if lrep != rrep:
            errs.append("'%s' is %srepeatable in lb, %sin README" % (k, "" if lrep else "not ", "" if rrep else "not "))
        if ldef is not None and rdef != ldef and not rdef.startswith(ldef + " ("):
            errs.append("'%s' default: lb %r, README %r" % (k, ldef, rdef))
        if ldef is None and rdef not in NONE and DESCRIBED.get((kind, k)) != rdef:
            errs.append("'%s' has no default in lb, README says %r" % (k, rdef))
    return errs


def main():
    lb = lb_keys()
    readme = readme_tables(os.path.join(ROOT, "README.md"))
    readme.update({k: v for k, v in readme_tables(os.path.join(ROOT, "deploy", "README.md")).items() if k == "scaler"})
    passed = failed = 0
    for kind in ["global", "log", "admin", "scaler", "listener", "pool", "route"]:
        if kind not in lb or kind not in readme:
            errs = ["no key table for [%s] in %s" % (kind, "lb --keys" if kind not in lb else "README")]
        else:
            errs = compare(kind, lb[kind], readme[kind])
        if errs:
            failed += 1
            print("FAIL readme/[%s]: %s" % (kind, "; ".join(errs)))
        else:
            passed += 1
            print("PASS readme/[%s]: %d keys agree" % (kind, len(lb[kind])))
    print("keys: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
