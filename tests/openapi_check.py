#!/usr/bin/env python3
"""Validate HTTP requests and responses against the Linode OpenAPI spec (python3 standard library only).

    import openapi_check as oc
    spec = oc.Spec("tests/data/linode-openapi-subset.yaml", ["/linode/instances", "/linode/instances/{linodeId}", ...])
    op, params = spec.match("POST", "/v4/linode/instances")   # (None, None): no such operation in the spec
    errors = spec.check_request(op, params, query, headers, body_bytes)   # [] when the spec accepts it
    errors = spec.check_response(op, status, json_value)

The spec (openapi.yaml, Linode API v4.189.0, or the subset of it that tests/linode_spec_cut.py cuts into
tests/data/linode-openapi-subset.yaml) is a PyYAML-style dump: block mappings and sequences,
plain and quoted (possibly multi-line) scalars, `[]`/`{}`, no anchors and no $ref (everything is inlined).
`load_block` reads that subset, only for the path items asked for, so the 3.6 MB file is never parsed
whole. `python3 tests/openapi_check.py [SPEC]` compares it with PyYAML on those blocks when PyYAML exists.

The schema checks are the JSON Schema / OpenAPI 3.0 keywords the spec uses: type, nullable, enum,
properties, required, additionalProperties, items, min/maxLength, pattern, minimum/maximum,
min/maxItems, uniqueItems, format (byte, ip, ipv4), allOf (merged, since the spec's first part
says additionalProperties: false for properties the second part adds), oneOf, anyOf; readOnly
properties are refused in requests and writeOnly ones in responses.
"""
import base64
import ipaddress
import json
import os
import re
import sys

API_PREFIX = "/{apiVersion}"


# ---------------------------------------------------------------------------------------- YAML subset

class YamlError(Exception):
    pass


def _indent(line):
    return len(line) - len(line.lstrip(" "))


def _scalar(text):
    t = text.strip()
    if t in ("null", "~", ""):
        return None
    if t == "true":
        return True
    if t == "false":
        return False
    if t == "[]":
        return []
    if t == "{}":
        return {}
    if re.fullmatch(r"[-+]?[0-9]+", t):
        return int(t)
    if re.fullmatch(r"[-+]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?|[-+]?[0-9]+[eE][-+]?[0-9]+", t):
        return float(t)
    if t.startswith("[") and t.endswith("]"):
        return [_scalar(x) for x in t[1:-1].split(",") if x.strip()]
    return t


def _fold(parts, closing_alone=False, escaped_breaks=False):
    """YAML line folding of a multi-line flow scalar: one break is a space, n blank lines n newlines.
    closing_alone: the last part is the empty text before a closing quote on a line of its own.
    escaped_breaks (double-quoted scalars, escapes not yet undone): a line ending in an unescaped
    backslash joins the next without a space, and blank lines at the end are dropped."""
    if closing_alone and len(parts) > 1:
        body = parts[:-1]
        n = 0
        while body and body[-1] == "":
            body.pop()
            n += 1
        return _fold(body) + ("\n" * n if n else " ")
    out = ""
    blanks = 0
    first = True
    for p in parts:
        if p == "":
            blanks += 1
            continue
        if first:
            out += p
        elif escaped_breaks and out.endswith("\\") and not out.endswith("\\\\"):
            out = out[:-1] + ("\n" * blanks) + p
        else:
            out += ("\n" * blanks) if blanks else " "
            out += p
        blanks = 0
        first = False
    return out + ("\n" * blanks if blanks and not escaped_breaks else "")


_DQ_ESC = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "/": "/", "0": "\0", "r": "\r", " ": " ", "a": "\a",
           "b": "\b", "e": "\x1b", "f": "\f", "v": "\v", "N": "\x85", "_": "\xa0", "L": "\u2028", "P": "\u2029"}


def _unescape_dq(s):
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        n = s[i + 1]
        if n in _DQ_ESC:
            out.append(_DQ_ESC[n])
            i += 2
        elif n in "xuU":
            w = {"x": 2, "u": 4, "U": 8}[n]
            out.append(chr(int(s[i + 2:i + 2 + w], 16)))
            i += 2 + w
        else:
            raise YamlError("bad escape \\%s" % n)
    return "".join(out)


