#!/usr/bin/env bash
# make run: three demo backends on 127.0.0.1:9001-9003, then lb in the foreground on config.ini.
# Ctrl-C stops lb (gracefully) and the backends.
set -u
cd "$(dirname "$0")/.."
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT
for i in 1 2 3; do
	python3 tests/backend.py --port 900$i --name web$i >/dev/null 2>&1 &
	pids+=($!)
done
for i in 1 2 3; do
	for _ in $(seq 50); do
		(exec 3<>/dev/tcp/127.0.0.1/900$i) 2>/dev/null && break
		sleep 0.1
	done
done
echo "demo backends on 127.0.0.1:9001-9003; lb on http://127.0.0.1:8080 (try: curl -i http://127.0.0.1:8080/)"
echo "Ctrl-C to stop."
./lb -c config.ini &
lbpid=$!
pids+=($lbpid)
trap 'kill -TERM $lbpid 2>/dev/null' INT TERM
wait $lbpid
