/* fuzz/fuzz_conn.c — whole-connection harness: the real connection state machine of lb.c
 * (conn_new, on_event through ev_wait, run_pending, run_timers, reap_dead) driven against
 * in-memory sockets, so that proxying, not only parsing, is fuzzed. No real socket is made.
 *
 *   make fuzz/fuzz_conn && ./fuzz/fuzz_conn -dict=fuzz/dict/conn.dict /tmp/fz-conn fuzz/corpus/conn
 *
 * lb.c is #included (built with -DLB_NO_MAIN -DLB_POLL), after function-like macros that send
 * the socket calls it makes (socket, connect, recv, send, sendmsg, shutdown, close, poll,
 * getsockopt, setsockopt, getsockname, clock_gettime...) to the fz_* shims below. Virtual fds
 * are >= FZ_VFD0, and so are the ends of the pipes a splice tunnel uses (pipe2, splice); any
 * other fd goes to the real call (lb's error log, /dev/urandom). The
 * monotonic clock is fake: it moves only when the input says so or when the run ends.
 *
 * Input format (fuzz/mkseed_conn.py writes readable seeds):
 *   byte 0: (listener, client address). Listener = byte % 8 (taken modulo the number of
 *     listeners of both configurations below: 0 web (h2c too), 1 tcp, 2 pxweb, 3 pxtcp, 4 small, 5 tcp2);
 *     address = (byte / 8) % 4: 10.1.2.3, 192.0.2.7, [2001:db8::7], [::ffff:10.9.9.9].
 *   then records separated by "\n#"; the bytes before the first separator are client data.
 *   Each record is an op letter and its payload:
 *     C data   the client sends data          E / X   the client half-closes / resets
 *     B s data the server connection s sends   F s / R s  it half-closes / resets
 *              (s: one byte, picks among the open server connections, '0' the newest)
 *     K modes  how the next connects go, one digit each: 0 at once, 1 in progress then
 *              connected (the default), 2 in progress then refused, 3 refused at once,
 *              4 socket() fails, 5 never completes
 *     W n      every socket takes at most n bytes until its peer reads (0: no limit)
 *     S n      every recv returns at most n bytes (0: no limit)
 *     T n      the clock moves n ms (no number: to the next deadline)
 *   After each record lb runs until nothing moves. At the end the clock jumps from deadline to
 *   deadline until the client connection is closed; idle server connections are then closed.
 *
 * Properties (abort() with "*** property violated"):
 *  - termination: the loop settles (no turn after turn of events with no I/O: a busy loop) and
 *    the connection is closed after at most 64 deadlines; every live connection has one; once
 *    the client and the server connection in use have both closed, lb closes at once;
 *  - hygiene: no call on a closed or unknown virtual fd, no send after shutdown(SHUT_WR), every
 *    send with MSG_NOSIGNAL, every virtual fd (pipes too) closed at the end, no poll
 *    registration left, the buffer pool not growing from input to input (a leak), servers'
 *    active counts and circuit trial slots back to 0;
 *  - server side, HTTP: what lb wrote to each server connection is an optional PROXY header
 *    (exactly when the pool has send_proxy, naming the client) and then complete requests
 *    that lb_parse_request accepts, without both Content-Length and Transfer-Encoding, framed
 *    exactly (Content-Length, lb_chunk_*); only the last may be cut short; after an upgrade
 *    request only a server that answered 101 gets more bytes;
 *  - client side, HTTP: what lb wrote parses with lb_parse_response as a sequence of
 *    responses, each framed for the method of the client's request it answers (as the client
 *    parses its own bytes); only the last may be cut short, and never one of lb's own answers
 *    (a status no server sent) unless the client reset;
 *  - HTTP/2 (h2c on the web listener, with -DLB_HTTP2): the server-side checks above hold for
 *    the HTTP/1.1 requests lb makes of the client's streams (the downgrade never smuggles);
 *  - TCP: the bytes a server got (after lb's PROXY header) are a prefix of the client's bytes
 *    (after the client's PROXY header), and what the client got a prefix of the servers'.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#define INI_HANDLER_LINENO 1
#include <ini.h>
#include <bearssl.h>

#include "fuzz_util.h"

ssize_t fz_recv(int fd, void *buf, size_t len, int flags);
ssize_t fz_send(int fd, const void *buf, size_t len, int flags);
ssize_t fz_sendmsg(int fd, const struct msghdr *m, int flags);
ssize_t fz_read(int fd, void *buf, size_t len);
ssize_t fz_write(int fd, const void *buf, size_t len);
int fz_socket(int domain, int type, int proto);
int fz_connect(int fd, const struct sockaddr *sa, socklen_t len);
int fz_close(int fd);
int fz_shutdown(int fd, int how);
int fz_getsockopt(int fd, int level, int opt, void *val, socklen_t *len);
int fz_setsockopt(int fd, int level, int opt, const void *val, socklen_t len);
int fz_getsockname(int fd, struct sockaddr *sa, socklen_t *len);
int fz_getpeername(int fd, struct sockaddr *sa, socklen_t *len);
int fz_accept4(int fd, struct sockaddr *sa, socklen_t *len, int flags);
int fz_poll(struct pollfd *fds, nfds_t n, int timeout);
int fz_clock_gettime(clockid_t clk, struct timespec *ts);
int fz_pipe2(int fds[2], int flags);
ssize_t fz_splice(int in, loff_t *inoff, int out, loff_t *outoff, size_t len, unsigned flags);

#define recv(...) fz_recv(__VA_ARGS__)
#define send(...) fz_send(__VA_ARGS__)
#define sendmsg(...) fz_sendmsg(__VA_ARGS__)
#define read(...) fz_read(__VA_ARGS__)
#define write(...) fz_write(__VA_ARGS__)
#define socket(...) fz_socket(__VA_ARGS__)
#define connect(...) fz_connect(__VA_ARGS__)
#define close(...) fz_close(__VA_ARGS__)
#define shutdown(...) fz_shutdown(__VA_ARGS__)
#define getsockopt(...) fz_getsockopt(__VA_ARGS__)
#define setsockopt(...) fz_setsockopt(__VA_ARGS__)
#define getsockname(...) fz_getsockname(__VA_ARGS__)
#define getpeername(...) fz_getpeername(__VA_ARGS__)
#define accept4(...) fz_accept4(__VA_ARGS__)
#define poll(...) fz_poll(__VA_ARGS__)
#define clock_gettime(...) fz_clock_gettime(__VA_ARGS__)
#define pipe2(...) fz_pipe2(__VA_ARGS__)
#define splice(...) fz_splice(__VA_ARGS__)

#include "../lb.c"

#undef recv
#undef send
#undef sendmsg
#undef read
#undef write
#undef socket
#undef connect
#undef close
#undef shutdown
#undef getsockopt
#undef setsockopt
#undef getsockname
#undef getpeername
#undef accept4
#undef poll
#undef clock_gettime
#undef pipe2
#undef splice

/* -------------------------------------------------------------------- configurations */

