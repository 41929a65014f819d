/*
 * stdfds.h - make sure descriptors 0, 1 and 2 are open before anything else.
 */
#ifndef FORKLOOP_STDFDS_H
#define FORKLOOP_STDFDS_H

/*
 * Open /dev/null (read and write) onto each of standard input, output and
 * error that is closed (fcntl(2) F_GETFD fails with EBADF), so a closed one
 * behaves as /dev/null and no descriptor the program opens later (a socket,
 * an epoll instance) can land on 0, 1 or 2 and be taken for it. Call it first
 * thing in main, before anything opens a descriptor; as OpenSSH's
 * sanitise_stdfd does, it exits with status 1 if /dev/null cannot be opened
 * (nothing can be reported then: standard error may be what is missing).
 */
void stdfds_open(void);

#endif
