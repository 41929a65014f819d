/*
 * chat_run.c - forkloop-chat's session: set up the connection, then hand it
 * to the chosen design (chat_event.c or chat_fork.c), after the TLS
 * handshake if asked; with --keep-open, serve one peer after another.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "forkloop/chat.h"
#include "forkloop/sock.h"

static int chat_session(const struct chat_opts *o, int fd,
                        const struct chat_listeners *l,
                        const struct chat_tls *t)
{
	SSL *ssl = NULL;

	/* TCP keepalive means nothing on a Unix socket. */
	if (o->keepalive > 0 && !o->addr.is_unix &&
	    sock_keepalive(fd, o->keepalive) < 0) {
		log_error("cannot turn on TCP keepalive: %s", strerror(errno));
		close(fd);
		return 1;
	}
	chat_deliver_start(fd);
	if (o->addr.tls) {
		ssl = chat_tls_handshake(o, t, fd);
		if (ssl == NULL) {
			close(fd);
			if (chat_sig_caught)
				return chat_sig_status();
			return o->listen ? CHAT_NO_HANDSHAKE : 1;
		}
		if (o->mode == CHAT_MODE_FORK)
			return chat_fork_tls_session(o, fd, ssl);
	}
	if (o->mode == CHAT_MODE_FORK)
		return chat_fork_session(o, fd, l);
	return chat_event_session(o, fd, ssl);
}

static int chat_serve(const struct chat_opts *o, const struct chat_tls *t)
{
	struct chat_listeners l;
	struct admit_ticket ticket;
	int fd, status = 0, undelivered = 0;

	if (chat_listen(o, &l) < 0)
		return 1;
	for (;;) {
		fd = chat_accept(&l, o->addr.tls, o->admit, &ticket);
		if (fd < 0) {
			status = chat_sig_caught ? chat_sig_status() : 1;
			break;
		}
		if (!o->keep_open)
			chat_listen_close(&l);
		status = chat_session(o, fd, &l, t);
		admit_release(o->admit, &ticket);
		/* --keep-open: loss or failed handshake reported; wait for
		 * the next peer. */
		if (o->keep_open && (status == CHAT_UNDELIVERED ||
		                     status == CHAT_NO_HANDSHAKE)) {
			undelivered = 1;
			continue;
		}
		if (!o->keep_open || status != 0)
			break;
	}
	chat_listen_close(&l);
	if (status == CHAT_UNDELIVERED || status == CHAT_NO_HANDSHAKE ||
	    (status == 0 && undelivered))
		return 1;
	return status;
}

int chat_run(const struct chat_opts *o)
{
	struct chat_tls t;
	int fd, status;

	chat_sig_install();
	chat_stdio_save();
	/* Certificates load once, before listening or connecting. */
	if (chat_tls_init(o, &t) < 0)
		return 1;
	if (o->listen) {
		status = chat_serve(o, &t);
		chat_tls_free(&t);
		return status;
	}
	fd = chat_connect(o);
	if (fd < 0) {
		chat_tls_free(&t);
		return chat_sig_caught ? chat_sig_status() : 1;
	}
	status = chat_session(o, fd, NULL, &t);
	chat_tls_free(&t);
	return status == CHAT_UNDELIVERED ? 1 : status;
}
