/*
 * echo.h - the echo daemon: options, statistics, and both designs.
 */
#ifndef FORKLOOP_ECHO_H
#define FORKLOOP_ECHO_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "forkloop/addr.h"
#include "forkloop/admit.h"
#include "forkloop/log.h"
#include "forkloop/metrics.h"
#include "forkloop/opts.h"

#define ECHO_MAX_LISTEN          16
#define ECHO_DEFAULT_LISTEN      "6666"
#define ECHO_DEFAULT_MAX_PENDING (256 * 1024)
#define ECHO_DEFAULT_DRAIN       5.0
#define ECHO_DEFAULT_TLS_HANDSHAKE 10.0
/*
 * --threads: most event loops one daemon runs. Beyond the CPUs it may use
 * threads only add switches; 256 covers the largest common hosts.
 */
#define ECHO_MAX_THREADS         256

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
	unsigned keepalive;   /* TCP keepalive idle seconds; 0: off */
	enum log_level log_level;
	enum echo_udp udp;
	uint64_t udp_rate; /* replies per second per source address; 0: none */
	unsigned threads;  /* event mode: event loops, one per thread, >= 1 */
	int cpu_affinity;  /* pin loop i to the i-th CPU of the affinity mask */
	int tls;              /* some listen[] has tls set */
	const char *tls_cert; /* --tls-cert: PEM chain; NULL without TLS */
	const char *tls_key;  /* --tls-key: PEM private key */
	const char *tls_verify_client; /* --tls-verify-client: CA file, or
	                                * NULL to ask for no certificate */
	double tls_handshake; /* --tls-handshake-timeout, seconds, > 0 */
	struct admit *admit;  /* --allow, --deny, ... (admit.h); never NULL
	                       * once parsed: echo_opts_free frees it */
	int metrics_on;       /* --metrics given: serve metrics on metrics */
	struct addr metrics;  /* --metrics [ADDR:]PORT (metrics.h) */
};

/*
 * The CPUs this process may run on: CPU_COUNT of sched_getaffinity(2) for
 * pid 0, at least 1 (1 if the call fails).
 */
unsigned echo_cpus_allowed(void);

/*
 * Why a datagram got no reply: a guard (udp_guard, a source the daemon
 * serves itself), a datagram larger than a reply can be, the access lists,
 * the --udp-rate cap, or sendmsg(2) failing.
 */
enum echo_udp_drop {
	ECHO_UDP_DROP_GUARD,
	ECHO_UDP_DROP_TRUNCATED,
	ECHO_UDP_DROP_ACL,
	ECHO_UDP_DROP_RATE,
	ECHO_UDP_DROP_SEND_ERROR,
	ECHO_UDP_NDROP
};

/* The reason label of d: "guard", "truncated", "acl", "rate", "send_error". */
const char *echo_udp_drop_name(enum echo_udp_drop d);

/* What SIGUSR1 prints, and what --metrics shows (echo_metrics_write). */
struct echo_stats {
	uint64_t open;
	uint64_t accepted;
	uint64_t refused;
	uint64_t bytes_in;
	uint64_t bytes_out;
	int udp;              /* UDP served: print the udp_ counters */
	uint64_t udp_in;      /* datagrams received */
	uint64_t udp_out;     /* datagrams echoed */
	uint64_t udp_dropped; /* guards, access lists, rate cap, send errors */
	int admit;            /* admission rules given: print the counters */
	uint64_t admit_refused[ADMIT_NWHY]; /* admit_counts */
	/* For --metrics and the service manager, not the SIGUSR1 line: */
	uint64_t fork_failed; /* fork mode: of refused, those no child could
	                       * be made for (the rest: --max-conns) */
	uint64_t udp_drop[ECHO_UDP_NDROP]; /* udp_dropped by reason */
	struct metrics_hist duration; /* closed connections' lifetimes */
	int draining;                 /* SIGINT or SIGTERM: draining */
};

/*
 * s in the Prometheus text format (metrics.h) into out: every
 * forkloop_echo_* family, fork_failed among the refusal reasons in fork
 * mode only.
 */
void echo_metrics_write(const struct echo_stats *s, enum echo_mode mode,
                        struct evbuffer *out);

struct notify;

