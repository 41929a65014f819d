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
 *
 * TLS is different: one process, no child (chat_fork_tls_session). An SSL's
 * state (keys, record sequence numbers, buffered records) lives in the
 * memory of the process using it; after fork each process would have its
 * own copy, the two would number their records from the same point, and
 * the peer would reject the connection at the first record of the second
 * writer (or of a reader answering a key update). So over TLS the process
 * polls stdin, stdout and the non-blocking socket and moves one chunk each
 * way at a time through SSL_read and SSL_write: stdin is not read while its
 * last chunk waits for SSL_write, the socket is not read while its last
 * chunk waits for stdout, the backpressure blocking gives the two
 * processes. At stdin's end it sends close_notify (SSL_shutdown) and a
 * FIN, and reads until the peer's close_notify; a FIN without one is
 * reported as a truncation (CHAT_TLS_TRUNCATED). SIGINT and SIGTERM send
 * close_notify too (chat_tls_quit). chat_deliver_tls checks the end.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

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

/* The TLS session's state: one chunk in each direction. */
struct chat_tf {
	SSL *ssl;
	int fd;
	int listen;
	char in[CHAT_CHUNK]; /* from stdin, for SSL_write */
	size_t in_len, in_off;
	char out[CHAT_CHUNK]; /* from SSL_read, for stdout */
	size_t out_len, out_off;
	short rd_wait; /* SSL_read waits for the socket: POLLIN/POLLOUT */
	short wr_wait; /* SSL_write or SSL_shutdown waits, likewise */
	int in_ready;  /* poll said stdin is readable */
	int out_ready; /* stdout took all it was given last time */
	int in_eof;
	int peer_eof;
	int notify_sent; /* close_notify and FIN */
	int reset;
	uint64_t notify_at; /* chat_tls_notify_mark, after the peer's */
	int status;         /* -1 while the session runs */
};

/*
 * After SSL_read, SSL_write or SSL_shutdown returned r: the poll event it
 * waits for, or 0 after recording how the session ends.
 */
static short chat_tf_wait(struct chat_tf *t, int r)
{
	int e = SSL_get_error(t->ssl, r);
	unsigned long err = ERR_peek_error();
	char why[256];

	if (e == SSL_ERROR_WANT_READ)
		return POLLIN;
	if (e == SSL_ERROR_WANT_WRITE)
		return POLLOUT;
	if (ERR_GET_LIB(err) == ERR_LIB_SSL &&
	    ERR_GET_REASON(err) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
		ERR_clear_error();
		log_error("%s", CHAT_TLS_TRUNCATED);
		t->status = 1;
		return 0;
	}
	if (e == SSL_ERROR_SYSCALL && err == 0 &&
	    (errno == ECONNRESET || errno == EPIPE)) {
		/* The peer may have said why before it reset. */
		err = chat_tls_alert(t->ssl);
		if (err != 0) {
			log_error("connection to the peer: %s",
			          tls_strerror(err, why, sizeof why));
			t->status = 1;
			return 0;
		}
		/* chat_deliver_tls reports it, with what was lost. */
		t->reset = 1;
		t->peer_eof = 1;
		return 0;
	}
	if (e == SSL_ERROR_SYSCALL && err == 0)
		snprintf(why, sizeof why, "%s",
		         errno != 0 ? strerror(errno) : "unknown TLS error");
	else
		tls_strerror(0, why, sizeof why);
	log_error("connection to the peer: %s", why);
	t->status = 1;
	return 0;
}

/* One read(2) of stdin once poll said it is readable: 1 if it did. */
static int chat_tf_stdin(struct chat_tf *t)
{
	ssize_t n;

	if (t->in_eof || t->in_len > 0 || !t->in_ready)
		return 0;
	t->in_ready = 0;
	n = read(STDIN_FILENO, t->in, sizeof t->in);
	if (n > 0) {
		t->in_len = (size_t)n;
		t->in_off = 0;
		return 1;
	}
	if (n == 0) {
		t->in_eof = 1;
		return 1;
	}
	if (errno == EAGAIN || errno == EINTR)
		return 0;
	log_error("cannot read standard input: %s", strerror(errno));
	t->status = 1;
	return 0;
}

/* SSL_write what stdin gave; retried with the same bytes (SSL_write(3)). */
static int chat_tf_send(struct chat_tf *t)
{
	int r;

	if (t->in_len == 0 || t->wr_wait != 0 || t->reset)
		return 0;
	ERR_clear_error();
	errno = 0;
	r = SSL_write(t->ssl, t->in + t->in_off, (int)(t->in_len - t->in_off));
	if (r <= 0) {
		t->wr_wait = chat_tf_wait(t, r);
		return 0;
	}
	t->in_off += (size_t)r;
	if (t->in_off == t->in_len)
		t->in_len = t->in_off = 0;
	return 1;
}

/* At stdin's end, once all of it went out: close_notify, then FIN. */
static int chat_tf_notify(struct chat_tf *t)
{
	int r;

	if (!t->in_eof || t->in_len > 0 || t->notify_sent || t->wr_wait != 0 ||
	    t->reset)
		return 0;
	if (t->peer_eof && t->notify_at == 0)
		t->notify_at = chat_tls_notify_mark(t->fd);
	ERR_clear_error();
	errno = 0;
	r = SSL_shutdown(t->ssl);
	if (r < 0) {
		t->wr_wait = chat_tf_wait(t, r);
		return 0;
	}
	shutdown(t->fd, SHUT_WR);
	t->notify_sent = 1;
	log_verbose("end of standard input; sent close_notify and FIN");
	return 1;
}

