/* bench/connload.c — many HTTP/1.1 keep-alive connections for bench/run.sh: one thread, epoll,
 * non-blocking sockets. Every request is "GET / HTTP/1.1\r\nHost: b\r\n\r\n"; a response counts
 * as ok when its status is 200 (Content-Length or chunked framing).
 *
 *   connload [-n CONNS] [-s SRC] [-S NSRC] [-p PAR] [-t TIMEOUT] [-i HOLD] HOST PORT     idle
 *   connload -a MS [-d SECS] ...                                                      active
 *   connload -k REQUESTS ...                                                          count
 *
 *   idle (default)  open CONNS connections (at most PAR connecting or waiting for their first
 *                   response at a time), one request on each; when every one has its response (or
 *                   failed) print "ready ...", then hold them idle for HOLD seconds (default 600)
 *                   or until SIGTERM/SIGINT, and print the final line (closed = connections the
 *                   server closed while idle)
 *   -a MS           active: every connection sends a request, waits for the response, and sends
 *                   the next one MS milliseconds after the previous one was due (the first at a
 *                   random offset in [0, MS) after connecting), so CONNS connections make CONNS *
 *                   1000 / MS requests/s; once all are connected (or failed) the run lasts SECS
 *                   seconds (default 20). A failed connection (connect error, timeout, closed by
 *                   the server) is counted and opened again MS later.
 *   -k REQUESTS     count: CONNS connections send requests back to back (keep-alive) until
 *                   REQUESTS responses in total, then exit (for callgrind: a bounded load)
 *   -s SRC -S NSRC  bind connection i to source address SRC + (i mod NSRC) (IPv4, e.g. 127.0.0.2,
 *                   with IP_BIND_ADDRESS_NO_PORT): the ephemeral ports limit one source address to
 *                   ~28,000 connections to one destination
 *   -t TIMEOUT      seconds for a connect and for a response (default 10): a timeout is an error
 *   -H FILE         write the latency histogram (lines "MICROSECONDS COUNT", 10 us buckets) to FILE
 *
 * Final line: "conns N connected N ok N requests N connect_errors N timeouts N closed N non200 N
 * errors N secs S rate R p50_ms X p99_ms Y" (rate = ok responses per second of the measured
 * window; latency from the request's write to the response's last byte; errors = connect_errors +
 * timeouts + closed + non200 + other failures). The first few errors are described on stderr.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

enum { ST_FREE, ST_CONNECTING, ST_WAIT, ST_IDLE, ST_PAUSE };
enum { BUFSZ = 2048, HIST_US = 10, HIST_N = 1000000 }; /* 10 us buckets up to 10 s */

struct conn {
	int fd;
	uint8_t st;
	uint8_t first; /* no response yet on this connection */
	uint16_t len;
	uint64_t t0; /* connect or request start (ns) */
	uint64_t due; /* next request (active mode) */
	char buf[BUFSZ];
};

static const char REQ[] = "GET / HTTP/1.1\r\nHost: b\r\n\r\n";
static struct conn *C;
static int N = 1000, PAR = 512, EP;
static long TIMEOUT_S = 10;
static struct sockaddr_in DST, SRC;
static int NSRC = 0;
static volatile sig_atomic_t g_stop;
static uint32_t *HIST;
static uint64_t hist_total;
static long n_alive, n_connected, n_ok, n_req, n_conn_err, n_timeout, n_closed, n_non200, n_other, n_pending;
static int n_err_shown;
/* active mode: a min-heap of connections by due time */
static int *HEAP, heap_n;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void on_signal(int s)
{
	(void)s;
	g_stop = 1;
}

static void say(const char *what, int i, int err)
{
	if (n_err_shown++ < 5)
		fprintf(stderr, "connload: connection %d: %s%s%s\n", i, what, err ? ": " : "", err ? strerror(err) : "");
}

static void heap_swap(int a, int b)
{
	int t = HEAP[a];
	HEAP[a] = HEAP[b];
	HEAP[b] = t;
}

static void heap_push(int i)
{
	int k = heap_n++;
	HEAP[k] = i;
	while (k > 0 && C[HEAP[(k - 1) / 2]].due > C[HEAP[k]].due) {
		heap_swap(k, (k - 1) / 2);
		k = (k - 1) / 2;
	}
}

static int heap_pop(void)
{
	int top = HEAP[0], k = 0;
	HEAP[0] = HEAP[--heap_n];
	for (;;) {
		int l = 2 * k + 1, r = l + 1, m = k;
		if (l < heap_n && C[HEAP[l]].due < C[HEAP[m]].due)
			m = l;
		if (r < heap_n && C[HEAP[r]].due < C[HEAP[m]].due)
			m = r;
		if (m == k)
			break;
		heap_swap(k, m);
		k = m;
	}
	return top;
}