static const char k_conf_a[] =
	"[global]\nworkers = 1\nmax_connections = 64\nrate_limit_entries = 64\n"
	"[log]\naccess = stdout\nformat = combined\n"
	"[listener web]\nbind = 127.0.0.1:18080\nmode = http\npool = web\nheader_timeout = 5s\n"
	"idle_timeout = 30s\nmax_header_size = 4k\nmax_body_size = 64k\n"
#ifdef LB_HTTP2
	"http2 = on\n"
#endif
	"[listener tcp]\nbind = 127.0.0.1:18081\nmode = tcp\npool = tcp\nidle_timeout = 10s\n"
	"[listener pxweb]\nbind = 127.0.0.1:18082\nmode = http\npool = px\nproxy_protocol = any\n"
	"trusted_proxies = 0.0.0.0/0, ::/0\n"
	"[listener pxtcp]\nbind = 127.0.0.1:18083\nmode = tcp\npool = pxtcp\nproxy_protocol = v1\n"
	"trusted_proxies = 10.0.0.0/8\n"
	"[pool web]\nserver = w1 127.0.0.1:9001\nserver = w2 127.0.0.1:9002 weight=2\n"
	"server = w3 127.0.0.1:9003 backup\nkeepalive = 4\nretries = 2\nconnect_timeout = 1s\n"
	"response_timeout = 5s\nsticky = cookie SRV\nhealth_check = off\ncircuit_failures = 3\n"
	"circuit_open = 2s\n"
	"[pool api]\nserver = a1 127.0.0.1:9101\nserver = a2 127.0.0.1:9102\nalgorithm = least_conn\n"
	"keepalive = 2\nretries = 1\nhealth_check = off\n"
	"[pool tcp]\nserver = t1 127.0.0.1:9201\nserver = t2 127.0.0.1:9202\nretries = 1\nhealth_check = off\n"
	"[pool px]\nserver = p1 127.0.0.1:9301\nsend_proxy = v2\nkeepalive = 2\nhealth_check = off\n"
	"[pool pxtcp]\nserver = q1 127.0.0.1:9401\nsend_proxy = v1\nhealth_check = off\n"
	"[route api]\npath = /api/*\nmethod = GET, POST, PUT, DELETE\npool = api\nresponse_timeout = 2s\n"
	"max_body_size = 1k\nrequest_header_add = X-Api: 1\nrequest_header_remove = X-Secret\n"
	"response_header_add = Cache-Control: no-store\nresponse_header_remove = X-Backend\n"
	"[route host]\nhost = admin.example, *.admin.example\npool = api\n"
	"[route hdr]\nheader = X-Beta: yes\npool = api\n"
	"[route limited]\npath = /limited\nrate_limit = 2/second burst=2\npool = web\n"
	"[route private]\npath = /private/*\nacl = allow 10.0.0.0/8\nacl = deny 0.0.0.0/0\npool = web\n"
	"[route closed]\npath = /closed\nreturn = 503 closed\n"
	"[route old]\npath = /old/*\nredirect = 308 http://$host/new$uri\n"
	"[route shop]\npath = /shop/*\nsplit = web 50, api 50\n";

static const char k_conf_b[] =
	"[global]\nworkers = 1\nmax_connections = 16\nrate_limit_entries = 64\n"
	"[log]\naccess = stdout\nformat = json\n"
	"[listener small]\nbind = 127.0.0.1:18090\nmode = http\npool = b\nheader_timeout = 2s\n"
	"idle_timeout = 3s\nmax_header_size = 1k\nmax_body_size = 0\n"
	"trusted_proxies = 10.0.0.0/8\n"
	"[listener tcp2]\nbind = 127.0.0.1:18091\nmode = tcp\npool = b\nidle_timeout = 2s\n"
	"[pool b]\nserver = b1 127.0.0.1:9501\nserver = b2 127.0.0.1:9502\nserver = b3 127.0.0.1:9503\n"
	"algorithm = ip_hash\nkeepalive = 1\nretries = 2\nconnect_timeout = 500ms\nresponse_timeout = 1s\n"
	"health_check = off\ncircuit_error_rate = 50%\ncircuit_min_requests = 2\ncircuit_window = 10s\n"
	"circuit_slow = 500ms\ncircuit_open = 1s\n"
	"[route chunky]\npath = /up/*\nmax_body_size = 64k\npool = b\n";

/* -------------------------------------------------------------------- virtual sockets */

#define FZ_VFD0 4000
#define FZ_MAXV 64
#define FZ_NOLIMIT ((size_t)-1)

enum { CM_NOW = 0, CM_LATER, CM_REFUSED_LATER, CM_REFUSED, CM_NOSOCKET, CM_HANG };

struct vsock {
	int used, open, backend;
	int pipe;                    /* 'r' or 'w': an end of a pipe (splice); its bytes are in the w end's rx */
	int other;                   /* a pipe's other end */
	struct fz_buf rx;            /* what the peer sent; lb has read rx_off of it */
	size_t rx_off;
	int rx_eof, rst;
	struct fz_buf tx;            /* what lb wrote */
	size_t wspace;               /* lb may write this much before EAGAIN */
	int shut_wr;
	int cmode, connected, so_error;
	int px;                      /* send_proxy of its pool at the first send; -1 before */
};

static struct vsock fz_v[FZ_MAXV];
static size_t fz_nv;
static uint64_t fz_clock;              /* the fake CLOCK_MONOTONIC, ms */
static unsigned long fz_progress;      /* I/O calls that did something */
static unsigned fz_ready;              /* fds with events in the last poll */
static size_t fz_wcap = FZ_NOLIMIT, fz_seg = FZ_NOLIMIT;
static char fz_modes[64];
static size_t fz_nmodes, fz_mode_at;
static int fz_verbose;

static struct vsock *vs_of(int fd)
{
	if (fd < FZ_VFD0 || fd >= FZ_VFD0 + (int)fz_nv)
		return NULL;
	return &fz_v[fd - FZ_VFD0];
}

/* a virtual fd lb uses must be one it holds: anything else is a use after close */
static struct vsock *vs_live(int fd, const char *call)
{
	struct vsock *v = vs_of(fd);
	if (!v || !v->open) {
		fprintf(stderr, "\n*** property violated: %s on virtual fd %d, which is %s\n", call, fd,
		        v ? "closed" : "unknown");
		abort();
	}
	return v;
}

