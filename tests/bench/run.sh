#!/usr/bin/env bash
# tests/bench/run.sh — compare lb with HAProxy and nginx (one worker each) in front of three nginx
# backends, plus "direct" (wrk straight to one backend) as the no-proxy limit; then the same
# proxies terminating TLS (BENCH_TLS=1, the default).
#
#   make bench            # or: bash tests/bench/run.sh
#
# Environment:
#   LB_BIN        lb binary (default ./lb); skipped with a message when missing
#   LB_OPENSSL_BIN  lb built with OpenSSL 3 (default ./lb-openssl, `make lb-openssl`); only the tls13
#                 figure runs it; its rows say skipped (with the reason) when it is missing
#   BENCH_ONLY    comma list out of lb,lb-openssl,haproxy,nginx,direct (default: all five)
#   BENCH_SECS    seconds per wrk run (default 10, as the issue measured its reference figures)
#   BENCH_RUNS    runs per proxy and figure, alternating between proxies (default 3)
#   BENCH_WARMUP  seconds of warm-up after each proxy start (default 1, 0 = none)
#   BENCH_CONNS   connections of the small keep-alive run and of the TLS runs (default 50)
#   BENCH_CONNS_HIGH  connections of the large keep-alive run (default 1000)
#   BENCH_TLS     1 (default): also the TLS figures below; 0: plain HTTP only
#   BENCH_OUT     Markdown report (default tests/bench/results.md)
#   BENCH_KEEP_TMP=1  keep the temp dir (configs, logs, raw wrk output)
#   BENCH_FIGS    comma list of figures (default: all): http (keep-alive and new-connection req/s),
#                 tls (handshakes, HTTPS), idle (memory per idle connection), active (50k active
#                 connections), l4 (TCP throughput), callgrind (instructions per request), size
#                 (binary sizes), ceiling (BearSSL's full-handshake ceiling against lb's TLS figure),
#                 h2 (HTTP/2 over TLS with h2load), tls13 (TLS 1.3 and 1.2 handshakes with an OpenSSL
#                 client, tickets, TLS 1.3 keep-alive; lb-openssl beside lb)
#   BENCH_IDLE_N  comma list of idle connection counts (default 10000,50000)
#   BENCH_ACTIVE_CONNS, BENCH_ACTIVE_SECS, BENCH_ACTIVE_MS  active figure: connections (50000),
#                 seconds measured after all are open (20), milliseconds between two requests of one
#                 connection (5000: 50,000 connections make 10,000 requests/s, about half of what one
#                 proxy CPU serves; 1000 would offer 50,000/s, more than any of the three can do on
#                 CPU 0, and measures an overload instead)
#   BENCH_PROCS   lb and nginx workers when one process cannot hold the connections (default 4)
#   BENCH_L4_BYTES  bytes of the L4 transfer (default 4 GiB)
#   BENCH_CG_REQS, BENCH_CG_SMALL  callgrind: requests of the measured run (20000) and of the
#                 start-up run subtracted from it (1000)
#   BENCH_CEIL_SECS  seconds of each tests/bench/tlsceil.c run (default 3)
#   BENCH_H2_CONNS, BENCH_H2_STREAMS  h2 figure: h2load connections (default 50, as BENCH_CONNS) and
#                 concurrent streams per connection (-m, default 10)
#   BENCH_TLS_IDLE_N  h2 and tls13 figures: idle TLS connections for the memory rows (default 1000;
#                 tests/bench/tlsidle.py, one Python process: keep it under ~5000)
#
# The proxy runs on CPU 0 and wrk on CPU 1 (taskset); the backends are not pinned.
# Every process the script starts is stopped on exit (by PID / its own process group).
#
# TLS (BENCH_TLS=1): each proxy is started a second time, from tests/bench/*-tls.*.in, terminating TLS
# with the same self-signed ECDSA P-256 certificate (made here with openssl, one PEM file: the
# certificate then the key), TLS 1.2 only, ECDHE-ECDSA-AES128-GCM-SHA256 only, P-256 ECDHE, one
# worker, and a session-ID cache without session tickets (lb has no tickets, so they are off for
# HAProxy and nginx too). Three figures, the load on CPU 1 like wrk:
#   full handshakes/s     tests/bench/tlsload.c -m full: 50 connections in flight, each connect, full
#                         handshake, close_notify and FIN, the server's close, again; no HTTP request
#   resumed handshakes/s  tests/bench/tlsload.c -m resume: the same with session-ID resumption (each
#                         connection offers the session of the one before it)
#   HTTPS keep-alive      wrk -c50 over https (the client offers only the cipher and group above,
#                         through an OPENSSL_CONF file)
# Why tlsload (built here from tests/bench/tlsload.c with BearSSL and libcrypto) and not the stock tools:
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
#
# The other figures (BENCH_FIGS; each section of the report says how it was measured):
#   idle       Pss (and RSS) of the proxy's processes before and after N connections that each made
#              one request and stay idle (tests/bench/connload.c), per connection; several processes
#              where one cannot hold N within the open-files cap (lb and nginx workers, HAProxy
#              processes sharing the port with SO_REUSEPORT)
#   active     BENCH_ACTIVE_CONNS connections each making one request every BENCH_ACTIVE_MS:
#              errors, p99, the proxy's peak memory
#   l4         one BENCH_L4_BYTES TCP stream (tests/bench/tcpxfer.c) through lb mode = tcp, HAProxy mode
#              tcp, nginx stream {} (libnginx-mod-stream), and direct
#   callgrind  instructions per proxied request under valgrind --tool=callgrind
#   size       lb's binary (the normal build, and static builds) next to HAProxy's and nginx's
#   ceiling    tests/bench/tlsceil.c: the asymmetric crypto of one full handshake with BearSSL, in a loop
#              on CPU 0; lb's full handshakes per CPU-0 second (tls figure) as a share of it
#   h2         issue 19: h2load (nghttp2-client) over TLS, ALPN h2, against lb (its defaults: a TLS
#              listener offers h2), HAProxy (`alpn h2,http/1.1`) and nginx (`listen ... ssl http2`),
#              one worker each, the TLS settings above: req/s, req per proxy CPU-second, p99 (from
#              h2load's --log-file: h2load itself prints only min/max/mean/sd), errors; then Pss/RSS
#              per idle HTTP/2 connection (tests/bench/tlsidle.py: BENCH_TLS_IDLE_N connections, one
#              request each, then idle). lb's rows say skipped when `lb -t` rejects `http2 = on` or
#              ALPN does not give h2.
#   tls13      issue 20: tests/bench/ossload.c (OpenSSL 3 client) full handshakes TLS 1.3 and 1.2
#              (P-256, and X25519+P-256 for 1.3), resumed by ticket (1.3 and 1.2) and by session ID
#              (1.2), handshakes per proxy CPU-second; TLS 1.3 keep-alive req/s (wrk); memory per idle
#              TLS connection; for lb-openssl, lb (BearSSL: the TLS 1.2 session-ID rows only),
#              HAProxy and nginx with TLS 1.2 and 1.3 and tickets on (haproxy-tls13.cfg.in,
#              nginx-proxy-tls13.conf.in; lb-openssl with its defaults, lb-tls.ini.in)
# The tls figure also runs full handshakes with tlsload -g x25519 (X25519 and P-256 offered, as
# browsers do), beside -g p256, and reports the share of handshakes the server made with X25519.

set -u -o pipefail

ORIG_PWD=$PWD
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT_DIR=$(cd "$SCRIPT_DIR/../.." && pwd)

LB_BIN=${LB_BIN:-./lb}
case $LB_BIN in
/*) ;;
*/*) LB_BIN="$ORIG_PWD/${LB_BIN#./}" ;;
*) LB_BIN_PATH=$(command -v "$LB_BIN" 2>/dev/null || true)
   if [ -n "$LB_BIN_PATH" ]; then LB_BIN=$LB_BIN_PATH; else LB_BIN="$ORIG_PWD/$LB_BIN"; fi ;;
esac
LB_OPENSSL_BIN=${LB_OPENSSL_BIN:-./lb-openssl}
case $LB_OPENSSL_BIN in
/*) ;;
*) LB_OPENSSL_BIN="$ORIG_PWD/${LB_OPENSSL_BIN#./}" ;;
esac
BENCH_ONLY=${BENCH_ONLY:-lb,lb-openssl,haproxy,nginx,direct}
BENCH_SECS=${BENCH_SECS:-10}
BENCH_RUNS=${BENCH_RUNS:-3}
BENCH_WARMUP=${BENCH_WARMUP:-1}
BENCH_CONNS=${BENCH_CONNS:-50}
BENCH_CONNS_HIGH=${BENCH_CONNS_HIGH:-1000}
BENCH_TLS=${BENCH_TLS:-1}
BENCH_OUT=${BENCH_OUT:-$SCRIPT_DIR/results.md}
case $BENCH_OUT in /*) ;; *) BENCH_OUT="$ORIG_PWD/$BENCH_OUT" ;; esac
ALL_FIGS=http,tls,idle,active,l4,callgrind,size,ceiling,h2,tls13
BENCH_FIGS=${BENCH_FIGS:-$ALL_FIGS}
BENCH_IDLE_N=${BENCH_IDLE_N:-10000,50000}
BENCH_ACTIVE_CONNS=${BENCH_ACTIVE_CONNS:-50000}
BENCH_ACTIVE_SECS=${BENCH_ACTIVE_SECS:-20}
BENCH_ACTIVE_MS=${BENCH_ACTIVE_MS:-5000}
BENCH_PROCS=${BENCH_PROCS:-4}
BENCH_L4_BYTES=${BENCH_L4_BYTES:-4294967296}
BENCH_CG_REQS=${BENCH_CG_REQS:-20000}
BENCH_CG_SMALL=${BENCH_CG_SMALL:-1000}
BENCH_CEIL_SECS=${BENCH_CEIL_SECS:-3}
BENCH_H2_CONNS=${BENCH_H2_CONNS:-$BENCH_CONNS}
BENCH_H2_STREAMS=${BENCH_H2_STREAMS:-10}
BENCH_TLS_IDLE_N=${BENCH_TLS_IDLE_N:-1000}

for v in BENCH_SECS BENCH_RUNS BENCH_WARMUP BENCH_CONNS BENCH_CONNS_HIGH BENCH_TLS BENCH_ACTIVE_CONNS \
         BENCH_ACTIVE_SECS BENCH_ACTIVE_MS BENCH_PROCS BENCH_L4_BYTES BENCH_CG_REQS BENCH_CG_SMALL BENCH_CEIL_SECS \
         BENCH_H2_CONNS BENCH_H2_STREAMS BENCH_TLS_IDLE_N; do
	case ${!v} in ''|*[!0-9]*) echo "bench: $v must be a whole number (got '${!v}')" >&2; exit 2 ;; esac
done
if [ "$BENCH_SECS" -lt 1 ] || [ "$BENCH_RUNS" -lt 1 ]; then echo "bench: BENCH_SECS and BENCH_RUNS must be >= 1" >&2; exit 2; fi
case $BENCH_TLS in 0|1) ;; *) echo "bench: BENCH_TLS must be 0 or 1 (got '$BENCH_TLS')" >&2; exit 2 ;; esac
for v in ${BENCH_IDLE_N//,/ }; do
	case $v in ''|*[!0-9]*|0) echo "bench: BENCH_IDLE_N must be a comma list of counts (got '$BENCH_IDLE_N')" >&2; exit 2 ;; esac
done
for f in ${BENCH_FIGS//,/ }; do
	case ",$ALL_FIGS," in *",$f,"*) ;; *) echo "bench: BENCH_FIGS: unknown figure '$f' (use $ALL_FIGS)" >&2; exit 2 ;; esac
done
if [ "$BENCH_CG_REQS" -le "$BENCH_CG_SMALL" ] || [ "$BENCH_ACTIVE_MS" -lt 1 ] || [ "$BENCH_PROCS" -lt 1 ]; then
	echo "bench: BENCH_CG_REQS must exceed BENCH_CG_SMALL; BENCH_ACTIVE_MS and BENCH_PROCS must be >= 1" >&2; exit 2
fi
if [ "$BENCH_H2_CONNS" -lt 1 ] || [ "$BENCH_H2_STREAMS" -lt 1 ] || [ "$BENCH_TLS_IDLE_N" -lt 1 ]; then
	echo "bench: BENCH_H2_CONNS, BENCH_H2_STREAMS and BENCH_TLS_IDLE_N must be >= 1" >&2; exit 2
fi
want_fig() { case ",$BENCH_FIGS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
# BENCH_TLS=0 and a BENCH_FIGS without tls say the same
want_fig tls || BENCH_TLS=0

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

# TLS needs openssl (the certificate) and a C compiler with BearSSL (tests/bench/tlsload.c); without
# them the TLS figures are left out, the others still run.
CC=${CC:-cc}
TLS_OFF_REASON=""
if [ "$BENCH_TLS" = 1 ]; then
	if ! command -v openssl >/dev/null 2>&1; then
		TLS_OFF_REASON="openssl not found (apt-get install openssl)"
	elif ! command -v "$CC" >/dev/null 2>&1; then
		TLS_OFF_REASON="no C compiler ($CC) for tests/bench/tlsload.c"
	fi
	if [ -n "$TLS_OFF_REASON" ]; then
		warn "TLS figures off: $TLS_OFF_REASON"
		BENCH_TLS=0
	fi
fi

# ------------------------------------------------------------------ selection
want() { case ",$BENCH_ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
for p in ${BENCH_ONLY//,/ }; do
	case $p in lb|lb-openssl|haproxy|nginx|direct) ;; *) warn "BENCH_ONLY: unknown name '$p' (use lb,lb-openssl,haproxy,nginx,direct)"; exit 2 ;; esac
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
# lb-openssl (issue 20's OpenSSL 3 build): the tls13 figure only, as "lbossl" in the results
LBOSSL_SKIP_REASON=""
if want lb-openssl && want_fig tls13 && ! [ -x "$LB_OPENSSL_BIN" ]; then
	LBOSSL_SKIP_REASON="LB_OPENSSL_BIN=$LB_OPENSSL_BIN not found (the OpenSSL 3 build of issue 20: make lb-openssl)"
	log "bench: skipping lb-openssl: $LBOSSL_SKIP_REASON"
fi
[ ${#PROXIES[@]} -gt 0 ] || want lb-openssl || { warn "nothing to run"; exit 1; }
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
CLIENT_PIDS=()   # load clients of the idle and active figures

proc_alive() { kill -0 "$1" 2>/dev/null; }

# Stop one process we started: its own process group when it leads one (setsid), else the PID.
# STOP_TENTHS: how long it may take after SIGTERM (tenths of a second; longer under valgrind).
STOP_TENTHS=50
stop_pid() {
	local pid=$1 pgid
	proc_alive "$pid" || { wait "$pid" 2>/dev/null; return 0; }
	pgid=$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ')
	if [ "$pgid" = "$pid" ]; then kill -TERM -- "-$pid" 2>/dev/null; else kill -TERM "$pid" 2>/dev/null; fi
	for _ in $(seq 1 "$STOP_TENTHS"); do
		proc_alive "$pid" || break
		sleep 0.1
	done
	if proc_alive "$pid"; then
		warn "PID $pid did not stop on SIGTERM within $((STOP_TENTHS / 10))s; sending SIGKILL"
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
	for p in "${CLIENT_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
	for p in "${CLIENT_PIDS[@]}"; do wait "$p" 2>/dev/null; done
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

free_port P1 && free_port P2 && free_port P3 && free_port PROXY_PORT && free_port ADMIN_PORT &&
	free_port TCP_PORT && free_port STATUS_PORT || exit 1

# ------------------------------------------------------------------ config generation
# Temp paths of nginx modules that are compiled in (nginx-light may lack some).
NGINX_V=$(nginx -V 2>&1)
# the backends' accepted-connection counter (stub_status) gives the backend connection churn
STUB_STATUS="stub_status;"
case $NGINX_V in *--with-http_stub_status_module*) ;; *) STUB_STATUS="return 404;" ;; esac
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
	    -e "s|@ADMIN_PORT@|$ADMIN_PORT|g" -e "s|@TCP_PORT@|$TCP_PORT|g" -e "s|@WORKERS@|${WORKERS:-1}|g" \
	    -e "s|@STATUS_PORT@|$STATUS_PORT|g" -e "s|@STUB_STATUS@|$STUB_STATUS|g" \
	    -e "s|@MAXCONN@|${HAP_MAXCONN:-8000}|g" -e "s|@BACKEND_WORKERS@|${BACKEND_WORKERS:-1}|g" -e "s|@NGINX_STREAM_MODULE@|$NGINX_STREAM_MODULE|g" \
	    -e "s/@TEMP_PATHS_BACKENDS@/$tb/" -e "s/@TEMP_PATHS_PROXY@/$tp/" \
	    "$1" > "$2"
}

NGINX_STREAM_MODULE=/usr/lib/nginx/modules/ngx_stream_module.so
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
# make_cert: the bench certificate in $TMP/tls (also for the ceiling figure without TLS runs)
make_cert() {
	mkdir -p "$TMP/tls"
	[ -s "$TMP/tls/combined.pem" ] && return 0
	if ! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
		-subj /CN=bench.test -addext subjectAltName=DNS:bench.test,DNS:localhost \
		-keyout "$TMP/tls/key.pem" -out "$TMP/tls/cert.pem" >"$TMP/tls/req.log" 2>&1; then
		warn "no bench certificate: openssl req failed:"
		sed 's/^/    /' "$TMP/tls/req.log" >&2
		return 1
	fi
	cat "$TMP/tls/cert.pem" "$TMP/tls/key.pem" > "$TMP/tls/combined.pem"
}
tls_setup() {
	local out
	if ! make_cert; then
		warn "TLS figures off"
		BENCH_TLS=0
		return 0
	fi
	client_cnfs
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
		TLSLOAD_SKIP_REASON="tests/bench/tlsload.c did not build (needs libbearssl-dev, ideally libssl-dev)"
		warn "no handshake figures: $TLSLOAD_SKIP_REASON:"
		sed 's/^/    /' "$TMP/tls/cc.log" >&2
	fi
	if want lb && [ -z "$LB_SKIP_REASON" ] && ! out=$("$LB_BIN" -t -c "$TMP/lb-tls.ini" 2>&1); then
		LB_TLS_SKIP_REASON="\`lb -t\` rejects the TLS listener of tests/bench/lb-tls.ini.in: $(printf '%s' "$out" | head -n 1)"
		log "bench: skipping lb's TLS figures: $LB_TLS_SKIP_REASON"
	fi
	return 0
}
# client_cnfs: the OpenSSL client settings of wrk and h2load (OPENSSL_CONF): TLS_CLIENT_CNF offers
# what tlsload offers (TLS 1.2, ECDHE-ECDSA-AES128-GCM-SHA256, P-256, no ticket), TLS13_CLIENT_CNF
# TLS 1.3 with TLS_AES_128_GCM_SHA256 and P-256 (what ossload -v 1.3 offers)
client_cnfs() {
	mkdir -p "$TMP/tls"
	cat > "$TLS13_CLIENT_CNF" <<-'CNF'
	openssl_conf = openssl_init
	[openssl_init]
	ssl_conf = ssl_module
	[ssl_module]
	system_default = tls_client
	[tls_client]
	MinProtocol = TLSv1.3
	MaxProtocol = TLSv1.3
	Ciphersuites = TLS_AES_128_GCM_SHA256
	Groups = P-256
	CNF
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
}
TLS13_CLIENT_CNF="$TMP/tls/openssl-client13.cnf"
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

# wait_ready NAME PID PORT LOG [SCHEME]: up to READY_TENTHS/10 s (default 10) for a 200 on PORT while PID lives.
READY_TENTHS=100
wait_ready() {
	local name=$1 pid=$2 port=$3 logf=$4 scheme=${5:-http} st=""
	for _ in $(seq 1 "$READY_TENTHS"); do
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
	warn "$name did not answer 200 on $scheme port $port within $((READY_TENTHS / 10)) s (last status '${st}'); last lines of $logf:"
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

# as root, lb wants to be told to keep root for its workers
AS_ROOT=()
[ "$(id -u)" = 0 ] && AS_ROOT=(-u root)

# start_proxy NAME [tls|h2|tls13]: sets CUR_PID (empty for direct), CUR_PORT, CUR_SCHEME and CUR_LOG;
# with "tls", "h2" or "tls13" from the *-tls, *-h2 or *-tls13 configuration of HAProxy and nginx (lb
# and lbossl, lb-openssl, take lb-tls.ini for all three: lb's defaults). Returns 1 when it failed.
start_proxy() {
	local name=$1 tls=${2:-} sfx="" logf bin=$LB_BIN
	[ -n "$tls" ] && sfx=-$tls
	logf="$TMP/$name$sfx.log"
	CUR_PID=""
	CUR_PORT=$PROXY_PORT
	CUR_SCHEME=http
	CUR_ENV=()   # wrk's environment: for https, the client TLS settings
	case $tls in
	tls|h2) CUR_SCHEME=https; CUR_ENV=("OPENSSL_CONF=$TLS_CLIENT_CNF") ;;
	tls13) CUR_SCHEME=https; CUR_ENV=("OPENSSL_CONF=$TLS13_CLIENT_CNF") ;;
	esac
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
	lb|lbossl)
		[ "$name" = lbossl ] && bin=$LB_OPENSSL_BIN
		[ -n "$tls" ] && sfx=-tls
		start_bg "$logf" "${PIN_PROXY[@]}" "$bin" -c "$TMP/lb$sfx.ini" "${AS_ROOT[@]}" ;;
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

# proxy_cpu: "CPU-ticks nanoseconds" now: user + system ticks of every process of the proxy's session
# (CUR_PID leads it), and the monotonic clock; "NA" for direct (no proxy)
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
proxy_cpu() {
	[ -n "${CUR_PID:-}" ] || { echo "NA NA"; return; }
	local t p
	# the session's processes only, each read on its own: a /proc/PID/stat that vanished between the
	# listing and the read (any process of the machine, with /proc/[0-9]*/stat) must not end awk early
	t=$(for p in $(ps -o pid= -s "$CUR_PID" 2>/dev/null); do cat "/proc/$p/stat" 2>/dev/null; done |
		awk '{ sub(/^.*\) /, ""); t += $12 + $13 } END { print t + 0 }')
	echo "$t $(date +%s%N)"
}
# proxy_per_cpu A B RATE: RATE per CPU-second of the proxy between the proxy_cpu readings A and B
proxy_per_cpu() {
	awk -v a="$1" -v b="$2" -v r="$3" -v hz="$CLK_TCK" 'BEGIN { split(a, x, " "); split(b, y, " ")
		if (x[1] == "NA" || y[1] == "NA" || r == "NA" || y[1] == x[1]) { print "NA"; exit }
		busy = (y[1] - x[1]) / hz / ((y[2] - x[2]) / 1e9)
		printf "%.0f\n", r / busy }'
}

