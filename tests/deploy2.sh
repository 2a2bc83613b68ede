#!/usr/bin/env bash
# tests/deploy2.sh: checks of deploy/'s HA, monitoring and provisioning files (tests/deploy.sh has
# the unit, firewall, sshd, sysctl and alert webhook; tests/ha.py the failover itself).
# One "PASS name" or "FAIL name: reason" line per check; exit status 1 when any check failed.
# Installs and applies nothing: files are rendered into a temporary directory and checked there.
#
# Debian packages needed (tests/deps.sh):
#   keepalived prometheus python3 python3-yaml curl iproute2 util-linux systemd shellcheck
#   nftables apt strace
# and for `cloud-init schema`: python3-jsonschema python3-jinja2 python3-configobj
#   python3-jsonpatch python3-requests python3-netifaces, plus cloud-init's code: the command on
#   PATH, or the package unpacked (not installed: installing it enables its boot services) in
#   $CLOUD_INIT_ROOT (default /opt/lb-test/cloud-init):
#     apt-get download cloud-init && dpkg -x cloud-init_*.deb /opt/lb-test/cloud-init
# Root is needed for the keepalived config test in a private network namespace.
set -u
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
LB_BIN=${LB_BIN:-./lb}
tmp=$(mktemp -d /tmp/lb-deploy2-test.XXXXXX)
chmod 755 "$tmp"
pids=()
cleanup() {
	local p
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
	rm -rf "$tmp"
}
trap cleanup EXIT
fails=0
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; fails=$((fails + 1)); }
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
oneline() { tr -s '\n\t' '  ' | cut -c1-"${1:-300}"; }
is_root() { [ "$(id -u)" = 0 ]; }
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Debian's python3 has the Debian python3-* modules (yaml, jsonschema); another python3 first on
# PATH may not
PY=/usr/bin/python3
[ -x $PY ] || PY=$(command -v python3)
has_yaml() { "$PY" -c 'import yaml' 2>/dev/null; }

# ---------------------------------------------------------------------------------------------
# keepalived template, render.sh, config test
# ---------------------------------------------------------------------------------------------
render() { # OUT PRIORITY SELF PEER [extra NAME=value...]
	local out=$1 prio=$2 self=$3 peer=$4
	shift 4
	deploy/render.sh deploy/keepalived.conf.in "$out" ROUTER_ID=lbtest PRIORITY="$prio" IFACE=eth0 \
		SELF_IP="$self" PEER_IP="$peer" VRID=51 VIP=203.0.113.10/32 VIP_DEV=eth0 PREEMPT_DELAY=10 \
		NOTIFY="$ROOT/deploy/keepalived-notify.sh" "$@"
}
if ! render "$tmp/ka-primary.conf" 150 192.168.140.11 192.168.140.12 2>"$tmp/render.err"; then
	fail keepalived/render "$(oneline <"$tmp/render.err")"
else
	out=""
	grep -q '^	priority 150$' "$tmp/ka-primary.conf" || out="priority not filled in; "
	grep -q '^		192.168.140.12$' "$tmp/ka-primary.conf" || out="${out}unicast peer not filled in; "
	grep -q '@[A-Z_]*@' "$tmp/ka-primary.conf" && out="${out}placeholders left; "
	# refusals: a missing value, an unknown name, a value with a quote
	deploy/render.sh deploy/keepalived.conf.in - ROUTER_ID=x >/dev/null 2>&1 && out="${out}missing values accepted; "
	render - 150 a b FOO=1 >/dev/null 2>&1 && out="${out}unknown name accepted; "
	render - '150"' a b >/dev/null 2>&1 && out="${out}quote accepted; "
	if [ -z "$out" ]; then pass keepalived/render; else fail keepalived/render "$out"; fi
fi

