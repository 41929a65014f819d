/*
 * forkloop-bench - echo load generator: parse options, run, report.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forkloop/bench.h"
#include "forkloop/bench_merge.h"
#include "forkloop/log.h"
#include "forkloop/stdfds.h"

int main(int argc, char **argv)
{
	struct bench_opts o;
	struct bench_result *r;
	char warn[BENCH_MAX_WARNINGS][BENCH_WARNING_LEN];
	int status, nwarn, i, sig, rc;

	stdfds_open();
	log_init(argv[0], LOG_NORMAL);
	if (argc > 1 && strcmp(argv[1], "merge") == 0)
		return bench_merge_main(argc - 1, argv + 1);
	switch (bench_opts_parse(argc, argv, &o, stdout, stderr)) {
	case OPTS_EXIT:
		return 0;
	case OPTS_USAGE:
		return 2;
	case OPTS_OK:
		break;
	}
	signal(SIGPIPE, SIG_IGN);
	if (bench_nofile(o.conns, o.threads) < 0 || bench_ports(&o) < 0)
		return 1;
	if ((r = malloc(sizeof *r)) == NULL) {
		log_error("out of memory");
		return 1;
	}
	/* 1: it stopped on an error, said already, after it began to
	 * measure; what it measured is reported all the same. */
	if ((rc = bench_run(&o, r)) < 0) {
		free(r);
		return 1;
	}
	/* --json-stream's last line is --json's object. */
	if (o.json || o.json_stream)
		bench_report_json(stdout, &o, r);
	else
		bench_report_text(stdout, &o, r);
	status = rc > 0 || r->errors > 0 ? 1 : 0;
	/* A report lost to a full disk or a closed pipe must not exit 0;
	 * ferror also keeps what --json-stream's lines met. */
	if (fflush(stdout) != 0 || ferror(stdout)) {
		log_error("cannot write the report: %s", strerror(errno));
		status = 1;
	}
	if (o.hist != NULL && bench_hist_save(o.hist, &r->latency) < 0)
		status = 1;
	if (r->errors > 0)
		log_error("%llu error%s", (unsigned long long)r->errors,
		          r->errors == 1 ? "" : "s");
	if (r->stalled)
		status = 1;
	if (r->messages == 0 && !r->interrupted) {
		if (r->conns_lost == o.conns)
			log_error("no echo came back: every connection failed");
		else
			log_error("no echo came back in %.1f s", r->elapsed);
		status = 1;
	}
	nwarn = bench_warnings(&o, r, warn);
	for (i = 0; i < nwarn; i++)
		log_warn("warning: %s", warn[i]);
	if (o.strict && nwarn > 0)
		status = 1;
	sig = r->interrupted;
	free(r);
	/*
	 * Stopped by SIGINT or SIGTERM: the report is out; now die of the
	 * signal, so that a shell loop running forkloop-bench stops too (it
	 * sees WIFSIGNALED, as bash's wait-and-cooperative-exit rule needs).
	 */
	if (sig == SIGINT || sig == SIGTERM) {
		signal(sig, SIG_DFL);
		raise(sig);
	}
	return status;
}
