/*
 * chat_broker.c - forkloop-chat --broker: a relay among many clients in one
 * process. One event_base, an evconnlistener per listening socket, a
 * bufferevent per client.
 *
 * Every complete line a client sends goes to every other client as
 * "<NAME> TEXT"; the relay's own lines start with "* ", which no relayed
 * line can. A client's bytes are shown to others only as text: controls,
 * line separators and bytes that are not UTF-8 are escaped (text_escape),
 * and names are checked for what they look like (name_problem). A partial
 * line waits in the sender's input buffer for its newline; a line longer
 * than --max-line is cut. Lines starting with '/' are commands.
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
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>

#include "forkloop/chat.h"
#include "forkloop/echo.h"
#include "forkloop/listener.h"
#include "forkloop/sock.h"

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

enum client_state {
	CLIENT_IN,   /* in the room: sends and receives lines */
	CLIENT_HALF, /* in the room after its FIN: receives until flushed */
	CLIENT_OUT,  /* out of the room: flushing, then lingering */
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
	char name[CHAT_NAME_MAX + 1];
	size_t scanned;          /* input bytes known to hold no newline */
	unsigned discarding : 1; /* dropping the rest of a cut line */
	unsigned eof : 1;        /* its FIN has arrived */
	unsigned fin_sent : 1;   /* our FIN is queued */
	enum client_state state;
	enum client_why why; /* set: leaving, for broker_reap */
	int err;             /* WHY_ERROR: the socket error */
};

TAILQ_HEAD(client_list, client);

struct broker {
	const struct chat_opts *o;
	struct event_base *base;
	struct evconnlistener *lev[CHAT_MAX_LISTEN]; /* one per address */
	size_t nlev;
	struct event *sigint_ev;
	struct event *sigterm_ev;
	struct event *resume_ev; /* re-enables accepting after a burst or
	                            after EMFILE */
	unsigned burst;          /* accepts since the loop last had a turn */
	struct echo_pause pause; /* accepting paused for want of descriptors */
	struct client_list clients; /* the room */
	struct client_list closing; /* out of the room, not yet closed */
	size_t nclients;
	size_t nleaving; /* clients marked but not yet reaped */
	unsigned long long next_id;
	char *line; /* room for a prefix, --max-line bytes and a newline */
	size_t in_max; /* longest line read whole: --max-line, or a command */
	int stopping; /* SIGINT or SIGTERM: closing everyone */
	int status;   /* -1 while running */
};

/* --- Unicode: decoding, and what a name may be made of --- */

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
 * it: controls (Cc), format characters (Cf), spaces (Zs), line and
 * paragraph separators (Zl, Zp) and private use (Co) from
 * DerivedGeneralCategory.txt, Default_Ignorable_Code_Point from
 * DerivedCoreProperties.txt, noncharacters (chapter 23.7), and U+2800
 * BRAILLE PATTERN BLANK, which shows as a space (Unicode 14.0).
 */
static const struct urange name_invisible[] = {
        {0x0000, 0x0020},   {0x007f, 0x00a0},   {0x00ad, 0x00ad},
        {0x034f, 0x034f},   {0x0600, 0x0605},   {0x061c, 0x061c},
        {0x06dd, 0x06dd},   {0x070f, 0x070f},   {0x0890, 0x0891},
        {0x08e2, 0x08e2},   {0x115f, 0x1160},   {0x1680, 0x1680},
        {0x17b4, 0x17b5},   {0x180b, 0x180f},   {0x2000, 0x200f},
        {0x2028, 0x202f},   {0x205f, 0x206f},   {0x2800, 0x2800},
        {0x3000, 0x3000},   {0x3164, 0x3164},   {0xe000, 0xf8ff},
        {0xfdd0, 0xfdef},   {0xfe00, 0xfe0f},   {0xfeff, 0xfeff},
        {0xffa0, 0xffa0},   {0xfff0, 0xfffb},   {0xfffe, 0xffff},
        {0x110bd, 0x110bd}, {0x110cd, 0x110cd}, {0x13430, 0x1343f},
        {0x1bca0, 0x1bca3}, {0x1d173, 0x1d17a}, {0x1fffe, 0x1ffff},
        {0x2fffe, 0x2ffff}, {0x3fffe, 0x3ffff}, {0x4fffe, 0x4ffff},
        {0x5fffe, 0x5ffff}, {0x6fffe, 0x6ffff}, {0x7fffe, 0x7ffff},
        {0x8fffe, 0x8ffff}, {0x9fffe, 0x9ffff}, {0xafffe, 0xaffff},
        {0xbfffe, 0xbffff}, {0xcfffe, 0xcffff}, {0xdfffe, 0xdffff},
        {0xe0000, 0xe0fff}, {0xefffe, 0x10ffff},
};

