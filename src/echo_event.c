/* placeholder until the event design lands */
#include "forkloop/echo.h"

int echo_event_run(const struct echo_opts *o)
{
	(void)o;
	log_error("event mode is not built yet");
	return 1;
}
