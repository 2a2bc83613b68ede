/* linode-scaler — grow and shrink one lb pool with Linode instances, on CPU.
 *
 *   linode-scaler run     [-c FILE] [--dry-run] [--host-cpu] [--state FILE] [--ha-state FILE] [-v]   loop every interval
 *   linode-scaler once    [-c FILE] [--dry-run] [--host-cpu] [--state FILE] [-v]   one cycle (cron)
 *   linode-scaler check   [-c FILE]                                  the [scaler] section and token files
 *   linode-scaler status  [-c FILE] [--host-cpu]                     what a cycle would see and decide
 *   linode-scaler list    [-c FILE]                                  the instances it owns
 *   linode-scaler up|down [-c FILE] [--dry-run]                      one instance more / less, now
 *   linode-scaler dns-set NAME IP [-c FILE] [--dry-run]              a Domains A record NAME -> IP
 *
 * Reads the [scaler] section of lb's config.ini (inih), talks to the Linode API v4 (libcurl) and to
 * lb's admin API. One file, C11, `cc deploy/linode-scaler.c -l:libinih.a -lcurl` builds it.
 *
 * Sections, in order: utilities (log, buffers, time, files), JSON (why lb.c's reader refused an
 * answer), configuration, HTTP (libcurl), the Linode API client (auth, retries, errors, pagination),
 * lb's admin API client, measurements (Linode stats, /proc/stat), the cycle (reconcile,
 * decide, act), commands and main.
 *
 * State lives in Linode and lb (a file, --state, only keeps the time of the last change for the
 * cooldown): instances are found by their tag; a new one's label
 * is TAGBASE-N (N one above the highest in use), so a create that was sent before a crash is found
 * by label instead of being sent twice; an instance being removed carries a second tag
 * (TAG-draining) so that a restart finishes its removal instead of adding it back to lb. */
/* lb.c is #included (built with -DLB_NO_MAIN, as fuzz/fuzz_conn.c does): the [scaler] section is read
 * by lb's own parser (lb_conf_parse; each key a row of lb.c's key table, checked by `lb -t` too), and
 * requests are written with lb's text buffer (struct abuf, ab_put, ab_printf); answers, Linode's and lb's
 * /api/stats, are read with lb's JSON documents (lb_jdoc_parse, lb_jdoc_get, lb_jdoc_str, lb_jdoc_num). */
#define _GNU_SOURCE
#include "lb.c"

#include <inttypes.h>
#include <math.h>
#include <stdint.h>

#include <curl/curl.h>

#define SCALER_VERSION "1.0"
#define MAX_INSTANCES LB_SCALER_INSTANCES /* owned instances handled per cycle (max is at most this) */
#define MAX_PAGES 100              /* list pages read per cycle */
#define MAX_BODY (32u << 20)       /* largest API answer accepted */
#define API_TIMEOUT_S 30L          /* every Linode call */
#define ADMIN_TIMEOUT_S 15L        /* every lb admin call */
#define CONNECT_TIMEOUT_S 10L
#define API_ATTEMPTS 6             /* tries of one call (429, 5xx, network errors) */
#define BACKOFF_BASE_MS 500        /* first 5xx/network backoff; doubles, with jitter */
#define BACKOFF_CAP_MS 30000
#define RETRY_AFTER_CAP_S 300      /* a longer Retry-After is waited in several calls' time */
#define WAIT_RUNNING_MS (15 * 60 * 1000)  /* a new instance must be running within this */
#define WAIT_REMOVED_MS (15 * 60 * 1000)  /* lb must have drained and removed a server within this */
#define WAIT_UP_MS (2 * 60 * 1000)        /* how long `up` watches lb's health checks take it in */
#define WARMUP_MS (15 * 60 * 1000) /* a new running instance without stats holds scale-ups this long */
#define STATS_PER_MINUTE 40        /* own budget under the API's 50 stats calls a minute */
#define STATS_STEP_MS 300000       /* the stats' point spacing (5 minutes) */
#define DRAIN_SUFFIX "-draining"   /* second tag of an instance being removed */
#define MAX_NODES LB_SCALER_NODES  /* lb nodes in admin_url */
#define ADMIN_CONNECT_TIMEOUT_S 3L
#define P99_MIN_REQUESTS 20        /* fewer requests in a cycle give no p99 figure */ /* an lb node on the same network answers a connect at once */

/* ================================================================================== utilities */

static volatile sig_atomic_t g_stop, g_hup;
static int g_verbose;

static void on_scaler_signal(int sig)
{
	if (sig == SIGHUP)
		g_hup = 1;
	else
		g_stop = 1;
}

/* log lines on stderr: 2026-11-23T10:00:00.123Z linode-scaler: [level: ]message */
__attribute__((format(printf, 2, 3))) static void logm(const char *level, const char *fmt, ...)
{
	if (level && !strcmp(level, "debug") && !g_verbose)
		return;
	char msg[2048], ts[40];
	int64_t now = (int64_t)wall_ms();
	time_t sec = (time_t)(now / 1000);
	struct tm tm;
	gmtime_r(&sec, &tm);
	strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	for (char *p = msg; *p; p++) /* one event, one line */
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	fprintf(stderr, "%s.%03dZ linode-scaler: %s%s%s\n", ts, (int)(now % 1000), level ? level : "", level ? ": " : "",
	        msg);
	fflush(stderr);
}
#define info(...) logm(NULL, __VA_ARGS__)
#define warn(...) logm("warning", __VA_ARGS__)
#define err(...) logm("error", __VA_ARGS__)
#define debug(...) logm("debug", __VA_ARGS__)

/* sleep, cut short by SIGTERM/SIGINT; 0 when slept in full */
static int sleep_ms(int64_t ms)
{
	int64_t end = (int64_t)mono_ms() + ms;
	while (!g_stop) {
		int64_t left = end - (int64_t)mono_ms();
		if (left <= 0)
			return 0;
		if (left > 100)
			left = 100;
		struct timespec ts = { (time_t)(left / 1000), (long)(left % 1000) * 1000000L };
		nanosleep(&ts, NULL);
	}
	return -1;
}

/* text buffers are lb.c's struct abuf (ab_put, ab_printf: appends that set oom instead of failing) */
static void buf_free(struct abuf *b)
{
	free(b->d);
	memset(b, 0, sizeof *b);
}

static const char *buf_str(const struct abuf *b)
{
	return b->d ? b->d : "";
}

/* JSON string literal of s (quotes included) */
static void buf_json(struct abuf *b, const char *s)
{
	ab_put(b, "\"", 1);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\') {
			char e[2] = { '\\', (char)*p };
			ab_put(b, e, 2);
		} else if (*p < 0x20) {
			ab_printf(b, "\\u%04x", *p);
		} else {
			ab_put(b, (const char *)p, 1);
		}
	}
	ab_put(b, "\"", 1);
}

/* a whole file (at most `max` bytes) as a NUL-terminated string; NULL with errno (lb.c's read_file) */
static char *read_text(const char *path, size_t max, size_t *len)
{
	size_t n;
	char *t = read_file(path, &n);
	char *z = t && n <= max ? realloc(t, n + 1) : NULL;
	if (!z) {
		int e = !t ? errno : n > max ? EFBIG : ENOMEM;
		free(t);
		errno = e;
		return NULL;
	}
	z[n] = 0;
	if (len)
		*len = n;
	return z;
}

static void trim(char *s)
{
	size_t n = strlen(s);
	while (n && isspace((unsigned char)s[n - 1]))
		s[--n] = 0;
	size_t i = 0;
	while (s[i] && isspace((unsigned char)s[i]))
		i++;
	memmove(s, s + i, n - i + 1);
}

/* a secret from a file (surrounding whitespace dropped); warns when others may read it */
static char *read_secret(const char *path, const char *what)
{
	struct stat st;
	char *s = read_text(path, 4096, NULL);
	if (!s) {
		err("%s: cannot read %s: %s", what, path, strerror(errno));
		return NULL;
	}
	trim(s);
	if (!*s) {
		err("%s: %s is empty", what, path);
		free(s);
		return NULL;
	}
	if (stat(path, &st) == 0 && (st.st_mode & 007))
		warn("%s: %s is readable by other users (chmod 600 or 640)", what, path);
	return s;
}

static void base64(struct abuf *out, const unsigned char *p, size_t n)
{
	static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	for (size_t i = 0; i < n; i += 3) {
		unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
		char q[4] = { t[v >> 18 & 63], t[v >> 12 & 63], i + 1 < n ? t[v >> 6 & 63] : '=', i + 2 < n ? t[v & 63] : '=' };
		ab_put(out, q, 4);
	}
}

