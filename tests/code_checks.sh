#!/bin/bash
# Checks of lb.c's shape that no compiler makes; one PASS or FAIL line each, in the suites' style.
#   code/exported_symbols_carry_lb_   every external symbol lb.o defines is lb_* (or main)
#   code/file_state_defined_once      no `static TYPE g_NAME` declared twice (a tentative definition
#                                     before the real one compiles silently into one object)
#   code/file_state_in_structs        mutable file-scope state lives in the named structs (P, EV, SHM, TLS, W,
#                                     M, ADM, ACC: gather_globals.py); a loose `static ... g_NAME` is one of
#                                     the allow-list below (add a new global to a struct instead)
#   code/section_map_matches_headers  the top banner's section list is the section headers, in file order
# Run from anywhere: bash tests/code_checks.sh [path/to/lb.c]
set -u
cd "$(dirname "$0")/.."
src=${1:-lb.c}
tmp=$(mktemp -d /tmp/lb-code-checks.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
failed=0
pass() { echo "PASS code/$1"; }
fail() { echo "FAIL code/$1: $2"; failed=1; }

# 1. exported symbols: lb.c is one translation unit; only lb.h's lb_* API (and main) may be external
if ${CC:-cc} -std=c11 -O1 -I. -c "$src" -o "$tmp/lb.o" 2>"$tmp/cc.err"; then
	bad=$(nm -g --defined-only "$tmp/lb.o" | awk '{ print $NF }' | grep -v -E '^(lb_|main$)' | tr '\n' ' ')
	if [ -z "$bad" ]; then pass exported_symbols_carry_lb_
	else fail exported_symbols_carry_lb_ "external symbols without lb_ (make them static or name them lb_*): $bad"; fi
else
	fail exported_symbols_carry_lb_ "lb.c does not compile: $(head -3 "$tmp/cc.err")"
fi

# 2. file-scope state defined once: every top-level `static ... g_NAME` (with or without an initialiser,
#    arrays and several names on one line included) counted by name
awk '
	/^static / {
		line = $0
		sub(/\/\*.*/, "", line)        # a comment
		if (line ~ /\(/)
			next                    # a function
		sub(/=.*/, "", line)          # from the first initialiser on: `static int g_a = 1, g_b;` counts g_a only
		n = split(line, w, /[^A-Za-z0-9_]+/)
		for (i = 1; i <= n; i++)
			if (w[i] ~ /^g_[A-Za-z0-9_]+$/)
				print w[i], NR
	}
' "$src" | sort -k1,1 -k2,2n >"$tmp/globals"
dups=$(awk '{ c[$1]++; l[$1] = l[$1] " " $2 } END { for (g in c) if (c[g] > 1) printf "%s (lines%s) ", g, l[g] }' "$tmp/globals")
if [ ! -s "$tmp/globals" ]; then fail file_state_defined_once "found no static g_* declarations in $src (the check is broken)"
elif [ -z "$dups" ]; then pass file_state_defined_once
else fail file_state_defined_once "declared more than once: $dups"; fi

# 2b. no loose file-scope state but the allow-list: g_conf and g_now (read everywhere), g_top_tio (lb ctl's
#     terminal), g_dash_* (const), g_wk, g_alerts, g_check_first (arrays whose element type or size is
#     defined after the struct they would join), g_h2cb, g_h2opt, g_free_h2s (nghttp2 types: the HTTP/2 build only)
loose_ok=' g_conf g_now g_top_tio g_dash_head g_dash_script g_wk g_alerts g_check_first g_h2cb g_h2opt g_free_h2s '
loose=$(awk '{ print $1 }' "$tmp/globals" | sort -u | while read -r g; do
	case "$loose_ok" in *" $g "*) ;; *) printf '%s ' "$g" ;; esac
done)
if [ -z "$loose" ]; then pass file_state_in_structs
else fail file_state_in_structs "loose file-scope globals (make them members of a struct: P, EV, SHM, TLS, W, M, ADM or ACC; gather_globals.py does it): $loose"; fi

# 3. the section map: "N. TITLE..." lines of the top banner against the "/* ====... N. TITLE" headers
awk '/^ \* +[0-9]+\. / { sub(/^ \* +/, ""); t = $0; sub(/:.*/, "", t); print t } /^ \*\/$/ { exit }' "$src" >"$tmp/map"
grep -E '^/\* =+ [0-9]+\. ' "$src" | sed -E 's#^/\* =+ ##; s# \*/$##' >"$tmp/headers"
n=$(wc -l <"$tmp/headers")
if [ "$n" -lt 2 ]; then fail section_map_matches_headers "found $n section headers (the check is broken)"
elif ! diff -q "$tmp/map" "$tmp/headers" >/dev/null; then
	fail section_map_matches_headers "the banner's list and the headers differ (< banner, > headers): $(diff "$tmp/map" "$tmp/headers" | grep '^[<>]' | tr '\n' ' ')"
elif ! awk '{ split($0, a, "."); if (a[1] != NR) exit 1 }' "$tmp/headers"; then
	fail section_map_matches_headers "sections are not numbered 1..$n in file order: $(tr '\n' ' ' <"$tmp/headers")"
else pass section_map_matches_headers; fi

exit $failed
