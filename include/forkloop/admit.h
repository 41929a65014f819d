/*
 * admit.h - who may connect, and how fast: the one place forkloop-echo,
 * the chat listener and the relay decide whether a peer gets in.
 *
 * Rules, in the order they are checked (the first that refuses decides):
 *   1. --allow-uid: on a Unix socket, with any --allow-uid given, only those
 *      users' peers (SO_PEERCRED, unix(7)) get in. ADMIT_UID.
 *   2. --deny / --deny-file: an IP peer inside any denied prefix is refused;
 *      deny wins over allow. ADMIT_DENIED.
 *   3. --allow / --allow-file: with any allow given, only IP peers inside an
 *      allowed prefix get in. ADMIT_DENIED.
 *      An IPv4-mapped IPv6 peer (::ffff:10.1.2.3, RFC 4291 section 2.5.5.2)
 *      is matched as the IPv4 address it carries; a rule inside
 *      ::ffff:0:0/96 is an IPv4 rule. Access lists do not apply to Unix
 *      peers, which have no address: --allow-uid is their list.
 *   4. --max-conns-per-source N: at most N open connections per source (an
 *      IPv4 address, an IPv6 /64 or --source-prefix6, a Unix peer's uid);
 *      the N+1st is refused. ADMIT_PER_SOURCE.
 *   5. --accept-rate R with --accept-burst B: a token bucket per source of
 *      B tokens refilled at R a second; a connection takes one, and is
 *      refused when none is left. Only the source over its rate is
 *      refused. ADMIT_RATE.
 * Matching a list costs O(prefix length) (a binary trie per family), not
 * O(rules).
 *
 * Sources are tracked (for 4 and 5) in a table of a fixed size
 * (--source-table, default ADMIT_DEFAULT_TABLE). A new source takes a free
 * entry, or else the least recently seen entry that remembers nothing: no
 * connection open and a bucket refilled to full. When no entry can be
 * taken, the new source is refused (ADMIT_TABLE_FULL) rather than a limited
 * source forgotten: a flood of new sources never gives a limited source its
 * allowance back.
 *
 * Threads: after admit_finish, admit_check_addr is read-only; admit_conn,
 * admit_release, admit_log_pass and admit_counts take an internal lock, so
 * any thread may call them.
 */
#ifndef FORKLOOP_ADMIT_H
#define FORKLOOP_ADMIT_H

#include <getopt.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

/* --source-table when none is given. */
#define ADMIT_DEFAULT_TABLE 65536
/* --source-prefix6 when none is given: one IPv6 subnet (RFC 4291). */
#define ADMIT_DEFAULT_PREFIX6 64
/* --allow-uid values one program takes. */
#define ADMIT_MAX_UIDS 64
/* Refusals of one source logged at most once in this many seconds. */
#define ADMIT_LOG_INTERVAL 10

/* Why a peer was refused; ADMIT_OK lets it in. */
enum admit_why {
	ADMIT_OK = 0,
	ADMIT_DENIED,     /* --deny, or not in --allow */
	ADMIT_PER_SOURCE, /* --max-conns-per-source */
	ADMIT_RATE,       /* --accept-rate */
	ADMIT_TABLE_FULL, /* no entry of --source-table could be taken */
	ADMIT_UID,        /* not an --allow-uid user */
	ADMIT_NWHY
};

/*
 * The counter name of why in statistics lines and logs: "ok", "denied",
 * "per_source", "rate", "table_full", "uid".
 */
const char *admit_why_name(enum admit_why why);

/* Long options, for getopt_long tables; values from ADMIT_OPT_BASE up. */
#define ADMIT_OPT_BASE 0x1000
enum admit_opt {
	ADMIT_OPT_ALLOW = ADMIT_OPT_BASE,
	ADMIT_OPT_DENY,
	ADMIT_OPT_ALLOW_FILE,
	ADMIT_OPT_DENY_FILE,
	ADMIT_OPT_PER_SOURCE,
	ADMIT_OPT_PREFIX6,
	ADMIT_OPT_RATE,
	ADMIT_OPT_BURST,
	ADMIT_OPT_TABLE,
	ADMIT_OPT_ALLOW_UID,
};