static int random_bytes(void *p, size_t n)
{
	unsigned char *c = p;
	while (n) {
		ssize_t r = getrandom(c, n, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		c += r;
		n -= (size_t)r;
	}
	return 0;
}

/* a random root password: 40 characters, every class present (Linode scores its strength) */
static int make_password(char *out, size_t size)
{
	static const char *const cls[] = { "ABCDEFGHJKLMNPQRSTUVWXYZ", "abcdefghijkmnopqrstuvwxyz", "23456789",
		                           "!#%+,-./:=@^_~" };
	const size_t len = 40;
	unsigned char r[120]; /* 0..39 characters, 40..79 classes, 80..119 the shuffle */
	if (size < len + 1 || random_bytes(r, sizeof r) != 0)
		return -1;
	for (size_t i = 0; i < len; i++) {
		const char *set = cls[i < 4 ? i : r[i + 40] % 4];
		out[i] = set[r[i] % strlen(set)];
	}
	for (size_t i = len - 1; i > 0; i--) { /* the first four (one of each class) go anywhere */
		size_t j = r[80 + i] % (i + 1);
		char c = out[i];
		out[i] = out[j];
		out[j] = c;
	}
	out[len] = 0;
	memset(r, 0, sizeof r);
	return 0;
}

static double jitter(void)
{
	unsigned short v = 0;
	random_bytes(&v, sizeof v);
	return 0.5 + (double)v / 131070.0; /* 0.5 .. 1.0 */
}

/* "2024-10-21T12:34:56" (UTC, as Linode writes times) -> ms since the epoch; -1 if malformed */
static int64_t parse_api_time(const char *s)
{
	struct tm tm;
	memset(&tm, 0, sizeof tm);
	const char *e = s ? strptime(s, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;
	if (!e)
		return -1;
	time_t t = timegm(&tm);
	return t == (time_t)-1 ? -1 : (int64_t)t * 1000;
}

static void fmt_dur(char *out, size_t size, int64_t ms)
{
	if (ms % 3600000 == 0 && ms >= 3600000)
		snprintf(out, size, "%" PRId64 "h", ms / 3600000);
	else if (ms % 60000 == 0 && ms >= 60000)
		snprintf(out, size, "%" PRId64 "m", ms / 60000);
	else if (ms % 1000 == 0)
		snprintf(out, size, "%" PRId64 "s", ms / 1000);
	else
		snprintf(out, size, "%" PRId64 "ms", ms);
}

/* ================================================================================== JSON */

/* Answers are read with lb.c's JSON documents (lb_jdoc_parse: lb_json_tokens, strings decoded); token 0 is
 * the value of the whole answer. */

/* why lb_jdoc_parse refused a text */
static const char *jdoc_why(int rc)
{
	return rc == LB_ENOMEM ? "out of memory" : "not JSON, a bad escape, or too many tokens";
}

/* ================================================================================== configuration */

/* [scaler] as the cycle uses it: lb_conf_parse's struct lb_scaler, copied, plus what is derived */
struct conf {
	char pool[64];
	struct lb_scaler_node node[MAX_NODES];  /* admin_url */
	int nnodes;
	char admin_token_file[512];
	char api_url[256];
	char token_file[512];
	char region[64], type[64], image[128];
	char user_data[512];
	char authorized_keys_file[512];
	char tag[64];
	int min, max;
	double up_cpu, down_cpu;
	unsigned up_inflight;      /* 0: off */
	int64_t up_p99_ms;         /* 0: off */
	int64_t down_after_ms, cooldown_ms, interval_ms;
	int server_port;
	int public_addr; /* server_address = public */
	/* derived */
	char base[56]; /* label prefix: the tag made a valid Linode label and lb server name */
	char drain_tag[80];
	char admin_url[MAX_NODES * 258]; /* the nodes' URLs, for logs */
};

/* the tag as a label prefix: Linode labels start with a letter, hold [A-Za-z0-9-_.] without two
 * of - _ . in a row; lb server names allow [A-Za-z0-9._-] */
static void make_base(const char *tag, char *out, size_t size)
{
	size_t n = 0;
	if (!isalpha((unsigned char)tag[0]))
		out[n++] = 's';
	for (const char *p = tag; *p && n + 1 < size - 8; p++) {
		char c = isalnum((unsigned char)*p) || *p == '-' || *p == '_' || *p == '.' ? *p : '-';
		if (!isalnum((unsigned char)c) && n && !isalnum((unsigned char)out[n - 1]))
			continue;
		out[n++] = c;
	}
	while (n && !isalnum((unsigned char)out[n - 1]))
		n--;
	if (n < 2) {
		snprintf(out, size, "scaler");
		return;
	}
	out[n] = 0;
}

/* a string key into its field; 0, or -1 after saying it is too long */
static int copy_key(const char *path, int line, const char *key, const char *v, char *out, size_t size)
{
	snprintf(out, size, "%s", v ? v : "");
	if (!v || strlen(v) < size)
		return 0;
	fprintf(stderr, "%s:%d: %s: longer than %zu characters\n", path, line, key, size - 1);
	return -1;
}

/* what the scaler needs beyond the values lb's parser checked */
static int conf_needs(const char *path, const struct conf *c, int line)
{
	const char *need[] = { !c->pool[0] ? "pool (the lb pool it manages)" : NULL,
		               !c->token_file[0] ? "token_file (a Linode personal access token)" : NULL,
		               !c->admin_token_file[0] ? "admin_token_file (the token of lb's [admin] token_file)" : NULL,
		               !c->region[0] || !c->type[0] ? "region and type for new instances" : NULL };
	int errors = 0;
	for (size_t i = 0; i < sizeof need / sizeof *need; i++)
		if (need[i])
			errors += fprintf(stderr, "%s:%d: [scaler] needs %s\n", path, line, need[i]) > 0;
	if (c->min > c->max)
		errors += fprintf(stderr, "%s:%d: min (%d) is above max (%d)\n", path, line, c->min, c->max) > 0;
	if (c->down_cpu >= c->up_cpu)
		errors += fprintf(stderr, "%s:%d: scale_down_cpu (%g) must be below scale_up_cpu (%g)\n", path, line,
		                  c->down_cpu, c->up_cpu) > 0;
	if (strncmp(c->api_url, "http://", 7) && strncmp(c->api_url, "https://", 8))
		errors += fprintf(stderr, "%s:%d: api_url must start with http:// or https://\n", path, line) > 0;
	if (strlen(c->tag) < 3 || strlen(c->tag) > 50 - strlen(DRAIN_SUFFIX))
		errors += fprintf(stderr, "%s:%d: tag '%s': Linode tags are 3..50 characters (and the scaler adds '%s')\n",
		                  path, line, c->tag, DRAIN_SUFFIX) > 0;
	return errors ? -1 : 0;
}

/* the file as lb reads it (an error anywhere in it stops the scaler, as it stops lb), then [scaler] */
static int conf_load(const char *path, struct conf *c)
{
	memset(c, 0, sizeof *c);
	size_t len;
	char *text = read_file(path, &len);
	if (!text) {
		fprintf(stderr, "%s: cannot read: %s\n", path, strerror(errno));
		return -1;
	}
	static struct lb_cfg_errors errs;
	struct lb_conf *lc = NULL;
	int rc = lb_conf_parse(text, len, &lc, &errs);
	free(text);
	if (rc != 0) {
		report_cfg_errors(path, &errs, 0);
		return -1;
	}
	const struct lb_scaler *sc = &lc->scaler;
	int line = sc->line;
	if (!line) {
		fprintf(stderr, "%s: no [scaler] section\n", path);
		lb_conf_free(lc);
		return -1;
	}
	int bad = copy_key(path, line, "pool", sc->pool, c->pool, sizeof c->pool) |
	          copy_key(path, line, "admin_token_file", sc->admin_token_file, c->admin_token_file,
	                   sizeof c->admin_token_file) |
	          copy_key(path, line, "api_url", sc->api_url, c->api_url, sizeof c->api_url) |
	          copy_key(path, line, "token_file", sc->token_file, c->token_file, sizeof c->token_file) |
	          copy_key(path, line, "region", sc->region, c->region, sizeof c->region) |
	          copy_key(path, line, "type", sc->type, c->type, sizeof c->type) |
	          copy_key(path, line, "image", sc->image, c->image, sizeof c->image) |
	          copy_key(path, line, "user_data", sc->user_data, c->user_data, sizeof c->user_data) |
	          copy_key(path, line, "authorized_keys_file", sc->authorized_keys_file, c->authorized_keys_file,
	                   sizeof c->authorized_keys_file) |
	          copy_key(path, line, "tag", sc->tag, c->tag, sizeof c->tag);
	memcpy(c->node, sc->node, sizeof c->node);
	c->nnodes = (int)sc->nnodes;
	c->min = (int)sc->min;
	c->max = (int)sc->max;
	c->up_cpu = sc->up_cpu;
	c->down_cpu = sc->down_cpu;
	c->up_inflight = sc->up_inflight;
	c->up_p99_ms = (int64_t)sc->up_p99;
	c->down_after_ms = (int64_t)sc->down_after;
	c->cooldown_ms = (int64_t)sc->cooldown;
	c->interval_ms = (int64_t)sc->interval;
	c->server_port = (int)sc->server_port;
	c->public_addr = sc->server_address == 1;
	lb_conf_free(lc);
	if (!c->tag[0])
		snprintf(c->tag, sizeof c->tag, "lb-pool-%.50s", c->pool);
	if (bad | conf_needs(path, c, line))
		return -1;
	make_base(c->tag, c->base, sizeof c->base);
	for (int k = 0, o = 0; k < c->nnodes; k++)
		o += snprintf(c->admin_url + o, sizeof c->admin_url - (size_t)o, "%s%s", k ? ", " : "", c->node[k].url);
	snprintf(c->drain_tag, sizeof c->drain_tag, "%s%s", c->tag, DRAIN_SUFFIX);
	return 0;
}

/* ================================================================================== HTTP */

struct resp {
	long status;          /* 0: no HTTP answer (errbuf says why) */
	struct abuf body;
	long retry_after;     /* seconds; -1 when absent */
	char errbuf[CURL_ERROR_SIZE];
};

static CURL *g_curl;

static size_t on_body(char *p, size_t sz, size_t n, void *u)
{
	struct resp *r = u;
	if (r->body.n + sz * n > MAX_BODY)
		return 0;
	ab_put(&r->body, p, sz * n);
	return r->body.oom ? 0 : sz * n;
}

static size_t on_header(char *p, size_t sz, size_t n, void *u)
{
	struct resp *r = u;
	size_t len = sz * n;
	if (len > 12 && !strncasecmp(p, "retry-after:", 12)) {
		char tmp[32];
		size_t k = len - 12 < sizeof tmp - 1 ? len - 12 : sizeof tmp - 1;
		memcpy(tmp, p + 12, k);
		tmp[k] = 0;
		trim(tmp);
		char *e;
		long v = strtol(tmp, &e, 10);
		if (e != tmp && !*e && v >= 0)
			r->retry_after = v;
	}
	return len;
}

static int on_progress(void *u, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
	(void)u, (void)a, (void)b, (void)c, (void)d;
	return g_stop ? 1 : 0; /* SIGTERM cuts a call short */
}

/* one HTTP exchange; headers: NULL-terminated extra lines. 0 when an answer came (any status). */
static int http_do(const char *method, const char *url, const char *const *headers, const char *body, long timeout_s,
                   long connect_s, struct resp *r)
{
	buf_free(&r->body);
	r->status = 0;
	r->retry_after = -1;
	r->errbuf[0] = 0;
	if (!g_curl && !(g_curl = curl_easy_init())) {
		snprintf(r->errbuf, sizeof r->errbuf, "curl_easy_init failed");
		return -1;
	}
	CURL *h = g_curl;
	curl_easy_reset(h);
	struct curl_slist *hl = NULL, *t;
	for (size_t i = 0; headers && headers[i]; i++) {
		if (!(t = curl_slist_append(hl, headers[i]))) {
			curl_slist_free_all(hl);
			snprintf(r->errbuf, sizeof r->errbuf, "out of memory");
			return -1;
		}
		hl = t;
	}
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	if (!strcmp(method, "GET"))
		curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
	if (body) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	}
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "linode-scaler/" SCALER_VERSION);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, timeout_s);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, connect_s);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
#else
	curl_easy_setopt(h, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, r->errbuf);
	CURLcode rc = curl_easy_perform(h);
	curl_slist_free_all(hl);
	if (rc != CURLE_OK) {
		if (!r->errbuf[0])
			snprintf(r->errbuf, sizeof r->errbuf, "%s", curl_easy_strerror(rc));
		r->status = 0;
		return -1;
	}
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
	if (!r->body.d)
		ab_put(&r->body, "", 0);
	return 0;
}

/* ================================================================================== Linode API */

static struct conf g_c;
static char *g_api_token;
static int g_dry;
static int64_t g_stats_calls[STATS_PER_MINUTE]; /* monotonic times of the last stats calls (ring) */
static unsigned g_stats_i;

/* "[field] reason; reason" from {"errors":[{"reason","field"}]}, or the start of the body */
static void api_errors(const struct resp *r, char *out, size_t size)
{
	struct lb_jdoc v;
	lb_jdoc_parse(buf_str(&r->body), r->body.n, &v); /* not JSON: no "errors" */
	long es = lb_jdoc_get(&v, 0, "errors");
	size_t n = 0;
	out[0] = 0;
	for (long e = lb_jdoc_next(&v, es, -1); e >= 0 && n + 1 < size; e = lb_jdoc_next(&v, es, e)) {
		const char *reason = lb_jdoc_str(&v, lb_jdoc_get(&v, e, "reason"));
		const char *field = lb_jdoc_str(&v, lb_jdoc_get(&v, e, "field"));
		int w = snprintf(out + n, size - n, "%s%s%s%s%s", n ? "; " : "", field ? "[" : "", field ? field : "",
		                 field ? "] " : "", reason ? reason : "(no reason)");
		if (w < 0)
			break;
		n += (size_t)w < size - n ? (size_t)w : size - n - 1;
	}
	if (!out[0]) {
		snprintf(out, size, "%.200s", r->body.n ? buf_str(&r->body) : "(empty body)");
		for (char *p = out; *p; p++)
			if ((unsigned char)*p < 0x20)
				*p = ' ';
	}
	lb_jdoc_free(&v);
}

enum { IDEMPOTENT = 1, QUIET_4XX = 2 };

/* A Linode API call: METHOD api_url+path, with X-Filter when filter is set, a JSON body when body is
 * set. 429: waits Retry-After and tries again (any method: the call was not processed). 5xx and
 * network errors: exponential backoff with jitter, only when IDEMPOTENT (GET, PUT, DELETE). Returns
 * the HTTP status (2xx: *out holds the parsed answer, for lb_jdoc_free), or 0 when no answer came; errors are logged
 * with the API's reasons (QUIET_4XX: 4xx answers left to the caller, which gets them in *why). */
static long api(const char *method, const char *path, const char *filter, const char *body, int flags,
                struct lb_jdoc *out, char *why, size_t whysize)
{
	char url[1024], auth[600], fh[1024];
	const char *hdr[8];
	size_t nh = 0;
	struct resp r = { 0 };
	if (out)
		*out = (struct lb_jdoc){ 0 };
	if (why && whysize)
		why[0] = 0;
	snprintf(url, sizeof url, "%s%s", g_c.api_url, path);
	snprintf(auth, sizeof auth, "Authorization: Bearer %s", g_api_token ? g_api_token : "");
	hdr[nh++] = auth;
	hdr[nh++] = "Accept: application/json";
	if (body) {
		hdr[nh++] = "Content-Type: application/json";
		hdr[nh++] = "Expect:"; /* no 100-continue round trip */
	}
	if (filter) {
		snprintf(fh, sizeof fh, "X-Filter: %s", filter);
		hdr[nh++] = fh;
	}
	hdr[nh] = NULL;
	int64_t backoff = BACKOFF_BASE_MS;
	long status = 0;
	char reasons[1024];
	for (int attempt = 1; attempt <= API_ATTEMPTS && !g_stop; attempt++) {
		http_do(method, url, hdr, body, API_TIMEOUT_S, CONNECT_TIMEOUT_S, &r);
		status = r.status;
		if (status == 0) {
			if (g_stop)
				break;
			if (!(flags & IDEMPOTENT) || attempt == API_ATTEMPTS) {
				err("linode: %s %s: %s (not retried%s)", method, path, r.errbuf,
				    flags & IDEMPOTENT ? ": out of attempts" : ": not idempotent");
				break;
			}
			int64_t w = (int64_t)((double)backoff * jitter());
			warn("linode: %s %s: %s; retry %d/%d in %" PRId64 " ms", method, path, r.errbuf, attempt,
			     API_ATTEMPTS - 1, w);
			sleep_ms(w);
			backoff = backoff * 2 > BACKOFF_CAP_MS ? BACKOFF_CAP_MS : backoff * 2;
			continue;
		}
		if (status == 429) {
			long ra = r.retry_after;
			if (ra < 0)
				ra = 5;
			if (ra > RETRY_AFTER_CAP_S)
				ra = RETRY_AFTER_CAP_S;
			api_errors(&r, reasons, sizeof reasons);
			if (attempt == API_ATTEMPTS) {
				err("linode: %s %s: 429 rate limited (%s): out of attempts", method, path, reasons);
				break;
			}
			warn("linode: %s %s: 429 rate limited (%s); waiting Retry-After %ld s (attempt %d/%d)", method,
			     path, reasons, ra, attempt, API_ATTEMPTS);
			sleep_ms(ra * 1000 + 50);
			continue;
		}
		if (status >= 500) {
			api_errors(&r, reasons, sizeof reasons);
			if (!(flags & IDEMPOTENT) || attempt == API_ATTEMPTS) {
				err("linode: %s %s: %ld: %s (not retried%s)", method, path, status, reasons,
				    flags & IDEMPOTENT ? ": out of attempts" : ": not idempotent");
				break;
			}
			int64_t w = (int64_t)((double)backoff * jitter());
			warn("linode: %s %s: %ld: %s; retry %d/%d in %" PRId64 " ms", method, path, status, reasons, attempt,
			     API_ATTEMPTS - 1, w);
			sleep_ms(w);
			backoff = backoff * 2 > BACKOFF_CAP_MS ? BACKOFF_CAP_MS : backoff * 2;
			continue;
		}
		if (status >= 400 || status < 200 || status >= 300) {
			api_errors(&r, reasons, sizeof reasons);
			if (why)
				snprintf(why, whysize, "%s", reasons);
			if (!(flags & QUIET_4XX) || status < 400)
				err("linode: %s %s: %ld: %s%s", method, path, status, reasons,
				    status == 401 ? " (check token_file: the token is missing, expired or revoked)"
				    : status == 403 ? " (the token lacks a scope: linodes:read_write is needed)" : "");
			break;
		}
		struct lb_jdoc v;
		int prc = lb_jdoc_parse(buf_str(&r.body), r.body.n, &v);
		if (prc != 0) {
			err("linode: %s %s: %ld but the answer is not usable (%s)", method, path, status, jdoc_why(prc));
			status = 0;
			break;
		}
		if (out)
			*out = v;
		else
			lb_jdoc_free(&v);
		break;
	}
	buf_free(&r.body);
	return g_stop && status == 0 ? 0 : status;
}