/*
 * Combining marks (Mn, Mc, Me in DerivedGeneralCategory.txt, Unicode
 * 14.0): a name may not start with one, since it would combine with what
 * comes before the name.
 */
static const struct urange name_marks[] = {
        {0x0300, 0x036f}, {0x0483, 0x0489}, {0x0591, 0x05bd}, {0x05bf, 0x05bf},
        {0x05c1, 0x05c2}, {0x05c4, 0x05c5}, {0x05c7, 0x05c7}, {0x0610, 0x061a},
        {0x064b, 0x065f}, {0x0670, 0x0670}, {0x06d6, 0x06dc}, {0x06df, 0x06e4},
        {0x06e7, 0x06e8}, {0x06ea, 0x06ed}, {0x0711, 0x0711}, {0x0730, 0x074a},
        {0x07a6, 0x07b0}, {0x07eb, 0x07f3}, {0x07fd, 0x07fd}, {0x0816, 0x0819},
        {0x081b, 0x0823}, {0x0825, 0x0827}, {0x0829, 0x082d}, {0x0859, 0x085b},
        {0x0898, 0x089f}, {0x08ca, 0x08e1}, {0x08e3, 0x0903}, {0x093a, 0x093c},
        {0x093e, 0x094f}, {0x0951, 0x0957}, {0x0962, 0x0963}, {0x0981, 0x0983},
        {0x09bc, 0x09bc}, {0x09be, 0x09c4}, {0x09c7, 0x09c8}, {0x09cb, 0x09cd},
        {0x09d7, 0x09d7}, {0x09e2, 0x09e3}, {0x09fe, 0x09fe}, {0x0a01, 0x0a03},
        {0x0a3c, 0x0a3c}, {0x0a3e, 0x0a42}, {0x0a47, 0x0a48}, {0x0a4b, 0x0a4d},
        {0x0a51, 0x0a51}, {0x0a70, 0x0a71}, {0x0a75, 0x0a75}, {0x0a81, 0x0a83},
        {0x0abc, 0x0abc}, {0x0abe, 0x0ac5}, {0x0ac7, 0x0ac9}, {0x0acb, 0x0acd},
        {0x0ae2, 0x0ae3}, {0x0afa, 0x0aff}, {0x0b01, 0x0b03}, {0x0b3c, 0x0b3c},
        {0x0b3e, 0x0b44}, {0x0b47, 0x0b48}, {0x0b4b, 0x0b4d}, {0x0b55, 0x0b57},
        {0x0b62, 0x0b63}, {0x0b82, 0x0b82}, {0x0bbe, 0x0bc2}, {0x0bc6, 0x0bc8},
        {0x0bca, 0x0bcd}, {0x0bd7, 0x0bd7}, {0x0c00, 0x0c04}, {0x0c3c, 0x0c3c},
        {0x0c3e, 0x0c44}, {0x0c46, 0x0c48}, {0x0c4a, 0x0c4d}, {0x0c55, 0x0c56},
        {0x0c62, 0x0c63}, {0x0c81, 0x0c83}, {0x0cbc, 0x0cbc}, {0x0cbe, 0x0cc4},
        {0x0cc6, 0x0cc8}, {0x0cca, 0x0ccd}, {0x0cd5, 0x0cd6}, {0x0ce2, 0x0ce3},
        {0x0d00, 0x0d03}, {0x0d3b, 0x0d3c}, {0x0d3e, 0x0d44}, {0x0d46, 0x0d48},
        {0x0d4a, 0x0d4d}, {0x0d57, 0x0d57}, {0x0d62, 0x0d63}, {0x0d81, 0x0d83},
        {0x0dca, 0x0dca}, {0x0dcf, 0x0dd4}, {0x0dd6, 0x0dd6}, {0x0dd8, 0x0ddf},
        {0x0df2, 0x0df3}, {0x0e31, 0x0e31}, {0x0e34, 0x0e3a}, {0x0e47, 0x0e4e},
        {0x0eb1, 0x0eb1}, {0x0eb4, 0x0ebc}, {0x0ec8, 0x0ecd}, {0x0f18, 0x0f19},
        {0x0f35, 0x0f35}, {0x0f37, 0x0f37}, {0x0f39, 0x0f39}, {0x0f3e, 0x0f3f},
        {0x0f71, 0x0f84}, {0x0f86, 0x0f87}, {0x0f8d, 0x0f97}, {0x0f99, 0x0fbc},
        {0x0fc6, 0x0fc6}, {0x102b, 0x103e}, {0x1056, 0x1059}, {0x105e, 0x1060},
        {0x1062, 0x1064}, {0x1067, 0x106d}, {0x1071, 0x1074}, {0x1082, 0x108d},
        {0x108f, 0x108f}, {0x109a, 0x109d}, {0x135d, 0x135f}, {0x1712, 0x1715},
        {0x1732, 0x1734}, {0x1752, 0x1753}, {0x1772, 0x1773}, {0x17b4, 0x17d3},
        {0x17dd, 0x17dd}, {0x180b, 0x180d}, {0x180f, 0x180f}, {0x1885, 0x1886},
        {0x18a9, 0x18a9}, {0x1920, 0x192b}, {0x1930, 0x193b}, {0x1a17, 0x1a1b},
        {0x1a55, 0x1a5e}, {0x1a60, 0x1a7c}, {0x1a7f, 0x1a7f}, {0x1ab0, 0x1ace},
        {0x1b00, 0x1b04}, {0x1b34, 0x1b44}, {0x1b6b, 0x1b73}, {0x1b80, 0x1b82},
        {0x1ba1, 0x1bad}, {0x1be6, 0x1bf3}, {0x1c24, 0x1c37}, {0x1cd0, 0x1cd2},
        {0x1cd4, 0x1ce8}, {0x1ced, 0x1ced}, {0x1cf4, 0x1cf4}, {0x1cf7, 0x1cf9},
        {0x1dc0, 0x1dff}, {0x20d0, 0x20f0}, {0x2cef, 0x2cf1}, {0x2d7f, 0x2d7f},
        {0x2de0, 0x2dff}, {0x302a, 0x302f}, {0x3099, 0x309a}, {0xa66f, 0xa672},
        {0xa674, 0xa67d}, {0xa69e, 0xa69f}, {0xa6f0, 0xa6f1}, {0xa802, 0xa802},
        {0xa806, 0xa806}, {0xa80b, 0xa80b}, {0xa823, 0xa827}, {0xa82c, 0xa82c},
        {0xa880, 0xa881}, {0xa8b4, 0xa8c5}, {0xa8e0, 0xa8f1}, {0xa8ff, 0xa8ff},
        {0xa926, 0xa92d}, {0xa947, 0xa953}, {0xa980, 0xa983}, {0xa9b3, 0xa9c0},
        {0xa9e5, 0xa9e5}, {0xaa29, 0xaa36}, {0xaa43, 0xaa43}, {0xaa4c, 0xaa4d},
        {0xaa7b, 0xaa7d}, {0xaab0, 0xaab0}, {0xaab2, 0xaab4}, {0xaab7, 0xaab8},
        {0xaabe, 0xaabf}, {0xaac1, 0xaac1}, {0xaaeb, 0xaaef}, {0xaaf5, 0xaaf6},
        {0xabe3, 0xabea}, {0xabec, 0xabed}, {0xfb1e, 0xfb1e}, {0xfe00, 0xfe0f},
        {0xfe20, 0xfe2f}, {0x101fd, 0x101fd}, {0x102e0, 0x102e0},
        {0x10376, 0x1037a}, {0x10a01, 0x10a03}, {0x10a05, 0x10a06},
        {0x10a0c, 0x10a0f}, {0x10a38, 0x10a3a}, {0x10a3f, 0x10a3f},
        {0x10ae5, 0x10ae6}, {0x10d24, 0x10d27}, {0x10eab, 0x10eac},
        {0x10f46, 0x10f50}, {0x10f82, 0x10f85}, {0x11000, 0x11002},
        {0x11038, 0x11046}, {0x11070, 0x11070}, {0x11073, 0x11074},
        {0x1107f, 0x11082}, {0x110b0, 0x110ba}, {0x110c2, 0x110c2},
        {0x11100, 0x11102}, {0x11127, 0x11134}, {0x11145, 0x11146},
        {0x11173, 0x11173}, {0x11180, 0x11182}, {0x111b3, 0x111c0},
        {0x111c9, 0x111cc}, {0x111ce, 0x111cf}, {0x1122c, 0x11237},
        {0x1123e, 0x1123e}, {0x112df, 0x112ea}, {0x11300, 0x11303},
        {0x1133b, 0x1133c}, {0x1133e, 0x11344}, {0x11347, 0x11348},
        {0x1134b, 0x1134d}, {0x11357, 0x11357}, {0x11362, 0x11363},
        {0x11366, 0x1136c}, {0x11370, 0x11374}, {0x11435, 0x11446},
        {0x1145e, 0x1145e}, {0x114b0, 0x114c3}, {0x115af, 0x115b5},
        {0x115b8, 0x115c0}, {0x115dc, 0x115dd}, {0x11630, 0x11640},
        {0x116ab, 0x116b7}, {0x1171d, 0x1172b}, {0x1182c, 0x1183a},
        {0x11930, 0x11935}, {0x11937, 0x11938}, {0x1193b, 0x1193e},
        {0x11940, 0x11940}, {0x11942, 0x11943}, {0x119d1, 0x119d7},
        {0x119da, 0x119e0}, {0x119e4, 0x119e4}, {0x11a01, 0x11a0a},
        {0x11a33, 0x11a39}, {0x11a3b, 0x11a3e}, {0x11a47, 0x11a47},
        {0x11a51, 0x11a5b}, {0x11a8a, 0x11a99}, {0x11c2f, 0x11c36},
        {0x11c38, 0x11c3f}, {0x11c92, 0x11ca7}, {0x11ca9, 0x11cb6},
        {0x11d31, 0x11d36}, {0x11d3a, 0x11d3a}, {0x11d3c, 0x11d3d},
        {0x11d3f, 0x11d45}, {0x11d47, 0x11d47}, {0x11d8a, 0x11d8e},
        {0x11d90, 0x11d91}, {0x11d93, 0x11d97}, {0x11ef3, 0x11ef6},
        {0x16af0, 0x16af4}, {0x16b30, 0x16b36}, {0x16f4f, 0x16f4f},
        {0x16f51, 0x16f87}, {0x16f8f, 0x16f92}, {0x16fe4, 0x16fe4},
        {0x16ff0, 0x16ff1}, {0x1bc9d, 0x1bc9e}, {0x1cf00, 0x1cf2d},
        {0x1cf30, 0x1cf46}, {0x1d165, 0x1d169}, {0x1d16d, 0x1d172},
        {0x1d17b, 0x1d182}, {0x1d185, 0x1d18b}, {0x1d1aa, 0x1d1ad},
        {0x1d242, 0x1d244}, {0x1da00, 0x1da36}, {0x1da3b, 0x1da6c},
        {0x1da75, 0x1da75}, {0x1da84, 0x1da84}, {0x1da9b, 0x1da9f},
        {0x1daa1, 0x1daaf}, {0x1e000, 0x1e006}, {0x1e008, 0x1e018},
        {0x1e01b, 0x1e021}, {0x1e023, 0x1e024}, {0x1e026, 0x1e02a},
        {0x1e130, 0x1e136}, {0x1e2ae, 0x1e2ae}, {0x1e2ec, 0x1e2ef},
        {0x1e8d0, 0x1e8d6}, {0x1e944, 0x1e94a}, {0xe0100, 0xe01ef},
};

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

