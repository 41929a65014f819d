/*
 * echo_opts.c - forkloop-echo's command line, and what both designs share:
 * mode names, the statistics line, the signals that only log, and the log
 * lines a flood could repeat (refusals, paused accepts).
 */
#include <errno.h>
#include <getopt.h>
#include <sched.h>
#include <inttypes.h>
#include <signal.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "forkloop/admit.h"
#include "forkloop/echo.h"
#include "forkloop/num.h"
#include "forkloop/sock.h"
#include "forkloop/udp.h"

static const char echo_usage_text[] =
        "usage: %s [-qvhV] [-m event|fork] [-l [tls://][ADDR:]PORT]...\n"
        "       [-l unix:/PATH | -l unix:@NAME]... [--unix-mode MODE]\n"
        "       [--max-pending BYTES] [--max-conns N] [--idle-timeout "
        "SECONDS]\n"
        "       [--drain-timeout SECONDS] [--keepalive SECONDS]\n"
        "       [--threads N|auto] [--cpu-affinity] [--udp | --udp-only] "
        "[--udp-rate N]\n"
        "       [--tls-cert FILE --tls-key FILE] "
        "[--tls-handshake-timeout SECONDS]\n"
        "       [--tls-verify-client CAFILE] [--metrics [ADDR:]PORT]\n"
        ADMIT_USAGE;

static const char echo_help_text[] =
        "Echo every byte each client sends back to it, in order (RFC 862).\n"
        "\n"
        "  -m, --mode MODE          event: one process, one libevent loop "
        "(default);\n"
        "                           fork: one child process per connection\n"
        "  -l, --listen [tls://][ADDR:]PORT\n"
        "                           listen here; repeatable; a PORT alone "
        "listens\n"
        "                           on every address, IPv6 and IPv4; "
        "[IPv6]:PORT\n"
        "                           and host names work ([::] takes IPv4 "
        "too\n"
        "                           unless 0.0.0.0 is also given); port 0 "
        "picks a\n"
        "                           free port\n"
        "                           (default " ECHO_DEFAULT_LISTEN "); tls:// "
        "serves TLS\n"
        "      --max-pending BYTES  stop reading a client whose unsent echo "
        "passes\n"
        "                           BYTES, resume once it drains; K, M, G "
        "suffixes\n"
        "                           (default 256K)\n"
        "      --max-conns N        close connections past N at once (default: "
        "no\n"
        "                           limit)\n"
        "      --idle-timeout SECONDS\n"
        "                           close a connection on which no byte "
        "moved either\n"
        "                           way for this long (default: never)\n"
        "      --keepalive SECONDS  TCP keepalive: probe a peer silent for "
        "SECONDS\n"
        "                           (1-32767), up to 3 probes SECONDS/3 "
        "apart; drop\n"
        "                           it if none is answered (default: off)\n"
        "      --drain-timeout SECONDS\n"
        "                           on SIGINT/SIGTERM, give connections this "
        "long to\n"
        "                           receive what they are owed (default 5)\n"
        "      --threads N|auto     event mode: N event loops, one per "
        "thread; the\n"
        "                           first accepts and hands each connection "
        "to the\n"
        "                           loop with the fewest open (1 to 256; "
        "auto: the\n"
        "                           CPUs this process may use; default 1); "
        "UDP\n"
        "                           stays on the first\n"
        "      --cpu-affinity       event mode: pin loop i to the i-th CPU "
        "this\n"
        "                           process may use\n"
        "      --udp                also echo UDP datagrams on the same "
        "addresses\n"
        "      --udp-only           echo UDP datagrams only, no TCP\n"
        "      --udp-rate N         answer at most N datagrams in any second "
        "per\n"
        "                           source address (default 100; 0: no "
        "limit)\n"
        "      --tls-cert FILE      PEM certificate chain for the tls:// "
        "listeners\n"
        "      --tls-key FILE       PEM private key for --tls-cert\n"
        "      --tls-handshake-timeout SECONDS\n"
        "                           close a TLS client whose handshake has "
        "not\n"
        "                           finished by then (default 10)\n"
        "      --tls-verify-client CAFILE\n"
        "                           mutual TLS: refuse a client without a "
        "certificate\n"
        "                           from the CAs in this PEM file; -v logs "
        "why\n"
        "                           (reason=tls_handshake error=...)\n"
        "  -v, --verbose            log every connection\n"
        "  -q, --quiet              log errors only\n"
        "  -h, --help               show this help and exit\n"
        "  -V, --version            show the version and exit\n"
        "\n"
        "Prints 'listening on ADDR:PORT' on standard error for each socket "
        "once\n"
        "ready. SIGUSR1 logs a statistics line. Exit status: 0 after SIGINT "
        "or\n"
        "SIGTERM, 1 on a runtime error, 2 on bad usage.\n"
        "\n"
        "A tls:// listener needs --tls-cert and --tls-key, and those and\n"
        "--tls-verify-client need one; TLS 1.2 is the lowest version "
        "served.\n"
        "SIGHUP reloads the certificate, key and CA file for new "
        "connections (a\n"
        "bad set is logged, the old one kept). --udp serves UDP beside the "
        "plain\n"
        "listeners only; --udp-only takes no tls://. Mutual TLS, with a "
        "client\n"
        "certificate made by the CA in ca.pem:\n"
        "\n"
        "  forkloop-echo -l tls://127.0.0.1:7443 --tls-cert cert.pem "
        "--tls-key key.pem \\\n"
        "          --tls-verify-client ca.pem\n"
        "  openssl s_client -connect 127.0.0.1:7443 -cert client.pem "
        "-key client.key\n"
        "\n"
        "Datagrams from ports below 1024, from addresses that are not "
        "unicast, or\n"
        "from any address and port the server receives on get no reply. "
        "--udp-rate\n"
        "needs --udp or --udp-only, except under socket activation; TCP "
        "options\n"
        "do not go with --udp-only. Started by systemd "
        "socket\n"
        "activation (LISTEN_FDS), it serves the sockets it is given instead "
        "of\n"
        "--listen, stream and datagram alike.\n";