static void conn_close(int i)
{
	if (C[i].fd >= 0) {
		close(C[i].fd);
		n_alive--;
	}
	C[i].fd = -1;
	C[i].st = ST_FREE;
	C[i].len = 0;
}

static int conn_open(int i)
{
	struct conn *c = &C[i];
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		say("socket", i, errno);
		return -1;
	}
	if (NSRC > 0) {
		int one = 1;
		struct sockaddr_in s = SRC;
		s.sin_addr.s_addr = htonl(ntohl(SRC.sin_addr.s_addr) + (uint32_t)(i % NSRC));
		setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
		if (bind(fd, (struct sockaddr *)&s, sizeof s) != 0) {
			say("bind", i, errno);
			close(fd);
			return -1;
		}
	}
	if (connect(fd, (struct sockaddr *)&DST, sizeof DST) != 0 && errno != EINPROGRESS) {
		say("connect", i, errno);
		close(fd);
		return -1;
	}
	struct epoll_event ev = { .events = EPOLLOUT, .data.u32 = (uint32_t)i };
	if (epoll_ctl(EP, EPOLL_CTL_ADD, fd, &ev) != 0) {
		say("epoll_ctl", i, errno);
		close(fd);
		return -1;
	}
	c->fd = fd;
	n_alive++;
	c->st = ST_CONNECTING;
	c->first = 1;
	c->len = 0;
	c->t0 = now_ns();
	return 0;
}

static int send_req(int i)
{
	struct conn *c = &C[i];
	ssize_t w = send(c->fd, REQ, sizeof REQ - 1, MSG_NOSIGNAL);
	if (w != (ssize_t)(sizeof REQ - 1)) {
		say("send", i, w < 0 ? errno : 0);
		return -1;
	}
	c->st = ST_WAIT;
	c->len = 0;
	c->t0 = now_ns();
	n_req++;
	return 0;
}

/* 0: incomplete, 1: complete (status in *status), -1: malformed */
static int parse(const struct conn *c, int *status)
{
	const char *b = c->buf, *end = memmem(b, c->len, "\r\n\r\n", 4);
	if (!end)
		return c->len >= BUFSZ ? -1 : 0;
	size_t hl = (size_t)(end - b) + 4;
	if (c->len < 12 || memcmp(b, "HTTP/1.", 7) != 0)
		return -1;
	*status = atoi(b + 9);
	long cl = -1;
	int chunked = 0;
	for (const char *p = memchr(b, '\n', hl); p && p < end; p = memchr(p, '\n', (size_t)(b + hl - p))) {
		p++;
		if (!strncasecmp(p, "content-length:", 15))
			cl = strtol(p + 15, NULL, 10);
		else if (!strncasecmp(p, "transfer-encoding:", 18))
			chunked = 1;
	}
	if (chunked)
		return (c->len >= hl + 5 && memcmp(b + c->len - 5, "0\r\n\r\n", 5) == 0) ? 1 : (c->len >= BUFSZ ? -1 : 0);
	if (cl < 0)
		cl = 0;
	if (c->len < hl + (size_t)cl)
		return c->len >= BUFSZ ? -1 : 0;
	return 1;
}

static void hist_add(uint64_t ns)
{
	uint64_t b = ns / 1000 / HIST_US;
	HIST[b < HIST_N ? b : HIST_N - 1]++;
	hist_total++;
}

static double hist_pct(double q)
{
	if (!hist_total)
		return -1;
	uint64_t want = (uint64_t)(q * (double)hist_total), s = 0;
	if (want >= hist_total)
		want = hist_total - 1;
	for (int b = 0; b < HIST_N; b++) {
		s += HIST[b];
		if (s > want)
			return (b + 1) * HIST_US / 1000.0;
	}
	return HIST_N * HIST_US / 1000.0;
}

static void usage(void)
{
	fprintf(stderr, "usage: connload [-n CONNS] [-s SRC -S NSRC] [-p PAR] [-t TIMEOUT] [-i HOLD | -a MS [-d SECS] | "
	                "-k REQUESTS] [-H FILE] HOST PORT\n");
	exit(2);
}

