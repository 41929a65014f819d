/*
 * fuzz_relay.c - the relay (forkloop-chat --broker, chat_broker.c) driven
 * by a few clients on socketpairs, on the relay's own event loop: line
 * framing, commands (/nick, /who, /help, /quit, unknown ones), names, cut
 * lines and clients dropped for not reading.
 *
 * The input: a byte of settings (--max-line, --max-pending, how many
 * clients, -v), a byte saying which clients send a FIN at the end, then
 * chunks: a client byte, a length byte and that many bytes, written to
 * that client's socket in order, the loop turning after each.
 *
 * Property (the relay's promise, doc/forkloop-chat.1.scd and the top of
 * chat_broker.c): what any client receives is text: well-formed UTF-8 in
 * which the only controls are newline and tab, without line separators,
 * bidirectional controls or the other characters text_escape shows
 * escaped; every line starts with "* " (the relay) or "<NAME> " (a
 * client's line).
 */
#include <errno.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/sockios.h>

#include <event2/event.h>

#include "forkloop/admit.h"
#include "forkloop/chat.h"
#include "forkloop/log.h"

#include "fuzz.h"

#define FUZZ_CLIENTS_MAX 4
/* Loop turns after the input is written, at most. */
#define FUZZ_ROUNDS 64

struct peer {
	int fd;    /* our end; the relay has the other */
	char *buf; /* what the relay sent this client */
	size_t len, cap;
};

static struct peer peers[FUZZ_CLIENTS_MAX];

/* Read what the relay sent; returns the bytes read. */
static size_t peer_read(struct peer *p)
{
	size_t total = 0;
	ssize_t n;

	for (;;) {
		if (p->cap - p->len < 4096) {
			p->cap = p->cap * 2 + 4096;
			if ((p->buf = realloc(p->buf, p->cap)) == NULL)
				abort();
		}
		n = recv(p->fd, p->buf + p->len, p->cap - p->len, MSG_DONTWAIT);
		if (n <= 0)
			return total;
		p->len += (size_t)n;
		total += (size_t)n;
	}
}

/* Bytes written to the relay that it has not read yet (unix(7)). */
static int peer_unread(const struct peer *p)
{
	int n = 0;

	if (ioctl(p->fd, SIOCOUTQ, &n) < 0)
		return 0;
	return n;
}

/*
 * The code point at p (n > 0 bytes) if it is well-formed UTF-8 (Unicode
 * chapter 3, table 3-7), with *len its length; -1 if not.
 */
static long utf8_decode(const unsigned char *p, size_t n, size_t *len)
{
	long cp;
	size_t k, need;
	unsigned char lo = 0x80, hi = 0xbf;

	if (p[0] < 0x80) {
		*len = 1;
		return p[0];
	}
	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		need = 1, cp = p[0] & 0x1f;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		need = 2, cp = p[0] & 0x0f;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		need = 3, cp = p[0] & 0x07;
	else
		return -1;
	if (p[0] == 0xe0)
		lo = 0xa0;
	else if (p[0] == 0xed)
		hi = 0x9f;
	else if (p[0] == 0xf0)
		lo = 0x90;
	else if (p[0] == 0xf4)
		hi = 0x8f;
	if (n < need + 1 || p[1] < lo || p[1] > hi)
		return -1;
	for (k = 1; k <= need; k++) {
		if (p[k] < 0x80 || p[k] > 0xbf)
			return -1;
		cp = cp << 6 | (p[k] & 0x3f);
	}
	*len = need + 1;
	return cp;
}

/* What the relay promises never to pass on raw. */
static int cp_hostile(long cp)
{
	if (cp == '\n' || cp == '\t')
		return 0;
	return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || cp == 0x061c ||
	       cp == 0x200e || cp == 0x200f || cp == 0x2028 || cp == 0x2029 ||
	       (cp >= 0x202a && cp <= 0x202e) ||
	       (cp >= 0x2066 && cp <= 0x206f) || (cp >= 0xfff9 && cp <= 0xfffb);
}