static int chat_tf_recv(struct chat_tf *t)
{
	int r;

	if (t->peer_eof || t->out_len > 0 || t->rd_wait != 0)
		return 0;
	ERR_clear_error();
	errno = 0;
	r = SSL_read(t->ssl, t->out, sizeof t->out);
	if (r > 0) {
		t->out_len = (size_t)r;
		t->out_off = 0;
		return 1;
	}
	if (SSL_get_error(t->ssl, r) != SSL_ERROR_ZERO_RETURN) {
		t->rd_wait = chat_tf_wait(t, r);
		return 0;
	}
	t->peer_eof = 1;
	log_info("peer finished sending");
	/* As chat_fork_session: a connecting endpoint reads no more stdin. */
	if (!t->listen)
		t->in_eof = 1;
	return 1;
}

static int chat_tf_stdout(struct chat_tf *t)
{
	ssize_t n;

	if (t->out_len == 0 || !t->out_ready)
		return 0;
	n = write(STDOUT_FILENO, t->out + t->out_off, t->out_len - t->out_off);
	if (n > 0) {
		t->out_off += (size_t)n;
		if (t->out_off == t->out_len)
			t->out_len = t->out_off = 0;
		return 1;
	}
	if (n < 0 && errno == EAGAIN)
		t->out_ready = 0;
	else if (n < 0 && errno != EINTR) {
		log_error("cannot write standard output: %s", strerror(errno));
		t->status = 1;
	}
	return 0;
}

/*
 * Wait for whatever blocks progress, SIGINT and SIGTERM blocked but for
 * the wait (ppoll(2), as chat_accept). Returns -1 on an error.
 */
static int chat_tf_poll(struct chat_tf *t, const sigset_t *unblocked)
{
	struct pollfd p[3];
	int r;

	p[0].fd = !t->in_eof && t->in_len == 0 ? STDIN_FILENO : -1;
	p[0].events = POLLIN;
	p[1].fd = (t->rd_wait | t->wr_wait) != 0 ? t->fd : -1;
	p[1].events = (short)(t->rd_wait | t->wr_wait);
	p[2].fd = t->out_len > 0 && !t->out_ready ? STDOUT_FILENO : -1;
	p[2].events = POLLOUT;
	if (p[0].fd < 0 && p[1].fd < 0 && p[2].fd < 0) {
		log_error("cannot go on: nothing left to wait for");
		return -1;
	}
	r = ppoll(p, 3, NULL, unblocked);
	if (r < 0 && errno != EINTR) {
		log_error("cannot wait for the peer: %s", strerror(errno));
		return -1;
	}
	if (r <= 0)
		return 0;
	if (p[0].revents != 0)
		t->in_ready = 1;
	if (p[1].revents != 0)
		t->rd_wait = t->wr_wait = 0;
	if (p[2].revents != 0)
		t->out_ready = 1;
	return 0;
}

/* Move bytes until the session ends; returns its status. */
static int chat_tf_loop(struct chat_tf *t)
{
	sigset_t stop, old;
	int progress;

	sigemptyset(&stop);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGTERM);
	sigprocmask(SIG_BLOCK, &stop, &old);
	while (t->status < 0 && !chat_sig_caught) {
		progress = chat_tf_stdin(t) + chat_tf_send(t) +
		           chat_tf_notify(t) + chat_tf_recv(t) +
		           chat_tf_stdout(t);
		if (t->status >= 0)
			break;
		if (t->peer_eof && t->out_len == 0 &&
		    (t->notify_sent || t->reset))
			t->status = 0;
		else if (!progress && chat_tf_poll(t, &old) < 0)
			t->status = 1;
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	return chat_sig_caught ? chat_sig_status() : t->status;
}

int chat_fork_tls_session(const struct chat_opts *o, int fd, SSL *ssl)
{
	static struct chat_tf t;
	int status;

	memset(&t, 0, sizeof t);
	t.ssl = ssl;
	t.fd = fd;
	t.listen = o->listen;
	t.out_ready = 1;
	t.status = -1;
	chat_stdio_set_blocking(STDIN_FILENO, 1);
	if (chat_stdio_set_blocking(STDOUT_FILENO, 0) < 0) {
		log_error("cannot set up standard output: %s", strerror(errno));
		t.status = 1;
	}
	status = t.status < 0 ? chat_tf_loop(&t) : t.status;
	/* A deliberate quit ends TLS cleanly, as TCP's FIN does. */
	if (chat_sig_caught)
		chat_tls_quit(ssl);
	/* Whatever happened, the peer sees a FIN. */
	shutdown(fd, SHUT_WR);
	if ((status == 0 || t.reset) && !chat_sig_caught)
		status = chat_deliver_tls(fd, t.in_len - t.in_off, t.reset,
		                          t.notify_at);
	SSL_free(ssl);
	close(fd);
	if (chat_sig_caught)
		return chat_sig_status();
	return status;
}
