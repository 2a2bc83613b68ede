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
