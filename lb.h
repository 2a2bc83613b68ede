/* lb.h — public types and the pure functions that lb.c, the tests and the fuzzers share.
 *
 * Parsers here are pure: (const char *buf, size_t len, struct out *) -> status, no I/O, no globals.
 * Outputs that are strings point into the caller's buffer (struct lb_str), never copies.
 */
#ifndef LB_H
#define LB_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <netinet/in.h>

#ifndef LB_TLS_OPENSSL
#include <bearssl.h> /* the BearSSL engine constructors below */
#endif

#define LB_VERSION "0.1.0"

/* Error codes: functions return 0 or a positive count on success, one of these on failure. */
enum {
	LB_OK = 0,
	LB_EINVAL = -1,   /* malformed input */
	LB_EAGAIN = -2,   /* incomplete input: feed more bytes */
	LB_ENOMEM = -3,   /* a bound or a pool is exhausted */
	LB_ERANGE = -4,   /* a number out of its range */
};

/* Fixed bounds of the parsers (config keys bound the rest). */
#define LB_MAX_HEADERS      100   /* header fields in one head; more -> 431 */
#define LB_NAME_MAX         64    /* listener, pool, server, route names (with NUL) */
#define LB_HOST_MAX         256   /* host names in config and Host headers (with NUL) */
#define LB_MAX_BINDS        16    /* bind addresses of one listener */
#define LB_MAX_CERTS        16    /* cert = files of one listener */
#define LB_CERT_NAMES       32    /* DNS names kept from one certificate */
#define LB_CHUNK_LINE_MAX   4096  /* chunk-size line with extensions, and one trailer line */
#define LB_TRAILERS_MAX     16384 /* all trailer lines of one chunked body */
#define LB_REQUEST_ID_MAX   128   /* a client's X-Request-ID longer than this is replaced */
#define LB_KEEPALIVE_AUTO   0xFFFFFFFFu /* keepalive = auto: idle server connections follow the need */

/* Bounds of one configuration (README "Limits"); lb_conf_parse reports a file beyond one once,
 * at the line of the first section or server past it. Shared memory is sized from the file. */
#define LB_MAX_LISTENERS    1024
#define LB_MAX_POOLS        4096
#define LB_MAX_POOL_SERVERS 1024  /* servers of one pool: every pick scans its pool */
#define LB_MAX_SERVERS      65536 /* servers of all pools */
#define LB_MAX_ROUTES       16384 /* tried in file order for each request */

struct lb_str {
	const char *p;
	size_t n;
};

/* Header names the proxy acts on, recognised once by the parser (case-insensitive) so that
 * forwarding decides by a compare of small integers, not of strings. */
enum lb_hdr {
	LB_H_OTHER = 0, LB_H_HOST, LB_H_CONNECTION, LB_H_CONTENT_LENGTH, LB_H_TRANSFER_ENCODING,
	LB_H_EXPECT, LB_H_UPGRADE, LB_H_KEEP_ALIVE, LB_H_PROXY_CONNECTION, LB_H_TE, LB_H_TRAILER,
	LB_H_X_FORWARDED_FOR, LB_H_X_FORWARDED_PROTO, LB_H_X_FORWARDED_HOST, LB_H_X_CLIENT_CERT_SUBJECT,
	LB_H_X_REQUEST_ID, LB_H_REFERER, LB_H_USER_AGENT, LB_H_STRICT_TRANSPORT_SECURITY, LB_H_COOKIE,
};

struct lb_header {
	struct lb_str name;
	struct lb_str value; /* without leading/trailing whitespace */
	int id;              /* enum lb_hdr */
};
/* The enum lb_hdr of a header name (LB_H_OTHER when it is none of them). */
int lb_header_id(const char *name, size_t n);

/* ------------------------------------------------------------------ HTTP heads */

enum lb_method {
	LB_M_OTHER = 0, LB_M_GET, LB_M_HEAD, LB_M_POST, LB_M_PUT, LB_M_DELETE,
	LB_M_OPTIONS, LB_M_PATCH, LB_M_CONNECT, LB_M_TRACE,
};

/* Message flags derived from the head. */
#define LB_HF_CHUNKED     0x01u /* Transfer-Encoding ends in chunked */
#define LB_HF_CLOSE       0x02u /* Connection: close (or HTTP/1.0 without keep-alive) */
#define LB_HF_KEEPALIVE   0x04u /* Connection: keep-alive (matters for HTTP/1.0) */
#define LB_HF_UPGRADE     0x08u /* Connection: upgrade and an Upgrade header */
#define LB_HF_EXPECT_100  0x10u /* Expect: 100-continue */
#define LB_HF_ABSOLUTE    0x20u /* request-target was absolute-form */
#define LB_HF_HAS_CL      0x40u /* Content-Length present */
#define LB_HF_TE          0x80u /* Transfer-Encoding present */
#define LB_HF_CONN_NAMES  0x100u /* Connection lists a name other than close, keep-alive, upgrade */

