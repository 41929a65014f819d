/*
 * admit.c - who may connect, and how fast (see admit.h for the rules).
 *
 * The access lists are binary tries, one per family for allow and one for
 * deny, built while options are read and only read afterwards: a lookup
 * walks at most 32 or 128 bits and stops at the first rule on the path, so
 * its cost is the prefix length whatever the number of rules.
 *
 * The source table is allocated once, in admit_finish, and never grows:
 * a flood of new sources costs no memory. Its hash is SipHash-2-4
 * (OpenSSL's) keyed with a random secret, so a peer cannot pick addresses
 * that fall in one chain. Entries with no connection open sit on an LRU list,
 * least recently seen first; a new source takes a free entry or the head
 * of that list, and only if forgetting the head changes nothing (its
 * bucket is full again). An entry with a connection open is never taken,
 * so the open counts stay exact.
 *
 * The log limiter is a direct-mapped table of ADMIT_LOG_SLOTS sources
 * keyed with the same hash, beside the times of the latest
 * ADMIT_LOG_PER_SEC lines.
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <pwd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "forkloop/admit.h"
#include "forkloop/log.h"
#include "forkloop/num.h"

#define ADMIT_NIL       UINT32_MAX
#define ADMIT_LOG_SLOTS 4096
#define ADMIT_MAX_TABLE (1u << 24)

/* One node of a binary trie; child 0 means none (the root is nobody's). */
struct admit_node {
	uint32_t child[2];
	uint8_t rule; /* a rule ends here: everything below matches */
};

struct admit_trie {
	struct admit_node *n;
	size_t len, cap;
};

/*
 * One source of the table. last is when the bucket was last brought up to
 * date, which is at every connection the source makes: its last-seen time.
 */
struct admit_src {
	uint8_t family; /* 0: free */
	uint8_t key[16];
	uint32_t open;  /* connections admitted and not yet released */
	uint32_t hnext; /* hash chain */
	uint32_t prev;  /* LRU list while open is 0 */
	uint32_t next;  /* LRU list while open is 0, or the free list */
	double tokens;
	double last;
};

/* A source of the log limiter. */
struct admit_logslot {
	uint8_t family;
	uint8_t used;
	uint8_t logged; /* last holds the time of its latest line */
	uint8_t key[16];
	double last;
	uint64_t suppressed;
};

struct admit {
	/* Rules: set by admit_option, read-only after admit_finish. */
	struct admit_trie allow4, allow6, deny4, deny6;
	int allow_given; /* --allow or --allow-file: only allowed IPs get in */
	int deny_given;
	uid_t uids[ADMIT_MAX_UIDS];
	size_t nuids;
	uint64_t per_source; /* 0: no limit */
	unsigned prefix6;
	int prefix6_given;
	double rate; /* 0: no limit */
	double burst;
	int burst_given;
	uint32_t table_size;
	int table_given;
	unsigned char secret[16]; /* the hash key */
	EVP_MAC_CTX *mac;          /* SipHash with that key */

	pthread_mutex_t lock;
	/* The source table, under lock. */
	struct admit_src *src;
	uint32_t *buckets;
	uint32_t nbuckets; /* a power of two */
	uint32_t free;     /* free list through next */
	uint32_t lru_head, lru_tail;
	/* The log limiter, under lock. */
	struct admit_logslot *logs;
	double log_times[ADMIT_LOG_PER_SEC]; /* the latest lines, a ring */
	size_t log_next;                     /* the oldest of them */

	_Atomic uint64_t counts[ADMIT_NWHY];
};

static const char *const admit_why_names[ADMIT_NWHY] = {
        [ADMIT_OK] = "ok",
        [ADMIT_DENIED] = "denied",
        [ADMIT_PER_SOURCE] = "per_source",
        [ADMIT_RATE] = "rate",
        [ADMIT_TABLE_FULL] = "table_full",
        [ADMIT_UID] = "uid",
};

