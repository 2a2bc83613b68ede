/* bench/tlsceil.c — BearSSL's ceiling for full TLS handshakes on one core: the asymmetric crypto
 * an ECDHE-ECDSA P-256 full handshake costs the server, in a loop, with the implementations lb's
 * server engine uses (lb.c: br_ssl_server_set_single_ec with br_ec_get_default() and
 * br_ecdsa_sign_asn1_get_default()). One "handshake" here is:
 *   - the ECDHE key pair: a random scalar and one base-point multiplication (ec->mulgen)
 *   - the shared secret: one multiplication of the client's point (ec->mul)
 *   - the ServerKeyExchange signature: one ECDSA P-256 signature of a SHA-256 hash
 * Everything else a handshake costs (TCP, the record layer, hashing, the PRF) is left out.
 *
 * With a certificate file (PEM: the chain, then its P-256 key), a second loop measures BearSSL's
 * whole server handshake without sockets: a server engine set up by lb.c's own lb_tls_server_engine
 * (lb's suites, hashes, PRFs, curves, ALPN, buffer size) and a client engine trade records in
 * memory, one full handshake after another; only the time spent in the server's engine calls is
 * counted. That is what BearSSL itself allows a server (crypto, the handshake code, the record
 * layer) before any socket, event loop or proxy work.
 *
 *   tlsceil [SECS [CERT.pem]]     (SECS default 3)
 *
 * Prints "handshakes N secs S rate R sign_us A mulgen_us B mul_us C", then with CERT.pem
 * "server_handshakes N server_secs S server_rate R".
 */
/* lb itself, without its main: the server engine is set up by lb's lb_tls_server_engine and the
 * certificate loaded by its cert_load, so the figure follows lb's TLS settings */
#define LB_NO_MAIN
#include "../lb.c"

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------ the whole server handshake, in memory */

/* the server's chain and P-256 key from CERT.pem, loaded as lb loads a `cert` file */
struct server_id {
	struct lb_tls t; /* owns what c points to */
	struct lb_cert c;
	br_ec_public_key pk;
	unsigned char pkbuf[BR_EC_KBUF_PUB_MAX_SIZE];
};

static void server_id_load(const char *path, struct server_id *id)
{
	char err[256] = "the key is not a P-256 key";
	if (cert_load(&id->t, &id->c, path, err, sizeof err) != 0 || id->c.key_type != BR_KEYTYPE_EC ||
	    id->c.ec.curve != BR_EC_secp256r1 || !br_ec_compute_pub(br_ec_get_default(), &id->pk, id->pkbuf, &id->c.ec)) {
		fprintf(stderr, "tlsceil: %s: %s\n", path, err);
		exit(1);
	}
}

/* the server engine as lb.c's tls_conn_new sets it up, with lb's own lb_tls_server_engine (no session
 * cache: every handshake is full) */
static void server_setup(br_ssl_server_context *sc, const struct server_id *id, unsigned char *buf, size_t len)
{
	lb_tls_server_engine(sc, buf, len, 1);
	br_ssl_server_set_single_ec(sc, id->c.chain, id->c.nchain, &id->c.ec, BR_KEYTYPE_SIGN, 0, br_ec_get_default(),
	                            br_ecdsa_sign_asn1_get_default());
}

/* the client: what bench/tlsload.c offers, trusting the server's key as it is */
static void client_setup(br_ssl_client_context *cc, br_x509_knownkey_context *kk, const struct server_id *id,
                         unsigned char *buf, size_t len)
{
	static const uint16_t suites[] = { BR_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 };
	br_ssl_engine_context *eng = &cc->eng;
	br_ssl_client_zero(cc);
	br_ssl_engine_set_versions(eng, BR_TLS12, BR_TLS12);
	br_ssl_engine_set_suites(eng, suites, 1);
	br_ssl_engine_set_hash(eng, br_sha256_ID, &br_sha256_vtable);
	br_ssl_engine_set_prf_sha256(eng, &br_tls12_sha256_prf);
	br_ssl_engine_set_default_aes_gcm(eng);
	br_ssl_engine_set_default_ecdsa(eng); /* also sets the default curves: narrowed below */
	/* P-256 only, as tlsload offers: with X25519 on offer the server would take it (cheaper) */
	br_ssl_engine_set_ec(eng, &br_ec_p256_m31);
	br_x509_knownkey_init_ec(kk, &id->pk, BR_KEYTYPE_SIGN);
	br_ssl_engine_set_x509(eng, &kk->vtable);
	br_ssl_engine_set_buffer(eng, buf, len, 1);
}

/* moves every record one engine has for the other; the server's calls are timed into *t */
static int records_move(br_ssl_engine_context *from, br_ssl_engine_context *to, int from_server, double *t)
{
	int moved = 0;
	for (;;) {
		double a = now_s();
		unsigned st_from = br_ssl_engine_current_state(from), st_to = br_ssl_engine_current_state(to);
		if (!(st_from & BR_SSL_SENDREC) || !(st_to & BR_SSL_RECVREC)) {
			*t += now_s() - a;
			return moved;
		}
		size_t ls, lr;
		unsigned char *s = br_ssl_engine_sendrec_buf(from, &ls);
		unsigned char *r = br_ssl_engine_recvrec_buf(to, &lr);
		size_t n = ls < lr ? ls : lr;
		memcpy(r, s, n);
		double b = now_s();
		br_ssl_engine_sendrec_ack(from, n);
		double c = now_s();
		br_ssl_engine_recvrec_ack(to, n);
		double d = now_s();
		/* the state checks and buffer calls count for the server, whose side they also are */
		*t += (b - a) + (from_server ? c - b : d - c);
		moved = 1;
	}
}

/* full handshakes for secs of server time; prints the server's rate */
static int server_loop(double secs, const char *cert)
{
	static struct server_id id;
	static br_ssl_server_context sc;
	static br_ssl_client_context cc;
	static br_x509_knownkey_context kk;
	static unsigned char sbuf[BR_SSL_BUFSIZE_BIDI], cbuf[BR_SSL_BUFSIZE_BIDI];
	server_id_load(cert, &id);
	server_setup(&sc, &id, sbuf, sizeof sbuf);
	client_setup(&cc, &kk, &id, cbuf, sizeof cbuf);
	double t = 0;
	long n = 0;
	while (t < secs) {
		double a = now_s();
		br_ssl_server_reset(&sc);
		t += now_s() - a;
		br_ssl_client_reset(&cc, "bench.test", 0);
		for (int turns = 0;; turns++) {
			int m = records_move(&cc.eng, &sc.eng, 0, &t) | records_move(&sc.eng, &cc.eng, 1, &t);
			unsigned ss = br_ssl_engine_current_state(&sc.eng), cs = br_ssl_engine_current_state(&cc.eng);
			if ((ss & BR_SSL_SENDAPP) && (cs & BR_SSL_SENDAPP))
				break;
			if ((ss | cs) & BR_SSL_CLOSED || !m || turns > 100) {
				fprintf(stderr, "tlsceil: in-memory handshake failed: server error %d, client error %d\n",
				        br_ssl_engine_last_error(&sc.eng), br_ssl_engine_last_error(&cc.eng));
				return 1;
			}
		}
		n++;
	}
	printf("server_handshakes %ld server_secs %.3f server_rate %.1f\n", n, t, n / t);
	return 0;
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
	fflush(stdout);
	return argc > 2 ? server_loop(secs, argv[2]) : 0;
}