int main(int argc, char **argv)
{
	long hold = 600, interval_ms = 0, secs = 20, kreq = 0;
	const char *histfile = NULL, *src = NULL;
	int o;
	while ((o = getopt(argc, argv, "n:s:S:p:t:i:a:d:k:H:")) != -1) {
		switch (o) {
		case 'n': N = atoi(optarg); break;
		case 's': src = optarg; break;
		case 'S': NSRC = atoi(optarg); break;
		case 'p': PAR = atoi(optarg); break;
		case 't': TIMEOUT_S = atol(optarg); break;
		case 'i': hold = atol(optarg); break;
		case 'a': interval_ms = atol(optarg); break;
		case 'd': secs = atol(optarg); break;
		case 'k': kreq = atol(optarg); break;
		case 'H': histfile = optarg; break;
		default: usage();
		}
	}
	if (argc - optind != 2 || N < 1 || PAR < 1 || TIMEOUT_S < 1 || secs < 1 || interval_ms < 0 || kreq < 0)
		usage();
	DST.sin_family = AF_INET;
	DST.sin_port = htons((uint16_t)atoi(argv[optind + 1]));
	if (inet_pton(AF_INET, argv[optind], &DST.sin_addr) != 1)
		usage();
	if (src) {
		SRC.sin_family = AF_INET;
		if (inet_pton(AF_INET, src, &SRC.sin_addr) != 1)
			usage();
		if (NSRC < 1)
			NSRC = 1;
	} else {
		NSRC = 0;
	}
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	signal(SIGPIPE, SIG_IGN);
	struct sigaction sa = { .sa_handler = on_signal };
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	C = calloc((size_t)N, sizeof *C);
	HIST = calloc(HIST_N, sizeof *HIST);
	HEAP = calloc((size_t)N, sizeof *HEAP);
	EP = epoll_create1(EPOLL_CLOEXEC);
	if (!C || !HIST || !HEAP || EP < 0) {
		perror("connload");
		return 1;
	}
	for (int i = 0; i < N; i++)
		C[i].fd = -1;
	srand((unsigned)getpid());

	const int active = interval_ms > 0, count = kreq > 0;
	const uint64_t tmo = (uint64_t)TIMEOUT_S * 1000000000u, ival = (uint64_t)interval_ms * 1000000u;
	uint64_t t_start = now_ns(), t_ready = 0, t_end = 0, last_scan = t_start;
	long ok_at_ready = 0;
	int next = 0; /* next connection to open for the first time */
	long inflight = 0; /* connecting or waiting for a first response */
	struct epoll_event evs[512];

	while (!g_stop) {
		/* open new connections up to PAR in flight */
		while (next < N && inflight < PAR) {
			if (conn_open(next) == 0)
				inflight++;
			else if (active)
				n_conn_err++, C[next].due = now_ns() + ival, heap_push(next);
			else
				n_conn_err++;
			next++;
		}
		uint64_t now = now_ns();
		if (!t_ready && next == N && inflight == 0) {
			t_ready = now;
			ok_at_ready = n_ok;
			if (!active && !count) {
				printf("ready conns %d connected %ld ok %ld connect_errors %ld timeouts %ld non200 %ld secs %.2f\n", N,
				       n_connected, n_ok, n_conn_err, n_timeout, n_non200, (double)(now - t_start) / 1e9);
				fflush(stdout);
				t_end = now + (uint64_t)hold * 1000000000u;
			} else if (active) {
				t_end = now + (uint64_t)secs * 1000000000u;
			}
		}
		if (t_end && now >= t_end)
			break;
		if (count && n_pending == 0 && (n_req >= kreq || (next == N && inflight == 0 && n_alive == 0)))
			break;
		/* due requests (active) */
		while (active && heap_n > 0 && C[HEAP[0]].due <= now) {
			int i = heap_pop();
			if (C[i].st == ST_PAUSE) {
				if (send_req(i) != 0) {
					n_other++;
					epoll_ctl(EP, EPOLL_CTL_DEL, C[i].fd, NULL);
					conn_close(i);
					C[i].due = now + ival;
					heap_push(i);
				} else {
					n_pending++;
				}
			} else if (C[i].st == ST_FREE) {
				if (conn_open(i) != 0) {
					n_conn_err++;
					C[i].due = now + ival;
					heap_push(i);
				} else {
					C[i].first = 0; /* a reconnection: not counted in flight */
				}
			}
		}
		/* timeouts, every 100 ms */
		if (now - last_scan > 100000000u) {
			last_scan = now;
			for (int i = 0; i < next; i++) {
				struct conn *c = &C[i];
				if ((c->st != ST_CONNECTING && c->st != ST_WAIT) || c->t0 + tmo > now)
					continue;
				n_timeout++;
				say(c->st == ST_CONNECTING ? "connect timeout" : "response timeout", i, 0);
				if (c->first)
					inflight--;
				if (c->st == ST_WAIT)
					n_pending--;
				conn_close(i);
				if (active) {
					c->due = now + ival;
					heap_push(i);
				}
			}
		}
		int wait_ms = 100;
		if (active && heap_n > 0) {
			uint64_t d = C[HEAP[0]].due > now ? C[HEAP[0]].due - now : 0;
			if (d / 1000000u < (uint64_t)wait_ms)
				wait_ms = (int)(d / 1000000u);
		}
		if (t_end && t_end > now && (t_end - now) / 1000000u < (uint64_t)wait_ms)
			wait_ms = (int)((t_end - now) / 1000000u) + 1;
		int n = epoll_wait(EP, evs, 512, wait_ms);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			perror("epoll_wait");
			break;
		}
		now = now_ns();
		for (int e = 0; e < n; e++) {
			int i = (int)evs[e].data.u32;
			struct conn *c = &C[i];
			if (c->st == ST_CONNECTING) {
				int err = 0;
				socklen_t sl = sizeof err;
				getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &sl);
				if (err) {
					say("connect", i, err);
					n_conn_err++;
					goto fail;
				}
				n_connected++;
				struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.u32 = (uint32_t)i };
				epoll_ctl(EP, EPOLL_CTL_MOD, c->fd, &ev);
				if (active) { /* first request at a random offset */
					c->st = ST_PAUSE;
					c->due = now + (ival ? (uint64_t)rand() % ival : 0);
					if (c->first) {
						c->first = 0;
						inflight--;
					}
					heap_push(i);
					continue;
				}
				if (count && n_req >= kreq) {
					c->st = ST_IDLE;
					if (c->first) {
						c->first = 0;
						inflight--;
					}
					continue;
				}
				if (send_req(i) != 0) {
					n_other++;
					goto fail;
				}
				n_pending++;
				continue;
			}
			/* readable: a response, or the server's close */
			ssize_t r = recv(c->fd, c->buf + c->len, BUFSZ - c->len, 0);
			if (r <= 0) {
				if (r < 0 && (errno == EAGAIN || errno == EINTR))
					continue;
				if (c->st == ST_WAIT) {
					say(r == 0 ? "closed before the response" : "recv", i, r < 0 ? errno : 0);
					n_pending--;
				} else if (!active && n_closed == 0) {
					say(r == 0 ? "closed by the server while idle" : "recv while idle", i, r < 0 ? errno : 0);
				}
				n_closed++;
				goto fail;
			}
			if (c->st != ST_WAIT) {
				say("unexpected bytes while idle", i, 0);
				n_other++;
				goto fail;
			}
			c->len = (uint16_t)(c->len + r);
			int status = 0, pr = parse(c, &status);
			if (pr == 0)
				continue;
			n_pending--;
			if (pr < 0) {
				say("malformed or too long response", i, 0);
				n_other++;
				goto fail;
			}
			if (status == 200) {
				n_ok++;
				if (!count || n_ok <= kreq)
					hist_add(now - c->t0);
			} else {
				if (n_non200 == 0 && n_err_shown < 5)
					fprintf(stderr, "connload: connection %d: status %d\n", i, status), n_err_shown++;
				n_non200++;
			}
			if (c->first) {
				c->first = 0;
				inflight--;
			}
			c->len = 0;
			if (active) {
				c->st = ST_PAUSE;
				c->due += ival;
				if (c->due < now)
					c->due = now;
				heap_push(i);
			} else if (count) {
				if (n_req < kreq) {
					if (send_req(i) != 0) {
						n_other++;
						goto fail;
					}
					n_pending++;
				} else {
					c->st = ST_IDLE;
				}
			} else {
				c->st = ST_IDLE;
			}
			continue;