class _Reader:
    def __init__(self, lines):
        self.lines = lines
        self.i = 0

    def skip_blank(self):
        while self.i < len(self.lines) and (self.lines[self.i].strip() == "" or
                                            self.lines[self.i].lstrip().startswith("#")):
            self.i += 1

    def quoted(self, first, q):
        """A quoted scalar starting at `first` (text after the opening quote); may span lines."""
        parts = []
        cur = first
        while True:
            j = 0
            if q == "'":
                while True:
                    k = cur.find("'", j)
                    if k < 0:
                        break
                    if cur[k + 1:k + 2] == "'":
                        j = k + 2
                        continue
                    parts.append(cur[:k].strip() if parts else cur[:k].rstrip())
                    rest = cur[k + 1:]
                    alone = len(parts) > 1 and parts[-1] == ""
                    return _fold(parts, alone).replace("''", "'"), rest
            else:
                while True:
                    k = cur.find('"', j)
                    if k < 0:
                        break
                    nb = 0
                    while k - 1 - nb >= 0 and cur[k - 1 - nb] == "\\":
                        nb += 1
                    if nb % 2:
                        j = k + 1
                        continue
                    parts.append(cur[:k].strip() if parts else cur[:k].rstrip())
                    rest = cur[k + 1:]
                    return _unescape_dq(self._dq_join(parts)), rest
            parts.append(cur.strip() if parts else cur.rstrip())
            self.i += 1
            if self.i >= len(self.lines):
                raise YamlError("unterminated quoted scalar")
            cur = self.lines[self.i]

    @staticmethod
    def _dq_join(parts):
        return _fold(parts, escaped_breaks=True)

    def value(self, text, indent):
        """The value written after `key:` or `- ` on the current line (line index self.i), `indent`
        being the indentation of that key or dash. Leaves self.i after the value."""
        t = text.strip()
        if t.startswith("'") or t.startswith('"'):
            v, rest = self.quoted(text.lstrip()[1:], t[0])
            if rest.strip():
                raise YamlError("line %d: text after a quoted scalar" % (self.i + 1))
            self.i += 1
            return v
        if t == "":
            self.i += 1
            self.skip_blank()
            if self.i >= len(self.lines):
                return None
            ni = _indent(self.lines[self.i])
            nl = self.lines[self.i].lstrip()
            if ni > indent or (ni == indent and nl.startswith("- ")) or (ni == indent and nl == "-"):
                return self.node(ni)
            return None
        # plain scalar: continuation lines are more indented than the key
        parts = [t]
        self.i += 1
        while self.i < len(self.lines):
            ln = self.lines[self.i]
            if ln.strip() == "":
                j = self.i
                while j < len(self.lines) and self.lines[j].strip() == "":
                    j += 1
                if j < len(self.lines) and _indent(self.lines[j]) > indent and not self._struct(self.lines[j]):
                    parts.extend([""] * (j - self.i))
                    self.i = j
                    continue
                break
            if _indent(ln) > indent:
                parts.append(ln.strip())
                self.i += 1
                continue
            break
        if len(parts) == 1:
            return _scalar(t)
        return _fold(parts)

    @staticmethod
    def _struct(line):
        return False

    def key_split(self, body):
        """(key, rest) of `key: rest` / `key:`; None when the line is not a mapping entry."""
        if body.startswith("'") or body.startswith('"'):
            q = body[0]
            k = body.find(q, 1)
            while q == "'" and k >= 0 and body[k + 1:k + 2] == "'":
                k = body.find(q, k + 2)
            if k < 0 or body[k + 1:k + 2] != ":":
                return None
            key = body[1:k].replace("''", "'") if q == "'" else _unescape_dq(body[1:k])
            return key, body[k + 2:]
        m = re.match(r"([^\s'\"#][^:]*?|[^:\s]*):( |$)", body)
        if not m:
            return None
        return m.group(1), body[m.end():]

    def node(self, indent):
        self.skip_blank()
        line = self.lines[self.i]
        body = line[indent:]
        if body.startswith("- ") or body == "-":
            return self.seq(indent)
        return self.mapping(indent)

    def seq(self, indent):
        out = []
        while True:
            self.skip_blank()
            if self.i >= len(self.lines):
                return out
            line = self.lines[self.i]
            if _indent(line) != indent or not (line[indent:].startswith("- ") or line[indent:] == "-"):
                return out
            item = line[indent + 2:]
            kv = self.key_split(item) if item else None
            if kv is not None:
                # a mapping whose first key sits on the dash line, at indent + 2
                self.lines[self.i] = " " * (indent + 2) + item
                out.append(self.mapping(indent + 2))
            else:
                out.append(self.value(item, indent))
            if self.i >= len(self.lines):
                return out

    def mapping(self, indent):
        out = {}
        while True:
            self.skip_blank()
            if self.i >= len(self.lines):
                return out
            line = self.lines[self.i]
            ind = _indent(line)
            if ind < indent:
                return out
            if ind > indent:
                raise YamlError("line %d: unexpected indentation" % (self.i + 1))
            body = line[indent:]
            if body.startswith("- "):
                return out
            kv = self.key_split(body)
            if kv is None:
                raise YamlError("line %d: not a mapping entry: %s" % (self.i + 1, body[:60]))
            key, rest = kv
            out[key] = self.value(rest, indent)