struct lb_req {
	struct lb_str method;
	struct lb_str target;   /* as sent */
	struct lb_str path;     /* path part of the target (origin-form view, also for absolute-form) */
	struct lb_str query;    /* after '?', without it; n == 0 and p == NULL when absent */
	struct lb_str host;     /* host name from Host (or the absolute URI), without port, as sent */
	struct lb_str authority;/* the whole Host value (host[:port]) */
	struct lb_str upgrade;  /* Upgrade header value when LB_HF_UPGRADE */
	int method_id;          /* enum lb_method */
	int minor;              /* HTTP/1.minor: 0 or 1 */
	unsigned flags;         /* LB_HF_* */
	int64_t content_length; /* -1 when absent */
	size_t nheaders;
	struct lb_header headers[LB_MAX_HEADERS];
	int status;             /* on LB_EINVAL: the status to answer (400, 414, 431, 417, 501, 505) */
	const char *error;      /* on LB_EINVAL: a short reason for the log (static string) */
};

struct lb_resp {
	int minor;
	int status;             /* 100..999 */
	struct lb_str reason;
	unsigned flags;         /* LB_HF_CHUNKED, LB_HF_CLOSE, LB_HF_KEEPALIVE, LB_HF_HAS_CL, LB_HF_TE */
	int64_t content_length; /* -1 when absent */
	size_t nheaders;
	struct lb_header headers[LB_MAX_HEADERS];
	const char *error;
};

/* Parse a complete request head (request line, fields, empty line), strict RFC 9112 with CRLF line
 * ends. Returns the head's length in bytes (> 0), LB_EAGAIN when buf does not yet hold the empty
 * line, LB_EINVAL when the head must be refused (req->status and req->error say why). */
int lb_parse_request(const char *buf, size_t len, struct lb_req *req);

/* The same for a response head. LB_EINVAL sets resp->error. */
int lb_parse_response(const char *buf, size_t len, struct lb_resp *resp);

/* Case-insensitive lookup of a header; NULL when absent. */
const struct lb_header *lb_header_find(const struct lb_header *h, size_t n, const char *name);

/* Does a response to this request carry a body? (HEAD, 1xx, 204, 304 never do.) */
int lb_resp_has_body(int req_method_id, int status);

/* Normalise an origin-form path for routing and forwarding: decode %XX of unreserved characters,
 * upper-case the remaining escapes, remove dot segments (RFC 3986 5.2.4). out must hold n bytes.
 * Returns the new length, or LB_EINVAL (bad escape, NUL, not starting with '/'). */
long lb_normalize_path(const char *in, size_t n, char *out);

/* Is s a well-formed X-Request-ID we keep (1..LB_REQUEST_ID_MAX of [A-Za-z0-9._:-])? */
int lb_request_id_ok(const char *s, size_t n);

/* ------------------------------------------------------------------ chunked framing */

/* A streaming validator of chunked framing. The proxy forwards the raw bytes it accepts, so it only
 * needs to know where the body ends and that the framing is unambiguous. */
struct lb_chunk {
	uint64_t remain;     /* data bytes left in the current chunk */
	uint64_t body;       /* total chunk data bytes seen */
	uint32_t line;       /* bytes in the current size/trailer line (bounded by LB_CHUNK_LINE_MAX) */
	uint32_t trailers;   /* bytes of trailers so far (bounded by LB_CHUNK_TRAILERS_MAX) */
	int8_t state;        /* CK_*, -1 after an error */
	uint8_t digits;      /* hex digits of the current size (at most 16) */
};
enum { LB_CHUNK_MORE = 0, LB_CHUNK_DONE = 1, LB_CHUNK_ERROR = -1 };

void lb_chunk_init(struct lb_chunk *st);
/* Scan len bytes. *used is how many belong to the body (all of them unless DONE or ERROR).
 * Returns LB_CHUNK_MORE, LB_CHUNK_DONE (body ends after *used bytes) or LB_CHUNK_ERROR. */
int lb_chunk_scan(struct lb_chunk *st, const char *buf, size_t len, size_t *used);

/* ------------------------------------------------------------------ value parsers */

int lb_parse_duration(const char *s, size_t n, uint64_t *ms);   /* 250ms 10s 5m 1h 1d */
int lb_parse_size(const char *s, size_t n, uint64_t *bytes);    /* 512 16k 10m 1g */
int lb_parse_bool(const char *s, size_t n, int *on);            /* on off */

struct lb_hostport {
	char host[LB_HOST_MAX]; /* "" when wildcard */
	uint16_t port;
	int wildcard;           /* *:port */
	int v6;                 /* written [v6]:port */
};
/* host:port, [v6]:port, *:port */
int lb_parse_hostport(const char *s, size_t n, struct lb_hostport *out);

struct lb_server_spec {
	char name[LB_NAME_MAX];
	struct lb_hostport addr;
	unsigned weight;        /* 1..1000, default 1 */
	unsigned max_conn;      /* 0 = unlimited */
	int backup, disabled, tls;
	const char *error;      /* on LB_EINVAL */
};
/* "NAME HOST:PORT [weight=N] [backup] [max_conn=N] [tls] [disabled]" */
int lb_parse_server(const char *s, size_t n, struct lb_server_spec *out);

/* ------------------------------------------------------------------ addresses and policies */

struct lb_ip {                /* a client address; IPv4 (also v4-mapped IPv6) in a[0..3] */
	uint8_t a[16];
	uint8_t v6;               /* 0 or 1 */
};
struct lb_cidr {
	struct lb_ip net;
	unsigned bits;            /* prefix length: 0..32 or 0..128 */
};
/* "10.0.0.0/8", "2001:db8::/32", or a bare address (/32, /128). Host bits must be zero. */
int lb_parse_cidr(const char *s, size_t n, struct lb_cidr *out);
int lb_cidr_match(const struct lb_cidr *c, const struct lb_ip *ip);
int lb_ip_from_sockaddr(const struct sockaddr_storage *sa, struct lb_ip *out);

