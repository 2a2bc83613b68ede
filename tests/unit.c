/* tests/unit.c — unit tests of the pure functions lb.h declares.
 *
 * Build: cc -std=c11 -Wall -Wextra -Werror -g -DLB_NO_MAIN -I. tests/unit.c lb.c -o tests/unit \
 *           -lbearssl -linih -lm
 * Output: one line per case or check group, "PASS name" or "FAIL name: detail", then
 * "unit: N passed, N failed"; exit status 1 on any failure.
 *
 * Every input is copied into a heap buffer of exactly its length, so ASan reports a parser that
 * reads past len (or relies on a NUL terminator).
 */
#define _POSIX_C_SOURCE 200809L
#include "lb.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <ctype.h>
#include <string.h>
#include <unistd.h>

#include <bearssl.h> /* BearSSL's error codes and engine state */

/* ------------------------------------------------------------------ tiny harness */

static int n_pass, n_fail;
static int c_fail;          /* failed checks in the current case */
static char c_msg[1024];    /* the first one's detail */

static void failf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void failf(const char *fmt, ...)
{
	if (c_fail++ == 0) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(c_msg, sizeof c_msg, fmt, ap);
		va_end(ap);
	}
}

#define CHECK(cond, ...) do { if (!(cond)) failf(__VA_ARGS__); } while (0)

static void begin(void)
{
	c_fail = 0;
	c_msg[0] = 0;
}

