/* fuzz/fuzz_request.c — libFuzzer harness for lb_parse_request.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -DLB_NO_MAIN -I. \
 *         fuzz/fuzz_request.c lb.c -o fuzz/fuzz_request -lbearssl -linih -lm
 *   ./fuzz/fuzz_request -dict=fuzz/dict/http.dict fuzz/corpus/request
 *
 * Besides memory errors (ASan/UBSan) it checks these properties and abort()s on a violation:
 *  - the return value is LB_EAGAIN, LB_EINVAL or a head length in 1..size;
 *  - an accepted head ends with CRLF CRLF; every lb_str it reports (method, target, path, query,
 *    host, authority, upgrade, header names and values) lies inside [data, data+ret);
 *    nheaders <= LB_MAX_HEADERS; minor is 0 or 1; method_id agrees with the method;
 *    content_length >= -1 (and >= 0 only with LB_HF_HAS_CL); never LB_HF_CHUNKED together with
 *    content_length >= 0; LB_HF_CHUNKED implies LB_HF_TE; a query is preceded by '?';
 *  - a refused head has status 400, 414, 417, 431, 501 or 505 and a non-NULL error;
 *  - re-serialisation: the canonical form of an accepted head (method SP target SP HTTP/1.minor
 *    CRLF, "name: value" CRLF each, CRLF) parses to the same method, target, minor, headers,
 *    content_length, flags, path, query, host and authority;
 *  - prefixes: every proper prefix of an accepted head is LB_EAGAIN (never refused);
 *  - determinism: appending a byte to the input does not change an accepted head's length.
 */
#include "fuzz_util.h"

static const char *const method_names[] = {
	[LB_M_GET] = "GET", [LB_M_HEAD] = "HEAD", [LB_M_POST] = "POST", [LB_M_PUT] = "PUT",
	[LB_M_DELETE] = "DELETE", [LB_M_OPTIONS] = "OPTIONS", [LB_M_PATCH] = "PATCH",
	[LB_M_CONNECT] = "CONNECT", [LB_M_TRACE] = "TRACE",
};
#define NMETHODS ((int)(sizeof method_names / sizeof method_names[0]))

static struct lb_req req, req2;

static int parse(const char *buf, size_t len, struct lb_req *r)
{
	memset(r, FZ_POISON, sizeof *r);
	return lb_parse_request(buf, len, r);
}

static void check_refused(const struct lb_req *r)
{
	CHECK(r->status == 400 || r->status == 414 || r->status == 417 || r->status == 431 ||
	      r->status == 501 || r->status == 505);
	CHECK(r->error != NULL);
}

/* The properties of an accepted head of length ret inside buf. */
static void check_accepted(const char *buf, int ret, const struct lb_req *r)
{
	size_t n = (size_t)ret;

	CHECK(n >= 4 && memcmp(buf + n - 4, "\r\n\r\n", 4) == 0);
	CHECK(r->nheaders <= LB_MAX_HEADERS);
	CHECK(r->minor == 0 || r->minor == 1);

	CHECK_STR_IN("method", r->method, buf, n);
	CHECK_STR_IN("target", r->target, buf, n);
	CHECK_STR_IN("path", r->path, buf, n);
	CHECK_STR_IN("query", r->query, buf, n);
	CHECK_STR_IN("host", r->host, buf, n);
	CHECK_STR_IN("authority", r->authority, buf, n);
	if (r->flags & LB_HF_UPGRADE)
		CHECK_STR_IN("upgrade", r->upgrade, buf, n);
	fz_check_headers(r->headers, r->nheaders, buf, n);
	CHECK(r->method.n > 0);
	CHECK(r->target.n > 0);
	if (r->query.p != NULL && r->query.p > buf)
		CHECK(r->query.p[-1] == '?');
	CHECK(r->query.p != NULL || r->query.n == 0);

	/* method_id and the method agree (methods are case-sensitive). */
	CHECK(r->method_id >= 0 && r->method_id < NMETHODS);
	if (r->method_id != LB_M_OTHER)
		CHECK(fz_str_is(r->method, method_names[r->method_id]));
	for (int m = 1; m < NMETHODS; m++)
		if (fz_str_is(r->method, method_names[m]))
			CHECK(r->method_id == m);

	fz_check_framing(r->flags, r->content_length);
}

/* Canonical form of an accepted head. */
static void serialise(struct fz_buf *b, const struct lb_req *r)
{
	fz_putstr(b, r->method);
	fz_puts(b, " ");
	fz_putstr(b, r->target);
	fz_puts(b, r->minor ? " HTTP/1.1\r\n" : " HTTP/1.0\r\n");
	fz_put_headers(b, r->headers, r->nheaders);
}

static void check_reserialised(const char *data, int ret)
{
	struct fz_buf b = {0};
	serialise(&b, &req);
	char *canon = fz_exact(&b);
	int ret2 = parse(canon, b.n, &req2);

	/* The canonical head adds a space after each colon, so it may be longer than the original;
	 * only a size limit (431) may tell them apart, and only then. */
	if (ret2 == LB_EINVAL && req2.status == 431 && b.n > (size_t)ret)
		goto out;
	if (ret2 != (int)b.n) {
		fprintf(stderr, "re-serialised head: returned %d (status %d, %s), expected %zu\n",
		        ret2, ret2 == LB_EINVAL ? req2.status : 0,
		        ret2 == LB_EINVAL && req2.error ? req2.error : "-", b.n);
		fprintf(stderr, "original (%d bytes): %.*s\ncanonical: %.*s\n",
		        ret, ret, data, (int)b.n, canon);
	}
	CHECK(ret2 == (int)b.n);
	check_accepted(canon, ret2, &req2);

	CHECK(fz_str_eq(req.method, req2.method));
	CHECK(req.method_id == req2.method_id);
	CHECK(fz_str_eq(req.target, req2.target));
	CHECK(req.minor == req2.minor);
	fz_check_same_headers(req.headers, req.nheaders, req2.headers, req2.nheaders);
	CHECK(req.content_length == req2.content_length);
	CHECK(req.flags == req2.flags);
	CHECK(fz_str_eq(req.path, req2.path));
	CHECK(fz_str_eq(req.query, req2.query));
	CHECK((req.query.p == NULL) == (req2.query.p == NULL));
	CHECK(fz_str_eq(req.host, req2.host));
	CHECK(fz_str_eq(req.authority, req2.authority));
	if (req.flags & LB_HF_UPGRADE)
		CHECK(fz_str_eq(req.upgrade, req2.upgrade));
out:
	free(canon);
	free(b.p);
}

/* The scratch parse for the stability checks in fuzz_util.h. */
static int parse2(const char *buf, size_t len) { return parse(buf, len, &req2); }

static const char *why2(void)
{
	static char why[160];
	snprintf(why, sizeof why, "status %d: %s", req2.status, req2.error ? req2.error : "-");
	return why;
}

static const struct fz_head_parser head_parser = { parse2, why2 };

int LLVMFuzzerTestOneInput(const uint8_t *udata, size_t size)
{
	const char *data = (const char *)udata;
	int ret = parse(data, size, &req);

	CHECK(ret == LB_EAGAIN || ret == LB_EINVAL || (ret >= 1 && (size_t)ret <= size));
	if (ret == LB_EAGAIN)
		return 0;
	if (ret == LB_EINVAL) {
		check_refused(&req);
		return 0;
	}

	check_accepted(data, ret, &req);
	check_reserialised(data, ret);

	/* req is overwritten below: everything that needs it is done. */
	fz_check_head_stable(&head_parser, data, size, ret);
	return 0;
}
