/* bench/tlsceil.c — BearSSL's ceiling for full TLS handshakes on one core: the asymmetric crypto
 * an ECDHE-ECDSA P-256 full handshake costs the server, in a loop, with the implementations lb's
 * server engine uses (lb.c: br_ssl_server_set_single_ec with br_ec_get_default() and
 * br_ecdsa_sign_asn1_get_default()). One "handshake" here is:
 *   - the ECDHE key pair: a random scalar and one base-point multiplication (ec->mulgen)
 *   - the shared secret: one multiplication of the client's point (ec->mul)
 *   - the ServerKeyExchange signature: one ECDSA P-256 signature of a SHA-256 hash
 * Everything else a handshake costs (TCP, the record layer, hashing, the PRF) is left out.
 *
 *   tlsceil [SECS]     (default 3)
 *
 * Prints "handshakes N secs S rate R sign_us A mulgen_us B mul_us C".
 */
#include <bearssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	double secs = argc > 1 ? atof(argv[1]) : 3.0;
	const br_ec_impl *ec = br_ec_get_default();
	br_ecdsa_sign sign = br_ecdsa_sign_asn1_get_default();
	br_hmac_drbg_context rng;
	br_hmac_drbg_init(&rng, &br_sha256_vtable, "lb tlsceil", 10);
	unsigned char skbuf[BR_EC_KBUF_PRIV_MAX_SIZE], pkbuf[BR_EC_KBUF_PUB_MAX_SIZE];
	unsigned char peerbuf[BR_EC_KBUF_PRIV_MAX_SIZE], peerpub[BR_EC_KBUF_PUB_MAX_SIZE];
	br_ec_private_key sk, peer;
	br_ec_public_key pk, ppk;
	if (!br_ec_keygen(&rng.vtable, ec, &sk, skbuf, BR_EC_secp256r1) ||
	    !br_ec_compute_pub(ec, &pk, pkbuf, &sk) ||
	    !br_ec_keygen(&rng.vtable, ec, &peer, peerbuf, BR_EC_secp256r1) ||
	    !br_ec_compute_pub(ec, &ppk, peerpub, &peer)) {
		fprintf(stderr, "tlsceil: key generation failed\n");
		return 1;
	}
	unsigned char hash[32], sig[80], x[32], point[65], shared[65];
	size_t glen;
	double t_sign = 0, t_gen = 0, t_mul = 0, t0 = now_s(), t = t0;
	long n = 0;
	memset(hash, 0x5a, sizeof hash);
	while (t - t0 < secs) {
		double a = t, b, c, d;
		br_hmac_drbg_generate(&rng, x, sizeof x);
		x[0] &= 0x7f; /* below the curve order */
		x[31] |= 1;
		glen = ec->mulgen(point, x, sizeof x, BR_EC_secp256r1);
		b = now_s();
		memcpy(shared, ppk.q, ppk.qlen);
		if (glen != 65 || !ec->mul(shared, ppk.qlen, x, sizeof x, BR_EC_secp256r1)) {
			fprintf(stderr, "tlsceil: ECDH failed\n");
			return 1;
		}
		c = now_s();
		hash[0] = (unsigned char)n;
		if (!sign(ec, &br_sha256_vtable, hash, &sk, sig)) {
			fprintf(stderr, "tlsceil: signature failed\n");
			return 1;
		}
		d = now_s();
		t_gen += b - a;
		t_mul += c - b;
		t_sign += d - c;
		t = d;
		n++;
	}
	double dt = t - t0;
	printf("handshakes %ld secs %.3f rate %.1f sign_us %.1f mulgen_us %.1f mul_us %.1f\n", n, dt, n / dt,
	       1e6 * t_sign / n, 1e6 * t_gen / n, 1e6 * t_mul / n);
	return 0;
}
