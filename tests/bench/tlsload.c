/* bench/tlsload.c — TLS 1.2 handshake load for bench/run.sh: one thread, epoll, CONNS connections
 * in flight, each one TCP connect, handshake, close_notify and FIN, wait for the server's
 * close_notify and FIN, again. No HTTP request is sent: this measures TLS termination, not
 * proxying.
 *
 *   tlsload [-c CONNS] [-d SECS] [-m full|resume] [-n SNI] [-V] HOST PORT
 *
 *   -m full     every handshake is a full one (no session offered)
 *   -m resume   session-ID resumption: each connection slot offers the session of its previous
 *               connection (the first one is full). The client is BearSSL, which has no session
 *               tickets at all, so the server can only resume from its session-ID cache.
 *   -V          verify the server's ECDSA signature of its key exchange (off by default)
 *   -g p256     offer the P-256 group only (the default)
 *   -g x25519   offer X25519 and P-256, as every browser does (the server picks; the output's
 *               "x25519 N" counts the handshakes that used X25519)
 *
 * Offers TLS 1.2 only, ECDHE-ECDSA-AES128-GCM-SHA256 only, the P-256 group only (-g p256), and
 * ecdsa_secp256r1_sha256 signatures only, so that every server does the same work: an ECDHE P-256
 * key pair, one ECDH, one ECDSA P-256 signature per full handshake. With -g x25519 the server
 * chooses the group (BearSSL lists P-256 before X25519 in its supported_groups, by group id).
 *
 * Why this client and not openssl s_time or wrk: on the 2-CPU bench box the client has one CPU,
 * and an OpenSSL 3.0 client costs about 1 ms of CPU per full handshake (decoders, provider
 * look-ups, the ECDSA verification), more than HAProxy or nginx spend on it (~0.7 ms), so
 * `openssl s_time` tops out at ~400 handshakes/s and an OpenSSL epoll client at ~900/s; wrk
 * resumes sessions on every reconnection. This one costs ~0.4 ms, half of it the kernel's TCP
 * work: BearSSL drives the protocol (no allocation, no certificate decoding: the chain is ignored),
 * OpenSSL's libcrypto does the client's two P-256 multiplications (BearSSL 0.6 has no fast P-256
 * code: ~0.8 ms per multiplication against ~0.06 ms), and the server's signature is not checked
 * unless -V (checking it with BearSSL costs ~1 ms). The server's work is untouched by any of this.
 * Build: cc -O2 tlsload.c -l:libbearssl.a -lcrypto, or without OpenSSL's headers:
 * cc -O2 -DTLSLOAD_NO_OPENSSL tlsload.c -l:libbearssl.a (slow: client-bound).
 *
 * Prints one line: "handshakes N offered N resumed N errors N secs S rate R x25519 N": the handshakes
 * completed within the SECS window, how many of them offered a session (all but each slot's first
 * in resume mode) and how many the server resumed, failed connections and handshakes, and
 * rate = handshakes / SECS, and how many full handshakes used X25519. The first few errors are described on stderr.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <bearssl.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#ifndef TLSLOAD_NO_OPENSSL
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#endif

enum { ST_CONNECT, ST_TLS, ST_DRAIN };

struct slot {
	br_ssl_client_context cc;
	/* x509 "engine" that accepts any chain: a pointer to the vtable must come first */
	const br_x509_class *x509;
	br_x509_decoder_context dc; /* -V: decodes the end-entity certificate for its key */
	int first_cert;
	br_x509_pkey pkey;
	unsigned char key[BR_EC_KBUF_PUB_MAX_SIZE];
	int fd, state, hs_done, shut;
	unsigned events;
	unsigned char offered_id[32];
	size_t offered_len;
	double deadline;
	unsigned char iobuf[BR_SSL_BUFSIZE_BIDI];
};

