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
	fz_check_headers(r->headers, r->nheaders, buf, n);
	fz_check_framing(r->flags, r->content_length);
}

static void serialise(struct fz_buf *b, const struct lb_resp *r)
{
	char line[32];
	snprintf(line, sizeof line, "HTTP/1.%d %03d ", r->minor, r->status);
	fz_puts(b, line);
	fz_putstr(b, r->reason);
	fz_puts(b, "\r\n");
	fz_put_headers(b, r->headers, r->nheaders);
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
	fz_check_same_headers(resp.headers, resp.nheaders, resp2.headers, resp2.nheaders);
	CHECK(resp.content_length == resp2.content_length);
	CHECK(resp.flags == resp2.flags);
	free(canon);
	free(b.p);
}

/* The scratch parse for the stability checks in fuzz_util.h. */
static int parse2(const char *buf, size_t len) { return parse(buf, len, &resp2); }
static const char *why2(void) { return resp2.error ? resp2.error : "-"; }
static const struct fz_head_parser head_parser = { parse2, why2 };

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

	fz_check_head_stable(&head_parser, data, size, ret);
	return 0;
}