const char admit_help_text[] =
        "      --allow CIDR         let in only IP peers inside CIDR "
        "(10.0.0.0/8,\n"
        "                           2001:db8::/32; an address alone is a "
        "/32 or\n"
        "                           /128); repeatable\n"
        "      --deny CIDR          refuse IP peers inside CIDR; repeatable\n"
        "      --allow-file FILE    --allow every CIDR in FILE, one a line; "
        "'#'\n"
        "                           starts a comment\n"
        "      --deny-file FILE     --deny every CIDR in FILE, one a line\n"
        "      --max-conns-per-source N\n"
        "                           at most N open connections per source: "
        "an IPv4\n"
        "                           address, an IPv6 /64, a Unix peer's "
        "user\n"
        "      --source-prefix6 LEN an IPv6 source is a /LEN (1-128; default "
        "64)\n"
        "      --accept-rate R[/s]  at most R new connections a second per "
        "source,\n"
        "                           with bursts of --accept-burst\n"
        "      --accept-burst B     connections a source may open at once "
        "under\n"
        "                           --accept-rate (default: R rounded up)\n"
        "      --source-table N     sources remembered for the two limits "
        "above\n"
        "                           (1 to 16777216; default 65536)\n"
        "      --allow-uid UID      on Unix sockets, let in only this "
        "user's peers\n"
        "                           (a number or a name); repeatable, up "
        "to 64\n"
        "\n"
        "A peer is let in only if every rule allows it: --allow-uid first "
        "(Unix\n"
        "peers only); then --deny, which wins over --allow; once any --allow "
        "is\n"
        "given, only IP peers inside an allowed prefix get in. An "
        "IPv4-mapped\n"
        "IPv6 peer (::ffff:a.b.c.d) is matched as its IPv4 address. The lists "
        "do\n"
        "not apply to Unix peers. Then --max-conns-per-source, then "
        "--accept-rate.\n"
        "When every entry of the source table holds a limited source, new "
        "sources\n"
        "are refused rather than a limited source forgotten.\n"
        "Example: --deny 10.9.0.0/16 --allow 10.0.0.0/8 "
        "--max-conns-per-source 8\n";

const char *admit_why_name(enum admit_why why)
{
	if ((unsigned)why >= ADMIT_NWHY)
		return "unknown";
	return admit_why_names[why];
}

/* -- hash --------------------------------------------------------------- */

/*
 * SipHash-2-4 with a 64-bit tag, keyed with the secret, through OpenSSL's
 * EVP_MAC (EVP_MAC-Siphash(7)). Called under a->lock: the one context is
 * re-keyed for each hash, which resets it (EVP_MAC_init(3)).
 */
static uint64_t admit_hash(const struct admit *a, uint8_t family,
                           const uint8_t key[16])
{
	uint8_t buf[17], tag[8];
	size_t n = 0;
	uint64_t h = 0;

	buf[0] = family;
	memcpy(buf + 1, key, 16);
	if (EVP_MAC_init(a->mac, a->secret, sizeof a->secret, NULL) != 1 ||
	    EVP_MAC_update(a->mac, buf, sizeof buf) != 1 ||
	    EVP_MAC_final(a->mac, tag, &n, sizeof tag) != 1 || n != sizeof tag)
		return 0; /* cannot happen with a working OpenSSL */
	memcpy(&h, tag, sizeof h);
	return h;
}

/* -- tries ------------------------------------------------------------- */

static int bit_at(const uint8_t *addr, unsigned i)
{
	return (addr[i / 8] >> (7 - i % 8)) & 1;
}

static uint32_t trie_node(struct admit_trie *t)
{
	struct admit_node *n;
	size_t cap;

	if (t->len == t->cap) {
		cap = t->cap == 0 ? 64 : t->cap * 2;
		if (cap > UINT32_MAX ||
		    (n = reallocarray(t->n, cap, sizeof *n)) == NULL)
			return ADMIT_NIL;
		t->n = n;
		t->cap = cap;
	}
	memset(&t->n[t->len], 0, sizeof t->n[0]);
	return (uint32_t)t->len++;
}

/* Add the prefix addr/len. Returns 0, or -1 when out of memory. */
static int trie_add(struct admit_trie *t, const uint8_t *addr, unsigned len)
{
	uint32_t n = 0, c;

	if (t->len == 0 && trie_node(t) == ADMIT_NIL)
		return -1;
	for (unsigned i = 0; i < len; i++) {
		if (t->n[n].rule)
			return 0; /* a shorter rule already covers it */
		c = t->n[n].child[bit_at(addr, i)];
		if (c == 0) {
			if ((c = trie_node(t)) == ADMIT_NIL)
				return -1;
			t->n[n].child[bit_at(addr, i)] = c;
		}
		n = c;
	}
	t->n[n].rule = 1;
	return 0;
}

/* Is addr (bits long) inside any prefix of t? */
static int trie_match(const struct admit_trie *t, const uint8_t *addr,
                      unsigned bits)
{
	uint32_t n = 0;

	if (t->len == 0)
		return 0;
	for (unsigned i = 0;; i++) {
		if (t->n[n].rule)
			return 1;
		if (i == bits)
			return 0;
		if ((n = t->n[n].child[bit_at(addr, i)]) == 0)
			return 0;
	}
}

/* -- options ----------------------------------------------------------- */

/*
 * The option opt as typed, "--allow", into buf, from the table getopt_long
 * reads (ADMIT_LONGOPTS), so a name cannot differ from what it parses;
 * NULL if opt is none of them.
 */