enum name_script {
	SCRIPT_LATIN = 1,
	SCRIPT_GREEK = 2,
	SCRIPT_CYRILLIC = 4,
};

/*
 * The script of a letter, by block (Scripts.txt gives the same answer for
 * the letters of these blocks), for the mixed-script test of UTS #39, 5.1:
 * "раураl" with a Cyrillic "р" and "а" must not pass for "paypal".
 */
static unsigned name_script(long cp)
{
	if ((cp >= 'A' && cp <= 'Z') || (cp >= 'a' && cp <= 'z') ||
	    (cp >= 0x00c0 && cp <= 0x024f && cp != 0x00d7 && cp != 0x00f7) ||
	    (cp >= 0x1e00 && cp <= 0x1eff) || (cp >= 0x2c60 && cp <= 0x2c7f) ||
	    (cp >= 0xa720 && cp <= 0xa7ff) || (cp >= 0xab30 && cp <= 0xab6f))
		return SCRIPT_LATIN;
	if ((cp >= 0x0370 && cp <= 0x03ff) || (cp >= 0x1f00 && cp <= 0x1fff))
		return SCRIPT_GREEK;
	if ((cp >= 0x0400 && cp <= 0x052f) || (cp >= 0x1c80 && cp <= 0x1c8f) ||
	    (cp >= 0x2de0 && cp <= 0x2dff) || (cp >= 0xa640 && cp <= 0xa69f))
		return SCRIPT_CYRILLIC;
	return 0;
}

