/*
 * echo.h - the echo daemon: options, statistics, and both designs.
 */
#ifndef FORKLOOP_ECHO_H
#define FORKLOOP_ECHO_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "forkloop/addr.h"
#include "forkloop/log.h"
#include "forkloop/opts.h"

#define ECHO_MAX_LISTEN          16
#define ECHO_DEFAULT_LISTEN      "0.0.0.0:6666"
#define ECHO_DEFAULT_MAX_PENDING (256 * 1024)
#define ECHO_DEFAULT_DRAIN       5.0

enum echo_mode { ECHO_MODE_EVENT, ECHO_MODE_FORK };

/* --udp: UDP beside TCP; --udp-only: UDP alone. */
enum echo_udp { ECHO_UDP_OFF, ECHO_UDP_ON, ECHO_UDP_ONLY };

struct echo_opts {
	enum echo_mode mode;
	struct addr listen[ECHO_MAX_LISTEN];
	size_t nlisten;
	uint64_t max_pending; /* bytes of pending output per connection */
	uint64_t max_conns;   /* 0: no limit */
	double idle_timeout;  /* seconds; 0: none */
	double drain_timeout; /* seconds */
	enum log_level log_level;
	enum echo_udp udp;
	uint64_t udp_rate; /* replies per second per source address; 0: none */
};

/* What SIGUSR1 prints. */
struct echo_stats {
	uint64_t open;
	uint64_t accepted;
	uint64_t refused;
	uint64_t bytes_in;
	uint64_t bytes_out;
	int udp;              /* UDP served: print the udp_ counters */
	uint64_t udp_in;      /* datagrams received */
	uint64_t udp_out;     /* datagrams echoed */
	uint64_t udp_dropped; /* guards, rate cap, send errors */
};

/*
 * Parse forkloop-echo's command line. Help and version go to out, errors and
 * usage to errout.
 */
enum opts_result echo_opts_parse(int argc, char **argv, struct echo_opts *o,
                                 FILE *out, FILE *errout);

const char *echo_mode_name(enum echo_mode m);

/* "forkloop-echo: stats: open=1 accepted=2 ..." through log_error. */
void echo_stats_log(const struct echo_stats *s);

/* Sockets one daemon serves: listening TCP and UDP, bound or inherited. */
#define ECHO_MAX_SOCKETS 64

struct echo_socket {
	int fd;
	int socktype;  /* SOCK_STREAM (listening) or SOCK_DGRAM */
	int activated; /* passed by systemd rather than bound here */
};

/* A design's way to serve one socket, which it owns from then on. */
typedef int echo_serve_fn(void *arg, const struct echo_socket *s);

/*
 * Open the sockets to serve, the same for both designs: those systemd
 * passed (socket activation), or else TCP on every --listen address and UDP
 * as --udp or --udp-only asks, all non-blocking and close-on-exec. Hand each
 * to serve, log its "listening on" line, then tell the service manager
 * READY=1. Returns 0, or -1 after logging why (the sockets not handed over
 * are closed).
 */
int echo_sockets_serve(const struct echo_opts *o, echo_serve_fn *serve,
                       void *arg);

/* Run until SIGINT/SIGTERM. Return the process exit status (0 or 1). */
int echo_event_run(const struct echo_opts *o);
int echo_fork_run(const struct echo_opts *o);

#endif
