/* fuzz/fuzz_proxy.c — libFuzzer harness for the PROXY protocol v1/v2 parser and builder.
 *
 *   make fuzz/fuzz_proxy && ./fuzz/fuzz_proxy -dict=fuzz/dict/proxy.dict fuzz/corpus/proxy
 *
 * The first byte picks the versions accepted (1, 2 or both); the rest is what a trusted proxy
 * sent. Properties (abort() on a violation):
 *  - the result is a length in 1..len, LB_EAGAIN or LB_EINVAL; LB_EINVAL always names a reason;
 *  - a v1 header is at most LB_PROXY_V1_MAX bytes, a v2 header at most LB_PROXY_V2_MAX;
 *  - an accepted header is accepted identically with any bytes after it, and every proper
 *    prefix of it is LB_EAGAIN (so a slow proxy is never refused half-way);
 *  - what lb_proxy_build writes from the result, in either version, re-parses to the same
 *    addresses and ports.
 * Inputs are copied into exactly sized heap blocks so that ASan sees reads past the end.
 */
#include "fuzz_util.h"

static int parse_copy(const uint8_t *d, size_t n, int versions, struct lb_proxy *o)
{
	char *b = malloc(n ? n : 1);
	if (!b)
		abort();
	memcpy(b, d, n);
	int rc = lb_parse_proxy(b, n, versions, o);
	free(b);
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	int versions = 1 + data[0] % 3;
	data++, size--;
	struct lb_proxy px, again;
	int rc = parse_copy(data, size, versions, &px);
	CHECK(rc == LB_EAGAIN || rc == LB_EINVAL || (rc > 0 && (size_t)rc <= size));
	if (rc == LB_EINVAL)
		CHECK(px.error && px.error[0]);
	if (rc <= 0)
		return 0;
	CHECK(px.version == 1 || px.version == 2);
	CHECK((size_t)rc <= (px.version == 1 ? LB_PROXY_V1_MAX : LB_PROXY_V2_MAX));
	CHECK(parse_copy(data, (size_t)rc, versions, &again) == rc);
	CHECK(again.local == px.local && !memcmp(&again.src, &px.src, sizeof px.src) && again.sport == px.sport);
	for (size_t k = 0; k < (size_t)rc; k += 1 + k / 8)
		CHECK(parse_copy(data, k, versions, &again) == LB_EAGAIN);
	for (int v = 1; v <= 2; v++) {
		char out[LB_PROXY_V1_MAX + 1];
		int bn = lb_proxy_build(v, &px, out, sizeof out);
		CHECK(bn > 0);
		CHECK(parse_copy((const uint8_t *)out, (size_t)bn, v, &again) == bn);
		CHECK(again.local == px.local);
		if (!px.local)
			CHECK(!memcmp(&again.src, &px.src, sizeof px.src) && !memcmp(&again.dst, &px.dst, sizeof px.dst) &&
			      again.sport == px.sport && again.dport == px.dport);
	}
	return 0;
}
