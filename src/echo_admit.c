/*
 * echo_admit.c - what forkloop-echo's designs share about admission
 * (admit.h decides): the line that says a peer was refused, and the
 * refusal counters of the statistics line.
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "forkloop/admit.h"
#include "forkloop/echo.h"
#include "forkloop/listener.h"

void echo_admit_refused(const struct echo_opts *o, int fd,
                        const struct sockaddr *sa, socklen_t len,
                        const struct admit_ticket *t, enum admit_why why,
                        double now)
{
	char peer[ADDR_STRLEN + 16], name[ADDR_STRLEN];

	if (fd < 0)
		snprintf(peer, sizeof peer, "datagram from %s",
		         addr_format(sa, len, name, sizeof name));
	else
		listener_peer_name(fd, sa, len, peer, sizeof peer);
	admit_log_refused(o->admit, t, peer, why, NULL, now);
}

int echo_admit_conn(const struct echo_opts *o, int fd,
                    const struct sockaddr *sa, socklen_t len,
                    struct admit_ticket *t)
{
	double now = admit_now();
	enum admit_why why;

	why = admit_conn(o->admit, fd, sa, len, now, t);
	if (why == ADMIT_OK)
		return 0;
	echo_admit_refused(o, fd, sa, len, t, why, now);
	close(fd);
	return -1;
}

void echo_admit_stats(const struct echo_opts *o, struct echo_stats *s)
{
	if (!admit_active(o->admit))
		return;
	s->admit = 1;
	admit_counts(o->admit, s->admit_refused);
}
