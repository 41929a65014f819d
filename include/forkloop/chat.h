/*
 * chat.h - the point-to-point chat endpoint and the relay. One idea per
 * file: options (chat_opts.c), signal flags (chat_sig.c), standard I/O
 * flags (chat_stdio.c), connection set-up and delivery check
 * (chat_conn.c), who may connect (chat_admit.c), the session that
 * dispatches to a design (chat_run.c), the designs (chat_event.c,
 * chat_fork.c), and the relay (chat_broker.c).
 * Options parse without the designs; the designs use the shared parts and
 * never chat_run.c.
 */
#ifndef FORKLOOP_CHAT_H
#define FORKLOOP_CHAT_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "forkloop/addr.h"
#include "forkloop/admit.h"
#include "forkloop/log.h"
#include "forkloop/opts.h"
#include "forkloop/tls.h"

/* Stop reading a source while this much waits for its destination. */
#define CHAT_HIGH_WATER (256 * 1024)
/* Resume once the backlog is down to this. */
#define CHAT_LOW_WATER (64 * 1024)
/* Largest single read from stdin or the socket. */
#define CHAT_CHUNK (64 * 1024)
/*
 * At the end of a session, how long to wait for the peer to acknowledge
 * what was sent, before reporting it as not delivered.
 */
#define CHAT_LINGER_MS 3000
/* A session's result when the peer did not get everything: exit status 1. */
#define CHAT_UNDELIVERED 3
/*
 * A TLS peer that failed its handshake (reported): exit status 1, or with
 * --keep-open the listener waits for the next peer.
 */
#define CHAT_NO_HANDSHAKE 4
/* What a peer that closed without close_notify is told, TLS only. */
#define CHAT_TLS_TRUNCATED \
	"peer closed without close_notify: the stream may be truncated"

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
	unsigned keepalive;   /* TCP keepalive idle seconds, 0 = off */
	/*
	 * TLS: addr.tls says the connection speaks it (--tls, or tls:// on the
	 * target or --listen). A listener presents tls_cert/tls_key and, with
	 * tls_verify_client, asks for a client certificate from that CA. A
	 * client verifies the server against tls_ca (NULL: the system store)
	 * unless tls_insecure, and presents tls_cert/tls_key if given.
	 */
	const char *tls_cert;          /* --tls-cert FILE, or NULL */
	const char *tls_key;           /* --tls-key FILE, or NULL */
	const char *tls_ca;            /* --tls-ca FILE (client), or NULL */
	const char *tls_verify_client; /* --tls-verify-client CAFILE, or NULL */
	int tls_insecure;              /* --tls-insecure (client) */
	double tls_handshake;          /* --tls-handshake-timeout, seconds */
	/*
	 * Who may connect to a listener or the relay (admit.h: --allow,
	 * --deny, per-source limits), checked at accept; never NULL once
	 * parsed, and everyone gets in when no rule was given.
	 */
	struct admit *admit;
	uint64_t max_clients; /* broker: clients open at once, 0 = no limit */
	int metrics_on;       /* broker: --metrics given */
	struct addr metrics;  /* broker: --metrics [ADDR:]PORT (metrics.h) */
};

/* --tls-handshake-timeout's default, seconds. */
#define CHAT_DEFAULT_TLS_HANDSHAKE 10.0

/*
 * Parse forkloop-chat's command line. Help and version go to out, errors and
 * usage to errout.
 */
enum opts_result chat_opts_parse(int argc, char **argv, struct chat_opts *o,
                                 FILE *out, FILE *errout);

/* Free what chat_opts_parse allocated for a run (o->admit); o may be
 * zeroed, or what a parse that did not return OPTS_OK left. */
void chat_opts_free(struct chat_opts *o);

const char *chat_mode_name(enum chat_mode m);