# keepalived --config-test in a namespace with an eth0 (the template names it).  keepalived 2.2.7's
# config test kills itself with SIGTERM whenever it checks a script run as a user other than root
# (the vrrp_script's `user nobody`), whatever the file says: the tested copy runs it as root.
# tests/ha.py runs the real file and checks that keepalived's log has no complaint.
ka_check() { # FILE -> output in $ka_out, status returned
	local f=$1
	sed 's/^\([[:space:]]*user\) nobody$/\1 root/' "$f" >"$f.test"
	# shellcheck disable=SC2016 # $1 belongs to the inner sh
	ka_out=$(unshare --net sh -c 'ip link add eth0 type veth peer name eth1 && ip link set eth0 up &&
		ip addr add 192.168.140.11/24 dev eth0 && keepalived --config-test="$1.log" -f "$1"' sh "$f.test" 2>&1)
	local rc=$?
	ka_out="$ka_out$(cat "$f.test.log" 2>/dev/null)"
	[ $rc -eq 0 ] && [ -z "$ka_out" ]
}
if ! have keepalived; then
	fail keepalived/config-test "keepalived not found (Debian package keepalived)"
elif ! is_root; then
	fail keepalived/config-test "needs root (a network namespace with an eth0)"
elif [ ! -s "$tmp/ka-primary.conf" ]; then
	fail keepalived/config-test "nothing rendered"
else
	render "$tmp/ka-secondary.conf" 100 192.168.140.12 192.168.140.11 2>/dev/null
	out=""
	for f in ka-primary ka-secondary; do
		ka_check "$tmp/$f.conf" || out="$out$f: $(echo "$ka_out" | oneline 200); "
	done
	# negative control: the test must notice a broken file
	sed 's/^\tadvert_int .*/\tadvert_int_typo 1/' "$tmp/ka-primary.conf" >"$tmp/ka-broken.conf"
	ka_check "$tmp/ka-broken.conf" && out="${out}a misspelt keyword passed; "
	if [ -z "$out" ]; then pass "keepalived/config-test (primary and secondary; a misspelt keyword is caught)"
	else fail keepalived/config-test "$out"; fi
fi

# the drop-in on Debian's keepalived.service
if ! have systemd-analyze; then
	fail keepalived/systemd-dropin "systemd-analyze not found (Debian package systemd)"
elif [ ! -e /lib/systemd/system/keepalived.service ]; then
	fail keepalived/systemd-dropin "/lib/systemd/system/keepalived.service missing (Debian package keepalived)"
else
	mkdir -p "$tmp/unit/keepalived.service.d"
	cp /lib/systemd/system/keepalived.service "$tmp/unit/"
	cp deploy/keepalived.service.d/lb.conf "$tmp/unit/keepalived.service.d/"
	out=$(systemd-analyze verify "$tmp/unit/keepalived.service" 2>&1)
	restart=$(systemd-analyze verify "$tmp/unit/keepalived.service" >/dev/null 2>&1 &&
		grep -c '^Restart=on-failure$' "$tmp/unit/keepalived.service.d/lb.conf")
	if [ -z "$out" ] && [ "$restart" = 1 ]; then pass keepalived/systemd-dropin
	else fail keepalived/systemd-dropin "$(echo "$out" | oneline) (Restart=on-failure lines: $restart)"; fi
fi

# ---------------------------------------------------------------------------------------------
# keepalived-notify.sh against a fake Linode API on loopback
# ---------------------------------------------------------------------------------------------
notify=deploy/keepalived-notify.sh
cat >"$tmp/api.py" <<'EOF'
import http.server, json, sys
owner = {"203.0.113.10": 111, "203.0.113.11": 123}   # 203.0.113.11 belongs to "this" Linode (123)
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def reply(self, code, obj):
        b = json.dumps(obj).encode()
        self.send_response(code); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b))); self.end_headers(); self.wfile.write(b)
    def record(self, body):
        with open(sys.argv[2], "a") as f:
            f.write(json.dumps({"method": self.command, "path": self.path, "auth": self.headers.get("Authorization"),
                                "ctype": self.headers.get("Content-Type"), "body": body}) + "\n")
    def do_GET(self):
        self.record(None)
        ip = self.path.rsplit("/", 1)[-1]
        if self.path.startswith("/v4/networking/ips/") and ip in owner:
            self.reply(200, {"address": ip, "linode_id": owner[ip], "type": "ipv4", "public": True})
        else:
            self.reply(404, {"errors": [{"reason": "Not found"}]})
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        self.record(body)
        if "fail" in self.headers.get("Authorization", ""):
            self.reply(400, {"errors": [{"field": "ips", "reason": "simulated refusal"}]})
        else:
            self.reply(200, {})
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
open(sys.argv[1] + ".tmp", "w").write(str(srv.server_address[1]))
import os; os.rename(sys.argv[1] + ".tmp", sys.argv[1])
srv.serve_forever()
EOF
python3 "$tmp/api.py" "$tmp/api.port" "$tmp/api.jsonl" &
pids+=($!)
for _ in $(seq 50); do [ -s "$tmp/api.port" ] && break; sleep 0.1; done
api_port=$(cat "$tmp/api.port" 2>/dev/null)
mkdir -p "$tmp/textfile"
notify_run() { # ENVLINES... ; then STATE: runs the script, sets rc; requests in $tmp/api.jsonl
	local state=$1
	shift
	printf '%s\n' "LB_HA_LOG=$tmp/notify.log" "LB_HA_TEXTFILE_DIR=$tmp/textfile" \
		"LINODE_API_URL=http://127.0.0.1:$api_port/v4" "$@" >"$tmp/ha.env"
	: >"$tmp/api.jsonl"
	env -i PATH="$PATH" bash "$notify" --env "$tmp/ha.env" INSTANCE LB "$state" 150 >"$tmp/notify.out" 2>&1
	rc=$?
}
requests() { # one line per request: METHOD PATH AUTH BODY
	python3 -c '
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    print(r["method"], r["path"], r["auth"], r["body"] or "-")' "$tmp/api.jsonl"
}
if [ -z "$api_port" ]; then
	fail notify/setup "fake API did not start"
