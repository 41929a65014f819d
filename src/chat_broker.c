/*
 * chat_broker.c - forkloop-chat --broker: a relay among many clients in one
 * process. One event_base, an evconnlistener, a bufferevent per client.
 *
 * Every complete line a client sends goes to every other client, prefixed
 * once with "<NAME> "; a partial line waits in the sender's input buffer for
 * its newline. A line longer than --max-line is cut. Nobody is ever paused
 * for a slow reader: a client whose unsent output would pass --max-pending
 * is dropped instead. So each client holds at most --max-line + 1 bytes of
 * input (the read high-water mark) and --max-pending bytes of output.
 *
 * A client is never freed while the list of clients is being walked: it is
 * marked (client_end) and freed by broker_reap at the end of the callback,
 * which then tells the others; that notice may mark more clients in turn.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "forkloop/chat.h"
#include "forkloop/listener.h"
#include "forkloop/sock.h"

/* How long accepting pauses when the process runs out of descriptors. */
#define BROKER_ACCEPT_PAUSE_MS 100
/* "<" NAME "> " */
#define BROKER_PREFIX_MAX (CHAT_NAME_MAX + 3)

enum client_end {
	CLIENT_LIVE = 0,
	CLIENT_LEFT, /* end of input or a socket error */
	CLIENT_SLOW, /* its output would pass --max-pending */
};

struct broker;

struct client {
	TAILQ_ENTRY(client) entry;
	struct broker *b;
	struct bufferevent *bev;
	char name[CHAT_NAME_MAX + 1];
	size_t scanned;          /* input bytes known to hold no newline */
	unsigned discarding : 1; /* dropping the rest of a cut line */
	enum client_end end;
	int err; /* CLIENT_LEFT: the socket error, 0 at end of input */
};

struct broker {
	const struct chat_opts *o;
	struct event_base *base;
	struct evconnlistener *lev;
	struct event *sigint_ev;
	struct event *sigterm_ev;
	struct event *resume_ev; /* re-enables accepting after EMFILE */
	TAILQ_HEAD(, client) clients;
	size_t nclients;
	size_t nended; /* clients marked but not yet reaped */
	unsigned long long next_id;
	char *line; /* room for a prefix, --max-line bytes and a newline */
	int status; /* -1 while running */
};

int chat_broker_name_ok(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + n;

	if (n == 0 || n > CHAT_NAME_MAX)
		return 0;
	while (p < end) {
		unsigned c = *p, cp, len, i;

		if (c < 0x80) {
			if (c <= ' ' || c == 0x7f || c == '<' || c == '>')
				return 0;
			p++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			len = 2;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			len = 3;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			len = 4;
			cp = c & 0x07;
		} else {
			return 0;
		}
		if ((size_t)(end - p) < len)
			return 0;
		for (i = 1; i < len; i++) {
			if ((p[i] & 0xc0) != 0x80)
				return 0;
			cp = cp << 6 | (p[i] & 0x3f);
		}
		/* Overlong forms, surrogates, past U+10FFFF, C1 controls, NBSP.
		 */
		if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
		    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff ||
		    cp <= 0xa0)
			return 0;
		p += len;
	}
	return 1;
}

/* Mark c to be freed by broker_reap; the first reason sticks. */
static void client_end(struct client *c, enum client_end why, int err)
{
	if (c->end != CLIENT_LIVE)
		return;
	c->end = why;
	c->err = err;
	c->b->nended++;
	bufferevent_disable(c->bev, EV_READ | EV_WRITE);
}

/* Queue n bytes for c, or drop c if that would pass --max-pending. */
static void client_send(struct client *c, const void *p, size_t n)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	size_t pending = evbuffer_get_length(out);

	if (c->end != CLIENT_LIVE)
		return;
	if (pending + n > c->b->o->max_pending) {
		log_verbose("%s not reading: %zu bytes pending", c->name,
		            pending);
		client_end(c, CLIENT_SLOW, 0);
		return;
	}
	if (evbuffer_add(out, p, n) < 0)
		client_end(c, CLIENT_LEFT, ENOMEM);
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

/* n bytes to every client but from (which may be NULL). */
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

static void client_free(struct client *c)
{
	TAILQ_REMOVE(&c->b->clients, c, entry);
	c->b->nclients--;
	bufferevent_free(c->bev); /* closes the socket */
	free(c);
}