# backend_accepts: connections the nginx backends have accepted so far (stub_status `accepts`,
# every port, this query's own connection included), or NA
backend_accepts() {
	local out
	out=$( (exec 3<>"/dev/tcp/127.0.0.1/$STATUS_PORT" && printf 'GET / HTTP/1.0\r\nHost: b\r\n\r\n' >&3 &&
		timeout 2 cat <&3) 2>/dev/null)
	awk '/^ *[0-9]+ +[0-9]+ +[0-9]+ *\r?$/ { print $1; f = 1; exit } END { if (!f) print "NA" }' <<< "$out"
}
# churn A0 A1 WRKOUT: new backend connections per 1,000 requests of the wrk run in WRKOUT, from
# backend_accepts before (A0) and after (A1; less its own query's connection)
churn() {
	awk -v a="$1" -v b="$2" '/ requests in / { n = $1 } END {
		if (a == "NA" || b == "NA" || n + 0 == 0) print "NA"; else printf "%.2f\n", 1000 * (b - a - 1) / n }' "$3"
}

# RESULTS: proxy, figure, round, rate (req/s or handshakes/s), p99 ms, errors, CPU 0 busy %,
# resumed % (of the handshakes that offered a session; NA but for the resumption runs),
# rate per CPU-second of the proxy's own processes (NA for direct and the handshake runs),
# backend connection churn: new backend connections per 1,000 requests (wrk runs; NA otherwise)
RESULTS="$TMP/results.tsv"
: > "$RESULTS"
# XRES: proxy, figure, round, metric, value (NA when not measured)
XRES="$TMP/extra.tsv"
: > "$XRES"
xadd() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >> "$XRES"; }
# run_wrk PROXY FIGURE ROUND CONNS [extra wrk args]
run_wrk() {
	local proxy=$1 fig=$2 round=$3 conns=$4; shift 4
	local out="$TMP/wrk-$proxy-$fig-$round.txt" rps p99 err c0 c1 cpu pc0 pc1 per a0 a1 ch
	a0=$(backend_accepts)
	c0=$(cpu0_snap)
	pc0=$(proxy_cpu)
	# In the background and waited for, so that a signal to the script stops it at once.
	env "${CUR_ENV[@]}" "${PIN_WRK[@]}" wrk -t1 -c"$conns" -d"${BENCH_SECS}s" --timeout 5s --latency "$@" \
		"$CUR_SCHEME://127.0.0.1:$CUR_PORT/" > "$out" 2>&1 &
	WRK_PID=$!
	wait "$WRK_PID"
	WRK_PID=""
	pc1=$(proxy_cpu)
	c1=$(cpu0_snap)
	a1=$(backend_accepts)
	cpu=$(cpu0_pct "$c0" "$c1")
	read -r rps p99 err < <(parse_wrk "$out")
	per=$(proxy_per_cpu "$pc0" "$pc1" "$rps")
	ch=$(churn "$a0" "$a1" "$out")
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$proxy" "$fig" "$round" "$rps" "$p99" "$err" "$cpu" NA "$per" \
		"$ch" >> "$RESULTS"
	printf '  %-8s %-10s run %d: %10s req/s  p99 %8s ms  errors %s  CPU0 %s%%  per proxy CPU-s %s  new backend conns/1k req %s\n' \
		"$proxy" "$fig" "$round" "$rps" "$p99" "$err" "$cpu" "$per" "$ch"
	if [ "$rps" = NA ]; then
		warn "could not parse wrk output ($out):"
		sed 's/^/    /' "$out" >&2
	fi
}