/*
 * Why the n bytes at s cannot be a name, or NULL if they can. A name is
 * judged by what it shows: nothing invisible or blank, nothing that moves
 * the text around it, no marks that stack (more than 4 in a row, or one
 * twice: UTS #39, 5.4), letters of one of Latin, Greek and Cyrillic.
 */
static const char *name_problem(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	unsigned scripts = 0, marks = 0;
	size_t i, len;
	long cp, prev = -1;

	if (n == 0 || n > CHAT_NAME_MAX)
		return "1 to 32 bytes";
	for (i = 0; i < n; i += len, prev = cp) {
		cp = utf8_next(p + i, n - i, &len);
		if (cp < 0)
			return "not UTF-8";
		if (URANGE_IN(name_invisible, cp))
			return "no spaces, controls or invisible characters";
		if (cp == '<' || cp == '>')
			return "no '<' or '>'";
		if (URANGE_IN(name_diacritics, cp))
			return "combining accents: use the accented letter";
		if (URANGE_IN(name_styled_ascii, cp))
			return "fullwidth or mathematical letters: use plain ones";
		if (!URANGE_IN(name_marks, cp))
			marks = 0;
		else if (i == 0)
			return "it starts with a combining mark";
		else if (cp == prev || ++marks > 4)
			return "too many combining marks";
		scripts |= name_script(cp);
	}
	if (scripts & (scripts - 1))
		return "Latin, Greek and Cyrillic letters do not mix";
	return NULL;
}

