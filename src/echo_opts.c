/*
 * echo_opts.c - forkloop-echo's command line, and what both designs share:
 * mode names and the statistics line.
 */
#include <getopt.h>
#include <inttypes.h>
#include <string.h>

#include "forkloop/echo.h"
#include "forkloop/num.h"

static const char echo_usage_text[] = "usage: %s [-qvhV] [-m event|fork] [-l "
                                      "ADDR:PORT]... [--max-pending BYTES]\n"
                                      "       [--max-conns N] [--idle-timeout "
                                      "SECONDS] [--drain-timeout SECONDS]\n"
                                      "       [--udp | --udp-only] "
                                      "[--udp-rate N]\n";

static const char echo_help_text[] =
        "Echo every byte each client sends back to it, in order (RFC 862).\n"
        "\n"
        "  -m, --mode MODE          event: one process, one libevent loop "
        "(default);\n"
        "                           fork: one child process per connection\n"
        "  -l, --listen ADDR:PORT   listen here; repeatable; [IPv6]:PORT and "
        "host\n"
        "                           names work; port 0 picks a free port\n"
        "                           (default " ECHO_DEFAULT_LISTEN ")\n"
        "      --max-pending BYTES  stop reading a client whose unsent echo "
        "passes\n"
        "                           BYTES, resume once it drains; K, M, G "
        "suffixes\n"
        "                           (default 256K)\n"
        "      --max-conns N        close connections past N at once (default: "
        "no\n"
        "                           limit)\n"
        "      --idle-timeout SECONDS\n"
        "                           close a connection idle this long "
        "(default: never)\n"
        "      --drain-timeout SECONDS\n"
        "                           on SIGINT/SIGTERM, give connections this "
        "long to\n"
        "                           receive what they are owed (default 5)\n"
        "      --udp                also echo UDP datagrams on the same "
        "addresses\n"
        "      --udp-only           echo UDP datagrams only, no TCP\n"
        "      --udp-rate N         answer at most N datagrams per second "
        "per source\n"
        "                           address (default: no limit)\n"
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
        "Datagrams from port 0, from ports 7, 13, 17, 19 and 37, or from the\n"
        "server's own address and port get no reply. Started by systemd "
        "socket\n"
        "activation (LISTEN_FDS), it serves the sockets it is given instead "
        "of\n"
        "--listen, stream and datagram alike.\n";

enum {
	OPT_MAX_PENDING = 256,
	OPT_MAX_CONNS,
	OPT_IDLE_TIMEOUT,
	OPT_DRAIN_TIMEOUT,
	OPT_UDP,
	OPT_UDP_ONLY,
	OPT_UDP_RATE,
};

static const struct option echo_longopts[] = {
        {"mode", required_argument, NULL, 'm'},
        {"listen", required_argument, NULL, 'l'},
        {"max-pending", required_argument, NULL, OPT_MAX_PENDING},
        {"max-conns", required_argument, NULL, OPT_MAX_CONNS},
        {"idle-timeout", required_argument, NULL, OPT_IDLE_TIMEOUT},
        {"drain-timeout", required_argument, NULL, OPT_DRAIN_TIMEOUT},
        {"udp", no_argument, NULL, OPT_UDP},
        {"udp-only", no_argument, NULL, OPT_UDP_ONLY},
        {"udp-rate", required_argument, NULL, OPT_UDP_RATE},
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

void echo_stats_log(const struct echo_stats *s)
{
	if (s->udp) {
		log_error("stats: open=%" PRIu64 " accepted=%" PRIu64
		          " refused=%" PRIu64 " bytes_in=%" PRIu64
		          " bytes_out=%" PRIu64 " udp_in=%" PRIu64
		          " udp_out=%" PRIu64 " udp_dropped=%" PRIu64,
		          s->open, s->accepted, s->refused, s->bytes_in,
		          s->bytes_out, s->udp_in, s->udp_out, s->udp_dropped);
		return;
	}
	log_error("stats: open=%" PRIu64 " accepted=%" PRIu64
	          " refused=%" PRIu64 " bytes_in=%" PRIu64
	          " bytes_out=%" PRIu64,
	          s->open, s->accepted, s->refused, s->bytes_in, s->bytes_out);
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
}

enum opts_result echo_opts_parse(int argc, char **argv, struct echo_opts *o,
                                 FILE *out, FILE *errout)
{
	const char *prog = log_progname();
	const char *why;
	int c, is_fork, verbose = 0, quiet = 0;
	char opt[3];

	echo_opts_defaults(o);
	optind = 0; /* glibc: start afresh, so tests can parse repeatedly */
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":m:l:vqhV", echo_longopts,
	                        NULL)) != -1) {
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
			if (addr_parse(optarg, 0, &o->listen[o->nlisten],
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
				                "(bytes, at least 1)",
				                optarg);
			break;
		case OPT_MAX_CONNS:
			if (num_parse_u64(optarg, 1, UINT32_MAX,
			                  &o->max_conns) < 0)
				return echo_bad(errout, prog,
				                "bad --max-conns '%s' (a "
				                "number, at least 1)",
				                optarg);
			break;
		case OPT_IDLE_TIMEOUT:
			if (num_parse_seconds(optarg, 0, 1e7,
			                      &o->idle_timeout) < 0)
				return echo_bad(errout, prog,
				                "bad --idle-timeout '%s' "
				                "(seconds)",
				                optarg);
			break;
		case OPT_DRAIN_TIMEOUT:
			if (num_parse_seconds(optarg, 0, 1e7,
			                      &o->drain_timeout) < 0)
				return echo_bad(errout, prog,
				                "bad --drain-timeout '%s' "
				                "(seconds)",
				                optarg);
			break;
		case OPT_UDP:
			if (o->udp != ECHO_UDP_ONLY)
				o->udp = ECHO_UDP_ON;
			break;
		case OPT_UDP_ONLY:
			o->udp = ECHO_UDP_ONLY;
			break;
		case OPT_UDP_RATE:
			if (num_parse_u64(optarg, 0, UINT32_MAX, &o->udp_rate) <
			    0)
				return echo_bad(
				        errout, prog,
				        "bad --udp-rate '%s' (datagrams "
				        "per second, 0 for no limit)",
				        optarg);
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
			return OPTS_EXIT;
		case 'V':
			fprintf(out, "%s %s\n", prog, FORKLOOP_VERSION);
			return OPTS_EXIT;
		case ':':
			return echo_bad(errout, prog,
			                "option '%s' needs a value",
			                argv[optind - 1]);
		default:
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
	o->log_level = verbose ? LOG_VERBOSE : quiet ? LOG_QUIET : LOG_NORMAL;
	if (o->nlisten == 0) {
		addr_parse(ECHO_DEFAULT_LISTEN, 0, &o->listen[0], &why);
		o->nlisten = 1;
	}
	return OPTS_OK;
}