# run_hs PROXY FIGURE ROUND KIND(full|resume) CLIENT ARGS...: handshakes against CUR_PORT with
# tests/bench/tlsload.c or ossload.c (both print "handshakes N offered N resumed N errors N ...");
# the rate per proxy CPU-second goes to column 9, the share of full handshakes made with X25519
# (tlsload -g x25519) to XRES as x25519_pct
run_hs() {
	local proxy=$1 fig=$2 round=$3 kind=$4; shift 4
	local out="$TMP/hs-$proxy-$fig-$round.txt" c0 c1 cpu rate err res pct xp pc0 pc1 per xnote
	c0=$(cpu0_snap)
	pc0=$(proxy_cpu)
	"${PIN_WRK[@]}" "$@" -c "$BENCH_CONNS" -d "$BENCH_SECS" 127.0.0.1 "$CUR_PORT" > "$out" 2>&1 &
	WRK_PID=$!
	wait "$WRK_PID"
	WRK_PID=""
	pc1=$(proxy_cpu)
	c1=$(cpu0_snap)
	cpu=$(cpu0_pct "$c0" "$c1")
	# "handshakes N offered N resumed N errors N secs S rate R [x25519 N]" -> rate errors resumed
	# resumed%-of-offered x25519%-of-full
	read -r rate err res pct xp < <(awk '$1 == "handshakes" { for (i = 1; i < NF; i += 2) v[$i] = $(i + 1)
		full = v["handshakes"] - v["offered"]
		printf "%s %s %s %s %s\n", v["rate"], v["errors"], v["resumed"],
			(v["offered"] > 0 ? sprintf("%.1f", 100 * v["resumed"] / v["offered"]) : "NA"),
			(v["x25519"] != "" && full > 0 ? sprintf("%.1f", 100 * v["x25519"] / full) : "NA"); f = 1 }
		END { if (!f) print "NA 0 NA NA NA" }' "$out")
	[ "$kind" = resume ] || pct=NA
	per=$(proxy_per_cpu "$pc0" "$pc1" "$rate")
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$proxy" "$fig" "$round" "$rate" NA "$err" "$cpu" "$pct" \
		"$per" NA >> "$RESULTS"
	xnote=""
	if [ "$xp" != NA ]; then
		xadd "$proxy" "$fig" "$round" x25519_pct "$xp"
		xnote="  X25519 $xp%"
	fi
	printf '  %-8s %-11s run %d: %10s hs/s   resumed %5s%%  errors %s  CPU0 %s%%  per proxy CPU-s %s%s\n' \
		"$proxy" "$fig" "$round" "$rate" "$pct" "$err" "$cpu" "$per" "$xnote"
	if [ "$rate" = NA ]; then
		warn "could not parse the output of ${1##*/} ($out):"
		sed 's/^/    /' "$out" >&2
	elif [ "$err" != 0 ] || { [ "$kind" = full ] && [ "$res" != 0 ]; }; then
		warn "$proxy $fig: $err errors, $res resumed; ${1##*/} said:"
		grep -v '^handshakes' "$out" | head -n 8 | sed 's/^/    /' >&2
	fi
}
# run_tlsload PROXY FIGURE ROUND MODE(full|resume) [-g p256|x25519]: tlsload's handshakes
run_tlsload() {
	run_hs "$1" "$2" "$3" "$4" "$TLSLOAD" -m "$4" "${@:5}"
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
est=0
want_fig http && est=$(( ${#PROXIES[@]} * BENCH_RUNS * (nfig * BENCH_SECS + BENCH_WARMUP + 1) ))
TLS_PROXIES=()
for p in "${PROXIES[@]}"; do tls_wanted "$p" && TLS_PROXIES+=("$p"); done
tls_note=""
if [ ${#TLS_PROXIES[@]} -gt 0 ]; then
	est=$(( est + ${#TLS_PROXIES[@]} * BENCH_RUNS * (4 * BENCH_SECS + BENCH_WARMUP + 1) ))
	tls_note=" | TLS (${TLS_PROXIES[*]}): full and resumed handshakes, https c${BENCH_CONNS}"
fi
http_note="c${BENCH_CONNS}, c${BENCH_CONNS_HIGH}, close c${BENCH_CONNS}"
want_fig http || http_note="no http"
log "bench: ${PROXIES[*]} | ${BENCH_RUNS} runs x ${BENCH_SECS}s | $http_note$tls_note | figures $BENCH_FIGS | ~${est}s + the other figures"
log "bench: $PIN_NOTE; backends on 127.0.0.1:$P1,$P2,$P3; proxies on :$PROXY_PORT; nofile $NOFILE"

T0=$(date +%s)
BACKENDS_PID=""
if want_fig http || [ "$BENCH_TLS" = 1 ] || want_fig idle || want_fig active || want_fig callgrind ||
	want_fig h2 || want_fig tls13; then
	start_backends || { warn "the nginx backends did not start"; exit 1; }
fi

died_check() {
	if [ -n "$CUR_PID" ] && ! proc_alive "$CUR_PID"; then
		warn "$1 died during the runs; last lines of its log:"
		tail -n 20 "$CUR_LOG" >&2 2>/dev/null
	fi
}

FAILED=" "       # proxies that did not start (plain HTTP)
TLS_FAILED=" "   # proxies that did not start with TLS
HTTP_ROUNDS=$BENCH_RUNS
want_fig http || [ "$BENCH_TLS" = 1 ] || HTTP_ROUNDS=0
for round in $(seq 1 "$HTTP_ROUNDS"); do
	log "round $round/$BENCH_RUNS"
	for proxy in "${PROXIES[@]}"; do
		want_fig http && case $FAILED in *" $proxy "*) ;; *)
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
			run_tlsload "$proxy" tls_full_x "$round" full -g x25519
			run_tlsload "$proxy" tls_resume "$round" resume
		fi
		run_wrk "$proxy" tls_ka "$round" "$BENCH_CONNS"
		died_check "$proxy (TLS)"
		stop_proxy
	done
done
# ------------------------------------------------------------------ the other figures
X_FAILED=""   # "figure:proxy" that did not run
# xmed PROXY FIGURE METRIC: the median over the runs ("NA" when none)
xmed() {
	awk -F'\t' -v p="$1" -v f="$2" -v m="$3" '$1 == p && $2 == f && $4 == m && $5 != "NA" { print $5 }' "$XRES" |
	sort -g | awk '{ v[NR] = $1 } END {
		if (NR == 0) { print "NA"; exit }
		if (NR % 2) m = v[(NR + 1) / 2]; else m = (v[NR / 2] + v[NR / 2 + 1]) / 2
		print m }'
}
# xsum PROXY FIGURE METRIC: the sum over the runs
xsum() {
	awk -F'\t' -v p="$1" -v f="$2" -v m="$3" '$1 == p && $2 == f && $4 == m && $5 != "NA" { s += $5; n++ }
		END { if (n) print s; else print "NA" }' "$XRES"
}
# kv FILE KEY [LINE-PREFIX]: the value after KEY on the last line of FILE that starts with LINE-PREFIX
kv() {
	awk -v k="$2" -v pre="${3:-conns}" 'index($0, pre) == 1 { for (i = 1; i < NF; i++) if ($i == k) v = $(i + 1) }
		END { print (v == "" ? "NA" : v) }' "$1"
}
x_failed() { X_FAILED="$X_FAILED $1"; warn "$1 did not run (see above)"; }

# Build a C helper of tests/bench/ into $TMP: build_helper NAME [LIBS...]; prints the path, or nothing.
build_helper() {
	local name=$1; shift
	if "$CC" -O2 -Wall -Wextra -o "$TMP/$name" "$SCRIPT_DIR/$name.c" "$@" >"$TMP/$name-cc.log" 2>&1; then
		echo "$TMP/$name"
	else
		warn "could not build tests/bench/$name.c:"; sed 's/^/    /' "$TMP/$name-cc.log" >&2
	fi
}

# mem_kb PID...: "Pss Rss" in kB, summed over every process of the sessions these PIDs lead (each
# was started with setsid: lb's master and workers, nginx's master and workers, one haproxy).
# Pss shares a page between the processes that map it, so the master's pages shared with its
# workers (copy-on-write after fork) count once; RSS counts them in each process.
mem_kb() {
	local pid p a b pss=0 rss=0
	for pid in "$@"; do
		for p in $(ps -o pid= -g "$pid" 2>/dev/null); do
			read -r a b < <(awk '/^Pss:/ { x = $2 } /^Rss:/ { y = $2 } END { print x + 0, y + 0 }' \
				"/proc/$p/smaps_rollup" 2>/dev/null || echo "0 0")
			pss=$((pss + a)); rss=$((rss + b))
		done
	done
	echo "$pss $rss"
}

# Processes for N connections within the open-files cap: lb and nginx take one file per idle client
# connection (idle backend connections are pooled), so one process holds up to PROC_CONNS; HAProxy
# reserves two files per connection (maxconn = HAP_MAXCONN) and gets one process per HAP_CONNS.
PROC_CONNS=$(( NOFILE == 0 ? 15000 : (${NOFILE/unlimited/1048576} - 5000) ))
HAP_MAXCONN=$(( (${NOFILE/unlimited/1048576} - 1000) / 2 ))
HAP_CONNS=$(( HAP_MAXCONN * 9 / 10 ))
CLIENT_CONNS=12500   # connections per tests/bench/connload.c process
procs_for() {
	local name=$1 n=$2 k
	if [ "$name" = haproxy ]; then echo $(( (n + HAP_CONNS - 1) / HAP_CONNS )); return; fi
	[ "$n" -le "$PROC_CONNS" ] && { echo 1; return; }
	k=$(( (n * 5 / 4 + PROC_CONNS - 1) / PROC_CONNS ))   # a quarter over the mean: SO_REUSEPORT is not exact
	[ "$k" -lt "$BENCH_PROCS" ] && k=$BENCH_PROCS
	echo "$k"
}

# start_many NAME PROCS: the *-many configuration (idle, active) with PROCS lb workers, nginx
# workers or haproxy processes; sets CUR_PIDS and CUR_LOG. Returns 1 when it failed.
CUR_PIDS=()
start_many() {
	local name=$1 procs=$2 k n=0 want p
	CUR_PIDS=()
	WORKERS=$procs
	case $name in
	lb)
		render "$SCRIPT_DIR/lb-many.ini.in" "$TMP/lb-many.ini"
		CUR_LOG="$TMP/lb-many.log"
		start_bg "$CUR_LOG" "${PIN_PROXY[@]}" "$LB_BIN" -c "$TMP/lb-many.ini" "${AS_ROOT[@]}"
		CUR_PIDS=("$BG_PID") ;;
	nginx)
		render "$SCRIPT_DIR/nginx-proxy-many.conf.in" "$TMP/nginx-proxy-many.conf"
		mkdir -p "$TMP/proxy"
		CUR_LOG="$TMP/nginx-proxy-many.error.log"
		start_bg "$TMP/nginx-proxy-many.log" "${PIN_PROXY[@]}" nginx -c "$TMP/nginx-proxy-many.conf" \
			-p "$TMP/proxy/" -e "$CUR_LOG" -g 'daemon off;'
		CUR_PIDS=("$BG_PID") ;;
	haproxy)
		render "$SCRIPT_DIR/haproxy-many.cfg.in" "$TMP/haproxy-many.cfg"
		CUR_LOG="$TMP/haproxy-many-1.log"
		for k in $(seq 1 "$procs"); do
			start_bg "$TMP/haproxy-many-$k.log" "${PIN_PROXY[@]}" haproxy -db -f "$TMP/haproxy-many.cfg"
			CUR_PIDS+=("$BG_PID")
		done ;;
	esac
	if ! wait_ready "$name" "${CUR_PIDS[0]}" "$PROXY_PORT" "$CUR_LOG"; then stop_many; return 1; fi
	# all of them up: lb's and nginx's master and PROCS workers; PROCS haproxy listening sockets
	want=$((procs + 1))
	[ "$name" = haproxy ] && want=$procs
	for _ in $(seq 1 100); do
		if [ "$name" = haproxy ]; then n=$(ss -Htln "( sport = :$PROXY_PORT )" 2>/dev/null | wc -l)
		else n=$(ps -o pid= -g "${CUR_PIDS[0]}" 2>/dev/null | wc -l); fi
		[ "$n" -ge "$want" ] && break
		sleep 0.1
	done
	for p in "${CUR_PIDS[@]}"; do
		proc_alive "$p" && continue
		warn "$name (PID $p) exited at start-up; last lines of its log:"
		tail -n 20 "$CUR_LOG" >&2 2>/dev/null
		stop_many; return 1
	done
	[ "$n" -ge "$want" ] || warn "$name: only $n of $want processes or listeners up"
	sleep 1   # start-up allocations settle before the first measurement
}
stop_many() {
	local p
	for p in "${CUR_PIDS[@]}"; do stop_pid "$p"; forget_pid "$p"; done
	CUR_PIDS=()
	for _ in $(seq 1 50); do
		[ -z "$(ss -Htln "( sport = :$PROXY_PORT )" 2>/dev/null)" ] && break
		sleep 0.1
	done
}
many_died() {
	local p
	for p in "${CUR_PIDS[@]}"; do
		proc_alive "$p" && continue
		warn "$1: PID $p died during the run; last lines of $CUR_LOG:"
		tail -n 20 "$CUR_LOG" >&2 2>/dev/null
		return 0
	done
	return 1
}

# start_clients TAG N ARGS...: N connections over ceil(N / CLIENT_CONNS) connload processes on
# the wrk CPU, each from its own source address (127.0.0.2, .3, ...); sets CLIENT_PIDS and
# CLIENT_FILES ($TMP/TAG-J.txt, the histograms in $TMP/TAG-J.hist).
start_clients() {
	local tag=$1 n=$2 nc j each; shift 2
	nc=$(( (n + CLIENT_CONNS - 1) / CLIENT_CONNS ))
	CLIENT_PIDS=(); CLIENT_FILES=()
	for j in $(seq 0 $((nc - 1))); do
		each=$(( n / nc + (j < n % nc ? 1 : 0) ))
		"${PIN_WRK[@]}" "$CONNLOAD" -n "$each" -s "127.0.0.$((2 + j))" -H "$TMP/$tag-$j.hist" "$@" \
			127.0.0.1 "$PROXY_PORT" > "$TMP/$tag-$j.txt" 2>&1 &
		CLIENT_PIDS+=("$!"); CLIENT_FILES+=("$TMP/$tag-$j.txt")
	done
}
clients_alive() { local p; for p in "${CLIENT_PIDS[@]}"; do proc_alive "$p" && return 0; done; return 1; }
stop_clients() {
	local p
	for p in "${CLIENT_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
	for p in "${CLIENT_PIDS[@]}"; do wait "$p" 2>/dev/null; done
	CLIENT_PIDS=()
}
# csum KEY [PREFIX]: KEY summed over the clients' lines starting with PREFIX (default: the final line)
csum() {
	local f v s=0
	for f in "${CLIENT_FILES[@]}"; do
		v=$(kv "$f" "$1" "${2:-conns}")
		[ "$v" = NA ] && { echo NA; return; }
		s=$(awk -v a="$s" -v b="$v" 'BEGIN { print a + b }')
	done
	echo "$s"
}
# hist_q Q FILES...: the Q quantile (0..1) in ms of the merged "MICROSECONDS COUNT" histograms
hist_q() {
	local q=$1; shift
	cat "$@" 2>/dev/null | awk '{ c[$1] += $2 } END { for (k in c) print k, c[k] }' | sort -n |
	awk -v q="$q" '{ us[NR] = $1; n[NR] = $2; t += $2 } END {
		if (!t) { print "NA"; exit }
		for (i = 1; i <= NR; i++) { s += n[i]; if (s >= q * t) { printf "%.2f\n", us[i] / 1000; exit } } }'
}
client_errors_to_stderr() {
	local f
	for f in "${CLIENT_FILES[@]}"; do grep -v -e '^conns' -e '^ready' "$f" | head -n 3 | sed 's/^/    /' >&2; done
}

# run_idle PROXY N ROUND
run_idle() {
	local proxy=$1 n=$2 round=$3 fig procs pss0 rss0 pss1 rss1 ok closed err tries=0 ready pb rb
	fig="idle$n"
	procs=$(procs_for "$proxy" "$n")
	if ! start_many "$proxy" "$procs"; then x_failed "$fig:$proxy"; return 1; fi
	read -r pss0 rss0 < <(mem_kb "${CUR_PIDS[@]}")
	start_clients "idle-$proxy-$n-$round" "$n" -p 256 -t 30 -i 600
	# every client ready (all its connections answered once, or failed), within 5 minutes
	while :; do
		ready=$(cat "${CLIENT_FILES[@]}" 2>/dev/null | grep -c '^ready')
		[ "$ready" -ge ${#CLIENT_FILES[@]} ] && break
		clients_alive || break
		tries=$((tries + 1))
		[ $tries -gt 3000 ] && { warn "$proxy $fig: clients not ready within 300 s"; break; }
		sleep 0.1
	done
	sleep 2   # idle for a moment: lazily freed buffers are freed
	read -r pss1 rss1 < <(mem_kb "${CUR_PIDS[@]}")
	ok=$(csum ok ready)
	stop_clients
	closed=$(csum closed)
	err=NA
	[ "$ok" != NA ] && [ "$closed" != NA ] && err=$(( n - ok + closed ))
	pb=NA; rb=NA
	if [ "$ok" != NA ] && [ "$ok" -gt 0 ]; then
		pb=$(( (pss1 - pss0) * 1024 / ok )); rb=$(( (rss1 - rss0) * 1024 / ok ))
	fi
	xadd "$proxy" "$fig" "$round" pss_b "$pb"
	xadd "$proxy" "$fig" "$round" rss_b "$rb"
	xadd "$proxy" "$fig" "$round" ok "$ok"
	xadd "$proxy" "$fig" "$round" errors "$err"
	xadd "$proxy" "$fig" "$round" procs "$procs"
	xadd "$proxy" "$fig" "$round" pss_kb0 "$pss0"
	xadd "$proxy" "$fig" "$round" pss_kb1 "$pss1"
	printf '  %-8s %-10s run %d: %6s B/conn Pss  %6s B/conn RSS  (Pss %s -> %s kB, %s processes)  ok %s  errors %s\n' \
		"$proxy" "$fig" "$round" "$pb" "$rb" "$pss0" "$pss1" "$procs" "$ok" "$err"
	[ "$err" = 0 ] || client_errors_to_stderr
	many_died "$proxy"
	stop_many
}

# run_active PROXY ROUND
run_active() {
	local proxy=$1 round=$2 n=$BENCH_ACTIVE_CONNS fig=active procs pss rss maxp=0 maxr=0 c0 c1 cpu
	local ok err rate p99 p50 t0
	procs=$(procs_for "$proxy" "$n")
	if ! start_many "$proxy" "$procs"; then x_failed "$fig:$proxy"; return 1; fi
	c0=$(cpu0_snap)
	start_clients "active-$proxy-$round" "$n" -p 256 -t 10 -a "$BENCH_ACTIVE_MS" -d "$BENCH_ACTIVE_SECS"
	t0=$(date +%s)
	# sample the proxy's memory every second; the clients stop by themselves (bounded here too)
	while clients_alive; do
		read -r pss rss < <(mem_kb "${CUR_PIDS[@]}")
		[ "$pss" -gt "$maxp" ] && maxp=$pss
		[ "$rss" -gt "$maxr" ] && maxr=$rss
		if [ $(( $(date +%s) - t0 )) -gt $(( BENCH_ACTIVE_SECS + 300 )) ]; then
			warn "$proxy active: clients still running after $((BENCH_ACTIVE_SECS + 300)) s; stopping them"
			break
		fi
		sleep 1
	done
	stop_clients
	c1=$(cpu0_snap); cpu=$(cpu0_pct "$c0" "$c1")
	ok=$(csum ok); err=$(csum errors); rate=$(csum rate)
	p99=$(hist_q 0.99 "$TMP/active-$proxy-$round-"*.hist)
	p50=$(hist_q 0.50 "$TMP/active-$proxy-$round-"*.hist)
	xadd "$proxy" $fig "$round" rate "$rate"
	xadd "$proxy" $fig "$round" ok "$ok"
	xadd "$proxy" $fig "$round" errors "$err"
	xadd "$proxy" $fig "$round" connect_errors "$(csum connect_errors)"
	xadd "$proxy" $fig "$round" timeouts "$(csum timeouts)"
	xadd "$proxy" $fig "$round" non200 "$(csum non200)"
	xadd "$proxy" $fig "$round" p99 "$p99"
	xadd "$proxy" $fig "$round" p50 "$p50"
	xadd "$proxy" $fig "$round" pss_mb "$(awk -v k="$maxp" 'BEGIN { printf "%.1f", k / 1024 }')"
	xadd "$proxy" $fig "$round" rss_mb "$(awk -v k="$maxr" 'BEGIN { printf "%.1f", k / 1024 }')"
	xadd "$proxy" $fig "$round" cpu "$cpu"
	xadd "$proxy" $fig "$round" procs "$procs"
	printf '  %-8s %-10s run %d: %8s req/s  ok %s  errors %s  p50 %s ms  p99 %s ms  peak Pss %s kB RSS %s kB  CPU0 %s%%  (%s processes)\n' \
		"$proxy" $fig "$round" "$rate" "$ok" "$err" "$p50" "$p99" "$maxp" "$maxr" "$cpu" "$procs"
	[ "$err" = 0 ] || client_errors_to_stderr
	many_died "$proxy"
	stop_many
}

# L4: start_tcp NAME -> CUR_PID, CUR_PORT, CUR_LOG (direct: the server itself)
wait_listen() { # PID PORT LOG
	for _ in $(seq 1 100); do
		proc_alive "$1" || { warn "exited at start-up; last lines of $3:"; tail -n 20 "$3" >&2; return 1; }
		[ -n "$(ss -Htln "( sport = :$2 )" 2>/dev/null)" ] && return 0
		sleep 0.1
	done
	warn "nothing listens on port $2 after 10 s; last lines of $3:"; tail -n 20 "$3" >&2
	return 1
}
start_tcp() {
	local name=$1
	CUR_PID=""; CUR_PORT=$PROXY_PORT; CUR_LOG="$TMP/$name-tcp.log"
	case $name in
	direct) CUR_PORT=$TCP_PORT; return 0 ;;
	lb) start_bg "$CUR_LOG" "${PIN_PROXY[@]}" "$LB_BIN" -c "$TMP/lb-tcp.ini" "${AS_ROOT[@]}" ;;
	haproxy) start_bg "$CUR_LOG" "${PIN_PROXY[@]}" haproxy -db -f "$TMP/haproxy-tcp.cfg" ;;
	nginx)
		mkdir -p "$TMP/proxy-tcp"
		start_bg "$CUR_LOG" "${PIN_PROXY[@]}" nginx -c "$TMP/nginx-tcp.conf" -p "$TMP/proxy-tcp/" \
			-e "$TMP/nginx-tcp.error.log" -g 'daemon off;' ;;
	esac
	CUR_PID=$BG_PID
	wait_listen "$CUR_PID" "$CUR_PORT" "$CUR_LOG" || { stop_proxy; return 1; }
}
run_l4() {
	local proxy=$1 round=$2 out="$TMP/l4-$1-$2.txt" c0 c1 cpu gbps bytes
	c0=$(cpu0_snap)
	timeout 300 "${PIN_WRK[@]}" "$TCPXFER" get 127.0.0.1 "$CUR_PORT" > "$out" 2>&1 &
	WRK_PID=$!
	wait "$WRK_PID"
	WRK_PID=""
	c1=$(cpu0_snap); cpu=$(cpu0_pct "$c0" "$c1")
	gbps=$(kv "$out" gbps bytes); bytes=$(kv "$out" bytes bytes)
	if [ "$bytes" != "$BENCH_L4_BYTES" ]; then
		warn "$proxy l4: received $bytes of $BENCH_L4_BYTES bytes:"; sed 's/^/    /' "$out" >&2
		gbps=NA
	fi
	xadd "$proxy" l4 "$round" gbps "$gbps"
	xadd "$proxy" l4 "$round" cpu "$cpu"
	printf '  %-8s %-10s run %d: %8s GB/s  CPU0 %s%%\n' "$proxy" l4 "$round" "$gbps" "$cpu"
}