def load_block(lines, start):
    """The YAML node of the mapping entry at line `start` (a `key:` line): {key: value}."""
    ind = _indent(lines[start])
    end = start + 1
    while end < len(lines) and (lines[end].strip() == "" or _indent(lines[end]) > ind):
        end += 1
    r = _Reader(lines[start:end])
    return r.mapping(ind)


# ---------------------------------------------------------------------------------------- schemas

def merge_all_of(s):
    """A schema with allOf parts merged into one (properties united, required united, the loosest
    additionalProperties, since the spec's allOf parts each describe part of one object)."""
    if not isinstance(s, dict) or "allOf" not in s:
        return s
    out = {k: v for k, v in s.items() if k != "allOf"}
    props = dict(out.get("properties", {}))
    req = list(out.get("required", []))
    addl = out.get("additionalProperties", None)
    addl_set = "additionalProperties" in out
    for part in s["allOf"]:
        part = merge_all_of(part)
        props.update(part.get("properties", {}))
        req += [r for r in part.get("required", []) if r not in req]
        if "additionalProperties" in part:
            if not addl_set:
                addl, addl_set = part["additionalProperties"], True
            elif addl is False:
                addl = part["additionalProperties"]
        for k, v in part.items():
            if k not in ("properties", "required", "additionalProperties") and k not in out:
                out[k] = v
    if props:
        out["properties"] = props
    if req:
        out["required"] = req
    if addl_set and any("additionalProperties" in merge_all_of(p) for p in s["allOf"]):
        # false only when every part that says so says false
        vals = [merge_all_of(p).get("additionalProperties") for p in s["allOf"] if
                "additionalProperties" in merge_all_of(p)]
        if len(vals) < len(s["allOf"]):
            out.pop("additionalProperties", None)  # a part without the keyword allows anything
        else:
            out["additionalProperties"] = False if all(v is False for v in vals) else True
    return out


def _type_ok(t, v):
    if t == "string":
        return isinstance(v, str)
    if t == "integer":
        return isinstance(v, int) and not isinstance(v, bool)
    if t == "number":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if t == "boolean":
        return isinstance(v, bool)
    if t == "object":
        return isinstance(v, dict)
    if t == "array":
        return isinstance(v, list)
    return True