/* Free every marked client and tell the others, until none is marked. */
static void broker_reap(struct broker *b)
{
	char name[CHAT_NAME_MAX + 1];
	struct client *c;
	enum client_end why;

	while (b->nended > 0) {
		TAILQ_FOREACH(c, &b->clients, entry)
		{
			if (c->end != CLIENT_LIVE)
				break;
		}
		if (c == NULL)
			break;
		b->nended--;
		why = c->end;
		memcpy(name, c->name, sizeof name);
		if (why == CLIENT_SLOW)
			log_verbose("%s dropped: not reading", name);
		else if (c->err == 0)
			log_verbose("%s left (end of input)", name);
		else
			log_verbose("%s left (%s)", name, strerror(c->err));
		client_free(c);
		if (why == CLIENT_SLOW)
			broker_notice(b, NULL, "* %s dropped: not reading\n",
			              name);
		else
			broker_notice(b, NULL, "* %s left\n", name);
	}
}

static struct client *broker_find(struct broker *b, const char *name, size_t n)
{
	struct client *c;

	TAILQ_FOREACH(c, &b->clients, entry)
	{
		if (c->end == CLIENT_LIVE && strlen(c->name) == n &&
		    memcmp(c->name, name, n) == 0)
			return c;
	}
	return NULL;
}

/* "user" and digits: the names the relay hands out. */
static int name_is_numbered(const char *s, size_t n)
{
	size_t i;

	if (n <= 4 || memcmp(s, "user", 4) != 0)
		return 0;
	for (i = 4; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return 0;
	}
	return 1;
}

/* "/nick NAME", whatever follows "/nick" in the n bytes at s. */
static void client_nick(struct client *c, const char *s, size_t n)
{
	struct broker *b = c->b;
	char old[CHAT_NAME_MAX + 1];

	while (n > 0 && *s == ' ') {
		s++;
		n--;
	}
	if (n > 0 && s[n - 1] == '\r')
		n--;
	if (n == 0) {
		client_notice(c, "* usage: /nick NAME\n");
		return;
	}
	if (!chat_broker_name_ok(s, n)) {
		client_notice(c,
		              "* bad name: 1 to %d printable bytes, no spaces, "
		              "'<' or '>'\n",
		              CHAT_NAME_MAX);
		return;
	}
	if (strlen(c->name) == n && memcmp(c->name, s, n) == 0) {
		client_notice(c, "* you are already %s\n", c->name);
		return;
	}
	if (broker_find(b, s, n) != NULL || name_is_numbered(s, n)) {
		client_notice(c, "* name taken: %.*s\n", (int)n, s);
		return;
	}
	memcpy(old, c->name, sizeof old);
	memcpy(c->name, s, n);
	c->name[n] = '\0';
	log_verbose("%s is now %s", old, c->name);
	client_notice(c, "* you are now %s\n", c->name);
	broker_notice(b, c, "* %s is now %s\n", old, c->name);
}

static int line_is_nick(const char *s, size_t n)
{
	return n >= 5 && memcmp(s, "/nick", 5) == 0 && (n == 5 || s[5] == ' ');
}

/*
 * The first n bytes of c's input are one line, without its newline; cut says
 * the line was longer. The caller drains the input.
 */