static void check_line(const unsigned char *p, size_t n)
{
	size_t i, len;

	if (n >= 2 && p[0] == '*' && p[1] == ' ')
		return;
	FUZZ_CHECK(n >= 3 && p[0] == '<');
	for (i = 1; i < n && p[i] != '>'; i++)
		FUZZ_CHECK(p[i] != '<' && p[i] != ' ');
	FUZZ_CHECK(i > 1 && i + 1 < n && p[i + 1] == ' ');
	for (i = 0; i < n; i += len)
		FUZZ_CHECK(utf8_decode(p + i, n - i, &len) >= 0);
}

static void check_received(const struct peer *p)
{
	const unsigned char *s = (const unsigned char *)p->buf;
	size_t i, len, start = 0;
	long cp;

	for (i = 0; i < p->len; i += len) {
		cp = utf8_decode(s + i, p->len - i, &len);
		if (cp < 0) {
			/* Only a reply cut short by a drop may end mid-way. */
			FUZZ_CHECK(memchr(s + i, '\n', p->len - i) == NULL);
			break;
		}
		FUZZ_CHECK(!cp_hostile(cp));
		if (cp == '\n') {
			check_line(s + start, i - start);
			start = i + 1;
		}
	}
}

static void send_all(struct peer *p, const uint8_t *d, size_t n)
{
	while (n > 0) {
		ssize_t w = send(p->fd, d, n, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (w <= 0)
			return; /* the relay closed, or stopped reading */
		d += w;
		n -= (size_t)w;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint64_t max_line[] = {8, 40, 300, 4096};
	struct chat_opts o;
	struct broker *b;
	struct event_base *base;
	size_t i, nclients, quiet = 0;
	int sv[2], last_unread = -1;

	if (size < 2)
		return 0;
	log_init("forkloop-chat", data[0] & 0x80 ? LOG_VERBOSE : LOG_QUIET);
	memset(&o, 0, sizeof o);
	o.mode = CHAT_MODE_EVENT;
	o.broker = 1;
	o.max_line = max_line[data[0] & 3];
	/* The least --max-pending allows, or enough for everything. */
	o.max_pending = data[0] & 4 ? o.max_line + CHAT_BROKER_SLACK
	                            : CHAT_DEFAULT_MAX_PENDING;
	if ((o.admit = admit_new()) == NULL ||
	    (b = chat_broker_open(&o)) == NULL)
		abort();
	base = chat_broker_base(b);
	nclients = 2 + (data[0] >> 3 & 3) % (FUZZ_CLIENTS_MAX - 1);
	for (i = 0; i < nclients; i++) {
		if (socketpair(AF_UNIX,
		               SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
		               sv) < 0)
			abort();
		peers[i].fd = sv[1];
		peers[i].len = 0;
		if (chat_broker_add(b, sv[0], "unix:") < 0)
			abort();
	}
	event_base_loop(base, EVLOOP_NONBLOCK);
	for (i = 2; i + 2 <= size;) {
		struct peer *p = &peers[data[i] % nclients];
		size_t n = data[i + 1];

		i += 2;
		if (n > size - i)
			n = size - i;
		send_all(p, data + i, n);
		i += n;
		event_base_loop(base, EVLOOP_NONBLOCK);
		for (size_t k = 0; k < nclients; k++)
			peer_read(&peers[k]);
	}
	for (i = 0; i < nclients; i++)
		if (data[1] >> i & 1)
			shutdown(peers[i].fd, SHUT_WR);
	/* Until the relay has read everything and sends nothing more. */
	for (int round = 0; round < FUZZ_ROUNDS && quiet < 2; round++) {
		size_t got = 0;
		int unread = 0;

		event_base_loop(base, EVLOOP_NONBLOCK);
		for (i = 0; i < nclients; i++) {
			got += peer_read(&peers[i]);
			unread += peer_unread(&peers[i]);
		}
		quiet = got == 0 && unread == last_unread ? quiet + 1 : 0;
		last_unread = unread;
	}
	chat_broker_close(b);
	admit_free(o.admit);
	for (i = 0; i < nclients; i++) {
		peer_read(&peers[i]);
		check_received(&peers[i]);
		close(peers[i].fd);
	}
	return 0;
}
