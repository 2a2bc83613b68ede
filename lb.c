/* lb — a load balancer and reverse proxy in one translation unit.
 *
 *   cc -O2 lb.c -o lb -lbearssl -linih
 *   cc -O2 -DLB_TLS_OPENSSL lb.c -o lb-openssl -lssl -lcrypto -linih   (OpenSSL 3: TLS 1.3, tickets, OCSP)
 *
 * Sections, in file order (each section's banner says what it owns and which sections it calls; the
 * headers are "===... N. TITLE" lines; tests/code_checks.sh checks this list against them):
 *   1. build options: includes, portability, the event backend's choice
 *   2. small utilities: compares, hashing, name index, PRNG; the error log, shared mappings, files
 *   3. pure parsers: HTTP heads, chunked framing, values, PROXY protocol, admin API requests, X.509 names, JSON, log templates
 *   4. configuration: text -> struct lb_conf by the key table; the runtime state beside it; descriptors per worker
 *   5. routing and balancing: route, pool and server choice (pure); what a pick reads from shared memory
 *   6. event loop and timers: epoll or poll, the clock
 *   7. TLS glue: one interface over BearSSL or OpenSSL 3, certificates, resumption, OCSP, handshake failures
 *   8. connections: connection and buffer pools, the deadline heap, idle server connections, log_throttled
 *   9. HTTP proxying: request -> server, head rewriting, bodies, retries, lb's answers; splice; byte movers; HTTP/2
 *  10. TCP proxying: the tunnel
 *  11. health checks, circuit breaker, events
 *  12. shared memory: server and worker slots by name, rate limits, connection limits
 *  13. admin API: served by the master
 *  14. access log: lines, the buffer, lost lines
 *  15. process: listeners, signals, the worker's loop, the master (alerts, reaping, rotation, reload, stop)
 *  16. main, lb ctl: the command line; the admin API client
 * Tests and fuzzers build this file with -DLB_NO_MAIN and call what lb.h declares.
 * State: the config is g_conf (not written after load; its runtime state beside it, g_conf->rt), the clock
 * g_now; every other mutable file-scope variable is a member of one of these structs, whose banners say
 * who owns and writes it, what a fork inherits and what the fuzzer resets: P (this process, section 2),
 * EV (event backend, 6), SHM (shared mappings, 7), TLS (pooled engines, 7), W (the serving worker, 8),
 * M (the master, 13), ADM (admin API, 13), ACC (access log buffer, 14). Left loose: g_wk, g_alerts,
 * g_check_first (their types come after those structs), g_top_tio (lb ctl), g_h2cb, g_h2opt, g_free_h2s
 * (nghttp2 types, the HTTP/2 build only). tests/code_checks.sh checks it.
 */

/* ==================================================================== 1. build options
 * Chooses the event backend: epoll on Linux, poll() elsewhere or with -DLB_POLL. Calls nothing. */
#define _GNU_SOURCE
#include "lb.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <pwd.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define INI_HANDLER_LINENO 1
#include <ini.h>
#ifdef LB_TLS_OPENSSL /* the TLS library: section 7 alone uses it */
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#else
#include <bearssl.h>
#endif
#ifdef LB_HTTP2
#include <nghttp2/nghttp2.h> /* HTTP/2 for clients (section 9's HTTP/2 subsection); make turns it on */
#endif

#if defined(__linux__) && !defined(LB_POLL)
#define LB_EPOLL 1
#include <sys/epoll.h>
#endif
#ifdef __linux__
#include <sys/prctl.h>
#endif

#define LB_UNUSED(x) ((void)(x))
#define LB_MIN(a, b) ((a) < (b) ? (a) : (b))
#define LB_MAX(a, b) ((a) > (b) ? (a) : (b))

/* ==================================================================== 2. small utilities
 * Case-insensitive compares, hashing, a name index (config and shared-memory lookups by name), a tiny
 * PRNG, a log-free natural logarithm, the once-a-period decision of repeated log lines (lb_throttle_pass;
 * log_throttled in 8. writes them), the edit distance behind "did you mean", JSON string escaping.
 * No I/O but in the last subsection (the error log, shared mappings, page pools, files). Calls nothing later. */

static int lower(int c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

static int str_ieq(const char *a, size_t an, const char *b)
{
	size_t bn = strlen(b);
	if (an != bn)
		return 0;
	for (size_t i = 0; i < an; i++)
		if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
			return 0;
	return 1;
}

static int mem_ieq(const char *a, const char *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
			return 0;
	return 1;
}

/* token characters (RFC 9110 tchar): the parsers test every byte of a head against this */
static const unsigned char k_tchar[256] = {
	['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1, ['-'] = 1,
	['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1,
	['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,
	['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1,
	['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1,
	['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
	['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1,
	['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1,
	['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1,
};

static int is_tchar(unsigned char c) { return k_tchar[c]; }

static int is_hex(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int hex_val(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	return lower(c) - 'a' + 10;
}

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

/* field-value characters: VCHAR, SP, HTAB, obs-text */
static int is_vchar_ws(unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7f); }

static uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

uint64_t lb_hash64(const void *data, size_t n)
{
	const unsigned char *p = data;
	uint64_t h = 0xcbf29ce484222325ULL;
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return mix64(h);
}

/* An open-addressing index of names kept elsewhere (entry i's name is name_at(ctx, i)), so
 * that duplicate and by-name lookups over thousands of sections, servers or shared-memory
 * slots stay linear where a scan per name would make a large configuration quadratic. */
struct name_index {
	uint32_t *cell; /* entry + 1; 0 = empty */
	size_t mask;
};
typedef const char *name_at_fn(const void *ctx, uint32_t i);

/* room for n entries at most half full; -1 when out of memory */
static int name_index_init(struct name_index *x, size_t n)
{
	size_t cap = 16;
	while (cap < 2 * n)
		cap *= 2;
	x->cell = calloc(cap, sizeof *x->cell);
	x->mask = cap - 1;
	return x->cell ? 0 : -1;
}

static void name_index_free(struct name_index *x)
{
	free(x->cell);
	x->cell = NULL;
}

/* The cell holding name, or the empty cell where it goes (store entry + 1 there). */
static uint32_t *name_index_cell(const struct name_index *x, const char *name, name_at_fn *name_at, const void *ctx)
{
	size_t i = (size_t)lb_hash64(name, strlen(name)) & x->mask;
	while (x->cell[i] && strcmp(name_at(ctx, x->cell[i] - 1), name))
		i = (i + 1) & x->mask;
	return &x->cell[i];
}

int lb_throttle_pass(struct lb_throttle *t, uint64_t now_ms, uint64_t period_ms, uint64_t *quiet,
                     uint64_t *span_ms)
{
	if (t->last && now_ms - t->last < period_ms) {
		t->quiet++;
		return 0;
	}
	*quiet = t->quiet;
	*span_ms = t->last ? now_ms - t->last : 0;
	t->quiet = 0;
	t->last = now_ms ? now_ms : 1;
	return 1;
}

/* Natural log for x in (0, 1], without libm, so the build line needs no -lm.
 * x = m * 2^e with m in [1,2); ln m from the atanh series (|t| <= 1/3: 8 terms give ~1e-9). */
static double ln_unit(double x)
{
	int e = 0;
	while (x < 1.0) {
		x *= 2.0;
		e--;
	}
	double t = (x - 1.0) / (x + 1.0), t2 = t * t, term = t, sum = 0;
	for (int k = 1; k <= 17; k += 2) {
		sum += term / k;
		term *= t2;
	}
	return 2.0 * sum + e * 0.69314718055994530942;
}

/* Levenshtein distance, for "did you mean"; names past 63 characters are never close */
static size_t edit_distance(const char *a, const char *b)
{
	size_t na = strlen(a), nb = strlen(b), row[64];
	if (na >= 64 || nb >= 64)
		return 64;
	for (size_t j = 0; j <= nb; j++)
		row[j] = j;
	for (size_t i = 1; i <= na; i++) {
		size_t diag = row[0]; /* row[j - 1] of the previous row */
		row[0] = i;
		for (size_t j = 1; j <= nb; j++) {
			size_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);
			best = LB_MIN(best, up + 1);
			row[j] = LB_MIN(best, row[j - 1] + 1);
			diag = up;
		}
	}
	return row[nb];
}

/* keeps in *best the closest name to w: within 2 edits (fewer than w has characters), else one that
 * starts with w or that w starts with (3 characters at least) */
static void closer(const char *w, const char *name, const char **best, size_t *bestd)
{
	size_t d = edit_distance(w, name), wn = strlen(w), nn = strlen(name);
	if (d > 2 || d >= wn) {
		size_t common = LB_MIN(wn, nn);
		if (common < 3 || strncmp(w, name, common))
			return;
		d = 3;
	}
	if (!*best || d < *bestd) {
		*best = name;
		*bestd = d;
	}
}

/* s as the inside of a JSON string, cut to fit cap (alerts and the admin API) */
static size_t json_str(char *out, size_t cap, const char *s)
{
	size_t o = 0;
	for (; *s && o + 7 < cap; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			out[o++] = '\\', out[o++] = (char)ch;
		else if (ch < 0x20 || ch == 0x7f)
			o += (size_t)snprintf(out + o, cap - o, "\\u%04x", ch);
		else
			out[o++] = (char)ch;
	}
	out[o] = 0;
	return o;
}

/* -------------------------------------------------------------------- the error log, shared mappings, files
 * The I/O later sections share: lb_err, lb_warn, lb_info, lb_debug (one line to the error log, with its
 * level; [log] level filters), shm_map and its spinlock (the TLS
 * session cache, the event ring and the server slots live in such mappings), read_file (the config file,
 * the admin token file). Owns P, this process's identity, log descriptors and signal pipe. */

/* ---- struct lb_proc P: this process: who it is, where it logs, its signal pipe (gathered by gather_globals.py)
 * Owner: section 2 (lb_vlog) and 15 (main, worker_main, the signal handlers). main sets pid and
 * master_pid and opens the logs; the master reopens them on rotation (retarget_log) and sets
 * errlevel at reload; a worker receives new log descriptors on ctl. A fork inherits all of it:
 * worker_main then sets pid, slot, worker_id and ctl, and setup_runtime makes its own sigpipe.
 * The fuzzer sets slot, worker_id, pid, errfd and accfd once (init_once), never per input.
 */
static struct lb_proc {
	int errfd; /* the error log: stderr until [global] error = FILE is opened (retarget_log) */
	int errlevel; /* [log] level: lines above it are not written */
	int accfd;
	int slot; /* this worker's column; -1 in the master */
	pid_t pid;
	int worker_id; /* 1..workers within its generation */
	int sigpipe[2];
	int ctl; /* worker: datagram socket to the master (log fds arrive on it) */
	pid_t master_pid;
} P = {
	.errfd = 2,
	.errlevel = LB_LV_INFO,
	.accfd = -1,
	.slot = -1,
	.sigpipe = { -1, -1 },
	.ctl = -1,
};

static const char *const k_level_names[] = { "error", "warn", "info", "debug", NULL }; /* enum lb_loglevel */

/* One line: "2026-01-02T03:04:05.678Z lb[PID]: LEVEL: text". Levels: error (lb itself failed or
 * refused to start), warn (a server or the service degraded: a failed check, a circuit, a 5xx lb
 * answered), info (state changes and clients' bad requests), debug (what a flood repeats). */
static void lb_vlog(int lv, const char *fmt, va_list ap)
{
	if (lv > P.errlevel)
		return;
	char b[1024];
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t n = strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%S", &tm);
	n += (size_t)snprintf(b + n, sizeof b - n, ".%03dZ lb[%d]: %s: ", (int)(ts.tv_nsec / 1000000), (int)getpid(),
	                      k_level_names[lv]);
	int m = vsnprintf(b + n, sizeof b - n - 1, fmt, ap);
	n = LB_MIN(n + (size_t)(m < 0 ? 0 : m), sizeof b - 2);
	b[n++] = '\n';
	ssize_t w = write(P.errfd, b, n);
	LB_UNUSED(w);
}

static void lb_log(int lv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void lb_log(int lv, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	lb_vlog(lv, fmt, ap);
	va_end(ap);
}

static void lb_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void lb_err(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	lb_vlog(LB_LV_ERROR, fmt, ap);
	va_end(ap);
}
#define lb_warn(...) lb_log(LB_LV_WARN, __VA_ARGS__)
#define lb_info(...) lb_log(LB_LV_INFO, __VA_ARGS__)
#define lb_debug(...) lb_log(LB_LV_DEBUG, __VA_ARGS__)

/* a server as HOST:PORT ([v6]:PORT) for log lines: one of 4 static buffers in turn, so a line may name
 * a few */
static const char *srv_addr(const struct lb_server *s)
{
	static char b[4][LB_HOST_MAX + 16];
	static unsigned i;
	char *o = b[i++ % 4];
	snprintf(o, sizeof b[0], strchr(s->host, ':') ? "[%s]:%u" : "%s:%u", s->host, (unsigned)s->port);
	return o;
}

/* Memory every process shares, made by the master before the first fork; zero-filled, so every
 * counter, flag and spinlock in it starts at 0. Pages cost only once touched. NULL on failure. */
static void *shm_map(size_t n, const char *what)
{
	void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p != MAP_FAILED)
		return p;
	lb_err("%s (%zu bytes of shared memory): %s", what, n, strerror(errno));
	return NULL;
}

#if defined(__SANITIZE_ADDRESS__)
#define LB_BUF_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LB_BUF_ASAN 1
#endif
#endif

/* Page pools: blocks of one size, whole pages each, for buffers that are large and often not in
 * use (a connection's buffers, section 8; BearSSL's record buffer of a connection, section 7).
 * Free blocks are a stack: the most recently used on top, still in cache and in RAM. They come
 * in slabs from mmap, so that pages_trim can hand back every page of a block (from malloc, the
 * page holding the next chunk's header would stay); pages_trim, once a second, gives the pages
 * of all but LB_PAGES_WARM free blocks back to the kernel, so a burst does not leave its blocks
 * resident (those at [0, cold) have none). Under AddressSanitizer each block is its own heap
 * block, so overruns are still caught. */
#define LB_PAGES_WARM 64
struct lb_pages {
	char **stack;
	size_t nfree, cold; /* free blocks: stack[0, nfree); below cold: pages given back */
	size_t n, max;      /* blocks made, at most max */
	size_t unit, slab;  /* bytes per block (whole pages), blocks per mmap */
};

/* 0, or -1 when out of memory */
static int pages_init(struct lb_pages *pp, size_t size, size_t max, size_t slab)
{
	*pp = (struct lb_pages){ .max = max, .unit = (size + 4095) & ~(size_t)4095, .slab = slab };
	pp->stack = calloc(max, sizeof *pp->stack);
	return pp->stack ? 0 : -1;
}

static int pages_grow(struct lb_pages *pp)
{
	size_t k = LB_MIN(pp->slab, pp->max - pp->n);
	if (k == 0)
		return -1;
#ifdef LB_BUF_ASAN
	k = 1;
	char *slab = malloc(pp->unit);
	if (!slab)
		return -1;
#else
	char *slab = mmap(NULL, k * pp->unit, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (slab == MAP_FAILED)
		return -1;
#endif
	for (size_t i = 0; i < k; i++)
		pp->stack[pp->nfree++] = slab + i * pp->unit;
	pp->n += k;
	return 0;
}

/* a block, NULL when max are in use or out of memory */
static char *pages_take(struct lb_pages *pp)
{
	if (!pp->nfree && pages_grow(pp) != 0)
		return NULL;
	char *b = pp->stack[--pp->nfree];
	pp->cold = LB_MIN(pp->cold, pp->nfree);
	return b;
}

static void pages_give(struct lb_pages *pp, char *b) { pp->stack[pp->nfree++] = b; }

static void pages_trim(struct lb_pages *pp)
{
	if (pp->nfree <= pp->cold + LB_PAGES_WARM)
		return;
#ifndef LB_BUF_ASAN
	for (size_t i = pp->cold; i < pp->nfree - LB_PAGES_WARM; i++)
		madvise(pp->stack[i], pp->unit, MADV_DONTNEED);
#endif
	pp->cold = pp->nfree - LB_PAGES_WARM;
}

/* a spinlock in shared memory; 0, as a fresh mapping holds, is unlocked */
static void spin_lock(_Atomic uint32_t *l)
{
	for (unsigned spins = 0; atomic_exchange_explicit(l, 1, memory_order_acquire); spins++)
		if (spins > 64)
			sched_yield();
}

static void spin_unlock(_Atomic uint32_t *l) { atomic_store_explicit(l, 0, memory_order_release); }

/* the whole file in a malloc'd buffer (not terminated), its size in *len; NULL with errno */
static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	size_t cap = 1 << 16, n = 0;
	char *b = malloc(cap);
	while (b) {
		size_t r = fread(b + n, 1, cap - n, f);
		n += r;
		if (r == 0)
			break;
		if (n == cap) {
			if (cap >= (16u << 20)) { /* a config larger than 16 MiB is a mistake */
				free(b);
				b = NULL;
				errno = EFBIG;
				break;
			}
			char *nb = realloc(b, cap *= 2);
			if (!nb)
				free(b);
			b = nb;
		}
	}
	fclose(f);
	*len = n;
	return b;
}

/* ==================================================================== 3. pure parsers
 * HTTP request and response heads, chunked framing, config values, paths, JSON tokens and documents
 * (lb_jdoc_*: lb ctl reads /api/stats with them, linode-scaler the Linode API), access log templates
 * (lb_log_template_parse, the field names). Each takes (buf, len, out) and returns a status; strings in
 * out point into buf (a JSON document's into its own decoded copy). No I/O, no globals.
 * Calls section 2 only. */

struct head_sem {          /* semantic state gathered while reading fields */
	int64_t cl;
	int te_chunked_count, te_last_chunked, te_bad_coding;
	int hosts;
	struct lb_str host_value;
	int conn_close, conn_keepalive, conn_upgrade;
	int upgrade_seen;
	struct lb_str upgrade;
	int expect_100, expect_other;
	unsigned flags;
};

/* Strict CRLF line: returns index of the CR, -2 need more, -1 bare CR/LF or NUL-free check fails. */
static long find_crlf(const char *b, size_t len, size_t pos)
{
	for (size_t i = pos; i < len; i++) {
		if (b[i] == '\r') {
			if (i + 1 >= len)
				return LB_EAGAIN;
			return b[i + 1] == '\n' ? (long)i : LB_EINVAL;
		}
		if (b[i] == '\n')
			return LB_EINVAL;
	}
	return LB_EAGAIN;
}

static int parse_uint64(const char *s, size_t n, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;
	if (n == 0)
		return LB_EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (!is_digit((unsigned char)s[i]))
			return LB_EINVAL;
		unsigned d = (unsigned)(s[i] - '0');
		if (v > (max - d) / 10)
			return LB_ERANGE;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

/* Iterate comma-separated list elements with OWS; returns 0 when done, 1 with an element. */
static int list_next(const char **p, const char *end, struct lb_str *el)
{
	const char *s = *p;
	while (s < end && (*s == ' ' || *s == '\t' || *s == ','))
		s++;
	if (s >= end)
		return 0;
	const char *e = s;
	while (e < end && *e != ',')
		e++;
	const char *t = e;
	while (t > s && (t[-1] == ' ' || t[-1] == '\t'))
		t--;
	el->p = s;
	el->n = (size_t)(t - s);
	*p = e;
	return 1;
}

static int token_ok(struct lb_str s)
{
	if (s.n == 0)
		return 0;
	for (size_t i = 0; i < s.n; i++)
		if (!is_tchar((unsigned char)s.p[i]))
			return 0;
	return 1;
}

/* A list header must not have empty elements ("chunked, , x" or a trailing comma): they
 * are how TE obfuscations hide from lax parsers. */
static int list_has_empty(struct lb_str v)
{
	int seen = 0;
	for (size_t i = 0; i < v.n; i++) {
		if (v.p[i] == ',') {
			if (!seen)
				return 1;
			seen = 0;
		} else if (v.p[i] != ' ' && v.p[i] != '\t') {
			seen = 1;
		}
	}
	return !seen;
}

static int te_coding_known(struct lb_str c)
{
	static const char *const known[] = { "gzip", "deflate", "compress", "x-gzip", "x-compress" };
	for (size_t i = 0; i < sizeof known / sizeof *known; i++)
		if (str_ieq(c.p, c.n, known[i]))
			return 1;
	return 0;
}

/* Returns 0, or the HTTP status for a bad Transfer-Encoding value. */
static int sem_transfer_encoding(struct head_sem *s, struct lb_str v)
{
	const char *p = v.p, *end = v.p + v.n;
	struct lb_str el;
	if (v.n == 0 || list_has_empty(v))
		return 400;
	s->flags |= LB_HF_TE;
	while (list_next(&p, end, &el)) {
		if (!token_ok(el))
			return 400;
		if (str_ieq(el.p, el.n, "chunked")) {
			s->te_chunked_count++;
			s->te_last_chunked = 1;
		} else {
			if (!te_coding_known(el))
				s->te_bad_coding = 1;
			s->te_last_chunked = 0;
		}
	}
	return 0;
}

static int sem_content_length(struct head_sem *s, struct lb_str v)
{
	uint64_t n;
	if (parse_uint64(v.p, v.n, INT64_MAX, &n) != 0)
		return 400;
	if (s->cl >= 0 && (uint64_t)s->cl != n)
		return 400;
	s->cl = (int64_t)n;
	s->flags |= LB_HF_HAS_CL;
	return 0;
}

static void sem_connection(struct head_sem *s, struct lb_str v)
{
	const char *p = v.p, *end = v.p + v.n;
	struct lb_str el;
	while (list_next(&p, end, &el)) {
		if (str_ieq(el.p, el.n, "close"))
			s->conn_close = 1;
		else if (str_ieq(el.p, el.n, "keep-alive"))
			s->conn_keepalive = 1;
		else if (str_ieq(el.p, el.n, "upgrade"))
			s->conn_upgrade = 1;
		else
			s->flags |= LB_HF_CONN_NAMES;
	}
}

/* Host = uri-host [ ":" port ]; reg-name or IP-literal. */
static int authority_split(struct lb_str a, struct lb_str *host, struct lb_str *port)
{
	size_t i = 0;
	if (a.n > 0 && a.p[0] == '[') {
		while (i < a.n && a.p[i] != ']') {
			unsigned char c = (unsigned char)a.p[i];
			if (i > 0 && !is_hex(c) && c != ':' && c != '.')
				return LB_EINVAL;
			i++;
		}
		if (i >= a.n)
			return LB_EINVAL;
		i++;
	} else {
		for (; i < a.n && a.p[i] != ':'; i++) {
			unsigned char c = (unsigned char)a.p[i];
			if (!(isalnum(c) || strchr("-._~!$&'()*+,;=%", c)))
				return LB_EINVAL;
		}
	}
	host->p = a.p;
	host->n = i;
	port->p = NULL;
	port->n = 0;
	if (i < a.n) {
		if (a.p[i] != ':')
			return LB_EINVAL;
		port->p = a.p + i + 1;
		port->n = a.n - i - 1;
		if (port->n > 5)
			return LB_EINVAL;
		for (size_t k = 0; k < port->n; k++)
			if (!is_digit((unsigned char)port->p[k]))
				return LB_EINVAL;
	}
	if (host->n > LB_HOST_MAX - 1)
		return LB_EINVAL;
	return 0;
}

/* Apply one field to the semantic state; returns 0 or a status (400, 417). */
/* the candidate named s (lower case, n bytes) when name is it, else LB_H_OTHER */
static int hdr_is(const char *name, const char *s, size_t n, int id) { return mem_ieq(name, s, n) ? id : LB_H_OTHER; }

int lb_header_id(const char *name, size_t n)
{
	/* no two of these share both length and first letter: one compare decides */
	int f = lower((unsigned char)(n ? name[0] : 0));
	switch (n) {
	case 2: return hdr_is(name, "te", 2, LB_H_TE);
	case 4: return hdr_is(name, "host", 4, LB_H_HOST);
	case 6: return f == 'e' ? hdr_is(name, "expect", 6, LB_H_EXPECT) : hdr_is(name, "cookie", 6, LB_H_COOKIE);
	case 7:
		return f == 'u' ? hdr_is(name, "upgrade", 7, LB_H_UPGRADE)
		       : f == 't' ? hdr_is(name, "trailer", 7, LB_H_TRAILER) : hdr_is(name, "referer", 7, LB_H_REFERER);
	case 10:
		return f == 'c' ? hdr_is(name, "connection", 10, LB_H_CONNECTION)
		       : f == 'k' ? hdr_is(name, "keep-alive", 10, LB_H_KEEP_ALIVE)
		                  : hdr_is(name, "user-agent", 10, LB_H_USER_AGENT);
	case 12: return hdr_is(name, "x-request-id", 12, LB_H_X_REQUEST_ID);
	case 14: return hdr_is(name, "content-length", 14, LB_H_CONTENT_LENGTH);
	case 15: return hdr_is(name, "x-forwarded-for", 15, LB_H_X_FORWARDED_FOR);
	case 16:
		return f == 'p' ? hdr_is(name, "proxy-connection", 16, LB_H_PROXY_CONNECTION)
		                : hdr_is(name, "x-forwarded-host", 16, LB_H_X_FORWARDED_HOST);
	case 17:
		return f == 't' ? hdr_is(name, "transfer-encoding", 17, LB_H_TRANSFER_ENCODING)
		                : hdr_is(name, "x-forwarded-proto", 17, LB_H_X_FORWARDED_PROTO);
	case 21: return hdr_is(name, "x-client-cert-subject", 21, LB_H_X_CLIENT_CERT_SUBJECT);
	case 25: return hdr_is(name, "strict-transport-security", 25, LB_H_STRICT_TRANSPORT_SECURITY);
	}
	return LB_H_OTHER;
}

static int sem_field(struct head_sem *s, const struct lb_header *h)
{
	struct lb_str v = h->value;
	switch (h->id) {
	case LB_H_HOST:
		s->hosts++;
		s->host_value = v;
		break;
	case LB_H_EXPECT:
		if (str_ieq(v.p, v.n, "100-continue"))
			s->expect_100 = 1;
		else
			s->expect_other = 1;
		break;
	case LB_H_UPGRADE:
		s->upgrade_seen = 1;
		s->upgrade = v;
		break;
	case LB_H_CONNECTION:
		sem_connection(s, v);
		break;
	case LB_H_CONTENT_LENGTH:
		return sem_content_length(s, v);
	case LB_H_TRANSFER_ENCODING:
		return sem_transfer_encoding(s, v);
	}
	return 0;
}

/* Read header fields from pos up to and including the empty line.
 * Returns the head length, LB_EAGAIN, or LB_EINVAL with *status and *err set. */
/* One field line at pos when it is plainly well formed: name, ':', value, CRLF. Returns the
 * offset of its CR, or -1 for anything else (parse_fields then looks at it with care). */
static long field_fast(const char *b, size_t len, size_t pos, struct lb_header *h)
{
	size_t c = pos;
	while (c < len && k_tchar[(unsigned char)b[c]])
		c++;
	if (c == pos || c >= len || b[c] != ':')
		return -1;
	size_t vs = c + 1, e;
	while (vs < len && (b[vs] == ' ' || b[vs] == '\t'))
		vs++;
	for (e = vs; e < len && is_vchar_ws((unsigned char)b[e]);)
		e++;
	if (e + 1 >= len || b[e] != '\r' || b[e + 1] != '\n')
		return -1;
	size_t ve = e;
	while (ve > vs && (b[ve - 1] == ' ' || b[ve - 1] == '\t'))
		ve--;
	h->name.p = b + pos;
	h->name.n = c - pos;
	h->value.p = b + vs;
	h->value.n = ve - vs;
	return (long)e;
}

static int parse_fields(const char *b, size_t len, size_t pos, struct lb_header *hs, size_t *nh,
                        struct head_sem *sem, int *status, const char **err)
{
	*nh = 0;
	for (;;) {
		if (pos + 1 < len && b[pos] == '\r' && b[pos + 1] == '\n')
			return (int)(pos + 2);
		if (*nh < LB_MAX_HEADERS) {
			long fe = field_fast(b, len, pos, &hs[*nh]);
			if (fe >= 0) {
				struct lb_header *h = &hs[(*nh)++];
				h->id = lb_header_id(h->name.p, h->name.n);
				int st = sem_field(sem, h);
				if (st) {
					*status = st;
					*err = "invalid framing header (Content-Length / Transfer-Encoding)";
					return LB_EINVAL;
				}
				pos = (size_t)fe + 2;
				continue;
			}
		}
		long eol = find_crlf(b, len, pos);
		if (eol == LB_EAGAIN)
			return LB_EAGAIN;
		if (eol < 0) {
			*status = 400, *err = "bare CR or LF in header";
			return LB_EINVAL;
		}
		size_t e = (size_t)eol;
		if (e == pos)
			return (int)(e + 2);
		if (b[pos] == ' ' || b[pos] == '\t') {
			*status = 400, *err = "obs-fold or whitespace before a field";
			return LB_EINVAL;
		}
		size_t c = pos;
		while (c < e && is_tchar((unsigned char)b[c]))
			c++;
		if (c == pos || c >= e || b[c] != ':') {
			*status = 400, *err = "invalid header field name";
			return LB_EINVAL;
		}
		size_t vs = c + 1, ve = e;
		while (vs < ve && (b[vs] == ' ' || b[vs] == '\t'))
			vs++;
		while (ve > vs && (b[ve - 1] == ' ' || b[ve - 1] == '\t'))
			ve--;
		for (size_t k = vs; k < ve; k++) {
			if (!is_vchar_ws((unsigned char)b[k])) {
				*status = 400, *err = "control character in header value";
				return LB_EINVAL;
			}
		}
		if (*nh >= LB_MAX_HEADERS) {
			*status = 431, *err = "too many header fields";
			return LB_EINVAL;
		}
		struct lb_header *h = &hs[(*nh)++];
		h->name.p = b + pos;
		h->name.n = c - pos;
		h->value.p = b + vs;
		h->value.n = ve - vs;
		h->id = lb_header_id(h->name.p, h->name.n);
		int st = sem_field(sem, h);
		if (st) {
			*status = st;
			*err = "invalid framing header (Content-Length / Transfer-Encoding)";
			return LB_EINVAL;
		}
		pos = e + 2;
	}
}

static int method_id(struct lb_str m)
{
	static const struct { const char *s; int id; } t[] = {
		{ "GET", LB_M_GET }, { "HEAD", LB_M_HEAD }, { "POST", LB_M_POST }, { "PUT", LB_M_PUT },
		{ "DELETE", LB_M_DELETE }, { "OPTIONS", LB_M_OPTIONS }, { "PATCH", LB_M_PATCH },
		{ "CONNECT", LB_M_CONNECT }, { "TRACE", LB_M_TRACE },
	};
	for (size_t i = 0; i < sizeof t / sizeof *t; i++)
		if (m.n == strlen(t[i].s) && memcmp(m.p, t[i].s, m.n) == 0)
			return t[i].id;
	return LB_M_OTHER;
}

static int req_fail(struct lb_req *r, int status, const char *err)
{
	r->status = status;
	r->error = err;
	return LB_EINVAL;
}

/* Split the request-target into path and query; absolute-form also yields the authority. */
static int parse_target(struct lb_req *r, struct lb_str *uri_auth)
{
	struct lb_str t = r->target;
	uri_auth->p = NULL;
	uri_auth->n = 0;
	if (memchr(t.p, '#', t.n))
		return req_fail(r, 400, "fragment in request-target");
	if (t.n == 1 && t.p[0] == '*') {
		if (r->method_id != LB_M_OPTIONS)
			return req_fail(r, 400, "asterisk-form only with OPTIONS");
		r->path = t;
		return 0;
	}
	size_t i = 0;
	if (t.p[0] != '/') {
		size_t skip;
		if (t.n > 7 && mem_ieq(t.p, "http://", 7))
			skip = 7;
		else if (t.n > 8 && mem_ieq(t.p, "https://", 8))
			skip = 8;
		else
			return req_fail(r, 400, "unsupported request-target form");
		size_t a = skip;
		while (a < t.n && t.p[a] != '/' && t.p[a] != '?')
			a++;
		uri_auth->p = t.p + skip;
		uri_auth->n = a - skip;
		if (uri_auth->n == 0 || memchr(uri_auth->p, '@', uri_auth->n))
			return req_fail(r, 400, "bad authority in absolute-form");
		r->flags |= LB_HF_ABSOLUTE;
		i = a;
	}
	size_t q = i;
	while (q < t.n && t.p[q] != '?')
		q++;
	r->path.p = t.p + i;
	r->path.n = q - i;
	if (q < t.n) {
		r->query.p = t.p + q + 1;
		r->query.n = t.n - q - 1;
	}
	return 0;
}

/* method SP request-target SP HTTP-version CRLF; returns the offset after the line */
static int parse_request_line(const char *b, size_t len, size_t pos, struct lb_req *r)
{
	long eol = find_crlf(b, len, pos);
	if (eol == LB_EAGAIN)
		return LB_EAGAIN;
	if (eol < 0)
		return req_fail(r, 400, "bare CR or LF in request line");
	size_t e = (size_t)eol, i = pos;
	while (i < e && is_tchar((unsigned char)b[i]))
		i++;
	if (i == pos || i >= e || b[i] != ' ')
		return req_fail(r, 400, "invalid method");
	r->method.p = b + pos;
	r->method.n = i - pos;
	r->method_id = method_id(r->method);
	size_t ts = ++i;
	while (i < e && (unsigned char)b[i] > 0x20 && (unsigned char)b[i] < 0x7f)
		i++;
	if (i == ts || i >= e || b[i] != ' ')
		return req_fail(r, 400, "invalid request-target");
	r->target.p = b + ts;
	r->target.n = i - ts;
	const char *v = b + i + 1;
	size_t vn = e - i - 1;
	if (vn != 8 || memcmp(v, "HTTP/", 5) != 0 || !is_digit((unsigned char)v[5]) || v[6] != '.' ||
	    !is_digit((unsigned char)v[7]))
		return req_fail(r, 400, "invalid HTTP version");
	if (v[5] != '1' || (v[7] != '0' && v[7] != '1'))
		return req_fail(r, 505, "HTTP version not supported");
	r->minor = v[7] - '0';
	return (int)(e + 2);
}

static int req_semantics(struct lb_req *r, struct head_sem *s, struct lb_str uri_auth)
{
	struct lb_str hh, hp;
	if (s->hosts > 1)
		return req_fail(r, 400, "more than one Host header");
	if (r->minor == 1 && s->hosts == 0)
		return req_fail(r, 400, "missing Host header");
	if (s->hosts == 1) {
		if (authority_split(s->host_value, &hh, &hp) != 0)
			return req_fail(r, 400, "invalid Host header");
		r->authority = s->host_value;
		r->host = hh;
	}
	if (uri_auth.p) {
		struct lb_str uh, up;
		if (authority_split(uri_auth, &uh, &up) != 0)
			return req_fail(r, 400, "invalid authority in absolute-form");
		if (s->hosts == 1 && (uh.n != hh.n || !mem_ieq(uh.p, hh.p, uh.n) ||
		                      (up.n && hp.n && (up.n != hp.n || memcmp(up.p, hp.p, up.n)))))
			return req_fail(r, 400, "absolute-form host differs from Host header");
		r->authority = uri_auth;
		r->host = uh;
	}
	if ((s->flags & LB_HF_TE) && (s->flags & LB_HF_HAS_CL))
		return req_fail(r, 400, "both Content-Length and Transfer-Encoding");
	if (s->flags & LB_HF_TE) {
		if (r->minor == 0)
			return req_fail(r, 400, "Transfer-Encoding in an HTTP/1.0 request");
		if (!s->te_last_chunked || s->te_chunked_count != 1)
			return req_fail(r, 400, "Transfer-Encoding must end in a single chunked");
		if (s->te_bad_coding)
			return req_fail(r, 501, "unknown transfer coding");
		s->flags |= LB_HF_CHUNKED;
	}
	if (s->expect_other)
		return req_fail(r, 417, "unsupported Expect value");
	if (r->method_id == LB_M_CONNECT)
		return req_fail(r, 501, "CONNECT is not supported");
	r->content_length = s->cl;
	r->flags |= s->flags;
	if (s->conn_close || (r->minor == 0 && !s->conn_keepalive))
		r->flags |= LB_HF_CLOSE;
	if (s->conn_keepalive)
		r->flags |= LB_HF_KEEPALIVE;
	if (s->conn_upgrade && s->upgrade_seen && r->minor == 1 && s->upgrade.n > 0) {
		r->flags |= LB_HF_UPGRADE;
		r->upgrade = s->upgrade;
	}
	if (s->expect_100 && r->minor == 1)
		r->flags |= LB_HF_EXPECT_100;
	return 0;
}

int lb_parse_request(const char *buf, size_t len, struct lb_req *r)
{
	struct head_sem s;
	struct lb_str uri_auth;
	memset(r, 0, offsetof(struct lb_req, headers));
	r->nheaders = 0;
	r->content_length = -1;
	memset(&s, 0, sizeof s);
	s.cl = -1;
	size_t pos = 0;
	while (pos + 1 < len && buf[pos] == '\r' && buf[pos + 1] == '\n')
		pos += 2; /* RFC 9112 2.2: ignore empty lines before the request-line */
	if (pos >= len || (pos + 1 == len && buf[pos] == '\r'))
		return LB_EAGAIN;
	int rc = parse_request_line(buf, len, pos, r);
	if (rc < 0)
		return rc;
	if (parse_target(r, &uri_auth) != 0)
		return LB_EINVAL;
	int st = 0;
	const char *err = NULL;
	rc = parse_fields(buf, len, (size_t)rc, r->headers, &r->nheaders, &s, &st, &err);
	if (rc == LB_EINVAL)
		return req_fail(r, st, err);
	if (rc < 0)
		return rc;
	if (req_semantics(r, &s, uri_auth) != 0)
		return LB_EINVAL;
	return rc;
}

int lb_parse_response(const char *buf, size_t len, struct lb_resp *r)
{
	struct head_sem s;
	memset(r, 0, offsetof(struct lb_resp, headers));
	r->nheaders = 0;
	r->content_length = -1;
	memset(&s, 0, sizeof s);
	s.cl = -1;
	long eol = find_crlf(buf, len, 0);
	if (eol == LB_EAGAIN)
		return LB_EAGAIN;
	size_t e = (size_t)eol;
	if (eol < 0 || e < 12 || memcmp(buf, "HTTP/1.", 7) != 0 || (buf[7] != '0' && buf[7] != '1') ||
	    buf[8] != ' ' || !is_digit((unsigned char)buf[9]) || !is_digit((unsigned char)buf[10]) ||
	    !is_digit((unsigned char)buf[11]) || buf[9] == '0' || (e > 12 && buf[12] != ' ')) {
		r->error = "invalid status line";
		return LB_EINVAL;
	}
	r->minor = buf[7] - '0';
	r->status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
	size_t rs = e > 12 ? 13 : 12;
	for (size_t k = rs; k < e; k++) {
		if (!is_vchar_ws((unsigned char)buf[k])) {
			r->error = "control character in reason phrase";
			return LB_EINVAL;
		}
	}
	r->reason.p = buf + rs;
	r->reason.n = e - rs;
	int st = 0;
	const char *err = NULL;
	int rc = parse_fields(buf, len, e + 2, r->headers, &r->nheaders, &s, &st, &err);
	if (rc == LB_EINVAL)
		r->error = err;
	if (rc < 0)
		return rc;
	if ((s.flags & LB_HF_TE) && (s.flags & LB_HF_HAS_CL)) {
		r->error = "both Content-Length and Transfer-Encoding";
		return LB_EINVAL;
	}
	if ((s.flags & LB_HF_TE) && (!s.te_last_chunked || s.te_chunked_count != 1)) {
		r->error = "Transfer-Encoding must end in a single chunked";
		return LB_EINVAL;
	}
	r->flags = s.flags;
	if (s.flags & LB_HF_TE)
		r->flags |= LB_HF_CHUNKED;
	r->content_length = s.cl;
	if (s.conn_close || (r->minor == 0 && !s.conn_keepalive))
		r->flags |= LB_HF_CLOSE;
	if (s.conn_keepalive)
		r->flags |= LB_HF_KEEPALIVE;
	if (s.conn_upgrade && s.upgrade_seen)
		r->flags |= LB_HF_UPGRADE;
	return rc;
}

const struct lb_header *lb_header_find(const struct lb_header *h, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (str_ieq(h[i].name.p, h[i].name.n, name))
			return &h[i];
	return NULL;
}

int lb_resp_has_body(int req_method_id, int status)
{
	if (req_method_id == LB_M_HEAD || status < 200 || status == 204 || status == 304)
		return 0;
	return 1;
}

static int is_unreserved(unsigned char c)
{
	return isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

/* RFC 3986 5.2.4 in place over a decoded path that starts with '/'. */
static size_t remove_dot_segments(char *p, size_t n)
{
	size_t r = 0, w = 0;
	while (r < n) {
		size_t e = r + 1;
		while (e < n && p[e] != '/')
			e++;
		size_t sl = e - r - 1;
		const char *seg = p + r + 1;
		if (sl == 1 && seg[0] == '.') {
			if (e == n)
				p[w++] = '/';
		} else if (sl == 2 && seg[0] == '.' && seg[1] == '.') {
			while (w > 0 && p[w - 1] != '/')
				w--;
			if (w > 0)
				w--; /* drop the '/' before the popped segment */
			if (e == n)
				p[w++] = '/';
		} else {
			memmove(p + w, p + r, e - r);
			w += e - r;
		}
		r = e;
	}
	if (w == 0)
		p[w++] = '/';
	return w;
}

long lb_normalize_path(const char *in, size_t n, char *out)
{
	static const char hexd[] = "0123456789ABCDEF";
	size_t w = 0;
	if (n == 0 || in[0] != '/')
		return LB_EINVAL;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)in[i];
		if (c == 0)
			return LB_EINVAL;
		if (c != '%') {
			out[w++] = (char)c;
			continue;
		}
		if (i + 2 >= n)
			return LB_EINVAL;
		if (!is_hex((unsigned char)in[i + 1]) || !is_hex((unsigned char)in[i + 2]))
			return LB_EINVAL;
		unsigned v = (unsigned)(hex_val((unsigned char)in[i + 1]) * 16 + hex_val((unsigned char)in[i + 2]));
		if (v == 0)
			return LB_EINVAL;
		if (is_unreserved((unsigned char)v)) {
			out[w++] = (char)v;
		} else {
			out[w++] = '%';
			out[w++] = hexd[v >> 4];
			out[w++] = hexd[v & 15];
		}
		i += 2;
	}
	return (long)remove_dot_segments(out, w);
}

int lb_request_id_ok(const char *s, size_t n)
{
	if (n == 0 || n > LB_REQUEST_ID_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!(isalnum(c) || c == '.' || c == '_' || c == ':' || c == '-'))
			return 0;
	}
	return 1;
}

/* Chunked framing states */
enum {
	CK_SIZE0, CK_SIZE, CK_EXT_NAME0, CK_EXT_NAME, CK_EXT_VAL0, CK_EXT_VAL, CK_EXT_QS, CK_EXT_QP, CK_EXT_QEND,
	CK_SIZE_LF, CK_DATA, CK_DATA_CR, CK_DATA_LF,
	CK_TRAILER0, CK_TRAILER_NAME, CK_TRAILER, CK_TRAILER_LF, CK_END_LF, CK_DONE,
};

/* One byte of a chunk extension, strictly as RFC 9112 7.1.1 writes it without optional
 * whitespace: *( ";" token [ "=" ( token / quoted-string ) ] ), no obs-text. Anything a
 * lenient server could read differently (a quote running past CRLF, an empty name or value)
 * is refused: the raw bytes are forwarded, so lb and the server must agree on them.
 * Returns the next state, or -1. */
static int chunk_ext_byte(int state, unsigned char c)
{
	switch (state) {
	case CK_EXT_NAME0:
		return is_tchar(c) ? CK_EXT_NAME : -1;
	case CK_EXT_NAME:
	case CK_EXT_VAL:
	case CK_EXT_QEND:
		if (c == ';')
			return CK_EXT_NAME0;
		if (c == '\r')
			return CK_SIZE_LF;
		if (state == CK_EXT_NAME && c == '=')
			return CK_EXT_VAL0;
		return state != CK_EXT_QEND && is_tchar(c) ? state : -1;
	case CK_EXT_VAL0:
		return c == '"' ? CK_EXT_QS : is_tchar(c) ? CK_EXT_VAL : -1;
	case CK_EXT_QS:
		if (c == '"')
			return CK_EXT_QEND;
		if (c == '\\')
			return CK_EXT_QP;
		return c == '\t' || (c >= 0x20 && c < 0x7f) ? CK_EXT_QS : -1;
	case CK_EXT_QP:
		return c == '\t' || (c >= 0x20 && c < 0x7f) ? CK_EXT_QS : -1;
	}
	return -1;
}

void lb_chunk_init(struct lb_chunk *st) { memset(st, 0, sizeof *st); }

static int chunk_line_byte(struct lb_chunk *st)
{
	return ++st->line <= LB_CHUNK_LINE_MAX;
}

int lb_chunk_scan(struct lb_chunk *st, const char *buf, size_t len, size_t *used)
{
	size_t i = 0;
	while (i < len) {
		unsigned char c = (unsigned char)buf[i];
		switch (st->state) {
		case CK_SIZE0:
		case CK_SIZE:
			if (is_hex(c)) {
				if (st->digits >= 16 || st->remain > (UINT64_C(1) << 59))
					goto bad;
				st->remain = st->remain * 16 + (uint64_t)hex_val(c);
				st->digits++;
				st->state = CK_SIZE;
			} else if (st->state == CK_SIZE && c == ';') {
				st->state = CK_EXT_NAME0;
			} else if (st->state == CK_SIZE && c == '\r') {
				st->state = CK_SIZE_LF;
			} else {
				goto bad;
			}
			if (!chunk_line_byte(st))
				goto bad;
			break;
		case CK_EXT_NAME0:
		case CK_EXT_NAME:
		case CK_EXT_VAL0:
		case CK_EXT_VAL:
		case CK_EXT_QS:
		case CK_EXT_QP:
		case CK_EXT_QEND:
			if ((st->state = chunk_ext_byte(st->state, c)) < 0 || !chunk_line_byte(st))
				goto bad;
			break;
		case CK_SIZE_LF:
			if (c != '\n')
				goto bad;
			st->line = 0;
			st->digits = 0;
			if (st->remain > (uint64_t)INT64_MAX - st->body)
				goto bad;
			st->state = st->remain ? CK_DATA : CK_TRAILER0;
			break;
		case CK_DATA: {
			size_t take = (size_t)LB_MIN((uint64_t)(len - i), st->remain);
			st->remain -= take;
			st->body += take;
			i += take;
			if (st->remain == 0)
				st->state = CK_DATA_CR;
			continue;
		}
		case CK_DATA_CR:
			if (c != '\r')
				goto bad;
			st->state = CK_DATA_LF;
			break;
		case CK_DATA_LF:
			if (c != '\n')
				goto bad;
			st->state = CK_SIZE0;
			break;
		case CK_TRAILER0:
			if (c == '\r') {
				st->state = CK_END_LF;
				break;
			}
			if (!is_tchar(c))
				goto bad;
			st->state = CK_TRAILER_NAME;
			st->line = 1;
			break;
		case CK_TRAILER_NAME: /* a trailer is a field: token ":" value, nothing else */
			if (c == ':')
				st->state = CK_TRAILER;
			else if (!is_tchar(c))
				goto bad;
			if (!chunk_line_byte(st))
				goto bad;
			break;
		case CK_TRAILER:
			if (c == '\r')
				st->state = CK_TRAILER_LF;
			else if (!is_vchar_ws(c) || !chunk_line_byte(st))
				goto bad;
			break;
		case CK_TRAILER_LF:
			if (c != '\n')
				goto bad;
			st->state = CK_TRAILER0;
			st->line = 0;
			break;
		case CK_END_LF:
			if (c != '\n')
				goto bad;
			st->state = CK_DONE;
			*used = i + 1;
			return LB_CHUNK_DONE;
		default:
			goto bad;
		}
		if (st->state >= CK_TRAILER0 && ++st->trailers > LB_TRAILERS_MAX)
			goto bad;
		i++;
	}
	*used = len;
	return LB_CHUNK_MORE;
bad:
	*used = i;
	st->state = -1;
	return LB_CHUNK_ERROR;
}

int lb_parse_duration(const char *s, size_t n, uint64_t *ms)
{
	size_t d = 0;
	while (d < n && is_digit((unsigned char)s[d]))
		d++;
	if (d == 0 || d == n)
		return LB_EINVAL;
	uint64_t v, mult;
	const char *u = s + d;
	size_t un = n - d;
	if (un == 2 && memcmp(u, "ms", 2) == 0)
		mult = 1;
	else if (un == 1 && *u == 's')
		mult = 1000;
	else if (un == 1 && *u == 'm')
		mult = 60000;
	else if (un == 1 && *u == 'h')
		mult = 3600000;
	else if (un == 1 && *u == 'd')
		mult = 86400000;
	else
		return LB_EINVAL;
	if (parse_uint64(s, d, UINT64_MAX / mult, &v) != 0)
		return LB_ERANGE;
	*ms = v * mult;
	return 0;
}

int lb_parse_size(const char *s, size_t n, uint64_t *bytes)
{
	uint64_t mult = 1, v;
	if (n == 0)
		return LB_EINVAL;
	switch (lower((unsigned char)s[n - 1])) {
	case 'k': mult = 1024; n--; break;
	case 'm': mult = 1024 * 1024; n--; break;
	case 'g': mult = 1024 * 1024 * 1024; n--; break;
	default: break;
	}
	int rc = parse_uint64(s, n, UINT64_MAX / mult, &v);
	if (rc)
		return rc;
	*bytes = v * mult;
	return 0;
}

int lb_parse_bool(const char *s, size_t n, int *on)
{
	if (n == 2 && memcmp(s, "on", 2) == 0)
		*on = 1;
	else if (n == 3 && memcmp(s, "off", 3) == 0)
		*on = 0;
	else
		return LB_EINVAL;
	return 0;
}

int lb_parse_hostport(const char *s, size_t n, struct lb_hostport *out)
{
	memset(out, 0, sizeof *out);
	size_t colon;
	const char *h = s;
	size_t hn;
	if (n > 0 && s[0] == '[') {
		const char *rb = memchr(s, ']', n);
		if (!rb || rb + 1 >= s + n || rb[1] != ':')
			return LB_EINVAL;
		h = s + 1;
		hn = (size_t)(rb - s) - 1;
		colon = (size_t)(rb - s) + 1;
		out->v6 = 1;
		struct in6_addr a6;
		char tmp[64];
		if (hn == 0 || hn >= sizeof tmp)
			return LB_EINVAL;
		memcpy(tmp, h, hn);
		tmp[hn] = 0;
		if (inet_pton(AF_INET6, tmp, &a6) != 1)
			return LB_EINVAL;
	} else {
		const char *c = NULL;
		for (size_t i = 0; i < n; i++)
			if (s[i] == ':')
				c = s + i;
		if (!c)
			return LB_EINVAL;
		colon = (size_t)(c - s);
		hn = colon;
		if (hn == 1 && s[0] == '*') {
			out->wildcard = 1;
			hn = 0;
		} else {
			if (hn == 0)
				return LB_EINVAL;
			for (size_t i = 0; i < hn; i++) {
				unsigned char ch = (unsigned char)s[i];
				if (!(isalnum(ch) || ch == '-' || ch == '.' || ch == '_'))
					return LB_EINVAL;
			}
		}
	}
	if (hn >= LB_HOST_MAX)
		return LB_EINVAL;
	uint64_t port;
	if (parse_uint64(s + colon + 1, n - colon - 1, 65535, &port) != 0 || port == 0)
		return LB_EINVAL;
	memcpy(out->host, h, hn);
	out->host[hn] = 0;
	out->port = (uint16_t)port;
	return 0;
}

static int server_fail(struct lb_server_spec *o, const char *e)
{
	o->error = e;
	return LB_EINVAL;
}

static int server_option(struct lb_server_spec *o, struct lb_str w)
{
	uint64_t v;
	if (str_ieq(w.p, w.n, "backup"))
		o->backup = 1;
	else if (str_ieq(w.p, w.n, "disabled"))
		o->disabled = 1;
	else if (str_ieq(w.p, w.n, "tls"))
		o->tls = 1;
	else if (w.n > 7 && memcmp(w.p, "weight=", 7) == 0) {
		if (parse_uint64(w.p + 7, w.n - 7, 1000, &v) != 0 || v == 0)
			return server_fail(o, "weight must be 1..1000");
		o->weight = (unsigned)v;
	} else if (w.n > 9 && memcmp(w.p, "max_conn=", 9) == 0) {
		if (parse_uint64(w.p + 9, w.n - 9, 1000000, &v) != 0)
			return server_fail(o, "max_conn must be 0..1000000");
		o->max_conn = (unsigned)v;
	} else
		return server_fail(o, "unknown server option");
	return 0;
}

static int next_word(const char **p, const char *end, struct lb_str *w)
{
	const char *s = *p;
	while (s < end && (*s == ' ' || *s == '\t'))
		s++;
	if (s >= end)
		return 0;
	const char *e = s;
	while (e < end && *e != ' ' && *e != '\t')
		e++;
	w->p = s;
	w->n = (size_t)(e - s);
	*p = e;
	return 1;
}

static int name_ok(struct lb_str w)
{
	if (w.n == 0 || w.n >= LB_NAME_MAX)
		return 0;
	for (size_t i = 0; i < w.n; i++) {
		unsigned char c = (unsigned char)w.p[i];
		if (!(isalnum(c) || c == '-' || c == '_' || c == '.'))
			return 0;
	}
	return 1;
}

int lb_parse_server(const char *s, size_t n, struct lb_server_spec *o)
{
	const char *p = s, *end = s + n;
	struct lb_str w;
	memset(o, 0, sizeof *o);
	o->weight = 1;
	if (!next_word(&p, end, &w) || !name_ok(w))
		return server_fail(o, "server needs a name of [A-Za-z0-9._-], at most 63 characters");
	memcpy(o->name, w.p, w.n);
	o->name[w.n] = 0;
	if (!next_word(&p, end, &w) || lb_parse_hostport(w.p, w.n, &o->addr) != 0)
		return server_fail(o, "server needs an address HOST:PORT");
	if (o->addr.wildcard)
		return server_fail(o, "a server address cannot be *");
	while (next_word(&p, end, &w))
		if (server_option(o, w) != 0)
			return LB_EINVAL;
	return 0;
}

int lb_parse_cidr(const char *s, size_t n, struct lb_cidr *out)
{
	char tmp[64];
	const char *slash = memchr(s, '/', n);
	size_t an = slash ? (size_t)(slash - s) : n;
	memset(out, 0, sizeof *out);
	if (an == 0 || an >= sizeof tmp)
		return LB_EINVAL;
	memcpy(tmp, s, an);
	tmp[an] = 0;
	if (inet_pton(AF_INET, tmp, out->net.a) == 1)
		out->bits = 32;
	else if (inet_pton(AF_INET6, tmp, out->net.a) == 1)
		out->net.v6 = 1, out->bits = 128;
	else
		return LB_EINVAL;
	if (slash) {
		uint64_t b;
		if (parse_uint64(slash + 1, n - an - 1, out->bits, &b) != 0)
			return LB_EINVAL;
		out->bits = (unsigned)b;
	}
	for (unsigned i = out->bits; i < (out->net.v6 ? 128u : 32u); i++) /* host bits must be 0 */
		if (out->net.a[i / 8] & (0x80 >> (i % 8)))
			return LB_EINVAL;
	return 0;
}

int lb_cidr_match(const struct lb_cidr *c, const struct lb_ip *ip)
{
	if (c->net.v6 != ip->v6)
		return 0;
	unsigned full = c->bits / 8, rest = c->bits % 8;
	if (memcmp(c->net.a, ip->a, full) != 0)
		return 0;
	return rest == 0 || ((c->net.a[full] ^ ip->a[full]) & (0xff00 >> rest) & 0xff) == 0;
}

int lb_ip_from_sockaddr(const struct sockaddr_storage *sa, struct lb_ip *out)
{
	memset(out, 0, sizeof *out);
	if (sa->ss_family == AF_INET) {
		memcpy(out->a, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		return 0;
	}
	if (sa->ss_family == AF_INET6) {
		const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		if (IN6_IS_ADDR_V4MAPPED(a6)) {
			memcpy(out->a, a6->s6_addr + 12, 4);
		} else {
			memcpy(out->a, a6->s6_addr, 16);
			out->v6 = 1;
		}
		return 0;
	}
	return LB_EINVAL;
}

int lb_bucket_take(struct lb_bucket *b, uint64_t now_ms, uint64_t rate, uint64_t period_ms, uint64_t burst,
                   uint64_t *retry_ms)
{
	uint64_t cap = burst * period_ms; /* rate, burst <= 1e9 and period <= 1 h: no overflow */
	if (now_ms > b->last_ms) {
		uint64_t dt = now_ms - b->last_ms;
		b->credit = dt >= cap / rate + 1 ? cap : LB_MIN(cap, b->credit + dt * rate);
		b->last_ms = now_ms;
	}
	if (b->credit >= period_ms) {
		b->credit -= period_ms;
		return 1;
	}
	*retry_ms = (period_ms - b->credit + rate - 1) / rate;
	return 0;
}

int lb_parse_rate_limit(const char *s, size_t n, struct lb_rate_limit *o, const char **err)
{
	const char *p = s, *end = s + n;
	struct lb_str w;
	uint64_t v;
	memset(o, 0, sizeof *o);
	*err = "expected N/second|minute|hour [burst=N] [by=ip|global|header:NAME]";
	if (!next_word(&p, end, &w))
		return LB_EINVAL;
	const char *sl = memchr(w.p, '/', w.n);
	if (!sl || parse_uint64(w.p, (size_t)(sl - w.p), 1000000000, &v) != 0 || v == 0)
		return LB_EINVAL;
	o->rate = v;
	struct lb_str unit = { sl + 1, (size_t)(w.p + w.n - sl - 1) };
	if (str_ieq(unit.p, unit.n, "second"))
		o->period_ms = 1000;
	else if (str_ieq(unit.p, unit.n, "minute"))
		o->period_ms = 60000;
	else if (str_ieq(unit.p, unit.n, "hour"))
		o->period_ms = 3600000;
	else
		return LB_EINVAL;
	o->burst = o->rate;
	while (next_word(&p, end, &w)) {
		if (w.n > 6 && !memcmp(w.p, "burst=", 6)) {
			if (parse_uint64(w.p + 6, w.n - 6, 1000000000, &v) != 0 || v == 0) {
				*err = "burst must be 1..1000000000";
				return LB_EINVAL;
			}
			o->burst = v;
		} else if (w.n == 5 && !memcmp(w.p, "by=ip", 5)) {
			o->by = LB_RL_IP;
		} else if (w.n == 9 && !memcmp(w.p, "by=global", 9)) {
			o->by = LB_RL_GLOBAL;
		} else if (w.n > 10 && !memcmp(w.p, "by=header:", 10) && w.n - 10 < LB_NAME_MAX &&
		           token_ok((struct lb_str){ w.p + 10, w.n - 10 })) {
			o->by = LB_RL_HEADER;
			memcpy(o->header, w.p + 10, w.n - 10);
			o->header[w.n - 10] = 0;
		} else {
			return LB_EINVAL;
		}
	}
	return 0;
}

/* -------------------------------------------------------------------- PROXY protocol
 * v1 (text) and v2 (binary) headers as haproxy.org/download/2.9/doc/proxy-protocol.txt
 * defines them. Only addresses are taken; v2 TLVs are checked for structure and skipped. */

static const char proxy_v2_sig[12] = { '\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n' };

static int proxy_fail(struct lb_proxy *o, const char *why)
{
	o->error = why;
	return LB_EINVAL;
}

/* a v1 port: decimal 0..65535 without leading zeros */
static int proxy_v1_port(struct lb_str w, uint16_t *port)
{
	uint64_t v;
	if (w.n > 1 && w.p[0] == '0')
		return LB_EINVAL;
	if (parse_uint64(w.p, w.n, 65535, &v) != 0)
		return LB_EINVAL;
	*port = (uint16_t)v;
	return 0;
}

/* policies see one form of an IPv4 address: ::ffff:a.b.c.d becomes a.b.c.d */
static void ip_unmap(struct lb_ip *ip)
{
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	if (ip->v6 && !memcmp(ip->a, mapped, sizeof mapped)) { /* IN6_IS_ADDR_V4MAPPED without its alignment */
		memmove(ip->a, ip->a + 12, 4);
		memset(ip->a + 4, 0, 12);
		ip->v6 = 0;
	}
}

/* an address as text: fam AF_INET, AF_INET6, or AF_UNSPEC for either */
static int ip_parse(const char *s, size_t n, int fam, struct lb_ip *ip)
{
	char tmp[INET6_ADDRSTRLEN];
	if (n == 0 || n >= sizeof tmp)
		return LB_EINVAL;
	memcpy(tmp, s, n);
	tmp[n] = 0;
	memset(ip, 0, sizeof *ip);
	if (fam != AF_INET6 && inet_pton(AF_INET, tmp, ip->a) == 1)
		return 0;
	if (fam == AF_INET || inet_pton(AF_INET6, tmp, ip->a) != 1)
		return LB_EINVAL;
	ip->v6 = 1;
	ip_unmap(ip);
	return 0;
}

static int proxy_v1_addr(struct lb_str w, int v6, struct lb_ip *ip)
{
	return ip_parse(w.p, w.n, v6 ? AF_INET6 : AF_INET, ip);
}

/* the next field of a v1 line, ended by exactly one space (or by the line end for the last) */
static int proxy_v1_field(const char **p, const char *end, int last, struct lb_str *w)
{
	const char *q = *p;
	while (q < end && *q != ' ')
		q++;
	if (q == *p || (last ? q != end : q == end))
		return LB_EINVAL;
	*w = (struct lb_str){ *p, (size_t)(q - *p) };
	*p = q + (q < end);
	return 0;
}

static int proxy_v1(const char *buf, size_t len, struct lb_proxy *o)
{
	size_t lim = LB_MIN(len, (size_t)LB_PROXY_V1_MAX);
	const char *nl = memchr(buf, '\n', lim);
	if (!nl)
		return len >= LB_PROXY_V1_MAX ? proxy_fail(o, "PROXY v1 line longer than 107 bytes") : LB_EAGAIN;
	if (nl == buf || nl[-1] != '\r')
		return proxy_fail(o, "PROXY v1 line not ended by CRLF");
	const char *p = buf + 6, *end = nl - 1;
	struct lb_str w[5];
	o->version = 1;
	if (end - p >= 7 && !memcmp(p, "UNKNOWN", 7) && (end - p == 7 || p[7] == ' ')) {
		o->local = 1;
		return (int)(nl + 1 - buf);
	}
	int v6;
	if (end - p > 5 && !memcmp(p, "TCP4 ", 5))
		v6 = 0;
	else if (end - p > 5 && !memcmp(p, "TCP6 ", 5))
		v6 = 1;
	else
		return proxy_fail(o, "PROXY v1 protocol is not TCP4, TCP6 or UNKNOWN");
	p += 5;
	for (int i = 0; i < 4; i++)
		if (proxy_v1_field(&p, end, i == 3, &w[i]) != 0)
			return proxy_fail(o, "PROXY v1 line does not have 4 single-space separated fields");
	if (proxy_v1_addr(w[0], v6, &o->src) || proxy_v1_addr(w[1], v6, &o->dst))
		return proxy_fail(o, "PROXY v1 address invalid for its protocol");
	if (proxy_v1_port(w[2], &o->sport) || proxy_v1_port(w[3], &o->dport))
		return proxy_fail(o, "PROXY v1 port invalid");
	return (int)(nl + 1 - buf);
}

static int proxy_v2(const char *buf, size_t len, struct lb_proxy *o)
{
	const unsigned char *u = (const unsigned char *)buf;
	if (len < 16)
		return LB_EAGAIN;
	size_t body = (size_t)u[14] << 8 | u[15], total = 16 + body;
	o->version = 2;
	if ((u[12] >> 4) != 2)
		return proxy_fail(o, "PROXY v2 version nibble is not 2");
	if ((u[12] & 15) > 1)
		return proxy_fail(o, "PROXY v2 command is neither LOCAL nor PROXY");
	if (total > LB_PROXY_V2_MAX)
		return proxy_fail(o, "PROXY v2 header longer than lb accepts");
	if (len < total)
		return LB_EAGAIN;
	size_t alen;
	switch (u[13]) {
	case 0x00: alen = 0; break;            /* UNSPEC */
	case 0x11: alen = 12; break;           /* TCP over IPv4 */
	case 0x21: alen = 36; break;           /* TCP over IPv6 */
	case 0x31: alen = 216; break;          /* stream over a UNIX socket: no address to use */
	default: return proxy_fail(o, "PROXY v2 family is not TCP4, TCP6, UNIX stream or UNSPEC");
	}
	if (body < alen)
		return proxy_fail(o, "PROXY v2 length shorter than its addresses");
	for (size_t t = 16 + alen; t < total;) { /* TLVs: type, 16-bit length, value */
		if (total - t < 3 || total - t - 3 < ((size_t)u[t + 1] << 8 | u[t + 2]))
			return proxy_fail(o, "PROXY v2 TLV overruns the header");
		t += 3 + ((size_t)u[t + 1] << 8 | u[t + 2]);
	}
	if ((u[12] & 15) == 0 || u[13] == 0x00 || u[13] == 0x31) {
		o->local = 1;
		return (int)total;
	}
	size_t al = u[13] == 0x11 ? 4 : 16;
	o->src.v6 = o->dst.v6 = al == 16;
	memcpy(o->src.a, u + 16, al);
	memcpy(o->dst.a, u + 16 + al, al);
	o->sport = (uint16_t)(u[16 + 2 * al] << 8 | u[17 + 2 * al]);
	o->dport = (uint16_t)(u[18 + 2 * al] << 8 | u[19 + 2 * al]);
	ip_unmap(&o->src);
	ip_unmap(&o->dst);
	return (int)total;
}

int lb_parse_proxy(const char *buf, size_t len, int versions, struct lb_proxy *o)
{
	memset(o, 0, sizeof *o);
	if (len == 0)
		return LB_EAGAIN;
	size_t k = LB_MIN(len, sizeof proxy_v2_sig);
	if ((versions & LB_PROXY_V2) && !memcmp(buf, proxy_v2_sig, k))
		return k < sizeof proxy_v2_sig ? LB_EAGAIN : proxy_v2(buf, len, o);
	k = LB_MIN(len, (size_t)6);
	if ((versions & LB_PROXY_V1) && !memcmp(buf, "PROXY ", k))
		return k < 6 ? LB_EAGAIN : proxy_v1(buf, len, o);
	return proxy_fail(o, versions == LB_PROXY_V2 ? "no PROXY v2 header"
	                    : versions == LB_PROXY_V1 ? "no PROXY v1 header" : "no PROXY header");
}

int lb_ip_format(const struct lb_ip *ip, char *out, size_t cap)
{
	if (!ip->v6 && cap >= INET_ADDRSTRLEN) { /* every request's X-Forwarded-For: no inet_ntop */
		char *o = out;
		for (int i = 0; i < 4; i++) {
			unsigned v = ip->a[i];
			if (v >= 100)
				*o++ = (char)('0' + v / 100);
			if (v >= 10)
				*o++ = (char)('0' + v / 10 % 10);
			*o++ = (char)('0' + v % 10);
			*o++ = i < 3 ? '.' : '\0';
		}
		return 0;
	}
	return inet_ntop(ip->v6 ? AF_INET6 : AF_INET, ip->a, out, (socklen_t)cap) ? 0 : LB_ERANGE;
}

/* An address as text for a log line or a header: a connection keeps its addresses binary
 * (46 bytes each as text) and formats them when asked. Four buffers, so that one message
 * may name up to four addresses. */
static const char *ip_text(const struct lb_ip *ip)
{
	static char b[4][INET6_ADDRSTRLEN];
	static unsigned k;
	char *o = b[k++ % 4];
	if (lb_ip_format(ip, o, INET6_ADDRSTRLEN) != 0)
		snprintf(o, INET6_ADDRSTRLEN, "unknown");
	return o;
}

/* one X-Forwarded-For element: an address, maybe [v6]:port or v4:port, with spaces around */
static int xff_hop(const char *s, size_t n, struct lb_ip *ip)
{
	while (n && (*s == ' ' || *s == '\t'))
		s++, n--;
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	const char *colon = memchr(s, ':', n);
	if (n && *s == '[') {
		const char *rb = memchr(s, ']', n);
		if (!rb)
			return LB_EINVAL;
		s++, n = (size_t)(rb - s);
	} else if (colon && !memchr(colon + 1, ':', n - (size_t)(colon - s) - 1)) {
		n = (size_t)(colon - s); /* v4:port */
	}
	return ip_parse(s, n, AF_UNSPEC, ip);
}

/* v4 as ::ffff:a.b.c.d, for a v2/v1 header whose two addresses must share a family */
static void ip_as_v6(const struct lb_ip *in, uint8_t out[16])
{
	if (in->v6) {
		memcpy(out, in->a, 16);
		return;
	}
	memset(out, 0, 10);
	out[10] = out[11] = 0xff;
	memcpy(out + 12, in->a, 4);
}

int lb_proxy_build(int version, const struct lb_proxy *p, char *out, size_t cap)
{
	int v6 = p->src.v6 || p->dst.v6;
	uint8_t s[16], d[16];
	if (v6) {
		ip_as_v6(&p->src, s);
		ip_as_v6(&p->dst, d);
	} else {
		memcpy(s, p->src.a, 4);
		memcpy(d, p->dst.a, 4);
	}
	if (version == 1) {
		char sa[INET6_ADDRSTRLEN], da[INET6_ADDRSTRLEN];
		int n;
		if (p->local)
			n = snprintf(out, cap, "PROXY UNKNOWN\r\n");
		else if (!inet_ntop(v6 ? AF_INET6 : AF_INET, s, sa, sizeof sa) ||
		         !inet_ntop(v6 ? AF_INET6 : AF_INET, d, da, sizeof da))
			return LB_EINVAL;
		else
			n = snprintf(out, cap, "PROXY %s %s %s %u %u\r\n", v6 ? "TCP6" : "TCP4", sa, da,
			             (unsigned)p->sport, (unsigned)p->dport);
		return n < 0 || (size_t)n >= cap ? LB_ERANGE : n;
	}
	size_t al = p->local ? 0 : v6 ? 16 : 4, body = p->local ? 0 : 2 * al + 4;
	if (cap < 16 + body)
		return LB_ERANGE;
	unsigned char *u = (unsigned char *)out;
	memcpy(u, proxy_v2_sig, 12);
	u[12] = p->local ? 0x20 : 0x21;
	u[13] = p->local ? 0x00 : v6 ? 0x21 : 0x11;
	u[14] = 0;
	u[15] = (unsigned char)body;
	if (!p->local) {
		memcpy(u + 16, s, al);
		memcpy(u + 16 + al, d, al);
		u[16 + 2 * al] = (unsigned char)(p->sport >> 8);
		u[17 + 2 * al] = (unsigned char)p->sport;
		u[18 + 2 * al] = (unsigned char)(p->dport >> 8);
		u[19 + 2 * al] = (unsigned char)p->dport;
	}
	return (int)(16 + body);
}

/* -------------------------------------------------------------------- admin API requests
 * The admin API's paths and bodies, pure so that they are tested and fuzzed like the others. */

static int admin_seg(const char **p, const char *end, struct lb_str *seg)
{
	if (*p >= end || **p != '/')
		return 0;
	const char *q = ++*p;
	while (q < end && *q != '/')
		q++;
	*seg = (struct lb_str){ *p, (size_t)(q - *p) };
	*p = q;
	return 1;
}

static int admin_fail(struct lb_admin_call *o, int status, const char *why)
{
	o->status = status;
	o->error = why;
	return LB_EINVAL;
}

static int seg_is(struct lb_str s, const char *w) { return s.n == strlen(w) && !memcmp(s.p, w, s.n); }

static void seg_copy(char *dst, struct lb_str s)
{
	memcpy(dst, s.p, s.n);
	dst[s.n] = 0;
}

/* /api/pools/{pool}/servers[/{name}[/drain|enable|disable|weight]] */
static int admin_pools(const char *m, const char **p, const char *end, struct lb_admin_call *o)
{
	struct lb_str pool, kw, name, act;
	if (!admin_seg(p, end, &pool) || !name_ok(pool) || !admin_seg(p, end, &kw) || !seg_is(kw, "servers"))
		return admin_fail(o, 404, "expected /api/pools/POOL/servers[/NAME[/ACTION]]");
	seg_copy(o->pool, pool);
	if (!admin_seg(p, end, &name)) {
		o->op = LB_A_SERVER_ADD;
		return strcmp(m, "POST") ? admin_fail(o, 405, "POST adds a server") : 0;
	}
	if (!name_ok(name))
		return admin_fail(o, 404, "a server name is [A-Za-z0-9._-], at most 63 characters");
	seg_copy(o->server, name);
	if (!admin_seg(p, end, &act)) {
		o->op = LB_A_SERVER_DEL;
		return strcmp(m, "DELETE") ? admin_fail(o, 405, "DELETE removes a server") : 0;
	}
	if (*p != end)
		return admin_fail(o, 404, "nothing after the action");
	if (seg_is(act, "weight")) {
		o->op = LB_A_WEIGHT;
		return strcmp(m, "PUT") ? admin_fail(o, 405, "PUT sets the weight") : 0;
	}
	o->op = seg_is(act, "drain") ? LB_A_DRAIN : seg_is(act, "enable") ? LB_A_ENABLE
	      : seg_is(act, "disable") ? LB_A_DISABLE : LB_A_NONE;
	if (o->op == LB_A_NONE)
		return admin_fail(o, 404, "actions are drain, enable, disable and weight");
	return strcmp(m, "POST") ? admin_fail(o, 405, "POST applies an action") : 0;
}

int lb_admin_route(const char *method, size_t mlen, const char *target, size_t tlen, struct lb_admin_call *o)
{
	char m[8];
	memset(o, 0, sizeof *o);
	if (mlen == 0 || mlen >= sizeof m)
		return admin_fail(o, 405, "unknown method");
	memcpy(m, method, mlen);
	m[mlen] = 0;
	const char *q = memchr(target, '?', tlen), *end = q ? q : target + tlen;
	if (q) {
		struct lb_str qs = { q + 1, (size_t)(target + tlen - q - 1) };
		o->dry_run = seg_is(qs, "dry_run=1") || seg_is(qs, "dry_run=true");
		if (!o->dry_run && qs.n)
			return admin_fail(o, 400, "the only query is dry_run=1");
	}
	struct lb_str path = { target, (size_t)(end - target) }, a, b;
	int get = !strcmp(m, "GET") || !strcmp(m, "HEAD");
	if (seg_is(path, "/") && !strcmp(m, "POST")) {
		o->op = LB_A_FORM; /* the dashboard's controls: the token comes in the form (checked by the call) */
		return 0;
	}
	if (seg_is(path, "/") || seg_is(path, "/healthz") || seg_is(path, "/metrics") || seg_is(path, "/api/stats") ||
	    seg_is(path, "/api/history")) {
		o->op = seg_is(path, "/") ? LB_A_DASHBOARD : seg_is(path, "/healthz") ? LB_A_HEALTHZ
		      : seg_is(path, "/metrics") ? LB_A_METRICS : seg_is(path, "/api/stats") ? LB_A_STATS : LB_A_HISTORY;
		return get ? 0 : admin_fail(o, 405, "read-only: GET (POST / takes the dashboard's form)");
	}
	const char *p = path.p;
	if (!admin_seg(&p, end, &a) || !seg_is(a, "api") || !admin_seg(&p, end, &b))
		return admin_fail(o, 404, "no such page");
	o->mutating = 1;
	if (seg_is(b, "config") && p == end) {
		o->op = LB_A_CONFIG;
		return strcmp(m, "POST") ? admin_fail(o, 405, "POST the whole INI text") : 0;
	}
	if (seg_is(b, "reload") && p == end) {
		o->op = LB_A_RELOAD;
		return strcmp(m, "POST") ? admin_fail(o, 405, "POST /api/reload") : 0;
	}
	if (seg_is(b, "pools"))
		return admin_pools(m, &p, end, o);
	struct lb_str route, kw;
	if (seg_is(b, "routes") && admin_seg(&p, end, &route) && name_ok(route) && admin_seg(&p, end, &kw) &&
	    seg_is(kw, "split") && p == end) {
		seg_copy(o->route, route);
		o->op = LB_A_SPLIT;
		return strcmp(m, "PUT") ? admin_fail(o, 405, "PUT the split weights") : 0;
	}
	return admin_fail(o, 404, "no such API path");
}

int lb_parse_split(const char *s, size_t n, struct lb_split_spec *o)
{
	const char *p = s, *end = s + n;
	struct lb_str el, name, w, extra;
	memset(o, 0, sizeof *o);
	unsigned total = 0;
	while (list_next(&p, end, &el)) {
		const char *q = el.p, *qe = el.p + el.n;
		uint64_t v;
		if (!next_word(&q, qe, &name) || !name_ok(name) || !next_word(&q, qe, &w) || next_word(&q, qe, &extra) ||
		    parse_uint64(w.p, w.n, 1000, &v) != 0)
			return LB_EINVAL;
		if (o->n >= LB_ROUTE_MAX_ITEMS)
			return LB_ERANGE;
		seg_copy(o->name[o->n], name);
		o->weight[o->n++] = (unsigned)v;
		total += (unsigned)v;
	}
	return o->n && total ? 0 : LB_EINVAL;
}

int lb_parse_weight(const char *s, size_t n, unsigned *out)
{
	uint64_t v;
	while (n && (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n'))
		s++, n--;
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
		n--;
	if (parse_uint64(s, n, 1000, &v) != 0 || v == 0)
		return LB_EINVAL;
	*out = (unsigned)v;
	return 0;
}

/* One form field's name or value, percent- and plus-decoded into out (cap bytes with the NUL);
 * -1 when it does not fit or has a bad escape or a NUL. */
static int form_decode(const char *p, size_t n, char *out, size_t cap, size_t *len)
{
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		int ch = (unsigned char)p[i];
		if (ch == '+') {
			ch = ' ';
		} else if (ch == '%') {
			if (i + 2 >= n || !is_hex((unsigned char)p[i + 1]) || !is_hex((unsigned char)p[i + 2]))
				return -1;
			ch = hex_val((unsigned char)p[i + 1]) << 4 | hex_val((unsigned char)p[i + 2]);
			i += 2;
		}
		if (!ch || k + 1 >= cap)
			return -1;
		out[k++] = (char)ch;
	}
	out[k] = 0;
	*len = k;
	return 0;
}

/* the next name=value pair of a form body, decoded; 0 at the end, -1 on a bad pair */
static int form_next(const char **p, const char *end, char *name, size_t ncap, char *val, size_t vcap, size_t *vlen)
{
	while (*p < end && **p == '&')
		(*p)++;
	if (*p == end)
		return 0;
	const char *amp = memchr(*p, '&', (size_t)(end - *p)), *e = amp ? amp : end;
	const char *eq = memchr(*p, '=', (size_t)(e - *p));
	size_t nlen;
	int rc = form_decode(*p, (size_t)((eq ? eq : e) - *p), name, ncap, &nlen) == 0 &&
	         form_decode(eq ? eq + 1 : e, eq ? (size_t)(e - eq - 1) : 0, val, vcap, vlen) == 0 ? 1 : -1;
	*p = e;
	return rc;
}

/* "POOL/SERVER" into o's names */
static int form_target(const char *s, struct lb_form_action *o)
{
	const char *slash = strchr(s, '/');
	struct lb_str pool = { s, slash ? (size_t)(slash - s) : 0 }, srv = { slash ? slash + 1 : s, slash ? strlen(slash + 1) : 0 };
	if (!slash || !name_ok(pool) || !name_ok(srv))
		return -1;
	seg_copy(o->pool, pool);
	seg_copy(o->server, srv);
	return 0;
}

int lb_parse_form_action(const char *body, size_t n, struct lb_form_action *o)
{
	static const struct { const char *word; int op; } acts[] = {
		{ "drain", LB_A_DRAIN }, { "enable", LB_A_ENABLE }, { "disable", LB_A_DISABLE }, { "weight", LB_A_WEIGHT },
	};
	char name[2 * LB_NAME_MAX + 8], val[512], want[2 * LB_NAME_MAX + 8];
	size_t vlen;
	const char *p = body, *end = body + n;
	int rc;
	memset(o, 0, sizeof *o);
	while ((rc = form_next(&p, end, name, sizeof name, val, sizeof val, &vlen)) > 0) {
		if (!strcmp(name, "token") && vlen < sizeof o->token) {
			memcpy(o->token, val, vlen + 1);
			o->token_len = vlen;
		} else if (!strcmp(name, "do")) {
			const char *sp = strchr(val, ' ');
			o->op = 0; /* the last do= decides: a form with two says what its last one says */
			for (size_t i = 0; sp && i < sizeof acts / sizeof *acts; i++)
				if ((size_t)(sp - val) == strlen(acts[i].word) && !memcmp(val, acts[i].word, (size_t)(sp - val)))
					o->op = acts[i].op;
			if (!sp || !o->op || form_target(sp + 1, o) != 0)
				return o->error = "do must be 'drain|enable|disable|weight POOL/SERVER'", LB_EINVAL;
		}
	}
	if (rc < 0)
		return o->error = "a field of the form is badly encoded or too long", LB_EINVAL;
	if (!o->op)
		return o->error = "the form names no action (do=ACTION POOL/SERVER)", LB_EINVAL;
	if (o->op != LB_A_WEIGHT)
		return 0;
	snprintf(want, sizeof want, "w.%s/%s", o->pool, o->server);
	for (p = body; (rc = form_next(&p, end, name, sizeof name, val, sizeof val, &vlen)) > 0;)
		if (!strcmp(name, want))
			return lb_parse_weight(val, vlen, &o->weight) == 0 ? 0
			       : (o->error = "the weight must be 1..1000", LB_EINVAL);
	return o->error = "no weight field for that server", LB_EINVAL;
}

/* [scaler] admin_url: one entry per lb node, separated by commas, each "URL [token_file=PATH]" */
static int admin_url_entry(const char *s, size_t n, struct lb_scaler_node *o, char *why, size_t wsize)
{
	struct lb_str w;
	const char *p = s, *end = s + n;
	memset(o, 0, sizeof *o);
	for (int k = 0; next_word(&p, end, &w); k++) {
		if (k == 0 && ((w.n > 7 && !memcmp(w.p, "http://", 7)) || (w.n > 8 && !memcmp(w.p, "https://", 8))) &&
		    w.n < sizeof o->url) {
			while (w.n && w.p[w.n - 1] == '/')
				w.n--;
			memcpy(o->url, w.p, w.n);
		} else if (k == 0) {
			snprintf(why, wsize, "'%.*s' is not an http:// or https:// URL (at most %zu characters)", (int)LB_MIN(w.n, 80),
			         w.p, sizeof o->url - 1);
			return LB_EINVAL;
		} else if (w.n > 11 && !memcmp(w.p, "token_file=", 11) && w.n - 11 < sizeof o->token_file) {
			memcpy(o->token_file, w.p + 11, w.n - 11);
		} else {
			snprintf(why, wsize, "'%.*s' after %.60s: want URL [token_file=PATH], entries separated by commas",
			         (int)LB_MIN(w.n, 60), w.p, o->url);
			return LB_EINVAL;
		}
	}
	if (!o->url[0]) {
		snprintf(why, wsize, "an empty entry");
		return LB_EINVAL;
	}
	return 0;
}

int lb_parse_admin_urls(const char *s, size_t n, struct lb_scaler_node *out, size_t *nout, char *why, size_t wsize)
{
	const char *p = s, *end = s + n;
	*nout = 0;
	while (p <= end) {
		const char *comma = memchr(p, ',', (size_t)(end - p));
		const char *e = comma ? comma : end;
		if (*nout == LB_SCALER_NODES) {
			snprintf(why, wsize, "more than %d lb nodes", LB_SCALER_NODES);
			return LB_EINVAL;
		}
		if (admin_url_entry(p, (size_t)(e - p), &out[*nout], why, wsize) != 0)
			return LB_EINVAL;
		for (size_t i = 0; i < *nout; i++)
			if (!strcmp(out[i].url, out[*nout].url)) {
				snprintf(why, wsize, "%.80s is listed twice", out[i].url);
				return LB_EINVAL;
			}
		(*nout)++;
		p = e + 1;
	}
	return 0;
}

/* -------------------------------------------------------------------- X.509 names, ACME tokens */

struct der {
	const unsigned char *p;
	size_t n;
};

/* One DER element off the front of d (definite lengths, low tag numbers: all X.509 needs). */
static int der_next(struct der *d, unsigned *tag, struct der *val)
{
	if (d->n < 2 || (d->p[0] & 0x1f) == 0x1f)
		return -1;
	size_t len = d->p[1], hl = 2;
	if (len & 0x80) {
		size_t k = len & 0x7f;
		if (k == 0 || k > 4 || d->n < 2 + k)
			return -1;
		len = 0;
		for (size_t i = 0; i < k; i++)
			len = len << 8 | d->p[2 + i];
		hl = 2 + k;
	}
	if (len > d->n - hl)
		return -1;
	*tag = d->p[0];
	val->p = d->p + hl;
	val->n = len;
	d->p += hl + len;
	d->n -= hl + len;
	return 0;
}

static int der_want(struct der *d, unsigned want, struct der *val)
{
	unsigned tag;
	return der_next(d, &tag, val) == 0 && tag == want ? 0 : -1;
}

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

/* UTCTime YYMMDDHHMMSSZ or GeneralizedTime YYYYMMDDHHMMSSZ -> Unix time */
static int der_time(unsigned tag, struct der v, int64_t *out)
{
	size_t yl = tag == 0x17 ? 2 : tag == 0x18 ? 4 : 0;
	if (!yl || v.n != yl + 11 || v.p[v.n - 1] != 'Z')
		return -1;
	unsigned f[7];
	size_t at = 0;
	for (int i = 0; i < 6; i++) {
		size_t w = i == 0 ? yl : 2;
		f[i] = 0;
		for (size_t k = 0; k < w; k++, at++) {
			if (v.p[at] < '0' || v.p[at] > '9')
				return -1;
			f[i] = f[i] * 10 + (unsigned)(v.p[at] - '0');
		}
	}
	if (yl == 2)
		f[0] += f[0] >= 50 ? 1900 : 2000;
	if (f[1] < 1 || f[1] > 12 || f[2] < 1 || f[2] > 31 || f[3] > 23 || f[4] > 59 || f[5] > 60)
		return -1;
	*out = days_from_civil(f[0], f[1], f[2]) * 86400 + f[3] * 3600 + f[4] * 60 + f[5];
	return 0;
}

/* a DNS name as SNI can carry it (LDH labels, maybe "*." first), lower-cased into out */
static int cert_name_copy(char *out, const unsigned char *p, size_t n)
{
	if (n == 0 || n >= LB_HOST_MAX)
		return -1;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = p[i];
		if (!(isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || (ch == '*' && i == 0 && n > 2 && p[1] == '.')))
			return -1;
		out[i] = (char)tolower(ch);
	}
	out[n] = 0;
	return 0;
}

static void x509_subject_cn(struct der name, struct lb_x509_info *o)
{
	static const unsigned char cn_oid[] = { 0x55, 0x04, 0x03 };
	struct der set, atv, oid, val;
	unsigned tag;
	while (der_want(&name, 0x31, &set) == 0) {
		while (der_want(&set, 0x30, &atv) == 0) {
			if (der_want(&atv, 0x06, &oid) != 0 || der_next(&atv, &tag, &val) != 0)
				break;
			if (oid.n == 3 && !memcmp(oid.p, cn_oid, 3) && (tag == 0x0c || tag == 0x13 || tag == 0x16 || tag == 0x14))
				cert_name_copy(o->cn, val.p, val.n);
		}
	}
}

static void x509_san(struct der ext_value, struct lb_x509_info *o)
{
	struct der names, gn;
	unsigned tag;
	if (der_want(&ext_value, 0x30, &names) != 0)
		return;
	while (o->nnames < LB_CERT_NAMES && der_next(&names, &tag, &gn) == 0)
		if (tag == 0x82 && cert_name_copy(o->names[o->nnames], gn.p, gn.n) == 0)
			o->nnames++;
}

static void x509_extensions(struct der exts, struct lb_x509_info *o)
{
	static const unsigned char san_oid[] = { 0x55, 0x1d, 0x11 };
	struct der seq, ext, oid, val;
	unsigned tag;
	if (der_want(&exts, 0x30, &seq) != 0)
		return;
	while (der_want(&seq, 0x30, &ext) == 0) {
		if (der_want(&ext, 0x06, &oid) != 0 || der_next(&ext, &tag, &val) != 0)
			return;
		if (tag == 0x01 && der_next(&ext, &tag, &val) != 0) /* critical flag */
			return;
		if (tag == 0x04 && oid.n == 3 && !memcmp(oid.p, san_oid, 3))
			x509_san(val, o);
	}
}

int lb_x509_info(const unsigned char *der, size_t len, struct lb_x509_info *o)
{
	memset(o, 0, sizeof *o);
	struct der d = { der, len }, cert, tbs, serial, skip, validity, nb, na, subject;
	unsigned tag;
	o->error = "not a DER certificate";
	if (der_want(&d, 0x30, &cert) != 0 || der_want(&cert, 0x30, &tbs) != 0)
		return LB_EINVAL;
	if (tbs.n && tbs.p[0] == 0xa0 && der_next(&tbs, &tag, &skip) != 0) /* version */
		return LB_EINVAL;
	o->error = "bad serial, issuer or validity";
	if (der_want(&tbs, 0x02, &serial) != 0 || serial.n == 0 || serial.n > 32 || der_want(&tbs, 0x30, &skip) != 0 ||
	    der_want(&tbs, 0x30, &skip) != 0 || der_want(&tbs, 0x30, &validity) != 0)
		return LB_EINVAL;
	while (serial.n > 1 && serial.p[0] == 0)
		serial.p++, serial.n--;
	for (size_t i = 0; i < serial.n; i++)
		snprintf(o->serial + 2 * i, 3, "%02X", serial.p[i]);
	if (der_next(&validity, &tag, &nb) != 0 || der_time(tag, nb, &o->not_before) != 0 ||
	    der_next(&validity, &tag, &na) != 0 || der_time(tag, na, &o->not_after) != 0)
		return LB_EINVAL;
	o->error = "bad subject or public key";
	if (der_want(&tbs, 0x30, &subject) != 0 || der_want(&tbs, 0x30, &skip) != 0)
		return LB_EINVAL;
	x509_subject_cn(subject, o);
	while (tbs.n) {
		if (der_next(&tbs, &tag, &skip) != 0)
			return LB_EINVAL;
		if (tag == 0xa3)
			x509_extensions(skip, o);
	}
	if (o->nnames == 0 && o->cn[0]) /* no subjectAltName: the CN names the host (RFC 6125 fallback) */
		memcpy(o->names[o->nnames++], o->cn, sizeof o->cn);
	o->error = NULL;
	return 0;
}

int lb_cert_name_match(const char *pattern, const char *host, size_t hn)
{
	size_t pn = strlen(pattern);
	if (pn > 2 && pattern[0] == '*' && pattern[1] == '.') {
		const char *dot = memchr(host, '.', hn);
		if (!dot || dot == host) /* one whole label before the suffix */
			return 0;
		size_t rest = hn - (size_t)(dot - host);
		return rest == pn - 1 && mem_ieq(dot, pattern + 1, rest);
	}
	return pn == hn && mem_ieq(pattern, host, hn);
}

long lb_acme_token(const char *path, size_t n, const char **token)
{
	size_t pl = sizeof LB_ACME_PREFIX - 1;
	*token = NULL;
	if (n < pl || memcmp(path, LB_ACME_PREFIX, pl) != 0)
		return 0;
	const char *t = path + pl;
	size_t tn = n - pl;
	if (tn == 0 || tn > LB_ACME_TOKEN_MAX)
		return LB_EINVAL;
	for (size_t i = 0; i < tn; i++)
		if (!(isalnum((unsigned char)t[i]) || t[i] == '-' || t[i] == '_'))
			return LB_EINVAL;
	*token = t;
	return (long)tn;
}

/* one scalar at s[i]: a string (escapes skipped over, not decoded) or a literal/number; the end, or 0 */
static size_t json_scalar(const char *s, size_t n, size_t i, struct lb_jtok *t)
{
	if (s[i] == '"') {
		size_t j = i + 1;
		while (j < n && s[j] != '"') {
			if ((unsigned char)s[j] < 0x20)
				return 0;
			j += s[j] == '\\' ? 2 : 1;
		}
		if (j >= n)
			return 0;
		*t = (struct lb_jtok){ LB_J_STR, (uint32_t)(i + 1), (uint32_t)j, 0, 0 };
		return j + 1;
	}
	size_t j = i;
	while (j < n && (isalnum((unsigned char)s[j]) || s[j] == '-' || s[j] == '+' || s[j] == '.'))
		j++;
	if (j == i)
		return 0;
	*t = (struct lb_jtok){ LB_J_PRIM, (uint32_t)i, (uint32_t)j, 0, 0 };
	return j;
}

long lb_json_tokens(const char *s, size_t n, struct lb_jtok *t, size_t max)
{
	size_t stack[32], depth = 0, nt = 0, i = 0;
	int want_key = 0, done = 0;
	if (n > UINT32_MAX)
		return LB_EINVAL;
	while (i < n) {
		char ch = s[i];
		if (ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n' || ch == ',' || ch == ':') {
			i++; /* separators are not checked: a reader's tokens, not a validator */
			continue;
		}
		if (done)
			return LB_EINVAL;
		if (ch == '}' || ch == ']') {
			if (!depth || t[stack[depth - 1]].type != (ch == '}' ? LB_J_OBJ : LB_J_ARR) || (ch == '}' && !want_key))
				return LB_EINVAL; /* want_key is 0 in an object after a key: {"a"} has no value to read */
			struct lb_jtok *o = &t[stack[--depth]];
			o->end = (uint32_t)i + 1;
			o->next = (uint32_t)nt;
			want_key = depth && t[stack[depth - 1]].type == LB_J_OBJ;
			done = !depth;
			i++;
			continue;
		}
		if (nt == max)
			return LB_EINVAL;
		struct lb_jtok *parent = depth ? &t[stack[depth - 1]] : NULL;
		if (parent && (parent->type == LB_J_ARR || want_key))
			parent->size++;
		if (ch == '{' || ch == '[') {
			if (depth == 32 || (want_key && parent && parent->type == LB_J_OBJ))
				return LB_EINVAL;
			t[nt] = (struct lb_jtok){ ch == '{' ? LB_J_OBJ : LB_J_ARR, (uint32_t)i, 0, 0, 0 };
			stack[depth++] = nt++;
			want_key = ch == '{';
			i++;
			continue;
		}
		size_t e = json_scalar(s, n, i, &t[nt]);
		if (!e || (want_key && t[nt].type != LB_J_STR))
			return LB_EINVAL;
		t[nt].next = (uint32_t)nt + 1;
		nt++;
		i = e;
		if (parent && parent->type == LB_J_OBJ)
			want_key = !want_key;
		done = !depth;
	}
	return done ? (long)nt : LB_EINVAL;
}

/* a JSON number's grammar, over a NUL-terminated text: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static int json_number_ok(const char *p)
{
	p += *p == '-';
	if (!is_digit((unsigned char)*p) || (*p == '0' && is_digit((unsigned char)p[1])))
		return 0;
	while (is_digit((unsigned char)*p))
		p++;
	if (*p == '.' && !is_digit((unsigned char)*++p))
		return 0;
	while (is_digit((unsigned char)*p))
		p++;
	if (*p == 'e' || *p == 'E') {
		p++;
		p += *p == '+' || *p == '-';
		if (!is_digit((unsigned char)*p))
			return 0;
		while (is_digit((unsigned char)*p))
			p++;
	}
	return *p == 0;
}

/* four hex digits at p (which has at least four bytes), or -1 */
static long json_hex4(const char *p)
{
	long v = 0;
	for (int i = 0; i < 4; i++) {
		if (!is_hex((unsigned char)p[i]))
			return -1;
		v = v << 4 | hex_val((unsigned char)p[i]);
	}
	return v;
}

/* code point c as UTF-8 at o; the bytes written (1 to 4) */
static size_t utf8_put(char *o, unsigned long c)
{
	if (c < 0x80)
		return o[0] = (char)c, 1;
	if (c < 0x800)
		return o[0] = (char)(0xc0 | c >> 6), o[1] = (char)(0x80 | (c & 63)), 2;
	if (c < 0x10000)
		return o[0] = (char)(0xe0 | c >> 12), o[1] = (char)(0x80 | (c >> 6 & 63)), o[2] = (char)(0x80 | (c & 63)), 3;
	o[0] = (char)(0xf0 | c >> 18), o[1] = (char)(0x80 | (c >> 12 & 63)), o[2] = (char)(0x80 | (c >> 6 & 63));
	o[3] = (char)(0x80 | (c & 63));
	return 4;
}

/* a string token's escapes decoded in place (the text only shrinks: \uXXXX is 6 bytes, its UTF-8 at most 3;
 * a surrogate pair 12, at most 4) and NUL-terminated over its closing quote; -1 on a bad escape */
static int json_unescape(char *s, struct lb_jtok *t)
{
	uint32_t i = t->start, o = t->start;
	while (i < t->end) {
		if (s[i] != '\\') {
			s[o++] = s[i++];
			continue;
		}
		const char *m = strchr("\"\\/bfnrt", s[i + 1]); /* s[i + 1] is in the string: the tokenizer skips pairs */
		if (m && s[i + 1]) {
			s[o++] = "\"\\/\b\f\n\r\t"[m - "\"\\/bfnrt"];
			i += 2;
			continue;
		}
		long u = s[i + 1] == 'u' && t->end - i >= 6 ? json_hex4(s + i + 2) : -1, lo = -1;
		if (u < 0)
			return -1;
		i += 6;
		if (u >= 0xd800 && u < 0xdc00 && t->end - i >= 6 && s[i] == '\\' && s[i + 1] == 'u')
			lo = json_hex4(s + i + 2);
		if (lo >= 0xdc00 && lo < 0xe000) {
			u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
			i += 6;
		} else if (u >= 0xd800 && u < 0xe000) {
			u = 0xfffd; /* a lone surrogate */
		}
		o += (uint32_t)utf8_put(s + o, (unsigned long)u);
	}
	s[o] = 0;
	t->end = o;
	return 0;
}

/* one token of the copy made ready to read: a string decoded, a literal NUL-terminated (over the separator
 * or bracket after it: the tokens already hold the structure) and checked; -1 when it is no JSON */
static int jdoc_settle(char *s, struct lb_jtok *t)
{
	if (t->type == LB_J_STR)
		return json_unescape(s, t);
	if (t->type != LB_J_PRIM)
		return 0;
	s[t->end] = 0;
	const char *p = s + t->start;
	return !strcmp(p, "true") || !strcmp(p, "false") || !strcmp(p, "null") || json_number_ok(p) ? 0 : -1;
}

int lb_jdoc_parse(const char *s, size_t n, struct lb_jdoc *d)
{
	size_t max = n / 2 + 16; /* every token but the first takes two bytes at least ("" [] 1,) */
	if (max > (size_t)LB_JDOC_TOKENS_MAX)
		max = (size_t)LB_JDOC_TOKENS_MAX;
	*d = (struct lb_jdoc){ 0 };
	d->s = n < SIZE_MAX ? malloc(n + 1) : NULL;
	d->t = malloc(max * sizeof *d->t);
	if (!d->s || !d->t) {
		lb_jdoc_free(d);
		return LB_ENOMEM;
	}
	memcpy(d->s, s, n);
	d->s[n] = 0;
	long nt = lb_json_tokens(d->s, n, d->t, max);
	for (long i = 0; i < nt; i++)
		if (jdoc_settle(d->s, &d->t[i]) != 0)
			nt = LB_EINVAL;
	if (nt < 1) {
		lb_jdoc_free(d);
		return LB_EINVAL;
	}
	d->n = nt;
	return 0;
}

void lb_jdoc_free(struct lb_jdoc *d)
{
	free(d->s);
	free(d->t);
	*d = (struct lb_jdoc){ 0 };
}

int lb_jdoc_type(const struct lb_jdoc *d, long i)
{
	return i >= 0 && i < d->n ? d->t[i].type : 0;
}

long lb_jdoc_get(const struct lb_jdoc *d, long o, const char *key)
{
	if (lb_jdoc_type(d, o) != LB_J_OBJ)
		return -1;
	size_t kl = strlen(key);
	for (long i = o + 1; i < (long)d->t[o].next; i = (long)d->t[i + 1].next)
		if (d->t[i].end - d->t[i].start == kl && !memcmp(d->s + d->t[i].start, key, kl))
			return i + 1;
	return -1;
}

long lb_jdoc_next(const struct lb_jdoc *d, long a, long i)
{
	if (lb_jdoc_type(d, a) != LB_J_ARR)
		return -1;
	long j = i < 0 ? a + 1 : (long)d->t[i].next;
	return j < (long)d->t[a].next ? j : -1;
}

const char *lb_jdoc_str(const struct lb_jdoc *d, long i)
{
	return lb_jdoc_type(d, i) == LB_J_STR ? d->s + d->t[i].start : NULL;
}

const char *lb_jdoc_lit(const struct lb_jdoc *d, long i)
{
	return lb_jdoc_type(d, i) == LB_J_PRIM ? d->s + d->t[i].start : NULL;
}

int lb_jdoc_num(const struct lb_jdoc *d, long i, double *out)
{
	const char *p = lb_jdoc_lit(d, i);
	if (!p || !(*p == '-' || is_digit((unsigned char)*p))) /* literals were checked: this is a number */
		return -1;
	*out = strtod(p, NULL);
	return 0;
}

int lb_jdoc_int(const struct lb_jdoc *d, long i, long long *out)
{
	double v;
	if (lb_jdoc_num(d, i, &v) != 0 || v > 9e15 || v < -9e15 || v != (double)(long long)v)
		return -1;
	*out = (long long)v;
	return 0;
}

const char *const lb_log_field_names[LB_LF_N] = {
	"time", "client", "method", "uri", "proto", "status", "bytes", "bytes_in", "term", "duration_ms",
	"t_request_us", "t_connect_us", "t_first_byte_us", "t_total_us", "listener", "route", "pool", "server",
	"server_addr", "retries", "host", "user_agent", "referer", "request_id", "tls", "tls_version", "tls_cipher",
	"sni", "client_cert", "worker", "pid",
};

static int log_tpl_add(struct lb_log_tpl *o, size_t off, size_t len, int field)
{
	if (o->n == LB_LOG_TPL_MAX)
		return -1;
	o->item[o->n].off = (uint16_t)off, o->item[o->n].len = (uint16_t)len, o->item[o->n].field = (int16_t)field;
	o->n++;
	return 0;
}

int lb_log_template_parse(const char *s, size_t n, struct lb_log_tpl *o, const char **why, char *bad, size_t badn)
{
	o->n = 0;
	if (badn)
		bad[0] = 0;
	*why = NULL;
	if (n == 0 || n > 1024) {
		*why = "a template is 1 to 1024 bytes";
		return LB_EINVAL;
	}
	size_t lit = 0;
	for (size_t i = 0; i < n;) {
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) {
			*why = "a control character in the template";
			return LB_EINVAL;
		}
		if (s[i] != '%') {
			i++;
			continue;
		}
		if (i > lit && log_tpl_add(o, lit, i - lit, -1))
			goto too_many;
		if (i + 1 < n && s[i + 1] == '%') { /* %% : the second '%' starts the next literal */
			lit = i + 1;
			i += 2;
			continue;
		}
		const char *e = i + 1 < n && s[i + 1] == '{' ? memchr(s + i + 2, '}', n - i - 2) : NULL;
		if (!e) {
			*why = "a '%' not followed by {field} or %";
			return LB_EINVAL;
		}
		size_t nl = (size_t)(e - (s + i + 2));
		int f = -1;
		for (int k = 0; k < LB_LF_N && f < 0; k++)
			if (strlen(lb_log_field_names[k]) == nl && !memcmp(lb_log_field_names[k], s + i + 2, nl))
				f = k;
		if (f < 0) {
			if (badn)
				snprintf(bad, badn, "%.*s", (int)LB_MIN(nl, 64u), s + i + 2);
			*why = "unknown field";
			return LB_EINVAL;
		}
		if (log_tpl_add(o, 0, 0, f))
			goto too_many;
		i = (size_t)(e - s) + 1;
		lit = i;
	}
	if (n > lit && log_tpl_add(o, lit, n - lit, -1))
		goto too_many;
	return 0;
too_many:
	*why = "more than 64 pieces";
	return LB_EINVAL;
}

/* ==================================================================== 4. configuration
 * Text -> struct lb_conf. A pre-scan finds sections (so duplicates, empty sections and keys
 * outside sections get exact lines) and the lines inih would mangle; inih then delivers keys,
 * which are mapped to their section by line number. Cross-references are resolved last, then the
 * bounds of lb.h (check_limits: README "Limits"). conf_validate (section 12) adds what a running lb needs.
 * A config is not written after load: what a running lb writes about its servers, pools and routes lives
 * in the struct lb_rt made with it (subsection "runtime state beside the config"). The last subsection
 * says what max_connections costs in descriptors (lb_fd_*). Calls sections 2 and 3,
 * and 7 to load the certificates and CAs a listener or pool names (lb_conf_resolve). */

enum { S_BAD = 0, S_GLOBAL, S_LOG, S_ADMIN, S_SCALER, S_LISTENER, S_POOL, S_ROUTE };

struct cfg;
struct keydef;
/* a key's setter: parses v into obj (the section's struct), or reports line and key */
typedef void key_set(struct cfg *st, void *obj, const struct keydef *kd, const char *v, int line);

/* One row per key (the tables keys_global ... keys_route, after the setters): parsing, defaults (def
 * goes through set as if it were in the file), the bits of the keys given (`given` in the section's
 * struct, by row), "did you mean", and `lb --keys`, which tests/keys.py checks against README. */
struct keydef {
	const char *name;
	key_set *set;            /* NULL: lb checks the name only (no row today: [scaler] is parsed too) */
	size_t off, off_n;       /* the field set writes (offsetof in the section's struct); off_n: a list's count */
	const char *def;         /* the default as written in a file; NULL: none */
	uint64_t min, max;       /* set_uint, set_size; set_dur: min (ms) */
	const char *const *words; /* set_enum: the values, numbered from 0 */
	unsigned char repeat;    /* may be given more than once */
	unsigned char route;     /* a route may override it (the [route] row of the same name) */
	unsigned char off0;      /* "off" means 0 */
	const char *good, *bad;  /* for tests: values accepted (with extra lines) and refused, when def and type do not say */
	const char *doc;
	const char *later;       /* not built yet: the issue that brings it */
};
#define KFIELD(T, obj, kd) ((T *)(void *)((char *)(obj) + (kd)->off))
#define KCOUNT(obj, kd) ((size_t *)(void *)((char *)(obj) + (kd)->off_n))
struct sect {
	int kind;
	int line;
	char full[LB_NAME_MAX + 16]; /* "pool api" */
	const char *name;            /* points into full: "api" */
	size_t idx;                  /* index in its conf array */
	unsigned over;               /* [pool]: server lines past LB_MAX_POOL_SERVERS (reported once) */
	int over_line;               /* the first of them */
};

struct cref {                        /* a name to resolve once all sections are read */
	int *dst;
	int want_listener;           /* else a pool */
	char name[LB_NAME_MAX];
	int line;
	char key[LB_NAME_MAX];
};

struct cfg {
	struct lb_conf *c;
	struct lb_cfg_errors *errs;
	struct sect *sects;
	size_t nsects;
	struct name_index sect_names; /* of the valid sections' full names: duplicates in O(1) */
	int *skip;                   /* lines reported by the pre-scan, not to be read again */
	size_t nskip;
	struct cref *refs;
	size_t nrefs, caprefs;
	int oom;
};

static void cfg_err(struct cfg *st, int line, const char *key, const char *fmt, ...)
{
	struct lb_cfg_errors *e = st->errs;
	e->total++;
	if (e->n >= LB_CFG_MAX_ERRORS)
		return;
	struct lb_cfg_error *x = &e->e[e->n++];
	x->line = line;
	snprintf(x->key, sizeof x->key, "%s", key ? key : "");
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(x->msg, sizeof x->msg, fmt, ap);
	va_end(ap);
}

static char *dupn(struct cfg *st, const char *s, size_t n)
{
	char *p = malloc(n + 1);
	if (!p) {
		st->oom = 1;
		return NULL;
	}
	memcpy(p, s, n);
	p[n] = 0;
	return p;
}

static const char *kind_name(int k)
{
	static const char *const n[] = { "?", "global", "log", "admin", "scaler", "listener", "pool", "route" };
	return n[k];
}

static int section_kind(const char *k, size_t n, int *named)
{
	static const struct { const char *s; int kind, named; } t[] = {
		{ "global", S_GLOBAL, 0 }, { "log", S_LOG, 0 }, { "admin", S_ADMIN, 0 },
		{ "scaler", S_SCALER, 0 }, { "listener", S_LISTENER, 1 }, { "pool", S_POOL, 1 },
		{ "route", S_ROUTE, 1 },
	};
	for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
		if (strlen(t[i].s) == n && memcmp(t[i].s, k, n) == 0) {
			*named = t[i].named;
			return t[i].kind;
		}
	}
	return S_BAD;
}


static void unknown_kind(struct cfg *st, int line, const char *k, size_t n)
{
	char w[LB_NAME_MAX + 16];
	const char *best = NULL;
	size_t d = 0;
	snprintf(w, sizeof w, "%.*s", (int)n, k);
	for (int i = S_GLOBAL; i <= S_ROUTE; i++)
		closer(w, kind_name(i), &best, &d);
	if (best)
		cfg_err(st, line, NULL, "unknown section kind '%s': did you mean '%s'? (global, log, admin, scaler, listener, "
		        "pool, route)", w, best);
	else
		cfg_err(st, line, NULL, "unknown section kind '%s' (global, log, admin, scaler, listener, pool, route)", w);
}

static void skip_line(struct cfg *st, int line)
{
	int *p = realloc(st->skip, (st->nskip + 1) * sizeof *p);
	if (!p) {
		st->oom = 1;
		return;
	}
	st->skip = p;
	st->skip[st->nskip++] = line;
}

static const char *sect_full_at(const void *ctx, uint32_t i)
{
	return ((const struct cfg *)ctx)->sects[i].full;
}

/* "[kind name]" at line; adds a struct sect (S_BAD when wrong, so its keys raise no more errors) */
static void prescan_section(struct cfg *st, const char *l, size_t n, int line)
{
	struct sect *s = &st->sects[st->nsects++];
	memset(s, 0, sizeof *s);
	s->line = line;
	const char *rb = memchr(l, ']', n);
	if (!rb) {
		cfg_err(st, line, NULL, "section header without ']'");
		return;
	}
	const char *a = l + 1, *b = rb;
	while (a < b && (*a == ' ' || *a == '\t'))
		a++;
	while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
		b--;
	if ((size_t)(b - a) > 49) {
		cfg_err(st, line, NULL, "section name longer than 49 characters");
		return;
	}
	memcpy(s->full, a, (size_t)(b - a));
	s->full[b - a] = 0;
	const char *sp = memchr(s->full, ' ', strlen(s->full));
	size_t kn = sp ? (size_t)(sp - s->full) : strlen(s->full);
	int named = 0, kind = section_kind(s->full, kn, &named);
	struct lb_str nm = { sp ? sp + 1 : "", sp ? strlen(sp + 1) : 0 };
	if (kind == S_BAD) {
		unknown_kind(st, line, s->full, kn);
		return;
	}
	if (named && !name_ok(nm)) {
		cfg_err(st, line, NULL, "[%s] needs a name of [A-Za-z0-9._-], e.g. [%s web]", kind_name(kind), kind_name(kind));
		return;
	}
	if (!named && nm.n) {
		cfg_err(st, line, NULL, "[%s] takes no name", kind_name(kind));
		return;
	}
	uint32_t *cell = name_index_cell(&st->sect_names, s->full, sect_full_at, st);
	if (*cell) {
		cfg_err(st, line, NULL, "duplicate section [%s] (first at line %d)", s->full, st->sects[*cell - 1].line);
		return;
	}
	*cell = (uint32_t)(st->nsects - 1) + 1;
	s->kind = kind;
	s->name = sp ? sp + 1 : s->full;
}

/* z becomes the copy inih reads, with over-long and NUL-bearing lines emptied, so inih
 * neither splits them nor shifts the line numbers after them. */
static int prescan(struct cfg *st, const char *text, size_t len, char *z)
{
	size_t nlines = 1;
	for (size_t i = 0; i < len; i++)
		nlines += text[i] == '\n';
	st->sects = calloc(nlines, sizeof *st->sects);
	if (!st->sects || name_index_init(&st->sect_names, nlines) != 0)
		return LB_ENOMEM;
	int line = 0;
	size_t zw = 0;
	for (size_t pos = 0; pos < len;) {
		const char *l = text + pos, *nl = memchr(l, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - l) : len - pos;
		pos += n + 1;
		line++;
		int bad = n > 198 || memchr(l, 0, n); /* inih reads 199 bytes with the newline */
		if (!bad) {
			memcpy(z + zw, l, n);
			zw += n;
		}
		if (nl)
			z[zw++] = '\n';
		if (bad) {
			cfg_err(st, line, NULL, n > 198 ? "line longer than 198 characters" : "NUL byte in line");
			continue;
		}
		if (n > 0 && l[n - 1] == '\r')
			n--;
		size_t i = 0;
		while (i < n && (l[i] == ' ' || l[i] == '\t'))
			i++;
		if (i == n || l[i] == ';' || l[i] == '#')
			continue;
		if (i > 0) {
			cfg_err(st, line, NULL, "indented line: continuation lines are not supported, give each value its own 'key =' line");
			skip_line(st, line);
			continue;
		}
		if (l[0] == '[')
			prescan_section(st, l, n, line);
		else if (!memchr(l, '=', n))
			cfg_err(st, line, NULL, "expected 'key = value' or '[section]'");
	}
	z[zw] = 0;
	return 0;
}

/* the section line is in: the last one starting at or before it (sections are in line order) */
static struct sect *sect_at(struct cfg *st, int line)
{
	size_t lo = 0, hi = st->nsects; /* sects[0, lo) start at or before line, [hi, n) after it */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (st->sects[mid].line <= line)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo ? &st->sects[lo - 1] : NULL;
}

static void add_ref(struct cfg *st, int *dst, int want_listener, const char *name, size_t n, int line, const char *key)
{
	if (st->nrefs == st->caprefs) {
		size_t cap = st->caprefs ? st->caprefs * 2 : 32;
		struct cref *r = realloc(st->refs, cap * sizeof *r);
		if (!r) {
			st->oom = 1;
			return;
		}
		st->refs = r;
		st->caprefs = cap;
	}
	struct cref *r = &st->refs[st->nrefs++];
	r->dst = dst;
	r->want_listener = want_listener;
	snprintf(r->name, sizeof r->name, "%.*s", (int)LB_MIN(n, LB_NAME_MAX - 1), name);
	r->line = line;
	snprintf(r->key, sizeof r->key, "%s", key);
	*dst = -1;
}

/* value helpers: report and return non-zero on error */
static int v_dur(struct cfg *st, int line, const char *key, const char *v, uint64_t *out)
{
	if (lb_parse_duration(v, strlen(v), out) == 0)
		return 0;
	cfg_err(st, line, key, "%s: invalid duration '%s' (use e.g. 250ms, 10s, 5m, 1h, 1d)", key, v);
	return 1;
}

/* a duration of at least min ms (a 0 response_timeout would answer 504 before any server could); min 0: any */
static int v_dur_min(struct cfg *st, int line, const char *key, const char *v, uint64_t min, uint64_t *out)
{
	uint64_t x;
	if (v_dur(st, line, key, v, &x))
		return 1;
	if (x < min) {
		cfg_err(st, line, key, "%s: '%s' is too short (at least %llu%s)", key, v,
		        (unsigned long long)(min % 1000 ? min : min / 1000), min % 1000 ? "ms" : "s");
		return 1;
	}
	*out = x;
	return 0;
}

static int v_size(struct cfg *st, int line, const char *key, const char *v, uint64_t *out, uint64_t min, uint64_t max)
{
	if (lb_parse_size(v, strlen(v), out) == 0 && *out >= min && *out <= max)
		return 0;
	cfg_err(st, line, key, "%s: invalid size '%s' (e.g. 512, 16k, 10m; from %llu to %llu bytes)", key, v,
	        (unsigned long long)min, (unsigned long long)max);
	return 1;
}

static int v_uint(struct cfg *st, int line, const char *key, const char *v, unsigned min, unsigned max, unsigned *out)
{
	uint64_t x;
	if (parse_uint64(v, strlen(v), UINT32_MAX, &x) == 0 && x >= min && x <= max) {
		*out = (unsigned)x;
		return 0;
	}
	cfg_err(st, line, key, "%s: '%s' is not a number from %u to %u", key, v, min, max);
	return 1;
}

static char *v_str(struct cfg *st, int line, const char *key, const char *v)
{
	if (!*v) {
		cfg_err(st, line, key, "%s: empty value", key);
		return NULL;
	}
	return dupn(st, v, strlen(v));
}

static int v_onoff(struct cfg *st, int line, const char *key, const char *v, int *out)
{
	if (!strcmp(v, "on") || !strcmp(v, "off")) {
		*out = !strcmp(v, "on");
		return 0;
	}
	cfg_err(st, line, key, "%s: '%s' is not on or off", key, v);
	return 1;
}

static void cidr_list(struct cfg *st, const char *k, const char *v, int line, struct lb_cidr **arr, size_t *n)
{
	const char *p = v, *end = v + strlen(v);
	struct lb_str el;
	if (!*v)
		cfg_err(st, line, k, "%s: empty list of addresses", k);
	while (list_next(&p, end, &el)) {
		struct lb_cidr c;
		if (lb_parse_cidr(el.p, el.n, &c) != 0) {
			cfg_err(st, line, k, "%s: invalid address or CIDR '%.*s' (e.g. 10.0.0.0/8, 2001:db8::/32)", k,
			        (int)el.n, el.p);
			continue;
		}
		if (*n >= 65536) {
			cfg_err(st, line, k, "%s: more than 65536 entries", k);
			return;
		}
		struct lb_cidr *a = realloc(*arr, (*n + 1) * sizeof *a);
		if (!a) {
			st->oom = 1;
			return;
		}
		a[(*n)++] = c;
		*arr = a;
	}
}

static int header_value_ok(const char *v)
{
	for (; *v; v++)
		if ((unsigned char)*v < 0x20 || *v == 0x7f)
			return 0;
	return 1;
}

static void add_server(struct cfg *st, struct lb_pool *p, const char *v, int line)
{
	struct lb_server_spec sp;
	if (lb_parse_server(v, strlen(v), &sp) != 0) {
		cfg_err(st, line, "server", "server: %s in '%s'", sp.error, v);
		return;
	}
	uint64_t h = lb_hash64(sp.name, strlen(sp.name)); /* compared first: a pool of 1,024 stays cheap */
	for (size_t i = 0; i < p->nservers; i++) {
		if (p->servers[i].name_hash == h && !strcmp(p->servers[i].name, sp.name)) {
			cfg_err(st, line, "server", "server: duplicate server name '%s' in [pool %s] (first at line %d)",
			        sp.name, p->name, p->servers[i].line);
			return;
		}
	}
	if (p->nservers >= LB_MAX_POOL_SERVERS) { /* reported once, by check_limits */
		struct sect *ps = sect_at(st, line);
		if (ps && !ps->over++)
			ps->over_line = line;
		return;
	}
	if ((p->nservers & (p->nservers - 1)) == 0) { /* capacity doubles at each power of two */
		struct lb_server *s = realloc(p->servers, (p->nservers ? 2 * p->nservers : 1) * sizeof *s);
		if (!s) {
			st->oom = 1;
			return;
		}
		p->servers = s;
	}
	struct lb_server *s = &p->servers[p->nservers++];
	memset(s, 0, sizeof *s);
	snprintf(s->name, sizeof s->name, "%s", sp.name);
	snprintf(s->host, sizeof s->host, "%s", sp.addr.host);
	s->port = sp.addr.port;
	s->weight = sp.weight;
	s->max_conn = sp.max_conn;
	s->backup = sp.backup;
	s->disabled = sp.disabled;
	s->tls = sp.tls;
	s->line = line;
	s->name_hash = h;
}

/* health_expect: "200-399", "200, 204, 301-302" */
static void set_health_expect(struct cfg *st, struct lb_pool *p, const char *k, const char *v, int line)
{
	const char *q = v, *end = v + strlen(v);
	struct lb_str el;
	p->nhc_expect = 0;
	while (list_next(&q, end, &el)) {
		const char *dash = memchr(el.p, '-', el.n);
		uint64_t lo, hi;
		size_t ln = dash ? (size_t)(dash - el.p) : el.n;
		if (parse_uint64(el.p, ln, 999, &lo) != 0 || lo < 100 ||
		    (dash ? parse_uint64(dash + 1, el.n - ln - 1, 999, &hi) != 0 : (hi = lo, 0)) || hi < lo) {
			cfg_err(st, line, k, "health_expect: '%.*s' is not a status or a range like 200-399", (int)el.n, el.p);
			return;
		}
		if (p->nhc_expect >= sizeof p->hc_expect / sizeof p->hc_expect[0]) {
			cfg_err(st, line, k, "health_expect: more than 8 statuses or ranges");
			return;
		}
		p->hc_expect[p->nhc_expect].lo = (uint16_t)lo;
		p->hc_expect[p->nhc_expect++].hi = (uint16_t)hi;
	}
	if (!p->nhc_expect)
		cfg_err(st, line, k, "health_expect: empty (e.g. 200-399)");
}

static void v_percent(struct cfg *st, int line, const char *k, const char *v, unsigned lo, unsigned off_value,
                      unsigned *out)
{
	size_t n = strlen(v);
	uint64_t pc;
	if (!strcmp(v, "off"))
		*out = off_value;
	else if (n > 1 && v[n - 1] == '%' && parse_uint64(v, n - 1, 100, &pc) == 0 && pc >= lo)
		*out = (unsigned)pc;
	else
		cfg_err(st, line, k, "%s: expected a percentage from %u%% to 100%% or off, got '%s'", k, lo, v);
}

/* "off" turns a circuit rule off (0) */
static void route_list(struct cfg *st, const char *k, const char *v, int line, char **arr, size_t *n,
                       int (*ok)(struct lb_str), const char *what, int lowercase)
{
	const char *p = v, *end = v + strlen(v);
	struct lb_str el;
	while (list_next(&p, end, &el)) {
		if (!ok(el)) {
			cfg_err(st, line, k, "%s: invalid %s '%.*s'", k, what, (int)el.n, el.p);
			continue;
		}
		if (*n >= LB_ROUTE_MAX_ITEMS) {
			cfg_err(st, line, k, "%s: more than %d values", k, LB_ROUTE_MAX_ITEMS);
			return;
		}
		char *s = dupn(st, el.p, el.n);
		if (!s)
			return;
		for (char *q = s; lowercase && *q; q++)
			*q = (char)lower((unsigned char)*q);
		arr[(*n)++] = s;
	}
	if (*n == 0)
		cfg_err(st, line, k, "%s: empty list", k);
}

static int host_pattern_ok(struct lb_str s)
{
	size_t i = 0;
	if (s.n >= 2 && s.p[0] == '*' && s.p[1] == '.')
		i = 2;
	if (i == s.n || s.n >= LB_HOST_MAX)
		return 0;
	for (; i < s.n; i++) {
		unsigned char c = (unsigned char)s.p[i];
		if (!(isalnum(c) || c == '-' || c == '.' || c == '_'))
			return 0;
	}
	return 1;
}

static int path_pattern_ok(struct lb_str s)
{
	if (s.n == 0 || s.p[0] != '/')
		return 0;
	for (size_t i = 0; i < s.n; i++) {
		unsigned char c = (unsigned char)s.p[i];
		if (c <= 0x20 || c >= 0x7f || c == '?' || c == '#')
			return 0;
		if (c == '*' && !(i == s.n - 1 && s.p[i - 1] == '/'))
			return 0;
	}
	return 1;
}

static void route_header(struct cfg *st, struct lb_route *r, const char *v, int line)
{
	const char *colon = strchr(v, ':');
	struct lb_str name = { v, colon ? (size_t)(colon - v) : 0 };
	if (!colon || !token_ok(name)) {
		cfg_err(st, line, "header", "header: expected 'Name: value' (value * = any), got '%s'", v);
		return;
	}
	const char *val = colon + 1;
	while (*val == ' ' || *val == '\t')
		val++;
	if (!*val) {
		cfg_err(st, line, "header", "header: empty value (use * for any value)");
		return;
	}
	if (r->nheaders >= LB_ROUTE_MAX_ITEMS) {
		cfg_err(st, line, "header", "header: more than %d conditions", LB_ROUTE_MAX_ITEMS);
		return;
	}
	r->hdr_names[r->nheaders] = dupn(st, name.p, name.n);
	r->hdr_values[r->nheaders] = dupn(st, val, strlen(val));
	r->nheaders++;
}

static void route_split(struct cfg *st, struct lb_route *r, const char *v, int line)
{
	const char *p = v, *end = v + strlen(v);
	struct lb_str el, w1, w2;
	while (list_next(&p, end, &el)) {
		const char *q = el.p, *qe = el.p + el.n;
		uint64_t w;
		if (!next_word(&q, qe, &w1) || !next_word(&q, qe, &w2) || next_word(&q, qe, &el) ||
		    parse_uint64(w2.p, w2.n, 1000, &w) != 0) {
			cfg_err(st, line, "split", "split: expected 'POOL WEIGHT, POOL WEIGHT' with weights 0..1000");
			return;
		}
		if (r->nsplit >= LB_ROUTE_MAX_ITEMS) {
			cfg_err(st, line, "split", "split: more than %d pools", LB_ROUTE_MAX_ITEMS);
			return;
		}
		r->split[r->nsplit].weight = (unsigned)w;
		add_ref(st, &r->split[r->nsplit].pool, 0, w1.p, w1.n, line, "split");
		r->nsplit++;
	}
}

static void route_acl(struct cfg *st, struct lb_route *r, const char *v, int line)
{
	const char *p = v, *end = v + strlen(v);
	struct lb_str verb, net, extra;
	struct lb_acl_rule rule;
	if (!next_word(&p, end, &verb) || !next_word(&p, end, &net) || next_word(&p, end, &extra) ||
	    !(str_ieq(verb.p, verb.n, "allow") || str_ieq(verb.p, verb.n, "deny"))) {
		cfg_err(st, line, "acl", "acl: expected 'allow CIDR' or 'deny CIDR', got '%s'", v);
		return;
	}
	rule.allow = str_ieq(verb.p, verb.n, "allow");
	if (lb_parse_cidr(net.p, net.n, &rule.net) != 0) {
		cfg_err(st, line, "acl", "acl: invalid address or CIDR '%.*s'", (int)net.n, net.p);
		return;
	}
	struct lb_acl_rule *a = realloc(r->acl, (r->nacl + 1) * sizeof *a);
	if (!a) {
		st->oom = 1;
		return;
	}
	a[r->nacl++] = rule;
	r->acl = a;
}

/* "Name: value" for *_header_add, "Name" for *_header_remove */
static void route_header_edit(struct cfg *st, const char *k, const char *v, int line, char **arr, size_t *n, int add)
{
	const char *colon = strchr(v, ':');
	struct lb_str name = { v, add ? (colon ? (size_t)(colon - v) : 0) : strlen(v) };
	int ok = token_ok(name);
	for (const char *q = v; *q && ok; q++)
		ok = is_vchar_ws((unsigned char)*q);
	if (add && ok) {
		const char *val = colon + 1;
		while (*val == ' ' || *val == '\t')
			val++;
		ok = *val != 0;
	}
	if (!ok) {
		cfg_err(st, line, k, add ? "%s: expected 'Name: value', got '%s'" : "%s: expected a header name, got '%s'", k, v);
		return;
	}
	if (*n >= LB_ROUTE_MAX_ITEMS) {
		cfg_err(st, line, k, "%s: more than %d", k, LB_ROUTE_MAX_ITEMS);
		return;
	}
	if (add) { /* stored normalised as "Name: value" */
		const char *val = colon + 1;
		while (*val == ' ' || *val == '\t')
			val++;
		size_t len = name.n + 2 + strlen(val);
		char *s = malloc(len + 1);
		if (!s) {
			st->oom = 1;
			return;
		}
		snprintf(s, len + 1, "%.*s: %s", (int)name.n, name.p, val);
		arr[(*n)++] = s;
	} else {
		arr[(*n)++] = dupn(st, v, strlen(v));
	}
}

static void route_return(struct cfg *st, struct lb_route *r, const char *k, const char *v, int line)
{
	int redirect = !strcmp(k, "redirect");
	uint64_t code = 0;
	const char *sp = strchr(v, ' ');
	size_t cn = sp ? (size_t)(sp - v) : strlen(v);
	const char *rest = sp ? sp + 1 : "";
	while (*rest == ' ')
		rest++;
	int ok = parse_uint64(v, cn, 999, &code) == 0;
	if (redirect)
		ok = ok && (code == 301 || code == 302 || code == 303 || code == 307 || code == 308) && *rest &&
		     !strpbrk(rest, " \t");
	else
		ok = ok && code >= 200 && code <= 599;
	for (const char *q = rest; *q && ok; q++)
		ok = is_vchar_ws((unsigned char)*q);
	if (!ok) {
		cfg_err(st, line, k, redirect ? "redirect: expected '301|302|303|307|308 URL' ($host and $uri expand), got '%s'"
		                              : "return: expected 'STATUS [body]' with STATUS 200..599, got '%s'", v);
		return;
	}
	if (redirect) {
		r->redir_status = (int)code;
		r->redir_url = dupn(st, rest, strlen(rest));
	} else {
		r->ret_status = (int)code;
		r->ret_body = dupn(st, rest, strlen(rest));
	}
}

/* ---- setters of the key table: generic ones by type, then the keys with their own syntax */

static void set_uint(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	if (kd->off0 && !strcmp(v, "off"))
		*KFIELD(unsigned, o, kd) = 0;
	else
		v_uint(st, line, kd->name, v, (unsigned)kd->min, (unsigned)kd->max, KFIELD(unsigned, o, kd));
}

static void set_size(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	v_size(st, line, kd->name, v, KFIELD(uint64_t, o, kd), kd->min, kd->max);
}

static void set_dur(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	uint64_t *f = KFIELD(uint64_t, o, kd);
	if (kd->off0 && !strcmp(v, "off"))
		*f = 0;
	else
		v_dur_min(st, line, kd->name, v, kd->min, f);
}

static void set_ticket_keys(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	struct lb_conf *c = o;
	free(c->tls_ticket_keys);
	c->tls_ticket_keys = v_str(st, line, kd->name, v);
	c->tls_ticket_keys_line = line;
}

static void set_onoff(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	v_onoff(st, line, kd->name, v, KFIELD(int, o, kd));
}

/* one of kd->words: "'x' is not a, b or c" */
static void set_enum(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	char list[160];
	size_t n = 0;
	for (int i = 0; kd->words[i]; i++)
		if (!strcmp(v, kd->words[i])) {
			*KFIELD(int, o, kd) = i;
			return;
		}
	list[0] = 0;
	for (int i = 0; kd->words[i] && n < sizeof list; i++)
		n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", !i ? "" : kd->words[i + 1] ? ", " : " or ",
		                      kd->words[i]);
	cfg_err(st, line, kd->name, "%s: '%s' is not %s", kd->name, v, list);
}

/* http2 = on is refused by a build without HTTP/2 (where auto means HTTP/1.1 only) */
static void set_http2(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	set_enum(st, o, kd, v, line);
#ifndef LB_HTTP2
	if (*KFIELD(int, o, kd) == LB_H2_ON)
		cfg_err(st, line, kd->name, "http2 = on: this lb was built without HTTP/2 (build it with -DLB_HTTP2 "
		        "-lnghttp2, as make does)");
#endif
}

int lb_listener_h2(const struct lb_listener *l)
{
#ifdef LB_HTTP2
	return l->mode == LB_MODE_HTTP && (l->http2 == LB_H2_ON || (l->http2 == LB_H2_AUTO && l->tls));
#else
	LB_UNUSED(l);
	return 0;
#endif
}

static void set_str(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	char **f = KFIELD(char *, o, kd);
	free(*f);
	*f = v_str(st, line, kd->name, v);
}

static void set_cidrs(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	cidr_list(st, kd->name, v, line, KFIELD(struct lb_cidr *, o, kd), KCOUNT(o, kd));
}

static void set_pool_ref(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	add_ref(st, KFIELD(int, o, kd), 0, v, strlen(v), line, kd->name);
}

static void set_workers(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	if (!strcmp(v, "auto"))
		*KFIELD(unsigned, o, kd) = 0;
	else
		set_uint(st, o, kd, v, line);
}

static void set_access(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	struct lb_conf *c = o;
	free(c->access_log);
	c->access_log = strcmp(v, "off") ? v_str(st, line, kd->name, v) : NULL;
}

/* combined, json or a template of %{field}s (checked here, so lb -t names an unknown field) */
static void set_log_format(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	struct lb_conf *c = o;
	const char *why;
	char bad[72];
	free(c->log_template);
	c->log_template = NULL;
	if (!strcmp(v, "combined") || !strcmp(v, "json")) {
		c->log_format = !strcmp(v, "json") ? LB_LOG_JSON : LB_LOG_COMBINED;
		return;
	}
	if (!strchr(v, '%')) {
		cfg_err(st, line, kd->name, "%s: '%s' is not combined, json or a template of %%{field}s", kd->name, v);
		return;
	}
	if (lb_log_template_parse(v, strlen(v), &c->log_tpl, &why, bad, sizeof bad) != 0) {
		if (bad[0]) {
			const char *near = NULL;
			size_t d = 0;
			for (int i = 0; i < LB_LF_N; i++)
				closer(bad, lb_log_field_names[i], &near, &d);
			cfg_err(st, line, kd->name, "%s: unknown field '%%{%s}'%s%s%s (fields: see README, Access log)", kd->name,
			        bad, near ? " (did you mean '" : "", near ? near : "", near ? "'?)" : "");
		} else {
			cfg_err(st, line, kd->name, "%s: %s", kd->name, why);
		}
		return;
	}
	c->log_format = LB_LOG_TEMPLATE;
	c->log_template = v_str(st, line, kd->name, v);
}

static void set_rotate(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	struct lb_conf *c = o;
	uint64_t x;
	c->rotate_interval = c->rotate_size = 0;
	if (!strcmp(v, "off"))
		return;
	if (lb_parse_duration(v, strlen(v), &x) == 0 && x >= 1000)
		c->rotate_interval = x;
	else if (lb_parse_size(v, strlen(v), &x) == 0 && x >= 4096)
		c->rotate_size = x;
	else
		cfg_err(st, line, kd->name, "rotate: '%s' is not off, an interval of at least 1s (1h) or a size of at least 4k (100m)", v);
}

static void set_admin_bind(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	struct lb_conf *c = o;
	if (lb_parse_hostport(v, strlen(v), &c->admin_bind.hp) != 0)
		cfg_err(st, line, kd->name, "bind: invalid address '%s' (host:port, [v6]:port or *:port)", v);
	c->admin_bind.line = line;
}

static void set_binds(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	struct lb_listener *l = o;
	const char *p = v, *end = v + strlen(v);
	struct lb_str el;
	if (!*v)
		cfg_err(st, line, kd->name, "bind: empty value (host:port, [v6]:port or *:port)");
	while (list_next(&p, end, &el)) {
		if (l->nbinds >= LB_MAX_BINDS) {
			cfg_err(st, line, kd->name, "bind: more than %d addresses", LB_MAX_BINDS);
			return;
		}
		struct lb_bind *b = &l->binds[l->nbinds];
		if (lb_parse_hostport(el.p, el.n, &b->hp) != 0) {
			cfg_err(st, line, kd->name, "bind: invalid address '%.*s' (host:port, [v6]:port or *:port)", (int)el.n, el.p);
			continue;
		}
		b->line = line;
		l->nbinds++;
	}
}

/* one more file of a listener's repeatable key (cert, ocsp): into files[*n], its line beside it */
static void push_file(struct cfg *st, const struct keydef *kd, const char *v, int line, char **files, int *lines,
                      size_t *n)
{
	if (*n >= LB_MAX_CERTS) {
		cfg_err(st, line, kd->name, "%s: more than %d in one listener", kd->name, LB_MAX_CERTS);
		return;
	}
	char *f = v_str(st, line, kd->name, v);
	if (f) {
		lines[*n] = line;
		files[(*n)++] = f;
	}
}

static void set_cert(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	struct lb_listener *l = o;
	push_file(st, kd, v, line, l->certs, l->cert_lines, &l->ncerts);
}

static void set_ocsp(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	struct lb_listener *l = o;
	push_file(st, kd, v, line, l->ocsp, l->ocsp_lines, &l->nocsp);
}

static void set_client_ca(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	struct lb_listener *l = o;
	l->client_ca = v_str(st, line, kd->name, v);
	l->client_ca_line = line;
}

static void set_hsts(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	if (strncmp(v, "max-age=", 8) || !header_value_ok(v))
		cfg_err(st, line, kd->name, "hsts: '%s' is not a Strict-Transport-Security value (e.g. max-age=31536000; includeSubDomains)", v);
	else
		((struct lb_listener *)o)->hsts = v_str(st, line, kd->name, v);
}

static void set_server(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	LB_UNUSED(kd);
	add_server(st, o, v, line);
}

static void set_keepalive(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	struct lb_pool *p = o;
	uint64_t x;
	if (!strcmp(v, "auto"))
		p->keepalive = LB_KEEPALIVE_AUTO;
	else if (parse_uint64(v, strlen(v), kd->max, &x) == 0)
		p->keepalive = (unsigned)x;
	else
		cfg_err(st, line, kd->name, "keepalive: '%s' is neither auto nor a number from 0 to %llu", v,
		        (unsigned long long)kd->max);
}

static void set_health_check(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	struct lb_pool *p = o;
	const char *q = v, *end = v + strlen(v), *k = kd->name;
	struct lb_str kind, m, path, extra;
	if (!next_word(&q, end, &kind))
		kind.n = 0;
	if (str_ieq(kind.p, kind.n, "off") && !next_word(&q, end, &extra)) {
		p->hc_kind = LB_HC_OFF;
	} else if (str_ieq(kind.p, kind.n, "tcp") && !next_word(&q, end, &extra)) {
		p->hc_kind = LB_HC_TCP;
	} else if (str_ieq(kind.p, kind.n, "http") && next_word(&q, end, &m) && token_ok(m) &&
	           m.n < sizeof p->hc_method && next_word(&q, end, &path) && path.p[0] == '/' &&
	           path.n < sizeof p->hc_path && !next_word(&q, end, &extra)) {
		p->hc_kind = LB_HC_HTTP;
		snprintf(p->hc_method, sizeof p->hc_method, "%.*s", (int)m.n, m.p);
		snprintf(p->hc_path, sizeof p->hc_path, "%.*s", (int)path.n, path.p);
		for (size_t i = 0; i < path.n; i++)
			if ((unsigned char)path.p[i] <= ' ' || path.p[i] == 0x7f) {
				cfg_err(st, line, k, "health_check: the path has a control character or space");
				return;
			}
	} else {
		cfg_err(st, line, k, "health_check: expected 'http METHOD /PATH', 'tcp' or 'off', got '%s'", v);
	}
}

static void set_expect(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	set_health_expect(st, o, kd->name, v, line);
}

static void set_error_rate(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	v_percent(st, line, kd->name, v, 0, 0, &((struct lb_pool *)o)->cb_error_rate);
}

static void set_max_open(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	v_percent(st, line, kd->name, v, 1, 100, &((struct lb_pool *)o)->cb_max_open);
}

/* [scaler] percentages: 80 or 80% */
static void set_percent(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	char num[16];
	size_t n = strlen(v);
	n -= n && v[n - 1] == '%';
	snprintf(num, sizeof num, "%.*s", (int)LB_MIN(n, sizeof num - 1), v);
	if (n >= sizeof num) /* cut: refused whole */
		num[0] = 0;
	v_uint(st, line, kd->name, num, (unsigned)kd->min, (unsigned)kd->max, KFIELD(unsigned, o, kd));
}

static void set_admin_urls(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	struct lb_scaler *sc = &((struct lb_conf *)o)->scaler;
	char why[200];
	if (lb_parse_admin_urls(v, strlen(v), sc->node, &sc->nnodes, why, sizeof why) != 0)
		cfg_err(st, line, kd->name, "%s: %s", kd->name, why);
}

static void set_sticky(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	struct lb_pool *p = o;
	const char *q = v, *end = v + strlen(v);
	struct lb_str kind, name, extra;
	p->sticky_cookie[0] = 0;
	if (!strcmp(v, "off"))
		return;
	if (!next_word(&q, end, &kind) || !str_ieq(kind.p, kind.n, "cookie") || !next_word(&q, end, &name) ||
	    next_word(&q, end, &extra) || !token_ok(name) || name.n >= LB_NAME_MAX)
		cfg_err(st, line, kd->name, "sticky: expected 'cookie NAME' or 'off', got '%s'", v);
	else
		snprintf(p->sticky_cookie, sizeof p->sticky_cookie, "%.*s", (int)name.n, name.p);
}

static void set_tls_ca(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	struct lb_pool *p = o;
	p->tls_ca = v_str(st, line, kd->name, v);
	p->tls_line = line;
}

static void set_tls_sni(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	struct lb_pool *p = o;
	if (lb_parse_hostport(v, strlen(v), &(struct lb_hostport){ 0 }) == 0 || strchr(v, ' ') || !*v)
		cfg_err(st, line, kd->name, "tls_sni: '%s' is not a host name", v);
	else
		p->tls_sni = v_str(st, line, kd->name, v);
	p->tls_line = p->tls_line ? p->tls_line : line;
}

static void set_route_listeners(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	struct lb_route *r = o;
	const char *p = v, *end = v + strlen(v);
	struct lb_str el;
	while (list_next(&p, end, &el) && r->nlisteners < LB_ROUTE_MAX_ITEMS)
		add_ref(st, &r->listeners[r->nlisteners++], 1, el.p, el.n, line, kd->name);
}

static void set_hosts(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	struct lb_route *r = o;
	route_list(st, kd->name, v, line, r->hosts, &r->nhosts, host_pattern_ok, "host pattern", 1);
}

static void set_paths(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	struct lb_route *r = o;
	route_list(st, kd->name, v, line, r->paths, &r->npaths, path_pattern_ok, "path (/exact or /prefix/*)", 0);
}

static void set_methods(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	struct lb_route *r = o;
	route_list(st, kd->name, v, line, r->methods, &r->nmethods, token_ok, "method", 0);
}

static void set_header(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	LB_UNUSED(kd);
	route_header(st, o, v, line);
}

static void set_split(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	LB_UNUSED(kd);
	route_split(st, o, v, line);
}

static void set_acl(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	LB_UNUSED(kd);
	route_acl(st, o, v, line);
}

static void set_rate_limit(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	const char *err;
	if (lb_parse_rate_limit(v, strlen(v), &((struct lb_route *)o)->rl, &err) != 0)
		cfg_err(st, line, kd->name, "rate_limit: %s, got '%s'", err, v);
}

static void set_hdr_add(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	route_header_edit(st, kd->name, v, line, KFIELD(char *, o, kd), KCOUNT(o, kd), 1);
}

static void set_hdr_remove(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	route_header_edit(st, kd->name, v, line, KFIELD(char *, o, kd), KCOUNT(o, kd), 0);
}

static void set_return(struct cfg *st, void *o, const struct keydef *kd, const char *v, int line)
{
	route_return(st, o, kd->name, v, line);
}
/* ---- the key table: one row per key (tests/keys.py checks README's key tables against `lb --keys`) */

#define OG(f) offsetof(struct lb_conf, f)
#define OL(f) offsetof(struct lb_listener, f)
#define OP(f) offsetof(struct lb_pool, f)
#define OR(f) offsetof(struct lb_route, f)
#define U64MAX UINT64_MAX

static const char *const w_mode[] = { "http", "tcp", NULL };               /* enum lb_mode */
static const char *const w_proxy[] = { "off", "v1", "v2", "any", NULL };   /* 0, LB_PROXY_V1, _V2, _ANY */
static const char *const w_algo[] = { "round_robin", "least_conn", "ip_hash", "random2", NULL }; /* lb_algo */
static const char *const w_send_proxy[] = { "off", "v1", "v2", NULL };
static const char *const w_http2[] = { "off", "on", "auto", NULL }; /* LB_H2_* */

static const struct keydef keys_global[] = {
	{ .name = "workers", .set = set_workers, .off = OG(workers), .def = "auto", .min = 1, .max = 64, .doc = "worker processes; auto = CPU count (at most 32)" },
	{ .name = "user", .set = set_str, .off = OG(user), .good = "nobody", .doc = "workers drop to this user when started as root" },
	{ .name = "max_connections", .set = set_uint, .off = OG(max_connections), .def = "100000", .min = 1, .max = 1000000, .doc = "client connections per worker" },
	{ .name = "pid_file", .set = set_str, .off = OG(pid_file), .good = "/run/lb.pid", .doc = "the master's PID" },
	{ .name = "rate_limit_entries", .set = set_uint, .off = OG(rate_limit_entries), .def = "65536", .min = 64, .max = 16777216, .doc = "size of the shared rate-limit table" },
	{ .name = "shutdown_timeout", .set = set_dur, .off = OG(shutdown_timeout), .def = "30s", .doc = "bound on a graceful stop" },
	{ .name = "stop_grace", .set = set_dur, .off = OG(stop_grace), .def = "0s", .doc = "after SIGTERM, serve this long while /healthz says draining" },
	{ .name = "alert_command", .set = set_str, .off = OG(alert_command), .good = "logger -t lb", .doc = "shell command run with each event as JSON" },
	{ .name = "tls_ticket_keys", .set = set_ticket_keys, .good = "ticket.key", .bad = "", .doc = "TLS session ticket keys: N x 80 bytes (OpenSSL build)" },
	{ .name = "tls_ticket_rotate", .set = set_dur, .off = OG(tls_ticket_rotate), .def = "1h", .min = 1000, .doc = "a new random ticket key this often (without tls_ticket_keys)" },
	{ .name = "tls_session_cache", .set = set_uint, .off = OG(tls_session_cache), .def = "20000", .min = 0, .max = 10000000, .doc = "TLS sessions kept for resumption; 0 = off" },
	{ .name = "state_file", .later = "the admin API", .doc = "not supported yet" },
	{ .name = NULL },
};
static const struct keydef keys_log[] = {
	{ .name = "access", .set = set_access, .def = "stdout", .bad = "", .doc = "off, stdout or a file path" },
	{ .name = "format", .set = set_log_format, .def = "combined", .good = "%{client} %{status} %{t_total_us}", .bad = "%{nope}", .doc = "combined, json or a template of %{field}s" },
	{ .name = "level", .set = set_enum, .off = OG(log_level), .def = "info", .words = k_level_names, .doc = "error log: error, warn, info or debug" },
	{ .name = "error", .set = set_str, .off = OG(error_log), .def = "stderr", .doc = "stderr or a file path" },
	{ .name = "rotate", .set = set_rotate, .def = "1h", .good = "100m", .doc = "rotate file logs every interval or at a size; off" },
	{ .name = "retention", .set = set_dur, .off = OG(retention), .def = "1d", .min = 1000, .doc = "delete rotated files older than this" },
	{ .name = NULL },
};
static const struct keydef keys_admin[] = {
	{ .name = "bind", .set = set_admin_bind, .def = "127.0.0.1:8404", .doc = "address of the admin API" },
	{ .name = "token_file", .set = set_str, .off = OG(admin_token_file), .good = "token", .doc = "file holding the bearer token changes need" },
	{ .name = "allow", .set = set_cidrs, .off = OG(admin_allow), .off_n = OG(nadmin_allow), .repeat = 1, .good = "10.0.0.0/8", .doc = "CIDRs that may connect (default: loopback)" },
	{ .name = NULL },
};
#define OS(f) offsetof(struct lb_conf, scaler.f)
static const char *const w_server_address[] = { "private", "public", NULL };
static const struct keydef keys_scaler[] = { /* linode-scaler's (deploy/README.md has the table) */
	{ .name = "pool", .set = set_str, .off = OS(pool), .good = "web", .doc = "the lb pool it manages (required)" },
	{ .name = "admin_url", .set = set_admin_urls, .def = "http://127.0.0.1:8404", .good = "http://10.0.0.1:8404, http://10.0.0.2:8404 token_file=/etc/lb/t2", .doc = "lb nodes' admin APIs: URL [token_file=PATH], ... (at most 8)" },
	{ .name = "admin_token_file", .set = set_str, .off = OS(admin_token_file), .good = "/etc/lb/admin.token", .doc = "lb's admin bearer token (required)" },
	{ .name = "api_url", .set = set_str, .off = OS(api_url), .def = "https://api.linode.com/v4", .doc = "Linode API base" },
	{ .name = "token_file", .set = set_str, .off = OS(token_file), .good = "/etc/lb/linode.token", .doc = "Linode personal access token (required)" },
	{ .name = "region", .set = set_str, .off = OS(region), .good = "us-east", .doc = "of new instances (required)" },
	{ .name = "type", .set = set_str, .off = OS(type), .good = "g6-standard-2", .doc = "of new instances (required)" },
	{ .name = "image", .set = set_str, .off = OS(image), .good = "linode/debian12", .doc = "of new instances" },
	{ .name = "user_data", .set = set_str, .off = OS(user_data), .good = "/etc/lb/cloud-init.yaml", .doc = "cloud-init file for new instances" },
	{ .name = "authorized_keys_file", .set = set_str, .off = OS(authorized_keys_file), .good = "/root/.ssh/authorized_keys", .doc = "SSH keys for root on new instances" },
	{ .name = "tag", .set = set_str, .off = OS(tag), .good = "lb-pool-web", .doc = "marks the instances it owns (default lb-pool-POOL)" },
	{ .name = "min", .set = set_uint, .off = OS(min), .def = "2", .min = 0, .max = LB_SCALER_INSTANCES, .doc = "fewest instances" },
	{ .name = "max", .set = set_uint, .off = OS(max), .def = "10", .min = 1, .max = LB_SCALER_INSTANCES, .doc = "most instances" },
	{ .name = "scale_up_cpu", .set = set_percent, .off = OS(up_cpu), .def = "80", .min = 1, .max = 100, .doc = "average CPU percent that adds an instance" },
	{ .name = "scale_down_cpu", .set = set_percent, .off = OS(down_cpu), .def = "30", .min = 1, .max = 100, .doc = "below it for scale_down_after removes one" },
	{ .name = "scale_up_inflight", .set = set_uint, .off = OS(up_inflight), .def = "0", .min = 0, .max = 1000000, .doc = "requests in flight per server (lb's figure) that add an instance; 0 = off" },
	{ .name = "scale_up_p99", .set = set_dur, .off = OS(up_p99), .def = "off", .min = 5, .off0 = 1, .good = "250ms", .doc = "p99 of the pool's requests (lb's histogram, every node) above which an instance is added; off" },
	{ .name = "scale_down_after", .set = set_dur, .off = OS(down_after), .def = "10m", .doc = "how long CPU stays low before a scale-down" },
	{ .name = "cooldown", .set = set_dur, .off = OS(cooldown), .def = "5m", .doc = "minimum time between two changes" },
	{ .name = "interval", .set = set_dur, .off = OS(interval), .def = "30s", .min = 100, .doc = "time between cycles" },
	{ .name = "server_port", .set = set_uint, .off = OS(server_port), .def = "80", .min = 1, .max = 65535, .doc = "service port of new instances" },
	{ .name = "server_address", .set = set_enum, .off = OS(server_address), .def = "private", .words = w_server_address, .doc = "IPv4 lb connects to: private or public" },
	{ .name = NULL },
};
static const struct keydef keys_listener[] = {
	{ .name = "bind", .set = set_binds, .repeat = 1, .good = "127.0.0.1:8002", .doc = "addresses (host:port, [v6]:port, *:port)" },
	{ .name = "allow", .set = set_cidrs, .off = OL(allow), .off_n = OL(nallow), .repeat = 1, .good = "10.0.0.0/8", .doc = "CIDRs accepted (any allow refuses the rest)" },
	{ .name = "deny", .set = set_cidrs, .off = OL(deny), .off_n = OL(ndeny), .repeat = 1, .good = "10.0.0.0/8", .doc = "CIDRs refused at accept" },
	{ .name = "trusted_proxies", .set = set_cidrs, .off = OL(trusted), .off_n = OL(ntrusted), .repeat = 1, .good = "10.0.0.0/8", .doc = "proxies whose X-Forwarded-For or PROXY header counts" },
	{ .name = "mode", .set = set_enum, .off = OL(mode), .def = "http", .words = w_mode, .good = "tcp\npool = p", .doc = "http (L7) or tcp (L4)" },
	{ .name = "pool", .set = set_pool_ref, .off = OL(pool), .good = "p", .doc = "tcp: the pool; http: the pool when no route matches" },
	{ .name = "header_timeout", .set = set_dur, .off = OL(header_timeout), .def = "10s", .doc = "a request head must be complete in this time" },
	{ .name = "idle_timeout", .set = set_dur, .off = OL(idle_timeout), .def = "60s", .doc = "keep-alive idle time; inactivity bound" },
	{ .name = "max_header_size", .set = set_size, .off = OL(max_header_size), .def = "16k", .min = 1024, .max = 1024 * 1024, .doc = "larger request heads get 431" },
	{ .name = "max_body_size", .set = set_size, .off = OL(max_body_size), .def = "10m", .min = 0, .max = INT64_MAX, .route = 1, .doc = "larger request bodies get 413; 0: none" },
	{ .name = "proxy_protocol", .set = set_enum, .off = OL(proxy_protocol), .def = "off", .words = w_proxy, .good = "v2\ntrusted_proxies = 10.0.0.0/8", .doc = "PROXY header required from trusted_proxies: v1, v2 or any" },
	{ .name = "max_conn_per_ip", .set = set_uint, .off = OL(max_conn_per_ip), .def = "0", .min = 0, .max = 1000000, .doc = "concurrent connections per client address; 0 = off" },
	{ .name = "splice", .set = set_onoff, .off = OL(splice), .def = "on", .doc = "mode tcp: move bytes with splice(2)" },
	{ .name = "tls", .set = set_onoff, .off = OL(tls), .def = "off", .good = "on\ncert = a.pem", .doc = "terminate TLS" },
	{ .name = "cert", .set = set_cert, .repeat = 1, .good = "a.pem\ntls = on", .bad = "", .doc = "with tls: PEM chain and key; SNI picks among several" },
	{ .name = "ocsp", .set = set_ocsp, .repeat = 1, .good = "a.der\ntls = on\ncert = a.pem", .bad = "", .doc = "with tls: DER OCSP response stapled with the n-th cert (OpenSSL build); off" },
	{ .name = "client_ca", .set = set_client_ca, .good = "ca.pem\ntls = on\ncert = a.pem", .bad = "", .doc = "with tls: CAs client certificates must chain to" },
	{ .name = "hsts", .set = set_hsts, .good = "max-age=60\ntls = on\ncert = a.pem", .doc = "with tls: the Strict-Transport-Security value" },
	{ .name = "redirect_https", .set = set_onoff, .off = OL(redirect_https), .def = "off", .good = "on", .doc = "plain listener: 308 to https" },
	{ .name = "https_port", .set = set_uint, .off = OL(https_port), .def = "443", .min = 1, .max = 65535, .doc = "the port in those redirects" },
	{ .name = "acme_webroot", .set = set_str, .off = OL(acme_webroot), .good = "/var/www", .doc = "serve /.well-known/acme-challenge/ from DIR" },
	{ .name = "http2", .set = set_http2, .off = OL(http2), .def = "auto", .words = w_http2, .good = "off", .doc = "HTTP/2: on, off; auto = ALPN h2 with tls, off without (on: the h2c preface too)" },
	{ .name = "http2_max_streams", .set = set_uint, .off = OL(http2_max_streams), .def = "100", .min = 1, .max = 10000, .doc = "concurrent streams per HTTP/2 connection" },
	{ .name = NULL },
};
enum { KP_HEALTH_CHECK }; /* rows of keys_pool the code reads the given bit of */
static const struct keydef keys_pool[] = {
	[KP_HEALTH_CHECK] = { .name = "health_check", .set = set_health_check, .def = "http GET /health", .good = "tcp", .doc = "http METHOD /PATH, tcp or off (tcp behind a tcp listener)" },
	{ .name = "server", .set = set_server, .repeat = 1, .good = "s2 127.0.0.1:9002 weight=2", .doc = "NAME HOST:PORT [weight=N] [backup] [max_conn=N] [tls] [disabled]" },
	{ .name = "algorithm", .set = set_enum, .off = OP(algorithm), .def = "round_robin", .words = w_algo, .good = "least_conn", .doc = "round_robin, least_conn, ip_hash or random2" },
	{ .name = "connect_timeout", .set = set_dur, .off = OP(connect_timeout), .def = "3s", .doc = "then 504 or a retry" },
	{ .name = "response_timeout", .set = set_dur, .off = OP(response_timeout), .def = "60s", .min = 1, .route = 1, .doc = "end of request to end of response head" },
	{ .name = "keepalive", .set = set_keepalive, .def = "auto", .min = 0, .max = 100000, .good = "8", .doc = "idle connections per server per worker: auto or a cap" },
	{ .name = "retries", .set = set_uint, .off = OP(retries), .def = "1", .min = 0, .max = 10, .doc = "retries of a failed idempotent request" },
	{ .name = "sticky", .set = set_sticky, .def = "off", .good = "cookie lb", .doc = "cookie NAME pins a client to a server" },
	{ .name = "send_proxy", .set = set_enum, .off = OP(send_proxy), .def = "off", .words = w_send_proxy, .good = "v1", .doc = "PROXY header on server connections: v1 or v2" },
	{ .name = "tls_ca", .set = set_tls_ca, .good = "ca.pem\nserver = t 127.0.0.1:9443 tls", .bad = "", .doc = "CAs of servers marked tls (default: the system's)" },
	{ .name = "tls_sni", .set = set_tls_sni, .good = "api.example\nserver = t 127.0.0.1:9443 tls", .bad = "", .doc = "name sent to and checked on servers marked tls" },
	{ .name = "health_interval", .set = set_dur, .off = OP(hc_interval), .def = "10s", .min = 100, .doc = "between the end of a check and the next" },
	{ .name = "health_timeout", .set = set_dur, .off = OP(hc_timeout), .def = "2s", .min = 10, .doc = "connect + answer" },
	{ .name = "health_rise", .set = set_uint, .off = OP(hc_rise), .def = "2", .min = 1, .max = 100, .doc = "passed checks that bring a server back" },
	{ .name = "health_fall", .set = set_uint, .off = OP(hc_fall), .def = "3", .min = 1, .max = 100, .doc = "failed checks that mark a server down" },
	{ .name = "health_expect", .set = set_expect, .def = "200-399", .good = "200, 204, 301-302", .doc = "statuses and ranges that pass" },
	{ .name = "circuit_failures", .set = set_uint, .off = OP(cb_failures), .def = "5", .min = 0, .max = 1000000, .off0 = 1, .good = "off", .doc = "consecutive failures that open a circuit; off" },
	{ .name = "circuit_error_rate", .set = set_error_rate, .def = "50%", .good = "off", .doc = "failure share that opens a circuit; off" },
	{ .name = "circuit_window", .set = set_dur, .off = OP(cb_window), .def = "10s", .min = 100, .doc = "the error-rate window" },
	{ .name = "circuit_min_requests", .set = set_uint, .off = OP(cb_min_requests), .def = "20", .min = 1, .max = 1000000, .doc = "exchanges in a window before the rate counts" },
	{ .name = "circuit_slow", .set = set_dur, .off = OP(cb_slow), .def = "5s", .off0 = 1, .good = "off", .doc = "a slower answer is a failure; off" },
	{ .name = "circuit_open", .set = set_dur, .off = OP(cb_open), .def = "30s", .min = 100, .doc = "how long an open circuit keeps a server out" },
	{ .name = "circuit_max_open", .set = set_max_open, .def = "50%", .good = "off", .doc = "share of servers whose circuits may be open at once; off" },
	{ .name = NULL },
};
/* rows of keys_route the code reads the given bit of (lb_route.given) */
enum { KR_RESPONSE_TIMEOUT, KR_MAX_BODY_SIZE };
static const struct keydef keys_route[] = {
	[KR_RESPONSE_TIMEOUT] = { .name = "response_timeout", .set = set_dur, .off = OR(response_timeout), .min = 1, .good = "5s", .doc = "overrides the pool's" },
	[KR_MAX_BODY_SIZE] = { .name = "max_body_size", .set = set_size, .off = OR(max_body_size), .min = 0, .max = INT64_MAX, .good = "0", .doc = "overrides the listener's" },
	{ .name = "listener", .set = set_route_listeners, .good = "l", .bad = "nope", .doc = "listener names (default: all http listeners)" },
	{ .name = "host", .set = set_hosts, .good = "*.example.com, example.com", .bad = "a/b", .doc = "host patterns, lower case" },
	{ .name = "path", .set = set_paths, .good = "/api/*, /x", .doc = "/exact or /prefix/*" },
	{ .name = "method", .set = set_methods, .good = "GET, POST", .bad = "a/b", .doc = "methods, case-sensitive" },
	{ .name = "header", .set = set_header, .repeat = 1, .good = "X-A: *", .doc = "Name: value (or *) the request must have" },
	{ .name = "pool", .set = set_pool_ref, .off = OR(pool), .good = "p", .doc = "target pool" },
	{ .name = "split", .set = set_split, .good = "p 90, p 10", .doc = "weighted pools instead of pool" },
	{ .name = "acl", .set = set_acl, .repeat = 1, .good = "allow 10.0.0.0/8", .doc = "allow CIDR / deny CIDR, first match wins" },
	{ .name = "rate_limit", .set = set_rate_limit, .good = "10/second burst=20", .doc = "N/second|minute|hour [burst=N] [by=...]" },
	{ .name = "rate_limit_exempt", .set = set_cidrs, .off = OR(rl_exempt), .off_n = OR(nrl_exempt), .good = "10.0.0.0/8\nrate_limit = 1/second", .doc = "CIDRs never limited" },
	{ .name = "request_header_add", .set = set_hdr_add, .off = OR(req_add), .off_n = OR(nreq_add), .repeat = 1, .good = "X-A: 1", .doc = "Name: value added to requests" },
	{ .name = "request_header_remove", .set = set_hdr_remove, .off = OR(req_del), .off_n = OR(nreq_del), .repeat = 1, .good = "X-A", .bad = "a b", .doc = "Name removed from requests" },
	{ .name = "response_header_add", .set = set_hdr_add, .off = OR(resp_add), .off_n = OR(nresp_add), .repeat = 1, .good = "X-A: 1", .doc = "Name: value added to responses" },
	{ .name = "response_header_remove", .set = set_hdr_remove, .off = OR(resp_del), .off_n = OR(nresp_del), .repeat = 1, .good = "X-A", .bad = "a b", .doc = "Name removed from responses" },
	{ .name = "return", .set = set_return, .good = "503 down", .doc = "STATUS [body] answered by lb" },
	{ .name = "redirect", .set = set_return, .good = "301 https://$host$uri", .doc = "301|302|303|307|308 URL ($host, $uri)" },
	{ .name = NULL },
};
_Static_assert(sizeof keys_pool / sizeof *keys_pool <= 65 && sizeof keys_route / sizeof *keys_route <= 65 &&
               sizeof keys_listener / sizeof *keys_listener <= 65 && sizeof keys_scaler / sizeof *keys_scaler <= 65,
               "a section's keys fit its 64-bit given mask");

static const struct keydef *keys_of(int kind)
{
	switch (kind) {
	case S_GLOBAL: return keys_global;
	case S_LOG: return keys_log;
	case S_ADMIN: return keys_admin;
	case S_SCALER: return keys_scaler;
	case S_LISTENER: return keys_listener;
	case S_POOL: return keys_pool;
	case S_ROUTE: return keys_route;
	}
	return NULL;
}

/* the struct a section's keys go to, and its bits of the keys given */
static void *sect_obj(struct lb_conf *c, int kind, size_t idx, uint64_t **given)
{
	switch (kind) {
	case S_LISTENER: *given = &c->listeners[idx].given; return &c->listeners[idx];
	case S_POOL: *given = &c->pools[idx].given; return &c->pools[idx];
	case S_ROUTE: *given = &c->routes[idx].given; return &c->routes[idx];
	case S_GLOBAL: *given = &c->given_global; break;
	case S_LOG: *given = &c->given_log; break;
	case S_ADMIN: *given = &c->given_admin; break;
	default: *given = &c->given_scaler; break;
	}
	return c;
}

/* the given bit of a key; 0 for a key the section does not have */
static uint64_t key_bit(int kind, const char *name)
{
	const struct keydef *kd = keys_of(kind);
	for (size_t i = 0; kd && kd[i].name; i++)
		if (!strcmp(kd[i].name, name))
			return UINT64_C(1) << i;
	return 0;
}

static void unknown_key(struct cfg *st, int line, const char *key, const struct sect *s)
{
	const char *best = NULL;
	size_t d = 0;
	for (const struct keydef *kd = keys_of(s->kind); kd->name; kd++)
		closer(key, kd->name, &best, &d);
	if (best)
		cfg_err(st, line, key, "unknown key '%s' in [%s]: did you mean '%s'?", key, s->full, best);
	else
		cfg_err(st, line, key, "unknown key '%s' in [%s]", key, s->full);
}

static int cfg_ini_key(void *user, const char *section, const char *key, const char *value, int line)
{
	struct cfg *st = user;
	LB_UNUSED(section);
	for (size_t i = 0; i < st->nskip; i++)
		if (st->skip[i] == line)
			return 1;
	struct sect *s = sect_at(st, line);
	if (!s) {
		cfg_err(st, line, key, "key '%s' outside any section", key);
		return 1;
	}
	if (s->kind == S_BAD)
		return 1; /* the section header was reported */
	const struct keydef *kd = keys_of(s->kind);
	size_t ki = 0;
	while (kd[ki].name && strcmp(kd[ki].name, key))
		ki++;
	if (!kd[ki].name) {
		unknown_key(st, line, key, s);
		return 1;
	}
	if (kd[ki].later) {
		cfg_err(st, line, key, "key '%s' in [%s] is not supported yet (comes with %s)", key, s->full, kd[ki].later);
		return 1;
	}
	uint64_t *given;
	void *obj = sect_obj(st->c, s->kind, s->idx, &given);
	if (!kd[ki].repeat && (*given & (UINT64_C(1) << ki))) {
		cfg_err(st, line, key, "key '%s' given twice in [%s]", key, s->full);
		return 1;
	}
	*given |= UINT64_C(1) << ki;
	if (kd[ki].set)
		kd[ki].set(st, obj, &kd[ki], value, line);
	return 1;
}

/* each key's default, through its setter as if written at line (the section's) */
static void set_defaults(struct cfg *st, int kind, size_t idx, int line)
{
	uint64_t *given;
	void *obj = sect_obj(st->c, kind, idx, &given);
	for (const struct keydef *kd = keys_of(kind); kd->name; kd++)
		if (kd->def && kd->set)
			kd->set(st, obj, kd, kd->def, line);
}

/* Allocate the objects the pre-scan found and give them their defaults. */
static int conf_alloc(struct cfg *st)
{
	struct lb_conf *c = st->c;
	size_t nl = 0, np = 0, nr = 0;
	for (size_t i = 0; i < st->nsects; i++) {
		int k = st->sects[i].kind;
		nl += k == S_LISTENER, np += k == S_POOL, nr += k == S_ROUTE;
	}
	c->listeners = calloc(nl ? nl : 1, sizeof *c->listeners);
	c->pools = calloc(np ? np : 1, sizeof *c->pools);
	c->routes = calloc(nr ? nr : 1, sizeof *c->routes);
	if (!c->listeners || !c->pools || !c->routes)
		return LB_ENOMEM;
	set_defaults(st, S_GLOBAL, 0, 0);
	set_defaults(st, S_LOG, 0, 0);
	for (size_t i = 0; i < st->nsects; i++) {
		struct sect *s = &st->sects[i];
		if (s->kind == S_ADMIN) {
			c->admin_on = 1;
		} else if (s->kind == S_SCALER) {
			c->scaler.line = s->line;
		} else if (s->kind == S_LISTENER) {
			struct lb_listener *l = &c->listeners[s->idx = c->nlisteners++];
			snprintf(l->name, sizeof l->name, "%s", s->name);
			l->line = s->line;
			l->pool = -1;
		} else if (s->kind == S_POOL) {
			struct lb_pool *p = &c->pools[s->idx = c->npools++];
			snprintf(p->name, sizeof p->name, "%s", s->name);
			p->line = s->line;
		} else if (s->kind == S_ROUTE) {
			struct lb_route *r = &c->routes[s->idx = c->nroutes++];
			snprintf(r->name, sizeof r->name, "%s", s->name);
			r->line = s->line;
			r->pool = -1;
		} else {
			continue;
		}
		set_defaults(st, s->kind, s->idx, s->line);
	}
	return st->oom ? LB_ENOMEM : 0;
}

int lb_conf_key(size_t i, struct lb_key_info *k)
{
	for (int kind = S_GLOBAL; kind <= S_ROUTE; kind++) {
		const struct keydef *kd = keys_of(kind);
		size_t n = 0;
		while (kd[n].name)
			n++;
		if (i >= n) {
			i -= n;
			continue;
		}
		kd += i;
		key_set *f = kd->set;
		memset(k, 0, sizeof *k);
		k->section = kind_name(kind);
		k->name = kd->name;
		k->def = kd->def;
		k->type = !f ? "scaler" : f == set_uint || f == set_workers || f == set_keepalive || f == set_percent ? "uint" : f == set_size ? "size"
		          : f == set_dur ? "duration" : f == set_onoff ? "on/off" : f == set_enum ? "enum" : f == set_str ? "string"
		          : "custom";
		k->min = kd->min;
		k->max = f == set_dur ? UINT64_MAX : kd->max;
		k->repeat = kd->repeat;
		k->route = kd->route;
		k->good = kd->good ? kd->good : kd->def;
		k->bad = kd->bad ? kd->bad : f == set_str ? "" : "1x";
		k->doc = kd->doc;
		k->later = kd->later;
		return 0;
	}
	return LB_EINVAL;
}

int lb_conf_given(uint64_t given, const char *section, const char *key)
{
	int named;
	uint64_t bit = key_bit(section_kind(section, strlen(section), &named), key);
	return (given & bit) != 0;
}

static void resolve_refs(struct cfg *st)
{
	for (size_t i = 0; i < st->nrefs; i++) {
		struct cref *r = &st->refs[i];
		char full[sizeof st->sects->full + LB_NAME_MAX];
		snprintf(full, sizeof full, "%s %s", r->want_listener ? "listener" : "pool", r->name);
		uint32_t at = *name_index_cell(&st->sect_names, full, sect_full_at, st); /* the section's index + 1 */
		if (at)
			*r->dst = (int)st->sects[at - 1].idx;
		if (*r->dst < 0)
			cfg_err(st, r->line, r->key, "%s: unknown %s '%s'", r->key, r->want_listener ? "listener" : "pool", r->name);
	}
}

static int binds_clash(const struct lb_hostport *a, const struct lb_hostport *b)
{
	if (a->port != b->port)
		return 0;
	if (a->wildcard || b->wildcard)
		return a->v6 == b->v6 || a->wildcard == b->wildcard;
	return !strcmp(a->host, b->host);
}

static int pool_uses_tls(const struct lb_pool *p)
{
	for (size_t k = 0; k < p->nservers; k++)
		if (p->servers[k].tls)
			return 1;
	return 0;
}

static void check_listener_tls(struct cfg *st, const struct lb_listener *l)
{
	if (l->tls && !l->ncerts)
		cfg_err(st, l->line, "cert", "[listener %s]: tls = on needs at least one cert = FILE", l->name);
	if (!l->tls && l->ncerts)
		cfg_err(st, l->cert_lines[0], "cert", "[listener %s]: cert without tls = on", l->name);
	if (!l->tls && l->client_ca)
		cfg_err(st, l->client_ca_line, "client_ca", "[listener %s]: client_ca without tls = on", l->name);
	if (l->nocsp > l->ncerts)
		cfg_err(st, l->ocsp_lines[l->ncerts], "ocsp", "[listener %s]: ocsp without its cert (the n-th ocsp = is the "
		        "n-th cert's; ocsp = off skips one)", l->name);
	if (!l->tls && l->hsts)
		cfg_err(st, l->line, "hsts", "[listener %s]: hsts is sent on TLS responses only: set tls = on", l->name);
	if (l->tls && l->redirect_https)
		cfg_err(st, l->line, "redirect_https", "[listener %s]: redirect_https is for plain listeners, this one has tls = on", l->name);
	if (l->mode == LB_MODE_TCP && (l->redirect_https || l->acme_webroot || l->hsts))
		cfg_err(st, l->line, l->redirect_https ? "redirect_https" : l->acme_webroot ? "acme_webroot" : "hsts",
		        "[listener %s]: redirect_https, acme_webroot and hsts need mode http", l->name);
}

static void check_listeners(struct cfg *st)
{
	struct lb_conf *c = st->c;
	for (size_t i = 0; i < c->nlisteners; i++) {
		struct lb_listener *l = &c->listeners[i];
		if (l->nbinds == 0)
			cfg_err(st, l->line, "bind", "[listener %s] has no bind address", l->name);
		if (l->mode == LB_MODE_TCP && l->pool < 0)
			cfg_err(st, l->line, "pool", "[listener %s] is mode tcp and needs a pool", l->name);
		check_listener_tls(st, l);
		if (l->proxy_protocol && !l->ntrusted)
			cfg_err(st, l->line, "proxy_protocol",
			        "[listener %s]: proxy_protocol needs trusted_proxies (the addresses allowed to send the header)",
			        l->name);
		for (size_t b = 0; b < l->nbinds; b++) {
			for (size_t j = 0; j <= i; j++) {
				struct lb_listener *m = &c->listeners[j];
				for (size_t d = 0; d < (j == i ? b : m->nbinds); d++)
					if (binds_clash(&l->binds[b].hp, &m->binds[d].hp))
						cfg_err(st, l->binds[b].line, "bind", "bind: address port %u already used at line %d",
						        l->binds[b].hp.port, m->binds[d].line);
			}
		}
	}
}

static void check_pools_routes(struct cfg *st)
{
	struct lb_conf *c = st->c;
	/* a pool behind a tcp listener is checked by connecting, unless told otherwise */
	for (size_t i = 0; i < c->nlisteners; i++)
		if (c->listeners[i].mode == LB_MODE_TCP && c->listeners[i].pool >= 0 &&
		    !(c->pools[c->listeners[i].pool].given & UINT64_C(1) << KP_HEALTH_CHECK))
			c->pools[c->listeners[i].pool].hc_kind = LB_HC_TCP;
	for (size_t i = 0; i < c->npools; i++) {
		if (c->pools[i].nservers == 0)
			cfg_err(st, c->pools[i].line, "server", "[pool %s] has no server", c->pools[i].name);
		if ((c->pools[i].tls_ca || c->pools[i].tls_sni) && !pool_uses_tls(&c->pools[i]))
			cfg_err(st, c->pools[i].tls_line, c->pools[i].tls_ca ? "tls_ca" : "tls_sni",
			        "[pool %s]: tls_ca and tls_sni are for servers marked tls, and none is", c->pools[i].name);
	}
	for (size_t i = 0; i < c->nroutes; i++) {
		struct lb_route *r = &c->routes[i];
		if (r->pool < 0 && r->nsplit == 0 && !r->ret_status && !r->redir_status)
			cfg_err(st, r->line, "pool", "[route %s] needs pool, split, return or redirect", r->name);
		if (r->ret_status && r->redir_status)
			cfg_err(st, r->line, "return", "[route %s] has both return and redirect", r->name);
		if (r->nrl_exempt && !r->rl.rate)
			cfg_err(st, r->line, "rate_limit_exempt", "[route %s] has rate_limit_exempt without rate_limit", r->name);
		r->rl_key = lb_hash64(r->name, strlen(r->name));
		if (r->pool >= 0 && r->nsplit > 0)
			cfg_err(st, r->line, "split", "[route %s] has both pool and split", r->name);
		unsigned wsum = 0;
		for (size_t k = 0; k < r->nsplit; k++)
			wsum += r->split[k].weight;
		if (r->nsplit && !wsum)
			cfg_err(st, r->line, "split", "[route %s]: every split weight is 0", r->name);
		for (size_t k = 0; k < r->nlisteners; k++)
			if (r->listeners[k] >= 0 && c->listeners[r->listeners[k]].mode != LB_MODE_HTTP)
				cfg_err(st, r->line, "listener", "[route %s]: listener '%s' is not mode http", r->name,
				        c->listeners[r->listeners[k]].name);
	}
	if (c->nlisteners == 0)
		cfg_err(st, 0, NULL, "no [listener NAME] section");
	for (size_t i = 0; c->admin_on && i < c->nlisteners; i++)
		for (size_t b = 0; b < c->listeners[i].nbinds; b++)
			if (binds_clash(&c->listeners[i].binds[b].hp, &c->admin_bind.hp))
				cfg_err(st, c->admin_bind.line, "bind", "[admin] bind: port %u is also listener %s's (line %d)",
				        c->admin_bind.hp.port, c->listeners[i].name, c->listeners[i].binds[b].line);
}

/* The bounds of lb.h (README "Limits"), each reported once with the line of the first section or
 * server past it, however many follow: what start-up would refuse, `lb -t` refuses. */
static void check_limits(struct cfg *st)
{
	struct lb_conf *c = st->c;
	if (c->nlisteners > LB_MAX_LISTENERS)
		cfg_err(st, c->listeners[LB_MAX_LISTENERS].line, "listener", "[listener %s]: more than %d listeners (%zu in the file)",
		        c->listeners[LB_MAX_LISTENERS].name, LB_MAX_LISTENERS, c->nlisteners);
	if (c->npools > LB_MAX_POOLS)
		cfg_err(st, c->pools[LB_MAX_POOLS].line, "pool", "[pool %s]: more than %d pools (%zu in the file)",
		        c->pools[LB_MAX_POOLS].name, LB_MAX_POOLS, c->npools);
	if (c->nroutes > LB_MAX_ROUTES)
		cfg_err(st, c->routes[LB_MAX_ROUTES].line, "route", "[route %s]: more than %d routes (%zu in the file)",
		        c->routes[LB_MAX_ROUTES].name, LB_MAX_ROUTES, c->nroutes);
	for (size_t i = 0; i < st->nsects; i++)
		if (st->sects[i].kind == S_POOL && st->sects[i].over)
			cfg_err(st, st->sects[i].over_line, "server",
			        "server: more than %d servers in [pool %s] (%u server lines past the limit, from this one on)",
			        LB_MAX_POOL_SERVERS, st->sects[i].name, st->sects[i].over);
	size_t total = 0, before = 0, i = 0;
	for (size_t k = 0; k < c->npools; k++)
		total += c->pools[k].nservers;
	if (total <= LB_MAX_SERVERS)
		return;
	while (before + c->pools[i].nservers <= LB_MAX_SERVERS) /* the pool holding the first one past it */
		before += c->pools[i++].nservers;
	cfg_err(st, c->pools[i].servers[LB_MAX_SERVERS - before].line, "server",
	        "server: more than %d servers in all pools (%zu in the file; this is the first past the limit)",
	        LB_MAX_SERVERS, total);
}

static void tls_free(struct lb_tls *t); /* section 7 */
static int tls_ticket_file(const char *path, void *k, char *err, size_t errlen);
static int tls_load_pool(struct lb_pool *p, char *err, size_t errlen);

static int tls_load_listener(struct lb_listener *l, int *bad_line, const char **bad_key, char *err, size_t errlen);

/* -------------------------------------------------------------------- runtime state beside the config
 * What a running lb writes about a configuration's servers, pools and routes lives in a struct lb_rt made
 * with the config (conf_rt_alloc), indexed like it: a server by its id, a pool or a route by its place in
 * conf->pools or conf->routes. The config structs are not written after load. Each process writes its
 * own copy: a worker's is the master's, inherited at fork (section 12's shm_map_conf sets the
 * shared-memory pointers first). Sections 8 on find it through srv_rt(), pool_rt() and route_rt()
 * (section 8), for g_conf. */
struct srv_rt {
	unsigned active;           /* requests or tunnels in flight (this process; see shm) */
	struct lb_shm_server *shm; /* shared state across workers; NULL in unit tests */
	struct lb_bconn *idle;     /* idle keep-alive connections, most recently used first */
	unsigned nidle;
	unsigned nopen;            /* open connections to it, idle ones included (this process) */
	unsigned peak_used;        /* most connections in use at once since the last purge */
	unsigned need;             /* connections recent peaks needed: the purge keeps this many */
};

struct pool_rt {
	struct lb_pick_rt pick;    /* what lb_pick writes: round-robin positions (cur: its servers' in rt->cur) */
};

struct route_rt {
	struct lb_shm_route *shm;  /* its split weights and counters, shared; NULL in unit tests */
	struct lb_split_rt split;  /* what lb_route_pool reads and writes: this process's weights, positions */
};

struct listener_rt {
	struct lb_shm_listener *shm; /* its connection counters, shared; NULL in unit tests */
};

struct lb_rt {
	struct srv_rt *srv;        /* [server id] */
	int64_t *cur;              /* [server id]: smooth weighted round-robin, a pool's from its pick.cur */
	struct pool_rt *pool;      /* [pool index] */
	struct route_rt *route;    /* [route index] */
	struct listener_rt *lsn;   /* [listener index] */
};

/* Number the servers (a pool's ids are consecutive) and make c's zeroed runtime state. */
static int conf_rt_alloc(struct lb_conf *c)
{
	size_t n = 0;
	for (size_t i = 0; i < c->npools; i++)
		for (size_t k = 0; k < c->pools[i].nservers; k++)
			c->pools[i].servers[k].id = (unsigned)n++;
	c->rt = calloc(1, sizeof *c->rt);
	if (!c->rt)
		return -1;
	c->rt->srv = calloc(n ? n : 1, sizeof *c->rt->srv);
	c->rt->cur = calloc(n ? n : 1, sizeof *c->rt->cur);
	c->rt->pool = calloc(c->npools ? c->npools : 1, sizeof *c->rt->pool);
	c->rt->route = calloc(c->nroutes ? c->nroutes : 1, sizeof *c->rt->route);
	c->rt->lsn = calloc(c->nlisteners ? c->nlisteners : 1, sizeof *c->rt->lsn);
	if (!c->rt->srv || !c->rt->cur || !c->rt->pool || !c->rt->route || !c->rt->lsn)
		return -1;
	for (size_t i = 0; i < c->npools; i++) /* a pool has servers (check_pools_routes) */
		c->rt->pool[i].pick.cur = &c->rt->cur[c->pools[i].servers[0].id];
	for (size_t i = 0; i < c->nroutes; i++)
		for (size_t j = 0; j < c->routes[i].nsplit; j++)
			c->rt->route[i].split.weight[j] = c->routes[i].split[j].weight;
	return 0;
}

static void conf_rt_free(struct lb_rt *rt)
{
	if (rt) {
		free(rt->srv);
		free(rt->cur);
		free(rt->pool);
		free(rt->route);
		free(rt->lsn);
	}
	free(rt);
}

void lb_conf_free(struct lb_conf *c)
{
	if (!c)
		return;
	conf_rt_free(c->rt);
	for (size_t i = 0; i < c->npools; i++) {
		free(c->pools[i].servers);
		free(c->pools[i].tls_ca);
		free(c->pools[i].tls_sni);
		tls_free(c->pools[i].tlsm);
	}
	for (size_t i = 0; i < c->nroutes; i++) {
		struct lb_route *r = &c->routes[i];
		for (size_t k = 0; k < r->nhosts; k++)
			free(r->hosts[k]);
		for (size_t k = 0; k < r->npaths; k++)
			free(r->paths[k]);
		for (size_t k = 0; k < r->nmethods; k++)
			free(r->methods[k]);
		for (size_t k = 0; k < r->nheaders; k++) {
			free(r->hdr_names[k]);
			free(r->hdr_values[k]);
		}
		for (size_t k = 0; k < r->nreq_add; k++)
			free(r->req_add[k]);
		for (size_t k = 0; k < r->nreq_del; k++)
			free(r->req_del[k]);
		for (size_t k = 0; k < r->nresp_add; k++)
			free(r->resp_add[k]);
		for (size_t k = 0; k < r->nresp_del; k++)
			free(r->resp_del[k]);
		free(r->acl);
		free(r->rl_exempt);
		free(r->ret_body);
		free(r->redir_url);
	}
	for (size_t i = 0; i < c->nlisteners; i++) {
		struct lb_listener *l = &c->listeners[i];
		tls_free(l->tlsm);
		for (size_t k = 0; k < l->ncerts; k++)
			free(l->certs[k]);
		for (size_t k = 0; k < l->nocsp; k++)
			free(l->ocsp[k]);
		free(l->client_ca);
		free(l->hsts);
		free(l->acme_webroot);
		free(c->listeners[i].allow);
		free(c->listeners[i].deny);
		free(c->listeners[i].trusted);
	}
	free(c->admin_token_file);
	free(c->admin_allow);
	char **scaler_str[] = { &c->scaler.pool, &c->scaler.admin_token_file, &c->scaler.api_url, &c->scaler.token_file,
		                &c->scaler.region, &c->scaler.type, &c->scaler.image, &c->scaler.user_data,
		                &c->scaler.authorized_keys_file, &c->scaler.tag };
	for (size_t i = 0; i < sizeof scaler_str / sizeof *scaler_str; i++)
		free(*scaler_str[i]);
	free(c->listeners);
	free(c->pools);
	free(c->routes);
	free(c->pid_file);
	free(c->alert_command);
	free(c->tls_ticket_keys);
	free(c->user);
	free(c->access_log);
	free(c->log_template);
	free(c->error_log);
	free(c);
}

int lb_conf_parse(const char *text, size_t len, struct lb_conf **out, struct lb_cfg_errors *errs)
{
	struct cfg st;
	memset(&st, 0, sizeof st);
	memset(errs, 0, sizeof *errs);
	*out = NULL;
	st.errs = errs;
	st.c = calloc(1, sizeof *st.c);
	char *z = malloc(len + 1); /* inih wants a NUL-terminated string */
	int rc = LB_ENOMEM;
	if (!st.c || !z)
		goto done;
	rc = prescan(&st, text, len, z);
	if (rc == LB_ENOMEM || conf_alloc(&st) != 0) {
		rc = LB_ENOMEM;
		goto done;
	}
	ini_parse_string(z, cfg_ini_key, &st); /* its own syntax errors were found by prescan */
	resolve_refs(&st);
	check_listeners(&st);
	check_pools_routes(&st);
	check_limits(&st);
	rc = st.oom ? LB_ENOMEM : errs->total ? LB_EINVAL : 0;
	if (rc == 0 && conf_rt_alloc(st.c) != 0)
		rc = LB_ENOMEM;
done:
	free(z);
	free(st.sects);
	name_index_free(&st.sect_names);
	free(st.skip);
	free(st.refs);
	if (rc == 0)
		*out = st.c;
	else
		lb_conf_free(st.c);
	if (rc == LB_ENOMEM && errs->total == 0)
		cfg_err(&st, 0, NULL, "out of memory");
	return rc == 0 ? 0 : LB_EINVAL;
}

static int resolve_addr(const char *host, uint16_t port, int passive, struct sockaddr_storage *sa, socklen_t *len,
                        char *err, size_t errlen)
{
	struct addrinfo hints, *res = NULL;
	char ps[8];
	struct sockaddr_in *v4 = (struct sockaddr_in *)sa;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)sa;
	memset(sa, 0, sizeof *sa);
	if (host[0] && inet_pton(AF_INET, host, &v4->sin_addr) == 1) { /* no resolver round (thousands of servers) */
		v4->sin_family = AF_INET;
		v4->sin_port = htons(port);
		*len = sizeof *v4;
		return 0;
	}
	if (host[0] && inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
		v6->sin6_family = AF_INET6;
		v6->sin6_port = htons(port);
		*len = sizeof *v6;
		return 0;
	}
	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = passive ? AI_PASSIVE : AI_ADDRCONFIG;
	snprintf(ps, sizeof ps, "%u", port);
	int rc = getaddrinfo(host[0] ? host : NULL, ps, &hints, &res);
	if (rc != 0 || !res) {
		snprintf(err, errlen, "%s", gai_strerror(rc));
		return LB_EINVAL;
	}
	memcpy(sa, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

/* a listening address; section is "" or "[admin] " for the error */
static void resolve_bind(struct cfg *st, struct lb_bind *bd, const char *section)
{
	char err[128];
	const char *h = bd->hp.wildcard ? "0.0.0.0" : bd->hp.host;
	if (resolve_addr(h, bd->hp.port, 1, &bd->sa, &bd->salen, err, sizeof err) != 0)
		cfg_err(st, bd->line, "bind", "%sbind: cannot resolve '%s': %s", section, h, err);
}

int lb_conf_resolve(struct lb_conf *c, struct lb_cfg_errors *errs)
{
	char err[128];
	struct cfg st;
	memset(&st, 0, sizeof st);
	st.errs = errs;
	for (size_t i = 0; i < c->nlisteners; i++)
		for (size_t b = 0; b < c->listeners[i].nbinds; b++)
			resolve_bind(&st, &c->listeners[i].binds[b], "");
	for (size_t i = 0; i < c->nlisteners; i++) {
		struct lb_listener *l = &c->listeners[i];
		char terr[512];
		int bl = l->line;
		const char *bk = "cert";
		struct stat sb;
		if ((l->ncerts || l->client_ca) && tls_load_listener(l, &bl, &bk, terr, sizeof terr) != 0)
			cfg_err(&st, bl, bk, "%s", terr);
		if (l->acme_webroot && (stat(l->acme_webroot, &sb) != 0 || !S_ISDIR(sb.st_mode)))
			cfg_err(&st, l->line, "acme_webroot", "acme_webroot: %s is not a directory", l->acme_webroot);
	}
	if (c->tls_ticket_keys) {
		unsigned char k[8 * 80]; /* TLS_TICKET_KEYS_MAX keys */
		char terr[300];
		if (tls_ticket_file(c->tls_ticket_keys, k, terr, sizeof terr) < 0)
			cfg_err(&st, c->tls_ticket_keys_line, "tls_ticket_keys", "tls_ticket_keys: %s", terr);
		memset(k, 0, sizeof k);
	}
	if (c->admin_on)
		resolve_bind(&st, &c->admin_bind, "[admin] ");
	for (size_t i = 0; i < c->npools; i++) {
		struct lb_pool *p = &c->pools[i];
		char terr[512];
		if (pool_uses_tls(p) && tls_load_pool(p, terr, sizeof terr) != 0)
			cfg_err(&st, p->tls_ca ? p->tls_line : p->line, "tls_ca", "%s", terr);
		for (size_t k = 0; k < c->pools[i].nservers; k++) {
			struct lb_server *s = &c->pools[i].servers[k];
			if (resolve_addr(s->host, s->port, 0, &s->sa, &s->salen, err, sizeof err) != 0)
				cfg_err(&st, s->line, "server", "server %s: cannot resolve '%s': %s", s->name, s->host, err);
		}
	}
	return errs->total ? LB_EINVAL : 0;
}

/* -------------------------------------------------------------------- descriptors per worker
 * What max_connections costs in file descriptors (checked against RLIMIT_NOFILE at start). */

#define LB_FD_SPARE 8  /* kept open for server sockets when descriptors run out (fd_spare_take) */
#define LB_FD_FIXED 32 /* stdio, epoll, signal pipe, master channel, logs, /dev/urandom, the spares, slack */

unsigned long lb_fd_reserve(const struct lb_conf *c)
{
	unsigned long n = LB_FD_FIXED;
	for (size_t i = 0; i < c->nlisteners; i++)
		n += c->listeners[i].nbinds;
	for (size_t i = 0; i < c->npools; i++)
		for (size_t j = 0; c->pools[i].hc_kind != LB_HC_OFF && j < c->pools[i].nservers; j++)
			n += !c->pools[i].servers[j].disabled; /* worker 1 checks them all at once at worst */
	return n;
}

unsigned long lb_fd_needed(const struct lb_conf *c)
{
	return lb_fd_reserve(c) + 2ul * c->max_connections;
}

unsigned lb_conns_for_fds(const struct lb_conf *c, unsigned long nofile)
{
	unsigned long reserve = lb_fd_reserve(c), n = nofile > reserve ? (nofile - reserve) / 2 : 0;
	return (unsigned)LB_MAX(LB_MIN(n, (unsigned long)c->max_connections), 1ul);
}

/* ==================================================================== 5. routing and balancing
 * Owns the choice of a route for a request head (lb_route_find), of a pool for a route (lb_route_pool:
 * smooth weighted round-robin over a split) and of a server in a pool (lb_pick: tiers, then the pool's
 * algorithm). That part is pure: it reads the config, the servers' states and the clock it is given, and
 * writes only the balancing state it is given (struct lb_pick_rt, lb_split_rt: section 4's struct lb_rt
 * holds this process's, by pool and route); the config is const. The last subsection is the glue
 * that reads those states from shared memory (pool_states). Calls sections 2 and 3. */

/* -------------------------------------------------------------------- the choice (pure) */

/* the values of struct lb_srv_state's cb_state and admin (and of the shared slots they are copied from) */
enum { CB_CLOSED = 0, CB_OPEN, CB_HALF };
enum { ADM_READY = 0, ADM_DRAIN, ADM_DISABLED };
#define LB_CB_TRIALS 3 /* requests a half-open circuit lets through at once */


static int host_match(const char *pat, const char *host, size_t hn)
{
	size_t pn = strlen(pat);
	if (pn > 2 && pat[0] == '*' && pat[1] == '.')
		return hn > pn - 1 && memcmp(host + hn - (pn - 1), pat + 1, pn - 1) == 0;
	return pn == hn && memcmp(pat, host, hn) == 0;
}

static int path_match(const char *pat, const char *path, size_t n)
{
	size_t pn = strlen(pat);
	if (pn >= 2 && pat[pn - 1] == '*') { /* "/api/" + "*": "/api", "/api/..." */
		size_t base = pn - 2;        /* without "/" + "*" */
		if (n < base || memcmp(path, pat, base) != 0)
			return 0;
		return n == base || path[base] == '/' || base == 0;
	}
	return pn == n && memcmp(pat, path, n) == 0;
}

static int route_matches(const struct lb_route *r, int li, const struct lb_req *req, const char *host, size_t hn,
                         const char *path, size_t pn)
{
	size_t i;
	if (r->nlisteners) {
		for (i = 0; i < r->nlisteners && r->listeners[i] != li; i++)
			;
		if (i == r->nlisteners)
			return 0;
	}
	if (r->nhosts) {
		for (i = 0; i < r->nhosts && !host_match(r->hosts[i], host, hn); i++)
			;
		if (i == r->nhosts)
			return 0;
	}
	if (r->npaths) {
		for (i = 0; i < r->npaths && !path_match(r->paths[i], path, pn); i++)
			;
		if (i == r->npaths)
			return 0;
	}
	if (r->nmethods) {
		for (i = 0; i < r->nmethods && !(strlen(r->methods[i]) == req->method.n &&
		                                  !memcmp(r->methods[i], req->method.p, req->method.n)); i++)
			;
		if (i == r->nmethods)
			return 0;
	}
	for (i = 0; i < r->nheaders; i++) {
		const struct lb_header *h = lb_header_find(req->headers, req->nheaders, r->hdr_names[i]);
		if (!h)
			return 0;
		if (strcmp(r->hdr_values[i], "*") &&
		    !(strlen(r->hdr_values[i]) == h->value.n && !memcmp(r->hdr_values[i], h->value.p, h->value.n)))
			return 0;
	}
	return 1;
}

int lb_route_find(const struct lb_conf *conf, int li, const struct lb_req *req, const char *host, size_t hostlen,
                  const char *path, size_t pathlen)
{
	for (size_t i = 0; i < conf->nroutes; i++)
		if (route_matches(&conf->routes[i], li, req, host, hostlen, path, pathlen))
			return (int)i;
	return -1;
}

int lb_route_pool(const struct lb_route *r, struct lb_split_rt *rt)
{
	if (r->nsplit == 0)
		return r->pool;
	int64_t total = 0;
	size_t best = 0;
	for (size_t i = 0; i < r->nsplit; i++) {
		rt->cur[i] += rt->weight[i];
		total += rt->weight[i];
		if (rt->cur[i] > rt->cur[best])
			best = i;
	}
	rt->cur[best] -= total;
	return r->split[best].pool;
}

/* as far as its circuit goes, may a server in state v take a request at now (without taking a trial slot) */
static int cb_allows_at(const struct lb_srv_state *v, uint64_t now)
{
	if (v->cb_state == CB_CLOSED)
		return 1;
	if (v->cb_state == CB_OPEN && now < v->cb_until)
		return 0;
	return v->cb_trials < LB_CB_TRIALS;
}

/* s, in state v, at now. sticky: a draining server still takes the clients pinned to it (as HAProxy's
 * drain does) */
static int usable_at(const struct lb_server *s, const struct lb_srv_state *v, uint64_t now, int sticky)
{
	if (s->disabled)
		return 0;
	if (v->admin == ADM_DISABLED || (v->admin == ADM_DRAIN && !sticky))
		return 0;
	if (v->down || !cb_allows_at(v, now))
		return 0;
	return s->max_conn == 0 || v->active < s->max_conn;
}

/* Which tier serves: primaries when any is usable, else backups. -1 when none. */
static int pick_tier(const struct lb_pool *p, const struct lb_srv_state *st, uint64_t now)
{
	int backup_ok = 0;
	for (size_t i = 0; i < p->nservers; i++) {
		if (usable_at(&p->servers[i], &st[i], now, 0)) {
			if (!p->servers[i].backup)
				return 0;
			backup_ok = 1;
		}
	}
	return backup_ok ? 1 : -1;
}

/* what one pick sees: the pool's servers' states, its balancing state and the clock */
struct pick_ctx {
	const struct lb_pool *p;
	const struct lb_srv_state *st;
	struct lb_pick_rt *rt;
	uint64_t now;
	int tier;
};

static int in_tier(const struct pick_ctx *x, size_t i)
{
	return usable_at(&x->p->servers[i], &x->st[i], x->now, 0) && x->p->servers[i].backup == x->tier;
}

static unsigned active_of(const struct pick_ctx *x, const struct lb_server *s) { return x->st[s - x->p->servers].active; }

/* the weight in effect: the admin API's, else the configured one */
static unsigned weight_of(const struct pick_ctx *x, const struct lb_server *s)
{
	unsigned w = x->st[s - x->p->servers].weight;
	return w ? w : s->weight;
}

static const struct lb_server *pick_rr(const struct pick_ctx *x)
{
	const struct lb_pool *p = x->p;
	int64_t *cur = x->rt->cur;
	size_t best = p->nservers;
	int64_t total = 0;
	for (size_t i = 0; i < p->nservers; i++) {
		if (!in_tier(x, i))
			continue;
		cur[i] += weight_of(x, &p->servers[i]);
		total += weight_of(x, &p->servers[i]);
		if (best == p->nservers || cur[i] > cur[best])
			best = i;
	}
	if (best == p->nservers) /* never: pick_tier saw a usable server of this tier in the same states */
		return NULL;
	cur[best] -= total;
	return &p->servers[best];
}

/* fewer active per weight; a rotating start breaks ties fairly */
static const struct lb_server *pick_least(const struct pick_ctx *x)
{
	const struct lb_pool *p = x->p;
	const struct lb_server *best = NULL;
	size_t n = p->nservers, start = x->rt->seed++ % n; /* pools have at least one server (config check) */
	for (size_t k = 0; k < n; k++) {
		const struct lb_server *s = &p->servers[(start + k) % n];
		if (!in_tier(x, (start + k) % n))
			continue;
		if (!best || (uint64_t)active_of(x, s) * weight_of(x, best) < (uint64_t)active_of(x, best) * weight_of(x, s))
			best = s;
	}
	return best;
}

/* Weighted rendezvous hashing: score = -w / ln(u), u from hash(key, server name). Adding a
 * server moves only the keys it wins; removing one moves only its own keys. */
static const struct lb_server *pick_hash(const struct pick_ctx *x, uint64_t key)
{
	const struct lb_pool *p = x->p;
	const struct lb_server *best = NULL;
	double best_score = 0;
	for (size_t i = 0; i < p->nservers; i++) {
		const struct lb_server *s = &p->servers[i];
		if (!in_tier(x, i))
			continue;
		uint64_t h = mix64(key ^ s->name_hash);
		double u = ((double)(h >> 11) + 0.5) * (1.0 / 9007199254740992.0);
		double score = -(double)weight_of(x, s) / ln_unit(u);
		if (!best || score > best_score) {
			best = s;
			best_score = score;
		}
	}
	return best;
}

static const struct lb_server *pick_weighted_at(const struct pick_ctx *x, uint64_t r)
{
	const struct lb_pool *p = x->p;
	uint64_t total = 0;
	for (size_t i = 0; i < p->nservers; i++)
		if (in_tier(x, i))
			total += weight_of(x, &p->servers[i]);
	if (total == 0)
		return NULL;
	r %= total;
	for (size_t i = 0; i < p->nservers; i++) {
		const struct lb_server *s = &p->servers[i];
		if (!in_tier(x, i))
			continue;
		if (r < weight_of(x, s))
			return s;
		r -= weight_of(x, s);
	}
	return NULL;
}

static const struct lb_server *pick_random2(const struct pick_ctx *x, uint64_t rnd)
{
	const struct lb_server *a = pick_weighted_at(x, rnd & 0xffffffffu);
	const struct lb_server *b = pick_weighted_at(x, rnd >> 32);
	if (!a || !b)
		return a ? a : b;
	return (uint64_t)active_of(x, b) * weight_of(x, a) < (uint64_t)active_of(x, a) * weight_of(x, b) ? b : a;
}

const struct lb_server *lb_pick(const struct lb_pool *p, const struct lb_srv_state *st, struct lb_pick_rt *rt,
                                uint64_t now, uint64_t key, uint64_t rnd)
{
	struct pick_ctx x = { p, st, rt, now, pick_tier(p, st, now) };
	if (x.tier < 0)
		return NULL;
	switch (p->algorithm) {
	case LB_ALGO_LEASTCONN: return pick_least(&x);
	case LB_ALGO_IPHASH: return pick_hash(&x, key);
	case LB_ALGO_RANDOM2: return pick_random2(&x, rnd);
	default: return pick_rr(&x);
	}
}

/* -------------------------------------------------------------------- what a pick reads: shared memory
 * The glue between the pure choice above and the running lb: the layout of the server, route and
 * listener slots in shared memory (section 12 makes and sizes the segment) and pool_states, which copies what the
 * workers share of a pool's servers into the struct lb_srv_state lb_pick takes. */

/* Per-server state the workers share (section 12 owns the segment). `active` is the sum
 * over workers; each worker also keeps its own share so that the master can take back
 * the share of a worker that died. */
#define LB_MAX_WORKERS 64

#define LB_HIST 18 /* duration buckets below (µs): 100 µs .. 60 s; +Inf is the count */
static const uint32_t hist_us[LB_HIST] = { 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000,
                                           250000, 500000, 1000000, 2500000, 5000000, 10000000, 30000000, 60000000 };

struct lb_shm_server {
	char key[2 * LB_NAME_MAX];      /* "pool/server": carried across reloads by name */
	_Atomic uint32_t active;
	_Atomic int32_t down;           /* by health checks */
	_Atomic uint32_t hc_ok, hc_fail; /* consecutive check results (the checker's, kept across takeovers) */
	_Atomic int32_t cb_state;       /* CB_* */
	_Atomic uint64_t cb_until;      /* open until (CLOCK_MONOTONIC ms, the same in every process) */
	_Atomic uint32_t cb_consec;     /* consecutive failed exchanges */
	_Atomic uint64_t cb_win_start;
	_Atomic uint32_t cb_win_req, cb_win_fail;
	_Atomic int32_t cb_trials;      /* half-open trial requests in flight */
	_Atomic uint64_t n_down, n_up, n_open, n_close, n_checks, n_check_fails; /* for metrics */
	_Atomic int32_t admin;          /* ADM_*: set through the admin API */
	_Atomic uint32_t weight;        /* admin API weight; 0 = the configured one */
	_Atomic uint64_t status[6];     /* exchanges by status class: [1] 1xx .. [5] 5xx, [0] none (aborted) */
	_Atomic uint64_t dur_bucket[LB_HIST + 1]; /* request durations: one bucket each (summed at scrape) */
	_Atomic uint64_t dur_sum_ms, retries;
	/* upstream timings (summed per pool at scrape): connect; first response byte after the
	 * connection was ready (connected or reused) */
	_Atomic uint64_t conn_bucket[LB_HIST + 1], fb_bucket[LB_HIST + 1];
	_Atomic uint64_t conn_sum_us, fb_sum_us;
	struct {
		_Atomic uint32_t active;
		_Atomic uint64_t requests, errors, bytes_out;
	} w[LB_MAX_WORKERS];
	uint64_t retired_requests, retired_errors, retired_bytes; /* of exited workers */
	/* for the dashboard: the last check, the last state change and why (srv_note writes the texts) */
	_Atomic uint64_t hc_last_wall_ms, changed_wall_ms; /* 0: none yet */
	_Atomic uint32_t hc_last_us;    /* how long the last check took */
	_Atomic int32_t hc_last_ok;
	_Atomic uint32_t note_lock, note_seq; /* writers take the lock; readers retry on an odd or moved seq */
	char hc_last_why[160];          /* the last check's failure ("" after a pass) */
	char down_why[320];             /* why the server went down or its circuit opened */
};

struct lb_shm_route {
	char key[LB_NAME_MAX];          /* the route's name */
	_Atomic uint32_t weight[LB_ROUTE_MAX_ITEMS]; /* split weights: config at load, admin API after */
	_Atomic uint64_t dur_sum_us;    /* the duration histogram's sum */
	_Atomic uint64_t requests, limited, denied;
	_Atomic uint64_t dur_bucket[LB_HIST + 1];
	_Atomic uint64_t errors;
};

/* Why lb refused a client connection (lb_connections_refused_total's reason). */
enum { REFUSE_ACL, REFUSE_PER_IP, REFUSE_NO_MEMORY, REFUSE_TLS, REFUSE_PROXY, REFUSE_N };

/* Per-listener connection counters, by listener name (survive reloads like the server slots).
 * `active` is a column per worker: the master clears a dead worker's. */
struct lb_shm_listener {
	char key[LB_NAME_MAX];
	_Atomic uint64_t accepted;
	_Atomic uint64_t refused[REFUSE_N];
	_Atomic int64_t active[LB_MAX_WORKERS];
};

/* The state of p's servers now, in a scratch array (valid until the next call): from shared memory,
 * or this process's own count where there is none (unit tests, fuzzers). rt[i] is the runtime state
 * (section 4) of p->servers[i]. */
static const struct lb_srv_state *pool_states(const struct lb_pool *p, const struct srv_rt *rt)
{
	static struct lb_srv_state st[LB_MAX_POOL_SERVERS];
	for (size_t i = 0; i < p->nservers && i < LB_MAX_POOL_SERVERS; i++) {
		const struct lb_shm_server *v = rt[i].shm;
		if (!v) {
			st[i] = (struct lb_srv_state){ .active = rt[i].active };
			continue;
		}
		st[i] = (struct lb_srv_state){
			.active = atomic_load_explicit(&v->active, memory_order_relaxed),
			.down = atomic_load_explicit(&v->down, memory_order_relaxed),
			.admin = atomic_load_explicit(&v->admin, memory_order_relaxed),
			.cb_state = atomic_load_explicit(&v->cb_state, memory_order_relaxed),
			.cb_trials = atomic_load_explicit(&v->cb_trials, memory_order_relaxed),
			.cb_until = atomic_load_explicit(&v->cb_until, memory_order_relaxed),
			.weight = atomic_load_explicit(&v->weight, memory_order_relaxed),
		};
	}
	return st;
}

/* ==================================================================== 6. event loop and timers
 * Owns the readiness backend (EV: epoll or poll, level-triggered) and the clock (g_now, once per loop
 * turn; mono_ms, wall_ms; mono_us for the access log's timers). The connections' deadlines are a heap
 * in section 8. A handler whose peer hung up is deregistered while it wants nothing, so HUP cannot spin. Calls nothing later. */

enum { EV_R = 1, EV_W = 2, EV_ERR = 4, EV_HUP = 8 };
enum { H_LISTEN = 1, H_CLIENT, H_BACKEND, H_SIGNAL, H_CTL, H_HEALTH };

struct evh {
	int fd;
	unsigned want, reg;            /* wanted; registered (a superset: narrowed lazily) */
	uint32_t pidx;                 /* poll(): the slot in EV.pfd */
	uint8_t kind;
	bool registered, hup, dead;
	bool rready;                   /* readable per the last event and not drained since */
};


static uint64_t wall_ms(void) /* for logs only */
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t g_now; /* monotonic ms, once per loop turn */

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* monotonic µs, read at the moments the access log's timers mark (g_now is a whole ms, once a turn) */
static uint64_t mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

#ifdef LB_EPOLL

/* ---- struct lb_evloop EV: the event backend (epoll) (gathered by gather_globals.py)
 * Owner: section 6 (ev_*). Made by the worker (setup_runtime); the master loops on poll() itself,
 * so a fork inherits nothing open here. The fuzzer builds with LB_POLL.
 */
static struct lb_evloop {
	int epfd;
	struct epoll_event evs[512];
} EV = {
	.epfd = -1,
};

static int ev_init(size_t maxfds)
{
	LB_UNUSED(maxfds);
	EV.epfd = epoll_create1(EPOLL_CLOEXEC);
	return EV.epfd < 0 ? -1 : 0;
}

static unsigned ev_to_os(unsigned w) { return (w & EV_R ? EPOLLIN : 0) | (w & EV_W ? EPOLLOUT : 0); }

static void ev_os_set(struct evh *h, unsigned want, int op)
{
	struct epoll_event e;
	memset(&e, 0, sizeof e);
	e.events = ev_to_os(want);
	if (h->kind == H_LISTEN) {
		/* every worker waits on the same listening sockets: wake one, not all. An
		 * exclusive registration cannot be modified, only deleted and added again. */
		if (op == EPOLL_CTL_MOD) {
			epoll_ctl(EV.epfd, EPOLL_CTL_DEL, h->fd, &e);
			if (!want)
				return;
			op = EPOLL_CTL_ADD;
		}
		if (op == EPOLL_CTL_ADD)
			e.events |= EPOLLEXCLUSIVE;
	}
	e.data.ptr = h;
	if (epoll_ctl(EV.epfd, op, h->fd, &e) != 0 && op != EPOLL_CTL_DEL)
		fprintf(stderr, "lb: epoll_ctl(%d) fd %d: %s\n", op, h->fd, strerror(errno));
}

static void ev_os_add(struct evh *h, unsigned want) { ev_os_set(h, want, EPOLL_CTL_ADD); }
static void ev_os_mod(struct evh *h, unsigned want) { ev_os_set(h, want, EPOLL_CTL_MOD); }
static void ev_os_del(struct evh *h) { ev_os_set(h, 0, EPOLL_CTL_DEL); }

typedef void (*ev_cb)(struct evh *h, unsigned events);
static void ev_wait(int timeout_ms, ev_cb cb)
{
	int n = epoll_wait(EV.epfd, EV.evs, (int)(sizeof EV.evs / sizeof *EV.evs), timeout_ms);
	g_now = mono_ms();
	for (int i = 0; i < n; i++) {
		struct evh *h = EV.evs[i].data.ptr;
		unsigned e = EV.evs[i].events, ev = 0;
		ev |= e & EPOLLIN ? EV_R : 0;
		ev |= e & EPOLLOUT ? EV_W : 0;
		ev |= e & EPOLLERR ? EV_ERR : 0;
		ev |= e & EPOLLHUP ? EV_HUP : 0;
		if (!h->dead)
			cb(h, ev);
	}
}
#else

/* ---- struct lb_evloop EV: the event backend (poll) (gathered by gather_globals.py)
 * Owner: section 6 (ev_*). Sized by the worker (setup_runtime); the master loops on poll() itself,
 * so a fork inherits it empty. The fuzzer sets it up once and checks np == 0 after each input.
 */
static struct lb_evloop {
	struct pollfd *pfd;
	struct evh **powner;
	size_t np, pcap;
	struct evh **pready; /* snapshot of owners for one poll() turn */
} EV;

static int ev_init(size_t maxfds)
{
	EV.pcap = maxfds;
	EV.pfd = calloc(maxfds, sizeof *EV.pfd);
	EV.powner = calloc(maxfds, sizeof *EV.powner);
	EV.pready = calloc(maxfds, sizeof *EV.pready);
	return EV.pfd && EV.powner && EV.pready ? 0 : -1;
}

static short ev_to_os(unsigned w) { return (short)((w & EV_R ? POLLIN : 0) | (w & EV_W ? POLLOUT : 0)); }

static void ev_os_add(struct evh *h, unsigned want)
{
	if (EV.np >= EV.pcap)
		return;
	h->pidx = (uint32_t)EV.np++;
	EV.pfd[h->pidx].fd = h->fd;
	EV.pfd[h->pidx].events = ev_to_os(want);
	EV.pfd[h->pidx].revents = 0;
	EV.powner[h->pidx] = h;
}

static void ev_os_mod(struct evh *h, unsigned want) { EV.pfd[h->pidx].events = ev_to_os(want); }

static void ev_os_del(struct evh *h)
{
	size_t i = h->pidx, last = --EV.np;
	if (i != last) {
		EV.pfd[i] = EV.pfd[last];
		EV.powner[i] = EV.powner[last];
		EV.powner[i]->pidx = (uint32_t)i;
	}
}

typedef void (*ev_cb)(struct evh *h, unsigned events);
static void ev_wait(int timeout_ms, ev_cb cb)
{
	int n = poll(EV.pfd, (nfds_t)EV.np, timeout_ms);
	g_now = mono_ms();
	if (n <= 0)
		return;
	/* handlers add and remove entries: act on a snapshot, skipping the dead */
	size_t k = 0, np = EV.np;
	for (size_t i = 0; i < np; i++) {
		if (EV.pfd[i].revents) {
			EV.pready[k] = EV.powner[i];
			EV.pready[k]->reg |= (unsigned)EV.pfd[i].revents << 8; /* stash revents */
			k++;
		}
	}
	for (size_t i = 0; i < k; i++) {
		struct evh *h = EV.pready[i];
		unsigned re = h->reg >> 8, ev = 0;
		h->reg &= 0xff;
		ev |= re & POLLIN ? EV_R : 0;
		ev |= re & POLLOUT ? EV_W : 0;
		ev |= re & (POLLERR | POLLNVAL) ? EV_ERR : 0;
		ev |= re & POLLHUP ? EV_HUP : 0;
		if (!h->dead)
			cb(h, ev);
	}
}
#endif

/* Register what h->want says; a hung-up handler that wants nothing is removed. Interest is
 * widened at once but narrowed only when an unwanted event arrives (ev_narrow): most
 * exchanges then cost no epoll_ctl at all. */
static void ev_apply(struct evh *h)
{
	int keep = !(h->hup && h->want == 0) && !h->dead;
	if (!keep) {
		if (h->registered)
			ev_os_del(h);
		h->registered = 0;
		return;
	}
	if (!h->registered) {
		ev_os_add(h, h->want);
		h->registered = 1;
		h->reg = h->want;
	} else if (h->want & ~(h->reg & 0xff)) {
		ev_os_mod(h, h->want);
		h->reg = h->want;
	}
}

/* spurious: the events the handler did not want when they arrived */
static void ev_narrow(struct evh *h, unsigned spurious)
{
	if (h->registered && !h->dead && (spurious & ~h->want)) {
		ev_os_mod(h, h->want);
		h->reg = h->want;
	}
}

static void ev_forget(struct evh *h)
{
	if (h->registered)
		ev_os_del(h);
	h->registered = 0;
}

/* ==================================================================== 7. TLS glue
 * TLS without blocking, from the event loop, on one of two libraries chosen at compile time:
 * BearSSL (the default) or OpenSSL 3 (-DLB_TLS_OPENSSL, `make TLS=openssl`, ./lb-openssl).
 * Owns the certificates and CAs a listener or pool loads (struct lb_tls: read by lb_conf_resolve
 * in the master, inherited by the workers at fork), the per-connection engines (struct tls_conn
 * towards clients, struct tls_up towards servers), the certificate choice by SNI, resumption
 * state the workers share, the TLS counters and why a handshake failed (lb_tls_fail_classify:
 * lb's TLS error code -> the reason label and a log line, pure), and the kernel's entropy
 * (lb_os_entropy). The struct SHM (the shared mappings of sections 7, 11 and 12) is defined here, at
 * its first user; TLS holds the pooled engines. It does socket I/O on the fd it is given, and reads that entropy.
 *
 * The interface: the rest of lb calls only these, and names no BearSSL or OpenSSL type.
 *   files      tls_load_listener, tls_load_pool (cert, client_ca, tls_ca -> l->tlsm, p->tlsm),
 *              cert_parse (lb ctl ssl update), tls_free; struct lb_tls's certs[].info/.file and
 *              sig[] (file watch, expiry alerts, metrics); file_read, file_sig_of, file_sig_eq
 *   shared     tls_shared_create (the master, before any fork): SHM.tls, counters + resumption state
 *   worker     tls_worker_setup(max_conns) (per-worker state before the first connection),
 *              tls_trim (once a second: pages of buffers unused for a second go back)
 *   engines    tls_conn_new(L, alpn, nalpn) / tls_conn_free (towards a client; alpn: the
 *              protocols lb offers, in preference order), tls_feed_pre (bytes read with a PROXY
 *              header start the handshake); tls_up_new(pool, server) / tls_up_free
 *   the pump   on struct tls_io and the socket: tls_recv (plaintext in; drives the handshake),
 *              tls_send (plaintext out), tls_flush_out, tls_records_pending, tls_has_input,
 *              tls_can_send, tls_close_notify (close)
 *   results    tc->hs_done, tc->subject (the client certificate checked against client_ca, as
 *              "CN=..,O=.."), io->got_bytes, tls_sni (the SNI name), tls_alpn (the protocol
 *              ALPN chose, "" when none), tls_fail_why (a failed handshake's reason and text),
 *              tls_up_error_text (why a server's handshake failed), tls_count_failure, tls_log_info
 *              (the version and cipher, for the access log)
 *
 * The protocol choice is fixed here on purpose: TLS 1.2 (1.0 and 1.1 are obsolete) with ECDHE
 * key exchange only (forward secrecy) and AEAD ciphers only (AES-GCM, ChaCha20-Poly1305),
 * server preference order, no renegotiation; TLS 1.3 too on OpenSSL (BearSSL 0.6 has none),
 * without 0-RTT; groups X25519, P-256, P-384. Resumption: a session-ID cache in shared memory
 * (both), and on OpenSSL stateless tickets whose keys every worker shares. ALPN: http/1.1, with h2
 * first on listeners with HTTP/2 (tls_alpn_h2 says what a connection chose).
 * Calls sections 2, 3 (X.509 names) and 6 (the clock). */

/* lb's TLS error codes (io->err): BearSSL's numbers (br_ssl_engine_last_error), to which the
 * OpenSSL build maps its errors, so that the failure reasons and their texts are one for both. */
enum {
	LB_TLS_ERR_OK = 0, LB_TLS_ERR_UNSUPPORTED_VERSION = 3, LB_TLS_ERR_BAD_VERSION = 4, LB_TLS_ERR_BAD_LENGTH = 5,
	LB_TLS_ERR_TOO_LARGE = 6, LB_TLS_ERR_BAD_MAC = 7, LB_TLS_ERR_NO_RANDOM = 8, LB_TLS_ERR_UNKNOWN_TYPE = 9,
	LB_TLS_ERR_UNEXPECTED = 10, LB_TLS_ERR_BAD_HANDSHAKE = 14, LB_TLS_ERR_BAD_CIPHER_SUITE = 16,
	LB_TLS_ERR_BAD_SNI = 21, LB_TLS_ERR_LIMIT_EXCEEDED = 23, LB_TLS_ERR_BAD_FINISHED = 24,
	LB_TLS_ERR_BAD_SIGNATURE = 27, LB_TLS_ERR_WRONG_KEY_USAGE = 28, LB_TLS_ERR_NO_CLIENT_AUTH = 29,
	LB_TLS_ERR_X509_OK = 32, LB_TLS_ERR_X509_EMPTY_CHAIN = 35, LB_TLS_ERR_X509_EXPIRED = 54,
	LB_TLS_ERR_X509_BAD_SERVER_NAME = 56, LB_TLS_ERR_X509_FORBIDDEN_KEY_USAGE = 59, LB_TLS_ERR_X509_NOT_TRUSTED = 62,
	LB_TLS_ERR_RECV_FATAL_ALERT = 256, LB_TLS_ERR_SEND_FATAL_ALERT = 512,
};

#ifdef LB_TLS_OPENSSL
#define LB_TLS_LIB "OpenSSL"
#define LB_TLS_VERSIONS "TLS 1.2 or 1.3"
#define LB_TLS_NO_13 ""
#else
#define LB_TLS_LIB "BearSSL"
#define LB_TLS_VERSIONS "TLS 1.2"
#define LB_TLS_NO_13 "; a TLS 1.3-only client ends here too"
#endif

/* the protocols lb offers with ALPN towards clients (HTTP listeners) and servers */
static const char *const tls_alpn_http[] = { "http/1.1" };
static const char *const tls_alpn_h2list[] = { "h2", "http/1.1" }; /* listeners with HTTP/2 */
#define TLS_SUBJECT_MAX 256

struct file_sig {
	dev_t dev;
	ino_t ino;
	off_t size;
	int64_t mtime_ns, ctime_ns;
};

struct lb_tls;
struct lb_cert;
static size_t tls_pick_cert(const struct lb_tls *t, const char *sni);

static char *file_read(const char *path, size_t max, size_t *len, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0) {
		snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > max) {
		snprintf(err, errlen, "%s: not a regular file of at most %zu bytes", path, max);
		close(fd);
		return NULL;
	}
	char *b = malloc((size_t)st.st_size + 1);
	size_t got = 0;
	while (b && got < (size_t)st.st_size) {
		ssize_t r = read(fd, b + got, (size_t)st.st_size - got);
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	if (!b || got != (size_t)st.st_size) {
		snprintf(err, errlen, "cannot read %s", path);
		free(b);
		return NULL;
	}
	b[got] = 0;
	*len = got;
	return b;
}

/* what tells a changed file: taken before it is read, so a change during the read shows */
static void file_sig_of(const char *path, struct file_sig *s)
{
	struct stat st;
	memset(s, 0, sizeof *s);
	if (stat(path, &st) != 0)
		return;
	s->dev = st.st_dev, s->ino = st.st_ino, s->size = st.st_size;
	s->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
	s->ctime_ns = (int64_t)st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec;
}

static int file_sig_eq(const struct file_sig *a, const struct file_sig *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size && a->mtime_ns == b->mtime_ns &&
	       a->ctime_ns == b->ctime_ns;
}

/* -------------------------------------------------------------------- shared session cache, counters */

#define TLS_F_N LB_TLS_F_N
static const char *const tls_fail_kind[TLS_F_N] = {
	[LB_TLS_F_PROTOCOL_VERSION] = "protocol_version", [LB_TLS_F_NO_SHARED_CIPHER] = "no_shared_cipher",
	[LB_TLS_F_BAD_RECORD] = "bad_record", [LB_TLS_F_PROTOCOL] = "protocol", [LB_TLS_F_ALERT] = "alert",
	[LB_TLS_F_CLIENT_CERT] = "client_cert", [LB_TLS_F_TIMEOUT] = "timeout", [LB_TLS_F_CLOSED] = "closed",
};

const char *lb_tls_fail_name(int reason)
{
	return reason >= 0 && reason < TLS_F_N ? tls_fail_kind[reason] : "?";
}

/* Counters every worker adds to (lb_tls_* metrics), made by the master before any fork. */
#define TLS_SUITES_N 10
struct tls_shared {
	uint32_t entries;             /* capacity of the session-ID cache (BearSSL) */
	_Atomic uint64_t handshakes, resumed, lookups, hits, failures[TLS_F_N];
	_Atomic uint64_t by_suite[TLS_SUITES_N]; /* handshakes by version and cipher suite (tls_suite_label) */
	_Atomic uint64_t resumed_ticket, resumed_id;
};

/* ---- struct lb_shared SHM: the shared mappings (gathered by gather_globals.py)
 * Owner: section 12 (shm_*, rl_*, ipc_*, the admin API's requests and history) with 7 (the TLS
 * session cache) and 11 (the event ring). The master maps them all before it forks and on reload;
 * workers inherit the pointers and write only their own column and the counters. The master's
 * name indexes (snames, rnames, lnames) are unused in a worker. The fuzzer maps them once and
 * zeroes the server slots and the rate-limit sets before each input (reset_worker).
 */
static struct lb_shared {
	struct tls_shared *tls;
	struct lb_events *events;
	struct lb_shm *seg;
	struct name_index snames, rnames, lnames; /* the master's: slot by name */
	struct req_set *reqs;
	struct rl_set *rl;
	size_t rl_sets;
	struct ipc_set *ipc;
	struct lb_history *hist;
	struct tls_cache *tls_cache;
	struct tls_tickets *tickets;
	struct tls_sids *sids;
} SHM;

/* The handshakes-by-suite label of a negotiated version + cipher suite (IANA names). */
static const char *const tls_suite_labels[TLS_SUITES_N][2] = {
	{ "TLSv1.2", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" }, { "TLSv1.2", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" },
	{ "TLSv1.2", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" }, { "TLSv1.2", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" },
	{ "TLSv1.2", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" }, { "TLSv1.2", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" },
	{ "TLSv1.3", "TLS_AES_128_GCM_SHA256" }, { "TLSv1.3", "TLS_AES_256_GCM_SHA384" },
	{ "TLSv1.3", "TLS_CHACHA20_POLY1305_SHA256" }, { "other", "other" },
};
static const uint16_t tls_suite_ids[TLS_SUITES_N - 1] = { 0xC02B, 0xC02C, 0xCCA9, 0xC02F, 0xC030, 0xCCA8, 0x1301, 0x1302, 0x1303 };

/* a completed handshake: counted by suite, and by kind of resumption (ticket: 1, session ID: 2) */
static void tls_count_handshake(uint16_t suite, int resumed)
{
	if (!SHM.tls)
		return;
	size_t i = 0;
	while (i < TLS_SUITES_N - 1 && tls_suite_ids[i] != suite)
		i++;
	atomic_fetch_add_explicit(&SHM.tls->handshakes, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&SHM.tls->by_suite[i], 1, memory_order_relaxed);
	if (resumed)
		atomic_fetch_add_explicit(&SHM.tls->resumed, 1, memory_order_relaxed);
	if (resumed == 1)
		atomic_fetch_add_explicit(&SHM.tls->resumed_ticket, 1, memory_order_relaxed);
	if (resumed == 2)
		atomic_fetch_add_explicit(&SHM.tls->resumed_id, 1, memory_order_relaxed);
}

static void tls_count_failure(int kind)
{
	if (SHM.tls)
		atomic_fetch_add_explicit(&SHM.tls->failures[kind], 1, memory_order_relaxed);
}

/* One name element of a client's subject appended to "CN=..,O=..", escaped to be safe in a header. */
static size_t tls_subject_add(char *subject, size_t cap, size_t w, const char *key, const char *val)
{
	if (w + 3 >= cap)
		return w;
	w += (size_t)snprintf(subject + w, cap - w, "%s%s=", w ? "," : "", key);
	for (const char *p = val; *p && w + 3 < cap; p++) {
		unsigned char ch = (unsigned char)*p;
		if (ch == ',' || ch == '\\' || ch == '+' || ch == '=')
			subject[w++] = '\\';
		subject[w++] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
	}
	subject[w] = 0;
	return w;
}

/* -------------------------------------------------------------------- entropy for each engine
 * BearSSL 0.6 seeds an engine's HMAC-DRBG once, at reset, from one system source: RDRAND alone
 * on x86. Every engine lb makes also gets LB_TLS_ENTROPY bytes from the kernel before its reset,
 * so its keys and randoms never rest on one CPU instruction; an engine that cannot get them is
 * not used (the connection or check fails, said in the error log). */

#define LB_TLS_ENTROPY 32

int lb_urandom_entropy(void *out, size_t n)
{
	unsigned char *p = out;
	size_t got = 0;
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	while (fd >= 0 && got < n) {
		ssize_t r = read(fd, p + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	int e = errno;
	if (fd >= 0)
		close(fd);
	errno = e;
	return got == n ? 0 : -1;
}

int lb_os_entropy(void *out, size_t n)
{
	unsigned char *p = out;
	size_t got = 0;
	while (got < n) {
		ssize_t r = getrandom(p + got, n - got, 0); /* blocks only until the kernel's pool is ready */
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break; /* ENOSYS (an old kernel), EPERM (a seccomp filter) */
		got += (size_t)r;
	}
	return got == n ? 0 : lb_urandom_entropy(out, n);
}

/* -------------------------------------------------------------------- why a handshake failed */

static const char *tls_alert_name(int a)
{
	switch (a) {
	case 0: return "close_notify";
	case 10: return "unexpected_message";
	case 20: return "bad_record_mac";
	case 22: return "record_overflow";
	case 40: return "handshake_failure";
	case 42: return "bad_certificate";
	case 43: return "unsupported_certificate";
	case 44: return "certificate_revoked";
	case 45: return "certificate_expired";
	case 46: return "certificate_unknown";
	case 47: return "illegal_parameter";
	case 48: return "unknown_ca";
	case 49: return "access_denied";
	case 50: return "decode_error";
	case 51: return "decrypt_error";
	case 70: return "protocol_version";
	case 71: return "insufficient_security";
	case 80: return "internal_error";
	case 86: return "inappropriate_fallback";
	case 90: return "user_canceled";
	case 109: return "missing_extension";
	case 110: return "unsupported_extension";
	case 112: return "unrecognized_name";
	case 116: return "certificate_required";
	case 120: return "no_application_protocol";
	}
	return "unknown alert";
}

/* BearSSL reports an alert it sent as LB_TLS_ERR_SEND_FATAL_ALERT + the alert (70: the client's
 * version is too old, 40: nothing in common, 86: a downgrade), one it received as
 * LB_TLS_ERR_RECV_FATAL_ALERT + the alert, a client certificate that does not validate as its
 * LB_TLS_ERR_X509_* code (32..63), other errors as LB_TLS_ERR_* (< 32). */
static int tls_fail_alert(int err, int no_common_curve, char *text, size_t cap)
{
	int a = err & 255;
	if (err >= LB_TLS_ERR_SEND_FATAL_ALERT) {
		if (a == 70 || a == 86) {
			snprintf(text, cap, "the client does not offer " LB_TLS_VERSIONS " (lb sent alert %d %s)", a, tls_alert_name(a));
			return LB_TLS_F_PROTOCOL_VERSION;
		}
		if (a == 40) {
			snprintf(text, cap, "%s (lb sent alert 40 handshake_failure)", no_common_curve
			         ? "no elliptic curve in common (lb offers X25519, P-256, P-384, P-521)"
			         : "no cipher suite in common (lb offers " LB_TLS_VERSIONS " ECDHE with AES-GCM or ChaCha20-Poly1305 only"
			           LB_TLS_NO_13 ")");
			return LB_TLS_F_NO_SHARED_CIPHER;
		}
		snprintf(text, cap, "lb sent fatal alert %d (%s)", a, tls_alert_name(a));
		return LB_TLS_F_PROTOCOL;
	}
	snprintf(text, cap, "the client sent fatal alert %d (%s%s)", a, tls_alert_name(a),
	         a == 48 ? ": it does not trust lb's certificate or its CA"
	         : a == 42 || a == 46 ? ": it rejects lb's certificate"
	         : a == 45 ? ": it finds lb's certificate expired" : "");
	return a == 70 ? LB_TLS_F_PROTOCOL_VERSION : LB_TLS_F_ALERT;
}

static const char *tls_x509_text(int err)
{
	switch (err) {
	case LB_TLS_ERR_NO_CLIENT_AUTH: return "no client certificate";
	case LB_TLS_ERR_X509_NOT_TRUSTED: return "client certificate not signed by client_ca";
	case LB_TLS_ERR_X509_EXPIRED: return "client certificate expired or not yet valid";
	case LB_TLS_ERR_X509_EMPTY_CHAIN: return "no client certificate (an empty chain)";
	case LB_TLS_ERR_X509_FORBIDDEN_KEY_USAGE: return "client certificate not for client authentication";
	case LB_TLS_ERR_BAD_SIGNATURE: return "bad CertificateVerify signature: the client does not hold its certificate's key";
	case LB_TLS_ERR_WRONG_KEY_USAGE: return "client certificate key not for signing";
	}
	return NULL;
}

int lb_tls_fail_classify(int err, int client_ca, int no_common_curve, char *text, size_t cap)
{
	if (err >= LB_TLS_ERR_RECV_FATAL_ALERT && err < LB_TLS_ERR_SEND_FATAL_ALERT + 256)
		return tls_fail_alert(err, no_common_curve, text, cap);
	int x509 = err >= LB_TLS_ERR_X509_OK && err < LB_TLS_ERR_RECV_FATAL_ALERT;
	if (client_ca && (x509 || tls_x509_text(err))) {
		const char *t = tls_x509_text(err);
		if (t)
			snprintf(text, cap, "%s", t);
		else
			snprintf(text, cap, "client certificate rejected (" LB_TLS_LIB " X.509 error %d)", err);
		return LB_TLS_F_CLIENT_CERT;
	}
	const char *t = NULL;
	int kind = LB_TLS_F_PROTOCOL;
	switch (err) {
	case LB_TLS_ERR_UNSUPPORTED_VERSION: /* a record header whose version is not 3.x */
		t = "not a TLS client (record header not TLS: plain HTTP, SSLv2 or garbage)", kind = LB_TLS_F_BAD_RECORD;
		break;
	case LB_TLS_ERR_BAD_VERSION: case LB_TLS_ERR_BAD_LENGTH: case LB_TLS_ERR_UNKNOWN_TYPE:
		t = "bad record header (version, length or type)", kind = LB_TLS_F_BAD_RECORD;
		break;
	case LB_TLS_ERR_BAD_MAC: t = "bad record MAC", kind = LB_TLS_F_BAD_RECORD; break;
	case LB_TLS_ERR_TOO_LARGE: t = "record too large", kind = LB_TLS_F_BAD_RECORD; break;
	case LB_TLS_ERR_BAD_HANDSHAKE: case LB_TLS_ERR_UNEXPECTED: t = "malformed or unexpected handshake message"; break;
	case LB_TLS_ERR_BAD_SNI: t = "malformed server name (SNI)"; break;
	case LB_TLS_ERR_BAD_SIGNATURE: t = "bad signature from the client"; break;
	case LB_TLS_ERR_BAD_FINISHED: t = "bad Finished message"; break;
	case LB_TLS_ERR_LIMIT_EXCEEDED: t = "handshake message above " LB_TLS_LIB "'s limits"; break;
	case LB_TLS_ERR_NO_RANDOM: t = "the TLS engine had no entropy (lb's fault, not the client's)"; break;
	}
	if (t)
		snprintf(text, cap, "%s", t);
	else if (x509)
		snprintf(text, cap, LB_TLS_LIB " X.509 error %d on a listener without client_ca", err);
	else
		snprintf(text, cap, LB_TLS_LIB " error %d", err);
	return kind;
}

static int host_is_name(const char *h)
{
	int alpha = 0;
	for (; *h; h++) {
		if (*h == ':')
			return 0; /* an IPv6 literal */
		alpha |= isalpha((unsigned char)*h);
	}
	return alpha;
}

/* The engine settings towards servers: TLS 1.2, the same suites as towards clients, the CAs
 * tas, ALPN http/1.1, and the kernel's entropy. 0, or -1: no entropy, not to be used. */
static const char *tls_up_error_text(int err)
{
	static char b[96];
	if (err >= LB_TLS_ERR_SEND_FATAL_ALERT)
		err -= LB_TLS_ERR_SEND_FATAL_ALERT;
	if (err >= LB_TLS_ERR_RECV_FATAL_ALERT) {
		snprintf(b, sizeof b, "the server sent fatal alert %d", err - LB_TLS_ERR_RECV_FATAL_ALERT);
		return b;
	}
	switch (err) {
	case LB_TLS_ERR_X509_NOT_TRUSTED: return "its certificate is not signed by a CA of tls_ca";
	case LB_TLS_ERR_X509_BAD_SERVER_NAME: return "its certificate does not name the host (tls_sni)";
	case LB_TLS_ERR_X509_EXPIRED: return "its certificate expired or is not yet valid";
	case LB_TLS_ERR_UNSUPPORTED_VERSION: return "it does not speak " LB_TLS_VERSIONS;
	case LB_TLS_ERR_BAD_CIPHER_SUITE: return "no common cipher suite (ECDHE with AES-GCM or ChaCha20)";
	case LB_TLS_ERR_BAD_VERSION: case LB_TLS_ERR_BAD_LENGTH: case LB_TLS_ERR_UNKNOWN_TYPE: return "it does not speak TLS";
	}
	snprintf(b, sizeof b, LB_TLS_LIB " error %d", err);
	return b;
}

#ifndef LB_TLS_OPENSSL
/* -------------------------------------------------------------------- BearSSL
 * lb's TLS error codes are BearSSL's own. */
_Static_assert(LB_TLS_ERR_OK == BR_ERR_OK, "BearSSL error code");
_Static_assert(LB_TLS_ERR_UNSUPPORTED_VERSION == BR_ERR_UNSUPPORTED_VERSION, "BearSSL error code");
_Static_assert(LB_TLS_ERR_BAD_VERSION == BR_ERR_BAD_VERSION, "BearSSL error code");
_Static_assert(LB_TLS_ERR_BAD_LENGTH == BR_ERR_BAD_LENGTH, "BearSSL error code");
_Static_assert(LB_TLS_ERR_TOO_LARGE == BR_ERR_TOO_LARGE, "BearSSL error code");
_Static_assert(LB_TLS_ERR_BAD_MAC == BR_ERR_BAD_MAC, "BearSSL error code");
_Static_assert(LB_TLS_ERR_NO_RANDOM == BR_ERR_NO_RANDOM, "BearSSL error code");
_Static_assert(LB_TLS_ERR_UNKNOWN_TYPE == BR_ERR_UNKNOWN_TYPE, "BearSSL error code");
_Static_assert(LB_TLS_ERR_UNEXPECTED == BR_ERR_UNEXPECTED, "BearSSL error code");
_Static_assert(LB_TLS_ERR_BAD_HANDSHAKE == BR_ERR_BAD_HANDSHAKE, "BearSSL error code");
_Static_assert(LB_TLS_ERR_BAD_CIPHER_SUITE == BR_ERR_BAD_CIPHER_SUITE, "BearSSL error code");
_Static_assert(LB_TLS_ERR_BAD_SNI == BR_ERR_BAD_SNI, "BearSSL error code");
_Static_assert(LB_TLS_ERR_LIMIT_EXCEEDED == BR_ERR_LIMIT_EXCEEDED, "BearSSL error code");
_Static_assert(LB_TLS_ERR_BAD_FINISHED == BR_ERR_BAD_FINISHED, "BearSSL error code");
_Static_assert(LB_TLS_ERR_BAD_SIGNATURE == BR_ERR_BAD_SIGNATURE, "BearSSL error code");
_Static_assert(LB_TLS_ERR_WRONG_KEY_USAGE == BR_ERR_WRONG_KEY_USAGE, "BearSSL error code");
_Static_assert(LB_TLS_ERR_NO_CLIENT_AUTH == BR_ERR_NO_CLIENT_AUTH, "BearSSL error code");
_Static_assert(LB_TLS_ERR_X509_OK == BR_ERR_X509_OK, "BearSSL error code");
_Static_assert(LB_TLS_ERR_X509_EMPTY_CHAIN == BR_ERR_X509_EMPTY_CHAIN, "BearSSL error code");
_Static_assert(LB_TLS_ERR_X509_EXPIRED == BR_ERR_X509_EXPIRED, "BearSSL error code");
_Static_assert(LB_TLS_ERR_X509_BAD_SERVER_NAME == BR_ERR_X509_BAD_SERVER_NAME, "BearSSL error code");
_Static_assert(LB_TLS_ERR_X509_FORBIDDEN_KEY_USAGE == BR_ERR_X509_FORBIDDEN_KEY_USAGE, "BearSSL error code");
_Static_assert(LB_TLS_ERR_X509_NOT_TRUSTED == BR_ERR_X509_NOT_TRUSTED, "BearSSL error code");
_Static_assert(LB_TLS_ERR_RECV_FATAL_ALERT == BR_ERR_RECV_FATAL_ALERT, "BearSSL error code");
_Static_assert(LB_TLS_ERR_SEND_FATAL_ALERT == BR_ERR_SEND_FATAL_ALERT, "BearSSL error code");

static const uint16_t tls_suites[] = {
	BR_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	BR_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	BR_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	BR_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	BR_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	BR_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
};
#define LB_TLS_CACHE_ENTRY 100 /* bytes per session in BearSSL's LRU cache */

struct lb_cert {
	const char *file;
	int line;
	br_x509_certificate chain[8];
	size_t nchain;
	int key_type;                 /* BR_KEYTYPE_EC or BR_KEYTYPE_RSA */
	br_ec_private_key ec;
	br_rsa_private_key rsa;
	unsigned char *keymem;
	struct lb_x509_info info;     /* of the leaf: names for SNI, expiry, serial */
};

struct lb_tls {
	struct lb_cert certs[LB_MAX_CERTS];
	size_t ncerts;
	struct file_sig sig[2 * LB_MAX_CERTS + 1]; /* of the files as loaded: certs, client_ca, ocsp */
	br_x509_trust_anchor *tas;    /* client_ca, or the CAs that sign servers' certificates */
	size_t ntas, cap_tas;
	unsigned char **blobs;        /* everything above points into these */
	size_t nblobs, cap_blobs;
};

static void tls_free(struct lb_tls *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->nblobs; i++)
		free(t->blobs[i]);
	free(t->blobs);
	free(t->tas);
	free(t);
}

/* b (malloc'ed) now belongs to t, freed with it; NULL (b freed) when that cannot be recorded */
static unsigned char *tls_own(struct lb_tls *t, unsigned char *b)
{
	if (b && t->nblobs == t->cap_blobs) {
		size_t cap = t->cap_blobs * 2 + 16;
		unsigned char **nb = realloc(t->blobs, cap * sizeof *nb);
		if (!nb) {
			free(b);
			return NULL;
		}
		t->blobs = nb, t->cap_blobs = cap;
	}
	if (b)
		t->blobs[t->nblobs++] = b;
	return b;
}

/* a copy of p that belongs to t */
static unsigned char *tls_keep(struct lb_tls *t, const void *p, size_t n)
{
	unsigned char *b = malloc(n ? n : 1);
	if (b)
		memcpy(b, p, n);
	return tls_own(t, b);
}

/* -------------------------------------------------------------------- loading PEM files */

struct pem_obj {
	char name[64];
	unsigned char *der;
	size_t len, cap;
};

static void pem_append(void *ctx, const void *buf, size_t len)
{
	struct pem_obj *o = ctx;
	if (!o->der && o->cap)
		return; /* out of memory earlier */
	if (o->len + len > o->cap) {
		size_t cap = (o->len + len) * 2 + 256;
		unsigned char *d = realloc(o->der, cap);
		if (!d) {
			free(o->der);
			o->der = NULL;
			o->cap = 1;
			return;
		}
		o->der = d, o->cap = cap;
	}
	memcpy(o->der + o->len, buf, len);
	o->len += len;
}

static void pem_free(struct pem_obj *objs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(objs[i].der);
}

/* The PEM objects of text (at most max). Returns how many, or -1 with err set. */
static int pem_decode(const char *text, size_t n, struct pem_obj *objs, size_t max, char *err, size_t errlen)
{
	br_pem_decoder_context pc;
	br_pem_decoder_init(&pc);
	size_t k = 0;
	int inobj = 0, extra_nl = 1;
	while (n > 0 || extra_nl) {
		if (n == 0) { /* a final newline flushes a last line without one */
			text = "\n", n = 1, extra_nl = 0;
		}
		size_t used = br_pem_decoder_push(&pc, text, n);
		text += used, n -= used;
		switch (br_pem_decoder_event(&pc)) {
		case BR_PEM_BEGIN_OBJ:
			if (k >= max) {
				snprintf(err, errlen, "more than %zu PEM objects", max);
				return -1;
			}
			memset(&objs[k], 0, sizeof objs[k]);
			snprintf(objs[k].name, sizeof objs[k].name, "%.63s", br_pem_decoder_name(&pc));
			br_pem_decoder_setdest(&pc, pem_append, &objs[k]);
			inobj = 1;
			break;
		case BR_PEM_END_OBJ:
			if (inobj && !objs[k].der) {
				snprintf(err, errlen, "out of memory or empty PEM object");
				return -1;
			}
			k += inobj;
			inobj = 0;
			break;
		case BR_PEM_ERROR:
			snprintf(err, errlen, "invalid PEM");
			return -1;
		}
	}
	if (inobj) {
		free(objs[k].der);
		snprintf(err, errlen, "unterminated PEM object (no END line)");
		return -1;
	}
	return (int)k;
}

/* the private key in der, copied into t */
static int cert_take_key(struct lb_tls *t, struct lb_cert *c, const unsigned char *der, size_t len, char *err, size_t errlen)
{
	br_skey_decoder_context dc;
	br_skey_decoder_init(&dc);
	br_skey_decoder_push(&dc, der, len);
	int e = br_skey_decoder_last_error(&dc);
	if (e != 0) {
		snprintf(err, errlen, "private key not understood (BearSSL error %d)", e);
		return -1;
	}
	c->key_type = br_skey_decoder_key_type(&dc);
	if (c->key_type == BR_KEYTYPE_EC) {
		const br_ec_private_key *k = br_skey_decoder_get_ec(&dc);
		if (k->curve != BR_EC_secp256r1 && k->curve != BR_EC_secp384r1 && k->curve != BR_EC_secp521r1) {
			snprintf(err, errlen, "EC key on an unsupported curve (use P-256 or P-384)");
			return -1;
		}
		c->ec = *k;
		return (c->ec.x = tls_keep(t, k->x, k->xlen)) ? 0 : -1;
	}
	const br_rsa_private_key *k = br_skey_decoder_get_rsa(&dc);
	if (k->n_bitlen < 2048) {
		snprintf(err, errlen, "RSA key of %u bits: at least 2048 are required", k->n_bitlen);
		return -1;
	}
	unsigned char *w = tls_own(t, malloc(k->plen + k->qlen + k->dplen + k->dqlen + k->iqlen));
	if (!w) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	c->rsa = *k;
	memcpy(w, k->p, k->plen), c->rsa.p = w, w += k->plen;
	memcpy(w, k->q, k->qlen), c->rsa.q = w, w += k->qlen;
	memcpy(w, k->dp, k->dplen), c->rsa.dp = w, w += k->dplen;
	memcpy(w, k->dq, k->dqlen), c->rsa.dq = w, w += k->dqlen;
	memcpy(w, k->iq, k->iqlen), c->rsa.iq = w;
	return 0;
}

static int same_bytes(const unsigned char *a, size_t an, const unsigned char *b, size_t bn)
{
	while (an && !*a)
		a++, an--;
	while (bn && !*b)
		b++, bn--;
	return an == bn && !memcmp(a, b, an);
}

/* the leaf's public key must be the private key's: a renewal that wrote a new certificate
 * but not yet its key is refused, not served */
static int cert_key_matches(const struct lb_cert *c, char *err, size_t errlen)
{
	br_x509_decoder_context dc;
	br_x509_decoder_init(&dc, NULL, NULL);
	br_x509_decoder_push(&dc, c->chain[0].data, c->chain[0].data_len);
	const br_x509_pkey *pk = br_x509_decoder_get_pkey(&dc);
	int ok = 0;
	if (!pk) {
		snprintf(err, errlen, "the first certificate cannot be decoded (BearSSL error %d)", br_x509_decoder_last_error(&dc));
		return -1;
	}
	if (pk->key_type == BR_KEYTYPE_EC && c->key_type == BR_KEYTYPE_EC) {
		unsigned char q[BR_EC_KBUF_PUB_MAX_SIZE];
		br_ec_public_key pub;
		size_t n = br_ec_compute_pub(br_ec_get_default(), &pub, q, &c->ec);
		ok = n && pub.curve == pk->key.ec.curve && same_bytes(q, n, pk->key.ec.q, pk->key.ec.qlen);
	} else if (pk->key_type == BR_KEYTYPE_RSA && c->key_type == BR_KEYTYPE_RSA) {
		unsigned char nb[1024];
		size_t n = (c->rsa.n_bitlen + 7) / 8;
		ok = n <= sizeof nb && br_rsa_compute_modulus_get_default()(nb, &c->rsa) == n &&
		     same_bytes(nb, n, pk->key.rsa.n, pk->key.rsa.nlen);
	}
	if (!ok)
		snprintf(err, errlen, "the private key does not belong to the first certificate");
	return ok ? 0 : -1;
}

/* Certificates (leaf first) and one private key, in any order, from PEM text. */
static int cert_parse(struct lb_tls *t, struct lb_cert *c, const char *text, size_t len, char *err, size_t errlen)
{
	struct pem_obj objs[12];
	int n = pem_decode(text, len, objs, 12, err, errlen);
	if (n < 0)
		return -1;
	int rc = 0, keys = 0;
	for (int i = 0; i < n && rc == 0; i++) {
		if (!strcmp(objs[i].name, "CERTIFICATE") || !strcmp(objs[i].name, "X509 CERTIFICATE")) {
			if (c->nchain >= sizeof c->chain / sizeof *c->chain) {
				snprintf(err, errlen, "more than %zu certificates in the chain", sizeof c->chain / sizeof *c->chain);
				rc = -1;
			} else if (!(c->chain[c->nchain].data = tls_keep(t, objs[i].der, objs[i].len))) {
				snprintf(err, errlen, "out of memory");
				rc = -1;
			} else {
				c->chain[c->nchain++].data_len = objs[i].len;
			}
		} else if (strstr(objs[i].name, "PRIVATE KEY")) {
			rc = keys++ ? (snprintf(err, errlen, "more than one private key"), -1)
			            : cert_take_key(t, c, objs[i].der, objs[i].len, err, errlen);
		}
	}
	pem_free(objs, (size_t)(n > 0 ? n : 0));
	if (rc == 0 && !c->nchain)
		snprintf(err, errlen, "no CERTIFICATE in the file"), rc = -1;
	if (rc == 0 && !keys)
		snprintf(err, errlen, "no PRIVATE KEY in the file (put the key after the chain)"), rc = -1;
	if (rc == 0 && lb_x509_info(c->chain[0].data, c->chain[0].data_len, &c->info) != 0)
		snprintf(err, errlen, "first certificate: %s", c->info.error), rc = -1;
	if (rc == 0 && c->info.nnames == 0)
		snprintf(err, errlen, "the first certificate names no host (no subjectAltName DNS name, no CN)"), rc = -1;
	if (rc == 0)
		rc = cert_key_matches(c, err, errlen);
	return rc;
}

/* One cert = FILE. */
static int cert_load(struct lb_tls *t, struct lb_cert *c, const char *file, char *err, size_t errlen)
{
	size_t len;
	char *text = file_read(file, 1 << 20, &len, err, errlen);
	if (!text)
		return -1;
	int rc = cert_parse(t, c, text, len, err, errlen);
	free(text);
	c->file = file;
	return rc;
}

/* client_ca: every certificate in the file becomes a trust anchor */
static int ca_load(struct lb_tls *t, const char *file, char *err, size_t errlen)
{
	size_t len;
	char *text = file_read(file, 4 << 20, &len, err, errlen);
	if (!text)
		return -1;
	enum { MAX_CAS = 1024 }; /* Debian's whole ca-certificates bundle is about 150 */
	struct pem_obj *objs = calloc(MAX_CAS, sizeof *objs);
	t->tas = calloc(MAX_CAS, sizeof *t->tas);
	int n = objs && t->tas ? pem_decode(text, len, objs, MAX_CAS, err, errlen) : -1;
	free(text);
	if (n < 0) {
		free(objs);
		return -1;
	}
	t->cap_tas = MAX_CAS;
	int rc = 0;
	for (int i = 0; i < n && rc == 0; i++) {
		if (strcmp(objs[i].name, "CERTIFICATE") && strcmp(objs[i].name, "X509 CERTIFICATE"))
			continue;
		struct pem_obj dn;
		memset(&dn, 0, sizeof dn);
		br_x509_decoder_context dc;
		br_x509_decoder_init(&dc, pem_append, &dn);
		br_x509_decoder_push(&dc, objs[i].der, objs[i].len);
		const br_x509_pkey *pk = br_x509_decoder_get_pkey(&dc);
		br_x509_trust_anchor *ta = &t->tas[t->ntas];
		if (!pk || !dn.der) {
			snprintf(err, errlen, "certificate %d cannot be decoded (BearSSL error %d)", i + 1, br_x509_decoder_last_error(&dc));
			rc = -1;
		} else if (t->ntas >= t->cap_tas) {
			snprintf(err, errlen, "more than %zu CA certificates", t->cap_tas);
			rc = -1;
		} else {
			memset(ta, 0, sizeof *ta);
			ta->dn.data = tls_keep(t, dn.der, dn.len);
			ta->dn.len = dn.len;
			ta->flags = br_x509_decoder_isCA(&dc) ? BR_X509_TA_CA : 0;
			ta->pkey = *pk;
			if (pk->key_type == BR_KEYTYPE_RSA) {
				ta->pkey.key.rsa.n = tls_keep(t, pk->key.rsa.n, pk->key.rsa.nlen);
				ta->pkey.key.rsa.e = tls_keep(t, pk->key.rsa.e, pk->key.rsa.elen);
				rc = ta->dn.data && ta->pkey.key.rsa.n && ta->pkey.key.rsa.e ? 0 : -1;
			} else {
				ta->pkey.key.ec.q = tls_keep(t, pk->key.ec.q, pk->key.ec.qlen);
				rc = ta->dn.data && ta->pkey.key.ec.q ? 0 : -1;
			}
			if (rc)
				snprintf(err, errlen, "out of memory");
			else
				t->ntas++;
		}
		free(dn.der);
	}
	pem_free(objs, (size_t)n);
	free(objs);
	if (rc == 0 && !t->ntas)
		snprintf(err, errlen, "no CERTIFICATE in the file"), rc = -1;
	return rc;
}

/* nothing more to prepare once a listener's or pool's files are loaded */
static int tls_listener_ready(struct lb_tls *t, const struct lb_listener *l, char *err, size_t errlen)
{
	LB_UNUSED(t), LB_UNUSED(l), LB_UNUSED(err), LB_UNUSED(errlen);
	return 0;
}

static int tls_pool_ready(struct lb_tls *t, char *err, size_t errlen)
{
	LB_UNUSED(t), LB_UNUSED(err), LB_UNUSED(errlen);
	return 0;
}

/* no OCSP stapling in BearSSL 0.6 */
static int tls_ocsp_load(struct lb_cert *c, const char *file, char *err, size_t errlen)
{
	LB_UNUSED(c);
	snprintf(err, errlen, "ocsp %s: BearSSL has no OCSP stapling: build lb with OpenSSL (make TLS=openssl) to use it", file);
	return -1;
}

static int64_t tls_ocsp_this_update(const struct lb_cert *c) { LB_UNUSED(c); return 0; }

/* no session tickets in BearSSL 0.6 (lb_conf_resolve refuses tls_ticket_keys) */
static void tls_tickets_tick(const struct lb_conf *c) { LB_UNUSED(c); }

static int tls_ticket_file(const char *path, void *k, char *err, size_t errlen)
{
	LB_UNUSED(path), LB_UNUSED(k);
	snprintf(err, errlen, "BearSSL has no session tickets: build lb with OpenSSL (make TLS=openssl) to use them");
	return -1;
}

/* -------------------------------------------------------------------- the shared session cache */

struct tls_cache {
	_Atomic uint32_t lock;
	br_ssl_session_cache_lru lru;
	unsigned char store[];
};

/* Made once by the master, before any fork: every worker of every generation shares it,
 * so a client resumes whichever worker accepts its next connection. */
static int tls_cache_create(unsigned entries)
{
	size_t store = (size_t)entries * LB_TLS_CACHE_ENTRY;
	if (!(SHM.tls_cache = shm_map(sizeof *SHM.tls_cache + store, "TLS session cache")))
		return -1;
	br_ssl_session_cache_lru_init(&SHM.tls_cache->lru, SHM.tls_cache->store, store);
	return 0;
}

struct tls_conn;
static struct tls_conn *tls_of_server(const br_ssl_server_context *sc);

static void tls_cache_save(const br_ssl_session_cache_class **ctx, br_ssl_server_context *sc,
                           const br_ssl_session_parameters *params)
{
	LB_UNUSED(ctx);
	spin_lock(&SHM.tls_cache->lock);
	SHM.tls_cache->lru.vtable->save(&SHM.tls_cache->lru.vtable, sc, params);
	spin_unlock(&SHM.tls_cache->lock);
}

static int tls_cache_load(const br_ssl_session_cache_class **ctx, br_ssl_server_context *sc,
                          br_ssl_session_parameters *params);

static const br_ssl_session_cache_class tls_cache_class = {
	sizeof(const br_ssl_session_cache_class *), tls_cache_save, tls_cache_load,
};
static const br_ssl_session_cache_class *tls_cache_vt = &tls_cache_class;

/* -------------------------------------------------------------------- the per-connection engine */

static const unsigned char tls_oid_cn[] = { 3, 0x55, 0x04, 0x03 }, tls_oid_ou[] = { 3, 0x55, 0x04, 0x0b },
                           tls_oid_o[] = { 3, 0x55, 0x04, 0x0a }, tls_oid_c[] = { 3, 0x55, 0x04, 0x06 };
static const unsigned char *const tls_oids[] = { tls_oid_cn, tls_oid_ou, tls_oid_o, tls_oid_c };
static const char *const tls_oid_names[] = { "CN", "OU", "O", "C" };
#define TLS_NAMES 4

/* What the pump needs of either side's engine: the server engine of a client connection, or
 * the client engine of a server connection (server ... tls). */
struct tls_io {
	br_ssl_engine_context *eng;
	struct tls_conn *srv;                     /* the server side's, to note the handshake's end */
	unsigned char *pre;                       /* bytes to feed before the socket's; NULL: none */
	uint16_t pre_s, pre_e, pre_cap;
	int got_bytes, err;
};

struct tls_client_auth {
	br_x509_minimal_context xc;
	br_name_element ne[TLS_NAMES];
	char nebuf[TLS_NAMES][80];
};

struct tls_conn {
	struct tls_io io;
	br_ssl_server_context sc;
	const br_ssl_server_policy_class *policy; /* our SNI policy; &policy is its context */
	const struct lb_tls *t;
	size_t cert;                              /* chosen by SNI */
	int hs_done, resumed;
	struct tls_client_auth *ca;               /* with client_ca only: the client's chain checked */
	char subject[TLS_SUBJECT_MAX];            /* "CN=..,O=..": the verified client's */
	unsigned char *iobuf;                     /* the engine's record buffer, then io.pre's LB_PROXY_V2_MAX
	                                           * bytes (read ahead); NULL: parked (tls_park) */
	size_t obuf_off, hbuf_off[3];             /* parked: where BearSSL's pointers were, from iobuf */
};

/* Engines (~9 KB each, their record buffers apart) kept for reuse, at most TLS_FREE_KEEP; the
 * rest go back to the allocator. The link lives in the first bytes of a free engine, as in the
 * buffer pool. */
#define TLS_FREE_KEEP 64
struct tls_free_list {
	void *head;
	size_t n;
};

/* ---- struct lb_tls_pools TLS: pooled TLS engines (gathered by gather_globals.py)
 * Owner: section 7 (tls_take/tls_give: the server engines of tls_conn_new, the client engines of
 * tls_up_new). Worker only: empty in the master, so a fork inherits empty lists. Kept across fuzz
 * inputs (a pool).
 */
static struct lb_tls_pools {
	struct tls_free_list free_tls, free_up;
	struct lb_pages iobufs; /* client engines' record buffers (BR_SSL_BUFSIZE_BIDI), lent while in use */
} TLS;

static int tls_worker_setup(size_t max_conns)
{
	return pages_init(&TLS.iobufs, BR_SSL_BUFSIZE_BIDI + LB_PROXY_V2_MAX, max_conns + 64, 16);
}

static void tls_trim(void) { pages_trim(&TLS.iobufs); }

static void *tls_take(struct tls_free_list *l, size_t size)
{
	void *p = l->head;
	if (!p)
		return malloc(size);
	memcpy(&l->head, p, sizeof l->head);
	l->n--;
	return p;
}

static void tls_give(struct tls_free_list *l, void *p)
{
	if (!p)
		return;
	if (l->n >= TLS_FREE_KEEP) {
		free(p);
		return;
	}
	memcpy(p, &l->head, sizeof l->head);
	l->head = p;
	l->n++;
}

static struct tls_conn *tls_of_server(const br_ssl_server_context *sc)
{
	return (struct tls_conn *)(void *)((char *)(uintptr_t)sc - offsetof(struct tls_conn, sc));
}

static struct tls_conn *tls_of_policy(const br_ssl_server_policy_class **pctx)
{
	return (struct tls_conn *)(void *)((char *)(uintptr_t)pctx - offsetof(struct tls_conn, policy));
}

static int tls_cache_load(const br_ssl_session_cache_class **ctx, br_ssl_server_context *sc,
                          br_ssl_session_parameters *params)
{
	LB_UNUSED(ctx);
	spin_lock(&SHM.tls_cache->lock);
	int ok = SHM.tls_cache->lru.vtable->load(&SHM.tls_cache->lru.vtable, sc, params);
	spin_unlock(&SHM.tls_cache->lock);
	atomic_fetch_add_explicit(&SHM.tls->lookups, 1, memory_order_relaxed);
	if (ok) {
		atomic_fetch_add_explicit(&SHM.tls->hits, 1, memory_order_relaxed);
		tls_of_server(sc)->resumed = 1;
	}
	return ok;
}

/* SNI: choose the certificate, then let BearSSL's single-certificate policy for its key type
 * pick the suite and sign; the key exchange and signature calls go to that policy too */
static const br_ssl_server_policy_class **tls_inner(struct tls_conn *tc)
{
	return &tc->sc.chain_handler.vtable;
}

static int tls_choose(const br_ssl_server_policy_class **pctx, const br_ssl_server_context *cc,
                      br_ssl_server_choices *choices)
{
	struct tls_conn *tc = tls_of_policy(pctx);
	LB_UNUSED(cc);
	tc->cert = tls_pick_cert(tc->t, br_ssl_engine_get_server_name(&tc->sc.eng));
	const struct lb_cert *c = &tc->t->certs[tc->cert];
	if (c->key_type == BR_KEYTYPE_EC)
		br_ssl_server_set_single_ec(&tc->sc, c->chain, c->nchain, &c->ec, BR_KEYTYPE_SIGN, 0, br_ec_get_default(),
		                            br_ecdsa_sign_asn1_get_default());
	else
		br_ssl_server_set_single_rsa(&tc->sc, c->chain, c->nchain, &c->rsa, BR_KEYTYPE_SIGN,
		                             br_rsa_private_get_default(), br_rsa_pkcs1_sign_get_default());
	const br_ssl_server_policy_class **in = tls_inner(tc);
	return (*in)->choose(in, &tc->sc, choices);
}

static uint32_t tls_do_keyx(const br_ssl_server_policy_class **pctx, unsigned char *data, size_t *len)
{
	const br_ssl_server_policy_class **in = tls_inner(tls_of_policy(pctx));
	return (*in)->do_keyx(in, data, len);
}

static size_t tls_do_sign(const br_ssl_server_policy_class **pctx, unsigned algo_id, unsigned char *data,
                          size_t hv_len, size_t len)
{
	const br_ssl_server_policy_class **in = tls_inner(tls_of_policy(pctx));
	return (*in)->do_sign(in, algo_id, data, hv_len, len);
}

static const br_ssl_server_policy_class tls_policy_class = {
	sizeof(const br_ssl_server_policy_class *), tls_choose, tls_do_keyx, tls_do_sign,
};

/* client_ca: the client's chain is checked (3.5 KB, only on the listeners that ask); 0 or -1 */
static int tls_client_auth(struct tls_conn *tc)
{
	const struct lb_tls *t = tc->t;
	struct tls_client_auth *ca = tc->ca = malloc(sizeof *tc->ca);
	if (!ca)
		return -1;
	br_x509_minimal_init(&ca->xc, &br_sha256_vtable, t->tas, t->ntas);
	br_x509_minimal_set_hash(&ca->xc, br_sha1_ID, &br_sha1_vtable);
	br_x509_minimal_set_hash(&ca->xc, br_sha224_ID, &br_sha224_vtable);
	br_x509_minimal_set_hash(&ca->xc, br_sha256_ID, &br_sha256_vtable);
	br_x509_minimal_set_hash(&ca->xc, br_sha384_ID, &br_sha384_vtable);
	br_x509_minimal_set_hash(&ca->xc, br_sha512_ID, &br_sha512_vtable);
	br_x509_minimal_set_rsa(&ca->xc, br_rsa_pkcs1_vrfy_get_default());
	br_x509_minimal_set_ecdsa(&ca->xc, br_ec_get_default(), br_ecdsa_vrfy_asn1_get_default());
	for (int i = 0; i < TLS_NAMES; i++) {
		ca->ne[i].oid = tls_oids[i];
		ca->ne[i].buf = ca->nebuf[i];
		ca->ne[i].len = sizeof ca->nebuf[i];
		ca->nebuf[i][0] = 0;
	}
	br_x509_minimal_set_name_elements(&ca->xc, ca->ne, TLS_NAMES);
	br_ssl_engine_set_x509(&tc->sc.eng, &ca->xc.vtable);
	br_ssl_engine_set_default_rsavrfy(&tc->sc.eng);
	br_ssl_engine_set_default_ecdsa(&tc->sc.eng);
	br_ssl_server_set_trust_anchor_names_alt(&tc->sc, t->tas, t->ntas);
	return 0;
}

/* 0, or -1 (said at most once a second with a count) when the kernel gave no entropy */
static int tls_seed_engine(br_ssl_engine_context *eng)
{
	static uint64_t last_log, quiet;
	unsigned char e[LB_TLS_ENTROPY];
	if (lb_os_entropy(e, sizeof e) == 0) {
		br_ssl_engine_inject_entropy(eng, e, sizeof e);
		memset(e, 0, sizeof e);
		return 0;
	}
	uint64_t now = mono_ms();
	if (now - last_log >= 1000) {
		char more[64] = "";
		if (quiet)
			snprintf(more, sizeof more, " (and %llu more since the last line)", (unsigned long long)quiet);
		lb_err("TLS: no entropy for a new engine (getrandom and /dev/urandom: %s): its connection is refused%s",
		       strerror(errno), more);
		last_log = now;
		quiet = 0;
	} else {
		quiet++;
	}
	return -1;
}

/* The engine settings of every TLS listener (bench/tlsceil.c measures BearSSL with these too):
 * TLS 1.2, tls_suites in our order, the hashes and PRFs they need, the default curves and AEADs,
 * ALPN http/1.1 when alpn (alpn 2: h2 and http/1.1, HTTP/2 listeners), and the kernel's entropy. 0, or -1: no entropy, not to be used. */
int lb_tls_server_engine(br_ssl_server_context *sc, unsigned char *buf, size_t len, int alpn)
{
	br_ssl_engine_context *eng = &sc->eng;
	br_ssl_server_zero(sc);
	br_ssl_engine_set_versions(eng, BR_TLS12, BR_TLS12);
	br_ssl_engine_set_suites(eng, tls_suites, sizeof tls_suites / sizeof *tls_suites);
	br_ssl_engine_set_all_flags(eng, BR_OPT_ENFORCE_SERVER_PREFERENCES | BR_OPT_NO_RENEGOTIATION);
	br_ssl_engine_set_hash(eng, br_sha256_ID, &br_sha256_vtable);
	br_ssl_engine_set_hash(eng, br_sha384_ID, &br_sha384_vtable);
	br_ssl_engine_set_hash(eng, br_sha512_ID, &br_sha512_vtable);
	br_ssl_engine_set_prf_sha256(eng, &br_tls12_sha256_prf);
	br_ssl_engine_set_prf_sha384(eng, &br_tls12_sha384_prf);
	br_ssl_engine_set_default_ec(eng);
	br_ssl_engine_set_default_aes_gcm(eng);
	br_ssl_engine_set_default_chapol(eng);
	br_ssl_engine_set_buffer(eng, buf, len, 1);
	if (alpn)
		br_ssl_engine_set_protocol_names(eng, (const char **)(uintptr_t)tls_alpn_http, 1);
	return tls_seed_engine(eng); /* after the hashes: BearSSL's DRBG uses SHA-256 */
}

static void tls_conn_free(struct tls_conn *tc);

/* NULL with errno ENOMEM when out of memory (malloc's), EIO when there was no entropy */
static struct tls_conn *tls_conn_new(const struct lb_listener *L, const char *const *alpn, size_t nalpn)
{
	struct tls_conn *tc = tls_take(&TLS.free_tls, sizeof *tc);
	unsigned char *iobuf = (unsigned char *)pages_take(&TLS.iobufs);
	if (!tc || !iobuf) {
		tls_give(&TLS.free_tls, tc);
		if (iobuf)
			pages_give(&TLS.iobufs, (char *)iobuf);
		errno = ENOMEM;
		return NULL;
	}
	tc->iobuf = iobuf;
	tc->ca = NULL;
	br_ssl_server_context *sc = &tc->sc;
	br_ssl_engine_context *eng = &sc->eng;
	if (lb_tls_server_engine(sc, tc->iobuf, BR_SSL_BUFSIZE_BIDI, 0) != 0) {
		tls_conn_free(tc);
		errno = EIO;
		return NULL;
	}
	tc->t = L->tlsm;
	tc->cert = 0;
	tc->hs_done = tc->resumed = 0;
	tc->io = (struct tls_io){ .eng = eng, .srv = tc, .pre = tc->iobuf + BR_SSL_BUFSIZE_BIDI, .pre_cap = LB_PROXY_V2_MAX };
	tc->subject[0] = 0;
	tc->policy = &tls_policy_class;
	if (nalpn)
		br_ssl_engine_set_protocol_names(eng, (const char **)(uintptr_t)alpn, nalpn);
	br_ssl_server_set_policy(sc, &tc->policy);
	/* with client_ca every handshake is a full one: a resumed session would carry no client
	 * certificate to check and name */
	if (SHM.tls && SHM.tls->entries && !L->tlsm->ntas)
		br_ssl_server_set_cache(sc, &tls_cache_vt);
	if (tc->t->ntas && tls_client_auth(tc) != 0) {
		tls_conn_free(tc);
		errno = ENOMEM;
		return NULL;
	}
	br_ssl_server_reset(sc);
	return tc;
}

static void tls_conn_free(struct tls_conn *tc)
{
	if (!tc)
		return;
	if (tc->iobuf)
		pages_give(&TLS.iobufs, (char *)tc->iobuf);
	free(tc->ca);
	tls_give(&TLS.free_tls, tc);
}

/* An idle client connection holds no record buffer (33 KB, and the 1 KB read ahead). Between records, with nothing
 * buffered either way, the buffer's bytes are dead: waiting for a record header with none of it
 * read (ixa == ixb == 0, ixc == 5), no payload gathered (oxa == oxc) and no record to send, the
 * handshake over and nothing read ahead in pre. Parked, it goes back to the pool, and the next
 * call that needs the engine (tls_unpark) lends it any block: BearSSL keeps only offsets into it
 * but for ibuf, obuf and the handshake code's hbuf_* pointers (dead between records as well),
 * which are kept here as offsets. Parked, the engine's state is known without asking it: room to
 * send, nothing to read, no record pending. Server engines towards servers (tls_up) are not
 * parked: they are pooled with their idle connection. */
static void tls_park(struct tls_io *io)
{
	struct tls_conn *tc = io->srv;
	if (!tc || !tc->iobuf || !tc->hs_done || io->pre_s != io->pre_e)
		return;
	br_ssl_engine_context *e = &tc->sc.eng;
	if (br_ssl_engine_current_state(e) != (BR_SSL_SENDAPP | BR_SSL_RECVREC) || e->ixa != 0 || e->ixb != 0 ||
	    e->ixc != 5 || e->oxa != e->oxc)
		return;
	uintptr_t base = (uintptr_t)tc->iobuf;
	unsigned char **h[3] = { &e->hbuf_in, &e->hbuf_out, &e->saved_hbuf_out };
	for (int i = 0; i < 3; i++) {
		uintptr_t a = (uintptr_t)*h[i];
		tc->hbuf_off[i] = a >= base && a <= base + BR_SSL_BUFSIZE_BIDI ? a - base + 1 : 0; /* 0: none */
		*h[i] = NULL;
	}
	tc->obuf_off = (size_t)((uintptr_t)e->obuf - base);
	e->ibuf = e->obuf = NULL;
	io->pre = NULL;
	pages_give(&TLS.iobufs, (char *)tc->iobuf);
	tc->iobuf = NULL;
}

/* 0: the engine has its record buffer; -1 (errno ENOMEM): none to lend */
static int tls_unpark(struct tls_io *io)
{
	struct tls_conn *tc = io->srv;
	if (!tc || tc->iobuf)
		return 0;
	if (!(tc->iobuf = (unsigned char *)pages_take(&TLS.iobufs))) {
		errno = ENOMEM;
		return -1;
	}
	br_ssl_engine_context *e = &tc->sc.eng;
	unsigned char **h[3] = { &e->hbuf_in, &e->hbuf_out, &e->saved_hbuf_out };
	for (int i = 0; i < 3; i++)
		*h[i] = tc->hbuf_off[i] ? tc->iobuf + tc->hbuf_off[i] - 1 : NULL;
	e->ibuf = tc->iobuf;
	e->obuf = tc->iobuf + tc->obuf_off;
	io->pre = tc->iobuf + BR_SSL_BUFSIZE_BIDI;
	return 0;
}

static bool tls_parked(const struct tls_io *io) { return io->srv && !io->srv->iobuf; }

/* bytes read with a PROXY header (at most LB_PROXY_V2_MAX): the handshake's start */
static void tls_feed_pre(struct tls_conn *tc, const void *p, size_t n)
{
	memcpy(tc->io.pre, p, n);
	tc->io.pre_e = (uint16_t)n;
}

/* the name the client asked for (SNI), "" when none */
static const char *tls_sni(const struct tls_conn *tc) { return br_ssl_engine_get_server_name(&tc->sc.eng); }

/* the protocol ALPN chose, "" when none (HTTP/2 asks whether it is "h2") */
__attribute__((unused)) static const char *tls_alpn(const struct tls_conn *tc)
{
	const char *p = br_ssl_engine_get_selected_protocol((br_ssl_engine_context *)(uintptr_t)&tc->sc.eng);
	return p ? p : "";
}

/* why the handshake failed (io.err was set): the reason (enum lb_tls_fail) and its text */
static int tls_fail_why(const struct tls_conn *tc, char *why, size_t cap)
{
	return lb_tls_fail_classify(tc->io.err, tc->t->ntas > 0, tc->sc.curves == 0, why, cap);
}

/* "CN=client,O=Example": the verified client's subject, safe to put in a header */
static void tls_subject(struct tls_conn *tc)
{
	size_t w = 0;
	tc->subject[0] = 0;
	for (int i = 0; i < TLS_NAMES; i++)
		if (tc->ca->ne[i].status == 1)
			w = tls_subject_add(tc->subject, sizeof tc->subject, w, tls_oid_names[i], tc->ca->nebuf[i]);
}

/* -------------------------------------------------------------------- the pump */

/* Send the records the engine has: 1 all sent, 0 the socket is full, -1 the socket failed. */
static int tls_flush_out(struct tls_io *io, int fd)
{
	br_ssl_engine_context *eng = io->eng;
	while (!tls_parked(io) && (br_ssl_engine_current_state(eng) & BR_SSL_SENDREC)) {
		size_t len;
		unsigned char *p = br_ssl_engine_sendrec_buf(eng, &len);
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n > 0) {
			br_ssl_engine_sendrec_ack(eng, (size_t)n);
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			return 0;
		return -1;
	}
	return 1;
}

/* The access log's view of a client's TLS once the handshake is done: the version and the cipher suite
 * in OpenSSL's spelling (as nginx's $ssl_protocol and $ssl_cipher); "-" before. */
static void tls_log_info(const struct tls_conn *t, const char **version, const char **cipher)
{
	*version = *cipher = "-";
	if (!t->hs_done)
		return;
	unsigned v = br_ssl_engine_get_version(&t->sc.eng);
	*version = v == BR_TLS12 ? "TLSv1.2" : v == BR_TLS11 ? "TLSv1.1" : v == BR_TLS10 ? "TLSv1" : "-";
	switch (t->sc.eng.session.cipher_suite) {
	case BR_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: *cipher = "ECDHE-ECDSA-AES128-GCM-SHA256"; break;
	case BR_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384: *cipher = "ECDHE-ECDSA-AES256-GCM-SHA384"; break;
	case BR_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256: *cipher = "ECDHE-ECDSA-CHACHA20-POLY1305"; break;
	case BR_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256: *cipher = "ECDHE-RSA-AES128-GCM-SHA256"; break;
	case BR_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384: *cipher = "ECDHE-RSA-AES256-GCM-SHA384"; break;
	case BR_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256: *cipher = "ECDHE-RSA-CHACHA20-POLY1305"; break;
	}
}

/* a clean end: close_notify, sent now if the socket takes it */
static void tls_close_notify(struct tls_io *io, int fd)
{
	if (tls_unpark(io) != 0)
		return;
	br_ssl_engine_close(io->eng);
	tls_flush_out(io, fd);
}

static int tls_records_pending(const struct tls_io *io)
{
	return !tls_parked(io) && (br_ssl_engine_current_state(io->eng) & BR_SSL_SENDREC) != 0;
}

/* the engine has plaintext for us, or handshake bytes came with a PROXY header */
static int tls_has_input(const struct tls_io *io)
{
	return (!tls_parked(io) && (br_ssl_engine_current_state(io->eng) & BR_SSL_RECVAPP)) || io->pre_s < io->pre_e;
}

static int tls_can_send(const struct tls_io *io)
{
	return tls_parked(io) || (br_ssl_engine_current_state(io->eng) & BR_SSL_SENDAPP) != 0;
}

/* The handshake completed (true from the first state that carries application data). */
static int tls_just_done(struct tls_conn *tc)
{
	if (tc->hs_done || !(br_ssl_engine_current_state(&tc->sc.eng) & (BR_SSL_SENDAPP | BR_SSL_RECVAPP)))
		return 0;
	tc->hs_done = 1;
	tls_count_handshake(tc->sc.eng.session.cipher_suite, tc->resumed ? 2 : 0);
	if (tc->t->ntas)
		tls_subject(tc);
	return 1;
}

/* Plaintext from the peer into dst: > 0 bytes; 0 at the end of the stream; -1 with errno
 * EAGAIN when there is none yet; -1 with another errno when the connection failed
 * (EPROTO: TLS error, in io->err). */
static ssize_t tls_recv(struct tls_io *io, int fd, bool *rready, char *dst, size_t cap)
{
	br_ssl_engine_context *eng = io->eng;
	if (tls_parked(io) && !*rready) {
		errno = EAGAIN;
		return -1;
	}
	if (tls_unpark(io) != 0)
		return -1;
	for (;;) {
		if (io->srv) /* before a close_notify right behind the Finished closes the engine */
			tls_just_done(io->srv);
		unsigned st = br_ssl_engine_current_state(eng);
		if (st & BR_SSL_CLOSED) {
			io->err = br_ssl_engine_last_error(eng);
			if (io->err == BR_ERR_OK)
				return 0;
			errno = EPROTO;
			return -1;
		}
		if (st & BR_SSL_SENDREC) {
			int f = tls_flush_out(io, fd);
			if (f < 0)
				return -1;
			if (f > 0)
				continue; /* the state moved on: e.g. our close_notify went out, now CLOSED */
		}
		if (st & BR_SSL_RECVAPP) {
			size_t len;
			unsigned char *p = br_ssl_engine_recvapp_buf(eng, &len);
			size_t n = LB_MIN(len, cap);
			memcpy(dst, p, n);
			br_ssl_engine_recvapp_ack(eng, n);
			if (!*rready) /* the socket is drained: the caller may not call again before it has more */
				tls_park(io);
			return (ssize_t)n;
		}
		if (!(st & BR_SSL_RECVREC) || (!*rready && io->pre_s == io->pre_e)) {
			tls_park(io);
			errno = EAGAIN;
			return -1;
		}
		size_t len;
		unsigned char *p = br_ssl_engine_recvrec_buf(eng, &len);
		ssize_t n;
		if (io->pre_s < io->pre_e) {
			n = (ssize_t)LB_MIN(len, (size_t)(io->pre_e - io->pre_s));
			memcpy(p, io->pre + io->pre_s, (size_t)n);
			io->pre_s += (uint16_t)n;
		} else if (len < io->pre_cap) {
			/* BearSSL asks for a record's 5-byte header, then for its body: one recv takes
			 * what is there, fed from pre (a resumed handshake: 8 recv calls -> 3) */
			n = recv(fd, io->pre, io->pre_cap, 0);
			if (n > 0) {
				if ((size_t)n < io->pre_cap)
					*rready = 0;
				io->pre_s = 0;
				io->pre_e = (uint16_t)n;
				continue;
			}
		} else {
			n = recv(fd, p, len, 0);
			if (n >= 0 && (size_t)n < len)
				*rready = 0;
		}
		if (n > 0) {
			io->got_bytes = 1;
			br_ssl_engine_recvrec_ack(eng, (size_t)n);
			continue;
		}
		if (n == 0)
			return 0; /* TCP end without close_notify: HTTP framing tells truncation apart */
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
			*rready = 0;
			errno = EAGAIN;
		}
		return -1;
	}
}

/* Plaintext to the peer from iov: bytes taken (encrypted and sent, or queued in the engine),
 * or -1 with errno EAGAIN (the engine is full or the handshake is not done) or another errno. */
static ssize_t tls_send(struct tls_io *io, int fd, const struct iovec *iov, int k)
{
	br_ssl_engine_context *eng = io->eng;
	size_t total = 0, off = 0;
	int i = 0, failed = 0;
	if (tls_unpark(io) != 0)
		return -1;
	while (i < k) {
		unsigned st = br_ssl_engine_current_state(eng);
		if (st & BR_SSL_SENDAPP) {
			size_t len;
			unsigned char *p = br_ssl_engine_sendapp_buf(eng, &len);
			size_t n = LB_MIN(len, iov[i].iov_len - off);
			memcpy(p, (const char *)iov[i].iov_base + off, n);
			br_ssl_engine_sendapp_ack(eng, n);
			total += n, off += n;
			if (off == iov[i].iov_len)
				i++, off = 0;
			continue;
		}
		if (st & BR_SSL_SENDREC) {
			int f = tls_flush_out(io, fd);
			if (f > 0)
				continue;
			failed = f < 0 ? -1 : 0;
		}
		break;
	}
	if (total)
		br_ssl_engine_flush(eng, 0);
	int f = tls_flush_out(io, fd);
	if (f > 0)
		tls_park(io);
	if (total)
		return (ssize_t)total;
	if (f < 0 || failed < 0 || (br_ssl_engine_current_state(eng) & BR_SSL_CLOSED)) {
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			errno = EPIPE;
		return -1;
	}
	errno = EAGAIN;
	return -1;
}

/* -------------------------------------------------------------------- towards servers (server ... tls) */

struct tls_up {
	struct tls_io io;
	br_ssl_client_context cc;
	br_x509_minimal_context xc;
	unsigned char iobuf[BR_SSL_BUFSIZE_BIDI];
};

int lb_tls_client_engine(br_ssl_client_context *cc, br_x509_minimal_context *xc, const br_x509_trust_anchor *tas,
                         size_t ntas, unsigned char *buf, size_t len)
{
	br_ssl_client_init_full(cc, xc, tas, ntas);
	br_ssl_engine_set_versions(&cc->eng, BR_TLS12, BR_TLS12);
	br_ssl_engine_set_suites(&cc->eng, tls_suites, sizeof tls_suites / sizeof *tls_suites);
	br_ssl_engine_set_buffer(&cc->eng, buf, len, 1);
	br_ssl_engine_set_protocol_names(&cc->eng, (const char **)(uintptr_t)tls_alpn_http, 1);
	return tls_seed_engine(&cc->eng);
}

/* A client engine for a connection to s: the pool's CAs, and SNI + name check with tls_sni or
 * the server's host name (an address: the chain is verified, no name). */
static struct tls_up *tls_up_new(const struct lb_pool *p, const struct lb_server *s)
{
	struct tls_up *u = tls_take(&TLS.free_up, sizeof *u);
	if (!u)
		return NULL;
	const char *sni = p->tls_sni ? p->tls_sni : host_is_name(s->host) ? s->host : NULL;
	u->io = (struct tls_io){ .eng = &u->cc.eng };
	if (lb_tls_client_engine(&u->cc, &u->xc, p->tlsm->tas, p->tlsm->ntas, u->iobuf, sizeof u->iobuf) != 0 ||
	    !br_ssl_client_reset(&u->cc, sni, 0)) {
		tls_give(&TLS.free_up, u);
		return NULL;
	}
	return u;
}

static void tls_up_free(struct tls_up *u) { tls_give(&TLS.free_up, u); }

#else /* LB_TLS_OPENSSL */
/* -------------------------------------------------------------------- OpenSSL 3
 * One SSL_CTX per listener (its certificates, client_ca) and per pool (tls_ca), made by the
 * master and inherited at fork; one SSL per connection on one BIO of lb's (tls_bio_*), which
 * recv()s straight into OpenSSL's record buffer and send()s its records, queueing only what the
 * socket does not take (and feeds the bytes read with a PROXY header first): no copies, and no
 * buffer held by an idle connection. OpenSSL's errors are mapped to lb's TLS error codes
 * (tls_ossl_code). */

#define TLS12_SUITES "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:" \
                     "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305"
#define TLS13_SUITES "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
#define TLS_GROUPS "X25519:P-256:P-384"
#define TLS_OUT_MAX (64 * 1024) /* ciphertext queued for the socket before tls_send takes no more */

struct lb_cert {
	const char *file;
	int line;
	X509 *x;                      /* the leaf */
	STACK_OF(X509) *chain;        /* the rest, in file order */
	EVP_PKEY *key;
	struct lb_x509_info info;     /* of the leaf: names for SNI, expiry, serial */
	const char *ocsp_file;        /* ocsp = FILE: its response, when stapled */
	unsigned char *ocsp;          /* NULL: none to staple (ocsp_note says why, when there is a file) */
	size_t ocsp_len;
	int64_t ocsp_this, ocsp_next; /* thisUpdate, nextUpdate (Unix time; INT64_MAX: none) */
	char ocsp_note[96];
};

struct lb_tls {
	struct lb_cert certs[LB_MAX_CERTS];
	size_t ncerts;
	struct file_sig sig[2 * LB_MAX_CERTS + 1]; /* of the files as loaded: certs, client_ca, ocsp */
	STACK_OF(X509) *cas;          /* client_ca, or the CAs that sign servers' certificates */
	size_t ntas;
	SSL_CTX *ctx;                 /* a listener's (server) or a pool's (client) */
};

static void cert_clear(struct lb_cert *c)
{
	X509_free(c->x);
	sk_X509_pop_free(c->chain, X509_free);
	EVP_PKEY_free(c->key);
	free(c->ocsp);
	c->x = NULL, c->chain = NULL, c->key = NULL, c->ocsp = NULL;
}

static void tls_free(struct lb_tls *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < LB_MAX_CERTS; i++)
		cert_clear(&t->certs[i]);
	sk_X509_pop_free(t->cas, X509_free);
	SSL_CTX_free(t->ctx);
	free(t);
}

/* OpenSSL's first queued error, as text for a config error */
static const char *tls_ossl_text(void)
{
	static char b[160];
	unsigned long e = ERR_peek_error();
	if (!e)
		return "unknown error";
	ERR_error_string_n(e, b, sizeof b);
	ERR_clear_error();
	return b;
}

/* Each PEM object of text to fn; -1 with err set (by fn, or on a malformed PEM). */
typedef int (*pem_fn)(void *arg, const char *name, const unsigned char *der, long len, char *err, size_t errlen);
static int pem_each(const char *text, size_t len, pem_fn fn, void *arg, char *err, size_t errlen)
{
	BIO *b = BIO_new_mem_buf(text, (int)len);
	int rc = b ? 0 : -1;
	if (!b)
		snprintf(err, errlen, "out of memory");
	while (rc == 0) {
		char *name = NULL, *hdr = NULL;
		unsigned char *der = NULL;
		long dl = 0;
		ERR_clear_error();
		if (!PEM_read_bio(b, &name, &hdr, &der, &dl)) {
			unsigned long e = ERR_peek_last_error();
			if (ERR_GET_LIB(e) != ERR_LIB_PEM || ERR_GET_REASON(e) != PEM_R_NO_START_LINE)
				snprintf(err, errlen, "invalid PEM (%s)", tls_ossl_text()), rc = -1;
			break;
		}
		rc = fn(arg, name, der, dl, err, errlen);
		OPENSSL_free(name);
		OPENSSL_free(hdr);
		OPENSSL_free(der);
	}
	BIO_free(b);
	ERR_clear_error();
	return rc;
}

static int is_cert_pem(const char *name) { return !strcmp(name, "CERTIFICATE") || !strcmp(name, "X509 CERTIFICATE"); }

struct cert_acc {
	struct lb_cert *c;
	int keys, ncerts;
};

static int cert_take(void *arg, const char *name, const unsigned char *der, long len, char *err, size_t errlen)
{
	struct cert_acc *a = arg;
	struct lb_cert *c = a->c;
	const unsigned char *p = der;
	if (is_cert_pem(name)) {
		if (a->ncerts >= 8) {
			snprintf(err, errlen, "more than 8 certificates in the chain");
			return -1;
		}
		X509 *x = d2i_X509(NULL, &p, len);
		if (!x) {
			snprintf(err, errlen, "certificate %d cannot be decoded (%s)", a->ncerts + 1, tls_ossl_text());
			return -1;
		}
		if (!a->ncerts++) {
			c->x = x;
			if (lb_x509_info(der, (size_t)len, &c->info) != 0) {
				snprintf(err, errlen, "first certificate: %s", c->info.error);
				return -1;
			}
			return 0;
		}
		if ((!c->chain && !(c->chain = sk_X509_new_null())) || !sk_X509_push(c->chain, x)) {
			X509_free(x);
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		return 0;
	}
	if (!strstr(name, "PRIVATE KEY"))
		return 0;
	if (a->keys++) {
		snprintf(err, errlen, "more than one private key");
		return -1;
	}
	if (!(c->key = d2i_AutoPrivateKey(NULL, &p, len))) {
		snprintf(err, errlen, "private key not understood (%s)", tls_ossl_text());
		return -1;
	}
	if (EVP_PKEY_get_base_id(c->key) == EVP_PKEY_EC) {
		char g[64] = "";
		size_t gl = 0;
		EVP_PKEY_get_group_name(c->key, g, sizeof g, &gl);
		if (strcmp(g, "prime256v1") && strcmp(g, "secp384r1") && strcmp(g, "secp521r1")) {
			snprintf(err, errlen, "EC key on an unsupported curve (use P-256 or P-384)");
			return -1;
		}
	} else if (EVP_PKEY_get_base_id(c->key) == EVP_PKEY_RSA) {
		if (EVP_PKEY_get_bits(c->key) < 2048) {
			snprintf(err, errlen, "RSA key of %d bits: at least 2048 are required", EVP_PKEY_get_bits(c->key));
			return -1;
		}
	} else {
		snprintf(err, errlen, "private key neither EC nor RSA");
		return -1;
	}
	return 0;
}

/* Certificates (leaf first) and one private key, in any order, from PEM text. */
static int cert_parse(struct lb_tls *t, struct lb_cert *c, const char *text, size_t len, char *err, size_t errlen)
{
	LB_UNUSED(t);
	struct cert_acc a = { .c = c };
	int rc = pem_each(text, len, cert_take, &a, err, errlen);
	if (rc == 0 && !c->x)
		snprintf(err, errlen, "no CERTIFICATE in the file"), rc = -1;
	if (rc == 0 && !a.keys)
		snprintf(err, errlen, "no PRIVATE KEY in the file (put the key after the chain)"), rc = -1;
	if (rc == 0 && c->info.nnames == 0)
		snprintf(err, errlen, "the first certificate names no host (no subjectAltName DNS name, no CN)"), rc = -1;
	if (rc == 0 && X509_check_private_key(c->x, c->key) != 1)
		snprintf(err, errlen, "the private key does not belong to the first certificate"), rc = -1;
	ERR_clear_error();
	if (rc)
		cert_clear(c);
	return rc;
}

/* One cert = FILE. */
static int cert_load(struct lb_tls *t, struct lb_cert *c, const char *file, char *err, size_t errlen)
{
	size_t len;
	char *text = file_read(file, 1 << 20, &len, err, errlen);
	if (!text)
		return -1;
	int rc = cert_parse(t, c, text, len, err, errlen);
	free(text);
	c->file = file;
	return rc;
}

static int ca_take(void *arg, const char *name, const unsigned char *der, long len, char *err, size_t errlen)
{
	struct lb_tls *t = arg;
	if (!is_cert_pem(name))
		return 0;
	const unsigned char *p = der;
	X509 *x = d2i_X509(NULL, &p, len);
	if (!x) {
		snprintf(err, errlen, "certificate %zu cannot be decoded (%s)", t->ntas + 1, tls_ossl_text());
		return -1;
	}
	if (t->ntas >= 1024 || !sk_X509_push(t->cas, x)) {
		X509_free(x);
		snprintf(err, errlen, t->ntas >= 1024 ? "more than 1024 CA certificates" : "out of memory");
		return -1;
	}
	t->ntas++;
	return 0;
}

/* client_ca or tls_ca: every certificate in the file is trusted */
static int ca_load(struct lb_tls *t, const char *file, char *err, size_t errlen)
{
	size_t len;
	char *text = file_read(file, 4 << 20, &len, err, errlen);
	if (!text)
		return -1;
	int rc = (t->cas = sk_X509_new_null()) ? pem_each(text, len, ca_take, t, err, errlen)
	                                        : (snprintf(err, errlen, "out of memory"), -1);
	free(text);
	if (rc == 0 && !t->ntas)
		snprintf(err, errlen, "no CERTIFICATE in the file"), rc = -1;
	return rc;
}

/* the CAs as the context's trust store; a CA need not be self-signed (as BearSSL's anchors) */
static int tls_trust(SSL_CTX *ctx, const struct lb_tls *t)
{
	X509_STORE *st = SSL_CTX_get_cert_store(ctx);
	for (size_t i = 0; i < t->ntas; i++)
		if (!X509_STORE_add_cert(st, sk_X509_value(t->cas, (int)i)))
			return -1;
	X509_STORE_set_flags(st, X509_V_FLAG_PARTIAL_CHAIN);
	return 0;
}

/* settings both sides share: versions, suites, groups, no renegotiation, no compression */
static SSL_CTX *tls_ctx_new(const SSL_METHOD *m)
{
	SSL_CTX *ctx = SSL_CTX_new(m);
	if (!ctx)
		return NULL;
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) || !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_cipher_list(ctx, TLS12_SUITES) || !SSL_CTX_set_ciphersuites(ctx, TLS13_SUITES) ||
	    !SSL_CTX_set1_groups_list(ctx, TLS_GROUPS)) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION);
	/* the end of TCP without close_notify is the pump's to judge (HTTP framing), not a fatal alert */
	SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS); /* no record buffers while idle */
	SSL_CTX_set_read_ahead(ctx, 1); /* one recv() takes what the socket has, several records */
	return ctx;
}

/* What the pump needs of either side's engine: one SSL on lb's socket BIO (tls_bio_*), which
 * reads and writes the socket the pump names (fd, rready: set for each call into OpenSSL). */
struct tls_io {
	SSL *ssl;
	struct tls_conn *srv;         /* the server side's, to note the handshake's end */
	int fd;                       /* the socket of the pump's current call; -1: none (queue) */
	bool *rready;                 /* its readiness flag; NULL: no recv() in this call */
	unsigned char *pre;           /* bytes read with a PROXY header, fed first; NULL: none */
	size_t pre_s, pre_e;
	unsigned char *q;             /* ciphertext the socket did not take; NULL when none */
	size_t qs, qe, qcap;
	int sys_err;                  /* a socket error (errno), final */
	int eof, starved;             /* recv() saw the end; OpenSSL wants bytes it has not got */
	int cork;                     /* records go to the queue, sent together (tls_send) */
	int got_bytes, err;
	int alert_sent, alert_recv;   /* fatal alerts seen (+1), by tls_info */
};

struct tls_conn {
	struct tls_io io;
	const struct lb_tls *t;
	const char *const *alpn;      /* what lb offers, in its order */
	size_t nalpn;
	size_t cert;                  /* chosen by SNI */
	int hs_done, resumed, no_common_curve, ticket;
	char *subject;                /* "CN=..,O=..": the verified client's (allocated then), else "" */
};

struct tls_up {
	struct tls_io io;
};

/* the tls_io of an SSL: the data of its BIO, which is lb's (no ex_data: one allocation less per
 * connection); NULL for an SSL on another BIO */
static int tls_bio_type;
static struct tls_io *tls_io_of(const SSL *ssl)
{
	BIO *b = SSL_get_rbio(ssl);
	return b && tls_bio_type && BIO_method_type(b) == tls_bio_type ? BIO_get_data(b) : NULL;
}

static void tls_info(const SSL *ssl, int where, int ret)
{
	struct tls_io *io = tls_io_of(ssl);
	if (!io || !(where & SSL_CB_ALERT) || (ret >> 8) != SSL3_AL_FATAL)
		return;
	if (where & SSL_CB_READ)
		io->alert_recv = io->alert_recv ? io->alert_recv : (ret & 255) + 1;
	else
		io->alert_sent = io->alert_sent ? io->alert_sent : (ret & 255) + 1;
}

/* the client's supported groups: note when none is one of lb's (X25519 29, P-256 23, P-384 24) */
static int tls_hello(SSL *ssl, int *al, void *arg)
{
	LB_UNUSED(al), LB_UNUSED(arg);
	struct tls_io *io = tls_io_of(ssl);
	const unsigned char *p;
	size_t n;
	if (!io || !io->srv || !SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_supported_groups, &p, &n) || n < 2)
		return SSL_CLIENT_HELLO_SUCCESS;
	int common = 0;
	for (size_t i = 2; i + 1 < n; i += 2) {
		unsigned g = (unsigned)p[i] << 8 | p[i + 1];
		common |= g == 29 || g == 23 || g == 24;
	}
	io->srv->no_common_curve = !common;
	return SSL_CLIENT_HELLO_SUCCESS;
}

/* SNI: the certificate for the name (the context holds the first, the default) */
static int tls_cert_pick(SSL *ssl, void *arg)
{
	const struct lb_tls *t = arg;
	size_t i = tls_pick_cert(t, SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name));
	struct tls_io *io = tls_io_of(ssl);
	if (io && io->srv)
		io->srv->cert = i; /* for the OCSP staple */
	if (i == 0)
		return 1;
	const struct lb_cert *c = &t->certs[i];
	SSL_certs_clear(ssl); /* else the default's key type may still be preferred */
	return SSL_use_cert_and_key(ssl, c->x, c->key, c->chain, 1) == 1;
}

/* ALPN: lb's first protocol the client offers; none in common: no ALPN (as BearSSL) */
static int tls_alpn_pick(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                         unsigned inlen, void *arg)
{
	LB_UNUSED(arg);
	struct tls_io *io = tls_io_of(ssl);
	for (size_t i = 0; io && io->srv && i < io->srv->nalpn; i++) {
		const char *want = io->srv->alpn[i];
		size_t wl = strlen(want);
		for (unsigned k = 0; k < inlen; k += 1u + in[k])
			if (in[k] == wl && k + 1 + wl <= inlen && !memcmp(in + k + 1, want, wl)) {
				*out = in + k + 1;
				*outlen = (unsigned char)wl;
				return SSL_TLSEXT_ERR_OK;
			}
	}
	return SSL_TLSEXT_ERR_NOACK;
}

static int tls_ticket_cb(SSL *ssl, unsigned char name[16], unsigned char *iv, EVP_CIPHER_CTX *ectx,
                         EVP_MAC_CTX *hctx, int enc);
static int tls_sid_new(SSL *ssl, SSL_SESSION *sess);
static SSL_SESSION *tls_sid_get(SSL *ssl, const unsigned char *id, int idlen, int *copy);
static void tls_sid_remove(SSL_CTX *ctx, SSL_SESSION *sess);

/* -------------------------------------------------------------------- OCSP stapling
 * ocsp = FILE (the n-th belongs to the listener's n-th cert =): a DER OCSP response, read with
 * its certificate (at start, on reload, and when either file changes on disk). It is stapled to
 * a handshake that asks for it (status_request) while it is for that certificate (issuer: the
 * next certificate of the chain), says good, and its nextUpdate has not passed; otherwise it is
 * kept out of handshakes, and the error log says why once when loaded. lb does not fetch
 * responses: deploy/ocsp-refresh.sh (openssl ocsp from a timer) writes the file. */

static int64_t tls_asn1_unix(const ASN1_GENERALIZEDTIME *t)
{
	struct tm tm;
	return t && ASN1_TIME_to_tm(t, &tm) == 1 ? (int64_t)timegm(&tm) : 0;
}

/* c's OCSP response from file: 0 (kept, stapled or not, c->ocsp_note says why not), or -1 with err
 * set when the file is not an OCSP response at all */
static int tls_ocsp_load(struct lb_cert *c, const char *file, char *err, size_t errlen)
{
	size_t len;
	char *b = file_read(file, 64 << 10, &len, err, errlen);
	if (!b)
		return -1;
	const unsigned char *p = (const unsigned char *)b;
	OCSP_RESPONSE *r = d2i_OCSP_RESPONSE(NULL, &p, (long)len);
	OCSP_BASICRESP *br = r && OCSP_response_status(r) == OCSP_RESPONSE_STATUS_SUCCESSFUL ? OCSP_response_get1_basic(r) : NULL;
	int rc = 0;
	c->ocsp_file = file;
	if (!r) {
		snprintf(err, errlen, "ocsp %s: not a DER OCSP response (%s)", file, tls_ossl_text());
		rc = -1;
	} else if (!br) {
		snprintf(c->ocsp_note, sizeof c->ocsp_note, "the response's status is not successful");
	} else {
		X509 *issuer = c->chain && sk_X509_num(c->chain) ? sk_X509_value(c->chain, 0) : c->x;
		OCSP_CERTID *id = OCSP_cert_to_id(NULL, c->x, issuer);
		int status = -1, reason = 0;
		ASN1_GENERALIZEDTIME *rev = NULL, *thisupd = NULL, *nextupd = NULL;
		if (!id || !OCSP_resp_find_status(br, id, &status, &reason, &rev, &thisupd, &nextupd))
			snprintf(c->ocsp_note, sizeof c->ocsp_note, "the response is not for this certificate");
		else if (status != V_OCSP_CERTSTATUS_GOOD)
			snprintf(c->ocsp_note, sizeof c->ocsp_note, "the response says %s", OCSP_cert_status_str(status));
		c->ocsp_this = tls_asn1_unix(thisupd);
		c->ocsp_next = nextupd ? tls_asn1_unix(nextupd) : INT64_MAX;
		OCSP_CERTID_free(id);
		if (!c->ocsp_note[0] && !(c->ocsp = malloc(len)))
			snprintf(err, errlen, "out of memory"), rc = -1;
		else if (!c->ocsp_note[0])
			memcpy(c->ocsp, b, len), c->ocsp_len = len;
	}
	if (rc == 0 && !c->ocsp_note[0] && c->ocsp_next <= (int64_t)time(NULL))
		snprintf(c->ocsp_note, sizeof c->ocsp_note, "the response expired (nextUpdate passed)");
	if (rc == 0 && c->ocsp_note[0])
		lb_err("ocsp %s (cert %s): not stapled: %s", file, c->file, c->ocsp_note);
	OCSP_BASICRESP_free(br);
	OCSP_RESPONSE_free(r);
	ERR_clear_error();
	free(b);
	return rc;
}

/* the status callback: staple the chosen certificate's response while it is valid */
static int tls_ocsp_staple(SSL *ssl, void *arg)
{
	const struct lb_tls *t = arg;
	struct tls_io *io = tls_io_of(ssl);
	const struct lb_cert *c = io && io->srv ? &t->certs[io->srv->cert] : NULL;
	if (!c || !c->ocsp || c->ocsp_next <= (int64_t)(wall_ms() / 1000))
		return SSL_TLSEXT_ERR_NOACK;
	unsigned char *p = OPENSSL_memdup(c->ocsp, c->ocsp_len);
	if (!p || !SSL_set_tlsext_status_ocsp_resp(ssl, p, (long)c->ocsp_len)) {
		OPENSSL_free(p);
		return SSL_TLSEXT_ERR_NOACK;
	}
	return SSL_TLSEXT_ERR_OK;
}

/* the thisUpdate of the response stapled with c (Unix time), 0 when none is */
static int64_t tls_ocsp_this_update(const struct lb_cert *c) { return c->ocsp ? c->ocsp_this : 0; }

/* A listener's context: its certificates (the first by default, others by SNI), client_ca. */
static int tls_listener_ready(struct lb_tls *t, const struct lb_listener *l, char *err, size_t errlen)
{
	LB_UNUSED(l);
	SSL_CTX *ctx = t->ctx = tls_ctx_new(TLS_server_method());
	const struct lb_cert *c = &t->certs[0];
	if (!ctx || (t->ncerts && SSL_CTX_use_cert_and_key(ctx, c->x, c->key, c->chain, 1) != 1)) {
		snprintf(err, errlen, "OpenSSL: %s", tls_ossl_text());
		return -1;
	}
	SSL_CTX_set_max_early_data(ctx, 0); /* no 0-RTT: replayable requests */
	SSL_CTX_set_recv_max_early_data(ctx, 0);
	SSL_CTX_set_info_callback(ctx, tls_info);
	SSL_CTX_set_client_hello_cb(ctx, tls_hello, NULL);
	SSL_CTX_set_cert_cb(ctx, tls_cert_pick, t);
	SSL_CTX_set_alpn_select_cb(ctx, tls_alpn_pick, NULL);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_INTERNAL);
	SSL_CTX_sess_set_new_cb(ctx, tls_sid_new);
	SSL_CTX_sess_set_get_cb(ctx, tls_sid_get);
	SSL_CTX_sess_set_remove_cb(ctx, tls_sid_remove);
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"lb", 2);
	SSL_CTX_set_num_tickets(ctx, 1);
	SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, tls_ticket_cb);
	SSL_CTX_set_tlsext_status_cb(ctx, tls_ocsp_staple);
	SSL_CTX_set_tlsext_status_arg(ctx, t);
	if (t->ntas) {
		/* every handshake a full one: a resumed session would carry no client certificate to check */
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
		SSL_CTX_set_num_tickets(ctx, 0);
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
		STACK_OF(X509_NAME) *names = sk_X509_NAME_new_null();
		for (size_t i = 0; names && i < t->ntas; i++) {
			X509_NAME *nm = X509_NAME_dup(X509_get_subject_name(sk_X509_value(t->cas, (int)i)));
			if (nm && !sk_X509_NAME_push(names, nm))
				X509_NAME_free(nm);
		}
		if (!names || tls_trust(ctx, t) != 0) {
			sk_X509_NAME_pop_free(names, X509_NAME_free);
			snprintf(err, errlen, "OpenSSL: %s", tls_ossl_text());
			return -1;
		}
		SSL_CTX_set_client_CA_list(ctx, names);
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	}
	return 0;
}

/* A pool's context towards its servers marked tls: tls_ca, verification on. */
static int tls_pool_ready(struct lb_tls *t, char *err, size_t errlen)
{
	SSL_CTX *ctx = t->ctx = tls_ctx_new(TLS_client_method());
	if (!ctx || tls_trust(ctx, t) != 0) {
		snprintf(err, errlen, "OpenSSL: %s", tls_ossl_text());
		return -1;
	}
	SSL_CTX_set_info_callback(ctx, tls_info);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	return 0;
}

/* -------------------------------------------------------------------- session tickets
 * Stateless tickets (TLS 1.2 and 1.3), sealed with keys every worker of every generation
 * shares: they live in shared memory that the master made before any fork and alone writes.
 * Without tls_ticket_keys the master makes a random key at start and a new one every
 * tls_ticket_rotate, keeping the last TLS_TICKET_KEEP (the newest seals, all open). With
 * tls_ticket_keys = FILE the keys are the file's (read at start, on SIGHUP, and when it
 * changes, checked every second): N x 80 bytes (name 16, HMAC-SHA256 key 32, AES-256 key 32),
 * 1 <= N <= TLS_TICKET_KEYS_MAX; the first seals, all open; a ticket opened with another key
 * than the first is renewed. A file that does not load leaves the keys in use as they were. */

#define TLS_TICKET_KEYS_MAX 8
#define TLS_TICKET_KEEP 4
#define TLS_TICKET_KEY_LEN 80

struct tls_tkey {
	unsigned char name[16], hmac[32], aes[32];
};

struct tls_tickets {
	_Atomic uint32_t lock;
	uint32_t n, from_file;
	uint64_t rotated_ms;
	struct tls_tkey k[TLS_TICKET_KEYS_MAX];
};

/* the keys of a tls_ticket_keys file: how many (>= 1), or -1 with err set */
static int tls_ticket_file(const char *path, void *out, char *err, size_t errlen)
{
	struct tls_tkey *k = out;
	size_t len;
	char *b = file_read(path, TLS_TICKET_KEYS_MAX * TLS_TICKET_KEY_LEN, &len, err, errlen);
	if (!b)
		return -1;
	int n = (int)(len / TLS_TICKET_KEY_LEN);
	if (len == 0 || len % TLS_TICKET_KEY_LEN) {
		snprintf(err, errlen, "%s: %zu bytes: want 80 bytes per key (name 16, HMAC 32, AES 32), e.g. openssl rand 80",
		         path, len);
		n = -1;
	}
	for (int i = 0; i < n; i++)
		memcpy(&k[i], b + (size_t)i * TLS_TICKET_KEY_LEN, TLS_TICKET_KEY_LEN);
	memset(b, 0, len);
	free(b);
	return n;
}

static void tls_tickets_set(const struct tls_tkey *k, uint32_t n, uint32_t from_file)
{
	spin_lock(&SHM.tickets->lock);
	memcpy(SHM.tickets->k, k, n * sizeof *k);
	SHM.tickets->n = n;
	SHM.tickets->from_file = from_file;
	SHM.tickets->rotated_ms = mono_ms();
	spin_unlock(&SHM.tickets->lock);
}

/* a new random key first, the newest TLS_TICKET_KEEP - 1 before it kept */
static int tls_tickets_rotate(void)
{
	struct tls_tkey k[TLS_TICKET_KEEP];
	if (lb_os_entropy(&k[0], sizeof k[0]) != 0) {
		lb_err("TLS: no entropy for a new session ticket key: the old keys stay in use");
		return -1;
	}
	spin_lock(&SHM.tickets->lock);
	uint32_t keep = SHM.tickets->from_file ? 0 : LB_MIN(SHM.tickets->n, TLS_TICKET_KEEP - 1);
	memcpy(&k[1], SHM.tickets->k, keep * sizeof *k);
	spin_unlock(&SHM.tickets->lock);
	tls_tickets_set(k, keep + 1, 0);
	memset(k, 0, sizeof k);
	return 0;
}

/* -------------------------------------------------------------------- the shared session-ID cache
 * For TLS 1.2 clients that take no ticket: sessions (i2d_SSL_SESSION, the master secret among
 * them) in shared memory, TLS_SID_WAYS-way sets chosen by the session ID's hash, the oldest of a
 * set replaced; tls_session_cache entries of TLS_SID_DATA bytes. Made by the master before any
 * fork, so every worker of every generation resumes them. */

#define TLS_SID_WAYS 4
#define TLS_SID_DATA 480

struct tls_sid {
	uint64_t used;                 /* a counter: the oldest of a set goes first; 0: empty */
	int64_t expires;               /* Unix time */
	uint8_t idlen;
	uint16_t len;
	unsigned char id[SSL_MAX_SSL_SESSION_ID_LENGTH];
	unsigned char data[TLS_SID_DATA];
};

struct tls_sids {
	_Atomic uint32_t lock;
	uint32_t sets;
	uint64_t clock;
	struct tls_sid e[];
};

static struct tls_sid *tls_sid_set(const unsigned char *id, unsigned idlen)
{
	return &SHM.sids->e[(lb_hash64(id, idlen) % SHM.sids->sets) * TLS_SID_WAYS];
}

static int tls_sid_new(SSL *ssl, SSL_SESSION *sess)
{
	/* TLS 1.3 resumes only with its stateless ticket, which carries the session: storing it
	 * too would cost a copy and a cache page touched per handshake for nothing */
	if (SSL_version(ssl) == TLS1_3_VERSION)
		return 0;
	unsigned idlen;
	const unsigned char *id = SSL_SESSION_get_id(sess, &idlen);
	unsigned char buf[TLS_SID_DATA], *p = buf;
	int len = i2d_SSL_SESSION(sess, NULL);
	if (!SHM.sids || !idlen || idlen > SSL_MAX_SSL_SESSION_ID_LENGTH || len <= 0 || len > TLS_SID_DATA ||
	    i2d_SSL_SESSION(sess, &p) != len)
		return 0;
	spin_lock(&SHM.sids->lock);
	struct tls_sid *set = tls_sid_set(id, idlen), *v = set;
	for (int i = 1; i < TLS_SID_WAYS; i++)
		if (set[i].used < v->used)
			v = &set[i];
	v->used = ++SHM.sids->clock;
	v->expires = (int64_t)(SSL_SESSION_get_time(sess) + SSL_SESSION_get_timeout(sess));
	v->idlen = (uint8_t)idlen, v->len = (uint16_t)len;
	memcpy(v->id, id, idlen);
	memcpy(v->data, buf, (size_t)len);
	spin_unlock(&SHM.sids->lock);
	memset(buf, 0, sizeof buf);
	return 0; /* lb keeps no reference to sess */
}

static SSL_SESSION *tls_sid_get(SSL *ssl, const unsigned char *id, int idlen, int *copy)
{
	struct tls_io *io = tls_io_of(ssl);
	unsigned char buf[TLS_SID_DATA];
	int len = 0;
	*copy = 0;
	if (!SHM.sids || idlen <= 0 || idlen > SSL_MAX_SSL_SESSION_ID_LENGTH)
		return NULL;
	if (SHM.tls)
		atomic_fetch_add_explicit(&SHM.tls->lookups, 1, memory_order_relaxed);
	int64_t now = (int64_t)time(NULL);
	spin_lock(&SHM.sids->lock);
	struct tls_sid *set = tls_sid_set(id, (unsigned)idlen);
	for (int i = 0; i < TLS_SID_WAYS && !len; i++)
		if (set[i].used && set[i].idlen == idlen && !memcmp(set[i].id, id, (size_t)idlen) && set[i].expires > now)
			memcpy(buf, set[i].data, set[i].len), len = set[i].len;
	spin_unlock(&SHM.sids->lock);
	const unsigned char *p = buf;
	SSL_SESSION *s = len ? d2i_SSL_SESSION(NULL, &p, len) : NULL;
	memset(buf, 0, sizeof buf);
	if (s && SHM.tls)
		atomic_fetch_add_explicit(&SHM.tls->hits, 1, memory_order_relaxed);
	if (s && io && io->srv)
		io->srv->ticket = 0;
	return s;
}

static void tls_sid_remove(SSL_CTX *ctx, SSL_SESSION *sess)
{
	LB_UNUSED(ctx);
	unsigned idlen;
	const unsigned char *id = SSL_SESSION_get_id(sess, &idlen);
	if (!SHM.sids || !idlen || idlen > SSL_MAX_SSL_SESSION_ID_LENGTH)
		return;
	spin_lock(&SHM.sids->lock);
	struct tls_sid *set = tls_sid_set(id, idlen);
	for (int i = 0; i < TLS_SID_WAYS; i++)
		if (set[i].idlen == idlen && !memcmp(set[i].id, id, idlen))
			set[i].used = 0;
	spin_unlock(&SHM.sids->lock);
}

static int tls_cache_create(unsigned entries)
{
	if (!(SHM.tickets = shm_map(sizeof *SHM.tickets, "TLS ticket keys")))
		return -1;
	uint32_t sets = (entries + TLS_SID_WAYS - 1) / TLS_SID_WAYS;
	if (sets && !(SHM.sids = shm_map(sizeof *SHM.sids + (size_t)sets * TLS_SID_WAYS * sizeof(struct tls_sid),
	                               "TLS session cache")))
		return -1;
	if (SHM.sids)
		SHM.sids->sets = sets;
	return tls_tickets_rotate();
}

/* The master, every loop and at start: the file's keys when it is new or changed (a reload
 * gives a new c), else a new random key every tls_ticket_rotate. */
static void tls_tickets_tick(const struct lb_conf *c)
{
	static const struct lb_conf *applied;
	static struct file_sig sig;
	static uint64_t next;
	uint64_t now = mono_ms();
	if (!SHM.tickets || (c == applied && now < next))
		return;
	int fresh = c != applied;
	applied = c, next = now + 1000;
	if (c->tls_ticket_keys) {
		struct file_sig cur;
		file_sig_of(c->tls_ticket_keys, &cur);
		if (!fresh && file_sig_eq(&cur, &sig))
			return;
		sig = cur;
		struct tls_tkey k[TLS_TICKET_KEYS_MAX];
		char err[300];
		int n = tls_ticket_file(c->tls_ticket_keys, k, err, sizeof err);
		if (n < 0) {
			lb_err("tls_ticket_keys %s: the session ticket keys in use stay", err);
			return;
		}
		tls_tickets_set(k, (uint32_t)n, 1);
		memset(k, 0, sizeof k);
		if (!fresh)
			lb_err("tls_ticket_keys %s changed on disk: %d keys in use", c->tls_ticket_keys, n);
		return;
	}
	memset(&sig, 0, sizeof sig);
	if (SHM.tickets->from_file || now - SHM.tickets->rotated_ms >= c->tls_ticket_rotate)
		tls_tickets_rotate();
}

/* OpenSSL's ticket callback: seal with the first key, open with the one the ticket names */
static int tls_ticket_cb(SSL *ssl, unsigned char name[16], unsigned char *iv, EVP_CIPHER_CTX *ectx,
                         EVP_MAC_CTX *hctx, int enc)
{
	struct tls_io *io = tls_io_of(ssl);
	struct tls_tkey k;
	uint32_t i = 0, n;
	if (!SHM.tickets)
		return 0;
	spin_lock(&SHM.tickets->lock);
	n = SHM.tickets->n;
	for (; !enc && i < n && memcmp(SHM.tickets->k[i].name, name, 16); i++)
		;
	if (i < n)
		k = SHM.tickets->k[i];
	spin_unlock(&SHM.tickets->lock);
	if (!enc && SHM.tls)
		atomic_fetch_add_explicit(&SHM.tls->lookups, 1, memory_order_relaxed);
	if (i >= n)
		return 0; /* sealing: no key (cannot happen), no ticket; opening: a full handshake */
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac, sizeof k.hmac),
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)(uintptr_t)"SHA256", 0),
		OSSL_PARAM_construct_end(),
	};
	int ok;
	if (enc) {
		memcpy(name, k.name, 16);
		ok = RAND_bytes(iv, 16) == 1 && EVP_EncryptInit_ex(ectx, EVP_aes_256_cbc(), NULL, k.aes, iv) == 1;
	} else {
		ok = EVP_DecryptInit_ex(ectx, EVP_aes_256_cbc(), NULL, k.aes, iv) == 1;
	}
	ok = ok && EVP_MAC_CTX_set_params(hctx, params) == 1;
	memset(&k, 0, sizeof k);
	if (!ok)
		return -1;
	if (!enc) {
		if (SHM.tls)
			atomic_fetch_add_explicit(&SHM.tls->hits, 1, memory_order_relaxed);
		if (io && io->srv)
			io->srv->ticket = 1;
	}
	/* 2: renew: a ticket opened with an older key, and every TLS 1.3 resumption (RFC 8446 C.4: a
	 * client uses a 1.3 ticket once, so it needs a new one each time, as HAProxy and nginx give) */
	return !enc && (i > 0 || SSL_version(ssl) == TLS1_3_VERSION) ? 2 : 1;
}

/* -------------------------------------------------------------------- engines */

/* OpenSSL allocates and frees its record buffers itself (SSL_MODE_RELEASE_BUFFERS): no pool */
static int tls_worker_setup(size_t max_conns)
{
	LB_UNUSED(max_conns);
	return 0;
}

static void tls_trim(void) {}

/* ---- lb's BIO: the socket, without a copy. Reads give the bytes read with a PROXY header
 * first, then recv() into OpenSSL's buffer (a short read or EAGAIN clears the pump's
 * edge-triggered *rready; no recv() at all when it is clear). Writes send() at once when nothing
 * is queued; what the socket does not take goes into io->q (allocated then, freed once sent:
 * tls_flush_out) and counts as written, so OpenSSL never holds a record half sent. tls_can_send
 * keeps the queue near TLS_OUT_MAX; TLS_QUEUE_MAX is the hard bound (a peer that never reads
 * while making lb answer: the connection fails). */
#define TLS_QUEUE_MAX (4 * TLS_OUT_MAX)

static int tls_queue(struct tls_io *io, const char *p, size_t n)
{
	if (io->qe - io->qs + n > TLS_QUEUE_MAX)
		return -1;
	if (io->qs && io->qe + n > io->qcap) { /* sent bytes at the front: move the rest down */
		memmove(io->q, io->q + io->qs, io->qe - io->qs);
		io->qe -= io->qs, io->qs = 0;
	}
	if (io->qe + n > io->qcap) {
		size_t cap = LB_MAX(LB_MAX(io->qcap * 2, io->qe + n), (size_t)4096);
		unsigned char *q = realloc(io->q, cap);
		if (!q)
			return -1;
		io->q = q, io->qcap = cap;
	}
	memcpy(io->q + io->qe, p, n);
	io->qe += n;
	return 0;
}

/* an empty queue's first allocation: n bytes of records (plus their overhead) */
static int tls_queue_reserve(struct tls_io *io, size_t n)
{
	size_t cap = n + n / 512 + 256; /* 22 bytes of TLS 1.3 overhead per record of up to 16 KB */
	if (!(io->q = malloc(cap)))
		return -1;
	io->qcap = cap, io->qs = io->qe = 0;
	return 0;
}

static int tls_bio_read(BIO *b, char *dst, int len)
{
	struct tls_io *io = BIO_get_data(b);
	BIO_clear_retry_flags(b);
	if (io->pre) {
		size_t n = LB_MIN((size_t)len, io->pre_e - io->pre_s);
		memcpy(dst, io->pre + io->pre_s, n);
		if ((io->pre_s += n) == io->pre_e)
			free(io->pre), io->pre = NULL;
		return (int)n;
	}
	if (io->fd < 0 || !io->rready || !*io->rready) {
		BIO_set_retry_read(b);
		return -1;
	}
	ssize_t n = recv(io->fd, dst, (size_t)len, 0);
	if (n > 0) {
		if (n < len)
			*io->rready = 0;
		io->got_bytes = 1, io->starved = 0;
		return (int)n;
	}
	if (n == 0) {
		io->eof = 1; /* TCP end without close_notify: HTTP framing tells truncation apart */
		return 0;
	}
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
		*io->rready = 0;
		BIO_set_retry_read(b);
		return -1;
	}
	io->sys_err = errno;
	return -1;
}

static int tls_bio_write(BIO *b, const char *src, int len)
{
	struct tls_io *io = BIO_get_data(b);
	size_t sent = 0;
	BIO_clear_retry_flags(b);
	if (io->sys_err) {
		errno = io->sys_err;
		return -1;
	}
	if (io->qe == io->qs && io->fd >= 0 && !io->cork) {
		ssize_t n = send(io->fd, src, (size_t)len, MSG_NOSIGNAL);
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
			io->sys_err = errno;
			return -1;
		}
		sent = n > 0 ? (size_t)n : 0;
	}
	if (sent < (size_t)len && tls_queue(io, src + sent, (size_t)len - sent) != 0) {
		io->sys_err = errno = ENOBUFS;
		return -1;
	}
	return len;
}

static long tls_bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	LB_UNUSED(num), LB_UNUSED(ptr);
	struct tls_io *io = BIO_get_data(b);
	switch (cmd) {
	case BIO_CTRL_FLUSH: return 1; /* records go out as they are written */
	case BIO_CTRL_EOF: return io && io->eof;
	case BIO_CTRL_PENDING: return io && io->pre ? (long)(io->pre_e - io->pre_s) : 0;
	case BIO_CTRL_WPENDING: return io ? (long)(io->qe - io->qs) : 0;
	case BIO_C_GET_FD: return -1; /* no kernel TLS */
	}
	return 0;
}

static int tls_bio_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

/* the method, made once (the master, or a worker's first connection) */
static BIO_METHOD *tls_bio_method(void)
{
	static BIO_METHOD *m;
	if (m)
		return m;
	int type = BIO_get_new_index() | BIO_TYPE_SOURCE_SINK;
	BIO_METHOD *n = BIO_meth_new(type, "lb socket");
	if (!n || !BIO_meth_set_read(n, tls_bio_read) || !BIO_meth_set_write(n, tls_bio_write) ||
	    !BIO_meth_set_ctrl(n, tls_bio_ctrl) || !BIO_meth_set_create(n, tls_bio_create)) {
		BIO_meth_free(n);
		return NULL;
	}
	tls_bio_type = type;
	return m = n;
}

/* an SSL on ctx over lb's socket BIO; 0 or -1 */
static int tls_io_init(struct tls_io *io, SSL_CTX *ctx)
{
	BIO_METHOD *m = tls_bio_method();
	BIO *b = m ? BIO_new(m) : NULL;
	io->fd = -1;
	if (!b || !(io->ssl = SSL_new(ctx))) {
		BIO_free(b);
		return -1;
	}
	BIO_set_data(b, io);
	SSL_set_bio(io->ssl, b, b); /* one reference, the SSL's; tls_io_of finds io through it */
	return 0;
}

static void tls_io_free(struct tls_io *io)
{
	SSL_free(io->ssl); /* and its BIO */
	ERR_clear_error();
	free(io->pre);
	free(io->q);
}

/* the subject of a connection without a verified client certificate (most): no allocation */
static char tls_no_subject[1];

/* NULL with errno ENOMEM when out of memory */
static struct tls_conn *tls_conn_new(const struct lb_listener *L, const char *const *alpn, size_t nalpn)
{
	struct tls_conn *tc = calloc(1, sizeof *tc);
	if (!tc || tls_io_init(&tc->io, L->tlsm->ctx) != 0) {
		free(tc);
		errno = ENOMEM;
		return NULL;
	}
	tc->io.srv = tc;
	tc->subject = tls_no_subject;
	tc->t = L->tlsm;
	tc->alpn = alpn, tc->nalpn = nalpn;
	SSL_set_accept_state(tc->io.ssl);
	return tc;
}

static void tls_conn_free(struct tls_conn *tc)
{
	if (!tc)
		return;
	tls_io_free(&tc->io);
	if (tc->subject != tls_no_subject)
		free(tc->subject);
	free(tc);
}

/* kept until the BIO has fed them to OpenSSL (at most LB_PROXY_V2_MAX bytes, once) */
static void tls_feed_pre(struct tls_conn *tc, const void *p, size_t n)
{
	struct tls_io *io = &tc->io;
	unsigned char *b = realloc(io->pre, io->pre_e + n);
	if (!b)
		return; /* the handshake fails on the missing bytes */
	memcpy(b + io->pre_e, p, n);
	io->pre = b, io->pre_e += n;
}

static const char *tls_sni(const struct tls_conn *tc)
{
	const char *s = SSL_get_servername(tc->io.ssl, TLSEXT_NAMETYPE_host_name);
	return s ? s : "";
}

/* The access log's view of a client's TLS once the handshake is done: "TLSv1.3", "TLSv1.2" and
 * OpenSSL's cipher name (as nginx's $ssl_protocol and $ssl_cipher); "-" before. */
static void tls_log_info(const struct tls_conn *t, const char **version, const char **cipher)
{
	*version = *cipher = "-";
	if (!t->hs_done)
		return;
	const char *v = SSL_get_version(t->io.ssl), *c = SSL_get_cipher_name(t->io.ssl);
	*version = v ? v : "-";
	*cipher = c ? c : "-";
}

__attribute__((unused)) static const char *tls_alpn(const struct tls_conn *tc)
{
	static char b[256];
	const unsigned char *p;
	unsigned n;
	SSL_get0_alpn_selected(tc->io.ssl, &p, &n);
	snprintf(b, sizeof b, "%.*s", (int)n, p ? (const char *)p : "");
	return b;
}

static int tls_fail_why(const struct tls_conn *tc, char *why, size_t cap)
{
	return lb_tls_fail_classify(tc->io.err, tc->t->ntas > 0, tc->no_common_curve, why, cap);
}

/* "CN=client,O=Example": the verified client's subject, safe to put in a header */
static void tls_subject(struct tls_conn *tc)
{
	static const int nids[] = { NID_commonName, NID_organizationalUnitName, NID_organizationName, NID_countryName };
	static const char *const keys[] = { "CN", "OU", "O", "C" };
	X509 *x = SSL_get0_peer_certificate(tc->io.ssl);
	X509_NAME *nm = x ? X509_get_subject_name(x) : NULL;
	char *b = nm && tc->subject == tls_no_subject ? malloc(TLS_SUBJECT_MAX) : NULL;
	size_t w = 0;
	if (!b)
		return; /* none, or out of memory: no subject */
	b[0] = 0;
	for (int i = 0; i < 4; i++) {
		char v[80];
		if (X509_NAME_get_text_by_NID(nm, nids[i], v, sizeof v) > 0)
			w = tls_subject_add(b, TLS_SUBJECT_MAX, w, keys[i], v);
	}
	tc->subject = b;
}

/* the verify result of a certificate check that failed -> lb's code */
static int tls_verify_code(long v, int server_side)
{
	switch (v) {
	case X509_V_ERR_CERT_HAS_EXPIRED: case X509_V_ERR_CERT_NOT_YET_VALID: return LB_TLS_ERR_X509_EXPIRED;
	case X509_V_ERR_HOSTNAME_MISMATCH: return LB_TLS_ERR_X509_BAD_SERVER_NAME;
	case X509_V_ERR_INVALID_PURPOSE: return server_side ? LB_TLS_ERR_X509_FORBIDDEN_KEY_USAGE : LB_TLS_ERR_X509_NOT_TRUSTED;
	}
	return LB_TLS_ERR_X509_NOT_TRUSTED;
}

/* OpenSSL's error of a failed handshake or record -> lb's TLS error code (BearSSL's numbers) */
static int tls_ossl_code(struct tls_io *io)
{
	unsigned long e = ERR_peek_error();
	int r = ERR_GET_LIB(e) == ERR_LIB_SSL ? ERR_GET_REASON(e) : 0, server = io->srv != NULL;
	if (io->alert_recv)
		return LB_TLS_ERR_RECV_FATAL_ALERT + io->alert_recv - 1;
	switch (r) {
	case SSL_R_CERTIFICATE_VERIFY_FAILED: return tls_verify_code(SSL_get_verify_result(io->ssl), server);
	case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE: return LB_TLS_ERR_NO_CLIENT_AUTH;
	case SSL_R_UNSUPPORTED_PROTOCOL: case SSL_R_VERSION_TOO_LOW: case SSL_R_WRONG_SSL_VERSION:
		return server ? LB_TLS_ERR_SEND_FATAL_ALERT + 70 : LB_TLS_ERR_UNSUPPORTED_VERSION;
	case SSL_R_INAPPROPRIATE_FALLBACK: return LB_TLS_ERR_SEND_FATAL_ALERT + 86;
	case SSL_R_NO_SHARED_CIPHER: case SSL_R_NO_SHARED_GROUPS: case SSL_R_NO_SUITABLE_KEY_SHARE:
	case SSL_R_NO_SHARED_SIGNATURE_ALGORITHMS: case SSL_R_NO_CIPHERS_AVAILABLE:
		return server ? LB_TLS_ERR_SEND_FATAL_ALERT + 40 : LB_TLS_ERR_BAD_CIPHER_SUITE;
	case SSL_R_HTTP_REQUEST: case SSL_R_HTTPS_PROXY_REQUEST: case SSL_R_WRONG_VERSION_NUMBER:
	case SSL_R_UNKNOWN_PROTOCOL: case SSL_R_UNSUPPORTED_SSL_VERSION:
		return LB_TLS_ERR_UNSUPPORTED_VERSION;
	case SSL_R_RECORD_LENGTH_MISMATCH: case SSL_R_LENGTH_TOO_SHORT: case SSL_R_BAD_LENGTH:
		return LB_TLS_ERR_BAD_LENGTH;
	case SSL_R_BAD_RECORD_TYPE: case SSL_R_UNEXPECTED_RECORD: return LB_TLS_ERR_UNKNOWN_TYPE;
	case SSL_R_PACKET_LENGTH_TOO_LONG: case SSL_R_ENCRYPTED_LENGTH_TOO_LONG: case SSL_R_DATA_LENGTH_TOO_LONG:
	case SSL_R_EXCESSIVE_MESSAGE_SIZE: case SSL_R_RECORD_TOO_SMALL:
		return LB_TLS_ERR_TOO_LARGE;
	case SSL_R_DECRYPTION_FAILED_OR_BAD_RECORD_MAC: case SSL_R_DECRYPTION_FAILED: return LB_TLS_ERR_BAD_MAC;
	case SSL_R_BAD_SIGNATURE: return LB_TLS_ERR_BAD_SIGNATURE;
	case SSL_R_CALLBACK_FAILED: case SSL_R_CERT_CB_ERROR: return LB_TLS_ERR_NO_RANDOM;
	}
	if (io->alert_sent)
		return LB_TLS_ERR_SEND_FATAL_ALERT + io->alert_sent - 1;
	return LB_TLS_ERR_BAD_HANDSHAKE;
}

/* A client engine for a connection to s: the pool's CAs, and SNI + name check with tls_sni or
 * the server's host name (an address: the chain is verified, no name). */
static struct tls_up *tls_up_new(const struct lb_pool *p, const struct lb_server *s)
{
	struct tls_up *u = calloc(1, sizeof *u);
	if (!u || tls_io_init(&u->io, p->tlsm->ctx) != 0) {
		free(u);
		return NULL;
	}
	const char *sni = p->tls_sni ? p->tls_sni : host_is_name(s->host) ? s->host : NULL;
	SSL *ssl = u->io.ssl;
	SSL_set_connect_state(ssl);
	if ((sni && (!SSL_set_tlsext_host_name(ssl, sni) || !SSL_set1_host(ssl, sni))) ||
	    SSL_set_alpn_protos(ssl, (const unsigned char *)"\x08http/1.1", 9) != 0) {
		tls_io_free(&u->io);
		free(u);
		return NULL;
	}
	SSL_do_handshake(ssl); /* the ClientHello into the write BIO: the pump sends it */
	ERR_clear_error();
	return u;
}

static void tls_up_free(struct tls_up *u)
{
	if (!u)
		return;
	tls_io_free(&u->io);
	free(u);
}

/* -------------------------------------------------------------------- the pump */

/* Send the records queued: 1 all sent, 0 the socket is full, -1 the socket failed (errno). */
static int tls_flush_out(struct tls_io *io, int fd)
{
	while (io->qs < io->qe && !io->sys_err) {
		ssize_t n = send(fd, io->q + io->qs, io->qe - io->qs, MSG_NOSIGNAL);
		if (n > 0) {
			io->qs += (size_t)n;
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			return 0;
		io->sys_err = n < 0 ? errno : EPIPE;
	}
	if (io->sys_err) {
		errno = io->sys_err;
		return -1;
	}
	free(io->q); /* drained: an idle connection holds no queue */
	io->q = NULL, io->qs = io->qe = io->qcap = 0;
	return 1;
}

/* a clean end: close_notify, sent now if the socket takes it */
static void tls_close_notify(struct tls_io *io, int fd)
{
	io->fd = fd, io->rready = NULL;
	SSL_shutdown(io->ssl);
	ERR_clear_error();
	tls_flush_out(io, fd);
}

static int tls_records_pending(const struct tls_io *io) { return io->qs < io->qe; }

/* plaintext decrypted and not read yet, bytes of a PROXY read not fed yet, or records read
 * ahead that OpenSSL has not tried yet (after a WANT_READ what it holds is a partial record) */
static int tls_has_input(const struct tls_io *io)
{
	return SSL_pending(io->ssl) > 0 || io->pre || (!io->starved && SSL_has_pending(io->ssl));
}

static int tls_can_send(const struct tls_io *io)
{
	return SSL_is_init_finished(io->ssl) && !(SSL_get_shutdown(io->ssl) & SSL_SENT_SHUTDOWN) &&
	       io->qe - io->qs < TLS_OUT_MAX;
}

/* The handshake completed: counted, and the client certificate's subject kept. */
static int tls_just_done(struct tls_conn *tc)
{
	if (tc->hs_done || !SSL_is_init_finished(tc->io.ssl))
		return 0;
	tc->hs_done = 1;
	const SSL_CIPHER *ci = SSL_get_current_cipher(tc->io.ssl);
	tc->resumed = !SSL_session_reused(tc->io.ssl) ? 0 : tc->ticket ? 1 : 2;
	tls_count_handshake(ci ? (uint16_t)SSL_CIPHER_get_protocol_id(ci) : 0, tc->resumed);
	if (tc->t->ntas)
		tls_subject(tc);
	return 1;
}

/* Plaintext from the peer into dst: > 0 bytes; 0 at the end of the stream; -1 with errno
 * EAGAIN when there is none yet; -1 with another errno when the connection failed
 * (EPROTO: TLS error, in io->err). */
static ssize_t tls_recv(struct tls_io *io, int fd, bool *rready, char *dst, size_t cap)
{
	size_t got = 0;
	io->fd = fd, io->rready = rready; /* io->eof stays: after the end, every call answers 0 */
	ERR_clear_error();
	int ok = SSL_read_ex(io->ssl, dst, cap, &got); /* the BIO recv()s as it needs */
	int e = ok ? SSL_ERROR_NONE : SSL_get_error(io->ssl, 0);
	io->rready = NULL;
	if (io->srv)
		tls_just_done(io->srv);
	if (ok) {
		if (tls_flush_out(io, fd) < 0)
			return -1;
		return (ssize_t)got;
	}
	if (e == SSL_ERROR_ZERO_RETURN && !io->eof) { /* the peer's close_notify: answered with lb's */
		SSL_shutdown(io->ssl);
		ERR_clear_error();
		tls_flush_out(io, fd);
		return 0;
	}
	if (io->eof || io->sys_err) { /* TCP end without close_notify, or the socket failed */
		ERR_clear_error();
		if (!io->sys_err)
			return 0;
		errno = io->sys_err;
		return -1;
	}
	if (e != SSL_ERROR_WANT_READ) {
		io->err = e == SSL_ERROR_SSL ? tls_ossl_code(io) : LB_TLS_ERR_BAD_HANDSHAKE;
		tls_flush_out(io, fd); /* the alert, if the socket takes it */
		ERR_clear_error();
		errno = EPROTO;
		return -1;
	}
	io->starved = 1;
	if (tls_flush_out(io, fd) < 0)
		return -1;
	errno = EAGAIN;
	return -1;
}

/* Plaintext to the peer from iov: bytes taken (encrypted and sent, or queued), or -1 with
 * errno EAGAIN (the queue is full or the handshake is not done) or another errno. A head and a
 * body that fit one record go as one (one record, one send()); larger writes go in pieces of at
 * most TLS_OUT_MAX, so the queue stays under 2 * TLS_OUT_MAX. */
static ssize_t tls_send(struct tls_io *io, int fd, const struct iovec *iov, int k)
{
	char one[16384]; /* a record's plaintext */
	struct iovec g = { one, 0 };
	size_t total = 0;
	int failed = 0, stop = 0;
	io->fd = fd, io->rready = NULL;
	for (int i = 0; i < k; i++)
		g.iov_len += iov[i].iov_len;
	if (k > 1 && g.iov_len <= sizeof one) {
		for (int i = 0, at = 0; i < k; at += (int)iov[i++].iov_len)
			memcpy(one + at, iov[i].iov_base, iov[i].iov_len);
		iov = &g, k = 1;
	}
	/* more than a record: the records go out together, one send() per TLS_OUT_MAX at most */
	int cork = g.iov_len > sizeof one, f = 1;
	for (int i = 0; i < k && !stop; i++) {
		size_t off = 0;
		while (off < iov[i].iov_len && tls_can_send(io)) {
			size_t w = 0, len = LB_MIN(iov[i].iov_len - off, (size_t)TLS_OUT_MAX);
			io->cork = cork && (io->q || tls_queue_reserve(io, len) == 0);
			ERR_clear_error();
			int ok = SSL_write_ex(io->ssl, (const char *)iov[i].iov_base + off, len, &w);
			io->cork = 0;
			if (!ok) {
				failed = SSL_get_error(io->ssl, 0) != SSL_ERROR_WANT_READ;
				break;
			}
			total += w, off += w;
			if (cork && f > 0 && (f = tls_flush_out(io, fd)) < 0) /* f 0: full, send no more now */
				break;
		}
		stop = off < iov[i].iov_len || f < 0;
	}
	ERR_clear_error();
	if (f > 0) /* 0: corked records wait for the socket (EV_W) */
		f = tls_flush_out(io, fd);
	if (total)
		return (ssize_t)total;
	if (f < 0 || failed || (SSL_get_shutdown(io->ssl) & SSL_SENT_SHUTDOWN)) {
		errno = io->sys_err ? io->sys_err : EPIPE;
		return -1;
	}
	errno = EAGAIN;
	return -1;
}

#endif /* LB_TLS_OPENSSL */

#ifdef LB_HTTP2
/* Did the client choose h2 by ALPN? (only offered on HTTP/2 listeners) */
static bool tls_alpn_h2(const struct tls_conn *t)
{
	return !strcmp(tls_alpn(t), "h2");
}
#endif


/* -------------------------------------------------------------------- loading a listener's or pool's files */

/* Load a listener's cert and client_ca files; errors name the file and what is wrong. */
static int tls_load_listener(struct lb_listener *l, int *bad_line, const char **bad_key, char *err, size_t errlen)
{
	struct lb_tls *t = calloc(1, sizeof *t);
	if (!t) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < l->ncerts; i++) {
		struct lb_cert *c = &t->certs[t->ncerts];
		c->line = l->cert_lines[i];
		file_sig_of(l->certs[i], &t->sig[i]);
		char e[256];
		if (cert_load(t, c, l->certs[i], e, sizeof e) != 0) {
			*bad_line = c->line, *bad_key = "cert";
			snprintf(err, errlen, "cert %s: %s", l->certs[i], e);
			tls_free(t);
			return -1;
		}
		t->ncerts++;
		const char *of = i < l->nocsp && strcmp(l->ocsp[i], "off") ? l->ocsp[i] : NULL;
		if (of)
			file_sig_of(of, &t->sig[LB_MAX_CERTS + 1 + i]);
		if (of && tls_ocsp_load(c, of, err, errlen) != 0) {
			*bad_line = l->ocsp_lines[i], *bad_key = "ocsp";
			tls_free(t);
			return -1;
		}
	}
	if (l->client_ca) {
		char e[256];
		file_sig_of(l->client_ca, &t->sig[LB_MAX_CERTS]);
		if (ca_load(t, l->client_ca, e, sizeof e) != 0) {
			*bad_line = l->client_ca_line, *bad_key = "client_ca";
			snprintf(err, errlen, "client_ca %s: %s", l->client_ca, e);
			tls_free(t);
			return -1;
		}
	}
	char e[256];
	if (tls_listener_ready(t, l, e, sizeof e) != 0) {
		*bad_line = l->cert_lines[0], *bad_key = "cert";
		snprintf(err, errlen, "cert %s: %s", l->certs[0], e);
		tls_free(t);
		return -1;
	}
	tls_free(l->tlsm);
	l->tlsm = t;
	return 0;
}

#define LB_SYSTEM_CAS "/etc/ssl/certs/ca-certificates.crt"

/* The CAs a pool's TLS servers are verified against: tls_ca, else the system's bundle. */
static int tls_load_pool(struct lb_pool *p, char *err, size_t errlen)
{
	struct lb_tls *t = calloc(1, sizeof *t);
	const char *f = p->tls_ca ? p->tls_ca : LB_SYSTEM_CAS;
	char e[256];
	if (!t || ca_load(t, f, e, sizeof e) != 0 || tls_pool_ready(t, e, sizeof e) != 0) {
		snprintf(err, errlen, "tls_ca %s: %s", f, t ? e : "out of memory");
		tls_free(t);
		return -1;
	}
	tls_free(p->tlsm);
	p->tlsm = t;
	return 0;
}

/* The certificate for an SNI name: an exact name first, then a wildcard, else the first. */
static size_t tls_pick_cert(const struct lb_tls *t, const char *sni)
{
	size_t hn = sni ? strlen(sni) : 0;
	for (int wild = 0; hn && wild < 2; wild++)
		for (size_t i = 0; i < t->ncerts; i++)
			for (size_t k = 0; k < t->certs[i].info.nnames; k++) {
				const char *nm = t->certs[i].info.names[k];
				if ((nm[0] == '*') == wild && lb_cert_name_match(nm, sni, hn))
					return i;
			}
	return 0;
}

/* Made once by the master, before any fork: the counters, and the session-ID cache (BearSSL)
 * or the ticket keys (OpenSSL) every worker of every generation shares. */
static int tls_shared_create(unsigned entries)
{
	if (!(SHM.tls = shm_map(sizeof *SHM.tls, "TLS counters")))
		return -1;
	SHM.tls->entries = entries;
	return tls_cache_create(entries);
}

/* ==================================================================== 8. connections
 * Owns W, the serving worker's state (also sections 9-11's and the worker loop's in 15).
 * Pools of connection structs and buffers (bounded by max_connections), the deadline heap, and
 * the end of a connection (conn_close, conn_abort). One owner per buffer: a client connection owns
 * in/out/qh/rh; backend connections own no buffer. Idle server connections wait in per-server pools
 * (in the server's runtime state, srv_rt(): section 4's struct lb_rt of g_conf, found here by id):
 * idle_may_keep admits them, idle_purge (once a second) sizes them. Also log_throttled, for events a
 * flood repeats (one line a second per call site, counted; lb_err itself is in section 2). The byte
 * movers (client_read/write, backend_read/write) are in section 9. Calls sections 2, 3, 6, 7, and,
 * declared ahead, what ends an exchange: 9 (conn_progress, respond_own, splice_end), 11 (the circuit
 * breaker), 12 (counters, limits), 14 (access_log_write), 15 (conn_admitted). */

struct buf {
	char *d;
	uint32_t s, e;
};

struct conn;
struct lb_bconn {
	struct evh h;
	const struct lb_server *srv;
	const struct lb_pool *pool;
	struct conn *c;            /* NULL while idle */
	struct conn *owner;        /* idle but private to this client (it carries its PROXY header) */
	struct lb_bconn *next;     /* idle list, free list, dead list */
	int connected, reused, eof, reset;
	uint8_t pxs, pxn;          /* PROXY header bytes sent, and to send first */
	char px[LB_PROXY_V1_MAX + 1];
	struct tls_up *tls;        /* server ... tls: the client engine */
};

enum { Q_HEAD, Q_BODY, Q_DONE, Q_TUNNEL, Q_PROXY };
enum { R_NONE, R_WAIT, R_BODY, R_DONE, R_TUNNEL };
#define LEFT_CHUNKED (-1)
#define LEFT_UNTIL_CLOSE (-2)

/* Field order and widths keep an idle keep-alive connection small (issue 10 measures RSS
 * per idle connection): flags are bools, small enums bytes, addresses formatted on demand. */
struct conn {
	struct evh h;
	struct conn *prev, *next;      /* live list; next also links free and dead lists */
	struct conn *pnext;            /* pending list: work left over from a capped turn */
	const struct lb_listener *L;
	struct lb_bconn *b;
	struct buf in, out, qh, rh;
	uint64_t req_fwd, resp_fwd;    /* bytes at in.s / out.s framed and ready to forward */
	int64_t req_left, resp_left;   /* Content-Length still to frame, or LEFT_* */
	struct lb_chunk req_ck, resp_ck;
	uint64_t max_body;
	const struct lb_server *sticky;      /* the server the client's sticky cookie names, if any */
	uint64_t resp_timeout;
	const struct lb_pool *pool;
	const struct lb_route *route;
	const struct lb_server *srv;
	uint64_t t_start, t_head, t_active, t_req_done, t_conn;
	uint64_t t_resp_wait;          /* response_timeout runs from here: the last request byte sent, or an interim head */
	uint64_t deadline;
	size_t hidx;
	uint64_t bytes_out, bytes_in;   /* body bytes to the client (all bytes in a tunnel); from it */
	struct lb_bconn *own_b;        /* an idle server connection private to this client (send_proxy) */
	struct tls_conn *tls;          /* the TLS engine of a tls = on listener's connection */
	struct lb_splice *sp;          /* mode tcp with splice: the two pipes the bytes go through */
	uint64_t wall_start_ms;        /* wall clock of the request start, for logs */
	uint64_t t_up_us;              /* µs (mono_us): a server connect began (0: its time was counted) */
	uint32_t lg_mlen, lg_ulen, lg_ref_off, lg_ref_len, lg_ua_off, lg_ua_len, lg_id_off, lg_id_len;
	uint32_t lg_host_off, lg_host_len;
	/* the access log's timers (mono_us; 0: not reached): the request begun, its head whole, the server
	 * connection ready (the last try's), the server's first response byte */
	uint64_t us_start, us_head, us_ready, us_first;
	uint64_t req_bytes;            /* this request's bytes from the client: head and body as read */
	uint8_t nretries;              /* tries on another server (or a fresh connection) this exchange took */
	uint32_t scan;                 /* head bytes already looked at for a line end */
	unsigned nreq;
	int li;
	int16_t resp_status;
	char term[2];                  /* termination state for the access log (HAProxy's codes); 0: "--" */
	uint8_t own;                   /* OWN_*: why lb answered itself (OWN_SERVER: it did not) */
	int8_t retries_left;           /* pool retries: 0..10 */
	uint8_t q, r;                  /* Q_*, R_* */
	uint8_t req_method, req_minor;
	struct lb_ip ip;               /* the client address policies see (this request's) */
	struct lb_ip conn_ip;          /* the connection's client: the socket's peer or its PROXY header's */
	struct lb_proxy px;            /* the connection's addresses, for send_proxy */
	bool pending;
	bool cin_eof, shut_b, shut_c;
	bool close_after, backend_reuse, holds_srv;
	bool close_announced;          /* the response head told the client this is the last exchange */
	bool set_cookie;               /* the response names the chosen server in a new cookie */
	bool reuse_retried;
	bool cb_trial;                 /* holds a trial slot of its server's half-open circuit */
	bool cb_pending;               /* a good head's circuit verdict waits for the end of its answer */
	bool req_bodyless, req_idem, upgrade;
	bool resp_started;
	bool sent_any;                 /* a byte of this exchange's response reached the client */
	bool px_dst_ok;                /* px.dst is known (from a PROXY header or getsockname) */
	bool xff_trusted;              /* conn_ip is a trusted proxy: its X-Forwarded-For counts */
	bool ipc_held;                 /* counted in the per-address connection table */
	bool lg_parsed;                /* the head was parsed: req_minor is this request's */
#ifdef LB_HTTP2
	struct h2c *h2;                /* an HTTP/2 connection: its session and streams (section 9) */
	struct h2s *h2s;               /* an HTTP/2 stream: no socket; its client side is the session's */
#endif
};
#ifdef LB_HTTP2
#define CONN_IS_STREAM(c) ((c)->h2s != NULL)
#else
#define CONN_IS_STREAM(c) 0
#endif

struct lsock {
	struct evh h;
	int li;
};

static const struct lb_conf *g_conf; /* not written after load: what lb writes is in g_conf->rt (section 4) */

/* the runtime state (section 4) of a server, a pool or a route of g_conf */
static struct srv_rt *srv_rt(const struct lb_server *s) { return &g_conf->rt->srv[s->id]; }
static struct pool_rt *pool_rt(const struct lb_pool *p) { return &g_conf->rt->pool[p - g_conf->pools]; }
static struct route_rt *route_rt(const struct lb_route *r) { return &g_conf->rt->route[r - g_conf->routes]; }
static struct listener_rt *lsn_rt(const struct lb_listener *l) { return &g_conf->rt->lsn[l - g_conf->listeners]; }

/* ---- struct lb_worker W: the serving worker (gathered by gather_globals.py)
 * Buffer and connection pools, the deadline heap, listening sockets, accept pacing, stopping, scratch
 * parse results, the PRNG, throttled log slots, spare descriptors, kept splice pipes, health checks,
 * the control and signal handlers. Owner: sections 8-11 and the worker's loop in 15; written by the
 * worker only (setup_runtime sizes it). The master leaves it zero, so a fork inherits nothing to undo.
 * The fuzzer sets it up once (setup_runtime), resets rng before each input, and checks after each that
 * the pools are whole and nothing is pending (check_clean).
 */
static struct lb_worker {
	size_t bufsize;
	struct lb_pages bufs; /* of W.bufsize (section 2's page pools) */
	struct conn *free_conns, *live, *dead;
	struct lb_bconn *free_bconns, *dead_bconns;
	size_t nconns;
	size_t nbconns; /* open server connections, idle ones included */
	size_t fd_budget; /* descriptors the event loop takes (setup_runtime) */
	struct conn *pending;
	struct conn **heap;
	size_t nheap;
	struct lsock *lsocks;
	size_t nlsocks;
	int accept_paused;
	unsigned max_conns; /* max_connections as the descriptor limit allows (lb_conns_for_fds) */
	uint64_t accept_retry_at; /* paused by a resource error: accept again then (0: not so paused) */
	uint64_t accept_backoff; /* ms: 100, doubling up to 1000 while the errors go on */
	size_t accept_conns; /* W.nconns at that pause: one closing frees a descriptor and ends it */
	int stopping;
	uint64_t stop_deadline, stop_began;
	struct lb_req req; /* scratch: parsed head, used before the next parse only */
	struct lb_resp resp;
	char *scratch; /* W.bufsize bytes: normalised paths */
	char *scratch2; /* W.bufsize bytes: redirect targets */
	uint64_t rng[2];
	/* Slots with repeats not reported yet: log_throttle_flush reports them once their second is over. */
	struct lb_throttle *throttled;
	/* Descriptors held in reserve for server sockets. A client accepted while descriptors run out
	 * (another worker's files, a limit lowered from outside) would otherwise get a 503 for want of the
	 * one its server connection needs: socket() failing with EMFILE gives a spare back and tries
	 * again, and accepting then waits until the reserve is whole (accept_may_resume). */
	int fd_spare[LB_FD_SPARE];
	int nspare;
	struct lb_splice *free_splices;
	size_t nfree_splices;
	struct hc *hc;
	size_t nhc;
	uint64_t hc_next;
	struct lb_resp hc_resp;
	/* checks stopped during an event batch: freed after it, as events of this batch may name them */
	struct hc *hc_dead;
	size_t nhc_dead;
	uint32_t admin_seen;
	struct evh sigh;
	struct evh ctlh;
	uint64_t trim_at;
} W = {
	.fd_budget = SIZE_MAX,
	.hc_next = UINT64_MAX,
};

/* a retiring worker closes a keep-alive connection idle this long (since the retire began):
 * long enough that a client sending its next request is not cut off, short enough that an
 * old generation does not linger for idle_timeout */
#define LB_RETIRE_IDLE_MS 1000

/* errno of a resource this process or host ran out of (descriptors, socket buffers, memory): the
 * fault is lb's, never a server's */
static int local_resource_error(int e) { return e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM; }

/* A slot's line: this event with the count of those left out before it, or (`alone`, from
 * log_throttle_flush) the count only, under the last line's text. */
static void throttle_line(const struct lb_throttle *t, uint64_t quiet, uint64_t span_ms, int alone)
{
	if (quiet)
		lb_log(t->level, "%s (%s%llu more like this in the last %llu s)", t->text, alone ? "repeated: " : "",
		       (unsigned long long)quiet, (unsigned long long)LB_MAX((span_ms + 500) / 1000, 1));
	else
		lb_log(t->level, "%s", t->text);
}

/* An error-log line for an event that can repeat at the rate of a flood (per client, per accept,
 * per local resource error): at most one line a second per slot (one static slot per call site);
 * the next line says how many were left out, and log_throttle_flush says it if no next line comes. */
static void log_throttled_at(struct lb_throttle *t, int lv, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void log_throttled_at(struct lb_throttle *t, int lv, const char *fmt, ...)
{
	t->level = lv;
	uint64_t quiet, span;
	if (!lb_throttle_pass(t, mono_ms(), 1000, &quiet, &span)) {
		if (!t->listed) {
			t->listed = 1;
			t->next = W.throttled;
			W.throttled = t;
		}
		return;
	}
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(t->text, sizeof t->text, fmt, ap);
	va_end(ap);
	throttle_line(t, quiet, span, 0);
}
/* most such events are a client's: info; lb's own failures name their level */
#define log_throttled(t, ...) log_throttled_at((t), LB_LV_INFO, __VA_ARGS__)

/* Called from the loops (cheap when no slot waits): the repeats of a slot whose second is over
 * and that no new line of its own reported. */
static void log_throttle_flush(void)
{
	uint64_t now = W.throttled ? mono_ms() : 0;
	for (struct lb_throttle **pp = &W.throttled; *pp;) {
		struct lb_throttle *t = *pp;
		if (t->quiet && now - t->last < 1000) {
			pp = &t->next;
			continue;
		}
		if (t->quiet) {
			throttle_line(t, t->quiet, now - t->last, 1);
			t->last = now;
			t->quiet = 0;
		}
		t->listed = 0;
		*pp = t->next;
	}
}

static uint64_t rand64(void)
{
	uint64_t s1 = W.rng[0], s0 = W.rng[1], r = s0 + s1;
	W.rng[0] = s0;
	s1 ^= s1 << 23;
	W.rng[1] = s1 ^ s0 ^ (s1 >> 18) ^ (s0 >> 5);
	return r;
}

static void rng_seed(void)
{
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	if (fd < 0 || read(fd, W.rng, sizeof W.rng) != (ssize_t)sizeof W.rng) {
		W.rng[0] = mix64((uint64_t)time(NULL));
		W.rng[1] = mix64((uint64_t)getpid() ^ mono_ms());
	}
	if (fd >= 0)
		close(fd);
	W.rng[0] |= 1;
}

static size_t buf_len(const struct buf *b) { return b->e - b->s; }

static int buf_get(struct buf *b)
{
	if (b->d)
		return 0;
	if (!(b->d = pages_take(&W.bufs)))
		return LB_ENOMEM;
	b->s = b->e = 0;
	return 0;
}

static void buf_put(struct buf *b)
{
	if (!b->d)
		return;
	pages_give(&W.bufs, b->d);
	b->d = NULL;
	b->s = b->e = 0;
}

/* free space at the tail, after moving data to the front when that helps */
static size_t buf_room(struct buf *b)
{
	if (!b->d)
		return 0;
	if (b->s == b->e)
		b->s = b->e = 0;
	else if (b->s > 0 && W.bufsize - b->e < W.bufsize / 4) {
		memmove(b->d, b->d + b->s, b->e - b->s);
		b->e -= b->s;
		b->s = 0;
	}
	return W.bufsize - b->e;
}

static int buf_put_str(struct buf *b, const char *s, size_t n)
{
	if (W.bufsize - b->e < n)
		return -1;
	memcpy(b->d + b->e, s, n);
	b->e += (uint32_t)n;
	return 0;
}

#define buf_put_lit(b, lit) buf_put_str((b), (lit), sizeof(lit) - 1)

static int buf_put_cstr(struct buf *b, const char *s) { return buf_put_str(b, s, strlen(s)); }

/* decimal and fixed-width hex without printf: these run for every proxied head */
static int buf_put_u64(struct buf *b, uint64_t v)
{
	char t[20];
	size_t i = sizeof t;
	do
		t[--i] = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	return buf_put_str(b, t + i, sizeof t - i);
}

static int buf_put_hex64(struct buf *b, uint64_t v)
{
	char t[16];
	for (int i = 15; i >= 0; i--, v >>= 4)
		t[i] = "0123456789abcdef"[v & 15];
	return buf_put_str(b, t, sizeof t);
}

static int buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(b->d + b->e, W.bufsize - b->e, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= W.bufsize - b->e)
		return -1;
	b->e += (uint32_t)n;
	return 0;
}

/* deadline heap of connections */
static void heap_swap(size_t a, size_t b)
{
	struct conn *t = W.heap[a];
	W.heap[a] = W.heap[b];
	W.heap[b] = t;
	W.heap[a]->hidx = a;
	W.heap[b]->hidx = b;
}

static void heap_up(size_t i)
{
	while (i > 0 && W.heap[(i - 1) / 2]->deadline > W.heap[i]->deadline) {
		heap_swap(i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
}

static void heap_down(size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < W.nheap && W.heap[l]->deadline < W.heap[m]->deadline)
			m = l;
		if (r < W.nheap && W.heap[r]->deadline < W.heap[m]->deadline)
			m = r;
		if (m == i)
			return;
		heap_swap(i, m);
		i = m;
	}
}

#define NOT_IN_HEAP ((size_t)-1)

static void heap_remove(struct conn *c)
{
	size_t i = c->hidx;
	if (i == NOT_IN_HEAP)
		return;
	c->hidx = NOT_IN_HEAP;
	if (i != --W.nheap) {
		W.heap[i] = W.heap[W.nheap];
		W.heap[i]->hidx = i;
		heap_down(i);
		heap_up(i);
	}
}

static void heap_set(struct conn *c, uint64_t deadline)
{
	if (c->hidx != NOT_IN_HEAP && c->deadline == deadline)
		return;
	heap_remove(c);
	c->deadline = deadline;
	c->hidx = W.nheap;
	W.heap[W.nheap++] = c;
	heap_up(c->hidx);
}

static struct lb_bconn *bconn_alloc(void)
{
	struct lb_bconn *b = W.free_bconns;
	if (b)
		W.free_bconns = b->next;
	else if (!(b = malloc(sizeof *b)))
		return NULL;
	memset(b, 0, sizeof *b);
	b->h.kind = H_BACKEND;
	b->h.fd = -1;
	return b;
}

static void bconn_close(struct lb_bconn *b)
{
	ev_forget(&b->h);
	tls_up_free(b->tls);
	b->tls = NULL;
	if (b->h.fd >= 0) {
		close(b->h.fd);
		srv_rt(b->srv)->nopen--;
		W.nbconns--;
	}
	b->h.fd = -1;
	b->h.dead = 1;
	b->next = W.dead_bconns;
	W.dead_bconns = b;
}

static void idle_unlink(struct lb_bconn *b)
{
	struct lb_bconn **pp = &srv_rt(b->srv)->idle;
	while (*pp && *pp != b)
		pp = &(*pp)->next;
	if (*pp) {
		*pp = b->next;
		srv_rt(b->srv)->nidle--;
	}
}

/* every idle connection to s, closed (s is down, or the worker stops) */
static void idle_close(const struct lb_server *s)
{
	struct srv_rt *rt = srv_rt(s);
	while (rt->idle) {
		struct lb_bconn *b = rt->idle;
		rt->idle = b->next;
		bconn_close(b);
	}
	rt->nidle = 0;
}

/* the n least recently used idle connections to s, closed (the list is most recent first) */
static void idle_close_oldest(const struct lb_server *s, unsigned n)
{
	struct srv_rt *rt = srv_rt(s);
	struct lb_bconn **pp = &rt->idle;
	for (unsigned keep = n < rt->nidle ? rt->nidle - n : 0; keep && *pp; keep--)
		pp = &(*pp)->next;
	while (*pp) {
		struct lb_bconn *b = *pp;
		*pp = b->next;
		rt->nidle--;
		bconn_close(b);
	}
}

/* Descriptors are short: clients plus server connections past 3/4 of what the event loop
 * takes (2 x max_connections + 256, at most RLIMIT_NOFILE). Idle connections then give way. */
static int fds_short(void)
{
	return W.nconns + W.nbconns >= W.fd_budget - W.fd_budget / 4;
}

/* May a reusable connection to s go back to the idle pool? Under the pool's cap (keepalive = N;
 * none with auto, where idle_purge sizes the pool) and while descriptors are not short. */
static int idle_may_keep(const struct lb_server *s, const struct lb_pool *p)
{
	return srv_rt(s)->nidle < p->keepalive && !fds_short();
}

/* a connection to s was put to use: the peak of connections in use at once, for idle_purge */
static void srv_note_use(const struct lb_server *s)
{
	struct srv_rt *rt = srv_rt(s);
	unsigned used = rt->nopen - rt->nidle;
	if (used > rt->peak_used)
		rt->peak_used = used;
}

/* Once a second per server (idle_sweep): the idle pool follows the concurrency recently needed,
 * as HAProxy's pool purge does. It keeps as many connections as the larger of the last second's
 * peak in use and the previous estimate; the estimate moves halfway to each new peak (at once
 * when the peak is higher). Half the connections beyond that are closed, least recently used
 * first: a burst's pool drains over several seconds, a steady load keeps its own, one idle
 * connection stays for sporadic traffic. With descriptors short, all beyond it go at once. */
static void idle_purge(const struct lb_server *s)
{
	struct srv_rt *rt = srv_rt(s);
	unsigned keep = LB_MAX(rt->peak_used, rt->need);
	rt->need = LB_MAX(rt->peak_used, (rt->need + rt->peak_used + 1) / 2);
	rt->peak_used = rt->nopen - rt->nidle;
	if (rt->nidle && rt->nopen > keep) {
		unsigned excess = rt->nopen - keep;
		idle_close_oldest(s, fds_short() ? excess : (excess + 1) / 2);
	}
}

static void idle_close_all(void)
{
	for (size_t p = 0; p < g_conf->npools; p++)
		for (size_t k = 0; k < g_conf->pools[p].nservers; k++)
			idle_close(&g_conf->pools[p].servers[k]);
}

/* an idle backend connection became readable: the server closed it or sent junk */
static void on_idle_backend(struct lb_bconn *b)
{
	if (b->owner)
		b->owner->own_b = NULL;
	else
		idle_unlink(b);
	bconn_close(b);
}

static void set_nodelay(int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void conn_progress(struct conn *c);
static void respond_own(struct conn *c, int status, const char *why);
static int rl_take(uint64_t key, const struct lb_rate_limit *rl, uint64_t *retry_ms); /* section 12 */
static int ipc_take(struct conn *c);
static void ipc_release(struct conn *c);
static int conn_admitted(struct conn *c);                  /* section 15 */
static int cb_begin(struct conn *c, const struct lb_server *s);  /* section 11 */
static void cb_abandon(struct conn *c);
static void cb_outcome(struct conn *c, const struct lb_server *s, int failed, const char *why);
static void cb_response(struct conn *c, int status);
static void cb_settle(struct conn *c, int failed, const char *why);
static void srv_hold(const struct lb_server *s);     /* section 12 */
static void srv_unhold(const struct lb_server *s);
static void count_exchange(const struct conn *c);
static void count_connected(struct conn *c, int fresh);   /* section 12, metrics */
static void count_first_byte(struct conn *c);
static void count_conn_open(const struct conn *c);
static void count_conn_close(const struct conn *c);
static void count_refused(const struct lb_listener *l, int why);
#ifdef LB_HTTP2
enum { H2R_CLIENT, H2R_PROTOCOL, H2R_REFUSED, H2R_OTHER, H2R_N }; /* lb_live_worker_http2_stream_resets_total */
static void count_h2_conn(void);
static void count_h2_reset(int why);
#endif
static void access_log_write(struct conn *c);

static void conn_abort(struct conn *c, const char *why);
static void splice_end(struct conn *c);

/* Give back the server slot and the backend connection: to the idle pool when reusable. */
static void backend_release(struct conn *c, int reuse)
{
	struct lb_bconn *b = c->b;
	if (b) {
		c->b = NULL;
		const struct lb_server *s = b->srv;
		if (reuse && !b->eof && b->connected && b->pool->send_proxy && !W.stopping) {
			b->c = NULL; /* its PROXY header names this client: only this client may reuse it */
			b->reused = 1;
			b->owner = c;
			c->own_b = b;
			b->h.want = EV_R;
			ev_apply(&b->h);
		} else if (reuse && !b->eof && b->connected && idle_may_keep(s, b->pool) && !W.stopping) {
			b->c = NULL;
			b->reused = 1;
			b->next = srv_rt(s)->idle;
			srv_rt(s)->idle = b;
			srv_rt(s)->nidle++;
			b->h.want = EV_R;
			ev_apply(&b->h);
		} else {
			bconn_close(b);
		}
	}
	cb_abandon(c);
	if (c->holds_srv) {
		srv_unhold(c->srv);
		c->holds_srv = 0;
	}
}

#ifdef LB_HTTP2
static void h2_conn_gone(struct conn *c);   /* section 9 */
static void h2_stream_gone(struct conn *c);
#endif

static void conn_close(struct conn *c)
{
	if (c->h.dead)
		return;
#ifdef LB_HTTP2
	if (c->h2)
		h2_conn_gone(c);
	if (c->h2s)
		h2_stream_gone(c);
#endif
	backend_release(c, 0);
	if (c->own_b) {
		bconn_close(c->own_b);
		c->own_b = NULL;
	}
	if (c->ipc_held)
		ipc_release(c);
	heap_remove(c);
	ev_forget(&c->h);
	if (c->tls) {
		tls_conn_free(c->tls);
		c->tls = NULL;
	}
	if (c->h.fd >= 0) /* an HTTP/2 stream has none */
		close(c->h.fd);
	splice_end(c);
	buf_put(&c->in);
	buf_put(&c->out);
	buf_put(&c->qh);
	buf_put(&c->rh);
	c->h.dead = 1;
	if (c->pending) { /* it must not outlive its struct on the pending list */
		struct conn **pp = &W.pending;
		while (*pp && *pp != c)
			pp = &(*pp)->pnext;
		if (*pp)
			*pp = c->pnext;
		c->pending = 0;
	}
	if (c->prev)
		c->prev->next = c->next;
	else
		W.live = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->next = W.dead;
	W.dead = c;
	W.nconns--;
	count_conn_close(c);
}

/* this request's id for the error log ("-" before one is known) */
static struct lb_str req_id(const struct conn *c)
{
	if (c->qh.d && c->lg_id_len && c->lg_id_off + c->lg_id_len <= c->qh.e) /* a head cut short has none */
		return (struct lb_str){ c->qh.d + c->lg_id_off, c->lg_id_len };
	return (struct lb_str){ "-", 1 };
}

/* The access log's termination state, HAProxy's two letters: who ended the exchange early (C the
 * client, c its timeout, S the server, s its timeout) and in which phase (R request head, C connect,
 * H response head, D body or tunnel). The first cause set is the one kept; unset is "--", a whole
 * exchange. */
static void set_term(struct conn *c, char who)
{
	if (c->term[0])
		return;
	char when = 'D';
	if (c->r == R_NONE)
		when = 'R';
	else if (c->b && !c->b->connected)
		when = 'C';
	else if (c->r == R_WAIT && (who == 'S' || who == 's' || c->q == Q_DONE))
		when = 'H';
	c->term[0] = who;
	c->term[1] = when;
}

/* the server cut its answer short (closed, reset, broken framing, or silent for idle_timeout) */
static int answer_cut(const struct conn *c)
{
	return (c->term[0] == 'S' || c->term[0] == 's') && c->term[1] == 'D';
}

/* End an exchange that cannot finish; why (NULL: nothing to say) goes to the error log, through
 * slot when the event is one a client can repeat at will (conn_abort_client). */
static void conn_abort_slot(struct conn *c, const char *why, struct lb_throttle *slot)
{
	int in_req = c->t_start && c->r != R_NONE && c->lg_id_len;
	struct lb_str id = in_req ? req_id(c) : (struct lb_str){ "", 0 };
	if (why && slot)
		log_throttled(slot, "client %s listener %s: closing: %s%s%.*s%s", ip_text(&c->ip), c->L->name, why,
		              in_req ? " (request id " : "", (int)id.n, id.p, in_req ? ")" : "");
	else if (why)
		lb_info("client %s listener %s: closing: %s%s%.*s%s", ip_text(&c->ip), c->L->name, why,
		        in_req ? " (request id " : "", (int)id.n, id.p, in_req ? ")" : "");
	if (why && c->L->mode == LB_MODE_HTTP && c->t_start && c->r != R_NONE)
		set_term(c, 'C'); /* unless the server's side was named, the client's ended it; no why: a tunnel's end */
	if ((c->L->mode == LB_MODE_TCP && c->q == Q_TUNNEL) || (c->t_start && c->r != R_NONE)) {
		if (!c->resp_status)
			c->resp_status = 499; /* nginx's "client closed request" */
		access_log_write(c);
	}
	conn_close(c);
}

static void conn_abort(struct conn *c, const char *why) { conn_abort_slot(c, why, NULL); }

/* a client's doing (reset, lost, a bad body, a timeout): one line a second per call site */
#define conn_abort_client(c, why)                                                                          \
	do {                                                                                               \
		static struct lb_throttle slot_;                                                           \
		conn_abort_slot((c), (why), &slot_);                                                       \
	} while (0)

/* The engine of a new TLS connection; bytes read with a PROXY header are its first. */
static int tls_begin(struct conn *c)
{
	static struct lb_throttle log_slot;
	int http = c->L->mode == LB_MODE_HTTP, h2 = lb_listener_h2(c->L);
	if (!(c->tls = tls_conn_new(c->L, h2 ? tls_alpn_h2list : http ? tls_alpn_http : NULL, h2 ? 2 : http ? 1 : 0))) {
		count_refused(c->L, REFUSE_NO_MEMORY);
		if (errno == ENOMEM) /* else no entropy: tls_seed_engine said it, at most once a second */
			log_throttled_at(&log_slot, LB_LV_ERROR, "client %s listener %s: out of memory for a TLS engine",
			                 ip_text(&c->ip), c->L->name);
		conn_close(c);
		return -1;
	}
	size_t left = buf_len(&c->in); /* at most LB_PROXY_V2_MAX: client_read's bound in Q_PROXY */
	if (left) {
		tls_feed_pre(c->tls, c->in.d + c->in.s, left);
		c->in.s = c->in.e;
	}
	if (c->in.d && buf_len(&c->in) == 0)
		buf_put(&c->in);
	return 0;
}

/* A TLS error on the client side: a failed handshake is counted and logged once, quietly
 * closed; after the handshake it ends the exchange like a reset. */
static void tls_failed(struct conn *c, int kind, const char *why)
{
	if (c->tls->hs_done) {
		char b[160];
		snprintf(b, sizeof b, "TLS: %s", why);
		conn_abort_client(c, c->r == R_NONE ? NULL : b);
		return;
	}
	static struct lb_throttle log_slot[TLS_F_N]; /* one per kind of failure */
	tls_count_failure(kind);
	count_refused(c->L, REFUSE_TLS);
	log_throttled(&log_slot[kind], "client %s listener %s: TLS handshake failed: %s", ip_text(&c->ip), c->L->name, why);
	conn_close(c);
}

/* close_notify before a clean close (the end of an exchange, a keep-alive timeout) */
static void conn_close_clean(struct conn *c)
{
	if (c->tls && c->tls->hs_done)
		tls_close_notify(&c->tls->io, c->h.fd);
	conn_close(c);
}

/* ==================================================================== 9. HTTP proxying
 * Request head -> route -> pool -> server; head rewriting (hop-by-hop removed, X-Forwarded-*,
 * X-Request-ID); body framing in both directions; lb's own answers (respond; respond_as names why,
 * for the metrics); retries before any
 * response byte; answers the server cuts short (response_cut: a failure of that server, logged
 * with the request); keep-alive and pipelining (the next head waits in `in` until this exchange ends);
 * the worker's spare descriptors for server sockets (fd_spare_take). Subsections: splice (mode tcp on Linux), the byte movers both proxies use,
 * and HTTP/2 (-DLB_HTTP2: nghttp2 sessions; each stream a socketless conn on this same path). Calls sections 2, 3,
 * 5 (the pick), 6, 7, 8, 10 (tcp_start), 11, 12, 14, and 15 (accept_hold, conn_admitted). */

static const char *status_text(int st)
{
	switch (st) {
	case 200: return "OK";
	case 201: return "Created";
	case 204: return "No Content";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 303: return "See Other";
	case 307: return "Temporary Redirect";
	case 308: return "Permanent Redirect";
	case 401: return "Unauthorized";
	case 410: return "Gone";
	case 429: return "Too Many Requests";
	case 400: return "Bad Request";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 408: return "Request Timeout";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 417: return "Expectation Failed";
	case 431: return "Request Header Fields Too Large";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	}
	return "Error";
}

/* the client's TLS engine: its connection's for an HTTP/2 stream */
static struct tls_conn *client_tls(const struct conn *c);

static const char *hsts_of(const struct conn *c)
{
	return client_tls(c) ? c->L->hsts : NULL;
}

/* Why lb answered itself: the `reason` label of lb_requests_total, one word per kind of answer
 * (bounded: the metric's label sets are listeners x routes x these). OWN_SERVER: the server
 * answered. own_reason names an answer by its status; the answers a status does not tell apart
 * (a route's `return`, ACME, lb's own resources) name theirs with respond_as, never from the text. */
enum {
	OWN_SERVER, OWN_NO_ROUTE, OWN_NO_SERVER, OWN_SERVER_ERROR, OWN_SERVER_TIMEOUT, OWN_LOCAL_RESOURCE,
	OWN_RATE_LIMITED, OWN_DENIED, OWN_BAD_REQUEST, OWN_TIMEOUT, OWN_TOO_LARGE, OWN_HEADER_TOO_LARGE,
	OWN_URI_TOO_LONG, OWN_NOT_IMPLEMENTED, OWN_REDIRECT, OWN_RETURN, OWN_ACME, OWN_INTERNAL, OWN_N
};
static const char *const own_name[OWN_N] = {
	"server", "no_route", "no_server", "server_error", "server_timeout", "local_resource",
	"rate_limited", "denied", "bad_request", "timeout", "too_large", "header_too_large",
	"uri_too_long", "not_implemented", "redirect", "return", "acme", "internal",
};

static int own_reason(int status)
{
	if (status >= 300 && status < 400)
		return OWN_REDIRECT;
	switch (status) {
	case 400: case 417: return OWN_BAD_REQUEST;
	case 403: return OWN_DENIED;
	case 404: return OWN_NO_ROUTE;
	case 408: return OWN_TIMEOUT;
	case 413: return OWN_TOO_LARGE;
	case 414: return OWN_URI_TOO_LONG;
	case 429: return OWN_RATE_LIMITED;
	case 431: return OWN_HEADER_TOO_LARGE;
	case 501: case 505: return OWN_NOT_IMPLEMENTED;
	case 502: return OWN_SERVER_ERROR;
	case 503: return OWN_NO_SERVER;
	case 504: return OWN_SERVER_TIMEOUT;
	}
	return OWN_INTERNAL;
}

/* The termination state of an answer lb made itself, unless an earlier cause was named (a server's
 * failure, a client's timeout): PR lb refused the request (4xx: bad, too large, denied, rate limited,
 * no route), LR lb answered as configured (a redirect, a `return`), SC no usable server (502, 503),
 * IR lb could not build its answer (500). RC (lb's own resources) is set by backend_local_failed. */
static void term_of_answer(struct conn *c, int status, int own)
{
	if (c->term[0])
		return;
	if (own == OWN_RETURN) { /* any status a route's `return` names: no refusal, no failing server */
		c->term[0] = 'L', c->term[1] = 'R';
		return;
	}
	c->term[0] = status == 408 ? 'c' : status == 500 ? 'I' : status >= 500 ? 'S' : status < 400 ? 'L' : 'P';
	c->term[1] = status >= 500 && status != 500 ? 'C' : 'R';
}

/* lb answers by itself, for reason `own` (OWN_*); the exchange ends after it, and the connection
 * too when the request was not read to its end. `extra` are whole header lines; body NULL: a short
 * text of the status. Policy answers (quiet) are in the access log only, not one error line each. */
static void respond_as(struct conn *c, int own, int status, const char *why, const char *extra, const char *body,
                       int quiet)
{
	static struct lb_throttle client_err[32]; /* 4xx: a client's doing, repeatable at will: one a second each */
	struct lb_str id = req_id(c);
	if (!quiet && status >= 400 && status < 500)
		log_throttled(&client_err[LB_MIN(status - 400, 31)], "client %s listener %s: %d %s: %s (request id %.*s)",
		              ip_text(&c->ip), c->L->name, status, status_text(status), why, (int)id.n, id.p);
	else if (!quiet)
		lb_warn("client %s listener %s: %d %s: %s (request id %.*s)", ip_text(&c->ip), c->L->name, status,
		        status_text(status), why, (int)id.n, id.p);
	term_of_answer(c, status, own);
	if (c->q == Q_HEAD || c->q == Q_BODY)
		c->close_after = 1;
	backend_release(c, 0);
	if (!c->t_start) {
		c->t_start = g_now;
		c->wall_start_ms = wall_ms();
	}
	if (!c->us_start)
		c->us_start = mono_us();
	c->q = Q_DONE;
	c->r = R_DONE;
	c->resp_status = status;
	c->own = (uint8_t)own;
	c->resp_fwd = 0;
	if (c->out.d)
		c->out.s = c->out.e = 0;
	if (buf_get(&c->rh) != 0) {
		conn_close(c);
		return;
	}
	c->rh.s = c->rh.e = 0;
	c->close_announced = c->close_after || W.stopping;
	const char *txt = status_text(status);
	char dflt[80];
	if (!body) {
		snprintf(dflt, sizeof dflt, "%d %s\n", status, txt);
		body = dflt;
	}
	size_t blen = strlen(body);
	int nobody = status == 204 || status == 304 || c->req_method == LB_M_HEAD;
	if (buf_printf(&c->rh, "HTTP/1.1 %d %s\r\n%s%s%s%s%s%s", status, txt, extra ? extra : "",
	               hsts_of(c) ? "Strict-Transport-Security: " : "", hsts_of(c) ? hsts_of(c) : "",
	               hsts_of(c) ? "\r\n" : "",
	               status == 503 && !(extra && strstr(extra, "Retry-After")) ? "Retry-After: 1\r\n" : "",
	               c->close_announced ? "Connection: close\r\n" : "",
	               blen || !nobody ? "Content-Type: text/plain\r\n" : "") ||
	    (status != 204 && status != 304 && buf_printf(&c->rh, "Content-Length: %zu\r\n", blen)) ||
	    buf_put_str(&c->rh, "\r\n", 2) || (!nobody && buf_put_str(&c->rh, body, blen))) {
		conn_close(c); /* cannot happen with the bounds config allows; never send half a head */
		return;
	}
	c->bytes_out = 0;
}

/* respond_as with the reason the status names */
static void respond(struct conn *c, int status, const char *why, const char *extra, const char *body, int quiet)
{
	respond_as(c, own_reason(status), status, why, extra, body, quiet);
}

static void respond_own(struct conn *c, int status, const char *why)
{
	respond(c, status, why, NULL, NULL, 0);
}

static int is_idempotent(int m)
{
	return m == LB_M_GET || m == LB_M_HEAD || m == LB_M_OPTIONS || m == LB_M_PUT || m == LB_M_DELETE ||
	       m == LB_M_TRACE;
}

/* Does a Connection header among hs list this name (making it hop-by-hop)? Only asked when
 * the head's flags say Connection names anything beyond close, keep-alive and upgrade. */
static int named_by_connection(const struct lb_header *hs, size_t nh, struct lb_str name)
{
	for (size_t i = 0; i < nh; i++) {
		if (hs[i].id != LB_H_CONNECTION)
			continue;
		const char *p = hs[i].value.p, *end = p + hs[i].value.n;
		struct lb_str el;
		while (list_next(&p, end, &el))
			if (el.n == name.n && mem_ieq(el.p, name.p, el.n))
				return 1;
	}
	return 0;
}

static int hop_by_hop(int id)
{
	return id == LB_H_CONNECTION || id == LB_H_KEEP_ALIVE || id == LB_H_PROXY_CONNECTION || id == LB_H_TE ||
	       id == LB_H_UPGRADE || id == LB_H_TRAILER;
}

static int name_in(struct lb_str n, char *const *names, size_t k)
{
	for (size_t i = 0; i < k; i++)
		if (str_ieq(n.p, n.n, names[i]))
			return 1;
	return 0;
}

static int req_header_dropped(const struct conn *c, const struct lb_req *rq, const struct lb_header *h)
{
	if (c->route && c->route->nreq_del && name_in(h->name, c->route->req_del, c->route->nreq_del))
		return 1;
	switch (h->id) {
	case LB_H_CONTENT_LENGTH:  /* one canonical one is re-added: "5" and "05" never both reach the server */
	case LB_H_X_FORWARDED_FOR: /* lb writes these; never a client's own */
	case LB_H_X_FORWARDED_PROTO:
	case LB_H_X_FORWARDED_HOST:
	case LB_H_X_CLIENT_CERT_SUBJECT:
		return 1;
	case LB_H_TRANSFER_ENCODING:
		/* never dropped because a client listed it in Connection: that would desynchronise the server */
		return 0;
	case LB_H_HOST:
		return (rq->flags & LB_HF_ABSOLUTE) != 0;
	case LB_H_X_REQUEST_ID:
		if (!lb_request_id_ok(h->value.p, h->value.n))
			return 1;
		break;
	default:
		if (hop_by_hop(h->id))
			return 1;
	}
	return (rq->flags & LB_HF_CONN_NAMES) && named_by_connection(rq->headers, rq->nheaders, h->name);
}

static int put_header(struct buf *b, struct lb_str n, struct lb_str v)
{
	return buf_put_str(b, n.p, n.n) || buf_put_str(b, ": ", 2) || buf_put_str(b, v.p, v.n) ||
	       buf_put_str(b, "\r\n", 2);
}

/* The head sent to the server, in qh. Log fields are offsets into it. */
/* X-Forwarded-For: the chain a trusted proxy sent, then the connection's client; from anyone
 * else, only the connection's client (what a client writes there itself is not passed on) */
static int put_xff(struct buf *b, const struct conn *c, const struct lb_req *rq)
{
	if (buf_put_str(b, "X-Forwarded-For: ", 17))
		return -1;
	for (size_t i = 0; c->xff_trusted && i < rq->nheaders; i++) {
		const struct lb_header *h = &rq->headers[i];
		if (h->id == LB_H_X_FORWARDED_FOR && h->value.n &&
		    (buf_put_str(b, h->value.p, h->value.n) || buf_put_str(b, ", ", 2)))
			return -1;
	}
	return buf_put_cstr(b, ip_text(&c->conn_ip)) || buf_put_lit(b, "\r\n");
}

static int build_request_head(struct conn *c, const struct lb_req *rq, const char *path, size_t pn)
{
	struct buf *b = &c->qh;
	if (buf_get(b) != 0)
		return -1;
	b->s = b->e = 0;
	c->lg_ref_len = c->lg_ua_len = c->lg_id_len = 0;
	if (buf_put_str(b, rq->method.p, rq->method.n) || buf_put_str(b, " ", 1) || buf_put_str(b, path, pn))
		return -1;
	if (rq->query.p && (buf_put_str(b, "?", 1) || buf_put_str(b, rq->query.p, rq->query.n)))
		return -1;
	c->lg_mlen = (uint32_t)rq->method.n;
	c->lg_ulen = b->e - c->lg_mlen - 1;
	if (rq->minor ? buf_put_lit(b, " HTTP/1.1\r\n") : buf_put_lit(b, " HTTP/1.0\r\n"))
		return -1;
	if ((rq->flags & LB_HF_ABSOLUTE) && put_header(b, (struct lb_str){ "Host", 4 }, rq->authority))
		return -1;
	for (size_t i = 0; i < rq->nheaders; i++) {
		const struct lb_header *h = &rq->headers[i];
		if (req_header_dropped(c, rq, h))
			continue;
		uint32_t voff = b->e + (uint32_t)h->name.n + 2;
		if (put_header(b, h->name, h->value))
			return -1;
		if (h->id == LB_H_REFERER)
			c->lg_ref_off = voff, c->lg_ref_len = (uint32_t)h->value.n;
		else if (h->id == LB_H_USER_AGENT)
			c->lg_ua_off = voff, c->lg_ua_len = (uint32_t)h->value.n;
		else if (h->id == LB_H_X_REQUEST_ID)
			c->lg_id_off = voff, c->lg_id_len = (uint32_t)h->value.n;
	}
	if ((rq->flags & LB_HF_HAS_CL) && (buf_put_lit(b, "Content-Length: ") ||
	                                   buf_put_u64(b, (uint64_t)rq->content_length) || buf_put_lit(b, "\r\n")))
		return -1;
	const struct tls_conn *tc = client_tls(c);
	if (put_xff(b, c, rq) ||
	    (tc ? buf_put_lit(b, "X-Forwarded-Proto: https\r\n") : buf_put_lit(b, "X-Forwarded-Proto: http\r\n")))
		return -1;
	if (tc && tc->subject[0] && buf_printf(b, "X-Client-Cert-Subject: %s\r\n", tc->subject))
		return -1;
	if (rq->authority.n) {
		c->lg_host_off = b->e + 18, c->lg_host_len = (uint32_t)rq->authority.n;
		if (put_header(b, (struct lb_str){ "X-Forwarded-Host", 16 }, rq->authority))
			return -1;
	}
	if (!c->lg_id_len) {
		if (buf_put_lit(b, "X-Request-ID: "))
			return -1;
		c->lg_id_off = b->e;
		c->lg_id_len = 32;
		if (buf_put_hex64(b, rand64()) || buf_put_hex64(b, rand64()) || buf_put_lit(b, "\r\n"))
			return -1;
	}
	if ((rq->flags & LB_HF_UPGRADE) &&
	    (buf_put_lit(b, "Connection: upgrade\r\n") || put_header(b, (struct lb_str){ "Upgrade", 7 }, rq->upgrade)))
		return -1;
	for (size_t i = 0; c->route && i < c->route->nreq_add; i++)
		if (buf_printf(b, "%s\r\n", c->route->req_add[i]))
			return -1;
	return buf_put_str(b, "\r\n", 2);
}

/* send_proxy: the header that tells the server who the client is, sent before any byte */
static void conn_px_dst(struct conn *c)
{
	if (!c->px_dst_ok) {
		struct sockaddr_storage sa;
		socklen_t sl = sizeof sa;
		if (getsockname(c->h.fd, (struct sockaddr *)&sa, &sl) == 0 && lb_ip_from_sockaddr(&sa, &c->px.dst) == 0)
			c->px.dport = ntohs(sa.ss_family == AF_INET ? ((struct sockaddr_in *)&sa)->sin_port
			                                            : ((struct sockaddr_in6 *)&sa)->sin6_port);
		else
			c->px.local = 1; /* a UNIX socket or an error: say nothing rather than something wrong */
		c->px_dst_ok = 1;
	}
}

static void proxy_header_for(struct conn *c, struct lb_bconn *b)
{
	conn_px_dst(c);
	int n = lb_proxy_build(c->pool->send_proxy, &c->px, b->px, sizeof b->px);
	b->pxs = 0;
	b->pxn = n > 0 ? (uint8_t)n : 0;
}

/* 0, or -1 with errno (lb's own failure: out of descriptors or memory; the caller reports it) */
static void accept_hold(size_t closing); /* section 15 */

static int fd_spares_fill(void)
{
	while (W.nspare < LB_FD_SPARE) {
		int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return 0;
		W.fd_spare[W.nspare++] = fd;
	}
	return 1;
}

static int fd_spare_take(void)
{
	if (!W.nspare)
		return 0;
	close(W.fd_spare[--W.nspare]);
	return 1;
}

static int server_socket(int family)
{
	int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	while (fd < 0 && errno == EMFILE && fd_spare_take()) {
		accept_hold(0);
		fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	}
	return fd;
}

static int backend_connect(struct conn *c, const struct lb_server *s)
{
	struct lb_bconn *b = bconn_alloc();
	if (!b) {
		errno = ENOMEM;
		return -1;
	}
	b->srv = s;
	b->pool = c->pool;
	b->c = c;
	b->h.fd = server_socket(s->sa.ss_family);
	if (b->h.fd < 0) {
		b->h.dead = 1;
		b->next = W.dead_bconns;
		W.dead_bconns = b;
		return -1;
	}
	set_nodelay(b->h.fd);
	srv_rt(s)->nopen++;
	W.nbconns++;
	c->b = b;
	c->t_conn = g_now;
	c->t_up_us = mono_us();
	if (s->tls && !(b->tls = tls_up_new(c->pool, s)))
		b->reset = ENOMEM; /* reported by the caller's next step */
	if (c->pool->send_proxy)
		proxy_header_for(c, b);
	if (connect(b->h.fd, (struct sockaddr *)&s->sa, s->salen) == 0) {
		b->connected = 1;
		count_connected(c, 1);
		if (c->L->mode == LB_MODE_TCP)
			cb_outcome(c, s, 0, "");
	}
	else if (errno != EINPROGRESS)
		b->reset = errno ? errno : ECONNREFUSED; /* reported by the caller's next step */
	return 0;
}

static void backend_failed(struct conn *c, int status, const char *why, int retryable);

/* errno of a connect() that failed in lb, not on the way to the server: descriptors, buffers or
 * memory, or no local port left */
static int local_connect_error(int e) { return local_resource_error(e) || e == EADDRNOTAVAIL || e == EAGAIN; }

/* lb could not make a server connection for itself: not the server's fault, so no circuit, health
 * check or retry counts it, nor its statistics (the exchange names no server); the client gets 503
 * and Connection: close, the error log says why (throttled), and the worker stops accepting until
 * descriptors free up. */
static void backend_local_failed(struct conn *c, const char *what, int e)
{
	static struct lb_throttle log_slot;
	char why[200];
	snprintf(why, sizeof why, "%s for server %s/%s: %s (a local resource, not the server)", what, c->pool->name,
	         c->srv->name, strerror(e));
	struct lb_str id = req_id(c);
	log_throttled_at(&log_slot, LB_LV_ERROR, "client %s listener %s: 503 %s: %s (%zu connections open in this worker; "
	                 "request id %.*s)", ip_text(&c->ip), c->L->name, status_text(503), why, W.nconns, (int)id.n, id.p);
	backend_release(c, 0);
	c->srv = NULL;
	c->term[0] = 'R', c->term[1] = 'C'; /* lb's own resources, whether answered or cut */
	if (e != EADDRNOTAVAIL && e != EAGAIN)
		accept_hold(1);
	if (c->L->mode == LB_MODE_TCP || c->r != R_WAIT || buf_len(&c->rh) > 0 || c->sent_any) {
		conn_abort(c, NULL);
		return;
	}
	c->close_after = 1; /* its descriptor is wanted */
	respond_as(c, OWN_LOCAL_RESOURCE, 503, why, NULL, NULL, 1);
}

/* Choose a server (not `avoid` when another is usable) and give c a connection to it. */
static void backend_assign(struct conn *c, const struct lb_server *avoid)
{
	const struct lb_pool *p = c->pool;
	const struct lb_server *s = NULL;
	const struct lb_srv_state *st = pool_states(p, srv_rt(&p->servers[0])); /* a pool's ids are consecutive */
	if (c->sticky && c->sticky != avoid && usable_at(c->sticky, &st[c->sticky - p->servers], g_now, 1) &&
	    pick_tier(p, st, g_now) == c->sticky->backup) {
		s = c->sticky;
		c->set_cookie = 0;
	} else {
		for (size_t i = 0; i < 2 * p->nservers + 1; i++) {
			s = lb_pick(p, st, &pool_rt(p)->pick, g_now, lb_hash64(c->ip.a, c->ip.v6 ? 16 : 4), rand64());
			if (!s || s != avoid)
				break;
		}
		c->set_cookie = p->sticky_cookie[0] != 0;
	}
	if (s && s != avoid && !cb_begin(c, s))
		s = NULL; /* its half-open circuit's trial slots went to other workers meanwhile */
	if (!s || s == avoid) {
		if (c->L->mode == LB_MODE_TCP) {
			conn_abort(c, avoid ? "no other usable server to retry on" : "no usable server");
			return;
		}
		if (avoid)
			respond_own(c, 502, "server failed and no other usable server to retry on");
		else
			respond_own(c, 503, "no usable server in the pool");
		return;
	}
	c->srv = s;
	srv_hold(s);
	c->holds_srv = 1;
	if (c->qh.d)
		c->qh.s = 0;
	struct lb_bconn *b = srv_rt(s)->idle;
	if (c->own_b) {
		b = c->own_b;
		c->own_b = NULL;
		b->owner = NULL;
		if (b->srv != s) {
			bconn_close(b);
			b = NULL;
		}
	} else if (b) {
		srv_rt(s)->idle = b->next;
		srv_rt(s)->nidle--;
	}
	if (b) {
		b->c = c;
		b->next = NULL;
		c->b = b;
		c->t_conn = g_now;
		count_connected(c, 0);
		srv_note_use(s);
		return;
	}
	if (backend_connect(c, s) != 0) {
		backend_local_failed(c, "socket", errno);
		return;
	}
	if (c->b->reset && local_connect_error(c->b->reset)) {
		backend_local_failed(c, c->b->reset == ENOMEM && c->b->tls == NULL && s->tls ? "TLS engine" : "connect",
		                     c->b->reset);
		return;
	}
	srv_note_use(s);
	if (c->b->reset) {
		int e = c->b->reset;
		char why[400];
		snprintf(why, sizeof why, "connect to %s (%s): %s", s->name, srv_addr(s), strerror(e));
		backend_failed(c, 502, why, 1);
	}
}

/* The server connection failed before the exchange could finish. Retry when no response
 * byte came back and the request can be sent again whole, else answer or abort. */
static void backend_failed(struct conn *c, int status, const char *why, int retryable)
{
	const struct lb_server *failed = c->srv;
	int reused = c->b && c->b->reused;
	int clean = !c->resp_started && (c->L->mode == LB_MODE_TCP ? c->bytes_out == 0 && c->bytes_in == 0
	                                                              : c->r == R_WAIT && c->req_bodyless);
	if (!(retryable && clean && reused && !c->reuse_retried)) /* not a kept-alive connection it had closed */
		cb_outcome(c, failed, 1, why);
	set_term(c, status == 504 ? 's' : 'S'); /* before the release: the phase looks at c->b (a tunnel: SC or SD) */
	backend_release(c, 0);
	if (retryable && clean && reused && !c->reuse_retried) {
		c->reuse_retried = 1; /* a kept-alive connection the server had just closed */
		c->term[0] = 0;       /* tried again: the exchange goes on */
		c->nretries++;
		c->us_first = 0;
		backend_assign(c, NULL);
		return;
	}
	if (retryable && clean && c->retries_left > 0 && (c->req_idem || c->L->mode == LB_MODE_TCP)) {
		c->retries_left--;
		if (failed && srv_rt(failed)->shm)
			atomic_fetch_add_explicit(&srv_rt(failed)->shm->retries, 1, memory_order_relaxed);
		struct lb_str id = req_id(c);
		lb_warn("client %s: %s; retrying on another server of pool %s (request id %.*s)", ip_text(&c->ip), why,
		        c->pool->name, (int)id.n, id.p);
		c->term[0] = 0;
		c->nretries++;
		c->us_first = 0;
		backend_assign(c, failed);
		return;
	}
	if (c->L->mode == LB_MODE_TCP || c->r != R_WAIT || buf_len(&c->rh) > 0 || c->sent_any) {
		conn_abort(c, why);
		return;
	}
	respond_own(c, status, why);
}

static void lower_copy(char *dst, const char *src, size_t n)
{
	for (size_t i = 0; i < n; i++)
		dst[i] = (char)lower((unsigned char)src[i]);
	dst[n] = 0;
}

/* The server a request's sticky cookie names (by server name, never an address). */
static const struct lb_server *sticky_server(const struct lb_pool *p, const struct lb_req *rq)
{
	size_t cn = strlen(p->sticky_cookie);
	for (size_t i = 0; i < rq->nheaders; i++) {
		const struct lb_header *h = &rq->headers[i];
		if (h->id != LB_H_COOKIE)
			continue;
		const char *q = h->value.p, *end = q + h->value.n;
		while (q < end) {
			while (q < end && (*q == ' ' || *q == ';'))
				q++;
			const char *e = memchr(q, ';', (size_t)(end - q));
			if (!e)
				e = end;
			if ((size_t)(e - q) > cn && q[cn] == '=' && !memcmp(q, p->sticky_cookie, cn)) {
				const char *v = q + cn + 1;
				size_t vn = (size_t)(e - v);
				while (vn && v[vn - 1] == ' ')
					vn--;
				for (size_t k = 0; k < p->nservers; k++)
					if (strlen(p->servers[k].name) == vn && !memcmp(p->servers[k].name, v, vn))
						return &p->servers[k];
				return NULL;
			}
			q = e;
		}
	}
	return NULL;
}

static int acl_allows(const struct lb_route *rt, const struct lb_ip *ip)
{
	int any_allow = 0;
	for (size_t i = 0; i < rt->nacl; i++) {
		if (lb_cidr_match(&rt->acl[i].net, ip))
			return rt->acl[i].allow;
		any_allow |= rt->acl[i].allow;
	}
	return !any_allow;
}

static int cidr_any(const struct lb_cidr *list, size_t n, const struct lb_ip *ip)
{
	for (size_t i = 0; i < n; i++)
		if (lb_cidr_match(&list[i], ip))
			return 1;
	return 0;
}

/* This request's client: the connection's, or what a trusted proxy's X-Forwarded-For says. */
static void set_client(struct conn *c, const struct lb_ip *ip)
{
	c->ip = *ip;
}

static void set_conn_client(struct conn *c, const struct lb_ip *ip)
{
	c->conn_ip = *ip;
	set_client(c, ip);
	c->xff_trusted = c->L->ntrusted && cidr_any(c->L->trusted, c->L->ntrusted, ip);
}

static int proxy_expected(const struct conn *c)
{
	return c->L->proxy_protocol && cidr_any(c->L->trusted, c->L->ntrusted, &c->conn_ip);
}

static uint64_t rl_key_of(const struct conn *c, const struct lb_route *rt, const struct lb_req *rq)
{
	uint64_t k = 0;
	if (rt->rl.by == LB_RL_IP)
		k = lb_hash64(&c->ip, sizeof c->ip);
	else if (rt->rl.by == LB_RL_HEADER) {
		const struct lb_header *h = lb_header_find(rq->headers, rq->nheaders, rt->rl.header);
		k = h ? lb_hash64(h->value.p, h->value.n) : 0x9e3779b97f4a7c15ULL;
	}
	return mix64(rt->rl_key ^ k) | 1;
}

/* "$host" and "$uri" in a redirect target */
static int expand_redirect(char *out, size_t cap, const char *tpl, const char *host, const char *path, size_t pn,
                           const struct lb_req *rq)
{
	size_t w = 0;
	for (const char *t = tpl; *t; t++) {
		const char *add = NULL;
		size_t an = 0;
		if (!strncmp(t, "$host", 5)) {
			add = host, an = strlen(host), t += 4;
		} else if (!strncmp(t, "$uri", 4)) {
			add = path, an = pn, t += 3;
		} else {
			add = t, an = 1;
		}
		if (w + an + 1 + (add == path && rq->query.p ? rq->query.n + 1 : 0) >= cap)
			return -1;
		memcpy(out + w, add, an);
		w += an;
		if (add == path && rq->query.p) {
			out[w++] = '?';
			memcpy(out + w, rq->query.p, rq->query.n);
			w += rq->query.n;
		}
	}
	out[w] = 0;
	return 0;
}

/* acl (403), rate limit (429), return, redirect: in that order. 1 when lb answered. */
static int route_policies(struct conn *c, const struct lb_route *rt, const struct lb_req *rq, const char *host,
                          const char *path, size_t pn)
{
	char extra[64];
	if (rt->nacl && !acl_allows(rt, &c->ip)) {
		if (route_rt(rt)->shm)
			atomic_fetch_add_explicit(&route_rt(rt)->shm->denied, 1, memory_order_relaxed);
		respond(c, 403, "denied by acl", NULL, NULL, 1);
		return 1;
	}
	if (rt->rl.rate && !cidr_any(rt->rl_exempt, rt->nrl_exempt, &c->ip)) {
		uint64_t retry = 0;
		if (!rl_take(rl_key_of(c, rt, rq), &rt->rl, &retry)) {
			snprintf(extra, sizeof extra, "Retry-After: %llu\r\n", (unsigned long long)LB_MAX(1, (retry + 999) / 1000));
			if (route_rt(rt)->shm)
				atomic_fetch_add_explicit(&route_rt(rt)->shm->limited, 1, memory_order_relaxed);
			respond(c, 429, "rate limit", extra, NULL, 1);
			return 1;
		}
	}
	if (rt->ret_status) {
		respond_as(c, OWN_RETURN, rt->ret_status, "return", NULL, rt->ret_body[0] ? rt->ret_body : "", 1);
		return 1;
	}
	if (rt->redir_status) {
		char *loc = W.scratch2;
		if (expand_redirect(loc + 10, W.bufsize - 12, rt->redir_url, host, path, pn, rq) != 0) {
			respond_own(c, 500, "redirect target too long");
			return 1;
		}
		memcpy(loc, "Location: ", 10);
		strcat(loc, "\r\n");
		respond(c, rt->redir_status, "redirect", loc, "", 1);
		return 1;
	}
	return 0;
}

/* An ACME HTTP-01 token file from acme_webroot/.well-known/acme-challenge/: no symlink at
 * or below the webroot is followed, only base64url names are looked up, only small files. */
static void acme_serve(struct conn *c, const char *tok, long tn)
{
	char name[LB_ACME_TOKEN_MAX + 1], body[2048], why[300];
	if (tn < 0) {
		respond_as(c, OWN_ACME, 404, "ACME challenge path with characters outside base64url", NULL, NULL, 0);
		return;
	}
	memcpy(name, tok, (size_t)tn);
	name[tn] = 0;
	const int dflags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
	int d0 = open(c->L->acme_webroot, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int d1 = d0 >= 0 ? openat(d0, ".well-known", dflags) : -1;
	int d2 = d1 >= 0 ? openat(d1, "acme-challenge", dflags) : -1;
	int fd = d2 >= 0 ? openat(d2, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC) : -1;
	int err = errno;
	struct stat st;
	ssize_t n = -1;
	if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size < (off_t)sizeof body)
		n = read(fd, body, sizeof body - 1);
	for (int i = 0, fds[] = { fd, d2, d1, d0 }; i < 4; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	if (n < 0 || memchr(body, 0, (size_t)n)) {
		snprintf(why, sizeof why, "ACME token %s: %s under %s/.well-known/acme-challenge", name,
		         fd < 0 ? strerror(err) : "not a small regular text file", c->L->acme_webroot);
		respond_as(c, OWN_ACME, 404, why, NULL, NULL, 0);
		return;
	}
	body[n] = 0;
	respond_as(c, OWN_ACME, 200, "acme", NULL, body, 1);
}

/* A listener's own answers before routing: ACME tokens, then redirect_https's 308. */
static int listener_answers(struct conn *c, const struct lb_req *rq, const char *host)
{
	const struct lb_listener *L = c->L;
	const char *tok = NULL;
	long tn = 0;
	if (L->acme_webroot && (rq->method_id == LB_M_GET || rq->method_id == LB_M_HEAD))
		tn = lb_acme_token(rq->path.p, rq->path.n, &tok);
	if (tn != 0) {
		acme_serve(c, tok, tn);
		return 1;
	}
	if (!L->redirect_https)
		return 0;
	if (!host[0]) {
		respond(c, 400, "redirect_https: the request names no host", NULL, NULL, 0);
		return 1;
	}
	char *loc = W.scratch2, port[8] = "";
	int v6 = strchr(host, ':') != NULL;
	if (L->https_port != 443)
		snprintf(port, sizeof port, ":%u", L->https_port);
	int w = snprintf(loc, W.bufsize, "Location: https://%s%s%s%s%.*s%s%.*s\r\n", v6 ? "[" : "", host, v6 ? "]" : "",
	                 port, (int)rq->path.n, rq->path.p, rq->query.p ? "?" : "", (int)rq->query.n,
	                 rq->query.p ? rq->query.p : "");
	if (w < 0 || (size_t)w >= W.bufsize / 2) {
		respond(c, 414, "redirect_https: the target is too long", NULL, NULL, 0);
		return 1;
	}
	respond(c, 308, "redirect_https", loc, "", 1);
	return 1;
}

static void request_begin(struct conn *c)
{
	c->wall_start_ms = wall_ms();
	c->t_start = g_now;
	c->nreq++;
	c->req_method = LB_M_OTHER; /* not the last request's: an answer before parsing is no HEAD's */
	c->resp_status = 0;
	c->term[0] = c->term[1] = 0;
	c->own = OWN_SERVER;
	c->t_up_us = 0;
	c->resp_started = 0;
	c->close_announced = 0;
	c->sticky = NULL;
	c->set_cookie = 0;
	c->bytes_out = 0;
	c->sent_any = 0;
	c->route = NULL;
	c->pool = NULL;
	c->srv = NULL;
	c->req_fwd = c->resp_fwd = 0;
	c->reuse_retried = 0;
	c->lg_mlen = c->lg_ulen = c->lg_ref_len = c->lg_ua_len = c->lg_id_len = c->lg_host_len = 0;
	if (!c->us_start) /* the first byte's time when it came to an empty buffer (client_read) */
		c->us_start = mono_us();
	c->us_head = c->us_ready = c->us_first = 0;
	c->req_bytes = 0;
	c->nretries = 0;
	c->lg_parsed = 0;
}

static void tcp_start(struct conn *c); /* section 10 */

/* A trusted proxy's PROXY header: it names the client of this connection. */
static int proxy_step(struct conn *c)
{
	struct lb_proxy px;
	size_t len = buf_len(&c->in);
	int rc = len ? lb_parse_proxy(c->in.d + c->in.s, len, c->L->proxy_protocol, &px) : LB_EAGAIN;
	if (rc == LB_EAGAIN) {
		if (c->cin_eof) {
			static struct lb_throttle log_slot;
			if (len)
				log_throttled_at(&log_slot, LB_LV_DEBUG,
				                 "client %s listener %s: closed with an incomplete PROXY header", ip_text(&c->ip),
				                 c->L->name);
			conn_close(c);
		}
		return 0;
	}
	c->q = Q_HEAD;
	if (rc < 0) {
		char why[128];
		count_refused(c->L, REFUSE_PROXY);
		snprintf(why, sizeof why, "invalid PROXY header from a trusted proxy: %s", px.error);
		if (c->L->mode == LB_MODE_TCP) {
			conn_abort(c, why);
		} else {
			request_begin(c);
			respond_own(c, 400, why);
		}
		return 1;
	}
	c->in.s += (uint32_t)rc;
	if (!px.local) {
		set_conn_client(c, &px.src);
		c->px = px;
		c->px_dst_ok = 1;
	}
	if (!conn_admitted(c))
		return 0;
	if (c->L->tls && tls_begin(c) != 0)
		return 0;
	if (c->L->mode == LB_MODE_TCP)
		tcp_start(c);
	return 1;
}

/* X-Forwarded-For from a trusted proxy: walking from the right, the first hop that is not
 * itself a trusted proxy is the client (a garbled hop stops the walk at the last good one). */
static void request_client(struct conn *c, const struct lb_req *rq)
{
	if (!c->xff_trusted) {
		if (c->ip.v6 != c->conn_ip.v6 || memcmp(c->ip.a, c->conn_ip.a, 16))
			set_client(c, &c->conn_ip);
		return;
	}
	const struct lb_listener *L = c->L;
	struct lb_ip cur = c->conn_ip;
	for (size_t i = rq->nheaders; i-- > 0;) {
		const struct lb_header *h = &rq->headers[i];
		if (h->id != LB_H_X_FORWARDED_FOR)
			continue;
		const char *end = h->value.p + h->value.n;
		while (end > h->value.p) {
			if (!cidr_any(L->trusted, L->ntrusted, &cur))
				goto done;
			const char *st = end;
			while (st > h->value.p && st[-1] != ',')
				st--;
			struct lb_ip ip;
			if (xff_hop(st, (size_t)(end - st), &ip) != 0)
				goto done;
			cur = ip;
			end = st > h->value.p ? st - 1 : st;
		}
	}
done:
	set_client(c, &cur);
}

static void log_keep_request_line(struct conn *c, const char *p, size_t len);

/* A complete, valid head of n bytes is at in.s: route it and start the exchange. */
static void handle_request(struct conn *c, const struct lb_req *rq, size_t n)
{
	const struct lb_conf *conf = g_conf;
	char host[LB_HOST_MAX];
	const char *path = W.scratch;
	long pn;
	lower_copy(host, rq->host.p ? rq->host.p : "", rq->host.n);
	if (rq->path.n == 0)
		path = "/", pn = 1;
	else if (rq->path.n == 1 && rq->path.p[0] == '*')
		path = "*", pn = 1;
	else
		pn = lb_normalize_path(rq->path.p, rq->path.n, W.scratch);
	c->req_method = rq->method_id;
	c->req_minor = rq->minor;
	c->lg_parsed = 1;
	c->req_idem = is_idempotent(rq->method_id);
	c->upgrade = (rq->flags & LB_HF_UPGRADE) != 0;
	c->close_after = (rq->flags & LB_HF_CLOSE) || W.stopping;
	if (rq->flags & LB_HF_CHUNKED) {
		c->q = Q_BODY;
		c->req_left = LEFT_CHUNKED;
		lb_chunk_init(&c->req_ck);
	} else if (rq->content_length > 0) {
		c->q = Q_BODY;
		c->req_left = rq->content_length;
	} else {
		c->q = Q_DONE;
		c->req_left = 0;
		c->t_req_done = g_now;
	}
	c->req_bodyless = c->q == Q_DONE;
	if (pn < 0) {
		log_keep_request_line(c, c->in.d + c->in.s, n);
		c->in.s += (uint32_t)n;
		respond_own(c, 400, "invalid percent-encoding or NUL in path");
		return;
	}
	request_client(c, rq);
	int ri = lb_route_find(conf, c->li, rq, host, rq->host.n, path, (size_t)pn);
	const struct lb_route *rt = ri >= 0 ? &conf->routes[ri] : NULL;
	c->route = rt;
	int hb = build_request_head(c, rq, path, (size_t)pn);
	c->in.s += (uint32_t)n; /* rq points into in: it is not read after this */
	c->scan = 0;
	c->max_body = rt && rt->given & UINT64_C(1) << KR_MAX_BODY_SIZE ? rt->max_body_size : c->L->max_body_size;
	if (hb != 0) {
		respond_own(c, 431, "request head too large after rewriting");
		return;
	}
	if (rq->content_length > 0 && (uint64_t)rq->content_length > c->max_body) {
		respond_own(c, 413, c->max_body ? "Content-Length above max_body_size" : "a body where max_body_size = 0");
		return;
	}
	if (listener_answers(c, rq, host))
		return;
	if (rt && route_policies(c, rt, rq, host, path, (size_t)pn))
		return;
	int pi = rt ? lb_route_pool(rt, &route_rt(rt)->split) : c->L->pool;
	if (pi < 0) {
		respond_own(c, 404, "no route matched and the listener has no pool");
		return;
	}
	c->pool = &conf->pools[pi];
	c->sticky = c->pool->sticky_cookie[0] ? sticky_server(c->pool, rq) : NULL;
	c->resp_timeout = rt && rt->given & UINT64_C(1) << KR_RESPONSE_TIMEOUT ? rt->response_timeout : c->pool->response_timeout;
	c->retries_left = (int)c->pool->retries;
	c->r = R_WAIT;
	backend_assign(c, NULL);
}

/* A request refused before its head was parsed (400, 408, 431) still has an access-log line with
 * the method and target read so far (a token, a space, a target: else "-"), and a fresh request id
 * its error-log line shares. They are copied into qh (at most 2 KB; escaped when logged). */
static void log_keep_request_line(struct conn *c, const char *p, size_t len)
{
	c->req_bytes = len;
	if (buf_get(&c->qh) != 0)
		return;
	struct buf *b = &c->qh;
	b->s = b->e = 0;
	size_t n = p ? LB_MIN(len, (size_t)2048) : 0, m = 0, u;
	const char *eol = n ? memchr(p, '\n', n) : NULL;
	if (eol)
		n = (size_t)(eol - p);
	while (m < n && m < 32 && p[m] != ' ' && is_tchar((unsigned char)p[m]))
		m++;
	if (m && m < n && p[m] == ' ') {
		for (u = m + 1; u < n && p[u] != ' ' && p[u] != '\r'; u++)
			;
		if (u > m + 1 && !buf_put_str(b, p, u)) {
			c->lg_mlen = (uint32_t)m;
			c->lg_ulen = (uint32_t)(u - m - 1);
		}
	}
	c->lg_id_off = b->e;
	if (!buf_put_hex64(b, rand64()) && !buf_put_hex64(b, rand64()))
		c->lg_id_len = 32;
}

static int request_head_step(struct conn *c)
{
	size_t len = buf_len(&c->in);
	const char *p = c->in.d ? c->in.d + c->in.s : NULL;
	if (len == 0 || c->scan >= len) {
		if (c->cin_eof) {
			static struct lb_throttle log_slot;
			if (len)
				log_throttled_at(&log_slot, LB_LV_DEBUG,
				                 "client %s listener %s: closed with an incomplete request head", ip_text(&c->ip),
				                 c->L->name);
			conn_close(c);
		}
		return 0;
	}
	int line_end = memchr(p + c->scan, '\n', len - c->scan) != NULL;
	c->scan = len;
	int rc = LB_EAGAIN;
	if (line_end) {
		request_begin(c);
		rc = lb_parse_request(p, len, &W.req);
	}
	if (rc == LB_EAGAIN) {
		if (len >= c->L->max_header_size) {
			request_begin(c);
			log_keep_request_line(c, p, len);
			respond_own(c, 431, "request head larger than max_header_size");
			return 1;
		}
		if (c->cin_eof) {
			static struct lb_throttle log_slot;
			log_throttled_at(&log_slot, LB_LV_DEBUG, "client %s listener %s: closed with an incomplete request head",
			                 ip_text(&c->ip), c->L->name);
			conn_close(c);
		}
		return 0;
	}
	c->us_head = mono_us();
	if (rc < 0) {
		log_keep_request_line(c, p, len);
		respond_own(c, W.req.status ? W.req.status : 400, W.req.error ? W.req.error : "invalid request");
		return 1;
	}
	if ((uint64_t)rc > c->L->max_header_size) {
		log_keep_request_line(c, p, len);
		respond_own(c, 431, "request head larger than max_header_size");
		return 1;
	}
	c->req_bytes = (uint64_t)rc;
	handle_request(c, &W.req, (size_t)rc);
	return 1;
}

/* Frame newly read request body bytes: they become forwardable (req_fwd). */
static int request_body_step(struct conn *c)
{
	size_t have = buf_len(&c->in) - c->req_fwd;
	if (have == 0) {
		if (c->cin_eof) {
			if (c->r == R_WAIT && !c->resp_started)
				respond_own(c, 400, "client closed before sending the whole body");
			else
				conn_abort_client(c, "client closed before sending the whole body");
		}
		return 0;
	}
	const char *p = c->in.d + c->in.s + c->req_fwd;
	if (c->req_left == LEFT_CHUNKED) {
		size_t used = 0;
		int rc = lb_chunk_scan(&c->req_ck, p, have, &used);
		c->req_fwd += used;
		c->req_bytes += used;
		if (rc == LB_CHUNK_ERROR || c->req_ck.body > c->max_body) {
			int big = rc != LB_CHUNK_ERROR;
			if (c->r == R_WAIT && !c->resp_started && buf_len(&c->rh) == 0)
				respond_own(c, big ? 413 : 400, big ? "chunked body above max_body_size" : "invalid chunked framing");
			else
				conn_abort_client(c, "invalid chunked request body");
			return 1;
		}
		if (rc == LB_CHUNK_DONE)
			c->q = Q_DONE;
	} else {
		size_t take = (size_t)LB_MIN((uint64_t)have, (uint64_t)c->req_left);
		c->req_fwd += take;
		c->req_bytes += take;
		c->req_left -= (int64_t)take;
		if (c->req_left == 0)
			c->q = Q_DONE;
	}
	if (c->q == Q_DONE)
		c->t_req_done = g_now;
	return 1;
}

static int request_step(struct conn *c)
{
	if (c->q == Q_HEAD && c->r == R_NONE)
		return request_head_step(c);
	if (c->q == Q_BODY)
		return request_body_step(c);
	return 0;
}

static int resp_header_dropped(const struct lb_resp *rs, const struct lb_header *h)
{
	if (hop_by_hop(h->id)) /* Upgrade and Connection of a 101 are re-added */
		return 1;
	if (h->id == LB_H_CONTENT_LENGTH)
		return 1; /* re-added once, canonical */
	if (h->id == LB_H_TRANSFER_ENCODING)
		return 0;
	return (rs->flags & LB_HF_CONN_NAMES) && named_by_connection(rs->headers, rs->nheaders, h->name);
}

static int build_response_head(struct conn *c, const struct lb_resp *rs)
{
	struct buf *b = &c->rh;
	int upgrading = rs->status == 101;
	if (buf_get(b) != 0)
		return -1;
	if (buf_put_lit(b, "HTTP/1.1 ") || buf_put_u64(b, (uint64_t)rs->status) || buf_put_lit(b, " ") ||
	    buf_put_str(b, rs->reason.p, rs->reason.n) || buf_put_lit(b, "\r\n"))
		return -1;
	for (size_t i = 0; i < rs->nheaders; i++) {
		const struct lb_header *h = &rs->headers[i];
		if (c->route && c->route->nresp_del && name_in(h->name, c->route->resp_del, c->route->nresp_del))
			continue;
		if (h->id == LB_H_STRICT_TRANSPORT_SECURITY && hsts_of(c))
			continue; /* the listener's hsts replaces the server's */
		if (!resp_header_dropped(rs, h) && put_header(b, h->name, h->value))
			return -1;
	}
	if (hsts_of(c) && rs->status >= 200 && buf_printf(b, "Strict-Transport-Security: %s\r\n", hsts_of(c)))
		return -1;
	if ((rs->flags & LB_HF_HAS_CL) && (buf_put_lit(b, "Content-Length: ") ||
	                                   buf_put_u64(b, (uint64_t)rs->content_length) || buf_put_lit(b, "\r\n")))
		return -1;
	for (size_t i = 0; c->route && i < c->route->nresp_add && rs->status >= 200; i++)
		if (buf_printf(b, "%s\r\n", c->route->resp_add[i]))
			return -1;
	if (c->set_cookie && c->srv && rs->status >= 200 &&
	    buf_printf(b, "Set-Cookie: %s=%s; Path=/; HttpOnly\r\n", c->pool->sticky_cookie, c->srv->name))
		return -1;
	if (upgrading) {
		const struct lb_header *u = lb_header_find(rs->headers, rs->nheaders, "upgrade");
		if (buf_printf(b, "Connection: upgrade\r\n") ||
		    (u && put_header(b, (struct lb_str){ "Upgrade", 7 }, u->value)))
			return -1;
	} else if (rs->status >= 200) {
		c->close_announced = c->close_after || W.stopping;
		if (c->close_announced && buf_put_lit(b, "Connection: close\r\n"))
			return -1;
		if (!c->close_announced && c->req_minor == 0 && buf_put_lit(b, "Connection: keep-alive\r\n"))
			return -1;
	}
	return buf_put_str(b, "\r\n", 2);
}

/* A complete response head of n bytes is at out.s. */
static void handle_response(struct conn *c, const struct lb_resp *rs, size_t n)
{
	if (rs->status < 200 && rs->status != 101) { /* interim: pass on (not to HTTP/1.0 clients) */
		if (c->req_minor == 1 && build_response_head(c, rs) != 0) {
			backend_failed(c, 502, "interim response head too large", 0);
			return;
		}
		c->out.s += (uint32_t)n;
		c->t_resp_wait = g_now; /* a whole head came: response_timeout starts again for the next */
		return;
	}
	if (rs->status == 101 && !c->upgrade) {
		backend_failed(c, 502, "server switched protocols without an Upgrade request", 0);
		return;
	}
	c->resp_status = rs->status;
	cb_response(c, rs->status);
	c->backend_reuse = !(rs->flags & LB_HF_CLOSE) && !c->upgrade && c->req_minor == 1;
	if (rs->status == 101) {
		c->resp_left = 0;
	} else if (!lb_resp_has_body(c->req_method, rs->status)) {
		c->resp_left = 0;
	} else if (rs->flags & LB_HF_CHUNKED) {
		c->resp_left = LEFT_CHUNKED;
		lb_chunk_init(&c->resp_ck);
		if (c->req_minor == 0)
			c->close_after = 1;
	} else if (rs->content_length >= 0) {
		c->resp_left = rs->content_length;
	} else {
		c->resp_left = LEFT_UNTIL_CLOSE;
		c->close_after = 1;
		c->backend_reuse = 0;
	}
	if (build_response_head(c, rs) != 0) {
		backend_failed(c, 502, "response head too large to rewrite", 0);
		return;
	}
	c->out.s += (uint32_t)n;
	if (rs->status == 101) {
		c->q = Q_TUNNEL;
		c->r = R_TUNNEL;
		c->req_fwd = 0;
		return;
	}
	c->r = c->resp_left == 0 ? R_DONE : R_BODY;
}

static int response_body_step(struct conn *c);

static int response_wait_step(struct conn *c)
{
	size_t len = buf_len(&c->out);
	if (len == 0) {
		if (c->b && (c->b->eof || c->b->reset))
			backend_failed(c, 502, c->b->reset ? "connection reset by server before a response"
			                                   : "server closed the connection before a response", 1);
		return 0;
	}
	count_first_byte(c);
	int rc = lb_parse_response(c->out.d + c->out.s, len, &W.resp);
	if (rc == LB_EAGAIN) {
		if (len >= W.bufsize - 1)
			backend_failed(c, 502, "response head too large", 0);
		else if (c->b && (c->b->eof || c->b->reset))
			backend_failed(c, 502, "server closed mid response head", 0);
		return 0;
	}
	if (rc < 0) {
		char why[160];
		snprintf(why, sizeof why, "invalid response from %s: %s", c->srv ? c->srv->name : "?",
		         W.resp.error ? W.resp.error : "?");
		c->backend_reuse = 0;
		backend_failed(c, 502, why, 0);
		return 1;
	}
	handle_response(c, &W.resp, (size_t)rc);
	if (!c->h.dead && c->r == R_BODY)
		response_body_step(c); /* frame the body bytes that came with the head: one send for both */
	return 1;
}

/* The server's answer ended before its framing said it was whole: a failed exchange of that
 * server (circuit, errors, access log term SD or sD), logged with the request. What came is still
 * passed on, then the client connection is closed: that is how the client learns of the cut. */
static void response_cut(struct conn *c, char who, const char *how)
{
	char why[256];
	uint64_t got = c->bytes_out + c->resp_fwd;
	if (c->resp_left >= 0)
		snprintf(why, sizeof why, "%s, %llu of %llu body bytes", how, (unsigned long long)got,
		         (unsigned long long)(got + (uint64_t)c->resp_left));
	else if (c->resp_left == LEFT_CHUNKED)
		snprintf(why, sizeof why, "%s, %llu body bytes and no last chunk", how, (unsigned long long)c->resp_ck.body);
	else
		snprintf(why, sizeof why, "%s, after %llu body bytes", how, (unsigned long long)got);
	const char *qd = c->qh.d;
	struct lb_str m = { "-", 1 }, u = { "-", 1 }, id = { "-", 1 };
	if (qd && c->lg_mlen) {
		m = (struct lb_str){ qd, c->lg_mlen };
		u = (struct lb_str){ qd + c->lg_mlen + 1, LB_MIN(c->lg_ulen, 300u) };
	}
	if (qd && c->lg_id_len)
		id = (struct lb_str){ qd + c->lg_id_off, c->lg_id_len };
	lb_warn("server %s/%s: %.*s %.*s (request id %.*s, client %s): %s; closing the client connection (server %s)",
	        c->pool->name, c->srv->name, (int)m.n, m.p, (int)u.n, u.p, (int)id.n, id.p, ip_text(&c->ip), why,
	        srv_addr(c->srv));
	set_term(c, who);
	cb_settle(c, 1, why);
	c->r = R_DONE;
	c->close_after = 1;
	c->backend_reuse = 0;
}

static int response_body_step(struct conn *c)
{
	size_t have = buf_len(&c->out) - c->resp_fwd;
	int ended = c->b && (c->b->eof || c->b->reset);
	if (have == 0) {
		if (!ended)
			return 0;
		if (c->resp_left == LEFT_UNTIL_CLOSE && !c->b->reset) {
			c->r = R_DONE; /* the close is this answer's end; a reset is not */
			return 1;
		}
		if (c->b->reset) {
			char how[96];
			snprintf(how, sizeof how, "connection reset by server before the whole answer (%s)",
			         strerror(c->b->reset));
			response_cut(c, 'S', how);
		} else {
			response_cut(c, 'S', "server closed before the whole answer");
		}
		return 1;
	}
	const char *p = c->out.d + c->out.s + c->resp_fwd;
	if (c->resp_left == LEFT_CHUNKED) {
		size_t used = 0;
		int rc = lb_chunk_scan(&c->resp_ck, p, have, &used);
		c->resp_fwd += used;
		if (rc == LB_CHUNK_ERROR) {
			response_cut(c, 'S', "invalid chunked framing from server");
			return 1;
		}
		if (rc == LB_CHUNK_DONE)
			c->r = R_DONE;
	} else if (c->resp_left == LEFT_UNTIL_CLOSE) {
		c->resp_fwd += have;
	} else {
		size_t take = (size_t)LB_MIN((uint64_t)have, (uint64_t)c->resp_left);
		c->resp_fwd += take;
		c->resp_left -= (int64_t)take;
		if (c->resp_left == 0)
			c->r = R_DONE;
	}
	return 1;
}

static int io_again(void) { return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR; }

/* -------------------------------------------------------------------- splice (mode tcp, Linux)
 * A plain TCP tunnel moves bytes socket -> pipe -> socket with splice(2): they never enter
 * user space. One pipe per direction; a pipe may hold LB_PIPE_CAP bytes, or fewer when the
 * socket's packets use up its slots, so EAGAIN with bytes in the pipe means "full", not
 * "nothing to read". Pipes left empty are kept for the next tunnel (at most LB_PIPES_KEPT). */

#define LB_PIPE_CAP 65536
#define LB_PIPES_KEPT 64

struct lb_splice {
	int cb[2], bc[2];              /* client -> server, server -> client */
	uint32_t ncb, nbc;             /* bytes in each */
	bool cb_full, bc_full;
	struct lb_splice *next;
};

static size_t tun_in(const struct conn *c) { return buf_len(&c->in) + (c->sp ? c->sp->ncb : 0); }
static size_t tun_out(const struct conn *c) { return buf_len(&c->out) + (c->sp ? c->sp->nbc : 0); }

static void splice_close(struct lb_splice *sp)
{
	close(sp->cb[0]);
	close(sp->cb[1]);
	close(sp->bc[0]);
	close(sp->bc[1]);
	free(sp);
}

/* A tunnel of a plain listener whose servers all speak plain TCP gets its pipes; without
 * them (splice = off, not Linux, no file descriptors left) bytes go through buffers. */
static void splice_begin(struct conn *c)
{
#ifdef __linux__
	if (!c->L->splice || c->tls)
		return;
	for (size_t i = 0; i < c->pool->nservers; i++)
		if (c->pool->servers[i].tls)
			return;
	struct lb_splice *sp = W.free_splices;
	if (sp) {
		W.free_splices = sp->next;
		W.nfree_splices--;
	} else {
		if (!(sp = malloc(sizeof *sp)))
			return;
		if (pipe2(sp->cb, O_NONBLOCK | O_CLOEXEC) != 0) {
			free(sp);
			return;
		}
		if (pipe2(sp->bc, O_NONBLOCK | O_CLOEXEC) != 0) {
			close(sp->cb[0]);
			close(sp->cb[1]);
			free(sp);
			return;
		}
	}
	sp->ncb = sp->nbc = 0;
	sp->cb_full = sp->bc_full = 0;
	c->sp = sp;
#else
	LB_UNUSED(c);
#endif
}

static void splice_end(struct conn *c)
{
	struct lb_splice *sp = c->sp;
	if (!sp)
		return;
	c->sp = NULL;
	if (sp->ncb || sp->nbc || W.nfree_splices >= LB_PIPES_KEPT) { /* bytes left behind: never reused */
		splice_close(sp);
		return;
	}
	sp->next = W.free_splices;
	W.free_splices = sp;
	W.nfree_splices++;
}

/* out of descriptors: the kept pipes hold 4 each for nothing */
static void splice_pool_drain(void)
{
	while (W.free_splices) {
		struct lb_splice *sp = W.free_splices;
		W.free_splices = sp->next;
		splice_close(sp);
	}
	W.nfree_splices = 0;
}

#ifdef __linux__
/* one splice from fd into a pipe holding *n bytes; the result as recv's */
static ssize_t splice_into(int fd, int pipe_w, uint32_t *n, bool *full)
{
	ssize_t r = splice(fd, NULL, pipe_w, NULL, LB_PIPE_CAP - *n, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
	if (r > 0)
		*n += (uint32_t)r;
	else if (r < 0 && io_again() && *n > 0)
		*full = 1;
	return r;
}

static ssize_t splice_out(int pipe_r, int fd, uint32_t *n, bool *full)
{
	ssize_t r = splice(pipe_r, NULL, fd, NULL, *n, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
	if (r > 0) {
		*n -= (uint32_t)r;
		*full = 0;
	}
	return r;
}
#else
static ssize_t splice_into(int fd, int pipe_w, uint32_t *n, bool *full)
{
	LB_UNUSED(fd), LB_UNUSED(pipe_w), LB_UNUSED(n), LB_UNUSED(full);
	errno = ENOSYS;
	return -1;
}
static ssize_t splice_out(int pipe_r, int fd, uint32_t *n, bool *full)
{
	return splice_into(pipe_r, fd, n, full);
}
#endif

static int tunnel_step(struct conn *c)
{
	int moved = 0;
	if (c->b && (c->b->eof || c->b->reset) && tun_out(c) == 0 && buf_len(&c->rh) == 0 && !c->shut_c &&
	    !(c->tls && tls_records_pending(&c->tls->io))) {
		if (c->tls)
			tls_close_notify(&c->tls->io, c->h.fd);
		shutdown(c->h.fd, SHUT_WR);
		c->shut_c = 1;
		moved = 1;
	}
	if (c->cin_eof && tun_in(c) == 0 && c->b && c->b->connected && !c->shut_b) {
		if (c->b->tls)
			tls_close_notify(&c->b->tls->io, c->b->h.fd);
		shutdown(c->b->h.fd, SHUT_WR);
		c->shut_b = 1;
		moved = 1;
	}
	if (c->shut_c && (c->shut_b || (c->b && c->b->reset))) {
		conn_abort(c, NULL);
		return 0;
	}
	if (c->shut_b && c->cin_eof && c->b && c->b->reset) {
		conn_abort(c, NULL);
		return 0;
	}
	return moved;
}

static int response_step(struct conn *c)
{
	switch (c->r) {
	case R_WAIT: return response_wait_step(c);
	case R_BODY: return response_body_step(c);
	case R_TUNNEL: return tunnel_step(c);
	}
	return 0;
}

/* The exchange is over when the response went out whole: log, recycle, take the next request. */
static int finish_step(struct conn *c)
{
	if (c->r != R_DONE || buf_len(&c->rh) > 0 || c->resp_fwd > 0 || (c->tls && tls_records_pending(&c->tls->io)))
		return 0;
	if (c->q == Q_BODY) {
		c->close_after = 1; /* the server answered before the body ended: the stream cannot resync */
		c->backend_reuse = 0;
	}
	int reuse = c->backend_reuse && c->q == Q_DONE && buf_len(&c->out) == 0;
	cb_settle(c, 0, "");
	access_log_write(c);
	backend_release(c, reuse);
	if (answer_cut(c)) {
		conn_close(c); /* no close_notify: the client must not take the cut answer for a whole one */
		return 0;
	}
	/* a stop that began after the head went out was not announced: the connection stays,
	 * and its next request (or the retire idle timer) ends it without a race */
	if (c->close_after || c->close_announced || CONN_IS_STREAM(c)) { /* a stream is one exchange */
		conn_close_clean(c);
		return 0;
	}
	c->q = Q_HEAD;
	c->r = R_NONE;
	c->scan = 0;
	c->t_start = 0;
	c->t_active = c->t_head = g_now;
	buf_put(&c->qh);
	buf_put(&c->rh);
	if (buf_len(&c->out) == 0)
		buf_put(&c->out);
	if (buf_len(&c->in) == 0)
		buf_put(&c->in);
	return 1;
}

/* -------------------------------------------------------------------- byte movers */


/* head + body in one call when there are both; plain send() is cheaper for one buffer */
static ssize_t send_iov(int fd, struct iovec *iov, int k)
{
	if (k == 1)
		return send(fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL);
	struct msghdr m;
	memset(&m, 0, sizeof m);
	m.msg_iov = iov;
	m.msg_iovlen = (size_t)k;
	return sendmsg(fd, &m, MSG_NOSIGNAL);
}

static int want_client_read(struct conn *c)
{
	/* not c->h.hup: after lb's shutdown(SHUT_WR) a client's FIN polls as HUP, and its last
	 * bytes and its EOF are still to be read (reading them is what ends a tunnel) */
	if (c->cin_eof)
		return 0;
	if (c->q == Q_PROXY)
		return buf_len(&c->in) < LB_PROXY_V2_MAX;
	if (c->q == Q_HEAD)
		return c->r == R_NONE && buf_len(&c->in) < c->L->max_header_size;
	return c->q == Q_BODY || c->q == Q_TUNNEL;
}

static ssize_t client_recv(struct conn *c, size_t room)
{
	if (!c->tls) {
		ssize_t n = recv(c->h.fd, c->in.d + c->in.e, room, 0);
		if (n >= 0 && (size_t)n < room)
			c->h.rready = 0; /* drained: wait for the next event */
		return n;
	}
	return tls_recv(&c->tls->io, c->h.fd, &c->h.rready, c->in.d + c->in.e, room);
}

/* tunnel with pipes: the client's bytes go into c->sp->cb */
static int client_splice_in(struct conn *c)
{
	struct lb_splice *sp = c->sp;
	if (!c->h.rready || sp->cb_full || sp->ncb >= LB_PIPE_CAP)
		return 0;
	ssize_t n = splice_into(c->h.fd, sp->cb[1], &sp->ncb, &sp->cb_full);
	if (n > 0) {
		c->t_active = g_now;
		c->bytes_in += (uint64_t)n;
		return 1;
	}
	if (n < 0 && io_again()) {
		if (!sp->cb_full)
			c->h.rready = 0;
		return 0;
	}
	c->cin_eof = 1;
	return 1;
}

static int client_read(struct conn *c)
{
	if (CONN_IS_STREAM(c) || !want_client_read(c)) /* a stream's bytes come from its session (h2_on_data) */
		return 0;
	if (c->sp && c->q == Q_TUNNEL)
		return client_splice_in(c);
	if (buf_get(&c->in) != 0)
		return 0;
	size_t room = buf_room(&c->in);
	if (c->q == Q_HEAD)
		room = LB_MIN(room, c->L->max_header_size + 1 - buf_len(&c->in));
	else if (c->q == Q_PROXY) /* nothing past the header's bound: what follows may be TLS */
		room = LB_MIN(room, LB_PROXY_V2_MAX - buf_len(&c->in));
	if (room == 0)
		return 0;
	if (!c->h.rready && !(c->tls && tls_has_input(&c->tls->io))) {
		if (buf_len(&c->in) == 0)
			buf_put(&c->in);
		return 0;
	}
	int was_empty = buf_len(&c->in) == 0;
	ssize_t n = client_recv(c, room);
	if (n > 0) {
		if (was_empty && c->q == Q_HEAD) {
			c->t_head = g_now;
			if (!c->us_start)
				c->us_start = mono_us();
		}
		c->in.e += (uint32_t)n;
		c->t_active = g_now;
		c->bytes_in += (uint64_t)n;
		return 1;
	}
	if (n < 0 && io_again()) {
		c->h.rready = 0;
		if (buf_len(&c->in) == 0)
			buf_put(&c->in);
		return 0;
	}
	if (c->tls && n < 0 && errno == EPROTO) {
		char why[200];
		int kind = tls_fail_why(c->tls, why, sizeof why);
		tls_failed(c, kind, why);
		return 0;
	}
	if (c->tls && !c->tls->hs_done) {
		if (n < 0 || c->tls->io.got_bytes)
			tls_failed(c, LB_TLS_F_CLOSED, n < 0 ? "connection reset during the handshake"
			                                  : "the client closed the connection during the handshake");
		else
			conn_close(c);
		return 0;
	}
	c->cin_eof = 1;
	if (n < 0 && c->q != Q_TUNNEL) {
		conn_abort_client(c, c->r == R_NONE ? NULL : "client connection reset");
		return 0;
	}
	return 1;
}

/* what may go to the client now: rh, then framed response bytes (all of out in a tunnel) */
static size_t client_pending(const struct conn *c)
{
	size_t body = c->r == R_TUNNEL ? tun_out(c) : c->resp_fwd;
	return buf_len(&c->rh) + body;
}

/* bytes for the client wait in us, or in its TLS engine */
static int client_wants_write(const struct conn *c)
{
	if (!c->tls)
		return client_pending(c) > 0;
	return tls_records_pending(&c->tls->io) || (client_pending(c) > 0 && tls_can_send(&c->tls->io));
}

#ifdef LB_HTTP2
static int h2_stream_write(struct conn *c);
#endif

static int client_write(struct conn *c)
{
	int moved = 0;
#ifdef LB_HTTP2
	if (c->h2s) /* the response goes into HEADERS and DATA of the stream */
		return h2_stream_write(c);
#endif
	if (c->tls && tls_records_pending(&c->tls->io)) {
		int f = tls_flush_out(&c->tls->io, c->h.fd);
		if (f < 0) {
			conn_abort_client(c, c->r == R_NONE ? NULL : "client connection lost while sending the response");
			return 0;
		}
		if (f == 0)
			return 0;
		moved = 1;
	}
	while (client_pending(c) > 0) {
		if (c->sp && c->r == R_TUNNEL && buf_len(&c->rh) == 0 && buf_len(&c->out) == 0) {
			ssize_t n = splice_out(c->sp->bc[0], c->h.fd, &c->sp->nbc, &c->sp->bc_full);
			if (n <= 0) {
				if (n < 0 && io_again())
					return moved;
				conn_abort_client(c, "client connection lost while sending the response");
				return 0;
			}
			c->bytes_out += (uint64_t)n;
			c->sent_any = 1;
			c->t_active = g_now;
			moved = 1;
			continue;
		}
		struct iovec iov[2];
		int k = 0;
		size_t body = c->r == R_TUNNEL ? buf_len(&c->out) : c->resp_fwd;
		if (buf_len(&c->rh))
			iov[k].iov_base = c->rh.d + c->rh.s, iov[k++].iov_len = buf_len(&c->rh);
		if (body)
			iov[k].iov_base = c->out.d + c->out.s, iov[k++].iov_len = body;
		ssize_t n = c->tls ? tls_send(&c->tls->io, c->h.fd, iov, k) : send_iov(c->h.fd, iov, k);
		if (n < 0) {
			if (io_again())
				return moved;
			conn_abort_client(c, "client connection lost while sending the response");
			return 0;
		}
		size_t un = (size_t)n, h = LB_MIN(un, buf_len(&c->rh));
		c->rh.s += (uint32_t)h;
		un -= h;
		c->out.s += (uint32_t)un;
		if (c->r != R_TUNNEL)
			c->resp_fwd -= un;
		c->bytes_out += c->r == R_TUNNEL ? (uint64_t)n : (uint64_t)un;
		c->sent_any = 1;
		c->t_active = g_now;
		moved = 1;
	}
	if (c->rh.d && buf_len(&c->rh) == 0 && c->r != R_WAIT)
		buf_put(&c->rh);
	return moved;
}

static int backend_ready(const struct conn *c)
{
	return c->b && c->b->connected && !c->b->reset;
}

/* what may go to the server now: qh, then framed body bytes (all of in in a tunnel) */
static size_t backend_pending(const struct conn *c)
{
	size_t px = c->b ? (size_t)(c->b->pxn - c->b->pxs) : 0;
	if (c->q == Q_TUNNEL)
		return px + tun_in(c);
	return px + buf_len(&c->qh) + c->req_fwd;
}

/* a TLS error on a server connection: logged once with its reason, then a reset */
static void backend_tls_failed(struct conn *c)
{
	struct lb_str id = req_id(c);
	lb_warn("server %s/%s (%s): TLS: %s (request id %.*s)", c->pool->name, c->srv->name, srv_addr(c->srv),
	        tls_up_error_text(c->b->tls->io.err), (int)id.n, id.p);
	c->b->reset = EPROTO;
}

/* the server's engine has records to send, or may take plaintext now */
static int backend_wants_write(const struct conn *c)
{
	const struct lb_bconn *b = c->b;
	int more = backend_pending(c) > 0 && !c->shut_b;
	if (!b->tls || b->pxs < b->pxn)
		return more;
	return tls_records_pending(&b->tls->io) || (more && tls_can_send(&b->tls->io));
}

static void backend_send_failed(struct conn *c)
{
	char why[128];
	snprintf(why, sizeof why, "send to server %s: %s", c->srv->name, strerror(errno));
	c->b->reset = errno;
	backend_failed(c, 502, why, c->bytes_out == 0);
}

static int backend_write(struct conn *c)
{
	int moved = 0;
	if (backend_ready(c) && c->b->tls && c->b->pxs == c->b->pxn && tls_records_pending(&c->b->tls->io)) {
		int f = tls_flush_out(&c->b->tls->io, c->b->h.fd);
		if (f < 0) {
			char why[128];
			snprintf(why, sizeof why, "send to server %s: %s", c->srv->name, strerror(errno));
			c->b->reset = errno;
			backend_failed(c, 502, why, c->bytes_out == 0);
			return 0;
		}
		if (f == 0)
			return 0;
	}
	while (backend_ready(c) && backend_pending(c) > 0 && !c->shut_b) {
		if (c->sp && c->q == Q_TUNNEL && c->b->pxs == c->b->pxn && buf_len(&c->in) == 0) {
			ssize_t n = splice_out(c->sp->cb[0], c->b->h.fd, &c->sp->ncb, &c->sp->cb_full);
			if (n <= 0) {
				if (n < 0 && io_again())
					return moved;
				backend_send_failed(c);
				return 0;
			}
			c->t_active = g_now;
			moved = 1;
			continue;
		}
		struct iovec iov[3];
		int k = 0;
		size_t body = c->q == Q_TUNNEL ? buf_len(&c->in) : c->req_fwd;
		size_t px = (size_t)(c->b->pxn - c->b->pxs);
		if (px)
			iov[k].iov_base = c->b->px + c->b->pxs, iov[k++].iov_len = px;
		if (c->q != Q_TUNNEL && buf_len(&c->qh))
			iov[k].iov_base = c->qh.d + c->qh.s, iov[k++].iov_len = buf_len(&c->qh);
		if (body)
			iov[k].iov_base = c->in.d + c->in.s, iov[k++].iov_len = body;
		ssize_t n;
		if (!c->b->tls)
			n = send_iov(c->b->h.fd, iov, k);
		else if (px) /* the PROXY header goes in clear, before the handshake */
			n = send(c->b->h.fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL);
		else
			n = tls_send(&c->b->tls->io, c->b->h.fd, iov, k);
		if (n < 0) {
			if (io_again())
				return moved;
			backend_send_failed(c);
			return 0;
		}
		size_t un = (size_t)n;
		if (px) {
			size_t t = LB_MIN(un, px);
			c->b->pxs += (uint8_t)t;
			un -= t;
		}
		if (c->q != Q_TUNNEL) {
			size_t h = LB_MIN(un, buf_len(&c->qh));
			c->qh.s += (uint32_t)h;
			un -= h;
			c->req_fwd -= un;
			if (un)
				c->req_bodyless = 0; /* a body byte left: the request cannot be replayed */
		}
		c->in.s += (uint32_t)un;
		c->t_active = c->t_resp_wait = g_now;
		moved = 1;
	}
	return moved;
}

static int want_backend_read(const struct conn *c)
{
	return backend_ready(c) && !c->b->eof && (c->r == R_WAIT || c->r == R_BODY || c->r == R_TUNNEL);
}

/* tunnel with pipes: the server's bytes go into c->sp->bc */
static int backend_splice_in(struct conn *c)
{
	struct lb_bconn *b = c->b;
	struct lb_splice *sp = c->sp;
	if (!b->h.rready || sp->bc_full || sp->nbc >= LB_PIPE_CAP)
		return 0;
	ssize_t n = splice_into(b->h.fd, sp->bc[1], &sp->nbc, &sp->bc_full);
	if (n > 0) {
		c->resp_started = 1;
		c->t_active = g_now;
		return 1;
	}
	if (n < 0 && io_again()) {
		if (!sp->bc_full)
			b->h.rready = 0;
		return 0;
	}
	if (n == 0)
		b->eof = 1;
	else
		b->reset = errno;
	return 1;
}

static int backend_read(struct conn *c)
{
	struct lb_bconn *b = c->b;
	if (c->sp && c->r == R_TUNNEL && want_backend_read(c))
		return backend_splice_in(c);
	if (!want_backend_read(c) || (!b->h.rready && !(b->tls && tls_has_input(&b->tls->io))) || buf_get(&c->out) != 0)
		return 0;
	size_t room = buf_room(&c->out);
	if (room == 0)
		return 0;
	ssize_t n;
	if (b->tls && b->pxs < b->pxn) {
		n = -1, errno = EAGAIN; /* no handshake before the PROXY header is out */
	} else if (b->tls) {
		n = tls_recv(&b->tls->io, b->h.fd, &b->h.rready, c->out.d + c->out.e, room);
		if (n < 0 && errno == EPROTO) {
			backend_tls_failed(c);
			return 1;
		}
	} else {
		n = recv(b->h.fd, c->out.d + c->out.e, room, 0);
		if (n >= 0 && (size_t)n < room)
			b->h.rready = 0;
	}
	if (n > 0) {
		c->out.e += (uint32_t)n;
		if (!c->resp_started && c->L->mode == LB_MODE_HTTP)
			count_first_byte(c);
		c->resp_started = 1;
		c->t_active = g_now;
		return 1;
	}
	if (n < 0 && io_again()) {
		c->b->h.rready = 0;
		return 0;
	}
	if (n == 0)
		c->b->eof = 1;
	else
		c->b->reset = errno;
	return 1;
}

#ifdef LB_HTTP2
static void h2_progress(struct conn *c);           /* the HTTP/2 subsection, below */
static int h2_detect(struct conn *c);
static uint64_t h2_deadline(const struct conn *c, int *kind);
static void h2_idle_close(struct conn *c);
static int h2_park(struct conn *c);
static void h2_goaway(struct conn *c);
#else
static struct tls_conn *client_tls(const struct conn *c) { return c->tls; }
#endif

static void conn_interest(struct conn *c)
{
	if (CONN_IS_STREAM(c))
		goto backend;
	c->h.want = (want_client_read(c) && (c->q != Q_HEAD || buf_len(&c->in) < c->L->max_header_size)
	             ? EV_R : 0) |
	            (client_wants_write(c) ? EV_W : 0);
	if (c->q == Q_BODY || c->q == Q_TUNNEL) {
		/* backpressure: stop reading the client while the server side holds a full buffer */
		if (c->in.d && buf_len(&c->in) >= W.bufsize)
			c->h.want &= ~(unsigned)EV_R;
		if (c->sp && (c->sp->cb_full || c->sp->ncb >= LB_PIPE_CAP))
			c->h.want &= ~(unsigned)EV_R;
	}
	ev_apply(&c->h);
backend:;
	struct lb_bconn *b = c->b;
	if (b) {
		b->h.want = 0;
		if (!b->connected)
			b->h.want = EV_W;
		else if (!b->reset) {
			if (want_backend_read(c) && (!c->out.d || buf_len(&c->out) < W.bufsize) &&
			    !(c->sp && (c->sp->bc_full || c->sp->nbc >= LB_PIPE_CAP)))
				b->h.want |= EV_R;
			if (backend_wants_write(c))
				b->h.want |= EV_W;
		}
		ev_apply(&b->h);
	}
}

enum { T_CONNECT, T_HEAD, T_IDLE, T_RESPONSE };

/* The one deadline the connection's state needs, and which kind it is. */
static uint64_t conn_deadline(const struct conn *c, int *kind)
{
	const struct lb_listener *L = c->L;
#ifdef LB_HTTP2
	if (c->h2)
		return h2_deadline(c, kind);
#endif
	if (c->b && !c->b->connected) {
		*kind = T_CONNECT;
		return c->t_conn + c->pool->connect_timeout;
	}
	if (c->q == Q_PROXY) {
		*kind = T_HEAD;
		return c->t_head + L->header_timeout;
	}
	if (c->q == Q_HEAD && c->r == R_NONE) {
		int head = buf_len(&c->in) > 0 || c->nreq == 0;
		uint64_t d = head ? c->t_head + L->header_timeout : c->t_active + L->idle_timeout;
		*kind = head ? T_HEAD : T_IDLE;
		if (W.stopping && buf_len(&c->in) == 0)
			d = LB_MIN(d, LB_MAX(c->t_active, W.stop_began) + LB_RETIRE_IDLE_MS);
		return d;
	}
	if (c->r == R_WAIT && c->q == Q_DONE && c->b && buf_len(&c->qh) == 0) {
		*kind = T_RESPONSE;
		/* the whole head, not each byte of it: a head dripped a byte at a time is still cut */
		return LB_MAX(c->t_req_done, c->t_resp_wait) + c->resp_timeout;
	}
	*kind = T_IDLE;
	uint64_t d = c->t_active + L->idle_timeout;
	if (W.stopping && c->q == Q_TUNNEL && (c->shut_c || c->shut_b)) /* one side is done */
		d = LB_MIN(d, LB_MAX(c->t_active, W.stop_began) + LB_RETIRE_IDLE_MS);
	return d;
}

static void conn_arm_timer(struct conn *c)
{
	int kind;
	heap_set(c, conn_deadline(c, &kind));
}

static void conn_progress(struct conn *c)
{
	int turns = 0;
#ifdef LB_HTTP2
	if (c->h2) {
		h2_progress(c);
		return;
	}
#endif
	while (!c->h.dead) {
		int moved = client_read(c);
#ifdef LB_HTTP2
		int h2 = h2_detect(c);
		if (h2 > 0) {
			h2_progress(c);
			return;
		}
		if (h2 < 0) /* the start of the h2c preface: wait for the rest */
			break;
#endif
		if (!c->h.dead && c->q == Q_PROXY)
			moved |= proxy_step(c);
		if (!c->h.dead && c->L->mode == LB_MODE_HTTP)
			moved |= request_step(c);
		if (!c->h.dead)
			moved |= backend_write(c);
		if (!c->h.dead)
			moved |= backend_read(c);
		if (!c->h.dead && (c->L->mode == LB_MODE_HTTP || c->r == R_TUNNEL))
			moved |= response_step(c);
		if (!c->h.dead)
			moved |= client_write(c);
		if (!c->h.dead && c->L->mode == LB_MODE_HTTP)
			moved |= finish_step(c);
		if (!moved)
			break;
		if (++turns >= 32 && !c->pending) { /* let others run; go on at the next loop turn */
			c->pending = 1;
			c->pnext = W.pending;
			W.pending = c;
			break;
		}
	}
	if (c->h.dead)
		return;
	conn_interest(c);
	conn_arm_timer(c);
}

static void run_pending(void)
{
	struct conn *list = W.pending;
	W.pending = NULL;
	while (list) {
		struct conn *c = list;
		list = c->pnext;
		c->pending = 0;
		if (!c->h.dead)
			conn_progress(c);
	}
}

/* The heap said this connection is due: act on the deadline that really expired, if any
 * (a connection deferred by conn_progress is due at once without having timed out). */
static void conn_timeout(struct conn *c)
{
	int kind;
#ifdef LB_HTTP2
	if (c->h2 && conn_deadline(c, &kind) <= g_now) {
		if (!h2_park(c))
			h2_idle_close(c);
		return;
	}
#endif
	if (conn_deadline(c, &kind) > g_now) {
		conn_progress(c);
		return;
	}
	switch (kind) {
	case T_CONNECT: {
		char why[400];
		snprintf(why, sizeof why, "connect to %s timed out", c->srv->name);
		backend_failed(c, 504, why, 1);
		break;
	}
	case T_HEAD:
		if (c->tls && !c->tls->hs_done && c->tls->io.got_bytes) {
			tls_failed(c, LB_TLS_F_TIMEOUT, "not complete within header_timeout");
			return;
		}
		if (buf_len(&c->in) == 0) {
			conn_close_clean(c); /* a new connection that never sent a byte: close quietly */
			return;
		}
		if (c->q == Q_PROXY) {
			conn_abort_client(c, "PROXY header not complete within header_timeout");
			return;
		}
		request_begin(c);
		log_keep_request_line(c, c->in.d + c->in.s, buf_len(&c->in));
		set_term(c, 'c');
		respond_own(c, 408, "request head not complete within header_timeout");
		break;
	case T_RESPONSE: {
		char why[160];
		if (buf_len(&c->out))
			snprintf(why, sizeof why, "response head from %s not complete within response_timeout (%zu bytes came)",
			         c->srv->name, buf_len(&c->out));
		else
			snprintf(why, sizeof why, "no response from %s within response_timeout", c->srv->name);
		c->backend_reuse = 0;
		backend_failed(c, 504, why, 0);
		break;
	}
	default:
		if (c->q == Q_HEAD && c->r == R_NONE && buf_len(&c->in) == 0) {
			conn_close_clean(c); /* keep-alive idle: close quietly */
			return;
		}
		if (c->L->mode == LB_MODE_HTTP && c->r == R_BODY && c->q != Q_BODY && c->b && client_pending(c) == 0) {
			response_cut(c, 's', "server sent nothing more for idle_timeout"); /* the client was waiting */
			break;
		}
		if (c->L->mode == LB_MODE_HTTP)
			set_term(c, 'c');
		conn_abort_client(c, c->L->mode == LB_MODE_TCP ? NULL : "idle timeout during the exchange");
		return;
	}
	if (!c->h.dead)
		conn_progress(c);
}

#ifdef LB_HTTP2
/* -------------------------------------------------------------------- HTTP/2 (nghttp2)
 * A connection that chose h2 by ALPN, or sent the h2c preface to a listener with http2 = on,
 * becomes a parent conn with one nghttp2 server session (struct h2c): h2_progress moves its bytes,
 * socket or TLS -> nghttp2_session_mem_recv, and nghttp2_session_mem_send -> rh -> client_write.
 * Each stream is a struct conn without a socket (struct h2s): the glue writes its request as an
 * HTTP/1.1 head into the stream's `in` (:authority -> Host, cookie crumbs joined, the body as is
 * with a Content-Length, else chunked), and the stream then takes the request path every HTTP/1.1
 * request takes (routing, policies, balancing, retries, logging: one code path). What that path
 * writes to the client (rh, then the framed bytes of out) h2_stream_write turns into HEADERS and
 * h2_read_body into DATA (hop-by-hop fields dropped, chunked decoded). Flow control is the
 * backpressure: a stream's window opens only as its bytes leave `in` for the server
 * (h2_stream_consume), and its DATA is deferred until the server's bytes come. nghttp2 checks the
 * frames and messages (pseudo-headers, connection-specific fields, content-length against DATA,
 * rapid resets); h2_on_header refuses what must never reach a server, again. nghttp2's memory
 * comes from h2_malloc and co: its frame buffer on pages of its own, given back while the
 * connection is idle (h2_park). */

#define H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define H2_PREFACE_LEN 24
enum { H2P_METHOD, H2P_PATH, H2P_AUTHORITY, H2P_N };

struct h2c {
	nghttp2_session *ss;
	struct conn *c;
	struct h2s *streams;           /* the live streams' conns */
	unsigned nstreams;
	const uint8_t *pend;           /* mem_send's output not yet copied into rh */
	size_t npend;
	nghttp2_rcbuf *pseudo[H2P_N];  /* of the header block being read (one at a time per connection) */
	int32_t spill_sid;             /* a DATA chunk its stream had no room for waits in c->out (spilled) */
	int32_t max_sid;               /* the highest stream a HEADERS opened; opened: those below it (bits) */
	uint64_t opened;
	bool spilled;
	bool goaway;                   /* GOAWAY sent: close once the streams are done */
	bool fatal;                    /* the session failed: send what is queued (its GOAWAY), then close */
	bool parked;                   /* fbuf's pages are given back (h2_park); a frame packed takes them again */
	void *fbuf;                    /* nghttp2's frame buffer, in fbuf_size bytes of whole pages from fbuf_base */
	void *fbuf_base;
	size_t fbuf_size;
};

/* the response's chunked framing, decoded into DATA */
enum { H2D_SIZE, H2D_EXT, H2D_DATA, H2D_CRLF, H2D_TRAILERS, H2D_DONE };

struct h2s {
	struct conn *c, *p;            /* the stream's conn; its connection's */
	struct h2s *next, *prev;
	int32_t sid;
	uint32_t inq;                  /* DATA bytes taken into c->in whose window is not given back yet */
	uint32_t hsize;                /* header list size so far (name + value + 32 each, as SETTINGS counts) */
	uint64_t ck_remain;            /* h2_decode: data left in the current chunk */
	uint8_t ck_state, ck_line;
	bool line_done;                /* the request line and Host are written */
	bool has_cl, chunked, req_ended;
	bool bad, too_big;             /* refused (RST_STREAM sent) / head over max_header_size */
	bool head_sent, ended, deferred, closed; /* response HEADERS submitted, END_STREAM too, data deferred, nghttp2 closed it */
	bool resp_chunked, trailers;   /* the answer is chunked; its trailers were submitted (they end the stream) */
	bool trailing;                 /* the request's last chunk and trailer fields are written */
};

static nghttp2_session_callbacks *g_h2cb;
static nghttp2_option *g_h2opt;
static struct h2s *g_free_h2s;
static struct conn *conn_alloc(void); /* section 15 */

static struct tls_conn *client_tls(const struct conn *c) { return c->h2s ? c->h2s->p->tls : c->tls; }

static void conn_defer(struct conn *c)
{
	if (c->pending || c->h.dead)
		return;
	c->pending = 1;
	c->pnext = W.pending;
	W.pending = c;
}

/* a stream's window back as its bytes leave `in` for the server (the head and framing count as
 * still held, so the window never opens ahead of the buffer) */
static void h2_stream_consume(struct conn *c)
{
	struct h2s *s = c->h2s;
	size_t held = buf_len(&c->in);
	if (s->inq <= held || s->closed)
		return;
	uint32_t k = s->inq - (uint32_t)held;
	nghttp2_session_consume(s->p->h2->ss, s->sid, k);
	s->inq -= k;
	conn_defer(s->p);
}

static int h2_spill_deliver(struct conn *p);
static void h2_drop_data(nghttp2_session *ss, int32_t sid, size_t len);

/* refuse a stream: RST_STREAM with code, a throttled line, its conn ended without an exchange */
static void h2_refuse(struct conn *c, uint32_t code, const char *why)
{
	static struct lb_throttle log_slot;
	struct h2s *s = c->h2s;
	log_throttled(&log_slot, "client %s listener %s: HTTP/2 stream %d refused (%s): %s", ip_text(&c->ip), c->L->name,
	              (int)s->sid, nghttp2_http2_strerror(code), why);
	nghttp2_submit_rst_stream(s->p->h2->ss, NGHTTP2_FLAG_NONE, s->sid, code);
	s->bad = 1;
	conn_close(c);
}

static struct conn *h2_stream_new(struct conn *p, int32_t sid)
{
	struct h2c *h = p->h2;
	if (W.nconns >= W.max_conns)
		return NULL;
	struct h2s *s = g_free_h2s;
	if (s)
		g_free_h2s = s->next;
	else if (!(s = malloc(sizeof *s)))
		return NULL;
	struct conn *c = conn_alloc();
	if (!c) {
		s->next = g_free_h2s;
		g_free_h2s = s;
		return NULL;
	}
	memset(c, 0, sizeof *c);
	memset(s, 0, sizeof *s);
	c->h.kind = H_CLIENT;
	c->h.fd = -1;
	c->hidx = NOT_IN_HEAP;
	c->li = p->li;
	c->L = p->L;
	c->t_head = c->t_active = g_now;
	set_conn_client(c, &p->conn_ip);
	conn_px_dst(p);
	c->px = p->px;
	c->px_dst_ok = 1;
	c->q = Q_HEAD;
	c->next = W.live;
	if (W.live)
		W.live->prev = c;
	W.live = c;
	W.nconns++;
	s->c = c;
	s->p = p;
	s->sid = sid;
	s->next = h->streams;
	if (h->streams)
		h->streams->prev = s;
	h->streams = s;
	h->nstreams++;
	c->h2s = s;
	if (buf_get(&c->in) != 0) {
		conn_close(c);
		return NULL;
	}
	return c;
}

/* conn_close of a stream: END_STREAM if its answer is whole, else RST_STREAM; its window back */
static void h2_stream_gone(struct conn *c)
{
	struct h2s *s = c->h2s;
	struct conn *p = s->p;
	struct h2c *h = p->h2;
	if (!s->closed) {
		nghttp2_session_set_stream_user_data(h->ss, s->sid, NULL);
		int whole = s->head_sent && c->r == R_DONE && buf_len(&c->rh) == 0 && c->resp_fwd == 0 && !answer_cut(c);
		if (!s->ended && whole)
			nghttp2_session_resume_data(h->ss, s->sid); /* h2_read_body: no conn, so the end */
		else if (!s->ended && !s->bad) {
			nghttp2_submit_rst_stream(h->ss, NGHTTP2_FLAG_NONE, s->sid,
			                          s->head_sent ? NGHTTP2_INTERNAL_ERROR : NGHTTP2_REFUSED_STREAM);
		}
		if (s->inq)
			h2_drop_data(h->ss, s->sid, s->inq);
	} else if (s->inq) {
		nghttp2_session_consume_connection(h->ss, s->inq);
	}
	conn_defer(p); /* its frames to send, its deadline now that one stream fewer is open */
	if (s->prev)
		s->prev->next = s->next;
	else
		h->streams = s->next;
	if (s->next)
		s->next->prev = s->prev;
	h->nstreams--;
	c->h2s = NULL;
	s->next = g_free_h2s;
	g_free_h2s = s;
}

/* conn_close of the connection: its streams end with it */
static void h2_conn_gone(struct conn *c)
{
	struct h2c *h = c->h2;
	while (h->streams) {
		struct conn *sc = h->streams->c;
		int whole = h->streams->ended; /* its END_STREAM is out: the exchange is just not logged yet */
		h->streams->closed = 1;
		if (whole)
			conn_progress(sc);
		if (!sc->h.dead)
			conn_abort_client(sc, sc->r == R_NONE ? NULL : "HTTP/2 connection closed with the stream open");
	}
	for (int i = 0; i < H2P_N; i++)
		if (h->pseudo[i])
			nghttp2_rcbuf_decref(h->pseudo[i]);
	nghttp2_session_del(h->ss);
	buf_put(&c->out); /* the cookie crumbs of a header block cut short */
	free(h);
	c->h2 = NULL;
}

static int h2_put(struct conn *c, const void *p, size_t n)
{
	if (buf_put_str(&c->in, p, n) != 0) {
		c->h2s->too_big = 1;
		return -1;
	}
	return 0;
}

static struct lb_str h2_pseudo(const struct h2c *h, int i)
{
	if (!h->pseudo[i])
		return (struct lb_str){ NULL, 0 };
	nghttp2_vec v = nghttp2_rcbuf_get_buf(h->pseudo[i]);
	return (struct lb_str){ (const char *)v.base, v.len };
}

/* "METHOD PATH HTTP/1.1" and Host: once the pseudo-headers are all in (they come first) */
static int h2_request_line(struct conn *c)
{
	struct h2s *s = c->h2s;
	struct h2c *h = s->p->h2;
	struct lb_str m = h2_pseudo(h, H2P_METHOD), path = h2_pseudo(h, H2P_PATH), a = h2_pseudo(h, H2P_AUTHORITY);
	s->line_done = 1;
	if (!m.n || !path.n) {
		h2_refuse(c, NGHTTP2_PROTOCOL_ERROR, "no :method or :path (CONNECT is not supported)");
		return -1;
	}
	if (path.p[0] != '/' && !(path.n == 1 && path.p[0] == '*' && m.n == 7 && !memcmp(m.p, "OPTIONS", 7))) {
		h2_refuse(c, NGHTTP2_PROTOCOL_ERROR, ":path not starting with '/'");
		return -1;
	}
	c->in.s = c->in.e = 0;
	if (h2_put(c, m.p, m.n) || h2_put(c, " ", 1) || h2_put(c, path.p, path.n) || h2_put(c, " HTTP/1.1\r\n", 11))
		return 0;
	if (a.n && (h2_put(c, "Host: ", 6) || h2_put(c, a.p, a.n) || h2_put(c, "\r\n", 2)))
		return 0;
	return 0;
}

/* a field no server may get from a stream: uppercase or non-token names, CR, LF or NUL in values,
 * connection-specific fields, TE other than trailers (nghttp2 refuses them first; this is the
 * glue's own guarantee) */
static const char *h2_field_bad(struct lb_str n, struct lb_str v)
{
	if (!n.n)
		return "an empty field name";
	for (size_t i = 0; i < n.n; i++)
		if (!is_tchar((unsigned char)n.p[i]) || (n.p[i] >= 'A' && n.p[i] <= 'Z'))
			return "a field name with an uppercase or invalid character";
	for (size_t i = 0; i < v.n; i++)
		if (v.p[i] == '\r' || v.p[i] == '\n' || v.p[i] == 0)
			return "CR, LF or NUL in a field value";
	if (str_ieq(n.p, n.n, "transfer-encoding") || str_ieq(n.p, n.n, "connection") ||
	    str_ieq(n.p, n.n, "keep-alive") || str_ieq(n.p, n.n, "proxy-connection") || str_ieq(n.p, n.n, "upgrade"))
		return "a connection-specific field";
	if (str_ieq(n.p, n.n, "te") && !(v.n == 8 && !memcmp(v.p, "trailers", 8)))
		return "TE other than trailers";
	return NULL;
}

static int h2_on_begin_headers(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
	struct conn *p = ud;
	if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	struct h2c *h = p->h2;
	for (int i = 0; i < H2P_N; i++)
		if (h->pseudo[i]) {
			nghttp2_rcbuf_decref(h->pseudo[i]);
			h->pseudo[i] = NULL;
		}
	buf_put(&p->out);
	struct conn *c = h2_stream_new(p, f->hd.stream_id);
	if (!c) {
		static struct lb_throttle log_slot;
		log_throttled(&log_slot, "client %s listener %s: HTTP/2 stream refused: no connection or buffer left "
		              "(max_connections = %u)", ip_text(&p->ip), p->L->name, W.max_conns);
		nghttp2_submit_rst_stream(ss, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_REFUSED_STREAM);
		return 0;
	}
	nghttp2_session_set_stream_user_data(ss, f->hd.stream_id, c);
	return 0;
}

static void h2_trailer_field(struct conn *c, struct lb_str n, struct lb_str v);

static int h2_on_header(nghttp2_session *ss, const nghttp2_frame *f, nghttp2_rcbuf *name, nghttp2_rcbuf *value,
                        uint8_t flags, void *ud)
{
	LB_UNUSED(flags);
	struct conn *p = ud;
	struct h2c *h = p->h2;
	if (f->hd.type != NGHTTP2_HEADERS)
		return 0;
	struct conn *c = nghttp2_session_get_stream_user_data(ss, f->hd.stream_id);
	if (!c || c->h.dead)
		return 0;
	struct h2s *s = c->h2s;
	if (f->headers.cat != NGHTTP2_HCAT_REQUEST) {
		nghttp2_vec tn = nghttp2_rcbuf_get_buf(name), tv = nghttp2_rcbuf_get_buf(value);
		h2_trailer_field(c, (struct lb_str){ (const char *)tn.base, tn.len }, (struct lb_str){ (const char *)tv.base, tv.len });
		return 0;
	}
	nghttp2_vec nv = nghttp2_rcbuf_get_buf(name), vv = nghttp2_rcbuf_get_buf(value);
	struct lb_str n = { (const char *)nv.base, nv.len }, v = { (const char *)vv.base, vv.len };
	s->hsize += (uint32_t)LB_MIN(n.n + v.n + 32, (size_t)1 << 24);
	if (s->hsize > c->L->max_header_size) {
		s->too_big = 1;
		return 0;
	}
	if (n.n && n.p[0] == ':') {
		int i = str_ieq(n.p, n.n, ":method") ? H2P_METHOD : str_ieq(n.p, n.n, ":path") ? H2P_PATH
		        : str_ieq(n.p, n.n, ":authority") ? H2P_AUTHORITY : -1;
		const char *bad = h2_field_bad((struct lb_str){ "x", 1 }, v);
		if (bad) {
			h2_refuse(c, NGHTTP2_PROTOCOL_ERROR, bad);
			return 0;
		}
		if (s->line_done) {
			h2_refuse(c, NGHTTP2_PROTOCOL_ERROR, "a pseudo-header after a regular one");
			return 0;
		}
		if (i >= 0) {
			if (h->pseudo[i])
				nghttp2_rcbuf_decref(h->pseudo[i]);
			nghttp2_rcbuf_incref(value);
			h->pseudo[i] = value;
		}
		return 0;
	}
	const char *bad = h2_field_bad(n, v);
	if (bad) {
		h2_refuse(c, NGHTTP2_PROTOCOL_ERROR, bad);
		return 0;
	}
	if (!s->line_done && h2_request_line(c) != 0)
		return 0;
	if (s->too_big)
		return 0;
	if (str_ieq(n.p, n.n, "host") && h->pseudo[H2P_AUTHORITY])
		return 0; /* :authority is the Host */
	if (str_ieq(n.p, n.n, "cookie")) { /* crumbs, joined into one field at the end (p->out holds them) */
		if (buf_get(&p->out) != 0 || (buf_len(&p->out) && buf_put_str(&p->out, "; ", 2)) ||
		    buf_put_str(&p->out, v.p, v.n))
			s->too_big = 1;
		return 0;
	}
	if (str_ieq(n.p, n.n, "content-length"))
		s->has_cl = 1;
	if (h2_put(c, n.p, n.n) || h2_put(c, ": ", 2) || h2_put(c, v.p, v.n) || h2_put(c, "\r\n", 2))
		return 0;
	return 0;
}

/* the header block is whole: end the HTTP/1.1 head and let the request path take it */
static void h2_head_done(struct conn *c, int end_stream)
{
	struct h2s *s = c->h2s;
	struct conn *p = s->p;
	struct h2c *h = p->h2;
	if (!s->line_done && h2_request_line(c) != 0)
		goto out;
	if (buf_len(&p->out) && !s->too_big &&
	    (h2_put(c, "Cookie: ", 8) || h2_put(c, p->out.d + p->out.s, buf_len(&p->out)) || h2_put(c, "\r\n", 2)))
		s->too_big = 1;
	s->req_ended = end_stream != 0;
	if (!end_stream && !s->has_cl && !s->too_big) {
		s->chunked = 1;
		h2_put(c, "Transfer-Encoding: chunked\r\n", 28);
	}
	if (!s->too_big)
		h2_put(c, "\r\n", 2);
	if (s->too_big) {
		c->in.s = c->in.e = 0;
		request_begin(c);
		respond_own(c, 431, "HTTP/2 request head larger than max_header_size");
	}
	conn_progress(c); /* the head leaves `in` now: the window's DATA gets the whole buffer */
out:
	buf_put(&p->out);
	for (int i = 0; i < H2P_N; i++)
		if (h->pseudo[i]) {
			nghttp2_rcbuf_decref(h->pseudo[i]);
			h->pseudo[i] = NULL;
		}
}

/* A request trailer: after the last chunk of a chunked body (with a Content-Length there is no
 * place for it: dropped), unless HTTP forbids it there or the stream's buffer is full (dropped too;
 * the 5 bytes of the body's end are always kept free: h2_take_data). */
static void h2_trailer_field(struct conn *c, struct lb_str n, struct lb_str v)
{
	struct h2s *s = c->h2s;
	if (!s->chunked || s->req_ended || s->bad || h2_field_bad(n, v) || str_ieq(n.p, n.n, "content-length") ||
	    str_ieq(n.p, n.n, "host") || str_ieq(n.p, n.n, "te") || str_ieq(n.p, n.n, "trailer") || !c->in.d)
		return;
	size_t need = n.n + v.n + 4 + (s->trailing ? 0 : 3);
	if (buf_room(&c->in) < need + 2)
		return;
	if (!s->trailing)
		buf_put_lit(&c->in, "0\r\n");
	s->trailing = 1;
	put_header(&c->in, n, v);
}

/* the client's END_STREAM: a chunked body gets its last chunk (and the end of its trailers) */
static void h2_body_end(struct conn *c)
{
	struct h2s *s = c->h2s;
	if (s->req_ended)
		return;
	s->req_ended = 1;
	if (s->chunked && (buf_get(&c->in) != 0 ||
	                   (s->trailing ? buf_put_lit(&c->in, "\r\n") : buf_put_lit(&c->in, "0\r\n\r\n")) != 0)) {
		conn_abort_client(c, "HTTP/2 request body: no room for its end");
		return;
	}
	conn_defer(c);
}

static int h2_on_frame_recv(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
	LB_UNUSED(ud);
	if (f->hd.type == NGHTTP2_RST_STREAM)
		count_h2_reset(H2R_CLIENT);
	if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA)
		return 0;
	struct conn *c = nghttp2_session_get_stream_user_data(ss, f->hd.stream_id);
	if (!c || c->h.dead)
		return 0;
	if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST)
		h2_head_done(c, f->hd.flags & NGHTTP2_FLAG_END_STREAM);
	else if ((f->hd.flags & NGHTTP2_FLAG_END_STREAM) && !c->h.dead && c->h2s)
		h2_body_end(c);
	return 0;
}

/* DATA into the stream's `in` (a chunk each without Content-Length); -1: no room yet */
static int h2_take_data(struct conn *c, const uint8_t *d, size_t len)
{
	struct h2s *s = c->h2s;
	char hex[20];
	int hn = s->chunked ? snprintf(hex, sizeof hex, "%zx\r\n", len) : 0;
	if (buf_get(&c->in) != 0 || buf_room(&c->in) < len + (size_t)hn + 2 + 5) /* + CRLF, + the last chunk */
		return -1;
	if (hn)
		buf_put_str(&c->in, hex, (size_t)hn);
	buf_put_str(&c->in, (const char *)d, len);
	if (hn)
		buf_put_str(&c->in, "\r\n", 2);
	s->inq += (uint32_t)len;
	c->t_active = g_now;
	c->bytes_in += len;
	conn_defer(c);
	return 0;
}

/* a stream that is done with: the window back at once */
static void h2_drop_data(nghttp2_session *ss, int32_t sid, size_t len)
{
	if (nghttp2_session_consume(ss, sid, len) != 0)
		nghttp2_session_consume_connection(ss, len);
}

/* No room in the stream's buffer (a client may send a whole 64 KB window before our SETTINGS
 * arrive): the chunk waits in the connection's out, and the session reads nothing more until
 * the stream has taken it (h2_spill_deliver). */
static int h2_on_data(nghttp2_session *ss, uint8_t flags, int32_t sid, const uint8_t *d, size_t len, void *ud)
{
	LB_UNUSED(flags);
	struct conn *p = ud;
	struct conn *c = nghttp2_session_get_stream_user_data(ss, sid);
	if (!c || c->h.dead || !c->h2s) {
		h2_drop_data(ss, sid, len);
		return 0;
	}
	if (h2_take_data(c, d, len) == 0)
		return 0;
	if (buf_get(&p->out) != 0 || buf_put_str(&p->out, (const char *)d, len) != 0) {
		h2_drop_data(ss, sid, len);
		h2_refuse(c, NGHTTP2_ENHANCE_YOUR_CALM, "no buffer for a DATA frame");
		return 0;
	}
	p->h2->spilled = 1;
	p->h2->spill_sid = sid;
	return NGHTTP2_ERR_PAUSE;
}

/* 1: no DATA chunk waits (any more) */
static int h2_spill_deliver(struct conn *p)
{
	struct h2c *h = p->h2;
	if (!h->spilled)
		return 1;
	struct conn *c = nghttp2_session_get_stream_user_data(h->ss, h->spill_sid);
	if (c && !c->h.dead && c->h2s && h2_take_data(c, (const uint8_t *)p->out.d + p->out.s, buf_len(&p->out)) != 0)
		return 0;
	if (!c || c->h.dead || !c->h2s)
		h2_drop_data(h->ss, h->spill_sid, buf_len(&p->out));
	h->spilled = 0;
	buf_put(&p->out);
	return 1;
}

/* A HEADERS on a stream below the highest opened that was never opened itself: RFC 9113 5.1.1's
 * PROTOCOL_ERROR (nghttp2 only ignores it, not knowing which lower ids were skipped; the last 64
 * odd ids are remembered here). */
static int h2_on_begin_frame(nghttp2_session *ss, const nghttp2_frame_hd *hd, void *ud)
{
	struct h2c *h = ((struct conn *)ud)->h2;
	int32_t sid = hd->stream_id;
	if (hd->type != NGHTTP2_HEADERS || !(sid & 1))
		return 0;
	if (sid > h->max_sid) {
		uint32_t shift = (uint32_t)(sid - h->max_sid) / 2;
		h->opened = shift >= 64 ? 0 : h->opened << shift;
		h->opened |= 1;
		h->max_sid = sid;
	} else if ((uint32_t)(h->max_sid - sid) / 2 < 64 && !(h->opened >> ((uint32_t)(h->max_sid - sid) / 2) & 1)) {
		nghttp2_session_terminate_session(ss, NGHTTP2_PROTOCOL_ERROR);
	}
	return 0;
}

static int h2_on_stream_close(nghttp2_session *ss, int32_t sid, uint32_t code, void *ud)
{
	LB_UNUSED(ud);
	struct conn *c = nghttp2_session_get_stream_user_data(ss, sid);
	if (!c || c->h.dead || !c->h2s)
		return 0;
	c->h2s->closed = 1;
	if (c->h2s->ended)
		return 0; /* the answer went out whole: the exchange ends on its own (finish_step) */
	if (c->h2s->inq) {
		nghttp2_session_consume_connection(ss, c->h2s->inq);
		c->h2s->inq = 0;
	}
	char why[96];
	snprintf(why, sizeof why, "HTTP/2 stream reset (%s)", nghttp2_http2_strerror(code));
	conn_abort_client(c, c->r == R_NONE ? NULL : why);
	return 0;
}

/* the answer ended while the client still sends: RST_STREAM NO_ERROR tells it to stop (RFC 9113 8.1) */
static int h2_on_frame_send(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
	LB_UNUSED(ud);
	if (f->hd.type == NGHTTP2_RST_STREAM) /* lb's resets, nghttp2's own checks' included */
		count_h2_reset(f->rst_stream.error_code == NGHTTP2_PROTOCOL_ERROR  ? H2R_PROTOCOL
		               : f->rst_stream.error_code == NGHTTP2_REFUSED_STREAM ? H2R_REFUSED
		               : f->rst_stream.error_code == NGHTTP2_NO_ERROR       ? H2R_N
		                                                                    : H2R_OTHER);
	if ((f->hd.type == NGHTTP2_DATA || f->hd.type == NGHTTP2_HEADERS) && (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
		nghttp2_stream *st = nghttp2_session_find_stream(ss, f->hd.stream_id);
		if (st && nghttp2_stream_get_state(st) == NGHTTP2_STREAM_STATE_HALF_CLOSED_LOCAL)
			nghttp2_submit_rst_stream(ss, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_NO_ERROR);
	}
	return 0;
}

static int h2_on_invalid_frame(nghttp2_session *ss, const nghttp2_frame *f, int err, void *ud)
{
	LB_UNUSED(ss);
	static struct lb_throttle log_slot;
	struct conn *p = ud;
	log_throttled(&log_slot, "client %s listener %s: HTTP/2 invalid frame (type %d, stream %d): %s", ip_text(&p->ip),
	              p->L->name, f->hd.type, (int)f->hd.stream_id, nghttp2_strerror(err));
	return 0;
}

/* chunked framing in `out` -> data into dst; returns the data bytes, *used the bytes of out */
static size_t h2_decode(struct h2s *s, const char *src, size_t n, uint8_t *dst, size_t cap, size_t *used)
{
	size_t i = 0, w = 0;
	while (i < n && w < cap && s->ck_state != H2D_DONE && s->ck_state != H2D_TRAILERS) {
		char ch = src[i];
		switch (s->ck_state) {
		case H2D_SIZE:
			if (is_hex((unsigned char)ch)) {
				s->ck_remain = s->ck_remain * 16 + (uint64_t)(ch <= '9' ? ch - '0' : (ch | 32) - 'a' + 10);
			} else if (ch == '\n') {
				s->ck_state = s->ck_remain ? H2D_DATA : H2D_TRAILERS;
				s->ck_line = 0;
			} else {
				s->ck_state = H2D_EXT;
			}
			i++;
			break;
		case H2D_EXT:
			if (ch == '\n') {
				s->ck_state = s->ck_remain ? H2D_DATA : H2D_TRAILERS;
				s->ck_line = 0;
			}
			i++;
			break;
		case H2D_DATA: {
			size_t k = (size_t)LB_MIN((uint64_t)LB_MIN(n - i, cap - w), s->ck_remain);
			memcpy(dst + w, src + i, k);
			w += k;
			i += k;
			s->ck_remain -= k;
			if (!s->ck_remain)
				s->ck_state = H2D_CRLF;
			break;
		}
		case H2D_CRLF:
			if (ch == '\n')
				s->ck_state = H2D_SIZE;
			i++;
			break;
		}
	}
	*used = i;
	return w;
}

/* The trailer section of a chunked answer, whole in out (the answer is framed to its end): into a
 * trailing HEADERS frame; fields HTTP/2 forbids (connection-specific, framing, Host) are dropped.
 * Returns the bytes of out it took. */
static size_t h2_trailers(struct conn *c, const char *p, size_t n)
{
	static nghttp2_nv nva[64];
	size_t k = 0, i = 0, off = 0;
	while (i < n) {
		const char *nl = memchr(p + i, '\n', n - i);
		size_t e = nl ? (size_t)(nl - p) : n, le = e > i && p[e - 1] == '\r' ? e - 1 : e;
		const char *colon = memchr(p + i, ':', le - i);
		if (colon && k < 64 && off + (size_t)(colon - (p + i)) < W.bufsize) {
			struct lb_str name = { p + i, (size_t)(colon - (p + i)) }, v = { colon + 1, (size_t)(p + le - colon - 1) };
			while (v.n && (v.p[0] == ' ' || v.p[0] == '\t'))
				v.p++, v.n--;
			while (v.n && (v.p[v.n - 1] == ' ' || v.p[v.n - 1] == '\t'))
				v.n--;
			lower_copy(W.scratch + off, name.p, name.n);
			struct lb_str lname = { W.scratch + off, name.n };
			if (!h2_field_bad(lname, v) && !str_ieq(lname.p, lname.n, "content-length") &&
			    !str_ieq(lname.p, lname.n, "host") && !str_ieq(lname.p, lname.n, "trailer") &&
			    !str_ieq(lname.p, lname.n, "te")) {
				nva[k++] = (nghttp2_nv){ (uint8_t *)lname.p, (uint8_t *)v.p, lname.n, v.n, NGHTTP2_NV_FLAG_NONE };
				off += name.n + 1;
			}
		}
		i = nl ? e + 1 : n;
	}
	if (k && nghttp2_submit_trailer(c->h2s->p->h2->ss, c->h2s->sid, nva, k) == 0)
		c->h2s->trailers = 1;
	return n;
}

/* the data provider of a response: body bytes from rh (lb's own answers), then from out */
static ssize_t h2_read_body(nghttp2_session *ss, int32_t sid, uint8_t *buf, size_t cap, uint32_t *flags,
                            nghttp2_data_source *src, void *ud)
{
	LB_UNUSED(src), LB_UNUSED(ud);
	struct conn *c = nghttp2_session_get_stream_user_data(ss, sid);
	if (!c || c->h.dead || !c->h2s) { /* the exchange ended whole (h2_stream_gone) */
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		return 0;
	}
	struct h2s *s = c->h2s;
	size_t n = LB_MIN(cap, buf_len(&c->rh));
	if (n) {
		memcpy(buf, c->rh.d + c->rh.s, n);
		c->rh.s += (uint32_t)n;
	}
	while (n < cap && c->resp_fwd > 0) {
		size_t used, w;
		if (s->resp_chunked && s->ck_state == H2D_TRAILERS) {
			if (c->r != R_DONE)
				break; /* the trailer section is not whole yet */
			w = 0;
			used = h2_trailers(c, c->out.d + c->out.s, (size_t)c->resp_fwd);
			s->ck_state = H2D_DONE;
		} else if (s->resp_chunked) {
			w = h2_decode(s, c->out.d + c->out.s, (size_t)c->resp_fwd, buf + n, cap - n, &used);
		} else {
			w = used = (size_t)LB_MIN((uint64_t)(cap - n), c->resp_fwd);
			memcpy(buf + n, c->out.d + c->out.s, w);
		}
		c->out.s += (uint32_t)used;
		c->resp_fwd -= used;
		n += w;
		if (!used)
			break;
	}
	if (c->rh.d && buf_len(&c->rh) == 0 && c->r != R_WAIT)
		buf_put(&c->rh);
	if (n) {
		c->bytes_out += n;
		c->sent_any = 1;
		c->t_active = g_now;
		conn_defer(c); /* room in its buffers: it reads on from the server */
	}
	if (c->r == R_DONE && client_pending(c) == 0) {
		*flags |= NGHTTP2_DATA_FLAG_EOF | (s->trailers ? NGHTTP2_DATA_FLAG_NO_END_STREAM : 0);
		s->ended = 1;
		return (ssize_t)n;
	}
	if (!n) {
		s->deferred = 1;
		return NGHTTP2_ERR_DEFERRED;
	}
	return (ssize_t)n;
}

/* client_write of a stream: response heads (rh) into HEADERS; body bytes wake the data provider */
static int h2_stream_write(struct conn *c)
{
	struct h2s *s = c->h2s;
	struct h2c *h = s->p->h2;
	int moved = 0;
	h2_stream_consume(c);
	if (h->spilled && h->spill_sid == s->sid)
		conn_defer(s->p);
	while (!s->head_sent && buf_len(&c->rh) > 0) {
		int rc = lb_parse_response(c->rh.d + c->rh.s, buf_len(&c->rh), &W.resp);
		if (rc <= 0) {
			conn_abort(c, "HTTP/2: the response head could not be read back");
			return 0;
		}
		static nghttp2_nv nva[LB_MAX_HEADERS + 1];
		char st[8];
		snprintf(st, sizeof st, "%d", W.resp.status);
		size_t k = 0, off = 0;
		nva[k++] = (nghttp2_nv){ (uint8_t *)":status", (uint8_t *)st, 7, strlen(st), NGHTTP2_NV_FLAG_NONE };
		for (size_t i = 0; i < W.resp.nheaders; i++) {
			const struct lb_header *hd = &W.resp.headers[i];
			if ((hop_by_hop(hd->id) && hd->id != LB_H_TRAILER) || hd->id == LB_H_TRANSFER_ENCODING ||
			    off + hd->name.n > W.bufsize)
				continue;
			lower_copy(W.scratch + off, hd->name.p, hd->name.n); /* h2 field names are lowercase */
			nva[k++] = (nghttp2_nv){ (uint8_t *)W.scratch + off, (uint8_t *)hd->value.p, hd->name.n, hd->value.n,
			                         NGHTTP2_NV_FLAG_NONE };
			off += hd->name.n + 1;
		}
		c->rh.s += (uint32_t)rc;
		moved = 1;
		if (W.resp.status < 200) { /* interim (100 Continue, 103 Early Hints) */
			nghttp2_submit_headers(h->ss, NGHTTP2_FLAG_NONE, s->sid, NULL, nva, k, NULL);
			continue;
		}
		s->head_sent = 1;
		c->sent_any = 1;
		s->resp_chunked = (W.resp.flags & LB_HF_CHUNKED) != 0;
		int body = lb_resp_has_body(c->req_method, W.resp.status) &&
		           !((W.resp.flags & LB_HF_HAS_CL) && W.resp.content_length == 0);
		nghttp2_data_provider dp = { .read_callback = h2_read_body };
		int rv = nghttp2_submit_response(h->ss, s->sid, nva, k, body ? &dp : NULL);
		if (rv != 0) {
			conn_abort(c, "HTTP/2: the response could not be submitted");
			return 0;
		}
		s->ended = !body;
	}
	/* bytes h2_read_body can take: not a trailer section still coming (it waits for the answer's end;
	 * resuming would ask again and again for nothing, a busy loop) */
	int trailer_wait = s->resp_chunked && s->ck_state == H2D_TRAILERS && c->r != R_DONE;
	if (s->head_sent && !s->ended && s->deferred && ((client_pending(c) > 0 && !trailer_wait) || c->r == R_DONE)) {
		s->deferred = 0;
		nghttp2_session_resume_data(h->ss, s->sid);
		moved = 1;
	}
	if (c->rh.d && buf_len(&c->rh) == 0 && c->r != R_WAIT)
		buf_put(&c->rh);
	if (moved)
		conn_defer(s->p);
	return 0; /* the bytes move when the session sends: h2_read_body wakes this conn again */
}

/* nghttp2's memory (nghttp2_mem, mem_user_data: the session's struct h2c). A session keeps one
 * large block for its life, the frame buffer it packs every outgoing frame into (16 KB + 10 bytes,
 * its first large one): that block gets whole pages of its own, so that an idle connection can give
 * them back (h2_park). It starts at a cache line of its first page that varies with the session (a
 * color from h's address, within the same pages), so that the sessions' hot first bytes do not all
 * share the cache sets of a page's start. Any other large block (CONTINUATION chunks) is malloc's. */
#define H2_MEM_BIG 8192
#define H2_PAGE 4096

static void *h2_malloc(size_t n, void *ud)
{
	struct h2c *h = ud;
	if (n < H2_MEM_BIG || h->fbuf)
		return malloc(n);
	size_t size = (n + H2_PAGE - 1) & ~(size_t)(H2_PAGE - 1);
	size_t color = ((uintptr_t)h >> 4) % ((size - n) / 64 + 1) * 64; /* color + n <= size */
	char *base = aligned_alloc(H2_PAGE, size);
	if (!base)
		return NULL;
	h->fbuf_base = base;
	h->fbuf_size = size;
	h->fbuf = base + color;
	return h->fbuf;
}

static void h2_free(void *p, void *ud)
{
	struct h2c *h = ud;
	if (p && p == h->fbuf) {
		p = h->fbuf_base;
		h->fbuf = NULL;
	}
	free(p);
}

static void *h2_calloc(size_t k, size_t n, void *ud)
{
	if (n && k > SIZE_MAX / n)
		return NULL;
	if (k * n < H2_MEM_BIG)
		return calloc(k, n);
	void *p = h2_malloc(k * n, ud);
	if (p)
		memset(p, 0, k * n);
	return p;
}

/* nghttp2 allocates its frame buffer as realloc(NULL, n) and never grows it (1.52); if it did, the
 * block would be malloc's from then on */
static void *h2_realloc(void *p, size_t n, void *ud)
{
	struct h2c *h = ud;
	if (!p)
		return h2_malloc(n, ud);
	if (p != h->fbuf)
		return realloc(p, n);
	size_t have = h->fbuf_size - (size_t)((char *)h->fbuf - (char *)h->fbuf_base);
	if (n <= have)
		return p;
	void *q = malloc(n);
	if (q) {
		memcpy(q, p, have);
		h2_free(p, ud);
	}
	return q;
}

static int h2_setup(void)
{
	if (g_h2cb)
		return 0;
	if (nghttp2_session_callbacks_new(&g_h2cb) != 0 || nghttp2_option_new(&g_h2opt) != 0)
		return -1;
	nghttp2_session_callbacks_set_on_begin_headers_callback(g_h2cb, h2_on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback2(g_h2cb, h2_on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(g_h2cb, h2_on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(g_h2cb, h2_on_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(g_h2cb, h2_on_stream_close);
	nghttp2_session_callbacks_set_on_frame_send_callback(g_h2cb, h2_on_frame_send);
	nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(g_h2cb, h2_on_invalid_frame);
	nghttp2_session_callbacks_set_on_begin_frame_callback(g_h2cb, h2_on_begin_frame);
	nghttp2_option_set_no_auto_window_update(g_h2opt, 1);
	nghttp2_option_set_stream_reset_rate_limit(g_h2opt, 1000, 33); /* CVE-2023-44487: a burst, then 33/s */
	nghttp2_option_set_max_outbound_ack(g_h2opt, 1000);            /* PING and SETTINGS floods */
	nghttp2_option_set_max_settings(g_h2opt, 32);
	/* responses' fields are not added to HPACK's dynamic table (as HAProxy's and nginx's encoders do
	 * not): no encoder table held per connection (about 0.5 KB idle), less work per answer */
	nghttp2_option_set_max_deflate_dynamic_table_size(g_h2opt, 0);
	return 0;
}

/* the connection speaks HTTP/2 from now on; bytes already read go to the session */
static int h2_start(struct conn *c)
{
	static struct lb_throttle log_slot;
	struct h2c *h = calloc(1, sizeof *h);
	nghttp2_mem mem = { h, h2_malloc, h2_free, h2_calloc, h2_realloc }; /* the session keeps a copy */
	if (!h || h2_setup() != 0 || nghttp2_session_server_new3(&h->ss, g_h2cb, c, g_h2opt, &mem) != 0) {
		free(h);
		log_throttled(&log_slot, "client %s listener %s: out of memory for an HTTP/2 session", ip_text(&c->ip),
		              c->L->name);
		conn_close(c);
		return -1;
	}
	h->c = c;
	c->h2 = h;
	count_h2_conn();
	/* a stream's window fits its buffer (a frame of the largest size at least, as RFC 9113 4.2
	 * wants: W.bufsize is over 16 KB + 4 KB); what does not fit yet waits (h2_on_data) */
	uint32_t win = (uint32_t)LB_MAX((size_t)16384, LB_MIN(W.bufsize / 2, (size_t)65535));
	nghttp2_settings_entry iv[] = {
		{ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, c->L->http2_max_streams },
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, win },
		{ NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)LB_MIN(c->L->max_header_size, (uint64_t)UINT32_MAX) },
	};
	nghttp2_submit_settings(h->ss, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof *iv);
	nghttp2_session_set_local_window_size(h->ss, NGHTTP2_FLAG_NONE, 0,
	                                      (int32_t)LB_MIN((uint64_t)win * c->L->http2_max_streams, (uint64_t)(1 << 30)));
	return 0;
}

/* 1: the connection is HTTP/2 now; -1: the first bytes may be the h2c preface, wait; 0: HTTP/1.1 */
static int h2_detect(struct conn *c)
{
	if (c->q != Q_HEAD || c->r != R_NONE || c->nreq || c->h.dead || !lb_listener_h2(c->L))
		return 0;
	if (c->tls) {
		if (!c->tls->hs_done || !tls_alpn_h2(c->tls))
			return 0;
	} else {
		size_t n = buf_len(&c->in);
		if (!n || memcmp(c->in.d + c->in.s, H2_PREFACE, LB_MIN(n, (size_t)H2_PREFACE_LEN)) != 0)
			return 0;
		if (n < H2_PREFACE_LEN)
			return c->cin_eof ? 0 : -1;
	}
	return h2_start(c) == 0 ? 1 : -1;
}

/* mem_send's frames into rh while there is room */
static int h2_fill(struct conn *c)
{
	struct h2c *h = c->h2;
	int moved = 0;
	for (;;) {
		if (!h->npend) {
			ssize_t n = nghttp2_session_mem_send(h->ss, &h->pend);
			if (n < 0) {
				h->fatal = 1;
				return moved;
			}
			if (n == 0)
				return moved;
			h->npend = (size_t)n;
			h->parked = 0;
		}
		if (buf_get(&c->rh) != 0)
			return moved;
		size_t room = buf_room(&c->rh);
		if (!room)
			return moved;
		size_t k = LB_MIN(room, h->npend);
		memcpy(c->rh.d + c->rh.e, h->pend, k);
		c->rh.e += (uint32_t)k;
		h->pend += k;
		h->npend -= k;
		moved = 1;
	}
}

/* the client's bytes into the session */
static int h2_read(struct conn *c)
{
	struct h2c *h = c->h2;
	if (h->fatal || !nghttp2_session_want_read(h->ss) || !h2_spill_deliver(c))
		return 0;
	int moved = client_read(c);
	if (c->h.dead || !buf_len(&c->in))
		return moved;
	ssize_t n = nghttp2_session_mem_recv(h->ss, (const uint8_t *)c->in.d + c->in.s, buf_len(&c->in));
	if (c->h.dead)
		return 0;
	if (n < 0) {
		static struct lb_throttle log_slot;
		log_throttled(&log_slot, "client %s listener %s: HTTP/2 connection failed: %s", ip_text(&c->ip), c->L->name,
		              nghttp2_strerror((int)n));
		h->fatal = 1;
		c->in.s = c->in.e;
	} else {
		c->in.s += (uint32_t)n;
	}
	if (buf_len(&c->in) == 0)
		buf_put(&c->in);
	return 1;
}

static int h2_flushed(const struct conn *c)
{
	const struct h2c *h = c->h2;
	return buf_len(&c->rh) == 0 && !h->npend && !nghttp2_session_want_write(h->ss) &&
	       !(c->tls && tls_records_pending(&c->tls->io));
}

static void h2_progress(struct conn *c)
{
	struct h2c *h = c->h2;
	for (int turns = 0;; turns++) {
		int moved = h2_read(c);
		if (c->h.dead)
			return;
		moved |= h2_fill(c);
		moved |= client_write(c);
		if (c->h.dead)
			return;
		if (!moved)
			break;
		if (turns == 32) { /* let others run; go on at the next loop turn */
			conn_defer(c);
			break;
		}
	}
	int done = h->fatal || c->cin_eof || (h->goaway && !h->nstreams) ||
	           (!nghttp2_session_want_read(h->ss) && !nghttp2_session_want_write(h->ss));
	if (done && (h2_flushed(c) || c->cin_eof)) {
		conn_close_clean(c);
		return;
	}
	int rd = !h->fatal && !c->cin_eof && !h->spilled && nghttp2_session_want_read(h->ss) &&
	         (!c->in.d || buf_len(&c->in) < c->L->max_header_size);
	c->h.want = (rd ? EV_R : 0) | (client_wants_write(c) ? EV_W : 0);
	ev_apply(&c->h);
	conn_arm_timer(c);
}

/* An idle connection (no stream, no frame queued or half copied out) gives its frame buffer's pages
 * back after LB_H2_PARK_MS without a byte from its client (a busy one, whose streams keep coming,
 * makes no such call); they read as zeros when the next frame is packed into them. Nothing reads the
 * buffer across frames: nghttp2 packs each frame afresh once the one before is sent
 * (active_outbound_item_reset rewinds the buffer before mem_send returns 0 or packs the next, and
 * want_write is 1 while a frame is in it); h->npend is what lb has not copied out of it yet.
 * h2_fill clears parked when a frame is packed. */
#define LB_H2_PARK_MS 250

static int h2_parkable(const struct h2c *h)
{
	return !h->parked && h->fbuf && !h->nstreams && !h->npend && !nghttp2_session_want_write(h->ss);
}

/* conn_timeout of a connection due: 1 if the pages went back (that was its deadline) */
static int h2_park(struct conn *c)
{
	struct h2c *h = c->h2;
	if (!h2_parkable(h) || c->t_active + LB_H2_PARK_MS > g_now)
		return 0;
	madvise(h->fbuf_base, h->fbuf_size, MADV_DONTNEED);
	h->parked = 1;
	return 1;
}

static uint64_t h2_deadline(const struct conn *c, int *kind)
{
	*kind = T_IDLE;
	if (c->h2->nstreams) /* each stream keeps its own time */
		return UINT64_MAX;
	/* a connection that never opened a stream has header_timeout for its first, as HTTP/1.1's first request */
	uint64_t d = c->h2->max_sid ? c->t_active + c->L->idle_timeout : c->t_head + c->L->header_timeout;
	if (W.stopping)
		d = LB_MIN(d, LB_MAX(c->t_active, W.stop_began) + LB_RETIRE_IDLE_MS);
	if (h2_parkable(c->h2))
		d = LB_MIN(d, c->t_active + LB_H2_PARK_MS);
	return d;
}

/* idle_timeout (header_timeout before a first stream) with no stream open: GOAWAY, then close */
static void h2_idle_close(struct conn *c)
{
	nghttp2_session_terminate_session(c->h2->ss, NGHTTP2_NO_ERROR);
	h2_fill(c);
	client_write(c);
	if (!c->h.dead)
		conn_close_clean(c);
}

/* a graceful stop or reload: GOAWAY with the last stream taken; those finish */
static void h2_goaway(struct conn *c)
{
	if (!c->h2 || c->h2->goaway)
		return;
	struct h2c *h = c->h2;
	h->goaway = 1;
	nghttp2_submit_goaway(h->ss, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(h->ss), NGHTTP2_NO_ERROR,
	                      NULL, 0);
	conn_defer(c);
}
#endif /* LB_HTTP2 */

/* ==================================================================== 10. TCP proxying
 * L4: the client connection is a tunnel from the start; bytes flow both ways with half-close.
 * Calls sections 6, 8 and 9 (backend_assign, splice_begin). */

static void tcp_start(struct conn *c)
{
	c->q = Q_TUNNEL;
	c->r = R_TUNNEL;
	c->pool = &g_conf->pools[c->L->pool];
	c->retries_left = (int8_t)c->pool->retries;
	splice_begin(c);
	c->t_start = g_now;
	c->wall_start_ms = wall_ms();
	c->us_start = c->us_head = mono_us(); /* t_request_us 0: a tunnel has no head */
	c->resp_status = 200;
	backend_assign(c, NULL);
}

/* ==================================================================== 11. health checks, circuit breaker, events
 * Health checks: worker 1 of the current generation checks every server (so checks do not
 * multiply with workers) and publishes up/down in shared memory, which every worker's pick reads
 * (pool_states). The circuit breaker lives per server in shared memory: every worker records the
 * outcome of its exchanges; a state change is a compare-and-swap, so exactly one process logs
 * it and publishes it as an event. Events reach the master through a shared ring; the master
 * runs alert_command with each. lb's own failures (out of descriptors, ports, memory) are never
 * a server's: a check that cannot start is skipped, an exchange that cannot connect is not counted.
 * For the dashboard each server's slot also keeps its last check (result, latency, time), the time
 * of its last state change and why it went down (srv_note writes the texts, srv_note_read reads them).
 * Calls sections 2, 3 (lb_parse_response), 6, 7 (checks over TLS), 8 and 9. */

struct lb_event {
	_Atomic uint64_t seq;              /* n + 1 once event n is complete; 0 while written */
	uint64_t wall_ms;
	char kind[16];
	char pool[LB_NAME_MAX], server[LB_NAME_MAX];
	char reason[256];
};
#define LB_EVENTS 128
struct lb_events {
	_Atomic uint64_t head;
	struct lb_event e[LB_EVENTS];
};

static int events_create(void)
{
	SHM.events = shm_map(sizeof *SHM.events, "event ring");
	return SHM.events ? 0 : -1;
}

static void event_emit(const char *kind, const struct lb_pool *p, const struct lb_server *s, const char *reason)
{
	if (!SHM.events)
		return;
	uint64_t n = atomic_fetch_add(&SHM.events->head, 1);
	struct lb_event *e = &SHM.events->e[n % LB_EVENTS];
	atomic_store_explicit(&e->seq, 0, memory_order_release);
	e->wall_ms = wall_ms();
	snprintf(e->kind, sizeof e->kind, "%s", kind);
	snprintf(e->pool, sizeof e->pool, "%s", p ? p->name : "");
	snprintf(e->server, sizeof e->server, "%s", s ? s->name : "");
	snprintf(e->reason, sizeof e->reason, "%s", reason);
	atomic_store_explicit(&e->seq, n + 1, memory_order_release);
}

/* What the dashboard shows of a server's health: the last check and why it is down. Texts are written
 * under the slot's note_lock (the checker and any worker whose exchange opens a circuit) inside a
 * sequence count, so that the master reads them without a lock (srv_note_read, bounded retries). */
static void srv_note(struct lb_shm_server *v, const char *check_why, const char *down_why, int changed)
{
	spin_lock(&v->note_lock);
	atomic_fetch_add_explicit(&v->note_seq, 1, memory_order_acq_rel);
	atomic_thread_fence(memory_order_release);
	if (check_why)
		snprintf(v->hc_last_why, sizeof v->hc_last_why, "%s", check_why);
	if (down_why)
		snprintf(v->down_why, sizeof v->down_why, "%s", down_why);
	atomic_thread_fence(memory_order_release);
	atomic_fetch_add_explicit(&v->note_seq, 1, memory_order_acq_rel);
	spin_unlock(&v->note_lock);
	if (changed)
		atomic_store_explicit(&v->changed_wall_ms, wall_ms(), memory_order_relaxed);
}

/* a consistent copy of both texts ("" when a writer kept them moving) */
static void srv_note_read(struct lb_shm_server *v, char *check_why, size_t cn, char *down_why, size_t dn)
{
	for (int tries = 0; tries < 8; tries++) {
		uint32_t s0 = atomic_load_explicit(&v->note_seq, memory_order_acquire);
		if (s0 & 1)
			continue;
		snprintf(check_why, cn, "%.*s", (int)sizeof v->hc_last_why - 1, v->hc_last_why);
		snprintf(down_why, dn, "%.*s", (int)sizeof v->down_why - 1, v->down_why);
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&v->note_seq, memory_order_acquire) == s0)
			return;
	}
	check_why[0] = down_why[0] = 0;
}

/* -------------------------------------------------------------------- circuit breaker */

static int cb_on(const struct lb_pool *p) { return p->cb_failures || p->cb_error_rate; }

/* circuit_max_open: s's circuit may open while fewer than that share of the pool's circuits are
 * open (one always may). An overload that slows every server down then leaves most of the pool
 * serving, slowly, instead of answering 503 for everything (Envoy's max_ejection_percent).
 * Returns 1, or 0 after logging (at most once a second) why the circuit stays closed. */
static int cb_room(const struct lb_pool *p, const struct lb_server *s, const char *reason)
{
	static struct lb_throttle log_slot;
	if (p->cb_max_open >= 100)
		return 1;
	size_t open = 0, cap = LB_MAX(p->nservers * p->cb_max_open / 100, 1);
	for (size_t i = 0; i < p->nservers; i++) {
		const struct lb_shm_server *o = srv_rt(&p->servers[i])->shm;
		if (&p->servers[i] != s && o && atomic_load_explicit(&o->cb_state, memory_order_relaxed) != CB_CLOSED)
			open++;
	}
	if (open < cap)
		return 1;
	log_throttled_at(&log_slot, LB_LV_WARN, "server %s/%s: circuit stays closed: %zu of the pool's %zu circuits are open "
	                 "(circuit_max_open %u%%); it would have opened: %s (server %s)",
	                 p->name, s->name, open, p->nservers, p->cb_max_open, reason, srv_addr(s));
	return 0;
}

static void cb_trip(const struct lb_pool *p, const struct lb_server *s, int from, const char *reason)
{
	struct lb_shm_server *v = srv_rt(s)->shm;
	if (from == CB_CLOSED && !cb_room(p, s, reason))
		return;
	atomic_store(&v->cb_until, g_now + p->cb_open);
	int exp = from;
	if (!atomic_compare_exchange_strong(&v->cb_state, &exp, CB_OPEN))
		return;
	atomic_fetch_add_explicit(&v->n_open, 1, memory_order_relaxed);
	char why[320];
	snprintf(why, sizeof why, "circuit open: %s", reason);
	srv_note(v, NULL, why, 1);
	lb_warn("server %s/%s: circuit open for %llu ms (%s): %s", p->name, s->name, (unsigned long long)p->cb_open,
	        srv_addr(s), reason);
	event_emit("circuit_open", p, s, reason);
}

/* Close the circuit: from half-open after a good trial, or from any state when health checks
 * bring the server back (failures while it was down say nothing about it now). Its counters start
 * afresh; the change is logged and sent once. */
static void cb_close(const struct lb_pool *p, const struct lb_server *s, int from_any, const char *why)
{
	struct lb_shm_server *v = srv_rt(s)->shm;
	int was = CB_HALF;
	int closed = from_any ? (was = atomic_exchange(&v->cb_state, CB_CLOSED)) != CB_CLOSED
	                      : atomic_compare_exchange_strong(&v->cb_state, &was, CB_CLOSED);
	if (!closed && !from_any)
		return;
	atomic_store(&v->cb_consec, 0);
	atomic_store(&v->cb_win_req, 0);
	atomic_store(&v->cb_win_fail, 0);
	atomic_store(&v->cb_win_start, g_now);
	if (!closed)
		return;
	atomic_fetch_add_explicit(&v->n_close, 1, memory_order_relaxed);
	srv_note(v, NULL, atomic_load(&v->down) ? NULL : "", 1);
	lb_info("server %s/%s: circuit closed (%s): %s", p->name, s->name, srv_addr(s), why);
	event_emit("circuit_close", p, s, why);
}

/* The pick fell on s. An open circuit whose time is up turns half-open; a half-open one lends
 * one of its trial slots. 0: the circuit refuses (other workers took the slots meanwhile). */
static int cb_begin(struct conn *c, const struct lb_server *s)
{
	struct lb_shm_server *v = srv_rt(s)->shm;
	c->cb_trial = 0;
	c->cb_pending = 0;
	if (!v || !cb_on(c->pool))
		return 1;
	int st = atomic_load(&v->cb_state);
	if (st == CB_CLOSED)
		return 1;
	if (st == CB_OPEN) {
		if (g_now < atomic_load(&v->cb_until))
			return 0;
		if (atomic_compare_exchange_strong(&v->cb_state, &st, CB_HALF))
			lb_info("server %s/%s: circuit half-open (%s): letting up to %d trial requests through", c->pool->name,
			        s->name, srv_addr(s), LB_CB_TRIALS);
	}
	if (atomic_fetch_add(&v->cb_trials, 1) >= LB_CB_TRIALS) {
		atomic_fetch_sub(&v->cb_trials, 1);
		return 0;
	}
	c->cb_trial = 1;
	return 1;
}

/* the exchange ended without a verdict (the client left): give the trial slot back */
static void cb_abandon(struct conn *c)
{
	if (c->cb_trial && c->srv && srv_rt(c->srv)->shm)
		atomic_fetch_sub(&srv_rt(c->srv)->shm->cb_trials, 1);
	c->cb_trial = 0;
	c->cb_pending = 0;
}

/* Record how an exchange with s went: failed (connect error, reset, timeout, 5xx, slow) or not. */
static void cb_outcome(struct conn *c, const struct lb_server *s, int failed, const char *why)
{
	struct lb_shm_server *v = s ? srv_rt(s)->shm : NULL;
	const struct lb_pool *p = c->pool;
	int trial = c->cb_trial;
	cb_abandon(c);
	if (!v || !cb_on(p))
		return;
	if (trial) {
		char reason[320];
		snprintf(reason, sizeof reason, "trial request failed: %s", why);
		if (failed)
			cb_trip(p, s, CB_HALF, reason);
		else
			cb_close(p, s, 0, "a trial request succeeded");
		return;
	}
	if (atomic_load(&v->cb_state) != CB_CLOSED)
		return; /* an exchange begun before the circuit opened */
	uint32_t consec = 0;
	if (failed)
		consec = atomic_fetch_add(&v->cb_consec, 1) + 1;
	else
		atomic_store(&v->cb_consec, 0);
	uint64_t ws = atomic_load(&v->cb_win_start);
	if (g_now - ws >= p->cb_window && atomic_compare_exchange_strong(&v->cb_win_start, &ws, g_now)) {
		atomic_store(&v->cb_win_req, 0);
		atomic_store(&v->cb_win_fail, 0);
	}
	uint32_t req = atomic_fetch_add(&v->cb_win_req, 1) + 1;
	uint32_t bad = failed ? atomic_fetch_add(&v->cb_win_fail, 1) + 1 : atomic_load(&v->cb_win_fail);
	char reason[400];
	if (p->cb_failures && consec >= p->cb_failures)
		snprintf(reason, sizeof reason, "%u consecutive failures, the last: %s", consec, why);
	else if (failed && p->cb_error_rate && req >= p->cb_min_requests &&
	         (uint64_t)bad * 100 >= (uint64_t)p->cb_error_rate * req)
		snprintf(reason, sizeof reason, "%u of the last %u requests failed (circuit_error_rate %u%%), the last: %s",
		         bad, req, p->cb_error_rate, why);
	else
		return;
	cb_trip(p, s, CB_CLOSED, reason);
}

/* a response head from the server: 5xx (but 501 and 505, which say what the server does not
 * do) and answers slower than circuit_slow count as failures */
static void cb_response(struct conn *c, int status)
{
	char why[96];
	uint64_t waited = c->q == Q_DONE ? g_now - LB_MAX(c->t_req_done, c->t_conn) : 0; /* not while uploading */
	if (status >= 500 && status != 501 && status != 505) {
		snprintf(why, sizeof why, "status %d", status);
		cb_outcome(c, c->srv, 1, why);
	} else if (c->pool->cb_slow && waited > c->pool->cb_slow) {
		snprintf(why, sizeof why, "response after %llu ms (circuit_slow %llu ms)", (unsigned long long)waited,
		         (unsigned long long)c->pool->cb_slow);
		cb_outcome(c, c->srv, 1, why);
	} else if (status == 101) {
		cb_outcome(c, c->srv, 0, ""); /* the upgrade was the exchange; the tunnel is the client's */
	} else {
		c->cb_pending = 1; /* good so far: the verdict comes when the answer is whole, or cut */
	}
}

/* The end of an answer whose head was good: whole (a success) or cut short (a failure). */
static void cb_settle(struct conn *c, int failed, const char *why)
{
	if (!c->cb_pending)
		return;
	c->cb_pending = 0;
	cb_outcome(c, c->srv, failed, why);
}

/* -------------------------------------------------------------------- active health checks */

struct hc {
	struct evh h;
	const struct lb_pool *p;
	const struct lb_server *s;
	int busy, connected;
	uint64_t due;                 /* the next check, or the running check's deadline */
	size_t sent, reqlen, n;
	char req[LB_HOST_MAX + 320];
	char buf[4096];               /* the response head */
	struct tls_up *tls;           /* the check of a server marked tls speaks TLS */
	uint64_t t0_us;               /* when the running check began (its latency for the dashboard) */
};

static int hc_expected(const struct lb_pool *p, int status)
{
	for (size_t i = 0; i < p->nhc_expect; i++)
		if (status >= p->hc_expect[i].lo && status <= p->hc_expect[i].hi)
			return 1;
	return 0;
}

static uint64_t hc_clock_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* health_expect as written: "200-399", "200, 204, 301-302" */
static const char *hc_expect_text(const struct lb_pool *p)
{
	static char b[96];
	size_t n = 0;
	b[0] = 0;
	for (size_t i = 0; i < p->nhc_expect && n < sizeof b; i++)
		n += (size_t)snprintf(b + n, sizeof b - n, p->hc_expect[i].lo == p->hc_expect[i].hi ? "%s%d" : "%s%d-%d",
		                      i ? ", " : "", p->hc_expect[i].lo, p->hc_expect[i].hi);
	return b;
}

static void hc_verdict(struct hc *k, int ok, const char *why)
{
	struct lb_shm_server *v = srv_rt(k->s)->shm;
	const struct lb_pool *p = k->p;
	atomic_fetch_add_explicit(&v->n_checks, 1, memory_order_relaxed);
	uint64_t took = hc_clock_us() - k->t0_us;
	atomic_store_explicit(&v->hc_last_us, (uint32_t)LB_MIN(took, UINT32_MAX), memory_order_relaxed);
	atomic_store_explicit(&v->hc_last_wall_ms, wall_ms(), memory_order_relaxed);
	atomic_store_explicit(&v->hc_last_ok, ok, memory_order_relaxed);
	srv_note(v, ok ? "" : why, NULL, 0);
	if (ok) {
		atomic_store(&v->hc_fail, 0);
		uint32_t oks = atomic_fetch_add(&v->hc_ok, 1) + 1;
		if (atomic_load(&v->down) && oks >= p->hc_rise) {
			atomic_store(&v->down, 0);
			atomic_fetch_add_explicit(&v->n_up, 1, memory_order_relaxed);
			srv_note(v, NULL, "", 1);
			char reason[96];
			snprintf(reason, sizeof reason, "%u health checks passed", oks);
			lb_info("server %s/%s is up (%s): %s", p->name, k->s->name, srv_addr(k->s), reason);
			event_emit("server_up", p, k->s, reason);
			cb_close(p, k->s, 1, "the server passed its health checks");
		}
		return;
	}
	atomic_fetch_add_explicit(&v->n_check_fails, 1, memory_order_relaxed);
	atomic_store(&v->hc_ok, 0);
	uint32_t fails = atomic_fetch_add(&v->hc_fail, 1) + 1;
	if (!atomic_load(&v->down) && fails >= p->hc_fall) {
		atomic_store(&v->down, 1);
		atomic_fetch_add_explicit(&v->n_down, 1, memory_order_relaxed);
		char reason[768];
		int dflt = p->hc_kind == LB_HC_HTTP && !(p->given & UINT64_C(1) << KP_HEALTH_CHECK);
		/* the check named: "GET /health expected 200-399, got 404", "TCP connect: Connection refused" */
		if (p->hc_kind == LB_HC_HTTP)
			snprintf(reason, sizeof reason, "health check: %s %s%s%s (%u failed in a row)%s", p->hc_method,
			         p->hc_path, strncmp(why, "expected", 8) ? ": " : " ", why, fails,
			         dflt && strstr(why, "got 404") ? "; health_check is not set and the default is http GET "
			                                          "/health: set health_check = tcp or http GET /PATH" : "");
		else
			snprintf(reason, sizeof reason, "health check: TCP %s (%u failed in a row)", why, fails);
		srv_note(v, NULL, reason, 1);
		lb_warn("server %s/%s is down (%s): %s", p->name, k->s->name, srv_addr(k->s), reason);
		event_emit("server_down", p, k->s, reason);
	}
}

/* the check's socket closed, the next one due after health_interval */
static void hc_end(struct hc *k)
{
	if (k->h.fd >= 0) {
		ev_forget(&k->h);
		close(k->h.fd);
		k->h.fd = -1;
	}
	tls_up_free(k->tls);
	k->tls = NULL;
	k->busy = 0;
	k->due = g_now + k->p->hc_interval;
	W.hc_next = LB_MIN(W.hc_next, k->due);
}

static void hc_done(struct hc *k, int ok, const char *why)
{
	hc_end(k);
	hc_verdict(k, ok, why);
}

/* A check lb could not start for want of its own resources (descriptors, ports, memory) says
 * nothing about the server: no verdict, the next check at the next interval. */
static void hc_skip(struct hc *k, const char *what, int e)
{
	static struct lb_throttle log_slot;
	hc_end(k);
	log_throttled_at(&log_slot, LB_LV_ERROR, "health check of server %s/%s (%s) skipped: %s: %s (a local resource, not "
	                 "the server)", k->p->name, k->s->name, srv_addr(k->s), what, strerror(e));
}

static void hc_start(struct hc *k)
{
	char why[128];
	k->busy = 1;
	k->connected = 0;
	k->sent = k->n = 0;
	k->due = g_now + k->p->hc_timeout;
	k->t0_us = hc_clock_us();
	memset(&k->h, 0, sizeof k->h);
	k->h.kind = H_HEALTH;
	k->h.fd = socket(k->s->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (k->h.fd < 0) {
		hc_skip(k, "socket", errno);
		return;
	}
	if (connect(k->h.fd, (struct sockaddr *)&k->s->sa, k->s->salen) != 0 && errno != EINPROGRESS) {
		if (local_connect_error(errno)) {
			hc_skip(k, "connect", errno);
			return;
		}
		snprintf(why, sizeof why, "connect: %s", strerror(errno));
		hc_done(k, 0, why);
		return;
	}
	if (k->s->tls && k->p->hc_kind == LB_HC_HTTP && !(k->tls = tls_up_new(k->p, k->s))) {
		hc_skip(k, "TLS engine (out of memory, or no entropy)", errno);
		return;
	}
	k->h.want = EV_W;
	ev_apply(&k->h);
}

/* the response head so far: judged when complete */
static int hc_judge(struct hc *k, int eof)
{
	char why[160];
	int rc = lb_parse_response(k->buf, k->n, &W.hc_resp);
	if (rc == LB_EAGAIN && !eof && k->n < sizeof k->buf)
		return 0;
	if (rc > 0 && hc_expected(k->p, W.hc_resp.status)) {
		hc_done(k, 1, "");
		return 1;
	}
	if (rc > 0)
		snprintf(why, sizeof why, "expected %s, got %d", hc_expect_text(k->p), W.hc_resp.status);
	else if (rc == LB_EAGAIN)
		snprintf(why, sizeof why, eof ? "closed before a complete response head" : "response head over 4 KB");
	else
		snprintf(why, sizeof why, "invalid response: %s", W.hc_resp.error ? W.hc_resp.error : "?");
	hc_done(k, 0, why);
	return 1;
}

/* The same check through the server's TLS: handshake, request, response head. */
static void hc_tls_io(struct hc *k)
{
	char why[160];
	struct tls_io *io = &k->tls->io;
	bool rready = 1;
	for (int turn = 0; turn < 64; turn++) {
		if (k->sent < k->reqlen) {
			struct iovec iov = { k->req + k->sent, k->reqlen - k->sent };
			ssize_t n = tls_send(io, k->h.fd, &iov, 1);
			if (n > 0) {
				k->sent += (size_t)n;
				continue;
			}
			if (!io_again())
				goto failed;
		}
		ssize_t n = tls_recv(io, k->h.fd, &rready, k->buf + k->n, sizeof k->buf - k->n);
		if (n < 0 && io_again())
			break;
		if (n < 0)
			goto failed;
		k->n += (size_t)n;
		if (hc_judge(k, n == 0))
			return;
	}
	k->h.want = EV_R | (tls_records_pending(io) || (k->sent < k->reqlen && tls_can_send(io)) ? EV_W : 0);
	ev_apply(&k->h);
	return;
failed:
	snprintf(why, sizeof why, "TLS: %s", errno == EPROTO ? tls_up_error_text(io->err) : strerror(errno));
	hc_done(k, 0, why);
}

static void hc_io(struct hc *k)
{
	char why[160];
	if (!k->busy)
		return;
	if (!k->connected) {
		int err = 0;
		socklen_t el = sizeof err;
		if (getsockopt(k->h.fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
			err = errno;
		if (err) {
			snprintf(why, sizeof why, "connect: %s", strerror(err));
			hc_done(k, 0, why);
			return;
		}
		struct sockaddr_storage peer;
		socklen_t pl = sizeof peer;
		if (getpeername(k->h.fd, (struct sockaddr *)&peer, &pl) != 0)
			return; /* still connecting: a spurious event */
		k->connected = 1;
		if (k->p->hc_kind == LB_HC_TCP) {
			hc_done(k, 1, "");
			return;
		}
	}
	if (k->tls) {
		hc_tls_io(k);
		return;
	}
	while (k->sent < k->reqlen) {
		ssize_t n = send(k->h.fd, k->req + k->sent, k->reqlen - k->sent, MSG_NOSIGNAL);
		if (n < 0) {
			if (io_again())
				return;
			snprintf(why, sizeof why, "send: %s", strerror(errno));
			hc_done(k, 0, why);
			return;
		}
		k->sent += (size_t)n;
		if (k->sent == k->reqlen) {
			k->h.want = EV_R;
			ev_apply(&k->h);
		}
	}
	for (;;) {
		ssize_t n = recv(k->h.fd, k->buf + k->n, sizeof k->buf - k->n, 0);
		if (n < 0 && io_again())
			return;
		if (n < 0) {
			snprintf(why, sizeof why, "recv: %s", strerror(errno));
			hc_done(k, 0, why);
			return;
		}
		k->n += (size_t)n;
		if (hc_judge(k, n == 0))
			return;
	}
}

static int hc_wanted(const struct lb_pool *p, const struct lb_server *s)
{
	return (p->hc_kind == LB_HC_HTTP || p->hc_kind == LB_HC_TCP) && !s->disabled && srv_rt(s)->shm;
}

/* worker 1: one check per server of the configuration, first ones spread over 100 ms */
static void hc_setup(void)
{
	size_t n = 0;
	for (size_t i = 0; i < g_conf->npools; i++)
		for (size_t j = 0; j < g_conf->pools[i].nservers; j++)
			n += (size_t)hc_wanted(&g_conf->pools[i], &g_conf->pools[i].servers[j]);
	if (!n || !(W.hc = calloc(n, sizeof *W.hc)))
		return;
	for (size_t i = 0; i < g_conf->npools; i++) {
		const struct lb_pool *p = &g_conf->pools[i];
		for (size_t j = 0; j < p->nservers; j++) {
			const struct lb_server *s = &p->servers[j];
			if (!hc_wanted(p, s))
				continue;
			struct hc *k = &W.hc[W.nhc];
			k->p = p;
			k->s = s;
			k->h.fd = -1;
			k->due = g_now + W.nhc * 100 / n;
			int rn = snprintf(k->req, sizeof k->req,
			                  "%s %s HTTP/1.1\r\nHost: %s%s%s:%u\r\nUser-Agent: lb-health-check/" LB_VERSION
			                  "\r\nConnection: close\r\n\r\n",
			                  p->hc_method, p->hc_path, strchr(s->host, ':') ? "[" : "", s->host,
			                  strchr(s->host, ':') ? "]" : "", (unsigned)s->port);
			k->reqlen = rn > 0 ? LB_MIN((size_t)rn, sizeof k->req - 1) : 0;
			W.nhc++;
		}
	}
	W.hc_next = g_now;
}

static void hc_tick(void)
{
	if (g_now < W.hc_next)
		return;
	uint64_t next = UINT64_MAX;
	for (size_t i = 0; i < W.nhc; i++) {
		struct hc *k = &W.hc[i];
		if (k->due <= g_now) {
			if (k->busy) {
				char why[64];
				snprintf(why, sizeof why, "no answer within %llu ms", (unsigned long long)k->p->hc_timeout);
				hc_done(k, 0, why);
			} else {
				hc_start(k);
			}
		}
		next = LB_MIN(next, k->due);
	}
	W.hc_next = next;
}

/* a retiring worker 1 leaves the checks to its successor */

static void hc_reap(void)
{
	for (size_t i = 0; i < W.nhc_dead; i++)
		tls_up_free(W.hc_dead[i].tls);
	free(W.hc_dead);
	W.hc_dead = NULL;
	W.nhc_dead = 0;
}

static void hc_stop(void)
{
	for (size_t i = 0; i < W.nhc; i++) {
		if (W.hc[i].h.fd >= 0) {
			ev_forget(&W.hc[i].h);
			close(W.hc[i].h.fd);
			W.hc[i].h.fd = -1;
		}
		W.hc[i].h.dead = 1;
	}
	hc_reap();
	W.hc_dead = W.hc;
	W.nhc_dead = W.nhc;
	W.hc = NULL;
	W.nhc = 0;
	W.hc_next = UINT64_MAX;
}

/* every worker, once a second: idle connections to a server marked down are closed; the other
 * servers' idle pools are purged down to what recent peaks needed (idle_purge) */
static void idle_sweep(void)
{
	static uint64_t next;
	if (g_now < next)
		return;
	next = g_now + 1000;
	for (size_t i = 0; i < g_conf->npools; i++)
		for (size_t j = 0; j < g_conf->pools[i].nservers; j++) {
			const struct lb_server *s = &g_conf->pools[i].servers[j];
			if (srv_rt(s)->idle && srv_rt(s)->shm && atomic_load_explicit(&srv_rt(s)->shm->down, memory_order_relaxed))
				idle_close(s);
			else
				idle_purge(s);
		}
}

/* ==================================================================== 12. shared memory
 * One MAP_SHARED segment the master makes before the first fork: per-server state and
 * counters, in slots found by "pool/server" name so they survive reloads, and per-worker
 * totals; connection counters per listener (slots by name); the dashboard's history ring, one
 * series per server and route slot, that the master samples (history_tick) and section 13 reads. Each worker writes only its own columns; the master folds a dead worker's.
 * The slots are sized at start from the file with room for reloads (shm_create); a file that
 * needs more is refused by the one validation (conf_validate -> shm_room) before a reload.
 * Listener slots (connection counters) work the same way. The metrics' counting lives here too:
 * count_exchange, the request table (count_answer: every answer by listener, route and reason),
 * the histograms (hist_note), the upstream timings and the connection counters (count_*).
 * shm_map_conf points a config's runtime state (its struct lb_rt, section 4) at its slots.
 * The mappings' pointers are SHM's (defined in section 7). Calls sections 2, 4 (conf_validate parses a
 * candidate file), 6 and 8. */

#define LB_SHM_SERVERS_MIN 1024 /* server slots made at start: twice the file's servers, at least this */
#define LB_SHM_ROUTES_MIN 256   /* route slots: the same rule */
#define LB_SHM_LISTENERS_MIN 64 /* listener slots: the same rule */
struct lb_shm_worker {
	_Atomic uint64_t conns, requests;
	_Atomic uint64_t log_dropped; /* access log lines lost (section 14) */
	_Atomic uint64_t h2_conns, h2_requests; /* HTTP/2 connections begun, exchanges on their streams */
	_Atomic uint64_t h2_resets[4];          /* HTTP/2 streams reset, by H2R_* */
	int32_t pid, id, gen;
};
struct lb_shm {
	uint32_t nservers, nroutes;     /* slots taken: by every name seen since start */
	uint32_t cap_servers, cap_routes; /* slots made at start */
	uint32_t nlisteners, cap_listeners;
	_Atomic uint32_t admin_version; /* bumped by every weight or split change: workers re-read splits */
	_Atomic uint64_t reloads, restarts;
	_Atomic uint64_t reload_failures, reload_ok_wall_ms, reload_fail_wall_ms;
	_Atomic uint64_t req_overflow;  /* answers whose label set found no cell in the request table */
	struct lb_shm_listener *l;      /* cap_listeners slots after the route slots */
	_Atomic uint64_t log_dropped_retired; /* log_dropped of exited workers (and the master's) */
	uint64_t started_wall_ms;
	struct lb_shm_server *s;        /* cap_servers slots after this header, in the same mapping */
	struct lb_shm_route *r;         /* cap_routes slots after those */
	struct lb_shm_worker w[LB_MAX_WORKERS];
};
static int history_create(void);

static size_t conf_nservers(const struct lb_conf *c)
{
	size_t n = 0;
	for (size_t p = 0; p < c->npools; p++)
		n += c->pools[p].nservers;
	return n;
}

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

/* Answers by listener, route and lb's reason: a cell per label set that occurred, in sets of
 * LB_REQ_WAYS found by hash. Cells are taken once and kept (their counters only grow), so the
 * table bounds the label sets: LB_REQ_WAYS * LB_REQ_SETS at most; an answer that finds no cell
 * is counted in lb_shm.req_overflow. Key: listener slot + 1 << 40 | route slot + 1 (0: none)
 * << 8 | reason. */
#define LB_REQ_WAYS 8
#define LB_REQ_SETS 1024
struct req_cell {
	_Atomic uint64_t key;          /* 0 = free */
	_Atomic uint64_t status[6];    /* [0] none (cut short), [1] 1xx .. [5] 5xx */
};
struct req_set {
	_Atomic uint32_t lock;         /* taken only to claim a free cell */
	struct req_cell e[LB_REQ_WAYS];
};

static int shm_create(const struct lb_conf *c)
{
	size_t ns = LB_MAX(2 * conf_nservers(c), (size_t)LB_SHM_SERVERS_MIN);
	size_t nr = LB_MAX(2 * c->nroutes, (size_t)LB_SHM_ROUTES_MIN);
	size_t nl = LB_MAX(2 * c->nlisteners, (size_t)LB_SHM_LISTENERS_MIN);
	size_t at_s = align64(sizeof *SHM.seg), at_r = at_s + align64(ns * sizeof *SHM.seg->s);
	size_t at_l = at_r + align64(nr * sizeof *SHM.seg->r);
	char *m = shm_map(at_l + nl * sizeof *SHM.seg->l, "server state and counters");
	SHM.reqs = shm_map(LB_REQ_SETS * sizeof *SHM.reqs, "request counters");
	if (!m || !SHM.reqs || name_index_init(&SHM.snames, ns) != 0 || name_index_init(&SHM.rnames, nr) != 0 ||
	    name_index_init(&SHM.lnames, nl) != 0)
		return -1;
	SHM.seg = (struct lb_shm *)m;
	SHM.seg->s = (struct lb_shm_server *)(m + at_s); /* the same address in every process: forks share it */
	SHM.seg->r = (struct lb_shm_route *)(m + at_r);
	SHM.seg->l = (struct lb_shm_listener *)(m + at_l);
	SHM.seg->cap_servers = (uint32_t)ns;
	SHM.seg->cap_routes = (uint32_t)nr;
	SHM.seg->cap_listeners = (uint32_t)nl;
	SHM.seg->started_wall_ms = wall_ms();
	return history_create();
}

static const char *shm_skey_at(const void *ctx, uint32_t i) { LB_UNUSED(ctx); return SHM.seg->s[i].key; }
static const char *shm_rkey_at(const void *ctx, uint32_t i) { LB_UNUSED(ctx); return SHM.seg->r[i].key; }
static const char *shm_lkey_at(const void *ctx, uint32_t i) { LB_UNUSED(ctx); return SHM.seg->l[i].key; }

static void shm_server_key(const struct lb_pool *p, const struct lb_server *s, char *key, size_t n)
{
	snprintf(key, n, "%s/%s", p->name, s->name);
}

/* Would c's servers and routes find slots? A name seen since start keeps its slot; a new one
 * takes a free one. 0, or -1 with the line and key of the first that finds none in *line and
 * a message in msg. Nothing changes: a refused file leaves the segment as it was. */
static int shm_room(const struct lb_conf *c, int *line, const char **key, char *msg, size_t msglen)
{
	uint32_t taken = SHM.seg->nservers;
	char k[2 * LB_NAME_MAX];
	for (size_t p = 0; p < c->npools; p++)
		for (size_t j = 0; j < c->pools[p].nservers; j++) {
			const struct lb_server *s = &c->pools[p].servers[j];
			shm_server_key(&c->pools[p], s, k, sizeof k);
			if (*name_index_cell(&SHM.snames, k, shm_skey_at, NULL))
				continue;
			if (taken++ < SHM.seg->cap_servers)
				continue;
			*line = s->line, *key = "server";
			snprintf(msg, msglen, "shared memory: no slot for server %s of [pool %s]: the %u server slots made "
			         "at start (twice the servers of the file lb started with, at least %d) are taken by the "
			         "servers seen since start; restart lb to run this file", s->name, c->pools[p].name,
			         SHM.seg->cap_servers, LB_SHM_SERVERS_MIN);
			return -1;
		}
	taken = SHM.seg->nroutes;
	for (size_t i = 0; i < c->nroutes; i++) {
		if (*name_index_cell(&SHM.rnames, c->routes[i].name, shm_rkey_at, NULL) || taken++ < SHM.seg->cap_routes)
			continue;
		*line = c->routes[i].line, *key = "route";
		snprintf(msg, msglen, "shared memory: no slot for [route %s]: the %u route slots made at start (twice "
		         "the routes of the file lb started with, at least %d) are taken by the routes seen since "
		         "start; restart lb to run this file", c->routes[i].name, SHM.seg->cap_routes, LB_SHM_ROUTES_MIN);
		return -1;
	}
	taken = SHM.seg->nlisteners;
	for (size_t i = 0; i < c->nlisteners; i++) {
		if (*name_index_cell(&SHM.lnames, c->listeners[i].name, shm_lkey_at, NULL) ||
		    taken++ < SHM.seg->cap_listeners)
			continue;
		*line = c->listeners[i].line, *key = "listener";
		snprintf(msg, msglen, "shared memory: no slot for [listener %s]: the %u listener slots made at start "
		         "(twice the listeners of the file lb started with, at least %d) are taken by the listeners "
		         "seen since start; restart lb to run this file", c->listeners[i].name, SHM.seg->cap_listeners,
		         LB_SHM_LISTENERS_MIN);
		return -1;
	}
	return 0;
}

/* "pool/server" names the admin API added: down until their health checks pass */
#define LB_CHECK_FIRST 32
static char g_check_first[LB_CHECK_FIRST][2 * LB_NAME_MAX];

static void check_first_add(const char *pool, const char *server)
{
	for (int i = 0; i < LB_CHECK_FIRST; i++)
		if (!g_check_first[i][0]) {
			snprintf(g_check_first[i], sizeof g_check_first[i], "%s/%s", pool, server);
			return;
		}
}

static int check_first_take(const char *key)
{
	for (int i = 0; i < LB_CHECK_FIRST; i++)
		if (!strcmp(g_check_first[i], key)) {
			g_check_first[i][0] = 0;
			return 1;
		}
	return 0;
}

/* Text -> a configuration this lb can run, or NULL with every error (FILE:LINE and key) in errs:
 * the one check behind `lb -t`, start-up, reloads and POST /api/config (dry_run or not). The
 * file's own bounds are lb_conf_parse's (check_limits); in a running master, the file must also
 * find its slots in the shared memory made at start (shm_room), or the reload would fail. */
static struct lb_conf *conf_validate(const char *text, size_t len, struct lb_cfg_errors *errs)
{
	struct lb_conf *c = NULL;
	int rc = lb_conf_parse(text, len, &c, errs);
	if (rc == 0)
		rc = lb_conf_resolve(c, errs);
	if (rc == 0 && SHM.seg) {
		struct cfg st = { .errs = errs };
		int line = 0;
		const char *key = NULL;
		char msg[512];
		if (shm_room(c, &line, &key, msg, sizeof msg) != 0) {
			cfg_err(&st, line, key, "%s", msg);
			rc = LB_EINVAL;
		}
	}
	if (rc != 0) {
		lb_conf_free(c);
		return NULL;
	}
	return c;
}

/* Give every server and route of c its slot: the one with its name, or a new one (all or none). */
static int shm_map_conf(struct lb_conf *c)
{
	int line;
	const char *what;
	char msg[512];
	if (shm_room(c, &line, &what, msg, sizeof msg) != 0) { /* conf_validate said so first */
		lb_err("%s (line %d)", msg, line);
		return -1;
	}
	for (size_t p = 0; p < c->npools; p++) {
		for (size_t k = 0; k < c->pools[p].nservers; k++) {
			struct lb_server *s = &c->pools[p].servers[k];
			char key[2 * LB_NAME_MAX];
			shm_server_key(&c->pools[p], s, key, sizeof key);
			uint32_t *cell = name_index_cell(&SHM.snames, key, shm_skey_at, NULL);
			if (!*cell) {
				snprintf(SHM.seg->s[SHM.seg->nservers].key, sizeof SHM.seg->s->key, "%s", key);
				*cell = ++SHM.seg->nservers;
			}
			uint32_t i = *cell - 1;
			struct lb_shm_server *v = c->rt->srv[s->id].shm = &SHM.seg->s[i];
			if (!atomic_load(&v->changed_wall_ms)) /* a new slot: its state dates from now */
				atomic_store(&v->changed_wall_ms, wall_ms());
			/* a server added through the admin API takes traffic once it passed its health
			 * checks (also when a removed one comes back under its name); others begin up */
			if (check_first_take(key) && c->pools[p].hc_kind != LB_HC_OFF && !s->disabled) {
				srv_note(v, NULL, "added through the admin API: down until it passes its health checks", 1);
				atomic_store(&v->down, 1);
				atomic_store(&v->hc_ok, 0);
				atomic_store(&v->admin, ADM_READY);
			}
		}
	}
	for (size_t k = 0; k < c->nroutes; k++) {
		const struct lb_route *r = &c->routes[k];
		uint32_t *cell = name_index_cell(&SHM.rnames, r->name, shm_rkey_at, NULL);
		if (!*cell) {
			snprintf(SHM.seg->r[SHM.seg->nroutes].key, sizeof SHM.seg->r->key, "%s", r->name);
			*cell = ++SHM.seg->nroutes;
		}
		struct lb_shm_route *v = c->rt->route[k].shm = &SHM.seg->r[*cell - 1];
		for (size_t j = 0; j < r->nsplit; j++) /* the file's weights win at every load */
			atomic_store(&v->weight[j], r->split[j].weight);
	}
	for (size_t k = 0; k < c->nlisteners; k++) {
		const struct lb_listener *l = &c->listeners[k];
		uint32_t *cell = name_index_cell(&SHM.lnames, l->name, shm_lkey_at, NULL);
		if (!*cell) {
			snprintf(SHM.seg->l[SHM.seg->nlisteners].key, sizeof SHM.seg->l->key, "%s", l->name);
			*cell = ++SHM.seg->nlisteners;
		}
		c->rt->lsn[k].shm = &SHM.seg->l[*cell - 1];
	}
	atomic_fetch_add(&SHM.seg->admin_version, 1);
	return 0;
}

static unsigned srv_weight_now(const struct lb_server *s)
{
	uint32_t w = srv_rt(s)->shm ? atomic_load(&srv_rt(s)->shm->weight) : 0;
	return w ? w : s->weight;
}

/* workers: take the admin API's split weights when they changed (a server's weight is read at each pick) */
static void admin_sync(void)
{
	uint32_t v = atomic_load(&SHM.seg->admin_version);
	if (v == W.admin_seen)
		return;
	W.admin_seen = v;
	for (size_t k = 0; k < g_conf->nroutes; k++) {
		const struct lb_route *r = &g_conf->routes[k];
		struct route_rt *rt = route_rt(r);
		for (size_t j = 0; rt->shm && j < r->nsplit; j++)
			rt->split.weight[j] = atomic_load(&rt->shm->weight[j]);
	}
}

static void srv_hold(const struct lb_server *s)
{
	struct srv_rt *rt = srv_rt(s);
	rt->active++;
	if (rt->shm && P.slot >= 0) {
		atomic_fetch_add_explicit(&rt->shm->active, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&rt->shm->w[P.slot].active, 1, memory_order_relaxed);
	}
}

static void srv_unhold(const struct lb_server *s)
{
	struct srv_rt *rt = srv_rt(s);
	rt->active--;
	if (rt->shm && P.slot >= 0) {
		atomic_fetch_sub_explicit(&rt->shm->active, 1, memory_order_relaxed);
		atomic_fetch_sub_explicit(&rt->shm->w[P.slot].active, 1, memory_order_relaxed);
	}
}

static int hist_bucket(uint64_t us)
{
	int bk = 0;
	while (bk < LB_HIST && us > hist_us[bk])
		bk++;
	return bk;
}

/* One observation of a histogram kept as a bucket array (cumulated at scrape) and a sum. */
static void hist_note(_Atomic uint64_t *bucket, _Atomic uint64_t *sum_us, uint64_t us)
{
	atomic_fetch_add_explicit(&bucket[hist_bucket(us)], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(sum_us, us, memory_order_relaxed);
}

/* The cell of a label set in the request table: found without a lock, claimed under the set's. */
static struct req_cell *req_cell_for(uint64_t key)
{
	struct req_set *set = &SHM.reqs[lb_hash64(&key, sizeof key) % LB_REQ_SETS];
	for (int i = 0; i < LB_REQ_WAYS; i++)
		if (atomic_load_explicit(&set->e[i].key, memory_order_acquire) == key)
			return &set->e[i];
	struct req_cell *got = NULL;
	spin_lock(&set->lock);
	for (int i = 0; i < LB_REQ_WAYS && !got; i++) {
		uint64_t k = atomic_load_explicit(&set->e[i].key, memory_order_relaxed);
		if (k == key)
			got = &set->e[i];
		else if (k == 0) {
			atomic_store_explicit(&set->e[i].key, key, memory_order_release);
			got = &set->e[i];
		}
	}
	spin_unlock(&set->lock);
	return got;
}

/* An HTTP answer, the server's or lb's own, by listener, route and reason. */
static void count_answer(const struct conn *c, int cls)
{
	if (!SHM.reqs || !lsn_rt(c->L)->shm || c->L->mode != LB_MODE_HTTP)
		return;
	uint64_t ls = (uint64_t)(lsn_rt(c->L)->shm - SHM.seg->l) + 1;
	uint64_t rs = c->route && route_rt(c->route)->shm ? (uint64_t)(route_rt(c->route)->shm - SHM.seg->r) + 1 : 0;
	struct req_cell *cell = req_cell_for(ls << 40 | rs << 8 | c->own);
	atomic_fetch_add_explicit(cell ? &cell->status[cls] : &SHM.seg->req_overflow, 1, memory_order_relaxed);
}
#ifdef LB_HTTP2
static void count_h2_conn(void)
{
	if (P.slot >= 0)
		atomic_fetch_add_explicit(&SHM.seg->w[P.slot].h2_conns, 1, memory_order_relaxed);
}

static void count_h2_reset(int why)
{
	if (P.slot >= 0 && why < H2R_N) /* H2R_N: NO_ERROR after a whole answer, no reset to count */
		atomic_fetch_add_explicit(&SHM.seg->w[P.slot].h2_resets[why], 1, memory_order_relaxed);
}
#endif

static void count_exchange(const struct conn *c)
{
	if (P.slot < 0)
		return;
	atomic_fetch_add_explicit(&SHM.seg->w[P.slot].requests, 1, memory_order_relaxed);
	if (CONN_IS_STREAM(c))
		atomic_fetch_add_explicit(&SHM.seg->w[P.slot].h2_requests, 1, memory_order_relaxed);
	int cut = answer_cut(c); /* an answer the server cut short is an error and no status class's */
	int cls = c->resp_status >= 100 && c->resp_status < 600 && !cut ? c->resp_status / 100 : 0;
	uint64_t us = c->us_start ? mono_us() - c->us_start : 0;
	count_answer(c, cls);
	struct lb_shm_route *rt = c->route ? route_rt(c->route)->shm : NULL;
	if (rt) {
		atomic_fetch_add_explicit(&rt->requests, 1, memory_order_relaxed);
		hist_note(rt->dur_bucket, &rt->dur_sum_us, us);
		if (c->resp_status >= 500 || cut)
			atomic_fetch_add_explicit(&rt->errors, 1, memory_order_relaxed);
	}
	struct lb_shm_server *sv = c->srv ? srv_rt(c->srv)->shm : NULL;
	if (!sv)
		return;
	atomic_fetch_add_explicit(&sv->w[P.slot].requests, 1, memory_order_relaxed);
	if (c->resp_status >= 500 || cut)
		atomic_fetch_add_explicit(&sv->w[P.slot].errors, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&sv->w[P.slot].bytes_out, c->bytes_out, memory_order_relaxed);
	atomic_fetch_add_explicit(&sv->status[cls], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&sv->dur_sum_ms, us / 1000, memory_order_relaxed);
	atomic_fetch_add_explicit(&sv->dur_bucket[hist_bucket(us)], 1, memory_order_relaxed); /* one shared write */
}

/* Upstream timings of c's server, kept in the access log's timers too (us_ready, us_first): the connect
 * finished (fresh: its time is observed), or the first response byte came (once per server tried). */
static void count_connected(struct conn *c, int fresh)
{
	uint64_t now = mono_us();
	if (fresh && c->t_up_us && c->srv && srv_rt(c->srv)->shm && P.slot >= 0)
		hist_note(srv_rt(c->srv)->shm->conn_bucket, &srv_rt(c->srv)->shm->conn_sum_us, now - c->t_up_us);
	c->t_up_us = 0;
	c->us_ready = now;
}

static void count_first_byte(struct conn *c)
{
	if (c->us_first)
		return; /* counted: once per server tried */
	c->us_first = mono_us();
	if (c->us_ready && c->srv && srv_rt(c->srv)->shm && P.slot >= 0)
		hist_note(srv_rt(c->srv)->shm->fb_bucket, &srv_rt(c->srv)->shm->fb_sum_us, c->us_first - c->us_ready);
}

/* Client connections per listener: accepted, open (this worker's column), refused by reason. */
static void count_accepted(const struct lb_listener *l)
{
	if (lsn_rt(l)->shm && P.slot >= 0)
		atomic_fetch_add_explicit(&lsn_rt(l)->shm->accepted, 1, memory_order_relaxed);
}

static void count_conn_open(const struct conn *c)
{
	if (lsn_rt(c->L)->shm && P.slot >= 0)
		atomic_fetch_add_explicit(&lsn_rt(c->L)->shm->active[P.slot], 1, memory_order_relaxed);
}

static void count_conn_close(const struct conn *c)
{
	if (lsn_rt(c->L)->shm && P.slot >= 0)
		atomic_fetch_sub_explicit(&lsn_rt(c->L)->shm->active[P.slot], 1, memory_order_relaxed);
}

static void count_refused(const struct lb_listener *l, int why)
{
	if (lsn_rt(l)->shm && P.slot >= 0)
		atomic_fetch_add_explicit(&lsn_rt(l)->shm->refused[why], 1, memory_order_relaxed);
}

/* A server's counters summed over every worker, live or exited. */
static void shm_server_totals(const struct lb_shm_server *sv, uint64_t *req, uint64_t *err, uint64_t *bytes)
{
	*req = sv->retired_requests;
	*err = sv->retired_errors;
	*bytes = sv->retired_bytes;
	for (int w = 0; w < LB_MAX_WORKERS; w++) {
		*req += atomic_load_explicit(&sv->w[w].requests, memory_order_relaxed);
		*err += atomic_load_explicit(&sv->w[w].errors, memory_order_relaxed);
		*bytes += atomic_load_explicit(&sv->w[w].bytes_out, memory_order_relaxed);
	}
}

/* The rate-limit table: token buckets in sets of RL_WAYS, each set behind a spinlock,
 * shared by every worker so that a limit is exact however connections are spread. A key
 * not in its set takes the least recently used entry: a flood of addresses cannot grow it. */
#define RL_WAYS 8
struct rl_entry {
	uint64_t key;                  /* 0 = empty */
	struct lb_bucket b;
};
struct rl_set {
	_Atomic uint32_t lock;
	struct rl_entry e[RL_WAYS];
};

static int rl_create(unsigned entries)
{
	SHM.rl_sets = (entries + RL_WAYS - 1) / RL_WAYS;
	SHM.rl = shm_map(SHM.rl_sets * sizeof *SHM.rl, "rate-limit table");
	return SHM.rl ? 0 : -1;
}

static int rl_take(uint64_t key, const struct lb_rate_limit *rl, uint64_t *retry_ms)
{
	if (!SHM.rl)
		return 1;
	struct rl_set *set = &SHM.rl[key % SHM.rl_sets];
	spin_lock(&set->lock);
	uint64_t now = mono_ms();
	struct rl_entry *e = NULL, *victim = &set->e[0];
	for (int i = 0; i < RL_WAYS && !e; i++) {
		if (set->e[i].key == key)
			e = &set->e[i];
		else if (set->e[i].key == 0 || set->e[i].b.last_ms < victim->b.last_ms)
			victim = victim->key == 0 ? victim : &set->e[i];
	}
	if (!e) {
		e = victim;
		e->key = key;
		e->b.credit = rl->burst * rl->period_ms;
		e->b.last_ms = now;
	}
	int ok = lb_bucket_take(&e->b, now, rl->rate, rl->period_ms, rl->burst, retry_ms);
	spin_unlock(&set->lock);
	return ok;
}

/* Connections per client address (max_conn_per_ip), in the same kind of shared set-associative
 * table: an entry lives while its address has connections, so the table bounds memory however
 * many addresses come. A full set admits the address uncounted rather than refuse an innocent. */
#define IPC_WAYS 8
#define IPC_SETS 32768 /* 262144 addresses with connections at once; 4.5 MB, touched as used */
struct ipc_set {
	_Atomic uint32_t lock;
	struct { uint64_t key; uint32_t n; } e[IPC_WAYS];
};

static int ipc_create(void)
{
	SHM.ipc = shm_map(IPC_SETS * sizeof *SHM.ipc, "connection-per-address table");
	return SHM.ipc ? 0 : -1;
}

static struct ipc_set *ipc_lock(uint64_t key)
{
	struct ipc_set *set = &SHM.ipc[key % IPC_SETS];
	spin_lock(&set->lock);
	return set;
}

static uint64_t ipc_key(const struct conn *c)
{
	return lb_hash64(c->conn_ip.a, c->conn_ip.v6 ? 16 : 4) | 1; /* 0 marks a free entry */
}

static int ipc_take(struct conn *c)
{
	if (!SHM.ipc)
		return 1;
	uint64_t key = ipc_key(c);
	struct ipc_set *set = ipc_lock(key);
	int ok = 1, fr = -1, i;
	for (i = 0; i < IPC_WAYS && set->e[i].key != key; i++)
		if (fr < 0 && set->e[i].n == 0)
			fr = i;
	if (i == IPC_WAYS && fr >= 0) {
		i = fr;
		set->e[i].key = key;
		set->e[i].n = 0;
	}
	if (i < IPC_WAYS) {
		ok = set->e[i].n < c->L->max_conn_per_ip;
		set->e[i].n += (uint32_t)ok;
		c->ipc_held = ok;
	}
	spin_unlock(&set->lock);
	return ok;
}

static void ipc_release(struct conn *c)
{
	uint64_t key = ipc_key(c);
	struct ipc_set *set = ipc_lock(key);
	for (int i = 0; i < IPC_WAYS; i++)
		if (set->e[i].key == key && set->e[i].n > 0) /* > 0: the master may have reset the table */
			set->e[i].n--;
	spin_unlock(&set->lock);
	c->ipc_held = 0;
}

/* master: a worker died with its connections counted; forget every count (they can only be
 * too high now) rather than refuse addresses for connections that no longer exist */
static void ipc_reset(void)
{
	for (size_t s = 0; SHM.ipc && s < IPC_SETS; s++) {
		struct ipc_set *set = ipc_lock((uint64_t)s);
		memset(set->e, 0, sizeof set->e);
		spin_unlock(&set->lock);
	}
}

/* master: a worker exited; its in-flight counts die with it, its totals are kept */
static void shm_release_slot(int slot)
{
	for (uint32_t i = 0; i < SHM.seg->nservers; i++) {
		struct lb_shm_server *sv = &SHM.seg->s[i];
		uint32_t a = atomic_exchange(&sv->w[slot].active, 0);
		atomic_fetch_sub(&sv->active, a);
		sv->retired_requests += atomic_exchange(&sv->w[slot].requests, 0);
		sv->retired_errors += atomic_exchange(&sv->w[slot].errors, 0);
		sv->retired_bytes += atomic_exchange(&sv->w[slot].bytes_out, 0);
	}
	for (uint32_t i = 0; i < SHM.seg->nlisteners; i++)
		atomic_store(&SHM.seg->l[i].active[slot], 0);
	atomic_fetch_add(&SHM.seg->log_dropped_retired, atomic_exchange(&SHM.seg->w[slot].log_dropped, 0));
	SHM.seg->w[slot].pid = 0;
}

/* -------------------------------------------------------------------- history
 * The dashboard's sparklines: every interval (5 s; LB_HISTORY_INTERVAL_MS for tests) the master
 * takes each server and route slot's requests, errors and duration histogram, and keeps what changed
 * since the last sample: LB_HISTORY_N points a slot (15 minutes), in a ring made with the slots at
 * start (one series per slot, so a series follows its name across reloads like the slot does). */
#define LB_HISTORY_N 180
#define LB_HISTORY_MS 5000
struct lb_hpoint {
	uint32_t req, err, p99_us; /* in the interval; p99_us: UINT32_MAX when there was no request */
};
struct lb_hseries {
	uint64_t last_req, last_err, last_bk[LB_HIST + 1]; /* the cumulative counts at the last sample */
	struct lb_hpoint pt[LB_HISTORY_N];
};
struct lb_history {
	uint64_t interval_ms, taken;     /* samples taken; the newest is pt[(taken - 1) % LB_HISTORY_N] */
	uint64_t last_wall_ms, next_ms;  /* the newest sample's time; the next one due (mono_ms) */
	struct lb_hseries *s, *r;        /* cap_servers and cap_routes series, after this header */
};

/* The upper bound of histogram bucket i in milliseconds: the one place that knows hist_us's unit. */
static double hist_bound_ms(int i) { return hist_us[i] / 1000.0; }

/* The q quantile (0..1) of a histogram with counts per bucket (bk[LB_HIST] is above the last bound),
 * interpolated in its bucket as Prometheus's histogram_quantile does; -1 without a count. */
static double hist_quantile(const uint64_t *bk, double q)
{
	uint64_t total = 0, cum = 0;
	for (int i = 0; i <= LB_HIST; i++)
		total += bk[i];
	if (!total)
		return -1;
	double rank = q * (double)total;
	for (int i = 0; i < LB_HIST; i++) {
		if (bk[i] && (double)(cum + bk[i]) >= rank) {
			double lo = i ? hist_bound_ms(i - 1) : 0, hi = hist_bound_ms(i);
			return lo + (hi - lo) * (rank - (double)cum) / (double)bk[i];
		}
		cum += bk[i];
	}
	return hist_bound_ms(LB_HIST - 1);
}

static void hist_load(const _Atomic uint64_t *src, uint64_t *bk)
{
	for (int i = 0; i <= LB_HIST; i++)
		bk[i] = atomic_load_explicit(&src[i], memory_order_relaxed);
}

static int history_create(void)
{
	size_t head = align64(sizeof *SHM.hist), ns = SHM.seg->cap_servers, nr = SHM.seg->cap_routes;
	char *m = shm_map(head + (ns + nr) * sizeof(struct lb_hseries), "history of servers and routes");
	if (!m)
		return -1;
	SHM.hist = (struct lb_history *)m;
	SHM.hist->s = (struct lb_hseries *)(m + head);
	SHM.hist->r = SHM.hist->s + ns;
	const char *env = getenv("LB_HISTORY_INTERVAL_MS"); /* for tests: seconds instead of minutes */
	long v = env ? strtol(env, NULL, 10) : 0;
	SHM.hist->interval_ms = v >= 100 && v <= 60000 ? (uint64_t)v : LB_HISTORY_MS;
	SHM.hist->next_ms = mono_ms() + SHM.hist->interval_ms;
	return 0;
}

/* one point: what the cumulative counts gained since the series' last sample */
static void history_point(struct lb_hseries *h, uint64_t req, uint64_t err, const uint64_t *bk, struct lb_hpoint *pt)
{
	uint64_t d[LB_HIST + 1];
	for (int i = 0; i <= LB_HIST; i++) {
		d[i] = bk[i] >= h->last_bk[i] ? bk[i] - h->last_bk[i] : 0;
		h->last_bk[i] = bk[i];
	}
	double p99 = hist_quantile(d, 0.99);
	pt->req = (uint32_t)LB_MIN(req >= h->last_req ? req - h->last_req : 0, UINT32_MAX);
	pt->err = (uint32_t)LB_MIN(err >= h->last_err ? err - h->last_err : 0, UINT32_MAX);
	pt->p99_us = p99 < 0 ? UINT32_MAX : (uint32_t)LB_MIN(p99 * 1000.0, (double)(UINT32_MAX - 1));
	h->last_req = req;
	h->last_err = err;
}

/* master loop: a sample of every slot taken, when one is due */
static void history_tick(void)
{
	uint64_t now = mono_ms(), bk[LB_HIST + 1];
	if (!SHM.hist || now < SHM.hist->next_ms)
		return;
	SHM.hist->next_ms = now + SHM.hist->interval_ms;
	size_t at = SHM.hist->taken % LB_HISTORY_N;
	for (uint32_t i = 0; i < SHM.seg->nservers; i++) {
		struct lb_shm_server *sv = &SHM.seg->s[i];
		uint64_t req, err, bytes;
		shm_server_totals(sv, &req, &err, &bytes);
		hist_load(sv->dur_bucket, bk);
		history_point(&SHM.hist->s[i], req, err, bk, &SHM.hist->s[i].pt[at]);
	}
	for (uint32_t i = 0; i < SHM.seg->nroutes; i++) {
		struct lb_shm_route *rv = &SHM.seg->r[i];
		hist_load(rv->dur_bucket, bk);
		history_point(&SHM.hist->r[i], atomic_load(&rv->requests), atomic_load(&rv->errors), bk, &SHM.hist->r[i].pt[at]);
	}
	SHM.hist->last_wall_ms = wall_ms();
	SHM.hist->taken++;
}

/* ==================================================================== 13. admin API
 * Served by the master on [admin] bind: reads shared memory for /metrics, /api/stats, /api/history
 * and the dashboard (rendered here: tables and SVG sparklines, no script needed; its form posts to
 * POST / with the token as a field); changes weights, drain state and splits in shared memory (no reload); edits the
 * config file (atomically, the previous kept as .bak) and reloads for config, server add and
 * remove. A fixed set of connections, each with a buffer bounded by LB_ADMIN_MAX_BODY; the
 * master never blocks on a client. A flood of idle or dripping connections cannot take /healthz
 * away (keepalived fails a node over on it): there are many slots (admin_slots), a request head
 * must arrive within LB_ADMIN_HEAD_MS, a new connection evicts the oldest, least advanced one when
 * every slot is taken (admin_evict), and refusals, evictions and timeouts are logged once a second
 * with counts (admin_note_flush). Owns ADM; M, the master's state that section 15 writes, is defined
 * here, where the admin API first reads it. Calls sections 2, 3, 4, 6, 7, 8, 9, 12, and 15 declared ahead
 * (master_reload, live_workers, open_listener). */

#define LB_ADMIN_CONNS 256         /* slots; fewer when RLIMIT_NOFILE is low (admin_slots) */
#define LB_ADMIN_MAX_HEAD 16384
#define LB_ADMIN_MAX_BODY (1u << 20)
#define LB_ADMIN_HEAD_MS 3000      /* accept to a complete request head */
#define LB_ADMIN_TIMEOUT_MS 10000  /* accept to the last byte of the answer */
#define LB_ADMIN_ACCEPTS 64        /* per loop turn: connections accepted earlier get read in between */
#define LB_ADMIN_MAX_OUT (64u << 20)

/* ---- struct lb_master M: the master (gathered by gather_globals.py)
 * Generation, stop and reload state, its listening sockets, the workers' user, rotation and
 * retention timers, the event ring's tail for alerts. Owner: section 15 (master_*); the admin API
 * (13) reads gen, mstop and conf_path. Written by the master only; a fork inherits it, and the worker
 * reads only what it starts with: gen, spawn_mask, msocks (it closes those it does not serve) and
 * the user to drop to (uid, gid, drop). Not used by the fuzzers.
 */
static struct lb_master {
	/* the master's (section 15 sets them; the admin API reads them) */
	int gen; /* the current generation of workers */
	int mstop; /* stopping: SIGTERM or SIGINT came (master_stop) */
	const char *conf_path; /* the config file: reloads and edits read it */
	struct msock *msocks;
	size_t nmsocks;
	uint64_t mstop_deadline;
	uid_t uid;
	gid_t gid;
	int drop; /* workers setuid/setgid to M.uid/M.gid */
	uint64_t next_rotate, next_retention;
	sigset_t spawn_mask; /* the mask before spawn_worker blocked the control signals */
	uint64_t ev_tail;
	uint64_t stop_at;
} M = {
	.gen = 1,
};

static int master_reload(void);
static int live_workers(void);
static int open_listener(struct lb_bind *b, const char *lname);
static void shm_server_totals(const struct lb_shm_server *sv, uint64_t *req, uint64_t *err, uint64_t *bytes);

struct abuf {
	char *d;
	size_t n, cap;
	int oom;
};

static void ab_put(struct abuf *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (b->n + n + 1 > b->cap) {
		size_t cap = LB_MAX(b->cap * 2, b->n + n + 4096);
		char *d = cap <= LB_ADMIN_MAX_OUT ? realloc(b->d, cap) : NULL;
		if (!d) {
			b->oom = 1;
			return;
		}
		b->d = d;
		b->cap = cap;
	}
	memcpy(b->d + b->n, s, n);
	b->n += n;
	b->d[b->n] = 0;
}

static void ab_printf(struct abuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ab_printf(struct abuf *b, const char *fmt, ...)
{
	char tmp[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n < sizeof tmp) {
		ab_put(b, tmp, (size_t)n);
		return;
	}
	char *big = malloc((size_t)n + 1);
	if (!big) {
		b->oom = 1;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(big, (size_t)n + 1, fmt, ap);
	va_end(ap);
	ab_put(b, big, (size_t)n);
	free(big);
}

static void ab_json_str(struct abuf *b, const char *s)
{
	char tmp[2048];
	json_str(tmp, sizeof tmp, s);
	ab_printf(b, "\"%s\"", tmp);
}

struct aconn {
	int fd;
	char peer[INET6_ADDRSTRLEN];
	char *in;
	size_t n, cap;
	struct abuf out;
	size_t sent;
	uint64_t accepted, deadline;
	int writing, head_done;
};

/* pending removals: drained first, removed from the file once idle (or after shutdown_timeout) */
#define LB_ADMIN_REMOVALS 32

/* ---- struct lb_admin ADM: the admin API (gathered by gather_globals.py)
 * Its connections, listening socket, token, pending removals, trouble counts. Owner: section 13;
 * written by the master only (it serves the API). A fork inherits it: worker_main closes the
 * connections and the socket (admin_close_all). fuzz_admin drives the parsers only.
 */
static struct lb_admin {
	struct aconn ac[LB_ADMIN_CONNS];
	int slots; /* in use: ADM.ac[0 .. ADM.slots); set once, at the first listen */
	uint64_t paused_until; /* accept failed for want of descriptors: retry then */
	int fd;
	struct lb_bind bound;
	char token[256];
	size_t token_len;
	struct lb_req req;
	struct {
		char pool[LB_NAME_MAX], server[LB_NAME_MAX];
		uint64_t deadline;
	} rm[LB_ADMIN_REMOVALS];
	/* Admin connection trouble, counted and logged at most once a second: one line sums the four
	 * kinds (log_throttled would give each kind a line of its own). */
	struct {
		unsigned refused, evicted, head_timeout, no_fd;
		uint64_t said_at;
	} note;
} ADM = {
	.fd = -1,
};

/* The token from token_file (surrounding whitespace dropped); -1 when it cannot be read. */
static int admin_token_load(const struct lb_conf *c, char *out, size_t *len)
{
	*len = 0;
	if (!c->admin_on || !c->admin_token_file)
		return 0;
	size_t n = 0;
	char *t = read_file(c->admin_token_file, &n);
	if (!t) {
		lb_err("[admin] token_file %s: cannot read: %s", c->admin_token_file, strerror(errno));
		return -1;
	}
	char *p = t, *e = t + n;
	while (p < e && isspace((unsigned char)*p))
		p++;
	while (e > p && isspace((unsigned char)e[-1]))
		e--;
	int rc = 0;
	if (e == p || (size_t)(e - p) >= 256) {
		lb_err("[admin] token_file %s: the token must be 1..255 characters", c->admin_token_file);
		rc = -1;
	} else {
		memcpy(out, p, (size_t)(e - p));
		*len = (size_t)(e - p);
		if (*len < 16)
			lb_warn("[admin] token_file %s: a token of %zu characters is easy to guess; use 32 or more",
			        c->admin_token_file, *len);
	}
	free(t);
	return rc;
}

/* A quarter of the master's descriptors at most: the rest stays for what the master opens for
 * the workers (listening sockets, control sockets, log files, pipes, a reload's config files). */
static int admin_slots(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur / 4 >= LB_ADMIN_CONNS)
		return LB_ADMIN_CONNS;
	return (int)LB_MAX(rl.rlim_cur / 4, 4);
}

/* master, at start and every reload: listen where [admin] says (or stop listening) */
static int admin_listen(const struct lb_conf *c)
{
	if (ADM.fd >= 0 && (!c->admin_on || c->admin_bind.salen != ADM.bound.salen ||
	                        memcmp(&c->admin_bind.sa, &ADM.bound.sa, c->admin_bind.salen))) {
		close(ADM.fd);
		ADM.fd = -1;
	}
	if (!c->admin_on || ADM.fd >= 0)
		return 0;
	if (!ADM.slots)
		ADM.slots = admin_slots();
	struct lb_bind b = c->admin_bind;
	ADM.fd = open_listener(&b, "admin");
	if (ADM.fd < 0)
		return -1;
	ADM.bound = b;
	return 0;
}

static void aconn_close(struct aconn *a)
{
	close(a->fd);
	free(a->in);
	free(a->out.d);
	memset(a, 0, sizeof *a);
	a->fd = -1;
}

static int admin_allowed(const struct lb_conf *c, const struct lb_ip *ip)
{
	static const char *const loop[] = { "127.0.0.0/8", "::1" };
	if (c->nadmin_allow)
		return cidr_any(c->admin_allow, c->nadmin_allow, ip);
	for (int i = 0; i < 2; i++) {
		struct lb_cidr cd;
		if (lb_parse_cidr(loop[i], strlen(loop[i]), &cd) == 0 && lb_cidr_match(&cd, ip))
			return 1;
	}
	return 0;
}

static void admin_close_all(void)
{
	for (int i = 0; i < LB_ADMIN_CONNS; i++)
		if (ADM.ac[i].fd > 0) {
			close(ADM.ac[i].fd);
			ADM.ac[i].fd = -1;
		}
	if (ADM.fd >= 0)
		close(ADM.fd);
	ADM.fd = -1;
}

static void admin_note_flush(uint64_t now)
{
	if (!(ADM.note.refused | ADM.note.evicted | ADM.note.head_timeout | ADM.note.no_fd) ||
	    now - ADM.note.said_at < 1000)
		return;
	char msg[512];
	size_t n = 0;
	const struct { unsigned v; const char *what; } part[] = {
		{ ADM.note.refused, "refused: address not in allow" },
		{ ADM.note.evicted, "evicted: every slot taken, the oldest of the least advanced closed" },
		{ ADM.note.head_timeout, "closed: no request head within the head timeout" },
		{ ADM.note.no_fd, "accept failed: no descriptor left" },
	};
	for (size_t i = 0; i < sizeof part / sizeof *part; i++)
		if (part[i].v && n < sizeof msg)
			n += (size_t)snprintf(msg + n, sizeof msg - n, "%s%u %s", n ? "; " : "", part[i].v, part[i].what);
	lb_err("admin connections (%d slots, head timeout %d ms): %s", ADM.slots, LB_ADMIN_HEAD_MS, msg);
	memset(&ADM.note, 0, sizeof ADM.note);
	ADM.note.said_at = now;
}

/* 0: waiting for its request head (idle or dripping), 1: for its body, 2: being answered */
static int aconn_stage(const struct aconn *a) { return a->writing ? 2 : a->head_done; }

/* Every slot taken: close the oldest connection of the earliest stage, so that a flood of idle,
 * dripping or slow-body connections cannot keep a new one (keepalived's /healthz) out. Returns
 * the freed slot or -1. */
static int admin_evict(void)
{
	int old = -1;
	for (int k = 0; k < ADM.slots; k++) {
		if (ADM.ac[k].fd <= 0)
			continue;
		int st = aconn_stage(&ADM.ac[k]), ost = old < 0 ? 3 : aconn_stage(&ADM.ac[old]);
		if (st < ost || (st == ost && ADM.ac[k].accepted < ADM.ac[old].accepted))
			old = k;
	}
	if (old >= 0) {
		aconn_close(&ADM.ac[old]);
		ADM.note.evicted++;
	}
	return old;
}

static void admin_accept(void)
{
	uint64_t now = mono_ms();
	for (int n = 0; n < LB_ADMIN_ACCEPTS; n++) {
		struct sockaddr_storage sa;
		socklen_t sl = sizeof sa;
		int fd = accept4(ADM.fd, (struct sockaddr *)&sa, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				ADM.note.no_fd++; /* the socket stays readable: poll it again later, not at once */
				ADM.paused_until = now + 100;
			}
			return;
		}
		struct lb_ip ip;
		if (lb_ip_from_sockaddr(&sa, &ip) != 0 || !admin_allowed(g_conf, &ip)) {
			close(fd);
			ADM.note.refused++;
			continue;
		}
		int k = 0;
		while (k < ADM.slots && ADM.ac[k].fd > 0)
			k++;
		if (k == ADM.slots && (k = admin_evict()) < 0) {
			close(fd); /* no slot at all */
			continue;
		}
		struct aconn *a = &ADM.ac[k];
		memset(a, 0, sizeof *a);
		a->fd = fd;
		lb_ip_format(&ip, a->peer, sizeof a->peer);
		a->accepted = now;
		a->deadline = now + LB_ADMIN_TIMEOUT_MS;
	}
}

static void admin_reply(struct aconn *a, int status, const char *type, const char *body, size_t blen,
                        const char *extra)
{
	struct abuf *o = &a->out;
	char head[512];
	int n = snprintf(head, sizeof head,
	                 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nCache-Control: no-store\r\n"
	                 "X-Content-Type-Options: nosniff\r\n%sConnection: close\r\n\r\n",
	                 status, status_text(status), type, blen, extra ? extra : "");
	struct abuf r = { 0 };
	ab_put(&r, head, (size_t)n);
	if (ADM.req.method_id != LB_M_HEAD)
		ab_put(&r, body, blen);
	free(o->d);
	*o = r;
	if (o->oom) { /* cannot even say so: close */
		free(o->d);
		memset(o, 0, sizeof *o);
	}
	a->writing = 1;
	a->sent = 0;
}

static void admin_json_error(struct aconn *a, int status, const char *msg)
{
	struct abuf b = { 0 };
	ab_printf(&b, "{\"error\":");
	ab_json_str(&b, msg);
	ab_printf(&b, "}\n");
	admin_reply(a, status, "application/json", b.d ? b.d : "", b.n,
	            status == 401 ? "WWW-Authenticate: Bearer realm=\"lb\"\r\n" : NULL);
	free(b.d);
}

/* constant time in the token's length: a wrong guess tells nothing of how close it was */
static int admin_token_eq(const char *t, size_t n)
{
	if (!ADM.token_len)
		return 0;
	unsigned diff = n != ADM.token_len;
	for (size_t i = 0; i < ADM.token_len; i++)
		diff |= (unsigned char)ADM.token[i] ^ (unsigned char)(i < n ? t[i] : 0);
	return diff == 0;
}

static int admin_token_ok(const struct lb_req *rq)
{
	const struct lb_header *h = lb_header_find(rq->headers, rq->nheaders, "authorization");
	if (!h || h->value.n < 7 || !str_ieq(h->value.p, 7, "bearer "))
		return 0;
	return admin_token_eq(h->value.p + 7, h->value.n - 7);
}

/* -------------------------------------------------------------------- state as text */

static const char *srv_state_name(const struct lb_server *s)
{
	struct lb_shm_server *v = srv_rt(s)->shm;
	if (s->disabled || (v && atomic_load(&v->admin) == ADM_DISABLED))
		return "disabled";
	if (v && atomic_load(&v->admin) == ADM_DRAIN)
		return "drain";
	if (v && atomic_load(&v->down))
		return "down";
	if (v && atomic_load(&v->cb_state) == CB_OPEN)
		return "circuit-open";
	if (v && atomic_load(&v->cb_state) == CB_HALF)
		return "circuit-half-open";
	return "up";
}

#define METRIC(b, name, type, help) ab_printf(b, "# HELP " name " " help "\n# TYPE " name " " type "\n")

/* A histogram's lines from its per-bucket counts (cumulated here) and its sum in µs. */
static void hist_print(struct abuf *b, const char *name, const char *labels, const uint64_t *n, uint64_t sum_us)
{
	uint64_t cum = 0;
	for (int i = 0; i < LB_HIST; i++) {
		cum += n[i];
		ab_printf(b, "%s_bucket{%s,le=\"%g\"} %llu\n", name, labels, hist_us[i] / 1e6, (unsigned long long)cum);
	}
	cum += n[LB_HIST];
	ab_printf(b, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, labels, (unsigned long long)cum);
	ab_printf(b, "%s_sum{%s} %.6f\n", name, labels, sum_us / 1e6);
	ab_printf(b, "%s_count{%s} %llu\n", name, labels, (unsigned long long)cum);
}

/* Upstream connect and first-byte times per pool: the sums of its servers' slots. */
static void metrics_upstream(struct abuf *b)
{
	const struct lb_conf *c = g_conf;
	for (int which = 0; which < 2; which++) {
		const char *name = which ? "lb_upstream_first_byte_duration_seconds" : "lb_upstream_connect_duration_seconds";
		ab_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name,
		          which ? "From the server connection being ready (connected or reused) to the first response byte."
		                : "Time to connect to a server (new connections only).", name);
		for (size_t p = 0; p < c->npools; p++) {
			uint64_t n[LB_HIST + 1] = { 0 }, sum = 0;
			char lab[LB_NAME_MAX + 16];
			for (size_t k = 0; k < c->pools[p].nservers; k++) {
				struct lb_shm_server *v = srv_rt(&c->pools[p].servers[k])->shm;
				for (int i = 0; v && i <= LB_HIST; i++)
					n[i] += atomic_load(which ? &v->fb_bucket[i] : &v->conn_bucket[i]);
				sum += v ? atomic_load(which ? &v->fb_sum_us : &v->conn_sum_us) : 0;
			}
			snprintf(lab, sizeof lab, "pool=\"%s\"", c->pools[p].name);
			hist_print(b, name, lab, n, sum);
		}
	}
}

static void metrics_servers(struct abuf *b)
{
	static const char *const cls[6] = { "none", "1xx", "2xx", "3xx", "4xx", "5xx" };
	const struct lb_conf *c = g_conf;
	METRIC(b, "lb_server_requests_total", "counter", "Exchanges with the server by status class (none: no answer).");
	for (size_t p = 0; p < c->npools; p++)
		for (size_t k = 0; k < c->pools[p].nservers; k++) {
			const struct lb_server *s = &c->pools[p].servers[k];
			for (int i = 0; srv_rt(s)->shm && i < 6; i++)
				ab_printf(b, "lb_server_requests_total{pool=\"%s\",server=\"%s\",code=\"%s\"} %llu\n", c->pools[p].name,
				          s->name, cls[i], (unsigned long long)atomic_load(&srv_rt(s)->shm->status[i]));
		}
	METRIC(b, "lb_server_request_duration_seconds", "histogram", "Time from the request to the end of the answer.");
	for (size_t p = 0; p < c->npools; p++)
		for (size_t k = 0; k < c->pools[p].nservers; k++) {
			const struct lb_server *s = &c->pools[p].servers[k];
			uint64_t n[LB_HIST + 1];
			char lab[3 * LB_NAME_MAX];
			if (!srv_rt(s)->shm)
				continue;
			for (int i = 0; i <= LB_HIST; i++)
				n[i] = atomic_load(&srv_rt(s)->shm->dur_bucket[i]);
			snprintf(lab, sizeof lab, "pool=\"%s\",server=\"%s\"", c->pools[p].name, s->name);
			hist_print(b, "lb_server_request_duration_seconds", lab, n, atomic_load(&srv_rt(s)->shm->dur_sum_ms) * 1000);
		}
	metrics_upstream(b);
	static const struct {
		const char *name, *type, *help;
		int what;
	} g[] = {
		{ "lb_server_sent_bytes_total", "counter", "Body bytes sent to clients from the server.", 0 },
		{ "lb_server_active_requests", "gauge", "Exchanges in flight, all workers.", 1 },
		{ "lb_server_up", "gauge", "1 when health checks say the server is up.", 2 },
		{ "lb_server_circuit_state", "gauge", "0 closed, 1 open, 2 half-open.", 3 },
		{ "lb_server_admin_state", "gauge", "0 ready, 1 drain, 2 disabled (admin API or config).", 4 },
		{ "lb_server_weight", "gauge", "Weight in effect.", 5 },
		{ "lb_server_health_checks_total", "counter", "Health checks run.", 6 },
		{ "lb_server_health_check_failures_total", "counter", "Health checks failed.", 7 },
		{ "lb_server_down_transitions_total", "counter", "Times health checks marked the server down.", 8 },
		{ "lb_server_up_transitions_total", "counter", "Times health checks brought the server back.", 9 },
		{ "lb_server_circuit_opens_total", "counter", "Times the circuit opened.", 10 },
		{ "lb_server_retries_total", "counter", "Requests retried on another server after this one failed.", 11 },
	};
	for (size_t m = 0; m < sizeof g / sizeof g[0]; m++) {
		ab_printf(b, "# HELP %s %s\n# TYPE %s %s\n", g[m].name, g[m].help, g[m].name, g[m].type);
		for (size_t p = 0; p < c->npools; p++)
			for (size_t k = 0; k < c->pools[p].nservers; k++) {
				const struct lb_server *s = &c->pools[p].servers[k];
				struct lb_shm_server *v = srv_rt(s)->shm;
				if (!v)
					continue;
				uint64_t req, err, bytes, x = 0;
				int adm = s->disabled ? ADM_DISABLED : atomic_load(&v->admin);
				switch (g[m].what) {
				case 0: shm_server_totals(v, &req, &err, &bytes); x = bytes; break;
				case 1: x = atomic_load(&v->active); break;
				case 2: x = !atomic_load(&v->down); break;
				case 3: x = (uint64_t)atomic_load(&v->cb_state); break;
				case 4: x = (uint64_t)adm; break;
				case 5: x = srv_weight_now(s); break;
				case 6: x = atomic_load(&v->n_checks); break;
				case 7: x = atomic_load(&v->n_check_fails); break;
				case 8: x = atomic_load(&v->n_down); break;
				case 9: x = atomic_load(&v->n_up); break;
				case 10: x = atomic_load(&v->n_open); break;
				default: x = atomic_load(&v->retries); break;
				}
				ab_printf(b, "%s{pool=\"%s\",server=\"%s\"} %llu\n", g[m].name, c->pools[p].name, s->name,
				          (unsigned long long)x);
			}
	}
}

/* TLS: counters of all workers, and each loaded certificate's remaining validity */
static void metrics_tls(struct abuf *b)
{
	METRIC(b, "lb_tls_handshakes_total", "counter", "TLS handshakes completed (full and resumed).");
	ab_printf(b, "lb_tls_handshakes_total %llu\n", (unsigned long long)atomic_load(&SHM.tls->handshakes));
	METRIC(b, "lb_tls_resumed_handshakes_total", "counter", "TLS handshakes that resumed a cached session.");
	ab_printf(b, "lb_tls_resumed_handshakes_total %llu\n", (unsigned long long)atomic_load(&SHM.tls->resumed));
	METRIC(b, "lb_tls_handshakes_by_suite_total", "counter", "TLS handshakes completed, by protocol version and cipher suite.");
	for (int k = 0; k < TLS_SUITES_N; k++)
		ab_printf(b, "lb_tls_handshakes_by_suite_total{version=\"%s\",cipher=\"%s\"} %llu\n", tls_suite_labels[k][0],
		          tls_suite_labels[k][1], (unsigned long long)atomic_load(&SHM.tls->by_suite[k]));
	METRIC(b, "lb_tls_resumptions_total", "counter", "TLS handshakes that resumed a session, by kind (ticket, session_id).");
	ab_printf(b, "lb_tls_resumptions_total{kind=\"ticket\"} %llu\nlb_tls_resumptions_total{kind=\"session_id\"} %llu\n",
	          (unsigned long long)atomic_load(&SHM.tls->resumed_ticket), (unsigned long long)atomic_load(&SHM.tls->resumed_id));
	METRIC(b, "lb_tls_handshake_failures_total", "counter", "TLS handshakes that failed, by reason.");
	for (int k = 0; k < TLS_F_N; k++)
		ab_printf(b, "lb_tls_handshake_failures_total{reason=\"%s\"} %llu\n", tls_fail_kind[k],
		          (unsigned long long)atomic_load(&SHM.tls->failures[k]));
	METRIC(b, "lb_tls_session_cache_lookups_total", "counter", "Clients that offered a session to resume.");
	ab_printf(b, "lb_tls_session_cache_lookups_total %llu\n", (unsigned long long)atomic_load(&SHM.tls->lookups));
	METRIC(b, "lb_tls_session_cache_hits_total", "counter", "Offered sessions found in the cache.");
	ab_printf(b, "lb_tls_session_cache_hits_total %llu\n", (unsigned long long)atomic_load(&SHM.tls->hits));
	METRIC(b, "lb_tls_session_cache_entries", "gauge", "Capacity of the shared TLS session cache.");
	ab_printf(b, "lb_tls_session_cache_entries %u\n", SHM.tls->entries);
	METRIC(b, "lb_tls_cert_expiry_seconds", "gauge", "Seconds until the certificate's notAfter (negative: expired).");
	int64_t now = (int64_t)(wall_ms() / 1000);
	METRIC(b, "lb_tls_ocsp_response_age_seconds", "gauge", "Seconds since the thisUpdate of the OCSP response stapled with the certificate.");
	for (size_t i = 0; i < g_conf->nlisteners; i++) {
		const struct lb_listener *l = &g_conf->listeners[i];
		for (size_t k = 0; l->tlsm && k < l->tlsm->ncerts; k++) {
			int64_t t = tls_ocsp_this_update(&l->tlsm->certs[k]);
			if (!t)
				continue;
			ab_printf(b, "lb_tls_ocsp_response_age_seconds{listener=\"%s\",cert=", l->name);
			ab_json_str(b, l->tlsm->certs[k].file);
			ab_printf(b, "} %lld\n", (long long)(now - t));
		}
	}
	for (size_t i = 0; i < g_conf->nlisteners; i++) {
		const struct lb_listener *l = &g_conf->listeners[i];
		for (size_t k = 0; l->tlsm && k < l->tlsm->ncerts; k++) {
			const struct lb_cert *ct = &l->tlsm->certs[k];
			ab_printf(b, "lb_tls_cert_expiry_seconds{listener=\"%s\",cert=", l->name);
			ab_json_str(b, ct->file);
			ab_printf(b, ",name=\"%s\",serial=\"%s\"} %lld\n", ct->info.names[0], ct->info.serial,
			          (long long)(ct->info.not_after - now));
		}
	}
}

static void metrics_routes(struct abuf *b)
{
	const struct lb_conf *c = g_conf;
	static const struct {
		const char *name, *help;
		int what;
	} g[] = {
		{ "lb_route_requests_total", "Exchanges that matched the route.", 0 },
		{ "lb_route_rate_limited_total", "Requests answered 429 by the route's rate limit.", 1 },
		{ "lb_route_denied_total", "Requests answered 403 by the route's acl.", 2 },
	};
	for (size_t m = 0; m < 3; m++) {
		ab_printf(b, "# HELP %s %s\n# TYPE %s counter\n", g[m].name, g[m].help, g[m].name);
		for (size_t k = 0; k < c->nroutes; k++) {
			struct lb_shm_route *r = route_rt(&c->routes[k])->shm;
			if (r)
				ab_printf(b, "%s{route=\"%s\"} %llu\n", g[m].name, c->routes[k].name,
				          (unsigned long long)atomic_load(g[m].what == 0 ? &r->requests
				                                          : g[m].what == 1 ? &r->limited : &r->denied));
		}
	}
	METRIC(b, "lb_route_errors_total", "counter", "Answers of the route that were 5xx (lb's or a server's) or cut short.");
	for (size_t k = 0; k < c->nroutes; k++)
		if (route_rt(&c->routes[k])->shm)
			ab_printf(b, "lb_route_errors_total{route=\"%s\"} %llu\n", c->routes[k].name,
			          (unsigned long long)atomic_load(&route_rt(&c->routes[k])->shm->errors));
	METRIC(b, "lb_route_request_duration_seconds", "histogram",
	       "Time from the request's start to the end of the answer (lb's own answers included).");
	for (size_t k = 0; k < c->nroutes; k++) {
		struct lb_shm_route *r = route_rt(&c->routes[k])->shm;
		uint64_t n[LB_HIST + 1];
		char lab[LB_NAME_MAX + 16];
		if (!r)
			continue;
		for (int i = 0; i <= LB_HIST; i++)
			n[i] = atomic_load(&r->dur_bucket[i]);
		snprintf(lab, sizeof lab, "route=\"%s\"", c->routes[k].name);
		hist_print(b, "lb_route_request_duration_seconds", lab, n, atomic_load(&r->dur_sum_us));
	}
	METRIC(b, "lb_route_split_weight", "gauge", "Split weight of each pool of a route.");
	for (size_t k = 0; k < c->nroutes; k++) {
		const struct lb_route *r = &c->routes[k];
		for (size_t j = 0; route_rt(r)->shm && j < r->nsplit; j++)
			ab_printf(b, "lb_route_split_weight{route=\"%s\",pool=\"%s\"} %u\n", r->name, c->pools[r->split[j].pool].name,
			          atomic_load(&route_rt(r)->shm->weight[j]));
	}
}

static const char *listener_protocol(const struct lb_listener *l)
{
	if (l->mode == LB_MODE_TCP)
		return l->tls ? "tls" : "tcp";
	return l->tls ? "https" : "http";
}

/* Every answer by listener, route ("" when none matched), status class and reason ("server" when
 * a server answered; else why lb answered itself): the cells of the request table. */
static void metrics_requests(struct abuf *b)
{
	static const char *const cls[6] = { "none", "1xx", "2xx", "3xx", "4xx", "5xx" };
	METRIC(b, "lb_requests_total", "counter",
	       "HTTP answers by listener, route, status class (none: cut short) and reason (server, or why lb answered itself).");
	for (size_t s = 0; SHM.reqs && s < LB_REQ_SETS; s++)
		for (int w = 0; w < LB_REQ_WAYS; w++) {
			const struct req_cell *e = &SHM.reqs[s].e[w];
			uint64_t key = atomic_load(&e->key), ls = key >> 40, rs = (key >> 8) & 0xffffffffu, why = key & 0xff;
			if (!key || ls > SHM.seg->nlisteners || rs > SHM.seg->nroutes || why >= OWN_N)
				continue;
			for (int k = 0; k < 6; k++) {
				uint64_t n = atomic_load(&e->status[k]);
				if (n)
					ab_printf(b, "lb_requests_total{listener=\"%s\",route=\"%s\",code=\"%s\",reason=\"%s\"} %llu\n",
					          SHM.seg->l[ls - 1].key, rs ? SHM.seg->r[rs - 1].key : "", cls[k], own_name[why],
					          (unsigned long long)n);
			}
		}
	METRIC(b, "lb_requests_unlabelled_total", "counter",
	       "Answers counted without labels: the request table's cells for their label set were all taken.");
	ab_printf(b, "lb_requests_unlabelled_total %llu\n", (unsigned long long)atomic_load(&SHM.seg->req_overflow));
}

/* Client connections per listener of the running file, with its protocol. */
static void metrics_connections(struct abuf *b)
{
	static const char *const why[REFUSE_N] = { "acl", "max_conn_per_ip", "no_memory", "tls_handshake", "proxy_header" };
	const struct lb_conf *c = g_conf;
	METRIC(b, "lb_connections_accepted_total", "counter", "Client connections accepted (refused ones included).");
	for (size_t i = 0; i < c->nlisteners; i++)
		if (lsn_rt(&c->listeners[i])->shm)
			ab_printf(b, "lb_connections_accepted_total{listener=\"%s\",protocol=\"%s\"} %llu\n", c->listeners[i].name,
			          listener_protocol(&c->listeners[i]), (unsigned long long)atomic_load(&lsn_rt(&c->listeners[i])->shm->accepted));
	METRIC(b, "lb_connections_active", "gauge", "Client connections open now, all workers.");
	for (size_t i = 0; i < c->nlisteners; i++) {
		struct lb_shm_listener *l = lsn_rt(&c->listeners[i])->shm;
		int64_t n = 0;
		for (int w = 0; l && w < LB_MAX_WORKERS; w++)
			n += atomic_load(&l->active[w]);
		if (l)
			ab_printf(b, "lb_connections_active{listener=\"%s\",protocol=\"%s\"} %lld\n", c->listeners[i].name,
			          listener_protocol(&c->listeners[i]), (long long)LB_MAX(n, 0));
	}
	METRIC(b, "lb_connections_refused_total", "counter", "Client connections lb closed before serving them, by reason.");
	for (size_t i = 0; i < c->nlisteners; i++)
		for (int k = 0; lsn_rt(&c->listeners[i])->shm && k < REFUSE_N; k++)
			ab_printf(b, "lb_connections_refused_total{listener=\"%s\",protocol=\"%s\",reason=\"%s\"} %llu\n",
			          c->listeners[i].name, listener_protocol(&c->listeners[i]), why[k],
			          (unsigned long long)atomic_load(&lsn_rt(&c->listeners[i])->shm->refused[k]));
}

/* HTTP/2 connections begun and exchanges on their streams, by the workers alive now */
static void h2_totals(uint64_t *conns, uint64_t *requests)
{
	*conns = *requests = 0;
	for (int w = 0; w < LB_MAX_WORKERS; w++) {
		*conns += atomic_load(&SHM.seg->w[w].h2_conns);
		*requests += atomic_load(&SHM.seg->w[w].h2_requests);
	}
}

static void admin_metrics(struct abuf *b)
{
	uint64_t reqs = 0, log_dropped = atomic_load(&SHM.seg->log_dropped_retired), h2c, h2r, h2x[4] = { 0 };
	h2_totals(&h2c, &h2r);
	for (int w = 0; w < LB_MAX_WORKERS; w++) {
		for (int k = 0; k < 4; k++)
			h2x[k] += atomic_load(&SHM.seg->w[w].h2_resets[k]);
		reqs += atomic_load(&SHM.seg->w[w].requests);
		log_dropped += atomic_load(&SHM.seg->w[w].log_dropped);
	}
	METRIC(b, "lb_build_info", "gauge", "lb's version.");
	ab_printf(b, "lb_build_info{version=\"%s\"} 1\n", LB_VERSION);
	METRIC(b, "lb_start_time_seconds", "gauge", "When the master started (Unix time).");
	ab_printf(b, "lb_start_time_seconds %.3f\n", SHM.seg->started_wall_ms / 1000.0);
	METRIC(b, "lb_workers", "gauge", "Live worker processes (every generation).");
	ab_printf(b, "lb_workers %d\n", live_workers());
	METRIC(b, "lb_generation", "gauge", "Configuration generation now serving (1 + reloads).");
	ab_printf(b, "lb_generation %d\n", M.gen);
	METRIC(b, "lb_reloads_total", "counter", "Successful reloads.");
	ab_printf(b, "lb_reloads_total %llu\n", (unsigned long long)atomic_load(&SHM.seg->reloads));
	METRIC(b, "lb_reload_failures_total", "counter", "Reloads refused (the file has errors, or its listeners, user or admin token could not be taken).");
	ab_printf(b, "lb_reload_failures_total %llu\n", (unsigned long long)atomic_load(&SHM.seg->reload_failures));
	uint64_t ok_ms = atomic_load(&SHM.seg->reload_ok_wall_ms);
	METRIC(b, "lb_last_reload_success_timestamp_seconds", "gauge", "When the running configuration was loaded (Unix time; start or last reload).");
	ab_printf(b, "lb_last_reload_success_timestamp_seconds %.3f\n", (ok_ms ? ok_ms : SHM.seg->started_wall_ms) / 1000.0);
	METRIC(b, "lb_last_reload_failure_timestamp_seconds", "gauge", "When a reload last failed (Unix time; 0: never).");
	ab_printf(b, "lb_last_reload_failure_timestamp_seconds %.3f\n", atomic_load(&SHM.seg->reload_fail_wall_ms) / 1000.0);
	METRIC(b, "lb_worker_restarts_total", "counter", "Workers restarted after dying.");
	ab_printf(b, "lb_worker_restarts_total %llu\n", (unsigned long long)atomic_load(&SHM.seg->restarts));
	METRIC(b, "lb_live_worker_requests_total", "counter", "Exchanges finished by the workers alive now.");
	ab_printf(b, "lb_live_worker_requests_total %llu\n", (unsigned long long)reqs);
	METRIC(b, "lb_live_worker_requests_by_protocol_total", "counter", "Exchanges finished by the workers alive now, by the client's protocol (HTTP/1.x includes TCP sessions).");
	ab_printf(b, "lb_live_worker_requests_by_protocol_total{protocol=\"HTTP/1.x\"} %llu\n", (unsigned long long)(reqs - LB_MIN(reqs, h2r)));
	ab_printf(b, "lb_live_worker_requests_by_protocol_total{protocol=\"HTTP/2.0\"} %llu\n", (unsigned long long)h2r);
	METRIC(b, "lb_live_worker_http2_connections_total", "counter", "HTTP/2 client connections (ALPN h2 or h2c) begun by the workers alive now.");
	ab_printf(b, "lb_live_worker_http2_connections_total %llu\n", (unsigned long long)h2c);
	METRIC(b, "lb_live_worker_http2_stream_resets_total", "counter", "HTTP/2 streams reset (workers alive now): by the client, or by lb for a malformed request (protocol_error), no room (refused_stream) or an exchange that could not finish (other).");
	static const char *const h2why[4] = { "client", "protocol_error", "refused_stream", "other" };
	for (int k = 0; k < 4; k++)
		ab_printf(b, "lb_live_worker_http2_stream_resets_total{by=\"%s\"} %llu\n", h2why[k], (unsigned long long)h2x[k]);
	METRIC(b, "lb_log_lines_dropped_total", "counter",
	       "Access log lines lost whole: the log could not take them (disk full, I/O error) or one was longer than the 64 KB buffer.");
	ab_printf(b, "lb_log_lines_dropped_total %llu\n", (unsigned long long)log_dropped);
	metrics_requests(b);
	metrics_connections(b);
	metrics_servers(b);
	metrics_routes(b);
	metrics_tls(b);
}

/* -------------------------------------------------------------------- what the dashboard and /api/stats show */

/* A server's figures beyond its counters: percentiles, the last check, why it takes no traffic. */
struct srv_view {
	double p50, p99;                /* ms over every request since start; -1 without one */
	int checked, check_ok;          /* a check ran; the last one passed */
	uint32_t check_us;
	uint64_t check_age_ms, changed_age_ms;
	char check_why[160], down_why[320];
	char reason[360];               /* "" when the server takes traffic */
};

static void srv_view_of(const struct lb_server *s, struct srv_view *o)
{
	struct lb_shm_server *v = srv_rt(s)->shm;
	uint64_t bk[LB_HIST + 1], now = wall_ms();
	memset(o, 0, sizeof *o);
	o->p50 = o->p99 = -1;
	if (!v)
		return;
	hist_load(v->dur_bucket, bk);
	o->p50 = hist_quantile(bk, 0.5);
	o->p99 = hist_quantile(bk, 0.99);
	uint64_t at = atomic_load(&v->hc_last_wall_ms), ch = atomic_load(&v->changed_wall_ms);
	o->checked = at != 0;
	o->check_ok = atomic_load(&v->hc_last_ok);
	o->check_us = atomic_load(&v->hc_last_us);
	o->check_age_ms = at && now > at ? now - at : 0;
	o->changed_age_ms = ch && now > ch ? now - ch : 0;
	srv_note_read(v, o->check_why, sizeof o->check_why, o->down_why, sizeof o->down_why);
	const char *st = srv_state_name(s);
	if (!strcmp(st, "disabled"))
		snprintf(o->reason, sizeof o->reason, "%s", s->disabled ? "disabled in the config file" : "disabled through the admin API");
	else if (!strcmp(st, "drain"))
		snprintf(o->reason, sizeof o->reason, "draining (admin API): no new clients");
	else if (!strcmp(st, "down") || !strcmp(st, "circuit-open"))
		snprintf(o->reason, sizeof o->reason, "%s", o->down_why[0] ? o->down_why : "health checks fail");
	else if (!strcmp(st, "circuit-half-open"))
		snprintf(o->reason, sizeof o->reason, "circuit half-open: trial requests only");
}

static void ab_json_ms(struct abuf *b, double ms)
{
	if (ms < 0)
		ab_printf(b, "null");
	else
		ab_printf(b, "%.3f", ms);
}

/* /api/stats: a server's view, after its counters (the object is closed here) */
static void stats_server_view(struct abuf *b, const struct lb_server *s)
{
	struct srv_view w;
	srv_view_of(s, &w);
	struct lb_shm_server *v = srv_rt(s)->shm;
	ab_printf(b, "\"p50_ms\":");
	ab_json_ms(b, w.p50);
	ab_printf(b, ",\"p99_ms\":");
	ab_json_ms(b, w.p99);
	ab_printf(b, ",\"reason\":");
	ab_json_str(b, w.reason);
	ab_printf(b, ",\"changed_s_ago\":%llu,\"check\":", (unsigned long long)(w.changed_age_ms / 1000));
	if (!w.checked || !v) {
		ab_printf(b, "null}");
		return;
	}
	ab_printf(b, "{\"ok\":%s,\"result\":", w.check_ok ? "true" : "false");
	ab_json_str(b, w.check_ok ? "ok" : w.check_why);
	ab_printf(b, ",\"latency_ms\":%.3f,\"age_s\":%.1f,\"checks\":%llu,\"failures\":%llu,\"downs\":%llu}}",
	          w.check_us / 1000.0, w.check_age_ms / 1000.0, (unsigned long long)atomic_load(&v->n_checks),
	          (unsigned long long)atomic_load(&v->n_check_fails), (unsigned long long)atomic_load(&v->n_down));
}

static void route_quantiles(const struct lb_route *r, double *p50, double *p99)
{
	uint64_t bk[LB_HIST + 1];
	*p50 = *p99 = -1;
	if (!route_rt(r)->shm)
		return;
	hist_load(route_rt(r)->shm->dur_bucket, bk);
	*p50 = hist_quantile(bk, 0.5);
	*p99 = hist_quantile(bk, 0.99);
}

static uint64_t listener_active(const struct lb_listener *l)
{
	uint64_t n = 0;
	for (int w = 0; lsn_rt(l)->shm && w < LB_MAX_WORKERS; w++)
		n += atomic_load_explicit(&lsn_rt(l)->shm->active[w], memory_order_relaxed);
	return n;
}

static void bind_text(const struct lb_bind *bd, char *out, size_t n)
{
	const struct lb_hostport *hp = &bd->hp;
	if (hp->wildcard || !hp->host[0])
		snprintf(out, n, "*:%u", (unsigned)hp->port);
	else
		snprintf(out, n, hp->v6 ? "[%s]:%u" : "%s:%u", hp->host, (unsigned)hp->port);
}

/* /api/stats: "listeners", written where the routes' array ends (the caller closes it) */
static void stats_listeners(struct abuf *b)
{
	ab_printf(b, "],\"listeners\":[");
	for (size_t i = 0; i < g_conf->nlisteners; i++) {
		const struct lb_listener *l = &g_conf->listeners[i];
		char bt[LB_HOST_MAX + 16];
		ab_printf(b, "%s{\"name\":\"%s\",\"protocol\":\"%s\",\"binds\":[", i ? "," : "", l->name, listener_protocol(l));
		for (size_t k = 0; k < l->nbinds; k++) {
			bind_text(&l->binds[k], bt, sizeof bt);
			ab_printf(b, "%s", k ? "," : "");
			ab_json_str(b, bt);
		}
		ab_printf(b, "],\"active\":%llu,\"accepted\":%llu}", (unsigned long long)listener_active(l),
		          (unsigned long long)(lsn_rt(l)->shm ? atomic_load(&lsn_rt(l)->shm->accepted) : 0));
	}
}

/* /api/history: the ring's points of the servers and routes of the running file, oldest first */
static void history_series_json(struct abuf *b, const struct lb_hseries *h, size_t n)
{
	static const char *const name[3] = { "requests", "errors", "p99_ms" };
	for (int what = 0; what < 3; what++) {
		ab_printf(b, "%s\"%s\":[", what ? "," : "", name[what]);
		for (size_t j = 0; j < n; j++) {
			const struct lb_hpoint *pt = &h->pt[(SHM.hist->taken - n + j) % LB_HISTORY_N];
			if (what == 0)
				ab_printf(b, "%s%u", j ? "," : "", pt->req);
			else if (what == 1)
				ab_printf(b, "%s%u", j ? "," : "", pt->err);
			else if (!pt->req || pt->p99_us == UINT32_MAX)
				ab_printf(b, "%snull", j ? "," : "");
			else
				ab_printf(b, "%s%.3f", j ? "," : "", pt->p99_us / 1000.0);
		}
		ab_printf(b, "]");
	}
}

static void admin_history(struct abuf *b)
{
	const struct lb_conf *c = g_conf;
	size_t n = (size_t)LB_MIN(SHM.hist->taken, (uint64_t)LB_HISTORY_N);
	ab_printf(b, "{\"interval_s\":%.3f,\"samples\":%zu,\"capacity\":%d,\"last\":%.3f,\"servers\":[",
	          SHM.hist->interval_ms / 1000.0, n, LB_HISTORY_N, SHM.hist->last_wall_ms / 1000.0);
	int first = 1;
	for (size_t p = 0; p < c->npools; p++)
		for (size_t k = 0; k < c->pools[p].nservers; k++) {
			const struct lb_server *s = &c->pools[p].servers[k];
			if (!srv_rt(s)->shm)
				continue;
			ab_printf(b, "%s{\"pool\":\"%s\",\"server\":\"%s\",", first ? "" : ",", c->pools[p].name, s->name);
			history_series_json(b, &SHM.hist->s[srv_rt(s)->shm - SHM.seg->s], n);
			ab_printf(b, "}");
			first = 0;
		}
	ab_printf(b, "],\"routes\":[");
	first = 1;
	for (size_t k = 0; k < c->nroutes; k++) {
		const struct lb_route *r = &c->routes[k];
		if (!route_rt(r)->shm)
			continue;
		ab_printf(b, "%s{\"route\":\"%s\",", first ? "" : ",", r->name);
		history_series_json(b, &SHM.hist->r[route_rt(r)->shm - SHM.seg->r], n);
		ab_printf(b, "}");
		first = 0;
	}
	ab_printf(b, "]}\n");
}

static void admin_stats(struct abuf *b)
{
	const struct lb_conf *c = g_conf;
	static const char *const algo[] = { "round_robin", "least_conn", "ip_hash", "random2" };
	uint64_t h2c, h2r;
	h2_totals(&h2c, &h2r);
	ab_printf(b, "{\"version\":\"%s\",\"generation\":%d,\"draining\":%s,\"workers\":%d,\"started\":%.3f,"
	          "\"http2\":{\"connections\":%llu,\"requests\":%llu},\"pools\":[",
	          LB_VERSION, M.gen, M.mstop ? "true" : "false", live_workers(), SHM.seg->started_wall_ms / 1000.0,
	          (unsigned long long)h2c, (unsigned long long)h2r);
	for (size_t p = 0; p < c->npools; p++) {
		const struct lb_pool *pl = &c->pools[p];
		ab_printf(b, "%s{\"name\":\"%s\",\"algorithm\":\"%s\",\"servers\":[", p ? "," : "", pl->name, algo[pl->algorithm]);
		for (size_t k = 0; k < pl->nservers; k++) {
			const struct lb_server *s = &pl->servers[k];
			struct lb_shm_server *v = srv_rt(s)->shm;
			uint64_t req = 0, err = 0, bytes = 0, st[6] = { 0 };
			if (v) {
				shm_server_totals(v, &req, &err, &bytes);
				for (int i = 0; i < 6; i++)
					st[i] = atomic_load(&v->status[i]);
			}
			ab_printf(b, "%s{\"name\":\"%s\",\"address\":\"%s:%u\",\"state\":\"%s\",\"backup\":%s,\"weight\":%u,"
			             "\"active\":%u,\"requests\":%llu,\"errors\":%llu,\"bytes_out\":%llu,",
			          k ? "," : "", s->name, s->host, (unsigned)s->port, srv_state_name(s), s->backup ? "true" : "false",
			          srv_weight_now(s), v ? atomic_load(&v->active) : 0, (unsigned long long)req,
			          (unsigned long long)err, (unsigned long long)bytes);
			ab_printf(b, "\"status\":{\"1xx\":%llu,\"2xx\":%llu,\"3xx\":%llu,\"4xx\":%llu,\"5xx\":%llu,\"none\":%llu},"
			             "\"duration_ms_sum\":%llu,\"health\":\"%s\",\"circuit\":\"%s\",\"retries\":%llu,",
			          (unsigned long long)st[1], (unsigned long long)st[2], (unsigned long long)st[3],
			          (unsigned long long)st[4], (unsigned long long)st[5], (unsigned long long)st[0],
			          (unsigned long long)(v ? atomic_load(&v->dur_sum_ms) : 0),
			          v && atomic_load(&v->down) ? "down" : "up",
			          !v ? "closed" : atomic_load(&v->cb_state) == CB_OPEN ? "open"
			          : atomic_load(&v->cb_state) == CB_HALF ? "half-open" : "closed",
			          (unsigned long long)(v ? atomic_load(&v->retries) : 0));
			stats_server_view(b, s);
		}
		ab_printf(b, "]}");
	}
	ab_printf(b, "],\"routes\":[");
	for (size_t k = 0; k < c->nroutes; k++) {
		const struct lb_route *r = &c->routes[k];
		struct lb_shm_route *v = route_rt(r)->shm;
		ab_printf(b, "%s{\"name\":\"%s\",\"requests\":%llu,\"rate_limited\":%llu,\"denied\":%llu,\"pool\":", k ? "," : "",
		          r->name, (unsigned long long)(v ? atomic_load(&v->requests) : 0),
		          (unsigned long long)(v ? atomic_load(&v->limited) : 0), (unsigned long long)(v ? atomic_load(&v->denied) : 0));
		if (r->pool >= 0)
			ab_printf(b, "\"%s\"", c->pools[r->pool].name);
		else
			ab_printf(b, "null");
		ab_printf(b, ",\"split\":[");
		for (size_t j = 0; j < r->nsplit; j++)
			ab_printf(b, "%s{\"pool\":\"%s\",\"weight\":%u}", j ? "," : "", c->pools[r->split[j].pool].name,
			          v ? atomic_load(&v->weight[j]) : r->split[j].weight);
		double p50, p99;
		route_quantiles(r, &p50, &p99);
		ab_printf(b, "],\"errors\":%llu,\"p50_ms\":", (unsigned long long)(v ? atomic_load(&v->errors) : 0));
		ab_json_ms(b, p50);
		ab_printf(b, ",\"p99_ms\":");
		ab_json_ms(b, p99);
		ab_printf(b, "}");
	}
	stats_listeners(b);
	ab_printf(b, "],\"tls\":{\"handshakes\":%llu,\"resumed\":%llu,\"session_cache_lookups\":%llu,"
	             "\"session_cache_hits\":%llu,\"failures\":{",
	          (unsigned long long)atomic_load(&SHM.tls->handshakes), (unsigned long long)atomic_load(&SHM.tls->resumed),
	          (unsigned long long)atomic_load(&SHM.tls->lookups), (unsigned long long)atomic_load(&SHM.tls->hits));
	for (int k = 0; k < TLS_F_N; k++)
		ab_printf(b, "%s\"%s\":%llu", k ? "," : "", tls_fail_kind[k], (unsigned long long)atomic_load(&SHM.tls->failures[k]));
	ab_printf(b, "},\"certificates\":[");
	int64_t now = (int64_t)(wall_ms() / 1000);
	for (size_t i = 0, n = 0; i < c->nlisteners; i++) {
		const struct lb_listener *l = &c->listeners[i];
		for (size_t k = 0; l->tlsm && k < l->tlsm->ncerts; k++, n++) {
			const struct lb_cert *ct = &l->tlsm->certs[k];
			ab_printf(b, "%s{\"listener\":\"%s\",\"file\":", n ? "," : "", l->name);
			ab_json_str(b, ct->file);
			ab_printf(b, ",\"serial\":\"%s\",\"expires_in_s\":%lld,\"names\":[", ct->info.serial,
			          (long long)(ct->info.not_after - now));
			for (size_t j = 0; j < ct->info.nnames; j++)
				ab_printf(b, "%s\"%s\"", j ? "," : "", ct->info.names[j]);
			ab_printf(b, "]}");
		}
	}
	ab_printf(b, "]}}\n");
}

/* -------------------------------------------------------------------- config file edits */

struct ini_edit {
	const char *sect;       /* "pool api" */
	const char *key;        /* the key of the line to set, add or delete */
	const char *value;      /* set/add: the new value */
	const char *first_word; /* delete: the line whose value starts with this word */
	int add;                /* add a line instead of replacing the first */
};

/* does line [p, e) open section `want` ("kind name", spaces inside collapsed)? */
static int ini_is_section(const char *p, const char *e, const char *want, int *is_header)
{
	while (p < e && (*p == ' ' || *p == '\t'))
		p++;
	while (e > p && isspace((unsigned char)e[-1]))
		e--;
	*is_header = e - p >= 2 && *p == '[' && e[-1] == ']';
	if (!*is_header)
		return 0;
	char name[160];
	size_t n = 0;
	for (const char *q = p + 1; q < e - 1 && n + 1 < sizeof name; q++) {
		if (isspace((unsigned char)*q)) {
			if (n && name[n - 1] != ' ')
				name[n++] = ' ';
		} else {
			name[n++] = *q;
		}
	}
	while (n && name[n - 1] == ' ')
		n--;
	name[n] = 0;
	return !strcmp(name, want);
}

/* is [p, e) a `key = ...` line, and what follows the '=' */
static int ini_is_key(const char *p, const char *e, const char *key, struct lb_str *val)
{
	size_t kn = strlen(key);
	if ((size_t)(e - p) <= kn || memcmp(p, key, kn))
		return 0;
	const char *q = p + kn;
	while (q < e && (*q == ' ' || *q == '\t'))
		q++;
	if (q == e || *q != '=')
		return 0;
	q++;
	while (q < e && (*q == ' ' || *q == '\t'))
		q++;
	*val = (struct lb_str){ q, (size_t)(e - q) };
	return 1;
}

/* The file's text with one line set, added or deleted in one section; NULL when the section
 * (or, to delete, the line) is not there. Comments and every other line stay as they are. */
static char *ini_apply(const char *t, size_t len, const struct ini_edit *ed)
{
	const char *p = t, *end = t + len;
	const char *last_content = NULL, *last_key = NULL, *match = NULL, *match_end = NULL;
	int in = 0;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl + 1 : end, *lend = nl ? nl : end;
		int hdr, is = ini_is_section(p, lend, ed->sect, &hdr);
		if (hdr)
			in = is;
		if (is) {
			last_content = le;
		} else if (in) {
			const char *c = p;
			while (c < lend && (*c == ' ' || *c == '\t' || *c == '\r'))
				c++;
			struct lb_str v, w;
			if (c < lend && *c != ';' && *c != '#') {
				last_content = le;
				if (ini_is_key(p, lend, ed->key, &v)) {
					last_key = le;
					const char *q = v.p;
					int hit = !ed->first_word || (next_word(&q, v.p + v.n, &w) && w.n == strlen(ed->first_word) &&
					                              !memcmp(w.p, ed->first_word, w.n));
					if (hit && !match)
						match = p, match_end = le;
				}
			}
		}
		p = le;
	}
	if (!last_content || (ed->first_word && !match))
		return NULL;
	const char *cut, *resume;
	if (ed->first_word || (!ed->add && match))
		cut = match, resume = match_end; /* delete or replace */
	else
		cut = resume = ed->add && last_key ? last_key : last_content;
	struct abuf out = { 0 };
	ab_put(&out, t, (size_t)(cut - t));
	if (cut > t && cut[-1] != '\n')
		ab_put(&out, "\n", 1);
	if (ed->value)
		ab_printf(&out, "%s = %s\n", ed->key, ed->value);
	ab_put(&out, resume, (size_t)(end - resume));
	if (out.oom) {
		free(out.d);
		return NULL;
	}
	return out.d ? out.d : calloc(1, 1);
}

/* Replace the config file: a temporary beside it, fsync, the old one linked as .bak, rename. */
/* Replace path by text atomically (PATH.tmp, fsync, rename, directory fsync), keeping the
 * previous file as PATH.bak: for the config the API writes and the certificates lb ctl installs. */
static int file_replace(const char *path, const char *text, size_t len, char *err, size_t errlen)
{
	char tmp[4096], bak[4096], dir[4096];
	struct stat st;
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	snprintf(bak, sizeof bak, "%s.bak", path);
	mode_t mode = stat(path, &st) == 0 ? (st.st_mode & 0777) : 0640;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	size_t off = 0;
	while (fd >= 0 && off < len) {
		ssize_t w = write(fd, text + off, len - off);
		if (w <= 0)
			break;
		off += (size_t)w;
	}
	if (fd < 0 || off < len || fsync(fd) != 0) {
		snprintf(err, errlen, "writing %.400s: %s", tmp, strerror(errno));
		if (fd >= 0) {
			close(fd);
			unlink(tmp);
		}
		return -1;
	}
	close(fd);
	unlink(bak);
	if (link(path, bak) != 0 && errno != ENOENT)
		lb_warn("keeping %s as %s: %s", path, bak, strerror(errno));
	if (rename(tmp, path) != 0) {
		snprintf(err, errlen, "renaming %.200s to %.200s: %s", tmp, path, strerror(errno));
		unlink(tmp);
		return -1;
	}
	snprintf(dir, sizeof dir, "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash)
		*(slash == dir ? slash + 1 : slash) = 0;
	int dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	return 0;
}

static int config_write(const char *text, size_t len, char *err, size_t errlen)
{
	return file_replace(M.conf_path, text, len, err, errlen);
}

/* the errors of a config text as the API's JSON into b; 0 when it is valid */
static int config_check(const char *text, size_t len, struct abuf *b)
{
	struct lb_cfg_errors *errs = calloc(1, sizeof *errs);
	if (!errs)
		return -1;
	struct lb_conf *c = conf_validate(text, len, errs);
	int rc = c ? 0 : -1;
	lb_conf_free(c);
	if (rc != 0 && b) {
		ab_printf(b, "{\"valid\":false,\"errors\":[");
		for (int i = 0; i < errs->n; i++) {
			ab_printf(b, "%s{\"line\":%d,\"key\":", i ? "," : "", errs->e[i].line);
			if (errs->e[i].key[0])
				ab_json_str(b, errs->e[i].key);
			else
				ab_printf(b, "null");
			ab_printf(b, ",\"message\":");
			ab_json_str(b, errs->e[i].msg);
			ab_printf(b, "}");
		}
		ab_printf(b, "],\"total\":%d}\n", errs->total);
	}
	free(errs);
	return rc != 0;
}

/* validate, write and reload; the answer says which step failed */
static void config_replace(struct aconn *a, const char *text, size_t len, int ok_status, const char *what)
{
	struct abuf b = { 0 };
	char err[512];
	if (config_check(text, len, &b) != 0) {
		admin_reply(a, 400, "application/json", b.d ? b.d : "", b.n, NULL);
	} else if (config_write(text, len, err, sizeof err) != 0) {
		lb_err("admin: %s: %s", what, err);
		admin_json_error(a, 500, err);
	} else if (master_reload() != 0) {
		admin_json_error(a, 500, "the file was written but the reload failed (see the error log); the old "
		                         "configuration still serves");
	} else {
		lb_info("admin (%s): %s; generation %d serves it", a->peer, what, M.gen);
		ab_printf(&b, "{\"valid\":true,\"reloaded\":true,\"generation\":%d}\n", M.gen);
		admin_reply(a, ok_status, "application/json", b.d ? b.d : "", b.n, NULL);
	}
	free(b.d);
}

static void config_edit(struct aconn *a, const struct ini_edit *ed, int ok_status, const char *what)
{
	size_t len = 0;
	char *t = read_file(M.conf_path, &len);
	if (!t) {
		admin_json_error(a, 500, "cannot read the config file");
		return;
	}
	char *nt = ini_apply(t, len, ed);
	free(t);
	if (!nt) {
		admin_json_error(a, 409, "the config file does not have that section or line (changed on disk?)");
		return;
	}
	config_replace(a, nt, strlen(nt), ok_status, what);
	free(nt);
}

/* -------------------------------------------------------------------- the calls */

static const struct lb_pool *conf_pool_of(const struct lb_conf *c, const char *name)
{
	for (size_t i = 0; i < c->npools; i++)
		if (!strcmp(c->pools[i].name, name))
			return &c->pools[i];
	return NULL;
}

static const struct lb_pool *conf_pool(const char *name) { return conf_pool_of(g_conf, name); }

static const struct lb_server *pool_server(const struct lb_pool *p, const char *name)
{
	for (size_t i = 0; p && i < p->nservers; i++)
		if (!strcmp(p->servers[i].name, name))
			return &p->servers[i];
	return NULL;
}

static void reply_json_buf(struct aconn *a, int status, struct abuf *b)
{
	admin_reply(a, status, "application/json", b->d ? b->d : "", b->n, NULL);
	free(b->d);
	memset(b, 0, sizeof *b);
}

/* drain, enable, disable (w unused) or weight w: the API's calls and the dashboard's form */
static void server_set(const char *peer, const struct lb_admin_call *k, const struct lb_server *s, unsigned w)
{
	char msg[64];
	if (k->op == LB_A_WEIGHT) {
		atomic_store(&srv_rt(s)->shm->weight, w);
		atomic_fetch_add(&SHM.seg->admin_version, 1);
		snprintf(msg, sizeof msg, "weight %u", w);
	} else {
		int st = k->op == LB_A_DRAIN ? ADM_DRAIN : k->op == LB_A_DISABLE ? ADM_DISABLED : ADM_READY;
		if (atomic_exchange(&srv_rt(s)->shm->admin, st) != st)
			atomic_store(&srv_rt(s)->shm->changed_wall_ms, wall_ms());
		snprintf(msg, sizeof msg, "%s", st == ADM_DRAIN ? "drain" : st == ADM_DISABLED ? "disabled" : "enabled");
	}
	lb_info("admin (%s): server %s/%s: %s", peer, k->pool, k->server, msg);
}

static void admin_server_state(struct aconn *a, const struct lb_admin_call *k, const struct lb_server *s, const char *body,
                               size_t blen)
{
	unsigned w = 0;
	if (k->op == LB_A_WEIGHT && lb_parse_weight(body, blen, &w) != 0) {
		admin_json_error(a, 400, "the body must be a weight 1..1000");
		return;
	}
	server_set(a->peer, k, s, w);
	struct abuf b = { 0 };
	ab_printf(&b, "{\"pool\":\"%s\",\"server\":\"%s\",\"state\":\"%s\",\"weight\":%u}\n", k->pool, k->server,
	          srv_state_name(s), srv_weight_now(s));
	reply_json_buf(a, 200, &b);
}

static const struct lb_route *conf_route(const char *name)
{
	for (size_t i = 0; i < g_conf->nroutes; i++)
		if (!strcmp(g_conf->routes[i].name, name))
			return &g_conf->routes[i];
	return NULL;
}

/* the route's split with the body's weights applied, as its config line; 0 or an HTTP status */
static int split_line(const struct lb_route *r, const struct lb_split_spec *sp, unsigned *w, struct abuf *line)
{
	unsigned total = 0;
	for (size_t j = 0; j < r->nsplit; j++)
		w[j] = atomic_load(&route_rt(r)->shm->weight[j]);
	for (size_t i = 0; i < sp->n; i++) {
		size_t j = 0;
		while (j < r->nsplit && strcmp(g_conf->pools[r->split[j].pool].name, sp->name[i]))
			j++;
		if (j == r->nsplit)
			return 400;
		w[j] = sp->weight[i];
	}
	for (size_t j = 0; j < r->nsplit; j++) {
		total += w[j];
		ab_printf(line, "%s%s %u", j ? ", " : "", g_conf->pools[r->split[j].pool].name, w[j]);
	}
	return total && !line->oom ? 0 : 400;
}

static void admin_split(struct aconn *a, const struct lb_admin_call *k, const char *body, size_t blen)
{
	const struct lb_route *r = conf_route(k->route);
	struct lb_split_spec sp;
	unsigned w[LB_ROUTE_MAX_ITEMS];
	struct abuf line = { 0 }, b = { 0 };
	char sect[LB_NAME_MAX + 8], err[512];
	if (!r) {
		admin_json_error(a, 404, "no such route");
		return;
	}
	if (!r->nsplit || !route_rt(r)->shm) {
		admin_json_error(a, 409, "the route has no split (change its pool through /api/config)");
		return;
	}
	if (lb_parse_split(body, blen, &sp) != 0 || split_line(r, &sp, w, &line) != 0) {
		free(line.d);
		admin_json_error(a, 400, "the body must be 'POOL WEIGHT, ...' naming pools of the route's split, weights "
		                         "0..1000, not all 0");
		return;
	}
	/* persisted first: a file that cannot be written must not leave runtime and file apart */
	size_t len = 0;
	snprintf(sect, sizeof sect, "route %.63s", r->name);
	struct ini_edit ed = { sect, "split", line.d, NULL, 0 };
	char *t = read_file(M.conf_path, &len), *nt = t ? ini_apply(t, len, &ed) : NULL;
	free(t);
	if (!nt || config_check(nt, strlen(nt), NULL) != 0 || config_write(nt, strlen(nt), err, sizeof err) != 0) {
		free(nt);
		free(line.d);
		admin_json_error(a, 500, "cannot persist the split in the config file");
		return;
	}
	free(nt);
	for (size_t j = 0; j < r->nsplit; j++)
		atomic_store(&route_rt(r)->shm->weight[j], w[j]);
	atomic_fetch_add(&SHM.seg->admin_version, 1);
	lb_info("admin (%s): route %s: split = %s", a->peer, r->name, line.d);
	ab_printf(&b, "{\"route\":\"%s\",\"split\":\"%s\"}\n", r->name, line.d);
	reply_json_buf(a, 200, &b);
	free(line.d);
}

static void admin_server_add(struct aconn *a, const struct lb_admin_call *k, const char *body, size_t blen)
{
	struct lb_server_spec sp;
	char val[512], sect[LB_NAME_MAX + 8], what[700];
	while (blen && isspace((unsigned char)body[blen - 1]))
		blen--;
	while (blen && isspace((unsigned char)*body))
		body++, blen--;
	const struct lb_pool *p = conf_pool(k->pool);
	if (!p) {
		admin_json_error(a, 404, "no such pool");
		return;
	}
	if (blen >= sizeof val || memchr(body, '\n', blen) || memchr(body, ';', blen) ||
	    lb_parse_server(body, blen, &sp) != 0) {
		admin_json_error(a, 400, blen >= sizeof val ? "server line too long" : sp.error ? sp.error : "bad server line");
		return;
	}
	if (pool_server(p, sp.name)) {
		admin_json_error(a, 409, "the pool already has a server of that name");
		return;
	}
	memcpy(val, body, blen);
	val[blen] = 0;
	snprintf(sect, sizeof sect, "pool %.63s", p->name);
	snprintf(what, sizeof what, "pool %.63s: server = %.511s added", p->name, val);
	struct ini_edit ed = { sect, "server", val, NULL, 1 };
	char key[2 * LB_NAME_MAX];
	snprintf(key, sizeof key, "%s/%s", p->name, sp.name);
	check_first_add(p->name, sp.name);
	config_edit(a, &ed, 201, what);
	check_first_take(key); /* the edit failed before a reload mapped it: forget it */
}

static void admin_server_del(struct aconn *a, const struct lb_admin_call *k)
{
	const struct lb_pool *p = conf_pool(k->pool);
	const struct lb_server *s = pool_server(p, k->server);
	if (!s || !srv_rt(s)->shm) {
		admin_json_error(a, 404, p ? "no such server" : "no such pool");
		return;
	}
	if (p->nservers == 1) {
		admin_json_error(a, 409, "a pool keeps at least one server");
		return;
	}
	int i = 0;
	while (i < LB_ADMIN_REMOVALS && ADM.rm[i].pool[0] &&
	       (strcmp(ADM.rm[i].pool, p->name) || strcmp(ADM.rm[i].server, s->name)))
		i++;
	if (i == LB_ADMIN_REMOVALS) {
		admin_json_error(a, 503, "too many removals under way");
		return;
	}
	snprintf(ADM.rm[i].pool, sizeof ADM.rm[i].pool, "%s", p->name);
	snprintf(ADM.rm[i].server, sizeof ADM.rm[i].server, "%s", s->name);
	ADM.rm[i].deadline = mono_ms() + g_conf->shutdown_timeout;
	atomic_store(&srv_rt(s)->shm->admin, ADM_DRAIN);
	lb_info("admin (%s): server %s/%s: draining; removed once idle", a->peer, p->name, s->name);
	struct abuf b = { 0 };
	ab_printf(&b, "{\"pool\":\"%s\",\"server\":\"%s\",\"state\":\"drain\",\"removal\":\"once idle\"}\n", p->name,
	          s->name);
	reply_json_buf(a, 202, &b);
}

/* master tick: drained servers with nothing in flight leave the file (and so the pools) */
static void admin_removals(void)
{
	for (int i = 0; i < LB_ADMIN_REMOVALS; i++) {
		if (!ADM.rm[i].pool[0])
			continue;
		const struct lb_server *s = pool_server(conf_pool(ADM.rm[i].pool), ADM.rm[i].server);
		if (s && srv_rt(s)->shm && atomic_load(&srv_rt(s)->shm->active) > 0 && mono_ms() < ADM.rm[i].deadline)
			continue;
		char sect[LB_NAME_MAX + 8], what[200];
		snprintf(sect, sizeof sect, "pool %.63s", ADM.rm[i].pool);
		snprintf(what, sizeof what, "pool %.63s: server %.63s removed", ADM.rm[i].pool, ADM.rm[i].server);
		struct ini_edit ed = { sect, "server", NULL, ADM.rm[i].server, 0 };
		struct aconn quiet = { .fd = -1 };
		struct lb_shm_server *v = s ? srv_rt(s)->shm : NULL; /* s dies with its generation at the reload */
		snprintf(quiet.peer, sizeof quiet.peer, "removal");
		if (s) {
			config_edit(&quiet, &ed, 200, what);
			if (quiet.out.d && strncmp(quiet.out.d, "HTTP/1.1 200", 12))
				lb_err("admin: removing server %s/%s failed: %s", ADM.rm[i].pool, ADM.rm[i].server,
				       strstr(quiet.out.d, "\r\n\r\n") ? strstr(quiet.out.d, "\r\n\r\n") + 4 : "?");
			else if (v)
				atomic_store(&v->admin, ADM_READY); /* a server of that name added back starts afresh */
		}
		free(quiet.out.d);
		memset(&ADM.rm[i], 0, sizeof ADM.rm[i]);
	}
}

/* -------------------------------------------------------------------- the dashboard
 * One page, rendered here (tables and SVG sparklines: complete without JavaScript, no asset from
 * elsewhere). Its controls are one HTML form posted to POST / with the token as a field (admin_form);
 * the script only remembers the token in the tab's sessionStorage and refreshes the tables. */

static void ab_html(struct abuf *b, const char *s)
{
	for (; *s; s++) {
		const char *e = *s == '&' ? "&amp;" : *s == '<' ? "&lt;" : *s == '>' ? "&gt;" : *s == '"' ? "&quot;"
		              : *s == '\'' ? "&#39;" : NULL;
		if (e)
			ab_put(b, e, strlen(e));
		else
			ab_put(b, s, 1);
	}
}

static void ab_ms(struct abuf *b, double ms)
{
	if (ms < 0)
		ab_printf(b, "-");
	else if (ms < 10)
		ab_printf(b, "%.2f ms", ms);
	else if (ms < 1000)
		ab_printf(b, "%.0f ms", ms);
	else
		ab_printf(b, "%.2f s", ms / 1000);
}

static void ab_age(struct abuf *b, uint64_t ms)
{
	uint64_t s = ms / 1000;
	if (s < 120)
		ab_printf(b, "%llu s", (unsigned long long)s);
	else if (s < 7200)
		ab_printf(b, "%llu min", (unsigned long long)(s / 60));
	else if (s < 172800)
		ab_printf(b, "%llu h", (unsigned long long)(s / 3600));
	else
		ab_printf(b, "%llu d", (unsigned long long)(s / 86400));
}

static void ab_bytes(struct abuf *b, uint64_t n)
{
	static const char *const unit[] = { "B", "KB", "MB", "GB", "TB" };
	double v = (double)n;
	int u = 0;
	while (v >= 1000 && u < 4)
		v /= 1000, u++;
	ab_printf(b, u ? "%.1f %s" : "%.0f %s", v, unit[u]);
}

/* one series of the ring as an inline SVG polyline over the samples kept (the newest at the right) and
 * its latest value: what 0 requests/s, 1 error %, 2 p99 ms */
static void ab_spark(struct abuf *b, const struct lb_hseries *h, int what)
{
	size_t n = (size_t)LB_MIN(SHM.hist->taken, (uint64_t)LB_HISTORY_N);
	double val[LB_HISTORY_N], max = 0, secs = SHM.hist->interval_ms / 1000.0;
	for (size_t j = 0; j < n; j++) {
		const struct lb_hpoint *pt = &h->pt[(SHM.hist->taken - n + j) % LB_HISTORY_N];
		val[j] = what == 0 ? pt->req / secs : what == 1 ? (pt->req ? 100.0 * pt->err / pt->req : 0)
		       : pt->req && pt->p99_us != UINT32_MAX ? pt->p99_us / 1000.0 : 0;
		max = LB_MAX(max, val[j]);
	}
	static const char *const label[3] = { "requests/s", "errors %", "p99 ms" };
	ab_printf(b, "<svg class=sp data-points=%zu viewBox=\"0 0 %zu 20\" preserveAspectRatio=none role=img>"
	             "<title>%s, %zu samples: max %.2f</title><polyline vector-effect=non-scaling-stroke points=\"", n, n > 1 ? n - 1 : 1, label[what], n, max);
	for (size_t j = 0; j < n; j++)
		ab_printf(b, "%s%zu,%.1f", j ? " " : "", j, 19 - (max > 0 ? 18 * val[j] / max : 0));
	ab_printf(b, "\"/></svg> <span class=now>");
	if (!n)
		ab_printf(b, "-");
	else if (what == 2)
		ab_ms(b, n && h->pt[(SHM.hist->taken - 1) % LB_HISTORY_N].req ? val[n - 1] : -1);
	else
		ab_printf(b, what ? "%.1f%%" : "%.1f", val[n - 1]);
	ab_printf(b, "</span>");
}

static void dash_listeners(struct abuf *b)
{
	const struct lb_conf *c = g_conf;
	uint64_t h2c, h2r;
	h2_totals(&h2c, &h2r);
	ab_printf(b, "<h2>listeners</h2><p id=http2>HTTP/2: %llu connections, %llu requests on their streams</p>"
	             "<div class=tw><table id=listeners><tr><th>listener</th><th>address</th>"
	             "<th>protocol</th><th>HTTP/2</th><th>connections</th><th>accepted</th></tr>",
	          (unsigned long long)h2c, (unsigned long long)h2r);
	for (size_t i = 0; i < c->nlisteners; i++) {
		const struct lb_listener *l = &c->listeners[i];
		char bt[LB_HOST_MAX + 16];
		ab_printf(b, "<tr><td>%s</td><td>", l->name);
		for (size_t k = 0; k < l->nbinds; k++) {
			bind_text(&l->binds[k], bt, sizeof bt);
			ab_printf(b, "%s", k ? ", " : "");
			ab_html(b, bt);
		}
		ab_printf(b, "</td><td>%s</td><td>%s</td><td>%llu</td><td>%llu</td></tr>", listener_protocol(l),
		          !lb_listener_h2(l) ? "-" : l->tls ? "h2" : "h2c",
		          (unsigned long long)listener_active(l), (unsigned long long)(lsn_rt(l)->shm ? atomic_load(&lsn_rt(l)->shm->accepted) : 0));
	}
	ab_printf(b, "</table></div>");
}

static void dash_server(struct abuf *b, const struct lb_pool *p, const struct lb_server *s)
{
	struct lb_shm_server *v = srv_rt(s)->shm;
	struct srv_view w;
	uint64_t req = 0, err = 0, bytes = 0;
	if (!v)
		return;
	srv_view_of(s, &w);
	shm_server_totals(v, &req, &err, &bytes);
	const char *st = srv_state_name(s);
	ab_printf(b, "<tr data-server=\"%s/%s\"><td>%s%s</td><td class=\"st %s\">%s</td><td class=why>", p->name, s->name,
	          s->name, s->backup ? " (backup)" : "", st, st);
	ab_html(b, w.reason);
	ab_printf(b, "</td><td>%u</td><td>%u</td><td>%llu</td><td>%llu</td><td>%llu</td><td>%llu</td><td>", srv_weight_now(s),
	          atomic_load(&v->active), (unsigned long long)req, (unsigned long long)atomic_load(&v->status[2]),
	          (unsigned long long)atomic_load(&v->status[4]), (unsigned long long)atomic_load(&v->status[5]));
	ab_bytes(b, bytes);
	ab_printf(b, "</td><td>");
	ab_ms(b, w.p50);
	ab_printf(b, "</td><td>");
	ab_ms(b, w.p99);
	ab_printf(b, "</td><td class=chk>");
	if (!w.checked) {
		ab_printf(b, p->hc_kind == LB_HC_OFF ? "off" : "none yet");
	} else {
		ab_printf(b, "<span class=%s>", w.check_ok ? "ok" : "bad");
		ab_html(b, w.check_ok ? "ok" : w.check_why);
		ab_printf(b, "</span> in ");
		ab_ms(b, w.check_us / 1000.0);
		ab_printf(b, ", ");
		ab_age(b, w.check_age_ms);
		ab_printf(b, " ago");
	}
	ab_printf(b, "</td><td>");
	ab_age(b, w.changed_age_ms);
	ab_printf(b, "</td><td>%llu / %llu / %llu</td><td class=act>", (unsigned long long)atomic_load(&v->n_checks),
	          (unsigned long long)atomic_load(&v->n_check_fails), (unsigned long long)atomic_load(&v->n_down));
	ab_printf(b, "<input name=\"w.%s/%s\" value=%u size=3 inputmode=numeric aria-label=\"weight of %s\">"
	             "<button name=do value=\"weight %s/%s\">weight</button>",
	          p->name, s->name, srv_weight_now(s), s->name, p->name, s->name);
	static const char *const act[3] = { "drain", "enable", "disable" };
	for (int i = 0; i < 3; i++)
		ab_printf(b, " <button name=do value=\"%s %s/%s\">%s</button>", act[i], p->name, s->name, act[i]);
	ab_printf(b, "</td><td>");
	ab_html(b, s->host);
	ab_printf(b, ":%u</td></tr>", (unsigned)s->port);
}

static void dash_pools(struct abuf *b)
{
	static const char *const algo[] = { "round_robin", "least_conn", "ip_hash", "random2" };
	const struct lb_conf *c = g_conf;
	for (size_t p = 0; p < c->npools; p++) {
		const struct lb_pool *pl = &c->pools[p];
		ab_printf(b, "<h2>pool %s <small>%s</small></h2><div class=tw><table class=servers data-pool=\"%s\"><tr>"
		             "<th>server</th><th>state</th><th class=l>why</th><th>weight</th><th>active</th>"
		             "<th>requests</th><th>2xx</th><th>4xx</th><th>5xx</th><th>sent</th><th>p50</th><th>p99</th>"
		             "<th class=l>last check</th><th>since change</th><th>checks/failed/down</th><th>change</th>"
		             "<th>address</th></tr>",
		          pl->name, algo[pl->algorithm], pl->name);
		for (size_t k = 0; k < pl->nservers; k++)
			dash_server(b, pl, &pl->servers[k]);
		ab_printf(b, "</table></div>");
	}
}

static void dash_history(struct abuf *b)
{
	const struct lb_conf *c = g_conf;
	ab_printf(b, "<h2>history <small>the last ");
	ab_age(b, SHM.hist->interval_ms * LB_HISTORY_N);
	ab_printf(b, ", a sample every %.3g s</small></h2><div class=tw><table id=history><tr><th>server / route</th>"
	             "<th>requests/s</th><th>errors</th><th>p99</th></tr>", SHM.hist->interval_ms / 1000.0);
	for (size_t p = 0; p < c->npools; p++)
		for (size_t k = 0; k < c->pools[p].nservers; k++) {
			const struct lb_server *s = &c->pools[p].servers[k];
			if (!srv_rt(s)->shm)
				continue;
			const struct lb_hseries *h = &SHM.hist->s[srv_rt(s)->shm - SHM.seg->s];
			ab_printf(b, "<tr data-series=\"server %s/%s\"><td>%s/%s</td>", c->pools[p].name, s->name, c->pools[p].name,
			          s->name);
			for (int what = 0; what < 3; what++) {
				ab_printf(b, "<td>");
				ab_spark(b, h, what);
				ab_printf(b, "</td>");
			}
			ab_printf(b, "</tr>");
		}
	for (size_t k = 0; k < c->nroutes; k++) {
		const struct lb_route *r = &c->routes[k];
		if (!route_rt(r)->shm)
			continue;
		ab_printf(b, "<tr data-series=\"route %s\"><td>route %s</td>", r->name, r->name);
		for (int what = 0; what < 3; what++) {
			ab_printf(b, "<td>");
			ab_spark(b, &SHM.hist->r[route_rt(r)->shm - SHM.seg->r], what);
			ab_printf(b, "</td>");
		}
		ab_printf(b, "</tr>");
	}
	ab_printf(b, "</table></div>");
}

static void dash_routes(struct abuf *b)
{
	const struct lb_conf *c = g_conf;
	if (!c->nroutes)
		return;
	ab_printf(b, "<h2>routes</h2><div class=tw><table id=routes><tr><th>route</th><th>requests</th><th>errors</th>"
	             "<th>rate limited</th><th>denied</th><th>p50</th><th>p99</th><th>target</th></tr>");
	for (size_t k = 0; k < c->nroutes; k++) {
		const struct lb_route *r = &c->routes[k];
		struct lb_shm_route *v = route_rt(r)->shm;
		double p50, p99;
		route_quantiles(r, &p50, &p99);
		ab_printf(b, "<tr><td>%s</td><td>%llu</td><td>%llu</td><td>%llu</td><td>%llu</td><td>", r->name,
		          (unsigned long long)(v ? atomic_load(&v->requests) : 0), (unsigned long long)(v ? atomic_load(&v->errors) : 0),
		          (unsigned long long)(v ? atomic_load(&v->limited) : 0), (unsigned long long)(v ? atomic_load(&v->denied) : 0));
		ab_ms(b, p50);
		ab_printf(b, "</td><td>");
		ab_ms(b, p99);
		ab_printf(b, "</td><td>");
		if (r->pool >= 0)
			ab_printf(b, "pool %s", c->pools[r->pool].name);
		for (size_t j = 0; j < r->nsplit; j++)
			ab_printf(b, "%s%s %u", j ? ", " : "split ", c->pools[r->split[j].pool].name,
			          v ? atomic_load(&v->weight[j]) : r->split[j].weight);
		ab_printf(b, "</td></tr>");
	}
	ab_printf(b, "</table></div>");
}

static void dash_certs(struct abuf *b)
{
	const struct lb_conf *c = g_conf;
	int64_t now = (int64_t)(wall_ms() / 1000);
	int any = 0;
	for (size_t i = 0; i < c->nlisteners; i++) {
		const struct lb_listener *l = &c->listeners[i];
		for (size_t k = 0; l->tlsm && k < l->tlsm->ncerts; k++) {
			const struct lb_cert *ct = &l->tlsm->certs[k];
			int64_t left = ct->info.not_after - now, days = left >= 0 ? left / 86400 : -((-left + 86399) / 86400);
			if (!any++)
				ab_printf(b, "<h2>certificates</h2><div class=tw><table id=certs><tr><th>listener</th><th>names</th>"
				             "<th>file</th><th>serial</th><th>days left</th></tr>");
			ab_printf(b, "<tr><td>%s</td><td>", l->name);
			for (size_t j = 0; j < ct->info.nnames; j++) {
				ab_printf(b, "%s", j ? ", " : "");
				ab_html(b, ct->info.names[j]);
			}
			ab_printf(b, "</td><td>");
			ab_html(b, ct->file);
			ab_printf(b, "</td><td>");
			ab_html(b, ct->info.serial);
			ab_printf(b, "</td><td class=%s>%lld</td></tr>", days < 0 ? "bad" : days < 14 ? "warn" : "ok", (long long)days);
		}
	}
	if (any)
		ab_printf(b, "</table></div>");
}

static const char g_dash_head[] =
	"<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content=\"width=device-width,"
	"initial-scale=1\"><title>lb</title><style>"
	"body{font:14px system-ui,sans-serif;margin:.8em;color:#222;max-width:100%}h1{font-size:1.3em;margin:.2em 0}"
	"h2{font-size:1.1em;margin:1em 0 .3em}small{color:#666;font-weight:normal}"
	".tw{overflow-x:auto;max-width:100%}table{border-collapse:collapse}td,th{padding:.2em .5em;"
	"border-bottom:1px solid #ddd;text-align:right;white-space:nowrap}th{background:#f4f4f4;font-weight:600}"
	"td:first-child,th:first-child,td.why,td.chk{text-align:left}td.why,td.chk{white-space:normal;min-width:12em}td.why{color:#a00}th.l{text-align:left}"
	".up,.ok{color:#080}.down,.circuit-open,.bad{color:#c00;font-weight:bold}.drain,.disabled,.circuit-half-open,.warn"
	"{color:#b60}svg.sp{width:120px;height:22px;vertical-align:middle;stroke:#36c;fill:none;stroke-width:1.2}"
	"td.act input{width:3em}button{font-size:12px}p{margin:.3em 0}</style></head><body>";

/* the script: remember the token, refresh the tables every 5 s (not while an input is being edited) */
static const char g_dash_script[] =
	"<script>'use strict';(function(){const f=document.getElementById('f'),t=document.getElementById('tok');"
	"t.value=sessionStorage.getItem('lbtok')||'';f.addEventListener('submit',()=>sessionStorage.setItem('lbtok',t.value));"
	"async function refresh(){const a=document.activeElement;if(a&&a.tagName==='INPUT'&&a!==t)return;"
	"try{const r=await fetch('/',{cache:'no-store'});const d=new DOMParser().parseFromString(await r.text(),'text/html');"
	"const n=d.getElementById('live'),u=d.getElementById('upd');if(n){document.getElementById('live').replaceWith(n);"
	"document.getElementById('upd').textContent=u.textContent}}catch(e){document.getElementById('upd').textContent="
	"'refresh failed: '+e}}setInterval(refresh,5000)})();</script>";

static void admin_dashboard(struct abuf *b)
{
	uint64_t now = wall_ms();
	time_t t = (time_t)(now / 1000);
	struct tm tm;
	char when[32];
	gmtime_r(&t, &tm);
	strftime(when, sizeof when, "%H:%M:%S UTC", &tm);
	ab_put(b, g_dash_head, sizeof g_dash_head - 1);
	ab_printf(b, "<h1>lb %s</h1><p>generation %d, %d workers, up ", LB_VERSION, M.gen, live_workers());
	ab_age(b, now - SHM.seg->started_wall_ms);
	ab_printf(b, "%s. <span id=upd>as of %s</span></p>", M.mstop ? ", stopping" : "", when);
	ab_printf(b, "<form method=post action=\"/\" id=f><button type=submit disabled hidden></button>"
	             "<p><label>token for changes <input type=password name=token id=tok size=20 "
	             "autocomplete=current-password></label></p><div id=live>");
	dash_listeners(b);
	dash_pools(b);
	dash_history(b);
	dash_routes(b);
	dash_certs(b);
	ab_printf(b, "</div></form>");
	ab_put(b, g_dash_script, sizeof g_dash_script - 1);
	ab_printf(b, "</body></html>\n");
}

/* GET / renders the page; its controls post here. The token is a field of the form (a browser form
 * cannot send an Authorization header); it is checked like the header's, in constant time. */
static void admin_form_error(struct aconn *a, int status, const char *msg)
{
	struct abuf b = { 0 };
	ab_printf(&b, "<!doctype html><meta charset=utf-8><title>lb</title><p>");
	ab_html(&b, msg);
	ab_printf(&b, "</p><p><a href=\"/\">back to the dashboard</a></p>\n");
	admin_reply(a, status, "text/html; charset=utf-8", b.d ? b.d : "", b.n, NULL);
	free(b.d);
}

static void admin_form(struct aconn *a, const char *body, size_t blen)
{
	struct lb_form_action f;
	struct lb_admin_call k;
	if (lb_parse_form_action(body, blen, &f) != 0) {
		admin_form_error(a, 400, f.error);
		return;
	}
	if (!admin_token_eq(f.token, f.token_len)) {
		lb_err("admin (%s): dashboard form refused: %s", a->peer,
		       ADM.token_len ? "missing or wrong token" : "no token_file configured");
		admin_form_error(a, 401, ADM.token_len ? "the token is missing or wrong"
		                                           : "no [admin] token_file is configured: changes are refused");
		return;
	}
	const struct lb_pool *p = conf_pool(f.pool);
	const struct lb_server *s = pool_server(p, f.server);
	if (!s || !srv_rt(s)->shm) {
		admin_form_error(a, 404, p ? "no such server" : "no such pool");
		return;
	}
	memset(&k, 0, sizeof k);
	k.op = f.op;
	snprintf(k.pool, sizeof k.pool, "%s", f.pool);
	snprintf(k.server, sizeof k.server, "%s", f.server);
	server_set(a->peer, &k, s, f.weight);
	static const char done[] = "<!doctype html><meta charset=utf-8><title>lb</title><p><a href=\"/\">done</a></p>\n";
	admin_reply(a, 303, "text/html; charset=utf-8", done, sizeof done - 1, "Location: /\r\n");
}

static void admin_call(struct aconn *a, const struct lb_req *rq, const char *body, size_t blen)
{
	struct lb_admin_call k;
	struct abuf b = { 0 };
	if (lb_admin_route(rq->method.p, rq->method.n, rq->target.p, rq->target.n, &k) != 0) {
		admin_json_error(a, k.status, k.error);
		return;
	}
	if (k.mutating && !admin_token_ok(rq)) {
		lb_info("admin (%s): %.*s %.*s refused: %s", a->peer, (int)rq->method.n, rq->method.p, (int)rq->target.n,
		        rq->target.p, ADM.token_len ? "missing or wrong bearer token" : "no token_file configured");
		admin_json_error(a, 401, ADM.token_len ? "a valid Authorization: Bearer token is required"
		                                           : "no [admin] token_file is configured: changes are refused");
		return;
	}
	const struct lb_pool *p;
	const struct lb_server *s;
	switch (k.op) {
	case LB_A_HEALTHZ:
		if (M.mstop || live_workers() == 0)
			admin_reply(a, 503, "text/plain", "draining\n", 9, NULL);
		else
			admin_reply(a, 200, "text/plain", "ok\n", 3, NULL);
		break;
	case LB_A_METRICS:
		admin_metrics(&b);
		admin_reply(a, 200, "text/plain; version=0.0.4", b.d ? b.d : "", b.n, NULL);
		break;
	case LB_A_STATS:
		admin_stats(&b);
		admin_reply(a, 200, "application/json", b.d ? b.d : "", b.n, NULL);
		break;
	case LB_A_DASHBOARD:
		admin_dashboard(&b);
		admin_reply(a, 200, "text/html; charset=utf-8", b.d ? b.d : "", b.n,
		            "Content-Security-Policy: default-src 'self'; script-src 'unsafe-inline'; "
		            "style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'\r\n");
		break;
	case LB_A_HISTORY:
		admin_history(&b);
		admin_reply(a, 200, "application/json", b.d ? b.d : "", b.n, NULL);
		break;
	case LB_A_FORM:
		admin_form(a, body, blen);
		break;
	case LB_A_RELOAD:
		if (master_reload() == 0) {
			lb_info("admin (%s): reload; generation %d serves", a->peer, M.gen);
			ab_printf(&b, "{\"reloaded\":true,\"generation\":%d}\n", M.gen);
			admin_reply(a, 200, "application/json", b.d ? b.d : "", b.n, NULL);
		} else {
			admin_json_error(a, 500, "reload failed (see the error log); the old configuration still serves");
		}
		break;
	case LB_A_CONFIG:
		if (!k.dry_run)
			config_replace(a, body, blen, 200, "configuration replaced");
		else if (config_check(body, blen, &b) != 0)
			admin_reply(a, 400, "application/json", b.d ? b.d : "", b.n, NULL);
		else
			admin_reply(a, 200, "application/json", "{\"valid\":true}\n", 15, NULL);
		break;
	case LB_A_SERVER_ADD:
		admin_server_add(a, &k, body, blen);
		break;
	case LB_A_SERVER_DEL:
		admin_server_del(a, &k);
		break;
	case LB_A_SPLIT:
		admin_split(a, &k, body, blen);
		break;
	default: /* drain, enable, disable, weight */
		p = conf_pool(k.pool);
		s = pool_server(p, k.server);
		if (!s || !srv_rt(s)->shm)
			admin_json_error(a, 404, p ? "no such server" : "no such pool");
		else
			admin_server_state(a, &k, s, body, blen);
		break;
	}
	free(b.d);
}

/* bytes arrived: once the head and its body are complete, answer */
static void admin_step(struct aconn *a)
{
	int rc = lb_parse_request(a->in, a->n, &ADM.req);
	if (rc == LB_EAGAIN) {
		if (a->n >= LB_ADMIN_MAX_HEAD)
			admin_json_error(a, 431, "request head too large");
		return;
	}
	if (rc < 0) {
		admin_json_error(a, ADM.req.status ? ADM.req.status : 400, ADM.req.error ? ADM.req.error : "invalid request");
		return;
	}
	a->head_done = 1;
	if (ADM.req.flags & LB_HF_CHUNKED) {
		admin_json_error(a, 411, "send the body with a Content-Length");
		return;
	}
	if (ADM.req.content_length > (int64_t)LB_ADMIN_MAX_BODY) {
		admin_json_error(a, 413, "body larger than 1 MiB");
		return;
	}
	size_t need = (size_t)rc + (size_t)(ADM.req.content_length > 0 ? ADM.req.content_length : 0);
	if (a->n < need)
		return;
	admin_call(a, &ADM.req, a->in + rc, need - (size_t)rc);
}

static void admin_read(struct aconn *a)
{
	if (a->n == a->cap) {
		size_t cap = LB_MIN(a->cap ? a->cap * 2 : 4096, (size_t)LB_ADMIN_MAX_HEAD + LB_ADMIN_MAX_BODY);
		char *d = cap > a->cap ? realloc(a->in, cap) : NULL;
		if (!d) {
			aconn_close(a);
			return;
		}
		a->in = d;
		a->cap = cap;
	}
	ssize_t n = recv(a->fd, a->in + a->n, a->cap - a->n, 0);
	if (n <= 0) {
		if (n == 0 || !io_again())
			aconn_close(a);
		return;
	}
	a->n += (size_t)n;
	admin_step(a);
}

static void admin_write(struct aconn *a)
{
	while (a->sent < a->out.n) {
		ssize_t n = send(a->fd, a->out.d + a->sent, a->out.n - a->sent, MSG_NOSIGNAL);
		if (n < 0) {
			if (!io_again())
				aconn_close(a);
			return;
		}
		a->sent += (size_t)n;
	}
	aconn_close(a);
}

/* the master's poll set: the admin socket and its connections, appended at fds[*n] */
static void admin_poll_fds(struct pollfd *fds, size_t *n)
{
	if (ADM.fd >= 0 && mono_ms() >= ADM.paused_until)
		fds[(*n)++] = (struct pollfd){ ADM.fd, POLLIN, 0 };
	for (int i = 0; i < ADM.slots; i++)
		if (ADM.ac[i].fd > 0)
			fds[(*n)++] = (struct pollfd){ ADM.ac[i].fd, ADM.ac[i].writing ? POLLOUT : POLLIN, 0 };
}

static void admin_events(const struct pollfd *fds, size_t n)
{
	uint64_t now = mono_ms();
	for (size_t i = 0; i < n; i++) {
		if (!fds[i].revents)
			continue;
		if (fds[i].fd == ADM.fd) {
			admin_accept();
			continue;
		}
		for (int k = 0; k < ADM.slots; k++) {
			if (ADM.ac[k].fd != fds[i].fd)
				continue;
			if (!ADM.ac[k].writing)
				admin_read(&ADM.ac[k]);
			if (ADM.ac[k].fd > 0 && ADM.ac[k].writing)
				admin_write(&ADM.ac[k]);
		}
	}
	for (int k = 0; k < ADM.slots; k++) {
		if (ADM.ac[k].fd <= 0)
			continue;
		if (!ADM.ac[k].head_done && !ADM.ac[k].writing && now > ADM.ac[k].accepted + LB_ADMIN_HEAD_MS) {
			aconn_close(&ADM.ac[k]);
			ADM.note.head_timeout++;
		} else if (now > ADM.ac[k].deadline) {
			aconn_close(&ADM.ac[k]);
		}
	}
	admin_note_flush(now);
	admin_removals();
}

/* ==================================================================== 14. access log
 * One line per exchange (or TCP session), combined, JSON or a template of fields (log_field: one
 * field in either form; the µs timers), with its termination state (set_term, term_of_answer),
 * gathered in a buffer that is written once per loop turn. Lines reach the log whole or not at all: a
 * line that does not fit the buffer is not started, and a write cut short (disk full, I/O error) is
 * taken back to the last whole line (acclog_untail). Lost lines are counted (lb_log_lines_dropped_total,
 * in the worker's shared-memory column) and said in the error log at most once a second.
 * Owns ACC (the buffer, lost lines). Calls sections 2, 3, 6, 7 (tls_log_info: a connection's TLS version
 * and cipher), 8 and 12. */

/* -------------------------------------------------------------------- lost lines, said once a second
 * acclog_warn: the first loss is said at once, later ones at most once a second with their
 * count. It sums lines (a write cut short loses many at once), where log_throttled counts
 * events, hence its own small sum. */
struct acclog_warn {
	uint64_t next_ms, pending;
	char why[96];
};

/* ---- struct lb_acclog ACC: the access log's buffer (gathered by gather_globals.py)
 * Lines gathered in a loop turn, a write cut short, lost lines to say. Owner: section 14; written by
 * the worker that serves (flushed each loop turn): empty when the master forks. The fuzzer keeps it
 * across inputs (its writes go nowhere).
 */
static struct lb_acclog {
	char buf[65536];
	size_t len;
	int over; /* log_raw had no room: the line being written is incomplete */
	int err; /* errno of the last write that failed */
	struct acclog_warn warn;
} ACC;

static void acclog_warn_say(int now_anyway)
{
	struct acclog_warn *w = &ACC.warn;
	if (!w->pending)
		return;
	uint64_t now = mono_ms();
	if (!now_anyway && now < w->next_ms)
		return;
	lb_err("access log: %llu line%s dropped: %s", (unsigned long long)w->pending, w->pending == 1 ? "" : "s",
	       w->why);
	w->pending = 0;
	w->next_ms = now + 1000;
}

static size_t count_lines(const char *p, size_t n)
{
	size_t k = 0;
	for (const char *e = p + n; (p = memchr(p, '\n', (size_t)(e - p))); p++)
		k++;
	return k;
}

static void acclog_dropped(size_t lines, const char *why)
{
	if (!lines)
		return;
	if (SHM.seg)
		atomic_fetch_add_explicit(P.slot >= 0 ? &SHM.seg->w[P.slot].log_dropped : &SHM.seg->log_dropped_retired,
		                          lines, memory_order_relaxed);
	ACC.warn.pending += lines;
	snprintf(ACC.warn.why, sizeof ACC.warn.why, "%s", why);
	acclog_warn_say(0);
}

/* A write cut short left `cut` bytes of a line (frag) at the end of a regular file: take them
 * back with ftruncate, once the file's last bytes are checked to be ours (O_APPEND: another
 * worker's line written after ours would be cut instead; then ours stays, and is told). */
static int acclog_untail(int fd, const char *frag, size_t cut)
{
	char tail[4096];
	struct stat sb;
	if (cut > sizeof tail || fstat(fd, &sb) != 0 || (uint64_t)sb.st_size < cut)
		return -1;
	off_t at = sb.st_size - (off_t)cut;
	if (pread(fd, tail, cut, at) != (ssize_t)cut || memcmp(tail, frag, cut) != 0)
		return -1;
	return ftruncate(fd, at);
}

/* A write stopped at `off` of ACC.len bytes with errno err: returns how many bytes are done
 * with. A regular file loses the lines from the cut one on (its fragment taken back); a pipe,
 * socket or terminal keeps them for the next turn (a cut line must be completed there), and
 * lines that no longer fit the buffer are counted as they come (access_log_write). */
static size_t acclog_short_write(size_t off, int err)
{
	struct stat sb;
	ACC.err = err;
	if (fstat(P.accfd, &sb) != 0 || !S_ISREG(sb.st_mode))
		return off;
	const char *nl = off ? memrchr(ACC.buf, '\n', off) : NULL;
	size_t whole = nl ? (size_t)(nl - ACC.buf) + 1 : 0, cut = off - whole;
	char why[96];
	snprintf(why, sizeof why, "%s", strerror(err));
	if (cut && acclog_untail(P.accfd, ACC.buf + whole, cut) != 0)
		snprintf(why, sizeof why, "%s (and a cut line could not be taken back)", strerror(err));
	acclog_dropped(count_lines(ACC.buf + whole, ACC.len - whole), why);
	return ACC.len;
}

static void log_flush(void)
{
	size_t off = 0;
	while (off < ACC.len && P.accfd >= 0) {
		ssize_t n = write(P.accfd, ACC.buf + off, ACC.len - off);
		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			off = acclog_short_write(off, n < 0 ? errno : EIO);
			break;
		}
		off += (size_t)n;
	}
	if (off && off < ACC.len)
		memmove(ACC.buf, ACC.buf + off, ACC.len - off);
	ACC.len = off < ACC.len && P.accfd >= 0 ? ACC.len - off : 0;
	acclog_warn_say(0);
}

/* before a switch of file or an exit: what cannot be written now is lost, and said */
static void log_flush_last(void)
{
	log_flush();
	acclog_dropped(count_lines(ACC.buf, ACC.len), "not written before the log was switched or lb stopped");
	ACC.len = 0;
	acclog_warn_say(1);
}

static void log_raw(const char *s, size_t n)
{
	if (n > sizeof ACC.buf - ACC.len) {
		ACC.over = 1; /* access_log_write drops the line */
		return;
	}
	memcpy(ACC.buf + ACC.len, s, n);
	ACC.len += n;
}

static void log_str(const char *s) { log_raw(s, strlen(s)); }

/* json: quotes, backslash and non-printable bytes as \u00XX; combined: \" \\ and \xHH */
static void log_esc(const char *s, size_t n, int json)
{
	char t[8];
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '"' || ch == '\\') {
			t[0] = '\\', t[1] = (char)ch;
			log_raw(t, 2);
		} else if (ch < 0x20 || ch >= 0x7f) {
			snprintf(t, sizeof t, json ? "\\u%04x" : "\\x%02X", ch);
			log_raw(t, strlen(t));
		} else {
			log_raw((const char *)&ch, 1);
		}
	}
}

static void access_log_line(struct conn *c);
static void access_log_put(struct conn *c);

/* the end of an exchange: counted, logged; the next request's clock starts at its first byte */
static void access_log_write(struct conn *c)
{
	count_exchange(c);
	access_log_put(c);
	c->us_start = 0;
}

/* A whole line or none: one that does not fit the buffer is taken out again and counted. */
static void access_log_put(struct conn *c)
{
	if (P.accfd < 0 || !g_conf->access_log)
		return;
	if (ACC.len > sizeof ACC.buf - 4096)
		log_flush();
	size_t start = ACC.len;
	ACC.over = 0;
	access_log_line(c);
	if (ACC.over && start) { /* no room behind the lines waiting: write them, then again */
		ACC.len = start;
		log_flush();
		start = ACC.len;
		ACC.over = 0;
		access_log_line(c);
	}
	if (ACC.over) {
		ACC.len = start;
		char why[96] = "the line is longer than the 64 KB buffer";
		if (ACC.len)
			snprintf(why, sizeof why, "the log buffer is full (%s)", strerror(ACC.err));
		acclog_dropped(1, why);
	}
}

/* -------------------------------------------------------------------- the fields
 * Every format is made of the fields of lb_log_field_names: combined is its fixed selection, json all
 * of them (a key each, in that order), a template those it names. The timers are µs from the request's
 * first byte (us_start): t_request_us (HAProxy's TR) until its head was whole, t_connect_us (Tw + Tc)
 * until a server connection was ready (retries included), t_first_byte_us (Tr) from then until the
 * server's first response byte, t_total_us (Tt) until the line; -1 when not reached. */

static void log_num(int64_t v)
{
	char nb[24];
	snprintf(nb, sizeof nb, "%lld", (long long)v);
	log_str(nb);
}

/* a string field: json quotes it (null when absent), the others escape it ("-" when absent) */
static void log_text(const char *p, size_t n, int json)
{
	if (!p) {
		log_str(json ? "null" : "-");
		return;
	}
	if (json)
		log_str("\"");
	log_esc(p, n, json);
	if (json)
		log_str("\"");
}

static void log_ctext(const char *p, int json) { log_text(p, p ? strlen(p) : 0, json); }

static void log_qh(const struct conn *c, uint32_t off, uint32_t len, int json)
{
	log_text(c->qh.d && len && off + len <= c->qh.e ? c->qh.d + off : NULL, len, json);
}

static int64_t us_since(uint64_t from, uint64_t to) { return from && to >= from ? (int64_t)(to - from) : -1; }

static void log_field(struct conn *c, int f, int json, uint64_t now_us)
{
	char nb[80];
	int tcp = c->L->mode == LB_MODE_TCP;
	const char *tv = "-", *tcph = "-";
	const struct tls_conn *tc = client_tls(c); /* an HTTP/2 stream's is its connection's */
	switch (f) {
	case LB_LF_TIME: {
		time_t secs = (time_t)(c->wall_start_ms / 1000);
		struct tm tm;
		gmtime_r(&secs, &tm);
		size_t n = strftime(nb, sizeof nb, "%Y-%m-%dT%H:%M:%S", &tm);
		snprintf(nb + n, sizeof nb - n, ".%03dZ", (int)(c->wall_start_ms % 1000));
		log_ctext(nb, json);
		return;
	}
	case LB_LF_CLIENT: log_ctext(ip_text(&c->ip), json); return;
	case LB_LF_METHOD:
		if (tcp || !c->lg_mlen)
			log_ctext(tcp ? "TCP" : "-", json);
		else
			log_qh(c, 0, c->lg_mlen, json);
		return;
	case LB_LF_URI:
		if (tcp || !c->lg_mlen)
			log_ctext("-", json);
		else
			log_qh(c, c->lg_mlen + 1, c->lg_ulen, json);
		return;
	case LB_LF_PROTO:
		log_ctext(tcp ? "TCP" : CONN_IS_STREAM(c) ? "HTTP/2.0" : !c->lg_parsed ? NULL : c->req_minor ? "HTTP/1.1" : "HTTP/1.0", json);
		return;
	case LB_LF_STATUS: log_num(c->resp_status); return;
	case LB_LF_BYTES: log_num((int64_t)c->bytes_out); return;
	case LB_LF_BYTES_IN: log_num((int64_t)(tcp ? c->bytes_in : c->req_bytes)); return;
	case LB_LF_TERM:
		nb[0] = c->term[0] ? c->term[0] : '-', nb[1] = c->term[0] ? c->term[1] : '-', nb[2] = 0;
		log_ctext(nb, json);
		return;
	case LB_LF_DURATION_MS: {
		int64_t us = us_since(c->us_start, now_us);
		us = us < 0 ? 0 : us;
		snprintf(nb, sizeof nb, "%lld.%03lld", (long long)(us / 1000), (long long)(us % 1000));
		log_str(nb);
		return;
	}
	case LB_LF_T_REQUEST: log_num(us_since(c->us_start, c->us_head)); return;
	case LB_LF_T_CONNECT: log_num(us_since(c->us_head ? c->us_head : c->us_start, c->us_ready)); return;
	case LB_LF_T_FIRST_BYTE: log_num(c->us_first ? us_since(c->us_ready, c->us_first) : -1); return;
	case LB_LF_T_TOTAL: log_num(us_since(c->us_start, now_us)); return;
	case LB_LF_LISTENER: log_ctext(c->L->name, json); return;
	case LB_LF_ROUTE: log_ctext(c->route ? c->route->name : NULL, json); return;
	case LB_LF_POOL: log_ctext(c->pool ? c->pool->name : NULL, json); return;
	case LB_LF_SERVER: log_ctext(c->srv ? c->srv->name : NULL, json); return;
	case LB_LF_SERVER_ADDR:
		log_ctext(c->srv ? srv_addr(c->srv) : NULL, json);
		return;
	case LB_LF_RETRIES: log_num(c->nretries); return;
	case LB_LF_HOST: log_qh(c, c->lg_host_off, c->lg_host_len, json); return;
	case LB_LF_USER_AGENT: log_qh(c, c->lg_ua_off, c->lg_ua_len, json); return;
	case LB_LF_REFERER: log_qh(c, c->lg_ref_off, c->lg_ref_len, json); return;
	case LB_LF_REQUEST_ID: log_qh(c, c->lg_id_off, c->lg_id_len, json); return;
	case LB_LF_TLS: log_str(tc ? (json ? "true" : "on") : (json ? "false" : "off")); return;
	case LB_LF_TLS_VERSION:
	case LB_LF_TLS_CIPHER:
		if (tc)
			tls_log_info(tc, &tv, &tcph);
		log_ctext(!tc ? NULL : f == LB_LF_TLS_VERSION ? tv : tcph, json);
		return;
	case LB_LF_SNI: log_ctext(tc ? tls_sni(tc) : NULL, json); return;
	case LB_LF_CLIENT_CERT: log_ctext(tc && tc->subject[0] ? tc->subject : NULL, json); return;
	case LB_LF_WORKER: log_num(P.worker_id); return;
	case LB_LF_PID: log_num((int64_t)P.pid); return;
	}
}

static void access_log_json(struct conn *c, uint64_t now_us)
{
	for (int f = 0; f < LB_LF_N; f++) {
		log_str(f ? ",\"" : "{\"");
		log_str(lb_log_field_names[f]);
		log_str("\":");
		log_field(c, f, 1, now_us);
	}
	log_str("}\n");
}

static void access_log_template(struct conn *c, uint64_t now_us)
{
	const struct lb_log_tpl *t = &g_conf->log_tpl;
	for (size_t i = 0; i < t->n; i++) {
		if (t->item[i].field < 0)
			log_raw(g_conf->log_template + t->item[i].off, t->item[i].len);
		else
			log_field(c, t->item[i].field, 0, now_us);
	}
	log_str("\n");
}

static void access_log_line(struct conn *c)
{
	uint64_t now_us = mono_us();
	if (g_conf->log_format == LB_LOG_JSON) {
		access_log_json(c, now_us);
		return;
	}
	if (g_conf->log_format == LB_LOG_TEMPLATE && g_conf->log_template) {
		access_log_template(c, now_us);
		return;
	}
	char tb[64], nb[64];
	time_t secs = (time_t)(c->wall_start_ms / 1000);
	struct tm tm;
	const char *qd = c->qh.d;
	const struct tls_conn *tc = client_tls(c);
	int tcp = c->L->mode == LB_MODE_TCP;
	struct lb_str method = { tcp ? "TCP" : "-", tcp ? 3 : 1 }, uri = { "-", 1 };
	if (!tcp && qd && c->lg_mlen) {
		method = (struct lb_str){ qd, c->lg_mlen };
		uri = (struct lb_str){ qd + c->lg_mlen + 1, c->lg_ulen };
	}
	localtime_r(&secs, &tm);
	strftime(tb, sizeof tb, "%d/%b/%Y:%H:%M:%S %z", &tm);
	log_str(ip_text(&c->ip));
	log_str(" - - [");
	log_str(tb);
	log_str("] \"");
	log_esc(method.p, method.n, 0);
	log_str(" ");
	log_esc(uri.p, uri.n, 0);
	if (!tcp) {
		snprintf(nb, sizeof nb, " HTTP/1.%d", c->req_minor);
		log_str(CONN_IS_STREAM(c) ? " HTTP/2.0" : nb);
	}
	snprintf(nb, sizeof nb, "\" %d %llu \"", c->resp_status, (unsigned long long)c->bytes_out);
	log_str(nb);
	if (qd && c->lg_ref_len)
		log_esc(qd + c->lg_ref_off, c->lg_ref_len, 0);
	else
		log_str("-");
	log_str("\" \"");
	if (qd && c->lg_ua_len)
		log_esc(qd + c->lg_ua_off, c->lg_ua_len, 0);
	else
		log_str("-");
	if (tc && tc->subject[0]) { /* mTLS: the verified client, as nginx's $ssl_client_s_dn would */
		log_str("\" \"");
		log_esc(tc->subject, strlen(tc->subject), 0);
	}
	log_str("\"");
	if (c->term[0]) { /* only lines of exchanges that did not end whole: the others stay plain combined */
		log_str(" term=");
		log_field(c, LB_LF_TERM, 0, now_us);
	}
	log_str("\n");
}

/* ==================================================================== 15. process
 * Listening sockets, accept, the signal self-pipe, the worker's loop and its drain on SIGTERM/SIGINT,
 * then the master: workers, alerts, reaping, log rotation, reload, stop, certificates on disk. Writes M
 * (section 13 defines it) and keeps g_wk and g_alerts loose.
 * Accept pauses at the worker's connection cap (max_connections as its descriptors allow) and,
 * with a back-off, when descriptors or memory run out (accept_hold). The master's loop also samples
 * the dashboard's history (history_tick, section 12). Calls every section before it, and 16
 * declared ahead (load_config). */

static void on_signal(int sig)
{
	int e = errno;
	unsigned char b = (unsigned char)sig;
	ssize_t w = write(P.sigpipe[1], &b, 1);
	LB_UNUSED(w);
	errno = e;
}

static int open_listener(struct lb_bind *b, const char *lname)
{
	char host[INET6_ADDRSTRLEN] = "?";
	int fd = socket(b->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
	if (fd < 0)
		goto fail;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (b->sa.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
	if (bind(fd, (struct sockaddr *)&b->sa, b->salen) != 0 || listen(fd, 4096) != 0)
		goto fail;
	return fd;
fail:
	getnameinfo((struct sockaddr *)&b->sa, b->salen, host, sizeof host, NULL, 0, NI_NUMERICHOST);
	lb_err("listener %s: cannot listen on %s port %u: %s", lname, host, b->hp.port, strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}

/* A paused worker takes its listeners out of the event set (a level-triggered listener that is
 * only not read would wake the loop for ever); the other workers keep accepting. */
static void accept_pause(int paused)
{
	if (W.accept_paused == paused)
		return;
	W.accept_paused = paused;
	for (size_t i = 0; i < W.nlsocks; i++) {
		struct evh *h = &W.lsocks[i].h;
		if (h->dead)
			continue;
		h->want = paused ? 0 : EV_R;
		if (paused)
			ev_forget(h);
		else
			ev_apply(h);
	}
}

/* Out of descriptors or kernel memory (accept, a server socket): stop accepting, and try again
 * after a back-off (100 ms, doubling up to 1 s while it goes on) or as soon as another of this
 * worker's connections closes (`closing` of them are about to, having met the error: they free
 * no descriptor a new client could use). */
static void accept_hold(size_t closing)
{
	W.accept_backoff = W.accept_backoff ? LB_MIN(W.accept_backoff * 2, 1000) : 100;
	W.accept_retry_at = g_now + W.accept_backoff;
	W.accept_conns = W.nconns - LB_MIN(closing, W.nconns);
	splice_pool_drain();
	accept_pause(1);
}

static int accept_may_resume(void)
{
	if (W.stopping || W.nconns >= W.max_conns)
		return 0;
	if (W.accept_retry_at && g_now < W.accept_retry_at && W.nconns >= W.accept_conns)
		return 0;
	if (!fd_spares_fill()) { /* still short: wait for the back-off or a close again */
		accept_hold(0);
		return 0;
	}
	W.accept_retry_at = 0;
	return 1;
}

/* max_conn_per_ip, checked once the connection's client is known; logs at most once a second */
static int conn_admitted(struct conn *c)
{
	static struct lb_throttle log_slot;
	if (!c->L->max_conn_per_ip || ipc_take(c))
		return 1;
	log_throttled(&log_slot, "client %s listener %s: closing: more than max_conn_per_ip = %u connections from "
	              "this address", ip_text(&c->conn_ip), c->L->name, c->L->max_conn_per_ip);
	count_refused(c->L, REFUSE_PER_IP);
	conn_close(c);
	return 0;
}

/* Connection structs come in slabs of 64, so an idle keep-alive connection costs its struct
 * and no allocator header (at most max_connections + 63 of them). Under AddressSanitizer each
 * is its own block, so a use after free is still caught. */
static struct conn *conn_alloc(void)
{
	if (!W.free_conns) {
#ifdef LB_BUF_ASAN
		size_t k = 1;
#else
		size_t k = 64;
#endif
		struct conn *slab = malloc(k * sizeof *slab);
		if (!slab)
			return NULL;
		for (size_t i = 0; i < k; i++) {
			slab[i].next = W.free_conns;
			W.free_conns = &slab[i];
		}
	}
	struct conn *c = W.free_conns;
	W.free_conns = c->next;
	return c;
}

static void conn_new(int fd, int li, const struct sockaddr_storage *sa)
{
	struct conn *c = conn_alloc();
	if (!c) {
		count_refused(&g_conf->listeners[li], REFUSE_NO_MEMORY);
		close(fd);
		return;
	}
	memset(c, 0, sizeof *c);
	c->h.kind = H_CLIENT;
	c->h.fd = fd;
	c->hidx = NOT_IN_HEAP;
	c->li = li;
	c->L = &g_conf->listeners[li];
	c->t_head = c->t_active = g_now;
	struct lb_ip ip;
	lb_ip_from_sockaddr(sa, &ip);
	set_conn_client(c, &ip);
	c->px.src = ip;
	c->px.sport = ntohs(sa->ss_family == AF_INET ? ((const struct sockaddr_in *)sa)->sin_port
	                                             : ((const struct sockaddr_in6 *)sa)->sin6_port);
	set_nodelay(fd);
	c->next = W.live;
	if (W.live)
		W.live->prev = c;
	W.live = c;
	W.nconns++;
	count_conn_open(c);
	if (proxy_expected(c))
		c->q = Q_PROXY; /* the client is known once the header is read; TLS starts after it */
	else if (!conn_admitted(c))
		return;
	else if (c->L->tls && tls_begin(c) != 0)
		return;
	else if (c->L->mode == LB_MODE_TCP)
		tcp_start(c);
	if (!c->h.dead)
		conn_progress(c);
}

static int listener_admits(const struct lb_listener *l, const struct sockaddr_storage *sa)
{
	if (!l->nallow && !l->ndeny)
		return 1;
	struct lb_ip ip;
	if (lb_ip_from_sockaddr(sa, &ip) != 0)
		return 0;
	if (cidr_any(l->deny, l->ndeny, &ip))
		return 0;
	return !l->nallow || cidr_any(l->allow, l->nallow, &ip);
}

static void on_accept(struct lsock *ls)
{
	static struct lb_throttle log_slot;
	for (int i = 0; i < 64 && !W.accept_paused; i++) {
		if (W.nconns >= W.max_conns) {
			accept_pause(1);
			return;
		}
		struct sockaddr_storage sa;
		socklen_t sl = sizeof sa;
		int fd = accept4(ls->h.fd, (struct sockaddr *)&sa, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			int e = errno;
			if (local_resource_error(e)) {
				accept_hold(0);
				log_throttled_at(&log_slot, LB_LV_ERROR,
				                 "accept: %s: pausing new connections for %llu ms or until one closes "
				                 "(%zu connections open in this worker)", strerror(e),
				                 (unsigned long long)W.accept_backoff, W.nconns);
			}
			return;
		}
		W.accept_backoff = 0;
		count_accepted(&g_conf->listeners[ls->li]);
		if (!listener_admits(&g_conf->listeners[ls->li], &sa)) {
			count_refused(&g_conf->listeners[ls->li], REFUSE_ACL);
			close(fd); /* before any byte is read */
			continue;
		}
		conn_new(fd, ls->li, &sa);
	}
}

/* Stop accepting; in-flight exchanges finish, every response from now on says
 * Connection: close, and idle keep-alive connections close after LB_RETIRE_IDLE_MS of
 * silence (closing one at once would race a client that is sending its next request). */
static void begin_stop(void)
{
	if (W.stopping)
		return;
	W.stopping = 1;
	W.stop_began = g_now;
	hc_stop();
	W.stop_deadline = g_now + g_conf->shutdown_timeout;
	lb_info("stopping: no new connections; finishing %zu open ones (at most %llu ms)", W.nconns,
	        (unsigned long long)g_conf->shutdown_timeout);
	for (size_t i = 0; i < W.nlsocks; i++) {
		ev_forget(&W.lsocks[i].h);
		close(W.lsocks[i].h.fd);
		W.lsocks[i].h.dead = 1;
	}
	for (struct conn *c = W.live, *n; c; c = n) {
		n = c->next;
#ifdef LB_HTTP2
		h2_goaway(c);
#endif
		conn_arm_timer(c);
	}
	idle_close_all();
}

static void on_signals(void);
static void on_ctl(void);

static void on_event(struct evh *h, unsigned ev)
{
	unsigned spurious = ev & (EV_R | EV_W) & ~h->want;
	if (ev & EV_HUP)
		h->hup = 1;
	if (ev & (EV_R | EV_HUP | EV_ERR))
		h->rready = 1;
	switch (h->kind) {
	case H_LISTEN:
		on_accept((struct lsock *)h);
		break;
	case H_SIGNAL:
		on_signals();
		break;
	case H_HEALTH:
		hc_io((struct hc *)h);
		break;
	case H_CTL:
		on_ctl();
		break;
	case H_CLIENT: {
		struct conn *c = (struct conn *)h;
		if (ev & EV_ERR) {
			conn_abort_client(c, c->r == R_NONE ? NULL : "client connection error");
			break;
		}
		conn_progress(c);
		ev_narrow(h, spurious);
		break;
	}
	case H_BACKEND: {
		struct lb_bconn *b = (struct lb_bconn *)h;
		struct conn *c = b->c;
		if (!c) {
			on_idle_backend(b);
			break;
		}
		if (!b->connected) {
			int err = 0;
			socklen_t el = sizeof err;
			getsockopt(h->fd, SOL_SOCKET, SO_ERROR, &err, &el);
			if (err || (ev & EV_ERR)) {
				char why[400];
				snprintf(why, sizeof why, "connect to %s (%s): %s", c->srv->name, srv_addr(c->srv),
				         strerror(err ? err : ECONNREFUSED));
				backend_failed(c, 502, why, 1);
				if (!c->h.dead)
					conn_progress(c);
				break;
			}
			b->connected = 1;
			count_connected(c, 1);
			if (c->L->mode == LB_MODE_TCP)
				cb_outcome(c, c->srv, 0, "");
		}
		conn_progress(c);
		ev_narrow(h, spurious);
		break;
	}
	}
}

static void run_timers(void)
{
	while (W.nheap > 0 && W.heap[0]->deadline <= g_now) {
		struct conn *c = W.heap[0];
		heap_remove(c);
		c->deadline = 0;
		if (!c->h.dead) {
			conn_timeout(c);
			if (!c->h.dead && c->hidx == NOT_IN_HEAP)
				conn_arm_timer(c);
		}
	}
}

static void reap_dead(void)
{
	while (W.dead) {
		struct conn *c = W.dead;
		W.dead = c->next;
		c->next = W.free_conns;
		W.free_conns = c;
	}
	while (W.dead_bconns) {
		struct lb_bconn *b = W.dead_bconns;
		W.dead_bconns = b->next;
		b->next = W.free_bconns;
		W.free_bconns = b;
	}
	hc_reap();
}

static int next_timeout(void)
{
	if (W.pending)
		return 0;
	uint64_t d = W.nheap ? W.heap[0]->deadline : UINT64_MAX;
	d = LB_MIN(d, W.hc_next);
	if (W.accept_paused && W.accept_retry_at)
		d = LB_MIN(d, W.accept_retry_at);
	return d <= g_now ? 0 : (int)LB_MIN(d - g_now, 1000);
}



/* -------------------------------------------------------------------- worker side */

#define LB_ORPHAN_STOP_MS 1000

static void on_signals(void)
{
	unsigned char sigs[64];
	ssize_t n = read(P.sigpipe[0], sigs, sizeof sigs);
	for (ssize_t i = 0; i < n; i++)
		if (sigs[i] == SIGTERM || sigs[i] == SIGINT || sigs[i] == SIGQUIT)
			begin_stop();
	/* the parent-death SIGTERM (exit_with_master): nobody supervises an orphan, so it finishes
	 * what is in flight for at most a second, not shutdown_timeout */
	if (W.stopping && getppid() != P.master_pid && W.stop_deadline > g_now + LB_ORPHAN_STOP_MS) {
		W.stop_deadline = g_now + LB_ORPHAN_STOP_MS;
		lb_warn("worker %d: the master (pid %d) is gone: stopping within %d ms", P.worker_id, (int)P.master_pid,
		        LB_ORPHAN_STOP_MS);
	}
}

static int recv_fd(int sock, char *tag)
{
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { tag, 1 };
	struct msghdr m;
	memset(&m, 0, sizeof m);
	m.msg_iov = &iov;
	m.msg_iovlen = 1;
	m.msg_control = cbuf;
	m.msg_controllen = sizeof cbuf;
	if (recvmsg(sock, &m, MSG_DONTWAIT) <= 0)
		return -1;
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
	int fd = -1;
	if (cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
		memcpy(&fd, CMSG_DATA(cm), sizeof fd);
	return fd;
}

/* The master rotated or reopened a log: write the buffered lines, then switch files. */
static void on_ctl(void)
{
	char tag;
	int fd;
	while ((fd = recv_fd(P.ctl, &tag)) >= 0) {
		if (tag == 'A' && P.accfd >= 0) {
			log_flush_last();
			dup2(fd, P.accfd);
		} else if (tag == 'E') {
			dup2(fd, P.errfd);
		}
		close(fd);
	}
}

static int setup_runtime(void)
{
	size_t maxh = 1024;
	for (size_t i = 0; i < g_conf->nlisteners; i++)
		maxh = LB_MAX(maxh, g_conf->listeners[i].max_header_size);
	W.bufsize = maxh + 4096; /* head limit plus room for the headers lb adds */
	int pools = pages_init(&W.bufs, W.bufsize, (size_t)g_conf->max_connections * 4 + 64, 64) |
	            tls_worker_setup(g_conf->max_connections);
	W.scratch = malloc(W.bufsize);
	W.scratch2 = malloc(W.bufsize);
	W.heap = calloc(g_conf->max_connections + 16, sizeof *W.heap);
	struct rlimit rl;
	size_t maxfds = (size_t)g_conf->max_connections * 2 + 256;
	W.max_conns = g_conf->max_connections;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
		maxfds = LB_MIN(maxfds, (size_t)rl.rlim_cur + 16);
		W.max_conns = lb_conns_for_fds(g_conf, (unsigned long)rl.rlim_cur); /* fd_limit_check warned */
	}
	W.fd_budget = maxfds; /* idle server connections stay under 3/4 of it (fds_short) */
	if (!W.scratch || !W.scratch2 || !W.heap || pools != 0 || ev_init(maxfds) != 0) {
		lb_err("out of memory setting up the event loop");
		return -1;
	}
	rng_seed();
	fd_spares_fill();
	if (pipe2(P.sigpipe, O_NONBLOCK | O_CLOEXEC) != 0)
		return -1;
	W.sigh.kind = H_SIGNAL;
	W.sigh.fd = P.sigpipe[0];
	W.sigh.want = EV_R;
	ev_apply(&W.sigh);
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	int sigs[] = { SIGTERM, SIGINT, SIGQUIT };
	for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++)
		sigaction(sigs[i], &sa, NULL);
	signal(SIGHUP, SIG_IGN);  /* the master reloads */
	signal(SIGUSR1, SIG_IGN); /* the master reopens logs and passes them on */
	signal(SIGPIPE, SIG_IGN);
	signal(SIGCHLD, SIG_DFL);
	if (P.ctl >= 0) {
		fcntl(P.ctl, F_SETFL, O_NONBLOCK);
		W.ctlh.kind = H_CTL;
		W.ctlh.fd = P.ctl;
		W.ctlh.want = EV_R;
		ev_apply(&W.ctlh);
	}
	return 0;
}

static int run_loop(void)
{
	g_now = mono_ms();
	if (P.worker_id == 1)
		hc_setup();
	for (;;) {
		ev_wait(next_timeout(), on_event);
		run_pending();
		run_timers();
		hc_tick();
		idle_sweep();
		if (g_now >= W.trim_at) {
			pages_trim(&W.bufs);
			tls_trim();
			W.trim_at = g_now + 1000;
		}
		admin_sync();
		reap_dead();
		log_flush();
		log_throttle_flush();
		if (W.accept_paused && accept_may_resume())
			accept_pause(0);
		if (W.stopping && (W.nconns == 0 || g_now >= W.stop_deadline)) {
			if (W.nconns)
				lb_warn("worker %d: closing %zu connections still open after shutdown_timeout", P.worker_id,
				        W.nconns);
			while (W.live)
				conn_close(W.live);
			reap_dead();
			log_flush_last();
			return 0;
		}
	}
}

/* -------------------------------------------------------------------- listening sockets
 * Owned by the master, inherited by the workers. A socket whose address stays in the next
 * generation is never closed, so a reload loses no connection waiting in a backlog. */

struct msock {
	struct sockaddr_storage sa;
	socklen_t salen;
	int fd, used;
};

static int msock_find(const struct sockaddr_storage *sa, socklen_t len)
{
	for (size_t i = 0; i < M.nmsocks; i++)
		if (M.msocks[i].salen == len && memcmp(&M.msocks[i].sa, sa, len) == 0)
			return (int)i;
	return -1;
}

/* Mark the sockets conf uses, opening those it lacks. */
static int msocks_open(const struct lb_conf *c)
{
	for (size_t i = 0; i < M.nmsocks; i++)
		M.msocks[i].used = 0;
	for (size_t l = 0; l < c->nlisteners; l++) {
		for (size_t b = 0; b < c->listeners[l].nbinds; b++) {
			const struct lb_bind *bd = &c->listeners[l].binds[b];
			int i = msock_find(&bd->sa, bd->salen);
			if (i < 0) {
				struct msock *m = realloc(M.msocks, (M.nmsocks + 1) * sizeof *m);
				if (!m)
					return -1;
				M.msocks = m;
				int fd = open_listener((struct lb_bind *)bd, c->listeners[l].name);
				if (fd < 0)
					return -1;
				i = (int)M.nmsocks++;
				M.msocks[i].sa = bd->sa;
				M.msocks[i].salen = bd->salen;
				M.msocks[i].fd = fd;
			}
			M.msocks[i].used = 1;
		}
	}
	return 0;
}

static void msocks_close_unused(void)
{
	size_t k = 0;
	for (size_t i = 0; i < M.nmsocks; i++) {
		if (M.msocks[i].used)
			M.msocks[k++] = M.msocks[i];
		else
			close(M.msocks[i].fd);
	}
	M.nmsocks = k;
}

static int worker_listen(void)
{
	size_t n = 0;
	for (size_t i = 0; i < g_conf->nlisteners; i++)
		n += g_conf->listeners[i].nbinds;
	W.lsocks = calloc(n ? n : 1, sizeof *W.lsocks);
	if (!W.lsocks)
		return -1;
	for (size_t i = 0; i < g_conf->nlisteners; i++) {
		for (size_t b = 0; b < g_conf->listeners[i].nbinds; b++) {
			const struct lb_bind *bd = &g_conf->listeners[i].binds[b];
			int m = msock_find(&bd->sa, bd->salen);
			if (m < 0)
				return -1;
			struct lsock *ls = &W.lsocks[W.nlsocks++];
			ls->h.kind = H_LISTEN;
			ls->h.fd = M.msocks[m].fd;
			ls->h.want = EV_R;
			ls->li = (int)i;
			ev_apply(&ls->h);
		}
	}
	return 0;
}

/* -------------------------------------------------------------------- master side
 * The master forks the workers (spawn_worker) and keeps their table (g_wk); the subsections below run
 * alert_command, reap and restart workers, rotate logs, reload on SIGHUP (new generation first, then
 * the old one retires gracefully) and stop on SIGTERM/SIGINT. It never handles client traffic. */

struct worker {
	pid_t pid;
	int id, gen, ctl, retiring, restart;
	int fast_exits;              /* consecutive deaths within a second of starting */
	uint64_t started, restart_at;
};
static struct worker g_wk[LB_MAX_WORKERS];

static unsigned worker_count(const struct lb_conf *c)
{
	long n = c->workers ? (long)c->workers : sysconf(_SC_NPROCESSORS_ONLN);
	return (unsigned)LB_MAX(1, LB_MIN(n, LB_MAX_WORKERS / 2));
}

static int drop_privileges(void)
{
	if (!M.drop)
		return 0;
	if (setgroups(1, &M.gid) != 0 || setgid(M.gid) != 0 || setuid(M.uid) != 0) {
		lb_err("worker: cannot drop privileges to uid %d gid %d: %s", (int)M.uid, (int)M.gid, strerror(errno));
		return -1;
	}
	return 0;
}

/* Every child of the master (workers, alert_command) calls this right after drop_privileges: the
 * kernel clears PR_SET_PDEATHSIG on a uid/gid change, so armed before the drop it would be lost
 * and a master killed with -9 would leave orphans serving. The getppid() check catches a master
 * that died before the signal was armed (the child was then re-parented). SIGTERM: a worker
 * closes its listeners at once and finishes what is in flight. */
static void exit_with_master(void)
{
#ifdef __linux__
	prctl(PR_SET_PDEATHSIG, SIGTERM);
#endif
	if (getppid() != P.master_pid)
		_exit(0);
}

/* the child of a fork: become worker `id` of the current generation in shm column `slot` */
static void worker_main(int slot, int id, int ctl)
{
	P.pid = getpid();
	P.slot = slot;
	P.worker_id = id;
	P.ctl = ctl;
	close(P.sigpipe[0]);
	close(P.sigpipe[1]);
	for (int i = 0; i < LB_MAX_WORKERS; i++)
		if (g_wk[i].pid && g_wk[i].ctl >= 0)
			close(g_wk[i].ctl);
	for (size_t i = 0; i < M.nmsocks; i++)
		if (!M.msocks[i].used)
			close(M.msocks[i].fd);
	admin_close_all(); /* the master's: a worker holding one would keep an admin client waiting */
	SHM.seg->w[slot].pid = (int32_t)P.pid;
	SHM.seg->w[slot].id = id;
	SHM.seg->w[slot].gen = M.gen;
	if (drop_privileges() != 0)
		_exit(1);
	exit_with_master(); /* after the drop, which would clear it */
	if (setup_runtime() != 0 || worker_listen() != 0)
		_exit(1);
	sigprocmask(SIG_SETMASK, &M.spawn_mask, NULL); /* a SIGQUIT sent meanwhile arrives now */
	int rc = run_loop();
	_exit(rc);
}

static int spawn_worker(int slot, int id)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv) != 0) {
		lb_err("socketpair: %s", strerror(errno));
		return -1;
	}
	/* until the child has its own handlers, a stop or retire signal must wait, not vanish */
	sigset_t block;
	sigemptyset(&block);
	int sigs[] = { SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGCHLD };
	for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++)
		sigaddset(&block, sigs[i]);
	sigprocmask(SIG_BLOCK, &block, &M.spawn_mask);
	pid_t pid = fork();
	if (pid == 0) {
		close(sv[0]);
		worker_main(slot, id, sv[1]);
	}
	sigprocmask(SIG_SETMASK, &M.spawn_mask, NULL);
	if (pid < 0) {
		lb_err("fork: %s", strerror(errno));
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	close(sv[1]);
	struct worker *w = &g_wk[slot];
	memset(w, 0, sizeof *w);
	w->pid = pid;
	w->id = id;
	w->gen = M.gen;
	w->ctl = sv[0];
	w->started = mono_ms();
	lb_info("worker %d pid %d started (generation %d)", id, (int)pid, M.gen);
	return 0;
}

static int free_slot(void)
{
	for (int i = 0; i < LB_MAX_WORKERS; i++)
		if (!g_wk[i].pid && !g_wk[i].restart)
			return i;
	return -1;
}

static int spawn_generation(void)
{
	unsigned n = worker_count(g_conf);
	for (unsigned id = 1; id <= n; id++) {
		int slot = free_slot();
		if (slot < 0 || spawn_worker(slot, (int)id) != 0)
			return -1;
	}
	return 0;
}

static int live_workers(void)
{
	int n = 0;
	for (int i = 0; i < LB_MAX_WORKERS; i++)
		n += g_wk[i].pid != 0;
	return n;
}

/* -------------------------------------------------------------------- alerts (master)
 * Each event from the shared ring is logged by whoever caused it; the master hands it to
 * alert_command as one JSON object on stdin. The command runs as the workers' user, never
 * blocks the master (the JSON fits in the pipe), and is killed after LB_ALERT_MAX_MS. */

#define LB_ALERTS_RUNNING 16
#define LB_ALERT_MAX_MS 30000
static struct {
	pid_t pid;
	uint64_t started;
	char what[LB_NAME_MAX * 2 + 24];
} g_alerts[LB_ALERTS_RUNNING];

static int event_json(const struct lb_event *e, char *out, size_t cap)
{
	char ts[40], kind[40], pool[2 * LB_NAME_MAX], srv[2 * LB_NAME_MAX], reason[600];
	time_t sec = (time_t)(e->wall_ms / 1000);
	struct tm tm;
	gmtime_r(&sec, &tm);
	strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
	json_str(kind, sizeof kind, e->kind);
	json_str(pool, sizeof pool, e->pool);
	json_str(srv, sizeof srv, e->server);
	json_str(reason, sizeof reason, e->reason);
	return snprintf(out, cap, "{\"time\":\"%s.%03dZ\",\"kind\":\"%s\",\"pool\":\"%s\",\"server\":\"%s\",\"reason\":\"%s\"}\n",
	                ts, (int)(e->wall_ms % 1000), kind, pool, srv, reason);
}

static void alert_run(const struct lb_event *e)
{
	int slot = 0;
	while (slot < LB_ALERTS_RUNNING && g_alerts[slot].pid)
		slot++;
	if (slot == LB_ALERTS_RUNNING) {
		lb_err("alert_command: %d still running; %s %s/%s not sent", LB_ALERTS_RUNNING, e->kind, e->pool, e->server);
		return;
	}
	char json[1500];
	int n = event_json(e, json, sizeof json);
	int pfd[2];
	if (n <= 0 || pipe2(pfd, O_CLOEXEC) != 0) {
		lb_err("alert_command: pipe: %s", strerror(errno));
		return;
	}
	pid_t pid = fork();
	if (pid == 0) {
		sigprocmask(SIG_SETMASK, &M.spawn_mask, NULL);
		signal(SIGPIPE, SIG_DFL);
		signal(SIGQUIT, SIG_DFL);
		if (dup2(pfd[0], 0) < 0 || dup2(P.errfd, 1) < 0 || dup2(P.errfd, 2) < 0 || drop_privileges() != 0)
			_exit(126);
		exit_with_master(); /* a hung command must not outlive the master that would kill it */
		execl("/bin/sh", "sh", "-c", g_conf->alert_command, (char *)NULL);
		_exit(127);
	}
	close(pfd[0]);
	if (pid < 0) {
		lb_err("alert_command: fork: %s", strerror(errno));
	} else {
		ssize_t w = write(pfd[1], json, (size_t)n); /* < PIPE_BUF into an empty pipe: whole, at once */
		LB_UNUSED(w);
		g_alerts[slot].pid = pid;
		g_alerts[slot].started = mono_ms();
		snprintf(g_alerts[slot].what, sizeof g_alerts[slot].what, "%s %s/%s", e->kind, e->pool, e->server);
	}
	close(pfd[1]);
}

/* new events in the ring: to alert_command (a slow master may find some overwritten) */
static void master_events(void)
{
	uint64_t head = atomic_load(&SHM.events->head);
	if (head - M.ev_tail > LB_EVENTS) {
		lb_warn("events: %llu lost (more than %d between two looks)", (unsigned long long)(head - M.ev_tail - LB_EVENTS),
		        LB_EVENTS);
		M.ev_tail = head - LB_EVENTS;
	}
	for (; M.ev_tail < head; M.ev_tail++) {
		struct lb_event *e = &SHM.events->e[M.ev_tail % LB_EVENTS], copy;
		if (atomic_load_explicit(&e->seq, memory_order_acquire) != M.ev_tail + 1)
			break; /* still being written: next time */
		memcpy(&copy, e, sizeof copy);
		if (atomic_load_explicit(&e->seq, memory_order_acquire) != M.ev_tail + 1)
			continue; /* overwritten while copied */
		if (g_conf->alert_command)
			alert_run(&copy);
	}
	for (int i = 0; i < LB_ALERTS_RUNNING; i++)
		if (g_alerts[i].pid && mono_ms() - g_alerts[i].started > LB_ALERT_MAX_MS) {
			lb_err("alert_command for %s: still running after %d s: killed", g_alerts[i].what, LB_ALERT_MAX_MS / 1000);
			kill(g_alerts[i].pid, SIGKILL);
			g_alerts[i].started = UINT64_MAX / 2; /* reaped soon; no second kill line */
		}
}

/* -------------------------------------------------------------------- reaping (master)
 * SIGCHLD: a child that ended is an alert command (its failure logged) or a worker, whose shared-memory
 * column is released (shm_release_slot; a crashed one's limiter shares and circuit trials too). A worker
 * of the current generation that died unexpectedly is restarted, once a second when it keeps dying
 * young (master_restart_due). */

static int alert_reaped(pid_t pid, int st)
{
	for (int i = 0; i < LB_ALERTS_RUNNING; i++) {
		if (g_alerts[i].pid != pid)
			continue;
		if (WIFSIGNALED(st))
			lb_err("alert_command for %s: ended by signal %d", g_alerts[i].what, WTERMSIG(st));
		else if (WEXITSTATUS(st))
			lb_err("alert_command for %s: failed with exit status %d", g_alerts[i].what, WEXITSTATUS(st));
		g_alerts[i].pid = 0;
		return 1;
	}
	return 0;
}

static void master_reap(void)
{
	int st;
	pid_t pid;
	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		int i = 0;
		while (i < LB_MAX_WORKERS && g_wk[i].pid != pid)
			i++;
		if (i == LB_MAX_WORKERS) {
			alert_reaped(pid, st);
			continue;
		}
		struct worker *w = &g_wk[i];
		int expected = w->retiring || M.mstop || w->gen != M.gen;
		char how[48];
		if (WIFSIGNALED(st))
			snprintf(how, sizeof how, "on signal %d", WTERMSIG(st));
		else
			snprintf(how, sizeof how, "with status %d", WEXITSTATUS(st));
		shm_release_slot(i);
		if (WIFSIGNALED(st) || WEXITSTATUS(st)) {
			ipc_reset();
			for (uint32_t k = 0; k < SHM.seg->nservers; k++) /* its trial slots, if any, die with it */
				atomic_store(&SHM.seg->s[k].cb_trials, 0);
		}
		close(w->ctl);
		w->pid = 0;
		w->ctl = -1;
		if (expected && !(WIFSIGNALED(st) || WEXITSTATUS(st))) {
			lb_info("worker %d pid %d (generation %d) exited", w->id, (int)pid, w->gen);
			memset(w, 0, sizeof *w);
			continue;
		}
		if (expected) {
			lb_warn("worker %d pid %d (generation %d) exited %s", w->id, (int)pid, w->gen, how);
			memset(w, 0, sizeof *w);
			continue;
		}
		uint64_t lived = mono_ms() - w->started;
		w->fast_exits = lived < 1000 ? w->fast_exits + 1 : 0;
		w->restart = 1;
		w->restart_at = mono_ms() + (w->fast_exits > 1 ? 1000 : 0); /* a crash loop: once a second */
		atomic_fetch_add(&SHM.seg->restarts, 1);
		lb_err("worker %d pid %d exited %s; restarting", w->id, (int)pid, how);
	}
}

static void master_restart_due(void)
{
	uint64_t now = mono_ms();
	for (int i = 0; i < LB_MAX_WORKERS; i++) {
		struct worker *w = &g_wk[i];
		if (w->restart && now >= w->restart_at) {
			int id = w->id, fast = w->fast_exits;
			w->restart = 0;
			if (spawn_worker(i, id) != 0) {
				w->id = id;
				w->restart = 1;
				w->restart_at = now + 1000;
			}
			w->fast_exits = fast;
		}
	}
}

/* -------------------------------------------------------------------- log rotation (master)
 * The master owns the log files: it opens them, renames the access log by size or interval (rotate_
 * size, rotate_interval), deletes rotated files past retention, reopens both on SIGUSR1, and passes each
 * new descriptor to the live workers over their control sockets (send_fd). */

static void send_fd(int sock, char tag, int fd)
{
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { &tag, 1 };
	struct msghdr m;
	memset(&m, 0, sizeof m);
	memset(cbuf, 0, sizeof cbuf);
	m.msg_iov = &iov;
	m.msg_iovlen = 1;
	m.msg_control = cbuf;
	m.msg_controllen = sizeof cbuf;
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof fd);
	if (sendmsg(sock, &m, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
		lb_err("passing a log file to a worker: %s", strerror(errno));
}

static int is_file_log(const char *p) { return p && strcmp(p, "stdout") && strcmp(p, "stderr"); }

/* Open a log target as a new descriptor: a file, or a copy of stdout/stderr. */
static int open_log_target(const char *p)
{
	if (!p)
		return -1;
	if (!strcmp(p, "stdout"))
		return fcntl(1, F_DUPFD_CLOEXEC, 3);
	if (!strcmp(p, "stderr"))
		return fcntl(2, F_DUPFD_CLOEXEC, 3);
	int fd = open(p, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
	struct stat sb;
	if (fd >= 0 && fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode)) {
		/* a regular file read-write too: a worker takes back the part of a line a full disk cut
		 * (acclog_untail reads the file's tail first). Not a FIFO: lb must not be its reader. */
		int rw = open(p, O_RDWR | O_APPEND | O_CLOEXEC);
		if (rw >= 0) {
			close(fd);
			fd = rw;
		}
	}
	return fd;
}

/* Point fd `*slot` at target p (the workers of later forks inherit it); tell live workers
 * when `tag`. Returns -1 and changes nothing when p cannot be opened. */
static int retarget_log(int *slot, const char *p, char tag)
{
	int fd = open_log_target(p);
	if (p && fd < 0) {
		lb_err("cannot open log %s: %s", p, strerror(errno));
		return -1;
	}
	if (fd < 0) {
		if (*slot >= 0 && *slot != 2)
			close(*slot);
		*slot = -1;
		return 0;
	}
	if (*slot < 0 || *slot == 2) {
		*slot = fd;
		return 0;
	}
	dup2(fd, *slot);
	for (int i = 0; tag && i < LB_MAX_WORKERS; i++)
		if (g_wk[i].pid && g_wk[i].ctl >= 0)
			send_fd(g_wk[i].ctl, tag, fd);
	close(fd);
	return 0;
}

/* rotated names: PATH.YYYYmmdd-HHMMSS[.N] */
static int is_rotated_name(const char *name, const char *base)
{
	size_t bl = strlen(base);
	if (strncmp(name, base, bl) || name[bl] != '.')
		return 0;
	const char *t = name + bl + 1;
	for (int i = 0; i < 15; i++)
		if (i == 8 ? t[i] != '-' : !is_digit((unsigned char)t[i]))
			return 0;
	return t[15] == 0 || t[15] == '.';
}

/* Delete rotated files older than retention, always keeping the newest one. */
static void apply_retention(void)
{
	const char *path = g_conf->access_log;
	if (!is_file_log(path))
		return;
	char dir[PATH_MAX];
	snprintf(dir, sizeof dir, "%s", path);
	char *slash = strrchr(dir, '/');
	const char *base = slash ? slash + 1 : dir;
	char basebuf[PATH_MAX];
	snprintf(basebuf, sizeof basebuf, "%s", base);
	if (slash)
		*slash = 0;
	else
		snprintf(dir, sizeof dir, ".");
	char newest[NAME_MAX + 1] = "";
	time_t newest_t = 0, now = time(NULL);
	for (int pass = 0; pass < 2; pass++) { /* first find the newest, then delete */
		DIR *d = opendir(dir[0] ? dir : "/");
		if (!d)
			return;
		struct dirent *e;
		while ((e = readdir(d))) {
			if (!is_rotated_name(e->d_name, basebuf))
				continue;
			char full[PATH_MAX + NAME_MAX + 2];
			struct stat sb;
			snprintf(full, sizeof full, "%s/%s", dir[0] ? dir : "", e->d_name);
			if (stat(full, &sb) != 0)
				continue;
			if (pass == 0 && sb.st_mtime >= newest_t) {
				newest_t = sb.st_mtime;
				snprintf(newest, sizeof newest, "%s", e->d_name);
			} else if (pass == 1 && strcmp(e->d_name, newest) &&
			           (uint64_t)(now - sb.st_mtime) * 1000 >= g_conf->retention) {
				if (unlink(full) != 0)
					lb_err("retention: cannot delete %s: %s", full, strerror(errno));
			}
		}
		closedir(d);
	}
}

/* Rename the live access log to a time-stamped name and give everyone a fresh file. Lines
 * written between the rename and a worker's switch land in the rotated file: none is lost. */
static void rotate_access_log(void)
{
	const char *path = g_conf->access_log;
	struct stat sb;
	if (!is_file_log(path) || P.accfd < 0 || fstat(P.accfd, &sb) != 0 || sb.st_size == 0)
		return;
	char name[PATH_MAX], stamp[32];
	time_t t = time(NULL);
	struct tm tm;
	localtime_r(&t, &tm);
	strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
	snprintf(name, sizeof name, "%s.%s", path, stamp);
	for (int n = 1; access(name, F_OK) == 0 && n < 1000; n++)
		snprintf(name, sizeof name, "%s.%s.%d", path, stamp, n);
	if (rename(path, name) != 0) {
		lb_err("rotate: cannot rename %s: %s", path, strerror(errno));
		return;
	}
	retarget_log(&P.accfd, path, 'A');
	apply_retention();
}

static void master_log_tick(void)
{
	uint64_t now = mono_ms();
	struct stat sb;
	if (!is_file_log(g_conf->access_log) || P.accfd < 0)
		return;
	int due = g_conf->rotate_interval && now >= M.next_rotate;
	if (g_conf->rotate_size && fstat(P.accfd, &sb) == 0 && (uint64_t)sb.st_size >= g_conf->rotate_size)
		due = 1;
	if (due) {
		rotate_access_log();
		M.next_rotate = now + g_conf->rotate_interval;
	}
	if (now >= M.next_retention) {
		apply_retention();
		M.next_retention = now + 1000;
	}
}

/* -------------------------------------------------------------------- reload (master)
 * SIGHUP and the admin API's edits: load and validate the file, check the user and the descriptor limit,
 * then start the new generation before the old one retires; on any error the old one keeps serving. */

static struct lb_conf *load_config(const char *path, int to_log);

static int resolve_user(const struct lb_conf *c)
{
	M.drop = 0;
	if (!c->user || geteuid() != 0) {
		if (c->user && geteuid() != 0)
			lb_warn("user = %s: not started as root, running as the current user", c->user);
		return 0;
	}
	struct passwd *pw = getpwnam(c->user);
	if (!pw) {
		lb_err("user = %s: no such user", c->user);
		return -1;
	}
	M.uid = pw->pw_uid;
	M.gid = pw->pw_gid;
	M.drop = pw->pw_uid != 0;
	return 0;
}

/* max_connections against RLIMIT_NOFILE, which the workers inherit (lb_main raised the soft limit
 * to the hard one). Each worker takes at most what its descriptors allow (lb_conns_for_fds), so a
 * client connection never takes the descriptor its server connection needs, and the rest wait in
 * the listen backlog; an operator who set max_connections hears about it once (an unset one is
 * sized from the limit quietly, as HAProxy sizes maxconn). */
static int max_conns_given(const struct lb_conf *c)
{
	return lb_conf_given(c->given_global, "global", "max_connections");
}

static void fd_limit_check(const struct lb_conf *c)
{
	struct rlimit rl;
	unsigned long need = lb_fd_needed(c);
	if (!max_conns_given(c) || getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
	    rl.rlim_cur >= need)
		return;
	lb_warn("max_connections = %u needs %lu file descriptors in each worker (a client and a server "
	        "connection each, and %lu for listeners, logs and health checks) but the limit is %lu (RLIMIT_NOFILE, "
	        "hard limit %lu): each worker takes at most %u connections and leaves the rest in the listen "
	        "backlog; raise the limit to %lu (ulimit -n, systemd LimitNOFILE=) or lower max_connections",
	        c->max_connections, need, lb_fd_reserve(c), (unsigned long)rl.rlim_cur,
	        rl.rlim_max == RLIM_INFINITY ? (unsigned long)rl.rlim_cur : (unsigned long)rl.rlim_max,
	        lb_conns_for_fds(c, (unsigned long)rl.rlim_cur), need);
}

/* SIGHUP: the new generation starts before the old one retires; on any error the old
 * generation keeps serving as it was. */
/* A reload's outcome for the metrics: failures counted, the time of the last of each kind. */
static int reload_noted(int rc)
{
	if (rc != 0)
		atomic_fetch_add(&SHM.seg->reload_failures, 1);
	atomic_store(rc != 0 ? &SHM.seg->reload_fail_wall_ms : &SHM.seg->reload_ok_wall_ms, wall_ms());
	return rc;
}

static int master_reload(void)
{
	struct lb_conf *nc = load_config(M.conf_path, 1);
	if (!nc) {
		lb_err("reload: %s has errors; still serving generation %d", M.conf_path, M.gen);
		return reload_noted(-1);
	}
	int free_slots = 0;
	char token[sizeof ADM.token];
	size_t token_len = 0;
	for (int i = 0; i < LB_MAX_WORKERS; i++)
		free_slots += !g_wk[i].pid && !g_wk[i].restart;
	struct lb_conf *old = (struct lb_conf *)g_conf; /* the master's own (main or the last reload made it) */
	const char *why = NULL;
	if ((unsigned)free_slots < worker_count(nc))
		why = "too many workers still draining from earlier reloads; try again later";
	else if (shm_map_conf(nc) != 0)
		why = "shared memory is full";
	else if (resolve_user(nc) != 0)
		why = "unknown user";
	else if (msocks_open(nc) != 0)
		why = "cannot listen on a new address";
	else if (admin_token_load(nc, token, &token_len) != 0)
		why = "cannot read the admin token";
	else if (admin_listen(nc) != 0)
		why = "cannot listen on the new admin address";
	if (why) {
		lb_err("reload: %s; still serving generation %d", why, M.gen);
		msocks_open(old);
		msocks_close_unused();
		resolve_user(old);
		admin_listen(old);
		lb_conf_free(nc);
		return reload_noted(-1);
	}
	memcpy(ADM.token, token, sizeof token);
	ADM.token_len = token_len;
	g_conf = nc;
	P.errlevel = nc->log_level;
	if (lb_fd_needed(nc) != lb_fd_needed(old) || max_conns_given(nc) != max_conns_given(old))
		fd_limit_check(nc);
	if (nc->rate_limit_entries != old->rate_limit_entries)
		lb_warn("reload: rate_limit_entries = %u takes effect at the next restart; the table keeps %zu entries",
		        nc->rate_limit_entries, SHM.rl_sets * RL_WAYS);
	if (!old->access_log != !nc->access_log ||
	    (nc->access_log && strcmp(old->access_log, nc->access_log)))
		retarget_log(&P.accfd, nc->access_log, 0);
	if (strcmp(old->error_log, nc->error_log))
		retarget_log(&P.errfd, nc->error_log, 0);
	int old_gen = M.gen++;
	for (int i = 0; i < LB_MAX_WORKERS; i++)
		if (g_wk[i].restart && g_wk[i].gen == old_gen)
			memset(&g_wk[i], 0, sizeof g_wk[i]); /* no restarts into an old generation */
	spawn_generation();
	for (int i = 0; i < LB_MAX_WORKERS; i++) {
		if (g_wk[i].pid && g_wk[i].gen == old_gen) {
			g_wk[i].retiring = 1;
			kill(g_wk[i].pid, SIGQUIT);
		}
	}
	msocks_close_unused();
	atomic_fetch_add(&SHM.seg->reloads, 1);
	M.next_rotate = mono_ms() + nc->rotate_interval;
	lb_info("reload: generation %d serves %s (%zu listeners, %zu pools, %zu routes); generation %d retires",
	        M.gen, M.conf_path, nc->nlisteners, nc->npools, nc->nroutes, old_gen);
	lb_conf_free(old);
	return reload_noted(0);
}

/* -------------------------------------------------------------------- stop (master)
 * SIGTERM/SIGINT: stop_grace first (/healthz says draining while lb serves), then
 * the listeners close and the workers finish their connections within shutdown_timeout. */

/* One line per server with traffic since start: the per-worker counters, summed. */
static void log_server_totals(const char *when)
{
	for (uint32_t i = 0; i < SHM.seg->nservers; i++) {
		uint64_t r, e, b;
		shm_server_totals(&SHM.seg->s[i], &r, &e, &b);
		if (r)
			lb_info("%s: server %s: %llu requests, %llu errors (5xx or cut short), %llu body bytes out", when, SHM.seg->s[i].key,
			        (unsigned long long)r, (unsigned long long)e, (unsigned long long)b);
	}
}

/* SIGTERM: with stop_grace, /healthz says draining at once while lb goes on serving, so that a
 * keepalived or load-balancer health check moves traffic away before the listeners close */
static void master_stop_now(void)
{
	M.stop_at = 0;
	M.mstop_deadline = mono_ms() + g_conf->shutdown_timeout + 5000;
	lb_info("stopping: workers finish their connections (at most %llu ms)",
	        (unsigned long long)g_conf->shutdown_timeout);
	for (size_t i = 0; i < M.nmsocks; i++)
		M.msocks[i].used = 0;
	msocks_close_unused(); /* with the workers' copies gone, new connections are refused */
	for (int i = 0; i < LB_MAX_WORKERS; i++) {
		if (g_wk[i].pid)
			kill(g_wk[i].pid, SIGTERM);
		g_wk[i].restart = 0;
	}
}

static void master_stop(void)
{
	if (M.mstop) {
		if (M.stop_at)
			master_stop_now(); /* a second signal during the grace: stop now */
		return;
	}
	M.mstop = 1;
	if (g_conf->stop_grace) {
		M.stop_at = mono_ms() + g_conf->stop_grace;
		M.mstop_deadline = M.stop_at + g_conf->shutdown_timeout + 5000;
		lb_info("stopping in %llu ms (stop_grace): /healthz says draining, requests are still served",
		        (unsigned long long)g_conf->stop_grace);
		return;
	}
	master_stop_now();
}

/* -------------------------------------------------------------------- signals (master)
 * The master's loop reads its signals from the self-pipe and hands each to the subsections above. */

static void master_signals(void)
{
	unsigned char sigs[64];
	ssize_t n = read(P.sigpipe[0], sigs, sizeof sigs);
	for (ssize_t i = 0; i < n; i++) {
		switch (sigs[i]) {
		case SIGTERM:
		case SIGINT:
			master_stop();
			break;
		case SIGHUP:
			if (!M.mstop) {
				log_server_totals("before reload");
				master_reload();
			}
			break;
		case SIGUSR1:
			retarget_log(&P.accfd, g_conf->access_log, 'A');
			if (is_file_log(g_conf->error_log))
				retarget_log(&P.errfd, g_conf->error_log, 'E');
			lb_info("SIGUSR1: log files reopened");
			break;
		case SIGCHLD:
			master_reap();
			break;
		}
	}
}

/* -------------------------------------------------------------------- certificates on disk */

/* A cert = or client_ca file of the running generation changed (certbot renewed it): reload,
 * once the file has stayed the same for a second so a copy in progress is not read. A file
 * that does not load keeps the old generation serving; it is tried again when it changes. */
static void master_cert_watch(void)
{
	static uint64_t next;
	static struct file_sig pending, failed;
	static uint64_t pending_since;
	uint64_t now = mono_ms();
	if (now < next)
		return;
	next = now + 1000;
	for (size_t i = 0; i < g_conf->nlisteners; i++) {
		const struct lb_listener *l = &g_conf->listeners[i];
		for (size_t k = 0; l->tlsm && k <= 2 * LB_MAX_CERTS; k++) {
			size_t o = k - LB_MAX_CERTS - 1; /* ocsp = files after client_ca */
			const char *f = k < l->ncerts ? l->certs[k] : k == LB_MAX_CERTS ? l->client_ca
			              : k > LB_MAX_CERTS && o < l->nocsp && strcmp(l->ocsp[o], "off") ? l->ocsp[o] : NULL;
			if (!f)
				continue;
			struct file_sig cur;
			file_sig_of(f, &cur);
			if (file_sig_eq(&cur, &l->tlsm->sig[k]) || file_sig_eq(&cur, &failed))
				continue;
			if (!file_sig_eq(&cur, &pending)) {
				pending = cur;
				pending_since = now;
				return;
			}
			if (now - pending_since < 1000)
				return;
			lb_info("%s changed on disk: reloading to use it", f);
			if (master_reload() != 0) {
				failed = cur;
				lb_err("%s: the new file is refused; the certificates loaded before stay in service", f);
			}
			memset(&pending, 0, sizeof pending);
			return;
		}
	}
}

/* An alert (alert_command) and a log line for each certificate within 30 days of its end,
 * once a day per certificate. */
static void master_cert_expiry(void)
{
	static uint64_t next;
	static struct { char serial[65]; uint64_t at; } said[64];
	uint64_t now = mono_ms();
	if (now < next)
		return;
	next = now + 60000;
	int64_t wall = (int64_t)(wall_ms() / 1000);
	for (size_t i = 0; i < g_conf->nlisteners; i++) {
		const struct lb_listener *l = &g_conf->listeners[i];
		for (size_t k = 0; l->tlsm && k < l->tlsm->ncerts; k++) {
			const struct lb_cert *c = &l->tlsm->certs[k];
			int64_t left = c->info.not_after - wall;
			if (left > 30 * 86400)
				continue;
			size_t j = 0, free_j = 64;
			for (; j < 64 && strcmp(said[j].serial, c->info.serial); j++)
				if (!said[j].serial[0] && free_j == 64)
					free_j = j;
			if (j < 64 && now - said[j].at < 86400000)
				continue;
			if (j == 64 && (j = free_j) == 64)
				j = 0;
			snprintf(said[j].serial, sizeof said[j].serial, "%s", c->info.serial);
			said[j].at = now;
			char why[512];
			snprintf(why, sizeof why, "listener %s: certificate %s (%s, serial %s) %s %lld days%s", l->name, c->file,
			         c->info.names[0], c->info.serial, left < 0 ? "expired" : "expires in",
			         (long long)((left < 0 ? -left : left) / 86400), left < 0 ? " ago" : "");
			lb_err("%s", why);
			event_emit("cert_expiring", NULL, NULL, why);
		}
	}
}

static int master_run(void)
{
	if (pipe2(P.sigpipe, O_NONBLOCK | O_CLOEXEC) != 0)
		return 1;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	int sigs[] = { SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGCHLD };
	for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++)
		sigaction(sigs[i], &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGQUIT, SIG_IGN);
	M.next_rotate = mono_ms() + g_conf->rotate_interval;
	if (spawn_generation() != 0 && live_workers() == 0)
		return 1;
	for (;;) {
		struct pollfd fds[2 + LB_ADMIN_CONNS];
		size_t nfds = 1;
		fds[0] = (struct pollfd){ P.sigpipe[0], POLLIN, 0 };
		admin_poll_fds(fds, &nfds); /* also while stopping: /healthz says 503 */
		if (poll(fds, (nfds_t)nfds, 200) > 0)
			admin_events(fds + 1, nfds - 1);
		else
			admin_events(fds, 0); /* timeouts and pending removals */
		master_signals();
		master_reap(); /* also catches a SIGCHLD that raced the handler install */
		log_throttle_flush();
		if (M.mstop) {
			if (M.stop_at && mono_ms() >= M.stop_at)
				master_stop_now();
			if (!M.stop_at && live_workers() == 0)
				break;
			if (mono_ms() >= M.mstop_deadline) {
				for (int i = 0; i < LB_MAX_WORKERS; i++)
					if (g_wk[i].pid)
						kill(g_wk[i].pid, SIGKILL);
			}
			continue;
		}
		master_restart_due();
		master_log_tick();
		master_cert_watch();
		tls_tickets_tick(g_conf);
		master_cert_expiry();
		master_events();
		history_tick();
	}
	master_reap();
	log_server_totals("totals");
	lb_info("stopped");
	return 0;
}

/* ==================================================================== 16. main, lb ctl
 * The command line (lb -t, lb --keys, lb -v), the config's first load (load_config), the shared
 * segments, then the master's loop (section 15). The last subsections, lb ctl, are the admin API's
 * client: its commands, and status / top, which read /api/stats (lb_jdoc_*) into aligned tables.
 * Calls sections 2, 3, 4, 6, 7, 11, 12, 13 and 15. */

static void usage(FILE *f)
{
	fprintf(f, "usage: lb [-c FILE] [-u USER]  run in the foreground (default FILE: config.ini)\n"
	           "       lb -t [-c FILE]         check the configuration and exit (0 valid, 1 errors)\n"
	           "       lb ctl [-c FILE] ...    drive a running lb through its admin API (lb ctl -h)\n"
	           "       lb --keys               print the config keys: section, key (* repeatable), default, meaning\n"
	           "       lb -v                   print the version\n"
	           "       lb -h                   this help\n"
	           "  -u USER   workers run as USER (overrides [global] user); as root, lb refuses to\n"
	           "            run without a user unless -u root says so explicitly\n");
}

/* lb --keys: one tab-separated line per row of the key table (tests/keys.py compares README with it) */
static int print_keys(FILE *f)
{
	struct lb_key_info k;
	for (size_t i = 0; lb_conf_key(i, &k) == 0; i++)
		fprintf(f, "%s\t%s%s\t%s\t%s\n", k.section, k.name, k.repeat ? "*" : "", k.def ? k.def : "-",
		        k.later ? "not supported yet" : k.doc ? k.doc : "(read by linode-scaler)");
	return 0;
}

static void report_cfg_errors(const char *path, const struct lb_cfg_errors *e, int to_log)
{
	for (int i = 0; i < e->n; i++) {
		if (to_log && e->e[i].line > 0)
			lb_err("%s:%d: %s", path, e->e[i].line, e->e[i].msg);
		else if (to_log)
			lb_err("%s: %s", path, e->e[i].msg);
		else if (e->e[i].line > 0)
			fprintf(stderr, "%s:%d: %s\n", path, e->e[i].line, e->e[i].msg);
		else
			fprintf(stderr, "%s: %s\n", path, e->e[i].msg);
	}
	if (e->total > e->n) {
		if (to_log)
			lb_err("%s: %d more errors not shown", path, e->total - e->n);
		else
			fprintf(stderr, "%s: %d more errors not shown\n", path, e->total - e->n);
	}
}

static struct lb_conf *load_config(const char *path, int to_log)
{
	size_t len = 0;
	char *text = read_file(path, &len);
	if (!text) {
		if (to_log)
			lb_err("%s: cannot read: %s", path, strerror(errno));
		else
			fprintf(stderr, "%s: cannot read: %s\n", path, strerror(errno));
		return NULL;
	}
	struct lb_cfg_errors *errs = calloc(1, sizeof *errs);
	struct lb_conf *c = NULL;
	if (!errs) {
		free(text);
		return NULL;
	}
	if (!(c = conf_validate(text, len, errs)))
		report_cfg_errors(path, errs, to_log);
	free(errs);
	free(text);
	return c;
}

static int write_pid_file(const char *path)
{
	FILE *f = fopen(path, "w");
	if (!f) {
		lb_err("cannot write pid_file %s: %s", path, strerror(errno));
		return -1;
	}
	fprintf(f, "%d\n", (int)getpid());
	fclose(f);
	return 0;
}

/* -------------------------------------------------------------------- lb ctl
 * The admin API from the command line: the address and token come from the config file. Blocking
 * I/O with timeouts: this is a short-lived client, not the proxy. */

struct ctl {
	struct lb_conf *c;
	char token[256];
	size_t token_len;
	int quiet;
	const char *node;          /* --admin HOST:PORT being asked; NULL: the config's [admin] bind */
	struct sockaddr_storage sa; /* its address */
	socklen_t salen;
};

#define CTL_MAX_NODES 16
#define LB_CTL_CONF "/etc/lb/config.ini" /* where deploy/install.sh puts the config lb.service runs */

/* --admin [http://]HOST:PORT[/] (an IPv6 HOST in brackets) -> k->sa; -1 with a message */
static int ctl_node_addr(struct ctl *k, const char *spec)
{
	char host[256], err[128];
	const char *p = strncmp(spec, "http://", 7) ? spec : spec + 7, *colon, *h = p;
	size_t hl;
	if (*p == '[') {
		const char *rb = strchr(p, ']');
		colon = rb && rb[1] == ':' ? rb + 1 : NULL;
		h = p + 1;
		hl = rb ? (size_t)(rb - h) : 0;
	} else {
		colon = strrchr(p, ':');
		hl = colon ? (size_t)(colon - p) : 0;
	}
	char *end = NULL;
	unsigned long port = colon ? strtoul(colon + 1, &end, 10) : 0;
	if (!colon || !hl || hl >= sizeof host || !port || port > 65535 || (*end && strcmp(end, "/"))) {
		fprintf(stderr, "lb ctl: --admin %s: want HOST:PORT or http://HOST:PORT\n", spec);
		return -1;
	}
	memcpy(host, h, hl);
	host[hl] = 0;
	if (resolve_addr(host, (uint16_t)port, 0, &k->sa, &k->salen, err, sizeof err) != 0) {
		fprintf(stderr, "lb ctl: --admin %s: %s\n", spec, err);
		return -1;
	}
	k->node = spec;
	return 0;
}

/* --token-file F: the bearer token for the --admin nodes (surrounding whitespace dropped) */
static int ctl_token_file(struct ctl *k, const char *path)
{
	size_t n = 0;
	char *t = read_file(path, &n), *p = t, *e = t + n;
	if (!t) {
		fprintf(stderr, "lb ctl: --token-file %s: %s\n", path, strerror(errno));
		return -1;
	}
	while (p < e && isspace((unsigned char)*p))
		p++;
	while (e > p && isspace((unsigned char)e[-1]))
		e--;
	int ok = e > p && (size_t)(e - p) < sizeof k->token;
	if (ok)
		memcpy(k->token, p, (size_t)(e - p));
	k->token_len = ok ? (size_t)(e - p) : 0;
	free(t);
	if (!ok)
		fprintf(stderr, "lb ctl: --token-file %s: the token must be 1..255 characters\n", path);
	return ok ? 0 : -1;
}

static int ctl_exchange(const struct ctl *k, int fd, const char *method, const char *path, const char *body,
                        size_t blen, char **out);

/* one call to an --admin node: a 5 s connect (a dead node must not hold up the others), 30 s I/O */
static int ctl_call_node(const struct ctl *k, const char *method, const char *path, const char *body, size_t blen,
                         char **out)
{
	int fd = socket(k->sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -1;
	int rc = connect(fd, (const struct sockaddr *)&k->sa, k->salen), e = errno;
	if (rc != 0 && e == EINPROGRESS) {
		struct pollfd pf = { .fd = fd, .events = POLLOUT };
		socklen_t sl = sizeof e;
		rc = poll(&pf, 1, 5000) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &sl) == 0 && !e ? 0 : -1;
		if (rc != 0 && !e)
			e = ETIMEDOUT;
	}
	if (rc != 0) {
		fprintf(stderr, "lb ctl: %s: cannot connect: %s\n", k->node, strerror(e));
		close(fd);
		return -1;
	}
	struct timeval tv = { 30, 0 };
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	return ctl_exchange(k, fd, method, path, body, blen, out);
}

/* One call: status, and the body (malloc'ed) in *out. -1: no answer. */
static int ctl_call(const struct ctl *k, const char *method, const char *path, const char *body, size_t blen,
                    char **out)
{
	*out = NULL;
	if (k->node)
		return ctl_call_node(k, method, path, body, blen, out);
	const struct lb_bind *b = &k->c->admin_bind;
	int fd = socket(b->sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct timeval tv = { 30, 0 };
	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	struct sockaddr_storage sa = b->sa;
	if (sa.ss_family == AF_INET && ((struct sockaddr_in *)&sa)->sin_addr.s_addr == htonl(INADDR_ANY))
		((struct sockaddr_in *)&sa)->sin_addr.s_addr = htonl(INADDR_LOOPBACK); /* *:port: ask locally */
	if (connect(fd, (struct sockaddr *)&sa, b->salen) != 0) {
		fprintf(stderr, "lb ctl: cannot connect to the admin API at %s:%u: %s\n", b->hp.host[0] ? b->hp.host : "*",
		        b->hp.port, strerror(errno));
		close(fd);
		return -1;
	}
	return ctl_exchange(k, fd, method, path, body, blen, out);
}

/* the request on a connected socket (closed here), the answer's status and body */
static int ctl_exchange(const struct ctl *k, int fd, const char *method, const char *path, const char *body,
                        size_t blen, char **out)
{
	struct abuf q = { 0 };
	ab_printf(&q, "%s %s HTTP/1.1\r\nHost: lb\r\nConnection: close\r\nContent-Length: %zu\r\n", method, path, blen);
	if (k->token_len)
		ab_printf(&q, "Authorization: Bearer %.*s\r\n", (int)k->token_len, k->token);
	ab_put(&q, "\r\n", 2);
	ab_put(&q, body ? body : "", blen);
	int ok = !q.oom;
	for (size_t off = 0; ok && off < q.n;) {
		ssize_t w = send(fd, q.d + off, q.n - off, MSG_NOSIGNAL);
		ok = w > 0;
		off += ok ? (size_t)w : 0;
	}
	free(q.d);
	struct abuf r = { 0 };
	char tmp[16384];
	ssize_t n;
	while (ok && (n = recv(fd, tmp, sizeof tmp, 0)) > 0)
		ab_put(&r, tmp, (size_t)n);
	close(fd);
	int st = -1;
	char *sep = r.d ? strstr(r.d, "\r\n\r\n") : NULL;
	if (r.d && sep && sscanf(r.d, "HTTP/1.%*d %d", &st) == 1) {
		*out = strdup(sep + 4);
	} else {
		fprintf(stderr, "lb ctl: no valid answer from the admin API\n");
		st = -1;
	}
	free(r.d);
	return st;
}

/* call, print the body, exit status 0 for 2xx */
static int ctl_simple(const struct ctl *k, const char *method, const char *path, const char *body, size_t blen)
{
	char *out;
	int st = ctl_call(k, method, path, body, blen, &out);
	if (out && !k->quiet)
		fputs(out, st >= 200 && st < 300 ? stdout : stderr);
	free(out);
	return st >= 200 && st < 300 ? 0 : 1;
}

/* the state of pool/server in /api/stats ("up", "down", ...), "" when absent, NULL on error */
static const char *ctl_server_state(const struct ctl *k, const char *pool, const char *server, char *buf, size_t cap)
{
	char *out, pat[2 * LB_NAME_MAX + 64];
	if (ctl_call(k, "GET", "/api/stats", NULL, 0, &out) != 200 || !out) {
		free(out);
		return NULL;
	}
	buf[0] = 0;
	snprintf(pat, sizeof pat, "{\"name\":\"%s\",\"algorithm\"", pool);
	char *p = strstr(out, pat), *end = p ? strstr(p, "]}") : NULL;
	snprintf(pat, sizeof pat, "{\"name\":\"%s\",\"address\"", server);
	char *s = p ? strstr(p, pat) : NULL;
	if (s && s < end) {
		char *st = strstr(s, "\"state\":\"");
		if (st) {
			st += 9;
			size_t n = strcspn(st, "\"");
			snprintf(buf, cap, "%.*s", (int)LB_MIN(n, cap - 1), st);
		}
	}
	free(out);
	return buf;
}

static void ctl_sleep_ms(uint64_t ms)
{
	struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* wait until the server's state is `want` ("" = gone); 0 or -1 after timeout_ms */
static int ctl_wait_state(const struct ctl *k, const char *pool, const char *server, const char *want,
                          uint64_t timeout_ms)
{
	char st[32];
	uint64_t end = mono_ms() + timeout_ms;
	for (;;) {
		const char *s = ctl_server_state(k, pool, server, st, sizeof st);
		if (s && !strcmp(s, want))
			return 0;
		if (mono_ms() >= end)
			return -1;
		ctl_sleep_ms(200);
	}
}

static void ctl_remove(const struct ctl *k, const char *pool, const char *name, uint64_t timeout_ms)
{
	char path[3 * LB_NAME_MAX];
	snprintf(path, sizeof path, "/api/pools/%s/servers/%s", pool, name);
	if (ctl_simple(k, "DELETE", path, NULL, 0) == 0 && ctl_wait_state(k, pool, name, "", timeout_ms) != 0)
		fprintf(stderr, "lb ctl: %s/%s not removed within %llu ms\n", pool, name, (unsigned long long)timeout_ms);
}

/* Replace a pool's servers by new ones, batch by batch: each batch must pass its health checks
 * within the timeout, or every new server added so far is removed again and the old ones stay. */
static int ctl_rollout(struct ctl *k, const char *pool, const char *spec, unsigned batch, uint64_t interval,
                       uint64_t timeout)
{
	const struct lb_pool *p = conf_pool_of(k->c, pool);
	if (!p) {
		fprintf(stderr, "lb ctl rollout: no pool %s in the config\n", pool);
		return 1;
	}
	char news[64][LB_NAME_MAX], lines[64][512], path[2 * LB_NAME_MAX];
	size_t nn = 0, added = 0;
	const char *q = spec, *end = spec + strlen(spec);
	struct lb_str el;
	while (list_next(&q, end, &el)) {
		struct lb_server_spec sp;
		if (nn == 64 || el.n >= sizeof lines[0] || lb_parse_server(el.p, el.n, &sp) != 0) {
			fprintf(stderr, "lb ctl rollout: bad server '%.*s'\n", (int)el.n, el.p);
			return 1;
		}
		snprintf(lines[nn], sizeof lines[nn], "%.*s", (int)el.n, el.p);
		snprintf(news[nn++], sizeof news[0], "%s", sp.name);
	}
	k->quiet = 1;
	snprintf(path, sizeof path, "/api/pools/%s/servers", pool);
	for (size_t i = 0; i < nn; i += batch) {
		size_t j;
		for (j = i; j < nn && j < i + batch; j++) {
			if (ctl_simple(k, "POST", path, lines[j], strlen(lines[j])) != 0) {
				fprintf(stderr, "lb ctl rollout: adding %s refused\n", news[j]);
				goto rollback;
			}
			added = j + 1;
			printf("added %s\n", news[j]);
		}
		for (j = i; j < nn && j < i + batch; j++) {
			if (ctl_wait_state(k, pool, news[j], "up", timeout) != 0) {
				fprintf(stderr, "lb ctl rollout: %s did not pass its health checks within %llu ms\n", news[j],
				        (unsigned long long)timeout);
				goto rollback;
			}
			printf("%s is up\n", news[j]);
		}
		if (i + batch < nn)
			ctl_sleep_ms(interval);
	}
	for (size_t i = 0; i < p->nservers; i++) {
		int keep = 0;
		for (size_t j = 0; j < nn; j++)
			keep |= !strcmp(news[j], p->servers[i].name);
		if (!keep) {
			ctl_remove(k, pool, p->servers[i].name, timeout + k->c->shutdown_timeout);
			printf("removed %s\n", p->servers[i].name);
		}
	}
	printf("rollout of pool %s done: %zu new servers\n", pool, nn);
	return 0;
rollback:
	for (size_t j = 0; j < added; j++) {
		ctl_remove(k, pool, news[j], timeout + k->c->shutdown_timeout);
		printf("rolled back %s\n", news[j]);
	}
	fprintf(stderr, "lb ctl rollout: rolled back; pool %s keeps its old servers\n", pool);
	return 1;
}

/* the configured cert file whose certificate shares a host name with nc */
static const char *ctl_cert_target(const struct lb_conf *c, const struct lb_cert *nc)
{
	for (size_t i = 0; i < c->nlisteners; i++) {
		const struct lb_listener *l = &c->listeners[i];
		for (size_t k = 0; l->tlsm && k < l->tlsm->ncerts; k++)
			for (size_t a = 0; a < l->tlsm->certs[k].info.nnames; a++)
				for (size_t b = 0; b < nc->info.nnames; b++)
					if (!strcmp(l->tlsm->certs[k].info.names[a], nc->info.names[b]))
						return l->certs[k];
	}
	return NULL;
}

static int ctl_cert_configured(const struct lb_conf *c, const char *file)
{
	for (size_t i = 0; i < c->nlisteners; i++)
		for (size_t k = 0; k < c->listeners[i].ncerts; k++)
			if (!strcmp(c->listeners[i].certs[k], file))
				return 1;
	return 0;
}

/* lb ctl ssl update: check the chain and key (the key must be the certificate's), install them
 * as the configured cert file that names the same host (or --target), reload, and report the
 * serial lb then serves from that file. */
static int ctl_ssl_update(const struct ctl *k, const char *certf, const char *keyf, const char *target)
{
	char err[512];
	size_t cl = 0, kl = 0;
	char *ct = file_read(certf, 1 << 20, &cl, err, sizeof err);
	char *kt = ct ? file_read(keyf, 1 << 20, &kl, err, sizeof err) : NULL;
	char *all = kt ? malloc(cl + kl + 2) : NULL;
	struct lb_tls *t = calloc(1, sizeof *t);
	int rc = 1;
	if (!all || !t) {
		fprintf(stderr, "lb ctl: %s\n", kt ? "out of memory" : err);
		goto out;
	}
	memcpy(all, ct, cl);
	size_t n = cl;
	if (n && all[n - 1] != '\n')
		all[n++] = '\n'; /* so the key's BEGIN line does not follow the last END line */
	memcpy(all + n, kt, kl);
	n += kl;
	struct lb_cert *nc = &t->certs[0];
	if (cert_parse(t, nc, all, n, err, sizeof err) != 0) {
		fprintf(stderr, "lb ctl: %s + %s refused: %s\n", certf, keyf, err);
		goto out;
	}
	if (!target && !(target = ctl_cert_target(k->c, nc))) {
		fprintf(stderr, "lb ctl: no configured cert file holds a certificate for %s; name one with --target FILE\n",
		        nc->info.names[0]);
		goto out;
	}
	if (!ctl_cert_configured(k->c, target)) {
		fprintf(stderr, "lb ctl: %s is not a cert = file of the configuration\n", target);
		goto out;
	}
	if (file_replace(target, all, n, err, sizeof err) != 0) {
		fprintf(stderr, "lb ctl: %s\n", err);
		goto out;
	}
	char *body = NULL;
	int st = ctl_call(k, "POST", "/api/reload", NULL, 0, &body);
	free(body);
	if (st != 200) {
		fprintf(stderr, "lb ctl: %s installed, but the reload failed (HTTP %d); lb watches the file and will retry\n",
		        target, st);
		goto out;
	}
	char want[PATH_MAX + 128];
	snprintf(want, sizeof want, "\"file\":\"%s\",\"serial\":\"%s\"", target, nc->info.serial);
	uint64_t end = mono_ms() + 10000;
	while (mono_ms() < end && rc) {
		if (ctl_call(k, "GET", "/api/stats", NULL, 0, &body) == 200 && body && strstr(body, want)) {
			printf("%s: serving serial %s for %s (expires in %lld days)\n", target, nc->info.serial,
			       nc->info.names[0], (long long)((nc->info.not_after - (int64_t)time(NULL)) / 86400));
			rc = 0;
		}
		free(body);
		if (rc)
			ctl_sleep_ms(200);
	}
	if (rc)
		fprintf(stderr, "lb ctl: %s installed and reloaded, but lb does not report serial %s after 10 s (see its error log)\n",
		        target, nc->info.serial);
out:
	tls_free(t);
	free(all);
	free(ct);
	free(kt);
	return rc;
}

/* -------------------------------------------------------------------- lb ctl status, lb ctl top
 * /api/stats for people: aligned tables (status) and a view refreshed in place (top). The JSON is
 * read through lb_jdoc_* (section 3); a key the API does not have (yet) shows as "-". */

/* a scalar's text for a cell (cut to cap), "-" when absent, null or not a scalar */
static const char *jdoc_text(const struct lb_jdoc *d, long i, char *buf, size_t cap)
{
	const char *v = lb_jdoc_str(d, i);
	if (!v && (!(v = lb_jdoc_lit(d, i)) || !strcmp(v, "null")))
		return "-";
	snprintf(buf, cap, "%s", v);
	return buf;
}

static const char *jdoc_field(const struct lb_jdoc *d, long o, const char *key, char *buf, size_t cap)
{
	return jdoc_text(d, lb_jdoc_get(d, o, key), buf, cap);
}

static uint64_t jdoc_num(const struct lb_jdoc *d, long o, const char *key)
{
	char b[32];
	return strtoull(jdoc_field(d, o, key, b, sizeof b), NULL, 10);
}

/* A table: cells are added row by row, then printed with each column as wide as its widest cell. */
#define CTL_COLS 12
struct ctl_table {
	int ncol;
	size_t nrow, cap;
	char (*cell)[CTL_COLS][128]; /* the last column (a reason) may be a sentence */
};

static void tab_row(struct ctl_table *t, const char *const *v)
{
	if (t->nrow == t->cap) {
		size_t nc = t->cap ? 2 * t->cap : 16;
		void *p = realloc(t->cell, nc * sizeof *t->cell);
		if (!p)
			return;
		t->cell = p, t->cap = nc;
	}
	for (int c = 0; c < t->ncol; c++)
		snprintf(t->cell[t->nrow][c], sizeof t->cell[0][0], "%s", v[c] ? v[c] : "-");
	t->nrow++;
}

static void tab_print(struct ctl_table *t, FILE *f)
{
	size_t w[CTL_COLS] = { 0 };
	for (size_t r = 0; r < t->nrow; r++)
		for (int c = 0; c < t->ncol; c++)
			w[c] = LB_MAX(w[c], strlen(t->cell[r][c]));
	for (size_t r = 0; r < t->nrow; r++) {
		for (int c = 0; c + 1 < t->ncol; c++)
			fprintf(f, "%-*s  ", (int)w[c], t->cell[r][c]);
		fprintf(f, "%s\n", t->cell[r][t->ncol - 1]);
	}
	free(t->cell);
	*t = (struct ctl_table){ 0 };
}

/* why a server takes no traffic, from what /api/stats says: its own "reason" when it has one */
static const char *ctl_reason(const struct lb_jdoc *d, long sv, char *buf, size_t cap)
{
	char st[32], h[16], cb[16];
	for (const char *const *k = (const char *const[]){ "reason", "down_reason", NULL }; *k; k++)
		if (strcmp(jdoc_field(d, sv, *k, buf, cap), "-") && buf[0])
			return buf;
	jdoc_field(d, sv, "state", st, sizeof st);
	if (!strcmp(st, "up"))
		return "-";
	if (!strcmp(jdoc_field(d, sv, "health", h, sizeof h), "down"))
		return "health checks failing";
	if (!strcmp(jdoc_field(d, sv, "circuit", cb, sizeof cb), "open"))
		return "circuit open";
	snprintf(buf, cap, "%s by the admin API", st);
	return buf;
}

/* the listener of c (NULL: no file read) named name */
static const struct lb_listener *ctl_listener(const struct lb_conf *c, const char *name)
{
	for (size_t i = 0; c && i < c->nlisteners; i++)
		if (!strcmp(c->listeners[i].name, name))
			return &c->listeners[i];
	return NULL;
}

static void ctl_status_tables(const struct ctl *k, const struct lb_jdoc *d, FILE *f)
{
	char a[8][48], big[256];
	fprintf(f, "lb %s  generation %s  workers %s  draining %s\n\n", jdoc_field(d, 0, "version", a[0], 48),
	        jdoc_field(d, 0, "generation", a[1], 48), jdoc_field(d, 0, "workers", a[2], 48), jdoc_field(d, 0, "draining", a[3], 48));
	struct ctl_table pt = { .ncol = 6 }, st = { .ncol = 11 };
	tab_row(&pt, (const char *[]){ "POOL", "ALGORITHM", "SERVERS", "UP", "REQUESTS", "ERRORS" });
	tab_row(&st, (const char *[]){ "POOL", "SERVER", "ADDRESS", "STATE", "WEIGHT", "ACTIVE", "REQUESTS", "ERRORS", "5XX",
	                               "CIRCUIT", "REASON" });
	long pools = lb_jdoc_get(d, 0, "pools");
	for (long p = lb_jdoc_next(d, pools, -1); p >= 0; p = lb_jdoc_next(d, pools, p)) {
		long svs = lb_jdoc_get(d, p, "servers");
		uint64_t n = 0, up = 0, req = 0, err = 0;
		char pn[48];
		jdoc_field(d, p, "name", pn, sizeof pn);
		for (long s = lb_jdoc_next(d, svs, -1); s >= 0; s = lb_jdoc_next(d, svs, s)) {
			n++;
			up += !strcmp(jdoc_field(d, s, "state", a[0], 48), "up");
			req += jdoc_num(d, s, "requests");
			err += jdoc_num(d, s, "errors");
			long sc = lb_jdoc_get(d, s, "status");
			tab_row(&st, (const char *[]){ pn, jdoc_field(d, s, "name", a[1], 48), jdoc_field(d, s, "address", a[2], 48), a[0],
			                               jdoc_field(d, s, "weight", a[3], 48), jdoc_field(d, s, "active", a[4], 48),
			                               jdoc_field(d, s, "requests", a[5], 48), jdoc_field(d, s, "errors", a[6], 48),
			                               jdoc_field(d, sc, "5xx", a[7], 48), jdoc_field(d, s, "circuit", big + 200, 48),
			                               ctl_reason(d, s, big, 200) });
		}
		char cn[4][24];
		snprintf(cn[0], 24, "%llu", (unsigned long long)n), snprintf(cn[1], 24, "%llu", (unsigned long long)up);
		snprintf(cn[2], 24, "%llu", (unsigned long long)req), snprintf(cn[3], 24, "%llu", (unsigned long long)err);
		tab_row(&pt, (const char *[]){ pn, jdoc_field(d, p, "algorithm", a[1], 48), cn[0], cn[1], cn[2], cn[3] });
	}
	tab_print(&pt, f);
	fputc('\n', f);
	tab_print(&st, f);
	struct ctl_table rt = { .ncol = 6 };
	tab_row(&rt, (const char *[]){ "ROUTE", "POOL", "REQUESTS", "RATE_LIMITED", "DENIED", "SPLIT" });
	long routes = lb_jdoc_get(d, 0, "routes");
	for (long r = lb_jdoc_next(d, routes, -1); r >= 0; r = lb_jdoc_next(d, routes, r)) {
		long sp = lb_jdoc_get(d, r, "split");
		size_t o = 0;
		big[0] = 0;
		for (long e = lb_jdoc_next(d, sp, -1); e >= 0 && o < 40; e = lb_jdoc_next(d, sp, e))
			o += (size_t)snprintf(big + o, 48 - o, "%s%s %s", o ? ", " : "", jdoc_field(d, e, "pool", a[6], 48),
			                      jdoc_field(d, e, "weight", a[7], 48));
		tab_row(&rt, (const char *[]){ jdoc_field(d, r, "name", a[0], 48), jdoc_field(d, r, "pool", a[1], 48),
		                               jdoc_field(d, r, "requests", a[2], 48), jdoc_field(d, r, "rate_limited", a[3], 48),
		                               jdoc_field(d, r, "denied", a[4], 48), big[0] ? big : "-" });
	}
	if (rt.nrow > 1) {
		fputc('\n', f);
		tab_print(&rt, f);
	} else {
		free(rt.cell);
	}
	struct ctl_table lt = { .ncol = 6 };
	tab_row(&lt, (const char *[]){ "LISTENER", "BIND", "PROTOCOL", "ACTIVE", "ACCEPTED", "POOL" });
	long ls = lb_jdoc_get(d, 0, "listeners");
	for (long l = lb_jdoc_next(d, ls, -1); l >= 0; l = lb_jdoc_next(d, ls, l)) {
		long bs = lb_jdoc_get(d, l, "binds");
		const struct lb_listener *L = ctl_listener(k->c, jdoc_field(d, l, "name", a[0], 48));
		snprintf(a[1], 48, "%s%s", bs >= 0 && d->t[bs].size ? jdoc_text(d, bs + 1, a[5], 40) : "-",
		         bs >= 0 && d->t[bs].size > 1 ? " +" : "");
		tab_row(&lt, (const char *[]){ a[0], a[1], jdoc_field(d, l, "protocol", a[2], 48), jdoc_field(d, l, "active", a[3], 48),
		                               jdoc_field(d, l, "accepted", a[4], 48),
		                               L && L->pool >= 0 ? k->c->pools[L->pool].name : "-" });
	}
	for (size_t i = 0; ls < 0 && k->c && i < k->c->nlisteners; i++) { /* an older lb's API has none: the config's */
		const struct lb_listener *L = &k->c->listeners[i];
		const struct lb_hostport *hp = &L->binds[0].hp;
		snprintf(a[1], 48, hp->v6 ? "[%s]:%u%s" : "%s:%u%s", hp->wildcard ? "*" : hp->host, (unsigned)hp->port,
		         L->nbinds > 1 ? " +" : "");
		tab_row(&lt, (const char *[]){ L->name, a[1], L->mode == LB_MODE_TCP ? "tcp" : L->tls ? "https" : "http", "-", "-",
		                               L->pool >= 0 ? k->c->pools[L->pool].name : "-" });
	}
	fputc('\n', f);
	tab_print(&lt, f);
	struct ctl_table ct = { .ncol = 5 };
	tab_row(&ct, (const char *[]){ "CERTIFICATE", "LISTENER", "NAMES", "SERIAL", "EXPIRES_IN_DAYS" });
	long tls = lb_jdoc_get(d, 0, "tls"), cs = lb_jdoc_get(d, tls, "certificates");
	for (long c = lb_jdoc_next(d, cs, -1); c >= 0; c = lb_jdoc_next(d, cs, c)) {
		long nm = lb_jdoc_get(d, c, "names");
		size_t o = 0;
		big[0] = 0;
		for (long e = lb_jdoc_next(d, nm, -1); e >= 0 && o < 40; e = lb_jdoc_next(d, nm, e))
			o += (size_t)snprintf(big + o, 48 - o, "%s%s", o ? "," : "", jdoc_text(d, e, a[6], 48));
		snprintf(a[5], 48, "%lld", strtoll(jdoc_field(d, c, "expires_in_s", a[7], 48), NULL, 10) / 86400);
		tab_row(&ct, (const char *[]){ jdoc_field(d, c, "file", big + 64, 192), jdoc_field(d, c, "listener", a[1], 48), big,
		                               jdoc_field(d, c, "serial", a[2], 48), a[5] });
	}
	if (ct.nrow > 1) {
		fputc('\n', f);
		tab_print(&ct, f);
	} else {
		free(ct.cell);
	}
}

/* lb ctl status: the tables, or (--json) /api/stats as it came */
static int ctl_status(const struct ctl *k, int json)
{
	char *out = NULL;
	int st = ctl_call(k, "GET", "/api/stats", NULL, 0, &out), rc = 1;
	struct lb_jdoc d;
	if (st != 200 || !out) {
		fprintf(stderr, "lb ctl status: %s%s", st > 0 ? "the admin API answered: " : "no answer\n", st > 0 && out ? out : "");
	} else if (json) {
		fputs(out, stdout);
		rc = 0;
	} else if (lb_jdoc_parse(out, strlen(out), &d) != 0) {
		fprintf(stderr, "lb ctl status: /api/stats is not the JSON expected\n");
	} else {
		ctl_status_tables(k, &d, stdout);
		lb_jdoc_free(&d);
		rc = 0;
	}
	free(out);
	return rc;
}

static struct termios g_top_tio; /* lb ctl top: the terminal's mode before, restored on every way out */

static void ctl_top_sigint(int sig)
{
	tcsetattr(0, TCSANOW, &g_top_tio); /* async-signal-safe */
	_exit(128 + sig);
}

/* lb ctl top: a compact view every interval (in place on a terminal), rates from the last one; q or
 * Ctrl-C ends it, or --count N refreshes */
static int ctl_top(const struct ctl *k, uint64_t count, uint64_t interval)
{
	enum { TOP_MAX = 256 };
	static char names[TOP_MAX][2 * LB_NAME_MAX + 2];
	static uint64_t last_req[TOP_MAX];
	int tty = isatty(1), in_tty = isatty(0);
	struct termios raw;
	if (in_tty && tcgetattr(0, &g_top_tio) == 0) {
		raw = g_top_tio;
		raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
		signal(SIGINT, ctl_top_sigint);
		signal(SIGTERM, ctl_top_sigint);
		tcsetattr(0, TCSANOW, &raw);
	} else {
		in_tty = 0;
	}
	uint64_t prev_ms = 0;
	int rc = 0;
	for (uint64_t n = 0; !count || n < count; n++) {
		char *out = NULL, a[6][48], line[64];
		int st = ctl_call(k, "GET", "/api/stats", NULL, 0, &out);
		struct lb_jdoc d;
		uint64_t now = mono_ms();
		if (st != 200 || !out || lb_jdoc_parse(out, strlen(out), &d) != 0) {
			free(out);
			fprintf(stderr, "lb ctl top: no usable answer from the admin API\n");
			rc = 1;
			break;
		}
		if (tty)
			fputs("\033[H\033[2J", stdout);
		time_t t = time(NULL);
		struct tm tm;
		localtime_r(&t, &tm);
		strftime(line, sizeof line, "%H:%M:%S", &tm);
		printf("lb %s  %s  generation %s  workers %s  (q quits)\n", jdoc_field(&d, 0, "version", a[0], 48), line,
		       jdoc_field(&d, 0, "generation", a[1], 48), jdoc_field(&d, 0, "workers", a[2], 48));
		struct ctl_table tb = { .ncol = 7 };
		tab_row(&tb, (const char *[]){ "SERVER", "STATE", "REQ/S", "ACTIVE", "REQUESTS", "ERRORS", "REASON" });
		long pools = lb_jdoc_get(&d, 0, "pools");
		size_t si = 0;
		for (long p = lb_jdoc_next(&d, pools, -1); p >= 0; p = lb_jdoc_next(&d, pools, p)) {
			long svs = lb_jdoc_get(&d, p, "servers");
			for (long s = lb_jdoc_next(&d, svs, -1); s >= 0; s = lb_jdoc_next(&d, svs, s), si++) {
				char nm[2 * LB_NAME_MAX + 2], rate[24], why[200];
				snprintf(nm, sizeof nm, "%s/%s", jdoc_field(&d, p, "name", a[0], 48), jdoc_field(&d, s, "name", a[1], 48));
				uint64_t req = jdoc_num(&d, s, "requests");
				int known = si < TOP_MAX && prev_ms && !strcmp(names[si], nm) && req >= last_req[si];
				if (known)
					snprintf(rate, sizeof rate, "%.1f", (double)(req - last_req[si]) * 1000.0 / (double)LB_MAX(now - prev_ms, 1));
				else
					snprintf(rate, sizeof rate, "-");
				if (si < TOP_MAX) {
					snprintf(names[si], sizeof names[si], "%s", nm);
					last_req[si] = req;
				}
				tab_row(&tb, (const char *[]){ nm, jdoc_field(&d, s, "state", a[2], 48), rate, jdoc_field(&d, s, "active", a[3], 48),
				                               jdoc_field(&d, s, "requests", a[4], 48), jdoc_field(&d, s, "errors", a[5], 48),
				                               ctl_reason(&d, s, why, sizeof why) });
			}
		}
		tab_print(&tb, stdout);
		if (!tty)
			fputc('\n', stdout);
		fflush(stdout);
		lb_jdoc_free(&d);
		free(out);
		prev_ms = now;
		if (count && n + 1 == count)
			break;
		struct pollfd pf = { .fd = 0, .events = POLLIN };
		int quit = 0;
		for (uint64_t end = mono_ms() + interval; !quit && mono_ms() < end;) {
			char ch;
			if (in_tty && poll(&pf, 1, (int)LB_MIN(end - mono_ms(), 1000u)) == 1)
				quit = read(0, &ch, 1) != 1 || ch == 'q' || ch == 'Q' || ch == 3;
			else if (!in_tty)
				ctl_sleep_ms(LB_MIN(end - mono_ms(), 1000u));
		}
		if (quit)
			break;
	}
	if (in_tty)
		tcsetattr(0, TCSANOW, &g_top_tio);
	return rc;
}

static int ctl_usage(void)
{
	fprintf(stderr,
	        "usage: lb ctl [-c FILE] status [--json] | reload     (FILE: /etc/lb/config.ini, else ./config.ini)\n"
	        "       lb ctl [-c FILE] top [--count N] [--interval 1s]   a live view; q or Ctrl-C quits\n"
	        "       lb ctl [-c FILE] [--token-file F] --admin HOST:PORT [--admin HOST:PORT]... status | reload |\n"
	        "              server ... | split ...   each node in turn, its answer under \"== HOST:PORT: STATUS\"\n"
	        "       lb ctl [-c FILE] config apply --file F [--validate]\n"
	        "       lb ctl [-c FILE] server add POOL \"NAME HOST:PORT [weight=N] ...\"\n"
	        "       lb ctl [-c FILE] server drain|enable|disable|remove POOL NAME\n"
	        "       lb ctl [-c FILE] server weight POOL NAME N\n"
	        "       lb ctl [-c FILE] split ROUTE \"blue 0, green 100\"\n"
	        "       lb ctl [-c FILE] ssl update --cert CHAIN.pem --key KEY.pem [--target CERT_FILE]\n"
	        "       lb ctl [-c FILE] rollout POOL --new-servers \"a HOST:PORT, b HOST:PORT\" [--batch-size N]\n"
	        "                        [--interval 30s] [--timeout 60s]\n");
	return 2;
}

/* one call to every --admin node in turn; each answer under a line "== NODE: STATUS"; 0 when
 * every node answered 2xx. A node that does not answer does not stop the others. */
static int ctl_each(struct ctl *k, const char *const *nodes, int n, const char *method, const char *path,
                    const char *body, size_t blen)
{
	int bad = 0;
	for (int i = 0; i < n; i++) {
		char *out = NULL;
		int st = ctl_node_addr(k, nodes[i]) == 0 ? ctl_call(k, method, path, body, blen, &out) : -1;
		if (st < 0)
			printf("== %s: no answer\n", nodes[i]);
		else
			printf("== %s: %d\n%s%s", nodes[i], st, out ? out : "",
			       out && *out && out[strlen(out) - 1] != '\n' ? "\n" : "");
		fflush(stdout);
		bad |= st < 200 || st >= 300;
		free(out);
	}
	return bad;
}

static int ctl_main(int argc, char **argv)
{
	/* the config the deploy files install (deploy/lb.service), else the one in the current directory */
	const char *path = access(LB_CTL_CONF, F_OK) == 0 ? LB_CTL_CONF : "config.ini", *token_file = NULL;
	const char *nodes[CTL_MAX_NODES];
	int i = 0, nnodes = 0, have_c = 0;
	while (argc > 1 && (!strcmp(argv[0], "-c") || !strcmp(argv[0], "--admin") || !strcmp(argv[0], "--token-file"))) {
		if (!strcmp(argv[0], "-c"))
			path = argv[1], have_c = 1;
		else if (!strcmp(argv[0], "--token-file"))
			token_file = argv[1];
		else if (nnodes == CTL_MAX_NODES)
			return fprintf(stderr, "lb ctl: at most %d --admin nodes\n", CTL_MAX_NODES), 2;
		else
			nodes[nnodes++] = argv[1];
		argv += 2, argc -= 2;
	}
	if (argc < 1)
		return ctl_usage();
	struct ctl k = { 0 };
	if (nnodes && token_file && !have_c) { /* the nodes and their token: no config file needed */
		if (ctl_token_file(&k, token_file) != 0)
			return 1;
	} else {
		if (!have_c && access(path, F_OK) != 0) {
			fprintf(stderr, "lb ctl: no -c FILE, and neither %s nor ./config.ini exists\n", LB_CTL_CONF);
			return 1;
		}
		k.c = load_config(path, 0);
		if (!k.c)
			return 1;
		if (!k.c->admin_on && !nnodes) {
			fprintf(stderr, "lb ctl: %s has no [admin] section\n", path);
			lb_conf_free(k.c);
			return 1;
		}
		if (token_file ? ctl_token_file(&k, token_file) != 0 :
		                 k.c->admin_token_file && admin_token_load(k.c, k.token, &k.token_len) != 0) {
			lb_conf_free(k.c);
			return 1;
		}
	}
	char url[4 * LB_NAME_MAX];
	const char *cmd = argv[0];
	const char *method = NULL, *body = NULL; /* a command --admin may send to several nodes */
	int rc = -1;
	if (!strcmp(cmd, "status") && argc == 1 && nnodes) {
		method = "GET", snprintf(url, sizeof url, "/api/stats");
	} else if (!strcmp(cmd, "status") && !nnodes && (argc == 1 || (argc == 2 && !strcmp(argv[1], "--json")))) {
		rc = ctl_status(&k, argc == 2);
	} else if (!strcmp(cmd, "top") && !nnodes) {
		uint64_t count = 0, interval = 1000;
		int bad = 0;
		for (i = 1; i < argc && !bad; i += 2) {
			const char *v = i + 1 < argc ? argv[i + 1] : NULL;
			if (v && !strcmp(argv[i], "--count"))
				bad = parse_uint64(v, strlen(v), 1000000, &count) != 0 || !count;
			else if (v && !strcmp(argv[i], "--interval"))
				bad = lb_parse_duration(v, strlen(v), &interval) != 0 || interval < 100;
			else
				bad = 1;
		}
		rc = bad ? ctl_usage() : ctl_top(&k, count, interval);
	} else if (!strcmp(cmd, "reload") && argc == 1) {
		method = "POST", snprintf(url, sizeof url, "/api/reload");
	} else if (!strcmp(cmd, "server") && argc == 4 && !strcmp(argv[1], "add")) {
		snprintf(url, sizeof url, "/api/pools/%.63s/servers", argv[2]);
		method = "POST", body = argv[3];
	} else if (!strcmp(cmd, "server") && argc == 4 && !strcmp(argv[1], "remove")) {
		snprintf(url, sizeof url, "/api/pools/%.63s/servers/%.63s", argv[2], argv[3]);
		method = "DELETE";
	} else if (!strcmp(cmd, "server") && argc == 4 &&
	           (!strcmp(argv[1], "drain") || !strcmp(argv[1], "enable") || !strcmp(argv[1], "disable"))) {
		snprintf(url, sizeof url, "/api/pools/%.63s/servers/%.63s/%s", argv[2], argv[3], argv[1]);
		method = "POST";
	} else if (!strcmp(cmd, "server") && argc == 5 && !strcmp(argv[1], "weight")) {
		snprintf(url, sizeof url, "/api/pools/%.63s/servers/%.63s/weight", argv[2], argv[3]);
		method = "PUT", body = argv[4];
	} else if (!strcmp(cmd, "split") && argc == 3) {
		snprintf(url, sizeof url, "/api/routes/%.63s/split", argv[1]);
		method = "PUT", body = argv[2];
	} else if (nnodes) {
		fprintf(stderr, "lb ctl: --admin takes status, reload, server and split commands\n");
		rc = ctl_usage();
	} else if (!strcmp(cmd, "config") && argc >= 4 && !strcmp(argv[1], "apply") && !strcmp(argv[2], "--file")) {
		size_t len = 0;
		char *t = read_file(argv[3], &len);
		int validate = argc == 5 && !strcmp(argv[4], "--validate");
		if (!t)
			fprintf(stderr, "lb ctl: %s: %s\n", argv[3], strerror(errno));
		else if (argc == 4 || validate)
			rc = ctl_simple(&k, "POST", validate ? "/api/config?dry_run=1" : "/api/config", t, len);
		free(t);
		rc = rc < 0 ? 1 : rc;
	} else if (!strcmp(cmd, "ssl") && (argc == 6 || argc == 8) && !strcmp(argv[1], "update") &&
	           !strcmp(argv[2], "--cert") && !strcmp(argv[4], "--key") && (argc == 6 || !strcmp(argv[6], "--target"))) {
		rc = ctl_ssl_update(&k, argv[3], argv[5], argc == 8 ? argv[7] : NULL);
	} else if (!strcmp(cmd, "rollout") && argc >= 4) {
		const char *spec = NULL;
		uint64_t batch = 1, interval = 30000, timeout = 60000;
		int bad = 0;
		for (i = 2; i < argc && !bad; i += 2) {
			const char *v = i + 1 < argc ? argv[i + 1] : NULL;
			if (!v)
				bad = 1;
			else if (!strcmp(argv[i], "--new-servers"))
				spec = v;
			else if (!strcmp(argv[i], "--batch-size"))
				bad = parse_uint64(v, strlen(v), 64, &batch) != 0 || batch == 0;
			else if (!strcmp(argv[i], "--interval"))
				bad = lb_parse_duration(v, strlen(v), &interval) != 0;
			else if (!strcmp(argv[i], "--timeout"))
				bad = lb_parse_duration(v, strlen(v), &timeout) != 0;
			else
				bad = 1;
		}
		rc = bad || !spec ? ctl_usage() : ctl_rollout(&k, argv[1], spec, (unsigned)batch, interval, timeout);
	} else {
		rc = ctl_usage();
	}
	if (method && nnodes)
		rc = ctl_each(&k, nodes, nnodes, method, url, body, body ? strlen(body) : 0);
	else if (method)
		rc = ctl_simple(&k, method, url, body, body ? strlen(body) : 0);
	lb_conf_free(k.c);
	return rc;
}

int lb_main(int argc, char **argv)
{
	if (argc > 1 && !strcmp(argv[1], "ctl"))
		return ctl_main(argc - 2, argv + 2);
	const char *path = "config.ini", *user = NULL;
	int check = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-c") && i + 1 < argc)
			path = argv[++i];
		else if (!strcmp(argv[i], "-u") && i + 1 < argc)
			user = argv[++i];
		else if (!strcmp(argv[i], "-t"))
			check = 1;
		else if (!strcmp(argv[i], "--keys"))
			return print_keys(stdout);
		else if (!strcmp(argv[i], "-v")) {
			printf("lb %s (" LB_TLS_LIB ", inih; %s)\n", LB_VERSION,
#ifdef LB_EPOLL
			       "epoll"
#else
			       "poll"
#endif
			);
			return 0;
		} else if (!strcmp(argv[i], "-h")) {
			usage(stdout);
			return 0;
		} else {
			usage(stderr);
			return 2;
		}
	}
	struct lb_conf *conf = load_config(path, 0); /* written until it is g_conf, read-only after */
	if (!conf)
		return 1;
	if (user) {
		free(conf->user);
		conf->user = strdup(user);
	}
	g_conf = conf;
	P.errlevel = g_conf->log_level;
	if (check) {
		char tok[sizeof ADM.token];
		size_t tl;
		/* what the start would refuse beyond conf_validate: the token file, an unknown user (as root) */
		if (admin_token_load(g_conf, tok, &tl) != 0 || (geteuid() == 0 && resolve_user(g_conf) != 0)) {
			lb_conf_free(conf);
			return 1;
		}
		printf("%s: configuration is valid\n", path);
		lb_conf_free(conf);
		return 0;
	}
	if (geteuid() == 0 && !g_conf->user) {
		fprintf(stderr, "lb: refusing to run as root without a user: set [global] user = NAME (workers drop "
		                "to it) or pass -u root to run as root on purpose\n");
		return 1;
	}
	M.conf_path = path;
	P.master_pid = P.pid = getpid();
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max; /* inherited by the workers */
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	P.errfd = 2;
	if (is_file_log(g_conf->error_log) && retarget_log(&P.errfd, g_conf->error_log, 0) != 0)
		return 1;
	if (g_conf->access_log && retarget_log(&P.accfd, g_conf->access_log, 0) != 0)
		return 1;
	if (resolve_user(g_conf) != 0 || shm_create(g_conf) != 0 || shm_map_conf(conf) != 0 ||
	    rl_create(g_conf->rate_limit_entries) != 0 || ipc_create() != 0 || events_create() != 0 ||
	    tls_shared_create(g_conf->tls_session_cache) != 0 ||
	    msocks_open(g_conf) != 0 || admin_token_load(g_conf, ADM.token, &ADM.token_len) != 0 ||
	    admin_listen(g_conf) != 0)
		return 1;
	tls_tickets_tick(g_conf); /* tls_ticket_keys in shared memory before the workers start */
	if (g_conf->pid_file && write_pid_file(g_conf->pid_file) != 0)
		return 1;
	lb_info("lb %s: master pid %d, %u workers, %zu listeners, %zu pools, %zu routes", LB_VERSION, (int)P.pid,
	        worker_count(g_conf), g_conf->nlisteners, g_conf->npools, g_conf->nroutes);
	fd_limit_check(g_conf);
	int rc = master_run();
	if (g_conf->pid_file)
		unlink(g_conf->pid_file);
	return rc;
}

#ifndef LB_NO_MAIN
int main(int argc, char **argv) { return lb_main(argc, argv); }
#endif
