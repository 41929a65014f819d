/*
 * chat_opts.c - forkloop-chat's command line, and what both designs share:
 * signal flags, stdio flags, setting up the connection (listen and accept,
 * or connect) and, at its end, checking that the peer got everything.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "forkloop/chat.h"
#include "forkloop/listener.h"
#include "forkloop/num.h"
#include "forkloop/sock.h"

volatile sig_atomic_t chat_sig_caught;
volatile sig_atomic_t chat_sig_wake_fd = -1;
volatile sig_atomic_t chat_sig_child;
volatile sig_atomic_t chat_sig_exit;

/* stdin's and stdout's flags as found, and as the session wants them. */
static volatile sig_atomic_t chat_saved_flags[2] = {-1, -1};
static volatile sig_atomic_t chat_session_flags[2] = {-1, -1};

static const char chat_usage_text[] =
        "usage: %s [-kqvhV] [-m event|fork] [--keepalive SECONDS] "
        "-l [ADDR:]PORT\n"
        "       %s [-qvhV] [-m event|fork] [--keepalive SECONDS]\n"
        "       HOST PORT | HOST:PORT\n"
        "       %s --broker [-qvhV] [--max-pending BYTES] [--max-line BYTES]\n"
        "       [--keepalive SECONDS] -l [ADDR:]PORT\n";

static const char chat_help_text[] =
        "Send standard input to one peer over TCP and print what it sends.\n"
        "\n"
        "  -m, --mode MODE          event: one process, one libevent loop "
        "(default);\n"
        "                           fork: one process per direction\n"
        "  -l, --listen [ADDR:]PORT wait for one peer here rather than "
        "connect;\n"
        "                           a PORT alone listens on every address,\n"
        "                           IPv6 and IPv4, a name on every address "
        "it\n"
        "                           resolves to; [IPv6]:PORT works; port 0\n"
        "                           picks a free port\n"
        "  -k, --keep-open          with --listen: after a peer leaves, wait "
        "for\n"
        "                           the next one\n"
        "      --keepalive SECONDS  TCP keepalive: after SECONDS (1 to 32767) "
        "idle,\n"
        "                           probes SECONDS/3 apart (at least 1 s); "
        "after\n"
        "                           3 unanswered probes the peer is dropped, "
        "about\n"
        "                           twice SECONDS after the last traffic "
        "(default off)\n"
        "      --broker             with --listen: relay lines among every "
        "client\n"
        "                           that connects (event mode only)\n"
        "      --max-pending BYTES  with --broker: drop a client whose unsent "
        "output\n"
        "                           would pass BYTES; K, M, G suffixes "
        "(default 1M)\n"
        "      --max-line BYTES     with --broker: cut lines longer than "
        "BYTES\n"
        "                           (default 64K)\n"
        "  -v, --verbose            log more\n"
        "  -q, --quiet              log errors only\n"
        "  -h, --help               show this help and exit\n"
        "  -V, --version            show the version and exit\n"
        "\n"
        "At end of standard input the endpoint sends what is pending, shuts "
        "down\n"
        "its sending side and prints what the peer sends until the peer "
        "closes.\n"
        "Status messages go to standard error. Exit status: 0 when the peer\n"
        "closes and has everything sent to it; 1 on a runtime error, or "
        "when the\n"
        "peer reset the connection or did not get everything; 2 on bad "
        "usage.\n"
        "SIGINT or SIGTERM ends the endpoint by that signal (130 or 143 in a "
        "shell).\n"
        "\n"
        "With --broker, each line a client sends goes to every other client "
        "as\n"
        "'<NAME> LINE', NAME being userN or what the client chose with the "
        "line\n"
        "'/nick NAME'. Lines starting with '* ' are the relay's notices: "
        "joins,\n"
        "leaves, renames, cut lines, clients dropped for not reading. It runs "
        "until\n"
        "SIGINT or SIGTERM (exit status 130 or 143).\n";

enum { OPT_BROKER = 256, OPT_MAX_PENDING, OPT_MAX_LINE, OPT_KEEPALIVE };

