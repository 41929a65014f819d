"""Integration tests for forkloop-echo: the real binary on loopback.

Each test method is one scenario; meson runs it once per mode (FORKLOOP_MODE).
Every server is started with --listen 127.0.0.1:0 --mode MODE plus the
scenario's options, in its own process group, and killed by group afterwards.
"""

import ctypes
import os
import random
import re
import resource
import select
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fltest  # noqa: E402
from fltest import Proc, Server, recv_all, recv_exactly, wait_until  # noqa: E402

MODE = fltest.mode()
# Event mode's loops (--threads), from FORKLOOP_THREADS: the whole suite
# runs again with several, as every promise must hold across threads.
THREADS = os.environ.get("FORKLOOP_THREADS")
KIB = 1024
MIB = 1024 * 1024
STATS_RE = re.compile(r"stats: open=(\d+) accepted=(\d+) refused=(\d+) "
                      r"bytes_in=(\d+) bytes_out=(\d+)")
# -v: "event=close peer=127.0.0.1:P in=N out=M reason=R duration_ms=T"
# (fork mode: pid=CHILD after the peer).
CLOSED_RE = r"event=close peer=127\.0\.0\.1:%d (?:pid=\d+ )?in=(\d+) out=(\d+) "
SYS_PIDFD_GETFD = 438  # the same number on every Linux architecture


def group_rss_kb(pgid):
    total = 0
    for pid in fltest.pgroup_pids(pgid):
        try:
            total += fltest.rss_kb(pid)
        except OSError:
            pass
    return total


def closed_by_peer(sock, timeout=10.0):
    """True if the peer closed (EOF or RST) within timeout, False if data
    arrived; raises socket.timeout if nothing happened."""
    sock.settimeout(timeout)
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def hexport(port):
    return "%04X" % port


def tcp_queues(local_port, remote_port):
    """(tx_queue, rx_queue) of the 127.0.0.1 TCP socket local_port ->
    remote_port, from /proc/net/tcp, or None if there is none."""
    local = "0100007F:" + hexport(local_port)
    remote = "0100007F:" + hexport(remote_port)
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[1] == local and fields[2] == remote:
                tx, rx = fields[4].split(":")
                return int(tx, 16), int(rx, 16)
    return None


def tcp_entry(local_port, remote_port):
    """The /proc/net/tcp fields of 127.0.0.1:local_port -> remote_port."""
    local = "0100007F:" + hexport(local_port)
    remote = "0100007F:" + hexport(remote_port)
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[1] == local and fields[2] == remote:
                return fields
    return None


def socket_fd(pids, inode):
    """(pid, fd) of the first of pids that holds socket inode."""
    for pid in pids:
        try:
            fds = os.listdir("/proc/%d/fd" % pid)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink("/proc/%d/fd/%s" % (pid, fd)) == \
                        "socket:[%s]" % inode:
                    return pid, int(fd)
            except OSError:
                continue
    return None


