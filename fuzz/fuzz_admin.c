/* fuzz/fuzz_admin.c — libFuzzer harness for the admin API's request parsing: the head (the same
 * lb_parse_request the proxy uses), the path router lb_admin_route, and the bodies (split, weight,
 * server line, the dashboard's form).
 *
 *   make fuzz/fuzz_admin && ./fuzz/fuzz_admin -dict=fuzz/dict/admin.dict fuzz/corpus/admin
 *
 * The input is a request as a client sends it: head, then body. Properties (abort() on a violation):
 *  - lb_admin_route returns 0 with an op in range and names that are valid lb names (so nothing a
 *    client writes in a path reaches the config file or a log unchecked), or LB_EINVAL with a
 *    status 400/404/405 and a reason;
 *  - the mutating flag is set exactly for the /api/ calls other than /api/stats and /api/history;
 *  - routing the same target twice gives the same answer;
 *  - an accepted split has 1..16 pools, weights <= 1000, not all 0; an accepted weight is 1..1000;
 *    an accepted server line has a name and a port; an accepted form names an action, a valid
 *    pool and server, a weight 1..1000 for weight, and a token without a NUL.
 */
#include <ctype.h>

#include "fuzz_util.h"

static int name_valid(const char *s)
{
	size_t n = strlen(s);
	if (n >= LB_NAME_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!(isalnum((unsigned char)s[i]) || s[i] == '-' || s[i] == '_' || s[i] == '.'))
			return 0;
	return 1;
}

static struct lb_req req;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *b = malloc(size ? size : 1);
	if (!b)
		abort();
	memcpy(b, data, size);
	int rc = lb_parse_request(b, size, &req);
	if (rc > 0) {
		struct lb_admin_call k, k2;
		int r = lb_admin_route(req.method.p, req.method.n, req.target.p, req.target.n, &k);
		int r2 = lb_admin_route(req.method.p, req.method.n, req.target.p, req.target.n, &k2);
		CHECK(r == r2 && k.op == k2.op && k.status == k2.status);
		if (r == 0) {
			CHECK(k.op > LB_A_NONE && k.op <= LB_A_FORM);
			CHECK(name_valid(k.pool) && name_valid(k.server) && name_valid(k.route));
			CHECK(k.mutating == (k.op >= LB_A_CONFIG && k.op <= LB_A_SPLIT));
		} else {
			CHECK(r == LB_EINVAL && k.error && (k.status == 400 || k.status == 404 || k.status == 405));
		}
		const char *body = b + rc;
		size_t blen = size - (size_t)rc;
		struct lb_split_spec sp;
		if (lb_parse_split(body, blen, &sp) == 0) {
			unsigned total = 0;
			CHECK(sp.n >= 1 && sp.n <= 16);
			for (size_t i = 0; i < sp.n; i++) {
				CHECK(sp.weight[i] <= 1000 && name_valid(sp.name[i]) && sp.name[i][0]);
				total += sp.weight[i];
			}
			CHECK(total > 0);
		}
		unsigned w;
		if (lb_parse_weight(body, blen, &w) == 0)
			CHECK(w >= 1 && w <= 1000);
		struct lb_server_spec ss;
		if (lb_parse_server(body, blen, &ss) == 0)
			CHECK(ss.name[0] && ss.addr.port);
		struct lb_form_action fa;
		if (lb_parse_form_action(body, blen, &fa) == 0) {
			CHECK(fa.op == LB_A_DRAIN || fa.op == LB_A_ENABLE || fa.op == LB_A_DISABLE || fa.op == LB_A_WEIGHT);
			CHECK(name_valid(fa.pool) && fa.pool[0] && name_valid(fa.server) && fa.server[0]);
			CHECK(fa.op != LB_A_WEIGHT || (fa.weight >= 1 && fa.weight <= 1000));
			CHECK(fa.token_len < sizeof fa.token && strlen(fa.token) == fa.token_len);
		} else {
			CHECK(fa.error != NULL);
		}
	}
	free(b);
	return 0;
}