static const char *admit_opt_name(int opt, char *buf, size_t len)
{
	static const struct option opts[] = {ADMIT_LONGOPTS};

	for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++)
		if (opts[i].val == opt) {
			snprintf(buf, len, "--%s", opts[i].name);
			return buf;
		}
	return NULL;
}

static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* Clear the bits of addr past len; returns 1 if any was set. */
static int mask_bits(uint8_t *addr, size_t size, unsigned len)
{
	int set = 0;

	for (size_t i = 0; i < size; i++) {
		uint8_t keep;

		if (len >= 8 * (i + 1))
			continue;
		keep = len <= 8 * i ? 0
		                    : (uint8_t)(0xff << (8 - (len - 8 * i)));
		if (addr[i] & ~keep)
			set = 1;
		addr[i] &= keep;
	}
	return set;
}

/*
 * Parse CIDR into the trie it belongs to. Returns 0, or -1 with why set
 * to the reason (after "VALUE: "), or -1 with errno ENOMEM and why NULL.
 */
static int admit_add_cidr(struct admit *a, int deny, const char *cidr,
                          char *why, size_t whylen)
{
	char host[INET6_ADDRSTRLEN + 1], text[INET6_ADDRSTRLEN];
	const char *slash = strchr(cidr, '/');
	size_t hostlen = slash != NULL ? (size_t)(slash - cidr) : strlen(cidr);
	uint8_t addr[16];
	uint64_t len;
	int family, size, r;
	struct admit_trie *t;

	if (hostlen == 0 || hostlen >= sizeof host)
		goto bad;
	memcpy(host, cidr, hostlen);
	host[hostlen] = '\0';
	family = strchr(host, ':') != NULL ? AF_INET6 : AF_INET;
	if (inet_pton(family, host, addr) != 1)
		goto bad;
	size = family == AF_INET ? 4 : 16;
	len = 8 * size;
	if (slash != NULL && num_parse_u64(slash + 1, 0, 8 * size, &len) < 0) {
		snprintf(why, whylen, "prefix length must be 0 to %d",
		         8 * size);
		return -1;
	}
	if (mask_bits(addr, size, (unsigned)len)) {
		inet_ntop(family, addr, text, sizeof text);
		snprintf(why, whylen, "host bits set; did you mean %s/%u?",
		         text, (unsigned)len);
		return -1;
	}
	/* A rule inside ::ffff:0:0/96 speaks of IPv4 addresses (RFC 4291). */
	if (family == AF_INET6 && len >= 96 &&
	    memcmp(addr, v4mapped, sizeof v4mapped) == 0) {
		memmove(addr, addr + 12, 4);
		family = AF_INET;
		len -= 96;
	}
	if (family == AF_INET)
		t = deny ? &a->deny4 : &a->allow4;
	else
		t = deny ? &a->deny6 : &a->allow6;
	r = trie_add(t, addr, (unsigned)len);
	if (r < 0) {
		errno = ENOMEM;
		snprintf(why, whylen, "%s", strerror(ENOMEM));
		return -1;
	}
	return 0;
bad:
	snprintf(why, whylen,
	         "not an IPv4 or IPv6 address with an optional /LEN");
	return -1;
}

static char *trim(char *s)
{
	char *e;

	s += strspn(s, " \t\r\n\v\f");
	e = s + strlen(s);
	while (e > s && strchr(" \t\r\n\v\f", e[-1]) != NULL)
		*--e = '\0';
	return s;
}

/* The longest line of a rule file, newline and comment included. */
#define ADMIT_LINE_MAX 1024

/*
 * One line of f into buf (ADMIT_LINE_MAX bytes), without its newline:
 * returns its length, -1 at the end of the file, ADMIT_LINE_LONG for a line
 * that does not fit or ADMIT_LINE_NUL for one holding a NUL byte (what
 * follows it would be silently cut off). A file without newlines, such as
 * a binary given by mistake, is refused at its first ADMIT_LINE_MAX bytes
 * rather than read whole into memory.
 */
#define ADMIT_LINE_LONG (-2)
#define ADMIT_LINE_NUL  (-3)
static long admit_read_line(FILE *f, char *buf)
{
	size_t n = 0;
	int c;

	while ((c = getc(f)) != EOF && c != '\n') {
		if (c == '\0')
			return ADMIT_LINE_NUL;
		if (n == ADMIT_LINE_MAX - 1)
			return ADMIT_LINE_LONG;
		buf[n++] = (char)c;
	}
	if (c == EOF && n == 0)
		return -1;
	buf[n] = '\0';
	return (long)n;
}

/*
 * The rules of the file path, one a line. Errors name the option, then
 * the file, and the line if one is bad: "--deny-file deny.txt:12: ...".
 */
