/* fuzz/fuzz_x509.c — libFuzzer harness for what lb reads from certificates and ACME paths:
 * lb_x509_info (DER walk: SAN DNS names, CN, validity, serial), lb_cert_name_match (SNI) and
 * lb_acme_token (the HTTP-01 path check that guards acme_webroot).
 *
 *   make fuzz/fuzz_x509 && ./fuzz/fuzz_x509 -dict=fuzz/dict/x509.dict fuzz/corpus/x509
 *
 * The first byte picks the target: even -> a DER certificate; odd -> a request path (then a host
 * name after a NUL, for the name match). Properties (abort() on a violation):
 *  - lb_x509_info returns 0 or LB_EINVAL (with a reason); an accepted certificate has at most
 *    LB_CERT_NAMES names, each NUL-terminated, lower case, of [a-z0-9.-_] with '*' only as "*.";
 *    notBefore/notAfter fall in years 0..9999; the serial is even-length upper-case hex;
 *  - the result does not depend on bytes after the certificate's outer element;
 *  - lb_acme_token: a positive result is the token length, the token lies inside the path just
 *    after the prefix and holds base64url characters only (no '.', '/', '%'); 0 leaves it NULL;
 *  - lb_cert_name_match never matches a name that differs outside the wildcard label.
 * Inputs are copied into exactly sized heap blocks so that ASan sees reads past the end.
 */
#include "fuzz_util.h"

#include <ctype.h>

static void check_names(const struct lb_x509_info *xi)
{
	CHECK(xi->nnames <= LB_CERT_NAMES);
	for (size_t i = 0; i < xi->nnames; i++) {
		const char *n = xi->names[i];
		size_t len = strnlen(n, LB_HOST_MAX);
		CHECK(len > 0 && len < LB_HOST_MAX);
		for (size_t k = 0; k < len; k++) {
			unsigned char c = (unsigned char)n[k];
			CHECK(islower(c) || isdigit(c) || c == '.' || c == '-' || c == '_' || (c == '*' && k == 0 && n[1] == '.'));
		}
	}
	size_t sl = strnlen(xi->serial, sizeof xi->serial);
	CHECK(sl > 0 && sl % 2 == 0 && sl < sizeof xi->serial);
	for (size_t k = 0; k < sl; k++)
		CHECK(isdigit((unsigned char)xi->serial[k]) || (xi->serial[k] >= 'A' && xi->serial[k] <= 'F'));
	const int64_t y0 = -62167219200, y10000 = 253402300800;
	CHECK(xi->not_after >= y0 && xi->not_after < y10000 && xi->not_before >= y0 && xi->not_before < y10000);
}

static void fuzz_cert(const uint8_t *d, size_t n)
{
	unsigned char *b = malloc(n + 8);
	if (!b)
		abort();
	memcpy(b, d, n);
	static struct lb_x509_info xi, again;
	int rc = lb_x509_info(b, n, &xi);
	CHECK(rc == 0 || rc == LB_EINVAL);
	if (rc == LB_EINVAL)
		CHECK(xi.error && xi.error[0]);
	if (rc == 0) {
		check_names(&xi);
		memset(b + n, 0x30, 8); /* trailing bytes after the certificate change nothing */
		CHECK(lb_x509_info(b, n + 8, &again) == 0 && again.nnames == xi.nnames &&
		      again.not_after == xi.not_after && !strcmp(again.serial, xi.serial));
		for (size_t i = 0; i < xi.nnames; i++) {
			const char *nm = xi.names[i];
			if (nm[0] != '*')
				CHECK(lb_cert_name_match(nm, nm, strlen(nm)));
		}
	}
	free(b);
}

static void fuzz_path(const uint8_t *d, size_t n)
{
	const uint8_t *nul = memchr(d, 0, n);
	size_t pn = nul ? (size_t)(nul - d) : n;
	char *p = malloc(pn ? pn : 1);
	if (!p)
		abort();
	memcpy(p, d, pn);
	const char *tok = (const char *)1;
	long rc = lb_acme_token(p, pn, &tok);
	CHECK(rc == 0 || rc == LB_EINVAL || (rc > 0 && rc <= LB_ACME_TOKEN_MAX));
	if (rc > 0) {
		size_t pl = sizeof LB_ACME_PREFIX - 1;
		CHECK(tok == p + pl && pl + (size_t)rc == pn && !memcmp(p, LB_ACME_PREFIX, pl));
		for (long i = 0; i < rc; i++)
			CHECK(isalnum((unsigned char)tok[i]) || tok[i] == '-' || tok[i] == '_');
	} else {
		CHECK(tok == NULL);
	}
	if (nul) { /* pattern (the path's bytes, NUL-terminated) against the host after the NUL */
		size_t hn = n - pn - 1;
		char *pat = malloc(pn + 1), *host = malloc(hn ? hn : 1);
		if (!pat || !host)
			abort();
		memcpy(pat, d, pn);
		pat[pn] = 0;
		memcpy(host, nul + 1, hn);
		if (lb_cert_name_match(pat, host, hn) && !(pn > 2 && pat[0] == '*' && pat[1] == '.')) {
			CHECK(hn == pn);
			for (size_t i = 0; i < hn; i++)
				CHECK(tolower((unsigned char)pat[i]) == tolower((unsigned char)host[i]));
		}
		free(pat);
		free(host);
	}
	free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	if (data[0] & 1)
		fuzz_path(data + 1, size - 1);
	else
		fuzz_cert(data + 1, size - 1);
	return 0;
}