static void client_line(struct client *c, size_t n, int cut)
{
	struct broker *b = c->b;
	char *text = b->line + BROKER_PREFIX_MAX, *p;
	size_t k = strlen(c->name);

	evbuffer_copyout(bufferevent_get_input(c->bev), text, n);
	if (cut)
		client_notice(c, "* line cut at %zu bytes\n", n);
	if (line_is_nick(text, n)) {
		client_nick(c, text + 5, n - 5);
		return;
	}
	p = text - k - 3;
	p[0] = '<';
	memcpy(p + 1, c->name, k);
	p[k + 1] = '>';
	p[k + 2] = ' ';
	text[n] = '\n';
	broker_send_all(b, c, p, k + 3 + n + 1);
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

/* Handle one line of c's input: 1 if there may be another, else 0. */
static int client_next_line(struct client *c)
{
	size_t len = evbuffer_get_length(bufferevent_get_input(c->bev));
	size_t max = c->b->o->max_line;
	ssize_t eol;

	if (len == 0)
		return 0;
	eol = client_find_eol(c);
	if (c->discarding) {
		client_drain(c, eol < 0 ? len : (size_t)eol + 1);
		c->discarding = eol < 0;
		return eol >= 0;
	}
	if (eol < 0 && len <= max) {
		c->scanned = len;
		return 0;
	}
	if (eol < 0) {
		client_line(c, max, 1);
		client_drain(c, max);
		c->discarding = 1;
		return 1;
	}
	client_line(c, (size_t)eol > max ? max : (size_t)eol,
	            (size_t)eol > max);
	client_drain(c, (size_t)eol + 1);
	return 1;
}

static void client_read_lines(struct client *c)
{
	while (c->end == CLIENT_LIVE && client_next_line(c))
		;
}

static void client_readcb(struct bufferevent *bev, void *arg)
{
	struct client *c = arg;

	(void)bev;
	client_read_lines(c);
	broker_reap(c->b);
}

/* End of input or an error: relay what is left, then the client is gone. */
static void client_eventcb(struct bufferevent *bev, short what, void *arg)
{
	struct client *c = arg;
	struct broker *b = c->b;
	int err = (what & BEV_EVENT_EOF) ? 0 : EVUTIL_SOCKET_ERROR();
	size_t len;

	client_read_lines(c);
	len = evbuffer_get_length(bufferevent_get_input(bev));
	if (c->end == CLIENT_LIVE && len > 0 && !c->discarding)
		client_line(c, len, 0);
	client_end(c, CLIENT_LEFT, err);
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
	bufferevent_setcb(c->bev, client_readcb, NULL, client_eventcb, c);
	/* Input never holds more than a whole line: the rest waits. */
	bufferevent_setwatermark(c->bev, EV_READ, 0, b->o->max_line + 1);
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

static void broker_acceptcb(struct evconnlistener *lev, evutil_socket_t fd,
                            struct sockaddr *sa, int salen, void *arg)
{
	struct broker *b = arg;
	struct client *c;
	char name[ADDR_STRLEN];

	(void)lev;
	sock_nodelay(fd);
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
}

/*
 * accept() failed. Out of descriptors or memory, the pending connection
 * stays queued and the listener stays readable: pause instead of spinning.
 */
static void broker_accept_errorcb(struct evconnlistener *lev, void *arg)
{
	struct broker *b = arg;
	int err = EVUTIL_SOCKET_ERROR();
	struct timeval tv = {0, BROKER_ACCEPT_PAUSE_MS * 1000};

	if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM) {
		log_error("accept: %s", strerror(err));
		return;
	}
	if (evtimer_pending(b->resume_ev, NULL))
		return;
	log_error("accept: %s; pausing for %d ms", strerror(err),
	          BROKER_ACCEPT_PAUSE_MS);
	evconnlistener_disable(lev);
	evtimer_add(b->resume_ev, &tv);
}

static void broker_resumecb(evutil_socket_t fd, short what, void *arg)
{
	struct broker *b = arg;

	(void)fd;
	(void)what;
	evconnlistener_enable(b->lev);
}

static void broker_sigcb(evutil_socket_t sig, short what, void *arg)
{
	struct broker *b = arg;

	(void)what;
	chat_sig_caught = (int)sig;
	b->status = chat_sig_status();
	event_base_loopbreak(b->base);
}

static int broker_listen(struct broker *b)
{
	const unsigned flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC;
	int fd;

	fd = chat_listen(b->o);
	if (fd < 0)
		return -1;
	if (sock_set_blocking(fd, 0) < 0) {
		log_error("cannot listen: %s", strerror(errno));
		evutil_closesocket(fd);
		return -1;
	}
	b->lev = evconnlistener_new(b->base, broker_acceptcb, b, flags, 0, fd);
	if (b->lev == NULL) {
		log_error("cannot listen: out of memory");
		evutil_closesocket(fd);
		return -1;
	}
	evconnlistener_set_error_cb(b->lev, broker_accept_errorcb);
	return 0;
}

static int broker_setup(struct broker *b)
{
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
	if (b->lev != NULL)
		evconnlistener_free(b->lev);
	while ((c = TAILQ_FIRST(&b->clients)) != NULL)
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