# callgrind: cg_run PROXY K -> the proxy's instructions (Ir) for K requests, start-up and stop included
cg_run() {
	local proxy=$1 k=$2 dir="$TMP/cg/$1-$2" pid logf files=() f ir
	mkdir -p "$dir"
	chmod 1777 "$dir"   # nginx's worker runs as nobody when started by root, and writes its own file
	local vg=(valgrind --tool=callgrind "--callgrind-out-file=$dir/callgrind.out.%p")
	logf="$TMP/cg-$proxy-$k.log"
	case $proxy in
	lb) start_bg "$logf" "${PIN_PROXY[@]}" "${vg[@]}" "$LB_BIN" -c "$TMP/lb-cg.ini" "${AS_ROOT[@]}" ;;
	haproxy) start_bg "$logf" "${PIN_PROXY[@]}" "${vg[@]}" haproxy -db -f "$TMP/haproxy.cfg" ;;
	nginx)
		mkdir -p "$TMP/proxy"
		start_bg "$logf" "${PIN_PROXY[@]}" "${vg[@]}" nginx -c "$TMP/nginx-proxy.conf" -p "$TMP/proxy/" \
			-e "$TMP/nginx-proxy-cg.error.log" -g 'daemon off;' ;;
	esac
	pid=$BG_PID
	READY_TENTHS=600
	if ! wait_ready "$proxy (callgrind)" "$pid" "$PROXY_PORT" "$logf"; then
		READY_TENTHS=100; stop_pid "$pid"; forget_pid "$pid"; echo NA; return 1
	fi
	READY_TENTHS=100
	timeout 900 "${PIN_WRK[@]}" "$CONNLOAD" -n 4 -k "$k" -t 60 127.0.0.1 "$PROXY_PORT" > "$dir/connload.txt" 2>&1 &
	WRK_PID=$!
	wait "$WRK_PID"
	WRK_PID=""
	STOP_TENTHS=1200
	stop_pid "$pid"; forget_pid "$pid"
	STOP_TENTHS=50
	if [ "$(kv "$dir/connload.txt" ok)" != "$k" ]; then
		warn "$proxy callgrind: $(kv "$dir/connload.txt" ok) of $k requests answered 200:"
		sed 's/^/    /' "$dir/connload.txt" >&2
		echo NA; return 1
	fi
	# the master's file (PID $pid) is left out when there are workers: its timers run with the clock
	for f in "$dir"/callgrind.out.*; do
		[ -e "$f" ] || continue
		[ "$f" = "$dir/callgrind.out.$pid" ] && continue
		files+=("$f")
	done
	[ ${#files[@]} -gt 0 ] || files=("$dir/callgrind.out.$pid")
	ir=$(awk '/^(summary|totals):/ { if (!seen[FILENAME]++) s += $2 } END { print (s ? s : "NA") }' "${files[@]}" 2>/dev/null)
	echo "${ir:-NA}"
}

NEW_PROXIES=()   # lb, haproxy, nginx out of BENCH_ONLY (no "direct": it does not apply)
for p in "${PROXIES[@]}"; do [ "$p" = direct ] || NEW_PROXIES+=("$p"); done
CONNLOAD=""; TCPXFER=""; TLSCEIL=""
if want_fig idle || want_fig active || want_fig callgrind; then
	CONNLOAD=$(build_helper connload)
fi

if want_fig idle && [ -n "$CONNLOAD" ] && [ ${#NEW_PROXIES[@]} -gt 0 ]; then
	log "idle connections: ${BENCH_IDLE_N//,/ and } idle keep-alive connections, ${BENCH_RUNS} runs"
	for n in ${BENCH_IDLE_N//,/ }; do
		for round in $(seq 1 "$BENCH_RUNS"); do
			for proxy in "${NEW_PROXIES[@]}"; do run_idle "$proxy" "$n" "$round"; done
		done
	done
fi

if want_fig active && [ -n "$CONNLOAD" ] && [ ${#NEW_PROXIES[@]} -gt 0 ]; then
	log "active connections: $BENCH_ACTIVE_CONNS connections, one request every ${BENCH_ACTIVE_MS} ms each, ${BENCH_ACTIVE_SECS}s, ${BENCH_RUNS} runs"
	# backends that take as many connections as a queueing proxy may open: 4 nginx workers (kept for
	# the figures after this one, which do not depend on them)
	stop_pid "$BACKENDS_PID"; forget_pid "$BACKENDS_PID"
	BACKEND_WORKERS=4
	render "$SCRIPT_DIR/nginx-backends.conf.in" "$TMP/nginx-backends.conf"
	start_backends || { warn "the nginx backends did not start again"; exit 1; }
	for round in $(seq 1 "$BENCH_RUNS"); do
		for proxy in "${NEW_PROXIES[@]}"; do run_active "$proxy" "$round"; done
	done
fi

L4_SKIP_NGINX=""
if want_fig l4; then
	TCPXFER=$(build_helper tcpxfer)
	if [ -n "$TCPXFER" ]; then
		render "$SCRIPT_DIR/lb-tcp.ini.in" "$TMP/lb-tcp.ini"
		render "$SCRIPT_DIR/haproxy-tcp.cfg.in" "$TMP/haproxy-tcp.cfg"
		render "$SCRIPT_DIR/nginx-tcp.conf.in" "$TMP/nginx-tcp.conf"
		[ -f "$NGINX_STREAM_MODULE" ] ||
			L4_SKIP_NGINX="no nginx stream module ($NGINX_STREAM_MODULE; apt-get install libnginx-mod-stream)"
		start_bg "$TMP/tcpxfer.log" "$TCPXFER" serve "$TCP_PORT" "$BENCH_L4_BYTES"
		TCPXFER_PID=$BG_PID
		if wait_listen "$TCPXFER_PID" "$TCP_PORT" "$TMP/tcpxfer.log"; then
			log "L4: one $BENCH_L4_BYTES-byte TCP stream, ${BENCH_RUNS} runs"
			for round in $(seq 1 "$BENCH_RUNS"); do
				for proxy in "${PROXIES[@]}"; do
					[ "$proxy" = nginx ] && [ -n "$L4_SKIP_NGINX" ] && continue
					if start_tcp "$proxy"; then
						run_l4 "$proxy" "$round"
						died_check "$proxy (tcp)"
						stop_proxy
					else
						x_failed "l4:$proxy"
					fi
				done
			done
		fi
		stop_pid "$TCPXFER_PID"; forget_pid "$TCPXFER_PID"
	fi
fi

CG_SKIP_REASON=""
if want_fig callgrind && [ ${#NEW_PROXIES[@]} -gt 0 ]; then
	if ! command -v valgrind >/dev/null 2>&1; then
		CG_SKIP_REASON="valgrind not found (apt-get install valgrind, or make deps-bench)"
		warn "callgrind figures off: $CG_SKIP_REASON"
	elif [ -n "$CONNLOAD" ]; then
		# lb without active health checks, like HAProxy and nginx here (their cost grows with the time
		# lb runs, slower under valgrind)
		{ cat "$TMP/lb.ini"; echo "health_check = off"; } > "$TMP/lb-cg.ini"
		log "callgrind: $BENCH_CG_SMALL and $BENCH_CG_REQS keep-alive requests over 4 connections"
		for proxy in "${NEW_PROXIES[@]}"; do
			irs=$(cg_run "$proxy" "$BENCH_CG_SMALL"); irb=$(cg_run "$proxy" "$BENCH_CG_REQS")
			per=NA
			case "$irs$irb" in *NA*) x_failed "callgrind:$proxy" ;; *)
				per=$(awk -v a="$irs" -v b="$irb" -v s="$BENCH_CG_SMALL" -v k="$BENCH_CG_REQS" \
					'BEGIN { printf "%.0f", (b - a) / (k - s) }') ;;
			esac
			xadd "$proxy" callgrind 1 ir_small "$irs"
			xadd "$proxy" callgrind 1 ir_big "$irb"
			xadd "$proxy" callgrind 1 ir_per_req "$per"
			printf '  %-8s callgrind: %s Ir for %s requests, %s Ir for %s: %s instructions per request\n' \
				"$proxy" "$irs" "$BENCH_CG_SMALL" "$irb" "$BENCH_CG_REQS" "$per"
		done
	fi
fi

# size: NAME PATH NOTE -> a row "name file stripped text data bss note" of SIZES
SIZES="$TMP/sizes.tsv"
: > "$SIZES"
size_row() {
	local name=$1 bin=$2 note=$3 st text data bss
	st="$TMP/size/${2##*/}.stripped"
	mkdir -p "$TMP/size"
	[ -f "$bin" ] || { printf '%s\tn/a\tn/a\tn/a\tn/a\tn/a\t%s\n' "$name" "not found: $bin" >> "$SIZES"; return; }
	strip -o "$st" "$bin" 2>/dev/null || cp "$bin" "$st"
	read -r text data bss _ < <(size "$st" 2>/dev/null | awk 'NR == 2 { print $1, $2, $3 }')
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$(stat -c %s "$bin")" "$(stat -c %s "$st")" \
		"${text:-n/a}" "${data:-n/a}" "${bss:-n/a}" "$note" >> "$SIZES"
}
if want_fig size; then
	log "binary sizes"
	if want lb && [ -z "$LB_SKIP_REASON" ]; then
		size_row "lb (make)" "$LB_BIN" "as built: BearSSL and inih static, glibc shared"
	fi
	mkdir -p "$TMP/size"
	if command -v musl-gcc >/dev/null 2>&1 && make -s -C "$ROOT_DIR" lb-static >"$TMP/size/lb-static.log" 2>&1; then
		size_row "lb-static (musl)" "$ROOT_DIR/lb-static" "make lb-static: musl-gcc -Os -static, stripped; libc, BearSSL and inih all inside"
	else
		warn "make lb-static failed (needs musl-tools):"; tail -n 5 "$TMP/size/lb-static.log" | sed 's/^/    /' >&2
	fi
	for v in "O2:-O2" "Os:-Os"; do
		f="$TMP/size/lb-static-${v%%:*}"
		if "$CC" -std=c11 -Wall -Wextra "${v#*:}" -static "$ROOT_DIR/lb.c" -o "$f" -l:libbearssl.a -l:libinih.a \
			>"$f.log" 2>&1 && [ -x "$f" ]; then
			size_row "lb ${v#*:} -static" "$f" "$CC ${v#*:} -static, this tree's lb.c, glibc static"
		else
			warn "static build of lb (${v#*:}) failed:"; tail -n 5 "$f.log" | sed 's/^/    /' >&2
			printf '%s\tn/a\tn/a\tn/a\tn/a\tn/a\t%s\n' "lb ${v#*:} -static" "build failed" >> "$SIZES"
		fi
	done
	size_row "HAProxy" "$(command -v haproxy)" "Debian package, shared libraries not counted"
	size_row "nginx" "$(command -v nginx)" "Debian package, shared libraries not counted"
	while IFS=$'\t' read -r name fsz ssz text data bss _; do
		printf '  %-14s file %10s  stripped %10s  text %10s  data %8s  bss %8s\n' "$name" "$fsz" "$ssz" "$text" "$data" "$bss"
	done < "$SIZES"
fi

if want_fig ceiling; then
	TLSCEIL=$(build_helper tlsceil -l:libbearssl.a -l:libinih.a) # includes lb.c
	if [ -n "$TLSCEIL" ]; then
		log "BearSSL ceiling: tests/bench/tlsceil.c, ${BENCH_CEIL_SECS}s x ${BENCH_RUNS} on CPU 0"
		for round in $(seq 1 "$BENCH_RUNS"); do
			out="$TMP/tlsceil-$round.txt"
			# with the bench certificate, also BearSSL's whole server handshake in memory
			ceil_cert=""; make_cert && ceil_cert="$TMP/tls/combined.pem"
			"${PIN_PROXY[@]}" "$TLSCEIL" "$BENCH_CEIL_SECS" ${ceil_cert:+"$ceil_cert"} > "$out" 2>&1
			xadd bearssl ceiling "$round" rate "$(kv "$out" rate handshakes)"
			for m in sign_us mulgen_us mul_us; do xadd bearssl ceiling "$round" "$m" "$(kv "$out" "$m" handshakes)"; done
			[ -n "$ceil_cert" ] && xadd bearssl ceiling "$round" server_rate "$(kv "$out" server_rate server_handshakes)"
			printf '  tlsceil run %d: %s\n' "$round" "$(cat "$out")"
		done
	fi
fi
# ------------------------------------------------------------------ h2 and tls13 (issues 19 and 20)
# tls_idle PROXY KIND(h2|tls13) FIGURE ROUND PROTO(h2|http/1.1): memory per idle TLS connection: a
# fresh proxy, its memory, BENCH_TLS_IDLE_N connections of tests/bench/tlsidle.py (one request
# each, then idle), its memory again 2 s after the last one was ready; as run_idle, on one process
TLSIDLE_N=$BENCH_TLS_IDLE_N
tls_idle() {
	local proxy=$1 kind=$2 fig=$3 round=$4 proto=$5 out pid pss0 rss0 pss1 rss1 ok closed mism failed err pb rb
	out="$TMP/tlsidle-$proxy-$fig-$round.txt"
	if ! start_proxy "$proxy" "$kind"; then x_failed "$fig:$proxy"; return 1; fi
	sleep 1
	read -r pss0 rss0 < <(mem_kb "$CUR_PID")
	"${PIN_WRK[@]}" /usr/bin/python3 "$SCRIPT_DIR/tlsidle.py" -n "$TLSIDLE_N" -p "$proto" -t 600 \
		127.0.0.1 "$CUR_PORT" > "$out" 2>&1 &
	pid=$!
	CLIENT_PIDS=("$pid")
	for _ in $(seq 1 3000); do
		grep -q '^ready' "$out" 2>/dev/null && break
		proc_alive "$pid" || break
		sleep 0.1
	done
	sleep 2   # idle for a moment: lazily freed buffers are freed
	read -r pss1 rss1 < <(mem_kb "$CUR_PID")
	kill -TERM "$pid" 2>/dev/null
	for _ in $(seq 1 100); do proc_alive "$pid" || break; sleep 0.1; done
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	CLIENT_PIDS=()
	ok=$(kv "$out" ok ready); failed=$(kv "$out" failed ready); mism=$(kv "$out" alpn_mismatch ready)
	closed=$(kv "$out" closed conns)
	err=NA; pb=NA; rb=NA
	if [ "$ok" != NA ] && [ "$failed" != NA ]; then
		[ "$closed" = NA ] && closed=0
		err=$(( TLSIDLE_N - ok + closed ))
		if [ "$ok" -gt 0 ]; then pb=$(( (pss1 - pss0) * 1024 / ok )); rb=$(( (rss1 - rss0) * 1024 / ok )); fi
	fi
	xadd "$proxy" "$fig" "$round" pss_b "$pb"
	xadd "$proxy" "$fig" "$round" rss_b "$rb"
	xadd "$proxy" "$fig" "$round" ok "$ok"
	xadd "$proxy" "$fig" "$round" errors "$err"
	printf '  %-8s %-11s run %d: %6s B/conn Pss  %6s B/conn RSS  (Pss %s -> %s kB)  ok %s  errors %s%s\n' \
		"$proxy" "$fig" "$round" "$pb" "$rb" "$pss0" "$pss1" "$ok" "$err" "${mism:+ (ALPN not $proto: $mism)}"
	[ "$err" = 0 ] || grep -v -e '^ready' -e '^conns' "$out" | head -n 3 | sed 's/^/    /' >&2
	died_check "$proxy ($fig)"
	stop_proxy
}

# alpn_of PORT: the protocol ALPN gives when h2 and http/1.1 are offered ("none" without ALPN)
alpn_of() {
	timeout 5 openssl s_client -connect "127.0.0.1:$1" -servername bench.test -alpn h2,http/1.1 </dev/null 2>/dev/null |
		awk '/^ALPN protocol:/ { p = $3 } /No ALPN negotiated/ { p = "none" } END { print (p == "" ? "none" : p) }'
}

# run_h2load PROXY ROUND: h2load over TLS (ALPN h2) against CUR_PORT; p99 from its --log-file
# (per request: start, status, microseconds to the end of the response), errors = failed +
# errored + timed out requests + 4xx/5xx responses, plus a protocol other than h2
run_h2load() {
	local proxy=$1 round=$2 out="$TMP/h2load-$1-$2.txt" rlog="$TMP/h2load-$1-$2.log" c0 c1 cpu pc0 pc1 per
	local rps err proto p99
	c0=$(cpu0_snap)
	pc0=$(proxy_cpu)
	env "${CUR_ENV[@]}" "${PIN_WRK[@]}" h2load -t1 -c "$BENCH_H2_CONNS" -m "$BENCH_H2_STREAMS" -D "$BENCH_SECS" \
		--ciphers=ECDHE-ECDSA-AES128-GCM-SHA256 --log-file="$rlog" "https://127.0.0.1:$CUR_PORT/" > "$out" 2>&1 &
	WRK_PID=$!
	wait "$WRK_PID"
	WRK_PID=""
	pc1=$(proxy_cpu)
	c1=$(cpu0_snap)
	cpu=$(cpu0_pct "$c0" "$c1")
	read -r rps err proto < <(awk '
		/^finished in/ { for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^req\/s/) { r = $i; sub(/,$/, "", r) } }
		/^requests:/ { for (i = 2; i <= NF; i++) if ($(i + 1) ~ /^(failed|errored|timeout)/) e += $i }
		/^status codes:/ { for (i = 3; i <= NF; i++) if ($(i + 1) ~ /^[45]xx/) e += $i }
		/^Application protocol:/ { p = $3 }
		END { printf "%s %d %s\n", (r == "" ? "NA" : r), e, (p == "" ? "none" : p) }' "$out")
	[ "$proto" = h2 ] || { err=$((err + 1)); warn "$proxy h2: h2load negotiated '$proto', not h2"; }
	p99=$(awk '{ print $3 }' "$rlog" 2>/dev/null | sort -n | awk '{ v[NR] = $1 } END {
		if (NR == 0) { print "NA"; exit }
		i = int(NR * 0.99); if (i < NR * 0.99) i++; if (i < 1) i = 1; printf "%.2f\n", v[i] / 1000 }')
	per=$(proxy_per_cpu "$pc0" "$pc1" "$rps")
	rm -f "$rlog"
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$proxy" h2 "$round" "$rps" "$p99" "$err" "$cpu" NA "$per" NA \
		>> "$RESULTS"
	printf '  %-8s %-11s run %d: %10s req/s  p99 %8s ms  errors %s  CPU0 %s%%  per proxy CPU-s %s  (%s)\n' \
		"$proxy" h2 "$round" "$rps" "$p99" "$err" "$cpu" "$per" "$(grep -m1 '^TLS Protocol' "$out")"
	if [ "$rps" = NA ]; then
		warn "could not parse h2load's output ($out):"
		sed 's/^/    /' "$out" >&2
	fi
}

H2_SKIP_REASON=""     # the whole h2 figure
LB_H2_SKIP_REASON=""  # lb's h2 rows
H2_PROXIES=()
if want_fig h2; then
	if ! command -v h2load >/dev/null 2>&1; then
		H2_SKIP_REASON="h2load not found (apt-get install nghttp2-client)"
	elif ! [ -x /usr/bin/python3 ] || ! /usr/bin/python3 -c 'import h2' 2>/dev/null; then
		H2_SKIP_REASON="/usr/bin/python3 with python3-h2 not found (tests/bench/tlsidle.py)"
	elif ! make_cert; then
		H2_SKIP_REASON="no bench certificate"
	fi
	if [ -n "$H2_SKIP_REASON" ]; then
		warn "h2 figure off: $H2_SKIP_REASON"
	else
		client_cnfs
		render "$SCRIPT_DIR/haproxy-h2.cfg.in" "$TMP/haproxy-h2.cfg"
		render "$SCRIPT_DIR/nginx-proxy-h2.conf.in" "$TMP/nginx-proxy-h2.conf"
		render "$SCRIPT_DIR/lb-tls.ini.in" "$TMP/lb-tls.ini"
		for p in "${NEW_PROXIES[@]}"; do
			if [ "$p" = lb ]; then
				# lb runs its defaults (a TLS listener offers h2); whether it knows http2 at all:
				sed '/^tls = on/a http2 = on' "$TMP/lb-tls.ini" > "$TMP/lb-h2probe.ini"
				if ! out=$("$LB_BIN" -t -c "$TMP/lb-tls.ini" 2>&1); then
					LB_H2_SKIP_REASON="\`lb -t\` rejects the TLS listener of tests/bench/lb-tls.ini.in: $(printf '%s' "$out" | head -n 1)"
				elif ! out=$("$LB_BIN" -t -c "$TMP/lb-h2probe.ini" 2>&1); then
					LB_H2_SKIP_REASON="this lb has no HTTP/2 (issue 19): \`lb -t\` rejects \`http2 = on\`: $(printf '%s' "$out" | head -n 1)"
				fi
				if [ -n "$LB_H2_SKIP_REASON" ]; then log "bench: skipping lb's h2 rows: $LB_H2_SKIP_REASON"; continue; fi
			fi
			H2_PROXIES+=("$p")
		done
	fi
fi
if [ ${#H2_PROXIES[@]} -gt 0 ]; then
	log "h2: h2load -c$BENCH_H2_CONNS -m$BENCH_H2_STREAMS over TLS, ${BENCH_RUNS} runs x ${BENCH_SECS}s; then $TLSIDLE_N idle HTTP/2 connections"
	for round in $(seq 1 "$BENCH_RUNS"); do
		for proxy in "${H2_PROXIES[@]}"; do
			[ "$proxy" = lb ] && [ -n "$LB_H2_SKIP_REASON" ] && continue
			if ! start_proxy "$proxy" h2; then x_failed "h2:$proxy"; continue; fi
			proto=$(alpn_of "$CUR_PORT")
			if [ "$proto" != h2 ]; then
				if [ "$proxy" = lb ]; then
					LB_H2_SKIP_REASON="ALPN gave '$proto', not h2, to a client offering h2,http/1.1 (this lb has no HTTP/2: issue 19)"
					log "bench: skipping lb's h2 rows: $LB_H2_SKIP_REASON"
				else
					warn "$proxy: ALPN gave '$proto', not h2"; x_failed "h2:$proxy"
				fi
				stop_proxy; continue
			fi
			if [ "$BENCH_WARMUP" -gt 0 ]; then
				env "${CUR_ENV[@]}" "${PIN_WRK[@]}" h2load -t1 -c "$BENCH_H2_CONNS" -m "$BENCH_H2_STREAMS" \
					-D "$BENCH_WARMUP" "https://127.0.0.1:$CUR_PORT/" >/dev/null 2>&1
			fi
			run_h2load "$proxy" "$round"
			died_check "$proxy (h2)"
			stop_proxy
			tls_idle "$proxy" h2 h2idle "$round" h2
		done
	done
fi

TLS13_SKIP_REASON=""
TLS13_PROXIES=()
OSSLOAD=""
if want_fig tls13; then
	if ! command -v openssl >/dev/null 2>&1 || ! make_cert; then
		TLS13_SKIP_REASON="no bench certificate (openssl)"
	else
		OSSLOAD=$(build_helper ossload -lssl -lcrypto)
		[ -n "$OSSLOAD" ] || TLS13_SKIP_REASON="tests/bench/ossload.c did not build (needs libssl-dev)"
	fi
	if [ -n "$TLS13_SKIP_REASON" ]; then
		warn "tls13 figure off: $TLS13_SKIP_REASON"
	else
		client_cnfs
		render "$SCRIPT_DIR/haproxy-tls13.cfg.in" "$TMP/haproxy-tls13.cfg"
		render "$SCRIPT_DIR/nginx-proxy-tls13.conf.in" "$TMP/nginx-proxy-tls13.conf"
		render "$SCRIPT_DIR/lb-tls.ini.in" "$TMP/lb-tls.ini"
		if want lb-openssl && [ -z "$LBOSSL_SKIP_REASON" ]; then
			if out=$("$LB_OPENSSL_BIN" -t -c "$TMP/lb-tls.ini" 2>&1); then TLS13_PROXIES+=(lbossl)
			else
				LBOSSL_SKIP_REASON="\`lb-openssl -t\` rejects tests/bench/lb-tls.ini.in: $(printf '%s' "$out" | head -n 1)"
				log "bench: skipping lb-openssl: $LBOSSL_SKIP_REASON"
			fi
		fi
		for p in "${NEW_PROXIES[@]}"; do
			[ "$p" = lb ] && [ -n "$LB_TLS_SKIP_REASON" ] && continue
			TLS13_PROXIES+=("$p")
		done
	fi
fi
if [ ${#TLS13_PROXIES[@]} -gt 0 ]; then
	log "tls13: ossload handshakes (TLS 1.3, 1.2; full, ticket, session ID), TLS 1.3 keep-alive, $TLSIDLE_N idle TLS connections; ${TLS13_PROXIES[*]}; ${BENCH_RUNS} runs x ${BENCH_SECS}s"
	for round in $(seq 1 "$BENCH_RUNS"); do
		for proxy in "${TLS13_PROXIES[@]}"; do
			if ! start_proxy "$proxy" tls13; then x_failed "tls13:$proxy"; continue; fi
			# lb's BearSSL: TLS 1.2 and session IDs only (no TLS 1.3, no tickets)
			[ "$proxy" = lb ] && CUR_ENV=("OPENSSL_CONF=$TLS_CLIENT_CNF")
			warmup
			if [ "$proxy" != lb ]; then
				run_hs "$proxy" t13_full13 "$round" full "$OSSLOAD" -v 1.3 -m full
				run_hs "$proxy" t13_full13x "$round" full "$OSSLOAD" -v 1.3 -m full -g X25519:P-256
			fi
			run_hs "$proxy" t13_full12 "$round" full "$OSSLOAD" -v 1.2 -m full
			if [ "$proxy" != lb ]; then
				run_hs "$proxy" t13_tick13 "$round" resume "$OSSLOAD" -v 1.3 -m ticket
				run_hs "$proxy" t13_tick12 "$round" resume "$OSSLOAD" -v 1.2 -m ticket
			fi
			run_hs "$proxy" t13_id12 "$round" resume "$OSSLOAD" -v 1.2 -m id
			[ "$proxy" != lb ] && run_wrk "$proxy" t13_ka13 "$round" "$BENCH_CONNS"
			died_check "$proxy (tls13)"
			stop_proxy
			tls_idle "$proxy" tls13 t13idle "$round" http/1.1
		done
	done
fi

[ -n "$BACKENDS_PID" ] && { stop_pid "$BACKENDS_PID"; forget_pid "$BACKENDS_PID"; }
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
		case $fig in tls_full|tls_full_x|tls_resume) [ -n "$TLSLOAD" ] || { echo "n/a"; return; } ;; esac ;;
	esac
	case $kind in
	rps) v=$(median "$p" "$fig" 4); [ "$v" = NA ] || v=$(awk -v x="$v" 'BEGIN { printf "%.0f", x }') ;;
	p99) v=$(median "$p" "$fig" 5); [ "$v" = NA ] || v=$(awk -v x="$v" 'BEGIN { printf "%.2f", x }') ;;
	cpu) v=$(median "$p" "$fig" 7); [ "$v" = NA ] || v=$(awk -v x="$v" 'BEGIN { printf "%.0f", x }') ;;
	res) v=$(median "$p" "$fig" 8); [ "$v" = NA ] || v=$(awk -v x="$v" 'BEGIN { printf "%.1f", x }') ;;
	per) v=$(median "$p" "$fig" 9); [ "$v" = NA ] || v=$(awk -v x="$v" 'BEGIN { printf "%.0f", x }') ;;
	churn) v=$(median "$p" "$fig" 10); [ "$v" = NA ] || v=$(awk -v x="$v" 'BEGIN { printf "%.1f", x }') ;;
	x25519) v=$(xmed "$p" "$fig" x25519_pct); [ "$v" = NA ] || v=$(awk -v x="$v" 'BEGIN { printf "%.1f", x }') ;;
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
	"per|ka|keep-alive req per proxy CPU-second, ${BENCH_CONNS} conns"
	"per|ka_high|keep-alive req per proxy CPU-second, ${BENCH_CONNS_HIGH} conns"
	"churn|ka|new backend connections per 1,000 requests, keep-alive ${BENCH_CONNS} conns"
	"churn|ka_high|new backend connections per 1,000 requests, keep-alive ${BENCH_CONNS_HIGH} conns"
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
	case $kind in err|churn) rh="-"; rn="-" ;; *) rh=$(ratio "$vl" "$vh"); rn=$(ratio "$vl" "$vn") ;; esac
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$vl" "$vh" "$vn" "$vd" "$rh" "$rn" >> "$TABLE"
done

