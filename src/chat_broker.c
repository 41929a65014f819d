/*
 * chat_broker.c - forkloop-chat --broker: a relay among many clients in one
 * process. One event_base, an evconnlistener per listening socket, a
 * bufferevent per client.
 *
 * Every complete line a client sends goes to every other client as
 * "<NAME> TEXT"; the relay's own lines start with "* ", which no relayed
 * line can. A client's bytes are shown to others only as text: controls,
 * line separators, what reorders the text after it (bidirectional
 * controls) and bytes that are not UTF-8 are escaped (text_escape). Names
 * are checked for what they look like, alone and beside the others', with
 * the checks of UTS #39 made by ICU's spoof checker (name_problem,
 * names_keys). That is all a relay can promise: every line it sends starts
 * with its sender's prefix, but where a reader's terminal wraps a long line
 * is the terminal's affair. A partial line waits in the sender's input
 * buffer for its newline; a line longer than --max-line is cut. Lines
 * starting with '/' are commands.
 *
 * Nobody is ever paused for a slow reader: a client whose unsent output
 * would pass --max-pending is dropped instead. So each client holds at most
 * in_max + 2 bytes of input (the read high-water mark: --max-line, or
 * BROKER_CMD_LINE so that commands are read whole) and --max-pending bytes
 * of output.
 *
 * A client lives in the room (b->clients) until it leaves: it quit, it was
 * dropped, it closed and got everything it was owed, or the relay stops. A
 * client's FIN only ends what it says: it stays in the room, receiving, until
 * its output is flushed. Leaving is marked (client_leave) and carried out by
 * broker_reap at the end of the callback, which tells the others; that notice
 * may mark more clients in turn, and no client is unlinked while the room is
 * walked. Out of the room (b->closing), a client gets what it is still owed,
 * then a lingering close: shutdown(SHUT_WR), then its input read and
 * discarded until its FIN, so that close(2) never finds unread input and
 * resets the connection (RFC 9293, 3.6.1; RFC 1122, 4.2.2.13), all within
 * BROKER_LINGER_MS.
 *
 * TLS (a tls:// --listen): each client's bufferevent is an OpenSSL one
 * (event2/bufferevent_ssl.h) made from tls.c's SSL_CTX. A client waits
 * outside the room (b->handshaking) until its handshake is done, for at
 * most --tls-handshake-timeout; one that fails or runs out of time is
 * logged and closed, never announced. With --tls-verify-client a client is
 * named after its certificate's common name when /nick would allow that
 * name (client_cert_name), and keeps it. The lingering close sends
 * close_notify (SSL_shutdown) instead of a FIN, then discards what arrives
 * until the client closes. SIGHUP loads the certificate, key and CA again
 * for the handshakes that follow.
 *
 * --metrics serves the relay's counts (metrics.h) from this loop, and
 * under systemd the service manager hears STATUS=, STOPPING=1 and the
 * watchdog's pings from it too (notify.h).
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/uset.h>
#include <unicode/uspoof.h>
#include <unicode/ustring.h>

#include "forkloop/activation.h"
#include "forkloop/chat.h"
#include "forkloop/echo.h"
#include "forkloop/listener.h"
#include "forkloop/metrics.h"
#include "forkloop/notify.h"
#include "forkloop/sock.h"
#include "forkloop/tls.h"

/* How long accepting pauses when the process runs out of descriptors. */
#define BROKER_ACCEPT_PAUSE_MS 100
/* From leaving the room to close(2): flushing, then discarding input. */
#define BROKER_LINGER_MS 2000
/* Room before a line's text for the longest prefix: "* " NAME " left: ". */
#define BROKER_PREFIX_MAX (CHAT_NAME_MAX + 16)
/* Longest /who reply, and longest command name quoted back. */
#define BROKER_WHO_MAX 1024
#define BROKER_CMD_MAX 32
/* Commands are read whole up to this long, whatever --max-line says. */
#define BROKER_CMD_LINE 256
/* A certificate's common name is read into this many bytes (tls_peer_cn). */
#define BROKER_CN_MAX 256
/* Skeletons per name (names_keys), and room for that of "user" or a digit. */
#define NAMES_KEYS 3
#define NAMES_SKEL_SHORT 16

enum client_state {
	CLIENT_HANDSHAKE, /* TLS: not yet in the room (b->handshaking) */
	CLIENT_IN,        /* in the room: sends and receives lines */
	CLIENT_HALF,      /* in the room after its FIN: receives, flushes */
	CLIENT_OUT,       /* out of the room: flushing, then lingering */
};

/* Why a client leaves the room. */
enum client_why {
	WHY_NONE = 0,
	WHY_EOF,      /* it closed and was sent everything */
	WHY_ERROR,    /* a socket error (err) or out of memory */
	WHY_SLOW,     /* its output would pass --max-pending */
	WHY_QUIT,     /* /quit; the others have been told */
	WHY_SHUTDOWN, /* SIGINT or SIGTERM */
};

struct broker;

struct client {
	TAILQ_ENTRY(client) entry; /* in b->clients, or in b->closing */
	struct broker *b;
	struct bufferevent *bev;
	struct event *linger_ev; /* CLIENT_OUT: the deadline */
	struct event *hs_ev;     /* CLIENT_HANDSHAKE: its deadline */
	char *from;              /* its address, for the log */
	char name[CHAT_NAME_MAX + 1];
	char *keys;              /* what name looks like (names_keys); NULL
	                            for the relay's own userN */
	size_t scanned;          /* input bytes known to hold no newline */
	unsigned discarding : 1; /* dropping the rest of a cut line */
	unsigned eof : 1;        /* its FIN has arrived */
	unsigned fin_sent : 1;   /* our FIN (TLS: close_notify) is sent */
	unsigned tls : 1;        /* an OpenSSL bufferevent */
	unsigned cert_name : 1;  /* named after its certificate (kept) */
	enum client_state state;
	enum client_why why; /* set: leaving, for broker_reap */
	int err;             /* WHY_ERROR: the socket error */
	char *tls_why;       /* WHY_ERROR over TLS: OpenSSL's reason, or NULL */
	size_t pending;      /* WHY_SLOW: bytes it had not read */
	uint64_t lines_in;   /* lines it sent, commands included */
	uint64_t start;      /* CLOCK_MONOTONIC ms: accepted */
	/* Its source, counted out by admit_release when it is freed. */
	struct admit_ticket ticket;
};

TAILQ_HEAD(client_list, client);

/* What names are checked with (names_open). */
struct names {
	USpoofChecker *sc;
	char user[2][NAMES_SKEL_SHORT];   /* skeletons of "user", "USER" */
	char digit[10][NAMES_SKEL_SHORT]; /* of "0" to "9" */
};

struct broker {
	const struct chat_opts *o;
	struct event_base *base;
	struct evconnlistener *lev[CHAT_MAX_LISTEN]; /* one per address */
	size_t nlev;
	struct event *sigint_ev;
	struct event *sigterm_ev;
	struct event *sighup_ev;
	struct event *sigusr1_ev;
	/* The signals forkloop-echo only logs (echo_ignored_signals), SIGHUP
	 * aside: a stray SIGUSR2 must not end the relay either. */
	struct event *sigother_ev[ECHO_NIGNORED_SIGNALS];
	struct event *resume_ev; /* re-enables accepting after a burst or
	                            after EMFILE */
	unsigned burst;          /* accepts since the loop last had a turn */
	struct echo_pause pause; /* accepting paused for want of descriptors */
	struct client_list clients; /* the room */
	struct client_list closing; /* out of the room, not yet closed */
	struct client_list handshaking; /* TLS: before the room */
	size_t nclients;
	size_t nleaving; /* clients marked but not yet reaped */
	size_t nopen;    /* clients not yet freed, for --max-clients */
	unsigned long long accepted; /* connections admitted */
	unsigned long long refused;  /* refused by --max-clients */
	uint64_t lines;    /* lines relayed to the others */
	uint64_t cut;      /* lines cut at --max-line */
	uint64_t dropped;  /* clients dropped for not reading */
	struct metrics *metrics; /* --metrics; NULL without */
	struct notify *notify;   /* NULL without NOTIFY_SOCKET */
	unsigned long long next_id;
	char *line; /* room for a prefix, --max-line bytes and a newline */
	size_t in_max; /* longest line read whole: --max-line, or a command */
	struct names names; /* one spoof checker for every /nick */
	struct tls_server *tls;      /* a tls:// --listen; NULL otherwise */
	const struct timeval *hs_tv; /* --tls-handshake-timeout */
	int stopping; /* SIGINT or SIGTERM: closing everyone */
	int status;   /* -1 while running */
};

/* --- Unicode: decoding, names, and text as shown --- */

#define UTF8_BAD   (-1L) /* not the start of a well-formed sequence */
#define UTF8_SHORT (-2L) /* a well-formed start that the end cuts off */

/*
 * Decode the character at p (n > 0 bytes) as UTF-8, by the well-formed byte
 * sequences of the Unicode Standard (chapter 3, table 3-7; RFC 3629): no
 * overlong forms, surrogates or values past U+10FFFF. Returns the code
 * point and sets *len to its length; UTF8_BAD with *len 1, or UTF8_SHORT
 * with *len n. Done here rather than with mbrtowc(3), whose answer depends
 * on the process's locale.
 */
static long utf8_next(const unsigned char *p, size_t n, size_t *len)
{
	unsigned c = p[0], lo = 0x80, hi = 0xbf;
	size_t k, i;
	long cp;

	*len = 1;
	if (c < 0x80)
		return (long)c;
	if (c >= 0xc2 && c <= 0xdf) {
		k = 2;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		k = 3;
		cp = c & 0x0f;
		lo = c == 0xe0 ? 0xa0 : 0x80;
		hi = c == 0xed ? 0x9f : 0xbf;
	} else if (c >= 0xf0 && c <= 0xf4) {
		k = 4;
		cp = c & 0x07;
		lo = c == 0xf0 ? 0x90 : 0x80;
		hi = c == 0xf4 ? 0x8f : 0xbf;
	} else {
		return UTF8_BAD;
	}
	for (i = 1; i < k; i++) {
		if (i == n) {
			*len = n;
			return UTF8_SHORT;
		}
		if (p[i] < lo || p[i] > hi)
			return UTF8_BAD;
		cp = cp << 6 | (p[i] & 0x3f);
		lo = 0x80;
		hi = 0xbf;
	}
	*len = k;
	return cp;
}