/*
 * Set by chat_sig_handler: the signal that asked us to stop, or 0. While
 * chat_sig_wake_fd is a socket, the handler also shuts it down so a blocking
 * connect or read returns; while chat_sig_child is a pid, it also
 * sends that child the same signal. While chat_sig_exit is set, the handler
 * only makes the process die of the signal once it returns (a forked child
 * with nothing to clean up).
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
 * If SIGINT or SIGTERM ended the program (chat_sig_caught), restore standard
 * input's and output's flags, end a line on a terminal after ^C, and die of
 * that signal with its default action (signal(sig, SIG_DFL), raise), so the
 * parent sees WIFSIGNALED and a shell stops its loop: "Proper handling of
 * SIGINT/SIGQUIT" (the wait-and-cooperative-exit rule bash follows). Returns
 * only if no signal was caught.
 */
void chat_sig_reraise(void);

/*
 * Remember the file status flags of stdin and stdout now, and restore them at
 * exit and whenever the process stops (SIGTSTP, SIGTTIN, SIGTTOU: set again
 * once it continues): a terminal is one open file description shared with the
 * shell, and O_NONBLOCK left on it breaks the shell's next command.
 */
void chat_stdio_save(void);

/*
 * Clear (blocking 1) or set (0) O_NONBLOCK on fd, STDIN_FILENO or
 * STDOUT_FILENO, as the session's own setting. Returns 0, or -1 with errno.
 */
int chat_stdio_set_blocking(int fd, int blocking);

/* Put back the flags chat_stdio_save found; async-signal-safe. */
void chat_stdio_restore(void);

/* Most listening sockets one --listen address may stand for. */
#define CHAT_MAX_LISTEN 16

/* The listening sockets of one --listen address, all on one port. */
struct chat_listeners {
	int fd[CHAT_MAX_LISTEN];
	size_t n;
};

/*
 * Listen on o->addr: a PORT alone gives one socket that serves IPv6 and IPv4,
 * a name one socket per address it resolves to (listener_bind), each
 * non-blocking and close-on-exec, after printing "listening on ADDR:PORT" for
 * each. Fills l and returns 0, or returns -1 with nothing open after
 * reporting the error (past CHAT_MAX_LISTEN addresses among them).
 */
int chat_listen(const struct chat_opts *o, struct chat_listeners *l);

/*
 * The relay's listening sockets: those systemd passed it (socket
 * activation, activation_get: LISTEN_PID, LISTEN_FDS; sd_listen_fds(3)),
 * each of which must be a listening stream socket, made non-blocking, with
 * "listening on ADDR:PORT (activated fd 3)" printed for each; or, when
 * none were passed, chat_listen on o->addr. Inherited sockets are served
 * instead of binding o->addr, which still says whether they speak TLS.
 * Returns as chat_listen.
 */
int chat_listen_inherited(const struct chat_opts *o, struct chat_listeners *l);

/* Close every socket in l, if l is not NULL, and leave it empty. */
void chat_listen_close(struct chat_listeners *l);

/*
 * Wait for one peer on any socket of l (ppoll(2) with SIGINT and SIGTERM
 * blocked until the wait, so a signal caught before it is not missed) that
 * the rules of a let in (chat_admit): a refused peer is closed at once,
 * before a byte is read or sent, and the wait goes on. Returns the
 * connected socket (blocking, close-on-exec) with its admission in t, for
 * admit_release once it is closed; or -1: after reporting an error, or
 * because a signal was caught. Says "connected to ADDR:PORT" unless tls
 * (chat_tls_handshake says it once the handshake is done).
 */
int chat_accept(const struct chat_listeners *l, int tls, struct admit *a,
                struct admit_ticket *t);

/*
 * The peer fd, just accepted from sa, against the rules of a (admit_conn):
 * returns ADMIT_OK with t filled, to be given to admit_release once fd is
 * closed, or why it was refused, after logging it (admit_log_refused:
 * "refused 127.0.0.2:40000: denied by --allow/--deny"). Never reads or
 * closes fd.
 */
enum admit_why chat_admit(struct admit *a, int fd, const struct sockaddr *sa,
                          socklen_t len, struct admit_ticket *t);

/*
 * Connect to o->addr, trying every address it resolves to. Returns the
 * connected socket (blocking), or -1: after reporting the error, or because a
 * signal was caught. Says "connected to ADDR:PORT", over TLS only once the
 * handshake is done (chat_tls_handshake).
 */
