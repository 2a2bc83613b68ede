/* bench/ossload.c — TLS 1.3 and 1.2 handshake load for bench/run.sh (the tls13 figure): an OpenSSL 3
 * client, one thread, epoll, CONNS connections in flight, each one TCP connect, handshake,
 * close_notify, wait for the server's close, again. No HTTP request is sent.
 *
 *   ossload [-c CONNS] [-d SECS] [-v 1.2|1.3] [-m full|ticket|id] [-g GROUPS] HOST PORT
 *
 *   -v 1.3      TLS 1.3 only, TLS_AES_128_GCM_SHA256 only (the default)
 *   -v 1.2      TLS 1.2 only, ECDHE-ECDSA-AES128-GCM-SHA256 only (what tests/bench/tlsload.c offers)
 *   -m full     every handshake is a full one: no session offered, no ticket asked for (TLS 1.2)
 *   -m ticket   each connection slot offers the ticket the server gave its previous connection
 *               (never a session ID); TLS 1.3: the client reads until the server's NewSessionTicket
 *               arrives (a server that sends none makes each connection time out), TLS 1.2: a
 *               full handshake without a ticket is counted as an error (a resumed one may keep
 *               its ticket: RFC 5077 3.3)
 *   -m id       session-ID resumption (TLS 1.2 only; TLS 1.3 has no session IDs): no ticket asked
 *               for, each slot offers the previous session's ID
 *   -g GROUPS   the key-exchange groups offered, OpenSSL syntax (default P-256, as tlsload)
 *
 * Prints one line, as tlsload does: "handshakes N offered N resumed N errors N secs S rate R":
 * handshakes completed within SECS, how many offered a session, how many the server resumed
 * (SSL_session_reused), failed connections and handshakes, rate = handshakes / SECS. The first few
 * errors are described on stderr.
 *
 * Why OpenSSL here when tlsload is BearSSL: BearSSL 0.6 has no TLS 1.3 and no session tickets.
 * The price: an OpenSSL 3.0 client spends about 1 ms of CPU per full handshake (it always checks the
 * server's signature and decodes its certificate), more than the server, so on a 2-CPU box the full
 * handshake rates of this client are client-bound (CPU 0 busy % well under 100): read the figures
 * per proxy CPU-second, which run.sh derives from the proxy's own CPU time.
 * Build: cc -O2 ossload.c -lssl -lcrypto
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { ST_CONNECT, ST_HS, ST_TICKET, ST_SHUT, ST_DRAIN };
enum { M_FULL, M_TICKET, M_ID };

struct slot {
	SSL *ssl;
	SSL_SESSION *sess; /* offered by the next connection of this slot */
	int fd, state, offered, got_ticket;
	unsigned events;
	double deadline;
};

static struct sockaddr_in addr;
static int epfd, mode = M_FULL, tls13 = 1;
static SSL_CTX *ctx;
static unsigned long n_hs, n_offered, n_resumed, n_err, n_err_shown;
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
	fprintf(stderr, "ossload: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void note_error(const char *what)
{
	if (now() <= t_end)
		n_err++;
	if (n_err_shown++ < 5) {
		unsigned long e = ERR_peek_error();
		if (e || errno)
			fprintf(stderr, "ossload: %s: %s\n", what, e ? ERR_error_string(e, NULL) : strerror(errno));
		else
			fprintf(stderr, "ossload: %s\n", what);
	}
	ERR_clear_error();
}

/* a session the server gave this connection (a ticket, or a 1.2 session with its ID) */
static int new_session(SSL *ssl, SSL_SESSION *sess)
{
	struct slot *s = SSL_get_app_data(ssl);
	if (!s || mode == M_FULL || (mode == M_TICKET && !SSL_SESSION_has_ticket(sess)))
		return 0; /* -m ticket offers tickets only, never a session ID */
	if (s->sess)
		SSL_SESSION_free(s->sess);
	s->sess = sess;
	s->got_ticket = 1;
	return 1; /* keeps the reference */
}

static void set_events(struct slot *s, unsigned events)
{
	struct epoll_event ev = { .events = events, .data.ptr = s };
	if (s->events == events)
		return;
	if (epoll_ctl(epfd, s->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, s->fd, &ev) < 0)
		die("epoll_ctl");
	s->events = events;
}

static void slot_start(struct slot *s)
{
	s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->fd < 0)
		die("socket");
	int one = 1;
	setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	s->events = 0;
	s->deadline = now() + conn_timeout;
	s->got_ticket = 0;
	if (connect(s->fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
		note_error("connect");
		s->state = ST_CONNECT; /* no events: the deadline scan starts it again */
		return;
	}
	s->state = ST_CONNECT;
	set_events(s, EPOLLOUT);
}

static void slot_restart(struct slot *s)
{
	if (s->ssl) {
		SSL_free(s->ssl);
		s->ssl = NULL;
	}
	close(s->fd); /* also leaves the epoll set */
	s->fd = -1;
	slot_start(s);
}

/* WANT_READ / WANT_WRITE to epoll events; 0: a real error */
static int want(struct slot *s, int r)
{
	int e = SSL_get_error(s->ssl, r);
	if (e == SSL_ERROR_WANT_READ)
		set_events(s, EPOLLIN);
	else if (e == SSL_ERROR_WANT_WRITE)
		set_events(s, EPOLLOUT);
	else
		return 0;
	return 1;
}

static void handshake_done(struct slot *s)
{
	if (now() > t_end)
		return;
	n_hs++;
	if (s->offered)
		n_offered++;
	if (s->offered && SSL_session_reused(s->ssl))
		n_resumed++;
}

static void pump(struct slot *s)
{
	int r;
	char buf[4096];
	for (;;) {
		switch (s->state) {
		case ST_CONNECT: {
			int err = 0;
			socklen_t len = sizeof err;
			if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
				errno = err;
				note_error("connect");
				slot_restart(s);
				return;
			}
			s->ssl = SSL_new(ctx);
			if (!s->ssl || !SSL_set_fd(s->ssl, s->fd))
				die("SSL_new");
			SSL_set_app_data(s->ssl, s);
			SSL_set_tlsext_host_name(s->ssl, "bench.test");
			s->offered = 0;
			if (mode != M_FULL && s->sess) {
				SSL_set_session(s->ssl, s->sess);
				s->offered = 1;
			}
			s->state = ST_HS;
			break;
		}
		case ST_HS:
			r = SSL_connect(s->ssl);
			if (r == 1) {
				handshake_done(s);
				/* TLS 1.3 tickets come after the handshake: read until one arrives; a TLS 1.2
				 * ticket comes within it, or never */
				s->state = (mode == M_TICKET && tls13 && !s->got_ticket) ? ST_TICKET : ST_SHUT;
				/* TLS 1.2 resumed by a ticket: the server may keep it (RFC 5077 3.3), and the
				 * slot offers the same one again; a full handshake must bring one */
				if (mode == M_TICKET && !tls13 && !s->got_ticket && !SSL_session_reused(s->ssl) &&
				    (errno = 0) == 0)
					note_error("no session ticket in a full TLS 1.2 handshake");
				break;
			}
			if (!want(s, r)) {
				note_error("handshake");
				slot_restart(s);
				return;
			}
			return;
		case ST_TICKET:
			r = SSL_read(s->ssl, buf, sizeof buf);
			if (s->got_ticket) {
				s->state = ST_SHUT;
				break;
			}
			if (r > 0)
				break;
			if (!want(s, r)) {
				note_error("waiting for a session ticket");
				slot_restart(s);
				return;
			}
			return;
		case ST_SHUT:
			r = SSL_shutdown(s->ssl); /* sends close_notify */
			if (r < 0 && want(s, r))
				return;
			shutdown(s->fd, SHUT_WR);
			s->state = ST_DRAIN;
			set_events(s, EPOLLIN);
			break;
		case ST_DRAIN: /* the server's close_notify (or tickets) and FIN, read raw */
			r = (int)recv(s->fd, buf, sizeof buf, 0);
			if (r > 0)
				break;
			if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				return;
			slot_restart(s);
			return;
		}
	}
}

