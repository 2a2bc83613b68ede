/* fuzz/fuzz_values.c — libFuzzer harness for the small value parsers of the configuration and
 * for path normalisation.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -DLB_NO_MAIN -I. \
 *         fuzz/fuzz_values.c lb.c -o fuzz/fuzz_values -l:libbearssl.a -l:libinih.a
 *   ./fuzz/fuzz_values -dict=fuzz/dict/ini.dict /tmp/fz-values fuzz/corpus/values
 *
 * The first input byte selects the parser (its value modulo 8), the rest is the text, copied into
 * an exactly sized heap block so ASan sees a read past its end:
 *   0 lb_parse_server   1 lb_parse_duration   2 lb_parse_size        3 lb_parse_bool
 *   4 lb_parse_hostport 5 lb_parse_cidr       6 lb_parse_rate_limit  7 lb_normalize_path
 * (corpus files start with the digit '0'..'7', which is 0x30..0x37: the same values modulo 8).
 * Properties (abort() on a violation):
 *  - every parser returns 0 or a negative LB_E* code; a refused server or rate limit has an error text;
 *  - server: a name of 1..63 of [A-Za-z0-9._-], a port, no wildcard, weight 1..1000,
 *    max_conn <= 1000000;
 *  - duration / size: a value that parses, printed with its largest exact unit (d h m s ms /
 *    g m k bytes), parses again to the same value;
 *  - bool: accepted exactly for "on" and "off";
 *  - hostport: port 1..65535, a NUL-terminated host ("" for *:port); printed back as host:port,
 *    [v6]:port or *:port it parses to the same result;
 *  - cidr: bits within 0..32 / 0..128, the network matches itself (lb_cidr_match), an address with a
 *    host bit set still matches, one with a network bit flipped does not, IPv4 never matches IPv6;
 *    printed back (inet_ntop + /bits) it parses to the same network;
 *  - rate limit: rate and burst 1..1e9, a known period, by ip/global/header with a token name;
 *    printed back canonically it parses to the same limit;
 *  - normalize_path: accepted for every input that starts with '/' and has neither NUL nor '%';
 *    the output is no longer than the input, starts with '/', has no "." or ".." segment, no NUL,
 *    only upper-case escapes of reserved bytes (never %00 nor an escaped unreserved byte), and
 *    normalising it again gives the same bytes (idempotent).
 */
#include <arpa/inet.h>

#include "fuzz_util.h"

static char *exact_copy(const char *s, size_t n)
{
	char *p = malloc(n ? n : 1);
	if (p == NULL)
		abort();
	if (n)
		memcpy(p, s, n);
	return p;
}

static int is_unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
	       c == '.' || c == '_' || c == '~';
}

static int hexv(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1; /* lower case is not canonical */
}

static int name_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
	       c == '_' || c == '.';
}

static void fz_server(const char *s, size_t n)
{
	struct lb_server_spec o;
	memset(&o, FZ_POISON, sizeof o);
	int rc = lb_parse_server(s, n, &o);
	CHECK(rc == 0 || rc == LB_EINVAL);
	if (rc != 0) {
		CHECK(o.error != NULL && o.error[0] != 0);
		return;
	}
	size_t nl = strnlen(o.name, sizeof o.name);
	CHECK(nl > 0 && nl < sizeof o.name);
	for (size_t i = 0; i < nl; i++)
		CHECK(name_char((unsigned char)o.name[i]));
	CHECK(memchr(o.addr.host, 0, sizeof o.addr.host) != NULL);
	CHECK(o.addr.port != 0 && !o.addr.wildcard);
	CHECK(o.weight >= 1 && o.weight <= 1000);
	CHECK(o.max_conn <= 1000000);
	CHECK(o.backup == 0 || o.backup == 1);
	CHECK(o.disabled == 0 || o.disabled == 1);
}

