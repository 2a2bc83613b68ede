#!/usr/bin/python3
"""Cut the part of the Linode API v4 OpenAPI spec that lb's tests use into tests/data/.

    /usr/bin/python3 tests/linode_spec_cut.py [FULL_SPEC]     # default ../shared/linode/openapi.yaml

The full spec (github.com/linode/linode-api-docs openapi.yaml, 3.6 MB, Apache-2.0) is not in the
repository; the subset is (tests/data/linode-openapi-subset.yaml, with the licence and a note of its
source beside it), so that a plain clone runs tests/scaler.py and tests/deploy2.sh. The subset keeps,
unchanged, the operations in OPERATIONS (their path item's shared parameters too) and every
component they reference through $ref, transitively (version 4.189.0 has no $ref: all is inlined),
plus openapi, servers and info without its long description. It is written as PyYAML dumps it
(sorted keys) but without line folding (width unlimited: ~10% smaller), then read back and compared
with what was cut. tests/openapi_check.py reads it; PyYAML is needed here only (Debian python3-yaml).
tests/scaler.py's spec_subset_is_current compares it with the full spec when that is at hand.
"""
import hashlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_SRC = os.path.join(ROOT, "..", "shared", "linode", "openapi.yaml")
OUT = os.path.join(HERE, "data", "linode-openapi-subset.yaml")
API_PREFIX = "/{apiVersion}"

# (method, path): who uses it
OPERATIONS = [
    ("get", "/linode/instances"),                           # linode-scaler, tests/linode_mock.py
    ("post", "/linode/instances"),                          # linode-scaler (create)
    ("get", "/linode/instances/{linodeId}"),                # linode-scaler (status polls)
    ("put", "/linode/instances/{linodeId}"),                # linode-scaler (tags, label)
    ("delete", "/linode/instances/{linodeId}"),             # linode-scaler (scale-down)
    ("get", "/linode/instances/{linodeId}/ips"),            # linode-scaler (private IPv4)
    ("get", "/linode/instances/{linodeId}/stats"),          # linode-scaler (CPU)
    ("get", "/domains"),                                    # linode-scaler dns-set
    ("get", "/domains/{domainId}/records"),                 # linode-scaler dns-set
    ("post", "/domains/{domainId}/records"),                # linode-scaler dns-set
    ("get", "/domains/{domainId}/records/{recordId}"),      # tests/linode_mock.py serves it
    ("put", "/domains/{domainId}/records/{recordId}"),      # linode-scaler dns-set
    ("post", "/networking/ips/share"),                      # deploy/keepalived-notify.sh (tests/deploy2.sh)
    ("post", "/networking/ips/assign"),                     # deploy/keepalived-notify.sh
    ("get", "/networking/ips/{address}"),                   # deploy/keepalived-notify.sh (owner lookup)
]
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def refs(node):
    """Every $ref string under node."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                yield v
            else:
                yield from refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from refs(v)


def cut(spec):
    """The subset document of a loaded spec."""
    paths = {}
    for method, p in OPERATIONS:
        key = API_PREFIX + p
        item = spec["paths"].get(key)
        if item is None or method not in item:
            raise SystemExit("%s %s is not in the spec" % (method.upper(), key))
        out = paths.setdefault(key, {k: v for k, v in item.items() if k not in METHODS})
        out[method] = item[method]
    components = {}
    todo = list(refs(paths))
    while todo:
        ref = todo.pop()
        parts = ref.split("/")
        if len(parts) != 4 or parts[:2] != ["#", "components"]:
            raise SystemExit("unsupported $ref %r (only #/components/KIND/NAME)" % ref)
        kind, name = parts[2], parts[3].replace("~1", "/").replace("~0", "~")
        if name in components.get(kind, {}):
            continue
        node = spec["components"][kind][name]
        components.setdefault(kind, {})[name] = node
        todo += list(refs(node))
    info = {k: v for k, v in spec["info"].items() if k != "description"}
    doc = {"openapi": spec["openapi"], "info": info, "servers": spec.get("servers", []), "paths": paths}
    if components:
        doc["components"] = components
    return doc


def main():
    import yaml  # here: tests/scaler.py imports OPERATIONS with any python3
    src = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_SRC
    with open(src, "rb") as f:
        raw = f.read()
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    spec = yaml.load(raw, Loader=loader)
    doc = cut(spec)
    body = yaml.safe_dump(doc, sort_keys=True, default_flow_style=False, allow_unicode=True, width=1 << 30)
    if yaml.load(body, Loader=loader) != doc:
        raise SystemExit("the dumped subset does not read back as what was cut")
    head = ("# Linode API v4 OpenAPI spec %s: the operations lb's tests use, cut unchanged from the full spec\n"
            "# by tests/linode_spec_cut.py (do not edit; run it again). Modified from the original: only\n"
            "# those operations are kept (and info without its description); the rest is left out.\n"
            "# Source: github.com/linode/linode-api-docs, openapi.yaml, %d bytes, sha256 %s\n"
            "# Licence: Apache-2.0 (tests/data/LICENSE-linode-openapi.txt); see tests/data/README.md.\n"
            % (spec["info"].get("version", "?"), len(raw), hashlib.sha256(raw).hexdigest()))
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(head + body)
    print("%s: %d operations, %d components, %d bytes" % (os.path.relpath(OUT), len(OPERATIONS),
          sum(len(v) for v in doc.get("components", {}).values()), len(head) + len(body.encode())))


if __name__ == "__main__":
    main()