static int admit_add_file(struct admit *a, int deny, const char *name,
                          const char *path, char *err, size_t errlen)
{
	static const char bom[] = "\xef\xbb\xbf";
	char why[128], line[ADMIT_LINE_MAX], *s;
	size_t lineno = 0;
	long n;
	FILE *f;
	int rc = 0;

	if ((f = fopen(path, "re")) == NULL) {
		snprintf(err, errlen, "%s %s: %s", name, path, strerror(errno));
		return -1;
	}
	while ((n = admit_read_line(f, line)) != -1) {
		lineno++;
		if (n == ADMIT_LINE_NUL || n == ADMIT_LINE_LONG) {
			snprintf(err, errlen, "%s %s:%zu: %s", name, path,
			         lineno,
			         n == ADMIT_LINE_NUL
			                 ? "a NUL byte in the line"
			                 : "line longer than 1023 bytes");
			rc = -1;
			break;
		}
		s = line;
		/* A UTF-8 byte order mark, as some editors write, is no text. */
		if (lineno == 1 && strncmp(s, bom, sizeof bom - 1) == 0)
			s += sizeof bom - 1;
		s[strcspn(s, "#")] = '\0';
		s = trim(s);
		if (*s == '\0')
			continue;
		if (admit_add_cidr(a, deny, s, why, sizeof why) < 0) {
			snprintf(err, errlen, "%s %s:%zu: %s: %s", name, path,
			         lineno, s, why);
			rc = -1;
			break;
		}
	}
	if (rc == 0 && ferror(f)) {
		snprintf(err, errlen, "%s %s: %s", name, path, strerror(errno));
		rc = -1;
	}
	fclose(f);
	return rc;
}

static int admit_add_uid(struct admit *a, const char *arg, const char **why)
{
	struct passwd *pw;
	uint64_t v;
	uid_t uid;

	if (num_parse_u64(arg, 0, (uid_t)-2, &v) == 0) {
		uid = (uid_t)v;
	} else if (arg[strspn(arg, "+-0123456789")] == '\0' && *arg != '\0') {
		/* A number out of range, not a name (POSIX names do not
		 * start with '-', and no sane one is all digits). */
		*why = "not a user id: a number from 0 to 4294967294, or a "
		       "user name";
		return -1;
	} else {
		errno = 0;
		if (*arg == '\0' || (pw = getpwnam(arg)) == NULL) {
			*why = "no such user";
			return -1;
		}
		uid = pw->pw_uid;
	}
	for (size_t i = 0; i < a->nuids; i++)
		if (a->uids[i] == uid)
			return 0;
	if (a->nuids == ADMIT_MAX_UIDS) {
		*why = "too many users (at most 64)";
		return -1;
	}
	a->uids[a->nuids++] = uid;
	return 0;
}

static int admit_parse_rate(const char *arg, double *out)
{
	char buf[64];
	size_t n = strlen(arg);

	if (n >= sizeof buf)
		return -1;
	memcpy(buf, arg, n + 1);
	if (n > 2 && strcmp(buf + n - 2, "/s") == 0)
		buf[n - 2] = '\0';
	if (num_parse_seconds(buf, 0, INFINITY, out) < 0 || !(*out > 0))
		return -1;
	return 0;
}

int admit_option(struct admit *a, int opt, const char *arg, char *err,
                 size_t errlen)
{
	char namebuf[32], whybuf[128];
	const char *name = admit_opt_name(opt, namebuf, sizeof namebuf);
	const char *why = NULL;
	uint64_t v;

	if (name == NULL)
		return 0;
	if (arg == NULL)
		arg = "";
	switch (opt) {
	case ADMIT_OPT_ALLOW:
	case ADMIT_OPT_DENY:
		if (admit_add_cidr(a, opt == ADMIT_OPT_DENY, arg, whybuf,
		                   sizeof whybuf) < 0) {
			snprintf(err, errlen, "%s %s: %s", name, arg, whybuf);
			return -1;
		}
		break;
	case ADMIT_OPT_ALLOW_FILE:
	case ADMIT_OPT_DENY_FILE:
		if (admit_add_file(a, opt == ADMIT_OPT_DENY_FILE, name, arg,
		                   err, errlen) < 0)
			return -1;
		break;
	case ADMIT_OPT_PER_SOURCE:
		if (num_parse_u64(arg, 1, UINT64_MAX, &a->per_source) < 0)
			why = "must be 1 or more";
		break;
	case ADMIT_OPT_PREFIX6:
		if (num_parse_u64(arg, 1, 128, &v) < 0) {
			why = "must be 1 to 128";
		} else {
			a->prefix6 = (unsigned)v;
			a->prefix6_given = 1;
		}
		break;
	case ADMIT_OPT_RATE:
		if (admit_parse_rate(arg, &a->rate) < 0)
			why = "must be a number of connections a second, more "
			      "than 0 (R or R/s)";
		break;
	case ADMIT_OPT_BURST:
		if (num_parse_u64(arg, 1, UINT32_MAX, &v) < 0) {
			why = "must be 1 to 4294967295";
		} else {
			a->burst = (double)v;
			a->burst_given = 1;
		}
		break;
	case ADMIT_OPT_TABLE:
		if (num_parse_u64(arg, 1, ADMIT_MAX_TABLE, &v) < 0) {
			why = "must be 1 to 16777216";
		} else {
			a->table_size = (uint32_t)v;
			a->table_given = 1;
		}
		break;
	case ADMIT_OPT_ALLOW_UID:
		admit_add_uid(a, arg, &why);
		break;
	}
	if (why != NULL) {
		snprintf(err, errlen, "%s %s: %s", name, arg, why);
		return -1;
	}
	if (opt == ADMIT_OPT_ALLOW || opt == ADMIT_OPT_ALLOW_FILE)
		a->allow_given = 1;
	if (opt == ADMIT_OPT_DENY || opt == ADMIT_OPT_DENY_FILE)
		a->deny_given = 1;
	return 1;
}