static struct sockaddr_in addr;
static int epfd, resume_mode, verify_sig;
static const char *sni = "bench.test";
static unsigned long n_x25519, n_hs, n_offered, n_resumed, n_err, n_err_shown, n_stuck;
static double t_end;
static const double conn_timeout = 5.0;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	fprintf(stderr, "tlsload: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* ------------------------------------------------------------------ P-256 */
#ifndef TLSLOAD_NO_OPENSSL
static EC_GROUP *grp;
static BN_CTX *bnctx;
static EC_POINT *pt_in, *pt_out;
static BIGNUM *bn_k;

/* R = x * G, or R = x * generator when G is the generator (fixed-base tables: 4x faster) */
static uint32_t ossl_mul(unsigned char *G, size_t Glen, const unsigned char *x, size_t xlen, int curve)
{
	size_t glen;
	const unsigned char *gen = br_ec_p256_m31.generator(curve, &glen);
	int ok;
	if (curve != BR_EC_secp256r1 || Glen != 65 || !BN_bin2bn(x, (int)xlen, bn_k))
		return 0;
	if (Glen == glen && memcmp(G, gen, glen) == 0)
		ok = EC_POINT_mul(grp, pt_out, bn_k, NULL, NULL, bnctx);
	else
		ok = EC_POINT_oct2point(grp, pt_in, G, Glen, bnctx) &&
		     EC_POINT_mul(grp, pt_out, NULL, pt_in, bn_k, bnctx);
	return ok && EC_POINT_point2oct(grp, pt_out, POINT_CONVERSION_UNCOMPRESSED, G, 65, bnctx) == 65;
}

static size_t ossl_mulgen(unsigned char *R, const unsigned char *x, size_t xlen, int curve)
{
	if (curve != BR_EC_secp256r1 || !BN_bin2bn(x, (int)xlen, bn_k) ||
	    !EC_POINT_mul(grp, pt_out, bn_k, NULL, NULL, bnctx))
		return 0;
	return EC_POINT_point2oct(grp, pt_out, POINT_CONVERSION_UNCOMPRESSED, R, 65, bnctx);
}

static const unsigned char *p256_generator(int curve, size_t *len)
{
	return br_ec_p256_m31.generator(curve, len);
}
static const unsigned char *p256_order(int curve, size_t *len)
{
	return br_ec_p256_m31.order(curve, len);
}
static size_t p256_xoff(int curve, size_t *len)
{
	return br_ec_p256_m31.xoff(curve, len);
}
static uint32_t p256_muladd(unsigned char *A, const unsigned char *B, size_t len, const unsigned char *x,
                            size_t xlen, const unsigned char *y, size_t ylen, int curve)
{
	return br_ec_p256_m31.muladd(A, B, len, x, xlen, y, ylen, curve);
}

static const br_ec_impl ec_p256_ossl = {
	(uint32_t)1 << BR_EC_secp256r1, p256_generator, p256_order, p256_xoff,
	ossl_mul, ossl_mulgen, p256_muladd,
};
/* X25519 with libcrypto (RFC 7748 scalars and u-coordinates, as BearSSL's c25519 code takes them) */
static uint32_t ossl_x25519_mul(unsigned char *G, size_t Glen, const unsigned char *x, size_t xlen)
{
	EVP_PKEY *k = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, x, xlen);
	EVP_PKEY *peer = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, G, Glen);
	EVP_PKEY_CTX *ctx = k ? EVP_PKEY_CTX_new(k, NULL) : NULL;
	size_t len = 32;
	int ok = Glen == 32 && peer && ctx && EVP_PKEY_derive_init(ctx) > 0 &&
	         EVP_PKEY_derive_set_peer(ctx, peer) > 0 && EVP_PKEY_derive(ctx, G, &len) > 0 && len == 32;
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(peer);
	EVP_PKEY_free(k);
	return (uint32_t)ok;
}
static size_t ossl_x25519_mulgen(unsigned char *R, const unsigned char *x, size_t xlen)
{
	EVP_PKEY *k = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, x, xlen);
	size_t len = 32;
	int ok = k && EVP_PKEY_get_raw_public_key(k, R, &len) > 0 && len == 32;
	EVP_PKEY_free(k);
	return ok ? 32 : 0;
}
#define X25519_MUL(G, Glen, x, xlen) ossl_x25519_mul(G, Glen, x, xlen)
#define X25519_MULGEN(R, x, xlen) ossl_x25519_mulgen(R, x, xlen)
#define EC_IMPL (&ec_p256_ossl)
#else
#define EC_IMPL (&br_ec_p256_m31)
#define X25519_MUL(G, Glen, x, xlen) br_ec_c25519_m31.mul(G, Glen, x, xlen, BR_EC_curve25519)
#define X25519_MULGEN(R, x, xlen) br_ec_c25519_m31.mulgen(R, x, xlen, BR_EC_curve25519)
#endif

