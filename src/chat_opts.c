/*
 * chat_opts.c - forkloop-chat's command line: options, addresses, usage and
 * help. It calls nothing of the designs (chat_run.c dispatches to them).
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "forkloop/chat.h"
#include "forkloop/num.h"
#include "forkloop/sock.h"

static const char chat_usage_text[] =
        "usage: %s [-kqvhV] [-m event|fork] [--keepalive SECONDS] "
        "[TLS SERVER OPTIONS]\n"
        "       [ADMISSION OPTIONS] [--unix-mode MODE]\n"
        "       -l [tls://][ADDR:]PORT | unix:/PATH | unix:@NAME\n"
        "       %s [-qvhV] [-m event|fork] [--keepalive SECONDS] "
        "[--tls] [TLS CLIENT OPTIONS]\n"
        "       HOST PORT | [tls://]HOST:PORT | unix:/PATH | unix:@NAME\n"
        "       %s --broker [-qvhV] [--max-pending BYTES] [--max-line BYTES]\n"
        "       [--max-clients N] [--keepalive SECONDS] "
        "[--metrics [ADDR:]PORT]\n"
        "       [TLS SERVER OPTIONS]\n"
        "       [ADMISSION OPTIONS] [--unix-mode MODE]\n"
        "       -l [tls://][ADDR:]PORT | unix:/PATH | unix:@NAME\n"
        "ADMISSION OPTIONS:\n" ADMIT_USAGE;

static const char chat_help_text[] =
        "Send standard input to one peer over TCP (or TLS, or a Unix socket)\n"
        "and print what it sends.\n"
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
        "                           picks a free port; unix:/PATH or "
        "unix:@NAME:\n"
        "                           a Unix socket (a file, or an abstract "
        "name)\n"
        "      --unix-mode MODE     a unix:/PATH listener's file "
        "permissions, octal\n"
        "                           (0660); the file is removed at exit\n"
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
        "      --max-clients N      with --broker: with N clients connected, "
        "close\n"
        "                           further ones at once, before they join "
        "(a\n"
        "                           client counts until its connection is "
        "closed;\n"
        "                           default: no limit)\n"
        "      --metrics [ADDR:]PORT\n"
        "                           with --broker: serve HTTP there: "
        "/metrics\n"
        "                           (Prometheus text format) and /healthz "
        "(ok;\n"
        "                           503 once draining); port 0 picks one; "
        "the\n"
        "                           access lists apply (default: off)\n"
        "\n"
        "TLS (1.2 or later):\n"
        "      --tls                speak TLS to HOST PORT, or on --listen; "
        "the same\n"
        "                           as writing the address tls://...\n"
        "      --tls-cert FILE      PEM certificate chain: a TLS listener's "
        "(needed),\n"
        "                           or the client certificate to present\n"
        "      --tls-key FILE       the PEM private key for --tls-cert\n"
        "      --tls-ca FILE        client: verify the server against the "
        "CAs in\n"
        "                           FILE (default: the system's store)\n"
        "      --tls-insecure       client: do not verify the server (said "
        "on\n"
        "                           standard error)\n"
        "      --tls-verify-client CAFILE\n"
        "                           TLS listener: refuse clients without a\n"
        "                           certificate from a CA in CAFILE\n"
        "      --tls-handshake-timeout SECONDS\n"
        "                           TLS listener: close a client whose "
        "handshake\n"
        "                           is not done SECONDS after it connected\n"
        "                           (default 10)\n"
        "\n"
        "Who may connect, with --listen or --broker (a refused peer is "
        "closed at\n"
        "once, before a byte is read; the endpoint waits on for one it "
        "admits;\n"
        "each refusal is logged, once per source in 10 s):\n";

/* After admit_help_text: the general options and the notes. */
static const char chat_help_tail[] =
        "\n"
        "  -v, --verbose            log more (--broker: joins, leaves, "
        "renames and\n"
        "                           drops, as key=value lines)\n"
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
        "Over TLS the end of standard input sends close_notify; a peer that "
        "closes\n"
        "without one is an error (what arrived may be truncated). Whether "
        "the peer\n"
        "got everything is judged by its TCP acknowledging every TLS record "
        "written.\n"
        "  forkloop-chat -l tls://127.0.0.1:7443 --tls-cert cert.pem "
        "--tls-key key.pem\n"
        "  forkloop-chat --tls-ca ca.pem tls://localhost:7443\n"
        "\n"
        "With --broker, each line a client sends goes to every other client "
        "as\n"
        "'<NAME> LINE', NAME being userN or what the client chose with the "
        "line\n"
        "'/nick NAME'. Lines starting with '* ' are the relay's notices: "
        "joins,\n"
        "leaves, renames, cut lines, clients dropped for not reading. It runs "
        "until\n"
        "SIGINT or SIGTERM (exit status 130 or 143). Over TLS, with\n"
        "--tls-verify-client a client is named after its certificate's "
        "common name\n"
        "when /nick would allow that name; SIGHUP reloads the certificate, "
        "key\n"
        "and CA file (without TLS it only logs). SIGUSR1 logs a statistics "
        "line,\n"
        "logged once more as the relay's last. On a journal stream\n"
        "(JOURNAL_STREAM) each line starts with its syslog priority (<3> "
        "to <7>).\n";

