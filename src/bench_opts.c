/*
 * bench_opts.c - forkloop-bench's command line.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "forkloop/bench.h"
#include "forkloop/log.h"
#include "forkloop/num.h"

static const char bench_usage_text[] =
        "usage: %s [-hV] [-c CONNS] [-s BYTES] [-d SECONDS | -n MESSAGES]\n"
        "       [-p K] [--warmup SECONDS] [--connect-rate N] [--rate R]\n"
        "       [--churn] [--connect-timeout SECONDS] [--setup-timeout "
        "SECONDS]\n"
        "       [--threads N|auto] [--source LIST] [--strict] [--json]\n"
        "       [-i SECONDS] [--json-stream] [--hist FILE]\n"
        "       [--tls [--tls-verify [--tls-ca FILE]] [--tls-cert FILE "
        "--tls-key FILE]\n"
        "       [--tls-resume]] [tls://]HOST:PORT | unix:/PATH | "
        "unix:@NAME\n";

static const char bench_help_text[] =
        "Load an echo server at HOST:PORT and measure its throughput and\n"
        "latency; every echoed byte is checked. unix:/PATH is a Unix socket "
        "file,\n"
        "unix:@NAME a Linux abstract name (no TLS over either).\n"
        "\n"
        "  -c, --conns N            connections (default 50)\n"
        "  -s, --size BYTES         message size; K, M suffixes (default 64)\n"
        "  -d, --duration SECONDS   measure this long (default 10)\n"
        "  -n, --messages N         stop after N echoes instead (with -d too:\n"
        "                           whichever comes first; alone, also after "
        "10 s\n"
        "                           without an echo, as an error)\n"
        "  -p, --pipeline K         messages in flight per connection (default "
        "1)\n"
        "      --warmup SECONDS     run this long before measuring (default "
        "0)\n"
        "      --connect-rate N     open at most N connections per second\n"
        "                           (default: all at once)\n"
        "      --rate R             open loop: R messages per second in "
        "total,\n"
        "                           latency from each message's intended send "
        "time\n"
        "      --churn              a new connection for every message: "
        "connect,\n"
        "                           send, receive the echo, close\n"
        "      --connect-timeout S  a connect not done in S seconds fails, an "
        "error\n"
        "                           (default 5)\n"
        "      --setup-timeout S    start the load at most S seconds after the "
        "last\n"
        "                           connection was opened, up or not "
        "(default 2);\n"
        "                           messages due on a late connection wait "
        "for it\n"
        "      --threads N|auto     N event loops, one per thread (default "
        "1; auto:\n"
        "                           the CPUs this process may run on), at "
        "most 256\n"
        "                           and at most -c; connections, --rate, "
        "--connect-rate\n"
        "                           and -n are split among them, their "
        "latency\n"
        "                           histograms merged exactly into one "
        "report\n"
        "      --source LIST        bind connection i to address i mod N of "
        "LIST, N\n"
        "                           addresses of one family, before it "
        "connects:\n"
        "                           127.0.0.2,127.0.0.5-127.0.0.9 or "
        "fd00::1-fd00::20;\n"
        "                           each address has its own local ports, "
        "so more\n"
        "                           connections than one address's ports "
        "allow;\n"
        "                           repeated, the lists add up\n"
        "      --strict             exit 1 when the answered rate falls more "
        "than 1%\n"
        "                           short of --rate, a connection was late, "
        "or a\n"
        "                           message due was never sent\n"
        "      --json               print one JSON object on standard output,\n"
        "                           each latency histogram's buckets in it\n"
        "      --hist FILE          write the latency histogram to FILE as\n"
        "                           HdrHistogram's percentile distribution "
        "text\n"
        "                           (.hgrm, values in milliseconds)\n"
        "  -i, --interval SECONDS   also print a line for each SECONDS "
        "(0.01 to\n"
        "                           3600) of the measured window as the run "
        "goes,\n"
        "                           then the report; not with --json\n"
        "      --json-stream        JSON lines: an object for each interval "
        "(-i,\n"
        "                           default 1 s) as the run goes, then "
        "--json's\n"
        "                           object; not with --json\n"
        "      --tls                speak TLS (1.2 or 1.3) on every "
        "connection; the\n"
        "                           same as writing the target "
        "tls://HOST:PORT\n"
        "      --tls-verify         verify the server's certificate and "
        "that it names\n"
        "                           HOST (default: no check, as a load tool "
        "needs)\n"
        "      --tls-ca FILE        with --tls-verify: trust the PEM CAs in "
        "FILE\n"
        "                           (default: the system's store)\n"
        "      --tls-cert FILE      present this PEM client certificate "
        "chain,\n"
        "      --tls-key FILE       with this private key\n"
        "      --tls-resume         resume the session the worker's last "
        "connection got\n"
        "                           (TLS 1.3 tickets, 1.2 session ids or "
        "tickets), so\n"
        "                           --churn measures resumed handshakes, "
        "not full ones\n"
        "  -h, --help               show this help and exit\n"
        "  -V, --version            show the version and exit\n";

/* After the options; a second string, as ISO C limits one to 4095 bytes. */
static const char bench_help_notes[] =
        "\n"
        "Latency counts from when each message was due, and a message still\n"
        "unanswered at the end counts with its age then (a lower bound); the\n"
        "uncorrected figure counts from the actual send.\n"
        "\n"
        "Before it connects, it checks two limits and says how to get past "
        "each: a\n"
        "local port per connection and source address "
        "(net.ipv4.ip_local_port_range),\n"
        "and a descriptor per connection (RLIMIT_NOFILE: the soft limit is "
        "raised\n"
        "to the hard one). Past those, use --source, or several processes "
        "and merge.\n"
        "\n"
        "forkloop-bench merge [--json] [--hist FILE] FILE... adds up results "
        "that\n"
        "--json wrote, from processes run at the same time against one "
        "server, into\n"
        "one report: counts summed, histograms added bucket by bucket (see\n"
        "forkloop-bench merge --help).\n"
        "\n"
        "Exit status: 0 if every echo came back intact, 1 on any error "
        "(mismatch,\n"
        "reset, short echo, failed connect), if no echo came back, if the "
        "run\n"
        "could not start, if --hist FILE could not be written, or with "
        "--strict on\n"
        "a warning; 2 on bad usage. With --tls,\n"
        "a failed handshake and a stream cut without close_notify are errors "
        "too;\n"
        "each connection ends with a close_notify. Stopped by SIGINT or "
        "SIGTERM, it\n"
        "prints the report, then dies of the signal (130 or 143 in a "
        "shell).\n"
        "\n"
        "Examples:\n"
        "  forkloop-bench --tls -c 100 -s 4K -d 5 127.0.0.1:7443\n"
        "  forkloop-bench --churn --tls --tls-resume -c 10 -d 5 "
        "tls://127.0.0.1:7443\n"
        "  forkloop-bench --tls --tls-verify --tls-ca ca.pem --tls-cert "
        "client.pem\n"
        "                 --tls-key client.key -n 1000 tls://localhost:7443\n";

