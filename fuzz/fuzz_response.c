/* fuzz/fuzz_response.c — libFuzzer harness for lb_parse_response.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -DLB_NO_MAIN -I. \
 *         fuzz/fuzz_response.c lb.c -o fuzz/fuzz_response -lbearssl -linih -lm
 *   ./fuzz/fuzz_response -dict=fuzz/dict/http.dict fuzz/corpus/response
 *
 * Properties (abort() on a violation), besides ASan/UBSan:
 *  - the return value is LB_EAGAIN, LB_EINVAL or a head length in 1..size;
 *  - an accepted head ends with CRLF CRLF, has status 100..999, minor 0 or 1,
 *    nheaders <= LB_MAX_HEADERS, reason and header names/values inside [data, data+ret);
 *    content_length >= -1 (>= 0 only with LB_HF_HAS_CL); never LB_HF_CHUNKED together with
 *    content_length >= 0; LB_HF_CHUNKED implies LB_HF_TE;
 *  - a refused head has a non-NULL error;
 *  - re-serialisation: the canonical form (HTTP/1.minor SP status SP reason CRLF, "name: value"
 *    CRLF each, CRLF) parses to the same minor, status, reason, headers, content_length, flags;
 *  - every proper prefix of an accepted head is LB_EAGAIN;
 *  - appending a byte does not change an accepted head's length.
 */
#include "fuzz_util.h"

static struct lb_resp resp, resp2;

static int parse(const char *buf, size_t len, struct lb_resp *r)
{
	memset(r, FZ_POISON, sizeof *r);
	return lb_parse_response(buf, len, r);
}

static void check_accepted(const char *buf, int ret, const struct lb_resp *r)
{
	size_t n = (size_t)ret;

	CHECK(n >= 4 && memcmp(buf + n - 4, "\r\n\r\n", 4) == 0);
	CHECK(r->status >= 100 && r->status <= 999);
	CHECK(r->minor == 0 || r->minor == 1);
	CHECK(r->nheaders <= LB_MAX_HEADERS);
	CHECK_STR_IN("reason", r->reason, buf, n);
	for (size_t i = 0; i < r->nheaders; i++) {
		CHECK_STR_IN("header name", r->headers[i].name, buf, n);
		CHECK_STR_IN("header value", r->headers[i].value, buf, n);
		CHECK(r->headers[i].name.n > 0);
		CHECK(r->headers[i].id == lb_header_id(r->headers[i].name.p, r->headers[i].name.n));
	}
	if (!(r->flags & LB_HF_CHUNKED))
		CHECK(r->content_length >= -1);
	CHECK(!((r->flags & LB_HF_CHUNKED) && r->content_length >= 0));
	if (r->content_length >= 0)
		CHECK(r->flags & LB_HF_HAS_CL);
	if (r->flags & LB_HF_CHUNKED)
		CHECK(r->flags & LB_HF_TE);
}

static void serialise(struct fz_buf *b, const struct lb_resp *r)
{
	char line[32];
	snprintf(line, sizeof line, "HTTP/1.%d %03d ", r->minor, r->status);
	fz_puts(b, line);
	fz_putstr(b, r->reason);
	fz_puts(b, "\r\n");
	for (size_t i = 0; i < r->nheaders; i++) {
		fz_putstr(b, r->headers[i].name);
		fz_puts(b, ": ");
		fz_putstr(b, r->headers[i].value);
		fz_puts(b, "\r\n");
	}
	fz_puts(b, "\r\n");
}

static void check_reserialised(const char *data, int ret)
{
	struct fz_buf b = {0};
	serialise(&b, &resp);
	char *canon = fz_exact(&b);
	int ret2 = parse(canon, b.n, &resp2);

	if (ret2 != (int)b.n) {
		fprintf(stderr, "re-serialised head: returned %d (%s), expected %zu\n", ret2,
		        ret2 == LB_EINVAL && resp2.error ? resp2.error : "-", b.n);
		fprintf(stderr, "original (%d bytes): %.*s\ncanonical: %.*s\n",
		        ret, ret, data, (int)b.n, canon);
	}
	CHECK(ret2 == (int)b.n);
	check_accepted(canon, ret2, &resp2);

	CHECK(resp.minor == resp2.minor);
	CHECK(resp.status == resp2.status);
	CHECK(fz_str_eq(resp.reason, resp2.reason));
	CHECK(resp.nheaders == resp2.nheaders);
	for (size_t i = 0; i < resp.nheaders; i++) {
		CHECK(fz_str_eq(resp.headers[i].name, resp2.headers[i].name));
		CHECK(fz_str_eq(resp.headers[i].value, resp2.headers[i].value));
	}
	CHECK(resp.content_length == resp2.content_length);
	CHECK(resp.flags == resp2.flags);
	free(canon);
	free(b.p);
}

static void check_prefix(const char *data, int ret, size_t k)
{
	if (k >= (size_t)ret)
		return;
	char *p = malloc(k ? k : 1);
	if (p == NULL)
		abort();
	memcpy(p, data, k);
	int r = parse(p, k, &resp2);
	if (r != LB_EAGAIN)
		fprintf(stderr, "prefix of %zu bytes (head is %d) returned %d (%s)\n", k, ret, r,
		        r == LB_EINVAL && resp2.error ? resp2.error : "-");
	CHECK(r == LB_EAGAIN);
	free(p);
}

static void check_append(const char *data, size_t size, int ret, char extra)
{
	char *p = malloc(size + 1);
	if (p == NULL)
		abort();
	memcpy(p, data, size);
	p[size] = extra;
	int r = parse(p, size + 1, &resp2);
	CHECK(r == ret);
	free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *udata, size_t size)
{
	const char *data = (const char *)udata;
	int ret = parse(data, size, &resp);

	CHECK(ret == LB_EAGAIN || ret == LB_EINVAL || (ret >= 1 && (size_t)ret <= size));
	if (ret == LB_EAGAIN)
		return 0;
	if (ret == LB_EINVAL) {
		CHECK(resp.error != NULL);
		return 0;
	}

	check_accepted(data, ret, &resp);
	check_reserialised(data, ret);

	check_prefix(data, ret, (size_t)ret - 1);
	check_prefix(data, ret, (size_t)ret / 2);
	check_prefix(data, ret, size ? (size_t)udata[size - 1] % (size_t)ret : 0);
	check_append(data, size, ret, '\n');
	check_append(data, size, ret, size ? data[0] : 'A');
	return 0;
}
