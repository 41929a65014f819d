/*
 * fuzz_opts.c - the three programs' command-line parsers on any argument
 * vector: echo_opts_parse, chat_opts_parse and bench_opts_parse, picked by
 * the first byte; the arguments are the rest, split at NUL bytes. What a
 * parse allocated is freed as the programs free it, so a leak is a
 * finding, as is a parser that ends the process.
 *
 * --allow-file and --deny-file read the file they name, which could be any
 * file on this machine (a FIFO would block, a device never end): an input
 * naming either, in full or abbreviated as getopt_long(3) takes it, is
 * skipped; fuzz_admit feeds that parser file contents of its own.
 */
#include "forkloop/bench.h"
#include "forkloop/chat.h"
#include "forkloop/echo.h"

#include "fuzz.h"

#define FUZZ_ARGS_MAX 32

static FILE *devnull;

/* Would getopt_long take arg as opt ("--deny-file") or abbreviated? */
static int names_option(const char *arg, const char *opt, size_t shortest)
{
	size_t n = strcspn(arg, "=");

	return n >= shortest && n <= strlen(opt) && strncmp(arg, opt, n) == 0;
}

static int reads_files(char **argv, int argc)
{
	for (int i = 0; i < argc; i++)
		if (names_option(argv[i], "--allow-file",
		                 sizeof "--allow-f" - 1) ||
		    names_option(argv[i], "--deny-file", sizeof "--deny-" - 1))
			return 1;
	return 0;
}

static void fuzz_echo(int argc, char **argv)
{
	struct echo_opts o;

	memset(&o, 0, sizeof o);
	argv[0] = "forkloop-echo";
	if (echo_opts_parse(argc, argv, &o, devnull, devnull) == OPTS_OK) {
		FUZZ_CHECK(o.admit != NULL);
		FUZZ_CHECK(o.nlisten >= 1 && o.nlisten <= ECHO_MAX_LISTEN);
		FUZZ_CHECK(o.threads >= 1 && o.threads <= ECHO_MAX_THREADS);
		echo_opts_free(&o);
	}
	FUZZ_CHECK(o.admit == NULL);
}

static void fuzz_chat(int argc, char **argv)
{
	struct chat_opts o;

	memset(&o, 0, sizeof o);
	argv[0] = "forkloop-chat";
	if (chat_opts_parse(argc, argv, &o, devnull, devnull) == OPTS_OK)
		FUZZ_CHECK(o.admit != NULL);
	chat_opts_free(&o);
	FUZZ_CHECK(o.admit == NULL);
}

static void fuzz_bench(int argc, char **argv)
{
	struct bench_opts o;

	memset(&o, 0, sizeof o);
	argv[0] = "forkloop-bench";
	if (bench_opts_parse(argc, argv, &o, devnull, devnull) == OPTS_OK)
		FUZZ_CHECK(o.conns >= 1 && o.threads >= 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *argv[FUZZ_ARGS_MAX + 2], *block;
	int argc;

	if (size < 1)
		return 0;
	if (devnull == NULL && (devnull = fopen("/dev/null", "w")) == NULL)
		abort();
	/* argv[0] is the program's name; the input gives the rest. */
	argc = 1 +
	       fuzz_split(data + 1, size - 1, argv + 1, FUZZ_ARGS_MAX, &block);
	if (!reads_files(argv + 1, argc - 1)) {
		switch (data[0] % 3) {
		case 0:
			fuzz_echo(argc, argv);
			break;
		case 1:
			fuzz_chat(argc, argv);
			break;
		default:
			fuzz_bench(argc, argv);
			break;
		}
	}
	free(block);
	return 0;
}