static void fz_duration(const char *s, size_t n)
{
	static const struct { const char *u; uint64_t m; } units[] = {
		{ "d", 86400000 }, { "h", 3600000 }, { "m", 60000 }, { "s", 1000 }, { "ms", 1 },
	};
	uint64_t ms = 0xA5A5A5A5A5A5A5A5u, again = 0;
	int rc = lb_parse_duration(s, n, &ms);
	CHECK(rc == 0 || rc == LB_EINVAL || rc == LB_ERANGE);
	if (rc != 0)
		return;
	char buf[48];
	size_t k = 0;
	while (ms != 0 && ms % units[k].m != 0)
		k++;
	if (ms == 0)
		k = 3; /* "0s" */
	int len = snprintf(buf, sizeof buf, "%llu%s", (unsigned long long)(ms / units[k].m), units[k].u);
	char *p = exact_copy(buf, (size_t)len);
	int rc2 = lb_parse_duration(p, (size_t)len, &again);
	if (rc2 != 0 || again != ms)
		fprintf(stderr, "duration %llu ms printed as '%s' parsed back as %d / %llu\n",
		        (unsigned long long)ms, buf, rc2, (unsigned long long)again);
	CHECK(rc2 == 0 && again == ms);
	free(p);
}

static void fz_size(const char *s, size_t n)
{
	static const struct { const char *u; uint64_t m; } units[] = {
		{ "g", 1024 * 1024 * 1024 }, { "m", 1024 * 1024 }, { "k", 1024 }, { "", 1 },
	};
	uint64_t v = 0xA5A5A5A5A5A5A5A5u, again = 0;
	int rc = lb_parse_size(s, n, &v);
	CHECK(rc == 0 || rc == LB_EINVAL || rc == LB_ERANGE);
	if (rc != 0)
		return;
	char buf[48];
	size_t k = 0;
	while (v != 0 && v % units[k].m != 0)
		k++;
	if (v == 0)
		k = 3;
	int len = snprintf(buf, sizeof buf, "%llu%s", (unsigned long long)(v / units[k].m), units[k].u);
	char *p = exact_copy(buf, (size_t)len);
	int rc2 = lb_parse_size(p, (size_t)len, &again);
	if (rc2 != 0 || again != v)
		fprintf(stderr, "size %llu printed as '%s' parsed back as %d / %llu\n", (unsigned long long)v, buf,
		        rc2, (unsigned long long)again);
	CHECK(rc2 == 0 && again == v);
	free(p);
}

static void fz_bool(const char *s, size_t n)
{
	int on = -7;
	int rc = lb_parse_bool(s, n, &on);
	int is_on = n == 2 && memcmp(s, "on", 2) == 0, is_off = n == 3 && memcmp(s, "off", 3) == 0;
	CHECK(rc == 0 || rc == LB_EINVAL);
	CHECK((rc == 0) == (is_on || is_off));
	if (rc == 0)
		CHECK(on == is_on);
}

static void fz_hostport(const char *s, size_t n)
{
	struct lb_hostport a, b;
	memset(&a, FZ_POISON, sizeof a);
	int rc = lb_parse_hostport(s, n, &a);
	CHECK(rc == 0 || rc == LB_EINVAL);
	if (rc != 0)
		return;
	size_t hl = strnlen(a.host, sizeof a.host);
	CHECK(hl < sizeof a.host);
	CHECK(a.port != 0);
	CHECK(a.wildcard == 0 || a.wildcard == 1);
	CHECK(a.v6 == 0 || a.v6 == 1);
	if (a.wildcard)
		CHECK(hl == 0 && !a.v6);
	else
		CHECK(hl > 0);
	char buf[LB_HOST_MAX + 16];
	int len = a.wildcard ? snprintf(buf, sizeof buf, "*:%u", a.port)
	        : a.v6 ? snprintf(buf, sizeof buf, "[%s]:%u", a.host, a.port)
	               : snprintf(buf, sizeof buf, "%s:%u", a.host, a.port);
	CHECK(len > 0 && (size_t)len < sizeof buf);
	char *p = exact_copy(buf, (size_t)len);
	memset(&b, FZ_POISON, sizeof b);
	int rc2 = lb_parse_hostport(p, (size_t)len, &b);
	if (rc2 != 0)
		fprintf(stderr, "hostport printed as '%s' is refused\n", buf);
	CHECK(rc2 == 0);
	CHECK(strcmp(a.host, b.host) == 0 && a.port == b.port && a.wildcard == b.wildcard && a.v6 == b.v6);
	free(p);
}

