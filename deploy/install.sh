#!/bin/bash
# deploy/install.sh: make a fresh Debian 12 host an lb node of the HA pair, from this checkout.
#
#   deploy/install.sh               as root: install and start everything (idempotent: run it again
#                                   after changing the settings or pulling a new lb)
#   deploy/install.sh --render DIR  write every file it would install under DIR (DIR/etc/...,
#                                   DIR/usr/local/...) and change nothing else: no package, user,
#                                   service or kernel setting (tests/deploy2.sh checks the output)
#
# Settings: /etc/lb/deploy.env (LB_DEPLOY_ENV names another file; the environment wins), shell
# VAR=value lines.  cloud-init-lb.yaml and stackscript-lb.sh write it.  Only LB_ROLE, LB_SELF_IP,
# LB_PEER_IP and LB_VIP are required; see deploy/README.md for all:
#   LB_ROLE=primary|secondary   keepalived priority 150|100, unattended reboot at 04:00|04:30
#   LB_SELF_IP, LB_PEER_IP      this node's and the peer's private addresses (VRRP, admin API)
#   LB_VIP                      the floating IP (Linode: the shared address), LB_VIP_PREFIX (32)
#   LB_VIP_DEV                  eth0 (ARP failover, default) or lo (BGP failover with lelastic/FRR)
#   LB_IFACE (eth0) LB_VRID (51) LB_PREEMPT_DELAY (10)
#   LB_ADMIN_V4 / LB_ADMIN_V6   networks that may SSH in, nft set syntax without braces
#                               ("203.0.113.0/24, 198.51.100.7"); unset: nobody (documentation
#                               addresses stay)
#   LB_MONITOR_V4 / LB_MONITOR_V6  Prometheus / Netdata hosts; LB_PEER_V6 the peer's IPv6
#   LB_BACKENDS                 "app1 192.168.140.21:8080, app2 192.168.140.22:8080" for the
#                               starter /etc/lb/config.ini (written only when there is none)
#   LB_ALERT_WEBHOOK_URL, LB_ALERT_MAIL_TO          -> /etc/lb/alert.env (alert_command)
#   LINODE_API_TOKEN, LINODE_ID, LB_HA_LINODE_MODE, LINODE_REGION, LB_HA_BGP_SERVICE
#                                                   -> /etc/lb/ha.env (keepalived-notify.sh)
#   LB_AUTO_REBOOT=on|off       unattended-upgrades reboots after kernel/libc updates, staggered
#                               by role so both nodes are never down at once (default on)
set -euo pipefail
umask 022
SRC=$(cd "$(dirname "$0")/.." && pwd)
D=$SRC/deploy
OUT=""
if [ "${1:-}" = --render ]; then
	[ -n "${2:-}" ] || { echo "usage: install.sh [--render DIR]" >&2; exit 2; }
	OUT=$(mkdir -p "$2" && cd "$2" && pwd)
fi
say() { echo "install.sh: $*" >&2; }
die() { say "$*"; exit 1; }
doing() { [ -z "$OUT" ]; } # true when installing for real

env_file=${LB_DEPLOY_ENV:-/etc/lb/deploy.env}
if [ -r "$env_file" ]; then
	saved=$(declare -p | grep -E '^declare -[-a-zA-Z]* (LB_|LINODE_)' || true)
	set -a
	# shellcheck source=/dev/null
	. "$env_file"
	set +a
	eval "$saved"