struct urange {
	uint32_t lo, hi;
};

static int urange_cmp(const void *key, const void *elem)
{
	uint32_t cp = *(const uint32_t *)key;
	const struct urange *r = elem;

	return cp < r->lo ? -1 : cp > r->hi ? 1 : 0;
}

#define URANGE_IN(t, cp) urange_in((t), sizeof(t) / sizeof((t)[0]), (cp))

static int urange_in(const struct urange *t, size_t n, long cp)
{
	uint32_t key = (uint32_t)cp;

	return bsearch(&key, t, n, sizeof *t, urange_cmp) != NULL;
}

/*
 * What shows as nothing, as blank or not at all, or moves the text around
 * it: controls, format characters, spaces, line and paragraph separators,
 * private use and unassigned code points (General_Category Cc, Cf, Zs, Zl,
 * Zp, Co, Cn), Default_Ignorable_Code_Point (UAX #44), and U+2800 BRAILLE
 * PATTERN BLANK, which shows as a space. From ICU's tables, so they follow
 * its version of Unicode.
 */
static int name_invisible(long cp)
{
	UChar32 c = (UChar32)cp;
	uint32_t gc = U_GC_CC_MASK | U_GC_CF_MASK | U_GC_Z_MASK | U_GC_CO_MASK |
	              U_GC_CN_MASK;

	return (U_GET_GC_MASK(c) & gc) != 0 || c == 0x2800 ||
	       u_hasBinaryProperty(c, UCHAR_DEFAULT_IGNORABLE_CODE_POINT);
}

/* A combining mark (General_Category Mn, Mc, Me). */
static int name_mark(long cp)
{
	return (U_GET_GC_MASK((UChar32)cp) & U_GC_M_MASK) != 0;
}

/*
 * Combining diacritics that Latin, Greek and Cyrillic letters also come
 * precomposed with (the blocks Combining Diacritical Marks, its Extended
 * and Supplement, for Symbols, and Half Marks): "e" U+0301 would look like
 * "é" U+00E9, and stacked marks spill over the lines around a name.
 */
static const struct urange name_diacritics[] = {
        {0x0300, 0x036f},
        {0x1ab0, 0x1aff},
        {0x1dc0, 0x1dff},
        {0x20d0, 0x20ff},
        {0xfe20, 0xfe2f},
};

/*
 * Letters that are ASCII letters and digits in another style, and that
 * NFKC folds to ASCII (UAX #15; UTS #39, 4): fullwidth forms and the
 * Mathematical Alphanumeric Symbols.
 */
static const struct urange name_styled_ascii[] = {
        {0xff01, 0xff5e},
        {0x1d400, 0x1d7ff},
};

/*
 * The checks of UTS #39 that ICU's spoof checker makes on a name alone:
 *
 * - What it is made of (CHAR_LIMIT): characters of Identifier_Status
 *   Allowed, the General Security Profile of 3.1 (ICU's recommended and
 *   inclusion sets). That leaves out compatibility characters (U+212A
 *   KELVIN SIGN, U+FB01 the "fi" ligature, U+01C5, U+217C SMALL ROMAN
 *   NUMERAL FIFTY), letters for technical or obsolete use (U+0251, U+01C0)
 *   and scripts of limited use (Khitan, whose U+16FE4 shows as nothing).
 *   Added to it: printable ASCII, as nicknames have always had it ("!",
 *   "_", "|"), and the characters shown as emoji by default
 *   (Emoji_Presentation, UTS #51), which look like no letter. Those that
 *   do look like one ("|", "0", "1") are caught by the skeletons.
 * - Scripts (RESTRICTION_LEVEL): Highly Restrictive (5.2), one script, or
 *   Latin with Han and kana, Han and Bopomofo, or Han and Hangul, rather
 *   than Moderately Restrictive, which lets Latin mix with any other
 *   script but Cyrillic, Greek and Cherokee: Armenian too, whose letters
 *   pass for Latin ones ("b" U+0585 "b"). A name is a word its owner
 *   writes in one script, and the skeletons only stop a lookalike of a
 *   name that is here now.
 * - Digits of one numbering system (MIXED_NUMBERS, 5.3); no mark twice in
 *   a row after NFD (INVISIBLE, 5.4); no mark that the letter under it
 *   hides, as U+0307 on "i" (HIDDEN_OVERLAY, 5.4).
 *
 * Then skeletons (names_keys), and those of "user", "USER" and the digits,
 * which the relay's own names are made of.
 */
static int names_open(struct names *nm, UErrorCode *e)
{
	static const char *user[2] = {"user", "USER"};
	USet *ok = uset_openEmpty(), *emoji = uset_openEmpty();
	char digit[2] = "0";
	int32_t i, n;

	memset(nm, 0, sizeof *nm);
	nm->sc = uspoof_open(e);
	if (ok == NULL || emoji == NULL)
		*e = U_MEMORY_ALLOCATION_ERROR;
	if (U_SUCCESS(*e)) {
		uset_addAll(ok, uspoof_getRecommendedSet(e));
		uset_addAll(ok, uspoof_getInclusionSet(e));
		uset_addRange(ok, '!', '~');
		uset_applyIntPropertyValue(emoji, UCHAR_EMOJI_PRESENTATION, 1,
		                           e);
		uset_addAll(ok, emoji);
		uspoof_setAllowedChars(nm->sc, ok, e);
		uspoof_setRestrictionLevel(nm->sc, USPOOF_HIGHLY_RESTRICTIVE);
		uspoof_setChecks(nm->sc,
		                 USPOOF_CHAR_LIMIT | USPOOF_RESTRICTION_LEVEL |
		                         USPOOF_MIXED_NUMBERS |
		                         USPOOF_INVISIBLE |
		                         USPOOF_HIDDEN_OVERLAY,
		                 e);
	}
	if (ok != NULL)
		uset_close(ok);
	if (emoji != NULL)
		uset_close(emoji);
	for (i = 0; i < 2 && U_SUCCESS(*e); i++) {
		n = uspoof_getSkeletonUTF8(nm->sc, 0, user[i], -1, nm->user[i],
		                           NAMES_SKEL_SHORT, e);
		if (U_SUCCESS(*e) && (n == 0 || n >= NAMES_SKEL_SHORT))
			*e = U_BUFFER_OVERFLOW_ERROR;
	}
	for (i = 0; i < 10 && U_SUCCESS(*e); i++, digit[0]++) {
		n = uspoof_getSkeletonUTF8(nm->sc, 0, digit, 1, nm->digit[i],
		                           NAMES_SKEL_SHORT, e);
		if (U_SUCCESS(*e) && (n == 0 || n >= NAMES_SKEL_SHORT))
			*e = U_BUFFER_OVERFLOW_ERROR;
	}
	return U_SUCCESS(*e) ? 0 : -1;
}

static void names_close(struct names *nm)
{
	if (nm->sc != NULL)
		uspoof_close(nm->sc);
	nm->sc = NULL;
}

/* Why ICU refuses the n bytes at s, well-formed UTF-8, or NULL. */
static const char *name_spoof_problem(const struct names *nm, const char *s,
                                      size_t n)
{
	UErrorCode e = U_ZERO_ERROR;
	const UNormalizer2 *nfc = unorm2_getNFCInstance(&e);
	UChar u[CHAT_NAME_MAX];
	int32_t len, checks;
	UBool composed;

	u_strFromUTF8(u, CHAT_NAME_MAX, &len, s, (int32_t)n, &e);
	composed = U_SUCCESS(e) && unorm2_isNormalized(nfc, u, len, &e);
	if (U_FAILURE(e))
		return "cannot be checked now";
	/*
	 * Refused rather than normalized, so that the name shown is the name
	 * sent: NFC makes U+212A KELVIN SIGN "K", Hangul jamo a syllable, and
	 * a kana and U+3099 the voiced kana they imitate.
	 */
	if (!composed)
		return "not in Unicode normalization form C (NFC)";
	checks = uspoof_check2(nm->sc, u, len, NULL, &e);
	if (U_FAILURE(e))
		return "cannot be checked now";
	if (checks & USPOOF_CHAR_LIMIT)
		return "characters not recommended in names (UTS #39)";
	if (checks & USPOOF_RESTRICTION_LEVEL)
		return "letters of scripts that do not mix";
	if (checks & USPOOF_MIXED_NUMBERS)
		return "digits of more than one numbering system";
	if (checks & USPOOF_HIDDEN_OVERLAY)
		return "a mark that the letter under it hides";
	if (checks != 0)
		return "too many combining marks";
	return NULL;
}

/*
 * Why the n bytes at s cannot be a name, or NULL if they can. A name is
 * judged by what it shows: nothing invisible or blank, nothing that moves
 * the text around it, no marks that stack (more than 4 in a row, or one
 * twice: UTS #39, 5.4), in NFC, and what name_spoof_problem allows. Whether
 * it looks like another name is for names_keys.
 */
static const char *name_problem(const struct names *nm, const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	unsigned marks = 0;
	size_t i, len;
	long cp, prev = -1;

	if (n == 0 || n > CHAT_NAME_MAX)
		return "1 to 32 bytes";
	for (i = 0; i < n; i += len, prev = cp) {
		cp = utf8_next(p + i, n - i, &len);
		if (cp < 0)
			return "not UTF-8";
		if (name_invisible(cp))
			return "no spaces, controls or invisible characters";
		if (cp == '<' || cp == '>')
			return "no '<' or '>'";
		if (URANGE_IN(name_diacritics, cp))
			return "combining accents: use the accented letter";
		if (URANGE_IN(name_styled_ascii, cp))
			return "fullwidth or mathematical letters: use plain ones";
		if (!name_mark(cp))
			marks = 0;
		else if (i == 0)
			return "it starts with a combining mark";
		else if (cp == prev || ++marks > 4)
			return "too many combining marks";
	}
	return name_spoof_problem(nm, s, n);
}