/* -- set-up ------------------------------------------------------------ */

/*
 * The hash key, from OpenSSL's random generator (RAND_bytes(3)), and the
 * MAC context that uses it, with a 64-bit tag. Returns 0 or -1.
 */
static int admit_secret(struct admit *a)
{
	size_t size = 8;
	OSSL_PARAM params[2];
	EVP_MAC *mac;

	if (RAND_bytes(a->secret, sizeof a->secret) != 1)
		return -1;
	if ((mac = EVP_MAC_fetch(NULL, "SIPHASH", NULL)) == NULL)
		return -1;
	a->mac = EVP_MAC_CTX_new(mac);
	EVP_MAC_free(mac);
	if (a->mac == NULL)
		return -1;
	params[0] = OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_SIZE, &size);
	params[1] = OSSL_PARAM_construct_end();
	return EVP_MAC_CTX_set_params(a->mac, params) == 1 ? 0 : -1;
}

struct admit *admit_new(void)
{
	struct admit *a = calloc(1, sizeof *a);

	if (a == NULL)
		return NULL;
	a->logs = calloc(ADMIT_LOG_SLOTS, sizeof *a->logs);
	if (a->logs == NULL || pthread_mutex_init(&a->lock, NULL) != 0) {
		free(a->logs);
		free(a);
		return NULL;
	}
	a->prefix6 = ADMIT_DEFAULT_PREFIX6;
	a->table_size = ADMIT_DEFAULT_TABLE;
	a->lru_head = a->lru_tail = ADMIT_NIL;
	a->free = ADMIT_NIL;
	for (size_t i = 0; i < ADMIT_LOG_PER_SEC; i++)
		a->log_times[i] = -INFINITY;
	if (admit_secret(a) < 0) {
		admit_free(a);
		return NULL;
	}
	return a;
}

void admit_free(struct admit *a)
{
	if (a == NULL)
		return;
	free(a->allow4.n);
	free(a->allow6.n);
	free(a->deny4.n);
	free(a->deny6.n);
	free(a->src);
	free(a->buckets);
	free(a->logs);
	EVP_MAC_CTX_free(a->mac);
	pthread_mutex_destroy(&a->lock);
	free(a);
}

int admit_finish(struct admit *a, char *err, size_t errlen)
{
	const char *lone = NULL;
	uint32_t n = a->table_size, nb = 1;

	if (a->burst_given && a->rate == 0)
		lone = "--accept-burst needs --accept-rate";
	else if (a->per_source == 0 && a->rate == 0 && a->table_given)
		lone = "--source-table needs --max-conns-per-source or "
		       "--accept-rate";
	else if (a->per_source == 0 && a->rate == 0 && a->prefix6_given)
		lone = "--source-prefix6 needs --max-conns-per-source or "
		       "--accept-rate";
	if (lone != NULL) {
		snprintf(err, errlen, "%s", lone);
		return -1;
	}
	if (a->rate > 0 && !a->burst_given)
		a->burst = fmax(1, ceil(a->rate));
	if ((a->per_source == 0 && a->rate == 0) || a->src != NULL)
		return 0;
	while (nb < n)
		nb *= 2;
	a->src = calloc(n, sizeof *a->src);
	a->buckets = malloc((size_t)nb * sizeof *a->buckets);
	if (a->src == NULL || a->buckets == NULL) {
		free(a->src);
		free(a->buckets);
		a->src = NULL;
		a->buckets = NULL;
		snprintf(err, errlen, "%s", strerror(ENOMEM));
		errno = ENOMEM;
		return -1;
	}
	a->nbuckets = nb;
	memset(a->buckets, 0xff, (size_t)nb * sizeof *a->buckets);
	for (uint32_t i = 0; i < n; i++)
		a->src[i].next = i + 1 < n ? i + 1 : ADMIT_NIL;
	a->free = 0;
	return 0;
}

