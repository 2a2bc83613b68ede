#!/bin/bash
# lb alert_command: post one lb event to a Slack-compatible incoming webhook, and mail it.
#
#   [global]
#   alert_command = /usr/local/bin/lb-alert-webhook
#
# lb writes one JSON event on stdin, e.g.
#   {"time":"2026-11-23T10:00:00Z","kind":"server_down","pool":"api","server":"a1",
#    "reason":"health check: connect refused"}
# kinds: server_down server_up circuit_open circuit_close cert_expiring (cert events name the file
# in "cert"; pool/server may be empty).  An unknown kind is still posted.
#
# Settings (environment, else /etc/lb/alert.env, a shell file of VAR=value lines; the environment
# wins over the file; LB_ALERT_ENV names another file):
#   LB_ALERT_WEBHOOK_URL   http(s) URL of the webhook (Slack, Mattermost, Rocket.Chat, ...)
#   LB_ALERT_MAIL_TO       comma-separated addresses; mailed when sendmail or mail is installed
#   LB_ALERT_MAIL_FROM     optional From: for sendmail
# At least one of URL or MAIL_TO must be set.
#
# Exit: 0 delivered everywhere configured; 1 a delivery failed (reason on stderr);
# 2 bad configuration or an event that is not a JSON object (still posted, raw, if possible).
# Bounded: stdin 2 s, webhook ~5 s (2 attempts of at most 2 s, 1 s apart; killed at 7 s), mail 3 s.
# Needs bash, python3 (standard library only), curl, coreutils `timeout`.
set -u
umask 077
PATH=${PATH:-/usr/local/bin:/usr/bin:/bin}

die() { echo "lb-alert-webhook: $*" >&2; exit "${2:-1}"; }

# --- settings: the environment wins over the file ---------------------------------------------
env_file=${LB_ALERT_ENV:-/etc/lb/alert.env}
if [ -r "$env_file" ]; then
	saved=$(declare -p LB_ALERT_WEBHOOK_URL LB_ALERT_MAIL_TO LB_ALERT_MAIL_FROM 2>/dev/null)
	set -a
	# shellcheck source=/dev/null
	. "$env_file" || die "cannot read $env_file" 2
	set +a
	eval "$saved"
fi
url=${LB_ALERT_WEBHOOK_URL:-}
mail_to=${LB_ALERT_MAIL_TO:-}
[ -n "$url" ] || [ -n "$mail_to" ] || die "neither LB_ALERT_WEBHOOK_URL nor LB_ALERT_MAIL_TO is set (environment or $env_file)" 2
case $url in
'' | http://* | https://*) ;;
*) die "LB_ALERT_WEBHOOK_URL must be an http:// or https:// URL" 2 ;;
esac
case $url in *[[:space:]\"\\]*) die "LB_ALERT_WEBHOOK_URL contains spaces, quotes or backslashes" 2 ;; esac

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lb-alert.XXXXXX") || die "mktemp failed"
trap 'rm -rf "$tmp"' EXIT

# --- the event: at most 64 KiB, read within 2 s ------------------------------------------------
timeout 2 head -c 65536 >"$tmp/event"
[ -s "$tmp/event" ] || die "no event on stdin" 2

# python3 -I: isolated from PYTHON* variables and user site-packages.  Modes:
#   slack   -> {"text": ...} (JSON, ASCII, one line)
#   subject -> the summary as one line without control characters (mail subject)
#   body    -> summary and the whole event, plain text (mail -s)
#   mail    -> an RFC 5322 message for sendmail -t (headers cannot be injected)
# Exits 3 after writing its output when the input was not a JSON object.
render() {
	python3 -I -c '
import json, os, socket, sys
from email.message import EmailMessage
from email.policy import SMTP

mode, path = sys.argv[1], sys.argv[2]
raw = open(path, "rb").read().decode("utf-8", "replace")
try:
    ev = json.loads(raw)
    bad = not isinstance(ev, dict)
except ValueError:
    bad = True
if bad:
    ev = {}

def field(name):
    v = ev.get(name)
    return "" if v is None else v if isinstance(v, str) else json.dumps(v)

kind, pool, server = field("kind"), field("pool"), field("server")
reason, cert, when = field("reason"), field("cert"), field("time")
target = "/".join(x for x in (pool, server) if x) or "-"
kinds = {  # kind: (Slack emoji, summary)
    "server_down": (":red_circle:", "server %s is DOWN" % target),
    "server_up": (":large_green_circle:", "server %s is UP" % target),
    "circuit_open": (":warning:", "circuit OPEN for server %s" % target),
    "circuit_close": (":white_check_mark:", "circuit CLOSED for server %s" % target),
    "cert_expiring": (":hourglass:", "certificate %s is expiring" % (cert or target)),
}
if bad:
    emoji, title, reason = ":question:", "unreadable event", raw[:500]
else:
    emoji, title = kinds.get(kind, (":bell:", "event %s for %s" % (kind or "(no kind)", target)))
summary = "[lb %s] %s" % (socket.gethostname(), title)
if reason:
    summary += ": " + reason
if when:
    summary += " (%s)" % when
subject = " ".join("".join(c if c.isprintable() else " " for c in summary).split())[:200]
body = summary + "\n\nevent:\n" + (raw if bad else json.dumps(ev, indent=2, ensure_ascii=False)) + "\n"

if mode == "slack":
    # Slack gives &, <, > a meaning (<!channel> mentions, links): escape them, nothing else.
    text = (emoji + " " + summary).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    sys.stdout.write(json.dumps({"text": text}) + "\n")
elif mode == "subject":
    sys.stdout.write(subject + "\n")
elif mode == "body":
    sys.stdout.write(body)
else:
    m = EmailMessage(policy=SMTP)
    m["To"] = os.environ["LB_ALERT_MAIL_TO"]
    if os.environ.get("LB_ALERT_MAIL_FROM"):
        m["From"] = os.environ["LB_ALERT_MAIL_FROM"]
    m["Subject"] = subject
    m.set_content(body)
    sys.stdout.buffer.write(m.as_bytes())
sys.exit(3 if bad else 0)
' "$1" "$tmp/event"
}

status=0
render slack >"$tmp/payload"
case $? in
0) ;;
3) echo "lb-alert-webhook: the event is not a JSON object; sending it raw" >&2; status=2 ;;
*) die "could not format the event (python3 missing?)" ;;
esac