/* Buffers always have a block, so that p + 0 and memmem(p, 0, ...) never see NULL (UBSan). */
static void fz_reserve(struct fz_buf *b)
{
	if (!b->p && !(b->p = malloc(b->cap = 256)))
		abort();
}

static int vs_new(int backend)
{
	if (fz_nv >= FZ_MAXV)
		return -1;
	struct vsock *v = &fz_v[fz_nv];
	memset(v, 0, sizeof *v);
	v->used = v->open = 1;
	fz_reserve(&v->rx);
	fz_reserve(&v->tx);
	v->backend = backend;
	v->wspace = fz_wcap;
	v->px = -1;
	v->connected = !backend;
	return FZ_VFD0 + (int)fz_nv++;
}

static void vs_free_all(void)
{
	for (size_t i = 0; i < fz_nv; i++) {
		free(fz_v[i].rx.p);
		free(fz_v[i].tx.p);
	}
	memset(fz_v, 0, sizeof fz_v);
	fz_nv = 0;
}

static struct conn *conn_of_backend_fd(int fd)
{
	for (struct conn *c = W.live; c; c = c->next)
		if (c->b && c->b->h.fd == fd && !c->h.dead)
			return c;
	return NULL;
}

/* -------------------------------------------------------------------- the shims */

ssize_t fz_recv(int fd, void *buf, size_t len, int flags)
{
	struct vsock *v = vs_of(fd);
	if (!v)
		return recv(fd, buf, len, flags);
	vs_live(fd, "recv");
	if (v->rst || v->so_error) {
		fz_progress++;
		errno = v->rst ? ECONNRESET : ENOTCONN;
		return -1;
	}
	size_t have = v->rx.n - v->rx_off;
	if (!v->connected || (have == 0 && !v->rx_eof)) {
		errno = EAGAIN;
		return -1;
	}
	fz_progress++;
	size_t n = LB_MIN(LB_MIN(len, have), fz_seg);
	if (n)
		memcpy(buf, v->rx.p + v->rx_off, n);
	v->rx_off += n;
	return (ssize_t)n;
}

static void note_pool(struct vsock *v, int fd)
{
	struct conn *c = conn_of_backend_fd(fd);
	if (v->px < 0 && c && c->b && c->b->pool)
		v->px = c->b->pool->send_proxy;
}

ssize_t fz_send(int fd, const void *buf, size_t len, int flags)
{
	struct vsock *v = vs_of(fd);
	if (!v)
		return send(fd, buf, len, flags);
	vs_live(fd, "send");
	CHECK(flags & MSG_NOSIGNAL); /* else a peer's reset kills the worker with SIGPIPE */
	CHECK(!v->shut_wr);          /* "send after shutdown(SHUT_WR)" */
	if (v->rst) {
		fz_progress++;
		errno = ECONNRESET;
		return -1;
	}
	if (!v->connected || v->wspace == 0) {
		errno = EAGAIN;
		return -1;
	}
	if (v->backend)
		note_pool(v, fd);
	size_t n = LB_MIN(len, v->wspace);
	if (v->wspace != FZ_NOLIMIT)
		v->wspace -= n;
	fz_put(&v->tx, buf, n);
	fz_progress++;
	return (ssize_t)n;
}

ssize_t fz_sendmsg(int fd, const struct msghdr *m, int flags)
{
	if (!vs_of(fd))
		return sendmsg(fd, m, flags);
	CHECK(m->msg_controllen == 0 && m->msg_name == NULL);
	size_t total = 0;
	for (size_t i = 0; i < (size_t)m->msg_iovlen; i++)
		total += m->msg_iov[i].iov_len;
	char *flat = malloc(total ? total : 1);
	CHECK(flat != NULL);
	size_t off = 0;
	for (size_t i = 0; i < (size_t)m->msg_iovlen; i++) {
		if (m->msg_iov[i].iov_len)
			memcpy(flat + off, m->msg_iov[i].iov_base, m->msg_iov[i].iov_len);
		off += m->msg_iov[i].iov_len;
	}
	ssize_t n = fz_send(fd, flat, total, flags);
	free(flat);
	return n;
}

ssize_t fz_read(int fd, void *buf, size_t len)
{
	if (vs_of(fd)) {
		vs_live(fd, "read");
		CHECK(!"lb read() a socket: the harness models recv() only");
	}
	return read(fd, buf, len);
}

ssize_t fz_write(int fd, const void *buf, size_t len)
{
	if (vs_of(fd)) {
		vs_live(fd, "write");
		CHECK(!"lb write() a socket: the harness models send() only");
	}
	if (fd != P.errfd && fd != P.accfd)
		return write(fd, buf, len);
	if (fd == P.errfd && fz_verbose)
		return write(2, buf, len);
	return (ssize_t)len; /* the error and access logs: formatted, then dropped */
}

static int next_mode(void)
{
	return fz_mode_at < fz_nmodes ? fz_modes[fz_mode_at++] : CM_LATER;
}

int fz_socket(int domain, int type, int proto)
{
	if (domain != AF_INET && domain != AF_INET6)
		return socket(domain, type, proto);
	CHECK(type & SOCK_NONBLOCK);
	int mode = next_mode();
	if (mode == CM_NOSOCKET) {
		errno = EMFILE;
		return -1;
	}
	int fd = vs_new(1);
	if (fd < 0) {
		errno = EMFILE;
		return -1;
	}
	vs_of(fd)->cmode = mode;
	fz_progress++;
	return fd;
}

int fz_connect(int fd, const struct sockaddr *sa, socklen_t len)
{
	struct vsock *v = vs_of(fd);
	if (!v)
		return connect(fd, sa, len);
	vs_live(fd, "connect");
	fz_progress++;
	switch (v->cmode) {
	case CM_NOW:
		v->connected = 1;
		return 0;
	case CM_REFUSED:
		v->so_error = ECONNREFUSED;
		errno = ECONNREFUSED;
		return -1;
	default:
		errno = EINPROGRESS;
		return -1;
	}
}

int fz_close(int fd)
{
	struct vsock *v = vs_of(fd);
	if (!v)
		return close(fd);
	vs_live(fd, "close");
	v->open = 0;
	fz_progress++;
	return 0;
}

int fz_shutdown(int fd, int how)
{
	struct vsock *v = vs_of(fd);
	if (!v)
		return shutdown(fd, how);
	vs_live(fd, "shutdown");
	if (how == SHUT_WR || how == SHUT_RDWR)
		v->shut_wr = 1;
	fz_progress++;
	return 0;
}

