#!/usr/bin/env python3
"""A fake Linode API v4 for linode-scaler's tests (python3 standard library only).

    mock = LinodeMock(workdir, token, server_port)      # then mock.start() ... mock.stop()
    python3 tests/linode_mock.py --token T --port P --server-port S   # standalone, for trying by hand

It serves, on loopback, the endpoints the scaler uses, following the official spec
(v4.189.0: the subset it uses, tests/data/linode-openapi-subset.yaml) and its intro (auth, errors, pagination, filtering,
rate limits):

  GET    /v4/linode/instances                   pages (page, page_size 25..500; a small default
                                                page size here so that paging is exercised), X-Filter
  POST   /v4/linode/instances                   type and region required, root_pass with an image;
                                                known types/regions/images; unique labels
  GET    /v4/linode/instances/{id}              status provisioning -> booting -> running, one step per
  PUT    /v4/linode/instances/{id}              poll that saw it and at least `status_step` seconds
  DELETE /v4/linode/instances/{id}
  GET    /v4/linode/instances/{id}/ips          ipv4.private / ipv4.public
  GET    /v4/linode/instances/{id}/stats        400 "Stats are unavailable at this time." until
                                                `stats_delay` s after running, then 5-minute [ms, %]
                                                points (100% = one core) back to creation (24 h at most)
  GET    /v4/domains, GET|POST /v4/domains/{id}/records, PUT /v4/domains/{id}/records/{rid}

Every request is matched to its operation in the spec and checked (path and query parameters,
X-Filter, JSON body: required fields, types, patterns, read-only fields...): a request the spec
refuses gets 400 and is recorded in `violations`. Every answer the mock gives is checked against the
operation's response schema too (`mock_bugs`). Without `Authorization: Bearer TOKEN`: 401.
Rate limits as documented: create 10 per 30 s, stats 50 per minute (429 + Retry-After).
Injected faults: `fault(method, path_regex, status, times, retry_after, after)` answers the next
matching requests with that status (after=True: the request takes effect first, as a 500 after a
create that did happen).

An instance is a real backend: creating one starts `tests/backend.py --host 127.0.0.N --port
server_port --name LABEL` (Linux routes all of 127.0.0.0/8 to lo), and 127.0.0.N is its private IPv4
(the public one is a documentation address, 203.0.113.N, never contacted). Deleting it stops that
process (by PID).
"""
import argparse
import base64
import collections
import datetime
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import parse_qsl, urlsplit

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import openapi_check as oc  # noqa: E402

# the operations the scaler uses, cut from the full spec by tests/linode_spec_cut.py; LINODE_SPEC may name
# the full openapi.yaml instead
SPEC_PATH = os.environ.get("LINODE_SPEC", os.path.join(HERE, "data", "linode-openapi-subset.yaml"))
API_PATHS = ["/linode/instances", "/linode/instances/{linodeId}", "/linode/instances/{linodeId}/ips",
             "/linode/instances/{linodeId}/stats", "/domains", "/domains/{domainId}/records",
             "/domains/{domainId}/records/{recordId}"]
BACKEND = os.path.join(HERE, "backend.py")

TYPES = {"g6-nanode-1": (1, 1024, 25600), "g6-standard-1": (1, 2048, 51200), "g6-standard-2": (2, 4096, 81920),
         "g6-standard-4": (4, 8192, 163840), "g6-dedicated-2": (2, 4096, 81920)}
REGIONS = {"us-east", "us-ord", "eu-central", "de-fra-2", "ap-south", "nl-ams"}
IMAGES = {"linode/debian12", "linode/debian11", "linode/ubuntu24.04"}
STATUSES = ["provisioning", "booting", "running"]
NO_STATS = "Stats are unavailable at this time."

_SPEC = None
_SPEC_LOCK = threading.Lock()


def spec():
    global _SPEC
    with _SPEC_LOCK:
        if _SPEC is None:
            _SPEC = oc.Spec(SPEC_PATH, API_PATHS)
        return _SPEC


