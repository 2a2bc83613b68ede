#!/bin/bash
# Fill a template's @NAME@ placeholders:  render.sh TEMPLATE OUTPUT NAME=value...
# Every placeholder must get a value and every NAME given must occur in the template (a typo is
# an error, not a silently unfilled file).  Values may not contain newlines, '@', '"' or '\'.
# OUTPUT is written through a temporary file and renamed (mode 0644); `-` writes to stdout.
set -u
die() { echo "render.sh: $*" >&2; exit 1; }
[ $# -ge 2 ] || die "usage: render.sh TEMPLATE OUTPUT NAME=value..."
template=$1 output=$2
shift 2
[ -r "$template" ] || die "cannot read $template"
text=$(cat "$template") || exit 1
for kv in "$@"; do
	name=${kv%%=*} value=${kv#*=}
	[ "$name" != "$kv" ] || die "not NAME=value: $kv"
	case $name in '' | *[!A-Z0-9_]*) die "bad placeholder name: $name" ;; esac
	case $value in *[@\"\\]* | *$'\n'*) die "$name: value contains @, a quote, a backslash or a newline" ;; esac
	case $text in *"@$name@"*) ;; *) die "$template has no @$name@" ;; esac
	text=${text//@$name@/$value}
done
left=$(grep -o '@[A-Z0-9_]*@' <<<"$text" | sort -u | tr '\n' ' ')
[ -z "$left" ] || die "no value for: $left"
if [ "$output" = - ]; then
	printf '%s\n' "$text"
else
	tmp=$(mktemp "$output.XXXXXX") || exit 1
	if ! { printf '%s\n' "$text" >"$tmp" && chmod 644 "$tmp" && mv -f "$tmp" "$output"; }; then
		rm -f "$tmp"
		exit 1
	fi
fi