int fz_getsockopt(int fd, int level, int opt, void *val, socklen_t *len)
{
	struct vsock *v = vs_of(fd);
	if (!v)
		return getsockopt(fd, level, opt, val, len);
	vs_live(fd, "getsockopt");
	if (level == SOL_SOCKET && opt == SO_ERROR && *len >= sizeof(int)) {
		int e = v->so_error;
		memcpy(val, &e, sizeof e);
		*len = sizeof e;
		fz_progress++;
		return 0;
	}
	memset(val, 0, *len);
	return 0;
}

int fz_setsockopt(int fd, int level, int opt, const void *val, socklen_t len)
{
	if (!vs_of(fd))
		return setsockopt(fd, level, opt, val, len);
	vs_live(fd, "setsockopt");
	return 0;
}

static struct sockaddr_storage fz_peer, fz_local;

static int copy_sa(const struct sockaddr_storage *from, struct sockaddr *sa, socklen_t *len)
{
	socklen_t n = from->ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
	memcpy(sa, from, LB_MIN(n, *len));
	*len = n;
	return 0;
}

int fz_getsockname(int fd, struct sockaddr *sa, socklen_t *len)
{
	struct vsock *v = vs_of(fd);
	if (!v)
		return getsockname(fd, sa, len);
	vs_live(fd, "getsockname");
	return copy_sa(&fz_local, sa, len);
}

int fz_getpeername(int fd, struct sockaddr *sa, socklen_t *len)
{
	struct vsock *v = vs_of(fd);
	if (!v)
		return getpeername(fd, sa, len);
	vs_live(fd, "getpeername");
	return copy_sa(&fz_peer, sa, len);
}

int fz_accept4(int fd, struct sockaddr *sa, socklen_t *len, int flags)
{
	CHECK(!vs_of(fd)); /* there is no virtual listening socket */
	return accept4(fd, sa, len, flags);
}

/* What poll() would say of a virtual socket. A connect in progress completes (or fails) the
 * first time lb asks; a reset is an error and a hang-up; both directions shut is a hang-up. */
static short vs_revents(struct vsock *v, short ev)
{
	short re = 0;
	if (v->backend && !v->connected && !v->so_error) {
		if (v->cmode == CM_LATER && (ev & POLLOUT)) {
			v->connected = 1;
			return POLLOUT;
		}
		if (v->cmode == CM_REFUSED_LATER) {
			v->so_error = ECONNREFUSED;
			return (short)(POLLOUT | POLLERR);
		}
		return 0;
	}
	if (v->so_error)
		return (short)(POLLERR | POLLHUP);
	if (v->rst)
		return (short)(POLLERR | POLLHUP | (ev & (POLLIN | POLLOUT)));
	if ((ev & POLLIN) && (v->rx_off < v->rx.n || v->rx_eof))
		re |= POLLIN;
	if ((ev & POLLOUT) && v->wspace > 0)
		re |= POLLOUT;
	if (v->rx_eof && v->shut_wr)
		re |= POLLHUP;
	return re;
}

int fz_poll(struct pollfd *fds, nfds_t n, int timeout)
{
	if (n == 0 || !vs_of(fds[0].fd))
		return poll(fds, n, timeout);
	int k = 0;
	for (nfds_t i = 0; i < n; i++) {
		struct vsock *v = vs_live(fds[i].fd, "poll (a registration outlived its close)");
		CHECK(!v->pipe);
		fds[i].revents = vs_revents(v, fds[i].events);
		k += fds[i].revents != 0;
	}
	fz_ready = (unsigned)k;
	return k;
}

int fz_clock_gettime(clockid_t clk, struct timespec *ts)
{
	if (clk != CLOCK_MONOTONIC)
		return clock_gettime(clk, ts);
	ts->tv_sec = (time_t)(fz_clock / 1000);
	ts->tv_nsec = (long)(fz_clock % 1000) * 1000000L;
	return 0;
}

/* lb's splice pipes (mode tcp): a pair of virtual fds; the bytes in the pipe wait in the write
 * end's rx, at most LB_PIPE_CAP of them */
static int fz_real_pipes; /* setup_runtime's signal self-pipe is a real one */

int fz_pipe2(int fds[2], int flags)
{
	if (fz_real_pipes)
		return pipe2(fds, flags);
	int r = vs_new(0), w = r >= 0 ? vs_new(0) : -1;
	if (w < 0) {
		if (r >= 0)
			vs_of(r)->open = 0;
		errno = EMFILE;
		return -1;
	}
	vs_of(r)->pipe = 'r';
	vs_of(w)->pipe = 'w';
	vs_of(r)->other = w;
	vs_of(w)->other = r;
	fds[0] = r;
	fds[1] = w;
	return 0;
}

/* socket -> pipe: what recv would give, into the pipe's room */
static ssize_t fz_splice_in(struct vsock *s, struct vsock *w, size_t len)
{
	if (s->rst || s->so_error) {
		fz_progress++;
		errno = s->rst ? ECONNRESET : ENOTCONN;
		return -1;
	}
	size_t have = s->rx.n - s->rx_off, room = LB_PIPE_CAP - (w->rx.n - w->rx_off);
	if (!s->connected || (have == 0 && !s->rx_eof) || (have && room == 0)) {
		errno = EAGAIN;
		return -1;
	}
	size_t n = LB_MIN(LB_MIN(LB_MIN(len, have), room), fz_seg);
	fz_progress++;
	if (n == 0) /* the peer's FIN: nothing to copy (rx.p may be NULL) */
		return 0;
	fz_put(&w->rx, s->rx.p + s->rx_off, n);
	s->rx_off += n;
	return (ssize_t)n;
}

/* pipe -> socket: what send would take */
static ssize_t fz_splice_out(struct vsock *w, struct vsock *s, int fd, size_t len)
{
	CHECK(!s->shut_wr); /* "splice to a socket after shutdown(SHUT_WR)" */
	size_t have = w->rx.n - w->rx_off;
	if (s->rst) {
		fz_progress++;
		errno = EPIPE;
		return -1;
	}
	if (have == 0 || !s->connected || s->wspace == 0) {
		errno = EAGAIN;
		return -1;
	}
	if (s->backend)
		note_pool(s, fd);
	size_t n = LB_MIN(LB_MIN(len, have), s->wspace);
	if (s->wspace != FZ_NOLIMIT)
		s->wspace -= n;
	fz_put(&s->tx, w->rx.p + w->rx_off, n);
	w->rx_off += n;
	if (w->rx_off == w->rx.n)
		w->rx_off = w->rx.n = 0;
	fz_progress++;
	return (ssize_t)n;
}