static void fz_cidr(const char *s, size_t n)
{
	struct lb_cidr c, d;
	memset(&c, FZ_POISON, sizeof c);
	int rc = lb_parse_cidr(s, n, &c);
	CHECK(rc == 0 || rc == LB_EINVAL);
	if (rc != 0)
		return;
	unsigned max = c.net.v6 ? 128 : 32;
	CHECK(c.net.v6 == 0 || c.net.v6 == 1);
	CHECK(c.bits <= max);
	if (!c.net.v6)
		for (int i = 4; i < 16; i++)
			CHECK(c.net.a[i] == 0);
	CHECK(lb_cidr_match(&c, &c.net) == 1);
	struct lb_ip ip = c.net;
	if (c.bits < max) { /* a host bit set: still inside */
		unsigned b = max - 1;
		ip.a[b / 8] ^= (uint8_t)(0x80 >> (b % 8));
		CHECK(lb_cidr_match(&c, &ip) == 1);
	}
	if (c.bits > 0) { /* the last network bit flipped: outside */
		ip = c.net;
		unsigned b = c.bits - 1;
		ip.a[b / 8] ^= (uint8_t)(0x80 >> (b % 8));
		CHECK(lb_cidr_match(&c, &ip) == 0);
	}
	ip = c.net;
	ip.v6 = !ip.v6;
	CHECK(lb_cidr_match(&c, &ip) == 0);

	char addr[INET6_ADDRSTRLEN], buf[INET6_ADDRSTRLEN + 8];
	CHECK(inet_ntop(c.net.v6 ? AF_INET6 : AF_INET, c.net.a, addr, sizeof addr) != NULL);
	int len = snprintf(buf, sizeof buf, "%s/%u", addr, c.bits);
	char *p = exact_copy(buf, (size_t)len);
	memset(&d, FZ_POISON, sizeof d);
	int rc2 = lb_parse_cidr(p, (size_t)len, &d);
	if (rc2 != 0)
		fprintf(stderr, "cidr printed as '%s' is refused\n", buf);
	CHECK(rc2 == 0);
	CHECK(d.bits == c.bits && d.net.v6 == c.net.v6 && memcmp(d.net.a, c.net.a, 16) == 0);
	free(p);
}