static const struct option chat_longopts[] = {
        {"mode", required_argument, NULL, 'm'},
        {"listen", required_argument, NULL, 'l'},
        {"keep-open", no_argument, NULL, 'k'},
        {"broker", no_argument, NULL, OPT_BROKER},
        {"max-pending", required_argument, NULL, OPT_MAX_PENDING},
        {"max-line", required_argument, NULL, OPT_MAX_LINE},
        {"keepalive", required_argument, NULL, OPT_KEEPALIVE},
        {"verbose", no_argument, NULL, 'v'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
};

const char *chat_mode_name(enum chat_mode m)
{
	return m == CHAT_MODE_FORK ? "fork" : "event";
}

static enum opts_result chat_bad(FILE *errout, const char *prog,
                                 const char *fmt, const char *arg)
{
	fprintf(errout, "%s: ", prog);
	fprintf(errout, fmt, arg);
	fputc('\n', errout);
	fprintf(errout, chat_usage_text, prog, prog, prog);
	return OPTS_USAGE;
}

static enum opts_result chat_bad_option(FILE *errout, const char *prog,
                                        char **argv)
{
	char opt[3];

	return chat_bad(errout, prog, "unknown option '%s'",
	                opts_refused(argv, opt));
}

/* The peer as one argument: HOST:PORT or [IPV6]:PORT. */
static enum opts_result chat_opts_target(const char *spec, struct chat_opts *o,
                                         FILE *errout, const char *prog)
{
	const char *why;

	if (addr_parse(spec, ADDR_CONNECT, &o->addr, &why) == 0)
		return OPTS_OK;
	if (strchr(spec, ':') == NULL && !addr_port_valid(spec))
		return chat_bad(errout, prog, "%s",
		                "missing PORT: give HOST PORT, "
		                ADDR_FORMS_CONNECT);
	fprintf(errout, "%s: bad address '%s': %s\n", prog, spec, why);
	fprintf(errout, chat_usage_text, prog, prog, prog);
	return OPTS_USAGE;
}

static enum opts_result chat_opts_addr(int argc, char **argv,
                                       struct chat_opts *o, FILE *errout,
                                       const char *prog)
{
	const char *why, *host;
	char bare[ADDR_HOSTLEN];
	size_t hlen;
	int left = argc - optind;

	if (o->listen) {
		if (left > 0)
			return chat_bad(
			        errout, prog,
			        "unexpected argument '%s' with --listen",
			        argv[optind]);
		return OPTS_OK;
	}
	if (o->keep_open)
		return chat_bad(errout, prog, "%s",
		                "--keep-open needs --listen");
	if (left == 1)
		return chat_opts_target(argv[optind], o, errout, prog);
	if (left == 0)
		return chat_bad(errout, prog, "%s", "missing HOST and PORT");
	if (left > 2)
		return chat_bad(errout, prog, "unexpected argument '%s'",
		                argv[optind + 2]);
	/* HOST PORT takes an IPv6 address bare or in brackets, as HOST:PORT
	 * needs it. */
	host = argv[optind];
	hlen = strlen(host);
	if (hlen > 2 && host[0] == '[' && host[hlen - 1] == ']' &&
	    memchr(host, ':', hlen) != NULL && hlen - 2 < sizeof bare) {
		memcpy(bare, host + 1, hlen - 2);
		bare[hlen - 2] = '\0';
		host = bare;
	}
	if (host[0] == '[' || host[0] == ']')
		why = "brackets hold an IPv6 address: [IPV6] PORT";
	else if (addr_set(host, argv[optind + 1], &o->addr, &why) == 0)
		why = NULL;
	if (why != NULL) {
		fprintf(errout, "%s: bad address '%s %s': %s\n", prog,
		        argv[optind], argv[optind + 1], why);
		fprintf(errout, chat_usage_text, prog, prog, prog);
		return OPTS_USAGE;
	}
	if (o->addr.host[0] == '\0' || strcmp(o->addr.port, "0") == 0)
		return chat_bad(errout, prog, "%s",
		                "connecting needs a host and a port other "
		                "than 0");
	return OPTS_OK;
}

/* The relay's options: only with --broker, which needs --listen. */
static enum opts_result chat_opts_broker(struct chat_opts *o, FILE *errout,
                                         const char *prog)
{
	if (!o->broker && o->max_pending != 0)
		return chat_bad(errout, prog, "%s",
		                "--max-pending needs --broker");
	if (!o->broker && o->max_line != 0)
		return chat_bad(errout, prog, "%s",
		                "--max-line needs --broker");
	if (o->max_pending == 0)
		o->max_pending = CHAT_DEFAULT_MAX_PENDING;
	if (o->max_line == 0)
		o->max_line = CHAT_DEFAULT_MAX_LINE;
	if (!o->broker)
		return OPTS_OK;
	if (o->mode == CHAT_MODE_FORK)
		return chat_bad(errout, prog, "%s",
		                "--broker runs in event mode only: "
		                "drop --mode fork");
	if (!o->listen)
		return chat_bad(errout, prog, "%s", "--broker needs --listen");
	if (o->keep_open)
		return chat_bad(errout, prog, "%s",
		                "-k is for the endpoint: the relay always "
		                "serves the next client");
	_Static_assert(CHAT_BROKER_SLACK == 128, "the message below says 128");
	if (o->max_pending < o->max_line + CHAT_BROKER_SLACK)
		return chat_bad(errout, prog, "%s",
		                "--max-pending must be at least --max-line "
		                "+ 128");
	return OPTS_OK;
}

enum opts_result chat_opts_parse(int argc, char **argv, struct chat_opts *o,
                                 FILE *out, FILE *errout)
{
	const char *prog = log_progname();
	const char *why;
	uint64_t secs;
	int c, is_fork, verbose = 0, quiet = 0;

	memset(o, 0, sizeof *o);
	o->mode = CHAT_MODE_EVENT;
	optind = 0; /* glibc: start afresh, so tests can parse repeatedly */
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":m:l:kvqhV", chat_longopts,
	                        NULL)) != -1) {
		switch (c) {
		case 'm':
			is_fork = opts_mode_fork(optarg);
			if (is_fork < 0)
				return chat_bad(
				        errout, prog,
				        "unknown mode '%s' (modes: " OPTS_MODES
				        ")",
				        optarg);
			o->mode = is_fork ? CHAT_MODE_FORK : CHAT_MODE_EVENT;
			break;
		case 'l':
			if (o->listen)
				return chat_bad(errout, prog, "%s",
				                "only one --listen");
			if (addr_parse(optarg, ADDR_LISTEN, &o->addr, &why) <
			    0) {
				fprintf(errout, "%s: bad --listen '%s': %s\n",
				        prog, optarg, why);
				fprintf(errout, chat_usage_text, prog, prog,
				        prog);
				return OPTS_USAGE;
			}
			o->listen = 1;
			break;
		case 'k':
			o->keep_open = 1;
			break;
		case OPT_BROKER:
			o->broker = 1;
			break;
		case OPT_MAX_PENDING:
			if (num_parse_size(optarg, 1, UINT64_C(1) << 40,
			                   &o->max_pending) < 0)
				return chat_bad(
				        errout, prog,
				        "bad --max-pending '%s' (bytes, "
				        "at least 1)",
				        optarg);
			break;
		case OPT_MAX_LINE:
			if (num_parse_size(optarg, 1, UINT64_C(1) << 30,
			                   &o->max_line) < 0)
				return chat_bad(errout, prog,
				                "bad --max-line '%s' (bytes, "
				                "1 to 1G)",
				                optarg);
			break;
		case OPT_KEEPALIVE:
			if (num_parse_u64(optarg, 1, SOCK_KEEPALIVE_MAX,
			                  &secs) < 0)
				return chat_bad(
				        errout, prog,
				        "bad --keepalive '%s' (seconds, "
				        "1 to 32767)",
				        optarg);
			o->keepalive = (unsigned)secs;
			break;
		case 'v':
			verbose = 1;
			break;
		case 'q':
			quiet = 1;
			break;
		case 'h':
			fprintf(out, chat_usage_text, prog, prog, prog);
			fputc('\n', out);
			fputs(chat_help_text, out);
			return OPTS_EXIT;
		case 'V':
			fprintf(out, "%s %s\n", prog, FORKLOOP_VERSION);
			return OPTS_EXIT;
		case ':':
			return chat_bad(errout, prog,
			                "option '%s' needs a value",
			                argv[optind - 1]);
		default:
			return chat_bad_option(errout, prog, argv);
		}
	}
	if (verbose && quiet)
		return chat_bad(errout, prog, "%s",
		                "-v and -q cannot be used together");
	o->log_level = verbose ? LOG_VERBOSE : quiet ? LOG_QUIET : LOG_NORMAL;
	if (chat_opts_broker(o, errout, prog) != OPTS_OK)
		return OPTS_USAGE;
	return chat_opts_addr(argc, argv, o, errout, prog);
}