#define ADMIT_LONGOPTS                                                       \
	{"allow", required_argument, NULL, ADMIT_OPT_ALLOW},                 \
	{"deny", required_argument, NULL, ADMIT_OPT_DENY},                   \
	{"allow-file", required_argument, NULL, ADMIT_OPT_ALLOW_FILE},       \
	{"deny-file", required_argument, NULL, ADMIT_OPT_DENY_FILE},         \
	{"max-conns-per-source", required_argument, NULL,                    \
	 ADMIT_OPT_PER_SOURCE},                                              \
	{"source-prefix6", required_argument, NULL, ADMIT_OPT_PREFIX6},      \
	{"accept-rate", required_argument, NULL, ADMIT_OPT_RATE},            \
	{"accept-burst", required_argument, NULL, ADMIT_OPT_BURST},          \
	{"source-table", required_argument, NULL, ADMIT_OPT_TABLE},          \
	{"allow-uid", required_argument, NULL, ADMIT_OPT_ALLOW_UID}

/*
 * The options for a usage synopsis; and admit_help_text, their --help rows
 * (option column, description at column 28, as forkloop-echo's) followed by
 * a blank line, a paragraph on the order of the rules and an example line,
 * ending in a newline.
 */
#define ADMIT_USAGE                                                          \
	"       [--allow CIDR]... [--deny CIDR]... [--allow-file FILE] "     \
	"[--deny-file FILE]\n"                                               \
	"       [--max-conns-per-source N] [--source-prefix6 LEN] "          \
	"[--accept-rate R[/s]]\n"                                            \
	"       [--accept-burst B] [--source-table N] [--allow-uid UID]...\n"
extern const char admit_help_text[];

struct admit;

/* An empty set of rules: everyone gets in. NULL when out of memory. */
struct admit *admit_new(void);
/* NULL is fine. */
void admit_free(struct admit *a);

/*
 * Take one of the options above: opt is its ADMIT_OPT_* value and arg its
 * argument. Returns 1 if taken, 0 if opt is not an admission option, or -1
 * with a message in err naming the option and what is wrong:
 *   --allow/--deny CIDR: an IPv4 or IPv6 address, with /LEN (0-32, 0-128);
 *     a bare address is a /32 or /128 ("--allow 10.0.0.0/33: prefix length
 *     must be 0 to 32"); bits set past LEN are an error, as they usually
 *     mean a typo ("10.1.0.0/8: host bits set; did you mean 10.0.0.0/8?").
 *   --allow-file/--deny-file FILE: one CIDR per line; '#' starts a comment,
 *     blank lines are skipped; a UTF-8 byte order mark first is skipped;
 *     a bad line (or one with a NUL byte) is "--deny-file FILE:LINE: ..."
 *     and an unreadable file "--deny-file FILE: " and strerror. An
 *     --allow-file with no CIDR in it is still an allow list: no IP peer
 *     gets in.
 *   --max-conns-per-source N: 1 or more. --source-prefix6 LEN: 1 to 128.
 *   --accept-rate R or R/s: connections per second, more than 0.
 *   --accept-burst B: 1 or more (default: R rounded up).
 *   --source-table N: 1 to 2^24 entries. --allow-uid: a number or a user
 *     name (getpwnam(3)).
 */
int admit_option(struct admit *a, int opt, const char *arg, char *err,
                 size_t errlen);

/*
 * After the last option: check what goes together (--accept-burst needs
 * --accept-rate; --source-table and --source-prefix6 need
 * --max-conns-per-source or --accept-rate) and allocate the source table if
 * limits need one. Returns 0, or -1 with err set (a usage error) or errno
 * ENOMEM.
 */
int admit_finish(struct admit *a, char *err, size_t errlen);

/* Does a refuse anyone, that is, was any rule given? 1 or 0. */
int admit_active(const struct admit *a);
/* Was --allow-uid given? 1 or 0. */
int admit_has_uids(const struct admit *a);

/*
 * The access lists alone (rules 2 and 3), for a datagram or any peer not
 * tracked: ADMIT_OK or ADMIT_DENIED. Not counted. sa may be AF_INET or
 * AF_INET6; anything else is ADMIT_OK.
 */
enum admit_why admit_check_addr(const struct admit *a,
                                const struct sockaddr *sa, socklen_t len);