/* ---------------------------------------------------------------------- instances */

struct inst {
	long long id;
	char label[72];
	char status[32];
	char created[40];
	int64_t created_ms;
	int vcpus;
	int draining;      /* carries the drain tag */
	int in_lb;         /* some lb node's pool has a server of this label (or at its address) */
	unsigned lb_mask;  /* which nodes (bit k: g_nodes[k]) have it */
	char lb_state[24];
	char addr[64];     /* the server address (private or public IPv4), once looked up */
	int has_cpu;       /* stats gave a newest point */
	double cpu;        /* newest point, percent of the instance's vCPUs */
	int hist_low;      /* every point over scale_down_after (and the one before) below scale_down_cpu */
};

struct cache {     /* per instance id, across cycles */
	long long id;
	char addr[64];
	int64_t stats_at; /* monotonic ms of the last stats call */
	int has_cpu, hist_low;
	double cpu;
};
static struct cache g_cache[MAX_INSTANCES];

static struct cache *cache_of(long long id, int create)
{
	struct cache *free_slot = NULL;
	for (size_t i = 0; i < MAX_INSTANCES; i++) {
		if (g_cache[i].id == id)
			return &g_cache[i];
		if (!g_cache[i].id && !free_slot)
			free_slot = &g_cache[i];
	}
	if (!create)
		return NULL;
	if (!free_slot) { /* full: forget the oldest */
		free_slot = &g_cache[0];
		for (size_t i = 1; i < MAX_INSTANCES; i++)
			if (g_cache[i].stats_at < free_slot->stats_at)
				free_slot = &g_cache[i];
	}
	memset(free_slot, 0, sizeof *free_slot);
	free_slot->id = id;
	return free_slot;
}

static int has_tag(const struct lb_jdoc *d, long o, const char *tag)
{
	long tags = lb_jdoc_get(d, o, "tags");
	for (long t = lb_jdoc_next(d, tags, -1); t >= 0; t = lb_jdoc_next(d, tags, t))
		if (lb_jdoc_str(d, t) && !strcmp(lb_jdoc_str(d, t), tag))
			return 1;
	return 0;
}

/* the instance object at token o of d */
static int inst_from_json(const struct lb_jdoc *d, long o, struct inst *in)
{
	memset(in, 0, sizeof *in);
	const char *label = lb_jdoc_str(d, lb_jdoc_get(d, o, "label")), *status = lb_jdoc_str(d, lb_jdoc_get(d, o, "status"));
	const char *created = lb_jdoc_str(d, lb_jdoc_get(d, o, "created"));
	if (lb_jdoc_int(d, lb_jdoc_get(d, o, "id"), &in->id) != 0 || in->id <= 0 || !label || !status)
		return -1;
	snprintf(in->label, sizeof in->label, "%s", label);
	snprintf(in->status, sizeof in->status, "%s", status);
	snprintf(in->created, sizeof in->created, "%s", created ? created : "");
	in->created_ms = parse_api_time(in->created);
	long long vcpus = 1;
	if (lb_jdoc_int(d, lb_jdoc_get(d, lb_jdoc_get(d, o, "specs"), "vcpus"), &vcpus) != 0 || vcpus < 1)
		vcpus = 1;
	in->vcpus = (int)vcpus;
	in->draining = has_tag(d, o, g_c.drain_tag);
	struct cache *k = cache_of(in->id, 0);
	if (k && k->addr[0])
		snprintf(in->addr, sizeof in->addr, "%s", k->addr);
	return 0;
}

/* every instance with the tag (all pages); -1 on an API error (nothing may be decided then) */
static int list_instances(struct inst *out, int *n, const char *extra_filter_key, const char *extra_filter_val)
{
	struct abuf f = { 0 };
	ab_printf(&f, "{\"tags\": ");
	buf_json(&f, g_c.tag);
	if (extra_filter_key) {
		ab_printf(&f, ", ");
		buf_json(&f, extra_filter_key);
		ab_printf(&f, ": ");
		buf_json(&f, extra_filter_val);
	}
	ab_printf(&f, "}");
	*n = 0;
	long long pages = 1;
	int rc = 0;
	for (long long page = 1; page <= pages && page <= MAX_PAGES; page++) {
		char path[64];
		struct lb_jdoc v;
		snprintf(path, sizeof path, "/linode/instances?page=%lld", page);
		long st = api("GET", path, buf_str(&f), NULL, IDEMPOTENT, &v, NULL, 0);
		if (st != 200) {
			rc = -1;
			break;
		}
		long data = lb_jdoc_get(&v, 0, "data");
		if (lb_jdoc_int(&v, lb_jdoc_get(&v, 0, "pages"), &pages) != 0 || lb_jdoc_type(&v, data) != LB_J_ARR) {
			err("linode: GET %s: the answer has no data/pages", path);
			lb_jdoc_free(&v);
			rc = -1;
			break;
		}
		for (long o = lb_jdoc_next(&v, data, -1); o >= 0; o = lb_jdoc_next(&v, data, o)) {
			struct inst in;
			if (inst_from_json(&v, o, &in) != 0) {
				warn("linode: GET %s: an instance without id/label/status was skipped", path);
				continue;
			}
			if (!has_tag(&v, o, g_c.tag)) /* the filter should make this impossible: do not own strangers */
				continue;
			if (*n >= MAX_INSTANCES) {
				warn("linode: more than %d instances carry tag %s: the rest are ignored", MAX_INSTANCES, g_c.tag);
				break;
			}
			out[(*n)++] = in;
		}
		lb_jdoc_free(&v);
		if (pages > MAX_PAGES)
			warn("linode: %lld pages of instances; only %d are read", pages, MAX_PAGES);
	}
	buf_free(&f);
	return rc;
}

static long get_instance(long long id, struct inst *in)
{
	char path[64];
	struct lb_jdoc v;
	snprintf(path, sizeof path, "/linode/instances/%lld", id);
	long st = api("GET", path, NULL, NULL, IDEMPOTENT | QUIET_4XX, &v, NULL, 0);
	if (st == 200 && inst_from_json(&v, 0, in) != 0)
		st = 0;
	lb_jdoc_free(&v);
	return st;
}

/* the instance's server address (ipv4.private or ipv4.public, by server_address), cached */
static int lookup_addr(struct inst *in)
{
	if (in->addr[0])
		return 0;
	char path[64];
	struct lb_jdoc v;
	snprintf(path, sizeof path, "/linode/instances/%lld/ips", in->id);
	if (api("GET", path, NULL, NULL, IDEMPOTENT, &v, NULL, 0) != 200)
		return -1;
	const char *kind = g_c.public_addr ? "public" : "private";
	long list = lb_jdoc_get(&v, lb_jdoc_get(&v, 0, "ipv4"), kind);
	const char *a = lb_jdoc_str(&v, lb_jdoc_get(&v, lb_jdoc_next(&v, list, -1), "address"));
	if (!a || !*a || strlen(a) >= sizeof in->addr || strchr(a, ':')) {
		err("linode: instance %s (%lld) has no %s IPv4 address%s", in->label, in->id, kind,
		    g_c.public_addr ? "" : " (was it created with private_ip true?)");
		lb_jdoc_free(&v);
		return -1;
	}
	snprintf(in->addr, sizeof in->addr, "%s", a);
	struct cache *k = cache_of(in->id, 1);
	snprintf(k->addr, sizeof k->addr, "%s", a);
	lb_jdoc_free(&v);
	return 0;
}

/* a stats point [time_ms, value] at token p; -1 when it is not one */
static int stats_point(const struct lb_jdoc *d, long p, double *ts, double *val)
{
	long t = lb_jdoc_next(d, p, -1), v = t >= 0 ? lb_jdoc_next(d, p, t) : -1;
	return lb_jdoc_num(d, t, ts) == 0 && lb_jdoc_num(d, v, val) == 0 ? 0 : -1;
}

static int stats_budget(void)
{
	int64_t oldest = g_stats_calls[g_stats_i % STATS_PER_MINUTE];
	return !oldest || (int64_t)mono_ms() - oldest >= 60000;
}

/* the instance's newest CPU point and its history over scale_down_after. "No data" (a new
 * instance: 400 "Stats are unavailable at this time.", or empty series) is not 0%. */
static void read_stats(struct inst *in, int nrunning)
{
	struct cache *k = cache_of(in->id, 1);
	int64_t now = (int64_t)mono_ms();
	/* the budget spread over the instances: each is asked at most every nrunning * 60 s / budget */
	int64_t every = (int64_t)nrunning * 60000 / STATS_PER_MINUTE;
	if (every < g_c.interval_ms / 2)
		every = g_c.interval_ms / 2;
	if (k->stats_at && (now - k->stats_at < every || !stats_budget())) {
		in->has_cpu = k->has_cpu, in->cpu = k->cpu, in->hist_low = k->hist_low;
		debug("stats of %s: cached from %" PRId64 " ms ago", in->label, now - k->stats_at);
		return;
	}
	if (!stats_budget()) {
		debug("stats of %s: no data yet, and the stats budget (%d a minute) is spent", in->label, STATS_PER_MINUTE);
		return;
	}
	g_stats_calls[g_stats_i++ % STATS_PER_MINUTE] = now ? now : 1;
	char path[80], why[512];
	struct lb_jdoc v;
	snprintf(path, sizeof path, "/linode/instances/%lld/stats", in->id);
	long st = api("GET", path, NULL, NULL, IDEMPOTENT | QUIET_4XX, &v, why, sizeof why);
	k->stats_at = now ? now : 1;
	k->has_cpu = k->hist_low = 0;
	if (st == 400 || st == 404) {
		info("stats of %s: no data (%ld: %s)", in->label, st, why);
		lb_jdoc_free(&v);
		return;
	}
	if (st != 200) {
		if (st > 0)
			warn("stats of %s: %ld: %s", in->label, st, why);
		lb_jdoc_free(&v);
		return;
	}
	long cpu = lb_jdoc_get(&v, 0, "cpu");
	double last_ts = -1, last = 0;
	for (long p = lb_jdoc_next(&v, cpu, -1); p >= 0; p = lb_jdoc_next(&v, cpu, p)) {
		double ts, val;
		if (stats_point(&v, p, &ts, &val) != 0)
			continue;
		if (ts >= last_ts)
			last_ts = ts, last = val;
	}
	if (last_ts < 0) {
		info("stats of %s: no data (no CPU points yet)", in->label);
		lb_jdoc_free(&v);
		return;
	}
	k->has_cpu = 1;
	k->cpu = last / in->vcpus;
	/* history: every point from the one at or before (newest - scale_down_after) on is low */
	double from = last_ts - (double)g_c.down_after_ms, boundary = -1;
	int low = 1;
	for (long p = lb_jdoc_next(&v, cpu, -1); p >= 0; p = lb_jdoc_next(&v, cpu, p)) {
		double ts, val;
		if (stats_point(&v, p, &ts, &val) != 0)
			continue;
		if (ts <= from && ts > boundary)
			boundary = ts;
	}
	for (long p = lb_jdoc_next(&v, cpu, -1); p >= 0; p = lb_jdoc_next(&v, cpu, p)) {
		double ts, val;
		if (stats_point(&v, p, &ts, &val) != 0)
			continue;
		if (ts >= (boundary >= 0 ? boundary : from) && val / in->vcpus >= g_c.down_cpu)
			low = 0;
	}
	k->hist_low = low && boundary >= 0;
	in->has_cpu = 1, in->cpu = k->cpu, in->hist_low = k->hist_low;
	debug("stats of %s: newest %.1f%% of %d vCPU (%.1f raw); low over %" PRId64 " s: %s", in->label, in->cpu,
	      in->vcpus, last, g_c.down_after_ms / 1000, in->hist_low ? "yes" : "no");
	lb_jdoc_free(&v);
}

/* ================================================================================== lb admin API */

struct lbsrv {
	char name[64];
	char addr[80];
	char state[24];
	double active;      /* requests in flight, all workers */
};

/* One lb node of admin_url and what the scaler knows of it. A node that does not answer (or
 * answers 503) is down: its calls are skipped until its next try (back-off from 1 s, doubling, at
 * most the interval, and at least once a cycle), so a dead or black-holed node never holds up the
 * others; its first answer brings it back, and that cycle's reconcile brings its pool in step. */
struct node {
	const struct lb_scaler_node *cf;
	char *token;
	char name[100];     /* host:port, for logs */
	char tag[110];      /* log prefix: "lb" with one node, "lb NAME" with several */
	int down;
	int64_t down_since; /* wall ms */
	int64_t next_try;   /* monotonic ms; a down node is not called before */
	int64_t backoff;    /* ms */
	char why[160];      /* why it is down */
	int read;           /* its pool was read this cycle: lb[] and nlb are valid */
	uint64_t hist[LB_HIST + 1]; /* the pool's request durations from /metrics, cumulative per bucket of lb.c's
	                               hist_ms (+Inf last), summed over its servers, at the last reading */
	int hist_read;      /* hist holds a reading */
	struct lbsrv lb[MAX_INSTANCES + 64];
	int nlb;
};
static struct node g_nodes[MAX_NODES];
static int g_nnodes;