ssize_t fz_splice(int in, loff_t *inoff, int out, loff_t *outoff, size_t len, unsigned flags)
{
	struct vsock *a = vs_of(in), *b = vs_of(out);
	if (!a && !b)
		return splice(in, inoff, out, outoff, len, flags);
	vs_live(in, "splice (from)");
	vs_live(out, "splice (to)");
	CHECK(!inoff && !outoff && (flags & SPLICE_F_NONBLOCK));
	if (!a->pipe && b->pipe == 'w')
		return fz_splice_in(a, b, len);
	CHECK(a->pipe == 'r' && !b->pipe); /* "splice between two sockets or two pipes" */
	return fz_splice_out(vs_of(a->other), b, out, len);
}

/* -------------------------------------------------------------------- the worker */

static struct lb_conf *fz_confs[2];
static struct { int conf, li; } fz_sel[8];
static size_t fz_nsel;

static struct lb_conf *parse_conf(const char *text)
{
	struct lb_cfg_errors errs;
	struct lb_conf *c = NULL;
	memset(&errs, 0, sizeof errs);
	if (lb_conf_parse(text, strlen(text), &c, &errs) != 0 || lb_conf_resolve(c, &errs) != 0) {
		for (int i = 0; i < errs.n; i++)
			fprintf(stderr, "fuzz_conn: config line %d: %s\n", errs.e[i].line, errs.e[i].msg);
		abort();
	}
	return c;
}

/* What worker_main does, without fork, listening sockets or health checks: lb's own
 * setup_runtime (buffers, heap, poll arrays), then its signal handlers and self-pipe undone. */
static void init_once(void)
{
	fz_verbose = getenv("FUZZ_CONN_VERBOSE") != NULL;
	fz_confs[0] = parse_conf(k_conf_a); /* the larger limits: setup_runtime sizes from g_conf */
	fz_confs[1] = parse_conf(k_conf_b);
	for (int k = 0; k < 2; k++)
		for (size_t i = 0; i < fz_confs[k]->nlisteners && fz_nsel < 8; i++) {
			fz_sel[fz_nsel].conf = k;
			fz_sel[fz_nsel++].li = (int)i;
		}
	CHECK(fz_confs[1]->max_connections <= fz_confs[0]->max_connections);
	g_conf = fz_confs[0];
	static const int sigs[] = { SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGPIPE, SIGCHLD };
	struct sigaction old[sizeof sigs / sizeof *sigs];
	for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++)
		sigaction(sigs[i], NULL, &old[i]);
	fz_real_pipes = 1;
	CHECK(setup_runtime() == 0);
	fz_real_pipes = 0;
	for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++)
		sigaction(sigs[i], &old[i], NULL); /* the fuzzer's own */
	ev_forget(&W.sigh);
	CHECK(shm_create(fz_confs[0]) == 0 && shm_map_conf(fz_confs[0]) == 0 && shm_map_conf(fz_confs[1]) == 0);
	CHECK(rl_create(64) == 0 && events_create() == 0);
	P.slot = 0;
	P.worker_id = 2; /* not 1: health checks stay off */
	P.pid = getpid();
	P.errfd = P.accfd = 2; /* fz_write drops both unless FUZZ_CONN_VERBOSE is set */
}

/* every input starts from the same worker: clock, PRNG, shared state, balancer state. By lb.c's state
 * structs (each one's banner says the same): W.rng and g_now here, W's pools left whole by the last
 * input (check_clean); SHM's server slots and rate-limit sets zeroed here; P, EV, TLS and ACC set up
 * once (init_once) and kept; M and ADM unused; the HTTP/2 session's callbacks (g_h2cb) made once. */
static void reset_worker(struct lb_conf *conf)
{
	g_conf = conf;
	fz_clock = g_now = 1000000000ULL;
	W.rng[0] = 0x9e3779b97f4a7c15ULL;
	W.rng[1] = 0x2545f4914f6cdd1dULL;
	fz_wcap = fz_seg = FZ_NOLIMIT;
	fz_nmodes = fz_mode_at = 0;
	for (uint32_t i = 0; i < SHM.seg->nservers; i++) {
		char key[sizeof SHM.seg->s[i].key];
		memcpy(key, SHM.seg->s[i].key, sizeof key);
		memset(&SHM.seg->s[i], 0, sizeof SHM.seg->s[i]);
		memcpy(SHM.seg->s[i].key, key, sizeof key);
	}
	memset(SHM.rl, 0, SHM.rl_sets * sizeof *SHM.rl);
	/* the balancing state (section 4's struct lb_rt: conf itself is not written): round-robin positions;
	 * the servers' connection counts are checked to be back at 0 after each input (check_clean) */
	for (size_t p = 0; p < conf->npools; p++) {
		conf->rt->pool[p].pick.seed = 0;
		memset(conf->rt->pool[p].pick.cur, 0, conf->pools[p].nservers * sizeof *conf->rt->pool[p].pick.cur);
	}
	for (size_t r = 0; r < conf->nroutes; r++) { /* and split positions, with the file's weights */
		memset(conf->rt->route[r].split.cur, 0, sizeof conf->rt->route[r].split.cur);
		for (size_t j = 0; j < conf->routes[r].nsplit; j++)
			conf->rt->route[r].split.weight[j] = conf->routes[r].split[j].weight;
	}
}

static void set_addrs(int which, int li)
{
	static const char *const peer[] = { "10.1.2.3", "192.0.2.7", "2001:db8::7", "::ffff:10.9.9.9" };
	static const char *const local[] = { "10.0.0.1", "10.0.0.1", "2001:db8::1", "::ffff:10.0.0.1" };
	memset(&fz_peer, 0, sizeof fz_peer);
	memset(&fz_local, 0, sizeof fz_local);
	if (which < 2) {
		struct sockaddr_in *p = (struct sockaddr_in *)&fz_peer, *l = (struct sockaddr_in *)&fz_local;
		p->sin_family = l->sin_family = AF_INET;
		inet_pton(AF_INET, peer[which], &p->sin_addr);
		inet_pton(AF_INET, local[which], &l->sin_addr);
		p->sin_port = htons((uint16_t)(40000 + which));
		l->sin_port = htons((uint16_t)(8080 + li));
	} else {
		struct sockaddr_in6 *p = (struct sockaddr_in6 *)&fz_peer, *l = (struct sockaddr_in6 *)&fz_local;
		p->sin6_family = l->sin6_family = AF_INET6;
		inet_pton(AF_INET6, peer[which], &p->sin6_addr);
		inet_pton(AF_INET6, local[which], &l->sin6_addr);
		p->sin6_port = htons((uint16_t)(40000 + which));
		l->sin6_port = htons((uint16_t)(8080 + li));
	}
}