int chat_connect(const struct chat_opts *o);

/*
 * After our FIN on the connected socket fd, to which the session wrote sent
 * bytes of standard input and left unsent more it had read: did the peer get
 * them all? Waits up to CHAT_LINGER_MS for the peer's TCP to acknowledge the
 * sent bytes (tcp(7) TCP_INFO, tcpi_bytes_acked), returning early on a reset
 * or a caught signal; reset says the caller already saw ECONNRESET or EPIPE.
 * A peer that finished sending and then closed answers further data with a
 * reset instead of an acknowledgement (RFC 9293 section 3.6.1), so this
 * catches data sent to a peer that left. Returns 0 when everything was
 * acknowledged and there was no reset; 128 + signal if one was caught;
 * otherwise reports on standard error ("peer reset the connection", how many
 * bytes were not delivered) and returns CHAT_UNDELIVERED, or 1 if TCP_INFO
 * failed. On a Unix socket, the peer got the bytes once it has read them
 * all (SIOCOUTQ down to 0, unix(7)); closing with some unread resets.
 */
int chat_deliver(int fd, uint64_t sent, uint64_t unsent, int reset);

/*
 * At the start of a session on the connected socket fd: remember what its
 * TCP has acknowledged so far (the SYN may count), from which chat_deliver
 * counts.
 */
void chat_deliver_start(int fd);

/* What one run of a TLS endpoint loads once, before the first peer. */
struct chat_tls {
	struct tls_server *server; /* a tls:// listener's, or NULL */
	SSL_CTX *client;           /* a --tls client's, or NULL */
};

/*
 * If o->addr.tls: load the listener's certificate and key
 * (tls_server_new, with --tls-verify-client) or make the client's context
 * (tls_client_ctx_new: --tls-ca, --tls-cert, --tls-key, verifying unless
 * --tls-insecure, which is said once on standard error). Without TLS t is
 * left empty. Returns 0, or -1 after reporting the error (tls.c's words).
 */
int chat_tls_init(const struct chat_opts *o, struct chat_tls *t);

/* Free what chat_tls_init made; t is left empty. */
void chat_tls_free(struct chat_tls *t);

/*
 * The TLS handshake on the connected socket fd, which it makes non-blocking
 * and leaves open: a listener's with t->server, a client's with t->client
 * for the host the user gave (tls_client_ssl: its name or address is
 * verified). Bounded by --tls-handshake-timeout on a listener and by
 * CHAT_DEFAULT_TLS_HANDSHAKE on a client; SIGINT and SIGTERM end it
 * (ppoll(2), as chat_accept). The SSL does not ignore a FIN without
 * close_notify (SSL_OP_IGNORE_UNEXPECTED_EOF cleared), so the designs see a
 * truncated stream as an error. Returns the SSL, bound to fd, after saying
 * "connected to ADDR:PORT (TLSv1.3)", or NULL: after reporting why ("cannot
 * connect to ADDR:PORT: certificate verify failed: hostname mismatch" on a
 * client, "tls handshake failed: REASON" or "tls handshake timeout: not
 * done in 10 s" on a listener), or because a signal was caught.
 */
SSL *chat_tls_handshake(const struct chat_opts *o, const struct chat_tls *t,
                        int fd);

/*
 * A write on ssl met a reset: the alert a peer that refused us sent before
 * it closed may still wait unread (TLS 1.3 judges a client's certificate
 * after the client's handshake is done). Reads it without taking any data
 * (SSL_peek); returns its error (tls_strerror says "tlsv13 alert
 * certificate required"), or 0 if the next record is not an alert.
 */
unsigned long chat_tls_alert(SSL *ssl);

/*
 * SIGINT or SIGTERM ends a TLS session: send close_notify on ssl, unless
 * already sent, as a FIN would end a TCP one. Best effort: one
 * SSL_shutdown on the non-blocking socket, not waiting for room or for the
 * peer's close_notify.
 */
void chat_tls_quit(SSL *ssl);

