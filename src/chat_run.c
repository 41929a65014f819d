/*
 * chat_run.c - forkloop-chat's session: set up the connection, then hand it
 * to the chosen design (chat_event.c or chat_fork.c); with --keep-open,
 * serve one peer after another.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "forkloop/chat.h"
#include "forkloop/sock.h"

static int chat_session(const struct chat_opts *o, int fd,
                        const struct chat_listeners *l)
{
	if (o->keepalive > 0 && sock_keepalive(fd, o->keepalive) < 0) {
		log_error("cannot turn on TCP keepalive: %s", strerror(errno));
		close(fd);
		return 1;
	}
	chat_deliver_start(fd);
	if (o->mode == CHAT_MODE_FORK)
		return chat_fork_session(o, fd, l);
	return chat_event_session(o, fd);
}

static int chat_serve(const struct chat_opts *o)
{
	struct chat_listeners l;
	int fd, status = 0, undelivered = 0;

	if (chat_listen(o, &l) < 0)
		return 1;
	for (;;) {
		fd = chat_accept(&l);
		if (fd < 0) {
			status = chat_sig_caught ? chat_sig_status() : 1;
			break;
		}
		if (!o->keep_open)
			chat_listen_close(&l);
		status = chat_session(o, fd, &l);
		/* --keep-open: loss reported; wait for the next peer. */
		if (o->keep_open && status == CHAT_UNDELIVERED) {
			undelivered = 1;
			continue;
		}
		if (!o->keep_open || status != 0)
			break;
	}
	chat_listen_close(&l);
	if (status == CHAT_UNDELIVERED || (status == 0 && undelivered))
		return 1;
	return status;
}

int chat_run(const struct chat_opts *o)
{
	int fd, status;

	chat_sig_install();
	chat_stdio_save();
	if (o->listen)
		return chat_serve(o);
	fd = chat_connect(o);
	if (fd < 0)
		return chat_sig_caught ? chat_sig_status() : 1;
	status = chat_session(o, fd, NULL);
	return status == CHAT_UNDELIVERED ? 1 : status;
}