else
	tok=0123456789abcdef
	notify_run MASTER "LINODE_API_TOKEN=$tok" LINODE_ID=123 LB_HA_FLOATING_IPS=203.0.113.10
	got=$(requests)
	want="GET /v4/networking/ips/203.0.113.10 Bearer $tok -
POST /v4/networking/ips/share Bearer $tok {\"linode_id\":123,\"ips\":[\"203.0.113.10\"]}"
	if [ $rc -eq 0 ] && [ "$got" = "$want" ] && grep -q 'INSTANCE LB is now MASTER' "$tmp/notify.log" &&
		grep -q 'shared 203.0.113.10 with Linode 123' "$tmp/notify.log"; then
		pass "notify/master-shares-ip (GET /networking/ips/{address}, then POST /networking/ips/share)"
	else fail notify/master-shares-ip "exit $rc, requests [$(echo "$got" | oneline)], log [$(tail -2 "$tmp/notify.log" | oneline)]"; fi

	# the token must not appear on any command line (curl reads it from stdin): every execve of
	# the script and its children, through strace
	if ! have strace; then
		fail notify/token-not-in-argv "strace not found (Debian package strace)"
	else
		: >"$tmp/api.jsonl"
		printf '%s\n' "LB_HA_LOG=$tmp/notify.log" "LB_HA_TEXTFILE_DIR=$tmp/textfile" "LINODE_API_URL=http://127.0.0.1:$api_port/v4" \
			"LINODE_API_TOKEN=$tok" LINODE_ID=123 LB_HA_FLOATING_IPS=203.0.113.10 >"$tmp/ha.env"
		env -i PATH="$PATH" strace -f -qq -s 4096 -e trace=execve -o "$tmp/strace.out" \
			bash "$notify" --env "$tmp/ha.env" INSTANCE LB MASTER 150 >/dev/null 2>&1
		execs=$(grep -c 'execve(' "$tmp/strace.out" 2>/dev/null)
		if grep -q "$tok" "$tmp/strace.out"; then fail notify/token-not-in-argv "the token is on a command line: $(grep "$tok" "$tmp/strace.out" | head -1 | cut -c1-200)"
		elif ! grep -q 'execve("[^"]*curl"' "$tmp/strace.out" || [ "$(grep -c POST "$tmp/api.jsonl")" != 1 ]; then
			fail notify/token-not-in-argv "no curl call seen ($execs execve calls)"
		else pass "notify/token-not-in-argv ($execs execve calls, none with the token)"; fi
	fi

	# an address this Linode owns is not shared with itself; the other one is
	notify_run MASTER "LINODE_API_TOKEN=$tok" LINODE_ID=123 "LB_HA_FLOATING_IPS=203.0.113.11,203.0.113.10"
	got=$(requests | grep POST)
	if [ $rc -eq 0 ] && [ "$got" = "POST /v4/networking/ips/share Bearer $tok {\"linode_id\":123,\"ips\":[\"203.0.113.10\"]}" ]; then
		pass notify/owned-address-not-shared
	else fail notify/owned-address-not-shared "exit $rc, [$(echo "$got" | oneline)]"; fi

	notify_run MASTER "LINODE_API_TOKEN=$tok" LINODE_ID=123 LB_HA_FLOATING_IPS=203.0.113.10 LB_HA_LINODE_MODE=assign LINODE_REGION=us-ord
	got=$(requests)
	if [ $rc -eq 0 ] && [ "$got" = "POST /v4/networking/ips/assign Bearer $tok {\"region\":\"us-ord\",\"assignments\":[{\"address\":\"203.0.113.10\",\"linode_id\":123}]}" ]; then
		pass notify/assign-mode
	else fail notify/assign-mode "exit $rc, [$(echo "$got" | oneline)]"; fi

	notify_run BACKUP "LINODE_API_TOKEN=$tok" LINODE_ID=123 LB_HA_FLOATING_IPS=203.0.113.10
	if [ $rc -eq 0 ] && [ ! -s "$tmp/api.jsonl" ] && grep -q '^lb_keepalived_master{vrrp_instance="LB"} 0$' "$tmp/textfile/lb_keepalived.prom"; then
		pass "notify/backup (no API call, lb_keepalived_master 0)"
	else fail notify/backup "exit $rc, requests [$(requests | oneline)], textfile [$(oneline <"$tmp/textfile/lb_keepalived.prom")]"; fi

	notify_run MASTER "LINODE_API_TOKEN=${tok}fail" LINODE_ID=123 LB_HA_FLOATING_IPS=203.0.113.10
	if [ $rc -eq 1 ] && grep -q 'FAILED.*HTTP 400.*simulated refusal' "$tmp/notify.log"; then pass notify/api-error-reported
	else fail notify/api-error-reported "exit $rc, log [$(tail -1 "$tmp/notify.log" | oneline)]"; fi

	notify_run MASTER LINODE_ID=123
	if [ $rc -eq 0 ] && [ ! -s "$tmp/api.jsonl" ] && grep -q '^lb_keepalived_master{vrrp_instance="LB"} 1$' "$tmp/textfile/lb_keepalived.prom"; then
		pass "notify/not-configured (MASTER without a token: logged, no API call, lb_keepalived_master 1)"
	else fail notify/not-configured "exit $rc, requests [$(requests | oneline)]"; fi

	if ! have promtool; then fail notify/textfile-metrics "promtool not found (Debian package prometheus)"
	elif out=$(promtool check metrics <"$tmp/textfile/lb_keepalived.prom" 2>&1); then pass notify/textfile-metrics
	else fail notify/textfile-metrics "$(echo "$out" | oneline)"; fi

	notify_run MASTER "LINODE_ID=12x" "LINODE_API_TOKEN=$tok" LB_HA_FLOATING_IPS=203.0.113.10
	rc1=$rc
	notify_run MASTER LINODE_ID=123 "LINODE_API_TOKEN=$tok" "LB_HA_FLOATING_IPS='203.0.113.10\"]'"
	rc2=$rc
	notify_run MASTER LINODE_ID=123 "LINODE_API_TOKEN=$tok" 'LB_HA_FLOATING_IPS="203.0.113.10'
	if [ $rc1 -eq 1 ] && [ $rc2 -eq 1 ] && [ $rc -eq 1 ] && [ ! -s "$tmp/api.jsonl" ]; then
		pass "notify/bad-settings-refused (a non-numeric LINODE_ID, a quote in an address, a broken env file)"
	else fail notify/bad-settings-refused "exit $rc1 / $rc2 / $rc, requests [$(requests | oneline)]"; fi
fi

# The request bodies against the Linode API spec (when the spec is at hand)
# (tests/data/ holds the part of it the notify script uses, cut by tests/linode_spec_cut.py)
spec=${LINODE_OPENAPI:-$ROOT/tests/data/linode-openapi-subset.yaml}
if [ ! -r "$spec" ]; then
	echo "SKIP notify/linode-spec: no Linode OpenAPI spec at $spec (set LINODE_OPENAPI)"
elif ! has_yaml; then
	fail notify/linode-spec "python3-yaml missing (Debian package python3-yaml)"
else
	out=$("$PY" - "$spec" <<'EOF' 2>&1
import json, sys, yaml
spec = yaml.load(open(sys.argv[1]), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
bodies = {
    "/{apiVersion}/networking/ips/share": {"linode_id": 123, "ips": ["203.0.113.10"]},
    "/{apiVersion}/networking/ips/assign": {"region": "us-ord", "assignments": [{"address": "203.0.113.10", "linode_id": 123}]},
}
types = {"integer": int, "string": str, "array": list, "object": dict}
def check(schema, value, where):
    bad = []
    t = schema.get("type")
    if t and not isinstance(value, types[t]):
        return ["%s: %r is not %s" % (where, value, t)]
    if t == "object":
        props = schema.get("properties", {})
        for k in schema.get("required", []):
            if k not in value: bad.append("%s: required %s missing" % (where, k))
        for k, v in value.items():
            if k not in props: bad.append("%s: %s not in the spec" % (where, k))
            else: bad += check(props[k], v, where + "." + k)
    if t == "array":
        for i, v in enumerate(value): bad += check(schema.get("items", {}), v, "%s[%d]" % (where, i))
    return bad
bad = []
for path, body in bodies.items():
    op = spec["paths"].get(path, {}).get("post")
    if not op:
        bad.append("POST %s not in the spec" % path); continue
    bad += check(op["requestBody"]["content"]["application/json"]["schema"], body, path)
if "get" not in spec["paths"].get("/{apiVersion}/networking/ips/{address}", {}):
    bad.append("GET /networking/ips/{address} not in the spec")
print("; ".join(bad))
EOF
)
	if [ -z "$out" ]; then pass "notify/linode-spec (share, assign and the owner lookup match $(basename "$spec"))"
	else fail notify/linode-spec "$(echo "$out" | oneline)"; fi
fi

# ---------------------------------------------------------------------------------------------
# Prometheus: config, rules, rule unit tests
# ---------------------------------------------------------------------------------------------
if ! have promtool; then
	fail prometheus/config "promtool not found (Debian package prometheus)"
else
	if out=$(cd deploy/prometheus && promtool check config prometheus.yml 2>&1); then pass prometheus/config
	else fail prometheus/config "$(echo "$out" | oneline)"; fi
	if out=$(promtool check rules deploy/prometheus/lb-alerts.yml 2>&1); then
		pass "prometheus/rules ($(echo "$out" | grep -o '[0-9]* rules found'))"
	else fail prometheus/rules "$(echo "$out" | oneline)"; fi
	if out=$(cd deploy/prometheus && promtool test rules lb-alerts.test.yml 2>&1); then
		pass "prometheus/rules-unit-tests (backend down, pool down, no usable server, error rate, latency, circuit, lb down, failed reload, lost log lines, cert expiry, HA master count)"
	else fail prometheus/rules-unit-tests "$(echo "$out" | grep -v '^Unit Testing' | oneline 600)"; fi
	# the alerts the unit tests must cover: removing a test is a failure too
	missing=""
	for a in LBBackendDown LBPoolDown LBNoUsableServer LBHighErrorRate LBHighLatencyP99 LBCircuitOpen LBDown LBReloadFailed LBLogLinesDropped LBCertExpiringSoon LBHAMasterCount; do
		grep -q "alertname: $a$" deploy/prometheus/lb-alerts.test.yml || missing="$missing $a"
	done
	if [ -z "$missing" ]; then pass prometheus/rules-tested; else fail prometheus/rules-tested "no unit test for:$missing"; fi
fi

# ---------------------------------------------------------------------------------------------
# a live lb's /metrics: every lb_* name in the rules, the dashboard and the Netdata job exists
# ---------------------------------------------------------------------------------------------
metrics_names=""
if [ ! -x "$LB_BIN" ]; then
	fail metrics/live "$LB_BIN is not built (make lb)"
elif ! have curl; then
	fail metrics/live "curl not found (Debian package curl)"
else
	lport=$(freeport)
	aport=$(freeport)
	bport=$(freeport)
	mkdir -p "$tmp/www" && echo ok >"$tmp/www/health"
	(cd "$tmp/www" && exec python3 -m http.server -b 127.0.0.1 "$bport" >/dev/null 2>&1) &
	pids+=($!)
	user_line=""
	is_root && user_line="user = nobody"
	cat >"$tmp/lb.ini" <<EOF
[global]
workers = 1
$user_line
[log]
access = off
error = $tmp/lb.err
[admin]
bind = 127.0.0.1:$aport
[listener web]
bind = 127.0.0.1:$lport
pool = app
[pool app]
server = a1 127.0.0.1:$bport
[pool canary]
server = c1 127.0.0.1:$bport
[route all]
split = app 90, canary 10
rate_limit = 1000/second
EOF
	"$LB_BIN" -c "$tmp/lb.ini" >"$tmp/lb.out" 2>&1 &
	lbpid=$!
	pids+=("$lbpid")
	for _ in $(seq 50); do curl -fs -m 1 "http://127.0.0.1:$aport/healthz" >/dev/null && break; sleep 0.1; done
	curl -s -m 2 "http://127.0.0.1:$lport/" >/dev/null
	curl -s -m 2 "http://127.0.0.1:$aport/metrics" >"$tmp/metrics.txt"
	kill -TERM "$lbpid" 2>/dev/null
	# metric names: families from # TYPE, histograms with their _bucket/_sum/_count series
	metrics_names=$(awk '$1 == "#" && $2 == "TYPE" { print $3; if ($4 == "histogram") { print $3 "_bucket"; print $3 "_sum"; print $3 "_count" } }' "$tmp/metrics.txt" | sort -u)
	n=$(echo "$metrics_names" | grep -c '^lb_')
	if [ "$n" -ge 20 ]; then pass "metrics/live ($n lb_* names from a running $LB_BIN)"
	else fail metrics/live "only $n lb_* names in /metrics: $(head -c 300 "$tmp/metrics.txt" | oneline) $(tail -3 "$tmp/lb.out" | oneline)"; fi
fi
# names_in FILE: lb_* identifiers used in a file
names_in() { grep -o 'lb_[a-z0-9_]*' "$1" | sort -u; }
unknown_names() { # FILE [allowed names...]: lb_* names of FILE that the live lb does not export
	local f=$1 n
	shift
	for n in $(names_in "$f"); do
		case " $* " in *" $n "*) continue ;; esac
		echo "$metrics_names" | grep -qx "$n" || echo "$n"
	done
}
if [ -n "$metrics_names" ]; then
	# not lb's: lb_keepalived_* come from keepalived-notify.sh through node exporter's textfile
	# collector; lb_tls_cert_expiry_seconds comes with TLS support (the rule waits for it)
	later="lb_tls_cert_expiry_seconds"
	bad=$(unknown_names deploy/prometheus/lb-alerts.yml lb_keepalived_master $later | oneline)
	if [ -z "$bad" ]; then
		if echo "$metrics_names" | grep -qx "$later"; then pass "prometheus/rule-metrics (all exported, $later included)"
		else pass "prometheus/rule-metrics (all exported but $later, which lb's TLS support will add)"; fi
	else fail prometheus/rule-metrics "not in a live lb's /metrics: $bad"; fi
	bad=$(unknown_names deploy/grafana/lb-dashboard.json | oneline)
	if [ -z "$bad" ]; then pass "grafana/metrics (every lb_* name exists in a live /metrics)"
	else fail grafana/metrics "not in a live lb's /metrics: $bad"; fi
fi

# ---------------------------------------------------------------------------------------------
# Grafana dashboard: JSON, structure, PromQL that parses
# ---------------------------------------------------------------------------------------------
out=$(python3 - deploy/grafana/lb-dashboard.json "$tmp/dash-rules.yml" <<'EOF' 2>&1
import json, re, sys
d = json.load(open(sys.argv[1]))
bad = []
for k in ("uid", "title", "panels", "schemaVersion", "templating"):
    if k not in d: bad.append("no " + k)
ids, cells, exprs = set(), {}, []
for p in d.get("panels", []):
    if p.get("id") in ids: bad.append("duplicate panel id %s" % p.get("id"))
    ids.add(p.get("id"))
    g = p.get("gridPos", {})
    if g.get("x", 0) + g.get("w", 0) > 24: bad.append("panel %r wider than the grid" % p.get("title"))
    for x in range(g.get("x", 0), g.get("x", 0) + g.get("w", 0)):
        for y in range(g.get("y", 0), g.get("y", 0) + g.get("h", 0)):
            if (x, y) in cells: bad.append("panels %r and %r overlap" % (cells[(x, y)], p.get("title"))); break
            cells[(x, y)] = p.get("title")
    if p.get("type") == "row": continue
    t = [t.get("expr") for t in p.get("targets", []) if t.get("expr")]
    if not t: bad.append("panel %r has no query" % p.get("title"))
    exprs += t
for v in d["templating"]["list"]:
    q = v.get("query")
    if isinstance(q, dict): q = q.get("query")
for a in d.get("annotations", {}).get("list", []):
    if a.get("expr"): exprs.append(a["expr"])
# the queries as recording rules, with Grafana's variables replaced, for promtool to parse
with open(sys.argv[2], "w") as f:
    f.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, e in enumerate(exprs):
        e = e.replace("$__rate_interval", "5m").replace("$instance", ".*").replace("$pool", ".*")
        if "$" in e: bad.append("unknown variable in %r" % e)
        f.write("      - record: dashboard_expr_%d\n        expr: %s\n" % (i, json.dumps(e)))
print("; ".join(bad[:5]) if bad else "ok %d panels %d queries" % (len(d["panels"]), len(exprs)))
EOF
)
case $out in
ok*) pass "grafana/json (${out#ok }, no overlaps)" ;;
*) fail grafana/json "$(echo "$out" | oneline)" ;;
esac
if ! have promtool; then fail grafana/promql "promtool not found (Debian package prometheus)"
elif [ ! -s "$tmp/dash-rules.yml" ]; then fail grafana/promql "no queries extracted"
elif out=$(promtool check rules "$tmp/dash-rules.yml" 2>&1); then pass "grafana/promql (every query parses: promtool)"
else fail grafana/promql "$(echo "$out" | grep -v '^Checking' | oneline)"; fi