/*
 * The service manager's STATUS= line for s (notify.h): "12 connections,
 * 3.2 MB/s", the rate being the bytes sent per second since the last line,
 * or "draining: 12 connections".
 */
void echo_notify_status(struct notify *n, const struct echo_stats *s);

/*
 * Parse forkloop-echo's command line. Help and version go to out, errors and
 * usage to errout.
 */
enum opts_result echo_opts_parse(int argc, char **argv, struct echo_opts *o,
                                 FILE *out, FILE *errout);
/* Free what echo_opts_parse allocated in o (OPTS_OK); NULL fields are fine. */
void echo_opts_free(struct echo_opts *o);

const char *echo_mode_name(enum echo_mode m);

/*
 * "forkloop-echo: stats: open=1 accepted=2 ...", priority info: through
 * log_report (every level) for SIGUSR1, or, final (the daemon's last line,
 * once it has stopped serving), through log_info (not with -q).
 */
void echo_stats_log(const struct echo_stats *s, int final);

/*
 * Why a connection ended, as its -v line says it (reason=...). Those
 * marked "refused" end a TLS connection before it was served and are
 * logged as event=refused; the others as event=close.
 */
enum echo_end {
	ECHO_END_NONE,          /* still open */
	ECHO_END_EOF,           /* the client's FIN, its echo all sent */
	ECHO_END_RESET,         /* the client reset it (ECONNRESET, EPIPE) */
	ECHO_END_IDLE,          /* --idle-timeout */
	ECHO_END_SHUTDOWN,      /* SIGINT or SIGTERM, everything owed sent */
	ECHO_END_DRAIN_TIMEOUT, /* --drain-timeout ran out first */
	ECHO_END_ERROR,         /* another socket error, or out of memory */
	ECHO_END_TLS_ERROR,     /* TLS failed after the handshake */
	ECHO_END_TLS_HANDSHAKE, /* refused: the handshake failed */
	ECHO_END_TLS_HANDSHAKE_TIMEOUT, /* refused: --tls-handshake-timeout */
	ECHO_END_EXIT,          /* still open when the daemon exited */
};

/* The reason= word of e: "eof", "reset", "idle_timeout", ... */
const char *echo_end_name(enum echo_end e);
/* A socket error err as a reason: ECHO_END_RESET or ECHO_END_ERROR. */
enum echo_end echo_end_errno(int err);

/*
 * With -v, a connection from peer was accepted: "event=open peer=PEER
 * loop=N" in event mode (the loop serving it), "event=open peer=PEER
 * pid=N" in fork mode (the child serving it); key is "loop" or "pid".
 */
void echo_log_open(const char *peer, const char *key, uint64_t id);

/*
 * With -v, a connection ended for why after in bytes read from the client
 * and out handed to the kernel for it, ms milliseconds after it was
 * accepted: "event=close peer=PEER in=N out=N reason=R duration_ms=N", with
 * pid=N after the peer in fork mode (pid > 0) and error="..." at the end
 * when error is not NULL (what failed); event=refused, without in and
 * out, for the reasons echo_end calls refused.
 */
void echo_log_close(const char *peer, long pid, uint64_t in, uint64_t out,
                    enum echo_end why, const char *error, uint64_t ms);

/*
 * Accepts one wake-up of the event loop may make before the listeners are
 * disabled and re-enabled from a zero-timeout event, so that signals,
 * reaping, timers and open connections get their turn under a flood of
 * connects (an evconnlistener otherwise accepts until EAGAIN).
 */
#define ECHO_ACCEPT_BURST 16

struct event;

/*
 * Count one accept in *burst. At ECHO_ACCEPT_BURST, reset the count, arm
 * resume (a timer event whose callback enables the listeners again) with a
 * zero timeout and return 1: the caller disables its listeners, so the loop
 * runs its signals, timers and connections before it accepts again (an
 * evconnlistener accepts until accept(2) fails unless its callback disables
 * it; libevent's listener.c). Returns 0 otherwise, and when the timer
 * cannot be armed (out of memory): then the caller keeps accepting, since
 * nothing would enable its listeners again.
 */
int echo_accept_burst(unsigned *burst, struct event *resume);