int admit_active(const struct admit *a)
{
	return a->allow_given || a->deny_given || a->nuids > 0 ||
	       a->per_source > 0 || a->rate > 0;
}

int admit_has_uids(const struct admit *a)
{
	return a->nuids > 0;
}

/* -- the access lists -------------------------------------------------- */

enum admit_why admit_check_addr(const struct admit *a,
                                const struct sockaddr *sa, socklen_t len)
{
	const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
	const struct admit_trie *allow, *deny;
	const uint8_t *addr;
	unsigned bits;

	if (sa == NULL)
		return ADMIT_OK;
	if (sa->sa_family == AF_INET && len >= sizeof *sin) {
		addr = (const uint8_t *)&sin->sin_addr;
		bits = 32;
	} else if (sa->sa_family == AF_INET6 && len >= sizeof *sin6) {
		addr = sin6->sin6_addr.s6_addr;
		bits = 128;
		if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
			addr += 12;
			bits = 32;
		}
	} else {
		return ADMIT_OK;
	}
	allow = bits == 32 ? &a->allow4 : &a->allow6;
	deny = bits == 32 ? &a->deny4 : &a->deny6;
	if (trie_match(deny, addr, bits))
		return ADMIT_DENIED;
	if (a->allow_given && !trie_match(allow, addr, bits))
		return ADMIT_DENIED;
	return ADMIT_OK;
}

/* -- the source table -------------------------------------------------- */

void admit_source(const struct admit *a, const struct sockaddr *sa,
                  socklen_t len, struct admit_ticket *t)
{
	const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

	memset(t, 0, sizeof *t);
	if (sa == NULL)
		return;
	if (sa->sa_family == AF_INET && len >= sizeof *sin) {
		t->family = AF_INET;
		memcpy(t->key, &sin->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6 && len >= sizeof *sin6) {
		if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
			t->family = AF_INET;
			memcpy(t->key, sin6->sin6_addr.s6_addr + 12, 4);
		} else {
			t->family = AF_INET6;
			memcpy(t->key, sin6->sin6_addr.s6_addr, 16);
			mask_bits(t->key, 16, a->prefix6);
		}
	}
}

static uint32_t *src_chain(struct admit *a, const struct admit_ticket *t)
{
	uint64_t h = admit_hash(a, t->family, t->key);

	return &a->buckets[h & (a->nbuckets - 1)];
}

static struct admit_src *src_find(struct admit *a, const struct admit_ticket *t)
{
	uint32_t i;

	for (i = *src_chain(a, t); i != ADMIT_NIL; i = a->src[i].hnext) {
		struct admit_src *e = &a->src[i];

		if (e->family == t->family &&
		    memcmp(e->key, t->key, sizeof e->key) == 0)
			return e;
	}
	return NULL;
}

static void lru_remove(struct admit *a, struct admit_src *e)
{
	if (e->prev != ADMIT_NIL)
		a->src[e->prev].next = e->next;
	else
		a->lru_head = e->next;
	if (e->next != ADMIT_NIL)
		a->src[e->next].prev = e->prev;
	else
		a->lru_tail = e->prev;
}

static void lru_append(struct admit *a, struct admit_src *e)
{
	uint32_t i = (uint32_t)(e - a->src);

	e->prev = a->lru_tail;
	e->next = ADMIT_NIL;
	if (a->lru_tail != ADMIT_NIL)
		a->src[a->lru_tail].next = i;
	else
		a->lru_head = i;
	a->lru_tail = i;
}

/* Take e out of its hash chain and put it on the free list. */
static void src_forget(struct admit *a, struct admit_src *e)
{
	struct admit_ticket t = {.family = e->family};
	uint32_t i = (uint32_t)(e - a->src), *p;

	memcpy(t.key, e->key, sizeof t.key);
	for (p = src_chain(a, &t); *p != i; p = &a->src[*p].hnext)
		;
	*p = e->hnext;
	e->family = 0;
	e->next = a->free;
	a->free = i;
}

/* Bring e's bucket up to now. */
static void src_refill(const struct admit *a, struct admit_src *e, double now)
{
	if (now <= e->last)
		return;
	e->tokens = fmin(a->burst, e->tokens + (now - e->last) * a->rate);
	e->last = now;
}

/*
 * Would forgetting e change nothing at now? No connection open, and its
 * bucket as full as a new source's.
 */
