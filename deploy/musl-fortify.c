/* deploy/musl-fortify.c — for `make lb-static`: Debian builds libbearssl.a with _FORTIFY_SOURCE,
 * so its objects call glibc's checked copies (__memcpy_chk, ...), which musl does not have.
 * These do the same check: a copy larger than the destination the compiler saw aborts. */
#include <stdlib.h>
#include <string.h>

void *__memcpy_chk(void *d, const void *s, size_t n, size_t dn);
void *__memset_chk(void *d, int c, size_t n, size_t dn);
void *__memmove_chk(void *d, const void *s, size_t n, size_t dn);

void *__memcpy_chk(void *d, const void *s, size_t n, size_t dn)
{
	if (n > dn)
		abort();
	return memcpy(d, s, n);
}

void *__memset_chk(void *d, int c, size_t n, size_t dn)
{
	if (n > dn)
		abort();
	return memset(d, c, n);
}

void *__memmove_chk(void *d, const void *s, size_t n, size_t dn)
{
	if (n > dn)
		abort();
	return memmove(d, s, n);
}