/*
 * Signals whose default action ends the process (signal(7)) and that the
 * daemon catches to log and go on serving: SIGHUP (nothing to reload
 * without a TLS listener, as every other setting comes from the command
 * line; with one, the designs reload the certificate instead), SIGUSR2, SIGALRM, SIGVTALRM,
 * SIGPROF, SIGIO, SIGPWR, SIGXFSZ (a log file past RLIMIT_FSIZE then fails
 * with EFBIG instead), SIGSTKFLT. SIGINT and SIGTERM drain, SIGUSR1 logs
 * statistics; SIGQUIT, SIGXCPU and the fault signals keep their default.
 */
#define ECHO_NIGNORED_SIGNALS 9
extern const int echo_ignored_signals[ECHO_NIGNORED_SIGNALS];

/*
 * Ignore SIGPIPE (a peer's reset fails the write with EPIPE instead) and the
 * real-time signals SIGRTMIN to SIGRTMAX, whose default action ends the
 * process (signal(7)). Call before installing any handler.
 */
void echo_signals_ignore(void);

/* Log that sig, one of echo_ignored_signals, arrived and changes nothing. */
void echo_signal_log(int sig);

/*
 * A log line a flood could repeat without bound, such as one per refused
 * connect: at most ECHO_LOG_PER_SEC in any one second (a sliding window
 * over the times of the last lines logged). echo_loglimit_pass takes the
 * current time in milliseconds (any monotonic clock) and returns 1 if a
 * line may be logged now, storing in *held how many were held back before
 * it (then counted afresh), or 0 if this one is held back. A zeroed struct
 * is ready for use.
 */
#define ECHO_LOG_PER_SEC 10
struct echo_loglimit {
	int64_t t[ECHO_LOG_PER_SEC]; /* when the last lines were logged, ms */
	unsigned next;               /* the oldest of them, once n is full */
	unsigned n;                  /* how many of t are in use */
	uint64_t held; /* lines held back since the last one logged */
};
int echo_loglimit_pass(struct echo_loglimit *l, int64_t now_ms,
                       uint64_t *held);

/*
 * With -v, log a connection from peer that --max-conns refused with open
 * connections open, through l: "event=refused peer=127.0.0.1:5000
 * reason=max_conns open=50 max_conns=50", with " not_logged=12" when the
 * limit held lines back.
 */
void echo_refused_log(struct echo_loglimit *l, const char *peer,
                      uint64_t open, uint64_t max);

/*
 * Log that the admission rules refused a peer at sa: the connection fd
 * (not yet closed) admit_conn refused for why, with t as it filled it, or
 * (fd -1) a datagram the access lists refused, t from admit_source.
 * Unless -q, at most once per source in ADMIT_LOG_INTERVAL seconds and
 * ADMIT_LOG_PER_SEC lines a second in all (admit_log_pass), now being
 * admit_now(): "refused 127.0.0.2:40000: denied by --allow/--deny (3 more
 * from 127.0.0.2 not logged)" (admit_log_refused). Any thread.
 */
void echo_admit_refused(const struct echo_opts *o, int fd,
                        const struct sockaddr *sa, socklen_t len,
                        const struct admit_ticket *t, enum admit_why why,
                        double now);

/*
 * Put the connection fd, just accepted from sa, to o->admit's rules
 * (admit_conn) before anything is set up for it: 0 if admitted, t filled
 * (admit_release it once fd is closed), or -1 if refused: logged
 * (echo_admit_refused) and fd closed. Both designs' accept paths.
 */
int echo_admit_conn(const struct echo_opts *o, int fd,
                    const struct sockaddr *sa, socklen_t len,
                    struct admit_ticket *t);

/* With any admission rule given, add its refusals (admit_counts) to s. */
void echo_admit_stats(const struct echo_opts *o, struct echo_stats *s);

/*
 * Accepting paused because accept(2) or fork(2) failed for want of
 * descriptors, memory or processes (EMFILE, ENFILE, ENOBUFS, ENOMEM,
 * EAGAIN). echo_pause_note logs the first failure of a run of them
 * ("accept: Too many open files; pausing accepts") and counts the rest;
 * echo_pause_over, called on the next accept that works, logs how long
 * the pause lasted and how many attempts waited, once. A daemon at its
 * descriptor limit pauses and resumes as often as connections close, so
 * a run is logged at most once in ECHO_PAUSE_LOG_INTERVAL seconds: the
 * runs in between are counted, not logged, nor is their end, and the
 * next line logged says how many ("... pausing accepts (12 more not
 * logged)"). A zeroed struct is ready for use.
 */