# ---------------------------------------------------------------------------------------------
# Netdata go.d job
# ---------------------------------------------------------------------------------------------
if ! has_yaml; then
	fail netdata/go.d "python3-yaml missing (Debian package python3-yaml)"
else
	out=$("$PY" - deploy/netdata/go.d/prometheus.conf "$tmp/metrics.txt" <<'EOF' 2>&1
import fnmatch, os, sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
jobs = c.get("jobs") or []
bad = []
if len(jobs) != 1: bad.append("want one job")
for j in jobs:
    if not j.get("name"): bad.append("job without name")
    if j.get("url") != "http://127.0.0.1:8404/metrics": bad.append("url %r" % j.get("url"))
    allow = (j.get("selector") or {}).get("allow") or []
    if os.path.exists(sys.argv[2]):
        names = {l.split()[2] for l in open(sys.argv[2]) if l.startswith("# TYPE ")}
        if not any(fnmatch.fnmatch(n, a) for n in names for a in allow): bad.append("selector matches no live metric")
print("; ".join(bad))
EOF
)
	if [ -z "$out" ]; then pass netdata/go.d; else fail netdata/go.d "$(echo "$out" | oneline)"; fi
fi

# ---------------------------------------------------------------------------------------------
# cloud-init user data, the StackScript, install.sh --render
# ---------------------------------------------------------------------------------------------
ci=deploy/cloud-init-lb.yaml
if [ "$(head -n 1 "$ci")" != "#cloud-config" ]; then
	fail cloud-init/header "the first line must be #cloud-config"