def pidfd_getfd(pid, fd):
    """A copy of another process's descriptor (pidfd_getfd(2))."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        new = libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
        if new < 0:
            e = ctypes.get_errno()
            raise OSError(e, "pidfd_getfd: " + os.strerror(e))
        return new
    finally:
        os.close(pidfd)


def listening_ports(pid):
    """Ports of the IPv4 sockets pid holds that are in state LISTEN."""
    inodes = set()
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        return []
    ports = []
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                ports.append(int(fields[1].split(":")[1], 16))
    return ports


class Transfer:
    """Send data on sock from a thread while the caller reads the echo."""

    def __init__(self, sock, data, chunk=None, rng=None):
        self.sock = sock
        self.data = data
        self.chunk = chunk
        self.rng = rng
        self.error = None
        self.t = threading.Thread(target=self._send, daemon=True)
        self.t.start()

    def _send(self):
        try:
            if self.chunk is None:
                self.sock.sendall(self.data)
                return
            view = memoryview(self.data)
            off = 0
            while off < len(view):
                n = self.rng.randint(1, self.chunk)
                self.sock.sendall(view[off:off + n])
                off += n
        except OSError as e:
            self.error = e

    def join(self, timeout=60.0):
        self.t.join(timeout)
        return not self.t.is_alive()


class EchoTest(fltest.ProcTestCase):

    def setUp(self):
        super().setUp()
        self.socks = []
        self.seed = int.from_bytes(os.urandom(4), "little")
        self.rng = random.Random(self.seed)

    def tearDown(self):
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass
        super().tearDown()

    # -- helpers ---------------------------------------------------------

    def argv(self, *opts, listen=("127.0.0.1:0",)):
        argv = [fltest.binary("echo")]
        for spec in listen:
            argv += ["--listen", spec]
        argv += ["--mode", MODE]
        if THREADS is not None:
            argv += ["--threads", THREADS]
        return argv + list(opts)

    def server(self, *opts, **kw):
        listen = kw.pop("listen", ("127.0.0.1:0",))
        return self.start(Server, self.argv(*opts, listen=listen),
                          count=len(listen), **kw)

    def connect(self, srv, host=None, port=None):
        s = socket.create_connection((host or srv.host, port or srv.port),
                                     timeout=30)
        self.socks.append(s)
        return s

    def payload(self, n):
        return self.rng.randbytes(n)

    def assertBytes(self, got, want, what="echo"):
        if got == want:
            return
        n = min(len(got), len(want))
        first = next((i for i in range(n) if got[i] != want[i]), n)
        self.fail("%s: got %d bytes, want %d; first difference at offset "
                  "%d (seed %d)" % (what, len(got), len(want), first,
                                    self.seed))

    def assertPrefix(self, got, sent, what="echo"):
        self.assertBytes(got, sent[:len(got)], what)

    def assertAlive(self, srv):
        self.assertIsNone(srv.p.poll(), "server exited; stderr:\n%s"
                          % srv.stderr_text())

    def roundtrip(self, sock, data, timeout=60.0):
        """Send data while reading the echo concurrently; assert exact."""
        tr = Transfer(sock, data)
        got = recv_exactly(sock, len(data), timeout)
        self.assertTrue(tr.join(timeout), "sender stuck")
        self.assertIsNone(tr.error)
        self.assertBytes(got, data)

    def assertServes(self, srv, size=64 * KIB):
        s = self.connect(srv)
        self.roundtrip(s, self.payload(size))
        s.close()

    def stats(self, srv, timeout=10.0):
        """Send SIGUSR1 and return the next stats line's numbers as a dict."""
        with srv.cond:
            n = sum(1 for l in srv.lines if l is not None and STATS_RE.search(l))
        srv.signal(signal.SIGUSR1)
        m = srv.wait_line(STATS_RE.pattern, timeout=timeout, count=n + 1)[-1]
        keys = ("open", "accepted", "refused", "bytes_in", "bytes_out")
        return dict(zip(keys, (int(x) for x in m.groups())))

    def wait_stats(self, srv, pred, timeout=15.0):
        """Poll SIGUSR1 until pred(stats) holds; return the last stats."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.stats(srv)
            if pred(st) or time.monotonic() > deadline:
                return st
            time.sleep(0.1)

    def wait_children_gone(self, srv, timeout=20.0):
        if MODE != "fork":
            return
        wait_until(lambda: not fltest.children(srv.pid), timeout)
        left = fltest.children(srv.pid)
        self.assertEqual(left, [], "children left (pid, state): %r" % left)

    def wait_fds(self, srv, want, timeout=20.0):
        wait_until(lambda: fltest.fd_count(srv.pid) == want, timeout)
        self.assertEqual(fltest.fd_count(srv.pid), want,
                         "server fd count did not return to its start")

    def warm_baseline_fds(self, srv):
        """Serve one connection, let it go, and return the fd count."""
        self.assertServes(srv, 1024)
        self.wait_children_gone(srv)
        time.sleep(0.2)
        return fltest.fd_count(srv.pid)

    def flood_without_reading(self, srv, sock, data, stall=2.0, limit=60.0):
        """Send data without reading until done or no progress for stall
        seconds; return (bytes sent, peak group RSS in KiB)."""
        sock.setblocking(False)
        view = memoryview(data)
        sent = 0
        peak = group_rss_kb(srv.pgid)
        now = time.monotonic()
        last = now
        deadline = now + limit
        next_sample = now
        while sent < len(data) and now - last < stall and now < deadline:
            _, w, _ = select.select([], [sock], [], 0.1)
            if w:
                try:
                    sent += sock.send(view[sent:sent + 256 * KIB])
                    last = time.monotonic()
                except BlockingIOError:
                    pass
            now = time.monotonic()
            if now >= next_sample:
                peak = max(peak, group_rss_kb(srv.pgid))
                next_sample = now + 0.1
        peak = max(peak, group_rss_kb(srv.pgid))
        sock.setblocking(True)
        return sent, peak

    def run_echo(self, args, timeout=20.0):
        """Run the binary to completion; return (status, stdout, stderr)."""
        p = subprocess.Popen([fltest.binary("echo")] + args,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            self.fail("%r still running after %gs" % (args, timeout))
        left = fltest.pgroup_pids(p.pid)
        self.assertEqual(left, [], "%r left processes behind" % (args,))
        return p.returncode, out.decode(errors="replace"), \
            err.decode(errors="replace")

    # -- echo correctness ------------------------------------------------

    def test_many_concurrent_random_payloads(self):
        srv = self.server()
        nconn = 300
        sizes = [self.rng.randint(0, 256 * KIB) if i % 6 == 0
                 else self.rng.randint(1, 16 * KIB) for i in range(nconn)]
        conns = []
        sel = selectors.DefaultSelector()
        try:
            for i, size in enumerate(sizes):
                s = self.connect(srv)
                s.setblocking(False)
                c = {"i": i, "sock": s, "data": self.payload(size), "off": 0,
                     "got": bytearray()}
                conns.append(c)
                sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE,
                             c)
            pending = len(conns)
            for c in conns:
                if not c["data"]:
                    sel.unregister(c["sock"])
                    pending -= 1
            deadline = time.monotonic() + 90
            while pending and time.monotonic() < deadline:
                for key, ev in sel.select(timeout=1.0):
                    c = key.data
                    s = c["sock"]
                    if ev & selectors.EVENT_WRITE and c["off"] < len(c["data"]):
                        n = self.rng.choice((1, 7, 100, 1460, 4096, 65536))
                        try:
                            c["off"] += s.send(
                                c["data"][c["off"]:c["off"] + n])
                        except BlockingIOError:
                            pass
                        if c["off"] == len(c["data"]):
                            sel.modify(s, selectors.EVENT_READ, c)
                    if ev & selectors.EVENT_READ:
                        b = s.recv(256 * KIB)
                        if not b:
                            self.fail("connection %d: EOF after %d of %d bytes"
                                      % (c["i"], len(c["got"]),
                                         len(c["data"])))
                        c["got"] += b
                        if len(c["got"]) > len(c["data"]):
                            self.fail("connection %d: %d bytes back for %d "
                                      "sent" % (c["i"], len(c["got"]),
                                                len(c["data"])))
                        if len(c["got"]) == len(c["data"]):
                            sel.unregister(s)
                            pending -= 1
            self.assertEqual(pending, 0, "connections unfinished at deadline")
        finally:
            sel.close()
        for c in conns:
            self.assertBytes(bytes(c["got"]), c["data"],
                             "connection %d" % c["i"])
        self.assertAlive(srv)

    def test_halfclose_echoes_everything(self):
        srv = self.server()
        s = self.connect(srv)
        data = self.payload(MIB)

        def send():
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)

        t = threading.Thread(target=send, daemon=True)
        t.start()
        got = recv_all(s, timeout=60)
        t.join(30)
        self.assertBytes(got, data)
        empty = self.connect(srv)
        empty.shutdown(socket.SHUT_WR)
        self.assertEqual(recv_all(empty, timeout=10), b"")
        self.assertAlive(srv)

    def _never_reading(self, *opts, halfclose=False):
        srv = self.server(*opts)
        s = self.connect(srv)
        self.roundtrip(s, b"x")
        time.sleep(0.2)
        base = group_rss_kb(srv.pgid)
        data = self.payload(32 * MIB)
        sent, peak = self.flood_without_reading(srv, s, data)
        growth = peak - base
        self.assertLess(growth, 16 * KIB,
                        "server grew %d KiB while a client sent %d bytes "
                        "without reading (%s)" % (growth, sent, opts))
        self.assertGreater(sent, 0)
        # Reading resumes the echo: everything comes back, then the rest.
        reader = {}

        def read():
            try:
                if halfclose:
                    reader["got"] = recv_all(s, timeout=90)
                else:
                    reader["got"] = recv_exactly(s, len(data), timeout=90)
            except OSError as e:
                reader["err"] = e

        t = threading.Thread(target=read, daemon=True)
        t.start()
        s.sendall(data[sent:])
        if halfclose:
            s.shutdown(socket.SHUT_WR)
        t.join(120)
        self.assertFalse(t.is_alive(), "reader stuck")
        self.assertNotIn("err", reader)
        self.assertBytes(reader["got"], data)
        self.assertAlive(srv)

    def test_never_reading_client_bounded(self):
        self._never_reading()

    def test_never_reading_client_small_max_pending(self):
        self._never_reading("--max-pending", "4K")

    def test_halfclose_after_backpressure(self):
        # The end of input arrives while reading is paused for backpressure:
        # everything is still echoed, then EOF.
        self._never_reading("--max-pending", "64K", halfclose=True)

    # -- the tutorial's bugs ---------------------------------------------

    def test_exact_bytes_no_garbage(self):
        srv = self.server()
        s = self.connect(srv)
        s.sendall(b"hello")
        self.assertEqual(recv_exactly(s, 5, timeout=10), b"hello")
        s.settimeout(0.5)
        with self.assertRaises(socket.timeout, msg="bytes after the echo"):
            extra = s.recv(4096)
            self.fail("unexpected %r after the echo" % extra)
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(recv_all(s, timeout=10), b"")

    def test_one_read_is_not_one_message(self):
        srv = self.server()
        s = self.connect(srv)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        msg = self.payload(3000)
        off = 0
        while off < len(msg):
            n = self.rng.randint(1, 3)
            s.sendall(msg[off:off + n])
            off += n
            if off % 97 < 3:
                time.sleep(0.002)
        self.assertBytes(recv_exactly(s, len(msg), timeout=30), msg,
                         "tiny chunks")
        lines = b"".join(b"message %d\n" % i for i in range(2000))
        s.sendall(lines)
        self.assertBytes(recv_exactly(s, len(lines), timeout=30), lines,
                         "many messages in one send")
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(recv_all(s, timeout=10), b"")

    def test_nul_bytes_and_all_values(self):
        srv = self.server()
        s = self.connect(srv)
        data = bytes(range(256)) * 64 + b"\0\0\0tail-without-newline\0"
        self.roundtrip(s, data)
        self.roundtrip(s, b"\0")
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(recv_all(s, timeout=10), b"")

    def test_no_zombies_no_fd_leak(self):
        srv = self.server()
        base = self.warm_baseline_fds(srv)
        for batch in range(10):
            socks = [self.connect(srv) for _ in range(30)]
            for i, s in enumerate(socks):
                s.sendall(b"%d/%d" % (batch, i))
            for i, s in enumerate(socks):
                want = b"%d/%d" % (batch, i)
                self.assertEqual(recv_exactly(s, len(want), timeout=30), want)
                s.close()
            self.socks = [x for x in self.socks if x not in socks]
        self.wait_children_gone(srv)
        self.wait_fds(srv, base)
        self.assertAlive(srv)

    def test_signals_do_not_break_transfers(self):
        srv = self.server()
        s = self.connect(srv)
        data = self.payload(4 * MIB)
        tr = Transfer(s, data, chunk=64 * KIB, rng=random.Random(self.seed))
        stop = threading.Event()
        sent = [0]

        def pester():
            for _ in range(2000):
                if stop.is_set():
                    return
                pids = [srv.pid] + [p for p, st in fltest.children(srv.pid)
                                    if st != "Z"]
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGUSR1)
                        sent[0] += 1
                    except ProcessLookupError:
                        pass
                time.sleep(0.002)

        t = threading.Thread(target=pester, daemon=True)
        t.start()
        # Read slowly so the server sits blocked in its writes while the
        # signals arrive, for about a second.
        s.settimeout(60)
        got = bytearray()
        deadline = time.monotonic() + 60
        while len(got) < len(data) and time.monotonic() < deadline:
            b = s.recv(min(32 * KIB, len(data) - len(got)))
            if not b:
                break
            got += b
            time.sleep(0.008)
        stop.set()
        t.join(10)
        self.assertTrue(tr.join(30))
        self.assertIsNone(tr.error)
        self.assertGreater(sent[0], 100)
        self.assertBytes(bytes(got), data)
        self.assertAlive(srv)
        self.assertServes(srv)

    # -- resets, shutdown, limits -----------------------------------------

    def test_connection_reset(self):
        srv = self.server()
        base = self.warm_baseline_fds(srv)
        for i in range(30):
            s = self.connect(srv)
            s.setblocking(False)
            data = self.payload(256 * KIB)
            try:
                s.send(data)
            except BlockingIOError:
                pass
            if i % 3 == 1:
                s.setblocking(True)
                s.settimeout(10)
                s.recv(1000)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                         struct.pack("ii", 1, 0))
            s.close()
        self.assertAlive(srv)
        self.assertServes(srv)
        self.wait_children_gone(srv)
        self.wait_fds(srv, base)
        self.assertAlive(srv)

    def test_sigterm_with_open_connections(self):
        drain = 3
        srv = self.server("--drain-timeout", str(drain),
                          "--max-pending", "16M")
        idle = []
        for _ in range(3):
            s = self.connect(srv)
            self.roundtrip(s, self.payload(64 * KIB))
            idle.append(s)

        # A client that sent 2 MiB and has not read any of the echo yet.
        owed = self.connect(srv)
        data = self.payload(2 * MIB)
        tr = Transfer(owed, data)
        self.assertTrue(tr.join(60))
        self.assertIsNone(tr.error)
        cport = owed.getsockname()[1]

        def all_read():
            c = tcp_queues(cport, srv.port)
            v = tcp_queues(srv.port, cport)
            return c is not None and v is not None and c[0] == 0 and v[1] == 0
        self.assertTrue(wait_until(all_read, 30),
                        "server did not read the owed client's bytes: "
                        "client %r server %r" % (tcp_queues(cport, srv.port),
                                                 tcp_queues(srv.port, cport)))

        # A client with data in flight both ways when the signal comes.
        active = self.connect(srv)
        act = {"sent": bytearray(), "got": bytearray()}
        act_stop = threading.Event()

        def active_send():
            try:
                for _ in range(3000):
                    if act_stop.is_set():
                        return
                    chunk = self.payload(1024)
                    active.sendall(chunk)
                    act["sent"] += chunk
                    time.sleep(0.01)
            except OSError:
                pass

        def active_recv():
            active.settimeout(60)
            try:
                while True:
                    b = active.recv(65536)
                    if not b:
                        return
                    act["got"] += b
            except OSError:
                pass

        ts = threading.Thread(target=active_send, daemon=True)
        tr2 = threading.Thread(target=active_recv, daemon=True)
        ts.start()
        tr2.start()
        wait_until(lambda: len(act["got"]) >= 4096, 10)

        srv.signal(signal.SIGTERM)
        got = recv_all(owed, timeout=30)
        self.assertBytes(got, data, "owed echo after SIGTERM")
        for s in idle:
            self.assertTrue(closed_by_peer(s, timeout=drain + 20))
        try:
            status = srv.wait(timeout=drain + 20)
        except subprocess.TimeoutExpired:
            self.fail("server still running %ds after SIGTERM" % (drain + 20))
        act_stop.set()
        ts.join(10)
        tr2.join(10)
        self.assertEqual(status, 0, srv.stderr_text())
        self.assertPrefix(bytes(act["got"]), bytes(act["sent"]),
                          "active client")
        self.assertGroupGone(srv)
        b = socket.socket()
        self.socks.append(b)
        b.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        b.bind(("127.0.0.1", srv.port))
        b.listen()

    def test_drain_timeout_expires(self):
        srv = self.server("--drain-timeout", "1")
        s = self.connect(srv)
        self.roundtrip(s, b"x")
        self.flood_without_reading(srv, s, self.payload(32 * MIB))
        srv.signal(signal.SIGTERM)
        try:
            status = srv.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.fail("server still running 20s after SIGTERM with "
                      "--drain-timeout 1")
        self.assertEqual(status, 0, srv.stderr_text())
        self.assertGroupGone(srv)

    def test_sigint_to_process_group(self):
        # Ctrl-C: every process of the group gets SIGINT at once.
        srv = self.server("--drain-timeout", "10")
        socks = [self.connect(srv) for _ in range(3)]
        for s in socks:
            self.roundtrip(s, self.payload(16 * KIB))
        os.killpg(srv.pgid, signal.SIGINT)
        for s in socks:
            self.assertTrue(closed_by_peer(s, timeout=20))
        try:
            status = srv.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.fail("server still running 20s after SIGINT to its group")
        self.assertEqual(status, 0, srv.stderr_text())
        self.assertGroupGone(srv)

    def test_sigusr1_to_process_group(self):
        # One stats line per signal, however many processes serve: children
        # neither die of it nor pass it to the parent's loop.
        srv = self.server()
        socks = [self.connect(srv) for _ in range(3)]
        for s in socks:
            self.roundtrip(s, b"before")
        with srv.cond:
            n = sum(1 for l in srv.lines if l is not None and STATS_RE.search(l))
        os.killpg(srv.pgid, signal.SIGUSR1)
        srv.wait_line(STATS_RE.pattern, count=n + 1)
        for s in socks:
            self.roundtrip(s, b"after")
        st = self.stats(srv)
        self.assertEqual(st["open"], 3, st)
        with srv.cond:
            got = sum(1 for l in srv.lines
                      if l is not None and STATS_RE.search(l))
        self.assertEqual(got, n + 2, srv.stderr_text())
        self.assertAlive(srv)

    def test_max_conns(self):
        srv = self.server("--max-conns", "2")
        a = self.connect(srv)
        b = self.connect(srv)
        self.roundtrip(a, b"a")
        self.roundtrip(b, b"b")
        c = self.connect(srv)
        self.assertTrue(closed_by_peer(c, timeout=10),
                        "third connection got data")
        self.roundtrip(a, b"still a")
        self.roundtrip(b, b"still b")
        st = self.wait_stats(srv, lambda st: st["refused"] >= 1)
        self.assertEqual((st["refused"], st["accepted"], st["open"]),
                         (1, 2, 2), st)
        a.close()

        def fresh_works():
            s = socket.create_connection((srv.host, srv.port), timeout=10)
            try:
                s.sendall(b"again")
                return recv_exactly(s, 5, timeout=10) == b"again"
            except OSError:
                return False
            finally:
                s.close()
        self.assertTrue(wait_until(fresh_works, 15, 0.2),
                        "no connection accepted after one closed")
        self.roundtrip(b, b"b at the end")

    def test_idle_timeout(self):
        # Sends come every ~0.05 s, twenty times more often than the timeout,
        # so a loaded machine does not make the active connection look idle.
        srv = self.server("--idle-timeout", "1")
        idle = self.connect(srv)
        active = self.connect(srv)
        self.roundtrip(idle, b"i")
        self.roundtrip(active, b"a")
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < 3.0:
            msg = b"tick %d" % n
            self.roundtrip(active, msg, timeout=10)
            n += 1
            time.sleep(0.05)
        self.assertTrue(closed_by_peer(idle, timeout=10),
                        "idle connection got data")
        self.roundtrip(active, b"still here")
        self.assertAlive(srv)

    # -- command line and messages ----------------------------------------

    def test_port_in_use(self):
        taken = socket.socket()
        self.socks.append(taken)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, _, err = self.run_echo(
            ["--listen", "127.0.0.1:%d" % port, "--mode", MODE])
        self.assertEqual(status, 1, err)
        self.assertIn("cannot listen on 127.0.0.1:%d: Address already in use"
                      % port, err)
        self.assertTrue(err.startswith("forkloop-echo: "), err)
        # The first listener succeeds, the second fails: still exit 1.
        status, _, err = self.run_echo(
            ["--listen", "127.0.0.1:0", "--listen", "127.0.0.1:%d" % port,
             "--mode", MODE])
        self.assertEqual(status, 1, err)
        self.assertIn("cannot listen on 127.0.0.1:%d: Address already in use"
                      % port, err)

    def test_bad_options(self):
        base = ["--listen", "127.0.0.1:0", "--mode", MODE]
        status, _, err = self.run_echo(["--listen", "127.0.0.1:0",
                                        "--mode", "bogus"])
        self.assertEqual(status, 2, err)
        self.assertIn("event", err)
        self.assertIn("fork", err)
        self.assertIn("usage:", err)
        bad = [
            ["--bogus"], ["-x"], ["--listen", "nope"], ["--listen", "::1:80"],
            ["--listen", "127.0.0.1:65536"], ["--listen"],
            ["--max-pending", "0"], ["--max-pending", "lots"],
            ["--max-conns", "0"], ["--max-conns", "-3"],
            ["--idle-timeout", "-1"], ["--idle-timeout", "soon"],
            ["--drain-timeout", "abc"], ["-v", "-q"], ["stray"],
            ["--keepalive", "0"], ["--keepalive", "32768"],
            ["--keepalive", "1.5"], ["--keepalive", "soon"],
        ]
        many = []
        for _ in range(16):
            many += ["--listen", "127.0.0.1:0"]
        bad.append(many)
        for args in bad:
            status, out, err = self.run_echo(base + args)
            self.assertEqual(status, 2, "%r: %s" % (args, err))
            self.assertIn("usage:", err, args)
            self.assertEqual(out, "", args)
        for args in (["--help"], ["-h"], ["--version"], ["-V"]):
            status, out, err = self.run_echo(base + args)
            self.assertEqual(status, 0, "%r: %s" % (args, err))
            self.assertNotEqual(out.strip(), "", args)
            self.assertEqual(err, "", args)

    def test_ipv6_and_multiple_listeners(self):
        probe = socket.socket(socket.AF_INET6)
        try:
            probe.bind(("::1", 0))
        except OSError as e:
            self.fail("::1 is not available on this machine: %s" % e)
        finally:
            probe.close()
        srv = self.server(listen=("[::1]:0", "127.0.0.1:0"))
        lines = srv.wait_line(fltest.LISTEN_RE.pattern, count=2)
        text = [m.string for m in lines]
        rx = re.compile(r"^forkloop-echo: listening on (\[::1\]|127\.0\.0\.1)"
                        r":\d+ \(%s mode\)$" % MODE)
        for line in text:
            self.assertRegex(line, rx)
        self.assertEqual(sorted(h for h, _ in srv.addrs), ["127.0.0.1", "::1"])
        for host, port in srv.addrs:
            s = self.connect(srv, host, port)
            self.assertEqual(s.family, socket.AF_INET6 if host == "::1"
                             else socket.AF_INET)
            self.roundtrip(s, self.payload(100 * KIB))

    def test_listen_by_name(self):
        # A name resolves through getaddrinfo: one listener per address.
        hosts = {ai[4][0] for ai in socket.getaddrinfo(
            "localhost", 0, type=socket.SOCK_STREAM,
            flags=socket.AI_PASSIVE | socket.AI_ADDRCONFIG)}
        srv = self.start(Server, self.argv(listen=("localhost:0",)),
                         count=len(hosts))
        self.assertEqual({h for h, _ in srv.addrs}, hosts)
        for host, port in srv.addrs:
            s = self.connect(srv, host, port)
            self.roundtrip(s, self.payload(10 * KIB))

    def test_stats_sigusr1(self):
        srv = self.server()
        st = self.stats(srv)
        self.assertEqual(st, {"open": 0, "accepted": 0, "refused": 0,
                              "bytes_in": 0, "bytes_out": 0})
        s = self.connect(srv)
        n = 123457
        self.roundtrip(s, self.payload(n))
        want = {"open": 1, "accepted": 1, "refused": 0,
                "bytes_in": n, "bytes_out": n}
        st = self.wait_stats(srv, lambda st: st == want)
        self.assertEqual(st, want)
        line = srv.wait_line(STATS_RE.pattern, count=1)[-1].string
        self.assertRegex(line, r"^forkloop-echo: stats: open=\d+ "
                         r"accepted=\d+ refused=\d+ bytes_in=\d+ "
                         r"bytes_out=\d+$")
        s.close()
        want["open"] = 0
        st = self.wait_stats(srv, lambda st: st == want)
        self.assertEqual(st, want)
        self.assertAlive(srv)

    def test_verbose_logs_connections(self):
        srv = self.server("-v")
        before = len([l for l in srv.lines if l is not None])
        s = self.connect(srv)
        self.roundtrip(s, b"hello")
        port = s.getsockname()[1]
        s.close()
        srv.wait_line(r"127\.0\.0\.1:%d\b" % port, timeout=10)
        after = len([l for l in srv.lines if l is not None])
        self.assertGreater(after, before)

    def test_quiet_prints_nothing(self):
        p = self.start(Proc, self.argv("-q"))
        self.assertTrue(wait_until(lambda: listening_ports(p.pid), 10),
                        "no listening socket; stderr:\n%s" % p.stderr_text())
        port = listening_ports(p.pid)[0]
        s = self.connect(None, "127.0.0.1", port)
        self.roundtrip(s, b"quiet please")
        s.close()
        p.signal(signal.SIGTERM)
        self.assertEqual(p.wait(timeout=20), 0)
        p.t.join(5)
        self.assertEqual(p.stderr_text(), "")

    # -- signals, load, closing, limits -----------------------------------

    def test_sighup_and_other_signals_do_not_end_the_daemon(self):
        # A terminal hangup, a stray SIGUSR2 or alarm, sent to the whole
        # group: the daemon logs and goes on, its connections too.
        srv = self.server()
        s = self.connect(srv)
        self.roundtrip(s, b"before")
        sigs = [signal.SIGHUP, signal.SIGUSR2, signal.SIGALRM,
                signal.SIGVTALRM, signal.SIGPROF, signal.SIGIO,
                signal.SIGPWR, signal.SIGXFSZ, signal.SIGSTKFLT,
                signal.SIGRTMIN, signal.SIGRTMAX]
        for sig in sigs:
            os.killpg(srv.pgid, sig)
            time.sleep(0.05)
            self.assertAlive(srv)
        srv.wait_line(r"SIGHUP: nothing to reload")
        srv.wait_line(r"SIGUSR2 ignored")
        self.roundtrip(s, b"after every signal")
        self.assertServes(srv)
        srv.signal(signal.SIGTERM)
        self.assertEqual(srv.wait(timeout=20), 0, srv.stderr_text())
        self.assertGroupGone(srv)

    def test_children_die_with_the_daemon(self):
        # Whatever kills the daemon, even SIGKILL, nothing serves on: in
        # fork mode every child dies with its parent.
        srv = self.server()
        socks = [self.connect(srv) for _ in range(3)]
        for s in socks:
            self.roundtrip(s, b"x")
        if MODE == "fork":
            self.assertEqual(len(fltest.children(srv.pid)), 3)
        os.kill(srv.pid, signal.SIGKILL)
        srv.wait(timeout=10)
        for i, s in enumerate(socks):
            try:
                closed = closed_by_peer(s, timeout=5)
            except socket.timeout:
                closed = False
            if not closed:
                s.settimeout(2)
                try:
                    s.sendall(b"anyone?")
                    served = s.recv(100) == b"anyone?"
                except OSError:
                    served = False
                self.fail("connection %d still open 5 s after the daemon "
                          "was killed (still echoing: %s)" % (i, served))

        wait_until(lambda: not fltest.live_pids(srv.pgid), 10)
        self.assertEqual(fltest.live_pids(srv.pgid), [],
                         "processes outlived the daemon")

    def test_accept_burst_yields_to_signals(self):
        # Connections queued while the daemon was stopped, and SIGUSR1:
        # one wake-up accepts a bounded burst, then answers the signal.
        n = 200
        srv = self.server()
        self.assertServes(srv, 1024)
        before = self.stats(srv)["accepted"]
        with srv.cond:
            nstats = sum(1 for l in srv.lines
                         if l is not None and STATS_RE.search(l))
        socks = []
        srv.signal(signal.SIGSTOP)
        try:
            self.assertTrue(wait_until(
                lambda: fltest.proc_state(srv.pid) == "T", 5))
            for _ in range(n):
                socks.append(self.connect(srv))
            srv.signal(signal.SIGUSR1)
        finally:
            srv.signal(signal.SIGCONT)
        m = srv.wait_line(STATS_RE.pattern, count=nstats + 1)[-1]
        burst = int(m.group(2)) - before
        self.assertLess(burst, 64, "%d accepts before the signal's turn "
                        "(of %d queued)" % (burst, n))
        for i, s in enumerate(socks):
            self.roundtrip(s, b"%d" % i)
        st = self.stats(srv)
        self.assertEqual(st["accepted"] - before, n, st)

    def test_churn_does_not_starve_the_loop(self):
        # forkloop-bench --churn -c 10: never more than 10 connections, so
        # --max-conns 50 refuses none; signals are answered at once.
        srv = self.server("--max-conns", "50", "--drain-timeout", "2")
        bench = self.start(Proc, [fltest.binary("bench"), "--churn",
                                  "-c", "10", "-d", "6", "--json",
                                  "%s:%d" % (srv.host, srv.port)],
                           stdout=subprocess.PIPE)
        time.sleep(1.0)
        self.assertIsNone(bench.p.poll(), bench.stderr_text())
        slowest = 0.0
        most = 0
        for _ in range(5):
            t0 = time.monotonic()
            st = self.stats(srv, timeout=10)
            slowest = max(slowest, time.monotonic() - t0)
            if MODE == "fork":
                most = max(most, len(fltest.children(srv.pid)))
            time.sleep(0.2)
        self.assertGreater(st["accepted"], 100, st)
        self.assertLess(slowest, 0.5, "SIGUSR1 answered %.2f s late" % slowest)
        self.assertEqual(st["refused"], 0, st)
        self.assertLess(most, 50, "%d children at once" % most)
        t0 = time.monotonic()
        srv.signal(signal.SIGTERM)
        try:
            status = srv.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.fail("still running 10 s after SIGTERM under churn")
        took = time.monotonic() - t0
        self.assertLess(took, 1.5, "SIGTERM took %.2f s under churn" % took)
        self.assertEqual(status, 0, srv.stderr_text())

    def test_drain_delivers_echo_to_a_client_still_sending(self):
        # The client sends without pause and does not read; the daemon gets
        # SIGTERM; the client then reads to EOF and must get every byte the
        # daemon sent it, not a reset that destroys what was in flight.
        data = self.payload(MIB) * 32
        srv = self.server("-v", "--drain-timeout", "10")
        s = self.connect(srv)
        port = s.getsockname()[1]
        stop = threading.Event()
        off = [0]

        def send():
            view = memoryview(data)
            s.settimeout(0.1)
            while not stop.is_set() and off[0] < len(data):
                try:
                    off[0] += s.send(view[off[0]:off[0] + 256 * KIB])
                except socket.timeout:
                    continue
                except OSError:
                    return

        t = threading.Thread(target=send, daemon=True)
        t.start()
        time.sleep(0.5)
        srv.signal(signal.SIGTERM)
        time.sleep(0.2)
        stop.set()
        t.join(10)
        got = bytearray()
        err = None
        s.settimeout(30)
        while True:
            try:
                b = s.recv(1 << 20)
            except OSError as e:
                err = e
                break
            if not b:
                break
            got += b
        self.assertPrefix(bytes(got), data)
        m = srv.wait_line(CLOSED_RE % port, timeout=20)[-1]
        out = int(m.group(2))
        self.assertGreater(out, 0)
        self.assertEqual(len(got), out, "received %d of the %d bytes the "
                         "daemon sent (%r)" % (len(got), out, err))
        self.assertIsNone(err)
        self.assertEqual(srv.wait(timeout=30), 0, srv.stderr_text())

    def test_idle_timeout_spares_a_slow_transfer(self):
        # A reader with an 8 KiB buffer taking 2 KiB every 50 ms keeps bytes
        # moving: not idle. Once it stops reading and sending, it is.
        data = self.payload(MIB) * 32
        srv = self.server("-v", "--idle-timeout", "1")
        s = socket.socket()
        self.socks.append(s)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * KIB)
        s.connect((srv.host, srv.port))
        port = s.getsockname()[1]
        stop = threading.Event()
        off = [0]

        def send():
            view = memoryview(data)
            while not stop.is_set() and off[0] < len(data):
                try:
                    off[0] += s.send(view[off[0]:off[0] + 64 * KIB])
                except socket.timeout:
                    continue
                except OSError:
                    return

        s.settimeout(0.1)
        t = threading.Thread(target=send, daemon=True)
        t.start()
        got = bytearray()
        start = time.monotonic()
        try:
            while time.monotonic() - start < 3.5:
                try:
                    b = s.recv(2 * KIB)
                except socket.timeout:
                    continue
                except ConnectionResetError:
                    b = b""
                if not b:
                    self.fail("closed %.2f s into a transfer that moved "
                              "2 KiB every 50 ms" % (time.monotonic() - start))
                got += b
                time.sleep(0.05)
        finally:
            stop.set()
            t.join(10)
        self.assertGreater(len(got), 64 * KIB)
        self.assertPrefix(bytes(got), data)
        # Neither reading nor sending now: idle, closed.
        t0 = time.monotonic()
        srv.wait_line(r"event=close peer=127\.0\.0\.1:%d .*"
                      r"reason=idle_timeout " % port, timeout=10)
        self.assertLess(time.monotonic() - t0, 5.0)
        self.assertAlive(srv)

    def test_verbose_logs_refusals_rate_limited(self):
        srv = self.server("-v", "--max-conns", "1")
        a = self.connect(srv)
        self.roundtrip(a, b"a")
        n = 60
        first = None
        for _ in range(n):
            c = socket.create_connection((srv.host, srv.port), timeout=10)
            if first is None:
                first = c.getsockname()[1]
            self.assertTrue(closed_by_peer(c, timeout=10))
            c.close()
        st = self.wait_stats(srv, lambda st: st["refused"] >= n)
        self.assertEqual(st["refused"], n, st)
        srv.wait_line(r"event=refused peer=127\.0\.0\.1:%d\b" % first)
        with srv.cond:
            logged = sum(1 for l in srv.lines
                         if l is not None and "event=refused " in l)
        self.assertLessEqual(logged, 2 * 10, "a line per refusal: "
                             "unbounded under a flood of connects")
        srv.wait_line(r"event=refused peer=127\.0\.0\.1:%d "
                      r"reason=max_conns open=1 max_conns=1$" % first)
        time.sleep(1.1)
        last = socket.create_connection((srv.host, srv.port), timeout=10)
        port = last.getsockname()[1]
        self.assertTrue(closed_by_peer(last, timeout=10))
        last.close()
        srv.wait_line(r"event=refused peer=127\.0\.0\.1:%d " % port)
        rx = re.compile(r"event=refused peer=127\.0\.0\.1:\d+ "
                        r"reason=max_conns open=1 max_conns=1"
                        r"(?: not_logged=(\d+))?$")
        with srv.cond:
            lines = [rx.search(l) for l in srv.lines if l is not None]
        lines = [m for m in lines if m]
        held = sum(int(m.group(1) or 0) for m in lines)
        self.assertLess(len(lines), n, "a line per refusal, unbounded")
        self.assertGreater(held, 0)
        self.assertEqual(len(lines) + held, n + 1, srv.stderr_text())
        self.roundtrip(a, b"still served")

    def test_keepalive_set_on_connections(self):
        srv = self.server("--keepalive", "7")
        s = self.connect(srv)
        self.roundtrip(s, b"k")
        port = s.getsockname()[1]
        # /proc/net/tcp: timer 2 is keepalive (1, a retransmission, may
        # show until the echo is acknowledged), due in clock ticks.
        wait_until(lambda: tcp_entry(srv.port, port)[5][:2] == "02", 5)
        entry = tcp_entry(srv.port, port)
        timer, when = entry[5].split(":")
        self.assertEqual(timer, "02", entry)
        self.assertLessEqual(int(when, 16), 7 * os.sysconf("SC_CLK_TCK"))
        pids = [srv.pid] + [p for p, st in fltest.children(srv.pid)]
        found = socket_fd(pids, entry[9])
        self.assertIsNotNone(found, "no process holds the connection")
        fd = pidfd_getfd(*found)
        with socket.socket(fileno=fd) as dup:
            self.assertEqual(dup.getsockopt(socket.SOL_SOCKET,
                                            socket.SO_KEEPALIVE), 1)
            self.assertEqual(dup.getsockopt(socket.IPPROTO_TCP,
                                            socket.TCP_KEEPIDLE), 7)
            self.assertEqual(dup.getsockopt(socket.IPPROTO_TCP,
                                            socket.TCP_KEEPINTVL), 2)
            self.assertEqual(dup.getsockopt(socket.IPPROTO_TCP,
                                            socket.TCP_KEEPCNT), 3)
        plain = self.server()
        p = self.connect(plain)
        self.roundtrip(p, b"p")
        pport = p.getsockname()[1]
        wait_until(lambda: tcp_entry(plain.port, pport)[5][:2] == "00", 5)
        entry = tcp_entry(plain.port, pport)
        self.assertEqual(entry[5].split(":")[0], "00", entry)

    def test_out_of_descriptors_logged_once(self):
        srv = self.server("-v")
        self.assertServes(srv, 1024)
        self.wait_children_gone(srv)
        time.sleep(0.2)
        with fltest.out_of_descriptors(srv.pid):
            c = self.connect(srv)
            c.sendall(b"waited")
            srv.wait_line(r"accept: Too many open files; pausing", timeout=5)
            time.sleep(1.5)
            with srv.cond:
                n = sum(1 for l in srv.lines
                        if l is not None and "pausing" in l)
            self.assertEqual(n, 1, srv.stderr_text())
        self.assertEqual(recv_exactly(c, 6, timeout=10), b"waited")
        m = srv.wait_line(r"accepting again after (\d+\.\d) s; (\d+) "
                          r"attempts waited")[-1]
        self.assertGreaterEqual(float(m.group(1)), 1.4)
        self.assertGreaterEqual(int(m.group(2)), 10)
        self.assertServes(srv)

    def test_pause_at_the_descriptor_limit_logged_once(self):
        # At its descriptor limit with connects queued, every connection
        # that closes lets one queued connect in and makes the next accept
        # fail: a pause and a resume per close. They are logged once in
        # 10 s, not per close. (Event mode: a fork mode parent holds no
        # descriptor per connection.)
        srv = self.server()
        self.assertServes(srv, 1024)
        time.sleep(0.2)
        used = {int(x) for x in os.listdir("/proc/%d/fd" % srv.pid)}
        free = [fd for fd in range(len(used) + 3) if fd not in used]
        soft, hard = resource.prlimit(srv.pid, resource.RLIMIT_NOFILE)
        # Room for two connections: the second free descriptor + 1.
        resource.prlimit(srv.pid, resource.RLIMIT_NOFILE,
                         (free[1] + 1, hard))
        try:
            open_ = [self.connect(srv), self.connect(srv)]
            for s in open_:
                self.roundtrip(s, b"held")
            queued = [self.connect(srv) for _ in range(5)]
            for q in queued:
                q.sendall(b"queued")
            srv.wait_line(r"accept: Too many open files; pausing accepts$",
                          timeout=10)
            for q in queued[:4]:
                open_.pop(0).close()
                self.assertEqual(recv_exactly(q, 6, timeout=20), b"queued")
                open_.append(q)
            time.sleep(0.3)
            self.assertEqual(len(self.lines(srv, "pausing accepts")), 1,
                             srv.stderr_text())
            self.assertLessEqual(len(self.lines(srv, "accepting again")), 1,
                                 srv.stderr_text())
        finally:
            resource.prlimit(srv.pid, resource.RLIMIT_NOFILE, (soft, hard))
        self.assertEqual(recv_exactly(queued[4], 6, timeout=20), b"queued")
        self.assertServes(srv)

    def lines(self, srv, needle):
        with srv.cond:
            return [l for l in srv.lines if l is not None and needle in l]


if __name__ == "__main__":
    fltest.main()