enum {
	OPT_BROKER = 256,
	OPT_MAX_PENDING,
	OPT_MAX_LINE,
	OPT_KEEPALIVE,
	OPT_TLS,
	OPT_TLS_CERT,
	OPT_TLS_KEY,
	OPT_TLS_CA,
	OPT_TLS_INSECURE,
	OPT_TLS_VERIFY_CLIENT,
	OPT_TLS_HANDSHAKE,
	OPT_MAX_CLIENTS,
	OPT_UNIX_MODE,
	OPT_METRICS,
};
_Static_assert(OPT_METRICS < ADMIT_OPT_BASE, "option values overlap");

static const struct option chat_longopts[] = {
        {"mode", required_argument, NULL, 'm'},
        {"listen", required_argument, NULL, 'l'},
        {"keep-open", no_argument, NULL, 'k'},
        {"broker", no_argument, NULL, OPT_BROKER},
        {"max-pending", required_argument, NULL, OPT_MAX_PENDING},
        {"max-line", required_argument, NULL, OPT_MAX_LINE},
        {"keepalive", required_argument, NULL, OPT_KEEPALIVE},
        {"tls", no_argument, NULL, OPT_TLS},
        {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
        {"tls-key", required_argument, NULL, OPT_TLS_KEY},
        {"tls-ca", required_argument, NULL, OPT_TLS_CA},
        {"tls-insecure", no_argument, NULL, OPT_TLS_INSECURE},
        {"tls-verify-client", required_argument, NULL, OPT_TLS_VERIFY_CLIENT},
        {"tls-handshake-timeout", required_argument, NULL, OPT_TLS_HANDSHAKE},
        {"max-clients", required_argument, NULL, OPT_MAX_CLIENTS},
        {"unix-mode", required_argument, NULL, OPT_UNIX_MODE},
        {"metrics", required_argument, NULL, OPT_METRICS},
        ADMIT_LONGOPTS,
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

	if (addr_parse(spec, ADDR_CONNECT | ADDR_TLS | ADDR_UNIX, &o->addr,
	               &why) == 0)
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
	if (!o->broker && o->max_clients != 0)
		return chat_bad(errout, prog, "%s",
		                "--max-clients needs --broker");
	if (!o->broker && o->metrics_on)
		return chat_bad(errout, prog, "%s", "--metrics needs --broker");
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

/*
 * What the TLS options leave undone or contradict, once the address is
 * known (o->addr.tls set by tls:// or --tls): NULL if nothing.
 */
/*
 * What a Unix address (unix(7)) leaves undone: --tls on one, --unix-mode
 * (mode, -1 if not given) without a unix:/PATH --listen. Gives the listener
 * the mode. NULL if nothing.
 */
static const char *chat_unix_conflict(struct chat_opts *o, int tls, int mode)
{
	if (o->addr.is_unix && tls)
		return "TLS is not spoken over Unix sockets: drop --tls";
	if (admit_has_uids(o->admit) && !o->addr.is_unix)
		return "--allow-uid is for unix: listeners";
	if (mode < 0)
		return NULL;
	if (!o->listen || !o->addr.is_unix)
		return "--unix-mode needs a unix:/PATH --listen";
	if (addr_is_abstract(&o->addr))
		return "--unix-mode is for socket files: unix:@NAME has none";
	o->addr.unix_mode = mode;
	return NULL;
}

static const char *chat_tls_conflict(const struct chat_opts *o,
                                     int handshake_given)
{
	if (!o->addr.tls) {
		if (o->tls_cert != NULL || o->tls_key != NULL ||
		    o->tls_ca != NULL || o->tls_insecure ||
		    o->tls_verify_client != NULL || handshake_given)
			return "TLS options need --tls or a tls:// address";
		return NULL;
	}
	if ((o->tls_cert == NULL) != (o->tls_key == NULL))
		return "--tls-cert and --tls-key go together";
	if (o->listen) {
		if (o->tls_cert == NULL)
			return "a TLS listener needs --tls-cert and --tls-key";
		if (o->tls_ca != NULL || o->tls_insecure)
			return "--tls-ca and --tls-insecure are for "
			       "connecting; a listener takes "
			       "--tls-verify-client";
		return NULL;
	}
	if (o->tls_verify_client != NULL || handshake_given)
		return "--tls-verify-client and --tls-handshake-timeout are "
		       "for a listener";
	if (o->tls_ca != NULL && o->tls_insecure)
		return "--tls-insecure verifies nothing: drop --tls-ca";
	return NULL;
}

/*
 * An admission option (admit.h) into o->admit; *given keeps the first one's
 * name, which chat_opts_admit_done refuses without a listener.
 */
static enum opts_result chat_opts_admit(struct chat_opts *o, int c, char **argv,
                                        const char **given, FILE *errout,
                                        const char *prog)
{
	char err[256];
	size_t i;
	int r;

	err[0] = '\0';
	r = admit_option(o->admit, c, optarg, err, sizeof err);
	if (r == 0)
		return chat_bad_option(errout, prog, argv);
	if (r < 0)
		return chat_bad(errout, prog, "%s", err);
	for (i = 0; *given == NULL && chat_longopts[i].name != NULL; i++)
		if (chat_longopts[i].val == c)
			*given = chat_longopts[i].name;
	return OPTS_OK;
}

/*
 * Admission is decided where peers are accepted: its options need
 * --listen (the relay's too). Then admit_finish checks what goes together.
 */
static enum opts_result chat_opts_admit_done(struct chat_opts *o,
                                             const char *given, FILE *errout,
                                             const char *prog)
{
	char err[256];

	if (given != NULL && !o->listen)
		return chat_bad(errout, prog, "--%s needs --listen", given);
	err[0] = '\0';
	if (admit_finish(o->admit, err, sizeof err) == 0)
		return OPTS_OK;
	if (err[0] == '\0')
		snprintf(err, sizeof err, "cannot set up admission: %s",
		         strerror(errno));
	return chat_bad(errout, prog, "%s", err);
}

static enum opts_result chat_opts_args(int argc, char **argv,
                                       struct chat_opts *o, FILE *out,
                                       FILE *errout)
{
	const char *prog = log_progname();
	const char *why, *admit_given = NULL;
	uint64_t secs;
	int c, is_fork, verbose = 0, quiet = 0, tls = 0, handshake_given = 0;
	int unix_mode = -1;

	memset(o, 0, sizeof *o);
	o->mode = CHAT_MODE_EVENT;
	o->tls_handshake = CHAT_DEFAULT_TLS_HANDSHAKE;
	o->admit = admit_new();
	if (o->admit == NULL) {
		fprintf(errout, "%s: out of memory\n", prog);
		return OPTS_USAGE;
	}
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
			if (addr_parse(optarg,
			               ADDR_LISTEN | ADDR_TLS | ADDR_UNIX,
			               &o->addr, &why) < 0) {
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
		case OPT_TLS:
			tls = 1;
			break;
		case OPT_TLS_CERT:
			o->tls_cert = optarg;
			break;
		case OPT_TLS_KEY:
			o->tls_key = optarg;
			break;
		case OPT_TLS_CA:
			o->tls_ca = optarg;
			break;
		case OPT_TLS_INSECURE:
			o->tls_insecure = 1;
			break;
		case OPT_TLS_VERIFY_CLIENT:
			o->tls_verify_client = optarg;
			break;
		case OPT_TLS_HANDSHAKE:
			if (num_parse_seconds(optarg, 0.001, 1e7,
			                      &o->tls_handshake) < 0)
				return chat_bad(errout, prog,
				                "bad --tls-handshake-timeout "
				                "'%s' (seconds, 0.001 to "
				                "10000000)",
				                optarg);
			handshake_given = 1;
			break;
		case OPT_UNIX_MODE:
			if (addr_unix_mode_parse(optarg, &unix_mode) < 0)
				return chat_bad(errout, prog,
				                "bad --unix-mode '%s' (octal "
				                "permissions, 0 to 0777)",
				                optarg);
			break;
		case OPT_METRICS:
			if (addr_parse(optarg, ADDR_LISTEN, &o->metrics,
			               &why) < 0) {
				fprintf(errout, "%s: bad --metrics '%s': %s\n",
				        prog, optarg, why);
				fprintf(errout, chat_usage_text, prog, prog,
				        prog);
				return OPTS_USAGE;
			}
			o->metrics_on = 1;
			break;
		case OPT_MAX_CLIENTS:
			if (num_parse_u64(optarg, 1, UINT32_MAX,
			                  &o->max_clients) < 0)
				return chat_bad(errout, prog,
				                "bad --max-clients '%s' (a "
				                "number, 1 to 4294967295)",
				                optarg);
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
			fputs(admit_help_text, out);
			fputs(chat_help_tail, out);
			return OPTS_EXIT;
		case 'V':
			fprintf(out, "%s %s\n", prog, FORKLOOP_VERSION);
			return OPTS_EXIT;
		case ':':
			return chat_bad(errout, prog,
			                "option '%s' needs a value",
			                argv[optind - 1]);
		default:
			if (c < ADMIT_OPT_BASE)
				return chat_bad_option(errout, prog, argv);
			if (chat_opts_admit(o, c, argv, &admit_given, errout,
			                    prog) != OPTS_OK)
				return OPTS_USAGE;
			break;
		}
	}
	if (verbose && quiet)
		return chat_bad(errout, prog, "%s",
		                "-v and -q cannot be used together");
	o->log_level = verbose ? LOG_VERBOSE : quiet ? LOG_QUIET : LOG_NORMAL;
	if (chat_opts_broker(o, errout, prog) != OPTS_OK ||
	    chat_opts_addr(argc, argv, o, errout, prog) != OPTS_OK)
		return OPTS_USAGE;
	why = chat_unix_conflict(o, tls, unix_mode);
	if (why != NULL)
		return chat_bad(errout, prog, "%s", why);
	if (tls)
		o->addr.tls = 1;
	why = chat_tls_conflict(o, handshake_given);
	if (why != NULL)
		return chat_bad(errout, prog, "%s", why);
	return chat_opts_admit_done(o, admit_given, errout, prog);
}

enum opts_result chat_opts_parse(int argc, char **argv, struct chat_opts *o,
                                 FILE *out, FILE *errout)
{
	enum opts_result r = chat_opts_args(argc, argv, o, out, errout);

	if (r != OPTS_OK)
		chat_opts_free(o);
	return r;
}

void chat_opts_free(struct chat_opts *o)
{
	admit_free(o->admit);
	o->admit = NULL;
}