else pass cloud-init/header; fi
if ! has_yaml; then
	fail cloud-init/content "python3-yaml missing (Debian package python3-yaml)"
else
	out=$("$PY" - "$ci" "$tmp" <<'EOF' 2>&1
import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
bad = []
if c.get("ssh_pwauth") is not False: bad.append("ssh_pwauth must be false")
if "sshusers" not in (c.get("groups") or []): bad.append("group sshusers not created")
users = [u for u in c.get("users", []) if isinstance(u, dict)]
if not any("sshusers" in (u.get("groups") or []) and u.get("ssh_authorized_keys") for u in users):
    bad.append("no user with a key in sshusers (nobody could log in)")
need = "git gcc make libc6-dev libbearssl-dev libinih-dev nftables keepalived fail2ban python3-systemd unattended-upgrades certbot prometheus-node-exporter".split()
missing = [p for p in need if p not in (c.get("packages") or [])]
if missing: bad.append("packages missing: " + " ".join(missing))
files = {f["path"]: f for f in c.get("write_files", [])}
env = files.get("/etc/lb/deploy.env")
if not env: bad.append("no /etc/lb/deploy.env")
else:
    if env.get("permissions") != "0600": bad.append("deploy.env must be 0600")
    open(sys.argv[2] + "/deploy.env", "w").write(env["content"])
cmds = c.get("runcmd") or []
script = [x for cmd in cmds if isinstance(cmd, list) for x in cmd if "install.sh" in x]
if not script: bad.append("runcmd does not run deploy/install.sh")
else: open(sys.argv[2] + "/runcmd.sh", "w").write(script[0])
print("; ".join(bad))
EOF
)
	if [ -z "$out" ]; then pass "cloud-init/content (ssh_pwauth false, sshusers, packages, deploy.env 0600, runcmd)"
	else fail cloud-init/content "$(echo "$out" | oneline)"; fi
