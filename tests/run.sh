#!/usr/bin/env bash
# make test: every suite, one PASS/FAIL line per check, one summary line at the end.
if [ -z "${LB_TEST_INNER:-}" ]; then
	out=$(mktemp /tmp/lb-test-out.XXXXXX)
	LB_TEST_INNER=1 bash "$0" "$@" 2>&1 | tee "$out"
	p=$(grep -c '^PASS' "$out"); f=$(grep -c '^FAIL' "$out")
	if [ "$f" -gt 0 ]; then echo; echo "failed:"; grep "^FAIL" "$out"; fi
	rm -f "$out"
	echo "$p passed, $f failed"
	[ "$f" -eq 0 ] && [ "$p" -gt 0 ]
	exit $?
fi
# Expects the binaries `make test` builds: lb lb-poll lb-asan tests/unit tests/unit-asan fuzz/fuzz_*.
set -u
cd "$(dirname "$0")/.."
log=$(mktemp -d /tmp/lb-test.XXXXXX)
trap 'rm -rf "$log"' EXIT
export ASAN_OPTIONS=abort_on_error=1:detect_leaks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
: "${FUZZ_SECS:=30}"       # request-head fuzzer; the others (response, chunked, config, values) a third of it
: "${INTEGRATION_BUILDS:=lb lb-poll lb-asan}"

# run NAME CMD...: prefix each PASS/FAIL line with NAME; a crash without a summary is a FAIL
run() {
	local name=$1; shift
	echo "== $name: $*"
	"$@" >"$log/$name.out" 2>&1
	local rc=$?
	grep -E '^(PASS|FAIL)' "$log/$name.out" | sed -E "s#^(PASS|FAIL) #\1 $name/#"
	if [ $rc -ne 0 ] && ! grep -q '^FAIL' "$log/$name.out"; then
		echo "FAIL $name: exited $rc without reporting a failure; last lines:"
		tail -15 "$log/$name.out" | sed 's/^/    /'
	elif grep -q '^FAIL' "$log/$name.out"; then
		grep -E 'AddressSanitizer|runtime error|LeakSanitizer' "$log/$name.out" | head -5 | sed 's/^/    /'
	fi
}

run code bash tests/code_checks.sh
run unit tests/unit
run unit-asan tests/unit-asan

# the shipped example must stay valid
if ./lb -t -c config.ini >"$log/cfg.out" 2>&1; then echo "PASS config/example-config-valid"
else echo "FAIL config/example-config-valid: $(head -5 "$log/cfg.out")"; fi
# README's key tables agree with lb's key table (lb --keys)
LB_BIN=./lb run keys python3 tests/keys.py

for b in $INTEGRATION_BUILDS; do
	ASAN_OPTIONS=abort_on_error=1:detect_leaks=0 LB_BIN=./$b run "integration-$b" python3 tests/integration.py
	ASAN_OPTIONS=abort_on_error=1:detect_leaks=0 LB_BIN=./$b run "process-$b" python3 tests/process.py
	ASAN_OPTIONS=abort_on_error=1:detect_leaks=0 LB_BIN=./$b run "policy-$b" python3 tests/policy.py
	ASAN_OPTIONS=abort_on_error=1:detect_leaks=0 LB_BIN=./$b run "health-$b" python3 tests/health.py
	ASAN_OPTIONS=abort_on_error=1:detect_leaks=0 LB_BIN=./$b run "admin-$b" python3 tests/admin.py
	ASAN_OPTIONS=abort_on_error=1:detect_leaks=0 LB_BIN=./$b run "dashboard-$b" python3 tests/dashboard.py
	ASAN_OPTIONS=abort_on_error=1:detect_leaks=0 LB_BIN=./$b run "tls-$b" python3 tests/tls.py
	ASAN_OPTIONS=abort_on_error=1:detect_leaks=0 LB_BIN=./$b run "h2-$b" python3 tests/h2.py
done
# the OpenSSL 3 build (make lb-openssl): the TLS suite, cases only one library can pass marked by build
ASAN_OPTIONS=abort_on_error=1:detect_leaks=0 LB_BIN=./lb-openssl run "tls-lb-openssl" python3 tests/tls.py
ASAN_OPTIONS=abort_on_error=1:detect_leaks=0 LB_BIN=./lb-openssl-asan run "tls-lb-openssl-asan" python3 tests/tls.py

