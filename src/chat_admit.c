/*
 * chat_admit.c - who may connect to forkloop-chat's listener and relay: each
 * accepted peer is put to the rules of admit.c before anything else is done
 * with it, and a refusal is logged without letting a flood of them fill
 * the log.
 */
#include <inttypes.h>
#include <stdio.h>

#include "forkloop/chat.h"
#include "forkloop/listener.h"

enum admit_why chat_admit(struct admit *a, int fd, const struct sockaddr *sa,
                          socklen_t len, struct admit_ticket *t)
{
	char peer[ADDR_STRLEN];
	enum admit_why why;

	why = admit_conn(a, fd, sa, len, admit_now(), t);
	if (why != ADMIT_OK)
		admit_log_refused(
		        a, t, listener_peer_name(fd, sa, len, peer, sizeof peer),
		        why, NULL, admit_now());
	return why;
}