void chat_sig_handler(int sig)
{
	int saved = errno;
	int fd = chat_sig_wake_fd;
	pid_t child = chat_sig_child;

	if (chat_sig_exit) {
		/* A child with nothing to clean up: die of sig on return. */
		signal(sig, SIG_DFL);
		raise(sig);
		errno = saved;
		return;
	}
	chat_sig_caught = sig;
	if (fd >= 0)
		shutdown(fd, SHUT_RDWR);
	if (child > 0)
		kill(child, sig);
	errno = saved;
}

void chat_sig_install(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof sa);
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = chat_sig_handler;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
}

int chat_sig_status(void)
{
	return 128 + chat_sig_caught;
}

void chat_sig_reraise(void)
{
	int sig = chat_sig_caught;
	sigset_t set;
	ssize_t n;

	if (sig != SIGINT && sig != SIGTERM)
		return;
	chat_stdio_restore();
	/* The terminal echoed ^C; end that line before the shell's prompt. */
	if (sig == SIGINT && isatty(STDERR_FILENO)) {
		n = write(STDERR_FILENO, "\n", 1);
		(void)n;
	}
	signal(sig, SIG_DFL);
	sigemptyset(&set);
	sigaddset(&set, sig);
	sigprocmask(SIG_UNBLOCK, &set, NULL);
	raise(sig);
}

