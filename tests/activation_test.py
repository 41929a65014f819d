"""Integration tests for forkloop-echo under systemd socket activation.

systemd-socket-activate (Debian package systemd) binds the sockets, waits for
the first connection or datagram, and execs forkloop-echo with LISTEN_PID,
LISTEN_FDS and LISTEN_FDNAMES set, as systemd does for a .socket unit. The
datagram case nests two of them: the outer passes its socket through to the
inner, which adds its own. A NOTIFY_SOCKET made here receives READY=1.
"""

import os
import re
import shutil
import socket
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fltest  # noqa: E402
from fltest import Proc, wait_until  # noqa: E402

MODE = fltest.mode()
ACTIVATE = shutil.which("systemd-socket-activate")


def free_port():
    """A port free for both TCP and UDP on 127.0.0.1 just now."""
    for _ in range(50):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            t.close()
            u.close()
    raise AssertionError("no free port found")


def socket_inodes(pid):
    out = {}
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            out[int(fd)] = link[8:-1]
    return out


class ActivationTest(fltest.ProcTestCase):

    def setUp(self):
        super().setUp()
        self.assertIsNotNone(ACTIVATE, "systemd-socket-activate is not "
                             "installed (Debian package systemd)")
        self.dir = tempfile.mkdtemp(prefix="forkloop-activation-")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify_path = os.path.join(self.dir, "notify")
        self.notify.bind(self.notify_path)
        self.socks = [self.notify]

    def tearDown(self):
        for s in self.socks:
            s.close()
        super().tearDown()
        shutil.rmtree(self.dir, ignore_errors=True)

    def echo_argv(self, *opts):
        # --listen is given to prove that it is not used.
        return [fltest.binary("echo"), "--mode", MODE, "--listen",
                "127.0.0.1:0"] + list(opts)

    def activate(self, argv, port):
        env = dict(os.environ, NOTIFY_SOCKET=self.notify_path)
        p = self.start(Proc, argv, env=env)
        p.wait_line(r"Listening on 127\.0\.0\.1:%d as 3" % port)
        return p

    def assertReady(self):
        self.notify.settimeout(10)
        self.assertEqual(self.notify.recv(100), b"READY=1")

    def tcp_roundtrip(self, port, data):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.socks.append(s)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        return fltest.recv_all(s, 10)

    def listening_lines(self, p):
        return [l for l in p.stderr_text().splitlines()
                if l.startswith("forkloop-echo: listening on")]

    def test_stream_socket(self):
        port = free_port()
        p = self.activate([ACTIVATE, "-l", "127.0.0.1:%d" % port,
                           "-E", "NOTIFY_SOCKET"] + self.echo_argv(), port)
        data = os.urandom(100000)
        # The first connection is what makes systemd-socket-activate start
        # the daemon; it is served like any other.
        self.assertEqual(self.tcp_roundtrip(port, data), data)
        p.wait_line(r"listening on 127\.0\.0\.1:%d \(activated fd 3, %s "
                    r"mode\)$" % (port, MODE))
        self.assertReady()
        self.assertEqual(self.tcp_roundtrip(port, b"again"), b"again")
        self.assertEqual(len(self.listening_lines(p)), 1,
                         p.stderr_text())
        # The same process, execed, holds only the inherited listener.
        socks = socket_inodes(p.pid)
        self.assertIn(3, socks)
        if MODE == "event":
            self.assertEqual(list(socks), [3], socks)
        p.signal(15)
        self.assertEqual(p.wait(), 0)

    def test_datagram_and_stream_sockets(self):
        port = free_port()
        argv = [ACTIVATE, "--datagram", "-l", "127.0.0.1:%d" % port,
                "-E", "NOTIFY_SOCKET",
                ACTIVATE, "-l", "127.0.0.1:%d" % port,
                "-E", "NOTIFY_SOCKET"] + self.echo_argv()
        p = self.activate(argv, port)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socks.append(u)
        u.bind(("127.0.0.1", 0))
        u.settimeout(10)
        data = os.urandom(65507)
        u.sendto(data, ("127.0.0.1", port))
        self.assertEqual(u.recvfrom(70000), (data, ("127.0.0.1", port)))
        p.wait_line(r"listening on 127\.0\.0\.1:%d \(udp, activated fd 3, "
                    r"%s mode\)$" % (port, MODE))
        p.wait_line(r"listening on 127\.0\.0\.1:%d \(activated fd 4, %s "
                    r"mode\)$" % (port, MODE))
        self.assertReady()
        self.assertEqual(self.tcp_roundtrip(port, b"stream too"),
                         b"stream too")
        self.assertEqual(len(self.listening_lines(p)), 2, p.stderr_text())
        # The guards hold on inherited sockets too.
        g = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socks.append(g)
        g.bind(("127.0.0.1", 19))
        g.sendto(b"chargen?", ("127.0.0.1", port))
        g.settimeout(0.5)
        self.assertRaises(socket.timeout, g.recvfrom, 100)
        p.signal(15)
        self.assertEqual(p.wait(), 0)

    def test_foreign_listen_pid_is_ignored(self):
        # Variables meant for another process: bind --listen as usual.
        env = dict(os.environ, LISTEN_PID="1", LISTEN_FDS="1")
        p = self.start(fltest.Server, self.echo_argv(), env=env)
        line = p.wait_line(fltest.LISTEN_RE.pattern)[0].string
        self.assertRegex(line, r"\(%s mode\)$" % MODE)
        self.assertEqual(self.tcp_roundtrip(p.port, b"hi"), b"hi")

    def test_inherited_non_socket_is_an_error(self):
        # LISTEN_PID must be the daemon's own pid: set it in a shell that
        # then execs the daemon, with fd 3 a plain file.
        script = ('LISTEN_PID=$$ LISTEN_FDS=1 exec "$@" 3</dev/null')
        p = self.start(Proc, ["sh", "-c", script, "sh"] + self.echo_argv())
        self.assertEqual(p.wait(), 1)
        wait_until(lambda: None in p.lines, 5)
        err = p.stderr_text()
        self.assertRegex(err, r"^forkloop-echo: socket activation: fd 3")
        self.assertNotIn("listening on", err)


if __name__ == "__main__":
    fltest.main()
