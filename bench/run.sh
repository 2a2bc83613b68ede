#!/usr/bin/env bash
# bench/run.sh — compare lb with HAProxy and nginx (one worker each) in front of three nginx
# backends, plus "direct" (wrk straight to one backend) as the no-proxy limit; then the same
# proxies terminating TLS (BENCH_TLS=1, the default).
#
#   make bench            # or: bash bench/run.sh
#
# Environment:
#   LB_BIN        lb binary (default ./lb); skipped with a message when missing
#   BENCH_ONLY    comma list out of lb,haproxy,nginx,direct (default: all four)
#   BENCH_SECS    seconds per wrk run (default 5)
#   BENCH_RUNS    runs per proxy and figure, alternating between proxies (default 3)
#   BENCH_WARMUP  seconds of warm-up after each proxy start (default 1, 0 = none)
#   BENCH_CONNS   connections of the small keep-alive run and of the TLS runs (default 50)
#   BENCH_CONNS_HIGH  connections of the large keep-alive run (default 1000)
#   BENCH_TLS     1 (default): also the TLS figures below; 0: plain HTTP only
#   BENCH_OUT     Markdown report (default bench/results.md)
#   BENCH_KEEP_TMP=1  keep the temp dir (configs, logs, raw wrk output)
#
# The proxy runs on CPU 0 and wrk on CPU 1 (taskset); the backends are not pinned.
# Every process the script starts is stopped on exit (by PID / its own process group).
#
# TLS (BENCH_TLS=1): each proxy is started a second time, from bench/*-tls.*.in, terminating TLS
# with the same self-signed ECDSA P-256 certificate (made here with openssl, one PEM file: the
# certificate then the key), TLS 1.2 only, ECDHE-ECDSA-AES128-GCM-SHA256 only, P-256 ECDHE, one
# worker, and a session-ID cache without session tickets (lb has no tickets, so they are off for
# HAProxy and nginx too). Three figures, the load on CPU 1 like wrk:
#   full handshakes/s     bench/tlsload.c -m full: 50 connections in flight, each connect, full
#                         handshake, close_notify and FIN, the server's close, again; no HTTP request
#   resumed handshakes/s  bench/tlsload.c -m resume: the same with session-ID resumption (each
#                         connection offers the session of the one before it)
#   HTTPS keep-alive      wrk -c50 over https (the client offers only the cipher and group above,
#                         through an OPENSSL_CONF file)
# Why tlsload (built here from bench/tlsload.c with BearSSL and libcrypto) and not the stock tools:
# on a 2-CPU box the client gets one CPU, and the stock OpenSSL 3.0 clients spend ~1 ms of CPU per
# full handshake, more than HAProxy or nginx (~0.7 ms): `openssl s_time -new` tops out near 400
# handshakes/s with the proxy ~70% idle (one connection at a time; 2-16 processes in parallel on
# CPU 1 do not help, CPU 1 is the limit), and an OpenSSL epoll client near 900/s. wrk cannot make
# full handshakes at all: with "Connection: close" it ends each connection with SSL_shutdown and
# SSL_clear, keeps the session and resumes it on the next connect (checked with nginx's
# $ssl_session_reused: 3329 of 3339 resumed). tlsload spends ~0.4 ms per full handshake, half of
# it the kernel's TCP work (BearSSL protocol code, OpenSSL's P-256 arithmetic, the server's
# signature not checked), so CPU 0 (the proxy) is the limit: the report gives "CPU 0 busy %"
# beside each TLS figure; well under 100% means that figure was not proxy-bound. Anything else
# running on CPU 0 counts as busy too: bench an otherwise idle machine.

set -u -o pipefail

ORIG_PWD=$PWD
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT_DIR=$(cd "$SCRIPT_DIR/.." && pwd)

LB_BIN=${LB_BIN:-./lb}
case $LB_BIN in
/*) ;;
*/*) LB_BIN="$ORIG_PWD/${LB_BIN#./}" ;;
*) LB_BIN_PATH=$(command -v "$LB_BIN" 2>/dev/null || true)
   if [ -n "$LB_BIN_PATH" ]; then LB_BIN=$LB_BIN_PATH; else LB_BIN="$ORIG_PWD/$LB_BIN"; fi ;;
