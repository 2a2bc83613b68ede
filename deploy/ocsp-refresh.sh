#!/bin/sh
# ocsp-refresh.sh CERT_PEM OUT_DER: fetch a fresh OCSP response for the first certificate of CERT_PEM
# (issuer: the next one) from the responder its certificate names, check it, and install it
# atomically as OUT_DER for lb's `ocsp = OUT_DER` (OpenSSL build; lb re-reads the file when it
# changes). Run from a systemd timer a few times a day, e.g.:
#   [Service] ExecStart=/usr/local/bin/ocsp-refresh.sh /etc/lb/site.pem /etc/lb/site.ocsp.der
#   [Timer]   OnCalendar=*-*-* 00/6:00:00  RandomizedDelaySec=1h
# Let's Encrypt certificates have no OCSP responder since 2025: the script then says so and exits 0.
set -eu
cert=$1 out=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
awk '/BEGIN CERTIFICATE/{n++} n==1' "$cert" > "$tmp/leaf.pem"
awk '/BEGIN CERTIFICATE/{n++} n==2' "$cert" > "$tmp/issuer.pem"
url=$(openssl x509 -in "$tmp/leaf.pem" -noout -ocsp_uri)
if [ -z "$url" ]; then
	echo "ocsp-refresh: $cert names no OCSP responder: nothing to staple" >&2
	exit 0
fi
[ -s "$tmp/issuer.pem" ] || { echo "ocsp-refresh: $cert has no issuer certificate after the leaf" >&2; exit 1; }
openssl ocsp -issuer "$tmp/issuer.pem" -cert "$tmp/leaf.pem" -url "$url" -CAfile "$tmp/issuer.pem" \
	-partial_chain -respout "$tmp/resp.der" > "$tmp/status" 2>&1 || { cat "$tmp/status" >&2; exit 1; }
grep -q ': good' "$tmp/status" || { echo "ocsp-refresh: not good:" >&2; cat "$tmp/status" >&2; exit 1; }
install -m 0644 "$tmp/resp.der" "$out.tmp"
mv -f "$out.tmp" "$out"
