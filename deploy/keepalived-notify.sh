#!/bin/bash
# keepalived notify script for the lb HA pair.  Install: /usr/local/sbin/lb-keepalived-notify
# (root:root 0755; keepalived's enable_script_security refuses a script others can write).
# keepalived runs it as root on every transition with:  TYPE NAME STATE PRIORITY
#   e.g. INSTANCE LB MASTER 150     (STATE: MASTER, BACKUP, FAULT or STOP)
# An optional leading `--env FILE` names the settings file (default /etc/lb/ha.env).
#
# It always logs the transition (syslog/journal tag lb-keepalived; also appended to $LB_HA_LOG).
# On MASTER, when configured, it also
#   - asks the Linode API to share the floating IP(s) with this Linode
#     (POST /v4/networking/ips/share {"linode_id": LINODE_ID, "ips": [...]}; the call SETS the
#     list of IPs shared with this Linode, so list all of them), or with LB_HA_LINODE_MODE=assign
#     moves them here (POST /v4/networking/ips/assign {"region": ..., "assignments": [...]});
#   - starts the BGP announcement service (lelastic or FRR: LB_HA_BGP_SERVICE), which is stopped
#     again on BACKUP, FAULT and STOP;
#   - runs LB_HA_ALERT_COMMAND (e.g. /usr/local/bin/lb-alert-webhook) with a JSON event on stdin.
# BACKUP/FAULT/STOP are also sent to LB_HA_ALERT_COMMAND.
#
# Settings: /etc/lb/ha.env (root:root 0600: it holds the API token), shell VAR=value lines:
#   LB_HA_LOG=/var/log/lb-keepalived.log    optional transition log file
#   LINODE_API_TOKEN=...                    personal access token, scopes ips:read_write
#                                           linodes:read_write (or LINODE_API_TOKEN_FILE=path)
#   LINODE_ID=12345678                      this Linode's ID (`curl -s -H "Metadata-Token: ..."`
#                                           169.254.169.254/v1/instance, or the Cloud Manager)
#   LB_HA_FLOATING_IPS="203.0.113.10"       space- or comma-separated addresses
#   LB_HA_LINODE_MODE=share                 share (default) or assign
#   LINODE_REGION=us-ord                    needed for assign
#   LINODE_API_URL=https://api.linode.com/v4
#   LB_HA_BGP_SERVICE=lelastic              systemd unit announcing the IP (BGP failover)
#   LB_HA_ALERT_COMMAND=/usr/local/bin/lb-alert-webhook
#   LB_HA_TEXTFILE_DIR=/var/lib/prometheus/node-exporter   node exporter's textfile directory
#                                           (Debian's default; used when it exists): the state
#                                           goes to lb_keepalived.prom there as
#                                           lb_keepalived_master{vrrp_instance="LB"} 0|1 for the
#                                           LBHAMasterCount alert
# Exit 0 when every configured action worked, 1 otherwise (keepalived logs it; the VRRP state is
# not affected).  Bounded: the API call at most 3 attempts of 5 s, about 20 s in all.
set -u
umask 077
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

env_file=/etc/lb/ha.env
if [ "${1:-}" = --env ]; then
	env_file=${2:-}
	shift 2
fi
# keepalived's arguments, reduced to safe characters (they end up in JSON and logs)
clean() { tr -cd 'A-Za-z0-9_.-' <<<"${1:-?}"; }
type=$(clean "${1:-}") name=$(clean "${2:-}") state=$(clean "${3:-}") prio=$(clean "${4:-}")

env_error=""
if [ -r "$env_file" ]; then
	set -a
	# shellcheck source=/dev/null
	. "$env_file" || env_error="cannot read $env_file (shell syntax?)"
	set +a
fi

log() {
	local msg="$*"
	logger -t lb-keepalived -- "$msg" 2>/dev/null
	if [ -n "${LB_HA_LOG:-}" ]; then
		printf '%s %s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)" "$(hostname)" "$msg" >>"$LB_HA_LOG"
	fi
	echo "lb-keepalived: $msg" >&2
}

status=0
log "$type $name is now $state (priority $prio)"
if [ -n "$env_error" ]; then
	log "$env_error: only the transition is logged"
	exit 1
fi

case $state in MASTER | BACKUP | FAULT | STOP) ;; *)
	log "unknown state '$state': nothing done"
	exit 1
	;;
esac