/* A token bucket: `rate` tokens per `period_ms`, at most `burst`. Kept as exact integer
 * credit: a token costs period_ms credits and every millisecond adds `rate`, so no fraction
 * is ever rounded away however often it is asked. Returns 1 and takes a token, or 0 and sets
 * *retry_ms to the time until one is there. Pure: the caller owns the state and the clock. */
struct lb_bucket {
	uint64_t credit;          /* tokens x period_ms */
	uint64_t last_ms;
};
int lb_bucket_take(struct lb_bucket *b, uint64_t now_ms, uint64_t rate, uint64_t period_ms, uint64_t burst,
                   uint64_t *retry_ms);

enum lb_rl_by { LB_RL_IP = 0, LB_RL_GLOBAL, LB_RL_HEADER };
struct lb_rate_limit {
	uint64_t rate, period_ms, burst; /* rate == 0: off */
	int by;
	char header[LB_NAME_MAX];
};
/* "N/second|minute|hour [burst=N] [by=ip|global|header:NAME]"; error text in *err */
int lb_parse_rate_limit(const char *s, size_t n, struct lb_rate_limit *out, const char **err);

struct lb_acl_rule {
	int allow;
	struct lb_cidr net;
};

/* ------------------------------------------------------------------ PROXY protocol */

#define LB_PROXY_V1_MAX 107   /* the longest v1 line, CRLF included (the spec's bound) */
#define LB_PROXY_V2_MAX 1024  /* a v2 header with more TLV bytes than this is refused */
enum { LB_PROXY_V1 = 1, LB_PROXY_V2 = 2, LB_PROXY_ANY = 3 };
struct lb_proxy {
	const char *error;        /* on LB_EINVAL */
	struct lb_ip src, dst;    /* v4-mapped IPv6 is returned as IPv4 */
	uint16_t sport, dport;
	uint8_t version;          /* 1 or 2 */
	uint8_t local;            /* v1 UNKNOWN, v2 LOCAL/UNSPEC/UNIX: no address, keep the connection's */
};
/* Parse a PROXY header of one of `versions` (LB_PROXY_V1|LB_PROXY_V2) at the start of buf.
 * Returns its length (> 0), LB_EAGAIN when more bytes are needed, LB_EINVAL (o->error says why). */
int lb_parse_proxy(const char *buf, size_t len, int versions, struct lb_proxy *o);

/* ------------------------------------------------------------------ X.509 and ACME (TLS) */

/* What SNI and the metrics need from a DER certificate: the DNS names of its subjectAltName
 * (else its subject CN), lower case, "*.example.com" kept as is; notAfter as Unix time; the
 * serial in hex. Returns 0, or LB_EINVAL with error set on a malformed certificate. */
struct lb_x509_info {
	char names[LB_CERT_NAMES][LB_HOST_MAX];
	size_t nnames;
	int64_t not_after, not_before;
	char serial[65];
	char cn[LB_HOST_MAX];
	const char *error;
};
int lb_x509_info(const unsigned char *der, size_t len, struct lb_x509_info *o);

/* Does a certificate name match an SNI host name? Exact, or "*.x" for one label before .x. */
int lb_cert_name_match(const char *pattern, const char *host, size_t hn);

/* Why a TLS handshake with a client failed: the reason label of
 * lb_tls_handshake_failures_total{reason} (lb_tls_fail_name) and a line for the error log.
 * lb_tls_fail_classify is pure: lb's TLS error code (BearSSL's numbers, br_ssl_engine_last_error;
 * the OpenSSL build maps its errors to them), whether the
 * listener has client_ca, and whether the client's curves and lb's had none in common (the
 * server context's filtered `curves` is 0) -> the reason, with text written to text[cap]. */
enum lb_tls_fail {
	LB_TLS_F_PROTOCOL_VERSION, /* no TLS 1.2: an older client (lb sent protocol_version), or one that refused it */
	LB_TLS_F_NO_SHARED_CIPHER, /* no cipher suite, curve or signature hash in common (lb sent handshake_failure) */
	LB_TLS_F_BAD_RECORD,       /* not TLS at all, or a record malformed, too large or failing its MAC */
	LB_TLS_F_PROTOCOL,         /* any other error in the handshake (malformed or unexpected message, ...) */
	LB_TLS_F_ALERT,            /* the client ended the handshake with a fatal alert */
	LB_TLS_F_CLIENT_CERT,      /* client_ca listener: no client certificate, or one that does not validate */
	LB_TLS_F_TIMEOUT,          /* not complete within header_timeout (counted by the caller) */
	LB_TLS_F_CLOSED,           /* the client closed or reset mid-handshake (counted by the caller) */
	LB_TLS_F_N
};
int lb_tls_fail_classify(int err, int client_ca, int no_common_curve, char *text, size_t cap);
const char *lb_tls_fail_name(int reason);

/* TLS engines. Every BearSSL engine lb makes, towards clients and towards servers, gets 32
 * bytes from the kernel on top of BearSSL's own seeding (RDRAND alone on x86), before its reset.
 * lb_os_entropy fills out with getrandom() (EINTR retried), else /dev/urandom
 * (lb_urandom_entropy) where getrandom is missing or refused; 0, or -1 when neither gave the
 * bytes. The constructors set lb's engine settings and that entropy; 0, or -1 when there was
 * no entropy: the engine must not be used. */
