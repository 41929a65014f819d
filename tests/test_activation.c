/*
 * test_activation.c - the socket activation protocol parsed by hand, on
 * descriptors made here, and readiness notification.
 */
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "forkloop/activation.h"

/* Descriptors the hand-made protocol tests put their sockets at. */
#define START 200

static struct activation act;
static char err[512];

static int bound_socket(int type)
{
	struct sockaddr_in sin;
	int fd = socket(AF_INET, type, 0);

	assert_true(fd >= 0);
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
	if (type == SOCK_STREAM)
		assert_int_equal(listen(fd, 8), 0);
	return fd;
}

/* Move fd to target, without close-on-exec, as a service manager would. */
static void place(int fd, int target)
{
	if (fd != target) {
		assert_int_equal(dup2(fd, target), target);
		close(fd);
	}
	assert_int_equal(fcntl(target, F_GETFD) & FD_CLOEXEC, 0);
}

static int parse(const char *pid, const char *fds, const char *names)
{
	memset(&act, 0x5a, sizeof act);
	err[0] = '\0';
	return activation_parse(pid, fds, names, getpid(), START, &act, err,
	                        sizeof err);
}

static const char *self(void)
{
	static char buf[32];

	snprintf(buf, sizeof buf, "%ld", (long)getpid());
	return buf;
}

static void test_not_activated(void **state)
{
	char other[32];

	(void)state;
	assert_int_equal(parse(NULL, NULL, NULL), 0);
	assert_int_equal(act.n, 0);
	assert_int_equal(parse(self(), NULL, NULL), 0);
	assert_int_equal(parse(NULL, "2", NULL), 0);
	/* Meant for another process (a parent that did not unset them). */
	snprintf(other, sizeof other, "%ld", (long)getpid() + 1);
	assert_int_equal(parse(other, "2", NULL), 0);
	assert_int_equal(act.n, 0);
	assert_int_equal(parse(self(), "0", NULL), 0);
}

static void test_bad_variables(void **state)
{
	(void)state;
	assert_int_equal(parse("abc", "1", NULL), -1);
	assert_non_null(strstr(err, "LISTEN_PID"));
	assert_int_equal(parse("0", "1", NULL), -1);
	assert_int_equal(parse("", "1", NULL), -1);
	assert_int_equal(parse(self(), "x", NULL), -1);
	assert_non_null(strstr(err, "LISTEN_FDS"));
	assert_int_equal(parse(self(), "-1", NULL), -1);
	assert_int_equal(parse(self(), "65", NULL), -1);
}

static void test_stream_and_datagram(void **state)
{
	(void)state;
	place(bound_socket(SOCK_STREAM), START);
	place(bound_socket(SOCK_DGRAM), START + 1);
	assert_int_equal(parse(self(), "2", "web:echo-udp"), 2);
	assert_int_equal(act.n, 2);
	assert_int_equal(act.fds[0].fd, START);
	assert_int_equal(act.fds[0].socktype, SOCK_STREAM);
	assert_string_equal(act.fds[0].name, "web");
	assert_int_equal(act.fds[1].fd, START + 1);
	assert_int_equal(act.fds[1].socktype, SOCK_DGRAM);
	assert_string_equal(act.fds[1].name, "echo-udp");
	/* Not passed on to children. */
	assert_true(fcntl(START, F_GETFD) & FD_CLOEXEC);
	assert_true(fcntl(START + 1, F_GETFD) & FD_CLOEXEC);
	/* Names are optional; empty ones are fine. */
	assert_int_equal(parse(self(), "2", NULL), 2);
	assert_string_equal(act.fds[0].name, "");
	assert_int_equal(parse(self(), "2", ":"), 2);
	assert_string_equal(act.fds[1].name, "");
	/* A name per descriptor, or none. */
	assert_int_equal(parse(self(), "2", "one"), -1);
	assert_non_null(strstr(err, "LISTEN_FDNAMES"));
	assert_int_equal(parse(self(), "2", "a:b:c"), -1);
	close(START);
	close(START + 1);
}

