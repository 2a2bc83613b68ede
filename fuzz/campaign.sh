#!/usr/bin/env bash
# fuzz/campaign.sh [MINUTES] [HARNESS...]: every harness under libFuzzer and then AFL++ for MINUTES
# each (default 4), two jobs at a time (one per core), from fuzz/corpus/NAME with fuzz/dict/NAME.dict
# (http.dict for the HTTP ones, ini.dict for config/values). Findings go to fuzz/out/campaign/;
# the table at the end (also in fuzz/out/campaign/summary.md) gives executions and coverage:
# libFuzzer's cov (edges) and ft (features), AFL++'s edges_found and bitmap_cvg, and crashes.
# Run by `make fuzz-campaign MINUTES=N`; needs clang (libFuzzer) and afl++ (make deps-afl).
set -u
cd "$(dirname "$0")/.." || exit 1
mins=${1:-4}
shift || true
harnesses=${*:-request response chunked config values proxy admin x509 conn}
out=fuzz/out/campaign
mkdir -p "$out"
secs=$((mins * 60))

dict_of() {
	if [ -f "fuzz/dict/$1.dict" ]; then echo "fuzz/dict/$1.dict"
	elif [ "$1" = config ] || [ "$1" = values ]; then echo fuzz/dict/ini.dict
	else echo fuzz/dict/http.dict; fi
}

libfuzzer() {
	local h=$1 w="$out/lf_$1"
	mkdir -p "$w/corpus" "$w/artifacts"
	"fuzz/fuzz_$h" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -dict="$(dict_of "$h")" \
		-print_final_stats=1 -artifact_prefix="$w/artifacts/" "$w/corpus" "fuzz/corpus/$h" >"$w/log" 2>&1
	echo "libfuzzer $h exit $?" >>"$w/log"
}

afl() {
	local h=$1 w="$out/afl_$1"
	rm -rf "$w"
	mkdir -p "$w"
	AFL_SKIP_CPUFREQ=1 AFL_NO_UI=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1 \
		timeout -s INT $((secs + 30)) afl-fuzz -V "$secs" -i "fuzz/corpus/$h" -o "$w" -x "$(dict_of "$h")" \
		-t 2000 -- "fuzz/afl_$h" >"$w/log" 2>&1
	echo "afl $h exit $?" >>"$w/log"
}

jobs_=()
for h in $harnesses; do jobs_+=("libfuzzer $h" "afl $h"); done
running=0
for j in "${jobs_[@]}"; do
	echo "$(date -u +%H:%M:%S) start $j (${mins} min)"
	$j &
	running=$((running + 1))
	if [ $running -ge 2 ]; then wait -n; running=$((running - 1)); fi
done
wait

{
	echo "| harness | engine | minutes | executions | coverage | crashes |"
	echo "| --- | --- | ---: | ---: | --- | ---: |"
	for h in $harnesses; do
		l="$out/lf_$h/log"
		ex=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$l" | grep -o '[0-9]*$')
		cov=$(grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE)' "$l" | tail -1 | grep -oE 'cov: [0-9]+ ft: [0-9]+')
		cr=$(find "$out/lf_$h/artifacts" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' \) | wc -l)
		echo "| $h | libFuzzer | $mins | ${ex:-?} | ${cov:-?} | $cr |"
		s="$out/afl_$h/default/fuzzer_stats"
		ex=$(awk -F' *: *' '$1 == "execs_done" { print $2 }' "$s" 2>/dev/null)
		ed=$(awk -F' *: *' '$1 == "edges_found" { print $2 }' "$s" 2>/dev/null)
		bc=$(awk -F' *: *' '$1 == "bitmap_cvg" { print $2 }' "$s" 2>/dev/null)
		cr=$(find "$out/afl_$h/default/crashes" -type f -name 'id:*' 2>/dev/null | wc -l)
		echo "| $h | AFL++ | $mins | ${ex:-?} | edges ${ed:-?} (${bc:-?} of the map) | $cr |"
	done
} | tee "$out/summary.md"