enum {
	OPT_WARMUP = 256,
	OPT_CONNECT_RATE,
	OPT_RATE,
	OPT_CHURN,
	OPT_JSON,
	OPT_SETUP_TIMEOUT,
	OPT_CONNECT_TIMEOUT,
	OPT_STRICT,
	OPT_THREADS,
	OPT_TLS,
	OPT_TLS_VERIFY,
	OPT_TLS_CA,
	OPT_TLS_CERT,
	OPT_TLS_KEY,
	OPT_TLS_RESUME,
	OPT_SOURCE,
	OPT_HIST,
	OPT_JSON_STREAM,
};

static const struct option bench_longopts[] = {
        {"conns", required_argument, NULL, 'c'},
        {"size", required_argument, NULL, 's'},
        {"duration", required_argument, NULL, 'd'},
        {"messages", required_argument, NULL, 'n'},
        {"pipeline", required_argument, NULL, 'p'},
        {"warmup", required_argument, NULL, OPT_WARMUP},
        {"connect-rate", required_argument, NULL, OPT_CONNECT_RATE},
        {"rate", required_argument, NULL, OPT_RATE},
        {"churn", no_argument, NULL, OPT_CHURN},
        {"json", no_argument, NULL, OPT_JSON},
        {"setup-timeout", required_argument, NULL, OPT_SETUP_TIMEOUT},
        {"connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT},
        {"strict", no_argument, NULL, OPT_STRICT},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"tls", no_argument, NULL, OPT_TLS},
        {"tls-verify", no_argument, NULL, OPT_TLS_VERIFY},
        {"tls-ca", required_argument, NULL, OPT_TLS_CA},
        {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
        {"tls-key", required_argument, NULL, OPT_TLS_KEY},
        {"tls-resume", no_argument, NULL, OPT_TLS_RESUME},
        {"source", required_argument, NULL, OPT_SOURCE},
        {"hist", required_argument, NULL, OPT_HIST},
        {"interval", required_argument, NULL, 'i'},
        {"json-stream", no_argument, NULL, OPT_JSON_STREAM},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
};

static enum opts_result bench_bad(FILE *errout, const char *fmt,
                                  const char *arg)
{
	const char *prog = log_progname();

	fprintf(errout, "%s: ", prog);
	fprintf(errout, fmt, arg);
	fputc('\n', errout);
	fprintf(errout, bench_usage_text, prog);
	return OPTS_USAGE;
}

static void bench_opts_defaults(struct bench_opts *o)
{
	memset(o, 0, sizeof *o);
	o->conns = BENCH_DEFAULT_CONNS;
	o->size = BENCH_DEFAULT_SIZE;
	o->pipeline = 1;
	o->setup_timeout = BENCH_DEFAULT_SETUP_TIMEOUT;
	o->connect_timeout = BENCH_DEFAULT_CONNECT_TIMEOUT;
	o->threads = 1;
}

/*
 * The CPUs in this process's affinity mask (taskset, cgroup cpusets), not
 * the machine's: threads beyond those only take turns. The mask may be
 * larger than a cpu_set_t on a big machine; sched_getaffinity says so with
 * EINVAL.
 */
static uint64_t bench_cpus(void)
{
	size_t ncpu, size;
	cpu_set_t *set;
	int count, err;

	for (ncpu = CPU_SETSIZE; ncpu <= 1u << 20; ncpu *= 2) {
		if ((set = CPU_ALLOC(ncpu)) == NULL)
			return 1;
		size = CPU_ALLOC_SIZE(ncpu);
		count = sched_getaffinity(0, size, set) == 0
		                ? CPU_COUNT_S(size, set)
		                : -1;
		err = errno;
		CPU_FREE(set);
		if (count > 0)
			return (uint64_t)count;
		if (count < 0 && err != EINVAL)
			return 1;
	}
	return 1;
}

/*
 * One --source item: a bad one, one of another family than those before
 * it, or one that overlaps an earlier one is refused (each address once,
 * so that the port arithmetic of bench_ports holds).
 */
static enum opts_result bench_source_item(const char *item,
                                          struct bench_opts *o, FILE *errout)
{
	char why[2 * ADDR_RANGE_STRLEN + 200], prev[ADDR_RANGE_STRLEN];
	struct addr_range r;
	const char *bad;
	size_t i;

	if (addr_range_parse(item, &r, &bad) < 0) {
		snprintf(why, sizeof why, "bad --source '%s': %s", item, bad);
		return bench_bad(errout, "%s", why);
	}
	if (o->nsources == BENCH_MAX_SOURCE_ITEMS) {
		snprintf(why, sizeof why,
		         "bad --source '%s': more than %d items in all "
		         "(write consecutive addresses as one range)",
		         item, BENCH_MAX_SOURCE_ITEMS);
		return bench_bad(errout, "%s", why);
	}
	for (i = 0; i < o->nsources; i++) {
		addr_range_format(&o->sources[i], prev, sizeof prev);
		if (o->sources[i].family != r.family) {
			snprintf(why, sizeof why,
			         "bad --source '%s': it is %s, but '%s' "
			         "before it is not; connections go to one "
			         "address of the target, so give sources of "
			         "its family",
			         item, r.family == AF_INET ? "IPv4" : "IPv6",
			         prev);
			return bench_bad(errout, "%s", why);
		}
		if (addr_range_overlap(&o->sources[i], &r)) {
			snprintf(why, sizeof why,
			         "bad --source '%s': it overlaps '%s' given "
			         "before it; give each address once",
			         item, prev);
			return bench_bad(errout, "%s", why);
		}
	}
	o->sources[o->nsources++] = r;
	o->source_addrs += r.count;
	return OPTS_OK;
}

/* --source LIST: comma-separated items, added to those before. */
static enum opts_result bench_source_list(const char *list,
                                          struct bench_opts *o, FILE *errout)
{
	char item[ADDR_RANGE_STRLEN + 8], why[200];
	const char *p = list, *comma;
	enum opts_result r;
	size_t len;

	for (;;) {
		comma = strchr(p, ',');
		len = comma != NULL ? (size_t)(comma - p) : strlen(p);
		if (len == 0) {
			snprintf(why, sizeof why,
			         "bad --source '%.100s': an empty item (a "
			         "comma at an end, or two in a row)",
			         list);
			return bench_bad(errout, "%s", why);
		}
		if (len >= sizeof item) {
			snprintf(why, sizeof why,
			         "bad --source '%.*s': not an IPv4 or IPv6 "
			         "address or range",
			         (int)(len > 100 ? 100 : len), p);
			return bench_bad(errout, "%s", why);
		}
		memcpy(item, p, len);
		item[len] = '\0';
		if ((r = bench_source_item(item, o, errout)) != OPTS_OK)
			return r;
		if (comma == NULL)
			return OPTS_OK;
		p = comma + 1;
	}
}

/*
 * --source binds IP sockets, all of the sources' family: a unix: target
 * has no use for them, and a literal target of the other family could
 * never be reached from them (a name is checked once it is resolved).
 */
static enum opts_result bench_source_check(const struct bench_opts *o,
                                           FILE *errout)
{
	char why[ADDR_HOSTLEN + 160];
	unsigned char a[16];
	int fam, other;

	if (o->nsources == 0)
		return OPTS_OK;
	if (o->target.is_unix)
		return bench_bad(errout, "%s",
		                 "--source binds TCP connections to local "
		                 "addresses; a unix: target has none: drop "
		                 "--source");
	fam = o->sources[0].family;
	other = fam == AF_INET ? AF_INET6 : AF_INET;
	if (inet_pton(other, o->target.host, a) != 1)
		return OPTS_OK;
	snprintf(why, sizeof why,
	         "the --source addresses are %s, but the target %s is %s: "
	         "give sources of its family",
	         fam == AF_INET ? "IPv4" : "IPv6", o->target.host,
	         other == AF_INET ? "IPv4" : "IPv6");
	return bench_bad(errout, "%s", why);
}

/* One option with a value; returns OPTS_OK or reports the bad value. */
static enum opts_result bench_opt_value(int c, const char *arg,
                                        struct bench_opts *o, int *have_d,
                                        FILE *errout)
{
	switch (c) {
	case 'c':
		if (num_parse_u64(arg, 1, 1000000, &o->conns) < 0)
			return bench_bad(
			        errout, "bad --conns '%s' (1 to 1000000)", arg);
		break;
	case 's':
		if (num_parse_size(arg, 1, BENCH_MAX_SIZE, &o->size) < 0)
			return bench_bad(errout,
			                 "bad --size '%s' (bytes, 1 to 16M)",
			                 arg);
		break;
	case 'd':
		if (num_parse_seconds(arg, 0.001, 1e6, &o->duration) < 0)
			return bench_bad(errout,
			                 "bad --duration '%s' (seconds, "
			                 "0.001 to 1000000)",
			                 arg);
		*have_d = 1;
		break;
	case 'n':
		if (num_parse_u64(arg, 1, UINT64_MAX / 2, &o->messages) < 0)
			return bench_bad(errout,
			                 "bad --messages '%s' (1 to "
			                 "9223372036854775807)",
			                 arg);
		break;
	case 'p':
		if (num_parse_u64(arg, 1, BENCH_MAX_PIPELINE, &o->pipeline) < 0)
			return bench_bad(
			        errout, "bad --pipeline '%s' (1 to 4096)", arg);
		break;
	case 'i':
		if (num_parse_seconds(arg, BENCH_MIN_INTERVAL,
		                      BENCH_MAX_INTERVAL, &o->interval) < 0)
			return bench_bad(errout,
			                 "bad --interval '%s' (seconds, 0.01 "
			                 "to 3600)",
			                 arg);
		break;
	case OPT_WARMUP:
		if (num_parse_seconds(arg, 0, 1e6, &o->warmup) < 0)
			return bench_bad(errout,
			                 "bad --warmup '%s' (seconds, 0 to "
			                 "1000000)",
			                 arg);
		break;
	case OPT_CONNECT_RATE:
		if (num_parse_u64(arg, 1, 10000000, &o->connect_rate) < 0)
			return bench_bad(errout,
			                 "bad --connect-rate '%s' (connections "
			                 "per second, 1 to 10000000)",
			                 arg);
		break;
	case OPT_RATE:
		if (num_parse_seconds(arg, 0.001, 1e9, &o->rate) < 0)
			return bench_bad(errout,
			                 "bad --rate '%s' (messages per "
			                 "second, 0.001 to 1000000000)",
			                 arg);
		break;
	case OPT_SETUP_TIMEOUT:
		if (num_parse_seconds(arg, 0, 1e6, &o->setup_timeout) < 0)
			return bench_bad(errout,
			                 "bad --setup-timeout '%s' (seconds, 0 "
			                 "to 1000000)",
			                 arg);
		break;
	case OPT_CONNECT_TIMEOUT:
		if (num_parse_seconds(arg, 0.001, 1e6, &o->connect_timeout) < 0)
			return bench_bad(errout,
			                 "bad --connect-timeout '%s' (seconds, "
			                 "0.001 to 1000000)",
			                 arg);
		break;
	case OPT_TLS_CA:
		o->tls_ca = arg;
		break;
	case OPT_TLS_CERT:
		o->tls_cert = arg;
		break;
	case OPT_TLS_KEY:
		o->tls_key = arg;
		break;
	case OPT_HIST:
		o->hist = arg;
		break;
	case OPT_SOURCE:
		return bench_source_list(arg, o, errout);
	case OPT_THREADS:
		/* 0 stands for auto until the connections are known. */
		if (strcmp(arg, "auto") == 0)
			o->threads = 0;
		else if (num_parse_u64(arg, 1, BENCH_MAX_THREADS, &o->threads) <
		         0)
			return bench_bad(
			        errout,
			        "bad --threads '%s' (1 to 256, or auto)", arg);
		break;
	}
	return OPTS_OK;
}

/*
 * Every thread needs a connection and, with -n, a message of its own to
 * stop at. auto takes what there is of both; a number asked for is not
 * cut down behind the user's back.
 */
static enum opts_result bench_threads_check(struct bench_opts *o, FILE *errout)
{
	char why[160];

	if (o->threads == 0) {
		o->threads = bench_cpus();
		if (o->threads > BENCH_MAX_THREADS)
			o->threads = BENCH_MAX_THREADS;
		if (o->threads > o->conns)
			o->threads = o->conns;
		if (o->messages > 0 && o->threads > o->messages)
			o->threads = o->messages;
		return OPTS_OK;
	}
	if (o->threads > o->conns) {
		snprintf(why, sizeof why,
		         "--threads %llu is more than the %llu connections "
		         "(-c): "
		         "each thread needs one",
		         (unsigned long long)o->threads,
		         (unsigned long long)o->conns);
		return bench_bad(errout, "%s", why);
	}
	if (o->messages > 0 && o->threads > o->messages) {
		snprintf(why, sizeof why,
		         "--threads %llu is more than the %llu messages (-n): "
		         "each thread needs one",
		         (unsigned long long)o->threads,
		         (unsigned long long)o->messages);
		return bench_bad(errout, "%s", why);
	}
	return OPTS_OK;
}

static enum opts_result bench_opts_check(struct bench_opts *o, int have_d,
                                         FILE *errout)
{
	if (o->churn && o->pipeline > 1)
		return bench_bad(errout, "%s",
		                 "--churn sends one message per connection; "
		                 "drop --pipeline");
	if (o->churn && o->rate > 0)
		return bench_bad(errout, "%s",
		                 "--churn and --rate cannot be used together");
	if (o->rate > 0 && o->pipeline > 1)
		return bench_bad(errout, "%s",
		                 "--rate sets the send times itself; drop "
		                 "--pipeline");
	if (!have_d)
		o->duration = o->messages > 0 ? 0 : BENCH_DEFAULT_DURATION;
	return bench_threads_check(o, errout);
}

/* The TLS options that need --tls, or need each other. */
static enum opts_result bench_tls_check(const struct bench_opts *o,
                                        FILE *errout)
{
	if (!o->tls) {
		if (o->tls_verify || o->tls_resume || o->tls_ca != NULL ||
		    o->tls_cert != NULL || o->tls_key != NULL)
			return bench_bad(errout, "%s",
			                 "TLS options need --tls or a tls:// "
			                 "target");
		return OPTS_OK;
	}
	if ((o->tls_cert == NULL) != (o->tls_key == NULL))
		return bench_bad(errout, "%s",
		                 "--tls-cert and --tls-key go together");
	if (o->tls_ca != NULL && !o->tls_verify)
		return bench_bad(errout, "%s",
		                 "--tls-ca is what --tls-verify checks "
		                 "against: add --tls-verify");
	return OPTS_OK;
}

/*
 * -i lines are for people, --json's object for scripts: both on standard
 * output would be neither. --json-stream is the two together, and ends
 * with --json's object itself.
 */
static enum opts_result bench_output_check(struct bench_opts *o, FILE *errout)
{
	if (o->json && o->json_stream)
		return bench_bad(errout, "%s",
		                 "--json-stream ends with --json's object: "
		                 "drop --json");
	if (o->json && o->interval > 0)
		return bench_bad(errout, "%s",
		                 "-i prints lines for people: for intervals "
		                 "as JSON, use --json-stream (with -i for "
		                 "their length)");
	if (o->json_stream && o->interval == 0)
		o->interval = BENCH_DEFAULT_INTERVAL;
	return OPTS_OK;
}

static enum opts_result bench_target(const char *spec, struct bench_opts *o,
                                     FILE *errout)
{
	const char *prog = log_progname(), *why;
	int tls = o->tls;

	if (addr_parse(spec, ADDR_CONNECT | ADDR_TLS | ADDR_UNIX, &o->target,
	               &why) < 0) {
		fprintf(errout, "%s: bad HOST:PORT '%s': %s\n", prog, spec,
		        why);
		fprintf(errout, bench_usage_text, prog);
		return OPTS_USAGE;
	}
	if (tls && o->target.is_unix)
		return bench_bad(errout, "%s",
		                 "TLS is not spoken over Unix sockets: drop "
		                 "--tls");
	o->tls = tls || o->target.tls;
	o->target.tls = o->tls;
	return OPTS_OK;
}

static enum opts_result bench_unknown(FILE *errout, char **argv)
{
	char opt[3];

	return bench_bad(errout, "unknown option '%s'",
	                 opts_refused(argv, opt));
}

enum opts_result bench_opts_parse(int argc, char **argv, struct bench_opts *o,
                                  FILE *out, FILE *errout)
{
	const char *prog = log_progname();
	enum opts_result r;
	int c, have_d = 0;

	bench_opts_defaults(o);
	optind = 0; /* glibc: start afresh, so tests can parse repeatedly */
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":c:s:d:n:p:i:hV", bench_longopts,
	                        NULL)) != -1) {
		switch (c) {
		case OPT_CHURN:
			o->churn = 1;
			break;
		case OPT_JSON:
			o->json = 1;
			break;
		case OPT_JSON_STREAM:
			o->json_stream = 1;
			break;
		case OPT_STRICT:
			o->strict = 1;
			break;
		case OPT_TLS:
			o->tls = 1;
			break;
		case OPT_TLS_VERIFY:
			o->tls_verify = 1;
			break;
		case OPT_TLS_RESUME:
			o->tls_resume = 1;
			break;
		case 'h':
			fprintf(out, bench_usage_text, prog);
			fputc('\n', out);
			fputs(bench_help_text, out);
			fputs(bench_help_notes, out);
			return OPTS_EXIT;
		case 'V':
			fprintf(out, "%s %s\n", prog, FORKLOOP_VERSION);
			return OPTS_EXIT;
		case ':':
			return bench_bad(errout, "option '%s' needs a value",
			                 argv[optind - 1]);
		case '?':
			return bench_unknown(errout, argv);
		default:
			r = bench_opt_value(c, optarg, o, &have_d, errout);
			if (r != OPTS_OK)
				return r;
		}
	}
	if (optind == argc)
		return bench_bad(errout, "%s", "missing HOST:PORT");
	if (argc - optind > 1)
		return bench_bad(errout, "unexpected argument '%s'",
		                 argv[optind + 1]);
	if ((r = bench_target(argv[optind], o, errout)) != OPTS_OK)
		return r;
	if ((r = bench_tls_check(o, errout)) != OPTS_OK)
		return r;
	if ((r = bench_output_check(o, errout)) != OPTS_OK)
		return r;
	if ((r = bench_source_check(o, errout)) != OPTS_OK)
		return r;
	return bench_opts_check(o, have_d, errout);
}