def validate(s, v, where="body", mode="request"):
    """Errors (strings) of value v against schema s; mode 'request' refuses readOnly properties,
    'response' refuses writeOnly ones."""
    errs = []
    if not isinstance(s, dict):
        return errs
    s = merge_all_of(s)
    if v is None:
        if s.get("nullable") or "type" not in s:
            return errs
        return ["%s: null where %s is expected" % (where, s.get("type"))]
    if "oneOf" in s:
        ok = [alt for alt in s["oneOf"] if not validate(alt, v, where, mode)]
        if len(ok) != 1:
            errs.append("%s: matches %d of the %d oneOf alternatives (want exactly 1)" % (where, len(ok), len(s["oneOf"])))
    if "anyOf" in s:
        if not any(not validate(alt, v, where, mode) for alt in s["anyOf"]):
            errs.append("%s: matches none of the anyOf alternatives" % where)
    t = s.get("type")
    if t and not _type_ok(t, v):
        return errs + ["%s: %s is not of type %s" % (where, json.dumps(v)[:60], t)]
    if "enum" in s and v not in s["enum"]:
        errs.append("%s: %r not in %s" % (where, v, s["enum"]))
    if isinstance(v, str):
        if "minLength" in s and len(v) < s["minLength"]:
            errs.append("%s: shorter than %d" % (where, s["minLength"]))
        if "maxLength" in s and len(v) > s["maxLength"]:
            errs.append("%s: longer than %d" % (where, s["maxLength"]))
        if "pattern" in s and not re.search(s["pattern"], v):
            errs.append("%s: %r does not match %s" % (where, v, s["pattern"]))
        fmt = s.get("format")
        if fmt == "byte":
            try:
                base64.b64decode(v, validate=True)
            except ValueError:
                errs.append("%s: not base64" % where)
        elif fmt in ("ip", "ipv4"):
            try:
                a = ipaddress.ip_address(v)
                if fmt == "ipv4" and a.version != 4:
                    raise ValueError
            except ValueError:
                errs.append("%s: %r is not an %s address" % (where, v, fmt))
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if "minimum" in s and v < s["minimum"]:
            errs.append("%s: %s below minimum %s" % (where, v, s["minimum"]))
        if "maximum" in s and v > s["maximum"]:
            errs.append("%s: %s above maximum %s" % (where, v, s["maximum"]))
    if isinstance(v, list):
        if "minItems" in s and len(v) < s["minItems"]:
            errs.append("%s: fewer than %d items" % (where, s["minItems"]))
        if "maxItems" in s and len(v) > s["maxItems"]:
            errs.append("%s: more than %d items" % (where, s["maxItems"]))
        if s.get("uniqueItems") and len({json.dumps(x, sort_keys=True) for x in v}) != len(v):
            errs.append("%s: items not unique" % where)
        if "items" in s:
            for i, x in enumerate(v):
                errs += validate(s["items"], x, "%s[%d]" % (where, i), mode)
    if isinstance(v, dict):
        props = s.get("properties", {})
        for r in s.get("required", []):
            if r not in v:
                errs.append("%s: required property %r missing" % (where, r))
        for k, x in v.items():
            if k in props:
                ps = merge_all_of(props[k])
                if mode == "request" and ps.get("readOnly"):
                    errs.append("%s.%s: read-only property in a request" % (where, k))
                if mode == "response" and ps.get("writeOnly"):
                    errs.append("%s.%s: write-only property in a response" % (where, k))
                errs += validate(ps, x, "%s.%s" % (where, k), mode)
            elif s.get("additionalProperties") is False:
                errs.append("%s: property %r not allowed" % (where, k))
            elif isinstance(s.get("additionalProperties"), dict):
                errs += validate(s["additionalProperties"], x, "%s.%s" % (where, k), mode)
    return errs


# ---------------------------------------------------------------------------------------- the spec

