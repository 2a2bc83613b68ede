#!/usr/bin/env bash
# tests/deploy.sh: checks of deploy/ (static files and the alert webhook script).
# One "PASS name" or "FAIL name: reason" line per check; exit status 1 when any check failed.
# Installs nothing and changes nothing on the machine (no unit loaded, no rule or sysctl applied);
# a missing tool is a FAIL naming the package, never a silent pass.
#
# Debian packages needed (tests/deps.sh):
#   systemd nftables openssh-server openssh-client shellcheck python3 curl util-linux iproute2
# for: systemd-analyze; nft; sshd; ssh-keygen; the linter; the alert receiver; the alert script;
# unshare (private namespaces); ip (network namespaces for the firewall behaviour test).
# Root is needed for the firewall checks (network namespaces) and for `sshd -t` in a private mount
# namespace; other checks run as any user.
set -u
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
tmp=$(mktemp -d /tmp/lb-deploy-test.XXXXXX)
pids=()
netns=()
cleanup() {
	local p n
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	# anything left that runs from this run's temp dir (an lb that ignored SIGTERM, its workers,
	# alert scripts it started): by PID, found through the unique path in its command line
	for p in /proc/[0-9]*; do
		[ "${p#/proc/}" = $$ ] && continue
		{ tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -qF "$tmp/" && kill -9 "${p#/proc/}" 2>/dev/null
	done
	for n in "${netns[@]}"; do ip netns delete "$n" 2>/dev/null; done
	rm -rf "$tmp"
}
trap cleanup EXIT
fails=0
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; fails=$((fails + 1)); }
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
tool() { command -v "$1" 2>/dev/null || { [ -x "/usr/sbin/$1" ] && echo "/usr/sbin/$1"; } || echo "/sbin/$1"; }
oneline() { tr -s '\n\t' '  ' | cut -c1-"${1:-300}"; }
is_root() { [ "$(id -u)" = 0 ]; }

# ---------------------------------------------------------------------------------------------
# systemd unit
# ---------------------------------------------------------------------------------------------
unit=deploy/lb.service
if ! have systemd-analyze; then
	fail unit/verify "systemd-analyze not found (Debian package systemd)"
	fail unit/security "systemd-analyze not found (Debian package systemd)"
	fail unit/syscall-filter "systemd-analyze not found (Debian package systemd)"
else
	# verify needs ExecStart's binary: a stub in the temp dir stands in for /usr/local/bin/lb
	mkdir -p "$tmp/unit"
	printf '#!/bin/sh\nexit 0\n' >"$tmp/unit/lb" && chmod 755 "$tmp/unit/lb"
	sed "s#/usr/local/bin/lb#$tmp/unit/lb#g" "$unit" >"$tmp/unit/lb.service"
	# any message (unknown key, bad value, missing binary) is a failure, not only the exit status
	if out=$(systemd-analyze verify "$tmp/unit/lb.service" 2>&1) && [ -z "$out" ]; then
		pass unit/verify
	else
		fail unit/verify "$(echo "$out" | oneline)"
	fi

	# Exposure score: 1.4 with systemd 252 (Debian 12).  What is left is inherent to a network
	# proxy run as a user with CAP_NET_BIND_SERVICE: host network, AF_INET/AF_INET6/AF_UNIX, no IP
	# allow list, ambient NET_BIND_SERVICE, no PrivateUsers (a user namespace would void the
	# capability on the host's ports), host root directory, UMask 0027, ProtectClock's rtc read.
	# The threshold 1.5 fails on removing any one of ProtectSystem, ProtectHome, PrivateTmp,
	# PrivateDevices, NoNewPrivileges, ProtectProc, ProtectKernelTunables (each +0.2), the
	# syscall filter, the capability bounding set, RestrictNamespaces or User (+0.4 to +1.7).
	threshold=1.5
	sec=$(systemd-analyze security --offline=true "$tmp/unit/lb.service" 2>&1)
	score=$(echo "$sec" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
	if [ -z "$score" ]; then
		fail unit/security "no exposure score in systemd-analyze security output: $(echo "$sec" | tail -3 | oneline)"
	elif awk -v s="$score" -v t="$threshold" 'BEGIN { exit !(s <= t) }'; then
		pass "unit/security (exposure $score <= $threshold, systemd-analyze security --offline=true)"
	else
		fail unit/security "exposure $score > $threshold: $(echo "$sec" | grep '✗' | awk '{print $2}' | oneline)"
	fi

	# The system calls lb (master, workers) and alert_command's children make must stay allowed
	# by SystemCallFilter=@system-service minus ~@privileged @resources, as the unit says.
	expand() {
		systemd-analyze syscall-filter "$1" | tail -n +2 | sed 's/^ *//' | grep -v '^#' |
			while read -r x; do
				[ -z "$x" ] && continue
				case $x in @*) expand "$x" ;; *) echo "$x" ;; esac
			done
	}
	allowed=$(expand @system-service | sort -u)
	denied=$( (expand @privileged; expand @resources) | sort -u)
	allowed=$(comm -23 <(echo "$allowed") <(echo "$denied"))
	need="fork clone clone3 execve wait4 kill prctl mmap munmap mprotect mremap epoll_create1
	      epoll_ctl epoll_wait epoll_pwait poll ppoll socket socketpair sendmsg recvmsg accept4 bind
	      listen connect setsockopt getsockopt sendto recvfrom read write readv writev openat close
	      pipe2 dup2 dup3 rename renameat renameat2 unlink unlinkat getdents64 fstat newfstatat
	      rt_sigprocmask rt_sigaction rt_sigreturn sched_yield clock_gettime getrandom
	      getrlimit prlimit64 getuid geteuid shutdown fcntl ioctl exit_group"
	missing=""
	for s in $need; do echo "$allowed" | grep -qx "$s" || missing="$missing $s"; done
	grep -q '^SystemCallFilter=@system-service$' "$unit" && grep -q '^SystemCallFilter=~@privileged @resources$' "$unit" ||
		missing="$missing (unit's SystemCallFilter lines changed: update this test)"
	if [ -z "$missing" ]; then pass unit/syscall-filter
	else fail unit/syscall-filter "not allowed by the unit's filter:$missing"; fi
