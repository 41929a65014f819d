"""Integration tests for forkloop-chat: the real binary on loopback.

Each test method is one scenario; meson runs it once per mode (FORKLOOP_MODE).
The peer is Python, netcat-openbsd or forkloop-echo. Every program runs in its
own process group; each scenario checks that the group is empty afterwards.
"""

import fcntl
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import termios
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fltest  # noqa: E402
from fltest import Proc, Server, recv_all, recv_exactly, wait_until  # noqa: E402

MODE = fltest.mode()
KIB = 1024
MIB = 1024 * 1024
PEER_FINISHED = r"peer finished sending"
PEER_RESET = r"peer reset the connection"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def read_fd(fd, n, timeout=10.0):
    """Read n bytes from fd (a pipe or a terminal) within timeout."""
    got = b""
    deadline = time.monotonic() + timeout
    while len(got) < n:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        b = os.read(fd, n - len(got))
        if not b:
            break
        got += b
    return got


def payload(n, seed):
    """n bytes of every value, NULs and newlines included, no 1024-byte
    line limit: pseudo-random but reproducible."""
    import random
    return random.Random(seed).randbytes(n)


class Reader(threading.Thread):
    """Reads a file object or socket to EOF in the background."""

    def __init__(self, src):
        super().__init__(daemon=True)
        self.src = src
        self.chunks = []
        self.count = 0
        self.start()

    def run(self):
        while True:
            try:
                if isinstance(self.src, socket.socket):
                    b = self.src.recv(1 << 16)
                else:
                    b = os.read(self.src, 1 << 16)
            except (ConnectionResetError, OSError):
                b = b""
            if not b:
                return
            self.chunks.append(b)
            self.count += len(b)

    def data(self, timeout=60):
        self.join(timeout)
        assert not self.is_alive(), "reader did not reach EOF"
        return b"".join(self.chunks)


class Writer(threading.Thread):
    """Writes data to a pipe fd or socket, then closes or half-closes it."""

    def __init__(self, dst, data, close=True, piece=None, delay=0.0):
        super().__init__(daemon=True)
        self.dst, self.buf, self.close = dst, data, close
        self.piece, self.delay = piece, delay
        self.sent = 0
        self.start()

    def run(self):
        step = self.piece or (1 << 16)
        try:
            for i in range(0, len(self.buf), step):
                chunk = self.buf[i:i + step]
                if isinstance(self.dst, socket.socket):
                    self.dst.sendall(chunk)
                else:
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(self.dst, view):]
                self.sent += len(chunk)
                if self.delay:
                    time.sleep(self.delay)
        except (BrokenPipeError, ConnectionResetError):
            return
        if not self.close:
            return
        if isinstance(self.dst, socket.socket):
            self.dst.shutdown(socket.SHUT_WR)
        else:
            os.close(self.dst)


def closing(fd, argv):
    """argv run by sh with descriptor fd closed, as `prog N>&-` does."""
    return ["sh", "-c", 'exec "$@" %d>&-' % fd, "sh"] + argv


def fd_target(pid, fd):
    try:
        return os.readlink("/proc/%d/fd/%d" % (pid, fd))
    except OSError:
        return None


def listening_port(pid):
    """The TCP port pid listens on, from /proc (for a program whose
    standard error, where it says the port, is closed)."""
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        t = fd_target(pid, int(fd)) or ""
        if t.startswith("socket:["):
            inodes.add(t[8:-1])
    with open("/proc/%d/net/tcp" % pid) as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                return int(fields[1].split(":")[1], 16)
    return None


def keepalive_timers(filt):
    """The keepalive timers ss(8) shows on established sockets matching
    filt, in seconds."""
    out = subprocess.run(["ss", "-tnoH", "state", "established", filt],
                         capture_output=True, text=True, timeout=10).stdout
    return [float(m) for m in re.findall(r"timer:\(keepalive,([\d.]+)", out)]


class GroupProc(Proc):
    """Proc in a process group of its own inside the test's session, so
    that, unlike a new session's orphaned group, job control signals
    (SIGTSTP) stop it."""

    def __init__(self, argv, stdin=subprocess.DEVNULL,
                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE):
        self.argv = argv
        self.p = subprocess.Popen(argv, stdin=stdin, stdout=stdout,
                                  stderr=stderr, process_group=0)
        self.pid = self.pgid = self.p.pid
        self.lines = []
        self.cond = threading.Condition()
        self.t = threading.Thread(target=self._read_stderr, daemon=True)
        if self.p.stderr is None:
            self.lines.append(None)
            self.t = threading.Thread(target=lambda: None)
        self.t.start()