int chat_broker_name_ok(const char *s, size_t n)
{
	return name_problem(s, n) == NULL;
}

/* What text_escape shows otherwise than as itself. */
static int text_shown_escaped(long cp)
{
	return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || cp == 0x2028 ||
	       cp == 0x2029;
}

/*
 * Copy the n bytes at p into out (room bytes) as they may be shown to
 * others: valid UTF-8 unchanged but for TAB; C0 controls and DEL in caret
 * notation ("^[" for ESC, "^M" for CR, "^?" for DEL); C1 controls and the
 * line and paragraph separators as "\u009B", "\u2028"; every byte that is
 * not part of valid UTF-8 as "\xFF". Stops before a character or escape
 * that does not fit, and, when more of the line follows (cut), before a
 * character split by the end. Returns the bytes written and sets *used to
 * the bytes of p taken.
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
		log_verbose("%s not reading: %zu bytes pending", c->name,
		            pending);
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
	} else {
		TAILQ_REMOVE(&b->clients, c, entry);
		b->nclients--;
		if (c->why != WHY_NONE)
			b->nleaving--;
	}
	if (c->linger_ev != NULL)
		event_free(c->linger_ev);
	bufferevent_free(c->bev); /* closes the socket */
	free(c);
	broker_check_done(b);
}