# --- webhook -----------------------------------------------------------------------------------
if [ -n "$url" ]; then
	# The URL (a secret) goes in a curl config on stdin, not on the command line.
	# 2 attempts at most (retry on refused/timeouts/408/429/5xx), 2 s each, 1 s apart; the outer
	# timeout is a backstop.
	code=$(printf 'url = "%s"\n' "$url" | timeout -k 1 7 curl --config - --silent --show-error \
		--proto =http,https --connect-timeout 2 --max-time 2 \
		--retry 1 --retry-delay 1 --retry-max-time 4 --retry-connrefused \
		-H 'Content-Type: application/json' --data-binary "@$tmp/payload" \
		-o "$tmp/response" -w '%{http_code}' 2>"$tmp/curl.err")
	rc=$?
	if [ $rc -ne 0 ] || [ "${code:-000}" -lt 200 ] || [ "${code:-000}" -ge 300 ]; then
		msg=$(grep -v '^Warning' "$tmp/curl.err" | tail -n 1 | head -c 300)
		[ $rc -eq 124 ] && msg="timed out"
		body=$(head -c 200 "$tmp/response" 2>/dev/null | tr -s '\r\n\t' '   ')
		echo "lb-alert-webhook: webhook post failed (curl exit $rc, HTTP ${code:-000}): ${msg}${body:+ response: $body}" >&2
		[ $status -eq 0 ] && status=1
	fi
fi

# --- mail --------------------------------------------------------------------------------------
if [ -n "$mail_to" ]; then
	case $mail_to${LB_ALERT_MAIL_FROM:-} in
	*[[:cntrl:]]*) echo "lb-alert-webhook: LB_ALERT_MAIL_TO or LB_ALERT_MAIL_FROM contains control characters" >&2; status=2 ;;
	*)
		sendmail_bin=$(command -v sendmail || true)
		[ -z "$sendmail_bin" ] && [ -x /usr/sbin/sendmail ] && sendmail_bin=/usr/sbin/sendmail
		mail_bin=$(command -v mail || true)
		if [ -n "$sendmail_bin" ]; then
			export LB_ALERT_MAIL_TO LB_ALERT_MAIL_FROM="${LB_ALERT_MAIL_FROM:-}"
			render mail >"$tmp/message"
			if ! timeout -k 1 3 "$sendmail_bin" -oi -t <"$tmp/message" 2>"$tmp/mail.err"; then
				echo "lb-alert-webhook: $sendmail_bin failed: $(head -c 300 "$tmp/mail.err" | tr -s '\r\n' '  ')" >&2
				[ $status -eq 0 ] && status=1
			fi
		elif [ -n "$mail_bin" ]; then
			subject=$(render subject)
			IFS=', ' read -r -a rcpts <<<"$mail_to"
			if ! render body | timeout -k 1 3 "$mail_bin" -s "$subject" -- "${rcpts[@]}" 2>"$tmp/mail.err"; then
				echo "lb-alert-webhook: $mail_bin failed: $(head -c 300 "$tmp/mail.err" | tr -s '\r\n' '  ')" >&2
				[ $status -eq 0 ] && status=1
			fi
		else
			echo "lb-alert-webhook: LB_ALERT_MAIL_TO is set but neither sendmail nor mail is installed" >&2
			[ $status -eq 0 ] && status=1
		fi
		;;
	esac
fi
exit $status
