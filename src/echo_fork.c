/* placeholder until the fork design lands */
#include "forkloop/echo.h"

int echo_fork_run(const struct echo_opts *o)
{
	(void)o;
	log_error("fork mode is not built yet");
	return 1;
}