def api_time(t):
    return datetime.datetime.fromtimestamp(int(t), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def filterable(schema):
    """Names of the properties of an item schema marked __Filterable__ in the spec."""
    out = set()
    for k, v in oc.merge_all_of(schema).get("properties", {}).items():
        if "__Filterable__" in str(v.get("description", "")) or v.get("x-linode-filterable"):
            out.add(k)
    return out


class ApiError(Exception):
    def __init__(self, status, errors, headers=None):
        super().__init__(status)
        self.status, self.errors, self.headers = status, errors, headers or {}


def err(reason, field=None):
    e = {"reason": reason}
    if field:
        e["field"] = field
    return e


def match_filter(obj, f, allowed):
    """X-Filter semantics of the API intro: keys and'ed; +and/+or; operators on values."""
    for k, want in f.items():
        if k == "+and":
            if not all(match_filter(obj, x, allowed) for x in want):
                return False
            continue
        if k == "+or":
            if not any(match_filter(obj, x, allowed) for x in want):
                return False
            continue
        if k in ("+order_by", "+order"):
            continue
        if k not in allowed:
            raise ApiError(400, [err("Cannot filter on %s" % k, "X-Filter")])
        have = obj.get(k)
        if isinstance(want, dict):
            for op, x in want.items():
                vals = have if isinstance(have, list) else [have]
                if op == "+contains" and not any(isinstance(v, str) and x in v for v in vals):
                    return False
                if op == "+neq" and have == x:
                    return False
                if op in ("+gt", "+gte", "+lt", "+lte"):
                    if not isinstance(have, (int, float)):
                        return False
                    if not {"+gt": have > x, "+gte": have >= x, "+lt": have < x, "+lte": have <= x}[op]:
                        return False
            continue
        if isinstance(have, list):
            if want not in have:
                return False
        elif have != want:
            return False
    return True


class Instance:
    def __init__(self, mock, iid, label, typ, region, image, tags, n, created, status):
        self.mock = mock
        self.id = iid
        self.label = label
        self.type = typ
        self.region = region
        self.image = image
        self.tags = list(tags)
        self.n = n  # 127.0.0.N
        self.created = created
        self.updated = created
        self.status = status
        self.since = time.monotonic()  # of the current status
        self.seen = False  # a GET saw the current status
        self.running_at = time.time() if status == "running" else None
        self.cpu = [(0.0, 0.0)]  # (wall time, percent of the instance's cores) from that time on
        self.proc = None
        self.user_data = None

    @property
    def vcpus(self):
        return TYPES[self.type][0]

    @property
    def private_ip(self):
        return "127.0.0.%d" % self.n

    @property
    def public_ip(self):
        return "203.0.113.%d" % self.n

    def advance(self):
        """One status step when the current one was seen by a poll and lasted status_step."""
        if self.status in STATUSES[:-1] and self.seen and time.monotonic() - self.since >= self.mock.status_step:
            self.status = STATUSES[STATUSES.index(self.status) + 1]
            self.since = time.monotonic()
            self.seen = False
            if self.status == "running":
                self.running_at = time.time()

    def observe(self):
        self.seen = True

    def cpu_at(self, t):
        v = 0.0
        for since, pct in self.cpu:
            if since <= t:
                v = pct
        return v

    def json(self):
        vc, mem, disk = TYPES[self.type]
        return {
            "id": self.id, "label": self.label, "group": "", "status": self.status,
            "created": api_time(self.created), "updated": api_time(self.updated),
            "type": self.type, "region": self.region, "image": self.image,
            "ipv4": [self.public_ip, self.private_ip], "ipv6": "2600:3c03::f03c:91ff:fe24:%x/128" % self.n,
            "hypervisor": "kvm", "watchdog_enabled": True, "tags": list(self.tags),
            "specs": {"disk": disk, "memory": mem, "vcpus": vc, "transfer": 4000, "gpus": 0},
            "alerts": {"cpu": 90 * vc, "io": 10000, "network_in": 10, "network_out": 10, "transfer_quota": 80},
            # the real API writes last_successful: null here; the spec's schema says string, not
            # nullable, and the mock answers what the schema allows: the key is left out
            "backups": {"enabled": False, "available": False, "schedule": {"day": None, "window": None}},
            "has_user_data": self.user_data is not None, "host_uuid": "3a3ddd59d9a78bb8de041391075df44de62bfec8",
            "lke_cluster_id": None, "placement_group": None, "capabilities": [],
        }

    def ips(self):
        def addr(a, public, prefix, mask, gw, rdns):
            # private addresses have gateway and rdns null in the real API; the spec's schema says
            # string (not nullable) there, so they are left out rather than sent as null
            d = {"address": a, "subnet_mask": mask, "prefix": prefix, "type": "ipv4", "public": public,
                 "linode_id": self.id, "region": self.region}
            if gw:
                d["gateway"] = gw
            if rdns:
                d["rdns"] = rdns
            return d
        return {"ipv4": {"public": [addr(self.public_ip, True, 24, "255.255.255.0", "203.0.113.1",
                                         "li%d.members.linode.com" % self.id)],
                         "private": [addr(self.private_ip, False, 17, "255.255.128.0", None, None)],
                         "shared": [], "reserved": []}}

    def stats(self):
        now = time.time()
        if self.running_at is None or now - self.running_at < self.mock.stats_delay:
            raise ApiError(400, [err(NO_STATS)])
        points, k = [], 0
        while k < 288:
            t = now - k * 300
            if k and t < self.created + 300:
                break
            points.append((t, self.cpu_at(t)))
            k += 1
        points.reverse()
        cpu = [[int(t * 1000), round(p * self.vcpus, 2)] for t, p in points]
        zero = [[int(t * 1000), 0] for t, _ in points]
        net = [[int(t * 1000), 1234.5] for t, _ in points]
        return {"cpu": cpu, "io": {"io": zero, "swap": zero},
                "netv4": {"in": net, "out": net, "private_in": zero, "private_out": zero},
                "netv6": {"in": zero, "out": zero, "private_in": zero, "private_out": zero},
                "title": "linode.com - %s (linode%d) - day (5 min avg)" % (self.label, self.id)}


class LinodeMock:
    def __init__(self, workdir, token, server_port, page_size=2, status_step=0.4, stats_delay=1.0,
                 first_host=101, limits=True):
        self.workdir, self.token, self.server_port = workdir, token, server_port
        self.page_size, self.status_step, self.stats_delay = page_size, status_step, stats_delay
        self.limits = limits
        self.lock = threading.RLock()
        self.instances = collections.OrderedDict()
        self.deleted = []  # (time, id, label)
        self.next_id = 41230001
        self.next_host = first_host
        self.requests = []  # dicts: t, method, path, query, headers, body, status
        self.violations = []
        self.mock_bugs = []
        self.faults = []
        self.rate = collections.defaultdict(collections.deque)
        self.domains = {}
        self.records = {}
        self.srv = None
        self.thread = None
        s = spec()
        lst = s.paths["/linode/instances"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        self.inst_filterable = filterable(lst["properties"]["data"]["items"]) | {"id"}
        dl = s.paths["/domains"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        self.domain_filterable = filterable(dl["properties"]["data"]["items"])
        rl = s.paths["/domains/{domainId}/records"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        self.record_filterable = filterable(rl["properties"]["data"]["items"])

    # ------------------------------------------------------------------ control (from the test)

    @property
    def url(self):
        return "http://127.0.0.1:%d/v4" % self.srv.server_address[1]

    def start(self):
        mock = self

        class Handler(MockHandler):
            pass
        Handler.mock = mock
        self.srv = QuietServer(("127.0.0.1", 0), Handler)
        self.srv.daemon_threads = True
        self.thread = threading.Thread(target=self.srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        if self.srv:
            self.srv.shutdown()
            self.srv.server_close()
            self.srv = None
        with self.lock:
            insts = list(self.instances.values())
        for i in insts:
            self._stop_backend(i)

    def add_instance(self, label, tags, typ="g6-standard-2", status="running", age=3600, cpu=50.0):
        """An instance that exists already (made before the test), with a backend when running."""
        with self.lock:
            inst = self._new(label, typ, "us-east", "linode/debian12", tags, time.time() - age, status)
            inst.cpu = [(0.0, cpu)]
            if status == "running":
                inst.running_at = inst.created + 60
        self._start_backend(inst)
        return inst

    def set_cpu(self, pct, ids=None, history=False):
        """CPU from now on (percent of the instance's cores); history=True: for all past points too."""
        with self.lock:
            for i in self.instances.values():
                if ids is None or i.id in ids:
                    if history:
                        i.cpu = [(0.0, pct)]
                    else:
                        i.cpu.append((time.time(), pct))

    def fault(self, method, path_re, status, times=1, retry_after=None, after=False):
        with self.lock:
            self.faults.append({"method": method, "rx": re.compile(path_re), "status": status, "times": times,
                                "retry_after": retry_after, "after": after})

    def add_domain(self, domain, records):
        with self.lock:
            did = 1000 + len(self.domains) + 1
            self.domains[did] = {"id": did, "domain": domain, "type": "master", "status": "active",
                                 "soa_email": "admin@" + domain, "description": "lb front", "tags": [],
                                 "group": "web", "retry_sec": 0, "master_ips": [], "axfr_ips": [],
                                 "expire_sec": 0, "refresh_sec": 0, "ttl_sec": 0}
            for name, typ, target in records:
                rid = 5000 + len(self.records) + 1
                self.records[rid] = {"id": rid, "_domain": did, "type": typ, "name": name, "target": target,
                                     "priority": 0, "weight": 0, "port": 0, "service": None, "protocol": None,
                                     "ttl_sec": 0, "tag": None, "created": api_time(time.time() - 86400),
                                     "updated": api_time(time.time() - 86400)}
            return did

    def calls(self, method=None, path_re=None):
        with self.lock:
            return [r for r in self.requests if (method is None or r["method"] == method) and
                    (path_re is None or re.search(path_re, r["path"]))]

    def live(self):
        with self.lock:
            return list(self.instances.values())

    # ------------------------------------------------------------------ internals

    def _new(self, label, typ, region, image, tags, created, status):
        n = self._free_host()
        iid = self.next_id
        self.next_id += 1
        inst = Instance(self, iid, label, typ, region, image, tags, n, created, status)
        self.instances[iid] = inst
        return inst

    def _free_host(self):
        while self.next_host < 250:
            n = self.next_host
            self.next_host += 1
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.%d" % n, self.server_port))
                return n
            except OSError:
                continue
            finally:
                s.close()
        raise ApiError(500, [err("mock: no free 127.0.0.N address")])

    def _start_backend(self, inst):
        log = open(os.path.join(self.workdir, "instance-%s.stderr" % inst.label), "ab")
        inst.proc = subprocess.Popen([sys.executable, BACKEND, "--host", inst.private_ip, "--port",
                                      str(self.server_port), "--name", inst.label],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
        log.close()
        inst.ready = threading.Thread(target=self._wait_ready, args=(inst,), daemon=True)
        inst.ready.start()

    @staticmethod
    def _wait_ready(inst):
        try:
            inst.proc.stdout.readline()
        except (OSError, ValueError):
            pass

    def _stop_backend(self, inst):
        p, inst.proc = inst.proc, None
        if p is None:
            return
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(3)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(3)
        try:
            p.stdout.close()
        except OSError:
            pass

    def _limited(self, key, n, window):
        if not self.limits:
            return
        q = self.rate[key]
        now = time.monotonic()
        while q and now - q[0] >= window:
            q.popleft()
        if len(q) >= n:
            wait = max(1, int(window - (now - q[0]) + 0.999))
            raise ApiError(429, [err("Too Many Requests")], {"Retry-After": str(wait)})
        q.append(now)

    def _inst(self, params):
        iid = int(params["linodeId"])
        inst = self.instances.get(iid)
        if inst is None:
            raise ApiError(404, [err("Not found")])
        return inst

    def _page(self, items, query):
        size = int(query.get("page_size", self.page_size))
        pages = max(1, (len(items) + size - 1) // size)
        page = min(int(query.get("page", "1")), pages)
        return {"data": items[(page - 1) * size:page * size], "page": page, "pages": pages, "results": len(items)}

    def handle(self, method, path, query, headers, body):
        """(status, JSON value, extra headers) of one request."""
        op, params = spec().match(method, path)
        if op is None:
            known = any(rx.match(path) for rx, _ in spec()._re)
            self.violations.append("%s %s: %s" % (method, path, "method not in the spec" if known else
                                                  "path not in the spec (for the endpoints the mock serves)"))
            return (405 if known else 404), {"errors": [err("Method Not Allowed" if known else "Not found")]}, {}, None
        auth = headers.get("authorization", "")
        if auth != "Bearer " + self.token:
            return 401, {"errors": [err("Invalid Token")]}, {}, op
        problems = spec().check_request(op, params, query, headers, body)
        if problems:
            self.violations.append("%s %s: %s" % (method, path, "; ".join(problems)))
            return 400, {"errors": [err(p) for p in problems[:10]]}, {}, op
        fault = None
        for f in self.faults:
            if f["times"] > 0 and f["method"] == method and f["rx"].search(path):
                f["times"] -= 1
                fault = f
                break
        if fault and not fault["after"]:
            return self._fault_answer(fault) + (op,)
        try:
            status, value, hdrs = self._route(op["_path"], method, params, query, headers, body)
        except ApiError as e:
            status, value, hdrs = e.status, {"errors": e.errors}, e.headers
        if fault:
            return self._fault_answer(fault) + (op,)
        return status, value, hdrs, op

    @staticmethod
    def _fault_answer(f):
        h = {}
        if f["retry_after"] is not None:
            h["Retry-After"] = str(f["retry_after"])
        reason = "Too Many Requests" if f["status"] == 429 else "Please open a Support Ticket (injected %d)" % f["status"]
        return f["status"], {"errors": [err(reason)]}, h

    def _route(self, p, method, params, query, headers, body):
        req = json.loads(body) if body else None
        if p == "/linode/instances" and method == "GET":
            self._limited("list", 200, 60)
            f = json.loads(headers["x-filter"]) if "x-filter" in headers else {}
            out = []
            for inst in self.instances.values():
                inst.advance()
                j = inst.json()
                if match_filter(j, f, self.inst_filterable):
                    inst.observe()
                    out.append(j)
            return 200, self._page(out, query), {}
        if p == "/linode/instances" and method == "POST":
            self._limited("create", 10, 30)
            return 200, self._create(req), {}
        if p == "/linode/instances/{linodeId}":
            inst = self._inst(params)
            if method == "GET":
                inst.advance()
                inst.observe()
                return 200, inst.json(), {}
            if method == "PUT":
                if "label" in req:
                    self._check_label(req["label"], inst.id)
                    inst.label = req["label"]
                if "tags" in req:
                    inst.tags = list(req["tags"])
                inst.updated = time.time()
                return 200, inst.json(), {}
            if method == "DELETE":
                del self.instances[inst.id]
                self.deleted.append((time.time(), inst.id, inst.label))
                threading.Thread(target=self._stop_backend, args=(inst,), daemon=True).start()
                return 200, {}, {}
        if p == "/linode/instances/{linodeId}/ips":
            return 200, self._inst(params).ips(), {}
        if p == "/linode/instances/{linodeId}/stats":
            inst = self._inst(params)
            self._limited("stats", 50, 60)
            return 200, inst.stats(), {}
        if p == "/domains":
            f = json.loads(headers["x-filter"]) if "x-filter" in headers else {}
            out = [d for d in self.domains.values() if match_filter(d, f, self.domain_filterable)]
            return 200, self._page(out, query), {}
        if p.startswith("/domains/{domainId}/records"):
            did = int(params["domainId"])
            if did not in self.domains:
                raise ApiError(404, [err("Not found")])
            if p == "/domains/{domainId}/records" and method == "GET":
                f = json.loads(headers["x-filter"]) if "x-filter" in headers else {}
                out = [{k: v for k, v in r.items() if not k.startswith("_")} for r in self.records.values()
                       if r["_domain"] == did]
                out = [r for r in out if match_filter(r, f, self.record_filterable)]
                return 200, self._page(out, query), {}
            if p == "/domains/{domainId}/records" and method == "POST":
                if req.get("type") in ("A", "AAAA") and not req.get("target"):
                    raise ApiError(400, [err("target is required", "target")])
                rid = 5000 + len(self.records) + 1
                rec = {"id": rid, "_domain": did, "type": req["type"], "name": req.get("name", ""),
                       "target": req.get("target", ""), "priority": 0, "weight": 0, "port": 0, "service": None,
                       "protocol": None, "ttl_sec": 0, "tag": None, "created": api_time(time.time()),
                       "updated": api_time(time.time())}
                self.records[rid] = rec
                return 200, {k: v for k, v in rec.items() if not k.startswith("_")}, {}
            rid = int(params["recordId"])
            rec = self.records.get(rid)
            if rec is None or rec["_domain"] != did:
                raise ApiError(404, [err("Not found")])
            if method == "PUT":
                for k in ("name", "target", "ttl_sec", "priority", "weight", "port"):
                    if k in req:
                        rec[k] = req[k]
                rec["updated"] = api_time(time.time())
            return 200, {k: v for k, v in rec.items() if not k.startswith("_")}, {}
        raise ApiError(404, [err("Not found")])

    def _check_label(self, label, own_id=None):
        for i in self.instances.values():
            if i.label == label and i.id != own_id:
                raise ApiError(400, [err("Label must be unique among your linodes", "label")])

    def _create(self, req):
        errors = []
        typ, region, image = req.get("type"), req.get("region"), req.get("image")
        if typ not in TYPES:
            errors.append(err("A valid plan type by that ID was not found", "type"))
        if region not in REGIONS:
            errors.append(err("region is not valid", "region"))
        if image is not None and image not in IMAGES:
            errors.append(err("image is not valid", "image"))
        pw = req.get("root_pass")
        if image is not None and not pw:
            errors.append(err("root_pass is required", "root_pass"))
        if pw is not None and (len(pw) < 11 or len({c.isupper() for c in pw} | {c.islower() for c in pw}) < 2 or
                               not any(c.isdigit() for c in pw) or not any(not c.isalnum() for c in pw)):
            errors.append(err("Password does not meet strength requirement", "root_pass"))
        for k in req.get("authorized_keys", []):
            if not re.match(r"^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp\d+|sk-) \S+", k):
                errors.append(err("Invalid SSH key", "authorized_keys"))
        ud = req.get("metadata", {}).get("user_data")
        if ud is not None:
            try:
                if len(base64.b64decode(ud, validate=True)) > 65535:
                    errors.append(err("user_data must be 65535 bytes or less", "metadata.user_data"))
            except ValueError:
                errors.append(err("user_data must be base64", "metadata.user_data"))
        label = req.get("label")
        if label is not None:
            try:
                self._check_label(label)
            except ApiError as e:
                errors += e.errors
        if errors:
            raise ApiError(400, errors)
        if label is None:
            label = "linode%d" % self.next_id
        inst = self._new(label, typ, region, image, req.get("tags", []), time.time(), "provisioning")
        inst.user_data = ud
        inst.cpu = [(0.0, 0.0)]
        self._start_backend(inst)
        return inst.json()


class QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        """A client that went away (a scaler killed mid-call) is no error worth a traceback."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class MockHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    mock = None

    def log_message(self, *a):
        pass

    def _serve(self):
        m = self.mock
        u = urlsplit(self.path)
        query = dict(parse_qsl(u.query, keep_blank_values=True))
        headers = {k.lower(): v for k, v in self.headers.items()}
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        rec = {"t": time.time(), "method": self.command, "path": u.path, "query": query,
               "filter": headers.get("x-filter"), "auth": headers.get("authorization", "")[:7],
               "body": None, "raw": body.decode("utf-8", "replace")}
        try:
            rec["body"] = json.loads(body) if body else None
        except ValueError:
            pass
        with m.lock:
            try:
                status, value, hdrs, op = m.handle(self.command, u.path, query, headers, body)
            except Exception as e:  # a mock bug: answered 500 and recorded
                m.mock_bugs.append("%s %s: %s: %s" % (self.command, u.path, type(e).__name__, e))
                status, value, hdrs, op = 500, {"errors": [err("mock error")]}, {}, None
            if op is not None and status != 401:
                probs = spec().check_response(op, status, value)
                if probs:
                    m.mock_bugs.append("%s %s -> %d: %s" % (self.command, u.path, status, "; ".join(probs[:5])))
            rec["status"] = status
            m.requests.append(rec)
        out = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.send_header("X-Spec-Version", "4.189.0")
        self.send_header("X-RateLimit-Limit", "800")
        for k, v in hdrs.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = _serve


def main():
    ap = argparse.ArgumentParser(description="fake Linode API v4 on loopback")
    ap.add_argument("--token", required=True)
    ap.add_argument("--server-port", type=int, required=True, help="port of the instances' backends")
    ap.add_argument("--dir", default=".")
    ap.add_argument("--tag", default="lb-pool-web", help="tag of one pre-made running instance")
    args = ap.parse_args()
    m = LinodeMock(args.dir, args.token, args.server_port).start()
    m.add_instance(args.tag + "-1", [args.tag])
    print("mock Linode API at %s (Ctrl-C stops it)" % m.url, flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        m.stop()
        print("violations: %s\nmock bugs: %s" % (m.violations, m.mock_bugs))


if __name__ == "__main__":
    main()