class Spec:
    def __init__(self, path, api_paths):
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        index = {}
        for n, ln in enumerate(lines):
            if ln.startswith("  /") and ln.endswith(":") and not ln.startswith("   "):
                index[ln.strip()[:-1]] = n
        self.paths = {}
        for p in api_paths:
            key = API_PREFIX + p
            if key not in index:
                raise YamlError("the spec has no path %s" % key)
            self.paths[p] = load_block(lines, index[key])[key]
        self._re = []
        for p in self.paths:
            rx = "^/(v4|v4beta)" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(p)) + "$"
            self._re.append((re.compile(rx), p))

    def match(self, method, path):
        """(operation, {param: value}) for METHOD /v4/..., or (None, None)."""
        for rx, p in self._re:
            m = rx.match(path)
            if m:
                op = self.paths[p].get(method.lower())
                if op is None:
                    return None, None
                params = {k: v for k, v in m.groupdict().items()}
                return dict(op, _path=p, _params=self.paths[p].get("parameters", [])), params
        return None, None

    def check_request(self, op, params, query, headers, body):
        """Errors of a request: path and query parameters, the X-Filter header, the JSON body.
        query: {name: value} (single values); headers: {lower-case name: value}; body: bytes or None."""
        errs = []
        plist = list(op.get("_params", [])) + list(op.get("parameters", []))
        known_q = set()
        for prm in plist:
            loc, name, sch = prm.get("in"), prm.get("name"), prm.get("schema", {})
            if loc == "path":
                if name == "apiVersion":
                    continue
                raw = params.get(name)
                v = raw
                if sch.get("type") == "integer":
                    if raw is None or not re.fullmatch(r"[0-9]+", raw):
                        errs.append("path parameter %s: %r is not an integer" % (name, raw))
                        continue
                    v = int(raw)
                errs += validate(sch, v, "path " + name)
            elif loc == "query":
                known_q.add(name)
                if name in query:
                    raw = query[name]
                    v = raw
                    if sch.get("type") == "integer":
                        if not re.fullmatch(r"-?[0-9]+", raw):
                            errs.append("query %s: %r is not an integer" % (name, raw))
                            continue
                        v = int(raw)
                    errs += validate(sch, v, "query " + name)
                elif prm.get("required"):
                    errs.append("query %s: required" % name)
            elif loc == "header":
                hv = headers.get(name.lower())
                if hv is None:
                    if prm.get("required"):
                        errs.append("header %s: required" % name)
                    continue
                if name == "X-Filter":
                    try:
                        fv = json.loads(hv)
                    except ValueError:
                        errs.append("header X-Filter: not JSON: %r" % hv[:80])
                        continue
                    errs += validate(sch, fv, "header X-Filter")
        for q in query:
            if q not in known_q:
                errs.append("query parameter %r is not in the spec for this operation" % q)
        rb = op.get("requestBody")
        if rb is None:
            if body:
                errs.append("a body was sent to an operation that takes none")
            return errs
        if not body:
            if rb.get("required"):
                errs.append("the request body is required")
            return errs
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        content = rb.get("content", {})
        if ctype not in content:
            return errs + ["Content-Type %r: the operation takes %s" % (ctype, sorted(content))]
        try:
            v = json.loads(body)
        except ValueError as e:
            return errs + ["the body is not JSON: %s" % e]
        return errs + validate(content[ctype].get("schema", {}), v, "body", "request")

    def check_response(self, op, status, value):
        resp = op.get("responses", {})
        r = resp.get(str(status)) or resp.get("default")
        if r is None:
            return ["status %d is not among the operation's responses %s" % (status, sorted(resp))]
        sch = r.get("content", {}).get("application/json", {}).get("schema")
        if sch is None:
            return []
        return validate(sch, value, "response", "response")


# ---------------------------------------------------------------------------------------- self-check

def _selfcheck(spec_path):
    """Compare load_block with PyYAML on the blocks the mock uses (only when PyYAML is installed)."""
    try:
        import yaml
    except ImportError:
        print("PyYAML not installed: nothing to compare with")
        return 0
    with open(spec_path, encoding="utf-8") as f:
        text = f.read()
    lines = text.split("\n")
    bad = 0
    for n, ln in enumerate(lines):
        if ln.startswith(("  /{apiVersion}/linode/instances", "  /{apiVersion}/domains",
                          "  /{apiVersion}/networking/ips")):
            key = ln.strip()[:-1]
            mine = load_block(lines, n)
            end = n + 1
            while end < len(lines) and (lines[end].strip() == "" or _indent(lines[end]) > 2):
                end += 1
            ref = yaml.safe_load("\n".join(lines[n:end]))
            if json.dumps(mine, sort_keys=True, default=str) != json.dumps(ref, sort_keys=True, default=str):
                bad += 1
                print("DIFFERS:", key)
            else:
                print("same:", key)
    return bad


if __name__ == "__main__":
    default = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "linode-openapi-subset.yaml")
    sys.exit(1 if _selfcheck(sys.argv[1] if len(sys.argv) > 1 else default) else 0)
