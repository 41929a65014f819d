/*
 * chat_sig.c - the signal flags both designs of forkloop-chat and the relay
 * share: SIGINT and SIGTERM caught, blocking calls woken, a forked child
 * signalled, and the signal re-raised at the end.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "forkloop/chat.h"

volatile sig_atomic_t chat_sig_caught;
volatile sig_atomic_t chat_sig_wake_fd = -1;
volatile sig_atomic_t chat_sig_child;
volatile sig_atomic_t chat_sig_exit;

void chat_sig_handler(int sig)
{
	int saved = errno;
	int fd = chat_sig_wake_fd;
	pid_t child = chat_sig_child;

	if (chat_sig_exit) {
		/* A child with nothing to clean up: die of sig on return. */
		signal(sig, SIG_DFL);
		raise(sig);
		errno = saved;
		return;
	}
	chat_sig_caught = sig;
	if (fd >= 0)
		shutdown(fd, SHUT_RDWR);
	if (child > 0)
		kill(child, sig);
	errno = saved;
}

void chat_sig_install(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof sa);
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = chat_sig_handler;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
}

int chat_sig_status(void)
{
	return 128 + chat_sig_caught;
}

void chat_sig_reraise(void)
{
	int sig = chat_sig_caught;
	sigset_t set;
	ssize_t n;

	if (sig != SIGINT && sig != SIGTERM)
		return;
	chat_stdio_restore();
	/* The terminal echoed ^C; end that line before the shell's prompt. */
	if (sig == SIGINT && isatty(STDERR_FILENO)) {
		n = write(STDERR_FILENO, "\n", 1);
		(void)n;
	}
	signal(sig, SIG_DFL);
	sigemptyset(&set);
	sigaddset(&set, sig);
	sigprocmask(SIG_UNBLOCK, &set, NULL);
	raise(sig);
}