# TLS: shown when it was on and lb, HAProxy or nginx was chosen (even when lb's rows were skipped)
SHOW_TLS=0
if [ "$BENCH_TLS" = 1 ] && { want lb || want haproxy || want nginx; }; then SHOW_TLS=1; fi
TLS_ROWS=(
	"rps|tls_full|full handshakes/s, ${BENCH_CONNS} conns (client offers P-256)"
	"per|tls_full|full handshakes per proxy CPU-second (P-256)"
	"cpu|tls_full|CPU 0 busy %, full handshakes"
	"rps|tls_full_x|full handshakes/s, client offers X25519 and P-256"
	"per|tls_full_x|full handshakes per proxy CPU-second (X25519 and P-256)"
	"x25519|tls_full_x|  handshakes the server made with X25519 %"
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
		case $kind in rps|p99|per) rh=$(ratio "$vl" "$vh"); rn=$(ratio "$vl" "$vn") ;; *) rh="-"; rn="-" ;; esac
		printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$vl" "$vh" "$vn" "$rh" "$rn" >> "$TLS_TABLE"
	done
fi

# The other figures: value tables like the ones above, from XRES.
# xval PROXY FIGURE METRIC FORMAT [sum]: the median (or the sum over the runs), formatted
xval() {
	local p=$1 v
	if [ "$p" = lb ] && [ -n "$LB_SKIP_REASON" ]; then echo skipped; return; fi
	want "$p" || { echo "-"; return; }
	if [ "${5:-}" = sum ]; then v=$(xsum "$p" "$2" "$3"); else v=$(xmed "$p" "$2" "$3"); fi
	[ "$v" = NA ] && { echo "n/a"; return; }
	awk -v x="$v" -v f="$4" 'BEGIN { printf f "\n", x }'
}
# xtable OUT WITH_DIRECT ROW...: each ROW "label|figure|metric|format|ratios (1 or 0)|sum or empty"
xtable() {
	local out=$1 wd=$2 row label fig m fmt r agg vl vh vn vd rh rn; shift 2
	: > "$out"
	for row in "$@"; do
		IFS='|' read -r label fig m fmt r agg <<< "$row"
		vl=$(xval lb "$fig" "$m" "$fmt" "$agg"); vh=$(xval haproxy "$fig" "$m" "$fmt" "$agg")
		vn=$(xval nginx "$fig" "$m" "$fmt" "$agg")
		if [ "$r" = 1 ]; then rh=$(ratio "$vl" "$vh"); rn=$(ratio "$vl" "$vn"); else rh="-"; rn="-"; fi
		if [ "$wd" = 1 ]; then
			vd=$(xval direct "$fig" "$m" "$fmt" "$agg")
			printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$vl" "$vh" "$vn" "$vd" "$rh" "$rn" >> "$out"
		else
			printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$vl" "$vh" "$vn" "$rh" "$rn" >> "$out"
		fi
	done
}
# show_table FILE WITH_DIRECT term|md [FIRST-COLUMN-TITLE]
show_table() {
	local f=$1 wd=$2 how=$3 t=${4:-figure} a b c d e g h
	if [ "$how" = md ]; then
		if [ "$wd" = 1 ]; then
			echo "| $t | lb | HAProxy | nginx | direct | lb/HAProxy | lb/nginx |"
			echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
		else
			echo "| $t | lb | HAProxy | nginx | lb/HAProxy | lb/nginx |"
			echo "| --- | ---: | ---: | ---: | ---: | ---: |"
		fi
	elif [ "$wd" = 1 ]; then
		printf '%-46s %10s %10s %10s %10s %10s %9s\n' "$t" lb HAProxy nginx direct lb/HAProxy lb/nginx
	else
		printf '%-46s %10s %10s %10s %10s %9s\n' "$t" lb HAProxy nginx lb/HAProxy lb/nginx
	fi
	while IFS=$'\t' read -r a b c d e g h; do
		if [ "$how" = md ]; then
			if [ "$wd" = 1 ]; then echo "| $a | $b | $c | $d | $e | $g | $h |"; else echo "| $a | $b | $c | $d | $e | $g |"; fi
		elif [ "$wd" = 1 ]; then
			printf '%-46s %10s %10s %10s %10s %10s %9s\n' "$a" "$b" "$c" "$d" "$e" "$g" "$h"
		else
			printf '%-46s %10s %10s %10s %10s %9s\n' "$a" "$b" "$c" "$d" "$e" "$g"
		fi
	done < "$f"
}
has_fig() { awk -F'\t' -v f="$1" '$2 == f { x = 1 } END { exit !x }' "$XRES"; }