/* -g x25519: P-256 as above, X25519 beside it; the engine offers the curves of supported_curves */
static int offer_x25519;
static const unsigned char *offer_generator(int curve, size_t *len)
{
	return curve == BR_EC_curve25519 ? br_ec_c25519_m31.generator(curve, len) : EC_IMPL->generator(curve, len);
}
static const unsigned char *offer_order(int curve, size_t *len)
{
	return curve == BR_EC_curve25519 ? br_ec_c25519_m31.order(curve, len) : EC_IMPL->order(curve, len);
}
static size_t offer_xoff(int curve, size_t *len)
{
	return curve == BR_EC_curve25519 ? br_ec_c25519_m31.xoff(curve, len) : EC_IMPL->xoff(curve, len);
}
static uint32_t offer_mul(unsigned char *G, size_t Glen, const unsigned char *x, size_t xlen, int curve)
{
	return curve == BR_EC_curve25519 ? X25519_MUL(G, Glen, x, xlen) : EC_IMPL->mul(G, Glen, x, xlen, curve);
}
static size_t offer_mulgen(unsigned char *R, const unsigned char *x, size_t xlen, int curve)
{
	return curve == BR_EC_curve25519 ? X25519_MULGEN(R, x, xlen) : EC_IMPL->mulgen(R, x, xlen, curve);
}
static uint32_t offer_muladd(unsigned char *A, const unsigned char *B, size_t len, const unsigned char *x,
                             size_t xlen, const unsigned char *y, size_t ylen, int curve)
{
	return EC_IMPL->muladd(A, B, len, x, xlen, y, ylen, curve);
}
static const br_ec_impl ec_offer_x25519 = {
	((uint32_t)1 << BR_EC_secp256r1) | ((uint32_t)1 << BR_EC_curve25519), offer_generator, offer_order,
	offer_xoff, offer_mul, offer_mulgen, offer_muladd,
};

/* The server's ECDSA signature over its ECDHE key: accepted unchecked unless -V. */
static uint32_t ecdsa_vrfy(const br_ec_impl *impl, const void *hash, size_t hash_len,
                           const br_ec_public_key *pk, const void *sig, size_t sig_len)
{
	(void)impl;
	if (!verify_sig)
		return 1;
	return br_ecdsa_i31_vrfy_asn1(&br_ec_p256_m31, hash, hash_len, pk, sig, sig_len);
}

/* ------------------------------------------------------------------ x509: accept any chain */
#define SLOT_OF(ctx) ((struct slot *)((char *)(ctx) - offsetof(struct slot, x509)))

static void x_start_chain(const br_x509_class **ctx, const char *server_name)
{
	(void)server_name;
	SLOT_OF(ctx)->first_cert = 1;
}
static void x_start_cert(const br_x509_class **ctx, uint32_t length)
{
	struct slot *s = SLOT_OF(ctx);
	(void)length;
	if (verify_sig && s->first_cert)
		br_x509_decoder_init(&s->dc, NULL, NULL);
}
static void x_append(const br_x509_class **ctx, const unsigned char *buf, size_t len)
{
	struct slot *s = SLOT_OF(ctx);
	if (verify_sig && s->first_cert)
		br_x509_decoder_push(&s->dc, buf, len);
}
static void x_end_cert(const br_x509_class **ctx)
{
	struct slot *s = SLOT_OF(ctx);
	if (verify_sig && s->first_cert) {
		const br_x509_pkey *pk = br_x509_decoder_get_pkey(&s->dc);
		if (pk && pk->key_type == BR_KEYTYPE_EC && pk->key.ec.qlen <= sizeof s->key) {
			memcpy(s->key, pk->key.ec.q, pk->key.ec.qlen);
			s->pkey.key.ec.curve = pk->key.ec.curve;
			s->pkey.key.ec.qlen = pk->key.ec.qlen;
		}
	}
	s->first_cert = 0;
}
static unsigned x_end_chain(const br_x509_class **ctx)
{
	(void)ctx;
	return 0;
}
static const br_x509_pkey *x_get_pkey(const br_x509_class *const *ctx, unsigned *usages)
{
	struct slot *s = SLOT_OF(ctx);
	if (usages)
		*usages = BR_KEYTYPE_KEYX | BR_KEYTYPE_SIGN;
	return &s->pkey;
}
static const br_x509_class x509_any = {
	sizeof(const br_x509_class *), x_start_chain, x_start_cert, x_append, x_end_cert, x_end_chain,
	x_get_pkey,
};