fi
# cloud-init's own schema check
ci_root=${CLOUD_INIT_ROOT:-/opt/lb-test/cloud-init}
if have cloud-init; then
	ci_cmd=(cloud-init)
elif [ -x "$ci_root/usr/bin/cloud-init" ]; then
	ci_cmd=(env PYTHONPATH="$ci_root/usr/lib/python3/dist-packages" "$PY" "$ci_root/usr/bin/cloud-init")
else
	ci_cmd=()
fi
if [ ${#ci_cmd[@]} -eq 0 ]; then
	fail cloud-init/schema "no cloud-init: install it, or unpack it: apt-get download cloud-init && dpkg -x cloud-init_*.deb $ci_root"
else
	out=$("${ci_cmd[@]}" schema --config-file "$ci" 2>&1)
	rc=$?
	# and a broken copy must be refused (proves the schema is really applied)
	sed 's/^ssh_pwauth: false/ssh_pwauth: [not, a, boolean]/' "$ci" >"$tmp/ci-broken.yaml"
	"${ci_cmd[@]}" schema --config-file "$tmp/ci-broken.yaml" >/dev/null 2>&1
	rc2=$?
	if [ $rc -eq 0 ] && [ $rc2 -ne 0 ] && echo "$out" | grep -q '^Valid cloud-config'; then
		pass "cloud-init/schema (cloud-init schema --config-file: valid; a broken copy is refused)"
	else fail cloud-init/schema "exit $rc ($(echo "$out" | oneline)); broken copy exit $rc2"; fi
fi
if [ -s "$tmp/runcmd.sh" ] && out=$(bash -n "$tmp/runcmd.sh" 2>&1); then pass cloud-init/runcmd-syntax
else fail cloud-init/runcmd-syntax "$(echo "${out:-no runcmd script}" | oneline)"; fi

# the StackScript: UDF tags are well-formed and name what the script uses
out=$(python3 - deploy/stackscript-lb.sh <<'EOF' 2>&1
import re, sys
import xml.etree.ElementTree as ET
text = open(sys.argv[1]).read()
bad, names = [], []
for line in text.splitlines():
    if "<UDF" in line:
        try:
            e = ET.fromstring(line.lstrip("# ").strip())
        except ET.ParseError as x:
            bad.append("bad UDF line %r: %s" % (line[:60], x)); continue
        if e.tag != "UDF" or not e.get("name") or not e.get("label"): bad.append("UDF without name/label")
        names.append(e.get("name"))
for n in names:
    if text.count(n) < 2: bad.append("UDF %s unused" % n)
for n in ("LB_REPO_URL", "LB_ROLE", "ADMIN_SSH_KEY", "LB_SELF_IP", "LB_PEER_IP", "LB_VIP"):
    if n not in names: bad.append("no UDF " + n)
print("; ".join(bad))
EOF
)
if [ -z "$out" ] && bash -n deploy/stackscript-lb.sh 2>"$tmp/ss.err"; then pass "stackscript/udf (tags parse, all used; bash -n)"
else fail stackscript/udf "$(echo "$out" | oneline) $(oneline <"$tmp/ss.err")"; fi

# install.sh --render with cloud-init's deploy.env: every file it would install, checked
if [ ! -s "$tmp/deploy.env" ]; then
	fail install/render "no deploy.env from the cloud-init file"
elif ! out=$(env -i PATH="$PATH" LB_DEPLOY_ENV="$tmp/deploy.env" bash deploy/install.sh --render "$tmp/root" 2>&1); then
	fail install/render "$(echo "$out" | oneline)"
else
	r=$tmp/root
	out=""
	for f in etc/lb/config.ini etc/nftables.conf etc/keepalived/keepalived.conf etc/systemd/system/lb.service \
		etc/ssh/sshd_config.d/50-lb-hardening.conf etc/sysctl.d/90-lb.conf etc/lb/ha.env \
		etc/systemd/system/keepalived.service.d/lb.conf usr/local/sbin/lb-keepalived-notify \
		usr/local/bin/lb-alert-webhook usr/local/sbin/lb-certbot-deploy-hook etc/fail2ban/jail.d/lb-sshd.local \
		etc/systemd/journald.conf.d/50-lb-retention.conf etc/apt/apt.conf.d/52lb-unattended-upgrades; do
		[ -e "$r/$f" ] || out="$out missing $f;"
	done
	[ "$(stat -c %a "$r/etc/lb/ha.env" 2>/dev/null)" = 600 ] || out="$out ha.env not 0600;"
	grep -q '^define ADMIN_V4 = { 203.0.113.0/24 }$' "$r/etc/nftables.conf" || out="$out ADMIN_V4 not set;"
	grep -q '^define PEER_V4 = { 192.168.140.12 }$' "$r/etc/nftables.conf" || out="$out PEER_V4 not set;"
	if [ -z "$out" ]; then pass "install/render ($(find "$r" -type f | wc -l) files from cloud-init's settings)"
	else fail install/render "$out"; fi

	if [ ! -x "$LB_BIN" ]; then fail install/lb-config "$LB_BIN is not built"
	elif out=$("$LB_BIN" -t -c "$r/etc/lb/config.ini" 2>&1); then pass "install/lb-config (lb -t)"
	else fail install/lb-config "$(echo "$out" | oneline)"; fi

	if ! have nft; then fail install/nftables "nft not found (Debian package nftables)"
	else
		ns=()
		if have unshare; then if is_root; then ns=(unshare --net); else ns=(unshare --user --map-root-user --net); fi; fi
		nft_bin=$(command -v nft || echo /usr/sbin/nft)
		if out=$("${ns[@]}" "$nft_bin" -c -f "$r/etc/nftables.conf" 2>&1); then pass "install/nftables (nft -c)"
		else fail install/nftables "$(echo "$out" | oneline)"; fi
	fi

	if ! have keepalived || ! is_root; then fail install/keepalived "needs keepalived and root"
	else
		sed "s#/usr/local/sbin/lb-keepalived-notify#$r/usr/local/sbin/lb-keepalived-notify#" \
			"$r/etc/keepalived/keepalived.conf" >"$tmp/ka-installed.conf"
		if ka_check "$tmp/ka-installed.conf"; then pass "install/keepalived (keepalived --config-test)"
		else fail install/keepalived "$(echo "$ka_out" | oneline)"; fi
	fi

	if ! have apt-config; then fail install/apt-config "apt-config not found (Debian package apt)"
	elif out=$(apt-config -c "$r/etc/apt/apt.conf.d/52lb-unattended-upgrades" dump 2>&1) &&
		echo "$out" | grep -q 'Unattended-Upgrade::Automatic-Reboot-Time "04:00"' &&
		apt-config -c "$r/etc/apt/apt.conf.d/20auto-upgrades" dump >/dev/null 2>&1; then
		pass "install/apt-config (unattended-upgrades files parse; primary reboots at 04:00)"
	else fail install/apt-config "$(echo "$out" | grep -i 'E:' | oneline)"; fi

	# journald: every key is one journald.conf(5) knows (Debian's journald.conf lists them all)
	if [ ! -r /etc/systemd/journald.conf ]; then fail install/journald "/etc/systemd/journald.conf missing (Debian package systemd)"
	else
		bad=""
		while read -r k; do
			grep -q "^#$k=" /etc/systemd/journald.conf || bad="$bad $k"
		done < <(sed -n 's/^\([A-Za-z]*\)=.*/\1/p' "$r/etc/systemd/journald.conf.d/50-lb-retention.conf")
		if [ -z "$bad" ]; then pass install/journald; else fail install/journald "unknown keys:$bad"; fi
	fi

	# fail2ban: its own config test when installed (not a test dependency: the jail is checked on
	# the node by install.sh's restart)
	if have fail2ban-client && [ -d /etc/fail2ban ]; then
		cp -r /etc/fail2ban "$tmp/f2b" && cp "$r/etc/fail2ban/jail.d/lb-sshd.local" "$tmp/f2b/jail.d/"
		if out=$(fail2ban-client -c "$tmp/f2b" -t 2>&1); then pass "install/fail2ban (fail2ban-client -t)"
		else fail install/fail2ban "$(echo "$out" | oneline)"; fi
	else
		echo "SKIP install/fail2ban: fail2ban is not installed here"
	fi
fi

# lint this file
if have shellcheck; then
	if out=$(shellcheck -x tests/deploy2.sh 2>&1); then pass shellcheck/deploy2.sh
	else fail shellcheck/deploy2.sh "$(echo "$out" | grep -m3 'SC[0-9]' | oneline)"; fi
else
	fail shellcheck/deploy2.sh "shellcheck not found (Debian package shellcheck)"
fi

[ $fails -eq 0 ]