IDLE_TABLE="$TMP/idle-table.tsv"; : > "$IDLE_TABLE"
if want_fig idle; then
	rows=()
	for n in ${BENCH_IDLE_N//,/ }; do
		rows+=("Pss per idle connection, bytes, $n conns|idle$n|pss_b|%.0f|1|"
		       "RSS per idle connection, bytes, $n conns|idle$n|rss_b|%.0f|1|"
		       "processes (lb, nginx: workers), $n conns|idle$n|procs|%.0f|0|"
		       "errors, $n conns (all runs)|idle$n|errors|%.0f|0|sum")
	done
	xtable "$IDLE_TABLE" 0 "${rows[@]}"
fi
ACTIVE_TABLE="$TMP/active-table.tsv"; : > "$ACTIVE_TABLE"
want_fig active && xtable "$ACTIVE_TABLE" 0 \
	"responses/s (200)|active|rate|%.0f|1|" \
	"errors (all runs)|active|errors|%.0f|0|sum" \
	"  connect errors (all runs)|active|connect_errors|%.0f|0|sum" \
	"  timeouts (all runs)|active|timeouts|%.0f|0|sum" \
	"  non-200 responses (all runs)|active|non200|%.0f|0|sum" \
	"p50 ms|active|p50|%.2f|1|" \
	"p99 ms|active|p99|%.2f|1|" \
	"peak Pss MB (all processes)|active|pss_mb|%.1f|1|" \
	"peak RSS MB (sum over processes)|active|rss_mb|%.1f|1|" \
	"CPU 0 busy %|active|cpu|%.0f|0|" \
	"processes (lb, nginx: workers)|active|procs|%.0f|0|"
L4_TABLE="$TMP/l4-table.tsv"; : > "$L4_TABLE"
want_fig l4 && xtable "$L4_TABLE" 1 \
	"TCP throughput GB/s, one stream|l4|gbps|%.2f|1|" \
	"CPU 0 busy %|l4|cpu|%.0f|0|"
CG_TABLE="$TMP/cg-table.tsv"; : > "$CG_TABLE"
want_fig callgrind && xtable "$CG_TABLE" 0 \
	"instructions per request|callgrind|ir_per_req|%.0f|1|" \
	"instructions, $BENCH_CG_SMALL requests|callgrind|ir_small|%.0f|1|" \
	"instructions, $BENCH_CG_REQS requests|callgrind|ir_big|%.0f|1|"
# the ceiling: full handshakes per CPU-0 second from the tls figure's runs (rate * 100 / CPU 0 busy %)
CEIL_TABLE="$TMP/ceil-table.tsv"; : > "$CEIL_TABLE"
hs_per_cpu() {
	awk -F'\t' -v p="$1" '$1 == p && $2 == "tls_full" && $4 != "NA" && $7 != "NA" && $7 > 0 { print $4 * 100 / $7 }' \
		"$RESULTS" | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "n/a"; exit }
		if (NR % 2) m = v[(NR + 1) / 2]; else m = (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.0f\n", m }'
}
CEIL=n/a
if want_fig ceiling; then
	CEIL=$(xmed bearssl ceiling rate)
	[ "$CEIL" = NA ] && CEIL=n/a || CEIL=$(awk -v x="$CEIL" 'BEGIN { printf "%.0f", x }')
	cl=$CEIL; ch="-"; cn="-"
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "BearSSL ceiling, handshakes/s on one core" "$cl" "$ch" "$cn" "-" "-" >> "$CEIL_TABLE"
	for m in sign_us mulgen_us mul_us; do
		v=$(xmed bearssl ceiling "$m"); [ "$v" = NA ] && v=n/a || v=$(awk -v x="$v" 'BEGIN { printf "%.0f", x }')
		case $m in sign_us) l="  ECDSA P-256 signature, us" ;; mulgen_us) l="  ECDHE key pair (base-point mul), us" ;;
		           *) l="  ECDH shared secret (point mul), us" ;; esac
		printf '%s\t%s\t-\t-\t-\t-\n' "$l" "$v" >> "$CEIL_TABLE"
	done
	SRV=$(xmed bearssl ceiling server_rate)
	[ "$SRV" = NA ] && SRV=n/a || SRV=$(awk -v x="$SRV" 'BEGIN { printf "%.0f", x }')
	printf '%s\t%s\t-\t-\t-\t-\n' "BearSSL's whole server handshake in memory, handshakes/s" "$SRV" >> "$CEIL_TABLE"
	hl=$(value lb rps tls_full); hh=$(value haproxy rps tls_full); hn=$(value nginx rps tls_full)
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "full handshakes/s (tls figure)" "$hl" "$hh" "$hn" "$(ratio "$hl" "$hh")" "$(ratio "$hl" "$hn")" >> "$CEIL_TABLE"
	cl=$(value lb cpu tls_full); ch=$(value haproxy cpu tls_full); cn=$(value nginx cpu tls_full)
	printf '%s\t%s\t%s\t%s\t-\t-\n' "CPU 0 busy %, full handshakes" "$cl" "$ch" "$cn" >> "$CEIL_TABLE"
	pl="-"; ph="-"; pn="-"
	[ -n "$LB_SKIP_REASON" ] && pl=skipped
	want lb && [ -z "$LB_SKIP_REASON" ] && pl=$(hs_per_cpu lb)
	want haproxy && ph=$(hs_per_cpu haproxy)
	want nginx && pn=$(hs_per_cpu nginx)
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "full handshakes per CPU-0 second" "$pl" "$ph" "$pn" "$(ratio "$pl" "$ph")" "$(ratio "$pl" "$pn")" >> "$CEIL_TABLE"
	pct() { case "$1$CEIL" in -*) echo "-" ;; *[!0-9.]*|"") echo "n/a" ;; *) awk -v a="$1" -v b="$CEIL" 'BEGIN { printf "%.0f\n", 100 * a / b }' ;; esac; }
	printf '%s\t%s\t%s\t%s\t-\t-\n' "% of the BearSSL ceiling" "$(pct "$pl")" "$(pct "$ph")" "$(pct "$pn")" >> "$CEIL_TABLE"
	printf '%s\t%s\t-\t-\t-\t-\n' "BearSSL in memory, % of the ceiling" "$(pct "$SRV")" >> "$CEIL_TABLE"
	pct_srv() { case "$1$SRV" in -*) echo "-" ;; *[!0-9.]*|"") echo "n/a" ;; *) awk -v a="$1" -v b="$SRV" 'BEGIN { printf "%.0f\n", 100 * a / b }' ;; esac; }
	printf '%s\t%s\t-\t-\t-\t-\n' "lb, % of BearSSL in memory" "$(pct_srv "$pl")" >> "$CEIL_TABLE"
fi

