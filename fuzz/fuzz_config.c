/* fuzz/fuzz_config.c — libFuzzer harness for the configuration parser (lb_conf_parse).
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -DLB_NO_MAIN -I. \
 *         fuzz/fuzz_config.c lb.c -o fuzz/fuzz_config -l:libbearssl.a -l:libinih.a
 *   ./fuzz/fuzz_config -dict=fuzz/dict/ini.dict /tmp/fz-config fuzz/corpus/config
 *
 * The input is INI text. Besides memory errors (ASan/UBSan) and leaks (LeakSanitizer: a parsed
 * configuration is freed with lb_conf_free, a refused one by the parser itself), it checks these
 * properties and abort()s on a violation:
 *  - lb_conf_parse returns 0 with a configuration and no error, or LB_EINVAL with no configuration
 *    and at least one error;
 *  - 0 < errs.n <= LB_CFG_MAX_ERRORS and errs.n == min(errs.total, LB_CFG_MAX_ERRORS) on failure;
 *  - every stored error has 0 <= line <= the number of lines of the input (0: the whole file), a
 *    non-empty NUL-terminated message and a NUL-terminated key;
 *  - determinism: parsing the same text again gives the same result, the same error counts and the
 *    same errors (line, key, message) in the same order;
 *  - an accepted configuration is coherent: at least one listener, each with 1..LB_MAX_BINDS binds
 *    with a port and a pool index in range (-1 allowed for http), every pool has servers with
 *    weights 1..1000 and ports, every route references pools and listeners in range, its item
 *    counts are within LB_ROUTE_MAX_ITEMS and it has a pool, a split, a return or a redirect;
 *    names are NUL-terminated and non-empty.
 */
#include "fuzz_util.h"

static struct lb_cfg_errors errs1, errs2;

static size_t count_lines(const char *t, size_t n)
{
	size_t lines = 0;
	for (size_t i = 0; i < n; i++)
		lines += t[i] == '\n';
	if (n > 0 && t[n - 1] != '\n')
		lines++;
	return lines;
}

static int name_ok(const char *s, size_t cap)
{
	size_t n = strnlen(s, cap);
	return n > 0 && n < cap;
}

static void check_errors(const struct lb_cfg_errors *e, size_t lines)
{
	CHECK(e->n >= 0 && e->n <= LB_CFG_MAX_ERRORS);
	CHECK(e->total >= e->n);
	CHECK(e->n == (e->total < LB_CFG_MAX_ERRORS ? e->total : LB_CFG_MAX_ERRORS));
	for (int i = 0; i < e->n; i++) {
		const struct lb_cfg_error *x = &e->e[i];
		if (x->line < 0 || (size_t)x->line > lines)
			fprintf(stderr, "error %d at line %d of %zu: %.*s\n", i, x->line, lines,
			        (int)sizeof x->msg, x->msg);
		CHECK(x->line >= 0 && (size_t)x->line <= lines);
		CHECK(memchr(x->msg, 0, sizeof x->msg) != NULL);
		CHECK(x->msg[0] != 0);
		CHECK(memchr(x->key, 0, sizeof x->key) != NULL);
	}
}

