/*
 * chat_fork.c - the forked design, as in the classic tutorial: the parent
 * copies the socket to stdout, a child copies stdin to the socket.
 *
 * What the tutorial gets wrong and this does not: it writes exactly the bytes
 * read and retries short writes and EINTR (sock.c); signal handlers are
 * installed before fork and only set flags, shut the socket down, signal the
 * child or _exit; SIGPIPE is ignored; stdio is flushed before fork; when the
 * peer closes, the parent stops the child and reaps it, so nothing is left
 * behind and the process the user started is the last to exit.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "forkloop/chat.h"
#include "forkloop/sock.h"

static volatile sig_atomic_t chat_child_done;
static volatile sig_atomic_t chat_child_status;

static void chat_fork_chldcb(int sig)
{
	int saved = errno, st;
	pid_t pid = chat_sig_child;

	(void)sig;
	if (pid > 0 && waitpid(pid, &st, WNOHANG) == pid) {
		chat_sig_child = 0;
		chat_child_status = st;
		chat_child_done = 1;
	}
	errno = saved;
}

/* Reap the child as soon as it exits, so it never lingers as a zombie. */
static void chat_fork_catch_chld(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof sa);
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = chat_fork_chldcb;
	sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
	sigaction(SIGCHLD, &sa, NULL);
}

/* The child: stdin to the socket until EOF, then FIN. Never returns. */
static void chat_fork_send(int fd)
{
	static char buf[CHAT_CHUNK];
	ssize_t n;

	for (;;) {
		n = sock_read(STDIN_FILENO, buf, sizeof buf, &chat_sig_caught);
		if (n == 0) {
			shutdown(fd, SHUT_WR);
			_exit(0);
		}
		if (n < 0) {
			log_error("cannot read standard input: %s",
			          strerror(errno));
			shutdown(fd, SHUT_WR);
			_exit(1);
		}
		if (sock_write_all(fd, buf, (size_t)n, &chat_sig_caught) < 0)
			break;
	}
	if (errno == EPIPE || errno == ECONNRESET) {
		log_verbose("peer is gone: %s", strerror(errno));
		_exit(0);
	}
	log_error("cannot send to the peer: %s", strerror(errno));
	_exit(1);
}

/* The parent: the socket to stdout until the peer closes. */
static int chat_fork_recv(int fd)
{
	static char buf[CHAT_CHUNK];
	ssize_t n;

	for (;;) {
		n = sock_read(fd, buf, sizeof buf, &chat_sig_caught);
		if (chat_sig_caught)
			return chat_sig_status();
		if (n == 0) {
			log_info("peer closed the connection");
			return 0;
		}
		if (n < 0 && errno == ECONNRESET) {
			log_info("peer closed the connection: %s",
			         strerror(errno));
			return 0;
		}
		if (n < 0) {
			log_error("cannot receive from the peer: %s",
			          strerror(errno));
			return 1;
		}
		if (sock_write_all(STDOUT_FILENO, buf, (size_t)n,
		                   &chat_sig_caught) < 0) {
			if (chat_sig_caught)
				return chat_sig_status();
			log_error("cannot write standard output: %s",
			          strerror(errno));
			return 1;
		}
	}
}

/* Wait for the child; returns its wait status. */
static int chat_fork_reap(pid_t pid)
{
	int st;
	pid_t r;

	for (;;) {
		if (chat_child_done)
			return chat_child_status;
		r = waitpid(pid, &st, 0);
		if (r == pid) {
			chat_sig_child = 0;
			return st;
		}
		if (r < 0 && errno != EINTR)
			return chat_child_done ? chat_child_status : 0;
	}
}

static pid_t chat_fork_start(int fd, int lfd)
{
	pid_t pid;

	fflush(NULL);
	chat_child_done = 0;
	pid = fork();
	if (pid != 0)
		return pid;
	/* From here on a signal makes the child _exit at once. */
	chat_sig_exit = 1;
	chat_sig_child = 0;
	chat_sig_wake_fd = -1;
	if (chat_sig_caught)
		_exit(0);
	if (lfd >= 0)
		close(lfd);
	chat_fork_send(fd);
	_exit(1);
}

int chat_fork_session(const struct chat_opts *o, int fd, int lfd)
{
	int status, st;
	pid_t pid;

	chat_fork_catch_chld();
	sock_set_blocking(STDIN_FILENO, 1);
	sock_set_blocking(STDOUT_FILENO, 1);
	pid = chat_fork_start(fd, lfd);
	if (pid < 0) {
		log_error("cannot fork: %s", strerror(errno));
		close(fd);
		return 1;
	}
	chat_sig_child = pid;
	chat_sig_wake_fd = fd;
	if (chat_sig_caught && !chat_child_done)
		kill(pid, SIGTERM);
	status = chat_fork_recv(fd);
	/*
	 * The peer closed. A connecting endpoint is done; a listening one
	 * takes it as a half-close and keeps sending until stdin ends or the
	 * peer is gone.
	 */
	if ((status != 0 || !o->listen) && !chat_child_done)
		kill(pid, SIGTERM);
	st = chat_fork_reap(pid);
	chat_sig_wake_fd = -1;
	shutdown(fd, SHUT_WR);
	close(fd);
	if (chat_sig_caught)
		return chat_sig_status();
	if (status == 0 && WIFEXITED(st) && WEXITSTATUS(st) != 0)
		return 1;
	return status;
}