/* After echo_help_text, which a C compiler need not take longer. */
static const char echo_help_unix[] =
        "\n"
        "Unix sockets:\n"
        "\n"
        "  -l, --listen unix:/PATH  a Unix socket file; unix:@NAME: an "
        "abstract\n"
        "                           name (Linux, no file)\n"
        "      --unix-mode MODE     the unix:/PATH socket files' "
        "permissions, octal\n"
        "                           (0660); default: what the umask "
        "leaves\n"
        "\n"
        "A path or name has at most 107 bytes (unix(7)). A socket file "
        "left by a\n"
        "daemon that is gone is replaced; one a daemon still serves is "
        "an\n"
        "error (address in use), as is a path that is not a socket. The "
        "file is\n"
        "removed when the daemon exits (never by a fork mode child). TCP "
        "options\n"
        "(--keepalive) do not apply to Unix connections; -v names their "
        "peers by\n"
        "uid and pid. No TLS or UDP on Unix sockets.\n";

/* After echo_help_unix: the metrics endpoint and the service manager. */
static const char echo_help_metrics[] =
        "\n"
        "Metrics and the service manager:\n"
        "\n"
        "      --metrics [ADDR:]PORT\n"
        "                           serve HTTP there: /metrics (Prometheus "
        "text\n"
        "                           format) and /healthz (ok; 503 once "
        "draining);\n"
        "                           a PORT alone is every address, port 0 "
        "picks\n"
        "                           one; the access lists apply (default: "
        "off)\n"
        "\n"
        "It prints 'metrics on http://ADDR:PORT/metrics' once listening. "
        "Started\n"
        "with NOTIFY_SOCKET (systemd Type=notify), the daemon sends "
        "READY=1,\n"
        "STATUS= every 5 s, STOPPING=1 when a drain starts and, with "
        "WatchdogSec=,\n"
        "WATCHDOG=1 from its event loop at half that period.\n";

