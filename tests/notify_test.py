"""Integration tests for what forkloop-echo (in the mode under test:
FORKLOOP_MODE, and FORKLOOP_THREADS for event mode's loops) and the relay
tell the service manager: the test binds a datagram socket of its own, as
systemd does, names it in NOTIFY_SOCKET with a watchdog in WATCHDOG_USEC,
and reads what arrives (sd_notify(3)): READY=1, WATCHDOG=1 every half of
the watchdog's timeout, STATUS= every 5 seconds, STOPPING=1 when a drain
starts.

Counts over a window have generous bounds: a busy machine delays timers,
it does not make them fire more often.
"""

import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fltest  # noqa: E402
from fltest import Server, recv_exactly  # noqa: E402

MODE = fltest.mode()
THREADS = os.environ.get("FORKLOOP_THREADS")
# The watchdog's timeout: pings every 200 ms.
WATCHDOG_USEC = 400000
ECHO_STATUS = re.compile(r"^\d+ connections, \d+(\.\d)? (B|kB|MB|GB)/s$")
RELAY_STATUS = re.compile(r"^\d+ clients, \d+(\.\d)? lines/s$")


class Manager:
    """The service manager's end: a datagram socket in a directory of its
    own, whose datagrams a thread collects with when each arrived."""

    def __init__(self):
        self.dir = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.dir.name, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.msgs = []
        self.cond = threading.Condition()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        while True:
            try:
                b = self.sock.recv(4096)
            except OSError:
                return
            with self.cond:
                self.msgs.append((time.monotonic(), b.decode("utf-8")))
                self.cond.notify_all()

    def env(self, **more):
        env = dict(os.environ, NOTIFY_SOCKET=self.path,
                   WATCHDOG_USEC=str(WATCHDOG_USEC))
        env.pop("WATCHDOG_PID", None)
        env.update(more)
        return env

    def fields(self):
        """Every KEY=VALUE of every datagram so far, as (time, key,
        value)."""
        out = []
        with self.cond:
            for t, m in self.msgs:
                for line in m.split("\n"):
                    k, _, v = line.partition("=")
                    out.append((t, k, v))
        return out

    def wait(self, key, pred=lambda v: True, timeout=20.0):
        """The first value of key that pred accepts, waiting for it."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for t, m in self.msgs:
                    for line in m.split("\n"):
                        k, _, v = line.partition("=")
                        if k == key and pred(v):
                            return v
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("no %s= in %r" % (key, self.msgs))
                self.cond.wait(left)

    def count(self, key, since=0.0):
        return sum(1 for t, k, _ in self.fields() if k == key and t >= since)

    def close(self):
        self.sock.close()
        self.dir.cleanup()


def worker_tid(pid, name):
    """The thread of pid whose name (comm) is name."""
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
            if f.read().strip() == name:
                return int(tid)
    raise AssertionError("no thread %s in %d" % (name, pid))


class stopped_thread:
    """Stop the thread tid alone while the block runs: ptrace(2)'s
    PTRACE_SEIZE and PTRACE_INTERRUPT stop one thread, not its process;
    PTRACE_DETACH lets it go on."""

    SEIZE, INTERRUPT, DETACH = 0x4206, 0x4207, 17
    WALL = 0x40000000

    def __init__(self, tid):
        self.tid = tid
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.ptrace.restype = ctypes.c_long
        self.libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long,
                                     ctypes.c_void_p, ctypes.c_void_p]

    def call(self, req):
        if self.libc.ptrace(req, self.tid, None, None) < 0:
            e = ctypes.get_errno()
            raise OSError(e, "ptrace(%#x, %d): %s" % (req, self.tid,
                                                       os.strerror(e)))

    def __enter__(self):
        self.call(self.SEIZE)
        self.call(self.INTERRUPT)
        os.waitpid(self.tid, self.WALL)
        return self

    def __exit__(self, *exc):
        self.call(self.DETACH)
        return False


class NotifyTest(fltest.ProcTestCase):

    def setUp(self):
        super().setUp()
        self.mgr = Manager()
        self.socks = []

    def tearDown(self):
        for s in self.socks:
            s.close()
        super().tearDown()
        self.mgr.close()

    def echo(self, env, *opts):
        argv = [fltest.binary("echo"), "--mode", MODE,
                "--listen", "127.0.0.1:0"] + list(opts)
        if THREADS is not None:
            argv += ["--threads", THREADS]
        return self.start(Server, argv, env=env)

    def relay(self, env):
        return self.start(Server, [fltest.binary("chat"), "--broker",
                                   "--listen", "127.0.0.1:0"], env=env)

    def assertWatchdog(self, window=2.0):
        """WATCHDOG=1, again and again: about 10 in 2 s; at least 3."""
        self.mgr.wait("WATCHDOG")
        start = time.monotonic()
        time.sleep(window)
        n = self.mgr.count("WATCHDOG", since=start)
        self.assertGreaterEqual(n, 3, self.mgr.msgs)
        self.assertLessEqual(n, 4 * window * 1e6 / WATCHDOG_USEC + 2,
                             self.mgr.msgs)

    def assertReadyFirst(self):
        self.mgr.wait("READY")
        first = self.mgr.fields()[0]
        self.assertEqual(first[1:], ("READY", "1"), self.mgr.msgs)

    def test_echo_ready_watchdog_status_stopping(self):
        srv = self.echo(self.mgr.env(), "--drain-timeout", "30")
        self.assertReadyFirst()
        s = socket.create_connection((srv.host, srv.port), timeout=30)
        self.socks.append(s)
        data = os.urandom(256 * 1024)
        s.sendall(data)
        self.assertEqual(recv_exactly(s, len(data)), data)
        self.assertWatchdog()
        # The first status line, 5 s after the start: one connection.
        status = self.mgr.wait("STATUS", timeout=30)
        self.assertRegex(status, ECHO_STATUS)
        self.assertTrue(status.startswith("1 connections, "), status)
        srv.signal(signal.SIGTERM)
        stopping = self.mgr.wait("STOPPING")
        self.assertEqual(stopping, "1")
        self.mgr.wait("STATUS", lambda v: v.startswith("draining: "))
        # In the same datagram as STOPPING=1.
        self.assertTrue(any(m.startswith("STOPPING=1\nSTATUS=draining: ")
                            for _, m in self.mgr.msgs), self.mgr.msgs)
        s.close()
        self.assertEqual(srv.wait(timeout=30), 0)

    def test_echo_watchdog_for_another_process_is_not_pinged(self):
        srv = self.echo(self.mgr.env(WATCHDOG_PID="1"))
        self.assertReadyFirst()
        time.sleep(1.5)
        self.assertEqual(self.mgr.count("WATCHDOG"), 0, self.mgr.msgs)
        srv.signal(signal.SIGTERM)
        self.mgr.wait("STOPPING")
        self.assertEqual(srv.wait(timeout=30), 0)

    def test_echo_without_notify_socket_sends_nothing(self):
        # strace sees every datagram the daemon would send: none, though
        # WATCHDOG_USEC is set, and it serves as ever.
        env = dict(os.environ, WATCHDOG_USEC=str(WATCHDOG_USEC))
        env.pop("NOTIFY_SOCKET", None)
        # LeakSanitizer cannot run under ptrace (strace): its check only.
        env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":detect_leaks=0"
        with tempfile.TemporaryDirectory() as d:
            trace = os.path.join(d, "trace")
            argv = ["strace", "-f", "-qq", "-o", trace, "-e",
                    "trace=socket,sendmsg,sendto",
                    fltest.binary("echo"), "--mode", MODE,
                    "--listen", "127.0.0.1:0"]
            if THREADS is not None:
                argv += ["--threads", THREADS]
            srv = self.start(Server, argv, env=env)
            s = socket.create_connection((srv.host, srv.port), timeout=30)
            self.socks.append(s)
            s.sendall(b"hello")
            self.assertEqual(recv_exactly(s, 5), b"hello")
            time.sleep(1.0)
            # The daemon is strace's child: the signal goes to it.
            daemon = [pid for pid, _ in fltest.children(srv.pid)]
            self.assertEqual(len(daemon), 1, daemon)
            os.kill(daemon[0], signal.SIGTERM)
            s.close()
            self.assertEqual(srv.wait(timeout=30), 0)
            with open(trace) as f:
                calls = f.read()
        # sd_notify's socket and datagram (the resolver may open a stream
        # socket to nscd, which is no notification).
        self.assertNotIn("AF_UNIX, SOCK_DGRAM", calls)
        self.assertNotIn("sun_path", calls)
        self.assertNotIn("WATCHDOG", calls)
        self.assertNotIn("READY", calls)

    def test_threads_watchdog_waits_for_every_loop(self):
        """With one worker's thread stopped (ptrace stops that thread
        alone), its loop turns no more and the pings stop; they resume with
        it."""
        self.assertIsNotNone(THREADS, "run with FORKLOOP_THREADS")
        srv = self.echo(self.mgr.env())
        self.assertWatchdog(1.0)
        tid = worker_tid(srv.pid, "echo-loop-1")
        with stopped_thread(tid):
            time.sleep(0.5)  # a ping under way when it stopped
            start = time.monotonic()
            time.sleep(1.5)
            self.assertEqual(self.mgr.count("WATCHDOG", since=start), 0,
                             self.mgr.msgs)
        self.assertWatchdog(2.0)
        srv.signal(signal.SIGTERM)
        self.assertEqual(srv.wait(timeout=30), 0)

    def test_relay_ready_watchdog_status_stopping(self):
        srv = self.relay(self.mgr.env())
        self.assertReadyFirst()
        a = socket.create_connection((srv.host, srv.port), timeout=30)
        b = socket.create_connection((srv.host, srv.port), timeout=30)
        self.socks += [a, b]
        a.sendall(b"hello\n")
        self.assertWatchdog()
        status = self.mgr.wait("STATUS", timeout=30)
        self.assertRegex(status, RELAY_STATUS)
        self.assertTrue(status.startswith("2 clients, "), status)
        srv.signal(signal.SIGTERM)
        self.assertEqual(self.mgr.wait("STOPPING"), "1")
        self.assertTrue(any(m.startswith("STOPPING=1\nSTATUS=draining: ")
                            for _, m in self.mgr.msgs), self.mgr.msgs)
        srv.wait(timeout=30)


if __name__ == "__main__":
    fltest.main()