# h2 and tls13 tables. gval PROXY KIND FIG: KIND rps, per, p99, cpu, res (medians of RESULTS
# columns), err (FIG's load runs' errors summed, plus its idle runs'), pss, rss (XRES medians of
# FIG: bytes per idle connection); "skipped" / "no (BearSSL)" / "-" (not chosen) as they apply
gval() {
	local p=$1 kind=$2 fig=$3 v c f=%.0f
	case $p in
	lbossl)
		want lb-openssl || { echo "-"; return; }
		[ -z "$LBOSSL_SKIP_REASON" ] || { echo skipped; return; } ;;
	lb)
		[ -z "$LB_SKIP_REASON" ] || { echo skipped; return; }
		want lb || { echo "-"; return; }
		[ -z "$LB_TLS_SKIP_REASON" ] || { echo skipped; return; }
		case $fig in
		h2*) [ -z "$LB_H2_SKIP_REASON" ] || { echo skipped; return; } ;;
		t13_full12|t13_id12|t13idle|t13) ;;
		t13*) echo "no (BearSSL)"; return ;;
		esac ;;
	*) want "$p" || { echo "-"; return; } ;;
	esac
	case $kind in
	rps|per|p99|cpu|res)
		case $kind in rps) c=4 ;; per) c=9 ;; p99) c=5; f=%.2f ;; cpu) c=7 ;; res) c=8; f=%.1f ;; esac
		v=$(median "$p" "$fig" "$c") ;;
	pss|rss) v=$(xmed "$p" "$fig" "${kind}_b") ;;
	err)
		v=$(awk -F'\t' -v p="$p" -v f="$fig" '$1 == p && index($2, f) == 1 && $6 != "NA" { s += $6; n++ }
			END { if (n) print s; else print "NA" }' "$RESULTS")
		c=$(xsum "$p" "${fig}idle" errors)
		[ "$c" = NA ] || v=$(awk -v a="$v" -v b="$c" 'BEGIN { print (a == "NA" ? 0 : a) + b }') ;;
	esac
	[ "$v" = NA ] && { echo "n/a"; return; }
	awk -v x="$v" -v f="$f" 'BEGIN { printf f "\n", x }'
}
# goal_txt RATIO-TO-HAPROXY VALUE SPEC: the issue's goal next to a row, and whether it was met:
# SPEC ge:X (ratio >= X), le:X (ratio <= X), zero (VALUE == 0), or empty
goal_txt() {
	local r=$1 v=$2 spec=$3 t met=""
	case $spec in
	ge:*) t="≥ ${spec#ge:}x HAProxy"
	      case $r in ''|*[!0-9.]*) ;; *) met=$(awk -v a="$r" -v b="${spec#ge:}" 'BEGIN { print (a >= b ? "met" : "not met") }') ;; esac ;;
	le:*) t="≤ ${spec#le:}x HAProxy"
	      case $r in ''|*[!0-9.]*) ;; *) met=$(awk -v a="$r" -v b="${spec#le:}" 'BEGIN { print (a <= b ? "met" : "not met") }') ;; esac ;;
	zero) t="0"
	      case $v in ''|*[!0-9]*) ;; *) if [ "$v" = 0 ]; then met=met; else met="not met"; fi ;; esac ;;
	*) echo "-"; return ;;
	esac
	echo "$t${met:+: $met}"
}
H2_TABLE="$TMP/h2-table.tsv"; : > "$H2_TABLE"
if want_fig h2 && [ -z "$H2_SKIP_REASON" ]; then
	for row in \
		"rps|h2|h2 req/s, ${BENCH_H2_CONNS} conns x ${BENCH_H2_STREAMS} streams|ge:1.0" \
		"per|h2|h2 req per proxy CPU-second|ge:1.2" \
		"p99|h2|h2 p99 ms|" \
		"cpu|h2|CPU 0 busy %, h2 load|" \
		"pss|h2idle|Pss per idle HTTP/2 connection, bytes, ${TLSIDLE_N} conns|le:0.5" \
		"rss|h2idle|RSS per idle HTTP/2 connection, bytes|" \
		"err|h2|errors, all h2 runs (load and idle)|zero"; do
		IFS='|' read -r kind fig label goal <<< "$row"
		vl=$(gval lb "$kind" "$fig"); vh=$(gval haproxy "$kind" "$fig"); vn=$(gval nginx "$kind" "$fig")
		case $kind in cpu|res|err) rh="-"; rn="-" ;; *) rh=$(ratio "$vl" "$vh"); rn=$(ratio "$vl" "$vn") ;; esac
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$vl" "$vh" "$vn" "$rh" "$rn" "$(goal_txt "$rh" "$vl" "$goal")" >> "$H2_TABLE"
	done
fi
T13_TABLE="$TMP/tls13-table.tsv"; : > "$T13_TABLE"
if want_fig tls13 && [ -z "$TLS13_SKIP_REASON" ]; then
	for row in \
		"rps|t13_full13|full handshakes/s, TLS 1.3, P-256|" \
		"per|t13_full13|full handshakes per proxy CPU-second, TLS 1.3, P-256|ge:1.0" \
		"cpu|t13_full13|CPU 0 busy %, TLS 1.3 full handshakes|" \
		"rps|t13_full13x|full handshakes/s, TLS 1.3, X25519 and P-256 offered|" \
		"per|t13_full13x|full handshakes per proxy CPU-s, TLS 1.3, X25519+P-256 offered|ge:1.0" \
		"rps|t13_full12|full handshakes/s, TLS 1.2, P-256|" \
		"per|t13_full12|full handshakes per proxy CPU-second, TLS 1.2|ge:1.0" \
		"rps|t13_tick13|resumed handshakes/s, TLS 1.3 ticket|" \
		"per|t13_tick13|resumed handshakes per proxy CPU-s, TLS 1.3 ticket|" \
		"res|t13_tick13|  tickets offered and resumed %|" \
		"rps|t13_tick12|resumed handshakes/s, TLS 1.2 ticket|" \
		"res|t13_tick12|  tickets offered and resumed %|" \
		"rps|t13_id12|resumed handshakes/s, TLS 1.2 session ID|" \
		"per|t13_id12|resumed handshakes per proxy CPU-s, TLS 1.2 session ID|" \
		"res|t13_id12|  sessions offered and resumed %|" \
		"rps|t13_ka13|HTTPS keep-alive req/s, TLS 1.3, ${BENCH_CONNS} conns|" \
		"per|t13_ka13|HTTPS keep-alive req per proxy CPU-second, TLS 1.3|ge:1.2" \
		"p99|t13_ka13|HTTPS keep-alive p99 ms, TLS 1.3|" \
		"pss|t13idle|Pss per idle TLS connection, bytes, ${TLSIDLE_N} conns|le:1.0" \
		"rss|t13idle|RSS per idle TLS connection, bytes|" \
		"err|t13|errors, all tls13 runs (load and idle)|"; do
		IFS='|' read -r kind fig label goal <<< "$row"
		vo=$(gval lbossl "$kind" "$fig"); vl=$(gval lb "$kind" "$fig")
		vh=$(gval haproxy "$kind" "$fig"); vn=$(gval nginx "$kind" "$fig")
		case $kind in cpu|res|err) rh="-"; rn="-"; rl="-" ;;
		*) rh=$(ratio "$vo" "$vh"); rn=$(ratio "$vo" "$vn"); rl=$(ratio "$vl" "$vh") ;; esac
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$vo" "$vl" "$vh" "$vn" "$rh" "$rn" "$rl" \
			"$(goal_txt "$rh" "$vo" "$goal")" >> "$T13_TABLE"
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
SHOW_HTTP=0
want_fig http && SHOW_HTTP=1
echo
if [ "$SHOW_HTTP" = 1 ]; then
	printf '%-42s %10s %10s %10s %10s %10s %9s\n' figure lb HAProxy nginx direct lb/HAProxy lb/nginx
	while IFS=$'\t' read -r label vl vh vn vd rh rn; do
		printf '%-42s %10s %10s %10s %10s %10s %9s\n' "$label" "$vl" "$vh" "$vn" "$vd" "$rh" "$rn"
	done < "$TABLE"
	echo
fi
[ -n "$LB_SKIP_REASON" ] && echo "lb skipped: $LB_SKIP_REASON"
[ "$FAILED" != " " ] && echo "failed to start:$FAILED"
if [ "$SHOW_TLS" = 1 ]; then
	echo
	printf '%-58s %10s %10s %10s %10s %9s\n' "TLS figure" lb HAProxy nginx lb/HAProxy lb/nginx
	while IFS=$'\t' read -r label vl vh vn rh rn; do
		printf '%-58s %10s %10s %10s %10s %9s\n' "$label" "$vl" "$vh" "$vn" "$rh" "$rn"
	done < "$TLS_TABLE"
	echo
	[ -n "$LB_TLS_SKIP_REASON" ] && echo "lb's TLS rows skipped: $LB_TLS_SKIP_REASON"
	[ -n "$TLSLOAD_SKIP_REASON" ] && echo "no handshake figures: $TLSLOAD_SKIP_REASON"
	[ -n "$TLSLOAD_NOTE" ] && echo "$TLSLOAD_NOTE"
	[ "$TLS_FAILED" != " " ] && echo "failed to start with TLS:$TLS_FAILED"
fi
for t in "idle connections:$IDLE_TABLE:0" "active connections ($BENCH_ACTIVE_CONNS):$ACTIVE_TABLE:0" \
         "L4 TCP:$L4_TABLE:1" "callgrind:$CG_TABLE:0" "TLS ceiling:$CEIL_TABLE:0"; do
	IFS=: read -r title f wd <<< "$t"
	[ -s "$f" ] || continue
	echo
	show_table "$f" "$wd" term "$title"
done
if [ -s "$H2_TABLE" ]; then
	echo
	printf '%-52s %10s %10s %10s %10s %9s  %s\n' "HTTP/2 (h2)" lb HAProxy nginx lb/HAProxy lb/nginx goal
	while IFS=$'\t' read -r a b c d e f g; do
		printf '%-52s %10s %10s %10s %10s %9s  %s\n' "$a" "$b" "$c" "$d" "$e" "$f" "$g"
	done < "$H2_TABLE"
fi
[ -n "$H2_SKIP_REASON" ] && echo "no h2 figures: $H2_SKIP_REASON"
[ -n "$LB_H2_SKIP_REASON" ] && echo "lb's h2 rows skipped: $LB_H2_SKIP_REASON"
if [ -s "$T13_TABLE" ]; then
	echo
	printf '%-66s %10s %12s %10s %10s %9s %9s %9s  %s\n' "TLS 1.3 / 1.2 (tls13)" lb-openssl "lb (BearSSL)" HAProxy nginx \
		ossl/HAP ossl/ngx lb/HAP "goal (lb-openssl)"
	while IFS=$'\t' read -r a b c d e f g h i; do
		printf '%-66s %10s %12s %10s %10s %9s %9s %9s  %s\n' "$a" "$b" "$c" "$d" "$e" "$f" "$g" "$h" "$i"
	done < "$T13_TABLE"
fi
[ -n "$TLS13_SKIP_REASON" ] && echo "no tls13 figures: $TLS13_SKIP_REASON"
[ -n "$LBOSSL_SKIP_REASON" ] && want_fig tls13 && echo "lb-openssl skipped: $LBOSSL_SKIP_REASON"
if [ -s "$SIZES" ]; then
	echo
	printf '%-16s %10s %10s %10s %8s %8s\n' binary bytes stripped text data bss
	while IFS=$'\t' read -r name fsz ssz text data bss _; do
		printf '%-16s %10s %10s %10s %8s %8s\n' "$name" "$fsz" "$ssz" "$text" "$data" "$bss"
	done < "$SIZES"
fi
[ -n "$X_FAILED" ] && echo "did not run:$X_FAILED"
[ -n "$CG_SKIP_REASON" ] && echo "no callgrind figures: $CG_SKIP_REASON"
echo "medians of $BENCH_RUNS runs x ${BENCH_SECS}s; $PIN_NOTE; took $((T1 - T0))s"