/* After echo_help_unix: what is logged, and how. */
static const char echo_help_logs[] =
        "\n"
        "Logs: -v lines are key=value pairs (event=open, event=close, "
        "event=refused)\n"
        "with the time (UTC); -q keeps errors and the SIGUSR1 line only. "
        "The\n"
        "statistics line is logged once more, as the last line, on exit. "
        "On a\n"
        "journal stream (JOURNAL_STREAM) each line starts with its syslog "
        "priority\n"
        "(<3> error, <4> warning, <6> information, <7> -v) instead of the "
        "program's\n"
        "name and the time. SIGHUP never ends the daemon.\n";

/* Before admit_help_text's rows: what they apply to here. */
static const char echo_help_admit[] =
        "\n"
        "Who may connect (refused connections are closed before any byte "
        "is read;\n"
        "--allow and --deny also apply to UDP, whose refused datagrams get "
        "no reply;\n"
        "the limits are for connections, TCP or Unix):\n"
        "\n";

enum {
	OPT_MAX_PENDING = 256,
	OPT_MAX_CONNS,
	OPT_IDLE_TIMEOUT,
	OPT_DRAIN_TIMEOUT,
	OPT_KEEPALIVE,
	OPT_UDP,
	OPT_UDP_ONLY,
	OPT_UDP_RATE,
	OPT_THREADS,
	OPT_CPU_AFFINITY,
	OPT_TLS_CERT,
	OPT_TLS_KEY,
	OPT_TLS_HANDSHAKE,
	OPT_TLS_VERIFY_CLIENT,
	OPT_UNIX_MODE,
	OPT_METRICS,
};

