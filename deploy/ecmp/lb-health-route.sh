#!/bin/sh
# lb-health-route.sh — keep this lb node's share of a shared address announced only while lb is healthy.
#
# Active-active lb nodes behind ECMP (deploy/README.md "Active-active"): every node carries the shared
# /32 on its loopback and announces it (FRR bgpd to Linode's route servers, or any router doing
# multipath). When this node's lb stops answering /healthz, the announcement must go, so the
# router stops hashing clients to a node that refuses them; when lb is healthy again it comes back.
#
#   lb-health-route.sh [-u URL] [-i SECONDS] [-f FALL] [-r RISE] [-t SECONDS] [-R SECONDS]
#
#   -u  lb's health URL (default http://127.0.0.1:8404/healthz: 200 while lb serves, 503 while it stops)
#   -i  seconds between checks (default 1; fractions are fine)
#   -f  failed checks in a row that withdraw (default 2)
#   -r  passed checks in a row that announce (default 2)
#   -t  timeout of one check in seconds (default 1)
#   -R  seconds between repeats of the current decision (default 30; 0 = never): FRR restarted
#       meanwhile (its running config lost) gets the announcement back
#
# What announce and withdraw do (environment):
#   LB_ANNOUNCE, LB_WITHDRAW  shell commands; when unset, FRR's: the network statement of the shared
#                             address in `router bgp $BGP_ASN` added (with route-map $BGP_ROUTE_MAP)
#                             or removed with vtysh, which bgpd turns into an UPDATE or a WITHDRAW
#                             to its neighbours at once (deploy/ecmp/frr.conf.in has no network
#                             statement of its own: nothing is announced before lb is healthy)
#   VIP                       the shared address (FRR default commands; required with them)
#   BGP_ASN                   the node's AS number (FRR default commands; required with them)
#   BGP_ROUTE_MAP             default primary (Linode's community 65000:1, frr.conf.in)
# On SIGTERM/SIGINT (a planned stop: `systemctl stop lb-health-route`) it withdraws first, then exits.
# One line on stderr per transition (repeats are silent unless they fail): "lb-health-route: withdraw (2 failed checks: 000)".
set -u

URL=http://127.0.0.1:8404/healthz
INTERVAL=1
FALL=2
RISE=2
TIMEOUT=1
REPEAT=30
while getopts u:i:f:r:t:R: o; do
	case $o in
	u) URL=$OPTARG ;;
	i) INTERVAL=$OPTARG ;;
	f) FALL=$OPTARG ;;
	r) RISE=$OPTARG ;;
	t) TIMEOUT=$OPTARG ;;
	R) REPEAT=$OPTARG ;;
	*) sed -n '9,17p' "$0" >&2; exit 2 ;;
	esac
done

if [ -z "${LB_ANNOUNCE:-}" ] || [ -z "${LB_WITHDRAW:-}" ]; then
	if [ -z "${VIP:-}" ] || [ -z "${BGP_ASN:-}" ]; then
		echo "lb-health-route: set VIP and BGP_ASN (FRR), or LB_ANNOUNCE and LB_WITHDRAW" >&2
		exit 2
	fi
	frr="vtysh -c 'configure terminal' -c 'router bgp $BGP_ASN' -c 'address-family ipv4 unicast'"
	LB_ANNOUNCE=${LB_ANNOUNCE:-"$frr -c 'network $VIP/32 route-map ${BGP_ROUTE_MAP:-primary}'"}
	LB_WITHDRAW=${LB_WITHDRAW:-"$frr -c 'no network $VIP/32'"}
fi

state=unknown # announced, withdrawn; unknown until the first decision
ok=0
bad=0
since=$(date +%s) # of the last announce or withdraw

say() { echo "lb-health-route: $*" >&2; }

# act announced|withdrawn REASON: run the command that gets there
act() {
	since=$(date +%s)
	if [ "$1" = announced ]; then cmd=$LB_ANNOUNCE verb=announce; else cmd=$LB_WITHDRAW verb=withdraw; fi
	if sh -c "$cmd"; then
		state=$1
		[ "$2" = repeated ] || say "$verb ($2)"
	else
		say "$verb failed ($2)"
	fi
}

stop() {
	[ "$state" = withdrawn ] || act withdrawn "stopping"
	exit 0
}
trap stop TERM INT

while :; do
	code=$(curl -s -o /dev/null -w '%{http_code}' --max-time "$TIMEOUT" "$URL" 2>/dev/null)
	if [ "$code" = 200 ]; then
		ok=$((ok + 1)); bad=0
		[ "$state" != announced ] && [ "$ok" -ge "$RISE" ] && act announced "$ok passed checks"
	else
		bad=$((bad + 1)); ok=0
		[ "$state" != withdrawn ] && [ "$bad" -ge "$FALL" ] && act withdrawn "$bad failed checks: ${code:-000}"
	fi
	if [ "$REPEAT" != 0 ] && [ $(($(date +%s) - since)) -ge "$REPEAT" ]; then
		[ "$state" = unknown ] || act "$state" repeated
	fi
	# sleep in the background so that SIGTERM is handled at once
	sleep "$INTERVAL" &
	wait $! 2>/dev/null
done
