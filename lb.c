/* lb — a load balancer and reverse proxy in one translation unit.
 *
 *   cc -O2 lb.c -o lb -lbearssl -linih
 *
 * Sections, in data-flow order:
 *   1. build options, includes, portability     8. HTTP proxying
 *   2. small utilities                          9. TCP proxying
 *   3. pure parsers                            10. (health checks: later)
 *   4. configuration                           11. (shared memory: later)
 *   5. event loop and timers                   12. (admin API: later)
 *   6. (TLS glue: later)                       13. access log
 *   7. connections                             14. process: signals, graceful stop
 *                                              15. main
 * Tests and fuzzers build this file with -DLB_NO_MAIN and call what lb.h declares.
 */

/* ==================================================================== 1. build options, portability
 * Chooses the event backend: epoll on Linux, poll() elsewhere or with -DLB_POLL. */
#define _GNU_SOURCE
#include "lb.h"

#include <arpa/inet.h>
#include <ctype.h>
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
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define INI_HANDLER_LINENO 1
#include <ini.h>
#include <bearssl.h>

#if defined(__linux__) && !defined(LB_POLL)
#define LB_EPOLL 1
#include <sys/epoll.h>
#endif

#define LB_UNUSED(x) ((void)(x))
#define LB_MIN(a, b) ((a) < (b) ? (a) : (b))
#define LB_MAX(a, b) ((a) > (b) ? (a) : (b))

/* ==================================================================== 2. small utilities
 * Case-insensitive compares, hashing, a tiny PRNG, a log-free natural logarithm. No I/O. */

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