static void test_unusable_descriptors(void **state)
{
	int sv[2], p[2];

	(void)state;
	/* Nothing there. */
	close(START);
	assert_int_equal(parse(self(), "1", NULL), -1);
	assert_non_null(strstr(err, "fd 200"));
	/* A connected stream (Accept=yes), not a listener. */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	place(sv[0], START);
	assert_int_equal(parse(self(), "1", NULL), -1);
	assert_non_null(strstr(err, "not listening"));
	close(START);
	close(sv[1]);
	/* Not a socket. */
	assert_int_equal(pipe(p), 0);
	place(p[0], START);
	assert_int_equal(parse(self(), "1", NULL), -1);
	assert_non_null(strstr(err, "fd 200"));
	close(START);
	close(p[1]);
	/* A socket of another type. */
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
	place(sv[0], START);
	assert_int_equal(parse(self(), "1", NULL), -1);
	assert_non_null(strstr(err, "seqpacket"));
	close(START);
	close(sv[1]);
}

/*
 * Through the environment and descriptor 3, as a service manager starts us:
 * libsystemd's parser in a build with it, the hand-made one otherwise.
 */
static void test_from_environment(void **state)
{
	int saved = fcntl(ACTIVATION_FDS_START, F_DUPFD_CLOEXEC, 100);

	(void)state;
	place(bound_socket(SOCK_DGRAM), ACTIVATION_FDS_START);
	assert_int_equal(setenv("LISTEN_PID", self(), 1), 0);
	assert_int_equal(setenv("LISTEN_FDS", "1", 1), 0);
	assert_int_equal(setenv("LISTEN_FDNAMES", "echo", 1), 0);
	assert_int_equal(activation_get(&act, err, sizeof err), 1);
	assert_int_equal(act.fds[0].fd, ACTIVATION_FDS_START);
	assert_int_equal(act.fds[0].socktype, SOCK_DGRAM);
	assert_string_equal(act.fds[0].name, "echo");
	assert_true(fcntl(ACTIVATION_FDS_START, F_GETFD) & FD_CLOEXEC);
	assert_null(getenv("LISTEN_PID"));
	assert_null(getenv("LISTEN_FDS"));
	assert_null(getenv("LISTEN_FDNAMES"));
	/* Once taken, not taken again. */
	assert_int_equal(activation_get(&act, err, sizeof err), 0);
	close(ACTIVATION_FDS_START);
	if (saved >= 0) {
		dup2(saved, ACTIVATION_FDS_START);
		close(saved);
	}
}

static void test_notify(void **state)
{
	struct sockaddr_un sun;
	char path[] = "/tmp/forkloop-notify-XXXXXX", sock[64], buf[64];
	struct timeval tv = {5, 0};
	ssize_t n;
	int fd;

	(void)state;
	assert_non_null(mkdtemp(path));
	snprintf(sock, sizeof sock, "%s/notify", path);
	fd = socket(AF_UNIX, SOCK_DGRAM, 0);
	assert_true(fd >= 0);
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, sock, strlen(sock) + 1);
	assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof sun), 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	/* No manager: nothing happens. */
	unsetenv("NOTIFY_SOCKET");
	activation_notify("READY=1");
	assert_int_equal(setenv("NOTIFY_SOCKET", sock, 1), 0);
	activation_notify("READY=1");
	n = recv(fd, buf, sizeof buf - 1, 0);
	assert_int_equal(n, 7);
	buf[n] = '\0';
	assert_string_equal(buf, "READY=1");
	unsetenv("NOTIFY_SOCKET");
	close(fd);
	unlink(sock);
	rmdir(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_not_activated),
	        cmocka_unit_test(test_bad_variables),
	        cmocka_unit_test(test_stream_and_datagram),
	        cmocka_unit_test(test_unusable_descriptors),
	        cmocka_unit_test(test_from_environment),
	        cmocka_unit_test(test_notify),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