void chat_stdio_restore(void)
{
	int fd;

	for (fd = 0; fd < 2; fd++) {
		if (chat_saved_flags[fd] >= 0)
			fcntl(fd, F_SETFL, (int)chat_saved_flags[fd]);
	}
}

static void chat_stdio_reapply(void)
{
	int fd;

	for (fd = 0; fd < 2; fd++) {
		if (chat_session_flags[fd] >= 0)
			fcntl(fd, F_SETFL, (int)chat_session_flags[fd]);
	}
}

/*
 * SIGTSTP, SIGTTIN or SIGTTOU: give the terminal its flags back, stop as the
 * default action would, and once continued (SIGCONT) set ours again. All of
 * it is async-signal-safe, as less(1) and vi(1) do it.
 */
static void chat_stop_handler(int sig)
{
	int saved = errno;
	struct sigaction dfl, old;
	sigset_t set;

	chat_stdio_restore();
	memset(&dfl, 0, sizeof dfl);
	sigemptyset(&dfl.sa_mask);
	dfl.sa_handler = SIG_DFL;
	sigaction(sig, &dfl, &old);
	sigemptyset(&set);
	sigaddset(&set, sig);
	raise(sig);
	/* Pending until now: the process stops here. */
	sigprocmask(SIG_UNBLOCK, &set, NULL);
	sigaction(sig, &old, NULL);
	chat_stdio_reapply();
	errno = saved;
}

void chat_stdio_save(void)
{
	static const int stops[] = {SIGTSTP, SIGTTIN, SIGTTOU};
	struct sigaction sa;
	size_t i;
	int fd;

	/* Read both first: 0 and 1 often share one open file description. */
	for (fd = 0; fd < 2; fd++)
		chat_saved_flags[fd] = fcntl(fd, F_GETFL);
	atexit(chat_stdio_restore);
	memset(&sa, 0, sizeof sa);
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = chat_stop_handler;
	sa.sa_flags = SA_RESTART;
	for (i = 0; i < sizeof stops / sizeof stops[0]; i++)
		sigaction(stops[i], &sa, NULL);
}