static void node_down(struct node *nd, const char *why)
{
	snprintf(nd->why, sizeof nd->why, "%.159s", why);
	if (!nd->down) {
		nd->down = 1;
		nd->down_since = (int64_t)wall_ms();
		nd->backoff = 1000;
		err("%s: lb node %s is down: %s; it is tried again with back-off, the other nodes go on", nd->tag,
		    nd->cf->url, why);
	} else {
		nd->backoff = nd->backoff * 2 > g_c.interval_ms ? g_c.interval_ms : nd->backoff * 2;
		debug("%s: still down: %s; next try in %" PRId64 " ms", nd->tag, why, nd->backoff);
	}
	nd->next_try = (int64_t)mono_ms() + nd->backoff;
}

static void node_up(struct node *nd)
{
	if (!nd->down)
		return;
	char d[32];
	fmt_dur(d, sizeof d, ((int64_t)wall_ms() - nd->down_since) / 1000 * 1000);
	info("%s: lb node %s answers again (down for %s): its pool is reconciled now", nd->tag, nd->cf->url, d);
	nd->down = 0;
}

/* a call to one lb node's admin API; the HTTP status, 0 when no answer (or the node is down and
 * not due for a try: then no call is made) */
static long admin(struct node *nd, const char *method, const char *path, const char *body, struct resp *r)
{
	char url[600], auth[600];
	const char *hdr[4] = { auth, body ? "Content-Type: text/plain" : NULL, body ? "Expect:" : NULL, NULL };
	if (nd->down && (int64_t)mono_ms() < nd->next_try) {
		buf_free(&r->body);
		r->status = 0;
		snprintf(r->errbuf, sizeof r->errbuf, "lb node %.60s is down (%.150s)", nd->name, nd->why);
		return 0;
	}
	snprintf(url, sizeof url, "%s%s", nd->cf->url, path);
	snprintf(auth, sizeof auth, "Authorization: Bearer %s", nd->token ? nd->token : "");
	int attempts = nd->down ? 1 : 3; /* a node that was down gets one try; others a retry or two */
	int64_t backoff = BACKOFF_BASE_MS;
	for (int attempt = 1; attempt <= attempts && !g_stop; attempt++) {
		http_do(method, url, hdr, body, ADMIN_TIMEOUT_S, ADMIN_CONNECT_TIMEOUT_S, r);
		if (r->status != 0 && r->status != 503) {
			node_up(nd);
			return r->status;
		}
		if (attempt < attempts) {
			int64_t w = (int64_t)((double)backoff * jitter());
			warn("%s: %s %s: %s; retry in %" PRId64 " ms", nd->tag, method, path, r->status ? "503" : r->errbuf,
			     w);
			sleep_ms(w);
			backoff *= 2;
		}
	}
	if (!g_stop) {
		char why[700];
		snprintf(why, sizeof why, "%s %s: %s%s", method, path, r->status ? "503" : r->errbuf,
		         r->status ? "" : " (is lb running with an [admin] section there?)");
		node_down(nd, why);
	}
	return r->status;
}

static void admin_reason(const struct resp *r, char *out, size_t size)
{
	struct lb_jdoc v;
	lb_jdoc_parse(buf_str(&r->body), r->body.n, &v); /* not JSON: no "error" */
	const char *e = lb_jdoc_str(&v, lb_jdoc_get(&v, 0, "error"));
	snprintf(out, size, "%.300s", e ? e : buf_str(&r->body));
	for (char *p = out; *p; p++)
		if ((unsigned char)*p < 0x20)
			*p = ' ';
	lb_jdoc_free(&v);
}

/* a change asked of one node: the status (0: no answer) and, in why, lb's reason */
static long admin_change(struct node *nd, const char *method, const char *path, const char *body, char *why, size_t size)
{
	struct resp r = { 0 };
	long st = admin(nd, method, path, body, &r);
	admin_reason(&r, why, size);
	buf_free(&r.body);
	return st;
}

/* the servers of our pool in one node's /api/stats; -1 when that node cannot be asked */
static int lb_servers(struct node *nd, struct lbsrv *out, int max, int *n)
{
	struct resp r = { 0 };
	*n = 0;
	long st = admin(nd, "GET", "/api/stats", NULL, &r);
	if (st != 200) {
		if (st)
			err("%s: GET /api/stats: %ld", nd->tag, st);
		buf_free(&r.body);
		return -1;
	}
	struct lb_jdoc v;
	int prc = lb_jdoc_parse(buf_str(&r.body), r.body.n, &v), found = 0;
	long pools = lb_jdoc_get(&v, 0, "pools");
	for (long p = lb_jdoc_next(&v, pools, -1); p >= 0; p = lb_jdoc_next(&v, pools, p)) {
		const char *pn = lb_jdoc_str(&v, lb_jdoc_get(&v, p, "name"));
		if (!pn || strcmp(pn, g_c.pool))
			continue;
		found = 1;
		long ss = lb_jdoc_get(&v, p, "servers");
		for (long s = lb_jdoc_next(&v, ss, -1); s >= 0 && *n < max; s = lb_jdoc_next(&v, ss, s)) {
			const char *nm = lb_jdoc_str(&v, lb_jdoc_get(&v, s, "name"));
			const char *ad = lb_jdoc_str(&v, lb_jdoc_get(&v, s, "address"));
			const char *stt = lb_jdoc_str(&v, lb_jdoc_get(&v, s, "state"));
			if (!nm)
				continue;
			snprintf(out[*n].name, sizeof out[*n].name, "%s", nm);
			snprintf(out[*n].addr, sizeof out[*n].addr, "%s", ad ? ad : "");
			snprintf(out[*n].state, sizeof out[*n].state, "%s", stt ? stt : "");
			if (lb_jdoc_num(&v, lb_jdoc_get(&v, s, "active"), &out[*n].active) != 0)
				out[*n].active = 0;
			(*n)++;
		}
	}
	if (prc != 0)
		err("%s: GET /api/stats: %s", nd->tag, jdoc_why(prc));
	else if (!found)
		err("%s: pool '%s' is not in lb's configuration (check [scaler] pool)", nd->tag, g_c.pool);
	lb_jdoc_free(&v);
	buf_free(&r.body);
	return prc == 0 && found ? 0 : -1;
}

static const struct lbsrv *lb_find(const struct lbsrv *s, int n, const char *name)
{
	for (int i = 0; i < n; i++)
		if (!strcmp(s[i].name, name))
			return &s[i];
	return NULL;
}

/* add NAME ADDR:PORT to the pool of one node (lb health-checks it before it takes traffic) */
static int lb_add(struct node *nd, const struct inst *in)
{
	char body[200], path[128], why[400];
	snprintf(body, sizeof body, "%s %s:%d", in->label, in->addr, g_c.server_port);
	snprintf(path, sizeof path, "/api/pools/%s/servers", g_c.pool);
	if (g_dry) {
		info("dry-run: would add server '%s' to %s pool %s: POST %s", body, nd->tag, g_c.pool, path);
		return 0;
	}
	long st = admin_change(nd, "POST", path, body, why, sizeof why);
	if (st == 201) {
		info("%s: added server '%s' to pool %s (lb health-checks it before it takes traffic)", nd->tag, body,
		     g_c.pool);
		return 0;
	}
	if (st == 409) {
		info("%s: pool %s already has a server %s (%s)", nd->tag, g_c.pool, in->label, why);
		return 0;
	}
	if (st)
		err("%s: POST %s '%s': %ld: %s%s", nd->tag, path, body, st, why,
		    st == 401 ? " (check this node's token file against its lb's [admin] token_file)" : "");
	return -1;
}

/* ask one node to drain and remove a server; 0 when it took the request, 1 when the server is not
 * there, -2 when lb refuses because it is the pool's last server, -1 otherwise */
static int lb_del(struct node *nd, const char *name)
{
	char path[160], why[400];
	snprintf(path, sizeof path, "/api/pools/%s/servers/%s", g_c.pool, name);
	if (g_dry) {
		info("dry-run: would drain and remove %s server %s/%s: DELETE %s", nd->tag, g_c.pool, name, path);
		return 0;
	}
	long st = admin_change(nd, "DELETE", path, NULL, why, sizeof why);
	if (st == 202) {
		info("%s: draining %s/%s; lb removes it once nothing is in flight", nd->tag, g_c.pool, name);
		return 0;
	}
	if (st == 404) {
		debug("%s: %s/%s is not in lb", nd->tag, g_c.pool, name);
		return 1;
	}
	if (st)
		err("%s: DELETE %s: %ld: %s", nd->tag, path, st, why);
	return st == 409 ? -2 : -1;
}

/* poll one node until the server left its pool; 0 when gone */
static int lb_wait_gone(struct node *nd, const char *name, int64_t poll_ms)
{
	int64_t end = (int64_t)mono_ms() + WAIT_REMOVED_MS;
	while (!g_stop) {
		static struct lbsrv s[MAX_INSTANCES + 64];
		int n;
		if (lb_servers(nd, s, (int)(sizeof s / sizeof *s), &n) == 0 && !lb_find(s, n, name)) {
			info("%s: %s/%s drained and removed", nd->tag, g_c.pool, name);
			return 0;
		}
		if (nd->down) {
			warn("%s: %s/%s: the node stopped answering while it drained the server", nd->tag, g_c.pool, name);
			return -1;
		}
		if ((int64_t)mono_ms() > end) {
			char d[32];
			fmt_dur(d, sizeof d, WAIT_REMOVED_MS);
			err("%s: %s/%s still in the pool %s after it was asked to remove it: the instance is kept", nd->tag,
			    g_c.pool, name, d);
			return -1;
		}
		sleep_ms(poll_ms);
	}
	return -1;
}

/* the node entries of c with their tokens (admin_token_file unless the entry names its own);
 * -1 when a token file cannot be read. nd->cf points into g_c, which c is about to become. */
static int nodes_load(const struct conf *c, struct node *out, int *n, int need_token)
{
	memset(out, 0, sizeof *out * MAX_NODES);
	*n = 0;
	for (int k = 0; k < c->nnodes; k++) {
		struct node *nd = &out[k];
		nd->cf = &g_c.node[k];
		const char *u = strstr(c->node[k].url, "://");
		snprintf(nd->name, sizeof nd->name, "%.*s", (int)strcspn(u + 3, "/"), u + 3);
		if (c->nnodes == 1)
			snprintf(nd->tag, sizeof nd->tag, "lb");
		else
			snprintf(nd->tag, sizeof nd->tag, "lb %s", nd->name);
		const struct lb_scaler_node *nc = &c->node[k];
		const char *tf = nc->token_file[0] ? nc->token_file : c->admin_token_file;
		if (need_token && !(nd->token = read_secret(tf, nc->token_file[0] ? "admin_url token_file" :
		                                                                 "admin_token_file"))) {
			for (int i = 0; i < k; i++)
				free(out[i].token);
			return -1;
		}
		*n = k + 1;
	}
	return 0;
}

/* ================================================================================== host CPU */

struct cpusample {
	unsigned long long busy, total;
	int ok;
};

static struct cpusample host_sample(void)
{
	struct cpusample s = { 0, 0, 0 };
	FILE *f = fopen("/proc/stat", "r");
	unsigned long long v[10] = { 0 };
	if (!f)
		return s;
	int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
	               &v[5], &v[6], &v[7], &v[8], &v[9]);
	fclose(f);
	if (n < 4)
		return s;
	/* user nice system idle iowait irq softirq steal (guest time is inside user already) */
	for (int i = 0; i < 8 && i < n; i++)
		s.total += v[i];
	s.busy = s.total - v[3] - (n > 4 ? v[4] : 0);
	s.ok = 1;
	return s;
}

static struct cpusample g_host_prev;

/* the lb host's CPU (percent of all cores) since the previous call; -1 without a previous sample */
static double host_cpu(int fresh)
{
	if (fresh || !g_host_prev.ok) {
		g_host_prev = host_sample();
		sleep_ms(1000);
	}
	struct cpusample now = host_sample();
	double pct = -1;
	if (now.ok && g_host_prev.ok && now.total > g_host_prev.total)
		pct = 100.0 * (double)(now.busy - g_host_prev.busy) / (double)(now.total - g_host_prev.total);
	g_host_prev = now;
	return pct;
}

/* ================================================================================== the cycle */

enum { MODE_RUN, MODE_ONCE, MODE_STATUS, MODE_RECONCILE };

static int g_host_cpu_on;
static int64_t g_last_action_ms;     /* wall clock of the last change (this process's, or --state's) */
static const char *g_state_path;     /* --state FILE: the last change's time survives restarts and cron */

static void state_load(void)
{
	char *t = g_state_path ? read_text(g_state_path, 4096, NULL) : NULL;
	long long v;
	if (!t) {
		if (g_state_path && errno != ENOENT)
			warn("state %s: %s", g_state_path, strerror(errno));
		return;
	}
	if (sscanf(t, "last_action_ms %lld", &v) == 1 && v > 0 && v <= (int64_t)wall_ms() + 60000)
		g_last_action_ms = v;
	else
		warn("state %s: not understood; ignored", g_state_path);
	free(t);
}

