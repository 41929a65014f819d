/*
 * forkloop-chat - point-to-point chat endpoint, or with --broker a relay
 * among many clients: parse options, run it.
 */
#include "forkloop/chat.h"
#include "forkloop/listener.h"
#include "forkloop/log.h"
#include "forkloop/stdfds.h"

int main(int argc, char **argv)
{
	struct chat_opts o;
	int status;

	stdfds_open();
	log_init(argv[0], LOG_NORMAL);
	switch (chat_opts_parse(argc, argv, &o, stdout, stderr)) {
	case OPTS_EXIT:
		return 0;
	case OPTS_USAGE:
		return 2;
	case OPTS_OK:
		break;
	}
	log_init(argv[0], o.log_level);
	status = o.broker ? chat_broker_run(&o) : chat_run(&o);
	chat_opts_free(&o);
	/* Before dying of a signal, which skips atexit(3). */
	listener_remove_files();
	/* Ended by SIGINT or SIGTERM: die of it, so a shell loop stops. */
	chat_sig_reraise();
	return status;
}