int chat_broker_name_ok(const char *s, size_t n)
{
	UErrorCode e = U_ZERO_ERROR;
	struct names nm;
	int ok;

	ok = names_open(&nm, &e) == 0 && name_problem(&nm, s, n) == NULL;
	names_close(&nm);
	return ok;
}

static char ascii_case(char c, int upper)
{
	if (upper && c >= 'a' && c <= 'z')
		return (char)(c - 'a' + 'A');
	if (!upper && c >= 'A' && c <= 'Z')
		return (char)(c - 'A' + 'a');
	return c;
}

/* Append the skeleton of the n bytes at s and a NUL to *keys (*len long). */
static int names_add_skeleton(const struct names *nm, const char *s, size_t n,
                              char **keys, size_t *len)
{
	UErrorCode e = U_ZERO_ERROR;
	int32_t k;
	char *p;

	k = uspoof_getSkeletonUTF8(nm->sc, 0, s, (int32_t)n, NULL, 0, &e);
	if (e != U_BUFFER_OVERFLOW_ERROR && U_FAILURE(e))
		return -1;
	p = realloc(*keys, *len + (size_t)k + 1);
	if (p == NULL)
		return -1;
	*keys = p;
	e = U_ZERO_ERROR;
	uspoof_getSkeletonUTF8(nm->sc, 0, s, (int32_t)n, p + *len, k + 1, &e);
	if (U_FAILURE(e))
		return -1;
	*len += (size_t)k + 1;
	return 0;
}

/*
 * What the n bytes at s, a name, look like: the confusable skeletons (UTS
 * #39, 4) of the name, of its ASCII lower case and of its ASCII upper case,
 * since names that differ in ASCII case are one name: "Mary" is "mary",
 * which looks like "rnary", and "abe" is "ABE", which Greek capitals
 * imitate. NAMES_KEYS strings, each ended by a NUL, in one allocation to
 * free; NULL if out of memory.
 */
static char *names_keys(const struct names *nm, const char *s, size_t n)
{
	char name[CHAT_NAME_MAX], *keys = NULL;
	size_t len = 0, i;
	int k;

	for (k = 0; k < NAMES_KEYS; k++) {
		for (i = 0; i < n; i++)
			name[i] = k == 0 ? s[i] : ascii_case(s[i], k == 2);
		if (names_add_skeleton(nm, name, n, &keys, &len) < 0) {
			free(keys);
			return NULL;
		}
	}
	return keys;
}

static const char *keys_next(const char *k)
{
	return k + strlen(k) + 1;
}

/* Do two names look alike: does any key of the one equal one of the other? */
static int keys_meet(const char *a, const char *b)
{
	const char *x, *y;
	int i, j;

	for (i = 0, x = a; i < NAMES_KEYS; i++, x = keys_next(x)) {
		for (j = 0, y = b; j < NAMES_KEYS; j++, y = keys_next(y)) {
			if (strcmp(x, y) == 0)
				return 1;
		}
	}
	return 0;
}

/*
 * Is s the skeletons of one or more digits end to end? Each is at least
 * one byte (names_open), and one character in ICU's data, so at most one
 * matches at each place.
 */
static int names_digits(const struct names *nm, const char *s)
{
	size_t i, len;

	for (i = 0; i < 10; i++) {
		len = strlen(nm->digit[i]);
		if (strncmp(s, nm->digit[i], len) == 0 &&
		    (s[len] == '\0' || names_digits(nm, s + len)))
			return 1;
	}
	return 0;
}

/*
 * Does a name with these keys look like "user" and digits, a name the
 * relay hands out, in any ASCII case ("USER12", "userl", "u" U+0455
 * "er1")? Any name that looks like a userN has a key of this form, so the
 * relay's own names need no keys.
 */
static int names_reserved(const struct names *nm, const char *keys)
{
	const char *k = keys;
	size_t i, j, len;

	for (i = 0; i < NAMES_KEYS; i++, k = keys_next(k)) {
		for (j = 0; j < 2; j++) {
			len = strlen(nm->user[j]);
			if (strncmp(k, nm->user[j], len) == 0 &&
			    k[len] != '\0' && names_digits(nm, k + len))
				return 1;
		}
	}
	return 0;
}

/*
 * What text_escape shows otherwise than as itself: the C0 and C1 controls
 * and DEL; U+2028 and U+2029, which end a line; the Bidi_Control
 * characters (UAX #9: U+061C, U+200E, U+200F, U+202A-U+202E,
 * U+2066-U+2069), each of which reorders the text after it up to the end
 * of the reader's line ("Trojan Source", CVE-2021-42574); the deprecated
 * format characters U+206A-U+206F, which switch how the Arabic letters and
 * digits after them are shaped (Unicode 23.3); and the interlinear
 * annotation characters U+FFF9-U+FFFB, which may hide the text between
 * them (23.8). The other invisible characters stay: ZWJ and ZWNJ,
 * variation selectors and tags are parts of emoji and of words in many
 * scripts, and the zero width space, word joiner and invisible operators
 * hide nothing but themselves. Names have none of them (name_invisible).
 */
static int text_shown_escaped(long cp)
{
	if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f))
		return 1;
	if (cp < 0x061c)
		return 0;
	return cp == 0x2028 || cp == 0x2029 || (cp >= 0x206a && cp <= 0x206f) ||
	       (cp >= 0xfff9 && cp <= 0xfffb) ||
	       u_hasBinaryProperty((UChar32)cp, UCHAR_BIDI_CONTROL);
}

/*
 * Copy the n bytes at p into out (room bytes) as they may be shown to
 * others: valid UTF-8 unchanged but for TAB; C0 controls and DEL in caret
 * notation ("^[" for ESC, "^M" for CR, "^?" for DEL); the other characters
 * of text_shown_escaped as "\u009B", "\u202E"; every byte that is not part
 * of valid UTF-8 as "\xFF". Stops before a character or escape that does
 * not fit, and, when more of the line follows (cut), before a character
 * split by the end. Returns the bytes written and sets *used to the bytes
 * of p taken.
 */
static size_t text_escape(const unsigned char *p, size_t n, int cut,
                          char *out, size_t room, size_t *used)
{
	size_t i = 0, k = 0;

	while (i < n) {
		char esc[16];
		const char *s = esc;
		size_t len, w;
		long cp = utf8_next(p + i, n - i, &len);

		if (cp == UTF8_SHORT && cut)
			break;
		if (cp < 0) {
			len = 1;
			w = (size_t)snprintf(esc, sizeof esc, "\\x%02X", p[i]);
		} else if (cp == '\t' || !text_shown_escaped(cp)) {
			s = (const char *)p + i;
			w = len;
		} else if (cp < 0x20 || cp == 0x7f) {
			esc[0] = '^';
			esc[1] = cp == 0x7f ? '?' : (char)(cp + 0x40);
			w = 2;
		} else {
			w = (size_t)snprintf(esc, sizeof esc, "\\u%04lX", cp);
		}
		if (w > room - k)
			break;
		memcpy(out + k, s, w);
		k += w;
		i += len;
	}
	*used = i;
	return k;
}

/* --- sending --- */

static int client_listening(const struct client *c)
{
	return c->state != CLIENT_OUT && c->why == WHY_NONE;
}

/* Mark c to leave the room at the next broker_reap; the first reason sticks. */
static void client_leave(struct client *c, enum client_why why, int err)
{
	if (c->state == CLIENT_OUT || c->why != WHY_NONE)
		return;
	c->why = why;
	c->err = err;
	c->b->nleaving++;
	bufferevent_disable(c->bev, EV_READ);
}

/* Queue n bytes for c, or drop c if that would pass --max-pending. */
static void client_send(struct client *c, const void *p, size_t n)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	size_t pending = evbuffer_get_length(out);

	if (!client_listening(c))
		return;
	if (pending + n > c->b->o->max_pending) {
		c->pending = pending;
		client_leave(c, WHY_SLOW, 0);
		return;
	}
	if (evbuffer_add(out, p, n) < 0)
		client_leave(c, WHY_ERROR, ENOMEM);
}

static void client_notice(struct client *c, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

/* "* ...\n" to c alone. */
static void client_notice(struct client *c, const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof buf)
		return;
	client_send(c, buf, (size_t)n);
}

/* n bytes to every client in the room but from (which may be NULL). */
static void broker_send_all(struct broker *b, const struct client *from,
                            const void *p, size_t n)
{
	struct client *c;

	TAILQ_FOREACH(c, &b->clients, entry)
	{
		if (c != from)
			client_send(c, p, n);
	}
}

static void broker_notice(struct broker *b, const struct client *from,
                          const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* "* ...\n" to every client but from. */
static void broker_notice(struct broker *b, const struct client *from,
                          const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof buf)
		return;
	broker_send_all(b, from, buf, (size_t)n);
}

/* --- closing --- */

static void broker_check_done(struct broker *b)
{
	if (b->stopping && TAILQ_EMPTY(&b->clients) &&
	    TAILQ_EMPTY(&b->closing))
		event_base_loopbreak(b->base);
}

static void client_free(struct client *c)
{
	struct broker *b = c->b;

	if (c->state == CLIENT_OUT) {
		TAILQ_REMOVE(&b->closing, c, entry);
	} else if (c->state == CLIENT_HANDSHAKE) {
		TAILQ_REMOVE(&b->handshaking, c, entry);
	} else {
		TAILQ_REMOVE(&b->clients, c, entry);
		b->nclients--;
		if (c->why != WHY_NONE)
			b->nleaving--;
	}
	if (c->linger_ev != NULL)
		event_free(c->linger_ev);
	if (c->hs_ev != NULL)
		event_free(c->hs_ev);
	bufferevent_free(c->bev); /* closes the socket, frees the SSL */
	admit_release(b->o->admit, &c->ticket);
	b->nopen--;
	free(c->from);
	free(c->keys);
	free(c->tls_why);
	free(c);
	broker_check_done(b);
}