fi
: "${LB_ROLE:?set LB_ROLE=primary or secondary (in $env_file)}"
: "${LB_SELF_IP:?set LB_SELF_IP, the private address of this node}"
: "${LB_PEER_IP:?set LB_PEER_IP, the private address of the other node}"
: "${LB_VIP:?set LB_VIP, the floating IP}"
case $LB_ROLE in
primary) prio=150 reboot_time=04:00 ;;
secondary) prio=100 reboot_time=04:30 ;;
*) die "LB_ROLE must be primary or secondary" ;;
esac
ip_ok() { [[ $1 =~ ^[0-9A-Fa-f:.]+$ ]]; }
cidrs_ok() { [[ $1 =~ ^[0-9A-Fa-f:./,\ ]+$ ]]; }
for v in LB_SELF_IP LB_PEER_IP LB_VIP; do ip_ok "${!v}" || die "$v is not an IP address: ${!v}"; done
for v in LB_ADMIN_V4 LB_ADMIN_V6 LB_MONITOR_V4 LB_MONITOR_V6 LB_PEER_V6; do
	[ -z "${!v:-}" ] || cidrs_ok "${!v}" || die "$v: addresses and CIDRs separated by commas only"
done
iface=${LB_IFACE:-eth0} vip_dev=${LB_VIP_DEV:-$iface} vrid=${LB_VRID:-51}
[[ $iface =~ ^[a-z0-9.]+$ && $vip_dev =~ ^[a-z0-9.]+$ ]] || die "LB_IFACE / LB_VIP_DEV: interface names"
if ! [[ $vrid =~ ^[0-9]+$ ]] || [ "$vrid" -lt 1 ] || [ "$vrid" -gt 255 ]; then die "LB_VRID: 1..255"; fi
node_name=${LB_NODE_NAME:-$(hostname -s)}

