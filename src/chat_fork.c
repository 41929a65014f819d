/*
 * chat_fork.c - the forked design, as in the classic tutorial: the parent
 * copies the socket to stdout, a child copies stdin to the socket.
 *
 * What the tutorial gets wrong and this does not: it writes exactly the bytes
 * read and retries short writes and EINTR (sock.c); signal handlers are
 * installed before fork and only set flags, shut the socket down, signal the
 * child or die of the signal; SIGPIPE is ignored; stdio is flushed before
 * fork; when the peer closes, the parent stops the child and reaps it, so
 * nothing is left behind and the process the user started is the last to
 * exit. The child counts what it read from stdin in a page shared with the
 * parent, which checks at the end that the peer acknowledged all of it
 * (chat_deliver): a reset or a write to a departed peer is reported, not
 * taken for success.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "forkloop/chat.h"
#include "forkloop/sock.h"

/* The child's exit status when the peer reset the connection. */
#define CHAT_CHILD_RESET 3

/* Shared between parent and child: what the child read and wrote. */
struct chat_fork_count {
	uint64_t got;  /* read from stdin */
	uint64_t sent; /* handed to write(2): the peer's acknowledgements
	                  (chat_deliver) tell what of it arrived */
};

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

/*
 * The child: stdin to the socket until EOF, then FIN, counting in *cnt.
 * Never returns.
 */
static void chat_fork_send(int fd, volatile struct chat_fork_count *cnt)
{
	static char buf[CHAT_CHUNK];
	ssize_t n;

	for (;;) {
		n = sock_read(STDIN_FILENO, buf, sizeof buf, &chat_sig_caught);
		if (n > 0)
			cnt->got += (uint64_t)n;
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
		/* Counted before the write: a child stopped by the parent just
		 * after it would otherwise have sent bytes it never counted. */
		cnt->sent += (uint64_t)n;
		if (sock_write_all(fd, buf, (size_t)n, &chat_sig_caught) < 0)
			break;
	}
	/* The parent reports it, with what was lost. */
	if (errno == EPIPE || errno == ECONNRESET)
		_exit(CHAT_CHILD_RESET);
	log_error("cannot send to the peer: %s", strerror(errno));
	_exit(1);
}

/*
 * The parent: the socket to stdout until the peer finishes sending. Returns
 * 0 then, CHAT_UNDELIVERED on a reset, 1 on an error, 128 + signal.
 */
static int chat_fork_recv(int fd)
{
	static char buf[CHAT_CHUNK];
	ssize_t n;

	for (;;) {
		/*
		 * chat_sig_wake_fd is fd by now: a signal caught after this
		 * check shuts fd down and the read returns; one caught before
		 * it (even before the fork) must be seen here.
		 */
		if (chat_sig_caught)
			return chat_sig_status();
		n = sock_read(fd, buf, sizeof buf, &chat_sig_caught);
		if (chat_sig_caught)
			return chat_sig_status();
		if (n == 0) {
			log_info("peer finished sending");
			return 0;
		}
		if (n < 0 && errno == ECONNRESET)
			return CHAT_UNDELIVERED;
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

static pid_t chat_fork_start(int fd, const struct chat_listeners *l,
                             volatile struct chat_fork_count *cnt)
{
	pid_t pid, parent = getpid();
	size_t i;

	fflush(NULL);
	chat_child_done = 0;
	pid = fork();
	if (pid != 0)
		return pid;
	/* Never outlive the parent, whatever kills it: it may be gone before
	 * the request (prctl(2), PR_SET_PDEATHSIG). */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
		_exit(1);
	/* From here on a signal makes the child _exit at once. */
	chat_sig_exit = 1;
	chat_sig_child = 0;
	chat_sig_wake_fd = -1;
	if (chat_sig_caught)
		_exit(0);
	for (i = 0; l != NULL && i < l->n; i++)
		close(l->fd[i]);
	chat_fork_send(fd, cnt);
	_exit(1);
}

int chat_fork_session(const struct chat_opts *o, int fd,
                      const struct chat_listeners *l)
{
	volatile struct chat_fork_count *cnt;
	int status, st, reset;
	pid_t pid;

	chat_fork_catch_chld();
	chat_stdio_set_blocking(STDIN_FILENO, 1);
	chat_stdio_set_blocking(STDOUT_FILENO, 1);
	cnt = mmap(NULL, sizeof *cnt, PROT_READ | PROT_WRITE,
	           MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (cnt == MAP_FAILED) {
		log_error("cannot map shared memory: %s", strerror(errno));
		close(fd);
		return 1;
	}
	cnt->got = cnt->sent = 0;
	pid = chat_fork_start(fd, l, cnt);
	if (pid < 0) {
		log_error("cannot fork: %s", strerror(errno));
		munmap((void *)cnt, sizeof *cnt);
		close(fd);
		return 1;
	}
	chat_sig_child = pid;
	chat_sig_wake_fd = fd;
	if (chat_sig_caught && !chat_child_done)
		kill(pid, chat_sig_caught);
	status = chat_fork_recv(fd);
	/*
	 * The peer finished sending. A connecting endpoint reads no more
	 * stdin; a listening one takes it as a half-close and keeps sending
	 * until stdin ends or the peer is gone. What the child read and could
	 * not send counts as not delivered.
	 */
	if ((status != 0 || !o->listen) && !chat_child_done)
		kill(pid, SIGTERM);
	st = chat_fork_reap(pid);
	chat_sig_wake_fd = -1;
	reset = status == CHAT_UNDELIVERED ||
	        (WIFEXITED(st) && WEXITSTATUS(st) == CHAT_CHILD_RESET);
	if (status == 0 && WIFEXITED(st) && WEXITSTATUS(st) == 1)
		status = 1;
	shutdown(fd, SHUT_WR);
	if ((status == 0 || reset) && !chat_sig_caught)
		status = chat_deliver(fd, cnt->sent, cnt->got - cnt->sent,
		                      reset);
	munmap((void *)cnt, sizeof *cnt);
	close(fd);
	if (chat_sig_caught)
		return chat_sig_status();
	return status;
}