fail:
			if (c->first) {
				c->first = 0;
				inflight--;
			}
			epoll_ctl(EP, EPOLL_CTL_DEL, c->fd, NULL);
			conn_close(i);
			if (active) {
				c->due = now + ival;
				heap_push(i);
			}
		}
	}
	uint64_t t_stop = now_ns();
	double win = t_ready ? (double)(t_stop - t_ready) / 1e9 : (double)(t_stop - t_start) / 1e9;
	if (count)
		win = (double)(t_stop - t_start) / 1e9;
	long win_ok = active ? n_ok - ok_at_ready : n_ok;
	long errors = n_conn_err + n_timeout + n_closed + n_non200 + n_other;
	printf("conns %d connected %ld ok %ld requests %ld connect_errors %ld timeouts %ld closed %ld non200 %ld errors %ld "
	       "secs %.2f rate %.0f p50_ms %.3f p99_ms %.3f\n",
	       N, n_connected, n_ok, n_req, n_conn_err, n_timeout, n_closed, n_non200, errors, win,
	       win > 0 ? (double)win_ok / win : 0.0, hist_pct(0.50), hist_pct(0.99));
	if (histfile) {
		FILE *f = fopen(histfile, "w");
		if (f) {
			for (int b = 0; b < HIST_N; b++)
				if (HIST[b])
					fprintf(f, "%d %u\n", (b + 1) * HIST_US, HIST[b]);
			fclose(f);
		}
	}
	return 0;
}