int lb_os_entropy(void *out, size_t n);
int lb_urandom_entropy(void *out, size_t n);
#ifndef LB_TLS_OPENSSL /* the BearSSL build's (tests/unit.c, tests/bench/tlsceil.c) */
int lb_tls_server_engine(br_ssl_server_context *sc, unsigned char *buf, size_t len, int alpn);
int lb_tls_client_engine(br_ssl_client_context *cc, br_x509_minimal_context *xc, const br_x509_trust_anchor *tas,
                         size_t ntas, unsigned char *buf, size_t len);
#endif

/* The file name an ACME HTTP-01 request path asks for: path must be
 * "/.well-known/acme-challenge/TOKEN" with TOKEN of base64url characters only (RFC 8555
 * 8.3), 1..LB_ACME_TOKEN_MAX long. Returns the token length and points *token at it, 0 when
 * the path is not under the challenge directory, LB_EINVAL for a bad token (-> 404/400). */
#define LB_ACME_PREFIX "/.well-known/acme-challenge/"
#define LB_ACME_TOKEN_MAX 128
long lb_acme_token(const char *path, size_t n, const char **token);
/* Write a PROXY header for p (src/dst/ports, or local) in version 1 or 2; returns its length,
 * LB_ERANGE when cap is too small. Mixed families are sent as IPv6 (v4-mapped). */
int lb_proxy_build(int version, const struct lb_proxy *p, char *out, size_t cap);
/* Text form of an address (inet_ntop); 0 or LB_ERANGE. */
int lb_ip_format(const struct lb_ip *ip, char *out, size_t cap);

/* ------------------------------------------------------------------ admin API */

enum lb_admin_op {
	LB_A_NONE = 0, LB_A_DASHBOARD, LB_A_HEALTHZ, LB_A_METRICS, LB_A_STATS, LB_A_CONFIG, LB_A_RELOAD,
	LB_A_SERVER_ADD, LB_A_SERVER_DEL, LB_A_DRAIN, LB_A_ENABLE, LB_A_DISABLE, LB_A_WEIGHT, LB_A_SPLIT,
	LB_A_HISTORY, LB_A_FORM,
};
struct lb_admin_call {
	int op;                       /* LB_A_* */
	int mutating;                 /* needs the bearer token */
	int dry_run;                  /* ?dry_run=1 */
	char pool[LB_NAME_MAX], server[LB_NAME_MAX], route[LB_NAME_MAX];
	int status;                   /* on LB_EINVAL: 400, 404 or 405 */
	const char *error;
};
/* Which admin call a method and request-target (with its query) name. */
int lb_admin_route(const char *method, size_t mlen, const char *target, size_t tlen, struct lb_admin_call *o);

struct lb_split_spec {
	size_t n;
	char name[16][LB_NAME_MAX];
	unsigned weight[16];
};
/* "blue 0, green 100": pool names and weights 0..1000, not all 0. */
int lb_parse_split(const char *s, size_t n, struct lb_split_spec *o);
/* A weight body: 1..1000, surrounding whitespace allowed. */
int lb_parse_weight(const char *s, size_t n, unsigned *out);

/* The dashboard's form (POST /, application/x-www-form-urlencoded): token=T, do=ACTION POOL/SERVER
 * (drain, enable, disable or weight) and, for weight, w.POOL/SERVER=1..1000. 0 or LB_EINVAL with
 * error set. */
struct lb_form_action {
	int op;                       /* LB_A_DRAIN, LB_A_ENABLE, LB_A_DISABLE or LB_A_WEIGHT */
	char pool[LB_NAME_MAX], server[LB_NAME_MAX];
	unsigned weight;
	char token[256];
	size_t token_len;
	const char *error;
};
int lb_parse_form_action(const char *body, size_t n, struct lb_form_action *o);

/* ------------------------------------------------------------------ JSON tokens, documents (lb ctl reads /api/stats, linode-scaler the Linode API) */

enum lb_jtype { LB_J_OBJ = 1, LB_J_ARR, LB_J_STR, LB_J_PRIM };
struct lb_jtok {
	int type;                     /* LB_J_* */
	uint32_t start, end;          /* the text: a string's without its quotes */
	uint32_t size;                /* direct children: an object's keys, an array's values */
	uint32_t next;                /* the token after this one's subtree */
};
/* The tokens of one JSON value, depth first (an object's key before its value): the count, or
 * LB_EINVAL (not JSON, deeper than 32, more than max tokens). Strings are not unescaped. */
long lb_json_tokens(const char *s, size_t n, struct lb_jtok *t, size_t max);

/* A JSON document to read by key (lb ctl, linode-scaler): lb_json_tokens over a copy of the text in which
 * every scalar is NUL-terminated and every string decoded (\" \\ \/ \b \f \n \r \t \uXXXX, surrogate
 * pairs; a lone surrogate becomes U+FFFD) in place. Tokens: the text's length / 2 + 16 (room for any
 * text), at most LB_JDOC_TOKENS_MAX. A token index i < 0 means "absent" to every accessor. */
#define LB_JDOC_TOKENS_MAX (1L << 20)
struct lb_jdoc {
	char *s;                      /* the decoded copy; a string token's start..end is its UTF-8 text */
	struct lb_jtok *t;
	long n;
};
/* 0, LB_EINVAL (not JSON, a bad escape, a literal other than a number, true, false, null, more tokens than
 * the bound) or LB_ENOMEM; d is empty (lb_jdoc_free is harmless) after a failure */