/* a change was made now: the cooldown starts (and --state remembers it: temp file + rename) */
static void note_action(void)
{
	g_last_action_ms = (int64_t)wall_ms();
	if (!g_state_path || g_dry)
		return;
	char tmp[600];
	snprintf(tmp, sizeof tmp, "%s.tmp", g_state_path);
	FILE *f = fopen(tmp, "w");
	if (!f || fprintf(f, "last_action_ms %lld\n", (long long)g_last_action_ms) < 0 || fflush(f) != 0 ||
	    fsync(fileno(f)) != 0) {
		warn("state %s: cannot write: %s", tmp, strerror(errno));
		if (f)
			fclose(f);
		return;
	}
	if (fclose(f) != 0 || rename(tmp, g_state_path) != 0)
		warn("state %s: cannot write: %s", g_state_path, strerror(errno));
}
static int64_t g_low_since;          /* monotonic ms since the measured CPU is below scale_down_cpu; 0 */
static struct {                      /* lb removals this process asked for recently */
	char name[64];
	int node;
	int64_t at;
} g_asked[16];

static int64_t poll_ms(void)
{
	int64_t p = g_c.interval_ms / 6;
	return p < 1000 ? 1000 : p > 5000 ? 5000 : p;
}

static int label_seq(const char *label)
{
	size_t bl = strlen(g_c.base);
	if (strncmp(label, g_c.base, bl) || label[bl] != '-' || !isdigit((unsigned char)label[bl + 1]))
		return -1;
	char *e;
	long v = strtol(label + bl + 1, &e, 10);
	return *e || v < 0 || v > 1000000 ? -1 : (int)v;
}

static int label_ok(const char *s)
{
	size_t n = strlen(s);
	if (!n || n > 63)
		return 0;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '.' && *s != '_' && *s != '-')
			return 0;
	return 1;
}

/* the next label: TAGBASE-N, N one above the highest in use (deterministic: a create lost in a
 * crash is found under the same label instead of being sent twice) */
static void next_label(const struct inst *in, int n, char *out, size_t size)
{
	int top = 0;
	for (int i = 0; i < n; i++) {
		int s = label_seq(in[i].label);
		if (s > top)
			top = s;
	}
	snprintf(out, size, "%s-%d", g_c.base, top + 1);
}

static int set_tags(const struct inst *in, int draining)
{
	char path[64];
	struct abuf b = { 0 };
	snprintf(path, sizeof path, "/linode/instances/%lld", in->id);
	ab_printf(&b, "{\"tags\": [");
	buf_json(&b, g_c.tag);
	if (draining) {
		ab_printf(&b, ", ");
		buf_json(&b, g_c.drain_tag);
	}
	ab_printf(&b, "]}");
	long st = 200;
	if (g_dry)
		info("dry-run: would tag %s: PUT %s %s", in->label, path, buf_str(&b));
	else
		st = api("PUT", path, NULL, buf_str(&b), IDEMPOTENT, NULL, NULL, 0);
	buf_free(&b);
	return st == 200 ? 0 : -1;
}

static int delete_instance(const struct inst *in)
{
	char path[64], why[512];
	snprintf(path, sizeof path, "/linode/instances/%lld", in->id);
	if (g_dry) {
		info("dry-run: would delete instance %s (%lld): DELETE %s", in->label, in->id, path);
		return 0;
	}
	long st = api("DELETE", path, NULL, NULL, IDEMPOTENT | QUIET_4XX, NULL, why, sizeof why);
	if (st == 200 || st == 404) {
		info("linode: deleted instance %s (%lld)%s", in->label, in->id, st == 404 ? " (it was gone already)" : "");
		return 0;
	}
	if (st >= 400)
		err("linode: DELETE %s (%s): %ld: %s", path, in->label, st, why);
	return -1;
}

/* the second half of a removal: out of every lb node (drained), then deleted. A node that is down
 * or fails holds the deletion (the instance keeps its drain tag; a later cycle finishes it): a node
 * the scaler cannot reach may still be sending the server requests. */
static int set_tags(const struct inst *in, int draining);

static int finish_removal(const struct inst *in)
{
	unsigned asked = 0;
	int held = 0;
	for (int k = 0; k < g_nnodes && !g_stop; k++) {
		int rc = lb_del(&g_nodes[k], in->label);
		if (rc == -2) { /* the pool's last server: it stays, and stays ours */
			warn("instance %s is kept: %s keeps at least one server in pool %s", in->label, g_nodes[k].tag,
			     g_c.pool);
			set_tags(in, 0);
			return -1;
		}
		if (rc == 0)
			asked |= 1u << k;
		else if (rc < 0)
			held = 1;
	}
	for (int k = 0; k < g_nnodes && !g_stop && !g_dry; k++)
		if ((asked >> k & 1) && lb_wait_gone(&g_nodes[k], in->label, poll_ms()) != 0)
			held = 1;
	if (g_stop)
		return -1;
	if (held) {
		warn("instance %s (%lld) is kept with tag %s until every lb node has drained it (a later cycle goes on)",
		     in->label, in->id, g_c.drain_tag);
		return -1;
	}
	return delete_instance(in);
}

/* scale down: mark (tag), drain and remove from lb, delete */
static int scale_down(struct inst *in)
{
	info("scale down: removing instance %s (%lld, %s%s)", in->label, in->id, in->status,
	     in->has_cpu ? "" : ", no CPU data");
	if (set_tags(in, 1) != 0)
		return -1;
	if (finish_removal(in) != 0) {
		if (in->in_lb && !g_stop)
			warn("scale down of %s stopped; it keeps tag %s and the next cycle tries again", in->label,
			     g_c.drain_tag);
		return -1;
	}
	return 0;
}

/* the JSON body of the create call; with the password redacted when `shown` */
static int create_body(struct abuf *b, const char *label, const char *pass, int shown)
{
	ab_printf(b, "{\"type\": ");
	buf_json(b, g_c.type);
	ab_printf(b, ", \"region\": ");
	buf_json(b, g_c.region);
	ab_printf(b, ", \"label\": ");
	buf_json(b, label);
	ab_printf(b, ", \"tags\": [");
	buf_json(b, g_c.tag);
	ab_printf(b, "], \"private_ip\": true, \"booted\": true");
	if (g_c.image[0]) {
		ab_printf(b, ", \"image\": ");
		buf_json(b, g_c.image);
		ab_printf(b, ", \"root_pass\": ");
		buf_json(b, shown ? "<redacted: 40 random characters>" : pass);
		if (g_c.authorized_keys_file[0]) {
			char *keys = read_text(g_c.authorized_keys_file, 1 << 20, NULL);
			if (!keys) {
				err("authorized_keys_file %s: %s", g_c.authorized_keys_file, strerror(errno));
				return -1;
			}
			ab_printf(b, ", \"authorized_keys\": [");
			int k = 0;
			for (char *save = NULL, *ln = strtok_r(keys, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save)) {
				trim(ln);
				if (!*ln || *ln == '#')
					continue;
				ab_printf(b, "%s", k++ ? ", " : "");
				buf_json(b, ln);
			}
			ab_printf(b, "]");
			free(keys);
			if (!k) {
				err("authorized_keys_file %s holds no key", g_c.authorized_keys_file);
				return -1;
			}
		}
	} else if (g_c.authorized_keys_file[0]) {
		warn("authorized_keys_file is only used with an image: ignored");
	}
	if (g_c.user_data[0]) {
		size_t n;
		char *ud = read_text(g_c.user_data, 65535, &n);
		if (!ud) {
			err("user_data %s: %s%s", g_c.user_data, strerror(errno),
			    errno == EFBIG ? " (Linode takes at most 65535 bytes)" : "");
			return -1;
		}
		ab_printf(b, ", \"metadata\": {\"user_data\": \"");
		base64(b, (const unsigned char *)ud, n);
		ab_printf(b, "\"}");
		free(ud);
	}
	ab_printf(b, "}");
	return b->oom ? -1 : 0;
}

/* wait for status running (bounded); 0 when running */
static int wait_running(struct inst *in)
{
	int64_t end = (int64_t)mono_ms() + WAIT_RUNNING_MS;
	char last[32];
	snprintf(last, sizeof last, "%s", in->status);
	while (!g_stop && strcmp(in->status, "running")) {
		if ((int64_t)mono_ms() > end) {
			err("linode: instance %s (%lld) is still %s after %d min; lb gets it once it runs", in->label, in->id,
			    in->status, WAIT_RUNNING_MS / 60000);
			return -1;
		}
		if (sleep_ms(poll_ms()) != 0)
			break;
		struct inst now;
		long st = get_instance(in->id, &now);
		if (st == 404) {
			err("linode: instance %s (%lld) vanished while it was %s", in->label, in->id, in->status);
			return -1;
		}
		if (st != 200)
			continue;
		snprintf(in->status, sizeof in->status, "%s", now.status);
		if (strcmp(last, in->status)) {
			info("linode: instance %s (%lld) is %s", in->label, in->id, in->status);
			snprintf(last, sizeof last, "%s", in->status);
		}
	}
	return strcmp(in->status, "running") ? -1 : 0;
}

/* after an add: watch each node's health checks take the server in (bounded; only logs) */
static void watch_up(const char *name, unsigned mask)
{
	int64_t end = (int64_t)mono_ms() + WAIT_UP_MS;
	while (mask && !g_stop && (int64_t)mono_ms() < end) {
		for (int k = 0; k < g_nnodes; k++) {
			static struct lbsrv s[MAX_INSTANCES + 64];
			int n;
			const struct lbsrv *x;
			if ((mask >> k & 1) && lb_servers(&g_nodes[k], s, (int)(sizeof s / sizeof *s), &n) == 0 &&
			    (x = lb_find(s, n, name)) && !strcmp(x->state, "up")) {
				info("%s: %s/%s passed its health checks and takes traffic", g_nodes[k].tag, g_c.pool, name);
				mask &= ~(1u << k);
			}
		}
		if (mask)
			sleep_ms(500);
	}
	if (mask && !g_stop)
		warn("lb: %s/%s is not up %d s after it was added: is the service listening on port %d?", g_c.pool, name,
		     WAIT_UP_MS / 1000, g_c.server_port);
}

/* add a new instance to every lb node; a node that is down gets it from reconcile once it answers */
static int add_everywhere(const struct inst *in)
{
	unsigned added = 0;
	for (int k = 0; k < g_nnodes && !g_stop; k++) {
		if (lb_add(&g_nodes[k], in) == 0)
			added |= 1u << k;
		else if (g_nodes[k].down)
			warn("%s: down: it gets %s when it answers again", g_nodes[k].tag, in->label);
	}
	if (added && !g_dry)
		watch_up(in->label, added);
	return added == (1u << g_nnodes) - 1 ? 0 : -1;
}

/* scale up: create (idempotent by label), wait until running, add to lb */
static int scale_up(const struct inst *all, int n)
{
	char label[72], pass[64];
	next_label(all, n, label, sizeof label);
	struct abuf shown = { 0 }, body = { 0 };
	if (make_password(pass, sizeof pass) != 0) {
		err("cannot get random bytes for a root password");
		return -1;
	}
	if (create_body(&shown, label, pass, 1) != 0 || create_body(&body, label, pass, 0) != 0) {
		buf_free(&shown);
		buf_free(&body);
		memset(pass, 0, sizeof pass);
		return -1;
	}
	memset(pass, 0, sizeof pass);
	if (g_dry) {
		info("dry-run: would create instance %s: POST /linode/instances %s", label, buf_str(&shown));
		info("dry-run: then wait until it is running and add it to lb pool %s at its %s IPv4 port %d", g_c.pool,
		     g_c.public_addr ? "public" : "private", g_c.server_port);
		buf_free(&shown);
		memset(body.d, 0, body.n);
		buf_free(&body);
		return 0;
	}
	info("scale up: creating instance %s (%s in %s%s%s)", label, g_c.type, g_c.region, g_c.image[0] ? ", " : "",
	     g_c.image);
	struct inst in;
	int have = 0;
	for (int attempt = 1; attempt <= 3 && !have && !g_stop; attempt++) {
		struct lb_jdoc v;
		char why[1024];
		long st = api("POST", "/linode/instances", NULL, buf_str(&body), QUIET_4XX, &v, why, sizeof why);
		if (st == 200 && inst_from_json(&v, 0, &in) == 0) {
			have = 1;
		} else if (st >= 400 && st < 500) {
			err("linode: POST /linode/instances (%s): %ld: %s", label, st, why);
			lb_jdoc_free(&v);
			break;
		} else {
			/* 5xx or no answer: was it created anyway? Look for the label before sending again */
			struct inst found[4];
			int nf = 0;
			if (list_instances(found, &nf, "label", label) == 0 && nf > 0) {
				in = found[0];
				have = 1;
				info("linode: instance %s exists after all (%lld): not sent again", label, in.id);
			} else if (attempt < 3) {
				warn("linode: instance %s was not created; trying again", label);
				sleep_ms((int64_t)(BACKOFF_BASE_MS * 4 * attempt * jitter()));
			}
		}
		lb_jdoc_free(&v);
	}
	memset(body.d, 0, body.n);
	buf_free(&body);
	buf_free(&shown);
	if (!have)
		return -1;
	note_action();
	info("linode: created instance %s (%lld), %s", in.label, in.id, in.status);
	if (wait_running(&in) != 0)
		return -1;
	if (lookup_addr(&in) != 0)
		return -1;
	return add_everywhere(&in);
}

struct view {
	struct inst in[MAX_INSTANCES];
	int n;
	int nread;            /* lb nodes whose pool was read (each node's servers: g_nodes[k].lb) */
	int active, running;  /* instances not being removed; of them running */
	int pending;          /* active, not running, created less than WAIT_RUNNING_MS ago */
	int warming;          /* running, new, without CPU data yet */
	int ndata;
	double pool_cpu;      /* mean of the newest points; -1 none */
	double host;          /* -1 when not measured */
	double cpu;           /* what is decided on: max(pool, host); -1 unknown */
	double inflight;      /* lb's requests in flight per up server, all nodes read; -1 unknown */
	int nserving;         /* the servers that divides (up on at least one node) */
	double slow_share;    /* of the requests since the last cycle, slower than p99_bound_ms; -1 unknown */
	int64_t p99_bound_ms, requests;
	int hist_low;         /* every instance with data low over scale_down_after */
	int64_t newest_ms;    /* newest creation among active instances */
};