/* one turn of run_loop, without health checks or the stop logic */
static void loop_turn(void)
{
	ev_wait(0, on_event);
	run_pending();
	run_timers();
	idle_sweep();
	admin_sync();
	reap_dead();
	log_flush();
}

/* the peers read what lb wrote: full socket buffers empty again */
static int peers_read(void)
{
	int any = 0;
	for (size_t i = 0; i < fz_nv; i++)
		if (fz_v[i].open && fz_v[i].wspace != fz_wcap) {
			fz_v[i].wspace = fz_wcap;
			any = 1;
		}
	return any;
}

/* Run until nothing moves. A turn where poll() reported events and lb did no I/O at all is
 * idle; many in a row is a busy loop (the real worker would spin at 100% CPU). */
static void settle(void)
{
	unsigned idle = 0;
	for (unsigned turn = 0; turn < 100000; turn++) {
		unsigned long before = fz_progress;
		fz_ready = 0;
		loop_turn();
		if (fz_progress != before) {
			idle = 0;
			continue;
		}
		if (fz_ready == 0 && !W.pending) {
			if (peers_read())
				continue;
			return;
		}
		if (++idle >= 64) {
			fprintf(stderr, "fuzz_conn: %u fds ready turn after turn, no I/O\n", fz_ready);
			CHECK(!"busy loop: events keep coming and lb does nothing with them");
		}
	}
	CHECK(!"the loop did not settle within 100000 turns");
}

static int peer_gone(const struct vsock *v) { return v->rx_eof || v->rst; }

/* The client and the server connection lb is using have both closed or reset: nothing can
 * happen any more, so lb must close now, not when a timer fires (a connect in progress, or no
 * server connection at all, is for the timers). */
static void check_prompt_close(void)
{
	struct conn *c = W.live;
	if (!c || !peer_gone(&fz_v[0]) || !c->b)
		return;
	const struct vsock *b = vs_of(c->b->h.fd);
	if (!b || !b->open || !b->connected || !peer_gone(b))
		return;
	fprintf(stderr, "fuzz_conn: q=%d r=%d cin_eof=%d hup=%d shut_c=%d shut_b=%d b.eof=%d b.reset=%d\n", c->q, c->r,
	        c->cin_eof, c->h.hup, c->shut_c, c->shut_b, c->b->eof, c->b->reset);
	CHECK(!"both peers closed, yet lb keeps the connection until a timeout");
}

/* Input over: time runs from deadline to deadline until the client connection is gone. */
static void finish(void)
{
	settle();
	check_prompt_close();
	for (int i = 0; i < 64 && W.nconns > 0; i++) {
		CHECK(W.nheap > 0); /* a live connection without a deadline would stay forever */
		if (W.heap[0]->deadline > fz_clock)
			fz_clock = W.heap[0]->deadline;
		settle();
	}
	CHECK(W.nconns == 0); /* "still open after 64 deadlines" */
}

/* pipes lb keeps for the next tunnel would outlive this input's virtual fds */
static void close_kept_pipes(void)
{
	while (W.free_splices) {
		struct lb_splice *sp = W.free_splices;
		W.free_splices = sp->next;
		const struct vsock *cb = vs_of(sp->cb[1]), *bc = vs_of(sp->bc[1]);
		CHECK(cb->rx.n == cb->rx_off && bc->rx.n == bc->rx_off); /* kept pipes are empty (splice_end) */
		splice_close(sp);
	}
	W.nfree_splices = 0;
}

static void close_idle_backends(void)
{
	idle_close_all();
	reap_dead();
}

/* what a finished input must leave: nothing open, registered, held or borrowed */
static void check_clean(void)
{
	for (size_t i = 0; i < fz_nv; i++)
		if (fz_v[i].open) {
			fprintf(stderr, "fuzz_conn: virtual fd %zu (%s) still open\n", FZ_VFD0 + i,
			        fz_v[i].pipe ? "pipe" : fz_v[i].backend ? "server" : "client");
			CHECK(!"lb left a socket open");
		}
	CHECK(EV.np == 0 && W.nheap == 0 && W.pending == NULL && W.live == NULL && W.nbconns == 0);
	CHECK(W.bufs.n <= 16); /* one connection uses at most 4 buffers: more means they leak from the pool */
	for (size_t p = 0; p < g_conf->npools; p++)
		for (size_t k = 0; k < g_conf->pools[p].nservers; k++) {
			struct lb_server *s = &g_conf->pools[p].servers[k];
			const struct srv_rt *rt = srv_rt(s);
			CHECK(rt->active == 0 && rt->nidle == 0);
			CHECK(rt->nopen == 0); /* the idle pool's counts (idle_purge sizes it by them) match the sockets */
			CHECK(atomic_load(&rt->shm->active) == 0);
			CHECK(atomic_load(&rt->shm->cb_trials) == 0); /* a leaked trial slot blocks a half-open circuit */
		}
}

/* -------------------------------------------------------------------- what went over the wire */

static int ip_eq(const struct lb_ip *a, const struct lb_ip *b)
{
	return a->v6 == b->v6 && memcmp(a->a, b->a, a->v6 ? 16 : 4) == 0;
}

/* The addresses a send_proxy header must carry: the client's PROXY header's, else the sockets'. */
static void expected_proxy(const struct vsock *cl, const struct lb_listener *L, int px_expected,
                           struct lb_proxy *want)
{
	memset(want, 0, sizeof *want);
	CHECK(lb_ip_from_sockaddr(&fz_peer, &want->src) == 0 && lb_ip_from_sockaddr(&fz_local, &want->dst) == 0);
	want->sport = ntohs(((const struct sockaddr_in *)&fz_peer)->sin_port);
	want->dport = ntohs(((const struct sockaddr_in *)&fz_local)->sin_port);
	struct lb_proxy px;
	if (px_expected && lb_parse_proxy(cl->rx.p, cl->rx.n, L->proxy_protocol, &px) > 0 && !px.local)
		*want = px;
}

/* lb's PROXY header at the start of a server connection; its length, 0 when cut short */
static size_t check_px_header(const struct vsock *v, const struct lb_proxy *want)
{
	struct lb_proxy got;
	int rc = lb_parse_proxy(v->tx.p, v->tx.n, v->px, &got);
	if (rc == LB_EAGAIN)
		return 0;
	CHECK(rc > 0); /* "lb sent a PROXY header its own parser refuses" */
	CHECK(got.version == v->px && !got.local);
	CHECK(ip_eq(&got.src, &want->src) && got.sport == want->sport); /* names the client */
	CHECK(ip_eq(&got.dst, &want->dst) && got.dport == want->dport);
	return (size_t)rc;
}