# headless Chromium through a TLS listener (page of 50 images: h2 on one connection, TLS version by
# build): the BearSSL build always, the OpenSSL one (make TLS=openssl) when it is built
for b in lb lb-openssl; do
	if [ "$b" = lb ] || [ -x "./$b" ]; then LB_BIN=./$b run "browser-$b" python3 tests/browser.py; fi
done

# the fully static build (musl): the same proxying, tunnels and splice
if [ -x ./lb-static ]; then
	LB_BIN=./lb-static run integration-lb-static python3 tests/integration.py --only tcp_mode
	LB_BIN=./lb-static run integration-lb-static-http python3 tests/integration.py --only forwarded_headers
else echo "FAIL lb-static: not built (make lb-static needs musl-tools)"; fi

# faults in turn under a client loop (worker kill, reload, descriptor squeeze, backend reset): once, ~20 s
ASAN_OPTIONS=abort_on_error=1:detect_leaks=0 LB_BIN=./lb-asan run soak python3 tests/soak.py

# the differential request-smuggling test: once, against the ./lb build
LB_BIN=./lb run smuggle python3 tests/smuggle.py

# deploy/: systemd unit, nftables rules (in network namespaces), sshd and sysctl drop-ins, alert webhook
run deploy bash tests/deploy.sh
# deploy/: keepalived template and notify script, Prometheus/Grafana/Netdata, cloud-init, StackScript, install.sh --render
run deploy2 bash tests/deploy2.sh
# HA failover in network namespaces: two lb+keepalived nodes, client loop on the floating IP (root, ~20 s)
if [ "$(id -u)" = 0 ]; then LB_BIN=./lb run ha python3 tests/ha.py
else echo "PASS ha (skipped: the failover test needs root for network namespaces and keepalived)"; fi
# active-active: three lb nodes behind an ECMP route, one killed, deploy/ecmp/lb-health-route.sh withdraws it (root, ~10 s)
# the OpenSSL build when there is one: its shared ticket keys resume TLS sessions across the nodes
if [ "$(id -u)" = 0 ]; then LB_BIN=$([ -x ./lb-openssl ] && echo ./lb-openssl || echo ./lb) run ecmp python3 tests/ecmp.py
else echo "PASS ecmp (skipped: needs root for network namespaces)"; fi
# linode-scaler against a Linode API v4 fake that checks every call against the OpenAPI spec, and a real lb
LB_BIN=./lb run scaler python3 tests/scaler.py

# fuzz_smoke NAME SECS DICT: run fuzz/fuzz_NAME from its corpus with fuzz/dict/DICT.dict
fuzz_smoke() {
	local f=$1 secs=$2 dict=$3 work
	work=$(mktemp -d /tmp/lb-fuzz.XXXXXX)
	if (cd "$work" && "$OLDPWD/fuzz/fuzz_$f" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
		-dict="$OLDPWD/fuzz/dict/$dict.dict" -print_final_stats=1 . "$OLDPWD/fuzz/corpus/$f") \
		>"$log/fuzz_$f.out" 2>&1; then
		echo "PASS fuzz/$f: $(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$log/fuzz_$f.out" | grep -o '[0-9]*$') inputs in ${secs}s, no crash"
	else
		echo "FAIL fuzz/$f: see below"
		grep -E -A12 'ERROR|runtime error|deadly signal' "$log/fuzz_$f.out" | head -30 | sed 's/^/    /'
		cp "$work"/crash-* "$work"/leak-* "$work"/timeout-* fuzz/ 2>/dev/null
	fi
	rm -rf "$work"
}
echo "== fuzz smoke"
fuzz_smoke request "$FUZZ_SECS" http
fuzz_smoke response $((FUZZ_SECS / 3)) http
fuzz_smoke chunked $((FUZZ_SECS / 3)) http
fuzz_smoke config $((FUZZ_SECS / 3)) ini
fuzz_smoke values $((FUZZ_SECS / 3)) ini
fuzz_smoke proxy $((FUZZ_SECS / 3)) proxy
fuzz_smoke admin $((FUZZ_SECS / 3)) admin
fuzz_smoke x509 $((FUZZ_SECS / 3)) x509
fuzz_smoke conn $((FUZZ_SECS * 2 / 3)) conn
