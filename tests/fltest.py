"""Shared helpers for forkloop's integration tests.

Programs run in their own process group; every test kills exactly what it
started (by process group), never by name. Binaries come from the environment
that meson sets: FORKLOOP_ECHO, FORKLOOP_CHAT, FORKLOOP_BENCH, and the mode
under test from FORKLOOP_MODE.
"""

import contextlib
import os
import re
import resource
import signal
import socket
import subprocess
import threading
import time
import unittest

LISTEN_RE = re.compile(r"listening on (\S+):(\d+)")


def binary(name):
    path = os.environ.get("FORKLOOP_" + name.upper())
    if not path:
        raise RuntimeError("FORKLOOP_%s is not set (run through meson test)" % name.upper())
    return path


def mode():
    return os.environ.get("FORKLOOP_MODE", "event")


def pgroup_pids(pgid):
    """Every live process (zombies included) whose process group is pgid."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid:
            pids.append(int(entry))
    return pids


def proc_state(pid):
    with open("/proc/%d/stat" % pid) as f:
        stat = f.read()
    return stat[stat.rindex(")") + 2]


def live_pids(pgid):
    """The processes of group pgid that can still do something: zombies
    left to an init that does not reap them serve nothing."""
    out = []
    for pid in pgroup_pids(pgid):
        try:
            if proc_state(pid) != "Z":
                out.append(pid)
        except OSError:
            pass
    return out


@contextlib.contextmanager
def out_of_descriptors(pid):
    """Lower pid's open-file limit to its lowest free descriptor, so its
    next accept(2) fails with EMFILE; the limit comes back on exit."""
    used = {int(x) for x in os.listdir("/proc/%d/fd" % pid)}
    lowest = min(set(range(len(used) + 1)) - used)
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (lowest, hard))
    try:
        yield
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))


def children(pid):
    """Direct children of pid, as (pid, state) pairs."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            out.append((int(entry), fields[0]))
    return out


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_until(pred, timeout=10.0, interval=0.02):
    """Poll pred until it returns true or timeout passes; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)


class Proc:
    """A program started in its own process group, with stderr collected."""

    def __init__(self, argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                 env=None, pass_fds=()):
        self.argv = argv
        self.p = subprocess.Popen(argv, stdin=stdin, stdout=stdout,
                                  stderr=subprocess.PIPE,
                                  start_new_session=True, env=env,
                                  pass_fds=pass_fds)
        self.pid = self.p.pid
        self.pgid = self.p.pid
        self.lines = []
        self.cond = threading.Condition()
        self.t = threading.Thread(target=self._read_stderr, daemon=True)
        self.t.start()

    def _read_stderr(self):
        for raw in self.p.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()
        with self.cond:
            self.lines.append(None)  # EOF marker
            self.cond.notify_all()

    def stderr_text(self):
        with self.cond:
            return "\n".join(l for l in self.lines if l is not None)

    def wait_line(self, pattern, timeout=10.0, count=1):
        """Wait for count stderr lines matching pattern; return the matches."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [rx.search(l) for l in self.lines if l is not None]
                found = [m for m in found if m]
                if len(found) >= count:
                    return found
                if None in self.lines:
                    raise AssertionError("%s exited before printing /%s/; stderr:\n%s"
                                         % (self.argv[0], pattern, self.stderr_text()))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("timed out waiting for /%s/; stderr:\n%s"
                                         % (pattern, self.stderr_text()))
                self.cond.wait(left)

    def signal(self, sig):
        os.kill(self.pid, sig)

    def wait(self, timeout=10.0):
        return self.p.wait(timeout=timeout)

    def kill_group(self):
        """SIGKILL whatever is left of the process group and reap the leader."""
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.t.join(timeout=5)
        for f in (self.p.stdin, self.p.stdout, self.p.stderr):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass


class Server(Proc):
    """A server started with --listen 127.0.0.1:0; .port is what it printed."""

    def __init__(self, argv, count=1, **kw):
        super().__init__(argv, **kw)
        m = self.wait_line(LISTEN_RE.pattern, count=count)
        self.addrs = [(x.group(1).strip("[]"), int(x.group(2))) for x in m]
        self.host, self.port = self.addrs[0]

    def connect(self, timeout=10.0):
        s = socket.create_connection((self.host, self.port), timeout=timeout)
        return s


class ProcTestCase(unittest.TestCase):
    """Kills every process group a test started, and fails if any survived a
    clean shutdown the test expected."""

    def setUp(self):
        self.procs = []

    def start(self, cls, *a, **kw):
        p = cls(*a, **kw)
        self.procs.append(p)
        return p

    def tearDown(self):
        for p in self.procs:
            p.kill_group()

    def assertGroupGone(self, proc, timeout=10.0):
        """After a clean exit, nothing of proc's process group may remain."""
        left = wait_until(lambda: not pgroup_pids(proc.pgid), timeout)
        self.assertFalse(pgroup_pids(proc.pgid) if not left else [],
                         "processes left in group %d" % proc.pgid)


def recv_exactly(sock, n, timeout=30.0):
    sock.settimeout(timeout)
    chunks = []
    got = 0
    while got < n:
        b = sock.recv(min(1 << 20, n - got))
        if not b:
            break
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


def recv_all(sock, timeout=30.0):
    """Read until EOF."""
    sock.settimeout(timeout)
    chunks = []
    while True:
        b = sock.recv(1 << 20)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def main():
    unittest.main(verbosity=2)