static void client_lingercb(evutil_socket_t fd, short what, void *arg)
{
	struct client *c = arg;
	struct log_kv kv;

	(void)fd;
	(void)what;
	if (log_get_level() >= LOG_VERBOSE) {
		log_kv_start(&kv, "close");
		log_kv_str(&kv, "name", c->name);
		log_kv_str(&kv, "peer", c->from);
		log_kv_str(&kv, "reason", "linger_timeout");
		log_kv_u64(&kv, "linger_ms", BROKER_LINGER_MS);
		log_verbose("%s", kv.buf);
	}
	client_free(c);
}

/* Out of the room: what arrives now is read and thrown away. */
static void client_discardcb(struct bufferevent *bev, void *arg)
{
	struct evbuffer *in = bufferevent_get_input(bev);

	(void)arg;
	evbuffer_drain(in, evbuffer_get_length(in));
}

/*
 * TLS: everything owed went through SSL_write; send close_notify
 * (SSL_shutdown(3)) without waiting for the client's, which the lingering
 * read takes as the end. OpenSSL writes it to the socket itself; a full
 * socket buffer loses it (WANT_WRITE), and the linger still ends.
 */
static void client_tls_notify(struct client *c)
{
	SSL *ssl = bufferevent_openssl_get_ssl(c->bev);

	if (ssl != NULL && SSL_shutdown(ssl) < 0)
		ERR_clear_error();
}

/*
 * Everything owed is out: send our FIN (TLS: close_notify), then wait for
 * the client's.
 */
static void client_fin(struct client *c)
{
	if (c->fin_sent)
		return;
	c->fin_sent = 1;
	if (c->tls)
		client_tls_notify(c);
	if (c->eof ||
	    (!c->tls && shutdown(bufferevent_getfd(c->bev), SHUT_WR) < 0)) {
		client_free(c);
		return;
	}
	bufferevent_setwatermark(c->bev, EV_READ, 0, 0);
	/* Unwatched, the client's FIN would be waited for until the linger
	 * ends (epoll_ctl(2): ENOMEM): close now, everything owed is out. */
	if (bufferevent_enable(c->bev, EV_READ) < 0)
		client_free(c);
}

static void client_flushedcb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	client_fin(arg);
}

/* The client's FIN (done), or an error (nothing more can be sent). */
static void client_closing_eventcb(struct bufferevent *bev, short what,
                                   void *arg)
{
	(void)bev;
	(void)what;
	client_free(arg);
}

/*
 * Keep only the rest of the line c's kernel buffer holds the start of.
 * TLS: also the first CHAT_CHUNK bytes (the bufferevent's most for one
 * SSL_write) and the rest of their last line: an SSL_write that could not
 * finish is made again with the same bytes (SSL_write(3)), which libevent
 * leaves at the head of the buffer.
 */
static void client_trim_output(struct client *c)
{
	struct evbuffer *out = bufferevent_get_output(c->bev), *rest;
	struct evbuffer_ptr start, eol;
	size_t eol_len, keep = c->tls ? CHAT_CHUNK - 1 : 0;

	if (evbuffer_get_length(out) <= keep ||
	    evbuffer_ptr_set(out, &start, keep, EVBUFFER_PTR_SET) < 0)
		return; /* no more than that: all of it stays */
	eol = evbuffer_search_eol(out, &start, &eol_len, EVBUFFER_EOL_LF);
	rest = eol.pos < 0 ? NULL : evbuffer_new();
	if (rest != NULL)
		evbuffer_remove_buffer(out, rest, (size_t)eol.pos + 1);
	evbuffer_drain(out, evbuffer_get_length(out));
	if (rest != NULL) {
		evbuffer_add_buffer(out, rest);
		evbuffer_free(rest);
	}
}

/*
 * c has left the room: move it to b->closing, add its last notice, and
 * close it gracefully once it has been sent what it is owed, or within
 * BROKER_LINGER_MS.
 */
static void client_close(struct client *c, enum client_why why)
{
	struct broker *b = c->b;
	struct timeval tv = {BROKER_LINGER_MS / 1000,
	                     BROKER_LINGER_MS % 1000 * 1000};
	struct evbuffer *out = bufferevent_get_output(c->bev);

	c->state = CLIENT_OUT;
	TAILQ_INSERT_TAIL(&b->closing, c, entry);
	if (why == WHY_ERROR) {
		client_free(c);
		return;
	}
	if (why == WHY_SLOW) {
		client_trim_output(c);
		evbuffer_add_printf(out, "* you were dropped: not reading\n");
	} else if (why == WHY_SHUTDOWN) {
		evbuffer_add_printf(out, "* the relay is shutting down\n");
	}
	c->linger_ev = evtimer_new(b->base, client_lingercb, c);
	if (c->linger_ev == NULL || evtimer_add(c->linger_ev, &tv) < 0) {
		client_free(c);
		return;
	}
	bufferevent_disable(c->bev, EV_READ);
	bufferevent_setcb(c->bev, client_discardcb, client_flushedcb,
	                  client_closing_eventcb, c);
	bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
	/* Unwatched, what c is owed would never go out. */
	if (bufferevent_enable(c->bev, EV_WRITE) < 0) {
		client_free(c);
		return;
	}
	if (evbuffer_get_length(out) == 0)
		client_fin(c);
}

/* The first client marked to leave, or NULL. */
static struct client *broker_next_leaving(struct broker *b)
{
	struct client *c;

	TAILQ_FOREACH(c, &b->clients, entry)
	{
		if (c->why != WHY_NONE)
			return c;
	}
	return NULL;
}

static uint64_t broker_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*
 * With -v, c leaves the room for why: "event=leave name=NAME peer=PEER
 * reason=eof lines_in=3 duration_ms=1200" (reason eof, quit, reset, error,
 * or shutdown; reset and error end with error="..."), or, dropped for not
 * reading, "event=drop ... reason=not_reading pending=BYTES ...".
 */
static void client_log_leave(const struct client *c, enum client_why why)
{
	static const char *const reasons[] = {
	        [WHY_NONE] = "none",   [WHY_EOF] = "eof",
	        [WHY_ERROR] = "error", [WHY_SLOW] = "not_reading",
	        [WHY_QUIT] = "quit",   [WHY_SHUTDOWN] = "shutdown",
	};
	struct log_kv kv;

	if (log_get_level() < LOG_VERBOSE)
		return;
	log_kv_start(&kv, why == WHY_SLOW ? "drop" : "leave");
	log_kv_str(&kv, "name", c->name);
	log_kv_str(&kv, "peer", c->from);
	/* As forkloop-echo names it: a reset is not just any error. */
	if (why == WHY_ERROR && c->tls_why == NULL &&
	    echo_end_errno(c->err) == ECHO_END_RESET)
		log_kv_str(&kv, "reason", echo_end_name(ECHO_END_RESET));
	else
		log_kv_str(&kv, "reason", reasons[why]);
	if (why == WHY_SLOW)
		log_kv_u64(&kv, "pending", c->pending);
	log_kv_u64(&kv, "lines_in", c->lines_in);
	log_kv_u64(&kv, "duration_ms", broker_now_ms() - c->start);
	if (why == WHY_ERROR)
		log_kv_str(&kv, "error",
		           c->tls_why != NULL ? c->tls_why : strerror(c->err));
	log_verbose("%s", kv.buf);
}

/* Carry out every leave marked, tell the others, until none is marked. */
static void broker_reap(struct broker *b)
{
	char name[CHAT_NAME_MAX + 1];
	struct client *c;
	enum client_why why;

	while (b->nleaving > 0 && (c = broker_next_leaving(b)) != NULL) {
		why = c->why;
		TAILQ_REMOVE(&b->clients, c, entry);
		b->nclients--;
		b->nleaving--;
		memcpy(name, c->name, sizeof name);
		if (why == WHY_SLOW)
			b->dropped++;
		client_log_leave(c, why);
		client_close(c, why);
		if (why == WHY_SLOW)
			broker_notice(b, NULL, "* %s dropped: not reading\n",
			              name);
		else if (why == WHY_EOF || why == WHY_ERROR)
			broker_notice(b, NULL, "* %s left\n", name);
	}
}

/* --- commands --- */

static int name_is(const char *name, const char *s, size_t n)
{
	return strlen(name) == n && evutil_ascii_strncasecmp(name, s, n) == 0;
}

/*
 * The client other than c whose name is s (n bytes) ignoring ASCII case,
 * or looks like it (keys), or NULL.
 */
static struct client *broker_find(struct broker *b, const struct client *c,
                                  const char *s, size_t n, const char *keys)
{
	struct client *o;

	TAILQ_FOREACH(o, &b->clients, entry)
	{
		if (o == c || !client_listening(o))
			continue;
		if (name_is(o->name, s, n) ||
		    (o->keys != NULL && keys_meet(o->keys, keys)))
			return o;
	}
	return NULL;
}

/* Tell c why it cannot be s (n bytes, that look like keys): 1, or 0. */
static int client_name_taken(struct client *c, const char *s, size_t n,
                             const char *keys)
{
	struct broker *b = c->b;
	/* Taken or looks taken; a client may change its own case. */
	const struct client *o = broker_find(b, c, s, n, keys);

	if (o != NULL && name_is(o->name, s, n))
		client_notice(c, "* name taken: %.*s\n", (int)n, s);
	else if (o != NULL)
		client_notice(c, "* name taken: %.*s looks like %s\n", (int)n,
		              s, o->name);
	else if (names_reserved(&b->names, keys))
		client_notice(c, "* name reserved: %.*s (the relay names "
		                 "newcomers userN)\n",
		              (int)n, s);
	else
		return 0;
	return 1;
}

