#!/bin/bash
# lb node of an HA pair: Linode StackScript (Debian 12), the same result as cloud-init-lb.yaml
# for accounts or images without Metadata.  Create it in Cloud Manager (StackScripts > Create,
# target image Debian 12) with this file as the script, then deploy two Linodes from it: one
# "primary", one "secondary".  Linode passes the fields below as environment variables and sets
# LINODE_ID itself.  Progress: /var/log/lb-install.log (or Lish while it runs).
#
# <UDF name="LB_REPO_URL" label="lb git repository (a URL this Linode can clone)" example="https://git.example.com/ops/lb.git" />
# <UDF name="LB_REF" label="branch or tag" default="main" />
# <UDF name="LB_ROLE" label="role in the HA pair" oneOf="primary,secondary" default="primary" />
# <UDF name="ADMIN_SSH_KEY" label="public SSH key of user admin (the only way in)" />
# <UDF name="LB_ADMIN_V4" label="networks allowed to SSH in, comma-separated CIDRs" example="203.0.113.0/24" />
# <UDF name="LB_SELF_IP" label="private IPv4 of this Linode" example="192.168.140.11" />
# <UDF name="LB_PEER_IP" label="private IPv4 of the other Linode" example="192.168.140.12" />
# <UDF name="LB_VIP" label="floating IP (the shared public IPv4)" example="203.0.113.10" />
# <UDF name="LB_VIP_DEV" label="failover: eth0 = ARP, lo = BGP (lelastic/FRR)" oneOf="eth0,lo" default="eth0" />
# <UDF name="LB_BACKENDS" label="servers behind lb: NAME HOST:PORT, comma-separated" default="" example="app1 192.168.140.21:8080, app2 192.168.140.22:8080" />
# <UDF name="LB_MONITOR_V4" label="monitoring hosts (Prometheus, Netdata), comma-separated" default="" />
# <UDF name="LB_ALERT_WEBHOOK_URL" label="Slack-compatible webhook for alerts" default="" />
# <UDF name="LINODE_API_TOKEN" label="Linode API token (IPs read/write) to share the floating IP on failover" default="" />
set -euo pipefail
exec > >(tee -a /var/log/lb-install.log) 2>&1
echo "== $(date -u) lb StackScript"
export DEBIAN_FRONTEND=noninteractive

: "${LB_REPO_URL:?}" "${LB_ROLE:?}" "${ADMIN_SSH_KEY:?}" "${LB_SELF_IP:?}" "${LB_PEER_IP:?}" "${LB_VIP:?}"
LB_REF=${LB_REF:-main}

apt-get update -q
apt-get -y -q -o Dpkg::Options::=--force-confold upgrade
apt-get -y -q install --no-install-recommends git ca-certificates sudo

# the login user: key only, sudo without a password (it has none), member of sshusers
getent group sshusers >/dev/null || groupadd sshusers
getent passwd admin >/dev/null || useradd --create-home --shell /bin/bash --groups sudo,sshusers admin
usermod -aG sudo,sshusers admin
passwd -l admin >/dev/null
install -d -o admin -g admin -m 700 /home/admin/.ssh
printf '%s\n' "$ADMIN_SSH_KEY" >/home/admin/.ssh/authorized_keys
chown admin:admin /home/admin/.ssh/authorized_keys
chmod 600 /home/admin/.ssh/authorized_keys
printf 'admin ALL=(ALL) NOPASSWD:ALL\n' >/etc/sudoers.d/90-lb-admin
chmod 440 /etc/sudoers.d/90-lb-admin
visudo -cf /etc/sudoers.d/90-lb-admin

# settings for deploy/install.sh
install -d -m 755 /etc/lb
(
	umask 077
	for v in LB_ROLE LB_SELF_IP LB_PEER_IP LB_VIP LB_VIP_DEV LB_ADMIN_V4 LB_MONITOR_V4 LB_BACKENDS \
		LB_ALERT_WEBHOOK_URL LINODE_API_TOKEN LINODE_ID; do
		[ -z "${!v:-}" ] || printf '%s=%q\n' "$v" "${!v}"
	done
) >/etc/lb/deploy.env

if [ -d /opt/lb/src/.git ]; then
	git -C /opt/lb/src fetch --depth 1 origin "$LB_REF"
	git -C /opt/lb/src checkout -f FETCH_HEAD
else
	git clone --depth 1 --branch "$LB_REF" "$LB_REPO_URL" /opt/lb/src
fi
/opt/lb/src/deploy/install.sh
echo "== $(date -u) done"