/* ------------------------------------------------------------------ connections */
static void note_error(const char *what, int err)
{
	n_err++;
	if (n_err_shown++ < 5)
		fprintf(stderr, "tlsload: %s: %s\n", what, err > 0 ? strerror(err) : "TLS error");
	if (n_err_shown == 6)
		fprintf(stderr, "tlsload: (further errors only counted)\n");
}

static void note_tls_error(int code)
{
	n_err++;
	if (n_err_shown++ < 5)
		fprintf(stderr, "tlsload: TLS error %d (%s %d)\n", code,
		        code >= BR_ERR_SEND_FATAL_ALERT ? "sent alert" :
		        code >= BR_ERR_RECV_FATAL_ALERT ? "alert from the server" : "BearSSL BR_ERR_",
		        code >= BR_ERR_SEND_FATAL_ALERT ? code - BR_ERR_SEND_FATAL_ALERT :
		        code >= BR_ERR_RECV_FATAL_ALERT ? code - BR_ERR_RECV_FATAL_ALERT : code);
}

static void slot_init(struct slot *s)
{
	static const uint16_t suites[] = { BR_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 };
	br_ssl_engine_context *eng = &s->cc.eng;
	br_ssl_client_zero(&s->cc);
	br_ssl_engine_set_versions(eng, BR_TLS12, BR_TLS12);
	br_ssl_engine_set_suites(eng, suites, 1);
	br_ssl_engine_set_hash(eng, br_sha256_ID, &br_sha256_vtable);
	br_ssl_engine_set_prf_sha256(eng, &br_tls12_sha256_prf);
	br_ssl_engine_set_default_aes_gcm(eng);
	br_ssl_engine_set_ec(eng, offer_x25519 ? &ec_offer_x25519 : EC_IMPL);
	br_ssl_engine_set_ecdsa(eng, ecdsa_vrfy);
	s->x509 = &x509_any;
	br_ssl_engine_set_x509(eng, &s->x509);
	br_ssl_engine_set_buffer(eng, s->iobuf, sizeof s->iobuf, 1);
	/* the key get_pkey hands out: the certificate's with -V, else a placeholder (unused) */
	size_t glen;
	const unsigned char *gen = br_ec_p256_m31.generator(BR_EC_secp256r1, &glen);
	memcpy(s->key, gen, glen);
	s->pkey.key_type = BR_KEYTYPE_EC;
	s->pkey.key.ec.curve = BR_EC_secp256r1;
	s->pkey.key.ec.q = s->key;
	s->pkey.key.ec.qlen = glen;
	s->fd = -1;
}

static void set_events(struct slot *s, unsigned events)
{
	if (s->events == events)
		return;
	struct epoll_event ev = { .events = events, .data.ptr = s };
	if (epoll_ctl(epfd, s->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, s->fd, &ev) < 0)
		die("epoll_ctl");
	s->events = events;
}