class ChatTest(fltest.ProcTestCase):

    def setUp(self):
        super().setUp()
        self.tmp = tempfile.TemporaryDirectory()
        self.socks = []
        self.fds = []

    def tearDown(self):
        super().tearDown()
        for s in self.socks:
            s.close()
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.tmp.cleanup()

    # --- helpers ---

    def path(self, name):
        return os.path.join(self.tmp.name, name)

    def file_with(self, name, data):
        p = self.path(name)
        with open(p, "wb") as f:
            f.write(data)
        return p

    def argv(self, *args):
        return [fltest.binary("chat"), "--mode", MODE] + list(args)

    def listen_chat(self, stdin, stdout, *extra):
        """forkloop-chat --listen 127.0.0.1:0; returns (proc, port)."""
        p = self.start(Server, self.argv(*extra, "--listen", "127.0.0.1:0"),
                       stdin=stdin, stdout=stdout)
        return p, p.port

    def connect_chat(self, stdin, stdout, *extra):
        """A Python listener and forkloop-chat connected to it; returns
        (proc, the accepted peer socket)."""
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)
        ls.settimeout(10)
        self.socks.append(ls)
        p = self.start(Proc, self.argv(*extra, "127.0.0.1",
                                       str(ls.getsockname()[1])),
                       stdin=stdin, stdout=stdout)
        peer, _ = ls.accept()
        self.socks.append(peer)
        return p, peer

    def peer_for(self, p, port):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.socks.append(s)
        p.wait_line("connected to")
        return s

    def open_file(self, p, mode="rb"):
        f = open(p, mode)
        self.addCleanup(f.close)
        return f

    def pipe(self):
        r, w = os.pipe()
        self.fds += [r, w]
        return r, w

    def close_fd(self, fd):
        os.close(fd)
        self.fds.remove(fd)

    def assertNoZombie(self, p):
        kids = fltest.children(p.pid)
        self.assertFalse([k for k in kids if k[1] == "Z"],
                         "zombie children of %d: %s" % (p.pid, kids))

    def assertExits(self, p, code=0, timeout=20):
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.fail("still running; stderr:\n" + p.stderr_text())
        p.t.join(5)  # all of stderr is in
        self.assertEqual(rc, code, "exit status; stderr:\n" + p.stderr_text())
        self.assertGroupGone(p)

    # --- roles x stdin kinds ---

    def run_listen_with_stdin(self, stdin):
        """The peer reads the listener's stdin to EOF, then sends its part
        and closes; the listener prints it and exits 0."""
        out = self.path("out")
        mine = payload(300 * KIB, 1)
        with open(out, "wb") as f:
            p, port = self.listen_chat(stdin, f)
        s = self.peer_for(p, port)
        got = recv_all(s)
        s.sendall(mine)
        s.close()
        self.assertExits(p)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), mine)
        return got

    def run_connect_with_stdin(self, stdin):
        out = self.path("out")
        mine = payload(300 * KIB, 2)
        with open(out, "wb") as f:
            p, peer = self.connect_chat(stdin, f)
        got = recv_all(peer)
        peer.sendall(mine)
        peer.close()
        self.assertExits(p)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), mine)
        return got

    def test_listen_stdin_regular_file(self):
        data = payload(2 * MIB + 7, 3)
        with open(self.file_with("in", data), "rb") as f:
            self.assertEqual(self.run_listen_with_stdin(f), data)

    def test_connect_stdin_regular_file(self):
        data = payload(2 * MIB + 7, 4)
        with open(self.file_with("in", data), "rb") as f:
            self.assertEqual(self.run_connect_with_stdin(f), data)

    def test_listen_stdin_pipe(self):
        data = payload(MIB + 3, 5)
        r, w = self.pipe()
        Writer(w, data, piece=4093)
        self.fds.remove(w)
        self.assertEqual(self.run_listen_with_stdin(r), data)

    def test_connect_stdin_pipe(self):
        data = payload(MIB + 3, 6)
        r, w = self.pipe()
        Writer(w, data, piece=4093)
        self.fds.remove(w)
        self.assertEqual(self.run_connect_with_stdin(r), data)

    def test_listen_stdin_devnull(self):
        self.assertEqual(self.run_listen_with_stdin(subprocess.DEVNULL), b"")

    def test_connect_stdin_devnull(self):
        self.assertEqual(self.run_connect_with_stdin(subprocess.DEVNULL), b"")

    def test_stdin_socket(self):
        """stdin may be a socket (inetd style)."""
        a, b = socket.socketpair()
        self.socks += [a, b]
        data = payload(200 * KIB, 7)
        Writer(a, data)
        got = self.run_connect_with_stdin(b)
        self.assertEqual(got, data)

    def run_pty(self, role):
        master, slave = os.openpty()
        self.fds += [master, slave]
        attrs = termios.tcgetattr(slave)
        attrs[1] &= ~termios.OPOST            # oflag: no \n -> \r\n
        attrs[3] &= ~(termios.ECHO | termios.ECHONL)  # lflag: no echo
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        flags_before = fcntl.fcntl(slave, fcntl.F_GETFL)
        if role == "listen":
            p, port = self.listen_chat(slave, slave)
            s = self.peer_for(p, port)
        else:
            p, s = self.connect_chat(slave, slave)
        s.settimeout(10)
        for i in range(3):
            line = b"typed line %d\n" % i
            os.write(master, line)
            self.assertEqual(recv_exactly(s, len(line)), line)
            reply = b"reply %d \x00 with a NUL\n" % i
            s.sendall(reply)
            self.assertEqual(read_fd(master, len(reply)), reply)
        os.write(master, b"\x04")  # ^D: end of input
        self.assertEqual(recv_all(s), b"")
        s.sendall(b"late\n")
        s.close()
        self.assertEqual(read_fd(master, 5), b"late\n")
        self.assertExits(p)
        self.assertEqual(fcntl.fcntl(slave, fcntl.F_GETFL), flags_before,
                         "terminal's file status flags not restored")

    def test_listen_pty_interactive(self):
        self.run_pty("listen")

    def test_connect_pty_interactive(self):
        self.run_pty("connect")

    # --- volume and backpressure ---

    def run_both_ways(self, role, size=8 * MIB):
        """size bytes of random data each way at once through pipes."""
        to_peer, from_peer = payload(size, 10), payload(size, 11)
        in_r, in_w = self.pipe()
        out_r, out_w = self.pipe()
        if role == "listen":
            p, port = self.listen_chat(in_r, out_w)
            s = self.peer_for(p, port)
        else:
            p, s = self.connect_chat(in_r, out_w)
        self.close_fd(in_r)
        self.close_fd(out_w)
        stdout = Reader(out_r)
        sock_in = Reader(s)
        Writer(in_w, to_peer)
        self.fds.remove(in_w)
        # A listener takes the peer's FIN as a half-close and keeps sending;
        # a connecting endpoint ends at the peer's FIN, so that peer sends
        # its FIN only once it has everything.
        w = Writer(s, from_peer, close=(role == "listen"))
        got = sock_in.data()
        w.join(60)
        if role != "listen":
            s.shutdown(socket.SHUT_WR)
        self.assertEqual(len(got), len(to_peer))
        self.assertTrue(got == to_peer, "bytes to the peer differ")
        printed = stdout.data()
        self.assertEqual(len(printed), len(from_peer))
        self.assertTrue(printed == from_peer, "bytes printed differ")
        self.assertExits(p)

    def test_listen_8mib_both_ways(self):
        self.run_both_ways("listen")

    def test_connect_8mib_both_ways(self):
        self.run_both_ways("connect")

    def test_slow_stdout_stops_reading_the_socket(self):
        """Nobody reads stdout for a while: the peer's sending stalls
        instead of the endpoint buffering everything; then all arrives."""
        size = 48 * MIB
        out_r, out_w = self.pipe()
        in_r, in_w = self.pipe()
        p, peer = self.connect_chat(in_r, out_w)
        self.close_fd(out_w)
        self.close_fd(in_r)
        data = b"0123456789abcdef" * (size // 16)
        w = Writer(peer, data, close=False)
        last = [-1]

        def stalled():
            now = w.sent
            same = now == last[0]
            last[0] = now
            return same
        wait_until(stalled, timeout=20, interval=0.5)
        self.assertLess(w.sent, size, "everything was accepted at once")
        if MODE == "event":
            self.assertLess(fltest.rss_kb(p.pid), 200 * 1024)
        stdout = Reader(out_r)
        w.join(60)
        peer.shutdown(socket.SHUT_WR)
        got = stdout.data()
        self.assertEqual(len(got), size)
        self.assertTrue(got == data)
        self.close_fd(in_w)
        self.assertExits(p)

    def test_slow_peer_stops_reading_stdin(self):
        """A large regular file as stdin, a peer that reads nothing for a
        while: the endpoint does not slurp the file; then it all streams."""
        size = 64 * MIB
        path = self.path("big")
        with open(path, "wb") as f:
            f.truncate(size)
        with open(path, "rb") as f:
            p, peer = self.connect_chat(f, subprocess.DEVNULL)
        time.sleep(1.0)
        if MODE == "event":
            self.assertLess(fltest.rss_kb(p.pid), 200 * 1024)
        n = 0
        peer.settimeout(30)
        while True:
            b = peer.recv(1 << 20)
            if not b:
                break
            self.assertEqual(b.count(0), len(b))
            n += len(b)
        self.assertEqual(n, size)
        peer.close()
        self.assertExits(p)

    # --- half-close and peer close ---

    def test_connect_late_reply_after_stdin_eof(self):
        """stdin ends, FIN goes out, the peer answers later: printed."""
        out_r, out_w = self.pipe()
        with open(self.file_with("in", b"question\n"), "rb") as f:
            p, peer = self.connect_chat(f, out_w)
        self.close_fd(out_w)
        stdout = Reader(out_r)
        self.assertEqual(recv_all(peer), b"question\n")
        time.sleep(0.5)
        if MODE == "fork":
            self.assertNoZombie(p)
        self.assertIsNone(p.p.poll(), "exited before the late reply")
        peer.sendall(b"late answer\n")
        time.sleep(0.2)
        peer.sendall(b"and more\n")
        peer.close()
        self.assertEqual(stdout.data(), b"late answer\nand more\n")
        self.assertExits(p)

    def test_listen_late_reply_after_stdin_eof(self):
        out = self.path("out")
        with open(out, "wb") as f:
            p, port = self.listen_chat(subprocess.DEVNULL, f)
        s = self.peer_for(p, port)
        self.assertEqual(recv_all(s), b"")
        time.sleep(0.5)
        self.assertIsNone(p.p.poll(), "exited before the late reply")
        s.sendall(b"late answer\n")
        s.close()
        self.assertExits(p)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), b"late answer\n")

    def test_peer_close_while_stdin_open(self):
        """The peer closes while stdin is an idle open pipe: the endpoint
        says so and exits 0; in fork mode the stdin reader is stopped."""
        in_r, in_w = self.pipe()
        out = self.path("out")
        with open(out, "wb") as f:
            p, peer = self.connect_chat(in_r, f)
        os.write(in_w, b"hello\n")
        self.assertEqual(recv_exactly(peer, 6), b"hello\n")
        peer.sendall(b"bye\n")
        peer.close()
        p.wait_line(PEER_FINISHED)
        self.assertExits(p)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), b"bye\n")

    def test_children_die_with_the_endpoint(self):
        """Whatever kills forkloop-chat, even SIGKILL, no child of it goes
        on reading standard input into the connection."""
        in_r, in_w = self.pipe()
        p, peer = self.connect_chat(in_r, subprocess.DEVNULL)
        os.write(in_w, b"hello\n")
        self.assertEqual(recv_exactly(peer, 6), b"hello\n")
        if MODE == "fork":
            self.assertTrue(wait_until(
                lambda: len(fltest.children(p.pid)) == 1, 5))
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)

        wait_until(lambda: not fltest.live_pids(p.pgid), 5)
        self.assertEqual(fltest.live_pids(p.pgid), [],
                         "a child outlived forkloop-chat")
        # and what is written to its standard input goes nowhere
        os.write(in_w, b"after\n")
        peer.settimeout(5)
        try:
            got = peer.recv(100)
        except OSError:
            got = b""
        self.assertEqual(got, b"")

    def test_peer_reset_while_stdin_open(self):
        """A reset is not a clean end: reported, exit status 1."""
        in_r, in_w = self.pipe()
        p, peer = self.connect_chat(in_r, subprocess.DEVNULL)
        os.write(in_w, b"hello\n")
        self.assertEqual(recv_exactly(peer, 6), b"hello\n")
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                        b"\x01\x00\x00\x00\x00\x00\x00\x00")
        peer.close()
        p.wait_line(PEER_RESET)
        self.assertExits(p, 1)

    def test_listener_keeps_sending_after_peer_half_closes(self):
        in_r, in_w = self.pipe()
        out = self.path("out")
        with open(out, "wb") as f:
            p, port = self.listen_chat(in_r, f)
        s = self.peer_for(p, port)
        s.sendall(b"question\n")
        s.shutdown(socket.SHUT_WR)
        p.wait_line(PEER_FINISHED)
        time.sleep(0.2)
        for i in range(3):
            line = b"answer %d\n" % i
            os.write(in_w, line)
            self.assertEqual(recv_exactly(s, len(line)), line)
        self.close_fd(in_w)
        self.assertEqual(recv_all(s), b"")
        self.assertExits(p)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), b"question\n")

    def test_keep_open_serves_the_next_peer(self):
        out_r, out_w = self.pipe()
        p, port = self.listen_chat(subprocess.DEVNULL, out_w, "--keep-open")
        self.close_fd(out_w)
        stdout = Reader(out_r)
        for i in range(3):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            self.assertEqual(recv_all(s), b"")
            s.sendall(b"peer %d\n" % i)
            s.close()
            p.wait_line(PEER_FINISHED, count=i + 1)
        if MODE == "fork":
            wait_until(lambda: not fltest.children(p.pid), 5)
            self.assertEqual(fltest.children(p.pid), [])
        p.signal(signal.SIGTERM)
        self.assertExits(p, -signal.SIGTERM)
        self.assertEqual(stdout.data(), b"peer 0\npeer 1\npeer 2\n")

    # --- signals ---

    def run_signal(self, sig, code, role):
        in_r, in_w = self.pipe()
        if role == "listen":
            p, port = self.listen_chat(in_r, subprocess.DEVNULL)
            s = self.peer_for(p, port)
        else:
            p, s = self.connect_chat(in_r, subprocess.DEVNULL)
        os.write(in_w, b"before the signal\n")
        self.assertEqual(recv_exactly(s, 18), b"before the signal\n")
        p.signal(sig)
        s.settimeout(10)
        self.assertEqual(s.recv(100), b"", "peer did not see a FIN")
        self.assertExits(p, code)

    def test_sigint_kills_with_sigint_peer_sees_fin(self):
        """After its clean-up the endpoint dies of the signal: a shell
        sees WIFSIGNALED (status 130), not a plain exit."""
        self.run_signal(signal.SIGINT, -signal.SIGINT, "connect")
        self.run_signal(signal.SIGINT, -signal.SIGINT, "listen")

    def test_sigterm_kills_with_sigterm_peer_sees_fin(self):
        self.run_signal(signal.SIGTERM, -signal.SIGTERM, "listen")
        self.run_signal(signal.SIGTERM, -signal.SIGTERM, "connect")

    def test_sigint_to_group_while_waiting_for_peer(self):
        """Ctrl-C reaches the whole group while listening: 130, no one
        left."""
        p, port = self.listen_chat(subprocess.DEVNULL, subprocess.DEVNULL)
        os.killpg(p.pgid, signal.SIGINT)
        self.assertExits(p, -signal.SIGINT)

    def test_sigint_to_group_during_session(self):
        in_r, in_w = self.pipe()
        p, s = self.connect_chat(in_r, subprocess.DEVNULL)
        s.sendall(b"x")
        time.sleep(0.2)
        os.killpg(p.pgid, signal.SIGINT)
        s.settimeout(10)
        self.assertEqual(s.recv(100), b"")
        self.assertExits(p, -signal.SIGINT)

    def test_stop_and_continue_during_transfer(self):
        """Signals that interrupt system calls lose no bytes."""
        size = 4 * MIB
        to_peer, from_peer = payload(size, 20), payload(size, 21)
        in_r, in_w = self.pipe()
        out_r, out_w = self.pipe()
        p, s = self.connect_chat(in_r, out_w)
        self.close_fd(in_r)
        self.close_fd(out_w)
        stdout = Reader(out_r)
        sock_in = Reader(s)
        Writer(in_w, to_peer, piece=1000)
        self.fds.remove(in_w)
        w = Writer(s, from_peer, close=False, piece=1000)
        for _ in range(20):
            os.killpg(p.pgid, signal.SIGSTOP)
            time.sleep(0.01)
            os.killpg(p.pgid, signal.SIGCONT)
            time.sleep(0.02)
        got = sock_in.data()
        w.join(60)
        s.shutdown(socket.SHUT_WR)
        self.assertTrue(got == to_peer, "bytes to the peer differ")
        self.assertTrue(stdout.data() == from_peer, "bytes printed differ")
        self.assertExits(p)

    # --- the tutorial's bugs ---

    def test_exact_bytes_no_garbage(self):
        """write(fd, buf, sizeof buf) sends whole buffers: one byte must
        arrive as one byte, both ways."""
        out = self.path("out")
        with open(self.file_with("in", b"x"), "rb") as f, \
                open(out, "wb") as o:
            p, peer = self.connect_chat(f, o)
        self.assertEqual(recv_all(peer), b"x")
        peer.sendall(b"y")
        peer.close()
        self.assertExits(p)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), b"y")

    def test_nul_bytes_and_every_value(self):
        """fputs on a raw buffer stops at the first NUL."""
        data = bytes(range(256)) * 64 + b"\x00\x00tail"
        out = self.path("out")
        with open(self.file_with("in", data), "rb") as f, \
                open(out, "wb") as o:
            p, port = self.listen_chat(f, o)
        s = self.peer_for(p, port)
        self.assertEqual(recv_all(s), data)
        s.sendall(data[::-1])
        s.close()
        self.assertExits(p)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), data[::-1])

    def test_long_line_and_split_messages(self):
        """fgets with a 1024-byte buffer splits or truncates long lines; one
        read taken as one message loses pieces sent with pauses."""
        line = b"L" * (3 * MIB) + b"\n"
        out_r, out_w = self.pipe()
        with open(self.file_with("in", line), "rb") as f:
            p, peer = self.connect_chat(f, out_w)
        self.close_fd(out_w)
        stdout = Reader(out_r)
        self.assertEqual(recv_all(peer), line)
        msg = b"one message in many pieces, " * 40 + b"\n"
        w = Writer(peer, msg, close=False, piece=37, delay=0.002)
        w.join(30)
        peer.sendall(line)
        peer.close()
        self.assertEqual(stdout.data(), msg + line)
        self.assertExits(p)

    def test_no_zombie_while_half_closed(self):
        """stdin ends first: in fork mode the sending child exits and must be
        reaped at once, not left a zombie while the peer talks on."""
        in_r, in_w = self.pipe()
        p, peer = self.connect_chat(in_r, subprocess.DEVNULL)
        self.close_fd(in_w)
        self.assertEqual(recv_all(peer), b"")
        time.sleep(0.3)
        self.assertNoZombie(p)
        if MODE == "fork":
            self.assertEqual(fltest.children(p.pid), [])
        else:
            self.assertEqual(len(fltest.pgroup_pids(p.pgid)), 1)
        peer.sendall(b"still here\n")
        peer.close()
        self.assertExits(p)

    def test_refused_and_usage(self):
        port = free_port()
        p = self.start(Proc, self.argv("127.0.0.1", str(port)))
        self.assertExits(p, 1)
        self.assertIn("forkloop-chat: cannot connect to 127.0.0.1:%d: "
                      "Connection refused" % port, p.stderr_text())
        for args in ([], ["127.0.0.1"], ["127.0.0.1", "1", "2"],
                     ["--listen", "0", "127.0.0.1"], ["--bogus"]):
            p = self.start(Proc, self.argv(*args))
            self.assertExits(p, 2)
            self.assertIn("usage:", p.stderr_text())

    def test_quiet_and_stdout_only_peer_bytes(self):
        out = self.path("out")
        with open(out, "wb") as o:
            p = self.start(Server, self.argv("--listen", "127.0.0.1:0"),
                           stdin=subprocess.DEVNULL, stdout=o)
        s = self.peer_for(p, p.port)
        s.sendall(b"only this\n")
        s.close()
        self.assertExits(p)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), b"only this\n")
        q_port = free_port()
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", q_port))
        ls.listen(1)
        self.socks.append(ls)
        q = self.start(Proc, self.argv("-q", "127.0.0.1", str(q_port)))
        c, _ = ls.accept()
        c.close()
        self.assertExits(q)
        self.assertEqual(q.stderr_text(), "")

    # --- other peers ---

    def test_netcat_client_against_listener(self):
        """nc -N sends its stdin and half-closes; the listener still sends
        all of its own stdin before closing."""
        mine, theirs = payload(MIB, 30), payload(MIB, 31)
        out = self.path("out")
        with open(self.file_with("in", mine), "rb") as f, \
                open(out, "wb") as o:
            p, port = self.listen_chat(f, o)
        nc_out = self.path("nc.out")
        with open(self.file_with("nc.in", theirs), "rb") as f, \
                open(nc_out, "wb") as o:
            nc = self.start(Proc, ["nc", "-N", "127.0.0.1", str(port)],
                            stdin=f, stdout=o)
        self.assertExits(p)
        self.assertExits(nc)
        with open(out, "rb") as f:
            self.assertTrue(f.read() == theirs, "chat printed other bytes")
        with open(nc_out, "rb") as f:
            self.assertTrue(f.read() == mine, "nc printed other bytes")

    def test_netcat_listener_against_client(self):
        mine, theirs = payload(MIB, 32), payload(MIB, 33)
        port = free_port()
        nc_out = self.path("nc.out")
        with open(self.file_with("nc.in", theirs), "rb") as f, \
                open(nc_out, "wb") as o:
            nc = self.start(Proc, ["nc", "-l", "127.0.0.1", str(port)],
                            stdin=f, stdout=o)
        in_r, in_w = self.pipe()
        out_r, out_w = self.pipe()
        argv = self.argv("127.0.0.1", str(port))

        def connected():
            c = self.start(Proc, argv, stdin=in_r, stdout=out_w)
            if c.wait_line("connected to|cannot connect"
                           )[0].group(0) == "connected to":
                return c
            c.wait()
            return None
        p = wait_until(connected, timeout=10, interval=0.1)
        self.assertIsNotNone(p, "nc -l never accepted")
        self.close_fd(out_w)
        stdout = Reader(out_r)
        # nc -l quits at the FIN even with its own stdin unsent: send the FIN
        # only once everything nc has to say is here.
        Writer(in_w, mine, close=False).join(30)
        wait_until(lambda: stdout.count >= len(theirs), timeout=30)
        self.close_fd(in_w)
        self.assertExits(nc)
        self.assertExits(p)
        self.assertTrue(stdout.data() == theirs, "chat printed other bytes")
        with open(nc_out, "rb") as f:
            self.assertTrue(f.read() == mine, "nc printed other bytes")

    def test_client_of_forkloop_echo(self):
        echo = self.start(Server, [fltest.binary("echo"), "--mode", MODE,
                                   "--listen", "127.0.0.1:0"])
        in_r, in_w = self.pipe()
        out_r, out_w = self.pipe()
        p = self.start(Proc, self.argv("127.0.0.1", str(echo.port)),
                       stdin=in_r, stdout=out_w)
        self.close_fd(in_r)
        self.close_fd(out_w)
        for i in range(5):
            line = b"line %d: %s\n" % (i, b"z" * (i * 700))
            os.write(in_w, line)
            self.assertEqual(read_fd(out_r, len(line)), line)
        self.close_fd(in_w)
        self.assertEqual(Reader(out_r).data(), b"")
        self.assertExits(p)
        echo.signal(signal.SIGTERM)
        self.assertExits(echo)

    # --- closed standard descriptors ---

    def run_closed_connect(self, fd):
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)
        ls.settimeout(10)
        self.socks.append(ls)
        in_r, in_w = self.pipe()
        out_r, out_w = self.pipe()
        argv = self.argv("127.0.0.1", str(ls.getsockname()[1]))
        p = self.start(Proc, closing(fd, argv), stdin=in_r, stdout=out_w)
        peer, _ = ls.accept()
        self.socks.append(peer)
        self.close_fd(out_w)
        stdout = Reader(out_r)
        self.assertEqual(fd_target(p.pid, fd), "/dev/null")
        peer.sendall(b"one\ntwo\n")
        if fd != 0:
            os.write(in_w, b"mine\n")
        self.close_fd(in_w)
        self.assertEqual(recv_all(peer), b"" if fd == 0 else b"mine\n",
                         "the peer got bytes that were not standard input")
        peer.close()
        self.assertExits(p)
        self.assertEqual(stdout.data(), b"" if fd == 1 else b"one\ntwo\n")

    def run_closed_listen(self, fd):
        in_r, in_w = self.pipe()
        out_r, out_w = self.pipe()
        p = self.start(Server, closing(fd, self.argv("--listen",
                                                     "127.0.0.1:0")),
                       stdin=in_r, stdout=out_w)
        s = self.peer_for(p, p.port)
        self.close_fd(out_w)
        stdout = Reader(out_r)
        self.assertEqual(fd_target(p.pid, fd), "/dev/null")
        s.sendall(b"one\n")
        if fd != 0:
            os.write(in_w, b"mine\n")
        self.close_fd(in_w)
        self.assertEqual(recv_all(s), b"" if fd == 0 else b"mine\n")
        s.close()
        self.assertExits(p)
        self.assertEqual(stdout.data(), b"" if fd == 1 else b"one\n")

    def test_closed_standard_descriptors(self):
        """Started with 0, 1 or 2 closed, the endpoint finds /dev/null
        there: it never reads its own socket as standard input, nor sends
        the peer's bytes or its messages back to the peer."""
        for fd in (0, 1, 2):
            with self.subTest(closed=fd, role="connect"):
                self.run_closed_connect(fd)
        for fd in (0, 1):
            with self.subTest(closed=fd, role="listen"):
                self.run_closed_listen(fd)

    def started(self, p, name):
        """p (run through sh) has become the program name."""
        try:
            return os.readlink("/proc/%d/exe" % p.pid).endswith(name)
        except OSError:
            return False

    def test_echo_and_bench_with_closed_standard_descriptors(self):
        """forkloop-echo and forkloop-bench too: each of 0, 1 and 2,
        closed, is /dev/null, and they work as usual."""
        echo_bin = fltest.binary("echo")
        for fd in (0, 1, 2):
            with self.subTest(program="echo", closed=fd):
                argv = closing(fd, [echo_bin, "--mode", MODE, "--listen",
                                    "127.0.0.1:0"])
                if fd == 2:
                    e = self.start(Proc, argv)
                    port = wait_until(lambda: listening_port(e.pid), 10)
                else:
                    e = self.start(Server, argv)
                    port = e.port
                self.assertEqual(fd_target(e.pid, fd), "/dev/null")
                c = socket.create_connection(("127.0.0.1", port), timeout=10)
                self.socks.append(c)
                c.sendall(b"ping\n")
                self.assertEqual(recv_exactly(c, 5), b"ping\n")
                c.close()
                e.signal(signal.SIGTERM)
                self.assertExits(e)
        echo = self.start(Server, [echo_bin, "--mode", MODE, "--listen",
                                   "127.0.0.1:0"])
        for fd in (0, 1, 2):
            with self.subTest(program="bench", closed=fd):
                in_r, in_w = self.pipe()
                out_r, out_w = self.pipe()
                b = self.start(Proc, closing(fd, [
                    fltest.binary("bench"), "-c", "2", "-d", "0.5",
                    "127.0.0.1:%d" % echo.port]), stdin=in_r, stdout=out_w)
                Reader(out_r)
                self.fds.remove(out_r)
                # The sanitizers' run-time may open a file there for a
                # moment before main: wait for what main leaves there.
                seen = wait_until(
                    lambda: self.started(b, "forkloop-bench") and
                    fd_target(b.pid, fd) == "/dev/null", 10)
                self.assertTrue(seen, "descriptor %d of forkloop-bench is %s"
                                % (fd, fd_target(b.pid, fd)))
                self.assertExits(b, 0, timeout=30)
        echo.signal(signal.SIGTERM)
        self.assertExits(echo)

    # --- signals: a shell loop, a terminal ---

    def test_sigint_stops_a_shell_loop(self):
        """Ctrl-C stops `for i in 1 2 3; do forkloop-chat ...; done` at
        once: the endpoint dies of SIGINT, so bash stops too."""
        argv = ["bash", "-c", 'for i in 1 2 3; do "$@"; done; echo looped',
                "bash"] + self.argv("--listen", "127.0.0.1:0")
        p = self.start(Proc, argv)
        p.wait_line("listening on")
        os.killpg(p.pgid, signal.SIGINT)
        try:
            rc = p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            rc = None
        p.t.join(5)
        self.assertEqual(p.stderr_text().count("listening on"), 1,
                         "the loop went on:\n" + p.stderr_text())
        self.assertEqual(rc, -signal.SIGINT)
        self.assertGroupGone(p)

    def test_sigint_on_a_terminal_ends_the_line(self):
        """The terminal echoes ^C; the endpoint ends that line so the
        shell's prompt starts on a new one."""
        master, slave = os.openpty()
        self.fds += [master, slave]
        p = self.start(GroupProc, self.argv("--listen", "127.0.0.1:0"),
                       stderr=slave)
        line = b""
        while not line.endswith(b"\n"):
            b = read_fd(master, 1, timeout=10)
            self.assertTrue(b, "no listening line; got %r" % line)
            line += b
        self.assertIn(b"listening on", line)
        p.signal(signal.SIGINT)
        self.assertEqual(p.wait(timeout=10), -signal.SIGINT)
        self.assertIn(read_fd(master, 2, timeout=1), (b"\n", b"\r\n"))

    def test_stop_on_a_terminal_restores_its_flags(self):
        """Ctrl-Z: while stopped, the terminal (shared with the shell) has
        its own file status flags, not O_NONBLOCK; on SIGCONT the session
        goes on, and the flags are restored at the end."""
        master, slave = os.openpty()
        self.fds += [master, slave]
        attrs = termios.tcgetattr(slave)
        attrs[1] &= ~termios.OPOST
        attrs[3] &= ~(termios.ECHO | termios.ECHONL)
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        flags_before = fcntl.fcntl(slave, fcntl.F_GETFL)
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)
        ls.settimeout(10)
        self.socks.append(ls)
        p = self.start(GroupProc, self.argv("127.0.0.1",
                                            str(ls.getsockname()[1])),
                       stdin=slave, stdout=slave)
        peer, _ = ls.accept()
        self.socks.append(peer)
        os.write(master, b"before\n")
        self.assertEqual(recv_exactly(peer, 7), b"before\n")
        peer.sendall(b"reply\n")
        self.assertEqual(read_fd(master, 6), b"reply\n")
        os.killpg(p.pgid, signal.SIGTSTP)
        # Every process of the group (fork mode: the child too) stopped.
        self.assertTrue(wait_until(
            lambda: all(fltest.proc_state(q) == "T"
                        for q in fltest.pgroup_pids(p.pgid)), 5),
            "did not stop")
        self.assertEqual(fcntl.fcntl(slave, fcntl.F_GETFL), flags_before,
                         "terminal's flags changed while stopped")
        os.killpg(p.pgid, signal.SIGCONT)
        self.assertTrue(wait_until(
            lambda: fltest.proc_state(p.pid) != "T", 5), "did not continue")
        os.write(master, b"after\n")
        self.assertEqual(recv_exactly(peer, 6), b"after\n")
        peer.sendall(b"again\n")
        self.assertEqual(read_fd(master, 6), b"again\n")
        os.write(master, b"\x04")
        self.assertEqual(recv_all(peer), b"")
        peer.close()
        self.assertExits(p)
        self.assertEqual(fcntl.fcntl(slave, fcntl.F_GETFL), flags_before)

    # --- data the peer did not get ---

    def lose_two_lines(self, p, port, in_w):
        s = self.peer_for(p, port)
        s.close()
        p.wait_line(PEER_FINISHED)
        os.write(in_w, b"line one\n")
        time.sleep(0.3)
        os.write(in_w, b"line two\n")
        p.wait_line(PEER_RESET + ": 18 bytes not delivered")

    def test_listener_reports_lines_lost_after_peer_left(self):
        """The peer leaves; two lines typed then cannot reach it: said so
        on standard error, exit status 1."""
        in_r, in_w = self.pipe()
        p, port = self.listen_chat(in_r, subprocess.DEVNULL)
        self.lose_two_lines(p, port, in_w)
        self.assertExits(p, 1)

    def test_keep_open_reports_lost_lines_and_serves_the_next_peer(self):
        in_r, in_w = self.pipe()
        p, port = self.listen_chat(in_r, subprocess.DEVNULL, "--keep-open")
        self.lose_two_lines(p, port, in_w)
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.socks.append(s)
        p.wait_line("connected to", count=2)
        os.write(in_w, b"for the next\n")
        self.assertEqual(recv_exactly(s, 13), b"for the next\n")
        p.signal(signal.SIGTERM)
        self.assertExits(p, -signal.SIGTERM)

    def test_refused_by_max_conns_is_an_error(self):
        """forkloop-echo --max-conns closes a connection over the limit at
        once; what the endpoint sent is lost: exit status 1."""
        echo = self.start(Server, [fltest.binary("echo"), "--mode", MODE,
                                   "--max-conns", "1",
                                   "--listen", "127.0.0.1:0"])
        hold = socket.create_connection(("127.0.0.1", echo.port),
                                        timeout=10)
        self.socks.append(hold)
        hold.sendall(b"x")
        self.assertEqual(recv_exactly(hold, 1), b"x")
        # Stopped, the server cannot refuse before the endpoint has sent
        # its line: the kernel completes the connection and queues it.
        echo.signal(signal.SIGSTOP)
        with open(self.file_with("in", b"hello\n"), "rb") as f:
            p = self.start(Proc, self.argv("127.0.0.1", str(echo.port)),
                           stdin=f)
        p.wait_line("connected to")
        time.sleep(0.3)
        echo.signal(signal.SIGCONT)
        p.wait_line(PEER_RESET)
        self.assertExits(p, 1)
        echo.signal(signal.SIGTERM)
        self.assertExits(echo)

    # --- TCP keepalive ---

    def test_keepalive_on_both_roles(self):
        """--keepalive SECONDS arms TCP keepalive on the connection, in
        both roles; without it there is none."""
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(2)
        ls.settimeout(10)
        self.socks.append(ls)
        port = ls.getsockname()[1]
        for extra, want in (([], None), (["--keepalive", "7"], 7)):
            in_r, in_w = self.pipe()
            p = self.start(Proc, self.argv(*extra, "127.0.0.1", str(port)),
                           stdin=in_r)
            peer, _ = ls.accept()
            self.socks.append(peer)
            p.wait_line("connected to")
            timers = keepalive_timers("dport = :%d" % port)
            if want is None:
                self.assertEqual(timers, [])
            else:
                self.assertEqual(len(timers), 1, timers)
                self.assertTrue(0 < timers[0] <= want, timers)
            peer.close()
            self.assertExits(p)
        in_r, in_w = self.pipe()
        p, lport = self.listen_chat(in_r, subprocess.DEVNULL,
                                    "--keepalive", "9")
        s = self.peer_for(p, lport)
        timers = keepalive_timers("sport = :%d" % lport)
        self.assertEqual(len(timers), 1, timers)
        self.assertTrue(0 < timers[0] <= 9, timers)
        p.signal(signal.SIGTERM)
        self.assertExits(p, -signal.SIGTERM)


if __name__ == "__main__":
    fltest.main()