int lb_jdoc_parse(const char *s, size_t n, struct lb_jdoc *d);
void lb_jdoc_free(struct lb_jdoc *d);
long lb_jdoc_get(const struct lb_jdoc *d, long o, const char *key); /* key's value in object o; -1 */
long lb_jdoc_next(const struct lb_jdoc *d, long a, long i);         /* a's element after i (i < 0: the first); -1 */
int lb_jdoc_type(const struct lb_jdoc *d, long i);                  /* LB_J_*, 0 when absent */
const char *lb_jdoc_str(const struct lb_jdoc *d, long i);            /* a string's text; NULL when not a string */
const char *lb_jdoc_lit(const struct lb_jdoc *d, long i);            /* a number's, true's, false's, null's text; NULL */
int lb_jdoc_num(const struct lb_jdoc *d, long i, double *out);       /* 0 when a number, else -1 */
int lb_jdoc_int(const struct lb_jdoc *d, long i, long long *out);    /* 0 when a whole number within 9e15 */

/* ------------------------------------------------------------------ access log template */

/* The access log's fields, by name: a template's %{name}, the json format's keys (in this order). */
enum lb_logfield {
	LB_LF_TIME = 0, LB_LF_CLIENT, LB_LF_METHOD, LB_LF_URI, LB_LF_PROTO, LB_LF_STATUS, LB_LF_BYTES, LB_LF_BYTES_IN,
	LB_LF_TERM, LB_LF_DURATION_MS, LB_LF_T_REQUEST, LB_LF_T_CONNECT, LB_LF_T_FIRST_BYTE, LB_LF_T_TOTAL,
	LB_LF_LISTENER, LB_LF_ROUTE, LB_LF_POOL, LB_LF_SERVER, LB_LF_SERVER_ADDR, LB_LF_RETRIES, LB_LF_HOST,
	LB_LF_USER_AGENT, LB_LF_REFERER, LB_LF_REQUEST_ID, LB_LF_TLS, LB_LF_TLS_VERSION, LB_LF_TLS_CIPHER, LB_LF_SNI,
	LB_LF_CLIENT_CERT, LB_LF_WORKER, LB_LF_PID, LB_LF_N
};
extern const char *const lb_log_field_names[LB_LF_N];
#define LB_LOG_TPL_MAX 64
struct lb_log_tpl {
	size_t n;
	struct { uint16_t off, len; int16_t field; } item[LB_LOG_TPL_MAX]; /* field < 0: template bytes [off, off+len) */
};
/* A template: text with %{field} (a name of lb_log_field_names) and %% (a '%'), at most 1024 bytes
 * and LB_LOG_TPL_MAX pieces. LB_EINVAL with *why set (and the unknown name in bad, NUL-terminated). */
int lb_log_template_parse(const char *s, size_t n, struct lb_log_tpl *o, const char **why, char *bad, size_t badn);

/* ------------------------------------------------------------------ configuration */

enum lb_mode { LB_MODE_HTTP = 0, LB_MODE_TCP = 1 };
enum lb_algo { LB_ALGO_RR = 0, LB_ALGO_LEASTCONN, LB_ALGO_IPHASH, LB_ALGO_RANDOM2 };
enum lb_logfmt { LB_LOG_COMBINED = 0, LB_LOG_JSON, LB_LOG_TEMPLATE };
enum lb_loglevel { LB_LV_ERROR = 0, LB_LV_WARN, LB_LV_INFO, LB_LV_DEBUG }; /* [log] level */
enum lb_hc { LB_HC_DEFAULT = 0, LB_HC_OFF, LB_HC_HTTP, LB_HC_TCP };

struct lb_bconn;      /* a backend connection (lb.c) */
struct lb_shm_server; /* a server's slot in the shared-memory segment (lb.c) */
struct lb_shm_route;  /* a route's slot: split weights and counters (lb.c) */
struct lb_shm_listener; /* a listener's slot: connection counters (lb.c) */
struct lb_rt;         /* runtime state beside a configuration (lb.c) */

struct lb_server {
	char name[LB_NAME_MAX];
	char host[LB_HOST_MAX];
	uint16_t port;
	struct sockaddr_storage sa;
	socklen_t salen;
	unsigned weight, max_conn;      /* weight: as configured (the admin API's is in shared memory) */
	int backup, disabled;
	int tls;                /* speak TLS to it (server ... tls), verified against the pool's tls_ca */
	int line;
	uint64_t name_hash;     /* for consistent hashing: by name, so a readdressed server keeps its keys */
	unsigned id;            /* index among the file's servers (pools in file order): its runtime state's (lb.c) */
};