static int src_forgettable(const struct admit *a, const struct admit_src *e,
                           double now)
{
	double elapsed = now > e->last ? now - e->last : 0;

	if (e->open > 0)
		return 0;
	return a->rate == 0 || e->tokens + elapsed * a->rate >= a->burst;
}

/*
 * An entry for the new source t: a free one, or the least recently seen
 * of those with no connection open if it can be forgotten. Only the
 * oldest is looked at, which keeps this O(1): while it still remembers
 * something, a newer entry that has refilled sooner is left alone and the
 * new source refused. That errs on the side of the sources already known.
 */
static struct admit_src *src_take(struct admit *a, const struct admit_ticket *t,
                                  double now)
{
	struct admit_src *e;
	uint32_t *chain;

	if (a->free == ADMIT_NIL) {
		if (a->lru_head == ADMIT_NIL)
			return NULL;
		e = &a->src[a->lru_head];
		if (!src_forgettable(a, e, now))
			return NULL;
		lru_remove(a, e);
		src_forget(a, e);
	}
	e = &a->src[a->free];
	a->free = e->next;
	e->family = t->family;
	memcpy(e->key, t->key, sizeof e->key);
	e->open = 0;
	e->tokens = a->burst;
	e->last = now;
	chain = src_chain(a, t);
	e->hnext = *chain;
	*chain = (uint32_t)(e - a->src);
	lru_append(a, e);
	return e;
}

/* Rules 4 and 5 for the source in t, under the lock. */
static enum admit_why admit_limits(struct admit *a, struct admit_ticket *t,
                                   double now)
{
	struct admit_src *e;

	if ((e = src_find(a, t)) == NULL && (e = src_take(a, t, now)) == NULL)
		return ADMIT_TABLE_FULL;
	if (e->open == 0) {
		/* Seen now: to the young end of the list. */
		lru_remove(a, e);
		lru_append(a, e);
	}
	if (a->rate > 0)
		src_refill(a, e, now);
	if (a->per_source > 0 && e->open >= a->per_source)
		return ADMIT_PER_SOURCE;
	if (a->rate > 0) {
		if (e->tokens < 1)
			return ADMIT_RATE;
		e->tokens -= 1;
	}
	if (e->open++ == 0)
		lru_remove(a, e);
	t->tracked = 1;
	return ADMIT_OK;
}

static int admit_uid_allowed(const struct admit *a, uid_t uid)
{
	for (size_t i = 0; i < a->nuids; i++)
		if (a->uids[i] == uid)
			return 1;
	return 0;
}

/* Is the peer a Unix one? Asks the socket when accept(2) gave no address. */
static int admit_is_unix(int fd, const struct sockaddr *sa, socklen_t len)
{
	socklen_t dlen = sizeof(int);
	int domain;

	if (sa != NULL && len >= sizeof(sa_family_t))
		return sa->sa_family == AF_UNIX;
	return fd >= 0 &&
	       getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &dlen) == 0 &&
	       domain == AF_UNIX;
}

enum admit_why admit_conn(struct admit *a, int fd, const struct sockaddr *sa,
                          socklen_t len, double now, struct admit_ticket *t)
{
	enum admit_why why = ADMIT_OK;
	uid_t uid = 0;
	gid_t gid;
	pid_t pid;

	admit_source(a, sa, len, t);
	if (admit_is_unix(fd, sa, len)) {
		if (a->nuids > 0 || a->src != NULL) {
			if (admit_peercred(fd, &uid, &gid, &pid) == 0) {
				uint32_t u = (uint32_t)uid;

				t->family = AF_UNIX;
				memcpy(t->key, &u, sizeof u);
			}
		}
		if (a->nuids > 0 &&
		    (t->family != AF_UNIX || !admit_uid_allowed(a, uid)))
			why = ADMIT_UID;
	} else {
		why = admit_check_addr(a, sa, len);
	}
	if (why == ADMIT_OK && a->src != NULL && t->family != 0) {
		pthread_mutex_lock(&a->lock);
		why = admit_limits(a, t, now);
		pthread_mutex_unlock(&a->lock);
	}
	if (why != ADMIT_OK)
		admit_count(a, why);
	return why;
}

void admit_release(struct admit *a, const struct admit_ticket *t)
{
	struct admit_src *e;

	if (t == NULL || !t->tracked || a->src == NULL)
		return;
	pthread_mutex_lock(&a->lock);
	if ((e = src_find(a, t)) != NULL && e->open > 0 && --e->open == 0) {
		/* Without a rate an idle entry remembers nothing: free it. */
		if (a->rate == 0)
			src_forget(a, e);
		else
			lru_append(a, e);
	}
	pthread_mutex_unlock(&a->lock);
}