static void client_lingercb(evutil_socket_t fd, short what, void *arg)
{
	struct client *c = arg;

	(void)fd;
	(void)what;
	log_verbose("%s closed: %d ms passed", c->name, BROKER_LINGER_MS);
	client_free(c);
}

/* Out of the room: what arrives now is read and thrown away. */
static void client_discardcb(struct bufferevent *bev, void *arg)
{
	struct evbuffer *in = bufferevent_get_input(bev);

	(void)arg;
	evbuffer_drain(in, evbuffer_get_length(in));
}

/* Everything owed is out: send our FIN, then wait for the client's. */
static void client_fin(struct client *c)
{
	if (c->fin_sent)
		return;
	c->fin_sent = 1;
	if (c->eof || shutdown(bufferevent_getfd(c->bev), SHUT_WR) < 0) {
		client_free(c);
		return;
	}
	bufferevent_setwatermark(c->bev, EV_READ, 0, 0);
	bufferevent_enable(c->bev, EV_READ);
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

/* Keep only the rest of the line c's kernel buffer holds the start of. */
static void client_trim_output(struct client *c)
{
	struct evbuffer *out = bufferevent_get_output(c->bev), *rest;
	struct evbuffer_ptr eol;
	size_t eol_len;

	eol = evbuffer_search_eol(out, NULL, &eol_len, EVBUFFER_EOL_LF);
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
	bufferevent_enable(c->bev, EV_WRITE);
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
			log_verbose("%s dropped: not reading", name);
		else if (why == WHY_EOF)
			log_verbose("%s left (end of input)", name);
		else if (why == WHY_QUIT)
			log_verbose("%s left (/quit)", name);
		else if (why == WHY_ERROR)
			log_verbose("%s left (%s)", name, strerror(c->err));
		client_close(c, why);
		if (why == WHY_SLOW)
			broker_notice(b, NULL, "* %s dropped: not reading\n",
			              name);
		else if (why == WHY_EOF || why == WHY_ERROR)
			broker_notice(b, NULL, "* %s left\n", name);
	}
}

/* --- commands --- */

static struct client *broker_find(struct broker *b, const char *name, size_t n)
{
	struct client *c;

	TAILQ_FOREACH(c, &b->clients, entry)
	{
		if (client_listening(c) && strlen(c->name) == n &&
		    evutil_ascii_strncasecmp(c->name, name, n) == 0)
			return c;
	}
	return NULL;
}

/* "user" and digits, in any case: the names the relay hands out. */
static int name_is_numbered(const char *s, size_t n)
{
	size_t i;

	if (n <= 4 || evutil_ascii_strncasecmp(s, "user", 4) != 0)
		return 0;
	for (i = 4; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return 0;
	}
	return 1;
}