# --- Linode API: share (or assign) the floating IPs with this Linode --------------------------
# api METHOD PATH [BODY]: sets $code, response body in $tmp/response, curl's error in $tmp/err
api() {
	local body=()
	[ $# -ge 3 ] && body=(-H 'Content-Type: application/json' --data-binary "$3")
	# the token goes in a curl config on stdin, not on the command line (ps would show it)
	code=$(printf 'header = "Authorization: Bearer %s"\n' "$token" | timeout -k 1 20 curl --config - \
		--silent --show-error --proto =https,http --connect-timeout 5 --max-time 5 \
		--retry 2 --retry-delay 1 --retry-max-time 15 --retry-connrefused \
		-X "$1" "${body[@]}" -o "$tmp/response" -w '%{http_code}' "$url$2" 2>"$tmp/err")
	local rc=$?
	[ $rc -eq 0 ] && [ "${code:-000}" -ge 200 ] && [ "${code:-000}" -lt 300 ] && return 0
	api_error="$1 $2: curl exit $rc, HTTP ${code:-000}: $(tail -n 1 "$tmp/err" | head -c 200) $(head -c 300 "$tmp/response" 2>/dev/null | tr -s '\r\n' '  ')"
	return 1
}

linode_api() {
	local ips=${LB_HA_FLOATING_IPS:-} mode=${LB_HA_LINODE_MODE:-share} body ip list="" owner todo="" rc=0
	url=${LINODE_API_URL:-https://api.linode.com/v4} token=${LINODE_API_TOKEN:-}
	if [ -z "$token" ] && [ -n "${LINODE_API_TOKEN_FILE:-}" ]; then
		token=$(tr -d ' \t\r\n' <"$LINODE_API_TOKEN_FILE") || { log "cannot read $LINODE_API_TOKEN_FILE"; return 1; }
	fi
	[ -n "$token" ] && [ -n "$ips" ] || return 0 # not configured: nothing to do
	case ${LINODE_ID:-} in '' | *[!0-9]*) log "LINODE_ID must be this Linode's numeric ID"; return 1 ;; esac
	case $token in *[!A-Za-z0-9._-]*) log "LINODE_API_TOKEN has unexpected characters"; return 1 ;; esac
	case $url in https://* | http://127.0.0.1:* | http://localhost:*) ;; *) log "LINODE_API_URL must be https://"; return 1 ;; esac
	for ip in ${ips//,/ }; do
		case $ip in *[!0-9A-Fa-f:.]* | '') log "not an IP address: '$ip'"; return 1 ;; esac
		list="$list${list:+,}\"$ip\""
	done
	tmp=$(mktemp -d /tmp/lb-keepalived.XXXXXX) || return 1
	case $mode in
	share)
		# An address this Linode owns needs no sharing (and cannot be shared with its owner):
		# GET /networking/ips/{address} names the owner.  The share call then SETS the list of
		# addresses shared with this Linode: all the floating IPs it does not own.
		list=""
		for ip in ${ips//,/ }; do
			if api GET "/networking/ips/$ip"; then
				owner=$(python3 -I -c 'import json,sys; print(json.load(sys.stdin).get("linode_id") or "")' <"$tmp/response" 2>/dev/null)
			else
				log "Linode API: $api_error"
				owner=""
			fi
			if [ "$owner" = "$LINODE_ID" ]; then log "Linode API: $ip belongs to this Linode ($LINODE_ID): not shared"
			else list="$list${list:+,}\"$ip\""; todo="$todo $ip"; fi
		done
		if [ -n "$list" ]; then
			body="{\"linode_id\":$LINODE_ID,\"ips\":[$list]}"
			if api POST /networking/ips/share "$body"; then log "Linode API: shared$todo with Linode $LINODE_ID (HTTP $code)"
			else log "Linode API: sharing$todo with Linode $LINODE_ID FAILED: $api_error"; rc=1; fi
		fi
		;;
	assign)
		case ${LINODE_REGION:-} in '' | *[!a-z0-9-]*) log "assign needs LINODE_REGION (e.g. us-ord)"; rm -rf "$tmp"; return 1 ;; esac
		body=""
		for ip in ${ips//,/ }; do
			body="$body${body:+,}{\"address\":\"$ip\",\"linode_id\":$LINODE_ID}"
		done
		body="{\"region\":\"$LINODE_REGION\",\"assignments\":[$body]}"
		if api POST /networking/ips/assign "$body"; then log "Linode API: assigned ${ips//,/ } to Linode $LINODE_ID (HTTP $code)"
		else log "Linode API: assigning ${ips//,/ } to Linode $LINODE_ID FAILED: $api_error"; rc=1; fi
		;;
	*) log "LB_HA_LINODE_MODE must be share or assign, not '$mode'"; rc=1 ;;
	esac
	rm -rf "$tmp"
	return $rc
}

# --- BGP announcement (lelastic / FRR) ----------------------------------------------------------
bgp() {
	local unit=${LB_HA_BGP_SERVICE:-} action=$1
	[ -n "$unit" ] || return 0
	if timeout 20 systemctl "$action" "$unit"; then log "systemctl $action $unit: done"
	else log "systemctl $action $unit FAILED"; return 1; fi
}

alert() {
	local cmd=${LB_HA_ALERT_COMMAND:-}
	[ -n "$cmd" ] || return 0
	printf '{"time":"%s","kind":"vrrp_%s","pool":"","server":"%s","reason":"keepalived %s %s is now %s (priority %s)"}\n' \
		"$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${state,,}" "$(hostname)" "$type" "$name" "$state" "$prio" |
		timeout -k 1 15 "$cmd" >/dev/null 2>&1 || log "$cmd failed"
}

# --- node exporter textfile: lb_keepalived_master ------------------------------------------------
textfile() {
	local dir=${LB_HA_TEXTFILE_DIR:-/var/lib/prometheus/node-exporter} f
	[ -d "$dir" ] || return 0
	f=$(mktemp "$dir/.lb_keepalived.XXXXXX") || return 1
	if ! {
		echo "# HELP lb_keepalived_master 1 while this node's keepalived instance is MASTER (holds the floating IP)."
		echo "# TYPE lb_keepalived_master gauge"
		printf 'lb_keepalived_master{vrrp_instance="%s"} %d\n' "$name" "$([ "$state" = MASTER ] && echo 1 || echo 0)"
		echo "# HELP lb_keepalived_state_change_time_seconds When the instance entered its state (Unix time)."
		echo "# TYPE lb_keepalived_state_change_time_seconds gauge"
		printf 'lb_keepalived_state_change_time_seconds{vrrp_instance="%s",state="%s"} %s\n' "$name" "$state" "$(date +%s)"
	} >"$f" || ! chmod 644 "$f" || ! mv -f "$f" "$dir/lb_keepalived.prom"; then
		rm -f "$f"
		log "cannot write $dir/lb_keepalived.prom"
		return 1
	fi
}

textfile || status=1
if [ "$state" = MASTER ]; then
	linode_api || status=1
	bgp start || status=1
else
	bgp stop || status=1
fi
alert
exit $status