static int is_tchar(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return 1;
	return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

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

/* ==================================================================== 3. pure parsers
 * HTTP request and response heads, chunked framing, config values, paths. Each takes
 * (buf, len, out) and returns a status; strings in out point into buf. No I/O, no globals. */

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
	if (v.n > 18 || parse_uint64(v.p, v.n, INT64_MAX, &n) != 0)
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
static int sem_field(struct head_sem *s, const struct lb_header *h)
{
	struct lb_str n = h->name, v = h->value;
	switch (n.n) {
	case 4:
		if (str_ieq(n.p, n.n, "host")) {
			s->hosts++;
			s->host_value = v;
		}
		break;
	case 6:
		if (str_ieq(n.p, n.n, "expect")) {
			if (str_ieq(v.p, v.n, "100-continue"))
				s->expect_100 = 1;
			else
				s->expect_other = 1;
		}
		break;
	case 7:
		if (str_ieq(n.p, n.n, "upgrade")) {
			s->upgrade_seen = 1;
			s->upgrade = v;
		}
		break;
	case 10:
		if (str_ieq(n.p, n.n, "connection"))
			sem_connection(s, v);
		break;
	case 14:
		if (str_ieq(n.p, n.n, "content-length"))
			return sem_content_length(s, v);
		break;
	case 17:
		if (str_ieq(n.p, n.n, "transfer-encoding"))
			return sem_transfer_encoding(s, v);
		break;
	}
	return 0;
}

/* Read header fields from pos up to and including the empty line.
 * Returns the head length, LB_EAGAIN, or LB_EINVAL with *status and *err set. */
static int parse_fields(const char *b, size_t len, size_t pos, struct lb_header *hs, size_t *nh,
                        struct head_sem *sem, int *status, const char **err)
{
	*nh = 0;
	for (;;) {
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
	CK_SIZE0, CK_SIZE, CK_EXT, CK_SIZE_LF, CK_DATA, CK_DATA_CR, CK_DATA_LF,
	CK_TRAILER0, CK_TRAILER, CK_TRAILER_LF, CK_END_LF, CK_DONE,
};

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
				st->state = CK_EXT;
			} else if (st->state == CK_SIZE && c == '\r') {
				st->state = CK_SIZE_LF;
			} else {
				goto bad;
			}
			if (!chunk_line_byte(st))
				goto bad;
			break;
		case CK_EXT:
			if (c == '\r')
				st->state = CK_SIZE_LF;
			else if (!is_vchar_ws(c) || !chunk_line_byte(st))
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
			st->state = CK_TRAILER;
			st->line = 1;
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

/* ==================================================================== 4. configuration
 * Text -> struct lb_conf. A pre-scan finds sections (so duplicates, empty sections and keys
 * outside sections get exact lines) and the lines inih would mangle; inih then delivers keys,
 * which are mapped to their section by line number. Cross-references are resolved last. */

enum { S_BAD = 0, S_GLOBAL, S_LOG, S_ADMIN, S_SCALER, S_LISTENER, S_POOL, S_ROUTE };

struct keydef {
	const char *name;
	int repeat;          /* may be given more than once */
	const char *later;   /* not built yet: the issue that brings it */
};

static const struct keydef keys_global[] = {
	{ "workers", 0, NULL }, { "max_connections", 0, NULL }, { "pid_file", 0, NULL },
	{ "shutdown_timeout", 0, NULL }, { "user", 0, "the master/worker model" },
	{ "state_file", 0, "the admin API" }, { "alert_command", 0, "alerts" }, { NULL, 0, NULL },
};
static const struct keydef keys_log[] = {
	{ "access", 0, NULL }, { "format", 0, NULL }, { "error", 0, NULL },
	{ "rotate", 0, "log rotation" }, { "retention", 0, "log rotation" }, { NULL, 0, NULL },
};
static const struct keydef keys_admin[] = {
	{ "bind", 0, "the admin API" }, { "token_file", 0, "the admin API" },
	{ "allow", 0, "the admin API" }, { NULL, 0, NULL },
};
static const struct keydef keys_scaler[] = { /* read by linode-scaler; lb only checks the names */
	{ "pool", 0, NULL }, { "admin_url", 0, NULL }, { "admin_token_file", 0, NULL },
	{ "api_url", 0, NULL }, { "token_file", 0, NULL }, { "region", 0, NULL }, { "type", 0, NULL },
	{ "image", 0, NULL }, { "user_data", 0, NULL }, { "authorized_keys_file", 0, NULL },
	{ "tag", 0, NULL }, { "min", 0, NULL }, { "max", 0, NULL }, { "scale_up_cpu", 0, NULL },
	{ "scale_down_cpu", 0, NULL }, { "scale_down_after", 0, NULL }, { "cooldown", 0, NULL },
	{ "interval", 0, NULL }, { "server_port", 0, NULL }, { "server_address", 0, NULL },
	{ NULL, 0, NULL },
};
static const struct keydef keys_listener[] = {
	{ "bind", 1, NULL }, { "mode", 0, NULL }, { "pool", 0, NULL }, { "header_timeout", 0, NULL },
	{ "idle_timeout", 0, NULL }, { "max_header_size", 0, NULL }, { "max_body_size", 0, NULL },
	{ "tls", 0, "TLS" }, { "cert", 1, "TLS" }, { "client_ca", 0, "TLS" },
	{ "redirect_https", 0, "TLS" }, { "acme_webroot", 0, "TLS" }, { "hsts", 0, "TLS" },
	{ "proxy_protocol", 0, "traffic policies" }, { "trusted_proxies", 0, "traffic policies" },
	{ "allow", 1, "traffic policies" }, { "deny", 1, "traffic policies" },
	{ "max_conn_per_ip", 0, "traffic policies" }, { NULL, 0, NULL },
};
static const struct keydef keys_pool[] = {
	{ "server", 1, NULL }, { "algorithm", 0, NULL }, { "connect_timeout", 0, NULL },
	{ "response_timeout", 0, NULL }, { "keepalive", 0, NULL }, { "retries", 0, NULL },
	{ "health_check", 0, "health checks" }, { "health_interval", 0, "health checks" },
	{ "health_timeout", 0, "health checks" }, { "health_rise", 0, "health checks" },
	{ "health_fall", 0, "health checks" }, { "health_expect", 0, "health checks" },
	{ "circuit_failures", 0, "the circuit breaker" }, { "circuit_error_rate", 0, "the circuit breaker" },
	{ "circuit_window", 0, "the circuit breaker" }, { "circuit_min_requests", 0, "the circuit breaker" },
	{ "circuit_slow", 0, "the circuit breaker" }, { "circuit_open", 0, "the circuit breaker" },
	{ "sticky", 0, "traffic policies" }, { "send_proxy", 0, "traffic policies" }, { NULL, 0, NULL },
};
static const struct keydef keys_route[] = {
	{ "listener", 0, NULL }, { "host", 0, NULL }, { "path", 0, NULL }, { "method", 0, NULL },
	{ "header", 1, NULL }, { "pool", 0, NULL }, { "split", 0, NULL },
	{ "response_timeout", 0, NULL }, { "max_body_size", 0, NULL },
	{ "acl", 1, "traffic policies" }, { "rate_limit", 0, "traffic policies" },
	{ "rate_limit_exempt", 0, "traffic policies" }, { "request_header_add", 1, "traffic policies" },
	{ "request_header_remove", 1, "traffic policies" }, { "response_header_add", 1, "traffic policies" },
	{ "response_header_remove", 1, "traffic policies" }, { "return", 0, "traffic policies" },
	{ "redirect", 0, "traffic policies" }, { NULL, 0, NULL },
};

struct sect {
	int kind;
	int line;
	char full[LB_NAME_MAX + 16]; /* "pool api" */
	const char *name;            /* points into full: "api" */
	size_t idx;                  /* index in its conf array */
	uint64_t seen;               /* keys given, by keydef index */
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
		cfg_err(st, line, NULL, "unknown section kind '%.*s' (global, log, admin, scaler, listener, pool, route)",
		        (int)kn, s->full);
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
	for (size_t i = 0; i + 1 < st->nsects; i++) {
		if (st->sects[i].kind != S_BAD && strcmp(st->sects[i].full, s->full) == 0) {
			cfg_err(st, line, NULL, "duplicate section [%s] (first at line %d)", s->full, st->sects[i].line);
			return;
		}
	}
	s->kind = kind;
	s->name = sp ? sp + 1 : s->full;
}

static int prescan(struct cfg *st, const char *text, size_t len)
{
	size_t nlines = 1;
	for (size_t i = 0; i < len; i++)
		nlines += text[i] == '\n';
	st->sects = calloc(nlines, sizeof *st->sects);
	if (!st->sects)
		return LB_ENOMEM;
	int long_lines = 0, line = 0;
	for (size_t pos = 0; pos < len;) {
		const char *l = text + pos, *nl = memchr(l, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - l) : len - pos;
		pos += n + 1;
		line++;
		if (n > 0 && l[n - 1] == '\r')
			n--;
		if (n > 199) {
			cfg_err(st, line, NULL, "line longer than 199 characters");
			long_lines++;
			continue;
		}
		if (memchr(l, 0, n)) {
			cfg_err(st, line, NULL, "NUL byte in line");
			long_lines++;
			continue;
		}
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
	return long_lines ? LB_EINVAL : 0; /* inih splits long lines and shifts later line numbers */
}

static struct sect *sect_at(struct cfg *st, int line)
{
	struct sect *best = NULL;
	for (size_t i = 0; i < st->nsects && st->sects[i].line <= line; i++)
		best = &st->sects[i];
	return best;
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

static void set_global(struct cfg *st, const char *k, const char *v, int line)
{
	struct lb_conf *c = st->c;
	if (!strcmp(k, "workers")) {
		if (!strcmp(v, "auto"))
			c->workers = 0;
		else
			v_uint(st, line, k, v, 1, 64, &c->workers);
	} else if (!strcmp(k, "max_connections")) {
		v_uint(st, line, k, v, 1, 1000000, &c->max_connections);
	} else if (!strcmp(k, "pid_file")) {
		c->pid_file = v_str(st, line, k, v);
	} else if (!strcmp(k, "shutdown_timeout")) {
		v_dur(st, line, k, v, &c->shutdown_timeout);
	}
}

static void set_log(struct cfg *st, const char *k, const char *v, int line)
{
	struct lb_conf *c = st->c;
	if (!strcmp(k, "access")) {
		free(c->access_log);
		c->access_log = strcmp(v, "off") ? v_str(st, line, k, v) : NULL;
	} else if (!strcmp(k, "format")) {
		if (!strcmp(v, "combined"))
			c->log_format = LB_LOG_COMBINED;
		else if (!strcmp(v, "json"))
			c->log_format = LB_LOG_JSON;
		else
			cfg_err(st, line, k, "format: '%s' is not combined or json", v);
	} else if (!strcmp(k, "error")) {
		free(c->error_log);
		c->error_log = v_str(st, line, k, v);
	}
}

static void set_listener(struct cfg *st, struct lb_listener *l, const char *k, const char *v, int line)
{
	if (!strcmp(k, "bind")) {
		const char *p = v, *end = v + strlen(v);
		struct lb_str el;
		while (list_next(&p, end, &el)) {
			if (l->nbinds >= LB_MAX_BINDS) {
				cfg_err(st, line, k, "bind: more than %d addresses", LB_MAX_BINDS);
				return;
			}
			struct lb_bind *b = &l->binds[l->nbinds];
			if (lb_parse_hostport(el.p, el.n, &b->hp) != 0) {
				cfg_err(st, line, k, "bind: invalid address '%.*s' (host:port, [v6]:port or *:port)", (int)el.n, el.p);
				continue;
			}
			b->line = line;
			l->nbinds++;
		}
	} else if (!strcmp(k, "mode")) {
		if (!strcmp(v, "http"))
			l->mode = LB_MODE_HTTP;
		else if (!strcmp(v, "tcp"))
			l->mode = LB_MODE_TCP;
		else
			cfg_err(st, line, k, "mode: '%s' is not http or tcp", v);
	} else if (!strcmp(k, "pool")) {
		add_ref(st, &l->pool, 0, v, strlen(v), line, k);
	} else if (!strcmp(k, "header_timeout")) {
		v_dur(st, line, k, v, &l->header_timeout);
	} else if (!strcmp(k, "idle_timeout")) {
		v_dur(st, line, k, v, &l->idle_timeout);
	} else if (!strcmp(k, "max_header_size")) {
		v_size(st, line, k, v, &l->max_header_size, 1024, 1024 * 1024);
	} else if (!strcmp(k, "max_body_size")) {
		v_size(st, line, k, v, &l->max_body_size, 0, (uint64_t)INT64_MAX);
	}
}

static void add_server(struct cfg *st, struct lb_pool *p, const char *v, int line)
{
	struct lb_server_spec sp;
	if (lb_parse_server(v, strlen(v), &sp) != 0) {
		cfg_err(st, line, "server", "server: %s in '%s'", sp.error, v);
		return;
	}
	if (sp.tls) {
		cfg_err(st, line, "server", "server: option 'tls' is not supported yet (comes with TLS)");
		return;
	}
	for (size_t i = 0; i < p->nservers; i++) {
		if (!strcmp(p->servers[i].name, sp.name)) {
			cfg_err(st, line, "server", "server: duplicate server name '%s' in [pool %s] (first at line %d)",
			        sp.name, p->name, p->servers[i].line);
			return;
		}
	}
	if (p->nservers >= 1024) {
		cfg_err(st, line, "server", "server: more than 1024 servers in one pool");
		return;
	}
	struct lb_server *s = realloc(p->servers, (p->nservers + 1) * sizeof *s);
	if (!s) {
		st->oom = 1;
		return;
	}
	p->servers = s;
	s = &s[p->nservers++];
	memset(s, 0, sizeof *s);
	snprintf(s->name, sizeof s->name, "%s", sp.name);
	snprintf(s->host, sizeof s->host, "%s", sp.addr.host);
	s->port = sp.addr.port;
	s->weight = sp.weight;
	s->max_conn = sp.max_conn;
	s->backup = sp.backup;
	s->disabled = sp.disabled;
	s->line = line;
	s->name_hash = lb_hash64(s->name, strlen(s->name));
}

static void set_pool(struct cfg *st, struct lb_pool *p, const char *k, const char *v, int line)
{
	if (!strcmp(k, "server")) {
		add_server(st, p, v, line);
	} else if (!strcmp(k, "algorithm")) {
		static const char *const a[] = { "round_robin", "least_conn", "ip_hash", "random2" };
		for (int i = 0; i < 4; i++)
			if (!strcmp(v, a[i])) {
				p->algorithm = i;
				return;
			}
		cfg_err(st, line, k, "algorithm: '%s' is not round_robin, least_conn, ip_hash or random2", v);
	} else if (!strcmp(k, "connect_timeout")) {
		v_dur(st, line, k, v, &p->connect_timeout);
	} else if (!strcmp(k, "response_timeout")) {
		v_dur(st, line, k, v, &p->response_timeout);
	} else if (!strcmp(k, "keepalive")) {
		v_uint(st, line, k, v, 0, 100000, &p->keepalive);
	} else if (!strcmp(k, "retries")) {
		v_uint(st, line, k, v, 0, 10, &p->retries);
	}
}

/* Split a list value into at most LB_ROUTE_MAX_ITEMS strings; check each with ok(). */
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
		    parse_uint64(w2.p, w2.n, 1000, &w) != 0 || w == 0) {
			cfg_err(st, line, "split", "split: expected 'POOL WEIGHT, POOL WEIGHT' with weights 1..1000");
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

static void set_route(struct cfg *st, struct lb_route *r, const char *k, const char *v, int line)
{
	if (!strcmp(k, "listener")) {
		const char *p = v, *end = v + strlen(v);
		struct lb_str el;
		while (list_next(&p, end, &el) && r->nlisteners < LB_ROUTE_MAX_ITEMS)
			add_ref(st, &r->listeners[r->nlisteners++], 1, el.p, el.n, line, k);
	} else if (!strcmp(k, "host")) {
		route_list(st, k, v, line, r->hosts, &r->nhosts, host_pattern_ok, "host pattern", 1);
	} else if (!strcmp(k, "path")) {
		route_list(st, k, v, line, r->paths, &r->npaths, path_pattern_ok, "path (/exact or /prefix/*)", 0);
	} else if (!strcmp(k, "method")) {
		route_list(st, k, v, line, r->methods, &r->nmethods, token_ok, "method", 0);
	} else if (!strcmp(k, "header")) {
		route_header(st, r, v, line);
	} else if (!strcmp(k, "pool")) {
		add_ref(st, &r->pool, 0, v, strlen(v), line, k);
	} else if (!strcmp(k, "split")) {
		route_split(st, r, v, line);
	} else if (!strcmp(k, "response_timeout")) {
		v_dur(st, line, k, v, &r->response_timeout);
	} else if (!strcmp(k, "max_body_size")) {
		v_size(st, line, k, v, &r->max_body_size, 0, (uint64_t)INT64_MAX);
	}
}

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
		cfg_err(st, line, key, "unknown key '%s' in [%s]", key, s->full);
		return 1;
	}
	if (kd[ki].later) {
		cfg_err(st, line, key, "key '%s' in [%s] is not supported yet (comes with %s)", key, s->full, kd[ki].later);
		return 1;
	}
	if (!kd[ki].repeat && (s->seen & (UINT64_C(1) << ki))) {
		cfg_err(st, line, key, "key '%s' given twice in [%s]", key, s->full);
		return 1;
	}
	s->seen |= UINT64_C(1) << ki;
	switch (s->kind) {
	case S_GLOBAL: set_global(st, key, value, line); break;
	case S_LOG: set_log(st, key, value, line); break;
	case S_LISTENER: set_listener(st, &st->c->listeners[s->idx], key, value, line); break;
	case S_POOL: set_pool(st, &st->c->pools[s->idx], key, value, line); break;
	case S_ROUTE: set_route(st, &st->c->routes[s->idx], key, value, line); break;
	default: break; /* [scaler]: names checked, values are linode-scaler's */
	}
	return 1;
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
	for (size_t i = 0; i < st->nsects; i++) {
		struct sect *s = &st->sects[i];
		if (s->kind == S_LISTENER) {
			struct lb_listener *l = &c->listeners[s->idx = c->nlisteners++];
			snprintf(l->name, sizeof l->name, "%s", s->name);
			l->line = s->line;
			l->pool = -1;
			l->header_timeout = 10000;
			l->idle_timeout = 60000;
			l->max_header_size = 16384;
			l->max_body_size = 10 * 1024 * 1024;
		} else if (s->kind == S_POOL) {
			struct lb_pool *p = &c->pools[s->idx = c->npools++];
			snprintf(p->name, sizeof p->name, "%s", s->name);
			p->line = s->line;
			p->connect_timeout = 3000;
			p->response_timeout = 60000;
			p->keepalive = 32;
			p->retries = 1;
		} else if (s->kind == S_ROUTE) {
			struct lb_route *r = &c->routes[s->idx = c->nroutes++];
			snprintf(r->name, sizeof r->name, "%s", s->name);
			r->line = s->line;
			r->pool = -1;
		}
	}
	c->max_connections = 100000;
	c->shutdown_timeout = 30000;
	c->log_format = LB_LOG_COMBINED;
	c->access_log = dupn(st, "stdout", 6);
	c->error_log = dupn(st, "stderr", 6);
	return st->oom ? LB_ENOMEM : 0;
}

static void resolve_refs(struct cfg *st)
{
	struct lb_conf *c = st->c;
	for (size_t i = 0; i < st->nrefs; i++) {
		struct cref *r = &st->refs[i];
		size_t n = r->want_listener ? c->nlisteners : c->npools;
		for (size_t k = 0; k < n; k++) {
			const char *nm = r->want_listener ? c->listeners[k].name : c->pools[k].name;
			if (!strcmp(nm, r->name))
				*r->dst = (int)k;
		}
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

static void check_listeners(struct cfg *st)
{
	struct lb_conf *c = st->c;
	for (size_t i = 0; i < c->nlisteners; i++) {
		struct lb_listener *l = &c->listeners[i];
		if (l->nbinds == 0)
			cfg_err(st, l->line, "bind", "[listener %s] has no bind address", l->name);
		if (l->mode == LB_MODE_TCP && l->pool < 0)
			cfg_err(st, l->line, "pool", "[listener %s] is mode tcp and needs a pool", l->name);
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
	for (size_t i = 0; i < c->npools; i++)
		if (c->pools[i].nservers == 0)
			cfg_err(st, c->pools[i].line, "server", "[pool %s] has no server", c->pools[i].name);
	for (size_t i = 0; i < c->nroutes; i++) {
		struct lb_route *r = &c->routes[i];
		if ((r->pool >= 0) == (r->nsplit > 0) && !(r->nsplit > 0 && r->pool >= 0))
			if (r->pool < 0 && r->nsplit == 0)
				cfg_err(st, r->line, "pool", "[route %s] needs pool or split", r->name);
		if (r->pool >= 0 && r->nsplit > 0)
			cfg_err(st, r->line, "split", "[route %s] has both pool and split", r->name);
		for (size_t k = 0; k < r->nlisteners; k++)
			if (r->listeners[k] >= 0 && c->listeners[r->listeners[k]].mode != LB_MODE_HTTP)
				cfg_err(st, r->line, "listener", "[route %s]: listener '%s' is not mode http", r->name,
				        c->listeners[r->listeners[k]].name);
	}
	if (c->nlisteners == 0)
		cfg_err(st, 0, NULL, "no [listener NAME] section");
}

void lb_conf_free(struct lb_conf *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->npools; i++)
		free(c->pools[i].servers);
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
	}
	free(c->listeners);
	free(c->pools);
	free(c->routes);
	free(c->pid_file);
	free(c->access_log);
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
	memcpy(z, text, len);
	z[len] = 0;
	rc = prescan(&st, text, len);
	if (rc == LB_ENOMEM || conf_alloc(&st) != 0) {
		rc = LB_ENOMEM;
		goto done;
	}
	if (rc == 0)
		ini_parse_string(z, cfg_ini_key, &st); /* its own syntax errors were found by prescan */
	resolve_refs(&st);
	check_listeners(&st);
	check_pools_routes(&st);
	rc = st.oom ? LB_ENOMEM : errs->total ? LB_EINVAL : 0;
done:
	free(z);
	free(st.sects);
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

int lb_conf_resolve(struct lb_conf *c, struct lb_cfg_errors *errs)
{
	char err[128];
	struct cfg st;
	memset(&st, 0, sizeof st);
	st.errs = errs;
	for (size_t i = 0; i < c->nlisteners; i++) {
		for (size_t b = 0; b < c->listeners[i].nbinds; b++) {
			struct lb_bind *bd = &c->listeners[i].binds[b];
			const char *h = bd->hp.wildcard ? "0.0.0.0" : bd->hp.host;
			if (resolve_addr(h, bd->hp.port, 1, &bd->sa, &bd->salen, err, sizeof err) != 0)
				cfg_err(&st, bd->line, "bind", "bind: cannot resolve '%s': %s", h, err);
		}
	}
	for (size_t i = 0; i < c->npools; i++) {
		for (size_t k = 0; k < c->pools[i].nservers; k++) {
			struct lb_server *s = &c->pools[i].servers[k];
			if (resolve_addr(s->host, s->port, 0, &s->sa, &s->salen, err, sizeof err) != 0)
				cfg_err(&st, s->line, "server", "server %s: cannot resolve '%s': %s", s->name, s->host, err);
		}
	}
	return errs->total ? LB_EINVAL : 0;
}

/* -------------------------------------------------------------------- routing and balancing (pure) */

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

int lb_route_pool(struct lb_route *r)
{
	if (r->nsplit == 0)
		return r->pool;
	int64_t total = 0;
	size_t best = 0;
	for (size_t i = 0; i < r->nsplit; i++) {
		r->split_cur[i] += r->split[i].weight;
		total += r->split[i].weight;
		if (r->split_cur[i] > r->split_cur[best])
			best = i;
	}
	r->split_cur[best] -= total;
	return r->split[best].pool;
}

static int usable(const struct lb_server *s)
{
	return !s->disabled && !s->down && (s->max_conn == 0 || s->active < s->max_conn);
}

/* Which tier serves: primaries when any is usable, else backups. -1 when none. */
static int pick_tier(const struct lb_pool *p)
{
	int backup_ok = 0;
	for (size_t i = 0; i < p->nservers; i++) {
		if (usable(&p->servers[i])) {
			if (!p->servers[i].backup)
				return 0;
			backup_ok = 1;
		}
	}
	return backup_ok ? 1 : -1;
}

#define IN_TIER(s, tier) (usable(s) && (s)->backup == (tier))

static struct lb_server *pick_rr(struct lb_pool *p, int tier)
{
	struct lb_server *best = NULL;
	int64_t total = 0;
	for (size_t i = 0; i < p->nservers; i++) {
		struct lb_server *s = &p->servers[i];
		if (!IN_TIER(s, tier))
			continue;
		s->cur_weight += s->weight;
		total += s->weight;
		if (!best || s->cur_weight > best->cur_weight)
			best = s;
	}
	best->cur_weight -= total;
	return best;
}

/* fewer active per weight; a rotating start breaks ties fairly */
static struct lb_server *pick_least(struct lb_pool *p, int tier)
{
	struct lb_server *best = NULL;
	size_t n = p->nservers, start = p->rr_seed++ % n;
	for (size_t k = 0; k < n; k++) {
		struct lb_server *s = &p->servers[(start + k) % n];
		if (!IN_TIER(s, tier))
			continue;
		if (!best || (uint64_t)s->active * best->weight < (uint64_t)best->active * s->weight)
			best = s;
	}
	return best;
}

/* Weighted rendezvous hashing: score = -w / ln(u), u from hash(key, server name). Adding a
 * server moves only the keys it wins; removing one moves only its own keys. */
static struct lb_server *pick_hash(struct lb_pool *p, int tier, uint64_t key)
{
	struct lb_server *best = NULL;
	double best_score = 0;
	for (size_t i = 0; i < p->nservers; i++) {
		struct lb_server *s = &p->servers[i];
		if (!IN_TIER(s, tier))
			continue;
		uint64_t h = mix64(key ^ s->name_hash);
		double u = ((double)(h >> 11) + 0.5) * (1.0 / 9007199254740992.0);
		double score = -(double)s->weight / ln_unit(u);
		if (!best || score > best_score) {
			best = s;
			best_score = score;
		}
	}
	return best;
}

static struct lb_server *pick_weighted_at(struct lb_pool *p, int tier, uint64_t r)
{
	uint64_t total = 0;
	for (size_t i = 0; i < p->nservers; i++)
		if (IN_TIER(&p->servers[i], tier))
			total += p->servers[i].weight;
	r %= total;
	for (size_t i = 0; i < p->nservers; i++) {
		struct lb_server *s = &p->servers[i];
		if (!IN_TIER(s, tier))
			continue;
		if (r < s->weight)
			return s;
		r -= s->weight;
	}
	return NULL;
}

static struct lb_server *pick_random2(struct lb_pool *p, int tier, uint64_t rnd)
{
	struct lb_server *a = pick_weighted_at(p, tier, rnd & 0xffffffffu);
	struct lb_server *b = pick_weighted_at(p, tier, rnd >> 32);
	return (uint64_t)b->active * a->weight < (uint64_t)a->active * b->weight ? b : a;
}

struct lb_server *lb_pick(struct lb_pool *p, uint64_t key, uint64_t rnd)
{
	int tier = pick_tier(p);
	if (tier < 0)
		return NULL;
	switch (p->algorithm) {
	case LB_ALGO_LEASTCONN: return pick_least(p, tier);
	case LB_ALGO_IPHASH: return pick_hash(p, tier, key);
	case LB_ALGO_RANDOM2: return pick_random2(p, tier, rnd);
	default: return pick_rr(p, tier);
	}
}