static const struct option echo_longopts[] = {
        {"mode", required_argument, NULL, 'm'},
        {"listen", required_argument, NULL, 'l'},
        {"max-pending", required_argument, NULL, OPT_MAX_PENDING},
        {"max-conns", required_argument, NULL, OPT_MAX_CONNS},
        {"idle-timeout", required_argument, NULL, OPT_IDLE_TIMEOUT},
        {"drain-timeout", required_argument, NULL, OPT_DRAIN_TIMEOUT},
        {"keepalive", required_argument, NULL, OPT_KEEPALIVE},
        {"udp", no_argument, NULL, OPT_UDP},
        {"udp-only", no_argument, NULL, OPT_UDP_ONLY},
        {"udp-rate", required_argument, NULL, OPT_UDP_RATE},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"cpu-affinity", no_argument, NULL, OPT_CPU_AFFINITY},
        {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
        {"tls-key", required_argument, NULL, OPT_TLS_KEY},
        {"tls-handshake-timeout", required_argument, NULL, OPT_TLS_HANDSHAKE},
        {"tls-verify-client", required_argument, NULL, OPT_TLS_VERIFY_CLIENT},
        {"unix-mode", required_argument, NULL, OPT_UNIX_MODE},
        {"metrics", required_argument, NULL, OPT_METRICS},
        ADMIT_LONGOPTS,
        {"verbose", no_argument, NULL, 'v'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
};

const char *echo_mode_name(enum echo_mode m)
{
	return m == ECHO_MODE_FORK ? "fork" : "event";
}

/*
 * The UDP and admission counters go last, and only when served or given,
 * so that the line of a daemon without them is what it always was.
 */
void echo_stats_log(const struct echo_stats *s, int final)
{
	char udp[96] = "", admit[160] = "", line[512];
	size_t n = 0;

	if (s->udp)
		snprintf(udp, sizeof udp,
		         " udp_in=%" PRIu64 " udp_out=%" PRIu64
		         " udp_dropped=%" PRIu64,
		         s->udp_in, s->udp_out, s->udp_dropped);
	for (int i = ADMIT_OK + 1; s->admit && i < ADMIT_NWHY; i++)
		n += (size_t)snprintf(admit + n, sizeof admit - n,
		                      " %s=%" PRIu64,
		                      admit_why_name((enum admit_why)i),
		                      s->admit_refused[i]);
	snprintf(line, sizeof line,
	         "stats: open=%" PRIu64 " accepted=%" PRIu64
	         " refused=%" PRIu64 " bytes_in=%" PRIu64
	         " bytes_out=%" PRIu64 "%s%s",
	         s->open, s->accepted, s->refused, s->bytes_in, s->bytes_out,
	         udp, admit);
	/* The final line is information like any other; SIGUSR1's was asked
	 * for, so -q does not hold it back. */
	if (final)
		log_info("%s", line);
	else
		log_report("%s", line);
}

const int echo_ignored_signals[ECHO_NIGNORED_SIGNALS] = {
        SIGHUP, SIGUSR2, SIGALRM, SIGVTALRM, SIGPROF,
        SIGIO,  SIGPWR,  SIGXFSZ, SIGSTKFLT,
};

void echo_signals_ignore(void)
{
	signal(SIGPIPE, SIG_IGN);
	for (int sig = SIGRTMIN; sig <= SIGRTMAX; sig++)
		signal(sig, SIG_IGN);
	/* Until the event loop's handlers take over: a SIGHUP during the
	 * set-up (certificates, binding) must not end the daemon either. */
	for (size_t i = 0; i < ECHO_NIGNORED_SIGNALS; i++)
		signal(echo_ignored_signals[i], SIG_IGN);
}

void echo_signal_log(int sig)
{
	if (sig == SIGHUP)
		log_info("SIGHUP: nothing to reload (every setting comes from "
		         "the command line); still serving");
	else
		log_info("SIG%s ignored", sigabbrev_np(sig));
}

int echo_loglimit_pass(struct echo_loglimit *l, int64_t now_ms,
                       uint64_t *held)
{
	if (l->n == ECHO_LOG_PER_SEC && now_ms - l->t[l->next] < 1000) {
		l->held++;
		return 0;
	}
	l->t[l->next] = now_ms;
	l->next = (l->next + 1) % ECHO_LOG_PER_SEC;
	if (l->n < ECHO_LOG_PER_SEC)
		l->n++;
	*held = l->held;
	l->held = 0;
	return 1;
}

static double echo_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void echo_refused_log(struct echo_loglimit *l, const char *peer,
                      uint64_t open, uint64_t max)
{
	struct log_kv kv;
	uint64_t held;

	if (log_get_level() < LOG_VERBOSE ||
	    !echo_loglimit_pass(l, (int64_t)(echo_now() * 1000), &held))
		return;
	log_kv_start(&kv, "refused");
	log_kv_str(&kv, "peer", peer);
	log_kv_str(&kv, "reason", "max_conns");
	log_kv_u64(&kv, "open", open);
	log_kv_u64(&kv, "max_conns", max);
	if (held > 0)
		log_kv_u64(&kv, "not_logged", held);
	log_verbose("%s", kv.buf);
}

int echo_accept_burst(unsigned *burst, struct event *resume)
{
	static const struct timeval now = {0, 0};

	if (++*burst < ECHO_ACCEPT_BURST)
		return 0;
	*burst = 0;
	/* Without the timer nothing would turn the listeners on again. */
	if (evtimer_add(resume, &now) < 0)
		return 0;
	return 1;
}

void echo_pause_note(struct echo_pause *p, const char *what, int err)
{
	if (p->on) {
		p->waits++;
		return;
	}
	p->on = 1;
	p->since = echo_now();
	p->waits = 1;
	p->logged = p->last == 0 ||
	            p->since - p->last >= ECHO_PAUSE_LOG_INTERVAL;
	if (!p->logged) {
		p->held++;
		return;
	}
	p->last = p->since;
	if (p->held == 0)
		log_warn("%s: %s; pausing accepts", what, strerror(err));
	else
		log_warn("%s: %s; pausing accepts (%" PRIu64
		         " more not logged)",
		         what, strerror(err), p->held);
	p->held = 0;
}

void echo_pause_over(struct echo_pause *p)
{
	if (!p->on)
		return;
	p->on = 0;
	if (!p->logged)
		return;
	log_info("accepting again after %.1f s; %" PRIu64 " attempts waited",
	         echo_now() - p->since, p->waits);
}

static enum opts_result echo_bad(FILE *errout, const char *prog,
                                 const char *fmt, const char *arg)
{
	fprintf(errout, "%s: ", prog);
	fprintf(errout, fmt, arg);
	fputc('\n', errout);
	fprintf(errout, echo_usage_text, prog);
	return OPTS_USAGE;
}

static void echo_opts_defaults(struct echo_opts *o)
{
	memset(o, 0, sizeof *o);
	o->mode = ECHO_MODE_EVENT;
	o->max_pending = ECHO_DEFAULT_MAX_PENDING;
	o->drain_timeout = ECHO_DEFAULT_DRAIN;
	o->log_level = LOG_NORMAL;
	o->udp_rate = UDP_DEFAULT_RATE;
	o->threads = 1;
	o->tls_handshake = ECHO_DEFAULT_TLS_HANDSHAKE;
	o->admit = admit_new();
}

/* The options only TCP connections use, by getopt_long's value. */
static const char *echo_tcp_option(int c)
{
	switch (c) {
	case OPT_MAX_PENDING:
		return "--max-pending";
	case OPT_MAX_CONNS:
		return "--max-conns";
	case OPT_IDLE_TIMEOUT:
		return "--idle-timeout";
	case OPT_DRAIN_TIMEOUT:
		return "--drain-timeout";
	case OPT_KEEPALIVE:
		return "--keepalive";
	case OPT_THREADS:
		return "--threads";
	case OPT_TLS_CERT:
		return "--tls-cert";
	case OPT_TLS_KEY:
		return "--tls-key";
	case OPT_TLS_HANDSHAKE:
		return "--tls-handshake-timeout";
	case OPT_TLS_VERIFY_CLIENT:
		return "--tls-verify-client";
	/* Per-source limits count connections; access lists take both. */
	case ADMIT_OPT_PER_SOURCE:
		return "--max-conns-per-source";
	case ADMIT_OPT_RATE:
		return "--accept-rate";
	case ADMIT_OPT_BURST:
		return "--accept-burst";
	case ADMIT_OPT_TABLE:
		return "--source-table";
	case ADMIT_OPT_PREFIX6:
		return "--source-prefix6";
	}
	return NULL;
}

unsigned echo_cpus_allowed(void)
{
	cpu_set_t set;
	int n;

	if (sched_getaffinity(0, sizeof set, &set) < 0)
		return 1;
	n = CPU_COUNT(&set);
	return n > 0 ? (unsigned)n : 1;
}

/* --threads N|auto; -1 if arg is neither. */
static int echo_parse_threads(const char *arg, unsigned *threads)
{
	uint64_t v;

	if (strcmp(arg, "auto") == 0) {
		v = echo_cpus_allowed();
		*threads = v > ECHO_MAX_THREADS ? ECHO_MAX_THREADS : (unsigned)v;
		return 0;
	}
	if (num_parse_u64(arg, 1, ECHO_MAX_THREADS, &v) < 0)
		return -1;
	*threads = (unsigned)v;
	return 0;
}

/* Started by socket activation: LISTEN_PID is ours (sd_listen_fds(3))? */
static int echo_activated(void)
{
	const char *pid = getenv("LISTEN_PID");
	uint64_t v;

	return pid != NULL && getenv("LISTEN_FDS") != NULL &&
	       num_parse_u64(pid, 1, UINT32_MAX, &v) == 0 &&
	       v == (uint64_t)getpid();
}

/*
 * What the UDP options leave undone: --udp beside --udp-only; --udp-rate
 * with no datagram socket (socket activation may pass some, whatever --udp
 * says); a TCP option (tcp_opt) with --udp-only. NULL if nothing.
 */
static const char *echo_udp_conflict(const struct echo_opts *o, int udp_both,
                                     int rate_given, const char *tcp_opt,
                                     char *buf, size_t len)
{
	if (udp_both)
		return "--udp and --udp-only cannot be used together";
	if (rate_given && o->udp == ECHO_UDP_OFF && !echo_activated())
		return "--udp-rate needs --udp or --udp-only";
	if (tcp_opt != NULL && o->udp == ECHO_UDP_ONLY) {
		snprintf(buf, len,
		         "%s applies to TCP connections: not with --udp-only",
		         tcp_opt);
		return buf;
	}
	return NULL;
}

/*
 * What Unix listeners leave undone: --udp-only (datagrams are not served on
 * them), --udp with no IP listener to serve it beside, --unix-mode (mode,
 * -1 if not given) without a unix:/PATH listener or with an abstract name,
 * which has no file, --allow-uid with no Unix socket to apply to. Gives
 * every Unix listener the mode. NULL if nothing.
 */
static const char *echo_unix_conflict(struct echo_opts *o, int mode)
{
	size_t i, nunix = 0, nfile = 0, nplain = 0;

	for (i = 0; i < o->nlisten; i++) {
		nunix += o->listen[i].is_unix ? 1 : 0;
		nfile += o->listen[i].is_unix && !addr_is_abstract(&o->listen[i]);
		nplain += !o->listen[i].is_unix && !o->listen[i].tls;
		o->listen[i].unix_mode = mode;
	}
	if (nunix > 0 && o->udp == ECHO_UDP_ONLY)
		return "unix: listeners are stream sockets: not with --udp-only";
	if (nunix > 0 && o->udp == ECHO_UDP_ON && nplain == 0)
		return "--udp is served beside plain IP listeners only, and "
		       "there is none";
	if (mode >= 0 && nfile < nunix)
		return "--unix-mode is for socket files: unix:@NAME has none";
	if (mode >= 0 && nfile == 0)
		return "--unix-mode needs a unix:/PATH --listen";
	/* Socket activation may pass Unix sockets, whatever --listen says. */
	if (admit_has_uids(o->admit) && nunix == 0 && !echo_activated())
		return "--allow-uid is for unix: listeners, and there is none";
	return NULL;
}

/*
 * What the TLS options leave undone: a tls:// listener without both files,
 * a file (certificate, key, CA) or --tls-handshake-timeout (handshake_given)
 * without a tls:// listener, tls:// with --udp-only, --udp with no plain
 * listener to serve it beside. Sets o->tls. NULL if nothing.
 */
static const char *echo_tls_conflict(struct echo_opts *o, int handshake_given)
{
	size_t i, ntls = 0;

	for (i = 0; i < o->nlisten; i++)
		ntls += o->listen[i].tls ? 1 : 0;
	o->tls = ntls > 0;
	if (o->tls && o->udp == ECHO_UDP_ONLY)
		return "tls:// is for TCP listeners: not with --udp-only";
	if (o->tls && o->udp == ECHO_UDP_ON && ntls == o->nlisten)
		return "--udp is served beside plain listeners only, and every "
		       "--listen is tls://";
	if (o->tls && (o->tls_cert == NULL || o->tls_key == NULL))
		return "a tls:// listener needs --tls-cert and --tls-key";
	if (!o->tls && (o->tls_cert != NULL || o->tls_key != NULL ||
	                o->tls_verify_client != NULL || handshake_given))
		return "--tls-cert, --tls-key, --tls-handshake-timeout and "
		       "--tls-verify-client need a tls:// --listen";
	return NULL;
}

/* echo_opts_parse, leaving o->admit to it. */
static enum opts_result echo_opts_read(int argc, char **argv,
                                       struct echo_opts *o, FILE *out,
                                       FILE *errout)
{
	const char *prog = log_progname();
	const char *why;
	int c, is_fork, verbose = 0, quiet = 0;
	uint64_t ka;
	char opt[3];
	const char *tcp_opt = NULL, *udp_why;
	int unix_mode = -1;
	int udp_seen = 0, rate_given = 0, threads_given = 0, tls_given = 0;
	char udp_buf[128], err[512];

	echo_opts_defaults(o);
	if (o->admit == NULL)
		return echo_bad(errout, prog, "%s", strerror(ENOMEM));
	optind = 0; /* glibc: start afresh, so tests can parse repeatedly */
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":m:l:vqhV", echo_longopts,
	                        NULL)) != -1) {
		if (echo_tcp_option(c) != NULL)
			tcp_opt = echo_tcp_option(c);
		switch (c) {
		case 'm':
			is_fork = opts_mode_fork(optarg);
			if (is_fork < 0)
				return echo_bad(
				        errout, prog,
				        "unknown mode '%s' (modes: " OPTS_MODES
				        ")",
				        optarg);
			o->mode = is_fork ? ECHO_MODE_FORK : ECHO_MODE_EVENT;
			break;
		case 'l':
			if (o->nlisten == ECHO_MAX_LISTEN)
				return echo_bad(errout, prog,
				                "too many --listen (at most "
				                "%s)",
				                "16");
			if (addr_parse(optarg,
			               ADDR_LISTEN | ADDR_TLS | ADDR_UNIX,
			               &o->listen[o->nlisten],
			               &why) < 0) {
				fprintf(errout, "%s: bad --listen '%s': %s\n",
				        prog, optarg, why);
				fprintf(errout, echo_usage_text, prog);
				return OPTS_USAGE;
			}
			o->nlisten++;
			break;
		case OPT_MAX_PENDING:
			if (num_parse_size(optarg, 1, UINT64_C(1) << 40,
			                   &o->max_pending) < 0)
				return echo_bad(errout, prog,
				                "bad --max-pending '%s' "
				                "(bytes, 1 to 1024G)",
				                optarg);
			break;
		case OPT_MAX_CONNS:
			if (num_parse_u64(optarg, 1, UINT32_MAX,
			                  &o->max_conns) < 0)
				return echo_bad(errout, prog,
				                "bad --max-conns '%s' (a "
				                "number, 1 to 4294967295)",
				                optarg);
			break;
		case OPT_IDLE_TIMEOUT:
			if (num_parse_seconds(optarg, 0, 1e7,
			                      &o->idle_timeout) < 0)
				return echo_bad(errout, prog,
				                "bad --idle-timeout '%s' "
				                "(seconds, 0 to 10000000; 0: "
				                "never)",
				                optarg);
			break;
		case OPT_DRAIN_TIMEOUT:
			if (num_parse_seconds(optarg, 0, 1e7,
			                      &o->drain_timeout) < 0)
				return echo_bad(errout, prog,
				                "bad --drain-timeout '%s' "
				                "(seconds, 0 to 10000000)",
				                optarg);
			break;
		case OPT_KEEPALIVE:
			if (num_parse_u64(optarg, 1, SOCK_KEEPALIVE_MAX, &ka) <
			    0)
				return echo_bad(errout, prog,
				                "bad --keepalive '%s' (whole "
				                "seconds, 1 to 32767)",
				                optarg);
			o->keepalive = (unsigned)ka;
			break;
		case OPT_UDP:
			udp_seen |= 1;
			if (o->udp != ECHO_UDP_ONLY)
				o->udp = ECHO_UDP_ON;
			break;
		case OPT_UDP_ONLY:
			udp_seen |= 2;
			o->udp = ECHO_UDP_ONLY;
			break;
		case OPT_UDP_RATE:
			if (num_parse_u64(optarg, 0, UINT32_MAX, &o->udp_rate) <
			    0)
				return echo_bad(
				        errout, prog,
				        "bad --udp-rate '%s' (datagrams "
				        "per second, 0 to 4294967295; 0: "
				        "no limit)",
				        optarg);
			rate_given = 1;
			break;
		case OPT_THREADS:
			if (echo_parse_threads(optarg, &o->threads) < 0)
				return echo_bad(errout, prog,
				                "bad --threads '%s' (1 to 256, "
				                "or auto)",
				                optarg);
			threads_given = 1;
			break;
		case OPT_CPU_AFFINITY:
			o->cpu_affinity = 1;
			break;
		case OPT_METRICS:
			if (addr_parse(optarg, ADDR_LISTEN, &o->metrics,
			               &why) < 0) {
				fprintf(errout, "%s: bad --metrics '%s': %s\n",
				        prog, optarg, why);
				fprintf(errout, echo_usage_text, prog);
				return OPTS_USAGE;
			}
			o->metrics_on = 1;
			break;
		case OPT_UNIX_MODE:
			if (addr_unix_mode_parse(optarg, &unix_mode) < 0)
				return echo_bad(errout, prog,
				                "bad --unix-mode '%s' (octal "
				                "permissions, 0 to 0777)",
				                optarg);
			break;
		case OPT_TLS_CERT:
			o->tls_cert = optarg;
			break;
		case OPT_TLS_KEY:
			o->tls_key = optarg;
			break;
		case OPT_TLS_VERIFY_CLIENT:
			o->tls_verify_client = optarg;
			break;
		case OPT_TLS_HANDSHAKE:
			if (num_parse_seconds(optarg, 0.001, 1e7,
			                      &o->tls_handshake) < 0)
				return echo_bad(errout, prog,
				                "bad --tls-handshake-timeout "
				                "'%s' (seconds, 0.001 to "
				                "10000000)",
				                optarg);
			tls_given = 1;
			break;
		case 'v':
			verbose = 1;
			break;
		case 'q':
			quiet = 1;
			break;
		case 'h':
			fprintf(out, echo_usage_text, prog);
			fputc('\n', out);
			fputs(echo_help_text, out);
			fputs(echo_help_unix, out);
			fputs(echo_help_logs, out);
			fputs(echo_help_metrics, out);
			fputs(echo_help_admit, out);
			fputs(admit_help_text, out);
			return OPTS_EXIT;
		case 'V':
			fprintf(out, "%s %s\n", prog, FORKLOOP_VERSION);
			return OPTS_EXIT;
		case ':':
			return echo_bad(errout, prog,
			                "option '%s' needs a value",
			                argv[optind - 1]);
		default:
			if (c >= ADMIT_OPT_BASE) {
				if (admit_option(o->admit, c, optarg, err,
				                 sizeof err) < 0)
					return echo_bad(errout, prog, "%s",
					                err);
				break;
			}
			return echo_bad(errout, prog, "unknown option '%s'",
			                opts_refused(argv, opt));
		}
	}
	if (optind < argc)
		return echo_bad(errout, prog, "unexpected argument '%s'",
		                argv[optind]);
	if (verbose && quiet)
		return echo_bad(errout, prog, "%s",
		                "-v and -q cannot be used together");
	/* TLS first: tls:// with --udp-only is named as such, not by
	 * whichever --tls-* option came first. */
	why = echo_tls_conflict(o, tls_given);
	if (why != NULL)
		return echo_bad(errout, prog, "%s", why);
	udp_why = echo_udp_conflict(o, udp_seen == 3, rate_given, tcp_opt,
	                            udp_buf, sizeof udp_buf);
	if (udp_why != NULL)
		return echo_bad(errout, prog, "%s", udp_why);
	why = echo_unix_conflict(o, unix_mode);
	if (why != NULL)
		return echo_bad(errout, prog, "%s", why);
	/* Fork mode is one process per connection, on every CPU already. */
	if (o->mode == ECHO_MODE_FORK && threads_given)
		return echo_bad(errout, prog, "%s",
		                "--threads is for event mode: fork mode "
		                "already serves each connection in a process "
		                "of its own");
	if (o->mode == ECHO_MODE_FORK && o->cpu_affinity)
		return echo_bad(errout, prog, "%s",
		                "--cpu-affinity is for event mode's threads");
	o->log_level = verbose ? LOG_VERBOSE : quiet ? LOG_QUIET : LOG_NORMAL;
	if (o->nlisten == 0) {
		addr_parse(ECHO_DEFAULT_LISTEN, ADDR_LISTEN, &o->listen[0],
		           &why);
		o->nlisten = 1;
	}
	addr_dual_stack(o->listen, o->nlisten);
	err[0] = '\0';
	if (admit_finish(o->admit, err, sizeof err) < 0)
		return echo_bad(errout, prog, "%s",
		                err[0] != '\0' ? err : strerror(ENOMEM));
	return OPTS_OK;
}

enum opts_result echo_opts_parse(int argc, char **argv, struct echo_opts *o,
                                 FILE *out, FILE *errout)
{
	enum opts_result r = echo_opts_read(argc, argv, o, out, errout);

	/* Only a run keeps what parsing allocated. */
	if (r != OPTS_OK)
		echo_opts_free(o);
	return r;
}

void echo_opts_free(struct echo_opts *o)
{
	admit_free(o->admit);
	o->admit = NULL;
}
