/* fuzz/fuzz_util.h — helpers shared by the fuzz harnesses (header only; each harness is its own
 * binary). Build with -DFUZZ_STANDALONE to get a main() that runs the harness once on each file
 * named on the command line (regression replay without libFuzzer, e.g. with gcc or for AFL++'s
 * plain mode); with libFuzzer (-fsanitize=fuzzer) or AFL++'s -fsanitize=fuzzer driver leave it out.
 */
#ifndef FUZZ_UTIL_H
#define FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lb.h"

/* A violated property: say which and where, then abort() so the fuzzer keeps the input. */
#define CHECK(cond) do { \
	if (!(cond)) { \
		fprintf(stderr, "\n*** property violated: %s\n*** at %s:%d in %s\n", \
		        #cond, __FILE__, __LINE__, __func__); \
		abort(); \
	} \
} while (0)

/* Named variant for lb_str checks, so the report tells which field. */
#define CHECK_STR_IN(what, s, base, len) do { \
	if (!fz_str_in((s), (base), (len))) { \
		fprintf(stderr, "\n*** property violated: %s {p=%p n=%zu} not inside [%p, %p+%zu)\n" \
		        "*** at %s:%d\n", (what), (const void *)(s).p, (s).n, \
		        (const void *)(base), (const void *)(base), (size_t)(len), __FILE__, __LINE__); \
		abort(); \
	} \
} while (0)

/* Does s lie inside [base, base+len)? An empty string may be {NULL, 0} or point anywhere in
 * [base, base+len] (one past the end included). Compared as integers: no pointer UB. */
static inline int fz_str_in(struct lb_str s, const char *base, size_t len)
{
	uintptr_t b = (uintptr_t)base, p = (uintptr_t)s.p;
	if (s.n == 0)
		return s.p == NULL || (p >= b && p <= b + len);
	if (s.p == NULL || p < b || p > b + len)
		return 0;
	return s.n <= (b + len) - p;
}

static inline int fz_str_eq(struct lb_str a, struct lb_str b)
{
	return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0);
}

static inline int fz_str_is(struct lb_str a, const char *z)
{
	size_t n = strlen(z);
	return a.n == n && memcmp(a.p, z, n) == 0;
}

/* Before each parse the output struct is filled with this byte, so that a field the parser
 * forgets to set (for example host or query when absent) shows up as a wild pointer and fails
 * the range checks instead of silently keeping a value from an earlier parse. Build with
 * -DFUZZ_NO_POISON to zero-fill instead. */
#ifdef FUZZ_NO_POISON
#define FZ_POISON 0x00
#else
#define FZ_POISON 0xA5
#endif

/* A small growable byte buffer for re-serialisation. */
struct fz_buf {
	char *p;
	size_t n, cap;
};

static inline void fz_put(struct fz_buf *b, const void *s, size_t n)
{
	if (b->n + n > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->n + n)
			cap *= 2;
		char *np = realloc(b->p, cap);
		if (np == NULL)
			abort();
		b->p = np;
		b->cap = cap;
	}
	if (n)
		memcpy(b->p + b->n, s, n);
	b->n += n;
}

static inline void fz_puts(struct fz_buf *b, const char *z) { fz_put(b, z, strlen(z)); }
static inline void fz_putstr(struct fz_buf *b, struct lb_str s) { fz_put(b, s.p, s.n); }

/* The buffer's bytes in an exactly sized heap block, so that ASan sees any read past the end. */
static inline char *fz_exact(const struct fz_buf *b)
{
	char *p = malloc(b->n ? b->n : 1);
	if (p == NULL)
		abort();
	if (b->n)
		memcpy(p, b->p, b->n);
	return p;
}

/* --- Checks shared by the HTTP head harnesses (fuzz_request, fuzz_response) --- */

/* Every header of an accepted head of len bytes at buf: inside the head, named, and its id
 * agrees with its name. */
static inline void fz_check_headers(const struct lb_header *h, size_t n, const char *buf, size_t len)
{
	for (size_t i = 0; i < n; i++) {
		CHECK_STR_IN("header name", h[i].name, buf, len);
		CHECK_STR_IN("header value", h[i].value, buf, len);
		CHECK(h[i].name.n > 0);
		CHECK(h[i].id == lb_header_id(h[i].name.p, h[i].name.n));
	}
}

/* The framing of an accepted head: content_length >= -1 (>= 0 only with LB_HF_HAS_CL), never
 * chunked together with a length, chunked implies LB_HF_TE. */