static int ours(const struct view *v, const char *name)
{
	if (label_seq(name) >= 0)
		return 1;
	for (int i = 0; i < v->n; i++)
		if (!strcmp(v->in[i].label, name))
			return 1;
	return 0;
}

static int have_active(const struct view *v, const char *name)
{
	for (int i = 0; i < v->n; i++)
		if (!v->in[i].draining && !strcmp(v->in[i].label, name))
			return 1;
	return 0;
}

static int asked_recently(int node, const char *name)
{
	for (size_t i = 0; i < sizeof g_asked / sizeof *g_asked; i++)
		if (g_asked[i].node == node && !strcmp(g_asked[i].name, name) && (int64_t)mono_ms() - g_asked[i].at < WAIT_REMOVED_MS)
			return 1;
	return 0;
}

static void remember_asked(int node, const char *name)
{
	size_t old = 0;
	for (size_t i = 0; i < sizeof g_asked / sizeof *g_asked; i++) {
		if (g_asked[i].node == node && !strcmp(g_asked[i].name, name)) {
			old = i;
			break;
		}
		if (g_asked[i].at < g_asked[old].at)
			old = i;
	}
	snprintf(g_asked[old].name, sizeof g_asked[old].name, "%s", name);
	g_asked[old].node = node;
	g_asked[old].at = (int64_t)mono_ms();
}

/* the node's server for an instance: by name, else at its address (an operator added it) */
static const struct lbsrv *node_server(const struct node *nd, const struct inst *in)
{
	const struct lbsrv *s = lb_find(nd->lb, nd->nlb, in->label);
	char want[80];
	if (!s && in->addr[0]) {
		snprintf(want, sizeof want, "%s:%d", in->addr, g_c.server_port);
		for (int k = 0; k < nd->nlb && !s; k++)
			if (!strcmp(nd->lb[k].addr, want))
				s = &nd->lb[k];
	}
	return s;
}

/* every lb node's pool, then the instances (in this order: a server another scaler adds between
 * the two reads has its instance in the list); matches them. -1 when Linode or no lb node can be
 * read; a node that cannot be read is left out (read = 0) and the others go on. */
static int observe(struct view *v)
{
	memset(v, 0, sizeof *v);
	v->pool_cpu = v->host = v->cpu = v->inflight = v->slow_share = -1;
	for (int k = 0; k < g_nnodes && !g_stop; k++) {
		struct node *nd = &g_nodes[k];
		if (nd->down && (int64_t)mono_ms() >= nd->next_try)
			debug("%s: trying the node again", nd->tag);
		nd->read = lb_servers(nd, nd->lb, (int)(sizeof nd->lb / sizeof *nd->lb), &nd->nlb) == 0;
		v->nread += nd->read;
	}
	if (!v->nread)
		return -1;
	if (list_instances(v->in, &v->n, NULL, NULL) != 0)
		return -1;
	for (int i = 0; i < v->n; i++) {
		struct inst *in = &v->in[i];
		for (int k = 0; k < g_nnodes; k++) {
			const struct lbsrv *s = g_nodes[k].read ? node_server(&g_nodes[k], in) : NULL;
			if (!s)
				continue;
			in->lb_mask |= 1u << k;
			in->in_lb = 1;
			if (!in->lb_state[0])
				snprintf(in->lb_state, sizeof in->lb_state, "%s", s->state);
		}
		if (!in->draining) {
			v->active++;
			if (!strcmp(in->status, "running"))
				v->running++;
			else if (in->created_ms > 0 && (int64_t)wall_ms() - in->created_ms < WAIT_RUNNING_MS)
				v->pending++;
			else
				warn("instance %s (%lld) is %s: it counts towards max but carries no load (start or delete "
				     "it; a scale-down removes it first)", in->label, in->id, in->status);
			if (in->created_ms > v->newest_ms)
				v->newest_ms = in->created_ms;
		}
	}
	return 0;
}

/* one node's pool in step with the instances: running ones it lacks are added, servers of ours
 * without an active instance are drained out (those of instances being removed too, when the
 * removal is not this process's to finish); servers not ours (added by hand) are left alone */
static int reconcile_node(struct view *v, int k, int finishing)
{
	struct node *nd = &g_nodes[k];
	int changed = 0;
	for (int i = 0; i < v->n && !g_stop; i++) {
		struct inst *in = &v->in[i];
		if (in->draining || (in->lb_mask >> k & 1) || strcmp(in->status, "running") || !label_ok(in->label))
			continue;
		if (lookup_addr(in) != 0)
			continue;
		const struct lbsrv *same = node_server(nd, in);
		if (same) { /* an operator added it under another name */
			debug("%s: instance %s is in lb as %s (%s)", nd->tag, in->label, same->name, same->addr);
			in->lb_mask |= 1u << k;
			continue;
		}
		info("reconcile: instance %s (%lld) is running but not in %s pool %s: adding it", in->label, in->id,
		     nd->tag, g_c.pool);
		if (lb_add(nd, in) == 0 && !g_dry)
			in->lb_mask |= 1u << k;
		changed = 1;
	}
	for (int j = 0; j < nd->nlb && !g_stop; j++) {
		const struct lbsrv *s = &nd->lb[j];
		if (!ours(v, s->name) || have_active(v, s->name))
			continue;
		int draining_inst = 0;
		for (int i = 0; i < v->n; i++)
			if (v->in[i].draining && !strcmp(v->in[i].label, s->name))
				draining_inst = 1;
		if (draining_inst && finishing)
			continue; /* finish_removal drains it */
		if (!strcmp(s->state, "drain") && (draining_inst || asked_recently(k, s->name)))
			continue; /* being drained already */
		if (draining_inst)
			info("reconcile: %s server %s/%s belongs to an instance being removed: draining it", nd->tag, g_c.pool,
			     s->name);
		else
			info("reconcile: %s server %s/%s (%s) has no Linode instance with tag %s: removing it from lb",
			     nd->tag, g_c.pool, s->name, s->addr, g_c.tag);
		if (lb_del(nd, s->name) == 0 && !g_dry)
			remember_asked(k, s->name);
		changed = 1;
	}
	return changed;
}

/* lb and Linode agree afterwards, on every node that answers: removals under way finish (only when
 * `finishing`: the scaler that decides; one in reconcile-only mode deletes no instance), each node
 * gets what it lacks and loses what has no instance */
static int reconcile(struct view *v, int finishing)
{
	int changed = 0;
	for (int i = 0; i < v->n && !g_stop && finishing; i++) {
		struct inst *in = &v->in[i];
		if (!in->draining)
			continue;
		info("reconcile: instance %s (%lld) was being removed (tag %s): finishing", in->label, in->id,
		     g_c.drain_tag);
		if (finish_removal(in) == 0)
			note_action();
		changed = 1;
	}
	for (int k = 0; k < g_nnodes && !g_stop; k++)
		if (g_nodes[k].read)
			changed |= reconcile_node(v, k, finishing);
	return changed;
}

/* lb's own figure: the requests in flight on every read node, per server up on at least one of
 * them (each node sends its share to the same servers), so a pool can grow before CPU saturates */
static void measure_inflight(struct view *v)
{
	double sum = 0;
	int serving = 0;
	for (int k = 0; k < g_nnodes; k++) {
		const struct node *nd = &g_nodes[k];
		for (int i = 0; nd->read && i < nd->nlb; i++) {
			int first = 1; /* its first node that has it up counts it */
			for (int j = 0; j <= k && first; j++)
				for (int m = 0; g_nodes[j].read && m < (j == k ? i : g_nodes[j].nlb) && first; m++)
					first = strcmp(g_nodes[j].lb[m].name, nd->lb[i].name) || strcmp(g_nodes[j].lb[m].state, "up");
			sum += nd->lb[i].active;
			serving += first && !strcmp(nd->lb[i].state, "up");
		}
	}
	v->nserving = serving;
	if (v->nread && serving)
		v->inflight = sum / serving;
}

/* one node's pool histogram from /metrics: the lb_server_request_duration_seconds_bucket lines of
 * the pool's servers, summed by bucket (lb.c's hist_us bounds, +Inf last); 0 or -1 */
static int node_hist(struct node *nd, uint64_t out[LB_HIST + 1])
{
	static const char name[] = "lb_server_request_duration_seconds_bucket{";
	struct resp r = { 0 };
	char pool[80];
	snprintf(pool, sizeof pool, "pool=\"%s\",", g_c.pool);
	memset(out, 0, sizeof(uint64_t) * (LB_HIST + 1));
	long st = admin(nd, "GET", "/metrics", NULL, &r);
	for (const char *ln = st == 200 ? buf_str(&r.body) : ""; *ln; ln = strchr(ln, '\n') ? strchr(ln, '\n') + 1 : "") {
		const char *le = strstr(ln, "le=\""), *end = strchr(ln, '\n'), *val = strstr(ln, "} ");
		if (strncmp(ln, name, sizeof name - 1) || strncmp(ln + sizeof name - 1, pool, strlen(pool)) || !le || !val ||
		    (end && (le > end || val > end)))
			continue;
		int b = 0; /* the bucket: its bound in µs as lb prints it (%g seconds), or +Inf */
		while (b < LB_HIST && fabs(strtod(le + 4, NULL) * 1e6 - hist_us[b]) > 0.5)
			b++;
		if (b < LB_HIST || !strncmp(le + 4, "+Inf", 4))
			out[b] += strtoull(val + 2, NULL, 10);
	}
	buf_free(&r.body);
	if (st != 200 && st)
		err("%s: GET /metrics: %ld", nd->tag, st);
	return st == 200 ? 0 : -1;
}

/* lb's latency figure: of the requests every read node finished since its last reading, the share
 * slower than scale_up_p99 (at the largest of lb's bucket bounds not above it); above 1% the p99 is */
static void measure_p99(struct view *v)
{
	int b = -1; /* the bucket whose bound is the threshold used */
	while (b + 1 < LB_HIST && hist_us[b + 1] <= (uint64_t)g_c.up_p99_ms * 1000)
		b++;
	uint64_t within = 0, all = 0;
	for (int k = 0; k < g_nnodes; k++) {
		struct node *nd = &g_nodes[k];
		uint64_t h[LB_HIST + 1];
		if (!nd->read || node_hist(nd, h) != 0)
			continue;
		int fresh = !nd->hist_read || h[LB_HIST] < nd->hist[LB_HIST]; /* first reading, or lb restarted */
		all += h[LB_HIST] - (fresh ? h[LB_HIST] : nd->hist[LB_HIST]);
		within += b < 0 ? 0 : h[b] - (fresh ? h[b] : nd->hist[b]);
		memcpy(nd->hist, h, sizeof h);
		nd->hist_read = 1;
	}
	v->p99_bound_ms = b < 0 ? 0 : (int64_t)(hist_us[b] / 1000);
	v->requests = (int64_t)all;
	if (all >= P99_MIN_REQUESTS)
		v->slow_share = 1.0 - (double)within / (double)all;
}

static void measure(struct view *v, int mode)
{
	measure_inflight(v);
	if (g_c.up_p99_ms)
		measure_p99(v);
	double sum = 0;
	int all_low = 1;
	for (int i = 0; i < v->n; i++) {
		struct inst *in = &v->in[i];
		if (in->draining || strcmp(in->status, "running"))
			continue;
		read_stats(in, v->running);
		if (!in->has_cpu && in->created_ms > 0 && (int64_t)wall_ms() - in->created_ms < WARMUP_MS)
			v->warming++;
		if (in->has_cpu) {
			sum += in->cpu;
			v->ndata++;
			if (!in->hist_low)
				all_low = 0;
		}
	}
	if (v->ndata)
		v->pool_cpu = sum / v->ndata;
	v->hist_low = v->ndata > 0 && all_low;
	if (g_host_cpu_on)
		v->host = host_cpu(mode != MODE_RUN);
	v->cpu = v->pool_cpu;
	if (v->host >= 0 && v->host > v->cpu)
		v->cpu = v->host;
	if (v->host >= 0 && v->host >= g_c.down_cpu)
		v->hist_low = 0;
}

enum { D_NONE, D_UP, D_DOWN };

