/*
 * opts.h - what the three programs' option parsers share.
 */
#ifndef FORKLOOP_OPTS_H
#define FORKLOOP_OPTS_H

enum opts_result {
	OPTS_OK = 0,    /* run */
	OPTS_EXIT = 1,  /* --help or --version printed; exit 0 */
	OPTS_USAGE = 2, /* bad usage reported; exit 2 */
};

/*
 * The option getopt_long just refused, as the user typed it: "--bogus",
 * "--verbose=yes", or "-x" out of "-vx". Call it right after getopt_long
 * returned '?'; short is scratch space for the "-x" case.
 */
const char *opts_refused(char **argv, char shortopt[3]);

/* Every --mode a program takes, for messages. */
#define OPTS_MODES "event, fork"

/* --mode's value: 0 for "event", 1 for "fork", -1 for anything else. */
int opts_mode_fork(const char *arg);

#endif