int chat_stdio_set_blocking(int fd, int blocking)
{
	int flags = fcntl(fd, F_GETFL);

	if (flags < 0)
		return -1;
	flags = blocking ? flags & ~O_NONBLOCK : flags | O_NONBLOCK;
	if (fcntl(fd, F_SETFL, flags) < 0)
		return -1;
	chat_session_flags[fd] = flags;
	return 0;
}

/* The connection's pending error (SO_ERROR), which reading clears. */
static int chat_sock_error(int fd)
{
	socklen_t len;
	int err = 0;

	len = sizeof err;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		return errno;
	return err;
}

/* TCP_CLOSE in the kernel's tcp_states.h: closed, or reset. */
#define CHAT_TCP_CLOSE 7

/*
 * tcpi_bytes_acked when the session started: it may count the SYN, and
 * chat_deliver counts from here.
 */
static uint64_t chat_acked_base;

/* Bytes of ours the peer's TCP acknowledged (tcp(7) TCP_INFO), or 0. */
static uint64_t chat_tcp_acked(int fd)
{
	struct tcp_info ti;
	socklen_t len = sizeof ti;

	memset(&ti, 0, sizeof ti);
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
		return 0;
	return ti.tcpi_bytes_acked;
}

static long chat_ms_since(const struct timespec *t0)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - t0->tv_sec) * 1000 +
	       (now.tv_nsec - t0->tv_nsec) / 1000000;
}

int chat_deliver(int fd, uint64_t sent, uint64_t unsent, int reset)
{
	struct tcp_info ti;
	struct timespec t0;
	socklen_t len;
	uint64_t acked, lost;
	int err;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		err = chat_sock_error(fd);
		if (err == ECONNRESET || err == EPIPE)
			reset = 1;
		memset(&ti, 0, sizeof ti);
		len = sizeof ti;
		if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0) {
			log_error("cannot tell what the peer received: %s",
			          strerror(errno));
			return 1;
		}
		/* Our FIN counts as one more byte once acknowledged. */
		acked = ti.tcpi_bytes_acked > chat_acked_base
		                ? ti.tcpi_bytes_acked - chat_acked_base
		                : 0;
		/* Closed with data unacknowledged: a reset already read. */
		if (ti.tcpi_state == CHAT_TCP_CLOSE && acked < sent)
			reset = 1;
		if (reset || acked >= sent || chat_sig_caught ||
		    chat_ms_since(&t0) >= CHAT_LINGER_MS)
			break;
		poll(NULL, 0, 5);
	}
	if (chat_sig_caught)
		return chat_sig_status();
	lost = unsent + (acked >= sent ? 0 : sent - acked);
	if (reset && lost > 0)
		log_error("peer reset the connection: %llu bytes not delivered",
		          (unsigned long long)lost);
	else if (reset)
		log_error("peer reset the connection");
	else if (lost > 0)
		log_error("%llu bytes not delivered to the peer",
		          (unsigned long long)lost);
	else
		return 0;
	return CHAT_UNDELIVERED;
}

int chat_listen(const struct chat_opts *o, struct chat_listeners *l)
{
	char err[512], name[ADDR_STRLEN];
	int n;
	size_t i;

	l->n = 0;
	n = listener_bind(&o->addr, SOCK_STREAM, l->fd, CHAT_MAX_LISTEN, err,
	                  sizeof err);
	if (n < 0) {
		log_error("%s", err);
		return -1;
	}
	l->n = (size_t)n;
	for (i = 0; i < l->n; i++)
		log_info("listening on %s",
		         listener_local_name(l->fd[i], name, sizeof name));
	return 0;
}

void chat_listen_close(struct chat_listeners *l)
{
	size_t i;

	if (l == NULL)
		return;
	for (i = 0; i < l->n; i++)
		close(l->fd[i]);
	l->n = 0;
}

/*
 * Accept one connection queued on a ready socket of l; -1 with errno EAGAIN
 * when another process, or a peer that gave up, left nothing to take.
 */