static void slot_start(struct slot *s)
{
	int one = 1;
	br_ssl_session_parameters sp;
	for (;;) {
		s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (s->fd < 0)
			die("socket");
		setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		s->events = 0;
		s->hs_done = 0;
		s->shut = 0;
		s->deadline = now() + conn_timeout;
		if (!br_ssl_client_reset(&s->cc, sni, resume_mode)) {
			fprintf(stderr, "tlsload: br_ssl_client_reset failed (%d)\n", br_ssl_engine_last_error(&s->cc.eng));
			exit(1);
		}
		br_ssl_engine_get_session_parameters(&s->cc.eng, &sp);
		s->offered_len = resume_mode ? sp.session_id_len : 0;
		memcpy(s->offered_id, sp.session_id, s->offered_len);
		if (connect(s->fd, (struct sockaddr *)&addr, sizeof addr) == 0 || errno == EINPROGRESS)
			break;
		note_error("connect", errno);
		close(s->fd);
		usleep(10000); /* a refused port must not spin */
	}
	s->state = ST_CONNECT;
	set_events(s, EPOLLOUT);
}

static void slot_restart(struct slot *s)
{
	close(s->fd); /* also leaves the epoll set */
	s->fd = -1;
	slot_start(s);
}

static void handshake_done(struct slot *s)
{
	br_ssl_session_parameters sp;
	s->hs_done = 1;
	if (now() > t_end)
		return;
	n_hs++;
	if (s->offered_len)
		n_offered++;
	else if (br_ssl_engine_get_ecdhe_curve(&s->cc.eng) == BR_EC_curve25519)
		n_x25519++;
	br_ssl_engine_get_session_parameters(&s->cc.eng, &sp);
	if (s->offered_len && sp.session_id_len == s->offered_len &&
	    memcmp(sp.session_id, s->offered_id, s->offered_len) == 0)
		n_resumed++;
}

static void pump(struct slot *s)
{
	br_ssl_engine_context *eng = &s->cc.eng;
	unsigned char *buf;
	size_t len;
	ssize_t n;

	if (s->state == ST_CONNECT) {
		int err = 0;
		socklen_t elen = sizeof err;
		getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &elen);
		if (err) {
			note_error("connect", err);
			usleep(10000); /* a refused port must not spin */
			slot_restart(s);
			return;
		}
		s->state = ST_TLS;
	}
	while (s->state == ST_TLS) {
		unsigned st = br_ssl_engine_current_state(eng);
		if (st & BR_SSL_CLOSED) {
			int e = br_ssl_engine_last_error(eng);
			if (e != BR_ERR_OK || !s->hs_done) {
				note_tls_error(e);
				slot_restart(s);
				return;
			}
			if (!s->shut) {
				shutdown(s->fd, SHUT_WR);
				s->shut = 1;
			}
			s->state = ST_DRAIN; /* the server's close_notify came: now its FIN */
			break;
		}
		if (!s->hs_done && (st & BR_SSL_SENDAPP)) {
			handshake_done(s);
			br_ssl_engine_close(eng); /* queues our close_notify */
			continue;
		}
		if (st & BR_SSL_SENDREC) {
			buf = br_ssl_engine_sendrec_buf(eng, &len);
			n = send(s->fd, buf, len, MSG_NOSIGNAL);
			if (n > 0) {
				br_ssl_engine_sendrec_ack(eng, (size_t)n);
				continue;
			}
			if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
				set_events(s, EPOLLOUT);
				return;
			}
			if (s->hs_done) { /* the server closed first: fine once the handshake is done */
				slot_restart(s);
				return;
			}
			note_error("send", n < 0 ? errno : EPIPE);
			slot_restart(s);
			return;
		}
		if (s->hs_done && !s->shut) {
			/* close_notify sent: our FIN too, as most clients do (lb, for one, closes on the FIN,
			 * not on the close_notify) */
			shutdown(s->fd, SHUT_WR);
			s->shut = 1;
		}
		if (st & BR_SSL_RECVAPP) {
			br_ssl_engine_recvapp_buf(eng, &len);
			br_ssl_engine_recvapp_ack(eng, len);
			continue;
		}
		if (st & BR_SSL_RECVREC) {
			buf = br_ssl_engine_recvrec_buf(eng, &len);
			n = recv(s->fd, buf, len, 0);
			if (n > 0) {
				br_ssl_engine_recvrec_ack(eng, (size_t)n);
				continue;
			}
			if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
				set_events(s, EPOLLIN);
				return;
			}
			if (s->hs_done) { /* EOF or reset without close_notify, after the handshake */
				slot_restart(s);
				return;
			}
			note_error(n == 0 ? "handshake: connection closed by the server" : "recv",
			           n == 0 ? -1 : errno);
			slot_restart(s);
			return;
		}
		set_events(s, EPOLLIN);
		return;
	}
	/* ST_DRAIN: until the server's FIN */
	char tmp[512];
	for (;;) {
		n = recv(s->fd, tmp, sizeof tmp, 0);
		if (n > 0)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			set_events(s, EPOLLIN);
			return;
		}
		slot_restart(s);
		return;
	}
}

