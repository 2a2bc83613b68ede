#!/bin/bash
# Checks of lb.c's shape that no compiler makes; one PASS or FAIL line each, in the suites' style.
#   code/exported_symbols_carry_lb_   every external symbol lb.o defines is lb_* (or main)
#   code/file_state_defined_once      no `static TYPE g_NAME` declared twice (a tentative definition
#                                     before the real one compiles silently into one object)
#   code/file_state_in_structs        mutable file-scope state lives in the named structs (P, EV, SHM, TLS, W,
#                                     M, ADM, ACC: gather_globals.py); a loose `static ... g_NAME` is one of
#                                     the allow-list below (add a new global to a struct instead)
#   code/section_map_matches_headers  the top banner's section list is the section headers, in file order
#   code/no_duplicates_in_lb_c        `duplicates` (the developers' library tool) finds no pair of places in
#                                     lb.c / lb.h beyond the allowed ones below (reported as skipped where it is absent)
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

# 4. no new copies inside lb.c: `duplicates` names one row per pair of files (the longest shared run,
#    "+N more runs" for the rest), so lb.c is cut into one file per function (NAME.c; a second definition
#    of a name, as under #ifdef, NAME~2.c) and one per stretch of file-scope text (after~NAME.c: what
#    follows function NAME; head.c: what precedes the first), beside lb.h: each row then names the two
#    functions, a description that line numbers moving do not change. A pair not allowed below fails.
#    To allow one (where both copies must stay: say why on its line), or drop one no longer found, edit
#    the list: "NAME ~ NAME", the two names in sort order.
allowed_dups='
admin_call ~ admin_call                      switch cases: build an answer, admin_reply it (shape)
backend_write ~ client_write                 the two directions of the byte mover: other buffers and states (shape)
conf_rt_free ~ lb_conf_free                  runs of free() of different fields (shape)
cert_load ~ cert_load~2                      the certificate loader of each build (BearSSL, OpenSSL): the same checks, other library calls
lb_conf_free ~ lb_conf_free                  free() loops over a route'"'"'s lists, one per list (shape)
lb_parse_rate_limit ~ sem_connection         str_ieq else-if chains over different words (shape)
lb_parse_rate_limit ~ server_option          str_ieq else-if chains over different words (shape)
lb_parse_request ~ lb_parse_response         the head parse'"'"'s opening: clear the output and struct head_sem (to fold)
metrics_servers ~ metrics_servers            rows of the per-server metrics table (data)
on_event ~ on_event                          switch cases: one handler per kind (shape)
proxy_step ~ request_head_step               closing on an incomplete PROXY header / request head, each its own throttle slot (to fold)
request_body_step ~ response_body_step       chunked body framing of each direction: other buffers and fields (shape)
sem_connection ~ server_option               str_ieq else-if chains over different words (shape)
'
split_lb_c() { # lb.c DIR
	awk -v dir="$2" '
		function flush_to(f,   i) { for (i = 1; i <= nbuf; i++) print buf[i] > f; close(f); nbuf = 0 }
		function fname(n) { seen[n]++; return n (seen[n] > 1 ? "~" seen[n] : "") }
		BEGIN { chunk = "head" }
		infn {
			print > (dir "/" cur ".c")
			if ($0 ~ /^}/) { close(dir "/" cur ".c"); infn = 0; chunk = "after~" cur }
			next
		}
		/^\{/ {                                 # a function body: its header is the last line at column 0 before it
			h = nbuf
			while (h > 0 && buf[h] !~ /^[A-Za-z_]/)
				h--
			if (h == 0) { buf[++nbuf] = $0; next }
			line = buf[h]
			sub(/^__attribute__\(\(.*\)\) */, "", line)
			sub(/\(.*/, "", line)
			n = split(line, w, /[^A-Za-z0-9_]+/)
			cur = fname(w[n] != "" ? w[n] : w[n - 1])
			keep = nbuf; nbuf = h - 1
			flush_to(dir "/" chunk ".c")
			for (i = h; i <= keep; i++)
				print buf[i] > (dir "/" cur ".c")
			print > (dir "/" cur ".c")
			infn = 1
			next
		}
		{ buf[++nbuf] = $0 }
		END { flush_to(dir "/" chunk ".c") }
	' "$1"
}
if ! command -v duplicates >/dev/null 2>&1; then
	echo "PASS code/no_duplicates_in_lb_c (skipped: duplicates is not on PATH; the tool lives in the developers' library, not in Debian)"
else
	mkdir "$tmp/split"
	split_lb_c "$src" "$tmp/split"
	cp "$(dirname "$src")/lb.h" "$tmp/split/"
	duplicates --repo "$tmp/split" --most 200 --seconds 60 >"$tmp/dups" 2>&1
	# "NAME ~ NAME<TAB>the row" for each row: the names without .c, in sort order; the row's lines count
	# from the start of each piece
	grep -E '^D[0-9]+ ' "$tmp/dups" | while read -r _ x _ y rest; do
		a=${x%%:*} b=${y%%:*}; a=${a%.c} b=${b%.c}
		if [[ "$a" > "$b" ]]; then set -- "$b" "$a"; else set -- "$a" "$b"; fi
		printf '%s ~ %s\t%s ~ %s %s\n' "$1" "$2" "$x" "$y" "$rest"
	done >"$tmp/pairs"
	printf '%s\n' "$allowed_dups" | awk 'NF >= 3 { print $1, $2, $3 }' >"$tmp/allowed"
	new=$(awk -F '\t' 'NR == FNR { ok[$0] = 1; next } !($1 in ok) { printf "%s; ", $2 }' "$tmp/allowed" "$tmp/pairs")
	gone=$(awk -F '\t' 'NR == FNR { seen[$1] = 1; next } !($0 in seen) { printf "%s; ", $0 }' "$tmp/pairs" "$tmp/allowed")
	if ! grep -qE '^([0-9]+ pairs? of places|no duplicates)' "$tmp/dups"; then
		fail no_duplicates_in_lb_c "duplicates gave no answer: $(head -3 "$tmp/dups" | tr '\n' ' ')"
	elif grep -q '^incomplete:' "$tmp/dups"; then
		fail no_duplicates_in_lb_c "duplicates did not read everything: $(grep -m1 '^incomplete:' "$tmp/dups")"
	elif [ -n "$new" ]; then
		fail no_duplicates_in_lb_c "new copies in lb.c (NAME.c:LINES is a function, after~NAME.c the file-scope text after it, lines counted from its start; fold each into one, or allow the pair in tests/code_checks.sh saying why): ${new%; }"
	else
		pass "no_duplicates_in_lb_c ($(wc -l <"$tmp/pairs") allowed pairs${gone:+; no longer found, drop from the list: ${gone%; }})"
	fi
fi

exit $failed