fi

# the settings the deployment relies on, by value ($MAINPID is literal)
# shellcheck disable=SC2016
want='Type=simple
User=lb
Group=lb
ExecStartPre=/usr/local/bin/lb -t -c /etc/lb/config.ini
ExecStart=/usr/local/bin/lb -c /etc/lb/config.ini
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
KillMode=mixed
LimitNOFILE=200000
AmbientCapabilities=CAP_NET_BIND_SERVICE
CapabilityBoundingSet=CAP_NET_BIND_SERVICE
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ReadWritePaths=/var/log/lb /var/lib/lb /etc/lb
StateDirectory=lb
LogsDirectory=lb
SystemCallArchitectures=native
MemoryDenyWriteExecute=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
LockPersonality=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes'
missing=$(grep -vxF -f "$unit" <<<"$want" | oneline 400)
stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s$/\1/p' "$unit")
if [ -n "$missing" ]; then fail unit/settings "missing or changed: $missing"
elif [ -z "$stop" ] || [ "$stop" -le 30 ]; then fail unit/settings "TimeoutStopSec must be above shutdown_timeout (30s)"
else pass unit/settings; fi

# ---------------------------------------------------------------------------------------------
# nftables
# ---------------------------------------------------------------------------------------------
nft_conf=deploy/nftables.conf
if ! have nft; then
	fail nft/check "nft not found (Debian package nftables)"
else
	# in a throwaway network namespace when possible, so nothing depends on this host's ruleset;
	# as a user, in a user namespace of its own (nft -c needs CAP_NET_ADMIN there)
	ns=()
	if have unshare; then
		if is_root; then ns=(unshare --net); else ns=(unshare --user --map-root-user --net); fi
	fi
	if out=$("${ns[@]}" "$(tool nft)" -c -f "$nft_conf" 2>&1); then pass nft/check
	else fail nft/check "$(echo "$out" | oneline)"; fi
fi

# Behaviour: load the ruleset in a namespace "lb" (10.99.0.1) with the operator variables set to
# addresses of a namespace "cl" (admin .2, peer .3, monitor .4, stranger .5) and connect.
nft_behaviour() {
	local a=lbt$$a b=lbt$$c
	ip netns add "$a" && netns+=("$a") && ip netns add "$b" && netns+=("$b") || return 1
	ip link add veth-lb netns "$a" type veth peer name veth-cl netns "$b" || return 1
	ip -n "$a" addr add 10.99.0.1/24 dev veth-lb && ip -n "$a" link set veth-lb up &&
		ip -n "$a" link set lo up || return 1
	local i
	for i in 2 3 4 5; do ip -n "$b" addr add 10.99.0.$i/24 dev veth-cl || return 1; done
	ip -n "$b" link set veth-cl up && ip -n "$b" link set lo up || return 1
	sed -e 's#^define ADMIN_V4 = .*#define ADMIN_V4 = { 10.99.0.2 }#' \
		-e 's#^define PEER_V4 = .*#define PEER_V4 = { 10.99.0.3 }#' \
		-e 's#^define MONITOR_V4 = .*#define MONITOR_V4 = { 10.99.0.4 }#' "$nft_conf" >"$tmp/nft.conf"
	ip netns exec "$a" "$(tool nft)" -f "$tmp/nft.conf" || return 1
	# listeners on every port the rules mention, and a raw socket counting VRRP (protocol 112)
	# packets that got through (raw sockets see packets after the input hook)
	cat >"$tmp/listen.py" <<'EOF'
import select, socket, sys, time
socks = []
for port in (22, 80, 443, 8404, 9100, 19999, 8080):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("10.99.0.1", port)); s.listen(128); socks.append(s)
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
socks.append(raw)
open(sys.argv[1], "w").close()
vrrp = open(sys.argv[2], "a")
while True:
    for s in select.select(socks, [], [])[0]:
        if s is raw:
            data, addr = raw.recvfrom(2048)
            vrrp.write(addr[0] + "\n"); vrrp.flush()
        else:
            c, _ = s.accept(); c.close()