struct lb_pool {
	char name[LB_NAME_MAX];
	int line;
	struct lb_server *servers;
	size_t nservers;
	int algorithm;
	uint64_t connect_timeout, response_timeout; /* ms */
	unsigned keepalive;     /* idle connections kept per server per worker: a cap, or LB_KEEPALIVE_AUTO */
	unsigned retries;
	char sticky_cookie[LB_NAME_MAX]; /* sticky = cookie NAME; "" = off */
	int send_proxy;                  /* 0, 1 or 2: PROXY header version sent on new server connections */
	char *tls_ca;                    /* CAs for servers marked tls; NULL: the system's bundle */
	char *tls_sni;                   /* name sent and verified; NULL: the server's host when it is a name */
	int tls_line;
	struct lb_tls *tlsm;             /* the loaded CAs (lb_conf_resolve), when a server is marked tls */
	/* active health checks (run by one process: worker 1 of the current generation) */
	int hc_kind;                     /* LB_HC_*: health_check (not given behind a tcp listener: tcp) */
	char hc_method[16];
	char hc_path[256];
	uint64_t hc_interval, hc_timeout; /* ms */
	unsigned hc_rise, hc_fall;
	struct { uint16_t lo, hi; } hc_expect[8]; /* status ranges counted as healthy */
	size_t nhc_expect;
	/* circuit breaker per server, shared by the workers */
	unsigned cb_failures;            /* consecutive failures that open it; 0 = off */
	unsigned cb_error_rate;          /* percent over cb_window with >= cb_min_requests; 0 = off */
	unsigned cb_min_requests;
	unsigned cb_max_open;            /* percent of the servers whose circuits may be open at once (one
	                                    always may); 100 = no cap */
	uint64_t cb_window, cb_slow, cb_open; /* ms; cb_slow 0 = off */
	uint64_t given;                  /* keys given in the file: a bit per row of lb.c's key table */
};

struct lb_bind {
	struct lb_hostport hp;
	struct sockaddr_storage sa;
	socklen_t salen;
	int line;
};

struct lb_tls; /* lb.c: certificates and CAs loaded for one listener */

enum { LB_H2_OFF, LB_H2_ON, LB_H2_AUTO }; /* lb_listener.http2 */

struct lb_listener {
	char name[LB_NAME_MAX];
	int line;
	struct lb_bind binds[LB_MAX_BINDS];
	size_t nbinds;
	int mode;
	int pool;               /* index into conf->pools, -1 none */
	struct lb_cidr *allow, *deny; /* checked at accept; deny wins; any allow denies the rest */
	size_t nallow, ndeny;
	struct lb_cidr *trusted;      /* their PROXY header / X-Forwarded-For give the client address */
	size_t ntrusted;
	int proxy_protocol;           /* 0 or LB_PROXY_V1|LB_PROXY_V2: required from trusted peers */
	unsigned max_conn_per_ip;     /* 0 = off */
	int splice;                   /* mode tcp on Linux: move bytes with splice(2) (default on) */
	uint64_t header_timeout, idle_timeout; /* ms */
	uint64_t max_header_size, max_body_size;
	/* TLS (issue 11) */
	int tls;                      /* terminate TLS on this listener */
	char *certs[LB_MAX_CERTS];    /* cert = files: chain + key; the first is the default */
	int cert_lines[LB_MAX_CERTS];
	size_t ncerts;
	char *ocsp[LB_MAX_CERTS];     /* ocsp = files (OpenSSL build): the n-th for the n-th cert; "off": none */
	int ocsp_lines[LB_MAX_CERTS];
	size_t nocsp;
	char *client_ca;              /* mTLS: required client certificates from these CAs */
	int client_ca_line;
	char *hsts;                   /* Strict-Transport-Security value on TLS responses */
	int redirect_https;           /* plain listener: 308 to https://host[:https_port]/uri */
	unsigned https_port;          /* in those redirects; 443 = not written */
	char *acme_webroot;           /* serves /.well-known/acme-challenge/TOKEN */
	int http2;                    /* LB_H2_OFF, LB_H2_ON or LB_H2_AUTO (on with tls, off without) */
	unsigned http2_max_streams;   /* concurrent streams per HTTP/2 connection */
	struct lb_tls *tlsm;          /* loaded certificates and CAs (lb_conf_resolve); NULL in pure use */
	uint64_t given;               /* keys given in the file: a bit per row of lb.c's key table */
};

struct lb_split {
	int pool;
	unsigned weight;
};

#define LB_ROUTE_MAX_ITEMS 16 /* hosts, paths, methods, headers, split pools, listeners in one route */
struct lb_route {
	char name[LB_NAME_MAX];
	int line;
	int listeners[LB_ROUTE_MAX_ITEMS]; size_t nlisteners; /* none = every http listener */
	char *hosts[LB_ROUTE_MAX_ITEMS];   size_t nhosts;     /* lower case; "*.x" = suffix */
	char *paths[LB_ROUTE_MAX_ITEMS];   size_t npaths;     /* "/x" exact; "/x/" + "*" is a prefix */
	char *methods[LB_ROUTE_MAX_ITEMS]; size_t nmethods;
	char *hdr_names[LB_ROUTE_MAX_ITEMS];
	char *hdr_values[LB_ROUTE_MAX_ITEMS]; size_t nheaders; /* "*" = present with any value */
	int pool;                          /* -1 when split is used */
	struct lb_split split[LB_ROUTE_MAX_ITEMS]; size_t nsplit;
	uint64_t response_timeout, max_body_size; /* used when given (0 is a value); else the pool's / listener's */
	uint64_t given;                            /* keys given in the file: a bit per row of lb.c's key table */
	struct lb_acl_rule *acl; size_t nacl;      /* ordered; first match wins */
	struct lb_rate_limit rl;
	uint64_t rl_key;                           /* route's part of the bucket keys */
	struct lb_cidr *rl_exempt; size_t nrl_exempt;
	int ret_status;                            /* return: 0 = none */
	char *ret_body;
	int redir_status;                          /* redirect: 0 = none */
	char *redir_url;                           /* with $host and $uri */
	char *req_add[LB_ROUTE_MAX_ITEMS];  size_t nreq_add;  /* "Name: value" */
	char *req_del[LB_ROUTE_MAX_ITEMS];  size_t nreq_del;  /* names */
	char *resp_add[LB_ROUTE_MAX_ITEMS]; size_t nresp_add;
	char *resp_del[LB_ROUTE_MAX_ITEMS]; size_t nresp_del;
};