static void client_nick(struct client *c, const char *s, size_t n)
{
	struct broker *b = c->b;
	char old[CHAT_NAME_MAX + 1], *keys;
	const char *why;

	if (n == 0) {
		client_notice(c, "* usage: /nick NAME\n");
		return;
	}
	if (c->cert_name) {
		client_notice(c, "* your name comes from your certificate\n");
		return;
	}
	why = name_problem(&b->names, s, n);
	if (why != NULL) {
		client_notice(c, "* bad name: %s\n", why);
		return;
	}
	if (strlen(c->name) == n && memcmp(c->name, s, n) == 0) {
		client_notice(c, "* you are already %s\n", c->name);
		return;
	}
	keys = names_keys(&b->names, s, n);
	if (keys == NULL) {
		client_leave(c, WHY_ERROR, ENOMEM);
		return;
	}
	if (client_name_taken(c, s, n, keys)) {
		free(keys);
		return;
	}
	free(c->keys);
	c->keys = keys;
	memcpy(old, c->name, sizeof old);
	memcpy(c->name, s, n);
	c->name[n] = '\0';
	if (log_get_level() >= LOG_VERBOSE) {
		struct log_kv kv;

		log_kv_start(&kv, "nick");
		log_kv_str(&kv, "name", c->name);
		log_kv_str(&kv, "old", old);
		log_kv_str(&kv, "peer", c->from);
		log_verbose("%s", kv.buf);
	}
	client_notice(c, "* you are now %s\n", c->name);
	broker_notice(b, c, "* %s is now %s\n", old, c->name);
}

/*
 * "* 3 here: alice bob user3" to c alone, in join order, a name from a
 * certificate followed by " (certificate)"; at most BROKER_WHO_MAX bytes
 * and what c's --max-pending still allows, then "and N more".
 */
static void client_who(struct client *c)
{
	struct broker *b = c->b;
	size_t pending = evbuffer_get_length(bufferevent_get_output(c->bev));
	size_t room = b->o->max_pending - pending, k, here = 0, shown = 0;
	char buf[BROKER_WHO_MAX + 64];
	struct client *o;

	if (room > BROKER_WHO_MAX)
		room = BROKER_WHO_MAX;
	TAILQ_FOREACH(o, &b->clients, entry)
	{
		here += client_listening(o);
	}
	k = (size_t)snprintf(buf, sizeof buf, "* %zu here:", here);
	TAILQ_FOREACH(o, &b->clients, entry)
	{
		static const char cert[] = " (certificate)";
		size_t len = strlen(o->name);

		if (!client_listening(o))
			continue;
		if (k + 1 + len + sizeof cert + 32 > room)
			break;
		buf[k++] = ' ';
		memcpy(buf + k, o->name, len);
		k += len;
		if (o->cert_name) {
			memcpy(buf + k, cert, sizeof cert - 1);
			k += sizeof cert - 1;
		}
		shown++;
	}
	if (shown < here)
		k += (size_t)snprintf(buf + k, sizeof buf - k, " and %zu more",
		                      here - shown);
	buf[k++] = '\n';
	client_send(c, buf, k);
}

static void client_help(struct client *c)
{
	client_notice(c, "* commands: /nick NAME, /who, /quit [MESSAGE], "
	                 "/help; //TEXT sends /TEXT\n");
}

/* /quit: "* NAME left: MESSAGE" to the others, "* bye" to c, then close. */
static void client_quit(struct client *c, const unsigned char *s, size_t n)
{
	struct broker *b = c->b;
	char *text = b->line + BROKER_PREFIX_MAX, *p;
	size_t used, w = 0, k;

	if (n > 0)
		w = text_escape(s, n, 0, text, b->o->max_line, &used);
	k = (size_t)snprintf(b->line, BROKER_PREFIX_MAX, "* %s left%s",
	                     c->name, n > 0 ? ": " : "");
	p = text - k;
	memmove(p, b->line, k);
	text[w] = '\n';
	client_send(c, "* bye\n", 6);
	client_leave(c, WHY_QUIT, 0);
	broker_send_all(b, c, p, k + w + 1);
}

static int cmd_is(const unsigned char *s, size_t n, const char *name)
{
	return strlen(name) == n &&
	       evutil_ascii_strncasecmp((const char *)s, name, n) == 0;
}

/* A line "/WORD ARGS": s and n are what follows the '/'. */
static void client_command(struct client *c, const unsigned char *s, size_t n)
{
	const unsigned char *arg;
	size_t k = 0, m, used;
	char cmd[BROKER_CMD_MAX];

	while (k < n && s[k] != ' ')
		k++;
	arg = s + k;
	m = n - k;
	while (m > 0 && *arg == ' ') {
		arg++;
		m--;
	}
	while (m > 0 && (arg[m - 1] == ' ' || arg[m - 1] == '\t'))
		m--;
	if (cmd_is(s, k, "nick")) {
		client_nick(c, (const char *)arg, m);
	} else if (cmd_is(s, k, "who") && m == 0) {
		client_who(c);
	} else if (cmd_is(s, k, "help") && m == 0) {
		client_help(c);
	} else if (cmd_is(s, k, "quit")) {
		client_quit(c, arg, m);
	} else if (cmd_is(s, k, "who") || cmd_is(s, k, "help")) {
		client_notice(c, "* usage: /%.*s\n", (int)k, (const char *)s);
	} else {
		m = text_escape(s, k, 0, cmd, BROKER_CMD_MAX, &used);
		client_notice(c, "* unknown command /%.*s%s; /help lists them\n",
		              (int)m, cmd, used < k ? "..." : "");
	}
}

/* --- lines --- */

/*
 * Relay the n bytes at p as c's line: "<NAME> TEXT" to every other client.
 * cut says the line went on; skip is how many bytes of c's line came before
 * p, for the notice.
 */
static void client_say(struct client *c, const unsigned char *p, size_t n,
                       int cut, size_t skip)
{
	struct broker *b = c->b;
	char *text = b->line + BROKER_PREFIX_MAX, *q;
	size_t k = strlen(c->name), used, w;

	w = text_escape(p, n, cut, text, b->o->max_line, &used);
	b->lines++;
	if (cut || used < n) {
		b->cut++;
		client_notice(c, "* line cut at %zu bytes\n", skip + used);
	}
	q = text - k - 3;
	q[0] = '<';
	memcpy(q + 1, c->name, k);
	q[k + 1] = '>';
	q[k + 2] = ' ';
	text[w] = '\n';
	broker_send_all(b, c, q, k + 3 + w + 1);
}

/*
 * One line of c's, without its line ending: n bytes at p, cut if the line
 * went on past --max-line. A line starting with '/' is a command, and one
 * starting with "//" is text starting with '/'.
 */
static void client_line(struct client *c, const unsigned char *p, size_t n,
                        int cut)
{
	if (n == 0 || p[0] != '/') {
		client_say(c, p, n, cut, 0);
		return;
	}
	if (n > 1 && p[1] == '/') {
		client_say(c, p + 1, n - 1, cut, 1);
		return;
	}
	if (cut) {
		c->b->cut++;
		client_notice(c, "* line cut at %zu bytes\n", n);
	}
	client_command(c, p + 1, n - 1);
}

/* Where the next newline in c's input is, or -1. */
static ssize_t client_find_eol(struct client *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct evbuffer_ptr start, eol;
	size_t eol_len;

	if (evbuffer_ptr_set(in, &start, c->scanned, EVBUFFER_PTR_SET) < 0)
		return -1;
	eol = evbuffer_search_eol(in, &start, &eol_len, EVBUFFER_EOL_LF);
	return eol.pos;
}

static void client_drain(struct client *c, size_t n)
{
	evbuffer_drain(bufferevent_get_input(c->bev), n);
	c->scanned = 0;
}

/*
 * The first n bytes of c's input as one line (n > 0; the last byte is the
 * newline when eol): its CR LF or LF is a line ending, not text.
 */
static void client_take_line(struct client *c, size_t n, int eol)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	const unsigned char *p = evbuffer_pullup(in, (ev_ssize_t)n);
	size_t max = c->b->in_max, len = n;

	if (p == NULL) {
		client_leave(c, WHY_ERROR, ENOMEM);
		return;
	}
	if (eol) {
		len--;
		if (len > 0 && p[len - 1] == '\r')
			len--;
	}
	c->lines_in++;
	if (len > max)
		client_line(c, p, max, 1);
	else
		client_line(c, p, len, 0);
}

/* Handle one line of c's input: 1 if there may be another, else 0. */
static int client_next_line(struct client *c)
{
	size_t len = evbuffer_get_length(bufferevent_get_input(c->bev));
	size_t max = c->b->in_max;
	ssize_t eol;

	if (len == 0)
		return 0;
	eol = client_find_eol(c);
	if (c->discarding) {
		client_drain(c, eol < 0 ? len : (size_t)eol + 1);
		c->discarding = eol < 0;
		return eol >= 0;
	}
	/* Room for --max-line bytes and a CR LF: wait for the rest. */
	if (eol < 0 && len < max + 2) {
		c->scanned = len;
		return 0;
	}
	if (eol < 0) {
		client_take_line(c, len, 0);
		client_drain(c, len);
		c->discarding = 1;
		return 1;
	}
	client_take_line(c, (size_t)eol + 1, 1);
	client_drain(c, (size_t)eol + 1);
	return 1;
}

static void client_read_lines(struct client *c)
{
	while (client_listening(c) && c->state == CLIENT_IN &&
	       client_next_line(c))
		;
}

static void client_readcb(struct bufferevent *bev, void *arg)
{
	struct client *c = arg;

	(void)bev;
	client_read_lines(c);
	broker_reap(c->b);
}

