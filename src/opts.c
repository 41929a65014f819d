/*
 * opts.c - what the three programs' option parsers share.
 */
#include <getopt.h>
#include <string.h>

#include "forkloop/opts.h"

const char *opts_refused(char **argv, char shortopt[3])
{
	const char *arg = argv[optind - 1];

	/*
	 * optopt is 0 for an unknown long option, the option's value for a
	 * known one given a value it does not take, and the letter for a short
	 * one, which may sit inside a cluster such as "-vx".
	 */
	if (strncmp(arg, "--", 2) == 0 || optopt <= 0 || optopt > 255)
		return arg;
	shortopt[0] = '-';
	shortopt[1] = (char)optopt;
	shortopt[2] = '\0';
	return shortopt;
}

int opts_mode_fork(const char *arg)
{
	if (strcmp(arg, "event") == 0)
		return 0;
	if (strcmp(arg, "fork") == 0)
		return 1;
	return -1;
}