static void end(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void end(const char *fmt, ...)
{
	char name[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(name, sizeof name, fmt, ap);
	va_end(ap);
	if (c_fail) {
		n_fail++;
		if (c_fail > 1)
			printf("FAIL %s: %s (+%d more)\n", name, c_msg, c_fail - 1);
		else
			printf("FAIL %s: %s\n", name, c_msg);
	} else {
		n_pass++;
		printf("PASS %s\n", name);
	}
}

/* The table-driven runner: check(row) for each of the n rows (sz bytes each) at rows. With a
 * name the whole table is one case so named (begin/end here); with NULL the runner opens no case:
 * either each row is a case of its own, which its check opens with begin() and closes with end()
 * naming it after the row, or the rows join a case the caller has open. */
static void run_table(const char *name, const void *rows, size_t n, size_t sz,
                      void (*check)(const void *row))
{
	if (name)
		begin();
	for (size_t i = 0; i < n; i++)
		check((const char *)rows + i * sz);
	if (name)
		end("%s", name);
}

#define RUN_TABLE(name, t, check) run_table((name), (t), sizeof (t) / sizeof (t)[0], sizeof (t)[0], (check))

/* A heap copy of exactly n bytes (no NUL). */
static char *dupbuf(const char *s, size_t n)
{
	char *b = malloc(n ? n : 1);
	if (!b) {
		perror("malloc");
		exit(2);
	}
	if (n)
		memcpy(b, s, n);
	return b;
}

/* Printable, C-escaped, truncated view of bytes, in one of 8 rotating buffers. */
static const char *esc(const char *p, size_t n)
{
	static char bufs[8][160];
	static int k;
	char *o = bufs[k++ & 7];
	size_t j = 0;
	if (!p) {
		snprintf(o, 160, "(null)");
		return o;
	}
	o[j++] = '"';
	for (size_t i = 0; i < n && j < 140; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c == '\r') { o[j++] = '\\'; o[j++] = 'r'; }
		else if (c == '\n') { o[j++] = '\\'; o[j++] = 'n'; }
		else if (c == '"' || c == '\\') { o[j++] = '\\'; o[j++] = (char)c; }
		else if (c < 0x20 || c >= 0x7f) j += (size_t)snprintf(o + j, 160 - j, "\\x%02x", c);
		else o[j++] = (char)c;
	}
	if (j >= 140) { o[j++] = '.'; o[j++] = '.'; o[j++] = '.'; }
	o[j++] = '"';
	o[j] = 0;
	return o;
}

static const char *S(struct lb_str s)
{
	if (!s.p)
		return s.n ? "(null with n>0)" : "(absent)";
	return esc(s.p, s.n);
}

static int str_is(struct lb_str s, const char *e)
{
	size_t n = strlen(e);
	return s.n == n && (n == 0 || (s.p && memcmp(s.p, e, n) == 0));
}

static int cstr_is(const char *s, const char *e)
{
	if (!s || !e)
		return s == e;
	return strcmp(s, e) == 0;
}

static int contains_ci(const char *hay, const char *needle)
{
	size_t n = strlen(needle);
	for (; *hay; hay++) {
		size_t i = 0;
		while (i < n && hay[i]) {
			char a = hay[i], b = needle[i];
			if (a >= 'A' && a <= 'Z') a = (char)(a - 'A' + 'a');
			if (b >= 'A' && b <= 'Z') b = (char)(b - 'A' + 'a');
			if (a != b)
				break;
			i++;
		}
		if (i == n)
			return 1;
	}
	return 0;
}

static uint64_t sm_state = 0x1234567887654321ull;
static uint64_t sm64(void)
{
	uint64_t z = (sm_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static const char *mkstr(char *dst, size_t cap, const char *pre, char fill, size_t nfill,
                         const char *post)
{
	size_t a = strlen(pre), c = strlen(post);
	if (a + nfill + c + 1 > cap) {
		fprintf(stderr, "mkstr: buffer too small\n");
		exit(2);
	}
	memcpy(dst, pre, a);
	memset(dst + a, fill, nfill);
	memcpy(dst + a + nfill, post, c + 1);
	return dst;
}

/* ------------------------------------------------------------------ 1. request heads */

enum { C_OK = 1, C_AGAIN, C_INV };

struct rq_case {
	const char *name;
	const char *raw;
	size_t len;     /* 0: strlen(raw) */
	int cls;
	int status;     /* for C_INV: expected req.status, 0 = any */
};

static char rq_hdr100[4096], rq_hdr101[4096];

#define NUL_REQ "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n"

static const struct rq_case rq_cases[] = {
	/* accepted */
	{ "get_min", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0, C_OK, 0 },
	{ "post_cl", "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n", 0, C_OK, 0 },
	{ "head", "HEAD / HTTP/1.1\r\nHost: a\r\n\r\n", 0, C_OK, 0 },
	{ "options_star", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 0, C_OK, 0 },
	{ "absolute_same_host", "GET http://a/x HTTP/1.1\r\nHost: a\r\n\r\n", 0, C_OK, 0 },
	{ "http10_no_host", "GET / HTTP/1.0\r\n\r\n", 0, C_OK, 0 },
	{ "ows_trimmed", "GET / HTTP/1.1\r\nHost:   a \t\r\nX-A:\t v \r\n\r\n", 0, C_OK, 0 },
	{ "cl_zero", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", 0, C_OK, 0 },
	{ "chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 0, C_OK, 0 },
	{ "gzip_chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 0, C_OK, 0 },
	{ "same_cl_twice", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n", 0, C_OK, 0 },
	{ "leading_empty_line", "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 0, C_OK, 0 },
	{ "htab_inside_value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\tb\r\n\r\n", 0, C_OK, 0 },
	{ "empty_value", "GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\n\r\n", 0, C_OK, 0 },
	{ "headers_100", rq_hdr100, 0, C_OK, 0 },
	/* incomplete */
	{ "again_empty", "", 0, C_AGAIN, 0 },
	{ "again_crlf_only", "\r\n", 0, C_AGAIN, 0 },
	{ "again_crlfs_only", "\r\n\r\n", 0, C_AGAIN, 0 },
	{ "again_request_line", "GET / HTTP/1.1", 0, C_AGAIN, 0 },
	{ "again_no_empty_line", "GET / HTTP/1.1\r\nHost: a\r\n", 0, C_AGAIN, 0 },
	{ "again_final_cr", "GET / HTTP/1.1\r\nHost: a\r\n\r", 0, C_AGAIN, 0 },
	/* framing */
	{ "cl_and_te", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 0, C_INV, 400 },
	{ "te_and_cl", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 0, C_INV, 400 },
	{ "cl_differ", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 0, C_INV, 400 },
	{ "cl_list_differ", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\n", 0, C_INV, 400 },
	{ "cl_plus_sign", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n", 0, C_INV, 400 },
	{ "cl_minus_sign", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 0, C_INV, 400 },
	{ "cl_inner_space", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n", 0, C_INV, 400 },
	{ "cl_non_digit", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3a\r\n\r\n", 0, C_INV, 400 },
	{ "cl_hex", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\n", 0, C_INV, 400 },
	{ "cl_empty", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", 0, C_INV, 400 },
	{ "cl_overflow_20_digits", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 0, C_INV, 400 },
	{ "cl_over_int64", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775808\r\n\r\n", 0, C_INV, 400 },
	{ "te_gzip_only", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 0, C_INV, 400 },
	{ "te_chunked_gzip", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 0, C_INV, 400 },
	{ "te_chunked_chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 0, C_INV, 400 },
	{ "te_in_http10", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 0, C_INV, 400 },
	{ "te_space_before_colon", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n", 0, C_INV, 400 },
	{ "host_space_before_colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 0, C_INV, 400 },
	/* field syntax */
	{ "obs_fold_sp", "GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n", 0, C_INV, 400 },
	{ "obs_fold_htab", "GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n\tc\r\n\r\n", 0, C_INV, 400 },
	{ "ws_line_after_request_line", "GET / HTTP/1.1\r\n Host: a\r\n\r\n", 0, C_INV, 400 },
	{ "bare_cr_in_value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 0, C_INV, 400 },
	{ "bare_lf_request_line", "GET / HTTP/1.1\nHost: a\r\n\r\n", 0, C_INV, 400 },
	{ "bare_lf_header_line", "GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 0, C_INV, 400 },
	{ "nul_in_value", NUL_REQ, sizeof(NUL_REQ) - 1, C_INV, 400 },
	{ "ctl_01_in_value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x01" "b\r\n\r\n", 0, C_INV, 400 },
	{ "del_in_value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f" "b\r\n\r\n", 0, C_INV, 400 },
	{ "name_with_space", "GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n", 0, C_INV, 400 },
	{ "name_with_at", "GET / HTTP/1.1\r\nHost: a\r\nX@: y\r\n\r\n", 0, C_INV, 400 },
	{ "empty_name", "GET / HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n", 0, C_INV, 400 },
	{ "no_colon", "GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", 0, C_INV, 400 },
	/* Host */
	{ "missing_host_11", "GET / HTTP/1.1\r\nX: y\r\n\r\n", 0, C_INV, 400 },
	{ "two_hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 0, C_INV, 400 },
	{ "two_identical_hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 0, C_INV, 400 },
	{ "host_with_space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 0, C_INV, 400 },
	{ "host_with_slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 0, C_INV, 400 },
	{ "absolute_host_differs", "GET http://b/x HTTP/1.1\r\nHost: a\r\n\r\n", 0, C_INV, 400 },
	/* request line */
	{ "version_lowercase", "GET / http/1.1\r\nHost: a\r\n\r\n", 0, C_INV, 400 },
	{ "version_2_0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 0, C_INV, 505 },
	{ "version_1_2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 0, C_INV, 505 },
	{ "http09_no_version", "GET /\r\n\r\n", 0, C_INV, 400 },
	{ "no_target", "GET HTTP/1.1\r\nHost: a\r\n\r\n", 0, C_INV, 400 },
	{ "version_trailing_space", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 0, C_INV, 400 },
	{ "two_spaces_after_method", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 0, C_INV, 400 },
	{ "empty_method", " / HTTP/1.1\r\nHost: a\r\n\r\n", 0, C_INV, 400 },
	{ "method_bad_char", "GE(T / HTTP/1.1\r\nHost: a\r\n\r\n", 0, C_INV, 400 },
	{ "target_with_space", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 0, C_INV, 400 },
	{ "target_ctl", "GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 0, C_INV, 400 },
	{ "target_del", "GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 0, C_INV, 400 },
	{ "target_non_ascii", "GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 0, C_INV, 400 },
	{ "connect_authority_form", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 0, C_INV, 0 },
	/* other statuses */
	{ "expect_unknown_417", "POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nExpect: something-else\r\n\r\n", 0, C_INV, 417 },
	{ "headers_101_431", rq_hdr101, 0, C_INV, 431 },
};

/* Request line, Host, then nextra more fields. */
static void build_many_headers(char *dst, size_t cap, int nextra)
{
	size_t n = (size_t)snprintf(dst, cap, "GET / HTTP/1.1\r\nHost: a\r\n");
	for (int i = 0; i < nextra; i++)
		n += (size_t)snprintf(dst + n, cap - n, "X-H%03d: v%d\r\n", i, i);
	snprintf(dst + n, cap - n, "\r\n");
}

/* Every strict prefix of raw: a valid head's prefixes are all incomplete; others may also be
 * refused, but no call may claim more bytes than it was given. */
static void req_prefixes(const char *raw, size_t len, int full_ok)
{
	struct lb_req *r = malloc(sizeof *r);
	if (!r)
		exit(2);
	for (size_t l = 0; l < len; l++) {
		char *b = dupbuf(raw, l);
		memset(r, 0, sizeof *r);
		int rc = lb_parse_request(b, l, r);
		free(b);
		if (full_ok) {
			if (rc != LB_EAGAIN) {
				failf("prefix of %zu/%zu bytes: expected %d (EAGAIN), got %d (status %d)",
				      l, len, LB_EAGAIN, rc, r->status);
				break;
			}
		} else if (!(rc == LB_EAGAIN || rc == LB_EINVAL || (rc > 0 && (size_t)rc <= l))) {
			failf("prefix of %zu/%zu bytes: got %d", l, len, rc);
			break;
		}
	}
	free(r);
}

static void check_request_row(const void *row)
{
	const struct rq_case *c = row;
	size_t len = c->len ? c->len : strlen(c->raw);
	struct lb_req req;
	char *b = dupbuf(c->raw, len);
	begin();
	memset(&req, 0, sizeof req);
	int rc = lb_parse_request(b, len, &req);
	switch (c->cls) {
	case C_OK:
		CHECK(rc == (int)len, "expected head length %zu, got %d (status %d, %s)", len, rc,
		      req.status, req.error ? req.error : "no error");
		break;
	case C_AGAIN:
		CHECK(rc == LB_EAGAIN, "expected %d (EAGAIN), got %d (status %d)", LB_EAGAIN, rc,
		      req.status);
		break;
	case C_INV:
		CHECK(rc == LB_EINVAL, "expected %d (EINVAL) status %d, got %d (status %d)", LB_EINVAL,
		      c->status, rc, req.status);
		if (rc == LB_EINVAL) {
			if (c->status)
				CHECK(req.status == c->status, "expected status %d, got %d (%s)", c->status,
				      req.status, req.error ? req.error : "no error");
			else
				CHECK(req.status >= 400 && req.status <= 599, "expected a 4xx/5xx status, got %d",
				      req.status);
			CHECK(req.error != NULL, "req.error is NULL on EINVAL");
		}
		break;
	}
	free(b);
	if (!c_fail)
		req_prefixes(c->raw, len, c->cls == C_OK);
	end("request/%s", c->name);
}

static void test_request_table(void)
{
	build_many_headers(rq_hdr100, sizeof rq_hdr100, 99);
	build_many_headers(rq_hdr101, sizeof rq_hdr101, 100);
	RUN_TABLE(NULL, rq_cases, check_request_row);
}

/* Parsed fields of accepted heads. String fields: NULL = not checked, ABSENT = n == 0 (and for
 * query p == NULL), "" = present but empty (query: p != NULL). */
static const char ABSENT[] = "<absent>";

struct rq_detail {
	const char *name, *raw;
	size_t headlen;                 /* 0: strlen(raw) */
	const char *method;
	int method_id;
	const char *target, *path, *query, *host, *authority;
	int minor;
	int64_t cl;
	unsigned flags;
	int nheaders;                   /* -1: not checked */
	const char *hname, *hval;       /* lb_header_find(hname) -> hval; hval ABSENT = not found */
	const char *upgrade;
};

static const struct rq_detail rq_details[] = {
	{ .name = "get_query_host_port",
	  .raw = "GET /index.html?a=1&b=2 HTTP/1.1\r\nHost: Example.COM:8080\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n",
	  .method = "GET", .method_id = LB_M_GET, .target = "/index.html?a=1&b=2", .path = "/index.html",
	  .query = "a=1&b=2", .host = "Example.COM", .authority = "Example.COM:8080", .minor = 1, .cl = -1,
	  .flags = 0, .nheaders = 3, .hname = "user-agent", .hval = "t" },
	{ .name = "post_cl_with_body_after",
	  .raw = "POST /submit HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
	  .headlen = sizeof("POST /submit HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n") - 1,
	  .method = "POST", .method_id = LB_M_POST, .target = "/submit", .path = "/submit", .query = ABSENT,
	  .host = "a", .authority = "a", .minor = 1, .cl = 5, .flags = LB_HF_HAS_CL, .nheaders = 2,
	  .hname = "CONTENT-LENGTH", .hval = "5" },
	{ .name = "head",
	  .raw = "HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n",
	  .method = "HEAD", .method_id = LB_M_HEAD, .path = "/h", .query = ABSENT, .minor = 1, .cl = -1,
	  .flags = 0, .nheaders = 1, .hname = "x-missing", .hval = ABSENT },
	{ .name = "options_star",
	  .raw = "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
	  .method = "OPTIONS", .method_id = LB_M_OPTIONS, .target = "*", .host = "a", .minor = 1, .cl = -1,
	  .flags = 0, .nheaders = 1 },
	{ .name = "put", .raw = "PUT /r HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
	  .method = "PUT", .method_id = LB_M_PUT, .minor = 1, .cl = 0, .flags = LB_HF_HAS_CL, .nheaders = 2 },
	{ .name = "delete", .raw = "DELETE /r HTTP/1.1\r\nHost: a\r\n\r\n",
	  .method = "DELETE", .method_id = LB_M_DELETE, .minor = 1, .cl = -1, .flags = 0, .nheaders = 1 },
	{ .name = "patch", .raw = "PATCH /r HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n",
	  .method = "PATCH", .method_id = LB_M_PATCH, .minor = 1, .cl = 2, .flags = LB_HF_HAS_CL, .nheaders = 2 },
	{ .name = "absolute_form",
	  .raw = "GET http://example.com/a/b?x=y HTTP/1.1\r\nHost: example.com\r\n\r\n",
	  .method = "GET", .method_id = LB_M_GET, .target = "http://example.com/a/b?x=y", .path = "/a/b",
	  .query = "x=y", .host = "example.com", .authority = "example.com", .minor = 1, .cl = -1,
	  .flags = LB_HF_ABSOLUTE, .nheaders = 1 },
	{ .name = "http10_no_host",
	  .raw = "GET /old HTTP/1.0\r\n\r\n",
	  .method = "GET", .method_id = LB_M_GET, .target = "/old", .path = "/old", .query = ABSENT,
	  .host = ABSENT, .authority = ABSENT, .minor = 0, .cl = -1, .flags = LB_HF_CLOSE, .nheaders = 0 },
	{ .name = "http10_keepalive",
	  .raw = "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
	  .method_id = LB_M_GET, .minor = 0, .cl = -1, .flags = LB_HF_KEEPALIVE, .nheaders = 1 },
	{ .name = "http10_connection_close",
	  .raw = "GET / HTTP/1.0\r\nHost: a\r\nConnection: close\r\n\r\n",
	  .method_id = LB_M_GET, .host = "a", .minor = 0, .cl = -1, .flags = LB_HF_CLOSE, .nheaders = 2 },
	{ .name = "http11_connection_close",
	  .raw = "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
	  .method_id = LB_M_GET, .minor = 1, .cl = -1, .flags = LB_HF_CLOSE, .nheaders = 2 },
	{ .name = "upgrade_websocket",
	  .raw = "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
	  .method_id = LB_M_GET, .path = "/ws", .minor = 1, .cl = -1, .flags = LB_HF_UPGRADE, .nheaders = 3,
	  .hname = "upgrade", .hval = "websocket", .upgrade = "websocket" },
	{ .name = "upgrade_in_connection_list",
	  .raw = "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
	  .method_id = LB_M_GET, .minor = 1, .cl = -1, .flags = LB_HF_KEEPALIVE | LB_HF_UPGRADE, .nheaders = 3,
	  .upgrade = "websocket" },
	{ .name = "connection_upgrade_without_upgrade_header",
	  .raw = "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n\r\n",
	  .method_id = LB_M_GET, .minor = 1, .cl = -1, .flags = 0, .nheaders = 2 },
	{ .name = "upgrade_header_without_connection",
	  .raw = "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
	  .method_id = LB_M_GET, .minor = 1, .cl = -1, .flags = 0, .nheaders = 2 },
	{ .name = "expect_100",
	  .raw = "POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n",
	  .method_id = LB_M_POST, .minor = 1, .cl = 10, .flags = LB_HF_EXPECT_100 | LB_HF_HAS_CL, .nheaders = 3 },
	{ .name = "chunked",
	  .raw = "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
	  .method_id = LB_M_POST, .minor = 1, .cl = -1, .flags = LB_HF_CHUNKED | LB_HF_TE, .nheaders = 2 },
	{ .name = "chunked_mixed_case",
	  .raw = "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n",
	  .method_id = LB_M_POST, .minor = 1, .cl = -1, .flags = LB_HF_CHUNKED | LB_HF_TE, .nheaders = 2 },
	{ .name = "gzip_chunked",
	  .raw = "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
	  .method_id = LB_M_POST, .minor = 1, .cl = -1, .flags = LB_HF_CHUNKED | LB_HF_TE, .nheaders = 2 },
	{ .name = "cl_zero",
	  .raw = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
	  .method_id = LB_M_POST, .minor = 1, .cl = 0, .flags = LB_HF_HAS_CL, .nheaders = 2 },
	{ .name = "cl_with_ows",
	  .raw = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:  42 \r\n\r\n",
	  .method_id = LB_M_POST, .minor = 1, .cl = 42, .flags = LB_HF_HAS_CL, .nheaders = 2 },
	{ .name = "cl_large",
	  .raw = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999\r\n\r\n",
	  .method_id = LB_M_POST, .minor = 1, .cl = 99999999999999999, .flags = LB_HF_HAS_CL, .nheaders = 2 },
	{ .name = "same_cl_twice",
	  .raw = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n",
	  .method_id = LB_M_POST, .minor = 1, .cl = 7, .flags = LB_HF_HAS_CL, .nheaders = 3 },
	{ .name = "ows_trimmed",
	  .raw = "GET / HTTP/1.1\r\nHost: \t a.b \t\r\nX-A:   v  v   \r\nX-Empty:\r\n\r\n",
	  .method_id = LB_M_GET, .host = "a.b", .authority = "a.b", .minor = 1, .cl = -1, .flags = 0,
	  .nheaders = 3, .hname = "x-a", .hval = "v  v" },
	{ .name = "empty_value_found",
	  .raw = "GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\n\r\n",
	  .method_id = LB_M_GET, .minor = 1, .cl = -1, .flags = 0, .nheaders = 2, .hname = "X-EMPTY", .hval = "" },
	{ .name = "htab_inside_value",
	  .raw = "GET / HTTP/1.1\r\nHost: a\r\nX: a\tb\r\n\r\n",
	  .method_id = LB_M_GET, .minor = 1, .cl = -1, .flags = 0, .nheaders = 2, .hname = "x", .hval = "a\tb" },
	{ .name = "lowercase_host_name",
	  .raw = "GET / HTTP/1.1\r\nhost: lower.example\r\n\r\n",
	  .method_id = LB_M_GET, .host = "lower.example", .minor = 1, .cl = -1, .flags = 0, .nheaders = 1 },
	{ .name = "leading_empty_line",
	  .raw = "\r\nGET /l HTTP/1.1\r\nHost: a\r\n\r\n",
	  .method = "GET", .method_id = LB_M_GET, .target = "/l", .path = "/l", .minor = 1, .cl = -1,
	  .flags = 0, .nheaders = 1 },
	{ .name = "empty_query_present",
	  .raw = "GET /x? HTTP/1.1\r\nHost: a\r\n\r\n",
	  .method_id = LB_M_GET, .target = "/x?", .path = "/x", .query = "", .minor = 1, .cl = -1, .flags = 0,
	  .nheaders = 1 },
	{ .name = "pipelined_second_request_not_consumed",
	  .raw = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
	  .headlen = sizeof("GET /1 HTTP/1.1\r\nHost: a\r\n\r\n") - 1,
	  .method_id = LB_M_GET, .target = "/1", .minor = 1, .cl = -1, .flags = 0, .nheaders = 1 },
};

static void check_str(const char *field, struct lb_str got, const char *exp)
{
	if (!exp)
		return;
	if (exp == ABSENT) {
		CHECK(got.n == 0, "%s: expected absent, got %s", field, S(got));
		return;
	}
	CHECK(str_is(got, exp), "%s: expected %s, got %s", field, esc(exp, strlen(exp)), S(got));
}

static void check_request_fields_row(const void *row)
{
	const struct rq_detail *d = row;
	size_t len = strlen(d->raw), hl = d->headlen ? d->headlen : len;
	struct lb_req req;
	char *b = dupbuf(d->raw, len);
	begin();
	memset(&req, 0, sizeof req);
	int rc = lb_parse_request(b, len, &req);
	CHECK(rc == (int)hl, "expected head length %zu, got %d (status %d, %s)", hl, rc, req.status,
	      req.error ? req.error : "no error");
	if (rc > 0) {
		check_str("method", req.method, d->method);
		CHECK(req.method_id == d->method_id, "method_id: expected %d, got %d", d->method_id,
		      req.method_id);
		check_str("target", req.target, d->target);
		check_str("path", req.path, d->path);
		if (d->query == ABSENT)
			CHECK(req.query.p == NULL && req.query.n == 0, "query: expected absent (p NULL), got %s",
			      S(req.query));
		else if (d->query && !d->query[0])
			CHECK(req.query.p != NULL && req.query.n == 0, "query: expected present and empty, got %s",
			      S(req.query));
		else
			check_str("query", req.query, d->query);
		check_str("host", req.host, d->host);
		check_str("authority", req.authority, d->authority);
		CHECK(req.minor == d->minor, "minor: expected %d, got %d", d->minor, req.minor);
		CHECK(req.content_length == d->cl, "content_length: expected %" PRId64 ", got %" PRId64,
		      d->cl, req.content_length);
		CHECK(req.flags == d->flags, "flags: expected 0x%x, got 0x%x", d->flags, req.flags);
		if (d->nheaders >= 0)
			CHECK(req.nheaders == (size_t)d->nheaders, "nheaders: expected %d, got %zu", d->nheaders,
			      req.nheaders);
		if (d->hname) {
			const struct lb_header *h = lb_header_find(req.headers, req.nheaders, d->hname);
			if (d->hval == ABSENT)
				CHECK(h == NULL, "lb_header_find(%s): expected NULL, got %s", d->hname,
				      h ? S(h->value) : "");
			else if (!h)
				failf("lb_header_find(%s): expected %s, got NULL", d->hname, esc(d->hval, strlen(d->hval)));
			else
				check_str("header value", h->value, d->hval);
		}
		if (d->upgrade)
			check_str("upgrade", req.upgrade, d->upgrade);
	}
	free(b);
	req_prefixes(d->raw, hl, 1);
	end("request_fields/%s", d->name);
}

static void test_request_details(void)
{
	RUN_TABLE(NULL, rq_details, check_request_fields_row);
}

/* One lb_req reused for a second request (keep-alive): no field may leak from the first. */
static void test_request_reuse(void)
{
	const char *r1 = "POST /a?q=1 HTTP/1.0\r\nHost: a\r\nContent-Length: 3\r\nConnection: keep-alive\r\n"
	                 "X-1: 1\r\n\r\n";
	const char *r2 = "GET /b HTTP/1.1\r\nHost: b\r\n\r\n";
	struct lb_req req;
	char *b1 = dupbuf(r1, strlen(r1)), *b2 = dupbuf(r2, strlen(r2));
	begin();
	memset(&req, 0, sizeof req);
	int rc = lb_parse_request(b1, strlen(r1), &req);
	CHECK(rc == (int)strlen(r1), "first: expected %zu, got %d", strlen(r1), rc);
	rc = lb_parse_request(b2, strlen(r2), &req);
	CHECK(rc == (int)strlen(r2), "second: expected %zu, got %d", strlen(r2), rc);
	CHECK(req.flags == 0, "flags: expected 0, got 0x%x", req.flags);
	CHECK(req.content_length == -1, "content_length: expected -1, got %" PRId64, req.content_length);
	CHECK(req.query.p == NULL && req.query.n == 0, "query: expected absent, got %s", S(req.query));
	CHECK(req.minor == 1, "minor: expected 1, got %d", req.minor);
	CHECK(req.nheaders == 1, "nheaders: expected 1, got %zu", req.nheaders);
	CHECK(req.method_id == LB_M_GET, "method_id: expected %d, got %d", LB_M_GET, req.method_id);
	check_str("host", req.host, "b");
	free(b1);
	free(b2);
	end("request/struct_reused");
}

static void test_header_find(void)
{
	struct lb_header h[3] = {
		{ { "Host", 4 }, { "a", 1 }, LB_H_HOST },
		{ { "X-Foo", 5 }, { "1", 1 }, LB_H_OTHER },
		{ { "x-foo-bar", 9 }, { "2", 1 }, LB_H_OTHER },
	};
	const struct lb_header *r;
	begin();
	r = lb_header_find(h, 3, "x-FOO");
	CHECK(r == &h[1], "x-FOO: expected entry 1, got %d", r ? (int)(r - h) : -1);
	r = lb_header_find(h, 3, "X-Foo-Bar");
	CHECK(r == &h[2], "X-Foo-Bar: expected entry 2, got %d", r ? (int)(r - h) : -1);
	r = lb_header_find(h, 3, "X-Fo");
	CHECK(r == NULL, "X-Fo (prefix): expected NULL, got %d", r ? (int)(r - h) : -1);
	r = lb_header_find(h, 3, "X-Foo-");
	CHECK(r == NULL, "X-Foo- (longer): expected NULL, got %d", r ? (int)(r - h) : -1);
	r = lb_header_find(h, 0, "host");
	CHECK(r == NULL, "n=0: expected NULL");
	end("header_find");
}

/* every name the proxy acts on is recognised in any case; near misses are not */
static void test_header_id(void)
{
	static const struct { const char *name; int id; } t[] = {
		{ "te", LB_H_TE }, { "host", LB_H_HOST }, { "expect", LB_H_EXPECT }, { "cookie", LB_H_COOKIE },
		{ "upgrade", LB_H_UPGRADE }, { "trailer", LB_H_TRAILER }, { "referer", LB_H_REFERER },
		{ "connection", LB_H_CONNECTION }, { "keep-alive", LB_H_KEEP_ALIVE }, { "user-agent", LB_H_USER_AGENT },
		{ "x-request-id", LB_H_X_REQUEST_ID }, { "content-length", LB_H_CONTENT_LENGTH },
		{ "x-forwarded-for", LB_H_X_FORWARDED_FOR }, { "proxy-connection", LB_H_PROXY_CONNECTION },
		{ "x-forwarded-host", LB_H_X_FORWARDED_HOST }, { "transfer-encoding", LB_H_TRANSFER_ENCODING },
		{ "x-forwarded-proto", LB_H_X_FORWARDED_PROTO }, { "x-client-cert-subject", LB_H_X_CLIENT_CERT_SUBJECT },
		{ "strict-transport-security", LB_H_STRICT_TRANSPORT_SECURITY },
	};
	begin();
	for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
		char up[64], near[64];
		size_t n = strlen(t[i].name);
		for (size_t k = 0; k <= n; k++)
			up[k] = (char)toupper((unsigned char)t[i].name[k]);
		CHECK(lb_header_id(t[i].name, n) == t[i].id, "%s: expected %d, got %d", t[i].name, t[i].id,
		      lb_header_id(t[i].name, n));
		CHECK(lb_header_id(up, n) == t[i].id, "%s: expected %d, got %d", up, t[i].id, lb_header_id(up, n));
		CHECK(lb_header_id(t[i].name, n - 1) == LB_H_OTHER, "%.*s (prefix) is recognised", (int)n - 1, t[i].name);
		for (size_t k = 0; k < n; k++) { /* one byte changed anywhere */
			memcpy(near, t[i].name, n);
			near[k] = near[k] == 'x' ? 'y' : 'x';
			CHECK(lb_header_id(near, n) == LB_H_OTHER, "%.*s is recognised", (int)n, near);
		}
	}
	CHECK(lb_header_id("", 0) == LB_H_OTHER, "empty name is recognised");
	CHECK(lb_header_id("accept", 6) == LB_H_OTHER, "accept is recognised");
	struct lb_req req;
	const char *raw = "GET / HTTP/1.1\r\nHOST: a\r\nX-Other: 1\r\nConnection: keep-alive, close\r\n\r\n";
	CHECK(lb_parse_request(raw, strlen(raw), &req) > 0, "request refused");
	CHECK(req.nheaders == 3 && req.headers[0].id == LB_H_HOST && req.headers[1].id == LB_H_OTHER &&
	      req.headers[2].id == LB_H_CONNECTION, "ids after parsing: %d %d %d", req.headers[0].id,
	      req.headers[1].id, req.headers[2].id);
	CHECK(!(req.flags & LB_HF_CONN_NAMES), "close and keep-alive set LB_HF_CONN_NAMES");
	raw = "GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Other\r\nX-Other: 1\r\n\r\n";
	CHECK(lb_parse_request(raw, strlen(raw), &req) > 0, "request refused");
	CHECK(req.flags & LB_HF_CONN_NAMES, "Connection: X-Other did not set LB_HF_CONN_NAMES");
	end("header_id");
}

/* ------------------------------------------------------------------ 2. response heads */

#define RESP_FLAGS (LB_HF_CHUNKED | LB_HF_CLOSE | LB_HF_KEEPALIVE | LB_HF_HAS_CL | LB_HF_TE)

struct rs_case {
	const char *name, *raw;
	int cls;
	int status, minor;
	const char *reason;   /* NULL: not checked */
	int64_t cl;
	unsigned flags;       /* compared under RESP_FLAGS */
};

static const struct rs_case rs_cases[] = {
	{ "200_cl", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", C_OK, 200, 1, "OK", 5, LB_HF_HAS_CL },
	{ "204", "HTTP/1.1 204 No Content\r\n\r\n", C_OK, 204, 1, "No Content", -1, 0 },
	{ "100_continue", "HTTP/1.1 100 Continue\r\n\r\n", C_OK, 100, 1, "Continue", -1, 0 },
	{ "101_switching", "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
	  C_OK, 101, 1, "Switching Protocols", -1, 0 },
	{ "chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", C_OK, 200, 1, "OK", -1,
	  LB_HF_CHUNKED | LB_HF_TE },
	{ "http10_close", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n", C_OK, 200, 0, "OK", 2,
	  LB_HF_CLOSE | LB_HF_HAS_CL },
	{ "http10_keepalive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n", C_OK,
	  200, 0, "OK", 2, LB_HF_KEEPALIVE | LB_HF_HAS_CL },
	{ "http11_connection_close", "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", C_OK, 200, 1, "OK", -1,
	  LB_HF_CLOSE },
	{ "empty_reason", "HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", C_OK, 200, 1, "", 0, LB_HF_HAS_CL },
	{ "reason_with_spaces", "HTTP/1.1 404 Not Found Here\r\nContent-Length: 0\r\n\r\n", C_OK, 404, 1,
	  "Not Found Here", 0, LB_HF_HAS_CL },
	{ "same_cl_twice", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", C_OK, 200, 1,
	  "OK", 3, LB_HF_HAS_CL },
	{ "304", "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n", C_OK, 304, 1, NULL, -1, 0 },
	{ "again_status_line", "HTTP/1.1 200 OK\r\n", C_AGAIN, 0, 0, NULL, 0, 0 },
	{ "again_partial", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n", C_AGAIN, 0, 0, NULL, 0, 0 },
	{ "status_2_digits", "HTTP/1.1 20 OK\r\n\r\n", C_INV, 0, 0, NULL, 0, 0 },
	{ "status_4_digits", "HTTP/1.1 2000 OK\r\n\r\n", C_INV, 0, 0, NULL, 0, 0 },
	{ "status_non_digit", "HTTP/1.1 2x0 OK\r\n\r\n", C_INV, 0, 0, NULL, 0, 0 },
	{ "status_below_100", "HTTP/1.1 099 Low\r\n\r\n", C_INV, 0, 0, NULL, 0, 0 },
	{ "cl_and_te", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", C_INV, 0, 0,
	  NULL, 0, 0 },
	{ "cl_differ", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", C_INV, 0, 0, NULL, 0, 0 },
	{ "cl_non_digit", "HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n", C_INV, 0, 0, NULL, 0, 0 },
	{ "obs_fold", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", C_INV, 0, 0, NULL, 0, 0 },
	{ "bad_field_name", "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", C_INV, 0, 0, NULL, 0, 0 },
	{ "bare_lf", "HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", C_INV, 0, 0, NULL, 0, 0 },
	{ "not_http", "ICY 200 OK\r\n\r\n", C_INV, 0, 0, NULL, 0, 0 },
};

static void check_response_row(const void *row)
{
	const struct rs_case *c = row;
	size_t len = strlen(c->raw);
	struct lb_resp resp;
	char *b = dupbuf(c->raw, len);
	begin();
	memset(&resp, 0, sizeof resp);
	int rc = lb_parse_response(b, len, &resp);
	if (c->cls == C_OK) {
		CHECK(rc == (int)len, "expected %zu, got %d (%s)", len, rc, resp.error ? resp.error : "no error");
		if (rc > 0) {
			CHECK(resp.status == c->status, "status: expected %d, got %d", c->status, resp.status);
			CHECK(resp.minor == c->minor, "minor: expected %d, got %d", c->minor, resp.minor);
			if (c->reason)
				check_str("reason", resp.reason, c->reason);
			CHECK(resp.content_length == c->cl, "content_length: expected %" PRId64 ", got %" PRId64,
			      c->cl, resp.content_length);
			CHECK((resp.flags & RESP_FLAGS) == c->flags, "flags: expected 0x%x, got 0x%x", c->flags,
			      resp.flags & RESP_FLAGS);
		}
	} else if (c->cls == C_AGAIN) {
		CHECK(rc == LB_EAGAIN, "expected %d (EAGAIN), got %d", LB_EAGAIN, rc);
	} else {
		CHECK(rc == LB_EINVAL, "expected %d (EINVAL), got %d", LB_EINVAL, rc);
		if (rc == LB_EINVAL)
			CHECK(resp.error != NULL, "resp.error is NULL on EINVAL");
	}
	free(b);
	/* prefixes */
	for (size_t l = 0; l < len && !c_fail; l++) {
		char *p = dupbuf(c->raw, l);
		memset(&resp, 0, sizeof resp);
		rc = lb_parse_response(p, l, &resp);
		free(p);
		if (c->cls == C_OK)
			CHECK(rc == LB_EAGAIN, "prefix of %zu/%zu bytes: expected %d, got %d", l, len, LB_EAGAIN, rc);
		else
			CHECK(rc == LB_EAGAIN || rc == LB_EINVAL || (rc > 0 && (size_t)rc <= l),
			      "prefix of %zu/%zu bytes: got %d", l, len, rc);
	}
	end("response/%s", c->name);
}

static void test_response_table(void)
{
	RUN_TABLE(NULL, rs_cases, check_response_row);
}

static void test_resp_has_body(void)
{
	static const struct { int m, st, exp; } t[] = {
		{ LB_M_HEAD, 200, 0 }, { LB_M_HEAD, 404, 0 }, { LB_M_HEAD, 500, 0 },
		{ LB_M_GET, 100, 0 }, { LB_M_GET, 101, 0 }, { LB_M_GET, 199, 0 },
		{ LB_M_GET, 204, 0 }, { LB_M_GET, 304, 0 }, { LB_M_POST, 204, 0 },
		{ LB_M_GET, 200, 1 }, { LB_M_POST, 201, 1 }, { LB_M_GET, 404, 1 },
		{ LB_M_GET, 500, 1 }, { LB_M_OTHER, 200, 1 }, { LB_M_GET, 302, 1 },
	};
	begin();
	for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
		int got = lb_resp_has_body(t[i].m, t[i].st);
		CHECK(!!got == t[i].exp, "method_id %d status %d: expected %d, got %d", t[i].m, t[i].st, t[i].exp, got);
	}
	end("resp_has_body");
}

/* ------------------------------------------------------------------ 3. chunked framing */

#define WIKI "4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n"

struct ck_case {
	const char *name;
	const char *raw;
	size_t len;      /* 0: strlen */
	int expect;      /* LB_CHUNK_DONE / MORE / ERROR */
	size_t used;     /* DONE: body end offset */
	uint64_t body;   /* DONE: data bytes */
};

static char ck_big[8192], ck_long_ext[6000], ck_long_trailer[6000], ck_many_trailers[24000];
static size_t ck_big_len, ck_big_used;

/* a DONE case: body B (ends the chunked body), then bytes X that are not part of it */
#define CKD(name, B, X, n) { name, B X, 0, LB_CHUNK_DONE, sizeof(B) - 1, n }

static const struct ck_case ck_cases[] = {
	CKD("wiki", WIKI, "", 9),
	CKD("wiki_then_next_request", WIKI, "GET / HTTP/1.1\r\n", 9),
	CKD("last_chunk_only", "0\r\n\r\n", "", 0),
	CKD("last_chunk_then_bytes", "0\r\n\r\n", "XYZ", 0),
	CKD("trailers", "4\r\nWiki\r\n0\r\nX: y\r\n\r\n", "", 4),
	CKD("two_trailers_then_bytes", "0\r\nX: y\r\nZ: w\r\n\r\n", "Q", 0),
	CKD("extensions", "4;a=b\r\nWiki\r\n0;x\r\n\r\n", "", 4),
	CKD("upper_hex", "A\r\n0123456789\r\n0\r\n\r\n", "", 10),
	CKD("lower_hex", "a\r\n0123456789\r\n0\r\n\r\n", "", 10),
	CKD("leading_zeros", "0004\r\nWiki\r\n0\r\n\r\n", "", 4),
	CKD("sixteen_digits", "0000000000000004\r\nWiki\r\n0\r\n\r\n", "", 4),
	CKD("crlf_inside_data", "2\r\n\r\n\r\n0\r\n\r\n", "", 2),
	{ "big_binary_chunks", ck_big, 1, LB_CHUNK_DONE, 1, 5097 }, /* len/used set at run time */
	{ "more_partial_data", "4\r\nWi", 0, LB_CHUNK_MORE, 0, 0 },
	{ "more_after_last_chunk", "4\r\nWiki\r\n0\r\n", 0, LB_CHUNK_MORE, 0, 0 },
	{ "more_empty", "", 0, LB_CHUNK_MORE, 0, 0 },
	{ "err_17_digits", "10000000000000000\r\nx\r\n0\r\n\r\n", 0, LB_CHUNK_ERROR, 0, 0 },
	{ "err_17_digits_leading_zeros", "00000000000000001\r\nx\r\n0\r\n\r\n", 0, LB_CHUNK_ERROR, 0, 0 },
	{ "err_over_2_63", "8000000000000001\r\nx\r\n0\r\n\r\n", 0, LB_CHUNK_ERROR, 0, 0 },
	{ "err_all_f", "FFFFFFFFFFFFFFFF\r\nx\r\n0\r\n\r\n", 0, LB_CHUNK_ERROR, 0, 0 },
	{ "err_non_hex", "g\r\nx\r\n0\r\n\r\n", 0, LB_CHUNK_ERROR, 0, 0 },
	{ "err_0x_prefix", "0x4\r\nWiki\r\n0\r\n\r\n", 0, LB_CHUNK_ERROR, 0, 0 },
	{ "err_negative", "-4\r\nWiki\r\n0\r\n\r\n", 0, LB_CHUNK_ERROR, 0, 0 },
	{ "err_empty_size_line", "\r\nWiki\r\n0\r\n\r\n", 0, LB_CHUNK_ERROR, 0, 0 },
	{ "err_no_crlf_after_data", "3\r\nabcX\r\n0\r\n\r\n", 0, LB_CHUNK_ERROR, 0, 0 },
	{ "err_cr_without_lf_after_data", "3\r\nabc\rX0\r\n\r\n", 0, LB_CHUNK_ERROR, 0, 0 },
	{ "err_bare_lf_size_line", "4\nWiki\r\n0\r\n\r\n", 0, LB_CHUNK_ERROR, 0, 0 },
	{ "err_bare_lf_after_data", "4\r\nWiki\n0\r\n\r\n", 0, LB_CHUNK_ERROR, 0, 0 },
	{ "err_bare_lf_final_line", "0\r\n\n", 0, LB_CHUNK_ERROR, 0, 0 },
	{ "err_bare_lf_trailer", "0\r\nX: y\n\r\n", 0, LB_CHUNK_ERROR, 0, 0 },
	{ "err_cr_in_size_line", "4\rWiki\r\n0\r\n\r\n", 0, LB_CHUNK_ERROR, 0, 0 },
	{ "err_space_before_semicolon", "4 ;a=b\r\nWiki\r\n0\r\n\r\n", 0, LB_CHUNK_ERROR, 0, 0 },
	{ "err_space_after_size", "4 \r\nWiki\r\n0\r\n\r\n", 0, LB_CHUNK_ERROR, 0, 0 },
	{ "err_size_line_too_long", ck_long_ext, 0, LB_CHUNK_ERROR, 0, 0 },
	/* strict extension grammar: what a lenient server could read otherwise is refused (found by tests/smuggle.py) */
	CKD("ext_quoted", "4;a=\"b c\\\"d\"\r\nWiki\r\n0\r\n\r\n", "", 4),
	CKD("ext_two", "4;a=b;c\r\nWiki\r\n0;x=\"\"\r\n\r\n", "", 4),
	{ "err_ext_quote_across_crlf", "1;a=\"\r\nX\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n\"\r\nY\r\n0\r\n\r\n", 0,
	  LB_CHUNK_ERROR, 0, 0 },
	{ "err_ext_unterminated_quote", "5;a=\"b\r\nhello\r\n0\r\n\r\n", 0, LB_CHUNK_ERROR, 0, 0 },
	{ "err_ext_empty_name", "5;\r\nhello\r\n0\r\n\r\n", 0, LB_CHUNK_ERROR, 0, 0 },
	{ "err_ext_empty_value", "5;a=\r\nhello\r\n0\r\n\r\n", 0, LB_CHUNK_ERROR, 0, 0 },
	{ "err_ext_space_in_value", "5;a=b c\r\nhello\r\n0\r\n\r\n", 0, LB_CHUNK_ERROR, 0, 0 },
	{ "err_ext_obs_text", "5;a=\x80\r\nhello\r\n0\r\n\r\n", 0, LB_CHUNK_ERROR, 0, 0 },
	{ "err_ext_text_after_quote", "5;a=\"b\"c\r\nhello\r\n0\r\n\r\n", 0, LB_CHUNK_ERROR, 0, 0 },
	{ "err_trailer_request_line", "5\r\nhello\r\n0\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", 0, LB_CHUNK_ERROR,
	  0, 0 },
	{ "err_trailer_no_colon", "0\r\nX-Trailer\r\n\r\n", 0, LB_CHUNK_ERROR, 0, 0 },
	{ "err_trailer_space_before_colon", "0\r\nX-Trailer : 1\r\n\r\n", 0, LB_CHUNK_ERROR, 0, 0 },
	{ "err_trailer_line_too_long", ck_long_trailer, 0, LB_CHUNK_ERROR, 0, 0 },
	{ "err_trailers_too_big", ck_many_trailers, 0, LB_CHUNK_ERROR, 0, 0 },
};

static void build_chunk_inputs(void)
{
	size_t n = 0;
	static const size_t sizes[] = { 1000, 1, 4096 };
	for (size_t i = 0; i < 3; i++) {
		n += (size_t)snprintf(ck_big + n, sizeof ck_big - n, "%zx\r\n", sizes[i]);
		for (size_t j = 0; j < sizes[i]; j++)
			ck_big[n++] = (char)(sm64() & 0xff);
		ck_big[n++] = '\r';
		ck_big[n++] = '\n';
	}
	memcpy(ck_big + n, "0\r\n\r\n", 5);
	n += 5;
	ck_big_used = n;
	memcpy(ck_big + n, "junk", 4);
	ck_big_len = n + 4;

	mkstr(ck_long_ext, sizeof ck_long_ext, "4;", 'a', 5000, "\r\nWiki\r\n0\r\n\r\n");
	mkstr(ck_long_trailer, sizeof ck_long_trailer, "0\r\nX: ", 'b', 5000, "\r\n\r\n");
	n = (size_t)snprintf(ck_many_trailers, sizeof ck_many_trailers, "0\r\n");
	for (int i = 0; i < 10; i++) {
		char line[2100];
		mkstr(line, sizeof line, "X: ", 'c', 2000, "\r\n");
		n += (size_t)snprintf(ck_many_trailers + n, sizeof ck_many_trailers - n, "%s", line);
	}
	snprintf(ck_many_trailers + n, sizeof ck_many_trailers - n, "\r\n");
}

static int chunk_feed(struct lb_chunk *st, const char *p, size_t n, size_t *used)
{
	char *b = dupbuf(p, n);
	*used = (size_t)-1;
	int rc = lb_chunk_scan(st, b, n, used);
	free(b);
	return rc;
}

static void check_chunk_row(const void *row)
{
	const struct ck_case *c = row;
	int is_big = c->raw == ck_big;
	size_t len = is_big ? ck_big_len : (c->len ? c->len : strlen(c->raw));
	size_t exp_used = is_big ? ck_big_used : c->used;
	struct lb_chunk st;
	size_t used;
	int rc;
	begin();

	/* whole */
	lb_chunk_init(&st);
	rc = chunk_feed(&st, c->raw, len, &used);
	CHECK(rc == c->expect, "whole: expected %d, got %d (used %zu)", c->expect, rc, used);
	if (rc == c->expect && rc == LB_CHUNK_DONE) {
		CHECK(used == exp_used, "whole: used expected %zu, got %zu", exp_used, used);
		CHECK(st.body == c->body, "whole: body expected %" PRIu64 ", got %" PRIu64, c->body, st.body);
	}
	if (rc == c->expect && rc == LB_CHUNK_MORE)
		CHECK(used == len, "whole: MORE used expected %zu, got %zu", len, used);

	/* byte by byte */
	lb_chunk_init(&st);
	rc = LB_CHUNK_MORE;
	size_t off = 0;
	for (; off < len; off++) {
		rc = chunk_feed(&st, c->raw + off, 1, &used);
		if (rc != LB_CHUNK_MORE)
			break;
		if (used != 1) {
			failf("bytewise: MORE at offset %zu with used %zu (expected 1)", off, used);
			break;
		}
	}
	if (c->expect == LB_CHUNK_DONE) {
		CHECK(rc == LB_CHUNK_DONE, "bytewise: expected DONE, got %d at offset %zu", rc, off);
		if (rc == LB_CHUNK_DONE) {
			CHECK(off + used == exp_used, "bytewise: body end expected %zu, got %zu", exp_used, off + used);
			CHECK(st.body == c->body, "bytewise: body expected %" PRIu64 ", got %" PRIu64, c->body,
			      st.body);
		}
	} else {
		CHECK(rc == c->expect, "bytewise: expected %d, got %d at offset %zu", c->expect, rc, off);
	}

	/* every 2-way split */
	for (size_t k = 0; k <= len && !c_fail; k++) {
		size_t u1, u2 = 0;
		lb_chunk_init(&st);
		int r1 = chunk_feed(&st, c->raw, k, &u1), r2 = r1;
		size_t total = u1;
		if (r1 == LB_CHUNK_MORE) {
			if (u1 != k) {
				failf("split %zu: first part MORE with used %zu", k, u1);
				break;
			}
			r2 = chunk_feed(&st, c->raw + k, len - k, &u2);
			total = k + u2;
		}
		if (c->expect == LB_CHUNK_DONE) {
			CHECK(r2 == LB_CHUNK_DONE && total == exp_used,
			      "split at %zu: expected DONE at %zu, got rc %d/%d at %zu", k, exp_used, r1, r2, total);
			if (r2 == LB_CHUNK_DONE)
				CHECK(st.body == c->body, "split at %zu: body expected %" PRIu64 ", got %" PRIu64, k,
				      c->body, st.body);
		} else {
			CHECK(r2 == c->expect, "split at %zu: expected %d, got %d/%d", k, c->expect, r1, r2);
		}
	}
	end("chunk/%s", c->name);
}

static void test_chunk_table(void)
{
	RUN_TABLE(NULL, ck_cases, check_chunk_row);
}

/* ------------------------------------------------------------------ 4. value parsers */

struct val_case {
	const char *s;
	size_t n;       /* 0: strlen */
	int ok;
	uint64_t v;
};

/* One value-parser row: parse r->s (r->n bytes, or its strlen) from an exact heap copy; an ok row
 * must give r->v, any other an error. */
static void check_u64_row(const struct val_case *r, int (*parse)(const char *, size_t, uint64_t *))
{
	size_t n = r->n ? r->n : strlen(r->s);
	char *b = dupbuf(r->s, n);
	uint64_t v = 12345;
	int rc = parse(b, n, &v);
	free(b);
	if (r->ok)
		CHECK(rc == 0 && v == r->v, "%s: expected 0 and %" PRIu64 ", got %d and %" PRIu64,
		      esc(r->s, n), r->v, rc, v);
	else
		CHECK(rc < 0, "%s: expected an error, got %d (value %" PRIu64 ")", esc(r->s, n), rc, v);
}

/* lb_parse_bool as a value parser of check_u64_row */
static int parse_bool_u64(const char *s, size_t n, uint64_t *v)
{
	int b = 77;
	int rc = lb_parse_bool(s, n, &b);
	*v = (uint64_t)b;
	return rc;
}

static void check_duration_row(const void *row) { check_u64_row(row, lb_parse_duration); }
static void check_size_row(const void *row) { check_u64_row(row, lb_parse_size); }
static void check_bool_row(const void *row) { check_u64_row(row, parse_bool_u64); }

/* A row's outcome: where the row wants an error, rc must be one; else rc must be 0. 1 when the row
 * wants success and got it: its fields are checked next. */
static int row_outcome(const char *s, int want_ok, int rc, const char *error)
{
	if (!want_ok) {
		CHECK(rc < 0, "\"%s\": expected an error, got %d", s, rc);
		return 0;
	}
	CHECK(rc == 0, "\"%s\": expected 0, got %d (%s)", s, rc, error ? error : "");
	return rc == 0;
}

static void test_durations(void)
{
	static const struct val_case t[] = {
		{ "250ms", 0, 1, 250 }, { "10s", 0, 1, 10000 }, { "5m", 0, 1, 300000 },
		{ "1h", 0, 1, 3600000 }, { "1d", 0, 1, 86400000 }, { "0s", 0, 1, 0 },
		{ "1ms", 0, 1, 1 }, { "90s", 0, 1, 90000 },
		{ "10sXX", 3, 1, 10000 }, /* n is honoured */
		{ "10", 0, 0, 0 }, { "s", 0, 0, 0 }, { "ms", 0, 0, 0 }, { "-1s", 0, 0, 0 },
		{ "1.5s", 0, 0, 0 }, { "10x", 0, 0, 0 }, { "", 0, 0, 0 }, { "10 s", 0, 0, 0 },
		{ "10sec", 0, 0, 0 }, { "99999999999999999999s", 0, 0, 0 },
		{ "1000000000000000d", 0, 0, 0 }, { "18446744073709551616ms", 0, 0, 0 },
	};
	RUN_TABLE("parse_duration", t, check_duration_row);
}

static void test_sizes(void)
{
	static const struct val_case t[] = {
		{ "512", 0, 1, 512 }, { "16k", 0, 1, 16384 }, { "10m", 0, 1, 10485760 },
		{ "1g", 0, 1, 1073741824 }, { "0", 0, 1, 0 }, { "1k", 0, 1, 1024 },
		{ "16kZ", 3, 1, 16384 },
		{ "k", 0, 0, 0 }, { "-1", 0, 0, 0 }, { "1t", 0, 0, 0 }, { "", 0, 0, 0 },
		{ "1.5k", 0, 0, 0 }, { "10 k", 0, 0, 0 }, { "99999999999999999999", 0, 0, 0 },
		{ "17179869184g", 0, 0, 0 }, { "18014398509481984k", 0, 0, 0 },
	};
	RUN_TABLE("parse_size", t, check_size_row);
}

static void test_bools(void)
{
	static const struct val_case t[] = {
		{ "on", 0, 1, 1 }, { "off", 0, 1, 0 }, { "onXX", 2, 1, 1 },
		{ "yes", 0, 0, 0 }, { "no", 0, 0, 0 }, { "", 0, 0, 0 }, { "onn", 0, 0, 0 },
		{ "o", 0, 0, 0 }, { "of", 0, 0, 0 }, { "1", 0, 0, 0 }, { "true", 0, 0, 0 },
	};
	RUN_TABLE("parse_bool", t, check_bool_row);
}

struct hostport_case {
	const char *s;
	int ok;
	const char *host;
	unsigned port;
	int v6, wild;
};

static void check_hostport_row(const void *row)
{
	const struct hostport_case *r = row;
	size_t n = strlen(r->s);
	char *b = dupbuf(r->s, n);
	struct lb_hostport hp;
	memset(&hp, 0x55, sizeof hp);
	int rc = lb_parse_hostport(b, n, &hp);
	free(b);
	if (!row_outcome(r->s, r->ok, rc, NULL))
		return;
	hp.host[sizeof hp.host - 1] = 0;
	/* v6: the host is stored without brackets (ready for getaddrinfo); "[::1]" accepted too */
	int host_ok = strcmp(hp.host, r->host) == 0 ||
	              (r->v6 && strlen(hp.host) == strlen(r->host) + 2 && hp.host[0] == '[' &&
	               strncmp(hp.host + 1, r->host, strlen(r->host)) == 0);
	CHECK(host_ok, "%s: host expected \"%s\", got \"%s\"", r->s, r->host, hp.host);
	CHECK(hp.port == r->port, "%s: port expected %u, got %u", r->s, r->port, (unsigned)hp.port);
	CHECK(!!hp.v6 == r->v6, "%s: v6 expected %d, got %d", r->s, r->v6, hp.v6);
	CHECK(!!hp.wildcard == r->wild, "%s: wildcard expected %d, got %d", r->s, r->wild, hp.wildcard);
}

static void test_hostports(void)
{
	static const struct hostport_case t[] = {
		{ "127.0.0.1:80", 1, "127.0.0.1", 80, 0, 0 },
		{ "[::1]:8080", 1, "::1", 8080, 1, 0 },
		{ "*:80", 1, "", 80, 0, 1 },
		{ "example.com:443", 1, "example.com", 443, 0, 0 },
		{ "a:65535", 1, "a", 65535, 0, 0 },
		{ "a:1", 1, "a", 1, 0, 0 },
		{ "127.0.0.1", 0, 0, 0, 0, 0 },
		{ "a:0", 0, 0, 0, 0, 0 },
		{ "a:65536", 0, 0, 0, 0, 0 },
		{ "a:", 0, 0, 0, 0, 0 },
		{ "a:8x", 0, 0, 0, 0, 0 },
		{ "a:-1", 0, 0, 0, 0, 0 },
		{ "a:99999999999", 0, 0, 0, 0, 0 },
		{ "[::1", 0, 0, 0, 0, 0 },
		{ "[::1]", 0, 0, 0, 0, 0 },
		{ "[::1]80", 0, 0, 0, 0, 0 },
		{ ":80", 0, 0, 0, 0, 0 },
		{ "[]:80", 0, 0, 0, 0, 0 },
		{ "", 0, 0, 0, 0, 0 },
	};
	begin();
	RUN_TABLE(NULL, t, check_hostport_row);
	/* a host name longer than LB_HOST_MAX - 1 */
	{
		char s[400];
		struct lb_hostport hp;
		mkstr(s, sizeof s, "", 'h', 300, ":80");
		char *b = dupbuf(s, strlen(s));
		int rc = lb_parse_hostport(b, strlen(s), &hp);
		free(b);
		CHECK(rc < 0, "300-char host: expected an error, got %d", rc);
	}
	/* n honoured */
	{
		struct lb_hostport hp;
		char *b = dupbuf("a:8080junk", 6);
		int rc = lb_parse_hostport(b, 6, &hp);
		free(b);
		CHECK(rc == 0 && hp.port == 8080, "\"a:8080\" (n=6 of a longer string): expected 0 port 8080, got %d port %u",
		      rc, (unsigned)hp.port);
	}
	end("parse_hostport");
}

struct server_case {
	const char *s;
	int ok;
	const char *name, *host;
	unsigned port, weight, max_conn;
	int backup, disabled, tls;
};

static void check_server_row(const void *row)
{
	const struct server_case *r = row;
	size_t n = strlen(r->s);
	char *b = dupbuf(r->s, n);
	struct lb_server_spec sp;
	memset(&sp, 0, sizeof sp);
	int rc = lb_parse_server(b, n, &sp);
	free(b);
	CHECK(r->ok || rc >= 0 || sp.error != NULL, "\"%s\": error is NULL", r->s);
	if (!row_outcome(r->s, r->ok, rc, sp.error))
		return;
	sp.name[sizeof sp.name - 1] = 0;
	sp.addr.host[sizeof sp.addr.host - 1] = 0;
	CHECK(strcmp(sp.name, r->name) == 0, "\"%s\": name expected %s, got %s", r->s, r->name, sp.name);
	CHECK(strcmp(sp.addr.host, r->host) == 0, "\"%s\": host expected %s, got %s", r->s, r->host,
	      sp.addr.host);
	CHECK(sp.addr.port == r->port, "\"%s\": port expected %u, got %u", r->s, r->port,
	      (unsigned)sp.addr.port);
	CHECK(sp.weight == r->weight, "\"%s\": weight expected %u, got %u", r->s, r->weight, sp.weight);
	CHECK(sp.max_conn == r->max_conn, "\"%s\": max_conn expected %u, got %u", r->s, r->max_conn,
	      sp.max_conn);
	CHECK(!!sp.backup == r->backup, "\"%s\": backup expected %d, got %d", r->s, r->backup, sp.backup);
	CHECK(!!sp.disabled == r->disabled, "\"%s\": disabled expected %d, got %d", r->s, r->disabled,
	      sp.disabled);
	CHECK(!!sp.tls == r->tls, "\"%s\": tls expected %d, got %d", r->s, r->tls, sp.tls);
}

static void test_servers(void)
{
	static const struct server_case t[] = {
		{ "web1 10.0.0.1:80 weight=5 backup max_conn=100", 1, "web1", "10.0.0.1", 80, 5, 100, 1, 0, 0 },
		{ "web2 10.0.0.2:8080", 1, "web2", "10.0.0.2", 8080, 1, 0, 0, 0, 0 },
		{ "w3 h.example:81 disabled", 1, "w3", "h.example", 81, 1, 0, 0, 1, 0 },
		{ "w4 h:443 tls", 1, "w4", "h", 443, 1, 0, 0, 0, 1 },
		{ "w5 h:1 weight=1000", 1, "w5", "h", 1, 1000, 0, 0, 0, 0 },
		{ "w6 h:2 max_conn=7 tls disabled weight=2", 1, "w6", "h", 2, 2, 7, 0, 1, 1 },
		{ "w h:1 weight=0", 0, 0, 0, 0, 0, 0, 0, 0, 0 },
		{ "w h:1 weight=1001", 0, 0, 0, 0, 0, 0, 0, 0, 0 },
		{ "w h:1 weight=abc", 0, 0, 0, 0, 0, 0, 0, 0, 0 },
		{ "w h:1 weight=", 0, 0, 0, 0, 0, 0, 0, 0, 0 },
		{ "w h:1 weight=-1", 0, 0, 0, 0, 0, 0, 0, 0, 0 },
		{ "w h:1 max_conn=x", 0, 0, 0, 0, 0, 0, 0, 0, 0 },
		{ "w h:1 frobnicate", 0, 0, 0, 0, 0, 0, 0, 0, 0 },
		{ "w", 0, 0, 0, 0, 0, 0, 0, 0, 0 },
		{ "", 0, 0, 0, 0, 0, 0, 0, 0, 0 },
		{ "w h", 0, 0, 0, 0, 0, 0, 0, 0, 0 },
		{ "w h:0", 0, 0, 0, 0, 0, 0, 0, 0, 0 },
	};
	begin();
	RUN_TABLE(NULL, t, check_server_row);
	/* names: 63 characters fit LB_NAME_MAX, 64 do not */
	{
		char s[200];
		struct lb_server_spec sp;
		mkstr(s, sizeof s, "", 'n', LB_NAME_MAX - 1, " h:80");
		char *b = dupbuf(s, strlen(s));
		memset(&sp, 0, sizeof sp);
		int rc = lb_parse_server(b, strlen(s), &sp);
		free(b);
		CHECK(rc == 0, "%d-char name: expected 0, got %d", LB_NAME_MAX - 1, rc);
		mkstr(s, sizeof s, "", 'n', LB_NAME_MAX, " h:80");
		b = dupbuf(s, strlen(s));
		memset(&sp, 0, sizeof sp);
		rc = lb_parse_server(b, strlen(s), &sp);
		free(b);
		CHECK(rc < 0, "%d-char name: expected an error, got %d", LB_NAME_MAX, rc);
	}
	end("parse_server");
}

/* ------------------------------------------------------------------ 5, 6. paths, request ids */

struct norm_case {
	const char *in;
	size_t n;
	const char *out;
};

static void check_normalize_row(const void *row)
{
	const struct norm_case *r = row;
	size_t n = r->n ? r->n : strlen(r->in);
	char *b = dupbuf(r->in, n);
	char *o = malloc(n ? n : 1);
	if (!o)
		exit(2);
	long rc = lb_normalize_path(b, n, o);
	if (!r->out)
		CHECK(rc == LB_EINVAL, "%s: expected %d, got %ld", esc(r->in, n), LB_EINVAL, rc);
	else
		CHECK(rc == (long)strlen(r->out) && memcmp(o, r->out, strlen(r->out)) == 0,
		      "%s: expected \"%s\", got %ld %s", esc(r->in, n), r->out, rc,
		      rc >= 0 && (size_t)rc <= n ? esc(o, (size_t)rc) : "");
	free(b);
	free(o);
}

static void test_normalize(void)
{
	static const struct norm_case t[] = {
		{ "/a/./b/../c", 0, "/a/c" },
		{ "/%61%62", 0, "/ab" },
		{ "/%2f", 0, "/%2F" },
		{ "/%2F", 0, "/%2F" },
		{ "/a/..", 0, "/" },
		{ "/../x", 0, "/x" },
		{ "/a//b", 0, "/a//b" },
		{ "/", 0, "/" },
		{ "/a/b/", 0, "/a/b/" },
		{ "/a/./", 0, "/a/" },
		{ "/a/b/..", 0, "/a/" },
		{ "/.", 0, "/" },
		{ "/..", 0, "/" },
		{ "/a/b/../../..", 0, "/" },
		{ "/a/.b/..c/...", 0, "/a/.b/..c/..." },
		{ "/a/b/./c/.", 0, "/a/b/c/" },
		{ "/%7e%7E", 0, "/~~" },
		{ "/%41%2D%5F%2E%7a%30", 0, "/A-_.z0" },
		{ "/a/%2e%2e/b", 0, "/b" },
		{ "/a/%2E/b", 0, "/a/b" },
		{ "/a%20b", 0, "/a%20b" },
		{ "/a%c3%a9", 0, "/a%C3%A9" },
		{ "/%5c", 0, "/%5C" },
		{ "/%zz", 0, NULL },
		{ "/%4", 0, NULL },
		{ "/%", 0, NULL },
		{ "/%g1", 0, NULL },
		{ "/%00", 0, NULL },
		{ "/a\0b", 4, NULL },
		{ "a/b", 0, NULL },
		{ "", 0, NULL },
		{ "*", 0, NULL },
	};
	RUN_TABLE("normalize_path", t, check_normalize_row);
}

static void test_request_id(void)
{
	char s128[129], s129[130];
	mkstr(s128, sizeof s128, "", 'a', 128, "");
	mkstr(s129, sizeof s129, "", 'a', 129, "");
	const struct { const char *s; int ok; } t[] = {
		{ "abc-123", 1 }, { "550e8400-e29b-41d4-a716-446655440000", 1 }, { "A.b_c:D-9", 1 },
		{ "x", 1 }, { s128, 1 },
		{ "", 0 }, { s129, 0 }, { "a b", 0 }, { "a\"b", 0 }, { "a/b", 0 }, { "a\nb", 0 },
		{ "a,b", 0 }, { "\xc3\xa9", 0 },
	};
	begin();
	for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
		size_t n = strlen(t[i].s);
		char *b = dupbuf(t[i].s, n);
		int got = lb_request_id_ok(b, n);
		free(b);
		CHECK(!!got == t[i].ok, "%s (%zu bytes): expected %d, got %d", esc(t[i].s, n), n, t[i].ok, got);
	}
	end("request_id_ok");
}

static void test_log_template(void)
{
	struct lb_log_tpl t;
	const char *why;
	char bad[72];
	begin();
	const char *ok = "%{client} - %{method} %%%{t_total_us}";
	int rc = lb_log_template_parse(ok, strlen(ok), &t, &why, bad, sizeof bad);
	CHECK(rc == 0 && t.n == 6, "good template: rc %d, %zu pieces", rc, t.n);
	if (rc == 0 && t.n == 6) {
		CHECK(t.item[0].field == LB_LF_CLIENT && t.item[2].field == LB_LF_METHOD && t.item[5].field == LB_LF_T_TOTAL,
		      "fields: %d %d %d", t.item[0].field, t.item[2].field, t.item[5].field);
		CHECK(t.item[1].field < 0 && t.item[1].len == 3 && !memcmp(ok + t.item[1].off, " - ", 3), "literal 1");
		CHECK(t.item[3].field < 0 && t.item[3].len == 1 && t.item[4].field < 0 && !memcmp(ok + t.item[4].off, "%", 1),
		      "%%%% gives one '%%'");
	}
	const struct { const char *s; const char *why, *bad; } no[] = {
		{ "%{nope}", "unknown field", "nope" }, { "%{client", "not followed", "" }, { "50%", "not followed", "" },
		{ "%x", "not followed", "" }, { "", "1 to 1024", "" }, { "a\tb", "control", "" },
	};
	for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
		rc = lb_log_template_parse(no[i].s, strlen(no[i].s), &t, &why, bad, sizeof bad);
		CHECK(rc == LB_EINVAL && why && strstr(why, no[i].why) && !strcmp(bad, no[i].bad), "'%s': rc %d why %s bad '%s'",
		      no[i].s, rc, why ? why : "(null)", bad);
	}
	char many[1100] = "";
	for (int i = 0; i < 70; i++)
		strcat(many, "%{pid}");
	rc = lb_log_template_parse(many, strlen(many), &t, &why, bad, sizeof bad);
	CHECK(rc == LB_EINVAL && why && strstr(why, "64 pieces"), "70 fields: rc %d", rc);
	for (int f = 0; f < LB_LF_N; f++)
		CHECK(lb_log_field_names[f] && lb_log_field_names[f][0], "field %d has a name", f);
	end("log_template");
}

static void test_json_tokens(void)
{
	struct lb_jtok t[32];
	begin();
	const char *j = "{\"a\":[1,{\"b\":\"x\\\"y\"}],\"c\":null, \"d\":{}}";
	long n = lb_json_tokens(j, strlen(j), t, 32);
	CHECK(n == 11, "tokens of %s: %ld", j, n);
	if (n == 11) {
		CHECK(t[0].type == LB_J_OBJ && t[0].size == 3 && t[0].next == 11, "root: type %d size %u next %u", t[0].type,
		      t[0].size, t[0].next);
		CHECK(t[2].type == LB_J_ARR && t[2].size == 2 && t[2].next == 7, "array: size %u next %u", t[2].size, t[2].next);
		CHECK(t[6].type == LB_J_STR && t[6].end - t[6].start == 4, "escaped string: %u bytes", t[6].end - t[6].start);
		CHECK(t[8].type == LB_J_PRIM && t[10].type == LB_J_OBJ && t[10].size == 0, "null, empty object");
	}
	const char *bad[] = { "{", "[1,2", "{\"a\"", "{1:2}", "\"open", "{}}", "[]x", "", "{\"a\":\"\n\"}", "{\"a\"}",
	                      "{\"a\":1,\"b\"}", "{\"a\":{\"b\"}}" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		CHECK(lb_json_tokens(bad[i], strlen(bad[i]), t, 32) == LB_EINVAL, "'%s' is refused", bad[i]);
	char deep[80];
	memset(deep, '[', 40);
	memset(deep + 40, ']', 40);
	CHECK(lb_json_tokens(deep, 80, t, 32) == LB_EINVAL, "depth 40 / more tokens than room refused");
	CHECK(lb_json_tokens("[1,2,3]", 7, t, 3) == LB_EINVAL, "4 tokens in room for 3 refused");
	end("json_tokens");
}

/* lb_jdoc_*: what linode-scaler and lb ctl read: strings decoded exactly, numbers as doubles, literals, bounds */
static void test_jdoc(void)
{
	struct lb_jdoc d;
	begin();
	const char *j = "{\"a\":\"x\\\"y\\\\z\\/\\n\\t\",\"u\":\"\\u00e9\\u20AC\\ud83d\\ude00\\ud800x\",\"k\\\"q\":7,"
	                "\"n\":[0,-1.5,2e3,1E-2,12345678901,true,false,null],\"ip\":\"192.0.2.1\",\"e\":\"\"}";
	CHECK(lb_jdoc_parse(j, strlen(j), &d) == 0, "parse %s", j);
	const char *a = lb_jdoc_str(&d, lb_jdoc_get(&d, 0, "a")), *u = lb_jdoc_str(&d, lb_jdoc_get(&d, 0, "u"));
	CHECK(a && !strcmp(a, "x\"y\\z/\n\t"), "simple escapes: '%s'", a ? a : "(null)");
	CHECK(u && !strcmp(u, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xef\xbf\xbdx"), "\\u escapes, a pair, a lone surrogate: '%s'",
	      u ? u : "(null)");
	long long k = 0;
	CHECK(lb_jdoc_int(&d, lb_jdoc_get(&d, 0, "k\"q"), &k) == 0 && k == 7, "an escaped key is found by its text: %lld", k);
	CHECK(!strcmp(lb_jdoc_str(&d, lb_jdoc_get(&d, 0, "ip")) ? lb_jdoc_str(&d, lb_jdoc_get(&d, 0, "ip")) : "", "192.0.2.1") &&
	      lb_jdoc_str(&d, lb_jdoc_get(&d, 0, "e")) && !*lb_jdoc_str(&d, lb_jdoc_get(&d, 0, "e")), "plain and empty strings");
	long n = lb_jdoc_get(&d, 0, "n"), e = lb_jdoc_next(&d, n, -1);
	const double want[] = { 0, -1.5, 2000, 0.01, 12345678901.0 };
	for (size_t i = 0; i < 5; i++, e = lb_jdoc_next(&d, n, e)) {
		double v = -99;
		CHECK(lb_jdoc_num(&d, e, &v) == 0 && v == want[i], "number %zu: %g", i, v);
	}
	CHECK(lb_jdoc_int(&d, lb_jdoc_get(&d, 0, "k\"q"), &k) == 0, "7 is whole");
	CHECK(lb_jdoc_int(&d, lb_jdoc_next(&d, n, lb_jdoc_next(&d, n, -1)), &k) == -1, "-1.5 is not whole");
	double v;
	CHECK(lb_jdoc_num(&d, e, &v) == -1 && lb_jdoc_lit(&d, e) && !strcmp(lb_jdoc_lit(&d, e), "true") &&
	      !lb_jdoc_str(&d, e), "true is a literal, not a number nor a string");
	e = lb_jdoc_next(&d, n, lb_jdoc_next(&d, n, e));
	CHECK(e >= 0 && !strcmp(lb_jdoc_lit(&d, e), "null") && lb_jdoc_next(&d, n, e) == -1, "null ends the array");
	CHECK(lb_jdoc_get(&d, 0, "zz") == -1 && lb_jdoc_get(&d, -1, "a") == -1 && !lb_jdoc_str(&d, -1) &&
	      lb_jdoc_next(&d, 0, -1) == -1 && lb_jdoc_type(&d, d.n) == 0, "absent keys, tokens and non-arrays");
	lb_jdoc_free(&d);
	const char *bad[] = { "[\"\\x\"]", "[\"\\u12g4\"]", "[\"\\u12\"]", "[01]", "[1.]", "[-]", "[.5]", "[1e]",
	                      "[nul]", "[True]", "[0x10]", "[inf]", "{\"a\":1", "" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		CHECK(lb_jdoc_parse(bad[i], strlen(bad[i]), &d) == LB_EINVAL && !d.s && !d.t, "'%s' is refused", bad[i]);
		lb_jdoc_free(&d);
	}
	/* the token array is sized from the text but bounded: LB_JDOC_TOKENS_MAX tokens read, one more refused */
	size_t cnt = (size_t)LB_JDOC_TOKENS_MAX - 1, len = 2 * cnt + 1;
	char *big = malloc(len + 3);
	if (big) {
		big[0] = '[';
		for (size_t i = 0; i < cnt; i++)
			big[1 + 2 * i] = '0', big[2 + 2 * i] = ',';
		big[len - 1] = ']';
		CHECK(lb_jdoc_parse(big, len, &d) == 0 && d.n == LB_JDOC_TOKENS_MAX, "%ld tokens read", d.n);
		lb_jdoc_free(&d);
		memcpy(big + len - 1, ",0]", 3);
		CHECK(lb_jdoc_parse(big, len + 2, &d) == LB_EINVAL, "one token over the bound is refused");
		free(big);
	}
	end("jdoc");
}

static void test_hash(void)
{
	begin();
	uint64_t a = lb_hash64("abc", 3), a2 = lb_hash64("abc", 3), b = lb_hash64("abd", 3);
	char *p = dupbuf("abX", 3);
	uint64_t c = lb_hash64(p, 2), d = lb_hash64("ab", 2);
	free(p);
	CHECK(a == a2, "not deterministic");
	CHECK(a != b, "abc and abd collide");
	CHECK(c == d, "n not honoured");
	CHECK(lb_hash64("s0", 2) != lb_hash64("s1", 2), "s0 and s1 collide");
	end("hash64");
}

/* ------------------------------------------------------------------ 7. configuration */

static struct lb_cfg_errors g_errs;

static int conf_parse(const char *text, struct lb_conf **out)
{
	size_t n = strlen(text);
	char *b = dupbuf(text, n);
	memset(&g_errs, 0, sizeof g_errs);
	*out = NULL;
	int rc = lb_conf_parse(b, n, out, &g_errs);
	free(b);
	return rc;
}

static const char *errs_str(void)
{
	static char s[700];
	size_t k = 0;
	s[0] = 0;
	k += (size_t)snprintf(s, sizeof s, "total %d:", g_errs.total);
	for (int i = 0; i < g_errs.n && i < LB_CFG_MAX_ERRORS && k < sizeof s - 1; i++) {
		g_errs.e[i].msg[sizeof g_errs.e[i].msg - 1] = 0;
		k += (size_t)snprintf(s + k, sizeof s - k, " [line %d: %s]", g_errs.e[i].line, g_errs.e[i].msg);
	}
	return s;
}

static int err_at(int line, const char *sub)
{
	for (int i = 0; i < g_errs.n && i < LB_CFG_MAX_ERRORS; i++) {
		g_errs.e[i].msg[sizeof g_errs.e[i].msg - 1] = 0;
		if (g_errs.e[i].line == line && (!sub || contains_ci(g_errs.e[i].msg, sub)))
			return 1;
	}
	return 0;
}

static int find_pool(const struct lb_conf *c, const char *name)
{
	for (size_t i = 0; i < c->npools; i++)
		if (strcmp(c->pools[i].name, name) == 0)
			return (int)i;
	return -1;
}

static int find_listener(const struct lb_conf *c, const char *name)
{
	for (size_t i = 0; i < c->nlisteners; i++)
		if (strcmp(c->listeners[i].name, name) == 0)
			return (int)i;
	return -1;
}

static const char conf_full[] =
	"# lb unit test config\n"                                  /* 1 */
	"[global]\n"                                               /* 2 */
	"workers = 4\n"                                            /* 3 */
	"max_connections = 5000\n"                                 /* 4 */
	"pid_file = /run/lb.pid\n"                                 /* 5 */
	"shutdown_timeout = 30s\n"                                 /* 6 */
	"\n"                                                       /* 7 */
	"[log]\n"                                                  /* 8 */
	"access = /var/log/lb/access.log\n"                        /* 9 */
	"format = json\n"                                          /* 10 */
	"error = stderr\n"                                         /* 11 */
	"\n"                                                       /* 12 */
	"[pool api]\n"                                             /* 13 */
	"server = a1 10.0.0.1:8080 weight=5\n"                     /* 14 */
	"server = a2 10.0.0.2:8080 weight=3 max_conn=100\n"        /* 15 */
	"server = a3 10.0.0.3:8080 backup\n"                       /* 16 */
	"server = a4 10.0.0.4:8080 disabled\n"                     /* 17 */
	"algorithm = least_conn\n"                                 /* 18 */
	"connect_timeout = 2s\n"                                   /* 19 */
	"response_timeout = 30s\n"                                 /* 20 */
	"keepalive = 8\n"                                          /* 21 */
	"retries = 2\n"                                            /* 22 */
	"\n"                                                       /* 23 */
	"[pool web]\n"                                             /* 24 */
	"server = w1 127.0.0.1:9001\n"                             /* 25 */
	"\n"                                                       /* 26 */
	"[listener web]\n"                                         /* 27 */
	"bind = 127.0.0.1:8080\n"                                  /* 28 */
	"bind = [::1]:8080\n"                                      /* 29 */
	"mode = http\n"                                            /* 30 */
	"pool = web\n"                                             /* 31 */
	"header_timeout = 5s\n"                                    /* 32 */
	"idle_timeout = 30s\n"                                     /* 33 */
	"max_header_size = 32k\n"                                  /* 34 */
	"max_body_size = 1m\n"                                     /* 35 */
	"\n"                                                       /* 36 */
	"[listener db]\n"                                          /* 37 */
	"bind = *:5432\n"                                          /* 38 */
	"mode = tcp\n"                                             /* 39 */
	"pool = api\n"                                             /* 40 */
	"\n"                                                       /* 41 */
	"[route api]\n"                                            /* 42 */
	"listener = web\n"                                         /* 43 */
	"host = Api.Example.COM, *.api.example.com\n"              /* 44 */
	"path = /api/*, /v2\n"                                     /* 45 */
	"method = GET, POST\n"                                     /* 46 */
	"header = X-Canary: yes\n"                                 /* 47 */
	"pool = api\n"                                             /* 48 */
	"response_timeout = 5s\n"                                  /* 49 */
	"max_body_size = 2m\n"                                     /* 50 */
	"\n"                                                       /* 51 */
	"[route split]\n"                                          /* 52 */
	"split = api 90, web 10\n";                                /* 53 */

static void test_conf_full(void)
{
	struct lb_conf *c;
	begin();
	int rc = conf_parse(conf_full, &c);
	CHECK(rc == 0 && c, "expected 0, got %d: %s", rc, errs_str());
	if (rc != 0 || !c) {
		end("conf/valid_full");
		return;
	}
	CHECK(c->workers == 4, "workers: expected 4, got %u", c->workers);
	CHECK(c->max_connections == 5000, "max_connections: expected 5000, got %u", c->max_connections);
	CHECK(cstr_is(c->pid_file, "/run/lb.pid"), "pid_file: got %s", c->pid_file ? c->pid_file : "(null)");
	CHECK(c->shutdown_timeout == 30000, "shutdown_timeout: expected 30000, got %" PRIu64, c->shutdown_timeout);
	CHECK(cstr_is(c->access_log, "/var/log/lb/access.log"), "access_log: got %s",
	      c->access_log ? c->access_log : "(null)");
	CHECK(c->log_format == LB_LOG_JSON, "log_format: expected %d, got %d", LB_LOG_JSON, c->log_format);
	CHECK(cstr_is(c->error_log, "stderr"), "error_log: got %s", c->error_log ? c->error_log : "(null)");

	CHECK(c->npools == 2, "npools: expected 2, got %zu", c->npools);
	CHECK(c->nlisteners == 2, "nlisteners: expected 2, got %zu", c->nlisteners);
	CHECK(c->nroutes == 2, "nroutes: expected 2, got %zu", c->nroutes);
	int papi = find_pool(c, "api"), pweb = find_pool(c, "web");
	int lweb = find_listener(c, "web"), ldb = find_listener(c, "db");
	CHECK(papi >= 0 && pweb >= 0, "pools api/web not found (%d, %d)", papi, pweb);
	CHECK(lweb >= 0 && ldb >= 0, "listeners web/db not found (%d, %d)", lweb, ldb);

	if (papi >= 0) {
		struct lb_pool *p = &c->pools[papi];
		CHECK(p->line >= 13 && p->line < 24, "pool api line: expected 13, got %d", p->line);
		CHECK(p->nservers == 4, "pool api nservers: expected 4, got %zu", p->nservers);
		CHECK(p->algorithm == LB_ALGO_LEASTCONN, "algorithm: expected %d, got %d", LB_ALGO_LEASTCONN, p->algorithm);
		CHECK(p->connect_timeout == 2000, "connect_timeout: expected 2000, got %" PRIu64, p->connect_timeout);
		CHECK(p->response_timeout == 30000, "response_timeout: expected 30000, got %" PRIu64, p->response_timeout);
		CHECK(p->keepalive == 8, "keepalive: expected 8, got %u", p->keepalive);
		CHECK(p->retries == 2, "retries: expected 2, got %u", p->retries);
		static const struct { const char *name, *host; unsigned weight, max_conn; int backup, disabled, line; } es[] = {
			{ "a1", "10.0.0.1", 5, 0, 0, 0, 14 }, { "a2", "10.0.0.2", 3, 100, 0, 0, 15 },
			{ "a3", "10.0.0.3", 1, 0, 1, 0, 16 }, { "a4", "10.0.0.4", 1, 0, 0, 1, 17 },
		};
		for (size_t i = 0; i < 4 && i < p->nservers; i++) {
			struct lb_server *s = &p->servers[i];
			CHECK(strcmp(s->name, es[i].name) == 0, "server %zu: name expected %s, got %s", i, es[i].name, s->name);
			CHECK(strcmp(s->host, es[i].host) == 0, "server %s: host expected %s, got %s", es[i].name, es[i].host, s->host);
			CHECK(s->port == 8080, "server %s: port expected 8080, got %u", es[i].name, (unsigned)s->port);
			CHECK(s->weight == es[i].weight, "server %s: weight expected %u, got %u", es[i].name, es[i].weight, s->weight);
			CHECK(s->max_conn == es[i].max_conn, "server %s: max_conn expected %u, got %u", es[i].name,
			      es[i].max_conn, s->max_conn);
			CHECK(!!s->backup == es[i].backup, "server %s: backup expected %d, got %d", es[i].name, es[i].backup, s->backup);
			CHECK(!!s->disabled == es[i].disabled, "server %s: disabled expected %d, got %d", es[i].name,
			      es[i].disabled, s->disabled);
			CHECK(s->line == es[i].line, "server %s: line expected %d, got %d", es[i].name, es[i].line, s->line);
			CHECK(s->id == p->servers[0].id + i, "server %s: id %u, expected %u (a pool's ids are consecutive)",
			      es[i].name, s->id, p->servers[0].id + (unsigned)i);
		}
		if (p->nservers >= 2)
			CHECK(p->servers[0].name_hash != p->servers[1].name_hash, "name_hash of a1 and a2 equal (%" PRIu64 ")",
			      p->servers[0].name_hash);
	}
	if (pweb >= 0) {
		struct lb_pool *p = &c->pools[pweb];
		CHECK(p->nservers == 1, "pool web nservers: expected 1, got %zu", p->nservers);
		CHECK(p->algorithm == LB_ALGO_RR, "pool web algorithm: expected %d (round_robin), got %d", LB_ALGO_RR,
		      p->algorithm);
		CHECK(p->connect_timeout == 3000, "pool web connect_timeout default: expected 3000, got %" PRIu64,
		      p->connect_timeout);
		CHECK(p->response_timeout == 60000, "pool web response_timeout default: expected 60000, got %" PRIu64,
		      p->response_timeout);
		CHECK(p->keepalive == LB_KEEPALIVE_AUTO, "pool web keepalive default: expected auto, got %u", p->keepalive);
		CHECK(p->retries == 1, "pool web retries default: expected 1, got %u", p->retries);
		if (p->nservers == 1) {
			CHECK(strcmp(p->servers[0].name, "w1") == 0 && p->servers[0].port == 9001 && p->servers[0].weight == 1,
			      "server w1: got %s port %u weight %u", p->servers[0].name, (unsigned)p->servers[0].port,
			      p->servers[0].weight);
		}
	}
	if (lweb >= 0) {
		struct lb_listener *l = &c->listeners[lweb];
		CHECK(l->line >= 27 && l->line < 37, "listener web line: expected 27, got %d", l->line);
		CHECK(l->nbinds == 2, "listener web nbinds: expected 2, got %zu", l->nbinds);
		if (l->nbinds >= 2) {
			CHECK(strcmp(l->binds[0].hp.host, "127.0.0.1") == 0 && l->binds[0].hp.port == 8080 && !l->binds[0].hp.v6,
			      "bind 0: got %s:%u v6 %d", l->binds[0].hp.host, (unsigned)l->binds[0].hp.port, l->binds[0].hp.v6);
			CHECK(l->binds[1].hp.v6 && l->binds[1].hp.port == 8080, "bind 1: expected v6 port 8080, got v6 %d port %u",
			      l->binds[1].hp.v6, (unsigned)l->binds[1].hp.port);
			CHECK(l->binds[0].line == 28 && l->binds[1].line == 29, "bind lines: expected 28, 29, got %d, %d",
			      l->binds[0].line, l->binds[1].line);
		}
		CHECK(l->mode == LB_MODE_HTTP, "listener web mode: expected %d, got %d", LB_MODE_HTTP, l->mode);
		CHECK(l->pool == pweb, "listener web pool: expected %d, got %d", pweb, l->pool);
		CHECK(l->header_timeout == 5000, "header_timeout: expected 5000, got %" PRIu64, l->header_timeout);
		CHECK(l->idle_timeout == 30000, "idle_timeout: expected 30000, got %" PRIu64, l->idle_timeout);
		CHECK(l->max_header_size == 32768, "max_header_size: expected 32768, got %" PRIu64, l->max_header_size);
		CHECK(l->max_body_size == 1048576, "max_body_size: expected 1048576, got %" PRIu64, l->max_body_size);
	}
	if (ldb >= 0) {
		struct lb_listener *l = &c->listeners[ldb];
		CHECK(l->mode == LB_MODE_TCP, "listener db mode: expected %d, got %d", LB_MODE_TCP, l->mode);
		CHECK(l->pool == papi, "listener db pool: expected %d, got %d", papi, l->pool);
		CHECK(l->nbinds == 1 && l->binds[0].hp.wildcard && l->binds[0].hp.port == 5432,
		      "listener db bind: expected *:5432, got n %zu wildcard %d port %u", l->nbinds, l->binds[0].hp.wildcard,
		      (unsigned)l->binds[0].hp.port);
		CHECK(l->header_timeout == 10000, "db header_timeout default: expected 10000, got %" PRIu64, l->header_timeout);
		CHECK(l->idle_timeout == 60000, "db idle_timeout default: expected 60000, got %" PRIu64, l->idle_timeout);
		CHECK(l->max_header_size == 16384, "db max_header_size default: expected 16384, got %" PRIu64,
		      l->max_header_size);
		CHECK(l->max_body_size == 10485760, "db max_body_size default: expected 10485760, got %" PRIu64,
		      l->max_body_size);
	}
	if (c->nroutes == 2) {
		struct lb_route *r = &c->routes[0];
		CHECK(strcmp(r->name, "api") == 0, "route 0: expected api (file order), got %s", r->name);
		CHECK(r->line >= 42 && r->line < 52, "route api line: expected 42, got %d", r->line);
		CHECK(r->nlisteners == 1 && r->listeners[0] == lweb, "route api listeners: expected [%d], got n %zu [%d]",
		      lweb, r->nlisteners, r->nlisteners ? r->listeners[0] : -1);
		CHECK(r->nhosts == 2 && cstr_is(r->hosts[0], "api.example.com") && cstr_is(r->hosts[1], "*.api.example.com"),
		      "route api hosts: expected [api.example.com, *.api.example.com], got n %zu [%s, %s]", r->nhosts,
		      r->nhosts > 0 && r->hosts[0] ? r->hosts[0] : "", r->nhosts > 1 && r->hosts[1] ? r->hosts[1] : "");
		CHECK(r->npaths == 2 && cstr_is(r->paths[0], "/api/*") && cstr_is(r->paths[1], "/v2"),
		      "route api paths: expected [/api/*, /v2], got n %zu [%s, %s]", r->npaths,
		      r->npaths > 0 && r->paths[0] ? r->paths[0] : "", r->npaths > 1 && r->paths[1] ? r->paths[1] : "");
		CHECK(r->nmethods == 2 && cstr_is(r->methods[0], "GET") && cstr_is(r->methods[1], "POST"),
		      "route api methods: expected [GET, POST], got n %zu", r->nmethods);
		CHECK(r->nheaders == 1 && cstr_is(r->hdr_names[0], "X-Canary") && cstr_is(r->hdr_values[0], "yes"),
		      "route api header: expected X-Canary: yes, got n %zu [%s: %s]", r->nheaders,
		      r->nheaders && r->hdr_names[0] ? r->hdr_names[0] : "", r->nheaders && r->hdr_values[0] ? r->hdr_values[0] : "");
		CHECK(r->pool == papi, "route api pool: expected %d, got %d", papi, r->pool);
		CHECK(r->nsplit == 0, "route api nsplit: expected 0, got %zu", r->nsplit);
		CHECK(r->response_timeout == 5000, "route api response_timeout: expected 5000, got %" PRIu64,
		      r->response_timeout);
		CHECK(r->max_body_size == 2097152, "route api max_body_size: expected 2097152, got %" PRIu64,
		      r->max_body_size);
		r = &c->routes[1];
		CHECK(strcmp(r->name, "split") == 0, "route 1: expected split, got %s", r->name);
		CHECK(r->pool == -1, "route split pool: expected -1, got %d", r->pool);
		CHECK(r->nsplit == 2 && r->split[0].pool == papi && r->split[0].weight == 90 && r->split[1].pool == pweb &&
		      r->split[1].weight == 10,
		      "route split: expected [api 90, web 10], got n %zu [%d %u, %d %u]", r->nsplit, r->split[0].pool,
		      r->split[0].weight, r->split[1].pool, r->split[1].weight);
		CHECK(r->nlisteners == 0 && r->nhosts == 0 && r->npaths == 0 && r->nmethods == 0 && r->nheaders == 0,
		      "route split: expected no conditions");
		CHECK(r->response_timeout == 0 && r->max_body_size == 0, "route split overrides: expected 0, 0");
	}
	lb_conf_free(c);
	end("conf/valid_full");
}

static const char conf_min[] =
	"[pool p]\n"
	"server = s1 127.0.0.1:9000\n"
	"[listener l]\n"
	"bind = 127.0.0.1:8000\n"
	"pool = p\n";

static void test_conf_defaults(void)
{
	struct lb_conf *c;
	begin();
	int rc = conf_parse(conf_min, &c);
	CHECK(rc == 0 && c, "expected 0, got %d: %s", rc, errs_str());
	if (rc == 0 && c) {
		CHECK(c->workers == 0, "workers: expected 0 (auto), got %u", c->workers);
		CHECK(c->max_connections == 100000, "max_connections: expected 100000, got %u", c->max_connections);
		CHECK(c->pid_file == NULL, "pid_file: expected NULL, got %s", c->pid_file);
		CHECK(c->tls_ticket_keys == NULL && c->tls_ticket_rotate == 3600000,
		      "tls_ticket_keys/rotate: expected NULL/3600000, got %s/%" PRIu64,
		      c->tls_ticket_keys ? c->tls_ticket_keys : "(null)", c->tls_ticket_rotate);
		CHECK(cstr_is(c->access_log, "stdout"), "access_log: expected stdout, got %s",
		      c->access_log ? c->access_log : "(null)");
		CHECK(cstr_is(c->error_log, "stderr"), "error_log: expected stderr, got %s",
		      c->error_log ? c->error_log : "(null)");
		CHECK(c->log_format == LB_LOG_COMBINED, "log_format: expected %d, got %d", LB_LOG_COMBINED, c->log_format);
		CHECK(c->log_level == LB_LV_INFO, "log_level: expected info (%d), got %d", LB_LV_INFO, c->log_level);
		CHECK(c->nlisteners == 1 && c->npools == 1 && c->nroutes == 0, "counts: got %zu listeners %zu pools %zu routes",
		      c->nlisteners, c->npools, c->nroutes);
		if (c->nlisteners == 1) {
			struct lb_listener *l = &c->listeners[0];
			CHECK(l->mode == LB_MODE_HTTP, "mode default: expected http, got %d", l->mode);
			CHECK(l->pool == 0, "pool: expected 0, got %d", l->pool);
			CHECK(l->header_timeout == 10000 && l->idle_timeout == 60000 && l->max_header_size == 16384 &&
			      l->max_body_size == 10485760,
			      "listener defaults: expected 10000/60000/16384/10485760, got %" PRIu64 "/%" PRIu64 "/%" PRIu64
			      "/%" PRIu64, l->header_timeout, l->idle_timeout, l->max_header_size, l->max_body_size);
		}
		if (c->npools == 1) {
			struct lb_pool *p = &c->pools[0];
			CHECK(p->algorithm == LB_ALGO_RR && p->connect_timeout == 3000 && p->response_timeout == 60000 &&
			      p->keepalive == LB_KEEPALIVE_AUTO && p->retries == 1,
			      "pool defaults: expected rr/3000/60000/auto/1, got %d/%" PRIu64 "/%" PRIu64 "/%u/%u", p->algorithm,
			      p->connect_timeout, p->response_timeout, p->keepalive, p->retries);
			CHECK(p->hc_kind == LB_HC_HTTP && !strcmp(p->hc_method, "GET") && !strcmp(p->hc_path, "/health") &&
			      p->hc_interval == 10000 && p->hc_timeout == 2000 && p->hc_rise == 2 && p->hc_fall == 3 &&
			      p->nhc_expect == 1 && p->hc_expect[0].lo == 200 && p->hc_expect[0].hi == 399,
			      "health defaults: kind %d %s %s %" PRIu64 "/%" PRIu64 " rise %u fall %u", p->hc_kind, p->hc_method,
			      p->hc_path, p->hc_interval, p->hc_timeout, p->hc_rise, p->hc_fall);
			CHECK(p->cb_failures == 5 && p->cb_error_rate == 50 && p->cb_window == 10000 && p->cb_min_requests == 20 &&
			      p->cb_slow == 5000 && p->cb_open == 30000 && p->cb_max_open == 50,
			      "circuit defaults: %u %u%% %" PRIu64 " %u %" PRIu64 " %" PRIu64 " max_open %u%%", p->cb_failures,
			      p->cb_error_rate, p->cb_window, p->cb_min_requests, p->cb_slow, p->cb_open, p->cb_max_open);
			if (p->nservers == 1)
				CHECK(p->servers[0].weight == 1 && p->servers[0].max_conn == 0 && !p->servers[0].backup &&
				      !p->servers[0].disabled, "server defaults: weight %u max_conn %u backup %d disabled %d",
				      p->servers[0].weight, p->servers[0].max_conn, p->servers[0].backup, p->servers[0].disabled);
		}
		lb_conf_free(c);
	}
	rc = conf_parse("[log]\naccess = off\n[pool p]\nserver = s1 127.0.0.1:9000\n[listener l]\n"
	                "bind = 127.0.0.1:8000\npool = p\n", &c);
	CHECK(rc == 0 && c, "access = off: expected 0, got %d: %s", rc, errs_str());
	if (rc == 0 && c) {
		CHECK(c->access_log == NULL, "access = off: expected NULL, got %s", c->access_log);
		lb_conf_free(c);
	}
	/* other algorithms */
	static const struct { const char *v; int a; } al[] = {
		{ "round_robin", LB_ALGO_RR }, { "least_conn", LB_ALGO_LEASTCONN },
		{ "ip_hash", LB_ALGO_IPHASH }, { "random2", LB_ALGO_RANDOM2 },
	};
	for (size_t i = 0; i < 4; i++) {
		char t[300];
		snprintf(t, sizeof t, "[pool p]\nserver = s1 127.0.0.1:9000\nalgorithm = %s\n[listener l]\n"
		         "bind = 127.0.0.1:8000\npool = p\n", al[i].v);
		rc = conf_parse(t, &c);
		CHECK(rc == 0 && c, "algorithm = %s: expected 0, got %d: %s", al[i].v, rc, errs_str());
		if (rc == 0 && c) {
			CHECK(c->pools[0].algorithm == al[i].a, "algorithm = %s: expected %d, got %d", al[i].v, al[i].a,
			      c->pools[0].algorithm);
			lb_conf_free(c);
		}
	}
	end("conf/defaults");
}

static void test_conf_scaler(void)
{
	static const char t[] =
		"[pool p]\n"
		"server = s1 127.0.0.1:9000\n"
		"[listener l]\n"
		"bind = 127.0.0.1:8000\n"
		"pool = p\n"
		"[scaler]\n"
		"pool = p\n"
		"admin_url = http://10.0.0.1:8404/, https://10.0.0.2:8404 token_file=/etc/lb/t2\n"
		"admin_token_file = /etc/lb/admin.token\n"
		"api_url = https://api.linode.com/v4\n"
		"token_file = /etc/lb/linode.token\n"
		"region = us-east\n"
		"type = g6-nanode-1\n"
		"image = linode/debian12\n"
		"user_data = /etc/lb/cloud-init.yaml\n"
		"authorized_keys_file = /root/.ssh/authorized_keys\n"
		"tag = lb-pool-p\n"
		"min = 2\n"
		"max = 10\n"
		"scale_up_cpu = 75%\n"
		"scale_down_cpu = 30\n"
		"scale_down_after = 10m\n"
		"cooldown = 5m\n"
		"interval = 30s\n"
		"server_port = 80\n"
		"server_address = private\n";
	struct lb_conf *c;
	begin();
	int rc = conf_parse(t, &c);
	CHECK(rc == 0 && c, "expected 0, got %d: %s", rc, errs_str());
	if (c) { /* linode-scaler reads these (it #includes lb.c) */
		const struct lb_scaler *sc = &c->scaler;
		CHECK(sc->line == 6 && sc->nnodes == 2 && !strcmp(sc->node[0].url, "http://10.0.0.1:8404") &&
		      !sc->node[0].token_file[0] && !strcmp(sc->node[1].url, "https://10.0.0.2:8404") &&
		      !strcmp(sc->node[1].token_file, "/etc/lb/t2"), "admin_url: line %d, %zu nodes", sc->line, sc->nnodes);
		CHECK(sc->up_cpu == 75 && sc->down_cpu == 30 && sc->down_after == 600000 && sc->interval == 30000 &&
		      sc->min == 2 && sc->max == 10 && sc->server_address == 0 && !strcmp(sc->region, "us-east"),
		      "values: up %u down %u", sc->up_cpu, sc->down_cpu);
		lb_conf_free(c);
	}
	end("conf/scaler_section_accepted");
}

#define BASE "[pool p]\nserver = s1 127.0.0.1:9000\n[listener l]\nbind = 127.0.0.1:8000\npool = p\n" /* lines 1-5 */

struct cf_err {
	const char *name;
	const char *text;
	int line;        /* an error must be reported at this line */
	int alt_line;    /* or at this one (0: none) */
	const char *sub; /* and its message must contain this (NULL: any) */
	int only;        /* 1: no error may be reported at any other line */
};

static char cf_long[800], cf_long_shift[900], cf_long_name[900], cf_many[4000];

static const struct cf_err cf_errs[] = {
	{ "unknown_key", BASE "bnd = 127.0.0.1:8001\n", 6, 0, NULL, 1 },
	{ "unknown_global_key", "[global]\nfoo = 1\n" BASE, 2, 0, NULL, 1 },
	{ "unknown_key_suggests", BASE "bnd = 127.0.0.1:8001\n", 6, 0, "did you mean 'bind'?", 1 },
	{ "unknown_key_suggests_prefix", "[pool p]\nserver = s1 127.0.0.1:9000\nhealth = tcp\n[listener l]\nbind = 127.0.0.1:8000\n",
	  3, 0, "did you mean 'health_check'?", 1 },
	{ "unknown_key_far_no_suggestion", BASE "frobnicate = 1\n", 6, 0, "in [listener l]", 1 },
	{ "unknown_section_kind_suggests", BASE "[lisener x]\nbind = 127.0.0.1:8001\n", 6, 0, "did you mean 'listener'?", 1 },
	{ "unknown_section_kind", BASE "[frontend x]\nbind = 127.0.0.1:8001\n", 6, 0, NULL, 0 },
	{ "key_outside_section", "workers = 2\n" BASE, 1, 0, NULL, 1 },
	{ "duplicate_pool_section", BASE "[pool p]\nserver = s2 127.0.0.1:9001\n", 6, 0, NULL, 0 },
	{ "duplicate_listener_section", BASE "[listener l]\nbind = 127.0.0.1:8001\n", 6, 0, NULL, 0 },
	{ "route_unknown_pool", BASE "[route r]\npath = /x\npool = nope\n", 8, 0, NULL, 0 },
	{ "route_unknown_listener", BASE "[route r]\nlistener = nope\npool = p\n", 7, 0, NULL, 0 },
	{ "split_unknown_pool", BASE "[route r]\nsplit = p 50, nope 50\n", 7, 0, NULL, 0 },
	{ "listener_unknown_pool",
	  "[pool p]\nserver = s1 127.0.0.1:9000\n[listener l]\nbind = 127.0.0.1:8000\npool = nope\n", 5, 0, NULL, 1 },
	{ "same_bind_two_listeners", BASE "[listener m]\nbind = 127.0.0.1:8000\npool = p\n", 7, 0, NULL, 1 },
	{ "server_weight_0",
	  "[pool p]\nserver = s1 127.0.0.1:9000 weight=0\n[listener l]\nbind = 127.0.0.1:8000\npool = p\n", 2, 0, NULL, 0 },
	{ "server_weight_abc",
	  "[pool p]\nserver = s1 127.0.0.1:9000 weight=abc\n[listener l]\nbind = 127.0.0.1:8000\npool = p\n", 2, 0, NULL, 0 },
	{ "server_missing_address",
	  "[pool p]\nserver = s0 127.0.0.1:9001\nserver = s1\n[listener l]\nbind = 127.0.0.1:8000\npool = p\n", 3, 0, NULL, 0 },
	{ "duplicate_server_name",
	  "[pool p]\nserver = s1 127.0.0.1:9000\nserver = s1 127.0.0.1:9001\n[listener l]\nbind = 127.0.0.1:8000\n"
	  "pool = p\n", 3, 0, NULL, 1 },
	{ "bad_duration", BASE "header_timeout = 10\n", 6, 0, NULL, 1 },
	{ "bad_size", BASE "max_header_size = 16q\n", 6, 0, NULL, 1 },
	{ "bad_algorithm",
	  "[pool p]\nserver = s1 127.0.0.1:9000\nalgorithm = fastest\n[listener l]\nbind = 127.0.0.1:8000\npool = p\n",
	  3, 0, NULL, 1 },
	{ "bad_mode", BASE "mode = udp\n", 6, 0, NULL, 1 },
	{ "bad_bind_port_0", BASE "bind = 127.0.0.1:0\n", 6, 0, NULL, 1 },
	{ "empty_bind", BASE "bind =\n", 6, 0, NULL, 1 },
	{ "bad_workers", "[global]\nworkers = many\n" BASE, 2, 0, NULL, 1 },
	{ "bad_log_format", "[log]\nformat = xml\n" BASE, 2, 0, NULL, 1 },
	{ "log_template_unknown_field", "[log]\nformat = %{client} %{stauts}\n" BASE, 2, 0,
	  "unknown field '%{stauts}' (did you mean 'status'?)", 1 },
	{ "log_template_lone_percent", "[log]\nformat = %{client} 100%\n" BASE, 2, 0, "not followed by {field}", 1 },
	{ "bad_log_level", "[log]\nlevel = verbose\n" BASE, 2, 0, "error, warn, info or debug", 1 },
	{ "bad_route_header", BASE "[route r]\nheader = NoColonHere\npool = p\n", 7, 0, NULL, 0 },
	{ "repeated_key_listener_pool", BASE "pool = p\n", 6, 0, NULL, 1 },
	{ "repeated_key_algorithm",
	  "[pool p]\nserver = s1 127.0.0.1:9000\nalgorithm = round_robin\nalgorithm = least_conn\n[listener l]\n"
	  "bind = 127.0.0.1:8000\npool = p\n", 4, 0, NULL, 1 },
	{ "indented_continuation_of_bind", BASE "bind = 127.0.0.1:8001\n  127.0.0.1:8002\n", 7, 0, NULL, 1 },
	{ "indented_continuation_of_timeout", BASE "header_timeout = 5s\n\t10s\n", 7, 0, NULL, 1 },
	{ "line_too_long", cf_long, 2, 0, NULL, 1 },
	{ "line_numbers_after_long_line", cf_long_shift, 8, 0, NULL, 0 },
	{ "section_name_too_long", cf_long_name, 6, 0, NULL, 0 },
	{ "line_without_equals", BASE "garbage\n", 6, 0, NULL, 1 },
	{ "section_without_name", BASE "[listener]\nbind = 127.0.0.1:8001\n", 6, 0, NULL, 0 },
	{ "tcp_listener_without_pool",
	  "[pool p]\nserver = s1 127.0.0.1:9000\n[listener l]\nbind = 127.0.0.1:8000\nmode = tcp\n", 3, 0, NULL, 1 },
	{ "listener_without_bind", "[pool p]\nserver = s1 127.0.0.1:9000\n[listener l]\npool = p\n", 3, 0, NULL, 1 },
	{ "tls_without_cert", BASE "tls = on\n", 3, 0, "needs at least one cert", 1 },
	{ "tls_bad_value", BASE "tls = yes\n", 6, 0, "not on or off", 1 },
	{ "cert_without_tls", BASE "cert = /etc/lb/a.pem\n", 6, 0, "cert without tls", 1 },
	{ "client_ca_without_tls", BASE "client_ca = /etc/lb/ca.pem\n", 6, 0, "client_ca without tls", 1 },
	{ "hsts_without_tls", BASE "hsts = max-age=60\n", 3, 0, "hsts", 1 },
	{ "hsts_bad_value", BASE "tls = on\ncert = /x.pem\nhsts = 1 year\n", 8, 0, "Strict-Transport-Security", 0 },
	{ "redirect_https_on_tls", BASE "tls = on\ncert = /x.pem\nredirect_https = on\n", 3, 0, "plain listeners", 1 },
	{ "https_port_0", BASE "https_port = 0\n", 6, 0, "https_port", 1 },
	{ "tls_ca_without_tls_server", BASE "[pool q]\nserver = s9 127.0.0.1:9009\ntls_ca = /x.pem\n", 8, 0, "marked tls", 1 },
	{ "tls_sni_with_port", BASE "[pool q]\nserver = s9 127.0.0.1:9009 tls\ntls_sni = a.test:443\n", 8, 0, "tls_sni", 1 },
	{ "tls_session_cache_bad", "[global]\ntls_session_cache = lots\n" BASE, 2, 0, "tls_session_cache", 1 },
	{ "tls_ticket_rotate_below_1s", "[global]\ntls_ticket_rotate = 500ms\n" BASE, 2, 0, "tls_ticket_rotate", 1 },
	{ "tls_ticket_rotate_bad", "[global]\ntls_ticket_rotate = often\n" BASE, 2, 0, "tls_ticket_rotate", 1 },
	{ "ocsp_without_its_cert", "[pool p]\nserver = s1 127.0.0.1:9000\n[listener l]\nbind = 127.0.0.1:8000\npool = p\n"
	  "tls = on\ncert = a.pem\nocsp = a.der\nocsp = b.der\n", 9, 0, "ocsp without its cert", 1 },
	{ "tls_ticket_keys_empty", "[global]\ntls_ticket_keys =\n" BASE, 2, 0, "tls_ticket_keys", 1 },
	{ "pool_health_check_bad", BASE "[pool q]\nserver = s9 127.0.0.1:9009\nhealth_check = http GET health\n", 8, 0,
	  "health_check", 1 },
	{ "pool_health_check_extra", BASE "[pool q]\nserver = s9 127.0.0.1:9009\nhealth_check = tcp 80\n", 8, 0,
	  "health_check", 1 },
	{ "pool_health_expect_range", BASE "[pool q]\nserver = s9 127.0.0.1:9009\nhealth_expect = 399-200\n", 8, 0,
	  "health_expect", 1 },
	{ "pool_health_interval_short", BASE "[pool q]\nserver = s9 127.0.0.1:9009\nhealth_interval = 10ms\n", 8, 0,
	  "health_interval", 1 },
	{ "pool_health_rise_zero", BASE "[pool q]\nserver = s9 127.0.0.1:9009\nhealth_rise = 0\n", 8, 0,
	  "health_rise", 1 },
	{ "pool_circuit_rate", BASE "[pool q]\nserver = s9 127.0.0.1:9009\ncircuit_error_rate = 50\n", 8, 0,
	  "circuit_error_rate", 1 },
	{ "pool_circuit_rate_range", BASE "[pool q]\nserver = s9 127.0.0.1:9009\ncircuit_error_rate = 150%\n", 8, 0,
	  "circuit_error_rate", 1 },
	{ "pool_circuit_open_bad", BASE "[pool q]\nserver = s9 127.0.0.1:9009\ncircuit_open = soon\n", 8, 0,
	  "circuit_open", 1 },
	{ "pool_circuit_max_open_zero", BASE "[pool q]\nserver = s9 127.0.0.1:9009\ncircuit_max_open = 0%\n", 8, 0,
	  "circuit_max_open", 1 },
	{ "pool_circuit_max_open_bad", BASE "[pool q]\nserver = s9 127.0.0.1:9009\ncircuit_max_open = half\n", 8, 0,
	  "circuit_max_open", 1 },
	{ "pool_send_proxy_bad", BASE "[pool q]\nserver = s9 127.0.0.1:9009\nsend_proxy = v3\n", 8, 0,
	  "send_proxy", 1 },
	{ "listener_proxy_protocol_bad", BASE "proxy_protocol = yes\ntrusted_proxies = 10.0.0.0/8\n", 6, 0,
	  "proxy_protocol", 1 },
	{ "listener_proxy_protocol_untrusted", BASE "proxy_protocol = v1\n", 3, 6, "trusted_proxies", 0 },
	{ "listener_trusted_bad", BASE "trusted_proxies = 10.0.0.0/8, nowhere\n", 6, 0, "trusted_proxies", 1 },
	{ "listener_max_conn_per_ip_bad", BASE "max_conn_per_ip = -1\n", 6, 0, "max_conn_per_ip", 1 },
	{ "pool_sticky_not_cookie", BASE "[pool q]\nserver = s9 127.0.0.1:9009\nsticky = ip SRV\n", 8, 0, "sticky", 1 },
	{ "pool_sticky_bad_name", BASE "[pool q]\nserver = s9 127.0.0.1:9009\nsticky = cookie S;V\n", 8, 0, "sticky", 1 },
	{ "pool_sticky_extra", BASE "[pool q]\nserver = s9 127.0.0.1:9009\nsticky = cookie SRV x\n", 8, 0, "sticky", 1 },
	{ "route_acl_bad_verb", BASE "[route r]\npool = p\nacl = maybe 1.2.3.4\n", 8, 0, "acl", 1 },
	{ "route_acl_bad_cidr", BASE "[route r]\npool = p\nacl = allow 10.0.0.1/8\n", 8, 0, "acl", 1 },
	{ "route_rate_limit_unit", BASE "[route r]\npool = p\nrate_limit = 10/fortnight\n", 8, 0, "rate_limit", 1 },
	{ "route_rate_limit_by", BASE "[route r]\npool = p\nrate_limit = 10/second by=cookie\n", 8, 0, "rate_limit", 1 },
	{ "route_rate_limit_burst0", BASE "[route r]\npool = p\nrate_limit = 10/second burst=0\n", 8, 0, "burst", 1 },
	{ "route_exempt_without_limit", BASE "[route r]\npool = p\nrate_limit_exempt = 10.0.0.0/8\n", 6, 8, NULL, 0 },
	{ "listener_deny_bad", BASE "deny = 300.1.1.1/8\n", 6, 0, "deny", 1 },
	{ "listener_allow_bits", BASE "allow = 10.0.0.0/33\n", 6, 0, "allow", 1 },
	{ "route_return_status", BASE "[route r]\nreturn = 99 x\n", 7, 0, "return", 0 },
	{ "route_redirect_status", BASE "[route r]\nredirect = 200 http://x/\n", 7, 0, "redirect", 0 },
	{ "route_redirect_no_url", BASE "[route r]\nredirect = 301\n", 7, 0, "redirect", 0 },
	{ "route_header_add_no_colon", BASE "[route r]\npool = p\nrequest_header_add = NoColon\n", 8, 0, "request_header_add", 1 },
	{ "route_header_remove_bad", BASE "[route r]\npool = p\nresponse_header_remove = Bad Name\n", 8, 0, NULL, 1 },
	{ "admin_bind_bad", BASE "[admin]\nbind = localhost\n", 7, 0, "bind", 1 },
	{ "admin_bind_clash", BASE "[admin]\nbind = 127.0.0.1:8000\n", 7, 0, "also listener", 1 },
	{ "admin_allow_bad", BASE "[admin]\nallow = everyone\n", 7, 0, "allow", 1 },
	/* 0 is no "unset" for a timeout: it would answer 504 before any server could */
	{ "route_response_timeout_0", BASE "[route r]\npool = p\nresponse_timeout = 0s\n", 8, 0, "response_timeout", 1 },
	{ "pool_response_timeout_0", BASE "[pool q]\nserver = s9 127.0.0.1:9009\nresponse_timeout = 0ms\n", 8, 0,
	  "response_timeout", 1 },
};

static void build_conf_inputs(void)
{
	char line[400];
	mkstr(line, sizeof line, "pid_file = /", 'a', 250, "\n");
	snprintf(cf_long, sizeof cf_long, "[global]\n%s" BASE, line);
	/* long line at 2, unknown key at 8 */
	snprintf(cf_long_shift, sizeof cf_long_shift, "[global]\n%s" BASE "bnd = 127.0.0.1:8001\n", line);
	mkstr(line, sizeof line, "[pool ", 'x', 70, "]\n");
	snprintf(cf_long_name, sizeof cf_long_name, BASE "%sserver = s9 127.0.0.1:9009\n", line);
	size_t n = (size_t)snprintf(cf_many, sizeof cf_many, BASE);
	for (int i = 0; i < 70; i++)
		n += (size_t)snprintf(cf_many + n, sizeof cf_many - n, "bad_key_%d = 1\n", i);
}

static void check_conf_error_row(const void *row)
{
	const struct cf_err *e = row;
	struct lb_conf *c = (struct lb_conf *)&g_errs; /* sentinel: must become NULL */
	size_t n = strlen(e->text);
	char *b = dupbuf(e->text, n);
	memset(&g_errs, 0, sizeof g_errs);
	begin();
	int rc = lb_conf_parse(b, n, &c, &g_errs);
	free(b);
	CHECK(rc == LB_EINVAL, "expected %d, got %d", LB_EINVAL, rc);
	if (rc == 0 && c && c != (struct lb_conf *)&g_errs)
		lb_conf_free(c);
	else
		CHECK(c == NULL, "*out not set to NULL on error");
	if (rc == LB_EINVAL) {
		CHECK(g_errs.total >= 1 && g_errs.n >= 1, "no error recorded (n %d total %d)", g_errs.n, g_errs.total);
		int ok = err_at(e->line, e->sub) || (e->alt_line && err_at(e->alt_line, e->sub));
		CHECK(ok, "expected an error at line %d%s%s%s, got %s", e->line, e->sub ? " containing \"" : "",
		      e->sub ? e->sub : "", e->sub ? "\"" : "", errs_str());
		for (int k = 0; e->only && k < g_errs.n && k < LB_CFG_MAX_ERRORS; k++)
			CHECK(g_errs.e[k].line == e->line || (e->alt_line && g_errs.e[k].line == e->alt_line),
			      "spurious error at line %d (only line %d is wrong): %s", g_errs.e[k].line, e->line,
			      errs_str());
	}
	end("conf_error/%s", e->name);
}

static void test_conf_errors(void)
{
	RUN_TABLE(NULL, cf_errs, check_conf_error_row);

	/* several independent errors: all reported, each at its line */
	{
		static const char t[] =
			"[global]\n"                             /* 1 */
			"workers = many\n"                       /* 2 bad */
			"[pool p]\n"                             /* 3 */
			"server = s1 127.0.0.1:9000 weight=0\n"  /* 4 bad */
			"server = s2 127.0.0.1:9001\n"           /* 5 */
			"connect_timeout = soon\n"               /* 6 bad */
			"[listener l]\n"                         /* 7 */
			"bind = 127.0.0.1:8000\n"                /* 8 */
			"pool = p\n"                             /* 9 */
			"colour = blue\n"                        /* 10 bad */
			"[route r]\n"                            /* 11 */
			"pool = nope\n";                         /* 12 bad */
		struct lb_conf *c;
		static const int lines[] = { 2, 4, 6, 10, 12 };
		begin();
		int rc = conf_parse(t, &c);
		CHECK(rc == LB_EINVAL, "expected %d, got %d", LB_EINVAL, rc);
		if (rc == 0 && c)
			lb_conf_free(c);
		CHECK(g_errs.total >= 5, "total: expected >= 5, got %d (%s)", g_errs.total, errs_str());
		for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++)
			CHECK(err_at(lines[i], NULL), "no error at line %d: %s", lines[i], errs_str());
		end("conf_error/multiple_errors_all_reported");
	}
	/* more errors than LB_CFG_MAX_ERRORS */
	{
		struct lb_conf *c;
		begin();
		int rc = conf_parse(cf_many, &c);
		CHECK(rc == LB_EINVAL, "expected %d, got %d", LB_EINVAL, rc);
		if (rc == 0 && c)
			lb_conf_free(c);
		CHECK(g_errs.n == LB_CFG_MAX_ERRORS, "n: expected %d, got %d", LB_CFG_MAX_ERRORS, g_errs.n);
		CHECK(g_errs.total >= 70, "total: expected >= 70, got %d", g_errs.total);
		CHECK(err_at(6, NULL) && err_at(6 + LB_CFG_MAX_ERRORS - 1, NULL), "first errors not kept: %s", errs_str());
		end("conf_error/more_than_max_errors");
	}
}

/* A generated file: nl listeners, np pools of ns servers each, nr routes. Line numbers come back in
 * *at: at[0] the line of listener nl-1's header, at[1] pool np-1's, at[2] route nr-1's, at[3] the
 * line of server k (0-based over all pools) when k = at[3] on entry. Caller frees. */
static char *big_conf(int nl, int np, int ns, int nr, int *at)
{
	size_t cap = (size_t)(nl * 60 + np * 40 + np * ns * 40 + nr * 40 + 100), n = 0;
	char *t = malloc(cap);
	int line = 0, k = 0, want = at[3];
	if (!t)
		exit(2);
	for (int i = 0; i < nl; i++) {
		n += (size_t)snprintf(t + n, cap - n, "[listener l%d]\nbind = 127.0.0.1:%d\npool = p0\n", i, 10000 + i);
		at[0] = line + 1, line += 3;
	}
	for (int i = 0; i < np; i++) {
		n += (size_t)snprintf(t + n, cap - n, "[pool p%d]\n", i);
		at[1] = ++line;
		for (int j = 0; j < ns; j++, k++) {
			n += (size_t)snprintf(t + n, cap - n, "server = s%d 127.0.0.1:%d\n", j, 20000 + k % 40000);
			if (++line && k == want)
				at[3] = line;
		}
	}
	for (int i = 0; i < nr; i++) {
		n += (size_t)snprintf(t + n, cap - n, "[route r%d]\npath = /r%d\npool = p%d\n", i, i, i % np);
		at[2] = line + 1, line += 3;
	}
	return t;
}

/* README "Limits": each bound of lb.h reported once, at the first section or server past it, with its key
 * (lb -t printed one line per extra server: 3,976 of them for a pool of 5,000) */
static void test_conf_limits(void)
{
	static const struct {
		const char *name;
		int nl, np, ns, nr, first_past; /* first_past: the server index past a server limit */
		int at;                         /* which line of big_conf's at[] the error must name */
		const char *key, *sub;
	} cases[] = {
		{ "servers_in_one_pool", 1, 1, LB_MAX_POOL_SERVERS + 976, 1, LB_MAX_POOL_SERVERS, 3, "server",
		  "more than 1024 servers in [pool p0] (976 server lines past the limit" },
		{ "servers_in_all_pools", 1, 65, 1009, 1, LB_MAX_SERVERS, 3, "server", "more than 65536 servers in all pools" },
		{ "routes", 1, 1, 1, LB_MAX_ROUTES + 1, -1, 2, "route", "more than 16384 routes (16385 in the file)" },
		{ "pools", 1, LB_MAX_POOLS + 1, 1, 1, -1, 1, "pool", "more than 4096 pools" },
		{ "listeners", LB_MAX_LISTENERS + 1, 1, 1, 1, -1, 0, "listener", "more than 1024 listeners" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		int at[4] = { 0, 0, 0, cases[i].first_past };
		char *t = big_conf(cases[i].nl, cases[i].np, cases[i].ns, cases[i].nr, at);
		struct lb_conf *c;
		begin();
		int rc = conf_parse(t, &c);
		free(t);
		CHECK(rc == LB_EINVAL && g_errs.total == 1, "expected one error, got rc %d, %s", rc, errs_str());
		CHECK(err_at(at[cases[i].at], cases[i].sub), "expected line %d: '%s', got %s", at[cases[i].at], cases[i].sub,
		      errs_str());
		CHECK(!strcmp(g_errs.e[0].key, cases[i].key), "key: expected %s, got %s", cases[i].key, g_errs.e[0].key);
		if (rc == 0)
			lb_conf_free(c);
		end("conf_limits/%s", cases[i].name);
	}
	{ /* at every limit at once but the listeners': valid */
		int at[4] = { 0, 0, 0, -1 };
		char *t = big_conf(2, LB_MAX_SERVERS / LB_MAX_POOL_SERVERS, LB_MAX_POOL_SERVERS, LB_MAX_ROUTES, at);
		struct lb_conf *c;
		begin();
		int rc = conf_parse(t, &c);
		free(t);
		CHECK(rc == 0, "expected a valid file, got %s", errs_str());
		if (rc == 0) {
			CHECK(c->nroutes == LB_MAX_ROUTES && c->npools == 64 && c->pools[63].nservers == LB_MAX_POOL_SERVERS &&
			      c->routes[LB_MAX_ROUTES - 1].pool == 63,
			      "got %zu routes, %zu pools", c->nroutes, c->npools);
			lb_conf_free(c);
		}
		end("conf_limits/at_every_limit_valid");
	}
}

/* Every row of lb's key table (lb_conf_key): its default parses, a good value is accepted, a bad value
 * is refused at its line with its key, and numeric bounds min-1 / max+1 are refused. The key goes first
 * in its section of a small valid file; a base line of the same key is left out. */
static const char *const keys_base[][3] = { /* section, line, another key that replaces it */
	{ "listener", "bind = 127.0.0.1:8001", "" }, { "pool", "server = s1 127.0.0.1:9001", "" },
	{ "route", "return = 204", "redirect" },
};

static void key_file(char *b, size_t n, const struct lb_key_info *k, const char *v, int *line)
{
	size_t w = 0;
	int ln = 0;
	static const char *const order[] = { "global", "log", "admin", "scaler", "listener", "pool", "route" };
	for (size_t s = 0; s < sizeof order / sizeof *order; s++) {
		int mine = !strcmp(order[s], k->section), base = -1;
		for (size_t i = 0; i < sizeof keys_base / sizeof *keys_base; i++)
			if (!strcmp(keys_base[i][0], order[s]))
				base = (int)i;
		if (!mine && base < 0)
			continue;
		w += (size_t)snprintf(b + w, n - w, "[%s%s]\n", order[s], base >= 0 ? (s == 4 ? " l" : s == 5 ? " p" : " r") : "");
		ln++;
		if (mine) {
			w += (size_t)snprintf(b + w, n - w, "%s = %s\n", k->name, v);
			*line = ++ln;
			for (const char *q = v; *q; q++)
				ln += *q == '\n';
		}
		size_t kl = strlen(k->name);
		if (base >= 0 && !(mine && ((!strncmp(keys_base[base][1], k->name, kl) && keys_base[base][1][kl] == ' ') ||
		                            !strcmp(keys_base[base][2], k->name)))) {
			w += (size_t)snprintf(b + w, n - w, "%s\n", keys_base[base][1]);
			ln++;
		}
	}
}

static int key_try(const struct lb_key_info *k, const char *v, int *line)
{
	char b[1024];
	struct lb_conf *c = NULL;
	key_file(b, sizeof b, k, v, line);
	int rc = conf_parse(b, &c);
	if (rc == 0)
		lb_conf_free(c);
	return rc;
}

/* the value refused at the key's line, with its name in the error's key and message */
static void key_refused(const struct lb_key_info *k, const char *v, const char *what)
{
	int line = 0;
	int rc = key_try(k, v, &line);
	int found = 0;
	for (int i = 0; i < g_errs.n && i < LB_CFG_MAX_ERRORS; i++)
		found |= g_errs.e[i].line == line && !strcmp(g_errs.e[i].key, k->name) && strstr(g_errs.e[i].msg, k->name);
	CHECK(rc == LB_EINVAL && found, "[%s] %s = '%s' (%s): expected an error at line %d naming the key, got %s",
	      k->section, k->name, v, what, line, errs_str());
}

static void test_conf_keys_table(void)
{
	struct lb_key_info k;
	char v[64];
	size_t nkeys = 0;
	for (size_t i = 0; lb_conf_key(i, &k) == 0; i++, nkeys++) {
		int line;
		begin();
		if (k.later) { /* refused with the issue that brings it */
			key_refused(&k, "x", "not supported yet");
			end("conf_keys/%s/%s", k.section, k.name);
			continue;
		}
		CHECK(k.doc || !strcmp(k.section, "scaler"), "[%s] %s: no doc", k.section, k.name);
		if (k.def)
			CHECK(key_try(&k, k.def, &line) == 0, "[%s] %s = %s (the default): %s", k.section, k.name, k.def, errs_str());
		CHECK(k.good != NULL, "[%s] %s: neither a default nor a good value", k.section, k.name);
		if (k.good)
			CHECK(key_try(&k, k.good, &line) == 0, "[%s] %s = %s: %s", k.section, k.name, k.good, errs_str());
		if (!strcmp(k.type, "scaler")) { /* linode-scaler reads the values */
			end("conf_keys/%s/%s", k.section, k.name);
			continue;
		}
		key_refused(&k, k.bad, "bad value");
		int numeric = !strcmp(k.type, "uint") || !strcmp(k.type, "size") || !strcmp(k.type, "duration");
		const char *unit = !strcmp(k.type, "duration") ? "ms" : "";
		if (numeric && k.min > 0) {
			snprintf(v, sizeof v, "%" PRIu64 "%s", k.min - 1, unit);
			key_refused(&k, v, "min - 1");
			snprintf(v, sizeof v, "%" PRIu64 "%s", k.min, unit);
			CHECK(key_try(&k, v, &line) == 0, "[%s] %s = %s (min): %s", k.section, k.name, v, errs_str());
		}
		if (numeric && k.max < UINT64_MAX) {
			snprintf(v, sizeof v, "%" PRIu64 "%s", k.max + 1, unit);
			key_refused(&k, v, "max + 1");
			snprintf(v, sizeof v, "%" PRIu64 "%s", k.max, unit);
			CHECK(key_try(&k, v, &line) == 0, "[%s] %s = %s (max): %s", k.section, k.name, v, errs_str());
		}
		end("conf_keys/%s/%s", k.section, k.name);
	}
	begin();
	CHECK(nkeys > 90, "only %zu keys in the table", nkeys);
	end("conf_keys/count");
}

/* max_body_size = 0 on a route means no body (as on a listener), not "the listener's value" */
static void test_conf_route_overrides(void)
{
	static const char t[] = BASE "max_body_size = 1m\n"
		"[route zero]\npath = /z\npool = p\nmax_body_size = 0\n"
		"[route none]\npath = /n\npool = p\n"
		"[route some]\npath = /s\npool = p\nmax_body_size = 2k\nresponse_timeout = 1ms\n";
	struct lb_conf *c;
	begin();
	int rc = conf_parse(t, &c);
	CHECK(rc == 0, "expected a valid file, got %s", errs_str());
	if (rc == 0) {
		const struct lb_route *z = &c->routes[0], *n = &c->routes[1], *s = &c->routes[2];
#define GIVEN(r, k) lb_conf_given((r)->given, "route", k)
		CHECK(GIVEN(z, "max_body_size") && z->max_body_size == 0, "route zero: max_body_size = 0 not kept as given");
		CHECK(!GIVEN(n, "max_body_size") && !GIVEN(n, "response_timeout"), "route none: overrides set without a key");
		CHECK(GIVEN(s, "max_body_size") && s->max_body_size == 2048 && GIVEN(s, "response_timeout") &&
		      s->response_timeout == 1,
		      "route some: %" PRIu64 " / %" PRIu64, s->max_body_size, s->response_timeout);
		lb_conf_free(c);
	}
	end("conf/route_max_body_size_0_is_a_value");
}

static void test_conf_resolve(void)
{
	static const char t[] =
		"[pool p]\nserver = s1 127.0.0.1:9000\nserver = s2 10.1.2.3:81\n"
		"[listener l]\nbind = 127.0.0.1:8000\npool = p\n";
	struct lb_conf *c;
	begin();
	int rc = conf_parse(t, &c);
	CHECK(rc == 0 && c, "parse: expected 0, got %d: %s", rc, errs_str());
	if (rc == 0 && c) {
		memset(&g_errs, 0, sizeof g_errs);
		rc = lb_conf_resolve(c, &g_errs);
		CHECK(rc == 0, "resolve: expected 0, got %d: %s", rc, errs_str());
		if (rc == 0) {
			const struct sockaddr_in *sa = (const struct sockaddr_in *)&c->listeners[0].binds[0].sa;
			CHECK(c->listeners[0].binds[0].salen == sizeof(struct sockaddr_in) && sa->sin_family == AF_INET &&
			      ntohs(sa->sin_port) == 8000 && ntohl(sa->sin_addr.s_addr) == 0x7f000001,
			      "bind sockaddr: salen %u family %d port %u", (unsigned)c->listeners[0].binds[0].salen,
			      sa->sin_family, (unsigned)ntohs(sa->sin_port));
			sa = (const struct sockaddr_in *)&c->pools[0].servers[1].sa;
			CHECK(c->pools[0].servers[1].salen == sizeof(struct sockaddr_in) && sa->sin_family == AF_INET &&
			      ntohs(sa->sin_port) == 81 && ntohl(sa->sin_addr.s_addr) == 0x0a010203,
			      "server sockaddr: salen %u family %d port %u", (unsigned)c->pools[0].servers[1].salen,
			      sa->sin_family, (unsigned)ntohs(sa->sin_port));
		}
		lb_conf_free(c);
	}
	end("conf/resolve_numeric");
}

/* ------------------------------------------------------------------ 8. balancing */

#define MAXS 8
static struct lb_server bs[MAXS], s4[4], s5[5];
/* what lb_pick is given of each test server's state (lb reads it from shared memory): beside its array */
static struct lb_srv_state bs_st[MAXS], s4_st[4], s5_st[5];

static struct lb_srv_state *states_of(const struct lb_pool *p)
{
	return p->servers == s4 ? s4_st : p->servers == s5 ? s5_st : bs_st;
}
/* and what lb_pick writes: the balancing state of the pool last made (mk_pool starts it afresh) */
static int64_t pick_cur[MAXS];
static struct lb_pick_rt pick_rt = { pick_cur, 0 };

static void mk_pool(struct lb_pool *p, struct lb_server *s, size_t n, const unsigned *w, int algo)
{
	memset(p, 0, sizeof *p);
	memset(s, 0, n * sizeof *s);
	snprintf(p->name, sizeof p->name, "test");
	for (size_t i = 0; i < n; i++) {
		snprintf(s[i].name, sizeof s[i].name, "s%zu", i);
		snprintf(s[i].host, sizeof s[i].host, "10.0.0.%zu", i + 1);
		s[i].port = 80;
		s[i].weight = w ? w[i] : 1;
		s[i].name_hash = lb_hash64(s[i].name, strlen(s[i].name));
	}
	p->servers = s;
	p->nservers = n;
	memset(states_of(p), 0, n * sizeof *states_of(p));
	memset(pick_cur, 0, sizeof pick_cur);
	pick_rt.seed = 0;
	p->algorithm = algo;
	p->connect_timeout = 3000;
	p->response_timeout = 60000;
	p->keepalive = 32;
	p->retries = 1;
}

/* Index of the pick in p->servers, -1 for NULL, -2 for a pointer outside the array. */
static int pick(struct lb_pool *p, uint64_t key, uint64_t rnd)
{
	const struct lb_server *s = lb_pick(p, states_of(p), &pick_rt, 0, key, rnd);
	if (!s)
		return -1;
	if (s < p->servers || s >= p->servers + p->nservers)
		return -2;
	return (int)(s - p->servers);
}

/* Pick with the servers' active counts set to act[] first (the caller's bookkeeping is ours). */
static int pick_act(struct lb_pool *p, const unsigned *act, uint64_t key, uint64_t rnd)
{
	for (size_t i = 0; i < p->nservers; i++)
		states_of(p)[i].active = act ? act[i] : 0;
	return pick(p, key, rnd);
}

static const char *algo_name(int a)
{
	switch (a) {
	case LB_ALGO_RR: return "round_robin";
	case LB_ALGO_LEASTCONN: return "least_conn";
	case LB_ALGO_IPHASH: return "ip_hash";
	case LB_ALGO_RANDOM2: return "random2";
	}
	return "?";
}

static void test_rr_weights(void)
{
	static const unsigned w[3] = { 5, 3, 2 };
	struct lb_pool p;
	long cnt[3] = { 0, 0, 0 };
	const long N = 100000;
	begin();
	mk_pool(&p, bs, 3, w, LB_ALGO_RR);
	for (long i = 0; i < N; i++) {
		int k = pick_act(&p, NULL, 0, sm64());
		if (k < 0) {
			failf("pick %ld returned %d", i, k);
			break;
		}
		cnt[k]++;
	}
	for (int i = 0; i < 3; i++) {
		double share = (double)cnt[i] / (double)N, exp = w[i] / 10.0;
		CHECK(share > exp - 0.02 && share < exp + 0.02, "server %d (weight %u): expected %.0f%%, got %.2f%%", i,
		      w[i], exp * 100, share * 100);
	}
	end("balance/round_robin_weights_5_3_2");
}

static void test_unusable_never_picked(void)
{
	static const int algos[] = { LB_ALGO_RR, LB_ALGO_LEASTCONN, LB_ALGO_IPHASH, LB_ALGO_RANDOM2 };
	for (size_t a = 0; a < 4; a++) {
		struct lb_pool p;
		int seen[5] = { 0 };
		begin();
		/* s0 ok, s1 disabled, s2 down, s3 ok, s4 full (max_conn 2, active 2) */
		mk_pool(&p, bs, 5, NULL, algos[a]);
		bs[1].disabled = 1;
		bs_st[2].down = 1;
		bs[4].max_conn = 2;
		static const unsigned act[5] = { 0, 0, 0, 0, 2 };
		for (int i = 0; i < 4000; i++) {
			int k = pick_act(&p, act, sm64(), sm64());
			if (k < 0) {
				failf("pick %d returned %d", i, k);
				break;
			}
			seen[k]++;
		}
		CHECK(seen[1] == 0, "disabled server picked %d times", seen[1]);
		CHECK(seen[2] == 0, "down server picked %d times", seen[2]);
		CHECK(seen[4] == 0, "server at max_conn picked %d times", seen[4]);
		CHECK(seen[0] > 0 && seen[3] > 0, "usable servers not both used: %d, %d", seen[0], seen[3]);
		/* below max_conn it is usable again */
		static const unsigned act2[5] = { 0, 0, 0, 0, 1 };
		if (algos[a] != LB_ALGO_LEASTCONN) {
			int got4 = 0;
			for (int i = 0; i < 4000 && !got4; i++)
				got4 = pick_act(&p, act2, sm64(), sm64()) == 4;
			CHECK(got4, "server below max_conn (1 of 2) never picked");
		}
		end("balance/%s_skips_disabled_down_full", algo_name(algos[a]));
	}
}

static void test_backup(void)
{
	static const int algos[] = { LB_ALGO_RR, LB_ALGO_LEASTCONN, LB_ALGO_IPHASH, LB_ALGO_RANDOM2 };
	for (size_t a = 0; a < 4; a++) {
		struct lb_pool p;
		int seen[3] = { 0 };
		begin();
		mk_pool(&p, bs, 3, NULL, algos[a]);
		bs[2].backup = 1;
		static const unsigned act[3] = { 5, 5, 0 }; /* the backup is the least loaded */
		for (int i = 0; i < 2000; i++) {
			int k = pick_act(&p, act, sm64(), sm64());
			if (k < 0) {
				failf("pick returned %d with primaries up", k);
				break;
			}
			seen[k]++;
		}
		CHECK(seen[2] == 0, "backup picked %d times while primaries are usable", seen[2]);
		bs_st[0].down = 1;
		for (int i = 0; i < 500; i++) {
			int k = pick_act(&p, act, sm64(), sm64());
			if (k != 1) {
				failf("one primary down: expected 1 (the other primary), got %d", k);
				break;
			}
		}
		bs[1].disabled = 1;
		for (int i = 0; i < 500; i++) {
			int k = pick_act(&p, act, sm64(), sm64());
			if (k != 2) {
				failf("primaries down/disabled: expected 2 (backup), got %d", k);
				break;
			}
		}
		bs_st[2].down = 1;
		int k = pick_act(&p, act, sm64(), sm64());
		CHECK(k == -1, "all down/disabled: expected NULL, got %d", k);
		end("balance/%s_backup_only_when_primaries_unusable", algo_name(algos[a]));
	}
}

static void test_least_conn(void)
{
	struct lb_pool p;
	begin();
	mk_pool(&p, bs, 3, NULL, LB_ALGO_LEASTCONN);
	static const struct { unsigned act[3]; int exp; } t[] = {
		{ { 3, 1, 2 }, 1 }, { { 0, 4, 4 }, 0 }, { { 9, 9, 2 }, 2 }, { { 100, 50, 51 }, 1 },
	};
	for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
		int k = pick_act(&p, t[i].act, sm64(), sm64());
		CHECK(k == t[i].exp, "active {%u,%u,%u}: expected %d, got %d", t[i].act[0], t[i].act[1], t[i].act[2],
		      t[i].exp, k);
	}
	/* the least loaded is down -> next least */
	bs_st[1].down = 1;
	static const unsigned a1[3] = { 3, 1, 2 };
	int k = pick_act(&p, a1, 0, 0);
	CHECK(k == 2, "least (s1) down, active {3,1,2}: expected 2, got %d", k);
	bs_st[1].down = 0;
	bs[1].max_conn = 1;
	k = pick_act(&p, a1, 0, 0);
	CHECK(k == 2, "least (s1) at max_conn, active {3,1,2}: expected 2, got %d", k);
	end("balance/least_conn_fewest_active");
}

static void test_random2(void)
{
	struct lb_pool p;
	long cnt[4] = { 0 };
	const long N = 100000;
	begin();
	mk_pool(&p, bs, 4, NULL, LB_ALGO_RANDOM2);
	for (long i = 0; i < N; i++) {
		int k = pick_act(&p, NULL, sm64(), sm64());
		if (k < 0) {
			failf("pick returned %d", k);
			break;
		}
		cnt[k]++;
	}
	for (int i = 0; i < 4; i++) {
		double share = (double)cnt[i] / (double)N;
		CHECK(share > 0.20 && share < 0.30, "equal load: server %d expected 25%% +-5%%, got %.2f%%", i, share * 100);
	}
	/* prefers the less loaded of its two choices */
	static const unsigned act[4] = { 10, 0, 10, 10 };
	long one = 0;
	for (long i = 0; i < 20000; i++)
		one += pick_act(&p, act, sm64(), sm64()) == 1;
	CHECK(one > 20000 * 4 / 10, "idle server among loaded ones: expected > 40%% of picks, got %.2f%%",
	      one * 100.0 / 20000);
	end("balance/random2_spread");
}

static void test_ip_hash(void)
{
	enum { NK = 100000 };
	struct lb_pool p4, p5;
	static signed char first[NK];
	uint64_t *keys = malloc(NK * sizeof *keys);
	long cnt[4] = { 0 };
	if (!keys)
		exit(2);
	mk_pool(&p4, s4, 4, NULL, LB_ALGO_IPHASH);
	mk_pool(&p5, s5, 5, NULL, LB_ALGO_IPHASH);

	begin();
	for (int i = 0; i < NK; i++)
		keys[i] = sm64();
	for (int i = 0; i < NK; i++) {
		first[i] = (signed char)pick(&p4, keys[i], sm64());
		if (first[i] < 0) {
			failf("key %d: pick returned %d", i, first[i]);
			break;
		}
		cnt[(int)first[i]]++;
	}
	if (!c_fail) {
		for (int i = 0; i < 1000; i++) {
			int k = pick(&p4, keys[i], sm64());
			if (k != first[i]) {
				failf("key %d: first %d, then %d (other rnd)", i, first[i], k);
				break;
			}
		}
	}
	end("balance/ip_hash_same_key_same_server");

	begin();
	for (int i = 0; i < 4; i++) {
		double share = (double)cnt[i] / NK;
		CHECK(share > 0.20 && share < 0.30, "server %d: expected 25%% +-5%%, got %.2f%%", i, share * 100);
	}
	end("balance/ip_hash_distribution_4_servers");

	begin();
	{
		long moved = 0, wrong = 0;
		for (int i = 0; i < NK && first[i] >= 0; i++) {
			int k = pick(&p5, keys[i], 0);
			if (k < 0) {
				failf("5 servers: pick returned %d", k);
				break;
			}
			if (strcmp(s5[k].name, s4[(int)first[i]].name) != 0) {
				moved++;
				if (k != 4)
					wrong++;
			}
		}
		CHECK(moved * 100 <= (long)NK * 22, "adding a 5th server moved %.2f%% of keys (expected <= 22%%)",
		      moved * 100.0 / NK);
		CHECK(moved * 100 >= (long)NK * 10, "adding a 5th server moved only %.2f%% of keys (expected ~20%%)",
		      moved * 100.0 / NK);
		CHECK(wrong == 0, "%ld keys moved between old servers (expected only to the new one)", wrong);
	}
	end("balance/ip_hash_add_server_moves_few_keys");

	begin();
	{
		long bad = 0, bad_stay = 0;
		s4_st[2].down = 1;
		for (int i = 0; i < NK && first[i] >= 0; i++) {
			int k = pick(&p4, keys[i], 0);
			if (first[i] != 2 && k != first[i])
				bad++;
			if (k == 2 || k < 0)
				bad_stay++;
		}
		CHECK(bad == 0, "%ld keys of other servers moved when s2 went down", bad);
		CHECK(bad_stay == 0, "%ld keys still on the down server (or NULL)", bad_stay);
		s4_st[2].down = 0;
		long back = 0;
		for (int i = 0; i < NK && first[i] >= 0; i++)
			back += pick(&p4, keys[i], 0) != first[i];
		CHECK(back == 0, "%ld keys not back on their server after s2 came back", back);
	}
	end("balance/ip_hash_down_server_moves_only_its_keys");

	/* realistic keys: lb_hash64 of sequential client addresses */
	begin();
	{
		long c4[4] = { 0 };
		for (uint32_t i = 0; i < NK; i++) {
			unsigned char ip[4] = { 10, (unsigned char)(i >> 16), (unsigned char)(i >> 8), (unsigned char)i };
			int k = pick(&p4, lb_hash64(ip, 4), 0);
			if (k < 0) {
				failf("pick returned %d", k);
				break;
			}
			c4[k]++;
		}
		for (int i = 0; i < 4; i++)
			CHECK(c4[i] > NK / 5 && c4[i] < NK * 3 / 10, "server %d: expected 25%% +-5%%, got %.2f%%", i,
			      c4[i] * 100.0 / NK);
	}
	end("balance/ip_hash_sequential_client_addresses");
	free(keys);
}

/* lb_pick reads the shared state and the clock only from its arguments: drain, disabled by the admin
 * API, down by health checks, an open circuit until cb_until, a half-open one with its trials taken */
static void test_pick_state(void)
{
	static const int algos[] = { LB_ALGO_RR, LB_ALGO_LEASTCONN, LB_ALGO_IPHASH, LB_ALGO_RANDOM2 };
	static const struct { const char *what; struct lb_srv_state st; uint64_t now; int usable; } t[] = {
		{ "ready", { 0 }, 5, 1 },
		{ "drain", { .admin = 1 }, 5, 0 },
		{ "disabled by the admin API", { .admin = 2 }, 5, 0 },
		{ "down by health checks", { .down = 1 }, 5, 0 },
		{ "circuit open until 10, now 5", { .cb_state = 1, .cb_until = 10 }, 5, 0 },
		{ "circuit open until 10, now 10 (trial)", { .cb_state = 1, .cb_until = 10 }, 10, 1 },
		{ "half-open, 2 trials in flight", { .cb_state = 2, .cb_trials = 2 }, 5, 1 },
		{ "half-open, 3 trials in flight", { .cb_state = 2, .cb_trials = 3 }, 5, 0 },
	};
	begin();
	for (size_t a = 0; a < 4; a++)
		for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
			struct lb_pool p;
			mk_pool(&p, bs, 1, NULL, algos[a]);
			const struct lb_server *s = lb_pick(&p, &t[i].st, &pick_rt, t[i].now, 1, 1);
			CHECK((s != NULL) == t[i].usable, "%s, %s: expected %s, got %s", algo_name(algos[a]), t[i].what,
			      t[i].usable ? "picked" : "NULL", s ? "picked" : "NULL");
		}
	end("balance/pick_reads_state_and_clock_it_is_given");
}

/* The weight in effect comes with the state (lb: the admin API's, from shared memory; 0 is the configured
 * one), and the balancing state lb_pick writes is the one it is given: the pool is not written. */
static void test_pick_weight_in_state(void)
{
	static const int algos[] = { LB_ALGO_RR, LB_ALGO_RANDOM2 };
	begin();
	for (size_t a = 0; a < 2; a++) {
		struct lb_pool p, before;
		long cnt[2] = { 0, 0 };
		mk_pool(&p, bs, 2, NULL, algos[a]);
		states_of(&p)[0].weight = 3; /* s0 3 (set), s1 1 (configured) */
		before = p;
		for (int i = 0; i < 4000; i++) {
			int k = pick(&p, sm64(), sm64());
			if (k < 0) {
				failf("%s: pick returned %d", algo_name(algos[a]), k);
				break;
			}
			cnt[k]++;
		}
		CHECK(cnt[0] > 2800 && cnt[0] < 3200, "%s, weights 3 (state) and 1 (config): s0 got %ld of 4000, expected ~3000",
		      algo_name(algos[a]), cnt[0]);
		CHECK(memcmp(&p, &before, sizeof p) == 0 && bs[0].weight == 1, "%s: the pool or a server was written",
		      algo_name(algos[a]));
	}
	end("balance/pick_weight_from_state_pool_not_written");
}

static void test_pick_none(void)
{
	static const int algos[] = { LB_ALGO_RR, LB_ALGO_LEASTCONN, LB_ALGO_IPHASH, LB_ALGO_RANDOM2 };
	begin();
	for (size_t a = 0; a < 4; a++) {
		struct lb_pool p;
		int k;
		mk_pool(&p, bs, 3, NULL, algos[a]);
		bs_st[0].down = bs_st[1].down = bs_st[2].down = 1;
		k = pick_act(&p, NULL, 1, 1);
		CHECK(k == -1, "%s all down: expected NULL, got %d", algo_name(algos[a]), k);
		mk_pool(&p, bs, 3, NULL, algos[a]);
		bs[0].disabled = bs[1].disabled = bs[2].disabled = 1;
		k = pick_act(&p, NULL, 1, 1);
		CHECK(k == -1, "%s all disabled: expected NULL, got %d", algo_name(algos[a]), k);
		mk_pool(&p, bs, 3, NULL, algos[a]);
		static const unsigned act[3] = { 1, 1, 1 };
		bs[0].max_conn = bs[1].max_conn = bs[2].max_conn = 1;
		k = pick_act(&p, act, 1, 1);
		CHECK(k == -1, "%s all at max_conn: expected NULL, got %d", algo_name(algos[a]), k);
		mk_pool(&p, bs, 0, NULL, algos[a]);
		k = pick(&p, 1, 1);
		CHECK(k == -1, "%s no servers: expected NULL, got %d", algo_name(algos[a]), k);
	}
	end("balance/null_when_none_usable");
}

/* ------------------------------------------------------------------ 9. routing */

static const char conf_routes[] =
	"[pool p]\n"
	"server = s1 127.0.0.1:9000\n"
	"[pool q]\n"
	"server = s2 127.0.0.1:9001\n"
	"[listener a]\n"
	"bind = 127.0.0.1:8001\n"
	"[listener b]\n"
	"bind = 127.0.0.1:8002\n"
	"[route exact_host]\n"
	"host = www.example.com\n"
	"pool = p\n"
	"[route wild]\n"
	"host = *.example.com\n"
	"path = /x\n"
	"pool = p\n"
	"[route api]\n"
	"path = /api/*\n"
	"pool = p\n"
	"[route methods]\n"
	"path = /m\n"
	"method = PUT, DELETE\n"
	"pool = p\n"
	"[route canary]\n"
	"path = /c\n"
	"header = X-Canary: yes\n"
	"pool = q\n"
	"[route any_value]\n"
	"path = /c\n"
	"header = X-Any: *\n"
	"pool = p\n"
	"[route only_b]\n"
	"listener = b\n"
	"path = /b\n"
	"pool = q\n"
	"[route first]\n"
	"path = /dup\n"
	"pool = p\n"
	"[route second]\n"
	"path = /dup\n"
	"pool = q\n"
	"[route split]\n"
	"path = /s\n"
	"split = p 90, q 10\n";

/* health and circuit keys: explicit values, "off", lists of statuses; tcp listeners' pools
 * default to tcp checks */
static void test_conf_health(void)
{
	static const char t[] =
		"[global]\nalert_command = /usr/local/bin/alert --json\nstop_grace = 3s\n"
		"[pool h]\nserver = s1 127.0.0.1:9000\nhealth_check = http HEAD /ready?x=1\nhealth_interval = 2s\n"
		"health_timeout = 500ms\nhealth_rise = 1\nhealth_fall = 4\nhealth_expect = 200, 204, 301-302\n"
		"circuit_failures = off\ncircuit_error_rate = 25%\ncircuit_window = 1m\ncircuit_min_requests = 7\n"
		"circuit_slow = off\ncircuit_open = 5s\ncircuit_max_open = 100%\n"
		"[pool t]\nserver = s2 127.0.0.1:9001\ncircuit_max_open = off\n"
		"[pool o]\nserver = s3 127.0.0.1:9002\nhealth_check = off\n"
		"[listener web]\nbind = 127.0.0.1:8000\npool = h\n"
		"[listener raw]\nbind = 127.0.0.1:8001\nmode = tcp\npool = t\n";
	struct lb_conf *c;
	begin();
	int rc = conf_parse(t, &c);
	CHECK(rc == 0, "parse failed: %s", errs_str());
	if (rc == 0) {
		const struct lb_pool *h = &c->pools[0], *tp = &c->pools[1], *o = &c->pools[2];
		CHECK(c->alert_command && !strcmp(c->alert_command, "/usr/local/bin/alert --json"), "alert_command %s",
		      c->alert_command ? c->alert_command : "(null)");
		CHECK(c->stop_grace == 3000, "stop_grace %" PRIu64, c->stop_grace);
		CHECK(h->hc_kind == LB_HC_HTTP && !strcmp(h->hc_method, "HEAD") && !strcmp(h->hc_path, "/ready?x=1"),
		      "health_check: %d %s %s", h->hc_kind, h->hc_method, h->hc_path);
		CHECK(h->hc_interval == 2000 && h->hc_timeout == 500 && h->hc_rise == 1 && h->hc_fall == 4,
		      "health timing %" PRIu64 "/%" PRIu64 " %u/%u", h->hc_interval, h->hc_timeout, h->hc_rise, h->hc_fall);
		CHECK(h->nhc_expect == 3 && h->hc_expect[0].lo == 200 && h->hc_expect[0].hi == 200 &&
		      h->hc_expect[1].lo == 204 && h->hc_expect[2].lo == 301 && h->hc_expect[2].hi == 302,
		      "health_expect: %zu ranges", h->nhc_expect);
		CHECK(h->cb_failures == 0 && h->cb_error_rate == 25 && h->cb_window == 60000 && h->cb_min_requests == 7 &&
		      h->cb_slow == 0 && h->cb_open == 5000, "circuit keys: %u %u %" PRIu64 " %u %" PRIu64 " %" PRIu64,
		      h->cb_failures, h->cb_error_rate, h->cb_window, h->cb_min_requests, h->cb_slow, h->cb_open);
		CHECK(h->cb_max_open == 100 && tp->cb_max_open == 100, "circuit_max_open 100%% / off: %u %u", h->cb_max_open,
		      tp->cb_max_open);
		CHECK(tp->hc_kind == LB_HC_TCP, "pool behind a tcp listener: check kind %d, expected tcp", tp->hc_kind);
		CHECK(o->hc_kind == LB_HC_OFF, "health_check = off: kind %d", o->hc_kind);
		lb_conf_free(c);
	}
	end("conf/health_and_circuit");
}

static void test_conf_sticky(void)
{
	const char *t = "[listener l]\nbind = 127.0.0.1:8000\npool = p\n[pool p]\nserver = s1 127.0.0.1:9000\n"
	                "sticky = cookie SRV\n[pool q]\nserver = s2 127.0.0.1:9001\n";
	struct lb_conf *c = NULL;
	char *b = dupbuf(t, strlen(t));
	memset(&g_errs, 0, sizeof g_errs);
	begin();
	int rc = lb_conf_parse(b, strlen(t), &c, &g_errs);
	free(b);
	CHECK(rc == 0, "parse returned %d: %s", rc, errs_str());
	if (rc == 0) {
		CHECK(!strcmp(c->pools[0].sticky_cookie, "SRV"), "pool p sticky cookie '%s'", c->pools[0].sticky_cookie);
		CHECK(c->pools[1].sticky_cookie[0] == 0, "pool q: sticky is off by default");
		lb_conf_free(c);
	}
	end("conf/sticky_cookie");
}

/* http2: auto (on with tls, off without), on, off; http2_max_streams 1..10000 (default 100). A build
 * without LB_HTTP2 refuses on, and auto means HTTP/1.1 there. */
static void test_conf_http2(void)
{
	static const struct { const char *v; int ok, h2_plain, h2_tls; } t[] = {
#ifdef LB_HTTP2
		{ NULL, 1, 0, 1 }, { "auto", 1, 0, 1 }, { "on", 1, 1, 1 }, { "off", 1, 0, 0 },
#else
		{ NULL, 1, 0, 0 }, { "auto", 1, 0, 0 }, { "on", 0, 0, 0 }, { "off", 1, 0, 0 },
#endif
		{ "yes", 0, 0, 0 }, { "On", 0, 0, 0 }, { "", 0, 0, 0 }, { "h2c", 0, 0, 0 },
	};
	for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
		char text[200];
		snprintf(text, sizeof text, "[pool p]\nserver = s1 127.0.0.1:9000\n[listener l]\nbind = 127.0.0.1:8000\n"
		         "pool = p\n%s%s\n", t[i].v ? "http2 = " : "", t[i].v ? t[i].v : "");
		struct lb_conf *c;
		begin();
		int rc = conf_parse(text, &c);
		if (t[i].ok) {
			CHECK(rc == 0 && c, "http2 = %s: parse %d: %s", t[i].v ? t[i].v : "(none)", rc, errs_str());
			if (rc == 0 && c) {
				struct lb_listener *l = &c->listeners[0];
				CHECK(l->http2_max_streams == 100, "http2_max_streams default: %u", l->http2_max_streams);
				CHECK(lb_listener_h2(l) == t[i].h2_plain, "plain listener speaks h2: %d", lb_listener_h2(l));
				l->tls = 1;
				CHECK(lb_listener_h2(l) == t[i].h2_tls, "tls listener speaks h2: %d", lb_listener_h2(l));
				l->mode = LB_MODE_TCP;
				CHECK(lb_listener_h2(l) == 0, "a tcp listener never speaks h2");
				lb_conf_free(c);
			}
		} else {
			CHECK(rc != 0 && err_at(6, "http2"), "http2 = %s: expected an error at line 6 naming http2: %s", t[i].v,
			      errs_str());
			lb_conf_free(c);
		}
		char name[64];
		snprintf(name, sizeof name, "conf/http2=%s", t[i].v ? t[i].v : "(default)");
		end("%s", name);
	}
	static const struct { const char *v; int ok; } m[] = { { "1", 1 }, { "100", 1 }, { "10000", 1 }, { "0", 0 },
	                                                       { "10001", 0 }, { "-1", 0 }, { "many", 0 } };
	for (size_t i = 0; i < sizeof m / sizeof *m; i++) {
		char text[200];
		snprintf(text, sizeof text, "[pool p]\nserver = s1 127.0.0.1:9000\n[listener l]\nbind = 127.0.0.1:8000\n"
		         "pool = p\nhttp2_max_streams = %s\n", m[i].v);
		struct lb_conf *c;
		begin();
		int rc = conf_parse(text, &c);
		if (m[i].ok) {
			CHECK(rc == 0 && c && c->listeners[0].http2_max_streams == strtoul(m[i].v, NULL, 10),
			      "http2_max_streams = %s: %d %s", m[i].v, rc, errs_str());
		} else {
			CHECK(rc != 0 && err_at(6, "http2_max_streams"), "http2_max_streams = %s: %s", m[i].v, errs_str());
		}
		lb_conf_free(c);
		char name[64];
		snprintf(name, sizeof name, "conf/http2_max_streams=%s", m[i].v);
		end("%s", name);
	}
}

/* keepalive: auto (the default: the idle pool follows the need), or a cap from 0 to 100000 */
static void test_conf_keepalive(void)
{
	static const struct { const char *v; int ok; unsigned want; } t[] = {
		{ "auto", 1, LB_KEEPALIVE_AUTO }, { "0", 1, 0 }, { "1", 1, 1 }, { "32", 1, 32 }, { "100000", 1, 100000 },
		{ "100001", 0, 0 }, { "-1", 0, 0 }, { "lots", 0, 0 }, { "Auto", 0, 0 }, { "32 conns", 0, 0 },
		{ "4294967295", 0, 0 }, { "", 0, 0 },
	};
	for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
		char text[200];
		snprintf(text, sizeof text, "[pool p]\nserver = s1 127.0.0.1:9000\nkeepalive = %s\n"
		         "[listener l]\nbind = 127.0.0.1:8000\npool = p\n", t[i].v);
		struct lb_conf *c = NULL;
		begin();
		int rc = conf_parse(text, &c);
		if (t[i].ok) {
			CHECK(rc == 0, "keepalive = %s: parse returned %d: %s", t[i].v, rc, errs_str());
			if (rc == 0)
				CHECK(c->pools[0].keepalive == t[i].want, "keepalive = %s: got %u, expected %u", t[i].v,
				      c->pools[0].keepalive, t[i].want);
		} else {
			CHECK(rc == LB_EINVAL && err_at(3, "keepalive"), "keepalive = %s: expected an error at line 3 "
			      "naming the key, got rc %d %s", t[i].v, rc, errs_str());
		}
		if (rc == 0)
			lb_conf_free(c);
		end("conf/keepalive='%s'", t[i].v);
	}
}

struct cidr_case {
	const char *cidr, *ip;
	int ok, match;
};

static void check_cidr_row(const void *row)
{
	const struct cidr_case *r = row;
	struct lb_cidr c;
	begin();
	int rc = lb_parse_cidr(r->cidr, strlen(r->cidr), &c);
	CHECK((rc == 0) == r->ok, "parse returned %d", rc);
	if (rc == 0 && r->ip) {
		struct sockaddr_storage ss;
		memset(&ss, 0, sizeof ss);
		struct lb_ip ip;
		if (strchr(r->ip, ':')) {
			ss.ss_family = AF_INET6;
			inet_pton(AF_INET6, r->ip, &((struct sockaddr_in6 *)&ss)->sin6_addr);
		} else {
			ss.ss_family = AF_INET;
			inet_pton(AF_INET, r->ip, &((struct sockaddr_in *)&ss)->sin_addr);
		}
		CHECK(lb_ip_from_sockaddr(&ss, &ip) == 0, "address not converted");
		CHECK(lb_cidr_match(&c, &ip) == r->match, "match %s in %s: got %d", r->ip, r->cidr,
		      lb_cidr_match(&c, &ip));
	}
	end("cidr/%s~%s", r->cidr, r->ip ? r->ip : "-");
}

static void test_cidr(void)
{
	static const struct cidr_case t[] = {
		{ "10.0.0.0/8", "10.1.2.3", 1, 1 }, { "10.0.0.0/8", "11.0.0.1", 1, 0 },
		{ "127.0.0.2", "127.0.0.2", 1, 1 }, { "127.0.0.2", "127.0.0.3", 1, 0 },
		{ "0.0.0.0/0", "8.8.8.8", 1, 1 }, { "192.168.1.128/25", "192.168.1.200", 1, 1 },
		{ "192.168.1.128/25", "192.168.1.100", 1, 0 }, { "::1", "::1", 1, 1 },
		{ "2001:db8::/32", "2001:db8:1::5", 1, 1 }, { "2001:db8::/32", "2001:db9::5", 1, 0 },
		{ "::/0", "10.0.0.1", 1, 0 },            /* families never mix */
		{ "0.0.0.0/0", "::1", 1, 0 },
		{ "10.0.0.1/8", NULL, 0, 0 },            /* host bits set */
		{ "10.0.0.0/33", NULL, 0, 0 }, { "300.1.1.1", NULL, 0, 0 }, { "10.0.0.0/", NULL, 0, 0 },
		{ "/8", NULL, 0, 0 }, { "abc", NULL, 0, 0 }, { "::1/129", NULL, 0, 0 }, { "10.0.0.0/-1", NULL, 0, 0 },
	};
	RUN_TABLE(NULL, t, check_cidr_row);
	/* an IPv4-mapped IPv6 peer is the IPv4 address for policies */
	struct sockaddr_storage ss;
	struct lb_ip ip;
	struct lb_cidr c;
	memset(&ss, 0, sizeof ss);
	ss.ss_family = AF_INET6;
	inet_pton(AF_INET6, "::ffff:10.1.2.3", &((struct sockaddr_in6 *)&ss)->sin6_addr);
	begin();
	CHECK(lb_ip_from_sockaddr(&ss, &ip) == 0 && !ip.v6, "v4-mapped not turned into IPv4");
	CHECK(lb_parse_cidr("10.0.0.0/8", 10, &c) == 0 && lb_cidr_match(&c, &ip), "v4-mapped 10.1.2.3 not in 10/8");
	end("cidr/v4_mapped");
}

struct proxy_case {
	const char *name, *in;
	size_t len;       /* 0: strlen */
	int versions, rc; /* rc: > 0 the header length expected; else LB_EAGAIN / LB_EINVAL */
	const char *src;
	unsigned sport, local;
};

static void check_proxy_row(const void *row)
{
	const struct proxy_case *r = row;
	size_t n = r->len ? r->len : strlen(r->in);
	char *b = dupbuf(r->in, n);
	struct lb_proxy px;
	char ip[64] = "";
	begin();
	int rc = lb_parse_proxy(b, n, r->versions, &px);
	CHECK(rc == r->rc, "expected %d, got %d (%s)", r->rc, rc, px.error ? px.error : "");
	if (rc > 0) {
		CHECK(px.local == (int)r->local, "local %d", px.local);
		if (r->src) {
			lb_ip_format(&px.src, ip, sizeof ip);
			CHECK(!strcmp(ip, r->src), "src %s, expected %s", ip, r->src);
			CHECK(px.sport == r->sport, "sport %u", (unsigned)px.sport);
		}
		/* what lb sends re-parses to the same addresses, in both versions */
		for (int v = 1; v <= 2; v++) {
			char out[LB_PROXY_V1_MAX + 1];
			struct lb_proxy back;
			int bn = lb_proxy_build(v, &px, out, sizeof out);
			CHECK(bn > 0 && lb_parse_proxy(out, (size_t)bn, v, &back) == bn, "v%d rebuild does not re-parse", v);
			CHECK(back.local == px.local && (px.local || (!memcmp(&back.src, &px.src, sizeof px.src) &&
			      !memcmp(&back.dst, &px.dst, sizeof px.dst) && back.sport == px.sport && back.dport == px.dport)),
			      "v%d rebuild changed the addresses", v);
		}
	}
	if (rc == LB_EINVAL)
		CHECK(px.error && *px.error, "no reason given");
	/* every proper prefix of an accepted header is incomplete, never invalid */
	for (size_t k = 1; rc > 0 && k < (size_t)rc; k++) {
		char *pb = dupbuf(r->in, k);
		int pr = lb_parse_proxy(pb, k, r->versions, &px);
		free(pb);
		if (pr != LB_EAGAIN) {
			failf("prefix of %zu bytes gave %d", k, pr);
			break;
		}
	}
	free(b);
	end("proxy/%s", r->name);
}

/* PROXY v1/v2: accepted headers give their addresses and exact length; everything else is
 * refused (or incomplete) without reading past len */
static void test_proxy(void)
{
	static const struct proxy_case t[] = {
		{ "v1_tcp4", "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET /", 0, 3, 45, "192.0.2.1", 56324, 0 },
		{ "v1_tcp6", "PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n", 0, 3, 44, "2001:db8::1", 1, 0 },
		{ "v1_tcp6_mapped", "PROXY TCP6 ::ffff:10.0.0.7 ::1 5 6\r\n", 0, 3, 36, "10.0.0.7", 5, 0 },
		{ "v1_unknown", "PROXY UNKNOWN\r\n", 0, 3, 15, NULL, 0, 1 },
		{ "v1_unknown_junk", "PROXY UNKNOWN ff:: 1.2.3.4 1 2\r\n", 0, 3, 32, NULL, 0, 1 },
		{ "v1_partial", "PROXY TCP4 192.0.2.1 198.5", 0, 3, LB_EAGAIN, NULL, 0, 0 },
		{ "v1_partial_magic", "PRO", 0, 3, LB_EAGAIN, NULL, 0, 0 },
		{ "v1_only_v2_allowed", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", 0, 2, LB_EINVAL, NULL, 0, 0 },
		{ "v1_bare_lf", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", 0, 3, LB_EINVAL, NULL, 0, 0 },
		{ "v1_double_space", "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", 0, 3, LB_EINVAL, NULL, 0, 0 },
		{ "v1_port_leading_zero", "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", 0, 3, LB_EINVAL, NULL, 0, 0 },
		{ "v1_port_range", "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", 0, 3, LB_EINVAL, NULL, 0, 0 },
		{ "v1_family_mismatch", "PROXY TCP4 ::1 ::1 1 2\r\n", 0, 3, LB_EINVAL, NULL, 0, 0 },
		{ "v1_extra_field", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", 0, 3, LB_EINVAL, NULL, 0, 0 },
		{ "v1_missing_field", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", 0, 3, LB_EINVAL, NULL, 0, 0 },
		{ "v1_udp", "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", 0, 3, LB_EINVAL, NULL, 0, 0 },
		{ "v1_too_long", "PROXY UNKNOWN xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
		  "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n", 0, 3, LB_EINVAL, NULL, 0, 0 },
		{ "not_proxy", "GET / HTTP/1.1\r\n\r\n", 0, 3, LB_EINVAL, NULL, 0, 0 },
		{ "v2_tcp4", "\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00\x02\x01\xc6\x33\x64\x02\xdc\x04\x01\xbb",
		  28, 3, 28, "192.0.2.1", 56324, 0 },
		{ "v2_tcp4_tlv", "\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x10\x0a\x00\x00\x01\x0a\x00\x00\x02\x00\x50\x01\xbb"
		  "\x04\x00\x01\x41", 32, 2, 32, "10.0.0.1", 80, 0 },
		{ "v2_tlv_overrun", "\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x10\x0a\x00\x00\x01\x0a\x00\x00\x02\x00\x50\x01\xbb"
		  "\x04\x00\x05\x41", 32, 2, LB_EINVAL, NULL, 0, 0 },
		{ "v2_local", "\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00", 16, 3, 16, NULL, 0, 1 },
		{ "v2_partial_body", "\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00", 18, 3, LB_EAGAIN, NULL, 0, 0 },
		{ "v2_partial_sig", "\r\n\r\n\0\r", 6, 3, LB_EAGAIN, NULL, 0, 0 },
		{ "v2_bad_version", "\r\n\r\n\0\r\nQUIT\n\x11\x11\x00\x00", 16, 3, LB_EINVAL, NULL, 0, 0 },
		{ "v2_bad_command", "\r\n\r\n\0\r\nQUIT\n\x22\x11\x00\x0c", 16, 3, LB_EINVAL, NULL, 0, 0 },
		{ "v2_udp", "\r\n\r\n\0\r\nQUIT\n\x21\x12\x00\x0c\x01\x02\x03\x04\x01\x02\x03\x04\x00\x01\x00\x02",
		  28, 3, LB_EINVAL, NULL, 0, 0 },
		{ "v2_short_for_family", "\r\n\r\n\0\r\nQUIT\n\x21\x21\x00\x0c\x01\x02\x03\x04\x01\x02\x03\x04\x00\x01\x00\x02",
		  28, 3, LB_EINVAL, NULL, 0, 0 },
		{ "v2_too_long", "\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff", 16, 3, LB_EINVAL, NULL, 0, 0 },
		{ "v2_only_v1_allowed", "\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00", 16, 1, LB_EINVAL, NULL, 0, 0 },
	};
	RUN_TABLE(NULL, t, check_proxy_row);
	/* mixed families go out as IPv6 with the IPv4 one mapped */
	struct lb_proxy m, back;
	char out[LB_PROXY_V1_MAX + 1];
	memset(&m, 0, sizeof m);
	inet_pton(AF_INET, "10.1.2.3", m.src.a);
	inet_pton(AF_INET6, "2001:db8::9", m.dst.a);
	m.dst.v6 = 1;
	m.sport = 1234, m.dport = 80;
	begin();
	int n = lb_proxy_build(1, &m, out, sizeof out);
	CHECK(n > 0 && !strncmp(out, "PROXY TCP6 ::ffff:10.1.2.3 2001:db8::9 1234 80\r\n", (size_t)n), "v1 mixed: %.*s",
	      n > 0 ? n : 0, out);
	CHECK(lb_parse_proxy(out, (size_t)n, 1, &back) == n && !back.src.v6 && back.src.a[0] == 10, "mixed v1 re-parse");
	CHECK(lb_proxy_build(1, &m, out, 20) == LB_ERANGE, "small buffer not refused");
	end("proxy/build_mixed_families");
}

struct admin_route_case {
	const char *m, *t;
	int rc, op, mut, dry, status;
	const char *pool, *srv, *route;
};

static void check_admin_route_row(const void *row)
{
	const struct admin_route_case *r = row;
	struct lb_admin_call k;
	char *m = dupbuf(r->m, strlen(r->m)), *tg = dupbuf(r->t, strlen(r->t));
	begin();
	int rc = lb_admin_route(m, strlen(r->m), tg, strlen(r->t), &k);
	CHECK(rc == r->rc, "rc %d, expected %d (%s)", rc, r->rc, k.error ? k.error : "");
	if (rc == 0) {
		CHECK(k.op == r->op && k.mutating == r->mut && k.dry_run == r->dry, "op %d mut %d dry %d", k.op,
		      k.mutating, k.dry_run);
		CHECK(!strcmp(k.pool, r->pool) && !strcmp(k.server, r->srv) && !strcmp(k.route, r->route),
		      "names '%s' '%s' '%s'", k.pool, k.server, k.route);
	} else {
		CHECK(k.status == r->status && k.error, "status %d, expected %d", k.status, r->status);
	}
	free(m);
	free(tg);
	end("admin_route/%s_%s", r->m, r->t);
}

/* admin API paths and bodies */
static void test_admin(void)
{
	static const struct admin_route_case t[] = {
		{ "GET", "/", 0, LB_A_DASHBOARD, 0, 0, 0, "", "", "" },
		{ "GET", "/healthz", 0, LB_A_HEALTHZ, 0, 0, 0, "", "", "" },
		{ "HEAD", "/metrics", 0, LB_A_METRICS, 0, 0, 0, "", "", "" },
		{ "GET", "/api/stats", 0, LB_A_STATS, 0, 0, 0, "", "", "" },
		{ "GET", "/api/history", 0, LB_A_HISTORY, 0, 0, 0, "", "", "" },
		{ "POST", "/", 0, LB_A_FORM, 0, 0, 0, "", "", "" }, /* the form carries its token */
		{ "PUT", "/", LB_EINVAL, 0, 0, 0, 405, "", "", "" },
		{ "POST", "/api/history", LB_EINVAL, 0, 0, 0, 405, "", "", "" },
		{ "POST", "/api/config?dry_run=1", 0, LB_A_CONFIG, 1, 1, 0, "", "", "" },
		{ "POST", "/api/config", 0, LB_A_CONFIG, 1, 0, 0, "", "", "" },
		{ "POST", "/api/reload", 0, LB_A_RELOAD, 1, 0, 0, "", "", "" },
		{ "POST", "/api/pools/api/servers", 0, LB_A_SERVER_ADD, 1, 0, 0, "api", "", "" },
		{ "DELETE", "/api/pools/api/servers/a1", 0, LB_A_SERVER_DEL, 1, 0, 0, "api", "a1", "" },
		{ "POST", "/api/pools/api/servers/a1/drain", 0, LB_A_DRAIN, 1, 0, 0, "api", "a1", "" },
		{ "POST", "/api/pools/api/servers/a1/enable", 0, LB_A_ENABLE, 1, 0, 0, "api", "a1", "" },
		{ "POST", "/api/pools/api/servers/a1/disable", 0, LB_A_DISABLE, 1, 0, 0, "api", "a1", "" },
		{ "PUT", "/api/pools/api/servers/a1/weight", 0, LB_A_WEIGHT, 1, 0, 0, "api", "a1", "" },
		{ "PUT", "/api/routes/web/split", 0, LB_A_SPLIT, 1, 0, 0, "", "", "web" },
		{ "POST", "/metrics", LB_EINVAL, 0, 0, 0, 405, "", "", "" },
		{ "GET", "/api/reload", LB_EINVAL, 0, 1, 0, 405, "", "", "" },
		{ "GET", "/api/pools/api/servers/a1/drain", LB_EINVAL, 0, 1, 0, 405, "", "", "" },
		{ "POST", "/api/pools/api/servers/a1/explode", LB_EINVAL, 0, 1, 0, 404, "", "", "" },
		{ "POST", "/api/pools/a%2Fb/servers", LB_EINVAL, 0, 1, 0, 404, "", "", "" },
		{ "POST", "/api/pools/../servers", 0, LB_A_SERVER_ADD, 1, 0, 0, "..", "", "" }, /* only a name */
		{ "POST", "/api/pools/api/servers/a1/drain/x", LB_EINVAL, 0, 1, 0, 404, "", "", "" },
		{ "POST", "/api/pools//servers", LB_EINVAL, 0, 1, 0, 404, "", "", "" },
		{ "GET", "/api", LB_EINVAL, 0, 0, 0, 404, "", "", "" },
		{ "GET", "/healthz/", LB_EINVAL, 0, 0, 0, 404, "", "", "" },
		{ "POST", "/api/config?dry_run=2", LB_EINVAL, 0, 0, 0, 400, "", "", "" },
		{ "BREW", "/", LB_EINVAL, 0, 0, 0, 405, "", "", "" },
	};
	RUN_TABLE(NULL, t, check_admin_route_row);
	struct lb_split_spec sp;
	unsigned w = 0;
	begin();
	CHECK(lb_parse_split("blue 0, green 100", 17, &sp) == 0 && sp.n == 2 && !strcmp(sp.name[1], "green") &&
	      sp.weight[0] == 0 && sp.weight[1] == 100, "blue 0, green 100");
	CHECK(lb_parse_split("blue 0, green 0", 15, &sp) != 0, "all zero accepted");
	CHECK(lb_parse_split("blue 1001", 9, &sp) != 0, "weight over 1000 accepted");
	CHECK(lb_parse_split("blue", 4, &sp) != 0, "missing weight accepted");
	CHECK(lb_parse_split("bl/ue 1", 7, &sp) != 0, "bad name accepted");
	CHECK(lb_parse_split("", 0, &sp) != 0, "empty accepted");
	CHECK(lb_parse_weight(" 7\n", 3, &w) == 0 && w == 7, "weight ' 7\\n'");
	CHECK(lb_parse_weight("0", 1, &w) != 0 && lb_parse_weight("1001", 4, &w) != 0 && lb_parse_weight("x", 1, &w) != 0,
	      "bad weights accepted");
	end("admin_bodies");
}

/* the dashboard's form: token, do=ACTION POOL/SERVER, w.POOL/SERVER for weights */
static void test_form_action(void)
{
	struct lb_form_action f;
	const char *b1 = "token=a%2Bb+c&w.api%2Fa1=3&w.api%2Fa2=9&do=weight+api%2Fa2";
	begin();
	CHECK(lb_parse_form_action(b1, strlen(b1), &f) == 0 && f.op == LB_A_WEIGHT && f.weight == 9 &&
	      !strcmp(f.pool, "api") && !strcmp(f.server, "a2") && !strcmp(f.token, "a+b c") && f.token_len == 5,
	      "weight form: op %d weight %u %s/%s token '%s'", f.op, f.weight, f.pool, f.server, f.token);
	const char *b2 = "do=drain%20web%2Fb-1.x&token=t";
	CHECK(lb_parse_form_action(b2, strlen(b2), &f) == 0 && f.op == LB_A_DRAIN && !strcmp(f.server, "b-1.x"),
	      "drain form");
	static const char *const bad[] = {
		"token=t", "do=explode+a%2Fb", "do=drain+ab", "do=drain+a%2Fb%2Fc", "do=drain+a%2Fb&token=%4", "do=drain+a%2Fb&token=%zz",
		"do=weight+a%2Fb", "do=weight+a%2Fb&w.a%2Fb=0", "do=weight+a%2Fb&w.a%2Fb=1001", "do=drain+a%2Fb&x=%00", "",
		"do=drain+a%2Fb&do=enable", /* a second do= without a target (UBSan: NULL + 1 before) */
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		CHECK(lb_parse_form_action(bad[i], strlen(bad[i]), &f) == LB_EINVAL && f.error, "accepted '%s'", bad[i]);
	end("admin_form_action");
}

static void test_bucket(void)
{
	struct lb_bucket b = { 5 * 1000, 1000 }; /* full: 5 tokens of 1000 credits at t = 1000 ms */
	uint64_t retry = 0;
	int got = 0;
	begin();
	for (int i = 0; i < 20; i++)
		got += lb_bucket_take(&b, 1000, 5, 1000, 5, &retry);
	CHECK(got == 5, "5/second burst 5: %d of 20 taken at one instant", got);
	CHECK(retry == 200, "retry after %llu ms, want 200", (unsigned long long)retry);
	CHECK(!lb_bucket_take(&b, 1199, 5, 1000, 5, &retry) && retry == 1, "at +199 ms: retry %llu", (unsigned long long)retry);
	CHECK(lb_bucket_take(&b, 1200, 5, 1000, 5, &retry), "one token after 200 ms");
	CHECK(!lb_bucket_take(&b, 1200, 5, 1000, 5, &retry), "only one token after 200 ms");
	/* a long pause refills to burst, not beyond */
	got = 0;
	for (int i = 0; i < 20; i++)
		got += lb_bucket_take(&b, 100000, 5, 1000, 5, &retry);
	CHECK(got == 5, "after a long pause: %d taken, want the burst of 5", got);
	/* slow rates: 2/minute */
	struct lb_bucket m = { 2 * 60000, 0 };
	CHECK(lb_bucket_take(&m, 0, 2, 60000, 2, &retry) && lb_bucket_take(&m, 0, 2, 60000, 2, &retry), "2 of 2/minute");
	CHECK(!lb_bucket_take(&m, 0, 2, 60000, 2, &retry) && retry == 30000, "retry %llu, want 30000",
	      (unsigned long long)retry);
	for (uint64_t t = 1; t < 30000; t += 7) /* asked often: refill must not be lost to rounding */
		CHECK(!lb_bucket_take(&m, t, 2, 60000, 2, &retry), "2/minute: a token at %llu ms", (unsigned long long)t);
	CHECK(lb_bucket_take(&m, 30000, 2, 60000, 2, &retry), "2/minute: a token at 30 s");
	end("bucket/token_bucket");
	/* over 10 s of 1 ms steps, 100/second lets through 100 per second plus the burst */
	struct lb_bucket f = { 10 * 1000, 0 };
	got = 0;
	begin();
	for (uint64_t t = 0; t < 10000; t++)
		got += lb_bucket_take(&f, t, 100, 1000, 10, &retry);
	CHECK(got >= 1009 && got <= 1010, "100/second burst 10 over 10 s: %d", got);
	end("bucket/steady_rate");
}

struct rate_case {
	const char *s;
	int ok;
	uint64_t rate, period, burst;
	int by;
	const char *hdr;
};

static void check_rate_limit_row(const void *row)
{
	const struct rate_case *r = row;
	struct lb_rate_limit rl;
	const char *err = NULL;
	begin();
	int rc = lb_parse_rate_limit(r->s, strlen(r->s), &rl, &err);
	CHECK((rc == 0) == r->ok, "returned %d", rc);
	if (rc == 0 && r->ok) {
		CHECK(rl.rate == r->rate && rl.period_ms == r->period && rl.burst == r->burst && rl.by == r->by,
		      "got %llu/%llu burst %llu by %d", (unsigned long long)rl.rate, (unsigned long long)rl.period_ms,
		      (unsigned long long)rl.burst, rl.by);
		CHECK(!strcmp(rl.header, r->hdr), "header '%s'", rl.header);
	}
	if (rc != 0)
		CHECK(err && *err, "no error text");
	end("rate_limit_parse/%s", r->s[0] ? r->s : "(empty)");
}

static void test_rate_limit_parse(void)
{
	static const struct rate_case t[] = {
		{ "10/second", 1, 10, 1000, 10, LB_RL_IP, "" },
		{ "5/minute burst=20", 1, 5, 60000, 20, LB_RL_IP, "" },
		{ "100/hour by=global", 1, 100, 3600000, 100, LB_RL_GLOBAL, "" },
		{ "3/second burst=6 by=header:X-Api-Key", 1, 3, 1000, 6, LB_RL_HEADER, "X-Api-Key" },
		{ "10/fortnight", 0, 0, 0, 0, 0, NULL }, { "0/second", 0, 0, 0, 0, 0, NULL },
		{ "10", 0, 0, 0, 0, 0, NULL }, { "x/second", 0, 0, 0, 0, 0, NULL },
		{ "10/second burst=0", 0, 0, 0, 0, 0, NULL }, { "10/second by=cookie", 0, 0, 0, 0, 0, NULL },
		{ "10/second by=header:", 0, 0, 0, 0, 0, NULL }, { "10/second extra", 0, 0, 0, 0, 0, NULL },
		{ "", 0, 0, 0, 0, 0, NULL },
	};
	RUN_TABLE(NULL, t, check_rate_limit_row);
}

static void test_routes(void)
{
	static const struct {
		const char *name, *listener, *raw, *route; /* route NULL: no match */
	} t[] = {
		{ "exact_host", "a", "GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n", "exact_host" },
		{ "exact_host_upper_with_port", "a", "GET /any HTTP/1.1\r\nHost: WWW.Example.COM:8080\r\n\r\n", "exact_host" },
		{ "exact_host_wins_over_later", "a", "GET /x HTTP/1.1\r\nHost: www.example.com\r\n\r\n", "exact_host" },
		{ "wildcard_subdomain", "a", "GET /x HTTP/1.1\r\nHost: a.example.com\r\n\r\n", "wild" },
		{ "wildcard_not_apex", "a", "GET /x HTTP/1.1\r\nHost: example.com\r\n\r\n", NULL },
		{ "wildcard_not_suffix_only", "a", "GET /x HTTP/1.1\r\nHost: xexample.com\r\n\r\n", NULL },
		{ "wildcard_path_must_match", "a", "GET /y HTTP/1.1\r\nHost: a.example.com\r\n\r\n", NULL },
		{ "exact_path_not_prefix", "a", "GET /x/y HTTP/1.1\r\nHost: a.example.com\r\n\r\n", NULL },
		{ "prefix_bare", "a", "GET /api HTTP/1.1\r\nHost: foo\r\n\r\n", "api" },
		{ "prefix_slash", "a", "GET /api/ HTTP/1.1\r\nHost: foo\r\n\r\n", "api" },
		{ "prefix_deeper", "a", "GET /api/v1/users?x=1 HTTP/1.1\r\nHost: foo\r\n\r\n", "api" },
		{ "prefix_not_apix", "a", "GET /apix HTTP/1.1\r\nHost: foo\r\n\r\n", NULL },
		{ "prefix_not_ap", "a", "GET /ap HTTP/1.1\r\nHost: foo\r\n\r\n", NULL },
		{ "prefix_after_normalisation", "a", "GET /x/../api/v1 HTTP/1.1\r\nHost: foo\r\n\r\n", "api" },
		{ "prefix_escaped", "a", "GET /%61pi/v1 HTTP/1.1\r\nHost: foo\r\n\r\n", "api" },
		{ "prefix_absolute_form", "a", "GET http://foo/api/v1 HTTP/1.1\r\nHost: foo\r\n\r\n", "api" },
		{ "method_put", "a", "PUT /m HTTP/1.1\r\nHost: foo\r\nContent-Length: 0\r\n\r\n", "methods" },
		{ "method_delete", "a", "DELETE /m HTTP/1.1\r\nHost: foo\r\n\r\n", "methods" },
		{ "method_get_no_match", "a", "GET /m HTTP/1.1\r\nHost: foo\r\n\r\n", NULL },
		{ "header_value", "a", "GET /c HTTP/1.1\r\nHost: foo\r\nX-Canary: yes\r\n\r\n", "canary" },
		{ "header_name_case", "a", "GET /c HTTP/1.1\r\nHost: foo\r\nx-canary: yes\r\n\r\n", "canary" },
		{ "header_other_value", "a", "GET /c HTTP/1.1\r\nHost: foo\r\nX-Canary: no\r\n\r\n", NULL },
		{ "header_any_value", "a", "GET /c HTTP/1.1\r\nHost: foo\r\nX-Any: whatever\r\n\r\n", "any_value" },
		{ "header_any_after_failed", "a", "GET /c HTTP/1.1\r\nHost: foo\r\nX-Canary: no\r\nX-Any: 1\r\n\r\n",
		  "any_value" },
		{ "header_absent", "a", "GET /c HTTP/1.1\r\nHost: foo\r\n\r\n", NULL },
		{ "listener_restricted_other", "a", "GET /b HTTP/1.1\r\nHost: foo\r\n\r\n", NULL },
		{ "listener_restricted_own", "b", "GET /b HTTP/1.1\r\nHost: foo\r\n\r\n", "only_b" },
		{ "unrestricted_on_b", "b", "GET /api/x HTTP/1.1\r\nHost: foo\r\n\r\n", "api" },
		{ "first_in_file_order", "a", "GET /dup HTTP/1.1\r\nHost: foo\r\n\r\n", "first" },
		{ "no_route", "a", "GET /nothing HTTP/1.1\r\nHost: foo\r\n\r\n", NULL },
		{ "http10_no_host", "a", "GET /api/z HTTP/1.0\r\n\r\n", "api" },
	};
	struct lb_conf *c;
	int rc = conf_parse(conf_routes, &c);
	begin();
	CHECK(rc == 0 && c, "route config: expected 0, got %d: %s", rc, errs_str());
	end("route/config_parses");
	if (rc != 0 || !c)
		return;
	for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
		size_t len = strlen(t[i].raw);
		char *b = dupbuf(t[i].raw, len);
		struct lb_req req;
		char host[LB_HOST_MAX], *path = NULL;
		begin();
		memset(&req, 0, sizeof req);
		int prc = lb_parse_request(b, len, &req);
		CHECK(prc == (int)len, "lb_parse_request: expected %zu, got %d", len, prc);
		if (prc > 0) {
			size_t hl = req.host.n < sizeof host ? req.host.n : sizeof host - 1;
			for (size_t j = 0; j < hl; j++) {
				char ch = req.host.p[j];
				host[j] = (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch;
			}
			host[hl] = 0;
			path = malloc(req.path.n ? req.path.n : 1);
			if (!path)
				exit(2);
			long pl = lb_normalize_path(req.path.p, req.path.n, path);
			CHECK(pl >= 0, "lb_normalize_path(%s) failed: %ld", S(req.path), pl);
			int li = find_listener(c, t[i].listener);
			if (pl >= 0 && li >= 0) {
				int r = lb_route_find(c, li, &req, host, hl, path, (size_t)pl);
				int exp = -1;
				if (t[i].route)
					for (size_t j = 0; j < c->nroutes; j++)
						if (strcmp(c->routes[j].name, t[i].route) == 0) {
							exp = (int)j;
							break;
						}
				CHECK(r == exp, "expected %s (%d), got %s (%d)", t[i].route ? t[i].route : "none", exp,
				      r >= 0 && (size_t)r < c->nroutes ? c->routes[r].name : "none", r);
			}
			free(path);
		}
		free(b);
		end("route/%s", t[i].name);
	}

	/* lb_route_pool: a plain route gives its pool, a split route 90/10 */
	begin();
	{
		int pp = find_pool(c, "p"), pq = find_pool(c, "q");
		const struct lb_route *plain = NULL, *split = NULL;
		for (size_t j = 0; j < c->nroutes; j++) {
			if (strcmp(c->routes[j].name, "api") == 0) plain = &c->routes[j];
			if (strcmp(c->routes[j].name, "split") == 0) split = &c->routes[j];
		}
		CHECK(plain && split, "routes api/split not found");
		if (plain && split) {
			struct lb_split_rt srt = { { 0 }, { 0 } };
			for (size_t j = 0; j < split->nsplit; j++)
				srt.weight[j] = split->split[j].weight; /* as lb starts: the configured weights */
			int r = lb_route_pool(plain, &srt);
			CHECK(r == pp, "plain route: expected pool %d, got %d", pp, r);
			long np = 0, nq = 0;
			for (int i = 0; i < 1000; i++) {
				r = lb_route_pool(split, &srt);
				np += r == pp;
				nq += r == pq;
			}
			CHECK(np >= 890 && np <= 910 && nq >= 90 && nq <= 110 && np + nq == 1000,
			      "split 90/10 over 1000: got %ld/%ld", np, nq);
			/* the weights in effect are the ones given (the admin API's in lb), not the file's */
			for (size_t j = 0; j < split->nsplit; j++)
				srt.weight[j] = split->split[j].pool == pq ? 100 : 0;
			nq = 0;
			for (int i = 0; i < 100; i++)
				nq += lb_route_pool(split, &srt) == pq;
			CHECK(nq == 100, "split weights set to 0/100: q got %ld of 100", nq);
		}
	}
	end("route/route_pool_split");
	lb_conf_free(c);
}

/* ------------------------------------------------------------------ main */


/* ------------------------------------------------------------------ X.509 names, SNI, ACME tokens */

/* openssl req -x509 -set_serial 0x0123456789ABCDEF01 -subj "/O=Unit/CN=main.test"
 *   -addext "subjectAltName=DNS:Main.Test,DNS:*.wild.test,IP:127.0.0.1,DNS:bad name" (P-256) */
static const unsigned char x509_san[] = {
0x30, 0x82, 0x01, 0xc5, 0x30, 0x82, 0x01, 0x6b, 0xa0, 0x03, 0x02, 0x01,
  0x02, 0x02, 0x09, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01,
  0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
  0x30, 0x23, 0x31, 0x0d, 0x30, 0x0b, 0x06, 0x03, 0x55, 0x04, 0x0a, 0x0c,
  0x04, 0x55, 0x6e, 0x69, 0x74, 0x31, 0x12, 0x30, 0x10, 0x06, 0x03, 0x55,
  0x04, 0x03, 0x0c, 0x09, 0x6d, 0x61, 0x69, 0x6e, 0x2e, 0x74, 0x65, 0x73,
  0x74, 0x30, 0x1e, 0x17, 0x0d, 0x32, 0x36, 0x31, 0x31, 0x32, 0x34, 0x30,
  0x32, 0x31, 0x37, 0x34, 0x33, 0x5a, 0x17, 0x0d, 0x32, 0x37, 0x31, 0x32,
  0x32, 0x39, 0x30, 0x32, 0x31, 0x37, 0x34, 0x33, 0x5a, 0x30, 0x23, 0x31,
  0x0d, 0x30, 0x0b, 0x06, 0x03, 0x55, 0x04, 0x0a, 0x0c, 0x04, 0x55, 0x6e,
  0x69, 0x74, 0x31, 0x12, 0x30, 0x10, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c,
  0x09, 0x6d, 0x61, 0x69, 0x6e, 0x2e, 0x74, 0x65, 0x73, 0x74, 0x30, 0x59,
  0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
  0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
  0x04, 0xbb, 0xf9, 0x91, 0xcd, 0x25, 0xe3, 0x20, 0x80, 0x99, 0xa7, 0x54,
  0x26, 0x9a, 0xeb, 0x68, 0xa6, 0xff, 0x5d, 0x55, 0xe4, 0x41, 0x19, 0x27,
  0xc5, 0x5b, 0x70, 0x97, 0xc3, 0xad, 0x96, 0x97, 0x69, 0x06, 0x4f, 0x28,
  0x16, 0xf4, 0x3d, 0xe5, 0x8f, 0xb9, 0x45, 0xee, 0x6b, 0x2b, 0x48, 0xf2,
  0x13, 0xd6, 0x89, 0xdf, 0xd8, 0x89, 0xed, 0x61, 0xb9, 0xbc, 0x0a, 0xf4,
  0x7a, 0x80, 0x93, 0x84, 0xa8, 0xa3, 0x81, 0x87, 0x30, 0x81, 0x84, 0x30,
  0x1d, 0x06, 0x03, 0x55, 0x1d, 0x0e, 0x04, 0x16, 0x04, 0x14, 0xe0, 0x3c,
  0xc2, 0xb0, 0x1c, 0x45, 0x2b, 0x8d, 0x5d, 0x73, 0xf5, 0xfe, 0xca, 0x22,
  0x46, 0x2a, 0xac, 0x09, 0xf5, 0x62, 0x30, 0x1f, 0x06, 0x03, 0x55, 0x1d,
  0x23, 0x04, 0x18, 0x30, 0x16, 0x80, 0x14, 0xe0, 0x3c, 0xc2, 0xb0, 0x1c,
  0x45, 0x2b, 0x8d, 0x5d, 0x73, 0xf5, 0xfe, 0xca, 0x22, 0x46, 0x2a, 0xac,
  0x09, 0xf5, 0x62, 0x30, 0x0f, 0x06, 0x03, 0x55, 0x1d, 0x13, 0x01, 0x01,
  0xff, 0x04, 0x05, 0x30, 0x03, 0x01, 0x01, 0xff, 0x30, 0x31, 0x06, 0x03,
  0x55, 0x1d, 0x11, 0x04, 0x2a, 0x30, 0x28, 0x82, 0x09, 0x4d, 0x61, 0x69,
  0x6e, 0x2e, 0x54, 0x65, 0x73, 0x74, 0x82, 0x0b, 0x2a, 0x2e, 0x77, 0x69,
  0x6c, 0x64, 0x2e, 0x74, 0x65, 0x73, 0x74, 0x87, 0x04, 0x7f, 0x00, 0x00,
  0x01, 0x82, 0x08, 0x62, 0x61, 0x64, 0x20, 0x6e, 0x61, 0x6d, 0x65, 0x30,
  0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02, 0x03,
  0x48, 0x00, 0x30, 0x45, 0x02, 0x20, 0x0b, 0x81, 0xe1, 0xf6, 0x9f, 0x92,
  0x5a, 0xd5, 0x21, 0x95, 0xcb, 0x42, 0x90, 0x13, 0xa5, 0xa1, 0xc8, 0x72,
  0x8d, 0xad, 0x18, 0x14, 0xef, 0x7f, 0x78, 0xb0, 0x13, 0xa6, 0x44, 0xc1,
  0x8f, 0x08, 0x02, 0x21, 0x00, 0xec, 0xfb, 0x5d, 0xf6, 0xad, 0x51, 0x74,
  0x81, 0xef, 0x83, 0x93, 0x08, 0x41, 0x1d, 0x05, 0x72, 0x7a, 0x34, 0x61,
  0x18, 0x11, 0xcc, 0xbd, 0xa5, 0x63, 0x4c, 0x56, 0xaf, 0x73, 0x34, 0xe9,
  0xc4
};
/* the same with -subj /CN=cn-only.test, no subjectAltName, serial 7 */
static const unsigned char x509_cn_only[] = {
0x30, 0x82, 0x01, 0x70, 0x30, 0x82, 0x01, 0x16, 0xa0, 0x03, 0x02, 0x01,
  0x02, 0x02, 0x01, 0x07, 0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
  0x3d, 0x04, 0x03, 0x02, 0x30, 0x17, 0x31, 0x15, 0x30, 0x13, 0x06, 0x03,
  0x55, 0x04, 0x03, 0x0c, 0x0c, 0x63, 0x6e, 0x2d, 0x6f, 0x6e, 0x6c, 0x79,
  0x2e, 0x74, 0x65, 0x73, 0x74, 0x30, 0x1e, 0x17, 0x0d, 0x32, 0x36, 0x31,
  0x31, 0x32, 0x34, 0x30, 0x32, 0x31, 0x37, 0x34, 0x33, 0x5a, 0x17, 0x0d,
  0x32, 0x36, 0x31, 0x32, 0x30, 0x34, 0x30, 0x32, 0x31, 0x37, 0x34, 0x33,
  0x5a, 0x30, 0x17, 0x31, 0x15, 0x30, 0x13, 0x06, 0x03, 0x55, 0x04, 0x03,
  0x0c, 0x0c, 0x63, 0x6e, 0x2d, 0x6f, 0x6e, 0x6c, 0x79, 0x2e, 0x74, 0x65,
  0x73, 0x74, 0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce,
  0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01,
  0x07, 0x03, 0x42, 0x00, 0x04, 0xc9, 0xed, 0x47, 0x6c, 0x2c, 0xc8, 0x4e,
  0x54, 0xfe, 0xd7, 0x35, 0x81, 0xbd, 0x15, 0x8d, 0x06, 0x1b, 0x89, 0x49,
  0x3f, 0x5a, 0x55, 0x74, 0x28, 0xc7, 0xa9, 0x4a, 0x1b, 0x9d, 0x59, 0x44,
  0x75, 0xbf, 0xb9, 0x16, 0xe9, 0x03, 0x71, 0x65, 0x5d, 0x55, 0x4b, 0xb5,
  0x71, 0xbd, 0xbd, 0xaa, 0xd6, 0x9f, 0x24, 0xa4, 0xa8, 0xad, 0x36, 0x8e,
  0x4f, 0xf0, 0x00, 0xeb, 0x2b, 0x62, 0x37, 0x70, 0xd3, 0xa3, 0x53, 0x30,
  0x51, 0x30, 0x1d, 0x06, 0x03, 0x55, 0x1d, 0x0e, 0x04, 0x16, 0x04, 0x14,
  0x03, 0x5d, 0xee, 0x00, 0x87, 0x58, 0x49, 0x59, 0x8a, 0x89, 0x80, 0x56,
  0xf5, 0x0d, 0xd3, 0x13, 0xd7, 0xcf, 0x46, 0xbf, 0x30, 0x1f, 0x06, 0x03,
  0x55, 0x1d, 0x23, 0x04, 0x18, 0x30, 0x16, 0x80, 0x14, 0x03, 0x5d, 0xee,
  0x00, 0x87, 0x58, 0x49, 0x59, 0x8a, 0x89, 0x80, 0x56, 0xf5, 0x0d, 0xd3,
  0x13, 0xd7, 0xcf, 0x46, 0xbf, 0x30, 0x0f, 0x06, 0x03, 0x55, 0x1d, 0x13,
  0x01, 0x01, 0xff, 0x04, 0x05, 0x30, 0x03, 0x01, 0x01, 0xff, 0x30, 0x0a,
  0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02, 0x03, 0x48,
  0x00, 0x30, 0x45, 0x02, 0x21, 0x00, 0xf0, 0x7b, 0xcc, 0xcb, 0x1e, 0xc9,
  0x69, 0xce, 0xd2, 0x92, 0xfb, 0x2a, 0x5b, 0x80, 0x90, 0xd4, 0x83, 0xe5,
  0x5b, 0x8f, 0x45, 0x65, 0xbf, 0xc5, 0xbb, 0x09, 0x40, 0x7b, 0x72, 0xa5,
  0xa9, 0x39, 0x02, 0x20, 0x4f, 0xb1, 0x19, 0x9b, 0x1f, 0xe3, 0xeb, 0x4a,
  0x52, 0xcd, 0xba, 0xfd, 0xc1, 0xf3, 0x8b, 0xce, 0x77, 0x2d, 0xd8, 0xd3,
  0x06, 0x41, 0x69, 0x46, 0xcd, 0x30, 0xea, 0x0b, 0xa5, 0x5f, 0xd7, 0x69
};

static void test_x509(void)
{
	struct lb_x509_info xi;
	begin();
	CHECK(lb_x509_info(x509_san, sizeof x509_san, &xi) == 0, "rc: %s", xi.error ? xi.error : "?");
	CHECK(xi.nnames == 2, "names %zu", xi.nnames);
	CHECK(!strcmp(xi.names[0], "main.test") && !strcmp(xi.names[1], "*.wild.test"), "names %s %s", xi.names[0], xi.names[1]);
	CHECK(!strcmp(xi.cn, "main.test"), "cn %s", xi.cn);
	CHECK(!strcmp(xi.serial, "0123456789ABCDEF01"), "serial %s", xi.serial);
	CHECK(xi.not_after == 1830046663, "notAfter %lld", (long long)xi.not_after);
	CHECK(xi.not_before == 1830046663 - 400 * 86400, "notBefore %lld", (long long)xi.not_before);
	end("x509/san_names_serial_dates");

	begin();
	CHECK(lb_x509_info(x509_cn_only, sizeof x509_cn_only, &xi) == 0, "rc");
	CHECK(xi.nnames == 1 && !strcmp(xi.names[0], "cn-only.test"), "names %zu %s", xi.nnames, xi.names[0]);
	CHECK(!strcmp(xi.serial, "07") && xi.not_after == 1796350663, "serial %s notAfter %lld", xi.serial, (long long)xi.not_after);
	end("x509/cn_when_no_san");

	begin(); /* every truncation and every single-byte change: an answer, never a crash */
	unsigned char m[sizeof x509_san];
	for (size_t n = 0; n < sizeof x509_san; n++)
		CHECK(lb_x509_info(x509_san, n, &xi) == LB_EINVAL, "truncated at %zu accepted", n);
	for (size_t i = 0; i < sizeof x509_san; i++) {
		memcpy(m, x509_san, sizeof m);
		m[i] ^= 0xff;
		int rc = lb_x509_info(m, sizeof m, &xi);
		CHECK(rc == 0 || rc == LB_EINVAL, "rc %d", rc);
		CHECK(xi.nnames <= LB_CERT_NAMES, "names");
	}
	end("x509/truncated_and_mutated");

	begin();
	CHECK(lb_cert_name_match("a.test", "a.test", 6), "exact");
	CHECK(lb_cert_name_match("a.test", "A.TEST", 6), "case");
	CHECK(!lb_cert_name_match("a.test", "b.test", 6), "other");
	CHECK(lb_cert_name_match("*.wild.test", "x.wild.test", 11), "wildcard");
	CHECK(!lb_cert_name_match("*.wild.test", "wild.test", 9), "wildcard needs a label");
	CHECK(!lb_cert_name_match("*.wild.test", "a.b.wild.test", 13), "wildcard is one label");
	CHECK(!lb_cert_name_match("*.wild.test", ".wild.test", 10), "empty label");
	CHECK(!lb_cert_name_match("*.wild.test", "xwild.test", 10), "suffix without dot");
	end("x509/name_match");

	begin();
	const char *tok;
	CHECK(lb_acme_token("/.well-known/acme-challenge/AbC-_9", 34, &tok) == 6 && !memcmp(tok, "AbC-_9", 6), "good token");
	CHECK(lb_acme_token("/index.html", 11, &tok) == 0 && !tok, "other path");
	CHECK(lb_acme_token("/.well-known/acme-challenge/", 28, &tok) == LB_EINVAL, "empty token");
	CHECK(lb_acme_token("/.well-known/acme-challenge/../x", 32, &tok) == LB_EINVAL, "dot dot");
	CHECK(lb_acme_token("/.well-known/acme-challenge/a/b", 31, &tok) == LB_EINVAL, "slash");
	CHECK(lb_acme_token("/.well-known/acme-challenge/%2e%2e", 34, &tok) == LB_EINVAL, "encoded");
	CHECK(lb_acme_token("/.well-known/acme-challenge/a.txt", 33, &tok) == LB_EINVAL, "dot");
	char longp[200];
	memcpy(longp, LB_ACME_PREFIX, 28);
	memset(longp + 28, 'a', 150);
	CHECK(lb_acme_token(longp, 28 + LB_ACME_TOKEN_MAX, &tok) == LB_ACME_TOKEN_MAX, "longest token");
	CHECK(lb_acme_token(longp, 29 + LB_ACME_TOKEN_MAX, &tok) == LB_EINVAL, "token too long");
	end("acme/token");
}

/* Every reason of lb_tls_handshake_failures_total from the BearSSL error codes a server engine
 * reports: an alert lb sent (BR_ERR_SEND_FATAL_ALERT + alert), one the client sent
 * (BR_ERR_RECV_FATAL_ALERT + alert), X.509 codes (only on a client_ca listener), the rest. */
static void test_tls_fail_classify(void)
{
	static const struct {
		int err, client_ca, no_curve, reason;
		const char *text; /* a part of the log text */
	} k[] = {
		{ BR_ERR_SEND_FATAL_ALERT + 70, 0, 0, LB_TLS_F_PROTOCOL_VERSION, "does not offer TLS 1.2" }, /* -tls1_1 */
		{ BR_ERR_SEND_FATAL_ALERT + 70, 1, 0, LB_TLS_F_PROTOCOL_VERSION, "alert 70 protocol_version" },
		{ BR_ERR_SEND_FATAL_ALERT + 86, 0, 0, LB_TLS_F_PROTOCOL_VERSION, "inappropriate_fallback" },
		{ BR_ERR_RECV_FATAL_ALERT + 70, 0, 0, LB_TLS_F_PROTOCOL_VERSION, "the client sent fatal alert 70" },
		{ BR_ERR_SEND_FATAL_ALERT + 40, 0, 0, LB_TLS_F_NO_SHARED_CIPHER, "no cipher suite in common" },
		{ BR_ERR_SEND_FATAL_ALERT + 40, 1, 1, LB_TLS_F_NO_SHARED_CIPHER, "no elliptic curve in common" },
		{ BR_ERR_UNSUPPORTED_VERSION, 0, 0, LB_TLS_F_BAD_RECORD, "not a TLS client" }, /* plain HTTP */
		{ BR_ERR_UNKNOWN_TYPE, 0, 0, LB_TLS_F_BAD_RECORD, "bad record header" },
		{ BR_ERR_BAD_LENGTH, 1, 0, LB_TLS_F_BAD_RECORD, "bad record header" },
		{ BR_ERR_BAD_MAC, 0, 0, LB_TLS_F_BAD_RECORD, "MAC" },
		{ BR_ERR_TOO_LARGE, 0, 0, LB_TLS_F_BAD_RECORD, "too large" },
		{ BR_ERR_BAD_HANDSHAKE, 0, 0, LB_TLS_F_PROTOCOL, "malformed or unexpected" },
		{ BR_ERR_SEND_FATAL_ALERT + 120, 0, 0, LB_TLS_F_PROTOCOL, "lb sent fatal alert 120 (no_application_protocol" },
		{ BR_ERR_BAD_SIGNATURE, 0, 0, LB_TLS_F_PROTOCOL, "bad signature" },
		{ BR_ERR_NO_RANDOM, 0, 0, LB_TLS_F_PROTOCOL, "entropy" },
		{ 11, 0, 0, LB_TLS_F_PROTOCOL, "BearSSL error 11" },
		{ BR_ERR_RECV_FATAL_ALERT + 48, 0, 0, LB_TLS_F_ALERT, "fatal alert 48 (unknown_ca: it does not trust" },
		{ BR_ERR_RECV_FATAL_ALERT + 42, 1, 0, LB_TLS_F_ALERT, "fatal alert 42 (bad_certificate" },
		{ BR_ERR_RECV_FATAL_ALERT + 201, 0, 0, LB_TLS_F_ALERT, "fatal alert 201 (unknown alert)" },
		{ BR_ERR_X509_NOT_TRUSTED, 1, 0, LB_TLS_F_CLIENT_CERT, "not signed by client_ca" },
		{ BR_ERR_X509_EXPIRED, 1, 0, LB_TLS_F_CLIENT_CERT, "expired" },
		{ BR_ERR_NO_CLIENT_AUTH, 1, 0, LB_TLS_F_CLIENT_CERT, "no client certificate" },
		{ BR_ERR_BAD_SIGNATURE, 1, 0, LB_TLS_F_CLIENT_CERT, "CertificateVerify" },
		{ BR_ERR_X509_BAD_TIME, 1, 0, LB_TLS_F_CLIENT_CERT, "BearSSL X.509 error 48" },
		/* an X.509 code where no client certificate is asked for is not a certificate failure */
		{ BR_ERR_X509_NOT_TRUSTED, 0, 0, LB_TLS_F_PROTOCOL, "without client_ca" },
	};
	int seen[LB_TLS_F_N] = { 0 };
	seen[LB_TLS_F_TIMEOUT] = seen[LB_TLS_F_CLOSED] = 1; /* the caller's: no BearSSL code */
	begin();
	for (size_t i = 0; i < sizeof k / sizeof *k; i++) {
		char text[200] = "";
		int r = lb_tls_fail_classify(k[i].err, k[i].client_ca, k[i].no_curve, text, sizeof text);
		CHECK(r == k[i].reason, "error %d (client_ca %d): reason %s, want %s (%s)", k[i].err, k[i].client_ca,
		      lb_tls_fail_name(r), lb_tls_fail_name(k[i].reason), text);
		CHECK(strstr(text, k[i].text), "error %d: text \"%s\" lacks \"%s\"", k[i].err, text, k[i].text);
		if (r >= 0 && r < LB_TLS_F_N)
			seen[r] = 1;
	}
	for (int r = 0; r < LB_TLS_F_N; r++)
		CHECK(seen[r], "reason %s not covered", lb_tls_fail_name(r));
	end("tls/fail_classify");

	begin(); /* the labels of the metric: distinct, Prometheus-safe */
	for (int r = 0; r < LB_TLS_F_N; r++) {
		const char *n = lb_tls_fail_name(r);
		CHECK(n && strspn(n, "abcdefghijklmnopqrstuvwxyz_") == strlen(n) && *n, "label %d: %s", r, n);
		for (int q = 0; q < r; q++)
			CHECK(strcmp(n, lb_tls_fail_name(q)), "label %s twice", n);
	}
	char small[8];
	lb_tls_fail_classify(BR_ERR_SEND_FATAL_ALERT + 40, 0, 0, small, sizeof small);
	CHECK(strlen(small) == sizeof small - 1, "a small buffer: %s", small);
	end("tls/fail_labels");
}

/* The kernel's entropy reaches every engine before its reset: the engine's HMAC-DRBG is then
 * already marked seeded (rng_init_done 2, which only injected entropy sets before a reset) and
 * its state is neither the empty-seed state nor another engine's. */
static int drbg_is_empty_seed(const br_hmac_drbg_context *rng)
{
	br_hmac_drbg_context empty;
	br_hmac_drbg_init(&empty, &br_sha256_vtable, NULL, 0);
	return !memcmp(rng->K, empty.K, sizeof empty.K) && !memcmp(rng->V, empty.V, sizeof empty.V);
}

static void test_tls_entropy(void)
{
	unsigned char a[32], b[32], zero[32] = { 0 };
	begin();
	memset(a, 0, sizeof a);
	memset(b, 0, sizeof b);
	CHECK(lb_os_entropy(a, sizeof a) == 0 && lb_os_entropy(b, sizeof b) == 0, "lb_os_entropy failed");
	CHECK(memcmp(a, zero, sizeof a) && memcmp(b, zero, sizeof b) && memcmp(a, b, sizeof a), "getrandom bytes");
	memset(a, 0, sizeof a);
	CHECK(lb_urandom_entropy(a, sizeof a) == 0 && memcmp(a, zero, sizeof a), "/dev/urandom bytes");
	unsigned char big[1000];
	memset(big, 0, sizeof big);
	CHECK(lb_os_entropy(big, sizeof big) == 0 && memcmp(big + sizeof big - 32, zero, 32), "1000 bytes");
	end("tls/os_entropy");

	static br_ssl_server_context sc[2];
	static unsigned char buf[2][BR_SSL_BUFSIZE_BIDI];
	begin();
	for (int i = 0; i < 2; i++) {
		CHECK(lb_tls_server_engine(&sc[i], buf[i], sizeof buf[i], i) == 0, "server engine %d", i);
		CHECK(sc[i].eng.rng_init_done == 2, "server engine %d: DRBG not seeded before its reset (%d)", i,
		      sc[i].eng.rng_init_done);
		CHECK(!drbg_is_empty_seed(&sc[i].eng.rng), "server engine %d: DRBG state is the empty seed's", i);
	}
	CHECK(memcmp(sc[0].eng.rng.V, sc[1].eng.rng.V, sizeof sc[0].eng.rng.V), "two server engines, one DRBG state");
	br_ssl_server_init_full_ec(&sc[0], NULL, 0, BR_KEYTYPE_EC, NULL); /* the same engine, BearSSL's setup only */
	CHECK(sc[0].eng.rng_init_done == 0, "without lb the DRBG is not seeded before reset (%d)", sc[0].eng.rng_init_done);
	end("tls/server_engine_entropy");

	static br_ssl_client_context cc[2];
	static br_x509_minimal_context xc[2];
	begin();
	for (int i = 0; i < 2; i++) {
		CHECK(lb_tls_client_engine(&cc[i], &xc[i], NULL, 0, buf[i], sizeof buf[i]) == 0, "client engine %d", i);
		CHECK(cc[i].eng.rng_init_done == 2, "client engine %d: DRBG not seeded before its reset (%d)", i,
		      cc[i].eng.rng_init_done);
		CHECK(!drbg_is_empty_seed(&cc[i].eng.rng), "client engine %d: DRBG state is the empty seed's", i);
	}
	CHECK(memcmp(cc[0].eng.rng.V, cc[1].eng.rng.V, sizeof cc[0].eng.rng.V), "two client engines, one DRBG state");
	CHECK(br_ssl_client_reset(&cc[0], "a.test", 0), "client reset: %d", br_ssl_engine_last_error(&cc[0].eng));
	end("tls/client_engine_entropy");
}

/* ------------------------------------------------------------------ descriptors and repeated log lines */

static void test_fd_budget(void)
{
	struct lb_conf *c;
	begin();
	int rc = conf_parse("[global]\nmax_connections = 1000\n[listener web]\nbind = 127.0.0.1:8080, 127.0.0.1:8081\n"
	                    "pool = p\n[pool p]\nserver = a 127.0.0.1:9001\nserver = b 127.0.0.1:9002\n"
	                    "[pool q]\nhealth_check = off\nserver = c 127.0.0.1:9003\n", &c);
	CHECK(rc == 0 && c, "expected 0, got %d: %s", rc, errs_str());
	if (rc == 0 && c) {
		CHECK(lb_conf_given(c->given_global, "global", "max_connections"), "max_connections: not marked given");
		/* 32 fixed, 2 binds, 2 checked servers (pool q checks none) */
		unsigned long r = lb_fd_reserve(c);
		CHECK(r == 36, "reserve: expected 36, got %lu", r);
		CHECK(lb_fd_needed(c) == 36 + 2000, "needed: expected 2036, got %lu", lb_fd_needed(c));
		CHECK(lb_conns_for_fds(c, 256) == 110, "256 fds: expected 110 connections, got %u", lb_conns_for_fds(c, 256));
		CHECK(lb_conns_for_fds(c, 2036) == 1000, "2036 fds: expected 1000, got %u", lb_conns_for_fds(c, 2036));
		CHECK(lb_conns_for_fds(c, 2035) == 999, "2035 fds: expected 999, got %u", lb_conns_for_fds(c, 2035));
		CHECK(lb_conns_for_fds(c, 1000000) == 1000, "a high limit: expected max_connections, got %u",
		      lb_conns_for_fds(c, 1000000));
		CHECK(lb_conns_for_fds(c, 20) == 1, "fewer fds than the reserve: expected 1, got %u", lb_conns_for_fds(c, 20));
		lb_conf_free(c);
	}
	rc = conf_parse(conf_min, &c);
	if (rc == 0 && c) {
		CHECK(!lb_conf_given(c->given_global, "global", "max_connections"), "default max_connections: marked given");
		lb_conf_free(c);
	}
	end("fd budget: max_connections against RLIMIT_NOFILE");
}

static void test_throttle(void)
{
	struct lb_throttle t;
	uint64_t q = 99, span = 99;
	begin();
	memset(&t, 0, sizeof t);
	CHECK(lb_throttle_pass(&t, 5000, 1000, &q, &span) == 1 && q == 0 && span == 0, "first event: pass, 0 quiet");
	int passed = 0;
	for (uint64_t now = 5001; now < 6000; now++)
		passed += lb_throttle_pass(&t, now, 1000, &q, &span);
	CHECK(passed == 0, "999 events within the second: expected none passed, got %d", passed);
	CHECK(t.quiet == 999, "counted: expected 999, got %llu", (unsigned long long)t.quiet);
	CHECK(lb_throttle_pass(&t, 6000, 1000, &q, &span) == 1, "a second later: pass");
	CHECK(q == 999 && span == 1000, "reported: expected 999 in 1000 ms, got %llu in %llu ms", (unsigned long long)q,
	      (unsigned long long)span);
	CHECK(t.quiet == 0 && t.last == 6000, "restarted: quiet %llu last %llu", (unsigned long long)t.quiet,
	      (unsigned long long)t.last);
	CHECK(lb_throttle_pass(&t, 9000, 1000, &q, &span) == 1 && q == 0 && span == 3000, "after a quiet spell: pass, 0");
	/* a flood of 10 s at one event per ms: one line a second */
	memset(&t, 0, sizeof t);
	uint64_t lines = 0, total = 0;
	for (uint64_t now = 1; now <= 10000; now++)
		if (lb_throttle_pass(&t, now, 1000, &q, &span)) {
			lines++;
			total += q + 1;
		}
	total += t.quiet;
	CHECK(lines == 10, "10 s flood: expected 10 lines, got %llu", (unsigned long long)lines);
	CHECK(total == 10000, "10 s flood: every event counted: expected 10000, got %llu", (unsigned long long)total);
	end("throttle: one line a second, the rest counted");
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	alarm(300); /* a hang in lb.c ends the run instead of blocking it */
	build_chunk_inputs();
	build_conf_inputs();

	test_request_table();
	test_request_details();
	test_request_reuse();
	test_header_find();
	test_header_id();
	test_response_table();
	test_resp_has_body();
	test_chunk_table();
	test_durations();
	test_sizes();
	test_bools();
	test_hostports();
	test_servers();
	test_normalize();
	test_request_id();
	test_log_template();
	test_json_tokens();
	test_jdoc();
	test_hash();
	test_conf_full();
	test_conf_defaults();
	test_conf_scaler();
	test_conf_errors();
	test_conf_limits();
	test_conf_route_overrides();
	test_conf_keys_table();
	test_conf_resolve();
	test_rr_weights();
	test_unusable_never_picked();
	test_backup();
	test_least_conn();
	test_random2();
	test_ip_hash();
	test_pick_none();
	test_pick_weight_in_state();
	test_pick_state();
	test_routes();
	test_conf_sticky();
	test_conf_http2();
	test_conf_keepalive();
	test_conf_health();
	test_cidr();
	test_proxy();
	test_admin();
	test_form_action();
	test_bucket();
	test_rate_limit_parse();
	test_x509();
	test_tls_fail_classify();
	test_tls_entropy();
	test_fd_budget();
	test_throttle();

	printf("unit: %d passed, %d failed\n", n_pass, n_fail);
	return n_fail ? 1 : 0;
}