static void usage(void)
{
	fprintf(stderr, "usage: tlsload [-c CONNS] [-d SECS] [-g p256|x25519] [-m full|resume] [-n SNI] [-V] HOST PORT\n");
	exit(2);
}

int main(int argc, char **argv)
{
	int conns = 50, opt;
	double secs = 5;

	while ((opt = getopt(argc, argv, "c:d:g:m:n:V")) != -1) {
		switch (opt) {
		case 'c': conns = atoi(optarg); break;
		case 'd': secs = atof(optarg); break;
		case 'm':
			if (!strcmp(optarg, "full"))
				resume_mode = 0;
			else if (!strcmp(optarg, "resume"))
				resume_mode = 1;
			else
				usage();
			break;
		case 'g':
			if (!strcmp(optarg, "p256"))
				offer_x25519 = 0;
			else if (!strcmp(optarg, "x25519"))
				offer_x25519 = 1;
			else
				usage();
			break;
		case 'n': sni = optarg; break;
		case 'V': verify_sig = 1; break;
		default: usage();
		}
	}
	if (argc - optind != 2 || conns < 1 || conns > 100000 || secs <= 0)
		usage();
	memset(&addr, 0, sizeof addr);
	addr.sin_family = AF_INET;
	addr.sin_port = htons((unsigned short)atoi(argv[optind + 1]));
	if (inet_pton(AF_INET, argv[optind], &addr.sin_addr) != 1) {
		fprintf(stderr, "tlsload: HOST must be an IPv4 address\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
#ifndef TLSLOAD_NO_OPENSSL
	grp = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
	bnctx = BN_CTX_new();
	bn_k = BN_new();
	if (!grp || !bnctx || !bn_k || !(pt_in = EC_POINT_new(grp)) || !(pt_out = EC_POINT_new(grp))) {
		fprintf(stderr, "tlsload: OpenSSL P-256 set-up failed\n");
		return 1;
	}
#endif
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
		die("epoll_create1");
	struct slot *slots = calloc((size_t)conns, sizeof *slots);
	if (!slots)
		die("calloc");
	double t0 = now();
	t_end = t0 + secs;
	for (int i = 0; i < conns; i++) {
		slot_init(&slots[i]);
		slot_start(&slots[i]);
	}
	struct epoll_event evs[256];
	double last_scan = t0;
	for (;;) {
		double t = now();
		if (t >= t_end)
			break;
		int ms = (int)((t_end - t) * 1000) + 1;
		int n = epoll_wait(epfd, evs, 256, ms < 100 ? ms : 100);
		if (n < 0 && errno != EINTR)
			die("epoll_wait");
		for (int i = 0; i < n; i++)
			pump(evs[i].data.ptr);
		t = now();
		if (t - last_scan >= 0.5) {
			last_scan = t;
			for (int i = 0; i < conns; i++)
				if (t > slots[i].deadline) {
					if (!slots[i].hs_done)
						note_error("handshake", ETIMEDOUT);
					else
						n_stuck++;
					slot_restart(&slots[i]);
				}
		}
	}
	printf("handshakes %lu offered %lu resumed %lu errors %lu secs %.3f rate %.1f x25519 %lu\n", n_hs,
	       n_offered, n_resumed, n_err, secs, (double)n_hs / secs, n_x25519);
	if (n_stuck)
		fprintf(stderr, "tlsload: %lu connections were not closed by the server within %.0f s of the "
		        "close_notify\n", n_stuck, conn_timeout);
	fflush(stdout);
	for (int i = 0; i < conns; i++)
		if (slots[i].fd >= 0)
			close(slots[i].fd);
	free(slots);
	return 0;
}