# put SRC DEST MODE: install a file (under $OUT when rendering)
put() {
	local src=$1 dest=$OUT$2 mode=$3
	mkdir -p "$(dirname "$dest")"
	install -m "$mode" "$src" "$dest"
}
# write DEST MODE: stdin to a file
write() {
	local dest=$OUT$1 mode=$2 t
	mkdir -p "$(dirname "$dest")"
	t=$(mktemp "$dest.XXXXXX")
	cat >"$t"
	chmod "$mode" "$t"
	mv -f "$t" "$dest"
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# --- packages and lb ------------------------------------------------------------------------
pkgs="gcc make libc6-dev libbearssl-dev libinih-dev python3 curl ca-certificates nftables keepalived
      fail2ban python3-systemd unattended-upgrades apt-listchanges certbot prometheus-node-exporter"
if doing; then
	[ "$(id -u)" = 0 ] || die "run as root (or --render DIR)"
	grep -q 'VERSION_ID="12"' /etc/os-release || say "warning: written for Debian 12"
	export DEBIAN_FRONTEND=noninteractive
	# shellcheck disable=SC2086
	apt-get install -y -q --no-install-recommends $pkgs
	make -C "$SRC" lb
	install -m 755 "$SRC/lb" /usr/local/bin/lb
	getent group sshusers >/dev/null || groupadd sshusers
	getent passwd lb >/dev/null ||
		useradd --system --user-group --home-dir /var/lib/lb --shell /usr/sbin/nologin lb
	install -d -o root -g lb -m 2770 /etc/lb
fi

# --- lb configuration (a starter, only when there is none) --------------------------------------
if [ ! -e "$OUT/etc/lb/config.ini" ]; then
	servers=""
	IFS=',' read -r -a list <<<"${LB_BACKENDS:-app1 127.0.0.1:8080}"
	server_re='^[A-Za-z0-9_-]+ [][A-Za-z0-9.:-]+( [a-z_=0-9 ]*)?$'
	for s in "${list[@]}"; do
		s=$(echo "$s" | xargs)
		[[ $s =~ $server_re ]] || die "LB_BACKENDS: '$s' is not 'NAME HOST:PORT [options]'"
		servers+="server = $s"$'\n'
	done
	alert=""
	[ -n "${LB_ALERT_WEBHOOK_URL:-}${LB_ALERT_MAIL_TO:-}" ] && alert="alert_command = /usr/local/bin/lb-alert-webhook"
	monitors=${LB_MONITOR_V4:+, $LB_MONITOR_V4}
	write /etc/lb/config.ini 660 <<EOF
; lb on $node_name ($LB_ROLE of the HA pair), written by deploy/install.sh; edit freely:
; install.sh never overwrites it.  Check: lb -t -c /etc/lb/config.ini; apply: systemctl reload lb
[global]
workers = auto
shutdown_timeout = 30s
pid_file = /run/lb/lb.pid
$alert

[log]
access = /var/log/lb/access.log
format = json
rotate = 1h
retention = 14d
error = /var/log/lb/error.log

; keepalived checks http://127.0.0.1:8404/healthz; Prometheus scrapes /metrics from the
; monitoring hosts (nftables lets only them and the peer reach 8404)
[admin]
bind = *:8404
allow = 127.0.0.0/8, $LB_PEER_IP$monitors

; the floating IP: lb listens on it on both nodes (net.ipv4.ip_nonlocal_bind = 1), so the backup
; serves the moment keepalived moves the address
[listener web]
bind = $LB_VIP:80
pool = app

[pool app]
$servers
EOF
	[ -n "${LB_BACKENDS:-}" ] || say "no LB_BACKENDS: /etc/lb/config.ini has a placeholder server 127.0.0.1:8080"
fi

# --- systemd unit, kernel settings, SSH, firewall --------------------------------------------
put "$D/lb.service" /etc/systemd/system/lb.service 644
put "$D/sysctl.d/90-lb.conf" /etc/sysctl.d/90-lb.conf 644
put "$D/sshd_config.d/50-lb-hardening.conf" /etc/ssh/sshd_config.d/50-lb-hardening.conf 644

nft_set() { # NAME VALUE: replace `define NAME = {...}` when VALUE is set
	local name=$1 value=$2
	[ -n "$value" ] || return 0
	sed -i "s#^define $name = .*#define $name = { $value }#" "$tmp/nftables.conf"
}
cp "$D/nftables.conf" "$tmp/nftables.conf"
nft_set ADMIN_V4 "${LB_ADMIN_V4:-}"
nft_set ADMIN_V6 "${LB_ADMIN_V6:-}"
nft_set PEER_V4 "$LB_PEER_IP"
nft_set PEER_V6 "${LB_PEER_V6:-}"
nft_set MONITOR_V4 "${LB_MONITOR_V4:-}"
nft_set MONITOR_V6 "${LB_MONITOR_V6:-}"
put "$tmp/nftables.conf" /etc/nftables.conf 644
[ -n "${LB_ADMIN_V4:-}${LB_ADMIN_V6:-}" ] ||
	say "warning: no LB_ADMIN_V4/V6: the firewall lets nobody in by SSH (Lish console still works)"

# --- alerts, HA ---------------------------------------------------------------------------------
put "$D/alert-webhook.sh" /usr/local/bin/lb-alert-webhook 755
# certbot --deploy-hook: installs renewed certificates as /etc/lb/certs/NAME.pem and reloads lb
put "$D/certbot-deploy-hook.sh" /usr/local/sbin/lb-certbot-deploy-hook 755
if [ -n "${LB_ALERT_WEBHOOK_URL:-}${LB_ALERT_MAIL_TO:-}" ]; then
	{
		[ -z "${LB_ALERT_WEBHOOK_URL:-}" ] || printf 'LB_ALERT_WEBHOOK_URL=%q\n' "$LB_ALERT_WEBHOOK_URL"
		[ -z "${LB_ALERT_MAIL_TO:-}" ] || printf 'LB_ALERT_MAIL_TO=%q\n' "$LB_ALERT_MAIL_TO"
	} | write /etc/lb/alert.env 640
fi

put "$D/keepalived-notify.sh" /usr/local/sbin/lb-keepalived-notify 755
"$D/render.sh" "$D/keepalived.conf.in" "$tmp/keepalived.conf" ROUTER_ID="$node_name" PRIORITY=$prio \
	IFACE="$iface" SELF_IP="$LB_SELF_IP" PEER_IP="$LB_PEER_IP" VRID="$vrid" \
	VIP="$LB_VIP/${LB_VIP_PREFIX:-32}" VIP_DEV="$vip_dev" PREEMPT_DELAY="${LB_PREEMPT_DELAY:-10}" \
	NOTIFY=/usr/local/sbin/lb-keepalived-notify
put "$tmp/keepalived.conf" /etc/keepalived/keepalived.conf 644
put "$D/keepalived.service.d/lb.conf" /etc/systemd/system/keepalived.service.d/lb.conf 644
{
	echo "# keepalived-notify.sh settings, written by deploy/install.sh (root only: API token)"
	echo "LB_HA_LOG=/var/log/lb-keepalived.log"
	echo "LB_HA_ALERT_COMMAND=/usr/local/bin/lb-alert-webhook"
	for v in LINODE_API_TOKEN LINODE_ID LB_HA_LINODE_MODE LINODE_REGION LB_HA_BGP_SERVICE; do
		[ -z "${!v:-}" ] || printf '%s=%q\n' "$v" "${!v}"
	done
	printf 'LB_HA_FLOATING_IPS=%q\n' "$LB_VIP"
} | write /etc/lb/ha.env 600

# --- unattended upgrades, fail2ban, journald retention -----------------------------------------
write /etc/apt/apt.conf.d/20auto-upgrades 644 <<'EOF'
APT::Periodic::Update-Package-Lists "1";
APT::Periodic::Unattended-Upgrade "1";
APT::Periodic::AutocleanInterval "7";
EOF
reboot=true
[ "${LB_AUTO_REBOOT:-on}" = off ] && reboot=false
write /etc/apt/apt.conf.d/52lb-unattended-upgrades 644 <<EOF
// deploy/install.sh ($LB_ROLE): security updates every day; when one needs a reboot (kernel,
// libc), reboot at $reboot_time: the primary at 04:00, the secondary at 04:30, so the pair is never
// down at once (keepalived moves the floating IP away first: see deploy/README.md).
Unattended-Upgrade::Automatic-Reboot "$reboot";
Unattended-Upgrade::Automatic-Reboot-Time "$reboot_time";
Unattended-Upgrade::Automatic-Reboot-WithUsers "true";
Unattended-Upgrade::Remove-Unused-Kernel-Packages "true";
Unattended-Upgrade::Remove-Unused-Dependencies "true";
Unattended-Upgrade::SyslogEnable "true";
EOF
put "$D/fail2ban/jail.d/lb-sshd.local" /etc/fail2ban/jail.d/lb-sshd.local 644
put "$D/journald.conf.d/50-lb-retention.conf" /etc/systemd/journald.conf.d/50-lb-retention.conf 644

if ! doing; then
	say "rendered into $OUT"
	exit 0
fi

# --- check, then start ------------------------------------------------------------------------
lb -t -c /etc/lb/config.ini
nft -c -f /etc/nftables.conf
sshd -t
# keepalived 2.2.7's --config-test kills itself (SIGTERM) when it checks a script that runs as
# another user than root, whatever the file: test a copy whose check runs as root
sed 's/^\([[:space:]]*user\) nobody$/\1 root/' /etc/keepalived/keepalived.conf >"$tmp/keepalived-test.conf"
keepalived --config-test=/dev/stderr -f "$tmp/keepalived-test.conf"
chown root:lb /etc/lb/config.ini /etc/lb/alert.env 2>/dev/null || true
sysctl --system >/dev/null
systemctl daemon-reload
# start what is stopped, reload what runs (a restart of keepalived on the master would move the
# floating IP; a restart of nftables would flush fail2ban's table)
start_or_reload() {
	systemctl enable "$1"
	if systemctl is-active -q "$1"; then systemctl reload "$1"; else systemctl start "$1"; fi
}
for unit in nftables lb ssh keepalived fail2ban; do start_or_reload "$unit"; done
systemctl enable --now prometheus-node-exporter unattended-upgrades
systemctl restart systemd-journald
say "done: $(systemctl is-active lb keepalived nftables fail2ban prometheus-node-exporter | tr '\n' ' ')"
say "check: curl -s http://127.0.0.1:8404/healthz; ip -br addr show $iface; journalctl -t lb-keepalived"