/* the body after a head: its length, or 0 with *cut set when the stream ends inside it (or,
 * for what a client sent, when its chunked framing is bad: lb answers that and stops) */
static size_t body_len(const char *p, size_t n, int chunked, int64_t cl, int *cut, int from_lb)
{
	*cut = 0;
	if (chunked) {
		struct lb_chunk ck;
		size_t used = 0;
		lb_chunk_init(&ck);
		int rc = lb_chunk_scan(&ck, p, n, &used);
		CHECK(rc != LB_CHUNK_ERROR || !from_lb); /* "lb forwarded chunked framing that does not parse" */
		*cut = rc != LB_CHUNK_DONE;
		return *cut ? 0 : used;
	}
	if (cl <= 0)
		return 0;
	*cut = (uint64_t)cl > n;
	return *cut ? 0 : (size_t)cl;
}

static int backend_said_101(const struct vsock *v)
{
	return memmem(v->rx.p, v->rx_off, " 101", 4) != NULL;
}

/* Request smuggling: a server connection carries complete, unambiguous requests back to back. */
static void check_backend_http(const struct vsock *v, const struct lb_proxy *want)
{
	static struct lb_req rq;
	size_t off = 0, n = v->tx.n;
	if (n == 0)
		return;
	CHECK(v->px >= 0);
	if (v->px > 0 && !(off = check_px_header(v, want)))
		return;
	while (off < n) {
		int rc = lb_parse_request(v->tx.p + off, n - off, &rq);
		if (rc == LB_EAGAIN)
			return; /* the last head, cut short */
		if (rc < 0)
			fprintf(stderr, "fuzz_conn: refused (%d %s) at offset %zu of the server's bytes:\n%.*s\n", rq.status,
			        rq.error, off, (int)LB_MIN(n - off, 600), v->tx.p + off);
		CHECK(rc > 0); /* "lb sent a server a head its own parser refuses" */
		CHECK(!((rq.flags & LB_HF_HAS_CL) && (rq.flags & LB_HF_TE)));
		unsigned flags = rq.flags;
		off += (size_t)rc;
		int cut;
		size_t body = body_len(v->tx.p + off, n - off, (flags & LB_HF_CHUNKED) != 0, rq.content_length, &cut, 1);
		if (cut)
			return;
		off += body;
		if ((flags & LB_HF_UPGRADE) && backend_said_101(v))
			return; /* a tunnel from here */
		if (flags & LB_HF_UPGRADE)
			CHECK(off == n); /* "bytes after an upgrade request that was not accepted" */
	}
}

static const struct vsock *client_vs(void) { return &fz_v[0]; }

/* The method of each request the client sent, as the client sees them: what each response must
 * be framed for. A head that does not parse (or never ends) is answered by lb as a non-HEAD. */
static size_t client_methods(const struct vsock *cl, size_t skip, int *m, size_t cap)
{
	static struct lb_req rq;
	size_t off = skip, n = cl->rx_off, k = 0;
	while (off < n && k < cap) {
		int rc = lb_parse_request(cl->rx.p + off, n - off, &rq);
		m[k++] = rc > 0 ? rq.method_id : LB_M_OTHER;
		if (rc <= 0 || (rq.flags & LB_HF_UPGRADE))
			break;
		off += (size_t)rc;
		int cut;
		off += body_len(cl->rx.p + off, n - off, (rq.flags & LB_HF_CHUNKED) != 0, rq.content_length, &cut, 0);
		if (cut)
			break;
	}
	return k;
}

/* did a server send this status (then lb may have relayed a response the server cut short) */
static int status_from_server(int status)
{
	char pat[8];
	snprintf(pat, sizeof pat, " %d", status);
	for (size_t i = 1; i < fz_nv; i++)
		if (fz_v[i].backend && memmem(fz_v[i].rx.p, fz_v[i].rx_off, pat, strlen(pat)))
			return 1;
	return 0;
}

/* The client gets well-formed responses, each framed for its request's method. Only the last
 * may be cut short, and only a server's (lb's own answers are written whole) or after a reset. */
static void check_client_http(const struct vsock *v, size_t skip)
{
	static struct lb_resp rs;
	int methods[64];
	size_t nm = client_methods(v, skip, methods, 64), k = 0, off = 0, n = v->tx.n;
	while (off < n) {
		int method = k < nm ? methods[k] : LB_M_OTHER;
		int rc = lb_parse_response(v->tx.p + off, n - off, &rs);
		if (rc == LB_EAGAIN)
			return;
		if (rc < 0)
			fprintf(stderr, "fuzz_conn: refused (%s) at offset %zu of the client's bytes:\n%.*s\n", rs.error, off,
			        (int)LB_MIN(n - off, 600), v->tx.p + off);
		CHECK(rc > 0); /* "lb sent the client a head its own parser refuses" */
		CHECK(!((rs.flags & LB_HF_HAS_CL) && (rs.flags & LB_HF_TE)));
		off += (size_t)rc;
		if (rs.status == 101)
			return;
		if (rs.status < 200)
			continue;
		k++;
		if (!lb_resp_has_body(method, rs.status))
			continue;
		if (!(rs.flags & LB_HF_CHUNKED) && rs.content_length < 0)
			return; /* until close */
		int cut;
		size_t body = body_len(v->tx.p + off, n - off, (rs.flags & LB_HF_CHUNKED) != 0, rs.content_length, &cut, 1);
		if (cut && !v->rst && !status_from_server(rs.status))
			fprintf(stderr, "fuzz_conn: lb's own %d answer to request %zu (method %d) is cut short\n", rs.status, k,
			        method);
		CHECK(!cut || v->rst || status_from_server(rs.status));
		if (cut)
			return;
		off += body;
	}
}

static int is_prefix(const char *a, size_t an, const char *b, size_t bn)
{
	return an <= bn && (an == 0 || memcmp(a, b, an) == 0);
}