static void check_conf(const struct lb_conf *c)
{
	CHECK(c->nlisteners >= 1);
	for (size_t i = 0; i < c->nlisteners; i++) {
		const struct lb_listener *l = &c->listeners[i];
		CHECK(name_ok(l->name, sizeof l->name));
		CHECK(l->nbinds >= 1 && l->nbinds <= LB_MAX_BINDS);
		for (size_t b = 0; b < l->nbinds; b++) {
			CHECK(l->binds[b].hp.port != 0);
			CHECK(memchr(l->binds[b].hp.host, 0, sizeof l->binds[b].hp.host) != NULL);
		}
		CHECK(l->mode == LB_MODE_HTTP || l->mode == LB_MODE_TCP);
		CHECK(l->pool >= -1 && l->pool < (int)c->npools);
		if (l->mode == LB_MODE_TCP)
			CHECK(l->pool >= 0);
		CHECK(l->nallow == 0 || l->allow != NULL);
		CHECK(l->ndeny == 0 || l->deny != NULL);
	}
	for (size_t i = 0; i < c->npools; i++) {
		const struct lb_pool *p = &c->pools[i];
		CHECK(name_ok(p->name, sizeof p->name));
		CHECK(p->nservers >= 1 && p->servers != NULL);
		CHECK(p->algorithm >= LB_ALGO_RR && p->algorithm <= LB_ALGO_RANDOM2);
		CHECK(memchr(p->sticky_cookie, 0, sizeof p->sticky_cookie) != NULL);
		for (size_t s = 0; s < p->nservers; s++) {
			const struct lb_server *sv = &p->servers[s];
			CHECK(name_ok(sv->name, sizeof sv->name));
			CHECK(memchr(sv->host, 0, sizeof sv->host) != NULL);
			CHECK(sv->port != 0);
			CHECK(sv->weight >= 1 && sv->weight <= 1000);
		}
	}
	for (size_t i = 0; i < c->nroutes; i++) {
		const struct lb_route *r = &c->routes[i];
		CHECK(name_ok(r->name, sizeof r->name));
		CHECK(r->nlisteners <= LB_ROUTE_MAX_ITEMS && r->nhosts <= LB_ROUTE_MAX_ITEMS &&
		      r->npaths <= LB_ROUTE_MAX_ITEMS && r->nmethods <= LB_ROUTE_MAX_ITEMS &&
		      r->nheaders <= LB_ROUTE_MAX_ITEMS && r->nsplit <= LB_ROUTE_MAX_ITEMS &&
		      r->nreq_add <= LB_ROUTE_MAX_ITEMS && r->nreq_del <= LB_ROUTE_MAX_ITEMS &&
		      r->nresp_add <= LB_ROUTE_MAX_ITEMS && r->nresp_del <= LB_ROUTE_MAX_ITEMS);
		for (size_t k = 0; k < r->nlisteners; k++)
			CHECK(r->listeners[k] >= 0 && r->listeners[k] < (int)c->nlisteners);
		CHECK(r->pool >= -1 && r->pool < (int)c->npools);
		for (size_t k = 0; k < r->nsplit; k++) {
			CHECK(r->split[k].pool >= 0 && r->split[k].pool < (int)c->npools);
			CHECK(r->split[k].weight >= 1);
		}
		CHECK(r->pool >= 0 || r->nsplit > 0 || r->ret_status || r->redir_status);
		CHECK(!(r->pool >= 0 && r->nsplit > 0));
		CHECK(!(r->ret_status && r->redir_status));
		for (size_t k = 0; k < r->nhosts; k++)
			CHECK(r->hosts[k] != NULL);
		for (size_t k = 0; k < r->npaths; k++)
			CHECK(r->paths[k] != NULL && r->paths[k][0] == '/');
		for (size_t k = 0; k < r->nmethods; k++)
			CHECK(r->methods[k] != NULL && r->methods[k][0] != 0);
		CHECK(r->nacl == 0 || r->acl != NULL);
		if (r->rl.rate)
			CHECK(r->rl.burst >= 1 && r->rl.period_ms > 0);
	}
}

static int same_errors(const struct lb_cfg_errors *a, const struct lb_cfg_errors *b)
{
	if (a->n != b->n || a->total != b->total)
		return 0;
	for (int i = 0; i < a->n; i++)
		if (a->e[i].line != b->e[i].line || strcmp(a->e[i].key, b->e[i].key) != 0 ||
		    strcmp(a->e[i].msg, b->e[i].msg) != 0)
			return 0;
	return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *udata, size_t size)
{
	const char *text = (const char *)udata;
	size_t lines = count_lines(text, size);
	struct lb_conf *c1 = (struct lb_conf *)(uintptr_t)1, *c2 = (struct lb_conf *)(uintptr_t)1;

	memset(&errs1, FZ_POISON, sizeof errs1);
	int r1 = lb_conf_parse(text, size, &c1, &errs1);
	CHECK(r1 == 0 || r1 == LB_EINVAL);
	check_errors(&errs1, lines);
	if (r1 == 0) {
		CHECK(c1 != NULL);
		CHECK(errs1.total == 0 && errs1.n == 0);
		check_conf(c1);
	} else {
		CHECK(c1 == NULL);
		CHECK(errs1.n > 0);
	}

	memset(&errs2, FZ_POISON ^ 0xFF, sizeof errs2);
	int r2 = lb_conf_parse(text, size, &c2, &errs2);
	if (r1 != r2 || !same_errors(&errs1, &errs2)) {
		fprintf(stderr, "first parse: %d, %d error(s) (%d stored)\n", r1, errs1.total, errs1.n);
		fprintf(stderr, "second parse: %d, %d error(s) (%d stored)\n", r2, errs2.total, errs2.n);
		if (errs1.n && errs2.n)
			fprintf(stderr, "first errors: line %d '%s' / line %d '%s'\n", errs1.e[0].line, errs1.e[0].msg,
			        errs2.e[0].line, errs2.e[0].msg);
	}
	CHECK(r1 == r2);
	CHECK(same_errors(&errs1, &errs2));
	CHECK((c1 == NULL) == (c2 == NULL));
	if (c1 && c2) {
		CHECK(c1->nlisteners == c2->nlisteners && c1->npools == c2->npools && c1->nroutes == c2->nroutes);
		CHECK(c1->workers == c2->workers && c1->max_connections == c2->max_connections);
	}
	lb_conf_free(c1);
	lb_conf_free(c2);
	return 0;
}