# Markdown
{
	echo "# lb benchmark"
	echo
	echo "Generated by \`tests/bench/run.sh\` on $DATE (figures: $BENCH_FIGS). Medians of $BENCH_RUNS runs"
	echo "(${BENCH_SECS}s each for wrk); runs alternate between proxies (round 1: all proxies, round 2: all proxies, ...)."
	echo "Unless a section says otherwise, every proxy runs one worker / thread in front of the same three"
	echo "nginx backends that answer \`200 ok\`; \"direct\" is wrk straight to one backend, the no-proxy limit."
	echo "Ratios above 1 mean lb is higher (better for req/s, worse for latency, memory and instructions)."
	echo
	if [ "$SHOW_HTTP" = 1 ]; then
		echo "| figure | lb | HAProxy | nginx | direct | lb/HAProxy | lb/nginx |"
		echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
		while IFS=$'\t' read -r label vl vh vn vd rh rn; do
			echo "| $label | $vl | $vh | $vn | $vd | $rh | $rn |"
		done < "$TABLE"
		echo
		[ "$FAILED" != " " ] && { echo "Failed to start:$FAILED(see the script's output)."; echo; }
		echo "Errors are wrk's socket errors (connect, read, write, timeout) plus non-2xx/3xx responses."
		echo
		echo "\"Req per proxy CPU-second\" divides each run's req/s by the CPU the proxy's own processes used during it"
		echo "(user + system time from /proc, over the run's wall time), then takes the median: what one core of proxy buys."
		echo "It is the figure to read when req/s is bounded elsewhere: on two CPUs, wrk and the unpinned backends share"
		echo "CPU 1 (or the backends move to CPU 0), so at ${BENCH_CONNS} connections req/s swings with where the scheduler puts"
		echo "the backends while the proxy's own cost per request does not."
		echo
		echo "\"New backend connections per 1,000 requests\" is the backend connection churn: the nginx backends' accepted"
		echo "connections (\`stub_status\` \`accepts\`, read before and after each wrk run, the same for every proxy) per"
		echo "1,000 requests wrk completed. A proxy that reuses its server connections stays near 0 after its pool has"
		echo "grown; one that opens a connection per request beyond an idle cap makes the backends accept (and close)"
		echo "that many. For \"direct\" they are wrk's own connections. Every proxy runs at its defaults here but for"
		echo "one worker, no logging and no health checks (nginx's \`keepalive\` must be set to reuse at all: 1024)."
		echo
	fi
	[ -n "$LB_SKIP_REASON" ] && { echo "lb was skipped: $LB_SKIP_REASON."; echo; }
	if [ "$SHOW_TLS" = 1 ]; then
		echo "## TLS"
		echo
		echo "The same proxies terminating TLS (\`tests/bench/haproxy-tls.cfg.in\`, \`tests/bench/nginx-proxy-tls.conf.in\`,"
		echo "\`tests/bench/lb-tls.ini.in\`): one self-signed ECDSA P-256 certificate for all (one PEM file, certificate"
		echo "then key), TLS 1.2, ECDHE-ECDSA-AES128-GCM-SHA256, P-256 ECDHE, one worker each on CPU 0, the load on CPU 1."
		echo "Resumption is session-ID only: lb has no session tickets, so tickets are off for HAProxy"
		echo "(\`no-tls-tickets\`) and nginx (\`ssl_session_tickets off\`) too, and the client never asks for one."
		echo "Handshakes come from \`tests/bench/tlsload.c\` ($BENCH_CONNS connections in flight, each: connect, handshake,"
		echo "close_notify and FIN, the server's close; no HTTP request), the keep-alive figure from wrk over https."
		echo "Full handshakes run with two client offers: P-256 only (\`tlsload -g p256\`), and X25519 and P-256 as browsers"
		echo "offer (\`-g x25519\`; the server picks the group: the share it made with X25519 is shown). Resumption and"
		echo "keep-alive make no key exchange per request, so one offer is enough there. Handshakes per proxy CPU-second:"
		echo "each run's rate divided by the proxy's own CPU time over the run's wall time, as for req per CPU-second."
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
	if [ -s "$IDLE_TABLE" ]; then
		echo "## Idle keep-alive connections: memory per connection"
		echo
		show_table "$IDLE_TABLE" 0 md
		echo
		echo "Each proxy starts from \`tests/bench/lb-many.ini.in\`, \`tests/bench/haproxy-many.cfg.in\` or \`tests/bench/nginx-proxy-many.conf.in\`"
		echo "(keep-alive idle time 300 s) on CPU 0; its memory is read; then \`tests/bench/connload.c\` (one process per"
		echo "$CLIENT_CONNS connections, each from its own source address 127.0.0.2, .3, ..., on CPU 1) opens N connections that each"
		echo "send \`GET / HTTP/1.1\` once, read the 200 and stay idle; 2 s after the last response the memory is read again."
		echo "Bytes per connection = (after - before) / N, memory being the sum of **Pss** from \`/proc/PID/smaps_rollup\` over"
		echo "all the proxy's processes (master and workers: Pss splits a shared page between the processes that map it,"
		echo "so a forked master's copy-on-write pages count once); RSS summed over the processes (shared pages counted"
		echo "in each) beside it. The kernel's socket memory (struct sock, buffers) is not counted: it is the same for"
		echo "every proxy. The open-files cap is $NOFILE per process: one lb or nginx process holds up to $PROC_CONNS idle"
		echo "connections, beyond that lb runs \`workers = K\` and nginx \`worker_processes K\` with \`reuseport\` (K = the"
		echo "processes row). HAProxy reserves two files per connection (maxconn $HAP_MAXCONN per process here), so it runs"
		echo "one independent \`haproxy -db\` process per $HAP_CONNS connections, all bound to the same port with SO_REUSEPORT"
		echo "(HAProxy's default), which the kernel balances as it does lb's workers: like for like for memory, except"
		echo "that these processes share no state (their start-up memory cancels out in the difference). Errors:"
		echo "connections without a 200, plus connections the proxy closed while idle."
		echo
	fi
	if [ -s "$ACTIVE_TABLE" ]; then
		echo "## Active connections"
		echo
		show_table "$ACTIVE_TABLE" 0 md
		echo
		echo "$BENCH_ACTIVE_CONNS connections through the proxy, each sending one request every ${BENCH_ACTIVE_MS} ms (the first"
		echo "after a random delay) and waiting for its response, i.e. $(( BENCH_ACTIVE_CONNS * 1000 / BENCH_ACTIVE_MS )) requests/s offered, measured for"
		echo "${BENCH_ACTIVE_SECS}s once all are connected (\`tests/bench/connload.c -a\`, one process per $CLIENT_CONNS connections on CPU 1;"
		echo "the proxy on CPU 0 with the \`*-many\` configurations and the process counts shown, as for the idle figure;"
		echo "the backends: the same nginx with 4 unpinned workers for this figure). Errors: failed connects, no response in 10 s,"
		echo "connections closed before the response, non-200 responses (a failed connection is opened again ${BENCH_ACTIVE_MS} ms"
		echo "later). Latency from writing a request to the last byte of its response (10 us buckets, the whole run"
		echo "including the ramp-up). Peak memory sampled once a second. The goal for lb: 0 errors, RSS < 150 MB."
		echo
	fi
	if [ -s "$L4_TABLE" ]; then
		echo "## L4 TCP throughput"
		echo
		show_table "$L4_TABLE" 1 md
		echo
		echo "One TCP stream of $BENCH_L4_BYTES bytes through the proxy: \`tests/bench/tcpxfer.c\` serves zeroes with sendfile(2) from"
		echo "a memfd (unpinned) and the client reads with recv(MSG_TRUNC) on CPU 1, so both ends cost little. lb"
		echo "\`mode = tcp\` (\`tests/bench/lb-tcp.ini.in\`), HAProxy \`mode tcp\` (\`tests/bench/haproxy-tcp.cfg.in\`; no splicing, its default),"
		echo "nginx \`stream {}\` (\`tests/bench/nginx-tcp.conf.in\`, libnginx-mod-stream, default 16k buffer), one worker each on CPU 0;"
		echo "direct: the client straight to the server. GB/s = 10^9 bytes per second from connect to the end of the stream."
		[ -n "$L4_SKIP_NGINX" ] && echo "nginx was left out: $L4_SKIP_NGINX."
		echo
	fi
	if [ -s "$CG_TABLE" ]; then
		echo "## Instructions per request (callgrind)"
		echo
		show_table "$CG_TABLE" 0 md
		echo
		echo "Each proxy runs under \`valgrind --tool=callgrind\` with its one-worker configuration above (lb without"
		echo "active health checks, like HAProxy and nginx here); \`tests/bench/connload.c -n 4 -k K\` sends K keep-alive requests"
		echo "over 4 connections, then the proxy is stopped. lb's and nginx's masters write their own files, which are"
		echo "left out: only the worker's instructions count. Instructions per request ="
		echo "(Ir(K = $BENCH_CG_REQS) - Ir(K = $BENCH_CG_SMALL)) / ($BENCH_CG_REQS - $BENCH_CG_SMALL): start-up, connection set-up and shutdown cancel out."
		echo "This counts instructions, not time: stable from run to run on a noisy machine, the figure to watch from"
		echo "change to change (one run each)."
		echo
	fi
	[ -n "$CG_SKIP_REASON" ] && { echo "No callgrind figures: $CG_SKIP_REASON."; echo; }
	if [ -s "$SIZES" ]; then
		echo "## Binary size"
		echo
		echo "| binary | bytes | stripped | text | data | bss | build |"
		echo "| --- | ---: | ---: | ---: | ---: | ---: | --- |"
		while IFS=$'\t' read -r name fsz ssz text data bss note; do
			echo "| $name | $fsz | $ssz | $text | $data | $bss | $note |"
		done < "$SIZES"
		echo
		echo "Stripped: \`strip -o\`; text, data, bss: \`size\` of the stripped file. \`lb (make)\` is the normal build (\`-O2 -g\`,"
		echo "BearSSL and inih static, glibc shared); \`lb-static (musl)\` is \`make lb-static\`, one file with no dependency;"
		echo "the glibc \`-static\` builds carry about 1 MB of glibc. HAProxy and nginx are"
		echo "Debian's binaries: their shared libraries (OpenSSL, PCRE2, Lua, ...) are not counted. The goal: a static lb"
		echo "under 500 KB."
		echo
	fi
	if [ -s "$CEIL_TABLE" ]; then
		echo "## Full handshakes against BearSSL's ceiling"
		echo
		show_table "$CEIL_TABLE" 0 md
		echo
		echo "\`tests/bench/tlsceil.c\` does, in a loop for ${BENCH_CEIL_SECS}s on CPU 0 (median of $BENCH_RUNS runs), the asymmetric crypto one"
		echo "ECDHE-ECDSA P-256 full handshake costs the server, with the BearSSL code lb's server engine uses"
		echo "(\`br_ec_get_default()\`, \`br_ecdsa_sign_asn1_get_default()\`): the ECDHE key pair (one base-point"
		echo "multiplication), the shared secret (one point multiplication), the ServerKeyExchange signature (one ECDSA"
		echo "signature). Its rate is the most full handshakes per CPU-second lb can do with BearSSL. Full handshakes per"
		echo "CPU-0 second = the TLS section's full-handshake rate * 100 / CPU 0 busy %, per run (median); n/a without the"
		echo "tls figure. The goal for lb: 85% of the ceiling or more. HAProxy and nginx use OpenSSL's P-256 code"
		echo "(several times faster than BearSSL's): their percentage is for scale only."
		echo
		echo "\"BearSSL's whole server handshake in memory\" (the same runs of \`tests/bench/tlsceil.c\`, given the bench"
		echo "certificate) is what BearSSL itself allows: a server engine set up as lb's, and a client offering what"
		echo "tlsload offers (P-256 only), trade records in memory, full handshake after full handshake; only the"
		echo "server engine's calls are timed. Beyond the three operations above it runs BearSSL's handshake code"
		echo "(an interpreted state machine), the transcript hashes, the PRF and the record layer. No server built on"
		echo "this BearSSL can do more full handshakes per CPU-second; lb adds the kernel's TCP work and its event loop."
		echo
	fi
	if [ -s "$H2_TABLE" ] || [ -n "$H2_SKIP_REASON" ]; then
		echo "## HTTP/2 over TLS (h2)"
		echo
		if [ -s "$H2_TABLE" ]; then
			echo "| figure | lb | HAProxy | nginx | lb/HAProxy | lb/nginx | goal (issue 19) |"
			echo "| --- | ---: | ---: | ---: | ---: | ---: | --- |"
			while IFS=$'\t' read -r a b c d e f g; do echo "| $a | $b | $c | $d | $e | $f | $g |"; done < "$H2_TABLE"
			echo
		fi
		[ -n "$H2_SKIP_REASON" ] && { echo "No h2 figures: $H2_SKIP_REASON."; echo; }
		[ -n "$LB_H2_SKIP_REASON" ] && { echo "lb's h2 rows were skipped: $LB_H2_SKIP_REASON."; echo; }
		echo "\`h2load -t1 -c${BENCH_H2_CONNS} -m${BENCH_H2_STREAMS} -D ${BENCH_SECS}\` (nghttp2-client) over TLS, ALPN h2, on CPU 1, against"
		echo "lb with its defaults (\`tests/bench/lb-tls.ini.in\`: a TLS listener offers h2 unless \`http2 = off\`), HAProxy"
		echo "(\`tests/bench/haproxy-h2.cfg.in\`: \`bind ... ssl crt ... alpn h2,http/1.1\`) and nginx (\`tests/bench/nginx-proxy-h2.conf.in\`:"
		echo "\`listen ... ssl http2\`), one worker each on CPU 0, HTTP/1.1 keep-alive to the same three backends; the TLS"
		echo "settings of the TLS section (the client offers TLS 1.2, ECDHE-ECDSA-AES128-GCM-SHA256, P-256). A warm-up of"
		echo "${BENCH_WARMUP}s with h2load before each measured run. h2load prints no percentiles (only min, max, mean and sd"
		echo "of the request time): p99 is computed from its \`--log-file\` (each request's time to the end of its response)."
		echo "Errors: h2load's failed, errored and timed-out requests plus 4xx/5xx responses, and any run whose"
		echo "protocol was not h2. Req per proxy CPU-second as in the first table. Idle memory: a fresh proxy, then"
		echo "\`tests/bench/tlsidle.py\` (on CPU 1) opens ${TLSIDLE_N} TLS connections one after the other, each offering only h2,"
		echo "sending one GET on one stream and reading the 200 (its SETTINGS acknowledged), then all stay idle; bytes"
		echo "per connection = (Pss after - Pss before) / connections, read 2 s after the last one (RSS beside it), as"
		echo "in the idle section. Goals (issue 19): req per proxy CPU-second ≥ 1.2x HAProxy's, req/s ≥ 1.0x, idle"
		echo "memory ≤ 0.5x HAProxy's, 0 errors."
		echo
	fi
	if [ -s "$T13_TABLE" ] || [ -n "$TLS13_SKIP_REASON" ]; then
		echo "## TLS 1.3, tickets, OpenSSL build (tls13)"
		echo
		if [ -s "$T13_TABLE" ]; then
			echo "| figure | lb-openssl | lb (BearSSL) | HAProxy | nginx | lb-openssl/HAProxy | lb-openssl/nginx | lb/HAProxy | goal (issue 20, lb-openssl) |"
			echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
			while IFS=$'\t' read -r a b c d e f g h i; do echo "| $a | $b | $c | $d | $e | $f | $g | $h | $i |"; done < "$T13_TABLE"
			echo
		fi
		[ -n "$TLS13_SKIP_REASON" ] && { echo "No tls13 figures: $TLS13_SKIP_REASON."; echo; }
		[ -n "$LBOSSL_SKIP_REASON" ] && { echo "lb-openssl was skipped: $LBOSSL_SKIP_REASON."; echo; }
		echo "Handshakes: \`tests/bench/ossload.c\` (an OpenSSL 3 client, ${BENCH_CONNS} connections in flight, each: connect,"
		echo "handshake, close_notify, the server's close; no HTTP request), \`-v 1.3\` (TLS_AES_128_GCM_SHA256) or \`-v 1.2\`"
		echo "(ECDHE-ECDSA-AES128-GCM-SHA256), P-256 offered (\`-g X25519:P-256\` for the row that says so, as browsers"
		echo "offer); full: no session offered; ticket: each connection offers the ticket the server gave the one before"
		echo "(TLS 1.3: the client reads the NewSessionTicket first); session ID: TLS 1.2 without tickets. HTTPS keep-alive:"
		echo "\`wrk -c${BENCH_CONNS}\` with an OPENSSL_CONF offering TLS 1.3 only. Servers: lb-openssl and lb at their defaults"
		echo "(\`tests/bench/lb-tls.ini.in\`), HAProxy (\`tests/bench/haproxy-tls13.cfg.in\`) and nginx (\`tests/bench/nginx-proxy-tls13.conf.in\`)"
		echo "with TLS 1.2 and 1.3, a session-ID cache and tickets on; one worker each on CPU 0. lb (BearSSL 0.6) has no"
		echo "TLS 1.3 and no tickets: only its TLS 1.2 full, session-ID and idle rows run (\"no (BearSSL)\" elsewhere)."
		echo "The OpenSSL client costs about as much CPU per full handshake as the server, so the full-handshake rates"
		echo "are client-bound on two CPUs: read the per proxy CPU-second rows (each run's rate divided by the proxy's own"
		echo "CPU time over the run's wall time). Idle TLS memory: as in the h2 section, with HTTP/1.1 keep-alive"
		echo "connections (ALPN http/1.1 offered). Goals (issue 20, for lb-openssl): full handshakes per proxy CPU-second"
		echo "≥ 1.0x HAProxy's, HTTPS keep-alive per CPU-second ≥ 1.2x, idle TLS connection memory ≤ HAProxy's."
		echo
	fi
	[ -n "$X_FAILED" ] && { echo "Did not run:$X_FAILED (see the script's output)."; echo; }
	echo "## Setup"
	echo
	echo "- machine: $NCPU CPUs ($CPU_MODEL), $KERNEL"
	echo "- pinning: $PIN_NOTE"
	echo "- load: \`wrk -t1 -c${BENCH_CONNS} -d${BENCH_SECS}s --latency\`, the same with \`-c${BENCH_CONNS_HIGH}\`,"
	echo "  and \`-c${BENCH_CONNS} -H 'Connection: close'\` for a new connection per request; open-files limit $NOFILE"
	echo "- versions: $HAPROXY_V; $NGINX_VER; $WRK_V; $LB_V"
	echo "- configs: \`tests/bench/haproxy.cfg.in\`, \`tests/bench/nginx-proxy.conf.in\`, \`tests/bench/nginx-backends.conf.in\`, \`tests/bench/lb.ini.in\`"
	echo "- same work: lb always adds X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host and X-Request-ID to a"
	echo "  proxied request, so the HAProxy and nginx configs add the same four (\`option forwardfor\`, \`unique-id-header\`;"
	echo "  \`proxy_set_header\` with \`\$request_id\`), as a reverse proxy in production would"
	if [ "$SHOW_TLS" = 1 ]; then
		echo "- TLS load: \`tlsload -c${BENCH_CONNS} -d${BENCH_SECS} -m full\` and \`-m resume\` (tests/bench/tlsload.c: BearSSL client,"
		echo "  OpenSSL's P-256 arithmetic, the server's signature not checked, so that one client CPU outruns"
		echo "  one proxy CPU), \`wrk -t1 -c${BENCH_CONNS} -d${BENCH_SECS}s --latency https://...\` with OPENSSL_CONF"
		echo "  offering only TLS 1.2, ECDHE-ECDSA-AES128-GCM-SHA256 and P-256; $(openssl version 2>/dev/null)"
	fi
	echo
	echo "## Raw runs"
	echo
	if [ -s "$RESULTS" ]; then
		echo "Rate is req/s, or handshakes/s for tls_full and tls_resume."
		echo
		echo "| proxy | figure | run | rate | p99 ms | errors | CPU 0 busy % | resumed % | rate per proxy CPU-s | new backend conns per 1k req |"
		echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
		while IFS=$'\t' read -r p f r rps p99 e cpu res per ch; do
			echo "| $p | $f | $r | $rps | $p99 | $e | $cpu | $res | ${per:-NA} | ${ch:-NA} |"
		done < "$RESULTS"
		echo
	fi
	if [ -s "$XRES" ]; then
		echo "Other figures, one line per run and metric (pss_b, rss_b: bytes per idle connection; pss_kb0, pss_kb1:"
		echo "Pss before and after, kB; pss_mb, rss_mb: peak, MB; gbps: 10^9 bytes/s; ir_*: instructions)."
		echo
		echo "| proxy | figure | run | metric | value |"
		echo "| --- | --- | ---: | --- | ---: |"
		while IFS=$'\t' read -r p f r m v; do
			echo "| $p | $f | $r | $m | $v |"
		done < "$XRES"
	fi
} > "$BENCH_OUT"
echo "wrote ${BENCH_OUT#"$ORIG_PWD"/}"

[ "$FAILED" = " " ] && [ "$TLS_FAILED" = " " ] && [ -z "$X_FAILED" ]