static int chat_accept_ready(const struct chat_listeners *l,
                             const struct pollfd *pfd, struct sockaddr *sa,
                             socklen_t *len, size_t *which)
{
	size_t i;
	int fd;

	for (i = 0; i < l->n; i++) {
		if (pfd[i].revents == 0)
			continue;
		*which = i;
		fd = accept4(l->fd[i], sa, len, SOCK_CLOEXEC);
		if (fd >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK &&
		                errno != ECONNABORTED && errno != EINTR))
			return fd;
	}
	errno = EAGAIN;
	return -1;
}

int chat_accept(const struct chat_listeners *l)
{
	struct pollfd pfd[CHAT_MAX_LISTEN];
	struct sockaddr_storage ss;
	char name[ADDR_STRLEN];
	sigset_t stop, old;
	socklen_t len;
	size_t i, which = 0;
	int fd = -1, r;

	for (i = 0; i < l->n; i++) {
		pfd[i].fd = l->fd[i];
		pfd[i].events = POLLIN;
	}
	/* Blocked but for the wait itself: the flag is tested, then ppoll
	 * unblocks and waits in one step (ppoll(2), the race it closes). */
	sigemptyset(&stop);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGTERM);
	sigprocmask(SIG_BLOCK, &stop, &old);
	while (!chat_sig_caught) {
		r = ppoll(pfd, (nfds_t)l->n, NULL, &old);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			log_error("cannot wait for a peer: %s", strerror(errno));
			break;
		}
		len = sizeof ss;
		fd = chat_accept_ready(l, pfd, (struct sockaddr *)&ss, &len,
		                       &which);
		if (fd >= 0)
			break;
		if (errno == EAGAIN)
			continue;
		log_error("cannot accept on %s: %s",
		          listener_local_name(l->fd[which], name, sizeof name),
		          strerror(errno));
		break;
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (fd >= 0 && chat_sig_caught) {
		close(fd);
		fd = -1;
	}
	if (fd >= 0) {
		sock_nodelay(fd);
		log_info("connected to %s",
		         addr_format((struct sockaddr *)&ss, len, name,
		                     sizeof name));
	}
	return fd;
}

/* A blocking connect; returns the socket or -1 with errno set. */
static int chat_connect_one(const struct evutil_addrinfo *ai)
{
	int fd, saved;

	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, ai->ai_protocol);
	if (fd < 0)
		return -1;
	chat_sig_wake_fd = fd;
	if (!chat_sig_caught && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
	    !chat_sig_caught) {
		chat_sig_wake_fd = -1;
		return fd;
	}
	saved = chat_sig_caught ? EINTR : errno;
	chat_sig_wake_fd = -1;
	close(fd);
	errno = saved;
	return -1;
}

int chat_connect(const struct chat_opts *o)
{
	struct evutil_addrinfo *res, *ai;
	char name[ADDR_STRLEN];
	int fd = -1, gai_err;

	res = addr_resolve(&o->addr, SOCK_STREAM, 0, &gai_err);
	if (res == NULL) {
		log_error("cannot resolve %s: %s", o->addr.host,
		          addr_strerror(gai_err));
		return -1;
	}
	for (ai = res; ai != NULL && !chat_sig_caught; ai = ai->ai_next) {
		addr_format(ai->ai_addr, ai->ai_addrlen, name, sizeof name);
		fd = chat_connect_one(ai);
		if (fd >= 0 || chat_sig_caught)
			break;
		if (ai->ai_next != NULL)
			log_verbose("cannot connect to %s: %s", name,
			            strerror(errno));
		else
			log_error("cannot connect to %s: %s", name,
			          strerror(errno));
	}
	evutil_freeaddrinfo(res);
	if (fd >= 0) {
		sock_nodelay(fd);
		log_info("connected to %s", name);
	}
	return fd;
}

static int chat_session(const struct chat_opts *o, int fd,
                        const struct chat_listeners *l)
{
	if (o->keepalive > 0 && sock_keepalive(fd, o->keepalive) < 0) {
		log_error("cannot turn on TCP keepalive: %s", strerror(errno));
		close(fd);
		return 1;
	}
	chat_acked_base = chat_tcp_acked(fd);
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