static void usage(void)
{
	fprintf(stderr, "usage: ossload [-c CONNS] [-d SECS] [-v 1.2|1.3] [-m full|ticket|id] [-g GROUPS] HOST PORT\n");
	exit(2);
}

int main(int argc, char **argv)
{
	int conns = 50, opt;
	double secs = 5;
	const char *groups = "P-256";

	while ((opt = getopt(argc, argv, "c:d:g:m:v:")) != -1) {
		switch (opt) {
		case 'c': conns = atoi(optarg); break;
		case 'd': secs = atof(optarg); break;
		case 'g': groups = optarg; break;
		case 'm':
			if (!strcmp(optarg, "full")) mode = M_FULL;
			else if (!strcmp(optarg, "ticket")) mode = M_TICKET;
			else if (!strcmp(optarg, "id")) mode = M_ID;
			else usage();
			break;
		case 'v':
			if (!strcmp(optarg, "1.3")) tls13 = 1;
			else if (!strcmp(optarg, "1.2")) tls13 = 0;
			else usage();
			break;
		default: usage();
		}
	}
	if (argc - optind != 2 || conns < 1 || conns > 100000 || secs <= 0 || (tls13 && mode == M_ID))
		usage();
	memset(&addr, 0, sizeof addr);
	addr.sin_family = AF_INET;
	addr.sin_port = htons((unsigned short)atoi(argv[optind + 1]));
	if (inet_pton(AF_INET, argv[optind], &addr.sin_addr) != 1) {
		fprintf(stderr, "ossload: HOST must be an IPv4 address\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	ctx = SSL_CTX_new(TLS_client_method());
	int v = tls13 ? TLS1_3_VERSION : TLS1_2_VERSION;
	if (!ctx || !SSL_CTX_set_min_proto_version(ctx, v) || !SSL_CTX_set_max_proto_version(ctx, v) ||
	    !SSL_CTX_set_cipher_list(ctx, "ECDHE-ECDSA-AES128-GCM-SHA256") ||
	    !SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256") || !SSL_CTX_set1_groups_list(ctx, groups)) {
		fprintf(stderr, "ossload: OpenSSL client set-up failed (groups '%s')\n", groups);
		return 1;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	if (mode != M_TICKET)
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(ctx, new_session);
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
		die("epoll_create1");
	struct slot *slots = calloc((size_t)conns, sizeof *slots);
	if (!slots)
		die("calloc");
	double t0 = now();
	t_end = t0 + secs;
	for (int i = 0; i < conns; i++)
		slot_start(&slots[i]);
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
				if (t > slots[i].deadline && slots[i].state != ST_DRAIN) {
					errno = ETIMEDOUT;
					note_error(slots[i].state == ST_TICKET ? "no session ticket" : "handshake");
					slot_restart(&slots[i]);
				} else if (t > slots[i].deadline) {
					slot_restart(&slots[i]); /* the server did not close: not counted, as tlsload */
				}
		}
	}
	printf("handshakes %lu offered %lu resumed %lu errors %lu secs %.3f rate %.1f\n", n_hs, n_offered,
	       n_resumed, n_err, secs, (double)n_hs / secs);
	fflush(stdout);
	return 0;
}