/* the decision, with its reason in `why` */
static int decide(struct view *v, int mode, char *why, size_t size)
{
	int64_t now = (int64_t)wall_ms();
	int64_t last = g_last_action_ms > v->newest_ms ? g_last_action_ms : v->newest_ms;
	int64_t since = last > 0 ? now - last : INT64_MAX;
	int cooling = since < g_c.cooldown_ms;
	char cd[32], left[32];
	fmt_dur(cd, sizeof cd, g_c.cooldown_ms);
	fmt_dur(left, sizeof left, cooling ? (g_c.cooldown_ms - since + 999) / 1000 * 1000 : 0);
	/* the sustained-low clock (run: this process's cycles; any mode: Linode's 5-minute points) */
	if (mode == MODE_RUN) {
		if (v->cpu >= 0 && v->cpu < g_c.down_cpu) {
			if (!g_low_since)
				g_low_since = (int64_t)mono_ms();
		} else {
			g_low_since = 0;
		}
	}
	int64_t low_for = g_low_since ? (int64_t)mono_ms() - g_low_since : 0;
	int sustained = (g_low_since && low_for >= g_c.down_after_ms) || v->hist_low;
	int pending = v->pending;
	if (v->active < g_c.min) {
		if (pending) {
			snprintf(why, size, "below min (%d < %d), %d instance(s) not running yet: waiting", v->active, g_c.min,
			         pending);
			return D_NONE;
		}
		snprintf(why, size, "below min (%d < %d)", v->active, g_c.min);
		return D_UP;
	}
	if (v->active > g_c.max) {
		snprintf(why, size, "above max (%d > %d)", v->active, g_c.max);
		return D_DOWN;
	}
	int hot_cpu = v->cpu >= 0 && v->cpu >= g_c.up_cpu;
	int hot_q = (g_c.up_inflight && v->inflight >= g_c.up_inflight) || v->slow_share > 0.01;
	if (!hot_q && v->cpu < 0) {
		snprintf(why, size, "no CPU data yet (new instances have none for several minutes): no change");
		return D_NONE;
	}
	if (hot_cpu || hot_q) {
		char sig[120], up[120];
		if (hot_cpu) {
			snprintf(sig, sizeof sig, "cpu %.1f%% >= %g%%", v->cpu, g_c.up_cpu);
			snprintf(up, sizeof up, "cpu %.1f%% >= scale_up_cpu %g%%", v->cpu, g_c.up_cpu);
		} else if (v->slow_share > 0.01) {
			snprintf(sig, sizeof sig, "p99 > %" PRId64 "ms", v->p99_bound_ms);
			snprintf(up, sizeof up, "p99 > %" PRId64 "ms (%.1f%% of %" PRId64 " requests slower) >= scale_up_p99",
			         v->p99_bound_ms, v->slow_share * 100, v->requests);
		} else {
			snprintf(sig, sizeof sig, "in flight %.1f per server >= %u", v->inflight, g_c.up_inflight);
			snprintf(up, sizeof up, "in flight %.1f per server (%d serving) >= scale_up_inflight %u", v->inflight,
			         v->nserving, g_c.up_inflight);
		}
		if (v->active >= g_c.max) {
			snprintf(why, size, "%s but at max (%d): no change", sig, g_c.max);
			return D_NONE;
		}
		if (pending) {
			snprintf(why, size, "%s but %d instance(s) not running yet: waiting", sig, pending);
			return D_NONE;
		}
		if (v->warming && !hot_q) { /* lb's figure already counts a new server's share; CPU data lags */
			snprintf(why, size, "%s but %d new instance(s) have no CPU data yet: waiting", sig, v->warming);
			return D_NONE;
		}
		if (cooling) {
			snprintf(why, size, "%s but in cooldown (%s, %s left): no change", sig, cd, left);
			return D_NONE;
		}
		snprintf(why, size, "%s", up);
		return D_UP;
	}
	/* with one server fewer the others would take its requests: no scale-down that lb's figure would undo */
	if (g_c.up_inflight && v->inflight >= 0 && v->cpu < g_c.down_cpu &&
	    (v->nserving < 2 ? v->inflight > 0 : v->inflight * v->nserving / (v->nserving - 1) >= g_c.up_inflight)) {
		snprintf(why, size, "cpu %.1f%% < %g%% but in flight %.1f per server (%d serving) would reach "
		         "scale_up_inflight %u with one fewer: no change", v->cpu, g_c.down_cpu, v->inflight, v->nserving,
		         g_c.up_inflight);
		return D_NONE;
	}
	if (v->cpu < g_c.down_cpu) {
		char sa[32], lf[32];
		fmt_dur(sa, sizeof sa, g_c.down_after_ms);
		fmt_dur(lf, sizeof lf, low_for / 1000 * 1000);
		if (!sustained) {
			snprintf(why, size, "cpu %.1f%% < %g%% for %s of scale_down_after %s: no change", v->cpu, g_c.down_cpu,
			         mode == MODE_RUN ? lf : "less", sa);
			return D_NONE;
		}
		if (v->active <= g_c.min) {
			snprintf(why, size, "cpu %.1f%% < %g%% for %s but at min (%d): no change", v->cpu, g_c.down_cpu, sa,
			         g_c.min);
			return D_NONE;
		}
		if (cooling) {
			snprintf(why, size, "cpu %.1f%% < %g%% for %s but in cooldown (%s, %s left): no change", v->cpu,
			         g_c.down_cpu, sa, cd, left);
			return D_NONE;
		}
		snprintf(why, size, "cpu %.1f%% < scale_down_cpu %g%% for %s", v->cpu, g_c.down_cpu, sa);
		return D_DOWN;
	}
	snprintf(why, size, "cpu %.1f%% between %g%% and %g%%: no change", v->cpu, g_c.down_cpu, g_c.up_cpu);
	return D_NONE;
}

/* which instance goes: one not running yet first, then the newest, then the least loaded */
static struct inst *pick_down(struct view *v)
{
	struct inst *best = NULL;
	for (int i = 0; i < v->n; i++) {
		struct inst *in = &v->in[i];
		if (in->draining)
			continue;
		if (!best) {
			best = in;
			continue;
		}
		int r_in = !strcmp(in->status, "running"), r_b = !strcmp(best->status, "running");
		if (r_in != r_b) {
			if (!r_in)
				best = in;
			continue;
		}
		if (in->created_ms != best->created_ms) {
			if (in->created_ms > best->created_ms)
				best = in;
			continue;
		}
		double ci = in->has_cpu ? in->cpu : 0, cb = best->has_cpu ? best->cpu : 0;
		if (ci < cb || (ci == cb && in->id > best->id))
			best = in;
	}
	return best;
}

/* each node's state: "127.0.0.1:8404 3 server(s), 10.0.0.2:8404 down (why)" */
static void describe_nodes(char *out, size_t size)
{
	size_t o = 0;
	out[0] = 0;
	for (int k = 0; k < g_nnodes && o < size; k++) {
		const struct node *nd = &g_nodes[k];
		int w;
		if (nd->read)
			w = snprintf(out + o, size - o, "%s%s %d server(s)", k ? ", " : "", nd->name, nd->nlb);
		else
			w = snprintf(out + o, size - o, "%s%s %s (%.60s)", k ? ", " : "", nd->name,
			             nd->down ? "down" : "refused", nd->down ? nd->why : "see the error above");
		if (w < 0)
			break;
		o += (size_t)w;
	}
}

static void describe(const struct view *v, int with_cpu, char *out, size_t size)
{
	char pool[48] = "no data", host[32] = "", nodes[600], q[140] = "";
	if (v->inflight >= 0)
		snprintf(q, sizeof q, "; in flight %.1f per server (%d serving)", v->inflight, v->nserving);
	if (v->slow_share >= 0)
		snprintf(q + strlen(q), sizeof q - strlen(q), "; %.1f%% of %" PRId64 " requests over %" PRId64 "ms",
		         v->slow_share * 100, v->requests, v->p99_bound_ms);
	if (v->pool_cpu >= 0)
		snprintf(pool, sizeof pool, "%.1f%% (%d with data)", v->pool_cpu, v->ndata);
	if (v->host >= 0)
		snprintf(host, sizeof host, ", lb host %.1f%%", v->host);
	describe_nodes(nodes, sizeof nodes);
	if (g_nnodes == 1)
		snprintf(nodes, sizeof nodes, "has %d server(s)", g_nodes[0].nlb);
	snprintf(out, size, "%d instance(s) with tag %s (%d running, %d not running, %d being removed), lb pool %s %s%s%s"
	                    "%s%s%s",
	         v->n, g_c.tag, v->running, v->active - v->running, v->n - v->active, g_c.pool,
	         g_nnodes > 1 ? "on nodes " : "", nodes, with_cpu ? "; cpu " : "", with_cpu ? pool : "",
	         with_cpu ? host : "", with_cpu ? q : "");
}

/* ------------------------------------------------------------------ one controller per HA pair */

static const char *g_ha_path; /* --ha-state FILE: scale decisions only while it says VRRP master */
static int g_ha_master = -1;  /* what it said last: -1 not read yet */

/* keepalived's state as deploy/keepalived-notify.sh records it for node exporter (lb_keepalived.prom):
 * 1 when a sample `lb_keepalived_master{...} 1` is there, else 0 */
static int ha_master_in(const char *text)
{
	static const char name[] = "lb_keepalived_master";
	for (const char *ln = text; ln && *ln; ln = strchr(ln, '\n') ? strchr(ln, '\n') + 1 : NULL) {
		size_t len = strcspn(ln, "\n");
		if (strncmp(ln, name, sizeof name - 1) || (ln[sizeof name - 1] != '{' && ln[sizeof name - 1] != ' '))
			continue;
		const char *v = ln + len;
		while (v > ln && (v[-1] == ' ' || v[-1] == '\r'))
			v--;
		const char *e = v;
		while (v > ln && v[-1] != ' ' && v[-1] != '}')
			v--;
		if (e - v == 1 && *v == '1')
			return 1;
	}
	return 0;
}

/* may this scaler make scale decisions (and create or delete instances)? Without --ha-state: yes.
 * With it: only while the file says this node is the VRRP master; missing or unreadable: no (a
 * scaler unsure of being master only keeps the lb nodes in step) */
static int controller(void)
{
	if (!g_ha_path)
		return 1;
	char *t = read_text(g_ha_path, 1 << 16, NULL);
	int e = errno, m = t ? ha_master_in(t) : 0;
	if (m != g_ha_master) {
		if (m)
			info("ha: %s says this node is the VRRP master: this scaler makes the scale decisions", g_ha_path);
		else
			info("ha: %s %s%s: reconcile only (lb nodes kept in step with the tagged instances; no instance is "
			     "created or deleted)",
			     g_ha_path, t ? "says this node is not the VRRP master" : "cannot be read: ", t ? "" : strerror(e));
		g_ha_master = m;
		g_low_since = 0; /* a new controller measures "sustained low" from its own cycles (or Linode's history) */
	}
	free(t);
	return m;
}

/* one cycle; 0 when everything it tried worked. MODE_RECONCILE: observe and reconcile only (after a
 * node came back between cycles) */
static int cycle(int mode)
{
	static struct view v;
	char why[300], desc[900];
	int ctl = controller();
	if (observe(&v) != 0) {
		err("cycle: %s could not be read: no decision this time",
		    v.nread ? "Linode" : g_nnodes > 1 ? "no lb node" : "lb");
		return -1;
	}
	int changed = mode != MODE_STATUS ? reconcile(&v, ctl) : 0;
	int rc = v.nread < g_nnodes ? -1 : 0;
	if (g_stop || mode == MODE_RECONCILE)
		return rc;
	if (changed && !g_dry && observe(&v) != 0) /* the state after reconcile's changes */
		return -1;
	if (!ctl) {
		describe(&v, 0, desc, sizeof desc);
		info("%s; reconcile only (not the VRRP master per %s): no scale decision", desc, g_ha_path);
		return rc;
	}
	measure(&v, mode);
	describe(&v, 1, desc, sizeof desc);
	int d = decide(&v, mode, why, sizeof why);
	info("%s; decision: %s: %s", desc, d == D_UP ? "up" : d == D_DOWN ? "down" : "none", why);
	if (mode == MODE_STATUS || d == D_NONE || g_stop)
		return rc;
	if (d == D_UP) {
		rc |= scale_up(v.in, v.n);
	} else {
		struct inst *in = pick_down(&v);
		rc |= in ? scale_down(in) : -1;
	}
	if (!g_dry) {
		note_action();
		g_low_since = 0;
	}
	return rc;
}

/* between cycles: nodes that are down and due for a try are asked; 1 when one answered again */
static int probe_nodes(void)
{
	int back = 0;
	for (int k = 0; k < g_nnodes && !g_stop; k++) {
		struct node *nd = &g_nodes[k];
		if (!nd->down || (int64_t)mono_ms() < nd->next_try)
			continue;
		nd->read = lb_servers(nd, nd->lb, (int)(sizeof nd->lb / sizeof *nd->lb), &nd->nlb) == 0;
		back |= !nd->down;
	}
	return back;
}

/* ================================================================================== commands */

static int cmd_list(void)
{
	static struct inst in[MAX_INSTANCES];
	int n;
	if (list_instances(in, &n, NULL, NULL) != 0)
		return 1;
	printf("%-12s %-28s %-14s %-10s %-20s %s\n", "ID", "LABEL", "STATUS", "VCPUS", "CREATED", "ADDRESS");
	for (int i = 0; i < n; i++) {
		if (!strcmp(in[i].status, "running"))
			lookup_addr(&in[i]);
		printf("%-12lld %-28s %-14s %-10d %-20s %s%s\n", in[i].id, in[i].label, in[i].status, in[i].vcpus,
		       in[i].created, in[i].addr[0] ? in[i].addr : "-", in[i].draining ? "  (being removed)" : "");
	}
	return 0;
}