EOF
	ip netns exec "$a" python3 "$tmp/listen.py" "$tmp/listen.ready" "$tmp/vrrp.log" >"$tmp/listen.out" 2>&1 &
	pids+=($!)
	for i in $(seq 50); do [ -e "$tmp/listen.ready" ] && break; sleep 0.1; done
	cat >"$tmp/probe.py" <<'EOF'
import socket, sys, time
def tcp(src, port):
    s = socket.socket(); s.settimeout(0.4); s.bind((src, 0))
    try:
        s.connect(("10.99.0.1", port)); return "open"
    except OSError:
        return "closed"
    finally:
        s.close()
def vrrp(src):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112); s.bind((src, 0))
    s.sendto(bytes([0x31, 1, 100, 1, 0, 1, 0, 0]) + socket.inet_aton("10.99.0.9"), ("10.99.0.1", 0))
bad = []
def expect(src, port, want):
    got = tcp(src, port)
    if got != want:
        bad.append("%s -> %d: %s, expected %s" % (src, port, got, want))
S, ADMIN, PEER, MON, OTHER = "ssh", "10.99.0.2", "10.99.0.3", "10.99.0.4", "10.99.0.5"
for src in (ADMIN, PEER, MON, OTHER):
    expect(src, 80, "open"); expect(src, 443, "open"); expect(src, 8080, "closed")
expect(OTHER, 22, "closed"); expect(PEER, 22, "closed"); expect(MON, 22, "closed")
expect(PEER, 8404, "open"); expect(MON, 8404, "open"); expect(ADMIN, 8404, "closed"); expect(OTHER, 8404, "closed")
expect(MON, 9100, "open"); expect(MON, 19999, "open")
expect(PEER, 9100, "closed"); expect(OTHER, 19999, "closed"); expect(ADMIN, 9100, "closed")
# SSH from the admin network: the first connections pass, a burst beyond 6 (+1) is cut
ssh = [tcp(ADMIN, 22) for _ in range(12)]
if ssh[:5] != ["open"] * 5 or "closed" not in ssh[7:]:
    bad.append("ssh rate limit from admin: " + " ".join(ssh))
vrrp(PEER); vrrp(OTHER); vrrp(ADMIN)
time.sleep(0.3)
got = sorted(set(open(sys.argv[1]).read().split()))
if got != [PEER]:
    bad.append("VRRP accepted from %s, expected only the peer %s" % (got, PEER))
print("; ".join(bad))
EOF
	ip netns exec "$b" python3 "$tmp/probe.py" "$tmp/vrrp.log"
}
if ! have nft; then
	fail nft/behaviour "nft not found (Debian package nftables)"
elif ! is_root; then
	fail nft/behaviour "needs root (network namespaces)"
elif ! have ip; then
	fail nft/behaviour "ip not found (Debian package iproute2)"
elif ! have python3; then
	fail nft/behaviour "python3 not found (Debian package python3)"
else
	nft_behaviour >"$tmp/nft-behaviour.out" 2>&1
	rc=$?
	out=$(cat "$tmp/nft-behaviour.out")
	if [ $rc -eq 0 ] && [ -z "$out" ]; then
		pass "nft/behaviour (web open to all; ssh admin-only and rate-limited; admin port peer+monitor; exporters monitor-only; VRRP peer-only)"
	else
		fail nft/behaviour "$(echo "${out:-setup failed (exit $rc)}" | oneline 600)"
	fi
	for n in "${netns[@]}"; do ip netns delete "$n" 2>/dev/null; done
	netns=()
	kill "${pids[@]}" 2>/dev/null
	pids=()
fi

# ---------------------------------------------------------------------------------------------
# sshd drop-in: Debian's own sshd_config, its Include pointed at our drop-in, temporary host keys
# ---------------------------------------------------------------------------------------------
dropin=$ROOT/deploy/sshd_config.d/50-lb-hardening.conf
if ! have sshd; then
	fail sshd/check "sshd not found (Debian package openssh-server)"
elif ! have ssh-keygen; then
	fail sshd/check "ssh-keygen not found (Debian package openssh-client)"