/* [scaler]: linode-scaler's section (deploy/linode-scaler.c #includes lb.c and reads the file with
 * lb_conf_parse, so a [scaler] key is one row of lb.c's key table; lb -t checks the values too). */
#define LB_SCALER_NODES 8            /* lb nodes in admin_url */
#define LB_SCALER_INSTANCES 256      /* the largest max */
struct lb_scaler_node {
	char url[256];               /* http:// or https://, no trailing '/' */
	char token_file[512];        /* its own token_file=PATH, else "" (admin_token_file) */
};
struct lb_scaler {
	int line;                    /* of [scaler]; 0: no section */
	char *pool, *admin_token_file, *api_url, *token_file, *region, *type, *image, *user_data,
	     *authorized_keys_file, *tag;  /* NULL: not given */
	struct lb_scaler_node node[LB_SCALER_NODES];  /* admin_url */
	size_t nnodes;
	unsigned min, max;
	unsigned up_cpu, down_cpu;   /* percent */
	unsigned up_inflight;        /* requests in flight per server (lb's /api/stats) that scale up; 0 = off */
	uint64_t up_p99;             /* ms: a p99 of the pool's requests (lb's /metrics) above it scales up; 0 = off */
	uint64_t down_after, cooldown, interval; /* ms */
	unsigned server_port;
	int server_address;          /* 0 private, 1 public */
};
/* admin_url = URL [token_file=PATH] [, URL [token_file=PATH]]...: 0 and out[0 .. *nout), or LB_EINVAL
 * with the reason in why */
int lb_parse_admin_urls(const char *s, size_t n, struct lb_scaler_node *out, size_t *nout, char *why, size_t wsize);

struct lb_conf {
	/* [global] */
	unsigned workers;            /* 0 = auto */
	char *user;                  /* workers drop to this user when started as root */
	unsigned max_connections;
	char *pid_file;
	uint64_t shutdown_timeout;   /* ms: bound on the graceful stop */
	uint64_t stop_grace;         /* ms: after SIGTERM, keep serving while /healthz says draining */
	unsigned rate_limit_entries; /* size of the shared rate-limit table */
	unsigned tls_session_cache;  /* TLS sessions kept for resumption, shared by the workers; 0 = off */
	char *tls_ticket_keys;       /* session ticket keys file (OpenSSL build); NULL: random keys */
	int tls_ticket_keys_line;
	uint64_t tls_ticket_rotate;  /* ms: a new random ticket key this often */
	char *alert_command;         /* run with an event as JSON on stdin; NULL = none */
	/* [admin]: only with the section */
	int admin_on;
	struct lb_bind admin_bind;   /* default 127.0.0.1:8404 */
	char *admin_token_file;      /* NULL: no mutating call is accepted */
	struct lb_cidr *admin_allow; /* none given: loopback only */
	size_t nadmin_allow;
	/* [log] */
	char *access_log;            /* NULL = off, "stdout", or a path */
	int log_format;
	char *log_template;          /* LB_LOG_TEMPLATE: the format's text; log_tpl its pieces */
	struct lb_log_tpl log_tpl;
	int log_level;               /* error log: LB_LV_* lines at or above it are written */
	uint64_t rotate_interval;    /* ms, 0 = off */
	uint64_t rotate_size;        /* bytes, 0 = off */
	uint64_t retention;          /* ms */
	char *error_log;             /* "stderr" or a path */
	struct lb_listener *listeners; size_t nlisteners;
	struct lb_pool *pools;         size_t npools;
	struct lb_route *routes;       size_t nroutes;
	struct lb_scaler scaler;
	uint64_t given_global, given_log, given_admin, given_scaler; /* keys given, by row of lb.c's key table */
	struct lb_rt *rt;              /* lb.c: what a running lb writes about these servers and routes, made with them */
};

struct lb_cfg_error {
	int line;                    /* 0 when the error is about the whole file */
	char key[LB_NAME_MAX];
	char msg[256];
};
#define LB_CFG_MAX_ERRORS 64
struct lb_cfg_errors {
	int n;                       /* errors stored (at most LB_CFG_MAX_ERRORS) */
	int total;                   /* errors found */
	struct lb_cfg_error e[LB_CFG_MAX_ERRORS];
};

/* Parse and validate config text (pure: no name resolution, no files opened).
 * Returns 0 and *out, or LB_EINVAL with every error in errs (and *out NULL). */
int lb_conf_parse(const char *text, size_t len, struct lb_conf **out, struct lb_cfg_errors *errs);
/* Resolve host names of binds and servers (getaddrinfo). Errors go to errs with their lines. */
int lb_conf_resolve(struct lb_conf *conf, struct lb_cfg_errors *errs);
void lb_conf_free(struct lb_conf *conf);