/* A client that has said its last stays until its output is flushed. */
static void client_writecb(struct bufferevent *bev, void *arg)
{
	struct client *c = arg;

	if (c->state == CLIENT_HALF &&
	    evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		client_leave(c, WHY_EOF, 0);
	broker_reap(c->b);
}

/*
 * Why c's TLS bufferevent failed, into buf. libevent keeps SSL_get_error's
 * code (a small number, no library) and then OpenSSL's error queue, and
 * hands them back last first; the first with a library says most.
 * Handshaking, a certificate that did not verify says why
 * (tls_handshake_error).
 */
static const char *client_tls_reason(struct client *c, short what, char *buf,
                                     size_t len)
{
	unsigned long e, found = 0;
	int err = EVUTIL_SOCKET_ERROR();

	while ((e = bufferevent_get_openssl_error(c->bev)) != 0) {
		if (found == 0 && ERR_GET_LIB(e) != 0)
			found = e;
	}
	if (found != 0 && c->state == CLIENT_HANDSHAKE)
		return tls_handshake_error(bufferevent_openssl_get_ssl(c->bev),
		                           found, buf, len);
	if (found != 0)
		return tls_strerror(found, buf, len);
	if ((what & BEV_EVENT_EOF) || err == 0)
		snprintf(buf, len, "closed by the client");
	else
		snprintf(buf, len, "%s", strerror(err));
	return buf;
}

/*
 * The error behind what (a BEV_EVENT_ERROR), as an errno; TLS: OpenSSL's
 * reason kept for the leave line too.
 */
static int client_error(struct client *c, short what)
{
	int err = EVUTIL_SOCKET_ERROR();
	char why[160];

	if (!c->tls)
		return err;
	free(c->tls_why);
	c->tls_why = strdup(client_tls_reason(c, what, why, sizeof why));
	return err != 0 ? err : EPROTO;
}

/*
 * End of input: relay what is left and keep sending c what it is owed. An
 * error: relay what is left; nothing more can be sent.
 */
static void client_eventcb(struct bufferevent *bev, short what, void *arg)
{
	struct client *c = arg;
	struct broker *b = c->b;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t len;

	client_read_lines(c);
	len = evbuffer_get_length(in);
	if (client_listening(c) && c->state == CLIENT_IN && len > 0 &&
	    !c->discarding)
		client_take_line(c, len, 0);
	evbuffer_drain(in, evbuffer_get_length(in));
	/*
	 * With dirty shutdowns allowed, libevent 2.1 reports a reset (or a
	 * broken pipe on write) as EOF too, with SSL_ERROR_SYSCALL queued as
	 * an error; a close_notify or FIN queues none. A reset is an error:
	 * nothing more can be sent.
	 */
	if ((what & BEV_EVENT_EOF) && c->tls &&
	    bufferevent_get_openssl_error(bev) != 0) {
		int err = EVUTIL_SOCKET_ERROR();

		while (bufferevent_get_openssl_error(bev) != 0)
			;
		client_leave(c, WHY_ERROR,
		             err != 0 && err != EAGAIN ? err : ECONNRESET);
	} else if (what & BEV_EVENT_EOF) {
		c->eof = 1;
		if (c->state == CLIENT_IN)
			c->state = CLIENT_HALF;
		/* libevent's OpenSSL bufferevent stops writing at the end of
		 * input (conn_closed); c is still owed what is queued. */
		if (c->tls && bufferevent_enable(bev, EV_WRITE) < 0)
			client_leave(c, WHY_ERROR, errno);
		if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
			client_leave(c, WHY_EOF, 0);
	} else {
		client_leave(c, WHY_ERROR, client_error(c, what));
	}
	broker_reap(b);
}

/*
 * With --tls-verify-client: name c after the common name of the
 * certificate it presented and that verified (tls_peer_cn), if /nick would
 * let it take that name now. If not, why, as a notice for c, into why;
 * without a common name, nothing.
 */
static void client_cert_name(struct client *c, char *why, size_t len)
{
	struct broker *b = c->b;
	char cn[BROKER_CN_MAX], *keys;
	const struct client *o;
	const char *bad;
	size_t n;

	why[0] = '\0';
	if (b->o->tls_verify_client == NULL ||
	    tls_peer_cn(bufferevent_openssl_get_ssl(c->bev), cn, sizeof cn) ==
	            NULL)
		return;
	n = strlen(cn);
	bad = name_problem(&b->names, cn, n);
	if (bad != NULL) {
		snprintf(why, len, "* certificate name not used: %s\n", bad);
		return;
	}
	keys = names_keys(&b->names, cn, n);
	o = keys == NULL ? NULL : broker_find(b, c, cn, n, keys);
	if (keys == NULL)
		snprintf(why, len, "* certificate name not used: out of "
		                   "memory\n");
	else if (o != NULL && name_is(o->name, cn, n))
		snprintf(why, len, "* certificate name not used: %s is taken\n",
		         cn);
	else if (o != NULL)
		snprintf(why, len, "* certificate name not used: %s looks "
		                   "like %s\n",
		         cn, o->name);
	else if (names_reserved(&b->names, keys))
		snprintf(why, len, "* certificate name not used: %s is "
		                   "reserved (the relay names newcomers "
		                   "userN)\n",
		         cn);
	if (why[0] != '\0') {
		free(keys);
		return;
	}
	memcpy(c->name, cn, n + 1);
	c->keys = keys;
	c->cert_name = 1;
}

/* c's handshake is done, or it needs none: into the room; tell everyone. */
static void client_join(struct client *c)
{
	struct broker *b = c->b;
	char why[256] = "";

	TAILQ_REMOVE(&b->handshaking, c, entry);
	if (c->tls) {
		event_free(c->hs_ev);
		c->hs_ev = NULL;
		client_cert_name(c, why, sizeof why);
	}
	if (!c->cert_name)
		snprintf(c->name, sizeof c->name, "user%llu", ++b->next_id);
	c->state = CLIENT_IN;
	TAILQ_INSERT_TAIL(&b->clients, c, entry);
	b->nclients++;
	bufferevent_setcb(c->bev, client_readcb, client_writecb,
	                  client_eventcb, c);
	if (log_get_level() >= LOG_VERBOSE) {
		struct log_kv kv;

		log_kv_start(&kv, "join");
		log_kv_str(&kv, "name", c->name);
		log_kv_str(&kv, "peer", c->from);
		log_kv_str(&kv, "name_from",
		           c->cert_name ? "certificate" : "relay");
		log_verbose("%s", kv.buf);
	}
	client_notice(c, "* you are %s; others here: %zu\n", c->name,
	              b->nclients - 1);
	if (why[0] != '\0')
		client_notice(c, "%s", why);
	broker_notice(b, c, "* %s joined\n", c->name);
}

/*
 * With -v, c is closed before it joined: event=refused peer=PEER
 * reason=tls_handshake duration_ms=N error="WHY" (reason
 * tls_handshake_timeout, without error=, or shutdown: the relay stopped
 * first).
 */
static void client_log_refused(const struct client *c, const char *reason,
                               const char *error)
{
	struct log_kv kv;

	if (log_get_level() < LOG_VERBOSE)
		return;
	log_kv_start(&kv, "refused");
	log_kv_str(&kv, "peer", c->from);
	log_kv_str(&kv, "reason", reason);
	log_kv_u64(&kv, "duration_ms", broker_now_ms() - c->start);
	if (error != NULL)
		log_kv_str(&kv, "error", error);
	log_verbose("%s", kv.buf);
}

/* The handshake is done, or failed: logged, and the client closed. */
static void client_hs_eventcb(struct bufferevent *bev, short what, void *arg)
{
	struct client *c = arg;
	char why[160];

	(void)bev;
	if (what & BEV_EVENT_CONNECTED) {
		client_join(c);
		broker_reap(c->b);
		return;
	}
	client_log_refused(c, "tls_handshake",
	                   client_tls_reason(c, what, why, sizeof why));
	client_free(c);
}

static void client_hs_timeoutcb(evutil_socket_t fd, short what, void *arg)
{
	struct client *c = arg;

	(void)fd;
	(void)what;
	client_log_refused(c, "tls_handshake_timeout", NULL);
	client_free(c);
}

/*
 * The bufferevent for fd: an OpenSSL one, accepting, with TLS. If that
 * fails, libevent has freed the SSL (BEV_OPT_CLOSE_ON_FREE) but not fd.
 */
static struct bufferevent *broker_bev_new(struct broker *b, evutil_socket_t fd)
{
	struct bufferevent *bev;
	SSL *ssl;

	if (b->tls == NULL)
		return bufferevent_socket_new(b->base, fd,
		                              BEV_OPT_CLOSE_ON_FREE);
	ssl = tls_server_ssl(b->tls);
	if (ssl == NULL)
		return NULL;
	bev = bufferevent_openssl_socket_new(b->base, fd, ssl,
	                                     BUFFEREVENT_SSL_ACCEPTING,
	                                     BEV_OPT_CLOSE_ON_FREE);
	/* A FIN without close_notify ends the input (tls.h). */
	if (bev != NULL)
		bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	return bev;
}

/*
 * A client for the accepted socket fd, from the address from, admitted
 * with ticket t: in the room already without TLS (client_join),
 * handshaking with it. NULL if out of memory, with fd closed and t
 * released.
 */
static struct client *client_new(struct broker *b, evutil_socket_t fd,
                                 const char *from,
                                 const struct admit_ticket *t)
{
	struct client *c = calloc(1, sizeof *c);

	if (c == NULL || (c->from = strdup(from)) == NULL ||
	    (b->tls != NULL &&
	     (c->hs_ev = evtimer_new(b->base, client_hs_timeoutcb, c)) ==
	             NULL) ||
	    (c->bev = broker_bev_new(b, fd)) == NULL) {
		if (c != NULL && c->hs_ev != NULL)
			event_free(c->hs_ev);
		if (c != NULL)
			free(c->from);
		free(c);
		evutil_closesocket(fd);
		admit_release(b->o->admit, t);
		return NULL;
	}
	c->b = b;
	c->tls = b->tls != NULL;
	c->ticket = *t;
	c->start = broker_now_ms();
	c->state = CLIENT_HANDSHAKE;
	TAILQ_INSERT_TAIL(&b->handshaking, c, entry);
	b->nopen++;
	/*
	 * Input never holds more than a whole line and its CR LF. Not with
	 * TLS: libevent's OpenSSL bufferevent stops at the mark with the rest
	 * of a record inside OpenSSL (SSL_pending) and reads it only when the
	 * socket is readable again, which may be never. There every read
	 * callback takes the whole lines, so what stays is at most a line cut
	 * short and one record (16 KiB, RFC 8446 section 5.1).
	 */
	if (!c->tls)
		bufferevent_setwatermark(c->bev, EV_READ, 0, b->in_max + 2);
	bufferevent_set_max_single_read(c->bev, CHAT_CHUNK);
	bufferevent_set_max_single_write(c->bev, CHAT_CHUNK);
	bufferevent_setcb(c->bev, NULL, NULL, client_hs_eventcb, c);
	if (bufferevent_enable(c->bev, EV_READ | EV_WRITE) < 0 ||
	    (c->tls && evtimer_add(c->hs_ev, b->hs_tv) < 0)) {
		client_free(c);
		return NULL;
	}
	if (!c->tls)
		client_join(c);
	return c;
}

/*
 * Accept on every listening socket (on 1) or on none (0). Returns -1, with
 * every listener off again, if one could not be enabled (epoll_ctl(2):
 * ENOMEM).
 */
static int broker_accepting(struct broker *b, int on)
{
	size_t i;

	for (i = 0; i < b->nlev; i++) {
		if (!on) {
			evconnlistener_disable(b->lev[i]);
		} else if (evconnlistener_enable(b->lev[i]) < 0) {
			broker_accepting(b, 0);
			return -1;
		}
	}
	return 0;
}

/* Stop listening: close every listening socket. */
static void broker_unlisten(struct broker *b)
{
	while (b->nlev > 0)
		evconnlistener_free(b->lev[--b->nlev]);
}

/*
 * An evconnlistener accepts until accept(2) fails unless its callback
 * disables it: after ECHO_ACCEPT_BURST accepts, let the loop relay, time
 * out and take signals before the zero timeout of resume_ev enables it
 * again, so a flood of connects cannot hold the room.
 */
static void broker_accept_yield(struct broker *b)
{
	if (echo_accept_burst(&b->burst, b->resume_ev))
		broker_accepting(b, 0);
}

/*
 * Who may join, decided before a byte is read or sent: the rules of
 * admit.c, then --max-clients. Returns 1 with t to keep, or 0 with t
 * released and the refusal logged; the caller closes fd.
 */
static int broker_admit(struct broker *b, evutil_socket_t fd,
                        struct sockaddr *sa, int salen,
                        struct admit_ticket *t)
{
	char name[ADDR_STRLEN], why[80];

	if (chat_admit(b->o->admit, fd, sa, (socklen_t)salen, t) != ADMIT_OK)
		return 0;
	if (b->o->max_clients == 0 || b->nopen < b->o->max_clients)
		return 1;
	b->refused++;
	admit_release(b->o->admit, t);
	snprintf(why, sizeof why, "--max-clients %llu reached",
	         (unsigned long long)b->o->max_clients);
	admit_log_refused(b->o->admit, t,
	                  listener_peer_name(fd, sa, (socklen_t)salen, name,
	                                     sizeof name),
	                  ADMIT_OK, why, admit_now());
	return 0;
}

static void broker_acceptcb(struct evconnlistener *lev, evutil_socket_t fd,
                            struct sockaddr *sa, int salen, void *arg)
{
	struct broker *b = arg;
	struct admit_ticket ticket;
	struct client *c;
	char name[ADDR_STRLEN];

	(void)lev;
	echo_pause_over(&b->pause);
	if (!broker_admit(b, fd, sa, salen, &ticket)) {
		evutil_closesocket(fd);
		broker_accept_yield(b);
		return;
	}
	/* TCP options mean nothing on a Unix socket, and would fail. */
	if (sa->sa_family != AF_UNIX)
		sock_nodelay(fd);
	if (sa->sa_family != AF_UNIX && b->o->keepalive > 0 &&
	    sock_keepalive(fd, b->o->keepalive) < 0) {
		log_warn("cannot turn on TCP keepalive for %s: %s",
		         addr_format(sa, (socklen_t)salen, name, sizeof name),
		         strerror(errno));
		evutil_closesocket(fd);
		admit_release(b->o->admit, &ticket);
		return;
	}
	c = client_new(b, fd,
	               listener_peer_name(fd, sa, (socklen_t)salen, name,
	                                  sizeof name),
	               &ticket);
	if (c == NULL)
		log_error("cannot set up a client: out of memory");
	else
		b->accepted++;
	broker_reap(b);
	broker_accept_yield(b);
}

/*
 * accept() failed. Out of descriptors or memory, the pending connection
 * stays queued and the listener stays readable: pause every listener
 * instead of spinning.
 */
static void broker_accept_errorcb(struct evconnlistener *lev, void *arg)
{
	struct broker *b = arg;
	int err = EVUTIL_SOCKET_ERROR();
	struct timeval tv = {0, BROKER_ACCEPT_PAUSE_MS * 1000};

	(void)lev; /* every listener pauses: descriptors are the process's */
	if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM) {
		log_warn("accept: %s", strerror(err));
		return;
	}
	/* Said once for a run of failures, with a summary when it ends. */
	echo_pause_note(&b->pause, "accept", err);
	broker_accepting(b, 0);
	listener_timer_add(b->resume_ev, &tv);
}