else
	mkdir -p "$tmp/ssh"
	ssh-keygen -q -t ed25519 -N '' -f "$tmp/ssh/host_ed25519" &&
		ssh-keygen -q -t rsa -b 3072 -N '' -f "$tmp/ssh/host_rsa"
	main=/usr/share/openssh/sshd_config # Debian's pristine template
	[ -r "$main" ] || main=/dev/null
	{
		echo "Include $dropin"
		grep -v '^Include ' "$main"
		echo "HostKey $tmp/ssh/host_ed25519"
		echo "HostKey $tmp/ssh/host_rsa"
		echo "PidFile $tmp/ssh/sshd.pid"
	} >"$tmp/ssh/sshd_config"
	sshd_bin=$(tool sshd)
	run_sshd() {
		# As root sshd wants its privilege separation directory /run/sshd: give it one in a
		# private mount namespace rather than creating it on the host.
		if is_root && [ ! -d /run/sshd ]; then
			# shellcheck disable=SC2016 # $0 and $@ belong to the inner sh
			unshare --mount --propagation private sh -c \
				'mount -t tmpfs -o mode=0755 lbtest /run && mkdir /run/sshd && exec "$0" "$@"' \
				"$sshd_bin" "$@"
		else
			"$sshd_bin" "$@"
		fi
	}
	if out=$(run_sshd -t -f "$tmp/ssh/sshd_config" 2>&1); then
		pass sshd/check
	else
		fail sshd/check "$(echo "$out" | oneline)"
	fi
	# effective values (sshd -T), so a typo'd or overridden keyword cannot pass unnoticed
	eff=$(run_sshd -T -f "$tmp/ssh/sshd_config" 2>&1)
	bad=""
	for kv in "passwordauthentication no" "kbdinteractiveauthentication no" "permitrootlogin no" \
		"pubkeyauthentication yes" "authenticationmethods publickey" "x11forwarding no" \
		"allowagentforwarding no" "maxauthtries 3" "logingracetime 20" "allowgroups sshusers" \
		"permitemptypasswords no"; do
		echo "$eff" | grep -qx "$kv" || bad="$bad [$kv]"
	done
	for k in ciphers macs kexalgorithms; do
		v=$(echo "$eff" | sed -n "s/^$k //p")
		case ",$v," in
		*cbc* | *sha1* | *md5* | *nistp* | *umac-64* | *group14* | ,,) bad="$bad [$k $v]" ;;
		esac
	done
	if [ -z "$bad" ]; then pass sshd/effective-settings; else fail sshd/effective-settings "not in effect:$bad"; fi
fi