static void client_nick(struct client *c, const char *s, size_t n)
{
	struct broker *b = c->b;
	char old[CHAT_NAME_MAX + 1];
	const struct client *other;
	const char *why;

	if (n == 0) {
		client_notice(c, "* usage: /nick NAME\n");
		return;
	}
	why = name_problem(s, n);
	if (why != NULL) {
		client_notice(c, "* bad name: %s\n", why);
		return;
	}
	if (strlen(c->name) == n && memcmp(c->name, s, n) == 0) {
		client_notice(c, "* you are already %s\n", c->name);
		return;
	}
	/* Taken, ignoring ASCII case; a client may change its own case. */
	other = broker_find(b, s, n);
	if (other != NULL && other != c) {
		client_notice(c, "* name taken: %.*s\n", (int)n, s);
		return;
	}
	if (name_is_numbered(s, n)) {
		client_notice(c, "* name reserved: %.*s (the relay names "
		                 "newcomers userN)\n",
		              (int)n, s);
		return;
	}
	memcpy(old, c->name, sizeof old);
	memcpy(c->name, s, n);
	c->name[n] = '\0';
	log_verbose("%s is now %s", old, c->name);
	client_notice(c, "* you are now %s\n", c->name);
	broker_notice(b, c, "* %s is now %s\n", old, c->name);
}

/*
 * "* 3 here: alice bob user3" to c alone, in join order; at most
 * BROKER_WHO_MAX bytes and what c's --max-pending still allows, then
 * "and N more".
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
		size_t len = strlen(o->name);

		if (!client_listening(o))
			continue;
		if (k + 1 + len + 32 > room)
			break;
		buf[k++] = ' ';
		memcpy(buf + k, o->name, len);
		k += len;
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
	if (cut || used < n)
		client_notice(c, "* line cut at %zu bytes\n", skip + used);
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
	if (cut)
		client_notice(c, "* line cut at %zu bytes\n", n);
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
	if (what & BEV_EVENT_EOF) {
		c->eof = 1;
		if (c->state == CLIENT_IN)
			c->state = CLIENT_HALF;
		if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
			client_leave(c, WHY_EOF, 0);
	} else {
		client_leave(c, WHY_ERROR, EVUTIL_SOCKET_ERROR());
	}
	broker_reap(b);
}

static struct client *client_new(struct broker *b, evutil_socket_t fd)
{
	struct client *c = calloc(1, sizeof *c);

	if (c == NULL)
		return NULL;
	c->b = b;
	c->bev = bufferevent_socket_new(b->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL) {
		free(c);
		return NULL;
	}
	snprintf(c->name, sizeof c->name, "user%llu", ++b->next_id);
	bufferevent_setcb(c->bev, client_readcb, client_writecb,
	                  client_eventcb, c);
	/* Input never holds more than a whole line and its CR LF. */
	bufferevent_setwatermark(c->bev, EV_READ, 0, b->in_max + 2);
	bufferevent_set_max_single_read(c->bev, CHAT_CHUNK);
	bufferevent_set_max_single_write(c->bev, CHAT_CHUNK);
	if (bufferevent_enable(c->bev, EV_READ | EV_WRITE) < 0) {
		bufferevent_free(c->bev);
		free(c);
		return NULL;
	}
	TAILQ_INSERT_TAIL(&b->clients, c, entry);
	b->nclients++;
	return c;
}

