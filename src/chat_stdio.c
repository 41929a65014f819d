/*
 * chat_stdio.c - standard input's and output's file status flags: saved at
 * start, restored at exit and while the process is stopped (a terminal is
 * shared with the shell), set again when it continues.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "forkloop/chat.h"

/* stdin's and stdout's flags as found, and as the session wants them. */
static volatile sig_atomic_t chat_saved_flags[2] = {-1, -1};
static volatile sig_atomic_t chat_session_flags[2] = {-1, -1};

void chat_stdio_restore(void)
{
	int fd;

	for (fd = 0; fd < 2; fd++) {
		if (chat_saved_flags[fd] >= 0)
			fcntl(fd, F_SETFL, (int)chat_saved_flags[fd]);
	}
}

static void chat_stdio_reapply(void)
{
	int fd;

	for (fd = 0; fd < 2; fd++) {
		if (chat_session_flags[fd] >= 0)
			fcntl(fd, F_SETFL, (int)chat_session_flags[fd]);
	}
}

/*
 * SIGTSTP, SIGTTIN or SIGTTOU: give the terminal its flags back, stop as the
 * default action would, and once continued (SIGCONT) set ours again. All of
 * it is async-signal-safe, as less(1) and vi(1) do it.
 */
static void chat_stop_handler(int sig)
{
	int saved = errno;
	struct sigaction dfl, old;
	sigset_t set;

	chat_stdio_restore();
	memset(&dfl, 0, sizeof dfl);
	sigemptyset(&dfl.sa_mask);
	dfl.sa_handler = SIG_DFL;
	sigaction(sig, &dfl, &old);
	sigemptyset(&set);
	sigaddset(&set, sig);
	raise(sig);
	/* Pending until now: the process stops here. */
	sigprocmask(SIG_UNBLOCK, &set, NULL);
	sigaction(sig, &old, NULL);
	chat_stdio_reapply();
	errno = saved;
}

void chat_stdio_save(void)
{
	static const int stops[] = {SIGTSTP, SIGTTIN, SIGTTOU};
	struct sigaction sa;
	size_t i;
	int fd;

	/* Read both first: 0 and 1 often share one open file description. */
	for (fd = 0; fd < 2; fd++)
		chat_saved_flags[fd] = fcntl(fd, F_GETFL);
	atexit(chat_stdio_restore);
	memset(&sa, 0, sizeof sa);
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = chat_stop_handler;
	sa.sa_flags = SA_RESTART;
	for (i = 0; i < sizeof stops / sizeof stops[0]; i++)
		sigaction(stops[i], &sa, NULL);
}

int chat_stdio_set_blocking(int fd, int blocking)
{
	int flags = fcntl(fd, F_GETFL);

	if (flags < 0)
		return -1;
	flags = blocking ? flags & ~O_NONBLOCK : flags | O_NONBLOCK;
	if (fcntl(fd, F_SETFL, flags) < 0)
		return -1;
	chat_session_flags[fd] = flags;
	return 0;
}