static void broker_resumecb(evutil_socket_t fd, short what, void *arg)
{
	struct broker *b = arg;

	(void)fd;
	(void)what;
	if (broker_accepting(b, 1) < 0) {
		struct timeval tv = {0, BROKER_ACCEPT_PAUSE_MS * 1000};

		/* Left off, the listeners would never accept again. */
		echo_pause_note(&b->pause, "listen", errno);
		listener_timer_add(b->resume_ev, &tv);
	}
}

/*
 * SIGINT or SIGTERM: stop listening, close the clients still handshaking,
 * send every client what it is owed and close each gracefully, within
 * BROKER_LINGER_MS; then the loop ends. A second signal ends it at once.
 */
static void broker_sigcb(evutil_socket_t sig, short what, void *arg)
{
	struct broker *b = arg;
	struct client *c;

	(void)what;
	if (b->stopping) {
		event_base_loopbreak(b->base);
		return;
	}
	chat_sig_caught = (int)sig;
	b->status = chat_sig_status();
	b->stopping = 1;
	notify_stopping(b->notify, "draining: %zu connections", b->nopen);
	broker_unlisten(b);
	while ((c = TAILQ_FIRST(&b->handshaking)) != NULL) {
		client_log_refused(c, "shutdown", NULL);
		client_free(c);
	}
	TAILQ_FOREACH(c, &b->clients, entry)
	{
		client_leave(c, WHY_SHUTDOWN, 0);
	}
	broker_reap(b);
	broker_check_done(b);
}

/*
 * SIGHUP: load the certificate, key and CA file again for the handshakes
 * that follow (tls_server_reload logs the outcome); connections keep the
 * SSL_CTX they were made from. Without TLS every setting comes from the
 * command line: nothing to reload, and the relay goes on.
 */
static void broker_hupcb(evutil_socket_t sig, short what, void *arg)
{
	struct broker *b = arg;

	(void)sig;
	(void)what;
	if (b->tls != NULL)
		tls_server_reload(b->tls);
	else
		log_info("SIGHUP: nothing to reload (every setting comes from "
		         "the command line); still relaying");
}

/*
 * One statistics line, priority info, as forkloop-echo logs its own:
 * "stats: clients=2 open=3 accepted=9 refused=1", clients being those in
 * the room, open every connection not yet closed (handshaking and leaving
 * ones too), refused those --max-clients turned away; with admission rules,
 * their refusals by reason follow (admit_counts). SIGUSR1's is logged at
 * any level (log_report); the final one, once the relay has stopped, not
 * with -q (log_info).
 */
static void broker_stats_log(struct broker *b, int final)
{
	uint64_t n[ADMIT_NWHY];
	char more[256] = "", line[512];
	size_t len = 0;

	if (admit_active(b->o->admit)) {
		admit_counts(b->o->admit, n);
		for (int w = ADMIT_OK + 1; w < ADMIT_NWHY; w++)
			len += (size_t)snprintf(more + len, sizeof more - len,
			                        " %s=%llu",
			                        admit_why_name((enum admit_why)w),
			                        (unsigned long long)n[w]);
	}
	snprintf(line, sizeof line,
	         "stats: clients=%zu open=%zu accepted=%llu refused=%llu%s",
	         b->nclients, b->nopen, b->accepted, b->refused, more);
	if (final)
		log_info("%s", line);
	else
		log_report("%s", line);
}

static void broker_usr1cb(evutil_socket_t sig, short what, void *arg)
{
	(void)sig;
	(void)what;
	broker_stats_log(arg, 0);
}

/* The relay's counts in the Prometheus text format (metrics.h). */
static void broker_metrics_write(struct broker *b, struct evbuffer *out)
{
	static const char refused[] = "forkloop_relay_connections_refused_total";
	static const char drops[] = "forkloop_relay_drops_total";
	uint64_t n[ADMIT_NWHY];

	admit_counts(b->o->admit, n);
	metrics_family(out, "forkloop_relay_clients", "gauge",
	               "Clients in the room now.");
	metrics_value(out, "forkloop_relay_clients", NULL, b->nclients);
	metrics_family(out, "forkloop_relay_connections_accepted_total",
	               "counter", "Connections accepted.");
	metrics_value(out, "forkloop_relay_connections_accepted_total", NULL,
	              b->accepted);
	metrics_family(out, refused, "counter",
	               "Connections closed unread at accept, by reason: "
	               "max_clients (--max-clients), the admission rules "
	               "(denied, per_source, rate, table_full, uid).");
	metrics_reason(out, refused, "max_clients", b->refused);
	for (int w = ADMIT_OK + 1; w < ADMIT_NWHY; w++)
		metrics_reason(out, refused, admit_why_name((enum admit_why)w),
		               n[w]);
	metrics_family(out, "forkloop_relay_lines_relayed_total", "counter",
	               "Lines a client sent that went to the others.");
	metrics_value(out, "forkloop_relay_lines_relayed_total", NULL,
	              b->lines);
	metrics_family(out, drops, "counter",
	               "What the relay gave up, by reason: not_reading "
	               "(clients dropped past --max-pending), line_cut (lines "
	               "cut at --max-line).");
	metrics_reason(out, drops, "not_reading", b->dropped);
	metrics_reason(out, drops, "line_cut", b->cut);
	metrics_family(out, "forkloop_relay_draining", "gauge",
	               "1 once SIGINT or SIGTERM started a drain, else 0.");
	metrics_value(out, "forkloop_relay_draining", NULL, b->stopping ? 1 : 0);
}

