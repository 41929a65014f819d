"""The chat relay (forkloop-chat --broker) under systemd socket activation.

systemd-socket-activate (Debian package systemd) binds the sockets, waits
for the first connection, and execs the relay with LISTEN_PID, LISTEN_FDS
and LISTEN_FDNAMES set, as systemd does for forkloop-relay.socket. Two
sockets nest two of them, the outer passing its socket through the inner. A
NOTIFY_SOCKET made here receives READY=1.
"""

import os
import shutil
import socket
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fltest  # noqa: E402
from fltest import Proc, wait_until  # noqa: E402

CHAT = fltest.binary("chat")
ACTIVATE = shutil.which("systemd-socket-activate")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def listening_fds(pid):
    """pid's descriptors that are listening TCP sockets."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":  # TCP_LISTEN
                    inodes.add(fields[9])
    out = []
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            out.append(int(fd))
    return sorted(out)


class RelayActivationTest(fltest.ProcTestCase):

    def setUp(self):
        super().setUp()
        self.assertIsNotNone(ACTIVATE, "systemd-socket-activate is not "
                             "installed (Debian package systemd)")
        self.dir = tempfile.mkdtemp(prefix="forkloop-relay-activation-")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify_path = os.path.join(self.dir, "notify")
        self.notify.bind(self.notify_path)
        self.socks = [self.notify]

    def tearDown(self):
        for s in self.socks:
            s.close()
        super().tearDown()
        shutil.rmtree(self.dir, ignore_errors=True)

    def relay(self, activate_args, *opts):
        # --listen is given to prove that it is not bound.
        argv = activate_args + [CHAT, "--broker", "--listen",
                                "127.0.0.1:0"] + list(opts)
        env = dict(os.environ, NOTIFY_SOCKET=self.notify_path)
        return self.start(Proc, argv, env=env)

    def client(self, family, addr):
        s = socket.socket(family, socket.SOCK_STREAM)
        self.socks.append(s)
        s.settimeout(10)
        s.connect(addr)
        return s.makefile("rwb", buffering=0)

    def assertReady(self):
        self.notify.settimeout(10)
        self.assertEqual(self.notify.recv(100), b"READY=1")

    def test_stream_socket(self):
        port = free_port()
        p = self.relay([ACTIVATE, "-l", "127.0.0.1:%d" % port,
                        "-E", "NOTIFY_SOCKET"])
        p.wait_line(r"Listening on 127\.0\.0\.1:%d as 3" % port)
        # The first connection starts the relay; it joins like any other.
        a = self.client(socket.AF_INET, ("127.0.0.1", port))
        self.assertEqual(a.readline(), b"* you are user1; others here: 0\n")
        self.assertReady()
        p.wait_line(r"forkloop-chat: listening on 127\.0\.0\.1:%d "
                    r"\(activated fd 3\)" % port)
        b = self.client(socket.AF_INET, ("127.0.0.1", port))
        self.assertEqual(b.readline(), b"* you are user2; others here: 1\n")
        self.assertEqual(a.readline(), b"* user2 joined\n")
        b.write(b"over an inherited socket\n")
        self.assertEqual(a.readline(), b"<user2> over an inherited socket\n")
        self.assertEqual(len([l for l in p.stderr_text().splitlines()
                              if "listening on" in l]), 1, p.stderr_text())
        # The same process, execed, listens on the inherited socket only,
        # not on --listen.
        self.assertEqual(listening_fds(p.pid), [3])
        p.signal(15)
        self.assertEqual(p.wait(), -15)

    def test_two_sockets_one_room(self):
        port1, port2 = free_port(), free_port()
        p = self.relay([ACTIVATE, "-l", "127.0.0.1:%d" % port1,
                        "-E", "NOTIFY_SOCKET",
                        ACTIVATE, "-l", "[::1]:%d" % port2,
                        "-E", "NOTIFY_SOCKET"])
        p.wait_line(r"Listening on 127\.0\.0\.1:%d as 3" % port1)
        a = self.client(socket.AF_INET, ("127.0.0.1", port1))
        self.assertEqual(a.readline(), b"* you are user1; others here: 0\n")
        self.assertReady()
        p.wait_line(r"listening on 127\.0\.0\.1:%d \(activated fd 3\)"
                    % port1)
        p.wait_line(r"listening on \[::1\]:%d \(activated fd 4\)" % port2)
        b = self.client(socket.AF_INET6, ("::1", port2))
        self.assertEqual(b.readline(), b"* you are user2; others here: 1\n")
        a.write(b"from v4\n")
        self.assertEqual(b.readline(), b"<user1> from v4\n")

    def test_unix_socket(self):
        path = os.path.join(self.dir, "relay.sock")
        p = self.relay([ACTIVATE, "-l", path, "-E", "NOTIFY_SOCKET"])
        wait_until(lambda: os.path.exists(path), 10)
        a = self.client(socket.AF_UNIX, path)
        self.assertEqual(a.readline(), b"* you are user1; others here: 0\n")
        self.assertReady()
        p.signal(15)
        self.assertEqual(p.wait(), -15)
        # systemd's socket file: the relay leaves it alone.
        self.assertTrue(os.path.exists(path))

    def test_datagram_socket_is_an_error(self):
        port = free_port()
        p = self.relay([ACTIVATE, "--datagram", "-l", "127.0.0.1:%d" % port])
        p.wait_line(r"Listening on 127\.0\.0\.1:%d as 3" % port)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socks.append(u)
        u.sendto(b"wake up", ("127.0.0.1", port))
        self.assertEqual(p.wait(), 1)
        wait_until(lambda: None in p.lines, 5)
        self.assertIn("forkloop-chat: socket activation: fd 3 is a datagram "
                      "socket: the relay serves stream sockets only",
                      p.stderr_text())
        self.assertNotIn("listening on", p.stderr_text())

    def test_foreign_listen_pid_binds_listen(self):
        # Variables meant for another process: bind --listen as usual.
        env = dict(os.environ, LISTEN_PID="1", LISTEN_FDS="1")
        p = self.start(fltest.Server, [CHAT, "--broker", "--listen",
                                       "127.0.0.1:0"], env=env)
        a = self.client(socket.AF_INET, (p.host, p.port))
        self.assertEqual(a.readline(), b"* you are user1; others here: 0\n")
        self.assertNotIn("activated", p.stderr_text())


if __name__ == "__main__":
    fltest.main()