/* Accept on every listening socket (on 1) or on none (0). */
static void broker_accepting(struct broker *b, int on)
{
	size_t i;

	for (i = 0; i < b->nlev; i++) {
		if (on)
			evconnlistener_enable(b->lev[i]);
		else
			evconnlistener_disable(b->lev[i]);
	}
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

static void broker_acceptcb(struct evconnlistener *lev, evutil_socket_t fd,
                            struct sockaddr *sa, int salen, void *arg)
{
	struct broker *b = arg;
	struct client *c;
	char name[ADDR_STRLEN];

	(void)lev;
	echo_pause_over(&b->pause);
	sock_nodelay(fd);
	if (b->o->keepalive > 0 && sock_keepalive(fd, b->o->keepalive) < 0) {
		log_error("cannot turn on TCP keepalive for %s: %s",
		          addr_format(sa, (socklen_t)salen, name, sizeof name),
		          strerror(errno));
		evutil_closesocket(fd);
		return;
	}
	c = client_new(b, fd);
	if (c == NULL) {
		log_error("cannot set up a client: out of memory");
		evutil_closesocket(fd);
		return;
	}
	log_verbose("%s joined from %s", c->name,
	            addr_format(sa, (socklen_t)salen, name, sizeof name));
	client_notice(c, "* you are %s; others here: %zu\n", c->name,
	              b->nclients - 1);
	broker_notice(b, c, "* %s joined\n", c->name);
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
		log_error("accept: %s", strerror(err));
		return;
	}
	/* Said once for a run of failures, with a summary when it ends. */
	echo_pause_note(&b->pause, "accept", err);
	broker_accepting(b, 0);
	evtimer_add(b->resume_ev, &tv);
}

static void broker_resumecb(evutil_socket_t fd, short what, void *arg)
{
	struct broker *b = arg;

	(void)fd;
	(void)what;
	broker_accepting(b, 1);
}

/*
 * SIGINT or SIGTERM: stop listening, send every client what it is owed and
 * close each gracefully, within BROKER_LINGER_MS; then the loop ends. A
 * second signal ends it at once.
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
	broker_unlisten(b);
	TAILQ_FOREACH(c, &b->clients, entry)
	{
		client_leave(c, WHY_SHUTDOWN, 0);
	}
	broker_reap(b);
	broker_check_done(b);
}

/* One evconnlistener per listening socket of the --listen address. */
static int broker_listen(struct broker *b)
{
	const unsigned flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC;
	struct chat_listeners l;
	size_t i;

	if (chat_listen(b->o, &l) < 0)
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
	return 0;
}

static int broker_setup(struct broker *b)
{
	b->in_max = b->o->max_line > BROKER_CMD_LINE ? (size_t)b->o->max_line
	                                              : BROKER_CMD_LINE;
	b->line = malloc(BROKER_PREFIX_MAX + b->o->max_line + 1);
	b->base = event_base_new();
	if (b->line == NULL || b->base == NULL)
		return -1;
	b->sigint_ev = evsignal_new(b->base, SIGINT, broker_sigcb, b);
	b->sigterm_ev = evsignal_new(b->base, SIGTERM, broker_sigcb, b);
	b->resume_ev = evtimer_new(b->base, broker_resumecb, b);
	if (b->sigint_ev == NULL || b->sigterm_ev == NULL ||
	    b->resume_ev == NULL || evsignal_add(b->sigint_ev, NULL) < 0 ||
	    evsignal_add(b->sigterm_ev, NULL) < 0)
		return -1;
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
	sigprocmask(SIG_SETMASK, &old, NULL);
}

static void broker_teardown(struct broker *b)
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
	if (b->resume_ev != NULL)
		event_free(b->resume_ev);
	if (b->base != NULL)
		event_base_free(b->base);
	free(b->line);
}

int chat_broker_run(const struct chat_opts *o)
{
	struct broker b;

	memset(&b, 0, sizeof b);
	b.o = o;
	b.status = -1;
	TAILQ_INIT(&b.clients);
	TAILQ_INIT(&b.closing);
	chat_sig_install();
	if (broker_setup(&b) < 0) {
		log_error("cannot set up the event loop: %s", strerror(errno));
		b.status = 1;
	} else if (broker_listen(&b) < 0) {
		b.status = 1;
	} else {
		/* A signal caught by chat_sig_handler during the set-up. */
		if (chat_sig_caught)
			b.status = chat_sig_status();
		if (b.status < 0 && event_base_dispatch(b.base) < 0) {
			log_error("event loop failed");
			b.status = 1;
		}
	}
	broker_teardown(&b);
	if (chat_sig_caught)
		return chat_sig_status();
	return b.status < 0 ? 1 : b.status;
}