void admit_count(struct admit *a, enum admit_why why)
{
	if (why == ADMIT_OK || (unsigned)why >= ADMIT_NWHY)
		return;
	atomic_fetch_add_explicit(&a->counts[why], 1, memory_order_relaxed);
}

void admit_counts(struct admit *a, uint64_t out[ADMIT_NWHY])
{
	for (size_t i = 0; i < ADMIT_NWHY; i++)
		out[i] = atomic_load_explicit(&a->counts[i],
		                              memory_order_relaxed);
}

/* -- the log limiter --------------------------------------------------- */

int admit_log_pass(struct admit *a, const struct admit_ticket *src, double now,
                   uint64_t *suppressed)
{
	struct admit_logslot *s;
	double *oldest;
	int pass = 0;

	pthread_mutex_lock(&a->lock);
	s = &a->logs[admit_hash(a, src->family, src->key) % ADMIT_LOG_SLOTS];
	if (!s->used || s->family != src->family ||
	    memcmp(s->key, src->key, sizeof s->key) != 0) {
		/* A new source, or one pushing out the slot's last one. */
		memset(s, 0, sizeof *s);
		s->used = 1;
		s->family = src->family;
		memcpy(s->key, src->key, sizeof s->key);
	}
	/*
	 * A line may go out if the ADMIT_LOG_PER_SEC-th latest went out a
	 * second ago or more: never more than that many in any one second.
	 */
	oldest = &a->log_times[a->log_next];
	if ((!s->logged || now - s->last >= ADMIT_LOG_INTERVAL) &&
	    now - *oldest >= 1) {
		*suppressed = s->suppressed;
		s->suppressed = 0;
		s->logged = 1;
		s->last = now;
		*oldest = now;
		a->log_next = (a->log_next + 1) % ADMIT_LOG_PER_SEC;
		pass = 1;
	} else {
		s->suppressed++;
	}
	pthread_mutex_unlock(&a->lock);
	return pass;
}

/* -- system ------------------------------------------------------------ */

const char *admit_why_text(const struct admit *a, enum admit_why why,
                           char *buf, size_t len)
{
	switch (why) {
	case ADMIT_DENIED:
		return "denied by --allow/--deny";
	case ADMIT_PER_SOURCE:
		snprintf(buf, len, "--max-conns-per-source %" PRIu64 " reached",
		         a->per_source);
		return buf;
	case ADMIT_RATE:
		/* As given: %g would print 1234567 as 1.23457e+06. */
		snprintf(buf, len, "over --accept-rate %.15g/s", a->rate);
		return buf;
	case ADMIT_TABLE_FULL:
		return "--source-table full";
	case ADMIT_UID:
		return "uid not in --allow-uid";
	case ADMIT_OK:
	case ADMIT_NWHY:
		break;
	}
	return admit_why_name(why);
}

char *admit_source_format(const struct admit *a,
                          const struct admit_ticket *t, char *buf,
                          size_t len)
{
	char addr[INET6_ADDRSTRLEN];
	uint32_t uid;

	switch (t->family) {
	case AF_INET:
		if (inet_ntop(AF_INET, t->key, addr, sizeof addr) != NULL) {
			snprintf(buf, len, "%s", addr);
			return buf;
		}
		break;
	case AF_INET6:
		if (inet_ntop(AF_INET6, t->key, addr, sizeof addr) != NULL) {
			snprintf(buf, len, "%s/%u", addr, a->prefix6);
			return buf;
		}
		break;
	case AF_UNIX:
		memcpy(&uid, t->key, sizeof uid);
		snprintf(buf, len, "uid %" PRIu32, uid);
		return buf;
	}
	snprintf(buf, len, "this source");
	return buf;
}

void admit_log_refused(struct admit *a, const struct admit_ticket *t,
                       const char *peer, enum admit_why why,
                       const char *reason, double now)
{
	char words[96], src[INET6_ADDRSTRLEN + 8];
	uint64_t held;

	if (log_get_level() < LOG_NORMAL || !admit_log_pass(a, t, now, &held))
		return;
	if (reason == NULL)
		reason = admit_why_text(a, why, words, sizeof words);
	if (held == 0)
		log_info("refused %s: %s", peer, reason);
	else
		log_info("refused %s: %s (%" PRIu64 " more from %s not logged)",
		         peer, reason, held,
		         admit_source_format(a, t, src, sizeof src));
}

uint64_t admit_per_source(const struct admit *a)
{
	return a->per_source;
}

double admit_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int admit_peercred(int fd, uid_t *uid, gid_t *gid, pid_t *pid)
{
	struct ucred cred;
	socklen_t len = sizeof cred;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return -1;
	if (uid != NULL)
		*uid = cred.uid;
	if (gid != NULL)
		*gid = cred.gid;
	if (pid != NULL)
		*pid = cred.pid;
	return 0;
}
