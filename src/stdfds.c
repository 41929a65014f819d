/*
 * stdfds.c - standard descriptors that are closed become /dev/null.
 *
 * Started with 0, 1 or 2 closed (`prog <&-`), a program's first socket
 * would get that number: it would read its own socket as standard input, or
 * write its messages to the peer. Opening /dev/null there first rules it out.
 */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "forkloop/stdfds.h"

void stdfds_open(void)
{
	int fd, null;

	for (fd = STDIN_FILENO; fd <= STDERR_FILENO; fd++) {
		if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
			continue;
		/* The lowest free number: fd, as the lower ones are open. */
		null = open("/dev/null", O_RDWR);
		if (null < 0)
			_exit(1);
		if (null == fd)
			continue;
		if (dup2(null, fd) < 0)
			_exit(1);
		close(null);
	}
}