esac
BENCH_ONLY=${BENCH_ONLY:-lb,haproxy,nginx,direct}
BENCH_SECS=${BENCH_SECS:-5}
BENCH_RUNS=${BENCH_RUNS:-3}
BENCH_WARMUP=${BENCH_WARMUP:-1}
BENCH_CONNS=${BENCH_CONNS:-50}
BENCH_CONNS_HIGH=${BENCH_CONNS_HIGH:-1000}
BENCH_TLS=${BENCH_TLS:-1}
BENCH_OUT=${BENCH_OUT:-$ROOT_DIR/bench/results.md}
case $BENCH_OUT in /*) ;; *) BENCH_OUT="$ORIG_PWD/$BENCH_OUT" ;; esac

for v in BENCH_SECS BENCH_RUNS BENCH_WARMUP BENCH_CONNS BENCH_CONNS_HIGH BENCH_TLS; do
	case ${!v} in ''|*[!0-9]*) echo "bench: $v must be a whole number (got '${!v}')" >&2; exit 2 ;; esac
done
if [ "$BENCH_SECS" -lt 1 ] || [ "$BENCH_RUNS" -lt 1 ]; then echo "bench: BENCH_SECS and BENCH_RUNS must be >= 1" >&2; exit 2; fi
case $BENCH_TLS in 0|1) ;; *) echo "bench: BENCH_TLS must be 0 or 1 (got '$BENCH_TLS')" >&2; exit 2 ;; esac

log() { printf '%s\n' "$*"; }
warn() { printf 'bench: %s\n' "$*" >&2; }

# ------------------------------------------------------------------ tools
need_tools() {
	local missing=() pkgs=() t pkg
	for t in nginx:nginx-light haproxy:haproxy wrk:wrk taskset:util-linux setsid:util-linux \
	         awk:mawk sed:sed sort:coreutils; do
		pkg=${t#*:}; t=${t%%:*}
		if ! command -v "$t" >/dev/null 2>&1 && ! [ -x "/usr/sbin/$t" ] && ! [ -x "/sbin/$t" ]; then
			missing+=("$t")
			case " ${pkgs[*]-} " in *" $pkg "*) ;; *) pkgs+=("$pkg") ;; esac
		fi
	done
	if [ ${#missing[@]} -gt 0 ]; then
		warn "missing tools: ${missing[*]}"
		if [ "$(id -u)" -eq 0 ]; then
			warn "install them with:  apt-get update && apt-get install -y ${pkgs[*]}"
		else
			warn "install them with:  sudo apt-get update && sudo apt-get install -y ${pkgs[*]}"
		fi
		exit 1
	fi
}
# nginx and haproxy live in /usr/sbin, which a non-root PATH may lack.
PATH="$PATH:/usr/sbin:/sbin"
need_tools

# TLS needs openssl (the certificate) and a C compiler with BearSSL (bench/tlsload.c); without
# them the TLS figures are left out, the others still run.
CC=${CC:-cc}
TLS_OFF_REASON=""
if [ "$BENCH_TLS" = 1 ]; then
	if ! command -v openssl >/dev/null 2>&1; then
		TLS_OFF_REASON="openssl not found (apt-get install openssl)"
	elif ! command -v "$CC" >/dev/null 2>&1; then
		TLS_OFF_REASON="no C compiler ($CC) for bench/tlsload.c"
	fi
	if [ -n "$TLS_OFF_REASON" ]; then
		warn "TLS figures off: $TLS_OFF_REASON"
		BENCH_TLS=0
	fi
fi

# ------------------------------------------------------------------ selection
want() { case ",$BENCH_ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
for p in ${BENCH_ONLY//,/ }; do
	case $p in lb|haproxy|nginx|direct) ;; *) warn "BENCH_ONLY: unknown name '$p' (use lb,haproxy,nginx,direct)"; exit 2 ;; esac
done
PROXIES=()
LB_SKIP_REASON=""
for p in lb haproxy nginx direct; do
	want "$p" || continue
	if [ "$p" = lb ] && ! [ -x "$LB_BIN" ]; then
		LB_SKIP_REASON="LB_BIN=$LB_BIN not found or not executable (build it with make, or set LB_BIN)"
		log "bench: skipping lb: $LB_SKIP_REASON"
		continue
	fi
	PROXIES+=("$p")
done
[ ${#PROXIES[@]} -gt 0 ] || { warn "nothing to run"; exit 1; }
# tls_wanted NAME: whether NAME gets the TLS runs (not direct: the backends speak plain HTTP)
LB_TLS_SKIP_REASON=""
tls_wanted() {
	[ "$BENCH_TLS" = 1 ] || return 1
	case $1 in direct) return 1 ;; lb) [ -z "$LB_TLS_SKIP_REASON" ] || return 1 ;; esac
	return 0
}

# ------------------------------------------------------------------ CPUs, limits
NCPU=$(nproc 2>/dev/null || echo 1)
if [ "$NCPU" -ge 2 ]; then
	PIN_PROXY=(taskset -c 0)
	PIN_WRK=(taskset -c 1)
	PIN_NOTE="proxy on CPU 0, wrk on CPU 1 (taskset), backends unpinned"
else
	PIN_PROXY=()
	PIN_WRK=()
	PIN_NOTE="only $NCPU CPU: nothing pinned (figures are not comparable with 2+ CPU machines)"
	warn "$PIN_NOTE"
fi

hard=$(ulimit -Hn)
if [ "$hard" = unlimited ]; then
	hard=$(cat /proc/sys/fs/nr_open 2>/dev/null || echo 1048576)
fi
ulimit -Sn "$hard" 2>/dev/null || warn "could not raise the open-files soft limit to $hard"
NOFILE=$(ulimit -Sn)
if [ "$NOFILE" != unlimited ] && [ "$NOFILE" -lt $((2 * BENCH_CONNS_HIGH + 200)) ]; then
	warn "open-files limit $NOFILE is low for $BENCH_CONNS_HIGH connections; expect socket errors"
fi

# ------------------------------------------------------------------ temp dir, cleanup
TMP=$(mktemp -d "${TMPDIR:-/tmp}/lb-bench.XXXXXX") || exit 1
chmod 755 "$TMP"   # nginx workers may run as nobody when started by root
PIDS=()
WRK_PID=""

proc_alive() { kill -0 "$1" 2>/dev/null; }

# Stop one process we started: its own process group when it leads one (setsid), else the PID.
stop_pid() {
	local pid=$1 pgid
	proc_alive "$pid" || { wait "$pid" 2>/dev/null; return 0; }
	pgid=$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ')
	if [ "$pgid" = "$pid" ]; then kill -TERM -- "-$pid" 2>/dev/null; else kill -TERM "$pid" 2>/dev/null; fi
	for _ in $(seq 1 50); do
		proc_alive "$pid" || break
		sleep 0.1
	done
	if proc_alive "$pid"; then
		warn "PID $pid did not stop on SIGTERM within 5s; sending SIGKILL"
		if [ "$pgid" = "$pid" ]; then kill -KILL -- "-$pid" 2>/dev/null; else kill -KILL "$pid" 2>/dev/null; fi
	fi
	wait "$pid" 2>/dev/null
	# Stragglers of the group (workers that outlived their master).
	if [ "$pgid" = "$pid" ]; then
		local left
		left=$(ps -o pid= -g "$pid" 2>/dev/null | tr -d ' ' | tr '\n' ' ')
		if [ -n "${left// /}" ]; then
			warn "processes left in group $pid: $left— killing them"
			kill -KILL -- "-$pid" 2>/dev/null
		fi
	fi
	return 0
}

forget_pid() {
	local keep=() p
	for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
	PIDS=("${keep[@]}")
}

cleanup() {
	local p
	trap - EXIT INT TERM
	if [ -n "${WRK_PID:-}" ] && proc_alive "$WRK_PID"; then
		kill -TERM "$WRK_PID" 2>/dev/null; wait "$WRK_PID" 2>/dev/null
	fi
	for p in "${PIDS[@]}"; do stop_pid "$p"; done
	PIDS=()
	if [ "${BENCH_KEEP_TMP:-0}" = 1 ]; then
		log "bench: temp dir kept: $TMP"
	else
		rm -rf "$TMP"
	fi
}
trap cleanup EXIT
trap 'warn "interrupted"; exit 130' INT
trap 'warn "terminated"; exit 143' TERM

# ------------------------------------------------------------------ ports
port_in_use() {
	local p=$1
	if command -v ss >/dev/null 2>&1; then
		[ -n "$(ss -Htan "( sport = :$p )" 2>/dev/null)" ]
	else
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null
	fi
}
USED_PORTS=" "
# Below the ephemeral range so that wrk's client sockets never take them.
# free_port VAR: a free TCP port into VAR.
free_port() {
	local lo=${BENCH_PORT_MIN:-20000} hi=${BENCH_PORT_MAX:-32000} p
	for _ in $(seq 1 200); do
		p=$((lo + (RANDOM * 32768 + RANDOM) % (hi - lo)))
		case $USED_PORTS in *" $p "*) continue ;; esac
		port_in_use "$p" && continue
		USED_PORTS="$USED_PORTS$p "
		printf -v "$1" '%s' "$p"
		return 0
	done
	warn "no free port found in $lo..$hi"
	return 1
}

free_port P1 && free_port P2 && free_port P3 && free_port PROXY_PORT || exit 1

# ------------------------------------------------------------------ config generation
# Temp paths of nginx modules that are compiled in (nginx-light may lack some).
NGINX_V=$(nginx -V 2>&1)
temp_paths() { # $1 = prefix for dir names
	local m out=""
	for m in fastcgi uwsgi scgi; do
		case $NGINX_V in *"--without-http_${m}_module"*) continue ;; esac
		out="$out    ${m}_temp_path $TMP/$1-$m;\n"
	done
	printf '%b' "$out"
}

render() { # template output
	local tb tp
	tb=$(temp_paths backends | sed 's/[\/&]/\\&/g' | sed ':a;N;$!ba;s/\n/\\n/g')
	tp=$(temp_paths proxy | sed 's/[\/&]/\\&/g' | sed ':a;N;$!ba;s/\n/\\n/g')
	sed -e "s|@TMP@|$TMP|g" -e "s|@PORT@|$PROXY_PORT|g" -e "s|@CERT@|$TMP/tls/combined.pem|g" \
	    -e "s|@P1@|$P1|g" -e "s|@P2@|$P2|g" -e "s|@P3@|$P3|g" \
	    -e "s/@TEMP_PATHS_BACKENDS@/$tb/" -e "s/@TEMP_PATHS_PROXY@/$tp/" \
	    "$1" > "$2"
}

render "$SCRIPT_DIR/nginx-backends.conf.in" "$TMP/nginx-backends.conf"
render "$SCRIPT_DIR/nginx-proxy.conf.in" "$TMP/nginx-proxy.conf"
render "$SCRIPT_DIR/haproxy.cfg.in" "$TMP/haproxy.cfg"
render "$SCRIPT_DIR/lb.ini.in" "$TMP/lb.ini"

# ------------------------------------------------------------------ TLS set-up
# The certificate (one PEM file: certificate, then the PKCS#8 P-256 key) for all three proxies,
# the OpenSSL client settings for wrk, the handshake client, and whether lb takes a TLS listener.
TLSLOAD=""
TLSLOAD_NOTE=""
TLSLOAD_SKIP_REASON=""
TLS_CLIENT_CNF="$TMP/tls/openssl-client.cnf"
tls_setup() {
	local out
	mkdir -p "$TMP/tls"
	if ! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
		-subj /CN=bench.test -addext subjectAltName=DNS:bench.test,DNS:localhost \
		-keyout "$TMP/tls/key.pem" -out "$TMP/tls/cert.pem" >"$TMP/tls/req.log" 2>&1; then
		warn "TLS figures off: openssl req failed:"
		sed 's/^/    /' "$TMP/tls/req.log" >&2
		BENCH_TLS=0
		return 0
	fi
	cat "$TMP/tls/cert.pem" "$TMP/tls/key.pem" > "$TMP/tls/combined.pem"
	# wrk reads the default OpenSSL configuration: offer what tlsload offers, nothing else
	cat > "$TLS_CLIENT_CNF" <<-'CNF'
	openssl_conf = openssl_init
	[openssl_init]
	ssl_conf = ssl_module
	[ssl_module]
	system_default = tls_client
	[tls_client]
	MinProtocol = TLSv1.2
	MaxProtocol = TLSv1.2
	CipherString = ECDHE-ECDSA-AES128-GCM-SHA256
	Groups = P-256
	Options = -SessionTicket
	CNF
	render "$SCRIPT_DIR/haproxy-tls.cfg.in" "$TMP/haproxy-tls.cfg"
	render "$SCRIPT_DIR/nginx-proxy-tls.conf.in" "$TMP/nginx-proxy-tls.conf"
	render "$SCRIPT_DIR/lb-tls.ini.in" "$TMP/lb-tls.ini"
	# the handshake client: BearSSL + libcrypto's P-256; BearSSL alone when OpenSSL's headers are missing
	if "$CC" -O2 -o "$TMP/tlsload" "$SCRIPT_DIR/tlsload.c" -l:libbearssl.a -lcrypto >"$TMP/tls/cc.log" 2>&1; then
		TLSLOAD="$TMP/tlsload"
	elif "$CC" -O2 -DTLSLOAD_NO_OPENSSL -o "$TMP/tlsload" "$SCRIPT_DIR/tlsload.c" -l:libbearssl.a \
		>>"$TMP/tls/cc.log" 2>&1; then
		TLSLOAD="$TMP/tlsload"
		TLSLOAD_NOTE="tlsload built without OpenSSL (libssl-dev missing): BearSSL's slow P-256 makes the handshake figures client-bound"
		warn "$TLSLOAD_NOTE"
	else
		TLSLOAD_SKIP_REASON="bench/tlsload.c did not build (needs libbearssl-dev, ideally libssl-dev)"
		warn "no handshake figures: $TLSLOAD_SKIP_REASON:"
		sed 's/^/    /' "$TMP/tls/cc.log" >&2
	fi
	if want lb && [ -z "$LB_SKIP_REASON" ] && ! out=$("$LB_BIN" -t -c "$TMP/lb-tls.ini" 2>&1); then
		LB_TLS_SKIP_REASON="\`lb -t\` rejects the TLS listener of bench/lb-tls.ini.in: $(printf '%s' "$out" | head -n 1)"
		log "bench: skipping lb's TLS figures: $LB_TLS_SKIP_REASON"
	fi
	return 0
}
if [ "$BENCH_TLS" = 1 ]; then tls_setup; fi

# ------------------------------------------------------------------ HTTP probe
# Prints the status code of GET / on 127.0.0.1:$1 over $2 (http or https; "" when nothing answers).
http_status() {
	local port=$1 scheme=${2:-http} line=""
	if command -v curl >/dev/null 2>&1; then
		curl -sk -o /dev/null -m 2 -w '%{http_code}' "$scheme://127.0.0.1:$port/" 2>/dev/null || true
		return 0
	fi
	if [ "$scheme" = https ]; then
		line=$(printf 'GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n' |
			timeout 2 openssl s_client -quiet -connect "127.0.0.1:$port" -servername bench.test 2>/dev/null |
			head -n1) || true
	else
		line=$(timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port || exit 1
			printf 'GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n' >&3
			head -n1 <&3" 2>/dev/null) || true
	fi
	local _ code=""
	read -r _ code _ <<< "$line"
	printf '%s' "$code"
}

# wait_ready NAME PID PORT LOG [SCHEME]: up to 10 s for a 200 on PORT while PID lives.
wait_ready() {
	local name=$1 pid=$2 port=$3 logf=$4 scheme=${5:-http} st=""
	for _ in $(seq 1 100); do
		if ! proc_alive "$pid"; then
			wait "$pid" 2>/dev/null
			warn "$name exited at start-up; last lines of $logf:"
			tail -n 20 "$logf" >&2 2>/dev/null
			return 1
		fi
		st=$(http_status "$port" "$scheme")
		[ "$st" = 200 ] && return 0
		sleep 0.1
	done
	warn "$name did not answer 200 on $scheme port $port within 10 s (last status '${st}'); last lines of $logf:"
	tail -n 20 "$logf" >&2 2>/dev/null
	return 1
}

# start_bg LOG CMD... : start a server in its own session; sets BG_PID.
start_bg() {
	local logf=$1; shift
	setsid "$@" </dev/null >"$logf" 2>&1 &
	BG_PID=$!
	PIDS+=("$BG_PID")
}

# ------------------------------------------------------------------ servers
start_backends() {
	mkdir -p "$TMP/backends"
	start_bg "$TMP/backends.log" nginx -c "$TMP/nginx-backends.conf" -p "$TMP/backends/" \
		-e "$TMP/nginx-backends.error.log" -g 'daemon off;'
	BACKENDS_PID=$BG_PID
	local p
	for p in "$P1" "$P2" "$P3"; do
		wait_ready "nginx backends" "$BACKENDS_PID" "$p" "$TMP/nginx-backends.error.log" || return 1
	done
}

# start_proxy NAME [tls]: sets CUR_PID (empty for direct), CUR_PORT, CUR_SCHEME and CUR_LOG; with
# "tls" from the *-tls configuration. Returns 1 when it failed.
start_proxy() {
	local name=$1 tls=${2:-} sfx="" logf
	[ "$tls" = tls ] && sfx=-tls
	logf="$TMP/$name$sfx.log"
	CUR_PID=""
	CUR_PORT=$PROXY_PORT
	CUR_SCHEME=http
	CUR_ENV=()   # wrk's environment: for https, the client TLS settings
	if [ "$tls" = tls ]; then CUR_SCHEME=https; CUR_ENV=("OPENSSL_CONF=$TLS_CLIENT_CNF"); fi
	case $name in
	direct)
		CUR_PORT=$P1
		CUR_LOG=$logf
		return 0 ;;
	haproxy)
		start_bg "$logf" "${PIN_PROXY[@]}" haproxy -db -f "$TMP/haproxy$sfx.cfg" ;;
	nginx)
		mkdir -p "$TMP/proxy"
		start_bg "$logf" "${PIN_PROXY[@]}" nginx -c "$TMP/nginx-proxy$sfx.conf" -p "$TMP/proxy/" \
			-e "$TMP/nginx-proxy$sfx.error.log" -g 'daemon off;'
		logf="$TMP/nginx-proxy$sfx.error.log" ;;
	lb)
		# as root, lb wants to be told to keep root for its workers
		local as_root=()
		[ "$(id -u)" = 0 ] && as_root=(-u root)
		start_bg "$logf" "${PIN_PROXY[@]}" "$LB_BIN" -c "$TMP/lb$sfx.ini" "${as_root[@]}" ;;
	esac
	CUR_PID=$BG_PID
	CUR_LOG=$logf
	if ! wait_ready "$name" "$CUR_PID" "$CUR_PORT" "$logf" "$CUR_SCHEME"; then
		stop_pid "$CUR_PID"; forget_pid "$CUR_PID"; CUR_PID=""
		return 1
	fi
	# The port must be free again before the next proxy binds it.
	return 0
}

stop_proxy() {
	[ -n "$CUR_PID" ] || return 0
	stop_pid "$CUR_PID"
	forget_pid "$CUR_PID"
	CUR_PID=""
	for _ in $(seq 1 50); do
		command -v ss >/dev/null 2>&1 || break
		[ -z "$(ss -Htln "( sport = :$PROXY_PORT )" 2>/dev/null)" ] && break
		sleep 0.1
	done
}

# ------------------------------------------------------------------ wrk
# parse_wrk FILE -> "rps p99_ms errors" (NA for a value that is missing)
parse_wrk() {
	awk '
	function ms(v,   n, u) {
		n = v; sub(/[a-z]+$/, "", n); u = v; sub(/^[0-9.]+/, "", u)
		if (u == "us") return n / 1000
		if (u == "ms") return n
		if (u == "s")  return n * 1000
		if (u == "m")  return n * 60000
		if (u == "h")  return n * 3600000
		return "NA"
	}
	BEGIN { rps = "NA"; p99 = "NA"; err = 0 }
	/^Requests\/sec:/ { rps = $2 }
	/^[ \t]*99%/ && lat { p99 = ms($2) }
	/Latency Distribution/ { lat = 1 }
	/Socket errors:/ {
		for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) { x = $i; sub(/,/, "", x); err += x }
	}
	/Non-2xx or 3xx responses:/ { err += $NF }
	END { printf "%s %s %d\n", rps, p99, err }
	' "$1"
}

# CPU 0 (the proxy's, when pinned) busy time: cpu0_snap prints "busy total" in clock ticks from
# /proc/stat (busy = user, nice, system, irq, softirq: the kernel's network work for the proxy
# counts; steal does not), cpu0_pct BEFORE AFTER the busy percentage in between ("NA" unpinned).
cpu0_snap() {
	[ ${#PIN_PROXY[@]} -gt 0 ] || { echo "NA NA"; return; }
	awk '$1 == "cpu0" { b = $2 + $3 + $4 + $7 + $8; print b, b + $5 + $6; exit }' /proc/stat 2>/dev/null ||
		echo "NA NA"
}
cpu0_pct() {
	awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " ")
		if (x[1] == "NA" || y[1] == "NA" || x[2] == "" || y[2] == x[2]) { print "NA"; exit }
		printf "%.0f\n", 100 * (y[1] - x[1]) / (y[2] - x[2]) }'
}

# RESULTS: proxy, figure, round, rate (req/s or handshakes/s), p99 ms, errors, CPU 0 busy %,
# resumed % (of the handshakes that offered a session; NA but for the resumption runs)
RESULTS="$TMP/results.tsv"
: > "$RESULTS"
# run_wrk PROXY FIGURE ROUND CONNS [extra wrk args]
run_wrk() {
	local proxy=$1 fig=$2 round=$3 conns=$4; shift 4
	local out="$TMP/wrk-$proxy-$fig-$round.txt" rps p99 err c0 c1 cpu
	c0=$(cpu0_snap)
	# In the background and waited for, so that a signal to the script stops it at once.
	env "${CUR_ENV[@]}" "${PIN_WRK[@]}" wrk -t1 -c"$conns" -d"${BENCH_SECS}s" --timeout 5s --latency "$@" \
		"$CUR_SCHEME://127.0.0.1:$CUR_PORT/" > "$out" 2>&1 &
	WRK_PID=$!
	wait "$WRK_PID"
	WRK_PID=""
	c1=$(cpu0_snap)
	cpu=$(cpu0_pct "$c0" "$c1")
	read -r rps p99 err < <(parse_wrk "$out")
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$proxy" "$fig" "$round" "$rps" "$p99" "$err" "$cpu" NA >> "$RESULTS"
	printf '  %-8s %-10s run %d: %10s req/s  p99 %8s ms  errors %s  CPU0 %s%%\n' \
		"$proxy" "$fig" "$round" "$rps" "$p99" "$err" "$cpu"
	if [ "$rps" = NA ]; then
		warn "could not parse wrk output ($out):"
		sed 's/^/    /' "$out" >&2
	fi
}

# run_tlsload PROXY FIGURE ROUND MODE(full|resume): handshakes against CUR_PORT
run_tlsload() {
	local proxy=$1 fig=$2 round=$3 mode=$4
	local out="$TMP/tlsload-$proxy-$fig-$round.txt" c0 c1 cpu rate err res pct
	c0=$(cpu0_snap)
	"${PIN_WRK[@]}" "$TLSLOAD" -c "$BENCH_CONNS" -d "$BENCH_SECS" -m "$mode" 127.0.0.1 "$CUR_PORT" > "$out" 2>&1 &
	WRK_PID=$!
	wait "$WRK_PID"
	WRK_PID=""
	c1=$(cpu0_snap)
	cpu=$(cpu0_pct "$c0" "$c1")
	# "handshakes N offered N resumed N errors N secs S rate R" -> rate errors resumed resumed%-of-offered
	read -r rate err res pct < <(awk '$1 == "handshakes" { for (i = 1; i < NF; i += 2) v[$i] = $(i + 1)
		printf "%s %s %s %s\n", v["rate"], v["errors"], v["resumed"],
			(v["offered"] > 0 ? sprintf("%.1f", 100 * v["resumed"] / v["offered"]) : "NA"); f = 1 }
		END { if (!f) print "NA 0 NA NA" }' "$out")
	[ "$mode" = resume ] || pct=NA
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$proxy" "$fig" "$round" "$rate" NA "$err" "$cpu" "$pct" >> "$RESULTS"
	printf '  %-8s %-10s run %d: %10s hs/s   resumed %5s%%  errors %s  CPU0 %s%%\n' \
		"$proxy" "$fig" "$round" "$rate" "$pct" "$err" "$cpu"
	if [ "$rate" = NA ]; then
		warn "could not parse tlsload output ($out):"
		sed 's/^/    /' "$out" >&2
	elif [ "$err" != 0 ] || { [ "$mode" = full ] && [ "$res" != 0 ]; }; then
		warn "$proxy $fig: $err errors, $res resumed; tlsload said:"
		grep -v '^handshakes' "$out" | head -n 8 | sed 's/^/    /' >&2
	fi
}

warmup() {
	[ "$BENCH_WARMUP" -gt 0 ] || return 0
	env "${CUR_ENV[@]}" "${PIN_WRK[@]}" wrk -t1 -c"$BENCH_CONNS" -d"${BENCH_WARMUP}s" \
		"$CUR_SCHEME://127.0.0.1:$CUR_PORT/" >/dev/null 2>&1 &
	WRK_PID=$!
	wait "$WRK_PID"
	WRK_PID=""
}

# ------------------------------------------------------------------ run
nfig=3
est=$(( ${#PROXIES[@]} * BENCH_RUNS * (nfig * BENCH_SECS + BENCH_WARMUP + 1) ))
TLS_PROXIES=()
for p in "${PROXIES[@]}"; do tls_wanted "$p" && TLS_PROXIES+=("$p"); done
tls_note=""
if [ ${#TLS_PROXIES[@]} -gt 0 ]; then
	est=$(( est + ${#TLS_PROXIES[@]} * BENCH_RUNS * (3 * BENCH_SECS + BENCH_WARMUP + 1) ))
	tls_note=" | TLS (${TLS_PROXIES[*]}): full and resumed handshakes, https c${BENCH_CONNS}"
fi
log "bench: ${PROXIES[*]} | ${BENCH_RUNS} runs x ${BENCH_SECS}s | c${BENCH_CONNS}, c${BENCH_CONNS_HIGH}, close c${BENCH_CONNS}$tls_note | ~${est}s"
log "bench: $PIN_NOTE; backends on 127.0.0.1:$P1,$P2,$P3; proxies on :$PROXY_PORT; nofile $NOFILE"

start_backends || { warn "the nginx backends did not start"; exit 1; }
T0=$(date +%s)

died_check() {
	if [ -n "$CUR_PID" ] && ! proc_alive "$CUR_PID"; then
		warn "$1 died during the runs; last lines of its log:"
		tail -n 20 "$CUR_LOG" >&2 2>/dev/null
	fi
}

FAILED=" "       # proxies that did not start (plain HTTP)
TLS_FAILED=" "   # proxies that did not start with TLS
for round in $(seq 1 "$BENCH_RUNS"); do
	log "round $round/$BENCH_RUNS"
	for proxy in "${PROXIES[@]}"; do
		case $FAILED in *" $proxy "*) ;; *)
			if start_proxy "$proxy"; then
				warmup
				run_wrk "$proxy" ka "$round" "$BENCH_CONNS"
				run_wrk "$proxy" ka_high "$round" "$BENCH_CONNS_HIGH"
				run_wrk "$proxy" close "$round" "$BENCH_CONNS" -H 'Connection: close'
				died_check "$proxy"
				stop_proxy
			else
				warn "$proxy failed to start; no further runs for it"
				FAILED="$FAILED$proxy "
			fi ;;
		esac
		tls_wanted "$proxy" || continue
		case $TLS_FAILED in *" $proxy "*) continue ;; esac
		if ! start_proxy "$proxy" tls; then
			warn "$proxy failed to start with TLS; no further TLS runs for it"
			TLS_FAILED="$TLS_FAILED$proxy "
			continue
		fi
		warmup
		if [ -n "$TLSLOAD" ]; then
			run_tlsload "$proxy" tls_full "$round" full
			run_tlsload "$proxy" tls_resume "$round" resume
		fi
		run_wrk "$proxy" tls_ka "$round" "$BENCH_CONNS"
		died_check "$proxy (TLS)"
		stop_proxy
	done
done
stop_pid "$BACKENDS_PID"; forget_pid "$BACKENDS_PID"
T1=$(date +%s)

# ------------------------------------------------------------------ report
# median PROXY FIG COLUMN(4=rate,5=p99,6=errors,7=CPU 0 busy %,8=resumed %) ; errors are summed instead
median() {
	awk -F'\t' -v p="$1" -v f="$2" -v c="$3" '
		$1 == p && $2 == f && $c != "NA" { print $c }' "$RESULTS" | sort -g |
	awk '{ v[NR] = $1 } END {
		if (NR == 0) { print "NA"; exit }
		if (NR % 2) m = v[(NR + 1) / 2]; else m = (v[NR / 2] + v[NR / 2 + 1]) / 2
		print m }'
}
errsum() {
	awk -F'\t' -v p="$1" -v f="$2" '$1 == p && $2 == f { s += $6; n++ } END { if (n) print s; else print "NA" }' "$RESULTS"
}

# value PROXY ROWKIND FIG ; FIG "tls" (errors of all TLS figures) or tls_*: a TLS figure
value() {
	local p=$1 kind=$2 fig=$3 v
	if [ "$p" = lb ] && [ -n "$LB_SKIP_REASON" ]; then echo skipped; return; fi
	want "$p" || { echo "-"; return; }
	case $fig in tls*)
		if [ "$p" = lb ] && [ -n "$LB_TLS_SKIP_REASON" ]; then echo skipped; return; fi
		case $fig in tls_full|tls_resume) [ -n "$TLSLOAD" ] || { echo "n/a"; return; } ;; esac ;;
	esac
	case $kind in
	rps) v=$(median "$p" "$fig" 4); [ "$v" = NA ] || v=$(awk -v x="$v" 'BEGIN { printf "%.0f", x }') ;;
	p99) v=$(median "$p" "$fig" 5); [ "$v" = NA ] || v=$(awk -v x="$v" 'BEGIN { printf "%.2f", x }') ;;
	cpu) v=$(median "$p" "$fig" 7); [ "$v" = NA ] || v=$(awk -v x="$v" 'BEGIN { printf "%.0f", x }') ;;
	res) v=$(median "$p" "$fig" 8); [ "$v" = NA ] || v=$(awk -v x="$v" 'BEGIN { printf "%.1f", x }') ;;
	err) if [ "$fig" = tls ]; then
		v=$(awk -F'\t' -v p="$p" '$1 == p && $2 ~ /^tls_/ { s += $6; n++ } END { if (n) print s; else print "NA" }' "$RESULTS")
	     else v=$(errsum "$p" "$fig"); fi ;;
	esac
	[ "$v" = NA ] && v="n/a"
	echo "$v"
}
ratio() {
	case "$1$2" in *[!0-9.]*|"") echo "-"; return ;; esac
	awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "-"; else printf "%.2f\n", a / b }'
}

ROWS=(
	"rps|ka|keep-alive req/s, ${BENCH_CONNS} conns"
	"p99|ka|keep-alive p99 ms, ${BENCH_CONNS} conns"
	"rps|ka_high|keep-alive req/s, ${BENCH_CONNS_HIGH} conns"
	"p99|ka_high|keep-alive p99 ms, ${BENCH_CONNS_HIGH} conns"
	"rps|close|new conn per request req/s, ${BENCH_CONNS} conns"
	"p99|close|new conn per request p99 ms, ${BENCH_CONNS} conns"
	"err|ka|errors, keep-alive ${BENCH_CONNS} conns (all runs)"
	"err|ka_high|errors, keep-alive ${BENCH_CONNS_HIGH} conns (all runs)"
	"err|close|errors, new conn per request (all runs)"
)

TABLE="$TMP/table.tsv"
: > "$TABLE"
for row in "${ROWS[@]}"; do
	IFS='|' read -r kind fig label <<< "$row"
	vl=$(value lb "$kind" "$fig"); vh=$(value haproxy "$kind" "$fig")
	vn=$(value nginx "$kind" "$fig"); vd=$(value direct "$kind" "$fig")
	if [ "$kind" = err ]; then rh="-"; rn="-"; else rh=$(ratio "$vl" "$vh"); rn=$(ratio "$vl" "$vn"); fi
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$vl" "$vh" "$vn" "$vd" "$rh" "$rn" >> "$TABLE"
done

# TLS: shown when it was on and lb, HAProxy or nginx was chosen (even when lb's rows were skipped)
SHOW_TLS=0
if [ "$BENCH_TLS" = 1 ] && { want lb || want haproxy || want nginx; }; then SHOW_TLS=1; fi
TLS_ROWS=(
	"rps|tls_full|full handshakes/s, ${BENCH_CONNS} conns"
	"cpu|tls_full|CPU 0 busy %, full handshakes"
	"rps|tls_resume|resumed handshakes/s, ${BENCH_CONNS} conns"
	"cpu|tls_resume|CPU 0 busy %, resumed handshakes"
	"res|tls_resume|sessions offered and resumed %"
	"rps|tls_ka|HTTPS keep-alive req/s, ${BENCH_CONNS} conns"
	"p99|tls_ka|HTTPS keep-alive p99 ms, ${BENCH_CONNS} conns"
	"cpu|tls_ka|CPU 0 busy %, HTTPS keep-alive"
	"err|tls|errors, all TLS runs"
)
TLS_TABLE="$TMP/tls-table.tsv"
: > "$TLS_TABLE"
if [ "$SHOW_TLS" = 1 ]; then
	for row in "${TLS_ROWS[@]}"; do
		IFS='|' read -r kind fig label <<< "$row"
		vl=$(value lb "$kind" "$fig"); vh=$(value haproxy "$kind" "$fig"); vn=$(value nginx "$kind" "$fig")
		case $kind in rps|p99) rh=$(ratio "$vl" "$vh"); rn=$(ratio "$vl" "$vn") ;; *) rh="-"; rn="-" ;; esac
		printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$vl" "$vh" "$vn" "$rh" "$rn" >> "$TLS_TABLE"
	done
fi

HAPROXY_V=$(haproxy -v 2>&1 | head -n1)
NGINX_VER=$(nginx -v 2>&1 | head -n1)
WRK_V=$(wrk -v 2>&1 | head -n1)
LB_V="not run"
if [ -z "$LB_SKIP_REASON" ] && want lb; then
	LB_V=$(sed -n 's/^#define LB_VERSION "\(.*\)"/lb \1/p' "$ROOT_DIR/lb.h" 2>/dev/null)
	[ -n "$LB_V" ] || LB_V="lb ($LB_BIN)"
	if command -v git >/dev/null 2>&1; then
		rev=$(git -C "$ROOT_DIR" rev-parse --short HEAD 2>/dev/null) && LB_V="$LB_V, git $rev"
	fi
fi
CPU_MODEL=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null)
KERNEL=$(uname -sr)
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')

# Terminal table
echo
printf '%-42s %10s %10s %10s %10s %10s %9s\n' figure lb HAProxy nginx direct lb/HAProxy lb/nginx
while IFS=$'\t' read -r label vl vh vn vd rh rn; do
	printf '%-42s %10s %10s %10s %10s %10s %9s\n' "$label" "$vl" "$vh" "$vn" "$vd" "$rh" "$rn"
done < "$TABLE"
echo
[ -n "$LB_SKIP_REASON" ] && echo "lb skipped: $LB_SKIP_REASON"
[ "$FAILED" != " " ] && echo "failed to start:$FAILED"
if [ "$SHOW_TLS" = 1 ]; then
	echo
	printf '%-42s %10s %10s %10s %10s %9s\n' "TLS figure" lb HAProxy nginx lb/HAProxy lb/nginx
	while IFS=$'\t' read -r label vl vh vn rh rn; do
		printf '%-42s %10s %10s %10s %10s %9s\n' "$label" "$vl" "$vh" "$vn" "$rh" "$rn"
	done < "$TLS_TABLE"
	echo
	[ -n "$LB_TLS_SKIP_REASON" ] && echo "lb's TLS rows skipped: $LB_TLS_SKIP_REASON"
	[ -n "$TLSLOAD_SKIP_REASON" ] && echo "no handshake figures: $TLSLOAD_SKIP_REASON"
	[ -n "$TLSLOAD_NOTE" ] && echo "$TLSLOAD_NOTE"
	[ "$TLS_FAILED" != " " ] && echo "failed to start with TLS:$TLS_FAILED"
fi
echo "medians of $BENCH_RUNS runs x ${BENCH_SECS}s; $PIN_NOTE; took $((T1 - T0))s"

# Markdown
{
	echo "# lb benchmark"
	echo
	echo "Generated by \`bench/run.sh\` on $DATE. Medians of $BENCH_RUNS runs of ${BENCH_SECS}s each;"
	echo "runs alternate between proxies (round 1: all proxies, round 2: all proxies, ...)."
	echo "Every proxy runs one worker / thread in front of the same three nginx backends that answer"
	echo "\`200 ok\`; \"direct\" is wrk straight to one backend, the no-proxy limit."
	echo "Ratios above 1 mean lb is higher (better for req/s, worse for latency)."
	echo
	echo "| figure | lb | HAProxy | nginx | direct | lb/HAProxy | lb/nginx |"
	echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
	while IFS=$'\t' read -r label vl vh vn vd rh rn; do
		echo "| $label | $vl | $vh | $vn | $vd | $rh | $rn |"
	done < "$TABLE"
	echo
	[ -n "$LB_SKIP_REASON" ] && { echo "lb was skipped: $LB_SKIP_REASON."; echo; }
	[ "$FAILED" != " " ] && { echo "Failed to start:$FAILED(see the script's output)."; echo; }
	echo "Errors are wrk's socket errors (connect, read, write, timeout) plus non-2xx/3xx responses."
	echo
	if [ "$SHOW_TLS" = 1 ]; then
		echo "## TLS"
		echo
		echo "The same proxies terminating TLS (\`bench/haproxy-tls.cfg.in\`, \`bench/nginx-proxy-tls.conf.in\`,"
		echo "\`bench/lb-tls.ini.in\`): one self-signed ECDSA P-256 certificate for all (one PEM file, certificate"
		echo "then key), TLS 1.2, ECDHE-ECDSA-AES128-GCM-SHA256, P-256 ECDHE, one worker each on CPU 0, the load on CPU 1."
		echo "Resumption is session-ID only: lb has no session tickets, so tickets are off for HAProxy"
		echo "(\`no-tls-tickets\`) and nginx (\`ssl_session_tickets off\`) too, and the client never asks for one."
		echo "Handshakes come from \`bench/tlsload.c\` ($BENCH_CONNS connections in flight, each: connect, handshake,"
		echo "close_notify and FIN, the server's close; no HTTP request), the keep-alive figure from wrk over https."
		echo "\"CPU 0 busy %\" is the proxy's CPU (user, system, and the kernel's network work on CPU 0): well"
		echo "under 100 means that figure was limited by something else than the proxy (the client, the backends)."
		echo
		echo "| figure | lb | HAProxy | nginx | lb/HAProxy | lb/nginx |"
		echo "| --- | ---: | ---: | ---: | ---: | ---: |"
		while IFS=$'\t' read -r label vl vh vn rh rn; do
			echo "| $label | $vl | $vh | $vn | $rh | $rn |"
		done < "$TLS_TABLE"
		echo
		[ -n "$LB_TLS_SKIP_REASON" ] && { echo "lb's TLS rows were skipped: $LB_TLS_SKIP_REASON"; echo; }
		[ -n "$TLSLOAD_SKIP_REASON" ] && { echo "No handshake figures: $TLSLOAD_SKIP_REASON."; echo; }
		[ -n "$TLSLOAD_NOTE" ] && { echo "Note: $TLSLOAD_NOTE."; echo; }
		[ "$TLS_FAILED" != " " ] && { echo "Failed to start with TLS:$TLS_FAILED(see the script's output)."; echo; }
		echo "TLS errors: tlsload's failed connections and handshakes (a server that does not close within 5 s"
		echo "of the close_notify is reported by tlsload, not counted), plus wrk's errors as above."
		echo
	fi
	echo "## Setup"
	echo
	echo "- machine: $NCPU CPUs ($CPU_MODEL), $KERNEL"
	echo "- pinning: $PIN_NOTE"
	echo "- load: \`wrk -t1 -c${BENCH_CONNS} -d${BENCH_SECS}s --latency\`, the same with \`-c${BENCH_CONNS_HIGH}\`,"
	echo "  and \`-c${BENCH_CONNS} -H 'Connection: close'\` for a new connection per request; open-files limit $NOFILE"
	echo "- versions: $HAPROXY_V; $NGINX_VER; $WRK_V; $LB_V"
	echo "- configs: \`bench/haproxy.cfg.in\`, \`bench/nginx-proxy.conf.in\`, \`bench/nginx-backends.conf.in\`, \`bench/lb.ini.in\`"
	if [ "$SHOW_TLS" = 1 ]; then
		echo "- TLS load: \`tlsload -c${BENCH_CONNS} -d${BENCH_SECS} -m full\` and \`-m resume\` (bench/tlsload.c: BearSSL client,"
		echo "  OpenSSL's P-256 arithmetic, the server's signature not checked, so that one client CPU outruns"
		echo "  one proxy CPU), \`wrk -t1 -c${BENCH_CONNS} -d${BENCH_SECS}s --latency https://...\` with OPENSSL_CONF"
		echo "  offering only TLS 1.2, ECDHE-ECDSA-AES128-GCM-SHA256 and P-256; $(openssl version 2>/dev/null)"
	fi
	echo
	echo "## Raw runs"
	echo
	echo "Rate is req/s, or handshakes/s for tls_full and tls_resume."
	echo
	echo "| proxy | figure | run | rate | p99 ms | errors | CPU 0 busy % | resumed % |"
	echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
	while IFS=$'\t' read -r p f r rps p99 e cpu res; do
		echo "| $p | $f | $r | $rps | $p99 | $e | $cpu | $res |"
	done < "$RESULTS"
} > "$BENCH_OUT"
echo "wrote ${BENCH_OUT#"$ORIG_PWD"/}"

[ "$FAILED" = " " ] && [ "$TLS_FAILED" = " " ]