/*
 * chat_deliver for TLS, where the bytes on the wire are records, not the
 * bytes stdin gave: after our close_notify and FIN on fd, wait up to
 * CHAT_LINGER_MS for the peer's TCP to acknowledge everything written to
 * the socket, FIN included (its send queue empty: SIOCOUTQ, tcp(7)),
 * returning early on a reset or a caught signal. unsent: bytes of stdin
 * that never went into a record. notify_at: chat_tls_notify_mark's answer
 * when our close_notify followed the peer's, else 0; once the peer's TCP
 * acknowledged that much, a reset or an unacknowledged close_notify is no
 * loss (the peer had left; plain TCP's FIN would have drawn no reset).
 * Returns as chat_deliver does; what is reported lost is unsent, and the
 * record bytes left unacknowledged.
 */
int chat_deliver_tls(int fd, uint64_t unsent, int reset, uint64_t notify_at);

/*
 * Right before our close_notify on fd, every record before it written to
 * the socket: where that record begins, counted as TCP_INFO's
 * tcpi_bytes_acked counts, or 0 if unknown.
 */
uint64_t chat_tls_notify_mark(int fd);

/*
 * Run the chosen design: connect or listen, then move bytes until the session
 * ends. Return the process exit status.
 */
int chat_run(const struct chat_opts *o);

/*
 * One session over the connected socket fd, which they close. Return 0 once
 * the peer has closed and got everything, CHAT_UNDELIVERED if it reset the
 * connection or did not get everything (reported), 1 on a runtime error
 * (a TLS peer that closed without close_notify among them: CHAT_TLS_TRUNCATED),
 * 128 + signal after SIGINT or SIGTERM. ssl: the connection's TLS after
 * chat_tls_handshake, which the session frees, or NULL for plain TCP.
 */
int chat_event_session(const struct chat_opts *o, int fd, SSL *ssl);
/* l: listening sockets the fork design's child closes, or NULL. */
int chat_fork_session(const struct chat_opts *o, int fd,
                      const struct chat_listeners *l);
/* The fork design over TLS: one process, no child (chat_fork.c). */
int chat_fork_tls_session(const struct chat_opts *o, int fd, SSL *ssl);

/*
 * The multi-user relay: listen on o->addr and relay every client's lines to
 * every other client until SIGINT or SIGTERM. Return the exit status: 128 +
 * signal (the caller then dies of it: chat_sig_reraise), or 1 on a runtime
 * error.
 */
int chat_broker_run(const struct chat_opts *o);

/*
 * Is the n bytes at s a name /nick accepts, leaving aside which other names
 * are in the room: 1 to CHAT_NAME_MAX bytes of well-formed UTF-8 (RFC 3629)
 * in Unicode Normalization Form C, no '<' or '>', only characters of UTS
 * #39's recommended and inclusion sets (Identifier_Status=Allowed, section
 * 3.1) or printable ASCII or emoji, of one script or of scripts that mix at
 * the Highly Restrictive level (section 5.2), digits of one numbering
 * system (5.3), no hidden or stacked combining marks (5.4), as ICU's
 * uspoof_check2UTF8 judges them (unicode/uspoof.h). Returns 1 or 0.
 */
int chat_broker_name_ok(const char *s, size_t n);

/*
 * The relay for o without listeners, signals, TLS, --metrics or a service
 * manager, for tests: chat_broker_open makes it on an event loop of its
 * own (chat_broker_base), which the caller runs; chat_broker_add makes fd,
 * a connected non-blocking stream socket, a client that joins the room as
 * one accepted from the peer named from would (no admission rule is asked;
 * the relay closes fd), and returns 0, or -1 with fd closed (out of
 * memory); chat_broker_close frees every client, closing its socket, then
 * the relay. NULL is fine. chat_broker_open returns NULL when ICU's spoof
 * checker or the event loop cannot be made.
 */
struct broker;
struct event_base;
struct broker *chat_broker_open(const struct chat_opts *o);
struct event_base *chat_broker_base(struct broker *b);
int chat_broker_add(struct broker *b, int fd, const char *from);
void chat_broker_close(struct broker *b);

#endif