/*
 * A peer's source (its address masked to a source: an IPv4 address, an
 * IPv6 /64 or --source-prefix6, or a Unix peer's uid), and whether a
 * connection from it is counted while open. admit_conn fills it whatever
 * its verdict; pass it to admit_release once an admitted connection has
 * closed (releasing one not tracked does nothing).
 */
struct admit_ticket {
	uint8_t tracked; /* 1: counted in the table */
	uint8_t family;  /* AF_INET, AF_INET6, AF_UNIX (a uid), 0: none */
	uint8_t key[16]; /* the source: address masked, or the uid */
};

/* Fill t with the source of sa (not tracked); AF_UNIX has none here. */
void admit_source(const struct admit *a, const struct sockaddr *sa,
                  socklen_t len, struct admit_ticket *t);

/*
 * Admit or refuse a new stream connection fd from sa (what accept(2)
 * returned), now being a CLOCK_MONOTONIC time in seconds (admit_now).
 * Checks the rules in order; for AF_UNIX it reads the peer's uid with
 * admit_peercred (sa may then be NULL: the socket's SO_DOMAIN says it is a
 * Unix one), and refuses with ADMIT_UID under --allow-uid when that fails.
 * Fills t (see above). Every refusal is counted by reason. Never reads or
 * closes fd.
 */
enum admit_why admit_conn(struct admit *a, int fd, const struct sockaddr *sa,
                          socklen_t len, double now, struct admit_ticket *t);

/* A connection admit_conn let in has closed: count it out. */
void admit_release(struct admit *a, const struct admit_ticket *t);

/* Count a refusal the caller decided (a datagram admit_check_addr
 * refused). */
void admit_count(struct admit *a, enum admit_why why);

/* Refusals so far, indexed by enum admit_why (ADMIT_OK stays 0). */
void admit_counts(struct admit *a, uint64_t out[ADMIT_NWHY]);

/*
 * May a refusal of the source src (from admit_conn or admit_source) be
 * logged now? At most one line per source per ADMIT_LOG_INTERVAL seconds,
 * and at most ADMIT_LOG_PER_SEC lines a second in all, so a flood of
 * refusals from any number of sources cannot fill the log. Returns 1 with
 * *suppressed set to the refusals held back since the source's last line
 * (counted afresh from then), or 0: this one is held back and counted.
 * Memory stays bounded: a fixed number of sources are remembered, and one
 * pushed out may log again early.
 */
#define ADMIT_LOG_PER_SEC 10
int admit_log_pass(struct admit *a, const struct admit_ticket *src,
                   double now, uint64_t *suppressed);

/*
 * Why a peer was refused, in words for a log line that name the option
 * and its value: "denied by --allow/--deny", "--max-conns-per-source 8
 * reached", "over --accept-rate 20/s", "--source-table full",
 * "uid not in --allow-uid". Into buf (or a static string); returns it.
 */
const char *admit_why_text(const struct admit *a, enum admit_why why,
                           char *buf, size_t len);

/*
 * The source of t as the limits count it: "127.0.0.2", "2001:db8::/64",
 * "uid 1000". Into buf; returns buf.
 */
char *admit_source_format(const struct admit *a,
                          const struct admit_ticket *t, char *buf,
                          size_t len);

/*
 * Unless the log level is below normal (-q), log "refused PEER: REASON"
 * if admit_log_pass lets it at now, with " (N more from SOURCE not
 * logged)" when refusals of t's source were held back since its last line.
 * peer names the peer as the program does ("127.0.0.2:40000", "datagram
 * from ..."); reason NULL means admit_why_text(why). Any thread.
 */
void admit_log_refused(struct admit *a, const struct admit_ticket *t,
                       const char *peer, enum admit_why why,
                       const char *reason, double now);

/* --max-conns-per-source, or 0 without one. */
uint64_t admit_per_source(const struct admit *a);

/* CLOCK_MONOTONIC in seconds. */
double admit_now(void);

/*
 * The credentials of the peer of the Unix stream socket fd (SO_PEERCRED,
 * unix(7)): stores them and returns 0, or -1 with errno set.
 */
int admit_peercred(int fd, uid_t *uid, gid_t *gid, pid_t *pid);

#endif