static void fz_rate_limit(const char *s, size_t n)
{
	struct lb_rate_limit a, b;
	const char *err = NULL;
	memset(&a, FZ_POISON, sizeof a);
	int rc = lb_parse_rate_limit(s, n, &a, &err);
	CHECK(rc == 0 || rc == LB_EINVAL);
	if (rc != 0) {
		CHECK(err != NULL && err[0] != 0);
		return;
	}
	CHECK(a.rate >= 1 && a.rate <= 1000000000);
	CHECK(a.burst >= 1 && a.burst <= 1000000000);
	CHECK(a.period_ms == 1000 || a.period_ms == 60000 || a.period_ms == 3600000);
	CHECK(a.by == LB_RL_IP || a.by == LB_RL_GLOBAL || a.by == LB_RL_HEADER);
	const char *unit = a.period_ms == 1000 ? "second" : a.period_ms == 60000 ? "minute" : "hour";
	char by[LB_NAME_MAX + 16];
	if (a.by == LB_RL_HEADER) {
		size_t hl = strnlen(a.header, sizeof a.header);
		CHECK(hl > 0 && hl < sizeof a.header);
		snprintf(by, sizeof by, "by=header:%s", a.header);
	} else {
		snprintf(by, sizeof by, "by=%s", a.by == LB_RL_IP ? "ip" : "global");
	}
	char buf[160];
	int len = snprintf(buf, sizeof buf, "%llu/%s burst=%llu %s", (unsigned long long)a.rate, unit,
	                   (unsigned long long)a.burst, by);
	CHECK(len > 0 && (size_t)len < sizeof buf);
	char *p = exact_copy(buf, (size_t)len);
	memset(&b, FZ_POISON, sizeof b);
	int rc2 = lb_parse_rate_limit(p, (size_t)len, &b, &err);
	if (rc2 != 0)
		fprintf(stderr, "rate limit printed as '%s' is refused\n", buf);
	CHECK(rc2 == 0);
	CHECK(a.rate == b.rate && a.period_ms == b.period_ms && a.burst == b.burst && a.by == b.by);
	if (a.by == LB_RL_HEADER)
		CHECK(strcmp(a.header, b.header) == 0);
	free(p);
}

/* The properties of a normalised path (out, n bytes). */
static void check_normal(const char *out, size_t n)
{
	CHECK(n >= 1 && out[0] == '/');
	CHECK(memchr(out, 0, n) == NULL);
	for (size_t i = 0; i < n; i++) {
		if (out[i] == '%') {
			CHECK(i + 2 < n);
			int h = hexv((unsigned char)out[i + 1]), l = hexv((unsigned char)out[i + 2]);
			CHECK(h >= 0 && l >= 0);
			int v = h * 16 + l;
			CHECK(v != 0 && !is_unreserved((unsigned char)v));
		}
		if (out[i] != '/')
			continue;
		size_t e = i + 1;
		while (e < n && out[e] != '/')
			e++;
		size_t sl = e - i - 1; /* the segment after this '/' */
		CHECK(!(sl == 1 && out[i + 1] == '.'));
		CHECK(!(sl == 2 && out[i + 1] == '.' && out[i + 2] == '.'));
	}
}

static void fz_path(const char *s, size_t n)
{
	char *out = malloc(n ? n : 1);
	if (out == NULL)
		abort();
	long r = lb_normalize_path(s, n, out);
	int plain = n > 0 && s[0] == '/' && memchr(s, 0, n) == NULL && memchr(s, '%', n) == NULL;
	CHECK(r >= 0 || r == LB_EINVAL);
	if (plain)
		CHECK(r >= 0);
	if (r < 0) {
		free(out);
		return;
	}
	CHECK((size_t)r <= n);
	check_normal(out, (size_t)r);
	char *in2 = exact_copy(out, (size_t)r);
	char *out2 = malloc((size_t)r);
	if (out2 == NULL)
		abort();
	long r2 = lb_normalize_path(in2, (size_t)r, out2);
	if (r2 != r || memcmp(out, out2, (size_t)r) != 0)
		fprintf(stderr, "normalised '%.*s' normalises again to %ld '%.*s'\n", (int)r, out, r2,
		        r2 > 0 ? (int)r2 : 0, out2);
	CHECK(r2 == r && memcmp(out, out2, (size_t)r) == 0);
	free(in2);
	free(out2);
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *udata, size_t size)
{
	if (size == 0)
		return 0;
	size_t n = size - 1;
	char *s = exact_copy((const char *)udata + 1, n);
	switch (udata[0] % 8) {
	case 0: fz_server(s, n); break;
	case 1: fz_duration(s, n); break;
	case 2: fz_size(s, n); break;
	case 3: fz_bool(s, n); break;
	case 4: fz_hostport(s, n); break;
	case 5: fz_cidr(s, n); break;
	case 6: fz_rate_limit(s, n); break;
	case 7: fz_path(s, n); break;
	}
	free(s);
	return 0;
}