static inline void fz_check_framing(unsigned flags, int64_t content_length)
{
	if (!(flags & LB_HF_CHUNKED))
		CHECK(content_length >= -1);
	CHECK(!((flags & LB_HF_CHUNKED) && content_length >= 0));
	if (content_length >= 0)
		CHECK(flags & LB_HF_HAS_CL);
	if (flags & LB_HF_CHUNKED)
		CHECK(flags & LB_HF_TE);
}

/* The canonical form of a head's headers: "name: value" CRLF each, then the empty line. */
static inline void fz_put_headers(struct fz_buf *b, const struct lb_header *h, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		fz_putstr(b, h[i].name);
		fz_puts(b, ": ");
		fz_putstr(b, h[i].value);
		fz_puts(b, "\r\n");
	}
	fz_puts(b, "\r\n");
}

/* Two parses of a head (original and canonical) report the same headers. */
static inline void fz_check_same_headers(const struct lb_header *a, size_t na,
                                         const struct lb_header *b, size_t nb)
{
	CHECK(na == nb);
	for (size_t i = 0; i < na; i++) {
		CHECK(fz_str_eq(a[i].name, b[i].name));
		CHECK(fz_str_eq(a[i].value, b[i].value));
	}
}

/* A harness's head parser for the stability checks: parse into its scratch output, and describe
 * that output's refusal for the report. */
struct fz_head_parser {
	int (*parse)(const char *buf, size_t len);
	const char *(*why)(void);
};

/* Parse data[0..n), plus the byte extra if extra >= 0, from an exactly sized heap copy, so that
 * ASan sees any read past the end. */
static inline int fz_parse_copy(const struct fz_head_parser *hp, const char *data, size_t n, int extra)
{
	size_t len = n + (extra >= 0);
	char *p = malloc(len ? len : 1);
	if (p == NULL)
		abort();
	if (n)
		memcpy(p, data, n);
	if (extra >= 0)
		p[n] = (char)extra;
	int r = hp->parse(p, len);
	free(p);
	return r;
}

/* Every proper prefix (k bytes) of an accepted head of ret bytes must ask for more bytes. */
static inline void fz_check_prefix(const struct fz_head_parser *hp, const char *data, size_t size,
                                   int ret, size_t k)
{
	if (k >= (size_t)ret)
		return;
	int r = fz_parse_copy(hp, data, k, -1);
	if (r != LB_EAGAIN)
		fprintf(stderr, "prefix of %zu bytes (head is %d of %zu) returned %d (%s)\n",
		        k, ret, size, r, r == LB_EINVAL ? hp->why() : "-");
	CHECK(r == LB_EAGAIN);
}

/* Appending a byte must not change an accepted head's length. */
static inline void fz_check_append(const struct fz_head_parser *hp, const char *data, size_t size,
                                   int ret, char extra)
{
	CHECK(fz_parse_copy(hp, data, size, (unsigned char)extra) == ret);
}

/* An accepted head of ret bytes in data[0..size) stays put: three proper prefixes (one picked by
 * the input's last byte) want more, and two appended bytes do not move its end. */
static inline void fz_check_head_stable(const struct fz_head_parser *hp, const char *data,
                                        size_t size, int ret)
{
	fz_check_prefix(hp, data, size, ret, (size_t)ret - 1);
	fz_check_prefix(hp, data, size, ret, (size_t)ret / 2);
	fz_check_prefix(hp, data, size, ret, size ? (size_t)(unsigned char)data[size - 1] % (size_t)ret : 0);
	fz_check_append(hp, data, size, ret, '\n');
	fz_check_append(hp, data, size, ret, size ? data[0] : 'A');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#ifdef FUZZ_STANDALONE
/* Replay: run the harness on each file named on the command line. */
int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		FILE *f = fopen(argv[i], "rb");
		if (f == NULL) {
			perror(argv[i]);
			return 1;
		}
		struct fz_buf b = {0};
		char tmp[65536];
		size_t n;
		while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
			fz_put(&b, tmp, n);
		fclose(f);
		char *exact = fz_exact(&b);
		fprintf(stderr, "running %s (%zu bytes)\n", argv[i], b.n);
		LLVMFuzzerTestOneInput((const uint8_t *)exact, b.n);
		free(exact);
		free(b.p);
	}
	fprintf(stderr, "ok: %d input(s)\n", argc - 1);
	return 0;
}
#endif

#endif /* FUZZ_UTIL_H */