/* TCP: bytes go through unchanged, in order, in both directions. */
static void check_tcp(const struct vsock *cl, const struct lb_listener *L, int px_expected,
                      const struct lb_proxy *want)
{
	size_t skip = 0;
	if (px_expected) {
		struct lb_proxy px;
		int rc = lb_parse_proxy(cl->rx.p, cl->rx_off, L->proxy_protocol, &px);
		if (rc <= 0)
			return; /* closed before a whole header, or refused it */
		skip = (size_t)rc;
	}
	struct fz_buf up = { 0 }, down = { 0 };
	fz_reserve(&up);
	fz_reserve(&down);
	for (size_t i = 1; i < fz_nv; i++) {
		const struct vsock *v = &fz_v[i];
		size_t off = 0;
		if (!v->backend)
			continue;
		if (v->tx.n && v->px > 0 && !(off = check_px_header(v, want)))
			continue;
		fz_put(&up, v->tx.p + off, v->tx.n - off);
		fz_put(&down, v->rx.p, v->rx_off);
	}
	CHECK(is_prefix(up.p, up.n, cl->rx.p + skip, cl->rx_off - skip)); /* servers got the client's bytes */
	CHECK(is_prefix(cl->tx.p, cl->tx.n, down.p, down.n));              /* the client got the servers' */
	free(up.p);
	free(down.p);
}

static void dump(const char *what, size_t i, const char *p, size_t n)
{
	fprintf(stderr, "---- %s %zu (%zu bytes)\n", what, i, n);
	for (size_t k = 0; k < n; k++)
		fprintf(stderr, isprint((unsigned char)p[k]) || p[k] == '\n' ? "%c" : "\\x%02x", (unsigned char)p[k]);
	fprintf(stderr, "\n");
}

/* FUZZ_CONN_VERBOSE: lb's log (above) and every socket's bytes both ways */
static void dump_wire(void)
{
	for (size_t i = 0; fz_verbose && i < fz_nv; i++) {
		if (fz_v[i].pipe)
			continue;
		dump(i ? "server conn, lb wrote" : "client, lb wrote", i, fz_v[i].tx.p, fz_v[i].tx.n);
		dump(i ? "server conn, lb read" : "client, lb read", i, fz_v[i].rx.p, fz_v[i].rx_off);
	}
}

static void check_wire(const struct lb_listener *L, int px_expected)
{
	const struct vsock *cl = client_vs();
	struct lb_proxy want;
	dump_wire();
	expected_proxy(cl, L, px_expected, &want);
	if (L->mode == LB_MODE_TCP) {
		check_tcp(cl, L, px_expected, &want);
		return;
	}
	for (size_t i = 1; i < fz_nv; i++)
		if (fz_v[i].backend)
			check_backend_http(&fz_v[i], &want);
	struct lb_proxy px;
	int rc = px_expected ? lb_parse_proxy(cl->rx.p, cl->rx_off, L->proxy_protocol, &px) : 0;
	if (rc >= 0 && cl->rx_off - (size_t)rc >= 14 && !memcmp(cl->rx.p + rc, "PRI * HTTP/2.0", 14))
		return; /* HTTP/2: what the servers got is checked above; the client's frames are nghttp2's */
	if (rc >= 0)
		check_client_http(cl, (size_t)rc);
}

/* -------------------------------------------------------------------- the input */

static size_t num(const uint8_t *p, size_t n, size_t dflt)
{
	size_t v = 0, i = 0;
	for (; i < n && i < 9 && p[i] >= '0' && p[i] <= '9'; i++)
		v = v * 10 + (size_t)(p[i] - '0');
	return i ? v : dflt;
}

/* the open server connection a selector byte names: '0' the newest, '1' the one before... */
static struct vsock *backend_sel(uint8_t s)
{
	struct vsock *open[FZ_MAXV];
	size_t k = 0;
	for (size_t i = fz_nv; i-- > 1;)
		if (fz_v[i].open && fz_v[i].connected && fz_v[i].backend)
			open[k++] = &fz_v[i];
	return k ? open[(size_t)(s - '0' + 256 * 4) % k] : NULL;
}

static void peer_op(struct vsock *v, char op, const uint8_t *p, size_t n)
{
	if (!v || v->rx_eof || v->rst)
		return;
	if (op == 'C' || op == 'B')
		fz_put(&v->rx, p, n);
	else if (op == 'E' || op == 'F')
		v->rx_eof = 1;
	else
		v->rst = 1;
}

static void apply(char op, const uint8_t *p, size_t n)
{
	switch (op) {
	case 'C': case 'E': case 'X':
		peer_op(&fz_v[0], op, p, n);
		break;
	case 'B': case 'F': case 'R':
		if (n)
			peer_op(backend_sel(p[0]), op, p + 1, n - 1);
		break;
	case 'K':
		for (size_t i = 0; i < n && fz_nmodes < sizeof fz_modes; i++)
			if (p[i] >= '0' && p[i] <= '5')
				fz_modes[fz_nmodes++] = (char)(p[i] - '0');
		break;
	case 'W':
		fz_wcap = num(p, n, 0) ? num(p, n, 0) : FZ_NOLIMIT;
		peers_read();
		break;
	case 'S':
		fz_seg = num(p, n, 0) ? num(p, n, 0) : FZ_NOLIMIT;
		break;
	case 'T':
		if (n && isdigit(p[0]))
			fz_clock += LB_MIN(num(p, n, 0), 600000);
		else if (W.nheap && W.heap[0]->deadline > fz_clock)
			fz_clock = W.heap[0]->deadline;
		break;
	}
	settle();
}

static const uint8_t *find_sep(const uint8_t *p, const uint8_t *end)
{
	const uint8_t *s = end - p >= 2 ? memmem(p, (size_t)(end - p), "\n#", 2) : NULL;
	return s ? s : end;
}

static void run_records(const uint8_t *p, const uint8_t *end)
{
	const uint8_t *s = find_sep(p, end);
	if (s > p)
		apply('C', p, (size_t)(s - p));
	for (int k = 0; s < end && k < 512; k++) {
		p = s + 2;
		s = find_sep(p, end);
		if (s > p)
			apply((char)p[0], p + 1, (size_t)(s - p - 1));
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;
	if (!ready) {
		init_once();
		ready = 1;
	}
	if (size < 1 || size > 65536)
		return 0;
	size_t sel = (size_t)(data[0] % 8) % fz_nsel;
	int li = fz_sel[sel].li;
	reset_worker(fz_confs[fz_sel[sel].conf]);
	set_addrs((data[0] / 8) % 4, li);
	const struct lb_listener *L = &g_conf->listeners[li];
	struct lb_ip ip;
	lb_ip_from_sockaddr(&fz_peer, &ip);
	int px_expected = L->proxy_protocol && cidr_any(L->trusted, L->ntrusted, &ip);
	conn_new(vs_new(0), li, &fz_peer);
	settle();
	run_records(data + 1, data + size);
	finish();
	close_idle_backends();
	close_kept_pipes();
	check_clean();
	check_wire(L, px_expected);
	vs_free_all();
	return 0;
}
