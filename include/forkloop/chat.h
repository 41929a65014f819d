/*
 * chat.h - the point-to-point chat endpoint: options, connection set-up
 * shared by both designs, and the designs themselves.
 */
#ifndef FORKLOOP_CHAT_H
#define FORKLOOP_CHAT_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "forkloop/addr.h"
#include "forkloop/log.h"
#include "forkloop/opts.h"

/* Stop reading a source while this much waits for its destination. */
#define CHAT_HIGH_WATER (256 * 1024)
/* Resume once the backlog is down to this. */
#define CHAT_LOW_WATER (64 * 1024)
/* Largest single read from stdin or the socket. */
#define CHAT_CHUNK (64 * 1024)

/* --broker: defaults for --max-pending and --max-line. */
#define CHAT_DEFAULT_MAX_PENDING (1024 * 1024)
#define CHAT_DEFAULT_MAX_LINE    (64 * 1024)
/* Longest name a relay client may take with /nick. */
#define CHAT_NAME_MAX 32
/*
 * Room for a prefix and newline, or for a notice: --max-pending must be at
 * least --max-line plus this, so one line never overflows an idle client.
 */
#define CHAT_BROKER_SLACK 128

enum chat_mode { CHAT_MODE_EVENT, CHAT_MODE_FORK };

struct chat_opts {
	enum chat_mode mode;
	int listen;    /* wait for a peer on addr rather than connect to it */
	int keep_open; /* with listen: after a peer leaves, wait for the next */
	struct addr addr;
	enum log_level log_level;
	int broker;           /* relay lines among every client (event only) */
	uint64_t max_pending; /* broker: bytes of unsent output per client */
	uint64_t max_line;    /* broker: longest line relayed whole */
};

/*
 * Parse forkloop-chat's command line. Help and version go to out, errors and
 * usage to errout.
 */
enum opts_result chat_opts_parse(int argc, char **argv, struct chat_opts *o,
                                 FILE *out, FILE *errout);

const char *chat_mode_name(enum chat_mode m);

/*
 * Set by chat_sig_handler: the signal that asked us to stop, or 0. While
 * chat_sig_wake_fd is a socket, the handler also shuts it down so a blocking
 * accept, connect or read returns; while chat_sig_child is a pid, it also
 * sends that child SIGTERM. While chat_sig_exit is set, the handler only
 * calls _exit(0) (a forked child with nothing to clean up).
 */
extern volatile sig_atomic_t chat_sig_caught;
extern volatile sig_atomic_t chat_sig_exit;
extern volatile sig_atomic_t chat_sig_wake_fd;
extern volatile sig_atomic_t chat_sig_child;

/* SIGINT and SIGTERM to chat_sig_handler, without SA_RESTART; SIGPIPE off. */
void chat_sig_install(void);
void chat_sig_handler(int sig);

/* Exit status for a caught signal: 128 + its number (130, 143). */
int chat_sig_status(void);

/*
 * Remember the file status flags of stdin and stdout now, and restore them at
 * exit: a terminal is shared with the shell.
 */
void chat_stdio_save(void);

/*
 * The listening socket for o->addr, blocking, after printing "listening on
 * ADDR:PORT". Returns -1 after reporting the error.
 */
int chat_listen(const struct chat_opts *o);

/*
 * Wait for one peer on lfd. Returns the connected socket (blocking), or -1:
 * after reporting an error, or because a signal was caught.
 */
int chat_accept(int lfd);

/*
 * Connect to o->addr, trying every address it resolves to. Returns the
 * connected socket (blocking), or -1: after reporting the error, or because a
 * signal was caught.
 */
int chat_connect(const struct chat_opts *o);

/*
 * Run the chosen design: connect or listen, then move bytes until the session
 * ends. Return the process exit status.
 */
int chat_run(const struct chat_opts *o);

/*
 * One session over the connected socket fd, which they close. Return 0 once
 * the peer has closed, 1 on a runtime error, 128 + signal after SIGINT or
 * SIGTERM.
 */
int chat_event_session(const struct chat_opts *o, int fd);
int chat_fork_session(const struct chat_opts *o, int fd, int lfd);

/*
 * The multi-user relay: listen on o->addr and relay every client's lines to
 * every other client until SIGINT or SIGTERM. Return the exit status: 128 +
 * signal, or 1 on a runtime error.
 */
int chat_broker_run(const struct chat_opts *o);

/*
 * Is the n bytes at s a name /nick accepts: 1 to CHAT_NAME_MAX bytes of
 * printable non-space ASCII other than '<' and '>', or of well-formed UTF-8
 * without control characters? Returns 1 or 0.
 */
int chat_broker_name_ok(const char *s, size_t n);

#endif