/* --metrics: a scrape arrived; the counts are at hand. */
static void broker_scrapecb(void *arg)
{
	struct broker *b = arg;
	struct evbuffer *text = evbuffer_new();

	if (text != NULL)
		broker_metrics_write(b, text);
	metrics_begin(b->metrics);
	metrics_answer(b->metrics, text);
	if (text != NULL)
		evbuffer_free(text);
}

/* /healthz: serving until a drain starts. */
static int broker_healthcb(void *arg)
{
	return !((struct broker *)arg)->stopping;
}

/* The service manager's STATUS= line: "5 clients, 40 lines/s". */
static void broker_tickcb(void *arg)
{
	struct broker *b = arg;
	double rate = notify_rate(b->notify, b->lines);

	if (b->stopping)
		notify_status(b->notify, "draining: %zu connections", b->nopen);
	else
		notify_status(b->notify, "%zu clients, %.*f lines/s",
		              b->nclients, rate < 10 ? 1 : 0, rate);
}

/*
 * --metrics and the service manager, on the relay's loop, before it
 * listens: a metrics port in use fails the start.
 */
static int broker_report_init(struct broker *b)
{
	if (b->o->metrics_on &&
	    (b->metrics = metrics_new(b->base, &b->o->metrics, b->o->admit,
	                              broker_scrapecb, broker_healthcb, b)) ==
	            NULL)
		return -1;
	return notify_new(&b->notify, b->base, broker_tickcb, NULL, b);
}

/* A signal forkloop-echo only logs: the relay logs it and goes on. */
static void broker_othercb(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	(void)arg;
	log_info("SIG%s ignored", sigabbrev_np((int)sig));
}

/*
 * One evconnlistener per listening socket: those systemd passed, or those
 * of the --listen address. Once all are set, READY=1 tells systemd, if it
 * started us (Type=notify), that clients are served.
 */
static int broker_listen(struct broker *b)
{
	const unsigned flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC;
	struct chat_listeners l;
	size_t i;

	if (chat_listen_inherited(b->o, &l) < 0)
		return -1;
	for (i = 0; i < l.n; i++) {
		b->lev[i] = evconnlistener_new(b->base, broker_acceptcb, b,
		                               flags, 0, l.fd[i]);
		if (b->lev[i] == NULL) {
			log_error("cannot listen: out of memory");
			while (i < l.n)
				evutil_closesocket(l.fd[i++]);
			return -1;
		}
		b->nlev = i + 1;
		evconnlistener_set_error_cb(b->lev[i], broker_accept_errorcb);
	}
	activation_notify("READY=1");
	return 0;
}

/* The line buffer and the event loop, which every relay needs. */
static int broker_base_new(struct broker *b)
{
	b->in_max = b->o->max_line > BROKER_CMD_LINE ? (size_t)b->o->max_line
	                                              : BROKER_CMD_LINE;
	b->line = malloc(BROKER_PREFIX_MAX + b->o->max_line + 1);
	b->base = event_base_new();
	return b->line == NULL || b->base == NULL ? -1 : 0;
}

static int broker_setup(struct broker *b)
{
	if (broker_base_new(b) < 0)
		return -1;
	b->sigint_ev = evsignal_new(b->base, SIGINT, broker_sigcb, b);
	b->sigterm_ev = evsignal_new(b->base, SIGTERM, broker_sigcb, b);
	b->sighup_ev = evsignal_new(b->base, SIGHUP, broker_hupcb, b);
	b->sigusr1_ev = evsignal_new(b->base, SIGUSR1, broker_usr1cb, b);
	b->resume_ev = evtimer_new(b->base, broker_resumecb, b);
	if (b->sigint_ev == NULL || b->sigterm_ev == NULL ||
	    b->sighup_ev == NULL || b->sigusr1_ev == NULL ||
	    b->resume_ev == NULL || evsignal_add(b->sigint_ev, NULL) < 0 ||
	    evsignal_add(b->sigterm_ev, NULL) < 0 ||
	    evsignal_add(b->sighup_ev, NULL) < 0 ||
	    evsignal_add(b->sigusr1_ev, NULL) < 0)
		return -1;
	for (size_t i = 0; i < ECHO_NIGNORED_SIGNALS; i++) {
		if (echo_ignored_signals[i] == SIGHUP)
			continue;
		b->sigother_ev[i] = evsignal_new(b->base, echo_ignored_signals[i],
		                                 broker_othercb, b);
		if (b->sigother_ev[i] == NULL ||
		    evsignal_add(b->sigother_ev[i], NULL) < 0)
			return -1;
	}
	if (b->tls != NULL) {
		double t = b->o->tls_handshake;
		struct timeval tv;

		tv.tv_sec = (time_t)t;
		tv.tv_usec = (suseconds_t)((t - (double)tv.tv_sec) * 1e6);
		/* A common timeout: adding one per client is O(1). */
		b->hs_tv = event_base_init_common_timeout(b->base, &tv);
		if (b->hs_tv == NULL)
			return -1;
	}
	return 0;
}

/*
 * As in chat_event.c: a SIGINT or SIGTERM libevent caught after the loop
 * stopped would be lost with its signal events; block both, let the loop
 * deliver what it holds, free the events and unblock, so a pending signal
 * reaches chat_sig_handler.
 */
static void broker_free_signals(struct broker *b)
{
	sigset_t set, old;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigprocmask(SIG_BLOCK, &set, &old);
	if (b->sigint_ev != NULL && b->sigterm_ev != NULL)
		event_base_loop(b->base, EVLOOP_NONBLOCK);
	if (b->sigint_ev != NULL)
		event_free(b->sigint_ev);
	if (b->sigterm_ev != NULL)
		event_free(b->sigterm_ev);
	if (b->sighup_ev != NULL)
		event_free(b->sighup_ev);
	if (b->sigusr1_ev != NULL)
		event_free(b->sigusr1_ev);
	for (size_t i = 0; i < ECHO_NIGNORED_SIGNALS; i++)
		if (b->sigother_ev[i] != NULL)
			event_free(b->sigother_ev[i]);
	sigprocmask(SIG_SETMASK, &old, NULL);
}

/* served: the relay's loop ran: log the final statistics. */
static void broker_teardown(struct broker *b, int served)
{
	struct client *c;

	if (b->base != NULL)
		broker_free_signals(b);
	broker_unlisten(b);
	b->stopping = 0;
	while ((c = TAILQ_FIRST(&b->clients)) != NULL)
		client_free(c);
	while ((c = TAILQ_FIRST(&b->closing)) != NULL)
		client_free(c);
	while ((c = TAILQ_FIRST(&b->handshaking)) != NULL)
		client_free(c);
	if (served)
		broker_stats_log(b, 1);
	metrics_free(b->metrics); /* open until now, through the drain */
	notify_free(b->notify);
	tls_server_free(b->tls);
	if (b->resume_ev != NULL)
		event_free(b->resume_ev);
	if (b->base != NULL)
		event_base_free(b->base);
	free(b->line);
	names_close(&b->names);
}

int chat_broker_run(const struct chat_opts *o)
{
	UErrorCode e = U_ZERO_ERROR;
	struct broker b;
	int served = 0;

	memset(&b, 0, sizeof b);
	b.o = o;
	b.status = -1;
	TAILQ_INIT(&b.clients);
	TAILQ_INIT(&b.closing);
	TAILQ_INIT(&b.handshaking);
	/* SIGHUP, SIGUSR2, ... ignored until the loop's handlers take over. */
	echo_signals_ignore();
	chat_sig_install();
	if (names_open(&b.names, &e) < 0) {
		log_error("cannot open ICU's spoof checker: %s",
		          u_errorName(e));
		b.status = 1;
	} else if (o->addr.tls &&
	           (b.tls = tls_server_new(o->tls_cert, o->tls_key,
	                                   o->tls_verify_client)) == NULL) {
		b.status = 1; /* tls.c said which file and why */
	} else if (broker_setup(&b) < 0) {
		log_error("cannot set up the event loop: %s", strerror(errno));
		b.status = 1;
	} else if (broker_report_init(&b) < 0 || broker_listen(&b) < 0) {
		b.status = 1;
	} else {
		/* A signal caught by chat_sig_handler during the set-up. */
		if (chat_sig_caught)
			b.status = chat_sig_status();
		served = 1;
		if (b.status < 0 && event_base_dispatch(b.base) < 0) {
			log_error("event loop failed");
			b.status = 1;
		}
	}
	broker_teardown(&b, served);
	if (chat_sig_caught)
		return chat_sig_status();
	return b.status < 0 ? 1 : b.status;
}

struct broker *chat_broker_open(const struct chat_opts *o)
{
	UErrorCode e = U_ZERO_ERROR;
	struct broker *b = calloc(1, sizeof *b);

	if (b == NULL)
		return NULL;
	b->o = o;
	b->status = -1;
	TAILQ_INIT(&b->clients);
	TAILQ_INIT(&b->closing);
	TAILQ_INIT(&b->handshaking);
	if (names_open(&b->names, &e) < 0 || broker_base_new(b) < 0) {
		chat_broker_close(b);
		return NULL;
	}
	return b;
}

struct event_base *chat_broker_base(struct broker *b)
{
	return b->base;
}

int chat_broker_add(struct broker *b, int fd, const char *from)
{
	struct admit_ticket t;

	memset(&t, 0, sizeof t); /* not tracked: no admission asked */
	return client_new(b, fd, from, &t) != NULL ? 0 : -1;
}

void chat_broker_close(struct broker *b)
{
	if (b == NULL)
		return;
	broker_teardown(b, 0);
	free(b);
}
