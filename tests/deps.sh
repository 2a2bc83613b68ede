#!/usr/bin/env bash
# Install the Debian packages a make target needs, only those missing.
# As root: apt-get installs them. Otherwise: print the exact command and fail.
set -u
what=${1:-run}
pkgs="gcc make libc6-dev libbearssl-dev libinih-dev libnghttp2-dev python3 curl"
case "$what" in
run) ;;
test) pkgs="$pkgs libcurl4-openssl-dev clang libclang-rt-14-dev prometheus chromium systemd nftables openssh-server openssh-client shellcheck util-linux iproute2 keepalived strace python3-yaml python3-jsonschema python3-jinja2 python3-configobj python3-jsonpatch python3-requests python3-netifaces pebble certbot musl-tools libnghttp2-dev nghttp2-client python3-h2 libssl-dev testssl.sh frr" ;;
bench) pkgs="$pkgs wrk haproxy nginx-light libnginx-mod-stream util-linux openssl libssl-dev valgrind binutils musl-tools nghttp2-client python3-h2" ;;
afl) pkgs="$pkgs afl++" ;;
*) echo "deps.sh: unknown set '$what'" >&2; exit 2 ;;
esac
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# cloud-init's schema checker for tests/deploy2.sh: unpacked, not installed (installing would enable
# its boot services)
cloud_init() {
	[ "$what" = test ] && [ "$(id -u)" = 0 ] && [ ! -x /opt/lb-test/cloud-init/usr/bin/cloud-init ] || return 0
	local d
	d=$(mktemp -d)
	(cd "$d" && { apt-get download -q cloud-init >/dev/null 2>&1 ||
		{ apt-get update -qq && apt-get download -q cloud-init >/dev/null 2>&1; }; } &&
		mkdir -p /opt/lb-test/cloud-init && dpkg -x cloud-init_*.deb /opt/lb-test/cloud-init)
	rm -rf "$d"
}
[ -z "$missing" ] && { cloud_init; exit 0; }
if [ "$(id -u)" != 0 ]; then
	echo "missing Debian packages:$missing" >&2
	echo "run: sudo apt-get install -y --no-install-recommends$missing" >&2
	exit 1
fi
echo "installing:$missing"
# haproxy, nginx, prometheus and sshd are only run by hand by the tests and the benchmark: keep their
# services from starting
prc=/usr/sbin/policy-rc.d
own_prc=0
if { [ "$what" = bench ] || [ "$what" = test ]; } && [ ! -e $prc ]; then
	printf '#!/bin/sh\nexit 101\n' > $prc && chmod 755 $prc && own_prc=1
fi
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086 # one word per package
apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/dev/null
rc=$?
[ $own_prc = 1 ] && rm -f $prc
cloud_init
exit $rc