#define ECHO_PAUSE_LOG_INTERVAL 10.0
struct echo_pause {
	int on;
	int logged;     /* this run's first failure was logged */
	double since;   /* CLOCK_MONOTONIC seconds at the first failure */
	uint64_t waits; /* failed attempts since */
	double last;    /* when a run was last logged; 0: never */
	uint64_t held;  /* runs not logged since */
};
void echo_pause_note(struct echo_pause *p, const char *what, int err);
void echo_pause_over(struct echo_pause *p);

/* Sockets one daemon serves: listening TCP and UDP, bound or inherited. */
#define ECHO_MAX_SOCKETS 64

struct echo_socket {
	int fd;
	int socktype;  /* SOCK_STREAM (listening) or SOCK_DGRAM */
	int activated; /* passed by systemd rather than bound here */
	int tls;       /* a tls:// listener: connections speak TLS */
};

/* A design's way to serve one socket, which it owns from then on. */
typedef int echo_serve_fn(void *arg, const struct echo_socket *s);

/*
 * Open the sockets to serve, the same for both designs: those systemd
 * passed (socket activation), or else TCP on every --listen address (TLS
 * where it says tls://) and UDP as --udp or --udp-only asks (--udp only
 * beside plain TCP listeners), all non-blocking and close-on-exec. Hand each
 * to serve, log its "listening on" line, then tell the service manager
 * READY=1. Returns 0, or -1 after logging why (the sockets not handed over
 * are closed).
 */
int echo_sockets_serve(const struct echo_opts *o, echo_serve_fn *serve,
                       void *arg);

/*
 * Options every accepted connection gets, in both designs: TCP_NODELAY, and
 * with --keepalive TCP keepalive (sock_keepalive: the first probe after
 * that many idle seconds, then SOCK_KEEPALIVE_PROBES probes a third of it
 * apart; tcp(7)); none on a Unix socket: family is the peer address's, as
 * accept(2) gave it (AF_UNIX, AF_INET, AF_INET6), so no system call asks.
 * Returns 0, or -1 with errno set.
 */
int echo_conn_setup(const struct echo_opts *o, int fd, int family);

/*
 * --idle-timeout is checked ECHO_IDLE_TICKS times per period: a connection
 * is idle, and closed, after that many ticks in a row in which no byte
 * moved either way, so between the timeout and a quarter more after its
 * last byte moved.
 */
#define ECHO_IDLE_TICKS 4

/*
 * Whether bytes moved on a TCP connection: what TCP_INFO reports as
 * received from the peer and acknowledged by it (tcpi_bytes_received and
 * tcpi_bytes_acked, tcp(7), Linux 4.2 and later), which counts a transfer
 * the peer reads slowly even while the kernel's send buffer stays full, and
 * the application's own in and out counts (all a socket without TCP_INFO
 * has). echo_progress_moved returns 1 if any of them changed since the
 * last call (*p holds them) and 0 if none did.
 */
struct echo_progress {
	uint64_t acked, received; /* TCP_INFO */
	uint64_t in, out;         /* the caller's counts */
};
int echo_progress_moved(int fd, uint64_t in, uint64_t out,
                        struct echo_progress *p);

/*
 * Closing a socket that still has unread input makes the kernel send a
 * reset and discard what it has not yet delivered (RFC 1122, 4.2.2.13;
 * RFC 9293, 3.6), and a reset is also the answer to input that arrives
 * after the close. So a close that is not answering the peer's FIN first
 * shuts down the sending side, then reads and discards until the peer's
 * FIN for up to ECHO_LINGER_MS without input and ECHO_LINGER_MAX_MS in all
 * ("lingering close"). echo_linger_needed says whether that is needed now:
 * 1 while input is unread (FIONREAD) or output unsent or unacknowledged
 * (SIOCOUTQ, tcp(7)), 0 when closing at once loses nothing.
 */
#define ECHO_LINGER_MS     1000
#define ECHO_LINGER_MAX_MS 5000
int echo_linger_needed(int fd);

/* Run until SIGINT/SIGTERM. Return the process exit status (0 or 1). */
int echo_event_run(const struct echo_opts *o);
int echo_fork_run(const struct echo_opts *o);

#endif
