"""Integration tests for forkloop-echo --threads (event mode): connections
spread over the loops, byte-exact echo over several listeners, --max-conns
exact under a burst of connects from many client threads, one SIGUSR1 line
with the sum, a drain of every loop, socket activation, UDP beside the
threads, CPU pinning and the option's errors.

The rest of echo_test.py also runs with --threads 4 (FORKLOOP_THREADS);
these are the promises only several loops can break.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fltest  # noqa: E402
from fltest import Proc, Server, recv_exactly, wait_until  # noqa: E402

KIB = 1024
MIB = 1024 * 1024
STATS_RE = re.compile(r"stats: open=(\d+) accepted=(\d+) refused=(\d+) "
                      r"bytes_in=(\d+) bytes_out=(\d+)")
ACTIVATE = shutil.which("systemd-socket-activate")


def tasks(pid):
    """The thread ids of pid's event loops: the main thread and those
    named echo-loop-N (a sanitizer's own threads left out)."""
    out = []
    for t in sorted(int(t) for t in os.listdir("/proc/%d/task" % pid)):
        with open("/proc/%d/task/%d/comm" % (pid, t)) as f:
            comm = f.read().strip()
        if t == pid or comm.startswith("echo-loop-"):
            out.append(t)
    return out


def roundtrip(host, port, data, timeout=60):
    """Send data while reading its echo; return what came back."""
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        t = threading.Thread(target=s.sendall, args=(data,))
        t.start()
        got = recv_exactly(s, len(data), timeout)
        t.join(timeout)
        return got
    finally:
        s.close()


class ThreadsTest(fltest.ProcTestCase):

    def setUp(self):
        super().setUp()
        self.socks = []

    def tearDown(self):
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass
        super().tearDown()

    def echo(self, *opts, listen=("127.0.0.1:0",), count=None):
        argv = [fltest.binary("echo"), "--mode", "event"]
        for spec in listen:
            argv += ["--listen", spec]
        return self.start(Server, argv + list(opts),
                          count=count or len(listen))

    def stats(self, srv, timeout=10.0):
        with srv.cond:
            n = sum(1 for l in srv.lines
                    if l is not None and STATS_RE.search(l))
        srv.signal(signal.SIGUSR1)
        m = srv.wait_line(STATS_RE.pattern, timeout=timeout, count=n + 1)
        keys = ("open", "accepted", "refused", "bytes_in", "bytes_out")
        return dict(zip(keys, (int(x) for x in m[-1].groups())))

    def connect(self, host, port):
        s = socket.create_connection((host, port), timeout=30)
        self.socks.append(s)
        return s

    def test_byte_exact_over_listeners_and_loops(self):
        """300 connections at once over two listeners (IPv4 and IPv6),
        each echoed exactly; four loops, all of which did work."""
        srv = self.echo("--threads", "4", "-v",
                        listen=("127.0.0.1:0", "[::1]:0"))
        self.assertEqual(len(tasks(srv.pid)), 4)
        rng = os.urandom(4)
        results = {}

        def client(i):
            host, port = srv.addrs[i % 2]
            data = (bytes([i % 256]) + rng) * (4 * KIB + 37 * i)
            results[i] = roundtrip(host, port, data) == data

        threads = [threading.Thread(target=client, args=(i,))
                   for i in range(300)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(len(results), 300)
        self.assertTrue(all(results.values()),
                        [i for i, ok in results.items() if not ok])
        st = self.stats(srv)
        self.assertEqual(st["accepted"], 300)
        self.assertEqual(st["bytes_in"], st["bytes_out"])
        self.assertEqual(st["bytes_in"], sum(
            (1 + 4) * (4 * KIB + 37 * i) for i in range(300)))
        # Each loop served some of them (-v names the loop).
        loops = [int(m.group(1)) for m in srv.wait_line(
            r"event=open peer=\S+ loop=(\d+)$", count=300)]
        self.assertEqual(len(loops), 300)
        self.assertEqual(sorted(set(loops)), [0, 1, 2, 3])

    def test_max_conns_exact_under_a_burst(self):
        """200 connects at once from 20 client threads against
        --max-conns 50: exactly 50 served; closing 10 lets exactly 10
        more in."""
        srv = self.echo("--threads", "4", "--max-conns", "50")
        served, refused = [], []
        lock = threading.Lock()

        def probe(s):
            # Served: its byte comes back. Refused: closed unread.
            try:
                s.sendall(b"x")
                return s.recv(1) == b"x"
            except OSError:
                return False

        def burst(n):
            for _ in range(n):
                s = socket.create_connection((srv.host, srv.port),
                                             timeout=10)
                ok = probe(s)
                with lock:
                    (served if ok else refused).append(s)

        def run(nthreads, each):
            ts = [threading.Thread(target=burst, args=(each,))
                  for _ in range(nthreads)]
            for t in ts:
                t.start()
            for t in ts:
                t.join(60)

        run(20, 10)
        self.socks += served + refused
        self.assertEqual((len(served), len(refused)), (50, 150))
        st = self.stats(srv)
        self.assertEqual((st["open"], st["accepted"], st["refused"]),
                         (50, 50, 150))
        for s in served[:10]:
            s.close()
        wait_until(lambda: self.stats(srv)["open"] == 40, 10)
        served, refused = [], []
        run(10, 3)
        self.socks += served + refused
        self.assertEqual((len(served), len(refused)), (10, 20))
        self.assertEqual(self.stats(srv)["open"], 50)

    def test_drain_every_loop_with_transfers_in_flight(self):
        """SIGTERM while 40 clients over four loops have echo owed: each
        gets all of it, and the daemon exits 0 within --drain-timeout."""
        srv = self.echo("--threads", "4", "--drain-timeout", "20")
        socks = [self.connect(srv.host, srv.port) for _ in range(40)]
        data = [os.urandom(64 * KIB) for _ in socks]
        for s, d in zip(socks, data):
            s.sendall(d)  # the echo waits in the socket buffers
        # Owed once read: input still unread at the signal is not.
        total = sum(len(d) for d in data)
        wait_until(lambda: self.stats(srv)["bytes_in"] == total, 20)
        st = self.stats(srv)
        self.assertEqual((st["open"], st["bytes_in"]), (40, total))
        t0 = time.monotonic()
        srv.signal(signal.SIGTERM)
        srv.wait_line("shutting down: 40 connections to drain")
        for s, d in zip(socks, data):
            got = fltest.recv_all(s, timeout=30)
            self.assertEqual(len(got), len(d))
            self.assertEqual(got, d)
        self.assertEqual(srv.wait(30), 0, srv.stderr_text())
        self.assertLess(time.monotonic() - t0, 20)
        self.assertGroupGone(srv)

    def test_sigusr1_during_a_drain(self):
        """SIGUSR1 while one loop drains a client that has not read its
        echo and the others have already ended: the line still comes,
        with the ended loops' final counts."""
        srv = self.echo("--threads", "4", "--drain-timeout", "20",
                        "--max-pending", "4M")
        # Eight served and closed: ties are taken in turn, so the ninth
        # goes to loop 0 and every worker ends at the drain.
        done = [roundtrip(srv.host, srv.port, b"%d" % i) for i in range(8)]
        self.assertEqual(done, [b"%d" % i for i in range(8)])
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.settimeout(30)
        slow.connect((srv.host, srv.port))
        self.socks.append(slow)
        data = os.urandom(MIB)
        slow.sendall(data)
        total = 8 + len(data)  # "0" to "7", then data
        wait_until(lambda: self.stats(srv)["bytes_in"] == total, 20)
        srv.signal(signal.SIGTERM)
        srv.wait_line("shutting down: 1 connections to drain")
        time.sleep(0.3)  # the workers, with nothing open, end
        st = self.stats(srv)
        self.assertEqual((st["open"], st["accepted"], st["bytes_in"]),
                         (1, 9, total))
        self.assertEqual(recv_exactly(slow, len(data), 60), data)
        slow.close()
        self.assertEqual(srv.wait(30), 0, srv.stderr_text())

    def test_drain_timeout_stops_every_loop(self):
        """Clients that never read: the drain ends at --drain-timeout in
        every loop, and the daemon exits 0 with nothing left."""
        srv = self.echo("--threads", "4", "--drain-timeout", "1",
                        "--max-pending", "64K")
        socks = [self.connect(srv.host, srv.port) for _ in range(8)]
        for s in socks:
            s.setblocking(False)
            try:
                while True:
                    s.send(b"z" * 65536)
            except BlockingIOError:
                pass
        t0 = time.monotonic()
        srv.signal(signal.SIGTERM)
        self.assertEqual(srv.wait(15), 0, srv.stderr_text())
        self.assertLess(time.monotonic() - t0, 6)
        self.assertGroupGone(srv)

    def test_socket_activation_with_threads(self):
        self.assertIsNotNone(ACTIVATE, "systemd-socket-activate is not "
                             "installed (Debian package systemd)")
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        p = self.start(Proc, [ACTIVATE, "-l", "127.0.0.1:%d" % port,
                              fltest.binary("echo"), "--threads", "3"])
        p.wait_line(r"Listening on 127\.0\.0\.1:%d as 3" % port)
        for i in range(30):
            data = os.urandom(1000 + i)
            self.assertEqual(roundtrip("127.0.0.1", port, data), data)
        p.wait_line(r"listening on 127\.0\.0\.1:%d \(activated fd 3, "
                    r"event mode\)$" % port)
        self.assertEqual(len(tasks(p.pid)), 3)
        # The last client has closed; its loop counts it out once it reads
        # the end of stream, which may come after the SIGUSR1.
        self.assertTrue(wait_until(lambda: self.stats(p)["open"] == 0, 10))
        self.assertEqual(self.stats(p)["accepted"], 30)
        p.signal(signal.SIGTERM)
        self.assertEqual(p.wait(10), 0, p.stderr_text())

    def test_udp_beside_threads(self):
        """UDP stays on the main loop; TCP spreads; both answer and both
        are counted in the one line."""
        srv = self.echo("--threads", "4", "--udp", count=2)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socks.append(u)
        u.settimeout(5)
        for i in range(5):
            u.sendto(b"datagram %d" % i, ("127.0.0.1", srv.port))
            self.assertEqual(u.recvfrom(100)[0], b"datagram %d" % i)
        for i in range(8):
            self.assertEqual(roundtrip("127.0.0.1", srv.port, b"tcp"),
                             b"tcp")
        srv.signal(signal.SIGUSR1)
        m = srv.wait_line(r"stats: .*accepted=(\d+) .*udp_in=(\d+) "
                          r"udp_out=(\d+)")
        self.assertEqual(m[-1].groups(), ("8", "5", "5"))

    def test_auto_and_cpu_affinity(self):
        """--threads auto is the CPUs this process may use; with
        --cpu-affinity each loop runs on one CPU of its own."""
        cpus = sorted(os.sched_getaffinity(0))
        srv = self.echo("--threads", "auto", "--cpu-affinity", "-v")
        tids = tasks(srv.pid)
        self.assertEqual(len(tids), len(cpus))
        srv.wait_line(r"loop \d+ on CPU \d+", count=len(cpus))
        pinned = sorted(os.sched_getaffinity(t) for t in tids)
        self.assertEqual(pinned, [{c} for c in cpus])
        self.assertEqual(roundtrip(srv.host, srv.port, b"pinned"),
                         b"pinned")

    def test_threads_option_errors(self):
        echo = fltest.binary("echo")
        cases = [
            (["--threads", "0"], "bad --threads '0' (1 to 256, or auto)"),
            (["--threads", "-1"], "bad --threads '-1'"),
            (["--threads", "100000"], "bad --threads '100000'"),
            (["--threads", "257"], "bad --threads '257'"),
            (["--threads", "x"], "bad --threads 'x'"),
            (["--mode", "fork", "--threads", "2"],
             "--threads is for event mode"),
            (["--threads", "2", "--mode", "fork"],
             "--threads is for event mode"),
            (["--mode", "fork", "--cpu-affinity"],
             "--cpu-affinity is for event mode"),
            (["--udp-only", "--threads", "2"],
             "--threads applies to TCP connections: not with --udp-only"),
        ]
        for args, msg in cases:
            p = subprocess.run([echo, "-l", "127.0.0.1:0"] + args,
                               capture_output=True, text=True, timeout=10)
            self.assertEqual(p.returncode, 2, (args, p.stderr))
            self.assertIn(msg, p.stderr, args)
            self.assertIn("usage:", p.stderr, args)
        srv = self.echo("--threads", "256")
        self.assertEqual(len(tasks(srv.pid)), 256)
        self.assertEqual(roundtrip(srv.host, srv.port, b"many"), b"many")
        srv.signal(signal.SIGTERM)
        self.assertEqual(srv.wait(10), 0, srv.stderr_text())


if __name__ == "__main__":
    fltest.main()
