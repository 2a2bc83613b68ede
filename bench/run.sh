#!/usr/bin/env bash
# bench/run.sh — compare lb with HAProxy and nginx (one worker each) in front of three nginx
# backends, plus "direct" (wrk straight to one backend) as the no-proxy limit.
#
#   make bench            # or: bash bench/run.sh
#
# Environment:
#   LB_BIN        lb binary (default ./lb); skipped with a message when missing
#   BENCH_ONLY    comma list out of lb,haproxy,nginx,direct (default: all four)
#   BENCH_SECS    seconds per wrk run (default 5)
#   BENCH_RUNS    runs per proxy and figure, alternating between proxies (default 3)
#   BENCH_WARMUP  seconds of warm-up after each proxy start (default 1, 0 = none)
#   BENCH_CONNS   connections of the small keep-alive run (default 50)
#   BENCH_CONNS_HIGH  connections of the large keep-alive run (default 1000)
#   BENCH_OUT     Markdown report (default bench/results.md)
#   BENCH_KEEP_TMP=1  keep the temp dir (configs, logs, raw wrk output)
#
# The proxy runs on CPU 0 and wrk on CPU 1 (taskset); the backends are not pinned.
# Every process the script starts is stopped on exit (by PID / its own process group).

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
BENCH_OUT=${BENCH_OUT:-$ROOT_DIR/bench/results.md}
case $BENCH_OUT in /*) ;; *) BENCH_OUT="$ORIG_PWD/$BENCH_OUT" ;; esac

for v in BENCH_SECS BENCH_RUNS BENCH_WARMUP BENCH_CONNS BENCH_CONNS_HIGH; do
	case ${!v} in ''|*[!0-9]*) echo "bench: $v must be a whole number (got '${!v}')" >&2; exit 2 ;; esac
done
[ "$BENCH_SECS" -ge 1 ] && [ "$BENCH_RUNS" -ge 1 ] || { echo "bench: BENCH_SECS and BENCH_RUNS must be >= 1" >&2; exit 2; }

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
	sed -e "s|@TMP@|$TMP|g" -e "s|@PORT@|$PROXY_PORT|g" \
	    -e "s|@P1@|$P1|g" -e "s|@P2@|$P2|g" -e "s|@P3@|$P3|g" \
	    -e "s/@TEMP_PATHS_BACKENDS@/$tb/" -e "s/@TEMP_PATHS_PROXY@/$tp/" \
	    "$1" > "$2"
}

render "$SCRIPT_DIR/nginx-backends.conf.in" "$TMP/nginx-backends.conf"
render "$SCRIPT_DIR/nginx-proxy.conf.in" "$TMP/nginx-proxy.conf"
render "$SCRIPT_DIR/haproxy.cfg.in" "$TMP/haproxy.cfg"
render "$SCRIPT_DIR/lb.ini.in" "$TMP/lb.ini"

# ------------------------------------------------------------------ HTTP probe
# Prints the status code of GET / on 127.0.0.1:$1 ("" when nothing answers).
http_status() {
	local port=$1 line=""
	if command -v curl >/dev/null 2>&1; then
		curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$port/" 2>/dev/null || true
		return 0
	fi
	line=$(timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port || exit 1
		printf 'GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n' >&3
		head -n1 <&3" 2>/dev/null) || true
	set -- $line
	printf '%s' "${2:-}"
}

# wait_ready NAME PID PORT LOG: up to 10 s for a 200 on PORT while PID lives.
wait_ready() {
	local name=$1 pid=$2 port=$3 logf=$4 st=""
	for _ in $(seq 1 100); do
		if ! proc_alive "$pid"; then
			wait "$pid" 2>/dev/null
			warn "$name exited at start-up; last lines of $logf:"
			tail -n 20 "$logf" >&2 2>/dev/null
			return 1
		fi
		st=$(http_status "$port")
		[ "$st" = 200 ] && return 0
		sleep 0.1
	done
	warn "$name did not answer 200 on port $port within 10 s (last status '${st}'); last lines of $logf:"
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

# start_proxy NAME: sets CUR_PID (empty for direct) and CUR_PORT. Returns 1 when it failed.
start_proxy() {
	local name=$1 logf="$TMP/$1.log"
	CUR_PID=""
	CUR_PORT=$PROXY_PORT
	case $name in
	direct)
		CUR_PORT=$P1
		return 0 ;;
	haproxy)
		start_bg "$logf" "${PIN_PROXY[@]}" haproxy -db -f "$TMP/haproxy.cfg" ;;
	nginx)
		mkdir -p "$TMP/proxy"
		start_bg "$logf" "${PIN_PROXY[@]}" nginx -c "$TMP/nginx-proxy.conf" -p "$TMP/proxy/" \
			-e "$TMP/nginx-proxy.error.log" -g 'daemon off;'
		logf="$TMP/nginx-proxy.error.log" ;;
	lb)
		start_bg "$logf" "${PIN_PROXY[@]}" "$LB_BIN" -c "$TMP/lb.ini" $( [ "$(id -u)" = 0 ] && echo -u root ) ;;
	esac
	CUR_PID=$BG_PID
	if ! wait_ready "$name" "$CUR_PID" "$CUR_PORT" "$logf"; then
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

# run_wrk PROXY FIGURE ROUND CONNS [extra wrk args]
RESULTS="$TMP/results.tsv"
: > "$RESULTS"
run_wrk() {
	local proxy=$1 fig=$2 round=$3 conns=$4; shift 4
	local out="$TMP/wrk-$proxy-$fig-$round.txt" res
	# In the background and waited for, so that a signal to the script stops it at once.
	"${PIN_WRK[@]}" wrk -t1 -c"$conns" -d"${BENCH_SECS}s" --timeout 5s --latency "$@" \
		"http://127.0.0.1:$CUR_PORT/" > "$out" 2>&1 &
	WRK_PID=$!
	wait "$WRK_PID"
	WRK_PID=""
	res=$(parse_wrk "$out")
	set -- $res
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$proxy" "$fig" "$round" "$1" "$2" "$3" >> "$RESULTS"
	printf '  %-8s %-9s run %d: %10s req/s  p99 %8s ms  errors %s\n' "$proxy" "$fig" "$round" "$1" "$2" "$3"
	if [ "$1" = NA ]; then
		warn "could not parse wrk output ($out):"
		sed 's/^/    /' "$out" >&2
	fi
}

warmup() {
	[ "$BENCH_WARMUP" -gt 0 ] || return 0
	"${PIN_WRK[@]}" wrk -t1 -c"$BENCH_CONNS" -d"${BENCH_WARMUP}s" "http://127.0.0.1:$CUR_PORT/" >/dev/null 2>&1 &
	WRK_PID=$!
	wait "$WRK_PID"
	WRK_PID=""
}

# ------------------------------------------------------------------ run
nfig=3
est=$(( ${#PROXIES[@]} * BENCH_RUNS * (nfig * BENCH_SECS + BENCH_WARMUP + 1) ))
log "bench: ${PROXIES[*]} | ${BENCH_RUNS} runs x ${BENCH_SECS}s | c${BENCH_CONNS}, c${BENCH_CONNS_HIGH}, close c${BENCH_CONNS} | ~${est}s"
log "bench: $PIN_NOTE; backends on 127.0.0.1:$P1,$P2,$P3; proxies on :$PROXY_PORT; nofile $NOFILE"

start_backends || { warn "the nginx backends did not start"; exit 1; }
T0=$(date +%s)

FAILED=" "
for round in $(seq 1 "$BENCH_RUNS"); do
	log "round $round/$BENCH_RUNS"
	for proxy in "${PROXIES[@]}"; do
		case $FAILED in *" $proxy "*) continue ;; esac
		if ! start_proxy "$proxy"; then
			warn "$proxy failed to start; no further runs for it"
			FAILED="$FAILED$proxy "
			continue
		fi
		warmup
		run_wrk "$proxy" ka "$round" "$BENCH_CONNS"
		run_wrk "$proxy" ka_high "$round" "$BENCH_CONNS_HIGH"
		run_wrk "$proxy" close "$round" "$BENCH_CONNS" -H 'Connection: close'
		if [ -n "$CUR_PID" ] && ! proc_alive "$CUR_PID"; then
			warn "$proxy died during the runs; last lines of its log:"
			tail -n 20 "$TMP/$proxy.log" >&2 2>/dev/null
		fi
		stop_proxy
	done
done
stop_pid "$BACKENDS_PID"; forget_pid "$BACKENDS_PID"
T1=$(date +%s)

# ------------------------------------------------------------------ report
# median PROXY FIG COLUMN(4=rps,5=p99,6=errors) ; errors are summed instead
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

# value PROXY ROWKIND FIG
value() {
	local p=$1 kind=$2 fig=$3 v
	if [ "$p" = lb ] && [ -n "$LB_SKIP_REASON" ]; then echo skipped; return; fi
	want "$p" || { echo "-"; return; }
	case $kind in
	rps) v=$(median "$p" "$fig" 4); [ "$v" = NA ] || v=$(awk -v x="$v" 'BEGIN { printf "%.0f", x }') ;;
	p99) v=$(median "$p" "$fig" 5); [ "$v" = NA ] || v=$(awk -v x="$v" 'BEGIN { printf "%.2f", x }') ;;
	err) v=$(errsum "$p" "$fig") ;;
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
	echo "## Setup"
	echo
	echo "- machine: $NCPU CPUs ($CPU_MODEL), $KERNEL"
	echo "- pinning: $PIN_NOTE"
	echo "- load: \`wrk -t1 -c${BENCH_CONNS} -d${BENCH_SECS}s --latency\`, the same with \`-c${BENCH_CONNS_HIGH}\`,"
	echo "  and \`-c${BENCH_CONNS} -H 'Connection: close'\` for a new connection per request; open-files limit $NOFILE"
	echo "- versions: $HAPROXY_V; $NGINX_VER; $WRK_V; $LB_V"
	echo "- configs: \`bench/haproxy.cfg.in\`, \`bench/nginx-proxy.conf.in\`, \`bench/nginx-backends.conf.in\`, \`bench/lb.ini.in\`"
	echo
	echo "## Raw runs"
	echo
	echo "| proxy | figure | run | req/s | p99 ms | errors |"
	echo "| --- | --- | ---: | ---: | ---: | ---: |"
	while IFS=$'\t' read -r p f r rps p99 e; do
		echo "| $p | $f | $r | $rps | $p99 | $e |"
	done < "$RESULTS"
} > "$BENCH_OUT"
echo "wrote ${BENCH_OUT#"$ORIG_PWD"/}"

[ "$FAILED" = " " ]