/* A row of the config key table (lb --keys prints them; tests check README and each key with them). */
struct lb_key_info {
	const char *section;         /* global, log, admin, scaler, listener, pool, route */
	const char *name;
	const char *def;             /* the default as written in a file; NULL: none */
	const char *type;            /* uint, size, duration, on/off, enum, string, custom, scaler (not checked by lb) */
	uint64_t min, max;           /* uint, size, duration (ms) */
	int repeat;                  /* may be given more than once */
	int route;                   /* a [route] may override it */
	const char *good;            /* a value accepted; after a newline, lines it needs in the same section */
	const char *bad;             /* a value refused */
	const char *doc;
	const char *later;           /* not supported yet: the issue that brings it */
};
/* 0 and row i of the key table (sections in the order above), or LB_EINVAL past the last */
int lb_conf_key(size_t i, struct lb_key_info *k);
/* 1 when the struct's `given` bits say key of section was in the file */
int lb_conf_given(uint64_t given, const char *section, const char *key);

/* ------------------------------------------------------------------ routing and balancing */

/* First route (file order) on listener li whose every condition matches; -1 when none.
 * host is lower-cased without port; path is normalised. */
int lb_route_find(const struct lb_conf *conf, int li, const struct lb_req *req,
                  const char *host, size_t hostlen, const char *path, size_t pathlen);

/* What lb_route_pool reads and writes of a split route in one process, by split pool: the weights in
 * effect (the configured ones at load; the admin API may change them) and the round-robin positions. */
struct lb_split_rt {
	unsigned weight[LB_ROUTE_MAX_ITEMS];
	int64_t cur[LB_ROUTE_MAX_ITEMS];
};
/* Choose a pool for a route: its pool, or one of its split pools by smooth weighted round-robin over
 * rt's weights. Pure: it writes only rt->cur. */
int lb_route_pool(const struct lb_route *r, struct lb_split_rt *rt);

/* One server's state at one moment, as the workers share it (lb.c's pool_states copies it from shared
 * memory): its requests in flight in every worker, and what health checks, the admin API and the
 * circuit breaker set. All 0: a ready server with nothing in flight. */
struct lb_srv_state {
	unsigned active;
	int down;                /* by health checks */
	int admin;               /* 0 ready, 1 drain, 2 disabled */
	int cb_state, cb_trials; /* circuit: 0 closed, 1 open (until cb_until), 2 half-open with cb_trials in flight */
	uint64_t cb_until;       /* monotonic ms */
	unsigned weight;         /* set through the admin API; 0: the configured one */
};

/* What lb_pick writes: one pool's balancing state in one process. cur[i] is p->servers[i]'s current
 * weight in smooth weighted round-robin, seed least_conn's rotating start. All 0: a fresh start. */
struct lb_pick_rt {
	int64_t *cur;
	uint32_t seed;
};

/* Pick a usable server (not down, not disabled, under max_conn, its circuit letting requests through at
 * now), primaries before backups. st[i] is the state of p->servers[i]; rt is p's balancing state in this
 * process; now is monotonic ms. key is the client-address hash for ip_hash; rnd a random number for
 * random2. NULL when none. Pure: it reads only its arguments and writes only *rt. */
const struct lb_server *lb_pick(const struct lb_pool *p, const struct lb_srv_state *st, struct lb_pick_rt *rt,
                                uint64_t now, uint64_t key, uint64_t rnd);

uint64_t lb_hash64(const void *data, size_t n); /* FNV-1a 64 then a mixer */

/* ------------------------------------------------------------------ limits and repeated events */

/* Descriptors one worker holds besides its connections' own: stdio, the event loop, the signal
 * pipe, the master's channel, logs, every listening socket, one health check per checked server,
 * and some slack (a /dev/urandom read, an alert pipe). */
unsigned long lb_fd_reserve(const struct lb_conf *c);
/* Descriptors a worker needs for max_connections: each client connection may hold a server one. */
unsigned long lb_fd_needed(const struct lb_conf *c);
/* Client connections per worker that nofile descriptors allow (at least 1, at most max_connections). */
unsigned lb_conns_for_fds(const struct lb_conf *c, unsigned long nofile);
/* Does this listener speak HTTP/2 (ALPN h2 with tls, the h2c preface without)? Never in a build
 * without LB_HTTP2; auto is on with tls, off without. */
int lb_listener_h2(const struct lb_listener *l);

/* A repeated event's error-log slot (lb.c's log_throttled): at most one line a period, the repeats
 * in between counted and reported with the next line (or alone once the period is over). */
struct lb_throttle {
	uint64_t last;               /* ms (monotonic) of the last line written; 0: none yet */
	uint64_t quiet;              /* events since then that wrote no line */
	struct lb_throttle *next;    /* lb.c: the slots whose count is still to be reported */
	int listed;
	int level;                   /* lb.c: the error-log level of its lines (LB_LV_*) */
	char text[200];              /* lb.c: the last line written, without its count */
};
/* 1: write this event's line (*quiet: the repeats suppressed since the last line, *span_ms: since
 * when; both restart); 0: suppressed and counted. Lines are at least period_ms apart. Pure. */
int lb_throttle_pass(struct lb_throttle *t, uint64_t now_ms, uint64_t period_ms, uint64_t *quiet,
                     uint64_t *span_ms);

/* ------------------------------------------------------------------ process */

/* The whole program (main calls it; with -DLB_NO_MAIN there is no main). */
int lb_main(int argc, char **argv);

#endif /* LB_H */
