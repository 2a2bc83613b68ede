/* fuzz/fuzz_chunked.c — libFuzzer harness for the streaming chunked-framing validator.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -DLB_NO_MAIN -I. \
 *         fuzz/fuzz_chunked.c lb.c -o fuzz/fuzz_chunked -lbearssl -linih -lm
 *   ./fuzz/fuzz_chunked -dict=fuzz/dict/http.dict fuzz/corpus/chunked
 *
 * The input is a chunked body as it arrives after the head (the corpus files are plain bodies).
 * It is fed to lb_chunk_scan three ways: in one call, one byte per call, and in pieces whose
 * sizes come from a PRNG seeded with the first byte and the length (with zero-length calls mixed
 * in). Properties (abort() on a violation):
 *  - every call returns LB_CHUNK_MORE, LB_CHUNK_DONE or LB_CHUNK_ERROR and sets *used <= the
 *    length it was given; after LB_CHUNK_MORE *used is the whole length (all bytes belong to the
 *    body); a zero-length call before the end returns LB_CHUNK_MORE with *used 0;
 *  - all three ways end with the same status, the same total of used bytes and the same st.body;
 *  - st.body never exceeds the bytes used (checked unless the status is LB_CHUNK_ERROR).
 * So on LB_CHUNK_ERROR, *used must be a position that does not depend on how the bytes were
 * split (for example the offset of the offending byte in this call), not a constant.
 * Every piece is copied into an exactly sized heap block so that ASan sees reads past its end.
 */
#include "fuzz_util.h"

struct outcome {
	int status;        /* last status returned */
	size_t used;       /* total bytes used */
	uint64_t body;     /* st.body at the end */
};

/* One call on an exactly sized copy of buf[0..len). */
static int scan_piece(struct lb_chunk *st, const char *buf, size_t len, size_t *used)
{
	char *p = malloc(len ? len : 1);
	if (p == NULL)
		abort();
	if (len)
		memcpy(p, buf, len);
	*used = (size_t)-1;
	int r = lb_chunk_scan(st, p, len, used);
	free(p);

	CHECK(r == LB_CHUNK_MORE || r == LB_CHUNK_DONE || r == LB_CHUNK_ERROR);
	CHECK(*used <= len);
	if (r == LB_CHUNK_MORE)
		CHECK(*used == len);
	return r;
}

static uint32_t rng(uint32_t *s)
{
	/* xorshift32 */
	uint32_t x = *s;
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	return *s = x;
}

/* mode 0: whole; 1: one byte per call; 2: PRNG-sized pieces */
static struct outcome feed(const char *data, size_t size, int mode)
{
	struct lb_chunk st;
	struct outcome o = { LB_CHUNK_MORE, 0, 0 };
	uint32_t seed = (size ? (uint8_t)data[0] : 0) * 2654435761u ^ (uint32_t)size ^ 0x9e3779b9u;
	size_t off = 0;

	if (seed == 0)
		seed = 1;
	memset(&st, FZ_POISON, sizeof st);
	lb_chunk_init(&st);

	if (mode == 0) {
		size_t used;
		o.status = scan_piece(&st, data, size, &used);
		o.used = used;
		o.body = st.body;
		if (o.status != LB_CHUNK_ERROR)
			CHECK(o.body <= o.used);
		return o;
	}

	while (off < size) {
		size_t n, used;
		if (mode == 1) {
			n = 1;
		} else {
			uint32_t r = rng(&seed);
			switch (r & 7) {
			case 0: n = 0; break;                         /* an empty call */
			case 1: n = 1 + (r >> 8) % 256; break;         /* a big piece */
			case 2: n = 1 + (r >> 8) % 4096; break;        /* a very big piece */
			default: n = 1 + (r >> 8) % 7; break;          /* small pieces */
			}
			if (n > size - off)
				n = size - off;
		}
		int r = scan_piece(&st, data + off, n, &used);
		if (n == 0)
			CHECK(r == LB_CHUNK_MORE && used == 0);
		o.status = r;
		o.used += used;
		if (r != LB_CHUNK_ERROR)
			CHECK(st.body <= o.used);
		if (r != LB_CHUNK_MORE)
			break;
		off += n;
	}
	o.body = st.body;
	return o;
}

static const char *status_name(int s)
{
	return s == LB_CHUNK_MORE ? "MORE" : s == LB_CHUNK_DONE ? "DONE" :
	       s == LB_CHUNK_ERROR ? "ERROR" : "?";
}

int LLVMFuzzerTestOneInput(const uint8_t *udata, size_t size)
{
	const char *data = (const char *)udata;
	struct outcome whole = feed(data, size, 0);
	struct outcome bytes = feed(data, size, 1);
	struct outcome pieces = feed(data, size, 2);

	if (whole.status != bytes.status || whole.used != bytes.used || whole.body != bytes.body ||
	    whole.status != pieces.status || whole.used != pieces.used || whole.body != pieces.body) {
		fprintf(stderr, "whole:  %s used %zu body %llu\n", status_name(whole.status),
		        whole.used, (unsigned long long)whole.body);
		fprintf(stderr, "bytes:  %s used %zu body %llu\n", status_name(bytes.status),
		        bytes.used, (unsigned long long)bytes.body);
		fprintf(stderr, "pieces: %s used %zu body %llu\n", status_name(pieces.status),
		        pieces.used, (unsigned long long)pieces.body);
	}
	CHECK(whole.status == bytes.status && whole.status == pieces.status);
	CHECK(whole.used == bytes.used && whole.used == pieces.used);
	CHECK(whole.body == bytes.body && whole.body == pieces.body);
	if (whole.status == LB_CHUNK_MORE)
		CHECK(whole.used == size);
	return 0;
}
