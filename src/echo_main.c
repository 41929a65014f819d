/*
 * forkloop-echo - echo daemon: parse options, run the chosen design.
 */
#include <stdio.h>

#include "forkloop/echo.h"
#include "forkloop/log.h"
#include "forkloop/stdfds.h"

int main(int argc, char **argv)
{
	struct echo_opts o;
	int status;

	stdfds_open();
	log_init(argv[0], LOG_NORMAL);
	switch (echo_opts_parse(argc, argv, &o, stdout, stderr)) {
	case OPTS_EXIT:
		return 0;
	case OPTS_USAGE:
		return 2;
	case OPTS_OK:
		break;
	}
	log_init(argv[0], o.log_level);
	if (o.mode == ECHO_MODE_FORK)
		status = echo_fork_run(&o);
	else
		status = echo_event_run(&o);
	echo_opts_free(&o);
	return status;
}