static int cmd_status(void)
{
	static struct view v;
	char why[300], desc[900];
	if (observe(&v) != 0)
		return 1;
	measure(&v, MODE_STATUS);
	describe(&v, 1, desc, sizeof desc);
	int d = decide(&v, MODE_STATUS, why, sizeof why);
	char cd[32], sa[32], iv[32];
	fmt_dur(cd, sizeof cd, g_c.cooldown_ms);
	fmt_dur(sa, sizeof sa, g_c.down_after_ms);
	fmt_dur(iv, sizeof iv, g_c.interval_ms);
	printf("pool %s (lb %s), tag %s, api %s\n", g_c.pool, g_c.admin_url, g_c.tag, g_c.api_url);
	for (int k = 0; k < g_nnodes; k++)
		printf("lb node %s: %s\n", g_nodes[k].cf->url,
		       g_nodes[k].read ? "answers" : g_nodes[k].down ? g_nodes[k].why : "refused (see the error above)");
	if (g_ha_path)
		printf("scale decisions: %s (%s)\n", controller() ? "made here (VRRP master)" : "not here (reconcile only)",
		       g_ha_path);
	printf("bounds min %d max %d; up at %g%%, down below %g%% for %s; cooldown %s; interval %s\n", g_c.min, g_c.max,
	       g_c.up_cpu, g_c.down_cpu, sa, cd, iv);
	if (g_c.up_inflight)
		printf("up also at %u requests in flight per server (lb's /api/stats)\n", g_c.up_inflight);
	if (g_c.up_p99_ms)
		printf("up also when more than 1%% of the requests between two cycles take over %" PRId64 " ms (lb's "
		       "/metrics)\n", g_c.up_p99_ms);
	printf("%s\n", desc);
	printf("%-12s %-28s %-12s %-10s %-9s %s\n", "ID", "LABEL", "STATUS", "CPU", "LB", "LB STATE");
	for (int i = 0; i < v.n; i++) {
		char cpu[16] = "no data";
		if (v.in[i].has_cpu)
			snprintf(cpu, sizeof cpu, "%.1f%%", v.in[i].cpu);
		char in_lb[16] = "no";
		if (g_nnodes > 1)
			snprintf(in_lb, sizeof in_lb, "%d/%d", __builtin_popcount(v.in[i].lb_mask), v.nread);
		else if (v.in[i].in_lb)
			snprintf(in_lb, sizeof in_lb, "yes");
		printf("%-12lld %-28s %-12s %-10s %-9s %s\n", v.in[i].id, v.in[i].label,
		       v.in[i].draining ? "removing" : v.in[i].status, cpu, in_lb,
		       v.in[i].lb_state[0] ? v.in[i].lb_state : "-");
	}
	for (int k = 0; k < g_nnodes; k++) /* servers not ours, once each (by name) */
		for (int j = 0; j < g_nodes[k].nlb; j++) {
			const struct lbsrv *s = &g_nodes[k].lb[j];
			int seen = 0;
			for (int q = 0; q < k && !seen; q++)
				seen = lb_find(g_nodes[q].lb, g_nodes[q].nlb, s->name) != NULL;
			if (!ours(&v, s->name) && !seen)
				printf("%-12s %-28s %-12s %-10s %-9s %s\n", "(static)", s->name, "-", "-", "yes", s->state);
		}
	printf("decision: %s: %s\n", d == D_UP ? "up" : d == D_DOWN ? "down" : "none", why);
	return 0;
}

static int cmd_force(int up)
{
	static struct view v;
	if (observe(&v) != 0)
		return 1;
	reconcile(&v, 1);
	if (!g_dry && observe(&v) != 0)
		return 1;
	if (up) {
		if (v.active >= g_c.max) {
			err("up: already at max (%d instances)", g_c.max);
			return 1;
		}
		return scale_up(v.in, v.n) == 0 ? 0 : 1;
	}
	if (v.active <= g_c.min) {
		err("down: already at min (%d instances)", g_c.min);
		return 1;
	}
	measure(&v, MODE_STATUS);
	struct inst *in = pick_down(&v);
	return in && scale_down(in) == 0 ? 0 : 1;
}

/* dns-set NAME IP: the A record NAME in the Domain that is its longest suffix gets target IP
 * (created when the domain has none) */
static int cmd_dns_set(const char *name, const char *ip)
{
	long long domain_id = -1;
	const char *rel = NULL;
	char dom[256];
	for (const char *p = name; p && *p; p = strchr(p, '.') ? strchr(p, '.') + 1 : NULL) {
		struct abuf f = { 0 };
		struct lb_jdoc v;
		ab_printf(&f, "{\"domain\": ");
		buf_json(&f, p);
		ab_printf(&f, "}");
		long st = api("GET", "/domains?page=1", buf_str(&f), NULL, IDEMPOTENT, &v, NULL, 0);
		buf_free(&f);
		if (st != 200)
			return 1;
		long first = lb_jdoc_next(&v, lb_jdoc_get(&v, 0, "data"), -1);
		if (lb_jdoc_int(&v, lb_jdoc_get(&v, first, "id"), &domain_id) == 0) {
			snprintf(dom, sizeof dom, "%s", p);
			rel = p == name ? "" : NULL;
			lb_jdoc_free(&v);
			break;
		}
		lb_jdoc_free(&v);
		domain_id = -1;
	}
	if (domain_id < 0) {
		err("dns-set: no Linode Domain holds %s", name);
		return 1;
	}
	char relname[256] = "";
	size_t nl = strlen(name), dl = strlen(dom);
	if (!rel && nl > dl + 1)
		snprintf(relname, sizeof relname, "%.*s", (int)(nl - dl - 1), name);
	char path[128];
	struct abuf f = { 0 };
	struct lb_jdoc v;
	ab_printf(&f, "{\"type\": \"A\", \"name\": ");
	buf_json(&f, relname);
	ab_printf(&f, "}");
	snprintf(path, sizeof path, "/domains/%lld/records?page=1", domain_id);
	long st = api("GET", path, buf_str(&f), NULL, IDEMPOTENT, &v, NULL, 0);
	buf_free(&f);
	if (st != 200)
		return 1;
	long long rid = -1;
	long data = lb_jdoc_get(&v, 0, "data");
	for (long r = lb_jdoc_next(&v, data, -1); r >= 0; r = lb_jdoc_next(&v, data, r)) {
		const char *t = lb_jdoc_str(&v, lb_jdoc_get(&v, r, "type")), *nm = lb_jdoc_str(&v, lb_jdoc_get(&v, r, "name"));
		if (t && nm && !strcmp(t, "A") && !strcmp(nm, relname) && lb_jdoc_int(&v, lb_jdoc_get(&v, r, "id"), &rid) == 0)
			break;
		rid = -1;
	}
	lb_jdoc_free(&v);
	struct abuf b = { 0 };
	int rc = 1;
	if (rid >= 0) {
		snprintf(path, sizeof path, "/domains/%lld/records/%lld", domain_id, rid);
		ab_printf(&b, "{\"target\": ");
		buf_json(&b, ip);
		ab_printf(&b, "}");
		if (g_dry) {
			info("dry-run: would set %s A %s: PUT %s %s", name, ip, path, buf_str(&b));
			rc = 0;
		} else if (api("PUT", path, NULL, buf_str(&b), IDEMPOTENT, NULL, NULL, 0) == 200) {
			info("dns: %s A %s (domain %s, record %lld)", name, ip, dom, rid);
			rc = 0;
		}
	} else {
		snprintf(path, sizeof path, "/domains/%lld/records", domain_id);
		ab_printf(&b, "{\"type\": \"A\", \"name\": ");
		buf_json(&b, relname);
		ab_printf(&b, ", \"target\": ");
		buf_json(&b, ip);
		ab_printf(&b, "}");
		if (g_dry) {
			info("dry-run: would create %s A %s: POST %s %s", name, ip, path, buf_str(&b));
			rc = 0;
		} else if (api("POST", path, NULL, buf_str(&b), 0, NULL, NULL, 0) == 200) {
			info("dns: %s A %s created (domain %s)", name, ip, dom);
			rc = 0;
		}
	}
	buf_free(&b);
	return rc;
}

static void scaler_usage(FILE *f)
{
	fprintf(f, "usage: linode-scaler COMMAND [-c FILE] [--dry-run] [--host-cpu] [--state FILE] [-v]\n"
	           "  run              loop every [scaler] interval: reconcile, measure CPU, decide, act\n"
	           "  once             one cycle (cron, tests)\n"
	           "  check            check the [scaler] section and read the token files (no network)\n"
	           "  status           what a cycle sees and would decide (changes nothing)\n"
	           "  list             the instances with the scaler's tag\n"
	           "  up | down        one instance more / less now (max and min still hold)\n"
	           "  dns-set NAME IP  point the A record NAME (in its Linode Domain) at IP\n"
	           "options:\n"
	           "  -c FILE          lb's config with a [scaler] section (default config.ini)\n"
	           "  --dry-run        log the decisions and the requests that would change something; change nothing\n"
	           "  --host-cpu       also scale on this host's CPU (/proc/stat): the larger of the two counts\n"
	           "  --state FILE     keep the time of the last change there (cooldown across restarts and cron runs)\n"
	           "  --ha-state FILE  HA pair: make scale decisions only while keepalived's state file (the notify\n"
	           "                   script's lb_keepalived.prom) says this node is the VRRP master; else reconcile only\n"
	           "  -v               debug lines\n");
}

static int load_all(const char *path, int need_admin)
{
	struct conf c;
	if (conf_load(path, &c) != 0)
		return -1;
	char *t = read_secret(c.token_file, "token_file");
	if (!t)
		return -1;
	static struct node nodes[MAX_NODES];
	int nn;
	if (nodes_load(&c, nodes, &nn, need_admin) != 0) {
		free(t);
		return -1;
	}
	if (g_api_token) {
		memset(g_api_token, 0, strlen(g_api_token));
		free(g_api_token);
	}
	for (int k = 0; k < g_nnodes; k++)
		if (g_nodes[k].token) {
			memset(g_nodes[k].token, 0, strlen(g_nodes[k].token));
			free(g_nodes[k].token);
		}
	g_c = c;
	g_api_token = t;
	memcpy(g_nodes, nodes, sizeof g_nodes);
	g_nnodes = nn;
	return 0;
}

int main(int argc, char **argv)
{
	const char *cmd = NULL, *path = "config.ini", *args[2] = { NULL, NULL };
	int nargs = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-c") && i + 1 < argc)
			path = argv[++i];
		else if (!strcmp(a, "--dry-run") || !strcmp(a, "-n"))
			g_dry = 1;
		else if (!strcmp(a, "--host-cpu"))
			g_host_cpu_on = 1;
		else if (!strcmp(a, "--state") && i + 1 < argc)
			g_state_path = argv[++i];
		else if (!strcmp(a, "--ha-state") && i + 1 < argc)
			g_ha_path = argv[++i];
		else if (!strcmp(a, "-v"))
			g_verbose = 1;
		else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			scaler_usage(stdout);
			return 0;
		} else if (!strcmp(a, "--version")) {
			printf("linode-scaler %s\n", SCALER_VERSION);
			return 0;
		} else if (a[0] == '-') {
			fprintf(stderr, "linode-scaler: unknown option %s\n", a);
			scaler_usage(stderr);
			return 2;
		} else if (!cmd)
			cmd = a;
		else if (nargs < 2)
			args[nargs++] = a;
		else {
			scaler_usage(stderr);
			return 2;
		}
	}
	if (!cmd) {
		scaler_usage(stderr);
		return 2;
	}
	int is_dns = !strcmp(cmd, "dns-set");
	if (strcmp(cmd, "run") && strcmp(cmd, "once") && strcmp(cmd, "status") && strcmp(cmd, "list") &&
	    strcmp(cmd, "check") &&
	    strcmp(cmd, "up") && strcmp(cmd, "down") && !is_dns) {
		fprintf(stderr, "linode-scaler: unknown command %s\n", cmd);
		scaler_usage(stderr);
		return 2;
	}
	if (is_dns != (nargs == 2) || (!is_dns && nargs)) {
		scaler_usage(stderr);
		return 2;
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_scaler_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fprintf(stderr, "linode-scaler: curl_global_init failed\n");
		return 1;
	}
	if (load_all(path, strcmp(cmd, "list") && !is_dns) != 0)
		return 2;
	state_load();
	int rc = 0;
	if (!strcmp(cmd, "check"))
		printf("%s: [scaler] is valid; pool %s, tag %s, token files readable\n", path, g_c.pool, g_c.tag);
	else if (!strcmp(cmd, "list"))
		rc = cmd_list();
	else if (!strcmp(cmd, "status"))
		rc = cmd_status();
	else if (!strcmp(cmd, "up") || !strcmp(cmd, "down"))
		rc = cmd_force(!strcmp(cmd, "up"));
	else if (is_dns)
		rc = cmd_dns_set(args[0], args[1]);
	else if (!strcmp(cmd, "once"))
		rc = cycle(MODE_ONCE) == 0 ? 0 : 1;
	else {
		char iv[32], cd[32], sa2[32];
		fmt_dur(iv, sizeof iv, g_c.interval_ms);
		fmt_dur(cd, sizeof cd, g_c.cooldown_ms);
		fmt_dur(sa2, sizeof sa2, g_c.down_after_ms);
		info("starting%s: pool %s, tag %s, instances %d..%d, up at %g%%, down below %g%% for %s, cooldown %s, every "
		     "%s; api %s, lb %s",
		     g_dry ? " (dry run: nothing is changed)" : "", g_c.pool, g_c.tag, g_c.min, g_c.max, g_c.up_cpu,
		     g_c.down_cpu, sa2, cd, iv, g_c.api_url, g_c.admin_url);
		if (g_host_cpu_on)
			host_cpu(0);
		while (!g_stop) {
			if (g_hup) {
				g_hup = 0;
				if (load_all(path, 1) == 0)
					info("configuration re-read from %s", path);
				else
					err("configuration %s has errors: the previous one stays", path);
			}
			int64_t t0 = (int64_t)mono_ms();
			cycle(MODE_RUN);
			for (int64_t left; !g_stop && !g_hup && (left = g_c.interval_ms - ((int64_t)mono_ms() - t0)) > 0;) {
				sleep_ms(left < 200 ? left : 200);
				if (probe_nodes()) /* a node is back: its pool in step now, not at the next cycle */
					cycle(MODE_RECONCILE);
			}
		}
		info("stopping (signal)");
	}
	if (g_curl)
		curl_easy_cleanup(g_curl);
	curl_global_cleanup();
	return rc;
}
