#!/bin/sh
# certbot deploy hook for lb.  Install: /usr/local/sbin/lb-certbot-deploy-hook (root:root 0755),
# then either pass it once and let certbot remember it in the renewal config:
#   certbot certonly --webroot -w /var/lib/lb/acme -d example.com \
#       --deploy-hook /usr/local/sbin/lb-certbot-deploy-hook
# or link it into /etc/letsencrypt/renewal-hooks/deploy/ to cover every certificate.
#
# certbot runs it after each successful issuance or renewal with
#   RENEWED_LINEAGE  the live directory, e.g. /etc/letsencrypt/live/example.com
#   RENEWED_DOMAINS  the certificate's names, space-separated, first one first
# It writes the chain and then the key, as one PEM file, to $LB_CERT_DIR/<first domain>.pem
# (the form lb's [tls] cert takes), then asks lb to reload.
#
# Environment (certbot passes its own environment on):
#   LB_CERT_DIR     where lb's cert files live (default /etc/lb/certs)
#   LB_CERT_GROUP   group given read access to the file (default: lb, if that group exists)
#   LB_RELOAD_CMD   shell command that reloads lb; when unset: `systemctl reload lb` under
#                   systemd, else `kill -HUP` of the pid in LB_PIDFILE
#   LB_SERVICE      unit name for systemctl (default lb)
#   LB_PIDFILE      lb's [global] pid_file, for machines without systemd
# Exit 0 when the file was installed and lb was asked to reload; otherwise non-zero with the
# reason on stderr.  Beware: certbot only logs a failing deploy hook ("Hook 'deploy-hook'
# reported error code N") and still exits 0, so monitor its log, not its exit status.
set -eu
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
me=lb-certbot-deploy-hook

die() {
	echo "$me: $*" >&2
	exit 1
}

lineage=${RENEWED_LINEAGE:-}
[ -n "$lineage" ] || die "RENEWED_LINEAGE is not set (run me from certbot's --deploy-hook)"
fullchain=$lineage/fullchain.pem
privkey=$lineage/privkey.pem
for f in "$fullchain" "$privkey"; do
	[ -r "$f" ] || die "cannot read $f"
done

# The file is named after the first domain, which is what a [tls] cert line refers to; the
# lineage directory name can differ (certbot appends -0001 on a clash, or --cert-name chose it).
set -f # RENEWED_DOMAINS may hold a wildcard: split it, do not glob it
# shellcheck disable=SC2086 # split on purpose
set -- ${RENEWED_DOMAINS:-}
set +f
domain=${1:-$(basename "$lineage")}
# A wildcard name would put '*' into a file name that every shell then globs: `*.example.com`
# becomes `_.example.com.pem`.  '/' or a leading '.' could escape or hide in the directory.
case $domain in
'*.'*) domain=_${domain#\*} ;;
esac
case $domain in
*/* | .* | '') die "refusing domain name '$domain' as a file name" ;;
esac

# Refuse to replace a working file with a half-written or foreign one: lb would fail the reload
# (keeping the old generation) but the broken file would stay behind for the next restart.
grep -q -- '-----BEGIN CERTIFICATE-----' "$fullchain" || die "$fullchain holds no certificate"
grep -q -- '-----BEGIN .*PRIVATE KEY-----' "$privkey" || die "$privkey holds no private key"

dir=${LB_CERT_DIR:-/etc/lb/certs}
mkdir -p -- "$dir"
target=$dir/$domain.pem

# Same directory as the target, so that mv is a rename(2): lb (or a reload racing with us) sees
# either the old file or the new one, never a partial one.  umask first: the key must never be
# readable by others, not even for the moment between creation and chmod.
umask 077
tmp=$(mktemp "$dir/.$domain.pem.XXXXXX")
trap 'rm -f -- "$tmp"' EXIT
{
	cat -- "$fullchain"
	# fullchain.pem should end with a newline; if not, the key's BEGIN line would be glued
	# to the last END line and no PEM parser would find the key
	[ -z "$(tail -c 1 -- "$fullchain")" ] || echo
	cat -- "$privkey"
} >"$tmp"
# lb runs as the unprivileged user lb (deploy/lb.service) and must read the key; nobody else may.
group=${LB_CERT_GROUP:-}
if [ -z "$group" ] && getent group lb >/dev/null 2>&1; then
	group=lb
fi
[ -z "$group" ] || chgrp -- "$group" "$tmp"
chmod 0640 "$tmp"
# Data on disk before the rename, the rename on disk before the reload: after a crash the target
# is the old file or the complete new one, never an empty one.
sync -- "$tmp" 2>/dev/null || sync
mv -f -- "$tmp" "$target"
trap - EXIT
sync -- "$dir" 2>/dev/null || sync
echo "$me: installed $target for ${RENEWED_DOMAINS:-$domain}"

# lb reads its certificates at start and on reload (SIGHUP) only.
if [ -n "${LB_RELOAD_CMD:-}" ]; then
	sh -c "$LB_RELOAD_CMD" || die "installed $target, but '$LB_RELOAD_CMD' failed (exit $?)"
elif [ -d /run/systemd/system ]; then
	# the test that sd_booted(3) makes: systemd is PID 1.  Through systemctl rather than a bare
	# signal, so the unit's ExecReload checks the config first (lb -t) and a bad file shows in
	# the journal and in our exit status.
	svc=${LB_SERVICE:-lb}
	systemctl reload "$svc" || die "installed $target, but 'systemctl reload $svc' failed"
elif [ -n "${LB_PIDFILE:-}" ]; then
	pid=$(cat -- "$LB_PIDFILE" 2>/dev/null) || die "installed $target, but cannot read $LB_PIDFILE"
	case $pid in
	'' | *[!0-9]*) die "installed $target, but $LB_PIDFILE holds no pid" ;;
	esac
	kill -HUP "$pid" || die "installed $target, but cannot signal lb (pid $pid)"
else
	die "installed $target, but lb was not reloaded: set LB_RELOAD_CMD or LB_PIDFILE (no systemd)"
fi
echo "$me: asked lb to reload"