# ---------------------------------------------------------------------------------------------
# sysctl: every key exists here, values are numbers (nothing is applied)
# ---------------------------------------------------------------------------------------------
sysctl_conf=deploy/sysctl.d/90-lb.conf
missing="" badval="" n=0 dup=""
while IFS= read -r line; do
	case $line in '' | '#'* | ';'*) continue ;; esac
	key=${line%%=*}; key=${key// /}
	val=${line#*=}
	n=$((n + 1))
	[ -e "/proc/sys/${key//.//}" ] || missing="$missing $key"
	[[ $val =~ ^[[:space:]]*[0-9]+([[:space:]]+[0-9]+)*[[:space:]]*$ ]] || badval="$badval $key"
done <"$sysctl_conf"
dup=$(grep -v '^[#;]' "$sysctl_conf" | grep '=' | sed 's/ *=.*//' | sort | uniq -d | oneline)
if [ "$n" -lt 10 ]; then fail sysctl/keys-exist "only $n keys read from $sysctl_conf"
elif [ -n "$missing$badval$dup" ]; then
	fail sysctl/keys-exist "${missing:+no /proc/sys entry:$missing }${badval:+not numeric:$badval }${dup:+repeated: $dup}"
else pass "sysctl/keys-exist ($n keys)"; fi
# every setting carries its reason: a comment line right above it or above its group
uncommented=$(awk '/^#/ {c=1; next} /^[[:space:]]*$/ {c=0; next} { if (!c) print $1 }' "$sysctl_conf" | oneline)
if [ -z "$uncommented" ]; then pass sysctl/commented; else fail sysctl/commented "no comment above: $uncommented"; fi

# ---------------------------------------------------------------------------------------------
# lint (shellcheck)
# ---------------------------------------------------------------------------------------------
if ! have shellcheck; then
	fail shellcheck "shellcheck not found (Debian package shellcheck)"
else
	for f in deploy/*.sh deploy/ecmp/*.sh tests/deploy.sh; do
		[ -e "$f" ] || continue
		if out=$(shellcheck -x "$f" 2>&1); then pass "shellcheck/$(basename "$f")"
		else fail "shellcheck/$(basename "$f")" "$(echo "$out" | grep -m3 'SC[0-9]' | oneline)"; fi
	done
fi

# ---------------------------------------------------------------------------------------------
# alert-webhook.sh against a local receiver
# ---------------------------------------------------------------------------------------------
hook=$ROOT/deploy/alert-webhook.sh
alert_missing=""
for t in python3 curl timeout; do have "$t" || alert_missing="$alert_missing $t"; done
if [ -n "$alert_missing" ]; then
	fail alert/setup "not found:$alert_missing (Debian packages python3, curl, coreutils)"
else
	# receiver: POST /ok -> 200, /fail -> 500, /hang -> no answer for 30 s; every request is
	# recorded as one JSON line {path, ctype, body}
	cat >"$tmp/receiver.py" <<'EOF'
import http.server, json, sys, threading, time
log = open(sys.argv[2], "a")
lock = threading.Lock()
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode("utf-8", "replace")
        with lock:
            log.write(json.dumps({"path": self.path, "ctype": self.headers.get("Content-Type"), "body": body}) + "\n")
            log.flush()
        if self.path == "/hang":
            time.sleep(30)
        code = 500 if self.path == "/fail" else 200
        self.send_response(code); self.send_header("Content-Length", "2"); self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a): pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
srv.daemon_threads = True
open(sys.argv[1] + ".tmp", "w").write(str(srv.server_address[1]))
import os; os.rename(sys.argv[1] + ".tmp", sys.argv[1])
srv.serve_forever()
EOF
	python3 "$tmp/receiver.py" "$tmp/port" "$tmp/received.jsonl" &
	pids+=($!)
	for i in $(seq 50); do [ -s "$tmp/port" ] && break; sleep 0.1; done
	port=$(cat "$tmp/port" 2>/dev/null)
	host=$(python3 -c 'import socket; print(socket.gethostname())')
	# a loopback port with nothing listening
	dead=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
	printf 'LB_ALERT_WEBHOOK_URL=http://127.0.0.1:%s/fromfile\n' "$port" >"$tmp/alert.env"

	# hook URL INPUT [ENV=VALUE...]: run the script with a clean environment; sets rc, secs, err
	hook_run() {
		local url=$1 input=$2 t0 t1
		shift 2
		t0=$(date +%s%N)
		printf '%s' "$input" | env -i PATH="$PATH" LB_ALERT_ENV="${HOOK_ENV:-/nonexistent}" \
			${url:+LB_ALERT_WEBHOOK_URL="$url"} "$@" bash "$hook" >"$tmp/hook.out" 2>"$tmp/hook.err"
		rc=$?
		t1=$(date +%s%N)
		secs=$(((t1 - t0) / 1000000000))
		err=$(oneline <"$tmp/hook.err")
	}
	# the last request the receiver got, as "path|ctype|text|keys"
	last() {
		tail -n 1 "$tmp/received.jsonl" 2>/dev/null | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
try:
    b = json.loads(r["body"])
    print("%s|%s|%s|%s" % (r["path"], r["ctype"], b.get("text"), ",".join(sorted(b))))
except ValueError as e:
    print("%s|%s|INVALID JSON %s|" % (r["path"], r["ctype"], e))'
	}
	count() { wc -l <"$tmp/received.jsonl" 2>/dev/null || echo 0; }

	if [ -z "$port" ]; then
		fail alert/setup "receiver did not start"
	else
		ok=http://127.0.0.1:$port/ok
		check_kind() {
			local name=$1 input=$2 want=$3 got
			: >"$tmp/received.jsonl"
			hook_run "$ok" "$input"
			got=$(last)
			if [ $rc -ne 0 ]; then fail "alert/$name" "exit $rc: $err"
			elif [ "$got" != "/ok|application/json|$want|text" ]; then fail "alert/$name" "received [$got], expected text [$want]"
			else pass "alert/$name"; fi
		}
		ev() { printf '{"time":"2026-11-23T10:00:00Z","kind":"%s","pool":"%s","server":"%s","reason":"%s"%s}' "$@"; }
		check_kind server_down "$(ev server_down api a1 'health check: connect refused' '')" \
			":red_circle: [lb $host] server api/a1 is DOWN: health check: connect refused (2026-11-23T10:00:00Z)"
		check_kind server_up "$(ev server_up api a1 'health check: 2 successes' '')" \
			":large_green_circle: [lb $host] server api/a1 is UP: health check: 2 successes (2026-11-23T10:00:00Z)"
		check_kind circuit_open "$(ev circuit_open web w2 '5 consecutive failures' '')" \
			":warning: [lb $host] circuit OPEN for server web/w2: 5 consecutive failures (2026-11-23T10:00:00Z)"
		check_kind circuit_close "$(ev circuit_close web w2 'trial request succeeded' '')" \
			":white_check_mark: [lb $host] circuit CLOSED for server web/w2: trial request succeeded (2026-11-23T10:00:00Z)"
		check_kind cert_expiring "$(ev cert_expiring '' '' 'expires in 12 days' ',"cert":"/etc/lb/certs/example.pem"')" \
			":hourglass: [lb $host] certificate /etc/lb/certs/example.pem is expiring: expires in 12 days (2026-11-23T10:00:00Z)"
		check_kind unknown-kind "$(ev pool_empty api '' 'no server usable' '')" \
			":bell: [lb $host] event pool_empty for api: no server usable (2026-11-23T10:00:00Z)"

		# quotes, backslashes, newlines, tabs, non-ASCII, and Slack control sequences in the reason
		: >"$tmp/received.jsonl"
		nasty='{"time":"t","kind":"server_down","pool":"api","server":"a1","reason":"he said \"no\"\nline 2\twith \\ backslash, caf\u00e9 <!channel> & <http://x|y>"}'
		hook_run "$ok" "$nasty"
		want=":red_circle: [lb $host] server api/a1 is DOWN: he said \"no\""$'\n'"line 2"$'\t'"with \\ backslash, café &lt;!channel&gt; &amp; &lt;http://x|y&gt; (t)"
		got=$(tail -n 1 "$tmp/received.jsonl" 2>/dev/null | python3 -c 'import json,sys; print(json.loads(json.loads(sys.stdin.read())["body"])["text"], end="")' 2>&1)
		if [ $rc -ne 0 ]; then fail alert/special-characters "exit $rc: $err"
		elif [ "$got" != "$want" ]; then fail alert/special-characters "got [$got] expected [$want]"
		else pass alert/special-characters; fi

		# a dead URL: non-zero, a message, within the bound
		hook_run "http://127.0.0.1:$dead/ok" "$(ev server_down api a1 x '')"
		if [ $rc -ne 0 ] && [ -n "$err" ] && [ $secs -le 10 ]; then pass "alert/dead-url (exit $rc in ${secs}s)"
		else fail alert/dead-url "exit $rc after ${secs}s, stderr [$err]"; fi

		# a receiver that never answers: non-zero within the bound
		hook_run "http://127.0.0.1:$port/hang" "$(ev server_down api a1 x '')"
		if [ $rc -ne 0 ] && [ -n "$err" ] && [ $secs -le 10 ]; then pass "alert/hanging-receiver (exit $rc in ${secs}s)"
		else fail alert/hanging-receiver "exit $rc after ${secs}s, stderr [$err]"; fi

		# HTTP 500: non-zero, retried a bounded number of times
		: >"$tmp/received.jsonl"
		hook_run "http://127.0.0.1:$port/fail" "$(ev server_down api a1 x '')"
		n=$(count)
		if [ $rc -ne 0 ] && [ -n "$err" ] && [ "$n" -ge 1 ] && [ "$n" -le 3 ] && [ $secs -le 10 ]; then
			pass "alert/http-500 (exit $rc, $n attempts)"
		else fail alert/http-500 "exit $rc, $n attempts, ${secs}s, stderr [$err]"; fi

		# stdin that never closes: bounded
		read -r rc secs < <(python3 - "$hook" "$ok" <<'EOF'
import os, subprocess, sys, time
env = {"PATH": os.environ["PATH"], "LB_ALERT_ENV": "/nonexistent", "LB_ALERT_WEBHOOK_URL": sys.argv[2]}
t = time.time()
p = subprocess.Popen(["bash", sys.argv[1]], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, env=env)
try:
    rc = p.wait(20)
except subprocess.TimeoutExpired:
    p.kill(); rc = p.wait()
print(rc, int(time.time() - t))
EOF
)
		if [ "${rc:-0}" -ne 0 ] && [ "${secs:-99}" -le 10 ]; then pass "alert/stdin-never-closed (exit $rc in ${secs}s)"
		else fail alert/stdin-never-closed "exit ${rc:-?} after ${secs:-?}s"; fi

		# not JSON: still posted (raw, as valid JSON), exit 2
		: >"$tmp/received.jsonl"
		hook_run "$ok" 'this is "not" json'
		got=$(last)
		case $got in
		"/ok|application/json|:question: [lb $host] unreadable event: this is \"not\" json|text")
			if [ $rc -eq 2 ]; then pass alert/invalid-event; else fail alert/invalid-event "exit $rc, expected 2"; fi ;;
		*) fail alert/invalid-event "received [$got] exit $rc" ;;
		esac

		# URL from the env file; the environment wins over the file
		: >"$tmp/received.jsonl"
		HOOK_ENV=$tmp/alert.env hook_run "" "$(ev server_up api a1 x '')"
		p1=$(last | cut -d'|' -f1)
		HOOK_ENV=$tmp/alert.env hook_run "$ok" "$(ev server_up api a1 x '')"
		p2=$(last | cut -d'|' -f1)
		if [ "$p1" = /fromfile ] && [ "$p2" = /ok ]; then pass alert/env-file
		else fail alert/env-file "file-only request went to [$p1], env+file request to [$p2]"; fi

		# nothing configured: exit 2 with a message
		hook_run "" "$(ev server_up api a1 x '')"
		if [ $rc -eq 2 ] && [ -n "$err" ]; then pass alert/not-configured
		else fail alert/not-configured "exit $rc, stderr [$err]"; fi

		# mail through a sendmail found on PATH (a fake that keeps the message); a reason trying
		# to inject a header must stay in the subject line
		mkdir -p "$tmp/bin"
		printf '#!/bin/sh\necho "$*" >"%s/sendmail.args"\ncat >"%s/sendmail.msg"\n' "$tmp" "$tmp" >"$tmp/bin/sendmail"
		chmod 755 "$tmp/bin/sendmail"
		inj='{"time":"t","kind":"server_down","pool":"api","server":"a1","reason":"boom\r\nBcc: evil@example.com\r\n\r\nbody"}'
		PATH=$tmp/bin:$PATH hook_run "" "$inj" LB_ALERT_MAIL_TO=ops@example.com,oncall@example.com
		mailcheck=$(python3 - "$tmp/sendmail.msg" <<'EOF' 2>&1
import email, email.policy, sys
m = email.message_from_binary_file(open(sys.argv[1], "rb"), policy=email.policy.default)
bad = []
if m["To"] != "ops@example.com, oncall@example.com" and m["To"] != "ops@example.com,oncall@example.com":
    bad.append("To=%r" % m["To"])
if m["Bcc"] is not None:
    bad.append("Bcc header injected")
if not str(m["Subject"]).startswith("[lb ") or "DOWN: boom Bcc: evil@example.com body" not in str(m["Subject"]):
    bad.append("Subject=%r" % m["Subject"])
if '"kind": "server_down"' not in m.get_content():
    bad.append("event missing from the body")
print("; ".join(bad))
EOF
)
		if [ $rc -ne 0 ]; then fail alert/mail "exit $rc: $err"
		elif [ "$(cat "$tmp/sendmail.args" 2>/dev/null)" != "-oi -t" ]; then fail alert/mail "sendmail args [$(cat "$tmp/sendmail.args" 2>/dev/null)]"
		elif [ -n "$mailcheck" ]; then fail alert/mail "$mailcheck"
		else pass alert/mail; fi
	fi
fi

# ---------------------------------------------------------------------------------------------
# lb itself under the unit's seccomp settings (systemd is not PID 1 here, so the unit cannot be
# started for real): tests/sandbox_exec.py applies the same syscall allow-list (EPERM otherwise),
# MemoryDenyWriteExecute and RestrictAddressFamilies, and lb runs as an unprivileged user as in
# the unit.  It must serve, reload, restart a killed worker, rotate its log, run alert_command
# (deploy/alert-webhook.sh, when this lb build supports it) and stop cleanly.
# ---------------------------------------------------------------------------------------------
sb_python=/usr/bin/python3
[ -x $sb_python ] || sb_python=$(command -v python3)
if [ ! -x ./lb ]; then
	fail unit/sandboxed-lb "./lb is not built (make lb)"
elif [ -z "${allowed:-}" ]; then
	fail unit/sandboxed-lb "no syscall list (systemd-analyze missing)"
elif [ -z "$sb_python" ] || ! have curl; then
	fail unit/sandboxed-lb "python3 and curl needed"
elif is_root && ! have setpriv; then
	fail unit/sandboxed-lb "setpriv not found (Debian package util-linux)"
else
	sb=$tmp/sandbox
	mkdir -p "$sb/www" "$sb/log" "$sb/run"
	chmod 755 "$tmp" "$sb" "$sb/www"
	cp ./lb "$sb/lb" && cp tests/sandbox_exec.py deploy/alert-webhook.sh "$sb/"
	echo "$allowed" >"$sb/allowed.txt"
	echo hello >"$sb/www/index.html"
	echo ok >"$sb/www/health"
	as_user=()
	if is_root; then
		chown nobody:nogroup "$sb/log" "$sb/run"
		as_user=(setpriv --reuid=nobody --regid=nogroup --clear-groups)
	fi
	sandboxed() { # in a subshell `(sandboxed ...) &` keeps $! = lb's pid (env, setpriv, python exec)
		exec env -i PATH=/usr/local/bin:/usr/bin:/bin LB_ALERT_ENV=/nonexistent \
			LB_ALERT_WEBHOOK_URL="http://127.0.0.1:${port:-1}/sandbox" \
			"${as_user[@]}" "$sb_python" "$sb/sandbox_exec.py" "$sb/allowed.txt" -- "$@"
	}
	freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
	lport=$(freeport)
	bport=$(freeport)
	(cd "$sb/www" && exec python3 -m http.server -b 127.0.0.1 "$bport" >/dev/null 2>&1) &
	pids+=($!)
	write_conf() { # $1: extra [global] lines, $2: extra [pool] lines
		cat >"$sb/lb.ini" <<EOF
[global]
workers = 2
pid_file = $sb/run/lb.pid
$1
[log]
access = $sb/log/access.log
error = $sb/log/error.log
rotate = 1s
[listener web]
bind = 127.0.0.1:$lport
pool = app
[pool app]
server = b1 127.0.0.1:$bport
$2
EOF
	}
	alerts=1
	write_conf "alert_command = /bin/bash $sb/alert-webhook.sh" \
		"$(printf 'health_check = http GET /health\nhealth_interval = 1s\nhealth_timeout = 500ms\nhealth_rise = 1\nhealth_fall = 1')"
	if ! (sandboxed "$sb/lb" -t -c "$sb/lb.ini") >"$sb/check.out" 2>&1; then
		alerts=0 # this lb build does not know alert_command / health checks yet
		write_conf "" ""
	fi
	get() { curl -s -m 2 "http://127.0.0.1:$lport/index.html"; }
	workers_of() { ps -o pid= --ppid "$1" 2>/dev/null | tr -d ' ' | sort | tr '\n' ' '; }
	sb_lb() {
		local i w1 w2 victim n rotated
		(sandboxed "$sb/lb" -t -c "$sb/lb.ini") >"$sb/check.out" 2>&1 || { echo "lb -t: $(oneline <"$sb/check.out")"; return 1; }
		(sandboxed "$sb/lb" -c "$sb/lb.ini") >"$sb/stderr" 2>&1 &
		lbpid=$!
		pids+=("$lbpid")
		for i in $(seq 50); do [ "$(get)" = hello ] && break; sleep 0.1; done
		n=0; for i in $(seq 20); do [ "$(get)" = hello ] && n=$((n + 1)); done
		[ $n -eq 20 ] || { echo "served $n/20 requests"; return 1; }
		w1=$(workers_of "$lbpid")
		kill -HUP "$lbpid"
		for i in $(seq 30); do
			sleep 0.1
			w2=$(workers_of "$lbpid")
			[ -n "$w2" ] && [ "$w2" != "$w1" ] && [ "$(echo "$w2" | wc -w)" -eq 2 ] && break
		done
		if [ "$w2" = "$w1" ] || [ "$(get)" != hello ]; then echo "reload: workers [$w1] -> [$w2]"; return 1; fi
		victim=${w2%% *}
		kill -9 "$victim"
		for i in $(seq 40); do
			sleep 0.1
			w1=$(workers_of "$lbpid")
			[ "$(echo "$w1" | wc -w)" -eq 2 ] && ! echo " $w1 " | grep -q " $victim " && break
		done
		if [ "$(echo "$w1" | wc -w)" -ne 2 ] || [ "$(get)" != hello ]; then
			echo "worker $victim killed: workers now [$w1]"
			return 1
		fi
		sleep 2.2
		get >/dev/null
		sleep 0.3
		rotated=$(find "$sb/log" -name 'access.log.*' | wc -l)
		if [ "$rotated" -lt 1 ] || ! grep -q 'GET /index.html' "$sb/log/access.log"; then
			echo "rotation: $rotated rotated files; live log has no request after the rotation"
			return 1
		fi
		kill -USR1 "$lbpid"
		return 0
	}
	sb_alert() {
		local i
		[ -n "${port:-}" ] || { echo "no receiver"; return 1; }
		: >"$tmp/received.jsonl"
		mv "$sb/www/health" "$sb/www/health.off"
		for i in $(seq 60); do grep -q 'is DOWN' "$tmp/received.jsonl" 2>/dev/null && break; sleep 0.1; done
		mv "$sb/www/health.off" "$sb/www/health"
		for i in $(seq 60); do grep -q 'is UP' "$tmp/received.jsonl" 2>/dev/null && break; sleep 0.1; done
		python3 - "$tmp/received.jsonl" <<'EOF'
import json, sys
texts = [json.loads(json.loads(l)["body"])["text"] for l in open(sys.argv[1]) if l.strip()]
down = [t for t in texts if "server app/b1 is DOWN" in t]
up = [t for t in texts if "server app/b1 is UP" in t]
if not down or not up:
    print("webhook got %r" % texts)
EOF
	}
	sb_stop() {
		local i rc
		kill -TERM "$lbpid"
		for i in $(seq 100); do kill -0 "$lbpid" 2>/dev/null || break; sleep 0.1; done
		if kill -0 "$lbpid" 2>/dev/null; then echo "still running 10 s after SIGTERM"; return 1; fi
		wait "$lbpid"
		rc=$?
		[ $rc -eq 0 ] || { echo "exit status $rc after SIGTERM"; return 1; }
	}
	lbpid=""
	sb_lb >"$sb/sb_lb.out" 2>&1 </dev/null
	rc=$?
	out=$(oneline 500 <"$sb/sb_lb.out")
	if [ $rc -eq 0 ] && [ $alerts = 1 ]; then
		aout=$(sb_alert 2>&1)
		if [ -z "$aout" ]; then pass "unit/sandboxed-alert (lb ran alert-webhook.sh on server_down and server_up)"
		else fail unit/sandboxed-alert "$(echo "$aout" | oneline 500)"; fi
	elif [ $alerts = 0 ]; then
		echo "SKIP unit/sandboxed-alert: this lb build rejects alert_command or the health_* keys: $(oneline <"$sb/check.out")"
	fi
	if [ -n "$lbpid" ] && kill -0 "$lbpid" 2>/dev/null; then
		sb_stop >"$sb/stop.out" 2>&1 || { rc=1; out="$out${out:+; }$(oneline <"$sb/stop.out")"; }
	fi
	denied=$(grep -E 'Operation not permitted|Bad system call|Address family not supported|signal 31' "$sb/log/error.log" "$sb/stderr" 2>/dev/null | head -3 | oneline 300)
	if [ $rc -eq 0 ] && [ -z "$denied" ]; then
		pass "unit/sandboxed-lb (served, reloaded, restarted a killed worker, rotated logs, stopped with exit 0)"
	else
		fail unit/sandboxed-lb "${out:-}${denied:+ denied: $denied} (log: $(tail -3 "$sb/log/error.log" 2>/dev/null | oneline 300))"
	fi
fi

[ $fails -eq 0 ]
